"""[certs]: the ACME CA, its challenge and the optional contact address."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from appliance.core.settings import Collector, Section, is_ip, split_address, table, valid_domain


@dataclass(frozen=True)
class CertsSection:
    """Let's Encrypt (or another ACME CA) through certbot."""

    acme_server: str = "https://acme-v02.api.letsencrypt.org/directory"
    email: str | None = None  # expiry notices from the CA; none by default
    challenge: str = "http-01"  # or "dns-01" (RFC 2136 update to the user's DNS server)
    acme_ca_bundle: str | None = None  # a private ACME CA's root (test labs)
    dns_server: str | None = None
    dns_zone: str | None = None  # default: the domain
    tsig_key_name: str = "acme-update"
    tsig_key_file: str | None = None  # the base64 HMAC-SHA256 secret alone


def _parse_certs(raw: Any, c: Collector) -> CertsSection:
    known = {"acme_server", "email", "challenge", "acme_ca_bundle", "dns_server", "dns_zone",
             "tsig_key_name", "tsig_key_file"}
    t = table(raw, "certs", known, c)
    d = CertsSection()
    server = t.get("acme_server", d.acme_server)
    if not isinstance(server, str) or not server.startswith("https://"):
        c.add("certs.acme_server", server, "is not an https URL",
              "leave it out for Let's Encrypt, or give your ACME CA's directory URL")
        server = d.acme_server
    email = t.get("email")
    if email is not None and (not isinstance(email, str) or split_address(email) is None):
        c.add("certs.email", email, "is not an e-mail address", "give an address, or leave it out")
        email = None
    challenge = t.get("challenge", "http-01")
    if challenge not in ("http-01", "dns-01"):
        c.add("certs.challenge", challenge, "is not a challenge type",
              'use "http-01" (port 80 opened only during the challenge) or "dns-01"')
        challenge = "http-01"
    paths = {}
    for key in ("acme_ca_bundle", "tsig_key_file"):
        v = t.get(key)
        if v is not None and (not isinstance(v, str) or not v.startswith("/")):
            c.add(f"certs.{key}", v, "is not an absolute path", "name the file, or leave it out")
            v = None
        paths[key] = v
    dns_server = t.get("dns_server")
    if dns_server is not None and not (isinstance(dns_server, str) and is_ip(dns_server)):
        c.add("certs.dns_server", dns_server, "is not an IP address",
              "give the address of the DNS server that accepts your RFC 2136 updates")
        dns_server = None
    if challenge == "dns-01" and (dns_server is None or paths["tsig_key_file"] is None):
        c.add("certs.challenge", challenge, "needs dns_server and tsig_key_file",
              "set both, or use http-01")
    zone = t.get("dns_zone")
    if zone is not None and (not isinstance(zone, str) or not valid_domain(zone)):
        c.add("certs.dns_zone", zone, "is not a zone name", "use your domain, or leave it out")
        zone = None
    key_name = t.get("tsig_key_name", d.tsig_key_name)
    if not isinstance(key_name, str) or not key_name:
        c.add("certs.tsig_key_name", key_name, "is not a key name", 'use e.g. "acme-update"')
        key_name = d.tsig_key_name
    return CertsSection(server, email, challenge, paths["acme_ca_bundle"], dns_server, zone,
                        key_name, paths["tsig_key_file"])


SECTION = Section("certs", ("certs",), lambda data, c: _parse_certs(data.get("certs", {}), c))
