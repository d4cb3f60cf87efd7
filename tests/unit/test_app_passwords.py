"""App passwords: made by the CLI (shown once, hashed into the settings with comments kept),
validated field by field, and rendered for Dovecot's Lua passdb. Dovecot checking them, the
last use it notes, and revocation ending a device's session: tests/lab/test_mail.py."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from appliance import registry
from appliance.core import app_passwords, system
from appliance.core.errors import SettingsError

from . import test_users_cli as tuc
from .conftest import sha512_again
from .test_plan import build, files
from .test_users_cli import run

path = tuc.path  # a settings file with alice, its comments to keep


def test_add_shows_the_password_once_and_keeps_only_its_hash(path: Path) -> None:
    code, out, err = run(["--settings", str(path), "user", "app-password", "add",
                          "alice@example.org", "Phone", "--no-apply"])
    assert code == 0, err
    secret = out.strip().splitlines()[-1].strip()
    assert re.fullmatch(r"[a-z2-9]{4}(-[a-z2-9]{4}){3}", secret)
    assert not set(secret) & set("ilo01")  # nothing a person misreads
    text = path.read_text()
    assert "# My mailbox settings -- keep this comment" in text and "# me" in text
    assert secret not in text and "[[users.app_passwords]]" in text
    [p] = registry.load_settings(path).users[0].app_passwords
    assert p.name == "Phone" and sha512_again(secret, p.hash) == p.hash and p.created > 1.7e9
    # A second one of the same name is refused, and nothing changes.
    before = path.read_text()
    code, _, err = run(["--settings", str(path), "user", "app-password", "add",
                        "alice@example.org", "Phone", "--no-apply"])
    assert code == 2 and 'has an app password named "Phone"' in err and path.read_text() == before


def test_two_passwords_differ_and_revoking_one_keeps_the_other(path: Path) -> None:
    for name in ("Phone", "Laptop"):
        assert run(["--settings", str(path), "user", "app-password", "add", "alice@example.org",
                    name, "--no-apply"])[0] == 0
    a, b = registry.load_settings(path).users[0].app_passwords
    assert a.hash != b.hash and a.id != b.id
    code, out, _ = run(["--settings", str(path), "user", "app-password", "list", "alice@example.org"])
    assert code == 0 and "Phone  (made " in out and "never used" in out
    code, out, err = run(["--settings", str(path), "user", "app-password", "del",
                          "alice@example.org", "Phone", "--no-apply"])
    assert code == 0 and 'revoked the app password "Phone"' in out, err
    assert [p.name for p in registry.load_settings(path).users[0].app_passwords] == ["Laptop"]
    code, _, err = run(["--settings", str(path), "user", "app-password", "del",
                        "alice@example.org", "Phone", "--no-apply"])
    assert code == 2 and 'no app password named "Phone"' in err
    run(["--settings", str(path), "user", "app-password", "del", "alice@example.org", "Laptop",
         "--no-apply"])
    assert "app_passwords" not in path.read_text() and path.read_text().endswith("\n")


def test_a_user_that_does_not_exist_is_named(path: Path) -> None:
    code, _, err = run(["--settings", str(path), "user", "app-password", "add",
                        "zoe@example.org", "Phone", "--no-apply"])
    assert code == 2 and 'no user "zoe@example.org"' in err


@pytest.mark.parametrize(("entry", "message"), [
    ({"name": "a:b", "hash": "H"}, 'app_passwords[0].name: "a:b" is not a device name'),
    ({"name": "", "hash": "H"}, 'app_passwords[0].name: "" is not a device name'),
    ({"name": "Phone", "hash": "plain"}, "app_passwords[0].hash: \"…\" is not a supported password hash"),
    ({"name": "Phone", "hash": "H", "pin": 1}, 'app_passwords[0].pin: "pin" is not a known'),
    ({"name": "Phone", "hash": "H", "created": "yesterday"},
     'app_passwords[0].created: "yesterday" is not a date'),
])
def test_bad_entries_name_the_field(good: dict, entry: dict, message: str) -> None:
    data = copy.deepcopy(good)
    h = data["users"][0]["password_hash"]
    data["users"][0]["app_passwords"] = [{k: (h if v == "H" else v) for k, v in entry.items()}]
    with pytest.raises(SettingsError) as e:
        registry.parse_settings(data)
    assert any(message in p for p in e.value.problems), e.value.problems


def test_a_name_twice_and_too_many_are_refused(good: dict) -> None:
    data = copy.deepcopy(good)
    h = data["users"][0]["password_hash"]
    data["users"][0]["app_passwords"] = [{"name": "Phone", "hash": h}] * 2
    with pytest.raises(SettingsError) as e:
        registry.parse_settings(data)
    assert any('app_passwords[1].name: "Phone" is used twice' in p for p in e.value.problems)
    data["users"][0]["app_passwords"] = [{"name": f"d{i}", "hash": h} for i in range(21)]
    with pytest.raises(SettingsError) as e:
        registry.parse_settings(data)
    assert any("is more than 20" in p for p in e.value.problems)


def test_dovecot_gets_one_line_per_app_password_and_the_script(good: dict) -> None:
    data = copy.deepcopy(good)
    h = data["users"][1]["password_hash"]
    data["users"][0]["app_passwords"] = [{"name": "Phone", "hash": h}]
    data["users"][1]["app_passwords"] = [{"name": "Tablet", "hash": h}]
    p = build(data)
    by_path = {f.path: f for f in p.files}
    listed = by_path["/etc/dovecot/app-passwords"]
    assert listed.secret and (listed.mode, listed.owner, listed.group) == (0o640, "root", "dovecot")
    lines = [x for x in files(p)["/etc/dovecot/app-passwords"].splitlines() if not x.startswith("#")]
    pid = app_passwords.AppPassword("Phone", h).id
    assert lines == [f"alice@example.org:{pid}:{{SHA512-CRYPT}}{h}",
                     f"bob@example.org:{pid}:{{SHA512-CRYPT}}{h}"]
    lua = files(p)["/etc/dovecot/app-passwords.lua"]
    assert f'USE_DIR = "{app_passwords.USE_DIR}"' in lua and '["imap"] = true' in lua
    assert '["smtp"] = true' in lua and "password_verify" in lua
    conf = files(p)["/etc/dovecot/dovecot.conf"]
    assert conf.index("driver = passwd-file") < conf.index("driver = lua")  # her own first


def test_last_use_is_read_back_as_dovecot_wrote_it(tmp_path: Path) -> None:
    root = system.Root(tmp_path)
    p = app_passwords.AppPassword("Phone", "$6$salt$hash", 1.0)
    assert app_passwords.rows(root, (p,))[0]["last_used"] is None
    use = root.host(f"{app_passwords.USE_DIR}/{p.id}")
    use.parent.mkdir(parents=True)
    use.write_text("1796651733 198.18.0.20\n")
    assert app_passwords.rows(root, (p,)) == [{"name": "Phone", "created": 1.0,
                                              "last_used": 1796651733.0,
                                              "last_address": "198.18.0.20"}]
    use.write_text("garbage")
    assert app_passwords.last_use(root, p) is None
    assert json.dumps(app_passwords.rows(root, (p,)))  # what --json prints
