"""Redacted abuse reports: RFC 6590 hashing, RFC 5965 structure, no leak."""

from __future__ import annotations

import base64
import email
import io
import os
import re
import stat
from email.message import Message
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance import cli
from appliance.features.spam import arf

from .conftest import ALICE_HASH

KEY = b"k" * 32
DOMAIN = "example.test"

SPAM = b"""Return-Path: <spammer@spam.example>
Received: from spam.example (spam.example [203.0.113.99])
\tby mail.example.test (Postfix) with ESMTPS id 4Abc
\tfor <alice@example.test>; Mon, 23 Nov 2026 10:00:00 +0000 (UTC)
Delivered-To: alice@example.test
From: Spammer <spammer@spam.example>
To: Alice <alice@example.test>, Bob@Example.TEST
Cc: =?utf-8?q?Carol_carol@example.test?= <carol@mail.example.test>
Subject: =?utf-8?q?hello_alice@example.test?=
Message-ID: <x1@spam.example>
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="b1"

preamble for dave@example.test
--b1
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable

Dear alice@example.test, write to erin@exam=
ple.test or b=C3=B6b@example.test.
--b1
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: base64

""" + base64.encodebytes(b"<a href='mailto:alice@example.test'>frank@example.test</a>") + b"""
--b1--
"""

USERS = ("alice", "bob", "carol", "dave", "erin", "b\u00f6b", "frank")


def texts(msg: Message) -> list[str]:
    """Every header (raw and decoded) and every decoded payload, nested ones too."""
    return list(arf._walk_texts(msg))


def report_text(data: bytes, raw: bool = True) -> str:
    """The report decoded everywhere, and (unless a quoted-printable part makes the raw text
    misleading: soft line breaks cut a hash in two) the raw text too."""
    decoded = "\n".join(texts(email.message_from_bytes(data)))
    return decoded + ("\n" + data.decode("utf-8", "replace") if raw else "")


def test_rfc6590_appendix_example_in_compat_mode() -> None:
    assert arf.redact_local("bob", b"potatoes", compat=True) == "rZ8cqXWGiKHzhz1MsFRGTysHia4="


def test_default_is_hmac_sha256_base64_and_case_insensitive() -> None:
    import hashlib
    import hmac

    want = base64.b64encode(hmac.new(KEY, b"alice", hashlib.sha256).digest()).decode()
    assert arf.redact_local("alice", KEY) == want == arf.redact_local("Alice", KEY)
    assert arf.redact_local("alice", b"x" * 32) != want  # keyed: another box, another hash


def test_report_is_multipart_report_with_the_rfc5965_fields() -> None:
    rep = arf.build_report(SPAM, (DOMAIN,), KEY)
    msg = email.message_from_bytes(rep.data)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "feedback-report"
    parts = msg.get_payload()
    assert [p.get_content_type() for p in parts] == ["text/plain", "message/feedback-report",
                                                     "message/rfc822"]
    fb = parts[1].get_payload()[0]
    assert fb["Feedback-Type"] == "abuse"
    assert fb["Version"] == "1"
    assert fb["User-Agent"].startswith("mail-appliance/")
    assert fb["Original-Mail-From"] == "<spammer@spam.example>"
    assert fb["Arrival-Date"] == "Mon, 23 Nov 2026 10:00:00 +0000 (UTC)"
    assert fb["Source-IP"] == "203.0.113.99"
    assert fb["Reported-Domain"] == "spam.example"
    assert fb["Original-Rcpt-To"] == f"<{arf.redact_local('alice', KEY)}@{DOMAIN}>"
    assert rep.abuse_address == "abuse@spam.example" and msg["To"] == "abuse@spam.example"
    original = parts[2].get_payload()[0]
    assert original["Message-ID"] == "<x1@spam.example>"
    assert original["From"] == "Spammer <spammer@spam.example>"


def test_every_user_local_part_is_redacted_consistently_everywhere() -> None:
    rep = arf.build_report(SPAM, (DOMAIN,), KEY)
    text = report_text(rep.data)
    for local in USERS:
        assert not re.search(rf"(?<![\w+/=]){re.escape(local)}@", text, re.IGNORECASE), local
    h = arf.redact_local("alice", KEY)
    original = email.message_from_bytes(rep.data).get_payload()[2].get_payload()[0]
    # the same mailbox has the same hash in the header, the encoded word and both body parts
    assert h in original["To"] and h in arf._decoded_header(original["Subject"])
    plain, html = original.get_payload()
    assert f"{h}@{DOMAIN}" in plain.get_payload(decode=True).decode()
    assert f"mailto:{h}@{DOMAIN}" in html.get_payload(decode=True).decode()
    assert f"{arf.redact_local('erin', KEY)}@{DOMAIN}" in plain.get_payload(decode=True).decode()
    assert arf.redact_local(USERS[5], KEY) + "@" + DOMAIN in plain.get_payload(decode=True).decode()
    assert arf.redact_local("bob", KEY) + "@Example.TEST" in original["To"]
    assert "spammer@spam.example" in text  # other domains are evidence, kept as they are


