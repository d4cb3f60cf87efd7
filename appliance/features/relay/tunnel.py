"""Outbound through a smarthost ([relay] kind = "smarthost").

Fails closed: TLS is mandatory and verified (`smtp_tls_security_level = secure`, the
certificate must name the smarthost and chain to a trusted CA), so the password is never sent
in clear and a smarthost with an untrusted certificate gets nothing: the mail stays deferred in
the queue. The party running the smarthost sees every message the box sends; `appliance
reachability` and the apply output say so.
"""

from __future__ import annotations

from pathlib import Path

from appliance.core import system
from appliance.core.errors import SettingsError
from appliance.core.plan import FileSpec, Inputs
from appliance.core.settings import Settings
from appliance.features.relay.settings import RelaySection, TunnelSection

SYSTEM_CA = "/etc/ssl/certs/ca-certificates.crt"
WG_CONF = "/etc/appliance/wg-relay.conf"
WG_IF = "wg-relay"
WG_TABLE = "51820"


def smarthost(s: Settings) -> RelaySection | None:
    return s.relay if isinstance(s.relay, RelaySection) else None


def tunnel(s: Settings) -> TunnelSection | None:
    return s.relay if isinstance(s.relay, TunnelSection) else None


def read_password(s: Settings) -> str | None:
    relay = smarthost(s)
    if relay is None:
        return None
    try:
        pw = Path(relay.password_file).read_text(encoding="utf-8").strip()
    except OSError as e:
        raise SettingsError([f"relay.password_file: \"{relay.password_file}\" cannot be read "
                             f"({e.strerror}); put the smarthost password alone in that file, "
                             "mode 600"]) from None
    if not pw or "\n" in pw:
        raise SettingsError([f"relay.password_file: \"{relay.password_file}\" must hold the "
                             "password on one line"])
    return pw


def notice(s: Settings) -> str | None:
    relay, tun = smarthost(s), tunnel(s)
    if relay is not None:
        return (f"outgoing mail is relayed through {relay.host}:{relay.port}: whoever runs it "
                "sees every message you send (addresses and content)")
    if tun is not None:
        return (f"mail reaches the internet through your relay {tun.endpoint} (WireGuard): it "
                "forwards connections; TLS ends on this box, so it sees addresses and timing, "
                "and the content of mail only where the other side offers no TLS")
    return None


def relay_feature(i: Inputs) -> list[FileSpec]:
    """A smarthost: its SASL password table. A tunnel: the box's side of it and its unit.
    Neither: no file at all, so no password outlives the setting and the tunnel service is
    stopped (which takes the tunnel down)."""
    s = i.settings
    relay, tun = smarthost(s), tunnel(s)
    if relay is not None:
        password = i.secrets.get("relay_password")
        if password is None:
            raise SettingsError(["relay: the smarthost password was not read; run `appliance apply`"])
        rows = [(f"[{relay.host}]:{relay.port}", f"{relay.username}:{password}")]
        return [FileSpec("etc/postfix/sasl_passwd.j2", "/etc/postfix/sasl_passwd", "postfix",
                         0o600, secret=True, order=10, extra=(("sasl_rows", rows),))]
    if tun is not None:
        # The private key stays in its own file, never in this one.
        return [FileSpec("etc/appliance/wg-relay.conf.j2", WG_CONF, "wg-relay", 0o600, order=10,
                         extra=(("tunnel", tun),)),
                FileSpec("etc/systemd/system/appliance-relay.service.j2",
                         "/etc/systemd/system/appliance-relay.service", "wg-relay", order=10)]
    return []


# --- the tunnel, brought up and down (`appliance relay up|down`, the service's reload) --------
def _tunnel_params(root: system.Root) -> dict[str, str] | None:
    text = (root.read(WG_CONF).content or b"").decode()
    for line in text.splitlines():
        if line.startswith("# box_address="):
            return dict(part.split("=", 1) for part in line[2:].split())
    return None


def _rules() -> str:
    return system.run(["ip", "rule", "show"], check=False).stdout


def up(root: system.Root) -> system.Result:
    """Make the live tunnel match WG_CONF (or take it down when that is empty). Idempotent."""
    p = _tunnel_params(root)
    if p is None:
        return down()
    if system.run(["ip", "link", "show", WG_IF], check=False).returncode != 0:
        made = system.run(["ip", "link", "add", WG_IF, "type", "wireguard"], check=False)
        if made.returncode != 0:  # no kernel WireGuard (containers, old kernels): userspace
            made = system.run_daemon(["wireguard-go", WG_IF])
            if made.returncode != 0:
                return made
    box_ip = p["box_address"].split("/")[0]
    steps = [
        ["wg", "setconf", WG_IF, str(root.host(WG_CONF))],
        ["wg", "set", WG_IF, "private-key", p["private_key_file"]],
        ["ip", "address", "replace", p["box_address"], "dev", WG_IF],
        ["ip", "link", "set", WG_IF, "up"],
        # Loose reverse-path filtering: forwarded connections arrive on the tunnel from
        # internet addresses that the main table would route elsewhere.
        ["sysctl", "-qw", f"net.ipv4.conf.{WG_IF}.rp_filter=2"],
        # Table 51820: everything through the tunnel. Used for (a) replies to connections the
        # VPS forwarded (they come from the box's tunnel address), so they go back the way they
        # came and the client's real address is kept; (b) outbound SMTP, which leaves from the
        # VPS's clean address.
        ["ip", "route", "replace", "default", "dev", WG_IF, "table", WG_TABLE],
    ]
    for argv in steps:
        res = system.run(argv, check=False)
        if res.returncode != 0:
            return res
    rules = _rules()
    wanted = [(f"from {box_ip} lookup {WG_TABLE}", ["from", box_ip, "lookup", WG_TABLE, "priority", "1000"]),
              ("dport 25 lookup " + WG_TABLE,
               ["ipproto", "tcp", "dport", "25", "lookup", WG_TABLE, "priority", "1001"])]
    for text, args in wanted:
        if text not in rules:
            res = system.run(["ip", "rule", "add", *args], check=False)
            if res.returncode != 0:
                return res
    return system.Result(("relay", "up"), 0, f"tunnel {WG_IF} up, {p['box_address']}", "")


def down() -> system.Result:
    for _ in range(4):  # bounded: remove our rules, however many were added
        rules = _rules()
        if f"lookup {WG_TABLE}" not in rules:
            break
        for prio in ("1000", "1001"):
            system.run(["ip", "rule", "del", "priority", prio], check=False)
    system.run(["ip", "route", "flush", "table", WG_TABLE], check=False)
    if system.run(["ip", "link", "show", WG_IF], check=False).returncode == 0:
        system.run(["ip", "link", "del", WG_IF], check=False)
    return system.Result(("relay", "down"), 0, "tunnel down", "")


def handshake_age(now: float | None = None) -> float | None:
    """Seconds since the last handshake with the VPS, or None if there never was one."""
    import time

    out = system.run(["wg", "show", WG_IF, "latest-handshakes"], check=False).stdout.split()
    if len(out) < 2 or out[1] == "0":
        return None
    return (now or time.time()) - int(out[1])
