"""`appliance key import|show|remove|list` with the real gpg, on throwaway keys: every refusal the
issue lists (no encryption subkey, expired, revoked, wrong address) and the index the proxy reads."""

from __future__ import annotations

import io
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance import cli
from appliance.features.openpgp import keyring

from .conftest import ALICE_HASH
from .openpgp_keys import Device

ALICE = "alice@example.org"
SETTINGS = f"""domain = "example.org"

[[users]]
address = "{ALICE}"
password_hash = "{ALICE_HASH}"
aliases = ["info@example.org"]

[[users]]
address = "bob@example.org"
password_hash = "{ALICE_HASH}"
encrypt = "required"
"""


@pytest.fixture(scope="module")
def device(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Device]:
    d = Device(tmp_path_factory.mktemp("device") / "gnupg")
    d.make(f"Alice <{ALICE}>")
    d.make("Alice signing only <alice+sign@example.org>", encrypt=False)
    d.make("Alice old <alice+old@example.org>", faked_time="20200101T000000")  # expired 2021
    d.revoke(d.make("Alice revoked <alice+rev@example.org>"))
    d.make("Mallory <mallory@example.net>")
    yield d
    d.close()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("APPLIANCE_GNUPGHOME", str(tmp_path / "box-gnupg"))
    (tmp_path / "settings.toml").write_text(SETTINGS)
    yield tmp_path


def run(tmp: Path, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["--settings", str(tmp / "settings.toml"), "key", *args],
                    cli.Env(stdin=io.StringIO(), stdout=out, stderr=err))
    return code, out.getvalue(), err.getvalue()


def keyfile(tmp: Path, data: bytes, name: str = "key.asc") -> str:
    (tmp / name).write_bytes(data)
    return str(tmp / name)


def test_import_armored_then_show_list_remove(env: Path, device: Device) -> None:
    fpr = device.fpr(ALICE)
    code, out, err = run(env, "import", ALICE, keyfile(env, device.export(ALICE)))
    assert code == 0, err
    assert f"imported key {fpr} for {ALICE}" in out and "stored encrypted (PGP/MIME)" in out
    index = json.loads((env / "box-gnupg" / keyring.INDEX).read_text())
    assert index["schema"] == keyring.INDEX_VERSION and index["keys"][ALICE]["fingerprint"] == fpr
    code, out, _ = run(env, "show", ALICE)
    assert code == 0 and fpr in out and f"uid Alice <{ALICE}>" in out
    code, out, _ = run(env, "list")
    assert f"{ALICE}: stored encrypted (PGP/MIME) to key {fpr}" in out
    assert 'bob@example.org: no key: mail waits in the queue (451)' in out
    # Published by WKD (both layouts), with only alice's user ID.
    from appliance.features.openpgp import wkd

    h = wkd.wkd_hash(ALICE)
    published = env / "wkd/.well-known/openpgpkey/example.org/hu" / h
    assert published.exists() and (env / "wkd/.well-known/openpgpkey/hu" / h).exists()
    assert (env / "wkd/.well-known/openpgpkey/example.org/policy").exists()
    assert fpr in keyring.inspect(published.read_bytes())[0].fingerprint
    code, out, _ = run(env, "remove", ALICE)
    assert code == 0 and "stored in plaintext" in out
    assert not published.exists()
    assert json.loads((env / "box-gnupg" / keyring.INDEX).read_text()) == {"schema": 2, "keys": {}}
    # The key itself left the keyring too.
    assert fpr.encode() not in keyring.Keyring().export(fpr)


def test_import_binary_key(env: Path, device: Device) -> None:
    code, _, err = run(env, "import", ALICE, keyfile(env, device.export(ALICE, armor=False), "k.gpg"))
    assert code == 0, err


@pytest.mark.parametrize("uid, why", [
    ("alice+sign@example.org", "has no usable encryption subkey"),
    ("alice+old@example.org", "expired on 2020-12-31"),
    ("alice+rev@example.org", "is revoked"),
    ("mallory@example.net", f"is not for {ALICE} (its user IDs name mallory@example.net)"),
])
def test_refusals_say_why_and_change_nothing(env: Path, device: Device, uid: str, why: str) -> None:
    code, out, err = run(env, "import", ALICE, keyfile(env, device.export(uid)))
    assert code == 2, (out, err)
    assert why in err
    assert not (env / "box-gnupg" / keyring.INDEX).exists()


