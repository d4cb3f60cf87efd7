"""[mail]: how the domain's addresses behave beyond the users' own.

    [mail]
    plus_addressing = true      # alice+shop@ reaches alice
    tag_folders = false         # ... and lands in her folder "shop" when she has one
    catch_all = ""              # any unknown address of the domain reaches this mailbox
    quota_mb = 0                # each mailbox's quota; 0: a share of the card (quota.py)

The catch-all is off unless named: it accepts mail for every address a spammer invents, so it
is a choice, and `appliance status` says how much it received.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from appliance.core import fields, mail_rules
from appliance.core.settings import QUOTA_MB, Collector, Section, quote

DELIMITER = mail_rules.TAG_DELIMITER


@dataclass(frozen=True)
class MailOptions:
    plus_addressing: bool = True
    tag_folders: bool = False
    catch_all: str | None = None
    quota_mb: int = 0


FIELDS = (
    fields.flag("plus_addressing", True,
                f"mail to name{DELIMITER}anything@ reaches name@ (a tag per shop or list)"),
    fields.flag("tag_folders", False,
                f"mail to name{DELIMITER}tag@ is filed into the folder \"tag\" when it exists (with "
                "plus_addressing)"),
    fields.address("catch_all",
                   "the mailbox that receives mail to any unknown address of the domain "
                   "(off when unset: it invites spam)",
                   "name one of the users' addresses, or leave it out"),
    fields.Field("quota_mb", 0, "each mailbox's quota in MiB (a user's own quota_mb wins); 0: the "
                 "users share 80 % of the card equally",
                 lambda v: not isinstance(v, bool) and isinstance(v, int)
                 and (v == 0 or QUOTA_MB[0] <= v <= QUOTA_MB[1]),
                 "is not a mailbox size in MiB",
                 f"use a whole number from {QUOTA_MB[0]} to {QUOTA_MB[1]}, e.g. 4096, or 0"),
)


def _parse(data: dict[str, Any], c: Collector) -> MailOptions:
    values = fields.parse_table(data.get("mail", {}), "mail", FIELDS, c)
    users = data.get("users")
    own = [(f"users[{i}]", u) for i, u in enumerate(users if isinstance(users, list) else [])
           if isinstance(u, dict)]
    addresses = [u.get("address") for _, u in own if isinstance(u.get("address"), str)]
    catch_all = values["catch_all"]
    if isinstance(catch_all, str) and catch_all not in addresses:
        c.add("mail.catch_all", catch_all, "is not one of the users' addresses",
              f"name the mailbox that should receive it, e.g. {quote(addresses[0])}" if addresses
              else "add the user first")
        values["catch_all"] = None
    if values["plus_addressing"]:
        # With plus addressing, "a+b@" means a's tag b: an address of its own with the separator
        # could never be reached.
        for where, u in own:
            names = [(f"{where}.address", u.get("address"))] + [
                (f"{where}.aliases[{j}]", a) for j, a in enumerate(u.get("aliases") or [])]
            for at, name in names:
                if isinstance(name, str) and DELIMITER in name.partition("@")[0]:
                    c.add(at, name, f'has "{DELIMITER}", which separates a tag with plus addressing',
                          f'choose a name without "{DELIMITER}", or set [mail] plus_addressing = false')
    return MailOptions(**values)


SECTION = Section("mail", ("mail",), _parse, fields={"mail": FIELDS})
