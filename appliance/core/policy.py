"""Checks that a Postfix policy service runs for other features (the typo guard, run by the
outbound limits' service): named by module, loaded at run time, so the service's code imports
no other feature.

A check is a module (or any object) with

    at_rcpt(attrs: dict[str, str]) -> str   at each RCPT TO: a Postfix action ("DUNNO", ...)
    at_end(attrs: dict[str, str]) -> str    at the end of the message ("DUNNO", "HOLD ...")

and, optionally, `validate(stage: Path) -> None`, the agent's check of the check's own staged
configuration before it goes live (raising `Invalid`).

A feature names its checks in its template context, under CONTEXT_KEY (a list of module
names); the service's configuration file carries them to the daemon. A check that cannot be
loaded or fails is never skipped: the answer is a temporary failure (the client keeps the mail
and tries again), not DUNNO, which would let the mail through unchecked.

Standard library only: this runs inside the policy service's process.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol, cast

CONTEXT_KEY = "policy_checks"
DUNNO = "DUNNO"
DEFER = "451 4.3.0"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class PolicyCheck(Protocol):
    def at_rcpt(self, attrs: dict[str, str]) -> str: ...

    def at_end(self, attrs: dict[str, str]) -> str: ...


class CheckError(Exception):
    """A check that cannot be loaded (no such module, it fails to import, or it is no check)."""


class Invalid(Exception):
    """A check's staged configuration is refused: `what` names the test (`typoguard.conf
    check`), `detail` says why."""

    def __init__(self, what: str, detail: str) -> None:
        super().__init__(f"{what}: {detail}")
        self.what, self.detail = what, detail


def names(text: str) -> tuple[str, ...]:
    """"a.b, c.d" -> ("a.b", "c.d"), each once; ValueError for what is no module name."""
    found = [n for n in re.split(r"[,\s]+", text.strip()) if n]
    bad = [n for n in found if not _NAME.match(n)]
    if bad:
        raise ValueError(f"checks: {', '.join(repr(b) for b in bad)} is not a module name")
    return tuple(dict.fromkeys(found))


def load(name: str) -> PolicyCheck:
    """The check named `name` (a dotted module name). Raises CheckError."""
    if not _NAME.match(name):
        raise CheckError(f"{name!r} is not a module name")
    try:
        module = importlib.import_module(name)
    except Exception as e:  # noqa: BLE001 - whatever breaks the import, the check is not there
        raise CheckError(f"{name} cannot be imported ({type(e).__name__}: {e})") from None
    missing = [f for f in ("at_rcpt", "at_end") if not callable(getattr(module, f, None))]
    if missing:
        raise CheckError(f"{name} is not a policy check (it has no {' or '.join(missing)})")
    return cast(PolicyCheck, module)


def find(name: str) -> None:
    """That a module `name` is there, without running it (its parent packages are imported).
    Raises CheckError."""
    if not _NAME.match(name):
        raise CheckError(f"{name!r} is not a module name")
    try:
        spec = importlib.util.find_spec(name)
    except Exception as e:  # noqa: BLE001 - a parent package that is missing or broken
        raise CheckError(f"{name} cannot be found ({type(e).__name__}: {e})") from None
    if spec is None:
        raise CheckError(f"{name} cannot be found (no such module)")


def validate(check: PolicyCheck, stage: Path) -> None:
    """The check's own test of its staged configuration, if it has one. Raises Invalid."""
    hook = getattr(check, "validate", None)
    if callable(hook):
        hook(stage)


def deferral(why: str = "") -> str:
    return (f"{DEFER} the submission checks cannot run right now{f' ({why})' if why else ''}; "
            "your mail was not sent, try again later")


class Checks:
    """The checks a service runs, by name. Each is asked in order; the first answer other than
    DUNNO is the answer. A name that is not there, a check that does not import, raises or
    answers nothing makes the answer a temporary failure (logged through `log`, reason and all).

    The names are looked up at once (`broken` says what is missing: a service refuses such a
    configuration on reload); the modules are imported at the first question, so a service
    that sees no mail does not hold them."""

    def __init__(self, names: Iterable[str] = (), log: Callable[[str], None] = lambda m: None) -> None:
        self.names = tuple(names)
        self.log = log
        self.loaded: list[tuple[str, PolicyCheck]] | None = None
        self.broken: list[str] = []
        for name in self.names:
            try:
                find(name)
            except CheckError as e:
                self.broken.append(str(e))
                log(f"Error: policy check {e}")

    def load(self) -> list[tuple[str, PolicyCheck]]:
        """Import every check (once); a failure is added to `broken`."""
        if self.loaded is None:
            self.loaded = []
            for name in self.names:
                try:
                    self.loaded.append((name, load(name)))
                except CheckError as e:
                    self.broken.append(str(e))
                    self.log(f"Error: policy check {e}")
        return self.loaded

    def at_rcpt(self, attrs: dict[str, str]) -> str:
        return self._ask("at_rcpt", attrs)

    def at_end(self, attrs: dict[str, str]) -> str:
        return self._ask("at_end", attrs)

    def _ask(self, step: str, attrs: dict[str, str]) -> str:
        loaded = self.load() if not self.broken else []
        if self.broken:
            self.log(f"Error: deferred: policy check {'; '.join(self.broken)}")
            return deferral("a check could not be loaded")
        for name, check in loaded:
            try:
                action = getattr(check, step)(attrs)
            except Exception as e:  # noqa: BLE001 - a failing check defers, it never passes
                self.log(f"Error: policy check {name}.{step}: {type(e).__name__}: {e}")
                return deferral(type(e).__name__)
            if not isinstance(action, str) or not action.strip():
                self.log(f"Error: policy check {name}.{step} answered {action!r}")
                return deferral("a check gave no answer")
            if action.strip().upper() != DUNNO:
                return action
        return DUNNO
