"""`appliance backup now|list|check|drill|recovery-sheet|ssh-key` and `appliance restore`."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from appliance.core import system
from appliance.core.command import Env, apply_and_report
from appliance.core.errors import EXIT_FAILED, EXIT_OK, UsageError
from appliance.core.feature import Subcommands
from appliance.core.settings import Settings
from appliance.features.backup import drill, recovery, restic, sftp


def _settings(a: argparse.Namespace, env: Env) -> Settings:
    s = env.settings(Path(a.settings))
    if not s.backup.enabled or not s.backup.repository:
        raise UsageError("backups are off: set [backup] enabled = true and a repository "
                         "(README: Backups), then run `appliance apply`")
    return s


def cmd_backup(a: argparse.Namespace, env: Env) -> int:
    s = _settings(a, env)
    root = system.Root("/")
    if a.action == "now":
        last = restic.backup(root, s)
        # Once a week the nightly run also reads part of the repository back.
        checked = restic.check(root, s) if last.ok and restic.check_due(root, last.finished) else None
        if a.json:
            env.out(json.dumps(last.__dict__, indent=2))
        elif last.ok:
            env.out(f"snapshot {last.snapshot}: {last.files} files, "
                    f"{last.bytes_added / 1e6:.1f} MB new, in {s.backup.repository}")
        else:
            env.err(f"appliance: {last.error}")
        if checked is not None and not checked.ok:
            env.err(f"appliance: {checked.error}")
        return EXIT_OK if last.ok and (checked is None or checked.ok) else EXIT_FAILED
    if a.action == "check":
        checked = restic.check(root, s, a.read)
        if checked.ok:
            env.out(f"the repository is sound ({a.read} of its data read back and verified)")
            return EXIT_OK
        env.err(f"appliance: {checked.error}")
        return EXIT_FAILED
    if a.action == "drill":
        return _drill(root, s, a.json, env)
    if a.action == "ssh-key":
        return _ssh_key(s, root, env)
    if a.action == "recovery-sheet":
        if a.kept:
            recovery.keep(root, s)
            env.out("noted: you keep the recovery sheet; `appliance status` stops asking")
            return EXIT_OK
        env.out(recovery.sheet(root, s))
        env.err("appliance: print or store this away from the box, then run "
                "`appliance backup recovery-sheet --kept`")
        return EXIT_OK
    found = restic.snapshots(s)
    if a.json:
        env.out(json.dumps(found, indent=2))
        return EXIT_OK
    for snap in found:
        when = snap.get("time", "")[:19].replace("T", " ")
        env.out(f"{snap.get('short_id', '')}  {when}  {snap.get('hostname', '')}")
    env.out(f"{len(found)} snapshot(s) in {s.backup.repository}")
    return EXIT_OK


def _drill(root: system.Root, s: Settings, as_json: bool, env: Env) -> int:
    done = drill.run(root, s)
    if as_json:
        env.out(json.dumps(done.__dict__, indent=2))
    elif done.ok:
        env.out(f"snapshot {done.snapshot} restored and compared with its manifest: "
                f"{done.messages} messages in {done.mailboxes} mailboxes, identical "
                f"({done.seconds:.0f} s)")
        for line in done.unsettled:
            env.out(f"  changed while it was backed up, not counted against it: {line}")
    else:
        env.err(f"appliance: the restore drill failed: {done.error}")
    return EXIT_OK if done.ok else EXIT_FAILED


def _ssh_key(s: Settings, root: system.Root, env: Env) -> int:
    """The public line to authorize on the SFTP target (the key is made on first use)."""
    target = sftp.target(s.backup.repository)
    if target is None:
        raise UsageError(f"the repository {s.backup.repository} is not reached over SFTP: "
                         "no SSH key is needed")
    if sftp.ensure_key(root, f"appliance-backup@{s.hostname}"):
        env.err(f"appliance: made the box's SSH key for backups ({sftp.KEY})")
    line = sftp.public_line(root)
    env.out(line)
    env.err(f"appliance: on {target.host}, add this line to ~{target.user}/.ssh/authorized_keys; "
            f'to allow it SFTP only, put restrict,command="internal-sftp" and a space before it')
    return EXIT_OK


def cmd_restore(a: argparse.Namespace, env: Env) -> int:
    if a.sheet:
        return _restore_box(a, env)
    s = _settings(a, env)
    target = Path(a.to)
    if target.resolve() == Path("/"):
        raise UsageError("to put a backup back on this box, give its recovery sheet: "
                         "`appliance restore --sheet FILE`")
    if target.exists() and any(target.iterdir()):
        raise UsageError(f"{target} is not empty: restore into a new or empty directory")
    started = time.monotonic()
    restic.restore(s, str(target), a.snapshot)
    env.out(f"restored {a.snapshot} into {target} in {time.monotonic() - started:.0f} s")
    return EXIT_OK


def _restore_box(a: argparse.Namespace, env: Env) -> int:
    """A new card becomes the old box: the snapshot's files back in place (settings, keys,
    mail, queue), with the daemons that write them stopped meanwhile, then the settings
    applied, which starts them again."""
    from appliance.core import pipeline, services
    from appliance.core.errors import UsageError as Usage

    try:
        sheet = recovery.read(Path(a.sheet).read_text(), a.sheet)
    except OSError as e:
        raise Usage(f"{a.sheet}: {e.strerror}") from None
    root = system.Root("/")
    manager = services.detect_manager(root)
    for svc in pipeline.all_services(root, env.features).values():
        if svc.keeps_data:
            res = manager.pause(svc)
            if res.returncode != 0:
                env.err(f"appliance: could not stop {svc.name}: {res.output}; nothing was restored")
                return EXIT_FAILED
    started = time.monotonic()
    recovery.restore_in_place(sheet, a.snapshot, root)
    env.out(f"restored {a.snapshot} from {sheet.repository} in {time.monotonic() - started:.0f} s; "
            "applying its settings")
    # The sheet just did its job: the user has it, status need not ask for it again.
    s = env.settings(Path(a.settings))
    if s.backup.enabled and (root.read(s.backup.password_file).content or b"").decode().strip() \
            == sheet.password:
        recovery.keep(root, s)
    code = apply_and_report(env, Path(a.settings))
    if code == EXIT_OK:
        # A snapshot taken while mail arrived holds Dovecot's indexes as they were a moment
        # before the last messages: a rescan of every folder makes IMAP show all of them.
        res = system.run(["doveadm", "force-resync", "-A", "*"], check=False, timeout=3600)
        if res.returncode != 0:
            env.err(f"appliance: Dovecot could not rescan the restored mail: {res.output.strip()}; "
                    "run `doveadm force-resync -A '*'`")
        else:
            env.err("appliance: Dovecot rescanned every restored mailbox")
    return code


def register(sub: Subcommands) -> None:
    b = sub.add_parser("backup", help="back up now, or list the snapshots (restic)")
    bs = b.add_subparsers(dest="action", required=True)
    for name, text in (("now", "take a snapshot now (the nightly timer does this too)"),
                       ("list", "the snapshots in the repository")):
        x = bs.add_parser(name, help=text)
        x.add_argument("--json", action="store_true")
    d = bs.add_parser("drill", help="restore the latest snapshot into a scratch directory and "
                      "compare its mail with the snapshot's manifest (monthly by its timer)")
    d.add_argument("--json", action="store_true")
    c = bs.add_parser("check", help="read part of the repository back and verify it")
    c.add_argument("--read", default=restic.CHECK_SUBSET, help="how much of the data, e.g. 10%% or 100%%")
    bs.add_parser("ssh-key", help="the public line to authorize on an SFTP target (made on first use)")
    r = bs.add_parser("recovery-sheet", help="what you need to restore without this box: keep it")
    r.add_argument("--kept", action="store_true", help="say that you keep it (status stops asking)")
    b.set_defaults(func=cmd_backup)
    r = sub.add_parser("restore", help="put a snapshot back on this box (--sheet), or into a directory")
    r.add_argument("--snapshot", default="latest", help="a snapshot ID from `backup list`")
    where = r.add_mutually_exclusive_group(required=True)
    where.add_argument("--sheet", help="the recovery sheet (a file): this box becomes the one backed up")
    where.add_argument("--to", help="an empty directory")
    r.set_defaults(func=cmd_restore)
