"""Mail core end to end, against the real Postfix, Dovecot and knot in the lab.

Each test states what a user (or an attacker) would see. The internet is mocked by the lab's
own namespaces: the remote MX, the DNS server and the attacker are real daemons and sockets.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from pathlib import Path

import pytest

from .mail_lab import (
    ALICE,
    ALICE_PW,
    APP_IP,
    BOB_LOCAL,
    BOB_PW,
    DOMAIN,
    LAN2_IP,
    MAIL_HOST,
    REMOTE,
    REMOTE_USER,
    WAN_IP,
    MailLab,
    settings_toml,
    well_formed,
)
from .netlab import Host, wait_for

TEMPLATES = Path(__file__).resolve().parents[2] / "appliance/templates"
CA = "/etc/appliance-lab-ca.pem"  # the appliance's self-signed cert, trusted by the lab client


def trust_appliance_cert(lab: MailLab, host: Host) -> None:
    host.write(CA, lab.appliance_cert())


def imap_fetch_code(user: str, pw: str, subject_tag: str, port: int = 993) -> str:
    """Python run on a LAN client: wait (bounded) for a message with the tag, print it."""
    return f"""
import imaplib, ssl, sys, time
ctx = ssl.create_default_context(cafile={CA!r})
for attempt in range(60):
    M = imaplib.IMAP4_SSL({MAIL_HOST!r}, {port}, ssl_context=ctx, timeout=10)
    M.login({user!r}, {pw!r})
    M.select('INBOX')
    typ, data = M.search(None, 'SUBJECT', {'"' + subject_tag + '"'!r})
    if data[0]:
        typ, msg = M.fetch(data[0].split()[-1], '(RFC822)')
        sys.stdout.write(msg[0][1].decode())
        M.logout()
        sys.exit(0)
    M.logout()
    time.sleep(0.5)
sys.exit(3)
"""


def smtp_code(host: str, port: int, body: str) -> str:
    return f"""
import smtplib, ssl, sys
s = smtplib.SMTP({host!r}, {port}, timeout=15)
s.ehlo('client.invalid')
{body}
"""


def test_remote_sender_delivers_over_tls_and_lan_client_reads_over_imaps(lab: MailLab) -> None:
    tag = uuid.uuid4().hex[:12]
    trust_appliance_cert(lab, lab.lan2)
    # The remote domain's users hand mail to their own MX, which finds ours through DNS.
    r = lab.mx.python(smtp_code("127.0.0.1", 25, f"""
s.sendmail({REMOTE_USER!r}, [{ALICE!r}],
    'From: {REMOTE_USER}\\r\\nTo: {ALICE}\\r\\nSubject: inbound {tag}\\r\\n\\r\\nhello {tag}\\r\\n')
s.quit()"""))
    assert r.returncode == 0, r.stderr
    r = lab.lan2.python(imap_fetch_code(ALICE, ALICE_PW, f"inbound {tag}"), timeout=60)
    assert r.returncode == 0, f"not in alice's INBOX: {r.stderr}\n{lab.app.read('/var/log/mail.log')[-2000:]}"
    message = r.stdout
    assert f"hello {tag}" in message
    # Our Postfix recorded that the remote MX came in over TLS (smtpd_tls_received_header).
    received = [h for h in message.split("\nReceived:") if f"by {MAIL_HOST}" in h]
    assert received and "using TLSv1." in received[0], message[:1500]
    # The remote side used our MX record, through the router's public address.
    mx_log = lab.mx.read("/var/log/mail.log")
    assert f"relay={MAIL_HOST}[{WAN_IP}]:25" in mx_log
    assert f"TLS connection established to {MAIL_HOST}" in mx_log


def test_alias_and_postmaster_reach_their_mailboxes(lab: MailLab) -> None:
    tag = uuid.uuid4().hex[:12]
    trust_appliance_cert(lab, lab.lan2)
    for rcpt in (f"info@{DOMAIN}", f"postmaster@{DOMAIN}", f"abuse@{DOMAIN}"):
        r = lab.att.python(smtp_code(WAN_IP, 25, f"""
