"""Apply a plan: the only code that changes the machine's configuration.

  diff -> stage -> validate (real tools) -> swap atomically -> reload changed services
  any failure after the swap -> restore every file, reload again -> the running
  configuration is exactly what it was.

Absent is a state: apply records the files it owns (MANIFEST). A file it wrote that the plan no
longer wants is deleted like any other change (and put back on rollback); a service left with
no file at all is stopped and disabled before its files go.

A second apply with the same inputs changes no file and reloads nothing.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from appliance.core import system
from appliance.core.errors import ApplyError
from appliance.core.plan import DesiredFile, Plan
from appliance.core.services import Manager, Service

# The files apply wrote, and the service that reads each: {"schema": 1, "files": {path: service}}.
MANIFEST = "/var/lib/appliance/owned.json"
# Validators run at once: the boards have 4 cores, and rspamd's configtest (the heaviest, 55 MiB
# resident) is one of them, so three fit a 512 MiB board beside the running mail system.
VALIDATORS = min(3, os.cpu_count() or 1)


@dataclass
class Change:
    file: DesiredFile
    before: system.FileState
    after: system.FileState

    @property
    def kind(self) -> str:
        if self.before.content is None:
            return "create"
        if self.after.content is None:
            return "delete"
        if self.before.content != self.after.content:
            return "update"
        return "metadata"

    def diff(self) -> str:
        path = self.file.path
        if self.kind == "delete":  # contents not shown: the file may have held a secret
            return f"--- {path}\n+++ /dev/null\n(deleted: nothing the settings enable wants it)\n"
        if self.file.secret:
            return f"--- {path}\n+++ {path}\n(secret file {self.kind}d; contents not shown)\n"
        old = (self.before.content or b"").decode(errors="replace").splitlines(keepends=True)
        new = (self.after.content or b"").decode(errors="replace").splitlines(keepends=True)
        text = "".join(difflib.unified_diff(old, new, path, path))
        if not text:  # owner or mode only
            text = (f"--- {path}\n+++ {path}\nmode/owner {oct(self.before.mode)} "
                    f"{self.before.uid}:{self.before.gid} -> {oct(self.after.mode)} "
                    f"{self.after.uid}:{self.after.gid}\n")
        return text


@dataclass
class Report:
    changes: list[Change] = field(default_factory=list)
    reloaded: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)  # wanted, were not running
    not_started: list[str] = field(default_factory=list)  # the same, and why they still fail
    dry_run: bool = False
    manager: str = ""

    @property
    def changed_files(self) -> list[str]:
        return [c.file.path for c in self.changes]

    def as_dict(self) -> dict[str, object]:
        return {
            "changed_files": self.changed_files,
            "changes": [{"path": c.file.path, "kind": c.kind} for c in self.changes],
            "reloaded": self.reloaded,
            "stopped": self.stopped,
            "started": self.started,
            "not_started": self.not_started,
            "dry_run": self.dry_run,
            "service_manager": self.manager,
        }


def read_owned(root: system.Root) -> dict[str, str]:
    """The manifest's files. Missing or unreadable: nothing is known to be ours, so nothing is
    deleted (a box from before the manifest keeps its files until a feature writes them again)."""
    try:
        data = json.loads(root.read(MANIFEST).content or b"{}")
        files = data.get("files", {}) if data.get("schema") == 1 else {}
    except (ValueError, AttributeError):
        return {}
    return {str(k): str(v) for k, v in files.items()} if isinstance(files, dict) else {}


def manifest_state(plan: Plan) -> system.FileState:
    files = {f.path: f.service for f in sorted(plan.files, key=lambda f: f.path)}
    return system.FileState(json.dumps({"schema": 1, "files": files}, indent=1).encode() + b"\n", 0o644)


def compute_changes(root: system.Root, plan: Plan, owned: Mapping[str, str] | None = None) -> list[Change]:
    changes = []
    for f in plan.files:
        uid, gid = root.lookup_ids(f.owner, f.group)
        want = system.FileState(f.content, f.mode, uid, gid)
        have = root.read(f.path)
        if have != want:
            changes.append(Change(f, have, want))
    wanted = {f.path for f in plan.files}
    for path, service in sorted((owned or {}).items()):
        if path in wanted:
            continue
        have = root.read(path)
        if have.content is not None:
            gone = DesiredFile(path, b"", service, secret=True, order=99)
            changes.append(Change(gone, have, system.FileState(None)))
    return changes


def apply(
    root: system.Root,
    plan: Plan,
    services: Mapping[str, Service],
    manager: Manager,
    dry_run: bool = False,
    log: Callable[[str], None] = lambda msg: None,
    also_reload: tuple[str, ...] = (),
) -> Report:
    """`also_reload`: services to reload even if none of their files changed (a renewed
    certificate behind an unchanged path)."""
    report = Report(dry_run=dry_run, manager=manager.name)
    with root.lock():
        owned = read_owned(root)
        report.changes = compute_changes(root, plan, owned)
        log(f"{len(report.changes)} file(s) differ from the settings")
        old_manifest, new_manifest = root.read(MANIFEST), manifest_state(plan)
        wanted = set(plan.services())
        # A wanted service that is not running (killed, or it failed at boot) is started too:
        # apply converges on running daemons, not only on files.
        down = [name for name in services if name in wanted and name not in also_reload
                and services[name].needs_start()] if manager.starts and not dry_run else []
        if dry_run or not (report.changes or also_reload or old_manifest.content != new_manifest.content):
            _start(down, report, services, manager, log)
            return report
        # Reload in the order the services are given: Postfix first, since Dovecot puts its
        # sockets into Postfix's queue directory.
        changed = [name for name in services if any(c.file.service == name for c in report.changes)]
        # Services with none of their files left: stopped, not reloaded (and not validated:
        # there is no configuration to judge).
        retired = [name for name in changed if name not in wanted]
        touched = [name for name in services
                   if name not in retired and (name in changed or name in also_reload)]

        # 1. Stage the complete desired configuration of each touched service, and let the
        #    real tools judge it. Nothing on the machine has changed yet.
        #    The tools run side by side (they read the stage, each its own files); the first
        #    failure in service order is the one reported.
        judged = [name for name in changed if name not in retired]
        with root.staging() as stage:
            for name in judged:
                for f in plan.for_service(name):
                    root.write_stage(stage, f.path, f.content)
            log(f"validating {', '.join(judged)}")
            with ThreadPoolExecutor(max_workers=VALIDATORS) as pool:
                verdicts = [pool.submit(services[name].validate, stage) for name in judged]
            for v in verdicts:
                v.result()

        # 2. Swap, then reload; on any failure (or SIGTERM), put every file back.
        for path, owner, group, mode in plan.directories:
            uid, gid = root.lookup_ids(owner, group)
            root.makedirs(path, mode=mode, uid=uid, gid=gid)
        done: list[Change] = []
        try:
            with system.sigterm_as_exception():
                # Stopped while its files are still there: systemd disables a unit by its file.
                for name in retired:
                    log(f"stopping {name} ({manager.name}): none of its files is wanted")
                    res = manager.stop(services[name])
                    if res.returncode != 0:
                        raise ApplyError(f"{name}: stop failed (`{' '.join(res.argv)}` exited "
                                         f"{res.returncode}): {res.output or 'no output'}")
                    report.stopped.append(name)
                for c in report.changes:  # plan order: referenced files before main files
                    root.write_atomic(c.file.path, c.after)
                    done.append(c)
                # With the swap: a crash before this line leaves the old manifest, whose files
                # are a superset or the same paths; the next apply converges either way.
                done.append(Change(DesiredFile(MANIFEST, b"", ""), old_manifest, new_manifest))
                root.write_atomic(MANIFEST, new_manifest)
                for name in touched:
                    services[name].after_write()
                if retired:
                    manager.refresh()
                # An independent service reloads alongside the ones after it; leaving this
                # block waits for it, so a failure of either kind still rolls everything back.
                with ThreadPoolExecutor(max_workers=2) as pool:
                    alongside = []
                    for name in touched:
                        log(f"reloading {name} ({manager.name})")
                        if services[name].independent:
                            alongside.append(pool.submit(_reload, services[name], manager))
                        else:
                            _reload(services[name], manager)
                    for job in alongside:
                        job.result()
                report.reloaded += touched
        except BaseException as exc:
            _restore(root, done, touched, report.stopped, services, manager, log)
            if isinstance(exc, ApplyError):
                raise ApplyError(f"{exc}\nEvery file was restored and the services reloaded "
                                 "with their previous configuration.") from None
            raise
        _start([n for n in down if n not in report.reloaded], report, services, manager, log)
    return report


def _reload(svc: Service, manager: Manager) -> None:
    offset = root_size(svc)
    res = manager.reload(svc)
    if res.returncode != 0:
        raise ApplyError(f"{svc.name}: reload failed (`{' '.join(res.argv)}` exited "
                         f"{res.returncode}): {res.output or 'no output'}")
    problem = svc.probe(offset) if manager.probes else None
    if problem:
        raise ApplyError(f"{svc.name}: reload failed: {problem}")


def _start(names: list[str], report: Report, services: Mapping[str, Service], manager: Manager,
           log: Callable[[str], None]) -> None:
    """Start services that should run and do not. Outside the transaction: the files are
    right, so one that still fails to start is reported, and does not undo the apply."""
    for name in names:
        svc = services[name]
        log(f"starting {name} ({manager.name}): it is not running")
        offset = root_size(svc)
        res = manager.reload(svc)
        problem = (res.output or f"`{' '.join(res.argv)}` exited {res.returncode}"
                   if res.returncode != 0 else svc.probe(offset) if manager.probes else None)
        if problem:
            report.not_started.append(f"{name}: {problem}")
        else:
            report.started.append(name)


def root_size(svc: Service) -> int:
    return svc.root.size(svc.log_path) if svc.log_path else 0


def _restore(
    root: system.Root,
    done: list[Change],
    touched: list[str],
    stopped: list[str],
    services: Mapping[str, Service],
    manager: Manager,
    log: Callable[[str], None],
) -> None:
    for c in reversed(done):
        root.write_atomic(c.file.path, c.before)
    if stopped:
        manager.refresh()
    for name in touched:
        log(f"rolling back {name}")
        services[name].after_write()
        manager.reload(services[name])
    for name in stopped:
        log(f"starting {name} again")
        manager.resume(services[name])
