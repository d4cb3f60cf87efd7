"""The tunnel to the user's relay VPS as a service the apply layer can reload and check."""

from __future__ import annotations

from pathlib import Path

from appliance.core import system
from appliance.core.errors import ValidationError
from appliance.core.services import Service
from appliance.features.relay import tunnel as relay


class WgRelay(Service):
    name = "wg-relay"
    unit = "appliance-relay.service"

    def validate(self, stage: Path) -> None:
        conf = stage / relay.WG_CONF.lstrip("/")
        if not conf.exists():
            return
        text = conf.read_text()
        if "[Peer]" in text:
            # key = value lines under [Peer]; the values themselves were checked in settings.
            for line in text.splitlines():
                if line and not line.startswith("#") and not line.startswith("[") and " = " not in line:
                    raise ValidationError(self.name, "wg-relay.conf check", f"bad line: {line!r}")

    def running(self) -> bool:
        return system.run(["ip", "link", "show", relay.WG_IF], check=False).returncode == 0

    def needs_start(self) -> bool:
        # Without a tunnel in the settings there is nothing to run.
        return relay._tunnel_params(self.root) is not None and not self.active()

    def direct_reload(self) -> system.Result:
        return relay.up(self.root)

    def direct_stop(self) -> system.Result:
        # No daemon of its own to signal: the tunnel is kernel state (or wireguard-go, which
        # exits with its interface).
        return relay.down()

    def probe(self, log_offset: int, settle: float = 10.0) -> str | None:
        params = relay._tunnel_params(self.root)
        if params is None:
            return "the tunnel is still up" if self.running() else None
        addr = system.run(["ip", "-brief", "address", "show", relay.WG_IF], check=False).stdout
        if params["box_address"].split("/")[0] not in addr:
            return f"{relay.WG_IF} does not carry {params['box_address']}"
        return None
