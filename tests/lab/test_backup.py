"""Backups with the real restic: what goes in comes back out byte for byte, a wrong password
changes nothing, and on the lab's box `appliance backup now` / `restore` carry every message,
the settings and the keys, also to an SFTP server the user owns (a real sshd)."""

from __future__ import annotations

import email
import hashlib
import json
import os
import signal
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance import registry
from appliance.core import system
from appliance.features.backup import restic, sftp

from .conftest import REPO
from .mail_lab import (
    ALICE,
    ALICE_PW,
    APP_IP,
    BOB_LOCAL,
    BOB_PW,
    DNS_IP,
    DNSBL_ZONE,
    DOMAIN,
    MAIL_HOST,
    REMOTE_USER,
    WAN_IP,
    MailLab,
    well_formed,
)
from .netlab import Host, wait_for

GOOD = {"domain": "example.org", "users": [{"address": "alice@example.org",
                                            "password_hash": "$6$x$" + "y" * 86}]}


def settings(**backup: Any) -> Any:
    return registry.parse_settings({**GOOD, "backup": backup})


def test_what_is_backed_up_is_restored_byte_for_byte(tmp_path: Path) -> None:
    box = tmp_path / "box"
    root = system.Root(box)
    mail = box / "var/vmail/example.org/alice/cur"
    mail.mkdir(parents=True)
    (mail / "1.msg:2,S").write_bytes(b"Subject: hi\r\n\r\nhello\r\n")
    (box / "var/log").mkdir(parents=True)
    (box / "var/log/mail.log").write_text("not backed up\n")
    password = tmp_path / "backup.password"
    password.write_text("correct horse battery staple\n")
    s = settings(enabled=True, repository=str(tmp_path / "repo"), password_file=str(password))
    last = restic.backup(root, s, now=1_000_000.0)
    assert last.ok and last.files == 2, last  # the message and the manifest written beside it
    assert restic.last(root) == last  # what status reads
    [snap] = restic.snapshots(s)
    assert snap["hostname"] == "mail.example.org"
    out = tmp_path / "restored"
    restic.restore(s, str(out))
    back = out / str(mail).lstrip("/") / "1.msg:2,S"
    assert back.read_bytes() == b"Subject: hi\r\n\r\nhello\r\n"
    assert not list(out.rglob("mail.log"))  # logs stay behind
    import json

    manifest = json.loads(next(out.rglob("backup-manifest.json")).read_text())
    assert manifest["format"] == 1 and "mailboxes" in manifest  # what a drill compares with



def test_a_wrong_password_is_told_and_changes_nothing(tmp_path: Path) -> None:
    box = tmp_path / "box"
    (box / "etc/appliance").mkdir(parents=True)
    (box / "etc/appliance/settings.toml").write_text("domain = 'example.org'\n")
    root = system.Root(box)
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.write_text("the right one\n")
    bad.write_text("a wrong one\n")
    repo = str(tmp_path / "repo")
    assert restic.backup(root, settings(enabled=True, repository=repo, password_file=str(good))).ok
    before = sorted(p.name for p in (tmp_path / "repo/snapshots").iterdir())
    last = restic.backup(root, settings(enabled=True, repository=repo, password_file=str(bad)))
    assert not last.ok and "password does not open this repository" in last.error
    assert sorted(p.name for p in (tmp_path / "repo/snapshots").iterdir()) == before


