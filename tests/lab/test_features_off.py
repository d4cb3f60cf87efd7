"""Turning a feature off removes it: its files, its processes, its nft tables. Turning it on
again brings it back. Mail flows in every state. Real nginx, nftables, fail2ban in the lab."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from .mail_lab import ALICE, DOMAIN, REMOTE_USER, MailLab, settings_toml, well_formed
from .netlab import wait_for


@dataclass(frozen=True)
class Toggle:
    on: str  # settings text with the feature on
    off: str  # ... and off
    files: tuple[str, ...]  # what the feature writes
    running: Callable[[MailLab], bool]  # its process or kernel state


def pid_alive(lab: MailLab, pidfile: str) -> bool:
    if not lab.app.exists(pidfile):
        return False
    pid = lab.app.read(pidfile).split()[0]
    return lab.app.run(["kill", "-0", pid], check=False).returncode == 0


def nft_table(lab: MailLab) -> bool:
    return lab.app.run(["nft", "list", "table", "inet", "appliance"], check=False).returncode == 0


TOGGLES = {
    "web": Toggle("\n[web]\nenabled = true\n", "", (
        "/etc/nginx/nginx.conf", "/var/lib/appliance/www/mta-sts/.well-known/mta-sts.txt"),
        lambda lab: pid_alive(lab, "/run/nginx.pid")),
    "firewall": Toggle("", "\n[firewall]\nenabled = false\n", ("/etc/nftables.d/appliance.nft",),
                       nft_table),
    "fail2ban": Toggle("", "\n[fail2ban]\nenabled = false\n", (
        "/etc/fail2ban/jail.d/appliance.local", "/etc/fail2ban/fail2ban.d/appliance.local",
        "/etc/fail2ban/filter.d/appliance-sshd.conf"),
        lambda lab: pid_alive(lab, "/run/fail2ban/fail2ban.pid")),
}


def apply(lab: MailLab, extra: str) -> str:
    lab.write_settings(settings_toml(lab.users, lab.settings_extra + extra))
    r = lab.appliance("apply")
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def mail_flows(lab: MailLab) -> None:
    tag = uuid.uuid4().hex[:12]
    maildir = f"/var/vmail/{DOMAIN}/alice/Maildir"
    before = len(lab.maildir_files(lab.app, maildir))
    msg = well_formed(REMOTE_USER, ALICE, f"feature toggle {tag}")
    r = lab.mx.python(f"""
import smtplib
s = smtplib.SMTP('127.0.0.1', 25, timeout=15)
s.sendmail({REMOTE_USER!r}, [{ALICE!r}], {msg!r})
s.quit()""")
    assert r.returncode == 0, r.stderr
    wait_for(f"message {tag} in alice's mailbox",
             lambda: len(lab.maildir_files(lab.app, maildir)) > before, timeout=60)


@pytest.mark.parametrize("name", sorted(TOGGLES))
def test_a_feature_turned_off_leaves_nothing_and_comes_back(lab: MailLab, name: str) -> None:
    t = TOGGLES[name]
    try:
        apply(lab, t.on)
        assert all(lab.app.exists(f) for f in t.files), [f for f in t.files if not lab.app.exists(f)]
        wait_for(f"{name} running", lambda: t.running(lab), timeout=30)

        out = apply(lab, t.off)
        assert "stopped" in out, out
        assert not [f for f in t.files if lab.app.exists(f)]
        assert not t.running(lab), f"{name} still running after it was turned off"
        mail_flows(lab)
        assert apply(lab, t.off).startswith("changed 0 file(s)")  # converged: nothing more to do

        apply(lab, t.on)
        assert all(lab.app.exists(f) for f in t.files)
        wait_for(f"{name} running again", lambda: t.running(lab), timeout=30)
        mail_flows(lab)
    finally:
        apply(lab, "")
