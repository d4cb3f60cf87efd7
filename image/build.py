#!/usr/bin/python3
"""Build the mail appliance disk image.

Stages, each printed with its duration:

  base       mmdebstrap: Debian 12 + kernel + boot firmware + initramfs, kept
             as a tarball in the cache (reused while its inputs are unchanged)
  provision  the Ansible playbook in provisioning/ against that rootfs through
             the community.general.chroot connection, then identity reset
  assemble   FAT boot partition (mkfs.vfat + mtools) and ext4 root partition
             (mkfs.ext4 -d) written into an MBR disk image: nothing is mounted
  compress   xz
  publish    .sha256, JSON manifest, Raspberry Pi Imager entry

Run as root (mmdebstrap --mode=root, chroot). Settings come from the
environment; see image/image.mk for the list and defaults.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
HOOKS = HERE / "hooks"
PROVISIONING = REPO / "provisioning"

BOOT_LABEL = "APPLIANCE"  # what a user sees when the card is in their computer
ROOT_LABEL = "appliance-root"
GAP_MIB = 4
BOOT_MIB = 256

# Packages of the base stage: what an image needs and an existing Debian host
# already has (init, kernel, network, python3 for Ansible). Everything the
# appliance itself needs is installed by the roles in provisioning/.
BASE_PACKAGES = [
    "systemd-sysv", "udev", "dbus", "kmod", "iproute2", "netbase",
    "systemd-timesyncd", "systemd-resolved", "ca-certificates", "python3",
    "initramfs-tools", "zstd", "fdisk", "e2fsprogs", "dosfstools",
]
ARCH_PACKAGES = {
    # Debian's own Raspberry Pi support: Pi 3, 4, 400, CM4, Zero 2 W.
    "arm64": ["linux-image-arm64", "raspi-firmware", "firmware-brcm80211", "fake-hwclock"],
    "amd64": ["linux-image-amd64"],
}
# Kernel consoles: HDMI plus the Pi's GPIO serial (ttyS1: ttyAMA0 is Bluetooth).
ARCH_CONSOLES = {"arm64": "tty0 ttyS1,115200", "amd64": "tty0 ttyS0,115200"}
BASE_MAX_AGE_DAYS = 7


class BuildError(Exception):
    pass


def log(msg: str) -> None:
    print(msg, flush=True)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    log("+ " + " ".join(cmd))
    return subprocess.run(cmd, check=True, **kw)


def capture(cmd: list[str], **kw) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


class Config:
    """Build settings from the environment (image/image.mk passes them)."""

    def __init__(self, env: dict[str, str]):
        self.arch = env.get("ARCH", "arm64")
        if self.arch not in ARCH_PACKAGES:
            raise BuildError(f"ARCH={self.arch!r}: supported are {', '.join(ARCH_PACKAGES)}")
        self.mirror = env.get("MIRROR") or "http://deb.debian.org/debian"
        self.security_mirror = env.get("SECURITY_MIRROR") or "http://deb.debian.org/debian-security"
        self.extra_packages = env.get("EXTRA_PACKAGES", "").split()
        self.extra_roles = env.get("EXTRA_ROLES", "").split()
        self.extra_vars = env.get("EXTRA_VARS", "")  # a YAML/JSON file for ansible -e @file
        self.hostname = env.get("IMAGE_HOSTNAME") or "mail-appliance"
        self.build_dir = Path(env.get("BUILD_DIR") or REPO / "build").resolve()
        self.cache_dir = Path(env.get("CACHE_DIR") or "/var/cache/mail-appliance-image")
        self.reuse_base = env.get("REUSE_BASE", "1") == "1"
        self.xz_level = env.get("XZ_LEVEL", "6")
        self.base_url = env.get("IMAGE_BASE_URL", "")
        self.version = env.get("VERSION") or project_version()
        self.source_date_epoch = env.get("SOURCE_DATE_EPOCH") or git_commit_time()
        self.work = self.build_dir / f"work-{self.arch}"
        self.name = f"mail-appliance-{self.version}-{self.arch}"

    def sources(self) -> list[str]:
        comps = "main non-free-firmware"
        return [
            f"deb {self.mirror} bookworm {comps}",
            f"deb {self.mirror} bookworm-updates {comps}",
            f"deb {self.security_mirror} bookworm-security {comps}",
        ]

    def base_packages(self) -> list[str]:
        return BASE_PACKAGES + ARCH_PACKAGES[self.arch]

    def hook_env(self) -> dict[str, str]:
        return {
            "IMAGE_ARCH": self.arch,
            "IMAGE_BOOT_LABEL": BOOT_LABEL,
            "IMAGE_ROOT_LABEL": ROOT_LABEL,
            "IMAGE_CONSOLES": ARCH_CONSOLES[self.arch],
            "IMAGE_HOSTNAME": self.hostname,
            "SOURCE_DATE_EPOCH": self.source_date_epoch,
        }


def project_version() -> str:
    for line in (REPO / "pyproject.toml").read_text().splitlines():
        if line.startswith("version"):
            return line.split("=", 1)[1].strip().strip('"')
    return "0"


def git_revision() -> str:
    try:
        rev = capture(["git", "-C", str(REPO), "rev-parse", "HEAD"]).strip()
        dirty = capture(["git", "-C", str(REPO), "status", "--porcelain"]).strip()
        return rev + ("-dirty" if dirty else "")
    except subprocess.CalledProcessError:
        return "uncommitted"


def git_commit_time() -> str:
    try:
        return capture(["git", "-C", str(REPO), "log", "-1", "--format=%ct"]).strip()
    except subprocess.CalledProcessError:
        return str(int(time.time()))


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def remove_tree(path: Path) -> None:
    """Remove an old rootfs; first unmount what an interrupted mmdebstrap left
    mounted in it (its /proc, /sys, /dev), never deleting through a mount."""
    if not path.exists():
        return
    prefix = str(path.resolve()) + "/"
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
              if line.split()[4].startswith(prefix)]
    for mount in sorted(mounts, reverse=True):
        run(["umount", "--lazy", mount])
    run(["rm", "-rf", "--one-file-system", str(path)])


# -- stages ---------------------------------------------------------------

def stage_base(cfg: Config) -> Path:
    """mmdebstrap the base rootfs into a cached tarball; return its path."""
    key_src = json.dumps([cfg.arch, cfg.sources(), cfg.base_packages(),
                          (HOOKS / "base-essential.sh").read_text(),
                          (HOOKS / "base-customize.sh").read_text(),
                          cfg.hook_env()["IMAGE_CONSOLES"], BOOT_LABEL, ROOT_LABEL])
    key = hashlib.sha256(key_src.encode()).hexdigest()[:16]
    tarball = cfg.cache_dir / f"base-{cfg.arch}-{key}.tar"
    if cfg.reuse_base and tarball.exists():
        age_days = (time.time() - tarball.stat().st_mtime) / 86400
        if age_days < BASE_MAX_AGE_DAYS:
            log(f"reusing cached base {tarball} ({age_days:.1f} days old; REUSE_BASE=0 rebuilds)")
            return tarball
    debs = cfg.cache_dir / f"debs-{cfg.arch}"
    debs.mkdir(parents=True, exist_ok=True)
    for old in cfg.cache_dir.glob(f"base-{cfg.arch}-*.tar"):
        old.unlink()
    tmp = tarball.with_name(tarball.stem + ".partial.tar")
    cmd = [
        "mmdebstrap", "--mode=root", "--variant=minbase", f"--architectures={cfg.arch}",
        "--include=" + ",".join(cfg.base_packages()),
        "--skip=cleanup/apt/lists", "--skip=essential/unlink",
        "--dpkgopt=force-unsafe-io", '--aptopt=Acquire::Retries "3"',
        "--hook-dir=/usr/share/mmdebstrap/hooks/eatmydata",
        "--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives",
        f"--setup-hook=sync-in {debs} /var/cache/apt/archives",
        f"--essential-hook={HOOKS}/base-essential.sh",
        f"--customize-hook=sync-out /var/cache/apt/archives {debs}",
        f"--customize-hook={HOOKS}/base-customize.sh",
        # mmdebstrap copies the build host's name and resolver in: not ours to ship.
        "--customize-hook=rm -f \"$1\"/etc/hostname",
        "bookworm", str(tmp), *cfg.sources(),
    ]
    env = {**os.environ, **cfg.hook_env()}
    run(cmd, env=env, stdin=subprocess.DEVNULL)
    tmp.rename(tarball)
    return tarball


def stage_provision(cfg: Config, base: Path) -> Path:
    """Extract the base, run the playbook through the chroot connection."""
    rootfs = cfg.work / "rootfs"
    remove_tree(rootfs)
    debs = cfg.cache_dir / f"debs-{cfg.arch}"
    debs.mkdir(parents=True, exist_ok=True)
    extra_vars = {
        "appliance_image_build": True,
        "appliance_firstboot_hostname": cfg.hostname,
        "appliance_base_extra_packages": cfg.extra_packages,
        "appliance_extra_roles": cfg.extra_roles,
    }
    vars_file = cfg.work / "build-vars.json"
    vars_file.write_text(json.dumps(extra_vars, indent=1) + "\n")
    playbook = [
        "ansible-playbook", "-i", '"$1",', "-c", "community.general.chroot",
        "-e", f"@{vars_file}",
    ]
    if cfg.extra_vars:
        playbook += ["-e", "@" + str(Path(cfg.extra_vars).resolve())]
    playbook.append(str(PROVISIONING / "site.yml"))
    ansible_env = f"ANSIBLE_CONFIG={PROVISIONING / 'ansible.cfg'}"
    cmd = [
        "mmdebstrap", "--mode=root", "--variant=custom", f"--architectures={cfg.arch}",
        "--dpkgopt=force-unsafe-io",
        '--aptopt=Acquire::Retries "3"',
        f"--setup-hook=tar --xattrs --numeric-owner -C \"$1\" -xf {base}",
        "--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives",
        f"--setup-hook=sync-in {debs} /var/cache/apt/archives",
        f"--customize-hook={HOOKS}/provision-prepare.sh",
        "--customize-hook=env " + ansible_env + " " + " ".join(playbook),
        f"--customize-hook=sync-out /var/cache/apt/archives {debs}",
        f"--customize-hook={HOOKS}/rspamd-cache.sh",
        f"--customize-hook={HOOKS}/finalize.sh",
        "bookworm", str(rootfs), *cfg.sources(),
    ]
    env = {**os.environ, **cfg.hook_env(), "ANSIBLE_FORCE_COLOR": "0"}
    run(cmd, env=env, stdin=subprocess.DEVNULL)
    return rootfs


def stage_assemble(cfg: Config, rootfs: Path) -> tuple[Path, dict]:
    """Partition images without mounting: FAT via mtools, ext4 via mkfs -d."""
    work = cfg.work
    boot_img, root_img = work / "boot.part", work / "root.part"
    image = work / f"{cfg.name}.img"
    for p in (boot_img, root_img, image):
        p.unlink(missing_ok=True)
    sde = int(cfg.source_date_epoch)
    fw = rootfs / "boot" / "firmware"
    fw_files = sorted(fw.iterdir())
    # FAT: fixed volume id and timestamps so the partition is reproducible.
    volid = f"{sde & 0xFFFFFFFF:08X}"
    run(["mkfs.vfat", "-C", "-F", "32", "-n", BOOT_LABEL, "-i", volid, "--invariant",
         str(boot_img), str(BOOT_MIB * 1024)], stdout=subprocess.DEVNULL)
    if fw_files:
        for path in fw.rglob("*"):
            os.utime(path, (sde, sde), follow_symlinks=False)
        run(["mcopy", "-s", "-p", "-m", "-i", str(boot_img), *map(str, fw_files), "::/"],
            env={**os.environ, "MTOOLS_SKIP_CHECK": "1"})
    # ext4: the FAT content lives on its own partition, so leave /boot/firmware
    # empty in the root filesystem (it is the mount point).
    stash = work / "firmware.stash"
    if stash.exists():
        shutil.rmtree(stash)
    fw.rename(stash)
    fw.mkdir(mode=0o755)
    try:
        used_kib = int(capture(["du", "-sxk", "--apparent-size", str(rootfs)]).split()[0])
        root_mib = (used_kib * 12 // 10 // 1024 + 200 + 7) // 8 * 8  # +20% +200 MiB, 8 MiB aligned
        fs_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"mail-appliance:{cfg.arch}:{sde}"))
        run(["mkfs.ext4", "-q", "-L", ROOT_LABEL, "-U", fs_uuid, "-E",
             f"root_owner=0:0,hash_seed={fs_uuid}", "-O", "^huge_file",
             "-d", str(rootfs), str(root_img), f"{root_mib}M"],
            env={**os.environ, "E2FSPROGS_FAKE_TIME": str(sde)})
    finally:
        fw.rmdir()
        stash.rename(fw)
    total_mib = GAP_MIB + BOOT_MIB + root_mib
    with image.open("wb") as f:
        f.truncate(total_mib << 20)
    disk_id = f"0x{sde & 0xFFFFFFFF:08x}"
    table = (
        f"label: dos\nlabel-id: {disk_id}\n"
        f"start={GAP_MIB * 2048}, size={BOOT_MIB * 2048}, type=c, bootable\n"
        f"start={(GAP_MIB + BOOT_MIB) * 2048}, type=83\n"
    )
    run(["sfdisk", "-q", str(image)], input=table, text=True)
    for part, offset in ((boot_img, GAP_MIB), (root_img, GAP_MIB + BOOT_MIB)):
        run(["dd", f"if={part}", f"of={image}", "bs=1M", f"seek={offset}",
             "conv=notrunc,sparse", "status=none"])
        part.unlink()
    sizes = {"image_bytes": image.stat().st_size, "boot_partition_mib": BOOT_MIB,
             "root_partition_mib": root_mib, "rootfs_used_kib": used_kib}
    log(f"image {image}: {total_mib} MiB (boot {BOOT_MIB} MiB, root {root_mib} MiB, "
        f"rootfs {used_kib // 1024} MiB used)")
    return image, sizes


def stage_compress(cfg: Config, image: Path) -> Path:
    out = cfg.build_dir / f"{cfg.name}.img.xz"
    with out.open("wb") as f:
        run(["xz", f"-{cfg.xz_level}", "-T0", "--stdout", str(image)], stdout=f)
    return out


def stage_publish(cfg: Config, rootfs: Path, image: Path, xz: Path, sizes: dict,
                  timings: dict, started: datetime.datetime) -> None:
    xz_sha = sha256(xz)
    img_sha = sha256(image)
    (cfg.build_dir / f"{xz.name}.sha256").write_text(f"{xz_sha}  {xz.name}\n")
    packages = []
    for line in capture(["dpkg-query", f"--admindir={rootfs}/var/lib/dpkg", "-W",
                         "-f", "${db:Status-Abbrev}\t${Package}\t${Version}\t${Architecture}\n"]
                        ).splitlines():
        status, name, version, arch = line.split("\t")
        if status.startswith("ii"):
            packages.append({"name": name, "version": version, "architecture": arch})
    debian_version = (rootfs / "etc" / "debian_version").read_text().strip()
    release_date = datetime.datetime.fromtimestamp(int(cfg.source_date_epoch),
                                                   datetime.timezone.utc).date().isoformat()
    manifest = {
        "name": cfg.name,
        "version": cfg.version,
        "architecture": cfg.arch,
        "debian": debian_version,
        "git_revision": git_revision(),
        "source_date_epoch": int(cfg.source_date_epoch),
        "build_started_utc": started.isoformat(timespec="seconds"),
        "build_seconds": round(sum(timings.values()), 1),
        "stage_seconds": {k: round(v, 1) for k, v in timings.items()},
        "mirror": cfg.mirror,
        "extra_packages": cfg.extra_packages,
        "extra_roles": cfg.extra_roles,
        "sizes": {**sizes, "compressed_bytes": xz.stat().st_size},
        "image_sha256": img_sha,
        "compressed_sha256": xz_sha,
        "package_count": len(packages),
        "packages": packages,
    }
    (cfg.build_dir / f"{cfg.name}.manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    url = f"{cfg.base_url.rstrip('/')}/{xz.name}" if cfg.base_url else xz.name
    imager = {"os_list": [{
        "name": f"Mail appliance {cfg.version} ({cfg.arch})",
        "description": "Self-hosted mail server on Debian 12. Before first boot, edit "
                       "appliance.toml on the APPLIANCE partition and add authorized_keys.",
        "url": url,
        "release_date": release_date,
        "extract_size": image.stat().st_size,
        "extract_sha256": img_sha,
        "image_download_size": xz.stat().st_size,
        "image_download_sha256": xz_sha,
        "devices": ["pi3-64bit", "pi4-64bit"] if cfg.arch == "arm64" else [],
    }]}
    (cfg.build_dir / f"{cfg.name}.rpi-imager.json").write_text(json.dumps(imager, indent=1) + "\n")


def main() -> int:
    if os.geteuid() != 0:
        print("image/build.py: run as root (mmdebstrap --mode=root and chroot need it)",
              file=sys.stderr)
        return 1
    cfg = Config(dict(os.environ))
    cfg.work.mkdir(parents=True, exist_ok=True)
    cfg.cache_dir.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now(datetime.timezone.utc)
    timings: dict[str, float] = {}

    def stage(name: str, fn, *args):
        log(f"\n==> {name} [{datetime.datetime.now():%H:%M:%S}]")
        t0 = time.monotonic()
        result = fn(*args)
        timings[name] = time.monotonic() - t0
        log(f"<== {name}: {timings[name]:.1f} s")
        return result

    log(f"building {cfg.name} (SOURCE_DATE_EPOCH={cfg.source_date_epoch}, cache {cfg.cache_dir})")
    try:
        base = stage("base", stage_base, cfg)
        rootfs = stage("provision", stage_provision, cfg, base)
        image, sizes = stage("assemble", stage_assemble, cfg, rootfs)
        xz = stage("compress", stage_compress, cfg, image)
        stage("publish", stage_publish, cfg, rootfs, image, xz, sizes, timings, started)
    except (subprocess.CalledProcessError, BuildError, OSError) as e:
        log(f"\nimage build FAILED: {e}")
        return 1
    log("\nstage times: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
        + f"; total {sum(timings.values()) / 60:.1f} min")
    log(f"image: {xz} ({xz.stat().st_size / 1e6:.0f} MB), raw {image} "
        f"({image.stat().st_size / 2**20:.0f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
