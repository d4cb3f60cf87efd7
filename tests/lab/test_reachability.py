"""UPnP and the connection verdict against a real miniupnpd (nftables backend) on the lab router.

Each router kind gets its own lab (≈ 10 s to build): a UPnP router that maps anything the LAN
asks for, one whose UPnP refuses ports below 1024, and one without UPnP at all. The external
probe runs on a "vps" host on the internet side, as it would on the user's own relay.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import REPO
from .mail_lab import ALICE, ALICE_PW, APP_IP, IGD_URL, MX_IP, REMOTE_USER, WAN_IP, MailLab
from .netlab import wait_for
from .test_mail import imap_fetch_code, smtp_code, trust_appliance_cert

VPS_IP = "203.0.113.60"
TOKEN = "lab-probe-token-0123456789"


def build(router: str, low_ports: bool = True, extra: str = "") -> Iterator[MailLab]:
    m = MailLab(Path(tempfile.mkdtemp(prefix="mail-appliance-lab.")), REPO, router=router,
                upnp_low_ports=low_ports,
                settings_extra=f'[upnp]\nigd_url = "{IGD_URL}"\nlease_seconds = 120\n' + extra)
    try:
        m.up()
        yield m
    finally:
        m.down()
        shutil.rmtree(m.workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def upnp_lab() -> Iterator[MailLab]:
    yield from build("upnp")


def upnp_json(lab: MailLab, *args: str) -> dict:
    r = lab.appliance("upnp", *args, "--json")
    assert r.stdout, r.stderr
    return json.loads(r.stdout)


def router_mappings(lab: MailLab) -> dict[int, tuple[str, int]]:
    """Ask the router (as any LAN client could) what it forwards."""
    r = lab.lan2.python(f"""
import miniupnpc, json
u = miniupnpc.UPnP(); u.selectigd({IGD_URL!r})
out = {{}}
for i in range(64):
    m = u.getgenericportmapping(i)
    if m is None:
        break
    out[m[0]] = [m[2][0], m[2][1]]
print(json.dumps(out))""")
    assert r.returncode == 0, r.stderr
    return {int(k): (v[0], v[1]) for k, v in json.loads(r.stdout).items()}


def test_appliance_maps_its_ports_and_the_remote_mx_delivers_through_them(upnp_lab: MailLab) -> None:
    lab = upnp_lab
    assert not lab.tcp_open(lab.att, WAN_IP, 25)  # nothing forwarded before the appliance asks
    rep = upnp_json(lab, "renew")
    assert rep["ok"] and rep["external_ip"] == WAN_IP  # read from the router, not a web service
    ports = (25, 465, 587, 993, 4190)
    assert {o["port"]: o["result"] for o in rep["outcomes"]} == {p: "added" for p in ports}
    mappings = router_mappings(lab)
    assert {p: mappings[p] for p in ports} == {p: (APP_IP, p) for p in ports}
    assert 22 not in mappings and 80 not in mappings

    tag = uuid.uuid4().hex[:12]
    r = lab.mx.python(smtp_code("127.0.0.1", 25, f"""
s.sendmail({REMOTE_USER!r}, [{ALICE!r}], 'Subject: via-upnp {tag}\\r\\n\\r\\nhello\\r\\n')
s.quit()"""))
    assert r.returncode == 0, r.stderr
    trust_appliance_cert(lab, lab.lan2)
    r = lab.lan2.python(imap_fetch_code(ALICE, ALICE_PW, f"via-upnp {tag}"), timeout=60)
    assert r.returncode == 0, r.stderr
    assert f"relay=mail.example.test[{WAN_IP}]:25" in lab.mx.read("/var/log/mail.log")
    # renewing again refreshes our own leases
    rep = upnp_json(lab, "renew")
    assert {o["result"] for o in rep["outcomes"]} == {"renewed"}


def test_ssh_is_never_mapped_and_another_hosts_mapping_is_never_touched(upnp_lab: MailLab) -> None:
    lab = upnp_lab
    lab.appliance("upnp", "remove")
    # A game console on the LAN holds 465 on the router.
    r = lab.lan2.python(f"""
