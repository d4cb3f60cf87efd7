"""`appliance status` against the lab's real DNS server and Postfix: the records `appliance dns`
prints, published, make status pass (round trip); each broken record makes it fail, naming that
record and its fix; the lab's DNS blocklist lists the appliance in one scenario and answers like
a list refusing a public resolver in another; the daily run mails the postmaster once per change."""

from __future__ import annotations

import email
import email.policy
import json
from collections.abc import Iterator

import pytest

from .mail_lab import ALICE, DNSBL_ZONE, DOMAIN, WAN_IP, MailLab
from .netlab import wait_for
from .test_dns_records import KNOT, break_record, publish

STATE = "/var/lib/appliance/status.json"
LISTED_NAME = f"{'.'.join(reversed(WAN_IP.split('.')))}.{DNSBL_ZONE}."


@pytest.fixture(scope="module")
def records(lab: MailLab) -> Iterator[list[str]]:
    """The zone lines of `appliance dns --json`, published; status asks only the lab blocklist."""
    good = lab.app.read("/etc/appliance/settings.toml")
    lab.write_settings(good + f'\n[dns]\npublic_ipv4 = "{WAN_IP}"\n'
                       f'\n[status]\nblocklists = ["{DNSBL_ZONE}"]\n')
    r = lab.appliance("dns", "--json")
    assert r.returncode == 0, r.stderr
    lines = [f"{x['name']}\t{x['ttl']}\tIN\t{x['rtype']}\t{x['value']}" for x in json.loads(r.stdout)]
    publish(lab, lines)
    try:
        yield lines
    finally:
        lab.write_settings(good)
        lab.app.run(["rm", "-f", STATE])


def status(lab: MailLab, *args: str) -> tuple[int, str]:
    r = lab.appliance("status", *args)
    assert "Traceback" not in r.stderr, r.stderr
    return r.returncode, r.stdout


def fails(out: str) -> list[str]:
    return [x for x in out.splitlines() if x.startswith("FAIL")]


def line_for(records: list[str], rtype: str, contains: str = "") -> str:
    return next(x for x in records if x.split("\t")[3] == rtype and contains in x)


def set_blocklist_answer(lab: MailLab, value: str | None) -> None:
    lab.dns.run([*KNOT, "zone-begin", DNSBL_ZONE])
    lab.dns.run([*KNOT, "zone-unset", DNSBL_ZONE, LISTED_NAME, "A"], check=False)
    if value:
        lab.dns.run([*KNOT, "zone-set", DNSBL_ZONE, LISTED_NAME, "60", "A", value])
    lab.dns.run([*KNOT, "zone-commit", DNSBL_ZONE])


def test_status_passes_for_the_records_appliance_dns_prints(lab: MailLab, records: list[str]) -> None:
    code, out = status(lab)
    assert code == 0 and not fails(out), out
    for expect in (f"ok   dns {DOMAIN}. MX: matches", f"ok   reverse dns: {WAN_IP} -> mail.{DOMAIN}",
                   f"ok   blocklist {DNSBL_ZONE}: {WAN_IP} is not listed", "certificate:",
                   "mail queue:", "disk /:", "fail2ban postfix:"):
        assert expect in out, out
    # The lab's zone is unsigned: a warning (DANE needs DNSSEC), which alone exits 0.
    assert f"WARN dnssec: {DOMAIN} is not signed" in out, out
    code, text = status(lab, "--json")
    results = json.loads(text)
    assert code == 0 and {r["status"] for r in results} <= {"ok", "warn"}
    assert {"name", "status", "detail", "fix"} == set(results[0])


@pytest.mark.parametrize("rtype,contains,bad_value,expect", [
    ("TXT", "v=spf1", '"v=spf1 mx +all"', "SPF without -all lets anyone send as you"),
    ("TXT", "DMARC1", '"v=DMARC1; p=maybe"', "DMARC syntax"),
    ("MX", "", "10 mx.elsewhere.example.", "expected 10 mail.example.test."),
    ("TLSA", "", "3 1 1 " + "ab" * 32, "published 3 1 1 abab"),
    ("PTR", "", None, "missing"),
    ("TXT", "._domainkey.", None, "no v=dkim1 record"),  # the key apply made (spam filter)
])
def test_each_broken_record_fails_naming_it_and_its_fix(lab: MailLab, records: list[str], rtype: str,
                                                        contains: str, bad_value: str | None,
                                                        expect: str) -> None:
    right = line_for(records, rtype, contains)
    name, value = right.split("\t")[0], right.split("\t", 4)[4]
    try:
        break_record(lab, right, bad_value)
        code, out = status(lab)
        assert code == 1, out
        failing = fails(out)
        assert any(f"dns {name} {rtype}" in x and expect in x for x in failing), out
        # Only that record fails; without a PTR, reverse DNS fails too (the same fix).
        allowed = [f"dns {name} {rtype}"] + (["reverse dns"] if rtype == "PTR" else [])
        assert all(any(a in x for a in allowed) for x in failing), out
        fix = out.split(failing[0], 1)[1].splitlines()[1]
        assert fix.strip().startswith("fix: ") and value in fix, out
        if rtype == "PTR":
            assert "has no PTR record" in out and f"set the reverse DNS (PTR) of {WAN_IP}" in out
    finally:
        publish(lab, [right])
    assert status(lab)[0] == 0


