"""`appliance dns`: every DNS record the domain needs, and `check` comparing what is published.

`records` is pure: settings + what the agent knows (public address) in, the domain's own records
out, each with the reason it exists; other features add theirs (`Feature.records`), and
`pipeline.dns_records` gathers them all. `check` queries the resolver the box uses and
compares *values*, not only presence, and gives a one-line fix per problem.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import asdict, dataclass
from typing import Any

from appliance.core import system
from appliance.core.records import Known, Record, fq
from appliance.core.settings import Settings


def reverse_name(ip: str) -> str:
    return ipaddress.ip_address(ip).reverse_pointer + "."


def records(s: Settings, k: Known) -> list[Record]:
    """The domain's own records: where mail goes, who may send as it, how clients find it.
    (Other features add theirs: DKIM keys, MTA-STS, TLSA.)"""
    d, host = fq(s.domain), fq(s.hostname)
    pm = f"postmaster@{s.domain}"
    out = [Record(d, "MX", f"10 {host}", "where the internet delivers mail for your domain")]
    if k.public_ipv4:
        out.append(Record(host, "A", k.public_ipv4, "the address of your mail host"))
    if k.public_ipv6:
        out.append(Record(host, "AAAA", k.public_ipv6, "the IPv6 address of your mail host"))
    sender = k.sending_ipv4 or k.public_ipv4
    spf = "v=spf1 mx" + (f" ip4:{k.sending_ipv4}" if k.sending_ipv4 else "") + " -all"
    out += [
        Record(d, "TXT", f'"{spf}"', f"SPF: only your MX{' and your relay' if k.sending_ipv4 else ''} "
               "may send as your domain; everyone else fails (-all)"),
        Record(fq(f"_dmarc.{s.domain}"), "TXT", f'"v=DMARC1; p=quarantine; rua=mailto:{pm}"',
               "DMARC: mail failing SPF and DKIM goes to spam; reports to your postmaster"),
        Record(fq(f"_smtp._tls.{s.domain}"), "TXT", f'"v=TLSRPTv1; rua=mailto:{pm}"',
               "TLS-RPT: senders report TLS failures delivering to you"),
        Record(fq(f"_submissions._tcp.{s.domain}"), "SRV", f"0 1 465 {host}",
               "mail clients find submission over TLS (RFC 6186, RFC 8314)"),
        Record(fq(f"_submission._tcp.{s.domain}"), "SRV", f"10 1 587 {host}",
               "mail clients find submission with STARTTLS"),
        Record(fq(f"_imaps._tcp.{s.domain}"), "SRV", f"0 1 993 {host}", "mail clients find IMAP over TLS"),
    ]
    if sender:
        out.append(Record(reverse_name(sender), "PTR", host,
                          "reverse DNS of the sending address: ask your ISP (or VPS provider) to set it"))
    return out


def known(root: system.Root, s: Settings) -> dict[str, str | None]:
    return {"configured_ipv4": s.dns.public_ipv4, "public_ipv6": s.dns.public_ipv6}


def zone_text(records: list[Record]) -> str:
    return "\n".join(r.zone_line() for r in records) + "\n"


# --- checking what is published ---------------------------------------------------------------
@dataclass
class Finding:
    record: str
    ok: bool
    detail: str
    fix: str = ""
    unknown: bool = False  # not checked (the query timed out): neither missing nor wrong

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _norm(rtype: str, value: str) -> str:
    v = value.strip().lower()
    if rtype == "TXT":
        v = "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', v)) or v.strip('"')
    v = re.sub(r"\s+", " ", v)
    return v.rstrip(".") if rtype in ("CNAME", "PTR", "MX", "SRV") else v


TIMEOUT = "<timeout>"


def _lookup(resolver: Any, name: str, rtype: str) -> list[str]:
    import dns.exception
    import dns.resolver

    try:
        answer = resolver.resolve(name, rtype, lifetime=5)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.NoNameservers):
        return []
    except dns.exception.Timeout:
        return [TIMEOUT]
    return [r.to_text() for r in answer]


def check(records: list[Record], resolver: Any = None) -> list[Finding]:
    import dns.resolver

    resolver = resolver or dns.resolver.Resolver()
    findings = []
    for r in records:
        got = _lookup(resolver, r.name, r.rtype)
        label = f"{r.name} {r.rtype}"
        if got == [TIMEOUT]:
            # Said as such: a slow DNS server is not a missing record, and "publish it" would
            # send the person to fix what is not broken.
            findings.append(Finding(label, False, "not checked: no answer from the DNS server "
                                    "within 5 s (the record may well be right)",
                                    "check again later; if it lasts, the box's DNS server "
                                    "(the router's?) is slow or down", unknown=True))
            continue
        if r.rtype == "TXT":
            prefix = r.value.strip('"').split()[0].split(";")[0].lower()  # v=spf1, v=DMARC1, ...
            mine = [g for g in got if _norm("TXT", g).startswith(prefix)]
            want = _norm("TXT", r.value)
            if not mine:
                findings.append(Finding(label, False, f"no {prefix} record", f"publish: {r.zone_line()}"))
            elif len(mine) > 1:
                findings.append(Finding(label, False, f"{len(mine)} {prefix} records (must be one)",
                                        f"keep only: {r.zone_line()}"))
            elif _norm("TXT", mine[0]) != want:
                findings.append(Finding(label, False, f"published {mine[0]}, expected {r.value}"
                                        + _txt_hint(prefix, _norm("TXT", mine[0])),
                                        f"replace it with: {r.zone_line()}"))
            else:
                findings.append(Finding(label, True, "matches"))
            continue
        want = _norm(r.rtype, r.value)
        have = [_norm(r.rtype, g) for g in got]
        if want in have:
            findings.append(Finding(label, True, "matches"))
        elif not have:
            findings.append(Finding(label, False, "missing", f"publish: {r.zone_line()}"))
        else:
            findings.append(Finding(label, False, f"published {', '.join(got)}, expected {r.value}",
                                    f"replace it with: {r.zone_line()}"))
    return findings


def _txt_hint(prefix: str, text: str) -> str:
    if prefix == "v=dmarc1" and not re.search(r"(^|;)\s*p=(none|quarantine|reject)\s*(;|$)", text):
        return " (DMARC syntax: the p= policy tag is missing or invalid)"
    if prefix == "v=spf1" and not text.endswith(("-all", "~all")):
        return " (SPF without -all lets anyone send as you)"
    return ""


# --- pushing to a DNS server the user runs (RFC 2136) --------------------------------------------
def push(records: list[Record], zone: str, server: str, key_name: str, secret: str,
         resolver: Any = None) -> list[str]:
    """Bring the zone's records to what they should be with one TSIG-signed RFC 2136 update.

    Only names inside `zone` (a PTR lives in the ISP's zone: it is left out and reported). TXT
    records are matched by their kind (v=spf1, v=DMARC1, v=DKIM1, ...): a wrong one of the same
    kind is replaced, other TXT records at the same name (site verifications) are kept. Other
    types replace the whole set of that type at that name. Returns what was left out."""
    import dns.query
    import dns.rcode
    import dns.resolver
    import dns.tsigkeyring
    import dns.update

    resolver = resolver or dns.resolver.Resolver()
    keyring = dns.tsigkeyring.from_text({key_name: ("hmac-sha256", secret)})
    update = dns.update.Update(zone, keyring=keyring, keyalgorithm="hmac-sha256")
    origin = fq(zone)
    skipped = []
    for r in records:
        if not (r.name == origin or r.name.endswith("." + origin)):
            skipped.append(f"{r.name} {r.rtype} {r.value} (not in zone {zone}: ask its owner)")
            continue
        if r.rtype == "TXT":
            prefix = r.value.strip('"').split()[0].split(";")[0].lower()
            for have in _lookup(resolver, r.name, "TXT"):
                if _norm("TXT", have).startswith(prefix) and _norm("TXT", have) != _norm("TXT", r.value):
                    update.delete(r.name, "TXT", have)
            update.add(r.name, r.ttl, "TXT", r.value)  # adding an existing record is a no-op
        else:
            update.replace(r.name, r.ttl, r.rtype, r.value)
    answer = dns.query.tcp(update, server, timeout=10)
    if answer.rcode() != 0:
        from appliance.core.errors import ApplianceError

        raise ApplianceError(f"the DNS server {server} refused the update of zone {zone}: "
                             f"{dns.rcode.to_text(answer.rcode())}; check the TSIG key "
                             f"({key_name}) and that the server's ACL lets it update these types")
    return skipped
