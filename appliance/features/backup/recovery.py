"""The recovery sheet: everything a new card needs to become this box again, on one page.

It holds the repository, its password and, for an SFTP target, the box's SSH key and the
target's host key (sftp.py says why the private key is on it); for a bucket at a storage
provider (s3: and the like), its access keys. Its lower part is TOML, so the
same text a person keeps on paper or in a password manager is what `appliance restore
--sheet` (and the first boot, from `restore.txt`) reads back.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from dataclasses import dataclass

from appliance.core import system
from appliance.core.errors import UsageError
from appliance.core.settings import Settings
from appliance.features.backup import restic, sftp
from appliance.features.backup.settings import KEYED

KEPT = "/var/lib/appliance/backup/sheet-kept"


def sheet(root: system.Root, s: Settings, made: float | None = None) -> str:
    b = s.backup
    password = (root.read(b.password_file).content or b"").decode().splitlines()
    when = time.strftime("%Y-%m-%d", time.gmtime(made or time.time()))
    target = sftp.target(b.repository)
    how = f"""    RESTIC_REPOSITORY='{b.repository}' restic restore latest --target ./restored

and give the password below when restic asks."""
    extra = ""
    keys = restic.read_credentials(root, s)
    if keys:
        lines = "".join(f"{name}={value}\n" for name, value in keys.items())
        how = f"""set the credentials below in your shell (export NAME=value, each line), then

    RESTIC_REPOSITORY='{b.repository}' restic restore latest --target ./restored

and give the password below when restic asks. The credentials open the whole bucket;
anyone holding this sheet holds them too."""
        extra = f'credentials = """\n{lines}"""\n'
    if target is not None:
        sftp.ensure_key(root, f"appliance-backup@{s.hostname}")
        how = f"""save the ssh_key below as a file named key (chmod 600 key), then

    restic -r '{b.repository}' -o sftp.command="ssh -i key -p {target.port} \\
        {target.user}@{target.host} -s sftp" restore latest --target ./restored

and give the password below when restic asks. The key opens only the backups on
{target.host}; anyone holding this sheet holds it too."""
        extra = (f'ssh_key = """\n{sftp.private_key(root).strip()}\n"""\n'
                 f'known_hosts = """\n{sftp.known_hosts(root).strip()}\n"""\n')
    return f"""MAIL APPLIANCE RECOVERY SHEET for {s.hostname} ({s.domain}), {when}

Keep this away from the box: on paper, or in your password manager. Without the
password nobody can read your backups, you neither; with it, anyone who reaches
the repository can. If the card dies, this is how your mail comes back.

On a new card: `appliance restore --sheet FILE` with this text in FILE.
To get everything back on any Linux computer with restic (Debian: apt install restic):

{how}

[recovery]
host = "{s.hostname}"
domain = "{s.domain}"
repository = "{b.repository}"
password = "{password[0] if password else ''}"
{extra}"""


def fingerprint(root: system.Root, s: Settings) -> str:
    """What the kept sheet must match: the password, and the SSH key where the sheet has one
    (a new password or a new key needs a new sheet)."""
    data = root.read(s.backup.password_file).content or b""
    if sftp.target(s.backup.repository) is not None:
        data += root.read(sftp.KEY).content or b""
    if (s.backup.repository or "").startswith(KEYED):
        data += root.read(s.backup.credentials_file).content or b""
    return hashlib.sha256(data).hexdigest()


def kept(root: system.Root, s: Settings) -> bool:
    """Whether the user said they keep the sheet of what is in use now."""
    return (root.read(KEPT).content or b"").decode().strip() == fingerprint(root, s)


def keep(root: system.Root, s: Settings) -> None:
    root.makedirs(os.path.dirname(KEPT), 0o700)
    root.write_atomic(KEPT, system.FileState(fingerprint(root, s).encode() + b"\n", 0o600))


@dataclass(frozen=True)
class Sheet:
    repository: str
    password: str
    ssh_key: str = ""
    known_hosts: str = ""
    credentials: str = ""


def read(text: str, where: str) -> Sheet:
    """The [recovery] part of a recovery sheet (what `sheet` printed, typed or pasted back)."""
    import tomllib

    start = text.find("[recovery]")
    try:
        data = tomllib.loads(text[start:]).get("recovery", {}) if start >= 0 else {}
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{where}: the [recovery] part does not read as TOML ({e}); copy it "
                         "again from the recovery sheet") from None
    missing = [k for k in ("repository", "password") if not isinstance(data.get(k), str) or not data[k]]
    if missing:
        raise UsageError(f"{where}: no {' and no '.join(missing)} in its [recovery] part; it is the "
                         "text `appliance backup recovery-sheet` printed")
    key = data.get("ssh_key", "")
    if sftp.target(data["repository"]) is not None and "PRIVATE KEY-----" not in str(key):
        raise UsageError(f"{where}: the repository is reached over SFTP but the sheet has no "
                         "ssh_key; copy the whole sheet, with its key")
    keys = str(data.get("credentials", "")).strip()
    if data["repository"].startswith(KEYED):
        try:
            found = restic.credentials(keys, f"{where}: credentials")
        except restic.BackupError as e:
            raise UsageError(str(e)) from None
        if not found:
            raise UsageError(f"{where}: the repository is at a storage provider but the sheet has "
                             "no credentials; copy the whole sheet, with them")
    return Sheet(data["repository"], data["password"], str(key).strip(),
                 str(data.get("known_hosts", "")).strip(), keys)


def restore_in_place(sheet: Sheet, snapshot: str = "latest", root: system.Root = restic.LIVE) -> None:
    """Put every file of the snapshot back where it was, on this machine (a new card: nothing
    runs yet; the caller stops what writes the data, and applies the settings afterwards).
    Files that are not in the snapshot are left alone. The sheet's SSH key becomes the box's
    own again, so the nightly backups go on to the same target."""
    if sheet.ssh_key:
        sftp.install_key(root, sheet.ssh_key)
        sftp.install_known_hosts(root, sheet.known_hosts)
    with tempfile.NamedTemporaryFile("w", dir=root.host("/run"), prefix="appliance-restore.") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(sheet.password + "\n")
        f.flush()
        res = system.run(["restic", *sftp.restic_options(root, sheet.repository), "restore",
                          snapshot, "--target", str(root.path)], check=False, timeout=restic.TIMEOUT,
                         env=restic.environment(sheet.repository, f.name,
                                                restic.credentials(sheet.credentials, "the sheet")))
    res = sftp.with_reason(root, sheet.repository, False, res)
    if res.returncode != 0:
        raise restic.failure(f"restoring {snapshot} from {sheet.repository}", res, sheet.repository)
