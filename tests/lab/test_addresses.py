"""Addresses beyond the users' own, and filters the user edits from a mail program, against the
real Postfix, Dovecot (LMTP, ManageSieve) and Pigeonhole in the lab: plus addressing (and its
folders), the catch-all, and a Sieve script uploaded with Debian's sieve-connect."""

from __future__ import annotations

import json
import shutil
import uuid

import pytest

from .mail_lab import (
    ALICE,
    ALICE_PW,
    APP_IP,
    BOB_LOCAL,
    DOMAIN,
    MAIL_HOST,
    REMOTE_USER,
    WAN_IP,
    MailLab,
    well_formed,
)
from .netlab import wait_for

CA = "/etc/appliance-lab-ca.pem"
ALICE_DIR = f"/var/vmail/{DOMAIN}/alice/Maildir"
BOB_DIR = f"/var/vmail/{DOMAIN}/bob/Maildir"


def send(lab: MailLab, rcpt: str, subject: str, kib: int = 0) -> str:
    """The remote domain's MX hands one message to the box (through the router, port 25); with
    `kib`, of about that size, its body made there (too big for a command line); -> the box's
    reply to RCPT TO."""
    message = well_formed(REMOTE_USER, rcpt, subject, **({"body": ""} if kib else {}))
    r = lab.mx.python(f"""
import smtplib
body = ''.join(f'{{"line %07d of a long report that fills the mailbox" % n:<78}}\\r\\n'
               for n in range({kib} * 1024 // 80))  # 80 bytes each
s = smtplib.SMTP({WAN_IP!r}, 25, timeout=120)
s.ehlo('mx.remote.test')
s.mail({REMOTE_USER!r})
code, text = s.rcpt({rcpt!r})
print(code, text.decode())
if code == 250:
    s.data({message!r} + body)
s.quit()""", timeout=180)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def in_folder(lab: MailLab, maildir: str, tag: str) -> bool:
    return any(tag in p.read_text(errors="replace") for p in lab.maildir_files(lab.app, maildir))


def wait_in(lab: MailLab, maildir: str, tag: str) -> None:
    try:
        wait_for(f"{tag} in {maildir}", lambda: in_folder(lab, maildir, tag), timeout=60)
    except TimeoutError:
        pytest.fail(lab.app.read("/var/log/mail.log")[-2500:] + lab.app.read("/var/log/dovecot.log")[-2500:])


@pytest.fixture
def restore(lab: MailLab):
    good = lab.app.read("/etc/appliance/settings.toml")
    yield
    lab.write_settings(good)
    assert lab.appliance("apply").returncode == 0


def test_a_tagged_address_reaches_the_user_and_her_folder_for_the_tag(lab: MailLab, restore: None) -> None:
    tag = uuid.uuid4().hex[:10]
    # On by default: alice+shop@ is alice's, in her Inbox while she has no folder "shop".
    assert send(lab, f"alice+shop@{DOMAIN}", f"plus {tag}").startswith("250")
    wait_in(lab, ALICE_DIR, f"plus {tag}")
    r = lab.appliance("set", "mail.tag_folders=true")
    assert r.returncode == 0, r.stdout + r.stderr
    lab.app.run(["doveadm", "mailbox", "create", "-u", ALICE, "shop"])
    assert send(lab, f"alice+shop@{DOMAIN}", f"foldered {tag}").startswith("250")
    wait_in(lab, f"{ALICE_DIR}/.shop", f"foldered {tag}")
    # Never into a special folder: a stranger's mail to alice+Trash@ is not deleted unseen.
    assert send(lab, f"alice+Trash@{DOMAIN}", f"not trash {tag}").startswith("250")
    wait_in(lab, ALICE_DIR, f"not trash {tag}")
    assert not in_folder(lab, f"{ALICE_DIR}/.Trash", f"not trash {tag}")
    # A tag without a folder makes none (a spammer's invented tags would fill her folder list).
    assert send(lab, f"alice+invented@{DOMAIN}", f"no folder {tag}").startswith("250")
    wait_in(lab, ALICE_DIR, f"no folder {tag}")
    assert not lab.app.exists(f"{ALICE_DIR}/.invented")
    # Off: the tagged address is unknown like any other.
    r = lab.appliance("set", "mail.plus_addressing=false")
    assert r.returncode == 0, r.stdout + r.stderr
    said = send(lab, f"alice+shop@{DOMAIN}", f"off {tag}")
    assert said.startswith("550"), said


def test_the_catch_all_takes_unknown_addresses_only_and_status_counts_them(lab: MailLab,
                                                                           restore: None) -> None:
    tag = uuid.uuid4().hex[:10]
    assert send(lab, f"sales-{tag}@{DOMAIN}", f"before {tag}").startswith("550")  # off by default
    r = lab.appliance("set", f"mail.catch_all={BOB_LOCAL}")
    assert r.returncode == 0, r.stdout + r.stderr
    assert send(lab, f"sales-{tag}@{DOMAIN}", f"caught {tag}").startswith("250")
    wait_in(lab, BOB_DIR, f"caught {tag}")
    assert send(lab, ALICE, f"own {tag}").startswith("250")  # alice's own mail stays hers
    wait_in(lab, ALICE_DIR, f"own {tag}")
    assert not in_folder(lab, BOB_DIR, f"own {tag}")
    r = lab.appliance("status", "--json")
    [row] = [x for x in json.loads(r.stdout) if x["name"] == "catch-all"]
    assert f"sales-{tag}@{DOMAIN} (1)" in row["detail"] and row["detail"].startswith(f"on, to {BOB_LOCAL}")
    # A catch-all that is not a user: refused, named, nothing changed.
    before = lab.app.read("/etc/postfix/virtual")
    r = lab.appliance("set", f"mail.catch_all=nobody@{DOMAIN}")
    assert r.returncode == 2 and "is not one of the users' addresses" in r.stderr
    assert lab.app.read("/etc/postfix/virtual") == before


