"""Mail for the user's own domain: Postfix (SMTP, submission) and Dovecot (IMAP, LMTP)."""

from __future__ import annotations

from typing import Any

from appliance.core import app_passwords, mail_rules, system, tls
from appliance.core.feature import Feature, Say
from appliance.core.plan import FileSpec, Inputs
from appliance.core.services import Service
from appliance.core.settings import Settings, User, hash_scheme
from appliance.features.mail import checks, cli, quota
from appliance.features.mail.addresses import alias_table, sender_logins
from appliance.features.mail.service import SIEVE_BIN, Dovecot, Postfix
from appliance.features.mail.settings import DELIMITER, SECTION

# One Sieve script per user with forwarding or an away message (core/mail_rules.py).
USER_RULES = "/etc/dovecot/sieve/users"
TAG_FOLDERS = "/etc/dovecot/sieve/tag-folders.sieve"


def files(i: Inputs) -> list[FileSpec]:
    return [
        FileSpec("etc/postfix/vmailbox.j2", "/etc/postfix/vmailbox", "postfix", order=10),
        FileSpec("etc/postfix/virtual.j2", "/etc/postfix/virtual", "postfix", order=10),
        FileSpec("etc/postfix/sender_login.j2", "/etc/postfix/sender_login", "postfix", order=10),
        FileSpec("etc/postfix/master.cf.j2", "/etc/postfix/master.cf", "postfix", order=80),
        FileSpec("etc/postfix/main.cf.j2", "/etc/postfix/main.cf", "postfix", order=90),
        FileSpec("etc/dovecot/users.j2", "/etc/dovecot/users", "dovecot", 0o640, "root", "dovecot",
                 secret=True, order=10, extra=(("quotas", quota.limits_mb(
                     i.settings, int(i.state.get("mail_store_bytes", 0)) or None)),)),
        FileSpec("etc/dovecot/quota-warning.sh.j2", "/etc/dovecot/quota-warning.sh", "dovecot",
                 0o755, order=10),
        FileSpec("etc/dovecot/app-passwords.j2", "/etc/dovecot/app-passwords", "dovecot", 0o640,
                 "root", "dovecot", secret=True, order=10),
        FileSpec("etc/dovecot/app-passwords.lua.j2", "/etc/dovecot/app-passwords.lua", "dovecot",
                 order=10),
        FileSpec("etc/dovecot/dovecot.conf.j2", "/etc/dovecot/dovecot.conf", "dovecot", order=90),
    ] + ([FileSpec("etc/dovecot/sieve/tag-folders.sieve.j2", TAG_FOLDERS, "dovecot", order=20)]
         if i.settings.mail.plus_addressing and i.settings.mail.tag_folders else []) + [
        FileSpec("etc/dovecot/sieve/user-rules.sieve.j2", f"{USER_RULES}/{u.address}.sieve",
                  "dovecot", order=20, extra=(("u", u), ("sieve_require", _requires(u))))
         for u in i.settings.users if u.forward_to or u.vacation]


def _requires(u: User) -> tuple[str, ...]:
    """The Sieve extensions a user's rules use (sievec refuses one that is not required)."""
    need = []
    if u.vacation:
        need += ["vacation"] + (["date", "relational"] if u.vacation.until else [])
    if u.forward_to and u.forward_keep:
        need.append("copy")
    return tuple(f'"{x}"' for x in need)


def context(s: Settings) -> dict[str, Any]:
    return {"aliases": alias_table(s), "sender_logins": sender_logins(s),
            "app_password_scheme": hash_scheme, "app_password_use_dir": app_passwords.USE_DIR,
            "app_password_services": app_passwords.SERVICES, "sieve_string": mail_rules.sieve_string,
            "user_rules": USER_RULES, "tag_folders": TAG_FOLDERS, "sieve_bin": SIEVE_BIN,
            "delimiter": DELIMITER, "quota_full_reply": quota.FULL_REPLY}


def services(root: system.Root) -> list[Service]:
    return [Postfix(root), Dovecot(root)]


def state(root: system.Root, s: Settings) -> dict[str, str]:
    # The card's size, which the default quotas share out (quota.py): measured on the box
    # itself, never on the machine that builds an image.
    return {"mail_store_bytes": str(quota.store_bytes(root))} if root.is_live else {}


def prepare(root: system.Root, s: Settings, say: Say) -> None:
    # Where Dovecot's auth worker (root) notes each app password's last use.
    root.makedirs(app_passwords.USE_DIR, 0o700)
    root.makedirs(SIEVE_BIN, 0o700, *root.lookup_ids("mail", "mail"))
    if tls.ensure_self_signed(root, s.hostname):
        say(f"created a self-signed certificate for {s.hostname} (until a real one is issued)")


FEATURE = Feature("mail", "README.md", sections=(SECTION,), files=files, context=context,
                  services=services, commands=cli.register, prepare=prepare,
                  state=state, checks=(quota.check_quotas, checks.check_catch_all),
                  # An import takes hours on a home line: the box's applies go on meanwhile.
                  unlocked=frozenset({"import"}))
