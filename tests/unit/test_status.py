"""`appliance status`: the pure parts. Blocklist answers, the daily mail's diff, the exit code,
the parsers of postqueue/apt/fail2ban output, the [status] settings and the timer units.
The lab (tests/lab/test_status.py) runs the whole command against real DNS and Postfix."""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

import dns.name
import dns.resolver
import pytest

from appliance import registry
from appliance.core import facts, plan
from appliance.core.checks import FAIL, OK, WARN, Context, Result
from appliance.core.errors import SettingsError
from appliance.features.certs import checks as certs_checks
from appliance.features.dns import checks as dns_checks
from appliance.features.fail2ban import checks as fail2ban_checks
from appliance.features.status import checks as status_checks
from appliance.features.status import status
from appliance.features.status.checks import interpret_dnsbl
from appliance.features.upnp import checks as upnp_checks

IP = "203.0.113.2"


# --- blocklist answers -------------------------------------------------------------------------
def test_no_answer_is_not_listed() -> None:
    r = interpret_dnsbl("zen.spamhaus.org", IP, [])
    assert (r.status, r.name) == (OK, "blocklist zen.spamhaus.org") and "not listed" in r.detail


@pytest.mark.parametrize("answer,words", [
    ("127.255.255.254", "public or open resolvers"),
    ("127.255.255.255", "rate limited"),
    ("127.255.255.252", "malformed"),
    ("127.0.0.1", "refused"),
])
def test_error_codes_are_unknown_not_listed(answer: str, words: str) -> None:
    r = interpret_dnsbl("zen.spamhaus.org", IP, [answer])
    assert r.status == WARN and r.detail.startswith("unknown") and words in r.detail
    assert "listed" not in r.detail.replace("not a listing", "")
    assert "your own resolver" in r.fix


def test_a_listing_names_the_zone_meaning_and_a_delisting_fix() -> None:
    r = interpret_dnsbl("zen.spamhaus.org", IP, ["127.0.0.4"])
    assert r.status == FAIL and f"{IP} is listed" in r.detail and "XBL" in r.detail
    assert "delist" in r.fix


def test_a_pbl_listing_says_send_through_a_relay() -> None:
    r = interpret_dnsbl("zen.spamhaus.org", IP, ["127.0.0.10"])
    assert r.status == FAIL and "PBL" in r.detail and "relay" in r.fix


def test_an_unknown_zone_listing_is_listed() -> None:
    r = interpret_dnsbl("dnsbl.test", IP, ["127.0.0.2"])
    assert r.status == FAIL and "127.0.0.2 (listed)" in r.detail


def test_a_resolver_that_rewrites_nxdomain_is_unknown() -> None:
    r = interpret_dnsbl("bl.spamcop.net", IP, ["198.51.100.80"])
    assert r.status == WARN and "not a blocklist code" in r.detail


def test_a_failed_query_is_unknown() -> None:
    r = interpret_dnsbl("bl.spamcop.net", IP, [], "no answer within 5 s")
    assert r.status == WARN and "unknown" in r.detail


def test_query_name_reverses_the_octets() -> None:
    assert status_checks.dnsbl_query_name(IP, "dnsbl.test") == "2.113.0.203.dnsbl.test"


# --- the daily mail's diff ---------------------------------------------------------------------
def prev(**kw: str) -> dict[str, dict[str, str]]:
    return {k.replace("_", " "): {"status": v, "detail": "before", "fix": ""} for k, v in kw.items()}


def test_a_new_failure_is_reported_once() -> None:
    now = [Result("dns mx", FAIL, "published x"), Result("disk /", OK, "fine")]
    new, fixed = status.changes(prev(dns_mx=OK, disk_=OK), now)
    assert [r.name for r in new] == ["dns mx"] and fixed == []
    # the next run, with nothing changed but the detail: nothing to mail
    now2 = [Result("dns mx", FAIL, "published y"), Result("disk /", OK, "fine")]
    assert status.changes(status.state_of(now), now2) == ([], [])


def test_a_fix_and_a_vanished_check_are_fixed() -> None:
    previous = prev(dns_mx=FAIL, upnp=WARN, disk=OK)
    new, fixed = status.changes(previous, [Result("dns mx", OK, "matches"), Result("disk", OK, "")])
    assert new == [] and sorted(n for n, _ in fixed) == ["dns mx", "upnp"]


