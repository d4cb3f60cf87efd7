"""The user's settings: one TOML file, parsed and validated into plain, typed data.

Every problem is reported at once, each naming the field, the bad value and the fix,
e.g. ``users[1].address: "bob@other.org" is outside domain "example.org"; ...``.
Only the standard library is used here, so `appliance check` works anywhere.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .defence_settings import KNOWN_LAN_EXTRA, SECTIONS, Defence
from .defence_settings import parse as parse_defence
from .errors import SettingsError
from .privacy import Privacy
from .privacy import parse as parse_privacy
from .status_settings import Status
from .status_settings import parse as parse_status

DEFAULT_PATH = Path("/etc/appliance/settings.toml")

# RFC 1035 label: letters, digits, hyphens; not starting or ending with a hyphen.
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
# Local parts we accept: the dot-atom subset every client and MTA handles.
_LOCAL = re.compile(r"^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")

# Accepted password hash formats, strongest first, with the Dovecot scheme each maps to.
# SHA512-CRYPT is the floor (issue #3); MD5-crypt ($1$) and SHA256-crypt ($5$) are refused.
HASH_SCHEMES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^\$argon2id\$v=\d+\$m=\d+,t=\d+,p=\d+\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+$"), "ARGON2ID"),
    (re.compile(r"^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$"), "BLF-CRYPT"),
    (re.compile(r"^\$y\$[./A-Za-z0-9]+\$[./A-Za-z0-9]*\$[./A-Za-z0-9]{43}$"), "CRYPT"),
    (re.compile(r"^\$6\$(rounds=\d+\$)?[./A-Za-z0-9]{1,16}\$[./A-Za-z0-9]{86}$"), "SHA512-CRYPT"),
)
HASH_FIX = (
    "use a SHA512-CRYPT or stronger hash: run `appliance user passwd ADDRESS`, "
    "or `openssl passwd -6` and paste its output"
)

RESERVED_LOCALS = ("postmaster", "abuse", "root")
KNOWN_TOP = {"domain", "hostname", "message_size_limit_mb", "postmaster", "users", "relay", "lan",
             "upnp", "reachability"}
KNOWN_USER = {"address", "password_hash", "aliases", "encrypt"}
# Storage of a user's incoming mail without an OpenPGP key (issue #7): with a key it is always
# encrypted. "when-key": plaintext until a key is imported; "required": deferred (451) until then.
ENCRYPT_MODES = ("when-key", "required")
KNOWN_LAN = {"interface", "prefixes"} | KNOWN_LAN_EXTRA
KNOWN_TOP |= set(SECTIONS)  # [firewall], [fail2ban], [ssh], [limits]: defence_settings.py
KNOWN_TOP |= {"certs", "dns", "web"}  # issues #6, #9
KNOWN_TOP |= {"privacy"}  # issue #10: privacy.py
KNOWN_TOP |= {"spam"}  # issue #9: rspamd
KNOWN_TOP |= {"status"}  # issue #9: `appliance status`, status_settings.py
# rspamd's DNS blocklist rules (Debian's modules.d/rbl.conf) and the zone each one queries;
# `[spam] blocklists` picks among them (docs/outside-parties.md lists the default ones).
SPAM_BLOCKLISTS = {
    "spamhaus": "zen.spamhaus.org", "mailspike": "rep.mailspike.net",
    "senderscore": "bl.score.senderscore.com", "sem": "bl.spameatingmonkey.net",
    "semIPv6": "bl.ipv6.spameatingmonkey.net", "dnswl": "list.dnswl.org",
    "dnswl_dwl": "dwl.dnswl.org", "virusfree": "bip.virusfree.cz",
    "nixspam": "ix.dnsbl.manitu.net", "blocklistde": "bl.blocklist.de",
    "MSBL_EBL": "ebl.msbl.org", "SURBL_MULTI": "multi.surbl.org", "URIBL_MULTI": "multi.uribl.com",
    "DBL": "dbl.spamhaus.org", "SPAMHAUS_ZEN_URIBL": "zen.spamhaus.org",
    "SEM_URIBL_UNKNOWN": "uribl.spameatingmonkey.net",
    "SEM_URIBL_FRESH15_UNKNOWN": "fresh15.spameatingmonkey.net",
    "RSPAMD_URIBL": "uribl.rspamd.com", "RSPAMD_EMAILBL": "email.rspamd.com",
}
# "full": rspamd's scanner with Bayes learning from the Junk folder; "light": DKIM signing and
# SPF/DKIM/DMARC checks only, for 512 MB boards (docs/spam.md has the figures).
SPAM_MODES = ("full", "light")
MAX_SIZE_MB = 1024


@dataclass(frozen=True)
class User:
    address: str
    password_hash: str
    aliases: tuple[str, ...] = ()
    encrypt: str = "when-key"

    @property
    def dovecot_scheme(self) -> str:
        return hash_scheme(self.password_hash) or "SHA512-CRYPT"


@dataclass(frozen=True)
class LanOverride:
    interface: str | None = None
    prefixes: tuple[str, ...] = ()


@dataclass(frozen=True)
class RelaySection:
    """Outbound mail through a smarthost: that party sees every message the box sends."""

    kind: str  # "smarthost"
    host: str
    port: int = 587  # 587: STARTTLS, required; 465: implicit TLS
    username: str = ""
    password_file: str = ""
    tls_ca_file: str | None = None  # default: the system's CA bundle


@dataclass(frozen=True)
class TunnelSection:
    """The user's own relay VPS: a WireGuard tunnel the box dials out to. The VPS forwards the
    mail ports to the box (TLS ends on the box) and carries its outbound port 25."""

    kind: str  # "wireguard"
    endpoint: str  # host:port of the VPS
    vps_public_key: str
    private_key_file: str
    box_address: str  # e.g. 10.77.0.2/30
    vps_address: str  # e.g. 10.77.0.1


@dataclass(frozen=True)
class WebSection:
    """The small HTTPS server (nginx): the MTA-STS policy at mta-sts.<domain>."""

    enabled: bool = False
    mta_sts_mode: str = "testing"  # RFC 8461: start in testing, enforce once `dns --check` passes
    mta_sts_max_age: int = 86400


@dataclass(frozen=True)
class SpamSection:
    """rspamd as Postfix's milter: DKIM signing, SPF/DKIM/DMARC checks, spam scoring (issue #9)."""

    mode: str = "full"
    dkim_key_bits: int = 2048
    # rspamd's DNS blocklist rules that stay on (full mode); every other one is off. The default
    # asks only about the sending server's address, never names or addresses from the mail.
    blocklists: tuple[str, ...] = ("spamhaus", "dnswl")


