"""`appliance console`: what the console needs from the command line (the first boot, and a
person with SSH who lost the administrator's password)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from appliance.core import system
from appliance.core.command import Env
from appliance.core.errors import EXIT_OK, UsageError
from appliance.core.feature import Subcommands

BOOT = os.environ.get("APPLIANCE_BOOT_DIR", "/boot/firmware")


def cmd_console(a: argparse.Namespace, env: Env) -> int:
    from appliance.console import auth, setup

    root = system.Root("/")
    if a.action == "setup":
        env.out(setup.run(root, Path(a.boot_dir)).rstrip())
        return EXIT_OK
    # admin-password: a new password for `admin` (stdin or a prompt), the login code off; every
    # admin session ends.
    pw = env.read_password()
    if len(pw) < 10:
        raise UsageError("the password is shorter than 10 characters; nothing was changed")
    auth.set_admin_password(root.host("/"), pw)
    auth.totp_off(root.host("/"))  # the way back in for someone who lost the phone too
    auth.Sessions(root.host("/")).end_all("admin")
    auth.end_setup(root.host("/"))
    env.out("the console's administrator password is set (and the login code is off); "
            "log in as admin")
    return EXIT_OK


def register(sub: Subcommands) -> None:
    c = sub.add_parser("console", help="the LAN web console: setup code, administrator password")
    cs = c.add_subparsers(dest="action", required=True)
    x = cs.add_parser("setup", help="make the setup code and certificate; write appliance-setup.txt")
    x.add_argument("--boot-dir", default=BOOT, help="where to write the note (default %(default)s)")
    cs.add_parser("admin-password", help="set the administrator's password (stdin or a prompt)")
    c.set_defaults(func=cmd_console)