import miniupnpc
u = miniupnpc.UPnP(); u.selectigd({IGD_URL!r})
print(u.addportmapping(465, 'TCP', '198.18.0.20', 465, 'console', '', 600))""")
    assert "True" in r.stdout, r.stderr
    try:
        rep = upnp_json(lab, "renew", "--extra", "22")
        results = {o["port"]: o["result"] for o in rep["outcomes"]}
        assert results[465] == "conflict" and not rep["ok"]
        assert 22 not in results
        assert router_mappings(lab)[465] == ("198.18.0.20", 465)
        assert 22 not in router_mappings(lab)
        r = lab.appliance("stop")
        assert "port 465: kept - belongs to 198.18.0.20" in r.stdout
        mappings = router_mappings(lab)
        assert mappings.get(465) == ("198.18.0.20", 465)
        assert not {25, 587, 993} & set(mappings)
    finally:
        lab.lan2.python(f"import miniupnpc; u = miniupnpc.UPnP(); u.selectigd({IGD_URL!r}); "
                        "u.deleteportmapping(465, 'TCP')")


def test_stop_removes_the_mappings(upnp_lab: MailLab) -> None:
    lab = upnp_lab
    upnp_json(lab, "renew")
    assert lab.tcp_open(lab.att, WAN_IP, 25)
    r = lab.appliance("stop")
    assert r.returncode == 0, r.stdout + r.stderr
    assert not {25, 465, 587, 993} & set(router_mappings(lab))
    assert not lab.tcp_open(lab.att, WAN_IP, 25)


def test_renewal_restores_mappings_after_the_router_forgets_them(upnp_lab: MailLab) -> None:
    lab = upnp_lab
    interval = 3.0
    lab.app.spawn("upnp-watch", [sys.executable, "-m", "appliance.cli", "upnp", "watch",
                                 "--interval", str(interval), "--lifetime", "90"],
                  env={"PYTHONPATH": str(REPO)})
    try:
        wait_for("first renewal", lambda: 25 in router_mappings(lab), timeout=15)
        lab.stop_miniupnpd()  # the router reboots: its mappings are gone
        lab.start_miniupnpd()
        assert 25 not in router_mappings(lab)
        # restored within one renewal period (plus the time a renewal takes)
        wait_for("mappings restored", lambda: {25, 465, 587, 993} <= set(router_mappings(lab)),
                 timeout=interval + 5, interval=0.2)
        assert lab.tcp_open(lab.att, WAN_IP, 25)
    finally:
        import os
        import signal

        os.killpg(lab.app.pids.pop("upnp-watch"), signal.SIGTERM)


def test_verdict_with_the_users_own_probe_and_outbound_check(upnp_lab: MailLab) -> None:
    lab = upnp_lab
    vps = lab.lab.host("vps")
    lab.lab.link("vps", "eth0", "inet", "i-vps", a_addr=f"{VPS_IP}/24", b_master="br-wan")
    lab.lab.ns_exec("vps", "ip", "route", "add", "default", "via", "203.0.113.254")
    vps.write("/etc/probe.token", TOKEN + "\n", mode=0o600)
    vps.spawn("probe", [sys.executable, "-m", "appliance.cli", "probe-server", "--listen", VPS_IP,
                        "--token-file", "/etc/probe.token", "--lifetime", "300"],
              env={"PYTHONPATH": str(REPO)})
    wait_for("probe server", lambda: lab.tcp_open(lab.att, VPS_IP, 8025))
    lab.app.write("/etc/appliance/probe.token", TOKEN + "\n", mode=0o600)
    good = lab.app.read("/etc/appliance/settings.toml")
    lab.write_settings(good + f"""
[reachability]
outbound_probe_hosts = ["{MX_IP}"]
probe_url = "http://{VPS_IP}:8025"
probe_token_file = "/etc/appliance/probe.token"
""")
    try:
        r = lab.appliance("reachability", "--json")
        v = json.loads(r.stdout)
        assert v["verdict"] == "direct", v
        assert r.returncode == 0
        assert v["evidence"]["probe_seen_ip"] == WAN_IP
        assert v["evidence"]["inbound"] == {"25": True, "465": True, "587": True, "993": True, "4190": True}
        # The probe answers only its owner (the token), so it is no port scanner for others.
        r = lab.att.python(f"""
import urllib.request, urllib.error
try:
    urllib.request.urlopen('http://{VPS_IP}:8025/v1/check?ports=25', timeout=5)
except urllib.error.HTTPError as e:
    print(e.code)""")
        assert r.stdout.strip() == "403"
        # The ISP starts blocking outbound port 25 (a rule on the router's WAN side).
        lab.rtr.run(["nft", "insert", "rule", "inet", "filter", "forward", "oifname", "wan0",
                     "tcp", "dport", "25", "drop"])
        r = lab.appliance("reachability")
        assert "verdict: direct-outbound-blocked" in r.stdout and r.returncode == 1
        assert "smarthost" in r.stdout
    finally:
        lab.rtr.run(["nft", "flush", "chain", "inet", "filter", "forward"], check=False)
        lab.rtr.run(["nft", "-f", "-"], check=False, input="""
add rule inet filter forward ct state established,related accept
add rule inet filter forward iifname "br-lan" oifname "br-lan" accept
add rule inet filter forward iifname "br-lan" oifname "wan0" accept
add rule inet filter forward jump miniupnpd
""")
        lab.write_settings(good)


def test_router_refusing_low_ports_gives_an_honest_verdict() -> None:
    for lab in build("upnp", low_ports=False):
        r = lab.appliance("upnp", "renew")
        assert r.returncode == 1
        assert "port 25: refused" in r.stdout
        r = lab.appliance("reachability")
        assert "verdict: not-reachable" in r.stdout
        assert "port 25: refused" in r.stdout
        assert "forward TCP ports 25, 465, 587, 993, 4190 to 198.18.0.10" in r.stdout


def test_router_without_upnp_gets_manual_forwarding_instructions() -> None:
    for lab in build("none"):
        # The renewal timer's run: no router to ask is exit 4, which its unit does not count as
        # a failure (a box behind such a router is not "degraded"); status reports it instead.
        r = lab.appliance("upnp", "renew")
        assert r.returncode == 4 and "UPnP router" in r.stderr, r.stderr
        r = lab.appliance("reachability")
        assert r.returncode == 1
        assert "verdict: not-reachable" in r.stdout
        assert "no UPnP router found" in r.stdout
        assert "forward TCP ports 25, 465, 587, 993, 4190 to 198.18.0.10" in r.stdout
        assert "never port 22" in r.stdout
        # and nothing reaches the box from the internet
        assert not lab.tcp_open(lab.att, WAN_IP, 25)

