"""[fail2ban]: who is banned, for how long. The LAN it never bans is the firewall's
(`[lan] also_trusted`, `[lan] public_address`), read from the settings object.

    [fail2ban]
    enabled = true
    maxretry = 5               # failures within findtime that ban
    findtime = 600             # seconds
    bantime = 600              # seconds, first ban; doubles for each repeat offence
    bantime_max = 604800       # seconds; a ban is never permanent
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from appliance.core import fields
from appliance.core.settings import Collector


@dataclass(frozen=True)
class Fail2ban:
    enabled: bool = True
    maxretry: int = 5
    findtime: int = 600
    bantime: int = 600
    bantime_max: int = 7 * 86400


def _seconds(key: str, default: int, hi: int, doc: str) -> fields.Field:
    return fields.whole(key, default, 1, hi, doc,
                        fix=f"use a whole number of seconds between 1 and {hi}, e.g. {default}")


FIELDS = (
    fields.flag("enabled", True, "ban addresses that keep guessing passwords"),
    fields.whole("maxretry", 5, 1, 100, "failed logins before a ban"),
    _seconds("findtime", 600, 7 * 86400, "the window the failures are counted in, seconds"),
    _seconds("bantime", 600, 30 * 86400, "the first ban, seconds; each repeat doubles it"),
    _seconds("bantime_max", 7 * 86400, 365 * 86400, "the longest ban, seconds"),
)


def _cross(values: dict[str, Any], c: Collector) -> None:
    bantime, bantime_max = values["bantime"], values["bantime_max"]
    if bantime_max < bantime:
        c.add("fail2ban.bantime_max", bantime_max, f"is shorter than bantime ({bantime})",
              "make bantime_max at least as long as bantime")
        values["bantime_max"] = bantime


SECTION = fields.section("fail2ban", Fail2ban, FIELDS, cross=_cross)
