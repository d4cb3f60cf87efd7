"""Redacted abuse reports: `appliance report-spam MESSAGE-FILE [--send]`.

The report is an ARF message (RFC 5965): multipart/report; report-type=feedback-report, with
a human-readable part, a message/feedback-report part, and the original message (or only its
headers). Before anything leaves the box the user's own local parts are replaced, in every
header and every body part, by a keyed hash (RFC 6590 sections 3-4): the receiver can tell
that two reports concern the same mailbox without learning which one.

- Default: base64(HMAC-SHA-256(box secret, lower-cased local part)). The secret is generated
  once, 32 random bytes in /var/lib/appliance/arf-redaction.key (0600), and never leaves the box.
  Local parts are lower-cased first: this box's mailboxes are case-insensitive, so "Alice" and
  "alice" must correlate.
- Compatibility mode: base64(SHA-1(key + local part)), RFC 6590's appendix example
  (key "potatoes", local part "bob" -> "rZ8cqXWGiKHzhz1MsFRGTysHia4=").

Redaction is done on the raw text and again on every decoded base64/quoted-printable part and
every RFC 2047 encoded word; the finished report is then parsed again and checked: if any
address of the user's domain is left unredacted, no report is produced (fail closed).
Display names ("Alice Example <...>") are not local parts and are kept, as RFC 6590 does.
"""

from __future__ import annotations

import argparse
import base64
import email.utils
import hashlib
import hmac
import quopri
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from email import message_from_bytes
from email.generator import BytesGenerator
from email.header import Header, decode_header, make_header
from email.message import Message
from email.policy import compat32
from io import BytesIO
from pathlib import Path

from appliance import __version__
from appliance.core import system
from appliance.core.command import Env
from appliance.core.errors import EXIT_OK, EXIT_USAGE, ApplianceError
from appliance.core.feature import Subcommands

KEY_PATH = "/var/lib/appliance/arf-redaction.key"
KEY_BYTES = 32
# RFC 2142 role addresses the report itself is sent from; not a user's identity.
ROLE_LOCALS = frozenset({"postmaster", "abuse"})
MAX_MESSAGE_BYTES = 50 * 1024 * 1024

# RFC 5322 atext (plus "." inside, and UTF-8 per RFC 6531); a local part never starts with a dot.
_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff"  # RFC 6531: UTF-8 too
_LOCAL = rf'(?:"(?:[^"\\\r\n]|\\.){{1,64}}"|[{_ATEXT}][{_ATEXT}.]*)'


_ENCODED_WORD = re.compile(r"(=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=)")


class ReportError(ApplianceError):
    exit_code = EXIT_USAGE


