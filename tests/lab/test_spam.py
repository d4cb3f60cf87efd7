"""rspamd in front of Postfix, against the real daemons in the lab:

- mail a user submits is DKIM-signed, and the remote MX verifies the signature (dkimpy) against
  the record `appliance dns` prints, published in the lab's DNS; the header minimisation of
  the header minimisation leaves the signature valid;
- mail from the internet that claims the user's domain fails DMARC and lands in Junk; ordinary
  mail lands in the INBOX with an Authentication-Results header;
- moving a message into Junk over IMAP teaches rspamd's Bayes (IMAPSieve);
- rspamd stopped: mail is deferred with a 4xx, then accepted once it runs again;
- a broken rspamd configuration fails `apply` and changes nothing;
- light mode: no controller, and mail is still signed.
"""

from __future__ import annotations

import re
import signal
import uuid
from collections.abc import Iterator

import pytest

from .mail_lab import (
    ALICE,
    ALICE_PW,
    APP_IP,
    BOB_LOCAL,
    BOB_PW,
    DOMAIN,
    LAN2_IP,
    REMOTE,
    REMOTE_USER,
    WAN_IP,
    MailLab,
    well_formed,
)
from .netlab import wait_for
from .test_dns_records import publish
from .test_typo_guard import restart_policyd

CLIENT = "alices-laptop.lan"
# As the agent's direct manager starts it; rspamd daemonizes but keeps inherited pipes open.
START_RSPAMD = "rspamd -c /etc/rspamd/rspamd.conf -u _rspamd -g _rspamd </dev/null >/dev/null 2>&1"


def rfc5322(sender: str, rcpt: str, subject: str, msgid: str, extra: str = "") -> str:
    return well_formed(sender, rcpt, subject, msgid, extra)


@pytest.fixture(scope="module")
def published(lab: MailLab) -> Iterator[list[str]]:
    """The DKIM, SPF and DMARC records as `appliance dns` prints them, in the lab's DNS."""
    r = lab.appliance("dns")
    assert r.returncode == 0, r.stderr
    lines = [x for x in r.stdout.splitlines() if x and not x.startswith(";")
             and x.split("\t")[3] == "TXT" and re.search(r"v=(DKIM1|spf1|DMARC1)", x)]
    assert len(lines) == 3, r.stdout
    publish(lab, lines)
    yield lines


def submit(lab: MailLab, rcpt: str, msg: str, user: str = ALICE, pw: str = ALICE_PW,
           sender: str = "") -> None:
    code = f"""
import smtplib, ssl
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP({APP_IP!r}, 587, timeout=30, local_hostname={CLIENT!r})
s.starttls(context=ctx); s.ehlo({CLIENT!r}); s.login({user!r}, {pw!r})
s.sendmail({sender or user!r}, [{rcpt!r}], {msg!r}); s.quit()
"""
    r = lab.lan2.python(code, timeout=60)
    assert r.returncode == 0, r.stderr


def at_remote(lab: MailLab, tag: str) -> str:
    """The path (inside the remote MX's view) of the delivered message carrying the tag."""
    base = lab.mx.path("/var")

    def found() -> str:
        for p in lab.maildir_files(lab.mx, f"/var/vmail/{REMOTE}/carol"):
            if tag in p.read_text(errors="replace"):
                return "/var/" + str(p.relative_to(base))
        return ""

    wait_for(f"{tag} at the remote MX", lambda: bool(found()), timeout=60)
    return found()


