#!/bin/sh
# mmdebstrap customize hook (provision stage), before the playbook runs.
set -eu
root="$1"
# Services must not start inside the build chroot (Postfix would listen on the
# build host). mmdebstrap installs a policy-rc.d for its hooks: insist on it.
if ! [ -x "$root/usr/sbin/policy-rc.d" ]; then
    echo "E: no policy-rc.d in the chroot: refusing to install services" >&2
    exit 1
fi
# systemd-resolved makes /etc/resolv.conf a link to /run, empty in a chroot:
# lend the build host's resolver to apt until finalize.sh puts the link back.
if [ -L "$root/etc/resolv.conf" ]; then
    mv "$root/etc/resolv.conf" "$root/etc/resolv.conf.image-build"
    cp /etc/resolv.conf "$root/etc/resolv.conf"
fi
