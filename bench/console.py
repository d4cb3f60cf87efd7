"""Benchmark of the LAN console in the lab: figures and ratios against baselines measured in the
same run. Asserts nothing. Needs root (it builds the lab).

  1. cold start: from starting the agent and the web process (what socket activation does at the
     first visit) to the first page served, vs. a warm page load by the same client
  2. the Status page (every `appliance status` check, through the agent), vs. the login page and
     vs. `appliance status --json` run directly
  3. PSS of the web process, the agent and the console's nginx after those pages
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.run import tree_mem  # noqa: E402
from tests.lab import console_lab  # noqa: E402
from tests.lab.mail_lab import MailLab  # noqa: E402

ADMIN_PW = "bench admin password"
N = 5


def pid(m: MailLab, path: str) -> int:
    return int(m.app.path(path).read_text().split()[0])


def lan2_json(m: MailLab, code: str) -> dict:
    r = m.lan2.python(console_lab.HTTP_CLIENT + code, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> int:
    m = MailLab(Path(tempfile.mkdtemp(prefix="bench-console.")), REPO)
    try:
        m.up()
        console_lab.start(m)
        r = m.appliance("console", "admin-password", input=ADMIN_PW + "\n")
        assert r.returncode == 0, r.stderr

        # 1. Cold start, as at a visit after the processes exited when idle.
        warm = lan2_json(m, """
t = time.perf_counter(); st, _, _ = req("GET", "/login")
print(json.dumps({"s": time.perf_counter() - t, "status": st}))""")
        colds = []
        for _ in range(3):
            for name, path in (("console-web", console_lab.WEB_PID),
                               ("console-agent", console_lab.AGENT_PID)):
                m.app.run(["kill", str(pid(m, path))])
                m.app.pidfiles.pop(name, None)
            time.sleep(1.0)
            t0 = time.perf_counter()
            console_lab.start_agent_and_web(m)
            got = lan2_json(m, """
for i in range(400):
    try:
        st, _, _ = req("GET", "/login")
        if st == 200:
            break
    except OSError:
        pass
    time.sleep(0.01)
print(json.dumps({"status": st, "tries": i}))""")
            colds.append(time.perf_counter() - t0)
            assert got["status"] == 200, got
        print(f"console cold start to the first page: median {statistics.median(colds):.2f} s "
              f"(of {len(colds)}; includes the LAN client's own start-up) vs. a warm page "
              f"{warm['s'] * 1000:.0f} ms: {statistics.median(colds) / warm['s']:.0f}x")

        # 2. The Status page.
        pages = lan2_json(m, f"""
st, session = login("admin", {ADMIN_PW!r})
ck = {{"__Host-console": session}}
def t(path):
    out = []
    for _ in range({N}):
        a = time.perf_counter(); s, body, _ = req("GET", path, cookies=ck)
        assert s == 200, (path, s)
        out.append(time.perf_counter() - a)
    return sorted(out)[len(out) // 2]
print(json.dumps({{"status": t("/status"), "login": t("/login"), "users": t("/users")}}))""")
        cli = []
        for _ in range(N):
            t0 = time.perf_counter()
            m.appliance("status", "--json")
            cli.append(time.perf_counter() - t0)
        direct = statistics.median(cli)
        print(f"Status page: median {pages['status'] * 1000:.0f} ms of {N} vs. `appliance status "
              f"--json` run directly {direct * 1000:.0f} ms ({pages['status'] / direct:.2f}x), "
              f"the login page {pages['login'] * 1000:.0f} ms, Users {pages['users'] * 1000:.0f} ms")

        # 3. Memory while running (between visits both processes exit: 0).
        web = tree_mem(pid(m, console_lab.WEB_PID))
        agent = tree_mem(pid(m, console_lab.AGENT_PID))
        nginx = tree_mem(pid(m, "/run/appliance-console-nginx.pid"))
        for name, (n, rss, pss) in (("web process", web), ("agent", agent), ("console nginx", nginx)):
            print(f"  {name}: {n} proc(s) PSS {pss / 1024:.1f} MiB (RSS {rss / 1024:.1f})")
        total = (web[2] + agent[2] + nginx[2]) / 1024
        print(f"console while running: PSS {total:.1f} MiB (web + agent + its nginx); "
              f"idle between visits: nginx only, {nginx[2] / 1024:.1f} MiB")
    finally:
        m.down()
        shutil.rmtree(m.workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
