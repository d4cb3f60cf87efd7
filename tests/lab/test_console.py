"""The console as a newcomer meets it: a fresh box (no settings), the note on its card, a real
Chromium on another LAN host, and mail that works at the end of the wizard.

The lab stands in only for what cannot run here: systemd (the agent, the web process and the
console's nginx are started by hand, as their units would), the boot partition (a directory in
the box's private /var) and the internet (the lab's namespaces).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import console_lab
from .browser import Browser
from .conftest import REPO
from .console_lab import BOOT, CONSOLE
from .mail_lab import (
    ALICE,
    ALICE_PW,
    APP_IP,
    DOMAIN,
    MAIL_HOST,
    PLAIN_BODY,
    REMOTE,
    REMOTE_USER,
    WAN_IP,
    MailLab,
)
from .netlab import wait_for
from .test_mail import imap_fetch_code, trust_appliance_cert

SHOTS = REPO / "build/screenshots"
ADMIN_PW = "console admin pw 1"


class Box:
    """The fresh box with its console running, and a browser on the LAN."""

    def __init__(self, m: MailLab) -> None:
        self.m = m
        cert = console_lab.start(m)
        self.browser = Browser.start(m.lan2, m.workdir / "chromium", console_lab.spki(cert),
                                     m.lab.logs / "lan2-browser.out")

    def shot(self, name: str) -> None:
        self.browser.shot(SHOTS / f"console-{name}.png")

    def settings(self) -> str:
        return self.m.app.read("/etc/appliance/settings.toml")


@pytest.fixture(scope="module")
def box() -> Iterator[Box]:
    m = MailLab(Path(tempfile.mkdtemp(prefix="mail-appliance-lab.")), REPO, configured=False)
    try:
        m.up()
        b = Box(m)
        try:
            yield b
        finally:
            b.browser.close()
    finally:
        m.down()
        if os.environ.get("LAB_KEEP_LOGS"):
            print(f"lab logs kept in {m.workdir}")
        else:
            shutil.rmtree(m.workdir, ignore_errors=True)


def note_on_card(box: Box) -> str:
    raw = box.m.app.path(f"{BOOT}/appliance-setup.txt").read_bytes()
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")  # Notepad reads it
    return raw.decode().replace("\r\n", "\n")


def test_the_card_names_the_console_a_code_and_the_fingerprint_the_browser_gets(box: Box) -> None:
    note = note_on_card(box)
    assert f"{CONSOLE}/" in note
    code = re.search(r"Setup code: ([A-Z0-9]{4}-[A-Z0-9]{4})", note)
    assert code, note
    # The same note on every boot, with the same code (it is on the card and on the screen).
    again = box.m.appliance("console", "setup", "--boot-dir", BOOT)
    assert code.group(1) in again.stdout and note_on_card(box) == note
    fp = re.search(r"fingerprint:\s+([0-9A-F:]{95})", note)
    assert fp, note
    # What a browser on the LAN is actually served matches the note.
    r = box.m.lan2.python(f"""
import hashlib, ssl, socket
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
with socket.create_connection(({APP_IP!r}, 8443), timeout=10) as s:
    with ctx.wrap_socket(s) as t:
        d = hashlib.sha256(t.getpeercert(binary_form=True)).hexdigest().upper()
