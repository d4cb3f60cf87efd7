"""A relay VPS the user owns, provisioned by the Ansible role, in front of the appliance.

The "vps" host sits on the internet side of the lab; the playbook runs on it with Ansible's local
connection (as it would over SSH). The kernel here has no WireGuard module, so both ends use
wireguard-go (userspace): the same protocol, the same `wg` configuration. The MX record is moved
to the VPS in the lab's DNS server for the inbound tests, and put back afterwards.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from .conftest import REPO
from .mail_lab import ALICE, ALICE_PW, APP_IP, ATT_IP, DOMAIN, MAIL_HOST, MX_IP, REMOTE, REMOTE_USER, MailLab
from .netlab import Host, wait_for
from .test_mail import CA, imap_fetch_code, smtp_code, trust_appliance_cert

VPS_IP = "203.0.113.61"
BOX_TUN, VPS_TUN = "198.19.77.2", "198.19.77.1"  # tunnel addresses (lab LAN-side range)
KNOT = ["knotc", "-c", "/var/lib/knot-lab/knot.conf"]


def wg_keypair() -> tuple[str, str]:
    private = subprocess.run(["wg", "genkey"], capture_output=True, text=True, check=True).stdout.strip()
    public = subprocess.run(["wg", "pubkey"], input=private, capture_output=True, text=True,
                            check=True).stdout.strip()
    return private, public


def set_mail_a(lab: MailLab, ip: str) -> None:
    for cmd in (["zone-begin", DOMAIN], ["zone-unset", DOMAIN, "mail", "A"],
                ["zone-set", DOMAIN, "mail", "60", "A", ip], ["zone-commit", DOMAIN]):
        lab.dns.run([*KNOT, *cmd])


@pytest.fixture(scope="module")
def vps(lab: MailLab) -> Iterator[Host]:
    host = lab.lab.host("vps", dns="203.0.113.53",
                        share_ro=("/var/lib/dpkg", "/var/lib/apt", "/var/cache/apt"))
    lab.lab.link("vps", "eth0", "inet", "i-vps", a_addr=f"{VPS_IP}/24", b_master="br-wan")
    lab.lab.ns_exec("vps", "ip", "route", "add", "default", "via", "203.0.113.254")
    box_private, box_public = wg_keypair()
    tmp = lab.workdir / "ansible"
    tmp.mkdir(exist_ok=True)
    env = {"ANSIBLE_CONFIG": str(REPO / "provisioning/ansible.cfg"), "HOME": str(tmp),
           "ANSIBLE_LOCAL_TEMP": str(tmp / "local"), "ANSIBLE_REMOTE_TEMP": str(tmp / "remote")}
    r = host.run(["ansible-playbook", "-i", "localhost,", "-c", "local",
                  str(REPO / "provisioning/relay.yml"),
                  "-e", f"relay_vps_box_public_key={box_public}",
                  "-e", f"relay_vps_address={VPS_TUN}", "-e", f"relay_vps_box_address={BOX_TUN}",
                  "-e", "relay_vps_userspace=true", "-e", "relay_vps_service_manager=direct",
                  "-e", "relay_vps_backup=true",
                  # Under /var: the lab host's own view (its /srv would be this machine's).
                  "-e", "relay_vps_backup_dir=/var/lib/relay-backup/repo",
                  "-e", "ansible_python_interpreter=/usr/bin/python3"],
                 check=False, timeout=300, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    vps_public = host.run(["sh", "-c", "wg pubkey < /etc/wireguard/relay.key"]).stdout.strip()
    assert vps_public in r.stdout and "kind = " in r.stdout  # the play tells the user what to set
    assert "rest:http://box:" in r.stdout and "append_only = true" in r.stdout  # and [backup]
    # The VPS's wireguard-go runs in its namespace: the lab's teardown ends it by namespace.
    lab.app.write("/etc/appliance/wireguard.key", box_private + "\n", mode=0o600)
    good = lab.app.read("/etc/appliance/settings.toml")
    lab.write_settings(good + f"""
