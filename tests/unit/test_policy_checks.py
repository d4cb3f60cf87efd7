"""The checks the policy service runs for other features (appliance/core/policy.py): named in
limits.conf by the feature that provides them, loaded by name, and never skipped: a check that
is missing, does not import, raises or answers nothing makes the answer 451 4.3.0, not DUNNO."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest

from appliance import registry
from appliance.core import daemon, plan, policy, system
from appliance.core.errors import ValidationError
from appliance.core.facts import Facts
from appliance.features.limits.limits_service import Policyd
from appliance.features.limits.policyd import Config, Limiter, State, parse_config, reply_for

C = Config(messages_per_hour=3, messages_per_day=5, recipients_per_message=2, global_per_hour=4,
           postmaster="alice@example.org")
RCPT = {"protocol_state": "RCPT", "sasl_username": "bob@example.org", "recipient": "x@example.net"}
END = {"protocol_state": "END-OF-MESSAGE", "sasl_username": "bob@example.org",
       "recipient_count": "1"}
GOOD_CHECK = """
def at_rcpt(attrs):
    return "DUNNO"
def at_end(attrs):
    return "DUNNO"
"""


@pytest.fixture()
def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Writes a module under a fresh name on sys.path; returns its name."""
    monkeypatch.syspath_prepend(str(tmp_path))
    made: list[str] = []

    def make(source: str) -> str:
        name = f"check_{uuid.uuid4().hex}"
        (tmp_path / f"{name}.py").write_text(source)
        made.append(name)
        return name

    yield make
    for name in made:
        sys.modules.pop(name, None)


def test_names_are_a_list_of_module_names() -> None:
    assert policy.names("a.b, c_d.e  a.b") == ("a.b", "c_d.e")
    assert policy.names("") == ()
    with pytest.raises(ValueError, match="'a-b' is not a module name"):
        policy.names("a-b")


def test_load_finds_a_check_and_refuses_what_is_none(module) -> None:  # type: ignore[no-untyped-def]
    good = module(GOOD_CHECK)
    assert policy.load(good).at_rcpt({}) == "DUNNO"
    with pytest.raises(policy.CheckError, match="cannot be imported"):
        policy.load("appliance.features.no_such_feature.policy")
    with pytest.raises(policy.CheckError, match="cannot be imported .*ZeroDivisionError"):
        policy.load(module("1 / 0\n"))
    with pytest.raises(policy.CheckError, match="has no at_end"):
        policy.load(module("def at_rcpt(attrs):\n    return 'DUNNO'\n"))
    with pytest.raises(policy.CheckError, match="not a module name"):
        policy.load("../etc/passwd")


def test_the_first_answer_other_than_dunno_is_the_answer(module) -> None:  # type: ignore[no-untyped-def]
    holds = module("def at_rcpt(a):\n    return 'DUNNO'\ndef at_end(a):\n    return 'HOLD near miss'\n")
    rejects = module("def at_rcpt(a):\n    return '554 5.7.1 no'\ndef at_end(a):\n    return '554 no'\n")
    checks = policy.Checks([holds, rejects])
    assert checks.at_rcpt(RCPT) == "554 5.7.1 no"
    assert checks.at_end(END) == "HOLD near miss"
    assert policy.Checks().at_rcpt(RCPT) == "DUNNO" and policy.Checks().at_end(END) == "DUNNO"


def test_a_missing_check_defers_rather_than_passing() -> None:
    said: list[str] = []
    checks = policy.Checks(["appliance.features.privacy.no_such_module"], said.append)
    assert checks.broken and "cannot be found" in checks.broken[0]
    assert checks.at_rcpt(RCPT).startswith("451 4.3.0 ")
    assert checks.at_end(END).startswith("451 4.3.0 ")
    assert any(line.startswith("Error: ") for line in said)


def test_a_check_is_imported_at_the_first_question_and_one_that_breaks_defers(module) -> None:  # type: ignore[no-untyped-def]
    broken = module("raise RuntimeError('half-installed')\n")
    said: list[str] = []
    checks = policy.Checks([broken], said.append)
    assert not checks.broken and broken not in sys.modules  # found, not run
    assert checks.at_rcpt(RCPT).startswith("451 4.3.0 ")
    assert "RuntimeError: half-installed" in "\n".join(said)
    assert checks.at_end(END).startswith("451 4.3.0 ")  # and stays so until a reload


def test_a_check_that_raises_or_answers_nothing_defers(module) -> None:  # type: ignore[no-untyped-def]
    raises = module("def at_rcpt(a):\n    raise OSError('gone')\ndef at_end(a):\n    return ''\n")
    said: list[str] = []
    checks = policy.Checks([raises], said.append)
    assert checks.at_rcpt(RCPT) == ("451 4.3.0 the submission checks cannot run right now "
                                    "(OSError); your mail was not sent, try again later")
    assert checks.at_end(END).startswith("451 4.3.0 ")
    assert len([line for line in said if line.startswith("Error: ")]) == 2


