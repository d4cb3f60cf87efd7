"""The status feature's own checks: the box's address on DNS blocklists, the mail queue, the
disk, pending updates. (Each other feature declares its checks in its own checks.py.) What came
back is interpreted by pure functions, unit-tested in tests/unit/test_status.py.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections import Counter

from appliance.core import system
from appliance.core.checks import FAIL, OK, WARN, Context, Result, lookup

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
                and getattr(c.s.relay, "kind", None) == "smarthost":
            r = Result(r.name, OK, r.detail.replace("is listed", "is listed as an end-user address")
                       + ": fine, your mail leaves through the smarthost")
        out.append(r)
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
