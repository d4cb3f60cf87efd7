"""The plan's part for OpenPGP (issue #7): the proxy's configuration and its systemd unit."""

from __future__ import annotations

from ..facts import Facts
from ..plan import FileSpec
from ..settings import Settings
from .keyring import DEFAULT_HOME

SERVICE = "appliance-pgp"
ENCRYPTION_TIMEOUT_S = 120


def openpgp(s: Settings, facts: Facts) -> list[FileSpec]:
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
