"""Mail for the user's own domain: Postfix (SMTP, submission) and Dovecot (IMAP, LMTP)."""
