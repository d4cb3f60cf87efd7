"""The manifest written into every backup: the agent's and Debian's versions, and for each
mailbox the number of messages and one hash over their contents. The restore drill compares a
restored snapshot with the manifest inside it.

A mailbox is one folder of one user's Maildir: `alice@example.org/INBOX`, `alice@example.org/Sent`
(Maildir++ `.Sent`; `.Lists.rust` is `Lists/rust`). Its messages are the files in `cur/` and
`new/`; `tmp/` holds deliveries not finished yet, which are not mail. The mailbox's hash is
SHA-256 over the sorted SHA-256s of its messages, so a message moving from `new/` to `cur/` or
gaining a flag (both renames) changes nothing, and a changed byte in any message does.

Cheap: a delivered message never changes (its flags live in its name), so its content is read
once, the first night the backup sees it. The hash is kept in a cache beside the backup state
(not backed up), keyed by the folder, the message's unique name (before ":"), its size and mtime;
a nightly manifest reads only the new mail and lists the rest.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from appliance import __version__
from appliance.core import system

MANIFEST = "/var/lib/appliance/backup-manifest.json"  # backed up, with the rest of the state
HASHES = "/var/lib/appliance/backup/hashes.json"  # the cache (/var/lib/appliance/backup is not)
VMAIL = "/var/vmail"
FORMAT = 1

# folder/unique name -> [size, mtime_ns, sha256]
Cache = dict[str, list[object]]


@dataclass(frozen=True)
class Mailbox:
    messages: int
    digest: str


@dataclass(frozen=True)
class Manifest:
    agent: str
    made: str
    mailboxes: dict[str, Mailbox]
    debian: str = ""  # /etc/debian_version of the box backed up

    @property
    def messages(self) -> int:
        return sum(m.messages for m in self.mailboxes.values())

    def text(self) -> bytes:
        data = {"format": FORMAT, "agent": self.agent, "debian": self.debian, "made": self.made,
                "mailboxes": {k: {"messages": v.messages, "sha256": v.digest}
                              for k, v in sorted(self.mailboxes.items())}}
        return (json.dumps(data, indent=1) + "\n").encode()


def parse(raw: bytes) -> Manifest:
    """A manifest read back (ValueError when it is not one)."""
    data = json.loads(raw)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError("not a backup manifest of a format this agent reads")
    boxes = {str(k): Mailbox(int(v["messages"]), str(v["sha256"]))
             for k, v in dict(data.get("mailboxes", {})).items()}
    return Manifest(str(data.get("agent", "")), str(data.get("made", "")), boxes,
                    str(data.get("debian", "")))


def folders(vmail: Path) -> Iterator[tuple[str, Path]]:
    """(mailbox name, folder directory) for every folder of every Maildir under
    vmail/<domain>/<user>/Maildir."""
    if not vmail.is_dir():
        return
    for domain in sorted(p for p in vmail.iterdir() if p.is_dir() and not p.is_symlink()):
        for user in sorted(p for p in domain.iterdir() if p.is_dir() and not p.is_symlink()):
            maildir = user / "Maildir"
            if not maildir.is_dir():
                continue
            address = f"{user.name}@{domain.name}"
            yield f"{address}/INBOX", maildir
            for sub in sorted(maildir.iterdir()):
                if sub.name.startswith(".") and sub.is_dir() and not sub.is_symlink() \
                        and ((sub / "cur").is_dir() or (sub / "new").is_dir()):
                    yield f"{address}/{sub.name[1:].replace('.', '/')}", sub


def _messages(folder: Path) -> Iterator[os.DirEntry[str]]:
    for part in ("cur", "new"):
        try:
            with os.scandir(folder / part) as it:
                entries = list(it)
        except FileNotFoundError:
            continue
        yield from (e for e in entries if not e.name.startswith(".") and e.is_file(follow_symlinks=False))


def _sha256(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except FileNotFoundError:  # expunged while we looked
        return None


def scan(vmail: Path, cache: Cache | None = None) -> tuple[dict[str, Mailbox], Cache, int]:
    """Every mailbox under `vmail`, with the cache to keep and how many messages were read.
    Without a cache (a restored copy) every message is read."""
    old = cache or {}
    kept: Cache = {}
    read = 0
    boxes: dict[str, Mailbox] = {}
    for name, folder in folders(vmail):
        digests = []
        for entry in _messages(folder):
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            key = f"{name}/{entry.name.split(':', 1)[0]}"
            known = old.get(key)
            if known and known[0] == st.st_size and known[1] == st.st_mtime_ns:
                digest = str(known[2])
            else:
                found = _sha256(entry.path)
                if found is None:
                    continue
                digest, read = found, read + 1
            kept[key] = [st.st_size, st.st_mtime_ns, digest]
            digests.append(digest)
        whole = hashlib.sha256("".join(d + "\n" for d in sorted(digests)).encode()).hexdigest()
        boxes[name] = Mailbox(len(digests), whole)
    return boxes, kept, read


def _cache(root: system.Root) -> Cache:
    try:
        data = json.loads(root.read(HASHES).content or b"{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def current(root: system.Root) -> tuple[Manifest, int]:
    """The box's mailboxes now (the cache updated), and how many messages had to be read."""
    boxes, kept, read = scan(root.host(VMAIL), _cache(root))
    root.makedirs(os.path.dirname(HASHES), 0o700)
    root.write_atomic(HASHES, system.FileState(json.dumps(kept, separators=(",", ":")).encode(), 0o600))
    made = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    debian = (root.read("/etc/debian_version").content or b"").decode(errors="replace").strip()
    return Manifest(__version__, made, boxes, debian), read


def write(root: system.Root) -> tuple[Manifest, int]:
    """Write the manifest where the backup picks it up; it and how many messages were read."""
    made, read = current(root)
    root.write_atomic(MANIFEST, system.FileState(made.text(), 0o600))
    return made, read


@dataclass(frozen=True)
class Difference:
    mailbox: str
    expected: Mailbox | None
    found: Mailbox | None

    def __str__(self) -> str:
        e, f = self.expected, self.found
        if e is None:
            return f"{self.mailbox}: restored ({f.messages if f else 0} messages) but not in the manifest"
        if f is None:
            return f"{self.mailbox}: in the manifest ({e.messages} messages) but not restored"
        if e.messages != f.messages:
            return f"{self.mailbox}: {e.messages} messages in the manifest, {f.messages} restored"
        return f"{self.mailbox}: {f.messages} messages restored as in the manifest, but their contents differ"


def compare(expected: dict[str, Mailbox], found: dict[str, Mailbox]) -> list[Difference]:
    return [Difference(name, expected.get(name), found.get(name))
            for name in sorted(set(expected) | set(found)) if expected.get(name) != found.get(name)]
