"""Certificates from an ACME CA: pebble (Let's Encrypt's test CA) on the lab's internet side.

A UPnP router lab: port 80 must be mapped for the HTTP-01 challenge and only for it. Pebble
validates through the lab's DNS server; its API certificate comes from a CA made here (Debian's
pebble ships none) and its issuing root changes at every start, so it is fetched from pebble's
management port.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import REPO
from .mail_lab import ACME_IP, DNS_IP, DOMAIN, IGD_URL, MAIL_HOST, MailLab
from .netlab import wait_for
from .test_reachability import router_mappings

ACME_DIR = "https://acme.example.test:14000/dir"

# The names the web server answers (each in the certificate, each published before issuing).
WEB_NAMES = ("mta-sts", "openpgpkey", "autoconfig")

def openssl(cwd: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def acme_lab() -> Iterator[MailLab]:
    m = MailLab(Path(tempfile.mkdtemp(prefix="mail-appliance-lab.")), REPO, router="upnp",
                settings_extra=f'[upnp]\nigd_url = "{IGD_URL}"\nlease_seconds = 120\n'
                f'[certs]\nacme_server = "{ACME_DIR}"\nacme_ca_bundle = "/etc/appliance/acme-api-ca.pem"\n')
    try:
        m.up()
        acme = m.lab.host("acme", dns=DNS_IP)
        m.lab.link("acme", "eth0", "inet", "i-acme", a_addr=f"{ACME_IP}/24", b_master="br-wan")
        m.lab.ns_exec("acme", "ip", "route", "add", "default", "via", "203.0.113.254")
        d = m.workdir / "pebble"
        d.mkdir()
        openssl(d, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=lab pebble API CA")
        openssl(d, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", "key.pem", "-out", "srv.csr", "-subj", "/CN=acme.example.test")
        (d / "ext.cnf").write_text(f"subjectAltName=DNS:acme.example.test,IP:{ACME_IP}\n"
                                   "extendedKeyUsage=serverAuth\n")
        openssl(d, "x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", "cert.pem", "-days", "2", "-extfile", "ext.cnf")
        (d / "config.json").write_text(json.dumps({"pebble": {
            "listenAddress": f"{ACME_IP}:14000", "managementListenAddress": f"{ACME_IP}:15000",
            "certificate": str(d / "cert.pem"), "privateKey": str(d / "key.pem"),
            "httpPort": 80, "tlsPort": 443, "ocspResponderURL": "",
            "externalAccountBindingRequired": False}}))
        acme.spawn("pebble", ["pebble", "-config", str(d / "config.json"), "-dnsserver", f"{DNS_IP}:53"],
                   env={"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0",
                        "PEBBLE_AUTHZREUSE": "0"})
        wait_for("pebble", lambda: m.tcp_open(m.att, ACME_IP, 14000), timeout=20)
        m.app.write("/etc/appliance/acme-api-ca.pem", (d / "ca.pem").read_text())
        m.lan2.write("/etc/acme-api-ca.pem", (d / "ca.pem").read_text())
        m.app.write("/etc/appliance/tsig.key", m.tsig_secret + "\n", mode=0o600)
        yield m
    finally:
        m.down()
        shutil.rmtree(m.workdir, ignore_errors=True)


def pebble_root(lab: MailLab) -> str:
    r = lab.lan2.run(["/usr/bin/python3", "-c", f"""
import ssl, urllib.request
ctx = ssl.create_default_context(cafile='/etc/acme-api-ca.pem')
print(urllib.request.urlopen('https://{ACME_IP}:15000/roots/0', context=ctx, timeout=10).read().decode())"""])
    return r.stdout


def served_cert(lab: MailLab, port: int) -> dict:
    """The certificate a service presents, verified by a client that trusts only pebble's root."""
    lab.lan2.write("/etc/pebble-root.pem", pebble_root(lab))
    starttls = "smtp" if port in (25, 587) else ""
    r = lab.lan2.python(f"""
import json, smtplib, socket, ssl, hashlib
ctx = ssl.create_default_context(cafile='/etc/pebble-root.pem')
port = {port}
if {starttls!r} == 'smtp':
    s = smtplib.SMTP({MAIL_HOST!r}, port, timeout=10); s.ehlo('x'); s.starttls(context=ctx)
    sock = s.sock
else:
    sock = ctx.wrap_socket(socket.create_connection(({MAIL_HOST!r}, port), timeout=10),
                           server_hostname={MAIL_HOST!r})
der = sock.getpeercert(binary_form=True)
print(json.dumps({{"issuer": dict(x[0] for x in sock.getpeercert()["issuer"]),
                  "sha256": hashlib.sha256(der).hexdigest()}}))""")
    assert r.returncode == 0, f"port {port}: {r.stderr[-800:]}"
    return json.loads(r.stdout)