print(':'.join(d[i:i+2] for i in range(0, 64, 2)))""")
    assert r.stdout.strip() == fp.group(1), r.stderr


def test_a_wrong_setup_code_opens_nothing(box: Box) -> None:
    b = box.browser
    b.get(f"{CONSOLE}/")
    assert b.url().endswith("/setup")
    b.fill({"code": "ABCD-EFGH"})
    b.submit()
    text = b.text()
    assert "appliance-setup.txt" in text and b.url().endswith("/setup")
    box.shot("1-setup-code-wrong")
    assert not box.m.app.exists("/etc/appliance/settings.toml")


def test_a_newcomer_sets_the_box_up_in_the_browser_and_mail_arrives(box: Box) -> None:
    b = box.browser
    code = re.search(r"Setup code: (\S+)", note_on_card(box))
    assert code
    b.get(f"{CONSOLE}/")
    b.fill({"code": code.group(1).lower()})  # as a person might type it
    box.shot("2-setup-code")
    b.submit()
    assert b.url().endswith("/setup/wizard"), b.text()
    box.shot("3-wizard")
    # A bad domain is named on the page and writes nothing.
    b.fill({"domain": "not a domain", "user": "alice", "password": ALICE_PW, "confirm": ALICE_PW,
            "admin_password": ADMIN_PW, "admin_confirm": ADMIN_PW})
    b.submit()
    text = b.text()
    assert '"not a domain" is not a domain name' in text and b.url().endswith("/setup/wizard")
    assert "users[0]" not in text  # only what the person typed is named
    box.shot("3b-wizard-bad-domain")
    assert not box.m.app.exists("/etc/appliance/settings.toml")
    b.fill({"domain": DOMAIN, "hostname": MAIL_HOST, "user": "alice", "password": ALICE_PW,
            "confirm": ALICE_PW, "admin_password": ADMIN_PW, "admin_confirm": ADMIN_PW})
    b.submit()
    assert "/progress/" in b.url()
    box.shot("4-progress")
    # The first apply starts every daemon on this small lab host; bounded, polled by the page.
    text = b.wait_text("Your box is set up", timeout=400)
    box.shot("5-set-up")
    assert "Setting up stopped" not in text
    box.m.track_daemons()
    assert f'domain = "{DOMAIN}"' in box.settings() and ALICE in box.settings()
    # The setup code opens nothing any more.
    assert not box.m.app.exists("/var/lib/appliance/console/setup-code")
    assert "Setup code" not in box.m.appliance("console", "setup", "--boot-dir", BOOT).stdout
    # Mail from the internet reaches alice, who reads it with the password she chose.
    box.m.deliver_to_alice("first mail after the wizard")
    trust_appliance_cert(box.m, box.m.lan2)
    r = box.m.lan2.python(imap_fetch_code(ALICE, ALICE_PW, "first mail after the wizard"), timeout=120)
    assert r.returncode == 0 and "first mail after the wizard" in r.stdout, r.stderr


def test_the_administrator_sees_status_and_dns_and_adds_a_user(box: Box) -> None:
    b = box.browser
    b.get(f"{CONSOLE}/status")
    if b.url().endswith("/login"):
        b.fill({"user": "admin", "password": ADMIN_PW})
        b.submit()
        b.get(f"{CONSOLE}/status")
    text = b.text()
    assert "Status" in text and "admin" in text
    assert "DNS records" in text and "Your DNS records →" in text  # where a person fixes them
    box.shot("6-status")
    b.get(f"{CONSOLE}/dns")
    text = b.text()
    assert f"{DOMAIN}" in text and "MX" in text and MAIL_HOST in text
    # Each record as the lab's DNS server serves it now: the MX is there, the DKIM record
    # (made at setup) is not yet; the page says which.
    b.submit("#dns-check button")
    summary = b.call("js", code="return document.getElementById('dns-summary').innerText")
    assert re.search(r"\d+ of \d+ records as they should be", summary), summary
    mx = b.call("js", code="return [...document.querySelectorAll('.record')].find("
                "r => r.innerText.startsWith('MX')).className")
    assert mx == "record ok", mx
    assert "missing or wrong" in b.text()
    box.shot("7-dns")
    b.get(f"{CONSOLE}/users")
    b.fill({"address": "carol", "password": "carol-secret-1", "confirm": "carol-secret-1"},
           within="#add-user")
    b.submit("#add-user button[type=submit]")
    assert f"carol@{DOMAIN}" in b.text()
    box.shot("8-users")
    # The second factor's page: the QR code shows in a real browser under the strict CSP (an
    # image the page could not draw would be a blank box); not confirmed, nothing changes.
    b.get(f"{CONSOLE}/security")
    b.submit("#totp-begin button[type=submit]")
    assert "Scan this with an authenticator app" in b.text()
    assert b.call("js", code="const i = document.querySelector('img.qr'); "
                  "return i.complete && i.naturalWidth > 0") is True
    box.shot("8b-security")
    assert f"carol@{DOMAIN}" in box.settings()
    # carol's password works in Dovecot at once (the edit applied).
    assert imap_login(box, f"carol@{DOMAIN}", "carol-secret-1") == "OK"


def test_the_administrator_makes_a_device_password_for_a_user_and_revokes_it(box: Box) -> None:
    """Users: a password for carol's phone, shown once; it opens IMAP; revoked, it does not."""
    b = box.browser
    b.get(f"{CONSOLE}/users")
    carol = f"carol@{DOMAIN}"
    b.call("js", code=f"document.querySelector('form[data-for=\"{carol}\"]')"
                      ".closest('details').open = true")
    b.fill({"name": "Carol's phone"}, within=f'form[data-for="{carol}"]')
    b.submit(f'form[data-for="{carol}"] button[type=submit]')
    text = b.text()
    assert "Password for “Carol's phone”" in text and "shown only now" in text
    secret = b.call("js", code="return document.getElementById('app-password').textContent")
    assert secret and secret not in box.settings()
    box.shot("8c-users-app-password")
    assert imap_login(box, carol, secret) == "OK"
    b.get(f"{CONSOLE}/users")
    b.call("js", code=f"document.querySelector('form[data-for=\"{carol}\"]')"
                      ".closest('details').open = true")
    assert "from 198.18.0.20" in b.text()  # its last use: the LAN client that logged in
    b.submit('button[aria-label="revoke Carol\'s phone"]')
    assert "revoked the app password" in b.text()
    assert imap_login(box, carol, secret).startswith("NO")
    assert imap_login(box, carol, "carol-secret-1") == "OK"  # her own is untouched


