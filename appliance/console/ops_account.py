"""The console's operations on a mail user's own account (her password, her OpenPGP key, her
devices and their app passwords, forwarding and the away message), and the administrator's on
anyone's app passwords. Each edit is the `appliance` verb the command line runs; a new app
password comes back once, to be shown once, and is never kept.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from appliance.console import auth
from appliance.console.broker import Agent, OpError, log, op
from appliance.console.ops import app_password_rows, form_address, form_password
from appliance.console.protocol import DENIED
from appliance.core import system


# --- a mail user's own account ------------------------------------------------------------------------
@op("my_password", "user")
def op_my_password(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> str:
    assert s is not None
    user = next((u for u in a.settings().users if u.address == s.who), None)
    if user is None or not auth.verify(str(args.get("current", "")), user.password_hash):
        time.sleep(auth.FAILED_DELAY_S)
        raise OpError("current password: wrong; nothing was changed", DENIED)
    out = a.must("user", "passwd", s.who, stdin=form_password(args) + "\n").strip()
    a.sessions.end_all(s.who)
    return out


@op("my_key", "user")
def op_my_key(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> Any:
    """How her mail is stored, and the key it is encrypted to (`appliance key show --json`)."""
    assert s is not None
    return json.loads(a.must("key", "show", s.who, "--json"))


@op("my_devices", "user")
def op_my_devices(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> dict[str, Any]:
    """What a mail app needs (her address is the user name; the password is hers to type)."""
    assert s is not None
    st = a.settings()
    return {"address": s.who, "host": st.hostname, "domain": st.domain, "dav": st.dav.enabled}


MAX_KEY_BYTES = 200_000  # a public key with many signatures is tens of KiB


@op("my_key_import", "user")
def op_my_key_import(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> str:
    """Her public key, uploaded (armored or binary, base64 on the wire) or pasted: `appliance
    key import`, from a root-only file that is gone afterwards."""
    import base64
    import binascii

    assert s is not None
    try:
        data = base64.b64decode(str(args.get("data_b64", "")), validate=True)
    except (binascii.Error, ValueError):
        raise OpError("key: not readable; choose the file again") from None
    if not data.strip():
        raise OpError("key: choose the file of your public key, or paste it")
    if len(data) > MAX_KEY_BYTES:
        raise OpError(f"key: larger than {MAX_KEY_BYTES // 1000} kB; export only your public "
                      "key (`gpg --export --armor you@example.org`)")
    path = a.root / auth.STATE_DIR.lstrip("/") / f"upload-{secrets.token_hex(8)}.key"
    system.write_private(path, data)
    try:
        return a.must("key", "import", s.who, str(path)).strip().splitlines()[0]
    finally:
        system.remove_path(path)


@op("my_key_remove", "user")
def op_my_key_remove(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> str:
    assert s is not None
    return a.must("key", "remove", s.who).strip().splitlines()[-1]



# --- app passwords ---------------------------------------------------------------------------------
def listing(a: Agent, address: str) -> list[dict[str, Any]]:
    user = next((u for u in a.settings().users if u.address == address), None)
    return app_password_rows(a, user) if user else []


def _name(args: dict[str, Any]) -> str:
    name = str(args.get("name", "")).strip()
    if not name:
        raise OpError('device name: empty; name the device it is for, e.g. "Phone"')
    return name


def _add(a: Agent, address: str, name: str) -> dict[str, Any]:
    got = json.loads(a.must("user", "app-password", "add", address, name, "--json", *a.edit_flags))
    return {"name": got["name"], "password": got["password"], "address": address}


def _del(a: Agent, address: str, name: str) -> str:
    return a.must("user", "app-password", "del", address, name).strip().splitlines()[0]


@op("my_app_passwords", "user")
def op_my_app_passwords(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> Any:
    assert s is not None
    return listing(a, s.who)


@op("my_app_password_add", "user")
def op_my_app_password_add(a: Agent, s: auth.Session | None, args: dict[str, Any],
                           token: str) -> dict[str, Any]:
    assert s is not None
    return _add(a, s.who, _name(args))


@op("my_app_password_del", "user")
def op_my_app_password_del(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> str:
    assert s is not None
    return _del(a, s.who, _name(args))


@op("app_password_add", "admin")
def op_app_password_add(a: Agent, s: auth.Session | None, args: dict[str, Any],
                        token: str) -> dict[str, Any]:
    return _add(a, form_address(a, args.get("address")), _name(args))


@op("app_password_del", "admin")
def op_app_password_del(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> str:
    return _del(a, form_address(a, args.get("address")), _name(args))


# --- forwarding and the away message ----------------------------------------------------------------
@op("my_rules", "user")
def op_my_rules(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> dict[str, Any]:
    """What the settings file says now (a hand edit shows at the next page load)."""
    assert s is not None
    user = next(u for u in a.settings().users if u.address == s.who)
    v = user.vacation
    return {"forward_to": list(user.forward_to), "forward_keep": user.forward_keep,
            "vacation": {"subject": v.subject, "message": v.message, "until": v.until,
                         "days": v.days} if v else None}


@op("my_forward", "user")
def op_my_forward(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> str:
    assert s is not None
    to = str(args.get("to", "")).strip()
    if not to:
        return a.must("user", "forward", s.who, "--off").strip().splitlines()[0]
    keep = [] if args.get("keep") else ["--no-keep"]
    return a.must("user", "forward", s.who, *keep, "--", *to.replace(",", " ").split()
                  ).strip().splitlines()[0]


@op("my_vacation", "user")
def op_my_vacation(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> str:
    assert s is not None
    if not args.get("on"):
        return a.must("user", "vacation", s.who, "--off").strip().splitlines()[0]
    subject = str(args.get("subject", "")).strip()
    if not subject:
        raise OpError("subject: empty; write the reply's subject, e.g. \"Away until Monday\"")
    until = str(args.get("until", "")).strip()
    argv = ["user", "vacation", s.who, f"--subject={subject}"] + ([f"--until={until}"] if until else [])
    return a.must(*argv, stdin=str(args.get("message", ""))).strip().splitlines()[0]


# --- a QR code that sets a phone up: a one-time link to a profile with its own app password ----------
LINK_TTL_S = 600


@op("my_device_link", "user")
def op_my_device_link(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> dict[str, Any]:
    """A link for the QR code: good for 10 minutes and one download. Nothing is made until the
    phone opens it, so a code nobody scans leaves no password behind."""
    assert s is not None
    name = _name(args)
    now = time.time()
    for old in [k for k, v in a.links.items() if v[2] < now]:
        del a.links[old]
    link = secrets.token_urlsafe(24)
    a.links[link] = (s.who, name, now + LINK_TTL_S)
    return {"link": link, "minutes": LINK_TTL_S // 60}


@op("device_link_use")
def op_device_link_use(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> dict[str, Any]:
    """The phone, without a session: the link is spent at once, then its app password is made."""
    got = a.links.pop(str(args.get("link", "")), None)
    if got is None or got[2] < time.time():
        raise OpError("this link was used already or is too old: make a new QR code", DENIED)
    who, name, _ = got
    st = a.settings()
    made = _add(a, who, name)
    log(f"device link used for {who} ({name}) from {args.get('_client', '?')}")
    return {"address": who, "host": st.hostname, "domain": st.domain, "password": made["password"],
            "dav": st.dav.enabled}
