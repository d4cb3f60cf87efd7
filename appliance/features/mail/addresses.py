"""Who receives what: the alias table (users' aliases and the role addresses) and which login
may send as which address. Pure, from the settings."""

from __future__ import annotations

from appliance.core.settings import Settings


def alias_table(s: Settings) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for u in s.users:
        rows += [(a, u.address) for a in u.aliases]
    # RFC 2142 role addresses, plus root@ for the box's own cron/system mail.
    rows += [(f"{local}@{s.domain}", s.postmaster) for local in ("postmaster", "abuse", "root")]
    if s.mail.catch_all:
        # Postfix looks up a whole address before "@domain": each mailbox maps to itself first,
        # or the catch-all would take the users' own mail too.
        rows += [(u.address, u.address) for u in s.users]
        rows.append((f"@{s.domain}", s.mail.catch_all))
    return rows


def sender_logins(s: Settings) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for u in s.users:
        rows.append((u.address, u.address))
        rows += [(a, u.address) for a in u.aliases]
    return rows
