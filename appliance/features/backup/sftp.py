"""The box's own SSH identity for an SFTP repository (a VPS or NAS the user owns).

The box makes an Ed25519 key of its own on first use (no passphrase: the nightly run is
unattended) and the user authorizes its public line on the target, ideally restricted to SFTP
(`restrict,command="internal-sftp"`). restic starts `ssh` itself; `sftp.command` gives it the
whole command line, so root's ~/.ssh (and any ssh_config) never decides where the backups go.

The first connection records the target's host key (accept-new) in a file of the agent's own;
a later change of that key stops the backups instead of handing them to whoever answers.

The recovery sheet carries the private key: a new card must reach the target with nothing
but the sheet (a first boot from `restore.txt` cannot wait for someone to authorize a new key
on the VPS), and the sheet already holds the repository password, the stronger secret.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from appliance.core import system

DIR = "/var/lib/appliance/backup"
KEY = f"{DIR}/id_ed25519"
KNOWN_HOSTS = f"{DIR}/known_hosts"

# restic's two spellings: sftp:user@host:/path and sftp://user@host[:port]//path.
_SHORT = re.compile(r"^sftp:(?:(?P<user>[\w.-]+)@)?(?P<host>[\w.-]+|\[[0-9a-fA-F:]+\]):(?P<path>\S+)$")
_URL = re.compile(r"^sftp://(?:(?P<user>[\w.-]+)@)?(?P<host>[\w.-]+|\[[0-9a-fA-F:]+\])"
                  r"(?::(?P<port>\d{1,5}))?/(?P<path>\S+)$")


@dataclass(frozen=True)
class Target:
    user: str
    host: str
    port: int
    path: str


def target(repository: str | None) -> Target | None:
    """Where an sftp: repository lives; None for any other kind."""
    if not repository or not repository.startswith("sftp:"):
        return None
    m = _URL.match(repository) or _SHORT.match(repository)
    if m is None:
        return None
    host = m["host"].strip("[]")
    port = int(m.groupdict().get("port") or 22)
    return Target(m["user"] or "root", host, port, m["path"])


def ssh_command(t: Target, key: str, known_hosts: str, pinned: bool = False) -> str:
    """The command restic runs to reach the target (`-o sftp.command=`; restic splits it on
    spaces, so the agent's own paths, which have none, are the only ones in it). Pinned (the
    host key is a setting): only that key; else the first one seen is recorded, then required."""
    return " ".join([
        "ssh", "-F", "/dev/null",  # no ssh_config of root's decides this
        "-i", key, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",  # never a prompt at night
        "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=" + ("yes" if pinned else "accept-new"),
        "-o", "ConnectTimeout=30", "-o", "ServerAliveInterval=60", "-o", "ServerAliveCountMax=3",
        "-p", str(t.port), f"{t.user}@{t.host}", "-s", "sftp"])


def restic_options(root: system.Root, repository: str | None, pinned: bool = False) -> list[str]:
    """restic's extra arguments for this repository: none unless it is reached over SFTP."""
    t = target(repository)
    if t is None:
        return []
    return ["-o", "sftp.command=" + ssh_command(t, str(root.host(KEY)), str(root.host(KNOWN_HOSTS)),
                                                pinned)]


def with_reason(root: system.Root, repository: str | None, pinned: bool,
                res: system.Result) -> system.Result:
    """A failed restic call on an SFTP repository, with what ssh itself says on a bare try.
    restic passes ssh's messages on, but not always before it exits (then "unable to start the
    sftp session, error: EOF" is all there is); ssh's own words name the fix."""
    t = target(repository)
    if t is None or res.returncode in (0, 3) or explain(res.stderr, t):
        return res
    argv = ssh_command(t, str(root.host(KEY)), str(root.host(KNOWN_HOSTS)), pinned).split(" ")
    tried = system.run(argv, input="", check=False, timeout=60)  # the sftp server sees EOF and ends
    if tried.returncode == 0 or not tried.stderr.strip():
        return res
    return system.Result(res.argv, res.returncode, res.stdout,
                         f"{res.stderr.rstrip()}\nssh: {tried.stderr.strip()}")


