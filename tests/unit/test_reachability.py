"""The connection verdict and the UPnP decisions are pure: evidence in, verdict out."""

from __future__ import annotations

import pytest

from appliance import registry
from appliance.features.upnp import client as upnp
from appliance.features.upnp import reachability
from appliance.features.upnp.reachability import Evidence, evaluate

MAPPED = {p: "added" for p in upnp.MAIL_PORTS}


def test_direct_when_mapped_public_confirmed_inbound_and_outbound() -> None:
    v = evaluate(Evidence("198.18.0.10", "connected", "Connected", "203.0.113.2", MAPPED, True, "ok",
                          "203.0.113.2", {p: True for p in upnp.MAIL_PORTS}))
    assert v.verdict == "direct"


def test_outbound_25_blocked_says_smarthost_or_relay() -> None:
    v = evaluate(Evidence("198.18.0.10", "connected", "Connected", "203.0.113.2", MAPPED, False,
                          "mx: timed out", "203.0.113.2", {p: True for p in upnp.MAIL_PORTS}))
    assert v.verdict == "direct-outbound-blocked"
    assert "smarthost" in v.next_step and "relay" in v.next_step
    assert any("outbound port 25 is blocked" in r for r in v.reasons)


@pytest.mark.parametrize("ip,words", [("100.64.12.7", "carrier-grade NAT"),
                                      ("192.168.178.2", "double NAT"),
                                      ("10.1.2.3", "double NAT")])
def test_cgnat_and_double_nat_are_not_reachable_and_point_to_a_relay(ip: str, words: str) -> None:
    v = evaluate(Evidence("198.18.0.10", "connected", "Connected", ip, MAPPED, True))
    assert v.verdict == "not-reachable"
    assert any(words in r for r in v.reasons)
    assert "relay you own" in v.next_step


def test_probe_seeing_another_address_means_nat_beyond_the_router() -> None:
    v = evaluate(Evidence("198.18.0.10", "connected", "Connected", "203.0.113.2", MAPPED, True, "",
                          "198.51.100.9", {25: False}))
    assert v.verdict == "not-reachable"
    assert any("NAT beyond your router" in r for r in v.reasons)


def test_no_upnp_gives_manual_forwarding_instructions_with_the_lan_address() -> None:
    v = evaluate(Evidence("198.18.0.10", "absent", "no UPnP router answered"))
    assert v.verdict == "not-reachable"
    assert "forward TCP ports 25, 465, 587, 993, 4190 to 198.18.0.10" in v.next_step
    assert "never port 22" in v.next_step


def test_mapped_but_unconfirmed_is_unknown_not_direct() -> None:
    v = evaluate(Evidence("198.18.0.10", "connected", "Connected", "203.0.113.2", MAPPED, True))
    assert v.verdict == "unknown"
    assert any("probe_url" in r for r in v.reasons)


def test_refused_mapping_is_reported() -> None:
    mapped = {**MAPPED, 25: "refused (the router refused: 718)"}
    v = evaluate(Evidence("198.18.0.10", "connected", "Connected", "203.0.113.2", mapped, None))
    assert v.verdict == "not-reachable" and any(r.startswith("port 25: refused") for r in v.reasons)


def test_decide_never_touches_another_hosts_mapping() -> None:
    theirs = upnp.Mapping(465, "198.18.0.20", 465, "game console", 0)
    ours = upnp.Mapping(25, "198.18.0.10", 25, "mail-appliance 25", 100)
    got = upnp.decide([25, 465, 587], "198.18.0.10", {25: ours, 465: theirs, 587: None})
    assert got == {25: "renew", 465: "conflict", 587: "add"}


def test_ssh_is_never_a_wanted_port() -> None:
    assert 22 not in upnp.wanted_ports([22, 80, 443, 8080])
    assert upnp.wanted_ports([80]) == [25, 465, 587, 993, 4190, 80]


def test_address_kinds() -> None:
    assert reachability.address_kind("203.0.113.2") == "public"  # TEST-NET stands in for public
    assert reachability.address_kind("100.100.1.1") == "cgnat"
    assert reachability.address_kind("198.18.5.5") == "private"
    assert reachability.address_kind(None) == "unknown"


def test_upnp_units_renew_at_half_the_lease_and_unmap_at_shutdown(tmp_path) -> None:
    import shutil
    import subprocess

    from appliance.core import facts, plan
    from tests.unit.conftest import ALICE_HASH

    s = registry.parse_settings({"domain": "example.org", "upnp": {"lease_seconds": 1800},
                        "users": [{"address": "a@example.org", "password_hash": ALICE_HASH}]})
    files = {f.path: f.content.decode()
             for f in registry.build_plan(s, facts.Facts("x"), plan.environment()).files}
    timer = files["/etc/systemd/system/appliance-upnp-renew.timer"]
    assert "OnUnitActiveSec=900s" in timer
    unit = files["/etc/systemd/system/appliance-upnp.service"]
    assert "ExecStop=/usr/bin/appliance stop" in unit and "RemainAfterExit=yes" in unit
    if shutil.which("systemd-analyze"):
        for name in ("appliance-upnp.service", "appliance-upnp-renew.service",
                     "appliance-upnp-renew.timer"):
            (tmp_path / name).write_text(files[f"/etc/systemd/system/{name}"])
        r = subprocess.run(["systemd-analyze", "verify", *(str(tmp_path / n) for n in
                            ("appliance-upnp.service", "appliance-upnp-renew.timer"))],
                           capture_output=True, text=True)
        bad = [line for line in r.stderr.splitlines()
               if "appliance-upnp" in line and "/usr/bin/appliance" not in line]
        assert not bad, r.stderr


def test_igd_not_connected_is_not_reachable() -> None:
    v = evaluate(Evidence("198.18.0.10", "not-connected", "Disconnected", None))
    assert v.verdict == "not-reachable"
    assert any("not connected" in r for r in v.reasons)
    assert "forward TCP ports" in v.next_step
