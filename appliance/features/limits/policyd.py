"""The outbound kill-switch: a small Postfix policy service for submission.

Postfix asks it at the end of every authenticated message (`smtpd_end_of_data_restrictions =
check_policy_service inet:127.0.0.1:10031` on ports 587/465). It counts messages per user (per
hour and per day), recipients per message, and all users together per hour:

- within the limits: DUNNO (Postfix goes on as usual);
- more recipients than allowed in one message: 554 5.7.1, that message only;
- the message that crosses a limit: HOLD (kept in Postfix's hold queue, not lost), and the
  postmaster gets a mail saying who, which limit, and how to release or delete the held mail;
- while the user stays over the limit: 450 4.7.1 with the reason (the client keeps the mail).

It also runs the submission checks other features name (`checks = MODULE, ...` in its
configuration; core/policy.py): at RCPT TO, and at the end of a message the limits let pass.
The typo guard is one. A check that cannot be loaded or fails makes the answer 451 4.3.0.

Counters live in memory: a restart forgets them (the held mail stays held). Postfix defers
(451 4.3.5) when this service does not answer: mail is never lost.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections import deque
from pathlib import Path

from appliance.core import daemon, policy
from appliance.features.limits.config import (  # noqa: F401 - the daemon's names, in one place
    CONF,
    DAY,
    HOST,
    HOUR,
    LOG,
    NAME,
    PIDFILE,
    PORT,
    Config,
    parse_config,
)


def log(msg: str) -> None:
    daemon.log(NAME, msg)


class Limiter:
    """Pure bookkeeping (tested without a network): decide one message, given the time."""

    def __init__(self, c: Config) -> None:
        self.c = c
        self.sent: dict[str, deque[float]] = {}
        self.all: deque[float] = deque()
        self.blocked: dict[str, str] = {}  # user -> the limit they hit (notified once)

    def _trim(self, q: deque[float], now: float, window: int) -> None:
        while q and q[0] <= now - window:
            q.popleft()

    def over(self, user: str, now: float) -> str | None:
        q = self.sent.setdefault(user, deque())
        self._trim(q, now, DAY)
        self._trim(self.all, now, HOUR)
        hour = sum(1 for t in q if t > now - HOUR)
        if hour >= self.c.messages_per_hour:
            return f"{self.c.messages_per_hour} messages per hour"
        if len(q) >= self.c.messages_per_day:
            return f"{self.c.messages_per_day} messages per day"
        if len(self.all) >= self.c.global_per_hour:
            return f"the box's ceiling of {self.c.global_per_hour} messages per hour (all users)"
        return None

    def decide(self, user: str, recipients: int, now: float) -> tuple[str, str | None]:
        """(Postfix action, limit name to notify about or None)."""
        if recipients > self.c.recipients_per_message:
            return (f"554 5.7.1 {recipients} recipients in one message; the limit is "
                    f"{self.c.recipients_per_message}: split the message", None)
        limit = self.over(user, now)
        if limit is None:
            self.blocked.pop(user, None)
            self.sent[user].append(now)
            self.all.append(now)
            return "DUNNO", None
        if user not in self.blocked:
            self.blocked[user] = limit
            return f"HOLD outbound limit reached for {user} ({limit})", limit
        return (f"450 4.7.1 outbound limit reached for {user} ({limit}); your mail is held "
                "for the postmaster, try again later"), None


def notify(c: Config, user: str, limit: str) -> None:
    """Tell the postmaster, through our own Postfix (local delivery on port 25)."""
    # Imported here: a service that never stops anyone does not hold the mail libraries.
    import smtplib
    from email.message import EmailMessage

    m = EmailMessage()
    m["From"] = c.postmaster
    m["To"] = c.postmaster
    m["Subject"] = f"Outbound mail of {user} stopped: limit reached ({limit})"
    m.set_content(
        f"{user} reached the outbound limit of {limit}.\n\n"
        "The message that crossed it is in Postfix's hold queue; further messages are refused\n"
        "with a temporary error until the user is back under the limit.\n\n"
        "If the account is compromised: change its password (`appliance user passwd ...`).\n"
        "Held mail: `postqueue -j` (\"queue_name\": \"hold\");\n"
        "release it with `postsuper -H ID`, or delete it with `postsuper -d ID`.\n")
    host, _, port = c.notify_via.partition(":")
    with smtplib.SMTP(host, int(port or 25), timeout=30) as s:
        s.send_message(m)


NO_CHECKS = policy.Checks()


def reply_for(limiter: Limiter, attrs: dict[str, str], now: float,
              checks: policy.Checks = NO_CHECKS) -> tuple[str, str | None]:
    if attrs.get("protocol_state") == "RCPT":  # the checks (the typo guard), per recipient
        return checks.at_rcpt(attrs), None
    user = attrs.get("sasl_username", "")
    if not user:  # not authenticated (port 25): not ours to count
        return "DUNNO", None
    try:
        n = int(attrs.get("recipient_count", "0") or 0)
    except ValueError:
        n = 0
    action, limit = limiter.decide(user, n, now)
    if action == "DUNNO":  # e.g. a near-miss recipient domain holds the message
        action = checks.at_end(attrs)
    return action, limit


class State:
    """What the service runs with: the limits (their counters) and the checks, re-read
    together on SIGHUP."""

    def __init__(self, conf_path: str) -> None:
        self.conf_path = conf_path
        c = parse_config(Path(conf_path).read_text())
        self.limiter = Limiter(c)
        self.checks = policy.Checks(c.checks, log)

    def reload(self) -> str:
        """Re-read the file; refused (ReloadError, the old one kept) when it is broken or names
        a check that is not there."""
        try:
            new = parse_config(Path(self.conf_path).read_text())
        except (OSError, ValueError, TypeError) as e:
            raise daemon.ReloadError(f"{self.conf_path}: {e}") from None
        checks = self.checks
        if new.checks != checks.names or checks.broken:
            checks = policy.Checks(new.checks, log)
            if checks.broken:
                raise daemon.ReloadError(f"{self.conf_path}: {'; '.join(checks.broken)}")
        self.limiter.c, self.checks = new, checks  # counters survive a reload
        return f"{self.conf_path}; the counters are kept"

    def reply(self, attrs: dict[str, str], now: float) -> tuple[str, str | None]:
        return reply_for(self.limiter, attrs, now, self.checks)


async def serve(conf_path: str, ready: asyncio.Event | None = None) -> None:
    state = State(conf_path)
    limiter = state.limiter
    loop = asyncio.get_running_loop()

    async def client(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while True:  # Postfix keeps the connection for several requests
                attrs: dict[str, str] = {}
                for _ in range(1000):
                    line = await asyncio.wait_for(r.readline(), 300)
                    if not line:
                        return
                    text = line.decode(errors="replace").rstrip("\r\n")
                    if not text:
                        break
                    k, _, v = text.partition("=")
                    attrs[k] = v
                action, limit = state.reply(attrs, time.time())
                if action != "DUNNO":
                    log(f"{attrs.get('sasl_username')}: {action}")
                if limit:
                    user = attrs.get("sasl_username", "")
                    try:
                        await loop.run_in_executor(None, notify, limiter.c, user, limit)
                        log(f"notified {limiter.c.postmaster} about {user}")
                    except Exception as e:  # noqa: BLE001 - the hold itself must not fail
                        log(f"could not notify {limiter.c.postmaster}: {type(e).__name__}: {e}")
                w.write(f"action={action}\n\n".encode())
                await w.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            with contextlib.suppress(Exception):
                w.close()

    async def listen() -> list[asyncio.AbstractServer]:
        return [await asyncio.start_server(client, HOST, PORT)]

    await daemon.serve(NAME, listen, started=f"listening on {HOST}:{PORT}", reload=state.reload,
                       ready=ready)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=NAME, description=(__doc__ or "").splitlines()[0])
    p.add_argument("--config", default=CONF)
    p.add_argument("--user", default="nobody", help="run as this user (when started as root)")
    daemon.add_arguments(p, LOG)
    a = p.parse_args(argv)
    try:
        parse_config(Path(a.config).read_text())
    except (OSError, ValueError, TypeError) as e:
        print(f"{NAME}: {a.config}: {e}", file=sys.stderr)
        return 2
    return daemon.run(lambda: serve(a.config), daemon=a.daemon, log_path=a.log, user=a.user)


if __name__ == "__main__":
    sys.exit(main())
