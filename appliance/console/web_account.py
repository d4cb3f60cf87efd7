"""A mail user's own pages: her password, her OpenPGP key, her devices and their passwords.

Routes of the same app as web.py (`add_routes` is called by `create_app` with its helpers), in
a module of their own so that each stays readable.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, g, redirect, render_template, request, url_for

from appliance.console.present import qr_svg


def add_routes(app: Flask, kit: Any) -> None:
    """`kit`: create_app's call, attempt and needs, and the session cookie's name."""
    call, attempt, needs, COOKIE = kit.call, kit.attempt, kit.needs, kit.cookie  # noqa: N806

    def page(status: int = 200, **ctx: Any) -> Any:
        """My account, as the settings say now: key, forwarding, away message."""
        return render_template("account.html", me=g.me, key=call("my_key"), rules=call("my_rules"),
                               **ctx), status

    @app.route("/account", methods=["GET", "POST"])
    @needs("user")
    def account() -> Any:
        if request.method == "GET":
            return page()
        _, error = attempt("my_password", current=request.form.get("current", ""),
                           password=request.form.get("password", ""),
                           confirm=request.form.get("confirm", ""))
        if error:
            return page(400, error=error)
        resp = redirect(url_for("login"))
        resp.delete_cookie(COOKIE, secure=True, httponly=True, samesite="Strict")
        return resp

    @app.post("/account/forward")
    @needs("user")
    def account_forward() -> Any:
        said, error = attempt("my_forward", to=request.form.get("to", ""),
                              keep=bool(request.form.get("keep")))
        return page(400 if error else 200, rules_said=said, rules_error=error)

    @app.post("/account/away")
    @needs("user")
    def account_away() -> Any:
        form = {k: request.form.get(k, "") for k in ("subject", "message", "until")}
        said, error = attempt("my_vacation", on=request.form.get("on") == "yes", **form)
        return page(400 if error else 200, rules_said=said, rules_error=error,
                    away_form=form if error else None)

    @app.route("/account/devices", methods=["GET", "POST"])
    @needs("user")
    def devices() -> Any:
        """What her mail apps need, and a password for each device (made here, shown once,
        revoked alone when the device is lost)."""
        from appliance.console import devices as dev

        ctx: dict[str, Any] = {}
        action = request.form.get("action", "") if request.method == "POST" else ""
        if action == "add":
            ctx["new"], ctx["error"] = attempt("my_app_password_add", name=request.form.get("name", ""))
        elif action == "qr":
            got, ctx["error"] = attempt("my_device_link", name=request.form.get("name", ""))
            if got:
                ctx["qr_url"] = f"https://{request.host}/d/{got['link']}"  # nginx: TLS, 8443
                ctx["qr"], ctx["qr_minutes"] = qr_svg(ctx["qr_url"]), got["minutes"]
        elif action == "revoke":
            ctx["said"], ctx["error"] = attempt("my_app_password_del", name=request.form.get("name", ""))
        d = call("my_devices")
        return render_template("devices.html", me=g.me, dav=d["dav"],
                               rows=dev.settings(d["address"], d["host"], d["dav"]),
                               app_passwords=call("my_app_passwords"), **ctx), \
            400 if ctx.get("error") else 200

    @app.get("/d/<link>")
    def device_link(link: str) -> Any:
        """What a phone's camera opens from the QR code: no session, the link is the key, once.
        The profile it gets carries the device's own new app password."""
        from appliance.console import devices as dev
        from appliance.console.protocol import AgentError

        try:
            d = call("device_link_use", link=link)
        except AgentError as e:
            return render_template("error.html", message=str(e), me=None), 410
        return Response(dev.mobileconfig(d["address"], d["host"], d["domain"], d["password"],
                                         dav=d["dav"]),
                        mimetype="application/x-apple-aspen-config",
                        headers={"Content-Disposition": 'attachment; filename="mail.mobileconfig"'})

    @app.get("/account/mail.mobileconfig")
    @needs("user")
    def mobileconfig() -> Any:
        from appliance.console import devices as dev

        d = call("my_devices")
        return Response(dev.mobileconfig(d["address"], d["host"], d["domain"], dav=d["dav"]),
                        mimetype="application/x-apple-aspen-config",
                        headers={"Content-Disposition": 'attachment; filename="mail.mobileconfig"'})

    @app.post("/account/key")
    @needs("user")
    def account_key() -> Any:
        """Her OpenPGP public key: a file chosen or text pasted (the file wins)."""
        import base64

        upload = request.files.get("keyfile")
        data = upload.read() if upload and upload.filename else b""
        data = data or request.form.get("keytext", "").encode()
        return key_action("my_key_import", data_b64=base64.b64encode(data).decode())

    @app.post("/account/key/remove")
    @needs("user")
    def account_key_remove() -> Any:
        return key_action("my_key_remove")

    def key_action(op: str, **args: Any) -> Any:
        said, error = attempt(op, **args)
        return page(400 if error else 200, key_said=said, key_error=error)

