"""The proxy's configuration, /etc/appliance/openpgp.conf: lines `key = value` and
`user ADDRESS MODE`, written by the agent and re-read by the proxy when it changes."""

from __future__ import annotations

from dataclasses import dataclass, field

from appliance.core.mail_rules import untagged
from appliance.features.openpgp import keyring

# The proxy (proxy.py) by name and log: the agent speaks of them without loading the proxy.
NAME = "appliance-pgp"
LOG = "/var/log/appliance-pgp.log"

CONF = "/etc/appliance/openpgp.conf"
MODES = ("when-key", "required")


@dataclass
class Config:
    listen: str = "/var/spool/postfix/private/appliance-pgp"
    dovecot: str = "/var/spool/postfix/private/dovecot-lmtp"
    home: str = keyring.DEFAULT_HOME
    gpg: str = "/usr/bin/gpg"
    timeout: float = 120.0  # one gpg run; past it the recipient is deferred
    hostname: str = "localhost"
    flush: str = ""  # postqueue, run with -f once listening; empty: none (tests without Postfix)
    users: dict[str, str] = field(default_factory=dict)  # address -> mode

    def owner(self, rcpt: str) -> str:
        """Whose mail this is: Postfix hands plus-addressed mail on with its tag (name+tag@),
        and the key and the storage setting are the user's (name@)."""
        if rcpt in self.users:
            return rcpt
        base = untagged(rcpt)
        return base if base in self.users else rcpt


class ConfigError(ValueError):
    pass


def parse_config(text: str) -> Config:
    c = Config()
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("user "):
            parts = line.split()
            if len(parts) != 3 or parts[2] not in MODES or "@" not in parts[1]:
                raise ConfigError(f"line {n}: expected `user ADDRESS {'|'.join(MODES)}`: {line!r}")
            c.users[parts[1].lower()] = parts[2]
            continue
        key, sep, value = (p.strip() for p in line.partition("="))
        if not sep or key not in ("listen", "dovecot", "home", "gpg", "timeout", "hostname",
                                           "flush"):
            raise ConfigError(f"line {n}: unknown setting {line!r}")
        if key == "timeout":
            try:
                c.timeout = float(value)
            except ValueError:
                raise ConfigError(f"line {n}: timeout {value!r} is not a number of seconds") from None
            if not 0 < c.timeout <= 3600:
                raise ConfigError(f"line {n}: timeout {value!r} is not between 0 and 3600 s")
        else:
            setattr(c, key, value)
    return c
