"""The services the agent configures. Each offers what certbot's installer interface offers:
validate a staged configuration with the real tool, reload, and say whether it runs.

Validation is strict: `postconf` exits 0 on an unknown parameter and only warns, so any
"warning:" counts as failure; `doveconf` exits non-zero on an unknown setting.
"""

from __future__ import annotations

import re
import signal
import sys
import time
from pathlib import Path

from appliance.core import system
from appliance.core.errors import ValidationError

UNIT_DIR = "/etc/systemd/system"
# Diagnostics go to stderr; stdout is the configuration itself (which has an "error" service).
WARNING = re.compile(r"\b(warning|fatal|error)\b", re.IGNORECASE)

# The ports the box serves mail on to the internet: SMTP (the MX), submission with implicit TLS
# and with STARTTLS, IMAPS, and ManageSieve (the user's filters, from a mail program away from
# home). The firewall opens them; UPnP maps them; nothing else is exposed.
MAIL_PORTS = (25, 465, 587, 993, 4190)


class Manager:
    """How services are reloaded on this machine."""

    name = "none"
    probes = True  # whether a reloaded service can be checked afterwards (not offline)
    starts = True  # whether a wanted service that is not running can be started (not offline)

    def reload(self, service: Service) -> system.Result:
        raise NotImplementedError

    def stop(self, service: Service) -> system.Result:
        """Stop a service whose files are all going away, so it does not come back at boot."""
        raise NotImplementedError

    def resume(self, service: Service) -> system.Result:
        """Undo stop() (a rollback): the service's files are back."""
        return self.reload(service)

    def pause(self, service: Service) -> system.Result:
        """Stop it for now (while its data is put back from a backup); it stays enabled, and
        the next apply starts it."""
        raise NotImplementedError

    def refresh(self) -> None:
        """Unit files were removed or put back."""


class Systemd(Manager):
    name = "systemd"

    def reload(self, service: Service) -> system.Result:
        if service.socket_units:
            return self._sockets(service)
        if service.unit.startswith("appliance-"):
            # The agent writes its own unit files: systemd must re-read them, and they are
            # enabled so they come back at boot. A daemon-reload re-reads every unit (about 8 s
            # each under emulation; the first apply starts six of these services): only when
            # systemd has not loaded the files on disk yet, and `enable` does not reload again.
            res = system.Result((), 0, "", "")
            if not _agent_units_loaded(service):
                res = system.run(["systemctl", "daemon-reload"], check=False)
            if res.returncode == 0:
                res = system.run(["systemctl", "enable", "--no-reload", service.unit], check=False)
            if res.returncode != 0:
                return res
        # reload-or-restart: starts a stopped service too (first boot), reloads a running one;
        # a change a reload cannot pick up (rspamd's listening sockets) restarts it.
        verb = "restart" if service.needs_restart() else "reload-or-restart"
        return system.run(["systemctl", verb, service.unit], check=False)

    def _sockets(self, service: Service) -> system.Result:
        """A service started on demand: its socket units listen (enabled, so at boot too); the
        service itself is not started. An instance that runs while its sockets do not (one
        that made its own sockets: an older unit, or started by hand) is stopped first: systemd
        refuses to start a socket whose service runs, and that instance would never see the
        sockets' connections. One that runs on the sockets is left to finish: it reads its
        files at each use, and exits when idle."""
        if not _agent_units_loaded(service):  # as for any unit of the agent's: only if needed
            res = system.run(["systemctl", "daemon-reload"], check=False)
            if res.returncode != 0:
                return res
        listening = system.run(["systemctl", "is-active", "--quiet", *service.socket_units],
                               check=False).returncode == 0
        if not listening:
            res = system.run(["systemctl", "stop", service.unit], check=False)
            if res.returncode != 0:
                return res
        # --no-reload: `enable` would otherwise re-read every unit once more.
        return system.run(["systemctl", "enable", "--no-reload", "--now", *service.socket_units],
                          check=False)

    def stop(self, service: Service) -> system.Result:
        if service.owns_unit:
            res = system.run(["systemctl", "disable", "--now", *service.socket_units, service.unit],
                             check=False)
            if res.returncode != 0:
                return res
        return service.after_stop()

    def pause(self, service: Service) -> system.Result:
        return system.run(["systemctl", "stop", *service.socket_units, service.unit], check=False)

    def resume(self, service: Service) -> system.Result:
        if service.owns_unit and not service.socket_units:
            res = system.run(["systemctl", "enable", service.unit], check=False)
            if res.returncode != 0:
                return res
        return self.reload(service)

    def refresh(self) -> None:
        system.run(["systemctl", "daemon-reload"], check=False)


def _agent_units_loaded(service: Service) -> bool:
    """Whether systemd runs every appliance-* unit file in /etc/systemd/system as it is on
    disk (loaded, no daemon-reload pending). All of them, not only the service's: a timer's
    service file may have changed without the timer's."""
    units = sorted(p.name for p in service.root.host(UNIT_DIR).glob("appliance-*")
                   if p.is_file())
    if not units:
        return False
    res = system.run(["systemctl", "show", "--property=LoadState,NeedDaemonReload", *units],
                     check=False)
    states = [line for line in res.stdout.splitlines() if line]
    return (res.returncode == 0 and states.count("LoadState=loaded") == len(units)
            and states.count("NeedDaemonReload=no") == len(units))


