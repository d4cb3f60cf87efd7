"""Who is at the console: the setup code, the administrator's password, mail users' passwords,
and sessions. Runs in the agent (root); the web process never sees a hash.

Sessions are random tokens; the agent keeps only their SHA-256, so a copy of its state file
logs nobody in. A session ends after IDLE_S without a request, or MAX_AGE_S after login.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import secrets
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from appliance.core import system

STATE_DIR = "/var/lib/appliance/console"
IDLE_S = 30 * 60
MAX_AGE_S = 12 * 3600
# The setup code: 8 characters that cannot be misread for one another (no 0/O, 1/I/L),
# about 40 bits; with FAILED_DELAY_S per wrong guess, guessing it takes decades.
CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
FAILED_DELAY_S = 2.0
SEEN_WRITE_S = 60
ROLES = ("setup", "admin", "user")


def _path(root: Path, name: str) -> Path:
    return root / STATE_DIR.lstrip("/") / name


def _write(path: Path, data: str) -> None:
    system.write_private(path, data.encode())


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# --- the setup code -----------------------------------------------------------------------------
def setup_code(root: Path) -> str:
    """The one-time code the setup wizard asks for, made on first use and the same on every
    boot until setup ends (the note on the card and the screen must agree). It is kept in
    clear, root-only: the same code is on the card's boot partition anyway."""
    path = _path(root, "setup-code")
    try:
        code = path.read_text().strip()
    except FileNotFoundError:
        code = ""
    if len(code) != 8 or any(c not in CODE_ALPHABET for c in code):
        code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(8))
        _write(path, code + "\n")
    return f"{code[:4]}-{code[4:]}"


def setup_code_ok(root: Path, typed: str) -> bool:
    norm = "".join(c for c in typed.upper() if c.isalnum())
    try:
        want = _path(root, "setup-code").read_text().strip()
    except OSError:
        return False
    return len(want) == 8 and hmac.compare_digest(norm.encode(), want.encode())


def end_setup(root: Path) -> None:
    """The wizard is done: the code opens nothing any more."""
    _path(root, "setup-code").unlink(missing_ok=True)


# --- passwords ----------------------------------------------------------------------------------
def hash_admin(password: str) -> str:
    from argon2 import PasswordHasher  # python3-argon2

    # RFC 9106's second recommended option scaled to a 512 MB board: 19 MiB, 2 passes.
    return PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1).hash(password)


def verify(password: str, hashed: str) -> bool:
    """A password against a hash in the formats the settings accept (Argon2id, bcrypt,
    yescrypt, SHA512-CRYPT): the same answer Dovecot gives for that hash."""
    if not password or not hashed:
        return False
    if hashed.startswith("$argon2"):
        from argon2 import PasswordHasher
        from argon2.exceptions import Argon2Error

        try:
            return bool(PasswordHasher().verify(hashed, password))
        except (Argon2Error, ValueError):
            return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # libxcrypt: SHA512-CRYPT, yescrypt and bcrypt, as Dovecot's CRYPT

    got = crypt.crypt(password, hashed)
    return got is not None and hmac.compare_digest(got, hashed)


def set_admin_password(root: Path, password: str) -> None:
    _write(_path(root, "admin"), hash_admin(password) + "\n")


def admin_exists(root: Path) -> bool:
    return _path(root, "admin").is_file()


def admin_ok(root: Path, password: str) -> bool:
    try:
        hashed = _path(root, "admin").read_text().strip()
    except OSError:
        return False
    return verify(password, hashed)


# --- a second factor for the administrator (optional) ------------------------------------------
# TOTP (RFC 6238) with python3-pyotp: 30 s steps, one step of clock drift either way. The secret
# stays on the box (0600); the phone's authenticator app gets it once, by QR code.
TOTP_ISSUER = "mail-appliance"


def totp_on(root: Path) -> bool:
    return _path(root, "totp").is_file()


def totp_begin(root: Path, account: str) -> tuple[str, str]:
    """A new secret, pending until a code from it is typed (turning it on with a secret the
    phone never got would lock the administrator out). Returns (secret, otpauth:// URI)."""
    import pyotp

    secret = pyotp.random_base32()
    _write(_path(root, "totp.pending"), secret + "\n")
    return secret, pyotp.TOTP(secret).provisioning_uri(name=account, issuer_name=TOTP_ISSUER)


