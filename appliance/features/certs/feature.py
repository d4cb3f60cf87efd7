"""Let's Encrypt (or another ACME CA) through certbot, and `appliance cert`."""

from __future__ import annotations

from appliance.core import system, tls
from appliance.core.feature import Feature
from appliance.core.records import Known, Record, fq
from appliance.core.settings import Settings
from appliance.features.certs import checks, cli
from appliance.features.certs.settings import SECTION


def known(root: system.Root, s: Settings) -> dict[str, str | None]:
    pem = root.read(tls.active_paths(root, s.hostname).fullchain).content
    return {"tlsa_311": tls.tlsa_311(pem) if pem else None}


def records(s: Settings, k: Known) -> list[Record]:
    out = []
    if k.tlsa_311:
        out.append(Record(fq(f"_25._tcp.{s.hostname}"), "TLSA", f"3 1 1 {k.tlsa_311}",
                          "DANE: senders verify your certificate's key (needs DNSSEC on your zone)"))
    if "letsencrypt.org" in s.certs.acme_server:
        out.append(Record(fq(s.domain), "CAA", '0 issue "letsencrypt.org"',
                          "only Let's Encrypt may issue certificates for your domain"))
    return out


FEATURE = Feature("certs", "README.md", sections=(SECTION,), commands=cli.register,
                  checks=(checks.check_certificate,), known=known, records=records)
