"""`appliance dns`: the records it prints, loaded into the lab's DNS server, make `--check` pass
(round trip); each common mistake makes it fail, naming that record and the fix."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .mail_lab import DNS_IP, DOMAIN, WAN_IP, MailLab

KNOT = ["knotc", "-c", "/var/lib/knot-lab/knot.conf"]
ZONES = (DOMAIN, "113.0.203.in-addr.arpa")


def zone_of(name: str) -> str:
    return next(z for z in ZONES if name.rstrip(".").endswith(z))


def publish(lab: MailLab, lines: list[str], remove_only: bool = False) -> None:
    """Replace each (name, type) from zone-file lines in the lab's DNS server."""
    by_zone: dict[str, list[list[str]]] = {}
    for line in lines:
        name, ttl, _in, rtype, value = line.split("\t", 4)
        by_zone.setdefault(zone_of(name), []).append([name, ttl, rtype, value])
    for zone, recs in by_zone.items():
        lab.dns.run([*KNOT, "zone-begin", zone])
        for name, _ttl, rtype, _value in recs:
            lab.dns.run([*KNOT, "zone-unset", zone, name, rtype], check=False)
        if not remove_only:
            for name, ttl, rtype, value in recs:
                lab.dns.run([*KNOT, "zone-set", zone, name, ttl, rtype, value])
        lab.dns.run([*KNOT, "zone-commit", zone])


@pytest.fixture(scope="module")
def records(lab: MailLab) -> Iterator[list[str]]:
    good = lab.app.read("/etc/appliance/settings.toml")
    lab.write_settings(good + f'\n[dns]\npublic_ipv4 = "{WAN_IP}"\n')
    r = lab.appliance("dns")
    assert r.returncode == 0, r.stderr
    lines = [x for x in r.stdout.splitlines() if x and not x.startswith(";")]
    publish(lab, lines)
    try:
        yield lines
    finally:
        lab.write_settings(good)


def break_record(lab: MailLab, right: str, bad_value: str | None) -> None:
    """Publish a wrong value in place of the zone-file line `right`, or remove it (None)."""
    if bad_value is None:
        publish(lab, [right], remove_only=True)
    else:
        name, ttl, cls, rtype, _value = right.split("\t", 4)
        publish(lab, ["\t".join([name, ttl, cls, rtype, bad_value])])


def line_for(records: list[str], rtype: str, contains: str = "") -> str:
    return next(x for x in records if x.split("\t")[3] == rtype and contains in x)


def test_published_records_round_trip(lab: MailLab, records: list[str]) -> None:
    types = {x.split("\t")[3] for x in records}
    # (CNAMEs come with [web]: openpgpkey and autoconfig, which only it answers)
    assert {"MX", "A", "TXT", "TLSA", "SRV", "CAA", "PTR"} <= types
    r = lab.appliance("dns", "--check")
    assert r.returncode == 0, r.stdout
    assert "FAIL" not in r.stdout


@pytest.mark.parametrize("rtype,contains,bad_value,expect", [
    ("TXT", "v=spf1", '"v=spf1 mx +all"', "SPF without -all lets anyone send as you"),
    ("TXT", "DMARC1", '"v=DMARC1; p=maybe"', "DMARC syntax"),
    ("MX", "", "10 mx.elsewhere.example.", "expected 10 mail.example.test."),
    ("TLSA", "", "3 1 1 " + "ab" * 32, "TLSA: published 3 1 1 abab"),
    ("PTR", "", None, "PTR: missing"),
])
def test_each_mistake_is_named_with_its_fix(lab: MailLab, records: list[str], rtype: str,
                                            contains: str, bad_value: str | None, expect: str) -> None:
    right = line_for(records, rtype, contains)
    name = right.split("\t", 1)[0]
    try:
        break_record(lab, right, bad_value)
        r = lab.appliance("dns", "--check")
        assert r.returncode == 1, r.stdout
        failing = [x for x in r.stdout.splitlines() if x.startswith("FAIL")]
        assert len(failing) == 1 and name in failing[0], r.stdout
        assert expect.replace("TLSA: ", "").split(": ")[-1] in r.stdout, r.stdout
        assert "fix: " in r.stdout and right.split("\t")[4] in r.stdout
    finally:
        publish(lab, [right])


def test_push_repairs_the_zone_and_keeps_unrelated_records(lab: MailLab, records: list[str]) -> None:
    """`appliance dns --push`: one TSIG-signed RFC 2136 update to the lab's knot brings broken and
    missing records back; a TXT record of another kind at the same name survives; the PTR (the
    ISP's zone) is reported, not pushed."""
    spf = line_for(records, "TXT", "v=spf1")
    dkim = line_for(records, "TXT", "v=DKIM1")
    mx = line_for(records, "MX")
    name, ttl, cls, _t, _v = spf.split("\t", 4)
    publish(lab, ["\t".join([name, ttl, cls, "TXT", '"v=spf1 +all"']),
                  "\t".join([*mx.split("\t")[:4], "10 mx.elsewhere.example."])])
    publish(lab, [dkim], remove_only=True)
    lab.dns.run([*KNOT, "zone-begin", DOMAIN])
    lab.dns.run([*KNOT, "zone-set", DOMAIN, name, ttl, "TXT", '"site-verification=lab-123"'])
    lab.dns.run([*KNOT, "zone-commit", DOMAIN])
    assert lab.appliance("dns", "--check").returncode == 1
    current = lab.app.read("/etc/appliance/settings.toml")
    lab.app.write("/etc/appliance/dns-update.key", lab.update_secret + "\n", mode=0o600)
    lab.write_settings(current.replace("[dns]\n", f'[dns]\nupdate_server = "{DNS_IP}"\n'
                                       'update_key_file = "/etc/appliance/dns-update.key"\n', 1))
    try:
        r = lab.appliance("dns", "--push")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "not pushed: 2.113.0.203.in-addr.arpa. PTR" in r.stdout, r.stdout
        r = lab.appliance("dns", "--check")
        assert r.returncode == 0, r.stdout
        txt = lab.app.run(["kdig", "+short", f"@{DNS_IP}", "TXT", DOMAIN]).stdout
        assert "site-verification=lab-123" in txt and "+all" not in txt, txt
    finally:
        lab.write_settings(current)
        publish(lab, [spf])  # and the extra TXT record goes with the reset
