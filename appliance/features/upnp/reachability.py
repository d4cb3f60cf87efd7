"""`appliance reachability`: an honest verdict on the home connection, with the next step.

Verdicts:
  direct                   -> the internet reaches the box, and it can send on port 25
  direct-outbound-blocked  -> inbound works, outbound port 25 is blocked: use a smarthost or your relay
  not-reachable            -> inbound cannot work from here (CGNAT, double NAT, no forwarding):
                              forward the ports by hand, or use your relay
  unknown                  -> not enough evidence; says what to configure to find out

Evidence comes only from the router (UPnP IGD), from TCP connects to hosts the user listed, and
from the user's *own* external probe (`appliance probe-server`, e.g. on their relay VPS). No
third-party service is asked anything. `evaluate` is pure and unit-tested.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from appliance.core.settings import Settings
from appliance.features.upnp import client as upnp

# Addresses that are not the public internet, as seen from a home router's WAN side:
# RFC 1918, RFC 6598 shared address space (carrier-grade NAT), RFC 2544 benchmarking (used
# by test labs and some ISPs' inner networks), link-local, loopback.
NOT_PUBLIC = [ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "198.18.0.0/15",
    "169.254.0.0/16", "127.0.0.0/8", "fc00::/7", "fe80::/10", "::1/128",
)]
CGNAT = ipaddress.ip_network("100.64.0.0/10")


@dataclass
class Evidence:
    lan_ip: str | None = None
    igd: str = "absent"  # "absent", "not-connected", "connected"
    igd_detail: str = ""
    external_ip: str | None = None
    mapped: dict[int, str] = field(default_factory=dict)  # port -> outcome (added/renewed/conflict/refused)
    outbound_25: bool | None = None  # None: no probe hosts configured
    outbound_detail: str = ""
    probe_seen_ip: str | None = None  # what the user's probe saw as our address
    inbound: dict[int, bool] = field(default_factory=dict)  # from the user's probe
    probe_error: str = ""


@dataclass
class Verdict:
    verdict: str
    reasons: list[str]
    next_step: str
    evidence: Evidence

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["evidence"]["mapped"] = {str(k): v for k, v in self.evidence.mapped.items()}
        d["evidence"]["inbound"] = {str(k): v for k, v in self.evidence.inbound.items()}
        return d


def address_kind(ip: str | None) -> str:
    if not ip:
        return "unknown"
    addr = ipaddress.ip_address(ip)
    if addr in CGNAT:
        return "cgnat"
    if any(addr in n for n in NOT_PUBLIC):
        return "private"
    return "public"


def _forward_instructions(lan_ip: str | None) -> str:
    target = lan_ip or "this box's LAN address"
    ports = ", ".join(str(p) for p in upnp.MAIL_PORTS)
    return (f"in your router's settings, forward TCP ports {ports} to {target} "
            f"(never port 22), or use a relay you own (README: Reachability)")


def evaluate(ev: Evidence) -> Verdict:
    reasons: list[str] = []
    kind = address_kind(ev.external_ip)
    behind_cgnat = kind in ("cgnat", "private")
    if kind == "cgnat":
        reasons.append(f"the router's internet address {ev.external_ip} is carrier-grade NAT "
                       "(100.64.0.0/10): your ISP shares it, nothing can reach you on it")
    elif kind == "private":
        reasons.append(f"the router's internet address {ev.external_ip} is private: there is "
                       "another router in front of it (double NAT)")
    if ev.probe_seen_ip and ev.external_ip and ev.probe_seen_ip != ev.external_ip:
        behind_cgnat = True
        reasons.append(f"your probe sees this box as {ev.probe_seen_ip}, the router says "
                       f"{ev.external_ip}: there is NAT beyond your router")
    if ev.igd == "absent":
        reasons.append(f"no UPnP router found ({ev.igd_detail or 'none answered'}); ports "
                       "cannot be opened automatically")
    elif ev.igd == "not-connected":
        reasons.append(f"the router's UPnP says its internet link is not connected ({ev.igd_detail})")
    problems = {p: o for p, o in ev.mapped.items() if o not in ("added", "renewed")}
    for port, outcome in sorted(problems.items()):
        reasons.append(f"port {port}: {outcome}")
    if ev.outbound_25 is False:
        reasons.append(f"outbound port 25 is blocked ({ev.outbound_detail})")
    elif ev.outbound_25 is None:
        reasons.append("outbound port 25 not tested: list hosts in [reachability] outbound_probe_hosts")
    if ev.probe_error:
        reasons.append(f"your external probe could not be used: {ev.probe_error}")

    if ev.inbound:
        inbound_ok = all(ev.inbound.values())
        for port, ok in sorted(ev.inbound.items()):
            if not ok:
                reasons.append(f"your probe could not connect to port {port}")
    elif behind_cgnat or ev.igd != "connected" or problems:
        inbound_ok = False
    else:
        inbound_ok = None  # mapped, public address, but nobody outside has confirmed it

    if inbound_ok is False:
        nxt = ("use a relay you own (README: Reachability, `relay.kind = \"wireguard\"`)"
               if behind_cgnat else _forward_instructions(ev.lan_ip))
        return Verdict("not-reachable", reasons, nxt, ev)
    if inbound_ok is None:
        reasons.append("ports are mapped on a public address, but no outside probe confirmed it: "
                       "set [reachability] probe_url to your own probe")
    if ev.outbound_25 is False:
        return Verdict("direct-outbound-blocked", reasons,
                       "send through a smarthost ([relay] kind = \"smarthost\") or your own relay; "
                       "ask your ISP to unblock port 25 if they offer it", ev)
    if inbound_ok and ev.outbound_25:
        return Verdict("direct", reasons, "nothing to do: publish the DNS records (appliance dns)", ev)
    return Verdict("unknown" if inbound_ok is None or ev.outbound_25 is None else "direct", reasons,
                   "configure the missing evidence above to get a definite answer", ev)


# --- gathering (network I/O at the edge) ------------------------------------------------------
def outbound_check(hosts: tuple[str, ...], timeout: float = 5.0) -> tuple[bool | None, str]:
    if not hosts:
        return None, "no hosts configured"
    tried = []
    for h in hosts[:10]:  # bounded
        name, _, port = h.partition(":")
        try:
            with socket.create_connection((name, int(port or 25)), timeout=timeout) as s:
                s.settimeout(timeout)
                banner = s.recv(64).decode(errors="replace").strip()
            return True, f"{h} answered: {banner[:40]}"
        except OSError as e:
            tried.append(f"{h}: {e.strerror or e}")
    return False, "; ".join(tried)


def ask_probe(url: str, token: str, ports: list[int], timeout: float = 30.0) -> dict[str, Any]:
    q = ",".join(map(str, ports))
    req = urllib.request.Request(f"{url.rstrip('/')}/v1/check?ports={q}",
                                 headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 - the user's own URL
        data: dict[str, Any] = json.loads(r.read(65536))
    return data


# --- the probe server, run on a host the user owns outside their home -------------------------
class _ProbeHandler(BaseHTTPRequestHandler):
    token = ""
    last: dict[str, float] = {}
    lock = threading.Lock()
    min_interval = 2.0

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        url = urlparse(self.path)
        if url.path != "/v1/check":
            return self._reply(404, {"error": "unknown path"})
        if self.headers.get("Authorization", "") != f"Bearer {self.token}":
            return self._reply(403, {"error": "bad token"})
        client = self.client_address[0]
        with self.lock:  # a token holder still cannot turn this into a port scanner
            if time.monotonic() - self.last.get(client, -1e9) < self.min_interval:
                return self._reply(429, {"error": "too many requests"})
            self.last[client] = time.monotonic()
        try:
            ports = [int(p) for p in parse_qs(url.query).get("ports", [""])[0].split(",") if p]
        except ValueError:
            return self._reply(400, {"error": "ports must be numbers"})
        allowed = [p for p in ports if p in upnp.MAIL_PORTS + upnp.WEB_PORTS][:8]
        result = {}
        for p in allowed:  # connect back to whoever asked: only the caller's own address
            try:
                with socket.create_connection((client, p), timeout=5):
                    result[str(p)] = True
            except OSError:
                result[str(p)] = False
        self._reply(200, {"seen_ip": client, "ports": result})

    def _reply(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # no access log: the probe keeps no record of who asked


def serve_probe(listen: str, port: int, token: str, lifetime: float | None = None) -> None:
    if len(token) < 16:
        raise ValueError("the probe token must be at least 16 characters")
    handler = type("Handler", (_ProbeHandler,), {"token": token, "last": {}})
    srv = ThreadingHTTPServer((listen, port), handler)
    srv.timeout = 1.0
    deadline = time.monotonic() + lifetime if lifetime else None
    try:
        while deadline is None or time.monotonic() < deadline:
            srv.handle_request()
    finally:
        srv.server_close()


def collect(s: Settings, igd_factory: Any = None) -> Evidence:
    """Gather the evidence for `evaluate` from the router, the listed hosts and the user's probe."""
    ev = Evidence()
    cfg = upnp.UpnpSettings(s.upnp.enabled, s.upnp.lease_seconds, s.upnp.igd_url)
    if not cfg.enabled:
        ev.igd_detail = "UPnP is off in the settings ([upnp] enabled = false)"
    else:
        try:
            igd = (igd_factory or upnp.Igd)(cfg)
            ev.lan_ip = igd.lan_ip
            status = igd.status()
            ev.igd = "connected" if status == "Connected" else "not-connected"
            ev.igd_detail = status
            ev.external_ip = igd.external_ip()
            if ev.igd == "connected":
                rep = upnp.renew(igd, cfg)
                ev.mapped = {o.port: o.result + (f" ({o.detail})" if o.detail else "")
                             for o in rep.outcomes}
        except upnp.UpnpError as e:
            ev.igd_detail = str(e)
    if ev.lan_ip is None:  # no router to ask: the address of the LAN interface
        from appliance.core import facts

        v4 = [a for a in facts.gather(s.lan).lan_addresses if ":" not in a]
        ev.lan_ip = v4[0] if v4 else None
    ev.outbound_25, ev.outbound_detail = outbound_check(s.reachability.outbound_probe_hosts)
    if s.reachability.probe_url:
        try:
            token = open(s.reachability.probe_token_file or "/etc/appliance/probe.token").read().strip()
            answer = ask_probe(s.reachability.probe_url, token, list(upnp.MAIL_PORTS))
            ev.probe_seen_ip = answer.get("seen_ip")
            ev.inbound = {int(p): bool(ok) for p, ok in answer.get("ports", {}).items()}
        except (OSError, ValueError) as e:
            ev.probe_error = str(e)
    return ev
