#!/usr/bin/env bash
# One command from a fresh checkout to a shell in a VM: build and install,
# the privileged helper, the runtime bundle, the default Debian image, then
# create VM "dev" and open a shell in it. It stops at the first missing
# piece and says what is missing and how to get it.
#
# Offline, or on hosts that need other artifacts than the pinned ones (PVM):
#   make setup FIRECRACKER_TGZ=/path/firecracker-v1.16.1-x86_64.tgz
#   make setup FIRECRACKER_BIN=/path/firecracker GUEST_KERNEL=/path/vmlinux
# install those local files instead of downloading: FIRECRACKER_TGZ is the
# pinned release tarball (checked against the manifest's sha256);
# FIRECRACKER_BIN (a binary, e.g. a PVM-capable build) and GUEST_KERNEL are
# taken as given. When the kernel cannot be downloaded and GUEST_KERNEL is
# not given, setup builds one (`make kernel`) and installs that.
set -euo pipefail
cd "$(dirname "$0")/.."
prefix="${PREFIX:-$HOME/.local}"
user_path="$PATH"
export PATH="$prefix/bin:/usr/local/go/bin:$PATH"
manifest="$PWD/runtime-bundle.toml"

say() { printf '==> %s\n' "$*"; }
stop() {
	printf '\n%s\n' "$*" >&2
	exit 1
}

# toml_get TABLE KEY: a string value of the repo manifest.
toml_get() {
	awk -v t="[$1]" -v k="$2" '
		/^\[/ { in_t = ($0 == t); next }
		in_t && $1 == k && $2 == "=" { v = $0; sub(/^[^=]*= *"/, "", v); sub(/" *$/, "", v); print v; exit }
	' "$manifest"
}

# local_manifest OUT [TABLE PATH SUM MEMBER]...: the repo manifest with each
# TABLE taken from the local file PATH instead of its url; SUM and MEMBER
# replace the manifest's, "-" keeps it, "!" drops the line.
local_manifest() {
	local out=$1 IFS=$'\t'
	shift
	awk -v spec="$*" '
		BEGIN {
			n = split(spec, s, "\t")
			for (i = 1; i + 3 <= n; i += 4) { t = "[" s[i] "]"; p[t] = s[i+1]; v["sha256", t] = s[i+2]; v["member", t] = s[i+3] }
		}
		/^\[/ { t = $0 }
		(t in p) && $1 == "url" { printf "path = \"%s\"\n", p[t]; next }
		(t in p) && ($1 == "sha256" || $1 == "member") {
			r = v[$1, t]
			if (r == "!") next
			if (r != "-") { printf "%s = \"%s\"\n", $1, r; next }
		}
		{ print }
	' "$manifest" >"$out"
}

sum() { sha256sum "$1" | cut -c1-64; }

say "building and installing banger, banger-full, bangerd and banger-agent into $prefix/bin"
make -s install PREFIX="$prefix"
case ":$user_path:" in
*":$prefix/bin:"* | *":$prefix/bin/:"*) ;;
*)
	# shellcheck disable=SC2016 # the line is printed for the user's shell to expand
	if [ "$prefix" = "$HOME/.local" ]; then line='export PATH="$HOME/.local/bin:$PATH"'; else line="export PATH=\"$prefix/bin:\$PATH\""; fi
	say "$prefix/bin is not on your PATH: the banger commands below and in the README need it. Add this line to ~/.bashrc (or your shell's startup file) and run it in your shell:"
	printf '      %s\n' "$line"
	;;
esac

if [ ! -e /dev/kvm ] || [ ! -r /dev/kvm ] || [ ! -w /dev/kvm ]; then
	stop "banger cannot run VMs on this host: Firecracker needs a read-write /dev/kvm,