def sieve_connect(lab: MailLab, *args: str, password: str = ALICE_PW, ok: bool = True) -> str:
    if not shutil.which("sieve-connect"):
        pytest.fail("sieve-connect (Debian package) is missing; `make test` installs it")
    lab.lan2.write(CA, lab.appliance_cert())
    r = lab.lan2.run(["sieve-connect", "--server", MAIL_HOST, "--port", "4190", "--user", ALICE,
                      "--passwordfd", "0", "--tlscafile", CA, "--noclearauth", *args],
                     check=False, timeout=60, input=password + "\n")
    assert (r.returncode == 0) == ok, r.stdout + r.stderr
    return r.stdout + r.stderr


def test_a_filter_uploaded_over_managesieve_files_mail_into_a_folder(lab: MailLab) -> None:
    tag = uuid.uuid4().hex[:10]
    lab.lan2.write("/var/tmp/receipts.sieve", 'require ["fileinto", "mailbox"];\n'
                   f'if header :contains "subject" "receipt {tag}" {{\n'
                   '  fileinto :create "Receipts";\n  stop;\n}\n')
    try:
        sieve_connect(lab, "--upload", "--localsieve", "/var/tmp/receipts.sieve", "--remotesieve", "receipts")
        sieve_connect(lab, "--activate", "--remotesieve", "receipts")
        assert "receipts" in sieve_connect(lab, "--list")
        assert send(lab, ALICE, f"receipt {tag}").startswith("250")
        wait_in(lab, f"{ALICE_DIR}/.Receipts", f"receipt {tag}")
        assert send(lab, ALICE, f"other {tag}").startswith("250")  # the rest: the Inbox
        wait_in(lab, ALICE_DIR, f"other {tag}")
    finally:
        sieve_connect(lab, "--deactivate")
        sieve_connect(lab, "--delete", "--remotesieve", "receipts")


def test_a_device_password_opens_managesieve_and_a_wrong_one_does_not(lab: MailLab,
                                                                       restore: None) -> None:
    r = lab.appliance("user", "app-password", "add", ALICE, "Laptop", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    sieve_connect(lab, "--list", password=json.loads(r.stdout)["password"])
    sieve_connect(lab, "--list", password="not-her-password", ok=False)


def test_managesieve_offers_no_login_before_starttls(lab: MailLab) -> None:
    r = lab.lan2.python(f"""
import socket
s = socket.create_connection(({APP_IP!r}, 4190), timeout=10)
data = b''
while b'\\r\\nOK' not in data:
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
print(data.decode())""")
    assert '"STARTTLS"' in r.stdout, r.stdout
    assert '"SASL" ""' in r.stdout or '"SASL"' not in r.stdout, r.stdout  # no mechanism in clear


def test_managesieve_answers_from_the_internet_through_the_router(lab: MailLab) -> None:
    assert lab.tcp_open(lab.att, WAN_IP, 4190)


def used_kib(lab: MailLab, user: str) -> tuple[int, int]:
    out = lab.app.run(["doveadm", "-f", "tab", "quota", "get", "-u", user]).stdout
    [row] = [x.split("\t") for x in out.splitlines() if "\tSTORAGE\t" in x]
    return int(row[2]), int(row[3])  # name, type, used, limit (KiB)


def test_a_full_mailbox_warns_its_user_defers_senders_and_others_still_get_mail(
        lab: MailLab, restore: None) -> None:
    tag = uuid.uuid4().hex[:10]
    text = lab.app.read("/etc/appliance/settings.toml")
    lab.write_settings(text.replace(f'address = "{BOB_LOCAL}"', f'address = "{BOB_LOCAL}"\nquota_mb = 10'))
    r = lab.appliance("apply")
    assert r.returncode == 0, r.stdout + r.stderr
    used, limit = used_kib(lab, BOB_LOCAL)
    assert limit == 10 * 1024
    # Past 80 %, then past 95 %: Dovecot mails bob each time (through Postfix).
    for share, subject in ((0.83, f"big {tag}"), (0.96, f"bigger {tag}")):
        need = int(share * limit) - used_kib(lab, BOB_LOCAL)[0]
        assert send(lab, BOB_LOCAL, subject, kib=need).startswith("250")
        wait_in(lab, BOB_DIR, subject)
    for pct in (80, 95):
        wait_in(lab, BOB_DIR, f"Subject: Your mailbox is {pct}% full")
    # Still under: the last message may go over by Dovecot's grace (10 %); then he is full.
    assert send(lab, BOB_LOCAL, f"last {tag}", kib=int(0.07 * limit)).startswith("250")
    wait_in(lab, BOB_DIR, f"last {tag}")
    assert used_kib(lab, BOB_LOCAL)[0] > limit
    said = send(lab, BOB_LOCAL, f"refused {tag}", kib=4)
    assert said.startswith("452 4.2.2"), said  # the sender's server keeps it and retries
    assert send(lab, ALICE, f"alice still {tag}").startswith("250")
    wait_in(lab, ALICE_DIR, f"alice still {tag}")
    rows = {x["name"]: x for x in json.loads(lab.appliance("status", "--json").stdout)}
    assert rows[f"mailbox {BOB_LOCAL}"]["status"] == "fail", rows[f"mailbox {BOB_LOCAL}"]
    assert rows[f"mailbox {ALICE}"]["status"] == "ok"
