"""The calendar and contacts server: Debian's Radicale, run in the shape of the agent's other
daemons (core/daemon.py): started, reloaded on SIGHUP (its configuration re-read, the old one
kept if the new one is refused), stopped on SIGTERM, one log. It listens on loopback only: the
box's nginx is its TLS front, on the LAN and (when turned on) the internet.

    python3 -m appliance.features.dav.server [--config /etc/radicale/config]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pwd
import socket
import sys
import threading
from pathlib import Path

from appliance.core import daemon, system
from appliance.features.dav.config import CONF, HOST, LOG, NAME, PORT, STORAGE, USER


def load(path: str):  # noqa: ANN201 - Radicale's Configuration
    """Radicale's configuration from its file alone (no user or system file besides)."""
    from radicale import config

    configuration = config.load([(path, False)])
    configuration.get("server", "hosts")  # a bad value fails here, not in the server thread
    return configuration


class Server:
    """Radicale's own threaded HTTP server, in a thread this daemon can stop and restart."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.thread: threading.Thread | None = None
        self.stop_socket: socket.socket | None = None

    def start(self, configuration) -> None:  # noqa: ANN001
        from radicale import server

        ours, theirs = socket.socketpair()
        self.stop_socket = ours
        self.thread = threading.Thread(target=server.serve, args=(configuration, theirs),
                                       name="radicale", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Closing our end tells Radicale's server to finish its requests and return."""
        if self.stop_socket is not None:
            self.stop_socket.close()
        if self.thread is not None:
            self.thread.join(timeout=30)

    def reload(self) -> str:
        configuration = load(self.path)  # raises: the running server keeps the old one
        self.stop()
        self.start(configuration)
        return f"{self.path} re-read"


async def serve(path: str) -> None:
    from radicale import log

    log.setup()  # Radicale's own lines (wrong logins, errors) go to this daemon's log
    configuration = load(path)
    log.set_level(configuration.get("logging", "level"))
    srv = Server(path)
    srv.start(configuration)

    async def listen() -> list[asyncio.AbstractServer]:
        for _ in range(100):  # the server thread binds within a moment
            if srv.thread is not None and not srv.thread.is_alive():
                raise SystemExit(f"{NAME}: Radicale did not start (see above)")
            try:
                socket.create_connection((HOST, PORT), timeout=1).close()
                break
            except OSError:
                await asyncio.sleep(0.05)
        return []

    await daemon.serve(NAME, listen, started=f"listening on {HOST}:{PORT}", reload=srv.reload,
                       on_stop=srv.stop)


def prepare_storage(user: str) -> None:
    """Radicale's folder, owned by the user it runs as (created on a fresh data partition)."""
    if os.geteuid() != 0:
        return
    pw = pwd.getpwnam(user)
    root = system.Root("/")
    for p in (str(Path(STORAGE).parent), STORAGE):
        root.makedirs(p, 0o750, pw.pw_uid, pw.pw_gid)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=NAME, description=(__doc__ or "").splitlines()[0])
    p.add_argument("--config", default=CONF)
    p.add_argument("--user", default=USER, help="run as this user (when started as root)")
    daemon.add_arguments(p, LOG)
    a = p.parse_args(argv)
    try:
        load(a.config)
        prepare_storage(a.user)
    except Exception as e:  # noqa: BLE001 - Radicale's configuration errors are plain Exceptions
        print(f"{NAME}: {a.config}: {e}", file=sys.stderr)
        return 2
    return daemon.run(lambda: serve(a.config), daemon=a.daemon, log_path=a.log, user=a.user)


if __name__ == "__main__":
    sys.exit(main())
