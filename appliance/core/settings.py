"""The user's settings: one TOML file, parsed and validated into plain, typed data.

Every problem is reported at once, each naming the field, the bad value and the fix,
e.g. ``users[1].address: "bob@other.org" is outside domain "example.org"; ...``.
Only the standard library is used here, so `appliance check` works anywhere.

The core parses what every box has (domain, host name, users, the LAN); each feature declares
the sections it owns as a `Section`, and `parse` runs them all, so the list of known keys, and
the settings object's attributes, come from the features that are registered.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.core import app_passwords, mail_rules, schema
from appliance.core.errors import SettingsError

DEFAULT_PATH = Path("/etc/appliance/settings.toml")

# RFC 1035 label: letters, digits, hyphens; not starting or ending with a hyphen.
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
# Local parts we accept: the dot-atom subset every client and MTA handles.
_LOCAL = re.compile(r"^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")

# Accepted password hash formats, strongest first, with the Dovecot scheme each maps to.
# SHA512-CRYPT is the floor; MD5-crypt ($1$) and SHA256-crypt ($5$) are refused.
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
VERSION = 1  # the format this parser reads (`settings_version`, 1 when absent): migrations.py
CORE_KEYS = frozenset({schema.SETTINGS_KEY, "domain", "hostname", "message_size_limit_mb",
                       "postmaster", "users", "lan"})
KNOWN_USER = {"address", "password_hash", "aliases", "encrypt", "app_passwords", "forward_to",
              "forward_keep", "vacation", "quota_mb"}
# Storage of a user's incoming mail without an OpenPGP key: with a key it is always encrypted.
# "when-key": plaintext until a key is imported; "required": deferred (451) until then.
ENCRYPT_MODES = ("when-key", "required")
KNOWN_LAN = frozenset({"interface", "prefixes"})
MAX_SIZE_MB = 1024
QUOTA_MB = (10, 1 << 20)  # a mailbox's own quota: 10 MiB to 1 TiB


@dataclass(frozen=True)
class User:
    address: str
    password_hash: str
    aliases: tuple[str, ...] = ()
    encrypt: str = "when-key"
    app_passwords: tuple[app_passwords.AppPassword, ...] = ()
    forward_to: tuple[str, ...] = ()  # mail_rules.py: forwarding and the away message
    forward_keep: bool = True
    vacation: mail_rules.Vacation | None = None
    quota_mb: int | None = None  # None: the box's default ([mail] quota_mb)

    @property
    def dovecot_scheme(self) -> str:
        return hash_scheme(self.password_hash) or "SHA512-CRYPT"


@dataclass(frozen=True)
class LanOverride:
    interface: str | None = None
    prefixes: tuple[str, ...] = ()


class Collector:
    """Every problem of a settings file, gathered so that all are reported at once."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def add(self, where: str, value: Any, why: str, fix: str) -> None:
        self.problems.append(f"{where}: {quote(value)} {why}; {fix}")


@dataclass(frozen=True)
class Section:
    """A part of the settings file that a feature owns.

    `parse` reads the whole document (a feature may own several tables, e.g. [firewall] and
    [ssh]) and returns the section's value, reporting problems to the collector; the value is
    then `settings.<name>`."""

    name: str
    keys: tuple[str, ...]  # the top-level keys it reads
    parse: Callable[[dict[str, Any], Collector], Any]
    lan_keys: tuple[str, ...] = ()  # keys it adds to [lan]
    # Each table's field descriptions (core.fields.Field), for the settings reference.
    fields: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Settings:
    domain: str
    hostname: str
    users: tuple[User, ...]
    message_size_limit_mb: int = 25
    postmaster: str = ""  # the mailbox that receives postmaster@ and abuse@
    lan: LanOverride = LanOverride()
    # Each registered feature's section by name (`settings.web`, `settings.spam`...).
    sections: Mapping[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "sections":
            raise AttributeError(name)
        try:
            return self.__dict__["sections"][name]
        except KeyError:
            raise AttributeError(f"the settings have no section {name!r}") from None

    def with_section(self, name: str, value: Any) -> Settings:
        from dataclasses import replace

        return replace(self, sections={**self.sections, name: value})

    @property
    def message_size_limit_bytes(self) -> int:
        return self.message_size_limit_mb * 1024 * 1024


def hash_scheme(value: str) -> str | None:
    for pattern, scheme in HASH_SCHEMES:
        if pattern.match(value):
            return scheme
    return None


def quote(value: Any) -> str:
    """Quote a bad value for a message the way the user wrote it."""
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"  # as the file has it
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


def parse(data: dict[str, Any], path: str | None, sections: Iterable[Section]) -> Settings:
    """Validate a parsed TOML document against the core's keys and the features' sections.
    Raises SettingsError listing every problem."""
    sections = tuple(sections)
    known = CORE_KEYS.union(*(s.keys for s in sections))
    schema.settings_version(data, path, VERSION)  # older ones: migrations.load_settings
    c = Collector()
    for key in sorted(set(data) - known):
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
              f"name the mailbox that should receive postmaster@ and abuse@, e.g. {quote(users[0].address)}")

    lan = _parse_lan(data.get("lan", {}), KNOWN_LAN.union(*(s.lan_keys for s in sections)), c)
    parsed = {s.name: s.parse(data, c) for s in sections}

    if c.problems:
        raise SettingsError(c.problems, path)
    return Settings(domain=domain, hostname=hostname, users=users, message_size_limit_mb=size,
                    postmaster=postmaster, lan=lan, sections=parsed)


