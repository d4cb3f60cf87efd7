"""The typo-domain guard, pure but for reading Debian's Public Suffix List: is a
recipient domain a near miss of a domain the user has corresponded with, while having no history
of its own?

Thousands of messages meant for `.mil` went to `.ml` (Mali) for years because of one missing
letter. Before submitted mail leaves, each recipient domain is checked here:

- names are compared by *registrable domain*: the public suffix (`com`, `co.uk`, `github.io`)
  and one label more, by the Public Suffix List Debian ships (package publicsuffix, read with
  Debian's python3-publicsuffix2 from PSL_FILE, never a bundled or downloaded copy). The history
  stores registrable domains: mail to `mail.army.mil` teaches `army.mil`;
- a domain already corresponded with, or a host under one (`lists.example.org` when
  `example.org` is known), is never held;
- otherwise it is a near miss when one of its *neighbours* is known, whatever the labels in
  front (`mail.army.ml` is held like `army.ml`): the name itself and each of its parents down to
  its registrable domain are checked, so a slip in the suffix (`bbc.co.uj`, where the list sees
  `co.uj` as the registrable domain of an unknown top-level domain) is still seen:
  - a known confusable top-level pair (`.mil`/`.ml`, `.gov`/`.gv`, `.com`/`.cm`/`.co`/`.om`, ...),
  - one edit away (a letter deleted, inserted, replaced) or two neighbouring letters swapped
    (`gmial.com`), the optimal-string-alignment distance 1,
  - the same *skeleton* after Unicode NFKC, case folding and a small confusables table
    (Cyrillic `а` for Latin `a`, `0` for `o`, `rn` for `m`, ...), punycode (`xn--`) decoded first.

The history is a set that only answers membership, so it can hold salted hashes instead of
names (the `hashed` mode): the guard generates the neighbours of the *new* domain and asks
whether one of them is known, and can then name both domains in the notice without the store
ever listing the user's correspondents in clear.

The list's private section counts (`github.io`, `blogspot.com`, `uk.com`): such a suffix is where
one owner's names end and another's begin, so `alice.github.io` and `bob.github.io` are different
correspondents and knowing the first does not vouch for `alcie.github.io`. Names with no
registrable domain (a public suffix itself, a single label) are compared whole, as they are;
address literals and IP addresses are never held (nothing to misread them as).

Histories written before registrable domains were compared hold whole names (`lists.example.org`).
A plain one is normalised when it is loaded; a hashed one cannot be (the names are not there),
and its entries keep matching as before: the name, hosts under it, and its near misses.
"""

from __future__ import annotations

import codecs
import functools
import hashlib
import hmac
import ipaddress
import string
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from appliance.core.errors import ApplianceError

# Debian's copy of the Public Suffix List (package publicsuffix; updated with the system).
PSL_FILE = "/usr/share/publicsuffix/public_suffix_list.dat"

# Top-level domains that are one slip from each other and that are known to receive misdirected
# mail (".ml" for ".mil": the Mali misdirection reported in 2023). Both directions are checked.
CONFUSABLE_TLDS: tuple[tuple[str, str, str], ...] = (
    ("mil", "ml", ".ml is Mali's country domain, not the US military's .mil"),
    ("gov", "gv", ".gv is not .gov"),
    ("gov", "go", ".go is not .gov"),
    ("edu", "ed", ".ed is not .edu"),
    ("com", "co", ".co is Colombia's country domain, not .com"),
    ("com", "cm", ".cm is Cameroon's country domain, not .com"),
    ("com", "om", ".om is Oman's country domain, not .com"),
    ("net", "ne", ".ne is Niger's country domain, not .net"),
    ("org", "or", ".or is not .org"),
    ("gov.uk", "gov.uk.com", "gov.uk.com is a commercial domain, not gov.uk"),
    ("de", "dk", ".dk is Denmark's, not Germany's .de"),
)

# Characters that look alike in common fonts, mapped to one representative (a small part of
# Unicode's confusables.txt: Cyrillic and Greek look-alikes, and the ASCII tricks).
_CONFUSABLE_CHARS = {
    "а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x", "і": "l", "ӏ": "l",
    "ј": "j", "ѕ": "s", "ԁ": "d", "һ": "h", "ԛ": "q", "ԝ": "w", "ё": "e", "ɡ": "g", "ɑ": "a",
    "ο": "o", "α": "a", "ν": "v", "ι": "l", "κ": "k", "ρ": "p", "τ": "t", "υ": "u", "χ": "x",
    "ı": "l", "ℓ": "l", "í": "l", "ì": "l", "ï": "l", "ó": "o", "ò": "o", "ö": "o", "á": "a",
    "à": "a", "ä": "a", "é": "e", "è": "e", "ë": "e", "ú": "u", "ü": "u", "ç": "c",
    "0": "o", "1": "l", "i": "l", "|": "l", "5": "s", "$": "s",
}
_CONFUSABLE_SEQS = (("rn", "m"), ("vv", "w"))
_ALPHABET = string.ascii_lowercase + string.digits + "-."