def test_the_administrator_changes_a_setting_and_the_box_follows(box: Box) -> None:
    """Settings: one section's form is one `appliance set`: the file keeps its comments and
    gets the value, the apply renders it; a bad value is named and changes nothing; a value
    written in the file by hand is what the page shows next."""
    b = box.browser
    b.get(f"{CONSOLE}/settings")
    b.fill({"messages_per_hour": "150"}, within="#limits")
    b.submit("#limits button[type=submit]")
    assert "saved and applied: limits.messages_per_hour" in b.text()
    assert "messages_per_hour = 150" in box.settings()
    assert "messages_per_hour = 150" in box.m.app.read("/etc/appliance/limits.conf")
    box.shot("8d-settings")
    before = box.settings()
    b.fill({"messages_per_hour": "lots"}, within="#limits")
    b.submit("#limits button[type=submit]")
    assert 'limits.messages_per_hour: "lots"' in b.text() and box.settings() == before
    box.m.write_settings(before.replace("messages_per_hour = 150", "messages_per_hour = 175"))
    b.get(f"{CONSOLE}/settings")
    got = b.call("js", code="return document.getElementById('limits-messages_per_hour').value")
    assert got == "175"


def test_the_administrator_sees_the_certificate_and_rolls_the_dkim_key_over(box: Box) -> None:
    """Keys: what `appliance cert show` and `dkim show` say; a new DKIM key is made and its
    record shown; signing with it before the record is published is refused, in words."""
    b = box.browser
    b.get(f"{CONSOLE}/keys")
    text = b.text()
    assert f"{MAIL_HOST}: self-signed" in text and "days left" in text
    signing = re.search(r"Signing with ([\w-]+)", text)
    assert signing and signing.group(1) != "no", text
    b.submit("#dkim button[value=rollover]")
    text = b.text()
    assert "made a new key, selector" in text and "waits for its DNS record" in text
    box.shot("8e-keys")
    b.submit("#dkim button[value=activate]")
    text = b.text()
    assert "is not published with the new key yet" in text
    assert f"Signing with {signing.group(1)}" in text  # unchanged


def imap_login(box: Box, user: str, pw: str) -> str:
    r = box.m.lan2.python(f"""
import imaplib, ssl
ctx = ssl.create_default_context(cafile='/etc/appliance-lab-ca.pem')
M = imaplib.IMAP4_SSL({MAIL_HOST!r}, 993, ssl_context=ctx, timeout=10)
try:
    print(M.login({user!r}, {pw!r})[0])
except imaplib.IMAP4.error as e:
    print("NO", e)""", timeout=60)
    return r.stdout.strip()


