"""Outbound DANE: a destination that publishes TLSA records in a DNSSEC-signed zone gets mail only
over TLS with a matching certificate; a mismatch defers the mail, it is never sent in clear.

The lab's knot signs remote.test; the appliance host gets a validating resolver (unbound) that
trusts remote.test's key, as the box's unbound trusts the DNS root.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.core.tls import tlsa_311

from .mail_lab import ALICE, DNS_IP, DOMAIN, REMOTE, REMOTE_USER, MailLab
from .netlab import wait_for

KNOT = ["knotc", "-c", "/var/lib/knot-lab/knot.conf"]
TLSA_NAME = "_25._tcp.mx"


def set_tlsa(lab: MailLab, digest: str | None) -> None:
    lab.dns.run([*KNOT, "zone-begin", REMOTE])
    lab.dns.run([*KNOT, "zone-unset", REMOTE, TLSA_NAME, "TLSA"], check=False)
    if digest:
        lab.dns.run([*KNOT, "zone-set", REMOTE, TLSA_NAME, "60", "TLSA", "3", "1", "1", digest])
    lab.dns.run([*KNOT, "zone-commit", REMOTE])


def unbound_conf(trust_anchor: str) -> str:
    stubs = "".join(f'stub-zone:\n  name: "{z}"\n  stub-addr: {DNS_IP}\n'
                    for z in (REMOTE, DOMAIN, "113.0.203.in-addr.arpa"))
    return f"""server:
  interface: 127.0.0.1
  do-daemonize: no
  username: ""
  chroot: ""
  pidfile: ""
  directory: "/etc/unbound"
  use-syslog: no
  logfile: ""
  do-not-query-localhost: no
  cache-max-ttl: 5
  val-log-level: 2
  # .test and TEST-NET reverse zones are special-use (RFC 6761, 5737): unbound answers them
  # locally unless told otherwise.
  local-zone: "test." nodefault
  local-zone: "113.0.203.in-addr.arpa." nodefault
  domain-insecure: "{DOMAIN}"
  domain-insecure: "113.0.203.in-addr.arpa"
  trust-anchor: "{trust_anchor}"
{stubs}"""


@pytest.fixture(scope="module")
def dane(lab: MailLab) -> Iterator[str]:
    # The remote MX offers STARTTLS with its own certificate.
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj", f"/CN=mx.{REMOTE}",
                        "-keyout", f"{tmp}/k.pem", "-out", f"{tmp}/c.pem"], check=True, capture_output=True)
        key, cert = Path(f"{tmp}/k.pem").read_text(), Path(f"{tmp}/c.pem").read_text()
    lab.mx.write("/etc/mx-tls/key.pem", key, mode=0o600)
    lab.mx.write("/etc/mx-tls/cert.pem", cert)
    lab.mx.run(["postconf", "-e", "smtpd_tls_security_level=may",
                "smtpd_tls_chain_files=/etc/mx-tls/key.pem,/etc/mx-tls/cert.pem"])
    lab.mx.run(["postfix", "reload"])
    # The zone is signed; the resolver on the appliance trusts its key signing key.
    ksk = wait_for("remote.test signed", lambda: [
        line for line in lab.app.run(["kdig", f"@{DNS_IP}", "+short", "DNSKEY", REMOTE],
                                     check=False).stdout.splitlines() if line.startswith("257 ")],
        timeout=20)
    anchor = f"{REMOTE}. DNSKEY {ksk[0]}"  # type: ignore[index]
    lab.app.write("/etc/unbound/lab.conf", unbound_conf(anchor))
    lab.app.spawn("unbound", ["unbound", "-d", "-c", "/etc/unbound/lab.conf"])
    resolv = lab.app.read("/etc/resolv.conf")
    wait_for("unbound", lambda: lab.app.run(["kdig", "@127.0.0.1", "+short", "A", f"mx.{REMOTE}"],
                                            check=False).stdout.strip() != "", timeout=15)
    lab.app.write("/etc/resolv.conf", "nameserver 127.0.0.1\n")
    try:
        yield tlsa_311(cert.encode())
    finally:
        lab.app.write("/etc/resolv.conf", resolv)
        set_tlsa(lab, None)
        lab.mx.run(["postconf", "-e", "smtpd_tls_security_level=none"])
        lab.mx.run(["postfix", "reload"])
        lab.app.run(["postsuper", "-d", "ALL"], check=False)


def send(lab: MailLab, tag: str) -> None:
    r = lab.app.run(["/usr/sbin/sendmail", "-f", ALICE, REMOTE_USER],
                    input=f"From: {ALICE}\nTo: {REMOTE_USER}\nSubject: dane {tag}\n\nbody {tag}\n")
    assert r.returncode == 0, r.stderr


def delivered(lab: MailLab, tag: str) -> bool:
    return any(tag in p.read_text(errors="replace")
               for p in lab.maildir_files(lab.mx, f"/var/vmail/{REMOTE}/carol"))


def queued(lab: MailLab) -> list[dict]:
    out = lab.app.run(["postqueue", "-j"], check=False).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_mismatching_tlsa_defers_and_a_matching_one_delivers(lab: MailLab, dane: str) -> None:
    set_tlsa(lab, "00" * 32)  # published, signed, and wrong
    ad = lab.app.run(["kdig", "@127.0.0.1", "+dnssec", "TLSA", f"{TLSA_NAME}.{REMOTE}"]).stdout
    header_flags = ad.split(";; Flags:")[1].split(";")[0].split()
    assert "ad" in header_flags, ad  # the resolver validated it
    tag = uuid.uuid4().hex[:12]
    send(lab, tag)
    held = wait_for("deferred for the TLSA mismatch",
                    lambda: [m for m in queued(lab) if m.get("queue_name") == "deferred"], timeout=30)
    reason = " ".join(r.get("delay_reason", "") for m in held for r in m["recipients"])  # type: ignore[union-attr]
    assert "TLSA" in reason or "verif" in reason.lower(), reason
    assert not delivered(lab, tag)
    # The destination fixes its record: the queued mail goes out, verified by DANE.
    set_tlsa(lab, dane)

    def flushed_and_delivered() -> bool:  # cached answers expire within seconds (TTL 5 here)
        lab.app.run(["postqueue", "-f"])
        return delivered(lab, tag)

    try:
        wait_for("delivered after the fix", flushed_and_delivered, timeout=45, interval=2)
    except TimeoutError:
        raise AssertionError(lab.app.read("/var/log/mail.log")[-2500:] + json.dumps(queued(lab))) from None
    assert f"Verified TLS connection established to mx.{REMOTE}" in lab.app.read("/var/log/mail.log")
