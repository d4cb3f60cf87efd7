"""`appliance dkim` (the life of a key: show its record, roll over, activate, forget) and
`appliance report-spam`."""

from __future__ import annotations

import argparse
from pathlib import Path

from appliance.core import system
from appliance.core.command import Env
from appliance.core.errors import EXIT_OK
from appliance.core.feature import Subcommands
from appliance.features.spam import arf, dkim


def cmd_dkim(a: argparse.Namespace, env: Env) -> int:
    """`appliance dkim show|rollover|activate|forget` (appliance/dkim.py has the life of a key)."""

    s = env.settings(Path(a.settings))
    root = system.Root("/")
    if a.action == "rollover":
        sel = dkim.rollover(root, s.spam.dkim_key_bits)
        env.out(f"made a new key, selector {sel}; mail is still signed with {dkim.load(root).active}.")
        env.out("Publish this record, wait an hour, then run `appliance dkim activate`:")
    elif a.action == "activate":
        sel = dkim.load(root).next or ""
        name = f"{sel}._domainkey.{s.domain}"
        import dns.resolver

        try:
            found = [b"".join(r.strings).decode() for r in dns.resolver.resolve(name, "TXT", lifetime=10)]
        except Exception:  # noqa: BLE001 - any lookup failure means "not visible yet"
            found = []
        values = [v.split("p=", 1)[1].replace(" ", "") for v in found if "p=" in v]
        keys = dkim.activate(root, values)

        env.converge(Path(a.settings), root, False)
        env.out(f"signing with {keys.active} now; keep {', '.join(keys.retired)} published for a "
                "week, then run `appliance dkim forget` and remove its record")
        return EXIT_OK
    elif a.action == "forget":
        gone = dkim.forget(root)
        env.out(f"forgot {', '.join(gone) or 'nothing'}; remove the matching _domainkey records")
        return EXIT_OK
    keys = dkim.load(root)
    env.out(f"; signing: {keys.active or 'no key yet'}; waiting: {keys.next or '-'}; "
            f"retired: {', '.join(keys.retired) or '-'}")
    # The same lines as `appliance dns` prints for these keys (zone-file syntax, one hour TTL).
    env.out("\n".join(f"{sel}._domainkey.{s.domain}.\t3600\tIN\tTXT\t"
                       f"{dkim.record_text(dkim.public_key_b64(root, sel))}"
                       for sel in keys.published()))
    return EXIT_OK



def register(sub: Subcommands) -> None:
    k = sub.add_parser("dkim", help="DKIM key: show its record, roll it over")
    k.add_argument("action", choices=["show", "rollover", "activate", "forget"], nargs="?",
                   default="show")
    k.set_defaults(func=cmd_dkim)
    arf.register(sub)