def test_the_connection_page_gives_the_verdict_and_lifts_a_ban(box: Box) -> None:
    """The reachability verdict in words, and a ban lifted from the page: the address reaches
    the mail port again (a ban fail2ban itself made, for the attacker host on the WAN)."""
    from .mail_lab import ATT_IP

    m = box.m
    r = m.app.run(["fail2ban-client", "set", "dovecot", "banip", ATT_IP], check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    wait_for("the ban closes port 25", lambda: not m.tcp_open(m.att, WAN_IP, 25), timeout=15)
    b = box.browser
    b.get(f"{CONSOLE}/connection")
    text = b.text()
    assert "Can the internet reach the box?" in text and ATT_IP in text
    box.shot("12a-connection")
    b.submit("#bans button[type=submit]")
    assert f"unbanned {ATT_IP}" in b.text() and "Nobody is banned" in b.text()
    wait_for("port 25 open again", lambda: m.tcp_open(m.att, WAN_IP, 25), timeout=15)


def test_the_administrator_backs_up_and_keeps_the_recovery_sheet(box: Box) -> None:
    """Backups on (in the file, as the README's advanced path does), then only the browser:
    the Backups page, a backup now with its progress, the recovery sheet with its QR code,
    and "I have kept it" turns the status reminder into OK."""
    text = box.settings()
    box.m.write_settings(text + '\n[backup]\nenabled = true\nrepository = "/var/backups/appliance"\n')
    r = box.m.appliance("apply")
    assert r.returncode == 0, r.stdout + r.stderr
    b = box.browser
    b.get(f"{CONSOLE}/backups")
    page = b.text()
    assert "Every night to /var/backups/appliance" in page and "no backup has run yet" in page
    b.submit("#backup-now button[type=submit]")
    page = b.wait_text("Backed up", timeout=180)
    assert "The backup failed" not in page
    b.get(f"{CONSOLE}/backups")
    assert "backup: snapshot" in b.text()
    b.get(f"{CONSOLE}/backups/sheet")
    sheet = b.text()
    password = box.m.app.read("/etc/appliance/backup.password").splitlines()[0]
    assert "MAIL APPLIANCE RECOVERY SHEET" in sheet and f'password = "{password}"' in sheet
    assert b.call("js", code="const i = document.querySelector('img.qr'); "
                  "return i.complete && i.naturalWidth > 0") is True
    box.shot("12-recovery-sheet")
    b.submit("#sheet-kept button[type=submit]")
    assert "you keep the recovery sheet" in b.text()
    box.shot("13-backups")


def test_the_console_and_the_settings_file_say_the_same(box: Box) -> None:
    """One source of truth: a console edit lands in settings.toml (comments kept, through the
    CLI's tomlkit path); a hand edit of the file shows at the next page load; a bad value is
    named and changes nothing."""
    b = box.browser
    b.get(f"{CONSOLE}/users")
    b.fill({"alias": "sales"}, within="#add-alias")
    b.submit("#add-alias button[type=submit]")
    text = box.settings()
    assert "Written by the setup wizard" in text  # the file's comments survive console edits
    import tomllib

    users = {u["address"]: u for u in tomllib.loads(text)["users"]}
    assert users[ALICE].get("aliases") == [f"sales@{DOMAIN}"]
    # A bad alias: the CLI's own message names it, the file does not change.
    b.fill({"alias": "x y"}, within="#add-alias")
    b.submit("#add-alias button[type=submit]")
    assert f'"x y@{DOMAIN}"' in b.text() and box.settings() == text
    box.shot("9-users-bad-alias")
    # By hand: a user added in the file, with a hash made as the README says.
    from .mail_lab import hash_pw

    box.m.write_settings(text + f'\n[[users]]\naddress = "dave@{DOMAIN}"\n'
                         f'password_hash = "{hash_pw("dave-secret-1")}"\n')
    b.get(f"{CONSOLE}/users")
    assert f"dave@{DOMAIN}" in b.text()


def test_a_mail_user_changes_her_own_password_in_the_console(box: Box) -> None:
    b = box.browser
    b.get(f"{CONSOLE}/status")
    b.submit("header form.logout button")
    assert b.url().endswith("/login")
    b.fill({"user": ALICE, "password": ALICE_PW})
    b.submit()
    assert b.url().endswith("/account") and "Change my password" in b.text()
    b.get(f"{CONSOLE}/users")  # an administrator's page: not hers
    assert not b.url().endswith("/users") or f"carol@{DOMAIN}" not in b.text()
    b.get(f"{CONSOLE}/account")
    b.fill({"current": "not her password", "password": "alice-new-pw-2", "confirm": "alice-new-pw-2"})
    b.submit()
    assert "current password: wrong" in b.text()
    b.fill({"current": ALICE_PW, "password": "alice-new-pw-2", "confirm": "alice-new-pw-2"})
    box.shot("10-account")
    b.submit()
    assert b.url().endswith("/login")
    assert imap_login(box, ALICE, "alice-new-pw-2") == "OK"
    assert imap_login(box, ALICE, ALICE_PW).startswith("NO")


def test_a_mail_user_finds_what_her_phone_needs(box: Box) -> None:
    """My devices: the values a mail app asks for, and the Apple profile for download (its
    content is checked by a unit test; here that the page serves it to her session only)."""
    b = box.browser
    b.get(f"{CONSOLE}/login")
    b.fill({"user": ALICE, "password": "alice-new-pw-2"})
    b.submit()
    b.get(f"{CONSOLE}/account/devices")
    text = b.text()
    assert f"{MAIL_HOST}, port 993, SSL/TLS" in text and f"{MAIL_HOST}, port 465, SSL/TLS" in text
    assert ALICE in text
    box.shot("10b-devices")
    got = _http(box, """
st, body, _ = req("GET", "/account/mail.mobileconfig")
print(json.dumps({"anonymous": st}))""")
    assert got == {"anonymous": 302}  # to the login page: nothing without her session


def test_a_mail_user_makes_a_password_for_her_phone_and_revokes_it(box: Box) -> None:
    """My devices: her own app password, made in the browser and shown once; her phone's
    login shows as its last use; revoked, it no longer opens her mailbox."""
    b = box.browser
    b.get(f"{CONSOLE}/account/devices")
    b.fill({"name": "Phone"}, within="#add-app-password")
    b.submit("#add-app-password button[type=submit]")
    secret = b.call("js", code="return document.getElementById('app-password').textContent")
    assert secret and "Phone" in b.text()
    box.shot("10c-device-password")
    assert imap_login(box, ALICE, secret) == "OK"
    b.get(f"{CONSOLE}/account/devices")
    row = b.call("js", code="return document.querySelector('#app-password-list tbody tr').innerText")
    assert "Phone" in row and "from 198.18.0.20" in row, row
    assert secret not in b.text()  # shown once, never again
    box.shot("10d-device-passwords")
    b.submit('button[aria-label="revoke Phone"]')
    assert "revoked the app password" in b.text()
    assert imap_login(box, ALICE, secret).startswith("NO")


def test_a_qr_code_sets_her_phone_up_with_nothing_typed(box: Box) -> None:
    """My devices: the QR code's one-time link, opened by another LAN device with no session
    (the phone), gives a profile whose own app password opens her mailbox; once only."""
    b = box.browser
    b.get(f"{CONSOLE}/account/devices")
    b.fill({"name": "iPhone"}, within="#qr-link")
    b.submit("#qr-link button[type=submit]")
    assert b.call("js", code="const i = document.querySelector('#device-qr img.qr'); "
                  "return i.complete && i.naturalWidth > 0") is True
    url = b.call("js", code="return document.querySelector('#device-qr code').textContent")
    assert url.startswith(f"{CONSOLE}/d/"), url
    box.shot("10f-device-qr")
    path = url.removeprefix(CONSOLE)
    got = _http(box, f"""
import plistlib
first, body, _ = req("GET", {path!r})
second, _, _ = req("GET", {path!r})
none, _, _ = req("GET", "/d/not-a-link")
acct = plistlib.loads(body.encode())["PayloadContent"][0] if first == 200 else {{}}
print(json.dumps({{"first": first, "second": second, "none": none,
                  "password": acct.get("IncomingPassword", "")}}))""")
    secret = str(got.pop("password"))
    assert got == {"first": 200, "second": 410, "none": 410}, got
    assert imap_login(box, ALICE, secret) == "OK"  # the phone's own password, typed by nobody
    names = re.findall(r'name = "([^"]+)"', box.settings())
    assert "iPhone" in names  # made when the phone opened the link


def test_a_mail_user_sets_her_away_message_and_forwarding_in_the_console(box: Box) -> None:
    """My account: the away message answers mail from the internet; forwarding lands in the
    settings file; both off again from the same page."""
    b = box.browser
    tag = uuid.uuid4().hex[:8]
    b.get(f"{CONSOLE}/account")
    b.fill({"subject": f"Away {tag}", "message": "I am away until Monday."}, within="#away")
    b.submit("#away button[value=yes]")
    assert "away message on until turned off" in b.text()
    assert f'subject = "Away {tag}"' in box.settings()
    box.m.deliver_to_alice(f"hello {tag}")
    carol = box.m.mx
    wait_for("the away message at the remote sender", lambda: any(
        f"Away {tag}" in p.read_text(errors="replace")
        for p in box.m.maildir_files(carol, f"/var/vmail/{REMOTE}/carol")), timeout=60)
    b.fill({"to": REMOTE_USER}, within="#forward")
    b.submit("#forward button[type=submit]")
    assert f"forwarded to {REMOTE_USER}" in b.text()
    assert f'forward_to = ["{REMOTE_USER}"]' in box.settings()
    box.shot("10e-account-rules")
    b.fill({"to": ""}, within="#forward")
    b.submit("#forward button[type=submit]")
    b.submit("#away button[value=no]")
    assert "no away message" in b.text() and "Your mail stays here." in b.text()
    assert "forward_to" not in box.settings() and "vacation" not in box.settings()


def test_a_mail_user_uploads_her_public_key_and_new_mail_is_stored_encrypted(box: Box) -> None:
    """Her key from her own device (the secret half never leaves it), chosen as a file in the
    browser; the next mail from the internet is stored PGP/MIME-encrypted and her device reads
    it. A secret key is refused and changes nothing."""
    from tests.unit.openpgp_keys import Device

    d = Device(box.m.workdir / "alice-device")
    fpr = d.make(f"Alice <{ALICE}>")
    public, secret = box.m.workdir / "alice-public.asc", box.m.workdir / "alice-secret.asc"
    public.write_bytes(d.export(ALICE))
    secret.write_bytes(d.export_secret(ALICE))
    b = box.browser
    b.get(f"{CONSOLE}/login")
    b.fill({"user": ALICE, "password": "alice-new-pw-2"})
    b.submit()
    assert b.url().endswith("/account") and "stored in plaintext" in b.text().lower()
    b.fill({"keyfile": str(secret)}, within="#key")
    b.submit("#key button[type=submit]")
    assert "holds a secret key" in b.text()
    assert '"fingerprint": null' in box.m.appliance("key", "show", ALICE, "--json").stdout
    b.fill({"keyfile": str(public)}, within="#key")
    b.submit("#key button[type=submit]")
    text = b.text()
    assert f"imported key {fpr}" in text and "stored encrypted" in text, text
    box.shot("11-account-key")
    box.m.deliver_to_alice("secret after the key upload")
    stored = max(box.m.maildir_files(box.m.app, f"/var/vmail/{DOMAIN}/alice/Maildir"),
                 key=lambda f: f.stat().st_mtime).read_bytes()
    body = PLAIN_BODY[:18].encode()  # "Hello, the minutes": never split by an encoding
    assert b"-----BEGIN PGP MESSAGE-----" in stored and body not in stored
    assert body in d.decrypt(stored)  # her device reads it
    d.close()


def _http(box: Box, code: str) -> dict[str, object]:
    """Python on the LAN host speaking HTTPS to the console (verifying its certificate)."""
    r = box.m.lan2.python(console_lab.HTTP_CLIENT + code, timeout=60)
    assert r.returncode == 0, r.stderr
    return dict(json.loads(r.stdout.strip().splitlines()[-1]))


def test_a_post_without_the_form_token_changes_nothing(box: Box) -> None:
    before = box.settings()
    got = _http(box, f"""
st, body, ck = req("GET", "/login")
token = re.search(r'name="csrf" value="([^"]+)"', body).group(1)
st, body, ck2 = req("POST", "/login", {{"csrf": token, "user": "admin", "password": {ADMIN_PW!r}}}, ck)
session = ck2["__Host-console"]
forged, _, _ = req("POST", "/users/add", {{"address": "mallory", "password": "mallory-pw-12",
                   "confirm": "mallory-pw-12"}}, {{"__Host-console": session}})
wrong, _, _ = req("POST", "/users/add", {{"csrf": "guess", "address": "mallory",
                  "password": "mallory-pw-12", "confirm": "mallory-pw-12"}},
                  {{"__Host-console": session}})
page, body, _ = req("GET", "/users", cookies={{"__Host-console": session}})
print(json.dumps({{"login": st, "forged": forged, "wrong": wrong, "page": page,
                  "headers_ok": "mallory" not in body}}))""")
    assert got == {"login": 302, "forged": 403, "wrong": 403, "page": 200, "headers_ok": True}
    assert box.settings() == before


def test_wrong_passwords_are_logged_for_fail2ban_and_let_nobody_in(box: Box) -> None:
    got = _http(box, """
st, body, ck = req("GET", "/login")
token = re.search(r'name="csrf" value="([^"]+)"', body).group(1)
st, body, ck2 = req("POST", "/login", {"csrf": token, "user": "admin", "password": "guess-guess"}, ck)
print(json.dumps({"status": st, "session": "__Host-console" in ck2}))""")
    assert got == {"status": 403, "session": False}
    log = box.m.app.read("/var/log/appliance-console.log")
    assert "login failed for admin from 198.18.0.20" in log, log[-2000:]


def test_the_console_is_not_on_the_internet(box: Box) -> None:
    """The router forwards the mail ports only; and the box's own firewall (applied by the
    wizard) takes 8443 from the LAN only: a packet from the public address, as a spoofed or
    hairpinned one would come, is dropped while a LAN client still gets in."""
    assert not box.m.tcp_open(box.m.att, WAN_IP, 8443)

    def from_address(src: str) -> bool:
        r = box.m.rtr.python(f"""
import socket
s = socket.socket(); s.settimeout(3); s.bind(({src!r}, 0))
s.connect(({APP_IP!r}, 8443)); s.close()""", timeout=15)
        return r.returncode == 0

    assert from_address("198.18.0.1")  # the router's LAN address: on the LAN
    assert not from_address(WAN_IP)


def test_testssl_finds_nothing_high_or_critical_on_the_console(box: Box) -> None:
    """Protocols, cipher suites, server preferences and known vulnerabilities (testssl.sh -p -s
    -P -U), as for the mail ports. The certificate is self-signed by design (its fingerprint is
    on the card), so certificate trust is not what this judges."""
    out = "/var/tmp/testssl-console.json"
    box.m.lan2.run(["testssl", "--quiet", "--warnings", "off", "--color", "0", "--jsonfile", out,
                    "-p", "-s", "-P", "-U", f"{APP_IP}:8443"], check=False, timeout=400)
    findings = json.loads(box.m.lan2.path(out).read_text())
    assert findings, "testssl.sh produced no findings at all"
    bad = [f"{f['id']}: {f['finding']}" for f in findings
           if f.get("severity") in ("HIGH", "CRITICAL") and not f["id"].startswith("scanProblem")]
    assert not bad, bad
    assert any(f["id"] == "TLS1_2" for f in findings)  # the scan really reached the console


def test_guessing_from_the_lan_is_slowed_and_never_banned(box: Box) -> None:
    """Last in this module: it leaves lan2 waiting. Wrong admin passwords from a LAN device:
    the first few are answered (each after a delay), then that device must wait before the
    agent checks another password, even the right one. fail2ban's console jail runs and reads
    the lines, but never bans the LAN (its ignoreip)."""
    got = _http(box, """
answers = []
for i in range(8):
    st, body, ck = req("GET", "/login")
    token = re.search(r'name="csrf" value="([^"]+)"', body).group(1)
    pw = "console admin pw 1" if i in (0, 7) else f"guess-{i}"
    st, body, ck2 = req("POST", "/login", {"csrf": token, "user": "admin", "password": pw}, ck)
    answers.append("wait" if "too many wrong tries" in body else
                   "wrong" if "wrong name or password" in body else
                   "in" if st == 302 and "__Host-console" in ck2 else str(st))
print(json.dumps({"answers": answers}))""")
    # In (which also clears earlier failures), five wrong, then made to wait, right or wrong.
    assert got["answers"] == ["in"] + ["wrong"] * 5 + ["wait", "wait"]
    log = box.m.app.read("/var/log/appliance-console.log")
    assert log.count("login failed for admin from 198.18.0.20") >= 5
    r = box.m.app.run(["fail2ban-client", "status", "console"], check=False)
    assert r.returncode == 0 and "Currently banned:\t0" in r.stdout, r.stdout + r.stderr
    assert box.m.tcp_open(box.m.lan2, APP_IP, 8443)
