"""Let's Encrypt (or another ACME CA) through certbot; `appliance cert`, and for now the
`dns` and `dkim` verbs that read the certificate's TLSA record."""

from __future__ import annotations

from appliance.core.feature import Feature
from appliance.features.certs import commands
from appliance.features.certs.settings import SECTION

FEATURE = Feature("certs", "README.md", sections=(SECTION,), commands=commands.register,
                  unlocked=frozenset({"dns"}))
