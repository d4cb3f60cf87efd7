#!/usr/bin/python3
"""Power cuts while mail arrives (make image-powercut; POWERCUTS=N cuts, 5 in CI, 50 for the
long run).

The card the boot test left behind (build/test-$ARCH/card.img, its first boot done) is started
under qemu again and again. Once the box accepts mail, four correspondents' servers deliver to
alice on port 25 without pause, and at a random moment qemu is killed with SIGKILL: the power
cut (the guest gets no warning, and nothing qemu buffered reaches the card). After the last cut
the box is started once more and must:
  - come up every time (each boot is waited for until it accepts mail again);
  - have a root filesystem that is clean, or was repaired by itself (the ext4 journal), with no
    filesystem error logged in any boot;
  - hold every message whose SMTP transaction ended with 250, in alice's mailbox or in
    Postfix's queue.
It prints the counts. Networking, DNS and namespaces are the boot test's (boot_test.py): the
guest reaches only the test's own DNS server, through forwards on 127.0.0.1. qemu is killed by
its PID; the random moments come from --seed (printed), so a failing run can be repeated.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import boot_test  # noqa: E402
import recording_dns  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SENDERS = 4  # concurrent deliveries: a cut finds several transactions open
BOOT_WAIT_S = 480  # one boot under emulation, until Postfix accepts mail again
CUT_WINDOW_S = (1.0, 20.0)  # how long after the box is ready the power goes
MESSAGE_ID = "Message-ID: <pc-[0-9]+-[0-9]+-[0-9]+@"  # grep -E, in the guest
TAG = re.compile(r"Message-ID: <(pc-\d+-\d+-\d+)@")


class Deliveries:
    """SENDERS threads delivering to alice until told to stop; each tag is recorded once its
    transaction ended with 250."""

    def __init__(self, port: int, cycle: int) -> None:
        self.port, self.cycle = port, cycle
        self.accepted: list[str] = []
        self.tried = 0
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._send, args=(n,), daemon=True)
                        for n in range(SENDERS)]
        for t in self.threads:
            t.start()

    def _send(self, sender: int) -> None:
        for n in range(100_000):
            if self.stop.is_set():
                return
            tag = f"pc-{self.cycle}-{sender}-{n}"
            lines = boot_test.deliver(self.port, tag, timeout=15)
            with self.lock:
                self.tried += 1
                if boot_test.queued(lines):
                    self.accepted.append(tag)
            if not lines or not lines[0].startswith(b"220"):
                self.stop.wait(0.5)  # the box is gone, or not listening yet

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)


def wait_ready(port: int, cycle: int, deadline: float) -> str | None:
    """Deliver one message every 2 s until one is accepted: the box is up. Its tag, or None."""
    for n in range(10_000):
        if time.monotonic() > deadline:
            return None
        tag = f"pc-{cycle}-9-{n}"
        started = time.monotonic()
        if boot_test.queued(boot_test.deliver(port, tag, timeout=10)):
            return tag
        time.sleep(max(0.0, 2.0 - (time.monotonic() - started)))
    return None


def start(arch: str, disk: Path, fwd: str, log: Path) -> tuple[subprocess.Popen, boot_test.Serial]:
    cmd = boot_test.qemu_machine(arch, disk, fwd, restrict=False)
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    return proc, boot_test.Serial(proc, log, time.monotonic())


def stop(proc: subprocess.Popen, serial: boot_test.Serial) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=30)
    serial.thread.join(timeout=10)


def main() -> int:
    again = boot_test.in_private_namespaces(REPO / "build" / "test-ns", Path(__file__))
    if again is not None:
        return again
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default=os.environ.get("ARCH", "amd64"), choices=sorted(boot_test.QEMU))
    ap.add_argument("--cuts", type=int, default=int(os.environ.get("POWERCUTS", "5")))
    ap.add_argument("--seed", type=int, default=int(os.environ.get("POWERCUT_SEED", "0")) or None)
    ap.add_argument("--timeout", type=float, default=3600, help="seconds for the whole test")
    args = ap.parse_args()
    deadline = time.monotonic() + args.timeout
    seed = args.seed or int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    tested = REPO / "build" / f"test-{args.arch}"
    if not (tested / "card.img").exists() or not (tested / "id_test").exists():
        print(f"powercut-test: no card in {tested}: run make image-test ARCH={args.arch} first")
        return 1
    work = REPO / "build" / f"powercut-{args.arch}"
    subprocess.run(["rm", "-rf", str(work)], check=True)
    work.mkdir(parents=True)
    disk, key = work / "card.img", tested / "id_test"
    subprocess.run(["cp", "--sparse=always", str(tested / "card.img"), str(disk)], check=True)
    print(f"powercut-test: {args.cuts} cuts, seed {seed} (POWERCUT_SEED={seed} repeats them); "
          f"card copied from {tested}", flush=True)
    ports = {guest: boot_test.free_port() for guest in (22, 25)}
    fwd = ",".join(f"hostfwd=tcp:127.0.0.1:{h}-:{g}" for g, h in ports.items())
    dns_server = recording_dns.RecordingDns().start()
    res = boot_test.Results()
    accepted: list[str] = []
    found: tuple[dict[str, int], dict[str, int]] = ({}, {})
    try:
        for cycle in range(1, args.cuts + 1):
            proc, serial = start(args.arch, disk, fwd, work / f"serial-{cycle}.log")
            try:
                t0 = time.monotonic()
                first = wait_ready(ports[25], cycle, min(deadline, t0 + BOOT_WAIT_S))
                if not res.check(f"boot {cycle} came up and accepts mail", first is not None,
                                 f"log {work / f'serial-{cycle}.log'}"):
                    return report(res, accepted, {}, {})
                accepted.append(first)  # type: ignore[arg-type]
                ready_s = time.monotonic() - t0
                cut_after = rng.uniform(*CUT_WINDOW_S)
                mail = Deliveries(ports[25], cycle)
                time.sleep(cut_after)
                proc.kill()  # SIGKILL: the power cut
                proc.wait(timeout=30)
                mail.finish()
                accepted += mail.accepted
                print(f"cut {cycle}: ready {ready_s:.0f} s after power-on; power cut "
                      f"{cut_after:.1f} s into the deliveries: {len(mail.accepted)} of "
                      f"{mail.tried} transactions ended with 250", flush=True)
            finally:
                stop(proc, serial)
        proc, serial = start(args.arch, disk, fwd, work / "serial-last.log")
        try:
            t0 = time.monotonic()
            first = wait_ready(ports[25], args.cuts + 1, min(deadline, t0 + BOOT_WAIT_S))
            res.check("the boot after the last cut came up and accepts mail", first is not None)
            if first:
                accepted.append(first)
            found = inspect(res, key, ports, work, args.cuts)
            boot_test.run(boot_test.ssh_cmd(key, ports[22]) + ["systemctl poweroff"], timeout=30)
            try:
                proc.wait(timeout=180)
            except subprocess.TimeoutExpired:
                pass
        finally:
            stop(proc, serial)
    finally:
        dns_server.stop()
    return report(res, accepted, *found)


def inspect(res: boot_test.Results, key: Path, ports: dict[int, int], work: Path,
            cuts: int) -> tuple[dict[str, int], dict[str, int]]:
    """The system state and the filesystem after the last boot; the tags in alice's mailbox
    and in Postfix's queue, with how many copies of each."""
    r = boot_test.run(boot_test.ssh_cmd(key, ports[22]) + [
        "systemctl is-system-running --wait; systemctl --failed --no-legend --plain; echo ---; "
        "tune2fs -l $(findmnt -no SOURCE /) | grep '^Filesystem state'; echo ---; "
        # Delivered messages only: Maildir's new/ and cur/ (tmp/ holds deliveries not finished;
        # Dovecot's index files quote headers too). One Message-ID per stored copy.
        "find /var/vmail -type f \\( -path '*/new/*' -o -path '*/cur/*' \\) -print0 | "
        f"xargs -0 -r grep -hoaE '{MESSAGE_ID}'; echo ---; "
        "cd /var/spool/postfix && find incoming active deferred hold maildrop -type f -print0 | "
        f"xargs -0 -r grep -hoaE '{MESSAGE_ID}'; echo ---"], timeout=300)
    parts = r.stdout.split("---\n")
    if not res.check("ssh answers after the last boot", len(parts) == 5, r.stderr[-300:]):
        return {}, {}
    state, fs, mailbox, queue, _ = parts
    res.check("no failed units after the cuts", state.splitlines()[:1] == ["running"], state.strip())
    res.check("the root filesystem is clean", fs.split(":")[-1].strip() == "clean", fs.strip())
    errors = []
    for log in sorted(work.glob("serial-*.log")):
        text = log.read_text(errors="replace")
        errors += [f"{log.name}: {ln.strip()[:160]}" for ln in text.splitlines()
                   if re.search(r"EXT4-fs error|EXT4-fs.*(corrupt|bad block)", ln)]
    recovered = sum(log.read_text(errors="replace").count("recovery complete")
                    for log in work.glob("serial-*.log"))
    res.check(f"no filesystem error in any of the {cuts + 1} boots (journal recoveries: "
              f"{recovered})", not errors, "; ".join(errors[:5]))

    def count(text: str) -> dict[str, int]:
        found: dict[str, int] = {}
        for m in TAG.finditer(text):
            found[m.group(1)] = found.get(m.group(1), 0) + 1
        return found

    return count(mailbox), count(queue)


def report(res: boot_test.Results, accepted: list[str], mailbox: dict[str, int],
           queue: dict[str, int]) -> int:
    if mailbox or queue:
        in_queue_only = [t for t in accepted if t not in mailbox and t in queue]
        missing = [t for t in accepted if t not in mailbox and t not in queue]
        twice = [t for t, n in mailbox.items() if n > 1]
        print(f"counts: {len(accepted)} messages ended with 250; {sum(t in mailbox for t in accepted)} "
              f"in alice's mailbox, {len(in_queue_only)} still in the queue, {len(missing)} "
              f"missing; {len(twice)} stored twice (delivered, then the power went before "
              "Postfix noted it, so it delivered again: at least once, never lost)", flush=True)
        res.check("every message that got a 250 is in the mailbox or the queue", not missing,
                  ", ".join(missing[:10]))
    print(f"{len(res.passed)} passed, {len(res.failed)} failed")
    return 0 if not res.failed else 1


if __name__ == "__main__":
    sys.exit(main())
