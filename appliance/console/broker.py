"""The agent's state and plumbing: the Agent (sessions, jobs, the settings file, `appliance`
verbs run as child processes) and the registry of named operations (ops.py fills it).

Each operation says who may call it: "" anyone (before login), "setup" the session the setup
code opened, "admin" the administrator, "user" a mail user on their own account.
"""

from __future__ import annotations

import io
import secrets
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.console import auth
from appliance.console.protocol import BUSY, DENIED, FAILED, INVALID, LOGIN
from appliance.core import daemon, system

NAME = "appliance-console-agent"
SETTINGS = "/etc/appliance/settings.toml"
MIN_PASSWORD = 10
VERB_TIMEOUT_S = 900  # the first apply on a slow card, as the first boot allows
# What the wizard runs once it has written the settings, each an `appliance` verb, in order,
# and whether setup failed when it fails. The reachability verdict is an answer, not a
# failure: a box behind a router without forwarding is set up, and is told what to do next.
Step = tuple[str, tuple[str, ...], bool]
SETUP_STEPS: tuple[Step, ...] = (
    ("Configure mail, the firewall and the certificate", ("apply",), True),
    ("Can the internet reach the box?", ("reachability",), False),
)


class OpError(Exception):
    def __init__(self, message: str, code: str = INVALID) -> None:
        super().__init__(message)
        self.code = code


def log(msg: str) -> None:
    daemon.log(NAME, msg)


@dataclass
class Job:
    """A long operation (the first apply): its lines as they come, then whether it worked."""

    steps: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    done: bool = False
    ok: bool = False
    who: str = ""
    notes: list[dict[str, str]] = field(default_factory=list)  # answers the person must read
    kind: str = "setup"  # what the progress page calls it: "setup" or "backup"


class _Lines(io.TextIOBase):
    """A stream that hands each complete line to a list (the apply's own progress lines)."""

    def __init__(self, sink: list[str]) -> None:
        self.sink, self.part = sink, ""

    def write(self, s: str) -> int:
        self.part += s
        *whole, self.part = self.part.split("\n")
        self.sink.extend(line for line in whole if line.strip())
        return len(s)


Handler = Callable[["Agent", auth.Session | None, dict[str, Any], str], Any]
OPS: dict[str, tuple[frozenset[str], Handler]] = {}


def op(name: str, *roles: str) -> Callable[[Handler], Handler]:
    """Register an operation and who may call it ("" = anyone, before login)."""
    def deco(fn: Handler) -> Handler:
        OPS[name] = (frozenset(roles), fn)
        return fn
    return deco


class Agent:
    def __init__(self, root: Path = Path("/"), settings_path: str = SETTINGS,
                 setup_steps: tuple[Step, ...] = SETUP_STEPS, edit_flags: tuple[str, ...] = ()) -> None:
        self.root = root
        self.settings_path = settings_path
        self.setup_steps = setup_steps
        # Added to the settings edits (`appliance set`): ("--no-apply",) in a unit test, which
        # must not configure the machine it runs on.
        self.edit_flags = edit_flags
        self.sessions = auth.Sessions(root)
        self.jobs: dict[str, Job] = {}
        self.setup_lock = threading.Lock()
        self.throttle = auth.Throttle()
        # One-time device links (QR codes): link -> (address, device name, valid until).
        self.links: dict[str, tuple[str, str, float]] = {}

    # --- plumbing -----------------------------------------------------------------------------
    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        name = request.get("op")
        args = request.get("args") or {}
        if name not in OPS or not isinstance(args, dict):
            return {"ok": False, "error": f"no such operation: {name!r}", "code": DENIED}
        roles, fn = OPS[name]
        token = request.get("session")
        session = self.sessions.get(token) if isinstance(token, str) else None
        if roles and (session is None or session.role not in roles):
            return {"ok": False, "error": "log in first" if session is None else
                    "you may not do that", "code": LOGIN if session is None else DENIED}
        try:
            return {"ok": True, "result": fn(self, session, args, token or "")}
        except OpError as e:
            return {"ok": False, "error": str(e), "code": e.code}
        except Exception as e:  # noqa: BLE001 - the page says so; the agent keeps serving
            log(f"Error: {name}: {type(e).__name__}: {e}")
            return {"ok": False, "error": f"{type(e).__name__}: {e}", "code": FAILED}

    def settings_file(self) -> Path:
        return self.root / self.settings_path.lstrip("/")

    def appliance(self, *argv: str, stdin: str = "",
                  err: io.TextIOBase | None = None) -> tuple[int, str, str]:
        """One `appliance` verb, as its own process: the CLI's own parsing, lock, messages and
        signal handling (a SIGTERM mid-apply rolls back), and its memory is gone after."""
        errs = err or io.StringIO()
        r = system.run_lines([sys.executable, "-m", "appliance.cli",
                              "--settings", str(self.settings_file()), *argv],
                             input=stdin, on_line=lambda line: errs.write(line + "\n"),
                             timeout=VERB_TIMEOUT_S)
        return r.returncode, r.stdout, r.stderr

    def must(self, *argv: str, stdin: str = "") -> str:
        code, out, err = self.appliance(*argv, stdin=stdin)
        if code != 0:
            why = (err or out).strip().removeprefix("appliance: ")
            raise OpError(why or f"appliance {argv[0]} failed (exit {code})",
                          BUSY if code == 3 else INVALID if code == 2 else FAILED)
        return out

    def settings(self) -> Any:
        from appliance import registry
        from appliance.core import pipeline, settings

        return settings.load(self.settings_file(), pipeline.sections(registry.FEATURES))

    def start_job(self, who: str, steps: list[Step], kind: str = "setup") -> str:
        job_id = secrets.token_urlsafe(12)
        job = self.jobs[job_id] = Job(steps=[title for title, _, _ in steps], who=who, kind=kind)

        def run() -> None:
            ok = True
            for title, argv, required in steps:
                job.lines.append(f"== {title}")
                code, out, _ = self.appliance(*argv, err=_Lines(job.lines))
                job.lines.extend(line for line in out.splitlines() if line.strip())
                if code != 0 and required:
                    job.lines.append(f"!! {title}: failed (exit {code})")
                    ok = False
                    break
                if code != 0:
                    job.notes.append({"title": title, "text": out.strip()})
            job.ok, job.done = ok, True
            log(f"job {job_id}: {'done' if ok else 'FAILED at ' + title}")

        threading.Thread(target=run, daemon=True).start()
        return job_id


