#!/bin/sh
# mmdebstrap customize hook (provision stage), after the playbook and any
# extra roles: remove everything that would make every card the same device.
# The first-boot unit (appliance_firstboot role) makes each anew.
set -eu
root="$1"

if [ -e "$root/etc/resolv.conf.image-build" ]; then
    mv "$root/etc/resolv.conf.image-build" "$root/etc/resolv.conf"
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
