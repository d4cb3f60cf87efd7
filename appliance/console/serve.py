"""Run the console's web process: waitress (Debian's python3-waitress), one process with a few
threads, as user appliance-console, on the socket systemd passes (appliance-console.socket) or,
without systemd, on a unix socket it makes itself. It exits after --exit-when-idle seconds
without a request: the socket stays with systemd, which starts it again at the next visit, so
between visits the console holds no memory at all.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from appliance.console import protocol
from appliance.core import daemon, system

NAME = "appliance-console"
LOG = "/var/log/appliance-console-web.log"
USER = "appliance-console"
NGINX_GROUP = "www-data"
THREADS = 4


class LastSeen:
    """WSGI middleware: when the last request ended, and how many are in progress."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app, self.busy, self.since = app, 0, time.monotonic()
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start: Callable[..., Any]) -> Iterable[bytes]:
        with self.lock:
            self.busy += 1
        try:
            return list(self.app(environ, start))
        finally:
            with self.lock:
                self.busy -= 1
                self.since = time.monotonic()

    def idle_for(self) -> float:
        return 0.0 if self.busy else time.monotonic() - self.since


def _watch(seen: LastSeen, after: float) -> None:
    while True:
        time.sleep(min(5.0, after / 4))
        if seen.idle_for() >= after:
            daemon.log(NAME, f"idle for {after:.0f} s: exiting (systemd starts it again on demand)")
            os._exit(0)  # nothing in progress; waitress has no other way out of its loop


def listening_socket(path: str, user: str) -> socket.socket:
    """The socket systemd passed, or one made here (the lab) as the socket unit makes it:
    the console's, readable and writable by nginx's group only."""
    passed = daemon.activated_sockets()
    if passed:
        return next(iter(passed.values()))
    Path(path).parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    system.remove_path(path)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    if os.getuid() == 0:
        system.chown_path(path, user, NGINX_GROUP, 0o660)
    s.listen(64)
    return s


def one_malloc_arena() -> None:
    """glibc gives each thread that allocates its own heap ("arena"), each keeping what it
    freed: with waitress's threads that is memory the pages never need at once. One arena for
    the process (M_ARENA_MAX, before the threads start); a 512 MB board counts every MiB."""
    import ctypes
    import ctypes.util

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-8, 1)  # M_ARENA_MAX


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    daemon.add_arguments(p, LOG)
    p.add_argument("--socket", default=protocol.WEB_SOCKET)
    p.add_argument("--agent-socket", default=protocol.AGENT_SOCKET)
    p.add_argument("--user", default=USER, help="run as this user when started as root")
    p.add_argument("--exit-when-idle", type=float, default=0.0, metavar="SECONDS")
    a = p.parse_args(argv)
    if a.daemon:
        system.daemonize(a.daemon, a.log)
    sock = listening_socket(a.socket, a.user)
    system.drop_privileges(a.user)
    one_malloc_arena()
    import waitress

    from appliance.console.web import create_app

    seen = LastSeen(create_app(a.agent_socket))
    gc.collect()
    gc.freeze()  # what start-up made stays put: later collections do not touch (and copy) it
    if a.exit_when_idle > 0:
        threading.Thread(target=_watch, args=(seen, a.exit_when_idle), daemon=True).start()
    daemon.log(NAME, f"started: serving on {a.socket}")
    daemon.notify("READY=1")
    waitress.serve(seen, sockets=[sock], threads=THREADS, ident=None, _quiet=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
