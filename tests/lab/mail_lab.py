"""The mail-appliance lab: a home LAN behind a NAT router, and a small "internet".

    app  198.18.0.10 -+                                            +- mx  203.0.113.25 (remote Postfix)
                      +- br-lan 198.18.0.1 [rtr] wan0 203.0.113.2 -+- dns 203.0.113.53 (knot)
    lan2 198.18.0.20 -+   NAT; 25/465/587/993 forwarded to app     +- (routed) att 198.51.100.66
                                                          (br-wan in [inet], the "ISP core")

The "internet" namespace has no default route: nothing leaves the lab. The appliance host runs
the real agent (`appliance apply`), which writes the real /etc/postfix and /etc/dovecot of its
view and starts the daemons (no init system: the agent's "direct" service manager).
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from .netlab import Host, Lab, wait_for

DOMAIN = "example.test"
MAIL_HOST = "mail.example.test"
REMOTE = "remote.test"
WAN_IP = "203.0.113.2"
APP_IP = "198.18.0.10"
LAN2_IP = "198.18.0.20"
MX_IP = "203.0.113.25"
DNS_IP = "203.0.113.53"
ACME_IP = "203.0.113.40"
ATT_IP = "198.51.100.66"
FORWARDED = (25, 465, 587, 993, 4190)
DNSBL_ZONE = "dnsbl.test"  # the lab's own DNS blocklist (`appliance status`)

ALICE, ALICE_PW = f"alice@{DOMAIN}", "alice-secret-1"
BOB_LOCAL, BOB_PW = f"bob@{DOMAIN}", "bob-secret-22"
REMOTE_USER = f"carol@{REMOTE}"
# A domain and its one-letter slip, both served by the remote MX (typo guard).
TYPO_DOMAINS = ("army.mil", "army.ml")
# A host under each (its own MX record in the domain's zone): the guard compares registrable
# domains, so mail to mail.army.ml is a near miss of army.mil too.
TYPO_HOSTS = tuple(f"mail.{d}" for d in TYPO_DOMAINS)


PLAIN_BODY = ("Hello, the minutes of Tuesday's meeting are below. We agreed on the budget for "
              "the garden project, the schedule for the spring cleaning, and who brings what to "
              "the neighbourhood party next month. Please tell me if anything is missing before "
              "Friday. Best regards\r\n")


def well_formed(sender: str, rcpt: str, subject: str, msgid: str | None = None, extra: str = "",
                body: str = PLAIN_BODY) -> str:
    """A message as a real client writes one (From, To, Date, Message-ID, MIME headers). Mail
    passes rspamd: a bare "Subject only" test message scores as the spam it looks
    like and is filed into Junk."""
    import email.utils
    import uuid

    msgid = msgid or f"{uuid.uuid4().hex}@{sender.rpartition('@')[2]}"
    return (f"From: {sender}\r\nTo: {rcpt}\r\nSubject: {subject}\r\n"
            f"Date: {email.utils.formatdate()}\r\nMessage-ID: <{msgid}>\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n{extra}\r\n{body}")


def hash_pw(pw: str) -> str:
    return subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=pw + "\n", text=True,
                          capture_output=True, check=True).stdout.strip()


def settings_toml(users: list[tuple[str, str, list[str]]], extra: str = "") -> str:
    out = [
        "# Lab settings (tests/lab/mail_lab.py)",
        f'domain = "{DOMAIN}"',
        f'hostname = "{MAIL_HOST}"',
        "message_size_limit_mb = 10",
        extra,
    ]
    for address, h, aliases in users:
        out += ["", "[[users]]", f'address = "{address}"', f'password_hash = "{h}"']
        if aliases:
            out.append("aliases = [" + ", ".join(f'"{a}"' for a in aliases) + "]")
    return "\n".join(out) + "\n"


STUN_IPS = ("203.0.113.34", "203.0.113.35")
IGD_URL = "http://198.18.0.1:5000/rootDesc.xml"

# A UPnP router (miniupnpd, nftables backend): no static forwards; miniupnpd fills its own
# chains. Table and chain names are the ones named in miniupnpd.conf below.
ROUTER_UPNP_NFT = """
table inet filter {
  chain forward {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname "br-lan" oifname "br-lan" accept
    iifname "br-lan" oifname "wan0" accept
    jump miniupnpd
  }
  chain miniupnpd { }
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    jump prerouting_miniupnpd
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    jump postrouting_miniupnpd
    oifname "wan0" masquerade
  }
  chain prerouting_miniupnpd { }
  chain postrouting_miniupnpd { }
}
"""


def miniupnpd_conf(low_ports: bool) -> str:
    first = 1 if low_ports else 1024
    return f"""ext_ifname=wan0
