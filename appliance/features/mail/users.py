"""Edit the users and aliases in the settings file, keeping the user's comments and layout.

Edits go through tomlkit (Debian's python3-tomlkit), are validated as a whole with
`settings.parse` before anything is written, and replace the file atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tomlkit

from appliance.core import settings, system
from appliance.core.edit import SettingsDoc
from appliance.core.errors import UsageError


class UserError(UsageError):
    pass


def hash_password(password: str) -> str:
    """SHA512-CRYPT with a random salt; the password travels on stdin, never argv."""
    if not password or "\n" in password:
        raise UserError("the password is empty or has a line break; choose another")
    if len(password) < 10:
        raise UserError("the password is shorter than 10 characters; choose a longer one")
    res = system.run(["openssl", "passwd", "-6", "-stdin"], input=password + "\n")
    return res.stdout.strip()


def add_user(path: Path, address: str, password_hash: str, aliases: list[str],
             sections: Sequence[settings.Section]) -> settings.Settings:
    doc = SettingsDoc(path, sections)
    if any(u.get("address") == address for u in doc.users()):
        raise UserError(f'user "{address}" exists; use `appliance user passwd {address}`')
    t = tomlkit.table()
    t.add("address", address)
    t.add("password_hash", password_hash)
    if aliases:
        t.add("aliases", aliases)
    doc.users().append(t)
    return doc.save()


def set_password(path: Path, address: str, password_hash: str,
             sections: Sequence[settings.Section]) -> settings.Settings:
    doc = SettingsDoc(path, sections)
    doc.find(address)["password_hash"] = password_hash
    return doc.save()


def del_user(path: Path, address: str,
             sections: Sequence[settings.Section]) -> settings.Settings:
    doc = SettingsDoc(path, sections)
    users = doc.users()
    target = doc.find(address)
    if len(users) == 1:
        raise UserError(f'"{address}" is the only user; add another before removing it')
    if doc.doc.get("postmaster") == address:
        raise UserError(f'"{address}" receives postmaster@ mail; set `postmaster` to another user first')
    users.remove(target)
    return doc.save()


def add_alias(path: Path, alias: str, address: str,
             sections: Sequence[settings.Section]) -> settings.Settings:
    doc = SettingsDoc(path, sections)
    user = doc.find(address)
    if "aliases" not in user:
        user["aliases"] = tomlkit.array()
    user["aliases"].append(alias)
    return doc.save()


def del_alias(path: Path, alias: str,
             sections: Sequence[settings.Section]) -> settings.Settings:
    doc = SettingsDoc(path, sections)
    user = doc.owner_of_alias(alias)
    user["aliases"].remove(alias)
    return doc.save()


def add_app_password(path: Path, address: str, name: str, password_hash: str,
                     sections: Sequence[settings.Section]) -> settings.Settings:
    from appliance.core import app_passwords

    doc = SettingsDoc(path, sections)
    user = doc.find(address)
    if "app_passwords" not in user:
        user["app_passwords"] = tomlkit.aot()
    existing = user["app_passwords"]
    if any(p.get("name") == name for p in existing):
        raise UserError(f'{address} has an app password named "{name}"; revoke it first '
                        f"(`appliance user app-password del {address} '{name}'`) or choose another name")
    t = tomlkit.table()
    t.add("name", name)
    t.add("hash", password_hash)
    t.add("created", app_passwords.now_toml())
    existing.append(t)
    return doc.save()


def del_app_password(path: Path, address: str, name: str,
                     sections: Sequence[settings.Section]) -> settings.Settings:
    doc = SettingsDoc(path, sections)
    user = doc.find(address)
    existing = user.get("app_passwords", [])
    target = next((p for p in existing if p.get("name") == name), None)
    if target is None:
        raise UserError(f'{address} has no app password named "{name}"; see '
                        f"`appliance user app-password list {address}`")
    existing.remove(target)
    if not existing:
        del user["app_passwords"]
    return doc.save()


def set_forward(path: Path, address: str, to: list[str], keep: bool,
                sections: Sequence[settings.Section]) -> settings.Settings:
    """Forward her mail to `to` (none: stop forwarding), keeping a copy here or not."""
    doc = SettingsDoc(path, sections)
    user = doc.find(address)
    for key in ("forward_to", "forward_keep"):
        if key in user:
            del user[key]
    if to:
        user["forward_to"] = to
        if not keep:
            user["forward_keep"] = False
    return doc.save()


def set_vacation(path: Path, address: str, away: dict[str, Any] | None,
                 sections: Sequence[settings.Section]) -> settings.Settings:
    """Her away message (subject, message, until, days), or none."""
    doc = SettingsDoc(path, sections)
    user = doc.find(address)
    if "vacation" in user:
        del user["vacation"]
    if away:
        t = tomlkit.table()
        for key, value in away.items():
            if value not in (None, ""):
                t.add(key, tomlkit.string(value, multiline=True) if key == "message" and "\n" in value
                      else value)
        user["vacation"] = t
    return doc.save()


def set_quota(path: Path, address: str, mb: int | None,
              sections: Sequence[settings.Section]) -> settings.Settings:
    """Her own mailbox quota in MiB, or none: the box's default (quota.py)."""
    doc = SettingsDoc(path, sections)
    user = doc.find(address)
    if "quota_mb" in user:
        del user["quota_mb"]
    if mb is not None:
        user["quota_mb"] = mb
    return doc.save()
