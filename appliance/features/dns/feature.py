"""The DNS records the domain needs, checked and pushed (RFC 2136)."""

from __future__ import annotations

from appliance.core.feature import Feature
from appliance.features.dns import checks, cli, records
from appliance.features.dns.settings import SECTION

FEATURE = Feature("dns", "README.md", sections=(SECTION,), commands=cli.register,
                  checks=(checks.check_records, checks.check_dnssec, checks.check_reverse_dns),
                  unlocked=frozenset({"dns"}), known=records.known, records=records.records)
