"""[openpgp]: incoming mail stored encrypted to the users' own keys (the delivery proxy)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from appliance.core import fields
from appliance.core.settings import Collector


@dataclass(frozen=True)
class OpenpgpSection:
    """Postfix delivers through the agent's OpenPGP proxy, which encrypts mail for users with a
    key. Off: Postfix delivers to Dovecot directly, and every message is stored as it came."""

    enabled: bool = True


FIELDS = (
    fields.flag("enabled", True, "store incoming mail encrypted to each user's key (the delivery "
                "proxy); off only while no user has a key or `encrypt = \"required\"`"),
)
_TABLE = fields.section("openpgp", OpenpgpSection, FIELDS)


def _parse(data: dict[str, Any], c: Collector) -> OpenpgpSection:
    value: OpenpgpSection = _TABLE.parse(data, c)
    if not value.enabled:
        # Off stores mail in plaintext: never for a user who asked for nothing but ciphertext.
        # The users are the core's table, so this spans the document, not [openpgp] alone.
        # (Users with a key are the keyring's to tell, at apply: see feature.preflight.)
        users = data.get("users")
        for i, user in enumerate(users if isinstance(users, list) else []):
            if isinstance(user, dict) and user.get("encrypt") == "required":
                c.add(f"users[{i}].encrypt", "required",
                      "needs OpenPGP, which [openpgp] enabled = false turns off",
                      'keep [openpgp] enabled = true, or set this user\'s encrypt = "when-key" '
                      "(mail without a key is then stored in plaintext)")
    return value


SECTION = dataclasses.replace(_TABLE, parse=_parse)
