"""OpenPGP encryption at rest: the proxy's configuration and its systemd unit, the proxy as a
service, and `appliance key`."""

from __future__ import annotations

from appliance.core import system
from appliance.core.feature import Feature
from appliance.core.plan import FileSpec, Inputs
from appliance.core.services import Service
from appliance.features.openpgp import cli_key
from appliance.features.openpgp.keyring import DEFAULT_HOME
from appliance.features.openpgp.service import PgpProxy

SERVICE = "appliance-pgp"
ENCRYPTION_TIMEOUT_S = 120


def openpgp(i: Inputs) -> list[FileSpec]:
    s = i.settings
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


def _services(root: system.Root) -> list[Service]:
    return [PgpProxy(root)]


FEATURE = Feature("openpgp", "docs/openpgp.md", files=openpgp, services=_services,
                  commands=cli_key.add_parser)
