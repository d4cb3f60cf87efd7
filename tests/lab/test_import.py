"""Moving in (`appliance import`): a second, real Dovecot in the lab's "internet" plays the old
provider, with 2 000 messages in 10 folders; the box copies them over IMAPS with dsync.
Every message lands with an identical body, an interrupted import finishes without duplicates
when run again, and the source is unchanged."""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .mail_lab import BOB_LOCAL, DOMAIN, REMOTE, MailLab
from .netlab import wait_for

OLD_HOST = f"mx.{REMOTE}"
OLD_LOGIN, OLD_PW = "bob.old", "old-provider-pass-9"  # static passdb: no spaces
OLD_HOME = "/var/vmail/old/bob.old"
FOLDERS = ["INBOX"] + [f"Archive/{year}" for year in range(2017, 2023)] + ["Receipts", "Travel", "Family"]
PER_FOLDER = 200
BOB_MAILDIR = f"/var/vmail/{DOMAIN}/bob/Maildir"
CA = "/var/tmp/old-provider.pem"

OLD_DOVECOT = f"""
protocols = imap
listen = *
log_path = /var/log/dovecot-old.log
first_valid_uid = 8
ssl = required
ssl_cert = </etc/dovecot/old.pem
ssl_key = </etc/dovecot/old.key
auth_mechanisms = plain
passdb {{
  driver = static
  args = password={OLD_PW}
}}
userdb {{
  driver = static
  args = uid=mail gid=mail home=/var/vmail/old/%u
}}
mail_location = maildir:~/Maildir
namespace inbox {{
  inbox = yes
  separator = .
}}
"""


def _fill_code(per_folder: int) -> str:
    """Python run on the old provider: Maildir++ folders of distinct messages."""
    return f"""
import os, email.utils
home = {OLD_HOME!r}
for f, folder in enumerate({FOLDERS!r}):
    d = home + '/Maildir' + ('' if folder == 'INBOX' else '/.' + folder.replace('/', '.'))
    for sub in ('cur', 'new', 'tmp'):
        os.makedirs(d + '/' + sub, exist_ok=True)
    for n in range({per_folder}):
        msg = (f'From: friend{{n}}@old.example\\r\\nTo: {OLD_LOGIN}@old.example\\r\\n'
               f'Subject: {{folder}} message {{n}}\\r\\nMessage-ID: <{{f}}-{{n}}@old.example>\\r\\n'
               f'Date: {{email.utils.formatdate(1500000000 + f * 1000 + n)}}\\r\\n\\r\\n'
               + ''.join(f'line {{i}} of message {{n}} in {{folder}}\\r\\n' for i in range(20 + n % 30)))
        with open(f'{{d}}/cur/{{1500000000 + n}}.{{f}}_{{n}}.old:2,S', 'w') as out:
            out.write(msg)
os.system('chown -R mail:mail /var/vmail/old')
"""


def messages(top: Path) -> list[Path]:
    """The old provider's messages under a Maildir (each names it in its Message-ID)."""
    return [p for p in top.rglob("*") if p.is_file() and p.parent.name in ("cur", "new")
            and b"@old.example>" in p.read_bytes()[:400]]


def body_hashes(paths: list[Path]) -> list[str]:
    out = []
    for p in paths:
        raw = p.read_bytes().replace(b"\r\n", b"\n")
        out.append(hashlib.sha256(raw.split(b"\n\n", 1)[1]).hexdigest())
    return sorted(out)


def source_state(lab: MailLab) -> dict[str, str]:
    base = lab.mx.path(f"{OLD_HOME}/Maildir")
    return {str(p.relative_to(base)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in base.rglob("*") if p.is_file() and p.parent.name in ("cur", "new")}


def imported(lab: MailLab) -> list[Path]:
    return messages(lab.app.path(BOB_MAILDIR))


def copied_so_far(lab: MailLab) -> int:
    """Messages in the folders only the import makes (cheap: polled while it runs)."""
    base = lab.app.path(BOB_MAILDIR)
    dirs = [base / f".{f.replace('/', '.')}" / sub for f in FOLDERS[1:] for sub in ("cur", "new")]
    return sum(len(os.listdir(d)) for d in dirs if d.is_dir())


def start_old_provider(lab: MailLab, per_folder: int = PER_FOLDER) -> None:
    """The old provider: a real Dovecot (IMAPS, its own certificate) on the lab's internet,
    with `per_folder` messages in each of FOLDERS. Also used by bench/imports.py."""
    mx = lab.mx
    mx.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-days", "2", "-subj", f"/CN={OLD_HOST}", "-addext",
            f"subjectAltName=DNS:{OLD_HOST}", "-keyout", "/etc/dovecot/old.key",
            "-out", "/etc/dovecot/old.pem"])
    mx.write("/etc/dovecot/dovecot.conf", OLD_DOVECOT)
    r = mx.python(_fill_code(per_folder), timeout=600)
    assert r.returncode == 0, r.stderr
    mx.start_forking("dovecot-old", ["dovecot"], "/run/dovecot/master.pid")
    wait_for("the old provider's IMAPS", lambda: lab.tcp_open(lab.app, "203.0.113.25", 993))
    lab.app.write(CA, mx.read("/etc/dovecot/old.pem"))
    lab.app.write("/var/tmp/old-password", OLD_PW + "\n", mode=0o600)


