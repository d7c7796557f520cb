-- TikTok Segment API, id_schema [EMAIL_SHA256, PHONE_SHA256] (reference §1.3, §1.5): SHA-256 of the trimmed
-- lowercase email (no dot or +tag stripping) and of the E.164 phone WITH '+' (TikTok's rule, unlike Meta's); ''
-- for an unknown id (sent as {}). NULL when the person has neither.
CASE WHEN p.email IS NOT NULL OR e164_phone(p.phone) IS NOT NULL THEN json_object(
    'EMAIL_SHA256', coalesce(sha256(p.email), ''), 'PHONE_SHA256', coalesce(e164_phone_sha256(p.phone), ''))
END
