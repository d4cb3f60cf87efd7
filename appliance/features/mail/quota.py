"""Mailbox quotas: each user's limit, and what `status` says about use.

A user's own `quota_mb` wins, then `[mail] quota_mb`; without either the users share 80 % of the
storage that holds the mailboxes equally, so one full mailbox can never fill the card and stop
mail for everyone (the rest is the system's, the queue's and the logs'). Adding a user shares
it anew; `status` warns at 80 % of a quota, and Dovecot mails the user at 80 % and 95 %.

Over quota, senders get 452 4.2.2 (Dovecot's quota-status, asked by Postfix at RCPT): their
server keeps the mail and retries for days while the user makes room. Nothing is lost. Postfix
asks with the address as the sender wrote it, so mail to an alias or the catch-all is accepted
and its delivery deferred: then the box's own queue keeps it and retries the same way.
"""

from __future__ import annotations

import os

from appliance.core import system
from appliance.core.checks import FAIL, OK, WARN, Context, Result
from appliance.core.plan import Paths
from appliance.core.settings import Settings

SHARE = 0.8
# Before the box has measured its card (a plan made off the box): the smallest card it supports.
SMALLEST_CARD = 8 * 10**9
FULL_REPLY = "452 4.2.2 Mailbox is full: the recipient must make room first; try again later"


def store_bytes(root: system.Root) -> int:
    """The size of the filesystem that holds (or will hold) the mailboxes."""
    path = root.host(Paths().vmail)
    while not path.exists() and path != path.parent:
        path = path.parent
    st = os.statvfs(path)
    return st.f_blocks * st.f_frsize


def limits_mb(s: Settings, store: int | None) -> dict[str, int]:
    """Each user's quota in MiB."""
    share = int((store or SMALLEST_CARD) * SHARE / max(len(s.users), 1) / 2**20)
    default = s.mail.quota_mb or max(share, 10)
    return {u.address: u.quota_mb or default for u in s.users}


def parse_quota_get(text: str) -> dict[str, tuple[int, int]]:
    """`doveadm -f tab quota get -A` -> {user: (KiB used, KiB limit)} for the storage rule."""
    out: dict[str, tuple[int, int]] = {}
    for line in text.splitlines()[1:]:
        cols = line.split("\t")
        if len(cols) >= 5 and cols[2] == "STORAGE" and cols[3].isdigit() and cols[4].isdigit():
            out[cols[0]] = (int(cols[3]), int(cols[4]))
    return out


def use_result(user: str, used_kib: int, limit_kib: int) -> Result:
    pct = 100 * used_kib / limit_kib if limit_kib else 0.0
    detail = f"{_mib(used_kib)} of {_mib(limit_kib)} ({pct:.0f}%)"
    fix = ("delete or archive large messages and empty Trash and Junk, or raise the quota "
           f"(users[].quota_mb for {user})")
    if pct >= 100:
        return Result(f"mailbox {user}", FAIL, detail + ": new mail for it waits at the senders",
                      fix)
    if pct >= 80:
        return Result(f"mailbox {user}", WARN, detail, fix)
    return Result(f"mailbox {user}", OK, detail)


def _mib(kib: int) -> str:
    if kib >= 1024 * 1024:
        return f"{kib / 1024 / 1024:.1f} GiB"
    return f"{kib / 1024:.1f} MiB" if kib < 10 * 1024 else f"{kib / 1024:.0f} MiB"


def check_quotas(c: Context) -> list[Result]:
    res = system.run(["doveadm", "-f", "tab", "quota", "get", "-A"], check=False, timeout=60)
    if res.returncode != 0:
        return [Result("mailboxes", WARN, f"unknown: `doveadm quota get` failed: {res.output[:200]}",
                       "is Dovecot running? `appliance apply` starts it")]
    return [use_result(user, *use) for user, use in sorted(parse_quota_get(res.stdout).items())]
