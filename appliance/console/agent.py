"""The console's privileged half (root): a fixed list of named operations over a unix socket.

Each operation says who may call it (the setup session, the administrator, any logged-in mail
user on their own account) and is carried out by the same code the `appliance` command runs:
an edit is `appliance user add ...` run in this process, under the same lock, with the same
checks and the same error text. Nothing here runs a shell or takes a command from the caller.

Started on demand by appliance-console-agent.socket; it exits after EXIT_WHEN_IDLE_S without a
request. Without systemd (the lab) it makes its own socket: --daemon PIDFILE --log LOG.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import secrets
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.console import auth, protocol
from appliance.console.protocol import BUSY, DENIED, FAILED, INVALID, LOGIN
from appliance.core import daemon, system

NAME = "appliance-console-agent"
LOG = "/var/log/appliance-console.log"
PIDFILE = "/run/appliance-console-agent.pid"
SETTINGS = "/etc/appliance/settings.toml"
GROUP = "appliance-console"  # the web process's group: the only other one that may connect
EXIT_WHEN_IDLE_S = 300.0
MIN_PASSWORD = 10
# What the wizard runs once it has written the settings, each an `appliance` verb, in order.
SETUP_STEPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Configure mail, the firewall and the certificate", ("apply",)),
    ("Can the internet reach the box?", ("reachability",)),
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
                 setup_steps: tuple[tuple[str, tuple[str, ...]], ...] = SETUP_STEPS) -> None:
        self.root = root
        self.settings_path = settings_path
        self.setup_steps = setup_steps
        self.sessions = auth.Sessions(root)
        self.jobs: dict[str, Job] = {}
        self.setup_lock = threading.Lock()

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
        """One `appliance` verb, in this process: the CLI's own parsing, lock and messages."""
        from appliance import cli

        out, errs = io.StringIO(), err or io.StringIO()
        env = cli.Env(stdin=io.StringIO(stdin), stdout=out, stderr=errs)  # type: ignore[arg-type]
        try:
            code = cli.main(["--settings", str(self.settings_file()), *argv], env=env)
        except SystemExit as e:  # argparse: a value the verb's grammar refuses
            code = int(e.code or 2)
        return code, out.getvalue(), errs.getvalue() if isinstance(errs, io.StringIO) else ""

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

    def start_job(self, who: str, steps: list[tuple[str, tuple[str, ...]]]) -> str:
        job_id = secrets.token_urlsafe(12)
        job = self.jobs[job_id] = Job(steps=[title for title, _ in steps], who=who)

        def run() -> None:
            ok = True
            for title, argv in steps:
                job.lines.append(f"== {title}")
                code, out, _ = self.appliance(*argv, err=_Lines(job.lines))
                job.lines.extend(line for line in out.splitlines() if line.strip())
                if code != 0:
                    job.lines.append(f"!! {title}: failed (exit {code})")
                    ok = False
                    break
            job.ok, job.done = ok, True
            log(f"job {job_id}: {'done' if ok else 'FAILED at ' + title}")

        threading.Thread(target=run, daemon=True).start()
        return job_id


