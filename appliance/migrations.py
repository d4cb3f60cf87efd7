"""Every change of format of the files that outlive an agent, numbered, in one place.

The settings file and each agent state file have a list of steps; step n turns version n-1
into version n (`core.schema`). Steps only use mapping operations, so the same step runs on a
tomlkit document (which keeps the user's comments) and on the plain dict a reader holds.

Where it runs: `migrate()` at `appliance migrate` and at the start of every `appliance apply`
(so at first boot too), under the agent's lock.
- One writer: `appliance user ...` edits the settings under the same lock, so a migration never
  interleaves with an edit, and no other command reads a half-migrated box.
- `apply` is what runs first after anything changes the agent or its inputs: the first boot (a
  card may carry an older release's appliance.toml), every settings change, and the check that
  follows an update. A new agent brings the files to its format before it uses them, and the
  apply right after validates the result with the real tools.
- Not in the package's maintainer scripts: in an image chroot or halfway through an upgrade
  there is no lock and no running box, and a failing postinst leaves dpkg half-configured.
Commands that only read (`appliance check`, `status`) bring an older settings file up to date
in memory and write nothing.

A migrated file is written atomically after a copy of the old one, `<file>.v<old version>.bak`,
which stays: it is what an older agent can read after a downgrade. The settings are written
only if the result passes `settings.parse`. Every file's version is checked before anything is
written: a file from a newer agent stops the migration with nothing changed.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.core import apply, schema, settings, system
from appliance.core.schema import Step
from appliance.features.backup import drill, restic
from appliance.features.openpgp import keyring
from appliance.features.spam import dkim
from appliance.features.status import status
from appliance.features.upnp import client as upnp

# -- settings.toml ------------------------------------------------------------------------------
# Version 1: the format since the first release (no `settings_version` line needed).
SETTINGS: tuple[Step, ...] = ()


# -- the agent's state -----------------------------------------------------------------------------
def _openpgp_index_v2(doc: Any) -> Any:
    """Version 1 was the bare mapping {address: entry}, which had no room for a version:
    the entries move under "keys"."""
    return {"keys": dict(doc)}


OPENPGP_INDEX = f"{keyring.DEFAULT_HOME}/{keyring.INDEX}"

# Each state file by its path on the box, with its steps. Version 1 of each is the shape it
# has had since the agent first wrote it (tests/unit/data/migrations/ holds one of each).
STATE: Mapping[str, tuple[Step, ...]] = {
    apply.MANIFEST: (),
    restic.STATE: (),
    restic.CHECKED: (),
    drill.DRILLED: (),
    dkim.STATE: (),
    upnp.STATE_PATH: (),
    status.STATE_PATH: (),
    OPENPGP_INDEX: (
        Step(2, 'the OpenPGP key index moves under "keys", beside its version', _openpgp_index_v2),
    ),
}


@dataclass(frozen=True)
class Pending:
    """One file to bring up to date: what it is now, and what it becomes."""

    host: Path  # where the file is on this machine
    target: str | None  # its path on the target for a state file (None: the settings file)
    found: int
    to: int
    old: system.FileState
    new: bytes

    def backup_name(self) -> str:
        return f"{self.host.name}.v{self.found}.bak"

    def describe(self) -> str:
        return f"{self.host}: format {self.found} -> {self.to} (the old file kept as {self.backup_name()})"


def _settings_upgraded(doc: Any, path: Path | str) -> tuple[Any, int]:
    """A settings document (a dict, or a tomlkit document) brought to the current format, and
    the version it had. A newer or broken version is a SettingsError (exit 2)."""
    version = schema.settings_version(doc, str(path), settings.VERSION, older_ok=True)
    if version != settings.VERSION:
        fix = f"keep {path} and report this message"
        doc, _ = schema.upgrade(doc, version, SETTINGS, str(path), fix)
        doc[schema.SETTINGS_KEY] = settings.VERSION
    return doc, version


def load_settings(path: Path | str, sections: Sequence[settings.Section]) -> settings.Settings:
    """The settings as a reader sees them: older formats upgraded in memory, nothing written."""
    data, _ = _settings_upgraded(settings.read(path), path)
    return settings.parse(dict(data), str(path), sections)


def _settings_pending(path: Path, sections: Sequence[settings.Section]) -> Pending | None:
    if schema.settings_version(settings.read(path), str(path), settings.VERSION,
                               older_ok=True) == settings.VERSION:
        return None
    import tomlkit  # only here: it keeps the user's comments and layout

    old = path.read_text(encoding="utf-8")
    doc, version = _settings_upgraded(tomlkit.parse(old), path)
    text = tomlkit.dumps(doc)
    settings.parse(tomllib.loads(text), str(path), sections)  # the whole result, or nothing
    st = path.stat()
    return Pending(path, None, version, settings.VERSION,
                   system.FileState(old.encode(), st.st_mode & 0o7777, st.st_uid, st.st_gid),
                   text.encode())


def _state_pending(root: system.Root, target: str, steps: Sequence[Step]) -> Pending | None:
    old = root.read(target)
    if old.content is None:
        return None
    try:
        doc = json.loads(old.content)
    except ValueError:
        return None  # damaged: its reader says so, with the fix; a migration cannot repair it
    fix = (f"install the newer agent again, or put back the copy it kept "
           f"({Path(target).name}.v{schema.current(steps)}.bak)")
    version = schema.state_version(doc)
    doc, todo = schema.upgrade(doc, version, steps, target, fix)
    if not todo:
        return None
    new = json.dumps(schema.stamped(doc, schema.current(steps)), indent=1).encode() + b"\n"
    return Pending(root.host(target), target, version, schema.current(steps), old, new)


def plan(root: system.Root, settings_path: Path, sections: Sequence[settings.Section],
         state: Mapping[str, Sequence[Step]] | None = None) -> list[Pending]:
    """Every file that needs a step, checked in full before anything is written. Raises
    SettingsError or SchemaError (nothing written) for a file this agent cannot read."""
    todo = [p for p in [_settings_pending(root.host(settings_path) if not root.is_live
                                          else settings_path, sections)] if p]
    for target, steps in (STATE if state is None else state).items():
        p = _state_pending(root, target, steps)
        if p:
            todo.append(p)
    return todo


def migrate(root: system.Root, settings_path: Path, sections: Sequence[settings.Section],
            say: Callable[[str], None], dry_run: bool = False,
            state: Mapping[str, Sequence[Step]] | None = None) -> list[Pending]:
    """Bring the settings and the agent's state to this agent's formats; the caller holds the
    lock. Each file: a copy of the old one first, then the new one, both atomic; a run cut
    short is finished by the next (each file tells its own version)."""
    todo = plan(root, settings_path, sections, state)
    for p in todo:
        say(("would migrate " if dry_run else "migrated ") + p.describe())
        if dry_run:
            continue
        old = p.old.content or b""
        if p.target is None:  # the user's file: their owner and mode are kept
            system.write_user_file(p.host.with_name(p.backup_name()), old.decode(), p.old.mode)
            system.write_user_file(p.host, p.new.decode())
        else:
            root.write_atomic(f"{p.target}.v{p.found}.bak", p.old)
            root.write_atomic(p.target, system.FileState(p.new, p.old.mode, p.old.uid, p.old.gid))
    return todo


def _self_check() -> None:
    """Programming errors, caught at import (so by every test run)."""
    if schema.current(SETTINGS) != settings.VERSION:
        raise ValueError(f"the settings parser reads format {settings.VERSION} but the "
                         f"migrations end at {schema.current(SETTINGS)}")
    schema.check_numbering(SETTINGS, "settings")
    for target, steps in STATE.items():
        schema.check_numbering(steps, target)


_self_check()
