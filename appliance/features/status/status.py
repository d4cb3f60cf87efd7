"""`appliance status`: is everything the mail depends on right, and if not, the one-line fix.

    appliance status                 a table: each check ok / warn / fail, its detail and fix
    appliance status --json          the same as a JSON list
    appliance status --mail-changes  the daily timer: mail the postmaster what changed since
                                     the previous run (new problems, fixes); nothing if nothing did

Exit codes: 0 when no check fails (warnings alone exit 0: they name things that cannot be
confirmed or are worth a look, e.g. an unsigned zone or a self-signed certificate); 1 when any
check fails. With --mail-changes: 0 when the mail went out or nothing changed, 1 when the mail
could not be sent (the previous results are kept, so the next run tries again).
The checks themselves are in status_checks.py; docs/status.md lists them with their fixes.
"""

from __future__ import annotations

import argparse
import json
import smtplib
from collections.abc import Sequence
from email.message import EmailMessage
from pathlib import Path

from appliance.core import pipeline, schema, settings, system
from appliance.core.checks import FAIL, OK, WARN, Check, Context, Result, make_resolver
from appliance.core.command import Env
from appliance.core.errors import EXIT_FAILED, EXIT_OK
from appliance.core.feature import Subcommands
from appliance.core.plan import FileSpec, Inputs
from appliance.core.services import Scheduled
from appliance.features.status import checks

STATE_PATH = "/var/lib/appliance/status.json"
STATE_VERSION = 1  # the format of STATE_PATH; a change is a step in appliance.migrations
NOTIFY_VIA = ("127.0.0.1", 25)  # our own Postfix delivers to the postmaster's mailbox
UNITS = "/etc/systemd/system"
_MARK = {OK: "ok  ", WARN: "WARN", FAIL: "FAIL"}


# The status feature's own checks; every other feature declares its own (Feature.checks).
CHECKS: tuple[Check, ...] = (checks.check_blocklists, checks.check_queue, checks.check_disk,
                             checks.check_updates)


def run_checks(c: Context, checks: Sequence[Check]) -> list[Result]:
    out: list[Result] = []
    for check in checks:
        try:
            out += check(c)
        except Exception as e:  # one broken check must not hide the others
            name = check.__name__.removeprefix("check_").replace("_", " ")
            out.append(Result(name, WARN, f"unknown: the check failed ({type(e).__name__}: {e})",
                              "run `appliance status` again; if it persists, report it"))
    return out


def exit_code(results: list[Result]) -> int:
    """Non-zero only when a check fails; warnings alone exit 0."""
    return EXIT_FAILED if any(r.status == FAIL for r in results) else EXIT_OK


def table(results: list[Result]) -> str:
    lines = []
    for r in results:
        lines.append(f"{_MARK[r.status]} {r.name}: {r.detail}")
        if r.fix and r.status != OK:
            lines.append(f"     fix: {r.fix}")
    n = {k: sum(1 for r in results if r.status == k) for k in (OK, WARN, FAIL)}
    lines.append(f"{n[OK]} ok, {n[WARN]} warning(s), {n[FAIL]} failure(s)")
    return "\n".join(lines)


# --- the daily mail: what changed since the previous run -----------------------------------------
State = dict[str, dict[str, str]]  # check name -> {status, detail, fix}


def changes(previous: State, current: list[Result]) -> tuple[list[Result], list[tuple[str, dict[str, str]]]]:
    """(new problems, fixed problems). A problem is new when its check was ok, absent, or had
    another severity before; it is fixed when it is ok now or its check no longer applies.
    A detail that changes within the same severity (a day less on the certificate) is no change."""
    now = {r.name: r for r in current}
    new = [r for r in current if r.status != OK
           and previous.get(r.name, {}).get("status") != r.status]
    fixed = [(name, old) for name, old in previous.items() if old.get("status") in (WARN, FAIL)
             and (name not in now or now[name].status == OK)]
    return new, fixed


def state_of(results: list[Result]) -> dict[str, dict[str, str]]:
    return {r.name: {"status": r.status, "detail": r.detail, "fix": r.fix} for r in results}


