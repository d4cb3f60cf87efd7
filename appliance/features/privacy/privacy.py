"""What leaves the box: the [privacy] settings, the files they render, and the typo
guard's root commands (`appliance release`, `appliance typo-guard learn|check|list`).

    [privacy]
    typo_guard = true          # hold submitted mail to a near miss of a known domain
    typo_history = "hashed"    # or "plain": how corresponded-with domains are stored
    log_retention_days = 7     # mail and auth logs are kept this long (1..365)
"""

from __future__ import annotations

import argparse
import email
import json
import re
from collections.abc import Iterable
from email.policy import compat32
from email.utils import getaddresses
from pathlib import Path
from typing import Any

from appliance.core import settings, system
from appliance.core.command import Env
from appliance.core.errors import EXIT_OK, ApplianceError, UsageError, ValidationError
from appliance.core.feature import Subcommands
from appliance.core.plan import FileSpec, Inputs
from appliance.core.policy import CONTEXT_KEY
from appliance.core.services import Scheduled
from appliance.features.privacy import policy as tp
from appliance.features.privacy import reply as typoguard_reply
from appliance.features.privacy import typoguard as tg
from appliance.features.privacy.settings import HISTORY_GROUP, SECTION, Privacy


def feature(i: Inputs) -> list[FileSpec]:
    """Plan feature: the submission header checks and log retention, always; with the typo
    guard on, its configuration (read by the policy service, appliance-policyd) and release by
    reply (the release agent, its sockets, the maps main.cf names). Guard off: none of those
    files, so the policy service finds no configuration (the guard passes everything), the
    release agent and its sockets are stopped, and main.cf names neither map (context below)."""
    s = i.settings

    p: Privacy = getattr(s, "privacy", Privacy())
    specs = [
        # master.cf names it (the submission ports' own cleanup service): written before it.
        FileSpec("etc/postfix/submission_header_checks.j2", "/etc/postfix/submission_header_checks",
                 "postfix", order=10),
        FileSpec("etc/logrotate.d/appliance.j2", LOGROTATE_CONF, "logrotate", 0o644, order=50,
                 extra=(("logs", RETAINED_LOGS), ("days", p.log_retention_days))),
    ]
    if not p.typo_guard:
        return specs
    release = (("release_domain", typoguard_reply.release_domain(s.domain)),
               ("release_transport", typoguard_reply.TRANSPORT))
    return specs + [
        FileSpec("etc/appliance/typoguard.conf.j2", tp.CONF, "appliance-policyd", 0o644,
                 order=20, extra=(("p", p),)),
        # Release by reply: main.cf names both maps (written before it); the agent's unit.
        FileSpec("etc/postfix/transport.j2", "/etc/postfix/transport", "postfix", order=10,
                 extra=release),
        FileSpec("etc/postfix/release_access.j2", "/etc/postfix/release_access", "postfix",
                 order=10, extra=release),
        FileSpec("etc/systemd/system/appliance-release.service.j2",
                 "/etc/systemd/system/appliance-release.service", "appliance-release", order=20),
        # It starts on demand: these listen in its place.
        FileSpec("etc/systemd/system/appliance-release.socket.j2",
                 "/etc/systemd/system/appliance-release.socket", "appliance-release", order=20,
                 extra=(("lmtp_socket", typoguard_reply.LMTP_SOCKET),)),
        FileSpec("etc/systemd/system/appliance-release-notice.socket.j2",
                 "/etc/systemd/system/appliance-release-notice.socket", "appliance-release",
                 order=20, extra=(("notice_socket", tp.RELEASE_AGENT_SOCKET),)),
    ]


# The typo guard's checks, which the policy service runs (core/policy.py). Named whether the
# guard is on or off: off, it finds no typoguard.conf and passes everything.
POLICY_CHECKS = (tp.__name__,)


def context(s: Any) -> dict[str, Any]:
    """main.cf routes and guards the release addresses only while the guard is on; the policy
    service always runs the guard's checks."""
    return {"release_by_reply": s.privacy.typo_guard, CONTEXT_KEY: list(POLICY_CHECKS)}


