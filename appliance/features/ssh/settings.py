"""[ssh]: the keys that may log in (none: SSH stays off).

    [ssh]
    authorized_keys = ["ssh-ed25519 AAAA... you@laptop"]
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

from appliance.core import fields

_KEY = re.compile(
    r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|"
    r"sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/]+={0,3}( [^\n\r]*)?$"
)


@dataclass(frozen=True)
class Ssh:
    authorized_keys: tuple[str, ...] = ()


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


FIELDS = (
    fields.Field("authorized_keys", (), "public keys that may log in as root (none: SSH stays off)",
                 lambda v: isinstance(v, list), "is not a list",
                 'write it as ["ssh-ed25519 AAAA... you@laptop"]',
                 item=fields.Item(_key_ok, "is not an OpenSSH public key line",
                                  "paste one line of your ~/.ssh/id_ed25519.pub (type, base64 key, "
                                  "comment)"),
                 convert=lambda v: tuple(k.strip() for k in v)),
)
SECTION = fields.section("ssh", Ssh, FIELDS)
