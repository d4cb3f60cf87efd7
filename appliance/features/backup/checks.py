"""`appliance status`: the last backup."""

from __future__ import annotations

from appliance.core.checks import FAIL, OK, WARN, Context, Result
from appliance.features.backup import restic

STALE = 48 * 3600  # a nightly backup missed twice


def check_backup(c: Context) -> list[Result]:
    if not c.s.backup.enabled:
        return []
    last = restic.last(c.root)
    if last is None:
        return [Result("backup", WARN, "no backup has run yet",
                       "run `appliance backup now` (the nightly timer runs it too)")]
    age = c.now - last.finished
    if not last.ok:
        return [Result("backup", FAIL, f"the last backup failed {age / 3600:.0f} h ago: {last.error}",
                       "fix what it says, then run `appliance backup now`")]
    if age > STALE:
        return [Result("backup", FAIL, f"the last backup is {age / 3600:.0f} h old",
                       "check that the repository is reachable, then run `appliance backup now`")]
    return [Result("backup", OK, f"snapshot {last.snapshot}, {age / 3600:.0f} h ago, "
                   f"{last.files} files")]