def test_a_change_of_severity_is_new() -> None:
    new, _ = status.changes(prev(certificate=WARN), [Result("certificate", FAIL, "2 days")])
    assert [r.status for r in new] == [FAIL]


def test_the_first_run_reports_every_problem() -> None:
    new, fixed = status.changes({}, [Result("a", WARN, ""), Result("b", OK, ""), Result("c", FAIL, "")])
    assert [r.name for r in new] == ["a", "c"] and fixed == []


def test_the_mail_lists_new_problems_with_fixes_and_fixed_ones(good: dict[str, Any]) -> None:
    s = registry.parse_settings(good)
    new = [Result("dns mx", FAIL, "published 10 other.", "replace it with: ...")]
    m = status.change_mail(s, new, [("reverse dns", {"status": FAIL, "detail": "no PTR"})], new)
    assert m["To"] == "alice@example.org" and "1 new problem(s), 1 fixed" in m["Subject"]
    body = m.get_content()
    assert "NEW   FAIL dns mx: published 10 other." in body and "fix: replace it with" in body
    assert "FIXED reverse dns (was FAIL: no PTR)" in body


# --- exit code, robustness ---------------------------------------------------------------------
@pytest.mark.parametrize("statuses,code", [([OK, OK], 0), ([OK, WARN], 0), ([WARN, FAIL], 1), ([], 0)])
def test_exit_code_fails_only_on_failures(statuses: list[str], code: int) -> None:
    assert status.exit_code([Result(str(i), s, "") for i, s in enumerate(statuses)]) == code


def test_a_crashing_check_is_unknown_and_the_others_still_run(good: dict[str, Any]) -> None:
    def check_boom(c: Context) -> list[Result]:
        raise RuntimeError("kaputt")

    def check_fine(c: Context) -> list[Result]:
        return [Result("fine", OK, "yes")]

    out = status.run_checks(Context(registry.parse_settings(good), None), [check_boom, check_fine])  # type: ignore[arg-type]
    assert [(r.name, r.status) for r in out] == [("boom", WARN), ("fine", OK)]
    assert "kaputt" in out[0].detail


def test_table_shows_fixes_of_problems_and_counts() -> None:
    text = status.table([Result("a", OK, "fine", "never shown"), Result("b", FAIL, "bad", "do x")])
    assert "ok   a: fine" in text and "FAIL b: bad\n     fix: do x" in text
    assert "never shown" not in text and text.endswith("1 ok, 0 warning(s), 1 failure(s)")


# --- the parsers -------------------------------------------------------------------------------
def test_queue_summary_counts_deferred_and_names_the_top_reason() -> None:
    now = 1_000_000.0
    msgs = [
        {"queue_name": "deferred", "arrival_time": now - 3600,
         "recipients": [{"address": "a@x.test", "delay_reason": "connect to mx.x.test: timed out"}]},
        {"queue_name": "deferred", "arrival_time": now - 60,
         "recipients": [{"address": "b@x.test", "delay_reason": "connect to mx.x.test: timed out"},
                        {"address": "c@y.test", "delay_reason": "451 greylisted"}]},
        {"queue_name": "active", "arrival_time": now, "recipients": [{"address": "d@z.test"}]},
    ]
    r = status_checks.summarize_queue([json.dumps(m) for m in msgs], now)
    assert r.status == WARN and "3 message(s) queued, 2 deferred" in r.detail
    assert "most common reason: connect to mx.x.test: timed out" in r.detail
    msgs[0]["arrival_time"] = now - 4 * 86400
    assert status_checks.summarize_queue([json.dumps(m) for m in msgs], now).status == FAIL
    assert status_checks.summarize_queue([], now).status == OK
    held = status_checks.summarize_queue([json.dumps({"queue_name": "hold", "recipients": []})], now)
    assert held.status == WARN and "postsuper -H" in held.fix


def test_apt_simulation_counts_security_updates() -> None:
    text = """Reading package lists...
Inst libssl3 [3.0.11-1~deb12u1] (3.0.15-1~deb12u1 Debian-Security:12/stable-security [arm64])
Inst tzdata [2024a-0+deb12u1] (2024b-0+deb12u1 Debian:12.8/stable [all])
Conf libssl3 (3.0.15-1~deb12u1 Debian-Security:12/stable-security [arm64])
"""
    assert status_checks.parse_apt_simulation(text) == (2, 1)


