"""Backups with the real restic: what goes in comes back out byte for byte, a wrong password
changes nothing, and on the lab's box `appliance backup now` / `restore` carry every message,
the settings and the keys."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

from appliance import registry
from appliance.core import system
from appliance.features.backup import restic

from .mail_lab import ALICE, ALICE_PW, DOMAIN, REMOTE_USER, MailLab
from .netlab import wait_for

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
    assert last.ok and last.files == 2, last  # the message and the backup's manifest
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

        mail = hashes("/var/vmail")
        assert any(f"backup {tag}" in lab.app.read(f"/var/vmail/{name[2:]}") for name in mail
                   if "/new/" in name or "/cur/" in name)
        assert hashes("/var/restored/var/vmail") == mail  # every message, byte for byte
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
            return lab.app.run(["sh", "-c", f"cd {top} && find . -type f -print0 | sort -z | "
                                "xargs -0 sha256sum"], timeout=120).stdout

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
    finally:
        lab.write_settings(good)
        assert lab.appliance("apply").returncode == 0
        lab.app.run(["rm", "-rf", "/var/backups/appliance", "/var/restored"], check=False)
