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

from . import system
from .errors import ValidationError

UNIT_DIR = "/etc/systemd/system"
# Diagnostics go to stderr; stdout is the configuration itself (which has an "error" service).
_WARNING = re.compile(r"\b(warning|fatal|error)\b", re.IGNORECASE)


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

    def refresh(self) -> None:
        """Unit files were removed or put back."""


class Systemd(Manager):
    name = "systemd"

    def reload(self, service: Service) -> system.Result:
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

    def stop(self, service: Service) -> system.Result:
        if service.owns_unit:
            res = system.run(["systemctl", "disable", "--now", service.unit], check=False)
            if res.returncode != 0:
                return res
        return service.after_stop()

    def resume(self, service: Service) -> system.Result:
        if service.owns_unit:
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


class Offline(Manager):
    """An offline root (image build): nothing runs there, nothing to reload."""

    name = "offline"
    probes = False
    starts = False

    def reload(self, service: Service) -> system.Result:
        return system.Result(("true",), 0, "", "")

    def stop(self, service: Service) -> system.Result:
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

    def __init__(self, root: system.Root) -> None:
        self.root = root

    def validate(self, stage: Path) -> None:
        raise NotImplementedError

    def direct_reload(self) -> system.Result:
        raise NotImplementedError

    def needs_restart(self) -> bool:
        """Whether the new configuration needs a restart rather than a reload."""
        return False

    def direct_stop(self) -> system.Result:
        """Stop the daemon without an init system (the lab)."""
        argv = ("kill", "-TERM", self.pidfile or f"<{self.name} has no PID file>")
        if not self.pidfile:
            return system.Result(argv, 1, "", f"the agent cannot stop {self.name} without systemd")
        content = self.root.read(self.pidfile).content or b""
        pid = int(content.split()[0]) if content.split() and content.split()[0].isdigit() else 0
        if pid > 0 and not system.stop_pid(pid):
            return system.Result(argv, 1, "", f"{self.name} (pid {pid}) did not exit")
        return system.Result(argv, 0, "", "")

    def after_stop(self) -> system.Result:
        """What stopping the process leaves behind that must go too (kernel state: nft tables)."""
        return system.Result(("true",), 0, "", "")

    def running(self) -> bool:
        raise NotImplementedError

    def active(self) -> bool:
        """Whether the service runs: systemd's word where systemd manages it (a unit's daemon
        may keep no PID file there), else the service's own check."""
        if self.root.is_live and self.unit and Path("/run/systemd/system").is_dir():
            res = system.run(["systemctl", "is-active", "--quiet", self.unit], check=False)
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
        if res.returncode != 0 or (strict_warnings and _WARNING.search(res.stderr)):
            raise ValidationError(self.name, tool, res.stderr or res.output or f"exit {res.returncode}")


class Postfix(Service):
    name = "postfix"
    unit = "postfix.service"
    log_path = "/var/log/mail.log"
    reload_errors = re.compile(r"postfix(/[\w-]+)?/(master|postfix-script)\[\d+\]: (fatal|panic):")
    reload_ack = re.compile(r"postfix(/[\w-]+)?/master\[\d+\]: (reload|daemon started) ")
    ports = (25, 465, 587)
    config_dir = "/etc/postfix"
    # The map files the templates reference, validated as texthash tables.
    maps = ("vmailbox", "virtual", "sender_login", "sasl_passwd",
            "transport", "release_access")  # issue #10: release by reply
    regexp_maps = ("submission_header_checks",)  # issue #10

    def validate(self, stage: Path) -> None:
        conf = str(stage / "etc/postfix")
        # main.cf: every parameter known, every value parseable.
        self._fail_on(self._tool(["postconf", "-c", conf, "-n"]), "postconf -n")
        # master.cf: every service line parseable, -o overrides included.
        self._fail_on(self._tool(["postconf", "-c", conf, "-M"]), "postconf -M")
        self._fail_on(self._tool(["postconf", "-c", conf, "-P"]), "postconf -P")
        for m in self.maps:
            path = stage / "etc/postfix" / m
            if path.exists():
                res = self._tool(["postmap", "-c", conf, "-q", "validate.invalid", f"texthash:{path}"])
                # exit 1 = key not found (fine); anything else, or a warning, is a broken map.
                if res.returncode not in (0, 1) or _WARNING.search(res.stderr):
                    raise ValidationError(self.name, f"postmap texthash:{m}", res.output)
        for m in self.regexp_maps:  # a bad pattern is only a warning of postmap's: refuse it
            path = stage / "etc/postfix" / m
            if path.exists():
                res = self._tool(["postmap", "-c", conf, "-q", "Subject: validate", f"regexp:{path}"])
                if res.returncode not in (0, 1) or _WARNING.search(res.stderr):
                    raise ValidationError(self.name, f"postmap regexp:{m}", res.output)

    def running(self) -> bool:
        # The master's PID file, not `postfix status`: that runs postfix-script, whose log
        # call blocks for a second while postlogd restarts during a reload.
        return _pidfile_alive(self.root, "/var/spool/postfix/pid/master.pid")

    def direct_reload(self) -> system.Result:
        if self.running():
            res = system.run(["postfix", "reload"], check=False)
        else:
            res = system.run_daemon(["postfix", "start"])
        if res.returncode != 0:
            # postfix(1) prints nothing without a terminal: the reason is in its log.
            return system.Result(res.argv, res.returncode, res.stdout, _log_tail(self.root))
        return res


