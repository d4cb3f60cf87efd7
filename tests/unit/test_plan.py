"""Plan rendering: pure, from settings and facts; checked by the real Postfix and Dovecot tools."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from appliance import registry
from appliance.core import facts, plan, system

LAN_FACTS = facts.Facts("mail.example.org", "eth0", ("198.18.0.0/24",), ("198.18.0.10",), "198.18.0.1")


def build(good: dict, override: Path | None = None) -> plan.Plan:
    return registry.build_plan(registry.parse_settings(good), LAN_FACTS, plan.environment(override))


def files(p: plan.Plan) -> dict[str, str]:
    return {f.path: f.content.decode() for f in p.files}


def test_plan_lists_every_file_with_owner_mode_and_service(good: dict) -> None:
    p = build(good)
    by_path = {f.path: f for f in p.files}
    assert set(by_path) >= {  # each feature adds its own files; these are the mail core's
        "/etc/postfix/main.cf", "/etc/postfix/master.cf", "/etc/postfix/vmailbox",
        "/etc/postfix/virtual", "/etc/postfix/sender_login", "/etc/dovecot/dovecot.conf",
        "/etc/dovecot/users",
        "/etc/appliance/openpgp.conf", "/etc/systemd/system/appliance-pgp.service",  # OpenPGP
    }
    users = by_path["/etc/dovecot/users"]
    assert (users.mode, users.owner, users.group, users.secret) == (0o640, "root", "dovecot", True)
    assert {"appliance-pgp", "dovecot", "postfix"} <= set(p.services())
    # Without a relay, none of the relay's files (absent is a state, not an empty file).
    assert "/etc/postfix/sasl_passwd" not in by_path and "wg-relay" not in p.services()
    # maps go live before the main file that names them
    order = [f.path for f in p.files]
    assert order.index("/etc/postfix/vmailbox") < order.index("/etc/postfix/main.cf")


def test_every_file_says_it_is_generated_and_how_to_change_it(good: dict) -> None:
    for path, text in files(build(good)).items():
        if text.startswith("#!"):  # a script: the interpreter line comes first
            text = text.partition("\n")[2]
        comment = "-- " if path.endswith(".lua") else "# "  # each language's own comment
        assert text.startswith(comment + "Written by mail-appliance from "), path
        assert "Local edits are overwritten" in text


def test_own_domain_mailboxes_aliases_and_role_addresses(good: dict) -> None:
    f = files(build(good))
    main = f["/etc/postfix/main.cf"]
    assert "virtual_mailbox_domains = example.org\n" in main
    assert "myhostname = mail.example.org\n" in main
    assert f"message_size_limit = {20 * 1024 * 1024}\n" in main
    assert "alice@example.org alice@example.org" in f["/etc/postfix/vmailbox"]
    virtual = f["/etc/postfix/virtual"]
    for alias in ("info@example.org alice@example.org", "postmaster@example.org alice@example.org",
                  "abuse@example.org alice@example.org"):
        assert alias in virtual
    assert "info@example.org alice@example.org" in f["/etc/postfix/sender_login"]
    assert "alice@example.org:{SHA512-CRYPT}$6$" in f["/etc/dovecot/users"]


def test_port_25_states_its_tls_floor_instead_of_leaving_it_to_openssl(good: dict) -> None:
    main = files(build(good))["/etc/postfix/main.cf"]
    # TLS 1.0/1.1 are refused by the configuration itself (the README says 1.2+ on every port),
    # not only by the OpenSSL security level underneath.
    assert "smtpd_tls_protocols = >=TLSv1.2\n" in main
    assert "smtpd_tls_mandatory_protocols = >=TLSv1.2\n" in main


def test_lan_never_becomes_a_relay_network(good: dict) -> None:
    main = files(build(good))["/etc/postfix/main.cf"]
    assert "mynetworks = 127.0.0.0/8 [::1]/128\n" in main
    assert "198.18." not in main


def test_plan_is_deterministic(good: dict) -> None:
    assert build(good) == build(good)


def test_override_template_is_used_and_named(good: dict, tmp_path: Path) -> None:
    (tmp_path / "etc/postfix").mkdir(parents=True)
    (tmp_path / "etc/postfix/vmailbox.j2").write_text("{{ header }}\n# custom\n")
    text = files(build(good, tmp_path))["/etc/postfix/vmailbox"]
    assert "(override /etc/appliance/templates)" in text and "# custom" in text


@pytest.mark.parametrize("body,expect", [
    ("{{ header }}\n{{ no_such_variable }}\n", "'no_such_variable' is undefined"),
    ("{{ header }}\n{% for x in %}\n", "line 2"),
])
def test_broken_override_is_a_clear_error(good: dict, tmp_path: Path, body: str, expect: str) -> None:
    (tmp_path / "etc/dovecot").mkdir(parents=True)
    (tmp_path / "etc/dovecot/dovecot.conf.j2").write_text(body)
    with pytest.raises(plan.TemplateError) as e:
        build(good, tmp_path)
    msg = str(e.value)
    assert "/etc/appliance/templates/etc/dovecot/dovecot.conf.j2" in msg and expect in msg
    assert "Nothing was changed" in msg


needs_tools = pytest.mark.skipif(not shutil.which("postconf") or not shutil.which("doveconf"),
                                 reason="postfix/dovecot not installed (make test installs them)")


@needs_tools
def test_shipped_templates_pass_the_real_validators(good: dict, tmp_path: Path) -> None:
    for f in build(good).files:  # as apply stages them: dated back, so Postfix reads at once
        system.Root(tmp_path).write_stage(tmp_path, f.path, f.content)
    for argv in (["postconf", "-c", str(tmp_path / "etc/postfix"), "-n"],
                 ["postconf", "-c", str(tmp_path / "etc/postfix"), "-M"],
                 ["doveconf", "-n", "-c", str(tmp_path / "etc/dovecot/dovecot.conf")]):
        r = subprocess.run(argv, capture_output=True, text=True)
        assert r.returncode == 0 and "warning" not in r.stderr.lower(), (argv, r.stderr)
    # 587 and 465 require TLS and AUTH; 25 offers neither AUTH nor a relay.
    r = subprocess.run(["postconf", "-c", str(tmp_path / "etc/postfix"), "-P"],
                       capture_output=True, text=True, check=True)
    assert "submission/inet/smtpd_tls_security_level = encrypt" in r.stdout
    assert "submissions/inet/smtpd_tls_wrappermode = yes" in r.stdout
    assert "smtp/inet/smtpd_sasl_auth_enable" not in r.stdout


def test_smarthost_fails_closed_and_keeps_the_password_secret(good: dict) -> None:
    good["relay"] = {"kind": "smarthost", "host": "smtp.example.net", "port": 465, "username": "box",
                     "password_file": "/etc/appliance/relay.password"}
    s = registry.parse_settings(good)
    p = registry.build_plan(s, LAN_FACTS, plan.environment(None), secrets={"relay_password": "s3cret pass"})
    by_path = {x.path: x for x in p.files}
    main = by_path["/etc/postfix/main.cf"].content.decode()
    assert "relayhost = [smtp.example.net]:465\n" in main
    assert "smtp_tls_security_level = secure\n" in main and "smtp_tls_wrappermode = yes\n" in main
    assert "smtp_tls_security_level = may" not in main
    sasl = by_path["/etc/postfix/sasl_passwd"]
    assert sasl.secret and sasl.mode == 0o600
    assert "[smtp.example.net]:465 box:s3cret pass" in sasl.content.decode()
    without = {x.path: x for x in build({**good, "relay": {}}).files}
    assert "/etc/postfix/sasl_passwd" not in without
    main = without["/etc/postfix/main.cf"].content.decode()
    assert "relayhost" not in main and "sasl_passwd" not in main


def test_light_and_full_mode_each_plan_only_their_own_files(good: dict) -> None:
    """A module's switch file exists only in the mode that turns it off; apply deletes the
    other mode's files (the owned-files manifest), so nothing of one mode is left in the other."""
    from appliance.features.spam.rspamd import ALWAYS_OFF, LIGHT_OFF

    light = files(build({**good, "spam": {"mode": "light"}}))
    full = files(build(good))
    for m in LIGHT_OFF:
        path = f"/etc/rspamd/local.d/{m}.conf"
        # The module's own switch, at the start of a line (rbl.conf turns single rules off).
        assert "\nenabled = false;" in light[path]
        assert m in ALWAYS_OFF or m == "rbl" or path not in full, path
    for m in ALWAYS_OFF:  # phoning rspamd.com is off in both modes
        assert "enabled = false;" in full[f"/etc/rspamd/local.d/{m}.conf"]
    learning = {"/etc/dovecot/sieve/learn-spam.sieve", "/etc/dovecot/sieve/learn-ham.sieve",
                "/etc/dovecot/sieve/rspamd-learn-spam", "/etc/dovecot/sieve/rspamd-learn-ham"}
    assert learning <= set(full) and not learning & set(light)
    assert "imap_sieve" in full["/etc/dovecot/dovecot.conf"]
    assert "imap_sieve" not in light["/etc/dovecot/dovecot.conf"]


