"""The appliance's own firewall (issue #8): nftables, one table, rendered like every other file.

From the internet only the mail ports (and 80/443 with `[firewall] web = true`); from the LAN
everything, so SSH and the setup page are LAN-only. IPv6 gets the same treatment as IPv4,
plus the ICMPv6 types IPv6 cannot work without.

Who counts as "the LAN" is decided here once (`trusted`), for the firewall and fail2ban alike.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from pathlib import Path

from appliance.core import system
from appliance.core.errors import ValidationError
from appliance.core.facts import Facts
from appliance.core.services import MAIL_PORTS, Service
from appliance.core.settings import Settings

RULES_PATH = "/etc/nftables.d/appliance.nft"
WEB_PORTS = (80, 443)
LINK_LOCAL6 = "fe80::/10"

Net = ipaddress.IPv4Network | ipaddress.IPv6Network


def _collapse(nets: Iterable[str]) -> tuple[list[str], list[str]]:
    """Merge overlapping networks (an nft interval set refuses overlaps), v4 and v6 apart."""
    parsed = [ipaddress.ip_network(n, strict=False) for n in nets]
    v4 = ipaddress.collapse_addresses(n for n in parsed if isinstance(n, ipaddress.IPv4Network))
    v6 = ipaddress.collapse_addresses(n for n in parsed if isinstance(n, ipaddress.IPv6Network))
    return [str(n) for n in v4], [str(n) for n in v6]


def lan_networks(s: Settings, facts: Facts) -> tuple[list[str], list[str]]:
    """The LAN as the firewall trusts it: detected (or overridden) prefixes, IPv6 link-local,
    the router's addresses, and `[lan] also_trusted`. The public address is *not* here: a
    packet from it is a hairpinned LAN client or a spoof, and gets the internet's rules."""
    nets = list(facts.lan_prefixes) + [LINK_LOCAL6] + list(s.defence.also_trusted)
    nets += [f"{a}/{32 if ':' not in a else 128}" for a in facts.router_addresses]
    return _collapse(nets)


def public_address(s: Settings, facts: Facts) -> str | None:
    return facts.public_address or s.defence.public_address


def never_ban(s: Settings, facts: Facts) -> list[str]:
    """fail2ban's ignoreip: loopback, the LAN, the router and the public address (a router that
    hairpins makes every LAN client appear from it)."""
    v4, v6 = lan_networks(s, facts)
    public = public_address(s, facts)
    extra = [public] if public else []
    a4, a6 = _collapse(["127.0.0.0/8", "::1/128", *v4, *v6, *extra])
    return a4 + a6


def wan_tcp_ports(s: Settings) -> list[int]:
    return list(MAIL_PORTS) + (list(WEB_PORTS) if s.defence.web or s.web.enabled else [])


class Nftables(Service):
    """The ruleset file is the configuration; `nft -f` is the reload (atomic: one transaction)."""

    name = "nftables"
    unit = "nftables.service"  # Debian's unit; provisioning makes /etc/nftables.conf include ours
    log_path = "/dev/null"  # nft logs nothing; its exit status and `nft list` tell
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
