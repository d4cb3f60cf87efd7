"""The proxy as a service the agent configures, validates, (re)starts and probes."""

from __future__ import annotations

import re
from pathlib import Path

from appliance.core.errors import ValidationError
from appliance.core.services import AgentDaemon
from appliance.features.openpgp.config import LOG, NAME, ConfigError, parse_config

PIDFILE = "/run/appliance-pgp.pid"


class PgpProxy(AgentDaemon):
    name = NAME
    unit = "appliance-pgp.service"
    module = "appliance.features.openpgp.proxy"
    pidfile = PIDFILE
    log_path = LOG
    reload_ack = re.compile(r"appliance-pgp: (started|reloaded)")
    independent = True  # Postfix connects to it per delivery, and queues mail while it is down
    reload_errors = re.compile(r"appliance-pgp: .*(Traceback|Error:)")

    def validate(self, stage: Path) -> None:
        conf = stage / "etc/appliance/openpgp.conf"
        if conf.exists():
            try:
                parse_config(conf.read_text())
            except ConfigError as e:
                raise ValidationError(self.name, "openpgp.conf check", str(e)) from None