# Every log the box writes that records who talked to whom: mail (Postfix, Dovecot), auth
# (sshd), the outbound policy service and the release agent. Debian's fail2ban
# package rotates its own log (/etc/logrotate.d/fail2ban); naming it here too would be a
# duplicate entry.
RETAINED_LOGS = ("/var/log/mail.log", "/var/log/dovecot.log", "/var/log/sshd.log",
                 "/var/log/appliance-policyd.log", "/var/log/appliance-release.log")
LOGROTATE_CONF = "/etc/logrotate.d/appliance"


class Logrotate(Scheduled):
    """Not a daemon: Debian's daily logrotate timer (or cron.daily) reads the file. Validated
    with `logrotate --debug` (parses, rotates nothing); nothing to reload."""

    name = "logrotate"
    unit = "logrotate.timer"

    def validate(self, stage: Path) -> None:
        conf = stage / LOGROTATE_CONF.lstrip("/")
        if not conf.exists():
            return
        res = system.run(["logrotate", "--debug", "--state", str(stage / "logrotate.status"),
                          str(conf)], check=False, timeout=60)
        if res.returncode == 127:
            raise ValidationError(self.name, "logrotate --debug",
                                  "logrotate is not installed: apt-get install logrotate")
        if res.returncode != 0 or re.search(r"^error:", res.output, re.MULTILINE):
            raise ValidationError(self.name, "logrotate --debug", res.output)

# --- The history (root) --------------------------------------------------------------------------

def _mode(settings_path: Path) -> str:
    try:
        privacy: Privacy = settings.load_section(settings_path, SECTION)
        return privacy.typo_history
    except ApplianceError:
        return "hashed"


def load_history(mode: str) -> tg.History:
    """The stored history. Plain on disk and "hashed" wanted: converted (names can be hashed);
    hashed on disk and "plain" wanted: stays hashed (the names are not there to recover)."""
    text = (system.Root("/").read(tp.HISTORY).content or b"").decode()
    on_disk_hashed = text.startswith(tp.history_header(True))
    salt = _salt() if mode == "hashed" or on_disk_hashed else None
    if not text:
        return tg.History(salt=salt)
    h = tp.parse_history(text, salt)
    if salt is not None and h.salt is None:
        new = tg.History(salt=salt)
        for name in h.exact:
            new.add(name)
        return new
    return h


def _salt() -> bytes:
    root = system.Root("/")
    root.makedirs(tp.STATE_DIR, 0o755)
    salt = system.ensure_secret(tp.SALT, 32)
    system.chown_path(tp.SALT, "root", HISTORY_GROUP, 0o640)
    return salt


def save_history(h: tg.History) -> None:
    root = system.Root("/")
    uid, gid = root.lookup_ids("root", HISTORY_GROUP)
    content = (tp.history_header(h.salt is not None) + h.dumps()).encode()
    root.write_atomic(tp.HISTORY, system.FileState(content, 0o640, uid, gid))


def learn(domains: Iterable[str], mode: str) -> list[str]:
    h = load_history(mode)
    added = []
    for d in domains:
        n = tg.base(d)  # kept by registrable domain: `mail.army.mil` teaches army.mil
        if not h.knows(n):
            h.add(n)
            added.append(n)
    save_history(h)
    return added


_DOMAIN_RE = re.compile(r"^[^@\s]+@([^@\s>]+)$")


def domains_in_maildirs(base: Path, own: str, limit: int = 20000) -> set[str]:
    """Correspondents' domains in stored mail: senders of received mail, recipients of sent mail
    (what the user kept: deleted spam teaches nothing)."""
    found: set[str] = set()
    files = [p for sub in ("new", "cur") for p in base.rglob(f"{sub}/*") if p.is_file()][:limit]
    for f in files:
        try:
            with open(f, "rb") as fh:
                head = fh.read(65536)
        except OSError:
            continue
        m = email.message_from_bytes(head.split(b"\n\n", 1)[0] + b"\n\n", policy=compat32)
        sent = "/.Sent" in str(f) or "/Sent/" in str(f)
        fields = ("To", "Cc", "Bcc") if sent else ("From", "Reply-To")
        for _, addr in getaddresses([str(v) for k in fields for v in (m.get_all(k) or [])]):
            mm = _DOMAIN_RE.match(addr)
            if mm:
                d = mm.group(1).lower().rstrip(".")
                if d != own and not d.endswith("." + own):
                    found.add(d)
    return found


