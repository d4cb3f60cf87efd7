"""The manifest in every backup and the restore drill, with Debian's restic on a repository in
tmp_path: a drill after a backup finds every mailbox as its manifest says; a snapshot that lacks
a message its manifest lists fails the drill, naming the mailbox; the scratch copy is gone
afterwards, whatever happened."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from appliance import __version__, registry
from appliance.core import checks, system
from appliance.features.backup import drill, manifest, restic
from appliance.features.backup.checks import check_drill

from .conftest import ALICE_HASH

GOOD = {"domain": "example.org", "users": [{"address": "alice@example.org", "password_hash": ALICE_HASH},
                                          {"address": "bob@example.org", "password_hash": ALICE_HASH}]}


def message(folder: Path, name: str, body: str, part: str = "cur") -> Path:
    (folder / part).mkdir(parents=True, exist_ok=True)
    for other in ("cur", "new", "tmp"):
        (folder / other).mkdir(exist_ok=True)
    p = folder / part / name
    p.write_text(f"From: carol@example.net\nSubject: {name}\n\n{body}\n")
    return p


PASSWORD = "correct horse battery staple\n"


@pytest.fixture(scope="session")
def empty_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`restic init` once (it spends about 3 s tuning its key derivation); each test copies it."""
    where = tmp_path_factory.mktemp("restic")
    (where / "password").write_text(PASSWORD)
    res = system.run(["restic", "init", "--repo", str(where / "repo"), "--password-file",
                      str(where / "password"), "--cache-dir", str(where / "cache")], check=False)
    assert res.returncode == 0, res.stderr
    return where / "repo"


@pytest.fixture
def box(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, empty_repository: Path) -> tuple[system.Root, Any]:
    """A box with two users' mail (alice: INBOX and Sent; bob: INBOX) and backups to an empty
    repository in tmp_path. restic's cache goes to tmp_path too, not the machine's /var/cache."""
    shutil.copytree(empty_repository, tmp_path / "repo")
    monkeypatch.setattr(restic, "CACHE", str(tmp_path / "restic-cache"))
    password = tmp_path / "backup.password"
    password.write_text(PASSWORD)
    root = system.Root(tmp_path / "box")
    vmail = root.host("/var/vmail/example.org")
    message(vmail / "alice/Maildir", "1733500000.M1P1.mail,S=60:2,S", "hello alice")
    message(vmail / "alice/Maildir", "1733500001.M2P1.mail,S=60", "second", part="new")
    message(vmail / "alice/Maildir/.Sent", "1733500002.M3P1.mail,S=60:2,S", "sent by alice")
    message(vmail / "bob/Maildir", "1733500003.M4P1.mail,S=60:2,", "hello bob")
    message(vmail / "bob/Maildir", "1733500004.M5P1.mail,S=60:2,", "more for bob")
    root.write_atomic("/etc/debian_version", system.FileState(b"12.8\n"))
    s = registry.parse_settings({**GOOD, "backup": {"enabled": True, "repository": str(tmp_path / "repo"),
                                                     "password_file": str(password)}})
    return root, s


def scratch_left(root: system.Root) -> list[str]:
    base = root.host(drill.SCRATCH)
    return sorted(p.name for p in base.iterdir() if p.name.startswith(drill.PREFIX)) if base.exists() else []


