"""The boot slots as Linux reads and writes them (appliance/features/updates): the state file
the boot script shares, what a boot means, and `appliance boot`. The boot script itself runs in
U-Boot in the image's boot test (tests/image/boot_test.py), which walks a real rollback."""

from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path

import pytest

from appliance import cli
from appliance.core import system
from appliance.core.checks import OK, WARN, Context
from appliance.core.errors import UsageError
from appliance.features.updates import bootslots as bs
from appliance.features.updates.feature import check_boot

from .conftest import ALICE_HASH

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "provisioning" / "roles" / "appliance_boot"


def box(tmp_path: Path, slot: str | None, state: bytes | None = None) -> system.Root:
    (tmp_path / "proc").mkdir(exist_ok=True)
    (tmp_path / "proc" / "cmdline").write_text(
        "root=LABEL=x rw console=ttyS0" + (f" appliance.slot={slot}" if slot else "") + "\n")
    fw = tmp_path / "boot" / "firmware"
    fw.mkdir(parents=True, exist_ok=True)
    if state is not None:
        (fw / "bootslot.env").write_bytes(state)
    return system.Root(tmp_path)


def kernel_in_slot_b(tmp_path: Path) -> None:
    """What an update puts on the boot partition for slot b: its kernel and initramfs."""
    slot_b = tmp_path / "boot" / "firmware" / "slot-b"
    slot_b.mkdir()
    (slot_b / "vmlinuz").write_bytes(b"kernel")
    (slot_b / "initrd.img").write_bytes(b"initrd")


def state_file(tmp_path: Path) -> Path:
    return tmp_path / "boot" / "firmware" / "bootslot.env"


