"""rspamd's memory (issue #9): PSS of the whole mail stack, idle, in the lab, with rspamd in full
mode and in light mode, against the same stack without rspamd measured in the same run (the
baseline: what Postfix, Dovecot and the agent's own daemons take). The first start compiles
rspamd's pattern caches in each process; a restart maps them from disk, shared: both figures are
printed. Asserts nothing. Needs root (it builds the lab).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.run import tree_mem  # noqa: E402
from tests.lab.mail_lab import MailLab  # noqa: E402
from tests.lab.netlab import wait_for  # noqa: E402

DAEMONS = {  # the mail stack: every long-running process mail passes through
    "postfix": "/var/spool/postfix/pid/master.pid",
    "dovecot": "/run/dovecot/master.pid",
    "appliance-pgp": "/run/appliance-pgp.pid",
    "appliance-policyd": "/run/appliance-policyd.pid",
    "rspamd": "/run/rspamd/rspamd.pid",
}
START_RSPAMD = "rspamd -c /etc/rspamd/rspamd.conf -u _rspamd -g _rspamd </dev/null >/dev/null 2>&1"


def stack(lab: MailLab) -> dict[str, tuple[int, int, int]]:
    out = {}
    for name, pidfile in DAEMONS.items():
        p = lab.app.path(pidfile)
        if p.exists():
            out[name] = tree_mem(int(p.read_text().split()[0]))
    return out


def settle(lab: MailLab, seconds: float = 20) -> dict[str, tuple[int, int, int]]:
    """Idle PSS after rspamd's workers have loaded everything (they do it lazily)."""
    time.sleep(seconds)
    return stack(lab)


def mib(snap: dict[str, tuple[int, int, int]], only: str | None = None) -> float:
    return sum(v[2] for k, v in snap.items() if only in (None, k)) / 1024


def apply_mode(lab: MailLab, base: str, extra: str) -> None:
    lab.write_settings(base + extra)
    r = lab.appliance("apply")
    assert r.returncode == 0, r.stdout + r.stderr


def restart(lab: MailLab) -> None:
    pid = int(lab.app.read("/run/rspamd/rspamd.pid").split()[0])
    lab.app.run(["kill", str(pid)])
    wait_for("rspamd stopped", lambda: not lab.tcp_open(lab.app, "127.0.0.1", 11332), timeout=30)
    lab.app.run(["sh", "-c", START_RSPAMD])
    wait_for("rspamd back", lambda: lab.tcp_open(lab.app, "127.0.0.1", 11332), timeout=30)


def main() -> int:
    if os.geteuid() != 0:
        print("bench: needs root (it builds the network-namespace lab)", file=sys.stderr)
        return 2
    lab = MailLab(Path(tempfile.mkdtemp(prefix="mail-appliance-bench.")), REPO)
    print(f"mail-appliance bench (rspamd memory); {os.cpu_count()} CPUs")
    try:
        lab.up()
        base = lab.app.read("/etc/appliance/settings.toml")
        rows = []
        rows.append(("full, first start (compiles)", settle(lab)))
        restart(lab)
        full = settle(lab)
        rows.append(("full, after a restart", full))
        # The agent restarts rspamd itself for a change of mode (Rspamd.needs_restart).
        apply_mode(lab, base, '\n[spam]\nmode = "light"\n')
        rows.append(("light", settle(lab)))
        apply_mode(lab, base, "")

        without = mib(full) - mib(full, "rspamd")
        print(f"baseline, the stack without rspamd: {without:.1f} MiB PSS "
              f"({', '.join(k for k in full if k != 'rspamd')})")
        for label, snap in rows:
            n = snap.get("rspamd", (0, 0, 0))[0]
            print(f"rspamd {label:32} rspamd {mib(snap, 'rspamd'):6.1f} MiB PSS in {n} procs; "
                  f"whole stack {mib(snap):6.1f} MiB ({mib(snap) / without:.1f}x baseline)")
    finally:
        lab.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