listening_ip=br-lan
port=5000
enable_natpmp=yes
enable_upnp=yes
secure_mode=yes
system_uptime=yes
uuid=3d3cec3a-8cf0-11e0-98ee-001a6bd2d07b
friendly_name=LabRouter
upnp_table_name=filter
upnp_nat_table_name=filter
upnp_forward_chain=miniupnpd
upnp_nat_chain=prerouting_miniupnpd
upnp_nat_postrouting_chain=postrouting_miniupnpd
force_igd_desc_v1=yes
# TEST-NET WAN address: miniupnpd forwards only after a STUN check (tests/lab/stun.py)
ext_perform_stun=yes
ext_stun_host={STUN_IPS[0]}
ext_stun_port=3478
allow {first}-65535 198.18.0.0/24 {first}-65535
deny 0-65535 0.0.0.0/0 0-65535
"""


ROUTER_NFT = f"""
table inet lab {{
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    iifname "wan0" tcp dport {{ {", ".join(map(str, FORWARDED))} }} dnat ip to {APP_IP}
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname "wan0" masquerade
  }}
  chain forward {{
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    # br_netfilter is active in new namespaces: bridged LAN<->LAN frames pass this hook too.
    iifname "br-lan" oifname "br-lan" accept
    iifname "br-lan" oifname "wan0" accept
    ct status dnat accept
  }}
}}
"""


def knot_conf(root: str, tsig_secret: str, update_secret: str = "") -> str:
    return textwrap.dedent(f"""\
        server:
            rundir: "{root}/run"
            listen: {DNS_IP}@53
        log:
          - target: stderr
            any: info
        database:
            storage: "{root}/db"
        key:
          - id: acme-update
            algorithm: hmac-sha256
            secret: {tsig_secret}
          - id: appliance-update  # `appliance dns --push` (any record type)
            algorithm: hmac-sha256
            secret: {update_secret or tsig_secret}
        acl:
          - id: acme_update
            key: acme-update
            action: update
            update-type: [TXT]
          - id: appliance_update
            key: appliance-update
            action: update
        template:
          - id: default
            storage: "{root}/zones"
            file: "%s.zone"
            zonefile-sync: -1
        zone:
          - domain: {DOMAIN}
            acl: [acme_update, appliance_update]
          - domain: {REMOTE}
            dnssec-signing: on  # DNSSEC for DANE tests (tests/lab/test_dane.py)
          - domain: 113.0.203.in-addr.arpa
          - domain: army.mil
          - domain: army.ml
          - domain: {DNSBL_ZONE}  # a lab blocklist (tests/lab/test_status.py)
        """)


ZONES = {
    **{d: f"""$ORIGIN {d}.
$TTL 60
@   SOA ns1.{DOMAIN}. hostmaster.{DOMAIN}. 1 60 60 600 60
@   NS  ns1.{DOMAIN}.
@   MX  10 mx.{REMOTE}.
mail MX 10 mx.{REMOTE}.
""" for d in TYPO_DOMAINS},
    DOMAIN: f"""$ORIGIN {DOMAIN}.
$TTL 60
@     SOA ns1 hostmaster 1 60 60 600 60
@     NS  ns1
ns1   A   {DNS_IP}
@     MX  10 mail
mail  A   {WAN_IP}
acme  A   {ACME_IP}
""",
    REMOTE: f"""$ORIGIN {REMOTE}.
$TTL 60
@   SOA ns1.{DOMAIN}. hostmaster.{DOMAIN}. 1 60 60 600 60
@   NS  ns1.{DOMAIN}.
@   MX  10 mx
mx  A   {MX_IP}
smarthost A 203.0.113.70
""",
    "113.0.203.in-addr.arpa": f"""$ORIGIN 113.0.203.in-addr.arpa.
$TTL 60
@   SOA ns1.{DOMAIN}. hostmaster.{DOMAIN}. 1 60 60 600 60
@   NS  ns1.{DOMAIN}.
2   PTR {MAIL_HOST}.
25  PTR mx.{REMOTE}.
""",
    # A DNS blocklist of the lab's own (not a real list's name), empty until a test lists an address.
    DNSBL_ZONE: f"""$ORIGIN {DNSBL_ZONE}.
