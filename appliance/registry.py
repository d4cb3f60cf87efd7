"""The features of this build, in order: the only list of them.

The order is the order services are reloaded in (rspamd first: Postfix defers mail while its
milter is down; the agent's daemons after Postfix, which makes the sockets they use; fail2ban
after the daemons whose logs it reads), the order `appliance status` runs their checks in (the
domain's DNS first), the order of the records `appliance dns` prints (the domain's own first)
and the order their commands appear in `appliance --help`. A new
capability is a folder under features/ plus one line here.

This module sits above the features (like the CLI): the core never imports it, and no feature
does either. It is not features/__init__.py, because importing a feature's daemon module
(`python3 -m appliance.features.limits.policyd`) runs that file, and a daemon should load the
core and its own feature, not every feature.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance.core import fields, pipeline, plan, settings, system, tls
from appliance.core.facts import Facts
from appliance.core.feature import Feature
from appliance.core.services import Service
from appliance.features.backup.feature import FEATURE as BACKUP
from appliance.features.certs.feature import FEATURE as CERTS
from appliance.features.dav.feature import FEATURE as DAV
from appliance.features.dns.feature import FEATURE as DNS
from appliance.features.fail2ban.feature import FEATURE as FAIL2BAN
from appliance.features.firewall.feature import FEATURE as FIREWALL
from appliance.features.limits.feature import FEATURE as LIMITS
from appliance.features.mail.feature import FEATURE as MAIL
from appliance.features.openpgp.feature import FEATURE as OPENPGP
from appliance.features.privacy.feature import FEATURE as PRIVACY
from appliance.features.relay.feature import FEATURE as RELAY
from appliance.features.spam.feature import FEATURE as SPAM
from appliance.features.ssh.feature import FEATURE as SSH
from appliance.features.status.feature import FEATURE as STATUS
from appliance.features.updates.feature import FEATURE as UPDATES
from appliance.features.upnp.feature import FEATURE as UPNP
from appliance.features.web.feature import FEATURE as WEB

if TYPE_CHECKING:
    import jinja2

FEATURES: tuple[Feature, ...] = (
    DNS, SPAM, MAIL, DAV, WEB, CERTS, UPNP, STATUS, OPENPGP, RELAY, FIREWALL, SSH, FAIL2BAN, LIMITS,
    PRIVACY, BACKUP, UPDATES,
)
SECTIONS = tuple(pipeline.sections(FEATURES))


def parse_settings(data: dict[str, Any], path: str | None = None) -> settings.Settings:
    return settings.parse(data, path, SECTIONS)


def load_settings(path: Path | str = settings.DEFAULT_PATH) -> settings.Settings:
    return settings.load(path, SECTIONS)


def build_plan(s: settings.Settings, facts: Facts, env: jinja2.Environment,
               paths: plan.Paths | None = None, cert: tls.CertPaths | None = None,
               state: Mapping[str, str] | None = None,
               secrets: Mapping[str, str] | None = None) -> plan.Plan:
    inputs = plan.Inputs(s, facts, state or {}, secrets or {})
    return plan.build(inputs, env, FEATURES, paths=paths or plan.Paths(), cert=cert)


def all_services(root: system.Root) -> dict[str, Service]:
    return pipeline.all_services(root, FEATURES)


def settings_reference() -> str:
    """docs/settings.md, from the field descriptions of every feature's section."""
    owner = {s.name: f for f in FEATURES for s in f.sections}
    return fields.reference(SECTIONS, lambda s: f"{owner[s.name].name} ({owner[s.name].doc})")
