"""A lab of network namespaces with real daemons, for tests that cross a network.

Each lab host is a network namespace plus a private mount namespace (a "view"): /etc is an
overlay over the real /etc (writes land in the lab's own directory), and /var and /run are
the lab's own empty directories. Daemons therefore use their ordinary paths
(/etc/postfix/main.cf, /var/spool/postfix, /run/dovecot) exactly as on the appliance, while
the machine running the tests is left untouched.

Adding a host is one call (`lab.host(...)` + `lab.wan(...)`/`lab.lan(...)`); adding a daemon is
`host.spawn(name, argv)` (foreground daemons, tracked by PID) or `host.track_pidfile(...)`
(daemons that fork). Teardown kills only the PIDs the lab started or that live in its own
namespaces, then deletes the namespaces.

Addresses follow the test network rule: 198.18.0.0/15 on the LAN side, 203.0.113.0/24 and
198.51.100.0/24 on the "internet" side, which has no route out of the lab.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

LAB_LIFETIME = 1800  # seconds; every daemon runs under `timeout` so none outlives a lost lab


def sh(argv: Sequence[str], check: bool = True, timeout: float = 60,
       **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), check=check, timeout=timeout, text=True,  # noqa: S603
                          capture_output=True, **kw)  # type: ignore[call-overload]


def wait_for(what: str, probe: Callable[[], object], timeout: float = 20, interval: float = 0.1) -> object:
    """Poll `probe` until it returns something truthy; bounded in time and count."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / interval) + 1):
        try:
            got = probe()
            if got:
                return got
        except Exception:  # noqa: S110 - a probe that raises means "not yet"
            pass
        if time.monotonic() > deadline:
            break
        time.sleep(interval)
    raise TimeoutError(f"lab: timed out after {timeout:.0f} s waiting for {what}")