$TTL 60
@   SOA ns1.{DOMAIN}. hostmaster.{DOMAIN}. 1 60 60 600 60
@   NS  ns1.{DOMAIN}.
""",
}

REMOTE_MAIN_CF = f"""compatibility_level = 3.6
myhostname = mx.{REMOTE}
mydomain = {REMOTE}
myorigin = $mydomain
mydestination =
inet_interfaces = all
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
maillog_file = /var/log/mail.log
virtual_mailbox_domains = {REMOTE}, {", ".join(TYPO_DOMAINS + TYPO_HOSTS)}
virtual_mailbox_maps = texthash:/etc/postfix/vmailbox
virtual_mailbox_base = /var/vmail
virtual_minimum_uid = 8
virtual_uid_maps = static:8
virtual_gid_maps = static:8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtp_tls_security_level = may
smtp_tls_loglevel = 1
smtpd_tls_security_level = none
biff = no
"""


class MailLab:
    """The whole lab, up. Attributes are the hosts; methods are what tests need often."""

    def __init__(self, workdir: Path, repo: Path, router: str = "static",
                 upnp_low_ports: bool = True, settings_extra: str = "",
                 configured: bool = True) -> None:
        """router: "static" (25/465/587/993 forwarded by hand), "upnp" (miniupnpd, nothing
        forwarded until the appliance asks), or "none" (a router without UPnP or forwards)."""
        self.workdir = workdir
        self.repo = repo
        self.router = router
        self.upnp_low_ports = upnp_low_ports
        self.settings_extra = settings_extra
        self.configured = configured
        self.lab = Lab(workdir)
        self.users = [
            (ALICE, hash_pw(ALICE_PW), [f"info@{DOMAIN}"]),
            (BOB_LOCAL, hash_pw(BOB_PW), []),
        ]

    # --- building -----------------------------------------------------------------------------
    def up(self) -> MailLab:
        lab = self.lab
        self.workdir.mkdir(parents=True, exist_ok=True)
        lab.logs.mkdir(parents=True, exist_ok=True)
        self.inet = lab.host("inet")
        self.rtr = lab.host("rtr")
        self.app = lab.host("app", dns=DNS_IP)
        self.lan2 = lab.host("lan2", dns=DNS_IP)
        self.mx = lab.host("mx", dns=DNS_IP)
        self.dns = lab.host("dns")
        self.att = lab.host("att", dns=DNS_IP)

        lab.bridge("inet", "br-wan", "203.0.113.254/24")
        lab.ns_exec("inet", "sysctl", "-qw", "net.ipv4.ip_forward=1")
        for name, ifname, addr in (("rtr", "wan0", WAN_IP), ("mx", "eth0", MX_IP),
                                   ("dns", "eth0", DNS_IP)):
            lab.link(name, ifname, "inet", f"i-{name}", a_addr=f"{addr}/24", b_master="br-wan")
            lab.ns_exec(name, "ip", "route", "add", "default", "via", "203.0.113.254")
        lab.link("att", "eth0", "inet", "i-att", a_addr=f"{ATT_IP}/24", b_addr="198.51.100.1/24")
        lab.ns_exec("att", "ip", "route", "add", "default", "via", "198.51.100.1")

        lab.bridge("rtr", "br-lan", "198.18.0.1/24")
        for name, addr in (("app", APP_IP), ("lan2", LAN2_IP)):
            lab.link(name, "eth0", "rtr", f"r-{name}", a_addr=f"{addr}/24", b_master="br-lan")
            lab.ns_exec(name, "ip", "route", "add", "default", "via", "198.18.0.1")
        lab.ns_exec("rtr", "sysctl", "-qw", "net.ipv4.ip_forward=1")
        if self.router == "static":
            self.rtr.run(["nft", "-f", "-"], input=ROUTER_NFT)
        elif self.router == "upnp":
            self.rtr.run(["nft", "-f", "-"], input=ROUTER_UPNP_NFT)
            self._start_upnp()
        else:  # NAT only: a router with UPnP off and no forwards
            self.rtr.run(["nft", "-f", "-"], input=ROUTER_UPNP_NFT)
        # Split-horizon name for LAN clients, as a home router's DNS would give (no hairpin NAT).
        self.lan2.write("/etc/hosts", f"127.0.0.1 localhost\n{APP_IP} {MAIL_HOST}\n")

        for h in (self.app, self.mx):
            # What Debian's postfix and dovecot packages create under /var on a real box.
            h.run(["mkdir", "-p", "/var/spool/postfix", "/var/lib/postfix", "/var/lib/dovecot",
                    "/var/lib/nginx", "/var/log/nginx"])
            h.run(["chown", "postfix:postfix", "/var/lib/postfix"])
        self._start_dns()
        self._start_remote_mx()
        if self.configured:
            self.write_settings(settings_toml(self.users, self.settings_extra))
            self.first_apply()
        return self

    def first_apply(self) -> None:
        r = self.appliance("apply")
        assert r.returncode == 0, f"first apply failed:\n{r.stdout}\n{r.stderr}"
        self.track_daemons()

    def track_daemons(self) -> None:
        """The daemons the agent started: the lab stops them at the end."""
        self.app.track_pidfile("postfix", "/var/spool/postfix/pid/master.pid")
        self.app.track_pidfile("dovecot", "/run/dovecot/master.pid")
        self.app.track_pidfile("appliance-pgp", "/run/appliance-pgp.pid")
        self.app.track_pidfile("fail2ban", "/run/fail2ban/fail2ban.pid")
        self.app.track_pidfile("sshd", "/run/sshd.pid")
        self.app.track_pidfile("rspamd", "/run/rspamd/rspamd.pid")
        self.app.track_pidfile("appliance-release", "/run/appliance-release.pid")
        wait_for("appliance port 25", lambda: self.tcp_open(self.app, APP_IP, 25))
        wait_for("appliance port 993", lambda: self.tcp_open(self.app, APP_IP, 993))

    def hairpin(self, on: bool) -> None:
        """Hairpin NAT on the router, as many home routers do it: a LAN client that
        connects to the public address is DNATed to the appliance *and* SNATed to the public
        address, so the appliance sees every such client as 203.0.113.2. Off by default."""
        self.rtr.run(["nft", "delete", "table", "ip", "hairpin"], check=False)
        if on:
            ports = ", ".join(map(str, FORWARDED))
            self.rtr.run(["nft", "-f", "-"], input=f"""
