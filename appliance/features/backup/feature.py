"""Backups (restic): the nightly timer, the monthly restore drill's timer, `appliance backup`
and `appliance restore`, and the status checks of the last run, check and drill."""

from __future__ import annotations

from appliance.core import system
from appliance.core.feature import Feature, Say
from appliance.core.plan import FileSpec, Inputs
from appliance.core.services import Scheduled, Service
from appliance.core.settings import Settings
from appliance.features.backup import checks, cli, restic, sftp
from appliance.features.backup.settings import SECTION

UNITS = "/etc/systemd/system"


def files(i: Inputs) -> list[FileSpec]:
    if not i.settings.backup.enabled:
        return []
    return [FileSpec("etc/systemd/system/appliance-backup.service.j2",
                     f"{UNITS}/appliance-backup.service", "backup", order=10),
            FileSpec("etc/systemd/system/appliance-backup.timer.j2",
                     f"{UNITS}/appliance-backup.timer", "backup", order=20),
            FileSpec("etc/systemd/system/appliance-backup-drill.service.j2",
                     f"{UNITS}/appliance-backup-drill.service", "backup-drill", order=10),
            FileSpec("etc/systemd/system/appliance-backup-drill.timer.j2",
                     f"{UNITS}/appliance-backup-drill.timer", "backup-drill", order=20)]


class BackupTimer(Scheduled):
    name = "backup"
    unit = "appliance-backup.timer"


class DrillTimer(Scheduled):
    name = "backup-drill"
    unit = "appliance-backup-drill.timer"


def services(root: system.Root) -> list[Service]:
    return [BackupTimer(root), DrillTimer(root)]


def prepare(root: system.Root, s: Settings, say: Say) -> None:
    if s.backup.enabled and restic.ensure_password(root, s.backup.password_file):
        say(f"made the backup repository's password ({s.backup.password_file}): keep a copy "
            "off the box, or a dead card takes your backups with it")
    target = sftp.target(s.backup.repository) if s.backup.enabled else None
    if target is not None and sftp.ensure_key(root, f"appliance-backup@{s.hostname}"):
        say(f"made the box's SSH key for backups: authorize it on {target.host} "
            "(`appliance backup ssh-key` prints the line)")
    if target is not None and sftp.pin(root, s.backup.repository, s.backup.ssh_host_key):
        say(f"{target.host}'s SSH host key for backups is the one in the settings (ssh_host_key)")


FEATURE = Feature("backup", "README.md", sections=(SECTION,), files=files, services=services,
                  commands=cli.register, prepare=prepare,
                  checks=(checks.check_backup, checks.check_repository, checks.check_drill,
                          checks.check_sheet))
