"""Reachability from the internet: UPnP port mappings on the home router and their renewal
timer, and the reachability verdict."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from appliance.core import system
from appliance.core.feature import Feature
from appliance.core.services import Service
from appliance.core.settings import Settings
from appliance.features.upnp import checks, cli
from appliance.features.upnp.settings import SECTION_REACHABILITY, SECTION_UPNP
from appliance.features.upnp.timer import UpnpTimer, upnp_units


def services(root: system.Root) -> list[Service]:
    return [UpnpTimer(root)]


def known(root: system.Root, s: Settings) -> dict[str, str | None]:
    from appliance.features.upnp import client

    state = client.load_state(root) or {}
    return {"router_ipv4": str(state["external_ip"]) if state.get("external_ip") else None}


@contextmanager
def expose(root: system.Root, s: Settings, ports: Sequence[int]) -> Iterator[None]:
    """Map the extra ports on the router (with the mail ports, renewed) for the block's time,
    and unmap them after. A router that says no is not an error: the user may have forwarded
    the port by hand."""
    from appliance.features.upnp import client

    cfg = client.UpnpSettings(s.upnp.enabled, s.upnp.lease_seconds, s.upnp.igd_url)
    igd = None
    if cfg.enabled and ports:
        try:
            igd = client.Igd(cfg)
            client.renew(igd, cfg, extra=list(ports))
        except client.UpnpError:
            igd = None
    try:
        yield
    finally:
        if igd is not None:
            client.remove(igd, list(ports))


FEATURE = Feature("upnp", "README.md", sections=(SECTION_UPNP, SECTION_REACHABILITY),
                  files=upnp_units, services=services, commands=cli.register,
                  checks=(checks.check_upnp, checks.check_reachability),
                  unlocked=frozenset({"probe-server"}), known=known, expose=expose)
