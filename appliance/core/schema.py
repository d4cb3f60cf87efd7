"""Schema versions of the files that outlive an agent: the settings and the agent's state.

A file's format has a number. A change of format is a numbered step (`Step`) that turns
version n-1 into version n; the steps of every file are listed in one place
(`appliance.migrations`) and applied in order, oldest first, before the agent reads the file.
A file newer than the steps know was written by a newer agent: the box was downgraded, and
guessing at a format from the future could destroy what the newer agent meant, so it is an
error that changes nothing. Everything here is pure: it takes documents and returns them.

JSON state files carry their version as `"schema": n` at the top; the settings file as
`settings_version = n`. A file without it is version 1 (the format from before files were
numbered).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from appliance.core.errors import ApplianceError, SettingsError

STATE_KEY = "schema"
SETTINGS_KEY = "settings_version"


class SchemaError(ApplianceError):
    """A file this agent cannot read as it is: from a newer agent, or not of any known version.
    Nothing was changed."""


@dataclass(frozen=True)
class Step:
    """Turns version `to - 1` of a document into version `to`. `run` may change the document
    in place (a tomlkit document keeps its comments that way) and returns it."""

    to: int
    why: str  # one line: what changed in the format, for the log and the reader
    run: Callable[[Any], Any]


def current(steps: Sequence[Step]) -> int:
    """The version a file has after every step: 1 when its format never changed."""
    return 1 + len(steps)


def check_numbering(steps: Sequence[Step], what: str) -> None:
    """Steps are numbered 2, 3, ... without a gap: a gap or a repeat is a programming error."""
    numbers = [s.to for s in steps]
    if numbers != list(range(2, 2 + len(steps))):
        raise ValueError(f"{what}: migration steps must be numbered 2, 3, ... in order; got {numbers}")


def pending(version: int, steps: Sequence[Step], what: str, fix: str) -> list[Step]:
    """The steps that bring a file of `version` to the current one (none when it is current).
    Raises SchemaError for a version newer than known, or not a version at all."""
    check_numbering(steps, what)
    newest = current(steps)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise SchemaError(f"{what}: {version!r} is not a format version; {fix}")
    if version > newest:
        raise SchemaError(f"{what}: format version {version} is newer than this agent knows "
                          f"({newest}): a newer agent wrote it and the box now runs an older one. "
                          f"Nothing was changed; {fix}")
    return [s for s in steps if s.to > version]


def upgrade(doc: Any, version: int, steps: Sequence[Step], what: str, fix: str) -> tuple[Any, list[Step]]:
    """The document brought to the current version, and the steps that were applied. A step
    that fails is a SchemaError naming the file and the step (the caller writes nothing)."""
    todo = pending(version, steps, what, fix)
    for step in todo:
        try:
            doc = step.run(doc)
        except Exception as e:  # noqa: BLE001 - any failure of a step stops the migration
            raise SchemaError(f"{what}: the step to format version {step.to} ({step.why}) failed "
                              f"on this file ({type(e).__name__}: {e}); nothing was changed. "
                              "Keep the file and report it with this message") from e
    return doc, todo


def settings_version(data: Mapping[str, Any], path: str | None, reads: int,
                     older_ok: bool = False) -> int:
    """The format version of a settings document: `reads` (the parser's), or an older one when
    the caller brings it up to date (`older_ok`). Anything else is a SettingsError naming that
    one problem: the rest of a file in a format the parser does not know would only give
    misleading findings."""
    version = data.get(SETTINGS_KEY, 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        problem = (f"{version!r} is not a format version; write {SETTINGS_KEY} = {reads}, or "
                   "remove the line")
    elif version > reads:
        problem = (f"{version} is newer than this agent reads ({reads}): a newer agent wrote "
                   "this file and the box now runs an older one; nothing was changed. Install the "
                   "newer agent again, or put back the copy the newer agent kept when it updated "
                   f"the file ({PurePath(path or 'settings.toml').name}.v{reads}.bak)")
    elif version < reads and not older_ok:
        problem = (f"{version} is an older format (this agent reads {reads}); run `appliance "
                   "migrate` (`appliance apply` does it too): it updates the file and keeps a "
                   "copy of the old one")
    else:
        return int(version)  # a tomlkit Integer is an int with a document attached
    raise SettingsError([f"{SETTINGS_KEY}: {problem}"], path)


def state_version(doc: Any) -> Any:
    """The version of a JSON state document: `"schema"` at the top, 1 when absent."""
    if isinstance(doc, dict):
        return doc.get(STATE_KEY, 1)
    return 1


def stamped(doc: dict[str, Any], version: int) -> dict[str, Any]:
    """The document with its version first, the way state files are written."""
    return {STATE_KEY: version, **{k: v for k, v in doc.items() if k != STATE_KEY}}


def readable(doc: Any, version: int, what: str) -> None:
    """For a reader of a state file: refuse a version other than the one it reads (a newer
    agent's file, or one the migrations have not reached yet), saying what to do."""
    found = state_version(doc)
    if found == version:
        return
    if isinstance(found, int) and found > version:
        fix = (f"a newer agent wrote it (the box was downgraded): install that agent again, or put "
               f"back the copy it kept ({what}.v{version}.bak)")
    else:
        fix = "run `appliance migrate` to bring it up to date"
    raise SchemaError(f"{what}: format version {found!r}, this agent reads {version}; {fix}")
