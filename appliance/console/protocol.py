"""What the web process and the agent say to each other: one JSON object per line each way,
over a unix socket only root and the console's user can open.

    -> {"op": "login", "session": null, "client": "198.18.0.20", "args": {...}}
    <- {"ok": true, "result": {...}}   or   {"ok": false, "error": "...", "code": "denied"}

Kept apart so that the web process imports this and nothing else of the agent's side.
"""

from __future__ import annotations

import json
import socket
from typing import Any

AGENT_SOCKET = "/run/appliance-console/agent.sock"
WEB_SOCKET = "/run/appliance-console/web.sock"
MAX_LINE = 1 << 20  # a request or an answer: a public key upload is the largest
TIMEOUT_S = 900.0  # an apply on a Pi can take minutes; jobs answer at once and are polled

# Error codes the web process turns into pages: 403, the login page, a form's message.
DENIED, LOGIN, INVALID, BUSY, FAILED = "denied", "login", "invalid", "busy", "failed"


class AgentError(Exception):
    def __init__(self, message: str, code: str = FAILED) -> None:
        super().__init__(message)
        self.code = code


def call(op: str, args: dict[str, Any] | None = None, session: str | None = None,
         client: str = "", path: str = AGENT_SOCKET, timeout: float = TIMEOUT_S) -> Any:
    """One request, one answer; raises AgentError with the agent's own words."""
    req = json.dumps({"op": op, "session": session, "client": client, "args": args or {}})
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(path)
        except OSError as e:
            raise AgentError(f"the box's agent does not answer ({e.strerror})", BUSY) from None
        s.sendall(req.encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n") and len(buf) <= MAX_LINE:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    try:
        answer = json.loads(buf)
    except ValueError:
        raise AgentError("the box's agent gave no answer", FAILED) from None
    if not answer.get("ok"):
        raise AgentError(answer.get("error", "failed"), answer.get("code", FAILED))
    return answer.get("result")
