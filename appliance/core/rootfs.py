"""Files under a root: every file the agent reads or writes on the target, atomically, and the
one lock. Part of the one privileged path (with exec.py; `system` names both).

`Root` points the agent at a machine: "/" for the running system, or a directory holding a
Debian root (an image being built, a test tree). Paths given to `Root` methods are always the
paths *on the target* ("/etc/postfix/main.cf"); `Root` maps them into its directory."""

from __future__ import annotations

import contextlib
import fcntl
import grp
import os
import pwd
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from appliance.core.errors import LockedError


@dataclass(frozen=True)
class FileState:
    """What is on disk at a path (or that nothing is)."""

    content: bytes | None
    mode: int = 0o644
    uid: int = 0
    gid: int = 0


class Root:
    def __init__(self, path: str | Path = "/") -> None:
        self.path = Path(path).resolve()

    @property
    def is_live(self) -> bool:
        return str(self.path) == "/"

    def host(self, target: str | Path) -> Path:
        """Map a path on the target machine to a path here."""
        t = Path(target)
        if not t.is_absolute():
            raise ValueError(f"target path must be absolute: {t}")
        return self.path / t.relative_to("/") if not self.is_live else t

    def size(self, target: str | Path) -> int:
        try:
            return self.host(target).stat().st_size
        except FileNotFoundError:
            return 0

    def read_from(self, target: str | Path, offset: int) -> str:
        """What was appended to a (log) file since `offset`."""
        try:
            with open(self.host(target), "rb") as f:
                f.seek(offset)
                return f.read(1 << 20).decode(errors="replace")
        except FileNotFoundError:
            return ""

    def exists(self, target: str | Path) -> bool:
        return self.host(target).exists()

    def read(self, target: str | Path) -> FileState:
        p = self.host(target)
        try:
            st = p.stat()
            return FileState(p.read_bytes(), st.st_mode & 0o7777, st.st_uid, st.st_gid)
        except FileNotFoundError:
            return FileState(None)

    def lookup_ids(self, owner: str, group: str) -> tuple[int, int]:
        """uid/gid of names *on the target* (its /etc/passwd when offline)."""
        if self.is_live:
            return pwd.getpwnam(owner).pw_uid, grp.getgrnam(group).gr_gid
        return _id_from_file(self.host("/etc/passwd"), owner), _id_from_file(self.host("/etc/group"), group)

    def makedirs(self, target: str | Path, mode: int = 0o755, uid: int = 0, gid: int = 0) -> None:
        p = self.host(target)
        missing = []
        while not p.exists():
            missing.append(p)
            p = p.parent
        for d in reversed(missing):
            d.mkdir(mode=mode)
            os.chown(d, uid, gid)
            os.chmod(d, mode)

    def write_atomic(self, target: str | Path, state: FileState) -> None:
        """A whole file the Postfix way: temp file beside it, fsync, chown, chmod, rename over
        the old one, fsync the directory: a crash leaves old or new, never half."""
        if state.content is None:
            self.remove(target)
            return
        dest = self.host(target)
        self.makedirs(Path(target).parent)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(state.content)
                f.flush()
                os.fsync(f.fileno())
            os.chown(tmp, state.uid, state.gid)
            os.chmod(tmp, state.mode)
            _settled(tmp)
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        _fsync_dir(dest.parent)

    def remove(self, target: str | Path) -> None:
        p = self.host(target)
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            _fsync_dir(p.parent)

    def write_stage(self, stage: Path, target: str | Path, content: bytes) -> Path:
        """Write content to `stage`/<target path>, for validation before anything goes live."""
        dest = stage / Path(target).relative_to("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(content)
        _settled(dest)
        return dest

    def staging(self) -> contextlib.AbstractContextManager[Path]:
        """Staged files' directory, on the target's filesystem; 0755: validators drop privileges."""
        return self.scratch("/var/lib/appliance", "stage.", 0o755)

    @contextlib.contextmanager
    def scratch(self, under: str | Path, prefix: str, mode: int = 0o700) -> Iterator[Path]:
        """A new directory under `under`, removed with all it holds afterwards, whatever happens."""
        self.makedirs(under)
        d = Path(tempfile.mkdtemp(prefix=prefix, dir=self.host(under)))
        try:
            os.chmod(d, mode)
            yield d
        finally:
            remove_tree(d)

    def lock_path(self) -> Path:
        d = Path(os.environ.get("APPLIANCE_RUN_DIR", "/run/appliance")) if self.is_live \
            else self.host("/var/lib/appliance")
        return d / "apply.lock"

    @contextlib.contextmanager
    def lock(self, wait: float = 0.0) -> Iterator[None]:
        """One agent run at a time (certbot's lock, reduced to a flock). Re-entrant within a
        process: a command holds it across its edit and the apply that follows. A second
        process waits up to `wait` seconds, then is told who holds it."""
        path = self.lock_path()
        if path not in _held and _inherited(path):
            _held[path] = 0  # a hook the holder started (certbot's deploy hook): its lock
        if path in _held:
            _held[path] += 1
            try:
                yield
            finally:
                _held[path] -= 1
                if not _held[path]:  # the inherited entry ends with the hook's command
                    del _held[path]
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a+") as f:  # noqa: SIM115 - the lock lives as long as f
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        f.seek(0)
                        holder = f.read(200).strip() or "another process"
                        raise LockedError(
                            f"busy: {holder} holds {path}; nothing was changed, try again when it "
                            "has finished") from None
                    time.sleep(0.1)
            try:
                f.seek(0)
                f.truncate()
                f.write(f"`appliance {' '.join(sys.argv[1:])[:120]}` (pid {os.getpid()})\n")
                f.flush()
                _held[path] = 1
                os.environ[LOCK_ENV] = f"{os.getpid()}:{path}"  # for the hooks it starts
                yield
            finally:
                _held.pop(path, None)
                os.environ.pop(LOCK_ENV, None)
                f.truncate(0)
                fcntl.flock(f, fcntl.LOCK_UN)


_held: dict[Path, int] = {}  # locks this process holds, by path, with their depth
# A command that holds the lock may start another `appliance` that needs it (certbot, run by
# `appliance cert issue`, calls `appliance cert deploy` as its hook, and the holder waits for
# it). The child is told who holds the lock, and goes on when that holder is one of its
# ancestors (so a stray copy of the variable grants nothing).
LOCK_ENV = "APPLIANCE_LOCK_HOLDER"


def _inherited(path: Path) -> bool:
    pid, _, held_path = os.environ.get(LOCK_ENV, "").partition(":")
    if not pid.isdigit() or held_path != str(path):
        return False
    return int(pid) in _ancestors()


def _ancestors(limit: int = 64) -> set[int]:
    """The pids above this process, from /proc (bounded: a corrupt read must not hang)."""
    found: set[int] = set()
    pid = os.getppid()
    while pid > 1 and len(found) < limit:
        found.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rpartition(")")[2].split()[1])
    return found


