"""The appliance firewall as rendered from settings and facts; checked by the real `nft -c`
when this runs as root (it needs CAP_NET_ADMIN, in a throw-away network namespace)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from appliance import registry
from appliance.core import facts, plan
from appliance.core.errors import SettingsError
from appliance.features.firewall import firewall

HOME = facts.Facts("mail.example.org", "eth0", ("192.168.1.0/24", "fd00:1::/64"),
                   ("192.168.1.10", "fd00:1::10"), "192.168.1.1", "fe80::1")


def rules(good: dict, f: facts.Facts = HOME) -> str:
    p = registry.build_plan(registry.parse_settings(good), f, plan.environment())
    return {x.path: x.content.decode() for x in p.files}[firewall.RULES_PATH]


def test_lan_includes_link_local_router_and_extra_prefixes_merged(good: dict) -> None:
    good["lan"] = {"also_trusted": ["192.168.1.128/25", "10.8.0.0/24"]}
    v4, v6 = firewall.lan_networks(registry.parse_settings(good), HOME)
    assert v4 == ["10.8.0.0/24", "192.168.1.0/24"]  # the /25 and the router are inside the /24
    assert v6 == ["fd00:1::/64", "fe80::/10"]


def test_wan_gets_only_the_mail_ports_and_web_only_when_asked(good: dict) -> None:
    text = rules(good)
    assert "tcp dport { 25, 465, 587, 993, 4190 } accept" in text
    assert "policy drop" in text and "22" not in text.split("The internet")[1]
    assert "ip saddr @lan4 accept" in text and "ip6 saddr @lan6 accept" in text
    assert "nd-neighbor-solicit" in text  # IPv6 needs neighbour discovery
    good["firewall"] = {"web": True}
    assert "tcp dport { 25, 465, 587, 993, 4190, 80, 443 } accept" in rules(good)


def test_public_address_is_not_trusted_by_the_firewall(good: dict) -> None:
    good["lan"] = {"public_address": "203.0.113.2"}
    assert "203.0.113.2" not in rules(good)


def test_firewall_can_be_turned_off(good: dict) -> None:
    good["firewall"] = {"enabled": False}
    p = registry.build_plan(registry.parse_settings(good), HOME, plan.environment())
    assert firewall.RULES_PATH not in {x.path for x in p.files}


def test_bad_defence_settings_name_field_value_and_fix(good: dict) -> None:
    good["lan"] = {"also_trusted": ["nonsense"], "public_address": "256.1.1.1"}
    good["fail2ban"] = {"bantime": 0, "bantime_max": "1d", "typo": 1}
    good["ssh"] = {"authorized_keys": ["ssh-ed25519 not base64!"]}
    good["firewall"] = {"web": "yes"}
    with pytest.raises(SettingsError) as e:
        registry.parse_settings(good)
    text = "\n".join(e.value.problems)
    for expect in ('lan.also_trusted[0]: "nonsense" is not an IP network',
                   'lan.public_address: "256.1.1.1" is not an IP address',
                   "fail2ban.bantime: 0 is out of range", 'fail2ban.bantime_max: "1d" is out of range',
                   'fail2ban.typo: "typo" is not a known [fail2ban] setting',
                   "ssh.authorized_keys[0]:", "is not an OpenSSH public key line",
                   'firewall.web: "yes" is not true or false'):
        assert expect in text, text


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft"), reason="nft -c needs root")
def test_rendered_rules_pass_nft_check_and_a_broken_rule_does_not(good: dict, tmp_path: Path) -> None:
    f = tmp_path / "appliance.nft"
    f.write_text(rules(good))
    ok = subprocess.run(["unshare", "-n", "nft", "-c", "-f", str(f)], capture_output=True, text=True,
                        check=False)
    assert ok.returncode == 0, ok.stderr
    f.write_text(rules(good).replace("tcp dport {", "tcp dport 70000 accept\n    tcp dport {", 1))
    bad = subprocess.run(["unshare", "-n", "nft", "-c", "-f", str(f)], capture_output=True, text=True,
                         check=False)
    assert bad.returncode != 0 and "70000" in bad.stderr
