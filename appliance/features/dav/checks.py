"""The status check of calendars and contacts: the whole path a phone takes, asked from the
box itself (nginx on 443 under the mail host name, then Radicale, which wants a login)."""

from __future__ import annotations

import socket
import ssl

from appliance.core.checks import FAIL, OK, Context, Result
from appliance.features.dav.config import LOG

NAME = "calendars and contacts"


def verdict(status: int | None, error: str, host: str, internet: bool) -> Result:
    where = "your home network and the internet" if internet else "your home network"
    if status == 401:  # Radicale answered, and asks for a login: the path works
        return Result(NAME, OK, f"https://{host}/ answers on {where} (CalDAV, CardDAV)")
    if status in (502, 504):
        return Result(NAME, FAIL, f"nginx answers but the calendar server does not ({status})",
                      f"run `appliance apply`; its log is {LOG}")
    if status is None:
        return Result(NAME, FAIL, f"nothing answers on port 443 ({error})",
                      "run `appliance apply` (it starts nginx with the calendar site)")
    return Result(NAME, FAIL, f"https://{host}/ answered {status}, not a login request",
                  "run `appliance apply`")


def check_dav(c: Context) -> list[Result]:
    s = c.s
    if not s.dav.enabled:
        return []
    # The box's own certificate may be self-signed still: the path is judged, not the trust.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    status: int | None = None
    error = ""
    try:
        # Connect by address, name the site in SNI and Host: nginx picks the site by name.
        with socket.create_connection(("127.0.0.1", 443), timeout=10) as raw, \
                ctx.wrap_socket(raw, server_hostname=s.hostname) as tls:
            # What a client asks first (GET / is only a redirect to Radicale's web page).
            tls.sendall(f"PROPFIND / HTTP/1.1\r\nHost: {s.hostname}\r\nDepth: 0\r\n"
                        "Content-Length: 0\r\nConnection: close\r\n\r\n".encode())
            head = tls.recv(4096).decode("latin-1")
        status = int(head.split()[1])
    except (OSError, ValueError, IndexError) as e:
        error = str(e) or type(e).__name__
    return [verdict(status, error, s.hostname, s.dav.internet)]
