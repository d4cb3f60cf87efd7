"""The LAN the box trusts, as networks: what the facts detected (or `[lan] prefixes` set), IPv6
link-local, the router's own addresses, and any networks a feature's settings add. One answer
for every feature that lets the LAN in (the firewall) or never bans it (fail2ban).

Addresses and networks only: which settings add networks is the caller's to say.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from appliance.core.facts import Facts

LINK_LOCAL6 = "fe80::/10"
LOOPBACK = ("127.0.0.0/8", "::1/128")


def collapse(nets: Iterable[str]) -> tuple[list[str], list[str]]:
    """Merge overlapping networks (an nft interval set refuses overlaps), v4 and v6 apart."""
    parsed = [ipaddress.ip_network(n, strict=False) for n in nets]
    v4 = ipaddress.collapse_addresses(n for n in parsed if isinstance(n, ipaddress.IPv4Network))
    v6 = ipaddress.collapse_addresses(n for n in parsed if isinstance(n, ipaddress.IPv6Network))
    return [str(n) for n in v4], [str(n) for n in v6]


def trusted(facts: Facts, also: Iterable[str] = ()) -> tuple[list[str], list[str]]:
    """(IPv4, IPv6) networks of the LAN: detected or overridden prefixes, IPv6 link-local, the
    router's addresses and `also`, merged. The public address is *not* here: a packet from it
    is a hairpinned LAN client or a spoof."""
    nets = list(facts.lan_prefixes) + [LINK_LOCAL6] + list(also)
    nets += [f"{a}/{32 if ':' not in a else 128}" for a in facts.router_addresses]
    return collapse(nets)
