"""The policy service's configuration file (/etc/appliance/limits.conf) and its names: read by
the daemon (policyd.py) and by the agent, which validates the file before it goes live, without
loading the daemon's event loop."""

from __future__ import annotations

from dataclasses import dataclass

from appliance.core import policy

CONF = "/etc/appliance/limits.conf"
HOST, PORT = "127.0.0.1", 10031
PIDFILE = "/run/appliance-policyd.pid"
LOG = "/var/log/appliance-policyd.log"
HOUR, DAY = 3600, 86400


NAME = "appliance-policyd"


@dataclass(frozen=True)
class Config:
    messages_per_hour: int
    messages_per_day: int
    recipients_per_message: int
    global_per_hour: int
    postmaster: str
    notify_via: str = "127.0.0.1:25"
    checks: tuple[str, ...] = ()  # the modules of other features' checks (core/policy.py)


def parse_config(text: str) -> Config:
    data: dict[str, object] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, eq, value = (x.strip() for x in line.partition("="))
        if not eq or key not in Config.__dataclass_fields__:
            raise ValueError(f"line {n}: expected one of {', '.join(Config.__dataclass_fields__)} = value")
        data[key] = policy.names(value) if key == "checks" else int(value) if value.isdigit() else value
    c = Config(**data)  # type: ignore[arg-type]
    for name in ("messages_per_hour", "messages_per_day", "recipients_per_message", "global_per_hour"):
        v = getattr(c, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a whole number >= 1, not {v!r}")
    if "@" not in c.postmaster:
        raise ValueError(f"postmaster must be an address, not {c.postmaster!r}")
    return c
