"""Commands that change the box run one at a time: two `appliance user add` and one
`appliance apply` started together all end well (or say "busy"), and no edit is lost."""

from __future__ import annotations

import threading

from .mail_lab import DOMAIN, MailLab, settings_toml

BUSY = 3  # errors.EXIT_LOCKED


def test_two_user_adds_and_an_apply_at_once_lose_nothing(lab: MailLab) -> None:
    new = [f"carol@{DOMAIN}", f"dave@{DOMAIN}"]
    results: dict[str, tuple[int, str]] = {}

    def run(key: str, *args: str, pw: str | None = None) -> None:
        r = lab.appliance(*args, input=pw)
        results[key] = (r.returncode, r.stdout + r.stderr)

    threads = [threading.Thread(target=run, args=(a, "user", "add", a), kwargs={"pw": "pw-" + a + "\n"})
               for a in new]
    threads.append(threading.Thread(target=run, args=("apply", "apply")))
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert all(not t.is_alive() for t in threads)
        assert all(code in (0, BUSY) for code, _ in results.values()), results
        busy = [k for k, (code, out) in results.items() if code == BUSY]
        assert all("busy:" in results[k][1] for k in busy), results
        # Every user that was added (not refused as busy) is in the settings and in Dovecot's table.
        added = [a for a in new if results[a][0] == 0]
        assert added, results  # the commands wait for each other: at least one got through
        text = lab.app.read("/etc/appliance/settings.toml")
        users = lab.app.read("/etc/dovecot/users")
        for a in added:
            assert f'"{a}"' in text and a in users, (a, results)
        # Converged: nothing left half-applied.
        r = lab.appliance("apply", "--diff")
        assert r.returncode == 0 and "would change 0 file(s)" in r.stdout, r.stdout + r.stderr
    finally:
        lab.write_settings(settings_toml(lab.users, lab.settings_extra))
        lab.appliance("apply")
