"""The console's named operations: the only things the web process can ask the agent to do.

Each is carried out by the same code the `appliance` command runs: an edit is `appliance user
add ...`, with the same lock, the same checks and the same error text, so the console and the
settings file cannot disagree. Nothing here runs a shell or takes a command from the caller.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from typing import Any

from appliance.console import auth, wizard
from appliance.console.broker import MIN_PASSWORD, Agent, OpError, log, op
from appliance.console.protocol import DENIED, FAILED, INVALID
from appliance.core import system


# --- before anyone is logged in -------------------------------------------------------------------
@op("state")
def op_state(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> dict[str, Any]:
    """What the web process needs before anyone logs in: which first page to show, and the
    LAN prefixes the console answers (those the firewall lets through, as the agent sees them)."""
    from appliance.core import facts, settings

    configured = a.settings_file().is_file()
    domain, lan = "", settings.LanOverride()
    if configured:
        with contextlib.suppress(Exception):
            st = a.settings()
            domain, lan = st.domain, st.lan
    return {"configured": configured, "admin": auth.admin_exists(a.root), "domain": domain,
            "totp": auth.totp_on(a.root),
            "lan": list(facts.gather(lan).lan_prefixes)}


@op("setup_code")
def op_setup_code(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> dict[str, Any]:
    if auth.admin_exists(a.root):
        raise OpError("this box is set up already: log in", DENIED)
    client = str(args.get("_client", "?"))
    with a.throttle.one_at_a_time(client):
        _not_too_many(a, client, "setup code")
        if not auth.setup_code_ok(a.root, str(args.get("code", ""))):
            time.sleep(auth.FAILED_DELAY_S)
            a.throttle.failed(client)
            log(f"login failed for setup-code from {client}")
            raise OpError("that is not the setup code: it is in appliance-setup.txt on the card "
                          "(and on a screen connected to the box)", DENIED)
        a.throttle.succeeded(client)
    return {"session": a.sessions.new("setup", "setup")}


def _not_too_many(a: Agent, client: str, what: str) -> None:
    left = a.throttle.wait_left(client)
    if left > 0:
        log(f"{what} not checked for {client}: too many wrong tries, {left:.0f} s to wait")
        raise OpError(f"too many wrong tries from this device: wait {math.ceil(left)} seconds, "
                      "then try again", DENIED)


@op("login")
def op_login(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> dict[str, Any]:
    who = str(args.get("user", "")).strip().lower()
    password = str(args.get("password", ""))
    client = str(args.get("_client", "?"))
    with a.throttle.one_at_a_time(client):
        _not_too_many(a, client, "login")
        role = ""
        if who == "admin":
            role = "admin" if auth.admin_ok(a.root, password) else ""
            if role and auth.totp_on(a.root) and not auth.totp_check(a.root, str(args.get("code", ""))):
                role = ""
        elif who and a.settings_file().is_file():
            user = next((u for u in a.settings().users if u.address == who), None)
            role = "user" if user and auth.verify(password, user.password_hash) else ""
        if not role:
            # Slows a guesser; fail2ban reads this line (the LAN is never banned: ignoreip).
            time.sleep(auth.FAILED_DELAY_S)
            a.throttle.failed(client)
            log(f"login failed for {auth.loggable(who)} from {client}")
            raise OpError("wrong name or password" + (" or code" if who == "admin" and
                                                       auth.totp_on(a.root) else ""), DENIED)
        a.throttle.succeeded(client)
    log(f"login {auth.loggable(who)} from {client}")
    return {"session": a.sessions.new(who, role)}


@op("whoami", "setup", "admin", "user")
def op_whoami(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> dict[str, Any]:
    assert s is not None
    return {"who": s.who, "role": s.role, "csrf": s.csrf}


@op("logout", "setup", "admin", "user")
def op_logout(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> None:
    a.sessions.end(token)


# --- the setup wizard -----------------------------------------------------------------------------
@op("setup", "setup")
def op_setup(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> dict[str, Any]:
    from appliance.core.errors import SettingsError
    from appliance.features.mail import users

    admin_pw = str(args.get("admin_password", ""))
    if len(admin_pw) < MIN_PASSWORD:
        raise OpError(f"admin password: shorter than {MIN_PASSWORD} characters; choose a longer one")
    with a.setup_lock:
        if auth.admin_exists(a.root):
            raise OpError("this box is set up already: log in", DENIED)
        path = a.settings_file()
        if not path.is_file():
            domain = str(args.get("domain", "")).strip().lower()
            hostname = str(args.get("hostname", "")).strip().lower() or f"mail.{domain}"
            local = str(args.get("user", "")).strip().lower()
            address = local if "@" in local else f"{local}@{domain}"
            try:
                h = users.hash_password(str(args.get("password", "")))
            except Exception as e:  # noqa: BLE001 - UserError: the CLI's own words
                raise OpError(f"password: {e}") from None
            text = wizard.new_settings(domain, hostname, address, h)
            try:
                _check_text(a, text)
            except SettingsError as e:
                raise OpError(wizard.wizard_problems(e.problems)) from None
            path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            system.write_user_file(path, text, 0o600)
            log(f"setup: wrote {path} for {domain}")
        auth.set_admin_password(a.root, admin_pw)
        auth.end_setup(a.root)
    a.sessions.end(token)
    session = a.sessions.new("admin", "admin")
    job = a.start_job("admin", list(a.setup_steps))
    return {"session": session, "job": job}


def _check_text(a: Agent, text: str) -> None:
    import tomllib

    from appliance import registry
    from appliance.core import pipeline, settings

    settings.parse(tomllib.loads(text), str(a.settings_file()), pipeline.sections(registry.FEATURES))


@op("job", "admin", "user")
def op_job(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> dict[str, Any]:
    job = a.jobs.get(str(args.get("id", "")))
    if job is None or s is None or (job.who != s.who):
        raise OpError("no such job (the agent restarted?): see Status", INVALID)
    return {"steps": job.steps, "lines": job.lines[-200:], "done": job.done, "ok": job.ok,
            "notes": job.notes, "kind": job.kind}


def answer(a: Agent, *argv: str) -> Any:
    """The JSON of a verb whose exit 1 is an answer (checks that found something wrong), not a
    breakdown: only output that is no JSON at all is a failure."""
    code, out, err = a.appliance(*argv)
    try:
        return json.loads(out)
    except ValueError:
        raise OpError((err or out).strip() or f"{argv[0]} failed (exit {code})", FAILED) from None


# --- the administrator's pages ----------------------------------------------------------------------
@op("status", "admin")
def op_status(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> Any:
    return answer(a, "status", "--json")


@op("dns", "admin")
def op_dns(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> Any:
    st = a.settings()
    return {"records": json.loads(a.must("dns", "--json")),
            "push": bool(st.dns.update_server and st.dns.update_key_file),
            "server": st.dns.update_server}


@op("dns_check", "admin")
def op_dns_check(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> Any:
    """Each record as DNS serves it now (`appliance dns --check --json`, which exits 1 when one
    is wrong: an answer, not a failure)."""
    return answer(a, "dns", "--check", "--json")


@op("dns_push", "admin")
def op_dns_push(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> str:
    return a.must("dns", "--push").strip()


@op("users", "admin")
def op_users(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> Any:
    from appliance.features.mail import quota

    st = a.settings()
    # Each mailbox's use as Dovecot counts it (none while Dovecot is down: the page says so).
    res = system.run(["doveadm", "-f", "tab", "quota", "get", "-A"], check=False, timeout=30)
    use = quota.parse_quota_get(res.stdout) if res.returncode == 0 else {}
    return {"domain": st.domain,
            "users": [{"address": u.address, "aliases": list(u.aliases), "scheme": u.dovecot_scheme,
                       "app_passwords": app_password_rows(a, u), "quota_mb": u.quota_mb,
                       "space": quota.use_result(u.address, *use[u.address]).as_dict()
                       if u.address in use else None} for u in st.users]}


@op("user_quota", "admin")
def op_user_quota(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> str:
    mb = str(args.get("mb") or "").strip()
    if mb and not mb.isdigit():
        raise OpError(f'quota: "{mb}" is not a whole number of MiB; leave it empty for the default')
    return a.must("user", "quota", form_address(a, args.get("address")), mb or "--default",
                  *a.edit_flags).strip()


def app_password_rows(a: Agent, user: Any) -> list[dict[str, Any]]:
    """A user's app passwords, each with its last use as Dovecot noted it (time, address)."""
    from appliance.core import app_passwords

    return app_passwords.rows(system.Root(a.root), user.app_passwords)


