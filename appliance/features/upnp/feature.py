"""Reachability from the internet: UPnP port mappings on the home router and their renewal
timer, and the reachability verdict."""

from __future__ import annotations

from appliance.core import system
from appliance.core.feature import Feature
from appliance.core.services import Service
from appliance.features.upnp import checks, commands
from appliance.features.upnp.settings import SECTION_REACHABILITY, SECTION_UPNP
from appliance.features.upnp.timer import UpnpTimer, upnp_units


def services(root: system.Root) -> list[Service]:
    return [UpnpTimer(root)]


FEATURE = Feature("upnp", "README.md", sections=(SECTION_UPNP, SECTION_REACHABILITY),
                  files=upnp_units, services=services, commands=commands.register,
                  checks=(checks.check_upnp, checks.check_reachability),
                  unlocked=frozenset({"probe-server"}))
