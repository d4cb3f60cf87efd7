"""The typo-domain guard: a table of confusable and legitimate near-names, in both
history modes (plain names and salted hashes)."""

from __future__ import annotations

import pytest

from appliance.features.privacy import typoguard as tg

KNOWN = ["army.mil", "gmail.com", "example.org", "paypal.com", "microsoft.com", "state.gov",
         "whitehouse.gov", "bund.de", "mit.edu", "posteo.net", "mailbox.org", "ox.ac.uk",
         "hmrc.gov.uk", "apple.com", "bücher.de",
         # registrable domains under multi-label public suffixes, ICANN and private
         "bbc.co.uk", "rakuten.co.jp", "commbank.com.au", "alice.github.io", "city.kawasaki.jp"]


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
    # Labels in front of a near-miss registrable domain do not hide it.
    ("mail.army.ml", "army.mil", "tld"),
    ("lists.gmai1.com", "gmail.com", "edit"),
    ("smtp.gmail.co", "gmail.com", "tld"),
    ("bbc.co.uj", "bbc.co.uk", "edit"),  # unknown TLD: the list sees co.uj as registrable
    ("mail.bcc.co.uk", "bbc.co.uk", "edit"),
    ("a.b.c.army.ml", "army.mil", "tld"),
    ("news.bbc.co.uj", "bbc.co.uk", "edit"),
    ("x.state.gv", "state.gov", "tld"),
    ("lists.examp1e.org", "example.org", "edit"),
    ("www.hmrc.gov.uk.com", "hmrc.gov.uk", "tld"),  # uk.com is a (private) public suffix
    ("www.pаypal.com", "paypal.com", "homoglyph"),  # Cyrillic а
    ("mail." + puny("pаypal") + ".com", "paypal.com", "homoglyph"),
    ("mail.rakutn.co.jp", "rakuten.co.jp", "edit"),  # co.jp
    ("shop.rakuten.co.jo", "rakuten.co.jp", "edit"),
    ("netbank.comrnbank.com.au", "commbank.com.au", "homoglyph"),  # com.au, rn for m
    ("netbank.commbank.com.aux", "commbank.com.au", "edit"),
    ("docs.alcie.github.io", "alice.github.io", "edit"),  # github.io: private suffixes count
    ("www.alice.githb.io", "alice.github.io", "edit"),
]

