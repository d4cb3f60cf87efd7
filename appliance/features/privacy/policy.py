"""The typo-domain guard inside Postfix's submission path.

Postfix asks the policy service (appliance/features/limits/policyd.py, 127.0.0.1:10031) at
each RCPT TO on 587/465 and again at the end of the message; the service runs this module as
one of its checks (appliance/core/policy.py: `at_rcpt`, `at_end`, `validate`), named by the
privacy feature's template context (privacy.py):

- RCPT: the recipient domain is checked (typoguard.check) against the history; a near miss is
  remembered for this message (Postfix's `instance` attribute). The answer is DUNNO, or, when
  the guard cannot work (its files unreadable, broken), `451 4.3.0` with the reason: the client
  keeps the mail and tries again; nothing is dropped.
- END-OF-MESSAGE: a message with a near miss is put on HOLD (Postfix's hold queue: kept, not
  sent), and the sender gets a notice naming both domains, the queue ID and how to release it.

The policy service runs as `nobody`: it only reads /etc/appliance/typoguard.conf and the
history (root:nogroup 0640). Learning and releasing are root commands (appliance/privacy.py).

The notice is normally sent by the release agent (appliance/release_agent.py, root), which
alone holds the secret that makes the notice's reply address (release by reply): the policy
service hands it the queue ID, sender and verdicts over /run/appliance-release.sock. If the
agent is not there, the policy service sends the notice itself, without a reply address.
"""

from __future__ import annotations

import email.utils
import json
import smtplib
import socket
import time
from collections import OrderedDict
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from appliance.core.policy import Invalid
from appliance.features.privacy import typoguard as tg

CONF = "/etc/appliance/typoguard.conf"
STATE_DIR = "/var/lib/appliance/typoguard"
HISTORY = f"{STATE_DIR}/history"
SALT = f"{STATE_DIR}/salt"
NOTIFY_VIA = ("127.0.0.1", 25)
RELEASE_AGENT_SOCKET = "/run/appliance-release.sock"  # appliance/release_agent.py
MAX_PENDING = 1000


class GuardError(Exception):
    pass


@dataclass(frozen=True)
class GuardConfig:
    enabled: bool
    history: str  # "hashed" or "plain"
    domain: str  # the box's own domain: always known


def parse_conf(text: str) -> GuardConfig:
    data: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        k, eq, v = (x.strip() for x in line.partition("="))
        if not eq or k not in ("enabled", "history", "domain"):
            raise GuardError(f"{CONF} line {n}: expected enabled, history or domain = value")
        data[k] = v
    if data.get("history", "hashed") not in ("hashed", "plain"):
        raise GuardError(f"{CONF}: history must be hashed or plain, not {data['history']!r}")
    return GuardConfig(data.get("enabled", "yes") == "yes", data.get("history", "hashed"),
                       data.get("domain", ""))


def validate(stage: Path) -> None:
    """The policy service's check of the staged typoguard.conf, before it goes live."""
    guard = stage / CONF.lstrip("/")
    if guard.exists():
        try:
            parse_conf(guard.read_text())
        except GuardError as e:
            raise Invalid("typoguard.conf check", str(e)) from None


def history_header(hashed: bool) -> str:
    return f"# appliance typo guard history; mode {'hashed' if hashed else 'plain'}\n"


def parse_history(text: str, salt: bytes | None) -> tg.History:
    """The history file; its first line says how it was written (hashed needs the salt)."""
    first, _, rest = text.partition("\n")
    hashed = first.strip().endswith("mode hashed")
    if hashed and not salt:
        raise GuardError(f"{HISTORY} is hashed but {SALT} is missing")
    return tg.History.loads(rest if first.startswith("#") else text, salt if hashed else None)


class _Cache:
    """Files re-read when they change (mtime), so `appliance typo-guard learn` takes effect
    at once without a reload."""

    def __init__(self) -> None:
        self.stamp: tuple[float, float, float] | None = None
        self.value: tuple[GuardConfig, tg.History] | None = None

    def get(self, root: Path = Path("/")) -> tuple[GuardConfig, tg.History]:
        paths = [root / p.lstrip("/") for p in (CONF, HISTORY, SALT)]
        stamp = tuple(p.stat().st_mtime if p.exists() else 0.0 for p in paths)
        if self.value is None or stamp != self.stamp:
            try:
                cfg = (parse_conf(paths[0].read_text()) if paths[0].exists()
                       else GuardConfig(False, "hashed", ""))
                salt = paths[2].read_bytes() if paths[2].exists() else None
                hist = (parse_history(paths[1].read_text(), salt) if paths[1].exists()
                        else tg.History(salt=salt))
            except (OSError, ValueError, UnicodeDecodeError) as e:
                raise GuardError(f"{type(e).__name__}: {e}") from None
            self.value, self.stamp = (cfg, hist), stamp  # type: ignore[assignment]
        assert self.value is not None
        return self.value


_cache = _Cache()
_pending: OrderedDict[str, list[tg.Verdict]] = OrderedDict()


def _log(msg: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} appliance-policyd: typo guard: {msg}", flush=True)


