"""The box's self-defence, four features: the firewall (nftables, tuned to the detected LAN),
fail2ban, SSH (keys only), and the outbound limits (the policy service)."""

from __future__ import annotations

from appliance.core import system
from appliance.core.feature import Feature
from appliance.core.services import Service
from appliance.features.defence import checks, fail2ban, plan
from appliance.features.defence.firewall import Nftables
from appliance.features.defence.limits_service import Policyd
from appliance.features.defence.settings import SECTION
from appliance.features.defence.ssh import Sshd


def _firewall(root: system.Root) -> list[Service]:
    return [Nftables(root)]


def _ssh(root: system.Root) -> list[Service]:
    return [Sshd(root)]


def _fail2ban(root: system.Root) -> list[Service]:
    return [fail2ban.Fail2ban(root)]


def _limits(root: system.Root) -> list[Service]:
    return [Policyd(root)]


# [firewall], [fail2ban], [ssh] and [limits] are parsed as one section (they share the LAN
# they trust); the firewall feature owns it.
FIREWALL = Feature("firewall", "docs/lan-defence.md", sections=(SECTION,), files=plan.firewall,
                   services=_firewall)
SSH = Feature("ssh", "docs/lan-defence.md", files=plan.ssh, services=_ssh)
FAIL2BAN = Feature("fail2ban", "docs/lan-defence.md", files=plan.fail2ban, services=_fail2ban,
                   commands=fail2ban.register, unlocked=frozenset({"bans"}),
                   checks=(checks.check_fail2ban,))
LIMITS = Feature("limits", "docs/lan-defence.md", files=plan.limits, services=_limits)
