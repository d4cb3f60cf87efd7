"""The firewall: nftables, one table, tuned to the detected LAN (firewall.py)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from appliance.core import system
from appliance.core.feature import Feature
from appliance.core.plan import FileSpec, Inputs
from appliance.core.services import Service
from appliance.core.settings import Settings
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


@contextmanager
def expose(root: system.Root, s: Settings, ports: Sequence[int], minutes: int = 10) -> Iterator[None]:
    """Let the internet in on the extra ports for the block (an ACME challenge on port 80): an
    element of the temporary set, which expires by itself even if the agent dies."""
    if not (s.firewall.enabled and ports and root.is_live):
        yield
        return
    elements = ", ".join(str(p) for p in ports)
    system.run(["nft", "add", "element", "inet", "appliance", "wan_tcp_temporary",
              f"{{ {', '.join(f'{p} timeout {minutes}m' for p in ports)} }}"], check=False)
    try:
        yield
    finally:
        system.run(["nft", "delete", "element", "inet", "appliance", "wan_tcp_temporary",
                  f"{{ {elements} }}"], check=False)


FEATURE = Feature("firewall", "docs/lan-defence.md", sections=(SECTION,), files=files,
                  services=services, expose=expose)
