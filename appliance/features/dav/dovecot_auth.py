"""Radicale's login check, asked of Dovecot (its authentication client protocol, version 1.2):
a calendar takes the same address and password as mail, app passwords included (the service
`dav`), and a wrong guess costs what it costs at IMAP. Radicale loads this module by name from
its configuration (`[auth] type = appliance.features.dav.dovecot_auth`).

On a user's first successful login their default calendar and address book are created, so
every phone or program that discovers the account finds one of each to sync into."""

from __future__ import annotations

import base64
import ipaddress
import logging
import os
import socket
import threading
from collections.abc import Mapping
from typing import Any

from radicale import auth, storage

from appliance.features.dav.config import AUTH_SERVICE, AUTH_SOCKET, DEFAULT_CALENDAR, DEFAULT_CONTACTS

logger = logging.getLogger("radicale")
_request = threading.local()  # the client's address for this request's login (one per thread)


class AuthError(Exception):
    """Dovecot could not be asked (its socket is missing or it did not answer)."""


def check(user: str, password: str, *, socket_path: str = AUTH_SOCKET,
          service: str = AUTH_SERVICE, rip: str | None = None, timeout: float = 15) -> str:
    """The user's canonical name if Dovecot accepts the password, else "". The credentials
    travel base64-encoded (SASL PLAIN), so no tab or newline in them can break the protocol.
    `secured`: the client's TLS ended at the box's nginx."""
    if not user or not password or "\0" in user + password:
        return ""
    resp = base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode()).decode()
    fields = ["AUTH", "1", "PLAIN", f"service={service}", "secured", f"resp={resp}"]
    if rip:
        fields.insert(4, f"rip={rip}")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(socket_path)
            s.sendall(f"VERSION\t1\t2\nCPID\t{os.getpid()}\n{chr(9).join(fields)}\n".encode())
            buf = b""
            for _ in range(64):  # the handshake is a few lines; the answer follows
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
                for line in buf.decode(errors="replace").split("\n")[:-1]:
                    parts = line.split("\t")
                    if parts[:2] == ["OK", "1"]:
                        found = dict(p.partition("=")[::2] for p in parts[2:])
                        return found.get("user") or user
                    if parts[:2] == ["FAIL", "1"]:
                        return ""
    except OSError as e:
        raise AuthError(f"Dovecot's login service at {socket_path}: {e}") from None
    raise AuthError(f"Dovecot's login service at {socket_path} gave no answer")


def client_address(environ: Mapping[str, Any]) -> str | None:
    """nginx sets X-Forwarded-For to the client's own address (it replaces, never appends)."""
    value = str(environ.get("HTTP_X_FORWARDED_FOR", "")).split(",")[-1].strip()
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


def ensure_defaults(store: storage.BaseStorage, user: str) -> list[str]:
    """On the user's first login (she has no principal collection yet): her principal, with a
    default calendar and address book in it. Never again after that, so a calendar she deleted
    stays deleted."""
    made: list[str] = []
    with store.acquire_lock("w", user):
        principal = f"/{user}/"
        if list(store.discover(principal, depth="0")):
            return made
        store.create_collection(principal)
        for name, props in (DEFAULT_CALENDAR, DEFAULT_CONTACTS):
            store.create_collection(f"{principal}{name}/", props=dict(props))
            made.append(name)
    return made


class Auth(auth.BaseAuth):
    def __init__(self, configuration) -> None:  # noqa: ANN001 - Radicale's Configuration
        super().__init__(configuration)
        self._storage = storage.load(configuration)

    def get_external_login(self, environ: Mapping[str, Any]) -> tuple[()]:
        _request.rip = client_address(environ)
        return ()  # Radicale asks for the password itself (HTTP Basic, over TLS)

    def login(self, login: str, password: str) -> str:
        try:
            user = check(login.strip().lower(), password, rip=getattr(_request, "rip", None))
        except AuthError as e:
            logger.error("login check failed: %s", e)
            return ""
        if user:
            try:
                made = ensure_defaults(self._storage, user)
            except Exception as e:  # noqa: BLE001 - the login stands; the next one tries again
                logger.error("could not create the default collections of %s: %s", user, e)
            else:
                if made:
                    logger.warning("created %s for %s", " and ".join(made), user)
        return user
