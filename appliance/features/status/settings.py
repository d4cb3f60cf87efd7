"""The [status] settings (issue #9, `appliance status`). Stdlib only, like `settings`.

    [status]
    blocklists = ["zen.spamhaus.org", "bl.spamcop.net", "b.barracudacentral.org", "psbl.surriel.com"]
    daily_mail = true          # the daily timer mails the postmaster what changed
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from appliance.core.settings import Section

Add = Callable[[str, Any, str, str], None]
KEYS = {"blocklists", "daily_mail"}
# The major IPv4 DNS blocklists that answer queries from a home user's own resolver for free.
DEFAULT_BLOCKLISTS = ("zen.spamhaus.org", "bl.spamcop.net", "b.barracudacentral.org",
                      "psbl.surriel.com")
MAX_BLOCKLISTS = 20
_NAME = re.compile(r"^(?=.{4,253}$)((?!-)[a-z0-9-]{1,63}(?<!-)\.)+(?!-)[a-z0-9-]{1,63}(?<!-)$")


@dataclass(frozen=True)
class Status:
    blocklists: tuple[str, ...] = DEFAULT_BLOCKLISTS
    daily_mail: bool = True


def parse(data: dict[str, Any], add: Add) -> Status:
    raw = data.get("status", {})
    if not isinstance(raw, dict):
        add("status", raw, "is not a section", "write it as a [status] table")
        return Status()
    for k in sorted(set(raw) - KEYS):
        add(f"status.{k}", raw[k], "is not a known setting", f"use one of {', '.join(sorted(KEYS))}")
    lists = raw.get("blocklists", list(DEFAULT_BLOCKLISTS))
    good: list[str] = []
    if not isinstance(lists, list) or len(lists) > MAX_BLOCKLISTS:
        add("status.blocklists", lists, f"is not a list of at most {MAX_BLOCKLISTS} zone names",
            'write e.g. ["zen.spamhaus.org", "bl.spamcop.net"], or [] to skip the blocklist check')
        lists = list(DEFAULT_BLOCKLISTS)
    for i, zone in enumerate(lists):
        if not isinstance(zone, str) or not _NAME.match(zone):
            add(f"status.blocklists[{i}]", zone, "is not a DNS zone name",
                'use the blocklist\'s query zone in lower case, e.g. "zen.spamhaus.org"')
        elif zone not in good:
            good.append(zone)
    daily = raw.get("daily_mail", True)
    if not isinstance(daily, bool):
        add("status.daily_mail", daily, "is not true or false", "write daily_mail = true or false")
        daily = True
    return Status(tuple(good), daily)


SECTION = Section("status", ("status",), lambda data, c: parse(data, c.add))
