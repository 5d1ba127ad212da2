#!/usr/bin/env bash
# Build the runtime bundle's guest kernel (vmlinux) from Debian's
# linux-source-6.1 with banger's own config: the kernel's x86_64
# `make defconfig`, then the fragment scripts/kernel/banger.config (and any
# extra fragments) merged with scripts/kconfig/merge_config.sh, then
# `make olddefconfig`. It fails, naming them, if any option a fragment sets
# is not in the final .config as the fragment wrote it (a missing dependency,
# or an option this kernel does not have).
#
# The result is cached under $BANGER_KERNEL_CACHE (default
# /var/cache/banger/kernel)/<hash>/vmlinux, where <hash> is the sha256 of the
# fragments and the kernel source's identity; a second run with the same
# inputs prints the cached path and builds nothing.
#
# Usage: scripts/build-kernel.sh [--print-path] [--config-only]
#                                [--fragment FILE]... [--source DIR|TARBALL]
#   --fragment FILE  an extra fragment merged after banger.config (repeatable;
#                    later fragments win). KERNEL_FRAGMENTS="F1 F2" in the
#                    environment adds more: `make kernel KERNEL_FRAGMENTS=...`.
#                    For PVM hosts: scripts/kernel/pvm-guest.config (needs a
#                    PVM-patched tree, see that file).
#   --source SRC     kernel source: an unpacked tree (left untouched: the build
#                    runs out of tree) or a .tar.* of one. Default: $KERNEL_SRC,
#                    else /usr/src/linux-source-6.1.tar.xz (Debian's
#                    linux-source-6.1 package).
#   --config-only    stop after the merged, checked .config; print its path
#                    (<cache>/<hash>/config). Takes seconds, not the build's
#                    ~20 minutes.
#   --print-path     print the cache path of vmlinux for these inputs and exit
#                    (exit 1 when it is not built yet)
#
# Needs: apt-get install -y linux-source-6.1 build-essential bc bison flex \
#        libelf-dev libssl-dev xz-utils
set -euo pipefail
# The kernel's makes are this script's own: flags of a make that runs it
# (`make -n`, a jobserver) must not reach them.
unset MAKEFLAGS MFLAGS MAKEOVERRIDES MAKELEVEL

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
base_fragment="$here/kernel/banger.config"
cache_root="${BANGER_KERNEL_CACHE:-/var/cache/banger/kernel}"
default_pkg=linux-source-6.1
default_tar=/usr/src/linux-source-6.1.tar.xz
deps="build-essential bc bison flex libelf-dev libssl-dev xz-utils"
source="${KERNEL_SRC:-}"
print_only=0
config_only=0
fragments=("$base_fragment")
# shellcheck disable=SC2206 # KERNEL_FRAGMENTS is a space-separated list
extra=(${KERNEL_FRAGMENTS:-})

while [ $# -gt 0 ]; do
	case "$1" in
	--print-path) print_only=1 ;;
	--config-only) config_only=1 ;;
	--fragment | --source)
		[ $# -ge 2 ] || { echo "build-kernel: $1 needs a value (see --help)" >&2; exit 2; }
		if [ "$1" = --fragment ]; then extra+=("$2"); else source="$2"; fi
		shift
		;;
	-h | --help)
		sed -n '2,33p' "$0"
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
die() { printf 'build-kernel: %s\n' "$*" >&2; exit 1; }

for f in "${extra[@]}"; do
	[ -r "$f" ] || die "kernel config fragment $f not found"
	fragments+=("$(cd "$(dirname "$f")" && pwd)/$(basename "$f")")
done
[ -r "$base_fragment" ] || die "$base_fragment is missing from the checkout"

# The source and its identity (part of the cache key).
if [ -z "$source" ]; then
	src_version=$(dpkg-query -W -f='${Version}' "$default_pkg" 2>/dev/null || true)
	if [ -z "$src_version" ] || [ ! -r "$default_tar" ]; then
		die "$default_pkg is not installed (it provides $default_tar); run: apt-get install -y $default_pkg $deps, or pass --source DIR|TARBALL"
	fi
	source=$default_tar
	identity="$default_pkg=$src_version"
elif [ -d "$source" ]; then
	source=$(cd "$source" && pwd)
	if [ ! -f "$source/Makefile" ] || [ ! -f "$source/scripts/kconfig/merge_config.sh" ]; then
		die "$source is not a kernel source tree (no Makefile and scripts/kconfig/merge_config.sh)"
	fi
	[ ! -e "$source/.config" ] || die "$source has a .config (an in-tree build); the build runs out of tree and needs a clean tree: make -C $source mrproper"
	rev=$(git -C "$source" rev-parse HEAD 2>/dev/null || true)
	identity="tree=$source version=$(make -s -C "$source" kernelversion 2>/dev/null || echo unknown) rev=${rev:-none}"
