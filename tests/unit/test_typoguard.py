"""The typo-domain guard (issue #10): a table of confusable and legitimate near-names, in both
history modes (plain names and salted hashes)."""

from __future__ import annotations

import pytest

from appliance import typoguard as tg

KNOWN = ["army.mil", "gmail.com", "example.org", "paypal.com", "microsoft.com", "state.gov",
         "whitehouse.gov", "bund.de", "mit.edu", "posteo.net", "mailbox.org", "ox.ac.uk",
         "hmrc.gov.uk", "apple.com", "bücher.de"]


def puny(unicode_label: str) -> str:
    return "xn--" + unicode_label.encode("punycode").decode("ascii")


# (recipient, the known domain it must be reported as a near miss of, kind)
CONFUSABLE = [
    ("army.ml", "army.mil", "tld"),
    ("ARMY.ML.", "army.mil", "tld"),
    ("army.mi", "army.mil", "edit"),
    ("amry.mil", "army.mil", "edit"),
    ("arny.mil", "army.mil", "edit"),
    ("armyy.mil", "army.mil", "edit"),
    ("state.gv", "state.gov", "tld"),
    ("state.go", "state.gov", "tld"),
    ("whitehouse.gv", "whitehouse.gov", "tld"),
    ("whitehuose.gov", "whitehouse.gov", "edit"),
    ("gmial.com", "gmail.com", "edit"),
    ("gmal.com", "gmail.com", "edit"),
    ("gmaill.com", "gmail.com", "edit"),
    ("gnail.com", "gmail.com", "edit"),
    ("gmail.co", "gmail.com", "tld"),
    ("gmail.cm", "gmail.com", "tld"),
    ("gmail.om", "gmail.com", "tld"),
    ("gmail.con", "gmail.com", "edit"),
    ("paypa1.com", "paypal.com", "edit"),
    ("paypal.co", "paypal.com", "tld"),
    ("pаypal.com", "paypal.com", "homoglyph"),  # Cyrillic а
    (puny("pаypal") + ".com", "paypal.com", "homoglyph"),
    ("rnicrosoft.com", "microsoft.com", "homoglyph"),
    ("micros0ft.com", "microsoft.com", "edit"),
    ("mіcrosoft.com", "microsoft.com", "homoglyph"),  # Cyrillic і
    ("examlpe.org", "example.org", "edit"),
    ("example.or", "example.org", "tld"),
    ("exampl.org", "example.org", "edit"),
    ("bund.dk", "bund.de", "tld"),
    ("mit.ed", "mit.edu", "tld"),
    ("posteo.ne", "posteo.net", "tld"),
    ("mailbox.orgg", "mailbox.org", "edit"),
    ("hmrc.gov.uk.com", "hmrc.gov.uk", "tld"),
    ("appie.com", "apple.com", "edit"),
    ("аpple.com", "apple.com", "homoglyph"),  # Cyrillic а
    ("bucher.de", "bücher.de", "homoglyph"),
    ("ox.ac.k", "ox.ac.uk", "edit"),
]

# Near names the user may well mean: known ones, hosts under known ones, far enough away.
LEGITIMATE = [
    "army.mil", "ARMY.MIL", "army.mil.", "navy.mil", "af.mil", "gmail.com", "mail.gmail.com",
    "googlemail.com", "gmail.de", "example.org", "lists.example.org", "example.net",
    "example.com", "paypal.de", "paypal.com", "microsoft.de", "outlook.com", "state.gov",
    "usa.gov", "bund.de", "bundestag.de", "mit.edu", "harvard.edu", "posteo.de",
    "mailbox.org", "cam.ac.uk", "ox.ac.uk", "www.hmrc.gov.uk", "apple.com", "bücher.de",
    puny("bücher") + ".de", "icloud.com", "proton.me", "riseup.net",
]

MODES = {"plain": None, "hashed": b"per-box-salt-0123456789abcdef"}


def history(mode: str, extra: tuple[str, ...] = ()) -> tg.History:
    h = tg.History(salt=MODES[mode])
    for d in (*KNOWN, *extra):
        h.add(d)
    return h


def test_tables_are_big_enough() -> None:
    assert len(CONFUSABLE) >= 30 and len(LEGITIMATE) >= 30


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("domain", "known", "kind"), CONFUSABLE)
def test_confusable_is_held_naming_both_domains(mode: str, domain: str, known: str, kind: str) -> None:
    v = tg.check(domain, history(mode))
    assert v.hold, v
    assert v.kind == kind, v
    if kind != "homoglyph" or mode == "plain":
        assert v.known == tg.normalize(known)
    assert tg.normalize(domain) in v.notice() and v.known in v.notice()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("domain", LEGITIMATE)
def test_legitimate_near_name_is_not_held(mode: str, domain: str) -> None:
    v = tg.check(domain, history(mode))
    assert not v.hold, v
    assert v.notice() == ""


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("domain", "known", "kind"), CONFUSABLE)
def test_no_hold_once_corresponded_with(mode: str, domain: str, known: str, kind: str) -> None:
    assert not tg.check(domain, history(mode, (domain,))).hold


def test_hashed_store_holds_no_names_and_round_trips() -> None:
    h = history("hashed")
    text = h.dumps()
    assert "army" not in text and "gmail" not in text
    again = tg.History.loads(text, salt=MODES["hashed"])
    assert again.exact == h.exact and tg.check("army.ml", again).known == "army.mil"
    other_salt = tg.History.loads(text, salt=b"another box")
    assert not tg.check("army.ml", other_salt).hold  # salted: useless elsewhere


def test_plain_store_round_trips_and_bad_lines_are_refused() -> None:
    h = history("plain")
    assert "d army.mil" in h.dumps()
    assert tg.History.loads(h.dumps()).exact == h.exact
    with pytest.raises(tg.DomainError, match="history line 1"):
        tg.History.loads("x army.mil\n")


@pytest.mark.parametrize("bad", ["", "   ", "a b.com", "x" * 300])
def test_not_a_domain_is_an_error(bad: str) -> None:
    with pytest.raises(tg.DomainError):
        tg.check(bad, history("plain"))


def test_edits1_is_osa_distance_one() -> None:
    e = set(tg.edits1("ab.c"))
    assert {"b.c", "ba.c", "xab.c", "ab.cx", "ax.c"} <= e and "ab.c" not in e
    assert "ba.cx" not in e