@dataclass(frozen=True)
class DnsSection:
    # The public addresses to publish, when the router cannot tell (no UPnP) or to override it.
    public_ipv4: str | None = None
    public_ipv6: str | None = None
    # `appliance dns --push`: RFC 2136 updates, signed with TSIG, to a DNS server the user runs.
    update_server: str | None = None
    update_key_name: str = "appliance-update"
    update_key_file: str | None = None  # the base64 HMAC-SHA256 secret alone


@dataclass(frozen=True)
class CertsSection:
    """Let's Encrypt (or another ACME CA) through certbot."""

    acme_server: str = "https://acme-v02.api.letsencrypt.org/directory"
    email: str | None = None  # expiry notices from the CA; none by default
    challenge: str = "http-01"  # or "dns-01" (RFC 2136 update to the user's DNS server)
    acme_ca_bundle: str | None = None  # a private ACME CA's root (test labs)
    dns_server: str | None = None
    dns_zone: str | None = None  # default: the domain
    tsig_key_name: str = "acme-update"
    tsig_key_file: str | None = None  # the base64 HMAC-SHA256 secret alone


@dataclass(frozen=True)
class UpnpSection:
    enabled: bool = True
    lease_seconds: int = 3600
    igd_url: str | None = None


@dataclass(frozen=True)
class ReachabilitySection:
    # Hosts (host or host:port) to test outbound SMTP against; none by default: no traffic the
    # user did not ask for.
    outbound_probe_hosts: tuple[str, ...] = ()
    # The user's own external probe (e.g. `appliance probe-server` on their relay VPS).
    probe_url: str | None = None
    probe_token_file: str | None = None


