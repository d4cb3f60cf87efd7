"""Benchmarks in the lab: figures and ratios against a baseline measured in the same run.
Asserts nothing. Needs root (it builds the lab, like `make lab`).

  1. first apply and no-op apply of the real agent, vs. bare interpreter start-up in the same view
  2. end-to-end delivery: N messages of 4 KiB from the WAN with Postfix's smtp-source until all
     are in the mailbox, vs. the same load into smtp-sink (SMTP only, no queue, no delivery)
  3. PSS (not RSS) of Postfix + Dovecot (+ rspamd), idle and at peak during the delivery run
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.lab.mail_lab import ALICE, DOMAIN, MX_IP, WAN_IP, MailLab  # noqa: E402
from tests.lab.netlab import wait_for  # noqa: E402


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


# --- memory ------------------------------------------------------------------------------------
def _children() -> dict[int, list[int]]:
    m: dict[int, list[int]] = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                ppid = int(Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            m.setdefault(ppid, []).append(int(p))
    return m


def tree_mem(root_pid: int) -> tuple[int, int, int]:
    """(processes, RSS KiB, PSS KiB) of a daemon's master and all its descendants."""
    cm, todo, pids = _children(), [root_pid], []
    while todo and len(pids) < 5000:
        p = todo.pop()
        pids.append(p)
        todo += cm.get(p, [])
    rss = pss = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            pass
    return len(pids), rss, pss


def mem_snapshot(lab: MailLab) -> dict[str, tuple[int, int, int]]:
    pf = int(lab.app.path("/var/spool/postfix/pid/master.pid").read_text().split()[0])
    dv = int(lab.app.path("/run/dovecot/master.pid").read_text().split()[0])
    snap = {"postfix": tree_mem(pf), "dovecot": tree_mem(dv)}
    rs = lab.app.path("/run/rspamd/rspamd.pid")
    if rs.exists():  # issue #9: the milter every message passes
        snap["rspamd"] = tree_mem(int(rs.read_text().split()[0]))
    return snap


def fmt_mem(snap: dict[str, tuple[int, int, int]]) -> str:
    parts = [f"{k} {n} procs PSS {pss / 1024:.1f} MiB (RSS {rss / 1024:.1f})"
             for k, (n, rss, pss) in snap.items()]
    total_pss = sum(v[2] for v in snap.values()) / 1024
    total_rss = sum(v[1] for v in snap.values()) / 1024
    return "; ".join(parts) + f"; total PSS {total_pss:.1f} MiB, RSS/PSS {total_rss / total_pss:.1f}x"


# --- delivery --------------------------------------------------------------------------------------
def maildir_count(lab: MailLab) -> int:
    """Delivered messages: the INBOX and Junk (rspamd may score the generated mail as spam)."""
    base = lab.app.path(f"/var/vmail/{DOMAIN}/alice/Maildir")
    return sum(len(os.listdir(base / f / d)) for f in (".", ".Junk") for d in ("new", "cur")
               if (base / f / d).is_dir())


