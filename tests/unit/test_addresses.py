"""Plus addressing and the catch-all: the [mail] settings, the Postfix and Dovecot lines they
render (checked by the real postconf and doveconf), the OpenPGP proxy's view of a tagged
recipient, and what `status` counts. Delivery itself: tests/lab/test_addresses.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from appliance import registry
from appliance.core import system
from appliance.core.errors import SettingsError
from appliance.features.mail import checks
from appliance.features.openpgp.config import parse_config

from .test_plan import build, files


def test_plus_addressing_is_on_by_default_and_the_catch_all_off(good: dict) -> None:
    s = registry.parse_settings(good)
    assert (s.mail.plus_addressing, s.mail.tag_folders, s.mail.catch_all) == (True, False, None)
    out = files(build(good))
    assert "\nrecipient_delimiter = +\n" in out["/etc/postfix/main.cf"]
    assert "\nrecipient_delimiter = +\n" in out["/etc/dovecot/dovecot.conf"]
    assert "sieve_before3" not in out["/etc/dovecot/dovecot.conf"]
    assert "/etc/dovecot/sieve/tag-folders.sieve" not in out
    assert "\n@example.org " not in out["/etc/postfix/virtual"]  # unknown addresses stay refused
    good["mail"] = {"plus_addressing": False}
    out = files(build(good))
    assert "recipient_delimiter" not in out["/etc/postfix/main.cf"]
    assert "\nrecipient_delimiter =\n" in out["/etc/dovecot/dovecot.conf"]  # its default is "+"


def test_the_catch_all_maps_each_mailbox_to_itself_before_the_domain(good: dict) -> None:
    good["mail"] = {"catch_all": "bob@example.org"}
    rows = [line.split() for line in files(build(good))["/etc/postfix/virtual"].splitlines()
            if line and not line.startswith("#")]
    assert ["info@example.org", "alice@example.org"] in rows
    assert ["alice@example.org", "alice@example.org"] in rows
    assert ["bob@example.org", "bob@example.org"] in rows
    assert rows[-1] == ["@example.org", "bob@example.org"]


@pytest.mark.parametrize(("mail", "users_change", "expect"), [
    ({"catch_all": "carol@example.org"}, {}, 'mail.catch_all: "carol@example.org" is not one of '
     'the users\' addresses; name the mailbox that should receive it, e.g. "alice@example.org"'),
    ({"catch_all": "not an address"}, {}, 'mail.catch_all: "not an address" is not an e-mail address'),
    ({"tag_folders": "yes"}, {}, 'mail.tag_folders: "yes" is not true or false'),
    ({}, {"aliases": ["shop+news@example.org"]}, 'users[0].aliases[0]: "shop+news@example.org" '
     'has "+", which separates a tag with plus addressing; choose a name without "+", or set '
     '[mail] plus_addressing = false'),
    ({"plus": True}, {}, "mail.plus: \"plus\" is not a known [mail] setting"),
    ({"quota_mb": 5}, {}, "mail.quota_mb: 5 is not a mailbox size in MiB"),
])
def test_bad_mail_settings_are_named_with_their_fix(good: dict, mail: dict, users_change: dict,
                                                     expect: str) -> None:
    good["mail"] = mail
    good["users"][0].update(users_change)
    with pytest.raises(SettingsError) as e:
        registry.parse_settings(good)
    assert expect in str(e.value)


def test_an_address_with_a_plus_is_fine_without_plus_addressing(good: dict) -> None:
    good["mail"] = {"plus_addressing": False}
    good["users"][0]["aliases"] = ["shop+news@example.org"]
    assert registry.parse_settings(good).users[0].aliases == ("shop+news@example.org",)


def test_tag_folders_and_the_catch_all_pass_doveconf(good: dict, tmp_path: Path) -> None:
    good["mail"] = {"tag_folders": True, "catch_all": "alice@example.org"}
    for f in build(good).files:
        system.Root(tmp_path).write_stage(tmp_path, f.path, f.content)
    r = subprocess.run(["doveconf", "-c", str(tmp_path / "etc/dovecot/dovecot.conf"), "-n"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "sieve_before3 = file:/etc/dovecot/sieve/tag-folders.sieve" in r.stdout
    script = tmp_path / "etc/dovecot/sieve/tag-folders.sieve"
    r = subprocess.run(["sievec", "-c", str(tmp_path / "etc/dovecot/dovecot.conf"), str(script),
                        str(tmp_path / "tag-folders.svbin")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_the_proxy_finds_the_user_behind_a_tagged_recipient() -> None:
    c = parse_config("user alice@example.org required\nuser a+b@example.org when-key\n")
    assert c.owner("alice+shop@example.org") == "alice@example.org"  # her key, her setting
    assert c.owner("alice@example.org") == "alice@example.org"
    assert c.owner("a+b@example.org") == "a+b@example.org"  # an address of its own wins
    assert c.owner("nobody+x@example.org") == "nobody+x@example.org"


def logged(to: str, orig_to: str = "", status: str = "sent", prog: str = "lmtp") -> str:
    """One delivery line of Postfix's log."""
    orig = f", orig_to=<{orig_to}>" if orig_to else ""
    return (f"Dec  7 10:00:01 mail postfix/{prog}[11]: A1B2C3: to=<{to}>{orig}, relay=x, "
            f"delay=0.1, dsn=2.0.0, status={status} (250 ok)")


LOG = [logged("bob@example.org", "sales@example.org"), logged("bob@example.org", "sales@example.org"),
       logged("bob+x@example.org", "jobs+x@example.org"), logged("alice@example.org", "info@example.org"),
       logged("bob@example.org"), logged("bob@example.org", "postmaster@example.org"),
       logged("bob@example.org", "x@example.org", status="deferred"),
       logged("bob@example.org", "y@example.org", prog="smtp")]


def test_status_counts_what_the_catch_all_took_and_warns_when_it_is_most_of_the_mail(good: dict) -> None:
    good["mail"] = {"catch_all": "bob@example.org"}
    good["postmaster"] = "bob@example.org"
    s = registry.parse_settings(good)
    got, total = checks.caught(LOG, s)
    # Aliases, the role addresses and bob's own mail are not the catch-all's; deferred and
    # remote deliveries are not deliveries here.
    assert got == {"sales@example.org": 2, "jobs+x@example.org": 1} and total == 6
    r = checks.catch_all_result(got, total, s)
    assert r.status == "ok" and "3 of 6 deliveries" in r.detail and "sales@example.org (2)" in r.detail
    r = checks.catch_all_result(got, 4, s)
    assert r.status == "warn" and "appliance set mail.catch_all=" in r.fix


def test_user_commands_name_the_user_behind_an_alias_in_any_case(good: dict) -> None:
    from appliance.core import mail_rules

    s = registry.parse_settings(good)
    user, owner = mail_rules.who(s.users, " Alice@Example.org ")
    assert user is not None and user.address == "alice@example.org" and owner is None
    assert mail_rules.who(s.users, "INFO@example.org") == (None, "alice@example.org")
    assert mail_rules.who(s.users, "nobody@example.org") == (None, None)
