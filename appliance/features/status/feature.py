"""`appliance status` and the daily status mail."""

from __future__ import annotations

from appliance.core import system
from appliance.core.feature import Feature
from appliance.core.services import Service
from appliance.features.status import status
from appliance.features.status.settings import SECTION


def services(root: system.Root) -> list[Service]:
    return [status.StatusTimer(root)]


FEATURE = Feature("status", "docs/status.md", sections=(SECTION,), files=status.status_units,
                  services=services, commands=status.register, checks=status.CHECKS,
                  unlocked=frozenset({"status"}))
