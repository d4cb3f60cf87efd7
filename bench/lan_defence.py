"""LAN defence figures (issue #8), in the lab. Asserts nothing. Needs root.

  1. lynis `audit system` run inside the appliance host's view (its /etc with the agent's
     sshd, fail2ban and nftables files; its own /var), printing the hardening index. The
     image is not built here, so this is the lab host config (the machine's packages, the
     appliance's configuration).
  2. the kill-switch's cost: the policy service's round trip per request (what Postfix adds
     at the end of each submitted message) against the time of one whole submission (AUTH
     session kept open, STARTTLS, one message to a remote recipient) in the same run.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.lab.mail_lab import ALICE, ALICE_PW, APP_IP, MailLab  # noqa: E402

N = 200


def lynis(lab: MailLab) -> None:
    r = lab.app.run(["lynis", "audit", "system", "--quick", "--no-colors", "--skip-plugins"],
                    check=False, timeout=900)
    m = re.search(r"Hardening index : (\d+)", r.stdout)
    tests = re.search(r"Tests performed : (\d+)", r.stdout)
    warnings = lab.app.read("/var/log/lynis-report.dat").count("warning[]=")
    print(f"lynis audit system (lab app host): hardening index {m.group(1) if m else '?'}"
          f" ({tests.group(1) if tests else '?'} tests, {warnings} warning(s))")


def policy_overhead(lab: MailLab) -> None:
    rtt = f"""
import socket, time
s = socket.create_connection(('127.0.0.1', 10031))
f = s.makefile('rwb')
req = (b'request=smtpd_access_policy\\nprotocol_state=END-OF-MESSAGE\\n'
       b'sasl_username=bench@example.test\\nrecipient_count=1\\n\\n')
t = time.perf_counter()
for i in range({N}):
    f.write(req); f.flush()
    while f.readline() not in (b'\\n', b''):
        pass
print((time.perf_counter() - t) / {N})
"""
    sub = f"""
import smtplib, ssl, time
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP({APP_IP!r}, 587, timeout=30); s.starttls(context=ctx); s.login({ALICE!r}, {ALICE_PW!r})
t = time.perf_counter()
for i in range({N}):
    s.sendmail({ALICE!r}, ['carol@remote.test'], f'Subject: bench {{i}}\\r\\n\\r\\nx\\r\\n')
print((time.perf_counter() - t) / {N})
s.quit()
"""
    # High limits for the measurement: every message is counted, none held.
    r = lab.lan2.python(sub, timeout=600)
    per_msg = float(r.stdout.strip() or "nan")
    r = lab.app.python(rtt, timeout=120)
    per_req = float(r.stdout.strip() or "nan")
    print(f"kill-switch policy round trip: {per_req * 1e3:.2f} ms per message; "
          f"one submission (587, TLS, AUTH session open): {per_msg * 1e3:.2f} ms "
          f"-> policy = {per_req / per_msg * 100:.1f} % of a submission")


def main() -> int:
    lab = MailLab(Path(tempfile.mkdtemp(prefix="bench-lan-defence.")), REPO)
    try:
        lab.settings_extra = getattr(lab, "settings_extra", "")
        lab.up()
        from tests.lab.mail_lab import settings_toml

        lab.write_settings(settings_toml(lab.users, "[limits]\nmessages_per_hour = 100000\n"
                                         "messages_per_day = 100000\nglobal_per_hour = 100000\n"))
        r = lab.appliance("apply")
        assert r.returncode == 0, r.stderr
        policy_overhead(lab)
        lynis(lab)
    finally:
        lab.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
