"""DKIM keys for the user's domain: made on the box, never leave it, rolled over
without a gap in signing.

A key's life, each step a command the user runs when ready (the DNS is theirs to edit):

    (first apply)        active = A                       DNS: A
    `dkim rollover`      active = A, next = B             DNS: A, B   (publish B)
    `dkim activate`      active = B, retired = A          DNS: B, A   (only once B is visible)
    `dkim forget`        active = B                       DNS: B      (A may be removed now)

Signing switches to a key only after its record is published, so no signature ever names a
selector that receivers cannot find; the old record stays published while mail signed with it
may still be in flight or re-verified. Keys are RSA (2048 bits by default: RFC 8301 requires
verifiers to handle 1024-4096, and Ed25519 alone is not verified by enough receivers yet).

State lives in KEY_DIR/state.json; keys are KEY_DIR/<selector>.key, readable by rspamd only.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field

from appliance.core import schema, system
from appliance.core.errors import ApplianceError

KEY_DIR = "/var/lib/appliance/dkim"
STATE = f"{KEY_DIR}/state.json"
STATE_VERSION = 1  # the format of STATE; a change is a step in appliance.migrations
READER = "_rspamd"  # the signer's account (Debian's rspamd package)


class DkimError(ApplianceError):
    """A key step that cannot be taken now; the message says what to do instead."""


@dataclass(frozen=True)
class Keys:
    active: str | None = None  # selector that signs
    next: str | None = None  # made by `rollover`, published, not yet signing
    retired: tuple[str, ...] = field(default=())  # no longer signing, still published

    def published(self) -> list[str]:
        """Selectors whose records must be in DNS, the signing one first."""
        return [x for x in (self.active, self.next, *self.retired) if x]

    def as_dict(self) -> dict[str, object]:
        return {"active": self.active, "next": self.next, "retired": list(self.retired)}


def key_path(selector: str) -> str:
    return f"{KEY_DIR}/{selector}.key"


def new_selector(now: float, taken: list[str]) -> str:
    """Date-named, so a glance at DNS tells the key's age: 'm202611', then 'm202611b', ..."""
    base = time.strftime("m%Y%m", time.gmtime(now))
    for suffix in ["", *"bcdefghijklmnopqrstuvwxyz"]:
        if base + suffix not in taken:
            return base + suffix
    raise DkimError(f"more than 26 DKIM keys made in {base[1:]}; run `appliance dkim forget` first")


def load(root: system.Root) -> Keys:
    raw = root.read(STATE).content
    if not raw:
        return Keys()
    try:
        d = json.loads(raw)
        if isinstance(d, dict):  # a newer agent's file is refused, not misread
            schema.readable(d, STATE_VERSION, STATE)
        return Keys(d.get("active"), d.get("next"), tuple(d.get("retired", ())))
    except (ValueError, AttributeError, TypeError):
        raise DkimError(f"{STATE} is damaged; move it away and run `appliance apply` to make a new "
                        "key (then publish its record)") from None


def _save(root: system.Root, keys: Keys) -> None:
    data = schema.stamped(keys.as_dict(), STATE_VERSION)
    root.write_atomic(STATE, system.FileState(json.dumps(data, indent=1).encode(), 0o644))


def _make_key(root: system.Root, selector: str, bits: int) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    try:
        uid, gid = root.lookup_ids("root", READER)
    except (KeyError, LookupError):
        raise DkimError(f"rspamd's account {READER} does not exist: install rspamd "
                        "(`apt install rspamd`; provisioning does it)") from None
    root.makedirs(KEY_DIR.rpartition("/")[0])
    root.makedirs(KEY_DIR, mode=0o750, uid=uid, gid=gid)
    root.write_atomic(key_path(selector), system.FileState(pem, 0o640, uid, gid))


def public_key_b64(root: system.Root, selector: str) -> str:
    """The p= value of the selector's record: the DER SubjectPublicKeyInfo, base64."""
    from cryptography.hazmat.primitives import serialization

    pem = root.read(key_path(selector)).content
    if not pem:
        raise DkimError(f"the key for selector {selector} is missing ({key_path(selector)}); "
                        "run `appliance dkim rollover` to make a new one")
    key = serialization.load_pem_private_key(pem, password=None)
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


def record_text(p: str) -> str:
    """The TXT value in zone-file syntax: split into strings of at most 255 characters
    (RFC 1035 section 3.3.14; RFC 6376 section 3.6.2.2 joins them back)."""
    text = f"v=DKIM1; k=rsa; p={p}"
    return " ".join(f'"{text[i:i + 255]}"' for i in range(0, len(text), 255))


def ensure_active(root: system.Root, bits: int, now: float | None = None) -> bool:
    """First apply on a live box: make the signing key. Returns True if one was made.
    Never on an image being built: every box must have its own key."""
    keys = load(root)
    if keys.active and root.exists(key_path(keys.active)):
        return False
    selector = new_selector(now or time.time(), keys.published())
    _make_key(root, selector, bits)
    _save(root, Keys(selector, keys.next, keys.retired))
    return True


def rollover(root: system.Root, bits: int, now: float | None = None) -> str:
    keys = load(root)
    if not keys.active:
        raise DkimError("there is no signing key yet; run `appliance apply` first")
    if keys.next:
        raise DkimError(f"a new key ({keys.next}) is already waiting: publish its record, then "
                        "run `appliance dkim activate`")
    selector = new_selector(now or time.time(), keys.published())
    _make_key(root, selector, bits)
    _save(root, Keys(keys.active, selector, keys.retired))
    return selector


def activate(root: system.Root, published: list[str]) -> Keys:
    """Sign with the waiting key, given the p= values found in DNS for its selector."""
    keys = load(root)
    if not keys.next:
        raise DkimError("no new key is waiting; run `appliance dkim rollover` first")
    want = public_key_b64(root, keys.next)
    if want not in published:
        raise DkimError(f"the record {keys.next}._domainkey is not published with the new key yet "
                        "(check with `appliance dns --check`); signing stays with "
                        f"{keys.active}. Publish it, wait for the TTL, and run this again")
    new = Keys(keys.next, None, tuple(x for x in (keys.active, *keys.retired) if x))
    _save(root, new)
    return new


def forget(root: system.Root) -> list[str]:
    """Drop retired keys (their records may then be removed from DNS)."""
    keys = load(root)
    for selector in keys.retired:
        root.remove(key_path(selector))
    _save(root, Keys(keys.active, keys.next, ()))
    return list(keys.retired)
