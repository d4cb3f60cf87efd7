"""`appliance cert ...`: issue, renew, deploy (certbot's hook), show, dns-hook."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from appliance.core import settings, system
from appliance.core.errors import EXIT_FAILED, EXIT_OK
from appliance.features.certs import certs


def cmd_cert(a: argparse.Namespace, env: Any) -> int:
    s = env.settings(Path(a.settings))
    root = system.Root("/")
    if a.action == "issue":
        certs.issue(s, a.settings, force=a.force)
        env.out(f"certificate for {s.hostname} issued; services reloaded by the deploy hook")
        return EXIT_OK
    if a.action == "renew":
        res = certs.renew(s, force=a.force)
        env.out(res.output)
        return EXIT_OK if res.returncode == 0 else EXIT_FAILED
    if a.action == "deploy":
        # certbot's deploy hook: point the services at the certificate and reload them even
        # when their configuration is unchanged (a renewal keeps the same paths).

        also = ("postfix", "dovecot") + (("nginx",) if s.web.enabled else ())
        report = env.converge(Path(a.settings), root, False, also_reload=also)
        env.out(f"deployed: reloaded {', '.join(report.reloaded)}")
        return EXIT_OK
    if a.action == "dns-hook":
        certs.dns_hook(s, a.step)
        return EXIT_OK
    # show
    paths = certs.active_paths(root, s.hostname)
    pem = root.read(paths.fullchain).content or b""
    if not pem:
        env.out("no certificate yet: run `appliance apply`")
        return EXIT_FAILED
    kind = "self-signed" if paths == certs.tls.self_signed_paths() else "issued by your ACME CA"
    env.out(f"{s.hostname}: {kind}, {certs.days_left(pem):.0f} days left ({paths.fullchain})")
    env.out(f"_25._tcp.{s.hostname}. IN TLSA 3 1 1 {certs.tlsa_311(pem)}")
    return EXIT_OK


def known_facts(s: settings.Settings, root: system.Root) -> Any:
    """What the records depend on, read from the box: public address, served certificate, DKIM
    keys. `appliance dns` and `appliance status` both compute the records from this."""
    from appliance.features.dns import records as dnsrecords
    from appliance.features.spam import dkim
    from appliance.features.upnp import client as upnp

    pem = root.read(certs.active_paths(root, s.hostname).fullchain).content
    keys = dkim.load(root)
    return dnsrecords.Known(public_ipv4=dnsrecords.public_ipv4(s, upnp.load_state(root)),
                            public_ipv6=s.dns.public_ipv6,
                            tlsa_311=certs.tlsa_311(pem) if pem else None,
                            dkim=tuple((sel, dkim.public_key_b64(root, sel))
                                       for sel in keys.published()))


def cmd_dns(a: argparse.Namespace, env: Any) -> int:
    import json

    from appliance.features.dns import records as dnsrecords

    s = env.settings(Path(a.settings))
    root = system.Root("/")
    known = known_facts(s, root)
    records = dnsrecords.expected(s, known)
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


def cmd_dkim(a: argparse.Namespace, env: Any) -> int:
    """`appliance dkim show|rollover|activate|forget` (appliance/dkim.py has the life of a key)."""
    from appliance.features.dns import records as dnsrecords
    from appliance.features.spam import dkim

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
    records = dnsrecords.expected(s, known_facts(s, root))
    env.out(f"; signing: {keys.active or 'no key yet'}; waiting: {keys.next or '-'}; "
            f"retired: {', '.join(keys.retired) or '-'}")
    env.out(dnsrecords.zone_text([r for r in records if "._domainkey." in r.name]).rstrip())
    return EXIT_OK


def register(sub: Any) -> None:
    k = sub.add_parser("dkim", help="DKIM key: show its record, roll it over")
    k.add_argument("action", choices=["show", "rollover", "activate", "forget"], nargs="?",
                   default="show")
    k.set_defaults(func=cmd_dkim)
    dn = sub.add_parser("dns", help="the DNS records your domain needs; --check compares the published ones")
    dn.add_argument("--check", action="store_true", help="query DNS and compare values")
    dn.add_argument("--json", action="store_true")
    dn.add_argument("--table", action="store_true", help="a table for registrar web forms")
    dn.add_argument("--push", action="store_true",
                    help="update your own DNS server (RFC 2136, TSIG; [dns] update_server)")
    dn.set_defaults(func=cmd_dns)
    c = sub.add_parser("cert", help="TLS certificate: issue, renew, show (TLSA), deploy hook")
    cs = c.add_subparsers(dest="action", required=True)
    for name in ("issue", "renew"):
        x = cs.add_parser(name)
        x.add_argument("--force", action="store_true", help="even if not due")
    cs.add_parser("deploy", help="certbot's deploy hook")
    cs.add_parser("show", help="which certificate is served, days left, its TLSA record")
    d = cs.add_parser("dns-hook", help="certbot's manual hook for dns-01 (RFC 2136)")
    d.add_argument("step", choices=["auth", "cleanup"])
    c.set_defaults(func=cmd_cert)
