"""SSH: keys from settings only, no passwords; LAN-only through the firewall.

The agent writes a drop-in for Debian's sshd_config and /etc/ssh/authorized_keys/root from
`[ssh] authorized_keys`; keys a user put in ~/.ssh/authorized_keys by hand keep working.
sshd logs to its own file (`sshd -E /var/log/sshd.log`), which fail2ban reads.
"""

from __future__ import annotations

import signal
from pathlib import Path

from appliance.core import system
from appliance.core.errors import ValidationError
from appliance.core.services import Service

DROPIN = "/etc/ssh/sshd_config.d/appliance.conf"
# Keys from settings live under /etc (settings-owned, like every file the agent writes).
AUTHORIZED_KEYS = "/etc/ssh/authorized_keys/root"
PIDFILE = "/run/sshd.pid"
# sshd logs here (`sshd -E`), the way the box logs without a syslog daemon; fail2ban reads it.
SSHD_LOG = "/var/log/sshd.log"


class Sshd(Service):
    name = "sshd"
    unit = "ssh.service"
    log_path = SSHD_LOG
    ports = (22,)
    pidfile = PIDFILE

    def validate(self, stage: Path) -> None:
        staged = stage / DROPIN.lstrip("/")
        if not staged.exists():
            return
        # `sshd -t` parses every option; without host keys (an image being built) it stops
        # after parsing with "no hostkeys available", which says the syntax was fine.
        res = system.run(["/usr/sbin/sshd", "-t", "-f", str(staged)], check=False)
        # Likewise "Missing privilege separation directory" (/run/sshd, made at start-up).
        fine = ("no hostkeys available", "Missing privilege separation directory")
        if res.returncode != 0 and not any(f in res.output for f in fine):
            raise ValidationError(self.name, "sshd -t", res.output or f"exit {res.returncode}")

    def running(self) -> bool:
        content = self.root.read(PIDFILE).content or b""
        try:
            pid = int(content.split()[0]) if content.strip() else 0
        except ValueError:
            return False
        return pid > 0 and system.pid_alive(pid)

    def direct_reload(self) -> system.Result:
        self.root.makedirs("/run/sshd", 0o755)  # the privilege separation directory
        system.ensure_file(self.root.host(SSHD_LOG))
        if self.running():
            pid = int((self.root.read(PIDFILE).content or b"0").split()[0])
            system.signal_pid(pid, signal.SIGHUP)
            return system.Result(("kill", "-HUP", str(pid)), 0, "", "")
        return system.run_daemon(["/usr/sbin/sshd", "-E", SSHD_LOG])

    def probe(self, log_offset: int, settle: float = 10.0) -> str | None:
        import time

        deadline = time.monotonic() + settle
        for _ in range(int(settle / 0.1) + 1):
            if self.running() and 22 in system.listening_tcp_ports():
                return None
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        return f"sshd is not listening on port 22; see {SSHD_LOG}"
