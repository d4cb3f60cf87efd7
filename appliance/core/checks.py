"""What a status check is: a small function (Context) -> [Result], declared by the feature it
checks (`Feature.checks`); `appliance status` runs them all in the registry's order.

A check returns no result when its feature is not configured. Network questions go only to the
resolver the box uses (/etc/resolv.conf), each bounded in time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from appliance.core import system
from appliance.core.records import Known, Record
from appliance.core.settings import Settings

OK, WARN, FAIL = "ok", "warn", "fail"
DNS_LIFETIME = 5.0  # seconds per query, all tries included


@dataclass
class Result:
    name: str  # stable: the key the daily mail compares by
    status: str  # ok | warn | fail
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Context:
    s: Settings
    root: system.Root
    resolver: Any = None
    now: float = field(default_factory=time.time)
    # What the DNS records depend on (the public address, the served certificate, the DKIM
    # keys), computed once for every check that needs it, and the records themselves, the way
    # `appliance dns` does it: the command that runs the checks asks the features
    # (`pipeline.known`, `pipeline.dns_records`).
    known_facts: Callable[[Settings, system.Root], Known] | None = None
    dns_records: Callable[[Settings, Known], list[Record]] | None = None
    _known: Known | None = None

    @property
    def known(self) -> Known:
        if self._known is None:
            if self.known_facts is None:
                raise ValueError("these checks need the facts the DNS records depend on")
            self._known = self.known_facts(self.s, self.root)
        return self._known

    @property
    def records(self) -> list[Record]:
        if self.dns_records is None:
            raise ValueError("these checks need the records the features want in DNS")
        return self.dns_records(self.s, self.known)

    @property
    def sending_ip(self) -> str | None:
        k = self.known
        ip: str | None = k.sending_ipv4 or k.public_ipv4
        return ip


def make_resolver() -> Any:
    import dns.resolver

    from appliance.core.errors import ApplianceError

    try:
        r = dns.resolver.Resolver()  # the box's own resolver, from /etc/resolv.conf
    except dns.resolver.NoResolverConfiguration:
        raise ApplianceError("no resolver in /etc/resolv.conf: status asks only the box's own "
                             "resolver; configure one (your router, or unbound on the box)") from None
    r.timeout, r.lifetime = 2.0, DNS_LIFETIME
    return r


def lookup(resolver: Any, name: str, rtype: str) -> tuple[list[str], str]:
    """(answers, error): no answer or NXDOMAIN is ([], ""); a timeout or refusal is ([], why)."""
    import dns.exception
    import dns.resolver

    try:
        return [r.to_text() for r in resolver.resolve(name, rtype, lifetime=DNS_LIFETIME)], ""
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return [], ""
    except dns.resolver.NoNameservers:
        return [], "the resolver refused or failed the query (SERVFAIL/REFUSED)"
    except dns.exception.Timeout:
        return [], f"no answer within {DNS_LIFETIME:.0f} s"


Check = Callable[[Context], list[Result]]
