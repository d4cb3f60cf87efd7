"""The proxy as a service the agent configures, validates, (re)starts and probes."""

from __future__ import annotations

import re
import signal
import sys
from pathlib import Path

from .. import system
from ..errors import ValidationError
from ..services import Service, _pidfile_alive
from .proxy import ConfigError, parse_config

PIDFILE = "/run/appliance-pgp.pid"


class PgpProxy(Service):
    name = "appliance-pgp"
    unit = "appliance-pgp.service"
    log_path = "/var/log/appliance-pgp.log"
    reload_ack = re.compile(r"appliance-pgp: (started|reloaded)")
    reload_errors = re.compile(r"appliance-pgp: .*(Traceback|Error:)")

    def validate(self, stage: Path) -> None:
        conf = stage / "etc/appliance/openpgp.conf"
        if conf.exists():
            try:
                parse_config(conf.read_text())
            except ConfigError as e:
                raise ValidationError(self.name, "openpgp.conf check", str(e)) from None

    def running(self) -> bool:
        return _pidfile_alive(self.root, PIDFILE)

    def direct_reload(self) -> system.Result:
        if self.running():
            pid = int((self.root.read(PIDFILE).content or b"0").split()[0])
            system.signal_pid(pid, signal.SIGHUP)
            return system.Result(("kill", "-HUP", str(pid)), 0, "", "")
        # The agent's own interpreter and package: /usr/bin/python3 on the box, the venv in tests.
        return system.run_daemon([sys.executable, "-m", "appliance.openpgp.proxy",
                                  "--daemon", PIDFILE, "--log", self.log_path])
