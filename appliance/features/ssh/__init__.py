"""SSH: keys from settings only, no passwords; LAN-only through the firewall."""
