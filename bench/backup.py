"""Backups of a mailbox of many small messages through the agent's restic path: the first
backup, one with nothing changed, one after a day's mail, a restore, restic's peak memory, and
the repository's size against the Maildir's. Asserts nothing.

The baseline, measured in the same run on the same disk: a plain copy of the same Maildir
(`cp -a`), and `tar` of it into one file, so the figures read as "restic costs N times a copy".
The repository is a local directory (a USB disk on the box); a remote one adds the line's time.

    python3 bench/backup.py [--messages 10000] [--size 4096]
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from appliance import registry  # noqa: E402
from appliance.core import system  # noqa: E402
from appliance.features.backup import drill, manifest, restic  # noqa: E402

WORDS = ("meeting budget minutes agreed tuesday report invoice travel please thanks regards "
         "attached schedule project review draft final numbers quarter team lunch").split()


def message(n: int, size: int, rng: random.Random) -> bytes:
    head = (f"From: sender{n % 97}@example.net\r\nTo: alice@example.org\r\n"
            f"Subject: message {n}\r\nMessage-ID: <{n}.bench@example.net>\r\n\r\n")
    body = []
    while len(head) + sum(len(w) + 1 for w in body) < size:
        body.append(rng.choice(WORDS))
    return (head + " ".join(body))[:size].encode()


def maildir(top: Path, first: int, count: int, size: int, rng: random.Random) -> None:
    cur = top / "var/vmail/example.org/alice/Maildir/cur"
    cur.mkdir(parents=True, exist_ok=True)
    for n in range(first, first + count):
        (cur / f"{1796600000 + n}.M{n}P1.bench:2,S").write_bytes(message(n, size, rng))


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def timed(what: str, fn) -> float:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    fn()
    took = time.monotonic() - start
    print(f"  {what:44} {took:7.2f} s", flush=True)
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--messages", type=int, default=10000)
    ap.add_argument("--size", type=int, default=4096)
    a = ap.parse_args()
    if shutil.which("restic") is None:
        print("bench/backup.py: restic is missing (`make apt` installs it)")
        return 1
    work = Path(tempfile.mkdtemp(prefix="bench-backup."))
    try:
        rng = random.Random(7)
        box = work / "box"
        maildir(box, 0, a.messages, a.size, rng)
        password = work / "password"
        password.write_text("bench password, long enough\n")
        s = registry.parse_settings({
            "domain": "example.org",
            "users": [{"address": "alice@example.org", "password_hash": "$6$x$" + "y" * 86}],
            "backup": {"enabled": True, "repository": str(work / "repo"),
                       "password_file": str(password)}})
        root = system.Root(box)
        mail = box / "var/vmail"
        print(f"backup bench: {a.messages} messages of {a.size} B "
              f"({du(mail) / 2**20:.1f} MiB Maildir), repository on the same disk")
        copy = timed("baseline: cp -a of the Maildir",
                     lambda: subprocess.run(["cp", "-a", str(mail), str(work / "copy")], check=True))
        tar = timed("baseline: tar of the Maildir",
                    lambda: subprocess.run(["tar", "-C", str(box), "-cf", str(work / "mail.tar"),
                                            "var/vmail"], check=True))
        results: dict[str, restic.Last] = {}

        def run(key: str) -> None:
            results[key] = restic.backup(root, s)
            if not results[key].ok:  # a figure of a failed run would mislead
                raise SystemExit(f"bench/backup.py: the backup failed: {results[key].error}")

        first = timed("first backup (restic init, backup, forget)", lambda: run("first"))
        same = timed("backup with nothing changed", lambda: run("same"))
        maildir(box, a.messages, a.messages // 100, a.size, rng)  # a day's mail: 1% more
        day = timed(f"backup after {a.messages // 100} new messages", lambda: run("day"))
        back = timed("restore of the latest snapshot",
                     lambda: restic.restore(s, str(work / "restored")))
        listed = timed("the manifest again (every hash cached)", lambda: manifest.current(root))
        drilled: list[drill.Drill] = []
        drill_took = timed("restore drill (restore, hash, compare)",
                           lambda: drilled.append(drill.run(root, s)))
        if not drilled[0].ok:
            raise SystemExit(f"bench/backup.py: the drill failed: {drilled[0].error}")
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        repo, size = du(work / "repo"), du(mail)
        print(f"  first backup: {first / copy:.1f}x cp -a, {first / tar:.1f}x tar; "
              f"nothing changed: {same / first:.2f}x the first; a day's mail: {day / first:.2f}x")
        print(f"  restore: {back / copy:.1f}x cp -a; the drill: {drill_took / back:.1f}x the restore; "
              f"the nightly manifest of cached hashes: {listed:.2f} s")
        print(f"  repository {repo / 2**20:.1f} MiB for a {size / 2**20:.1f} MiB Maildir "
              f"({repo / size:.2f}x); data added by the day's backup: "
              f"{results['day'].bytes_added / 2**10:.0f} KiB")
        print(f"  peak RSS of restic (the largest child process): {peak:.0f} MiB (target: 150 MiB)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.umask(0o022)
    sys.exit(main())