def appliance(root: system.Root, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    settings = root.path / "etc" / "appliance" / "settings.toml"
    code = cli.main(["--settings", str(settings), "boot", "--root", str(root.path), *args],
                    cli.Env(stdin=io.StringIO(), stdout=out, stderr=err))
    return code, out.getvalue(), err.getvalue()


# -- the file ------------------------------------------------------------------------------

def test_the_file_is_one_sector_in_the_boot_scripts_format():
    data = bs.render(bs.BootState(("b", "a"), "b", {"a": 3, "b": 1}))
    assert len(data) == bs.SIZE
    text = data.rstrip(b"\0").decode()
    # What U-Boot's `env export -t` of the same variables writes: sorted names, one per line.
    assert text == "BOOT_ORDER=b a\nBOOT_TRIAL=b\na_left=3\nb_left=1\n"
    assert bs.parse(data) == bs.BootState(("b", "a"), "b", {"a": 3, "b": 1})


def test_what_the_file_does_not_say_is_the_boot_scripts_default():
    # U-Boot's own export, before Linux ever wrote the file (no BOOT_TRIAL yet), and nonsense.
    assert bs.parse(b"BOOT_ORDER=a b\na_left=2\nb_left=0\n\0\0") == \
        bs.BootState(("a", "b"), None, {"a": 2, "b": 0})
    assert bs.parse(b"BOOT_ORDER=c\na_left=9\nb_left=x\n") == bs.BootState()
    assert bs.parse(b"") == bs.BootState()


def test_the_image_ships_the_default_state_and_the_script_uses_the_same_names():
    assert (ROLE / "files" / "bootslot.env").read_bytes() == bs.render(bs.BootState())
    script = (ROLE / "files" / "boot.cmd").read_text()
    for name in ("BOOT_ORDER", "BOOT_TRIAL", "a_left", "b_left"):
        assert re.search(rf"env import -t .*\b{name}\b", script)
        assert re.search(rf"env export -t .*\b{name}\b", script)
    assert "fatwrite ${bootpart} ${kernel_addr_r} bootslot.env 0x200" in script
    assert f"rootlabel {bs.LABELS['b']}" in script and f"rootlabel {bs.LABELS['a']}" in script
    assert "appliance.slot=${slot}" in script
    assert f"setenv a_left {bs.FULL}" in script


# -- what a boot means ---------------------------------------------------------------------

def test_a_committed_slot_gets_its_tries_back():
    after_uboot = bs.BootState(("a", "b"), None, {"a": 2, "b": 0})
    new, rollback = bs.after_boot(after_uboot, "a")
    assert rollback is None and new.left == {"a": 3, "b": 0}
    assert bs.after_boot(new, "a") == (new, None)  # nothing to write when nothing changed


def test_a_trial_that_came_up_stays_on_trial_with_no_try_left():
    state = bs.trial(bs.BootState(), "a", "b")
    assert state == bs.BootState(("b", "a"), "b", {"b": 1, "a": 3})
    after_uboot = bs.BootState(("b", "a"), "b", {"b": 0, "a": 3})
    assert bs.after_boot(after_uboot, "b") == (after_uboot, None)


def test_a_trial_that_did_not_come_up_is_a_rollback():
    after_uboot = bs.BootState(("b", "a"), "b", {"b": 0, "a": 2})
    new, rollback = bs.after_boot(after_uboot, "a")
    assert new == bs.BootState(("a", "b"), None, {"a": 3, "b": 0})
    assert rollback is not None and (rollback.failed, rollback.running) == ("b", "a")
    assert "did not come up" in rollback.why


def test_a_committed_slot_that_stopped_booting_falls_back_and_says_so():
    after_uboot = bs.BootState(("b", "a"), None, {"b": 0, "a": 2})
    new, rollback = bs.after_boot(after_uboot, "a")
    assert new.order == ("a", "b") and new.left == {"a": 3, "b": 0}
    assert rollback is not None and rollback.failed == "b" and "stopped booting" in rollback.why


def test_commit_keeps_the_running_slot_and_the_other_as_fallback():
    on_trial = bs.BootState(("b", "a"), "b", {"b": 0, "a": 3})
    assert bs.commit(on_trial, "b") == bs.BootState(("b", "a"), None, {"b": 3, "a": 3})


def test_trying_the_running_slot_or_an_unknown_one_is_refused():
    with pytest.raises(UsageError, match="the one running"):
        bs.trial(bs.BootState(), "a", "a")
    with pytest.raises(UsageError, match="the slots are"):
        bs.trial(bs.BootState(), "a", "c")


# -- `appliance boot` on a box -------------------------------------------------------------

def test_boot_check_rewrites_the_sector_in_place_and_only_when_needed(tmp_path):
    root = box(tmp_path, "a", bs.render(bs.BootState(("a", "b"), None, {"a": 2, "b": 0})))
    inode = state_file(tmp_path).stat().st_ino
    assert appliance(root, "check")[0] == 0
    assert bs.parse(state_file(tmp_path).read_bytes()).left["a"] == 3
    assert state_file(tmp_path).stat().st_ino == inode  # the same file, rewritten where it is
    before = state_file(tmp_path).stat().st_mtime_ns
    time.sleep(0.01)
    assert appliance(root, "check")[0] == 0
    assert state_file(tmp_path).stat().st_mtime_ns == before


def test_boot_check_records_a_rollback_that_status_reports(tmp_path):
    root = box(tmp_path, "a", bs.render(bs.BootState(("b", "a"), "b", {"b": 0, "a": 2})))
    code, out, err = appliance(root, "check")
    assert code == 0 and "rollback" in err
    code, out, _ = appliance(root, "status", "--json")
    report = json.loads(out)
    assert report["booted"] == "a" and report["state"]["trial"] is None
    assert report["last_rollback"]["failed"] == "b" and report["last_rollback"]["running"] == "a"
    results = check_boot(Context(s=None, root=root))  # type: ignore[arg-type]
    assert [r.status for r in results] == [WARN] and "rolled back" in results[0].detail
    later = check_boot(Context(s=None, root=root, now=time.time() + 30 * 86400))  # type: ignore[arg-type]
    assert [r.status for r in later] == [OK]


def test_boot_try_needs_the_slots_kernel_then_asks_for_it_once(tmp_path):
    root = box(tmp_path, "a", bs.render(bs.BootState()))
    code, _, err = appliance(root, "try", "b")
    assert code == 2 and "slot-b/vmlinuz" in err
    assert bs.parse(state_file(tmp_path).read_bytes()) == bs.BootState()  # refused: unchanged
    kernel_in_slot_b(tmp_path)
    code, out, _ = appliance(root, "try", "b")
    assert code == 0 and "once" in out
    assert bs.parse(state_file(tmp_path).read_bytes()) == bs.BootState(("b", "a"), "b", {"a": 3, "b": 1})
    assert "next boot: slot b" in appliance(root, "status")[1]


def test_boot_commands_say_why_a_host_without_slots_has_none(tmp_path):
    root = box(tmp_path, None)
    code, _, err = appliance(root, "commit")
    assert code == 2 and "it has no boot slots" in err
    code, out, _ = appliance(root, "status", "--json")
    assert code == 0 and json.loads(out)["booted"] is None
    assert check_boot(Context(s=None, root=root)) == []  # type: ignore[arg-type]
    assert not state_file(tmp_path).exists()


def test_a_rollback_is_mailed_to_the_postmaster(tmp_path):
    root = box(tmp_path, "a", bs.render(bs.BootState(("b", "a"), "b", {"b": 0, "a": 2})))
    (tmp_path / "etc" / "appliance").mkdir(parents=True)
    (tmp_path / "etc" / "appliance" / "settings.toml").write_text(
        'domain = "example.org"\nhostname = "mail.example.org"\n[[users]]\n'
        f'address = "alice@example.org"\npassword_hash = "{ALICE_HASH}"\n')
    # The box's sendmail, recorded: its arguments and the message it was given.
    sbin = tmp_path / "usr" / "sbin"
    sbin.mkdir(parents=True)
    (sbin / "sendmail").write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/argv\ncat > {tmp_path}/message\n')
    (sbin / "sendmail").chmod(0o755)
    code, _, err = appliance(root, "check")
    assert code == 0 and "told the postmaster (alice@example.org)" in err
    assert (tmp_path / "argv").read_text().split() == ["-i", "-f", "postmaster@example.org", "--",
                                                      "alice@example.org"]
    message = (tmp_path / "message").read_text()
    assert "Subject: mail.example.org went back to its previous system" in message
    assert "slot b" in message and "did not come up" in message
    # The next boot of the same slot is no news: no second mail.
    (tmp_path / "message").unlink()
    assert appliance(root, "check")[0] == 0 and not (tmp_path / "message").exists()


def test_a_rollback_without_settings_is_recorded_all_the_same(tmp_path):
    root = box(tmp_path, "a", bs.render(bs.BootState(("b", "a"), "b", {"b": 0, "a": 2})))
    code, _, err = appliance(root, "check")
    assert code == 0 and "the postmaster was not told" in err
    assert bs.events(root)[-1]["failed"] == "b"


def test_linux_never_makes_the_state_file_only_rewrites_it(tmp_path):
    # A missing or damaged file: U-Boot writes a whole one at the next boot; Linux changes nothing.
    root = box(tmp_path, "a", b"BOOT_ORDER=a b\n")
    kernel_in_slot_b(tmp_path)
    code, _, err = appliance(root, "try", "b")
    assert code == 1 and "not 512 bytes long" in err
    assert state_file(tmp_path).read_bytes() == b"BOOT_ORDER=a b\n"
