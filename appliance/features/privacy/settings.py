"""[privacy]: the typo guard, how its history is stored, and how long logs are kept."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from appliance.core.settings import Section

Add = Callable[[str, Any, str, str], None]
KEYS = {"typo_guard", "typo_history", "log_retention_days"}
HISTORY_GROUP = "nogroup"  # the policy service runs as nobody:nogroup and reads the history


@dataclass(frozen=True)
class Privacy:
    typo_guard: bool = True
    typo_history: str = "hashed"
    log_retention_days: int = 7


def parse(data: dict[str, Any], add: Add) -> Privacy:
    raw = data.get("privacy", {})
    if not isinstance(raw, dict):
        add("privacy", raw, "is not a section", "write it as a [privacy] table")
        return Privacy()
    for k in sorted(set(raw) - KEYS):
        add(f"privacy.{k}", raw[k], "is not a known setting", f"use one of {', '.join(sorted(KEYS))}")
    guard = raw.get("typo_guard", True)
    if not isinstance(guard, bool):
        add("privacy.typo_guard", guard, "is not true or false", "write typo_guard = true or false")
        guard = True
    mode = raw.get("typo_history", "hashed")
    if mode not in ("hashed", "plain"):
        add("privacy.typo_history", mode, "is not a storage mode", 'use "hashed" or "plain"')
        mode = "hashed"
    days = raw.get("log_retention_days", 7)
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 365:
        add("privacy.log_retention_days", days, "is out of range",
            "use a whole number of days between 1 and 365, e.g. 7")
        days = 7
    return Privacy(guard, mode, days)


SECTION = Section("privacy", ("privacy",), lambda data, c: parse(data, c.add))
