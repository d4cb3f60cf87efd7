"""Apply against a directory root with stand-in services: the real services are exercised in the
lab (tests/lab); here the stand-ins let us force each failure at a chosen step."""

from __future__ import annotations

import grp
import os
import pwd
import threading
from pathlib import Path

import pytest

from appliance.core import system
from appliance.core.apply import MANIFEST, apply, read_owned
from appliance.core.errors import ApplyError, ValidationError
from appliance.core.plan import DesiredFile, Plan
from appliance.core.services import Manager, Service


class FakeService(Service):
    log_path = "/var/log/fake.log"

    def __init__(self, root: system.Root, name: str, events: list[str]) -> None:
        super().__init__(root)
        self.name = name
        self.events = events
        self.fail_reload = False
        self.raise_on_reload: BaseException | None = None
        self.up = True
        # Met by another service's validation (reload): proves the two ran at the same time.
        self.meet_validating: threading.Barrier | None = None
        self.meet_reloading: threading.Barrier | None = None

    def validate(self, stage: Path) -> None:
        self.events.append(f"validate {self.name}")
        if self.meet_validating is not None:
            self.meet_validating.wait()
        for p in stage.rglob("*"):
            if p.is_file() and b"BROKEN" in p.read_bytes():
                raise ValidationError(self.name, "fake-check", f"{p.name}: BROKEN")

    def running(self) -> bool:
        return self.up


class FakeManager(Manager):
    name = "fake"
    probes = False

    def __init__(self, events: list[str]) -> None:
        self.events = events

    def reload(self, service: Service) -> system.Result:
        assert isinstance(service, FakeService)
        # What the service would read now:
        seen = service.root.read("/etc/a/main.conf").content
        self.events.append(f"reload {service.name} {seen!r}")
        if service.meet_reloading is not None:
            service.meet_reloading.wait()
        if service.raise_on_reload is not None:
            exc, service.raise_on_reload = service.raise_on_reload, None
            raise exc
        if service.fail_reload:
            service.fail_reload = False
            return system.Result(("fake-reload",), 1, "", "cannot bind")
        return system.Result(("fake-reload",), 0, "", "")

    def stop(self, service: Service) -> system.Result:
        self.events.append(f"stop {service.name}")
        return system.Result(("fake-stop",), 0, "", "")

    def resume(self, service: Service) -> system.Result:
        self.events.append(f"resume {service.name}")
        return system.Result(("fake-start",), 0, "", "")


@pytest.fixture
def root(tmp_path: Path) -> system.Root:
    me, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
    (tmp_path / "etc").mkdir()
    # The target's account database: every owner the plan names maps to us (no root needed).
    (tmp_path / "etc/passwd").write_text(f"root:x:{os.getuid()}:{os.getgid()}::/:/bin/false\n"
                                         f"{me}:x:{os.getuid()}:{os.getgid()}::/:/bin/false\n")
    (tmp_path / "etc/group").write_text(f"root:x:{os.getgid()}:\ndovecot:x:{os.getgid()}:\n"
                                        f"{group}:x:{os.getgid()}:\n")
    return system.Root(tmp_path)


def make_plan(main: bytes, aux: bytes = b"map\n", other: bytes = b"other\n") -> Plan:
    return Plan(files=(
        DesiredFile("/etc/a/map", aux, "a", order=10),
        DesiredFile("/etc/a/main.conf", main, "a", order=90),
        DesiredFile("/etc/b/b.conf", other, "b", mode=0o640, group="dovecot", secret=True),
    ), directories=())


def setup(root: system.Root) -> tuple[dict[str, FakeService], FakeManager, list[str]]:
    events: list[str] = []
    svcs = {n: FakeService(root, n, events) for n in ("a", "b")}
    return svcs, FakeManager(events), events


def disk(root: system.Root) -> dict[str, bytes | None]:
    return {p: root.read(p).content for p in ("/etc/a/map", "/etc/a/main.conf", "/etc/b/b.conf")}


def test_first_apply_writes_all_files_then_reloads(root: system.Root) -> None:
    svcs, mgr, events = setup(root)
    r = apply(root, make_plan(b"v1\n"), svcs, mgr)
    assert r.changed_files == ["/etc/a/map", "/etc/a/main.conf", "/etc/b/b.conf"]
    assert r.reloaded == ["a", "b"]
    # The validators run side by side, in any order; every one before any reload.
    assert sorted(events[:2]) == ["validate a", "validate b"]
    assert events[2:] == ["reload a b'v1\\n'", "reload b b'v1\\n'"]
    assert root.read("/etc/b/b.conf").mode == 0o640


