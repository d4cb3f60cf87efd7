"""Commands and processes: every command the agent runs, every daemon it starts or signals.
Part of the one privileged path (with rootfs.py; `system` names both)."""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_TIMEOUT = 120


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return (self.stdout + self.stderr).strip()


class CommandError(Exception):
    def __init__(self, result: Result) -> None:
        self.result = result
        super().__init__(f"`{' '.join(result.argv)}` exited {result.returncode}: {result.output}")


def run(
    argv: Sequence[str],
    *,
    input: str | None = None,
    check: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    env: dict[str, str] | None = None,
) -> Result:
    """Run a command without a shell; capture its output; bounded in time."""
    try:
        p = subprocess.run(  # noqa: S603 - argv list, no shell; the one place commands run
            list(argv), input=input, capture_output=True, text=True, timeout=timeout,
            env=env, stdin=None if input is not None else subprocess.DEVNULL,
        )
        res = Result(tuple(argv), p.returncode, p.stdout, p.stderr)
    except FileNotFoundError:
        res = Result(tuple(argv), 127, "", f"{argv[0]}: command not found")
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        res = Result(tuple(argv), 124, out, f"timed out after {timeout:.0f} s")
    if check and res.returncode != 0:
        raise CommandError(res)
    return res


def run_daemon(argv: Sequence[str], *, timeout: float = 60) -> Result:
    """Run a command that forks a daemon (`dovecot`, `postfix start`).

    Its output goes to a temporary file, not a pipe: a forked daemon inherits the descriptors
    and would keep a pipe open forever.
    """
    with tempfile.TemporaryFile(mode="w+") as out:
        try:
            p = subprocess.run(  # noqa: S603
                list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                timeout=timeout, start_new_session=True,
            )
            rc = p.returncode
        except FileNotFoundError:
            return Result(tuple(argv), 127, "", f"{argv[0]}: command not found")
        except subprocess.TimeoutExpired:
            rc = 124
        out.seek(0)
        return Result(tuple(argv), rc, out.read(), "")


def process_start_time(pid: int) -> float | None:
    """When a process started (epoch seconds), or None if it is gone."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19])
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def listening_tcp_ports() -> set[int]:
    """TCP ports with a listening socket in this network namespace (/proc/net/tcp{,6})."""
    ports: set[int] = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "0A":  # TCP_LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


@contextlib.contextmanager
def sigterm_as_exception() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into an exception for the duration, so an interrupted apply rolls
    back like a failed one (certbot's error handler does the same)."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may take signals; its handlers stay as they are
        return
    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@dataclass(frozen=True)
class BytesResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: str


def run_lines(argv: Sequence[str], *, on_line: Callable[[str], object], input: str = "",
              timeout: float = DEFAULT_TIMEOUT, env: dict[str, str] | None = None) -> Result:
    """Run a command whose stderr tells its progress (`appliance apply`): each stderr line goes
    to `on_line` as it comes; stdout is collected. Killed after `timeout`; never raises for its
    exit code."""
    try:
        p = subprocess.Popen(  # noqa: S603 - argv list, no shell
            list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=env)
    except FileNotFoundError:
        return Result(tuple(argv), 127, "", f"{argv[0]}: command not found")
    out: list[str] = []
    errs: list[str] = []
    assert p.stdin is not None and p.stdout is not None and p.stderr is not None
    reader = threading.Thread(target=lambda: out.extend(p.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()
    killer = threading.Timer(timeout, p.kill)
    killer.start()
    try:
        with contextlib.suppress(BrokenPipeError):
            p.stdin.write(input)
            p.stdin.close()
        for line in p.stderr:
            errs.append(line)
            on_line(line.rstrip("\n"))
        p.wait()
    finally:
        killer.cancel()
        reader.join(timeout=30)
    code = 124 if p.returncode == -9 else p.returncode
    return Result(tuple(argv), code, "".join(out), "".join(errs))


def run_bytes(argv: Sequence[str], *, input: bytes = b"", timeout: float = DEFAULT_TIMEOUT,
              env: dict[str, str] | None = None) -> BytesResult:
    """Run a command on binary input and output (gpg); never raises for its exit code."""
    try:
        p = subprocess.run(  # noqa: S603 - argv list, no shell
            list(argv), input=input, capture_output=True, timeout=timeout, env=env,
        )
        return BytesResult(tuple(argv), p.returncode, p.stdout, p.stderr.decode(errors="replace"))
    except FileNotFoundError:
        return BytesResult(tuple(argv), 127, b"", f"{argv[0]}: command not found")
    except PermissionError as e:
        return BytesResult(tuple(argv), 126, b"", f"{argv[0]}: {e.strerror}")
    except subprocess.TimeoutExpired:
        return BytesResult(tuple(argv), 124, b"", f"timed out after {timeout:.0f} s")


def start_coprocess(argv: Sequence[str], *, env: dict[str, str],
                    pass_fds: Sequence[int] = ()) -> subprocess.Popen:
    """A long-running helper of a daemon (the OpenPGP proxy's `gpg --server`), talked to over
    an inherited socket in `pass_fds`: stdin/stdout /dev/null, stderr the daemon's (its log).
    Raises FileNotFoundError / PermissionError when argv[0] cannot be run."""
    return subprocess.Popen(  # noqa: S603 - argv list, no shell
        list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env,
        pass_fds=tuple(pass_fds), close_fds=True)


def stop_coprocess(p: subprocess.Popen) -> None:
    """Kill a `start_coprocess` child and reap it (SIGKILL: it holds no state worth saving)."""
    with contextlib.suppress(ProcessLookupError, OSError):
        p.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        p.wait(timeout=5)


def daemonize(pidfile: str, log_path: str) -> None:
    """Detach the calling process (double fork), stdout/stderr to `log_path`, write `pidfile`.

    For the lab's "direct" service manager; under systemd the service runs in the foreground."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    tmp = f"{pidfile}.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(f"{os.getpid()}\n")
    os.replace(tmp, pidfile)


def drop_privileges(user: str) -> None:
    """Become `user` (and its primary group, no supplementary groups); no-op unless root."""
    if os.getuid() != 0:
        return
    pw = pwd.getpwnam(user)
    os.setgroups([])
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)


def signal_pid(pid: int, signum: int) -> bool:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return False
    return True


def stop_pid(pid: int, timeout: float = 10.0) -> bool:
    """SIGTERM, a bounded wait, then SIGKILL. True once the process is gone."""
    if not signal_pid(pid, signal.SIGTERM):
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    signal_pid(pid, signal.SIGKILL)
    time.sleep(0.2)
    return not pid_alive(pid)
