"""Backups through Debian's restic: what goes in, how restic is called, what the last run did.

restic encrypts and deduplicates; a repository is a directory (a USB disk), or one of its
backends (SFTP to the user's VPS, a REST server, a bucket). The agent only decides what to
back up, keeps the repository's password, and records the result for `appliance status`.

A Maildir is safe to copy while mail arrives: a message appears by rename, complete, so a
snapshot holds each message whole or not at all (Dovecot rebuilds its indexes if needed).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from appliance.core import schema, system
from appliance.core.errors import ApplianceError
from appliance.core.settings import Settings
from appliance.features.backup import manifest, sftp
from appliance.features.backup.settings import KEYED

# What a new card needs to be the same mail server: the settings and the keys kept with them,
# every mailbox, the mail still queued, and the agent's state (DKIM keys, the TLS key behind
# the TLSA record, the OpenPGP public keyring, the typo guard's history), certbot's account
# and certificates, rspamd's learned spam statistics, the calendars and address books
# (Radicale). Not logs, not caches.
PATHS = ("/etc/appliance", "/var/lib/appliance", "/var/vmail", "/var/spool/postfix",
         "/etc/letsencrypt", "/var/lib/rspamd", "/var/lib/radicale")
# Not the PID files of Postfix's master: on a new card they name a process of the old one, or
# an unrelated one, and a live-looking PID makes the first start a failed reload.
EXCLUDE = ("/var/lib/appliance/backup", "/var/lib/rspamd/*.hs*", "/var/lib/appliance/stage.*",
           "/var/spool/postfix/pid")
CACHE = "/var/cache/appliance/restic"
STATE = "/var/lib/appliance/backup/last.json"
CHECKED = "/var/lib/appliance/backup/checked.json"
STATE_VERSION = 1  # the format of STATE and CHECKED; a change is a step in appliance.migrations
CHECK_EVERY = 7 * 86400  # the nightly run reads a part of the repository back once a week
CHECK_SUBSET = "10%"  # of the data packs, a different part each time: all of it in ten weeks
TAG = "mail-appliance"
TIMEOUT = 6 * 3600  # a first backup of a large mailbox over a slow line


class BackupError(ApplianceError):
    pass


@dataclass(frozen=True)
class Last:
    """What the last backup run did (the state file `appliance status` reads)."""

    finished: float
    ok: bool
    snapshot: str = ""
    files: int = 0
    bytes_added: int = 0
    error: str = ""
    messages: int = 0  # in the manifest written into the snapshot
    # Mailboxes that changed while the snapshot was taken (mail arrived or was deleted): the
    # snapshot may hold a little more or less of them than its manifest says.
    unsettled: tuple[str, ...] = ()


def ensure_password(root: system.Root, path: str) -> bool:
    """Make the repository's password once: one line of text (restic reads the first line of
    the file; a binary key with a newline in it would be cut short), 0600. True if made."""
    if root.read(path).content:
        return False
    word = secrets.token_urlsafe(32)  # 256 bits
    root.write_atomic(path, system.FileState((word + "\n").encode(), 0o600))
    return True


# What a credentials file may set: the access keys of restic's storage-provider backends, nothing
# that changes what restic does otherwise (its RESTIC_* variables stay the agent's).
CREDENTIAL_NAMES = re.compile(r"^(AWS_[A-Z_]+|B2_ACCOUNT_(ID|KEY)|AZURE_[A-Z_]+|GOOGLE_PROJECT_ID)$")


def credentials(text: str, where: str) -> dict[str, str]:
    """The NAME=value lines of a credentials file (comments and blank lines skipped)."""
    found: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.removeprefix("export ").partition("=")
        name, value = name.strip(), value.strip().strip("'\"")
        if not sep or not CREDENTIAL_NAMES.match(name):
            raise BackupError(f"{where}, line {n}: not a storage provider's access key (NAME=value, "
                              "e.g. AWS_ACCESS_KEY_ID=...); nothing was changed")
        found[name] = value
    return found


def read_credentials(root: system.Root, s: Settings) -> dict[str, str]:
    """The repository's access keys, where it is at a storage provider; {} otherwise."""
    if not (s.backup.repository or "").startswith(KEYED):
        return {}
    content = root.read(s.backup.credentials_file).content
    if content is None:
        raise BackupError(f"{s.backup.credentials_file} is missing: a {s.backup.repository.split(':')[0]}: "
                          "repository needs its access keys there (AWS_ACCESS_KEY_ID=... and "
                          "AWS_SECRET_ACCESS_KEY=... for S3), 0600; nothing was changed")
    return credentials(content.decode(errors="replace"), s.backup.credentials_file)


