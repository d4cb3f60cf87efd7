"""Calendars and contacts ([dav]): Debian's Radicale behind the box's nginx, logins checked by
the box's Dovecot. Clients start from the user's address alone (RFC 6764: the SRV records that
`appliance dns` prints, published in the lab's knot as the user would, then /.well-known/).

The LAN client reaches the mail host name at the box's LAN address, as a home router's
hairpin or local DNS gives it (the lab's DNS holds the public address only); the internet
client uses the public DNS and the router's UPnP mapping, as a phone away from home does."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.core import tls

from .conftest import REPO
from .mail_lab import ALICE, ALICE_PW, APP_IP, BOB_LOCAL, BOB_PW, DNS_IP, DOMAIN, MAIL_HOST, WAN_IP, MailLab

KNOT = ["knotc", "-c", "/var/lib/knot-lab/knot.conf"]
CA = "/etc/box-cert.pem"
EVENT = """BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//lab//dav test//EN
BEGIN:VEVENT
UID:garden-meeting-1@lab
DTSTAMP:20261207T100000Z
DTSTART:20261210T180000Z
DTEND:20261210T190000Z
SUMMARY:Garden project meeting
END:VEVENT
END:VCALENDAR
"""
CARD = """BEGIN:VCARD
VERSION:3.0
UID:carol-1@lab
FN:Carol Gardener
N:Gardener;Carol;;;
EMAIL:carol@remote.test
END:VCARD
"""

# Discovery as RFC 6764 describes it, then the WebDAV steps every client takes: the principal,
# its home set, the collections in it. Run on a lab host with Debian's python3-caldav (calendar)
# and python3-requests, which python3-caldav brings (contacts: Debian has no CardDAV library).
CLIENT = r"""
import json, sys, dns.resolver, requests, caldav
from xml.etree import ElementTree as ET
user, password, action = sys.argv[1], sys.argv[2], sys.argv[3]
domain = user.split("@")[1]
r = dns.resolver.Resolver(configure=False); r.nameservers = [%(dns)r]
found = {}
for proto in ("caldavs", "carddavs"):
    srv = r.resolve(f"_{proto}._tcp.{domain}", "SRV")[0]
    found[proto] = f"https://{str(srv.target).rstrip('.')}:{srv.port}"
auth = (user, password)
def home(base, kind):
    # /.well-known/ redirects to the context path; PROPFIND finds the principal, then its home.
    D = "{DAV:}"
    ns = {"caldav": "urn:ietf:params:xml:ns:caldav", "carddav": "urn:ietf:params:xml:ns:carddav"}[kind]
    prop = "calendar-home-set" if kind == "caldav" else "addressbook-home-set"
    x = requests.request("PROPFIND", f"{base}/.well-known/{kind}", auth=auth, verify=%(ca)r,
                         headers={"Depth": "0"}, timeout=20,
                         data='<propfind xmlns="DAV:"><prop><current-user-principal/></prop></propfind>')
    if x.status_code == 401:
        print(json.dumps({"status": 401})); sys.exit(0)
    principal = ET.fromstring(x.content).find(f".//{D}current-user-principal/{D}href").text
    x = requests.request("PROPFIND", base + principal, auth=auth, verify=%(ca)r,
                         headers={"Depth": "0"}, timeout=20,
                         data=f'<propfind xmlns="DAV:" xmlns:c="{ns}"><prop><c:{prop}/></prop></propfind>')
    return ET.fromstring(x.content).find(f".//{{{ns}}}{prop}/{D}href").text
out = {"found": found}
home(found["caldavs"], "caldav")  # refused logins end here
# python3-caldav's own discovery from the well-known URL: principal, home set, calendars.
client = caldav.DAVClient(url=found["caldavs"] + "/.well-known/caldav", username=user,
                          password=password, ssl_verify_cert=%(ca)r)
calendars = client.principal().calendars()
out["calendars"] = [c.name for c in calendars]
book_home = home(found["carddavs"], "carddav")
x = requests.request("PROPFIND", found["carddavs"] + book_home, auth=auth, verify=%(ca)r,
                     headers={"Depth": "1"}, timeout=20,
                     data='<propfind xmlns="DAV:"><prop><resourcetype/><displayname/></prop></propfind>')
