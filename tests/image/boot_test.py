#!/usr/bin/python3
"""Boot test of a built image (make image-test).

Boots build/mail-appliance-*-$ARCH.img.xz under qemu (software emulation) the
way a user starts a new card: appliance.toml and authorized_keys written onto
the FAT boot partition (mtools, nothing mounted), then checks what the user
would see. Kernel and initrd come from the image; networking is qemu
user-mode with forwards on 127.0.0.1, inside a network namespace of the test's
own (only loopback: the guest reaches nothing else) and a mount namespace whose
/etc/resolv.conf names the test's recording DNS server (recording_dns.py), so
the guest resolves through the server its DHCP lease names, and every name it
looks up is checked against docs/outside-parties.md. The host's own /etc is
not written. Everything is bounded by --timeout; qemu is killed by its PID.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import recording_dns  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
BOOT_OFFSET = 4 << 20           # image/build.py: GAP_MIB
GROW_MIB = 512                  # the test card is this much larger than the image
MARKERS = {                     # first serial line matching each, in boot order
    "u-boot": r"^U-Boot 20",
    "slot_a": r"appliance boot: slot a",
    "kernel": r"Booting Linux on|Linux version",
    "initrd_done": r"Switching root|switch_root",
    "systemd": r"systemd\[1\]: Detected architecture|Welcome to Debian",
    "firstboot_start": r"appliance-firstboot: starting",
    "firstboot_done": r"APPLIANCE-FIRSTBOOT-DONE",
    "login_prompt": r"login:",
}
# U-Boot is the machine's firmware, as the Pi's firmware starts U-Boot from the card: it runs
# the card's boot.scr, which picks the root slot (provisioning/roles/appliance_boot). The x86
# machine is "pc": U-Boot's qemu-x86 build describes that board (on q35 Linux saw no disk).
UBOOT = {"arm64": "/usr/lib/u-boot/qemu_arm64/u-boot.bin",
         "amd64": "/usr/lib/u-boot/qemu-x86/u-boot.rom"}
QEMU = {
    "arm64": ["qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a53"],
    # No VGA card: U-Boot's video set-up hung a boot here, before it read the disk.
    "amd64": ["qemu-system-x86_64", "-M", "pc", "-cpu", "max", "-vga", "none"],
}


class Results:
    def __init__(self) -> None:
        self.passed: list[str] = []
        self.failed: list[str] = []

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        (self.passed if ok else self.failed).append(name)
        print(f"{'PASS' if ok else 'FAIL'} {name}" + (f": {detail}" if detail else ""), flush=True)
        return ok


def run(cmd: list[str], timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, **kw)


def must(cmd: list[str], timeout: float = 300, **kw) -> str:
    r = run(cmd, timeout, **kw)
    if r.returncode != 0:
        sys.exit(f"image-test: {' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fat(disk: Path) -> str:
    return f"{disk}@@{BOOT_OFFSET}"


def mtools_env() -> dict[str, str]:
    return {**os.environ, "MTOOLS_SKIP_CHECK": "1"}


def prepare_card(work: Path, xz: Path) -> tuple[Path, Path]:
    """Decompress the image, grow the 'card', put settings and a key on FAT."""
    disk = work / "card.img"
    t0 = time.monotonic()
    with disk.open("wb") as f:
        subprocess.run(["xz", "-dc", "-T0", str(xz)], stdout=f, check=True, timeout=600)
    with disk.open("r+b") as f:
        f.truncate(disk.stat().st_size + (GROW_MIB << 20))
    print(f"decompressed {xz.name} in {time.monotonic() - t0:.1f} s", flush=True)
    key = work / "id_test"
    for p in (key, key.with_suffix(".pub")):
        p.unlink(missing_ok=True)
    must(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "image-test", "-f", str(key)])
    pw_hash = must(["openssl", "passwd", "-6", "-stdin"], input="image-test-password\n").strip()
    settings = work / "appliance.toml"
    settings.write_text(
        '# written by tests/image/boot_test.py\n'
        'domain = "example.org"\n'
        'hostname = "mail.example.org"\n'
        '[[users]]\n'
        'address = "alice@example.org"\n'
        f'password_hash = "{pw_hash}"\n'
        'aliases = ["info@example.org"]\n')
    env = mtools_env()
    example = must(["mtype", "-i", fat(disk), "::/appliance.toml"], env=env)
    if "#domain" not in example:
        sys.exit("image-test: the image has no commented appliance.toml example on FAT")
    must(["mcopy", "-o", "-i", fat(disk), str(settings), "::/appliance.toml"], env=env)
    must(["mcopy", "-o", "-i", fat(disk), str(key.with_suffix(".pub")), "::/authorized_keys"],
         env=env)
    return disk, key


class Serial:
    """Timestamp qemu's serial output into a log file; remember markers."""

    def __init__(self, proc: subprocess.Popen, log: Path, t0: float) -> None:
        self.proc, self.log, self.t0 = proc, log, t0
        self.seen: dict[str, float] = {}
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        ansi = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
        with self.log.open("w") as f:
            for raw in iter(self.proc.stdout.readline, b""):
                line = ansi.sub("", raw.decode("utf-8", "replace")).rstrip("\r\n")
                t = time.monotonic() - self.t0
                f.write(f"[{t:8.2f}] {line}\n")
                f.flush()
                self.lines.append(line)
                for key, pattern in MARKERS.items():
                    if key not in self.seen and re.search(pattern, line):
                        self.seen[key] = round(t, 1)

    def wait_for(self, key: str, deadline: float) -> bool:
        while time.monotonic() < deadline and self.proc.poll() is None:
            if key in self.seen:
                return True
            time.sleep(0.5)
        return key in self.seen


