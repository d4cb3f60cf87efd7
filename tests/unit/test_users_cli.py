"""Settings edits by `appliance user|alias` and `appliance check`, through the CLI's injectable
environment (no root: edits use --no-apply; the lab covers edit + apply)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from appliance import cli, registry

from .conftest import ALICE_HASH

SETTINGS = f"""# My mailbox settings -- keep this comment
domain = "example.org"   # my own domain

[[users]]
address = "alice@example.org"  # me
password_hash = "{ALICE_HASH}"
"""


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return False


def run(args: list[str], stdin: str = "") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(args, cli.Env(stdin=Tty(stdin), stdout=out, stderr=err))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    p = tmp_path / "settings.toml"
    p.write_text(SETTINGS)
    p.chmod(0o600)
    return p


def test_check_ok_and_bad(path: Path) -> None:
    assert run(["check", str(path)])[0] == 0
    path.write_text(SETTINGS.replace("alice@example.org", "alice@other.org"))
    code, _, err = run(["check", str(path)])
    assert code == 2
    assert 'users[0].address: "alice@other.org" is outside domain "example.org"' in err


def test_user_add_hashes_from_stdin_keeps_comments_and_mode(path: Path) -> None:
    code, out, err = run(["--settings", str(path), "user", "add", "bob@example.org", "--alias",
                          "b@example.org", "--no-apply"], stdin="bob-password-123\n")
    assert code == 0, err
    text = path.read_text()
    assert "# My mailbox settings -- keep this comment" in text and "# my own domain" in text
    assert "bob-password-123" not in text
    s = registry.load_settings(path)
    assert s.users[1].address == "bob@example.org" and s.users[1].aliases == ("b@example.org",)
    assert s.users[1].password_hash.startswith("$6$")
    assert path.stat().st_mode & 0o777 == 0o600


def test_passwords_never_come_from_argv() -> None:
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["user", "add", "x@example.org", "--password", "secret"])


def test_short_password_refused_and_nothing_written(path: Path) -> None:
    code, _, err = run(["--settings", str(path), "user", "add", "bob@example.org", "--no-apply"],
                       stdin="short\n")
    assert code == 2 and "shorter than 10" in err
    assert path.read_text() == SETTINGS


def test_invalid_edit_is_refused_and_nothing_written(path: Path) -> None:
    code, _, err = run(["--settings", str(path), "user", "add", "bob@other.org", "--no-apply"],
                       stdin="bob-password-123\n")
    assert code == 2 and 'is outside domain "example.org"' in err
    assert path.read_text() == SETTINGS


def test_alias_add_list_del_and_user_del(path: Path) -> None:
    run(["--settings", str(path), "user", "add", "bob@example.org", "--no-apply"],
        stdin="bob-password-123\n")
    assert run(["--settings", str(path), "alias", "add", "hi@example.org", "bob@example.org",
                "--no-apply"])[0] == 0
    _, out, _ = run(["--settings", str(path), "alias", "list"])
    assert "hi@example.org -> bob@example.org" in out
    assert "postmaster@example.org -> alice@example.org" in out
    assert run(["--settings", str(path), "alias", "del", "hi@example.org", "--no-apply"])[0] == 0
    assert "hi@example.org" not in path.read_text()
    code, _, err = run(["--settings", str(path), "user", "del", "alice@example.org", "--no-apply"])
    assert code == 0, err
    assert [u.address for u in registry.load_settings(path).users] == ["bob@example.org"]
    code, _, err = run(["--settings", str(path), "user", "del", "bob@example.org", "--no-apply"])
    assert code == 2 and "only user" in err


def test_passwd_replaces_the_hash(path: Path) -> None:
    code, _, err = run(["--settings", str(path), "user", "passwd", "alice@example.org",
                        "--no-apply"], stdin="a-new-password-42\n")
    assert code == 0, err
    assert registry.load_settings(path).users[0].password_hash != ALICE_HASH
