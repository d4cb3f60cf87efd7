"""The mail feature's status checks: what the catch-all received. Read from Postfix's own log;
the counting is pure and unit-tested."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

from appliance.core import mail_rules
from appliance.core.checks import OK, WARN, Context, Result
from appliance.core.plan import Paths
from appliance.core.settings import Settings
from appliance.features.mail.addresses import alias_table

# A delivery to a mailbox (over LMTP); after an alias, Postfix names the address it came for.
_DELIVERED = re.compile(r"postfix/lmtp\[\d+\]: \w+: to=<([^>]+)>(?:, orig_to=<([^>]+)>)?,"
                        r".* status=sent ")
# Past this share of the domain's mail, the catch-all is mostly a spam trap.
MOSTLY = 0.5


def listed(s: Settings) -> set[str]:
    """The addresses that exist without the catch-all."""
    return {u.address for u in s.users} | {a for a, _ in alias_table(s) if not a.startswith("@")}


def caught(lines: Iterable[str], s: Settings) -> tuple[Counter[str], int]:
    """-> (the unknown addresses the catch-all took, with counts; deliveries in all)."""
    known, got, total = listed(s), Counter[str](), 0
    for line in lines:
        m = _DELIVERED.search(line)
        if m is None:
            continue
        total += 1
        if m.group(2) is None or _untagged(m.group(1), s) != s.mail.catch_all:
            continue
        came_for = m.group(2).lower()
        if came_for.endswith("@" + s.domain) and _untagged(came_for, s) not in known:
            got[came_for] += 1
    return got, total


def _untagged(address: str, s: Settings) -> str:
    return mail_rules.untagged(address.lower()) if s.mail.plus_addressing else address.lower()


def catch_all_result(got: Counter[str], total: int, s: Settings) -> Result:
    n = sum(got.values())
    top = ", ".join(f"{a} ({k})" for a, k in got.most_common(3))
    detail = (f"on, to {s.mail.catch_all}: {n} of {total} deliveries in the mail log went to "
              f"addresses nobody has" + (f"; most to {top}" if top else ""))
    if total and n / total > MOSTLY:
        return Result("catch-all", WARN, detail,
                      "most of it is probably spam to invented addresses: give the addresses "
                      "you use to a user as aliases and turn the catch-all off "
                      "(`appliance set mail.catch_all=`)")
    return Result("catch-all", OK, detail)


def check_catch_all(c: Context) -> list[Result]:
    if not c.s.mail.catch_all:
        return []
    log = (c.root.read(Paths().mail_log).content or b"").decode("utf-8", "replace")
    return [catch_all_result(*caught(log.splitlines(), c.s), c.s)]
