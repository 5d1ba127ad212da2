#!/usr/bin/env bash
# One command from a fresh checkout to a shell in a VM: build and install,
# the privileged helper, the runtime bundle, the default Debian image, then
# create VM "dev" and open a shell in it. It stops at the first missing
# piece and says what to do about it.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="${PREFIX:-$HOME/.local}/bin:/usr/local/go/bin:$PATH"

say() { printf '==> %s\n' "$*"; }

say "building and installing banger, bangerd and banger-agent into ${PREFIX:-$HOME/.local}/bin"
make -s install

if [ ! -e /dev/kvm ] || [ ! -r /dev/kvm ] || [ ! -w /dev/kvm ]; then
	cat >&2 <<'MSG'

banger cannot run VMs on this host: Firecracker needs a read-write /dev/kvm,
and this host has none (no KVM: not a Linux host with VT-x/AMD-V, or nested
virtualisation is off), or your user may not use it (join the kvm group or
add an ACL). `banger doctor` checks this and everything else, with a fix for
each problem. Run it, fix what it marks FAIL, then run this again.
MSG
	exit 1
fi

if [ "$(id -u)" -ne 0 ] && ! sudo -n -l /usr/local/libexec/banger/banger internal ensure-state-dirs >/dev/null 2>&1; then
	say "installing the privileged helper (asks for your sudo password once)"
	sudo make -s install-helper
fi

if ! banger runtime show >/dev/null 2>&1; then
	say "installing the runtime bundle (Firecracker, guest kernel, agent, SSH key)"
	banger runtime install --manifest runtime-bundle.toml
fi

say "checking this host (banger doctor)"
if ! banger doctor; then
	echo "Fix the checks marked FAIL above (each has a fix line), then run this again." >&2
	exit 1
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