class Direct(Manager):
    """No init system (containers, the test lab): drive the daemons' own control commands."""

    name = "direct"

    def reload(self, service: Service) -> system.Result:
        return service.direct_reload()

    def stop(self, service: Service) -> system.Result:
        res = service.direct_stop()
        return res if res.returncode != 0 else service.after_stop()

    def pause(self, service: Service) -> system.Result:
        return service.direct_stop() if service.running() else system.Result(("true",), 0, "", "")


class Offline(Manager):
    """An offline root (image build): nothing runs there, nothing to reload."""

    name = "offline"
    probes = False
    starts = False

    def reload(self, service: Service) -> system.Result:
        return system.Result(("true",), 0, "", "")

    def stop(self, service: Service) -> system.Result:
        return system.Result(("true",), 0, "", "")

    def pause(self, service: Service) -> system.Result:
        return system.Result(("true",), 0, "", "")


def detect_manager(root: system.Root) -> Manager:
    if not root.is_live:
        return Offline()
    if Path("/run/systemd/system").is_dir():
        return Systemd()
    return Direct()


class Service:
    name = ""
    unit = ""
    log_path = ""
    # Lines in the service's log that mean a reload did not take (the daemon's own words).
    reload_errors: re.Pattern[str] = re.compile(r"$^")
    # The line a daemon logs when it has (re)read its configuration.
    reload_ack: re.Pattern[str] = re.compile(r"$^")
    # Ports the service must listen on once (re)loaded; a lost listener fails the apply.
    ports: tuple[int, ...] = ()
    # The daemon's PID file, where it keeps one (stopping it without systemd).
    pidfile = ""
    # Whether the unit is this service's alone, so that it is disabled when none of the
    # service's files is wanted (not so for a unit shared with what the agent does not own).
    owns_unit = True
    # Socket units that start the service on demand (systemd): the agent starts these, not it.
    socket_units: tuple[str, ...] = ()
    # Whether it writes what a backup carries (mail, the queue, learned statistics): it is
    # stopped while a backup is put back.
    keeps_data = False
    # Whether no service after it needs it up to start (Postfix connects to its milter only per
    # message): then it (re)starts alongside the next ones, and apply waits for its probe at the
    # end. rspamd's start is the slowest of all (its Lua rules, 12 s under emulation).
    independent = False

    def __init__(self, root: system.Root) -> None:
        self.root = root

    def validate(self, stage: Path) -> None:
        raise NotImplementedError

    def direct_reload(self) -> system.Result:
        raise NotImplementedError

    def needs_restart(self) -> bool:
        """Whether the new configuration needs a restart rather than a reload."""
        return False

    def after_write(self) -> None:
        """Its files were just written (or put back): drop what the daemon derived from the old
        ones and cannot tell is stale (compiled forms it judges by a file time in seconds)."""

    def direct_stop(self) -> system.Result:
        """Stop the daemon without an init system (the lab)."""
        argv = ("kill", "-TERM", self.pidfile or f"<{self.name} has no PID file>")
        if not self.pidfile:
            return system.Result(argv, 1, "", f"the agent cannot stop {self.name} without systemd")
        pid = read_pid(self.root, self.pidfile)
        if pid > 0 and not system.stop_pid(pid):
            return system.Result(argv, 1, "", f"{self.name} (pid {pid}) did not exit")
        return system.Result(argv, 0, "", "")

    def after_stop(self) -> system.Result:
        """What stopping the process leaves behind that must go too (kernel state: nft tables)."""
        return system.Result(("true",), 0, "", "")

    def running(self) -> bool:
        raise NotImplementedError

    def under_systemd(self) -> bool:
        return self.root.is_live and bool(self.unit) and Path("/run/systemd/system").is_dir()

    def active(self) -> bool:
        """Whether the service runs: systemd's word where systemd manages it (a unit's daemon
        may keep no PID file there), else the service's own check. A service started on demand
        counts as running while its sockets listen."""
        if self.under_systemd():
            units = self.socket_units or (self.unit,)
            res = system.run(["systemctl", "is-active", "--quiet", *units], check=False)
            return res.returncode == 0
        return self.running()

    def needs_start(self) -> bool:
        """Whether the service should run and does not (killed, or it failed at boot)."""
        return not self.active()

    def probe(self, log_offset: int, settle: float = 10.0) -> str | None:
        """After a reload: None if the service runs with its new configuration, else why not.

        Reloads are asynchronous (`doveadm reload` and `postfix reload` return before the daemon
        has re-read anything), so this polls, bounded in time: first for the daemon's own
        acknowledgement in its log, then for errors it logged, then for its listening ports."""
        deadline = time.monotonic() + settle
        acked_at: float | None = None
        missing: set[int] = set()
        for _ in range(int(settle / 0.05) + 1):
            new = self.root.read_from(self.log_path, log_offset)
            bad = [line for line in new.splitlines() if self.reload_errors.search(line)]
            if bad:
                return "\n".join(bad[-5:])
            if acked_at is None and self.reload_ack.search(new):
                acked_at = time.monotonic()
            # Errors follow the acknowledgement within the same reload pass; allow a moment.
            if acked_at is not None and time.monotonic() - acked_at > 0.3:
                missing = set(self.ports) - system.listening_tcp_ports()
                if not missing and self.active():
                    return None
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if acked_at is None:
            return f"{self.name} did not confirm the reload in {self.log_path} within {settle:.0f} s"
        if not self.active():
            return f"{self.name} is not running after the reload"
        return f"{self.name} is not listening on port(s) {', '.join(map(str, sorted(missing)))}"

    def _tool(self, argv: list[str]) -> system.Result:
        # The host's tools judge staged files by path; neither postconf nor doveconf -n opens
        # the maps, certificates or password files a configuration names, so this works
        # for an offline root (an image being built) as well as the live system.
        return system.run(argv, check=False)

    def _fail_on(self, res: system.Result, tool: str, strict_warnings: bool = True) -> None:
        if res.returncode != 0 or (strict_warnings and WARNING.search(res.stderr)):
            raise ValidationError(self.name, tool, res.stderr or res.output or f"exit {res.returncode}")


