"""The console on a lab box, started as its units would start it (no systemd here): the agent
(root), the web process (user appliance-console), and the console's own nginx on 8443."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from .mail_lab import APP_IP, MailLab
from .netlab import wait_for

REPO = Path(__file__).resolve().parents[2]
BOOT = "/var/lab-boot"  # the card's FAT partition, as the box sees it
CONSOLE = f"https://{APP_IP}:8443"
CONSOLE_CA = "/etc/appliance-console-ca.pem"  # the console's certificate, trusted by lan2
AGENT_PID = "/run/appliance-console-agent.pid"
WEB_PID = "/run/appliance-console-web.pid"
ENV = {"PYTHONPATH": str(REPO)}


def install(m: MailLab) -> str:
    """What provisioning installs, then `appliance console setup` (every boot); returns the
    note it printed."""
    app = m.app
    app.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
             "--shell", "/usr/sbin/nologin", "appliance-console"])
    app.write("/etc/nginx/appliance-console.conf",
              (REPO / "appliance/console/files/appliance-console-nginx.conf").read_text())
    app.run(["mkdir", "-p", BOOT])
    r = m.appliance("console", "setup", "--boot-dir", BOOT)
    assert r.returncode == 0, r.stderr
    return r.stdout


def start_agent_and_web(m: MailLab) -> None:
    """The two on-demand processes, as socket activation would start them."""
    py = "/usr/bin/python3"  # Debian's interpreter, as the units run it
    m.app.run([py, "-m", "appliance.console.agent", "--daemon", AGENT_PID,
               "--log", "/var/log/appliance-console.log"], env=ENV)
    m.app.track_pidfile("console-agent", AGENT_PID)
    m.app.run([py, "-m", "appliance.console.serve", "--daemon", WEB_PID,
               "--log", "/var/log/appliance-console-web.log"], env=ENV)
    m.app.track_pidfile("console-web", WEB_PID)


def start(m: MailLab) -> str:
    """Install and start the whole console; returns its certificate (PEM), which lan2 trusts."""
    install(m)
    start_agent_and_web(m)
    rc = m.app.start_forking("console-nginx", ["nginx", "-c", "/etc/nginx/appliance-console.conf"],
                             "/run/appliance-console-nginx.pid")
    assert rc == 0, (m.lab.logs / "app-console-nginx.out").read_text()
    wait_for("console on 8443", lambda: m.tcp_open(m.lan2, APP_IP, 8443))
    cert = m.app.read("/var/lib/appliance/console/tls/cert.pem")
    m.lan2.write(CONSOLE_CA, cert)
    return cert


def spki(pem: str) -> str:
    """What Chromium's --ignore-certificate-errors-spki-list takes: base64(SHA-256(SPKI))."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    key = x509.load_pem_x509_certificate(pem.encode()).public_key()
    der = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


# Python run on lan2: an HTTPS client of the console that verifies its certificate and keeps
# cookies by hand; prepend it to the code that uses `req`.
HTTP_CLIENT = f"""
import http.client, json, re, ssl, time, urllib.parse
ctx = ssl.create_default_context(cafile={CONSOLE_CA!r})
def req(method, path, form=None, cookies=None):
    c = http.client.HTTPSConnection({APP_IP!r}, 8443, context=ctx, timeout=60)
    h = {{"Cookie": "; ".join(f"{{k}}={{v}}" for k, v in (cookies or {{}}).items())}}
    body = None
    if form is not None:
        body = urllib.parse.urlencode(form)
        h["Content-Type"] = "application/x-www-form-urlencoded"
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    got = {{k.split("=", 1)[0]: k.split("=", 1)[1].split(";")[0]
           for k in r.headers.get_all("Set-Cookie") or []}}
    return r.status, r.read().decode(), got
def login(user, password):
    st, body, ck = req("GET", "/login")
    token = re.search(r'name="csrf" value="([^"]+)"', body).group(1)
    st, body, ck2 = req("POST", "/login", {{"csrf": token, "user": user, "password": password}}, ck)
    return st, ck2.get("__Host-console")
"""