def test_fail2ban_status_is_parsed() -> None:
    text = """Status for the jail: postfix
|- Filter
|  |- Currently failed:\t1
|  `- Total failed:\t9
`- Actions
   |- Currently banned:\t2
   |- Total banned:\t5
   `- Banned IP list:\t198.51.100.66 198.51.100.67"""
    assert fail2ban_checks.parse_fail2ban_status(text) == {"current": 2, "total": 5}


@pytest.mark.parametrize("free,total,want", [(50 * 2**30, 100 * 2**30, OK), (2 * 2**30, 20 * 2**30, WARN),
                                             (100 * 2**20, 20 * 2**30, FAIL), (2 * 2**30, 8 * 2**30, OK)])
def test_disk_thresholds(free: int, total: int, want: str) -> None:
    assert status_checks.disk_status("/", free, total).status == want


@pytest.mark.parametrize("days,self_signed,want", [(80, False, OK), (15, False, WARN), (5, False, FAIL),
                                                   (-1, False, FAIL), (300, True, WARN)])
def test_certificate_thresholds(days: float, self_signed: bool, want: str) -> None:
    r = certs_checks.cert_status(days, self_signed, "mail.example.org")
    assert r.status == want and (want == OK or "appliance cert" in r.fix)


# --- DNS checks against a fake resolver (no network in unit tests) -----------------------------
class FakeResolver:
    nameservers = ["192.0.2.53"]

    def __init__(self, data: dict[tuple[str, str], list[str]]) -> None:
        self.data = data

    def resolve(self, name: str, rtype: str, **kw: Any) -> list[Any]:
        got = self.data.get((name.rstrip("."), rtype))
        if got is None:
            raise dns.resolver.NXDOMAIN(qnames=[dns.name.from_text(name)])
        return [type("Rr", (), {"to_text": lambda self, v=v: v})() for v in got]


def ctx(good: dict[str, Any], data: dict[tuple[str, str], list[str]], **known: Any) -> Context:
    from appliance.core.records import Known

    c = Context(registry.parse_settings({**good, "status": {"blocklists": ["dnsbl.test"]}}), None,  # type: ignore[arg-type]
                FakeResolver(data))
    c._known = Known(**known)
    return c


def test_reverse_dns_forward_confirmed(good: dict[str, Any]) -> None:
    ptr = ("2.113.0.203.in-addr.arpa", "PTR")
    a = ("mail.example.org", "A")
    ok = dns_checks.check_reverse_dns(ctx(good, {ptr: ["mail.example.org."], a: [IP]}, public_ipv4=IP))
    assert [r.status for r in ok] == [OK]
    for data, words in (({}, "has no PTR"),
                        ({ptr: ["dsl-2.isp.example."]}, "greets (HELO) as mail.example.org"),
                        ({ptr: ["mail.example.org."], a: ["192.0.2.9"]}, "forward-confirmed")):
        r = dns_checks.check_reverse_dns(ctx(good, data, public_ipv4=IP))[0]
        assert r.status == FAIL and words in r.detail, r
    relay = dns_checks.check_reverse_dns(ctx(good, {}, public_ipv4=IP, sending_ipv4="198.51.100.7"))[0]
    assert "198.51.100.7" in relay.detail
    assert dns_checks.check_reverse_dns(ctx(good, {})) == []


def test_blocklist_check_queries_each_zone_for_the_sending_address(good: dict[str, Any]) -> None:
    c = ctx(good, {("2.113.0.203.dnsbl.test", "A"): ["127.0.0.2"]}, public_ipv4=IP)
    [r] = status_checks.check_blocklists(c)
    assert r.status == FAIL and r.name == "blocklist dnsbl.test"
    assert status_checks.check_blocklists(ctx(good, {})) == []  # no address known: no check


