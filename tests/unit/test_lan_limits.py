"""The outbound kill-switch's bookkeeping (appliance/policyd.py), pure: decisions given a time."""

from __future__ import annotations

import pytest

from appliance import registry
from appliance.core import plan
from appliance.core.facts import Facts
from appliance.features.limits.policyd import DAY, HOUR, Config, Limiter, parse_config, reply_for

C = Config(messages_per_hour=3, messages_per_day=5, recipients_per_message=2, global_per_hour=4,
           postmaster="alice@example.org")


def test_limit_holds_the_crossing_message_once_then_refuses_temporarily() -> None:
    lim = Limiter(C)
    got = [lim.decide("bob@example.org", 1, 1000.0 + i) for i in range(5)]
    assert [a for a, _ in got[:3]] == ["DUNNO"] * 3
    assert got[3][0].startswith("HOLD ") and got[3][1] == "3 messages per hour"  # notify once
    assert got[4][0].startswith("450 4.7.1 outbound limit reached for bob@example.org")
    assert got[4][1] is None
    # An hour later bob may send again.
    assert lim.decide("bob@example.org", 1, 1000.0 + HOUR + 10)[0] == "DUNNO"


def test_other_users_keep_sending_until_the_global_ceiling() -> None:
    lim = Limiter(C)
    for i in range(3):
        assert lim.decide("bob@example.org", 1, 10.0 + i)[0] == "DUNNO"
    assert lim.decide("carol@example.org", 1, 20.0)[0] == "DUNNO"  # 4 of 4 globally
    action, limit = lim.decide("carol@example.org", 1, 21.0)
    assert action.startswith("HOLD") and "all users" in (limit or "")


def test_daily_limit_and_recipients_per_message() -> None:
    lim = Limiter(C)
    t = 0.0
    for _ in range(5):
        assert lim.decide("bob@example.org", 1, t)[0] == "DUNNO"
        t += HOUR  # never 3 in one hour
    assert lim.decide("bob@example.org", 1, t)[1] == "5 messages per day"
    assert lim.decide("dave@example.org", 3, t)[0].startswith("554 5.7.1 3 recipients")
    assert lim.decide("bob@example.org", 1, t + DAY)[0] == "DUNNO"


def test_unauthenticated_mail_is_not_counted() -> None:
    assert reply_for(Limiter(C), {"recipient_count": "1"}, 0.0) == ("DUNNO", None)


def test_rendered_config_parses_and_a_broken_one_does_not(good: dict) -> None:
    good["limits"] = {"messages_per_hour": 7}
    p = registry.build_plan(registry.parse_settings(good), Facts("mail.example.org"), plan.environment())
    text = {f.path: f.content.decode() for f in p.files}["/etc/appliance/limits.conf"]
    c = parse_config(text)
    assert (c.messages_per_hour, c.messages_per_day, c.postmaster) == (7, 500, "alice@example.org")
    with pytest.raises(ValueError, match="line 1"):
        parse_config("messages_per_minute = 3\n")
