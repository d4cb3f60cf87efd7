"""The release agent (release_agent.py) as a service the agent configures, (re)starts and
probes. Apart from the daemon, so the daemon's process loads none of the agent's side.

Under systemd it runs on demand: the agent enables and starts its two socket units (replies from
Postfix, notices from the policy service), and systemd starts the service at the first
connection; the service exits when idle. Without systemd (the lab) it is started directly and
runs until stopped."""

from __future__ import annotations

import re
from pathlib import Path

from appliance.core.services import AgentDaemon
from appliance.features.privacy.release_agent import LOG, NAME, PIDFILE

SOCKETS = ("appliance-release.socket", "appliance-release-notice.socket")


class ReleaseAgent(AgentDaemon):
    name = NAME
    unit = "appliance-release.service"
    module = "appliance.features.privacy.release_agent"
    pidfile = PIDFILE
    log_path = LOG
    socket_units = SOCKETS
    reload_ack = re.compile(r"appliance-release: (started|reloaded)")
    reload_errors = re.compile(r"appliance-release: .*(Traceback|Error:)")

    def validate(self, stage: Path) -> None:
        return None  # no configuration of its own: typoguard.conf is checked by the policy service