@dataclass(frozen=True)
class Settings:
    domain: str
    hostname: str
    users: tuple[User, ...]
    message_size_limit_mb: int = 25
    postmaster: str = ""  # the mailbox that receives postmaster@ and abuse@
    relay: RelaySection | TunnelSection | None = None
    lan: LanOverride = LanOverride()
    upnp: UpnpSection = UpnpSection()
    certs: CertsSection = CertsSection()
    dns: DnsSection = DnsSection()
    web: WebSection = WebSection()
    spam: SpamSection = SpamSection()
    reachability: ReachabilitySection = ReachabilitySection()
    defence: Defence = Defence()  # firewall, fail2ban, SSH, outbound limits (issue #8)
    privacy: Privacy = Privacy()  # typo guard, log retention (issue #10)
    status: Status = Status()  # blocklists, daily mail (issue #9)

    @property
    def message_size_limit_bytes(self) -> int:
        return self.message_size_limit_mb * 1024 * 1024


def hash_scheme(value: str) -> str | None:
    for pattern, scheme in HASH_SCHEMES:
        if pattern.match(value):
            return scheme
    return None


def _q(value: Any) -> str:
    """Quote a bad value for a message the way the user wrote it."""
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def valid_domain(name: str) -> bool:
    if not name or len(name) > 253 or "." not in name:
        return False
    return all(_LABEL.match(label) for label in name.split("."))


def split_address(address: str) -> tuple[str, str] | None:
    if address.count("@") != 1:
        return None
    local, domain = address.split("@")
    if not _LOCAL.match(local) or len(local) > 64 or not valid_domain(domain):
        return None
    return local, domain


class _Collector:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def add(self, where: str, value: Any, why: str, fix: str) -> None:
        self.problems.append(f"{where}: {_q(value)} {why}; {fix}")


def parse(data: dict[str, Any], path: str | None = None) -> Settings:
    """Validate a parsed TOML document. Raises SettingsError listing every problem."""
    c = _Collector()
    for key in sorted(set(data) - KNOWN_TOP):
        c.add(key, key, "is not a known setting", "remove it or check its spelling (see README)")

    domain = data.get("domain")
    if not isinstance(domain, str) or not valid_domain(domain.lower()):
        c.add("domain", domain, "is not a domain name", 'set it to your own domain, e.g. "example.org"')
        domain = ""
    elif domain != domain.lower():
        c.add("domain", domain, "has upper-case letters", f'write it as "{domain.lower()}"')

    hostname = data.get("hostname", f"mail.{domain}" if domain else "")
    if not isinstance(hostname, str) or not valid_domain(hostname):
        c.add("hostname", hostname, "is not a fully qualified host name",
              f'use a name under your domain, e.g. "mail.{domain or "example.org"}"')
    elif domain and not (hostname == domain or hostname.endswith("." + domain)):
        c.add("hostname", hostname, f'is outside domain "{domain}"',
              f'use a name under your domain, e.g. "mail.{domain}"')

    size = data.get("message_size_limit_mb", 25)
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_SIZE_MB:
        c.add("message_size_limit_mb", size, "is not a size in MiB",
              f"use a whole number between 1 and {MAX_SIZE_MB}, e.g. 25")
        size = 25

    users = _parse_users(data.get("users"), domain, c)

    postmaster = data.get("postmaster", users[0].address if users else "")
    mailboxes = {u.address for u in users}
    if users and postmaster not in mailboxes:
        c.add("postmaster", postmaster, "is not one of the users' addresses",
              f"name the mailbox that should receive postmaster@ and abuse@, e.g. {_q(users[0].address)}")

    relay = _parse_relay(data.get("relay", {}), c)

    lan = _parse_lan(data.get("lan", {}), c)
    upnp = _parse_upnp(data.get("upnp", {}), c)
    reach = _parse_reachability(data.get("reachability", {}), c)
    certs = _parse_certs(data.get("certs", {}), c)
    dns_section = _parse_dns(data.get("dns", {}), c)
    web = _parse_web(data.get("web", {}), c)
    spam = _parse_spam(data.get("spam", {}), c)
    defence = parse_defence(data, c.add)
    privacy = parse_privacy(data, c.add)
    status = parse_status(data, c.add)

    if c.problems:
        raise SettingsError(c.problems, path)
    return Settings(domain=domain, hostname=hostname, users=users, message_size_limit_mb=size,
                    postmaster=postmaster, relay=relay, lan=lan, upnp=upnp, reachability=reach,
                    defence=defence, certs=certs, privacy=privacy, dns=dns_section, web=web, spam=spam,
                    status=status)


