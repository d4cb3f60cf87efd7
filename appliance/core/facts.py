"""Facts: what the agent learns from the machine, as plain data.

Parsing is pure: `from_ip_json` takes the JSON that `ip -j addr` and `ip -j route` print,
so tests feed recorded output. `gather` is the one place that runs those commands.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from dataclasses import dataclass, field
from typing import Any

from appliance.core import system
from appliance.core.settings import LanOverride


@dataclass(frozen=True)
class Facts:
    hostname: str
    lan_interface: str | None = None
    lan_prefixes: tuple[str, ...] = ()  # networks, e.g. "198.18.0.0/24", "fd00:1::/64"
    lan_addresses: tuple[str, ...] = ()  # the box's own addresses on the LAN interface
    gateway4: str | None = None
    gateway6: str | None = None
    # The router's public address when known (UPnP, or [lan] public_address): hairpinned LAN
    # connections arrive from it.
    public_address: str | None = None
    notes: tuple[str, ...] = field(default=())  # what detection could not decide, for status

    def as_dict(self) -> dict[str, Any]:
        return {
            "hostname": self.hostname,
            "lan_interface": self.lan_interface,
            "lan_prefixes": list(self.lan_prefixes),
            "lan_addresses": list(self.lan_addresses),
            "gateway4": self.gateway4,
            "gateway6": self.gateway6,
            "router_addresses": list(self.router_addresses),
            "public_address": self.public_address,
            "notes": list(self.notes),
        }

    @property
    def router_addresses(self) -> tuple[str, ...]:
        """The router's own addresses on the LAN (its v4 and v6 gateways)."""
        return tuple(a for a in (self.gateway4, self.gateway6) if a)


def _default_route(routes: list[dict[str, Any]]) -> tuple[str | None, str | None]:
    """(interface, gateway) of the best default route, lowest metric first."""
    best: tuple[int, str | None, str | None] | None = None
    for r in routes:
        if r.get("dst") not in ("default", "0.0.0.0/0", "::/0"):
            continue
        if r.get("type", "unicast") != "unicast":
            continue
        metric = int(r.get("metric", 0))
        if best is None or metric < best[0]:
            best = (metric, r.get("dev"), r.get("gateway"))
    return (best[1], best[2]) if best else (None, None)


def from_ip_json(
    addr_json: str,
    route4_json: str,
    route6_json: str = "[]",
    hostname: str = "localhost",
    override: LanOverride | None = None,
) -> Facts:
    """Derive LAN facts from `ip -j addr`, `ip -j -4 route`, `ip -j -6 route` output."""
    links = json.loads(addr_json or "[]")
    routes4 = json.loads(route4_json or "[]")
    routes6 = json.loads(route6_json or "[]")
    notes: list[str] = []
    iface4, gw4 = _default_route(routes4)
    iface6, gw6 = _default_route(routes6)
    iface = (override.interface if override and override.interface else None) or iface4 or iface6
    if iface is None:
        notes.append("no default route: the LAN interface could not be detected; set [lan] interface")

    prefixes: list[str] = []
    addresses: list[str] = []
    for link in links:
        if link.get("ifname") != iface:
            continue
        for a in link.get("addr_info", []):
            if a.get("scope") != "global":
                continue  # link-local and host addresses say nothing about the LAN range
            local = a.get("local")
            plen = a.get("prefixlen")
            if local is None or plen is None:
                continue
            iface_net = ipaddress.ip_interface(f"{local}/{plen}")
            addresses.append(str(iface_net.ip))
            if str(iface_net.network) not in prefixes:
                prefixes.append(str(iface_net.network))
    if override and override.prefixes:
        prefixes = list(override.prefixes)
    elif iface and not prefixes:
        notes.append(f"interface {iface} has no global address: set [lan] prefixes")
    return Facts(
        hostname=hostname,
        lan_interface=iface,
        lan_prefixes=tuple(prefixes),
        lan_addresses=tuple(addresses),
        gateway4=gw4 if iface4 == iface else None,
        gateway6=gw6 if iface6 == iface else None,
        notes=tuple(notes),
    )


def lan_problems(override: LanOverride, addr_json: str, route4_json: str = "[]") -> list[str]:
    """What in the [lan] settings this machine contradicts: an interface it does not have, or
    prefixes that hold none of that interface's addresses. Either would build the firewall and
    fail2ban's LAN exemptions around a network that is not there."""
    links = json.loads(addr_json or "[]")
    names = [str(link.get("ifname")) for link in links if link.get("ifname") not in (None, "lo")]
    problems: list[str] = []
    if override.interface and override.interface not in names:
        problems.append(f'lan.interface: "{override.interface}" is not an interface of this machine '
                        f"(it has {', '.join(names) or 'none'}); name one of them, or remove the "
                        "line to detect it")
        return problems
    if not override.prefixes:
        return problems
    iface = override.interface or _default_route(json.loads(route4_json or "[]"))[0]
    addresses = [ipaddress.ip_address(a["local"]) for link in links if link.get("ifname") == iface
                 for a in link.get("addr_info", []) if a.get("scope") == "global" and a.get("local")]
    nets = [ipaddress.ip_network(p, strict=False) for p in override.prefixes]
    if iface and not any(a in n for a in addresses for n in nets if a.version == n.version):
        shown = ", ".join(str(a) for a in addresses) or "no global address"
        problems.append(f"lan.prefixes: {list(override.prefixes)} hold no address of {iface} "
                        f"({shown}); give the network {iface} is on, or remove the line to detect it")
    return problems


def check_lan(override: LanOverride, path: str) -> None:
    """Refuse settings this machine contradicts (exit 2, nothing changed)."""
    from appliance.core.errors import SettingsError

    problems = lan_problems(override, system.run(["ip", "-j", "addr", "show"], check=False).stdout,
                            system.run(["ip", "-j", "-4", "route", "show"], check=False).stdout)
    if problems:
        raise SettingsError(problems, path)


# Checks `appliance check` makes only where the settings will be used (on the box).
CHECKS_ON_THE_BOX = ("lan.interface exists", "lan.prefixes hold an address of that interface")


def settled(override: LanOverride | None = None, wait: float = 60.0, step: float = 0.5) -> Facts:
    """The running machine once its network is up: at boot the agent may start before it (the
    first boot makes its keys meanwhile), and a firewall built around no LAN would lock the
    owner out. Waits at most `wait` seconds for a default route (IPv4 or IPv6), then takes what
    there is (a box without a network still gets its configuration)."""
    import time

    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        routes = [json.loads(system.run(["ip", "-j", family, "route", "show", "default"],
                                        check=False).stdout or "[]") for family in ("-4", "-6")]
        if any(_default_route(r)[0] for r in routes):
            break
        time.sleep(step)
    return gather(override)


def gather(override: LanOverride | None = None) -> Facts:
    """Read the running machine."""
    addr = system.run(["ip", "-j", "addr", "show"], check=False).stdout
    r4 = system.run(["ip", "-j", "-4", "route", "show"], check=False).stdout
    r6 = system.run(["ip", "-j", "-6", "route", "show"], check=False).stdout
    return from_ip_json(addr, r4, r6, hostname=socket.getfqdn(), override=override)
