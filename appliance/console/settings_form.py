"""The Settings page: every feature's settings table as a form, from the same field descriptions
that check the file and write the settings reference (core/fields.py), so a new setting shows
up here with its meaning, and a value the file would refuse is refused with the same words.

The agent reads the values from the file as it is now (a hand edit shows at the next page
load) and saves a form as one `appliance set KEY=VALUE ...`: comments kept, the whole file
checked before it is written, then applied.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import tomlkit

from appliance import registry

# The relay has its own page (its fields depend on the kind of relay); users theirs.
SKIP = ("relay",)


def tables() -> dict[str, tuple[Any, ...]]:
    return {name: fields for s in registry.SECTIONS for name, fields in s.fields.items()
            if not name.startswith(SKIP)}


def kind(field: Any) -> str:
    if field.choices:
        return "choice"
    if isinstance(field.default, bool):
        return "flag"
    if isinstance(field.default, int):
        return "number"
    if isinstance(field.default, tuple):
        return "list"
    return "text"


def current(settings_file: Path) -> dict[str, list[dict[str, Any]]]:
    """Each table's fields with the value the file gives (its default when the file is silent)."""
    raw = tomllib.loads(settings_file.read_text(encoding="utf-8"))
    out = {}
    for name, fields in tables().items():
        given = raw.get(name, {}) if isinstance(raw.get(name), dict) else {}
        out[name] = [{"key": f.key, "doc": f.doc, "kind": kind(f), "choices": list(f.choices),
                      "value": shown(given.get(f.key, f.default)),
                      "default": shown(f.default), "set": f.key in given}
                     for f in fields]
    return out


def shown(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return "" if value is None else value


def assignments(table: str, form: dict[str, str], now: list[dict[str, Any]]) -> list[str]:
    """KEY=VALUE for each field the form changed (TOML values, so that text stays text and a
    number typed wrong reaches the settings check as what it is); KEY= for an emptied one."""
    out = []
    for f in now:
        key, k = f["key"], f["kind"]
        if k == "flag":
            want: Any = form.get(key) == "on"
        else:
            want = form.get(key, "").strip()
        if want == f["value"] or (k != "flag" and str(want) == str(f["value"])):
            continue
        numeric = k == "number" or any(isinstance(c, int) for c in f["choices"])
        if k == "flag":
            text = "true" if want else "false"
        elif want == "":
            text = ""
        elif numeric and want.lstrip("-").isdigit():
            text = want
        elif k == "list":
            items = [x for x in want.replace("\n", ",").split(",") if x.strip()]
            text = tomlkit.item([x.strip() for x in items]).as_string()
        else:
            text = tomlkit.string(want).as_string()
        out.append(f"{table}.{key}={text}")
    return out
