"""The units that keep the router's mappings: map at boot, renew at half the lease, remove at
shutdown (no systemd in the lab: `appliance upnp watch` does the renewing there)."""

from __future__ import annotations

from appliance.core.plan import FileSpec, Inputs
from appliance.core.services import Scheduled

UNITS = "/etc/systemd/system"


def upnp_units(i: Inputs) -> list[FileSpec]:
    s = i.settings
    renew = (("renew_seconds", max(60, s.upnp.lease_seconds // 2)),)
    return [
        FileSpec("etc/systemd/system/appliance-upnp.service.j2", f"{UNITS}/appliance-upnp.service",
                 "upnp", order=10),
        FileSpec("etc/systemd/system/appliance-upnp-renew.service.j2",
                 f"{UNITS}/appliance-upnp-renew.service", "upnp", order=10),
        FileSpec("etc/systemd/system/appliance-upnp-renew.timer.j2",
                 f"{UNITS}/appliance-upnp-renew.timer", "upnp", order=20, extra=renew),
    ]


class UpnpTimer(Scheduled):
    """Under systemd: (re)start the renewal timer. Without systemd there is nothing to reload."""

    name = "upnp"
    unit = "appliance-upnp-renew.timer"