def qemu_machine(arch: str, disk: Path, netdev_extra: str = "", restrict: bool = True,
                 reboot: bool = False) -> list[str]:
    """qemu with the boot test's machine and device list (also the toolchain check's).
    restrict=False only inside the boot test's own network namespace (its DNS is forwarded).
    reboot=False: a restart ends qemu (a boot that loops is seen, not waited out)."""
    net = f"user,id=net0,restrict={'on' if restrict else 'off'}"
    net += "," + netdev_extra if netdev_extra else ""
    return QEMU[arch] + ["-bios", UBOOT[arch]] + ([] if reboot else ["-no-reboot"]) + [
        "-smp", "2", "-m", "1024", "-nographic", "-monitor", "none",
        "-drive", f"file={disk},format=raw,if=virtio",
        "-netdev", net, "-device", "virtio-net-pci,netdev=net0",
    ]


def ssh_cmd(key: Path, port: int, *extra: str) -> list[str]:
    return ["ssh", "-p", str(port), "-i", str(key), "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR", *extra, "root@127.0.0.1"]


def smtp_banner(port: int, ehlo: bool) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        f = s.makefile("rwb")
        text = f.readline().decode(errors="replace")
        if ehlo:
            f.write(b"EHLO image-test.example\r\n")
            f.flush()
            while True:
                line = f.readline().decode(errors="replace")
                text += line
                if not line.startswith("250-"):
                    break
        f.write(b"QUIT\r\n")
        f.flush()
        return text


def imaps_banner(port: int) -> str:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the appliance's self-signed certificate
    with socket.create_connection(("127.0.0.1", port), timeout=20) as raw:
        with ctx.wrap_socket(raw, server_hostname="mail.example.org") as s:
            return s.recv(512).decode(errors="replace") + f" [{s.version()}]"


def wait_port(port: int, deadline: float) -> bool:
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.settimeout(10)
                if s.recv(64):
                    return True
        except OSError:
            pass
        time.sleep(2)
    return False


NS_ENV = "BOOT_TEST_PRIVATE_NS"


