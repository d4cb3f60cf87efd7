"""The checks of `appliance status`: each a small function (Context) -> [Result].

A check returns no result when its feature is not configured (no UPnP, no external probe...).
Network questions go only to the resolver the box uses (/etc/resolv.conf), each bounded in time.
The interpretation of what came back (blocklist answers, the queue, apt's plan, fail2ban's
status) is in pure functions, unit-tested in tests/unit/test_status.py.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from appliance.core import system
from appliance.core.settings import Settings
from appliance.features.relay.settings import RelaySection, TunnelSection

OK, WARN, FAIL = "ok", "warn", "fail"
DNS_LIFETIME = 5.0  # seconds per query, all tries included


@dataclass
class Result:
    name: str  # stable: the key the daily mail compares by
    status: str  # ok | warn | fail
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Context:
    s: Settings
    root: system.Root
    resolver: Any = None
    now: float = field(default_factory=time.time)
    _known: Any = None

    @property
    def known(self) -> Any:
        """What the DNS records depend on: computed once, the way `appliance dns` does it."""
        if self._known is None:
            from appliance.features.certs.commands import known_facts

            self._known = known_facts(self.s, self.root)
        return self._known

    @property
    def sending_ip(self) -> str | None:
        k = self.known
        ip: str | None = k.sending_ipv4 or k.public_ipv4
        return ip


def make_resolver() -> Any:
    import dns.resolver

    from appliance.core.errors import ApplianceError

    try:
        r = dns.resolver.Resolver()  # the box's own resolver, from /etc/resolv.conf
    except dns.resolver.NoResolverConfiguration:
        raise ApplianceError("no resolver in /etc/resolv.conf: status asks only the box's own "
                             "resolver; configure one (your router, or unbound on the box)") from None
    r.timeout, r.lifetime = 2.0, DNS_LIFETIME
    return r


def lookup(resolver: Any, name: str, rtype: str) -> tuple[list[str], str]:
    """(answers, error): no answer or NXDOMAIN is ([], ""); a timeout or refusal is ([], why)."""
    import dns.exception
    import dns.resolver

    try:
        return [r.to_text() for r in resolver.resolve(name, rtype, lifetime=DNS_LIFETIME)], ""
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return [], ""
    except dns.resolver.NoNameservers:
        return [], "the resolver refused or failed the query (SERVFAIL/REFUSED)"
    except dns.exception.Timeout:
        return [], f"no answer within {DNS_LIFETIME:.0f} s"


# --- DNS records, DNSSEC, reverse DNS ----------------------------------------------------------
def check_records(c: Context) -> list[Result]:
    from appliance.features.dns import records as dnsrecords

    out = []
    if c.known.public_ipv4 is None:
        out.append(Result("dns public address", WARN, "the public address is not known, so the A, "
                          "SPF and PTR values cannot be checked",
                          "set [dns] public_ipv4, or run `appliance upnp renew`"))
    for f in dnsrecords.check(dnsrecords.expected(c.s, c.known), c.resolver):
        out.append(Result(f"dns {f.record}", OK if f.ok else FAIL, f.detail, f.fix))
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
    if not ip or isinstance(c.s.relay, RelaySection):  # a smarthost sends: its PTR, not ours
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


# --- DNS blocklists ----------------------------------------------------------------------------
# What the lists' answers mean (each list's documentation). 127.255.255.x are Spamhaus's error
# codes, 127.0.0.1 is the usual "query refused": neither is a listing.
ZONE_MEANINGS: dict[str, dict[str, str]] = {
    "zen.spamhaus.org": {
        "127.0.0.2": "SBL: a known spam source", "127.0.0.3": "SBL CSS: snowshoe spam",
        "127.0.0.4": "XBL: an infected or exploited device sends from this address",
        "127.0.0.9": "SBL DROP: a hijacked network",
        "127.0.0.10": "PBL (ISP): an end-user address that should not send mail directly",
        "127.0.0.11": "PBL (Spamhaus): an end-user address that should not send mail directly",
    },
}
ERROR_CODES = {
    "127.255.255.252": "the query was malformed (typo in the list's name?)",
    "127.255.255.254": "the list refuses queries through public or open resolvers",
    "127.255.255.255": "the list refuses queries: too many from this resolver (rate limited)",
    "127.0.0.1": "the list refused the query",
}
USE_OWN_RESOLVER = ("query through your own resolver (e.g. unbound on the box), not a public one "
                    "like 8.8.8.8 or your ISP's shared one, then run status again")


def dnsbl_query_name(ip: str, zone: str) -> str:
    return ".".join(reversed(ip.split("."))) + "." + zone


def interpret_dnsbl(zone: str, ip: str, answers: list[str], error: str = "") -> Result:
    """One list's answer for one address -> ok (not listed), warn (unknown) or fail (listed)."""
    name = f"blocklist {zone}"
    if error:
        return Result(name, WARN, f"unknown: {error}", USE_OWN_RESOLVER)
    if not answers:
        return Result(name, OK, f"{ip} is not listed")
    errors = [a for a in answers if a in ERROR_CODES or a.startswith("127.255.255.")]
    if errors:
        why = ERROR_CODES.get(errors[0], "an error answer, not a listing")
        return Result(name, WARN, f"unknown: {zone} answered {errors[0]}: {why}", USE_OWN_RESOLVER)
    listed = [a for a in answers if _in(a, "127.0.0.0/8")]
    if not listed:
        return Result(name, WARN, f"unknown: {zone} answered {', '.join(answers)}, not a "
                      "blocklist code (does the resolver rewrite missing names?)", USE_OWN_RESOLVER)
    meanings = ZONE_MEANINGS.get(zone, {})
    what = "; ".join(f"{a} ({meanings.get(a, 'listed')})" for a in sorted(listed))
    if all(meanings.get(a, "").startswith("PBL") for a in listed):
        fix = ("your ISP's address is not meant for sending mail directly: send through a relay "
               "([relay] kind = \"smarthost\" or your own VPS, README: Reachability)")
    else:
        fix = (f"find the cause (an infected device on your network?), then ask {zone} to delist "
               f"{ip} on its web site")
    return Result(name, FAIL, f"{ip} is listed: {what}", fix)


