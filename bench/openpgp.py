"""OpenPGP encryption at rest (issue #7): delivered msg/s with encryption on vs off, one run.

In the lab (root), Postfix's smtp-source sends N messages from the "internet" to alice on the
appliance, three ways, for 4 KiB and 1 MiB messages:
  direct    Postfix -> Dovecot LMTP (the proxy bypassed: lab-only postconf, restored after)
  off       Postfix -> the OpenPGP proxy -> Dovecot, alice has no key (plaintext, when-key)
  on        the same, alice has a key: every message is encrypted (PGP/MIME)
and prints msg/s, the on/off ratio (target >= 0.7 at 4 KiB) and the per-message encryption
time the proxy logged (median, p90).
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
_ENC = re.compile(r"encrypted (\d+) bytes for \S+ to \S+ in (\d+) ms")


def maildir_count(lab: MailLab) -> int:
    base = lab.app.path(f"/var/vmail/{DOMAIN}/alice/Maildir")
    return sum(len(os.listdir(base / d)) for d in ("new", "cur") if (base / d).is_dir())


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


def proxy_cpu(lab: MailLab) -> float:
    """CPU seconds (user + system) of the proxy process itself, gpg children excluded."""
    pid = int(lab.app.path("/run/appliance-pgp.pid").read_text().split()[0])
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def transport(lab: MailLab, value: str) -> None:
    lab.app.run(["postconf", "-e", f"virtual_transport = {value}"])
    lab.app.run(["postfix", "reload"])
    time.sleep(1.5)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("-n", "--messages", type=int, default=400, help="4 KiB messages per mode")
    ap.add_argument("--large", type=int, default=40, help="1 MiB messages per mode")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("bench: needs root (it builds the network-namespace lab)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="mail-appliance-bench-pgp."))
    lab = MailLab(work, REPO)
    sizes = ((4096, a.messages), (1 << 20, a.large))
    rate: dict[tuple[str, int], float] = {}
    dev: Device | None = None
    try:
        lab.up()
        lab.app.run(["postconf", "-e", "message_size_limit = 4194304"])
        dev = Device(work / "alice-device")
        dev.make(f"Alice <{ALICE}>")
        lab.app.write("/var/tmp/alice.asc", dev.export(ALICE))
        print(f"mail-appliance OpenPGP bench: {os.cpu_count()} CPUs; "
              f"{a.messages} x 4 KiB and {a.large} x 1 MiB per mode")
        for size, n in sizes:
            transport(lab, "lmtp:unix:private/dovecot-lmtp")
            rate[("direct", size)] = deliver(lab, n, size)
            transport(lab, "lmtp:unix:private/appliance-pgp")
            rate[("off", size)] = deliver(lab, n, size)
            r = lab.appliance("key", "import", ALICE, "/var/tmp/alice.asc")
            assert r.returncode == 0, r.stderr
            offset = lab.app.path(PGP_LOG).stat().st_size
            cpu0 = proxy_cpu(lab)
            rate[("on", size)] = deliver(lab, n, size)
            cpu_ms = (proxy_cpu(lab) - cpu0) * 1000 / n
            times = [int(m.group(2)) for m in _ENC.finditer(lab.app.path(PGP_LOG).read_text()[offset:])]
            lab.appliance("key", "remove", ALICE)
            label = "4 KiB" if size == 4096 else "1 MiB"
            on, off, direct = rate[("on", size)], rate[("off", size)], rate[("direct", size)]
            print(f"{label}: direct {direct:.1f} msg/s | proxy, encryption off {off:.1f} msg/s | "
                  f"encryption on {on:.1f} msg/s = {on / off:.2f}x off, {on / direct:.2f}x direct")
            if times:
                q = statistics.quantiles(times, n=10) if len(times) > 1 else [times[0]] * 9
                print(f"{label}: encryption per message (gpg, proxy log): median "
                      f"{statistics.median(times):.0f} ms, p90 {q[8]:.0f} ms, n={len(times)}; "
                      f"proxy CPU {cpu_ms:.1f} ms/msg (without gpg)")
        print(f"target at 4 KiB: on/off >= 0.70 -> {rate[('on', 4096)] / rate[('off', 4096)]:.2f}")
    finally:
        if dev is not None:
            dev.close()
        lab.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
