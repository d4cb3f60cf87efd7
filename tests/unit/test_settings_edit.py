"""Settings by name: `appliance set` (comments kept, the whole file checked before it is
written), and the console's Settings page on top of it, both ways: a value set in the page is
in the file, a value written in the file is in the page, for every field the page shows."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from appliance.console import settings_form

from . import test_console as tc
from . import test_users_cli as tuc
from .test_console import Running, csrf_of
from .test_users_cli import run

# The console's own fixtures: its agent on a real socket, the Flask pages through it.
box, client, no_delay = tc.box, tc.client, tc.no_delay


path = tuc.path  # a settings file with alice, its comments to keep


def test_set_keeps_comments_and_types_and_key_equals_nothing_is_the_default(path: Path) -> None:
    code, out, err = run(["--settings", str(path), "set", "spam.mode=light", "web.enabled=true",
                          "fail2ban.maxretry=7", 'certs.email="me@example.org"',
                          "status.blocklists=[]", "--no-apply"])
    assert code == 0, err
    assert 'spam.mode = "light"' in out and "web.enabled = true" in out
    text = path.read_text()
    assert "# My mailbox settings -- keep this comment" in text and "# me" in text
    data = tomllib.loads(text)
    assert data["spam"]["mode"] == "light" and data["web"]["enabled"] is True
    assert data["fail2ban"]["maxretry"] == 7 and data["certs"]["email"] == "me@example.org"
    code, out, _ = run(["--settings", str(path), "set", "web.enabled=", "spam.mode=", "--no-apply"])
    assert code == 0 and "web.enabled: the default" in out
    data = tomllib.loads(path.read_text())
    assert "web" not in data and "spam" not in data  # an emptied table goes too


@pytest.mark.parametrize(("args", "message"), [
    (["spam.mode=loud"], 'spam.mode: "loud" is not a filter mode'),
    (["fail2ban.maxretry=many"], 'fail2ban.maxretry: "many"'),
    (["nosuch.key=1"], 'nosuch: "nosuch" is not a known setting'),
    (["users.address=x"], "edited by `appliance user"),
    (["spam.mode"], "is not KEY=VALUE"),
    (["a.b.c=1"], "is not a setting's name"),
])
def test_a_bad_value_is_named_and_nothing_changes(path: Path, args: list[str], message: str) -> None:
    before = path.read_text()
    code, _, err = run(["--settings", str(path), "set", *args, "--no-apply"])
    assert code == 2 and message in err, err
    assert path.read_text() == before


# A value other than the default for every field the Settings page shows (the relay has its
# own page), each valid on its own and together.
EVERY = """
[mail]
plus_addressing = false
tag_folders = true
catch_all = "alice@example.org"
quota_mb = 2048
[dns]
public_ipv4 = "203.0.113.7"
public_ipv6 = "2001:db8::7"
update_server = "192.0.2.53"
update_key_name = "box-key"
update_key_file = "/etc/appliance/dns-update.key"
[spam]
mode = "light"
dkim_key_bits = 3072
blocklists = ["spamhaus"]
[dav]
enabled = true
internet = true
[web]
enabled = true
mta_sts_mode = "enforce"
mta_sts_max_age = 604800
[certs]
acme_server = "https://acme.example.net/directory"
email = "me@example.org"
challenge = "dns-01"
acme_ca_bundle = "/etc/appliance/ca.pem"
dns_server = "192.0.2.53"
dns_zone = "example.org"
tsig_key_name = "acme-key"
tsig_key_file = "/etc/appliance/acme.key"
[upnp]
enabled = false
lease_seconds = 7200
igd_url = "http://192.168.1.1:5000/rootDesc.xml"
[reachability]
outbound_probe_hosts = ["mx.example.net"]
probe_url = "https://probe.example.net/check"
probe_token_file = "/etc/appliance/probe.token"
[status]
blocklists = ["zen.spamhaus.org"]
daily_mail = false
[openpgp]
enabled = false
[firewall]
enabled = false
web = true
[ssh]
authorized_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHWAtWca83RfNSvOCRvB3DTPvuZCrDC6D5Zo7RPVszLr me"]
[fail2ban]
enabled = false
maxretry = 7
findtime = 900
bantime = 1200
bantime_max = 86400
[limits]
messages_per_hour = 200
messages_per_day = 1000
recipients_per_message = 20
global_per_hour = 2000
[privacy]
typo_guard = false
typo_history = "plain"
log_retention_days = 14
[backup]
enabled = true
repository = "sftp:me@vps.example.net:/srv/backup/mail"
ssh_host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHWAtWca83RfNSvOCRvB3DTPvuZCrDC6D5Zo7RPVszLr"
password_file = "/etc/appliance/backup.pw"
credentials_file = "/etc/appliance/backup.keys"
keep_daily = 10
keep_weekly = 5
keep_monthly = 6
append_only = true
"""


def shown(value: Any) -> Any:
    return settings_form.shown(value)


def admin(box: Running, client: Any, text: str) -> str:
    tc.logged_in(box, client, text, "admin", "admin password 1")
    return csrf_of(client.get("/settings", base_url="https://box").text)


def base() -> str:
    return tc.alice_settings()


def test_every_value_covers_every_field_the_page_shows() -> None:
    want = tomllib.loads(EVERY)
    shown_fields = {(t, f.key) for t, fields in settings_form.tables().items() for f in fields}
    assert shown_fields == {(t, k) for t, keys in want.items() for k in keys}
    assert all(want[t][f.key] != f.default for t, fields in settings_form.tables().items()
               for f in fields if f.key in want.get(t, {}))


def test_every_value_written_in_the_file_shows_in_the_console(box: Running, client: Any) -> None:
    admin(box, client, base() + EVERY)
    want = tomllib.loads(EVERY)
    for table, fields in settings_form.current(box.settings).items():
        for f in fields:
            if f["key"] in want[table]:
                assert f["value"] == shown(want[table][f["key"]]) and f["set"], (table, f)
    page = client.get("/settings", base_url="https://box").text
    assert 'value="203.0.113.7"' in page and "<option selected>light</option>" in page
    assert 'value="mx.example.net"' in page


def test_every_value_set_in_the_console_lands_in_the_file(box: Running, client: Any) -> None:
    """From a file with none of them: each table's form posted as a person fills it in (text,
    numbers, "a, b" lists, boxes ticked or not), then the file compared, value and type."""
    csrf = admin(box, client, base())
    want = tomllib.loads(EVERY)
    tables = settings_form.current(box.settings)
    for table, fields in tables.items():
        form = {"csrf": csrf, "table": table}
        for f in fields:
            value = want[table].get(f["key"])
            if f["kind"] == "flag":
                if value:
                    form[f["key"]] = "on"
            else:
                form[f["key"]] = str(shown(value if value is not None else f["value"]))
        r = client.post("/settings", data=form, base_url="https://box")
        alert = re.findall(r'role="alert">([^<]*)<', r.text)
        assert r.status_code == 200 and "saved and applied" in r.text, (table, alert)
    assert tomllib.loads(box.settings.read_text())["spam"] == want["spam"]
    got = tomllib.loads(box.settings.read_text())
    for table in tables:
        assert got[table] == want[table], table


def test_a_bad_value_in_the_form_is_named_and_the_file_is_unchanged(box: Running, client: Any) -> None:
    csrf = admin(box, client, base())
    before = box.settings.read_text()
    r = client.post("/settings", data={"csrf": csrf, "table": "fail2ban", "enabled": "on",
                                       "maxretry": "lots", "findtime": "600", "bantime": "600",
                                       "bantime_max": "604800"}, base_url="https://box")
    alert = " ".join(re.findall(r'role="alert">([^<]*)<', r.text))
    assert r.status_code == 400 and "fail2ban.maxretry: &#34;lots&#34;" in alert, alert
    assert box.settings.read_text() == before
