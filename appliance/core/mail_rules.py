"""A user's own delivery rules: forwarding and an away message (vacation reply).

They sit under the user in the settings file and become one Sieve script per user that Dovecot
runs at delivery, after the Junk filter and before the user's own filters:

    [[users]]
    address = "alice@example.org"
    forward_to = ["alice@elsewhere.example"]
    forward_keep = true                      # a copy stays here (the default)
    [users.vacation]
    subject = "Away until Monday"
    message = "I am away and read mail on Monday."
    until = 2026-12-24                       # the last day it answers (optional)

Sieve's vacation answers each sender once per `days` and never answers lists, bulk mail,
automatic replies or a null sender (RFC 5230, RFC 3834: Pigeonhole does all of that).
Forwarded mail leaves with the user's address as envelope sender, so the destination's SPF
check sees this box as the sender it is, and spam is never forwarded.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

# Plus addressing: the separator between a user and a tag (Postfix's and Dovecot's
# recipient_delimiter), known to the mail feature and to the OpenPGP proxy alike.
TAG_DELIMITER = "+"


def untagged(address: str) -> str:
    """name+tag@domain -> name@domain (unchanged without a tag)."""
    local, at, domain = address.rpartition("@")
    return f"{local.partition(TAG_DELIMITER)[0]}{at}{domain}"


def who(users: Iterable[Any], address: str) -> tuple[Any | None, str | None]:
    """Whom an address a person typed names, in any case: (the user, None), or (None, the
    address of the user it is an alias of), or (None, None) for nobody. For the commands that
    act on a user and should say which address to use instead."""
    address = address.strip().lower()
    users = tuple(users)
    for u in users:
        if u.address == address:
            return u, None
    return None, next((u.address for u in users if address in u.aliases), None)

MAX_FORWARDS = 4  # Pigeonhole's default sieve_max_redirects
MAX_SUBJECT, MAX_MESSAGE = 120, 4000
DAYS = (1, 30)

Add = Callable[[str, Any, str, str], None]


@dataclass(frozen=True)
class Vacation:
    subject: str
    message: str
    until: str = ""  # YYYY-MM-DD, the last day it answers; "" until turned off
    days: int = 7  # a sender gets one reply per this many days


def parse_forward(entry: dict[str, Any], where: str, add: Add, own: set[str],
                  is_address: Callable[[str], bool]) -> tuple[tuple[str, ...], bool]:
    """`forward_to` (anywhere but back to the user: `own`, her address and aliases) and
    `forward_keep`."""
    raw = entry.get("forward_to", [])
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        add(f"{where}.forward_to", raw, "is not a list of addresses", 'write it as ["you@elsewhere.example"]')
        raw = []
    if len(raw) > MAX_FORWARDS:
        add(f"{where}.forward_to", f"{len(raw)} addresses", f"is more than {MAX_FORWARDS}",
            "forward to one address and let that one forward further")
    out: list[str] = []
    for i, value in enumerate(raw):
        w = f"{where}.forward_to[{i}]"
        if not isinstance(value, str) or not is_address(value.lower()):
            add(w, value, "is not an e-mail address", 'write it as "you@elsewhere.example"')
        elif value.lower() in own:
            add(w, value, "is this user's own address", "forward to an address elsewhere")
        else:
            out.append(value.lower())
    keep = entry.get("forward_keep", True)
    if not isinstance(keep, bool):
        add(f"{where}.forward_keep", keep, "is not true or false",
            "true keeps a copy here (the default), false only forwards")
        keep = True
    return tuple(out), keep


def parse_vacation(raw: Any, where: str, add: Add) -> Vacation | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        add(where, raw, "is not a table", "write it as a [users.vacation] section")
        return None
    for key in sorted(set(raw) - {"subject", "message", "until", "days"}):
        add(f"{where}.{key}", key, "is not a known away message setting",
            "use subject, message, until and days")
    subject, message = raw.get("subject", ""), raw.get("message", "")
    ok = True
    if not isinstance(subject, str) or not subject.strip() or len(subject) > MAX_SUBJECT \
            or "\n" in subject:
        add(f"{where}.subject", subject, "is not a subject line",
            f"write one line of 1 to {MAX_SUBJECT} characters")
        ok = False
    if not isinstance(message, str) or not message.strip() or len(message) > MAX_MESSAGE:
        add(f"{where}.message", "…" if isinstance(message, str) and message else message,
            "is not an away message", f"write 1 to {MAX_MESSAGE} characters")
        ok = False
    until = raw.get("until", "")
    if isinstance(until, dt.datetime):
        until = until.date()
    if isinstance(until, dt.date):
        until = until.isoformat()
    elif until != "":
        add(f"{where}.until", until, "is not a date", "write it as 2026-12-24 (the last day away)")
        ok = False
    days = raw.get("days", 7)
    if isinstance(days, bool) or not isinstance(days, int) or not DAYS[0] <= days <= DAYS[1]:
        add(f"{where}.days", days, "is not a number of days",
            f"use {DAYS[0]} to {DAYS[1]}: how often one sender may get the reply")
        ok = False
    return Vacation(subject.strip(), message.strip(), until, days) if ok else None


def sieve_string(text: str) -> str:
    """A Sieve quoted string (RFC 5228 2.4.2): backslash and double quote escaped; line breaks
    may stay, as CRLF."""
    body = text.replace("\\", "\\\\").replace('"', '\\"').replace("\r\n", "\n").replace("\n", "\r\n")
    return f'"{body}"'
