#!/usr/bin/env bash
# Run a command chrooted in an image staging tree, with /proc, /sys, /dev,
# /dev/pts and /run mounted inside it. The mounts live in a private mount
# namespace (the script re-executes itself under `unshare --mount`), so they
# vanish when the command ends, whatever happens; nothing is mounted on the
# host's own namespace.
#
# Usage (as root): enter-chroot.sh STAGING COMMAND [ARG...]
set -euo pipefail

if [ $# -lt 2 ]; then
	echo "usage: enter-chroot.sh STAGING COMMAND [ARG...]" >&2
	exit 2
fi
staging=$1
shift
if [ ! -d "$staging" ] || [ -L "$staging" ]; then
	echo "enter-chroot: $staging is not a directory" >&2
	exit 2
fi

if [ "${BANGER_CHROOT_NS:-}" != 1 ]; then
	exec unshare --mount --propagation private env BANGER_CHROOT_NS=1 bash "$0" "$staging" "$@"
fi

mount -t proc proc "$staging/proc"
mount -t sysfs sysfs "$staging/sys"
mount --bind /dev "$staging/dev"
mkdir -p "$staging/dev/pts"
mount -t devpts -o newinstance,ptmxmode=0666 devpts "$staging/dev/pts"
mount -t tmpfs -o mode=0755 tmpfs "$staging/run"

exec chroot "$staging" /usr/bin/env -i \
	PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
	HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive TERM=dumb \
	"$@"
