"""Plan features of the box's self-defence (issue #8): which files the firewall, fail2ban and
SSH need, from settings and facts. Pure, like plan; the services live in firewall.py,
fail2ban.py and ssh.py."""

from __future__ import annotations

from appliance.core.plan import FileSpec, Inputs
from appliance.features.defence.fail2ban import SSHD_LOG
from appliance.features.defence.firewall import RULES_PATH, lan_networks, never_ban, wan_tcp_ports
from appliance.features.defence.ssh import AUTHORIZED_KEYS, DROPIN


def firewall(i: Inputs) -> list[FileSpec]:
    s, facts = i.settings, i.facts
    if not s.defence.firewall:
        return []
    v4, v6 = lan_networks(s, facts)
    extra = (("lan4", v4), ("lan6", v6), ("wan_tcp", wan_tcp_ports(s)), ("web", s.defence.web),
             ("lan_text", ", ".join(v4 + v6) or "none detected"))
    return [FileSpec("etc/nftables.d/appliance.nft.j2", RULES_PATH, "nftables", extra=extra)]


def fail2ban(i: Inputs) -> list[FileSpec]:
    s, facts = i.settings, i.facts
    if not s.defence.fail2ban:
        return []
    extra = (("ignoreip", never_ban(s, facts)), ("d", s.defence), ("sshd_log", SSHD_LOG))
    return [
        FileSpec("etc/fail2ban/filter.d/appliance-sshd.conf.j2",
                 "/etc/fail2ban/filter.d/appliance-sshd.conf", "fail2ban", order=10, extra=extra),
        FileSpec("etc/fail2ban/filter.d/appliance-postfix.conf.j2",
                 "/etc/fail2ban/filter.d/appliance-postfix.conf", "fail2ban", order=10, extra=extra),
        FileSpec("etc/fail2ban/fail2ban.d/appliance.local.j2",
                 "/etc/fail2ban/fail2ban.d/appliance.local", "fail2ban", order=20, extra=extra),
        FileSpec("etc/fail2ban/jail.d/appliance.local.j2",
                 "/etc/fail2ban/jail.d/appliance.local", "fail2ban", order=90, extra=extra),
    ]


def ssh(i: Inputs) -> list[FileSpec]:
    s = i.settings
    specs = [FileSpec("etc/ssh/sshd_config.d/appliance.conf.j2", DROPIN, "sshd", order=90,
                      extra=(("sshd_log", SSHD_LOG),))]
    if s.defence.authorized_keys:
        specs.append(FileSpec("etc/ssh/authorized_keys/root.j2", AUTHORIZED_KEYS, "sshd",
                              0o644, order=10, extra=(("keys", list(s.defence.authorized_keys)),)))
    return specs


def limits(i: Inputs) -> list[FileSpec]:
    """The outbound kill-switch's configuration (policyd.py); Postfix's master.cf names it."""
    s = i.settings
    return [FileSpec("etc/appliance/limits.conf.j2", "/etc/appliance/limits.conf",
                     "appliance-policyd", order=10, extra=(("lim", s.defence.limits),)),
            FileSpec("etc/systemd/system/appliance-policyd.service.j2",
                     "/etc/systemd/system/appliance-policyd.service", "appliance-policyd", order=20)]


FEATURES = [firewall, fail2ban, ssh, limits]