# Each feature that can be turned off: (settings that turn it off, the files it plans when on,
# what main.cf/master.cf must then no longer name). Absent is a state: off plans none of them.
OFF = {
    "openpgp": ({"openpgp": {"enabled": False}},
                {"/etc/appliance/openpgp.conf", "/etc/systemd/system/appliance-pgp.service"},
                ("appliance-pgp",)),
    "typo guard": ({"privacy": {"typo_guard": False}},
                   {"/etc/appliance/typoguard.conf", "/etc/postfix/transport",
                    "/etc/postfix/release_access", "/etc/systemd/system/appliance-release.service",
                    "/etc/systemd/system/appliance-release.socket",
                    "/etc/systemd/system/appliance-release-notice.socket"},
                   ("/etc/postfix/transport", "release_access", "appliance-release")),
    "status mail": ({"status": {"daily_mail": False}},
                    {"/etc/systemd/system/appliance-status.service",
                     "/etc/systemd/system/appliance-status.timer"}, ()),
    "web": ({}, {"/etc/nginx/nginx.conf"}, ()),  # off by default; on below
}


@needs_tools
@pytest.mark.parametrize("name", sorted(OFF))
def test_a_feature_turned_off_plans_none_of_its_files_and_postfix_still_validates(
        good: dict, tmp_path: Path, name: str) -> None:
    off_settings, owned, named = OFF[name]
    on = files(build({**good, "web": {"enabled": True}}))
    off = files(build({**good, **off_settings}))
    assert owned <= set(on), owned - set(on)
    assert not owned & set(off), owned & set(off)
    for conf in ("/etc/postfix/main.cf", "/etc/postfix/master.cf"):
        assert not [n for n in named if n in off[conf]], (conf, named)
    for path, text in off.items():
        system.Root(tmp_path).write_stage(tmp_path, path, text.encode())
    for argv in (["postconf", "-c", str(tmp_path / "etc/postfix"), "-n"],
                 ["postconf", "-c", str(tmp_path / "etc/postfix"), "-M"],
                 ["doveconf", "-n", "-c", str(tmp_path / "etc/dovecot/dovecot.conf")]):
        r = subprocess.run(argv, capture_output=True, text=True)
        assert r.returncode == 0 and "warning" not in r.stderr.lower(), (argv, r.stderr)


