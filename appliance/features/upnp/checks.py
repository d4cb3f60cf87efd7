"""The status checks of the router's port mappings and of reachability from outside."""

from __future__ import annotations

from appliance.core.checks import FAIL, OK, WARN, Context, Result


def check_upnp(c: Context) -> list[Result]:
    from appliance.features.upnp import client as upnp

    if not c.s.upnp.enabled or getattr(c.s.relay, "kind", None) == "wireguard":
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