def test_the_lab_blocklist_listing_is_reported_and_a_refusal_is_unknown(lab: MailLab,
                                                                        records: list[str]) -> None:
    try:
        set_blocklist_answer(lab, "127.0.0.2")
        code, out = status(lab)
        assert code == 1, out
        assert fails(out) == [f"FAIL blocklist {DNSBL_ZONE}: {WAN_IP} is listed: 127.0.0.2 (listed)"], out
        assert "delist" in out
        # A list refusing queries from public resolvers answers 127.255.255.254: not a listing.
        set_blocklist_answer(lab, "127.255.255.254")
        code, out = status(lab)
        assert code == 0 and not fails(out), out
        line = next(x for x in out.splitlines() if f"blocklist {DNSBL_ZONE}" in x)
        assert line.startswith("WARN") and "unknown" in line and "public or open resolvers" in line
        assert "is listed" not in out and "your own resolver" in out
    finally:
        set_blocklist_answer(lab, None)


def status_mails(lab: MailLab) -> dict[str, str]:
    """The status mails in the postmaster's (alice's) mailbox, any folder."""
    base = lab.app.path(f"/var/vmail/{DOMAIN}/{ALICE.split('@')[0]}/Maildir")
    found = {}
    for p in base.rglob("*"):
        if p.is_file() and p.parent.name in ("new", "cur"):
            msg = email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
            part = msg.get_body(("plain",)) if "status:" in str(msg["Subject"]) else None
            text = part.get_content() if part is not None else ""
            if "appliance status --mail-changes" in text:
                found[p.name.split(":")[0]] = text  # the name without flags: stable new/ -> cur/
    return found


def test_the_daily_run_mails_the_postmaster_once_per_change(lab: MailLab, records: list[str]) -> None:
    lab.app.run(["rm", "-f", STATE])
    code, out = status(lab, "--mail-changes")  # the first run reports the lab's warnings
    assert code == 0 and "mailed" in out, out
    wait_for("the first status mail", lambda: status_mails(lab), timeout=30)
    quiet = status(lab, "--mail-changes")[1].strip()
    assert quiet == "nothing changed since the previous run; nothing mailed", quiet
    before = set(status_mails(lab))

    right = line_for(records, "MX")
    name, ttl, cls, rtype, _v = right.split("\t", 4)
    try:
        publish(lab, ["\t".join([name, ttl, cls, rtype, "10 mx.elsewhere.example."])])
        code, out = status(lab, "--mail-changes")
        assert code == 0 and f"mailed {ALICE}: 1 new problem(s), 0 fixed" in out, out
        new = wait_for("the change mail", lambda: set(status_mails(lab)) - before, timeout=30)
        [mail] = [status_mails(lab)[k] for k in new]  # type: ignore[attr-defined]
        assert f"NEW   FAIL dns {name} MX: published 10 mx.elsewhere.example." in mail, mail
        assert "fix: replace it with:" in mail and "Now: " in mail and "1 failure(s)" in mail
        # Nothing changed since: nothing mailed.
        code, out = status(lab, "--mail-changes")
        assert code == 0 and "nothing mailed" in out, out
    finally:
        publish(lab, [right])
    code, out = status(lab, "--mail-changes")
    assert f"mailed {ALICE}: 0 new problem(s), 1 fixed" in out, out
    wait_for("the fixed mail", lambda: any(f"FIXED dns {name} MX" in t for t in status_mails(lab).values()),
             timeout=30)
    after = {k: v for k, v in status_mails(lab).items() if k not in before}
    assert len(after) == 2, after  # one for the break, one for the fix: none for the quiet run