elif [ -r "$source" ]; then
	source=$(cd "$(dirname "$source")" && pwd)/$(basename "$source")
	identity="tarball=$(sha256sum "$source" | cut -c1-64)"
else
	die "kernel source $source not found (a tree or a tarball)"
fi

hash=$({
	for f in "${fragments[@]}"; do
		printf '== %s\n' "$(basename "$f")"
		cat "$f"
	done
	printf '%s\n' "$identity"
} | sha256sum | cut -c1-64)
out_dir="$cache_root/$hash"
out="$out_dir/vmlinux"

if [ "$print_only" = 1 ]; then
	echo "$out"
	[ -s "$out" ]
	exit
fi
if [ "$config_only" = 0 ] && [ -s "$out" ]; then
	log "cached: $out"
	echo "$out"
	exit 0
fi

tools="make gcc bison flex"
[ -d "$source" ] || tools="$tools tar"
case "$source" in *.xz) tools="$tools xz" ;; esac
[ "$config_only" = 1 ] || tools="$tools bc"
for tool in $tools; do
	command -v "$tool" >/dev/null || die "$tool not found; run: apt-get install -y $deps"
done

mkdir -p "$cache_root"
work=$(mktemp -d "$cache_root/build.XXXXXX")
trap 'rm -rf "$work"' EXIT

start=$(date +%s)
tree=$source
if [ ! -d "$source" ]; then
	log "extracting $source ($identity)"
	mkdir "$work/src"
	tar -C "$work/src" -xf "$source"
	tops=("$work"/src/*)
	if [ ${#tops[@]} != 1 ] || [ ! -d "${tops[0]}" ]; then
		die "$source does not hold one top-level directory"
	fi
	tree=${tops[0]}
fi
build="$work/build"
mkdir "$build"
kmake() { make -s -C "$tree" O="$build" ARCH=x86_64 "$@"; }

log "make defconfig"
kmake defconfig >/dev/null
grep -q '^CONFIG_' "$build/.config" 2>/dev/null || die "make defconfig in $tree wrote no .config"
log "merging ${fragments[*]}"
"$tree/scripts/kconfig/merge_config.sh" -m -O "$build" "$build/.config" "${fragments[@]}" >"$work/merge.log" 2>&1 ||
	{ cat "$work/merge.log" >&2; die "merge_config.sh failed"; }
log "make olddefconfig"
kmake olddefconfig >/dev/null

# Every option as the fragments want it (a later fragment wins), checked
# against the final .config.
missing=$(awk '
	FNR == 1 { file = FILENAME }
	/^CONFIG_[A-Za-z0-9_]+=/ { sym = $0; sub(/=.*/, "", sym); want[sym] = $0; from[sym] = file; order[sym] = ++n; next }
	/^# CONFIG_[A-Za-z0-9_]+ is not set$/ { sym = $2; want[sym] = $0; from[sym] = file; order[sym] = ++n; next }
	END {
		while ((getline line < cfg) > 0) {
			if (line ~ /^CONFIG_/) { s = line; sub(/=.*/, "", s); have[s] = line }
			else if (line ~ /^# CONFIG_[A-Za-z0-9_]+ is not set$/) { split(line, p, " "); have[p[2]] = line }
		}
		for (s in want) {
			w = want[s]
			present = (s in have)
			got = present ? have[s] : "nothing (no such option in this kernel, or a dependency hides it)"
			if (w ~ /^# /) { ok = !present || got ~ /is not set$/ || got ~ /=n$/ } else { ok = (got == w) }
			if (!ok) {
				printf "%d\t  %s (from %s; the merged .config has: %s)\n", order[s], w, from[s], got
			}
		}
	}' cfg="$build/.config" "${fragments[@]}" | sort -n | cut -f2-)
if [ -n "$missing" ]; then
	printf 'build-kernel: these options did not survive make olddefconfig (a dependency is off, or this kernel has no such option):\n%s\n' "$missing" >&2
	exit 1
fi
log "all $(awk '/^(CONFIG_|# CONFIG_)/ { n++ } END { print n }' "${fragments[@]}") fragment lines are in the merged .config"

mkdir -p "$out_dir"
install -m 0644 "$build/.config" "$out_dir/config.tmp"
mv "$out_dir/config.tmp" "$out_dir/config"
printf '%s\n' "$identity" >"$out_dir/source"
for f in "${fragments[@]}"; do printf '%s\n' "$f"; done >"$out_dir/fragments"
if [ "$config_only" = 1 ]; then
	log "merged config in $(($(date +%s) - start))s"
	echo "$out_dir/config"
	exit 0
fi

log "make vmlinux with $(nproc) jobs"
kmake -j"$(nproc)" vmlinux
install -m 0644 "$build/vmlinux" "$out.tmp"
mv "$out.tmp" "$out"
log "built $out in $(($(date +%s) - start))s"
echo "$out"
