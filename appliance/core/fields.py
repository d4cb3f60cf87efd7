"""Settings sections described as data: each field's key, default, check, the message for a bad
value and the fix, and one line for the settings reference.

From one description come the parser (every problem reported at once, the default kept for a
bad value so the rest can still be checked), the unknown-key check, and docs/settings.md
(`reference()`). A check that spans fields (dns-01 needs a server and a key) is the section's
`cross` function, run once every field has its value.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from appliance.core.settings import Collector, Section, is_ip, quote, split_address, valid_domain


@dataclass(frozen=True)
class Item:
    """The check of each element of a list field: a bad one is reported as key[i] and dropped."""

    ok: Callable[[Any], bool]
    why: str
    fix: str


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class Field:
    key: str
    default: Any
    doc: str  # one line for the settings reference: what it means
    ok: Callable[[Any], bool]
    why: str  # what is wrong with a bad value ("is not true or false")
    fix: str  # what to write instead
    optional: bool = False  # may be left out (None)
    required: bool = False  # checked even when left out (its default is no valid value)
    item: Item | None = None
    convert: Callable[[Any], Any] = _same  # the parsed value (a list becomes a tuple)
    shown_default: str = ""  # for the reference, when the default is computed elsewhere
    choices: tuple[Any, ...] = ()  # the values a form offers (a `choice` field)


# --- Field shapes used by more than one section -------------------------------------------------

def flag(key: str, default: bool, doc: str) -> Field:
    return Field(key, default, doc, lambda v: isinstance(v, bool), "is not true or false",
                 f"write {key} = true or {key} = false")


def whole(key: str, default: int, lo: int, hi: int, doc: str, why: str = "is out of range",
          fix: str = "") -> Field:
    return Field(key, default, doc,
                 lambda v: not isinstance(v, bool) and isinstance(v, int) and lo <= v <= hi,
                 why, fix or f"use a whole number between {lo} and {hi}, e.g. {default}")


def choice(key: str, default: Any, choices: Sequence[Any], doc: str, why: str, fix: str) -> Field:
    return Field(key, default, doc, lambda v: v in choices, why, fix, choices=tuple(choices))


def path(key: str, doc: str, fix: str = "name the file, or leave it out") -> Field:
    return Field(key, None, doc, lambda v: isinstance(v, str) and v.startswith("/"),
                 "is not an absolute path", fix, optional=True)


def ip(key: str, doc: str, fix: str, version: int | None = None) -> Field:
    def ok(v: Any) -> bool:
        if not (isinstance(v, str) and is_ip(v)):
            return False
        import ipaddress

        return version is None or ipaddress.ip_address(v).version == version

    return Field(key, None, doc, ok, f"is not an IPv{version} address" if version else "is not an IP address",
                 fix, optional=True)


def url(key: str, doc: str, why: str, fix: str, https_only: bool = False) -> Field:
    pattern = re.compile(r"^https://[^\s]+$" if https_only else r"^https?://[^\s]+$")
    return Field(key, None, doc, lambda v: isinstance(v, str) and bool(pattern.match(v)), why, fix,
                 optional=True)


def domain(key: str, doc: str, why: str, fix: str) -> Field:
    return Field(key, None, doc, lambda v: isinstance(v, str) and valid_domain(v), why, fix,
                 optional=True)


def address(key: str, doc: str, fix: str) -> Field:
    return Field(key, None, doc, lambda v: isinstance(v, str) and split_address(v) is not None,
                 "is not an e-mail address", fix, optional=True)


def names(key: str, default: tuple[Any, ...], doc: str, why: str, fix: str,
          item: Item | None = None, most: int | None = None) -> Field:
    """A list, kept once per value in its order."""
    return Field(key, default, doc,
                 lambda v: isinstance(v, list) and (most is None or len(v) <= most), why, fix,
                 item=item, convert=lambda v: tuple(dict.fromkeys(v)))


# --- Parsing ------------------------------------------------------------------------------------

def unknown_keys(raw: dict[str, Any], name: str, fields: Sequence[Field], c: Collector) -> None:
    known = [f.key for f in fields]
    for key in sorted(set(raw) - set(known)):
        c.add(f"{name}.{key}", key, f"is not a known [{name}] setting", f"use {', '.join(sorted(known))}")


def parse_table(raw: Any, name: str, fields: Sequence[Field], c: Collector) -> dict[str, Any]:
    """The values of one [name] table: each field checked, a bad value reported and replaced by
    the field's default; keys no field knows reported."""
    values = {f.key: f.default for f in fields}
    if not isinstance(raw, dict):
        c.add(name, raw, "is not a table", f"write it as a [{name}] section or remove it")
        return values
    unknown_keys(raw, name, fields, c)
    for f in fields:
        if (f.key not in raw and not f.required) or (f.optional and raw.get(f.key) is None):
            continue
        v = raw.get(f.key, f.default)
        if not f.ok(v):
            c.add(f"{name}.{f.key}", v, f.why, f.fix)
            continue
        if f.item is not None:
            good = []
            for i, x in enumerate(v):
                if f.item.ok(x):
                    good.append(x)
                else:
                    c.add(f"{name}.{f.key}[{i}]", x, f.item.why, f.item.fix)
            v = good
        values[f.key] = f.convert(v)
    return values


def section(name: str, cls: type, fields: Sequence[Field],
            cross: Callable[[dict[str, Any], Collector], None] | None = None,
            table: str | None = None) -> Section:
    """A feature's section from its field descriptions: [table] (default: the name) parsed into
    `cls(**values)`. The fields must be cls's, in any order."""
    table = table or name
    missing = {f.key for f in fields} - {f.name for f in dataclasses.fields(cls)}
    if missing:
        raise TypeError(f"{cls.__name__} has no field {sorted(missing)}")

    def parse(data: dict[str, Any], c: Collector) -> Any:
        values = parse_table(data.get(table, {}), table, fields, c)
        if cross is not None:
            cross(values, c)
        return cls(**values)

    return Section(name, (table,), parse, fields={table: tuple(fields)})


# --- The settings reference ---------------------------------------------------------------------

def _toml(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, str):
        return quote(value)
    return str(value)


def reference(sections: Iterable[Section], where: Callable[[Section], str]) -> str:
    """docs/settings.md: every section's tables and fields, from their descriptions."""
    out = ["# Settings reference", "",
           "Every section of `/etc/appliance/settings.toml` that a feature owns, with each key, its",
           "default and what it means. Generated from the field descriptions in the code",
           "(`appliance settings-reference`); a test keeps this file equal to it. The core's own",
           "keys (`domain`, `hostname`, `users`, `postmaster`, `message_size_limit_mb`, `[lan]`) are",
           "in the README and the example file on the card.", ""]
    for s in sections:
        for table, fields in s.fields.items():
            base, _, variant = table.partition(" (")
            title = f"[{base}]" + (f", kind {variant.rstrip(')')}" if variant else "")
            out += [f"## {title}", "", f"Feature: {where(s)}.", "",
                    "| key | default | meaning |", "|---|---|---|"]
            for f in fields:
                default = f.shown_default or ("(required)" if f.required else _toml(f.default))
                out.append(f"| `{f.key}` | `{default}` | {f.doc} |")
            out.append("")
    return "\n".join(out)
