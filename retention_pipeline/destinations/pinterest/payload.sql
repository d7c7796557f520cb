-- Pinterest customer list (list_type EMAIL): SHA-256 of the trimmed lowercase email, lowercase hex. Customer lists
-- take no phone numbers, so a person without an email has no payload (NULL).
CASE WHEN p.email IS NOT NULL THEN json_object('EMAIL', sha256(p.email)) END