def test_other_refusals(env: Path, device: Device) -> None:
    cases = [
        (device.export(ALICE, "mallory@example.net"), "the file holds 2 keys"),
        (b"not a key at all\n", "holds no OpenPGP public key"),
        (device.export_secret(ALICE), "holds a secret key; private keys stay on your own devices"),
    ]
    for data, why in cases:
        code, _, err = run(env, "import", ALICE, keyfile(env, data))
        assert code == 2 and why in err, err
    code, _, err = run(env, "import", "info@example.org", keyfile(env, device.export(ALICE)))
    assert code == 2 and "is an alias of alice@example.org" in err
    code, _, err = run(env, "import", "nobody@example.org", keyfile(env, device.export(ALICE)))
    assert code == 2 and "is not a user of this box" in err
    code, _, err = run(env, "import", ALICE, str(env / "missing.asc"))
    assert code == 2 and "cannot be read" in err
    code, _, err = run(env, "remove", ALICE)
    assert code == 2 and "has no key on this box" in err


def test_reimport_replaces_the_old_key(env: Path, device: Device, tmp_path: Path) -> None:
    other = Device(tmp_path / "second-device")
    new = other.make(f"Alice new <{ALICE}>")
    other.close()
    assert run(env, "import", ALICE, keyfile(env, device.export(ALICE)))[0] == 0
    assert run(env, "import", ALICE, keyfile(env, other.export(ALICE), "new.asc"))[0] == 0
    index = keyring.read_index(env / "box-gnupg")
    assert index[ALICE].fingerprint == new
    assert keyring.Keyring().export(device.fpr(ALICE)) == b""


def test_encrypt_setting_is_validated(env: Path) -> None:
    (env / "settings.toml").write_text(SETTINGS.replace('"required"', '"always"'))
    code, _, err = run(env, "list")
    assert code == 2
    assert 'users[1].encrypt: "always" is not a storage mode; use "when-key"' in err


def test_wkd_publishes_only_the_users_own_user_id(env: Path, tmp_path: Path) -> None:
    from appliance.features.openpgp import wkd

    other = Device(tmp_path / "third-device")
    fpr = other.make(f"Alice <{ALICE}>")
    other.gpg("--quick-add-uid", fpr, "Alice at work <alice@work.example>")
    other.close()
    assert run(env, "import", ALICE, keyfile(env, other.export(ALICE)))[0] == 0
    published = env / "wkd/.well-known/openpgpkey/example.org/hu" / wkd.wkd_hash(ALICE)
    assert keyring.inspect(published.read_bytes())[0].uids == (f"Alice <{ALICE}>",)


def test_generate_exports_secret_once_and_keeps_only_the_public_key(env: Path, tmp_path: Path) -> None:
    out_file = tmp_path / "alice-secret.asc"
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["--settings", str(env / "settings.toml"), "key", "generate", ALICE, str(out_file)],
                    cli.Env(stdin=io.StringIO("a long passphrase 1\n"), stdout=out, stderr=err))
    assert code == 0, err.getvalue()
    text = out.getvalue()
    assert "the box keeps no secret key" in text and "stored encrypted (PGP/MIME)" in text
    assert out_file.stat().st_mode & 0o777 == 0o600
    secret = out_file.read_bytes()
    assert b"PRIVATE KEY BLOCK" in secret
    # The box's keyring has no secret key; the exported one opens only with the passphrase.
    listing = subprocess.run(["gpg", "--homedir", str(env / "box-gnupg"), "--batch", "--no-autostart",
                              "--list-secret-keys"], capture_output=True, text=True)
    assert listing.stdout.strip() == ""
    user = Device(tmp_path / "users-device")
    user.gpg("--import", input=secret)
    fpr = keyring.read_index(env / "box-gnupg")[ALICE].fingerprint
    enc = subprocess.run(["gpg", "--homedir", str(env / "box-gnupg"), *keyring.GPG_BASE, "-a", "-e",
                          "-r", fpr], input=b"hello", capture_output=True, check=True).stdout
    assert user.gpg("--decrypt", input=enc, check=False).returncode != 0  # no passphrase
    ok = subprocess.run(["gpg", "--homedir", str(user.home), "--batch", "--pinentry-mode", "loopback",
                         "--passphrase", "a long passphrase 1", "--decrypt"], input=enc,
                        capture_output=True)
    user.close()
    assert ok.stdout == b"hello"
    # Refusals: a second key, a short passphrase.
    code = cli.main(["--settings", str(env / "settings.toml"), "key", "generate", ALICE,
                     str(tmp_path / "x.asc")], cli.Env(stdin=io.StringIO("a long passphrase 1\n"),
                                                        stdout=io.StringIO(), stderr=err))
    assert code == 2 and "has a key already" in err.getvalue()
    code = cli.main(["--settings", str(env / "settings.toml"), "key", "generate", "bob@example.org",
                     str(tmp_path / "y.asc")], cli.Env(stdin=io.StringIO("short\n"),
                                                        stdout=io.StringIO(), stderr=err))
    assert code == 2 and "shorter than 12" in err.getvalue() and not (tmp_path / "y.asc").exists()


