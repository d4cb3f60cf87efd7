"""Edits of the settings file that keep the user's comments and layout (tomlkit, Debian's
python3-tomlkit), validated as a whole before anything is written, and written atomically.

Every edit goes through here: `appliance user ...`, `appliance set` and the console's forms, so
a value the parser refuses is refused the same way, with the same words, whoever typed it.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tomlkit

from appliance.core import settings, system
from appliance.core.errors import SettingsError, UsageError

# What `appliance set` does not edit: each has its own command, which knows its rules.
OWN_COMMANDS = {"users": "appliance user / appliance alias", "settings_version": "appliance migrate"}


class SettingsDoc:
    def __init__(self, path: Path, sections: Sequence[settings.Section]) -> None:
        self.sections = tuple(sections)
        self.path = path
        try:
            self.doc = tomlkit.parse(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UsageError(f"{path}: file not found; create it first (see README)") from None
        except Exception as e:  # tomlkit raises its own ParseError subclasses
            raise SettingsError([f"TOML syntax error: {e}"], str(path)) from None

    def users(self) -> Any:
        if "users" not in self.doc:
            self.doc["users"] = tomlkit.aot()
        return self.doc["users"]

    def find(self, address: str) -> Any:
        for u in self.users():
            if u.get("address") == address:
                return u
        raise UsageError(f'no user "{address}" in {self.path}; see `appliance user list`')

    def owner_of_alias(self, alias: str) -> Any:
        for u in self.users():
            if alias in u.get("aliases", []):
                return u
        raise UsageError(f'no alias "{alias}" in {self.path}; see `appliance alias list`')

    def save(self) -> settings.Settings:
        """Validate the edited document as a whole, then write it. Nothing is written if the
        result would be invalid."""
        text = tomlkit.dumps(self.doc)
        text += "" if text.endswith("\n") else "\n"
        parsed = settings.parse(tomllib.loads(text), str(self.path), self.sections)
        system.write_user_file(self.path, text)
        return parsed


def value_of(text: str) -> Any:
    """A value as typed after KEY=: TOML (true, 25, "text", ["a", "b"]), or else the text
    itself as a string (spam.mode=light)."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def set_values(path: Path, changes: Sequence[tuple[str, Any]],
               sections: Sequence[settings.Section]) -> settings.Settings:
    """Set (or, with None, remove: back to the default) each dotted KEY, then validate and write
    once. Nothing is written if the result is invalid."""
    doc = SettingsDoc(path, sections)
    for key, value in changes:
        parts = key.split(".")
        if not key or any(not p for p in parts) or len(parts) > 2:
            raise UsageError(f'"{key}" is not a setting\'s name; write it as section.key '
                             "(spam.mode) or key (message_size_limit_mb)")
        if parts[0] in OWN_COMMANDS:
            raise UsageError(f"{key}: edited by `{OWN_COMMANDS[parts[0]]}`, not `appliance set`")
        table: Any = doc.doc
        if len(parts) == 2:
            if parts[0] not in table:
                if value is None:
                    continue
                table[parts[0]] = tomlkit.table()
            table = table[parts[0]]
            if not isinstance(table, dict):
                raise UsageError(f"{parts[0]} is not a section in {path}")
        if value is None:
            if parts[-1] in table:
                del table[parts[-1]]
            if len(parts) == 2 and not table:  # an empty [section] says nothing
                del doc.doc[parts[0]]
        else:
            table[parts[-1]] = value
    return doc.save()
