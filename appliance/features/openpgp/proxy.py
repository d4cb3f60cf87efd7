"""The LMTP proxy between Postfix and Dovecot that encrypts mail at rest, per recipient.

    Postfix --LMTP--> private/appliance-pgp (this) --LMTP--> private/dovecot-lmtp (Dovecot)

Why here: Postfix has already expanded aliases, so each RCPT is a user's own address, and LMTP
answers DATA once per recipient, so one recipient's failure defers only that recipient (451:
Postfix keeps it queued and retries). Nothing is re-injected into Postfix (no loop), and
Dovecot only ever sees the ciphertext of mail for a user with a key.

Never fail open: any exception while handling a recipient whose mail must be encrypted gives
that recipient a 451; plaintext reaches Dovecot only for users whose setting allows it and who
have no key, and for mail that is already encrypted.

Configuration (re-read when its file changes, no restart): config.py; the key index in the GnuPG
home (keyring.INDEX). The LMTP wire format: lmtp.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any

from appliance.core import daemon, system
from appliance.features.openpgp import gpgserver, keyring, pgpmime
from appliance.features.openpgp.config import CONF, LOG, MODES, NAME, Config, ConfigError, parse_config
from appliance.features.openpgp.lmtp import Downstream, dot_stuff, dot_stuffed, read_reply

# Named here too: the tests and the service speak of the proxy's config and wire format.
__all__ = ["CONF", "MODES", "Config", "ConfigError", "parse_config", "Downstream", "dot_stuff",
           "dot_stuffed", "read_reply"]




class Reloading:
    """A file parsed again only when its mtime/size changes (one stat per message)."""

    def __init__(self, path: str, parse: Any) -> None:
        self.path, self.parse = path, parse
        self.stamp: tuple[int, int] | None = None
        self.value = None

    def get(self) -> Any:
        st = os.stat(self.path)
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self.stamp:
            self.value = self.parse(Path(self.path))
            self.stamp = stamp
        return self.value


class Deferred(Exception):
    """-> a 451 for the recipient, with this text."""


def log(msg: str) -> None:
    daemon.log(NAME, msg)


# --- the policy: what happens to one message for one recipient ------------------------------------
class Engine:
    def __init__(self, conf_path: str) -> None:
        self.conf = Reloading(conf_path, lambda p: parse_config(p.read_text()))
        self.index: Reloading | None = None
        self.gpg = gpgserver.Pool()  # long-running gpg processes (no gpg start per message)

    def close(self) -> None:
        self.gpg.close()

    def config(self) -> Config:
        c: Config = self.conf.get()
        if self.index is None or self.index.path != str(Path(c.home) / keyring.INDEX):
            self.index = Reloading(str(Path(c.home) / keyring.INDEX),
                                   lambda p: keyring.read_index(p.parent))
        return c

    def has_key(self, rcpt: str) -> bool:
        c = self.config()
        assert self.index is not None
        try:
            return c.owner(rcpt) in self.index.get()
        except Exception:  # noqa: BLE001 - content_for reports it (and defers)
            return True

    async def content_for(self, rcpt: str, raw: bytes, prepared: object, cache: dict) -> bytes:
        """The bytes to store for `rcpt`; raises Deferred. `prepared` is pgpmime.prepare's
        result or the Malformed it raised, computed once per message."""
        c = self.config()
        assert self.index is not None
        try:
            entries = self.index.get()
        except FileNotFoundError:
            entries = {}
        except (OSError, keyring.KeyError_) as e:
            raise Deferred(f"the key index cannot be read ({e})") from None
        entry = entries.get(c.owner(rcpt))
        mode = c.users.get(c.owner(rcpt), "when-key")
        if entry is None:
            if mode == "required":
                if prepared is _LAZY:
                    prepared = _prepare(raw)
                if prepared is None:
                    return raw  # already encrypted by the sender: fine to store
                raise Deferred(f"no OpenPGP key for {rcpt}, whose setting requires encryption; "
                               f"import one with `appliance key import {rcpt} FILE`")
            return raw  # the user's explicit setting: plaintext storage without a key
        if prepared is _LAZY:
            prepared = _prepare(raw)
        if prepared is None:
            return raw  # already encrypted by the sender (PGP/MIME, inline PGP, S/MIME)
        if isinstance(prepared, pgpmime.Malformed):
            # Not a temporary failure: a deferral would repeat until the queue lifetime ends.
            log(f"malformed MIME for {rcpt} ({prepared}): encrypted unchanged as one part")
            prepared = pgpmime.opaque(raw)
        assert isinstance(prepared, pgpmime.Prepared)
        if entry.expires is not None and entry.expires <= time.time():
            # Checked here, not left to gpg: gpg may go on using a merged key past its expiry.
            raise Deferred(f"the key {entry.fingerprint} of {rcpt} expired at "
                           f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(entry.expires))} UTC; "
                           f"import the extended key with `appliance key import {rcpt} FILE`")
        if entry.fingerprint in cache:
            return cache[entry.fingerprint]
        try:
            armored, waited, took = await self.gpg.encrypt(c.gpg, c.home, entry.fingerprint,
                                                           prepared.inner, c.timeout)
        except gpgserver.GpgError as e:
            raise Deferred(f"encryption to {entry.fingerprint} failed: {str(e)[:200]}") from None
        if not armored.startswith(b"-----BEGIN PGP MESSAGE-----"):
            raise Deferred(f"encryption to {entry.fingerprint} failed: gpg gave no armored message")
        out = pgpmime.assemble(prepared, armored)
        log(f"encrypted {len(raw)} bytes for {rcpt} to {entry.fingerprint} in {took:.1f} ms"
            + (f" (after {waited:.0f} ms waiting for a free gpg)" if waited >= 1 else ""))
        cache[entry.fingerprint] = out
        return out


class Session:
    def __init__(self, engine: Engine, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.engine, self.r, self.w = engine, r, w
        self.sender: str | None = None
        self.rcpts: list[str] = []
        self.downstream = Downstream()

    def say(self, line: str) -> None:
        self.w.write(line.encode() + b"\r\n")

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            self.downstream.close()

    async def _run(self) -> None:
        self.say(f"220 {self.engine.config().hostname} LMTP appliance-pgp ready")
        while True:
            await self.w.drain()
            line = await self.r.readline()
            if not line:
                return
            cmd, _, arg = line.decode(errors="replace").rstrip("\r\n").partition(" ")
            verb = cmd.upper()
            if verb == "LHLO":
                self.say(f"250-{self.engine.config().hostname}")
                for ext in ("PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES"):
                    self.say(f"250-{ext}")
                self.say("250 SIZE")
            elif verb == "MAIL" and arg.upper().startswith("FROM:"):
                self.sender, self.rcpts = _path(arg[5:]), []
                self.say("250 2.1.0 Ok")
            elif verb == "RCPT" and arg.upper().startswith("TO:") and self.sender is not None:
                self.rcpts.append(_path(arg[3:]))
                self.say("250 2.1.5 Ok")
            elif verb == "DATA" and self.rcpts:
                self.say("354 End data with <CR><LF>.<CR><LF>")
                await self.w.drain()
                data = await self.read_data()
                for reply in await self.handle(data):
                    self.say(reply)
                self.sender, self.rcpts = None, []
            elif verb == "RSET":
                self.sender, self.rcpts = None, []
                self.say("250 2.0.0 Ok")
            elif verb == "NOOP":
                self.say("250 2.0.0 Ok")
            elif verb == "QUIT":
                self.say("221 2.0.0 Bye")
                await self.w.drain()
                return
            elif verb in ("MAIL", "RCPT", "DATA"):
                self.say("503 5.5.1 Bad sequence of commands")
            else:
                self.say("502 5.5.2 Command not recognized")

    async def read_data(self) -> bytes:
        """Up to the end-of-data line, in bulk (a line-by-line loop halves the rate of 1 MiB
        mail), dot-unstuffed. Postfix never sends an empty message (it adds Received:)."""
        try:
            data = await self.r.readuntil(b"\r\n.\r\n")
        except asyncio.IncompleteReadError:
            raise ConnectionError("client went away during DATA") from None
        data = data[:-3]
        if b"\r\n.." in data:  # a scan; a copy only when some line was dot-stuffed
            data = data.replace(b"\r\n..", b"\r\n.")
        return data[1:] if data.startswith(b"..") else data

    async def handle(self, data: bytes) -> list[str]:
        """One reply per recipient, in RCPT order. Any failure is a 451 for that recipient."""
        prepared: object = _LAZY
        replies: dict[str, str] = {}
        contents: dict[str, bytes] = {}
        cache: dict[str, bytes] = {}
        for rcpt in dict.fromkeys(self.rcpts):
            try:
                if prepared is _LAZY and self.engine.has_key(rcpt.lower()):
                    prepared = _prepare(data)  # once per message, only when a key needs it
                contents[rcpt] = await self.engine.content_for(rcpt.lower(), data, prepared, cache)
            except Deferred as e:
                replies[rcpt] = f"451 4.7.0 <{rcpt}> {e}"
            except Exception as e:  # noqa: BLE001 - a bug must defer, not bounce or leak plaintext
                replies[rcpt] = f"451 4.3.0 <{rcpt}> encryption step failed: {type(e).__name__}: {e}"
            if rcpt in replies:
                log(f"deferred {rcpt}: {replies[rcpt][10:]}")
        groups: dict[int, tuple[bytes, list[str]]] = {}
        for rcpt, content in contents.items():
            groups.setdefault(id(content), (content, []))[1].append(rcpt)
        if groups:
            try:
                c = self.engine.config()
                replies.update(await self.downstream.deliver(c, self.sender or "",
                                                             list(groups.values())))
            except Exception as e:  # noqa: BLE001
                # Once per failed delivery, the reason only (never message contents).
                log(f"Dovecot LMTP failed for {len(contents)} recipient(s): "
                    f"{type(e).__name__}: {e or 'no reason given'}")
                for rcpt in contents:
                    replies.setdefault(rcpt, f"451 4.4.0 <{rcpt}> Dovecot LMTP failed: {e}")
        return [replies.get(x, f"451 4.3.0 <{x}> no reply from Dovecot") for x in self.rcpts]


_LAZY = object()


def _prepare(data: bytes) -> object:
    try:
        return pgpmime.prepare(data)
    except pgpmime.Malformed as e:
        return e
    except Exception as e:  # noqa: BLE001 - never fail open, never bounce
        return pgpmime.Malformed(f"parser error: {type(e).__name__}: {e}")


def _path(arg: str) -> str:
    a = arg.strip()
    if a.startswith("<"):
        a = a[1:a.find(">")] if ">" in a else a[1:]
    return a.split()[0] if a.split() else ""


async def serve(conf_path: str, ready: asyncio.Event | None = None) -> None:
    engine = Engine(conf_path)
    c = engine.config()
    loop = asyncio.get_running_loop()

    async def client(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            await Session(engine, r, w).run()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception as e:  # noqa: BLE001 - the session's mail stays queued in Postfix
            log(f"session error: {type(e).__name__}: {e}")
        finally:
            with contextlib.suppress(Exception):
                w.close()

    async def listen() -> list[asyncio.AbstractServer]:
        system.remove_path(c.listen)
        # The limit caps one DATA buffer (Postfix enforces message_size_limit before us).
        server = await asyncio.start_unix_server(client, c.listen, limit=1 << 31)
        if c.flush:
            # Listening now: mail Postfix deferred while the proxy was down goes out at once,
            # not after its backoff (a 2 s outage otherwise stalled delivery for many minutes).
            res = await loop.run_in_executor(None, lambda: system.run([c.flush, "-f"], check=False,
                                                                        timeout=60))
            log(f"queue flushed ({c.flush} -f)" if res.returncode == 0 else
                f"queue flush failed: {c.flush} -f exit {res.returncode}: {res.stderr.strip()[:200]}")
        return [server]

    def hup() -> str:
        engine.gpg.reset()  # fresh gpg processes (they are also replaced when gpg or keys change)
        return "configuration is re-read whenever its file changes"

    await daemon.serve(NAME, listen, reload=hup, ready=ready, on_stop=engine.close,
                       started=f"listening on {c.listen}, delivering to {c.dovecot}, keys in {c.home}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=NAME, description=(__doc__ or "").splitlines()[0])
    p.add_argument("--config", default=CONF)
    p.add_argument("--user", default="postfix", help="run as this user (when started as root)")
    daemon.add_arguments(p, LOG)
    a = p.parse_args(argv)
    try:
        parse_config(Path(a.config).read_text())
    except (OSError, ConfigError) as e:
        print(f"{NAME}: {a.config}: {e}", file=sys.stderr)
        return 2
    return daemon.run(lambda: serve(a.config), daemon=a.daemon, log_path=a.log, user=a.user)


if __name__ == "__main__":
    sys.exit(main())
