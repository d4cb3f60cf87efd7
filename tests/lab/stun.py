"""A small STUN binding responder (RFC 5389, with RFC 3489's CHANGE-REQUEST) for the lab internet.

Why the lab needs it: miniupnpd refuses to forward ports when its WAN address lies in a reserved
range (the lab's 203.0.113.0/24 is TEST-NET-3), unless a STUN check shows that nothing filters
in front of it. The check sends binding requests asking for answers from another address and/or
port; this responder answers from the address/port requested, so the check is real.
Bounded: exits after `--lifetime` seconds or `--max-requests` requests.
"""

from __future__ import annotations

import argparse
import select
import socket
import struct
import time

MAGIC = 0x2112A442
BINDING_REQUEST, BINDING_RESPONSE = 0x0001, 0x0101
MAPPED, SOURCE, CHANGED, XOR_MAPPED, CHANGE_REQUEST = 0x0001, 0x0004, 0x0005, 0x0020, 0x0003


def address_attr(kind: int, ip: str, port: int, xor: bool = False) -> bytes:
    packed = struct.unpack("!I", socket.inet_aton(ip))[0]
    if xor:
        port, packed = port ^ (MAGIC >> 16), packed ^ MAGIC
    return struct.pack("!HHBBHI", kind, 8, 0, 0x01, port, packed)


def change_flags(body: bytes) -> tuple[bool, bool]:
    """(change IP, change port) from a CHANGE-REQUEST attribute, if any."""
    pos = 0
    while pos + 4 <= len(body):
        kind, length = struct.unpack("!HH", body[pos:pos + 4])
        if kind == CHANGE_REQUEST and length == 4:
            (flags,) = struct.unpack("!I", body[pos + 4:pos + 8])
            return bool(flags & 0x4), bool(flags & 0x2)
        pos += 4 + ((length + 3) & ~3)
    return False, False


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ip", required=True)
    ap.add_argument("--alt-ip", required=True)
    ap.add_argument("--port", type=int, default=3478)
    ap.add_argument("--alt-port", type=int, default=3479)
    ap.add_argument("--lifetime", type=float, default=1800)
    ap.add_argument("--max-requests", type=int, default=100000)
    a = ap.parse_args()
    socks: dict[tuple[str, int], socket.socket] = {}
    for ip in (a.ip, a.alt_ip):
        for port in (a.port, a.alt_port):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((ip, port))
            socks[(ip, port)] = s
    other_ip = {a.ip: a.alt_ip, a.alt_ip: a.ip}
    other_port = {a.port: a.alt_port, a.alt_port: a.port}
    deadline, served = time.monotonic() + a.lifetime, 0
    while served < a.max_requests and time.monotonic() < deadline:
        ready, _, _ = select.select(list(socks.values()), [], [], 1.0)
        for s in ready:
            data, (client_ip, client_port) = s.recvfrom(2048)
            if len(data) < 20:
                continue
            kind, length, cookie = struct.unpack("!HHI", data[:8])
            if kind != BINDING_REQUEST:
                continue
            served += 1
            change_ip, change_port = change_flags(data[20:20 + length])
            here_ip, here_port = s.getsockname()
            from_ip = other_ip[here_ip] if change_ip else here_ip
            from_port = other_port[here_port] if change_port else here_port
            attrs = address_attr(MAPPED, client_ip, client_port)
            if cookie == MAGIC:
                attrs += address_attr(XOR_MAPPED, client_ip, client_port, xor=True)
            attrs += address_attr(SOURCE, from_ip, from_port)
            attrs += address_attr(CHANGED, other_ip[here_ip], other_port[here_port])
            reply = struct.pack("!HHI", BINDING_RESPONSE, len(attrs), cookie) + data[8:20] + attrs
            socks[(from_ip, from_port)].sendto(reply, (client_ip, client_port))


if __name__ == "__main__":
    main()