def _in(addr: str, net: str) -> bool:
    try:
        return ipaddress.ip_address(addr) in ipaddress.ip_network(net)
    except ValueError:
        return False


def check_blocklists(c: Context) -> list[Result]:
    ip = c.sending_ip
    if not ip or ":" in ip or not c.s.status.blocklists:
        return []
    out = []
    for zone in c.s.status.blocklists:
        answers, err = lookup(c.resolver, dnsbl_query_name(ip, zone), "A")
        r = interpret_dnsbl(zone, ip, answers, err)
        if r.status == FAIL and "PBL" in r.detail and "SBL" not in r.detail and "XBL" not in r.detail \
                and isinstance(c.s.relay, RelaySection):
            r = Result(r.name, OK, r.detail.replace("is listed", "is listed as an end-user address")
                       + ": fine, your mail leaves through the smarthost")
        out.append(r)
    return out


# --- certificate, UPnP -------------------------------------------------------------------------
def cert_status(days: float, self_signed: bool, hostname: str) -> Result:
    name = "certificate"
    if days < 0:
        return Result(name, FAIL, f"the certificate of {hostname} expired {-days:.0f} days ago",
                      "run `appliance cert renew --force`; `appliance cert show` says which is served")
    if days < 7:
        return Result(name, FAIL, f"the certificate of {hostname} expires in {days:.1f} days",
                      "run `appliance cert renew --force` and check its output")
    if self_signed:
        return Result(name, WARN, f"self-signed ({days:.0f} days left): senders and clients "
                      "cannot verify it", "run `appliance cert issue` (needs port 80 or dns-01)")
    if days < 21:
        return Result(name, WARN, f"{days:.0f} days left: renewal should have happened at 30",
                      "run `appliance cert renew` and check its output (certbot's timer)")
    return Result(name, OK, f"valid, {days:.0f} days left")


