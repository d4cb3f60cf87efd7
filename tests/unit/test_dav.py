"""Calendars and contacts ([dav]): the login check's conversation with Dovecot (against a
stand-in socket speaking Dovecot's auth protocol; the real Dovecot: tests/lab/test_dav.py), the
default collections in Radicale's real storage, and the files the section renders (judged by
the real nginx -t)."""

from __future__ import annotations

import base64
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from appliance import registry
from appliance.core import records, system
from appliance.features.dav import dovecot_auth
from appliance.features.firewall.firewall import wan_tcp_ports

from .test_plan import build


def fake_dovecot(path: Path, answer: str) -> tuple[threading.Thread, list[str]]:
    """One connection: Dovecot's handshake, then `answer` ("OK" or "FAIL") to the AUTH line."""
    heard: list[str] = []
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(1)

    def serve() -> None:
        conn, _ = srv.accept()
        with conn, srv:
            conn.sendall(b"VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nSPID\t7\nCUID\t1\nCOOKIE\tab\nDONE\n")
            buf = b""
            while b"AUTH\t" not in buf or not buf.endswith(b"\n"):
                buf += conn.recv(4096)
            heard.extend(buf.decode().splitlines())
            auth = next(x for x in heard if x.startswith("AUTH\t")).split("\t")
            resp = dict(f.partition("=")[::2] for f in auth[3:])["resp"]
            user = base64.b64decode(resp).split(b"\0")[1].decode()
            conn.sendall(f"OK\t1\tuser={user.lower()}\n".encode() if answer == "OK"
                         else b"FAIL\t1\tuser=x\treason=wrong\n")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return t, heard


def test_dovecot_accepts_and_the_canonical_name_is_the_login(tmp_path: Path) -> None:
    sock = tmp_path / "auth-dav"
    t, heard = fake_dovecot(sock, "OK")
    pw = "tab\tand\nnewline"  # travels base64-encoded: cannot break the protocol's lines
    assert dovecot_auth.check("Alice@example.org", pw, socket_path=str(sock), rip="198.18.0.20") \
        == "alice@example.org"
    t.join(5)
    auth = next(x for x in heard if x.startswith("AUTH\t")).split("\t")
    assert auth[:3] == ["AUTH", "1", "PLAIN"] and "service=dav" in auth and "secured" in auth
    assert "rip=198.18.0.20" in auth
    resp = dict(f.partition("=")[::2] for f in auth[3:])["resp"]
    assert base64.b64decode(resp) == b"\0Alice@example.org\0" + pw.encode()


def test_a_refusal_is_an_empty_name_and_no_dovecot_is_an_error(tmp_path: Path) -> None:
    sock = tmp_path / "auth-dav"
    t, _ = fake_dovecot(sock, "FAIL")
    assert dovecot_auth.check("alice@example.org", "wrong", socket_path=str(sock)) == ""
    t.join(5)
    assert dovecot_auth.check("alice@example.org", "", socket_path=str(sock)) == ""  # not even asked
    with pytest.raises(dovecot_auth.AuthError, match="auth-dav"):
        dovecot_auth.check("alice@example.org", "pw", socket_path=str(tmp_path / "missing/auth-dav"))


@pytest.mark.parametrize(("header", "want"), [
    ("198.18.0.20", "198.18.0.20"), ("2001:db8::5", "2001:db8::5"),
    ("1.2.3.4\tservice=imap", None), ("", None), ("x, 203.0.113.9", "203.0.113.9")])
def test_only_an_address_reaches_dovecot_as_the_remote_ip(header: str, want: str | None) -> None:
    assert dovecot_auth.client_address({"HTTP_X_FORWARDED_FOR": header}) == want


