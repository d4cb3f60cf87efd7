"""OpenPGP encryption at rest against the real Postfix, Dovecot and gpg in the lab.

A remote sender's MX hands mail to the appliance; the agent's LMTP proxy encrypts it for users
with a key before Dovecot stores it. Faults (expired key, gpg missing, GnuPG home unreadable,
malformed MIME) leave the message deferred in Postfix's queue with a 4xx reason: nothing
stored in plaintext, nothing bounced; once fixed, `postqueue -f` delivers it encrypted.

The user's "device" is a GnuPG home on the test machine (tests/unit/openpgp_keys.py); the
independent decryption is Sequoia's `sq`.
"""

from __future__ import annotations

import email
import email.policy
import json
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from ..unit.openpgp_keys import Device
from .mail_lab import ALICE, BOB_LOCAL, DOMAIN, REMOTE, MailLab, settings_toml
from .netlab import wait_for

MAILDIR = {ALICE: f"/var/vmail/{DOMAIN}/alice/Maildir", BOB_LOCAL: f"/var/vmail/{DOMAIN}/bob/Maildir"}
HOME = "/var/lib/appliance/gnupg"
SUBJECT = "Grüße, Ångström ✓ — geheim"
BINARY = bytes(range(256)) * 64


def lab_settings(lab: MailLab) -> str:
    return settings_toml(lab.users, getattr(lab, "settings_extra", ""))


