"""The records a domain needs are computed from settings and what the box knows: pure."""

from __future__ import annotations

from appliance import registry
from appliance.core import pipeline
from appliance.core.records import Known, Record
from appliance.features.dns import records as dnsrecords

from .conftest import ALICE_HASH

S = registry.parse_settings({"domain": "example.org", "users": [{"address": "a@example.org",
                                                        "password_hash": ALICE_HASH}]})


def by(records: list[Record]) -> dict[tuple[str, str], str]:
    return {(r.name, r.rtype): r.value for r in records}


def expected(s: object, k: Known) -> list[Record]:
    """Every feature's records, as `appliance dns` gathers them."""
    return pipeline.dns_records(s, k, registry.FEATURES)  # type: ignore[arg-type]


def test_complete_set_with_values() -> None:
    got = by(expected(S, Known(public_ipv4="203.0.113.9", tlsa_311="ab" * 32)))
    assert got[("example.org.", "MX")] == "10 mail.example.org."
    assert got[("mail.example.org.", "A")] == "203.0.113.9"
    assert got[("example.org.", "TXT")] == '"v=spf1 mx -all"'
    dmarc = '"v=DMARC1; p=quarantine; rua=mailto:postmaster@example.org"'
    assert got[("_dmarc.example.org.", "TXT")] == dmarc
    assert got[("_smtp._tls.example.org.", "TXT")].startswith('"v=TLSRPTv1;')
    assert got[("_25._tcp.mail.example.org.", "TLSA")] == "3 1 1 " + "ab" * 32
    assert got[("_submissions._tcp.example.org.", "SRV")] == "0 1 465 mail.example.org."
    assert got[("_imaps._tcp.example.org.", "SRV")] == "0 1 993 mail.example.org."
    assert got[("example.org.", "CAA")] == '0 issue "letsencrypt.org"'
    assert got[("9.113.0.203.in-addr.arpa.", "PTR")] == "mail.example.org."


def test_relay_sending_address_enters_spf_and_ptr() -> None:
    got = by(expected(S, Known(public_ipv4="203.0.113.9", sending_ipv4="198.51.100.7")))
    assert got[("example.org.", "TXT")] == '"v=spf1 mx ip4:198.51.100.7 -all"'
    assert ("7.100.51.198.in-addr.arpa.", "PTR") in got


def test_without_an_address_no_a_or_ptr_is_invented() -> None:
    got = by(expected(S, Known()))
    assert not any(t in ("A", "PTR") for _n, t in got)


def test_txt_comparison_and_hints() -> None:
    assert dnsrecords._norm("TXT", '"v=spf1 mx" " -all"') == "v=spf1 mx -all"
    assert "p= policy" in dnsrecords._txt_hint("v=dmarc1", "v=dmarc1; p=maybe")
    assert dnsrecords._txt_hint("v=dmarc1", "v=dmarc1; p=reject; rua=mailto:x@y") == ""
    assert "-all" in dnsrecords._txt_hint("v=spf1", "v=spf1 mx +all")
