"""SSH: sshd's drop-in and root's authorized keys from `[ssh] authorized_keys` (ssh.py)."""

from __future__ import annotations

from appliance.core import system
from appliance.core.feature import Feature
from appliance.core.plan import FileSpec, Inputs
from appliance.core.services import Service
from appliance.features.ssh.settings import SECTION
from appliance.features.ssh.ssh import AUTHORIZED_KEYS, DROPIN, SSHD_LOG, Sshd


def files(i: Inputs) -> list[FileSpec]:
    s = i.settings
    specs = [FileSpec("etc/ssh/sshd_config.d/appliance.conf.j2", DROPIN, "sshd", order=90,
                      extra=(("sshd_log", SSHD_LOG),))]
    if s.ssh.authorized_keys:
        specs.append(FileSpec("etc/ssh/authorized_keys/root.j2", AUTHORIZED_KEYS, "sshd",
                              0o644, order=10, extra=(("keys", list(s.ssh.authorized_keys)),)))
    return specs


def services(root: system.Root) -> list[Service]:
    return [Sshd(root)]


FEATURE = Feature("ssh", "docs/lan-defence.md", sections=(SECTION,), files=files, services=services)
