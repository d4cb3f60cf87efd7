from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

# Hashes made once per session with the same tool the CLI uses (openssl passwd -6).
ALICE_HASH = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input="alice-password-1\n",
                            text=True, capture_output=True, check=True).stdout.strip()


def sha512_again(password: str, hashed: str) -> str:
    """`password` hashed with the salt of `hashed` (openssl, as the CLI hashes): equal when it
    is the password the hash was made from."""
    salt = hashed.split("$")[2]
    return subprocess.run(["openssl", "passwd", "-6", "-salt", salt, "-stdin"], input=password + "\n",
                          text=True, capture_output=True, check=True).stdout.strip()


@pytest.fixture(autouse=True)
def private_run_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent's lock lives in /run/appliance on a box; unit tests (no root) get their own."""
    monkeypatch.setenv("APPLIANCE_RUN_DIR", str(tmp_path_factory.mktemp("run")))


# What an apply leaves on the machine it configures: a unit test that made one configured the
# machine running the tests (an edit sent without "--no-apply"), which must never happen.
APPLIED_HERE = ("/var/lib/appliance/owned.json", "/etc/postfix/vmailbox")


@pytest.fixture(autouse=True)
def this_machine_stays_unconfigured() -> Iterator[None]:
    before = {p for p in APPLIED_HERE if os.path.exists(p)}
    yield
    made = {p for p in APPLIED_HERE if os.path.exists(p)} - before
    assert not made, f"this test applied the settings to the machine running it: {sorted(made)}"


@pytest.fixture
def good() -> dict:
    return {
        "domain": "example.org",
        "hostname": "mail.example.org",
        "message_size_limit_mb": 20,
        "users": [
            {"address": "alice@example.org", "password_hash": ALICE_HASH,
             "aliases": ["info@example.org"]},
            {"address": "bob@example.org", "password_hash": ALICE_HASH},
        ],
    }
