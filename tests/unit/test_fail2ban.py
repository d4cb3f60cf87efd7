"""fail2ban filters against sample log lines, the way fail2ban's own suite does it
(fail2ban/tests/samplestestcase.py): each sample line follows a `# failJSON:` comment saying
whether it must match and which address the filter must find. The custom filter is checked as
the agent renders it; the stock filters are checked against our daemons' own log format."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from appliance import defence, facts, plan, settings

DATA = Path(__file__).parent / "data" / "fail2ban"
# Each filter the jails use -> its sample file. A filter without samples fails the test below.
FILTERS = {"appliance-sshd": "appliance-sshd", "postfix[mode=auth]": "postfix-auth", "dovecot": "dovecot"}

pytestmark = pytest.mark.skipif(shutil.which("fail2ban-regex") is None, reason="fail2ban not installed")


def samples(name: str) -> tuple[list[str], list[str]]:
    """(log lines, expected addresses of the matching ones, in order)."""
    lines, hosts = [], []
    expect = None
    for line in (DATA / name).read_text().splitlines():
        if line.startswith("# failJSON:"):
            expect = json.loads(line.split(":", 1)[1])
        elif line and not line.startswith("#"):
            assert expect is not None, f"{name}: sample without failJSON: {line}"
            lines.append(line)
            if expect["match"]:
                hosts.append(expect["host"])
            expect = None
    return lines, hosts


def rendered_filter(tmp_path: Path, good: dict) -> Path:
    s = settings.parse(good)
    f = facts.Facts("mail.example.org", "eth0", ("198.18.0.0/24",), gateway4="198.18.0.1")
    p = plan.build(s, f, plan.environment())
    content = {x.path: x.content for x in p.files}["/etc/fail2ban/filter.d/appliance-sshd.conf"]
    out = tmp_path / "appliance-sshd.conf"
    out.write_bytes(content)
    return out


@pytest.mark.parametrize("filter_name", sorted(FILTERS))
def test_filter_finds_exactly_the_sample_failures(filter_name: str, tmp_path: Path, good: dict) -> None:
    lines, hosts = samples(FILTERS[filter_name])
    log = tmp_path / "sample.log"
    log.write_text("\n".join(lines) + "\n")
    target = str(rendered_filter(tmp_path, good)) if filter_name == "appliance-sshd" else filter_name
    r = subprocess.run(["fail2ban-regex", "-o", "ip", str(log), target], capture_output=True,
                       text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == hosts, r.stdout


def test_every_jail_filter_has_samples(good: dict) -> None:
    s = settings.parse(good)
    p = plan.build(s, facts.Facts("mail.example.org"), plan.environment())
    jails = {x.path: x.content.decode() for x in p.files}["/etc/fail2ban/jail.d/appliance.local"]
    used = {line.split("=", 1)[1].strip() for line in jails.splitlines() if line.startswith("filter =")}
    assert used == set(FILTERS)
    assert all((DATA / f).is_file() for f in FILTERS.values())


def test_jails_never_ban_the_lan_the_router_or_the_public_address(good: dict) -> None:
    good["lan"] = {"public_address": "203.0.113.2"}
    s = settings.parse(good)
    f = facts.Facts("mail.example.org", "eth0", ("192.168.1.0/24", "fd00:1::/64"),
                    gateway4="192.168.1.1", gateway6="fe80::1")
    jail = {x.path: x.content.decode() for x in plan.build(s, f, plan.environment()).files}[
        "/etc/fail2ban/jail.d/appliance.local"]
    ignore = next(line for line in jail.splitlines() if line.startswith("ignoreip")).split("=")[1].split()
    assert ignore == ["127.0.0.0/8", "192.168.1.0/24", "203.0.113.2/32", "::1/128", "fd00:1::/64",
                      "fe80::/10"]
    assert "bantime.increment = true" in jail and "bantime = -1" not in jail
    assert "banaction = nftables[type=allports]" in jail
    assert defence.fail2ban(s, f)  # on by default


def test_fail2ban_can_be_turned_off(good: dict) -> None:
    good["fail2ban"] = {"enabled": False}
    s = settings.parse(good)
    assert defence.fail2ban(s, facts.Facts("mail.example.org")) == []
