"""The [status] settings (`appliance status`). Stdlib only, like `settings`.

    [status]
    blocklists = ["zen.spamhaus.org", "bl.spamcop.net", "b.barracudacentral.org", "psbl.surriel.com"]
    daily_mail = true          # the daily timer mails the postmaster what changed
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from appliance.core import fields

# The major IPv4 DNS blocklists that answer queries from a home user's own resolver for free.
DEFAULT_BLOCKLISTS = ("zen.spamhaus.org", "bl.spamcop.net", "b.barracudacentral.org",
                      "psbl.surriel.com")
MAX_BLOCKLISTS = 20
_NAME = re.compile(r"^(?=.{4,253}$)((?!-)[a-z0-9-]{1,63}(?<!-)\.)+(?!-)[a-z0-9-]{1,63}(?<!-)$")


@dataclass(frozen=True)
class Status:
    blocklists: tuple[str, ...] = DEFAULT_BLOCKLISTS
    daily_mail: bool = True


FIELDS = (
    fields.names("blocklists", DEFAULT_BLOCKLISTS,
                 "the DNS blocklists `appliance status` looks the box's address up in",
                 f"is not a list of at most {MAX_BLOCKLISTS} zone names",
                 'write e.g. ["zen.spamhaus.org", "bl.spamcop.net"], or [] to skip the blocklist check',
                 item=fields.Item(lambda z: isinstance(z, str) and bool(_NAME.match(z)),
                                  "is not a DNS zone name",
                                  'use the blocklist\'s query zone in lower case, e.g. "zen.spamhaus.org"'),
                 most=MAX_BLOCKLISTS),
    fields.flag("daily_mail", True, "the daily timer mails the postmaster what changed"),
)
SECTION = fields.section("status", Status, FIELDS)