def message(tag: str, sender: str, rcpt: str, size: int = 0) -> bytes:
    m = EmailMessage()
    m["From"] = sender
    m["To"] = rcpt
    m["Subject"] = f"{SUBJECT} {tag}"
    m["Message-ID"] = f"<{tag}@{REMOTE}>"
    m.set_content(f"secret-{tag}: the plain text part\n")
    m.add_alternative(f"<html><body><p>secret-{tag} <b>HTML</b></p></body></html>", subtype="html")
    m.add_attachment(BINARY if not size else bytes(range(256)) * (size // 256),
                     maintype="application", subtype="octet-stream", filename="data.bin")
    return m.as_bytes(policy=email.policy.SMTP)


def send(lab: MailLab, sender: str, rcpt: str, raw: bytes) -> None:
    """The remote domain's MX relays it to the appliance (through DNS, the router, port 25)."""
    path = lab.workdir / f"msg-{uuid.uuid4().hex}.eml"
    path.write_bytes(raw)
    r = lab.mx.python(f"""
import smtplib
s = smtplib.SMTP('127.0.0.1', 25, timeout=120)
s.sendmail({sender!r}, [{rcpt!r}], open({str(path)!r}, 'rb').read())
s.quit()""", timeout=180)
    path.unlink()
    assert r.returncode == 0, r.stderr


def stored(lab: MailLab, rcpt: str, tag: str) -> list[bytes]:
    return [p.read_bytes() for p in lab.maildir_files(lab.app, MAILDIR[rcpt])
            if tag.encode() in p.read_bytes()[:20000]]


def wait_stored(lab: MailLab, rcpt: str, tag: str, timeout: float = 60) -> bytes:
    wait_for(f"message {tag} stored", lambda: stored(lab, rcpt, tag), timeout=timeout, interval=0.2)
    return stored(lab, rcpt, tag)[0]


def queued(lab: MailLab, sender: str) -> list[dict]:
    out = lab.app.run(["postqueue", "-j"], check=False).stdout
    return [q for q in map(json.loads, out.splitlines()) if q.get("sender") == sender]


def wait_deferred(lab: MailLab, sender: str, timeout: float = 60) -> dict:
    def deferred() -> dict | None:
        return next((q for q in queued(lab, sender) if q["queue_name"] == "deferred"
                     and any("451" in r.get("delay_reason", "") for r in q["recipients"])), None)

    try:
        wait_for(f"a deferral for {sender}", deferred, timeout=timeout, interval=0.2)
    except TimeoutError:
        raise AssertionError(f"no 451 deferral for {sender}: queue {queued(lab, sender)}\n"
                             f"{lab.app.read('/var/log/appliance-pgp.log')[-1500:]}\n"
                             f"{lab.app.read('/var/log/mail.log')[-1500:]}") from None
    q = deferred()
    assert q is not None
    return q


def decrypt_both(device: Device, secret: Path, stored_msg: bytes) -> bytes:
    outer = email.message_from_bytes(stored_msg)
    assert outer.get_content_type() == "multipart/encrypted"
    assert outer.get_param("protocol") == "application/pgp-encrypted"
    assert str(outer["Subject"]) == "..."
    armored = outer.get_payload()[1].get_payload(decode=True)
    by_gpg = device.decrypt(armored)
    by_sq = subprocess.run(["sq", "decrypt", "--recipient-key", str(secret)], input=armored,
                           capture_output=True, check=True, timeout=120).stdout
    assert by_sq == by_gpg
    return by_gpg


def leaves(raw: bytes) -> list[tuple[str, bytes]]:
    m = email.message_from_bytes(raw, policy=email.policy.default)
    return [(p.get_content_type(), p.get_payload(decode=True)) for p in m.walk() if not p.is_multipart()]


@pytest.fixture(scope="module")
def device(lab: MailLab) -> Iterator[tuple[Device, Path]]:
    """Alice's own device with her key; the box gets the public half only."""
    if not shutil.which("sq"):
        pytest.fail("sq (Debian package sq) is missing; `make test` installs it")
    d = Device(lab.workdir / "alice-device")
    d.make(f"Alice <{ALICE}>")
    secret = lab.workdir / "alice-secret.pgp"
    secret.write_bytes(d.gpg("--export-secret-keys", ALICE).stdout)
    import_key(lab, d)
    yield d, secret
    lab.appliance("key", "remove", ALICE)
    d.close()


def import_key(lab: MailLab, d: Device) -> None:
    lab.app.write("/var/tmp/alice.asc", d.export(ALICE))
    r = lab.appliance("key", "import", ALICE, "/var/tmp/alice.asc")
    assert r.returncode == 0, r.stderr


def assert_deferred_not_stored_not_bounced(lab: MailLab, sender: str, tag: str) -> dict:
    q = wait_deferred(lab, sender)
    assert not stored(lab, ALICE, tag), "stored although encryption failed"
    log = lab.app.read("/var/log/mail.log")
    assert not [line for line in log.splitlines() if q["queue_id"] in line and "bounced" in line]
    return q


def flush_and_check_encrypted(lab: MailLab, device: tuple[Device, Path], tag: str) -> None:
    lab.app.run(["postqueue", "-f"])
    msg = wait_stored(lab, ALICE, tag)
    assert f"secret-{tag}".encode() not in msg
    inner = decrypt_both(device[0], device[1], msg)
    assert f"secret-{tag}".encode() in inner


def test_multipart_from_remote_is_stored_as_pgp_mime_and_decrypts_to_the_original(
        lab: MailLab, device: tuple[Device, Path]) -> None:
    tag = uuid.uuid4().hex[:12]
    raw = message(tag, f"carol@{REMOTE}", ALICE)
    send(lab, f"carol@{REMOTE}", ALICE, raw)
    msg = wait_stored(lab, ALICE, tag)
    assert f"secret-{tag}".encode() not in msg and b"data.bin" not in msg
    inner = decrypt_both(device[0], device[1], msg)
    got = email.message_from_bytes(inner, policy=email.policy.default)
    assert got["Subject"] == f"{SUBJECT} {tag}"
    assert leaves(inner) == leaves(raw)
    assert ("application/octet-stream", BINARY) in leaves(inner)
    # The proxy says what it did, and how long encryption took.
    assert f"for {ALICE} to {device[0].fpr(ALICE)}" in lab.app.read("/var/log/appliance-pgp.log")


def test_plus_addressed_mail_is_encrypted_to_the_user_behind_the_tag(
        lab: MailLab, device: tuple[Device, Path]) -> None:
    """Postfix hands alice+shop@ on with its tag; the proxy must still find alice's key, or
    the mail would be stored in the clear."""
    tag = uuid.uuid4().hex[:12]
    tagged = ALICE.replace("@", "+shop@")
    send(lab, f"carol@{REMOTE}", tagged, message(tag, f"carol@{REMOTE}", tagged))
    msg = wait_stored(lab, ALICE, tag)
    assert f"secret-{tag}".encode() not in msg
    assert f"secret-{tag}".encode() in decrypt_both(device[0], device[1], msg)


def test_user_without_key_gets_plaintext_per_setting_and_status_says_so(lab: MailLab) -> None:
    tag = uuid.uuid4().hex[:12]
    r = lab.appliance("key", "list")
    assert r.returncode == 0, r.stderr
    assert f'{BOB_LOCAL}: no key: stored in plaintext (encrypt = "when-key"' in r.stdout
    send(lab, f"carol@{REMOTE}", BOB_LOCAL, message(tag, f"carol@{REMOTE}", BOB_LOCAL))
    assert f"secret-{tag}".encode() in wait_stored(lab, BOB_LOCAL, tag)


def test_required_without_key_waits_in_queue_until_a_key_exists(lab: MailLab) -> None:
    tag = uuid.uuid4().hex[:12]
    sender = f"req-{tag}@{REMOTE}"
    text = lab_settings(lab).replace(
        f'address = "{BOB_LOCAL}"', f'address = "{BOB_LOCAL}"\nencrypt = "required"')
    lab.write_settings(text)
    try:
        assert lab.appliance("apply").returncode == 0
        r = lab.appliance("key", "show", BOB_LOCAL)
        assert "mail waits in the queue (451)" in r.stdout
        send(lab, sender, BOB_LOCAL, message(tag, sender, BOB_LOCAL))
        q = wait_deferred(lab, sender)
        assert "no OpenPGP key for" in q["recipients"][0]["delay_reason"]
        assert not stored(lab, BOB_LOCAL, tag)
    finally:
        lab.write_settings(lab_settings(lab))
        assert lab.appliance("apply").returncode == 0
    lab.app.run(["postqueue", "-f"])  # back to "when-key": delivered (plaintext, bob's choice)
    wait_stored(lab, BOB_LOCAL, tag)


def test_fault_gpg_missing(lab: MailLab, device: tuple[Device, Path]) -> None:
    tag = uuid.uuid4().hex[:12]
    sender = f"nogpg-{tag}@{REMOTE}"
    # Only inside the appliance host's own mount namespace: the test machine keeps its gpg.
    lab.app.run(["mount", "--bind", "/dev/null", "/usr/bin/gpg"])
    try:
        send(lab, sender, ALICE, message(tag, sender, ALICE))
        q = assert_deferred_not_stored_not_bounced(lab, sender, tag)
        assert "encryption to" in q["recipients"][0]["delay_reason"]
    finally:
        lab.app.run(["umount", "/usr/bin/gpg"])
    flush_and_check_encrypted(lab, device, tag)


def test_fault_gnupg_home_unreadable(lab: MailLab, device: tuple[Device, Path]) -> None:
    tag = uuid.uuid4().hex[:12]
    sender = f"nohome-{tag}@{REMOTE}"
    lab.app.run(["chmod", "000", HOME])
    try:
        send(lab, sender, ALICE, message(tag, sender, ALICE))
        q = assert_deferred_not_stored_not_bounced(lab, sender, tag)
        assert "451" in q["recipients"][0]["delay_reason"]
    finally:
        lab.app.run(["chmod", "750", HOME])
    flush_and_check_encrypted(lab, device, tag)


def test_fault_key_expired(lab: MailLab, device: tuple[Device, Path]) -> None:
    tag = uuid.uuid4().hex[:12]
    sender = f"expired-{tag}@{REMOTE}"
    d, _ = device
    fpr = d.fpr(ALICE)
    d.set_expire(fpr, "seconds=6")
    try:
        import_key(lab, d)  # still valid for a few seconds: accepted
        wait_for("alice's key to expire", lambda: "EXPIRED" in lab.appliance("key", "show", ALICE).stdout,
                 timeout=20, interval=0.5)
        send(lab, sender, ALICE, message(tag, sender, ALICE))
        q = assert_deferred_not_stored_not_bounced(lab, sender, tag)
        assert "expired" in q["recipients"][0]["delay_reason"]
    finally:
        d.set_expire(fpr, "1y")
        import_key(lab, d)  # the fix: the user extends the key and the admin imports it again
    flush_and_check_encrypted(lab, device, tag)


def test_fault_malformed_mime_is_stored_encrypted_unchanged(lab: MailLab,
                                                            device: tuple[Device, Path]) -> None:
    """A multipart without a boundary cannot be restructured: it is encrypted as it came (any
    other server would store it; a 4xx would only turn into a bounce days later)."""
    tag = uuid.uuid4().hex[:12]
    sender = f"malformed-{tag}@{REMOTE}"
    raw = (f"From: {sender}\r\nTo: {ALICE}\r\nSubject: broken {tag}\r\nMIME-Version: 1.0\r\n"
           f"Content-Type: multipart/mixed\r\n\r\nsecret-{tag} with no boundary\r\n").encode()
    send(lab, sender, ALICE, raw)
    msg = wait_stored(lab, ALICE, tag)
    assert f"secret-{tag}".encode() not in msg
    inner = decrypt_both(device[0], device[1], msg)
    assert_same_message(raw, inner)
    assert not queued(lab, sender)


CORPUS = Path("/usr/lib/python3.11/test/test_email/data")


def _fields_and_body(raw: bytes) -> tuple[list[bytes], bytes]:
    """Header fields (unfolded, CRLF) and the body bytes of a message in canonical form."""
    msg = re.sub(rb"(?<!\r)\n", b"\r\n", raw)
    head, sep, body = msg.partition(b"\r\n\r\n")
    if not sep and not re.match(rb"[!-9;-~]+:", head):  # no header at all
        return [], msg
    fields: list[bytes] = []
    for line in head.split(b"\r\n"):
        if fields and line[:1] in (b" ", b"\t"):
            fields[-1] += b"\r\n" + line
        elif line:
            fields.append(line)
    return fields, body


def assert_same_message(original: bytes, decrypted: bytes) -> None:
    """Every header field of the original is in the decrypted message (which has the trace
    fields our own Postfix added besides; Content-Type may carry protected-headers="v1"), and
    the body bytes are identical."""
    want, body = _fields_and_body(original)
    got, got_body = _fields_and_body(decrypted)
    assert got_body == body, (got_body[:300], body[:300])
    remaining = list(got)
    for f in want:
        match = next((g for g in remaining if g == f or (
            f.lower().startswith(b"content-type:") and g.startswith(f.rstrip(b"; \t")))), None)
        assert match is not None, (f, got)
        remaining.remove(match)


def _log_of(lab: MailLab, senders: list[str]) -> str:
    """mail.log lines about the messages of these envelope senders."""
    lines = lab.app.read("/var/log/mail.log").splitlines()
    ids = {x.split(": ")[1] for x in lines if any(f"from=<{s}>" in x for s in senders)}
    return "\n".join(x for x in lines if any(f" {i}: " in x for i in ids))


def test_real_world_odd_mime_corpus_is_all_stored_encrypted(lab: MailLab,
                                                           device: tuple[Device, Path]) -> None:
    """CPython's email test corpus (Debian's libpython3.11-testsuite): multiparts without a
    boundary, boundaries that never occur, mbox "From " lines, no header/body separator. Each
    message goes to alice (a key) and bob (no key, plaintext by his setting) in one transaction,
    so the proxy gets the same bytes for both. alice's copy is stored encrypted, none is
    deferred, and each decrypts (gpg and sq) to bob's plaintext copy: every header field and the
    body bytes. (Bob's copy, not the file: Postfix itself drops Return-Path and mends what is
    no header line, before any of this.)"""
    files = sorted(CORPUS.glob("msg_*.txt"))
    if not files:
        pytest.fail(f"no corpus in {CORPUS}: `make test` installs libpython3.11-testsuite")
    tag = uuid.uuid4().hex[:8]
    senders = {f.name: f"corpus-{tag}-{f.stem.replace('_', '-')}@{REMOTE}" for f in files}
    listing = lab.workdir / f"corpus-{tag}.json"
    listing.write_text(json.dumps([[senders[f.name], str(f)] for f in files]))
    r = lab.mx.python(f"""
import json, re, smtplib
s = smtplib.SMTP('127.0.0.1', 25, timeout=120)
for sender, path in json.load(open({str(listing)!r})):
    # CRLF line ends, as SMTP carries them (smtplib sends bytes as given, and would end a
    # bare-LF message with one CRLF more)
    s.sendmail(sender, [{ALICE!r}, {BOB_LOCAL!r}],
               re.sub(rb"(?<!\\r)\\n", b"\\r\\n", open(path, 'rb').read()))
s.quit()""", timeout=300)
    assert r.returncode == 0, r.stderr

    def copy(rcpt: str, sender: str) -> list[bytes]:
        """In the INBOX or in Junk (rspamd files some of these odd messages there)."""
        return [p.read_bytes() for d in (MAILDIR[rcpt], MAILDIR[rcpt] + "/.Junk")
                for p in lab.maildir_files(lab.app, d) if f"<{sender}>".encode() in p.read_bytes()[:300]]

    def missing() -> list[str]:
        return [n for n, snd in senders.items() if not (copy(ALICE, snd) and copy(BOB_LOCAL, snd))]

    try:
        wait_for("the corpus stored", lambda: not missing(), timeout=180, interval=1)
    except TimeoutError:
        raise AssertionError(f"not stored: {missing()}; queue: "
                             f"{[q for s in senders.values() for q in queued(lab, s)][:5]}\n"
                             f"{lab.app.read('/var/log/appliance-pgp.log')[-1500:]}\n" +
                             _log_of(lab, [senders[n] for n in missing()])) from None
    assert not [q for s in senders.values() for q in queued(lab, s)]
    differ: list[str] = []
    opaque = 0
    for f in files:
        (mine,), (plain,) = copy(ALICE, senders[f.name]), copy(BOB_LOCAL, senders[f.name])
        # What Dovecot's LMTP put in front of bob's copy (Return-Path, Delivered-To, its Received)
        # describes his delivery, not the message.
        fields, body = _fields_and_body(plain)
        assert [x.split(b":")[0] for x in fields[:3]] == [b"Return-Path", b"Delivered-To",
                                                           b"Received"], fields[:3]
        assert b"with LMTP" in fields[2], fields[2]
        received = b"\r\n".join(fields[3:]) + b"\r\n\r\n" + body
        if len(body.strip()) > 20:  # no plaintext: the body is not readable in alice's mailbox
            assert body.strip()[:200] not in mine, f.name
        try:
            inner = decrypt_both(device[0], device[1], mine)
            assert_same_message(received, inner)
            opaque += inner == received
        except AssertionError as e:
            differ.append(f"{f.name}: {str(e)[:300]}")
    assert not differ, "\n".join(differ)
    print(f"{len(files)} corpus messages stored encrypted, {opaque} of them as one unchanged part")


def test_fault_30_mib_message_times_out_then_is_encrypted(lab: MailLab, device: tuple[Device, Path]) -> None:
    """A 30 MiB message meets an encryption time limit too short for it (the admin's setting
    stands in for a slow or hung gpg): deferred; with the shipped limit it is delivered."""
    tag = uuid.uuid4().hex[:12]
    sender = f"big-{tag}@{REMOTE}"
    conf = "/etc/appliance/openpgp.conf"
    lab.write_settings(lab_settings(lab).replace("message_size_limit_mb = 10",
                                                        "message_size_limit_mb = 60"))
    lab.mx.run(["postconf", "-e", "message_size_limit=62914560"])
    lab.mx.run(["postfix", "reload"])
    try:
        assert lab.appliance("apply").returncode == 0
        shipped = lab.app.read(conf)
        lab.app.write(conf, shipped.replace("\ntimeout = ", "\ntimeout = 0.01\n# was: "))
        raw = message(tag, sender, ALICE, size=30 * 1024 * 1024)
        send(lab, sender, ALICE, raw)
        q = assert_deferred_not_stored_not_bounced(lab, sender, tag)
        assert "timed out" in q["recipients"][0]["delay_reason"]
        lab.app.write(conf, shipped)
        lab.app.run(["postqueue", "-f"])
        msg = wait_stored(lab, ALICE, tag, timeout=180)
        assert f"secret-{tag}".encode() not in msg
        inner = decrypt_both(device[0], device[1], msg)
        assert leaves(inner) == leaves(raw)
    finally:
        lab.write_settings(lab_settings(lab))
        assert lab.appliance("apply").returncode == 0
        lab.mx.run(["postconf", "-X", "message_size_limit"])
        lab.mx.run(["postfix", "reload"])