def _parse_users(raw: Any, domain: str, c: _Collector) -> tuple[User, ...]:
    if raw is None:
        c.add("users", "", "is missing", "add at least one [[users]] entry with address and password_hash")
        return ()
    if not isinstance(raw, list) or not raw:
        c.add("users", raw, "is not a list of [[users]] tables", "add at least one [[users]] entry")
        return ()
    users: list[User] = []
    seen: dict[str, str] = {}
    for i, entry in enumerate(raw):
        where = f"users[{i}]"
        if not isinstance(entry, dict):
            c.add(where, entry, "is not a table", "write each user as a [[users]] section")
            continue
        for key in sorted(set(entry) - KNOWN_USER):
            c.add(f"{where}.{key}", key, "is not a known user setting",
                  "use address, password_hash, aliases and encrypt")
        encrypt = entry.get("encrypt", "when-key")
        if encrypt not in ENCRYPT_MODES:
            c.add(f"{where}.encrypt", encrypt, "is not a storage mode",
                  'use "when-key" (plaintext until a key is imported) or "required" '
                  "(mail waits in the queue until a key is imported)")
            encrypt = "when-key"
        address = _check_address(entry.get("address"), f"{where}.address", domain, c)
        pw = entry.get("password_hash")
        if not isinstance(pw, str) or hash_scheme(pw) is None:
            shown = pw if not isinstance(pw, str) else (pw[:4] + "…" if len(pw) > 4 else pw)
            c.add(f"{where}.password_hash", shown, "is not a supported password hash", HASH_FIX)
            pw = ""
        aliases_raw = entry.get("aliases", [])
        aliases: list[str] = []
        if not isinstance(aliases_raw, list):
            c.add(f"{where}.aliases", aliases_raw, "is not a list", 'write it as ["info@your.domain"]')
            aliases_raw = []
        for j, alias in enumerate(aliases_raw):
            a = _check_address(alias, f"{where}.aliases[{j}]", domain, c)
            if a:
                aliases.append(a)
        for name, field_where in [(address, f"{where}.address")] + [
            (a, f"{where}.aliases[{j}]") for j, a in enumerate(aliases)
        ]:
            if not name:
                continue
            if name in seen:
                c.add(field_where, name, f"is already used by {seen[name]}",
                      "give every address to exactly one user")
            else:
                seen[name] = field_where
            if name.split("@")[0] in RESERVED_LOCALS:
                c.add(field_where, name, "is reserved",
                      "postmaster@, abuse@ and root@ are delivered to the `postmaster` setting's mailbox")
        if address:
            users.append(User(address=address, password_hash=pw, aliases=tuple(aliases),
                              encrypt=encrypt))
    return tuple(users)


def _check_address(value: Any, where: str, domain: str, c: _Collector) -> str:
    if not isinstance(value, str) or split_address(value.lower()) is None:
        c.add(where, value, "is not an e-mail address", f'write it as "name@{domain or "example.org"}"')
        return ""
    if value != value.lower():
        c.add(where, value, "has upper-case letters", f"write it as {_q(value.lower())}")
        return ""
    if domain and value.split("@")[1] != domain:
        c.add(where, value, f'is outside domain "{domain}"',
              f'use an address ending in "@{domain}"')
        return ""
    return value


