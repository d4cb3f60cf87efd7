"""The policy service (policyd.py) as a service the agent configures, validates, (re)starts and
probes. Apart from the daemon, so the daemon's process loads none of the agent's side."""

from __future__ import annotations

import re
from pathlib import Path

from appliance.core import policy
from appliance.core.errors import ValidationError
from appliance.core.services import AgentDaemon
from appliance.features.limits.config import CONF, LOG, NAME, PIDFILE, PORT, parse_config


class Policyd(AgentDaemon):
    """The kill-switch (and the typo guard's checks, which it runs)."""

    name = NAME
    unit = "appliance-policyd.service"
    module = "appliance.features.limits.policyd"
    pidfile = PIDFILE
    log_path = LOG
    reload_ack = re.compile(r"appliance-policyd: (started|reloaded)")
    reload_errors = re.compile(r"appliance-policyd: .*(Traceback|Error:)")
    ports = (PORT,)

    def validate(self, stage: Path) -> None:
        conf = stage / CONF.lstrip("/")
        if not conf.exists():
            return
        try:
            config = parse_config(conf.read_text())
        except (ValueError, TypeError) as e:
            raise ValidationError(self.name, "limits.conf check", str(e)) from None
        # The checks it runs (the typo guard) are loaded as the service will load them, and
        # judge their own staged configuration (typoguard.conf), read by this service too.
        for name in config.checks:
            try:
                check = policy.load(name)
            except policy.CheckError as e:
                raise ValidationError(self.name, "policy check", str(e)) from None
            try:
                policy.validate(check, stage)
            except policy.Invalid as e:
                raise ValidationError(self.name, e.what, e.detail) from None
