#!/bin/sh
# mmdebstrap essential hook (base stage): defer the initramfs.
# Under qemu-user every update-initramfs run costs minutes, and the kernel,
# udev, kmod, zstd... each ask for one. A stub answers them all; the
# base-customize hook removes it and builds the initramfs once.
set -eu
root="$1"
chroot "$root" dpkg-divert --quiet --local --rename --add /usr/sbin/update-initramfs
cat > "$root/usr/sbin/update-initramfs" <<'STUB'
#!/bin/sh
echo "update-initramfs: deferred to the end of the image base stage" >&2
exit 0
STUB
chmod 0755 "$root/usr/sbin/update-initramfs"
