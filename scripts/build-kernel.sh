#!/usr/bin/env bash
# Build the runtime bundle's guest kernel (vmlinux) from Debian's
# linux-source-6.1 with Firecracker's CI guest config, once per machine.
#
# The result is cached under $BANGER_KERNEL_CACHE (default
# /var/cache/banger/kernel)/<hash>/vmlinux, where <hash> is the sha256 of the
# config file followed by the linux-source package version; a second run with
# the same inputs prints the cached path and builds nothing.
#
# Usage: scripts/build-kernel.sh [--print-path] [--config FILE]
#   --print-path  print the cache path for the current inputs and exit
#                 (exit 1 when it is not built yet)
#   --config      kernel config (default: Firecracker's 6.1 CI config)
#
# Needs: apt-get install -y linux-source-6.1 build-essential bc bison flex \
#        libelf-dev libssl-dev
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
config="${BANGER_KERNEL_CONFIG:-$here/../../shared/reference/firecracker/guest-configs/microvm-kernel-ci-x86_64-6.1.config}"
cache_root="${BANGER_KERNEL_CACHE:-/var/cache/banger/kernel}"
source_pkg=linux-source-6.1
source_tar=/usr/src/linux-source-6.1.tar.xz
print_only=0

while [ $# -gt 0 ]; do
	case "$1" in
	--print-path) print_only=1 ;;
	--config)
		[ $# -ge 2 ] || { echo "build-kernel: --config needs a file" >&2; exit 2; }
		config="$2"
		shift
		;;
	-h | --help)
		sed -n '2,17p' "$0"
		exit 0
		;;
	*)
		echo "build-kernel: unknown argument $1 (see --help)" >&2
		exit 2
		;;
	esac
	shift
done

log() { printf '[build-kernel %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

[ -r "$config" ] || { echo "build-kernel: kernel config $config not found; pass --config FILE" >&2; exit 1; }
src_version=$(dpkg-query -W -f='${Version}' "$source_pkg" 2>/dev/null || true)
if [ -z "$src_version" ] || [ ! -r "$source_tar" ]; then
	echo "build-kernel: $source_pkg is not installed; run: apt-get install -y $source_pkg build-essential bc bison flex libelf-dev libssl-dev" >&2
	exit 1
fi

hash=$({ cat "$config"; printf '%s\n' "$source_pkg=$src_version"; } | sha256sum | cut -c1-64)
out_dir="$cache_root/$hash"
out="$out_dir/vmlinux"

if [ "$print_only" = 1 ]; then
	if [ -s "$out" ]; then
		echo "$out"
		exit 0
	fi
	echo "$out"
	exit 1
fi

if [ -s "$out" ]; then
	log "cached: $out"
	echo "$out"
	exit 0
fi

for tool in make gcc bc bison flex; do
	command -v "$tool" >/dev/null || {
		echo "build-kernel: $tool not found; run: apt-get install -y build-essential bc bison flex libelf-dev libssl-dev" >&2
		exit 1
	}
done

mkdir -p "$cache_root"
work=$(mktemp -d "$cache_root/build.XXXXXX")
trap 'rm -rf "$work"' EXIT

start=$(date +%s)
log "extracting $source_tar ($src_version)"
tar -C "$work" -xf "$source_tar"
tree="$work/linux-source-6.1"
cp "$config" "$tree/.config"
log "make olddefconfig"
make -C "$tree" -s olddefconfig
log "make vmlinux with $(nproc) jobs"
make -C "$tree" -s -j"$(nproc)" vmlinux
mkdir -p "$out_dir"
install -m 0644 "$tree/vmlinux" "$out.tmp"
install -m 0644 "$tree/.config" "$out_dir/config"
printf '%s\n' "$source_pkg=$src_version" >"$out_dir/source"
mv "$out.tmp" "$out"
log "built $out in $(($(date +%s) - start))s"
echo "$out"
