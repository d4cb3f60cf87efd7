"""The appliance's own firewall: nftables, one table, rendered like every other file.

From the internet only the mail ports (and 80/443 with `[firewall] web = true` or `[web]`, 443
with `[dav] internet = true`); from the LAN
everything, so SSH and the setup page are LAN-only. IPv6 gets the same treatment as IPv4,
plus the ICMPv6 types IPv6 cannot work without.

Who counts as "the LAN" is decided once, in the core (`core.lan.trusted`), for the firewall and
fail2ban alike; `[lan] also_trusted` widens it (settings.py).
"""

from __future__ import annotations

import re
from pathlib import Path

from appliance.core import lan, system
from appliance.core.errors import ValidationError
from appliance.core.facts import Facts
from appliance.core.services import MAIL_PORTS, Service
from appliance.core.settings import Settings

RULES_PATH = "/etc/nftables.d/appliance.nft"
WEB_PORTS = (80, 443)


def lan_networks(s: Settings, facts: Facts) -> tuple[list[str], list[str]]:
    """The LAN as the firewall trusts it (core.lan): detected (or overridden) prefixes, IPv6
    link-local, the router's addresses, and `[lan] also_trusted`. The public address is *not*
    here: a packet from it is a hairpinned LAN client or a spoof, and gets the internet's rules."""
    return lan.trusted(facts, s.firewall.also_trusted)


def wan_tcp_ports(s: Settings) -> list[int]:
    if s.firewall.web or s.web.enabled:
        return list(MAIL_PORTS) + list(WEB_PORTS)
    # Calendars from away from home: 443 alone (certificates then need dns-01 or port 80 opened
    # for the challenge, which the agent does for its minutes).
    return list(MAIL_PORTS) + ([443] if s.dav.enabled and s.dav.internet else [])


class Nftables(Service):
    """The ruleset file is the configuration; `nft -f` is the reload (atomic: one transaction)."""

    name = "nftables"
    unit = "nftables.service"  # Debian's unit; provisioning makes /etc/nftables.conf include ours
    log_path = "/dev/null"  # nft logs nothing; its exit status and `nft list` tell
    independent = True  # no service needs the rules in place to start
    # Debian's nftables.service also loads the admin's own rules: the firewall turned off
    # removes our table, and the unit stays.
    owns_unit = False

    def validate(self, stage: Path) -> None:
        staged = stage / RULES_PATH.lstrip("/")
        # `nft -c` parses and asks the kernel to check the whole transaction without committing.
        res = system.run(["nft", "-c", "-f", str(staged)], check=False)
        if res.returncode != 0:
            raise ValidationError(self.name, "nft -c", res.output or f"exit {res.returncode}")

    def running(self) -> bool:
        return system.run(["nft", "list", "table", "inet", "appliance"], check=False).returncode == 0

    def direct_reload(self) -> system.Result:
        if self.root.exists(RULES_PATH):
            return system.run(["nft", "-f", str(self.root.host(RULES_PATH))], check=False)
        # Rolled back to "no firewall file" (a first apply failed): remove our table.
        res = system.run(["nft", "delete", "table", "inet", "appliance"], check=False)
        return system.Result(res.argv, 0, res.stdout, res.stderr)

    def direct_stop(self) -> system.Result:
        return system.Result(("true",), 0, "", "")  # no process: the rules are kernel state

    def after_stop(self) -> system.Result:
        res = system.run(["nft", "delete", "table", "inet", "appliance"], check=False)
        gone = res.returncode == 0 or not self.running()
        return system.Result(res.argv, 0 if gone else res.returncode, res.stdout, res.stderr)

    def probe(self, log_offset: int, settle: float = 10.0) -> str | None:
        """`nft -f` is synchronous: the kernel holds the new rules once it returned 0. Check that
        what is loaded is what the file says (the set elements and the WAN ports)."""
        res = system.run(["nft", "list", "table", "inet", "appliance"], check=False)
        if res.returncode != 0:
            return "table inet appliance is not loaded: " + res.output
        want = self.root.read(RULES_PATH).content or b""
        ports = re.search(rb"tcp dport \{ ([0-9, ]+) \} accept", want)
        # nft lists set elements sorted: compare the port sets, not their text.
        loaded = [set(m.replace(" ", "").split(",")) for m in
                  re.findall(r"tcp dport \{ ([0-9, ]+) \} accept", res.stdout)]
        if ports and set(ports.group(1).decode().replace(" ", "").split(",")) not in loaded:
            return "the loaded rules differ from " + RULES_PATH
        return None