def _parse_lan(raw: Any, c: _Collector) -> LanOverride:
    if not isinstance(raw, dict):
        c.add("lan", raw, "is not a table", "write it as a [lan] section or remove it")
        return LanOverride()
    for key in sorted(set(raw) - KNOWN_LAN):
        c.add(f"lan.{key}", key, "is not a known LAN setting", "use interface and prefixes")
    iface = raw.get("interface")
    if iface is not None and (not isinstance(iface, str) or not re.match(r"^[A-Za-z0-9_.:-]{1,15}$", iface)):
        c.add("lan.interface", iface, "is not a network interface name", 'use a name like "eth0"')
        iface = None
    prefixes: list[str] = []
    raw_prefixes = raw.get("prefixes", [])
    if not isinstance(raw_prefixes, list):
        c.add("lan.prefixes", raw_prefixes, "is not a list", 'write it as ["192.168.1.0/24"]')
        raw_prefixes = []
    for i, p in enumerate(raw_prefixes):
        try:
            net = ipaddress.ip_network(p, strict=False) if isinstance(p, str) else None
        except ValueError:
            net = None
        if net is None:
            c.add(f"lan.prefixes[{i}]", p, "is not an IP network", 'use CIDR form, e.g. "192.168.1.0/24"')
        elif net.is_global or net.prefixlen == 0:
            c.add(f"lan.prefixes[{i}]", p, "is not a private LAN range",
                  "list only your home network, e.g. 192.168.1.0/24 or fd00::/64")
        else:
            prefixes.append(str(net))
    return LanOverride(interface=iface, prefixes=tuple(prefixes))


def _table(raw: Any, name: str, known: set[str], c: _Collector) -> dict[str, Any]:
    if not isinstance(raw, dict):
        c.add(name, raw, "is not a table", f"write it as a [{name}] section or remove it")
        return {}
    for key in sorted(set(raw) - known):
        c.add(f"{name}.{key}", key, f"is not a known {name} setting", f"use {', '.join(sorted(known))}")
    return raw


def _parse_relay(raw: Any, c: _Collector) -> RelaySection | TunnelSection | None:
    kind = raw.get("kind") if isinstance(raw, dict) else None
    if kind == "wireguard":
        return _parse_tunnel(raw, c)
    t = _table(raw, "relay", {"kind", "host", "port", "username", "password_file", "tls_ca_file"}, c)
    if not t:
        return None
    if kind != "smarthost":
        c.add("relay.kind", kind, "is not a relay kind",
              'use kind = "smarthost" (a submission relay) or "wireguard" (your own VPS)')
        return None
    host = t.get("host")
    if not isinstance(host, str) or not (valid_domain(host) or _is_ip(host)):
        c.add("relay.host", host, "is not a host name", 'use the smarthost\'s name, e.g. "smtp.example.net"')
        host = ""
    port = t.get("port", 587)
    if port not in (465, 587):
        c.add("relay.port", port, "is not a submission port",
              "use 587 (STARTTLS, required) or 465 (implicit TLS); port 25 offers no authentication")
        port = 587
    user = t.get("username", "")
    if not isinstance(user, str) or not user or any(ch.isspace() for ch in user):
        c.add("relay.username", user, "is not a user name", "use the login your smarthost gave you")
        user = ""
    pw = t.get("password_file", "")
    if not isinstance(pw, str) or not pw.startswith("/"):
        c.add("relay.password_file", pw, "is not an absolute path",
              'put the password alone in a root-only file, e.g. "/etc/appliance/relay.password"')
        pw = ""
    ca = t.get("tls_ca_file")
    if ca is not None and (not isinstance(ca, str) or not ca.startswith("/")):
        c.add("relay.tls_ca_file", ca, "is not an absolute path", "name a PEM file, or remove it")
        ca = None
    return RelaySection("smarthost", host, port, user, pw, ca)


_WG_KEY = re.compile(r"^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$")


