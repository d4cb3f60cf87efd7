"""The boot test's own DNS server, and the list of outside parties it checks names against.

qemu's user-mode network hands the guest 10.0.2.3 as its DNS server (DHCP) and forwards
what the guest sends there to the first nameserver in qemu's /etc/resolv.conf. The boot
test runs qemu in a network and mount namespace of its own where that file names this
server on 127.0.0.1: the guest resolves through it or not at all (a wrong resolv.conf in
the image fails), and every name it asks is recorded. It answers one name of its own
(PROBE) and NXDOMAIN for everything else: nothing leaves the machine.
"""

from __future__ import annotations

import fnmatch
import re
import socket
import threading
import time
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

PROBE = "probe.boot-test.example"
PROBE_ADDR = "192.0.2.53"


class RecordingDns:
    def __init__(self, host: str = "127.0.0.1", port: int = 53) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.sock.settimeout(0.5)
        self.names: list[tuple[str, str]] = []  # (name, type), in order
        self.times: list[float] = []  # time.monotonic() of each, same order
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def start(self) -> RecordingDns:
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(timeout=5)
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                q = dns.message.from_wire(data)
            except Exception:  # noqa: BLE001 - a malformed query is not answered
                continue
            r = dns.message.make_response(q)
            r.flags |= dns.flags.RA
            for question in q.question:
                name = question.name.to_text().rstrip(".").lower()
                self.names.append((name, dns.rdatatype.to_text(question.rdtype)))
                self.times.append(time.monotonic())
                if name == PROBE and question.rdtype == dns.rdatatype.A:
                    r.answer.append(dns.rrset.from_text(question.name, 60, "IN", "A", PROBE_ADDR))
            if not r.answer:
                r.set_rcode(dns.rcode.NXDOMAIN)
            try:
                self.sock.sendto(r.to_wire(), peer)
            except OSError:
                continue


def documented_patterns(doc: Path, domain: str, hostname: str) -> list[str]:
    """The first column of docs/outside-parties.md's table, as fnmatch patterns."""
    patterns: list[str] = []
    for line in doc.read_text().splitlines():
        if not line.startswith("| `"):
            continue
        first = line.split("|")[1]
        for p in re.findall(r"`([^`]+)`", first):
            patterns.append(p.replace("{domain}", domain).replace("{hostname}", hostname).lower())
    return patterns


def undocumented(names: list[str], patterns: list[str], also: tuple[str, ...] = ()) -> list[str]:
    """Names that match no documented pattern. `also`: names the table cannot know in advance
    (the test's own probe, the domains of the mail it delivered: "names from the mail itself")."""
    allowed = list(patterns) + [a.lower() for a in also] + [f"*.{a.lower()}" for a in also]
    return sorted({n for n in names if not any(fnmatch.fnmatchcase(n, p) for p in allowed)})