def at_rcpt(attrs: dict[str, str]) -> str:
    """Postfix's answer at RCPT TO: DUNNO, or 451 when the guard cannot decide."""
    if not attrs.get("sasl_username"):
        return "DUNNO"
    try:
        cfg, hist = _cache.get()
        if not cfg.enabled:
            return "DUNNO"
        domain = attrs.get("recipient", "").rpartition("@")[2]
        if not domain or domain.startswith("["):
            return "DUNNO"  # no name to compare (an address literal)
        try:
            d = tg.normalize(domain)
        except tg.DomainError:
            return "DUNNO"
        if cfg.domain and (d == cfg.domain or d.endswith("." + cfg.domain)):
            return "DUNNO"
        if cfg.domain:
            hist = _with_own(hist, cfg.domain)
        v = tg.check(d, hist)
    except Exception as e:  # noqa: BLE001 - a broken guard defers, it never drops or passes
        _log(f"Error: cannot check {attrs.get('recipient')!r}: {e}")
        return ("451 4.3.0 the typo-domain guard cannot check recipient domains right now "
                f"({type(e).__name__}); your mail was not sent, try again later")
    if v.hold:
        key = attrs.get("instance", "")
        _pending.setdefault(key, []).append(v)
        _pending.move_to_end(key)
        while len(_pending) > MAX_PENDING:
            _pending.popitem(last=False)
        _log(f"{attrs.get('sasl_username')}: {v.domain} looks like {v.known} ({v.kind})")
    return "DUNNO"


def recheck(domain: str, cache: _Cache, root: Path = Path("/")) -> tg.Verdict:
    """The guard's verdict on one domain now, from its files under `root` (the release agent
    checks that a notice it is asked to send is for a real near miss)."""
    cfg, hist = cache.get(root)
    if cfg.domain:
        hist = _with_own(hist, cfg.domain)
    return tg.check(domain, hist)


def _with_own(hist: tg.History, own: str) -> tg.History:
    if hist.knows(tg.base(own)):
        return hist
    h = tg.History(salt=hist.salt, exact=set(hist.exact), skeletons=set(hist.skeletons))
    h.add(own)
    return h


def at_end(attrs: dict[str, str]) -> str:
    """At the end of the message: HOLD it if a recipient domain was a near miss."""
    verdicts = _pending.pop(attrs.get("instance", ""), [])
    if not verdicts:
        return "DUNNO"
    qid = attrs.get("queue_id", "")
    sender = attrs.get("sender") or attrs.get("sasl_username", "")
    try:
        if not hand_to_release_agent(sender, qid, verdicts):
            notify(sender, qid, verdicts)
    except Exception as e:  # noqa: BLE001 - the hold stands even if the notice cannot go out
        _log(f"could not send the notice to {sender}: {type(e).__name__}: {e}")
    first = verdicts[0]
    return f"HOLD typo guard: {first.domain} looks like {first.known}; release: appliance release {qid}"


def notice_text(qid: str, verdicts: list[tg.Verdict], reply_to: str = "") -> tuple[str, str]:
    lines = [f"  - {v.domain} looks like {v.known}: {v.reason}." for v in verdicts]
    subject = f"Held: your message to {verdicts[0].domain} (did you mean {verdicts[0].known}?)"
    by_reply = (
        "If the address is right, REPLY to this notice from your mail program, logged\n"
        "in as yourself (what you write does not matter and is not kept). The reply\n"
        f"goes to\n\n    {reply_to}\n\n"
        "and releases the message; you get a confirmation. Or, on the box:\n\n"
    ) if reply_to else "If the address is right, release it on the box with:\n\n"
    body = (
        "Your mail server has held a message you just sent, because a recipient's domain is\n"
        "one slip away from a domain you correspond with, and you have never written to it:\n\n"
        + "\n".join(lines) + "\n\n"
        f"The message (queue ID {qid}) has not left the box.\n\n"
        + by_reply + f"    appliance release {qid}\n\n"
        "(the domain is then remembered and not held again). If it is a typo, send the message\n"
        f"again to the right address; the held copy can be deleted with `postsuper -d {qid}`.\n")
    return subject, body


def notify(sender: str, qid: str, verdicts: list[tg.Verdict], reply_to: str = "") -> None:
    """The sender's notice, through our own Postfix (port 25, local delivery)."""
    subject, body = notice_text(qid, verdicts, reply_to)
    send_notice(sender, subject, body, reply_to)


def send_notice(sender: str, subject: str, body: str, reply_to: str = "") -> None:
    m = EmailMessage()
    m["From"] = f"MAILER-DAEMON@{sender.rpartition('@')[2]}" if "@" in sender else "MAILER-DAEMON"
    m["To"] = sender
    m["Subject"] = subject
    # A well-formed message: the spam filter must not file the notice as Junk.
    m["Date"] = email.utils.formatdate(localtime=True)
    m["Message-ID"] = email.utils.make_msgid(domain=sender.rpartition("@")[2] or None)
    if reply_to:
        m["Reply-To"] = reply_to
    m["Auto-Submitted"] = "auto-replied"
    m.set_content(body)
    with smtplib.SMTP(*NOTIFY_VIA, timeout=20) as s:
        s.send_message(m, from_addr="", to_addrs=[sender])


def hand_to_release_agent(sender: str, qid: str, verdicts: list[tg.Verdict],
                          path: str = RELEASE_AGENT_SOCKET) -> bool:
    """Ask the release agent to send the notice with its reply address. False when the agent
    is not there (the caller sends a notice without one); raises when it refused the request."""
    req = {"queue_id": qid, "sender": sender,
           "verdicts": [{"domain": v.domain, "known": v.known, "kind": v.kind, "reason": v.reason}
                        for v in verdicts]}
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(path)
    except OSError:
        return False
    with s:
        s.sendall(json.dumps(req).encode() + b"\n")
        answer = s.makefile("rb").readline(4096).decode(errors="replace").strip()
    if answer != "ok":
        _log(f"the release agent refused the notice for {qid}: {answer or 'no answer'}")
        return False
    return True
