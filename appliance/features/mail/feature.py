"""Mail for the user's own domain: Postfix (SMTP, submission) and Dovecot (IMAP, LMTP)."""

from __future__ import annotations

from typing import Any

from appliance.core import app_passwords, system, tls
from appliance.core.feature import Feature, Say
from appliance.core.plan import FileSpec, Inputs
from appliance.core.services import Service
from appliance.core.settings import Settings, hash_scheme
from appliance.features.mail import cli
from appliance.features.mail.addresses import alias_table, sender_logins
from appliance.features.mail.service import Dovecot, Postfix


def files(i: Inputs) -> list[FileSpec]:
    return [
        FileSpec("etc/postfix/vmailbox.j2", "/etc/postfix/vmailbox", "postfix", order=10),
        FileSpec("etc/postfix/virtual.j2", "/etc/postfix/virtual", "postfix", order=10),
        FileSpec("etc/postfix/sender_login.j2", "/etc/postfix/sender_login", "postfix", order=10),
        FileSpec("etc/postfix/master.cf.j2", "/etc/postfix/master.cf", "postfix", order=80),
        FileSpec("etc/postfix/main.cf.j2", "/etc/postfix/main.cf", "postfix", order=90),
        FileSpec("etc/dovecot/users.j2", "/etc/dovecot/users", "dovecot", 0o640, "root", "dovecot",
                 secret=True, order=10),
        FileSpec("etc/dovecot/app-passwords.j2", "/etc/dovecot/app-passwords", "dovecot", 0o640,
                 "root", "dovecot", secret=True, order=10),
        FileSpec("etc/dovecot/app-passwords.lua.j2", "/etc/dovecot/app-passwords.lua", "dovecot",
                 order=10),
        FileSpec("etc/dovecot/dovecot.conf.j2", "/etc/dovecot/dovecot.conf", "dovecot", order=90),
    ]


def context(s: Settings) -> dict[str, Any]:
    return {"aliases": alias_table(s), "sender_logins": sender_logins(s),
            "app_password_scheme": hash_scheme, "app_password_use_dir": app_passwords.USE_DIR,
            "app_password_services": app_passwords.SERVICES}


def services(root: system.Root) -> list[Service]:
    return [Postfix(root), Dovecot(root)]


def prepare(root: system.Root, s: Settings, say: Say) -> None:
    # Where Dovecot's auth worker (root) notes each app password's last use.
    root.makedirs(app_passwords.USE_DIR, 0o700)
    if tls.ensure_self_signed(root, s.hostname):
        say(f"created a self-signed certificate for {s.hostname} (until a real one is issued)")


FEATURE = Feature("mail", "README.md", files=files, context=context, services=services,
                  commands=cli.register, prepare=prepare)