s.sendmail('x@{REMOTE}', [{rcpt!r}], {well_formed(f"x@{REMOTE}", rcpt, f"role {tag} {rcpt}")!r})
s.quit()"""))
        assert r.returncode == 0, r.stderr
    # alice is the first user, so the default postmaster: all three land in her INBOX.
    for rcpt in (f"info@{DOMAIN}", f"postmaster@{DOMAIN}", f"abuse@{DOMAIN}"):
        r = lab.lan2.python(imap_fetch_code(ALICE, ALICE_PW, f"role {tag} {rcpt}"), timeout=60)
        log = lab.app.read("/var/log/mail.log")[-3000:]
        assert r.returncode == 0, f"{rcpt} not delivered to alice\n{log}"


def test_submission_587_with_auth_reaches_remote_mailbox(lab: MailLab) -> None:
    tag = uuid.uuid4().hex[:12]
    trust_appliance_cert(lab, lab.lan2)
    r = lab.lan2.python(smtp_code(MAIL_HOST, 587, f"""
print('auth-before-tls', s.has_extn('auth'))
s.starttls(context=ssl.create_default_context(cafile={CA!r}))
s.ehlo('client.invalid')
print('auth-after-tls', s.has_extn('auth'))
s.login({ALICE!r}, {ALICE_PW!r})
s.sendmail({ALICE!r}, [{REMOTE_USER!r}],
    'From: {ALICE}\\r\\nTo: {REMOTE_USER}\\r\\nSubject: out {tag}\\r\\n\\r\\noutbound {tag}\\r\\n')
s.quit()"""))
    assert r.returncode == 0, r.stderr
    assert "auth-before-tls False" in r.stdout and "auth-after-tls True" in r.stdout

    def stored() -> bool:
        return any(tag in p.read_text(errors="replace")
                   for p in lab.maildir_files(lab.mx, f"/var/vmail/{REMOTE}/carol"))

    wait_for("message in the remote mailbox", stored, timeout=30)


def test_submissions_465_implicit_tls_requires_auth(lab: MailLab) -> None:
    trust_appliance_cert(lab, lab.lan2)
    r = lab.lan2.python(f"""
import smtplib, ssl
s = smtplib.SMTP_SSL({MAIL_HOST!r}, 465, timeout=15,
                     context=ssl.create_default_context(cafile={CA!r}))
s.ehlo('client.invalid')
print('auth', s.has_extn('auth'))
s.mail({ALICE!r})
code, msg = s.rcpt({REMOTE_USER!r})
print('rcpt-without-auth', code)
s.quit()""")
    assert r.returncode == 0, r.stderr
    assert "auth True" in r.stdout
    assert "rcpt-without-auth 554" in r.stdout


def test_authenticated_user_cannot_send_as_someone_else(lab: MailLab) -> None:
    trust_appliance_cert(lab, lab.lan2)
    r = lab.lan2.python(smtp_code(MAIL_HOST, 587, f"""
s.starttls(context=ssl.create_default_context(cafile={CA!r})); s.ehlo('client.invalid')
s.login({BOB_LOCAL!r}, {BOB_PW!r})
s.mail({ALICE!r})
print('rcpt', s.rcpt({REMOTE_USER!r})[0])
s.quit()"""))
    assert "rcpt 553" in r.stdout, r.stdout + r.stderr


RELAY_PROBE = """
code, msg = s.mail('spammer@{frm}')
code, msg = s.rcpt('victim@{REMOTE}')
print('rcpt', code, msg.decode())
s.quit()"""


def test_relay_from_the_wan_is_refused(lab: MailLab) -> None:
    r = lab.att.python(smtp_code(WAN_IP, 25, RELAY_PROBE.format(frm="att.invalid", REMOTE=REMOTE)))
    assert "rcpt 554" in r.stdout and "Relay access denied" in r.stdout, r.stdout + r.stderr


def test_unauthenticated_relay_from_the_lan_is_refused(lab: MailLab) -> None:
    # A LAN device is not trusted just for being at home (mynetworks stays host-only).
    r = lab.lan2.python(smtp_code(APP_IP, 25, RELAY_PROBE.format(frm="lan.invalid", REMOTE=REMOTE)))
    assert "rcpt 554" in r.stdout, r.stdout + r.stderr


def test_unknown_local_user_is_rejected_with_550(lab: MailLab) -> None:
    r = lab.att.python(smtp_code(WAN_IP, 25, f"""
