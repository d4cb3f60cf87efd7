"""One shape for the agent's own daemons (the OpenPGP proxy, the policy service, the release
agent): how each starts, says it is ready, reloads, stops and, when started on demand, exits
once it has been idle for a while.

    main():  arguments -> check the configuration (exit 2 with the reason) -> run()
    run():   detach (--daemon PIDFILE --log LOG, no init system) -> drop privileges -> serve()
    serve(): listen -> "NAME: started: ..." + READY=1 -> SIGHUP: RELOADING=1, re-read, READY=1
             -> SIGTERM (or idle, when socket-activated): STOPPING=1, close -> "NAME: stopped"

Under systemd the units are Type=notify: `systemctl start|restart` returns once the daemon has
sent READY=1 (it listens), and the unit shows "reloading" until a reload is done, so the
agent's probe waits on systemd instead of on a log line. Without systemd (the lab, a container)
there is no NOTIFY_SOCKET: notify() does nothing and the probe reads the log lines instead.

This module is what a daemon process imports from the core besides `system` (detaching,
privileges): nothing of the agent's planning side, so an idle daemon holds little beyond the
interpreter. python3-systemd is imported only when systemd is there to talk to.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from typing import Any

from appliance.core import system


def log(name: str, msg: str) -> None:
    """One line in the daemon's log: stdout, which is the log file (--log, or the unit's
    StandardOutput=append:)."""
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {name}: {msg}", flush=True)


def notify(*states: str) -> None:
    """sd_notify(3): READY=1, RELOADING=1, STOPPING=1, STATUS=...; a no-op without systemd."""
    if not os.environ.get("NOTIFY_SOCKET"):
        return
    from systemd import daemon as sd  # python3-systemd: only where systemd runs the daemon

    sd.notify("\n".join(states))


def activated_sockets() -> dict[str, socket.socket]:
    """The listening sockets systemd passed (socket activation), by name (the socket unit's
    FileDescriptorName=); empty when the daemon was started otherwise."""
    if not os.environ.get("LISTEN_FDS"):
        return {}
    from systemd import daemon as sd

    # Checks LISTEN_PID, and unsets the variables so that no child takes them for its own.
    return {name: socket.socket(fileno=fd) for fd, name in sd.listen_fds_with_names().items()}


class Idle:
    """Work in progress, counted, so an on-demand daemon knows when it has had none for long
    enough to exit (the socket stays with systemd, which starts it again on the next
    connection)."""

    def __init__(self) -> None:
        self.busy = 0
        self.since = time.monotonic()

    @contextlib.contextmanager
    def work(self) -> Iterator[None]:
        self.busy += 1
        try:
            yield
        finally:
            self.busy -= 1
            self.since = time.monotonic()

    def idle_for(self) -> float:
        return 0.0 if self.busy else time.monotonic() - self.since


class ReloadError(Exception):
    """The new configuration is refused; the daemon keeps running with the one it had."""


async def serve(name: str, listen: Callable[[], Awaitable[Sequence[asyncio.AbstractServer]]], *,
                started: str, reload: Callable[[], str] | None = None,
                ready: asyncio.Event | None = None, idle: Idle | None = None,
                exit_when_idle: float = 0.0, on_stop: Callable[[], None] | None = None) -> None:
    """Run a daemon until SIGTERM/SIGINT, or until it has been idle for `exit_when_idle`
    seconds (0: never).

    `listen()` opens the daemon's servers (and may do start-up work such as a queue flush);
    `started` completes the "NAME: started: ..." line. `reload()` runs on SIGHUP and returns
    what the "NAME: reloaded: ..." line says, or raises to keep the old configuration (logged
    as "NAME: Error: reload ignored: ..." which the agent's probe reports)."""
    loop = asyncio.get_running_loop()
    servers = await listen()
    stop = asyncio.Event()

    def hup() -> None:
        notify("RELOADING=1", "STATUS=reloading")
        try:
            said = reload() if reload else "nothing to re-read"
        except Exception as e:  # noqa: BLE001 - a bad file must not take the daemon down
            log(name, f"Error: reload ignored: {e}")
            notify("READY=1", f"STATUS=reload ignored: {e}"[:200])
        else:
            log(name, f"reloaded: {said}")
            notify("READY=1", "STATUS=running")

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, hup)
    log(name, f"started: {started}")
    notify("READY=1", "STATUS=running")
    if ready:
        ready.set()
    watch = asyncio.create_task(_idle_watch(idle, exit_when_idle, stop, name)) \
        if idle and exit_when_idle > 0 else None
    try:
        await stop.wait()
    finally:
        notify("STOPPING=1")
        if watch:
            watch.cancel()
        for s in servers:
            s.close()
        if idle:
            # A session accepted just before the decision finishes (bounded).
            for _ in range(300):
                if not idle.busy:
                    break
                await asyncio.sleep(0.1)
        if on_stop:
            on_stop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
    log(name, "stopped")


async def _idle_watch(idle: Idle, after: float, stop: asyncio.Event, name: str) -> None:
    while True:
        await asyncio.sleep(min(5.0, after / 4))
        if idle.idle_for() >= after:
            log(name, f"idle for {after:.0f} s: exiting (systemd starts it again on demand)")
            stop.set()
            return


def add_arguments(parser: argparse.ArgumentParser, log_path: str) -> None:
    """The options every daemon has for running without an init system."""
    add = parser.add_argument
    add("--daemon", metavar="PIDFILE", help="detach, write PIDFILE (no init system)")
    add("--log", default=log_path, help="with --daemon: append the log here")


def run(main: Callable[[], Coroutine[Any, Any, None]], *, daemon: str | None, log_path: str,
        user: str | None = None) -> int:
    """Detach when asked (the lab: --daemon PIDFILE, the PID file the agent reads to signal
    and stop it), become `user` when started as root, and serve until stopped."""
    if daemon:
        system.daemonize(daemon, log_path)
    if user:
        system.drop_privileges(user)
    asyncio.run(main())
    return 0
