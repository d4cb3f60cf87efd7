"""[privacy]: the typo guard, how its history is stored, and how long logs are kept."""

from __future__ import annotations

from dataclasses import dataclass

from appliance.core import fields

HISTORY_GROUP = "nogroup"  # the policy service runs as nobody:nogroup and reads the history


@dataclass(frozen=True)
class Privacy:
    typo_guard: bool = True
    typo_history: str = "hashed"
    log_retention_days: int = 7


FIELDS = (
    fields.flag("typo_guard", True, "hold mail to a domain that looks like a typo of one you write to"),
    fields.choice("typo_history", "hashed", ("hashed", "plain"),
                  "how the domains you write to are remembered: keyed hashes, or plain names",
                  "is not a storage mode", 'use "hashed" or "plain"'),
    fields.whole("log_retention_days", 7, 1, 365, "days the logs of who wrote to whom are kept",
                 fix="use a whole number of days between 1 and 365, e.g. 7"),
)
SECTION = fields.section("privacy", Privacy, FIELDS)
