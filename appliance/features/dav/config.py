"""The names the calendar and contacts server (Radicale) and the agent share: read by the daemon
(server.py), by its login check (dovecot_auth.py) and by the agent, which loads none of Radicale."""

from __future__ import annotations

NAME = "appliance-dav"
CONF = "/etc/radicale/config"
HOST, PORT = "127.0.0.1", 5232
PIDFILE = "/run/appliance-dav.pid"
LOG = "/var/log/appliance-dav.log"
USER = "radicale"  # Debian's radicale package creates it
# Radicale's own layout (Debian's default folder): on the data partition, and in the backups.
STORAGE = "/var/lib/radicale/collections"
# Dovecot's login service for this one client: the same users, passwords and app passwords as
# mail, the same lockout after wrong guesses, one log of who logged in.
AUTH_SOCKET = "/run/dovecot/auth-dav"
AUTH_SERVICE = "dav"
# What every user finds on first login, as a phone or Thunderbird expects one of each.
DEFAULT_CALENDAR = ("calendar", {"tag": "VCALENDAR", "D:displayname": "Calendar",
                                 "C:supported-calendar-component-set": "VEVENT,VTODO,VJOURNAL"})
DEFAULT_CONTACTS = ("contacts", {"tag": "VADDRESSBOOK", "D:displayname": "Contacts"})