# --- Commands ------------------------------------------------------------------------------------

_QID = re.compile(r"^[0-9A-Za-z]{6,20}$")


def queue_entries() -> list[dict[str, Any]]:
    """The mail queue as `postqueue -j` lists it (one JSON object a message)."""
    res = system.run(["postqueue", "-j"], check=False, timeout=60)
    if res.returncode != 0:
        raise ApplianceError(f"cannot read the mail queue: {res.output}")
    out = []
    for line in res.stdout.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def _held(qid: str) -> dict[str, Any]:
    for q in queue_entries():
        if q.get("queue_id") == qid:
            if q.get("queue_name") != "hold":
                raise UsageError(f"message {qid} is not held (it is in the {q.get('queue_name')} queue)")
            return q
    raise UsageError(f"no message {qid} in the queue; list held mail with `postqueue -j` "
                     '("queue_name": "hold")')


def release_held(q: dict[str, Any], settings_path: Path) -> list[str]:
    """Send a held message on (postsuper -H, then postqueue -i) and remember its recipients'
    domains. `q` is its entry in `postqueue -j`. Returns the domains newly remembered. Used by
    `appliance release` and by the release agent (a reply to the notice)."""
    qid = str(q["queue_id"])
    domains = sorted({r["address"].rpartition("@")[2] for r in q.get("recipients", [])
                      if "@" in r.get("address", "")})
    res = system.run(["postsuper", "-H", qid], check=False, timeout=60)
    if res.returncode != 0:
        raise ApplianceError(f"postsuper -H {qid} failed: {res.output}")
    system.run(["postqueue", "-i", qid], check=False, timeout=60)  # deliver it now
    return learn(domains, _mode(settings_path)) if domains else []


def cmd_release(a: argparse.Namespace, env: Env) -> int:
    if not _QID.match(a.queue_id):
        raise UsageError(f"{a.queue_id!r} is not a Postfix queue ID (letters and digits, e.g. 4Xyz1234AbC)")
    added = release_held(_held(a.queue_id), Path(a.settings))
    env.out(f"released {a.queue_id}" + (f"; remembered {', '.join(added)}" if added else ""))
    return EXIT_OK


def cmd_typo_guard(a: argparse.Namespace, env: Env) -> int:
    mode = _mode(Path(a.settings))
    if a.action == "learn":
        names = list(a.domain or [])
        if a.maildirs:

            own = env.settings(Path(a.settings)).domain
            names += sorted(domains_in_maildirs(Path(a.maildirs), own))
        try:
            added = learn(names, mode)
        except tg.DomainError as e:
            raise UsageError(f"{e}; give domain names like example.org") from None
        names_added = f": {', '.join(added)}" if added else ""
        env.out(f"remembered {len(added)} new domain(s) ({mode}){names_added}")
        return EXIT_OK
    h = load_history(mode)
    if a.action == "list":
        if h.salt is not None:
            env.out(f"{len(h.exact)} domain(s), stored as salted hashes (typo_history = \"hashed\")")
        else:
            for d in sorted(h.exact):
                env.out(d)
        return EXIT_OK
    try:
        v = tg.check(a.domain_to_check, h)
    except tg.DomainError as e:
        raise UsageError(str(e)) from None
    env.out(f"{v.domain}: {'HOLD - ' + v.notice() if v.hold else 'ok (' + v.reason + ')'}")
    return EXIT_OK


def register(sub: Subcommands) -> None:
    r = sub.add_parser("release", help="send a message the typo guard (or a limit) held")
    r.add_argument("queue_id")
    r.set_defaults(func=cmd_release)
    t = sub.add_parser("typo-guard", help="the domains you correspond with (the typo guard)")
    ts = t.add_subparsers(dest="action", required=True)
    x = ts.add_parser("learn", help="remember domains: named, or found in stored mail")
    x.add_argument("domain", nargs="*")
    x.add_argument("--maildirs", metavar="DIR", help="scan stored mail, e.g. /var/vmail/example.org")
    ts.add_parser("list")
    c = ts.add_parser("check", help="would mail to this domain be held?")
    c.add_argument("domain_to_check")
    t.set_defaults(func=cmd_typo_guard)
