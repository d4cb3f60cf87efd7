"""Outbound mail through a smarthost, or the whole mail path through a WireGuard tunnel to the
user's own relay VPS."""
