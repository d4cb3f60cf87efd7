"""Outbound mail through a smarthost, or the whole mail path through a WireGuard tunnel to the
user's own relay VPS."""

from __future__ import annotations

from typing import Any

from appliance.core import system
from appliance.core.feature import Feature
from appliance.core.services import Service
from appliance.core.settings import Settings
from appliance.features.relay import cli, tunnel
from appliance.features.relay.service import WgRelay
from appliance.features.relay.settings import SECTION


def context(s: Settings) -> dict[str, Any]:
    smarthost = tunnel.smarthost(s)
    return {"relay": smarthost,
            "relay_ca": (smarthost.tls_ca_file if smarthost and smarthost.tls_ca_file
                         else "/etc/ssl/certs/ca-certificates.crt")}


def known(root: system.Root, s: Settings) -> dict[str, str | None]:
    t = tunnel.tunnel(s)  # the internet reaches the box at the VPS the tunnel ends on
    return {"tunnel_ipv4": t.endpoint.rpartition(":")[0] if t is not None else None}


def services(root: system.Root) -> list[Service]:
    return [WgRelay(root)]


def secrets(root: system.Root, s: Settings) -> dict[str, str]:
    password = tunnel.read_password(s)
    return {"relay_password": password} if password is not None else {}


FEATURE = Feature("relay", "README.md", sections=(SECTION,), files=tunnel.relay_feature,
                  context=context, services=services, commands=cli.register, secrets=secrets,
                  notice=tunnel.notice, unlocked=frozenset({"relay"}), known=known)
