"""The [backup] settings.

    [backup]
    enabled = true
    repository = "/media/backup/mail-appliance"   # or "sftp:me@vps.example.net:/srv/backup/mail"
    ssh_host_key = "ssh-ed25519 AAAA..."  # optional, SFTP: the server's key; else pinned at first use
    password_file = "/etc/appliance/backup.password"  # made on the box when missing
    credentials_file = "/etc/appliance/backup.credentials"  # s3: and the like: the access keys
    keep_daily = 7
    keep_weekly = 4
    keep_monthly = 12
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from appliance.core import fields
from appliance.core.settings import Collector

PASSWORD_FILE = "/etc/appliance/backup.password"
CREDENTIALS_FILE = "/etc/appliance/backup.credentials"
# Repositories at a storage provider, reached with access keys restic reads from its environment.
KEYED = ("s3:", "b2:", "azure:", "gs:")
# restic's repository locations: a local path, or one of the backends Debian's restic speaks.
_REPOSITORY = re.compile(r"^(/\S+|(sftp|rest|s3|b2|azure|gs|swift|rclone):\S+)$")
# A public key as the server's /etc/ssh/ssh_host_*_key.pub holds it (the comment is dropped).
_HOST_KEY = re.compile(r"^(ssh-ed25519|ecdsa-sha2-nistp(256|384|521)|rsa-sha2-(256|512)|ssh-rsa) "
                       r"[A-Za-z0-9+/]+={0,2}( \S.*)?$")


@dataclass(frozen=True)
class Backup:
    enabled: bool = False
    repository: str | None = None
    password_file: str = PASSWORD_FILE
    credentials_file: str = CREDENTIALS_FILE
    ssh_host_key: str | None = None
    keep_daily: int = 7
    keep_weekly: int = 4
    keep_monthly: int = 12
    append_only: bool = False


FIELDS = (
    fields.flag("enabled", False, "back up every night (restic), to `repository`"),
    fields.Field("repository", None, "where the snapshots go: a path (a USB disk), "
                 "`sftp:user@host:/path` (your VPS), `rest:https://...`, `s3:...`",
                 lambda v: isinstance(v, str) and bool(_REPOSITORY.match(v)),
                 "is not a restic repository", 'write a path such as "/media/backup/mail" or '
                 '"sftp:me@vps.example.net:/srv/backup/mail"', optional=True),
    fields.Field("password_file", PASSWORD_FILE, "the repository's password; made on the box when "
                 "missing, and on the recovery sheet", lambda v: isinstance(v, str) and v.startswith("/"),
                 "is not an absolute path", f'leave it out, or name a file such as "{PASSWORD_FILE}"'),
    fields.Field("credentials_file", CREDENTIALS_FILE, "for a repository at a storage provider "
                 "(s3:, b2:, azure:, gs:), its access keys, one NAME=value per line as restic reads "
                 "them (AWS_ACCESS_KEY_ID=..., AWS_SECRET_ACCESS_KEY=...); you write it, 0600; it "
                 "goes on the recovery sheet", lambda v: isinstance(v, str) and v.startswith("/"),
                 "is not an absolute path", f'leave it out, or name a file such as "{CREDENTIALS_FILE}"'),
    fields.Field("ssh_host_key", None, "for an sftp: repository, the server's SSH host key (its "
                 "/etc/ssh/ssh_host_ed25519_key.pub): only that key is accepted; left out, the key "
                 "seen at the first connection is recorded and required from then on",
                 lambda v: isinstance(v, str) and bool(_HOST_KEY.match(v.strip())),
                 "is not an SSH public key", "copy the line of /etc/ssh/ssh_host_ed25519_key.pub on "
                 'the server, e.g. "ssh-ed25519 AAAAC3Nza..."', optional=True),
    fields.whole("keep_daily", 7, 0, 366, "daily snapshots kept"),
    fields.whole("keep_weekly", 4, 0, 520, "weekly snapshots kept"),
    fields.whole("keep_monthly", 12, 0, 1200, "monthly snapshots kept"),
    fields.flag("append_only", False, "the server keeps every snapshot and lets the box delete "
                "none (`rclone serve restic --append-only`, the relay VPS role's backup target): "
                "the box then never thins out old snapshots; the keep_* numbers are for a prune "
                "run elsewhere with the recovery sheet"),
)


def _cross(values: dict[str, Any], c: Collector) -> None:
    from appliance.features.backup import sftp

    repository = values["repository"] or ""
    if repository.startswith("sftp:") and sftp.target(repository) is None:
        c.add("backup.repository", repository, "is not an SFTP location restic reads",
              'write it as "sftp:user@host:/path" or "sftp://user@host:port//path"')
    if values["ssh_host_key"] and sftp.target(repository) is None:
        c.add("backup.ssh_host_key", values["ssh_host_key"][:24] + "...", "is set, but the repository "
              "is not reached over SFTP", "leave it out, or give an sftp: repository")
    if values["enabled"] and not values["repository"]:
        c.add("backup.repository", "", "is not set, but backups are on: they need a place to go",
              'add repository = "/media/backup/mail" (a USB disk) or an sftp: location')
    if values["enabled"] and not (values["keep_daily"] or values["keep_weekly"] or values["keep_monthly"]):
        c.add("backup.keep_daily", 0, "keeps no snapshot at all (daily, weekly and monthly are 0)",
              "keep at least one, e.g. keep_daily = 7")


SECTION = fields.section("backup", Backup, FIELDS, cross=_cross)
