"""The typo-domain guard (issue #10), pure: is a recipient domain a near miss of a domain the user
has corresponded with, while having no history of its own?

Thousands of messages meant for `.mil` went to `.ml` (Mali) for years because of one missing
letter. Before submitted mail leaves, each recipient domain is checked here:

- a domain already corresponded with, or a host under one (`lists.example.org` when
  `example.org` is known), is never held;
- otherwise it is a near miss when one of its *neighbours* is known:
  - a known confusable top-level pair (`.mil`/`.ml`, `.gov`/`.gv`, `.com`/`.cm`/`.co`/`.om`, ...),
  - one edit away (a letter deleted, inserted, replaced) or two neighbouring letters swapped
    (`gmial.com`), the optimal-string-alignment distance 1,
  - the same *skeleton* after Unicode NFKC, case folding and a small confusables table
    (Cyrillic `а` for Latin `a`, `0` for `o`, `rn` for `m`, ...), punycode (`xn--`) decoded first.

The history is a set that only answers membership, so it can hold salted hashes instead of
names (the `hashed` mode): the guard generates the neighbours of the *new* domain and asks
whether one of them is known, and can then name both domains in the notice without the store
ever listing the user's correspondents in clear.
"""

from __future__ import annotations

import codecs
import hashlib
import hmac
import string
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

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

    def add(self, domain: str) -> None:
        d = normalize(domain)
        self.exact.add(self._h(d))
        self.skeletons.add(self._h(skeleton(d)))

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
            if kind == "d" and value:
                h.exact.add(value)
            elif kind == "s" and value:
                h.skeletons.add(value)
            else:
                raise DomainError(f"history line {n}: expected 'd VALUE' or 's VALUE', got {line!r}")
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
    """Decide for one recipient domain. Raises DomainError for what is not a domain name."""
    d = normalize(domain)
    if history.knows(d):
        return Verdict(d, False, d, "known", "corresponded with before")
    labels = d.split(".")
    for i in range(1, len(labels) - 1):
        parent = ".".join(labels[i:])
        if history.knows(parent):
            return Verdict(d, False, parent, "subdomain", f"a host under {parent}")
    for swapped, why in _tld_swaps(d):
        if history.knows(swapped):
            return Verdict(d, True, swapped, "tld", why)
    sk = skeleton(d)
    homoglyph = history.knows_skeleton(sk)
    if homoglyph and not d.isascii():  # a look-alike letter, not a typing slip: say so
        return Verdict(d, True, _shown(sk, history), "homoglyph",
                       "it is written with look-alike characters" + _idn_note(domain))
    for cand in edits1(d):
        if cand != d and "." in cand and not cand.startswith(".") and history.knows(cand):
            return Verdict(d, True, cand, "edit", _edit_reason(d, cand))
    if homoglyph:
        return Verdict(d, True, _shown(sk, history), "homoglyph",
                       "it is written with look-alike characters" + _idn_note(domain))
    return Verdict(d, False, None, "new", "not close to any domain you know")


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
