"""`appliance user` and `appliance alias`: edit the settings file (tomlkit keeps the user's
comments), then apply, all under the one lock the CLI holds."""

from __future__ import annotations

import argparse
from pathlib import Path

from appliance.core.command import Env, apply_and_report
from appliance.core.errors import EXIT_OK
from appliance.core.feature import Subcommands
from appliance.core.pipeline import sections
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
    if a.action == "passwd":
        h = users.hash_password(env.read_password())
        users.set_password(path, a.address, h, sections(env.features))
        return _after_edit(a, env, f"changed the password of {a.address}")
    users.del_user(path, a.address, sections(env.features))
    return _after_edit(a, env, f"removed {a.address} (its mailbox stays on disk)")


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