s.mail('x@{REMOTE}')
print('rcpt', s.rcpt('nosuchuser@{DOMAIN}')[0])
s.quit()"""))
    assert "rcpt 550" in r.stdout, r.stdout + r.stderr


def test_auth_is_not_offered_before_starttls_on_any_port(lab: MailLab) -> None:
    for port in (25, 587):
        r = lab.lan2.python(smtp_code(APP_IP, port, "print('auth', s.has_extn('auth'), "
                                      "'starttls', s.has_extn('starttls')); s.quit()"))
        assert "auth False starttls True" in r.stdout, (port, r.stdout, r.stderr)


@pytest.mark.parametrize(("flag", "offered"), [("-tls1", False), ("-tls1_1", False), ("-tls1_2", True)])
def test_port_25_offers_tls_1_2_and_up_only(lab: MailLab, flag: str, offered: bool) -> None:
    # The client drops its own security level so that it really offers the old protocol: what
    # is refused is refused by the box. From the internet side, through the router's forward.
    r = lab.att.run(["timeout", "20", "openssl", "s_client", "-starttls", "smtp", "-connect",
                     f"{WAN_IP}:25", flag, "-cipher", "DEFAULT@SECLEVEL=0", "-brief"],
                    check=False, timeout=30, input="QUIT\n")
    out = r.stdout + r.stderr
    assert ("Protocol version: TLSv1.2" in out) is offered, out[-600:]
    if not offered:
        assert r.returncode != 0 and "CONNECTION ESTABLISHED" not in out, out[-600:]


def test_message_size_limit_is_announced_and_enforced(lab: MailLab) -> None:
    r = lab.att.python(smtp_code(WAN_IP, 25, f"""
print('size', s.esmtp_features.get('size'))
try:
    s.sendmail('x@{REMOTE}', [{ALICE!r}], 'Subject: big\\r\\n\\r\\n' + 'x' * (11 * 1024 * 1024))
except smtplib.SMTPException as e:
    print('refused', e)
"""), timeout=120)
    assert f"size {10 * 1024 * 1024}" in r.stdout
    assert "refused" in r.stdout and "552" in r.stdout, r.stdout + r.stderr


def test_plaintext_imap_login_is_refused_but_starttls_works(lab: MailLab) -> None:
    trust_appliance_cert(lab, lab.lan2)
    r = lab.lan2.python(f"""
import imaplib, ssl
M = imaplib.IMAP4({MAIL_HOST!r}, 143, timeout=10)
try:
    M.login({ALICE!r}, {ALICE_PW!r}); print('PLAINTEXT LOGIN ALLOWED')
except imaplib.IMAP4.error as e:
    print('refused', e)
M = imaplib.IMAP4({MAIL_HOST!r}, 143, timeout=10)
M.starttls(ssl_context=ssl.create_default_context(cafile={CA!r}))
print('starttls-login', M.login({ALICE!r}, {ALICE_PW!r})[0])
M.logout()""")
    assert "PLAINTEXT LOGIN ALLOWED" not in r.stdout
    assert "refused" in r.stdout and "starttls-login OK" in r.stdout, r.stdout + r.stderr


def test_wrong_imap_password_is_refused(lab: MailLab) -> None:
    trust_appliance_cert(lab, lab.lan2)
    r = lab.lan2.python(f"""
import imaplib, ssl
M = imaplib.IMAP4_SSL({MAIL_HOST!r}, 993, ssl_context=ssl.create_default_context(cafile={CA!r}))
try:
    M.login({ALICE!r}, 'wrong-password'); print('LOGGED IN')
