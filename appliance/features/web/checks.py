"""The status check of the MTA-STS policy, fetched the way a sender fetches it."""

from __future__ import annotations

from appliance.core.checks import FAIL, OK, WARN, Context, Result
from appliance.core.settings import Settings


def compare_mta_sts(text: str, s: Settings) -> Result:
    """The policy as served (RFC 8461 section 3.2) against what the box should publish."""
    fields: dict[str, list[str]] = {}
    for line in text.replace("\r\n", "\n").split("\n"):
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), []).append(value.strip())
    problems = []
    if fields.get("version") != ["STSv1"]:
        problems.append(f"version is {fields.get('version')}, not STSv1")
    if fields.get("mode") != [s.web.mta_sts_mode]:
        problems.append(f"mode is {fields.get('mode')}, the settings say {s.web.mta_sts_mode}")
    mx = fields.get("mx", [])
    if not any(p == s.hostname or (p.startswith("*.") and s.hostname.endswith(p[1:])) for p in mx):
        problems.append(f"mx {mx} does not cover {s.hostname}, your MX: senders enforcing the "
                        "policy would refuse to deliver")
    if not problems:
        return Result("MTA-STS policy", OK, f"served over HTTPS, mode {s.web.mta_sts_mode}, mx "
                      f"{', '.join(mx)}")
    return Result("MTA-STS policy", FAIL, "; ".join(problems),
                  "run `appliance apply` (it writes the policy nginx serves)")


def check_mta_sts(c: Context) -> list[Result]:
    """Fetch the policy the way a sender does: https://mta-sts.<domain>/.well-known/mta-sts.txt,
    certificate verified. From inside the LAN this needs the name to resolve to the box (split
    DNS) or hairpin NAT on the router; a connection failure is therefore a warning."""
    import ssl
    import urllib.error
    import urllib.request

    s = c.s
    if not s.web.enabled or s.web.mta_sts_mode == "none":
        return []
    url = f"https://mta-sts.{s.domain}/.well-known/mta-sts.txt"
    ctx = ssl.create_default_context(cafile=s.certs.acme_ca_bundle) if s.certs.acme_ca_bundle \
        else ssl.create_default_context()
    try:
        with urllib.request.urlopen(url, timeout=10, context=ctx) as r:  # noqa: S310 - https only
            text = r.read(65536).decode("utf-8", errors="replace")
    except ssl.SSLError as e:
        return [Result("MTA-STS policy", FAIL, f"{url}: the certificate does not verify ({e})",
                       f"issue a certificate that includes mta-sts.{s.domain}: `appliance cert issue`")]
    except (urllib.error.URLError, OSError) as e:
        return [Result("MTA-STS policy", WARN, f"{url} could not be fetched from the box ({e})",
                       "check from outside your network; from inside, the router must support "
                       "hairpin NAT or your LAN's DNS must point the name at the box")]
    return [compare_mta_sts(text, s)]
