"""The firewall: nftables, one table, tuned to the detected LAN (firewall.py)."""

from __future__ import annotations

from appliance.core import system
from appliance.core.feature import Feature
from appliance.core.plan import FileSpec, Inputs
from appliance.core.services import Service
from appliance.features.firewall.firewall import RULES_PATH, Nftables, lan_networks, wan_tcp_ports
from appliance.features.firewall.settings import SECTION


def files(i: Inputs) -> list[FileSpec]:
    s, facts = i.settings, i.facts
    if not s.firewall.enabled:
        return []
    v4, v6 = lan_networks(s, facts)
    extra = (("lan4", v4), ("lan6", v6), ("wan_tcp", wan_tcp_ports(s)), ("web", s.firewall.web),
             ("lan_text", ", ".join(v4 + v6) or "none detected"))
    return [FileSpec("etc/nftables.d/appliance.nft.j2", RULES_PATH, "nftables", extra=extra)]


def services(root: system.Root) -> list[Service]:
    return [Nftables(root)]


FEATURE = Feature("firewall", "docs/lan-defence.md", sections=(SECTION,), files=files,
                  services=services)