class Dovecot(Service):
    name = "dovecot"
    unit = "dovecot.service"
    log_path = "/var/log/dovecot.log"
    reload_errors = re.compile(r"\b(master|config): (Error|Fatal|Panic):")
    reload_ack = re.compile(r"master: (Warning: SIGHUP received|Info: Dovecot v\S+ .*starting up)")
    ports = (143, 993)

    def validate(self, stage: Path) -> None:
        conf = str(stage / "etc/dovecot/dovecot.conf")
        self._fail_on(self._tool(["doveconf", "-n", "-c", conf]), "doveconf -n")
        # Sieve scripts (issue #9: Junk filing and learning), compiled with the staged settings
        # into throw-away binaries: a syntax error fails the apply, not a delivery.
        for script in sorted((stage / "etc/dovecot/sieve").glob("*.sieve")):
            res = self._tool(["sievec", "-c", conf, str(script), str(script.with_suffix(".svbin"))])
            self._fail_on(res, f"sievec {script.name}")
        users = stage / "etc/dovecot/users"
        if users.exists():
            for n, line in enumerate(users.read_text().splitlines(), 1):
                if line and not line.startswith("#") and not re.match(r"^[^:\s]+:\{[A-Z0-9-]+\}\S+$", line):
                    raise ValidationError(self.name, "passwd-file check", f"users line {n} is malformed")

    def running(self) -> bool:
        return _pidfile_alive(self.root, "/run/dovecot/master.pid")

    def direct_reload(self) -> system.Result:
        if self.running():
            return system.run(["doveadm", "reload"], check=False)
        return system.run_daemon(["dovecot"])


class Scheduled(Service):
    """A timer, or files a periodic job reads: without systemd nothing runs that could reload;
    under systemd the manager (re)starts the unit. Validation is the subclass's, if any."""

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
    """One of the agent's own daemons (`python -m appliance.<module> --daemon PIDFILE --log LOG`),
    which re-reads its configuration on SIGHUP and logs "<name>: started|reloaded"."""

    module = ""
    pidfile = ""

    def running(self) -> bool:
        return _pidfile_alive(self.root, self.pidfile)

    def direct_reload(self) -> system.Result:
        if self.running():
            pid = int((self.root.read(self.pidfile).content or b"0").split()[0])
            system.signal_pid(pid, signal.SIGHUP)
            return system.Result(("kill", "-HUP", str(pid)), 0, "", "")
        # The agent's own interpreter and package: /usr/bin/python3 on the box, the venv in tests.
        return system.run_daemon([sys.executable, "-m", self.module,
                                  "--daemon", self.pidfile, "--log", self.log_path])


def _pidfile_alive(root: system.Root, path: str) -> bool:
    content = root.read(path).content
    try:
        pid = int(content.split()[0]) if content else 0
    except ValueError:
        return False
    return pid > 0 and system.pid_alive(pid)


def _log_tail(root: system.Root, path: str = "/var/log/mail.log", lines: int = 5) -> str:
    content = root.read(path).content or b""
    return "\n".join(content.decode(errors="replace").splitlines()[-lines:])


def all_services(root: system.Root) -> dict[str, Service]:
    from .fail2ban import Fail2ban  # issue #8; after Postfix and Dovecot, whose logs it reads
    from .firewall import Nftables
    from .openpgp.service import PgpProxy  # issue #7; after Postfix, which makes private/
    from .policyd import Policyd
    from .privacy import Logrotate  # issue #10: log retention
    from .relay_service import WgRelay  # issue #5: the tunnel to the user's relay VPS
    from .release_agent import ReleaseAgent  # issue #10; after Postfix, which makes private/
    from .spamfilter import Rspamd  # issue #9; first: Postfix defers mail while it is down
    from .ssh import Sshd
    from .status import StatusTimer  # issue #9: the daily status mail
    from .upnp_feature import UpnpTimer  # issue #5: renewal timer
    from .web import Nginx  # issue #6

    return {s.name: s for s in (Rspamd(root), Postfix(root), Dovecot(root), PgpProxy(root), WgRelay(root),
                                Nftables(root), Sshd(root), Fail2ban(root), UpnpTimer(root),
                                Policyd(root), Nginx(root), Logrotate(root),
                                ReleaseAgent(root), StatusTimer(root))}