def change_mail(s: settings.Settings, new: list[Result], fixed: list[tuple[str, dict[str, str]]],
                results: list[Result]) -> EmailMessage:
    m = EmailMessage()
    m["From"] = s.postmaster
    m["To"] = s.postmaster
    parts = ([f"{len(new)} new problem(s)"] if new else []) + ([f"{len(fixed)} fixed"] if fixed else [])
    m["Subject"] = f"{s.hostname} status: {', '.join(parts)}"
    body = ["Changes since the previous daily check (`appliance status --mail-changes`):", ""]
    for r in new:
        body.append(f"NEW   {r.status.upper()} {r.name}: {r.detail}")
        body += [f"      fix: {r.fix}"] if r.fix else []
    for name, old in fixed:
        body.append(f"FIXED {name} (was {old.get('status', '?').upper()}: {old.get('detail', '')})")
    n = {k: sum(1 for r in results if r.status == k) for k in (OK, WARN, FAIL)}
    body += ["", f"Now: {n[OK]} ok, {n[WARN]} warning(s), {n[FAIL]} failure(s). "
             "The whole report: `appliance status` on the box."]
    m.set_content("\n".join(body) + "\n")
    return m


def load_previous(root: system.Root) -> dict[str, dict[str, str]]:
    raw = root.read(STATE_PATH).content
    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    # A newer agent's file (the box was downgraded) counts as no previous run: one mail too many.
    if not isinstance(data, dict) or schema.state_version(data) != STATE_VERSION:
        return {}
    return data.get("results", {})


def mail_changes(s: settings.Settings, root: system.Root, results: list[Result], env: Env) -> int:
    new, fixed = changes(load_previous(root), results)
    if new or fixed:
        try:
            with smtplib.SMTP(*NOTIFY_VIA, timeout=30) as smtp:
                smtp.send_message(change_mail(s, new, fixed, results))
        except (OSError, smtplib.SMTPException) as e:
            env.err(f"appliance: status: the mail to {s.postmaster} could not be sent "
                    f"through {NOTIFY_VIA[0]}:{NOTIFY_VIA[1]} ({e}); is Postfix running?")
            return EXIT_FAILED
        env.out(f"mailed {s.postmaster}: {len(new)} new problem(s), {len(fixed)} fixed")
    else:
        env.out("nothing changed since the previous run; nothing mailed")
    state = schema.stamped({"results": state_of(results)}, STATE_VERSION)
    root.write_atomic(STATE_PATH, system.FileState(json.dumps(state, indent=1).encode(), 0o600))
    return EXIT_OK


def cmd_status(a: argparse.Namespace, env: Env) -> int:
    s = env.settings(Path(a.settings))
    root = system.Root("/")
    # The facts the DNS records depend on and the records themselves, from every feature
    # (`appliance dns` computes them the same way); several features' checks compare with them.
    every = [check for feature in env.features for check in feature.checks]
    context = Context(s, root, make_resolver(),
                      known_facts=lambda s, root: pipeline.known(root, s, env.features),
                      dns_records=lambda s, k: pipeline.dns_records(s, k, env.features))
    results = run_checks(context, every)
    if a.mail_changes:
        return mail_changes(s, root, results, env)
    env.out(json.dumps([r.as_dict() for r in results], indent=2) if a.json else table(results))
    return exit_code(results)


def register(sub: Subcommands) -> None:
    p = sub.add_parser("status", help="check DNS records, blocklists, certificate, queue, disk...; "
                       "exit 1 when a check fails")
    p.add_argument("--json", action="store_true")
    p.add_argument("--mail-changes", action="store_true",
                   help="mail the postmaster what changed since the previous run (the daily timer)")
    p.set_defaults(func=cmd_status)


# --- the daily timer ---------------------------------------------------------------------------
def status_units(i: Inputs) -> list[FileSpec]:
    s = i.settings

    if not s.status.daily_mail:
        return []
    return [
        FileSpec("etc/systemd/system/appliance-status.service.j2", f"{UNITS}/appliance-status.service",
                 "status", order=10),
        FileSpec("etc/systemd/system/appliance-status.timer.j2", f"{UNITS}/appliance-status.timer",
                 "status", order=20),
    ]


class StatusTimer(Scheduled):
    """Under systemd: (re)start the daily timer. Without systemd there is nothing to reload."""

    name = "status"
    unit = "appliance-status.timer"