# Postfix sleeps until a configuration file is about two seconds old (an editor could be
# mid-write): ~2 s per reading process, several per reload. Ours appear by atomic rename,
# never half-written, so they are dated a few seconds back.
SETTLED_AGE = 3.0


def _settled(path: str | Path) -> None:
    os.utime(path, (time.time() - SETTLED_AGE,) * 2)


def _id_from_file(path: Path, name: str) -> int:
    for line in path.read_text().splitlines():
        parts = line.split(":")
        if parts and parts[0] == name and len(parts) > 2:
            return int(parts[2])
    raise KeyError(f"{name} not found in {path}")


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_tree(path: str | Path) -> None:
    """Remove a directory and all in it, never following a link out of it (a restored
    snapshot holds certbot's live/ links to archive/, some absolute)."""
    top = Path(path)
    if top.is_symlink() or not top.is_dir():
        with contextlib.suppress(FileNotFoundError):
            top.unlink()
        return
    for here, dirs, files in os.walk(top, topdown=False, followlinks=False):
        for name in files:
            os.unlink(os.path.join(here, name))
        for name in dirs:
            p = os.path.join(here, name)
            if os.path.islink(p):
                os.unlink(p)
            else:
                os.rmdir(p)
    os.rmdir(top)


def write_user_file(path: Path, content: str, mode: int = 0o600) -> None:
    """Replace a file the user owns (the settings file) atomically, keeping its mode and owner."""
    try:
        st = path.stat()
        uid, gid, mode = st.st_uid, st.st_gid, st.st_mode & 0o7777
    except FileNotFoundError:
        uid, gid = os.getuid(), os.getgid()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        if os.getuid() == 0:
            os.chown(tmp, uid, gid)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def write_private(path: str | Path, content: bytes) -> None:
    """Replace a root-only state file (the console's sessions and password hash) atomically:
    0600 in a 0700 directory, fsynced, so a power cut leaves the old file or the new one."""
    p = Path(path)
    p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(p.parent)