def _parse_tunnel(raw: dict[str, Any], c: _Collector) -> TunnelSection | None:
    t = _table(raw, "relay", {"kind", "endpoint", "vps_public_key", "private_key_file",
                              "box_address", "vps_address"}, c)
    endpoint = t.get("endpoint", "")
    host, _, port = endpoint.rpartition(":") if isinstance(endpoint, str) else ("", "", "")
    if not (valid_domain(host) or _is_ip(host)) or not port.isdigit():
        c.add("relay.endpoint", endpoint, "is not host:port",
              'use your VPS\'s public address and WireGuard port, e.g. "198.51.100.7:51820"')
    key = t.get("vps_public_key", "")
    if not isinstance(key, str) or not _WG_KEY.match(key):
        c.add("relay.vps_public_key", key, "is not a WireGuard public key",
              "copy the key the relay playbook printed (44 characters ending in =)")
    pk = t.get("private_key_file", "/etc/appliance/wireguard.key")
    if not isinstance(pk, str) or not pk.startswith("/"):
        c.add("relay.private_key_file", pk, "is not an absolute path", 'use "/etc/appliance/wireguard.key"')
    box = t.get("box_address", "10.77.0.2/30")
    vps = t.get("vps_address", "10.77.0.1")
    try:
        box_if = ipaddress.ip_interface(box)
        vps_ip = ipaddress.ip_address(vps)
        if vps_ip not in box_if.network or vps_ip == box_if.ip:
            raise ValueError
    except (ValueError, TypeError):
        c.add("relay.box_address", f"{box} / {vps}", "are not two addresses of one small network",
              'use e.g. box_address = "10.77.0.2/30" and vps_address = "10.77.0.1"')
        return None
    if c.problems:
        return None
    return TunnelSection("wireguard", endpoint, key, pk, str(box_if), str(vps_ip))


def _parse_web(raw: Any, c: _Collector) -> WebSection:
    t = _table(raw, "web", {"enabled", "mta_sts_mode", "mta_sts_max_age"}, c)
    enabled = t.get("enabled", False)
    if not isinstance(enabled, bool):
        c.add("web.enabled", enabled, "is not true or false", "write enabled = true or false")
        enabled = False
    mode = t.get("mta_sts_mode", "testing")
    if mode not in ("testing", "enforce", "none"):
        c.add("web.mta_sts_mode", mode, "is not an MTA-STS mode",
              'use "testing" first, "enforce" once `appliance dns --check` passes, or "none"')
        mode = "testing"
    age = t.get("mta_sts_max_age", 86400)
    if isinstance(age, bool) or not isinstance(age, int) or not 300 <= age <= 31557600:
        c.add("web.mta_sts_max_age", age, "is not a duration in seconds",
              "use 86400 (a day) while testing, 604800 (a week) or more when enforcing")
        age = 86400
    return WebSection(enabled, mode, age)


def _parse_spam(raw: Any, c: _Collector) -> SpamSection:
    t = _table(raw, "spam", {"mode", "dkim_key_bits", "blocklists"}, c)
    mode = t.get("mode", "full")
    if mode not in SPAM_MODES:
        c.add("spam.mode", mode, "is not a filter mode",
              'use "full" (1 GB boards and up) or "light" (512 MB boards: DKIM, SPF, DMARC only)')
        mode = "full"
    bits = t.get("dkim_key_bits", 2048)
    if bits not in (2048, 3072, 4096):
        c.add("spam.dkim_key_bits", bits, "is not a DKIM RSA key size",
              "use 2048 (fits one DNS TXT string set everywhere), 3072 or 4096")
        bits = 2048
    lists = t.get("blocklists", list(SpamSection.blocklists))
    if not isinstance(lists, list) or not all(x in SPAM_BLOCKLISTS for x in lists):
        c.add("spam.blocklists", lists, "names a blocklist rspamd has no rule for",
              "use a list of: " + ", ".join(sorted(SPAM_BLOCKLISTS)) + " ([] for none)")
        lists = list(SpamSection.blocklists)
    return SpamSection(mode, bits, tuple(dict.fromkeys(lists)))


