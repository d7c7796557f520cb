-- Google Data Manager: SHA-256 of the email (gmail.com/googlemail.com without dots and +tag) and of the E.164
-- phone with '+'. NULL when the person has neither.
CASE WHEN google_email(p.email) IS NOT NULL OR google_phone(p.phone) IS NOT NULL
    THEN json_object('emailAddress', google_email_sha256(p.email), 'phoneNumber', google_phone_sha256(p.phone))
END
