"""The users' public keys on the box: a GnuPG home owned by the agent, and an index address -> key.

The box holds public keys only. A key is checked *before* it enters the keyring: it must hold
exactly one certificate, be neither expired nor revoked, have a usable encryption (sub)key,
and carry a (non-revoked) user ID with the user's address. Each refusal says why and what
to do. The index (`keys.json` in the home) is what the delivery proxy reads: it never lists
the keyring per message.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from appliance.core import schema, system
from appliance.core.errors import ApplianceError

DEFAULT_HOME = "/var/lib/appliance/gnupg"
INDEX = "keys.json"
# The index's format: {"schema": 2, "keys": {address: entry}}. Version 1 was the bare mapping
# (appliance.migrations turns it into version 2).
INDEX_VERSION = 2
# The proxy runs as Postfix's user (it sees what Postfix sees, nothing more): it reads the home.
READER_GROUP = "postfix"
# Options for every gpg run: no agent, no dialogs, no trust database decisions (the agent decides
# which key belongs to whom: the one imported for that address).
GPG_BASE = ["--no-options", "--batch", "--no-tty", "--quiet", "--no-autostart", "--no-permission-warning",
            "--trust-model", "always", "--no-random-seed-file", "--lock-never"]
_EMAIL = re.compile(r"<([^<>\s]+@[^<>\s]+)>\s*$")


class KeyError_(ApplianceError):
    """A key was refused, or a keyring operation failed; nothing was changed (exit 2)."""

    exit_code = 2


@dataclass(frozen=True)
class KeyInfo:
    fingerprint: str
    created: int
    expires: int | None  # Unix time; None: does not expire
    uids: tuple[str, ...]
    validity: str  # gpg's: "r" revoked, "e" expired, else usable as far as the key says
    can_encrypt: bool  # a usable encryption (sub)key: "E" in the primary's capabilities
    algo: str = ""
    # Expiry of the usable encryption subkeys (the latest of them); None: one never expires.
    encrypt_expires: int | None = None

    @property
    def effective_expires(self) -> int | None:
        """When encrypting to this key stops working: the primary's or the subkeys' expiry."""
        times = [t for t in (self.expires, self.encrypt_expires) if t is not None]
        return min(times) if times else None

    def emails(self) -> set[str]:
        out = set()
        for u in self.uids:
            m = _EMAIL.search(u)
            addr = m.group(1) if m else u.strip()
            if "@" in addr:
                out.add(addr.lower())
        return out


@dataclass(frozen=True)
class Entry:
    address: str
    fingerprint: str
    expires: int | None
    imported: int


def home() -> Path:
    return Path(os.environ.get("APPLIANCE_GNUPGHOME", DEFAULT_HOME))


def parse_colons(text: str) -> list[KeyInfo]:
    """gpg --with-colons key listing -> one KeyInfo per certificate (revoked UIDs left out)."""
    keys: list[KeyInfo] = []
    cur: dict | None = None
    for line in text.splitlines():
        f = line.split(":")
        if f[0] == "pub":
            if cur:
                keys.append(_info(cur))
            cur = {"fingerprint": "", "created": int(f[5] or 0),
                   "expires": int(f[6]) if f[6] else None, "uids": (), "validity": f[1],
                   "can_encrypt": "E" in f[11], "algo": f[16] if len(f) > 16 else ""}
        elif cur is None:
            continue
        elif f[0] == "fpr" and not cur["fingerprint"]:
            cur["fingerprint"] = f[9]
        elif f[0] == "uid" and f[1] != "r":
            cur["uids"] = cur["uids"] + (f[9].replace("\\x3a", ":"),)
        elif f[0] == "sub" and "e" in f[11] and f[1] not in ("r", "e"):
            subs = cur.setdefault("_enc", [])
            subs.append(int(f[6]) if f[6] else None)
    if cur:
        keys.append(_info(cur))
    return keys


def _info(cur: dict) -> KeyInfo:
    enc = cur.pop("_enc", [])
    cur["encrypt_expires"] = None if (not enc or None in enc) else max(enc)
    return KeyInfo(**cur)


def inspect(data: bytes, gpg: str = "gpg") -> list[KeyInfo]:
    """What a key file holds (armored or binary), read by gpg in an empty throwaway home."""
    with tempfile.TemporaryDirectory(prefix="appliance-gpg.") as tmp:
        res = system.run_bytes([gpg, "--homedir", tmp, *GPG_BASE[:6], "--with-colons",
                                "--fixed-list-mode", "--show-keys"], input=data, timeout=30)
    if res.returncode == 127:
        raise KeyError_(f"{gpg} is not installed; install the gnupg package")
    if res.returncode != 0 or not res.stdout:
        raise KeyError_("the file holds no OpenPGP public key (gpg: "
                        f"{res.stderr.strip() or 'nothing found'}); export it with "
                        "`gpg --export --armor ADDRESS > key.asc` and import that file")
    return parse_colons(res.stdout.decode(errors="replace"))


def check(address: str, keys: list[KeyInfo], now: float | None = None) -> KeyInfo:
    """The refusals of `appliance key import`, each with the fix. Returns the accepted key."""
    now = time.time() if now is None else now
    if len(keys) != 1:
        raise KeyError_(f"the file holds {len(keys)} keys; export only {address}'s key "
                        f"(`gpg --export --armor {address}`) and import that")
    k = keys[0]
    if k.validity == "r":
        raise KeyError_(f"key {k.fingerprint} is revoked; import the key that replaced it")
    exp = k.effective_expires
    if k.validity == "e" or (exp is not None and exp <= now):
        raise KeyError_(f"key {k.fingerprint} expired on {_date(exp)}; extend it on your "
                        "device (`gpg --quick-set-expire FPR 1y`, then for its "
                        "subkeys `gpg --quick-set-expire FPR 1y SUBKEY-FPR...`), export it again "
                        "and import that")
    if not k.can_encrypt:
        raise KeyError_(f"key {k.fingerprint} has no usable encryption subkey (it can only sign "
                        "or certify); add one on your device (`gpg --quick-add-key FPR cv25519 "
                        "encr`), export the key again and import that")
    if address.lower() not in k.emails():
        shown = ", ".join(sorted(k.emails())) or "no e-mail address"
        raise KeyError_(f"key {k.fingerprint} is not for {address} (its user IDs name {shown}); "
                        f"add a user ID with the address on your device (`gpg --quick-add-uid "
                        f"FPR {address}`) or import the right key")
    return k


def _date(ts: int | None) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts)) if ts else "an unknown date"


class Keyring:
    """The agent's GnuPG home, through python-gnupg (Debian's python3-gnupg)."""

    def __init__(self, path: Path | None = None, gpg: str = "gpg") -> None:
        self.path = path or home()
        self.gpgbinary = gpg

    def _gpg(self) -> Any:
        import gnupg  # Debian's python3-gnupg; imported here so `appliance check` needs none

        self._prepare()
        try:
            return gnupg.GPG(gpgbinary=self.gpgbinary, gnupghome=str(self.path),
                             options=GPG_BASE[4:])
        except (OSError, ValueError) as e:
            raise KeyError_(f"cannot run {self.gpgbinary}: {e}; install the gnupg package") from None

    def _prepare(self) -> None:
        root = system.Root("/")
        if not self.path.is_dir():
            uid, gid = _ids_or_root(READER_GROUP)
            root.makedirs(self.path, mode=0o750, uid=uid, gid=gid)

    # --- the index the proxy reads ---------------------------------------------------------------
    def index(self) -> dict[str, Entry]:
        return read_index(self.path)

    def _write_index(self, entries: dict[str, Entry]) -> None:
        keys = {a: asdict(e) for a, e in sorted(entries.items())}
        data = json.dumps({schema.STATE_KEY: INDEX_VERSION, "keys": keys}, indent=2) + "\n"
        uid, gid = _ids_or_root(READER_GROUP)
        system.Root("/").write_atomic(self.path / INDEX, system.FileState(data.encode(), 0o640, uid, gid))

    # --- operations -----------------------------------------------------------------------------
    def import_key(self, address: str, data: bytes) -> Entry:
        k = check(address, inspect(data, self.gpgbinary))
        g = self._gpg()
        old = self.index().get(address)
        res = g.import_keys(data)
        if k.fingerprint not in (res.fingerprints or []):
            raise KeyError_(f"gpg did not import key {k.fingerprint}: {res.stderr.strip()[-300:]}")
        self._group_readable()
        entries = self.index()
        entry = Entry(address, k.fingerprint, k.effective_expires, int(time.time()))
        entries[address] = entry
        self._write_index(entries)
        if old and old.fingerprint != k.fingerprint and not self._still_used(old.fingerprint, entries):
            g.delete_keys(old.fingerprint)
            self._group_readable()
        self.publish_wkd()
        return entry

    def remove(self, address: str) -> Entry:
        entries = self.index()
        entry = entries.pop(address, None)
        if entry is None:
            raise KeyError_(f"{address} has no key on this box; nothing was changed")
        self._write_index(entries)
        if not self._still_used(entry.fingerprint, entries):
            self._gpg().delete_keys(entry.fingerprint)
            self._group_readable()  # gpg rewrote the keyring 0600
        self.publish_wkd()
        return entry

    @property
    def wkd_dir(self) -> Path:
        """Served as https://openpgpkey.<domain>/.well-known/ and https://<domain>/.well-known/."""
        return self.path.parent / "wkd" / ".well-known"

    def publish_wkd(self) -> list[str]:
        """Write the WKD tree for every key in the index (only the user's own user ID, minimal),
        and remove files of keys no longer here. Returns the paths written."""
        from appliance.features.openpgp import wkd

        entries = self.index()
        by_domain: dict[str, dict[str, bytes]] = {}
        for address, e in entries.items():
            res = system.run_bytes(
                [self.gpgbinary, "--homedir", str(self.path), *GPG_BASE, "--export",
                 "--export-options", "export-minimal", "--export-filter",
                 f"keep-uid=mbox = {address}", e.fingerprint], timeout=30)
            if res.returncode == 0 and res.stdout:
                by_domain.setdefault(address.rsplit("@", 1)[1], {})[address] = res.stdout
        want: dict[str, bytes] = {}
        for domain, keys in by_domain.items():
            want.update(wkd.tree(domain, keys))
        root = system.Root("/")
        uid, gid = (os.getuid(), os.getgid()) if os.geteuid() != 0 else (0, 0)
        for rel, content in want.items():
            # Directories made by us, owned like the files (write_atomic would make them root's,
            # which fails without root: tests, an admin trying it out).
            root.makedirs((self.wkd_dir / rel).parent, mode=0o755, uid=uid, gid=gid)
            root.write_atomic(self.wkd_dir / rel, system.FileState(content, 0o644, uid, gid))
        if self.wkd_dir.is_dir():
            for p in self.wkd_dir.rglob("hu/*"):
                if str(p.relative_to(self.wkd_dir)) not in want:
                    system.remove_path(p)
        return sorted(want)

    def export(self, fingerprint: str, armor: bool = True) -> bytes:
        out = self._gpg().export_keys(fingerprint, armor=armor)
        return out.encode() if isinstance(out, str) else out

    def show(self, address: str) -> tuple[Entry, KeyInfo] | None:
        entry = self.index().get(address)
        if entry is None:
            return None
        keys = inspect(self.export(entry.fingerprint, armor=False), self.gpgbinary)
        return entry, keys[0]

    @staticmethod
    def _still_used(fpr: str, entries: dict[str, Entry]) -> bool:
        return any(e.fingerprint == fpr for e in entries.values())

    def _group_readable(self) -> None:
        """gpg creates its files 0600; the proxy (Postfix's group) must read the public keyring."""
        if os.geteuid() != 0:
            return
        _, gid = _ids_or_root(READER_GROUP)
        for name in ("pubring.kbx", "trustdb.gpg"):
            p = self.path / name
            if p.exists():
                system.chown_path(p, "root", _group_name(gid), 0o640)


def read_index(path: Path) -> dict[str, Entry]:
    try:
        raw = json.loads((path / INDEX).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise KeyError_(f"{path / INDEX} cannot be read ({e}); re-import the users' keys") from None
    # Version 1 too: the delivery proxy may restart with a new agent before the apply that
    # migrates the file has run, and must not stop delivering meanwhile.
    # A newer agent's index is a KeyError_ like a damaged one: the proxy defers, never misreads.
    if isinstance(raw, dict) and schema.state_version(raw) == 1 and "keys" not in raw:
        raw = {"keys": raw}
    else:
        try:
            schema.readable(raw, INDEX_VERSION, str(path / INDEX))
        except schema.SchemaError as e:
            raise KeyError_(str(e)) from None
    return {a: Entry(**e) for a, e in raw["keys"].items()}


def _ids_or_root(group: str) -> tuple[int, int]:
    import grp

    if os.geteuid() != 0:  # tests, or an admin trying it out: the home is simply theirs
        return os.getuid(), os.getgid()
    try:
        return 0, grp.getgrnam(group).gr_gid
    except KeyError:
        return 0, 0


def _group_name(gid: int) -> str:
    import grp

    return grp.getgrgid(gid).gr_name