table ip hairpin {{
  chain prerouting {{
    type nat hook prerouting priority dstnat - 1; policy accept;
    iifname "br-lan" ip daddr {WAN_IP} tcp dport {{ {ports} }} dnat to {APP_IP}
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat - 1; policy accept;
    ip saddr 198.18.0.0/24 oifname "br-lan" ct status dnat snat to {WAN_IP}
  }}
}}
""")

    def _start_upnp(self) -> None:
        self.stun = self.lab.host("stun")
        self.lab.link("stun", "eth0", "inet", "i-stun", a_addr=f"{STUN_IPS[0]}/24", b_master="br-wan")
        self.lab.ns_exec("stun", "ip", "addr", "add", f"{STUN_IPS[1]}/24", "dev", "eth0")
        self.lab.ns_exec("stun", "ip", "route", "add", "default", "via", "203.0.113.254")
        self.stun.spawn("stun", ["/usr/bin/python3", str(Path(__file__).with_name("stun.py")),
                                 "--ip", STUN_IPS[0], "--alt-ip", STUN_IPS[1]])
        self.start_miniupnpd()

    def start_miniupnpd(self) -> None:
        self.rtr.write("/etc/miniupnpd/miniupnpd.conf", miniupnpd_conf(self.upnp_low_ports))
        log = self.lab.logs / f"rtr-miniupnpd-{len(self.rtr.pids)}.out"
        self.rtr.spawn(f"miniupnpd-{len(self.rtr.pids)}", ["/usr/sbin/miniupnpd", "-f",
                       "/etc/miniupnpd/miniupnpd.conf", "-d", "-P", "/run/miniupnpd.pid"])
        wait_for("miniupnpd forwarding (after its STUN check)",
                 lambda: "Port forwarding is now enabled" in log.read_text(), timeout=20)
        wait_for("miniupnpd HTTP", lambda: "HTTP listening" in log.read_text(), timeout=10)

    def stop_miniupnpd(self) -> None:
        """Like a router reboot: the daemon goes, and with it every mapping."""
        import os
        import signal

        for name, pid in list(self.rtr.pids.items()):
            if name.startswith("miniupnpd"):
                os.killpg(pid, signal.SIGTERM)
                del self.rtr.pids[name]
        wait_for("miniupnpd gone", lambda: not self.tcp_open(self.lan2, "198.18.0.1", 5000), timeout=10)
        for chain in ("miniupnpd", "prerouting_miniupnpd", "postrouting_miniupnpd"):
            self.rtr.run(["nft", "flush", "chain", "inet", "filter", chain], check=False)

    def _start_dns(self) -> None:
        root = "/var/lib/knot-lab"
        self.dns.run(["mkdir", "-p", f"{root}/zones", f"{root}/db", f"{root}/run"])
        # TSIG key for RFC 2136 updates of the user's zone (certificates' dns-01 challenge).
        self.tsig_secret = base64.b64encode(os.urandom(32)).decode()
        self.update_secret = base64.b64encode(os.urandom(32)).decode()  # `appliance dns --push`
        self.dns.write(f"{root}/knot.conf", knot_conf(root, self.tsig_secret, self.update_secret))
        for zone, text in ZONES.items():
            self.dns.write(f"{root}/zones/{zone}.zone", text)
        self.dns.spawn("knotd", ["knotd", "-c", f"{root}/knot.conf"])
        wait_for("knot answering", lambda: "NOERROR" in self.app.run(
            ["kdig", "+time=1", "+retry=0", f"@{DNS_IP}", "SOA", DOMAIN], check=False).stdout)

    def _start_remote_mx(self) -> None:
        mx = self.mx
        mx.write("/etc/postfix/main.cf", REMOTE_MAIN_CF)
        mx.write("/etc/postfix/vmailbox", f"{REMOTE_USER} {REMOTE}/carol/\n"
                 + "".join(f"ops@{d} {d}/ops/\n" for d in TYPO_DOMAINS + TYPO_HOSTS))
        mx.run(["postconf", "-F", "*/*/chroot = n"])
        mx.run(["mkdir", "-p", "/var/vmail"])
        mx.run(["chown", "mail:mail", "/var/vmail"])
        r = mx.run(["postfix", "start"], check=False)
        assert r.returncode == 0, f"remote postfix did not start: {mx.read('/var/log/mail.log')}"
        mx.track_pidfile("postfix", "/var/spool/postfix/pid/master.pid")
        wait_for("remote MX port 25", lambda: self.tcp_open(mx, MX_IP, 25))

    def down(self) -> None:
        for h in (getattr(self, "app", None), getattr(self, "mx", None)):
            if h is not None and h.holder is not None:
                h.run(["postfix", "stop"], check=False, timeout=30)
        self.lab.down()

    # --- helpers for tests -----------------------------------------------------------------------
    def appliance(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run the real agent on the appliance host, as root, inside its view."""
        return self.app.run([sys.executable, "-m", "appliance.cli", *args], check=False,
                            timeout=120, input=input,
                            env={"PYTHONPATH": str(self.repo)})

    def write_settings(self, text: str) -> None:
        self.app.write("/etc/appliance/settings.toml", text, mode=0o600)

    def tcp_open(self, host: Host, ip: str, port: int) -> bool:
        code = (f"import socket; s=socket.create_connection(('{ip}', {port}), timeout=2); "
                "s.close()")
        return host.python(code, timeout=10).returncode == 0

    def maildir_files(self, host: Host, maildir: str) -> list[Path]:
        base = host.path(maildir)
        return sorted(p for sub in ("new", "cur") for p in (base / sub).glob("*") if p.is_file())

    def appliance_cert(self) -> str:
        return self.app.read("/var/lib/appliance/tls/fullchain.pem")

    def deliver_to_alice(self, subject: str) -> None:
        """The remote MX sends alice one message; waits (bounded) until it is in her Maildir."""
        maildir = f"/var/vmail/{DOMAIN}/alice/Maildir"
        before = len(self.maildir_files(self.app, maildir))
        msg = well_formed(REMOTE_USER, ALICE, subject)
        r = self.mx.python(f"""
import smtplib
s = smtplib.SMTP('127.0.0.1', 25, timeout=15)
s.sendmail({REMOTE_USER!r}, [{ALICE!r}], {msg!r})
s.quit()""")
        assert r.returncode == 0, r.stderr
        wait_for(f"{subject!r} in alice's mailbox",
                 lambda: len(self.maildir_files(self.app, maildir)) > before, timeout=60)
