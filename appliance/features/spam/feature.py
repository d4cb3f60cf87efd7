"""rspamd as Postfix's milter: DKIM signing, SPF/DKIM/DMARC checks, spam scoring, and
reporting spam (ARF)."""

from __future__ import annotations

from appliance.core import system
from appliance.core.feature import Feature, Say
from appliance.core.records import Known, Record, fq
from appliance.core.services import Service
from appliance.core.settings import Settings
from appliance.features.spam import cli, dkim
from appliance.features.spam.rspamd import Rspamd, feature
from appliance.features.spam.settings import SECTION


def services(root: system.Root) -> list[Service]:
    # First: Postfix defers mail while its milter is down.
    return [Rspamd(root)]


def prepare(root: system.Root, s: Settings, say: Say) -> None:
    if root.is_live and dkim.ensure_active(root, s.spam.dkim_key_bits):
        say(f"created the DKIM key {dkim.load(root).active} for {s.domain}: publish its "
            "record (`appliance dns`)")


def known(root: system.Root, s: Settings) -> dict[str, object]:
    return {"dkim": tuple((sel, dkim.public_key_b64(root, sel)) for sel in dkim.load(root).published())}


def records(s: Settings, k: Known) -> list[Record]:
    return [Record(fq(f"{selector}._domainkey.{s.domain}"), "TXT", dkim.record_text(p),
                   "DKIM: receivers check your mail's signature with this key"
                   + ("" if n == 0 else " (a key being rolled over: keep it published)"))
            for n, (selector, p) in enumerate(k.dkim)]


def state(root: system.Root, s: Settings) -> dict[str, str]:
    active = dkim.load(root).active
    return {"dkim_selector": active} if active else {}


FEATURE = Feature("spam", "docs/spam.md", sections=(SECTION,), files=feature, services=services,
                  commands=cli.register, prepare=prepare, state=state,
                  known=known, records=records)
