"""Every wrong password on the submission ports counts toward fail2ban's maxretry, however long
Dovecot takes to refuse it, against the real Postfix, Dovecot and fail2ban in the lab.

A bot on the internet side (203.0.113.5) guesses alice's password over several connections at
once on 587 and 465. Postfix waits a fixed 10 s for Dovecot's verdict and answers 454 when it
does not come; Dovecot's per-address penalty (kept: it slows guessing until the ban) makes the
later guesses of a burst wait longer than that, and those 454s went uncounted, so the ban came
late or not at all.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from .mail_lab import ALICE, WAN_IP, MailLab, settings_toml
from .netlab import wait_for
from .test_lan_defence import banned, port_open, settle_unban

BOT_IP = "203.0.113.5"
MAXRETRY = 10
GUESSERS = 4  # connections at once


@pytest.fixture(scope="module")
def guarded(lab: MailLab) -> Iterator[MailLab]:
    if "bot" not in lab.lab.hosts:
        lab.bot = lab.lab.host("bot")
        lab.lab.link("bot", "eth0", "inet", "i-bot", a_addr=f"{BOT_IP}/24", b_master="br-wan")
        lab.lab.ns_exec("bot", "ip", "route", "add", "default", "via", "203.0.113.254")
    lab.write_settings(settings_toml(lab.users, f"""
[fail2ban]
maxretry = {MAXRETRY}
findtime = 600
bantime = 60
"""))
    r = lab.appliance("apply")
    assert r.returncode == 0, r.stdout + r.stderr
    try:
        yield lab
    finally:
        settle_unban(lab, BOT_IP)
        lab.write_settings(settings_toml(lab.users, getattr(lab, "settings_extra", "")))
        lab.appliance("apply")


def guess_code(n: int, workers: int) -> str:
    """n AUTH PLAIN attempts for alice, each with another wrong password on a new connection
    (odd: 587 with STARTTLS, even: 465), `workers` at a time. Prints one line per attempt:
    the reply code, or "error" when the connection failed."""
    return f"""
import base64, smtplib, ssl, threading
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
todo = list(range(1, {n} + 1)); lock = threading.Lock(); out = []
def guesser():
    while True:
        with lock:
            if not todo:
                return
            i = todo.pop(0)
        try:
            if i % 2:
                s = smtplib.SMTP({WAN_IP!r}, 587, timeout=30); s.starttls(context=ctx)
            else:
                s = smtplib.SMTP_SSL({WAN_IP!r}, 465, timeout=30, context=ctx)
            s.ehlo('bot.invalid')
            token = base64.b64encode(('\\0' + {ALICE!r} + '\\0guess-%d' % i).encode()).decode()
            out.append(str(s.docmd('AUTH', 'PLAIN ' + token)[0]))
            s.close()
        except Exception:
            out.append('error')
ts = [threading.Thread(target=guesser) for _ in range({workers})]
[t.start() for t in ts]; [t.join(100) for t in ts]
print(' '.join(sorted(out)))
"""


def found(lab: MailLab, offset: int) -> int:
    """fail2ban's failures counted for the bot in the postfix jail since `offset`."""
    log = lab.app.read("/var/log/fail2ban.log")[offset:]
    return len(re.findall(rf"\[postfix\] Found {re.escape(BOT_IP)} ", log))


def test_every_refused_smtp_guess_counts_and_the_bot_is_banned_at_maxretry(guarded: MailLab) -> None:
    lab = guarded
    assert port_open(lab.bot, WAN_IP, 587)
    offset = len(lab.app.read("/var/log/fail2ban.log"))
    start = time.monotonic()
    r = lab.bot.python(guess_code(MAXRETRY, GUESSERS), timeout=150)
    assert r.returncode == 0, r.stderr
    replies = r.stdout.split()
    # Every guess was refused (535, or 454 when Postfix gave up waiting), none got through, and
    # none was cut by a ban: the ban may only come with the last one.
    assert len(replies) == MAXRETRY and set(replies) <= {"454", "535"}, replies
    # fail2ban counted each of them, and banned the bot at the last: exactly maxretry.
    try:
        wait_for("the bot banned", lambda: BOT_IP in banned(lab), timeout=20)
    except TimeoutError:
        pytest.fail(f"not banned: fail2ban counted {found(lab, offset)} of {MAXRETRY} refused "
                    f"guesses (replies {replies})")
    assert found(lab, offset) == MAXRETRY, (found(lab, offset), replies)
    assert banned(lab)[BOT_IP][0] == "postfix"
    log = lab.app.read("/var/log/fail2ban.log")[offset:]
    assert re.search(rf"\[postfix\] Ban {re.escape(BOT_IP)}$", log, re.M), "no Ban line in fail2ban.log"
    for port in (587, 465):
        assert not port_open(lab.bot, WAN_IP, port), f"port {port} open to a banned address"
    # Bounded: Postfix gives up on Dovecot after 10 s, so no guess waits longer than that.
    assert time.monotonic() - start < 120
