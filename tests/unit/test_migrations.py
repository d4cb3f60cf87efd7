"""Schema versions and migrations (appliance/migrations.py, core/schema.py): each file that
outlives an agent is brought from each of its last three formats to the current one; the
settings keep the user's comments, a copy of the old file stays, and a file from a newer agent
changes nothing. Files live in a test root (tmp_path), never in the host's /etc or /var/lib."""

from __future__ import annotations

import io
import json
import tomllib
from pathlib import Path

import pytest

from appliance import cli, migrations, registry
from appliance.core import schema, settings, system
from appliance.core.errors import SettingsError
from appliance.core.schema import SchemaError, Step
from appliance.features.backup import drill, restic
from appliance.features.openpgp import keyring
from appliance.features.spam import dkim
from appliance.features.status import status
from appliance.features.upnp import client as upnp

from .conftest import ALICE_HASH

DATA = Path(__file__).parent / "data" / "migrations"
SETTINGS_PATH = "/etc/appliance/settings.toml"
# Each state file on the box -> its directory of versions under DATA.
FIXTURES = {
    "/var/lib/appliance/owned.json": "owned.json",
    dkim.STATE: "dkim-state.json",
    upnp.STATE_PATH: "upnp.json",
    status.STATE_PATH: "status.json",
    migrations.OPENPGP_INDEX: "openpgp-keys.json",
    restic.STATE: "backup-last.json",
    restic.CHECKED: "backup-checked.json",
    drill.DRILLED: "backup-drilled.json",
}


def last_three(current: int) -> list[int]:
    return list(range(max(1, current - 2), current + 1))


def fixture(name: str, version: int) -> Path:
    found = sorted((DATA / name).glob(f"v{version}.*"))
    assert found, f"{DATA / name} has no file of format version {version}: add one (README.md there)"
    return found[0]


def settings_text(version: int = 1) -> str:
    return fixture("settings", version).read_text().replace("@ALICE_HASH@", ALICE_HASH)


def box(tmp_path: Path, text: str | None = None) -> system.Root:
    """A test root holding a settings file (mode 0600, as on the box)."""
    p = tmp_path / SETTINGS_PATH.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text if text is not None else settings_text())
    p.chmod(0o600)
    return system.Root(tmp_path)


def put(root: system.Root, target: str, content: bytes) -> Path:
    p = root.host(target)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(content)
    return p


