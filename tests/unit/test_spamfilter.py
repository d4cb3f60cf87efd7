"""rspamd's reload-or-restart choice: a SIGHUP cannot rebind a worker's socket, so any change of
a bind socket must restart it (the first apply over Debian's default configuration did not)."""

from __future__ import annotations

import ipaddress
import re
import subprocess
from pathlib import Path

import jinja2
import pytest

from appliance import registry
from appliance.core import plan, system
from appliance.features.spam import rspamd as spamfilter
from appliance.features.spam.rspamd import CONTROLLER, Rspamd, listening_sockets

TEMPLATES = plan.TEMPLATE_DIR
DEBIAN_DEFAULT = {("127.0.0.1", 11332), ("::1", 11332), ("127.0.0.1", 11333), ("::1", 11333),
                  ("127.0.0.1", 11334), ("::1", 11334)}


def _box(tmp_path: Path, light: bool) -> Rspamd:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)))
    local = tmp_path / "etc/rspamd/local.d"
    local.mkdir(parents=True)
    for name in ("worker-proxy.inc", "worker-normal.inc", "worker-controller.inc"):
        body = env.get_template(f"etc/rspamd/local.d/{name}.j2").render(
            header="# test", light=light, controller=CONTROLLER)
        (local / name).write_text(body)
    return Rspamd(system.Root(tmp_path))


@pytest.mark.parametrize("listening, light, restart", [
    (DEBIAN_DEFAULT, False, True),  # the first apply over Debian's default: proxy rebinds
    (DEBIAN_DEFAULT, True, True),
    ({("127.0.0.1", 11332), ("127.0.0.1", 11334)}, False, False),  # ours, unchanged: SIGHUP
    ({("127.0.0.1", 11332)}, True, False),
    ({("127.0.0.1", 11332)}, False, True),  # controller added
    ({("127.0.0.1", 11332), ("127.0.0.1", 11334)}, True, True),  # controller dropped
    ({("0.0.0.0", 11332), ("127.0.0.1", 11334)}, False, True),  # proxy address changed
])
def test_any_changed_bind_socket_restarts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          listening: set, light: bool, restart: bool) -> None:
    box = _box(tmp_path, light)
    monkeypatch.setattr(Rspamd, "running", lambda self: True)
    monkeypatch.setattr(spamfilter, "listening_sockets",
                        lambda ports: {s for s in listening if s[1] in ports})
    # And for the code before this check, which only read the set of listening ports.
    monkeypatch.setattr(system, "listening_tcp_ports", lambda: {p for _, p in listening})
    assert box.needs_restart() is restart


def test_proc_net_tcp_is_read_as_addresses(tmp_path: Path) -> None:
    # Lines as the kernel prints them: 127.0.0.1:11332 and ::1:11332 listening, one connection.
    (tmp_path / "tcp").write_text(
        "  sl  local_address rem_address   st\n"
        "   0: 0100007F:2C44 00000000:0000 0A 0\n"
        "   1: 0100007F:2C44 0100007F:9C40 01 0\n"
        "   2: 00000000:0016 00000000:0000 0A 0\n")
    (tmp_path / "tcp6").write_text(
        "  sl  local_address rem_address   st\n"
        "   0: 00000000000000000000000001000000:2C44 00000000000000000000000000000000:0000 0A 0\n")
    assert listening_sockets({11332}, proc=str(tmp_path)) == {("127.0.0.1", 11332),
                                                               ("::1", 11332)}


def _configdump(good: dict, tmp_path: Path, section: str) -> str:
    """What rspamd itself makes of the rendered files over Debian's configuration."""
    from tests.unit.test_plan import build
    for f in build(good).files:
        dest = tmp_path / f.path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(f.content)
    r = subprocess.run(["rspamadm", f"--var=LOCAL_CONFDIR={tmp_path}/etc/rspamd", "configdump",
                        "-c", "/etc/rspamd/rspamd.conf", section],
                       capture_output=True, text=True, check=True)
    return r.stdout


def test_local_addrs_replace_debians_private_ranges(good: dict, tmp_path: Path) -> None:
    out = _configdump(good, tmp_path, "options")
    addrs = re.search(r"local_addrs \[(.*?)\]", out, re.S)
    assert addrs, out
    found = set(re.findall(r'"([^"]+)"', addrs.group(1)))
    # Only loopback (Debian's CommuniGate include adds 127.2.4.7, inside 127/8).
    assert found and all(ipaddress.ip_network(a).is_loopback for a in found), found


def test_no_authentication_results_on_outgoing_mail(good: dict, tmp_path: Path) -> None:
    out = _configdump(good, tmp_path, "milter_headers")
    assert "authentication-results" in out  # incoming mail keeps it
    assert "authenticated_headers" not in out or not re.search(
        r"authenticated_headers \[[^\]]*authentication-results", out), out
    assert not re.search(r"skip_authenticated = false", out), out


def _rbl_rules(out: str) -> dict[str, bool]:
    """Each rbl rule rspamd ends up with, and whether it is on."""
    rules: dict[str, bool] = {}
    for m in re.finditer(r"^    (\w+) \{\n(.*?)^    \}", out, re.S | re.M):
        rules[m.group(1)] = "enabled = false" not in m.group(2)
    return rules


@pytest.mark.parametrize("chosen", [None, [], ["mailspike"]])
def test_only_the_chosen_blocklists_stay_and_none_is_rspamds(good: dict, tmp_path: Path,
                                                               chosen: list | None) -> None:
    from appliance.features.spam.settings import SPAM_BLOCKLISTS, SpamSection
    if chosen is not None:
        good["spam"] = {"blocklists": chosen}
    rules = _rbl_rules(_configdump(good, tmp_path, "rbl"))
    assert set(rules) >= set(SPAM_BLOCKLISTS), rules  # the table knows every Debian rule
    want = set(SpamSection.blocklists if chosen is None else chosen)
    assert {r for r, on in rules.items() if on} == want
    assert not want & {"RSPAMD_URIBL", "RSPAMD_EMAILBL"}


def test_an_unknown_blocklist_is_refused(good: dict) -> None:
    good["spam"] = {"blocklists": ["uribl.example"]}
    with pytest.raises(Exception, match="spam.blocklists"):
        registry.parse_settings(good)


@pytest.mark.parametrize("module", ["mime_types", "mid", "rbl", "phishing", "whitelist",
                                    "multimap"])
def test_no_module_fetches_from_or_asks_rspamd_com(good: dict, tmp_path: Path,
                                                   module: str) -> None:
    out = _configdump(good, tmp_path, module)
    # A rule that is off queries nothing: drop those blocks before looking.
    live = re.sub(r"^    \w+ \{\n(?:(?!^    \}).)*?enabled = false;.*?^    \}", "", out,
                  flags=re.S | re.M)
    assert "rspamd.com" not in live, live
    assert "phishtank_enabled = true" not in out


def test_rendered_rspamd_configuration_passes_configtest(good: dict, tmp_path: Path) -> None:
    _configdump(good, tmp_path, "multimap")
    maps = (tmp_path / "etc/rspamd/local.d/maps.d/freemail.inc").read_text().splitlines()
    assert "gmail.com" in maps and all(x.startswith("#") or "." in x for x in maps if x)
    r = subprocess.run(["rspamadm", f"--var=LOCAL_CONFDIR={tmp_path}/etc/rspamd", "configtest",
                        "-c", "/etc/rspamd/rspamd.conf"], capture_output=True, text=True)
    assert r.returncode == 0 and "syntax OK" in r.stdout, r.stdout + r.stderr
