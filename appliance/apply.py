"""Apply a plan: the only code that changes the machine's configuration.

  diff -> stage -> validate (real tools) -> swap atomically -> reload changed services
  any failure after the swap -> restore every file, reload again -> the running
  configuration is exactly what it was.

A second apply with the same inputs changes no file and reloads nothing.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from . import system
from .errors import ApplyError
from .plan import DesiredFile, Plan
from .services import Manager, Service


@dataclass
class Change:
    file: DesiredFile
    before: system.FileState
    after: system.FileState

    @property
    def kind(self) -> str:
        if self.before.content is None:
            return "create"
        if self.before.content != self.after.content:
            return "update"
        return "metadata"

    def diff(self) -> str:
        path = self.file.path
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
            "dry_run": self.dry_run,
            "service_manager": self.manager,
        }


def compute_changes(root: system.Root, plan: Plan) -> list[Change]:
    changes = []
    for f in plan.files:
        uid, gid = root.lookup_ids(f.owner, f.group)
        want = system.FileState(f.content, f.mode, uid, gid)
        have = root.read(f.path)
        if have != want:
            changes.append(Change(f, have, want))
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
        report.changes = compute_changes(root, plan)
        if dry_run or not (report.changes or also_reload):
            return report
        # Reload in the order the services are given: Postfix first, since Dovecot puts its
        # sockets into Postfix's queue directory.
        changed = [name for name in services if any(c.file.service == name for c in report.changes)]
        touched = [name for name in services if name in changed or name in also_reload]

        # 1. Stage the complete desired configuration of each touched service, and let the
        #    real tools judge it. Nothing on the machine has changed yet.
        with root.staging() as stage:
            for name in changed:
                for f in plan.for_service(name):
                    root.write_stage(stage, f.path, f.content)
                log(f"validating {name}")
                services[name].validate(stage)

        # 2. Swap, then reload; on any failure (or SIGTERM), put every file back.
        for path, owner, group, mode in plan.directories:
            uid, gid = root.lookup_ids(owner, group)
            root.makedirs(path, mode=mode, uid=uid, gid=gid)
        done: list[Change] = []
        try:
            with system.sigterm_as_exception():
                for c in report.changes:  # plan order: referenced files before main files
                    root.write_atomic(c.file.path, c.after)
                    done.append(c)
                for name in touched:
                    svc = services[name]
                    log(f"reloading {name} ({manager.name})")
                    offset = root.size(svc.log_path) if svc.log_path else 0
                    res = manager.reload(svc)
                    if res.returncode != 0:
                        raise ApplyError(
                            f"{name}: reload failed (`{' '.join(res.argv)}` exited "
                            f"{res.returncode}): {res.output or 'no output'}"
                        )
                    problem = svc.probe(offset) if manager.probes else None
                    if problem:
                        raise ApplyError(f"{name}: reload failed: {problem}")
                    report.reloaded.append(name)
        except BaseException as exc:
            _restore(root, done, touched, services, manager, log)
            if isinstance(exc, ApplyError):
                raise ApplyError(f"{exc}\nEvery file was restored and the services reloaded "
                                 "with their previous configuration.") from None
            raise
    return report


def _restore(
    root: system.Root,
    done: list[Change],
    touched: list[str],
    services: Mapping[str, Service],
    manager: Manager,
    log: Callable[[str], None],
) -> None:
    for c in reversed(done):
        root.write_atomic(c.file.path, c.before)
    for name in touched:
        log(f"rolling back {name}")
        manager.reload(services[name])
