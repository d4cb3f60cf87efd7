"""[dns]: the public addresses to publish and where DNS updates go."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from appliance.core.settings import Collector, Section, is_ip, table


@dataclass(frozen=True)
class DnsSection:
    # The public addresses to publish, when the router cannot tell (no UPnP) or to override it.
    public_ipv4: str | None = None
    public_ipv6: str | None = None
    # `appliance dns --push`: RFC 2136 updates, signed with TSIG, to a DNS server the user runs.
    update_server: str | None = None
    update_key_name: str = "appliance-update"
    update_key_file: str | None = None  # the base64 HMAC-SHA256 secret alone


def _parse_dns(raw: Any, c: Collector) -> DnsSection:
    t = table(raw, "dns", {"public_ipv4", "public_ipv6", "update_server", "update_key_name",
                            "update_key_file"}, c)
    got: dict[str, str | None] = {}
    for key, version in (("public_ipv4", 4), ("public_ipv6", 6)):
        v = t.get(key)
        ok = isinstance(v, str) and is_ip(v) and ipaddress.ip_address(v).version == version
        if v is not None and not ok:
            c.add(f"dns.{key}", v, f"is not an IPv{version} address",
                  "give your public address, or leave it out to ask the router")
            v = None
        got[key] = v
    server = t.get("update_server")
    if server is not None and not (isinstance(server, str) and is_ip(server)):
        c.add("dns.update_server", server, "is not an IP address",
              "give the address of your DNS server that takes RFC 2136 updates")
        server = None
    key_name = t.get("update_key_name", "appliance-update")
    if not isinstance(key_name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]{0,62}", key_name):
        c.add("dns.update_key_name", key_name, "is not a TSIG key name",
              'use the name your DNS server knows the key by, e.g. "appliance-update"')
        key_name = "appliance-update"
    key_file = t.get("update_key_file")
    if key_file is not None and not (isinstance(key_file, str) and key_file.startswith("/")):
        c.add("dns.update_key_file", key_file, "is not an absolute path",
              "give the file holding the base64 TSIG secret, e.g. /etc/appliance/dns-update.key")
        key_file = None
    if (server is None) != (key_file is None):
        c.add("dns.update_server", server, "needs update_key_file too (and the other way round)",
              "set both, or neither")
    return DnsSection(got["public_ipv4"], got["public_ipv6"], server, key_name, key_file)


SECTION = Section("dns", ("dns",), lambda data, c: _parse_dns(data.get("dns", {}), c))
