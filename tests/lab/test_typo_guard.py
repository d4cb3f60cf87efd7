"""The typo-domain guard against the real Postfix and policy service in the lab:
alice has corresponded with army.mil; mail she submits to army.ml, or to a host under it
(mail.army.ml), is held, she gets a notice naming both domains, `appliance release` sends it on;
mail to army.mil is never held; a broken guard defers (4xx), never drops.

The lab DNS serves army.mil and army.ml and a host `mail.` under each (tests/lab/mail_lab.py:
TYPO_DOMAINS, TYPO_HOSTS), all with the remote MX (203.0.113.25) as their mail exchanger:
nothing leaves the lab.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
from collections.abc import Iterator

import pytest

from .mail_lab import ALICE, ALICE_PW, APP_IP, DOMAIN, MailLab
from .netlab import wait_for

HISTORY = "/var/lib/appliance/typoguard/history"
POLICYD_PID = "/run/appliance-policyd.pid"
ALICE_MAILDIR = f"/var/vmail/{DOMAIN}/alice/Maildir"


def restart_policyd(lab: MailLab) -> None:
    """The policy service counts each user's submissions in memory (the outbound limits):
    the mail these tests submit must not count against later tests. Restart it the way the
    agent starts it (no init system in the lab), so its counters start from zero again."""
    pid = int(lab.app.read(POLICYD_PID).split()[0])
    lab.app.run(["kill", str(pid)], check=False)
    wait_for("the policy service stopped",
             lambda: lab.app.run(["kill", "-0", str(pid)], check=False).returncode != 0, timeout=10)
    r = lab.app.run([sys.executable, "-m", "appliance.features.limits.policyd", "--daemon", POLICYD_PID,
                     "--log", "/var/log/appliance-policyd.log"], check=False,
                    env={"PYTHONPATH": str(lab.repo)})
    assert r.returncode == 0, r.stderr
    wait_for("the policy service listening", lambda: lab.tcp_open(lab.app, "127.0.0.1", 10031),
             timeout=10)


def submit(lab: MailLab, rcpt: str, subject: str) -> tuple[int, str]:
    """alice submits one message on 587 from the LAN client: (SMTP code, text)."""
    return submit_as(lab, ALICE, ALICE_PW, rcpt, subject, "orders")


def queue(lab: MailLab) -> list[dict]:
    out = lab.app.run(["postqueue", "-j"], check=False).stdout
    return [json.loads(x) for x in out.splitlines() if x.strip()]


def remote_got(lab: MailLab, domain: str, subject: str) -> bool:
    return any(subject in p.read_text(errors="replace")
               for p in lab.maildir_files(lab.mx, f"/var/vmail/{domain}/ops"))


@pytest.fixture
def guarded(lab: MailLab) -> Iterator[MailLab]:
    r = lab.appliance("apply")
    assert r.returncode == 0, r.stdout + r.stderr
    lab.app.run(["rm", "-f", HISTORY])
    r = lab.appliance("typo-guard", "learn", "army.mil")  # alice wrote to army.mil before
    assert r.returncode == 0 and "army.mil" in r.stdout, r.stdout + r.stderr
    try:
        yield lab
    finally:
        lab.app.run(["postsuper", "-d", "ALL", "hold"], check=False)
        lab.app.run(["rm", "-f", HISTORY])
        restart_policyd(lab)


def test_near_miss_is_held_notice_sent_release_delivers(guarded: MailLab) -> None:
    lab = guarded
    code, text = submit(lab, "ops@army.ml", "typo-guard-1")
    assert code == 250, text  # accepted from the client: held on the box, not refused

    def held() -> list[dict]:
        return [q for q in queue(lab) if q["queue_name"] == "hold"
                and any(r["address"] == "ops@army.ml" for r in q["recipients"])]

    wait_for("the message in the hold queue", lambda: bool(held()), timeout=20)
    qid = held()[0]["queue_id"]
    assert not remote_got(lab, "army.ml", "typo-guard-1")

    def notice() -> str:
        for p in lab.maildir_files(lab.app, ALICE_MAILDIR):
            t = p.read_text(errors="replace")
            if "Held: your message to army.ml" in t:
                return t
        return ""

    wait_for("alice's notice", lambda: bool(notice()), timeout=30)
    t = notice()
    assert "army.mil" in t and f"appliance release {qid}" in t
    assert re.search(r"army\.ml looks like army\.mil", t)

    r = lab.appliance("release", qid)
    assert r.returncode == 0 and f"released {qid}" in r.stdout, r.stdout + r.stderr
    wait_for("delivery to army.ml after release", lambda: remote_got(lab, "army.ml", "typo-guard-1"),
             timeout=60)
    # Released once: the domain is remembered, the next message is not held.
    code, text = submit(lab, "ops@army.ml", "typo-guard-2")
    assert code == 250, text
    wait_for("second message delivered", lambda: remote_got(lab, "army.ml", "typo-guard-2"), timeout=60)
    assert not any(q["queue_name"] == "hold" for q in queue(lab))


def test_host_under_a_near_miss_is_held_and_released(guarded: MailLab) -> None:
    """The guard compares registrable domains: mail.army.ml is army.ml's host, a near miss of
    army.mil however many labels are in front. Released, army.ml (not the host) is remembered."""
    lab = guarded
    code, text = submit(lab, "ops@mail.army.ml", "typo-guard-host-1")
    assert code == 250, text

    def held() -> list[dict]:
        return [q for q in queue(lab) if q["queue_name"] == "hold"
                and any(r["address"] == "ops@mail.army.ml" for r in q["recipients"])]

    wait_for("the message to mail.army.ml in the hold queue", lambda: bool(held()), timeout=20)
    qid = held()[0]["queue_id"]
    log = lab.app.read("/var/log/appliance-policyd.log")
    assert "mail.army.ml looks like army.mil (tld)" in log, log[-2000:]

    def notice() -> str:
        for p in lab.maildir_files(lab.app, ALICE_MAILDIR):
            t = p.read_text(errors="replace")
            if "Held: your message to mail.army.ml" in t:
                return t
        return ""

    wait_for("alice's notice", lambda: bool(notice()), timeout=30)
    assert re.search(r"mail\.army\.ml looks like army\.mil", notice())
    assert not remote_got(lab, "mail.army.ml", "typo-guard-host-1")

    r = lab.appliance("release", qid)
    assert r.returncode == 0 and f"released {qid}; remembered army.ml" in r.stdout, r.stdout + r.stderr
    wait_for("delivery to mail.army.ml after release",
             lambda: remote_got(lab, "mail.army.ml", "typo-guard-host-1"), timeout=60)
    # army.ml is now known: neither the host nor the domain itself is held again.
    for rcpt, subject in (("ops@mail.army.ml", "typo-guard-host-2"), ("ops@army.ml", "typo-guard-host-3")):
        code, text = submit(lab, rcpt, subject)
        assert code == 250, text
        wait_for(f"{subject} delivered", lambda r=rcpt, s=subject: remote_got(lab, r.partition("@")[2], s),
                 timeout=60)
    assert not any(q["queue_name"] == "hold" for q in queue(lab))


def test_known_domain_is_not_held(guarded: MailLab) -> None:
    lab = guarded
    code, text = submit(lab, "ops@army.mil", "typo-guard-3")
    assert code == 250, text
    wait_for("delivery to army.mil", lambda: remote_got(lab, "army.mil", "typo-guard-3"), timeout=60)
    assert not any(q["queue_name"] == "hold" for q in queue(lab))


def test_release_refuses_what_is_not_held(guarded: MailLab) -> None:
    r = guarded.appliance("release", "NOSUCHID123")
    assert r.returncode == 2 and "no message NOSUCHID123" in r.stderr, r.stdout + r.stderr
    r = guarded.appliance("release", "../etc")
    assert r.returncode == 2 and "not a Postfix queue ID" in r.stderr


def test_broken_guard_defers_never_drops(guarded: MailLab) -> None:
    lab = guarded
    lab.app.write(HISTORY, "this is not a history file\n", mode=0o644)
    code, text = submit(lab, "ops@army.mil", "typo-guard-4")
    assert code == 451 and "typo-domain guard" in text, (code, text)
    assert not remote_got(lab, "army.mil", "typo-guard-4")
    lab.app.run(["rm", "-f", HISTORY])
    code, text = submit(lab, "ops@army.mil", "typo-guard-4")  # the client's retry
    assert code == 250, text
    wait_for("delivery after the guard is fixed", lambda: remote_got(lab, "army.mil", "typo-guard-4"),
             timeout=60)


# --- Release by reply: the notice's Reply-To releases the message ------------------
BOB_MAILDIR = f"/var/vmail/{DOMAIN}/bob/Maildir"
REPLY_RE = re.compile(r"^Reply-To: (release\+([0-9A-Za-z]+)-([a-z2-7]{16})@release\.example\.test)$",
                      re.MULTILINE)


def submit_as(lab: MailLab, user: str, pw: str, rcpt: str, subject: str, body: str) -> tuple[int, str]:
    """`user` submits one message on 587 from the LAN client: (SMTP code, text)."""
    code = f"""