def test_openpgp_off_delivers_to_dovecot_directly(good: dict) -> None:
    on = files(build(good))["/etc/postfix/main.cf"]
    off = files(build({**good, "openpgp": {"enabled": False}}))["/etc/postfix/main.cf"]
    assert "virtual_transport = lmtp:unix:private/appliance-pgp\n" in on
    assert "virtual_transport = lmtp:unix:private/dovecot-lmtp\n" in off


def test_mail_apps_find_the_servers_at_autoconfig(good: dict) -> None:
    """Thunderbird's format, at https://autoconfig.<domain>/mail/config-v1.1.xml: the same
    servers and implicit-TLS ports as the console's My devices page, the address as user name."""
    import xml.etree.ElementTree as ET

    on = files(build({**good, "web": {"enabled": True}}))
    xml = on["/var/lib/appliance/www/autoconfig/mail/config-v1.1.xml"]
    assert xml.startswith('<?xml version="1.0" encoding="UTF-8"?>\n')
    provider = ET.fromstring(xml.encode()).find("emailProvider")
    assert provider is not None and provider.findtext("domain") == "example.org"
    got = {(x.get("type"), x.findtext("hostname"), x.findtext("port"), x.findtext("socketType"),
            x.findtext("username")) for x in provider if x.tag.endswith("Server")}
    assert got == {("imap", "mail.example.org", "993", "SSL", "%EMAILADDRESS%"),
                   ("smtp", "mail.example.org", "465", "SSL", "%EMAILADDRESS%")}
    assert "server_name autoconfig.example.org;" in on["/etc/nginx/nginx.conf"]
    assert not any("autoconfig" in p for p in files(build(good)))  # no web server, no file
