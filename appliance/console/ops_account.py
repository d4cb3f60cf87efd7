"""The console's operations on app passwords (one per device, for IMAP and SMTP): a mail user
on her own, the administrator on anyone's. Each edit is `appliance user app-password ...`, as
on the command line; the new password comes back once, to be shown once, and is never kept.
"""

from __future__ import annotations

import json
from typing import Any

from appliance.console import auth
from appliance.console.broker import Agent, OpError, op
from appliance.console.ops import app_password_rows, form_address


def listing(a: Agent, address: str) -> list[dict[str, Any]]:
    user = next((u for u in a.settings().users if u.address == address), None)
    return app_password_rows(a, user) if user else []


def _name(args: dict[str, Any]) -> str:
    name = str(args.get("name", "")).strip()
    if not name:
        raise OpError('device name: empty; name the device it is for, e.g. "Phone"')
    return name


def _add(a: Agent, address: str, name: str) -> dict[str, Any]:
    got = json.loads(a.must("user", "app-password", "add", address, name, "--json"))
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