# Near names the user may well mean: known ones, hosts under known ones, far enough away.
LEGITIMATE = [
    "army.mil", "ARMY.MIL", "army.mil.", "navy.mil", "af.mil", "gmail.com", "mail.gmail.com",
    "googlemail.com", "gmail.de", "example.org", "lists.example.org", "example.net",
    "example.com", "paypal.de", "paypal.com", "microsoft.de", "outlook.com", "state.gov",
    "usa.gov", "bund.de", "bundestag.de", "mit.edu", "harvard.edu", "posteo.de",
    "mailbox.org", "cam.ac.uk", "ox.ac.uk", "www.hmrc.gov.uk", "apple.com", "bücher.de",
    puny("bücher") + ".de", "icloud.com", "proton.me", "riseup.net",
    # Hosts under a known registrable domain, other owners under a shared suffix, and names
    # with no registrable domain at all (compared whole, never a crash).
    "mail.army.mil", "a.b.army.mil", "news.bbc.co.uk", "www.rakuten.co.jp", "rakuten.ne.jp",
    "netbank.commbank.com.au", "docs.alice.github.io", "bob.github.io", "www.city.kawasaki.jp",
    "co.uk", "github.io", "com.au", "localhost", "mil", "[192.0.2.1]", "192.0.2.1",
    "[ipv6:2001:db8::1]", "mail.example.test",
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


# --- Registrable domains, by Debian's Public Suffix List ----------------------------------------

@pytest.mark.parametrize(("name", "expected"), [
    ("army.mil", "army.mil"), ("mail.army.mil", "army.mil"), ("news.bbc.co.uk", "bbc.co.uk"),
    ("a.b.rakuten.co.jp", "rakuten.co.jp"), ("netbank.commbank.com.au", "commbank.com.au"),
    ("docs.alice.github.io", "alice.github.io"),  # the private section counts
    ("www.city.kawasaki.jp", "city.kawasaki.jp"),  # an exception rule
    ("mail.example.test", "example.test"),  # unknown top-level domain: the default rule
    ("bbc.co.uj", "co.uj"), ("www.hmrc.gov.uk.com", "gov.uk.com"), ("x.bücher.de", "bücher.de"),
    ("co.uk", None), ("github.io", None), ("foo.kawasaki.jp", None), ("localhost", None),
    ("[192.0.2.1]", None), ("192.0.2.1", None), ("2001:db8::1", None), ("a..b", None),
])
def test_registrable_domain(name: str, expected: str | None) -> None:
    assert tg.registrable(name) == expected


def test_the_list_is_debians_file_read_explicitly(tmp_path, monkeypatch) -> None:
    assert tg.PSL_FILE == "/usr/share/publicsuffix/public_suffix_list.dat"
    small = tmp_path / "psl.dat"
    small.write_text("// a list that knows uk but not co.uk\nuk\n")
    monkeypatch.setattr(tg, "PSL_FILE", str(small))
    tg._psl.cache_clear()
    try:
        assert tg.registrable("news.bbc.co.uk") == "co.uk"  # read from that file, nothing else
        monkeypatch.setattr(tg, "PSL_FILE", str(tmp_path / "missing.dat"))
        tg._psl.cache_clear()
        with pytest.raises(tg.SuffixListError, match="apt-get install publicsuffix"):
            tg.check("army.ml", history("plain"))
    finally:
        monkeypatch.undo()
        tg._psl.cache_clear()
    assert tg.registrable("news.bbc.co.uk") == "bbc.co.uk"


@pytest.mark.parametrize("mode", MODES)
def test_history_keeps_registrable_domains(mode: str) -> None:
    h = tg.History(salt=MODES[mode])
    assert h.add("Mail.Army.MIL.") == "army.mil"
    assert h.add("news.bbc.co.uk") == "bbc.co.uk"
    assert h.add("co.uk") == "co.uk" and h.add("localhost") == "localhost"  # kept whole
    assert h.knows("army.mil") and not h.knows("mail.army.mil")
    assert not tg.check("www.army.mil", h).hold and tg.check("army.ml", h).known == "army.mil"
    assert tg.check("mail.army.ml", h).known == "army.mil"
    assert not tg.check("sport.bbc.co.uk", h).hold and tg.check("bbc.co.uj", h).hold
    # a known public suffix does not vouch for the names under it
    assert tg.check("bbc.co.uk", tg.History(salt=MODES[mode], exact={h._h("co.uk")})).kind == "new"


def test_plain_history_of_whole_names_is_normalised_when_loaded() -> None:
    old = "d lists.example.org\nd mail.army.mil\ns llsts.example.org\ns mall.army.mll\n"
    h = tg.History.loads(old)
    assert {"example.org", "army.mil"} <= h.exact
    assert not tg.check("lists.example.org", h).hold and not tg.check("news.example.org", h).hold
    assert tg.check("lists.examp1e.org", h).known == "example.org"
    assert tg.check("army.ml", h).known == "army.mil"
    assert "d army.mil" in h.dumps()


def test_hashed_history_of_whole_names_still_matches() -> None:
    salt = MODES["hashed"]
    legacy = tg.History(salt=salt)
    legacy.exact.add(legacy._h("lists.example.org"))  # what an older version stored
    legacy.skeletons.add(legacy._h(tg.skeleton("lists.example.org")))
    h = tg.History.loads(legacy.dumps(), salt=salt)
    assert not tg.check("lists.example.org", h).hold
    assert not tg.check("a.lists.example.org", h).hold
    assert tg.check("lists.exampel.org", h).known == "lists.example.org"


def test_a_slip_that_is_itself_a_public_suffix() -> None:
    """*.kawasaki.jp, except city.kawasaki.jp: a slip in `city` makes a public suffix, compared
    whole (held); a host under it is, by the list, a registrable domain of its own (not held)."""
    h = history("plain")
    assert tg.check("clty.kawasaki.jp", h).known == "city.kawasaki.jp"
    assert tg.registrable("www.clty.kawasaki.jp") == "www.clty.kawasaki.jp"
    assert not tg.check("www.clty.kawasaki.jp", h).hold
    assert not tg.check("www.city.kawasaki.jp", h).hold
