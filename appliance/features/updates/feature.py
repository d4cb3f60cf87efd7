"""Updates: the boot slots, for now; the updates themselves go through them."""

from __future__ import annotations

import calendar
import time

from appliance.core.checks import OK, WARN, Context, Result
from appliance.core.feature import Feature
from appliance.features.updates import bootslots, cli

RECENT = 14 * 86400  # a rollback is news in the status for two weeks


def check_boot(c: Context) -> list[Result]:
    booted = bootslots.booted_slot(c.root)
    if booted is None:
        return []  # not started by the boot script: no slots to report
    state = bootslots.read(c.root)
    events = bootslots.events(c.root)
    if state.trial == booted:
        return [Result("boot slots", WARN, f"slot {booted} is on trial: the next restart starts "
                       f"slot {bootslots.other(booted)} again",
                       "`appliance boot commit` keeps this slot")]
    if events:
        last = events[-1]
        try:
            at = calendar.timegm(time.strptime(str(last.get("at")), "%Y-%m-%dT%H:%M:%SZ"))
        except ValueError:
            at = 0
        if c.now - at < RECENT:
            return [Result("boot slots", WARN, f"rolled back on {last.get('at')}: {last.get('why')}",
                           f"slot {booted} runs; nothing to do unless it happens again")]
    return [Result("boot slots", OK, f"slot {booted} runs, committed")]


FEATURE = Feature("updates", "docs/updates.md", commands=cli.register, checks=(check_boot,),
                  unlocked=frozenset({"boot"}))
