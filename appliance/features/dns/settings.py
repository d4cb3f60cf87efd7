"""[dns]: the public addresses to publish and where DNS updates go."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from appliance.core import fields
from appliance.core.settings import Collector


@dataclass(frozen=True)
class DnsSection:
    # The public addresses to publish, when the router cannot tell (no UPnP) or to override it.
    public_ipv4: str | None = None
    public_ipv6: str | None = None
    # `appliance dns --push`: RFC 2136 updates, signed with TSIG, to a DNS server the user runs.
    update_server: str | None = None
    update_key_name: str = "appliance-update"
    update_key_file: str | None = None  # the base64 HMAC-SHA256 secret alone


def _both_or_neither(v: dict[str, Any], c: Collector) -> None:
    if (v["update_server"] is None) != (v["update_key_file"] is None):
        c.add("dns.update_server", v["update_server"], "needs update_key_file too (and the other way round)",
              "set both, or neither")


_KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,62}")

FIELDS = (
    fields.ip("public_ipv4", "the public IPv4 address to publish, when the router cannot tell",
              "give your public address, or leave it out to ask the router", version=4),
    fields.ip("public_ipv6", "the public IPv6 address to publish",
              "give your public address, or leave it out to ask the router", version=6),
    fields.ip("update_server", "your DNS server that takes RFC 2136 updates (`appliance dns --push`)",
              "give the address of your DNS server that takes RFC 2136 updates"),
    fields.Field("update_key_name", "appliance-update", "the TSIG key's name on that server",
                 lambda v: isinstance(v, str) and _KEY_NAME.fullmatch(v) is not None,
                 "is not a TSIG key name",
                 'use the name your DNS server knows the key by, e.g. "appliance-update"'),
    fields.path("update_key_file", "the file holding the base64 TSIG secret alone",
                "give the file holding the base64 TSIG secret, e.g. /etc/appliance/dns-update.key"),
)
SECTION = fields.section("dns", DnsSection, FIELDS, cross=_both_or_neither)
