"""[openpgp]: incoming mail stored encrypted to the users' own keys (the delivery proxy)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from appliance.core.settings import Collector, Section, table


@dataclass(frozen=True)
class OpenpgpSection:
    """Postfix delivers through the agent's OpenPGP proxy, which encrypts mail for users with a
    key. Off: Postfix delivers to Dovecot directly, and every message is stored as it came."""

    enabled: bool = True


def _parse_openpgp(data: dict[str, Any], c: Collector) -> OpenpgpSection:
    t = table(data.get("openpgp", {}), "openpgp", {"enabled"}, c)
    enabled = t.get("enabled", True)
    if not isinstance(enabled, bool):
        c.add("openpgp.enabled", enabled, "is not true or false", "write enabled = true or false")
        enabled = True
    if not enabled:
        # Off stores mail in plaintext: never for a user who asked for nothing but ciphertext.
        # (Users with a key are the keyring's to tell, at apply: see feature.preflight.)
        users = data.get("users")
        for i, user in enumerate(users if isinstance(users, list) else []):
            if isinstance(user, dict) and user.get("encrypt") == "required":
                c.add(f"users[{i}].encrypt", "required",
                      "needs OpenPGP, which [openpgp] enabled = false turns off",
                      'keep [openpgp] enabled = true, or set this user\'s encrypt = "when-key" '
                      "(mail without a key is then stored in plaintext)")
    return OpenpgpSection(enabled)


SECTION = Section("openpgp", ("openpgp",), _parse_openpgp)