def _parse_users(raw: Any, domain: str, c: Collector) -> tuple[User, ...]:
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
                  "see the settings reference in README.md")
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
        devices = app_passwords.parse(entry.get("app_passwords"), f"{where}.app_passwords",
                                      c.add, hash_scheme)
        forward, keep = mail_rules.parse_forward(entry, where, c.add, {address, *aliases},
                                                 lambda a: split_address(a) is not None)
        away = mail_rules.parse_vacation(entry.get("vacation"), f"{where}.vacation", c.add)
        quota = entry.get("quota_mb")
        if quota is not None and (isinstance(quota, bool) or not isinstance(quota, int)
                                  or not QUOTA_MB[0] <= quota <= QUOTA_MB[1]):
            c.add(f"{where}.quota_mb", quota, "is not a mailbox size in MiB",
                  f"use a whole number from {QUOTA_MB[0]} to {QUOTA_MB[1]}, e.g. 2048, or leave "
                  "it out for the box's default")
            quota = None
        if address:
            users.append(User(address=address, password_hash=pw, aliases=tuple(aliases),
                              encrypt=encrypt, app_passwords=devices, forward_to=forward,
                              forward_keep=keep, vacation=away, quota_mb=quota))
    return tuple(users)


def _check_address(value: Any, where: str, domain: str, c: Collector) -> str:
    if not isinstance(value, str) or split_address(value.lower()) is None:
        c.add(where, value, "is not an e-mail address", f'write it as "name@{domain or "example.org"}"')
        return ""
    if value != value.lower():
        c.add(where, value, "has upper-case letters", f"write it as {quote(value.lower())}")
        return ""
    if domain and value.split("@")[1] != domain:
        c.add(where, value, f'is outside domain "{domain}"',
              f'use an address ending in "@{domain}"')
        return ""
    return value


def _parse_lan(raw: Any, known: frozenset[str], c: Collector) -> LanOverride:
    if not isinstance(raw, dict):
        c.add("lan", raw, "is not a table", "write it as a [lan] section or remove it")
        return LanOverride()
    for key in sorted(set(raw) - known):
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


def table(raw: Any, name: str, known: set[str], c: Collector) -> dict[str, Any]:
    if not isinstance(raw, dict):
        c.add(name, raw, "is not a table", f"write it as a [{name}] section or remove it")
        return {}
    for key in sorted(set(raw) - known):
        c.add(f"{name}.{key}", key, f"is not a known {name} setting", f"use {', '.join(sorted(known))}")
    return raw


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def read(path: Path | str) -> dict[str, Any]:
    """The settings file as a TOML document. Raises SettingsError (exit code 2) if it cannot be
    read or is not TOML."""
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
    return data


def load(path: Path | str, sections: Iterable[Section]) -> Settings:
    """Read and validate a settings file. Raises SettingsError (exit code 2) on any problem."""
    return parse(read(path), str(path), sections)


def load_section(path: Path | str, section: Section) -> Any:
    """One section of a settings file, for a daemon that needs only its own (the rest of the
    file is `appliance check`'s to judge)."""
    c = Collector()
    value = section.parse(read(path), c)
    if c.problems:
        raise SettingsError(c.problems, str(path))
    return value


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
