#!/bin/sh
# mmdebstrap customize hook (provision stage), after the playbook: compile rspamd's URL
# matcher (the 9600 suffixes of the public suffix list) and the other pattern sets of its
# packaged configuration into its hyperscan cache now, once, instead of at every card's
# first rspamd start.
#
# Why: where Debian's rspamd uses hyperscan (amd64), its main process compiles that matcher
# before any worker listens: ~20 s of CPU on a PC, over 200 s under emulation (the boot
# test), and mail waits for it (Postfix defers while the milter is down). It is the same on
# every card: built from a packaged file, nothing secret.
#
# Valid only where the CPU is alike: rspamd hashes hyperscan's platform (CPU tune and
# features such as AVX2) into the cache file's name, so a card whose CPU differs from the
# build machine's does not find it and compiles its own at the first start, as without this
# hook; rspamd's main process then deletes the unused file at its next stop.
#
# arm64: Debian's rspamd has no hyperscan there (its matcher builds in well under a second),
# so there is nothing to do.
set -eu
root="$1"
cache=/var/lib/rspamd
tld=/usr/share/rspamd/effective_tld_names.dat

if ! chroot "$root" dpkg-query -W -f '${Status}\n' libhyperscan5 2>/dev/null | grep -q ' installed$'; then
    echo "I: rspamd without hyperscan here: no pattern cache to compile"
    exit 0
fi
[ -d "$root$cache" ] && [ -f "$root$tld" ] || { echo "E: rspamd's $cache or $tld missing" >&2; exit 1; }
echo "I: $(date +%T) compiling rspamd's URL matcher (hyperscan) into $cache"
# rspamadm's own config has hs_cache_dir = /var/lib/rspamd, rspamd's default too; the
# matcher is the one rspamd's url library builds at start-up (same patterns, same flags, so
# the same file name). No network: a namespace of its own.
unshare --net chroot "$root" rspamadm lua -b \
    -e "require('rspamd_url').init('$tld')" >/dev/null
# The smaller multipattern sets (about 1.6 MB, from rspamd's packaged modules; the same with
# the agent's configuration): `rspamadm configtest` compiles them. Without them the first
# apply's validation of rspamd (configtest) compiles them itself: 2.2-2.8 s natively instead
# of 0.9-1.0 s, tens of seconds under emulation.
unshare --net chroot "$root" rspamadm configtest -c /etc/rspamd/rspamd.conf 2>/dev/null |
    grep -q 'syntax OK' || { echo "E: rspamadm configtest failed on Debian's configuration" >&2; exit 1; }
big=$(find "$root$cache" -maxdepth 1 -name '*.hsmp' -size +10M | head -n 1)
if [ -z "$big" ]; then
    echo "E: rspamadm wrote no URL matcher cache into $cache" >&2
    exit 1
fi
# rspamd writes a mmap-able copy (.unser) itself at the first load: ship only the database.
rm -f "$root$cache"/*.unser
chroot "$root" chown -R _rspamd:_rspamd "$cache"
echo "I: $(date +%T) URL matcher $(basename "$big"): $(du -m "$big" | cut -f1) MiB;" \
    "$(find "$root$cache" -maxdepth 1 -name '*.hsmp' | wc -l) pattern sets in all"
