"""[upnp] and [reachability]: port mappings on the router, and how reachability is probed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from appliance.core import fields
from appliance.core.settings import is_ip, valid_domain


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


def _host(h: Any) -> bool:
    name, _, port = h.partition(":") if isinstance(h, str) else ("", "", "")
    return isinstance(h, str) and (valid_domain(name) or is_ip(name)) and (not port or port.isdigit())


UPNP_FIELDS = (
    fields.flag("enabled", True, "ask the router (UPnP IGD) to forward the mail ports to the box"),
    fields.whole("lease_seconds", 3600, 120, 86400, "how long a mapping lasts; renewed at half of it",
                 "is not a lease in seconds",
                 "use 120 to 86400; the timer renews at half the lease (default 3600)"),
    fields.url("igd_url", "the router's UPnP description URL, when discovery does not find it",
               "is not an http URL",
               'use the router\'s rootDesc URL, e.g. "http://192.168.1.1:5000/rootDesc.xml", or remove it'),
)
REACHABILITY_FIELDS = (
    fields.names("outbound_probe_hosts", (), "mail servers to test outbound port 25 against; none by "
                 "default (no traffic you did not ask for)", "is not a list", 'write ["mx.example.net"]',
                 item=fields.Item(_host, "is not a host or host:port",
                                  'use a mail server you may test against, e.g. "mx.example.net" or '
                                  '"192.0.2.25:25"')),
    fields.url("probe_url", "your own external probe (`appliance probe-server` on your VPS)",
               "is not an http(s) URL",
               "use the URL of your own probe (see README, Reachability), or remove it"),
    fields.path("probe_token_file", "the file holding the probe's token",
                'use e.g. "/etc/appliance/probe.token"'),
)
SECTION_UPNP = fields.section("upnp", UpnpSection, UPNP_FIELDS)
SECTION_REACHABILITY = fields.section("reachability", ReachabilitySection, REACHABILITY_FIELDS)
