#!/usr/bin/python3
"""The tinkerer's path: the same playbook, over SSH, against a fresh Debian 12 host.

The "host" is a fresh mmdebstrap'd amd64 Debian 12 (minbase + openssh-server)
whose sshd runs chrooted in a network namespace made by this test, reached
over a veth pair. It has no route out: apt installs from the image build's
package cache (/var/cache/mail-appliance-image/debs-amd64, run `make image
ARCH=amd64` first) with the package lists from the rootfs's own creation.
The play installs everything and puts a settings file in place; then
`appliance apply` runs on the host over SSH and must render and validate the
mail configuration. A second play run checks idempotence.

Everything is bounded; sshd is killed by its PID; the namespace is removed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROVISIONING = REPO / "provisioning"
CACHE = Path(os.environ.get("CACHE_DIR", "/var/cache/mail-appliance-image"))
NS = f"appl-ssh-{os.getpid()}"
HOST_IP, GUEST_IP = "10.231.77.1", "10.231.77.2"


def sh(cmd: list[str], timeout: float = 600, check: bool = True, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, **kw)
    if check and r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    return r


def fresh_debian(work: Path) -> Path:
    """A fresh Debian 12 amd64 rootfs with sshd, as a tarball cached by date."""
    tarball = CACHE / f"fresh-debian-amd64-{time.strftime('%Y%m%d')}.tar"
    if not tarball.exists():
        for old in CACHE.glob("fresh-debian-amd64-*.tar"):
            old.unlink()
        debs = CACHE / "debs-amd64"
        debs.mkdir(parents=True, exist_ok=True)
        sh(["mmdebstrap", "--mode=root", "--variant=minbase", "--architectures=amd64",
            "--include=openssh-server,python3,iproute2,systemd-sysv",
            "--skip=cleanup/apt/lists", "--skip=essential/unlink",
            '--setup-hook=mkdir -p "$1"/var/cache/apt/archives',
            f"--setup-hook=sync-in {debs} /var/cache/apt/archives",
            f"--customize-hook=sync-out /var/cache/apt/archives {debs}",
            "bookworm", str(tarball), "http://deb.debian.org/debian",
            "deb http://deb.debian.org/debian-security bookworm-security main"],
           stdin=subprocess.DEVNULL, timeout=900)
    root = work / "rootfs"
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    sh(["tar", "--numeric-owner", "-C", str(root), "-xf", str(tarball)])
    return root


def prepare_host(root: Path, pubkey: str) -> None:
    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(pubkey)
    os.chmod(ssh_dir / "authorized_keys", 0o600)
    # No systemd runs in this host: keep package scripts from starting daemons
    # (a booted host would start them under systemd).
    rc = root / "usr/sbin/policy-rc.d"
    rc.write_text("#!/bin/sh\nexit 101\n")
    rc.chmod(0o755)
    (root / "etc/resolv.conf").write_text("")  # no DNS: the namespace has no way out
    # apt finds every package in the image build's cache, with the lists
    # the rootfs was made with: no network needed.
    archives = root / "var/cache/apt/archives"
    for deb in (CACHE / "debs-amd64").glob("*.deb"):
        target = archives / deb.name
        if not target.exists():
            shutil.copy2(deb, target)
    sh(["chroot", str(root), "ssh-keygen", "-A"])
    (root / "run/sshd").mkdir(parents=True, exist_ok=True)


def start_netns() -> None:
    sh(["ip", "netns", "add", NS])
    sh(["ip", "link", "add", f"{NS[:10]}h", "type", "veth", "peer", "name", "eth0",
        "netns", NS])
    sh(["ip", "addr", "add", f"{HOST_IP}/30", "dev", f"{NS[:10]}h"])
    sh(["ip", "link", "set", f"{NS[:10]}h", "up"])
    for cmd in (["ip", "addr", "add", f"{GUEST_IP}/30", "dev", "eth0"],
                ["ip", "link", "set", "eth0", "up"], ["ip", "link", "set", "lo", "up"],
                # A default route makes eth0 the LAN the agent detects (its firewall keeps
                # SSH LAN-only); the build host answers nothing beyond the veth.
                ["ip", "route", "add", "default", "via", HOST_IP]):
        sh(["ip", "netns", "exec", NS, *cmd])


def stop_netns() -> None:
    sh(["ip", "link", "del", f"{NS[:10]}h"], check=False)
    sh(["ip", "netns", "del", NS], check=False)


def start_sshd(root: Path) -> subprocess.Popen:
    # A private mount namespace: /proc, /dev, /sys of the "host" vanish with it.
    script = (f"mount -t proc proc {root}/proc && mount --rbind /dev {root}/dev && "
              f"mount -t sysfs sys {root}/sys && mount -t tmpfs tmpfs {root}/run && "
              f"mkdir -p {root}/run/sshd && exec chroot {root} /usr/sbin/sshd -D -e")
    return subprocess.Popen(["ip", "netns", "exec", NS, "unshare", "--mount",
                             "--propagation", "private", "sh", "-c", script],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def wait_ssh(limit: float = 30) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if sh(["ssh-keyscan", "-T", "2", GUEST_IP], check=False, timeout=10).stdout:
            return
        time.sleep(1)


def kill_host_processes(root: Path) -> None:
    """End every process running inside the host's root (sshd, its sessions, and the
    daemons the agent started directly), by PID, bounded."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = []
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    if os.readlink(proc / "root").startswith(str(root)):
                        pids.append(int(proc.name))
                except OSError:
                    pass
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        if not pids:
            return
        time.sleep(2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timeout", type=float, default=1200)
    args = ap.parse_args()
    if not any((CACHE / "debs-amd64").glob("postfix_*.deb")):
        print(f"ssh-provision-test: no package cache in {CACHE}/debs-amd64: run make image ARCH=amd64")
        return 1
    t0 = time.monotonic()
    work = REPO / "build" / "ssh-host"
    work.mkdir(parents=True, exist_ok=True)
    key = work / "id_test"
    for p in (key, key.with_suffix(".pub")):
        p.unlink(missing_ok=True)
    sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)])
    root = fresh_debian(work)
    print(f"fresh Debian 12 host ready in {time.monotonic() - t0:.0f} s", flush=True)
    prepare_host(root, key.with_suffix(".pub").read_text())
    pw_hash = sh(["openssl", "passwd", "-6", "-stdin"], input="ssh-test-password\n").stdout.strip()
    settings = work / "settings.toml"
    settings.write_text(f'domain = "example.org"\n[[users]]\naddress = "alice@example.org"\n'
                        f'password_hash = "{pw_hash}"\n')
    passed, failed = [], []

    def check(name: str, ok: bool, detail: str = "") -> None:
        (passed if ok else failed).append(name)
        print(f"{'PASS' if ok else 'FAIL'} {name}" + (f": {detail}" if detail else ""), flush=True)

    env = {**os.environ, "ANSIBLE_CONFIG": str(PROVISIONING / "ansible.cfg"),
           "ANSIBLE_HOST_KEY_CHECKING": "False", "ANSIBLE_NOCOLOR": "1"}
    play = ["ansible-playbook", "-i", f"{GUEST_IP},", "-u", "root", "--private-key", str(key),
            "-e", f"appliance_agent_settings_src={settings}",
            "-e", "appliance_base_apt_cache_valid_time=315360000",
            "-e", "appliance_agent_apt_cache_valid_time=315360000",
            str(PROVISIONING / "site.yml")]
    sshd = None
    start_netns()
    try:
        sshd = start_sshd(root)
        wait_ssh()
        t1 = time.monotonic()
        r = sh(play, env=env, check=False, timeout=max(60, args.timeout - (t1 - t0)))
        recap = re.findall(r"ok=\d+\s+changed=\d+\s+unreachable=\d+\s+failed=\d+.*", r.stdout)
        fatal = [ln for ln in r.stdout.splitlines() if ln.startswith(("fatal:", "failed:"))]
        check("playbook over SSH converges", r.returncode == 0,
              f"{time.monotonic() - t1:.0f} s; " + (recap[-1] if recap else r.stdout[-3000:])
              + "".join("\n  " + ln[:1500] for ln in fatal))
        ssh = ["ssh", "-i", str(key), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
               "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", f"root@{GUEST_IP}"]
        # One session: without systemd the agent restarts sshd itself (its "direct" manager).
        r = sh(ssh + ["appliance apply; echo apply-exit=$?; postconf -n myhostname; "
                      "doveconf -n >/dev/null && echo dovecot-ok; "
                      "sshd -T | grep -E '^(passwordauthentication|permitrootlogin)'"],
               check=False, timeout=400)
        print(r.stdout + r.stderr, flush=True)
        check("appliance apply on the provisioned host", "apply-exit=0" in r.stdout)
        check("postfix configured for the settings", "myhostname = mail.example.org" in r.stdout)
        check("dovecot configuration valid", "dovecot-ok" in r.stdout)
        check("sshd: keys only", "passwordauthentication no" in r.stdout and
              "permitrootlogin without-password" in r.stdout)
        kill_host_processes(root)
        sshd = start_sshd(root)
        wait_ssh()
        t2 = time.monotonic()
        r = sh(play, env=env, check=False, timeout=600)
        recap = re.findall(r"changed=(\d+)", r.stdout)
        # Which tasks changed: each "changed:" line names the TASK header above it.
        changed, task = [], ""
        for line in r.stdout.splitlines():
            if line.startswith("TASK ["):
                task = line.split("[", 1)[1].rsplit("]", 1)[0]
            elif line.startswith("changed:") and task not in changed:
                changed.append(task)
        check("second run changes nothing", r.returncode == 0 and recap[-1:] == ["0"],
              f"{time.monotonic() - t2:.0f} s, changed={recap[-1:] or '?'} {changed}"
              + ("" if r.returncode == 0 else "\n" + (r.stdout + r.stderr)[-1500:]))
    finally:
        if sshd is not None and sshd.poll() is None:
            os.killpg(sshd.pid, signal.SIGTERM)
            try:
                sshd.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(sshd.pid, signal.SIGKILL)
                sshd.wait(timeout=10)
        kill_host_processes(root)
        stop_netns()
    print(f"ssh-provision-test wall time {time.monotonic() - t0:.0f} s")
    print(f"{len(passed)} passed, {len(failed)} failed")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