def _parse_dns(raw: Any, c: _Collector) -> DnsSection:
    t = _table(raw, "dns", {"public_ipv4", "public_ipv6", "update_server", "update_key_name",
                            "update_key_file"}, c)
    got: dict[str, str | None] = {}
    for key, version in (("public_ipv4", 4), ("public_ipv6", 6)):
        v = t.get(key)
        ok = isinstance(v, str) and _is_ip(v) and ipaddress.ip_address(v).version == version
        if v is not None and not ok:
            c.add(f"dns.{key}", v, f"is not an IPv{version} address",
                  "give your public address, or leave it out to ask the router")
            v = None
        got[key] = v
    server = t.get("update_server")
    if server is not None and not (isinstance(server, str) and _is_ip(server)):
        c.add("dns.update_server", server, "is not an IP address",
              "give the address of your DNS server that takes RFC 2136 updates")
        server = None
    key_name = t.get("update_key_name", "appliance-update")
    if not isinstance(key_name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]{0,62}", key_name):
        c.add("dns.update_key_name", key_name, "is not a TSIG key name",
              'use the name your DNS server knows the key by, e.g. "appliance-update"')
        key_name = "appliance-update"
    key_file = t.get("update_key_file")
    if key_file is not None and not (isinstance(key_file, str) and key_file.startswith("/")):
        c.add("dns.update_key_file", key_file, "is not an absolute path",
              "give the file holding the base64 TSIG secret, e.g. /etc/appliance/dns-update.key")
        key_file = None
    if (server is None) != (key_file is None):
        c.add("dns.update_server", server, "needs update_key_file too (and the other way round)",
              "set both, or neither")
    return DnsSection(got["public_ipv4"], got["public_ipv6"], server, key_name, key_file)


def _parse_certs(raw: Any, c: _Collector) -> CertsSection:
    known = {"acme_server", "email", "challenge", "acme_ca_bundle", "dns_server", "dns_zone",
             "tsig_key_name", "tsig_key_file"}
    t = _table(raw, "certs", known, c)
    d = CertsSection()
    server = t.get("acme_server", d.acme_server)
    if not isinstance(server, str) or not server.startswith("https://"):
        c.add("certs.acme_server", server, "is not an https URL",
              "leave it out for Let's Encrypt, or give your ACME CA's directory URL")
        server = d.acme_server
    email = t.get("email")
    if email is not None and (not isinstance(email, str) or split_address(email) is None):
        c.add("certs.email", email, "is not an e-mail address", "give an address, or leave it out")
        email = None
    challenge = t.get("challenge", "http-01")
    if challenge not in ("http-01", "dns-01"):
        c.add("certs.challenge", challenge, "is not a challenge type",
              'use "http-01" (port 80 opened only during the challenge) or "dns-01"')
        challenge = "http-01"
    paths = {}
    for key in ("acme_ca_bundle", "tsig_key_file"):
        v = t.get(key)
        if v is not None and (not isinstance(v, str) or not v.startswith("/")):
            c.add(f"certs.{key}", v, "is not an absolute path", "name the file, or leave it out")
            v = None
        paths[key] = v
    dns_server = t.get("dns_server")
    if dns_server is not None and not (isinstance(dns_server, str) and _is_ip(dns_server)):
        c.add("certs.dns_server", dns_server, "is not an IP address",
              "give the address of the DNS server that accepts your RFC 2136 updates")
        dns_server = None
    if challenge == "dns-01" and (dns_server is None or paths["tsig_key_file"] is None):
        c.add("certs.challenge", challenge, "needs dns_server and tsig_key_file",
              "set both, or use http-01")
    zone = t.get("dns_zone")
    if zone is not None and (not isinstance(zone, str) or not valid_domain(zone)):
        c.add("certs.dns_zone", zone, "is not a zone name", "use your domain, or leave it out")
        zone = None
    key_name = t.get("tsig_key_name", d.tsig_key_name)
    if not isinstance(key_name, str) or not key_name:
        c.add("certs.tsig_key_name", key_name, "is not a key name", 'use e.g. "acme-update"')
        key_name = d.tsig_key_name
    return CertsSection(server, email, challenge, paths["acme_ca_bundle"], dns_server, zone,
                        key_name, paths["tsig_key_file"])


