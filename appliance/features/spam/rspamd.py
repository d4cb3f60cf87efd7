"""rspamd as Postfix's milter: DKIM signing of the user's mail, SPF/DKIM/DMARC checks
of incoming mail, spam scoring into the Junk folder, and learning from what the user moves.

Where it sits: Postfix hands every message (port 25, submission, and local mail) to rspamd's
proxy worker over the milter protocol before accepting it, with `milter_default_action =
tempfail`, so a stopped or broken rspamd defers mail (4xx) and never lets it through unchecked
or loses it. The proxy scans by itself (`self_scan`): no separate "normal" worker, one process
less.

Memory: the first start after install (or after a rule change) compiles rspamd's pattern
databases (hyperscan) in every process's private memory, about 250 MiB in all; a later start
maps the compiled cache files, shared, about 45 MiB (`make bench` prints both). So the agent
restarts rspamd, instead of only reloading it, when the running instance compiled the caches
itself (see Rspamd.needs_restart).

Two modes ([spam] mode):
- "full": the whole scanner, Bayes in a SQLite file (no Redis to run), learning through the
  controller when a user moves mail into or out of Junk (Dovecot IMAPSieve, see dovecot.conf).
- "light": for 512 MB boards: DKIM signing and SPF/DKIM/DMARC checks only; no controller, no
  Bayes, the other modules off.

Nothing phones a vendor: fuzzy_check (which sends message hashes to rspamd.com) and
rspamd_update (rules fetched from rspamd.com) are off in both modes. DNS blocklist queries go
through the box's resolver, as any MTA's do.
"""

from __future__ import annotations

import ipaddress
import re
import signal
import time
from pathlib import Path

from appliance.core import system
from appliance.core.errors import ValidationError
from appliance.core.plan import FileSpec, Inputs
from appliance.core.services import Service, pidfile_alive, read_pid
from appliance.features.spam import dkim
from appliance.features.spam.settings import SPAM_BLOCKLISTS

SERVICE = "rspamd"
MILTER = "inet:127.0.0.1:11332"
CONTROLLER = "127.0.0.1:11334"
LOCAL_D = "/etc/rspamd/local.d"
OVERRIDE_D = "/etc/rspamd/override.d"
SIEVE_DIR = "/etc/dovecot/sieve"
CACHE_DIR = "/var/lib/rspamd"  # rspamd's DBDIR: Bayes files and the compiled pattern caches

# Off in light mode: everything but what DKIM, SPF, DMARC and the milter headers need.
LIGHT_OFF = (
    "antivirus", "arc", "bimi", "clickhouse", "dcc", "elastic", "emails", "external_relay",
    "external_services", "force_actions", "forged_recipients", "greylist", "hfilter",
    "history_redis", "http_headers", "maillist", "metadata_exporter", "metric_exporter", "mid",
    "mime_types", "mx_check", "neural", "once_received", "p0f", "phishing",
    "ratelimit", "rbl", "replies", "reputation", "spamassassin", "spamtrap", "trie",
    "url_redirector", "whitelist",
)
# Debian's bind sockets (rspamd.conf), used where local.d names none.
WORKER_SOCKETS = {"worker-proxy": "localhost:11332", "worker-normal": "localhost:11333",
                  "worker-controller": "localhost:11334"}
# Off always: they would send data about the user's mail to a third party, or fetch code
# (asn asks asn.rspamd.com about every sending address).
ALWAYS_OFF = ("asn", "fuzzy_check", "rspamd_update")


