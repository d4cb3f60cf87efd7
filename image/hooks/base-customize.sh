#!/bin/sh
# mmdebstrap customize hook (base stage): disk layout, network, boot files.
# Environment (set by image/build.py): IMAGE_ARCH, IMAGE_BOOT_LABEL,
# IMAGE_ROOT_LABEL, IMAGE_CONSOLES.
set -eu
root="$1"

# Mount by label: the same fstab works on an SD card (mmcblk0), a USB disk
# (sda) and a virtual disk (vda). The root filesystem is on a card that wears
# with each write: noatime (a read writes nothing), and ext4 commits its
# journal every 30 s instead of 5, the age at which the kernel writes dirty
# pages back anyway. Mail is not at risk from the longer interval: Postfix and
# Dovecot fsync what they accept, and an fsync commits at once.
cat > "$root/etc/fstab" <<FSTAB
LABEL=$IMAGE_ROOT_LABEL / ext4 rw,noatime,commit=30,errors=remount-ro 0 1
LABEL=$IMAGE_BOOT_LABEL /boot/firmware vfat rw,noatime,umask=0077,nofail 0 2
FSTAB
mkdir -p "$root/boot/firmware"

# Wired network by DHCP (systemd-networkd). A host provisioned over SSH keeps
# its own network setup: this belongs to the image, not to the roles.
mkdir -p "$root/etc/systemd/network"
cat > "$root/etc/systemd/network/20-wired.network" <<'NET'
[Match]
Name=eth* en*

[Network]
DHCP=yes
# Answer mDNS on the wired LAN (only there): the console is https://<hostname>.local:8443/.
MulticastDNS=yes
NET
chroot "$root" systemctl enable systemd-networkd.service systemd-resolved.service
# mDNS (systemd-resolved's responder, no extra daemon): a person on the LAN
# finds the console at <hostname>.local, on the links the .network file above
# enables (the wired LAN; never a relay tunnel). LLMNR stays off: one way to be
# found is enough, and mail finds the box by DNS (its MX).
mkdir -p "$root/etc/systemd/resolved.conf.d"
printf '[Resolve]\nLLMNR=no\nMulticastDNS=yes\n' > "$root/etc/systemd/resolved.conf.d/10-appliance.conf"
# pam_env reads /etc/default/locale on every login and logs an error when it
# is missing (minbase has no locales package): name the C.UTF-8 locale.
[ -e "$root/etc/default/locale" ] || echo 'LANG=C.UTF-8' > "$root/etc/default/locale"

if [ "$IMAGE_ARCH" = arm64 ]; then
    # raspi-firmware writes cmdline.txt and config.txt from this file.
    defaults="$root/etc/default/raspi-firmware"
    sed -i \
        -e "s|^#\?ROOTPART=.*|ROOTPART=LABEL=$IMAGE_ROOT_LABEL|" \
        -e "s|^#\?CONSOLES=.*|CONSOLES=\"$IMAGE_CONSOLES\"|" \
        "$defaults"
    grep -q "^ROOTPART=LABEL=$IMAGE_ROOT_LABEL" "$defaults"
fi

# Build the initramfs once, now that every package that hooks into it is in.
rm -f "$root/usr/sbin/update-initramfs"
chroot "$root" dpkg-divert --quiet --local --rename --remove /usr/sbin/update-initramfs
echo "I: $(date +%T) update-initramfs (once, under emulation for arm64)"
chroot "$root" update-initramfs -c -k all
echo "I: $(date +%T) update-initramfs done"

if [ "$IMAGE_ARCH" = arm64 ]; then
    # Copy kernel and device trees to /boot/firmware with the settings above.
    chroot "$root" env DEB_MAINT_PARAMS=configure /etc/kernel/postinst.d/z50-raspi-firmware
    fw="$root/boot/firmware"
    kernel=$(sed -n 's/^kernel=//p' "$fw/config.txt")
    initrd=$(sed -n 's/^initramfs \([^ ]*\).*/\1/p' "$fw/config.txt")
    for f in config.txt cmdline.txt "$kernel" "$initrd"; do
        test -s "$fw/$f" || { echo "E: /boot/firmware/$f missing" >&2; exit 1; }
    done
    echo "I: boot partition: $(cat "$fw/cmdline.txt")"
fi
