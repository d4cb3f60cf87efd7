"""CLI commands for the connection: UPnP mappings, the reachability verdict, the probe server."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from appliance.core import system
from appliance.core.command import Env
from appliance.core.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from appliance.core.feature import Subcommands
from appliance.features.upnp import client as upnp
from appliance.features.upnp import reachability

# No UPnP router answered: common at home (UPnP off, or ports forwarded by hand), so not a failure
# of the renewal unit (SuccessExitStatus=4 there, or the box would show "degraded" forever);
# `appliance status` and `appliance reachability` report what it means for reachability.
EXIT_NO_ROUTER = 4


def _cfg(a: argparse.Namespace, env: Env) -> upnp.UpnpSettings:
    s = env.settings(Path(a.settings))
    return upnp.UpnpSettings(s.upnp.enabled, s.upnp.lease_seconds, s.upnp.igd_url)


def _print_report(env: Env, rep: upnp.Report, as_json: bool) -> None:
    if as_json:
        env.out(json.dumps(rep.as_dict(), indent=2))
        return
    env.out(f"router: {rep.status or 'unknown'}; internet address (from the router): "
            f"{rep.external_ip or 'unknown'}")
    for o in rep.outcomes:
        env.out(f"  port {o.port}: {o.result}" + (f" - {o.detail}" if o.detail else ""))


def cmd_upnp(a: argparse.Namespace, env: Env) -> int:
    cfg = _cfg(a, env)
    if not cfg.enabled:
        env.err("appliance: UPnP is off in the settings ([upnp] enabled = false); nothing to do")
        return EXIT_OK
    root = system.Root("/")
    extra = [int(p) for p in (a.extra or [])] if hasattr(a, "extra") else []
    s = env.settings(Path(a.settings))
    if s.dav.enabled and s.dav.internet and 443 not in extra:
        extra.append(443)  # calendars and contacts from away from home
    if a.action == "watch":
        # Where there is no systemd timer: renew every `interval` seconds (default: half the
        # lease), so a router that forgot its mappings (a reboot) gets them back within one period.
        interval = a.interval or cfg.lease_seconds / 2
        deadline = time.monotonic() + a.lifetime if a.lifetime else None
        while deadline is None or time.monotonic() < deadline:
            try:
                rep = upnp.renew(upnp.Igd(cfg), cfg, extra)
                upnp.save_state(root, rep)
            except upnp.UpnpError as e:
                env.err(f"appliance: upnp: {e}")
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())) if deadline else interval)
        return EXIT_OK
    try:
        igd = upnp.Igd(cfg)
    except upnp.UpnpError as e:
        env.err(f"appliance: upnp: {e}. Forward TCP {', '.join(map(str, upnp.MAIL_PORTS))} by hand "
                "in the router, or see `appliance reachability`")
        return EXIT_NO_ROUTER
    if a.action == "renew":
        rep = upnp.renew(igd, cfg, extra)
    elif a.action == "remove":
        rep = upnp.remove(igd, [int(p) for p in a.extra] if a.extra else None)
    else:  # status
        rep = upnp.Report(igd.external_ip(), igd.status())
        for p in upnp.wanted_ports(upnp.WEB_PORTS):
            m = igd.mapping(p)
            result = "absent" if m is None else (
                "ours" if m.internal_client == igd.lan_ip else f"another host's ({m.internal_client})")
            rep.outcomes.append(upnp.Outcome(p, result, f"lease {m.lease} s" if m else ""))
        _print_report(env, rep, a.json)
        return EXIT_OK
    upnp.save_state(root, rep)
    _print_report(env, rep, a.json)
    return EXIT_OK if rep.ok else EXIT_FAILED


def cmd_stop(a: argparse.Namespace, env: Env) -> int:
    """What the box does on shutdown: take its port mappings off the router."""
    cfg = _cfg(a, env)
    if not cfg.enabled:
        return EXIT_OK
    try:
        rep = upnp.remove(upnp.Igd(cfg))
    except upnp.UpnpError as e:
        env.err(f"appliance: stop: {e}; no mappings removed")
        return EXIT_FAILED
    upnp.save_state(system.Root("/"), rep)
    _print_report(env, rep, False)
    return EXIT_OK if rep.ok else EXIT_FAILED


def cmd_reachability(a: argparse.Namespace, env: Env) -> int:
    s = env.settings(Path(a.settings))
    v = reachability.evaluate(reachability.collect(s))
    # What other features say the user should know (mail through a relay: who sees it).
    v.reasons += [note for f in env.features if (note := f.notice(s))]
    if a.json:
        env.out(json.dumps(v.as_dict(), indent=2))
    else:
        env.out(f"verdict: {v.verdict}")
        for r in v.reasons:
            env.out(f"  - {r}")
        env.out(f"next step: {v.next_step}")
    return EXIT_OK if v.verdict == "direct" else EXIT_FAILED


def cmd_probe_server(a: argparse.Namespace, env: Env) -> int:
    try:
        token = Path(a.token_file).read_text().strip()
    except OSError as e:
        env.err(f"appliance: probe-server: {a.token_file}: {e.strerror}; create it with a random token")
        return EXIT_USAGE
    reachability.serve_probe(a.listen, a.port, token, a.lifetime)
    return EXIT_OK


def register(sub: Subcommands) -> None:
    u = sub.add_parser("upnp", help="port mappings on the home router (UPnP)")
    us = u.add_subparsers(dest="action", required=True)
    for name, text in (("renew", "map the mail ports, or renew their leases"),
                       ("remove", "remove this box's mappings"), ("status", "show the mappings"),
                       ("watch", "renew periodically (where there is no systemd timer)")):
        x = us.add_parser(name, help=text)
        x.add_argument("--json", action="store_true")
        if name in ("renew", "remove", "watch"):
            x.add_argument("--extra", action="append", help="also 80 or 443 (repeatable)")
        if name == "watch":
            x.add_argument("--interval", type=float, help="seconds (default: half the lease)")
            x.add_argument("--lifetime", type=float, help="stop after this many seconds")
    u.set_defaults(func=cmd_upnp)
    st = sub.add_parser("stop", help="before shutdown: remove this box's router mappings")
    st.set_defaults(func=cmd_stop)
    r = sub.add_parser("reachability", help="can the internet reach this box? the verdict and next step")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_reachability)
    p = sub.add_parser("probe-server", help="run on a host you own outside your home: checks inbound ports")
    p.add_argument("--listen", default="0.0.0.0")
    p.add_argument("--port", type=int, default=8025)
    p.add_argument("--token-file", required=True)
    p.add_argument("--lifetime", type=float, help="stop after this many seconds")
    p.set_defaults(func=cmd_probe_server)
