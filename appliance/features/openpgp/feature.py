"""OpenPGP encryption at rest: the proxy's configuration and its systemd unit, the proxy as a
service, and `appliance key`. Off ([openpgp] enabled = false): none of its files, the proxy
stopped, and Postfix delivers to Dovecot directly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from appliance.core import system
from appliance.core.feature import Feature
from appliance.core.plan import FileSpec, Inputs
from appliance.core.services import Service
from appliance.core.settings import Settings
from appliance.features.openpgp import cli
from appliance.features.openpgp.keyring import DEFAULT_HOME, KeyError_, home, read_index
from appliance.features.openpgp.service import PgpProxy
from appliance.features.openpgp.settings import SECTION

SERVICE = "appliance-pgp"
ENCRYPTION_TIMEOUT_S = 120
# Postfix's virtual_transport while OpenPGP is on (main.cf delivers to Dovecot without it).
PROXY_TRANSPORT = "lmtp:unix:private/appliance-pgp"


def openpgp(i: Inputs) -> list[FileSpec]:
    s = i.settings
    if not s.openpgp.enabled:
        return []
    pgp = {
        "home": DEFAULT_HOME,
        "timeout": ENCRYPTION_TIMEOUT_S,
        "users": [(u.address, u.encrypt) for u in s.users],
    }
    return [
        FileSpec("etc/appliance/openpgp.conf.j2", "/etc/appliance/openpgp.conf", SERVICE,
                 order=20, extra=(("pgp", pgp),)),
        FileSpec("etc/systemd/system/appliance-pgp.service.j2",
                 "/etc/systemd/system/appliance-pgp.service", SERVICE, order=20,
                 extra=(("pgp", pgp),)),
    ]


def context(s: Settings) -> dict[str, Any]:
    return {"pgp_proxy": PROXY_TRANSPORT if s.openpgp.enabled else None}


def keyring_home(root: system.Root) -> Path:
    return home() if root.is_live else root.host(DEFAULT_HOME)


def preflight(root: system.Root, s: Settings) -> list[str]:
    """Off stores every message as it came: refused while any user has a key, whose mail the
    user expects encrypted (the keyring's index says who; parsing the file cannot)."""
    if s.openpgp.enabled:
        return []
    try:
        keyed = sorted(read_index(keyring_home(root)))
    except KeyError_ as e:
        return [f"openpgp.enabled: false cannot be checked against the users' keys ({e}); keep "
                "[openpgp] enabled = true until the keyring is readable"]
    if not keyed:
        return []
    return ["openpgp.enabled: false would store mail in plaintext for "
            + ", ".join(keyed) + " (who " + ("has a key" if len(keyed) == 1 else "have keys")
            + "); keep [openpgp] enabled = true, or remove "
            + ("that key" if len(keyed) == 1 else "those keys") + " first with "
            + " and ".join(f"`appliance key remove {a}`" for a in keyed)]


def sealed(root: system.Root, s: Settings) -> frozenset[str]:
    """Users with a key, and those whose setting waits for one (encrypt = "required")."""
    if not s.openpgp.enabled:
        return frozenset()
    return frozenset(read_index(keyring_home(root))) | {u.address for u in s.users
                                                         if u.encrypt == "required"}


def _services(root: system.Root) -> list[Service]:
    return [PgpProxy(root)]


FEATURE = Feature("openpgp", "docs/openpgp.md", sections=(SECTION,), files=openpgp,
                  context=context, services=_services, commands=cli.register,
                  preflight=preflight, sealed=sealed)