def _parse_upnp(raw: Any, c: _Collector) -> UpnpSection:
    t = _table(raw, "upnp", {"enabled", "lease_seconds", "igd_url"}, c)
    enabled = t.get("enabled", True)
    if not isinstance(enabled, bool):
        c.add("upnp.enabled", enabled, "is not true or false", "write enabled = true or enabled = false")
        enabled = True
    lease = t.get("lease_seconds", 3600)
    if isinstance(lease, bool) or not isinstance(lease, int) or not 120 <= lease <= 86400:
        c.add("upnp.lease_seconds", lease, "is not a lease in seconds",
              "use 120 to 86400; the timer renews at half the lease (default 3600)")
        lease = 3600
    url = t.get("igd_url")
    if url is not None and (not isinstance(url, str) or not re.match(r"^https?://[^\s]+$", url)):
        c.add("upnp.igd_url", url, "is not an http URL",
              'use the router\'s rootDesc URL, e.g. "http://192.168.1.1:5000/rootDesc.xml", or remove it')
        url = None
    return UpnpSection(enabled, lease, url or None)


def _parse_reachability(raw: Any, c: _Collector) -> ReachabilitySection:
    t = _table(raw, "reachability", {"outbound_probe_hosts", "probe_url", "probe_token_file"}, c)
    hosts = t.get("outbound_probe_hosts", [])
    good: list[str] = []
    if not isinstance(hosts, list):
        c.add("reachability.outbound_probe_hosts", hosts, "is not a list", 'write ["mx.example.net"]')
        hosts = []
    for i, h in enumerate(hosts):
        name, _, port = h.partition(":") if isinstance(h, str) else ("", "", "")
        bad_port = bool(port) and not port.isdigit()
        if not isinstance(h, str) or not (valid_domain(name) or _is_ip(name)) or bad_port:
            c.add(f"reachability.outbound_probe_hosts[{i}]", h, "is not a host or host:port",
                  'use a mail server you may test against, e.g. "mx.example.net" or "192.0.2.25:25"')
        else:
            good.append(h)
    url = t.get("probe_url")
    if url is not None and (not isinstance(url, str) or not re.match(r"^https?://[^\s]+$", url)):
        c.add("reachability.probe_url", url, "is not an http(s) URL",
              "use the URL of your own probe (see README, Reachability), or remove it")
        url = None
    token = t.get("probe_token_file")
    if token is not None and (not isinstance(token, str) or not token.startswith("/")):
        c.add("reachability.probe_token_file", token, "is not an absolute path",
              'use e.g. "/etc/appliance/probe.token"')
        token = None
    return ReachabilitySection(tuple(good), url or None, token)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def load(path: Path | str = DEFAULT_PATH) -> Settings:
    """Read and validate a settings file. Raises SettingsError (exit code 2) on any problem."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise SettingsError([f"{p}: file not found; create it (see README, 'Settings')"]) from None
    except OSError as e:
        raise SettingsError([f"{p}: cannot be read ({e.strerror}); check its permissions"]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise SettingsError(["file is not UTF-8 text; save it as UTF-8"], str(p)) from None
    except tomllib.TOMLDecodeError as e:
        raise SettingsError([_duplicate_key(raw.decode("utf-8"), str(e))
                             or f"TOML syntax error: {e}; fix the line it names"], str(p)) from None
    return parse(data, str(p))


def _duplicate_key(text: str, error: str) -> str:
    """tomllib says only "Cannot overwrite a value (at line 3, column 24)" for a key given twice;
    name the key and its section like every other settings error."""
    m = re.match(r"Cannot overwrite a value \(at line (\d+),", error)
    lines = text.splitlines()
    if not m or not 0 < int(m.group(1)) <= len(lines):
        return ""
    n = int(m.group(1))
    key = lines[n - 1].partition("=")[0].strip().strip('"')
    start = next((i for i in range(n - 2, -1, -1) if lines[i].strip().startswith("[")), -1)
    section = lines[start].strip() if start >= 0 else ""
    where = f"{section.strip('[]')}.{key}" if section else key
    first = next((i + 1 for i in range(start + 1, n - 1)
                  if "=" in lines[i] and lines[i].partition("=")[0].strip().strip('"') == key), None)
    again = f" (first on line {first})" if first else ""
    return (f"{where}: given twice, on line {n}{again}"
            f"{f' in {section}' if section else ''}; keep one of them")
