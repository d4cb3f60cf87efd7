"""Setting up a phone or a computer: the values a mail app asks for, and an Apple
configuration profile (.mobileconfig, an XML property list) that fills them in on iOS and
macOS. The profile downloaded in a session holds no password: the device asks for it once.
The one behind a QR code's one-time link carries a new app password made for that device, so
nothing is typed at all. It is not signed, so the device calls it unverified; what it installs
is shown before it does.

Ports: IMAP over TLS on 993, submission over TLS on 465 (RFC 8314, implicit TLS: nothing a
network can strip).
"""

from __future__ import annotations

import plistlib
import uuid

IMAP_PORT = 993
SUBMISSION_PORT = 465


def settings(address: str, host: str) -> list[tuple[str, str]]:
    return [("Incoming mail (IMAP)", f"{host}, port {IMAP_PORT}, SSL/TLS"),
            ("Outgoing mail (SMTP)", f"{host}, port {SUBMISSION_PORT}, SSL/TLS"),
            ("User name (both)", address),
            ("Password", "the device's own password (below), or your mail password")]


def mobileconfig(address: str, host: str, domain: str, password: str = "") -> bytes:
    """The profile for `address`. Its identifiers are derived from the address and host, so
    installing it again replaces the account instead of adding a second one. With `password`
    (an app password), the device asks for nothing."""
    ident = f"{'.'.join(reversed(domain.split('.')))}.mail-appliance.{address}"
    account = {
        "PayloadType": "com.apple.mail.managed",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{ident}.account",
        "PayloadUUID": str(uuid.uuid5(uuid.NAMESPACE_DNS, f"account.{address}.{host}")).upper(),
        "PayloadDisplayName": address,
        "EmailAccountDescription": address,
        "EmailAccountType": "EmailTypeIMAP",
        "EmailAddress": address,
        "IncomingMailServerHostName": host,
        "IncomingMailServerPortNumber": IMAP_PORT,
        "IncomingMailServerUseSSL": True,
        "IncomingMailServerUsername": address,
        "IncomingMailServerAuthentication": "EmailAuthPassword",
        "OutgoingMailServerHostName": host,
        "OutgoingMailServerPortNumber": SUBMISSION_PORT,
        "OutgoingMailServerUseSSL": True,
        "OutgoingMailServerUsername": address,
        "OutgoingMailServerAuthentication": "EmailAuthPassword",
        "OutgoingPasswordSameAsIncomingPassword": True,
    }
    if password:
        account["IncomingPassword"] = account["OutgoingPassword"] = password
    profile = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": ident,
        "PayloadUUID": str(uuid.uuid5(uuid.NAMESPACE_DNS, f"profile.{address}.{host}")).upper(),
        "PayloadDisplayName": f"Mail: {address}",
        "PayloadDescription": f"Your mail account on {host}, your own mail server.",
        "PayloadRemovalDisallowed": False,
        "PayloadContent": [account],
    }
    return plistlib.dumps(profile, fmt=plistlib.FMT_XML)
