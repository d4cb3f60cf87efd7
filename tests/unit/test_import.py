"""`appliance import`: the old server's address, the configuration doveadm gets (the password
only by file), Dovecot's folder report, and what is refused before anything is copied. The
copy itself, its interruption and the untouched source: tests/lab/test_import.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.core.errors import UsageError
from appliance.features.mail import imports
from appliance.features.openpgp import feature as openpgp

from . import test_users_cli as tuc
from .test_users_cli import run

path = tuc.path


@pytest.mark.parametrize(("url", "want"), [
    ("imaps://imap.old.example", imports.Source("imap.old.example", 993, "imaps")),
    ("imaps://imap.old.example:9993/", imports.Source("imap.old.example", 9993, "imaps")),
    ("imap://imap.old.example", imports.Source("imap.old.example", 143, "starttls")),
])
def test_an_imap_address_names_host_port_and_tls(url: str, want: imports.Source) -> None:
    assert imports.parse_source(url) == want


@pytest.mark.parametrize("url", ["https://imap.old.example", "imap.old.example",
                                 "imaps://bob@imap.old.example", "imaps://imap.old.example/INBOX",
                                 "imaps://imap.old.example:x"])
def test_anything_else_is_refused_with_the_form_to_use(url: str) -> None:
    with pytest.raises(UsageError) as e:
        imports.parse_source(url)
    assert "imaps://" in str(e.value)


def test_the_password_reaches_doveadm_by_file_and_tls_is_verified() -> None:
    text = imports.config(imports.parse_source("imap://old.example"), "bob.old", "/run/x/password",
                          "/etc/ssl/certs/ca-certificates.crt")
    assert "imapc_password = </run/x/password\n" in text
    assert "imapc_ssl = starttls\n" in text and "imapc_ssl_verify = yes\n" in text
    assert text.startswith("!include /etc/dovecot/dovecot.conf\n")
    for login in ('bob" x', "bob%u"):  # Dovecot would read a quote or expand a %-variable
        with pytest.raises(UsageError):
            imports.config(imports.parse_source("imaps://old.example"), login, "/p", "/ca")


def test_dovecots_folder_report_is_read_with_names_that_have_spaces() -> None:
    report = "mailbox\tmessages\nINBOX\t200\nArchive/2019\t17\nOld mail\t0\n"
    assert imports.parse_status(report) == [("INBOX", 200), ("Archive/2019", 17), ("Old mail", 0)]


def test_nothing_is_copied_for_an_unknown_user_or_one_with_a_key(path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*a: object, **k: object) -> int:
        raise AssertionError("an import ran")

    monkeypatch.setattr(imports, "run_import", never)
    args = ["--settings", str(path), "import", "--from", "imaps://old.example", "--login", "bob"]
    code, _, err = run([*args, "--user", "nobody@example.org"])
    assert code == 2 and 'no user "nobody@example.org"' in err
    # The keyring is a stand-in here: that alice has a key is all this refusal reads (it asks
    # the features which users' mail is sealed; OpenPGP answers).
    monkeypatch.setattr(openpgp, "read_index", lambda home: {"alice@example.org": object()})
    code, _, err = run([*args, "--user", "alice@example.org"])
    assert code == 2 and "nothing was copied" in err
    monkeypatch.setattr(openpgp, "read_index", lambda home: {})
    path.write_text(path.read_text().replace('address = "alice@example.org"',
                                             'address = "alice@example.org"\nencrypt = "required"'))
    code, _, err = run([*args, "--user", "alice@example.org"])
    assert code == 2 and "alice@example.org's mail is stored encrypted" in err and "nothing was copied" in err
