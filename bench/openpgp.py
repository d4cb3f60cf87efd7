"""OpenPGP encryption at rest (issue #7): delivered msg/s with encryption on vs off, one run.

In the lab (root), Postfix's smtp-source sends N messages from the "internet" to alice on the
appliance, three ways, for 4 KiB and 1 MiB messages:
  direct    Postfix -> Dovecot LMTP (the proxy bypassed: lab-only postconf, restored after)
  off       Postfix -> the OpenPGP proxy -> Dovecot, alice has no key (plaintext, when-key)
  on        the same, alice has a key: every message is encrypted (PGP/MIME)
and prints msg/s, the on/off ratio (target >= 0.7 at 4 KiB), the per-message encryption
time the proxy logged (median, p90), and CPU per message: the proxy's own and gpg's (its
long-running `gpg --server` workers plus any gpg it started and reaped).

The machine is often shared (2 CPUs, other builds): off and on alternate for --rounds rounds and
the ratio is given per round and as the median of the rounds.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.lab.mail_lab import ALICE, DOMAIN, WAN_IP, MailLab  # noqa: E402
from tests.lab.netlab import wait_for  # noqa: E402
from tests.unit.openpgp_keys import Device  # noqa: E402

PGP_LOG = "/var/log/appliance-pgp.log"
_ENC = re.compile(r"encrypted (\d+) bytes for \S+ to \S+ in ([\d.]+) ms"
                  r"(?: \(after (\d+) ms waiting for a free gpg\))?")


def maildir_count(lab: MailLab) -> int:
    """Delivered messages: the INBOX and Junk (rspamd may score the generated mail as spam)."""
    base = lab.app.path(f"/var/vmail/{DOMAIN}/alice/Maildir")
    return sum(len(os.listdir(base / f / d)) for f in (".", ".Junk") for d in ("new", "cur")
               if (base / f / d).is_dir())


def deliver(lab: MailLab, n: int, size: int) -> float:
    """msg/s from the first SMTP connection to the last message in alice's Maildir."""
    before = maildir_count(lab)
    t0 = time.perf_counter()
    r = lab.att.run(["timeout", "600", "smtp-source", "-s", "10", "-m", str(n), "-l", str(size),
                     "-f", "bench@remote.test", "-t", ALICE, "-M", "bench.remote.test",
                     f"{WAN_IP}:25"], check=False, timeout=620)
    if r.returncode != 0:
        raise RuntimeError(f"smtp-source failed: {r.stderr[-500:]}")
    wait_for(f"{n} messages of {size} B in the mailbox",
             lambda: maildir_count(lab) - before >= n, timeout=600, interval=0.1)
    return n / (time.perf_counter() - t0)


def _stat(pid: int | str) -> tuple[str, list[str]]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.index("(") + 1:text.rindex(")")], text.rsplit(")", 1)[1].split()


def cpu(lab: MailLab) -> tuple[float, float]:
    """CPU seconds (user + system): the proxy itself, and gpg (its live gpg children plus the
    children it has reaped: per-message gpg runs, replaced workers)."""
    pid = int(lab.app.path("/run/appliance-pgp.pid").read_text().split()[0])
    _, f = _stat(pid)
    own, reaped = int(f[11]) + int(f[12]), int(f[13]) + int(f[14])
    live = 0
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                comm, g = _stat(p)
            except OSError:
                continue
            if comm == "gpg" and int(g[1]) == pid:
                live += int(g[11]) + int(g[12])
    tck = os.sysconf("SC_CLK_TCK")
    return own / tck, (reaped + live) / tck


def transport(lab: MailLab, value: str) -> None:
    lab.app.run(["postconf", "-e", f"virtual_transport = {value}"])
    lab.app.run(["postfix", "reload"])
    time.sleep(1.5)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("-n", "--messages", type=int, default=1000, help="4 KiB messages per mode")
    ap.add_argument("--large", type=int, default=60, help="1 MiB messages per mode")
    ap.add_argument("--rounds", type=int, default=3, help="off/on rounds per size")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("bench: needs root (it builds the network-namespace lab)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="mail-appliance-bench-pgp."))
    lab = MailLab(work, REPO)
    sizes = ((4096, a.messages), (1 << 20, a.large))
    ratios: dict[int, list[float]] = {}
    dev: Device | None = None
    try:
        lab.up()
        lab.app.run(["postconf", "-e", "message_size_limit = 4194304"])
        dev = Device(work / "alice-device")
        dev.make(f"Alice <{ALICE}>")
        lab.app.write("/var/tmp/alice.asc", dev.export(ALICE))
        print(f"mail-appliance OpenPGP bench: {os.cpu_count()} CPUs; "
              f"{a.messages} x 4 KiB and {a.large} x 1 MiB per mode and round, {a.rounds} rounds")
        for size, n in sizes:
            label = "4 KiB" if size == 4096 else "1 MiB"
            transport(lab, "lmtp:unix:private/dovecot-lmtp")
            direct = deliver(lab, n, size)
            transport(lab, "lmtp:unix:private/appliance-pgp")
            print(f"{label}: direct to Dovecot (no proxy) {direct:.1f} msg/s")
            times: list[float] = []
            waits: list[float] = []
            own_ms: list[float] = []
            off_ms: list[float] = []
            gpg_ms: list[float] = []
            for rnd in range(1, a.rounds + 1):
                own0, _ = cpu(lab)
                off = deliver(lab, n, size)
                off_ms.append((cpu(lab)[0] - own0) * 1000 / n)
                r = lab.appliance("key", "import", ALICE, "/var/tmp/alice.asc")
                assert r.returncode == 0, r.stderr
                offset = lab.app.path(PGP_LOG).stat().st_size
                own0, gpg0 = cpu(lab)
                on = deliver(lab, n, size)
                own1, gpg1 = cpu(lab)
                own_ms.append((own1 - own0) * 1000 / n)
                gpg_ms.append((gpg1 - gpg0) * 1000 / n)
                log = lab.app.path(PGP_LOG).read_text()[offset:]
                found = list(_ENC.finditer(log))
                times += [float(m.group(2)) for m in found]
                waits += [float(m.group(3) or 0) for m in found]
                lab.appliance("key", "remove", ALICE)
                ratios.setdefault(size, []).append(on / off)
                print(f"{label} round {rnd}: proxy, encryption off {off:.1f} msg/s | on {on:.1f} "
                      f"msg/s = {on / off:.2f}x off, {on / direct:.2f}x direct")
            if times:
                q = statistics.quantiles(times, n=10) if len(times) > 1 else [times[0]] * 9
                print(f"{label}: encryption per message (proxy log, gpg exchange): median "
                      f"{statistics.median(times):.1f} ms, p90 {q[8]:.1f} ms, n={len(times)}; CPU per "
                      f"message: gpg {statistics.median(gpg_ms):.2f} ms, proxy "
                      f"{statistics.median(own_ms):.2f} ms (encryption off: "
                      f"{statistics.median(off_ms):.2f} ms) (medians of rounds)")
                print(f"{label}: waited for a free gpg worker: {sum(w >= 1 for w in waits)} of "
                      f"{len(waits)} messages, median wait {statistics.median(waits):.0f} ms")
            print(f"{label}: on/off median of {a.rounds} rounds: "
                  f"{statistics.median(ratios[size]):.2f}x")
        print(f"target at 4 KiB: on/off >= 0.70 -> {statistics.median(ratios[4096]):.2f}")
    finally:
        if dev is not None:
            dev.close()
        lab.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
