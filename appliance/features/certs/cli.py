"""`appliance cert ...`: issue, renew, deploy (certbot's hook), show, dns-hook."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path

from appliance.core import pipeline, system, tls
from appliance.core.command import Env
from appliance.core.errors import EXIT_FAILED, EXIT_OK
from appliance.core.feature import Subcommands
from appliance.features.certs import certs


def cmd_cert(a: argparse.Namespace, env: Env) -> int:
    s = env.settings(Path(a.settings))
    root = system.Root("/")
    def exposed(ports: Sequence[int]) -> AbstractContextManager[None]:
        return pipeline.exposed(root, s, env.features, ports)

    if a.action == "issue":
        names = [n for f in env.features for n in f.cert_names(s)]
        certs.issue(s, a.settings, force=a.force, names=names, exposed=exposed)
        env.out(f"certificate for {s.hostname} issued; services reloaded by the deploy hook")
        return EXIT_OK
    if a.action == "renew":
        res = certs.renew(s, force=a.force, exposed=exposed)
        env.out(res.output)
        return EXIT_OK if res.returncode == 0 else EXIT_FAILED
    if a.action == "deploy":
        # certbot's deploy hook: point the services at the certificate and reload them even
        # when their configuration is unchanged (a renewal keeps the same paths).

        also = ("postfix", "dovecot") + (("nginx",) if s.web.enabled or s.dav.enabled else ())
        report = env.converge(Path(a.settings), root, False, also_reload=also)
        env.out(f"deployed: reloaded {', '.join(report.reloaded)}")
        return EXIT_OK
    if a.action == "dns-hook":
        certs.dns_hook(s, a.step)
        return EXIT_OK
    # show
    paths = tls.active_paths(root, s.hostname)
    pem = root.read(paths.fullchain).content or b""
    if not pem:
        env.out("no certificate yet: run `appliance apply`")
        return EXIT_FAILED
    kind = "self-signed" if paths == tls.self_signed_paths() else "issued by your ACME CA"
    env.out(f"{s.hostname}: {kind}, {certs.days_left(pem):.0f} days left ({paths.fullchain})")
    env.out(f"_25._tcp.{s.hostname}. IN TLSA 3 1 1 {tls.tlsa_311(pem)}")
    return EXIT_OK


def register(sub: Subcommands) -> None:
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
