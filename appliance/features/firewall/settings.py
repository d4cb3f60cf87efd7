"""[firewall], and the networks it adds to [lan]: the LAN the box trusts beyond the detected one
(never banned by fail2ban either, which reads them as `settings.firewall.also_trusted` and
`settings.firewall.public_address`).

    [lan]                      # besides interface/prefixes (the core's)
    also_trusted = ["198.18.5.0/24"]   # added to the detected LAN: never banned, may SSH
    public_address = "203.0.113.2"     # your router's public IPv4, when UPnP cannot tell

    [firewall]
    enabled = true
    web = false                # open 80/443 from the internet (certificates, web page)
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from appliance.core import fields
from appliance.core.settings import Collector, Section

LAN_KEYS = ("also_trusted", "public_address")


@dataclass(frozen=True)
class Firewall:
    enabled: bool = True
    web: bool = False
    also_trusted: tuple[str, ...] = ()
    public_address: str | None = None


FIELDS = (
    fields.flag("enabled", True, "nftables rules: mail ports from anywhere, the rest from the LAN only"),
    fields.flag("web", False, "also open 80/443 to the internet (certificates, MTA-STS)"),
)


def _also_trusted(lan: dict[str, Any], c: Collector) -> tuple[str, ...]:
    trusted: list[str] = []
    raw = lan.get("also_trusted", [])
    if not isinstance(raw, list):
        c.add("lan.also_trusted", raw, "is not a list", 'write it as ["192.168.5.0/24"]')
        raw = []
    for i, p in enumerate(raw):
        try:
            net = ipaddress.ip_network(p, strict=False) if isinstance(p, str) else None
        except ValueError:
            net = None
        if net is None or net.prefixlen == 0:
            c.add(f"lan.also_trusted[{i}]", p, "is not an IP network",
                  'use CIDR form, e.g. "192.168.5.0/24" or "fd00:5::/64"')
        else:
            trusted.append(str(net))
    return tuple(trusted)


def _public_address(lan: dict[str, Any], c: Collector) -> str | None:
    public = lan.get("public_address")
    if public is None:
        return None
    try:
        public = str(ipaddress.ip_address(public)) if isinstance(public, str) else None
    except ValueError:
        public = None
    if public is None:
        c.add("lan.public_address", lan.get("public_address"), "is not an IP address",
              'use your router\'s public address, e.g. "203.0.113.2", or remove it')
    return public


def parse(data: dict[str, Any], c: Collector) -> Firewall:
    fw = fields.parse_table(data.get("firewall", {}), "firewall", FIELDS, c)
    lan = data.get("lan", {}) if isinstance(data.get("lan", {}), dict) else {}
    return Firewall(enabled=fw["enabled"], web=fw["web"], also_trusted=_also_trusted(lan, c),
                    public_address=_public_address(lan, c))


# The LAN the box trusts may be widened in [lan]; [lan] itself is the core's.
SECTION = Section("firewall", ("firewall",), parse, lan_keys=LAN_KEYS, fields={"firewall": FIELDS})
