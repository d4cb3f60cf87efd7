"""Outbound through a smarthost: authenticated, TLS verified, and failing closed.

The smarthost is a real Postfix (SASL through its own Dovecot) on the internet side of the lab,
with a certificate from a lab CA. The appliance trusts that CA through `relay.tls_ca_file`.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .mail_lab import ALICE, ALICE_PW, MAIL_HOST, REMOTE, REMOTE_USER, MailLab, hash_pw
from .netlab import Host, wait_for
from .test_mail import CA, smtp_code, trust_appliance_cert

SMARTHOST_IP = "203.0.113.70"
SMARTHOST = f"smarthost.{REMOTE}"
RELAY_USER, RELAY_PW = "boxuser", "relay-secret-77 with space"

SMARTHOST_MAIN_CF = f"""compatibility_level = 3.6
myhostname = {SMARTHOST}
mydestination =
inet_interfaces = all
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
maillog_file = /var/log/mail.log
smtpd_tls_chain_files = /etc/lab-tls/key.pem, /etc/lab-tls/fullchain.pem
smtpd_tls_security_level = may
smtpd_tls_loglevel = 1
smtpd_sasl_type = dovecot
smtpd_sasl_path = private/auth
smtpd_sasl_auth_enable = yes
smtpd_tls_auth_only = yes
smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination
smtp_tls_security_level = may
"""

SMARTHOST_DOVECOT = """protocols =
base_dir = /run/dovecot
log_path = /var/log/dovecot.log
ssl = no
auth_mechanisms = plain login
passdb {
  driver = passwd-file
  args = /etc/dovecot/relay-users
}
userdb {
  driver = static
  args = uid=mail gid=mail home=/nonexistent
}
service auth {
  unix_listener /var/spool/postfix/private/auth {
    mode = 0660
    user = postfix
    group = postfix
  }
}
"""


def make_ca(d: Path, name: str) -> tuple[str, str, str]:
    """A lab CA and a server certificate for the smarthost: (ca.pem, key.pem, fullchain.pem)."""
    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    ssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-days", "2", "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.pem")
    ssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj",
        f"/CN={SMARTHOST}", "-keyout", "server.key", "-out", "server.csr")
    (d / "ext.cnf").write_text(f"subjectAltName=DNS:{SMARTHOST}\n")
    ssl("x509", "-req", "-in", "server.csr", "-CA", f"{name}.pem", "-CAkey", f"{name}.key",
        "-CAcreateserial", "-days", "2", "-extfile", "ext.cnf", "-out", "server.pem")
    chain = (d / "server.pem").read_text() + (d / f"{name}.pem").read_text()
    return (d / f"{name}.pem").read_text(), (d / "server.key").read_text(), chain


@pytest.fixture(scope="module")
def smarthost(lab: MailLab) -> Iterator[Host]:
    host = lab.lab.host("smarthost", dns="203.0.113.53")
    lab.lab.link("smarthost", "eth0", "inet", "i-smart", a_addr=f"{SMARTHOST_IP}/24", b_master="br-wan")
    lab.lab.ns_exec("smarthost", "ip", "route", "add", "default", "via", "203.0.113.254")
    with tempfile.TemporaryDirectory() as tmp:
        ca, key, chain = make_ca(Path(tmp), "labca")
        other_ca, _, _ = make_ca(Path(tmp), "otherca")
    host.write("/etc/lab-tls/key.pem", key, mode=0o600)
    host.write("/etc/lab-tls/fullchain.pem", chain)
    host.write("/etc/postfix/main.cf", SMARTHOST_MAIN_CF)
    host.run(["postconf", "-F", "*/*/chroot = n"])
    host.run(["postconf", "-M", "submission/inet=submission inet n - n - - smtpd"])
    host.run(["postconf", "-P", "submission/inet/smtpd_tls_security_level=encrypt"])
    host.write("/etc/dovecot/dovecot.conf", SMARTHOST_DOVECOT)
    host.write("/etc/dovecot/relay-users", f"{RELAY_USER}:{{SHA512-CRYPT}}{hash_pw(RELAY_PW)}\n")
    host.run(["mkdir", "-p", "/var/spool/postfix", "/var/lib/postfix"])
    host.run(["chown", "postfix:postfix", "/var/lib/postfix"])
    r = host.run(["postfix", "start"], check=False)
    assert r.returncode == 0, host.read("/var/log/mail.log")
    host.track_pidfile("postfix", "/var/spool/postfix/pid/master.pid")
    rc = host.start_forking("dovecot", ["dovecot"], "/run/dovecot/master.pid")
    assert rc == 0, host.read("/var/log/dovecot.log")
    wait_for("smarthost 587", lambda: lab.tcp_open(lab.att, SMARTHOST_IP, 587))
    lab.app.write("/etc/appliance/relay-ca.pem", ca)
    lab.app.write("/etc/appliance/other-ca.pem", other_ca)
    lab.app.write("/etc/appliance/relay.password", RELAY_PW + "\n", mode=0o600)
    yield host
    host.run(["postfix", "stop"], check=False)


def relay_settings(lab_settings: str, ca_file: str) -> str:
    return lab_settings + f"""