def check_certificate(c: Context) -> list[Result]:
    from appliance.core import tls
    from appliance.features.certs import certs

    paths = certs.active_paths(c.root, c.s.hostname)
    pem = c.root.read(paths.fullchain).content
    if not pem:
        return [Result("certificate", FAIL, f"no certificate at {paths.fullchain}",
                       "run `appliance apply` (it makes a self-signed one), then `appliance cert issue`")]
    return [cert_status(certs.days_left(pem, c.now), paths == tls.self_signed_paths(), c.s.hostname)]


def check_upnp(c: Context) -> list[Result]:
    from appliance.features.upnp import client as upnp

    if not c.s.upnp.enabled or isinstance(c.s.relay, TunnelSection):
        return []
    state = upnp.load_state(c.root)
    if state is None:
        return [Result("upnp", WARN, "no port mapping made yet",
                       "run `appliance upnp renew`; a router without UPnP: forward the ports by "
                       "hand and set [upnp] enabled = false")]
    out = []
    for o in state.get("outcomes", []):
        held = o.get("result") in ("added", "renewed")
        out.append(Result(f"upnp port {o.get('port')}", OK if held else FAIL,
                          f"mapped on {state.get('external_ip')}" if held
                          else f"{o.get('result')} {o.get('detail', '')}".strip(),
                          "" if held else "free the port on your router (another device holds it?), "
                          "then run `appliance upnp renew`"))
    age = c.now - float(state.get("at", 0))
    if age > 2 * c.s.upnp.lease_seconds:
        out.append(Result("upnp renewal", WARN, f"last renewed {age / 3600:.1f} h ago, the lease is "
                          f"{c.s.upnp.lease_seconds} s: mappings may have lapsed",
                          "systemctl enable --now appliance-upnp-renew.timer"))
    return out


# --- queue, disk, updates, fail2ban, reachability ----------------------------------------------
def summarize_queue(lines: list[str], now: float) -> Result:
    """`postqueue -j` output (one JSON object per message) -> one result."""
    msgs = [json.loads(line) for line in lines if line.strip()]
    deferred = [m for m in msgs if m.get("queue_name") == "deferred"]
    held = [m for m in msgs if m.get("queue_name") == "hold"]
    reasons = Counter(r.get("delay_reason", "")[:160] for m in deferred
                      for r in m.get("recipients", []) if r.get("delay_reason"))
    oldest = max((now - float(m.get("arrival_time", now)) for m in deferred), default=0.0)
    detail = f"{len(msgs)} message(s) queued, {len(deferred)} deferred, {len(held)} held"
    if reasons:
        detail += f"; most common reason: {reasons.most_common(1)[0][0]}"
    if deferred and oldest > 3 * 86400:
        return Result("mail queue", FAIL, detail + f"; the oldest waits since {oldest / 86400:.1f} days "
                      "and bounces at 5", "fix the reason above, then `postqueue -f` to retry now")
    if deferred:
        return Result("mail queue", WARN, detail, "if the reason persists, fix it, then `postqueue -f`")
    if held:
        return Result("mail queue", WARN, detail, "held mail waits for the postmaster: `postqueue -j`, "
                      "release with `postsuper -H ID`, delete with `postsuper -d ID`")
    return Result("mail queue", OK, detail)


def check_queue(c: Context) -> list[Result]:
    res = system.run(["postqueue", "-j"], check=False, timeout=30)
    if res.returncode != 0:
        return [Result("mail queue", FAIL, f"the queue cannot be read: {res.output[:200]}",
                       "is Postfix running? `appliance apply` starts it")]
    return [summarize_queue(res.stdout.splitlines(), c.now)]


