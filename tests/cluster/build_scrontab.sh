#!/usr/bin/env bash
# Debian's slurm-client leaves scrontab out of its package (its install list does not name it), although
# slurmctld runs scrontab jobs. For the scrontab tests on the real test cluster, build that one client from the
# Debian source of the installed version, linked against the installed libslurmfull (about two minutes: configure
# is most of it). Prints the binary's path; cached by version, so a second call only prints it.
# Needs root the first time (a deb-src entry for the Debian archive, apt-get source) and gcc/make.
set -euo pipefail
version="$(dpkg-query -W -f '${Version}' slurm-client)"
cache="/var/cache/hpc-sweep-scrontab/$version"
if [ -x "$cache/scrontab" ]; then
    echo "$cache/scrontab"
    exit 0
fi
libdir="$(dirname "$(dpkg -L libslurm38 slurm-client 2>/dev/null | grep -m1 '/libslurmfull\.so$' || true)")"
[ -f "$libdir/libslurmfull.so" ] || libdir=/usr/lib/x86_64-linux-gnu/slurm-wlm
. /etc/os-release
sources=/etc/apt/sources.list.d/hpc-sweep-slurm-src.list
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
printf 'deb-src [signed-by=%s] http://deb.debian.org/debian %s main\ndeb-src [signed-by=%s] http://deb.debian.org/debian-security %s-security main\n' \
    "$keyring" "$VERSION_CODENAME" "$keyring" "$VERSION_CODENAME" > "$sources"
work="$(mktemp -d)"
trap 'rm -rf "$work"; rm -f "$sources"; apt-get update -qq >/dev/null 2>&1 || true' EXIT
apt-get update -qq >/dev/null
(cd "$work" && apt-get source -qq --download-only "slurm-wlm=$version" >/dev/null 2>&1)
tar -xzf "$work"/slurm-wlm_*.orig.tar.gz -C "$work"
src="$(find "$work" -mindepth 1 -maxdepth 1 -type d | head -1)"
(cd "$src" && ./configure -q --prefix=/usr --sysconfdir=/etc/slurm --without-munge --without-hdf5 >/dev/null 2>&1)
cd "$src/src/scrontab"
make -s env.o opt.o parse.o scrontab.o >/dev/null
# The usage text and the default crontab are linked in as binary objects, as Slurm's Makefile does.
ld -r -b binary -o usage.o usage.txt
ld -r -b binary -o default_crontab.o default_crontab.txt
mkdir -p "$cache"
gcc -o "$cache/scrontab" env.o opt.o parse.o scrontab.o usage.o default_crontab.o \
    -L"$libdir" -lslurmfull -Wl,-rpath,"$libdir" -lpthread -ldl 2>/dev/null
chmod 755 "$cache" "$cache/scrontab"
echo "$cache/scrontab"