class DomainError(ValueError):
    pass


class SuffixListError(ApplianceError):
    """The Public Suffix List cannot be read: the guard cannot decide (the caller defers)."""


def normalize(domain: str) -> str:
    """Lower case, no trailing dot, `xn--` labels decoded to Unicode, NFKC."""
    d = domain.strip().rstrip(".").lower()
    if not d or len(d) > 253 or any(c.isspace() for c in d):
        raise DomainError(f"not a domain name: {domain!r}")
    labels = []
    for label in d.split("."):
        if label.startswith("xn--"):
            try:
                label = codecs.decode(label[4:].encode("ascii"), "punycode")
            except (UnicodeError, ValueError):
                pass  # a broken A-label is compared as it is
        labels.append(unicodedata.normalize("NFKC", label).casefold())
    return ".".join(labels)


@functools.cache
def _psl() -> Any:
    """Debian's list, parsed once a process. The list is UTF-8 and our names are Unicode
    (`normalize` decodes `xn--`), so it is read as it is (idna=False)."""
    try:
        from publicsuffix2 import PublicSuffixList
    except ImportError:
        raise SuffixListError("the Public Suffix List parser is missing: "
                              "apt-get install python3-publicsuffix2") from None
    try:
        with open(PSL_FILE, encoding="utf-8") as f:
            return PublicSuffixList(f, idna=False)
    except (OSError, UnicodeDecodeError) as e:
        raise SuffixListError(f"cannot read the Public Suffix List {PSL_FILE} ({e}): "
                              "apt-get install publicsuffix") from None


def is_address(d: str) -> bool:
    """An address literal (`[192.0.2.1]`, `[ipv6:2001:db8::1]`) or a bare IP address."""
    if d.startswith("["):
        return True
    try:
        ipaddress.ip_address(d)
    except ValueError:
        return False
    return True


def registrable(d: str) -> str | None:
    """The registrable domain of a normalized name: its public suffix and one label more
    (`news.bbc.co.uk` -> `bbc.co.uk`, `docs.alice.github.io` -> `alice.github.io`); an unknown
    top-level domain is its own suffix (the list's default rule: `mail.example.test` ->
    `example.test`). None when there is none: a public suffix itself (`co.uk`), a single label,
    an address, a name with an empty label."""
    labels = d.split(".")
    if len(labels) < 2 or "" in labels or is_address(d):
        return None
    # get_tld, not get_sld: get_sld gives the bare top-level label for an unknown one ("test").
    suffix = _psl().get_tld(d, wildcard=True, strict=False)
    n = suffix.count(".") + 1 if suffix else 1
    if len(labels) <= n:
        return None
    return ".".join(labels[-n - 1:])


def base(domain: str) -> str:
    """What the history stores for a name: its registrable domain, or the name itself when it
    has none."""
    d = normalize(domain)
    return registrable(d) or d


def skeleton(domain: str) -> str:
    """What a reader sees: look-alike characters folded to one representative."""
    s = "".join(_CONFUSABLE_CHARS.get(c, c) for c in normalize(domain))
    for seq, rep in _CONFUSABLE_SEQS:
        s = s.replace(seq, rep)
    return s


def edits1(d: str) -> Iterator[str]:
    """Every name one deletion, insertion, substitution or neighbour swap away (OSA distance 1)."""
    for i in range(len(d)):
        yield d[:i] + d[i + 1:]
        if i + 1 < len(d) and d[i] != d[i + 1]:
            yield d[:i] + d[i + 1] + d[i] + d[i + 2:]
        for c in _ALPHABET:
            if c != d[i]:
                yield d[:i] + c + d[i + 1:]
    for i in range(len(d) + 1):
        for c in _ALPHABET:
            yield d[:i] + c + d[i:]


def _tld_swaps(d: str) -> Iterator[tuple[str, str]]:
    for a, b, why in CONFUSABLE_TLDS:
        for x, y in ((a, b), (b, a)):
            if d.endswith("." + x):
                yield d[: -len(x)] + y, why