def test_the_box_backs_up_and_restores_every_message_the_settings_and_the_keys(lab: MailLab) -> None:
    good = lab.app.read("/etc/appliance/settings.toml")
    tag = uuid.uuid4().hex[:12]
    lab.deliver_to_alice(f"backup {tag}")
    try:
        lab.write_settings(good + '\n[backup]\nenabled = true\nrepository = "/var/backups/appliance"\n')
        r = lab.appliance("apply")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "made the backup repository's password" in r.stderr
        password = lab.app.read("/etc/appliance/backup.password")
        r = lab.appliance("backup", "now", "--json")
        assert r.returncode == 0, r.stdout + r.stderr
        last = json.loads(r.stdout)
        assert last["ok"] and last["files"] > 0, last
        r = lab.appliance("status", "--json")
        [seen] = [x for x in json.loads(r.stdout) if x["name"] == "backup"]
        assert seen["status"] == "ok" and last["snapshot"] in seen["detail"], seen
        r = lab.appliance("backup", "recovery-sheet")
        assert r.returncode == 0 and f'password = "{password.strip()}"' in r.stdout, r.stdout + r.stderr
        assert 'repository = "/var/backups/appliance"' in r.stdout

        def sheet_status() -> str:
            out = json.loads(lab.appliance("status", "--json").stdout)
            return str(next(x["status"] for x in out if x["name"] == "backup recovery sheet"))

        assert sheet_status() == "warn"
        assert lab.appliance("backup", "recovery-sheet", "--kept").returncode == 0
        assert sheet_status() == "ok"
        r = lab.appliance("backup", "list")
        assert r.returncode == 0 and f"{last['snapshot']}" in r.stdout, r.stdout + r.stderr
        r = lab.appliance("restore", "--to", "/var/restored")
        assert r.returncode == 0, r.stdout + r.stderr

        def hashes(top: str) -> dict[str, str]:
            out = lab.app.run(["sh", "-c", f"cd {top} && find . -type f -print0 | sort -z | "
                               "xargs -0 sha256sum"], timeout=120).stdout
            return {name: digest for digest, name in (line.split(maxsplit=1) for line in out.splitlines())}

        def messages(top: str) -> dict[str, str]:
            # Dovecot's index files are its cache, which it updates as it reads (a quota count).
            return {k: v for k, v in hashes(top).items() if "/new/" in k or "/cur/" in k}

        mail = messages("/var/vmail")
        assert any(f"backup {tag}" in lab.app.read(f"/var/vmail/{name[2:]}") for name in mail)
        assert messages("/var/restored/var/vmail") == mail  # every message, byte for byte
        assert lab.app.read("/var/restored/etc/appliance/settings.toml") == \
            lab.app.read("/etc/appliance/settings.toml")
        assert lab.app.read("/var/restored/etc/appliance/backup.password") == password
        dkim = hashes("/var/lib/appliance/dkim")
        assert dkim and hashes("/var/restored/var/lib/appliance/dkim") == dkim  # same selector, same key
        # Not into a directory that holds something: nothing is overwritten.
        r = lab.appliance("restore", "--to", "/var/restored")
        assert r.returncode == 2 and "is not empty" in r.stderr
    finally:
        lab.write_settings(good)
        assert lab.appliance("apply").returncode == 0
        lab.app.run(["rm", "-rf", "/var/restored", "/var/backups/appliance"], check=False)