import smtplib, ssl
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP({APP_IP!r}, 587, timeout=30); s.starttls(context=ctx); s.login({user!r}, {pw!r})
try:
    s.sendmail({user!r}, [{rcpt!r}], 'Subject: {subject}\\r\\nTo: {rcpt}\\r\\n\\r\\n{body}\\r\\n')
    print(250, 'ok')
except smtplib.SMTPRecipientsRefused as e:
    (c, t), = e.recipients.values(); print(c, t.decode())
except smtplib.SMTPResponseException as e:
    print(e.smtp_code, e.smtp_error.decode())
s.quit()
"""
    r = lab.lan2.python(code, timeout=60)
    assert r.returncode == 0, r.stderr
    c, _, text = r.stdout.strip().partition(" ")
    return int(c), text


def rcpt_code(host: object, ip: str, rcpt: str) -> tuple[int, str]:
    """Port 25, no AUTH: (code, text) of RCPT TO."""
    code = f"""
import smtplib
s = smtplib.SMTP({ip!r}, 25, timeout=30); s.ehlo('client.test'); s.mail({ALICE!r})
c, t = s.rcpt({rcpt!r}); print(c, t.decode()); s.quit()
"""
    r = host.python(code, timeout=60)  # type: ignore[attr-defined]
    assert r.returncode == 0, r.stderr
    c, _, text = r.stdout.strip().partition(" ")
    return int(c), text


def mail_with(lab: MailLab, maildir: str, *needles: str) -> str:
    for p in lab.maildir_files(lab.app, maildir):
        t = p.read_text(errors="replace")
        if all(n in t for n in needles):
            return t
    return ""


def test_reply_to_the_notice_releases_only_for_its_sender(guarded: MailLab) -> None:
    from .mail_lab import BOB_LOCAL, BOB_PW, WAN_IP

    lab = guarded
    code, text = submit(lab, "ops@army.ml", "typo-guard-reply-1")
    assert code == 250, text

    def held() -> list[dict]:
        return [q for q in queue(lab) if q["queue_name"] == "hold"
                and any(r["address"] == "ops@army.ml" for r in q["recipients"])]

    wait_for("the message in the hold queue", lambda: bool(held()), timeout=20)
    qid = held()[0]["queue_id"]
    wait_for("alice's notice with a reply address",
             lambda: bool(REPLY_RE.search(mail_with(lab, ALICE_MAILDIR, "Held: your message", qid))),
             timeout=30)
    notice = mail_with(lab, ALICE_MAILDIR, "Held: your message", qid)
    m = REPLY_RE.search(notice)
    assert m and m.group(2) == qid, notice
    reply_to, token = m.group(1), m.group(3)
    assert reply_to in notice.split("\n\n", 1)[1]  # the body says where a reply goes

    # Bob, though logged in on 587, cannot release alice's message with her address.
    code, text = submit_as(lab, BOB_LOCAL, BOB_PW, reply_to, "Re: held", "reply-marker-bob")
    assert code == 250, text
    wait_for("bob told why nothing was released",
             lambda: bool(mail_with(lab, BOB_MAILDIR, f"Not released: message {qid}")), timeout=30)
    assert f"only {ALICE}" in mail_with(lab, BOB_MAILDIR, f"Not released: message {qid}")
    # A wrong token, from alice herself: nothing released, alice told.
    wrong = reply_to.replace(f"-{token}@", "-" + ("a" if token[0] != "a" else "b") + token[1:] + "@")
    code, text = submit_as(lab, ALICE, ALICE_PW, wrong, "Re: held", "reply-marker-wrong")
    assert code == 250, text
    wait_for("alice told the address is not valid",
             lambda: bool(mail_with(lab, ALICE_MAILDIR, f"Not released: message {qid}", "not valid")),
             timeout=30)
    # From the internet (port 25 through the router) and from the box itself on port 25: refused.
    c, t = rcpt_code(lab.mx, WAN_IP, reply_to)
    assert 500 <= c < 600, (c, t)
    c, t = rcpt_code(lab.app, "127.0.0.1", reply_to)
    assert c == 550 and "587 or 465" in t, (c, t)
    assert [q["queue_id"] for q in held()] == [qid]
    assert not remote_got(lab, "army.ml", "typo-guard-reply-1")

    # Alice replies to the notice: released, delivered to the remote MX, confirmed to her.
    code, text = submit_as(lab, ALICE, ALICE_PW, reply_to, "Re: held", "reply-marker-alice")
    assert code == 250, text
    wait_for("delivery to army.ml after the reply",
             lambda: remote_got(lab, "army.ml", "typo-guard-reply-1"), timeout=60)
    wait_for("alice's confirmation", lambda: bool(mail_with(lab, ALICE_MAILDIR, "Released:", qid)),
             timeout=30)
    assert not held()
    # The replies themselves were never stored in a mailbox, never sent on, and none is queued.
    for host, base in ((lab.app, f"/var/vmail/{DOMAIN}"), (lab.mx, "/var/vmail")):
        out = host.run(["grep", "-rl", "reply-marker-", base], check=False).stdout
        assert out == "", out
    with contextlib.suppress(TimeoutError):
        wait_for("the queue empty", lambda: not queue(lab), timeout=30)
    assert not queue(lab), (queue(lab), lab.app.read("/var/log/appliance-release.log"))


RELEASE_PID = "/run/appliance-release.pid"


def start_release_agent(lab: MailLab) -> None:
    """Start the release agent the way the agent does without an init system."""
    r = lab.app.run([sys.executable, "-m", "appliance.features.privacy.release_agent",
                     "--daemon", RELEASE_PID,
                     "--log", "/var/log/appliance-release.log"], check=False,
                    env={"PYTHONPATH": str(lab.repo)})
    assert r.returncode == 0, r.stderr
    wait_for("the release agent's socket",
             lambda: lab.app.path("/var/spool/postfix/private/appliance-release").is_socket(),
             timeout=10)


def test_reply_while_the_release_agent_is_down_is_deferred_then_releases(guarded: MailLab) -> None:
    """A failing release handler defers the reply (Postfix keeps it and retries): no bounce, no
    release, nothing lost; once the agent is back the queued reply releases the message."""
    lab = guarded
    code, text = submit(lab, "ops@army.ml", "typo-guard-reply-2")
    assert code == 250, text
    wait_for("the message in the hold queue",
             lambda: any(q["queue_name"] == "hold" for q in queue(lab)), timeout=20)
    qid = next(q["queue_id"] for q in queue(lab) if q["queue_name"] == "hold")
    wait_for("alice's notice with a reply address",
             lambda: REPLY_RE.search(mail_with(lab, ALICE_MAILDIR, "Held: your message", qid)),
             timeout=30)
    m = REPLY_RE.search(mail_with(lab, ALICE_MAILDIR, "Held: your message", qid))
    assert m
    pid = int(lab.app.read(RELEASE_PID).split()[0])
    lab.app.run(["kill", str(pid)])
    try:
        wait_for("the release agent stopped",
                 lambda: lab.app.run(["kill", "-0", str(pid)], check=False).returncode != 0, timeout=10)
        lab.app.run(["rm", "-f", "/var/spool/postfix/private/appliance-release"])
        code, text = submit_as(lab, ALICE, ALICE_PW, m.group(1), "Re: held", "reply-marker-later")

        def reply_deferred() -> bool:
            return any(q["queue_name"] == "deferred" and q["recipients"]
                       and q["recipients"][0]["address"] == m.group(1) for q in queue(lab))

        assert code == 250, text
        wait_for("the reply deferred", reply_deferred, timeout=30)
        assert [q["queue_id"] for q in queue(lab) if q["queue_name"] == "hold"] == [qid]
        assert not mail_with(lab, ALICE_MAILDIR, "Undelivered Mail")  # no bounce
    finally:
        start_release_agent(lab)
    lab.app.run(["postqueue", "-f"])
    wait_for("delivery to army.ml once the agent is back",
             lambda: remote_got(lab, "army.ml", "typo-guard-reply-2"), timeout=60)
    wait_for("alice's confirmation", lambda: bool(mail_with(lab, ALICE_MAILDIR, "Released:", qid)),
             timeout=30)
