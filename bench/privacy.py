"""What-leaves-the-box figures (issue #10). Asserts nothing; no root needed.

  1. typo guard: time to decide one recipient domain against a history of N known domains,
     plain names and salted hashes, against the baseline of one exact set lookup in the same
     run (what a guard with no near-miss detection would cost);
  2. abuse reports: time to build one redacted ARF report for a 4 KiB and a 256 KiB message,
     against the baseline of parsing and re-serialising the same message with Python's email
     package (what any report costs without redaction).
"""

from __future__ import annotations

import base64
import random
import string
import sys
import time
from email import message_from_bytes
from email.policy import compat32
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from appliance.features.privacy import typoguard as tg  # noqa: E402
from appliance.features.spam import arf  # noqa: E402

N_DOMAINS = 2000
N_CHECKS = 300


def _domains(n: int) -> list[str]:
    rnd = random.Random(10)
    tlds = ["com", "org", "net", "de", "mil", "gov", "io"]
    return [("".join(rnd.choices(string.ascii_lowercase, k=rnd.randint(4, 14))) + "." + rnd.choice(tlds))
            for _ in range(n)]


def per_call(fn, items) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    for x in items:
        fn(x)
    return (time.perf_counter() - t0) / len(items)


def typo_guard() -> None:
    known = _domains(N_DOMAINS)
    probes = _domains(N_CHECKS // 2) + [k[:-1] for k in known[: N_CHECKS // 2]]  # new + slips
    exact = set(known)
    base = per_call(lambda d: d in exact, probes)
    print(f"typo guard: history of {N_DOMAINS} domains, {len(probes)} recipient domains")
    print(f"  baseline (exact set lookup): {base * 1e6:9.2f} us/domain")
    for mode, salt in (("plain", None), ("hashed", b"s" * 32)):
        h = tg.History(salt=salt)
        for d in known:
            h.add(d)
        t = per_call(lambda d, h=h: tg.check(d, h), probes)
        held = sum(tg.check(d, h).hold for d in probes)
        print(f"  {mode:6} check:               {t * 1e6:9.2f} us/domain  ({t / base:8.0f}x baseline; "
              f"{held} held of {len(probes)})")


def _message(size: int) -> bytes:
    body = ("Dear alice@example.test, contact bob@example.test now. " * (size // 56 + 1))[:size]
    head = ("Return-Path: <spammer@spam.example>\r\nReceived: from spam.example (spam.example "
            "[203.0.113.99])\r\n\tby mail.example.test (Postfix) with ESMTP id 4Abc\r\n\tfor "
            "<alice@example.test>; Mon, 23 Nov 2026 10:00:00 +0000 (UTC)\r\nFrom: s@spam.example\r\n"
            "To: alice@example.test\r\nSubject: offer\r\nContent-Type: text/plain\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n")
    return head.encode() + base64.encodebytes(body.encode())


def reports() -> None:
    print("abuse reports (redacted ARF):")
    for size in (4096, 262144):
        raw = _message(size)
        runs = 20 if size < 100000 else 5
        base = per_call(lambda r: message_from_bytes(r, policy=compat32).as_bytes(), [raw] * runs)
        t = per_call(lambda r: arf.build_report(r, ("example.test",), b"k" * 32), [raw] * runs)
        print(f"  {size // 1024:4} KiB: baseline parse+serialise {base * 1e3:8.2f} ms; "
              f"report {t * 1e3:8.2f} ms ({t / base:5.1f}x)")


if __name__ == "__main__":
    typo_guard()
    reports()
