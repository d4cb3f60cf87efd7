"""`appliance boot`: the boot slots. `status` says which slot runs and what the next boot
starts; `try` starts the other slot once; `commit` keeps the running one; `check` runs at every
boot (appliance-boot-check.service) and records a rollback when a trial did not come up."""

from __future__ import annotations

import argparse
import json
import time

from appliance.core import command, system
from appliance.core.errors import EXIT_OK, UsageError
from appliance.core.feature import Subcommands
from appliance.features.updates import bootslots

LOCK_WAIT = 60.0


def _booted(root: system.Root) -> str:
    slot = bootslots.booted_slot(root)
    if slot is None:
        raise UsageError("this machine was not started by the appliance's boot script (no "
                         "appliance.slot= on the kernel's command line): it has no boot slots "
                         "(a host set up over SSH updates in place)")
    return slot


def cmd_boot(a: argparse.Namespace, env: command.Env) -> int:
    root = system.Root(a.root)
    if a.action == "status":
        return _status(root, env, a.json)
    booted = _booted(root)
    with root.lock(wait=LOCK_WAIT):
        state = bootslots.read(root)
        if a.action == "check":
            new, rollback = bootslots.after_boot(state, booted)
            bootslots.write(root, new)
            if rollback is not None:
                bootslots.record(root, rollback, time.time())
                env.err(f"appliance boot: rollback: {rollback.why}; slot {booted} runs")
            elif new.trial == booted:
                env.out(f"slot {booted} is on trial: `appliance boot commit` keeps it; a restart "
                        f"without that starts slot {bootslots.other(booted)} again")
            else:
                env.out(f"slot {booted} runs (committed)")
        elif a.action == "try":
            missing = bootslots.slot_ready(root, a.slot)
            if missing:
                raise UsageError(f"slot {a.slot} cannot be started: {', '.join(missing)} missing")
            bootslots.write(root, bootslots.trial(state, booted, a.slot))
            env.out(f"the next boot starts slot {a.slot}, once. `appliance boot commit` there "
                    f"keeps it; if it does not come up, or restarts before that, slot {booted} "
                    "starts again")
        else:  # commit
            bootslots.write(root, bootslots.commit(state, booted))
            env.out(f"slot {booted} is committed: every boot starts it")
    return EXIT_OK


def _status(root: system.Root, env: command.Env, as_json: bool) -> int:
    booted = bootslots.booted_slot(root)
    state = bootslots.read(root) if booted else None
    events = bootslots.events(root)
    report = {"booted": booted, "state": state.as_dict() if state else None,
              "last_rollback": events[-1] if events else None}
    if as_json:
        env.out(json.dumps(report, indent=2))
        return EXIT_OK
    if booted is None or state is None:
        env.out("no boot slots: this machine is not started by the appliance's boot script")
        return EXIT_OK
    env.out(f"running: slot {booted}")
    nxt = next((s for s in state.order if state.left[s] > 0), state.order[0])
    env.out(f"next boot: slot {nxt}" + (f" (slot {state.trial} is on trial)" if state.trial else ""))
    env.out("tries left: " + ", ".join(f"{s} {state.left[s]}" for s in bootslots.SLOTS))
    if events:
        e = events[-1]
        env.out(f"last rollback: {e.get('at')}: {e.get('why')}")
    return EXIT_OK


def register(sub: Subcommands) -> None:
    b = sub.add_parser("boot", help="the boot slots: which system starts, trying the other one")
    b.add_argument("--root", default="/", help=argparse.SUPPRESS)
    bs = b.add_subparsers(dest="action", required=True)
    st = bs.add_parser("status", help="the running slot, what the next boot starts, rollbacks")
    st.add_argument("--json", action="store_true")
    t = bs.add_parser("try", help="start the other slot at the next boot, once")
    t.add_argument("slot", choices=bootslots.SLOTS)
    bs.add_parser("commit", help="keep the running slot: every boot starts it")
    bs.add_parser("check", help="at boot: give a committed slot its tries back, record a "
                                "rollback")
    b.set_defaults(func=cmd_boot)