class Scheduled(Service):
    """A timer, or files a periodic job reads: without systemd nothing runs that could reload;
    under systemd the manager (re)starts the unit. Validation is the subclass's, if any."""

    independent = True  # a timer starts nothing another service needs

    def validate(self, stage: Path) -> None:
        return None

    def running(self) -> bool:
        return True

    def direct_reload(self) -> system.Result:
        return system.Result(("true",), 0, "", "")

    def direct_stop(self) -> system.Result:
        return system.Result(("true",), 0, "", "")

    def probe(self, log_offset: int, settle: float = 10.0) -> str | None:
        return None


class AgentDaemon(Service):
    """One of the agent's own daemons (appliance/core/daemon.py: `python -m MODULE --daemon
    PIDFILE --log LOG` without an init system, a Type=notify unit under systemd), which
    re-reads its configuration on SIGHUP and logs "<name>: started|reloaded"."""

    module = ""
    pidfile = ""

    def running(self) -> bool:
        return pidfile_alive(self.root, self.pidfile)

    def direct_reload(self) -> system.Result:
        pid = read_pid(self.root, self.pidfile)
        if pid and system.pid_alive(pid):
            system.signal_pid(pid, signal.SIGHUP)
            return system.Result(("kill", "-HUP", str(pid)), 0, "", "")
        # The agent's own interpreter and package: /usr/bin/python3 on the box, the venv in tests.
        return system.run_daemon([sys.executable, "-m", self.module,
                                  "--daemon", self.pidfile, "--log", self.log_path])

    def probe(self, log_offset: int, settle: float = 10.0) -> str | None:
        """Under systemd the unit is Type=notify: `systemctl restart` returned once the daemon
        said READY=1, and a reload shows as "reloading" until it says READY=1 again. That is
        waited for first. The log's acknowledgement is still read after it: systemd 252 runs
        ExecReload (a SIGHUP) and moves on before the daemon has even seen the signal
        (Type=notify-reload, which waits, is systemd 253). A service started on demand has
        nothing to acknowledge: its sockets listening is the check."""
        if not self.under_systemd():
            return super().probe(log_offset, settle)
        deadline = time.monotonic() + settle
        state = ""
        while time.monotonic() < deadline:
            state = system.run(["systemctl", "show", "-P", "ActiveState", self.unit],
                               check=False).stdout.strip()
            if state not in ("activating", "reloading"):
                break
            time.sleep(0.05)
        if state in ("activating", "reloading"):
            return f"{self.name} did not report ready within {settle:.0f} s (still {state})"
        if self.socket_units:
            bad = [line for line in self.root.read_from(self.log_path, log_offset).splitlines()
                   if self.reload_errors.search(line)]
            if bad:
                return "\n".join(bad[-5:])
            return None if self.active() else \
                f"{self.name}: {', '.join(self.socket_units)} not listening"
        return super().probe(log_offset, max(1.0, deadline - time.monotonic()))


def read_pid(root: system.Root, path: str) -> int:
    """The PID a daemon wrote to `path` (its first word), or 0: no file, or not a number."""
    content = root.read(path).content if path else None
    words = content.split() if content else []
    return int(words[0]) if words and words[0].isdigit() else 0


def pidfile_alive(root: system.Root, path: str) -> bool:
    pid = read_pid(root, path)
    return pid > 0 and system.pid_alive(pid)


def log_tail(root: system.Root, path: str = "/var/log/mail.log", lines: int = 5) -> str:
    content = root.read(path).content or b""
    return "\n".join(content.decode(errors="replace").splitlines()[-lines:])