def disk_status(path: str, free: int, total: int) -> Result:
    pct = 100.0 * free / total if total else 0.0
    detail = f"{free / 2**30:.1f} GiB free of {total / 2**30:.1f} GiB ({pct:.0f}%)"
    fix = ("free space: `apt-get clean`, `journalctl --vacuum-size=50M`, archive old mail; "
           "or move to a larger card")
    if pct < 5 or free < 256 * 2**20:
        return Result(f"disk {path}", FAIL, detail + ": mail is deferred when it runs out", fix)
    if pct < 15 or free < 2**30:
        return Result(f"disk {path}", WARN, detail, fix)
    return Result(f"disk {path}", OK, detail)


def check_disk(c: Context) -> list[Result]:
    out, seen = [], set()
    for path in ("/", "/var"):
        p = c.root.host(path)
        dev = os.stat(p).st_dev
        if dev in seen:
            continue
        seen.add(dev)
        st = os.statvfs(p)
        out.append(disk_status(path, st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize))
    return out


def parse_apt_simulation(text: str) -> tuple[int, int]:
    """`apt-get -s upgrade` -> (updates, of which security updates)."""
    inst = [line for line in text.splitlines() if line.startswith("Inst ")]
    return len(inst), sum(1 for line in inst if re.search(r"-security\b|Debian-Security", line))


def check_updates(c: Context) -> list[Result]:
    out = []
    lists = c.root.host("/var/lib/apt/lists")
    if lists.is_dir() and any(lists.glob("*_Packages*")):
        res = system.run(["apt-get", "-s", "-o", "Debug::NoLocking=1", "upgrade"], check=False,
                         timeout=120, env={"LC_ALL": "C", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        if res.returncode != 0:
            out.append(Result("updates", WARN, f"unknown: `apt-get -s upgrade` failed: {res.output[:200]}",
                              "run `apt-get update` and look at its errors"))
        else:
            n, sec = parse_apt_simulation(res.stdout)
            if sec:
                out.append(Result("updates", WARN, f"{sec} security update(s) pending ({n} in all)",
                                  "run `apt-get upgrade`; see /var/log/unattended-upgrades/ why "
                                  "they were not installed"))
            else:
                out.append(Result("updates", OK, f"no security update pending ({n} other update(s))"))
    if c.root.exists("/var/lib/dpkg/status"):
        flag = c.root.read("/run/reboot-required").content
        if flag is not None:
            pkgs = (c.root.read("/run/reboot-required.pkgs").content or b"").decode().split()
            out.append(Result("reboot", WARN, "a reboot is needed"
                              + (f" (by {', '.join(sorted(set(pkgs)))})" if pkgs else ""),
                              "reboot the box at a quiet moment: `systemctl reboot`"))
        else:
            out.append(Result("reboot", OK, "no reboot needed"))
    return out


def parse_fail2ban_status(text: str) -> dict[str, int]:
    """`fail2ban-client status JAIL` -> {'current': N, 'total': M}."""
    got = {}
    for key, label in (("current", "Currently banned"), ("total", "Total banned")):
        m = re.search(rf"{label}:\s*(\d+)", text)
        got[key] = int(m.group(1)) if m else 0
    return got


def check_fail2ban(c: Context) -> list[Result]:
    if not c.s.defence.fail2ban:
        return []
    res = system.run(["fail2ban-client", "status"], check=False, timeout=10)
    m = re.search(r"Jail list:\s*(.*)", res.stdout)
    if res.returncode != 0 or not m:
        return [Result("fail2ban", FAIL, f"fail2ban is not answering: {res.output[:160] or 'no output'}",
                       "run `appliance apply` (it starts fail2ban); its log: /var/log/fail2ban.log")]
    out = []
    for jail in [j.strip() for j in m.group(1).split(",") if j.strip()][:20]:
        r = system.run(["fail2ban-client", "status", jail], check=False, timeout=10)
        n = parse_fail2ban_status(r.stdout)
        out.append(Result(f"fail2ban {jail}", OK, f"{n['current']} banned now, {n['total']} "
                          "since fail2ban started (`appliance bans` lists them)"))
    return out


def check_reachability(c: Context) -> list[Result]:
    from appliance.features.upnp import client as upnp
    from appliance.features.upnp import reachability

    url = c.s.reachability.probe_url
    if not url:
        return []
    token_file = c.s.reachability.probe_token_file or "/etc/appliance/probe.token"
    try:
        token = (c.root.read(token_file).content or b"").decode().strip()
        answer = reachability.ask_probe(url, token, list(upnp.MAIL_PORTS), timeout=30)
    except (OSError, ValueError) as e:
        return [Result("reachability", WARN, f"unknown: your probe {url} could not be asked ({e})",
                       f"check that the probe runs and {token_file} holds its token")]
    out = []
    ports = answer.get("ports", {})
    for port in upnp.MAIL_PORTS:
        ok = ports.get(str(port))
        out.append(Result(f"reachable port {port}", OK if ok else FAIL,
                          "your probe connected" if ok else "your probe could not connect",
                          "" if ok else "forward the port on your router, or use your relay "
                          "(`appliance reachability` explains)"))
    seen, public = answer.get("seen_ip"), c.known.public_ipv4
    if seen and public and seen != public:
        out.append(Result("reachability address", WARN, f"your probe sees the box as {seen}, the "
                          f"records publish {public}", "run `appliance dns` and publish its A record"))
    return out


def compare_mta_sts(text: str, s: Settings) -> Result:
    """The policy as served (RFC 8461 section 3.2) against what the box should publish."""
    fields: dict[str, list[str]] = {}
    for line in text.replace("\r\n", "\n").split("\n"):
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), []).append(value.strip())
    problems = []
    if fields.get("version") != ["STSv1"]:
        problems.append(f"version is {fields.get('version')}, not STSv1")
    if fields.get("mode") != [s.web.mta_sts_mode]:
        problems.append(f"mode is {fields.get('mode')}, the settings say {s.web.mta_sts_mode}")
    mx = fields.get("mx", [])
    if not any(p == s.hostname or (p.startswith("*.") and s.hostname.endswith(p[1:])) for p in mx):
        problems.append(f"mx {mx} does not cover {s.hostname}, your MX: senders enforcing the "
                        "policy would refuse to deliver")
    if not problems:
        return Result("MTA-STS policy", OK, f"served over HTTPS, mode {s.web.mta_sts_mode}, mx "
                      f"{', '.join(mx)}")
    return Result("MTA-STS policy", FAIL, "; ".join(problems),
                  "run `appliance apply` (it writes the policy nginx serves)")


