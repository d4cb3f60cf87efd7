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

from appliance import registry
from appliance.core import facts, plan
from appliance.features.fail2ban import feature as fail2ban_feature

DATA = Path(__file__).parent / "data" / "fail2ban"
# Each filter the jails use -> its sample file. A filter without samples fails the test below.
FILTERS = {"appliance-sshd": "appliance-sshd", "appliance-postfix": "appliance-postfix", "dovecot": "dovecot",
           "appliance-console": "appliance-console"}

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


def rendered_files(good: dict) -> dict[str, bytes]:
    s = registry.parse_settings(good)
    f = facts.Facts("mail.example.org", "eth0", ("198.18.0.0/24",), gateway4="198.18.0.1")
    return {x.path: x.content for x in registry.build_plan(s, f, plan.environment()).files}


def rendered_config(tmp_path: Path, good: dict) -> Path:
    """Debian's /etc/fail2ban with the agent's files in it, as the box has it: our filters
    include Debian's (postfix.conf, common.conf)."""
    conf = tmp_path / "fail2ban"
    shutil.copytree("/etc/fail2ban", conf)
    for path, content in rendered_files(good).items():
        if path.startswith("/etc/fail2ban/"):
            target = conf / path.removeprefix("/etc/fail2ban/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
    return conf


def jail_filters(good: dict) -> dict[str, str]:
    """jail -> its `filter =` value, from the rendered jail.d/appliance.local."""
    out, jail = {}, ""
    for line in rendered_files(good)["/etc/fail2ban/jail.d/appliance.local"].decode().splitlines():
        if line.startswith("["):
            jail = line.strip("[]")
        elif line.startswith("filter ="):
            out[jail] = line.split("=", 1)[1].strip()
    return out


def found(conf: Path, tmp_path: Path, lines: list[str], filter_name: str) -> list[str]:
    """The addresses fail2ban's own fail2ban-regex finds in `lines` with `filter_name`."""
    log = tmp_path / "sample.log"
    log.write_text("\n".join(lines) + "\n")
    r = subprocess.run(["fail2ban-regex", "-c", str(conf), "-o", "ip", str(log), filter_name],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout.split()


@pytest.mark.parametrize("filter_name", sorted(FILTERS))
def test_filter_finds_exactly_the_sample_failures(filter_name: str, tmp_path: Path, good: dict) -> None:
    lines, hosts = samples(FILTERS[filter_name])
    assert found(rendered_config(tmp_path, good), tmp_path, lines, filter_name) == hosts


def test_postfix_jail_counts_every_refused_smtp_guess_454_included(tmp_path: Path, good: dict) -> None:
    """A burst recorded in the lab: 5 guesses refused, 2 of them with "454 ... Connection lost
    to authentication server" (Postfix stopped waiting for Dovecot). The [postfix] jail counts
    all 5, so the ban comes after maxretry guesses, however slow Dovecot was."""
    lines, _ = samples("appliance-postfix")
    burst = [line for line in lines if "[203.0.113.5]" in line]
    refused = [line for line in burst if "authentication failed" in line]
    assert len(refused) == 5 and sum("Connection lost" in line for line in refused) == 2
    jail_filter = jail_filters(good)["postfix"]
    assert found(rendered_config(tmp_path, good), tmp_path, burst, jail_filter) == ["203.0.113.5"] * 5


def test_every_jail_filter_has_samples(good: dict) -> None:
    assert set(jail_filters(good).values()) == set(FILTERS)
    assert all((DATA / f).is_file() for f in FILTERS.values())


def test_jails_never_ban_the_lan_the_router_or_the_public_address(good: dict) -> None:
    good["lan"] = {"public_address": "203.0.113.2"}
    s = registry.parse_settings(good)
    f = facts.Facts("mail.example.org", "eth0", ("192.168.1.0/24", "fd00:1::/64"),
                    gateway4="192.168.1.1", gateway6="fe80::1")
    jail = {x.path: x.content.decode() for x in registry.build_plan(s, f, plan.environment()).files}[
        "/etc/fail2ban/jail.d/appliance.local"]
    ignore = next(line for line in jail.splitlines() if line.startswith("ignoreip")).split("=")[1].split()
    assert ignore == ["127.0.0.0/8", "192.168.1.0/24", "203.0.113.2/32", "::1/128", "fd00:1::/64",
                      "fe80::/10"]
    assert "bantime.increment = true" in jail and "bantime = -1" not in jail
    assert "banaction = nftables[type=allports]" in jail
    assert fail2ban_feature.files(plan.Inputs(s, f))  # on by default


def test_fail2ban_can_be_turned_off(good: dict) -> None:
    good["fail2ban"] = {"enabled": False}
    s = registry.parse_settings(good)
    assert fail2ban_feature.files(plan.Inputs(s, facts.Facts("mail.example.org"))) == []


def test_the_jails_read_the_log_sshd_writes() -> None:
    from appliance.features.fail2ban import fail2ban
    from appliance.features.ssh import ssh

    assert fail2ban.SSHD_LOG == ssh.SSHD_LOG
    assert ssh.SSHD_LOG in fail2ban.Fail2ban.logs


def test_the_console_jail_reads_the_log_the_console_agent_writes() -> None:
    from appliance.console import agent
    from appliance.features.fail2ban import fail2ban

    assert fail2ban.CONSOLE_LOG == agent.LOG
    assert agent.LOG in fail2ban.Fail2ban.logs
