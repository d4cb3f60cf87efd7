"""App passwords: one password per device, for IMAP and SMTP only, each revocable alone.

A phone that is lost or sold takes only its own password with it: revoking that one leaves the
user's own password and every other device as they were. An app password never opens the
console (it checks the user's own password), and the box makes it, so it is long and random:
a guess is hopeless and a fast hash (SHA512-CRYPT) costs a small board little at each login.

They live in the settings file under their user, hashed, so they are in backups and edited
like everything else (`appliance user app-password`, the console):

    [[users.app_passwords]]
    name = "Phone"
    hash = "$6$..."
    created = 2026-12-07T13:52:27Z

Dovecot checks them after the user's own password (passdb lua, dovecot-auth-lua from Debian),
and records each one's last use (time and address) under `USE_DIR`, read back by `last_use`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from appliance.core.rootfs import Root

MAX_PER_USER = 20  # a login tries each of the user's hashes in turn
# Letters and digits a person can copy without confusing them (no i, l, o, 0, 1).
ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
GROUPS, GROUP_LEN = 4, 4  # "abcd-efgh-jkmn-pqrs": 16 of 31 symbols, 79 bits
# A name the person recognises the device by: shown, never part of a file format.
_NAME = re.compile(r"^[^\x00-\x1f\x7f:]{1,40}$")
# Where Dovecot's auth worker (root) writes "<unix time> <address>" per app password id.
USE_DIR = "/var/lib/dovecot/app-password-use"
# Dovecot's services that may use them: IMAP, Postfix's submission (SASL service "smtp"),
# ManageSieve, and the calendars and contacts (Radicale asks Dovecot as service "dav").
SERVICES = ("imap", "smtp", "sieve", "dav")


@dataclass(frozen=True)
class AppPassword:
    name: str
    hash: str
    created: float = 0.0  # unix time

    @property
    def id(self) -> str:
        """Stable for this password, different for the next one of the same name: the record of
        its use goes with it and never passes to a successor."""
        return hashlib.sha256(self.hash.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Use:
    when: float
    address: str


def generate() -> str:
    return "-".join("".join(secrets.choice(ALPHABET) for _ in range(GROUP_LEN))
                    for _ in range(GROUPS))


def now_toml() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def parse(raw: Any, where: str, add: Callable[[str, Any, str, str], None],
          scheme_of: Callable[[str], str | None]) -> tuple[AppPassword, ...]:
    """A user's `app_passwords` list; problems go to `add(where, value, why, fix)`."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        add(where, raw, "is not a list of [[users.app_passwords]] tables",
            "let `appliance user app-password add` write them")
        return ()
    if len(raw) > MAX_PER_USER:
        add(where, f"{len(raw)} entries", f"is more than {MAX_PER_USER}",
            "revoke the ones no device uses any more")
    out: list[AppPassword] = []
    names: set[str] = set()
    for i, entry in enumerate(raw):
        w = f"{where}[{i}]"
        if not isinstance(entry, dict):
            add(w, entry, "is not a table", "write each as a [[users.app_passwords]] section")
            continue
        for key in sorted(set(entry) - {"name", "hash", "created"}):
            add(f"{w}.{key}", key, "is not a known app password setting", "use name, hash and created")
        name, pw, created = entry.get("name"), entry.get("hash"), entry.get("created", 0.0)
        if not isinstance(name, str) or not _NAME.match(name):
            add(f"{w}.name", name, "is not a device name",
                "use 1 to 40 characters without line breaks or colons, e.g. \"Phone\"")
            continue
        if name in names:
            add(f"{w}.name", name, "is used twice for this user", "give each device its own name")
        names.add(name)
        if not isinstance(pw, str) or scheme_of(pw) is None:
            add(f"{w}.hash", "…", "is not a supported password hash",
                "revoke it and let `appliance user app-password add` make a new one")
            continue
        if isinstance(created, dt.datetime):
            created = created.timestamp()
        elif isinstance(created, dt.date):
            created = dt.datetime(created.year, created.month, created.day,
                                  tzinfo=dt.UTC).timestamp()
        elif isinstance(created, bool) or not isinstance(created, (int, float)):
            add(f"{w}.created", created, "is not a date", "write it as 2026-12-07T13:52:27Z")
            created = 0.0
        out.append(AppPassword(name, pw, float(created)))
    return tuple(out)


def last_use(root: Root, p: AppPassword) -> Use | None:
    """When and from where the password last opened a session (Dovecot writes it at most
    every few minutes per password)."""
    data = root.read(f"{USE_DIR}/{p.id}").content
    if not data:
        return None
    when, _, address = data.decode(errors="replace").strip().partition(" ")
    try:
        return Use(float(when), address)
    except ValueError:
        return None


def rows(root: Root, passwords: tuple[AppPassword, ...]) -> list[dict[str, Any]]:
    """What `appliance user app-password list --json` and the console show of each."""
    out = []
    for p in passwords:
        use = last_use(root, p)
        out.append({"name": p.name, "created": p.created,
                    "last_used": use.when if use else None,
                    "last_address": use.address if use else None})
    return out
