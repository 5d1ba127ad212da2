#!/usr/bin/env bash
# One command from a fresh checkout to a shell in a VM: build, install,
# check the host, then create a VM and open a shell in it. It stops at the
# first missing piece with what to do about it.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="${PREFIX:-$HOME/.local}/bin:/usr/local/go/bin:$PATH"

say() { printf '==> %s\n' "$*"; }

say "building and installing banger, bangerd and banger-agent into ${PREFIX:-$HOME/.local}/bin"
make -s install

if [ "$(id -u)" -ne 0 ] && ! sudo -n -l /usr/local/libexec/banger/banger internal ensure-state-dirs >/dev/null 2>&1; then
  say "installing the privileged helper (asks for your sudo password once)"
  sudo make -s install-helper
fi

say "checking this host (banger doctor)"
if ! banger doctor; then
  cat >&2 <<'MSG'

banger cannot run VMs on this host yet: the checks marked FAIL above say what
is missing and how to fix each one. The usual one is KVM: Firecracker needs a
read-write /dev/kvm (a Linux host with VT-x/AMD-V, or nested virtualisation
enabled). Re-run `banger doctor` after fixing it, then run this again.
MSG
  exit 1
fi

if ! banger image list --json | grep -q '"name": "debian"'; then
  cat >&2 <<'MSG'
No "debian" image is registered. Register an ext4 root filesystem with
  banger image register debian --rootfs PATH [--kernel PATH]
and run this again.
MSG
  exit 1
fi

name="dev"
if ! banger vm show "$name" >/dev/null 2>&1; then
  say "creating VM $name"
  banger vm create "$name"
else
  banger vm start "$name"
fi
say "opening a shell in $name (exit to leave; the VM keeps running)"
exec banger vm ssh "$name"
