"""Postfix and Dovecot: validated with postconf/postmap and doveconf/sievec, reloaded with their
own commands where no systemd runs them."""

from __future__ import annotations

import re
from pathlib import Path

from appliance.core import system
from appliance.core.errors import ValidationError
from appliance.core.services import WARNING, Service, log_tail, pidfile_alive


class Postfix(Service):
    keeps_data = True  # the queue
    name = "postfix"
    unit = "postfix.service"
    log_path = "/var/log/mail.log"
    reload_errors = re.compile(r"postfix(/[\w-]+)?/(master|postfix-script)\[\d+\]: (fatal|panic):")
    reload_ack = re.compile(r"postfix(/[\w-]+)?/master\[\d+\]: (reload|daemon started) ")
    ports = (25, 465, 587)
    config_dir = "/etc/postfix"
    # The map files the templates reference, validated as texthash tables.
    maps = ("vmailbox", "virtual", "sender_login", "sasl_passwd",
            "transport", "release_access")  # release by reply (privacy)
    regexp_maps = ("submission_header_checks",)

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
                if res.returncode not in (0, 1) or WARNING.search(res.stderr):
                    raise ValidationError(self.name, f"postmap texthash:{m}", res.output)
        for m in self.regexp_maps:  # a bad pattern is only a warning of postmap's: refuse it
            path = stage / "etc/postfix" / m
            if path.exists():
                res = self._tool(["postmap", "-c", conf, "-q", "Subject: validate", f"regexp:{path}"])
                if res.returncode not in (0, 1) or WARNING.search(res.stderr):
                    raise ValidationError(self.name, f"postmap regexp:{m}", res.output)

    def running(self) -> bool:
        # The master's PID file, not `postfix status`: that runs postfix-script, whose log
        # call blocks for a second while postlogd restarts during a reload.
        return pidfile_alive(self.root, "/var/spool/postfix/pid/master.pid")

    def direct_reload(self) -> system.Result:
        if self.running():
            res = system.run(["postfix", "reload"], check=False)
        else:
            res = system.run_daemon(["postfix", "start"])
        if res.returncode != 0:
            # postfix(1) prints nothing without a terminal: the reason is in its log.
            return system.Result(res.argv, res.returncode, res.stdout, log_tail(self.root))
        return res

    def direct_stop(self) -> system.Result:
        return system.run(["postfix", "stop"], check=False) if self.running() else \
            system.Result(("true",), 0, "", "")


# Compiled Sieve scripts: written by deliveries and IMAP sessions, which run as "mail".
SIEVE_BIN = "/var/lib/dovecot/sieve-bin"


class Dovecot(Service):
    keeps_data = True  # the mailboxes
    name = "dovecot"
    unit = "dovecot.service"
    log_path = "/var/log/dovecot.log"
    reload_errors = re.compile(r"\b(master|config): (Error|Fatal|Panic):")
    reload_ack = re.compile(r"master: (Warning: SIGHUP received|Info: Dovecot v\S+ .*starting up)")
    ports = (143, 993, 4190)

    def validate(self, stage: Path) -> None:
        conf = str(stage / "etc/dovecot/dovecot.conf")
        self._fail_on(self._tool(["doveconf", "-n", "-c", conf]), "doveconf -n")
        # Sieve scripts (Junk filing and learning, users' rules), compiled with the staged settings
        # into throw-away binaries: a syntax error fails the apply, not a delivery.
        for script in sorted((stage / "etc/dovecot/sieve").rglob("*.sieve")):
            res = self._tool(["sievec", "-c", conf, str(script), str(script.with_suffix(".svbin"))])
            self._fail_on(res, f"sievec {script.name}")
        users = stage / "etc/dovecot/users"
        if users.exists():
            for n, line in enumerate(users.read_text().splitlines(), 1):
                if line and not line.startswith("#") and not re.match(r"^[^:\s]+:\{[A-Z0-9-]+\}\S+$", line):
                    raise ValidationError(self.name, "passwd-file check", f"users line {n} is malformed")

    def after_write(self) -> None:
        # A script rewritten within the second its old binary was saved would look current.
        for binary in self.root.host(SIEVE_BIN).glob("*.svbin"):
            system.remove_path(binary)

    def running(self) -> bool:
        return pidfile_alive(self.root, "/run/dovecot/master.pid")

    def direct_reload(self) -> system.Result:
        if self.running():
            return system.run(["doveadm", "reload"], check=False)
        return system.run_daemon(["dovecot"])

    def direct_stop(self) -> system.Result:
        return system.run(["doveadm", "stop"], check=False) if self.running() else \
            system.Result(("true",), 0, "", "")