def stop_old_provider(lab: MailLab, user: str = BOB_LOCAL) -> None:
    lab.mx.run(["doveadm", "stop"], check=False)
    lab.mx.run(["rm", "-rf", "/var/vmail/old"], check=False)
    lab.app.run(["doveadm", "expunge", "-u", user, "mailbox", "*", "header", "Message-ID",
                 "@old.example"], check=False)


@pytest.fixture
def old_provider(lab: MailLab) -> Iterator[None]:
    start_old_provider(lab)
    yield
    stop_old_provider(lab)


def run_import(lab: MailLab, *extra: str) -> str:
    r = lab.appliance("import", "--user", BOB_LOCAL, "--from", f"imaps://{OLD_HOST}", "--login",
                      OLD_LOGIN, "--password-file", "/var/tmp/old-password", "--ca-file", CA, *extra)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_a_wrong_password_or_an_untrusted_server_is_told_and_copies_nothing(
        lab: MailLab, old_provider: None) -> None:
    lab.app.write("/var/tmp/wrong-password", "not it\n", mode=0o600)
    r = lab.appliance("import", "--user", BOB_LOCAL, "--from", f"imaps://{OLD_HOST}", "--login",
                      OLD_LOGIN, "--password-file", "/var/tmp/wrong-password", "--ca-file", CA)
    assert r.returncode == 2 and "the old server could not be read" in r.stderr, r.stderr
    r = lab.appliance("import", "--user", BOB_LOCAL, "--from", f"imaps://{OLD_HOST}", "--login",
                      OLD_LOGIN, "--password-file", "/var/tmp/old-password")  # the system's CAs
    assert r.returncode == 2 and "the old server could not be read" in r.stderr, r.stderr
    assert not imported(lab)


def test_an_import_lands_every_message_resumes_without_duplicates_and_leaves_the_source(
        lab: MailLab, old_provider: None) -> None:
    before = source_state(lab)
    assert len(before) == len(FOLDERS) * PER_FOLDER
    want = body_hashes(messages(lab.mx.path(f"{OLD_HOME}/Maildir")))
    # Interrupted half-way: the whole process group (the CLI and its doveadm) is killed.
    lab.app.run(["sh", "-c", f"setsid {sys.executable} -m appliance.cli import --user " + BOB_LOCAL
                 + f" --from imaps://{OLD_HOST} --login {OLD_LOGIN} --password-file "
                 f"/var/tmp/old-password --ca-file {CA} > /var/tmp/import.out 2>&1 & "
                 "echo $! > /var/tmp/import.pid"], env={"PYTHONPATH": str(lab.repo)})
    started = time.monotonic()
    wait_for("half the messages", lambda: copied_so_far(lab) >= 1000, timeout=120, interval=0.02)
    pid = lab.app.read("/var/tmp/import.pid").strip()
    lab.app.run(["kill", "-TERM", "--", f"-{pid}"], check=False)
    wait_for("the import to end", lambda: lab.app.run(["kill", "-0", pid], check=False).returncode)
    half = len(imported(lab))
    assert half < len(before), "finished before it could be interrupted"
    assert not list(lab.app.path("/run").glob("appliance-import-*"))  # the password file went too
    # Run again: it goes on, and copies nothing twice.
    out = run_import(lab)
    took = time.monotonic() - started
    assert f"{OLD_HOST}: {len(FOLDERS)} folder(s), {len(before)} message(s)" in out
    assert "folder 10 of 10" in out
    assert body_hashes(imported(lab)) == want, "a message is missing, changed or twice"
    assert len(imported(lab)) == len(before)
    assert source_state(lab) == before  # nothing read as seen, moved or deleted there
    # A third run finds nothing to do. The password was never on a command line.
    lab.app.run(["sh", "-c", f"{sys.executable} -m appliance.cli import --user {BOB_LOCAL} --from "
                 f"imaps://{OLD_HOST} --login {OLD_LOGIN} --password-file /var/tmp/old-password "
                 f"--ca-file {CA} > /var/tmp/import.out 2>&1 & sleep 0.5; ps axww -o args > /var/tmp/ps.out; "
                 "wait"], env={"PYTHONPATH": str(lab.repo)}, timeout=120)
    assert "doveadm" in lab.app.read("/var/tmp/ps.out") and OLD_PW not in lab.app.read("/var/tmp/ps.out")
    assert len(imported(lab)) == len(before)
    print(f"import: {len(before)} messages in {took:.1f} s, interrupted at {half}")
