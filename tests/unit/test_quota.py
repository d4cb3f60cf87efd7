"""Mailbox quotas: each user's limit (her own, the box's, or a share of the card), the files
they render (checked by the real doveconf and sh), and what `status` makes of Dovecot's report.
The warning mails, the 452 to senders and other users' mail: tests/lab/test_addresses.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from appliance import registry
from appliance.core import system
from appliance.core.errors import SettingsError
from appliance.features.mail import quota

from . import test_users_cli as tuc
from .test_plan import build, files
from .test_users_cli import run

GIB = 2**30


def test_each_user_gets_her_own_quota_else_the_boxes_else_a_share_of_the_card(good: dict) -> None:
    s = registry.parse_settings(good)
    # Two users share 80 % of a 32 GiB card: 12.8 GiB each, so neither can fill it.
    assert quota.limits_mb(s, 32 * GIB) == {"alice@example.org": 13107, "bob@example.org": 13107}
    # Not measured yet (a plan made off the box): the smallest card the image supports.
    assert quota.limits_mb(s, None)["bob@example.org"] == int(8e9 * 0.8 / 2 / 2**20)
    good["mail"] = {"quota_mb": 4096}
    good["users"][0]["quota_mb"] = 100
    s = registry.parse_settings(good)
    assert quota.limits_mb(s, 32 * GIB) == {"alice@example.org": 100, "bob@example.org": 4096}
    users = files(build(good))["/etc/dovecot/users"]
    assert ":{SHA512-CRYPT}" in users and "::::::userdb_quota_rule=*:storage=100M\n" in users


@pytest.mark.parametrize("value", [0, 5, "2G", True, 2**21])
def test_a_bad_user_quota_is_named_with_its_fix(good: dict, value: object) -> None:
    good["users"][1]["quota_mb"] = value
    with pytest.raises(SettingsError) as e:
        registry.parse_settings(good)
    assert "users[1].quota_mb:" in str(e.value) and "is not a mailbox size in MiB" in str(e.value)


def test_quota_files_pass_doveconf_and_the_warning_script_parses(good: dict, tmp_path: Path) -> None:
    for f in build(good).files:
        system.Root(tmp_path).write_stage(tmp_path, f.path, f.content)
    r = subprocess.run(["doveconf", "-c", str(tmp_path / "etc/dovecot/dovecot.conf"), "-n"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "quota = count:User quota" in r.stdout and "quota_full_tempfail = yes" in r.stdout
    assert "quota_status_overquota = 452 4.2.2 " in r.stdout
    script = tmp_path / "etc/dovecot/quota-warning.sh"
    assert subprocess.run(["sh", "-n", str(script)], capture_output=True).returncode == 0
    assert script.read_text().startswith("#!/bin/sh\n")
    main = files(build(good))["/etc/postfix/main.cf"]
    assert "check_policy_service unix:private/quota-status" in main


REPORT = """\
Username\tQuota name\tType\tValue\tLimit\t%
alice@example.org\tUser quota\tSTORAGE\t870\t1024\t84
alice@example.org\tUser quota\tMESSAGE\t3\t-\t0
bob@example.org\tUser quota\tSTORAGE\t2048\t1024\t200
carol@example.org\tUser quota\tSTORAGE\t10\t1024\t0
"""


def test_status_reads_dovecots_report_and_warns_at_80_and_fails_when_full() -> None:
    use = quota.parse_quota_get(REPORT)
    assert use == {"alice@example.org": (870, 1024), "bob@example.org": (2048, 1024),
                   "carol@example.org": (10, 1024)}
    results = {u: quota.use_result(u, *x) for u, x in use.items()}
    assert results["alice@example.org"].status == "warn"
    assert results["alice@example.org"].detail == "0.8 MiB of 1.0 MiB (85%)"
    bob = results["bob@example.org"]
    assert bob.status == "fail" and "waits at the senders" in bob.detail
    assert results["carol@example.org"].status == "ok"
    assert quota.use_result("a@b.c", 120 * 1024, 3051 * 1024).detail == "120 MiB of 3.0 GiB (4%)"


path = tuc.path  # a settings file with alice, its comments to keep


def test_user_quota_sets_and_clears_her_own_quota_and_refuses_a_bad_one(path: Path) -> None:
    code, out, err = run(["--settings", str(path), "user", "quota", "alice@example.org", "2048",
                          "--no-apply"])
    assert code == 0 and "alice@example.org: quota 2048 MiB" in out, err
    text = path.read_text()
    assert "quota_mb = 2048" in text and tuc.SETTINGS.splitlines()[0] in text  # comments kept
    code, _, err = run(["--settings", str(path), "user", "quota", "alice@example.org", "5", "--no-apply"])
    assert code == 2 and "users[0].quota_mb: 5 is not a mailbox size in MiB" in err
    assert path.read_text() == text  # nothing changed
    code, out, _ = run(["--settings", str(path), "user", "quota", "alice@example.org", "--default",
                        "--no-apply"])
    assert code == 0 and "quota_mb" not in path.read_text()