def test_a_drill_after_a_backup_finds_every_mailbox_as_its_manifest_says(
        box: tuple[system.Root, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    root, s = box
    taken = restic.backup(root, s)
    assert taken.ok, taken.error
    assert taken.messages == 5 and taken.unsettled == ()
    written = manifest.parse(root.read(manifest.MANIFEST).content or b"")
    assert (written.agent, written.debian) == (__version__, "12.8")
    assert {k: v.messages for k, v in written.mailboxes.items()} == {
        "alice@example.org/INBOX": 2, "alice@example.org/Sent": 1, "bob@example.org/INBOX": 2}
    assert root.read(manifest.HASHES).mode == 0o600

    root.makedirs(drill.SCRATCH, 0o700)
    (root.host(drill.SCRATCH) / "drill.cut-short").mkdir()  # a drill a power cut ended
    (root.host(drill.SCRATCH) / "drill.cut-short/leftover").write_text("x")

    # A disk without room for the restored copy and a reserve for the mail: refused first.
    with monkeypatch.context() as m:
        small = os.statvfs_result((4096, 4096, 1000, 100, 100, 0, 0, 0, 0, 255))  # 4 MB, 400 kB free
        m.setattr(drill.os, "statvfs", lambda path: small)
        refused = drill.run(root, s)
    assert not refused.ok and "nothing was restored" in refused.error and "Free some space" in refused.error
    assert scratch_left(root) == []  # the old copy went first (it takes room too); none was made

    done = drill.run(root, s, now=5_000_000.0)
    assert done.ok, done.error
    assert (done.snapshot, done.mailboxes, done.messages, done.differs) == (taken.snapshot, 3, 5, ())
    assert scratch_left(root) == []
    assert drill.last(root) == done
    [r] = check_drill(checks.Context(s, root, now=5_000_000.0 + 86400))
    assert r.status == checks.OK and "5 messages in 3 mailboxes" in r.detail and taken.snapshot in r.detail


def test_a_snapshot_without_a_message_its_manifest_lists_fails_the_drill_naming_the_mailbox(
        box: tuple[system.Root, Any]) -> None:
    """The snapshot a backup takes when restic cannot read one message (it exits 3 and goes on):
    here restic itself leaves the message out, with --exclude, while the manifest lists it."""
    root, s = box
    assert restic.backup(root, s).ok
    lost = next(root.host("/var/vmail/example.org/bob/Maildir/cur").iterdir())
    res = restic.restic(s, "backup", "--tag", restic.TAG, "--host", s.hostname, "--exclude", str(lost),
                        *restic.existing(root))
    assert res.returncode == 0, res.stderr

    done = drill.run(root, s, now=5_000_000.0)
    assert not done.ok
    assert done.differs == ("bob@example.org/INBOX: 2 messages in the manifest, 1 restored",)
    assert "bob@example.org/INBOX" in done.error and "alice" not in done.error
    assert scratch_left(root) == []
    [r] = check_drill(checks.Context(s, root, now=5_000_000.0 + 3600))
    assert r.status == checks.FAIL and done.differs[0] in r.detail

    # Had bob's mailbox changed while that snapshot was taken, the difference is expected.
    last = restic.last(root)
    assert last is not None and last.snapshot != done.snapshot
    root.write_atomic(restic.STATE, system.FileState(json.dumps(
        {**last.__dict__, "snapshot": done.snapshot, "unsettled": ["bob@example.org/INBOX"]}).encode(),
        0o600))
    again = drill.run(root, s)
    assert again.ok and again.unsettled == ("bob@example.org/INBOX: 2 messages in the manifest, 1 restored",)


def test_a_failed_drill_leaves_no_scratch_copy_and_says_why(box: tuple[system.Root, Any]) -> None:
    root, s = box
    none = drill.run(root, s)  # no snapshot yet
    assert not none.ok and "no snapshot of mail.example.org to restore yet" in none.error
    # A snapshot taken by hand, without the manifest: restored, then refused.
    res = restic.restic(s, "backup", "--tag", restic.TAG, "--host", s.hostname, *restic.existing(root))
    assert res.returncode == 0, res.stderr
    done = drill.run(root, s)
    assert not done.ok and "holds no manifest" in done.error
    assert scratch_left(root) == []


def test_the_manifest_reads_a_message_once_and_ignores_renames(tmp_path: Path) -> None:
    folder = tmp_path / "vmail/example.org/alice/Maildir"
    first = message(folder, "1733500001.M2P1.mail,S=60", "new mail", part="new")
    message(folder, "1733500000.M1P1.mail,S=60:2,S", "old mail")
    boxes, cache, read = manifest.scan(tmp_path / "vmail", {})
    assert read == 2 and boxes["alice@example.org/INBOX"].messages == 2
    again, cache, read = manifest.scan(tmp_path / "vmail", cache)
    assert (again, read) == (boxes, 0)
    # Dovecot moves a message it has shown from new/ to cur/ and adds flags to its name.
    os.rename(first, folder / "cur" / f"{first.name}:2,S")
    again, cache, read = manifest.scan(tmp_path / "vmail", cache)
    assert (again, read) == (boxes, 0)
    message(folder, "1733500009.M9P1.mail,S=60", "third", part="new")
    message(folder, ".dovecot-tmp", "not a message", part="new")
    message(folder, "1733500010.M10P1.mail,S=60", "half delivered", part="tmp")
    grown, cache, read = manifest.scan(tmp_path / "vmail", cache)
    assert read == 1 and grown["alice@example.org/INBOX"].messages == 3
    assert grown["alice@example.org/INBOX"].digest != boxes["alice@example.org/INBOX"].digest


def test_a_difference_says_which_mailbox_and_how() -> None:
    a, b = manifest.Mailbox(2, "aa"), manifest.Mailbox(2, "bb")
    found = manifest.compare({"x@y/INBOX": a, "x@y/Sent": a, "x@y/Old": a},
                             {"x@y/INBOX": a, "x@y/Sent": b, "x@y/New": a})
    assert [str(d) for d in found] == [
        "x@y/New: restored (2 messages) but not in the manifest",
        "x@y/Old: in the manifest (2 messages) but not restored",
        "x@y/Sent: 2 messages restored as in the manifest, but their contents differ"]


def test_status_asks_for_a_first_drill_and_warns_when_one_is_overdue(tmp_path: Path) -> None:
    root = system.Root(tmp_path)
    s = registry.parse_settings({**GOOD, "backup": {"enabled": True, "repository": "/media/backup"}})
    now = 100_000_000.0
    assert check_drill(checks.Context(s, root, now=now)) == []  # no backup yet: "backup" says so
    root.makedirs("/var/lib/appliance/backup")
    root.write_atomic(restic.STATE, system.FileState(json.dumps(
        {"finished": now - 3600, "ok": True, "snapshot": "ab12cd34"}).encode()))
    [r] = check_drill(checks.Context(s, root, now=now))
    assert r.status == checks.WARN and "appliance backup drill" in r.fix
    root.write_atomic(drill.DRILLED, system.FileState(json.dumps(
        {"finished": now - 40 * 86400, "ok": True, "snapshot": "ab12cd34"}).encode()))
    [r] = check_drill(checks.Context(s, root, now=now))
    assert r.status == checks.WARN and "40 days old" in r.detail


def test_removing_a_restored_copy_never_follows_a_link_out_of_it(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("mine")
    copy = tmp_path / "drill.x"
    (copy / "etc/letsencrypt/live").mkdir(parents=True)
    (copy / "etc/letsencrypt/live/example.org").symlink_to(outside)  # absolute, as certbot's are not
    (copy / "etc/letsencrypt/live/cert.pem").symlink_to(outside / "keep")
    (copy / "etc/letsencrypt/live/dangling").symlink_to(tmp_path / "nowhere")
    system.remove_tree(copy)
    assert not copy.exists() and (outside / "keep").read_text() == "mine"
