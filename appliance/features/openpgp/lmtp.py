"""LMTP on the wire for the proxy (RFC 2033): dot-stuffing, multi-line replies, and the
connection to Dovecot's LMTP that delivers one message to its recipients."""

from __future__ import annotations

import asyncio
import contextlib

from appliance.features.openpgp.config import Config


# --- LMTP -----------------------------------------------------------------------------------------
def dot_stuffed(data: bytes) -> tuple[bytes, bytes]:
    """(the data dot-stuffed, the end-of-data line): two pieces, so a large message is not
    copied once more only to append five bytes; no copy at all when no line starts with '.'."""
    if b"\r\n." in data:
        data = data.replace(b"\r\n.", b"\r\n..")
    if data.startswith(b"."):
        data = b"." + data
    return data, (b".\r\n" if data.endswith(b"\r\n") else b"\r\n.\r\n")


def dot_stuff(data: bytes) -> bytes:
    return b"".join(dot_stuffed(data))


async def read_reply(r: asyncio.StreamReader) -> str:
    lines = []
    for _ in range(100):
        line = (await r.readline()).decode(errors="replace").rstrip("\r\n")
        if not line:
            raise ConnectionError("Dovecot closed the LMTP connection")
        lines.append(line)
        if len(line) < 4 or line[3] != "-":
            return "\r\n".join(lines) if len(lines) == 1 else lines[-1]
    raise ConnectionError("an endless reply from Dovecot")


class Downstream:
    """One LMTP connection to Dovecot per Postfix session, reused across its messages (as
    Postfix reuses its connection to us); any doubt about its state closes it."""

    def __init__(self) -> None:
        self.conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def _open(self, c: Config) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.conn is not None:
            r, w = self.conn
            try:
                w.write(b"RSET\r\n")
                await w.drain()
                if (await asyncio.wait_for(read_reply(r), 30)).startswith("250"):
                    return self.conn
            except (OSError, TimeoutError):
                pass
            self.close()
        r, w = await asyncio.wait_for(asyncio.open_unix_connection(c.dovecot, limit=1 << 20), 30)
        self.conn = (r, w)
        if not (await read_reply(r)).startswith("220"):
            raise ConnectionError("no LMTP greeting from Dovecot")
        w.write(f"LHLO {c.hostname}\r\n".encode())
        await read_reply(r)
        return r, w

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn[1].write(b"QUIT\r\n")
                self.conn[1].close()
            self.conn = None

    async def deliver(self, c: Config, sender: str,
                      groups: list[tuple[bytes, list[str]]]) -> dict[str, str]:
        """One transaction per distinct content; the reply for each recipient."""
        try:
            return await self._deliver(c, sender, groups)
        except BaseException:
            self.close()
            raise

    async def _deliver(self, c: Config, sender: str,
                       groups: list[tuple[bytes, list[str]]]) -> dict[str, str]:
        replies: dict[str, str] = {}
        r, w = await self._open(c)
        for n, (data, rcpts) in enumerate(groups):
            if n:
                w.write(b"RSET\r\n")
                await read_reply(r)
            w.write(f"MAIL FROM:<{sender}>\r\n".encode())
            await w.drain()
            if not (rep := await read_reply(r)).startswith("250"):
                replies.update({x: rep for x in rcpts})
                continue
            accepted = []
            for x in rcpts:
                w.write(f"RCPT TO:<{x}>\r\n".encode())
                await w.drain()
                rep = await read_reply(r)
                if rep.startswith("250"):
                    accepted.append(x)
                else:
                    replies[x] = rep
            if not accepted:
                continue
            w.write(b"DATA\r\n")
            await w.drain()
            rep = await read_reply(r)
            if not rep.startswith("354"):
                replies.update({x: rep for x in accepted})
                continue
            body, end = dot_stuffed(data)
            if len(body) < 1 << 16:
                w.write(body + end)  # one send
            else:  # no copy of a large message only to append five bytes (3.11's writelines joins)
                w.write(body)
                w.write(end)
            await w.drain()
            for x in accepted:
                replies[x] = await asyncio.wait_for(read_reply(r), 300)
        return replies