except imaplib.IMAP4.error as e:
    print('refused', e)""")
    assert "refused" in r.stdout and "LOGGED IN" not in r.stdout, r.stdout + r.stderr


# --- the agent: idempotence, bad input, rollback ------------------------------------------------

MANAGED = ("/etc/postfix/main.cf", "/etc/postfix/master.cf", "/etc/postfix/vmailbox",
           "/etc/postfix/virtual", "/etc/postfix/sender_login", "/etc/dovecot/dovecot.conf",
           "/etc/dovecot/users", "/etc/appliance/settings.toml")


def snapshot(lab: MailLab) -> dict[str, str]:
    out = lab.app.run(["sha256sum", *MANAGED]).stdout
    return {line.split()[1]: line.split()[0] for line in out.splitlines()}


def master_pids(lab: MailLab) -> tuple[str, str]:
    return (lab.app.read("/var/spool/postfix/pid/master.pid").strip(),
            lab.app.read("/run/dovecot/master.pid").strip())


def test_second_apply_changes_nothing_and_reloads_nothing(lab: MailLab) -> None:
    r = lab.appliance("apply", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["changed_files"] == [] and report["reloaded"] == []
    r = lab.appliance("apply")
    assert "changed 0 file(s); reloaded 0 service(s)" in r.stdout


def test_bad_settings_exit_2_name_the_field_and_change_nothing(lab: MailLab) -> None:
    before = snapshot(lab)
    good = lab.app.read("/etc/appliance/settings.toml")
    bad = settings_toml([(ALICE, lab.users[0][1], []), ("bob@other.org", lab.users[1][1], [])])
    try:
        lab.write_settings(bad)
        before = {**before, "/etc/appliance/settings.toml": hashlib.sha256(bad.encode()).hexdigest()}
        r = lab.appliance("apply")
        assert r.returncode == 2
        assert 'users[1].address: "bob@other.org" is outside domain "example.test"' in r.stderr
        assert snapshot(lab) == before
        r = lab.appliance("check", "/etc/appliance/settings.toml")
        assert r.returncode == 2 and "users[1].address" in r.stderr
    finally:
        lab.write_settings(good)


def test_an_interface_the_box_does_not_have_is_refused_and_changes_nothing(lab: MailLab) -> None:
    def etc() -> str:  # every file under the box's /etc (its private view), with its hash
        return lab.app.run(["sh", "-c", "find /etc -type f ! -path /etc/appliance/settings.toml "
                            "-print0 | sort -z | xargs -0 sha256sum"], timeout=60).stdout

    good = lab.app.read("/etc/appliance/settings.toml")
    bad = settings_toml(lab.users, '[lan]\ninterface = "eth9"\n')
    try:
        lab.write_settings(bad)
        before = etc()
        r = lab.appliance("apply")
        assert r.returncode == 2, r.stderr
        assert 'lan.interface: "eth9" is not an interface of this machine' in r.stderr
        assert etc() == before  # nft rules and fail2ban's LAN exemptions untouched
        r = lab.appliance("check", "/etc/appliance/settings.toml")
        assert r.returncode == 2 and "lan.interface" in r.stderr
        # The same file alone (as on the user's computer) passes and says what it did not check.
        r = lab.appliance("check", "--offline", "/etc/appliance/settings.toml")
        assert r.returncode == 0 and "not checked off the box: lan.interface exists" in r.stdout
    finally:
        lab.write_settings(good)


def test_broken_template_fails_validation_rolls_back_and_mail_still_flows(lab: MailLab) -> None:
    before = snapshot(lab)
    pids = master_pids(lab)
    override = "/etc/appliance/templates/etc/postfix/main.cf.j2"
    original = (TEMPLATES / "etc/postfix/main.cf.j2").read_text()
    # A tinkerer's override with a typo'd parameter: postconf only warns, we refuse.
    lab.app.write(override, original + "smtpd_tls_securty_level = encrypt\n")
    try:
        r = lab.appliance("apply")
        assert r.returncode == 1, r.stdout + r.stderr
        assert "postfix: the new configuration was rejected by `postconf -n`" in r.stderr
        assert "smtpd_tls_securty_level" in r.stderr
        assert snapshot(lab) == before
        assert master_pids(lab) == pids  # nothing was reloaded or restarted
    finally:
        lab.app.run(["rm", "-f", override])
    # The running Postfix still delivers.
    tag = uuid.uuid4().hex[:12]
    trust_appliance_cert(lab, lab.lan2)
    r = lab.att.python(smtp_code(WAN_IP, 25, f"""
