"""What the domain's DNS must say, gathered from the features.

A feature that needs a record says which (`Feature.records`: settings and `Known` in, records
out, each with the reason it exists), and a feature that knows something the records depend on
says that (`Feature.known`: the DKIM keys, the served certificate, the public address);
`pipeline.known` and `pipeline.dns_records` ask them all. The `dns` feature prints, checks and
pushes the records, `status` compares them with DNS: neither imports the features that know
the values, and a new feature adds its own records.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Record:
    name: str  # fully qualified, with the trailing dot
    rtype: str
    value: str  # presentation format, as in a zone file
    why: str
    ttl: int = 3600

    def zone_line(self) -> str:
        return f"{self.name}\t{self.ttl}\tIN\t{self.rtype}\t{self.value}"


@dataclass(frozen=True)
class Known:
    """What the agent knows about the box when it computes the records."""

    public_ipv4: str | None = None
    public_ipv6: str | None = None
    tlsa_311: str | None = None  # of the certificate Postfix serves
    sending_ipv4: str | None = None  # where outbound SMTP leaves (the relay VPS), if not the box
    # (selector, base64 public key) of each DKIM key to publish, the signing one first.
    dkim: tuple[tuple[str, str], ...] = ()


# Where the internet reaches the box, the most direct knowledge first: the VPS a relay tunnel
# ends on, then the address the user wrote down, then the router's external address as UPnP
# last reported it. Each is told by the feature that knows it; the first one known is public.
ADDRESS_SOURCES = ("tunnel_ipv4", "configured_ipv4", "router_ipv4")
TOLD = {f.name for f in fields(Known)} - {"public_ipv4"}


def fq(name: str) -> str:
    return name if name.endswith(".") else name + "."