@dataclass
class History:
    """Domains the user has corresponded with. `salt` set: only salted hashes are kept."""

    salt: bytes | None = None
    exact: set[str] = field(default_factory=set)
    skeletons: set[str] = field(default_factory=set)

    def _h(self, s: str) -> str:
        if self.salt is None:
            return s
        return hmac.new(self.salt, s.encode("utf-8"), hashlib.sha256).hexdigest()[:32]

    def add(self, domain: str) -> str:
        """Remember a correspondent's domain by its registrable domain; returns what was kept."""
        d = base(domain)
        self.exact.add(self._h(d))
        self.skeletons.add(self._h(skeleton(d)))
        return d

    def knows(self, domain: str) -> bool:
        return self._h(domain) in self.exact

    def knows_skeleton(self, sk: str) -> bool:
        return self._h(sk) in self.skeletons

    # The store: one entry a line, "d <name-or-hash>" and "s <skeleton-or-hash>".
    def dumps(self) -> str:
        return "".join(f"d {x}\n" for x in sorted(self.exact)) + "".join(
            f"s {x}\n" for x in sorted(self.skeletons))

    @classmethod
    def loads(cls, text: str, salt: bytes | None = None) -> History:
        h = cls(salt=salt)
        for n, line in enumerate(text.splitlines(), 1):
            kind, _, value = line.strip().partition(" ")
            if not line.strip():
                continue
            if kind not in ("d", "s") or not value:
                raise DomainError(f"history line {n}: expected 'd VALUE' or 's VALUE', got {line!r}")
            if salt is not None:
                (h.exact if kind == "d" else h.skeletons).add(value)
            elif kind == "d":
                # A name. Older files hold whole names (`lists.example.org`): `add` keeps it by
                # its registrable domain and makes its skeleton again (so "s" lines, derived
                # from the names in plain mode, are not read).
                try:
                    h.add(value)
                except DomainError:
                    h.exact.add(value)
        return h


@dataclass(frozen=True)
class Verdict:
    domain: str  # the recipient domain, normalized
    hold: bool
    known: str | None = None  # the domain the user has corresponded with
    kind: str = ""  # "known", "subdomain", "tld", "edit", "homoglyph", "new"
    reason: str = ""

    def notice(self) -> str:
        if not self.hold:
            return ""
        return (f"{self.domain} looks like {self.known}, which you have written to or received "
                f"mail from; {self.domain} itself is new ({self.reason}).")


def check(domain: str, history: History) -> Verdict:
    """Decide for one recipient domain. Raises DomainError for what is not a domain name,
    SuffixListError when the Public Suffix List cannot be read."""
    d = normalize(domain)
    if history.knows(d):
        return Verdict(d, False, d, "known", "corresponded with before")
    if is_address(d):
        return Verdict(d, False, None, "address", "an address, not a name: nothing to misread")
    # The name and its parents down to its registrable domain (the name alone when it has none).
    r = registrable(d)
    labels = d.split(".")
    tails = [".".join(labels[i:]) for i in range(len(labels) - r.count("."))] if r else [d]
    for parent in tails[1:]:
        if history.knows(parent):
            return Verdict(d, False, parent, "subdomain", f"a host under {parent}")
    for t in tails:
        v = _near_miss(d, t, domain, history)
        if v is not None:
            return v
    return Verdict(d, False, None, "new", "not close to any domain you know")


def _near_miss(d: str, t: str, raw: str, history: History) -> Verdict | None:
    """Is `t` (the recipient domain `d` or one of its parents) a neighbour of a known name?"""
    for swapped, why in _tld_swaps(t):
        if history.knows(swapped):
            return Verdict(d, True, swapped, "tld", why)
    sk = skeleton(t)
    homoglyph = history.knows_skeleton(sk)
    if homoglyph and not t.isascii():  # a look-alike letter, not a typing slip: say so
        return Verdict(d, True, _shown(sk, history), "homoglyph",
                       "it is written with look-alike characters" + _idn_note(raw))
    for cand in edits1(t):
        if cand != t and "." in cand and not cand.startswith(".") and history.knows(cand):
            return Verdict(d, True, cand, "edit", _edit_reason(t, cand))
    if homoglyph:
        return Verdict(d, True, _shown(sk, history), "homoglyph",
                       "it is written with look-alike characters" + _idn_note(raw))
    return None


def _edit_reason(d: str, k: str) -> str:
    if len(d) < len(k):
        return "one letter missing"
    if len(d) > len(k):
        return "one letter too many"
    diff = [i for i in range(len(d)) if d[i] != k[i]]
    if len(diff) == 2 and diff[1] == diff[0] + 1:
        return "two letters swapped"
    return "one letter different"


def _shown(sk: str, history: History) -> str:
    """The known domain behind a skeleton: in plain mode, the name itself; hashed, the skeleton
    (the store does not say which name made it)."""
    if history.salt is None:
        # plain mode: find the known name with this skeleton
        for x in history.exact:
            if skeleton(x) == sk:
                return x
    return sk


def _idn_note(raw: str) -> str:
    return " (an internationalised name, punycode " + raw.lower() + ")" if "xn--" in raw.lower() else ""


def check_all(domains: Iterable[str], history: History) -> list[Verdict]:
    return [check(x, history) for x in dict.fromkeys(domains)]
