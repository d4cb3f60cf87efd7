"""OpenPGP on the box (issue #7): users' public keys, PGP/MIME encryption at rest, WKD.

keyring.py  the agent's GnuPG home and the address -> key index
pgpmime.py  RFC 3156 PGP/MIME with protected headers (pure: bytes in, bytes out)
proxy.py    the LMTP proxy between Postfix and Dovecot that encrypts per recipient
policy.py   the per-user storage policy file the plan writes and the proxy reads
"""
