"""The boot slots as Linux sees them: which slot this boot started, and the boot state the boot
script reads and writes (bootslot.env on the boot partition).

The boot script (provisioning/roles/appliance_boot/files/boot.cmd) takes a try from the first
slot in BOOT_ORDER that has one left, saves that, and passes `appliance.slot=<slot>` to the
kernel. Linux then decides what the boot meant:
  - the slot on trial came up: it stays on trial, with no try left, until it is committed
    (`commit`); a restart before that goes back to the other slot;
  - another slot came up although one was on trial: the trial failed (its kernel or initramfs
    did not start, or the power failed before Linux ran): a rollback, recorded;
  - a committed slot came up: it gets its tries back.
The same rules hold when the committed slot itself stopped booting and its tries ran out: the
other slot comes up, and that is recorded as a rollback too.

The file is exactly 512 bytes, NUL-padded text (`name=value` lines, U-Boot's `env export -t`),
rewritten in place by both sides: on FAT one sector changes, never the allocation table.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from appliance.core import system
from appliance.core.errors import ApplianceError, UsageError

SLOTS = ("a", "b")
FULL = 3  # tries of a committed slot; the boot script counts 3, 2, 1 down to 0
SIZE = 512
STATE_FILE = Path("/boot/firmware/bootslot.env")
EVENTS_FILE = Path("/var/lib/appliance/boot-events.json")
KEEP_EVENTS = 10
# The root filesystem label of each slot: the kernel is started with root=LABEL=...
LABELS = {"a": "appliance-root", "b": "appliance-root-b"}


@dataclass(frozen=True)
class BootState:
    order: tuple[str, ...] = SLOTS
    trial: str | None = None
    left: Mapping[str, int] = field(default_factory=lambda: {"a": FULL, "b": 0})

    def as_dict(self) -> dict[str, object]:
        return {"order": list(self.order), "trial": self.trial, "tries_left": dict(self.left)}


@dataclass(frozen=True)
class Rollback:
    failed: str  # the slot that did not come up
    running: str  # the slot that did
    why: str

    def as_dict(self, at: float) -> dict[str, object]:
        return {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at)),
                "failed": self.failed, "running": self.running, "why": self.why}


def other(slot: str) -> str:
    return "b" if slot == "a" else "a"


def parse(data: bytes) -> BootState:
    """The state in bootslot.env; what it does not say (or says wrongly) is the boot script's
    default, so Linux reads the file the way U-Boot does."""
    values: dict[str, str] = {}
    for line in data.split(b"\0", 1)[0].decode("ascii", "replace").splitlines():
        name, sep, value = line.partition("=")
        if sep:
            values[name.strip()] = value.strip()
    order = tuple(s for s in values.get("BOOT_ORDER", "a b").split() if s in SLOTS) or SLOTS
    trial = values.get("BOOT_TRIAL", "none")
    left = {}
    for slot in SLOTS:
        text = values.get(f"{slot}_left", "")
        left[slot] = int(text) if text in ("0", "1", "2", "3") else (FULL if slot == "a" else 0)
    return BootState(order, trial if trial in SLOTS else None, left)


def render(state: BootState) -> bytes:
    """bootslot.env as the boot script writes it: the same names, the same order, 512 bytes."""
    text = (f"BOOT_ORDER={' '.join(state.order)}\nBOOT_TRIAL={state.trial or 'none'}\n"
            + "".join(f"{slot}_left={state.left[slot]}\n" for slot in SLOTS))
    return text.encode("ascii").ljust(SIZE, b"\0")


def after_boot(state: BootState, booted: str) -> tuple[BootState, Rollback | None]:
    """What this boot means, and the state that follows from it."""
    if state.trial == booted:
        return state, None
    if state.trial is not None:
        why = (f"slot {state.trial} did not come up within its tries: its kernel or initramfs "
               "did not start, or the power failed while it was starting")
        return _running(booted, failed=state.trial), Rollback(state.trial, booted, why)
    if state.order[0] != booted:
        failed = state.order[0]
        why = (f"slot {failed} stopped booting ({FULL} starts in a row did not reach Linux); "
               f"slot {booted} was started instead")
        return _running(booted, failed=failed), Rollback(failed, booted, why)
    if state.left[booted] == FULL:
        return state, None
    return replace(state, left={**state.left, booted: FULL}), None


def trial(state: BootState, booted: str, slot: str) -> BootState:
    """Start `slot` at the next boot, once: unless it is committed while it runs, the boot
    after goes back to the running slot."""
    if slot not in SLOTS:
        raise UsageError(f"slot {slot!r}: the slots are {' and '.join(SLOTS)}")
    if slot == booted:
        raise UsageError(f"slot {slot} is the one running")
    return BootState((slot, booted), slot, {slot: 1, booted: FULL})


def commit(state: BootState, booted: str) -> BootState:
    """Keep the running slot: it becomes the one every boot starts. The other stays as it
    was, the fallback if this one ever stops booting."""
    return BootState((booted, other(booted)), None, {**state.left, booted: FULL})


def _running(booted: str, failed: str) -> BootState:
    return BootState((booted, failed), None, {booted: FULL, failed: 0})


# -- on the box ---------------------------------------------------------------------------

def booted_slot(root: system.Root) -> str | None:
    """The slot the boot script started (`appliance.slot=` on the kernel's command line); None
    on a machine that does not boot through it (a host set up over SSH)."""
    try:
        words = root.host("/proc/cmdline").read_text().split()
    except OSError:
        return None
    for word in words:
        if word.startswith("appliance.slot=") and word.split("=", 1)[1] in SLOTS:
            return word.split("=", 1)[1]
    return None


def read(root: system.Root) -> BootState:
    content = root.read(STATE_FILE).content
    return parse(content) if content is not None else BootState()


def write(root: system.Root, state: BootState) -> None:
    data = render(state)
    if root.read(STATE_FILE).content == data:
        return  # a card wears with each write: none when nothing changes
    if root.size(STATE_FILE) != SIZE:
        # Only U-Boot makes the file (every boot writes it, 512 bytes): Linux rewrites it in
        # place and never creates it, since FAT keeps no owner or mode for a rename to carry.
        raise ApplianceError(f"{STATE_FILE} is missing or not {SIZE} bytes long: the boot script "
                             "writes it again at the next boot; restart, then try again. Nothing "
                             "was changed")
    system.rewrite_in_place(root.host(STATE_FILE), data)


def events(root: system.Root) -> list[dict[str, object]]:
    content = root.read(EVENTS_FILE).content
    if content is None:
        return []
    try:
        data = json.loads(content)
    except ValueError:
        return []
    return [e for e in data.get("rollbacks", []) if isinstance(e, dict)]


def record(root: system.Root, rollback: Rollback, at: float) -> None:
    kept = [*events(root), rollback.as_dict(at)][-KEEP_EVENTS:]
    root.write_atomic(EVENTS_FILE, system.FileState(
        (json.dumps({"rollbacks": kept}, indent=1) + "\n").encode(), 0o644))


def slot_ready(root: system.Root, slot: str) -> list[str]:
    """What slot `slot` lacks to be started: its kernel and initramfs on the boot partition."""
    return [f"{STATE_FILE.parent}/slot-{slot}/{name}" for name in ("vmlinuz", "initrd.img")
            if not root.exists(STATE_FILE.parent / f"slot-{slot}" / name)]
