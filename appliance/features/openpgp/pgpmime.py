"""RFC 3156 PGP/MIME with protected headers (RFC 9788 style), bytes in, bytes out. No I/O here.

    prepare(raw)  -> None when the message is already encrypted (PGP/MIME, an inline PGP
                     message, S/MIME enveloped): it is stored as it is;
                  -> Prepared: the whole original entity to encrypt (every part, every
                     attachment, the original header fields, the real Subject) and the outer
                     header fields (Subject "...");
                  raises Malformed when the MIME structure cannot be determined: the caller
                  defers (4xx), it never stores such a message in plaintext.
    assemble(prepared, armored) -> the multipart/encrypted message to store.

The original body bytes are carried over untouched (only line ends become CRLF, as on the
wire), so decrypting gives back the original entity.
"""

from __future__ import annotations

import base64
import binascii
import quopri
import re
import secrets
from dataclasses import dataclass
from email.message import Message

PREAMBLE = b"This is an OpenPGP/MIME encrypted message (RFC 3156 and 4880).\r\n"
OUTER_SUBJECT = b"..."
# Fields recorded as HP-Outer inside (RFC 9788 section 2.2): what a reader saw outside.
HP_OUTER = ("from", "to", "cc", "reply-to", "subject", "date", "message-id", "in-reply-to",
            "references")
_FIELD = re.compile(rb"^([!-9;-~]+)[ \t]*:")
_TYPE = re.compile(r"^\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)/([!#$%&'*+.^_`|~0-9A-Za-z-]+)\s*(;|$)")
_ARMOR_BEGIN = b"-----BEGIN PGP MESSAGE-----"
_ARMOR_END = b"-----END PGP MESSAGE-----"


class Malformed(Exception):
    """The message's MIME structure cannot be determined; the reason is for the admin's log."""


@dataclass(frozen=True)
class Prepared:
    inner: bytes  # the entity to encrypt, CRLF line ends
    outer_fields: tuple[bytes, ...]  # raw header fields kept outside, each ending CRLF


def canonical(raw: bytes) -> bytes:
    """LF or CRLF line ends -> CRLF (what LMTP carries and RFC 3156 encrypts). Each large copy
    costs (a 1 MiB bytes object is fresh memory, page faults included), so: one pass for LF
    only (gpg's output), a check without keeping a copy for CRLF (what Postfix sends), and
    two C-speed replaces otherwise (a regex is 10x slower; bytes.count of b"\n" 3x slower)."""
    if b"\r" not in raw:
        return raw.replace(b"\n", b"\r\n")
    if b"\n" not in raw.replace(b"\r\n", b""):
        return raw  # already: no copy
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def split(raw: bytes) -> tuple[list[bytes], bytes]:
    """Header fields (each with its folded lines and CRLF) and the body (after the blank line).

    Like Postfix's cleanup, a line that is neither a field nor a continuation ends the header
    (RFC 5322 requires a blank line; some senders omit it): it is the body's first line."""
    fields: list[bytes] = []
    pos = 0
    n = len(raw)
    while pos < n:
        end = raw.find(b"\r\n", pos)
        line_end = n if end < 0 else end + 2
        line = raw[pos:line_end]
        if line in (b"\r\n", b""):
            return fields, raw[line_end:]
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        elif _FIELD.match(line):
            if b"\x00" in line:
                raise Malformed("a NUL byte in a header field")
            fields.append(line if line.endswith(b"\r\n") else line + b"\r\n")
        else:
            return fields, raw[pos:]
        pos = line_end
    return fields, b""


def field_name(f: bytes) -> str:
    m = _FIELD.match(f)
    return m.group(1).decode("ascii").lower() if m else ""


def field_value(f: bytes) -> str:
    value = f.split(b":", 1)[1]
    return re.sub(r"\r\n[ \t]", " ", value.decode("utf-8", errors="replace")).strip()


def content_type(fields: list[bytes]) -> Message | None:
    """The Content-Type as a Message carrying only it; None when absent (text/plain)."""
    found = [f for f in fields if field_name(f) == "content-type"]
    if len(found) > 1:
        raise Malformed("more than one Content-Type field")
    if not found:
        return None
    value = field_value(found[0])
    if not _TYPE.match(value):
        raise Malformed(f"Content-Type {value[:80]!r} is not type/subtype")
    m = Message()
    m["Content-Type"] = value
    return m


def decoded_body(fields: list[bytes], body: bytes) -> bytes:
    cte = next((field_value(f).lower() for f in fields
                if field_name(f) == "content-transfer-encoding"), "7bit")
    try:
        if cte == "base64":
            return base64.b64decode(re.sub(rb"[^A-Za-z0-9+/=]", b"", body))
        if cte == "quoted-printable":
            return quopri.decodestring(body)
    except (binascii.Error, ValueError):
        return body
    return body


