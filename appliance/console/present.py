"""How the console shows things that are not plain text: which page fixes a group of status
checks, what a group is called, and QR codes."""

from __future__ import annotations

# Where in the console a group of checks is fixed (the check's own fix names the command, for
# a person with SSH; a person without one gets the page).
FIX_PAGES = {"dns": ("dns", "Your DNS records"), "upnp": ("connection", "Connection"),
             "reachability": ("connection", "Connection"), "fail2ban": ("connection", "Connection"),
             "backup": ("backups", "Backups"), "certificate": ("keys", "Certificate and DKIM key"),
             "dkim": ("keys", "Certificate and DKIM key")}
GROUP_TITLES = {"dns": "DNS records", "dnssec": "DNSSEC", "upnp": "Router (UPnP)",
                "mail": "Mail", "disk": "Storage", "certificate": "Certificate",
                "backup": "Backups", "fail2ban": "Banned addresses"}


def qr_svg(text: str) -> str:
    """A QR code as an SVG data: URI (the CSP allows data: images; no script draws it)."""
    import segno  # python3-segno

    return str(segno.make(text, error="m").svg_data_uri(scale=5, border=2))