s.sendmail('x@{REMOTE}', [{ALICE!r}], {well_formed(f"x@{REMOTE}", ALICE, f"after-rollback {tag}")!r})
s.quit()"""))
    assert r.returncode == 0, r.stderr
    r = lab.lan2.python(imap_fetch_code(ALICE, ALICE_PW, f"after-rollback {tag}"), timeout=60)
    assert r.returncode == 0


def test_reload_failure_restores_every_file_and_the_old_config_keeps_running(lab: MailLab) -> None:
    """A change that passes validation but fails at reload (Dovecot cannot bind its IMAP port,
    held by another process) is rolled back: files restored, Dovecot still serves IMAP."""
    before = snapshot(lab)
    override = "/etc/appliance/templates/etc/dovecot/dovecot.conf.j2"
    original = (TEMPLATES / "etc/dovecot/dovecot.conf.j2").read_text()
    # Port 25 is Postfix's: valid for doveconf, impossible to bind for Dovecot.
    lab.app.write(override, original.replace("port = 143", "port = 25"))
    try:
        r = lab.appliance("apply")
        assert r.returncode == 1, r.stdout + r.stderr
        assert "dovecot: reload failed" in r.stderr and "Every file was restored" in r.stderr
        assert snapshot(lab) == before
    finally:
        lab.app.run(["rm", "-f", override])
    wait_for("dovecot back on 143", lambda: lab.tcp_open(lab.lan2, APP_IP, 143), timeout=20)
    test_wrong_imap_password_is_refused(lab)  # a full TLS IMAP exchange still works
    r = lab.appliance("apply", "--json")
    assert json.loads(r.stdout)["changed_files"] == []


def test_user_commands_edit_settings_keep_comments_and_apply(lab: MailLab) -> None:
    good = lab.app.read("/etc/appliance/settings.toml")
    try:
        r = lab.appliance("user", "add", f"dave@{DOMAIN}", "--alias", f"d@{DOMAIN}",
                          input="dave-password-123\n")
        assert r.returncode == 0, r.stdout + r.stderr
        text = lab.app.read("/etc/appliance/settings.toml")
        assert "# Lab settings" in text and f"dave@{DOMAIN}" in text
        assert "dave-password-123" not in text
        trust_appliance_cert(lab, lab.lan2)
        r = lab.lan2.python(f"""
