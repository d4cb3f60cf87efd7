"""`appliance status`: the last backup, the last check of the repository, the last drill."""

from __future__ import annotations

from appliance.core.checks import FAIL, OK, WARN, Context, Result
from appliance.features.backup import drill, recovery, restic

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


def check_repository(c: Context) -> list[Result]:
    if not c.s.backup.enabled:
        return []
    done = restic.last_check(c.root)
    if done is None:
        return []  # the first nightly run checks; until then "backup" says enough
    if not done.ok:
        return [Result("backup repository", FAIL, f"the last check found damage: {done.error}",
                       "run `appliance backup check --read 100%`; if it still fails, start a new "
                       "repository (a new [backup] repository) and keep the old one until then")]
    return [Result("backup repository", OK, f"checked {(c.now - done.finished) / 86400:.0f} days ago")]


def check_drill(c: Context) -> list[Result]:
    if not c.s.backup.enabled:
        return []
    done = drill.last(c.root)
    if done is None:
        if restic.last(c.root) is None:
            return []  # nothing to drill yet; "backup" says so
        return [Result("backup drill", WARN, "no restore drill yet: nobody knows whether the backups "
                       "give the mail back", "run `appliance backup drill` (the monthly timer runs it too)")]
    days = (c.now - done.finished) / 86400
    if not done.ok:
        return [Result("backup drill", FAIL, f"the restore drill of {days:.0f} days ago failed: {done.error}",
                       "take a backup (`appliance backup now`), then run `appliance backup drill`; "
                       "if the same mailbox differs again, keep the box's mail as it is and report it")]
    if c.now - done.finished > drill.EVERY + 7 * 86400:
        return [Result("backup drill", WARN, f"the last restore drill is {days:.0f} days old",
                       "run `appliance backup drill`; check that appliance-backup-drill.timer is active")]
    noted = f"; {len(done.unsettled)} mailbox(es) changed while backed up" if done.unsettled else ""
    return [Result("backup drill", OK, f"last drill {days:.0f} days ago: snapshot {done.snapshot} "
                   f"restored {done.messages} messages in {done.mailboxes} mailboxes as its manifest "
                   f"says{noted}")]


def check_sheet(c: Context) -> list[Result]:
    if not c.s.backup.enabled or not c.root.read(c.s.backup.password_file).content:
        return []
    if recovery.kept(c.root, c.s):
        return [Result("backup recovery sheet", OK, "you keep the recovery sheet")]
    return [Result("backup recovery sheet", WARN, "the backups' password is only on the box: a dead "
                   "card takes your backups with it", "run `appliance backup recovery-sheet`, keep "
                   "what it prints away from the box, then `appliance backup recovery-sheet --kept`")]
