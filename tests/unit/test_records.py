"""The records and the facts they depend on come from the features through the core: who tells
what, which address is public, and ports opened only for a while."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from appliance import registry
from appliance.core import pipeline, system
from appliance.core.feature import Feature
from appliance.core.records import Known

from .conftest import ALICE_HASH

GOOD = {"domain": "example.org", "users": [{"address": "a@example.org", "password_hash": ALICE_HASH}]}


def teller(name: str, **told: Any) -> Feature:
    return Feature(name, "README.md", known=lambda root, s: told)


def test_the_most_direct_address_is_the_public_one(tmp_path: Path) -> None:
    s, root = registry.parse_settings(GOOD), system.Root(tmp_path)
    router = teller("upnp", router_ipv4="203.0.113.5")
    configured = teller("dns", configured_ipv4="203.0.113.6", public_ipv6="2001:db8::6")
    tunnel = teller("relay", tunnel_ipv4="198.51.100.7")
    assert pipeline.known(root, s, [router]).public_ipv4 == "203.0.113.5"
    assert pipeline.known(root, s, [router, configured]).public_ipv4 == "203.0.113.6"
    got = pipeline.known(root, s, [router, configured, tunnel])
    assert (got.public_ipv4, got.public_ipv6) == ("198.51.100.7", "2001:db8::6")
    assert pipeline.known(root, s, [teller("upnp", router_ipv4=None)]) == Known()


def test_a_fact_told_twice_or_unknown_to_the_records_is_a_bug(tmp_path: Path) -> None:
    s, root = registry.parse_settings(GOOD), system.Root(tmp_path)
    with pytest.raises(ValueError, match="both a and b"):
        pipeline.known(root, s, [teller("a", tlsa_311="ab"), teller("b", tlsa_311="cd")])
    with pytest.raises(ValueError, match="no record uses"):
        pipeline.known(root, s, [teller("a", weather="fine")])


def test_the_registered_features_tell_what_the_box_knows(tmp_path: Path) -> None:
    """On an empty box: only what the settings say (no key, no certificate, no UPnP yet)."""
    s = registry.parse_settings({**GOOD, "dns": {"public_ipv4": "203.0.113.9"}, "web": {"enabled": True}})
    got = pipeline.known(system.Root(tmp_path), s, registry.FEATURES)
    assert got == Known(public_ipv4="203.0.113.9")
    names = {(r.name, r.rtype) for r in pipeline.dns_records(s, got, registry.FEATURES)}
    assert {("example.org.", "MX"), ("mail.example.org.", "A"), ("_mta-sts.example.org.", "TXT"),
            ("openpgpkey.example.org.", "CNAME")} <= names


def test_ports_are_exposed_for_the_block_and_closed_after_whatever_happens(tmp_path: Path) -> None:
    events: list[str] = []

    def opener(name: str) -> Feature:
        @contextmanager
        def expose(root: system.Root, s: Any, ports: Sequence[int]) -> Iterator[None]:
            events.append(f"{name} open {list(ports)}")
            try:
                yield
            finally:
                events.append(f"{name} close")

        return Feature(name, "README.md", expose=expose)

    s, root = registry.parse_settings(GOOD), system.Root(tmp_path)
    with pytest.raises(RuntimeError), pipeline.exposed(root, s, [opener("a"), opener("b")], [80]):
        events.append("challenge")
        raise RuntimeError("certbot failed")
    assert events == ["a open [80]", "b open [80]", "challenge", "b close", "a close"]


def test_the_certificate_holds_the_names_features_ask_for() -> None:
    s = registry.parse_settings({**GOOD, "web": {"enabled": True}})
    assert [n for f in registry.FEATURES for n in f.cert_names(s)] == [
        "mta-sts.example.org", "openpgpkey.example.org", "autoconfig.example.org"]
    off = registry.parse_settings(GOOD)  # no web server: the mail host name only
    assert [n for f in registry.FEATURES for n in f.cert_names(off)] == []
