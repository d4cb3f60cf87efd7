"""Settings of the box's self-defence (issue #8): firewall, fail2ban, SSH keys, outbound limits.

Stdlib only, like `settings`: `appliance check` must work anywhere. `parse` receives the whole
TOML document and the settings collector's `add(where, value, why, fix)`, so every problem is
reported with the others, naming the field, the bad value and the fix.

    [lan]                      # besides interface/prefixes (settings.py)
    also_trusted = ["198.18.5.0/24"]   # added to the detected LAN: never banned, may SSH
    public_address = "203.0.113.2"     # your router's public IPv4, when UPnP cannot tell

    [firewall]
    enabled = true
    web = false                # open 80/443 from the internet (certificates, web page)

    [fail2ban]
    enabled = true
    maxretry = 5               # failures within findtime that ban
    findtime = 600             # seconds
    bantime = 600              # seconds, first ban; doubles for each repeat offence
    bantime_max = 604800       # seconds; a ban is never permanent

    [ssh]
    authorized_keys = ["ssh-ed25519 AAAA... you@laptop"]

    [limits]                   # the outbound kill-switch, per authenticated user
    messages_per_hour = 100
    messages_per_day = 500
    recipients_per_message = 50
    global_per_hour = 1000     # all users together
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from appliance.core import fields
from appliance.core.settings import Collector, Section

Add = Callable[[str, Any, str, str], None]

KNOWN_LAN_EXTRA = {"also_trusted", "public_address"}
SECTIONS = ("firewall", "fail2ban", "ssh", "limits")

_KEY = re.compile(
    r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|"
    r"sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/]+={0,3}( [^\n\r]*)?$"
)


@dataclass(frozen=True)
class Limits:
    messages_per_hour: int = 100
    messages_per_day: int = 500
    recipients_per_message: int = 50
    global_per_hour: int = 1000


@dataclass(frozen=True)
class Defence:
    firewall: bool = True
    web: bool = False
    fail2ban: bool = True
    maxretry: int = 5
    findtime: int = 600
    bantime: int = 600
    bantime_max: int = 7 * 86400
    authorized_keys: tuple[str, ...] = ()
    limits: Limits = Limits()
    also_trusted: tuple[str, ...] = ()
    public_address: str | None = None


def _key_blob_ok(line: str) -> bool:
    """The base64 part decodes to a blob that starts with the key type it claims (RFC 4253 6.6)."""
    kind, blob64 = line.split()[:2]
    try:
        blob = base64.b64decode(blob64, validate=True)
    except (ValueError, binascii.Error):
        return False
    n = int.from_bytes(blob[:4], "big") if len(blob) > 4 else -1
    return blob[4:4 + n] == kind.encode()


def _key_ok(k: Any) -> bool:
    return isinstance(k, str) and bool(_KEY.match(k.strip())) and _key_blob_ok(k.strip())


def _seconds(key: str, default: int, hi: int, doc: str) -> fields.Field:
    return fields.whole(key, default, 1, hi, doc,
                        fix=f"use a whole number of seconds between 1 and {hi}, e.g. {default}")


TABLES: dict[str, tuple[fields.Field, ...]] = {
    "firewall": (
        fields.flag("enabled", True, "nftables rules: mail ports from anywhere, the rest from the LAN only"),
        fields.flag("web", False, "also open 80/443 to the internet (certificates, MTA-STS)"),
    ),
    "fail2ban": (
        fields.flag("enabled", True, "ban addresses that keep guessing passwords"),
        fields.whole("maxretry", 5, 1, 100, "failed logins before a ban"),
        _seconds("findtime", 600, 7 * 86400, "the window the failures are counted in, seconds"),
        _seconds("bantime", 600, 30 * 86400, "the first ban, seconds; each repeat doubles it"),
        _seconds("bantime_max", 7 * 86400, 365 * 86400, "the longest ban, seconds"),
    ),
    "ssh": (
        fields.Field("authorized_keys", (), "public keys that may log in as root (none: SSH stays off)",
                     lambda v: isinstance(v, list), "is not a list",
                     'write it as ["ssh-ed25519 AAAA... you@laptop"]',
                     item=fields.Item(_key_ok, "is not an OpenSSH public key line",
                                      "paste one line of your ~/.ssh/id_ed25519.pub (type, base64 key, "
                                      "comment)"),
                     convert=lambda v: tuple(k.strip() for k in v)),
    ),
    "limits": (
        fields.whole("messages_per_hour", 100, 1, 100000, "messages one user may send in an hour"),
        fields.whole("messages_per_day", 500, 1, 1000000, "messages one user may send in a day"),
        fields.whole("recipients_per_message", 50, 1, 1000, "recipients of one message"),
        fields.whole("global_per_hour", 1000, 1, 1000000, "messages the whole box may send in an hour"),
    ),
}


def parse(data: dict[str, Any], c: Collector) -> Defence:
    add = c.add
    fw, f2b, ssh, lim = (fields.parse_table(data.get(name, {}), name, TABLES[name], c)
                         for name in SECTIONS)
    bantime, bantime_max = f2b["bantime"], f2b["bantime_max"]
    if bantime_max < bantime:
        add("fail2ban.bantime_max", bantime_max, f"is shorter than bantime ({bantime})",
            "make bantime_max at least as long as bantime")
        bantime_max = bantime
    lan = data.get("lan", {}) if isinstance(data.get("lan", {}), dict) else {}

    trusted: list[str] = []
    raw_trusted = lan.get("also_trusted", [])
    if not isinstance(raw_trusted, list):
        add("lan.also_trusted", raw_trusted, "is not a list", 'write it as ["192.168.5.0/24"]')
        raw_trusted = []
    for i, p in enumerate(raw_trusted):
        try:
            net = ipaddress.ip_network(p, strict=False) if isinstance(p, str) else None
        except ValueError:
            net = None
        if net is None or net.prefixlen == 0:
            add(f"lan.also_trusted[{i}]", p, "is not an IP network",
                'use CIDR form, e.g. "192.168.5.0/24" or "fd00:5::/64"')
        else:
            trusted.append(str(net))

    public = lan.get("public_address")
    if public is not None:
        try:
            public = str(ipaddress.ip_address(public)) if isinstance(public, str) else None
        except ValueError:
            public = None
        if public is None:
            add("lan.public_address", lan.get("public_address"), "is not an IP address",
                'use your router\'s public address, e.g. "203.0.113.2", or remove it')

    return Defence(
        firewall=fw["enabled"], web=fw["web"], fail2ban=f2b["enabled"], maxretry=f2b["maxretry"],
        findtime=f2b["findtime"], bantime=bantime, bantime_max=bantime_max,
        authorized_keys=ssh["authorized_keys"], limits=Limits(**lim),
        also_trusted=tuple(trusted), public_address=public,
    )


# The defence is one section of four tables; the LAN it trusts may be widened in [lan].
SECTION = Section("defence", SECTIONS, parse, lan_keys=tuple(sorted(KNOWN_LAN_EXTRA)), fields=TABLES)
