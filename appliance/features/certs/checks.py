"""The status check of the certificate the services serve."""

from __future__ import annotations

from appliance.core.checks import FAIL, OK, WARN, Context, Result


def cert_status(days: float, self_signed: bool, hostname: str) -> Result:
    name = "certificate"
    if days < 0:
        return Result(name, FAIL, f"the certificate of {hostname} expired {-days:.0f} days ago",
                      "run `appliance cert renew --force`; `appliance cert show` says which is served")
    if days < 7:
        return Result(name, FAIL, f"the certificate of {hostname} expires in {days:.1f} days",
                      "run `appliance cert renew --force` and check its output")
    if self_signed:
        return Result(name, WARN, f"self-signed ({days:.0f} days left): senders and clients "
                      "cannot verify it", "run `appliance cert issue` (needs port 80 or dns-01)")
    if days < 21:
        return Result(name, WARN, f"{days:.0f} days left: renewal should have happened at 30",
                      "run `appliance cert renew` and check its output (certbot's timer)")
    return Result(name, OK, f"valid, {days:.0f} days left")


def check_certificate(c: Context) -> list[Result]:
    from appliance.core import tls
    from appliance.features.certs import certs

    paths = tls.active_paths(c.root, c.s.hostname)
    pem = c.root.read(paths.fullchain).content
    if not pem:
        return [Result("certificate", FAIL, f"no certificate at {paths.fullchain}",
                       "run `appliance apply` (it makes a self-signed one), then `appliance cert issue`")]
    return [cert_status(certs.days_left(pem, c.now), paths == tls.self_signed_paths(), c.s.hostname)]
