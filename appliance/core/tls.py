"""TLS parameters in one place, and the first-boot self-signed certificate.

Each choice cites the guideline it follows. Postfix here is 3.7 (Debian 12): it has no
`tls_ffdhe_auto_groups` (3.8+), so none is set.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

from appliance.core import system

# Mozilla server-side TLS guidelines v5.7/6.0 "intermediate", without the DHE suites:
# NCSC-NL "IT Security Guidelines for TLS" (2025) rates DHE as phase-out, and dropping them
# spares the box a DH parameter file. TLS 1.3 suites are not configurable here and are all fine.
CIPHERS_INTERMEDIATE = ":".join([
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
])
# Mozilla intermediate: TLS 1.2 is the floor for clients we serve (IMAP, submission).
MIN_PROTOCOL = "TLSv1.2"
# Port 25 is opportunistic (RFC 7435), but TLS 1.2 is its floor too, said here rather than
# left to the system: RFC 8996 retires TLS 1.0 and 1.1, Debian's OpenSSL (security level 2)
# refuses them underneath Postfix anyway, and offering them would mean lowering that level for
# every peer. A sender that speaks only 1.0 or 1.1 gets no TLS session here; most such senders
# then retry without TLS, as an opportunistic client does.
SMTPD_OPPORTUNISTIC_PROTOCOLS = f">={MIN_PROTOCOL}"

SELF_SIGNED_DIR = "/var/lib/appliance/tls"
SELF_SIGNED_DAYS = 825  # the CA/Browser Forum limit that clients such as Apple's enforce


@dataclass(frozen=True)
class CertPaths:
    fullchain: str
    privkey: str


def self_signed_paths() -> CertPaths:
    return CertPaths(f"{SELF_SIGNED_DIR}/fullchain.pem", f"{SELF_SIGNED_DIR}/privkey.pem")


def ensure_self_signed(root: system.Root, hostname: str) -> bool:
    """Create a self-signed ECDSA P-256 certificate for `hostname` unless one for that name
    exists. Returns True if one was made. Until a real certificate exists (certbot), this lets
    STARTTLS and IMAPS work from the first boot; clients will warn, which the status explains."""
    paths = self_signed_paths()
    marker = f"{SELF_SIGNED_DIR}/hostname"
    have = root.read(marker).content
    if have == hostname.encode() and root.exists(paths.fullchain) and root.exists(paths.privkey):
        return False
    with tempfile.TemporaryDirectory() as tmp:
        key, crt = Path(tmp) / "key.pem", Path(tmp) / "crt.pem"
        system.run([
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-days", str(SELF_SIGNED_DAYS), "-subj", f"/CN={hostname}",
            "-addext", f"subjectAltName=DNS:{hostname}",
            "-keyout", str(key), "-out", str(crt),
        ])
        root.makedirs(SELF_SIGNED_DIR, mode=0o755)
        # Key first, then the certificate, then the marker: a crash never pairs a cert with
        # the wrong key in a way we would not redo.
        root.write_atomic(paths.privkey, system.FileState(key.read_bytes(), 0o600))
        root.write_atomic(paths.fullchain, system.FileState(crt.read_bytes(), 0o644))
        root.write_atomic(marker, system.FileState(hostname.encode(), 0o644))
    return True


# certbot keeps the CA's certificate here, once issued.
LIVE = "/etc/letsencrypt/live"


def live_paths(root: system.Root, hostname: str) -> CertPaths | None:
    d = f"{LIVE}/{hostname}"
    if root.exists(f"{d}/fullchain.pem") and root.exists(f"{d}/privkey.pem"):
        return CertPaths(f"{d}/fullchain.pem", f"{d}/privkey.pem")
    return None


def active_paths(root: system.Root, hostname: str) -> CertPaths:
    """The certificate the services should use: the CA's once issued, else the self-signed one."""
    return live_paths(root, hostname) or self_signed_paths()


def tlsa_311(cert_pem: bytes) -> str:
    """DANE-EE(3) SPKI(1) SHA-256(1): the hash of the public key, which --reuse-key keeps stable."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificate(cert_pem)
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()
