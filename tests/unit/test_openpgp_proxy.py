"""The LMTP proxy over real sockets: Postfix's side is a raw LMTP client, Dovecot's a small
LMTP server that records what it would store. gpg is real. Plus a hypothesis test that throws
malformed MIME at the encryption step: each case is stored encrypted
(unchanged as one part when it cannot be restructured), never deferred."""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from appliance.features.openpgp import keyring, proxy

from .openpgp_keys import Device
from .test_openpgp_pgpmime import original

ALICE, BOB, CAROL = "alice@example.org", "bob@example.org", "carol@example.org"


class FakeDovecot:
    """Records (recipients, data) per LMTP transaction; answers 250 per recipient."""

    def __init__(self) -> None:
        self.stored: list[tuple[list[str], bytes]] = []
        self.connections = 0

    async def handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.connections += 1
        w.write(b"220 fake LMTP\r\n")
        rcpts: list[str] = []
        while line := await r.readline():
            cmd = line.decode().strip()
            if cmd.startswith("LHLO"):
                w.write(b"250-fake\r\n250 PIPELINING\r\n")
            elif cmd.startswith("RCPT"):
                rcpts.append(cmd[9:-1])
                w.write(b"550 5.1.1 unknown\r\n" if "unknown" in cmd else b"250 ok\r\n")
                if "unknown" in cmd:
                    rcpts.pop()
            elif cmd == "DATA":
                w.write(b"354 go\r\n")
                await w.drain()
                data = b""
                while (chunk := await r.readline()) != b".\r\n":
                    data += chunk[1:] if chunk.startswith(b".") else chunk
                self.stored.append((rcpts, data))
                for x in rcpts:
                    w.write(f"250 2.0.0 <{x}> saved\r\n".encode())
                rcpts = []
            elif cmd == "QUIT":
                w.write(b"221 bye\r\n")
                await w.drain()
                break
            else:
                w.write(b"250 ok\r\n")
            await w.drain()
        w.close()


async def lmtp_send(sock: str, rcpts: list[str], data: bytes, times: int = 1) -> list[str]:
    """Like Postfix: LHLO, then `times` transactions on one connection; the DATA replies."""
    r, w = await asyncio.open_unix_connection(sock)
    replies = [await proxy.read_reply(r)]
    w.write(b"LHLO test\r\n")
    replies.append(await proxy.read_reply(r))
    out = []
    for _ in range(times):
        w.write(b"MAIL FROM:<carol@remote.test>\r\n")
        replies.append(await proxy.read_reply(r))
        for x in rcpts:
            w.write(f"RCPT TO:<{x}>\r\n".encode())
            replies.append(await proxy.read_reply(r))
        w.write(b"DATA\r\n")
        replies.append(await proxy.read_reply(r))
        w.write(proxy.dot_stuff(data))
        out += [await proxy.read_reply(r) for _ in rcpts]
    w.write(b"QUIT\r\n")
    await w.drain()
    w.close()
    assert replies[0].startswith("220") and replies[-1].startswith("354"), replies
    return out


@pytest.fixture(scope="module")
def device(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Device]:
    d = Device(tmp_path_factory.mktemp("device") / "gnupg")
    d.make(f"Alice <{ALICE}>")
    yield d
    d.close()


@pytest.fixture
def setup(tmp_path: Path, device: Device) -> tuple[Path, keyring.Keyring]:
    ring = keyring.Keyring(tmp_path / "gnupg")
    ring.import_key(ALICE, device.export(ALICE))
    conf = tmp_path / "openpgp.conf"
    conf.write_text(f"listen = {tmp_path}/pgp.sock\ndovecot = {tmp_path}/dovecot.sock\n"
                    f"home = {ring.path}\ngpg = gpg\ntimeout = 30\n"
                    f"user {ALICE} when-key\nuser {BOB} required\nuser {CAROL} when-key\n")
    return conf, ring


def run_proxy(conf: Path, body) -> FakeDovecot:  # type: ignore[no-untyped-def]
    tmp = conf.parent
    dove = FakeDovecot()

    async def main() -> None:
        server = await asyncio.start_unix_server(dove.handle, str(tmp / "dovecot.sock"))
        ready = asyncio.Event()
        task = asyncio.create_task(proxy.serve(str(conf), ready))
        await asyncio.wait_for(ready.wait(), 10)
        try:
            await asyncio.wait_for(body(str(tmp / "pgp.sock")), 60)
        finally:
            task.cancel()
            server.close()

    asyncio.run(main())
    return dove


