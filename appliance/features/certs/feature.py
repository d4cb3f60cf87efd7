"""Let's Encrypt (or another ACME CA) through certbot, and `appliance cert`."""

from __future__ import annotations

from appliance.core.feature import Feature
from appliance.features.certs import checks, commands
from appliance.features.certs.settings import SECTION

FEATURE = Feature("certs", "README.md", sections=(SECTION,), commands=commands.register,
                  checks=(checks.check_certificate,))
