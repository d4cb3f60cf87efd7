"""The console's operations on the box's keys: the TLS certificate (`appliance cert`) and the
DKIM key's life (`appliance dkim`): show them, get a certificate now (a job with progress:
certbot may take a minute), roll the DKIM key over, activate the new one, forget old ones."""

from __future__ import annotations

from typing import Any

from appliance.console import auth
from appliance.console.broker import Agent, OpError, op

DKIM_ACTIONS = ("rollover", "activate", "forget")


@op("keys", "admin")
def op_keys(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> dict[str, Any]:
    """What `appliance cert show` and `appliance dkim show` say (no certificate yet is an
    answer: exit 1 with its sentence)."""
    _, cert, cert_err = a.appliance("cert", "show")
    dkim = a.must("dkim", "show")
    first, _, records = dkim.partition("\n")
    state = dict(part.strip().split(": ", 1) for part in first.lstrip("; ").split(";") if ": " in part)
    return {"cert": (cert or cert_err).strip().splitlines(), "dkim": state,
            "dkim_records": [r for r in records.splitlines() if r.strip()]}


@op("cert_now", "admin")
def op_cert_now(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> dict[str, Any]:
    assert s is not None
    return {"job": a.start_job(s.who, [("Get a certificate", ("cert", "issue", "--force"), True)],
                               kind="certificate")}


@op("dkim", "admin")
def op_dkim(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> str:
    action = str(args.get("action", ""))
    if action not in DKIM_ACTIONS:
        raise OpError(f"DKIM: no such step {action!r}")
    code, out, err = a.appliance("dkim", action)
    if code != 0:  # "not published yet" is an answer to show on the page, not a breakdown
        raise OpError((err or out).strip().removeprefix("appliance: ") or f"dkim {action}: exit {code}")
    return out.strip()
