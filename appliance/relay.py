"""Outbound through a smarthost ([relay] kind = "smarthost").

Fails closed: TLS is mandatory and verified (`smtp_tls_security_level = secure`, the
certificate must name the smarthost and chain to a trusted CA), so the password is never sent
in clear and a smarthost with an untrusted certificate gets nothing: the mail stays deferred in
the queue. The party running the smarthost sees every message the box sends; `appliance
reachability` and the apply output say so.
"""

from __future__ import annotations

from pathlib import Path

from .errors import SettingsError
from .facts import Facts
from .plan import FileSpec
from .settings import Settings

SYSTEM_CA = "/etc/ssl/certs/ca-certificates.crt"


def read_password(s: Settings) -> str | None:
    if s.relay is None:
        return None
    try:
        pw = Path(s.relay.password_file).read_text(encoding="utf-8").strip()
    except OSError as e:
        raise SettingsError([f"relay.password_file: \"{s.relay.password_file}\" cannot be read "
                             f"({e.strerror}); put the smarthost password alone in that file, "
                             "mode 600"]) from None
    if not pw or "\n" in pw:
        raise SettingsError([f"relay.password_file: \"{s.relay.password_file}\" must hold the "
                             "password on one line"])
    return pw


def notice(s: Settings) -> str | None:
    if s.relay is None:
        return None
    return (f"outgoing mail is relayed through {s.relay.host}:{s.relay.port}: whoever runs it "
            "sees every message you send (addresses and content)")


def relay_feature(s: Settings, facts: Facts) -> list[FileSpec]:
    """The SASL password table: always written, empty without a relay, so no stale password
    outlives a settings change."""
    rows: list[tuple[str, str]] = []
    if s.relay is not None:
        if facts.relay_password is None:
            raise SettingsError(["relay: the smarthost password was not read; run `appliance apply`"])
        rows.append((f"[{s.relay.host}]:{s.relay.port}", f"{s.relay.username}:{facts.relay_password}"))
    return [FileSpec("etc/postfix/sasl_passwd.j2", "/etc/postfix/sasl_passwd", "postfix", 0o600,
                     secret=True, order=10, extra=(("sasl_rows", rows),))]
