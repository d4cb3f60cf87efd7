"""The small HTTPS server (nginx): the MTA-STS policy and the Web Key Directory."""

from __future__ import annotations

from appliance.core import system
from appliance.core.feature import Feature
from appliance.core.services import Service
from appliance.features.web import checks
from appliance.features.web.settings import SECTION
from appliance.features.web.web import Nginx, web_feature


def services(root: system.Root) -> list[Service]:
    return [Nginx(root)]


FEATURE = Feature("web", "README.md", sections=(SECTION,), files=web_feature, services=services,
                  checks=(checks.check_mta_sts,))
