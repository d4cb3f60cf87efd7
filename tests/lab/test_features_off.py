"""Turning a feature off removes it: its files, its processes, its nft tables, its tunnel.
Turning it on again brings it back. Mail flows in every state: in from the remote MX, and (with
the feature off) out from alice on 587 to the remote MX. Real nginx, nftables, fail2ban,
rspamd, the agent's own daemons and wireguard-go in the lab.

Spam has no "off" (Postfix defers mail without its milter): its two modes are the toggle, and
each must leave nothing of the other behind."""

from __future__ import annotations

import base64
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from .mail_lab import (
    ALICE,
    ALICE_PW,
    APP_IP,
    REMOTE,
    REMOTE_USER,
    MailLab,
    settings_toml,
    well_formed,
)
from .netlab import wait_for
from .test_typo_guard import restart_policyd


@dataclass(frozen=True)
class Toggle:
    on: str  # settings text with the feature on
    off: str  # ... and off
    files: tuple[str, ...]  # what the feature writes while on
    # Its daemon, kernel state or live configuration; None: nothing runs for it without systemd
    # (a timer's units), so its files are all there is to check.
    running: Callable[[MailLab], bool] | None
    # Command lines of its processes in the appliance's namespace: none may be left when off.
    processes: tuple[str, ...] = ()
    off_files: tuple[str, ...] = ()  # what only the "off" state writes (light mode's switches)
    stops: bool = True  # turning it off stops a service (full -> light keeps rspamd running)
    setup: Callable[[MailLab], None] | None = None  # what the "on" settings need on the box


def pid_alive(lab: MailLab, pidfile: str) -> bool:
    if not lab.app.exists(pidfile):
        return False
    pid = lab.app.read(pidfile).split()[0]
    return lab.app.run(["kill", "-0", pid], check=False).returncode == 0


def nft_table(lab: MailLab) -> bool:
    return lab.app.run(["nft", "list", "table", "inet", "appliance"], check=False).returncode == 0


def app_processes(lab: MailLab) -> list[str]:
    """The command line of every process in the appliance's network namespace."""
    out = subprocess.run(["ip", "netns", "pids", lab.app.ns], capture_output=True, text=True,
                         check=False).stdout.split()
    cmds = []
    for pid in out:
        try:
            cmds.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:  # exited meanwhile
            continue
    return cmds


# --- the relay: a smarthost (Postfix's configuration) and a WireGuard tunnel (kernel state) -----
SMARTHOST = f"""
[relay]
kind = "smarthost"
host = "smarthost.{REMOTE}"
port = 587
username = "boxuser"
password_file = "/etc/appliance/relay.password"
"""
# A tunnel to a VPS that is not there: the box's side comes up all the same (wireguard-go, the
# address, the routing rules); no handshake is needed for it to exist, or to be taken down.
VPS_TUN, BOX_TUN = "198.19.77.1", "198.19.77.2"


def wireguard(public_key: str) -> str:
    return f"""
[relay]
kind = "wireguard"
endpoint = "203.0.113.61:51820"
vps_public_key = "{public_key}"
private_key_file = "/etc/appliance/wireguard.key"
box_address = "{BOX_TUN}/30"
vps_address = "{VPS_TUN}"
"""


