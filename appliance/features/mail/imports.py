"""Moving in: `appliance import` copies the mailbox a user has at another provider into her
mailbox here, over IMAP, with Dovecot's own dsync (`doveadm sync -1 -R` from an imapc: source).

- One-way: nothing at the source is changed or deleted, and nothing here is deleted either (a
  merge, not a mirror: mail that came meanwhile stays).
- Resumable: dsync matches what it copied before by the messages' Date and Message-ID, so a
  second run after an interruption copies only the rest, without duplicates.
- Folder by folder, each with its count, so a long import says where it is.
- The password is read from a prompt or a file and reaches Dovecot through a file only root can
  read, never a command line (which any local process may see).
- Not for a user with an OpenPGP key: the box stores her mail encrypted, and dsync would store
  the copies as they come. The command says so and copies nothing.
"""

from __future__ import annotations

import argparse
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from appliance.core import system
from appliance.core.command import Env
from appliance.core.errors import EXIT_OK, UsageError

SYSTEM_CA = "/etc/ssl/certs/ca-certificates.crt"
DOVECOT_CONF = "/etc/dovecot/dovecot.conf"
# An import of a large mailbox over a home line: hours, not minutes.
FOLDER_TIMEOUT = 6 * 3600
SYNC_TRIES = 3  # a folder that changes while it is copied is synced again
TMP_PREFIX = "appliance-import-"


@dataclass(frozen=True)
class Source:
    host: str
    port: int
    tls: str  # "imaps" (TLS from the first byte) or "starttls"


def parse_source(url: str) -> Source:
    """imaps://host[:port] or imap://host[:port] (STARTTLS, required); nothing in clear."""
    u = urlsplit(url)
    if u.scheme not in ("imaps", "imap") or not u.hostname or u.path not in ("", "/") or u.username:
        raise UsageError(f'--from "{url}" is not an IMAP server address; write it as '
                         "imaps://imap.old-provider.example (or imap://... for STARTTLS); the "
                         "login goes in --login")
    try:
        port = u.port or (993 if u.scheme == "imaps" else 143)
    except ValueError:
        raise UsageError(f'--from "{url}": the port is not a number') from None
    return Source(u.hostname, port, "imaps" if u.scheme == "imaps" else "starttls")


def config(source: Source, login: str, password_file: str, ca_file: str) -> str:
    """doveadm's configuration for one import: the box's own, and the source."""
    if not re.fullmatch(r"[^\s\"\\%]+", login):
        raise UsageError(f'--login "{login}" has spaces, quotes or "%"; give the login as the '
                         "old provider spells it")
    return "\n".join([
        f"!include {DOVECOT_CONF}",
        f"imapc_host = {source.host}",
        f"imapc_port = {source.port}",
        f"imapc_ssl = {source.tls}",
        "imapc_ssl_verify = yes",
        f"ssl_client_ca_file = {ca_file}",
        f'imapc_user = "{login}"',
        f"imapc_password = <{password_file}",
        # Sizes and headers in bulk, several messages at a time (Dovecot's migration advice).
        "imapc_features = rfc822.size fetch-headers",
        "mail_prefetch_count = 20",
        "",
    ])


def parse_status(text: str) -> list[tuple[str, int]]:
    """`doveadm -f tab mailbox status messages '*'` -> [(folder, messages)]."""
    rows = []
    for line in text.splitlines()[1:]:
        name, _, count = line.rpartition("\t")
        if name and count.isdigit():
            rows.append((name, int(count)))
    return rows


def run_import(user: str, source: Source, login: str, password: str, ca_file: str,
               say: Callable[[str], None]) -> int:
    """Copy every folder; -> messages at the source. Raises UsageError with Dovecot's words."""
    root = system.Root("/")
    for stale in Path("/run").glob(f"{TMP_PREFIX}*"):  # left by an import killed with SIGKILL
        system.remove_tree(stale)
    tmp = Path(f"/run/{TMP_PREFIX}{secrets.token_hex(8)}")  # root's alone, gone after
    # SIGTERM or SIGHUP (a closed terminal) end it like an error: the password file goes too.
    with system.sigterm_as_exception():
        root.makedirs(tmp, 0o700)
        try:
            secret = tmp / "password"
            root.write_atomic(secret, system.FileState(password.encode(), 0o600))
            conf = tmp / "doveadm.conf"
            root.write_atomic(conf, system.FileState(
                config(source, login, str(secret), ca_file).encode(), 0o600))
            return _copy(["doveadm", "-c", str(conf)], user, source, say)
        finally:
            system.remove_tree(tmp)


def _copy(doveadm: list[str], user: str, source: Source, say: Callable[[str], None]) -> int:
    res = system.run([*doveadm, "-o", "mail_location=imapc:", "-f", "tab", "mailbox", "status",
                      "-u", user, "messages", "*"], check=False, timeout=300)
    if res.returncode != 0:
        raise UsageError(f"the old server could not be read: {_why(res.output)}")
    folders = parse_status(res.stdout)
    total = sum(n for _, n in folders)
    say(f"{source.host}: {len(folders)} folder(s), {total} message(s)")
    for k, (name, count) in enumerate(folders, 1):
        say(f"folder {k} of {len(folders)}: {name} ({count} message(s))")
        for _ in range(SYNC_TRIES):
            res = system.run([*doveadm, "sync", "-1", "-R", "-u", user, "-m", name, "imapc:"],
                             check=False, timeout=FOLDER_TIMEOUT)
            if res.returncode != 2:  # 2: the folder changed meanwhile, not all in sync yet
                break
        if res.returncode != 0:
            raise UsageError(f"copying {name} stopped: {_why(res.output)}; once that is "
                             "mended, run the same command again: it goes on where it stopped")
    return total


def _why(output: str) -> str:
    lines = [x for x in output.splitlines() if x.strip()]
    return "; ".join(lines[-3:])[:600] or "no reason given"


def cmd_import(a: argparse.Namespace, env: Env) -> int:
    from appliance.core.pipeline import sealed

    s = env.settings(Path(a.settings))
    user = next((u for u in s.users if u.address == a.user), None)
    if user is None:
        raise UsageError(f'no user "{a.user}"; see `appliance user list`')
    if a.user in sealed(system.Root("/"), s, env.features):
        raise UsageError(f"{a.user}'s mail is stored encrypted (an OpenPGP key, or encrypt = "
                         '"required"), and an import would store the copies in clear; nothing '
                         "was copied")
    source = parse_source(a.source)
    if a.password_file:
        try:
            password = Path(a.password_file).read_text().rstrip("\r\n")
        except OSError as e:
            raise UsageError(f"--password-file {a.password_file}: {e.strerror}") from None
    else:
        password = env.read_password(confirm=False)
    total = run_import(a.user, source, a.login, password, a.ca_file or SYSTEM_CA, env.out)
    env.out(f"done: {total} message(s) from {source.host} are in {a.user}'s mailbox "
            "(nothing at the source was changed)")
    return EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("import", help="copy a mailbox from another provider (IMAP) to a user")
    p.add_argument("--user", required=True, help="the user here, e.g. alice@example.org")
    p.add_argument("--from", dest="source", required=True,
                   help="the old server, e.g. imaps://imap.old-provider.example")
    p.add_argument("--login", required=True, help="the login at the old provider")
    p.add_argument("--password-file", help="read the password from this file (else a prompt)")
    p.add_argument("--ca-file", help="trust this CA for the old server (default: the system's)")
    p.set_defaults(func=cmd_import)