def tlsa(lab: MailLab) -> str:
    r = lab.appliance("cert", "show")
    assert r.returncode == 0, r.stdout + r.stderr
    line = [x for x in r.stdout.splitlines() if "TLSA 3 1 1" in x][0]
    return line.split()[-1]


def test_http01_certificate_through_the_upnp_mapped_port_80(acme_lab: MailLab) -> None:
    lab = acme_lab
    r = lab.appliance("upnp", "renew")
    assert r.returncode == 0, r.stdout
    assert 80 not in router_mappings(lab)
    r = lab.appliance("cert", "issue")
    assert r.returncode == 0, r.stdout + r.stderr
    assert 80 not in router_mappings(lab)  # mapped for the challenge only
    assert {25, 465, 587, 993} <= set(router_mappings(lab))
    assert "issued by your ACME CA" in lab.appliance("cert", "show").stdout
    for port in (25, 587, 465, 993):
        cert = served_cert(lab, port)
        assert "Pebble" in json.dumps(cert["issuer"]), cert


def test_forced_renewal_deploys_without_restarting_the_stack_and_keeps_the_tlsa(acme_lab: MailLab) -> None:
    lab = acme_lab
    before = {port: served_cert(lab, port)["sha256"] for port in (25, 993)}
    record = tlsa(lab)
    pids = (lab.app.read("/var/spool/postfix/pid/master.pid").strip(),
            lab.app.read("/run/dovecot/master.pid").strip())
    r = lab.appliance("cert", "renew", "--force")
    assert r.returncode == 0, r.stdout + r.stderr
    after = {port: served_cert(lab, port)["sha256"] for port in (25, 993)}
    assert all(after[p] != before[p] for p in before)  # the new certificate is served...
    assert (lab.app.read("/var/spool/postfix/pid/master.pid").strip(),
            lab.app.read("/run/dovecot/master.pid").strip()) == pids  # ...by the same daemons
    assert tlsa(lab) == record  # same key: a published DANE record stays valid
    assert 80 not in router_mappings(lab)


def test_dns01_for_a_user_without_port_80(acme_lab: MailLab) -> None:
    lab = acme_lab
    good = lab.app.read("/etc/appliance/settings.toml")
    lab.write_settings(good.replace('[certs]\n', '[certs]\nchallenge = "dns-01"\n'
                                    f'dns_server = "{DNS_IP}"\n'
                                    'tsig_key_file = "/etc/appliance/tsig.key"\n', 1))
    def serial() -> int:
        r = lab.lan2.run(["kdig", f"@{DNS_IP}", "+short", "SOA", DOMAIN])
        return int(r.stdout.split()[2])

    try:
        before, serial_before = served_cert(lab, 993)["sha256"], serial()
        r = lab.appliance("cert", "issue", "--force")
        assert r.returncode == 0, r.stdout + r.stderr
        assert served_cert(lab, 993)["sha256"] != before
        # the challenge record went in and out by RFC 2136 updates: each one bumps the zone's
        # serial (knot's log is only the explanation when it did not happen)
        assert serial() >= serial_before + 2, (
            (lab.lab.logs / "dns-knotd.out").read_text()[-1500:]
            + lab.app.run(["tail", "-c", "3000", "/var/log/letsencrypt/letsencrypt.log"]).stdout)
        assert 80 not in router_mappings(lab)
        # the challenge record is gone again
        r = lab.lan2.run(["kdig", f"@{DNS_IP}", "+short", "TXT", f"_acme-challenge.{MAIL_HOST}"])
        assert r.stdout.strip() == ""
    finally:
        lab.write_settings(good)


