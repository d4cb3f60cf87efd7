"""The plan: (settings, facts) -> the files the machine should have, and who reads them.

Pure: no file is read here except templates, through the Jinja2 environment passed in.
Merging, defaults and type coercion happen in Python (tested); templates only substitute
and loop. One template per config file, under templates/ mirroring the target path.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from . import tls
from .errors import ApplianceError
from .facts import Facts
from .settings import RelaySection, Settings

TEMPLATE_DIR = Path(__file__).parent / "templates"
# Tinkerers may override any template by placing a file with the same relative path here.
OVERRIDE_DIR = "/etc/appliance/templates"


class TemplateError(ApplianceError):
    """A template (usually a tinkerer's override) does not render."""


@dataclass(frozen=True)
class Paths:
    mail_log: str = "/var/log/mail.log"
    dovecot_log: str = "/var/log/dovecot.log"
    vmail: str = "/var/vmail"


@dataclass(frozen=True)
class DesiredFile:
    path: str  # on the target, absolute
    content: bytes
    service: str  # the service that reads it; its reload picks the change up
    mode: int = 0o644
    owner: str = "root"
    group: str = "root"
    secret: bool = False  # never shown in diffs or logs
    order: int = 50  # lower first: referenced files (maps) go live before the main file


@dataclass(frozen=True)
class Plan:
    files: tuple[DesiredFile, ...]
    directories: tuple[tuple[str, str, str, int], ...]  # (path, owner, group, mode)

    def services(self) -> list[str]:
        return sorted({f.service for f in self.files})

    def for_service(self, service: str) -> list[DesiredFile]:
        return [f for f in self.files if f.service == service]


@dataclass(frozen=True)
class FileSpec:
    """One file a feature wants: rendered from `template` with the common context plus `extra`."""

    template: str
    path: str
    service: str
    mode: int = 0o644
    owner: str = "root"
    group: str = "root"
    secret: bool = False
    order: int = 50
    extra: tuple[tuple[str, Any], ...] = ()


def mail_core(s: Settings, facts: Facts) -> list[FileSpec]:
    """Postfix and Dovecot for the user's own domain (issue #3)."""
    return [
        FileSpec("etc/postfix/vmailbox.j2", "/etc/postfix/vmailbox", "postfix", order=10),
        FileSpec("etc/postfix/virtual.j2", "/etc/postfix/virtual", "postfix", order=10),
        FileSpec("etc/postfix/sender_login.j2", "/etc/postfix/sender_login", "postfix", order=10),
        FileSpec("etc/postfix/master.cf.j2", "/etc/postfix/master.cf", "postfix", order=80),
        FileSpec("etc/postfix/main.cf.j2", "/etc/postfix/main.cf", "postfix", order=90),
        FileSpec("etc/dovecot/users.j2", "/etc/dovecot/users", "dovecot", 0o640, "root", "dovecot",
                 secret=True, order=10),
        FileSpec("etc/dovecot/dovecot.conf.j2", "/etc/dovecot/dovecot.conf", "dovecot", order=90),
    ]


Feature = Callable[[Settings, Facts], list[FileSpec]]


def _lazy(module: str, name: str) -> Feature:
    """A feature that lives in its own module, imported when first used: those modules import
    FileSpec from here, so plan cannot import them at load time."""

    def feature(s: Settings, facts: Facts) -> list[FileSpec]:
        found: Feature = getattr(importlib.import_module(f"appliance.{module}"), name)
        return found(s, facts)

    feature.__name__ = f"{module}.{name}"
    return feature


def _defence(s: Settings, facts: Facts) -> list[FileSpec]:
    from .defence import FEATURES as defence_features  # firewall, fail2ban, SSH, limits

    return [spec for feature in defence_features for spec in feature(s, facts)]


# Each feature contributes the files it needs: a pure function (settings, facts) -> [FileSpec].
# A feature adds itself here; its templates live under templates/ at their target paths.
FEATURES: list[Feature] = [
    mail_core,
    _lazy("relay", "relay_feature"),  # issue #5: smarthost password, tunnel to the user's VPS
    _lazy("upnp_feature", "upnp_units"),  # issue #5: mapping renewal timer
    _lazy("web", "web_feature"),  # issue #6: MTA-STS policy and WKD over HTTPS
    _lazy("openpgp.feature", "openpgp"),  # issue #7: encryption at rest
    _defence,  # issue #8
    _lazy("privacy", "feature"),  # issue #10: typo guard, log retention
    _lazy("spamfilter", "feature"),  # issue #9: rspamd (DKIM, SPF/DMARC, Junk)
    _lazy("status", "status_units"),  # issue #9: the daily status mail
]


def environment(override_dir: Path | None = None) -> jinja2.Environment:
    """Templates with StrictUndefined: a missing variable is an error, never an empty string."""
    loaders: list[jinja2.BaseLoader] = []
    if override_dir is not None and override_dir.is_dir():
        loaders.append(jinja2.FileSystemLoader(str(override_dir)))
    loaders.append(jinja2.FileSystemLoader(str(TEMPLATE_DIR)))
    return jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # noqa: S701 - these are config files, not HTML
    )


