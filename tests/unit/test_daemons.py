"""The agent's own daemons share one shape (appliance/core/daemon.py): each is started in a
subprocess here, the way systemd starts it (NOTIFY_SOCKET, and for the release agent the
listening sockets of socket activation) or the way the lab does, and must say READY=1 once it
listens, RELOADING=1 then READY=1 on SIGHUP, STOPPING=1 on SIGTERM, and load nothing of the
package but the core and its own feature."""

from __future__ import annotations

import json
import os
import pwd
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

DAEMONS = {
    "appliance.features.openpgp.proxy": "openpgp",
    "appliance.features.limits.policyd": "limits",
    "appliance.features.privacy.release_agent": "privacy",
}

# Runs a daemon's module as `python -m` would, after putting sockets passed by the test at
# fds 3, 4... as systemd does (LISTEN_FDS, LISTEN_PID), and writes the appliance modules it
# loaded to a file when it exits.
RUNNER = """
import atexit, json, os, runpy, sys
out, module, passed = sys.argv[1], sys.argv[2], [x.split("=") for x in sys.argv[3].split(",") if x]
for n, (name, fd) in enumerate(passed):
    os.dup2(int(fd), 3 + n)
if passed:
    os.environ["LISTEN_FDS"], os.environ["LISTEN_PID"] = str(len(passed)), str(os.getpid())
    os.environ["LISTEN_FDNAMES"] = ":".join(name for name, _ in passed)
def dump():
    with open(out, "w") as f:
        json.dump(sorted(m for m in sys.modules if m == "appliance" or m.startswith("appliance.")), f)
atexit.register(dump)
sys.argv = [module] + sys.argv[4:]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def start(tmp: Path, module: str, args: list[str], sockets: dict[str, socket.socket] | None = None,
          notify: socket.socket | None = None) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "LISTEN_"))}
    env["PYTHONPATH"] = str(REPO)
    if notify is not None:
        env["NOTIFY_SOCKET"] = notify.getsockname()
    fds = {name: s.fileno() for name, s in (sockets or {}).items()}
    return subprocess.Popen([sys.executable, "-c", RUNNER, str(tmp / "modules.json"), module,
                             ",".join(f"{n}={fd}" for n, fd in fds.items()), *args], env=env,
                            pass_fds=list(fds.values()), cwd=tmp,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def loaded(tmp: Path) -> list[str]:
    return json.loads((tmp / "modules.json").read_text())


def foreign(modules: list[str], feature: str) -> list[str]:
    """Modules of the package other than the core and the daemon's own feature."""
    own = ("appliance.core", f"appliance.features.{feature}")
    return [m for m in modules if m not in ("appliance", "appliance.features")
            and not any(m == o or m.startswith(o + ".") for o in own)]


@pytest.fixture()
def notify_socket(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(tmp_path / "notify"))
    s.settimeout(20)
    yield s
    s.close()


def states(s: socket.socket, until: str) -> list[str]:
    """sd_notify messages up to (and with) the one that contains `until`."""
    got: list[str] = []
    while not any(until in m for m in got):
        got.append(s.recv(4096).decode())
    return got


@pytest.mark.parametrize("module", sorted(DAEMONS))
def test_each_daemon_loads_only_the_core_and_its_own_feature(module: str, tmp_path: Path) -> None:
    p = start(tmp_path, module, ["--help"])
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 0, out
    mods = loaded(tmp_path)
    assert foreign(mods, DAEMONS[module]) == [], mods
    assert "appliance.registry" not in mods and "appliance.cli" not in mods
    # Nor the agent's planning side: a daemon is not the agent.
    assert not {"appliance.core.plan", "appliance.core.apply", "appliance.core.services"} & set(mods)


def test_the_guard_sees_another_features_module() -> None:
    assert foreign(["appliance.core.daemon", "appliance.features.privacy.policy"], "limits") == \
        ["appliance.features.privacy.policy"]


def test_proxy_says_ready_reloads_and_stops_through_sd_notify(tmp_path: Path,
                                                              notify_socket: socket.socket) -> None:
    conf = tmp_path / "openpgp.conf"
    conf.write_text(f"listen = {tmp_path}/pgp.sock\ndovecot = {tmp_path}/dovecot.sock\n"
                    f"home = {tmp_path}/gnupg\ngpg = gpg\n")
    (tmp_path / "gnupg").mkdir()
    me = pwd.getpwuid(os.getuid()).pw_name
    p = start(tmp_path, "appliance.features.openpgp.proxy", ["--config", str(conf), "--user", me],
              notify=notify_socket)
    try:
        assert any("READY=1" in m for m in states(notify_socket, "READY=1"))
        assert (tmp_path / "pgp.sock").is_socket()  # ready means listening
        p.send_signal(signal.SIGHUP)
        got = states(notify_socket, "READY=1")
        assert "RELOADING=1" in got[0], got
        p.send_signal(signal.SIGTERM)
        assert any("STOPPING=1" in m for m in states(notify_socket, "STOPPING=1"))
        out, _ = p.communicate(timeout=20)
    finally:
        p.kill()
    assert p.returncode == 0, out
    assert "appliance-pgp: started: listening on" in out
    assert "appliance-pgp: reloaded: " in out and out.rstrip().endswith("appliance-pgp: stopped")
    assert foreign(loaded(tmp_path), "openpgp") == []