def test_mta_sts_enforced_by_a_remote_sender_and_a_stripped_starttls_defers(acme_lab: MailLab) -> None:
    """The remote MX runs Debian's postfix-mta-sts-resolver: it fetches our policy over HTTPS
    (trusting pebble's root) and then demands verified TLS to our MX."""
    from .test_dns_records import publish

    lab = acme_lab
    good = lab.app.read("/etc/appliance/settings.toml")
    lab.write_settings(good + '\n[web]\nenabled = true\nmta_sts_mode = "enforce"\n'
                       '\n[firewall]\nweb = true\n')
    try:
        r = lab.appliance("upnp", "renew", "--extra", "443")
        assert r.returncode == 0, r.stdout
        r = lab.appliance("apply")
        assert r.returncode == 0, r.stdout + r.stderr
        r = lab.appliance("dns")
        publish(lab, [x for x in r.stdout.splitlines() if any(n in x for n in WEB_NAMES)])
        r = lab.appliance("cert", "issue", "--force")  # adds mta-sts.example.test to the certificate
        assert r.returncode == 0, r.stdout + r.stderr
        root = pebble_root(lab)
        lab.mx.write("/etc/pebble-root.pem", root)
        r = lab.mx.run(["/usr/bin/python3", "-c", """
import ssl, urllib.request
ctx = ssl.create_default_context(cafile='/etc/pebble-root.pem')
print(urllib.request.urlopen('https://mta-sts.example.test/.well-known/mta-sts.txt', context=ctx,
                             timeout=10).read().decode())"""], check=False)
        assert "mode: enforce" in r.stdout and f"mx: {MAIL_HOST}" in r.stdout, r.stderr
        # The same server answers mail apps on the internet (a phone away from home).
        r = lab.mx.run(["/usr/bin/python3", "-c", """
import ssl, urllib.request
ctx = ssl.create_default_context(cafile='/etc/pebble-root.pem')
url = 'https://autoconfig.example.test/mail/config-v1.1.xml?emailaddress=alice%40example.test'
print(urllib.request.urlopen(url, context=ctx, timeout=10).read().decode())"""],
                       check=False)
        assert f"<hostname>{MAIL_HOST}</hostname>" in r.stdout and "<port>993</port>" in r.stdout, r.stderr
        # The sending side: MTA-STS resolver + Postfix asking it for every destination.
        lab.mx.write("/etc/mta-sts-daemon.yml", "host: 127.0.0.1\nport: 8461\ncache:\n  type: internal\n")
        lab.mx.spawn("mta-sts", ["mta-sts-daemon", "-c", "/etc/mta-sts-daemon.yml"],
                     env={"SSL_CERT_FILE": "/etc/pebble-root.pem"})
        wait_for("mta-sts-daemon", lambda: lab.tcp_open(lab.mx, "127.0.0.1", 8461), timeout=15)
        lab.mx.run(["postconf", "-e", "smtp_tls_policy_maps=socketmap:inet:127.0.0.1:8461:postfix",
                    "smtp_tls_CAfile=/etc/pebble-root.pem"])
        lab.mx.run(["postfix", "reload"])

        def send(tag: str) -> None:
            r = lab.mx.run(["/usr/sbin/sendmail", "-f", "carol@remote.test", "alice@example.test"],
                           input=f"Subject: sts {tag}\n\nbody\n")
            assert r.returncode == 0

        send("one")
        wait_for("delivered with verified TLS", lambda: "Verified TLS connection established to "
                 f"{MAIL_HOST}" in lab.mx.read("/var/log/mail.log"), timeout=30)
        # A middlebox on the router strips STARTTLS from our EHLO answer.
        lab.rtr.spawn("strip", ["/usr/bin/python3", str(Path(__file__).with_name("strip_starttls.py")),
                                "--to", "198.18.0.10", "--lifetime", "120"])
        lab.rtr.run(["nft", "-f", "-"], input="""table inet strip {
  chain prerouting {
    type nat hook prerouting priority dstnat - 10; policy accept;
    iifname "wan0" tcp dport 25 redirect to :10025
  }
}
""")
        wait_for("middlebox", lambda: lab.tcp_open(lab.rtr, "127.0.0.1", 10025), timeout=10)
        before = lab.app.read("/var/log/mail.log").count("client=")
        send("two")
        log = wait_for("the enforcing sender defers", lambda: [
            line for line in lab.mx.read("/var/log/mail.log").splitlines()
            if "status=deferred" in line and "alice@example.test" in line], timeout=30)
        assert any("TLS is required" in line or "STARTTLS" in line for line in log), log  # type: ignore[union-attr]
        assert lab.app.read("/var/log/mail.log").count("client=") == before  # nothing got through
    finally:
        lab.rtr.run(["nft", "delete", "table", "inet", "strip"], check=False)
        lab.mx.run(["postconf", "-X", "smtp_tls_policy_maps", "smtp_tls_CAfile"], check=False)
        lab.mx.run(["postfix", "reload"], check=False)
        lab.write_settings(good)


