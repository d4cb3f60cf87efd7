"""DKIM keys (appliance/dkim.py): the rollover steps against a target root in a temp dir, the
record's syntax checked by an independent parser (dkimpy) against the key that signs."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from appliance import registry
from appliance.core import pipeline, system
from appliance.core.records import Known
from appliance.features.dns.records import _norm
from appliance.features.spam import dkim
from appliance.registry import parse_settings as parse

JAN, FEB = 1767225600.0, 1769904000.0  # 2026-01-01, 2026-02-01 (UTC)


@pytest.fixture
def root(tmp_path: Path) -> system.Root:
    # An offline target root whose passwd/group name the current user as root and _rspamd, so
    # the test runs unprivileged and the files get real owners.
    (tmp_path / "etc").mkdir()
    uid, gid = os.getuid(), os.getgid()
    (tmp_path / "etc/passwd").write_text(f"root:x:{uid}:{gid}::/root:/bin/sh\n"
                                         f"_rspamd:x:{uid}:{gid}::/var/lib/rspamd:/bin/false\n")
    (tmp_path / "etc/group").write_text(f"root:x:{gid}:\n_rspamd:x:{gid}:\n")
    return system.Root(tmp_path)


def test_first_key_then_nothing_more(root: system.Root) -> None:
    assert dkim.ensure_active(root, 2048, now=JAN)
    assert not dkim.ensure_active(root, 2048, now=FEB)
    keys = dkim.load(root)
    assert keys.active == "m202601" and keys.published() == ["m202601"]
    key = root.read(dkim.key_path("m202601"))
    assert key.content and key.content.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert key.mode == 0o640  # readable by rspamd's group, nobody else


def test_rollover_activate_forget(root: system.Root) -> None:
    dkim.ensure_active(root, 2048, now=JAN)
    new = dkim.rollover(root, 2048, now=JAN)
    assert new == "m202601b"  # same month: a letter, never the same selector twice
    with pytest.raises(dkim.DkimError, match="already waiting"):
        dkim.rollover(root, 2048, now=JAN)
    # Not published yet: signing must not move to a key receivers cannot find.
    with pytest.raises(dkim.DkimError, match="not published"):
        dkim.activate(root, ["AAAA"])
    assert dkim.load(root).active == "m202601"
    keys = dkim.activate(root, [dkim.public_key_b64(root, new)])
    assert (keys.active, keys.next, keys.retired) == (new, None, ("m202601",))
    assert keys.published() == [new, "m202601"]  # the old record stays while mail may be in flight
    assert dkim.forget(root) == ["m202601"]
    assert not root.exists(dkim.key_path("m202601")) and dkim.load(root).published() == [new]


def test_damaged_state_is_an_error_not_a_new_key(root: system.Root) -> None:
    root.write_atomic(dkim.STATE, system.FileState(b"{not json", 0o644))
    with pytest.raises(dkim.DkimError, match="damaged"):
        dkim.ensure_active(root, 2048)


def test_record_is_split_into_dns_strings_and_matches_the_signing_key(root: system.Root) -> None:
    import dkim as dkimpy  # dkimpy (python3-dkim), an independent implementation

    dkim.ensure_active(root, 2048, now=JAN)
    p = dkim.public_key_b64(root, "m202601")
    s = parse({"domain": "example.org", "users": [{"address": "a@example.org",
               "password_hash": "$6$x$" + "y" * 86}]})
    wanted = pipeline.dns_records(s, Known(dkim=(("m202601", p),)), registry.FEATURES)
    rec = next(r for r in wanted if "_domainkey" in r.name)
    assert rec.name == "m202601._domainkey.example.org." and rec.rtype == "TXT"
    strings = re.findall(r'"([^"]*)"', rec.value)
    assert len(strings) > 1 and all(len(x) <= 255 for x in strings)
    joined = _norm("TXT", rec.value)
    # Sign a message with the key file, verify it with the published record's text.
    key_pem = root.read(dkim.key_path("m202601")).content
    assert key_pem is not None
    msg = b"From: a@example.org\r\nTo: b@example.net\r\nSubject: hi\r\n\r\nhello\r\n"
    sig = dkimpy.sign(msg, b"m202601", b"example.org", key_pem, include_headers=[b"from", b"subject"])
    record = "".join(strings).encode()
    assert joined == record.decode().lower()
    assert dkimpy.verify(sig + msg, dnsfunc=lambda name, timeout=5: record)
