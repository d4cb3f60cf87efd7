"""[spam]: rspamd's mode, the DKIM key size and the DNS blocklists it asks."""

from __future__ import annotations

from dataclasses import dataclass

from appliance.core import fields

# rspamd's DNS blocklist rules (Debian's modules.d/rbl.conf) and the zone each one queries;
# `[spam] blocklists` picks among them (docs/outside-parties.md lists the default ones).
SPAM_BLOCKLISTS = {
    "spamhaus": "zen.spamhaus.org", "mailspike": "rep.mailspike.net",
    "senderscore": "bl.score.senderscore.com", "sem": "bl.spameatingmonkey.net",
    "semIPv6": "bl.ipv6.spameatingmonkey.net", "dnswl": "list.dnswl.org",
    "dnswl_dwl": "dwl.dnswl.org", "virusfree": "bip.virusfree.cz",
    "nixspam": "ix.dnsbl.manitu.net", "blocklistde": "bl.blocklist.de",
    "MSBL_EBL": "ebl.msbl.org", "SURBL_MULTI": "multi.surbl.org", "URIBL_MULTI": "multi.uribl.com",
    "DBL": "dbl.spamhaus.org", "SPAMHAUS_ZEN_URIBL": "zen.spamhaus.org",
    "SEM_URIBL_UNKNOWN": "uribl.spameatingmonkey.net",
    "SEM_URIBL_FRESH15_UNKNOWN": "fresh15.spameatingmonkey.net",
    "RSPAMD_URIBL": "uribl.rspamd.com", "RSPAMD_EMAILBL": "email.rspamd.com",
}
# "full": rspamd's scanner with Bayes learning from the Junk folder; "light": DKIM signing and
# SPF/DKIM/DMARC checks only, for 512 MB boards (docs/spam.md has the figures).
SPAM_MODES = ("full", "light")


@dataclass(frozen=True)
class SpamSection:
    """rspamd as Postfix's milter: DKIM signing, SPF/DKIM/DMARC checks, spam scoring."""

    mode: str = "full"
    dkim_key_bits: int = 2048
    # rspamd's DNS blocklist rules that stay on (full mode); every other one is off. The default
    # asks only about the sending server's address, never names or addresses from the mail.
    blocklists: tuple[str, ...] = ("spamhaus", "dnswl")


FIELDS = (
    fields.choice("mode", "full", SPAM_MODES,
                  "`full`: scanning and Bayes learning from Junk; `light`: DKIM, SPF and DMARC only "
                  "(512 MB boards)", "is not a filter mode",
                  'use "full" (1 GB boards and up) or "light" (512 MB boards: DKIM, SPF, DMARC only)'),
    fields.choice("dkim_key_bits", 2048, (2048, 3072, 4096), "size of a new DKIM RSA key",
                  "is not a DKIM RSA key size",
                  "use 2048 (fits one DNS TXT string set everywhere), 3072 or 4096"),
    fields.Field("blocklists", ("spamhaus", "dnswl"),
                 "rspamd's DNS blocklist rules that stay on (full mode); every other one is off",
                 lambda v: isinstance(v, list) and all(x in SPAM_BLOCKLISTS for x in v),
                 "names a blocklist rspamd has no rule for",
                 "use a list of: " + ", ".join(sorted(SPAM_BLOCKLISTS)) + " ([] for none)",
                 convert=lambda v: tuple(dict.fromkeys(v))),
)
SECTION = fields.section("spam", SpamSection, FIELDS)