def test_headers_only_mode_attaches_text_rfc822_headers() -> None:
    rep = arf.build_report(SPAM, (DOMAIN,), KEY, headers_only=True)
    parts = email.message_from_bytes(rep.data).get_payload()
    assert parts[2].get_content_type() == "text/rfc822-headers"
    body = parts[2].get_payload()
    assert "Dear" not in body and "Received: from spam.example" in body
    assert "alice@" not in body


def test_a_leak_it_cannot_rewrite_stops_the_report() -> None:
    # An address split across two encoded words: no part of the tool can rewrite it; the
    # final check must refuse rather than send it.
    raw = (b"From: x@spam.example\nSubject: =?utf-8?q?ali?= =?utf-8?q?ce=40example=2Etest?=\n"
           b"\nbody\n")
    with pytest.raises(arf.ApplianceError, match="unredacted"):
        arf.build_report(raw, (DOMAIN,), KEY)


def test_not_a_message_is_refused() -> None:
    with pytest.raises(arf.ReportError, match="empty"):
        arf.build_report(b"  \n", (DOMAIN,), KEY)


def test_longer_domain_and_other_domains_are_not_touched() -> None:
    r = arf.Redactor((DOMAIN,), KEY)
    s = "a@example.test.evil.org b@notexample.test c@sub.example.test."
    out = r.text(s)
    assert out.startswith("a@example.test.evil.org b@notexample.test ")
    assert f"{arf.redact_local('c', KEY)}@sub.example.test." in out


_local = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._+\-]{0,20}", fullmatch=True).filter(
    lambda s: not s.endswith(".") and ".." not in s and s.lower() not in arf.ROLE_LOCALS)
_words = st.lists(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")),
                          max_size=15), max_size=5)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(locals_=st.lists(_local, min_size=1, max_size=4), words=_words,
       cte=st.sampled_from(["8bit", "base64", "quoted-printable"]))
def test_no_user_address_survives_any_body(locals_: list[str], words: list[str], cte: str) -> None:
    addrs = [f"{loc}@{DOMAIN}" for loc in locals_]
    body = " ".join(w for pair in zip(words + [""] * len(addrs), addrs, strict=False)
                    for w in pair) + "\n"
    m = email.message.EmailMessage()
    m["From"] = "x@spam.example"
    m["To"] = ", ".join(addrs)
    m["Subject"] = "for " + addrs[0]
    m.set_content(body, cte=cte if cte != "8bit" else "8bit")
    raw = m.as_bytes()
    rep = arf.build_report(raw, (DOMAIN,), KEY)
    text = report_text(rep.data, raw=cte != "quoted-printable")
    hashes = {arf.redact_local(loc, KEY) for loc in locals_}
    for found in re.finditer(rf"([^\s<>,;:\"'(]+)@{re.escape(DOMAIN)}", text, re.IGNORECASE):
        local = found.group(1)
        ok = any(local.endswith(h) for h in hashes) or local.startswith("arf.")
        assert ok or local.lower() in arf.ROLE_LOCALS, local
    inner = email.message_from_bytes(rep.data).get_payload()[2].get_payload()[0]
    decoded = inner.get_payload(decode=True).decode("utf-8", "replace")
    for loc in locals_:
        assert f"{arf.redact_local(loc, KEY)}@{DOMAIN}" in decoded


def test_secret_is_made_once_0600(tmp_path: Path) -> None:
    p = tmp_path / "lib" / "arf.key"
    k1 = arf.load_key(str(p))
    assert len(k1) == arf.KEY_BYTES and stat.S_IMODE(os.stat(p).st_mode) == 0o600
    assert arf.load_key(str(p)) == k1
    assert not [f for f in p.parent.iterdir() if f.name != "arf.key"]  # no temp file left


def test_cli_prints_a_report_and_makes_the_key(tmp_path: Path) -> None:
    s = tmp_path / "settings.toml"
    s.write_text(f'domain = "{DOMAIN}"\n[[users]]\naddress = "alice@{DOMAIN}"\n'
                 f'password_hash = "{ALICE_HASH}"\n')
    msg = tmp_path / "spam.eml"
    msg.write_bytes(SPAM)
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["--settings", str(s), "report-spam", str(msg), "--key-file",
                     str(tmp_path / "k")], cli.Env(stdout=out, stderr=err))
    assert code == 0, err.getvalue()
    rep = email.message_from_string(out.getvalue())
    assert rep.get_content_type() == "multipart/report"
    assert "alice@" not in out.getvalue() and (tmp_path / "k").exists()
    code = cli.main(["--settings", str(s), "report-spam", str(tmp_path / "missing.eml")],
                    cli.Env(stdout=out, stderr=err))
    assert code == 2 and "cannot read the message" in err.getvalue()