def environment(repository: str, password_file: str,
                keys: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    env.update(keys or {})
    env.update(RESTIC_REPOSITORY=repository, RESTIC_PASSWORD_FILE=password_file,
               RESTIC_CACHE_DIR=CACHE)
    return env


LIVE = system.Root("/")


def restic(s: Settings, *args: str, timeout: float = TIMEOUT, root: system.Root = LIVE) -> system.Result:
    """restic on the configured repository; an SFTP one is reached with the box's own SSH key
    and known_hosts (sftp.py), never root's ~/.ssh."""
    repository = s.backup.repository or ""
    env = environment(repository, s.backup.password_file, read_credentials(root, s))
    pinned = bool(s.backup.ssh_host_key)
    res = system.run(["restic", *sftp.restic_options(root, repository, pinned), *args], check=False,
                     timeout=timeout, env=env)
    return sftp.with_reason(root, repository, pinned, res)


def failure(what: str, res: system.Result, repository: str | None = None) -> BackupError:
    out = (res.stderr or res.stdout).strip().splitlines()
    why = out[-1] if out else f"exit {res.returncode}"
    target = sftp.target(repository)
    reach = sftp.explain(res.stderr or "", target) if target else None
    if reach:  # the SSH layer refused: say which side to fix, not restic's last line
        return BackupError(f"{what} failed: {reach}")
    # What `restic check` found, before its closing "repository contains errors".
    found = [ln.strip() for ln in (res.stdout + "\n" + res.stderr).splitlines()
             if "does not match" in ln or ln.lower().startswith(("pack ", "error"))]
    if found:
        why = f"{why}: {found[0][:200]}" + (f" (and {len(found) - 1} more)" if len(found) > 1 else "")
    if "wrong password" in (res.stderr or "").lower():
        why = "the password does not open this repository (wrong password file?); nothing was changed"
    return BackupError(f"{what} failed: {why}")


def init_if_needed(s: Settings, root: system.Root = LIVE) -> bool:
    """Make the repository on first use. True if it was made."""
    target = sftp.target(s.backup.repository)
    if target is not None:
        sftp.ensure_key(root, f"appliance-backup@{s.hostname}")
        sftp.pin(root, s.backup.repository, s.backup.ssh_host_key)
    res = restic(s, "cat", "config", timeout=300, root=root)
    if res.returncode == 0:
        return False
    text = (res.stderr or "").lower()
    if "wrong password" in text or "no key found" in text:
        raise failure("opening the repository", res)
    if target is not None and sftp.explain(res.stderr or "", target):
        # Not reached at all: `init` would fail the same way, or worse, make a second repository.
        raise failure(f"reaching the repository {s.backup.repository}", res, s.backup.repository)
    made = restic(s, "init", timeout=300, root=root)
    if made.returncode != 0:
        raise failure(f"making the repository {s.backup.repository}", made, s.backup.repository)
    return True


def existing(root: system.Root, paths: Sequence[str] = PATHS) -> list[str]:
    """The paths to back up that this box has, as restic sees them (the root's own view)."""
    return [str(root.host(p)) for p in paths if root.host(p).exists()]


def backup(root: system.Root, s: Settings, now: float | None = None) -> Last:
    """One snapshot of PATHS with the manifest of the mail in it, then the old ones thinned out
    by the keep policy. Records the result (failed too) in STATE."""
    try:
        init_if_needed(s, root)
        try:
            before, _ = manifest.write(root)
        except OSError as e:
            raise BackupError(f"writing the backup manifest failed: {e}") from None
        argv = ["backup", "--json", "--tag", TAG, "--host", s.hostname, "--one-file-system",
                *[a for x in EXCLUDE for a in ("--exclude", str(root.host(x)))], *existing(root)]
        res = restic(s, *argv, root=root)
        if res.returncode not in (0, 3):  # 3: some files could not be read (a mail moved away)
            raise failure("the backup", res, s.backup.repository)
        # The manifest was made just before the snapshot: what changed since (listed again,
        # cheaply: only new mail is read) is what the drill may find different.
        try:
            after, _ = manifest.current(root)
        except OSError as e:
            raise BackupError(f"listing the mail again after the snapshot failed: {e}") from None
        unsettled = tuple(d.mailbox for d in manifest.compare(before.mailboxes, after.mailboxes))
        summary: dict[str, Any] = next((json.loads(line) for line in res.stdout.splitlines()
                        if line.startswith("{") and '"summary"' in line), {})
        b = s.backup
        # An append-only server refuses every deletion: that is its point (a box taken over
        # cannot erase its own history), so the box does not try.
        if not b.append_only:
            forget = restic(s, "forget", "--prune", "--tag", TAG, "--host", s.hostname,
                            "--keep-daily", str(b.keep_daily), "--keep-weekly", str(b.keep_weekly),
                            "--keep-monthly", str(b.keep_monthly), root=root)
            if forget.returncode != 0:
                if "forbidden" in (forget.stderr + forget.stdout).lower():
                    raise BackupError(
                        "thinning out old snapshots failed: the server refuses to delete "
                        "(an append-only server). The snapshot itself was made; set [backup] "
                        "append_only = true so the box stops trying")
                raise failure("thinning out old snapshots", forget, s.backup.repository)
        last = Last(now or time.time(), True, str(summary.get("snapshot_id", ""))[:8],
                    int(summary.get("total_files_processed", 0)),
                    int(summary.get("data_added", 0)), messages=before.messages,
                    unsettled=unsettled)
    except BackupError as e:
        last = Last(now or time.time(), False, error=str(e))
    _record(root, STATE, last)
    return last


def _record(root: system.Root, path: str, what: Last) -> None:
    root.makedirs(os.path.dirname(path), 0o700)
    data = schema.stamped(asdict(what), STATE_VERSION)
    root.write_atomic(path, system.FileState(json.dumps(data).encode(), 0o600))


def _read(root: system.Root, path: str) -> Last | None:
    """The record, or None: none yet, damaged, or a newer agent's (the box was downgraded; the
    next run writes anew)."""
    raw = root.read(path).content
    if not raw:
        return None
    try:
        data = json.loads(raw)
        if schema.state_version(data) != STATE_VERSION:
            return None
        fields = {k: v for k, v in data.items() if k != schema.STATE_KEY}
        return Last(**{**fields, "unsettled": tuple(fields.get("unsettled", ()))})
    except (ValueError, TypeError, AttributeError):
        return None


def last(root: system.Root) -> Last | None:
    return _read(root, STATE)


def last_check(root: system.Root) -> Last | None:
    return _read(root, CHECKED)


def check(root: system.Root, s: Settings, subset: str = CHECK_SUBSET, now: float | None = None) -> Last:
    """Read part of the repository back and verify it (restic check --read-data-subset): a pack
    damaged on the disk or at the provider is found before the day it is needed."""
    res = restic(s, "check", f"--read-data-subset={subset}", root=root)
    if res.returncode == 0:
        done = Last(now or time.time(), True)
    else:
        done = Last(now or time.time(), False,
                    error=str(failure("checking the repository", res, s.backup.repository)))
    _record(root, CHECKED, done)
    return done


def check_due(root: system.Root, now: float) -> bool:
    done = last_check(root)
    return done is None or not done.ok or now - done.finished >= CHECK_EVERY


def snapshots(s: Settings, root: system.Root = LIVE) -> list[dict[str, Any]]:
    res = restic(s, "snapshots", "--json", "--tag", TAG, timeout=300, root=root)
    if res.returncode != 0:
        raise failure("listing the snapshots", res, s.backup.repository)
    found: list[dict[str, Any]] = json.loads(res.stdout or "[]")
    return found


def restore(s: Settings, target: str, snapshot: str = "latest", root: system.Root = LIVE) -> None:
    """Every file of the snapshot under `target`, with owners and modes as they were."""
    res = restic(s, "restore", snapshot, "--target", target, root=root)
    if res.returncode != 0:
        raise failure(f"restoring {snapshot} to {target}", res, s.backup.repository)