@pytest.mark.parametrize("port,starttls", [(25, "smtp"), (587, "smtp"), (465, None), (993, None),
                                           (443, None)])
def test_testssl_finds_nothing_high_or_critical(acme_lab: MailLab, port: int, starttls: str | None) -> None:
    """Protocols, cipher suites, server preferences and known vulnerabilities (testssl.sh -p -s -P
    -U). Certificate trust is checked above against pebble's root; testssl.sh does not know that
    root, and pebble's certificates carry no OCSP/CRL address, so certificate findings are not
    what this test judges."""
    lab = acme_lab
    if port == 443:
        good = lab.app.read("/etc/appliance/settings.toml")
        lab.write_settings(good + '\n[web]\nenabled = true\n\n[firewall]\nweb = true\n')
        assert lab.appliance("apply").returncode == 0
    try:
        out = f"/var/tmp/testssl-{port}.json"
        argv = ["testssl", "--quiet", "--warnings", "off", "--color", "0", "--jsonfile", out,
                "--ip", "198.18.0.10", "-p", "-s", "-P", "-U"]
        argv += ["-t", starttls] if starttls else []
        name = "mta-sts.example.test" if port == 443 else MAIL_HOST  # the name nginx serves
        lab.lan2.run([*argv, f"{name}:{port}"], check=False, timeout=400)
        findings = json.loads(lab.lan2.path(out).read_text())
        assert findings, "testssl.sh produced no findings at all"
        bad = [f"{f['id']}: {f['finding']}" for f in findings
               if f.get("severity") in ("HIGH", "CRITICAL") and not f["id"].startswith("scanProblem")]
        assert not bad, bad
        assert any(f["id"] == "TLS1_2" for f in findings)  # the scan really reached the service
    finally:
        if port == 443:
            lab.write_settings(good)


def test_wkd_a_client_finds_the_users_public_key(acme_lab: MailLab) -> None:
    """gpg on a LAN client, trusting pebble's root, finds alice's key through the appliance's
    Web Key Directory (advanced method, https://openpgpkey.example.test/)."""
    from tests.unit.openpgp_keys import Device

    from .mail_lab import ALICE, APP_IP
    from .test_dns_records import publish

    lab = acme_lab
    good = lab.app.read("/etc/appliance/settings.toml")
    lab.write_settings(good + "\n[web]\nenabled = true\n")
    device = Device(lab.workdir / "alice-wkd-device")
    try:
        fpr = device.make(f"Alice <{ALICE}>")
        lab.app.write("/var/tmp/alice.asc", device.gpg("--armor", "--export", ALICE).stdout.decode())
        r = lab.appliance("key", "import", ALICE, "/var/tmp/alice.asc")
        assert r.returncode == 0, r.stdout + r.stderr
        assert lab.appliance("apply").returncode == 0
        r = lab.appliance("dns")
        publish(lab, [x for x in r.stdout.splitlines() if any(n in x for n in WEB_NAMES)])
        r = lab.appliance("cert", "issue", "--force")  # adds openpgpkey.example.test
        assert r.returncode == 0, r.stdout + r.stderr
        # The client: its own GnuPG home; the system trust store of its view gets pebble's root;
        # the LAN name resolves to the box (split horizon, as the home router's DNS would).
        root = pebble_root(lab)
        bundle = lab.lan2.read("/etc/ssl/certs/ca-certificates.crt")
        lab.lan2.write("/etc/ssl/certs/ca-certificates.crt", bundle + root)
        lab.lan2.write("/etc/hosts", f"127.0.0.1 localhost\n{APP_IP} {MAIL_HOST} openpgpkey.example.test\n")
        home = "/var/tmp/wkd-client"
        lab.lan2.run(["mkdir", "-m", "700", "-p", home])
        lab.lan2.write(f"{home}/dirmngr.conf", "standard-resolver\n")
        r = lab.lan2.run(["gpg", "--homedir", home, "--batch", "--auto-key-locate", "clear,wkd",
                          "--locate-external-keys", ALICE], check=False, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        listed = lab.lan2.run(["gpg", "--homedir", home, "--with-colons", "--list-keys", ALICE]).stdout
        assert fpr in listed
    finally:
        lab.lan2.run(["gpgconf", "--homedir", "/var/tmp/wkd-client", "--kill", "all"], check=False)
        lab.appliance("key", "remove", ALICE)
        lab.write_settings(good)
        device.close()  # its gpg-agent
