"""The plan: (settings, facts, features) -> the files the machine should have, and who reads them.

Pure: no file is read here except templates, through the Jinja2 environment passed in.
Merging, defaults and type coercion happen in Python (tested); templates only substitute
and loop. One template per config file, under templates/ mirroring the target path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from appliance.core import tls
from appliance.core.errors import ApplianceError
from appliance.core.facts import Facts
from appliance.core.settings import Settings

if TYPE_CHECKING:
    import jinja2

TEMPLATE_DIR = Path(__file__).parents[1] / "templates"
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


@dataclass(frozen=True)
class Inputs:
    """Everything the plan is a function of, each kind apart: the user's settings, the
    machine's facts, the agent's state (the DKIM selector that signs), and secrets (a relay's
    password), which never reach a diff or a log."""

    settings: Settings
    facts: Facts
    state: Mapping[str, str] = field(default_factory=dict)
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)


class Contributor(Protocol):
    """What the plan asks of a feature (core.feature.Feature is one)."""

    @property
    def files(self) -> Callable[[Inputs], list[FileSpec]]: ...

    @property
    def context(self) -> Callable[[Settings], Mapping[str, object]]: ...


def environment(override_dir: Path | None = None) -> jinja2.Environment:
    """Templates with StrictUndefined: a missing variable is an error, never an empty string."""
    import jinja2  # only where files are rendered: `appliance check` and the daemons do without

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
    import jinja2

    loader = env.loader
    if isinstance(loader, jinja2.ChoiceLoader) and len(loader.loaders) > 1:
        first = loader.loaders[0]
        return isinstance(first, jinja2.FileSystemLoader) and any(
            (Path(p) / template).is_file() for p in first.searchpath
        )
    return False


def build(
    inputs: Inputs, env: jinja2.Environment, features: Sequence[Contributor],
    paths: Paths = Paths(), cert: tls.CertPaths | None = None,
) -> Plan:
    """Each feature contributes the files it wants (pure functions of settings and facts) and
    the names its templates share with others (the relay's host in Postfix's main.cf)."""
    import jinja2

    s, facts = inputs.settings, inputs.facts
    cert = cert or tls.self_signed_paths()
    context: dict[str, Any] = {
        "s": s,
        "facts": facts,
        "paths": paths,
        "cert": cert,
        "tls": {
            "ciphers": tls.CIPHERS_INTERMEDIATE,
            "min_protocol": tls.MIN_PROTOCOL,
            "smtpd_opportunistic_protocols": tls.SMTPD_OPPORTUNISTIC_PROTOCOLS,
        },
    }
    for feature in features:
        context.update(feature.context(s))
    files = []
    specs = [spec for feature in features for spec in feature.files(inputs)]
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