def smtp_source(lab: MailLab, target: str, n: int, size: int) -> float:
    t = time.perf_counter()
    r = lab.att.run(["timeout", "300", "smtp-source", "-s", "10", "-m", str(n), "-l", str(size),
                     "-f", "bench@remote.test", "-t", ALICE, "-M", "bench.remote.test", target],
                    check=False, timeout=320)
    if r.returncode != 0:
        raise RuntimeError(f"smtp-source failed: {r.stderr[-500:]}")
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("-n", "--messages", type=int, default=1000)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=5, help="no-op apply repetitions")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("bench: needs root (it builds the network-namespace lab)", file=sys.stderr)
        return 2

    lab = MailLab(Path(tempfile.mkdtemp(prefix="mail-appliance-bench.")), REPO)
    print(f"mail-appliance bench: {a.messages} messages of {a.size} B; {os.cpu_count()} CPUs")
    try:
        t_up = time.perf_counter()
        lab.up()  # includes the first apply; timed separately below via the lab's own call
        print(f"lab up (namespaces, knot, remote MX, first apply, daemons): "
              f"{time.perf_counter() - t_up:.2f} s")

        # 1. apply times --------------------------------------------------------------------------
        baseline = statistics.median(
            timed(lambda: lab.app.run([sys.executable, "-c", "pass"])) for _ in range(a.repeat))
        noop = []
        for _ in range(a.repeat):
            t = time.perf_counter()
            r = lab.appliance("apply")
            noop.append(time.perf_counter() - t)
            assert "changed 0 file(s)" in r.stdout, r.stdout + r.stderr
        # A full apply: remove the rendered files (the running daemons keep their config), so
        # the agent writes all 7 files, validates with the real tools and reloads both services.
        full = []
        for _ in range(3):
            lab.app.run(["rm", "-f", "/etc/postfix/main.cf", "/etc/postfix/master.cf",
                         "/etc/postfix/vmailbox", "/etc/postfix/virtual",
                         "/etc/postfix/sender_login", "/etc/dovecot/dovecot.conf",
                         "/etc/dovecot/users"])
            t = time.perf_counter()
            r = lab.appliance("apply")
            full.append(time.perf_counter() - t)
            assert "changed 7 file(s)" in r.stdout, r.stdout + r.stderr
        med = statistics.median(noop)
        print(f"interpreter start-up in the view (baseline): {baseline * 1000:.0f} ms")
        print(f"no-op apply:  median {med * 1000:.0f} ms over {a.repeat} runs "
              f"({med / baseline:.1f}x start-up)")
        print(f"full apply (7 files, validate, reload both): first {full[0] * 1000:.0f} ms, "
              f"then {', '.join(f'{x * 1000:.0f}' for x in full[1:])} ms "
              f"({statistics.median(full) / med:.1f}x no-op, median)")

        # 2 + 3. delivery and memory ------------------------------------------------------------------
        time.sleep(1)
        idle = mem_snapshot(lab)
        print(f"idle:  {fmt_mem(idle)}")

        # Baseline: smtp-sink on the remote host takes the same SMTP load, no queue, no delivery.
        lab.mx.spawn("smtp-sink", ["smtp-sink", "-u", "nobody", "-c", f"{MX_IP}:2525", "100"])
        wait_for("smtp-sink", lambda: lab.tcp_open(lab.att, MX_IP, 2525))
        sink_s = smtp_source(lab, f"{MX_IP}:2525", a.messages, a.size)

        peak: dict[str, tuple[int, int, int]] = {}
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                for k, v in mem_snapshot(lab).items():
                    if k not in peak or v[2] > peak[k][2]:
                        peak[k] = v
                time.sleep(0.2)

        before = maildir_count(lab)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.perf_counter()
        smtp_s = smtp_source(lab, f"{WAN_IP}:25", a.messages, a.size)
        wait_for("all messages in the mailbox",
                 lambda: maildir_count(lab) - before >= a.messages, timeout=300, interval=0.2)
        total = time.perf_counter() - t0
        stop.set()
        sampler.join(timeout=5)
        got = maildir_count(lab) - before
        print(f"SMTP into smtp-sink (baseline): {a.messages / sink_s:.0f} msg/s")
        print(f"SMTP accepted by the appliance: {a.messages / smtp_s:.0f} msg/s "
              f"({(a.messages / smtp_s) / (a.messages / sink_s):.2f}x baseline)")
        print(f"end-to-end into the mailbox:   {got} in {total:.2f} s = {got / total:.0f} msg/s "
              f"({(got / total) / (a.messages / sink_s):.2f}x baseline)")
        print(f"peak:  {fmt_mem(peak)}")
        idle_pss = sum(v[2] for v in idle.values())
        print(f"peak/idle PSS: {sum(v[2] for v in peak.values()) / idle_pss:.2f}x")
    finally:
        lab.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
