"""The outbound limits: the policy service's configuration and unit (policyd.py, run by the
agent as limits_service.Policyd)."""

from __future__ import annotations

from appliance.core import system
from appliance.core.feature import Feature
from appliance.core.plan import FileSpec, Inputs
from appliance.core.services import Service
from appliance.features.limits.config import CONF
from appliance.features.limits.limits_service import Policyd
from appliance.features.limits.settings import SECTION


def files(i: Inputs) -> list[FileSpec]:
    """The outbound kill-switch's configuration (policyd.py); Postfix's master.cf names it."""
    s = i.settings
    return [FileSpec("etc/appliance/limits.conf.j2", CONF, "appliance-policyd", order=10,
                     extra=(("lim", s.limits),)),
            FileSpec("etc/systemd/system/appliance-policyd.service.j2",
                     "/etc/systemd/system/appliance-policyd.service", "appliance-policyd", order=20)]


def services(root: system.Root) -> list[Service]:
    return [Policyd(root)]


FEATURE = Feature("limits", "docs/lan-defence.md", sections=(SECTION,), files=files,
                  services=services)
