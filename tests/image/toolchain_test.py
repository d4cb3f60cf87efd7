#!/usr/bin/python3
"""Prove the host can build and boot-test an image of ARCH without building one (seconds).

CI builds only amd64, so a missing arm64 tool (arch-test for mmdebstrap's foreign
architecture support, iPXE's efi-virtio.rom for qemu's virtio-net-pci) would only show on
a user's first `make image`. This runs the checks that fail there: `arch-test ARCH`, and
the boot test's exact qemu machine and device list started for a few seconds (no kernel:
it only has to come up and keep running; a missing ROM makes qemu exit at once).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from boot_test import QEMU, qemu_machine  # noqa: E402

RUN_SECONDS = 3


def check_arch_test(arch: str) -> str | None:
    if not shutil.which("arch-test"):
        return "arch-test is not installed (image/host-deps.sh installs it)"
    r = subprocess.run(["arch-test", arch], capture_output=True, text=True, timeout=60,
                       check=False)
    if r.returncode != 0 or "ok" not in r.stdout:
        return f"arch-test {arch}: {(r.stdout + r.stderr).strip()}"
    return None


def check_qemu(arch: str) -> str | None:
    if not shutil.which(QEMU[arch][0]):
        return f"{QEMU[arch][0]} is not installed (image/host-deps.sh installs it)"
    with tempfile.TemporaryDirectory() as tmp:
        disk = Path(tmp) / "disk.raw"
        with disk.open("wb") as f:
            f.truncate(1 << 20)
        cmd = qemu_machine(arch, disk)
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        try:
            out, _ = proc.communicate(timeout=RUN_SECONDS)
            return f"{' '.join(cmd)} exited {proc.returncode}: {out.strip()[-400:]}"
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate(timeout=30)
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("arch", choices=sorted(QEMU))
    args = ap.parse_args()
    t0 = time.monotonic()
    checks = [("qemu starts with the boot test's devices", check_qemu)]
    if args.arch == "arm64":
        checks.insert(0, ("arch-test arm64 (mmdebstrap foreign architecture)", check_arch_test))
    failed = 0
    for name, fn in checks:
        problem = fn(args.arch)
        print(f"{'FAIL' if problem else 'ok  '} {name}" + (f": {problem}" if problem else ""))
        failed += problem is not None
    print(f"toolchain {args.arch}: {len(checks) - failed} ok, {failed} failed "
          f"({time.monotonic() - t0:.1f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
