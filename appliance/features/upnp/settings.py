"""[upnp] and [reachability]: port mappings on the router, and how reachability is probed."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from appliance.core.settings import Collector, Section, is_ip, table, valid_domain


@dataclass(frozen=True)
class UpnpSection:
    enabled: bool = True
    lease_seconds: int = 3600
    igd_url: str | None = None


@dataclass(frozen=True)
class ReachabilitySection:
    # Hosts (host or host:port) to test outbound SMTP against; none by default: no traffic the
    # user did not ask for.
    outbound_probe_hosts: tuple[str, ...] = ()
    # The user's own external probe (e.g. `appliance probe-server` on their relay VPS).
    probe_url: str | None = None
    probe_token_file: str | None = None


def _parse_upnp(raw: Any, c: Collector) -> UpnpSection:
    t = table(raw, "upnp", {"enabled", "lease_seconds", "igd_url"}, c)
    enabled = t.get("enabled", True)
    if not isinstance(enabled, bool):
        c.add("upnp.enabled", enabled, "is not true or false", "write enabled = true or enabled = false")
        enabled = True
    lease = t.get("lease_seconds", 3600)
    if isinstance(lease, bool) or not isinstance(lease, int) or not 120 <= lease <= 86400:
        c.add("upnp.lease_seconds", lease, "is not a lease in seconds",
              "use 120 to 86400; the timer renews at half the lease (default 3600)")
        lease = 3600
    url = t.get("igd_url")
    if url is not None and (not isinstance(url, str) or not re.match(r"^https?://[^\s]+$", url)):
        c.add("upnp.igd_url", url, "is not an http URL",
              'use the router\'s rootDesc URL, e.g. "http://192.168.1.1:5000/rootDesc.xml", or remove it')
        url = None
    return UpnpSection(enabled, lease, url or None)


def _parse_reachability(raw: Any, c: Collector) -> ReachabilitySection:
    t = table(raw, "reachability", {"outbound_probe_hosts", "probe_url", "probe_token_file"}, c)
    hosts = t.get("outbound_probe_hosts", [])
    good: list[str] = []
    if not isinstance(hosts, list):
        c.add("reachability.outbound_probe_hosts", hosts, "is not a list", 'write ["mx.example.net"]')
        hosts = []
    for i, h in enumerate(hosts):
        name, _, port = h.partition(":") if isinstance(h, str) else ("", "", "")
        bad_port = bool(port) and not port.isdigit()
        if not isinstance(h, str) or not (valid_domain(name) or is_ip(name)) or bad_port:
            c.add(f"reachability.outbound_probe_hosts[{i}]", h, "is not a host or host:port",
                  'use a mail server you may test against, e.g. "mx.example.net" or "192.0.2.25:25"')
        else:
            good.append(h)
    url = t.get("probe_url")
    if url is not None and (not isinstance(url, str) or not re.match(r"^https?://[^\s]+$", url)):
        c.add("reachability.probe_url", url, "is not an http(s) URL",
              "use the URL of your own probe (see README, Reachability), or remove it")
        url = None
    token = t.get("probe_token_file")
    if token is not None and (not isinstance(token, str) or not token.startswith("/")):
        c.add("reachability.probe_token_file", token, "is not an absolute path",
              'use e.g. "/etc/appliance/probe.token"')
        token = None
    return ReachabilitySection(tuple(good), url or None, token)


SECTION_UPNP = Section("upnp", ("upnp",), lambda data, c: _parse_upnp(data.get("upnp", {}), c))
SECTION_REACHABILITY = Section("reachability", ("reachability",),
                               lambda data, c: _parse_reachability(data.get("reachability", {}), c))
