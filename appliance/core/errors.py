"""Errors meant for people, and the stable exit codes the CLI maps them to."""

from __future__ import annotations

# Exit codes are part of the interface: scripts (first boot, path units) rely on them.
EXIT_OK = 0
EXIT_FAILED = 1  # an operation failed (validation, reload); the system was restored
EXIT_USAGE = 2  # bad settings or bad arguments; nothing was changed
EXIT_LOCKED = 3  # another run holds the lock


class ApplianceError(Exception):
    """Base class: the message says what, where, and the fix."""

    exit_code = EXIT_FAILED


class SettingsError(ApplianceError):
    """One or more problems in the settings file; carries every problem found."""

    exit_code = EXIT_USAGE

    def __init__(self, problems: list[str], path: str | None = None) -> None:
        self.problems = problems
        self.path = path
        where = f"{path}: " if path else ""
        super().__init__(where + "invalid settings:\n" + "\n".join(f"  - {p}" for p in problems))


class ValidationError(ApplianceError):
    """A real tool (postconf, doveconf, ...) rejected the staged configuration."""

    def __init__(self, service: str, tool: str, output: str) -> None:
        self.service = service
        self.tool = tool
        self.output = output
        super().__init__(
            f"{service}: the new configuration was rejected by `{tool}`; nothing was changed.\n"
            f"{output.strip()}"
        )


class ApplyError(ApplianceError):
    """Applying failed after the swap; every file was restored."""


class LockedError(ApplianceError):
    exit_code = EXIT_LOCKED


class UsageError(ApplianceError):
    """A command was asked something it cannot do as asked (a wrong argument, an unknown name);
    nothing was changed."""

    exit_code = EXIT_USAGE
