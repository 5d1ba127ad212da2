#!/usr/bin/env bash
# One command from a fresh checkout to a shell in a VM: build and install,
# the privileged helper, the runtime bundle, the default Debian image, then
# create VM "dev" and open a shell in it. It stops at the first missing
# piece and says what is missing and how to get it.
#
# Offline, or on hosts that need other artifacts than the pinned ones (PVM):
#   make setup FIRECRACKER_TGZ=/path/firecracker-v1.16.1-x86_64.tgz
#   make setup GUEST_KERNEL=/path/vmlinux
# install those local files instead of downloading (FIRECRACKER_TGZ must
# match the manifest's pinned sha256; GUEST_KERNEL is taken as given). When
# the kernel cannot be downloaded and GUEST_KERNEL is not given, setup builds
# one (`make kernel`) and installs that.
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

# local_manifest OUT [TABLE PATH SUM]...: the repo manifest with each TABLE
# taken from PATH (and SUM, when not empty) instead of its url.
local_manifest() {
	local out=$1 IFS=$'\t'
	shift
	awk -v spec="$*" '
		BEGIN { n = split(spec, s, "\t"); for (i = 1; i + 2 <= n; i += 3) { p["[" s[i] "]"] = s[i+1]; h["[" s[i] "]"] = s[i+2] } }
		/^\[/ { t = $0 }
		(t in p) && $1 == "url" { printf "path = \"%s\"\n", p[t]; next }
		(t in p) && $1 == "sha256" && h[t] != "-" { printf "sha256 = \"%s\"\n", h[t]; next }
		{ print }
	' "$manifest" >"$out"
}

say "building and installing banger, bangerd and banger-agent into $prefix/bin"
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
	kernel="${GUEST_KERNEL:-}"
	fc_url=$(toml_get firecracker url)
	fc_sum=$(toml_get firecracker sha256)
	if [ "$pvm" = 1 ] && { [ -z "$fc_tgz" ] || [ -z "$kernel" ]; }; then
		stop "This host's /dev/kvm comes from the PVM module (/sys/module/kvm_pvm; the CPU has
no vmx/svm): the pinned Firecracker and kernel cannot boot guests here (the
guest dies with KVM_EXIT_INTERNAL_ERROR). Guests need a PVM guest kernel and a
PVM-capable Firecracker build. Build the kernel from a PVM-patched tree with
  make kernel KERNEL_SRC=/path/to/pvm-linux KERNEL_FRAGMENTS=scripts/kernel/pvm-guest.config
then give both to setup (the tarball must hold the member the manifest names,
or install by hand with \`banger runtime install --manifest FILE\`):
  make setup FIRECRACKER_TGZ=/path/to/firecracker.tgz GUEST_KERNEL=/path/to/vmlinux"
	fi
	for f in "$fc_tgz" "$kernel"; do
		[ -z "$f" ] || [ -r "$f" ] || stop "$f not found (from FIRECRACKER_TGZ or GUEST_KERNEL)"
	done
	spec=()
	[ -z "$fc_tgz" ] || spec+=(firecracker "$(realpath "$fc_tgz")" -)
	[ -z "$kernel" ] || spec+=(kernel "$(realpath "$kernel")" "$(sha256sum "$kernel" | cut -c1-64)")
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
		say "the guest kernel cannot be downloaded; building it from Debian's linux-source-6.1 instead (make kernel: about 20 minutes on 8 cores, cached afterwards)"
		kernel=$(make -s kernel | tail -n 1) || stop "make kernel failed (see above); or give a kernel: make setup GUEST_KERNEL=/path/to/vmlinux"
		spec+=(kernel "$kernel" "$(sha256sum "$kernel" | cut -c1-64)")
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