@dataclass
class Host:
    lab: Lab
    name: str  # short name; the namespace is lab.prefix + name
    ns: str
    root: Path  # this host's private directories (etc overlay upper, var, run)
    holder: subprocess.Popen[bytes] | None = None
    pids: dict[str, int] = field(default_factory=dict)
    pidfiles: dict[str, Path] = field(default_factory=dict)

    # --- running things inside the host ------------------------------------------------
    def argv(self, argv: Sequence[str]) -> list[str]:
        assert self.holder is not None
        return ["nsenter", "-t", str(self.holder.pid), "-m", "-n", "--", *argv]

    def run(self, argv: Sequence[str], check: bool = True, timeout: float = 60,
            input: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        full_env = None if env is None else {**os.environ, **env}
        return sh(self.argv(argv), check=check, timeout=timeout, input=input, env=full_env)

    def python(self, code: str, timeout: float = 60, check: bool = False) -> subprocess.CompletedProcess[str]:
        """Run Python code on this host with Debian's interpreter (as the appliance would)."""
        return self.run(["/usr/bin/python3", "-c", code], check=check, timeout=timeout)

    def spawn(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> int:
        """Start a foreground daemon; remember its PID; its output goes to logs/<name>.out."""
        log = open(self.lab.logs / f"{self.name}-{name}.out", "wb")  # noqa: SIM115
        p = subprocess.Popen(  # noqa: S603
            self.argv(["timeout", str(LAB_LIFETIME), *argv]), stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
            env=None if env is None else {**os.environ, **env},
        )
        log.close()
        self.pids[name] = p.pid
        self.lab.children.append(p)
        return p.pid

    def start_forking(self, name: str, argv: Sequence[str], pidfile: str, timeout: float = 30) -> int:
        """Start a daemon that forks (dovecot, postfix start): output to logs/, never to a pipe
        (the forked daemon would hold it open), then track it by its PID file."""
        with open(self.lab.logs / f"{self.name}-{name}.out", "wb") as log:
            rc = subprocess.run(self.argv(argv), stdout=log, stderr=subprocess.STDOUT,  # noqa: S603
                                stdin=subprocess.DEVNULL, timeout=timeout).returncode
        self.track_pidfile(name, pidfile)
        return rc

    def track_pidfile(self, name: str, target_path: str) -> None:
        """A daemon that forks and writes a PID file (target path inside this host's view)."""
        self.pidfiles[name] = self.path(target_path)

    def path(self, target: str) -> Path:
        """The host-side path of a file inside this host's view (/etc, /var or /run)."""
        t = Path(target)
        top = t.parts[1]
        if top == "etc":
            upper = self.root / "etc-upper" / t.relative_to("/etc")
            return upper if upper.exists() or not Path(target).exists() else Path(target)
        if top in ("var", "run"):
            return self.root / top / t.relative_to(f"/{top}")
        return t

    def write(self, target: str, content: str | bytes, mode: int = 0o644) -> None:
        """Write a file into this host's view (e.g. /etc/postfix/main.cf of the remote MX)."""
        data = content.encode() if isinstance(content, str) else content
        self.run(["install", "-D", "-m", oct(mode)[2:], "/dev/stdin", target],
                 input=data.decode())

    def read(self, target: str) -> str:
        return self.run(["cat", target], check=False).stdout

    def exists(self, target: str) -> bool:
        return self.run(["test", "-e", target], check=False).returncode == 0

    # --- lifecycle -------------------------------------------------------------------------
    def start_view(self, dns: str | None, share_ro: tuple[str, ...] = ()) -> None:
        for d in ("etc-upper", "etc-work", "var", "run"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        for d in ("tmp", "lib", "log", "spool", "mail"):
            (self.root / "var" / d).mkdir(exist_ok=True)
        os.chmod(self.root / "var/tmp", 0o1777)
        self.holder = subprocess.Popen(  # noqa: S603
            ["ip", "netns", "exec", self.ns, "unshare", "-m", "--propagation", "private",
             "--", "sleep", str(LAB_LIFETIME)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.lab.children.append(self.holder)
        # `ip netns exec` makes a mount namespace of its own before it exec()s `unshare`, which
        # makes the one we want and exec()s `sleep`: only once the PID runs `sleep` is it there.
        pid = self.holder.pid
        wait_for(f"{self.name} view", lambda: os.readlink(f"/proc/{pid}/exe").endswith("/sleep"),
                 timeout=10, interval=0.02)
        mounts = []
        # Read-only windows onto the real /var where a host needs them (e.g. /var/lib/dpkg for a
        # package manager that only checks what is installed), made before /var is replaced.
        for path in share_ro:
            inner = self.root / "var" / Path(path).relative_to("/var")
            inner.mkdir(parents=True, exist_ok=True)
            mounts += [["mount", "--bind", path, str(inner)],
                       ["mount", "-o", "remount,bind,ro", str(inner)]]
        mounts += [
            ["mount", "-t", "overlay", "overlay", "-o",
             f"lowerdir=/etc,upperdir={self.root}/etc-upper,workdir={self.root}/etc-work", "/etc"],
            ["mount", "--rbind", str(self.root / "var"), "/var"],
            ["mount", "--bind", str(self.root / "run"), "/run"],
        ]
        for m in mounts:
            sh(["nsenter", "-t", str(self.holder.pid), "-m", "--", *m])
        # Guard: a write into the view's /etc must never reach the real /etc.
        marker = f"/etc/.{self.ns}-view"
        self.write(marker, "lab\n")
        if Path(marker).exists() or not (self.root / "etc-upper" / marker[5:]).exists():
            raise RuntimeError(f"lab view of {self.name} is not isolated from the real /etc")
        self.write("/etc/hostname", self.name + "\n")
        self.write("/etc/resolv.conf", f"nameserver {dns}\n" if dns else "")
        self.write("/etc/hosts", "127.0.0.1 localhost\n::1 localhost\n")

    def stop(self) -> None:
        for pidfile in self.pidfiles.values():
            with contextlib.suppress(OSError, ValueError):
                pid = int(pidfile.read_text().split()[0])
                if _in_namespace(pid, self.ns):
                    os.kill(pid, signal.SIGTERM)
        for pid in self.pids.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)


def _in_namespace(pid: int, ns: str) -> bool:
    """Only signal a PID from a pid file if it really lives in our namespace."""
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{ns}").st_ino
    except OSError:
        return False


class Lab:
    def __init__(self, workdir: Path, prefix: str | None = None) -> None:
        self.workdir = workdir
        # A short random id per lab: namespaces and temporary veth names of two labs running at
        # once (two developers, CI and a bench) never collide.
        self.id = os.urandom(2).hex()
        self.prefix = prefix or f"ml{self.id}-"
        self.logs = workdir / "logs"
        self.hosts: dict[str, Host] = {}
        self.children: list[subprocess.Popen[bytes]] = []
        self._links = 0

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def ns_exec(self, ns: str, *argv: str) -> None:
        sh(["ip", "netns", "exec", self.prefix + ns, *argv])

    def host(self, name: str, dns: str | None = None, view: bool = True,
             share_ro: tuple[str, ...] = ()) -> Host:
        ns = self.prefix + name
        if ns in sh(["ip", "netns", "list"]).stdout.split():
            raise RuntimeError(f"namespace {ns} exists: a previous lab did not tear down "
                               f"(run: ip netns del {ns})")
        sh(["ip", "netns", "add", ns])
        h = Host(self, name, ns, self.workdir / "hosts" / name)
        self.hosts[name] = h
        self.ns_exec(name, "ip", "link", "set", "lo", "up")
        if view:
            h.start_view(dns, share_ro)
        return h

    def bridge(self, on: str, name: str, address: str | None = None) -> None:
        self.ns_exec(on, "ip", "link", "add", name, "type", "bridge")
        if address:
            self.ns_exec(on, "ip", "addr", "add", address, "dev", name)
        self.ns_exec(on, "ip", "link", "set", name, "up")

    def link(self, a: str, a_if: str, b: str, b_if: str, a_addr: str | None = None,
             b_master: str | None = None, b_addr: str | None = None) -> None:
        """A veth pair between host a (interface a_if) and host b (b_if, optionally a bridge port)."""
        self._links += 1
        tmp_a, tmp_b = f"ml{self.id}v{self._links}a", f"ml{self.id}v{self._links}b"
        sh(["ip", "link", "add", tmp_a, "type", "veth", "peer", "name", tmp_b])
        sh(["ip", "link", "set", tmp_a, "netns", self.prefix + a, "name", a_if])
        sh(["ip", "link", "set", tmp_b, "netns", self.prefix + b, "name", b_if])
        if a_addr:
            self.ns_exec(a, "ip", "addr", "add", a_addr, "dev", a_if)
        if b_addr:
            self.ns_exec(b, "ip", "addr", "add", b_addr, "dev", b_if)
        if b_master:
            self.ns_exec(b, "ip", "link", "set", b_if, "master", b_master)
        self.ns_exec(a, "ip", "link", "set", a_if, "up")
        self.ns_exec(b, "ip", "link", "set", b_if, "up")

    def down(self) -> None:
        for h in self.hosts.values():
            with contextlib.suppress(Exception):
                h.stop()
        # Everything still inside our namespaces is ours: TERM, bounded wait, then KILL.
        for attempt in range(40):
            pids = self._ns_pids()
            if not pids:
                break
            sig = signal.SIGTERM if attempt < 20 else signal.SIGKILL
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            time.sleep(0.1)
        for p in self.children:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=5)
        for h in self.hosts.values():
            sh(["ip", "netns", "del", h.ns], check=False)
        self.hosts.clear()
        shutil.rmtree(self.workdir / "hosts", ignore_errors=True)

    def remove(self, name: str) -> None:
        """Take one host out of a running lab (a box that a test replaced): its daemons, every
        process left in its namespace (TERM, bounded wait, then KILL), the namespace, its files."""
        h = self.hosts[name]
        with contextlib.suppress(Exception):
            h.stop()
        for attempt in range(40):
            pids = self._ns_pids([h])
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM if attempt < 20 else signal.SIGKILL)
            time.sleep(0.1)
        if h.holder is not None:
            with contextlib.suppress(ProcessLookupError):
                h.holder.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                h.holder.wait(timeout=5)
        sh(["ip", "netns", "del", h.ns], check=False)
        del self.hosts[name]
        shutil.rmtree(h.root, ignore_errors=True)

    def _ns_pids(self, hosts: Sequence[Host] | None = None) -> list[int]:
        pids: list[int] = []
        for h in self.hosts.values() if hosts is None else hosts:
            out = sh(["ip", "netns", "pids", h.ns], check=False).stdout.split()
            pids += [int(p) for p in out if p.isdigit()]
        return pids
