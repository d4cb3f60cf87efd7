"""Backups: the settings, the planned timer, the password that is the user's to keep, and what
`appliance status` says of the last run (the real restic runs in tests/lab/test_backup.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from appliance import registry
from appliance.core import checks, system
from appliance.core.errors import SettingsError
from appliance.features.backup import recovery, restic, sftp
from appliance.features.backup.checks import check_backup, check_repository, check_sheet

from .conftest import ALICE_HASH

GOOD = {"domain": "example.org", "users": [{"address": "alice@example.org", "password_hash": ALICE_HASH}]}



def settings(**backup: Any) -> Any:
    return registry.parse_settings({**GOOD, "backup": backup})


def test_backups_need_a_place_and_something_to_keep() -> None:
    with pytest.raises(SettingsError) as e:
        settings(enabled=True)
    assert "backup.repository" in str(e.value) and "need a place to go" in str(e.value)
    with pytest.raises(SettingsError) as e:
        settings(enabled=True, repository="usb stick", keep_daily=0, keep_weekly=0, keep_monthly=0)
    text = str(e.value)
    assert 'backup.repository: "usb stick" is not a restic repository' in text
    assert "keeps no snapshot at all" in text
    assert settings(enabled=True, repository="sftp:me@vps.example.net:/srv/mail").backup.keep_daily == 7


def test_the_timer_is_planned_only_when_backups_are_on() -> None:
    from appliance.core import facts

    def planned(s: Any) -> set[str]:
        p = registry.build_plan(s, facts.Facts(hostname="mail.example.org"), _env())
        return {f.path for f in p.files if "backup" in f.path}

    assert planned(settings()) == set()
    assert planned(settings(enabled=True, repository="/media/backup")) == {
        "/etc/systemd/system/appliance-backup.service", "/etc/systemd/system/appliance-backup.timer",
        "/etc/systemd/system/appliance-backup-drill.service",
        "/etc/systemd/system/appliance-backup-drill.timer"}


def _env() -> Any:
    from appliance.core import plan

    return plan.environment()


def test_the_password_is_one_line_made_once_and_private(tmp_path: Path) -> None:
    root = system.Root(tmp_path)
    assert restic.ensure_password(root, "/etc/appliance/backup.password")
    got = root.read("/etc/appliance/backup.password")
    assert got.mode == 0o600 and got.content is not None
    lines = got.content.decode().splitlines()
    assert len(lines) == 1 and len(lines[0]) >= 40
    assert not restic.ensure_password(root, "/etc/appliance/backup.password")  # kept, not remade
    assert root.read("/etc/appliance/backup.password").content == got.content



def test_status_fails_a_backup_older_than_two_days_or_failed(tmp_path: Path) -> None:
    root = system.Root(tmp_path)
    s = settings(enabled=True, repository="/media/backup")
    now = 2_000_000.0

    def result(**last: Any) -> tuple[str, str]:
        if last:
            os.makedirs(tmp_path / "var/lib/appliance/backup", exist_ok=True)
            (tmp_path / "var/lib/appliance/backup/last.json").write_text(json.dumps(
                {"finished": now - last.pop("age"), "ok": True, "snapshot": "ab12cd34", **last}))
        [r] = check_backup(checks.Context(s, root, now=now))
        return r.status, r.detail

    assert result()[0] == checks.WARN  # none yet
    assert result(age=3600)[0] == checks.OK
    status, detail = result(age=49 * 3600)
    assert status == checks.FAIL and "49 h old" in detail
    status, detail = result(age=60, ok=False, error="the backup failed: repository unreachable")
    assert status == checks.FAIL and "unreachable" in detail
    assert check_backup(checks.Context(settings(), root, now=now)) == []  # off: nothing to say


def test_the_recovery_sheet_holds_what_a_restore_needs_and_status_asks_until_it_is_kept(
        tmp_path: Path) -> None:
    import tomllib

    root = system.Root(tmp_path)
    s = settings(enabled=True, repository="/media/backup/mail")
    restic.ensure_password(root, s.backup.password_file)
    word = (root.read(s.backup.password_file).content or b"").decode().strip()
    text = recovery.sheet(root, s, made=1_796_601_600.0)
    assert "restic restore latest" in text and "2026-12-" in text
    part = tomllib.loads(text[text.index("[recovery]"):])["recovery"]
    assert part == {"host": "mail.example.org", "domain": "example.org",
                    "repository": "/media/backup/mail", "password": word}

    def sheet_status() -> str:
        [r] = check_sheet(checks.Context(s, root))
        return r.status

    assert sheet_status() == checks.WARN
    recovery.keep(root, s)
    assert sheet_status() == checks.OK
    root.write_atomic(s.backup.password_file, system.FileState(b"another password\n", 0o600))
    assert sheet_status() == checks.WARN  # a new password needs a new sheet


def test_status_fails_a_repository_the_last_check_found_damaged(tmp_path: Path) -> None:
    root = system.Root(tmp_path)
    s = settings(enabled=True, repository="/media/backup")
    assert check_repository(checks.Context(s, root)) == []  # not checked yet
    os.makedirs(tmp_path / "var/lib/appliance/backup")
    (tmp_path / "var/lib/appliance/backup/checked.json").write_text(json.dumps(
        {"finished": 1.0, "ok": False, "error": "checking the repository failed: pack 1a2b is damaged"}))
    [r] = check_repository(checks.Context(s, root, now=86401.0))
    assert r.status == checks.FAIL and "1a2b is damaged" in r.detail and "--read 100%" in r.fix
    assert restic.check_due(root, 86401.0)  # a failed check is run again at the next night


def test_the_sheet_reads_back_and_anything_else_is_refused(tmp_path: Path) -> None:
    from appliance.core.errors import UsageError

    root = system.Root(tmp_path)
    s = settings(enabled=True, repository="/media/backup")
    restic.ensure_password(root, s.backup.password_file)
    word = (root.read(s.backup.password_file).content or b"").decode().strip()
    assert recovery.read(recovery.sheet(root, s), "sheet.txt") == recovery.Sheet("/media/backup", word)
    for text, words in (("hello\n", "no repository and no password"),
                        ('[recovery]\nrepository = "/media/backup"\n', "no password"),
                        ("[recovery]\nrepository = \n", "does not read as TOML")):
        with pytest.raises(UsageError, match=words):
            recovery.read(text, "sheet.txt")


def test_under_systemd_a_restore_stops_what_keeps_data_without_disabling_it(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from appliance.core import pipeline, services

    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(services.system, "run", lambda argv, **kw: calls.append(tuple(argv))
                        or system.Result(tuple(argv), 0, "", ""))
    keeping = [svc for svc in pipeline.all_services(system.Root(tmp_path), registry.FEATURES).values()
               if svc.keeps_data]
    assert sorted(svc.name for svc in keeping) == ["appliance-dav", "dovecot", "postfix", "rspamd"]
    for svc in keeping:
        services.Systemd().pause(svc)
    assert calls == [("systemctl", "stop", svc.unit) for svc in keeping]


def test_sftp_targets_are_read_in_both_of_restics_spellings() -> None:
    T = sftp.Target
    assert sftp.target("sftp:me@vps.example.net:/srv/mail") == T("me", "vps.example.net", 22, "/srv/mail")
    assert sftp.target("sftp://me@[2001:db8::5]:2222//srv/mail") == T("me", "2001:db8::5", 2222, "/srv/mail")
    assert sftp.target("sftp:vps.example.net:backup") == T("root", "vps.example.net", 22, "backup")
    assert sftp.target("/media/backup") is None and sftp.target("rest:https://x/") is None
    with pytest.raises(SettingsError, match="not an SFTP location restic reads"):
        settings(enabled=True, repository="sftp:me@vps.example.net")


def test_restic_reaches_an_sftp_target_only_with_the_boxs_key_and_known_hosts(tmp_path: Path) -> None:
    root = system.Root(tmp_path)
    assert sftp.restic_options(root, "/media/backup") == []
    [o, command] = sftp.restic_options(root, "sftp://backup@198.51.100.7:2222//srv/mail")
    assert o == "-o" and command.startswith("sftp.command=ssh -F /dev/null ")
    argv = command.split("=", 1)[1].split(" ")
    assert argv[argv.index("-i") + 1] == f"{tmp_path}{sftp.KEY}"
    assert f"UserKnownHostsFile={tmp_path}{sftp.KNOWN_HOSTS}" in argv
    assert "StrictHostKeyChecking=accept-new" in argv and "BatchMode=yes" in argv
    assert argv[-3:] == ["backup@198.51.100.7", "-s", "sftp"] and argv[argv.index("-p") + 1] == "2222"


def test_the_backup_key_is_made_once_private_and_what_ssh_keygen_reads(tmp_path: Path) -> None:
    import subprocess

    root = system.Root(tmp_path)
    assert sftp.ensure_key(root, "appliance-backup@mail.example.org")
    key = root.read(sftp.KEY)
    assert key.mode == 0o600 and key.content and b"BEGIN OPENSSH PRIVATE KEY" in key.content
    assert (tmp_path / "var/lib/appliance/backup").stat().st_mode & 0o777 == 0o700
    line = sftp.public_line(root)
    assert line.startswith("ssh-ed25519 ") and line.endswith(" appliance-backup@mail.example.org")
    derived = subprocess.run(["ssh-keygen", "-y", "-f", str(root.host(sftp.KEY))], capture_output=True,
                             text=True, check=True).stdout.split()
    assert derived[:2] == line.split()[:2]
    assert not sftp.ensure_key(root, "other")  # kept, not remade
    assert root.read(sftp.KEY).content == key.content


def test_an_sftp_sheet_carries_the_key_and_reads_back_and_a_new_key_needs_a_new_sheet(
        tmp_path: Path) -> None:
    from appliance.core.errors import UsageError

    root = system.Root(tmp_path)
    s = settings(enabled=True, repository="sftp:backup@198.51.100.7:/srv/mail")
    restic.ensure_password(root, s.backup.password_file)
    sftp.ensure_key(root, "appliance-backup@mail.example.org")
    root.write_atomic(sftp.KNOWN_HOSTS, system.FileState(b"198.51.100.7 ssh-ed25519 AAAAC3Nz\n", 0o600))
    text = recovery.sheet(root, s)
    assert 'sftp.command="ssh -i key -p 22' in text
    back = recovery.read(text, "sheet.txt")
    assert back.ssh_key + "\n" == sftp.private_key(root)
    assert back.known_hosts == "198.51.100.7 ssh-ed25519 AAAAC3Nz"
    recovery.keep(root, s)
    assert recovery.kept(root, s)
    root.remove(sftp.KEY)
    sftp.ensure_key(root, "appliance-backup@mail.example.org")
    assert not recovery.kept(root, s)  # the old sheet's key no longer opens the target
    without = text[:text.index('ssh_key = """')]
    with pytest.raises(UsageError, match="has no ssh_key"):
        recovery.read(without, "sheet.txt")


