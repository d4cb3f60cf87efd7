#!/bin/sh
# mmdebstrap customize hook (provision stage), after the playbook and any
# extra roles: remove everything that would make every card the same device.
# The first-boot unit (appliance_firstboot role) makes each anew.
set -eu
root="$1"

# The saved resolv.conf is a link to /run/systemd/resolve/stub-resolv.conf,
# which does not exist in the chroot: test the link itself (-L), not its
# target (-e is false for a dangling link, and the build host's file stayed).
if [ -L "$root/etc/resolv.conf.image-build" ]; then
    mv -f -T "$root/etc/resolv.conf.image-build" "$root/etc/resolv.conf"
fi
if [ -e "$root/etc/resolv.conf.image-build" ] || [ -L "$root/etc/resolv.conf.image-build" ]; then
    echo "E: /etc/resolv.conf.image-build left in the image" >&2
    exit 1
fi
case "$(readlink "$root/etc/resolv.conf")" in
    ../run/systemd/resolve/stub-resolv.conf|/run/systemd/resolve/stub-resolv.conf) ;;
    *) echo "E: /etc/resolv.conf is not systemd-resolved's stub link" >&2; exit 1 ;;
esac

# Nothing else of the build host: its name (mmdebstrap copies /etc/hostname in), its
# entries in /etc/hosts, its apt proxy. Each card starts as IMAGE_HOSTNAME.
want="${IMAGE_HOSTNAME:-mail-appliance}"
if [ "$(cat "$root/etc/hostname" 2>/dev/null)" != "$want" ]; then
    echo "E: /etc/hostname is not \"$want\"" >&2
    exit 1
fi
build_host="$(hostname 2>/dev/null || true)"
if [ -n "$build_host" ] && [ "$build_host" != "$want" ] && [ "$build_host" != localhost ] &&
        grep -q -w -F -e "$build_host" "$root/etc/hosts" "$root/etc/hostname" 2>/dev/null; then
    echo "E: the build host's name ($build_host) is in the image's /etc/hosts or /etc/hostname" >&2
    exit 1
fi
if grep -r -q -i -E '^[^#]*Acquire::[a-z]+::Proxy|^[^#]*Acquire[[:space:]]*\{.*Proxy' \
        "$root/etc/apt/apt.conf" "$root/etc/apt/apt.conf.d" 2>/dev/null ||
        grep -q -i -E '^[^#]*(https?|ftp)_proxy=' "$root/etc/environment" 2>/dev/null; then
    echo "E: an apt or environment proxy setting of the build host is in the image" >&2
    exit 1
fi

# SSH host keys, the snakeoil TLS key, systemd's seeds. (mmdebstrap empties
# /etc/machine-id itself.)
rm -f "$root"/etc/ssh/ssh_host_*
rm -f "$root/etc/ssl/private/ssl-cert-snakeoil.key" "$root/etc/ssl/certs/ssl-cert-snakeoil.pem"
rm -f "$root/var/lib/systemd/random-seed" "$root/var/lib/systemd/credential.secret"
rm -rf "$root/root/.ansible" "$root/tmp/"* "$root/var/tmp/"*
# Downloaded packages and package lists: the build cache keeps the former;
# the device fetches fresh lists before its first update.
find "$root/var/cache/apt" -name '*.deb' -delete
rm -f "$root/var/cache/apt/"*.bin
find "$root/var/lib/apt/lists" -maxdepth 1 -type f ! -name lock -delete
: > "$root/etc/machine-id"

# No default password anywhere: no account may have a password hash.
if awk -F: '$2 ~ /^\$/ { print "E: account " $1 " has a password"; bad = 1 } END { exit bad }' \
        "$root/etc/shadow" >&2; then
    :
else
    exit 1
fi
if grep -q -i '^ *PasswordAuthentication *yes' "$root"/etc/ssh/sshd_config.d/*.conf 2>/dev/null; then
    echo "E: an sshd drop-in allows passwords" >&2
    exit 1
fi
echo "I: identity reset; no account has a password"
