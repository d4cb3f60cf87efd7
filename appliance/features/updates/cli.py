"""`appliance boot`: the boot slots. `status` says which slot runs and what the next boot
starts; `try` starts the other slot once; `commit` keeps the running one; `check` runs at every
boot (appliance-boot-check.service) and records a rollback when a trial did not come up."""

from __future__ import annotations

import argparse
import email.utils
import json
import time
from email.message import EmailMessage

from appliance.core import command, system
from appliance.core.errors import EXIT_OK, ApplianceError, UsageError
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
                env.err(f"appliance boot: {_tell_postmaster(root, env, a.settings, rollback)}")
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


def _tell_postmaster(root: system.Root, env: command.Env, settings_path: str,
                     rollback: bootslots.Rollback) -> str:
    """Mail the postmaster about a rollback, through the local Postfix: at boot its master
    may not run yet, but sendmail leaves the message in the maildrop queue, and Postfix
    delivers it once it starts. Returns what became of it, for the log."""
    try:
        s = env.settings(settings_path)
    except ApplianceError as e:
        return f"the postmaster was not told (no settings to name one: {e})"
    sendmail = root.host("/usr/sbin/sendmail")
    if not sendmail.exists() or not s.postmaster:
        return "the postmaster was not told (no sendmail, or no postmaster in the settings)"
    msg = EmailMessage()
    msg["From"] = f"Mail appliance <postmaster@{s.domain}>"
    msg["To"] = s.postmaster
    msg["Subject"] = f"{s.hostname} went back to its previous system"
    msg["Date"] = email.utils.formatdate(localtime=False)
    msg["Message-ID"] = email.utils.make_msgid(domain=s.hostname)
    msg.set_content(
        f"Your mail box {s.hostname} restarted with its previous system (slot "
        f"{rollback.running}), because the new one (slot {rollback.failed}) did not work:\n\n"
        f"  {rollback.why}.\n\n"
        "The box runs the system it ran before, and mail keeps arriving. There is nothing you "
        "need to do unless this happens again. `appliance boot status` on the box shows the "
        "details.\n")
    res = system.run_bytes([str(sendmail), "-i", "-f", f"postmaster@{s.domain}", "--",
                            s.postmaster], input=bytes(msg), timeout=60)
    if res.returncode != 0:
        return f"mailing the postmaster failed: sendmail exited {res.returncode}"
    return f"told the postmaster ({s.postmaster}) by mail"


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