import imaplib, ssl
M = imaplib.IMAP4_SSL({MAIL_HOST!r}, 993, ssl_context=ssl.create_default_context(cafile={CA!r}))
print(M.login('dave@{DOMAIN}', 'dave-password-123')[0])""")
        assert "OK" in r.stdout, r.stderr
        r = lab.appliance("alias", "list")
        assert f"d@{DOMAIN} -> dave@{DOMAIN}" in r.stdout
        r = lab.appliance("user", "del", f"dave@{DOMAIN}")
        assert r.returncode == 0 and f"dave@{DOMAIN}" not in lab.app.read("/etc/appliance/settings.toml")
    finally:
        lab.write_settings(good)
        assert lab.appliance("apply").returncode == 0


def test_an_app_password_opens_imap_and_smtp_until_it_is_revoked(lab: MailLab) -> None:
    """One password per device, checked by Dovecot (passdb lua) after the user's own: it opens
    IMAP and submission, its last use is noted with the device's address, and revoking it ends
    the device's open session and refuses the next login, while her own password still works."""
    good = lab.app.read("/etc/appliance/settings.toml")
    trust_appliance_cert(lab, lab.lan2)
    try:
        r = lab.appliance("user", "app-password", "add", ALICE, "Phone")
        assert r.returncode == 0, r.stdout + r.stderr
        secret = r.stdout.strip().splitlines()[-1].strip()
        assert re.fullmatch(r"[a-z2-9]{4}(-[a-z2-9]{4}){3}", secret), r.stdout
        text = lab.app.read("/etc/appliance/settings.toml")
        assert "# Lab settings" in text and "[[users.app_passwords]]" in text and secret not in text
        r = lab.lan2.python(f"""
import imaplib, smtplib, ssl
ctx = ssl.create_default_context(cafile={CA!r})
def imap(pw):
    M = imaplib.IMAP4_SSL({MAIL_HOST!r}, 993, ssl_context=ctx, timeout=10)
    try:
        return M.login({ALICE!r}, pw)[0]
    except imaplib.IMAP4.error:
        return 'NO'
print('app', imap({secret!r}), 'own', imap({ALICE_PW!r}), 'wrong', imap('abcd-efgh-jkmn-pqrs'))
s = smtplib.SMTP_SSL({MAIL_HOST!r}, 465, timeout=15, context=ctx)
print('smtp', s.login({ALICE!r}, {secret!r})[0])
s.quit()""")
        assert "app OK own OK wrong NO" in r.stdout and "smtp 235" in r.stdout, r.stdout + r.stderr
        rows = json.loads(lab.appliance("user", "app-password", "list", ALICE, "--json").stdout)
        assert [(x["name"], x["last_address"]) for x in rows] == [("Phone", LAN2_IP)]
        assert rows[0]["last_used"] and rows[0]["created"] <= rows[0]["last_used"]

        # A device that is connected: revoking its password ends the session at once.
        lab.lan2.spawn("imap-session", ["/usr/bin/python3", "-c", f"""
import imaplib, ssl, sys, time
M = imaplib.IMAP4_SSL({MAIL_HOST!r}, 993, timeout=10,
                      ssl_context=ssl.create_default_context(cafile={CA!r}))
print(M.login({ALICE!r}, {secret!r})[0], flush=True)
for _ in range(240):
    try:
        M.noop()
    except Exception as e:
        print('ended', type(e).__name__, flush=True)
        sys.exit(0)
    time.sleep(0.5)
print('still connected', flush=True)"""])
        out = lab.lab.logs / "lan2-imap-session.out"
        wait_for("the device's IMAP session", lambda: out.exists() and "OK" in out.read_text(),
                 timeout=30)
        r = lab.appliance("user", "app-password", "del", ALICE, "Phone")
        assert r.returncode == 0, r.stdout + r.stderr
        wait_for("the session to end", lambda: "ended" in out.read_text(), timeout=30)
        r = lab.lan2.python(f"""
import imaplib, ssl
ctx = ssl.create_default_context(cafile={CA!r})
for pw in ({secret!r}, {ALICE_PW!r}):
    M = imaplib.IMAP4_SSL({MAIL_HOST!r}, 993, ssl_context=ctx, timeout=10)
    try:
        print(M.login({ALICE!r}, pw)[0])
    except imaplib.IMAP4.error:
        print('NO')""")
        assert r.stdout.split() == ["NO", "OK"], r.stdout + r.stderr
        assert "app_passwords" not in lab.app.read("/etc/appliance/settings.toml")
    finally:
        lab.write_settings(good)
        assert lab.appliance("apply").returncode == 0


def _send_from_remote(lab: MailLab, sender: str, subject: str, extra: str = "") -> None:
    r = lab.mx.python(f"""
import smtplib
s = smtplib.SMTP('127.0.0.1', 25, timeout=15)
s.sendmail({sender!r}, [{ALICE!r}], {well_formed(sender, ALICE, subject, extra=extra)!r})
s.quit()""")
    assert r.returncode == 0, r.stderr


def _at_carol(lab: MailLab, needle: str) -> list[str]:
    return [t for p in lab.maildir_files(lab.mx, f"/var/vmail/{REMOTE}/carol")
            if needle in (t := p.read_text(errors="replace"))]