def test_per_recipient_encrypted_plaintext_or_deferred(setup, device: Device) -> None:  # type: ignore[no-untyped-def]
    conf, _ = setup
    raw = original()
    replies: list[str] = []

    async def body(sock: str) -> None:
        replies.extend(await lmtp_send(sock, [ALICE, BOB, CAROL], raw))

    dove = run_proxy(conf, body)
    assert replies[0].startswith("250") and "saved" in replies[0]
    # bob requires encryption and has no key: 451, the mail stays in Postfix's queue.
    assert replies[1].startswith("451 4.7.0") and "no OpenPGP key for bob@example.org" in replies[1]
    assert replies[2].startswith("250")
    by_rcpt = {r: d for rcpts, d in dove.stored for r in rcpts}
    assert set(by_rcpt) == {ALICE, CAROL}
    assert b"multipart/encrypted" in by_rcpt[ALICE] and b"Alice," not in by_rcpt[ALICE]
    # carol has no key and "when-key": exactly what arrived (CRLF on the wire).
    assert by_rcpt[CAROL] == proxy.pgpmime.canonical(raw)
    armored = email.message_from_bytes(by_rcpt[ALICE]).get_payload()[1].get_payload(decode=True)
    inner = email.message_from_bytes(device.decrypt(armored), policy=email.policy.default)
    assert inner["Subject"] == "Grüße aus Köln: Ångström ✓"


def test_one_dovecot_connection_per_postfix_session(setup) -> None:  # type: ignore[no-untyped-def]
    conf, _ = setup
    replies: list[str] = []

    async def body(sock: str) -> None:
        replies.extend(await lmtp_send(sock, [ALICE, CAROL], b"Subject: x\r\n\r\n.dot\r\n", times=3))

    dove = run_proxy(conf, body)
    assert len(replies) == 6 and all(r.startswith("250") for r in replies), replies
    assert dove.connections == 1
    assert len(dove.stored) == 6  # per message: alice's ciphertext, carol's plaintext
    assert dove.stored[1] == ([CAROL], b"Subject: x\r\n\r\n.dot\r\n")


@pytest.mark.parametrize("fault, why", [
    ("gpg = /nonexistent/gpg", "encryption to .* failed: /nonexistent/gpg: command not found"),
    ("home = {tmp}/other-home", "encryption to .* failed"),
])
def test_faults_defer_and_store_nothing(setup, fault: str, why: str) -> None:  # type: ignore[no-untyped-def]
    conf, ring = setup
    fault = fault.format(tmp=conf.parent)
    key, value = fault.split(" = ")
    text = conf.read_text()
    if key == "home":  # the index still names the key; the keyring itself is gone
        (Path(value)).mkdir(exist_ok=True)
        (Path(value) / keyring.INDEX).write_bytes((ring.path / keyring.INDEX).read_bytes())
    conf.write_text(re.sub(rf"^{key} = .*$", fault, text, flags=re.M))
    replies: list[str] = []

    async def body(sock: str) -> None:
        replies.extend(await lmtp_send(sock, [ALICE], original()))

    try:
        dove = run_proxy(conf, body)
    finally:
        if key == "home":
            import shutil

            shutil.rmtree(value)
    assert replies[0].startswith("451 4.7.0"), replies
    assert re.search(why, replies[0]), replies
    assert dove.stored == []


def test_malformed_mime_is_encrypted_unchanged_for_a_key_plaintext_without(setup, device: Device) -> None:  # type: ignore[no-untyped-def]
    conf, _ = setup
    raw = b"Subject: x\r\nContent-Type: multipart/mixed\r\n\r\nsecret body\r\n"
    replies: list[str] = []

    async def body(sock: str) -> None:
        replies.extend(await lmtp_send(sock, [ALICE, CAROL, "unknown@example.org"], raw))

    dove = run_proxy(conf, body)
    assert replies[0].startswith("250"), replies  # stored, not deferred for ever
    assert replies[1].startswith("250")  # carol stores plaintext anyway (her setting)
    assert replies[2].startswith("550")  # Dovecot's own answer is passed on
    by_rcpt = {r: d for rcpts, d in dove.stored for r in rcpts}
    assert b"secret body" not in by_rcpt[ALICE] and b"Subject: ...\r\n" in by_rcpt[ALICE]
    armored = email.message_from_bytes(by_rcpt[ALICE]).get_payload()[1].get_payload(decode=True)
    assert device.decrypt(armored) == raw  # exactly the received bytes
    assert by_rcpt[CAROL] == raw