def test_release_agent_on_demand_serves_the_passed_sockets_then_exits_when_idle(
        tmp_path: Path, notify_socket: socket.socket) -> None:
    """What systemd's socket units do: the sockets exist before the agent; it takes them
    (LISTEN_FDS), answers, and exits once idle; the socket stays, for the next start."""
    lmtp_path, notice_path = tmp_path / "release-lmtp", tmp_path / "release-notice"
    listening = {}
    for name, path in (("notices", notice_path), ("replies", lmtp_path)):  # found by name
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(str(path))
        s.listen(16)
        listening[name] = s
    # The socket is there before the agent: a client connects and waits for it.
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(20)
    client.connect(str(lmtp_path))
    t0 = time.monotonic()
    p = start(tmp_path, "appliance.features.privacy.release_agent",
              ["--settings", str(tmp_path / "settings.toml"), "--exit-when-idle", "1"],
              sockets=listening, notify=notify_socket)
    try:
        with client:
            assert client.makefile("rb").readline().startswith(b"220 appliance-release LMTP")
            client.sendall(b"QUIT\r\n")
        assert any("READY=1" in m for m in states(notify_socket, "READY=1"))
        assert any("STOPPING=1" in m for m in states(notify_socket, "STOPPING=1"))
        out, _ = p.communicate(timeout=20)
    finally:
        p.kill()
    assert p.returncode == 0, out
    assert time.monotonic() - t0 < 15
    assert "listening on the sockets systemd passed, on demand" in out, out
    assert "idle for 1 s: exiting" in out, out
    assert lmtp_path.is_socket() and notice_path.is_socket()  # systemd's, still listening
    assert foreign(loaded(tmp_path), "privacy") == []
    for s in listening.values():
        s.close()


def test_release_agent_started_directly_does_not_exit_when_idle(tmp_path: Path) -> None:
    """Without systemd (the lab) nothing would start it again: the idle exit is off."""
    import asyncio

    from appliance.features.privacy import release_agent as ra

    async def main() -> str:
        ready = asyncio.Event()
        task = asyncio.create_task(ra.serve(ra.Agent(str(tmp_path / "settings.toml")),
                                            str(tmp_path / "lmtp"), str(tmp_path / "notices"),
                                            ready, exit_when_idle=0.2))
        await asyncio.wait_for(ready.wait(), 10)
        await asyncio.sleep(1.0)
        alive = "running" if not task.done() else "exited"
        task.cancel()
        return alive

    if os.getuid() != 0:
        pytest.skip("the agent hands its sockets to postfix and nogroup: root only")
    assert asyncio.run(main()) == "running"


def test_under_systemd_the_agent_starts_the_release_agents_sockets_not_the_agent(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """What the agent asks of systemd for a service started on demand (no systemd here: the
    commands are recorded)."""
    from appliance.core import services, system
    from appliance.features.privacy.release_service import ReleaseAgent

    calls: list[list[str]] = []
    active: dict[str, bool] = {}

    def run(argv: list[str], check: bool = True, **kw: object) -> system.Result:
        calls.append(list(argv))
        rc = 0
        if argv[1] == "is-active":
            rc = 0 if all(active.get(u, False) for u in argv[3:]) else 3
        elif argv[1:4] == ["enable", "--no-reload", "--now"]:
            active.update({u: True for u in argv[4:]})
        return system.Result(tuple(argv), rc, "", "")

    monkeypatch.setattr(system, "run", run)
    agent = ReleaseAgent(system.Root("/"))
    mgr = services.Systemd()
    sockets = ["appliance-release.socket", "appliance-release-notice.socket"]
    assert mgr.reload(agent).returncode == 0
    # First time (or after an older unit that ran it as a daemon of its own): no socket listens,
    # so whatever instance runs is stopped before the sockets start.
    assert calls == [["systemctl", "daemon-reload"], ["systemctl", "is-active", "--quiet", *sockets],
                     ["systemctl", "stop", "appliance-release.service"],
                     ["systemctl", "enable", "--no-reload", "--now", *sockets]]
    calls.clear()
    assert mgr.reload(agent).returncode == 0  # the sockets listen: nothing is stopped
    assert ["systemctl", "stop", "appliance-release.service"] not in calls
    assert not any(c[1] in ("restart", "reload-or-restart", "start") for c in calls)
    calls.clear()
    mgr.stop(agent)  # its files are no longer wanted: the sockets go too
    assert calls[0] == ["systemctl", "disable", "--now", *sockets, "appliance-release.service"]
