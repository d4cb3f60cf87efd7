"""fail2ban: the jails, filters and their never-banned LAN (fail2ban.py), `appliance bans` and
`appliance unban`, and its status check."""

from __future__ import annotations

from appliance.core import system
from appliance.core.feature import Feature
from appliance.core.plan import FileSpec, Inputs
from appliance.core.services import Service
from appliance.features.fail2ban import checks, fail2ban
from appliance.features.fail2ban.settings import SECTION


def files(i: Inputs) -> list[FileSpec]:
    s, facts = i.settings, i.facts
    if not s.fail2ban.enabled:
        return []
    extra = (("ignoreip", fail2ban.never_ban(s, facts)), ("d", s.fail2ban),
             ("sshd_log", fail2ban.SSHD_LOG), ("console_log", fail2ban.CONSOLE_LOG))
    return [
        FileSpec("etc/fail2ban/filter.d/appliance-sshd.conf.j2",
                 "/etc/fail2ban/filter.d/appliance-sshd.conf", "fail2ban", order=10, extra=extra),
        FileSpec("etc/fail2ban/filter.d/appliance-console.conf.j2",
                 "/etc/fail2ban/filter.d/appliance-console.conf", "fail2ban", order=10, extra=extra),
        FileSpec("etc/fail2ban/filter.d/appliance-postfix.conf.j2",
                 "/etc/fail2ban/filter.d/appliance-postfix.conf", "fail2ban", order=10, extra=extra),
        FileSpec("etc/fail2ban/fail2ban.d/appliance.local.j2",
                 "/etc/fail2ban/fail2ban.d/appliance.local", "fail2ban", order=20, extra=extra),
        FileSpec("etc/fail2ban/jail.d/appliance.local.j2",
                 "/etc/fail2ban/jail.d/appliance.local", "fail2ban", order=90, extra=extra),
    ]


def services(root: system.Root) -> list[Service]:
    return [fail2ban.Fail2ban(root)]


FEATURE = Feature("fail2ban", "docs/lan-defence.md", sections=(SECTION,), files=files,
                  services=services, commands=fail2ban.register, unlocked=frozenset({"bans"}),
                  checks=(checks.check_fail2ban,))