books = []
for resp in ET.fromstring(x.content).findall("{DAV:}response"):
    if resp.find(".//{urn:ietf:params:xml:ns:carddav}addressbook") is not None:
        books.append((resp.find("{DAV:}href").text, resp.find(".//{DAV:}displayname").text))
out["books"] = [name for _, name in books]
book = found["carddavs"] + books[0][0]
if action == "write":
    calendars[0].save_event(%(event)r)
    x = requests.put(book + "carol.vcf", data=%(card)r, auth=auth, verify=%(ca)r, timeout=20,
                     headers={"Content-Type": "text/vcard; charset=utf-8"})
    out["put_card"] = x.status_code
else:
    out["events"] = [e.data for e in calendars[0].events()]
    x = requests.get(book + "carol.vcf", auth=auth, verify=%(ca)r, timeout=20)
    out["card"] = x.text if x.status_code == 200 else x.status_code
print(json.dumps(out))
"""


def client(host, user: str, password: str, action: str) -> dict:  # noqa: ANN001 - a lab Host
    code = CLIENT % {"dns": DNS_IP, "ca": CA, "event": EVENT, "card": CARD}
    host.write("/var/tmp/dav-client.py", code)
    r = host.run(["/usr/bin/python3", "/var/tmp/dav-client.py", user, password, action],
                 check=False, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def dav_lab() -> Iterator[MailLab]:
    m = MailLab(Path(tempfile.mkdtemp(prefix="mail-appliance-lab.")), REPO, router="upnp",
                settings_extra="[dav]\nenabled = true\n")
    try:
        m.up()
        r = m.appliance("upnp", "renew")
        assert r.returncode == 0, r.stdout + r.stderr
        # The records `appliance dns` prints, published as the user would at their DNS host.
        r = m.appliance("dns")
        srv = [line.split() for line in r.stdout.splitlines() if "dav" in line and "\tSRV\t" in line]
        assert {x[0] for x in srv} == {f"_caldavs._tcp.{DOMAIN}.", f"_carddavs._tcp.{DOMAIN}."}, r.stdout
        m.dns.run([*KNOT, "zone-begin", DOMAIN])
        for x in srv:
            m.dns.run([*KNOT, "zone-set", DOMAIN, x[0], "60", "SRV", *x[-4:]])
        m.dns.run([*KNOT, "zone-commit", DOMAIN])
        cert = m.app.read(tls.self_signed_paths().fullchain)  # no ACME CA in this lab
        for host in (m.lan2, m.att):
            host.write(CA, cert)
        # The LAN's view of the name: the box's own address (hairpin or local DNS).
        m.lan2.write("/etc/hosts", f"127.0.0.1 localhost\n{APP_IP} {MAIL_HOST}\n")
        yield m
    finally:
        m.down()
        shutil.rmtree(m.workdir, ignore_errors=True)


def test_a_lan_client_and_a_second_client_share_the_default_calendar_and_address_book(
        dav_lab: MailLab) -> None:
    lab = dav_lab
    wrote = client(lab.lan2, ALICE, ALICE_PW, "write")
    assert wrote["found"] == {"caldavs": f"https://{MAIL_HOST}:443", "carddavs": f"https://{MAIL_HOST}:443"}
    # Created on her first login: one of each, which is what phones sync into.
    assert wrote["calendars"] == ["Calendar"] and wrote["books"] == ["Contacts"]
    assert wrote["put_card"] == 201
    # A second client (curl: another implementation, another process) reads both back.
    got = lab.lan2.run(["curl", "-sS", "--cacert", CA, "-u", f"{ALICE}:{ALICE_PW}",
                        f"https://{MAIL_HOST}/{ALICE}/contacts/carol.vcf"], check=False)
    assert "FN:Carol Gardener" in got.stdout, got.stdout + got.stderr
    read = client(lab.lan2, ALICE, ALICE_PW, "read")
    assert any("Garden project meeting" in e for e in read["events"])
    assert "FN:Carol Gardener" in read["card"]
    # Bob has his own, empty ones: the rights are owner-only.
    bob = client(lab.lan2, BOB_LOCAL, BOB_PW, "read")
    assert bob["calendars"] == ["Calendar"] and bob["events"] == [] and bob["card"] == 404
    r = lab.lan2.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", CA, "-u",
                      f"{BOB_LOCAL}:{BOB_PW}", f"https://{MAIL_HOST}/{ALICE}/contacts/carol.vcf"],
                     check=False)
    assert r.stdout == "403"
    rows = {x["name"]: x for x in json.loads(lab.appliance("status", "--json").stdout)}
    assert rows["calendars and contacts"]["status"] == "ok", rows["calendars and contacts"]


def test_a_wrong_password_is_refused_and_dovecot_saw_it(dav_lab: MailLab) -> None:
    lab = dav_lab
    assert client(lab.lan2, ALICE, "not her password", "read") == {"status": 401}
    r = lab.lan2.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", CA, "-u",
                      f"{ALICE}:wrong", f"https://{MAIL_HOST}/{ALICE}/"], check=False)
    assert r.stdout == "401"


def test_a_device_password_syncs_and_the_backup_carries_the_calendars(dav_lab: MailLab) -> None:
    lab = dav_lab
    good = lab.app.read("/etc/appliance/settings.toml")
    try:
        r = lab.appliance("user", "app-password", "add", ALICE, "Phone", "--json")
        assert r.returncode == 0, r.stdout + r.stderr
        phone = client(lab.lan2, ALICE, json.loads(r.stdout)["password"], "read")
        assert any("Garden project meeting" in e for e in phone["events"])
        lab.write_settings(lab.app.read("/etc/appliance/settings.toml")
                           + '\n[backup]\nenabled = true\nrepository = "/var/backups/appliance"\n')
        r = lab.appliance("apply")
        assert r.returncode == 0, r.stdout + r.stderr
        r = lab.appliance("backup", "now", "--json")
        assert r.returncode == 0 and json.loads(r.stdout)["ok"], r.stdout + r.stderr
        r = lab.appliance("restore", "--to", "/var/restored-dav")
        assert r.returncode == 0, r.stdout + r.stderr
        found = lab.app.run(["grep", "-rl", "Garden project meeting", "/var/restored-dav"],
                            check=False).stdout.split()
        assert any(f"/var/lib/radicale/collections/collection-root/{ALICE}/calendar/" in f
                   for f in found), found
    finally:
        lab.write_settings(good)
        assert lab.appliance("apply").returncode == 0


def test_from_the_internet_closed_until_turned_on_then_found_and_testssl_clean(dav_lab: MailLab) -> None:
    lab = dav_lab
    probe = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5", "--cacert",
             CA, "-u", f"{ALICE}:{ALICE_PW}", f"https://{MAIL_HOST}/{ALICE}/"]
    assert lab.att.run(probe, check=False).stdout in ("000", "")  # nothing answers on 443
    good = lab.app.read("/etc/appliance/settings.toml")
    lab.write_settings(good.replace("[dav]\nenabled = true\n", "[dav]\nenabled = true\ninternet = true\n"))
    try:
        r = lab.appliance("apply")
        assert r.returncode == 0, r.stdout + r.stderr
        r = lab.appliance("upnp", "renew")
        assert r.returncode == 0 and "port 443" in r.stdout, r.stdout + r.stderr
        # A phone away from home: public DNS (SRV, then the A record), the router's mapping.
        away = client(lab.att, ALICE, ALICE_PW, "read")
        assert any("Garden project meeting" in e for e in away["events"])
        assert "FN:Carol Gardener" in away["card"]
        out = "/var/tmp/testssl-dav.json"
        lab.att.run(["testssl", "--quiet", "--warnings", "off", "--color", "0", "--jsonfile", out,
                     "--ip", WAN_IP, "-p", "-s", "-P", "-U", f"https://{MAIL_HOST}/"],
                    check=False, timeout=400)
        findings = json.loads(lab.att.path(out).read_text())
        bad = [f"{f['id']}: {f['finding']}" for f in findings
               if f.get("severity") in ("HIGH", "CRITICAL") and not f["id"].startswith("scanProblem")]
        assert any(f["id"] == "TLS1_2" for f in findings), findings[:5]
        assert not bad, bad
    finally:
        lab.write_settings(good)
        assert lab.appliance("apply").returncode == 0
        lab.appliance("upnp", "remove", "443")
