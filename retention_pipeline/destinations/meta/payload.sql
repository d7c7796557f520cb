-- Meta Custom Audiences, schema [EMAIL, PHONE]: SHA-256 of the trimmed lowercase email and of the phone's digits
-- without '+' (Meta's rule); '' for an unknown key. NULL when the person has neither.
CASE WHEN p.email IS NOT NULL OR meta_phone(p.phone) IS NOT NULL THEN json_object(
    'EMAIL', coalesce(sha256(p.email), ''), 'PHONE', coalesce(meta_phone_sha256(p.phone), ''))
END