def _totp_ok(secret: str, code: str, last: int) -> int:
    """The time step `code` belongs to if it is right and newer than `last` (a code works
    once), else 0."""
    import pyotp

    code = "".join(c for c in code if c.isdigit())
    if len(code) != 6:
        return 0
    totp, now = pyotp.TOTP(secret), time.time()
    for drift in (-1, 0, 1):
        step = int(now // totp.interval) + drift
        if step > last and hmac.compare_digest(totp.at(step * totp.interval), code):
            return step
    return 0


def totp_confirm(root: Path, code: str) -> bool:
    try:
        secret = _path(root, "totp.pending").read_text().strip()
    except FileNotFoundError:
        return False
    step = _totp_ok(secret, code, 0)
    if not step:
        return False
    _write(_path(root, "totp"), f"{secret} {step}\n")
    _path(root, "totp.pending").unlink(missing_ok=True)
    return True


def totp_check(root: Path, code: str) -> bool:
    """The administrator's code at login; each code is accepted once."""
    try:
        secret, last = _path(root, "totp").read_text().split()
    except (FileNotFoundError, ValueError):
        return False
    step = _totp_ok(secret, code, int(last))
    if step:
        _write(_path(root, "totp"), f"{secret} {step}\n")
    return bool(step)


def totp_off(root: Path) -> None:
    _path(root, "totp").unlink(missing_ok=True)
    _path(root, "totp.pending").unlink(missing_ok=True)


# --- sessions -----------------------------------------------------------------------------------
@dataclass
class Session:
    who: str  # "admin", a mail address, or "setup"
    role: str  # one of ROLES
    csrf: str
    created: float
    seen: float


class Sessions:
    """Sessions kept on disk (the agent exits when idle and a session must outlive it)."""

    def __init__(self, root: Path) -> None:
        self.path = _path(root, "sessions.json")

    def _load(self) -> dict[str, Session]:
        try:
            raw = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        now = time.time()
        return {k: s for k, v in raw.items() if isinstance(v, dict)
                for s in [Session(**v)]
                if now - s.seen < IDLE_S and now - s.created < MAX_AGE_S}

    def _save(self, sessions: dict[str, Session]) -> None:
        _write(self.path, json.dumps({k: asdict(v) for k, v in sessions.items()}))

    def new(self, who: str, role: str) -> str:
        token = secrets.token_urlsafe(32)
        sessions = self._load()
        now = time.time()
        sessions[_digest(token)] = Session(who, role, secrets.token_urlsafe(24), now, now)
        self._save(sessions)
        return token

    def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        sessions = self._load()
        s = sessions.get(_digest(token))
        if s is None:
            return None
        now = time.time()
        if now - s.seen > SEEN_WRITE_S:  # not one SD-card write per click
            s.seen = now
            self._save(sessions)
        return s

    def end(self, token: str | None) -> None:
        if token:
            sessions = self._load()
            sessions.pop(_digest(token), None)
            self._save(sessions)

    def end_all(self, who: str) -> None:
        """A password changed: every other session of that person ends."""
        self._save({k: v for k, v in self._load().items() if v.who != who})


# --- guessing ---------------------------------------------------------------------------------------
class Throttle:
    """Wrong passwords (and setup codes) from one address. Each costs FAILED_DELAY_S; after
    FREE_TRIES within WINDOW_S the address waits FIRST_WAIT_S before the next is even checked,
    twice as long after each further failure, up to MAX_WAIT_S. Tries from one address are
    taken one at a time, so parallel connections do not multiply the rate. The LAN is slowed, never banned:
    a family member with a stale password is not locked out for good.

    Kept in memory: the agent exits after minutes without a request, which forgets the count;
    a guesser who pauses that long gets FREE_TRIES more, about one guess a minute."""

    FREE_TRIES = 5
    FIRST_WAIT_S = 4.0
    WINDOW_S = 15 * 60
    MAX_WAIT_S = 15 * 60

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.failures: dict[str, list[float]] = {}
        self.locks: dict[str, threading.Lock] = {}
        self.guard = threading.Lock()

    @contextlib.contextmanager
    def one_at_a_time(self, client: str) -> Iterator[None]:
        with self.guard:
            lock = self.locks.setdefault(client, threading.Lock())
        with lock:
            yield

    def _recent(self, client: str) -> list[float]:
        now = self.clock()
        kept = [t for t in self.failures.get(client, []) if now - t < self.WINDOW_S]
        self.failures[client] = kept
        return kept

    def wait_left(self, client: str) -> float:
        """Seconds before `client` may try again (0: now)."""
        recent = self._recent(client)
        over = len(recent) - self.FREE_TRIES
        if over < 0:
            return 0.0
        wait = min(self.MAX_WAIT_S, self.FIRST_WAIT_S * 2 ** over)
        return max(0.0, recent[-1] + wait - self.clock())

    def failed(self, client: str) -> None:
        self._recent(client).append(self.clock())

    def succeeded(self, client: str) -> None:
        self.failures.pop(client, None)


def loggable(text: str) -> str:
    """A name someone typed, safe in a log line fail2ban reads: one word (spaces escaped too),
    no line breaks or control characters that could forge another line, not too long."""
    return ascii(text[:64])[1:-1].replace(" ", "\\x20") or "-"
