"""The status check of fail2ban's jails."""

from __future__ import annotations

import re

from appliance.core import system
from appliance.core.checks import FAIL, OK, Context, Result


def parse_fail2ban_status(text: str) -> dict[str, int]:
    """`fail2ban-client status JAIL` -> {'current': N, 'total': M}."""
    got = {}
    for key, label in (("current", "Currently banned"), ("total", "Total banned")):
        m = re.search(rf"{label}:\s*(\d+)", text)
        got[key] = int(m.group(1)) if m else 0
    return got


def check_fail2ban(c: Context) -> list[Result]:
    if not c.s.fail2ban.enabled:
        return []
    res = system.run(["fail2ban-client", "status"], check=False, timeout=10)
    m = re.search(r"Jail list:\s*(.*)", res.stdout)
    if res.returncode != 0 or not m:
        return [Result("fail2ban", FAIL, f"fail2ban is not answering: {res.output[:160] or 'no output'}",
                       "run `appliance apply` (it starts fail2ban); its log: /var/log/fail2ban.log")]
    out = []
    for jail in [j.strip() for j in m.group(1).split(",") if j.strip()][:20]:
        r = system.run(["fail2ban-client", "status", jail], check=False, timeout=10)
        n = parse_fail2ban_status(r.stdout)
        out.append(Result(f"fail2ban {jail}", OK, f"{n['current']} banned now, {n['total']} "
                          "since fail2ban started (`appliance bans` lists them)"))
    return out