# --- OpenPGP off: never plaintext for a user who has a key or requires encryption ---------------
OFF = SETTINGS.replace('encrypt = "required"\n', "") + "\n[openpgp]\nenabled = false\n"


def test_off_with_a_user_requiring_encryption_is_a_settings_error(env: Path) -> None:
    (env / "settings.toml").write_text(SETTINGS + "\n[openpgp]\nenabled = false\n")
    code, _, err = run(env, "list")
    assert code == 2
    assert ('users[1].encrypt: "required" needs OpenPGP, which [openpgp] enabled = false turns '
            'off; keep [openpgp] enabled = true, or set this user\'s encrypt = "when-key"') in err
    (env / "settings.toml").write_text(SETTINGS + "\n[openpgp]\nenabled = 1\n")
    code, _, err = run(env, "list")
    assert code == 2 and "openpgp.enabled: 1 is not true or false" in err


def test_off_is_refused_at_apply_while_a_user_has_a_key(env: Path, device: Device, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from appliance import registry
    from appliance.core import errors, pipeline, settings, system

    assert run(env, "import", ALICE, keyfile(env, device.export(ALICE)))[0] == 0
    (env / "settings.toml").write_text(OFF)
    s = registry.load_settings(env / "settings.toml")
    with pytest.raises(errors.SettingsError) as e:  # the keyring in APPLIANCE_GNUPGHOME
        pipeline.preflight(system.Root("/"), s, registry.FEATURES, "settings.toml")
    assert e.value.exit_code == 2
    assert (f"openpgp.enabled: false would store mail in plaintext for {ALICE} (who has a key); "
            f"keep [openpgp] enabled = true, or remove that key first with "
            f"`appliance key remove {ALICE}`") in str(e.value)
    # `appliance check` on the box says so too (it compares the file with the box).
    monkeypatch.setattr(settings, "DEFAULT_PATH", env / "settings.toml")
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["check", str(env / "settings.toml")], cli.Env(stdout=out, stderr=err))
    assert code == 2 and "would store mail in plaintext for alice@example.org" in err.getvalue()
    # `appliance apply` (an offline root here: the keyring inside it) says so and writes nothing.
    root = tmp_path / "root"
    (root / "etc/appliance").mkdir(parents=True)
    (root / "etc/appliance/settings.toml").write_text(OFF)
    ring = root / "var/lib/appliance/gnupg"
    ring.mkdir(parents=True)
    (ring / keyring.INDEX).write_bytes((env / "box-gnupg" / keyring.INDEX).read_bytes())
    def written() -> list[Path]:  # but the lock file every changing command takes
        return sorted(p for p in root.rglob("*") if p.name != "apply.lock")

    before = written()
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["--settings", "/etc/appliance/settings.toml", "apply", "--root", str(root)],
                    cli.Env(stdin=io.StringIO(), stdout=out, stderr=err))
    assert code == 2 and "would store mail in plaintext for alice@example.org" in err.getvalue()
    assert written() == before
    # Without keys, off is allowed.
    assert run(env, "remove", ALICE)[0] == 0
    pipeline.preflight(system.Root("/"), s, registry.FEATURES)


def test_no_key_can_be_imported_while_openpgp_is_off(env: Path, device: Device) -> None:
    (env / "settings.toml").write_text(OFF)
    code, _, err = run(env, "import", ALICE, keyfile(env, device.export(ALICE)))
    assert code == 2
    assert "OpenPGP is off ([openpgp] enabled = false)" in err and "set enabled = true" in err
    assert not (env / "box-gnupg" / keyring.INDEX).exists()
    code, out, _ = run(env, "list")
    assert code == 0 and f"{ALICE}: stored in plaintext: OpenPGP is off" in out
