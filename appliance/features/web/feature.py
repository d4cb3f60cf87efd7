"""The small HTTPS server (nginx): the MTA-STS policy and the Web Key Directory."""

from __future__ import annotations

from appliance.core import system
from appliance.core.feature import Feature
from appliance.core.records import Known, Record, fq
from appliance.core.services import Service
from appliance.core.settings import Settings
from appliance.features.web import checks
from appliance.features.web.settings import SECTION
from appliance.features.web.web import Nginx, mta_sts_id, web_feature, web_names


def services(root: system.Root) -> list[Service]:
    return [Nginx(root)]


def records(s: Settings, k: Known) -> list[Record]:
    if not s.web.enabled:
        return []
    out = []
    if s.web.mta_sts_mode != "none":
        if k.public_ipv4:
            out.append(Record(fq(f"mta-sts.{s.domain}"), "A", k.public_ipv4,
                              "where senders fetch your MTA-STS policy (HTTPS)"))
        out.append(Record(fq(f"_mta-sts.{s.domain}"), "TXT", f'"v=STSv1; id={mta_sts_id(s)}"',
                          "MTA-STS: senders must use verified TLS to your MX (RFC 8461)"))
    out.append(Record(fq(f"openpgpkey.{s.domain}"), "CNAME", fq(s.hostname),
                      "Web Key Directory: mail clients find your users' public OpenPGP keys"))
    out.append(Record(fq(f"autoconfig.{s.domain}"), "CNAME", fq(s.hostname),
                      "mail apps (Thunderbird, K-9 Mail) set themselves up from the box"))
    return out


FEATURE = Feature("web", "README.md", sections=(SECTION,), files=web_feature, services=services,
                  checks=(checks.check_mta_sts,), records=records, cert_names=web_names)