[relay]
kind = "wireguard"
endpoint = "{VPS_IP}:51820"
vps_public_key = "{vps_public}"
private_key_file = "/etc/appliance/wireguard.key"
box_address = "{BOX_TUN}/30"
vps_address = "{VPS_TUN}"
""")
    r = lab.appliance("apply")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "reaches the internet through your relay" in r.stdout
    wait_for("WireGuard handshake", lambda: lab.appliance("relay", "status").returncode == 0, timeout=30)
    set_mail_a(lab, VPS_IP)
    try:
        yield host
    finally:
        set_mail_a(lab, "203.0.113.2")
        lab.write_settings(good)
        r = lab.appliance("apply")
        assert r.returncode == 0, r.stdout + r.stderr
        assert lab.app.run(["ip", "link", "show", "wg-relay"], check=False).returncode != 0


def test_remote_mx_delivers_through_the_relay_and_the_box_sees_the_real_client(
        lab: MailLab, vps: Host) -> None:
    tag = uuid.uuid4().hex[:12]
    pcap = "/var/tmp/relay-public.pcap"
    vps.spawn("tcpdump", ["tcpdump", "-i", "eth0", "--immediate-mode", "-U", "-s", "0", "-w", pcap,
                          "tcp", "port", "25"])
    log = lab.lab.logs / "vps-tcpdump.out"
    wait_for("tcpdump listening", lambda: "listening on eth0" in log.read_text(), timeout=10)
    r = lab.mx.python(smtp_code("127.0.0.1", 25, f"""
s.sendmail({REMOTE_USER!r}, [{ALICE!r}],
    'Subject: relayed {tag}\\r\\n\\r\\nsecret body {tag} secret body\\r\\n')
s.quit()"""))
    assert r.returncode == 0, r.stderr
    trust_appliance_cert(lab, lab.lan2)
    r = lab.lan2.python(imap_fetch_code(ALICE, ALICE_PW, f"relayed {tag}"), timeout=60)
    assert r.returncode == 0, lab.mx.read("/var/log/mail.log")[-1500:]
    # The remote MX connected to the VPS; the box saw the MX's own address, not the VPS's.
    assert f"relay={MAIL_HOST}[{VPS_IP}]:25" in lab.mx.read("/var/log/mail.log")
    assert f"connect from mx.{REMOTE}[{MX_IP}]" in lab.app.read("/var/log/mail.log")
    os.killpg(vps.pids.pop("tcpdump"), 15)
    wait_for("tcpdump finished", lambda: "packets captured" in log.read_text(), timeout=10)
    capture = vps.path(pcap).read_bytes()
    assert b"STARTTLS" in capture  # the capture saw the SMTP session on the public side...
    assert tag.encode() not in capture and b"secret body" not in capture  # ...but no content


def test_an_attacker_through_the_relay_is_seen_with_its_real_address(lab: MailLab, vps: Host) -> None:
    r = lab.att.python(smtp_code(VPS_IP, 25, f"""
s.mail('x@{REMOTE}')
print('rcpt', s.rcpt('victim@{REMOTE}')[0])
s.quit()"""))
    assert "rcpt 554" in r.stdout, r.stdout + r.stderr
    # What fail2ban reads: the attacker's own address in the box's log.
    assert f"[{ATT_IP}]" in lab.app.read("/var/log/mail.log")


def test_the_relay_never_forwards_the_console_or_ssh(lab: MailLab, vps: Host) -> None:
    """The LAN console (8443) and SSH answer the home network only: neither an attacker at the
    VPS's public address nor the VPS itself through the tunnel reaches them, while a LAN
    client does. A stand-in listener holds 8443 (the console is not installed in this lab)."""
    lab.app.spawn("listener-8443", ["/usr/bin/python3", "-c",
                  "import socket, time; s = socket.socket(socket.AF_INET6); "
                  "s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0); "
                  "s.bind(('::', 8443)); s.listen(8); time.sleep(600)"])
    wait_for("stand-in console listening", lambda: lab.tcp_open(lab.lan2, APP_IP, 8443), timeout=10)
    for port in (8443, 22):
        assert not lab.tcp_open(lab.att, VPS_IP, port), f"{port} open through the relay"
        assert not lab.tcp_open(vps, BOX_TUN, port), f"{port} open from the tunnel"


def test_the_box_sends_out_through_the_relay(lab: MailLab, vps: Host) -> None:
    tag = uuid.uuid4().hex[:12]
    trust_appliance_cert(lab, lab.lan2)
    r = lab.lan2.python(smtp_code(MAIL_HOST, 587, f"""
