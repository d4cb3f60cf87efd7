"""Fact parsing from recorded `ip -j` output (no root, no network)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from appliance.core import facts
from appliance.core.settings import LanOverride

DATA = Path(__file__).parent / "data"


def load(name: str) -> str:
    return (DATA / name).read_text()


def test_lan_is_the_interface_of_the_lowest_metric_default_route() -> None:
    f = facts.from_ip_json(load("ip-addr.json"), load("ip-route4.json"), load("ip-route6.json"),
                           hostname="mail.example.org")
    assert f.lan_interface == "eth0"
    assert f.lan_prefixes == ("198.18.0.0/24", "fd00:18::/64")  # link-local is not the LAN
    assert f.lan_addresses == ("198.18.0.10", "fd00:18::10")
    assert f.gateway4 == "198.18.0.1" and f.gateway6 == "fe80::1"
    assert f.notes == ()


def test_override_wins_over_detection() -> None:
    f = facts.from_ip_json(load("ip-addr.json"), load("ip-route4.json"),
                           override=LanOverride("wlan0", ("198.19.0.0/16",)))
    assert f.lan_interface == "wlan0" and f.lan_prefixes == ("198.19.0.0/16",)
    assert f.gateway4 is None  # the default route goes out of eth0, not wlan0


def test_no_default_route_is_reported_not_guessed() -> None:
    f = facts.from_ip_json(load("ip-addr.json"), "[]", "[]")
    assert f.lan_interface is None and f.lan_prefixes == ()
    assert f.notes and "set [lan] interface" in f.notes[0]


def test_interface_without_global_address_is_noted() -> None:
    addr = ('[{"ifname":"eth0","addr_info":'
            '[{"family":"inet6","local":"fe80::2","prefixlen":64,"scope":"link"}]}]')
    route = '[{"dst":"default","gateway":"198.18.0.1","dev":"eth0"}]'
    f = facts.from_ip_json(addr, route)
    assert f.lan_interface == "eth0" and f.lan_prefixes == ()
    assert "set [lan] prefixes" in f.notes[0]


@pytest.mark.parametrize(("lan", "problem"), [
    (LanOverride(interface="eth9"),
     'lan.interface: "eth9" is not an interface of this machine (it has eth0, wlan0)'),
    (LanOverride(interface="lo"), 'lan.interface: "lo" is not an interface'),
    (LanOverride(interface="eth0", prefixes=("192.168.1.0/24",)),
     "lan.prefixes: ['192.168.1.0/24'] hold no address of eth0 (198.18.0.10, fd00:18::10)"),
    (LanOverride(prefixes=("10.0.0.0/8",)), "hold no address of eth0"),  # the detected interface
    (LanOverride(interface="wlan0"), None),
    (LanOverride(interface="eth0", prefixes=("198.18.0.0/24",)), None),
    (LanOverride(prefixes=("fd00:18::/64",)), None),
    (LanOverride(), None),
])
def test_lan_settings_the_machine_contradicts_are_named(lan: LanOverride, problem: str | None) -> None:
    found = facts.lan_problems(lan, load("ip-addr.json"), load("ip-route4.json"))
    if problem is None:
        assert found == []
    else:
        (p,) = found
        assert problem in p and p.startswith("lan.") and "remove the line" in p, p


def test_at_boot_the_facts_wait_for_a_default_route_then_take_what_there_is(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from appliance.core import system

    asked: list[str] = []
    route = '[{"dst":"default","gateway":"198.18.0.1","dev":"eth0","flags":[]}]'

    def run(argv: list[str], check: bool = True, **kw: object) -> system.Result:
        asked.append(" ".join(argv))
        up = sum("route show default" in a for a in asked) > 4  # the third round of asking
        out = route if up and argv[1:3] == ["-j", "-4"] and "default" in argv else "[]"
        return system.Result(tuple(argv), 0, out, "")

    monkeypatch.setattr(system, "run", run)
    f = facts.settled(wait=10, step=0.01)
    assert sum("route show default" in a for a in asked) == 6  # waited for the route
    assert any("addr show" in a for a in asked[6:]) and f.hostname  # then read the machine
    asked.clear()
    started = time.monotonic()
    route = "[]"  # no network at all: the wait is bounded, and the box is configured anyway
    facts.settled(wait=0.2, step=0.01)
    assert time.monotonic() - started < 2 and any("addr show" in a for a in asked)
