"""The agent's own daemons at rest: each one's PSS while idle, against a bare Python. Asserts
nothing. Needs root (a lab; /proc/PID/smaps_rollup of processes in it).

After the lab's first apply and one delivered message, each agent daemon (the OpenPGP proxy,
the policy service, the release agent) is read from its PID file, and its proportional set
size is printed beside the baseline measured in the same run: a python3 that has imported
asyncio and sleeps (what any Python daemon costs before it does anything). A daemon that
starts on demand and is not running holds nothing and is shown as such.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.lab.mail_lab import ALICE, DOMAIN, REMOTE_USER, MailLab, well_formed  # noqa: E402

# (name, PID file on the lab's app host)
DAEMONS = (("OpenPGP proxy", "/run/appliance-pgp.pid"),
           ("policy service", "/run/appliance-policyd.pid"),
           ("release agent", "/run/appliance-release.pid"))


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


def main() -> int:
    lab = MailLab(Path(tempfile.mkdtemp(prefix="bench-daemons.")), REPO)
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
        time.sleep(5)  # the daemons settle after the delivery
        base = baseline_kib()
        print(f"baseline: python3 with asyncio imported, idle: {base / 1024:.1f} MiB PSS")
        total = 0
        for name, pidfile in DAEMONS:
            content = lab.app.read(pidfile) if lab.app.path(pidfile).exists() else ""
            pid = int(content.split()[0]) if content.strip() else 0
            if not pid or not Path(f"/proc/{pid}").exists():
                print(f"{name}: not running while idle (0 MiB)")
                continue
            kib = pss_kib(pid)
            total += kib
            print(f"{name}: {kib / 1024:.1f} MiB PSS idle ({kib / base:.2f} x baseline)")
        print(f"agent daemons together: {total / 1024:.1f} MiB PSS idle")
    finally:
        lab.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
