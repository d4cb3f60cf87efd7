"""The console's pages (Flask, served by waitress as user appliance-console behind nginx).

Every page is server-rendered HTML that works without JavaScript; console.js only adds copy
buttons. The process holds no secret: it forwards the browser's session token to the agent
(agent.py), which decides. What it adds is the web's own defences: the session cookie is
__Host-, Secure, HttpOnly, SameSite=Strict; every POST carries a CSRF token (the session's, or
before login a double-submit cookie); the Content-Security-Policy allows no inline script and
no other origin; a client outside the LAN gets 403 even if the firewall let it through.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import time
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Flask, Response, abort, g, redirect, render_template, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from appliance.console import protocol
from appliance.console.present import FIX_PAGES, GROUP_TITLES, qr_svg
from appliance.console.protocol import AgentError

COOKIE = "__Host-console"
PRE_CSRF = "__Host-csrf"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
STATE_TTL_S = 30.0


def create_app(agent_socket: str = protocol.AGENT_SOCKET) -> Flask:
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 256 * 1024
    cache: dict[str, tuple[float, Any]] = {}

    @app.template_filter("datetime")
    def as_date(ts: float | None, minutes: bool = False) -> str:
        fmt = "%Y-%m-%d %H:%M UTC" if minutes else "%Y-%m-%d"
        return time.strftime(fmt, time.gmtime(ts)) if ts else "never"

    def call(op: str, **args: Any) -> Any:
        return protocol.call(op, args, session=request.cookies.get(COOKIE),
                             client=client_address(), path=agent_socket)

    def state() -> dict[str, Any]:
        hit = cache.get("state")
        if hit and time.monotonic() - hit[0] < STATE_TTL_S:
            return hit[1]
        got = protocol.call("state", path=agent_socket)
        if got["admin"]:  # only the setup wizard changes it the other way
            cache["state"] = (time.monotonic(), got)
        return got

    def client_address() -> str:
        return request.headers.get("X-Real-IP") or request.remote_addr or "?"

    @app.before_request
    def only_the_lan() -> None:
        """nftables keeps the internet off this port; this is the second lock on the door."""
        try:
            ip = ipaddress.ip_address(client_address())
        except ValueError:
            abort(403)
        lan = [ipaddress.ip_network(p) for p in state().get("lan", [])]
        if not (ip.is_loopback or any(ip in net for net in lan)):
            abort(403, "The console answers only on your home network.")
        g.me = None

    @app.after_request
    def headers(resp: Response) -> Response:
        resp.headers["Content-Security-Policy"] = CSP
        resp.headers["X-Frame-Options"] = "DENY"
        resp.headers["Referrer-Policy"] = "no-referrer"
        resp.headers["X-Content-Type-Options"] = "nosniff"
        if not request.path.startswith("/static/"):
            resp.headers["Cache-Control"] = "no-store"
        return resp

    @app.errorhandler(AgentError)
    def agent_error(e: AgentError) -> Any:
        if e.code == protocol.LOGIN:
            return redirect(url_for("login"))
        status = 403 if e.code == protocol.DENIED else 503 if e.code == protocol.BUSY else 500
        return render_template("error.html", message=str(e), me=g.get("me")), status

    def attempt(op: str, **args: Any) -> tuple[Any, str | None]:
        """A form's call: a refusal (a bad value, a wrong password) is a message on the page,
        with the CLI's own words; anything else is the error page."""
        try:
            return call(op, **args), None
        except AgentError as e:
            if e.code not in (protocol.INVALID, protocol.DENIED):
                raise
            return None, str(e)

    def check_csrf(expected: str | None) -> None:
        got = request.form.get("csrf", "")
        if not (expected and got and hmac.compare_digest(got, expected)):
            abort(403, "This form is stale or did not come from the console: reload the page.")

    def needs(*roles: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def deco(view: Callable[..., Any]) -> Callable[..., Any]:
            @wraps(view)
            def wrapper(*a: Any, **kw: Any) -> Any:
                if not request.cookies.get(COOKIE):
                    return redirect(url_for("login"))
                me = call("whoami")
                if me["role"] not in roles:
                    return redirect(url_for("home"))
                g.me = me
                if request.method == "POST":
                    check_csrf(me["csrf"])
                return view(*a, **kw)
            return wrapper
        return deco

    def pre_login_form(template: str, status: int = 200, **ctx: Any) -> Response:
        """A form shown before there is a session: a double-submit CSRF cookie."""
        token = request.cookies.get(PRE_CSRF) or secrets.token_urlsafe(24)
        resp = Response(render_template(template, csrf=token, me=None, **ctx), status)
        resp.set_cookie(PRE_CSRF, token, secure=True, httponly=True, samesite="Strict")
        return resp

    def with_session(resp: BaseResponse, token: str) -> BaseResponse:
        resp.set_cookie(COOKIE, token, secure=True, httponly=True, samesite="Strict")
        return resp

    @app.get("/")
    def home() -> Any:
        st = state()
        if not st["admin"]:
            return redirect(url_for("setup"))
        if not request.cookies.get(COOKIE):
            return redirect(url_for("login"))
        try:
            me = call("whoami")
        except AgentError:
            return redirect(url_for("login"))
        if me["role"] == "setup":
            return redirect(url_for("wizard"))
        return redirect(url_for("status" if me["role"] == "admin" else "account"))

    # --- first run --------------------------------------------------------------------------------
    @app.route("/setup", methods=["GET", "POST"])
    def setup() -> Any:
        if state()["admin"]:
            return redirect(url_for("login"))
        if request.method == "GET":
            return pre_login_form("setup_code.html")
        check_csrf(request.cookies.get(PRE_CSRF))
        try:
            got = call("setup_code", code=request.form.get("code", ""))
        except AgentError as e:
            return pre_login_form("setup_code.html", 403, error=str(e))
        return with_session(redirect(url_for("wizard")), got["session"])

    @app.route("/setup/wizard", methods=["GET", "POST"])
    @needs("setup")
    def wizard() -> Any:
        st = state()
        if request.method == "GET":
            return render_template("wizard.html", me=g.me, st=st, form={})
        form = {k: request.form.get(k, "") for k in
                ("domain", "hostname", "user", "password", "confirm", "admin_password",
                 "admin_confirm")}
        problems = []
        if not st["configured"] and form["password"] != form["confirm"]:
            problems.append("password: the two passwords differ")
        if form["admin_password"] != form["admin_confirm"]:
            problems.append("admin password: the two passwords differ")
        if not problems:
            try:
                got = call("setup", **form)
            except AgentError as e:
                if e.code not in (protocol.INVALID, protocol.DENIED):
                    raise
                problems.append(str(e))
            else:
                cache.clear()
                return with_session(redirect(url_for("progress", job=got["job"])), got["session"])
        safe = {k: v for k, v in form.items() if "password" not in k and k != "confirm"}
        return render_template("wizard.html", me=g.me, st=st, form=safe, problems=problems), 400

    @app.get("/progress/<job>")
    @needs("admin", "user")
    def progress(job: str) -> Any:
        return render_template("progress.html", me=g.me, job=call("job", id=job))

    # --- sessions ----------------------------------------------------------------------------------
    @app.route("/login", methods=["GET", "POST"])
    def login() -> Any:
        if not state()["admin"]:
            return redirect(url_for("setup"))
        totp = state()["totp"]
        if request.method == "GET":
            return pre_login_form("login.html", totp=totp)
        check_csrf(request.cookies.get(PRE_CSRF))
        user = request.form.get("user", "")
        try:
            got = call("login", user=user, password=request.form.get("password", ""),
                       code=request.form.get("code", ""))
        except AgentError as e:
            return pre_login_form("login.html", 403, error=str(e), user=user, totp=totp)
        return with_session(redirect(url_for("home")), got["session"])

    @app.post("/logout")
    @needs("setup", "admin", "user")
    def logout() -> Any:
        call("logout")
        resp = redirect(url_for("login"))
        resp.delete_cookie(COOKIE, secure=True, httponly=True, samesite="Strict")
        return resp

    # --- the administrator's pages -------------------------------------------------------------------
    @app.get("/status")
    @needs("admin")
    def status() -> Any:
        results = call("status")
        groups: dict[str, list[dict[str, Any]]] = {}
        for r in results:
            groups.setdefault(r["name"].split(":", 1)[0].split(" ", 1)[0], []).append(r)
        bad = sum(r["status"] == "fail" for r in results)
        warn = sum(r["status"] == "warn" for r in results)
        return render_template("status.html", me=g.me, groups=groups, bad=bad, warn=warn,
                               total=len(results), pages=FIX_PAGES, titles=GROUP_TITLES)

    @app.route("/security", methods=["GET", "POST"])
    @needs("admin")
    def security() -> Any:
        """The administrator's second factor: on (QR code, then a code to confirm) or off."""
        ctx: dict[str, Any] = {}
        action = request.form.get("action", "") if request.method == "POST" else ""
        if action == "begin":
            ctx["pending"], ctx["error"] = attempt("totp_begin")
            ctx["qr"] = qr_svg(ctx["pending"]["uri"]) if ctx["pending"] else None
        elif action == "confirm":
            ctx["said"], ctx["error"] = attempt("totp_confirm", code=request.form.get("code", ""))
        elif action == "off":
            ctx["said"], ctx["error"] = attempt("totp_off", password=request.form.get("password", ""))
        cache.clear()
        return render_template("security.html", me=g.me, totp=call("totp"), **ctx), \
            400 if ctx.get("error") else 200

    @app.route("/connection", methods=["GET", "POST"])
    @needs("admin")
    def connection() -> Any:
        """Can the internet reach the box, and who is banned (with a button to lift a ban)."""
        ctx: dict[str, Any] = {}
        if request.method == "POST":
            ctx["said"], ctx["error"] = attempt("unban", address=request.form.get("address", ""))
        return render_template("connection.html", me=g.me, data=call("connection"), **ctx), \
            400 if ctx.get("error") else 200

    @app.get("/backups")
    @needs("admin")
    def backups() -> Any:
        return render_template("backups.html", me=g.me, data=call("backups"))

    @app.post("/backups/now")
    @needs("admin")
    def backup_now() -> Any:
        return redirect(url_for("progress", job=call("backup_now")["job"]))

    @app.get("/backups/sheet")
    @needs("admin")
    def backup_sheet() -> Any:
        """The recovery sheet to print or save, with a QR code of its [recovery] part (what a
        program needs; the whole text would make a code too dense to scan from paper)."""
        text = call("backup_sheet")
        data = text[text.find("[recovery]"):] if "[recovery]" in text else text
        return render_template("sheet.html", me=g.me, text=text, qr=qr_svg(data))

    @app.post("/backups/sheet/kept")
    @needs("admin")
    def backup_sheet_kept() -> Any:
        call("backup_sheet_kept")
        return redirect(url_for("backups"))

    @app.route("/keys", methods=["GET", "POST"])
    @needs("admin")
    def keys() -> Any:
        """The certificate (get one now: a job with progress) and the DKIM key's life."""
        ctx: dict[str, Any] = {}
        action = request.form.get("action", "") if request.method == "POST" else ""
        if action == "cert":
            return redirect(url_for("progress", job=call("cert_now")["job"]))
        if action:
            ctx["said"], ctx["error"] = attempt("dkim", action=action)
        return render_template("keys.html", me=g.me, data=call("keys"), **ctx), \
            400 if ctx.get("error") else 200

    @app.route("/dns", methods=["GET", "POST"])
    @needs("admin")
    def dns() -> Any:
        """The records to publish; on request, each as DNS serves it now, or pushed to the
        user's own DNS server."""
        ctx: dict[str, Any] = {}
        action = request.form.get("action", "") if request.method == "POST" else ""
        if action == "check":
            ctx["findings"] = {f["record"]: f for f in call("dns_check")}
        elif action == "push":
            ctx["said"], ctx["error"] = attempt("dns_push")
        return render_template("dns.html", me=g.me, data=call("dns"), domain=state()["domain"],
                               **ctx), 400 if ctx.get("error") else 200

    @app.route("/settings", methods=["GET", "POST"])
    @needs("admin")
    def settings() -> Any:
        """Every feature's settings, each table its own form, saved as `appliance set`."""
        ctx: dict[str, Any] = {}
        if request.method == "POST":
            table = request.form.get("table", "")
            values = {k: v for k, v in request.form.items() if k not in ("csrf", "table")}
            ctx["said"], ctx["error"] = attempt("settings_save", table=table, values=values)
            ctx["table"] = table
        return render_template("settings.html", me=g.me, tables=call("settings_form"), **ctx), \
            400 if ctx.get("error") else 200

    @app.get("/users")
    @needs("admin")
    def users() -> Any:
        return render_template("users.html", me=g.me, data=call("users"))

    def user_action(op: str, fields: tuple[str, ...], done: str) -> Any:
        args = {f: request.form.get(f, "") for f in fields}
        said, error = attempt(op, **args)
        if error:
            return render_template("users.html", me=g.me, data=call("users"), error=error,
                                   form={k: v for k, v in args.items() if "password" not in k
                                         and k != "confirm"}), 400
        if isinstance(said, dict):  # a new app password: shown this once
            return render_template("users.html", me=g.me, data=call("users"), new=said)
        # The CLI's first line says what happened; the files it rewrote are for the log.
        lines = (said or "").strip().splitlines()[:1]
        return render_template("users.html", me=g.me, data=call("users"), said=lines[0] if lines else done)

    @app.post("/users/add")
    @needs("admin")
    def user_add() -> Any:
        return user_action("user_add", ("address", "password", "confirm"), "added")

    @app.post("/users/delete")
    @needs("admin")
    def user_del() -> Any:
        return user_action("user_del", ("address",), "removed")

    @app.post("/users/password")
    @needs("admin")
    def user_passwd() -> Any:
        return user_action("user_passwd", ("address", "password", "confirm"), "changed")

    @app.post("/users/quota")
    @needs("admin")
    def user_quota() -> Any:
        return user_action("user_quota", ("address", "mb"), "changed")

    @app.post("/users/app-passwords")
    @needs("admin")
    def app_password_add() -> Any:
        return user_action("app_password_add", ("address", "name"), "added")

    @app.post("/users/app-passwords/revoke")
    @needs("admin")
    def app_password_del() -> Any:
        return user_action("app_password_del", ("address", "name"), "revoked")

    @app.post("/aliases/add")
    @needs("admin")
    def alias_add() -> Any:
        return user_action("alias_add", ("alias", "address"), "added")

    @app.post("/aliases/delete")
    @needs("admin")
    def alias_del() -> Any:
        return user_action("alias_del", ("alias",), "removed")

    # --- a mail user's own account: web_account.py -----------------------------------------------
    from types import SimpleNamespace

    from appliance.console import web_account

    web_account.add_routes(app, SimpleNamespace(call=call, attempt=attempt, needs=needs, cookie=COOKIE))
    return app
