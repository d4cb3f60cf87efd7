"""The `appliance` command: thin. Parse arguments, call a layer, print.

Exit codes (stable): 0 ok; 1 an operation failed and the system was restored;
2 bad settings or arguments, nothing changed; 3 another run holds the lock.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from . import (
    __version__,
    certcmds,
    certs,
    dkim,
    facts,
    netcmds,
    plan,
    relay,
    services,
    settings,
    system,
    tls,
    users,
)
from .apply import Report, apply
from .errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, ApplianceError


class Env:
    """What the CLI touches besides the machine: streams and the settings path (httpie's idea:
    an injectable environment makes the CLI testable)."""

    def __init__(self, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout,
                 stderr: TextIO = sys.stderr) -> None:
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr

    def out(self, msg: str = "") -> None:
        print(msg, file=self.stdout)

    def err(self, msg: str) -> None:
        print(msg, file=self.stderr)


def default_settings_path() -> Path:
    return Path(os.environ.get("APPLIANCE_SETTINGS", str(settings.DEFAULT_PATH)))


def run_apply(settings_path: Path, root: system.Root, dry_run: bool, env: Env,
              also_reload: tuple[str, ...] = ()) -> Report:
    s = settings.load(root.host(settings_path) if not root.is_live else settings_path)
    if root.is_live:
        facts.check_lan(s.lan, str(settings_path))
    f = facts.gather(s.lan) if root.is_live else facts.Facts(hostname=s.hostname)
    if not dry_run and tls.ensure_self_signed(root, s.hostname):
        env.err(f"created a self-signed certificate for {s.hostname} (until a real one is issued)")
    if not dry_run and root.is_live and dkim.ensure_active(root, s.spam.dkim_key_bits):
        env.err(f"created the DKIM key {dkim.load(root).active} for {s.domain}: publish its "
                "record (`appliance dns`)")
    f = dataclasses.replace(f, relay_password=relay.read_password(s),
                            dkim_selector=dkim.load(root).active)
    tmpl = plan.environment(root.host(plan.OVERRIDE_DIR))
    desired = plan.build(s, f, tmpl, cert=certs.active_paths(root, s.hostname))
    manager = services.detect_manager(root)
    return apply(root, desired, services.all_services(root), manager, dry_run=dry_run,
                 log=lambda m: env.err(f"appliance: {m}"), also_reload=also_reload)


def cmd_check(a: argparse.Namespace, env: Env) -> int:
    s = settings.load(a.file)
    # On the box (the agent's settings directory exists) the file is compared with the
    # machine too; on another computer those checks are named as not made.
    on_box = settings.DEFAULT_PATH.parent.is_dir() and not a.offline
    if on_box:
        facts.check_lan(s.lan, a.file)
    env.out(f"{a.file}: ok ({s.domain}, {len(s.users)} user(s), host {s.hostname})")
    if not on_box:
        env.out(f"not checked off the box: {'; '.join(facts.CHECKS_ON_THE_BOX)} "
                "(run `appliance check` on the box)")
    return EXIT_OK


def cmd_apply(a: argparse.Namespace, env: Env) -> int:
    root = system.Root(a.root)
    report = run_apply(Path(a.settings), root, a.diff, env)
    if a.json:
        env.out(json.dumps(report.as_dict(), indent=2))
        return EXIT_OK
    if a.diff:
        for c in report.changes:
            env.out(c.diff())
    verb = "would change" if a.diff else "changed"
    env.out(f"{verb} {len(report.changes)} file(s); reloaded {len(report.reloaded)} service(s)"
            + (f": {', '.join(report.reloaded)}" if report.reloaded else "")
            + (f"; stopped {', '.join(report.stopped)}" if report.stopped else "")
            + (f"; started {', '.join(report.started)} (not running before)"
               if report.started else ""))
    for c in report.changes:
        env.out(f"  {c.kind:8} {c.file.path}")
    for why in report.not_started:
        # The files are applied; the daemon itself is what is wrong (`appliance status`).
        env.err(f"appliance: warning: not running and did not start: {why}")
    note = relay.notice(settings.load(root.host(a.settings) if not root.is_live else a.settings))
    if note:
        env.out(f"note: {note}")
    return EXIT_OK


def cmd_facts(a: argparse.Namespace, env: Env) -> int:
    lan = settings.LanOverride()
    p = Path(a.settings)
    if p.exists():
        lan = settings.load(p).lan
    env.out(json.dumps(facts.gather(lan).as_dict(), indent=2))
    return EXIT_OK


def _read_password(env: Env, confirm: bool = True) -> str:
    if env.stdin.isatty():
        pw = getpass.getpass("New password: ")
        if confirm and getpass.getpass("Repeat it: ") != pw:
            raise users.UserError("the two passwords differ; nothing was changed")
        return pw
    return env.stdin.readline().rstrip("\n")


def _after_edit(a: argparse.Namespace, env: Env, what: str) -> int:
    env.out(what)
    if a.no_apply:
        return EXIT_OK
    return cmd_apply(argparse.Namespace(settings=a.settings, root="/", diff=False, json=False), env)


def cmd_user(a: argparse.Namespace, env: Env) -> int:
    path = Path(a.settings)
    if a.action == "list":
        s = settings.load(path)
        for u in s.users:
            extra = f"  aliases: {', '.join(u.aliases)}" if u.aliases else ""
            env.out(f"{u.address}  ({u.dovecot_scheme}){extra}")
        return EXIT_OK
    if a.action == "add":
        h = users.hash_password(_read_password(env))
        users.add_user(path, a.address, h, a.alias or [])
        return _after_edit(a, env, f"added {a.address}")
    if a.action == "passwd":
        h = users.hash_password(_read_password(env))
        users.set_password(path, a.address, h)
        return _after_edit(a, env, f"changed the password of {a.address}")
    users.del_user(path, a.address)
    return _after_edit(a, env, f"removed {a.address} (its mailbox stays on disk)")


def cmd_alias(a: argparse.Namespace, env: Env) -> int:
    path = Path(a.settings)
    if a.action == "list":
        s = settings.load(path)
        for alias, target in plan.alias_table(s):
            env.out(f"{alias} -> {target}")
        return EXIT_OK
    if a.action == "add":
        users.add_alias(path, a.alias, a.address)
        return _after_edit(a, env, f"added alias {a.alias} -> {a.address}")
    users.del_alias(path, a.alias)
    return _after_edit(a, env, f"removed alias {a.alias}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="appliance", description="mail-appliance agent")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("--settings", default=str(default_settings_path()),
                   help="settings file (default: %(default)s; env APPLIANCE_SETTINGS)")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("check", help="validate a settings file; change nothing")
    c.add_argument("file")
    c.add_argument("--offline", action="store_true",
                   help="check the file alone, not against this machine's interfaces")
    c.set_defaults(func=cmd_check)

    ap = sub.add_parser("apply", help="make the machine match the settings")
    ap.add_argument("--root", default="/", help="apply to a Debian root in DIR (no reloads)")
    ap.add_argument("--diff", action="store_true", help="show what would change; change nothing")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    ap.set_defaults(func=cmd_apply)

    f = sub.add_parser("facts", help="print what the agent detects (LAN, gateway) as JSON")
    f.set_defaults(func=cmd_facts)

    u = sub.add_parser("user", help="add, remove, list users; change passwords")
    us = u.add_subparsers(dest="action", required=True)
    us.add_parser("list")
    for name in ("add", "passwd", "del"):
        x = us.add_parser(name, help="password from a prompt, or one line on stdin")
        x.add_argument("address")
        x.add_argument("--no-apply", action="store_true", help="edit the settings only")
        if name == "add":
            x.add_argument("--alias", action="append", help="an alias (repeatable)")
    u.set_defaults(func=cmd_user)

    al = sub.add_parser("alias", help="add, remove, list aliases")
    als = al.add_subparsers(dest="action", required=True)
    als.add_parser("list")
    x = als.add_parser("add")
    x.add_argument("alias")
    x.add_argument("address", help="the user who receives it")
    x.add_argument("--no-apply", action="store_true")
    x = als.add_parser("del")
    x.add_argument("alias")
    x.add_argument("--no-apply", action="store_true")
    al.set_defaults(func=cmd_alias)

    from .openpgp import cli_key  # issue #7: `appliance key import|show|remove|list`

    cli_key.add_parser(sub)
    netcmds.register(sub)
    certcmds.register(sub)
    from .fail2ban import register as register_bans  # issue #8: `appliance bans|unban`

    register_bans(sub)
    from .arf import register as register_arf  # issue #10: `appliance report-spam`

    register_arf(sub)
    from .privacy import register as register_privacy  # issue #10: `appliance release|typo-guard`

    register_privacy(sub)
    from .status import register as register_status  # issue #9: `appliance status`

    register_status(sub)
    return p


# Commands that change nothing on the box run without the lock (probe-server runs for hours on
# another machine). Every other command holds it from its first read of the settings to the end
# of its apply, so an edit and the apply that follows are one step.
# `relay` is the tunnel unit's ExecStart/ExecReload/ExecStop: systemd runs it for an apply that
# holds the lock and waits for `systemctl reload-or-restart`, so taking the lock would deadlock
# (the first boot's apply timed out on it). It only makes the kernel's tunnel match
# wg-relay.conf, which apply writes atomically, and doing that twice is harmless.
UNLOCKED = frozenset({"check", "facts", "status", "dns", "bans", "probe-server", "relay"})
# How long a second command waits for the first (an apply that restarts rspamd on a Pi takes
# minutes) before it says "busy" and changes nothing.
LOCK_WAIT = float(os.environ.get("APPLIANCE_LOCK_WAIT", "300"))


def main(argv: Sequence[str] | None = None, env: Env | None = None) -> int:
    env = env or Env()
    a = parser().parse_args(argv)
    try:
        if a.command in UNLOCKED or getattr(a, "diff", False):
            return int(a.func(a, env))
        with system.Root(getattr(a, "root", "/")).lock(wait=LOCK_WAIT):
            return int(a.func(a, env))
    except ApplianceError as e:
        env.err(f"appliance: {e}")
        return e.exit_code
    except KeyboardInterrupt:
        env.err("appliance: interrupted; every file was restored")
        return EXIT_FAILED
    except PermissionError as e:
        env.err(f"appliance: {e.filename}: permission denied; run as root")
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