def test_validators_run_side_by_side_and_the_first_failure_in_order_is_told(root: system.Root) -> None:
    svcs, mgr, events = setup(root)
    both = threading.Barrier(2, timeout=10)  # one validator alone would wait here in vain
    svcs["a"].meet_validating = svcs["b"].meet_validating = both
    apply(root, make_plan(b"v1\n"), svcs, mgr)
    assert not both.broken
    before = disk(root)
    with pytest.raises(ValidationError, match="^a: "):  # b fails too: a is first in order
        apply(root, make_plan(b"BROKEN\n", other=b"BROKEN too\n"), svcs, mgr)
    assert disk(root) == before


def test_an_independent_service_reloads_alongside_the_next(root: system.Root) -> None:
    svcs, mgr, events = setup(root)
    svcs["a"].independent = True
    svcs["a"].meet_reloading = svcs["b"].meet_reloading = threading.Barrier(2, timeout=10)
    r = apply(root, make_plan(b"v1\n"), svcs, mgr)
    assert r.reloaded == ["a", "b"]
    svcs["a"].meet_reloading = svcs["b"].meet_reloading = None
    # Its failure, told after the next ones reloaded, still puts everything back.
    before = disk(root)
    events.clear()
    svcs["a"].fail_reload = True
    with pytest.raises(ApplyError, match="(?s)a: reload failed.*cannot bind.*Every file was restored"):
        apply(root, make_plan(b"v2\n", other=b"other2\n"), svcs, mgr)
    assert disk(root) == before
    assert sorted(events[-2:]) == ["reload a b'v1\\n'", "reload b b'v1\\n'"]


def test_second_apply_changes_nothing_and_reloads_nothing(root: system.Root) -> None:
    svcs, mgr, events = setup(root)
    apply(root, make_plan(b"v1\n"), svcs, mgr)
    events.clear()
    r = apply(root, make_plan(b"v1\n"), svcs, mgr)
    assert r.changes == [] and r.reloaded == [] and events == []


def test_only_the_service_whose_files_changed_is_reloaded(root: system.Root) -> None:
    svcs, mgr, events = setup(root)
    apply(root, make_plan(b"v1\n"), svcs, mgr)
    events.clear()
    r = apply(root, make_plan(b"v1\n", other=b"other2\n"), svcs, mgr)
    assert r.reloaded == ["b"] and events == ["validate b", "reload b b'v1\\n'"]


def test_mode_change_alone_is_a_change(root: system.Root) -> None:
    svcs, mgr, _ = setup(root)
    apply(root, make_plan(b"v1\n"), svcs, mgr)
    os.chmod(root.host("/etc/b/b.conf"), 0o666)
    r = apply(root, make_plan(b"v1\n"), svcs, mgr)
    assert [c.kind for c in r.changes] == ["metadata"]
    assert root.read("/etc/b/b.conf").mode == 0o640


def test_validation_failure_changes_nothing(root: system.Root) -> None:
    svcs, mgr, events = setup(root)
    apply(root, make_plan(b"v1\n"), svcs, mgr)
    before = disk(root)
    events.clear()
    with pytest.raises(ValidationError, match="BROKEN"):
        apply(root, make_plan(b"BROKEN\n", aux=b"map2\n"), svcs, mgr)
    assert disk(root) == before
    assert not any(e.startswith("reload") for e in events)
    assert not list(root.host("/var/lib/appliance").glob("stage.*"))  # staging cleaned up


def test_reload_failure_restores_every_file_and_reloads_again(root: system.Root) -> None:
    svcs, mgr, events = setup(root)
    apply(root, make_plan(b"v1\n"), svcs, mgr)
    before = disk(root)
    events.clear()
    svcs["b"].fail_reload = True
    with pytest.raises(ApplyError, match="(?s)b: reload failed.*cannot bind.*Every file was restored"):
        apply(root, make_plan(b"v2\n", aux=b"map2\n", other=b"other2\n"), svcs, mgr)
    assert disk(root) == before
    # a reloaded with v2, then b failed; both reloaded again with the restored v1
    assert events[-4:] == ["reload a b'v2\\n'", "reload b b'v2\\n'", "reload a b'v1\\n'",
                           "reload b b'v1\\n'"]


def test_files_created_by_a_failed_apply_are_removed(root: system.Root) -> None:
    svcs, mgr, _ = setup(root)
    svcs["a"].fail_reload = True
    with pytest.raises(ApplyError):
        apply(root, make_plan(b"v1\n"), svcs, mgr)
    assert disk(root) == {"/etc/a/map": None, "/etc/a/main.conf": None, "/etc/b/b.conf": None}


