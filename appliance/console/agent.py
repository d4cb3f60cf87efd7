"""The console's privileged half (root): a fixed list of named operations over a unix socket.

broker.py  the Agent: sessions, jobs, `appliance` verbs run as child processes
ops.py     the operations, each naming who may call it (setup session, admin, mail user)
agent.py   this: the socket server and the entry point

Started on demand by appliance-console-agent.socket; it exits after --exit-when-idle seconds
without a request. Without systemd (the lab) it makes its own socket: --daemon PIDFILE --log LOG.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import sys
from pathlib import Path

from appliance.console import ops, ops_account, ops_system, protocol
from appliance.console.broker import NAME, SETTINGS, Agent
from appliance.console.protocol import DENIED
from appliance.core import daemon, system

LOG = "/var/log/appliance-console.log"
GROUP = "appliance-console"  # the web process's group: the only other one that may connect
__all__ = ["Agent", "main", "ops", "ops_account", "ops_system", "serve"]  # ops*: for their registrations


# --- the server --------------------------------------------------------------------------------------
async def serve(agent: Agent, socket_path: str, exit_when_idle: float) -> None:
    idle = daemon.Idle()

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with idle.work():
            try:
                line = await reader.readline()
                request = json.loads(line) if line.strip() else {}
                if not isinstance(request, dict):
                    raise ValueError("not an object")
                args = request.get("args")
                if isinstance(args, dict):
                    args["_client"] = _address(request.get("client"))
                answer = await asyncio.to_thread(agent.handle, request)
            except (ValueError, asyncio.LimitOverrunError) as e:
                answer = {"ok": False, "error": f"bad request: {e}", "code": DENIED}
            writer.write(json.dumps(answer).encode() + b"\n")
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            writer.close()

    async def listen() -> list[asyncio.AbstractServer]:
        passed = daemon.activated_sockets()
        if passed:
            sock = next(iter(passed.values()))
            return [await asyncio.start_unix_server(session, sock=sock, limit=protocol.MAX_LINE)]
        Path(socket_path).parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        system.remove_path(socket_path)
        server = await asyncio.start_unix_server(session, path=socket_path, limit=protocol.MAX_LINE)
        with contextlib.suppress(KeyError):
            system.chown_path(socket_path, "root", GROUP, 0o660)
        return [server]

    await daemon.serve(NAME, listen, started=f"listening on {socket_path}", idle=idle,
                       exit_when_idle=exit_when_idle)


def _address(text: object) -> str:
    """The browser's address as the web process passed it on (nginx's $remote_addr); anything
    else is "?", so no text from a request reaches the log lines fail2ban reads."""
    try:
        return str(ipaddress.ip_address(str(text)))
    except ValueError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    daemon.add_arguments(p, LOG)
    p.add_argument("--socket", default=protocol.AGENT_SOCKET)
    p.add_argument("--settings", default=SETTINGS)
    p.add_argument("--exit-when-idle", type=float, default=0.0, metavar="SECONDS")
    a = p.parse_args(argv)
    agent = Agent(Path("/"), a.settings)
    return daemon.run(lambda: serve(agent, a.socket, a.exit_when_idle),
                      daemon=a.daemon, log_path=a.log)


if __name__ == "__main__":
    sys.exit(main())
