"""A lab middlebox that strips STARTTLS: it relays SMTP but removes the STARTTLS capability from
the server's EHLO answer, as an attacker on the path (or a broken firewall) would.
Bounded: exits after --lifetime seconds."""

from __future__ import annotations

import argparse
import asyncio
import re

# Postfix never lists STARTTLS last in its EHLO answer, so dropping the "250-STARTTLS" line
# leaves a well-formed reply.
STARTTLS = re.compile(rb"^250-STARTTLS\r\n", re.MULTILINE | re.IGNORECASE)


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, strip: bool) -> None:
    try:
        while data := await reader.read(65536):
            if strip:
                data = STARTTLS.sub(b"", data)
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", default="0.0.0.0")
    ap.add_argument("--port", type=int, default=10025)
    ap.add_argument("--to", required=True)
    ap.add_argument("--lifetime", type=float, default=600)
    a = ap.parse_args()

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        ur, uw = await asyncio.open_connection(a.to, 25)
        await asyncio.gather(pipe(ur, w, True), pipe(r, uw, False))

    server = await asyncio.start_server(handle, a.listen, a.port)
    async with server:
        await asyncio.sleep(a.lifetime)


if __name__ == "__main__":
    asyncio.run(main())
