"""What leaves the box, against the real Postfix in the lab: mail submitted on 587
from the LAN client reaches the remote MX with no trace of the client's address, name or
software; mail arriving from the internet on port 25 keeps its headers."""

from __future__ import annotations

import uuid

from .mail_lab import ALICE, ALICE_PW, APP_IP, DOMAIN, LAN2_IP, MAIL_HOST, REMOTE, WAN_IP, MailLab
from .netlab import wait_for
from .test_typo_guard import restart_policyd

CLIENT_NAME = "alices-laptop.lan"
FINGERPRINTS = (LAN2_IP, CLIENT_NAME, "SecretClient", "Thunderbird/115", "alices-laptop")


def message(tag: str, rcpt: str) -> str:
    return (f"Received: from {CLIENT_NAME} ([{LAN2_IP}]) by {CLIENT_NAME} with LMTP; "
            "Mon, 23 Nov 2026 10:00:00 +0000\r\n"
            f"From: {ALICE}\r\nTo: {rcpt}\r\nSubject: {tag}\r\n"
            "X-Mailer: SecretClient 9.1\r\nUser-Agent: Mozilla/5.0 Thunderbird/115.3\r\n"
            f"X-Originating-IP: [{LAN2_IP}]\r\n\r\nhello\r\n")


def test_submitted_mail_leaves_without_the_clients_traces(lab: MailLab) -> None:
    r = lab.appliance("apply")
    assert r.returncode == 0, r.stdout + r.stderr
    try:
        _submit_and_check(lab)
    finally:
        restart_policyd(lab)  # alice's submission must not count against later tests' limits


def _submit_and_check(lab: MailLab) -> None:
    tag = f"privacy-{uuid.uuid4().hex[:8]}"
    rcpt = f"carol@{REMOTE}"
    code = f"""
import smtplib, ssl
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP({APP_IP!r}, 587, timeout=30, local_hostname={CLIENT_NAME!r})
s.starttls(context=ctx); s.ehlo({CLIENT_NAME!r}); s.login({ALICE!r}, {ALICE_PW!r})
s.sendmail({ALICE!r}, [{rcpt!r}], {message(tag, rcpt)!r}); s.quit()
"""
    r = lab.lan2.python(code, timeout=60)
    assert r.returncode == 0, r.stderr

    def arrived() -> str:
        for p in lab.maildir_files(lab.mx, f"/var/vmail/{REMOTE}/carol"):
            t = p.read_text(errors="replace")
            if tag in t:
                return t
        return ""

    wait_for("the message at the remote MX", lambda: bool(arrived()), timeout=60)
    text = arrived()
    head = text.split("\n\n", 1)[0]
    for trace in FINGERPRINTS:
        assert trace not in text, f"{trace!r} reached the remote MX:\n{head}"
    # The one Received line left is the remote MX's own, naming only the appliance.
    received = [h for h in head.replace("\n\t", " ").replace("\n ", " ").splitlines()
                if h.startswith("Received:")]
    assert len(received) == 1 and MAIL_HOST in received[0] and WAN_IP in received[0], head
    assert f"Subject: {tag}" in head and f"From: {ALICE}" in head


def test_mail_from_the_internet_keeps_its_headers(lab: MailLab) -> None:
    tag = f"inbound-{uuid.uuid4().hex[:8]}"
    msg = (f"From: carol@{REMOTE}\r\nTo: {ALICE}\r\nSubject: {tag}\r\n"
           "X-Mailer: RemoteClient 2.0\r\nUser-Agent: Remote/1\r\n\r\nhi\r\n")
    code = f"""
import smtplib
s = smtplib.SMTP({WAN_IP!r}, 25, timeout=30, local_hostname='mx.{REMOTE}')
s.sendmail('carol@{REMOTE}', [{ALICE!r}], {msg!r}); s.quit()
"""
    r = lab.mx.python(code, timeout=60)
    assert r.returncode == 0, r.stderr

    def arrived() -> str:
        for p in lab.maildir_files(lab.app, f"/var/vmail/{DOMAIN}/alice/Maildir"):
            t = p.read_text(errors="replace")
            if tag in t:
                return t
        return ""

    wait_for("the message in alice's mailbox", lambda: bool(arrived()), timeout=60)
    text = arrived()
    assert "X-Mailer: RemoteClient 2.0" in text and "User-Agent: Remote/1" in text
    assert "Received: from mx.remote.test" in text


def test_report_spam_send_delivers_a_redacted_arf_report(lab: MailLab) -> None:
    tag = f"arf-{uuid.uuid4().hex[:8]}"
    spam = (f"Return-Path: <spammer@{REMOTE}>\r\nReceived: from mx.{REMOTE} (mx.{REMOTE} "
            f"[203.0.113.25])\r\n\tby {MAIL_HOST} (Postfix) with ESMTP id 4Xyz\r\n\tfor <{ALICE}>; "
            "Mon, 23 Nov 2026 10:00:00 +0000 (UTC)\r\n"
            f"From: spammer@{REMOTE}\r\nTo: {ALICE}\r\nSubject: {tag}\r\n\r\nHi {ALICE}, buy now\r\n")
    lab.app.write("/var/tmp/spam.eml", spam)
    # To carol@ (the lab's remote mailbox) instead of abuse@remote.test, which has no mailbox.
    r = lab.appliance("report-spam", "/var/tmp/spam.eml", "--send", "--to", f"carol@{REMOTE}")
    assert r.returncode == 0 and "sent the redacted report" in r.stderr, r.stdout + r.stderr

    def arrived() -> str:
        for p in lab.maildir_files(lab.mx, f"/var/vmail/{REMOTE}/carol"):
            t = p.read_text(errors="replace")
            if tag in t and "feedback-report" in t:
                return t
        return ""

    wait_for("the abuse report at the remote MX", lambda: bool(arrived()), timeout=60)
    import email

    rep = email.message_from_string(arrived())
    assert rep.get_content_type() == "multipart/report"
    fb = rep.get_payload()[1].get_payload()[0]
    assert fb["Source-IP"] == "203.0.113.25" and fb["Reported-Domain"] == REMOTE
    assert ALICE not in arrived() and "alice@" not in arrived()