def test_a_damaged_pack_is_found_by_the_check(tmp_path: Path) -> None:
    box = tmp_path / "box"
    (box / "var/vmail/example.org/alice/cur").mkdir(parents=True)
    for n in range(20):
        (box / f"var/vmail/example.org/alice/cur/{n}.msg").write_bytes(os.urandom(4096))
    root = system.Root(box)
    password = tmp_path / "password"
    password.write_text("a good long password\n")
    s = settings(enabled=True, repository=str(tmp_path / "repo"), password_file=str(password))
    assert restic.backup(root, s).ok
    assert restic.check(root, s, "100%").ok
    pack = max((tmp_path / "repo/data").rglob("*"), key=lambda p: p.stat().st_size if p.is_file() else 0)
    data = bytearray(pack.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, as a failing disk would
    pack.write_bytes(bytes(data))
    done = restic.check(root, s, "100%")
    assert not done.ok and "checking the repository failed" in done.error
    assert "Pack ID does not match" in done.error  # names what is damaged
    assert restic.last_check(root) == done  # what status reads


def test_a_destroyed_box_comes_back_from_its_recovery_sheet(lab: MailLab) -> None:
    """The card dies: its mail, settings and keys are gone. Given only the recovery sheet's
    text, `appliance restore --sheet` makes the box the same mail server again: the message is
    there byte for byte, alice's old password reads it over IMAPS, the DKIM key is the same."""
    from .test_mail import imap_fetch_code, trust_appliance_cert

    good = lab.app.read("/etc/appliance/settings.toml")
    tag = uuid.uuid4().hex[:12]
    kept = ["/etc/appliance", "/var/lib/appliance", "/var/vmail"]
    # A safety net for the rest of the lab, should the restore itself fail.
    lab.app.run(["tar", "-C", "/", "-cf", "/var/lab-safety.tar", *[k.lstrip("/") for k in kept]])
    restored_ok = False
    try:
        lab.write_settings(good + '\n[backup]\nenabled = true\nrepository = "/var/backups/appliance"\n')
        assert lab.appliance("apply").returncode == 0
        lab.deliver_to_alice(f"disaster {tag}")
        r = lab.appliance("backup", "now")
        assert r.returncode == 0, r.stdout + r.stderr
        sheet = lab.appliance("backup", "recovery-sheet").stdout

        def hashes(top: str) -> str:
            # Not Dovecot's index files: its cache, which the restore has it rebuild.
            return lab.app.run(["sh", "-c", f"cd {top} && find . -type f ! -name 'dovecot*' -print0 "
                                "| sort -z | xargs -0 sha256sum"], timeout=120).stdout

        mail, dkim = hashes("/var/vmail"), hashes("/var/lib/appliance/dkim")
        settings_before = lab.app.read("/etc/appliance/settings.toml")
        # The card dies: mail, settings, keys, the password, all gone.
        lab.app.run(["rm", "-rf", "/var/vmail/" + DOMAIN, "/var/lib/appliance/dkim",
                     "/etc/appliance/settings.toml", "/etc/appliance/backup.password"])
        lab.app.write("/run/recovery-sheet.txt", sheet, mode=0o600)
        r = lab.appliance("restore", "--sheet", "/run/recovery-sheet.txt")
        assert r.returncode == 0, r.stdout + r.stderr
        assert hashes("/var/vmail") == mail and hashes("/var/lib/appliance/dkim") == dkim
        assert lab.app.read("/etc/appliance/settings.toml") == settings_before
        wait_for("Postfix on port 25 again", lambda: lab.tcp_open(lab.app, "127.0.0.1", 25), timeout=60)
        trust_appliance_cert(lab, lab.lan2)
        r = lab.lan2.python(imap_fetch_code(ALICE, ALICE_PW, f"disaster {tag}"), timeout=60)
        assert r.returncode == 0 and tag in r.stdout, r.stderr  # the old password, the old mail
        restored_ok = True
        # A sheet that is not one says so and changes nothing.
        lab.app.write("/run/not-a-sheet.txt", "hello\n")
        r = lab.appliance("restore", "--sheet", "/run/not-a-sheet.txt")
        assert r.returncode == 2 and "no repository and no password" in r.stderr, r.stderr
    finally:
        if not restored_ok:
            lab.app.run(["tar", "-C", "/", "-xf", "/var/lab-safety.tar"], check=False)
        lab.write_settings(good)
        assert lab.appliance("apply").returncode == 0
        lab.app.run(["rm", "-rf", "/var/backups/appliance", "/var/lab-safety.tar",
                     "/run/recovery-sheet.txt", "/run/not-a-sheet.txt"], check=False)


def test_a_backup_taken_while_500_messages_arrive_holds_only_whole_messages(lab: MailLab) -> None:
    """restic copies the Maildir while Postfix and Dovecot keep delivering: every message in the
    snapshot is whole (a Maildir message appears by rename)."""
    import threading

    good = lab.app.read("/etc/appliance/settings.toml")
    maildir = f"/var/vmail/{DOMAIN}/alice/Maildir"
    tag = uuid.uuid4().hex[:8]
    count = 500
    sent: dict[str, Any] = {}

    def send() -> None:
        sent["r"] = lab.mx.python(f"""
import smtplib
s = smtplib.SMTP('127.0.0.1', 25, timeout=30)
for n in range({count}):
    body = ('line of the message %d\\r\\n' % n) * 40
    s.sendmail({REMOTE_USER!r}, [{ALICE!r}], 'From: {REMOTE_USER}\\r\\nTo: {ALICE}\\r\\n'
               'Subject: burst {tag} %d\\r\\n\\r\\n' % n + body + 'END {tag} %d\\r\\n' % n)
s.quit()""", timeout=600)

    try:
        lab.write_settings(good + '\n[backup]\nenabled = true\nrepository = "/var/backups/appliance"\n')
        assert lab.appliance("apply").returncode == 0
        before = len(lab.maildir_files(lab.app, maildir))
        sender = threading.Thread(target=send)
        sender.start()
        wait_for("the first messages of the burst", lambda: len(lab.maildir_files(lab.app, maildir))
                 > before + 20, timeout=120)
        r = lab.appliance("backup", "now", "--json")  # while the rest arrives
        sender.join(timeout=600)
        assert r.returncode == 0, r.stdout + r.stderr
        assert sent["r"].returncode == 0, sent["r"].stderr
        arrived = len(lab.maildir_files(lab.app, maildir)) - before
        assert lab.appliance("restore", "--to", "/var/restored").returncode == 0
        restored = f"/var/restored{maildir}"
        out = lab.app.run(["sh", "-c", f"grep -rl 'Subject: burst {tag}' {restored}/new {restored}/cur "
                           "| xargs -r tail -qn1"], timeout=120).stdout
        ends = [line.strip() for line in out.splitlines() if line.strip()]
        assert 0 < len(ends) <= count, (len(ends), arrived)
        cut = [e for e in ends if not e.startswith(f"END {tag} ")]
        assert cut == [], cut[:3]  # no message was caught half-written
        # Dovecot opens every restored folder, without an error, and counts what is there.
        # (The restore's top directory is root's alone, as it holds keys: let Dovecot's mail
        # user through to the restored mail, whose own owners and modes came back with it.)
        lab.app.run(["chmod", "0711", "/var/restored"])
        # The snapshot's index may predate the last messages it holds: a restore onto a box
        # has Dovecot rescan (recovery.py), as here.
        r = lab.app.run(["doveadm", "-o", f"mail_location=maildir:{restored}", "force-resync",
                         "-u", ALICE, "*"], check=False, timeout=120)
        assert r.returncode == 0 and "rror" not in r.stderr, r.stdout + r.stderr
        r = lab.app.run(["doveadm", "-o", f"mail_location=maildir:{restored}", "mailbox", "status",
                         "-u", ALICE, "messages", "*"], check=False, timeout=120)
        assert r.returncode == 0 and "rror" not in r.stderr, r.stdout + r.stderr
        counts = {line.rsplit(" messages=", 1)[0]: int(line.rsplit("=", 1)[1])
                  for line in r.stdout.splitlines() if " messages=" in line}
        on_disk = int(lab.app.run(["sh", "-c", f"find {restored}/new {restored}/cur -type f | wc -l"],
                                  check=False).stdout.strip() or 0)
        assert counts.get("INBOX") == on_disk and on_disk >= len(ends), (counts, on_disk)
    finally:
        lab.write_settings(good)
        assert lab.appliance("apply").returncode == 0
        lab.app.run(["rm", "-rf", "/var/backups/appliance", "/var/restored"], check=False)


VAULT_IP = "203.0.113.80"  # the user's own server on the internet side (a VPS, a NAS)
VAULT_USER, VAULT_HOME = "mailbackup", "/var/lib/mailbackup"
REPOSITORY = f"sftp:{VAULT_USER}@{VAULT_IP}:{VAULT_HOME}/mail"
VAULT_SSHD = f"""ListenAddress {VAULT_IP}
HostKey /etc/ssh/vault_host_ed25519_key
PidFile /run/vault-sshd.pid
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
AllowUsers {VAULT_USER}
AuthorizedKeysFile .ssh/authorized_keys
Subsystem sftp internal-sftp
LogLevel VERBOSE
"""


@pytest.fixture(scope="module")
def vault(lab: MailLab) -> Iterator[Host]:
    """An SFTP server the user owns: a real sshd with one account, keys only."""
    host = lab.lab.host("vault", dns=DNS_IP)
    lab.lab.link("vault", "eth0", "inet", "i-vault", a_addr=f"{VAULT_IP}/24", b_master="br-wan")
    lab.lab.ns_exec("vault", "ip", "route", "add", "default", "via", "203.0.113.254")
    host.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", "/etc/ssh/vault_host_ed25519_key"])
    host.run(["useradd", "--create-home", "--home-dir", VAULT_HOME, "--shell", "/bin/sh", "-p", "*",
              VAULT_USER])
    host.run(["install", "-d", "-m", "0700", "-o", VAULT_USER, "-g", VAULT_USER, f"{VAULT_HOME}/.ssh"])
    host.run(["install", "-d", "-m", "0755", "/run/sshd"])
    host.write("/etc/ssh/vault_sshd_config", VAULT_SSHD)
    host.spawn("sshd", ["/usr/sbin/sshd", "-D", "-e", "-f", "/etc/ssh/vault_sshd_config"])
    wait_for("sshd on the vault", lambda: lab.tcp_open(lab.lan2, VAULT_IP, 22), timeout=20)
    yield host
    lab.lab.remove("vault")


def authorize(vault: Host, line: str) -> None:
    """What the user does once on their server: the box's key, allowed SFTP and nothing else."""
    keys = f"{VAULT_HOME}/.ssh/authorized_keys"
    vault.write(keys, f'restrict,command="internal-sftp" {line}\n', mode=0o600)
    vault.run(["chown", f"{VAULT_USER}:{VAULT_USER}", keys])


def test_backups_go_to_the_users_sftp_server_with_the_boxs_own_key_and_its_host_key_pinned(
        lab: MailLab, vault: Host) -> None:
    """The repository is on the user's own server over SFTP: the box makes its own key, the
    server refuses it until the user authorizes its line, then backup, restore and the drill
    go over SFTP with that key and the host key recorded at first contact; root's ~/.ssh is
    never used. When the server answers with another host key, nothing is sent and status
    says why."""
    good = lab.app.read("/etc/appliance/settings.toml")
    tag = uuid.uuid4().hex[:12]
    lab.deliver_to_alice(f"sftp {tag}")

    def root_ssh() -> str:  # root's own known_hosts, which the backups must leave alone
        return hashlib.sha256(lab.app.run(["sh", "-c", "cat /root/.ssh/known_hosts 2>/dev/null"],
                                          check=False).stdout.encode()).hexdigest()

    def backup_status() -> dict[str, Any]:
        out = json.loads(lab.appliance("status", "--json").stdout)
        return dict(next(x for x in out if x["name"] == "backup"))

    def snapshots_on_vault() -> list[str]:
        return vault.run(["sh", "-c", f"ls {VAULT_HOME}/mail/snapshots 2>/dev/null"],
                         check=False).stdout.split()

    before_ssh = root_ssh()
    try:
        lab.write_settings(good + f'\n[backup]\nenabled = true\nrepository = "{REPOSITORY}"\n')
        r = lab.appliance("apply")
        assert r.returncode == 0 and "made the box's SSH key for backups" in r.stderr, r.stdout + r.stderr
        mode = lab.app.run(["stat", "-c", "%a", sftp.KEY]).stdout
        assert mode.strip() == "600"
        # Not authorized on the server yet: the backup fails and says what to do.
        r = lab.appliance("backup", "now")
        assert r.returncode == 1 and "refused the box's SSH key" in r.stderr, r.stdout + r.stderr
        seen = backup_status()
        assert seen["status"] == "fail" and "authorized_keys" in seen["detail"], seen
        key = lab.appliance("backup", "ssh-key")
        assert key.returncode == 0 and key.stdout.startswith("ssh-ed25519 "), key.stderr
        assert "authorized_keys" in key.stderr
        authorize(vault, key.stdout.strip())

        r = lab.appliance("backup", "now", "--json")
        assert r.returncode == 0, r.stdout + r.stderr
        last = json.loads(r.stdout)
        assert last["ok"] and last["files"] > 0 and snapshots_on_vault(), last
        host_key = vault.read("/etc/ssh/vault_host_ed25519_key.pub").split()[1]
        known = lab.app.read(sftp.KNOWN_HOSTS)
        assert VAULT_IP in known and host_key in known, known  # recorded at first contact
        assert root_ssh() == before_ssh
        r = lab.appliance("restore", "--to", "/var/restored")
        assert r.returncode == 0, r.stdout + r.stderr

        def hashes(top: str) -> str:
            return lab.app.run(["sh", "-c", f"cd {top} && find . -type f -print0 | sort -z | "
                                "xargs -0 sha256sum"], timeout=120).stdout

        found = lab.app.run(["grep", "-rlF", f"sftp {tag}", "/var/restored/var/vmail"]).stdout
        assert "/Maildir/new/" in found, found
        assert hashes("/var/restored/var/vmail") == hashes("/var/vmail")  # byte for byte
        r = lab.appliance("backup", "drill")
        assert r.returncode == 0 and "identical" in r.stdout, r.stdout + r.stderr
        sheet = lab.appliance("backup", "recovery-sheet").stdout
        assert "BEGIN OPENSSH PRIVATE KEY" in sheet and host_key in sheet.split("known_hosts")[-1]

        # The server answers with another host key (a reinstalled VPS, or someone in between).
        os.killpg(vault.pids["sshd"], signal.SIGTERM)
        wait_for("the vault's sshd gone", lambda: not lab.tcp_open(lab.lan2, VAULT_IP, 22), timeout=20)
        vault.run(["rm", "-f", "/etc/ssh/vault_host_ed25519_key", "/etc/ssh/vault_host_ed25519_key.pub"])
        vault.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", "/etc/ssh/vault_host_ed25519_key"])
        vault.spawn("sshd", ["/usr/sbin/sshd", "-D", "-e", "-f", "/etc/ssh/vault_sshd_config"])
        wait_for("sshd on the vault again", lambda: lab.tcp_open(lab.lan2, VAULT_IP, 22), timeout=20)
        kept = snapshots_on_vault()
        r = lab.appliance("backup", "now")
        assert r.returncode == 1 and "another SSH host key" in r.stderr, r.stdout + r.stderr
        assert snapshots_on_vault() == kept  # nothing was sent
        assert lab.app.read(sftp.KNOWN_HOSTS) == known  # the recorded key stays the only one
        seen = backup_status()
        assert seen["status"] == "fail" and "another SSH host key" in seen["detail"], seen
        new_fingerprint = vault.run(["ssh-keygen", "-lf", "/etc/ssh/vault_host_ed25519_key.pub"]).stdout
        assert new_fingerprint.split()[1] in r.stderr  # what to compare on the server
        # The user checked it is the reinstalled server: its new key goes into the settings.
        new_key = vault.read("/etc/ssh/vault_host_ed25519_key.pub").strip()
        lab.write_settings(good + f'\n[backup]\nenabled = true\nrepository = "{REPOSITORY}"\n'
                           f'ssh_host_key = "{new_key}"\n')
        r = lab.appliance("apply")
        assert r.returncode == 0 and "ssh_host_key" in r.stderr, r.stdout + r.stderr
        assert lab.app.read(sftp.KNOWN_HOSTS).split() == [VAULT_IP, *new_key.split()[:2]]
        r = lab.appliance("backup", "now")
        assert r.returncode == 0, r.stdout + r.stderr
        assert snapshots_on_vault() != kept  # a new snapshot (the same day's older one forgotten)
    finally:
        lab.write_settings(good)
        assert lab.appliance("apply").returncode == 0
        vault.run(["rm", "-rf", f"{VAULT_HOME}/mail", f"{VAULT_HOME}/.ssh/authorized_keys"], check=False)
        lab.app.run(["rm", "-rf", "/var/restored", sftp.KEY, sftp.KEY + ".pub", sftp.KNOWN_HOSTS,
                     restic.STATE], check=False)


MAILDIR = f"/var/vmail/{DOMAIN}/alice/Maildir"
USERS = ((ALICE, ALICE_PW), (BOB_LOCAL, BOB_PW))


def agent(lab: MailLab, host: Host, *args: str) -> Any:
    """The real agent on any box of the lab (the lab's own helper runs it on box A only)."""
    return host.run([sys.executable, "-m", "appliance.cli", *args], check=False, timeout=300,
                    env={"PYTHONPATH": str(lab.repo)})


# Every folder of a user, each message's SHA-256 as IMAP serves it, over IMAPS from the LAN.
IMAP_INVENTORY = """
import hashlib, imaplib, json, ssl, sys
ctx = ssl.create_default_context(cafile={ca!r})
M = imaplib.IMAP4_SSL({host!r}, 993, ssl_context=ctx, timeout=20)
M.login({user!r}, {pw!r})
out = {{}}
for line in M.list()[1]:
    name = line.decode().split(') ', 1)[1].split(' ', 1)[1].strip('"')  # (flags) "sep" name
    M.select('"' + name + '"', readonly=True)
    typ, nums = M.search(None, 'ALL')
    out[name] = sorted(hashlib.sha256(M.fetch(n, '(BODY.PEEK[])')[1][0][1]).hexdigest()
                       for n in nums[0].split())
M.logout()
json.dump(out, sys.stdout)
"""


def imap_inventory(lab: MailLab, user: str, pw: str) -> dict[str, list[str]]:
    from .test_mail import CA

    r = lab.lan2.python(IMAP_INVENTORY.format(ca=CA, host=MAIL_HOST, user=user, pw=pw), timeout=120)
    assert r.returncode == 0, r.stderr
    return dict(json.loads(r.stdout))


def make_folder(lab: MailLab, user: str, pw: str, folder: str, subject: str) -> None:
    from .test_mail import CA

    msg = well_formed(user, user, subject)
    r = lab.lan2.python(f"""
import imaplib, ssl, time
M = imaplib.IMAP4_SSL({MAIL_HOST!r}, 993, ssl_context=ssl.create_default_context(cafile={CA!r}))
M.login({user!r}, {pw!r})
M.create({folder!r})
M.append({folder!r}, '(\\Seen)', imaplib.Time2Internaldate(time.time()), {msg!r}.encode())
M.logout()""", timeout=60)
    assert r.returncode == 0, r.stderr


def swap_box(lab: MailLab, old: str, new: str) -> None:
    """Unplug one box from the LAN and plug the other in, at the same address."""
    lab.rtr.run(["ip", "link", "set", f"r-{old}", "down"], check=False)  # gone with its box
    if f"r-{new}" in lab.rtr.run(["ip", "-o", "link"]).stdout:
        lab.rtr.run(["ip", "link", "set", f"r-{new}", "up"])
    for h in (lab.rtr, lab.lan2):
        h.run(["ip", "neigh", "flush", "all"], check=False)


BOOT_DIR = "/var/tmp/boot"  # the new card's FAT partition
FIRSTBOOT_RESTORE = f"""
import importlib.machinery, sys
path = {str(REPO / "provisioning/roles/appliance_firstboot/files/appliance-firstboot")!r}
fb = importlib.machinery.SourceFileLoader("appliance_firstboot", path).load_module()
sys.exit(0 if fb.restore_from_sheet() else 1)
"""


def test_a_destroyed_box_comes_back_on_a_new_card_from_its_recovery_sheet(
        lab: MailLab, vault: Host, tmp_path: Path) -> None:
    """Box A backs up to the user's SFTP server, then dies. A new box B, at the same address,
    is given only the recovery sheet's text. After `appliance restore --sheet` it is the same
    mail server: every folder and message (the same bytes over IMAPS), the old passwords, the
    DKIM selector and key (mail verifies at the remote MX), the OpenPGP key (mail to alice is
    still stored encrypted), the same TLS key (the TLSA record still matches): status is green."""
    from ..unit.openpgp_keys import Device
    from .test_dns_records import publish
    from .test_mail import trust_appliance_cert
    from .test_spam import at_remote, dkim_verify_at_remote, submit

    good = lab.app.read("/etc/appliance/settings.toml")
    tag = uuid.uuid4().hex[:12]
    device = Device(tmp_path / "alice-device")
    box_b: Host | None = None
    try:
        device.make(f"Alice <{ALICE}>")
        lab.app.write("/var/tmp/alice.asc", device.export(ALICE))
        assert lab.appliance("key", "import", ALICE, "/var/tmp/alice.asc").returncode == 0
        lab.write_settings(good + f'\n[dns]\npublic_ipv4 = "{WAN_IP}"\n'
                           f'\n[status]\nblocklists = ["{DNSBL_ZONE}"]\n'
                           f'\n[backup]\nenabled = true\nrepository = "{REPOSITORY}"\n')
        r = lab.appliance("apply")
        assert r.returncode == 0 and "made the box's SSH key for backups" in r.stderr, r.stderr
        r = lab.appliance("dns", "--json")
        publish(lab, [f"{x['name']}\t{x['ttl']}\tIN\t{x['rtype']}\t{x['value']}"
                      for x in json.loads(r.stdout)])
        # Not authorized on the server yet: the backup fails and says what to do.
        r = lab.appliance("backup", "now")
        assert r.returncode == 1 and "refused the box's SSH key" in r.stderr, r.stderr
        key = lab.appliance("backup", "ssh-key")
        assert key.returncode == 0 and key.stdout.startswith("ssh-ed25519 "), key.stderr
        mode = lab.app.run(["stat", "-c", "%a", "/var/lib/appliance/backup/id_ed25519"]).stdout
        assert mode.strip() == "600"
        authorize(vault, key.stdout.strip())

        lab.deliver_to_alice(f"disaster {tag}")  # stored encrypted: alice has a key
        newest = max(lab.maildir_files(lab.app, MAILDIR), key=lambda p: p.stat().st_mtime).read_bytes()
        assert b"multipart/encrypted" in newest and f"disaster {tag}".encode() not in newest
        trust_appliance_cert(lab, lab.lan2)
        make_folder(lab, ALICE, ALICE_PW, "Archive", f"filed {tag}")
        before = {user: imap_inventory(lab, user, pw) for user, pw in USERS}
        assert "Archive" in before[ALICE] and before[ALICE]["INBOX"]
        selector = lab.app.read("/var/lib/appliance/dkim/state.json")
        names = {p.name.split(":")[0] for p in lab.maildir_files(lab.app, MAILDIR)}

        r = lab.appliance("backup", "now")
        assert r.returncode == 0, r.stdout + r.stderr
        sheet = lab.appliance("backup", "recovery-sheet").stdout
        assert "BEGIN OPENSSH PRIVATE KEY" in sheet and VAULT_IP in sheet.split("known_hosts")[-1]
        assert lab.appliance("backup", "recovery-sheet", "--kept").returncode == 0
        code, out = status(lab)
        assert code == 0 and "FAIL" not in out, out

        # Box A dies. Box B is a new card: nothing of A's, only the sheet's text.
        swap_box(lab, "app", "appb")
        box_b = lab.lab.host("appb", dns=DNS_IP)
        lab.lab.link("appb", "eth0", "rtr", "r-appb", a_addr=f"{APP_IP}/24", b_master="br-lan")
        lab.lab.ns_exec("appb", "ip", "route", "add", "default", "via", "198.18.0.1")
        box_b.run(["mkdir", "-p", "/var/spool/postfix", "/var/lib/postfix", "/var/lib/dovecot",
                   "/var/lib/nginx", "/var/log/nginx"])
        box_b.run(["chown", "postfix:postfix", "/var/lib/postfix"])
        assert not box_b.exists("/etc/appliance/settings.toml") and not box_b.exists("/var/vmail")
        # The user saves the sheet's text as restore.txt on the new card's boot partition; the
        # first boot's restore step (the image's appliance-firstboot) does the rest. Only that
        # step: growing partitions and making host keys are not the lab's to do.
        box_b.write(f"{BOOT_DIR}/restore.txt", sheet, mode=0o600)
        r = box_b.run([sys.executable, "-c", FIRSTBOOT_RESTORE], check=False, timeout=300,
                      env={"APPLIANCE_BOOT_DIR": BOOT_DIR, "PYTHONPATH": str(lab.repo),
                           "APPLIANCE_COMMAND": f"{sys.executable} -m appliance.cli"})
        log = box_b.read(f"{BOOT_DIR}/appliance-firstboot.log")
        assert r.returncode == 0, r.stdout + r.stderr + log
        assert "restored the backup from restore.txt" in log, log
        assert "Dovecot rescanned every restored mailbox" in log, log
        assert not box_b.exists(f"{BOOT_DIR}/restore.txt")  # it held the password and the key
        wait_for("box B answers on 993", lambda: lab.tcp_open(lab.lan2, APP_IP, 993), timeout=60)

        after = {user: imap_inventory(lab, user, pw) for user, pw in USERS}
        assert after == before  # every folder, every message, the same bytes; the old passwords
        assert box_b.read("/var/lib/appliance/dkim/state.json") == selector
        # Outbound: signed with the same selector, verified at the remote MX against A's record.
        submit(lab, REMOTE_USER, well_formed(ALICE, REMOTE_USER, f"signed {tag}"))
        verdict = dkim_verify_at_remote(lab, at_remote(lab, f"signed {tag}"))
        assert verdict.startswith(f"verified {DOMAIN} ") and verdict.split()[-1] in selector, verdict
        # Inbound for alice: still encrypted, to the key she had.
        incoming = well_formed(REMOTE_USER, ALICE, f"after {tag}", body=f"secret-{tag}\r\n")
        lab.mx.python(f"""
import smtplib
s = smtplib.SMTP('127.0.0.1', 25, timeout=15)
s.sendmail({REMOTE_USER!r}, [{ALICE!r}], {incoming!r})
s.quit()""", check=True)

        def new_mail() -> bytes:
            return next((p.read_bytes() for p in lab.maildir_files(box_b, MAILDIR)
                         if p.name.split(":")[0] not in names), b"")

        msg = wait_for("the new message on box B", new_mail, timeout=60)
        assert isinstance(msg, bytes) and f"secret-{tag}".encode() not in msg
        assert f"secret-{tag}".encode() in device.decrypt(
            email.message_from_bytes(msg).get_payload()[1].get_payload(decode=True))
        code, out = status(lab, box_b)
        assert code == 0 and "FAIL" not in out, out  # records, TLSA, DKIM, the sheet kept
        assert "ok   backup recovery sheet" in out, out
        # Box B backs up on to the same server with the sheet's key.
        r = agent(lab, box_b, "backup", "now")
        assert r.returncode == 0, r.stdout + r.stderr
        # A sheet that is not one says so and changes nothing.
        box_b.write("/run/not-a-sheet.txt", "hello\n")
        r = agent(lab, box_b, "restore", "--sheet", "/run/not-a-sheet.txt")
        assert r.returncode == 2 and "no repository and no password" in r.stderr, r.stderr
    finally:
        device.close()
        if box_b is not None:
            box_b.run(["postfix", "stop"], check=False, timeout=30)
            lab.lab.remove("appb")
            swap_box(lab, "appb", "app")
        lab.write_settings(good)
        lab.appliance("key", "remove", ALICE)
        assert lab.appliance("apply").returncode == 0
        vault.run(["rm", "-rf", f"{VAULT_HOME}/mail"], check=False)
        lab.app.run(["rm", "-rf", "/var/tmp/alice.asc", "/var/lib/appliance/backup"], check=False)
        wait_for("box A answers on 993 again", lambda: lab.tcp_open(lab.lan2, APP_IP, 993), timeout=60)


def status(lab: MailLab, host: Host | None = None) -> tuple[int, str]:
    r = agent(lab, host or lab.app, "status")
    assert "Traceback" not in r.stderr, r.stderr
    return r.returncode, r.stdout


# -- a bucket at a storage provider (s3:) ---------------------------------------------------

@pytest.fixture(scope="module")
def s3_bucket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An S3 endpoint on 127.0.0.1: moto's server, the stand-in for a provider's bucket (the
    internet; Debian 12 packages no S3 server). Killed by its PID afterwards."""
    import socket
    import subprocess
    import time

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1",
                                 "-p", str(port)], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail(f"moto_server did not listen within 30 s: {log.read_text()[-500:]}")
        yield f"s3:http://127.0.0.1:{port}/mail-backup"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def s3_box(path: Path) -> system.Root:
    box = path / "box"
    mail = box / "var/vmail/example.org/alice/Maildir/cur"
    mail.mkdir(parents=True)
    (mail / "1.msg:2,S").write_bytes(b"Subject: to the bucket\r\n\r\nhello\r\n")
    (box / "etc/appliance").mkdir(parents=True)
    (box / "etc/appliance/backup.password").write_text("a bucket's password\n")
    return system.Root(box)


def test_backups_go_to_an_s3_bucket_with_the_keys_of_the_credentials_file(
        tmp_path: Path, s3_bucket: str) -> None:
    from appliance.features.backup import recovery

    root = s3_box(tmp_path)
    password = str(root.host("/etc/appliance/backup.password"))
    s = settings(enabled=True, repository=s3_bucket, password_file=password)
    # No credentials file yet: the run fails saying which file, and makes nothing.
    last = restic.backup(root, s)
    assert not last.ok and "/etc/appliance/backup.credentials is missing" in last.error, last
    creds = root.host("/etc/appliance/backup.credentials")
    creds.write_text("# the provider's access keys\nAWS_ACCESS_KEY_ID=box-key\n"
                     "AWS_SECRET_ACCESS_KEY='box-secret'\n")
    creds.chmod(0o600)
    last = restic.backup(root, s)
    assert last.ok, last
    assert [snap["hostname"] for snap in restic.snapshots(s, root)] == ["mail.example.org"]

    # The sheet carries the keys; a new card restores from the sheet alone. (Made on the box,
    # where the password file's path is the box's own: restic above was given this machine's.)
    text = recovery.sheet(root, settings(enabled=True, repository=s3_bucket))
    assert "AWS_SECRET_ACCESS_KEY=box-secret" in text
    sheet = recovery.read(text, "the sheet")
    new = system.Root(tmp_path / "new-card")
    (tmp_path / "new-card" / "run").mkdir(parents=True)
    recovery.restore_in_place(sheet, root=new)
    # (The snapshot holds the test box's paths, which are this machine's, under new-card/.)
    back = new.host(str(root.host("/var/vmail/example.org/alice/Maildir/cur/1.msg:2,S")))
    assert back.read_bytes() == b"Subject: to the bucket\r\n\r\nhello\r\n"
    assert new.host(str(creds)).read_text() == creds.read_text()

    # A sheet whose keys were left off is refused before anything is touched.
    cut = text.split("credentials =")[0]
    with pytest.raises(Exception, match="no credentials"):
        recovery.read(cut, "the sheet")
    # A credentials file that sets anything but access keys is refused.
    creds.write_text("RESTIC_PASSWORD=not-this-way\n")
    last = restic.backup(root, s)
    assert not last.ok and "not a storage provider's access key" in last.error, last