def test_with_a_smarthost_an_end_user_listing_is_fine_and_reverse_dns_not_ours(good: dict[str, Any]) -> None:
    relay = {"kind": "smarthost", "host": "smtp.example.net", "username": "u",
             "password_file": "/etc/appliance/relay.password"}
    c = ctx(good, {}, public_ipv4=IP)
    c.s = registry.parse_settings({**good, "relay": relay, "status": {"blocklists": ["zen.spamhaus.org"]}})
    c.resolver = FakeResolver({("2.113.0.203.zen.spamhaus.org", "A"): ["127.0.0.10"]})
    [r] = status_checks.check_blocklists(c)
    assert r.status == OK and "smarthost" in r.detail
    c.resolver = FakeResolver({("2.113.0.203.zen.spamhaus.org", "A"): ["127.0.0.4", "127.0.0.10"]})
    assert status_checks.check_blocklists(c)[0].status == FAIL  # an infected device: still a failure
    assert dns_checks.check_reverse_dns(c) == []


# --- settings and the timer --------------------------------------------------------------------
def test_status_settings_default_and_validation(good: dict[str, Any]) -> None:
    s = registry.parse_settings(good)
    assert "zen.spamhaus.org" in s.status.blocklists and s.status.daily_mail
    assert registry.parse_settings({**good, "status": {"blocklists": []}}).status.blocklists == ()
    with pytest.raises(SettingsError) as e:
        registry.parse_settings({**good, "status": {"blocklists": ["zen.spamhaus.org", "Bad Zone!"],
                                           "daily_mail": "yes", "colour": 1}})
    text = str(e.value)
    assert 'status.blocklists[1]: "Bad Zone!" is not a DNS zone name; use' in text
    assert 'status.daily_mail: "yes" is not true or false' in text
    assert "status.colour" in text


def test_daily_timer_units(good: dict[str, Any], tmp_path: Any) -> None:
    s = registry.parse_settings(good)
    files = {f.path: f.content.decode()
             for f in registry.build_plan(s, facts.Facts("x"), plan.environment()).files}
    unit = files["/etc/systemd/system/appliance-status.service"]
    timer = files["/etc/systemd/system/appliance-status.timer"]
    assert "ExecStart=/usr/bin/appliance status --mail-changes" in unit and "OnCalendar=daily" in timer
    off = registry.parse_settings({**good, "status": {"daily_mail": False}})
    assert not [f for f in registry.build_plan(off, facts.Facts("x"), plan.environment()).files
                if "appliance-status" in f.path]
    if shutil.which("systemd-analyze"):
        for name in ("appliance-status.service", "appliance-status.timer"):
            (tmp_path / name).write_text(files[f"/etc/systemd/system/{name}"])
        r = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "appliance-status.timer")],
                           capture_output=True, text=True)
        bad = [line for line in r.stderr.splitlines()
               if "appliance-status" in line and "/usr/bin/appliance" not in line]
        assert not bad, r.stderr


# --- UPnP state and the external probe ---------------------------------------------------------
def test_upnp_mappings_from_the_state_file(good: dict[str, Any], tmp_path: Any) -> None:
    from appliance.core import system
    from appliance.features.upnp import client as upnp

    root = system.Root(tmp_path)
    c = Context(registry.parse_settings(good), root, None, now=10_000.0)
    assert [r.status for r in upnp_checks.check_upnp(c)] == [WARN]  # no mapping made yet
    state = {"external_ip": IP, "at": 9_000, "outcomes": [
        {"port": 25, "result": "renewed", "detail": ""},
        {"port": 587, "result": "conflict", "detail": "held by 198.18.0.20"}]}
    root.write_atomic(upnp.STATE_PATH, system.FileState(json.dumps(state).encode()))
    got = {r.name: r for r in upnp_checks.check_upnp(c)}
    assert got["upnp port 25"].status == OK and got["upnp port 587"].status == FAIL
    assert "held by 198.18.0.20" in got["upnp port 587"].detail and "upnp renewal" not in got
    c.now = 9_000.0 + 3 * 3600
    assert upnp_checks.check_upnp(c)[-1].name == "upnp renewal"
    off = Context(registry.parse_settings({**good, "upnp": {"enabled": False}}), root, None)
    assert upnp_checks.check_upnp(off) == []


