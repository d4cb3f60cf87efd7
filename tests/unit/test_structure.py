"""Guards that keep the house one shape: the agent's import graph has no cycle and runs one way
(features -> core, never back); the registry is the only list of features; every file a
feature plans is read by a service some feature declares. Read from the source with ast:
nothing is imported to judge it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from appliance import registry
from appliance.core import facts, plan

PKG = Path(__file__).resolve().parents[2] / "appliance"


def modules() -> dict[str, Path]:
    out = {}
    for f in PKG.rglob("*.py"):
        parts = list(f.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module of the package that `name` imports, at module level or inside a function."""
    found: set[str] = set()
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1] + [node.module or ""]) \
                if node.level else node.module or ""
            base = base.rstrip(".")
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imports(m, f, set(mods)) for m, f in mods.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_the_import_graph_has_no_cycle() -> None:
    assert cycles(graph()) == []


def test_the_guard_sees_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_core_knows_no_feature() -> None:
    above_core = ("appliance.features", "appliance.registry", "appliance.cli")
    bad = {m: sorted(t for t in targets if t.startswith(above_core))
           for m, targets in graph().items() if m.startswith("appliance.core")}
    assert {m: t for m, t in bad.items() if t} == {}


def test_no_feature_imports_the_registry_or_the_cli() -> None:
    bad = {m: sorted(t for t in targets if t in ("appliance.registry", "appliance.cli"))
           for m, targets in graph().items() if m.startswith("appliance.features")}
    assert {m: t for m, t in bad.items() if t} == {}


def test_a_feature_package_file_imports_nothing() -> None:
    """A daemon (`python3 -m appliance.features.privacy.release_agent`) runs every package file
    above it: they stay empty, so the daemon loads the core and its own modules only."""
    g = graph()
    assert {m: sorted(g[m]) for m in g
            if modules()[m].name == "__init__.py" and m.startswith("appliance.features") and g[m]} == {}


def test_the_registry_lists_every_feature_once() -> None:
    names = [f.name for f in registry.FEATURES]
    assert len(names) == len(set(names))
    folders = {f"appliance.features.{p.parent.name}.feature" for p in (PKG / "features").glob("*/feature.py")}
    assert folders == {m for m in graph()["appliance.registry"] if m.startswith("appliance.features")}


@pytest.fixture()
def everything_on(good: dict) -> dict:
    return {**good, "web": {"enabled": True}, "spam": {"mode": "full"},
            "relay": {"kind": "smarthost", "host": "smtp.example.net", "port": 587,
                      "username": "box", "password_file": "/etc/appliance/relay.password"}}


def test_every_planned_file_is_read_by_a_declared_service(everything_on: dict) -> None:
    s = registry.parse_settings(everything_on)
    f = facts.Facts("mail.example.org", "eth0", ("198.18.0.0/24",), ("198.18.0.10",), "198.18.0.1")
    p = registry.build_plan(s, f, plan.environment(None), state={"dkim_selector": "s1"},
                            secrets={"relay_password": "s3cret pass"})
    from appliance.core import system

    declared = set(registry.all_services(system.Root("/nonexistent")))
    assert {x.path: x.service for x in p.files if x.service not in declared} == {}


def test_every_settings_key_belongs_to_one_feature() -> None:
    keys = [k for section in registry.SECTIONS for k in section.keys]
    assert len(keys) == len(set(keys)), keys
    from appliance.core.settings import CORE_KEYS

    assert not set(keys) & CORE_KEYS


def test_the_settings_reference_is_current_and_has_every_section() -> None:
    """docs/settings.md is generated from the field descriptions; a section without them, or a
    stale file, fails here (regenerate: `appliance settings-reference > docs/settings.md`)."""
    text = registry.settings_reference()
    assert (PKG.parent / "docs/settings.md").read_text().rstrip() == text.rstrip()
    for section in registry.SECTIONS:
        assert section.fields, f"section {section.name} has no field descriptions"
        for table, described in section.fields.items():
            assert f"## [{table.partition(' (')[0]}]" in text
            for f in described:
                assert f"| `{f.key}` |" in text
    for key in ("firewall", "fail2ban", "ssh", "limits", "web", "spam", "upnp", "reachability",
                "certs", "dns", "privacy", "status", "relay"):
        assert f"## [{key}]" in text


def test_no_feature_imports_another_feature() -> None:
    """Features meet only through interfaces the core defines (the Feature hooks, the settings
    object, the template context, core/policy.py), so one can be changed, or removed, alone."""
    found = {(m, t) for m, targets in graph().items() if m.startswith("appliance.features.")
             for t in targets
             if t.startswith("appliance.features.") and t.split(".")[2] != m.split(".")[2]}
    assert found == set()


def test_every_check_is_declared_by_one_feature() -> None:
    owners: dict[object, str] = {}
    for f in registry.FEATURES:
        for check in f.checks:
            assert check not in owners, f"{check} is declared by {owners[check]} and {f.name}"
            owners[check] = f.name
    assert len(owners) >= 12  # every check `appliance status` ran before the checks moved


def test_no_module_is_over_400_lines() -> None:
    """A module a person can read in one sitting; past that it is two things."""
    long = {m: n for m, f in modules().items() if (n := len(f.read_text().splitlines())) > 400}
    assert long == {}
