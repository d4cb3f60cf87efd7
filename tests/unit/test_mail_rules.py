"""Forwarding and the away message: settings, the CLI's edits, and the Sieve script each user
gets (compiled by the real sievec). Delivery, the reply once per sender and never to a list,
and the forwarded copy's envelope sender: tests/lab/test_mail.py."""

from __future__ import annotations

import copy
import datetime as dt
import subprocess
from pathlib import Path

import pytest

from appliance import registry
from appliance.core import mail_rules
from appliance.core.errors import SettingsError

from . import test_users_cli as tuc
from .test_plan import build, files
from .test_users_cli import run

RULES = "/etc/dovecot/sieve/users/alice@example.org.sieve"


path = tuc.path  # a settings file with alice, its comments to keep


def with_rules(good: dict, **rules: object) -> dict:
    data = copy.deepcopy(good)
    data["users"][0].update(rules)
    return data


def compiles(text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "rules.sieve"
    script.write_text(text)
    return subprocess.run(["sievec", str(script), str(tmp_path / "rules.svbin")],
                          capture_output=True, text=True)


def test_a_user_without_rules_gets_no_script(good: dict) -> None:
    assert not [p for p in files(build(good)) if "/sieve/users/" in p]


def test_away_message_and_forwarding_become_one_script_sievec_accepts(good: dict, tmp_path: Path) -> None:
    data = with_rules(good, forward_to=["alice@elsewhere.example"],
                      vacation={"subject": 'Away "now"', "message": "Back on Monday.\nBye \\o/",
                                "until": dt.date(2026, 12, 24), "days": 3})
    text = files(build(data))[RULES]
    assert 'vacation :days 3 :subject "Away \\"now\\""' in text
    assert ':addresses ["alice@example.org", "info@example.org"]' in text  # her aliases too
    assert 'currentdate :value "le" "date" "2026-12-24"' in text
    assert 'redirect :copy "alice@elsewhere.example";' in text
    assert text.index('header :is "X-Spam" "Yes"') < text.index("vacation :days")  # spam: neither
    r = compiles(text, tmp_path)
    assert r.returncode == 0, r.stderr
    # Forward only, no copy kept, no end date: other extensions, still valid.
    text = files(build(with_rules(good, forward_to="a@b.example", forward_keep=False)))[RULES]
    assert 'redirect "a@b.example";' in text and ":copy" not in text and "require" not in text
    assert compiles(text, tmp_path).returncode == 0
    text = files(build(with_rules(good, vacation={"subject": "Away", "message": "x"})))[RULES]
    assert "currentdate" not in text and compiles(text, tmp_path).returncode == 0


def test_dovecot_runs_each_users_rules_and_forwards_as_the_user(good: dict) -> None:
    conf = files(build(good))["/etc/dovecot/dovecot.conf"]
    assert "sieve_before2 = file:/etc/dovecot/sieve/users/%u.sieve;bindir=/var/lib/dovecot/sieve-bin" in conf
    assert "sieve_redirect_envelope_from = orig_recipient" in conf


@pytest.mark.parametrize(("rules", "message"), [
    ({"forward_to": ["alice@example.org"]}, 'forward_to[0]: "alice@example.org" is this user\'s own address'),
    ({"forward_to": ["info@example.org"]}, 'forward_to[0]: "info@example.org" is this user\'s own address'),
    ({"forward_to": ["not an address"]}, 'forward_to[0]: "not an address" is not an e-mail address'),
    ({"forward_to": [f"a{i}@b.example" for i in range(5)]}, "forward_to: \"5 addresses\" is more than 4"),
    ({"forward_keep": "yes"}, 'forward_keep: "yes" is not true or false'),
    ({"vacation": {"subject": "", "message": "x"}}, 'vacation.subject: "" is not a subject line'),
    ({"vacation": {"subject": "a\nb", "message": "x"}}, "vacation.subject"),
    ({"vacation": {"subject": "Away", "message": ""}}, "vacation.message"),
    ({"vacation": {"subject": "Away", "message": "x", "until": "soon"}},
     'vacation.until: "soon" is not a date'),
    ({"vacation": {"subject": "Away", "message": "x", "days": 0}},
     "vacation.days: 0 is not a number of days"),
    ({"vacation": {"subject": "Away", "message": "x", "reply_to": "y"}},
     'vacation.reply_to: "reply_to" is not a known away message setting'),
])
def test_bad_rules_name_the_field(good: dict, rules: dict, message: str) -> None:
    with pytest.raises(SettingsError) as e:
        registry.parse_settings(with_rules(good, **rules))
    assert any(message in p for p in e.value.problems), e.value.problems


def test_the_cli_turns_them_on_and_off_and_keeps_comments(path: Path) -> None:
    code, out, err = run(["--settings", str(path), "user", "forward", "alice@example.org",
                          "alice@elsewhere.example", "--no-keep", "--no-apply"])
    assert code == 0 and "forwarded to alice@elsewhere.example (no copy kept here)" in out, err
    code, out, err = run(["--settings", str(path), "user", "vacation", "alice@example.org",
                          "--subject", "Away", "--until", "2026-12-24", "--no-apply"],
                         stdin="Line one.\nLine two.\n")
    assert code == 0 and "away message on until 2026-12-24" in out, err
    text = path.read_text()
    assert "# My mailbox settings -- keep this comment" in text and "# me" in text
    u = registry.load_settings(path).users[0]
    assert u.forward_to == ("alice@elsewhere.example",) and u.forward_keep is False
    assert u.vacation == mail_rules.Vacation("Away", "Line one.\nLine two.", "2026-12-24", 7)
    assert run(["--settings", str(path), "user", "vacation", "alice@example.org", "--subject", "x",
                "--until", "someday", "--no-apply"], stdin="x")[0] == 2
    assert registry.load_settings(path).users[0].vacation == u.vacation  # unchanged
    for verb in ("forward", "vacation"):
        off = ["--settings", str(path), "user", verb, "alice@example.org", "--off", "--no-apply"]
        assert run(off)[0] == 0
    u = registry.load_settings(path).users[0]
    assert u.forward_to == () and u.vacation is None and u.forward_keep is True
    assert "forward" not in path.read_text() and "vacation" not in path.read_text()


def test_sieve_strings_escape_quotes_and_backslashes() -> None:
    assert mail_rules.sieve_string('a "b" \\ c') == '"a \\"b\\" \\\\ c"'
    assert mail_rules.sieve_string("one\ntwo") == '"one\r\ntwo"'
