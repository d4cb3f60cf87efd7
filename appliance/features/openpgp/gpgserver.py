"""Encryption by long-running `gpg --server` processes: no gpg start per message.

Starting gpg costs about 2.5 ms of CPU (exec, dynamic linking, libgcrypt set-up) against
about 0.7 ms for encrypting a 4 KiB message to a Curve25519 key; on a two-core box that start
was what kept delivery with encryption below 0.7x of delivery without. So the proxy keeps a
few gpg processes running GnuPG's Assuan server mode (the same `encrypt_crypt()` code as
`gpg --encrypt`, with the same options: armor, no compression, trust model "always", no
agent, no key lookup on the network). Each talks over a Unix socket pair (libassuan's
`_assuan_connection_fd`), so the message and the ciphertext pass as file descriptors of
anonymous memory (memfd, never a file on disk):

    RECIPIENT <fingerprint>        OK, or ERR (no such key, key not usable for encryption)
    INPUT FD      + the plaintext memfd
    OUTPUT FD     + an empty memfd for the ciphertext
    ENCRYPT                        OK: the armored message is in the output memfd

Safety: a worker is used again only after a clean OK for the whole exchange. Any ERR, an
unexpected line, gpg exiting, or the time limit kills it (the caller defers the message; a
new worker starts for the next one). All workers are replaced when the gpg binary, the GnuPG
home or its public keyring change (a package upgrade, `appliance key import`, an admin fixing
a permission), checked by a few stat() calls per message: gpg never encrypts with a keyring,
a binary or permissions older than the message.
"""

from __future__ import annotations

import asyncio
import collections
import os
import re
import socket
import time
from typing import Any

from appliance.core import system

ENV_PATH = "/usr/bin:/bin"
_FPR = re.compile(r"\A(?:[0-9A-F]{40}|[0-9A-F]{64})\Z")
_MAX_REPLY = 1 << 16
# Messages per worker before it is replaced anyway (Postfix's max_use idea): GnuPG calls its
# server mode unfinished, so no slow leak in it can grow without bound (none was seen: RSS and
# descriptors flat over 6000 messages). A start costs ~2.5 ms: nothing per 10 000 messages.
MAX_USES = 10_000


class GpgError(Exception):
    """Encryption did not happen; the text says why (for the deferral reason and the log)."""


class GpgGone(GpgError):
    """The worker's connection ended (gpg exited or was killed)."""


def gpg_argv(gpg: str, home: str) -> list[str]:
    """gpg's options for encrypting to the keys of `home`: the one-shot command and the server."""
    from appliance.features.openpgp.keyring import GPG_BASE

    return [gpg, "--homedir", home, *GPG_BASE, "--no-auto-check-trustdb", "--no-auto-key-locate",
            "--no-auto-key-retrieve", "--disable-dirmngr", "--compress-algo", "none", "--armor"]


def resolve(gpg: str) -> str:
    """`gpg` as the path that will run (a bare name is looked up in ENV_PATH, like exec does)."""
    if "/" in gpg:
        return gpg
    for d in ENV_PATH.split(":"):
        p = os.path.join(d, gpg)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return gpg


def _stat(path: str) -> tuple[int, ...]:
    try:
        st = os.stat(path)
    except OSError as e:
        return (-(e.errno or 1),)
    return (st.st_dev, st.st_ino, st.st_mode, st.st_uid, st.st_gid, st.st_size,
            st.st_mtime_ns, st.st_ctime_ns)