def tree(root: Path) -> dict[str, bytes]:
    """Every file under a test root (but the lock a command on a root takes)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "apply.lock"}


def test_every_file_is_registered_with_fixtures_of_its_last_three_versions() -> None:
    assert set(FIXTURES) == set(migrations.STATE), "a state file without fixtures, or the reverse"
    for target, steps in migrations.STATE.items():
        for v in last_three(schema.current(steps)):
            fixture(FIXTURES[target], v)
    for v in last_three(settings.VERSION):
        fixture("settings", v)
    assert schema.current(migrations.SETTINGS) == settings.VERSION


@pytest.mark.parametrize("target", sorted(FIXTURES))
def test_state_file_from_each_of_its_last_three_versions(tmp_path: Path, target: str) -> None:
    steps = migrations.STATE[target]
    newest = schema.current(steps)
    want = json.loads(fixture(FIXTURES[target], newest).read_text())
    for v in last_three(newest):
        root = box(tmp_path / f"v{v}")
        old = fixture(FIXTURES[target], v).read_bytes()
        put(root, target, old)
        done = migrations.migrate(root, Path(SETTINGS_PATH), registry.SECTIONS, lambda m: None)
        got = root.host(target).read_bytes()
        backup = root.host(f"{target}.v{v}.bak")
        if v == newest:
            assert done == [] and got == old and not backup.exists()
        else:
            assert [p.target for p in done] == [target]
            assert json.loads(got) == want and backup.read_bytes() == old
            # A second run has nothing left to do.
            assert migrations.migrate(root, Path(SETTINGS_PATH), registry.SECTIONS, print) == []


def test_the_readers_read_what_the_migrations_make(tmp_path: Path) -> None:
    root = box(tmp_path)
    for target, name in FIXTURES.items():
        put(root, target, fixture(name, 1).read_bytes())
    migrations.migrate(root, Path(SETTINGS_PATH), registry.SECTIONS, lambda m: None)
    assert dkim.load(root) == dkim.Keys("m202611", "m202612", ("m202601",))
    index = keyring.read_index(root.host(keyring.DEFAULT_HOME))
    assert sorted(index) == ["alice@example.org", "bob@example.org"]
    assert index["bob@example.org"].expires == 1890000000
    assert restic.last(root) == restic.Last(1764000000.5, True, "4f1c2a9b", 10234, 5123456)
    assert restic.last_check(root).error.endswith("pack 3e1f is damaged")


def test_the_key_index_of_version_1_is_still_read(tmp_path: Path) -> None:
    """The delivery proxy may restart with a new agent before the apply that migrates."""
    home = tmp_path / "gnupg"
    home.mkdir()
    (home / keyring.INDEX).write_bytes(fixture("openpgp-keys.json", 1).read_bytes())
    assert keyring.read_index(home)["alice@example.org"].fingerprint.startswith("0123")


def test_writers_stamp_their_version(tmp_path: Path) -> None:
    root = system.Root(tmp_path)
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    dkim._save(root, dkim.Keys("m202611"))
    assert json.loads(root.host(dkim.STATE).read_text())["schema"] == dkim.STATE_VERSION
    upnp.save_state(root, upnp.Report(external_ip="203.0.113.7", status="Connected"))
    assert json.loads(root.host(upnp.STATE_PATH).read_text())["schema"] == upnp.STATE_VERSION
    assert upnp.load_state(root)["external_ip"] == "203.0.113.7"
    restic._record(root, restic.STATE, restic.Last(1764000000.0, True, "4f1c2a9b"))
    assert json.loads(root.host(restic.STATE).read_text())["schema"] == restic.STATE_VERSION
    assert restic.last(root) == restic.Last(1764000000.0, True, "4f1c2a9b")
    # A newer agent's record reads as none (the next run writes anew), never as a wrong one.
    put(root, restic.STATE, b'{"schema": 2, "finished": 1, "ok": true, "kind": "full"}')
    assert restic.last(root) is None


def test_a_state_file_from_a_newer_agent_changes_nothing(tmp_path: Path) -> None:
    root = box(tmp_path)
    put(root, migrations.OPENPGP_INDEX, fixture("openpgp-keys.json", 1).read_bytes())
    put(root, dkim.STATE, b'{"schema": 7, "active": "m209901"}')
    before = tree(tmp_path)
    with pytest.raises(SchemaError, match=r"format version 7 is newer than this agent knows \(1\)"):
        migrations.migrate(root, Path(SETTINGS_PATH), registry.SECTIONS, lambda m: None)
    assert tree(tmp_path) == before  # the older index was not migrated either
    code, _, err = run_cli(["--settings", SETTINGS_PATH, "migrate", "--root", str(tmp_path)])
    assert code == 1 and f"{dkim.STATE}: format version 7 is newer" in err
    assert tree(tmp_path) == before
    with pytest.raises(SchemaError, match="newer agent wrote it"):
        dkim.load(root)


def test_settings_of_version_1_are_read_as_they_are(tmp_path: Path) -> None:
    root = box(tmp_path)
    before = tree(tmp_path)
    assert migrations.migrate(root, Path(SETTINGS_PATH), registry.SECTIONS, print) == []
    assert tree(tmp_path) == before
    s = migrations.load_settings(root.host(SETTINGS_PATH), registry.SECTIONS)
    assert s.users[0].aliases == ("info@example.org",)
    text = settings_text().replace('domain = "example.org"', 'settings_version = 1\ndomain = "example.org"')
    assert registry.parse_settings(tomllib.loads(text)).domain == "example.org"


def test_a_key_index_from_a_newer_agent_defers_like_a_damaged_one(tmp_path: Path) -> None:
    """The delivery proxy catches KeyError_ and defers the mail: a newer index is never misread."""
    (tmp_path / keyring.INDEX).write_text('{"schema": 3, "keys": {}, "subkeys": {}}')
    with pytest.raises(keyring.KeyError_, match=r"format version 3, this agent reads 2; a newer agent"):
        keyring.read_index(tmp_path)


def test_a_step_that_fails_names_the_file_and_changes_nothing(tmp_path: Path) -> None:
    root = box(tmp_path)
    put(root, migrations.OPENPGP_INDEX, fixture("openpgp-keys.json", 1).read_bytes())
    put(root, dkim.STATE, fixture("dkim-state.json", 1).read_bytes())

    def broken(doc):
        return doc["selectors"]  # a step written for a shape this file does not have

    state = {migrations.OPENPGP_INDEX: migrations.STATE[migrations.OPENPGP_INDEX],
             dkim.STATE: (Step(2, "selectors by date", broken),)}
    before = tree(tmp_path)
    with pytest.raises(SchemaError) as e:
        migrations.migrate(root, Path(SETTINGS_PATH), registry.SECTIONS, print, state=state)
    assert str(e.value).startswith(f"{dkim.STATE}: the step to format version 2 (selectors by date) "
                                   "failed on this file (KeyError: 'selectors'); nothing was changed")
    assert tree(tmp_path) == before  # the index, which would have migrated, was not written either


def test_apply_brings_the_files_up_to_date_before_it_reads_them(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    root = box(tmp_path)
    put(root, migrations.OPENPGP_INDEX, fixture("openpgp-keys.json", 1).read_bytes())
    seen: list[dict] = []

    def apply_and_report(env, settings_path, root_path, diff, as_json):  # the apply itself
        seen.append(json.loads(system.Root(root_path).host(migrations.OPENPGP_INDEX).read_text()))
        return 0

    monkeypatch.setattr(cli.command, "apply_and_report", apply_and_report)
    code, _, err = run_cli(["--settings", SETTINGS_PATH, "apply", "--root", str(tmp_path), "--diff"])
    assert code == 0 and seen[-1] == json.loads(fixture("openpgp-keys.json", 1).read_text())
    code, _, err = run_cli(["--settings", SETTINGS_PATH, "apply", "--root", str(tmp_path)])
    assert code == 0 and seen[-1] == json.loads(fixture("openpgp-keys.json", 2).read_text())
    assert f"migrated {root.host(migrations.OPENPGP_INDEX)}: format 1 -> 2" in err


# -- the mechanism, with steps of a format that does not exist (yet) ------------------------------
def _rename_size(doc):  # v2: `size_mb` became `message_size_limit_mb`
    if "size_mb" in doc:
        doc["message_size_limit_mb"] = doc.pop("size_mb")
    return doc


def _lan_iface(doc):  # v3: [lan] `iface` became `interface`
    lan = doc.get("lan")
    if lan is not None and "iface" in lan:
        lan["interface"] = lan.pop("iface")
    return doc


FUTURE = (Step(2, "size_mb is message_size_limit_mb", _rename_size),
          Step(3, "[lan] iface is interface", _lan_iface))
V1 = settings_text().replace('hostname = "mail.example.org"\n',
                             'hostname = "mail.example.org"\nsize_mb = 30  # bigger mail\n'
                             ).replace('interface = "eth0"', 'iface = "eth0"')
V2 = V1.replace("size_mb = 30", "message_size_limit_mb = 30").replace(
    "# Settings of my", "settings_version = 2\n# Settings of my")
V3 = V2.replace("iface =", "interface =").replace("settings_version = 2", "settings_version = 3")


@pytest.fixture
def future(monkeypatch: pytest.MonkeyPatch) -> None:
    """This agent reads format 3 of the settings, reached by two steps."""
    monkeypatch.setattr(migrations, "SETTINGS", FUTURE)
    monkeypatch.setattr(settings, "VERSION", 3)


@pytest.mark.parametrize("old", [V1, V2, V3], ids=["v1", "v2", "v3"])
def test_settings_from_each_of_the_last_three_versions(tmp_path: Path, future: None, old: str) -> None:
    root = box(tmp_path, old)
    said: list[str] = []
    done = migrations.migrate(root, Path(SETTINGS_PATH), registry.SECTIONS, said.append)
    path = root.host(SETTINGS_PATH)
    text = path.read_text()
    data = tomllib.loads(text)
    assert data["settings_version"] == 3
    assert data["message_size_limit_mb"] == 30 and data["lan"]["interface"] == "eth0"
    assert "size_mb = 30" not in text.replace("message_size_limit_mb", "") and "iface" not in text
    # The user's comments stay where they were.
    for comment in ("# Settings of my mail box -- this comment must survive every migration",
                    "# my own domain", "# me", "# the LAN the box is on"):
        assert comment in text
    assert path.stat().st_mode & 0o777 == 0o600
    if old == V3:
        assert done == [] and text == old and not list(path.parent.glob("*.bak"))
        return
    found = 1 if old == V1 else 2
    backup = path.with_name(f"settings.toml.v{found}.bak")
    assert backup.read_text() == old and backup.stat().st_mode & 0o777 == 0o600
    assert said == [f"migrated {path}: format {found} -> 3 (the old file kept as {backup.name})"]
    assert registry.parse_settings(data).message_size_limit_mb == 30


def test_settings_are_upgraded_in_memory_for_readers(tmp_path: Path, future: None) -> None:
    root = box(tmp_path, V1)
    before = tree(tmp_path)
    code, out, err = run_cli(["check", "--offline", str(root.host(SETTINGS_PATH))])
    assert code == 0, err
    assert tree(tmp_path) == before  # check writes nothing


def test_the_parser_alone_names_an_older_format_and_the_command_that_updates_it(future: None) -> None:
    with pytest.raises(SettingsError) as e:
        registry.parse_settings(tomllib.loads(V2))
    assert e.value.problems == [
        "settings_version: 2 is an older format (this agent reads 3); run `appliance migrate` "
        "(`appliance apply` does it too): it updates the file and keeps a copy of the old one"]


def test_settings_from_a_newer_agent_are_a_settings_error_that_changes_nothing(tmp_path: Path) -> None:
    newer = settings_text().replace("# Settings", "settings_version = 2\nfuture_key = 1\n# Settings")
    root = box(tmp_path, newer)
    put(root, migrations.OPENPGP_INDEX, fixture("openpgp-keys.json", 1).read_bytes())
    before = tree(tmp_path)
    with pytest.raises(SettingsError) as e:
        migrations.migrate(root, Path(SETTINGS_PATH), registry.SECTIONS, print)
    assert e.value.problems == [
        "settings_version: 2 is newer than this agent reads (1): a newer agent wrote this file "
        "and the box now runs an older one; nothing was changed. Install the newer agent again, "
        "or put back the copy the newer agent kept when it updated the file (settings.toml.v1.bak)"]
    assert tree(tmp_path) == before
    code, _, err = run_cli(["--settings", SETTINGS_PATH, "apply", "--root", str(tmp_path)])
    assert code == 2 and "is newer than this agent reads" in err and "future_key" not in err
    assert tree(tmp_path) == before


@pytest.mark.parametrize("bad", ['"1"', "0", "true"])
def test_a_version_that_is_not_one_is_refused(tmp_path: Path, bad: str) -> None:
    root = box(tmp_path, f"settings_version = {bad}\n" + settings_text())
    with pytest.raises(SettingsError, match="is not a format version"):
        migrations.migrate(root, Path(SETTINGS_PATH), registry.SECTIONS, print)


def test_a_migration_whose_result_is_invalid_writes_nothing(tmp_path: Path, future: None) -> None:
    root = box(tmp_path, V1.replace("size_mb = 30", "size_mb = 999999"))
    put(root, migrations.OPENPGP_INDEX, fixture("openpgp-keys.json", 1).read_bytes())
    before = tree(tmp_path)
    with pytest.raises(SettingsError, match="message_size_limit_mb"):
        migrations.migrate(root, Path(SETTINGS_PATH), registry.SECTIONS, print)
    assert tree(tmp_path) == before


def test_dry_run_and_the_migrate_command(tmp_path: Path, future: None) -> None:
    root = box(tmp_path, V1)
    before = tree(tmp_path)
    code, out, err = run_cli(["--settings", SETTINGS_PATH, "migrate", "--root", str(tmp_path),
                              "--dry-run"])
    assert code == 0 and "would migrate" in out and "format 1 -> 3" in out, err
    assert tree(tmp_path) == before
    code, out, err = run_cli(["--settings", SETTINGS_PATH, "migrate", "--root", str(tmp_path)])
    assert code == 0 and "migrated" in out, err
    assert tomllib.loads(root.host(SETTINGS_PATH).read_text())["settings_version"] == 3
    code, out, _ = run_cli(["--settings", SETTINGS_PATH, "migrate", "--root", str(tmp_path)])
    assert code == 0 and "nothing to do" in out


def test_steps_must_be_numbered_in_order() -> None:
    with pytest.raises(ValueError, match="numbered 2, 3"):
        schema.check_numbering((FUTURE[1], FUTURE[0]), "settings")
    with pytest.raises(ValueError, match="numbered 2, 3"):
        schema.check_numbering((FUTURE[0], FUTURE[0]), "settings")


def run_cli(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(args, cli.Env(stdin=io.StringIO(), stdout=out, stderr=err))
    return code, out.getvalue(), err.getvalue()
