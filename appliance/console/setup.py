"""Before the first visit: the setup code, the console's own certificate, and the note on the
card that tells a person where to go.

`appliance console setup` runs at every boot (appliance-console-setup.service; cheap when
nothing changed): while the box has no administrator it keeps a setup code and writes
appliance-setup.txt on the boot partition (the FAT one, which any computer reads) with the
box's LAN address, the console's address, the code and the certificate's fingerprint, so the
person can tell their box's certificate from an impostor's. The same lines go to the screen.
"""

from __future__ import annotations

import hashlib
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

from appliance.console import auth
from appliance.core import system

PORT = 8443
TLS_DIR = f"{auth.STATE_DIR}/tls"
CERT = f"{TLS_DIR}/cert.pem"
KEY = f"{TLS_DIR}/key.pem"
NOTE = "appliance-setup.txt"
DAYS = 825  # what Apple's clients accept for a certificate a person trusts by hand


@dataclass(frozen=True)
class Where:
    name: str  # the mDNS name, e.g. mail-appliance.local
    addresses: tuple[str, ...]  # the box's LAN addresses

    def urls(self) -> list[str]:
        hosts = [self.name] + [f"[{a}]" if ":" in a else a for a in self.addresses]
        return [f"https://{h}:{PORT}/" for h in hosts]


def where(root: system.Root) -> Where:
    from appliance.core import facts

    f = facts.gather()
    short = socket.gethostname().split(".", 1)[0] or "mail-appliance"
    return Where(f"{short}.local", tuple(a for a in f.lan_addresses if not a.startswith("fe80")))


def ensure_cert(root: system.Root, w: Where) -> bool:
    """A self-signed certificate for the console's names and addresses; made anew when they
    change (the box got another LAN address). True when one was made."""
    names = sorted({w.name, w.name.removesuffix(".local"), *w.addresses})
    marker = f"{TLS_DIR}/names"
    if root.read(marker).content == "\n".join(names).encode() and root.exists(CERT):
        return False
    san = ",".join(f"IP:{n}" if _is_ip(n) else f"DNS:{n}" for n in names)
    with tempfile.TemporaryDirectory() as tmp:
        key, crt = Path(tmp) / "key.pem", Path(tmp) / "crt.pem"
        system.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", str(DAYS),
                    "-subj", f"/CN={w.name}", "-addext", f"subjectAltName={san}",
                    "-keyout", str(key), "-out", str(crt)])
        root.makedirs(TLS_DIR, mode=0o755)
        root.write_atomic(KEY, system.FileState(key.read_bytes(), 0o600))
        root.write_atomic(CERT, system.FileState(crt.read_bytes(), 0o644))
        root.write_atomic(marker, system.FileState("\n".join(names).encode(), 0o644))
    return True


def fingerprint(pem: bytes) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    der = x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def note(w: Where, code: str | None, fp: str) -> str:
    lines = ["Your mail box is on your home network.", "",
             "Open one of these in a browser on a computer or phone at home:"]
    lines += [f"    {u}" for u in w.urls()]
    lines += ["", "The browser will warn that the certificate is not trusted: the box made it",
              "itself. It is your box's if the browser shows this SHA-256 fingerprint:",
              f"    {fp}", ""]
    if code:
        lines += [f"Setup code: {code}", "",
                  "The console asks for this code once, to know it is you and not someone else",
                  "on your network. After setup it opens nothing. Delete this file then."]
    else:
        lines += ["The box is set up: log in as admin, or with your mail address."]
    return "\n".join(lines) + "\n"


def run(root: system.Root, boot: Path | None) -> str:
    """Make what the first visit needs; return the note (also written to `boot`)."""
    w = where(root)
    ensure_cert(root, w)
    code = None if auth.admin_exists(root.host("/")) else auth.setup_code(root.host("/"))
    text = note(w, code, fingerprint(root.host(CERT).read_bytes()))
    if boot is not None and boot.is_dir():
        system.write_boot_note(boot / NOTE, text)
    return text


def _is_ip(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
