"""Certificates from Let's Encrypt (or any ACME CA) through Debian's certbot.

- http-01: certbot's standalone server answers on port 80, which is opened (the router's UPnP
  mapping, the box's firewall) only for the challenge and closed afterwards, whatever happens.
- dns-01: for users who cannot open port 80: the challenge TXT record is written with an
  RFC 2136 update (TSIG-signed, dnspython) to the user's DNS server, and removed afterwards.
- The private key is kept across renewals (`--reuse-key`), so a DANE `3 1 1` TLSA record stays
  valid; `appliance cert show` prints it.
- certbot's deploy hook calls `appliance cert deploy`: the agent points Postfix and Dovecot at
  the certificate (first issue) and reloads them (every renewal). Renewal runs from certbot's
  own timer (Debian's certbot.timer), which keeps the hook in the renewal configuration.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from appliance.core import system
from appliance.core.errors import ApplianceError
from appliance.core.settings import Settings

# Ports -> a block during which they reach the box from the internet.
Exposed = Callable[[Sequence[int]], AbstractContextManager[object]]


class CertError(ApplianceError):
    pass


def days_left(cert_pem: bytes, now: float | None = None) -> float:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(cert_pem)
    return (cert.not_valid_after.timestamp() - (now or time.time())) / 86400


def _agent_command(settings_path: str, *args: str) -> str:
    """How certbot calls back into the agent (deploy and DNS hooks)."""
    return " ".join([sys.executable, "-m", "appliance.cli", "--settings", settings_path, *args])


def _env(s: Settings) -> dict[str, str]:
    env = dict(os.environ)
    if s.certs.acme_ca_bundle:  # a private ACME CA (the test lab's pebble)
        env["REQUESTS_CA_BUNDLE"] = s.certs.acme_ca_bundle
    return env


def certbot_argv(s: Settings, settings_path: str, force: bool = False,
                 names: Sequence[str] = ()) -> list[str]:
    argv = [
        "certbot", "certonly", "--non-interactive", "--agree-tos",
        "--server", s.certs.acme_server, "--cert-name", s.hostname, "-d", s.hostname,
        *[arg for name in names for arg in ("-d", name)],
        "--key-type", "ecdsa", "--reuse-key",
        "--deploy-hook", _agent_command(settings_path, "cert", "deploy"),
    ]
    argv += ["-m", s.certs.email] if s.certs.email else ["--register-unsafely-without-email"]
    if force:
        argv.append("--force-renewal")
    if s.certs.challenge == "http-01":
        argv += ["--standalone", "--preferred-challenges", "http"]
    else:
        argv += ["--manual", "--preferred-challenges", "dns",
                 "--manual-auth-hook", _agent_command(settings_path, "cert", "dns-hook", "auth"),
                 "--manual-cleanup-hook", _agent_command(settings_path, "cert", "dns-hook", "cleanup")]
    return argv


def issue(s: Settings, settings_path: str, force: bool = False, names: Sequence[str] = (),
          exposed: Exposed = nullcontext) -> system.Result:
    """Obtain (or re-obtain) the certificate for the mail host name and `names`. For http-01,
    `exposed` makes port 80 reachable from the internet while certbot runs (the box's
    firewall and the router's mapping: `pipeline.exposed`)."""
    try:
        with exposed([80]) if s.certs.challenge == "http-01" else nullcontext():
            return system.run(certbot_argv(s, settings_path, force, names), env=_env(s), timeout=300)
    except system.CommandError as e:
        out = e.result.output
        raise CertError(f"certbot could not get a certificate for {s.hostname}:\n{out[-1500:]}\n"
                        "Check that the name's A record points at your public address and that "
                        "port 80 reaches this box (appliance reachability), or use dns-01.") from None


def renew(s: Settings, force: bool = False, exposed: Exposed = nullcontext) -> system.Result:
    argv = ["certbot", "renew", "--non-interactive", "--no-random-sleep-on-renew",
            "--cert-name", s.hostname]
    if force:
        argv.append("--force-renewal")
    with exposed([80]) if s.certs.challenge == "http-01" else nullcontext():
        return system.run(argv, env=_env(s), timeout=300, check=False)


def dns_hook(s: Settings, action: str) -> None:
    """certbot's manual auth/cleanup hook: add or remove the _acme-challenge TXT record."""
    import dns.query
    import dns.rcode
    import dns.tsigkeyring
    import dns.update

    if not s.certs.dns_server or not s.certs.tsig_key_file:
        raise CertError("dns-01 needs [certs] dns_server and tsig_key_file")
    secret = Path(s.certs.tsig_key_file).read_text().strip()
    keyring = dns.tsigkeyring.from_text({s.certs.tsig_key_name: ("hmac-sha256", secret)})
    domain = os.environ["CERTBOT_DOMAIN"].removeprefix("*.")
    zone = s.certs.dns_zone or s.domain
    name = f"_acme-challenge.{domain}."
    update = dns.update.Update(zone, keyring=keyring, keyalgorithm="hmac-sha256")
    if action == "auth":
        update.add(name, 30, "TXT", f'"{os.environ["CERTBOT_VALIDATION"]}"')
    else:
        update.delete(name, "TXT")
    answer = dns.query.tcp(update, s.certs.dns_server, timeout=10)
    if answer.rcode() != 0:
        raise CertError(f"the DNS server {s.certs.dns_server} refused the update of {name}: "
                        f"{dns.rcode.to_text(answer.rcode())}; check the TSIG key and the server's ACL")
