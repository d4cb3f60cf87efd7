"""The console: its agent over a real unix socket, and the Flask pages through that agent.
What runs here is the real code on both sides; only the steps after the wizard are an offline
`appliance check` instead of an apply (a unit test must not configure this machine). The
whole first run against the real daemons and a real browser is tests/lab/test_console.py."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.console import agent as console_agent
from appliance.console import auth, protocol
from appliance.console.web import COOKIE, create_app

from .conftest import sha512_again

PW = "correct horse battery"


def sha512(pw: str) -> str:
    return subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=pw + "\n", text=True,
                          capture_output=True, check=True).stdout.strip()


@pytest.fixture(autouse=True)
def no_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "FAILED_DELAY_S", 0.0)


class Running:
    def __init__(self, tmp: Path) -> None:
        self.root = tmp / "root"
        self.root.mkdir()
        self.settings = self.root / "etc/appliance/settings.toml"
        self.sock = str(tmp / "agent.sock")
        self.agent = console_agent.Agent(
            self.root, "/etc/appliance/settings.toml",
            setup_steps=(("Check the settings", ("check", "--offline", str(self.settings)), True),),
            edit_flags=("--no-apply",))
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        # Until it accepts (bind comes before listen: the path alone is not enough).
        import socket

        for _ in range(250):
            with socket.socket(socket.AF_UNIX) as probe:
                if probe.connect_ex(self.sock) == 0:
                    break
            time.sleep(0.02)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_unix_server(
            self._session, path=self.sock, limit=protocol.MAX_LINE))
        self.server = server
        self.loop.run_forever()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        import json

        line = await reader.readline()
        if not line.strip():  # the readiness probe
            writer.close()
            return
        request = json.loads(line)
        request.setdefault("args", {})["_client"] = request.get("client", "?")
        answer = await asyncio.to_thread(self.agent.handle, request)
        writer.write(json.dumps(answer).encode() + b"\n")
        await writer.drain()
        writer.close()

    def call(self, op: str, session: str | None = None, client: str = "127.0.0.1", **args: Any) -> Any:
        return protocol.call(op, args, session=session, client=client, path=self.sock)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Running]:
    r = Running(tmp_path)
    yield r
    r.stop()


def test_the_setup_code_is_stable_root_only_and_opens_once(box: Running) -> None:
    code = auth.setup_code(box.root)
    stored = box.root / "var/lib/appliance/console/setup-code"
    assert stored.stat().st_mode & 0o777 == 0o600
    # Every boot prints the note again; it must name the same code as the card's copy.
    assert auth.setup_code(box.root) == code
    with pytest.raises(protocol.AgentError) as e:
        box.call("setup_code", code="WRONG-CODE")
    assert e.value.code == protocol.DENIED and "appliance-setup.txt" in str(e.value)
    # Typed in lower case, without the dash: still the code.
    got = box.call("setup_code", code=code.lower().replace("-", " "))
    assert box.call("whoami", got["session"])["role"] == "setup"
    auth.end_setup(box.root)
    with pytest.raises(protocol.AgentError):
        box.call("setup_code", code=code)


def test_operations_need_the_right_person(box: Running) -> None:
    with pytest.raises(protocol.AgentError) as e:
        box.call("users")
    assert e.value.code == protocol.LOGIN
    with pytest.raises(protocol.AgentError) as e:
        box.call("rm -rf /")
    assert e.value.code == protocol.DENIED and "no such operation" in str(e.value)
    code = auth.setup_code(box.root)
    setup = box.call("setup_code", code=code)["session"]
    with pytest.raises(protocol.AgentError) as e:  # the setup session is not an administrator
        box.call("users", setup)
    assert e.value.code == protocol.DENIED


def wizard(box: Running, **over: str) -> dict[str, Any]:
    session = box.call("setup_code", code=auth.setup_code(box.root))["session"]
    form = {"domain": "example.org", "hostname": "", "user": "alice", "password": PW,
            "admin_password": "admin password 1", **over}
    return box.call("setup", session, **form)


def wait_job(box: Running, session: str, job: str) -> dict[str, Any]:
    for _ in range(300):
        got = box.call("job", session, id=job)
        if got["done"]:
            return got
        time.sleep(0.05)
    raise AssertionError("job did not end")


def test_the_wizard_writes_the_settings_and_an_administrator(box: Running) -> None:
    got = wizard(box)
    text = box.settings.read_text()
    assert 'domain = "example.org"' in text and 'hostname = "mail.example.org"' in text
    assert 'address = "alice@example.org"' in text and PW not in text
    assert text.startswith("# Written by the setup wizard")
    assert box.settings.stat().st_mode & 0o777 == 0o600
    job = wait_job(box, got["session"], got["job"])
    assert job["ok"], job["lines"]
    assert any("ok (example.org, 1 user(s)" in line for line in job["lines"])
    assert box.call("whoami", got["session"])["role"] == "admin"
    # The code is spent; a second wizard is refused.
    with pytest.raises(protocol.AgentError):
        wizard(box)
    # Both logins work: admin with its password, alice with hers (the hash in the settings).
    assert box.call("login", user="admin", password="admin password 1")["session"]
    alice = box.call("login", user="alice@example.org", password=PW)["session"]
    assert box.call("whoami", alice)["role"] == "user"
    with pytest.raises(protocol.AgentError) as e:
        box.call("login", user="alice@example.org", password="not it at all")
    assert str(e.value) == "wrong name or password"


def test_a_bad_domain_in_the_wizard_is_named_and_writes_nothing(box: Running) -> None:
    with pytest.raises(protocol.AgentError) as e:
        wizard(box, domain="not a domain")
    assert e.value.code == protocol.INVALID and "domain" in str(e.value)
    assert not box.settings.exists()
    assert not auth.admin_exists(box.root)
    with pytest.raises(protocol.AgentError) as e:
        wizard(box, password="short")
    assert "10 characters" in str(e.value) and not box.settings.exists()


def test_sessions_end_when_idle_and_on_logout(box: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    s = auth.Sessions(box.root)
    token = s.new("admin", "admin")
    assert s.get(token) is not None
    assert token not in (box.root / "var/lib/appliance/console/sessions.json").read_text()
    later = time.time() + auth.IDLE_S + 1
    monkeypatch.setattr(time, "time", lambda: later)
    assert s.get(token) is None
    monkeypatch.undo()
    token = s.new("alice@example.org", "user")
    s.end(token)
    assert s.get(token) is None


def test_passwords_verify_like_dovecot_for_each_accepted_hash() -> None:
    assert auth.verify(PW, sha512(PW)) and not auth.verify("other", sha512(PW))
    admin = auth.hash_admin(PW)
    assert admin.startswith("$argon2id$") and auth.verify(PW, admin)
    assert not auth.verify(PW + "x", admin) and not auth.verify("", admin)


# --- the pages ------------------------------------------------------------------------------------
@pytest.fixture
def client(box: Running) -> Any:
    app = create_app(box.sock)
    app.testing = True
    return app.test_client()


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, html
    return m.group(1)


def alice_settings(extra: str = "") -> str:
    return (f'domain = "example.org"\n\n[[users]]\naddress = "alice@example.org"\n'
            f'password_hash = "{sha512(PW)}"\n{extra}')


def logged_in(box: Running, client: Any, settings_text: str, user: str = "alice@example.org",
              password: str = PW) -> None:
    """The box with these settings and an administrator; `user` logged in."""
    box.settings.parent.mkdir(parents=True, exist_ok=True)
    box.settings.write_text(settings_text)
    auth.set_admin_password(box.root, "admin password 1")
    token = csrf_of(client.get("/login", base_url="https://box").text)
    r = client.post("/login", data={"user": user, "password": password, "csrf": token},
                    base_url="https://box")
    assert r.status_code == 302, r.text


def test_a_fresh_box_shows_only_the_setup_code_page(box: Running, client: Any) -> None:
    code = auth.setup_code(box.root)
    r = client.get("/", base_url="https://box")
    assert r.status_code == 302 and r.headers["Location"].endswith("/setup")
    for page in ("/status", "/users", "/dns"):
        r = client.get(page, base_url="https://box")
        assert r.status_code == 302 and "/login" in r.headers["Location"]
    r = client.get("/setup", base_url="https://box")
    assert "setup code" in r.text and r.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert "script-src 'self'" in r.headers["Content-Security-Policy"] and "<script>" not in r.text
    token = csrf_of(r.text)
    # Without the form's token: refused, whatever the code.
    r = client.post("/setup", data={"code": code}, base_url="https://box")
    assert r.status_code == 403
    r = client.post("/setup", data={"code": "AAAA-BBBB", "csrf": token}, base_url="https://box")
    assert r.status_code == 403 and "not the setup code" in r.text
    r = client.post("/setup", data={"code": code, "csrf": token}, base_url="https://box")
    assert r.status_code == 302 and r.headers["Location"].endswith("/setup/wizard")
    cookie = next(c for c in r.headers.getlist("Set-Cookie") if c.startswith(COOKIE + "="))
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Domain=" not in cookie and "Path=/" in cookie  # what a __Host- cookie must be


def test_the_wizard_page_names_a_bad_field_and_changes_nothing(box: Running, client: Any) -> None:
    code = auth.setup_code(box.root)
    token = csrf_of(client.get("/setup", base_url="https://box").text)
    client.post("/setup", data={"code": code, "csrf": token}, base_url="https://box")
    page = client.get("/setup/wizard", base_url="https://box")
    form = {"csrf": csrf_of(page.text), "domain": "exa mple", "user": "alice", "password": PW,
            "confirm": PW, "admin_password": "admin password 1", "admin_confirm": "admin password 1"}
    r = client.post("/setup/wizard", data=form, base_url="https://box")
    assert r.status_code == 400 and "domain" in r.text and PW not in r.text
    assert not box.settings.exists() and not auth.admin_exists(box.root)
    r = client.post("/setup/wizard", data={**form, "domain": "example.org"}, base_url="https://box")
    assert r.status_code == 302 and "/progress/" in r.headers["Location"]
    for _ in range(200):
        page = client.get(r.headers["Location"], base_url="https://box").text
        if "Your box is set up" in page:
            break
        time.sleep(0.05)
    assert "Your box is set up" in page
    assert box.settings.exists()


def test_a_client_outside_the_lan_gets_nothing(box: Running, client: Any) -> None:
    r = client.get("/login", base_url="https://box", headers={"X-Real-IP": "203.0.113.9"})
    assert r.status_code == 403 and "home network" in r.text


def test_an_administrator_logs_in_and_a_post_without_the_token_is_refused(box: Running,
                                                                          client: Any) -> None:
    box.settings.parent.mkdir(parents=True)
    box.settings.write_text(f'domain = "example.org"\n\n[[users]]\naddress = "alice@example.org"\n'
                            f'password_hash = "{sha512(PW)}"\n')
    auth.set_admin_password(box.root, "admin password 1")
    token = csrf_of(client.get("/login", base_url="https://box").text)
    r = client.post("/login", data={"user": "admin", "password": "nope", "csrf": token},
                    base_url="https://box")
    assert r.status_code == 403 and "wrong name or password" in r.text
    r = client.post("/login", data={"user": "admin", "password": "admin password 1", "csrf": token},
                    base_url="https://box")
    assert r.status_code == 302
    page = client.get("/users", base_url="https://box")
    assert "alice@example.org" in page.text
    csrf = csrf_of(page.text)
    # An edit the CLI accepts would apply to this machine: here only refused ones are sent.
    r = client.post("/users/add", data={"address": "bob", "password": "bob password 1",
                                        "confirm": "bob password 1"}, base_url="https://box")
    assert r.status_code == 403  # no CSRF token
    assert "bob@" not in box.settings.read_text()
    r = client.post("/aliases/add", data={"alias": "x y", "address": "alice@example.org",
                                          "csrf": csrf}, base_url="https://box")
    assert r.status_code == 400 and "x y@example.org" in r.text  # the CLI's own message
    assert "aliases" not in box.settings.read_text()


# --- the files provisioning installs ------------------------------------------------------------
FILES = Path(__file__).resolve().parents[2] / "appliance/console/files"


def test_the_console_nginx_offers_the_same_ciphers_as_the_mail_services() -> None:
    from appliance.core import tls

    conf = (FILES / "appliance-console-nginx.conf").read_text()
    assert f"ssl_ciphers {tls.CIPHERS_INTERMEDIATE};" in conf


def test_the_console_nginx_configuration_is_valid(tmp_path: Path) -> None:
    """`nginx -t` on the file as shipped, its certificate and paths moved under tmp_path."""
    from appliance.console import setup as console_setup
    from appliance.core import system

    root = system.Root(tmp_path)
    console_setup.ensure_cert(root, console_setup.Where("box.local", ("198.18.0.10",)))
    conf = (FILES / "appliance-console-nginx.conf").read_text()
    for path in ("/var/lib/appliance/console/tls/", "/run/", "/var/log/nginx/"):
        (tmp_path / path.strip("/")).mkdir(parents=True, exist_ok=True)
        conf = conf.replace(path, f"{tmp_path}{path}")
    conf = conf.replace("listen 8443", "listen 127.0.0.1:18443").replace(
        "listen [::]:8443 ssl;", "").replace("user www-data;", "")
    (tmp_path / "nginx.conf").write_text(conf)
    r = system.run(["nginx", "-t", "-c", str(tmp_path / "nginx.conf"), "-e", str(tmp_path / "err.log")],
                   check=False)
    assert r.returncode == 0, r.output


def test_provisioning_installs_every_console_unit_there_is() -> None:
    import yaml

    defaults = yaml.safe_load((FILES.parents[2] / "provisioning/roles/appliance_agent/defaults/main.yml")
                              .read_text())
    units = {p.name for p in FILES.iterdir() if p.suffix in (".service", ".socket")}
    assert set(defaults["appliance_agent_console_units"]) == units
    for pkg in ("nginx-light", "python3-flask", "python3-waitress", "python3-argon2", "python3-pyotp",
                "python3-segno"):
        assert pkg in defaults["appliance_agent_packages"]


def test_a_verb_runs_as_a_child_and_its_progress_streams_line_by_line() -> None:
    from appliance.core import system

    seen: list[str] = []
    r = system.run_lines([sys.executable, "-c", "import sys; print('a', file=sys.stderr); "
                          "print(sys.stdin.read().upper()); print('b', file=sys.stderr); sys.exit(3)"],
                         input="hello", on_line=seen.append)
    assert (r.returncode, r.stdout.strip(), seen) == (3, "HELLO", ["a", "b"])
    r = system.run_lines([sys.executable, "-c", "import time; time.sleep(30)"], on_line=seen.append,
                         timeout=0.5)
    assert r.returncode == 124


def test_guessing_from_one_address_is_slowed_then_made_to_wait() -> None:
    now = [1000.0]
    t = auth.Throttle(clock=lambda: now[0])
    for _ in range(auth.Throttle.FREE_TRIES):
        assert t.wait_left("198.18.0.20") == 0
        t.failed("198.18.0.20")
    first = t.wait_left("198.18.0.20")
    assert first > 0 and t.wait_left("198.18.0.21") == 0  # another device is not held up
    t.failed("198.18.0.20")
    assert t.wait_left("198.18.0.20") == 2 * first  # doubles with each further failure
    for _ in range(20):
        t.failed("198.18.0.20")
    assert t.wait_left("198.18.0.20") == auth.Throttle.MAX_WAIT_S
    now[0] += auth.Throttle.WINDOW_S + 1  # old failures are forgotten
    assert t.wait_left("198.18.0.20") == 0
    t.failed("198.18.0.22")
    t.succeeded("198.18.0.22")
    assert "198.18.0.22" not in t.failures


def test_the_agent_refuses_to_check_a_password_while_the_address_must_wait(
        box: Running, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(auth, "FAILED_DELAY_S", 0.0)
    auth.set_admin_password(box.root, "admin password 1")
    for _ in range(auth.Throttle.FREE_TRIES):
        with pytest.raises(protocol.AgentError) as e:
            box.call("login", user="admin", password="guess", client="198.18.0.20")
        assert "wrong name or password" in str(e.value)
    with pytest.raises(protocol.AgentError) as e:  # even the right password is not checked now
        box.call("login", user="admin", password="admin password 1", client="198.18.0.20")
    assert "too many wrong tries from this device" in str(e.value)
    got = box.call("login", user="admin", password="admin password 1", client="198.18.0.21")
    assert got["session"]
    assert "login failed for admin from 198.18.0.20" in capsys.readouterr().out
    # A name typed with a line break and spaces stays one word on one line.
    with pytest.raises(protocol.AgentError):
        box.call("login", user="x\nfrom 203.0.113.9", password="guess", client="198.18.0.22")
    assert "login failed for x\\nfrom\\x20203.0.113.9 from 198.18.0.22" in capsys.readouterr().out


def test_the_administrator_turns_on_a_login_code_and_then_it_is_asked_for(box: Running,
                                                                          client: Any) -> None:
    import html

    import pyotp

    box.settings.parent.mkdir(parents=True)
    box.settings.write_text(f'domain = "example.org"\n\n[[users]]\naddress = "alice@example.org"\n'
                            f'password_hash = "{sha512(PW)}"\n')
    auth.set_admin_password(box.root, "admin password 1")
    url = "https://box"

    def login(c: Any, code: str = "") -> Any:
        token = csrf_of(c.get("/login", base_url=url).text)
        return c.post("/login", data={"user": "admin", "password": "admin password 1",
                                      "code": code, "csrf": token}, base_url=url)

    assert login(client).status_code == 302
    page = client.get("/security", base_url=url).text
    assert "Off:" in page
    r = client.post("/security", data={"action": "begin", "csrf": csrf_of(page)}, base_url=url)
    assert 'src="data:image/svg+xml' in r.text  # the QR code, drawn without a script
    secret = html.unescape(re.search(r"<code>([A-Z2-7]+)</code>", r.text).group(1))  # type: ignore[union-attr]
    r = client.post("/security", data={"action": "confirm", "code": "000000",
                                       "csrf": csrf_of(r.text)}, base_url=url)
    assert r.status_code == 400 and "nothing was changed" in r.text and not auth.totp_on(box.root)
    totp = pyotp.TOTP(secret)
    r = client.post("/security", data={"action": "confirm", "code": totp.now(),
                                       "csrf": csrf_of(r.text)}, base_url=url)
    assert "From now on" in r.text and auth.totp_on(box.root)
    # Now the password alone opens nothing; a code the app shows next does, once.
    other = create_app(box.sock).test_client()
    assert "authenticator app shows" in other.get("/login", base_url=url).text
    r = login(other)
    assert r.status_code == 403 and "wrong name or password or code" in r.text
    code = totp.at(time.time() + totp.interval)
    assert login(other, code).status_code == 302
    again = create_app(box.sock).test_client()
    assert login(again, code).status_code == 403  # a code works once
    # Turning it off takes the password.
    page = other.get("/security", base_url=url).text
    r = other.post("/security", data={"action": "off", "password": "nope", "csrf": csrf_of(page)},
                   base_url=url)
    assert r.status_code == 400 and "password: wrong" in r.text and auth.totp_on(box.root)


def test_the_apple_profile_sets_up_imap_and_submission_over_tls_without_a_password() -> None:
    import plistlib

    from appliance.console import devices

    raw = devices.mobileconfig("alice@example.org", "mail.example.org", "example.org")
    p = plistlib.loads(raw)
    [acct] = p["PayloadContent"]
    assert p["PayloadType"] == "Configuration" and acct["PayloadType"] == "com.apple.mail.managed"
    assert (acct["IncomingMailServerHostName"], acct["IncomingMailServerPortNumber"],
            acct["IncomingMailServerUseSSL"]) == ("mail.example.org", 993, True)
    assert (acct["OutgoingMailServerHostName"], acct["OutgoingMailServerPortNumber"],
            acct["OutgoingMailServerUseSSL"]) == ("mail.example.org", 465, True)
    assert acct["IncomingMailServerUsername"] == acct["EmailAddress"] == "alice@example.org"
    assert "IncomingPassword" not in acct and "OutgoingPassword" not in acct  # the device asks
    # The same identifiers each time: installing it again replaces the account.
    assert devices.mobileconfig("alice@example.org", "mail.example.org", "example.org") == raw
    other = plistlib.loads(devices.mobileconfig("bob@example.org", "mail.example.org", "example.org"))
    assert other["PayloadUUID"] != p["PayloadUUID"]


def test_with_calendars_on_the_profile_adds_caldav_and_carddav_with_the_same_login() -> None:
    import plistlib

    from appliance.console import devices

    p = plistlib.loads(devices.mobileconfig("alice@example.org", "mail.example.org", "example.org",
                                            "abcd-efgh-jkmn-pqrs", dav=True))
    mail, cal, card = p["PayloadContent"]
    assert (cal["PayloadType"], card["PayloadType"]) == ("com.apple.caldav.account",
                                                         "com.apple.carddav.account")
    assert (cal["CalDAVHostName"], cal["CalDAVPort"], cal["CalDAVUseSSL"], cal["CalDAVUsername"],
            cal["CalDAVPassword"]) == ("mail.example.org", 443, True, "alice@example.org",
                                       "abcd-efgh-jkmn-pqrs")
    assert (card["CardDAVHostName"], card["CardDAVUsername"], card["CardDAVPassword"]) == (
        "mail.example.org", "alice@example.org", "abcd-efgh-jkmn-pqrs")
    assert len({x["PayloadUUID"] for x in p["PayloadContent"]}) == 3
    assert "CalDAVPassword" not in plistlib.loads(devices.mobileconfig(
        "alice@example.org", "mail.example.org", "example.org", dav=True))["PayloadContent"][1]
    rows = dict(devices.settings("alice@example.org", "mail.example.org", dav=True))
    assert rows["Calendars (CalDAV)"] == rows["Contacts (CardDAV)"] == "https://mail.example.org/"
    assert "Calendars (CalDAV)" not in dict(devices.settings("alice@example.org", "mail.example.org"))


def test_a_mail_user_downloads_her_profile_from_her_session(box: Running, client: Any) -> None:
    import plistlib

    box.settings.parent.mkdir(parents=True)
    box.settings.write_text(f'domain = "example.org"\n\n[[users]]\naddress = "alice@example.org"\n'
                            f'password_hash = "{sha512(PW)}"\n')
    auth.set_admin_password(box.root, "admin password 1")
    url = "https://box"
    assert client.get("/account/mail.mobileconfig", base_url=url).status_code == 302
    token = csrf_of(client.get("/login", base_url=url).text)
    r = client.post("/login", data={"user": "alice@example.org", "password": PW, "csrf": token},
                    base_url=url)
    assert r.status_code == 302
    r = client.get("/account/mail.mobileconfig", base_url=url)
    assert r.status_code == 200 and r.mimetype == "application/x-apple-aspen-config"
    assert "attachment" in r.headers["Content-Disposition"]
    acct = plistlib.loads(r.data)["PayloadContent"][0]
    assert acct["EmailAddress"] == "alice@example.org"
    assert acct["IncomingMailServerHostName"] == "mail.example.org"


def test_an_app_password_never_opens_the_console_and_a_nameless_one_is_refused(
        box: Running, client: Any) -> None:
    """App passwords are for mail apps: the console asks for her own password. Her devices page
    lists them (name, made, last use); a form without a device name changes nothing."""
    app_pw = "abcd-efgh-jkmn-pqrs"
    box.settings.parent.mkdir(parents=True)
    box.settings.write_text(
        f'domain = "example.org"\n\n[[users]]\naddress = "alice@example.org"\n'
        f'password_hash = "{sha512(PW)}"\n[[users.app_passwords]]\nname = "Phone"\n'
        f'hash = "{sha512(app_pw)}"\ncreated = 2026-12-01T10:00:00Z\n')
    auth.set_admin_password(box.root, "admin password 1")
    url = "https://box"
    token = csrf_of(client.get("/login", base_url=url).text)
    r = client.post("/login", data={"user": "alice@example.org", "password": app_pw,
                                    "csrf": token}, base_url=url)
    assert r.status_code == 403 and "wrong name or password" in r.text
    r = client.post("/login", data={"user": "alice@example.org", "password": PW, "csrf": token},
                    base_url=url)
    assert r.status_code == 302
    page = client.get("/account/devices", base_url=url)
    assert "A password for each device" in page.text
    assert "<td>Phone</td>" in page.text and "2026-12-01" in page.text and "never" in page.text
    before = box.settings.read_text()
    r = client.post("/account/devices", data={"action": "add", "name": " ",
                                              "csrf": csrf_of(page.text)}, base_url=url)
    assert r.status_code == 400 and "device name: empty" in r.text
    assert box.settings.read_text() == before


def test_her_forwarding_and_away_message_show_what_the_file_says_and_a_bad_one_changes_nothing(
        box: Running, client: Any) -> None:
    logged_in(box, client, alice_settings(
        'forward_to = ["alice@elsewhere.example"]\n[users.vacation]\nsubject = "Away until Monday"\n'
        'message = "Back soon."\nuntil = 2026-12-24\n'))
    url = "https://box"
    page = client.get("/account", base_url=url)
    assert "forwarded</strong> to" in page.text and "alice@elsewhere.example" in page.text
    assert 'value="Away until Monday"' in page.text and "until the end of\n  2026-12-24" in page.text
    before = box.settings.read_text()
    r = client.post("/account/forward", data={"to": "alice@example.org", "keep": "yes",
                                              "csrf": csrf_of(page.text)}, base_url=url)
    assert r.status_code == 400 and "is this user&#39;s own address" in r.text
    r = client.post("/account/away", data={"on": "yes", "subject": "Away", "message": "x",
                                           "until": "24.12.", "csrf": csrf_of(page.text)}, base_url=url)
    assert r.status_code == 400 and "is not a date" in r.text and 'value="Away"' in r.text
    assert box.settings.read_text() == before


def test_the_dns_page_offers_the_push_only_where_a_server_takes_it(box: Running, client: Any,
                                                                   tmp_path: Path) -> None:
    """`dns --push` needs [dns] update_server and its key: without them, no button (the check
    and the push themselves talk to DNS servers: tests/lab)."""
    base = alice_settings()
    logged_in(box, client, base, "admin", "admin password 1")
    url = "https://box"
    page = client.get("/dns", base_url=url)
    assert page.status_code == 200 and "Check each record now" in page.text
    assert "Send them to" not in page.text and "MX" in page.text
    key = tmp_path / "tsig.key"
    key.write_text("c2VjcmV0\n")
    box.settings.write_text(base + f'\n[dns]\nupdate_server = "192.0.2.53"\nupdate_key_file = "{key}"\n')
    page = client.get("/dns", base_url=url)  # a hand edit shows at the next page load
    assert "Send them to 192.0.2.53" in page.text


def test_a_qr_code_sets_a_phone_up_once_with_its_own_password(box: Running, client: Any) -> None:
    """My devices: the QR code's link gives, once and without a session, a profile carrying a
    new app password for that device; used again or too old, it gives nothing."""
    import plistlib

    from appliance import registry

    logged_in(box, client, alice_settings())
    url = "https://box"
    page = client.get("/account/devices", base_url=url)
    r = client.post("/account/devices", data={"action": "qr", "name": "iPhone",
                                              "csrf": csrf_of(page.text)}, base_url=url)
    assert r.status_code == 200 and 'class="qr" src="data:image/svg+xml' in r.text
    link = re.search(r"https://box/d/([\w-]+)", r.text)
    assert link, r.text
    assert "app_passwords" not in box.settings.read_text()  # nothing made before it is used
    phone = create_app(box.sock).test_client()  # no session: the link is the key
    got = phone.get(f"/d/{link.group(1)}", base_url=url)
    assert got.status_code == 200 and got.mimetype == "application/x-apple-aspen-config"
    acct = plistlib.loads(got.data)["PayloadContent"][0]
    [made] = registry.load_settings(box.settings).users[0].app_passwords
    assert made.name == "iPhone" and acct["IncomingPassword"] == acct["OutgoingPassword"]
    assert sha512_again(acct["IncomingPassword"], made.hash) == made.hash
    assert phone.get(f"/d/{link.group(1)}", base_url=url).status_code == 410  # once
    r = client.post("/account/devices", data={"action": "qr", "name": "iPad",
                                              "csrf": csrf_of(page.text)}, base_url=url)
    stale = re.search(r"https://box/d/([\w-]+)", r.text).group(1)  # type: ignore[union-attr]
    who, name, _ = box.agent.links[stale]
    box.agent.links[stale] = (who, name, time.time() - 1)
    assert phone.get(f"/d/{stale}", base_url=url).status_code == 410  # too old
    assert phone.get("/d/not-a-link", base_url=url).status_code == 410



def test_an_admin_sets_a_users_quota_and_a_bad_one_changes_nothing(box: Running, client: Any) -> None:
    logged_in(box, client, alice_settings(), "admin", "admin password 1")
    page = client.get("/users", base_url="https://box").text
    assert 'aria-label="quota in MiB for alice@example.org"' in page
    csrf = csrf_of(page)
    r = client.post("/users/quota", data={"address": "alice@example.org", "mb": "2048", "csrf": csrf},
                    base_url="https://box")
    assert r.status_code == 200 and "alice@example.org: quota 2048 MiB" in r.text
    assert "quota_mb = 2048" in box.settings.read_text()
    before = box.settings.read_text()
    r = client.post("/users/quota", data={"address": "alice@example.org", "mb": "5", "csrf": csrf},
                    base_url="https://box")
    assert r.status_code == 400 and "is not a mailbox size in MiB" in r.text
    assert box.settings.read_text() == before
    r = client.post("/users/quota", data={"address": "alice@example.org", "mb": "", "csrf": csrf},
                    base_url="https://box")
    assert r.status_code == 200 and "quota_mb" not in box.settings.read_text()