def test_reachability_per_port_from_the_users_probe(good: dict[str, Any], tmp_path: Any,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from appliance.core import system
    from appliance.core.records import Known
    from appliance.features.upnp import reachability

    root = system.Root(tmp_path)
    root.write_atomic("/etc/appliance/probe.token", system.FileState(b"t" * 20 + b"\n"))
    s = registry.parse_settings({**good, "reachability": {"probe_url": "http://192.0.2.7:8025"}})
    asked: list[Any] = []

    def probe(url: str, token: str, ports: list[int], timeout: float = 30) -> dict[str, Any]:
        asked.append((url, token, ports))
        return {"seen_ip": "192.0.2.99", "ports": {"25": True, "465": True, "587": False, "993": True,
                                                  "4190": True}}

    monkeypatch.setattr(reachability, "ask_probe", probe)  # the probe runs outside: a stand-in
    c = Context(s, root, None)
    c._known = Known(public_ipv4=IP)
    got = {r.name: r.status for r in upnp_checks.check_reachability(c)}
    assert asked == [("http://192.0.2.7:8025", "t" * 20, [25, 465, 587, 993, 4190])]
    assert got == {"reachable port 25": OK, "reachable port 465": OK, "reachable port 587": FAIL,
                   "reachable port 993": OK, "reachable port 4190": OK,
                   "reachability address": WARN}
    assert upnp_checks.check_reachability(Context(registry.parse_settings(good), root, None)) == []


def test_mta_sts_policy_compared_with_the_settings() -> None:
    import dataclasses

    from appliance.core.checks import FAIL, OK
    from appliance.features.web.checks import compare_mta_sts
    from appliance.features.web.web import mta_sts_policy

    s = registry.parse_settings({"domain": "example.org", "web": {"enabled": True, "mta_sts_mode": "enforce"},
                  "users": [{"address": "a@example.org", "password_hash": "$6$x$" + "y" * 86}]})
    assert compare_mta_sts(mta_sts_policy(s), s).status == OK  # what the box serves passes
    wrong_mx = mta_sts_policy(s).replace("mx: mail.example.org", "mx: mx.old-provider.example")
    r = compare_mta_sts(wrong_mx, s)
    assert r.status == FAIL and "does not cover mail.example.org" in r.detail and r.fix
    assert compare_mta_sts(mta_sts_policy(s).replace("mx: mail.example.org", "mx: *.example.org"),
                           s).status == OK
    testing = s.with_section("web", dataclasses.replace(s.web, mta_sts_mode="testing"))
    assert "the settings say testing" in compare_mta_sts(mta_sts_policy(s), testing).detail


class SlowResolver(FakeResolver):
    """Answers nothing for the names in `slow` within the lifetime (a dropped UDP packet, a
    router's DNS that hangs)."""

    def __init__(self, data: dict[tuple[str, str], list[str]], slow: set[str]) -> None:
        super().__init__(data)
        self.slow = slow

    def resolve(self, name: str, rtype: str, **kw: Any) -> list[Any]:
        if name.rstrip(".") in self.slow:
            raise dns.exception.Timeout()
        return super().resolve(name, rtype, **kw)


def test_a_dns_timeout_is_said_as_such_never_as_a_missing_or_wrong_record(good: dict[str, Any]) -> None:
    """Missing, wrong and not answered are three different things to the person reading it."""
    from appliance.core import pipeline

    c = ctx(good, {})
    c.dns_records = lambda s, k: pipeline.dns_records(s, k, registry.FEATURES)
    c.resolver = SlowResolver({("example.org", "MX"): ["10 mail.other.example."]},
                              {"_dmarc.example.org", "example.org"})
    by_name = {r.name: r for r in dns_checks.check_records(c)}
    dmarc, mx = by_name["dns _dmarc.example.org. TXT"], by_name["dns example.org. MX"]
    for r in (dmarc, mx):
        assert r.status == WARN and "no answer from the DNS server" in r.detail, r
        assert "publish" not in r.fix and "replace" not in r.fix
    c.resolver = SlowResolver({("example.org", "MX"): ["10 mail.other.example."]}, set())
    by_name = {r.name: r for r in dns_checks.check_records(c)}
    assert by_name["dns example.org. MX"].status == FAIL
    assert "published 10 mail.other.example., expected" in by_name["dns example.org. MX"].detail
    assert by_name["dns _dmarc.example.org. TXT"].detail == "no v=dmarc1 record"