def in_private_namespaces(work: Path, script: Path | None = None) -> int | None:
    """Run this test (or `script`, another test using these helpers) again inside a new
    network + mount namespace (None: already there)."""
    if os.environ.get(NS_ENV):
        return None
    work.mkdir(parents=True, exist_ok=True)
    conf = work / "resolv.conf"
    conf.write_text("nameserver 127.0.0.1\n")  # recording_dns listens there, in the namespace
    inner = (f"ip link set lo up && mount --bind {conf} /etc/resolv.conf && "
             f"exec {sys.executable} {(script or Path(__file__)).resolve()} \"$@\"")
    r = subprocess.run(["unshare", "--net", "--mount", "--propagation", "private", "--",
                        "sh", "-c", inner, "boot_test", *sys.argv[1:]],
                       env={**os.environ, NS_ENV: "1"}, check=False)
    return r.returncode


SENDER_DOMAIN = "sender.example"
FINGERPRINT = re.compile(r"(SHA256:\S+) .*\((\w+)\)$", re.M)  # ssh-keygen -l output


def check_host_keys(res: Results, port: int, firstboot_log: str) -> None:
    """sshd serves exactly the host keys this card made at its first boot, the ones its
    log shows (so a user can compare the fingerprint), of the types the image's sshd
    drop-in names: Ed25519 and ECDSA, no RSA."""
    # One type at a time, each asked up to three times: under emulation a key exchange can
    # outlast keyscan's timeout while the box is still busy (an arm64 run lost Ed25519 so).
    # A type sshd does not serve stays missing however often it is asked.
    scan = ""
    for kind in ("ed25519", "ecdsa", "rsa"):
        for _ in range(1 if kind == "rsa" else 3):
            got = run(["ssh-keyscan", "-p", str(port), "-T", "30", "-t", kind, "127.0.0.1"],
                      timeout=120).stdout
            if got.strip():
                break
        scan += got
    listed = run(["ssh-keygen", "-l", "-f", "-"], input=scan, timeout=30).stdout if scan else ""
    served = sorted(FINGERPRINT.findall(listed))
    logged = sorted(FINGERPRINT.findall(firstboot_log))
    res.check("sshd serves the host keys the first boot made (Ed25519, ECDSA; no RSA)",
              bool(served) and served == logged
              and {kind for _, kind in served} == {"ED25519", "ECDSA"},
              f"served {served}, logged {logged}")


