"""The status checks of the domain's DNS: the records `appliance dns` prints, DNSSEC, and
the reverse DNS of the sending address."""

from __future__ import annotations

from appliance.core.checks import DNS_LIFETIME, FAIL, OK, WARN, Context, Result, lookup, make_resolver


def smarthost_sends(c: Context) -> bool:
    return getattr(c.s.relay, "kind", None) == "smarthost"


def check_records(c: Context) -> list[Result]:
    from appliance.features.dns import records as dnsrecords

    out = []
    if c.known.public_ipv4 is None:
        out.append(Result("dns public address", WARN, "the public address is not known, so the A, "
                          "SPF and PTR values cannot be checked",
                          "set [dns] public_ipv4, or run `appliance upnp renew`"))
    for f in dnsrecords.check(c.records, c.resolver):
        out.append(Result(f"dns {f.record}", OK if f.ok else WARN if f.unknown else FAIL,
                          f.detail, f.fix))
    return out


def check_dnssec(c: Context) -> list[Result]:
    import dns.flags
    import dns.resolver

    zone, name = c.s.domain, "dnssec"
    r = make_resolver()
    r.nameservers = list(c.resolver.nameservers)
    r.use_edns(0, dns.flags.DO, 1232)
    r.flags = dns.flags.RD | dns.flags.AD
    try:
        ans = r.resolve(zone, "SOA", lifetime=DNS_LIFETIME, raise_on_no_answer=False)
        if ans.response.flags & dns.flags.AD:
            return [Result(name, OK, f"{zone} is signed and your resolver validated it (AD bit)")]
    except Exception:  # noqa: S110 - the DNSKEY/DS questions below say what is known
        pass
    keys, err = lookup(c.resolver, zone, "DNSKEY")
    if err:
        return [Result(name, WARN, f"unknown: the DNSKEY query failed ({err})",
                       "check that the box's resolver answers, then run status again")]
    if not keys:
        return [Result(name, WARN, f"{zone} is not signed (no DNSKEY): senders ignore the TLSA "
                       "record (DANE) without DNSSEC",
                       "turn on DNSSEC at your DNS provider and add its DS record at your registrar")]
    ds, _ = lookup(c.resolver, zone, "DS")
    if not ds:
        return [Result(name, WARN, f"{zone} has DNSKEYs but no DS record in its parent zone: "
                       "resolvers treat it as unsigned",
                       "add the DS record your DNS provider shows at your registrar")]
    return [Result(name, WARN, f"{zone} is signed (DNSKEY and DS published), but the box's "
                   "resolver does not validate (no AD bit), so it cannot be confirmed",
                   "use a validating resolver on the box (e.g. unbound), then run status again")]


def check_reverse_dns(c: Context) -> list[Result]:
    from appliance.features.dns.records import reverse_name

    ip, helo = c.sending_ip, c.s.hostname.rstrip(".").lower()
    if not ip or smarthost_sends(c):  # a smarthost sends: its PTR, not ours
        return []
    name = "reverse dns"
    ask = (f"ask your ISP (or VPS provider) to set the reverse DNS (PTR) of {ip} to {helo}")
    ptrs, err = lookup(c.resolver, reverse_name(ip), "PTR")
    if err:
        return [Result(name, WARN, f"unknown: the PTR query for {ip} failed ({err})", ask)]
    names = [p.rstrip(".").lower() for p in ptrs]
    if not names:
        return [Result(name, FAIL, f"{ip} has no PTR record; receivers distrust mail from it", ask)]
    if helo not in names:
        return [Result(name, FAIL, f"the PTR of {ip} is {', '.join(names)}, but the box greets "
                       f"(HELO) as {helo}", ask)]
    forward, err = lookup(c.resolver, helo, "A")
    if ip not in forward:
        return [Result(name, FAIL, f"{ip} -> {helo}, but {helo} resolves to "
                       f"{', '.join(forward) or 'nothing'}{f' ({err})' if err else ''}: "
                       "forward-confirmed reverse DNS fails",
                       f"publish: {helo}. IN A {ip}")]
    return [Result(name, OK, f"{ip} -> {helo} -> {ip}, the HELO name")]
