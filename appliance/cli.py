"""The `appliance` command: thin. Parse arguments, call a layer, print.

Exit codes (stable): 0 ok; 1 an operation failed and the system was restored;
2 bad settings or arguments, nothing changed; 3 another run holds the lock.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from appliance import __version__, migrations, registry
from appliance.console import cli as console_cli
from appliance.core import command, facts, pipeline, settings, system
from appliance.core.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, ApplianceError, UsageError


class Env(command.Env):
    """The command environment bound to this build's features."""

    def __init__(self, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout,
                 stderr: TextIO = sys.stderr) -> None:
        super().__init__(stdin, stdout, stderr, registry.FEATURES)

    def settings(self, path: Path | str) -> settings.Settings:
        # An older format is read as this agent's, in memory; `migrate` writes it.
        return migrations.load_settings(path, registry.SECTIONS)


def default_settings_path() -> Path:
    return Path(os.environ.get("APPLIANCE_SETTINGS", str(settings.DEFAULT_PATH)))


def cmd_check(a: argparse.Namespace, env: Env) -> int:
    s = env.settings(a.file)
    # On the box (the agent's settings directory exists) the file is compared with the
    # machine too; on another computer those checks are named as not made.
    on_box = settings.DEFAULT_PATH.parent.is_dir() and not a.offline
    if on_box:
        facts.check_lan(s.lan, a.file)
        pipeline.preflight(system.Root("/"), s, env.features, a.file)  # the agent's state too
    env.out(f"{a.file}: ok ({s.domain}, {len(s.users)} user(s), host {s.hostname})")
    if not on_box:
        env.out(f"not checked off the box: {'; '.join(facts.CHECKS_ON_THE_BOX)} "
                "(run `appliance check` on the box)")
    return EXIT_OK


def cmd_apply(a: argparse.Namespace, env: Env) -> int:
    if not a.diff:  # under the lock, before anything reads the files (migrations.py says why)
        migrations.migrate(system.Root(a.root), Path(a.settings), registry.SECTIONS, env.err)
    return command.apply_and_report(env, Path(a.settings), a.root, a.diff, a.json)


def cmd_migrate(a: argparse.Namespace, env: Env) -> int:
    done = migrations.migrate(system.Root(a.root), Path(a.settings), registry.SECTIONS, env.out,
                              dry_run=a.dry_run)
    if not done:
        env.out("every file is in this agent's format; nothing to do")
    return EXIT_OK


def cmd_facts(a: argparse.Namespace, env: Env) -> int:
    lan = settings.LanOverride()
    p = Path(a.settings)
    if p.exists():
        lan = env.settings(p).lan
    env.out(json.dumps(facts.gather(lan).as_dict(), indent=2))
    return EXIT_OK


def cmd_set(a: argparse.Namespace, env: Env) -> int:
    """Edit settings by name, as the console's forms do: comments kept, the whole file checked
    before it is written, then applied."""
    import tomlkit

    from appliance.core import edit

    changes: list[tuple[str, Any]] = []
    for item in a.assignments:
        key, sep, text = item.partition("=")
        if not sep:
            raise UsageError(f'"{item}" is not KEY=VALUE: e.g. spam.mode=light, or spam.mode= '
                             "for the default")
        changes.append((key.strip(), edit.value_of(text) if text.strip() else None))
    edit.set_values(Path(a.settings), changes, registry.SECTIONS)
    for key, value in changes:
        env.out(f"{key} = {tomlkit.item(value).as_string()}" if value is not None
                else f"{key}: the default")
    return EXIT_OK if a.no_apply else command.apply_and_report(env, Path(a.settings))


def cmd_settings_reference(a: argparse.Namespace, env: Env) -> int:
    env.out(registry.settings_reference().rstrip())
    return EXIT_OK


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

    m = sub.add_parser("migrate", help="bring the settings and the agent's state to this agent's "
                       "formats (apply does it first); keeps a copy of each old file")
    m.add_argument("--root", default="/", help="the files of a Debian root in DIR")
    m.add_argument("--dry-run", action="store_true", help="say what would change; change nothing")
    m.set_defaults(func=cmd_migrate)

    s = sub.add_parser("set", help="change settings by name (spam.mode=light; KEY= for the "
                       "default), keeping the file's comments; then apply")
    s.add_argument("assignments", nargs="+", metavar="KEY=VALUE",
                   help="a TOML value (true, 25, \"text\", [\"a\"]) or a word")
    s.add_argument("--no-apply", action="store_true", help="edit the settings only")
    s.set_defaults(func=cmd_set)

    r = sub.add_parser("settings-reference", help="print every feature's settings: key, default, meaning")
    r.set_defaults(func=cmd_settings_reference)

    f = sub.add_parser("facts", help="print what the agent detects (LAN, gateway) as JSON")
    f.set_defaults(func=cmd_facts)

    for feature in registry.FEATURES:
        feature.commands(sub)
    console_cli.register(sub)  # the console is a client of the pipeline, like this command
    return p


# Commands that change nothing on the box run without the lock (probe-server runs for hours on
# another machine). Every other command holds it from its first read of the settings to the end
# of its apply, so an edit and the apply that follows are one step.
# Each feature names its own such verbs (`Feature.unlocked`): `status`, `dns`, `bans`,
# `probe-server`, and `relay`, the tunnel unit's ExecStart/ExecReload/ExecStop: systemd runs it
# for an apply that holds the lock and waits for `systemctl reload-or-restart`, so taking the
# lock would deadlock. It only makes the kernel's tunnel match wg-relay.conf, which apply writes
# atomically, and doing that twice is harmless.
UNLOCKED = frozenset({"check", "facts", "settings-reference"}).union(*(f.unlocked for f in registry.FEATURES))
# How long a second command waits for the first (an apply that restarts rspamd on a Pi takes
# minutes) before it says "busy" and changes nothing.
LOCK_WAIT = float(os.environ.get("APPLIANCE_LOCK_WAIT", "300"))


def main(argv: Sequence[str] | None = None, env: Env | None = None) -> int:
    env = env or Env()
    a = parser().parse_args(argv)
    try:
        if a.command in UNLOCKED or getattr(a, "diff", False) or getattr(a, "dry_run", False):
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
