"""UPnP port forwarding on the home router (miniupnpc, Debian's python3-miniupnpc).

Only the ports the appliance serves to the internet are ever mapped: 25, 465, 587, 993, and
80/443 only while a caller asks for them (certificates, web services). Never SSH. Every mapping
has a finite lease, renewed by a timer (`appliance upnp renew`, or `appliance upnp watch` where
there is no systemd); `appliance stop` removes them. A mapping held by another LAN host is
reported and never touched. The external address is read from the router (IGD), never from a
third-party "what is my IP" service.

`decide` is pure (router state in, actions out) and unit-tested; `Igd` is the thin edge.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from appliance.core import schema, system
from appliance.core.services import MAIL_PORTS

WEB_PORTS = (80, 443)
NEVER = (22,)  # SSH stays on the LAN, whatever a caller asks
DESCRIPTION = "mail-appliance"
STATE_PATH = "/var/lib/appliance/upnp.json"
STATE_VERSION = 1  # the format of STATE_PATH; a change is a step in appliance.migrations


class UpnpError(Exception):
    """The router could not be used; the message says what and the fix."""


@dataclass(frozen=True)
class UpnpSettings:
    enabled: bool = True
    lease_seconds: int = 3600
    igd_url: str | None = None  # rootDesc URL: skips SSDP discovery (≈1 s)


@dataclass(frozen=True)
class Mapping:
    port: int
    internal_client: str
    internal_port: int
    description: str
    lease: int


@dataclass
class Outcome:
    port: int
    result: str  # "added", "renewed", "conflict", "refused", "removed", "absent", "kept"
    detail: str = ""


@dataclass
class Report:
    external_ip: str | None = None
    status: str = ""
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(o.result in ("added", "renewed", "removed", "absent") for o in self.outcomes)

    def as_dict(self) -> dict[str, Any]:
        return {"external_ip": self.external_ip, "status": self.status,
                "outcomes": [asdict(o) for o in self.outcomes], "ok": self.ok}


def wanted_ports(extra: Iterable[int] = ()) -> list[int]:
    ports = list(MAIL_PORTS) + [p for p in extra if p in WEB_PORTS]
    return [p for p in ports if p not in NEVER]


def decide(ports: Iterable[int], lan_ip: str, current: dict[int, Mapping | None]) -> dict[int, str]:
    """What to do per port: "add" (free), "renew" (ours), "conflict" (another host's)."""
    actions = {}
    for port in ports:
        m = current.get(port)
        if m is None:
            actions[port] = "add"
        elif m.internal_client == lan_ip and m.internal_port == port:
            actions[port] = "renew"
        else:
            actions[port] = "conflict"
    return actions


class Igd:
    """The router's Internet Gateway Device, through miniupnpc."""

    def __init__(self, settings: UpnpSettings, discover_ms: int = 1500) -> None:
        try:
            import miniupnpc  # Debian: python3-miniupnpc
        except ImportError:
            raise UpnpError("python3-miniupnpc is not installed; `apt install python3-miniupnpc`") from None
        self.u = miniupnpc.UPnP()
        self.u.discoverdelay = discover_ms
        try:
            if settings.igd_url:
                self.u.selectigd(settings.igd_url)
            else:
                if self.u.discover() == 0:
                    raise UpnpError("no UPnP router answered on the LAN (SSDP)")
                self.u.selectigd()
        except UpnpError:
            raise
        except Exception as e:  # miniupnpc raises bare Exception with the UPnP error text
            raise UpnpError(f"no usable UPnP router (IGD): {e}") from None
        self.lan_ip: str = self.u.lanaddr

    def status(self) -> str:
        try:
            return str(self.u.statusinfo()[0])
        except Exception as e:
            return f"unknown ({e})"

    def external_ip(self) -> str | None:
        try:
            ip = self.u.externalipaddress()
        except Exception:
            return None
        return ip or None

    def mapping(self, port: int) -> Mapping | None:
        try:
            m = self.u.getspecificportmapping(port, "TCP")
        except Exception:
            return None
        if not m:
            return None
        client, iport, desc, _enabled, lease = m
        return Mapping(port, client, int(iport), desc, int(lease))

    def add(self, port: int, lan_ip: str, lease: int) -> None:
        self.u.addportmapping(port, "TCP", lan_ip, port, f"{DESCRIPTION} {port}", "", lease)

    def delete(self, port: int) -> None:
        self.u.deleteportmapping(port, "TCP")


def renew(igd: Igd, settings: UpnpSettings, extra: Iterable[int] = ()) -> Report:
    """Map (or refresh the lease of) every wanted port; never touch another host's mapping."""
    rep = Report(external_ip=igd.external_ip(), status=igd.status())
    ports = wanted_ports(extra)
    current = {p: igd.mapping(p) for p in ports}
    for port, action in decide(ports, igd.lan_ip, current).items():
        if action == "conflict":
            m = current[port]
            assert m is not None
            rep.outcomes.append(Outcome(port, "conflict",
                                        f"the router forwards it to {m.internal_client}:{m.internal_port} "
                                        f"(\"{m.description}\"); free it in the router's settings"))
            continue
        try:
            igd.add(port, igd.lan_ip, settings.lease_seconds)
            rep.outcomes.append(Outcome(port, "added" if action == "add" else "renewed"))
        except Exception as e:
            rep.outcomes.append(Outcome(port, "refused", f"the router refused: {e}"))
    return rep


def remove(igd: Igd, ports: Iterable[int] | None = None) -> Report:
    """Delete our mappings (those pointing at this host); leave everything else alone."""
    rep = Report(external_ip=igd.external_ip(), status=igd.status())
    for port in ports if ports is not None else wanted_ports(WEB_PORTS):
        m = igd.mapping(port)
        if m is None:
            rep.outcomes.append(Outcome(port, "absent"))
        elif m.internal_client != igd.lan_ip:
            rep.outcomes.append(Outcome(port, "kept", f"belongs to {m.internal_client}"))
        else:
            try:
                igd.delete(port)
                rep.outcomes.append(Outcome(port, "removed"))
            except Exception as e:
                rep.outcomes.append(Outcome(port, "refused", str(e)))
    return rep


def save_state(root: system.Root, rep: Report) -> None:
    state = schema.stamped({**rep.as_dict(), "at": int(time.time())}, STATE_VERSION)
    root.write_atomic(STATE_PATH, system.FileState(json.dumps(state, indent=1).encode(), 0o644))


def load_state(root: system.Root) -> dict[str, Any] | None:
    raw = root.read(STATE_PATH).content
    try:
        data = json.loads(raw) if raw else None
    except ValueError:
        return None
    # A newer agent's file (the box was downgraded) is not read: the next renewal writes anew.
    return data if isinstance(data, dict) and schema.state_version(data) == STATE_VERSION else None
