"""[relay]: a smarthost, or a WireGuard tunnel to the user's own relay VPS."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from appliance.core.settings import Collector, Section, is_ip, table, valid_domain


@dataclass(frozen=True)
class RelaySection:
    """Outbound mail through a smarthost: that party sees every message the box sends."""

    kind: str  # "smarthost"
    host: str
    port: int = 587  # 587: STARTTLS, required; 465: implicit TLS
    username: str = ""
    password_file: str = ""
    tls_ca_file: str | None = None  # default: the system's CA bundle


@dataclass(frozen=True)
class TunnelSection:
    """The user's own relay VPS: a WireGuard tunnel the box dials out to. The VPS forwards the
    mail ports to the box (TLS ends on the box) and carries its outbound port 25."""

    kind: str  # "wireguard"
    endpoint: str  # host:port of the VPS
    vps_public_key: str
    private_key_file: str
    box_address: str  # e.g. 10.77.0.2/30
    vps_address: str  # e.g. 10.77.0.1


def _parse_relay(raw: Any, c: Collector) -> RelaySection | TunnelSection | None:
    kind = raw.get("kind") if isinstance(raw, dict) else None
    if kind == "wireguard":
        return _parse_tunnel(raw, c)
    t = table(raw, "relay", {"kind", "host", "port", "username", "password_file", "tls_ca_file"}, c)
    if not t:
        return None
    if kind != "smarthost":
        c.add("relay.kind", kind, "is not a relay kind",
              'use kind = "smarthost" (a submission relay) or "wireguard" (your own VPS)')
        return None
    host = t.get("host")
    if not isinstance(host, str) or not (valid_domain(host) or is_ip(host)):
        c.add("relay.host", host, "is not a host name", 'use the smarthost\'s name, e.g. "smtp.example.net"')
        host = ""
    port = t.get("port", 587)
    if port not in (465, 587):
        c.add("relay.port", port, "is not a submission port",
              "use 587 (STARTTLS, required) or 465 (implicit TLS); port 25 offers no authentication")
        port = 587
    user = t.get("username", "")
    if not isinstance(user, str) or not user or any(ch.isspace() for ch in user):
        c.add("relay.username", user, "is not a user name", "use the login your smarthost gave you")
        user = ""
    pw = t.get("password_file", "")
    if not isinstance(pw, str) or not pw.startswith("/"):
        c.add("relay.password_file", pw, "is not an absolute path",
              'put the password alone in a root-only file, e.g. "/etc/appliance/relay.password"')
        pw = ""
    ca = t.get("tls_ca_file")
    if ca is not None and (not isinstance(ca, str) or not ca.startswith("/")):
        c.add("relay.tls_ca_file", ca, "is not an absolute path", "name a PEM file, or remove it")
        ca = None
    return RelaySection("smarthost", host, port, user, pw, ca)


_WG_KEY = re.compile(r"^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$")


def _parse_tunnel(raw: dict[str, Any], c: Collector) -> TunnelSection | None:
    t = table(raw, "relay", {"kind", "endpoint", "vps_public_key", "private_key_file",
                              "box_address", "vps_address"}, c)
    endpoint = t.get("endpoint", "")
    host, _, port = endpoint.rpartition(":") if isinstance(endpoint, str) else ("", "", "")
    if not (valid_domain(host) or is_ip(host)) or not port.isdigit():
        c.add("relay.endpoint", endpoint, "is not host:port",
              'use your VPS\'s public address and WireGuard port, e.g. "198.51.100.7:51820"')
    key = t.get("vps_public_key", "")
    if not isinstance(key, str) or not _WG_KEY.match(key):
        c.add("relay.vps_public_key", key, "is not a WireGuard public key",
              "copy the key the relay playbook printed (44 characters ending in =)")
    pk = t.get("private_key_file", "/etc/appliance/wireguard.key")
    if not isinstance(pk, str) or not pk.startswith("/"):
        c.add("relay.private_key_file", pk, "is not an absolute path", 'use "/etc/appliance/wireguard.key"')
    box = t.get("box_address", "10.77.0.2/30")
    vps = t.get("vps_address", "10.77.0.1")
    try:
        box_if = ipaddress.ip_interface(box)
        vps_ip = ipaddress.ip_address(vps)
        if vps_ip not in box_if.network or vps_ip == box_if.ip:
            raise ValueError
    except (ValueError, TypeError):
        c.add("relay.box_address", f"{box} / {vps}", "are not two addresses of one small network",
              'use e.g. box_address = "10.77.0.2/30" and vps_address = "10.77.0.1"')
        return None
    if c.problems:
        return None
    return TunnelSection("wireguard", endpoint, key, pk, str(box_if), str(vps_ip))


SECTION = Section("relay", ("relay",), lambda data, c: _parse_relay(data.get("relay", {}), c))
