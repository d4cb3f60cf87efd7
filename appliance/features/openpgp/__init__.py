"""OpenPGP on the box : users' public keys, PGP/MIME encryption at rest, WKD.

keyring.py  the agent's GnuPG home and the address -> key index
pgpmime.py  RFC 3156 PGP/MIME with protected headers (pure: bytes in, bytes out)
proxy.py    the LMTP proxy between Postfix and Dovecot that encrypts per recipient
service.py  the proxy as a Service (validate, start/reload, probe)
feature.py  the feature: its files, service and commands
cli.py      `appliance key import|show|remove|list|generate`; generate.py key pairs on request
wkd.py      the Web Key Directory file tree (served by the web feature)
"""
