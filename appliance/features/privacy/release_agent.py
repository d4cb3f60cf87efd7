"""The release agent: releases mail the typo guard held when the sender replies to
the notice, and sends those notices with their reply address.

    policy service --(held: qid, sender, verdicts)--> /run/appliance-release.sock --+
                                                                                     v
    the sender <-- notice, Reply-To: release+QID-TOKEN@release.<domain> ---- release agent (root)
    the sender --reply on 587/465--> Postfix --LMTP--> private/appliance-release --+
                                                        postsuper -H QID, postqueue -i QID

Why a root daemon: releasing held mail is `postsuper -H`, which Postfix allows root only (not
even its own `postfix` user), and Postfix never runs a delivery command (pipe, local) as root
or as `postfix`. So an unprivileged pipe command would need sudo or a setuid helper anyway.
Here the one privileged process is reached only through Postfix's private/ directory (the
postfix user connects) and a socket of group nogroup (the policy service), parses nothing but
envelope addresses (the reply's body is read and thrown away), and holds the per-box secret
(/var/lib/appliance/typoguard/release.key, root 0600) that no other process can read.

Each recipient of a reply (release+QID-TOKEN@release.<domain>) gets, after DATA:
- 250 when the message was released (the sender gets a confirmation), or when nothing was
  released for a reason the sender is told by mail (wrong token, another sender, not held);
- 451 (Postfix keeps the reply queued and retries) when the agent cannot decide or act: the
  queue unreadable, postsuper failing, the refusal notice not deliverable. Never a bounce for
  its own failure;
- 550 at RCPT for an address that is not a release address at all.
The reply itself is never stored in a mailbox and never leaves the box.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from appliance.core import daemon, system
from appliance.core.errors import ApplianceError
from appliance.features.privacy import policy as tp
from appliance.features.privacy import reply as tr
from appliance.features.privacy import typoguard as tg

LMTP_SOCKET = tr.LMTP_SOCKET
TRANSPORT = tr.TRANSPORT
NOTICE_SOCKET = tp.RELEASE_AGENT_SOCKET
SECRET = f"{tp.STATE_DIR}/release.key"
PIDFILE = "/run/appliance-release.pid"
LOG = "/var/log/appliance-release.log"
SETTINGS = "/etc/appliance/settings.toml"
NAME = "appliance-release"
# Started on demand (socket activation), it exits after this long without a session or a notice
# in progress: it has work only when a message is held or its sender answers the notice.
EXIT_WHEN_IDLE_S = 60.0
HELD_WAIT_S = 30.0  # the policy service answers HOLD before cleanup has queued the message
MAX_REQUEST = 65536


def log(msg: str) -> None:
    daemon.log(NAME, msg)


class Deferred(Exception):
    """Cannot decide or act now: the reply stays queued (451) and Postfix retries."""


class Agent:
    """The decisions and actions; blocking (run in a thread by the servers below)."""

    def __init__(self, settings_path: str = SETTINGS, root: Path = Path("/")) -> None:
        self.settings_path = settings_path
        self.root = root
        self.guard = tp._Cache()  # the guard's configuration and history, re-read on change

    def own_domain(self) -> str:
        try:
            cfg = tp.parse_conf((self.root / tp.CONF.lstrip("/")).read_text())
        except (OSError, tp.GuardError) as e:
            raise Deferred(f"cannot read {tp.CONF}: {e}") from None
        if not cfg.domain:
            raise Deferred(f"{tp.CONF} names no domain")
        return cfg.domain

    def secret(self) -> bytes:
        try:
            return system.ensure_secret(SECRET, tr.SECRET_BYTES)
        except OSError as e:
            raise Deferred(f"cannot read the release secret {SECRET}: {e}") from None

    def queue(self) -> list[dict[str, Any]]:
        from appliance.features.privacy.privacy import queue_entries

        try:
            return queue_entries()
        except ApplianceError as e:
            raise Deferred(str(e)) from None

    # --- a reply to a notice ------------------------------------------------------------------
    def reply(self, sender: str, rcpt: str) -> str:
        """The LMTP answer for one recipient of a reply."""
        from appliance.features.privacy.privacy import release_held

        own = self.own_domain()
        qid, tok = tr.parse(rcpt, own)
        if not sender:  # a bounce or auto-reply to the release address: nobody to tell
            log(f"ignored a message with no sender to {rcpt}")
            return f"250 2.0.0 <{rcpt}> ignored (no sender)"
        d = tr.decide(self.secret(), qid, tok, sender, self.queue())
        if d.release:
            q = tr.find(self.queue(), d.qid)
            if q is None or q.get("queue_name") != "hold":
                raise Deferred(f"message {d.qid} left the hold queue meanwhile")
            try:
                added = release_held(q, Path(self.settings_path))
            except ApplianceError as e:
                raise Deferred(str(e)) from None
            log(f"released {d.qid} on a reply from {sender}"
                + (f"; remembered {', '.join(added)}" if added else ""))
            domains = ", ".join(tr.recipient_domains(q))
            try:
                tp.send_notice(sender, f"Released: your message to {domains}",
                               f"Your reply released the held message (queue ID {d.qid}).\n"
                               f"It is on its way to {domains}, and that domain is remembered:\n"
                               "mail to it is not held again.\n")
            except Exception as e:  # noqa: BLE001 - released all the same
                log(f"could not confirm the release of {d.qid} to {sender}: {e}")
            return f"250 2.0.0 <{rcpt}> released {d.qid}"
        log(f"not released ({sender} -> {rcpt}): {d.reason}")
        try:
            tp.send_notice(sender, f"Not released: message {d.qid}",
                           f"Your mail server received your reply to {rcpt}, but {d.reason}.\n\n"
                           "The administrator can list held mail with `postqueue -j` and release "
                           "it with\n`appliance release QUEUE-ID`.\n")
        except Exception as e:  # noqa: BLE001 - the sender must be told: keep the reply, retry
            raise Deferred(f"cannot tell {sender} why nothing was released: {e}") from None
        return f"250 2.0.0 <{rcpt}> not released, {sender} told why"

    # --- a notice, handed over by the policy service --------------------------------------------
    def check_notice(self, req: dict[str, Any]) -> tuple[str, str, list[tg.Verdict]]:
        qid, sender = str(req.get("queue_id", "")), str(req.get("sender", ""))
        if not re.match(r"^[0-9A-Za-z]{6,20}$", qid) or "@" not in sender:
            raise ValueError("expected a queue ID and a sender address")
        raw = req.get("verdicts")
        if not isinstance(raw, list) or not raw or len(raw) > 100:
            raise ValueError("expected a list of verdicts")
        verdicts = [tg.Verdict(str(v["domain"]), True, str(v["known"]), str(v.get("kind", "")),
                               str(v.get("reason", ""))) for v in raw]
        return qid, sender, verdicts

    def notice(self, qid: str, sender: str, verdicts: list[tg.Verdict]) -> None:
        """Once the message is held (with that sender and those domains among its recipients),
        send the sender the notice with the reply address. Only held mail gets a token."""
        q: dict[str, Any] | None = None
        deadline = time.monotonic() + HELD_WAIT_S
        for _ in range(int(HELD_WAIT_S / 0.25) + 1):
            q = tr.find(self.queue(), qid)
            if q is not None and q.get("queue_name") == "hold":
                break
            if time.monotonic() > deadline:
                break
            time.sleep(0.25)
        if q is None or q.get("queue_name") != "hold":
            raise Deferred(f"message {qid} did not appear in the hold queue")
        held_sender = str(q.get("sender", ""))
        if held_sender.lower() != sender.lower():
            raise ValueError(f"message {qid} is from {held_sender!r}, not {sender!r}")
        rcpt_domains = {tg.normalize(d) for d in tr.recipient_domains(q)}
        if not all(tg.normalize(v.domain) in rcpt_domains for v in verdicts):
            raise ValueError(f"the verdicts name domains that message {qid} is not addressed to")
        # Only a typo-guard hold gets a reply address (not, say, mail the outbound limits held):
        # the guard must still call each domain a near miss.
        if not all(tp.recheck(v.domain, self.guard, self.root).hold for v in verdicts):
            raise ValueError(f"message {qid} is not held for a near-miss domain")
        reply_to = tr.address(self.secret(), str(q["queue_id"]), held_sender, self.own_domain())
        tp.notify(held_sender, str(q["queue_id"]), verdicts, reply_to)
        log(f"notice for {q['queue_id']} sent to {held_sender}")


# --- LMTP, for Postfix ------------------------------------------------------------------------
def _path(arg: str) -> str:
    a = arg.strip()
    if a.startswith("<"):
        a = a[1:a.find(">")] if ">" in a else a[1:]
    return a.split()[0] if a.split() else ""


async def lmtp_session(agent: Agent, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    loop = asyncio.get_running_loop()
    sender: str | None = None
    rcpts: list[str] = []

    def say(line: str) -> None:
        w.write(line.encode() + b"\r\n")

    say("220 appliance-release LMTP ready")
    for _ in range(10000):  # commands in one session
        await w.drain()
        line = await asyncio.wait_for(r.readline(), 300)
        if not line:
            return
        cmd, _, arg = line.decode(errors="replace").rstrip("\r\n").partition(" ")
        verb = cmd.upper()
        if verb == "LHLO":
            say("250-appliance-release")
            say("250-PIPELINING")
            say("250 ENHANCEDSTATUSCODES")
        elif verb == "MAIL" and arg.upper().startswith("FROM:"):
            sender, rcpts = _path(arg[5:]), []
            say("250 2.1.0 Ok")
        elif verb == "RCPT" and arg.upper().startswith("TO:") and sender is not None:
            rcpt = _path(arg[3:])
            try:
                tr.parse(rcpt, await loop.run_in_executor(None, agent.own_domain))
            except tr.ReplyError as e:
                say(f"550 5.1.1 {e}")
            except Deferred as e:
                say(f"451 4.3.0 release agent: {e}")
            else:
                rcpts.append(rcpt)
                say("250 2.1.5 Ok")
        elif verb == "DATA" and sender is not None and rcpts:
            say("354 End data with <CR><LF>.<CR><LF>")
            await w.drain()
            # The body does not matter: read it to its end, keep nothing. Line by line: Postfix
            # may pipeline QUIT right after the final dot (its lines are at most 998 bytes).
            for _ in range(10_000_000):
                chunk = await asyncio.wait_for(r.readline(), 300)
                if not chunk:
                    raise ConnectionError("client went away during DATA")
                if chunk in (b".\r\n", b".\n"):
                    break
            for rcpt in rcpts:
                try:
                    answer = await loop.run_in_executor(None, agent.reply, sender, rcpt)
                except Deferred as e:
                    log(f"deferred {sender} -> {rcpt}: {e}")
                    answer = f"451 4.3.0 <{rcpt}> release agent: {e}"
                except Exception as e:  # noqa: BLE001 - a bug defers, it never bounces
                    log(f"Error: {sender} -> {rcpt}: {type(e).__name__}: {e}")
                    answer = f"451 4.3.0 <{rcpt}> release agent failed: {type(e).__name__}"
                say(answer)
            sender, rcpts = None, []
        elif verb == "RSET":
            sender, rcpts = None, []
            say("250 2.0.0 Ok")
        elif verb == "NOOP":
            say("250 2.0.0 Ok")
        elif verb == "QUIT":
            say("221 2.0.0 Bye")
            await w.drain()
            return
        elif verb in ("MAIL", "RCPT", "DATA"):
            say("503 5.5.1 Bad sequence of commands")
        else:
            say("502 5.5.2 Command not recognized")


# --- notices, for the policy service ------------------------------------------------------------
async def notice_session(agent: Agent, r: asyncio.StreamReader, w: asyncio.StreamWriter,
                         tasks: set[asyncio.Task[None]]) -> None:
    loop = asyncio.get_running_loop()
    line = await asyncio.wait_for(r.readline(), 10)
    try:
        if len(line) >= MAX_REQUEST:
            raise ValueError("request too long")
        qid, sender, verdicts = agent.check_notice(json.loads(line))
    except (ValueError, KeyError, TypeError) as e:
        w.write(f"error {e}\n".encode())
        await w.drain()
        return
    w.write(b"ok\n")
    await w.drain()

    async def later() -> None:
        try:
            await loop.run_in_executor(None, agent.notice, qid, sender, verdicts)
        except Exception as e:  # noqa: BLE001 - the hold stands; `appliance release` still works
            log(f"Error: no notice for {qid} to {sender}: {type(e).__name__}: {e}")

    t = asyncio.create_task(later())
    tasks.add(t)
    t.add_done_callback(tasks.discard)


async def serve(agent: Agent, lmtp_path: str = LMTP_SOCKET, notice_path: str = NOTICE_SOCKET,
                ready: asyncio.Event | None = None, exit_when_idle: float = 0.0) -> None:
    """Serve replies (LMTP, for Postfix) and notices (for the policy service). On sockets that
    systemd passed (socket activation): those, and exit after `exit_when_idle` seconds without
    work; otherwise (no init system) the agent makes the sockets and runs until stopped."""
    tasks: set[asyncio.Task[None]] = set()
    idle = daemon.Idle()
    passed = daemon.activated_sockets()

    def guarded(session: Any, *extra: Any) -> Any:
        async def client(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            with idle.work():
                try:
                    await session(agent, r, w, *extra)
                except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
                    pass
                except Exception as e:  # noqa: BLE001 - the reply stays queued in Postfix
                    log(f"Error: session: {type(e).__name__}: {e}")
                finally:
                    with contextlib.suppress(Exception):
                        w.close()
        return client

    async def notices_then_wait(a: Agent, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await notice_session(a, r, w, tasks)
        w.close()
        # The notice goes out after the answer (it waits for the message to be held): until it
        # has, the agent is not idle.
        await asyncio.gather(*tasks, return_exceptions=True)

    async def unix_server(client: Any, name: str, path: str, owner: str, group: str, mode: int,
                          **kw: Any) -> asyncio.AbstractServer:
        if name in passed:  # systemd made it, with the socket unit's path, owner and mode
            return await asyncio.start_unix_server(client, sock=passed.pop(name), **kw)
        system.remove_path(path)
        server = await asyncio.start_unix_server(client, path, **kw)
        system.chown_path(path, owner, group, mode)
        return server

    async def listen() -> list[asyncio.AbstractServer]:
        # Postfix's lmtp client runs as postfix; the policy service as nobody:nogroup.
        lmtp = await unix_server(guarded(lmtp_session), "replies", lmtp_path, "postfix", "postfix",
                                 0o600, limit=1 << 20)
        notices = await unix_server(guarded(notices_then_wait), "notices", notice_path, "root",
                                    "nogroup", 0o660)
        if passed:
            log(f"Error: sockets passed by systemd that are not its own: {', '.join(passed)}")
            for s in passed.values():
                s.close()
        return [lmtp, notices]

    on_demand = bool(passed) and exit_when_idle > 0
    where = ("on the sockets systemd passed, on demand" if passed else
             f"on {lmtp_path} (replies) and {notice_path} (notices), until stopped")
    await daemon.serve(NAME, listen, reload=lambda: "its files are read at each use",
                       ready=ready, idle=idle, exit_when_idle=exit_when_idle if on_demand else 0.0,
                       started=f"listening {where}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=NAME, description=(__doc__ or "").splitlines()[0])
    p.add_argument("--settings", default=SETTINGS)
    p.add_argument("--exit-when-idle", type=float, default=EXIT_WHEN_IDLE_S, metavar="SECONDS",
                   help="on sockets systemd passed: exit after this long without work (0: never)")
    daemon.add_arguments(p, LOG)
    a = p.parse_args(argv)
    return daemon.run(lambda: serve(Agent(a.settings), exit_when_idle=a.exit_when_idle),
                      daemon=a.daemon, log_path=a.log)


if __name__ == "__main__":
    sys.exit(main())