def header(template: str, env: jinja2.Environment) -> str:
    source = "override " + OVERRIDE_DIR if _is_override(env, template) else "templates"
    return (
        f"# Written by mail-appliance from {template} ({source}).\n"
        "# Local edits are overwritten: change /etc/appliance/settings.toml, or copy the\n"
        f"# template to {OVERRIDE_DIR}/{template} and edit it there."
    )


def _is_override(env: jinja2.Environment, template: str) -> bool:
    loader = env.loader
    if isinstance(loader, jinja2.ChoiceLoader) and len(loader.loaders) > 1:
        first = loader.loaders[0]
        return isinstance(first, jinja2.FileSystemLoader) and any(
            (Path(p) / template).is_file() for p in first.searchpath
        )
    return False


def alias_table(s: Settings) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for u in s.users:
        rows += [(a, u.address) for a in u.aliases]
    # RFC 2142 role addresses, plus root@ for the box's own cron/system mail.
    rows += [(f"{local}@{s.domain}", s.postmaster) for local in ("postmaster", "abuse", "root")]
    return rows


def sender_logins(s: Settings) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for u in s.users:
        rows.append((u.address, u.address))
        rows += [(a, u.address) for a in u.aliases]
    return rows


def build(
    s: Settings, facts: Facts, env: jinja2.Environment, paths: Paths = Paths(),
    cert: tls.CertPaths | None = None,
) -> Plan:
    cert = cert or tls.self_signed_paths()
    smarthost = s.relay if isinstance(s.relay, RelaySection) else None
    context = {
        "s": s,
        "facts": facts,
        "paths": paths,
        "cert": cert,
        "tls": {
            "ciphers": tls.CIPHERS_INTERMEDIATE,
            "min_protocol": tls.MIN_PROTOCOL,
            "smtpd_opportunistic_protocols": tls.SMTPD_OPPORTUNISTIC_PROTOCOLS,
        },
        "aliases": alias_table(s),
        "sender_logins": sender_logins(s),
        "relay": smarthost,
        "relay_ca": (smarthost.tls_ca_file if smarthost and smarthost.tls_ca_file
                     else "/etc/ssl/certs/ca-certificates.crt"),
    }
    files = []
    specs = [spec for feature in FEATURES for spec in feature(s, facts)]
    for spec in specs:
        template = spec.template
        try:
            text = env.get_template(template).render(header=header(template, env), **context,
                                                     **dict(spec.extra))
        except jinja2.TemplateError as e:
            where = f"{OVERRIDE_DIR}/{template}" if _is_override(env, template) else template
            line = f", line {e.lineno}" if isinstance(e, jinja2.TemplateSyntaxError) else ""
            raise TemplateError(
                f"template {where}{line}: {e.message or e}; fix it, or remove the override "
                f"to use the shipped template. Nothing was changed."
            ) from None
        files.append(DesiredFile(spec.path, text.encode(), spec.service, spec.mode, spec.owner,
                                 spec.group, spec.secret, spec.order))
    dirs = (
        (paths.vmail, "mail", "mail", 0o770),
        (str(Path(paths.mail_log).parent), "root", "root", 0o755),
    )
    return Plan(files=tuple(sorted(files, key=lambda f: f.order)), directories=dirs)


def render_all(plan: Plan) -> Iterable[tuple[str, str]]:
    for f in plan.files:
        yield f.path, ("<secret: not shown>\n" if f.secret else f.content.decode())