def host_key_line(t: Target, host_key: str) -> str:
    """The known_hosts line for a host key given in the settings (type and key, no comment)."""
    name = t.host if t.port == 22 else f"[{t.host}]:{t.port}"
    return " ".join([name, *host_key.split()[:2]])


def pin(root: system.Root, repository: str | None, host_key: str | None) -> bool:
    """Make the box's known_hosts hold exactly the host key of the settings (when there is one).
    True if it was written."""
    t = target(repository)
    if t is None or not host_key:
        return False
    line = (host_key_line(t, host_key) + "\n").encode()
    if root.read(KNOWN_HOSTS).content == line:
        return False
    root.makedirs(DIR, 0o700)
    root.write_atomic(KNOWN_HOSTS, system.FileState(line, 0o600))
    return True


def ensure_key(root: system.Root, comment: str) -> bool:
    """Make the box's backup key once (Ed25519, 0600, in OpenSSH's format). True if made."""
    if root.read(KEY).content:
        return False
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    install_key(root, private.decode(), comment)
    return True


def install_key(root: system.Root, private: str, comment: str = "") -> None:
    """Put a private key (the box's own, or the one from a recovery sheet) in place, with its
    public line beside it."""
    root.makedirs(DIR, 0o700)
    text = private.strip() + "\n"
    root.write_atomic(KEY, system.FileState(text.encode(), 0o600))
    line = public_line(root, comment)
    root.write_atomic(KEY + ".pub", system.FileState((line + "\n").encode(), 0o644))


def public_line(root: system.Root, comment: str = "") -> str:
    """The line to authorize on the target, derived from the private key (one source)."""
    from cryptography.hazmat.primitives import serialization

    raw = root.read(KEY).content
    if not raw:
        return ""
    key = serialization.load_ssh_private_key(raw, password=None)
    line = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                         serialization.PublicFormat.OpenSSH).decode()
    if not comment:
        old = (root.read(KEY + ".pub").content or b"").decode().split()
        comment = old[2] if len(old) > 2 else ""
    return f"{line} {comment}".strip()


def private_key(root: system.Root) -> str:
    return (root.read(KEY).content or b"").decode()


def known_hosts(root: system.Root) -> str:
    return (root.read(KNOWN_HOSTS).content or b"").decode()


def install_known_hosts(root: system.Root, text: str) -> None:
    if text.strip():
        root.makedirs(DIR, 0o700)
        root.write_atomic(KNOWN_HOSTS, system.FileState((text.strip() + "\n").encode(), 0o600))


def explain(stderr: str, t: Target) -> str | None:
    """What an SSH failure means for the user, from what ssh said (restic passes it on)."""
    text = stderr.lower()
    if "permission denied" in text:
        return (f"{t.host} refused the box's SSH key: add the line `appliance backup ssh-key` prints "
                f"to ~{t.user}/.ssh/authorized_keys there")
    if "host key verification failed" in text or "remote host identification has changed" in text:
        seen = re.search(r"SHA256:[A-Za-z0-9+/=]+", stderr)
        now = f" (it now shows {seen[0]})" if seen else ""
        return (f"{t.host} answered with another SSH host key than the one recorded at the first "
                f"backup{now}, so nothing was sent: if the server was reinstalled and "
                f"`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` there shows the same, put that "
                "file's line in [backup] ssh_host_key and apply (or delete "
                f"{KNOWN_HOSTS}: the next backup records the new key), then print a new recovery "
                "sheet; otherwise something is in between")
    if any(w in text for w in ("could not resolve hostname", "connection refused", "timed out",
                               "no route to host", "network is unreachable")):
        line = next((ln.strip() for ln in stderr.splitlines() if "ssh:" in ln), "")
        return f"{t.host} cannot be reached over SSH ({line[:160] or 'no answer'})"
    return None
