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
from appliance.features.backup import restic
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
    s = settings(enabled=True, repository="sftp:me@vps.example.net:/srv/mail")
    restic.ensure_password(root, s.backup.password_file)
    word = (root.read(s.backup.password_file).content or b"").decode().strip()
    text = restic.sheet(root, s, made=1_796_601_600.0)
    assert "restic restore latest" in text and "2026-12-" in text
    recovery = tomllib.loads(text[text.index("[recovery]"):])["recovery"]
    assert recovery == {"host": "mail.example.org", "domain": "example.org",
                        "repository": "sftp:me@vps.example.net:/srv/mail", "password": word}

    def sheet_status() -> str:
        [r] = check_sheet(checks.Context(s, root))
        return r.status

    assert sheet_status() == checks.WARN
    restic.keep_sheet(root, s)
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
    assert restic.read_sheet(restic.sheet(root, s), "sheet.txt") == restic.Sheet("/media/backup", word)
    for text, words in (("hello\n", "no repository and no password"),
                        ('[recovery]\nrepository = "/media/backup"\n', "no password"),
                        ("[recovery]\nrepository = \n", "does not read as TOML")):
        with pytest.raises(UsageError, match=words):
            restic.read_sheet(text, "sheet.txt")


def test_under_systemd_a_restore_stops_what_keeps_data_without_disabling_it(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from appliance.core import pipeline, services

    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(services.system, "run", lambda argv, **kw: calls.append(tuple(argv))
                        or system.Result(tuple(argv), 0, "", ""))
    keeping = [svc for svc in pipeline.all_services(system.Root(tmp_path), registry.FEATURES).values()
               if svc.keeps_data]
    assert sorted(svc.name for svc in keeping) == ["dovecot", "postfix", "rspamd"]
    for svc in keeping:
        services.Systemd().pause(svc)
    assert calls == [("systemctl", "stop", svc.unit) for svc in keeping]
