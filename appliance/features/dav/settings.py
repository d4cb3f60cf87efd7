"""[dav]: calendars and contacts (CalDAV, CardDAV) for the mail users."""

from __future__ import annotations

from dataclasses import dataclass

from appliance.core import fields


@dataclass(frozen=True)
class DavSection:
    """Calendars and contacts for every mail user, on the home network; from anywhere with
    `internet = true` (port 443 under the mail host name)."""

    enabled: bool = False
    internet: bool = False


FIELDS = (
    fields.flag("enabled", False, "calendars and contacts (CalDAV, CardDAV) for the mail users, "
                "same addresses and passwords, at https://<hostname>/ from the home network"),
    fields.flag("internet", False, "also from the internet (opens port 443 under the mail host "
                "name); phones then sync away from home"),
)
SECTION = fields.section("dav", DavSection, FIELDS)