@op("user_add", "admin")
def op_user_add(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> str:
    address = form_address(a, args.get("address"))
    return a.must("user", "add", address, stdin=form_password(args) + "\n").strip()


@op("user_del", "admin")
def op_user_del(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> str:
    address = form_address(a, args.get("address"))
    out = a.must("user", "del", address).strip()
    a.sessions.end_all(address)
    return out


@op("user_passwd", "admin")
def op_user_passwd(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> str:
    address = form_address(a, args.get("address"))
    out = a.must("user", "passwd", address, stdin=form_password(args) + "\n").strip()
    a.sessions.end_all(address)
    return out


@op("alias_add", "admin")
def op_alias_add(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> str:
    return a.must("alias", "add", form_address(a, args.get("alias")),
                  form_address(a, args.get("address"))).strip()


@op("alias_del", "admin")
def op_alias_del(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> str:
    return a.must("alias", "del", form_address(a, args.get("alias"))).strip()


# --- settings: every feature's table as a form (settings_form.py) ----------------------------------
@op("settings_form", "admin")
def op_settings_form(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> Any:
    from appliance.console import settings_form

    return settings_form.current(a.settings_file())


@op("settings_save", "admin")
def op_settings_save(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> str:
    """One table's form: the fields it changed, as one `appliance set` (checked, then applied)."""
    from appliance.console import settings_form

    table, form = str(args.get("table", "")), args.get("values") or {}
    now = settings_form.current(a.settings_file()).get(table)
    if now is None or not isinstance(form, dict):
        raise OpError(f"no settings table [{table}] on this page")
    changes = settings_form.assignments(table, {str(k): str(v) for k, v in form.items()}, now)
    if not changes:
        return "nothing changed"
    a.must("set", *changes, *a.edit_flags)
    return "saved and applied: " + ", ".join(c.partition("=")[0] for c in changes)


# --- connection: reachability and bans --------------------------------------------------------------
@op("connection", "admin")
def op_connection(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> dict[str, Any]:
    """The reachability verdict (`appliance reachability --json`: UPnP, the public address, the
    ports from outside) and who fail2ban has banned (`appliance bans --json`)."""
    reach = answer(a, "reachability", "--json")  # exit 1 is a verdict, not a failure
    bans = json.loads(a.must("bans", "--json")) if a.settings().fail2ban.enabled else None
    return {"reach": reach, "bans": bans}


@op("unban", "admin")
def op_unban(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> str:
    return a.must("unban", str(args.get("address", "")).strip()).strip()


# --- backups ---------------------------------------------------------------------------------------
@op("backups", "admin")
def op_backups(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> dict[str, Any]:
    """Whether backups are on, where to, and their status checks (last backup, repository check,
    restore drill, recovery sheet): the lines `appliance status` prints for them."""
    st = a.settings()
    if not st.backup.enabled:
        return {"enabled": False}
    checks = [r for r in op_status(a, s, args, token) if r["name"].startswith("backup")]
    ssh_key = None
    if str(st.backup.repository).startswith("sftp:"):  # the line to authorize on the server
        ssh_key = a.must("backup", "ssh-key").strip()
    return {"enabled": True, "repository": st.backup.repository, "checks": checks,
            "ssh_key": ssh_key}


@op("backup_now", "admin")
def op_backup_now(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> dict[str, Any]:
    assert s is not None
    return {"job": a.start_job(s.who, [("Back up now", ("backup", "now"), True)], kind="backup")}


@op("backup_sheet", "admin")
def op_backup_sheet(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> str:
    return a.must("backup", "recovery-sheet")


@op("backup_sheet_kept", "admin")
def op_backup_sheet_kept(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> str:
    return a.must("backup", "recovery-sheet", "--kept").strip()


# --- the administrator's second factor -------------------------------------------------------------
@op("totp", "admin")
def op_totp(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> dict[str, Any]:
    return {"on": auth.totp_on(a.root)}


@op("totp_begin", "admin")
def op_totp_begin(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> dict[str, Any]:
    import socket

    secret, uri = auth.totp_begin(a.root, f"admin@{socket.gethostname()}")
    return {"secret": secret, "uri": uri}


@op("totp_confirm", "admin")
def op_totp_confirm(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> str:
    if not auth.totp_confirm(a.root, str(args.get("code", ""))):
        raise OpError("code: not the one your app shows now (is the phone's clock right?); "
                      "nothing was changed")
    log("admin turned on the authenticator code")
    return "From now on the console asks for a code from your app after the password."


@op("totp_off", "admin")
def op_totp_off(a: Agent, s: auth.Session | None, args: dict[str, Any], token: str) -> str:
    if not auth.admin_ok(a.root, str(args.get("password", ""))):
        time.sleep(auth.FAILED_DELAY_S)
        raise OpError("password: wrong; the code is still asked for", DENIED)
    auth.totp_off(a.root)
    log("admin turned off the authenticator code")
    return "The console asks for the password only."


def form_password(args: dict[str, Any]) -> str:
    pw = str(args.get("password", ""))
    if pw != str(args.get("confirm", pw)):
        raise OpError("password: the two passwords differ; nothing was changed")
    if "\n" in pw:
        raise OpError("password: has a line break; choose another")
    return pw


def form_address(a: Agent, value: Any) -> str:
    """A form's address: a bare name means one at the box's domain."""
    text = str(value or "").strip().lower()
    if not text:
        raise OpError("address: empty; type a name such as alice")
    if "@" not in text:
        text = f"{text}@{a.settings().domain}"
    return text