def redact_local(local: str, key: bytes, compat: bool = False) -> str:
    """The redacted form of one local part (RFC 6590 section 3)."""
    if compat:
        digest = hashlib.sha1(key + local.encode("utf-8")).digest()  # noqa: S324 - RFC 6590 appendix
    else:
        digest = hmac.new(key, local.lower().encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def _domain_pattern(domains: Iterable[str]) -> str:
    names = sorted({d.lower().rstrip(".") for d in domains if d}, key=len, reverse=True)
    if not names:
        raise ReportError("no domain to redact; set `domain` in the settings")
    alts = "|".join(re.escape(d) for d in names)
    # The domain itself or any host under it; not a longer name (example.test.evil).
    return rf"(?:[A-Za-z0-9-]+\.)*(?:{alts})(?![A-Za-z0-9-]|\.[A-Za-z0-9])"


@dataclass
class Redactor:
    """Replaces local parts of addresses in `domains`, consistently, remembering what it made."""

    domains: tuple[str, ...]
    key: bytes
    compat: bool = False
    made: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._re = re.compile(rf"({_LOCAL})@({_domain_pattern(self.domains)})", re.IGNORECASE)

    def _addresses(self, s: str) -> str:
        def sub(m: re.Match[str]) -> str:
            local = m.group(1)
            if local in self.made:  # already redacted (a second pass over the same text)
                return m.group(0)
            h = redact_local(local.strip('"'), self.key, self.compat)
            self.made.add(h)
            return f"{h}@{m.group(2)}"

        return self._re.sub(sub, s)

    def text(self, s: str) -> str:
        """Redact a header value or a decoded body. RFC 2047 encoded words are decoded, redacted
        and encoded again; the address pattern never runs across one (its `=?...?=` is atext)."""
        out = []
        for i, piece in enumerate(_ENCODED_WORD.split(s)):
            if i % 2 == 0:
                out.append(self._addresses(piece))
                continue
            try:
                (data, charset), = decode_header(piece)
                word = data.decode(charset or "ascii") if isinstance(data, bytes) else data
            except (ValueError, LookupError, UnicodeDecodeError):
                out.append(self._addresses(piece))  # not a valid encoded word: plain text
                continue
            red = self._addresses(word)
            out.append(piece if red == word else Header(red, "utf-8").encode())
        return "".join(out)

    def raw(self, b: bytes) -> bytes:
        return self.text(b.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")

    def leaks(self, s: str) -> list[str]:
        return [m.group(0) for m in self._re.finditer(s)
                if m.group(1) not in self.made and m.group(1).lower() not in ROLE_LOCALS]


def _decoded_header(value: str) -> str:
    try:
        return str(make_header(decode_header(value)))
    except Exception:  # noqa: BLE001 - a broken encoded word stays as it is
        return value


def _walk_texts(msg: Message) -> Iterable[str]:
    """Every header (decoded) and every leaf payload (decoded) of a message, nested ones too."""
    for part in msg.walk():
        yield from (t for t in (part.preamble, part.epilogue) if t)
        for k, v in part.items():
            yield f"{k}: {v}"
            if "=?" in str(v):
                yield _decoded_header(str(v))
        if not part.is_multipart():
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                yield payload.decode("utf-8", "surrogateescape")
            elif isinstance(text := part.get_payload(), str):
                yield text


def redact_message(raw: bytes, r: Redactor) -> bytes:
    """The message with every local part of the user's domains redacted, part by part: headers
    (encoded words too), bodies inside their encoding (base64, quoted-printable: decoded,
    redacted, encoded again), nested messages, preambles and epilogues. Whatever this cannot
    reach (an address split across two encoded words) is caught by `leaks` afterwards."""
    msg = message_from_bytes(raw, policy=compat32)
    for part in msg.walk():
        if part.preamble:
            part.preamble = r.text(part.preamble)
        if part.epilogue:
            part.epilogue = r.text(part.epilogue)
        items = part.items()
        new = [(k, r.text(str(v))) for k, v in items]
        if new != [(k, str(v)) for k, v in items]:
            for k in dict.fromkeys(k for k, _ in items):
                del part[k]
            for k, v in new:
                part[k] = v
        if part.is_multipart():
            continue
        cte = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
        if cte not in ("", "7bit", "8bit", "binary", "base64", "quoted-printable"):
            continue  # uuencode and the like: `leaks` decides whether the report may go
        data = part.get_payload(decode=True)
        if not isinstance(data, bytes):
            continue
        red_b = r.raw(data)
        if red_b == data:
            continue
        if cte == "base64":
            part.set_payload(base64.encodebytes(red_b).decode("ascii"))
        elif cte == "quoted-printable":
            part.set_payload(quopri.encodestring(red_b).decode("ascii"))
        else:  # as the parser keeps 8-bit text: bytes as surrogate escapes
            part.set_payload(red_b.decode("ascii", "surrogateescape"))
    buf = BytesIO()
    BytesGenerator(buf, mangle_from_=False, maxheaderlen=0, policy=compat32).flatten(msg)
    return buf.getvalue()


# --- The feedback-report fields -------------------------------------------------------------------

_RCVD_IP = re.compile(r"\bfrom\b[^;]*?\[(?:IPv6:)?([0-9A-Fa-f:.]+)\]", re.IGNORECASE | re.DOTALL)


def _addr(value: str | None) -> str:
    return email.utils.parseaddr(value or "")[1]


def source_ip(msg: Message) -> str | None:
    """The address that handed the message to us: the first (topmost) Received header with an
    address in its `from` clause. Our own Postfix writes the topmost one."""
    for rcvd in msg.get_all("Received") or []:
        m = _RCVD_IP.search(str(rcvd))
        if m:
            return m.group(1)
    return None


def arrival_date(msg: Message) -> str:
    rcvd = msg.get_all("Received") or []
    for r in rcvd[:1]:
        stamp = " ".join(str(r).rsplit(";", 1)[-1].split())
        if ";" in str(r) and email.utils.parsedate_tz(stamp):
            return stamp
    return str(msg.get("Date") or email.utils.formatdate(localtime=False))


@dataclass(frozen=True)
class Report:
    data: bytes
    reported_domains: tuple[str, ...]
    abuse_address: str | None


def build_report(raw: bytes, domains: Iterable[str], key: bytes, *, compat: bool = False,
                 headers_only: bool = False, reporter: str = "", now: float | None = None) -> Report:
    """The ARF report (RFC 5965) for one received message, redacted (RFC 6590)."""
    if not raw.strip():
        raise ReportError("the message is empty; give the file of the spam message itself")
    domains = tuple(domains)
    r = Redactor(domains, key, compat)
    red = redact_message(raw, r)
    orig = message_from_bytes(raw, policy=compat32)
    if not orig.keys():
        raise ReportError("the file has no mail headers; give the message as saved (.eml), headers included")
    red_msg = message_from_bytes(red, policy=compat32)

    mail_from = _addr(str(red_msg.get("Return-Path") or "")) or _addr(str(red_msg.get("From") or ""))
    from_dom = _addr(str(orig.get("From") or "")).rpartition("@")[2].lower()
    env_dom = _addr(str(orig.get("Return-Path") or "")).rpartition("@")[2].lower()
    reported = tuple(dict.fromkeys(d for d in (env_dom, from_dom) if d))
    ip = source_ip(orig)

    fields = [("Feedback-Type", "abuse"), ("User-Agent", f"mail-appliance/{__version__}"),
              ("Version", "1")]
    if mail_from:
        fields.append(("Original-Mail-From", f"<{mail_from}>"))
    rcpt = _addr(str(red_msg.get("Delivered-To") or red_msg.get("X-Original-To") or ""))
    if rcpt:
        fields.append(("Original-Rcpt-To", f"<{rcpt}>"))
    fields.append(("Arrival-Date", arrival_date(orig)))
    if ip:
        fields.append(("Source-IP", ip))
    fields += [("Reported-Domain", d) for d in reported]
    feedback = "\n".join(f"{k}: {v}" for k, v in fields)

    human = "\n".join([
        f"This is an abuse report for a message received by the mail server of {domains[0]}.",
        f"Reported domain(s): {', '.join(reported) or 'unknown'}; source address: {ip or 'unknown'}.",
        "The recipients' own addresses are redacted as described in RFC 6590: their local parts",
        "are replaced by a keyed hash, the same for the same mailbox in every report.",
    ])
    if headers_only:
        hdr_end = red.find(b"\r\n\r\n") if b"\r\n\r\n" in red else red.find(b"\n\n")
        original = red if hdr_end < 0 else red[:hdr_end]
        orig_type = b"text/rfc822-headers"
    else:
        original = red
        orig_type = b"message/rfc822"
    eightbit = any(c > 127 for c in original)

    boundary = "arf-" + secrets.token_hex(12)
    while boundary.encode() in red:
        boundary = "arf-" + secrets.token_hex(12)
    msgid = f"arf.{secrets.token_hex(16)}"
    r.made.add(msgid)  # our own Message-ID: random, names nobody
    sender = reporter or f"postmaster@{domains[0]}"
    reported_subject = _decoded_header(str(red_msg.get("Subject") or ""))
    head = [
        f"From: {sender}",
        f"To: {'abuse@' + reported[0] if reported else 'undisclosed-recipients:;'}",
        f"Subject: {Header('Abuse report: ' + reported_subject[:120], 'utf-8').encode()}",
        f"Date: {email.utils.formatdate(now, localtime=False)}",
        f"Message-ID: <{msgid}@{domains[0]}>",
        "Auto-Submitted: auto-generated",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=feedback-report; boundary="{boundary}"',
    ]
    nl = b"\r\n" if b"\r\n" in raw else b"\n"
    b = boundary.encode()
    original = original.replace(b"\r\n", b"\n").rstrip(b"\n")
    data = b"\n".join([
        *(h.encode() for h in head), b"", b"This is a multi-part message in MIME format.",
        b"--" + b, b"Content-Type: text/plain; charset=us-ascii", b"Content-Disposition: inline",
        b"", human.encode("ascii", "replace"),
        b"--" + b, b"Content-Type: message/feedback-report", b"", feedback.encode("ascii", "replace"),
        b"--" + b, b"Content-Type: " + orig_type,
        *([b"Content-Transfer-Encoding: 8bit"] if eightbit else []),
        b"Content-Disposition: inline", b"", original,
        b"--" + b + b"--", b"",
    ]).replace(b"\r\n", b"\n").replace(b"\n", nl)
    left = leaks(data, r)
    if left:
        raise ApplianceError(
            f"the report still contains {len(left)} unredacted address(es) of your domain "
            f"(e.g. an encoding this tool cannot rewrite); nothing was produced or sent")
    return Report(data, reported, f"abuse@{reported[0]}" if reported else None)


def leaks(data: bytes, r: Redactor) -> list[str]:
    """Addresses of the redacted domains still in clear anywhere in `data`: every header, raw
    and decoded, every part decoded, preambles and epilogues. (Not the raw quoted-printable
    text: a redacted local part's "=" reads "=3D" there, which is not a leak.)"""
    found: list[str] = []
    for t in _walk_texts(message_from_bytes(data, policy=compat32)):
        found += r.leaks(t)
    return found


# --- The command ------------------------------------------------------------------------------------

def load_key(path: str = KEY_PATH) -> bytes:
    """The per-box secret, made on first use (0600, root)."""
    key = system.ensure_secret(path, KEY_BYTES)
    if len(key) < 16:
        raise ApplianceError(f"{path}: the redaction key is too short ({len(key)} bytes); "
                             "remove the file and run again to make a new one")
    return key


def cmd_report_spam(a: argparse.Namespace, env: Env) -> int:
    try:
        raw = Path(a.message).read_bytes()
    except OSError as e:
        raise ReportError(f"{a.message}: cannot read the message: {e.strerror}") from None
    if len(raw) > MAX_MESSAGE_BYTES:
        raise ReportError(f"{a.message}: larger than {MAX_MESSAGE_BYTES >> 20} MiB; "
                          "use --headers-only with a file holding only the headers")
    s = env.settings(Path(a.settings))
    key = load_key(a.key_file)
    rep = build_report(raw, (s.domain,), key, compat=a.compat, headers_only=a.headers_only,
                       reporter=f"postmaster@{s.domain}", now=time.time())
    if not a.send:
        if hasattr(env.stdout, "buffer"):
            env.stdout.flush()
            env.stdout.buffer.write(rep.data)
            env.stdout.buffer.flush()
        else:
            env.stdout.write(rep.data.decode("utf-8", "surrogateescape"))
        return EXIT_OK
    if not rep.abuse_address:
        raise ReportError("the message names no sender domain; cannot find an abuse address. "
                          "Run without --send and send the report yourself")
    to = a.to or rep.abuse_address
    res = system.run_bytes(["/usr/sbin/sendmail", "-i", "-f", f"postmaster@{s.domain}", "--", to],
                           input=rep.data, timeout=60)
    if res.returncode != 0:
        raise ApplianceError(f"sendmail exited {res.returncode}: {res.stderr.strip()}; "
                             "the report was not sent")
    env.err(f"appliance: sent the redacted report to {to} through the local Postfix")
    return EXIT_OK


def register(sub: Subcommands) -> None:
    p = sub.add_parser("report-spam", help="make a redacted abuse report (ARF, RFC 5965/6590)")
    p.add_argument("message", help="the spam message as a file (.eml), headers included")
    p.add_argument("--send", action="store_true",
                   help="send it to abuse@ the sender's domain through the local Postfix")
    p.add_argument("--to", help="with --send: another abuse address")
    p.add_argument("--headers-only", action="store_true",
                   help="attach only the original headers (text/rfc822-headers)")
    p.add_argument("--compat", action="store_true",
                   help="RFC 6590 appendix hashing (SHA-1 of key + local part) instead of HMAC-SHA-256")
    p.add_argument("--key-file", default=KEY_PATH, help="the per-box secret (default: %(default)s)")
    p.set_defaults(func=cmd_report_spam)
