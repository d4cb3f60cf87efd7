"""Privacy: the typo guard (held mail, release by reply) and log retention."""

from __future__ import annotations

from appliance.core import system
from appliance.core.feature import Feature
from appliance.core.services import Service
from appliance.features.privacy import privacy
from appliance.features.privacy.release_service import ReleaseAgent
from appliance.features.privacy.settings import SECTION


def services(root: system.Root) -> list[Service]:
    return [privacy.Logrotate(root), ReleaseAgent(root)]


FEATURE = Feature("privacy", "docs/privacy.md", sections=(SECTION,), files=privacy.feature,
                  context=privacy.context, services=services, commands=privacy.register)