def _at_alice(lab: MailLab, needle: str) -> bool:
    return any(needle in p.read_text(errors="replace")
               for p in lab.maildir_files(lab.app, f"/var/vmail/{DOMAIN}/alice/Maildir"))


def test_forwarding_keeps_a_copy_and_passes_the_destinations_spf(lab: MailLab) -> None:
    """`appliance user forward`: a Sieve redirect at delivery; the copy here stays, and the
    forwarded mail leaves with alice's address as envelope sender (this box may send for it)."""
    good = lab.app.read("/etc/appliance/settings.toml")
    tag = uuid.uuid4().hex[:10]
    try:
        r = lab.appliance("user", "forward", ALICE, REMOTE_USER)
        assert r.returncode == 0, r.stdout + r.stderr
        _send_from_remote(lab, f"dora@{REMOTE}", f"fwd {tag}")
        wait_for("the forwarded copy at the remote mailbox", lambda: _at_carol(lab, f"fwd {tag}"),
                 timeout=60)
        [copy] = _at_carol(lab, f"fwd {tag}")
        assert f"Return-Path: <{ALICE}>" in copy, copy[:600]
        assert _at_alice(lab, f"fwd {tag}")  # and kept here
        assert lab.appliance("user", "forward", ALICE, "--off").returncode == 0
        assert "forward_to" not in lab.app.read("/etc/appliance/settings.toml")
        assert not lab.app.exists(f"/etc/dovecot/sieve/users/{ALICE}.sieve")  # the owned file went
    finally:
        lab.write_settings(good)
        assert lab.appliance("apply").returncode == 0


def test_the_away_message_answers_a_sender_once_and_never_a_list(lab: MailLab) -> None:
    """`appliance user vacation`: Pigeonhole's vacation, once per sender per period (RFC 5230),
    never to a mailing list (RFC 3834); the reply is marked Auto-Submitted."""
    good = lab.app.read("/etc/appliance/settings.toml")
    tag = uuid.uuid4().hex[:10]
    log_from = len(lab.app.read("/var/log/dovecot.log"))
    try:
        r = lab.appliance("user", "vacation", ALICE, "--subject", f"Away {tag}", "--until",
                          "2099-12-31", input="I am away until Monday.\nBack then.\n")
        assert r.returncode == 0, r.stdout + r.stderr
        _send_from_remote(lab, REMOTE_USER, f"first {tag}")

        def said() -> str:
            return lab.app.read("/var/log/dovecot.log")[log_from:]

        try:
            wait_for("the away message at the sender", lambda: _at_carol(lab, f"Away {tag}"), timeout=60)
        except TimeoutError:
            pytest.fail(said()[-3000:] + lab.app.read("/var/log/mail.log")[-3000:])
        [reply] = _at_carol(lab, f"Away {tag}")
        assert "Auto-Submitted: auto-replied" in reply and "I am away until Monday." in reply
        assert "Return-Path: <>" in reply  # a reply to a reply goes nowhere
        _send_from_remote(lab, REMOTE_USER, f"second {tag}")
        _send_from_remote(lab, f"news@{REMOTE}", f"list {tag}",
                          extra=f"List-Id: <news.{REMOTE}>\r\nPrecedence: list\r\n")
        wait_for("both in alice's mailbox",
                 lambda: _at_alice(lab, f"second {tag}") and _at_alice(lab, f"list {tag}"), timeout=60)

        try:  # Pigeonhole's own log lines for both decisions
            wait_for("Dovecot's word on both", lambda: "discarded duplicate vacation response" in said()
                     and "vacation response to mailinglist recipient" in said(), timeout=30)
        except TimeoutError:
            pytest.fail(said()[-3000:])
        assert "Error" not in said(), said()[-3000:]  # nothing compiled at each message
        assert len(_at_carol(lab, f"Away {tag}")) == 1
    finally:
        lab.write_settings(good)
        assert lab.appliance("apply").returncode == 0


@pytest.mark.parametrize("port", [25, 587, 993])
def test_ports_answer_from_the_internet_through_the_router(lab: MailLab, port: int) -> None:
    assert lab.tcp_open(lab.att, WAN_IP, port)
