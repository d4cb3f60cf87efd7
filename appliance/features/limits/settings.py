"""[limits]: the outbound kill-switch, per authenticated user (the policy service, policyd.py).

    [limits]
    messages_per_hour = 100
    messages_per_day = 500
    recipients_per_message = 50
    global_per_hour = 1000     # all users together
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.core import fields


@dataclass(frozen=True)
class Limits:
    messages_per_hour: int = 100
    messages_per_day: int = 500
    recipients_per_message: int = 50
    global_per_hour: int = 1000


FIELDS = (
    fields.whole("messages_per_hour", 100, 1, 100000, "messages one user may send in an hour"),
    fields.whole("messages_per_day", 500, 1, 1000000, "messages one user may send in a day"),
    fields.whole("recipients_per_message", 50, 1, 1000, "recipients of one message"),
    fields.whole("global_per_hour", 1000, 1, 1000000, "messages the whole box may send in an hour"),
)
SECTION = fields.section("limits", Limits, FIELDS)