def test_dovecot_failure_is_logged_once_with_its_reason(setup, capsys) -> None:  # type: ignore[no-untyped-def]
    conf, _ = setup
    conf.write_text(conf.read_text().replace("dovecot.sock", "missing.sock"))
    replies: list[str] = []

    async def body(sock: str) -> None:
        replies.extend(await lmtp_send(sock, [ALICE, CAROL], b"Subject: x\r\n\r\nsecret body\r\n"))

    run_proxy(conf, body)
    assert all(r.startswith("451 4.4.0") for r in replies), replies
    logged = [x for x in capsys.readouterr().out.splitlines() if "Dovecot LMTP failed" in x]
    assert len(logged) == 1, logged
    assert "FileNotFoundError" in logged[0] and "2 recipient(s)" in logged[0]
    assert "secret body" not in logged[0]


def test_queue_is_flushed_once_listening(setup, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A stand-in for postqueue (no Postfix here) records that it ran, with -f."""
    conf, _ = setup
    fake = tmp_path / "postqueue"
    fake.write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path}/flushed\n")
    fake.chmod(0o755)
    conf.write_text(conf.read_text() + f"flush = {fake}\n")
    run_proxy(conf, lambda sock: asyncio.sleep(0))
    assert (tmp_path / "flushed").read_text() == "-f\n"


# --- hypothesis: malformed MIME at the encryption step --------------------------------------------
_text = st.binary(max_size=200)
_line = st.one_of(
    st.sampled_from([b"Subject: s", b"Content-Type: multipart/mixed; boundary=b", b"Content-Type: text/plain",
                     b"Content-Type: multipart/alternative", b"Content-Transfer-Encoding: base64",
                     b"Content-Type: application/pkcs7-mime", b"MIME-Version: 1.0", b" folded",
                     b"--b", b"--b--", b"-----BEGIN PGP MESSAGE-----", b"-----END PGP MESSAGE-----",
                     b"", b".", b"..", b"Content-Type: multipart/encrypted; boundary=\"b\"",
                     b"Content-Type: ;;;", b"Content-Type: text/plain; charset=\"unterminated"]),
    _text.map(lambda b: b.replace(b"\n", b"").replace(b"\r", b"")),
)
_header = st.one_of(
    st.sampled_from([b"From: a@b.c", b"Subject: s", b"Content-Type: multipart/mixed; boundary=b",
                     b"Content-Type: text/plain", b"Content-Type: multipart/alternative",
                     b"Content-Transfer-Encoding: base64", b"Content-Type: application/pkcs7-mime",
                     b"Content-Type: multipart/encrypted; boundary=\"b\"", b"Content-Type: ;;;",
                     b" folded", b"Subject: =?utf-8?q?=C3=A4?=", b"X-8bit: \xc3\xa4\xff"]),
    st.from_regex(rb"\A[!-9;-~]{1,12}:[ -~\x80-\xff]{0,40}\Z"),
)
messages = st.tuples(st.lists(_header, min_size=1, max_size=8), st.booleans(),
                     st.lists(_line, max_size=20)).map(
    lambda t: b"\r\n".join(t[0] + ([b""] if t[1] else []) + t[2]) + b"\r\n")


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(raw=messages)
def test_malformed_mime_is_encrypted_correctly_or_deferred(setup, device: Device, raw: bytes) -> None:  # type: ignore[no-untyped-def]
    conf, _ = setup
    engine = proxy.Engine(str(conf))
    try:
        prepared: object = proxy.pgpmime.prepare(raw)
    except proxy.pgpmime.Malformed as e:
        prepared = e

    async def go() -> bytes | str:
        try:
            return await engine.content_for(ALICE, proxy.pgpmime.canonical(raw), prepared, {})
        except proxy.Deferred as e:
            return str(e)

    try:
        out = asyncio.run(go())
    finally:
        engine.close()  # its gpg workers
    event("deferred" if isinstance(out, str) else "left alone" if prepared is None else "encrypted")
    assert not isinstance(out, str), out  # malformed is no reason to defer: encrypted as it came
    if isinstance(prepared, proxy.pgpmime.Malformed):
        prepared = proxy.pgpmime.opaque(raw)
    if prepared is None:  # already encrypted by the sender: stored as it came
        assert out == proxy.pgpmime.canonical(raw)
        return
    outer = email.message_from_bytes(out)
    assert outer.get_content_type() == "multipart/encrypted"
    armored = outer.get_payload()[1].get_payload(decode=True)
    assert device.decrypt(armored) == prepared.inner  # type: ignore[union-attr]