def check_mta_sts(c: Context) -> list[Result]:
    """Fetch the policy the way a sender does: https://mta-sts.<domain>/.well-known/mta-sts.txt,
    certificate verified. From inside the LAN this needs the name to resolve to the box (split
    DNS) or hairpin NAT on the router; a connection failure is therefore a warning."""
    import ssl
    import urllib.error
    import urllib.request

    s = c.s
    if not s.web.enabled or s.web.mta_sts_mode == "none":
        return []
    url = f"https://mta-sts.{s.domain}/.well-known/mta-sts.txt"
    ctx = ssl.create_default_context(cafile=s.certs.acme_ca_bundle) if s.certs.acme_ca_bundle \
        else ssl.create_default_context()
    try:
        with urllib.request.urlopen(url, timeout=10, context=ctx) as r:  # noqa: S310 - https only
            text = r.read(65536).decode("utf-8", errors="replace")
    except ssl.SSLError as e:
        return [Result("MTA-STS policy", FAIL, f"{url}: the certificate does not verify ({e})",
                       f"issue a certificate that includes mta-sts.{s.domain}: `appliance cert issue`")]
    except (urllib.error.URLError, OSError) as e:
        return [Result("MTA-STS policy", WARN, f"{url} could not be fetched from the box ({e})",
                       "check from outside your network; from inside, the router must support "
                       "hairpin NAT or your LAN's DNS must point the name at the box")]
    return [compare_mta_sts(text, s)]


CHECKS: list[Callable[[Context], list[Result]]] = [
    check_records, check_mta_sts, check_dnssec, check_reverse_dns, check_blocklists, check_certificate,
    check_upnp, check_reachability, check_queue, check_disk, check_updates, check_fail2ban,
]