def test_the_service_defers_at_rcpt_and_at_the_end_when_a_check_is_missing() -> None:
    checks = policy.Checks(["appliance.features.privacy.no_such_module"])
    assert reply_for(Limiter(C), RCPT, 0.0, checks)[0].startswith("451 4.3.0 ")
    assert reply_for(Limiter(C), END, 0.0, checks)[0].startswith("451 4.3.0 ")
    # Not authenticated (port 25): not the service's to judge, as before.
    assert reply_for(Limiter(C), {"recipient_count": "1"}, 0.0, checks) == ("DUNNO", None)
    # A limit reached is still the limit's answer.
    lim = Limiter(C)
    assert reply_for(lim, {**END, "recipient_count": "3"}, 0.0, checks)[0].startswith("554 5.7.1")


@pytest.mark.parametrize("typo_guard", [True, False])
def test_limits_conf_names_the_typo_guard_whether_it_is_on_or_off(good: dict, typo_guard: bool) -> None:
    """Off, the guard finds no typoguard.conf and passes everything, as it did when the
    service imported it directly: it is named either way."""
    good["privacy"] = {"typo_guard": typo_guard}
    p = registry.build_plan(registry.parse_settings(good), Facts("mail.example.org"), plan.environment())
    c = parse_config({f.path: f.content.decode() for f in p.files}["/etc/appliance/limits.conf"])
    assert c.checks == ("appliance.features.privacy.policy",)
    checks = policy.Checks(c.checks)
    assert not checks.broken
    assert checks.at_rcpt({**RCPT, "sasl_username": ""}) == "DUNNO"  # the guard itself answered
    assert [name for name, _ in checks.load()] == ["appliance.features.privacy.policy"]


def write_conf(path: Path, checks: str, per_hour: int = 3) -> None:
    path.write_text(f"messages_per_hour = {per_hour}\nmessages_per_day = 5\n"
                    "recipients_per_message = 2\nglobal_per_hour = 4\n"
                    f"postmaster = alice@example.org\nchecks = {checks}\n")


def test_reload_rereads_the_checks_keeps_the_counters_and_refuses_a_missing_check(
        tmp_path: Path, module) -> None:  # type: ignore[no-untyped-def]
    conf = tmp_path / "limits.conf"
    write_conf(conf, "")
    state = State(str(conf))
    assert state.checks.names == ()
    assert state.reply(END, 100.0) == ("DUNNO", None)  # one message counted

    rejects = module("def at_rcpt(a):\n    return '554 5.7.1 no'\ndef at_end(a):\n    return 'DUNNO'\n")
    write_conf(conf, rejects, per_hour=7)
    assert "counters are kept" in state.reload()
    assert state.checks.names == (rejects,) and state.limiter.c.messages_per_hour == 7
    assert len(state.limiter.sent["bob@example.org"]) == 1
    assert state.reply(RCPT, 101.0)[0] == "554 5.7.1 no"

    write_conf(conf, "appliance.features.privacy.no_such_module", per_hour=9)
    with pytest.raises(daemon.ReloadError, match="no_such_module cannot be found"):
        state.reload()
    assert state.checks.names == (rejects,) and state.limiter.c.messages_per_hour == 7


def test_a_service_started_with_a_missing_check_runs_and_defers(tmp_path: Path) -> None:
    conf = tmp_path / "limits.conf"
    write_conf(conf, "appliance.features.privacy.no_such_module")
    state = State(str(conf))  # no exception: the service starts, and says why it defers
    assert state.reply(RCPT, 0.0)[0].startswith("451 4.3.0 ")


def stage_with(tmp_path: Path, limits_checks: str, typoguard: str | None = None) -> Path:
    stage = tmp_path / "stage"
    (stage / "etc/appliance").mkdir(parents=True)
    write_conf(stage / "etc/appliance/limits.conf", limits_checks)
    if typoguard is not None:
        (stage / "etc/appliance/typoguard.conf").write_text(typoguard)
    return stage


def test_the_agent_refuses_a_missing_check_and_a_broken_typoguard_conf(tmp_path: Path) -> None:
    svc = Policyd(system.Root(str(tmp_path / "root")))
    with pytest.raises(ValidationError) as e:
        svc.validate(stage_with(tmp_path / "a", "appliance.features.privacy.no_such_module"))
    assert e.value.tool == "policy check" and "no_such_module" in e.value.output
    with pytest.raises(ValidationError) as e:
        svc.validate(stage_with(tmp_path / "b", "appliance.features.privacy.policy", "history = raw\n"))
    assert e.value.tool == "typoguard.conf check" and "history must be hashed or plain" in e.value.output
    svc.validate(stage_with(tmp_path / "c", "appliance.features.privacy.policy",
                            "enabled = yes\nhistory = hashed\ndomain = example.org\n"))
