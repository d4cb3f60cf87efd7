"""fail2ban: the service (validate, reload, probe) and `appliance bans` / `unban`.

The jails read the daemons' own log files (Postfix `maillog_file`, Dovecot `log_path`,
`sshd -E`), the way the box logs without a syslog daemon. Bans go to fail2ban's own nftables
table, so the appliance firewall can be reloaded without forgetting them.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

from appliance.core import lan, system
from appliance.core.command import Env
from appliance.core.errors import EXIT_OK, ApplianceError, UsageError, ValidationError
from appliance.core.facts import Facts
from appliance.core.feature import Subcommands
from appliance.core.services import Service, pidfile_alive
from appliance.core.settings import Settings

CONFIG_DIR = "/etc/fail2ban"
# The daemons' own log files, which the jails read: sshd's is the one the SSH feature starts
# it with (`sshd -E`, ssh.py; a unit test keeps the two equal).
SSHD_LOG = "/var/log/sshd.log"
# The LAN console's agent (appliance/console, a client of the agent like the CLI; a unit test
# keeps the two equal): one "login failed for NAME from ADDRESS" line per wrong password.
CONSOLE_LOG = "/var/log/appliance-console.log"
JAILS = ("postfix", "dovecot", "sshd", "console")
_PROBLEM = re.compile(r"\b(ERROR|CRITICAL)\b|'config-error'")


def never_ban(s: Settings, facts: Facts) -> list[str]:
    """fail2ban's ignoreip: loopback, the LAN the firewall trusts (core.lan, with the firewall's
    `[lan] also_trusted`), the router and the public address (a router that hairpins makes
    every LAN client appear from it)."""
    trust = getattr(s, "firewall", None)
    v4, v6 = lan.trusted(facts, getattr(trust, "also_trusted", ()))
    public = facts.public_address or getattr(trust, "public_address", None)
    a4, a6 = lan.collapse([*lan.LOOPBACK, *v4, *v6, *([public] if public else [])])
    return a4 + a6


class Fail2ban(Service):
    name = "fail2ban"
    unit = "fail2ban.service"
    log_path = "/var/log/fail2ban.log"
    pidfile = "/run/fail2ban/fail2ban.pid"
    logs = ("/var/log/mail.log", "/var/log/dovecot.log", SSHD_LOG, CONSOLE_LOG)

    def validate(self, stage: Path) -> None:
        if self.root.is_live:
            # Under systemd too, the jails' log files must exist before fail2ban starts; an
            # empty log file is what the daemon would create anyway.
            self._prepare()
        conf = stage / CONFIG_DIR.lstrip("/")
        # Our files are only part of the configuration: add the package's (jail.conf, filters,
        # actions) around them, then let fail2ban's own reader judge the whole.
        system.stage_copy_tree(self.root.host(CONFIG_DIR), conf)
        # `-d` reads and converts every jail without starting anything; unlike `-t` it does not
        # fail on a log file that does not exist yet. Errors are logged, not in the exit code.
        res = system.run(["fail2ban-client", "-c", str(conf), "-d"], check=False)
        bad = [line for line in (res.stdout + res.stderr).splitlines() if _PROBLEM.search(line)]
        if res.returncode != 0 or bad:
            raise ValidationError(self.name, "fail2ban-client -d", "\n".join(bad) or res.output)

    def running(self) -> bool:
        return pidfile_alive(self.root, self.pidfile)

    def _prepare(self) -> None:
        for d in ("/run/fail2ban", "/var/lib/fail2ban"):
            self.root.makedirs(d, 0o755)
        for log in self.logs:  # a jail whose log file is missing refuses to start
            system.ensure_file(self.root.host(log))

    def direct_reload(self) -> system.Result:
        self._prepare()
        if self.running():
            return system.run(["fail2ban-client", "reload"], check=False, timeout=60)
        return system.run_daemon(["fail2ban-client", "-x", "start"], timeout=60)

    def probe(self, log_offset: int, settle: float = 10.0) -> str | None:
        """Every jail of ours answers `status` (the server has (re)read the configuration)."""
        deadline = time.monotonic() + settle
        missing: list[str] = list(JAILS)
        for _ in range(int(settle / 0.2) + 1):
            res = system.run(["fail2ban-client", "status"], check=False, timeout=10)
            if res.returncode == 0:
                listed = re.search(r"Jail list:\s*(.*)", res.stdout)
                names = {j.strip() for j in (listed.group(1) if listed else "").split(",")}
                missing = [j for j in JAILS if j not in names]
                if not missing:
                    return None
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        return f"fail2ban does not run jail(s) {', '.join(missing)}; see {self.log_path}"


@dataclass(frozen=True)
class Ban:
    address: str
    jail: str
    since: str  # local time, as fail2ban reports it
    until: str
    failures: int


def bans() -> list[Ban]:
    """Who is banned, since when, until when, for which jail, after how many failures."""
    res = system.run(["fail2ban-client", "banned"], check=False, timeout=10)
    if res.returncode != 0:
        raise ApplianceError(f"fail2ban is not answering ({res.output or 'no output'}); "
                             "is it running? (`appliance apply` starts it)")
    out: list[Ban] = []
    for jail in JAILS:
        r = system.run(["fail2ban-client", "get", jail, "banip", "--with-time"], check=False, timeout=10)
        if r.returncode != 0:
            continue
        for line in r.stdout.splitlines():
            # "198.51.100.66 \t2026-11-23 19:40:01 + 600 = 2026-11-23 19:50:01"
            m = re.match(r"^(\S+)\s+(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) \+ (-?\d+) = (.+)$", line.strip())
            if m:
                out.append(Ban(m.group(1), jail, m.group(2), m.group(4).strip(), _failures(jail, m.group(1))))
    return out


def _failures(jail: str, address: str) -> int:
    """The failures that led to the ban, from fail2ban's own log ("[jail] Found ADDR")."""
    text = system.Root("/").read("/var/log/fail2ban.log").content or b""
    pat = f"[{jail}] Found {address} ".encode()
    return text.count(pat)


def unban(address: str) -> int:
    """Lift every ban of `address`; returns how many jails had it."""
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise UsageError(f'"{address}" is not an IP address; give one from `appliance bans`') from None
    res = system.run(["fail2ban-client", "unban", address], check=False, timeout=10)
    if res.returncode != 0:
        raise ApplianceError(f"fail2ban refused to unban {address}: {res.output}")
    try:
        return int(res.stdout.strip() or 0)
    except ValueError:
        return 0


def cmd_bans(a: argparse.Namespace, env: Env) -> int:
    found = bans()
    if a.json:
        env.out(json.dumps([b.__dict__ for b in found], indent=2))
        return EXIT_OK
    if not found:
        env.out("nobody is banned")
    for b in found:
        env.out(f"{b.address:<40} {b.jail:<8} since {b.since}  until {b.until}  "
                f"({b.failures} failure(s) seen)")
    return EXIT_OK


def cmd_unban(a: argparse.Namespace, env: Env) -> int:
    n = unban(a.address)
    env.out(f"unbanned {a.address}" if n else f"{a.address} was not banned")
    return EXIT_OK


def register(sub: Subcommands) -> None:
    b = sub.add_parser("bans", help="who fail2ban has banned, for which jail, since when")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_bans)
    u = sub.add_parser("unban", help="lift every ban of an address")
    u.add_argument("address")
    u.set_defaults(func=cmd_unban)