def deliver(port: int, tag: str, timeout: float) -> list[bytes]:
    """One message from a correspondent's server to alice on port 25: the replies it got."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            f = s.makefile("rwb")
            lines = [f.readline()]
            if not lines[0].startswith(b"220"):
                return lines
            for cmd in (f"EHLO mx.{SENDER_DOMAIN}", f"MAIL FROM:<bob@{SENDER_DOMAIN}>",
                        "RCPT TO:<alice@example.org>", "DATA"):
                f.write(cmd.encode() + b"\r\n")
                f.flush()
                while True:
                    line = f.readline()
                    lines.append(line)
                    if line[3:4] != b"-":
                        break
                if line[:1] not in (b"2", b"3"):
                    return lines
            f.write((f"From: Bob <bob@{SENDER_DOMAIN}>\r\nTo: alice@example.org\r\n"
                     f"Subject: {tag}\r\nMessage-ID: <{tag}@{SENDER_DOMAIN}>\r\n"
                     f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime())}\r\n"
                     "\r\nhello\r\n.\r\nQUIT\r\n").encode())
            f.flush()
            return lines + [f.readline(), f.readline()]
    except OSError as e:
        return [str(e).encode()]


def queued(lines: list[bytes]) -> bool:
    return any(ln.startswith(b"250 ") and b"queued" in ln.lower() for ln in lines)


class MailReady:
    """From qemu's start, a delivery to alice on port 25 every 2 s until one is queued: the
    moment a correspondent's server finds the box ready (Postfix up with the card's settings,
    its filter answering), which is what a person waits for."""

    def __init__(self, port: int, t0: float, deadline: float) -> None:
        self.port, self.t0, self.deadline = port, t0, deadline
        self.at: float | None = None
        self.replies: list[tuple[float, str]] = []  # (s since qemu start, what came back)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        for n in range(1000):
            if self.done.is_set() or time.monotonic() > self.deadline:
                return
            started = time.monotonic()
            lines = deliver(self.port, f"ready-{os.getpid()}-{n}", timeout=10)
            now = time.monotonic() - self.t0
            if queued(lines):
                self.at = now
                self.replies.append((now, "250 queued"))
                return
            last = next((ln for ln in reversed(lines) if ln.strip()), b"no answer")
            self.replies.append((now, last.decode(errors="replace").strip()[:60] or "no answer"))
            self.done.wait(max(0.0, 2.0 - (time.monotonic() - started)))

    def summary(self) -> str:
        """Runs of the same reply, e.g. `no answer x30 (to 61 s); 451 4.7.1 ... x2; 250 queued`."""
        runs: list[list] = []
        for t, what in self.replies:
            if runs and runs[-1][0] == what:
                runs[-1][1] += 1
                runs[-1][2] = t
            else:
                runs.append([what, 1, t])
        return "; ".join(f"{w} x{n} (to {t:.0f} s)" for w, n, t in runs)


def check_dns(res: Results, key: Path, ports: dict[int, int], dns_server: recording_dns.RecordingDns,
              applied_at: float) -> None:
    """The guest's resolver is systemd-resolved's stub, fed by DHCP; what it looked up during
    the first boot and one delivery is all on docs/outside-parties.md."""
    r = run(ssh_cmd(key, ports[22]) + [
        "readlink /etc/resolv.conf; echo ---; "
        f"getent ahostsv4 {recording_dns.PROBE} | head -1; echo ---; "
        "resolvectl dns 2>&1 | tr -s ' '"], timeout=60)
    parts = r.stdout.split("---\n")
    link, probe, servers = (parts + ["", "", ""])[:3]
    res.check("resolv.conf is systemd-resolved's stub link",
              link.strip() in ("../run/systemd/resolve/stub-resolv.conf",
                               "/run/systemd/resolve/stub-resolv.conf"), link.strip())
    res.check("the guest resolves through the DNS server of its DHCP lease",
              probe.startswith(recording_dns.PROBE_ADDR) and "10.0.2.3" in servers,
              f"{probe.strip()} | {servers.strip()}")
    # One delivery from a correspondent: what the box looks up for mail it receives.
    tag = f"dns-{os.getpid()}"
    lines = deliver(ports[25], tag, timeout=30)
    accepted = queued(lines)
    stored = False
    for _ in range(30):
        r = run(ssh_cmd(key, ports[22]) + [f"grep -rl '{tag}' /var/vmail 2>/dev/null | head -1"],
                timeout=30)
        if r.stdout.strip():
            stored = True
            break
        time.sleep(2)
    res.check("a message from the internet is delivered", accepted and stored,
              b" | ".join(x.strip() for x in lines).decode(errors="replace")[-300:])
    patterns = recording_dns.documented_patterns(REPO / "docs/outside-parties.md",
                                                 "example.org", "mail.example.org")
    also = (recording_dns.PROBE, SENDER_DOMAIN)
    after = [n for (n, _), t in zip(dns_server.names, dns_server.times, strict=True) if t >= applied_at]
    before = [n for (n, _), t in zip(dns_server.names, dns_server.times, strict=True) if t < applied_at]
    # Before the first apply too: no daemon runs with a package's default configuration.
    extra = recording_dns.undocumented(before + after, patterns, also)
    res.check("every name the box looked up is on docs/outside-parties.md", not extra,
              f"{len(set(before))} names before the first apply, {len(set(after))} after; "
              f"not documented: {extra[:20]}")


def check_console(res: Results, key: Path, ports: dict[int, int]) -> str:
    """The LAN console answers on 8443 with the setup-code page (settings came from the card,
    nobody set an administrator yet), and the box answers mDNS on its wired link. Returns the
    SHA-256 fingerprint of the certificate the console served, as appliance-setup.txt writes it."""
    import hashlib
    import http.client
    import ssl

    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # self-signed; the note names it
    status, where, fp = 0, "", ""
    for _ in range(30):
        try:
            c = http.client.HTTPSConnection("127.0.0.1", ports[8443], context=ctx, timeout=20)
            c.request("GET", "/")
            r = c.getresponse()
            status, where = r.status, r.getheader("Location") or ""
            der = c.sock.getpeercert(binary_form=True) if c.sock else None
            digest = hashlib.sha256(der or b"").hexdigest().upper()
            fp = ":".join(digest[i:i + 2] for i in range(0, 64, 2))
            c.close()
            break
        except (OSError, http.client.HTTPException):
            time.sleep(2)
    res.check("the console answers on 8443 with the setup-code page",
              status == 302 and where.endswith("/setup"), f"HTTP {status} -> {where}")
    r = run(ssh_cmd(key, ports[22]) + ["resolvectl mdns; ss -Hlun sport = :5353"], timeout=60)
    res.check("mDNS answered on the wired link (systemd-resolved)",
              "yes" in r.stdout and ":5353" in r.stdout, r.stdout.strip()[-300:])
    return fp


def boot_status(key: Path, ports: dict[int, int]) -> dict:
    r = run(ssh_cmd(key, ports[22]) + ["appliance boot status --json"], timeout=60)
    try:
        return json.loads(r.stdout)
    except ValueError:
        return {"error": (r.stdout + r.stderr).strip()[-300:]}


def failing_initramfs_tail() -> bytes:
    """A cpio archive whose /init only exits, in the kernel's newc format. Appended to a good
    initramfs it replaces that one's /init (the kernel unpacks concatenated archives in
    order): the kernel starts, init dies, the kernel panics and, with panic=10, restarts. The
    stand-in for an update whose kernel or initramfs does not boot."""
    def entry(name: str, data: bytes, mode: int, ino: int) -> bytes:
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0)
        head = b"070701" + b"".join(b"%08X" % f for f in fields) + name.encode() + b"\0"
        head += b"\0" * (-len(head) % 4)
        return head + data + b"\0" * (-len(data) % 4)
    init = b"#!/bin/sh\necho 'boot test: this initramfs does not boot'\nexit 1\n"
    return entry("init", init, 0o100755, 1) + entry("TRAILER!!!", b"", 0, 0)


def start_broken_trial(res: Results, key: Path, ports: dict[int, int]) -> None:
    """Slot b gets slot a's kernel with an initramfs that does not boot, and the box asks
    for b at the next boot (`appliance boot try b`, what an update does after preparing the
    slot), then restarts."""
    # The kernel reads an archive after a compressed one only from a 4-byte boundary: pad.
    script = ("set -e; fw=/boot/firmware; mkdir -p $fw/slot-b; cp $fw/slot-a/vmlinuz $fw/slot-b/; "
              "size=$(stat -c %s $fw/slot-a/initrd.img); { cat $fw/slot-a/initrd.img; "
              "head -c $(( (4 - size % 4) % 4 )) /dev/zero; cat; } > $fw/slot-b/initrd.img; "
              "appliance boot try b; appliance boot status; systemctl reboot")
    r = subprocess.run(ssh_cmd(key, ports[22]) + [script], input=failing_initramfs_tail(),
                       capture_output=True, timeout=120, check=False)
    out = (r.stdout + r.stderr).decode(errors="replace")
    print("guest, asked to try slot b:\n" + out, flush=True)
    res.check("`appliance boot try b` sets slot b for the next boot, once",
              "the next boot starts slot b, once" in out and "next boot: slot b" in out, out[-300:])


def check_rollback(res: Results, arch: str, work: Path, disk: Path, key: Path,
                   ports: dict[int, int], fwd: str, deadline: float) -> None:
    """The restart after `try b`: U-Boot starts slot b, whose initramfs fails, the kernel
    panics and restarts, U-Boot finds b has no try left and starts a, and Linux on a records
    the rollback. One qemu run that follows the restarts (reboot=True), as a Pi would."""
    cmd = qemu_machine(arch, disk, fwd, restrict=False, reboot=True)
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    serial = Serial(proc, work / "serial-rollback.log", t0)

    def seen(pattern: str) -> int | None:
        return next((i for i, ln in enumerate(serial.lines) if re.search(pattern, ln)), None)

    try:
        ssh_up = wait_port(ports[22], min(deadline, time.monotonic() + 600))
        order = [seen(p) for p in (r"appliance boot: slot b", r"this initramfs does not boot",
                                   r"Kernel panic", r"appliance boot: slot a")]
        res.check("U-Boot tried slot b, its initramfs failed, the kernel panicked, and slot a "
                  "started after it",
                  None not in order and order == sorted(order),  # type: ignore[type-var]
                  f"serial lines {order}; log {work / 'serial-rollback.log'}")
        res.check("ssh answers after the rollback", ssh_up)
        boot = boot_status(key, ports)
        state, last = boot.get("state") or {}, boot.get("last_rollback") or {}
        res.check("Linux on slot a recorded the rollback and made a the slot every boot starts",
                  boot.get("booted") == "a" and state.get("trial") is None
                  and state.get("order", [""])[0] == "a" and state.get("tries_left", {}).get("b") == 0
                  and last.get("failed") == "b", str(boot))
        r = run(ssh_cmd(key, ports[22]) + ["appliance status"], timeout=180)
        line = next((ln for ln in r.stdout.splitlines() if "boot slots" in ln), "")
        res.check("`appliance status` tells of the rollback", "rolled back" in line, line or r.stdout[-300:])
        # The postmaster (alice: the settings name no other) is told by mail, queued at boot
        # before Postfix runs and delivered once it does.
        found = ""
        for _ in range(30):
            r = run(ssh_cmd(key, ports[22]) + [
                "grep -rl 'went back to its previous system' /var/vmail/example.org/alice/Maildir/new "
                "/var/vmail/example.org/alice/Maildir/cur 2>/dev/null | head -1"], timeout=60)
            found = r.stdout.strip()
            if found or time.monotonic() > deadline:
                break
            time.sleep(5)
        res.check("the postmaster got a mail about the rollback", bool(found),
                  found or "none in alice's mailbox")
        run(ssh_cmd(key, ports[22]) + ["systemctl poweroff"], timeout=30)
        try:
            proc.wait(timeout=max(5, min(180, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            pass
        res.check("powered off cleanly", proc.poll() == 0, f"qemu exit {proc.poll()}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        serial.thread.join(timeout=10)


def main() -> int:
    again = in_private_namespaces(REPO / "build" / "test-ns")
    if again is not None:
        return again
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default=os.environ.get("ARCH", "arm64"), choices=sorted(QEMU))
    ap.add_argument("--image", type=Path, help="the .img.xz (default: newest in build/)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds for the whole test")
    args = ap.parse_args()
    t_start = time.monotonic()
    deadline = t_start + args.timeout
    build = REPO / "build"
    xz = args.image or max(build.glob(f"mail-appliance-*-{args.arch}.img.xz"),
                           key=lambda p: p.stat().st_mtime, default=None)
    if xz is None or not xz.exists():
        print(f"image-test: no image for {args.arch} in {build}: run make image ARCH={args.arch}")
        return 1
    for tool in (QEMU[args.arch][0], "mcopy", "ssh", UBOOT[args.arch]):
        if not shutil.which(tool) and not Path(tool).exists():
            print(f"image-test: {tool} missing: run make image-deps ARCH={args.arch}")
            return 1
    work = build / f"test-{args.arch}"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    print(f"image-test: {xz.name}, work dir {work}", flush=True)
    disk, key = prepare_card(work, xz)
    ports = {guest: free_port() for guest in (22, 25, 587, 993, 8443)}
    fwd = ",".join(f"hostfwd=tcp:127.0.0.1:{h}-:{g}" for g, h in ports.items())
    dns_server = recording_dns.RecordingDns().start()
    cmd = qemu_machine(args.arch, disk, fwd, restrict=False)
    print("+ " + " ".join(cmd), flush=True)
    res = Results()
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    serial = Serial(proc, work / "serial.log", t0)
    ready = MailReady(ports[25], t0, deadline)
    remote: dict[str, str] = {}
    try:
        res.check("first boot finished", serial.wait_for("firstboot_done", deadline),
                  f"serial log {work / 'serial.log'}")
        done = [ln for ln in serial.lines if "APPLIANCE-FIRSTBOOT-DONE" in ln]
        res.check("first boot reports ok", bool(done) and "status=ok" in done[0],
                  done[0] if done else "no marker")
        ready.thread.join(timeout=max(1, min(120, deadline - time.monotonic())))
        res.check("mail from the internet is accepted once the first boot is done",
                  ready.at is not None, ready.summary()[-300:])
        res.check("ssh answers", wait_port(ports[22], min(deadline, time.monotonic() + 120)))
        r = run(ssh_cmd(key, ports[22]) + ["systemctl is-system-running --wait; "
                "systemctl --failed --no-legend --plain; echo ---; hostname -f; echo ---; "
                "cat /boot/firmware/appliance-firstboot.log; echo ---; systemd-analyze; "
                "echo ---; df -m / | tail -1"], timeout=max(10, min(240, deadline - time.monotonic())))
        parts = r.stdout.split("---\n")
        res.check("ssh login with the key from authorized_keys", r.returncode in (0, 1) and
                  len(parts) == 5, r.stderr.strip()[-300:])
        if len(parts) == 5:
            remote = dict(zip(("state", "hostname", "log", "analyze", "df"), parts, strict=True))
            print("guest says:\n" + r.stdout, flush=True)
            state = remote["state"].strip()
            res.check("no failed units", state.splitlines()[0] == "running", state)
            res.check("hostname from the settings", remote["hostname"].strip() == "mail.example.org",
                      remote["hostname"].strip())
            size_mib = int(remote["df"].split()[1])
            res.check("root filesystem grew to the card", size_mib > GROW_MIB, f"{size_mib} MiB")
            check_host_keys(res, ports[22], remote["log"])
        r = run(ssh_cmd(key, ports[22]) + [
            "journalctl -b --no-pager -o short-monotonic | grep -E "
            "'Failed to start|Scheduled restart job|Main process exited'; echo ---; "
            "systemd-analyze blame --no-pager | head -15; echo; "
            "systemd-analyze critical-chain --no-pager appliance-firstboot.service"],
                timeout=120)
        troubles, _, analysis = r.stdout.partition("---\n")
        res.check("no unit failed to start or was restarted during the first boot",
                  r.returncode != 255 and not troubles.strip(), troubles.strip()[-600:])
        remote["blame"] = analysis
        r = run(ssh_cmd(key, ports[22]) + [
            "systemctl --failed --no-pager; journalctl -b --no-pager -p warning | tail -60; "
            "for f in /var/log/appliance-pgp.log /var/log/mail.log /var/log/dovecot.log; do "
            "echo \"== $f\"; tail -30 $f; done"], timeout=60)
        (work / "guest-diagnostics.txt").write_text(r.stdout + r.stderr)
        r = run(ssh_cmd(key, ports[22], "-o", "PubkeyAuthentication=no",
                        "-o", "PreferredAuthentications=password,keyboard-interactive",
                        "-o", "NumberOfPasswordPrompts=0") + ["true"], timeout=60)
        res.check("ssh refuses passwords", r.returncode == 255 and
                  "Permission denied (publickey)" in r.stderr, r.stderr.strip())
        for name, port, fn in (("postfix answers on 25", ports[25], lambda p: smtp_banner(p, False)),
                               ("postfix answers on 587 with STARTTLS", ports[587],
                                lambda p: smtp_banner(p, True)),
                               ("dovecot answers on 993 (TLS)", ports[993], imaps_banner)):
            try:
                text = fn(port)
                ok = text.startswith("220 ") if port != ports[993] else text.startswith("* OK")
                if port == ports[587]:
                    ok = ok and "STARTTLS" in text
                res.check(name, ok, text.strip().replace("\r\n", " | ")[:200])
            except OSError as e:
                res.check(name, False, str(e))
        check_dns(res, key, ports, dns_server, t0 + serial.seen.get("firstboot_done", 0.0))
        console_fp = check_console(res, key, ports)
        boot = boot_status(key, ports)
        res.check("U-Boot started slot a, and Linux gave it its tries back",
                  "u-boot" in serial.seen and "slot_a" in serial.seen and boot.get("booted") == "a"
                  and (boot.get("state") or {}).get("tries_left", {}).get("a") == 3, str(boot))
        start_broken_trial(res, key, ports)
        try:
            proc.wait(timeout=max(5, min(120, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            pass
        res.check("the box restarted to try slot b", proc.poll() is not None, f"qemu exit {proc.poll()}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        serial.thread.join(timeout=10)
    try:
        check_rollback(res, args.arch, work, disk, key, ports, fwd, deadline)
    finally:
        ready.done.set()
        dns_server.stop()
        (work / "dns-queries.txt").write_text("".join(f"{n} {t}\n" for n, t in dns_server.names))
    # What a user sees on their computer after the first boot.
    env = mtools_env()
    log = run(["mtype", "-i", fat(disk), "::/appliance-firstboot.log"], env=env).stdout
    (work / "appliance-firstboot.log").write_text(log)
    res.check("appliance-firstboot.log on FAT shows apply success",
              "appliance apply succeeded" in log, f"{len(log.splitlines())} lines")
    listing = run(["mdir", "-b", "-i", fat(disk), "::/"], env=env).stdout
    res.check("settings and key removed from FAT", "appliance.toml" not in listing.lower()
              and "authorized_keys" not in listing.lower(), listing.replace("\n", " ")[:200])
    note = run(["mtype", "-i", fat(disk), "::/appliance-setup.txt"], env=env).stdout
    res.check("appliance-setup.txt on FAT names the console and the certificate it serves",
              bool(console_fp) and console_fp in note and ":8443/" in note and "Setup code:" in note,
              note.replace("\r\n", " | ")[:300])
    print("\nappliance-firstboot.log:\n" + log)
    seen = dict(serial.seen)
    if ready.at is not None:
        seen["mail_ready"] = round(ready.at, 1)
    print("boot timings (s since qemu start): " + ", ".join(f"{k} {v}" for k, v in seen.items()))
    if ready.at is not None and "kernel" in serial.seen:
        print(f"mail ready (a delivery to alice queued) {ready.at - serial.seen['kernel']:.1f} s "
              f"after the kernel started; the tries: {ready.summary()}")
    if remote.get("analyze"):
        print("guest: " + remote["analyze"].strip().splitlines()[0])
    if remote.get("blame"):
        print("guest's slowest units, and the chain the first boot waited on:\n"
              + remote["blame"].rstrip())
    print(f"image-test wall time {time.monotonic() - t_start:.0f} s; serial log {work / 'serial.log'}")
    if res.failed and (work / "guest-diagnostics.txt").exists():
        print("\nguest diagnostics (" + str(work / "guest-diagnostics.txt") + "):\n"
              + (work / "guest-diagnostics.txt").read_text()[-4000:])
    print(f"{len(res.passed)} passed, {len(res.failed)} failed")
    return 0 if not res.failed else 1


if __name__ == "__main__":
    sys.exit(main())
