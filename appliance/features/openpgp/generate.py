"""`appliance key generate USER OUTFILE`: for a user who has no key yet, on request only.

The key pair is made in a throwaway GnuPG home (on /run, a tmpfs, where there is one), the
secret key is written once to OUTFILE protected by the passphrase the admin types (never on
the command line), the public key goes into the box's keyring like an imported one, and the
throwaway home, with the only other copy of the secret key, is deleted before the command
returns. The box keeps no secret key.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from appliance.core import system
from appliance.features.openpgp.keyring import Entry, KeyError_, Keyring

MIN_PASSPHRASE = 12


def generate(ring: Keyring, address: str, passphrase: str, outfile: Path,
             gpg: str = "gpg") -> tuple[Entry, Path]:
    if len(passphrase) < MIN_PASSPHRASE or "\n" in passphrase:
        raise KeyError_(f"the passphrase is shorter than {MIN_PASSPHRASE} characters or has a "
                        "line break; choose a longer one (it protects the exported secret key)")
    if outfile.exists():
        raise KeyError_(f"{outfile} exists; name a new file (nothing is overwritten)")
    if not outfile.parent.is_dir():
        raise KeyError_(f"{outfile.parent} is not a directory; name a file in an existing one")
    base = "/run" if os.access("/run", os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="appliance-keygen.", dir=base) as tmp:
        opts = [gpg, "--homedir", tmp, "--batch", "--no-tty", "--quiet", "--pinentry-mode",
                "loopback", "--passphrase-fd", "0"]
        try:
            _gpg(opts + ["--quick-gen-key", f"<{address}>", "ed25519", "cert,sign", "2y"], passphrase)
            listing = _gpg([gpg, "--homedir", tmp, "--batch", "--with-colons", "--list-keys",
                            address], "")
            fpr = next(line.split(":")[9] for line in listing.decode().splitlines()
                       if line.startswith("fpr"))
            _gpg(opts + ["--quick-add-key", fpr, "cv25519", "encr", "2y"], passphrase)
            secret = _gpg(opts + ["--armor", "--export-secret-keys", fpr], passphrase)
            public = _gpg([gpg, "--homedir", tmp, "--batch", "--export", fpr], "")
        finally:
            system.run_bytes(["gpgconf", "--homedir", tmp, "--kill", "all"], timeout=30)
        if b"PRIVATE KEY BLOCK" not in secret:
            raise KeyError_("gpg exported no secret key; nothing was changed")
        uid, gid = (0, 0) if os.geteuid() == 0 else (os.getuid(), os.getgid())
        system.Root("/").write_atomic(outfile, system.FileState(secret, 0o600, uid, gid))
        entry = ring.import_key(address, public)
    return entry, outfile


def _gpg(argv: list[str], passphrase: str) -> bytes:
    res = system.run_bytes(argv, input=(passphrase + "\n").encode() if passphrase else b"",
                           timeout=120)
    if res.returncode != 0:
        raise KeyError_(f"gpg failed ({res.stderr.strip()[-200:]}); nothing was changed")
    return res.stdout
