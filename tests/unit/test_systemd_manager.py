"""How the agent drives systemd for its own units (appliance-*): a daemon-reload only when
systemd has not loaded the unit files on disk. Each one re-reads every unit on the machine
(about 8 s under emulation), and the first apply starts six of these services."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.core import services, system
from appliance.core.services import Service, Systemd


class AgentUnit(Service):
    name = "policyd"
    unit = "appliance-policyd.service"

    def needs_restart(self) -> bool:
        return False


def fake_systemctl(monkeypatch, show: str) -> list[tuple[str, ...]]:
    calls: list[tuple[str, ...]] = []

    def run(argv, **kw):
        calls.append(tuple(argv))
        out = show if argv[:2] == ["systemctl", "show"] else ""
        return system.Result(tuple(argv), 0, out, "")

    monkeypatch.setattr(services.system, "run", run)
    return calls


@pytest.fixture
def root(tmp_path: Path) -> system.Root:
    units = tmp_path / "etc/systemd/system"
    (units / "multi-user.target.wants").mkdir(parents=True)
    for name in ("appliance-policyd.service", "appliance-status.service", "appliance-status.timer"):
        (units / name).write_text("[Service]\n")
    return system.Root(str(tmp_path))


def test_units_systemd_already_runs_need_no_daemon_reload(root, monkeypatch) -> None:
    calls = fake_systemctl(monkeypatch, "LoadState=loaded\nNeedDaemonReload=no\n\n" * 3)
    assert Systemd().reload(AgentUnit(root)).returncode == 0
    assert calls == [
        ("systemctl", "show", "--property=LoadState,NeedDaemonReload",
         "appliance-policyd.service", "appliance-status.service", "appliance-status.timer"),
        ("systemctl", "enable", "--no-reload", "appliance-policyd.service"),
        ("systemctl", "reload-or-restart", "appliance-policyd.service"),
    ]


@pytest.mark.parametrize("show", [
    # a unit file changed on disk (here the timer's service, not the service reloaded)
    "LoadState=loaded\nNeedDaemonReload=no\n\nLoadState=loaded\nNeedDaemonReload=yes\n\n"
    "LoadState=loaded\nNeedDaemonReload=no\n",
    # a unit systemd has not found yet
    "LoadState=not-found\nNeedDaemonReload=no\n\n" + "LoadState=loaded\nNeedDaemonReload=no\n\n" * 2,
    # systemctl said nothing usable
    "",
])
def test_a_changed_or_unknown_unit_file_gets_one_daemon_reload(root, monkeypatch, show) -> None:
    calls = fake_systemctl(monkeypatch, show)
    Systemd().reload(AgentUnit(root))
    assert [c[:2] for c in calls] == [("systemctl", "show"), ("systemctl", "daemon-reload"),
                                      ("systemctl", "enable"), ("systemctl", "reload-or-restart")]
    assert ("systemctl", "enable", "--no-reload", "appliance-policyd.service") in calls


class OnDemand(Service):
    name = "release"
    unit = "appliance-release.service"
    socket_units = ("appliance-release.socket", "appliance-release-notice.socket")


def test_sockets_of_an_on_demand_service_start_without_rereading_every_unit(root, monkeypatch) -> None:
    for name in OnDemand.socket_units:
        (root.host("/etc/systemd/system") / name).write_text("[Socket]\n")
    calls = fake_systemctl(monkeypatch, "LoadState=loaded\nNeedDaemonReload=no\n\n" * 5)
    assert Systemd().reload(OnDemand(root)).returncode == 0
    assert ("systemctl", "daemon-reload") not in calls
    assert calls[-1] == ("systemctl", "enable", "--no-reload", "--now", *OnDemand.socket_units)
    calls.clear()
    (root.host("/etc/systemd/system") / "appliance-release.socket").write_text("[Socket]\n# new\n")
    fake = fake_systemctl(monkeypatch, "LoadState=loaded\nNeedDaemonReload=yes\n\n" * 5)
    Systemd().reload(OnDemand(root))
    assert fake.count(("systemctl", "daemon-reload")) == 1  # a changed unit file: one re-read