def _wg_key() -> tuple[str, str]:
    """A WireGuard key pair (X25519, base64), made per run: no key is kept in the repository."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        PublicFormat,
    )

    k = X25519PrivateKey.generate()
    private = k.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    public = k.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(private).decode(), base64.b64encode(public).decode()


BOX_KEY, _ = _wg_key()
_, VPS_KEY = _wg_key()


def relayhost(lab: MailLab) -> bool:
    return lab.app.run(["postconf", "-h", "relayhost"], check=False).stdout.strip() != ""


def tunnel_up(lab: MailLab) -> bool:
    link = lab.app.run(["ip", "link", "show", "wg-relay"], check=False).returncode == 0
    rules = "lookup 51820" in lab.app.run(["ip", "rule", "show"], check=False).stdout
    routes = lab.app.run(["ip", "route", "show", "table", "51820"], check=False).stdout.strip()
    return link or rules or bool(routes)


def controller(lab: MailLab) -> bool:
    return lab.tcp_open(lab.app, "127.0.0.1", 11334)


TOGGLES = {
    "web": Toggle("\n[web]\nenabled = true\n", "", (
        "/etc/nginx/nginx.conf", "/var/lib/appliance/www/mta-sts/.well-known/mta-sts.txt"),
        lambda lab: pid_alive(lab, "/run/nginx.pid"), processes=("nginx: master",)),
    "firewall": Toggle("", "\n[firewall]\nenabled = false\n", ("/etc/nftables.d/appliance.nft",),
                       nft_table),
    "fail2ban": Toggle("", "\n[fail2ban]\nenabled = false\n", (
        "/etc/fail2ban/jail.d/appliance.local", "/etc/fail2ban/fail2ban.d/appliance.local",
        "/etc/fail2ban/filter.d/appliance-sshd.conf"),
        lambda lab: pid_alive(lab, "/run/fail2ban/fail2ban.pid"), processes=("fail2ban-server",)),
    "status timer": Toggle("", "\n[status]\ndaily_mail = false\n", (
        "/etc/systemd/system/appliance-status.service",
        "/etc/systemd/system/appliance-status.timer"), None),
    "backup timer": Toggle('\n[backup]\nenabled = true\nrepository = "/var/backups/appliance"\n', "", (
        "/etc/systemd/system/appliance-backup.service",
        "/etc/systemd/system/appliance-backup.timer",
        "/etc/systemd/system/appliance-backup-drill.service",
        "/etc/systemd/system/appliance-backup-drill.timer"), None),
    "relay smarthost": Toggle(SMARTHOST, "", ("/etc/postfix/sasl_passwd",), relayhost,
                              stops=False,
                              setup=lambda lab: lab.app.write("/etc/appliance/relay.password",
                                                              "relay-secret-77\n", mode=0o600)),
    "relay wireguard": Toggle(wireguard(VPS_KEY), "", (
        "/etc/appliance/wg-relay.conf", "/etc/systemd/system/appliance-relay.service"),
        tunnel_up, processes=("wireguard-go wg-relay",),
        setup=lambda lab: lab.app.write("/etc/appliance/wireguard.key", BOX_KEY + "\n", mode=0o600)),
    # "on" is full mode (the default), "off" light mode.
    "spam full/light": Toggle("", '\n[spam]\nmode = "light"\n', (
        "/etc/dovecot/sieve/learn-spam.sieve", "/etc/dovecot/sieve/learn-ham.sieve",
        "/etc/dovecot/sieve/rspamd-learn-spam", "/etc/dovecot/sieve/rspamd-learn-ham"),
        controller, processes=("controller process",), stops=False,
        off_files=("/etc/rspamd/local.d/neural.conf", "/etc/rspamd/local.d/phishing.conf",
                   "/etc/rspamd/local.d/reputation.conf")),
    "openpgp": Toggle("", "\n[openpgp]\nenabled = false\n", (
        "/etc/appliance/openpgp.conf", "/etc/systemd/system/appliance-pgp.service"),
        lambda lab: pid_alive(lab, "/run/appliance-pgp.pid"),
        processes=("appliance.features.openpgp.proxy",)),
    "typo guard": Toggle("", "\n[privacy]\ntypo_guard = false\n", (
        "/etc/appliance/typoguard.conf", "/etc/postfix/transport", "/etc/postfix/release_access",
        "/etc/systemd/system/appliance-release.service",
        "/etc/systemd/system/appliance-release.socket",
        "/etc/systemd/system/appliance-release-notice.socket"),
        lambda lab: pid_alive(lab, "/run/appliance-release.pid"),
        processes=("appliance.features.privacy.release_agent",)),
}


def apply(lab: MailLab, extra: str) -> str:
    lab.write_settings(settings_toml(lab.users, lab.settings_extra + extra))
    r = lab.appliance("apply")
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def mail_flows_in(lab: MailLab) -> None:
    """The remote MX delivers to alice (through the OpenPGP proxy, or straight to Dovecot)."""
    lab.deliver_to_alice(f"feature toggle {uuid.uuid4().hex[:12]}")


def mail_flows_out(lab: MailLab) -> None:
    """alice submits on 587 (the policy service, the typo guard's place) and the remote MX
    stores it (no relay left in the way)."""
    tag = uuid.uuid4().hex[:12]
    msg = well_formed(ALICE, REMOTE_USER, f"feature toggle out {tag}")
    r = lab.lan2.python(f"""
import smtplib, ssl
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP({APP_IP!r}, 587, timeout=30)
s.starttls(context=ctx); s.login({ALICE!r}, {ALICE_PW!r})
s.sendmail({ALICE!r}, [{REMOTE_USER!r}], {msg!r}); s.quit()""", timeout=60)
    assert r.returncode == 0, r.stderr
    wait_for(f"message {tag} at the remote MX", lambda: any(
        tag in p.read_text(errors="replace")
        for p in lab.maildir_files(lab.mx, f"/var/vmail/{REMOTE}/carol")), timeout=60)


def left(lab: MailLab, t: Toggle) -> list[str]:
    """What of the feature is still there: files and processes."""
    cmds = app_processes(lab)
    return ([f for f in t.files if lab.app.exists(f)]
            + [c for c in cmds if any(p in c for p in t.processes)])


@pytest.mark.parametrize("name", list(TOGGLES))
def test_a_feature_turned_off_leaves_nothing_and_comes_back(lab: MailLab, name: str) -> None:
    t = TOGGLES[name]
    if t.setup:
        t.setup(lab)
    try:
        apply(lab, t.on)
        assert all(lab.app.exists(f) for f in t.files), [f for f in t.files if not lab.app.exists(f)]
        if t.running:
            wait_for(f"{name} running", lambda: t.running(lab), timeout=60)  # type: ignore[misc]
        if t.processes:
            wait_for(f"{name}'s processes", lambda: all(
                any(p in c for c in app_processes(lab)) for p in t.processes), timeout=60)
        assert not [f for f in t.off_files if lab.app.exists(f)]

        out = apply(lab, t.off)
        if t.stops:
            assert "stopped" in out, out
        assert not left(lab, t), f"{name} left behind after it was turned off: {left(lab, t)}"
        assert not (t.running and t.running(lab)), f"{name} still running after it was turned off"
        assert all(lab.app.exists(f) for f in t.off_files)
        mail_flows_in(lab)
        mail_flows_out(lab)
        assert apply(lab, t.off).startswith("changed 0 file(s)")  # converged: nothing more to do

        apply(lab, t.on)
        assert all(lab.app.exists(f) for f in t.files)
        assert not [f for f in t.off_files if lab.app.exists(f)]
        if t.running:
            wait_for(f"{name} running again", lambda: t.running(lab), timeout=60)  # type: ignore[misc]
        mail_flows_in(lab)
    finally:
        apply(lab, "")
        restart_policyd(lab)  # alice's submissions must not count against later tests' limits


def test_openpgp_stays_on_while_a_user_has_a_key(lab: MailLab) -> None:
    """Off would store alice's mail in plaintext although she gave the box her key: refused
    like any settings error (exit 2, the fix named, nothing changed). Once no user has a key,
    off is allowed."""
    from ..unit.openpgp_keys import Device

    d = Device(lab.workdir / "features-off-device")
    d.make(f"Alice <{ALICE}>")
    lab.app.write("/var/tmp/alice-off.asc", d.export(ALICE))
    r = lab.appliance("key", "import", ALICE, "/var/tmp/alice-off.asc")
    assert r.returncode == 0, r.stderr
    try:
        main_cf = lab.app.read("/etc/postfix/main.cf")
        lab.write_settings(settings_toml(lab.users, lab.settings_extra
                                         + TOGGLES["openpgp"].off))
        r = lab.appliance("apply")
        assert r.returncode == 2, r.stdout + r.stderr
        assert (f"openpgp.enabled: false would store mail in plaintext for {ALICE} (who has a "
                f"key); keep [openpgp] enabled = true, or remove that key first with "
                f"`appliance key remove {ALICE}`") in r.stderr
        assert lab.app.read("/etc/postfix/main.cf") == main_cf
        assert not [f for f in TOGGLES["openpgp"].files if not lab.app.exists(f)]
        assert pid_alive(lab, "/run/appliance-pgp.pid")
    finally:
        assert lab.appliance("key", "remove", ALICE).returncode == 0
        d.close()
    out = apply(lab, TOGGLES["openpgp"].off)
    assert "stopped appliance-pgp" in out, out
    apply(lab, "")
    wait_for("the OpenPGP proxy running again", lambda: pid_alive(lab, "/run/appliance-pgp.pid"),
             timeout=30)