def dkim_verify_at_remote(lab: MailLab, path: str) -> str:
    """dkimpy on the remote MX, looking the key up in the lab's DNS (its resolv.conf)."""
    code = f"""
import dkim, sys
msg = open({path!r}, 'rb').read()
d = dkim.DKIM(msg)
ok = d.verify()
print('verified' if ok else 'FAILED', (d.domain or b'').decode(), (d.selector or b'').decode())
"""
    r = lab.mx.python(code, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_submitted_mail_is_signed_and_verifies_at_the_remote_mx(lab: MailLab, published: list[str]) -> None:
    tag = f"dkim-{uuid.uuid4().hex[:8]}"
    # What a LAN client adds, which the header minimisation removes on submission.
    traces = (f"User-Agent: Mozilla/5.0 Thunderbird/115.3\r\nX-Mailer: SecretClient 9.1\r\n"
              f"X-Originating-IP: [{LAN2_IP}]\r\n")
    try:
        submit(lab, REMOTE_USER, rfc5322(ALICE, REMOTE_USER, tag, f"{tag}@{DOMAIN}", traces))
    finally:
        restart_policyd(lab)  # the submission must not count against later tests' limits
    path = at_remote(lab, tag)
    text = lab.mx.read(path)
    head = text.split("\n\n", 1)[0]
    assert "DKIM-Signature:" in head and f"d={DOMAIN}" in head.replace("\n\t", " "), head
    for trace in ("Thunderbird", "SecretClient", LAN2_IP, CLIENT):
        assert trace not in text, f"{trace} reached the remote MX"
    active = lab.app.read("/var/lib/appliance/dkim/state.json")
    verdict = dkim_verify_at_remote(lab, path)
    assert verdict.startswith(f"verified {DOMAIN} "), verdict
    assert verdict.split()[-1] in active


def _maildir_with(lab: MailLab, maildir: str, tag: str) -> str:
    for p in lab.maildir_files(lab.app, maildir):
        t = p.read_text(errors="replace")
        if tag in t:
            return t
    return ""


def send_inbound(lab: MailLab, client: str, mail_from: str, rcpt: str, msg: str) -> None:
    host = {"att": lab.att, "mx": lab.mx}[client]
    code = f"""
import smtplib
s = smtplib.SMTP({WAN_IP!r}, 25, timeout=30, local_hostname='mx.{REMOTE}')
s.sendmail({mail_from!r}, [{rcpt!r}], {msg!r}); s.quit()
"""
    r = host.python(code, timeout=60)
    assert r.returncode == 0, r.stderr


def test_spoofed_own_domain_lands_in_junk_and_real_mail_in_inbox(lab: MailLab, published: list[str]) -> None:
    box = f"/var/vmail/{DOMAIN}/bob/Maildir"
    spoof = f"spoof-{uuid.uuid4().hex[:8]}"
    # From the internet (not the MX of example.test), claiming to be the user's own domain.
    send_inbound(lab, "att", f"ceo@{DOMAIN}", BOB_LOCAL,
                 rfc5322(f"ceo@{DOMAIN}", BOB_LOCAL, "Urgent wire transfer", f"{spoof}@{DOMAIN}"))
    real = f"real-{uuid.uuid4().hex[:8]}"
    send_inbound(lab, "mx", REMOTE_USER, BOB_LOCAL,
                 rfc5322(REMOTE_USER, BOB_LOCAL, "Garden project", f"{real}@{REMOTE}"))
    wait_for("the spoofed message in Junk", lambda: bool(_maildir_with(lab, f"{box}/.Junk", spoof)),
             timeout=60)
    junk = _maildir_with(lab, f"{box}/.Junk", spoof)
    assert "X-Spam: Yes" in junk
    assert re.search(r"dmarc=fail", junk), junk.split("\n\n", 1)[0]
    assert not _maildir_with(lab, box, spoof), "the spoofed message also reached the INBOX"
    wait_for("the real message in the INBOX", lambda: bool(_maildir_with(lab, box, real)), timeout=60)
    inbox = _maildir_with(lab, box, real)
    assert "Authentication-Results:" in inbox and "X-Spam: Yes" not in inbox
    assert not _maildir_with(lab, f"{box}/.Junk", real)


def bayes_learned(lab: MailLab, symbol: str) -> int:
    r = lab.app.run(["rspamc", "-h", "127.0.0.1:11334", "stat"], check=False, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(rf"Statfile: {symbol} .*?learned: (\d+)", r.stdout, re.S)
    assert m, r.stdout
    return int(m.group(1))


def test_moving_mail_into_junk_teaches_rspamd(lab: MailLab) -> None:
    before = bayes_learned(lab, "BAYES_SPAM")
    tag = f"learn-{uuid.uuid4().hex[:8]}"
    msg = rfc5322(REMOTE_USER, BOB_LOCAL, f"Cheap watches {tag}", f"{tag}@{REMOTE}")
    code = f"""
import imaplib, ssl, time
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
M = imaplib.IMAP4_SSL({APP_IP!r}, 993, ssl_context=ctx, timeout=20)
M.login({BOB_LOCAL!r}, {BOB_PW!r})
M.append('INBOX', None, None, {msg!r}.encode())
M.select('INBOX')
typ, data = M.search(None, 'HEADER', 'Message-ID', {tag!r})
uid = data[0].split()[-1]
typ, out = M.copy(uid, 'Junk')
assert typ == 'OK', out
M.logout()
"""
    r = lab.lan2.python(code, timeout=60)
    assert r.returncode == 0, r.stderr
    wait_for("rspamd to learn the message as spam",
             lambda: bayes_learned(lab, "BAYES_SPAM") > before, timeout=30)


def _rspamd_pid(lab: MailLab) -> int:
    return int(lab.app.read("/run/rspamd/rspamd.pid").split()[0])


def test_rspamd_down_defers_then_mail_flows(lab: MailLab) -> None:
    import os

    tag = f"down-{uuid.uuid4().hex[:8]}"
    msg = rfc5322(REMOTE_USER, BOB_LOCAL, "Agenda", f"{tag}@{REMOTE}")
    os.kill(_rspamd_pid(lab), signal.SIGTERM)
    try:
        wait_for("rspamd stopped", lambda: not lab.tcp_open(lab.app, "127.0.0.1", 11332), timeout=20)
        code = f"""
import smtplib, sys
s = smtplib.SMTP({WAN_IP!r}, 25, timeout=30, local_hostname='mx.{REMOTE}')
try:
    s.sendmail({REMOTE_USER!r}, [{BOB_LOCAL!r}], {msg!r})
except smtplib.SMTPResponseException as e:
    print(e.smtp_code, e.smtp_error.decode()); sys.exit(0)
except smtplib.SMTPRecipientsRefused as e:
    code, text = list(e.recipients.values())[0]; print(code, text.decode()); sys.exit(0)
print('accepted'); sys.exit(1)
"""
        r = lab.mx.python(code, timeout=60)
        assert r.returncode == 0, f"accepted while rspamd was down: {r.stdout}"
        assert r.stdout.startswith("4"), r.stdout  # deferred: the sender keeps it and retries
    finally:
        lab.app.run(["sh", "-c", START_RSPAMD])
        wait_for("rspamd back", lambda: lab.tcp_open(lab.app, "127.0.0.1", 11332), timeout=30)
    send_inbound(lab, "mx", REMOTE_USER, BOB_LOCAL, msg)
    wait_for("the retried message delivered",
             lambda: bool(_maildir_with(lab, f"/var/vmail/{DOMAIN}/bob/Maildir", tag)), timeout=60)


def test_broken_rspamd_configuration_changes_nothing(lab: MailLab) -> None:
    override = "/etc/appliance/templates/etc/rspamd/local.d/actions.conf.j2"
    live = "/etc/rspamd/local.d/actions.conf"
    before = lab.app.read(live)
    pid = _rspamd_pid(lab)
    lab.app.write(override, "{{ header }}\nreject = 15;\nadd_header = {\n")  # unbalanced brace
    try:
        r = lab.appliance("apply")
        assert r.returncode != 0, r.stdout
        assert "rspamadm configtest" in r.stderr + r.stdout, r.stderr
        assert lab.app.read(live) == before
        assert _rspamd_pid(lab) == pid and lab.tcp_open(lab.app, "127.0.0.1", 11332)
    finally:
        lab.app.run(["rm", "-f", override])


def test_light_mode_signs_without_the_controller(lab: MailLab, published: list[str]) -> None:
    good = lab.app.read("/etc/appliance/settings.toml")
    try:
        lab.write_settings(good + '\n[spam]\nmode = "light"\n')
        r = lab.appliance("apply")
        assert r.returncode == 0, r.stdout + r.stderr
        wait_for("the controller gone", lambda: not lab.tcp_open(lab.app, "127.0.0.1", 11334),
                 timeout=20)
        assert "imap_sieve" not in lab.app.read("/etc/dovecot/dovecot.conf")
        tag = f"light-{uuid.uuid4().hex[:8]}"
        try:
            submit(lab, REMOTE_USER, rfc5322(ALICE, REMOTE_USER, tag, f"{tag}@{DOMAIN}"))
        finally:
            restart_policyd(lab)
        assert dkim_verify_at_remote(lab, at_remote(lab, tag)).startswith(f"verified {DOMAIN} ")
    finally:
        lab.write_settings(good)
        r = lab.appliance("apply")
        assert r.returncode == 0, r.stdout + r.stderr
    wait_for("the controller back", lambda: lab.tcp_open(lab.app, "127.0.0.1", 11334), timeout=20)
    assert "\nenabled = false" not in lab.app.read("/etc/rspamd/local.d/rbl.conf")  # full again


@pytest.mark.parametrize("sender", [f"info@{DOMAIN}", ALICE])
def test_outgoing_mail_names_no_account_at_the_remote_mx(lab: MailLab, published: list[str],
                                                         sender: str) -> None:
    """No Authentication-Results (smtp.auth=) or any other header names the submitting
    account; only From and the envelope sender, written by the user, carry its address."""
    tag = f"acct-{uuid.uuid4().hex[:8]}"
    try:
        submit(lab, REMOTE_USER, rfc5322(sender, REMOTE_USER, tag, f"{tag}@{DOMAIN}"),
               sender=sender)
    finally:
        restart_policyd(lab)
    head = lab.mx.read(at_remote(lab, tag)).split("\n\n", 1)[0]
    fields = re.split(r"\n(?![ \t])", head)
    assert not any(f.lower().startswith("authentication-results:") for f in fields), head
    local = ALICE.split("@")[0]
    for f in fields:
        if f.lower().startswith(("from:", "reply-to:")) or f == f"Return-Path: <{sender}>":
            continue  # as the user wrote them (the envelope sender is theirs too)
        assert local not in f.lower(), f"{f!r} names the account"


def test_mail_from_the_remote_mx_carries_spf_dkim_dmarc_results(lab: MailLab) -> None:
    tag = f"ar-{uuid.uuid4().hex[:8]}"
    send_inbound(lab, "mx", REMOTE_USER, BOB_LOCAL,
                 rfc5322(REMOTE_USER, BOB_LOCAL, tag, f"{tag}@{REMOTE}"))
    wait_for(f"{tag} delivered", lambda: bool(_maildir_with(lab, f"/var/vmail/{DOMAIN}/bob/Maildir",
                                                            tag)), timeout=60)
    head = _maildir_with(lab, f"/var/vmail/{DOMAIN}/bob/Maildir", tag).split("\n\n", 1)[0]
    ar = re.search(r"^Authentication-Results:.*(?:\n[ \t].*)*", head, re.M)
    assert ar, head
    for method in ("spf=", "dkim=", "dmarc="):
        assert method in ar.group(0), ar.group(0)



def test_rspamd_reads_debians_maps_and_asks_no_asn_service(lab: MailLab) -> None:
    """With maps.rspamd.com taken out of the lists, Debian's packaged map must really be read:
    a "fallback+" entry is only used when the others fail, so the MIME type map stayed empty and
    every text/plain message scored MIME_UNKNOWN (enough, with no reverse DNS, to file ordinary
    mail into Junk). And no asn.rspamd.com lookup for the sender's address."""
    tag = f"maps-{uuid.uuid4().hex[:8]}"
    lab.app.write("/tmp/maps.eml", well_formed(f"x@{REMOTE}", BOB_LOCAL, tag))
    r = lab.app.run(["rspamc", "-h", "127.0.0.1:11334", "--ip", "198.51.100.66", "--helo",
                     "client.invalid", "-F", f"x@{REMOTE}", "-r", BOB_LOCAL, "/tmp/maps.eml"],
                    check=False, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    symbols = re.findall(r"^Symbol: (\w+)", r.stdout, re.M)
    assert "MIME_GOOD" in symbols and "MIME_UNKNOWN" not in symbols, r.stdout
    assert not [s for s in symbols if s.startswith("ASN")], r.stdout
