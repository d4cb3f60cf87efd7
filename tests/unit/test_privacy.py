"""What leaves the box: [privacy] settings, the rendered log retention (run through
the real logrotate), the submission header checks (through the real postmap), and the typo
guard's policy glue (RCPT remembers, END-OF-MESSAGE holds, a broken guard defers)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from appliance import registry
from appliance.core import errors, facts, plan
from appliance.core.system import SETTLED_AGE
from appliance.features.privacy import policy as tp
from appliance.features.privacy import privacy
from appliance.features.privacy import typoguard as tg

LAN_FACTS = facts.Facts("mail.example.org", "eth0", ("198.18.0.0/24",), ("198.18.0.10",), "198.18.0.1")


def files(good: dict) -> dict[str, str]:
    p = registry.build_plan(registry.parse_settings(good), LAN_FACTS, plan.environment(None))
    return {f.path: f.content.decode() for f in p.files}


def test_defaults_and_bad_values_name_field_value_and_fix(good: dict) -> None:
    s = registry.parse_settings(good)
    assert s.privacy == privacy.Privacy(True, "hashed", 7)
    good["privacy"] = {"typo_guard": "yes", "typo_history": "clear", "log_retention_days": 0,
                       "retain": 1}
    with pytest.raises(errors.SettingsError) as e:
        registry.parse_settings(good)
    text = str(e.value)
    assert 'privacy.typo_guard: "yes" is not true or false' in text
    assert 'privacy.typo_history: "clear" is not a storage mode; use "hashed" or "plain"' in text
    assert "privacy.log_retention_days: 0 is out of range" in text
    assert "privacy.retain: \"retain\" is not a known [privacy] setting" in text


def test_typoguard_conf_follows_the_settings(good: dict) -> None:
    conf = files(good)[tp.CONF]
    assert tp.parse_conf(conf) == tp.GuardConfig(True, "hashed", "example.org")
    good["privacy"] = {"typo_history": "plain"}
    assert tp.parse_conf(files(good)[tp.CONF]) == tp.GuardConfig(True, "plain", "example.org")
    # Off: no configuration at all, which the policy service reads as "guard off".
    good["privacy"] = {"typo_guard": False, "typo_history": "plain"}
    assert tp.CONF not in files(good)
    assert tp._Cache().get(Path("/nonexistent"))[0].enabled is False


@pytest.mark.skipif(not shutil.which("logrotate"), reason="logrotate not installed (make test installs it)")
def test_rendered_logrotate_removes_logs_older_than_the_retention(good: dict, tmp_path: Path) -> None:
    good["privacy"] = {"log_retention_days": 3}
    conf = files(good)[privacy.LOGROTATE_CONF]
    assert "rotate 3" in conf and "maxage 3" in conf and "daily" in conf
    for log in privacy.RETAINED_LOGS:
        assert log in conf
    logs = tmp_path / "log"
    logs.mkdir(mode=0o755)
    conf = conf.replace("/var/log/", f"{logs}/").replace("create 0640 root adm", "")
    (tmp_path / "appliance").write_text(conf)
    (tmp_path / "appliance").chmod(0o644)
    day = 86400
    (logs / "mail.log").write_text("today: alice@example.org -> bob@remote.test\n")
    (logs / "mail.log.1").write_text("yesterday\n")
    old = logs / "mail.log.2.gz"  # 5 days old: beyond the 3-day retention
    old.write_bytes(b"\x1f\x8b old")
    os.utime(old, (time.time() - 5 * day, time.time() - 5 * day))
    recent = logs / "dovecot.log"
    recent.write_text("imap-login: Login: user=<alice>\n")
    r = subprocess.run(["logrotate", "-f", "-s", str(tmp_path / "state"), str(tmp_path / "appliance")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    left = sorted(p.name for p in logs.iterdir())
    assert not any(n.startswith("mail.log") and (logs / n).stat().st_mtime < time.time() - 3 * day
                   for n in left), left
    assert "mail.log.2.gz" not in left or (logs / "mail.log.2.gz").read_bytes() != b"\x1f\x8b old"
    assert (logs / "mail.log").read_text() == ""  # copytruncate: the daemon's file stays
    assert "today:" in (logs / "mail.log.1").read_text()


@pytest.mark.skipif(not shutil.which("postmap"), reason="postfix not installed")
@pytest.mark.parametrize(("header", "removed"), [
    ("Received: from alices-laptop (unknown [198.18.0.20])\n\tby mail.example.org (Postfix) "
     "with ESMTPSA id 4Ab for <x@remote.test>; Mon, 1 Jan 2026 00:00:00 +0000", True),
    ("X-Originating-IP: [198.18.0.20]", True),
    ("User-Agent: Mozilla/5.0 Thunderbird/115.3", True),
    ("X-Mailer: Apple Mail (2.3774)", True),
    ("Subject: Received: nothing", False),
    ("From: alice@example.org", False),
    ("DKIM-Signature: v=1; a=rsa-sha256; d=example.org", False),
])
def test_submission_header_checks_with_the_real_postmap(good: dict, tmp_path: Path, header: str,
                                                        removed: bool) -> None:
    table = tmp_path / "submission_header_checks"
    table.write_text(files(good)["/etc/postfix/submission_header_checks"])
    (tmp_path / "main.cf").write_text("compatibility_level = 3.6\n")
    # Dated back as the agent's own writes are: Postfix waits until a table is ~2 s old.
    for written in (table, tmp_path / "main.cf"):
        os.utime(written, (time.time() - SETTLED_AGE, time.time() - SETTLED_AGE))
    r = subprocess.run(["postmap", "-c", str(tmp_path), "-q", header, f"regexp:{table}"],
                       capture_output=True, text=True)
    assert r.returncode in (0, 1) and "warning" not in r.stderr, r.stderr
    assert (r.stdout.strip() == "IGNORE") is removed, r.stdout


@pytest.fixture
def guard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The policy glue reading its files under tmp_path (the real ones are /etc, /var/lib)."""
    (tmp_path / "etc/appliance").mkdir(parents=True)
    (tmp_path / "var/lib/appliance/typoguard").mkdir(parents=True)
    (tmp_path / tp.CONF.lstrip("/")).write_text("enabled = yes\nhistory = plain\ndomain = example.org\n")
    h = tg.History()
    h.add("army.mil")
    (tmp_path / tp.HISTORY.lstrip("/")).write_text(tp.history_header(False) + h.dumps())
    cache = tp._Cache()
    monkeypatch.setattr(tp, "_cache", type("C", (), {"get": lambda self: cache.get(tmp_path)})())
    sent: list[tuple[str, str, list[tg.Verdict]]] = []
    # The notice goes through Postfix on port 25, not running in unit tests: recorded instead.
    monkeypatch.setattr(tp, "notify", lambda s, q, v: sent.append((s, q, v)))
    monkeypatch.setattr(tp, "SENT", sent, raising=False)
    return tmp_path


