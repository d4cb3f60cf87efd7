"""`appliance user` and `appliance alias`: edit the settings file (tomlkit keeps the user's
comments), then apply, all under the one lock the CLI holds."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from appliance.core import mail_rules
from appliance.core.command import Env, apply_and_report
from appliance.core.errors import EXIT_OK, UsageError
from appliance.core.feature import Subcommands
from appliance.core.pipeline import sections
from appliance.core.settings import Settings, User
from appliance.features.mail import imports
from appliance.features.mail.addresses import alias_table


def _after_edit(a: argparse.Namespace, env: Env, what: str) -> int:
    env.out(what)
    if a.no_apply:
        return EXIT_OK
    return apply_and_report(env, Path(a.settings))


def cmd_user(a: argparse.Namespace, env: Env) -> int:
    from appliance.features.mail import users  # tomlkit: only for the commands that edit

    path = Path(a.settings)
    if a.action == "list":
        s = env.settings(path)
        for u in s.users:
            extra = f"  aliases: {', '.join(u.aliases)}" if u.aliases else ""
            env.out(f"{u.address}  ({u.dovecot_scheme}){extra}")
        return EXIT_OK
    if a.action == "add":
        h = users.hash_password(env.read_password())
        users.add_user(path, a.address, h, a.alias or [], sections(env.features))
        return _after_edit(a, env, f"added {a.address}")
    if a.action == "app-password":
        return cmd_app_password(a, env)
    if a.action in ("forward", "vacation"):
        return cmd_rules(a, env)
    if a.action == "quota":
        return cmd_quota(a, env)
    if a.action == "passwd":
        h = users.hash_password(env.read_password())
        users.set_password(path, a.address, h, sections(env.features))
        return _after_edit(a, env, f"changed the password of {a.address}")
    users.del_user(path, a.address, sections(env.features))
    return _after_edit(a, env, f"removed {a.address} (its mailbox stays on disk)")


def cmd_app_password(a: argparse.Namespace, env: Env) -> int:
    """One password per device: made here (long, random, shown once), hashed into the settings,
    checked by Dovecot for IMAP and submission only."""
    from appliance.core import app_passwords, system
    from appliance.features.mail import users

    path = Path(a.settings)
    if a.app_action == "list":
        user = _user(env.settings(path), a.address)
        rows = app_passwords.rows(system.Root("/"), user.app_passwords)
        if a.json:
            env.out(json.dumps(rows, indent=2))
            return EXIT_OK
        for r in rows:
            used = (f"last used {_when(r['last_used'])} from {r['last_address']}"
                    if r["last_used"] else "never used")
            env.out(f"{r['name']}  (made {_when(r['created'])}; {used})")
        return EXIT_OK
    if a.app_action == "add":
        secret = app_passwords.generate()
        users.add_app_password(path, a.address, a.name, users.hash_password(secret),
                               sections(env.features))
        if a.json:  # the console: one object, the report included
            report = None if a.no_apply else env.converge(path, system.Root("/"))
            env.out(json.dumps({"name": a.name, "password": secret,
                                "applied": report.as_dict() if report else None}))
            return EXIT_OK
        code = _after_edit(a, env, f'added the app password "{a.name}" for {a.address}')
        env.out("Type it into the device's password field (it is not shown again):")
        env.out(f"  {secret}")
        return code
    users.del_app_password(path, a.address, a.name, sections(env.features))
    code = _after_edit(a, env, f'revoked the app password "{a.name}" of {a.address}')
    if not a.no_apply:
        # A device still connected keeps its session until it ends: end them all now (the
        # user's other devices log in again by themselves).
        system.run(["doveadm", "kick", a.address], check=False)
    return code


def cmd_rules(a: argparse.Namespace, env: Env) -> int:
    """Forwarding and the away message: under the user in the settings, a Sieve script at
    delivery (core/mail_rules.py)."""
    import datetime as dt

    from appliance.features.mail import users

    path = Path(a.settings)
    if a.action == "forward":
        if a.off == bool(a.to):
            raise UsageError("give the addresses to forward to, or --off")
        users.set_forward(path, a.address, [] if a.off else a.to, not a.no_keep, sections(env.features))
        what = (f"{a.address}: no forwarding" if a.off else
                f"{a.address}: forwarded to {', '.join(a.to)}"
                + ("" if not a.no_keep else " (no copy kept here)"))
        return _after_edit(a, env, what)
    if a.off:
        users.set_vacation(path, a.address, None, sections(env.features))
        return _after_edit(a, env, f"{a.address}: no away message")
    if not a.subject:
        raise UsageError("give the away message's --subject (and its text on stdin), or --off")
    if env.stdin.isatty():
        env.err("Type the away message; end it with Ctrl-D on a line of its own.")
    message = env.stdin.read().strip()
    until = None
    if a.until:
        try:
            until = dt.date.fromisoformat(a.until)
        except ValueError:
            raise UsageError(f'--until "{a.until}" is not a date; write it as 2026-12-24') from None
    users.set_vacation(path, a.address, {"subject": a.subject, "message": message,
                                         "until": until, "days": a.days}, sections(env.features))
    return _after_edit(a, env, f"{a.address}: away message on"
                       + (f" until {until.isoformat()}" if until else " until turned off"))


def cmd_quota(a: argparse.Namespace, env: Env) -> int:
    """Show a mailbox's use and limit, or set its own quota (--default: the box's)."""
    from appliance.core import system
    from appliance.features.mail import quota, users

    path = Path(a.settings)
    if a.mb is None and not a.default:
        _user(env.settings(path), a.address)
        res = system.run(["doveadm", "-f", "tab", "quota", "get", "-A"], check=False, timeout=60)
        use = quota.parse_quota_get(res.stdout).get(a.address)
        if use is None:
            raise UsageError(f"Dovecot reports no quota for {a.address}: is it running? "
                             f"({res.output[:200]})")
        env.out(quota.use_result(a.address, *use).detail)
        return EXIT_OK
    if a.mb is not None and a.default:
        raise UsageError("give a size in MiB or --default, not both")
    users.set_quota(path, a.address, a.mb, sections(env.features))
    return _after_edit(a, env, f"{a.address}: " + (f"quota {a.mb} MiB" if a.mb is not None
                                                   else "the box's default quota"))


def _user(s: Settings, address: str) -> User:
    user, owner = mail_rules.who(s.users, address)
    if user is not None:
        return user
    if owner:
        raise UsageError(f"{address} is an alias of {owner}: use `appliance user ... {owner}`")
    raise UsageError(f'no user "{address}"; see `appliance user list`')


def _when(ts: Any) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts)) if ts else "?"


def cmd_alias(a: argparse.Namespace, env: Env) -> int:
    from appliance.features.mail import users

    path = Path(a.settings)
    if a.action == "list":
        s = env.settings(path)
        for alias, target in alias_table(s):
            env.out(f"{alias} -> {target}")
        return EXIT_OK
    if a.action == "add":
        users.add_alias(path, a.alias, a.address, sections(env.features))
        return _after_edit(a, env, f"added alias {a.alias} -> {a.address}")
    users.del_alias(path, a.alias, sections(env.features))
    return _after_edit(a, env, f"removed alias {a.alias}")


def register(sub: Subcommands) -> None:
    u = sub.add_parser("user", help="add, remove, list users; change passwords")
    us = u.add_subparsers(dest="action", required=True)
    us.add_parser("list")
    ap = us.add_parser("app-password", help="one password per device (IMAP, SMTP); revoke one alone")
    aps = ap.add_subparsers(dest="app_action", required=True)
    x = aps.add_parser("list", help="names, when made, last use and its address")
    x.add_argument("address")
    x.add_argument("--json", action="store_true")
    for name, helptext in (("add", "make one and show it once"), ("del", "revoke one")):
        x = aps.add_parser(name, help=helptext)
        x.add_argument("address")
        x.add_argument("name", help='the device, e.g. "Phone"')
        x.add_argument("--no-apply", action="store_true", help="edit the settings only")
        if name == "add":
            x.add_argument("--json", action="store_true", help="the password and the apply report")
    x = us.add_parser("forward", help="forward a user's mail elsewhere (a copy stays, by default)")
    x.add_argument("address")
    x.add_argument("to", nargs="*", help="where to (none with --off)")
    x.add_argument("--no-keep", action="store_true", help="keep no copy here")
    x.add_argument("--off", action="store_true", help="stop forwarding")
    x.add_argument("--no-apply", action="store_true", help="edit the settings only")
    x = us.add_parser("vacation", help="an away message: its text on stdin")
    x.add_argument("address")
    x.add_argument("--subject", help="the reply's subject")
    x.add_argument("--until", help="the last day it answers, e.g. 2026-12-24")
    x.add_argument("--days", type=int, default=7, help="one reply per sender per this many days")
    x.add_argument("--off", action="store_true", help="no more away message")
    x.add_argument("--no-apply", action="store_true", help="edit the settings only")
    x = us.add_parser("quota", help="a mailbox's use, or its own quota in MiB")
    x.add_argument("address")
    x.add_argument("mb", nargs="?", type=int, help="the quota in MiB (none: show the use)")
    x.add_argument("--default", action="store_true", help="back to the box's default quota")
    x.add_argument("--no-apply", action="store_true", help="edit the settings only")
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
    imports.register(sub)