and this host has none (no KVM: not a Linux host with VT-x/AMD-V, or nested
virtualisation is off), or your user may not use it (join the kvm group or
add an ACL). \`banger doctor\` checks this and everything else, with a fix for
each problem. Run it, fix what it marks FAIL, then run this again."
fi

pvm=0
if [ -d /sys/module/kvm_pvm ] && ! grep -qwE 'vmx|svm' /proc/cpuinfo; then
	pvm=1
fi

if [ "$(id -u)" -ne 0 ] && ! sudo -n -l /usr/local/libexec/banger/banger internal ensure-state-dirs >/dev/null 2>&1; then
	say "installing the privileged helper (asks for your sudo password once)"
	sudo make -s install-helper
fi

if ! banger runtime show >/dev/null 2>&1; then
	fc_tgz="${FIRECRACKER_TGZ:-}"
	fc_bin="${FIRECRACKER_BIN:-}"
	kernel="${GUEST_KERNEL:-}"
	fc_url=$(toml_get firecracker url)
	fc_sum=$(toml_get firecracker sha256)
	if [ "$pvm" = 1 ] && { [ -z "$fc_bin" ] || [ -z "$kernel" ]; }; then
		stop "This host's /dev/kvm comes from the PVM module (/sys/module/kvm_pvm; the CPU
has no vmx/svm), where the pinned Firecracker and kernel cannot boot guests
(the guest dies with KVM_EXIT_INTERNAL_ERROR). Guests here need a PVM guest
kernel and a PVM-capable Firecracker build. Build the kernel from a
PVM-patched kernel tree:
  make kernel KERNEL_SRC=/path/to/pvm-linux KERNEL_FRAGMENTS=scripts/kernel/pvm-guest.config
then run setup with both:
  make setup FIRECRACKER_BIN=/path/to/firecracker GUEST_KERNEL=/path/to/vmlinux"
	fi
	[ -z "$fc_tgz" ] || [ -z "$fc_bin" ] || stop "give FIRECRACKER_TGZ or FIRECRACKER_BIN, not both"
	for f in "$fc_tgz" "$fc_bin" "$kernel"; do
		[ -z "$f" ] || [ -r "$f" ] || stop "$f not found (from FIRECRACKER_TGZ, FIRECRACKER_BIN or GUEST_KERNEL)"
	done
	spec=()
	[ -z "$fc_tgz" ] || spec+=(firecracker "$(realpath "$fc_tgz")" - -)
	[ -z "$fc_bin" ] || spec+=(firecracker "$(realpath "$fc_bin")" "$(sum "$fc_bin")" "!")
	[ -z "$kernel" ] || spec+=(kernel "$(realpath "$kernel")" "$(sum "$kernel")" -)
	use=$manifest
	local_toml="${XDG_DATA_HOME:-$HOME/.local/share}/banger/runtime-bundle.local.toml"
	if [ ${#spec[@]} -gt 0 ]; then
		mkdir -p "$(dirname "$local_toml")"
		local_manifest "$local_toml" "${spec[@]}"
		use=$local_toml
	fi
	say "installing the runtime bundle (Firecracker, guest kernel, agent, SSH key) from $use"
	errlog=$(mktemp)
	trap 'rm -f "$errlog"' EXIT
	# stderr to the terminal and to errlog; the exit status is banger's.
	if ! { banger runtime install --manifest "$use" 2>&1 1>&3 | tee "$errlog" >&2; } 3>&1; then
		if grep -q '^banger: cannot fetch firecracker ' "$errlog"; then
			stop "Firecracker cannot be downloaded from this machine (the line above says why).
On a machine with internet, download
  $fc_url
(sha256 $fc_sum), copy it here and run:
  make setup FIRECRACKER_TGZ=/path/to/$(basename "$fc_url")
If the kernel cannot be downloaded either, setup then builds one (make kernel),
or takes GUEST_KERNEL=/path/to/vmlinux."
		fi
		if ! grep -q '^banger: cannot fetch kernel ' "$errlog" || [ -n "$kernel" ]; then
			stop "banger runtime install failed (see above)."
		fi
		say "the guest kernel cannot be downloaded; building it from Debian's linux-source-6.1 instead (make kernel: about 12 minutes on 2 cores, cached afterwards)"
		kernel=$(make -s kernel | tail -n 1) || stop "make kernel failed (see above); or give a kernel: make setup GUEST_KERNEL=/path/to/vmlinux"
		spec+=(kernel "$kernel" "$(sum "$kernel")" -)
		mkdir -p "$(dirname "$local_toml")"
		local_manifest "$local_toml" "${spec[@]}"
		say "installing the runtime bundle with the kernel built here ($kernel) through $local_toml"
		banger runtime install --manifest "$local_toml"
	fi
fi

say "checking this host (banger doctor)"
if ! banger doctor; then
	stop "Fix the checks marked FAIL above (each has a fix line), then run this again."
fi

if ! banger image list --json | grep -q '"name": "debian"'; then
	say "building the default Debian image (a few minutes)"
	banger image build debian
fi

name="dev"
if banger vm show "$name" >/dev/null 2>&1; then
	banger vm start "$name"
else
	say "creating VM $name"
	banger vm create "$name"
fi
say "opening a shell in $name (exit to leave; the VM keeps running)"
exec banger vm ssh "$name"