def test_first_login_makes_one_calendar_and_one_address_book(tmp_path: Path) -> None:
    from radicale import config, storage

    conf = config.load([])
    conf.update({"storage": {"filesystem_folder": str(tmp_path / "collections")}}, "test")
    store = storage.load(conf)
    assert dovecot_auth.ensure_defaults(store, "alice@example.org") == ["calendar", "contacts"]
    assert dovecot_auth.ensure_defaults(store, "alice@example.org") == []  # once
    with store.acquire_lock("r"):
        found = {c.path: c.get_meta("tag") for c in store.discover("/alice@example.org/", depth="1")
                 if c.path != "alice@example.org"}
    assert found == {"alice@example.org/calendar": "VCALENDAR",
                     "alice@example.org/contacts": "VADDRESSBOOK"}
    # She deletes both: the next login does not bring them back.
    with store.acquire_lock("w"):
        for name in ("calendar", "contacts"):
            next(iter(store.discover(f"/alice@example.org/{name}/"))).delete()
    assert dovecot_auth.ensure_defaults(store, "alice@example.org") == []
    with store.acquire_lock("r"):
        assert [c.path for c in store.discover("/alice@example.org/", depth="1")] == ["alice@example.org"]


def test_off_by_default_renders_nothing_and_opens_nothing(good: dict) -> None:
    files = {f.path for f in build(good).files}
    assert not {"/etc/radicale/config", "/etc/nginx/appliance.d/dav.conf",
                "/etc/nginx/nginx.conf"} & files
    s = registry.parse_settings(good)
    assert 443 not in wan_tcp_ports(s)


def test_on_the_lan_only_unless_the_internet_is_asked_for(good: dict, tmp_path: Path) -> None:
    good["dav"] = {"enabled": True}
    plan = build(good)
    files = {f.path: f.content.decode() for f in plan.files}
    site = files["/etc/nginx/appliance.d/dav.conf"]
    assert "allow 198.18.0.0/24;" in site and "deny all;" in site
    assert "unix_listener auth-dav" in files["/etc/dovecot/dovecot.conf"]
    assert "type = appliance.features.dav.dovecot_auth" in files["/etc/radicale/config"]
    s = registry.parse_settings(good)
    assert 443 not in wan_tcp_ports(s)
    # The real nginx judges the staged server and site together (with a certificate of its
    # own: the box's is made at its first apply).
    for f in plan.files:
        system.Root(tmp_path).write_stage(tmp_path, f.path, f.content)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", tmp_path / "key.pem", "-out", tmp_path / "cert.pem",
                    "-days", "1", "-subj", "/CN=mail.example.org"], check=True, capture_output=True)
    conf = tmp_path / "etc/nginx/nginx.conf"
    text = conf.read_text()
    for key, pem in (("ssl_certificate", "cert.pem"), ("ssl_certificate_key", "key.pem")):
        line = next(x for x in text.splitlines() if x.strip().startswith(key + " "))
        text = text.replace(line, f"  {key} {tmp_path / pem};")
    conf.write_text(text)
    r = subprocess.run(["nginx", "-t", "-q", "-c", str(conf)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "include appliance.d/*.conf;" in text

    good["dav"] = {"enabled": True, "internet": True}
    site = {f.path: f.content.decode() for f in build(good).files}["/etc/nginx/appliance.d/dav.conf"]
    assert "deny all;" not in site
    assert 443 in wan_tcp_ports(registry.parse_settings(good))


def test_the_srv_records_point_clients_at_443_on_the_mail_host(good: dict) -> None:
    good["dav"] = {"enabled": True}
    s = registry.parse_settings(good)
    got = {(r.name, r.value) for f in registry.FEATURES for r in f.records(s, records.Known())
           if r.rtype == "SRV" and "dav" in r.name}
    assert got == {("_caldavs._tcp.example.org.", "0 1 443 mail.example.org."),
                   ("_carddavs._tcp.example.org.", "0 1 443 mail.example.org.")}


@pytest.mark.parametrize(("status", "level", "words"), [
    (401, "ok", "answers on your home network"), (502, "fail", "calendar server does not"),
    (None, "fail", "nothing answers on port 443"), (403, "fail", "answered 403")])
def test_status_judges_the_path_a_phone_takes(status: int | None, level: str, words: str) -> None:
    from appliance.features.dav import checks

    r = checks.verdict(status, "refused", "mail.example.org", internet=False)
    assert r.status == level and words in r.detail and (level == "ok" or r.fix)