s.starttls(context=ssl.create_default_context(cafile={CA!r})); s.ehlo('client.invalid')
s.login({ALICE!r}, {ALICE_PW!r})
s.sendmail({ALICE!r}, [{REMOTE_USER!r}], 'Subject: out-relay {tag}\\r\\n\\r\\nout {tag}\\r\\n')
s.quit()"""))
    assert r.returncode == 0, r.stderr

    def arrived() -> bool:
        return any(tag in p.read_text(errors="replace")
                   for p in lab.maildir_files(lab.mx, f"/var/vmail/{REMOTE}/carol"))

    wait_for("outbound message at the remote MX", arrived, timeout=30)
    assert f"connect from unknown[{VPS_IP}]" in lab.mx.read("/var/log/mail.log")


def test_fail2ban_on_the_box_bans_the_attackers_real_address_through_the_relay(
        lab: MailLab, vps: Host) -> None:
    from .test_lan_defence import attack_code, banned, settle_unban

    try:
        r = lab.att.python(attack_code(VPS_IP), timeout=120)
        assert "smtp" in r.stdout, r.stdout + r.stderr
        wait_for("the attacker banned by its own address", lambda: ATT_IP in banned(lab), timeout=60)
        assert VPS_IP not in banned(lab)  # the relay itself is never the one banned
        r = lab.appliance("bans")
        assert ATT_IP in r.stdout, r.stdout
    finally:
        settle_unban(lab, ATT_IP)


def test_backups_to_the_vps_are_append_only_the_box_cannot_delete_its_history(
        lab: MailLab, vps: Host) -> None:
    """The role's backup target (rclone serve restic --append-only, on the tunnel address): the
    box backs up through the tunnel; with its own credentials it cannot remove a snapshot (what
    an intruder on the box would try); nobody on the internet reaches it."""
    import json

    good = lab.app.read("/etc/appliance/settings.toml")
    repository = f"rest:http://box:{vps.read('/etc/relay-backup/password').strip()}@{VPS_TUN}:8000/"
    try:
        lab.write_settings(good + f'\n[backup]\nenabled = true\nrepository = "{repository}"\n'
                           "append_only = true\n")
        assert lab.appliance("apply").returncode == 0
        first = json.loads(lab.appliance("backup", "now", "--json").stdout)
        assert first["ok"], first.get("error")
        second = json.loads(lab.appliance("backup", "now", "--json").stdout)  # locks come and go
        assert second["ok"], second.get("error")
        env = {"RESTIC_PASSWORD_FILE": "/etc/appliance/backup.password", "RESTIC_REPOSITORY": repository}
        r = lab.app.run(["restic", "forget", first["snapshot"]], check=False, env=env, timeout=60)
        assert r.returncode != 0, r.stdout + r.stderr
        listed = lab.app.run(["restic", "snapshots", "--json"], env=env, timeout=60).stdout
        assert {x["short_id"] for x in json.loads(listed)} >= {first["snapshot"], second["snapshot"]}
        # Told to prune anyway, the box says what to set, and the snapshot was still made.
        lab.write_settings(good + f'\n[backup]\nenabled = true\nrepository = "{repository}"\n')
        third = json.loads(lab.appliance("backup", "now", "--json").stdout)
        assert not third["ok"] and "append_only = true" in third["error"], third
        # Only the tunnel reaches it: the VPS's public address has nothing on that port.
        assert not lab.tcp_open(lab.att, VPS_IP, 8000)
    finally:
        lab.write_settings(good)
        assert lab.appliance("apply").returncode == 0
