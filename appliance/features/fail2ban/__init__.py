"""fail2ban: bans addresses that keep guessing passwords, never the LAN; `appliance bans`."""
