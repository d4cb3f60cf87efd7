"""Moving in: `appliance import` against a plain `doveadm sync` of the same mailbox, in the same
lab run. Asserts nothing. Needs root (the lab).

The old provider is a real Dovecot on the lab's internet (tests/lab/test_import.py's), with
--messages messages in 10 folders. The import runs folder by folder, with its checks and
counts; the baseline is one `doveadm sync -1 -R` of the whole mailbox into another user, with
the same source settings. A first plain sync warms the old server's caches, so both compared
runs read a warm source. Then the import runs again over what is there: the cost of a resume
that finds nothing to copy.

    python3 bench/imports.py [--messages 2000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from appliance.features.mail import imports  # noqa: E402
from tests.lab import test_import as old  # noqa: E402
from tests.lab.mail_lab import BOB_LOCAL, DOMAIN, MailLab, hash_pw  # noqa: E402

DAVE, ERIN = f"dave@{DOMAIN}", f"erin@{DOMAIN}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=2000)
    a = ap.parse_args()
    per_folder = max(a.messages // len(old.FOLDERS), 1)
    total = per_folder * len(old.FOLDERS)
    lab = MailLab(Path(tempfile.mkdtemp(prefix="bench-imports.")), REPO)
    lab.users += [(DAVE, hash_pw("dave-secret-1"), []), (ERIN, hash_pw("erin-secret-1"), [])]
    try:
        lab.up()
        old.start_old_provider(lab, per_folder)

        conf = imports.config(imports.parse_source(f"imaps://{old.OLD_HOST}"), old.OLD_LOGIN,
                              "/var/tmp/bench-password", old.CA)
        lab.app.write("/var/tmp/bench-password", old.OLD_PW, mode=0o600)
        lab.app.write("/var/tmp/bench-doveadm.conf", conf, mode=0o600)

        def plain(user: str) -> float:
            t0 = time.perf_counter()
            lab.app.run(["doveadm", "-c", "/var/tmp/bench-doveadm.conf", "sync", "-1", "-R", "-u",
                         user, "imapc:"], timeout=1800)
            return time.perf_counter() - t0

        def ours() -> float:
            t0 = time.perf_counter()
            r = lab.appliance("import", "--user", BOB_LOCAL, "--from", f"imaps://{old.OLD_HOST}",
                              "--login", old.OLD_LOGIN, "--password-file", "/var/tmp/old-password",
                              "--ca-file", old.CA)
            assert r.returncode == 0, r.stdout + r.stderr
            return time.perf_counter() - t0

        cold = plain(DAVE)
        first = ours()
        warm = plain(ERIN)
        again = ours()
        copied = len(old.imported(lab))
        assert copied == total, (copied, total)

        print(f"import of {total} messages in {len(old.FOLDERS)} folders over IMAPS (lab, "
              f"no line delay):")
        print(f"  appliance import       {first:6.1f} s  {total / first:6.0f} messages/s")
        print(f"  plain doveadm sync     {warm:6.1f} s  {total / warm:6.0f} messages/s  "
              f"(the import takes {first / warm:.2f}x)")
        print(f"  plain doveadm sync, cold source {cold:5.1f} s (the warm-up)")
        print(f"  import again (resume, nothing to copy) {again:5.1f} s")
    finally:
        lab.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