def test_interruption_during_reload_rolls_back(root: system.Root) -> None:
    svcs, mgr, _ = setup(root)
    apply(root, make_plan(b"v1\n"), svcs, mgr)
    before = disk(root)
    svcs["a"].raise_on_reload = KeyboardInterrupt("signal 15")
    with pytest.raises(KeyboardInterrupt):
        apply(root, make_plan(b"v2\n"), svcs, mgr)
    assert disk(root) == before


def test_dry_run_reports_and_changes_nothing(root: system.Root) -> None:
    svcs, mgr, events = setup(root)
    r = apply(root, make_plan(b"v1\n"), svcs, mgr, dry_run=True)
    assert len(r.changes) == 3 and r.reloaded == [] and events == []
    assert disk(root) == {"/etc/a/map": None, "/etc/a/main.conf": None, "/etc/b/b.conf": None}
    diff = {c.file.path: c.diff() for c in r.changes}
    assert "+v1" in diff["/etc/a/main.conf"]
    assert "other" not in diff["/etc/b/b.conf"] and "contents not shown" in diff["/etc/b/b.conf"]


def test_a_second_run_waits_for_the_lock(root: system.Root) -> None:
    import subprocess
    import sys

    from appliance.core.errors import LockedError

    svcs, mgr, _ = setup(root)
    # Another process holds the lock until we close its stdin.
    code = (f"import sys; from appliance.core import system\nwith system.Root({str(root.path)!r}).lock():\n"
            "    print('held', flush=True); sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(LockedError, match="busy: .*holds"):
            apply(root, make_plan(b"v1\n"), svcs, mgr)
        assert disk(root) == {"/etc/a/map": None, "/etc/a/main.conf": None, "/etc/b/b.conf": None}
    finally:
        holder.communicate("", timeout=30)
    apply(root, make_plan(b"v1\n"), svcs, mgr)


def without_b(main: bytes = b"v1\n") -> Plan:
    """The plan once the feature behind service b is turned off."""
    return Plan(files=tuple(f for f in make_plan(main).files if f.service != "b"), directories=())


def test_a_file_no_longer_wanted_is_deleted_and_its_service_stopped(root: system.Root) -> None:
    svcs, mgr, events = setup(root)
    apply(root, make_plan(b"v1\n"), svcs, mgr)
    assert "/etc/b/b.conf" in read_owned(root)
    events.clear()
    r = apply(root, without_b(), svcs, mgr)
    assert [(c.file.path, c.kind) for c in r.changes] == [("/etc/b/b.conf", "delete")]
    assert root.read("/etc/b/b.conf").content is None
    # b has no configuration left: stopped (before its files go), neither validated nor reloaded.
    assert events == ["stop b"] and r.stopped == ["b"] and r.reloaded == []
    assert read_owned(root) == {"/etc/a/map": "a", "/etc/a/main.conf": "a"}
    events.clear()
    assert apply(root, without_b(), svcs, mgr).changes == [] and events == []
    # Turned on again: written and started as on a first apply.
    r = apply(root, make_plan(b"v1\n"), svcs, mgr)
    assert r.changed_files == ["/etc/b/b.conf"] and events == ["validate b", "reload b b'v1\\n'"]


def test_a_deletion_shows_in_the_diff_and_dry_run_deletes_nothing(root: system.Root) -> None:
    svcs, mgr, events = setup(root)
    apply(root, make_plan(b"v1\n"), svcs, mgr)
    events.clear()
    r = apply(root, without_b(), svcs, mgr, dry_run=True)
    (c,) = r.changes
    assert c.kind == "delete" and "+++ /dev/null" in c.diff() and "other" not in c.diff()
    assert root.read("/etc/b/b.conf").content == b"other\n" and events == []


def test_files_apply_never_wrote_are_never_deleted(root: system.Root) -> None:
    svcs, mgr, _ = setup(root)
    apply(root, without_b(), svcs, mgr)
    root.write_atomic("/etc/b/b.conf", system.FileState(b"the admin's own\n"))
    apply(root, without_b(b"v2\n"), svcs, mgr)
    assert root.read("/etc/b/b.conf").content == b"the admin's own\n"


@pytest.mark.parametrize("manifest", [b"not json", b'{"schema": 99, "files": {"/etc/b/b.conf": "b"}}',
                                      b'{"schema": 1, "files": ["/etc/b/b.conf"]}'])
def test_an_unreadable_manifest_deletes_nothing(root: system.Root, manifest: bytes) -> None:
    svcs, mgr, _ = setup(root)
    apply(root, make_plan(b"v1\n"), svcs, mgr)
    root.write_atomic(MANIFEST, system.FileState(manifest))
    r = apply(root, without_b(), svcs, mgr)
    assert root.read("/etc/b/b.conf").content == b"other\n" and r.stopped == []
    assert read_owned(root) == {"/etc/a/map": "a", "/etc/a/main.conf": "a"}  # rewritten whole


def test_a_failed_apply_puts_deleted_files_back_and_starts_their_service(root: system.Root) -> None:
    svcs, mgr, events = setup(root)
    apply(root, make_plan(b"v1\n"), svcs, mgr)
    before, owned = disk(root), root.read(MANIFEST)
    events.clear()
    svcs["a"].fail_reload = True
    with pytest.raises(ApplyError, match="a: reload failed"):
        apply(root, without_b(b"v2\n"), svcs, mgr)
    assert disk(root) == before and root.read(MANIFEST) == owned
    assert events == ["validate a", "stop b", "reload a b'v2\\n'", "reload a b'v1\\n'", "resume b"]


def test_the_lock_is_reentrant_and_a_second_process_is_told_who_holds_it(root: system.Root) -> None:
    import subprocess
    import sys

    svcs, mgr, _ = setup(root)
    code = ("import sys; from appliance.core import system\n"
            f"with system.Root({str(root.path)!r}).lock(wait=float(sys.argv[1])): print('got it')")
    def other(wait: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """A process that is not one this holder started (no inherited holder variable)."""
        if env is None:
            env = {k: v for k, v in os.environ.items() if k != system.LOCK_ENV}
        return subprocess.run([sys.executable, "-c", code, wait], capture_output=True, text=True,
                              timeout=30, env=env)

    with root.lock():
        apply(root, make_plan(b"v1\n"), svcs, mgr)  # the same process: no deadlock
        with root.lock():
            pass
        r = other("0.5")
        assert r.returncode != 0 and "busy:" in r.stderr and f"pid {os.getpid()}" in r.stderr, r.stderr
        # A hook this holder started (certbot's deploy hook) goes on under the holder's lock...
        r = other("0", dict(os.environ))
        assert r.stdout.strip() == "got it", r.stderr
        # ...but the variable alone grants nothing to a process the holder did not start.
        forged = dict(os.environ, **{system.LOCK_ENV: f"1:{root.lock_path()}"})
        r = other("0", forged)
        assert r.returncode != 0 and "busy:" in r.stderr
    assert system.LOCK_ENV not in os.environ
    r = other("0")
    assert r.stdout.strip() == "got it", r.stderr
    with root.lock():  # released on exit, taken again: still exclusive
        r = other("0")
        assert r.returncode != 0 and "busy:" in r.stderr


def test_the_tunnel_units_commands_do_not_wait_for_the_apply_that_started_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under systemd an apply holds the lock while `systemctl reload-or-restart` runs the relay
    unit's `appliance relay up`; that command must not wait for the lock (a deadlock until
    systemd's timeout). Another apply-like command still does."""
    import io
    import subprocess
    import sys

    from appliance import cli

    monkeypatch.setenv("APPLIANCE_RUN_DIR", str(tmp_path))
    monkeypatch.delenv(system.LOCK_ENV, raising=False)
    monkeypatch.setattr(cli, "LOCK_WAIT", 0.2)
    code = ("import sys, time; from appliance.core import system\n"
            "with system.Root('/').lock():\n print('held', flush=True); time.sleep(30)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env={k: v for k, v in os.environ.items() if k != system.LOCK_ENV})
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        def run(*argv: str) -> tuple[int, str]:
            err = io.StringIO()
            return cli.main(list(argv), cli.Env(stdout=io.StringIO(), stderr=err)), err.getvalue()

        rc, err = run("relay", "status")
        assert "busy" not in err and rc in (0, 1), err  # it ran: no tunnel, or the tunnel's state
        rc, err = run("upnp", "remove")
        assert rc == 3 and "busy" in err, err  # a command that changes state still waits
    finally:
        holder.kill()
        holder.wait(10)


def test_a_wanted_service_that_is_not_running_is_started_though_no_file_changed(
        root: system.Root) -> None:
    """Killed, or failed at boot: the next apply brings it back (a restart of the OpenPGP proxy
    by `appliance apply` is how mail flows again without systemd)."""
    svcs, mgr, events = setup(root)
    apply(root, make_plan(b"v1\n"), svcs, mgr)
    events.clear()
    assert apply(root, make_plan(b"v1\n"), svcs, mgr).reloaded == []  # all running: nothing
    svcs["a"].up = False
    report = apply(root, make_plan(b"v1\n"), svcs, mgr)
    assert report.started == ["a"] and report.reloaded == [] and report.changes == []
    assert events == ["reload a b'v1\\n'"]
    # One that still does not start is reported, and nothing is undone for it.
    svcs["a"].fail_reload = True
    report = apply(root, make_plan(b"v1\n"), svcs, mgr)
    assert report.started == [] and report.not_started == ["a: cannot bind"]
    assert root.read("/etc/a/main.conf").content == b"v1\n"
