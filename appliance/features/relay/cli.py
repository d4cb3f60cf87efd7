"""`appliance relay up|down|status`: the WireGuard tunnel to the user's own relay VPS."""

from __future__ import annotations

import argparse

from appliance.core import system
from appliance.core.command import Env
from appliance.core.errors import EXIT_FAILED, EXIT_OK
from appliance.core.feature import Subcommands
from appliance.features.relay import tunnel as relay


def cmd_relay(a: argparse.Namespace, env: Env) -> int:
    root = system.Root("/")
    if a.action == "up":
        res = relay.up(root)
    elif a.action == "down":
        res = relay.down()
    else:
        params = relay._tunnel_params(root)
        if params is None:
            env.out("no relay tunnel configured")
            return EXIT_OK
        age = relay.handshake_age()
        env.out(f"tunnel {relay.WG_IF}: {params['box_address']} -> VPS {params['vps_address']}; "
                + ("no handshake yet: is the VPS reachable on its WireGuard port?" if age is None
                   else f"last handshake {age:.0f} s ago"))
        return EXIT_OK if age is not None and age < 180 else EXIT_FAILED
    if res.returncode != 0:
        env.err(f"appliance: relay {a.action}: `{' '.join(res.argv)}` failed: {res.output}")
        return EXIT_FAILED
    env.out(res.stdout)
    return EXIT_OK


def register(sub: Subcommands) -> None:
    rl = sub.add_parser("relay", help="the WireGuard tunnel to your own relay VPS")
    rl.add_argument("action", choices=["up", "down", "status"])
    rl.set_defaults(func=cmd_relay)
