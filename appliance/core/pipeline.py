"""One way to change the box: converge(). The caller holds the lock (`system.Root.lock`); then
the features refuse what the box cannot carry out (preflight), each makes its first-use state,
the machine's facts and the agent's state are gathered, the plan is built from every feature
and applied (validated, swapped, reloaded, or rolled back).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from appliance.core import facts, plan, services, settings, system, tls
from appliance.core.apply import Report, apply
from appliance.core.errors import SettingsError
from appliance.core.feature import Feature


def sections(features: Sequence[Feature]) -> list[settings.Section]:
    return [section for f in features for section in f.sections]


def all_services(root: system.Root, features: Sequence[Feature]) -> dict[str, services.Service]:
    return {svc.name: svc for f in features for svc in f.services(root)}


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
    if root.is_live:
        facts.check_lan(s.lan, str(settings_path))
    preflight(root, s, features, str(settings_path))
    f = facts.gather(s.lan) if root.is_live else facts.Facts(hostname=s.hostname)
    if not dry_run:
        for feature in features:
            feature.prepare(root, s, say)
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
