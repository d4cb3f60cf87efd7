"""PGP/MIME (RFC 3156) with protected headers, checked by decrypting with the real gpg; what is
left alone (already encrypted) and what is refused (malformed MIME -> the proxy defers)."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from appliance.features.openpgp import keyring, pgpmime

from .openpgp_keys import Device

ALICE = "alice@example.org"
SUBJECT = "Grüße aus Köln: Ångström ✓"
BINARY = bytes(range(256)) * 40


def original() -> bytes:
    m = EmailMessage()
    m["From"] = "Carol <carol@remote.test>"
    m["To"] = ALICE
    m["Subject"] = SUBJECT
    m["Message-ID"] = "<test-1@remote.test>"
    m["Autocrypt"] = "addr=carol@remote.test; keydata=AAAA"
    m.set_content("Hello Alice,\nplain text part.\n.\n.leading dot\n")
    m.add_alternative("<html><body><p>Hello <b>Alice</b></p></body></html>", subtype="html")
    m.add_attachment(BINARY, maintype="application", subtype="octet-stream", filename="data.bin")
    return m.as_bytes(policy=email.policy.SMTP)


@pytest.fixture(scope="module")
def device(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Device]:
    d = Device(tmp_path_factory.mktemp("device") / "gnupg")
    d.make(f"Alice <{ALICE}>")
    yield d
    d.close()


@pytest.fixture(scope="module")
def box(device: Device, tmp_path_factory: pytest.TempPathFactory) -> keyring.Keyring:
    ring = keyring.Keyring(tmp_path_factory.mktemp("box") / "gnupg")
    ring.import_key(ALICE, device.export(ALICE))
    return ring


def encrypt(box: keyring.Keyring, inner: bytes) -> bytes:
    from appliance.core import system

    fpr = box.index()[ALICE].fingerprint
    res = system.run_bytes(pgpmime.encrypt_argv("gpg", str(box.path), fpr), input=inner)
    assert res.returncode == 0, res.stderr
    return res.stdout


def protect(box: keyring.Keyring, raw: bytes) -> bytes:
    p = pgpmime.prepare(raw)
    assert p is not None
    return pgpmime.assemble(p, encrypt(box, p.inner))


def parts(m: email.message.Message) -> list[tuple[str, bytes]]:
    return [(p.get_content_type(), p.get_payload(decode=True)) for p in m.walk()
            if not p.is_multipart()]


def test_whole_entity_encrypted_with_protected_subject(box: keyring.Keyring, device: Device) -> None:
    raw = original()
    stored = protect(box, raw)
    outer = email.message_from_bytes(stored, policy=email.policy.default)
    # RFC 3156: multipart/encrypted, the version part, then the armored message.
    assert outer.get_content_type() == "multipart/encrypted"
    assert outer.get_param("protocol") == "application/pgp-encrypted"
    version, payload = outer.get_payload()
    assert version.get_content_type() == "application/pgp-encrypted"
    assert version.get_payload().strip() == "Version: 1"
    assert payload.get_content_type() == "application/octet-stream"
    armored = payload.get_payload(decode=True)
    assert armored.startswith(b"-----BEGIN PGP MESSAGE-----")
    # Nothing of the content, the real subject, or the attachment outside.
    assert outer["Subject"] == "..."
    assert b"Alice," not in stored and b"data.bin" not in stored and "Köln" not in stored.decode()
    assert outer["From"] == "Carol <carol@remote.test>" and outer["Message-ID"]
    assert outer["Autocrypt"], "Autocrypt headers are kept"
    # The decrypted entity is the original, subject included.
    inner = email.message_from_bytes(device.decrypt(armored), policy=email.policy.default)
    orig = email.message_from_bytes(raw, policy=email.policy.default)
    assert inner["Subject"] == SUBJECT
    assert inner.get_param("protected-headers") == "v1"
    assert parts(inner) == parts(orig)
    assert ("application/octet-stream", BINARY) in parts(inner)
    assert "HP-Outer: Subject: ..." in device.decrypt(armored).decode()


def test_no_compression(box: keyring.Keyring, device: Device) -> None:
    stored = protect(box, original())
    armored = email.message_from_bytes(stored).get_payload()[1].get_payload(decode=True)
    packets = device.gpg("--list-packets", input=armored, check=False).stdout.decode()
    assert "compressed packet" not in packets


def test_plain_message_without_mime_headers(box: keyring.Keyring, device: Device) -> None:
    raw = b"From: x@remote.test\nSubject: hi\n\nbody line\n"
    stored = protect(box, raw)
    armored = email.message_from_bytes(stored).get_payload()[1].get_payload(decode=True)
    inner = device.decrypt(armored)
    assert inner.endswith(b"\r\n\r\nbody line\r\n")
    assert b'Content-Type: text/plain; charset="us-ascii";\r\n protected-headers="v1"' in inner


@pytest.mark.parametrize("raw", [
    b"Subject: x\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\";"
    b" boundary=b\r\n\r\n--b\r\n\r\nVersion: 1\r\n--b--\r\n",
    b"Subject: x\r\nContent-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\r\nMIAGCSqG\r\n",
    b"Subject: x\r\nContent-Type: application/pkcs7-mime; name=smime.p7m\r\n\r\nMIAGCSqG\r\n",
    b"Subject: x\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n\r\nhF4D\r\n-----END PGP MESSAGE-----\r\n",
])
def test_already_encrypted_is_left_alone(raw: bytes) -> None:
    assert pgpmime.prepare(raw) is None


@pytest.mark.parametrize("raw", [
    # An armored block with clear text around it, or a signed-only S/MIME: encrypted as a whole.
    b"Subject: x\r\n\r\nclear text\r\n-----BEGIN PGP MESSAGE-----\r\nhF4D\r\n-----END PGP MESSAGE-----\r\n",
    b"Subject: x\r\nContent-Type: application/pkcs7-mime; smime-type=signed-data\r\n\r\nMIAG\r\n",
])
def test_partly_encrypted_is_encrypted_again(raw: bytes) -> None:
    assert pgpmime.prepare(raw) is not None


@pytest.mark.parametrize("raw, why", [
    (b"Subject: x\r\nContent-Type: multipart/mixed\r\n\r\nbody\r\n", "without a boundary"),
    (b"Subject: x\r\nContent-Type: multipart/mixed; boundary=zz\r\n\r\nno parts\r\n", "never occurs"),
    (b"Content-Type: text/plain\r\nContent-Type: text/html\r\n\r\nx\r\n", "more than one Content-Type"),
    (b"Content-Type: garbage\r\n\r\nx\r\n", "is not type/subtype"),
    (b"\r\nno header at all\r\n", "no header fields"),
])
def test_malformed_mime_is_refused(raw: bytes, why: str) -> None:
    with pytest.raises(pgpmime.Malformed, match=why):
        pgpmime.prepare(raw)


def test_header_without_blank_line_is_read_like_postfix() -> None:
    p = pgpmime.prepare(b"Subject: x\r\nthis line is the body\r\n")
    assert p is not None and p.inner.endswith(b"\r\n\r\nthis line is the body\r\n")


def test_box_keyring_is_the_one_used(box: keyring.Keyring) -> None:
    assert Path(box.path, keyring.INDEX).exists()
