"""[web]: the small HTTPS server for the MTA-STS policy and WKD."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from appliance.core.settings import Collector, Section, table


@dataclass(frozen=True)
class WebSection:
    """The small HTTPS server (nginx): the MTA-STS policy at mta-sts.<domain>."""

    enabled: bool = False
    mta_sts_mode: str = "testing"  # RFC 8461: start in testing, enforce once `dns --check` passes
    mta_sts_max_age: int = 86400


def _parse_web(raw: Any, c: Collector) -> WebSection:
    t = table(raw, "web", {"enabled", "mta_sts_mode", "mta_sts_max_age"}, c)
    enabled = t.get("enabled", False)
    if not isinstance(enabled, bool):
        c.add("web.enabled", enabled, "is not true or false", "write enabled = true or false")
        enabled = False
    mode = t.get("mta_sts_mode", "testing")
    if mode not in ("testing", "enforce", "none"):
        c.add("web.mta_sts_mode", mode, "is not an MTA-STS mode",
              'use "testing" first, "enforce" once `appliance dns --check` passes, or "none"')
        mode = "testing"
    age = t.get("mta_sts_max_age", 86400)
    if isinstance(age, bool) or not isinstance(age, int) or not 300 <= age <= 31557600:
        c.add("web.mta_sts_max_age", age, "is not a duration in seconds",
              "use 86400 (a day) while testing, 604800 (a week) or more when enforcing")
        age = 86400
    return WebSection(enabled, mode, age)


SECTION = Section("web", ("web",), lambda data, c: _parse_web(data.get("web", {}), c))
