"""The agent's own daemons at rest: each one's PSS while idle, against a bare Python. Asserts
nothing. Needs root.

Two ways to run it:

- `make bench` (the lab): after the lab's first apply, one delivered message and one calendar
  sync, each agent daemon (the OpenPGP proxy, the policy service, the release agent, the
  calendar server: Radicale in the agent's daemon shape) is read from its PID file
  (the lab has no systemd: the agent starts them directly) and its proportional set size is
  printed beside the baseline measured in the same run: a python3 that has imported asyncio
  and sleeps (what any Python daemon costs before it does anything). The release agent runs
  on demand under systemd; the lab shows that too, with `systemd-socket-activate` standing in
  for its socket units: the first connection starts it (the cold start is timed), and it exits
  when idle.
- `python3 bench/daemons.py --here` on a booted appliance (systemd): the same figures from
  the units' main PIDs; the on-demand one is shown as holding nothing while its sockets listen.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# (name, unit, PID file without systemd, started on demand under systemd)
DAEMONS = (("OpenPGP proxy", "appliance-pgp.service", "/run/appliance-pgp.pid", False),
           ("policy service", "appliance-policyd.service", "/run/appliance-policyd.pid", False),
           ("release agent", "appliance-release.service", "/run/appliance-release.pid", True),
           ("calendar server (Radicale)", "appliance-dav.service", "/run/appliance-dav.pid", False))
DAV_TARGET_MIB = 30  # what a 512 MB board can give calendars and contacts
SOCKETS = ("appliance-release.socket", "appliance-release-notice.socket")
RELEASE_LMTP = "/var/spool/postfix/private/appliance-release"
RELEASE_NOTICES = "/run/appliance-release.sock"
IDLE_S = 5  # the bench's idle period for the on-demand run (the unit's is 60 s)


def pss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    raise RuntimeError(f"no Pss line for pid {pid}")


def baseline_kib() -> int:
    p = subprocess.Popen([sys.executable, "-c", "import asyncio, sys, time; print(flush=True); "
                          "time.sleep(60)"], stdout=subprocess.PIPE)
    try:
        assert p.stdout is not None
        p.stdout.readline()
        time.sleep(0.5)
        return pss_kib(p.pid)
    finally:
        p.kill()
        p.wait(timeout=10)


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


def systemctl(*args: str) -> str:
    return subprocess.run(["systemctl", *args], capture_output=True, text=True).stdout.strip()


def here() -> int:
    """On a booted appliance: systemd's word for each daemon."""
    if not Path("/run/systemd/system").is_dir():
        print("--here needs a host booted with systemd (the appliance)", file=sys.stderr)
        return 2
    base = baseline_kib()
    print(f"baseline: python3 with asyncio imported, idle: {mib(base)} PSS")
    total = 0
    for name, unit, _, on_demand in DAEMONS:
        pid = int(systemctl("show", "-P", "MainPID", unit) or 0)
        if on_demand:
            sockets = [u for u in SOCKETS if systemctl("is-active", u) == "active"]
            deadline = time.monotonic() + 90  # a start a moment ago: wait out its idle exit
            while pid and time.monotonic() < deadline:
                time.sleep(1)
                pid = int(systemctl("show", "-P", "MainPID", unit) or 0)
            if not pid:
                print(f"{name}: not running while idle: 0 MiB "
                      f"({', '.join(sockets) or 'no socket unit active!'} listening in its place)")
                continue
        if not pid:
            print(f"{name}: not running ({unit}: {systemctl('is-active', unit)})")
            continue
        kib = pss_kib(pid)
        total += kib
        print(f"{name}: {mib(kib)} PSS idle ({kib / base:.2f} x baseline)")
    print(f"agent daemons together: {mib(total)} PSS idle")
    return 0


def children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        text = (task / "children").read_text() if (task / "children").exists() else ""
        out += [int(x) for x in text.split()]
    return out


