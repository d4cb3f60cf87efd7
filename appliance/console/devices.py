"""Setting up a phone or a computer: the values a mail app asks for, and an Apple
configuration profile (.mobileconfig, an XML property list) that fills them in on iOS and
macOS. The profile downloaded in a session holds no password: the device asks for it once.
The one behind a QR code's one-time link carries a new app password made for that device, so
nothing is typed at all. It is not signed, so the device calls it unverified; what it installs
is shown before it does.

Ports: IMAP over TLS on 993, submission over TLS on 465 (RFC 8314, implicit TLS: nothing a
network can strip); with calendars and contacts on ([dav]), CalDAV and CardDAV over TLS on 443
under the same host name and login.
"""

from __future__ import annotations

import plistlib
import uuid

IMAP_PORT = 993
SUBMISSION_PORT = 465
DAV_PORT = 443


def settings(address: str, host: str, dav: bool = False) -> list[tuple[str, str]]:
    rows = [("Incoming mail (IMAP)", f"{host}, port {IMAP_PORT}, SSL/TLS"),
            ("Outgoing mail (SMTP)", f"{host}, port {SUBMISSION_PORT}, SSL/TLS")]
    if dav:
        rows += [("Calendars (CalDAV)", f"https://{host}/"),
                 ("Contacts (CardDAV)", f"https://{host}/")]
    return rows + [("User name (all)" if dav else "User name (both)", address),
                   ("Password", "the device's own password (below), or your mail password")]


def _dav_accounts(address: str, host: str, ident: str, password: str) -> list[dict[str, object]]:
    """Apple's CalDAV and CardDAV account payloads: the same host, login and password."""
    out: list[dict[str, object]] = []
    for kind, what in (("CalDAV", "calendars"), ("CardDAV", "contacts")):
        account: dict[str, object] = {
            "PayloadType": f"com.apple.{kind.lower()}.account",
            "PayloadVersion": 1,
            "PayloadIdentifier": f"{ident}.{kind.lower()}",
            "PayloadUUID": str(uuid.uuid5(uuid.NAMESPACE_DNS,
                                          f"{kind.lower()}.{address}.{host}")).upper(),
            "PayloadDisplayName": f"{address} ({what})",
            f"{kind}AccountDescription": f"{address} ({what})",
            f"{kind}HostName": host,
            f"{kind}Port": DAV_PORT,
            f"{kind}UseSSL": True,
            f"{kind}Username": address,
        }
        if password:
            account[f"{kind}Password"] = password
        out.append(account)
    return out


def mobileconfig(address: str, host: str, domain: str, password: str = "",
                 dav: bool = False) -> bytes:
    """The profile for `address`. Its identifiers are derived from the address and host, so
    installing it again replaces the account instead of adding a second one. With `password`
    (an app password), the device asks for nothing. With `dav`, the same login also syncs the
    calendars and contacts."""
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
        "PayloadDescription": f"Your mail account on {host}, your own mail server"
                              + (", with your calendars and contacts." if dav else "."),
        "PayloadRemovalDisallowed": False,
        "PayloadContent": [account, *(_dav_accounts(address, host, ident, password) if dav else [])],
    }
    return plistlib.dumps(profile, fmt=plistlib.FMT_XML)
