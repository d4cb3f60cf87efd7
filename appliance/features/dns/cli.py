"""`appliance dns`: the records the domain needs, as a zone, a table or JSON; --check compares
them with what DNS serves; --push sends them to the user's own DNS server (RFC 2136)."""

from __future__ import annotations

import argparse
from pathlib import Path

from appliance.core import pipeline, system
from appliance.core.command import Env
from appliance.core.errors import EXIT_FAILED, EXIT_OK
from appliance.core.feature import Subcommands


def cmd_dns(a: argparse.Namespace, env: Env) -> int:
    import json

    from appliance.features.dns import records as dnsrecords

    s = env.settings(Path(a.settings))
    root = system.Root("/")
    known = pipeline.known(root, s, env.features)
    records = pipeline.dns_records(s, known, env.features)
    if a.push:
        if not (s.dns.update_server and s.dns.update_key_file):
            from appliance.core.errors import ApplianceError

            raise ApplianceError("--push needs [dns] update_server and update_key_file (a TSIG key "
                                 "your DNS server accepts RFC 2136 updates with); nothing was sent")
        secret = Path(s.dns.update_key_file).read_text().strip()
        skipped = dnsrecords.push(records, s.domain, s.dns.update_server, s.dns.update_key_name,
                                  secret)
        env.out(f"updated zone {s.domain} on {s.dns.update_server}: "
                f"{len(records) - len(skipped)} records as they should be")
        for x in skipped:
            env.out(f"not pushed: {x}")
        return EXIT_OK
    if a.check:
        findings = dnsrecords.check(records)
        bad = [f for f in findings if not f.ok]
        if a.json:
            env.out(json.dumps([f.as_dict() for f in findings], indent=2))
        else:
            for f in findings:
                env.out(f"{'ok  ' if f.ok else 'FAIL'} {f.record}: {f.detail}"
                        + (f"\n     fix: {f.fix}" if f.fix else ""))
            env.out(f"{len(findings) - len(bad)} of {len(findings)} records as they should be")
        return EXIT_FAILED if bad else EXIT_OK
    if a.json:
        env.out(json.dumps([{**r.__dict__} for r in records], indent=2))
    elif a.table:
        for r in records:
            env.out(f"{r.name:40} {r.rtype:6} {r.value}\n    {r.why}")
    else:
        env.out(f"; DNS records for {s.domain} (appliance dns). Publish them at your DNS provider.")
        if known.public_ipv4 is None:
            env.out("; no public address known: set [dns] public_ipv4 or run `appliance upnp renew`")
        env.out(dnsrecords.zone_text(records).rstrip())
    return EXIT_OK


def register(sub: Subcommands) -> None:
    dn = sub.add_parser("dns", help="the DNS records your domain needs; --check compares the published ones")
    dn.add_argument("--check", action="store_true", help="query DNS and compare values")
    dn.add_argument("--json", action="store_true")
    dn.add_argument("--table", action="store_true", help="a table for registrar web forms")
    dn.add_argument("--push", action="store_true",
                    help="update your own DNS server (RFC 2136, TSIG; [dns] update_server)")
    dn.set_defaults(func=cmd_dns)
