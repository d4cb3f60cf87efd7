"""`appliance key import USER FILE | show USER | remove USER | list`: the users' public keys.

Every refusal names the reason and the fix and exits 2; nothing is changed then.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from appliance.core import mail_rules, settings
from appliance.core.command import Env
from appliance.core.errors import EXIT_OK
from appliance.core.feature import Subcommands
from appliance.features.openpgp.keyring import KeyError_, Keyring


def register(sub: Subcommands) -> None:
    k = sub.add_parser("key", help="users' OpenPGP public keys: mail to them is stored encrypted")
    ks = k.add_subparsers(dest="action", required=True)
    x = ks.add_parser("import", help="import USER's public key (armored or binary) from FILE")
    x.add_argument("user")
    x.add_argument("file")
    for name in ("show", "remove"):
        x = ks.add_parser(name)
        x.add_argument("user")
        x.add_argument("--json", action="store_true")
    x = ks.add_parser("generate", help="make a key pair for USER (no key yet): the secret key "
                      "goes to OUTFILE, passphrase-protected, and is then deleted from the box")
    x.add_argument("user")
    x.add_argument("outfile")
    x = ks.add_parser("list", help="every user: encrypted, plaintext, or waiting for a key")
    x.add_argument("--json", action="store_true")
    k.set_defaults(func=cmd_key)


def storage(user: settings.User, fingerprint: str | None, enabled: bool = True) -> str:
    """What happens to the user's incoming mail: the line `key show|list` print."""
    if not enabled:
        return "stored in plaintext: OpenPGP is off ([openpgp] enabled = false)"
    if fingerprint:
        return f"stored encrypted (PGP/MIME) to key {fingerprint}"
    if user.encrypt == "required":
        return 'no key: mail waits in the queue (451) until one is imported (encrypt = "required")'
    return 'no key: stored in plaintext (encrypt = "when-key"; import a key to encrypt)'


def _user(s: settings.Settings, address: str) -> settings.User:
    user, owner = mail_rules.who(s.users, address)
    if user is not None:
        return user
    if owner:
        raise KeyError_(f"{address} is an alias of {owner}; keys belong to users: use "
                        f"`appliance key ... {owner}`")
    raise KeyError_(f"{address} is not a user of this box; see `appliance user list`")


def _date(ts: int | None) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts)) if ts else "never"


def cmd_key(a: argparse.Namespace, env: Env) -> int:
    s = env.settings(Path(a.settings))
    ring = Keyring()
    on = s.openpgp.enabled
    if a.action == "list":
        index = ring.index()
        rows = [{"user": u.address, "encrypt": u.encrypt,
                 "fingerprint": index[u.address].fingerprint if u.address in index else None,
                 "storage": storage(u, index[u.address].fingerprint if u.address in index else None,
                                    on)}
                for u in s.users]
        if a.json:
            env.out(json.dumps(rows, indent=2))
        for r in rows if not a.json else []:
            env.out(f"{r['user']}: {r['storage']}")
        return EXIT_OK
    user = _user(s, a.user)
    if a.action in ("import", "generate") and not on:
        # A key promises encrypted storage, which the box does not give while OpenPGP is off.
        raise KeyError_(f"OpenPGP is off ([openpgp] enabled = false): mail to {user.address} "
                        "would still be stored in plaintext; set enabled = true, run "
                        "`appliance apply`, then import the key")
    if a.action == "import":
        try:
            data = Path(a.file).read_bytes()
        except OSError as e:
            raise KeyError_(f"{a.file}: cannot be read ({e.strerror}); give the path of the "
                            "exported public key") from None
        if b"PRIVATE KEY BLOCK" in data:
            raise KeyError_(f"{a.file} holds a secret key; private keys stay on your own devices. "
                            f"Export the public key (`gpg --export --armor {user.address}`)")
        new = ring.import_key(user.address, data)
        env.out(f"imported key {new.fingerprint} for {user.address} (expires {_date(new.expires)})")
        env.out(f"{user.address}: {storage(user, new.fingerprint)}")
        return EXIT_OK
    if a.action == "generate":
        from appliance.features.openpgp.generate import generate

        if user.address in ring.index():
            raise KeyError_(f"{user.address} has a key already; `appliance key remove "
                            f"{user.address}` first if you really want a new one")
        env.err("Passphrase for the exported secret key (at least 12 characters):")
        made, out = generate(ring, user.address, env.read_password(), Path(a.outfile))
        env.out(f"generated key {made.fingerprint} for {user.address} (expires {_date(made.expires)})")
        env.out(f"the secret key was written once to {out} (mode 0600), protected by your "
                "passphrase; import it on the user's devices, then delete that file")
        env.out("the box keeps no secret key: it was deleted with its temporary GnuPG home")
        env.out(f"{user.address}: {storage(user, made.fingerprint)}")
        return EXIT_OK
    if a.action == "remove":
        gone = ring.remove(user.address)
        env.out(f"removed key {gone.fingerprint} of {user.address}")
        env.out(f"{user.address}: {storage(user, None, on)}")
        return EXIT_OK
    shown = ring.show(user.address)
    if a.json:
        entry, info = shown if shown else (None, None)
        env.out(json.dumps({
            "user": user.address, "encrypt": user.encrypt,
            "fingerprint": entry.fingerprint if entry else None,
            "expires": info.effective_expires if info else None,
            "uids": list(info.uids) if info else [],
            "storage": storage(user, entry.fingerprint if entry else None, on)}, indent=2))
        return EXIT_OK
    if shown is None:
        env.out(f"{user.address}: {storage(user, None, on)}")
        return EXIT_OK
    entry, info = shown
    env.out(f"{user.address}: {storage(user, entry.fingerprint, on)}")
    env.out(f"  fingerprint {info.fingerprint}")
    env.out(f"  created {_date(info.created)}, expires {_date(info.effective_expires)}"
            + ("  (EXPIRED: mail waits in the queue; import the extended key)"
               if info.validity == "e" or (info.effective_expires or 1e12) < time.time() else ""))
    for uid in info.uids:
        env.out(f"  uid {uid}")
    return EXIT_OK