def on_demand_in_lab(lab: object, base: int) -> None:
    """The release agent as its socket units run it, with systemd-socket-activate in their
    place: the sockets exist, the first connection starts the agent, it exits when idle."""
    from tests.lab.mail_lab import MailLab

    assert isinstance(lab, MailLab)
    pidfile = "/run/appliance-release.pid"
    pid = int((lab.app.read(pidfile).split() or ["0"])[0])
    if pid:
        lab.app.run(["kill", str(pid)], check=False)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
    lab.app.run(["rm", "-f", RELEASE_LMTP, RELEASE_NOTICES], check=False)
    activator = lab.app.spawn("release-on-demand", [
        "systemd-socket-activate", "-l", RELEASE_LMTP, "-l", RELEASE_NOTICES,
        "--fdname=replies:notices", "-E", f"PYTHONPATH={REPO}",
        sys.executable, "-m", "appliance.features.privacy.release_agent",
        "--exit-when-idle", str(IDLE_S)])
    deadline = time.monotonic() + 10
    while not lab.app.path(RELEASE_LMTP).is_socket() and time.monotonic() < deadline:
        time.sleep(0.05)
    print(f"release agent, on demand (systemd-socket-activate in place of its socket units, "
          f"idle exit after {IDLE_S} s here, 60 s on the box):")
    print("  while no one has connected: not running, 0 MiB")
    t0 = time.monotonic()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(str(lab.app.path(RELEASE_LMTP)))
    greeting = s.makefile("rb").readline()
    cold = time.monotonic() - t0
    time.sleep(1)
    agent = [c for p in children(activator) for c in [p, *children(p)]]
    pids = [p for p in agent if "release_agent" in Path(f"/proc/{p}/cmdline").read_text(errors="replace")]
    kib = pss_kib(pids[0]) if pids else 0
    s.sendall(b"QUIT\r\n")
    s.close()
    print(f"  first connection answered after {cold * 1000:.0f} ms (a cold start: "
          f"{greeting.decode(errors='replace').strip()[:40]!r})")
    print(f"  while it runs: {mib(kib)} PSS ({kib / base:.2f} x baseline)")
    t1 = time.monotonic()
    while pids and Path(f"/proc/{pids[0]}").exists() and time.monotonic() - t1 < IDLE_S + 30:
        time.sleep(0.2)
    gone = not pids or not Path(f"/proc/{pids[0]}").exists()
    print(f"  after the session: exited {time.monotonic() - t1:.1f} s later, 0 MiB while idle"
          if gone else "  after the session: still running (no idle exit!)")


def lab_run() -> int:
    from tests.lab.mail_lab import (
        ALICE,
        ALICE_PW,
        APP_IP,
        DOMAIN,
        MAIL_HOST,
        REMOTE_USER,
        MailLab,
        well_formed,
    )

    lab = MailLab(Path(tempfile.mkdtemp(prefix="bench-daemons.")), REPO,
                  settings_extra="[dav]\nenabled = true\n")
    try:
        lab.up()
        # One message from the remote domain's MX, so each daemon has done its work once.
        r = lab.mx.python(f"""
import smtplib
s = smtplib.SMTP('127.0.0.1', 25, timeout=30)
s.sendmail({REMOTE_USER!r}, [{ALICE!r}], {well_formed(REMOTE_USER, ALICE, 'bench')!r})
s.quit()""", timeout=120)
        assert r.returncode == 0, r.stderr
        deadline = time.monotonic() + 120
        while not lab.maildir_files(lab.app, f"/var/vmail/{DOMAIN}/alice/Maildir") \
                and time.monotonic() < deadline:
            time.sleep(1)
        # One calendar client's first sync (login, default collections made, their listing).
        for _ in range(2):
            lab.lan2.run(["curl", "-sk", "-o", "/dev/null", "--resolve", f"{MAIL_HOST}:443:{APP_IP}",
                          "-u", f"{ALICE}:{ALICE_PW}", "-X", "PROPFIND", "-H", "Depth: 1",
                          f"https://{MAIL_HOST}/{ALICE}/"], check=False)
        time.sleep(5)  # the daemons settle after the delivery
        base = baseline_kib()
        print(f"baseline: python3 with asyncio imported, idle: {mib(base)} PSS")
        total = 0
        for name, _, pidfile, on_demand in DAEMONS:
            content = lab.app.read(pidfile) if lab.app.path(pidfile).exists() else ""
            pid = int(content.split()[0]) if content.strip() else 0
            if not pid or not Path(f"/proc/{pid}").exists():
                print(f"{name}: not running")
                continue
            kib = pss_kib(pid)
            total += kib
            how = " (started directly: the lab has no systemd; on the box it starts on demand)" \
                if on_demand else ""
            if "Radicale" in name:
                how = f" (target: {DAV_TARGET_MIB} MiB)"
            print(f"{name}: {mib(kib)} PSS idle ({kib / base:.2f} x baseline){how}")
        print(f"agent daemons together: {mib(total)} PSS idle, as the lab runs them")
        on_demand_in_lab(lab, base)
    finally:
        lab.down()
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--here", action="store_true",
                   help="measure this booted appliance (systemd) instead of building the lab")
    return here() if p.parse_args().here else lab_run()


if __name__ == "__main__":
    sys.exit(main())
