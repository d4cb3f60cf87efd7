"""The appliance's small HTTPS server (Debian's nginx, configured whole by the agent): the MTA-STS
policy (RFC 8461) at https://mta-sts.<domain>/.well-known/mta-sts.txt, the users' public
OpenPGP keys (Web Key Directory, advanced method) at https://openpgpkey.<domain>/, and what mail
apps fetch to set themselves up at https://autoconfig.<domain>/mail/config-v1.1.xml; nothing else.

Port 443 only: port 80 belongs to certbot's standalone challenge server for the minutes it runs.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from appliance.core import system
from appliance.core.errors import ValidationError
from appliance.core.plan import FileSpec, Inputs
from appliance.core.services import Service, pidfile_alive
from appliance.core.settings import Settings

WWW = "/var/lib/appliance/www"


def mta_sts_policy(s: Settings) -> str:
    lines = ["version: STSv1", f"mode: {s.web.mta_sts_mode}", f"mx: {s.hostname}",
             f"max_age: {s.web.mta_sts_max_age}"]
    return "\r\n".join(lines) + "\r\n"  # RFC 8461 section 3.2: CRLF-separated lines


def mta_sts_id(s: Settings) -> str:
    """The TXT record's id changes whenever the policy does (RFC 8461 section 3.1)."""
    return hashlib.sha256(mta_sts_policy(s).encode()).hexdigest()[:20]


WKD = "/var/lib/appliance/wkd"  # the OpenPGP Web Key Directory tree (appliance/openpgp/wkd.py)


def web_names(s: Settings) -> list[str]:
    return [f"mta-sts.{s.domain}", f"openpgpkey.{s.domain}", f"autoconfig.{s.domain}"] \
        if s.web.enabled else []


def web_feature(i: Inputs) -> list[FileSpec]:
    s = i.settings
    server = [FileSpec("etc/nginx/nginx.conf.j2", "/etc/nginx/nginx.conf", "nginx", order=90,
                       extra=(("www", WWW), ("wkd", WKD), ("mta_sts", f"mta-sts.{s.domain}"),
                              ("openpgpkey", f"openpgpkey.{s.domain}"),
                              ("autoconfig", f"autoconfig.{s.domain}")))]
    if not s.web.enabled:
        # The server alone, for another feature's site (calendars: [dav]).
        return server if s.dav.enabled else []
    return [
        FileSpec("var/lib/appliance/www/mta-sts/.well-known/mta-sts.txt.j2",
                 f"{WWW}/mta-sts/.well-known/mta-sts.txt", "nginx", order=10,
                 extra=(("policy", mta_sts_policy(s)),)),
        FileSpec("var/lib/appliance/www/autoconfig/mail/config-v1.1.xml.j2",
                 f"{WWW}/autoconfig/mail/config-v1.1.xml", "nginx", order=10),
        *server,
    ]


class Nginx(Service):
    name = "nginx"
    unit = "nginx.service"
    log_path = "/var/log/nginx/error.log"
    reload_errors = re.compile(r"\[(emerg|alert|crit)\]")
    reload_ack = re.compile(r"\[notice\] \d+#\d+: (reconfiguring|start worker process)")
    ports = (443,)
    pidfile = "/run/nginx.pid"

    def validate(self, stage: Path) -> None:
        conf = stage / "etc/nginx/nginx.conf"
        if not conf.exists():
            return
        res = system.run(["nginx", "-t", "-q", "-c", str(conf)], check=False)
        if res.returncode != 0:
            raise ValidationError(self.name, "nginx -t", res.output)

    def running(self) -> bool:
        return pidfile_alive(self.root, "/run/nginx.pid")

    def direct_reload(self) -> system.Result:
        if self.running():
            return system.run(["nginx", "-s", "reload"], check=False)
        self.root.makedirs("/var/log/nginx")
        return system.run_daemon(["nginx"])