def test_ssh_failures_are_told_as_what_to_do() -> None:
    t = sftp.Target("backup", "vps.example.net", 22, "/srv/mail")
    denied = "subprocess ssh: backup@vps.example.net: Permission denied (publickey).\nFatal: unable to open"
    assert "add the line `appliance backup ssh-key` prints to ~backup/.ssh/authorized_keys" in (
        sftp.explain(denied, t) or "")
    assert "another SSH host key" in (sftp.explain("Host key verification failed.", t) or "")
    assert sftp.explain("Fatal: wrong password or no key found", t) is None


def test_a_refused_key_stops_before_init_and_says_what_to_do(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """restic is called with the box's ssh command; when SSH itself fails, `init` is never tried
    (it would fail alike, or make a second repository) and the error names the fix."""
    root = system.Root(tmp_path)
    s = settings(enabled=True, repository="sftp:backup@198.51.100.7:/srv/mail")
    calls: list[tuple[str, ...]] = []

    def run(argv: list[str], **kw: Any) -> system.Result:
        calls.append(tuple(argv))
        assert kw["env"]["RESTIC_REPOSITORY"] == "sftp:backup@198.51.100.7:/srv/mail"
        return system.Result(tuple(argv), 1, "", "subprocess ssh: backup@198.51.100.7: Permission "
                             "denied (publickey).\nFatal: unable to open repository")

    monkeypatch.setattr(system, "run", run)
    with pytest.raises(restic.BackupError, match="198.51.100.7 refused the box's SSH key"):
        restic.init_if_needed(s, root)
    [call] = calls
    assert call[:2] == ("restic", "-o") and call[2].startswith("sftp.command=ssh -F /dev/null -i ")
    assert call[3:] == ("cat", "config")
    assert root.read(sftp.KEY).mode == 0o600  # made on first use
    last = restic.backup(root, s, now=1_000_000.0)
    assert not last.ok and "authorized_keys" in last.error  # what status shows
    assert all(c[3] != "init" for c in calls)


def test_a_changed_host_key_is_told_with_the_fingerprint_the_server_showed() -> None:
    t = sftp.Target("backup", "vps.example.net", 22, "/srv/mail")
    said = ("@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n"
            "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n"
            "The fingerprint for the ED25519 key sent by the remote host is\n"
            "SHA256:n4vD1ZKb0tq3d1yVZ7m+Qc2oYk5XoZlq2JcYbXbQ0xk.\n"
            "Host key verification failed.\nFatal: unable to open repository")
    text = sftp.explain(said, t) or ""
    assert "another SSH host key" in text and "nothing was sent" in text
    assert "SHA256:n4vD1ZKb0tq3d1yVZ7m+Qc2oYk5XoZlq2JcYbXbQ0xk" in text and sftp.KNOWN_HOSTS in text


def test_a_host_key_in_the_settings_is_the_only_one_accepted(tmp_path: Path) -> None:
    root = system.Root(tmp_path)
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl root@vps"
    s = settings(enabled=True, repository="sftp://backup@vps.example.net:2222//srv/mail", ssh_host_key=key)
    assert sftp.pin(root, s.backup.repository, s.backup.ssh_host_key)
    got = root.read(sftp.KNOWN_HOSTS)
    assert got.mode == 0o600 and got.content == b"[vps.example.net]:2222 " + " ".join(
        key.split()[:2]).encode() + b"\n"  # the port as ssh writes it, the comment dropped
    assert not sftp.pin(root, s.backup.repository, s.backup.ssh_host_key)  # already so
    [_, command] = sftp.restic_options(root, s.backup.repository, pinned=True)
    assert "StrictHostKeyChecking=yes" in command.split()
    assert not sftp.pin(root, "sftp:backup@vps.example.net:/srv/mail", None)  # first use decides
    with pytest.raises(SettingsError, match="is not an SSH public key"):
        settings(enabled=True, repository="sftp:b@vps.example.net:/srv", ssh_host_key="SHA256:abc")
    with pytest.raises(SettingsError, match="not reached over SFTP"):
        settings(enabled=True, repository="/media/backup", ssh_host_key=key)


def test_when_restic_says_only_eof_ssh_is_asked_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = system.Root(tmp_path)
    s = settings(enabled=True, repository="sftp:backup@198.51.100.7:/srv/mail")
    calls: list[tuple[str, ...]] = []

    def run(argv: list[str], **kw: Any) -> system.Result:
        calls.append(tuple(argv))
        if argv[0] == "restic":
            return system.Result(tuple(argv), 1, "", "Fatal: unable to open repository at sftp:backup@"
                                 "198.51.100.7:/srv/mail: unable to start the sftp session, error: EOF")
        assert kw["input"] == "" and argv[-3:] == ["backup@198.51.100.7", "-s", "sftp"]
        return system.Result(tuple(argv), 255, "", "Host key verification failed.\n")

    monkeypatch.setattr(system, "run", run)
    with pytest.raises(restic.BackupError, match="another SSH host key"):
        restic.init_if_needed(s, root)
    assert [c[0] for c in calls] == ["restic", "ssh"]  # no `restic init` after it


def test_an_append_only_repository_is_never_asked_to_delete(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With append_only the box backs up and stops there (the server would refuse, after
    restic's retries); without it, a server that refuses deletion gets the setting named."""
    password = tmp_path / "pw"
    password.write_text("a backup password of some length\n")
    root = system.Root(tmp_path / "box")
    asked: list[str] = []
    real = restic.restic

    def recording(s: Any, *argv: str, **kw: Any) -> system.Result:
        asked.append(argv[0])
        if argv[0] == "forget":  # what rclone serve restic --append-only answers
            return system.Result(("restic", *argv), 1, "", "server response: 403 Forbidden (403)")
        return real(s, *argv, **kw)

    monkeypatch.setattr(restic, "restic", recording)
    s = settings(enabled=True, repository=str(tmp_path / "repo"), password_file=str(password),
                 append_only=True)
    assert restic.backup(root, s).ok and "forget" not in asked and "backup" in asked
    s = settings(enabled=True, repository=str(tmp_path / "repo"), password_file=str(password))
    last = restic.backup(root, s)
    assert not last.ok and "append_only = true" in (last.error or "") and asked[-1] == "forget"
