"""Calendars and contacts: Debian's Radicale, for the same users and passwords as mail (Dovecot
checks them), behind the box's nginx over TLS, found by phones and programs from the address
alone (SRV records and /.well-known/, RFC 6764)."""

from __future__ import annotations

import re
from pathlib import Path

from appliance.core import lan, system
from appliance.core.errors import ValidationError
from appliance.core.feature import Feature
from appliance.core.plan import FileSpec, Inputs
from appliance.core.records import Known, Record, fq
from appliance.core.services import AgentDaemon, Service
from appliance.core.settings import Settings
from appliance.features.dav import checks, config
from appliance.features.dav.settings import SECTION

UNITS = "/etc/systemd/system"
SITE = "/etc/nginx/appliance.d/dav.conf"


class DavServer(AgentDaemon):
    name = config.NAME
    unit = "appliance-dav.service"
    module = "appliance.features.dav.server"
    pidfile = config.PIDFILE
    log_path = config.LOG
    reload_ack = re.compile(r"appliance-dav: (started|reloaded)")
    reload_errors = re.compile(r"appliance-dav: .*(Traceback|Error:)")
    ports = (config.PORT,)
    keeps_data = True  # the calendars and address books: stopped while a backup is put back

    def validate(self, stage: Path) -> None:
        conf = stage / config.CONF.lstrip("/")
        if not conf.exists():
            return
        from appliance.features.dav.server import load

        try:
            load(str(conf))
        except Exception as e:  # noqa: BLE001 - Radicale's configuration errors are plain Exceptions
            raise ValidationError(self.name, "radicale configuration", str(e)) from None


def services(root: system.Root) -> list[Service]:
    return [DavServer(root)]


def context(s: Settings) -> dict[str, object]:
    return {"dav": {"host": config.HOST, "port": config.PORT, "storage": config.STORAGE,
                    "conf": config.CONF, "log": config.LOG, "user": config.USER}}


def files(i: Inputs) -> list[FileSpec]:
    s = i.settings
    if not s.dav.enabled:
        return []
    v4, v6 = lan.trusted(i.facts, s.firewall.also_trusted)
    return [
        FileSpec("etc/radicale/config.j2", config.CONF, config.NAME, order=40),
        FileSpec("etc/systemd/system/appliance-dav.service.j2", f"{UNITS}/appliance-dav.service",
                 config.NAME, order=40),
        FileSpec("etc/nginx/appliance.d/dav.conf.j2", SITE, "nginx", order=80,
                 extra=(("lan", [*v4, *v6]),)),
    ]


def records(s: Settings, k: Known) -> list[Record]:
    """RFC 6764: a client given alice@<domain> asks for these, then /.well-known/ on the host."""
    if not s.dav.enabled:
        return []
    return [Record(fq(f"_{proto}._tcp.{s.domain}"), "SRV", f"0 1 443 {fq(s.hostname)}",
                   f"phones and programs find your {what} from your address alone")
            for proto, what in (("caldavs", "calendars"), ("carddavs", "contacts"))]


def preflight(root: system.Root, s: Settings) -> list[str]:
    if not s.dav.enabled or not root.is_live:
        return []
    try:
        import radicale  # noqa: F401 - only whether Debian's package is there
    except ImportError:
        return ["dav.enabled: true needs Debian's radicale package: apt install radicale"]
    return []


FEATURE = Feature("dav", "README.md", sections=(SECTION,), files=files, context=context,
                  services=services, records=records, preflight=preflight,
                  checks=(checks.check_dav,))
