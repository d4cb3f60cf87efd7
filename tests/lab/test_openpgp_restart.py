"""A restart of the OpenPGP proxy during a stream of mail: delivery resumes within seconds.

While the proxy is down Postfix defers what it was delivering and marks the transport dead
(`delivery temporarily suspended`) for its backoff (300 s and more); the proxy flushes the
queue once it listens again (`flush` in openpgp.conf). No flush by the test. systemd is not
PID 1 in the lab: its Restart= is stood in for by starting the unit's command again, 2 s
after the kill, as RestartSec=2 would; the other case is the agent's own `appliance apply`.
"""

from __future__ import annotations

import re
import sys
import threading
import time
import uuid

import pytest

from .mail_lab import BOB_LOCAL, DOMAIN, REMOTE, MailLab, well_formed
from .netlab import wait_for

MAILDIR = f"/var/vmail/{DOMAIN}/bob/Maildir"
PIDFILE = "/run/appliance-pgp.pid"
COUNT = 300


def stored(lab: MailLab, tag: str) -> int:
    """Distinct messages of the stream in the mailbox, by Message-ID (kept outside the
    encryption). A kill between Dovecot's reply and the proxy's may store one twice: LMTP is
    at-least-once ("message may be sent more than once"), and that is no loss."""
    ids = re.compile(rb"<" + re.escape(tag.encode()) + rb"-(\d+)@")
    return len({m.group(1) for p in lab.maildir_files(lab.app, MAILDIR)
                for m in [ids.search(p.read_bytes()[:4000])] if m})


def stream(lab: MailLab, sender: str, tag: str) -> threading.Thread:
    """COUNT messages from the remote MX, over three SMTP sessions, in the background."""
    msgs = [well_formed(sender, BOB_LOCAL, f"stream {tag} {n}", msgid=f"{tag}-{n}@{REMOTE}")
            for n in range(COUNT)]
    path = lab.workdir / f"stream-{tag}.py"
    path.write_text(f"""
import smtplib
msgs = {msgs!r}
for part in range(3):
    s = smtplib.SMTP('127.0.0.1', 25, timeout=120)
    for m in msgs[part::3]:
        s.sendmail({sender!r}, [{BOB_LOCAL!r}], m.encode())
    s.quit()
""")
    t = threading.Thread(target=lambda: lab.mx.run(["/usr/bin/python3", str(path)], timeout=300))
    t.start()
    return t


@pytest.mark.parametrize("restart", ["unit-command", "appliance-apply"])
def test_sigkill_of_proxy_during_300_messages_all_delivered_within_60_s(lab: MailLab, restart: str) -> None:
    tag = uuid.uuid4().hex[:12]
    t = stream(lab, f"stream-{tag}@{REMOTE}", tag)
    try:
        wait_for("the first messages stored", lambda: stored(lab, tag) >= 30, timeout=120, interval=0.2)
        pid = lab.app.read(PIDFILE).split()[0]
        lab.app.run(["kill", "-KILL", pid])
        wait_for("the proxy gone", lambda: lab.app.run(["kill", "-0", pid], check=False).returncode != 0,
                 timeout=10, interval=0.1)
        time.sleep(2)  # RestartSec=2 of the unit
        at_kill = stored(lab, tag)
        if restart == "unit-command":
            r = lab.app.run([sys.executable, "-m", "appliance.features.openpgp.proxy", "--config",
                             "/etc/appliance/openpgp.conf", "--daemon", PIDFILE,
                             "--log", "/var/log/appliance-pgp.log"], check=False,
                            env={"PYTHONPATH": str(lab.repo)})
        else:
            r = lab.appliance("apply")
        assert r.returncode == 0, r.stderr
        restarted = time.monotonic()
        try:
            wait_for(f"all {COUNT} delivered", lambda: stored(lab, tag) == COUNT, timeout=60, interval=0.5)
        except TimeoutError:
            raise AssertionError(f"{stored(lab, tag)} of {COUNT} stored 60 s after the restart "
                                 f"({at_kill} before it)\n"
                                 f"{lab.app.read('/var/log/appliance-pgp.log')[-800:]}\n"
                                 f"{lab.app.read('/var/log/mail.log')[-6000:]}\n"
                                 f"{lab.app.run(['postqueue', '-p'], check=False).stdout[-1500:]}") from None
        print(f"{restart}: {at_kill} stored before the restart, all {COUNT} "
              f"{time.monotonic() - restarted:.1f} s after it")
    finally:
        t.join(300)
