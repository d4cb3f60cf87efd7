"""What a feature is: one capability of the box (mail, the firewall, the relay...), with the
settings section it owns, the files it wants, the services that read them, its commands and
its first-use state. `appliance.registry` lists them in order; the core iterates that list and
never imports a feature."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeAlias

from appliance.core import system
from appliance.core.checks import Check
from appliance.core.plan import FileSpec, Inputs
from appliance.core.records import Known, Record
from appliance.core.services import Service
from appliance.core.settings import Section, Settings

if TYPE_CHECKING:
    import argparse

Say = Callable[[str], None]
# Where a feature adds its verbs: the `appliance` parser's subcommands.
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _no_files(i: Inputs) -> list[FileSpec]:
    return []


def _no_context(s: Settings) -> dict[str, object]:
    return {}


def _no_services(root: system.Root) -> list[Service]:
    return []


def _no_commands(sub: Subcommands) -> None:
    return None


def _no_prepare(root: system.Root, s: Settings, say: Say) -> None:
    return None


def _no_notice(s: Settings) -> str | None:
    return None


def _no_state(root: system.Root, s: Settings) -> Mapping[str, str]:
    return {}


def _nothing_known(root: system.Root, s: Settings) -> Mapping[str, object]:
    return {}


def _no_records(s: Settings, k: Known) -> list[Record]:
    return []


def _no_names(s: Settings) -> list[str]:
    return []


def _in_the_way_of_nothing(root: system.Root, s: Settings,
                           ports: Sequence[int]) -> AbstractContextManager[None]:
    return nullcontext()


def _no_preflight(root: system.Root, s: Settings) -> list[str]:
    return []


def _nobody(root: system.Root, s: Settings) -> frozenset[str]:
    return frozenset()


@dataclass(frozen=True)
class Feature:
    name: str
    doc: str  # where a person reads about it (docs/...)
    sections: Sequence[Section] = ()
    # Inputs -> the files it wants; pure. Nothing when it is off: absent is a state.
    files: Callable[[Inputs], list[FileSpec]] = _no_files
    # Names its templates share with other features' templates (the relay's host in main.cf).
    context: Callable[[Settings], Mapping[str, object]] = _no_context
    # The services that read its files, in the order they are reloaded.
    services: Callable[[system.Root], list[Service]] = _no_services
    # Adds its verbs to the `appliance` command.
    commands: Callable[[Subcommands], None] = _no_commands
    # First-use state made on the box before the plan (the DKIM key, a self-signed certificate).
    prepare: Callable[[system.Root, Settings, Say], None] = _no_prepare
    # Settings the box cannot carry out as it is (OpenPGP turned off while a user has a key):
    # settings-error lines (field: value, why; fix), found in the agent's state. Asked before
    # any feature prepares or any file is written, in a dry run too; parsing itself stays pure.
    preflight: Callable[[system.Root, Settings], list[str]] = _no_preflight
    # The users whose stored mail it keeps sealed (encrypted at rest): a copy put into their
    # mailboxes around the delivery path (an import) would not be, so none is made.
    sealed: Callable[[system.Root, Settings], frozenset[str]] = _nobody
    # Agent state the plan reads, by name (the DKIM selector that signs).
    state: Callable[[system.Root, Settings], Mapping[str, str]] = _no_state
    # Secrets the plan reads, by name (the relay's password): kept apart from state, never
    # shown in a diff or a log.
    secrets: Callable[[system.Root, Settings], Mapping[str, str]] = _no_state
    # What `appliance status` checks of it, in order.
    checks: Sequence[Check] = ()
    # What it knows that DNS records depend on, by `Known` field (the DKIM keys, the served
    # certificate), or one of `records.ADDRESS_SOURCES` (where the internet reaches the box).
    known: Callable[[system.Root, Settings], Mapping[str, object]] = _nothing_known
    # The DNS records it needs (`appliance dns` prints them, `status` checks them); pure.
    records: Callable[[Settings, Known], list[Record]] = _no_records
    # Host names the box's certificate must also hold (mta-sts.<domain> for the web server).
    cert_names: Callable[[Settings], list[str]] = _no_names
    # Makes the box reachable from the internet on extra ports while the block runs, where this
    # feature stands in the way (a router's port mapping): `pipeline.exposed`.
    expose: Callable[[system.Root, Settings, Sequence[int]],
                     AbstractContextManager[None]] = _in_the_way_of_nothing
    # A line `appliance apply` prints after its report (what the user should still do).
    notice: Callable[[Settings], str | None] = _no_notice
    # Commands that change the box take the lock; these verbs do not (they change nothing, or
    # systemd runs them for an apply that holds it).
    unlocked: frozenset[str] = field(default_factory=frozenset)