def generation(gpg: str, home: str) -> tuple[Any, ...]:
    """What the workers were started with; when it changes they are replaced."""
    exe = resolve(gpg)
    return (exe, home, _stat(exe), _stat(home), _stat(os.path.join(home, "pubring.kbx")),
            _stat(os.path.join(home, "pubring.gpg")))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_all(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    parts, pos = [], 0
    while pos < size:
        chunk = os.pread(fd, size - pos, pos)
        if not chunk:
            break
        parts.append(chunk)
        pos += len(chunk)
    return b"".join(parts)


class Worker:
    """One `gpg --server` process and our end of its socket."""

    def __init__(self, gpg: str, home: str, gen: tuple[Any, ...]) -> None:
        self.gen = gen
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            env = {"PATH": ENV_PATH, "LC_ALL": "C", "_assuan_connection_fd": str(theirs.fileno())}
            self.proc = system.start_coprocess([*gpg_argv(gpg, home), "--server"], env=env,
                                               pass_fds=[theirs.fileno()])
        except FileNotFoundError:
            ours.close()
            raise GpgError(f"{gpg}: command not found") from None
        except OSError as e:
            ours.close()
            raise GpgError(f"{gpg}: {e.strerror or e}") from None
        finally:
            theirs.close()
        ours.setblocking(False)
        self.sock = ours
        self.buf = b""
        self.greeted = False
        self.uses = 0

    def close(self) -> None:
        self.sock.close()
        system.stop_coprocess(self.proc)

    def _gone(self) -> str:
        code = self.proc.poll()
        return "gpg stopped" + (f" (exit {code})" if code is not None else "")

    async def _reply(self) -> str:
        """The next OK line; ERR and anything unexpected raise (the worker is then dropped)."""
        loop = asyncio.get_running_loop()
        for _ in range(100):
            while b"\n" not in self.buf:
                try:
                    chunk = await loop.sock_recv(self.sock, 4096)
                except OSError as e:
                    raise GpgGone(f"{self._gone()}: {e.strerror or e}") from None
                if not chunk:
                    raise GpgGone(self._gone())
                self.buf += chunk
                if len(self.buf) > _MAX_REPLY:
                    raise GpgError("an overlong reply from gpg")
            raw, _, self.buf = self.buf.partition(b"\n")
            line = raw.decode(errors="replace")
            if line == "OK" or line.startswith("OK "):
                return line
            if line == "ERR" or line.startswith("ERR "):
                # "ERR 33554441 No public key <GPG>": the text is what the admin needs.
                parts = line.split(" ", 2)
                raise GpgError(parts[2] if len(parts) > 2 else line)
            if line.startswith(("#", "S ")):  # comments and status lines: nothing to act on
                continue
            raise GpgError(f"unexpected reply from gpg: {line[:100]!r}")
        raise GpgError("too many status lines from gpg")

    async def _command(self, line: bytes, fd: int | None = None) -> None:
        if fd is not None:
            # libassuan takes a passed descriptor from the data it comes with (a comment line);
            # the request/reply protocol leaves the socket buffer empty, so this never blocks.
            try:
                socket.send_fds(self.sock, [b"# descriptor in flight\n"], [fd])
            except OSError as e:
                raise GpgGone(f"passing a descriptor to gpg failed: {e}") from None
        try:
            await asyncio.get_running_loop().sock_sendall(self.sock, line + b"\n")
        except OSError as e:
            raise GpgGone(f"{self._gone()}: {e.strerror or e}") from None
        await self._reply()

    async def encrypt(self, fingerprint: str, data: bytes) -> bytes:
        if not _FPR.match(fingerprint):
            raise GpgError(f"not a key fingerprint: {fingerprint[:80]!r}")
        if not self.greeted:
            await self._reply()  # "OK GNU Privacy Guard's OpenPGP server 2.2.40 ready"
            self.greeted = True
        self.uses += 1
        src = os.memfd_create("appliance-pgp-in", os.MFD_CLOEXEC)
        try:
            dst = os.memfd_create("appliance-pgp-out", os.MFD_CLOEXEC)
            try:
                _write_all(src, data)
                os.lseek(src, 0, os.SEEK_SET)
                await self._command(f"RECIPIENT {fingerprint}".encode())
                await self._command(b"INPUT FD", src)
                await self._command(b"OUTPUT FD", dst)
                await self._command(b"ENCRYPT")
                return _read_all(dst)
            finally:
                os.close(dst)
        finally:
            os.close(src)


class Pool:
    """At most `size` gpg workers (default: one per CPU, at most 4); callers wait for a free one."""

    def __init__(self, size: int | None = None) -> None:
        self.size = size or max(1, min(4, os.cpu_count() or 1))
        self.gen: tuple[Any, ...] | None = None
        self.idle: list[Worker] = []
        self.out: set[Worker] = set()
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def _refresh(self, gen: tuple[Any, ...]) -> None:
        if gen != self.gen:
            self.gen = gen
            self._stop_idle()

    def _stop_idle(self) -> None:
        idle, self.idle = self.idle, []
        for w in idle:
            w.close()

    def reset(self) -> None:
        """New workers from the next message on: the idle ones stop now, the busy ones when
        they finish (SIGHUP)."""
        self.gen = None
        self._stop_idle()

    async def _acquire(self, gpg: str, home: str) -> Worker:
        for _ in range(10_000):
            self._refresh(generation(gpg, home))
            assert self.gen is not None
            if self.idle:
                w = self.idle.pop()
                if w.proc.poll() is not None:  # died while idle (killed by someone): replace it
                    w.close()
                    continue
            elif len(self.out) < self.size:
                w = Worker(gpg, home, self.gen)
            else:
                fut = asyncio.get_running_loop().create_future()
                self.waiters.append(fut)
                try:
                    await fut
                except asyncio.CancelledError:
                    if fut.done() and not fut.cancelled():
                        self._wake()  # the slot we were given goes to the next one
                    raise
                finally:
                    if fut in self.waiters:
                        self.waiters.remove(fut)
                continue
            self.out.add(w)
            return w
        raise GpgError("no gpg worker became free")

    def _release(self, w: Worker, reusable: bool) -> None:
        self.out.discard(w)
        if reusable and w.gen == self.gen and w.uses < MAX_USES and w.proc.poll() is None:
            self.idle.append(w)
        else:
            w.close()
        self._wake()

    def _wake(self) -> None:
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    async def encrypt(self, gpg: str, home: str, fingerprint: str, data: bytes,
                      timeout: float) -> tuple[bytes, float, float]:
        """(armored message, ms waited for a worker, ms gpg took); raises GpgError.

        A worker that had served before and turns out gone (killed while idle) is replaced
        and the message tried once more on a fresh one; a fresh worker's failure is final."""
        t0 = time.monotonic()
        for attempt in (1, 2):
            w = await self._acquire(gpg, home)
            t1 = time.monotonic()
            ok = False
            try:
                out = await asyncio.wait_for(w.encrypt(fingerprint, data), timeout)
                ok = True
                return out, (t1 - t0) * 1000, (time.monotonic() - t1) * 1000
            except TimeoutError:
                raise GpgError(f"timed out after {timeout:g} s") from None
            except GpgGone:
                if attempt == 2 or w.uses <= 1:
                    raise
            finally:
                self._release(w, ok)
        raise AssertionError("unreachable")

    def close(self) -> None:
        for w in [*self.idle, *self.out]:
            w.close()
        self.idle, self.out = [], set()