def write_boot_note(path: str | Path, text: str) -> None:
    """A note on the card's FAT boot partition, for a computer that reads the card: CRLF
    line ends (Notepad), no owner or mode (FAT keeps neither), atomic rename."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.new")
    with open(tmp, "wb") as f:
        f.write(text.replace("\r\n", "\n").replace("\n", "\r\n").encode())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, p)
    _fsync_dir(p.parent)


def rewrite_in_place(path: str | Path, content: bytes) -> None:
    """Overwrite a file of the same size where it is, then fsync: on FAT one sector changes,
    never its directory entry or the allocation table (the boot slot state)."""
    with open(path, "r+b") as f:
        if os.fstat(f.fileno()).st_size != len(content):
            raise OSError(f"{path}: not {len(content)} bytes long; not rewritten in place")
        f.write(content)
        f.flush()
        os.fsync(f.fileno())


def chown_path(path: str | Path, owner: str, group: str, mode: int) -> None:
    """Hand a path (a socket the daemon made) to `owner`:`group` with `mode`."""
    os.chown(path, pwd.getpwnam(owner).pw_uid, grp.getgrnam(group).gr_gid)
    os.chmod(path, mode)


def remove_path(path: str | Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def stage_copy_tree(src: Path, dest: Path) -> None:
    """Copy into `dest` (a staging directory) the files of `src` it lacks: a staged
    configuration including package files (fail2ban's filters) is validated whole."""
    for p in sorted(src.rglob("*")):
        target = dest / p.relative_to(src)
        if p.is_dir() and not p.is_symlink():
            target.mkdir(parents=True, exist_ok=True)
        elif p.is_file() and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(p.read_bytes())


def ensure_file(path: str | Path, mode: int = 0o640, owner: str = "root", group: str = "adm") -> None:
    """Create a missing (log) file empty, so a reader (fail2ban) can open it before the writer
    first logs."""
    p = Path(path)
    if p.exists():
        return
    p.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    os.close(fd)
    with contextlib.suppress(KeyError):
        os.chown(p, pwd.getpwnam(owner).pw_uid, grp.getgrnam(group).gr_gid)


def ensure_secret(path: str | Path, nbytes: int) -> bytes:
    """A per-box secret (the abuse-report redaction key): read it, or make it once from the
    kernel's random source, 0600, written atomically so a crash never leaves half a key."""
    p = Path(path)
    try:
        return p.read_bytes()
    except FileNotFoundError:
        pass
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(nbytes))
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, p)  # fails if another run made the key meanwhile: then that one is used
    except FileExistsError:
        pass
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    _fsync_dir(p.parent)
    return p.read_bytes()