def feature(i: Inputs) -> list[FileSpec]:
    s, selector = i.settings, i.state.get("dkim_selector")
    light = s.spam.mode == "light"
    ctx = (("light", light), ("controller", CONTROLLER),
           ("dkim_selector", selector),
           ("dkim_key", dkim.key_path(selector) if selector else ""))
    specs = [FileSpec(f"etc/rspamd/local.d/{name}.j2", f"{LOCAL_D}/{name}", SERVICE, extra=ctx)
             for name in ("logging.inc", "worker-proxy.inc", "worker-normal.inc",
                          "worker-controller.inc", "actions.conf", "dkim_signing.conf",
                          "dmarc.conf", "milter_headers.conf", "classifier-bayes.conf",
                          "settings.conf")]
    # Replace Debian's values instead of merging with them: local_addrs (see the template), and
    # every map list that names maps.rspamd.com, kept to the package's and the box's files.
    specs += [FileSpec(f"etc/rspamd/override.d/{name}.j2", f"{OVERRIDE_D}/{name}", SERVICE,
                       extra=ctx)
              for name in ("options.inc", "mime_types.conf", "mid.conf", "rbl.conf",
                           "phishing.conf", "whitelist.conf", "multimap.conf")]
    specs += [FileSpec(f"etc/rspamd/local.d/maps.d/{name}.j2", f"{LOCAL_D}/maps.d/{name}",
                       SERVICE, order=5, extra=ctx) for name in ("freemail.inc", "disposable.inc")]
    # A module's switch file exists only while it is off: in full mode the light-mode ones are
    # not wanted, so apply deletes them and Debian's defaults turn those modules back on.
    specs += [FileSpec("etc/rspamd/local.d/module-off.conf.j2", f"{LOCAL_D}/{m}.conf", SERVICE)
              for m in ALWAYS_OFF + (LIGHT_OFF if light else ()) if m != "rbl"]
    on = s.spam.blocklists
    specs.append(FileSpec("etc/rspamd/local.d/rbl.conf.j2", f"{LOCAL_D}/rbl.conf", SERVICE,
                          extra=(("off", light), ("on", on),
                                 ("off_rules", tuple(r for r in SPAM_BLOCKLISTS if r not in on)))))
    # Dovecot's side: Junk filing at delivery; in full mode, learning when the user moves mail.
    sieve = ["junk-filter.sieve"] + ([] if light else ["learn-spam.sieve", "learn-ham.sieve"])
    specs += [FileSpec(f"etc/dovecot/sieve/{name}.j2", f"{SIEVE_DIR}/{name}", "dovecot",
                       order=20, extra=ctx) for name in sieve]
    if not light:
        specs += [FileSpec(f"etc/dovecot/sieve/{name}.j2", f"{SIEVE_DIR}/{name}", "dovecot",
                           mode=0o755, order=20, extra=ctx)
                  for name in ("rspamd-learn-spam", "rspamd-learn-ham")]
    return specs


