"""The proxy's long-running gpg workers (`gpg --server`), with the real gpg: what they encrypt
decrypts to the input and has the same packets as `gpg --encrypt`; they are reused, bounded in
number, and replaced after any failure or when gpg or the keyring change."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.core import system
from appliance.features.openpgp import gpgserver, keyring, pgpmime

from .openpgp_keys import Device

ALICE, BOB = "alice@example.org", "bob@example.org"


@pytest.fixture(scope="module")
def device(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Device]:
    d = Device(tmp_path_factory.mktemp("device") / "gnupg")
    d.make(f"Alice <{ALICE}>")
    d.make(f"Bob <{BOB}>")
    yield d
    d.close()


@pytest.fixture
def box(tmp_path: Path, device: Device) -> keyring.Keyring:
    ring = keyring.Keyring(tmp_path / "gnupg")
    ring.import_key(ALICE, device.export(ALICE))
    return ring


def fpr(ring: keyring.Keyring, who: str = ALICE) -> str:
    return ring.index()[who].fingerprint


def workers(pool: gpgserver.Pool) -> set[int]:
    return {w.proc.pid for w in [*pool.idle, *pool.out]}


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(asyncio.wait_for(coro, 60))


def packets(device: Device, armored: bytes) -> list[str]:
    """The packet structure, without what differs per run (keys, times, lengths)."""
    out = device.gpg("--list-packets", input=armored).stdout.decode()
    return [re.sub(r"keyid \w+|created \d+|\[\d+ bits\]|plen=\d+", "", line).strip()
            for line in out.splitlines() if line.startswith((":", "#", "\t"))]


def test_encrypts_like_the_one_shot_command_and_decrypts_to_the_input(box, device: Device) -> None:  # type: ignore[no-untyped-def]
    data = b"Subject: x\r\n\r\n" + os.urandom(3000).hex().encode() + b"\r\n"
    pool = gpgserver.Pool(size=1)
    try:
        armored, _, took = run(pool.encrypt("gpg", str(box.path), fpr(box), data, 30))
    finally:
        pool.close()
    assert armored.startswith(b"-----BEGIN PGP MESSAGE-----") and took > 0
    assert device.decrypt(armored) == data
    one_shot = system.run_bytes(pgpmime.encrypt_argv("gpg", str(box.path), fpr(box)), input=data)
    assert one_shot.returncode == 0, one_shot.stderr
    assert packets(device, armored) == packets(device, one_shot.stdout)
    assert any("mdc_method: 2" in p for p in packets(device, armored))  # SEIPD with MDC
    assert not any("compressed packet" in p for p in packets(device, armored))


def test_workers_are_reused_and_bounded_under_concurrency(box, device: Device) -> None:  # type: ignore[no-untyped-def]
    pool = gpgserver.Pool(size=2)
    msgs = [f"message {n}\r\n".encode() * (1 + n * 50) for n in range(12)]
    seen: set[int] = set()

    async def one(m: bytes) -> bytes:
        out, _, _ = await pool.encrypt("gpg", str(box.path), fpr(box), m, 30)
        seen.update(workers(pool))
        return out

    async def all_of() -> list[bytes]:
        return await asyncio.gather(*(one(m) for m in msgs))

    try:
        outs = run(all_of())
        assert len(seen) <= 2, seen  # 12 messages, 2 gpg processes
        assert [device.decrypt(o) for o in outs] == msgs
    finally:
        pool.close()
    assert not pool.idle and not pool.out


def test_a_failure_kills_the_worker_and_the_next_message_gets_a_fresh_one(box, device: Device) -> None:  # type: ignore[no-untyped-def]
    pool = gpgserver.Pool(size=1)
    home = str(box.path)
    try:
        run(pool.encrypt("gpg", home, fpr(box), b"one\r\n", 30))
        first = workers(pool)
        with pytest.raises(gpgserver.GpgError, match="No public key"):
            run(pool.encrypt("gpg", home, "0" * 40, b"two\r\n", 30))
        assert workers(pool) == set()
        out, _, _ = run(pool.encrypt("gpg", home, fpr(box), b"three\r\n", 30))
        assert device.decrypt(out) == b"three\r\n" and workers(pool) != first
        # A worker killed while idle is replaced, not used.
        (pid,) = workers(pool)
        os.kill(pid, signal.SIGKILL)
        out, _, _ = run(pool.encrypt("gpg", home, fpr(box), b"four\r\n", 30))
        assert device.decrypt(out) == b"four\r\n" and pid not in workers(pool)
        with pytest.raises(gpgserver.GpgError, match="not a key fingerprint"):
            run(pool.encrypt("gpg", home, "ABC\nENCRYPT", b"five\r\n", 30))
    finally:
        pool.close()


def test_time_limit_kills_the_worker(box) -> None:  # type: ignore[no-untyped-def]
    pool = gpgserver.Pool(size=1)
    try:
        with pytest.raises(gpgserver.GpgError, match="timed out after 0.001 s"):
            run(pool.encrypt("gpg", str(box.path), fpr(box), os.urandom(8 << 20), 0.001))
        assert workers(pool) == set()
        run(pool.encrypt("gpg", str(box.path), fpr(box), b"after\r\n", 30))
    finally:
        pool.close()


def test_workers_are_replaced_when_the_keyring_or_gpg_changes(box, device: Device, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pool = gpgserver.Pool(size=1)
    home = str(box.path)
    try:
        run(pool.encrypt("gpg", home, fpr(box), b"a\r\n", 30))
        before = workers(pool)
        run(pool.encrypt("gpg", home, fpr(box), b"b\r\n", 30))
        assert workers(pool) == before  # nothing changed: the same process
        # A key imported after the worker started is used (a stale worker would not know it).
        box.import_key(BOB, device.export(BOB))
        out, _, _ = run(pool.encrypt("gpg", home, fpr(box, BOB), b"for bob\r\n", 30))
        assert device.decrypt(out) == b"for bob\r\n" and workers(pool) != before
        # The home made unreadable: the running worker could still read its open keyring; it
        # is replaced, and the new one cannot, so encryption fails.
        if os.geteuid() != 0:  # root reads it anyway
            alice = fpr(box)
            os.chmod(home, 0)
            try:
                with pytest.raises(gpgserver.GpgError):
                    run(pool.encrypt("gpg", home, alice, b"c\r\n", 30))
            finally:
                os.chmod(home, 0o750)
        # Another gpg binary (an upgrade, or a broken one): replaced, and the failure is reported.
        fake = tmp_path / "gpg"
        fake.write_text("#!/bin/sh\nexit 3\n")
        fake.chmod(0o755)
        with pytest.raises(gpgserver.GpgError, match="gpg stopped"):
            run(pool.encrypt(str(fake), home, fpr(box), b"d\r\n", 30))
        with pytest.raises(gpgserver.GpgError, match="command not found"):
            run(pool.encrypt(str(tmp_path / "missing"), home, fpr(box), b"e\r\n", 30))
        out, _, _ = run(pool.encrypt("gpg", home, fpr(box), b"f\r\n", 30))
        assert device.decrypt(out) == b"f\r\n"
    finally:
        pool.close()
    # Every worker was reaped: no gpg --server child of ours is left.
    left = subprocess.run(["pgrep", "-P", str(os.getpid()), "-f", "--server"],
                          capture_output=True, text=True, check=False).stdout.split()
    assert left == []


def test_a_worker_is_replaced_after_max_uses(box, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(gpgserver, "MAX_USES", 2)
    pool = gpgserver.Pool(size=1)
    seen = []
    try:
        for n in range(5):
            run(pool.encrypt("gpg", str(box.path), fpr(box), b"%d\r\n" % n, 30))
            seen.append(workers(pool))
    finally:
        pool.close()
    # After each second message the worker is stopped; the next message starts a new one.
    assert [len(s) for s in seen] == [1, 0, 1, 0, 1]
    assert seen[0] != seen[2] != seen[4]


def test_reset_replaces_idle_and_busy_workers(box) -> None:  # type: ignore[no-untyped-def]
    pool = gpgserver.Pool(size=2)
    home = str(box.path)

    async def go() -> tuple[set[int], set[int]]:
        await asyncio.gather(*(pool.encrypt("gpg", home, fpr(box), b"x\r\n", 30) for _ in range(2)))
        first = workers(pool)
        slow = asyncio.create_task(pool.encrypt("gpg", home, fpr(box), os.urandom(1 << 20), 30))
        await asyncio.sleep(0)  # one worker busy, one idle
        pool.reset()  # what SIGHUP does
        await slow
        await pool.encrypt("gpg", home, fpr(box), b"y\r\n", 30)
        return first, workers(pool)

    try:
        first, after = run(go())
    finally:
        pool.close()
    assert len(first) == 2 and after and not (after & first)
