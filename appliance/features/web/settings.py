"""[web]: the small HTTPS server for the MTA-STS policy and WKD."""

from __future__ import annotations

from dataclasses import dataclass

from appliance.core import fields


@dataclass(frozen=True)
class WebSection:
    """The small HTTPS server (nginx): the MTA-STS policy at mta-sts.<domain>."""

    enabled: bool = False
    mta_sts_mode: str = "testing"  # RFC 8461: start in testing, enforce once `dns --check` passes
    mta_sts_max_age: int = 86400


FIELDS = (
    fields.flag("enabled", False, "serve the MTA-STS policy (and WKD) over HTTPS at mta-sts.<domain>"),
    fields.choice("mta_sts_mode", "testing", ("testing", "enforce", "none"),
                  "RFC 8461 mode: `testing` first, `enforce` once `appliance dns --check` passes",
                  "is not an MTA-STS mode",
                  'use "testing" first, "enforce" once `appliance dns --check` passes, or "none"'),
    fields.whole("mta_sts_max_age", 86400, 300, 31557600, "how long senders cache the policy, seconds",
                 "is not a duration in seconds",
                 "use 86400 (a day) while testing, 604800 (a week) or more when enforcing"),
)
SECTION = fields.section("web", WebSection, FIELDS)