def already_encrypted(fields: list[bytes], body: bytes, ct: Message | None) -> str | None:
    """Why the message is left as it is, or None. Strict on purpose: a message that merely
    *contains* an armored block next to clear text is encrypted (again) as a whole."""
    if ct is not None:
        t = ct.get_content_type()
        if t == "multipart/encrypted":
            return "PGP/MIME (multipart/encrypted)"
        if t in ("application/pkcs7-mime", "application/x-pkcs7-mime"):
            kind = str(ct.get_param("smime-type") or "enveloped-data").lower()
            if kind in ("enveloped-data", "authenveloped-data"):
                return f"S/MIME {kind}"
        if t == "application/pgp-encrypted":
            return "an OpenPGP message (application/pgp-encrypted)"
    if ct is None or ct.get_content_type() == "text/plain":
        text = decoded_body(fields, body)
        if _ARMOR_BEGIN in text:  # a scan; the copy that strip() makes only when it may matter
            text = text.strip()
            if (text.startswith(_ARMOR_BEGIN) and text.endswith(_ARMOR_END)
                    and text.count(_ARMOR_BEGIN) == 1):
                return "an inline PGP message"
    return None


def prepare(raw: bytes) -> Prepared | None:
    msg = canonical(raw)
    fields, body = split(msg)
    if not fields:
        raise Malformed("no header fields")
    ct = content_type(fields)
    if already_encrypted(fields, body, ct):
        return None
    if ct is not None and ct.get_content_maintype() == "multipart":
        boundary = ct.get_param("boundary")
        if not isinstance(boundary, str) or not boundary:
            raise Malformed(f"{ct.get_content_type()} without a boundary parameter")
        delimiter = b"--" + boundary.encode("utf-8", errors="replace")
        if not (body.startswith(delimiter) or b"\r\n" + delimiter in body):
            raise Malformed(f"{ct.get_content_type()} whose boundary never occurs in the body")

    inner: list[bytes] = []
    outer: list[bytes] = []
    for f in fields:
        name = field_name(f)
        if name == "content-type":
            value = f.rstrip(b"\r\n \t").rstrip(b";")
            inner.append(value + b';\r\n protected-headers="v1"; hp="cipher"\r\n')
        else:
            inner.append(f)
        if not (name.startswith("content-") or name in ("mime-version", "subject")):
            outer.append(f)
    if ct is None:
        inner.append(b'Content-Type: text/plain; charset="us-ascii";\r\n'
                     b' protected-headers="v1"; hp="cipher"\r\n')
    outer.insert(0, b"Subject: " + OUTER_SUBJECT + b"\r\n")
    for f in outer:
        if field_name(f) in HP_OUTER:
            inner.append(b"HP-Outer: " + f)
    return Prepared(b"".join((*inner, b"\r\n", body)), tuple(outer))


def opaque(raw: bytes) -> Prepared:
    """A message whose structure cannot be restructured, encrypted as it came: any other
    server would store it, so deferring it would only lose it after the queue lifetime."""
    msg = canonical(raw)
    try:
        fields, _ = split(msg)
    except Malformed:  # a NUL byte in the header: keep nothing of it outside
        fields = []
    outer = [f for f in fields if b"\x00" not in f and field_name(f)
             and not (field_name(f).startswith("content-")
                      or field_name(f) in ("mime-version", "subject"))]
    return Prepared(msg, (b"Subject: " + OUTER_SUBJECT + b"\r\n", *outer))


def assemble(p: Prepared, armored: bytes) -> bytes:
    """One copy of the (large) armored message: built by a single join."""
    armored = canonical(armored if armored.endswith(b"\n") else armored + b"\n")
    boundary = b"=_pgp_" + secrets.token_hex(12).encode()
    while boundary in armored:  # cannot happen in base64 armor; checked all the same
        boundary = b"=_pgp_" + secrets.token_hex(12).encode()
    d = b"--" + boundary
    return b"".join((
        *p.outer_fields,
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";\r\n'
        b' boundary="', boundary, b'"\r\n\r\n',
        PREAMBLE,
        d, b"\r\nContent-Type: application/pgp-encrypted\r\n"
        b"Content-Description: PGP/MIME version identification\r\n\r\nVersion: 1\r\n\r\n",
        d, b'\r\nContent-Type: application/octet-stream; name="encrypted.asc"\r\n'
        b"Content-Description: OpenPGP encrypted message\r\n"
        b'Content-Disposition: inline; filename="encrypted.asc"\r\n\r\n',
        armored, d, b"--\r\n",
    ))


def encrypt_argv(gpg: str, home: str, fingerprint: str) -> list[str]:
    """gpg encrypting stdin to one key, armored, without compression (it triples the time on
    large mail and gains nothing on mail that is mostly compressed attachments): the one-shot
    form of what the proxy's gpg workers (gpgserver.py) do."""
    from appliance.features.openpgp.gpgserver import gpg_argv

    return [*gpg_argv(gpg, home), "--encrypt", "--recipient", fingerprint]
