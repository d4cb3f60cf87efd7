"""One way to change the box: converge(). The caller holds the lock (`system.Root.lock`); then
the features refuse what the box cannot carry out (preflight), each makes its first-use state,
the machine's facts and the agent's state are gathered, the plan is built from every feature
and applied (validated, swapped, reloaded, or rolled back).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from appliance.core import facts, plan, records, services, settings, system, tls
from appliance.core.apply import Report, apply
from appliance.core.errors import SettingsError
from appliance.core.feature import Feature


def sections(features: Sequence[Feature]) -> list[settings.Section]:
    return [section for f in features for section in f.sections]


def all_services(root: system.Root, features: Sequence[Feature]) -> dict[str, services.Service]:
    return {svc.name: svc for f in features for svc in f.services(root)}


def known(root: system.Root, s: settings.Settings, features: Sequence[Feature]) -> records.Known:
    """Ask every feature what it knows; a value told by two features is a bug, not a choice."""
    told: dict[str, tuple[str, Any]] = {}
    for f in features:
        for key, value in f.known(root, s).items():
            if key not in records.TOLD and key not in records.ADDRESS_SOURCES:
                raise ValueError(f"feature {f.name} tells {key!r}, which no record uses")
            if key in told:
                raise ValueError(f"{key!r} is told by both {told[key][0]} and {f.name}")
            if value not in (None, ()):
                told[key] = (f.name, value)
    public = next((told[k][1] for k in records.ADDRESS_SOURCES if k in told), None)
    return records.Known(public_ipv4=public,
                         **{k: v for k, (_, v) in told.items() if k in records.TOLD})


def dns_records(s: settings.Settings, known: records.Known,
                features: Sequence[Feature]) -> list[records.Record]:
    """Every record the domain needs, in the registry's order of the features asking."""
    return [r for f in features for r in f.records(s, known)]


@contextmanager
def exposed(root: system.Root, s: settings.Settings, features: Sequence[Feature],
            ports: Sequence[int]) -> Iterator[None]:
    """Reachable from the internet on these extra ports while the block runs (port 80 for an
    ACME challenge): each feature that stands in the way opens them and closes them after,
    whatever happens."""
    with ExitStack() as stack:
        for f in features:
            stack.enter_context(f.expose(root, s, ports))
        yield


def sealed(root: system.Root, s: settings.Settings, features: Sequence[Feature]) -> frozenset[str]:
    """The users whose stored mail a feature keeps encrypted (`Feature.sealed`)."""
    return frozenset().union(*(f.sealed(root, s) for f in features))


def preflight(root: system.Root, s: settings.Settings, features: Sequence[Feature],
              where: str | None = None) -> None:
    """Refuse settings the box cannot carry out as it is, like any settings error: every
    problem at once, exit 2, nothing changed."""
    problems = [p for feature in features for p in feature.preflight(root, s)]
    if problems:
        raise SettingsError(problems, where)


def converge(settings_path: Path, root: system.Root, dry_run: bool, features: Sequence[Feature],
             say: Callable[[str], None], also_reload: tuple[str, ...] = ()) -> Report:
    """Make the box match the settings file. `say` gets what a person should know (a key was
    made); the apply's own steps are logged through it with an "appliance: " prefix."""
    s = settings.load(root.host(settings_path) if not root.is_live else settings_path, sections(features))
    preflight(root, s, features, str(settings_path))
    # First-use state (keys) before the machine's facts: at boot the network may still be
    # coming up while the keys are made.
    if not dry_run:
        for feature in features:
            feature.prepare(root, s, say)
    f = facts.Facts(hostname=s.hostname)
    if root.is_live:
        f = facts.settled(s.lan)
        facts.check_lan(s.lan, str(settings_path))
    state: dict[str, str] = {}
    secrets: dict[str, str] = {}
    for feature in features:
        state.update(feature.state(root, s))
        secrets.update(feature.secrets(root, s))
    tmpl = plan.environment(root.host(plan.OVERRIDE_DIR))
    desired = plan.build(plan.Inputs(s, f, state, secrets), tmpl, features,
                         cert=tls.active_paths(root, s.hostname))
    manager = services.detect_manager(root)
    return apply(root, desired, all_services(root, features), manager, dry_run=dry_run,
                 log=lambda m: say(f"appliance: {m}"), also_reload=also_reload)
