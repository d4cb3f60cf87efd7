"""The DNS records the domain needs, checked and pushed (RFC 2136)."""