# --- before anyone is logged in -------------------------------------------------------------------
@op("state")
def op_state(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> dict[str, Any]:
    """What the web process needs before anyone logs in: which first page to show, and the
    LAN prefixes the console answers (those the firewall lets through, as the agent sees them)."""
    from appliance.core import facts, settings

    configured = a.settings_file().is_file()
    domain, lan = "", settings.LanOverride()
    if configured:
        with contextlib.suppress(Exception):
            st = a.settings()
            domain, lan = st.domain, st.lan
    return {"configured": configured, "admin": auth.admin_exists(a.root), "domain": domain,
            "lan": list(facts.gather(lan).lan_prefixes)}


@op("setup_code")
def op_setup_code(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> dict[str, Any]:
    if auth.admin_exists(a.root):
        raise OpError("this box is set up already: log in", DENIED)
    if not auth.setup_code_ok(a.root, str(args.get("code", ""))):
        time.sleep(auth.FAILED_DELAY_S)
        log(f"setup code refused from {args.get('_client', '?')}")
        raise OpError("that is not the setup code: it is in appliance-setup.txt on the card "
                      "(and on a screen connected to the box)", DENIED)
    return {"session": a.sessions.new("setup", "setup")}


@op("login")
def op_login(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> dict[str, Any]:
    who = str(args.get("user", "")).strip().lower()
    password = str(args.get("password", ""))
    client = str(args.get("_client", "?"))
    role = ""
    if who == "admin":
        role = "admin" if auth.admin_ok(a.root, password) else ""
    elif who and a.settings_file().is_file():
        user = next((u for u in a.settings().users if u.address == who), None)
        role = "user" if user and auth.verify(password, user.password_hash) else ""
    if not role:
        # Slows a guesser; fail2ban reads this line (from the LAN it delays, never bans).
        time.sleep(auth.FAILED_DELAY_S)
        log(f"login failed for {who or '-'} from {client}")
        raise OpError("wrong name or password", DENIED)
    log(f"login {who} from {client}")
    return {"session": a.sessions.new(who, role)}


@op("whoami", "setup", "admin", "user")
def op_whoami(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> dict[str, Any]:
    assert s is not None
    return {"who": s.who, "role": s.role, "csrf": s.csrf}


@op("logout", "setup", "admin", "user")
def op_logout(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> None:
    a.sessions.end(token)


# --- the setup wizard -----------------------------------------------------------------------------
def new_settings(domain: str, hostname: str, address: str, password_hash: str) -> str:
    """The first settings file, commented like the one on the card, via tomlkit."""
    import tomlkit

    doc = tomlkit.document()
    doc.add(tomlkit.comment("Written by the setup wizard. The console and `appliance` edit this "
                            "file; you may too (then `appliance apply`)."))
    doc.add(tomlkit.comment("Every setting: `appliance settings-reference`."))
    doc.add("domain", tomlkit.item(domain))
    doc.add("hostname", tomlkit.item(hostname))
    users = tomlkit.aot()
    users.append(tomlkit.table().add("address", address).add("password_hash", password_hash))
    doc.add("users", users)
    return tomlkit.dumps(doc)


@op("setup", "setup")
def op_setup(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> dict[str, Any]:
    from appliance.core.errors import SettingsError
    from appliance.features.mail import users

    admin_pw = str(args.get("admin_password", ""))
    if len(admin_pw) < MIN_PASSWORD:
        raise OpError(f"admin password: shorter than {MIN_PASSWORD} characters; choose a longer one")
    with a.setup_lock:
        if auth.admin_exists(a.root):
            raise OpError("this box is set up already: log in", DENIED)
        path = a.settings_file()
        if not path.is_file():
            domain = str(args.get("domain", "")).strip().lower()
            hostname = str(args.get("hostname", "")).strip().lower() or f"mail.{domain}"
            local = str(args.get("user", "")).strip().lower()
            address = local if "@" in local else f"{local}@{domain}"
            try:
                h = users.hash_password(str(args.get("password", "")))
            except Exception as e:  # noqa: BLE001 - UserError: the CLI's own words
                raise OpError(f"password: {e}") from None
            text = new_settings(domain, hostname, address, h)
            try:
                _check_text(a, text)
            except SettingsError as e:
                raise OpError(str(e).replace(f"{path}: ", "")) from None
            path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            from appliance.core.rootfs import write_user_file

            write_user_file(path, text, 0o600)
            log(f"setup: wrote {path} for {domain}")
        auth.set_admin_password(a.root, admin_pw)
        auth.end_setup(a.root)
    a.sessions.end(token)
    session = a.sessions.new("admin", "admin")
    job = a.start_job("admin", list(a.setup_steps))
    return {"session": session, "job": job}


def _check_text(a: Agent, text: str) -> None:
    import tomllib

    from appliance import registry
    from appliance.core import pipeline, settings

    settings.parse(tomllib.loads(text), str(a.settings_file()), pipeline.sections(registry.FEATURES))


@op("job", "admin", "user")
def op_job(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> dict[str, Any]:
    job = a.jobs.get(str(args.get("id", "")))
    if job is None or s is None or (job.who != s.who):
        raise OpError("no such job (the agent restarted?): see Status", INVALID)
    return {"steps": job.steps, "lines": job.lines[-200:], "done": job.done, "ok": job.ok}


# --- the administrator's pages ----------------------------------------------------------------------
@op("status", "admin")
def op_status(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> Any:
    code, out, err = a.appliance("status", "--json")
    try:
        return json.loads(out)
    except ValueError:
        raise OpError((err or out).strip() or f"status failed (exit {code})", FAILED) from None


@op("dns", "admin")
def op_dns(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> Any:
    return json.loads(a.must("dns", "--json"))


@op("users", "admin")
def op_users(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> Any:
    st = a.settings()
    return {"domain": st.domain,
            "users": [{"address": u.address, "aliases": list(u.aliases), "scheme": u.dovecot_scheme}
                      for u in st.users]}


@op("user_add", "admin")
def op_user_add(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> str:
    address = _address(a, args.get("address"))
    return a.must("user", "add", address, stdin=_password(args) + "\n").strip()


@op("user_del", "admin")
def op_user_del(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> str:
    address = _address(a, args.get("address"))
    out = a.must("user", "del", address).strip()
    a.sessions.end_all(address)
    return out


@op("user_passwd", "admin")
def op_user_passwd(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> str:
    address = _address(a, args.get("address"))
    out = a.must("user", "passwd", address, stdin=_password(args) + "\n").strip()
    a.sessions.end_all(address)
    return out


@op("alias_add", "admin")
def op_alias_add(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> str:
    return a.must("alias", "add", _address(a, args.get("alias")),
                  _address(a, args.get("address"))).strip()


@op("alias_del", "admin")
def op_alias_del(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> str:
    return a.must("alias", "del", _address(a, args.get("alias"))).strip()


# --- a mail user's own account ------------------------------------------------------------------------
@op("my_password", "user")
def op_my_password(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> str:
    assert s is not None
    user = next((u for u in a.settings().users if u.address == s.who), None)
    if user is None or not auth.verify(str(args.get("current", "")), user.password_hash):
        time.sleep(auth.FAILED_DELAY_S)
        raise OpError("current password: wrong; nothing was changed", DENIED)
    out = a.must("user", "passwd", s.who, stdin=_password(args) + "\n").strip()
    a.sessions.end_all(s.who)
    return out


def _password(args: dict[str, Any]) -> str:
    pw = str(args.get("password", ""))
    if pw != str(args.get("confirm", pw)):
        raise OpError("password: the two passwords differ; nothing was changed")
    if "\n" in pw:
        raise OpError("password: has a line break; choose another")
    return pw


def _address(a: Agent, value: Any) -> str:
    """A form's address: a bare name means one at the box's domain."""
    text = str(value or "").strip().lower()
    if not text:
        raise OpError("address: empty; type a name such as alice")
    if "@" not in text:
        text = f"{text}@{a.settings().domain}"
    return text


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
                    args["_client"] = str(request.get("client") or "?")
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