[relay]
kind = "smarthost"
host = "{SMARTHOST}"
port = 587
username = "{RELAY_USER}"
password_file = "/etc/appliance/relay.password"
tls_ca_file = "{ca_file}"
"""


def submit(lab: MailLab, tag: str) -> None:
    trust_appliance_cert(lab, lab.lan2)
    r = lab.lan2.python(smtp_code(MAIL_HOST, 587, f"""
s.starttls(context=ssl.create_default_context(cafile={CA!r})); s.ehlo('client.invalid')
s.login({ALICE!r}, {ALICE_PW!r})
s.sendmail({ALICE!r}, [{REMOTE_USER!r}], 'Subject: smarthost {tag}\\r\\n\\r\\nvia relay {tag}\\r\\n')
s.quit()"""))
    assert r.returncode == 0, r.stderr


def queue(lab: MailLab) -> list[dict]:
    out = lab.app.run(["postqueue", "-j"], check=False).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_mail_goes_through_the_authenticated_smarthost(lab: MailLab, smarthost: Host) -> None:
    good = lab.app.read("/etc/appliance/settings.toml")
    lab.write_settings(relay_settings(good, "/etc/appliance/relay-ca.pem"))
    try:
        r = lab.appliance("apply")
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"note: outgoing mail is relayed through {SMARTHOST}:587" in r.stdout
        assert "sees every message you send" in r.stdout
        assert RELAY_PW not in r.stdout + r.stderr
        tag = uuid.uuid4().hex[:12]
        submit(lab, tag)

        def delivered() -> bool:
            return any(tag in p.read_text(errors="replace")
                       for p in lab.maildir_files(lab.mx, f"/var/vmail/{REMOTE}/carol"))

        wait_for("delivery via the smarthost", delivered, timeout=30)
        log = smarthost.read("/var/log/mail.log")
        assert f"sasl_username={RELAY_USER}" in log
        assert "TLS connection established from" in log
        app_log = lab.app.read("/var/log/mail.log")
        assert f"Verified TLS connection established to {SMARTHOST}" in app_log
    finally:
        lab.write_settings(good)
        assert lab.appliance("apply").returncode == 0


def test_untrusted_smarthost_certificate_defers_and_sends_nothing(lab: MailLab, smarthost: Host) -> None:
    good = lab.app.read("/etc/appliance/settings.toml")
    lab.write_settings(relay_settings(good, "/etc/appliance/other-ca.pem"))
    try:
        assert lab.appliance("apply").returncode == 0
        before = smarthost.read("/var/log/mail.log").count("sasl_username=")
        tag = uuid.uuid4().hex[:12]
        submit(lab, tag)

        def deferred() -> list[dict]:
            return [m for m in queue(lab) if m.get("queue_name") == "deferred"]

        held = wait_for("the message deferred in the appliance's queue", deferred, timeout=30)
        reasons = " ".join(r.get("delay_reason", "") for m in held for r in m["recipients"])  # type: ignore[union-attr]
        assert "certificate" in reasons.lower() or "verif" in reasons.lower(), reasons
        # Nothing was sent: no login and no message on the smarthost, nothing at the destination.
        assert smarthost.read("/var/log/mail.log").count("sasl_username=") == before
        assert not any(tag in p.read_text(errors="replace")
                       for p in lab.maildir_files(lab.mx, f"/var/vmail/{REMOTE}/carol"))
    finally:
        lab.write_settings(good)
        assert lab.appliance("apply").returncode == 0
        lab.app.run(["postsuper", "-d", "ALL", "deferred"], check=False)
