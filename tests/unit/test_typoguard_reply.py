"""Release by reply: the reply address (token made and checked), the decision for a
reply, and the release agent's LMTP answers (real asyncio server on a socket in a temporary
directory; the mail queue and Postfix are replaced by recordings, as Postfix does not run in
unit tests)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from appliance import registry
from appliance.features.privacy import policy as tp
from appliance.features.privacy import release_agent as ra
from appliance.features.privacy import reply as tr
from appliance.features.privacy import typoguard as tg

SECRET = bytes(range(32))
OWN = "example.org"
ALICE, BOB = "alice@example.org", "bob@example.org"
QID = "4AbCdEf123"


def held(qid: str = QID, sender: str = ALICE, queue: str = "hold") -> dict[str, Any]:
    return {"queue_name": queue, "queue_id": qid, "sender": sender,
            "recipients": [{"address": "ops@army.ml"}]}


def test_token_is_keyed_by_secret_queue_id_and_sender() -> None:
    t = tr.token(SECRET, QID, ALICE)
    assert re.fullmatch(r"[a-z2-7]{16}", t)
    assert t == tr.token(SECRET, QID, ALICE.upper())  # addresses compare without case
    others = {tr.token(bytes(32), QID, ALICE), tr.token(SECRET, "4AbCdEf124", ALICE),
              tr.token(SECRET, QID, BOB)}
    assert t not in others and len(others) == 3
    assert tr.verify(SECRET, QID, ALICE, t) and tr.verify(SECRET, QID, ALICE, t.upper())
    assert not tr.verify(SECRET, QID, BOB, t)
    with pytest.raises(ValueError):
        tr.token(b"", QID, ALICE)


def test_address_round_trips_through_parse() -> None:
    a = tr.address(SECRET, QID, ALICE, OWN)
    assert a == f"release+{QID}-{tr.token(SECRET, QID, ALICE)}@release.example.org"
    assert tr.parse(a, OWN) == (QID, tr.token(SECRET, QID, ALICE))
    assert tr.parse(f"<{a.upper()}>", OWN) == (QID.upper(), tr.token(SECRET, QID, ALICE))
    with pytest.raises(ValueError):
        tr.address(SECRET, "../etc", ALICE, OWN)


@pytest.mark.parametrize("rcpt", [
    "release@release.example.org",  # no queue ID, no token
    f"release+{QID}@release.example.org",  # no token
    f"release+{QID}-short@release.example.org",  # token too short
    f"release+{QID}-{'a' * 16}x@release.example.org",  # too long
    f"release+{QID}-{'1' * 16}@release.example.org",  # not base32
    f"release+{QID}-{'a' * 16}@release.example.com",  # another box's domain
    f"release+{QID}-{'a' * 16}@example.org",  # the mailbox domain, not the release subdomain
    f"release+../x-{'a' * 16}@release.example.org",
    f"alice+{QID}-{'a' * 16}@release.example.org",
    "",
])
def test_what_is_not_a_release_address(rcpt: str) -> None:
    with pytest.raises(tr.ReplyError):
        tr.parse(rcpt, OWN)


def decide(tok: str, sender: str, queue: list[dict[str, Any]], qid: str = QID) -> tr.Decision:
    return tr.decide(SECRET, qid, tok, sender, queue)


def test_decisions() -> None:
    good = tr.token(SECRET, QID, ALICE)
    d = decide(good, ALICE, [held()])
    assert d == tr.Decision(True, QID, f"message {QID} was released and is on its way")
    assert decide(good, "Alice@Example.org", [held()]).release
    # The client changed the case of the address: still the same message.
    assert decide(good, ALICE, [held()], qid=QID.lower()) == d
    # Bob with alice's address (he saw her notice): refused, and told whose it is.
    d = decide(good, BOB, [held()])
    assert not d.release and f"only {ALICE}" in d.reason
    # Bob with a token of his own making for alice's message: just "not valid".
    d = decide(tr.token(SECRET, QID, BOB), BOB, [held()])
    assert not d.release and "not valid" in d.reason
    # A wrong token: not valid, and nothing said about the message or its sender.
    d = decide("a" * 16 if good[0] != "a" else "b" * 16, ALICE, [held()])
    assert not d.release and "not valid" in d.reason and ALICE not in d.reason
    # Released already (in the active/deferred queue) or gone.
    d = decide(good, ALICE, [held(queue="deferred")])
    assert not d.release and "not held (it is in the deferred queue)" in d.reason
    d = decide(good, ALICE, [])
    assert not d.release and "no longer held" in d.reason
    d = decide(good, ALICE, [held(qid="5BcDeF0987")])
    assert not d.release and "no longer held" in d.reason


class FakeAgent(ra.Agent):
    """The real decisions; the queue, the secret and the actions recorded (no Postfix here)."""

    def __init__(self, queue: list[dict[str, Any]], root: Path = Path("/")) -> None:
        super().__init__(root=root)
        self.q = queue
        self.released: list[str] = []
        self.told: list[tuple[str, str]] = []
        self.fail_notice = False

    def own_domain(self) -> str:
        return OWN

    def secret(self) -> bytes:
        return SECRET

    def queue(self) -> list[dict[str, Any]]:
        return self.q


@pytest.fixture
def agent(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeAgent:
    # The guard's files (the real ones are in /etc and /var/lib): army.mil is known.
    root = tmp_path / "root"
    (root / "etc/appliance").mkdir(parents=True)
    (root / "var/lib/appliance/typoguard").mkdir(parents=True)
    (root / tp.CONF.lstrip("/")).write_text("enabled = yes\nhistory = plain\ndomain = example.org\n")
    h = tg.History()
    h.add("army.mil")
    (root / tp.HISTORY.lstrip("/")).write_text(tp.history_header(False) + h.dumps())
    a = FakeAgent([held()], root)

    def release_held(q: dict[str, Any], settings_path: Path) -> list[str]:
        a.released.append(q["queue_id"])
        q["queue_name"] = "active"
        return ["army.ml"]

    def send_notice(to: str, subject: str, body: str, reply_to: str = "") -> None:
        if a.fail_notice:
            raise ConnectionRefusedError("port 25 down")
        a.told.append((to, subject))

    monkeypatch.setattr("appliance.features.privacy.privacy.release_held", release_held)
    # The sockets stay the test's own (handing them to postfix and nogroup needs root).
    monkeypatch.setattr("appliance.core.system.chown_path", lambda *a, **k: None)
    monkeypatch.setattr(tp, "send_notice", send_notice)
    return a


async def lmtp(sock: str, sender: str, rcpts: list[str]) -> list[str]:
    r, w = await asyncio.open_unix_connection(sock)
    replies: list[str] = []

    async def cmd(line: str, n: int = 1) -> None:
        if line:
            w.write(line.encode() + b"\r\n")
        for _ in range(n):
            replies.append((await r.readline()).decode().rstrip())

    await cmd("")
    await cmd("LHLO test", 3)
    await cmd(f"MAIL FROM:<{sender}>")
    for x in rcpts:
        await cmd(f"RCPT TO:<{x}>")
    accepted = sum(1 for x in replies[-len(rcpts):] if x.startswith("250"))
    if accepted:
        await cmd("DATA")
        # The body, then QUIT pipelined after the final dot, as Postfix does.
        w.write(b"Subject: Re: held\r\n\r\nyes, send it\r\n..a dot line\r\n.\r\nQUIT\r\n")
        for _ in range(accepted + 1):
            replies.append((await r.readline()).decode().rstrip())
    w.close()
    return replies


def run_lmtp(agent: FakeAgent, tmp_path: Path, sender: str, rcpts: list[str]) -> list[str]:
    async def main() -> list[str]:
        ready = asyncio.Event()
        sock, notices = str(tmp_path / "lmtp"), str(tmp_path / "notices")

        task = asyncio.create_task(ra.serve(agent, sock, notices, ready))
        await asyncio.wait_for(ready.wait(), 10)
        try:
            return await asyncio.wait_for(lmtp(sock, sender, rcpts), 20)
        finally:
            task.cancel()

    return asyncio.run(main())


def test_lmtp_reply_releases_and_confirms(agent: FakeAgent, tmp_path: Path) -> None:
    addr = tr.address(SECRET, QID, ALICE, OWN)
    replies = run_lmtp(agent, tmp_path, ALICE, [addr])
    assert replies[-2].startswith(f"250 2.0.0 <{addr}> released {QID}"), replies
    assert replies[-1].startswith("221")  # the pipelined QUIT was read, not lost in the body
    assert agent.released == [QID]
    assert agent.told == [(ALICE, "Released: your message to army.ml")]


def test_lmtp_refusals_release_nothing_and_tell_the_sender(agent: FakeAgent, tmp_path: Path) -> None:
    addr = tr.address(SECRET, QID, ALICE, OWN)
    wrong = addr.replace("-", "-x", 1)[:-len("@release.example.org")]  # not even an address of ours
    replies = run_lmtp(agent, tmp_path, BOB, [addr, wrong + "@release.example.org"])
    assert replies[-5].startswith("250"), replies  # RCPT of the real address
    assert replies[-4].startswith("550 5.1.1"), replies  # the malformed one, refused at RCPT
    assert replies[-2] == f"250 2.0.0 <{addr}> not released, {BOB} told why"
    assert agent.released == [] and agent.told == [(BOB, f"Not released: message {QID}")]


def test_lmtp_defers_never_bounces_when_the_agent_cannot_act(agent: FakeAgent, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    addr = tr.address(SECRET, QID, ALICE, OWN)
    agent.fail_notice = True  # a refusal that cannot be told: kept for a retry
    replies = run_lmtp(agent, tmp_path, BOB, [addr])
    assert replies[-2].startswith(f"451 4.3.0 <{addr}> release agent: cannot tell {BOB}"), replies

    def broken() -> list[dict[str, Any]]:
        raise RuntimeError("a bug")

    monkeypatch.setattr(agent, "queue", broken)
    replies = run_lmtp(agent, tmp_path, ALICE, [addr])
    assert replies[-2] == f"451 4.3.0 <{addr}> release agent failed: RuntimeError", replies
    assert agent.released == []


def test_notice_requests_are_checked_against_the_hold_queue(agent: FakeAgent,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[tuple[str, str, str]] = []
    monkeypatch.setattr(tp, "notify", lambda s, q, v, reply_to="": sent.append((s, q, reply_to)))
    v = [tg.Verdict("army.ml", True, "army.mil", "tld", ".ml is Mali's")]
    agent.notice(QID, ALICE, v)
    assert sent == [(ALICE, QID, tr.address(SECRET, QID, ALICE, OWN))]
    with pytest.raises(ValueError, match="not 'bob@example.org'"):
        agent.notice(QID, BOB, v)  # only the real sender gets a reply address
    with pytest.raises(ValueError, match="not addressed to"):
        agent.notice(QID, ALICE, [tg.Verdict("evil.example", True, "army.mil")])
    # Held for another reason (the outbound limits) to a domain the guard does not hold for.
    agent.q = [{**held(), "recipients": [{"address": "ops@army.mil"}]}]
    with pytest.raises(ValueError, match="not held for a near-miss domain"):
        agent.notice(QID, ALICE, [tg.Verdict("army.mil", True, "army.mil", "tld", "forged")])
    assert len(sent) == 1
    with pytest.raises(ValueError):
        agent.check_notice({"queue_id": "../x", "sender": ALICE, "verdicts": []})
    qid, sender, verdicts = agent.check_notice(
        {"queue_id": QID, "sender": ALICE,
         "verdicts": [{"domain": "army.ml", "known": "army.mil", "kind": "tld", "reason": "r"}]})
    assert (qid, sender, verdicts[0].known) == (QID, ALICE, "army.mil")


def test_notice_text_says_how_to_reply() -> None:
    v = [tg.Verdict("army.ml", True, "army.mil", "tld", ".ml is Mali's")]
    addr = tr.address(SECRET, QID, ALICE, OWN)
    subject, body = tp.notice_text(QID, v, addr)
    assert "REPLY to this notice" in body and addr in body and f"appliance release {QID}" in body
    assert max(len(line) for line in body.splitlines() if "REPLY" in line or addr in line) <= 78
    _, plain = tp.notice_text(QID, v)
    assert "REPLY" not in plain and f"appliance release {QID}" in plain


def test_policy_service_falls_back_when_the_agent_is_not_there(tmp_path: Path) -> None:
    v = [tg.Verdict("army.ml", True, "army.mil", "tld", "r")]
    assert tp.hand_to_release_agent(ALICE, QID, v, str(tmp_path / "none.sock")) is False


def test_plan_routes_the_release_subdomain_to_the_agent_and_refuses_it_on_port_25(good: dict) -> None:
    from appliance.core import facts, plan

    f = facts.Facts("mail.example.org", "eth0", ("198.18.0.0/24",), ("198.18.0.10",), "198.18.0.1")
    p = registry.build_plan(registry.parse_settings(good), f, plan.environment(None))
    files = {x.path: x for x in p.files}
    rows = [line.split(None, 1) for line in files["/etc/postfix/transport"].content.decode().splitlines()
            if line and not line.startswith("#")]
    assert rows == [["release.example.org", "lmtp:unix:private/appliance-release"]]
    access = [line.split(None, 1) for line in files["/etc/postfix/release_access"].content.decode()
              .splitlines() if line and not line.startswith("#")]
    assert access[0][0] == "release.example.org" and access[0][1].startswith("550 5.7.1 ")
    main_cf = files["/etc/postfix/main.cf"].content.decode()
    assert "transport_maps = texthash:/etc/postfix/transport" in main_cf
    assert ("smtpd_recipient_restrictions = check_recipient_access texthash:/etc/postfix/release_access"
            in main_cf)
    # The submission ports override the port-25 restrictions (replies come in there).
    master = files["/etc/postfix/master.cf"].content.decode()
    assert master.count("-o smtpd_recipient_restrictions=") == 2
    unit = files["/etc/systemd/system/appliance-release.service"]
    assert unit.service == "appliance-release"
    assert "python3 -m appliance.features.privacy.release_agent" in unit.content.decode()
