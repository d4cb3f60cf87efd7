#!/bin/sh
# Install the Debian 12 packages the image build needs, if any is missing.
# usage: image/host-deps.sh arm64|amd64|lint
set -eu
what=${1:-arm64}
pkgs="ansible ansible-lint"
if [ "$what" != lint ]; then
    pkgs="$pkgs mmdebstrap eatmydata dosfstools mtools fdisk e2fsprogs xz-utils openssh-client"
    case "$what" in
        # Recommends are not installed, so name what the build and boot test use:
        # arch-test (mmdebstrap refuses a foreign architecture without it) and
        # ipxe-qemu (efi-virtio.rom, which qemu's virtio-net-pci loads). The boot test starts
        # the image the way a Pi does, through U-Boot: u-boot-qemu is qemu's firmware for it.
        arm64) pkgs="$pkgs qemu-user-static binfmt-support arch-test qemu-system-arm ipxe-qemu u-boot-qemu" ;;
        amd64) pkgs="$pkgs qemu-system-x86 ipxe-qemu u-boot-qemu" ;;
        *) echo "host-deps.sh: unknown architecture $what" >&2; exit 2 ;;
    esac
fi
missing=""
for p in $pkgs; do
    dpkg-query -W -f '${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^ii' || missing="$missing $p"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "host-deps.sh: missing Debian packages:$missing (run as root to install them)" >&2
        exit 1
    fi
    echo "host-deps.sh: installing$missing"
    # A fresh machine may have no package lists, or lists older than the
    # mirror's packages: refresh them when missing or more than a day old.
    if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mmin -1440 2>/dev/null)" ]; then
        apt-get update -qq
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
if [ "$what" = arm64 ] && [ "$(dpkg --print-architecture)" != arm64 ]; then
    # arm64 programs run in the build chroot through binfmt_misc + qemu-user.
    if ! [ -e /proc/sys/fs/binfmt_misc/status ]; then
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    fi
    if ! [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
        update-binfmts --enable qemu-aarch64
    fi
    grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 || {
        echo "host-deps.sh: binfmt_misc qemu-aarch64 is not enabled" >&2; exit 1; }
fi