class Rspamd(Service):
    name = SERVICE
    unit = "rspamd.service"
    log_path = "/var/log/rspamd/rspamd.log"
    pidfile = "/run/rspamd/rspamd.pid"
    # rspamd logs nothing at notice level when it (re)loads its configuration (the banner goes to
    # stderr before the log opens), so the probe below waits for the processes and ports.
    # Only the main process's own words: a worker may log a passing error (two workers creating
    # the Bayes files at once) without the configuration being wrong; configtest judged that.
    reload_errors = re.compile(r"#\d+\(main\).*(cannot (load|parse|open) config|fatal)")
    ports = (11332,)
    independent = True  # Postfix asks its milter per message, and defers mail while it is down
    keeps_data = True  # what it learned of spam and ham (Bayes)

    def validate(self, stage: Path) -> None:
        local = stage / "etc/rspamd"
        if not local.is_dir():
            return
        # The package's rspamd.conf with the staged local.d in place of the live one. Not strict
        # (-s): that also fails when /etc/resolv.conf names no server yet (a first boot without
        # network), which says nothing about the files; syntax errors fail either way.
        res = system.run(["rspamadm", f"--var=LOCAL_CONFDIR={local}", "configtest",
                          "-c", "/etc/rspamd/rspamd.conf"], check=False)
        if res.returncode != 0 or "syntax OK" not in res.stdout:
            raise ValidationError(self.name, "rspamadm configtest", res.output)

    def running(self) -> bool:
        return pidfile_alive(self.root, self.pidfile)

    def probe(self, log_offset: int, settle: float = 300.0) -> str | None:
        """Running, its milter (and controller) listening, and no configuration error logged,
        held for a second: after a SIGHUP the old workers answer until the new ones are up.
        Five minutes at most: a start that must compile the pattern caches takes seconds on real
        hardware but minutes under emulation (the amd64 image's boot test: over 60 s)."""
        ports = self._ports()
        deadline = time.monotonic() + settle
        good_since: float | None = None
        while time.monotonic() < deadline:
            new = self.root.read_from(self.log_path, log_offset)
            bad = [line for line in new.splitlines() if self.reload_errors.search(line)]
            if bad:
                return "\n".join(bad[-5:])
            if self.active() and ports <= system.listening_tcp_ports():
                good_since = good_since or time.monotonic()
                if time.monotonic() - good_since >= 1.0:
                    return None
            else:
                good_since = None
            time.sleep(0.1)
        if not self.active():
            return f"{self.name} is not running (see {self.log_path})"
        return f"{self.name} is not listening on port(s) {', '.join(map(str, sorted(ports)))}"

    def _controller(self) -> bool:
        conf = self.root.read(f"{LOCAL_D}/worker-controller.inc").content or b""
        return b"enabled = false" not in conf

    def _ports(self) -> set[int]:
        return {11332} | ({int(CONTROLLER.rpartition(":")[2])} if self._controller() else set())

    def wanted_sockets(self) -> set[tuple[str, int]]:
        """The addresses the workers bind with the configuration on disk: the agent's local.d
        file where it names a bind_socket, else Debian's default (rspamd.conf), none for a
        worker that is off."""
        wanted: set[tuple[str, int]] = set()
        for worker, default in WORKER_SOCKETS.items():
            conf = (self.root.read(f"{LOCAL_D}/{worker}.inc").content or b"").decode()
            if re.search(r"^\s*enabled\s*=\s*false", conf, re.M):
                continue
            m = re.search(r'^\s*bind_socket\s*=\s*"([^"]+)"', conf, re.M)
            wanted |= _expand(m.group(1) if m else default)
        return wanted

    def wanted_ports(self) -> set[int]:
        return {port for _, port in self.wanted_sockets()} | {
            int(d.rpartition(":")[2]) for d in WORKER_SOCKETS.values()}

    def needs_restart(self) -> bool:
        """A restart rather than a SIGHUP when a reload would not do:
        - rspamd's main process binds the workers' sockets once, at start: a SIGHUP with any
          worker's bind socket changed fails (Debian's default binds the proxy to
          `localhost:11332`, both 127.0.0.1 and ::1; ours binds 127.0.0.1 only, and the main
          process exits with "Address already in use"), one that drops the controller (light
          mode) would leave its port open with nobody serving it, one that adds it would never
          listen. So any difference between the sockets rspamd listens on and the ones the
          configuration names restarts it;
        - the running instance compiled the pattern caches itself (they are newer than it), so
          every process holds a private copy: a restart maps the cache files instead, shared
          (about 250 MiB of PSS down to about 45 MiB, measured by bench/spam.py)."""
        if not self.running():
            return False
        if self.wanted_sockets() != listening_sockets(self.wanted_ports()):
            return True
        pid = read_pid(self.root, self.pidfile)
        started = system.process_start_time(pid)
        caches = [p.stat().st_mtime for p in self.root.host(CACHE_DIR).glob("*.hs*")]
        return started is not None and bool(caches) and max(caches) > started

    def direct_reload(self) -> system.Result:
        if self.running() and self.needs_restart():
            pid = read_pid(self.root, self.pidfile)
            system.signal_pid(pid, signal.SIGTERM)
            for _ in range(100):  # bounded: 10 s for the workers to finish their messages
                if not system.pid_alive(pid):
                    break
                time.sleep(0.1)
        if self.running():
            pid = read_pid(self.root, self.pidfile)
            system.signal_pid(pid, signal.SIGHUP)
            return system.Result(("kill", "-HUP", str(pid)), 0, "", "")
        # What Debian's package and unit provide on a real box (the lab's /var and /run are
        # its own): the state, log and run directories, owned by rspamd's account.
        uid, gid = self.root.lookup_ids("_rspamd", "_rspamd")
        for d in ("/var/lib/rspamd", "/var/log/rspamd", "/run/rspamd"):
            self.root.makedirs(d, mode=0o750, uid=uid, gid=gid)
        return system.run_daemon(["rspamd", "-c", "/etc/rspamd/rspamd.conf",
                                  "-u", "_rspamd", "-g", "_rspamd"])


def _expand(bind: str) -> set[tuple[str, int]]:
    """rspamd's bind_socket as the addresses it listens on: `localhost` is both loopbacks,
    `*` both wildcards (a Unix socket path names no TCP address)."""
    host, _, port = bind.rpartition(":")
    if not port.isdigit():
        return set()
    host = host.strip("[]")
    hosts = {"localhost": ("127.0.0.1", "::1"), "*": ("0.0.0.0", "::")}.get(host, (host,))
    return {(str(ipaddress.ip_address(h)), int(port)) for h in hosts}


def listening_sockets(ports: set[int], proc: str = "/proc/net") -> set[tuple[str, int]]:
    """The (address, port) pairs listening on these TCP ports in this network namespace."""
    found: set[tuple[str, int]] = set()
    for name in ("tcp", "tcp6"):
        try:
            lines = Path(proc, name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 4 or fields[3] != "0A":  # TCP_LISTEN
                continue
            addr, _, port = fields[1].partition(":")
            # /proc prints each 32-bit word of the address in host (little-endian) byte order.
            raw = b"".join(bytes.fromhex(addr[i:i + 8])[::-1] for i in range(0, len(addr), 8))
            if int(port, 16) in ports:
                found.add((str(ipaddress.ip_address(raw)), int(port, 16)))
    return found

