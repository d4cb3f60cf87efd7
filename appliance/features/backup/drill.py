"""The restore drill (`appliance backup drill`, monthly by its timer): the latest snapshot is
restored into a scratch directory, its mailboxes are counted and hashed, and they are compared
with the manifest the snapshot carries. A backup nobody has restored is a hope; this is the proof,
every month, that the repository gives back the mail it was given.

The scratch directory sits beside restic's cache (/var/cache/appliance), on the box's own disk:
the drill needs room for a whole snapshot, so it first asks restic how large the snapshot is and
refuses to start when the restore would leave less than RESERVE free (the mail must still be
delivered meanwhile). The directory is removed afterwards whatever happens, and any left by a
drill that was cut short (a power cut) is removed before the next one starts.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from appliance.core import schema, system
from appliance.core.settings import Settings
from appliance.features.backup import manifest, restic
from appliance.features.backup.restic import TAG, BackupError

DRILLED = "/var/lib/appliance/backup/drilled.json"
SCRATCH = os.path.dirname(restic.CACHE)  # /var/cache/appliance: the cache's filesystem
PREFIX = "drill."
RESERVE = 1 << 30  # free space left after the restore: 1 GiB, or a tenth of a smaller disk
EVERY = 31 * 86400


@dataclass(frozen=True)
class Drill:
    """What the last drill found (the state file `appliance status` reads)."""

    finished: float
    ok: bool
    snapshot: str = ""
    mailboxes: int = 0
    messages: int = 0
    differs: tuple[str, ...] = ()  # one line per mailbox that differs from the manifest
    unsettled: tuple[str, ...] = ()  # differed, but changed while the snapshot was taken
    seconds: float = 0.0
    error: str = ""


def _latest(root: system.Root, s: Settings) -> dict[str, object]:
    # Not --latest 1: that is the latest of each set of paths, and the set grows (a first
    # certificate adds /etc/letsencrypt).
    res = restic.restic(s, "snapshots", "--json", "--tag", TAG, "--host", s.hostname, timeout=300,
                        root=root)
    if res.returncode != 0:
        raise restic.failure("listing the snapshots", res, s.backup.repository)
    found: list[dict[str, object]] = json.loads(res.stdout or "[]")
    if not found:
        raise BackupError(f"there is no snapshot of {s.hostname} to restore yet: "
                          "run `appliance backup now` first")
    return max(found, key=lambda snap: str(snap.get("time", "")))


def _restore_size(root: system.Root, s: Settings, snapshot: str) -> int:
    res = restic.restic(s, "stats", "--json", "--mode", "restore-size", snapshot, timeout=3600,
                        root=root)
    if res.returncode != 0:
        raise restic.failure(f"measuring snapshot {snapshot[:8]}", res, s.backup.repository)
    return int(json.loads(res.stdout).get("total_size", 0))


def _room(root: system.Root, needed: int) -> None:
    st = os.statvfs(root.host(SCRATCH))
    free, size = st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
    reserve = min(RESERVE, size // 10)
    if needed + reserve > free:
        raise BackupError(f"the drill needs {needed / 1e6:.0f} MB in {SCRATCH} and would leave less "
                          f"than {reserve / 1e6:.0f} MB of the {free / 1e6:.0f} MB free there; "
                          "nothing was restored. Free some space, or restore by hand to another "
                          "disk with `appliance restore --to DIR` and compare")


def _clear_leftovers(root: system.Root) -> None:
    base = root.host(SCRATCH)
    if base.is_dir():
        for old in base.iterdir():
            if old.name.startswith(PREFIX):
                system.remove_tree(old)


def _restored(scratch: os.PathLike[str], root: system.Root, target: str) -> str:
    """Where a path of the box is in the restored copy (restic keeps the whole path)."""
    return os.path.join(scratch, str(root.host(target)).lstrip("/"))


def run(root: system.Root, s: Settings, now: float | None = None) -> Drill:
    """Restore the latest snapshot, compare it with its manifest, record the result."""
    started = time.monotonic()
    snapshot = ""
    try:
        latest = _latest(root, s)
        snapshot = str(latest.get("id", ""))
        root.makedirs(SCRATCH)
        _clear_leftovers(root)
        _room(root, _restore_size(root, s, snapshot))
        with root.scratch(SCRATCH, PREFIX) as scratch:
            res = restic.restic(s, "restore", snapshot, "--target", str(scratch), root=root)
            if res.returncode != 0:
                raise restic.failure(f"restoring snapshot {snapshot[:8]}", res,
                                           s.backup.repository)
            try:
                with open(_restored(scratch, root, manifest.MANIFEST), "rb") as f:
                    expected = manifest.parse(f.read())
            except FileNotFoundError:
                raise BackupError(f"snapshot {snapshot[:8]} holds no manifest ({manifest.MANIFEST}): "
                                  "it was not taken by `appliance backup now`; take one with it "
                                  "and drill again") from None
            except (ValueError, KeyError, TypeError) as e:
                raise BackupError(f"the manifest in snapshot {snapshot[:8]} does not read: {e}") from None
            found, _, _ = manifest.scan(Path(_restored(scratch, root, manifest.VMAIL)))
        differs = manifest.compare(expected.mailboxes, found)
        moving = _unsettled(root, snapshot)
        wrong = tuple(str(d) for d in differs if d.mailbox not in moving)
        error = f"snapshot {snapshot[:8]} differs from its manifest: {'; '.join(wrong)}" if wrong else ""
        done = Drill(now or time.time(), not wrong, snapshot[:8], len(expected.mailboxes),
                     expected.messages, wrong, tuple(str(d) for d in differs if d.mailbox in moving),
                     round(time.monotonic() - started, 1), error)
    except (BackupError, OSError) as e:
        done = Drill(now or time.time(), False, snapshot[:8], seconds=round(time.monotonic() - started, 1),
                     error=str(e))
    _record(root, done)
    return done


def _unsettled(root: system.Root, snapshot: str) -> set[str]:
    """The mailboxes that changed while this snapshot was taken, if it is the last one this box
    took: a message that arrived or was deleted meanwhile may be in the snapshot and not in its
    manifest (made just before), or the other way round."""
    took = restic.last(root)
    if took is None or not took.snapshot or not snapshot.startswith(took.snapshot):
        return set()
    return set(took.unsettled)


def _record(root: system.Root, done: Drill) -> None:
    root.makedirs(os.path.dirname(DRILLED), 0o700)
    data = schema.stamped(asdict(done), restic.STATE_VERSION)
    root.write_atomic(DRILLED, system.FileState(json.dumps(data).encode(), 0o600))


def last(root: system.Root) -> Drill | None:
    raw = root.read(DRILLED).content
    if not raw:
        return None
    try:
        data = json.loads(raw)
        if schema.state_version(data) != restic.STATE_VERSION:
            return None
        data = {k: v for k, v in data.items() if k != schema.STATE_KEY}
        return Drill(**{**data, "differs": tuple(data.get("differs", ())),
                        "unsettled": tuple(data.get("unsettled", ()))})
    except (ValueError, TypeError, AttributeError):
        return None
