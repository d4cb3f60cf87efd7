"""[certs]: the ACME CA, its challenge and the optional contact address."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from appliance.core import fields
from appliance.core.settings import Collector


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


def _dns01_needs(v: dict[str, Any], c: Collector) -> None:
    if v["challenge"] == "dns-01" and (v["dns_server"] is None or v["tsig_key_file"] is None):
        c.add("certs.challenge", v["challenge"], "needs dns_server and tsig_key_file",
              "set both, or use http-01")


FIELDS = (
    fields.Field("acme_server", CertsSection.acme_server, "the ACME CA's directory URL (Let's Encrypt)",
                 lambda v: isinstance(v, str) and v.startswith("https://"), "is not an https URL",
                 "leave it out for Let's Encrypt, or give your ACME CA's directory URL"),
    fields.address("email", "where the CA sends expiry notices; none by default",
                   "give an address, or leave it out"),
    fields.choice("challenge", "http-01", ("http-01", "dns-01"),
                  "`http-01` (port 80 opened only during the challenge) or `dns-01` (RFC 2136)",
                  "is not a challenge type",
                  'use "http-01" (port 80 opened only during the challenge) or "dns-01"'),
    fields.path("acme_ca_bundle", "a private ACME CA's root certificate (test labs)"),
    fields.ip("dns_server", "for dns-01: the DNS server that accepts your RFC 2136 updates",
              "give the address of the DNS server that accepts your RFC 2136 updates"),
    fields.domain("dns_zone", "for dns-01: the zone to update (default: the domain)", "is not a zone name",
                  "use your domain, or leave it out"),
    fields.Field("tsig_key_name", "acme-update", "for dns-01: the TSIG key's name",
                 lambda v: isinstance(v, str) and bool(v), "is not a key name", 'use e.g. "acme-update"'),
    fields.path("tsig_key_file", "for dns-01: the file holding the base64 TSIG secret alone"),
)
SECTION = fields.section("certs", CertsSection, FIELDS, cross=_dns01_needs)
