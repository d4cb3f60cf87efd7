"""What a command of the `appliance` CLI gets besides its arguments: the streams, and the
settings and the pipeline bound to the registered features (httpie's idea: an injectable
environment makes the CLI testable). Features' commands take an Env; only `appliance.cli`
makes one, from the registry."""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from appliance.core import pipeline, settings, system
from appliance.core.apply import Report
from appliance.core.errors import EXIT_OK, UsageError
from appliance.core.feature import Feature


class Env:
    def __init__(self, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout,
                 stderr: TextIO = sys.stderr, features: Sequence[Feature] = ()) -> None:
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr
        self.features = tuple(features)

    def out(self, msg: str = "") -> None:
        print(msg, file=self.stdout)

    def err(self, msg: str) -> None:
        print(msg, file=self.stderr)

    def settings(self, path: Path | str) -> settings.Settings:
        return settings.load(path, pipeline.sections(self.features))

    def converge(self, settings_path: Path, root: system.Root, dry_run: bool = False,
                 also_reload: tuple[str, ...] = ()) -> Report:
        return pipeline.converge(settings_path, root, dry_run, self.features, self.err,
                                 also_reload=also_reload)

    def read_password(self, confirm: bool = True) -> str:
        if self.stdin.isatty():
            pw = getpass.getpass("New password: ")
            if confirm and getpass.getpass("Repeat it: ") != pw:
                raise UsageError("the two passwords differ; nothing was changed")
            return pw
        return self.stdin.readline().rstrip("\n")


def apply_and_report(env: Env, settings_path: Path, root_path: str = "/", diff: bool = False,
                     as_json: bool = False) -> int:
    """`appliance apply`, and what an edit (`appliance user add`) runs after it: converge, then
    say what changed, what was reloaded, stopped or started, and what is left to do."""
    root = system.Root(root_path)
    report = env.converge(settings_path, root, diff)
    if as_json:
        env.out(json.dumps(report.as_dict(), indent=2))
        return EXIT_OK
    if diff:
        for c in report.changes:
            env.out(c.diff())
    verb = "would change" if diff else "changed"
    env.out(f"{verb} {len(report.changes)} file(s); reloaded {len(report.reloaded)} service(s)"
            + (f": {', '.join(report.reloaded)}" if report.reloaded else "")
            + (f"; stopped {', '.join(report.stopped)}" if report.stopped else "")
            + (f"; started {', '.join(report.started)} (not running before)"
               if report.started else ""))
    for c in report.changes:
        env.out(f"  {c.kind:8} {c.file.path}")
    for why in report.not_started:
        # The files are applied; the daemon itself is what is wrong (`appliance status`).
        env.err(f"appliance: warning: not running and did not start: {why}")
    s = env.settings(root.host(settings_path) if not root.is_live else settings_path)
    for feature in env.features:
        note = feature.notice(s)
        if note:
            env.out(f"note: {note}")
    return EXIT_OK