def rcpt(to: str, instance: str = "i1") -> dict[str, str]:
    return {"protocol_state": "RCPT", "sasl_username": "alice@example.org", "recipient": to,
            "instance": instance, "sender": "alice@example.org"}


def end(instance: str = "i1", qid: str = "4AbCdEf123") -> dict[str, str]:
    return {"protocol_state": "END-OF-MESSAGE", "sasl_username": "alice@example.org",
            "instance": instance, "queue_id": qid, "sender": "alice@example.org"}


def test_near_miss_is_held_at_the_end_with_a_notice(guard: Path) -> None:
    assert tp.at_rcpt(rcpt("ops@army.ml")) == "DUNNO"
    assert tp.at_rcpt(rcpt("bob@example.org")) == "DUNNO"  # own domain
    action = tp.at_end(end())
    assert action.startswith("HOLD ") and "army.ml looks like army.mil" in action
    assert "appliance release 4AbCdEf123" in action
    (sender, qid, verdicts), = tp.SENT  # type: ignore[attr-defined]
    assert (sender, qid, verdicts[0].known) == ("alice@example.org", "4AbCdEf123", "army.mil")
    subject, body = tp.notice_text(qid, verdicts)
    assert "army.ml" in subject and "army.mil" in body and "appliance release 4AbCdEf123" in body


def test_known_domain_and_own_domain_typos(guard: Path) -> None:
    assert tp.at_rcpt(rcpt("ops@army.mil", "i2")) == "DUNNO"
    assert tp.at_end(end("i2")) == "DUNNO"
    tp.at_rcpt(rcpt("bob@example.orf", "i3"))  # a slip in the box's own domain
    assert tp.at_end(end("i3")).startswith("HOLD ")


def test_broken_guard_defers(guard: Path) -> None:
    (guard / tp.HISTORY.lstrip("/")).write_text("garbage here\n")
    action = tp.at_rcpt(rcpt("ops@army.mil", "i4"))
    assert action.startswith("451 4.3.0 ") and "typo-domain guard" in action


def test_disabled_guard_and_unauthenticated_clients_pass(guard: Path) -> None:
    assert tp.at_rcpt({**rcpt("ops@army.ml", "i5"), "sasl_username": ""}) == "DUNNO"
    (guard / tp.CONF.lstrip("/")).write_text("enabled = no\nhistory = plain\n")
    os.utime(guard / tp.CONF.lstrip("/"), (time.time() + 5, time.time() + 5))
    assert tp.at_rcpt(rcpt("ops@army.ml", "i6")) == "DUNNO"
    assert tp.at_end(end("i6")) == "DUNNO"
