"""[relay]: a smarthost, or a WireGuard tunnel to the user's own relay VPS."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from appliance.core import fields
from appliance.core.settings import Collector, Section, is_ip, valid_domain


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


def _endpoint(v: Any) -> bool:
    host, _, port = v.rpartition(":") if isinstance(v, str) else ("", "", "")
    return (valid_domain(host) or is_ip(host)) and port.isdigit()


_WG_KEY = re.compile(r"^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$")
_KIND = fields.Field("kind", None, '`"smarthost"` (a submission relay) or `"wireguard"` (your own VPS)',
                     lambda v: True, "", "", required=True)
SMARTHOST_FIELDS = (
    _KIND,
    fields.Field("host", None, "the smarthost's name or address",
                 lambda v: isinstance(v, str) and (valid_domain(v) or is_ip(v)), "is not a host name",
                 'use the smarthost\'s name, e.g. "smtp.example.net"', required=True),
    fields.choice("port", 587, (465, 587), "587 (STARTTLS, required) or 465 (implicit TLS)",
                  "is not a submission port",
                  "use 587 (STARTTLS, required) or 465 (implicit TLS); port 25 offers no authentication"),
    fields.Field("username", "", "the login the smarthost gave you",
                 lambda v: isinstance(v, str) and bool(v) and not any(ch.isspace() for ch in v),
                 "is not a user name", "use the login your smarthost gave you", required=True),
    fields.Field("password_file", "", "a root-only file holding the password alone",
                 lambda v: isinstance(v, str) and v.startswith("/"), "is not an absolute path",
                 'put the password alone in a root-only file, e.g. "/etc/appliance/relay.password"',
                 required=True),
    fields.path("tls_ca_file", "the CA the smarthost's certificate is checked against (default: the "
                "system's CA bundle)", "name a PEM file, or remove it"),
)
TUNNEL_FIELDS = (
    _KIND,
    fields.Field("endpoint", "", "host:port of your VPS's WireGuard", _endpoint, "is not host:port",
                 'use your VPS\'s public address and WireGuard port, e.g. "198.51.100.7:51820"',
                 required=True),
    fields.Field("vps_public_key", "", "the VPS's WireGuard public key",
                 lambda v: isinstance(v, str) and bool(_WG_KEY.match(v)), "is not a WireGuard public key",
                 "copy the key the relay playbook printed (44 characters ending in =)", required=True),
    fields.Field("private_key_file", "/etc/appliance/wireguard.key", "the box's WireGuard private key",
                 lambda v: isinstance(v, str) and v.startswith("/"), "is not an absolute path",
                 'use "/etc/appliance/wireguard.key"'),
    fields.Field("box_address", "10.77.0.2/30", "the box's address in the tunnel", lambda v: True, "", ""),
    fields.Field("vps_address", "10.77.0.1", "the VPS's address in the tunnel", lambda v: True, "", ""),
)


def _parse_relay(raw: Any, c: Collector) -> RelaySection | TunnelSection | None:
    kind = raw.get("kind") if isinstance(raw, dict) else None
    if kind == "wireguard":
        return _parse_tunnel(raw, c)
    if not isinstance(raw, dict):
        c.add("relay", raw, "is not a table", "write it as a [relay] section or remove it")
        return None
    if not raw:
        return None
    if kind != "smarthost":
        fields.unknown_keys(raw, "relay", SMARTHOST_FIELDS, c)
        c.add("relay.kind", kind, "is not a relay kind",
              'use kind = "smarthost" (a submission relay) or "wireguard" (your own VPS)')
        return None
    v = fields.parse_table(raw, "relay", SMARTHOST_FIELDS, c)
    return RelaySection("smarthost", v["host"] or "", v["port"], v["username"], v["password_file"],
                        v["tls_ca_file"])


def _parse_tunnel(raw: dict[str, Any], c: Collector) -> TunnelSection | None:
    v = fields.parse_table(raw, "relay", TUNNEL_FIELDS, c)
    box, vps = v["box_address"], v["vps_address"]
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
    return TunnelSection("wireguard", v["endpoint"], v["vps_public_key"], v["private_key_file"],
                         str(box_if), str(vps_ip))


SECTION = Section("relay", ("relay",), lambda data, c: _parse_relay(data.get("relay", {}), c),
                  fields={"relay (smarthost)": SMARTHOST_FIELDS, "relay (wireguard)": TUNNEL_FIELDS})
