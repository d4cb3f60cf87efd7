"""Throwaway OpenPGP keys made with the real gpg in a temporary home (a user's "device")."""

from __future__ import annotations

import subprocess
from pathlib import Path

BASE = ["--batch", "--no-tty", "--quiet", "--passphrase", "", "--pinentry-mode", "loopback"]


class Device:
    """A user's own GnuPG home: makes keys, exports them, decrypts what the box stored."""

    def __init__(self, home: Path) -> None:
        self.home = home
        home.mkdir(mode=0o700, parents=True, exist_ok=True)

    def gpg(self, *args: str, input: bytes = b"", check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["gpg", "--homedir", str(self.home), *BASE, *args], input=input,
                              capture_output=True, check=check, timeout=60)

    def fpr(self, uid: str) -> str:
        out = self.gpg("--with-colons", "--list-keys", uid).stdout.decode()
        return next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr"))

    def make(self, uid: str, *, encrypt: bool = True, expire: str = "1y",
             faked_time: str | None = None) -> str:
        fake = ["--faked-system-time", faked_time] if faked_time else []
        self.gpg(*fake, "--quick-gen-key", uid, "ed25519", "cert,sign", expire)
        fpr = self.fpr(uid)
        if encrypt:
            self.gpg(*fake, "--quick-add-key", fpr, "cv25519", "encr", expire)
        return fpr

    def set_expire(self, fpr: str, expire: str) -> None:
        """The primary key and every subkey, named by fingerprint: gpg's "*" skips expired ones."""
        self.gpg("--quick-set-expire", fpr, expire)
        out = self.gpg("--with-colons", "--list-keys", fpr).stdout.decode().splitlines()
        subs = [out[i + 1].split(":")[9] for i, line in enumerate(out) if line.startswith("sub")]
        self.gpg("--quick-set-expire", fpr, expire, *subs)

    def revoke(self, fpr: str) -> None:
        cert = (self.home / "openpgp-revocs.d" / f"{fpr}.rev").read_bytes()
        self.gpg("--import", input=cert.replace(b":-----BEGIN", b"-----BEGIN"))

    def export(self, *uids: str, armor: bool = True) -> bytes:
        return self.gpg(*(["--armor"] if armor else []), "--export", *uids).stdout

    def export_secret(self, uid: str) -> bytes:
        return self.gpg("--armor", "--export-secret-keys", uid).stdout

    def decrypt(self, data: bytes) -> bytes:
        return self.gpg("--decrypt", input=data).stdout

    def close(self) -> None:
        """Stop the gpg-agent that key generation started for this home (it would outlive us)."""
        subprocess.run(["gpgconf", "--homedir", str(self.home), "--kill", "all"],
                       capture_output=True, check=False, timeout=30)
