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

from appliance.core.settings import Section

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


def _table(data: dict[str, Any], name: str, known: set[str], add: Add) -> dict[str, Any]:
    raw = data.get(name, {})
    if not isinstance(raw, dict):
        add(name, raw, "is not a table", f"write it as a [{name}] section or remove it")
        return {}
    for key in sorted(set(raw) - known):
        add(f"{name}.{key}", key, f"is not a known [{name}] setting",
            f"use {', '.join(sorted(known))}")
    return raw


def _bool(raw: dict[str, Any], section: str, key: str, default: bool, add: Add) -> bool:
    v = raw.get(key, default)
    if not isinstance(v, bool):
        add(f"{section}.{key}", v, "is not true or false", f"write {key} = true or {key} = false")
        return default
    return v


def _int(raw: dict[str, Any], section: str, key: str, default: int, lo: int, hi: int,
         add: Add, unit: str = "") -> int:
    v = raw.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        add(f"{section}.{key}", v, "is out of range",
            f"use a whole number{unit} between {lo} and {hi}, e.g. {default}")
        return default
    return v


def parse(data: dict[str, Any], add: Add) -> Defence:
    fw = _table(data, "firewall", {"enabled", "web"}, add)
    f2b = _table(data, "fail2ban", {"enabled", "maxretry", "findtime", "bantime", "bantime_max"}, add)
    ssh = _table(data, "ssh", {"authorized_keys"}, add)
    lim = _table(data, "limits", {"messages_per_hour", "messages_per_day", "recipients_per_message",
                                  "global_per_hour"}, add)
    lan = data.get("lan", {}) if isinstance(data.get("lan", {}), dict) else {}

    bantime = _int(f2b, "fail2ban", "bantime", 600, 1, 30 * 86400, add, " of seconds")
    bantime_max = _int(f2b, "fail2ban", "bantime_max", 7 * 86400, 1, 365 * 86400, add, " of seconds")
    if bantime_max < bantime:
        add("fail2ban.bantime_max", bantime_max, f"is shorter than bantime ({bantime})",
            "make bantime_max at least as long as bantime")
        bantime_max = bantime

    keys: list[str] = []
    raw_keys = ssh.get("authorized_keys", [])
    if not isinstance(raw_keys, list):
        add("ssh.authorized_keys", raw_keys, "is not a list",
            'write it as ["ssh-ed25519 AAAA... you@laptop"]')
        raw_keys = []
    for i, k in enumerate(raw_keys):
        if not isinstance(k, str) or not _KEY.match(k.strip()) or not _key_blob_ok(k.strip()):
            shown = k[:24] + "…" if isinstance(k, str) and len(k) > 24 else k
            add(f"ssh.authorized_keys[{i}]", shown, "is not an OpenSSH public key line",
                "paste one line of your ~/.ssh/id_ed25519.pub (type, base64 key, comment)")
        else:
            keys.append(k.strip())

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
        firewall=_bool(fw, "firewall", "enabled", True, add),
        web=_bool(fw, "firewall", "web", False, add),
        fail2ban=_bool(f2b, "fail2ban", "enabled", True, add),
        maxretry=_int(f2b, "fail2ban", "maxretry", 5, 1, 100, add),
        findtime=_int(f2b, "fail2ban", "findtime", 600, 1, 7 * 86400, add, " of seconds"),
        bantime=bantime,
        bantime_max=bantime_max,
        authorized_keys=tuple(keys),
        limits=Limits(
            messages_per_hour=_int(lim, "limits", "messages_per_hour", 100, 1, 100000, add),
            messages_per_day=_int(lim, "limits", "messages_per_day", 500, 1, 1000000, add),
            recipients_per_message=_int(lim, "limits", "recipients_per_message", 50, 1, 1000, add),
            global_per_hour=_int(lim, "limits", "global_per_hour", 1000, 1, 1000000, add),
        ),
        also_trusted=tuple(trusted),
        public_address=public,
    )


# The defence is one section of four tables; the LAN it trusts may be widened in [lan].
SECTION = Section("defence", SECTIONS, lambda data, c: parse(data, c.add),
                  lan_keys=tuple(sorted(KNOWN_LAN_EXTRA)))
