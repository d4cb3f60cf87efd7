"""Release by reply, pure: the reply address in a typo-guard notice, and the decision
whether a reply to it releases the held message.

The notice's Reply-To is

    release+<QUEUE-ID>-<TOKEN>@release.<your domain>

where TOKEN = base32(HMAC-SHA-256(box secret, QUEUE-ID "\\n" SENDER))[:16] (80 bits, lower case),
SENDER being the held message's envelope sender. Only the sender has the notice, and only the
box (root) has the secret: the address cannot be guessed or made for another message or sender.

A reply releases the message only when all of these hold (`decide`):
- the reply came in through authenticated submission (587/465). Port 25 refuses the address at
  SMTP time (`release_access`); the delivery agent is only reached through Postfix;
- the reply's envelope sender is the held message's sender (on 587/465 Postfix binds the envelope
  sender to the login: `reject_sender_login_mismatch`), compared without regard to case;
- the token is the one made for that queue ID and that sender (compared in constant time);
- the message is in the hold queue.

The release subdomain is not a mailbox domain: nothing sent there is ever stored in a mailbox,
and Postfix routes it to the release agent (`transport`), never to the internet.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Any

LOCAL = "release"
SUBDOMAIN = "release"
TOKEN_CHARS = 16  # base32: 5 bits each, 80 bits
SECRET_BYTES = 32
_QID = re.compile(r"^[0-9A-Za-z]{6,20}$")
_ADDR = re.compile(r"^release\+([0-9A-Za-z]{6,20})-([a-z2-7]{" + str(TOKEN_CHARS) + r"})@(.+)$",
                   re.IGNORECASE)


class ReplyError(ValueError):
    """Not a release address of this box."""


def release_domain(own: str) -> str:
    return f"{SUBDOMAIN}.{own.lower().rstrip('.')}"


def token(secret: bytes, qid: str, sender: str) -> str:
    if not secret:
        raise ValueError("empty release secret")
    mac = hmac.new(secret, f"{qid}\n{sender.lower()}".encode(), hashlib.sha256).digest()
    return base64.b32encode(mac).decode().lower()[:TOKEN_CHARS]


def address(secret: bytes, qid: str, sender: str, own: str) -> str:
    if not _QID.match(qid):
        raise ValueError(f"not a Postfix queue ID: {qid!r}")
    return f"{LOCAL}+{qid}-{token(secret, qid, sender)}@{release_domain(own)}"


def parse(rcpt: str, own: str) -> tuple[str, str]:
    """(queue ID, token) from a recipient address; ReplyError if it is not ours."""
    m = _ADDR.match(rcpt.strip().strip("<>"))
    if not m or m.group(3).lower().rstrip(".") != release_domain(own):
        raise ReplyError(f"{rcpt!r} is not a release address of {release_domain(own)} "
                         f"(expected release+QUEUEID-TOKEN@{release_domain(own)})")
    return m.group(1), m.group(2).lower()


def verify(secret: bytes, qid: str, sender: str, tok: str) -> bool:
    return hmac.compare_digest(token(secret, qid, sender), tok.lower())


@dataclass(frozen=True)
class Decision:
    release: bool
    qid: str  # the queue ID as Postfix spells it (the address may have changed its case)
    reason: str  # said to the reply's sender


def find(queue: list[dict[str, Any]], qid: str) -> dict[str, Any] | None:
    """The queue entry (postqueue -j) with this ID; a client may have changed the case."""
    exact = [q for q in queue if q.get("queue_id") == qid]
    if exact:
        return exact[0]
    folded = [q for q in queue if str(q.get("queue_id", "")).lower() == qid.lower()]
    return folded[0] if len(folded) == 1 else None


def decide(secret: bytes, qid: str, tok: str, reply_sender: str,
           queue: list[dict[str, Any]]) -> Decision:
    """Whether a reply from `reply_sender` to release+qid-tok releases a message in `queue`."""
    q = find(queue, qid)
    real_qid = str(q["queue_id"]) if q else qid
    held_sender = str(q.get("sender", "")) if q else ""
    # The token is checked first and against the held message's own sender: a wrong token says
    # nothing about which messages exist or who sent them.
    if q is None or not held_sender or not verify(secret, real_qid, held_sender, tok):
        if q is None and verify(secret, qid, reply_sender, tok):
            return Decision(False, qid, f"message {qid} is no longer held: it was released or "
                                        "deleted already; nothing was sent")
        return Decision(False, real_qid, "the release address is not valid (wrong or changed "
                                         "code); nothing was released. Reply to the notice itself, "
                                         "without editing its address")
    if held_sender.lower() != reply_sender.lower():
        return Decision(False, real_qid, f"only {held_sender}, who sent message {real_qid}, can "
                                         "release it; nothing was released")
    if q.get("queue_name") != "hold":
        return Decision(False, real_qid, f"message {real_qid} is not held (it is in the "
                                         f"{q.get('queue_name')} queue); nothing to release")
    return Decision(True, real_qid, f"message {real_qid} was released and is on its way")


def recipient_domains(q: dict[str, Any]) -> list[str]:
    return sorted({str(r.get("address", "")).rpartition("@")[2].lower()
                   for r in q.get("recipients", []) if "@" in str(r.get("address", ""))})


# Where Postfix hands a reply to a held-mail notice: the release agent's LMTP socket.
TRANSPORT = "lmtp:unix:private/appliance-release"
# Where that transport connects (Postfix's queue directory + private/...): the release agent's
# socket unit listens there.
LMTP_SOCKET = "/var/spool/postfix/private/appliance-release"
