#!/usr/bin/env bash
# make-rootfs-void.sh: build banger's Void Linux guest image (x86_64-glibc)
# as an ext4 file, without mounting anything.
#
# `banger image build void` runs this as root (directly when it is root,
# else with `sudo -n`) and then registers the result. It can also be run by
# hand:
#
#   sudo images/void/make-rootfs-void.sh --tarball void-x86_64-ROOTFS.tar.xz \
#     --packages images/packages.void --agent build/bin/banger-agent \
#     --pubkey ~/.local/share/banger/runtime/id_ed25519.pub --output void.ext4
#
# Stages: unpack the Void ROOTFS tarball into a staging directory, install
# the package list with the static xbps-install, add the agent as a runit
# service, harden sshd (key-only root login, the bundle's public key, no
# baked host keys: Void's sshd service makes them on first boot), make bash
# root's login shell with ~/.bashrc and ~/.profile, mount the work disk
# /dev/vdb on /root, then `mkfs.ext4 -d` the tree into the output file.
set -euo pipefail

prog=make-rootfs-void
repo=https://repo-default.voidlinux.org/current
size=4G
tarball="" packages="" agent="" pubkey="" output=""
xbps="${XBPS_INSTALL:-}"

die() {
	echo "$prog: $*" >&2
	exit 1
}

usage() {
	cat <<EOF
usage: $0 --tarball ROOTFS.tar[.xz|.gz] --packages FILE --agent BIN --pubkey FILE --output IMAGE
          [--size SIZE] [--repo URL] [--xbps-install PATH]
The static xbps-install comes from --xbps-install, else \$XBPS_INSTALL, else
xbps-install.static on PATH.
EOF
	exit 2
}

while [ $# -gt 0 ]; do
	case "$1" in
	--tarball) tarball="${2:-}" ;;
	--packages) packages="${2:-}" ;;
	--agent) agent="${2:-}" ;;
	--pubkey) pubkey="${2:-}" ;;
	--output) output="${2:-}" ;;
	--size) size="${2:-}" ;;
	--repo) repo="${2:-}" ;;
	--xbps-install) xbps="${2:-}" ;;
	-h | --help) usage ;;
	*) echo "$prog: unknown argument $1" >&2 && usage ;;
	esac
	[ $# -ge 2 ] || usage
	shift 2
done

for v in "$tarball" "$packages" "$agent" "$pubkey" "$output"; do
	[ -n "$v" ] || usage
done
[ "$(id -u)" -eq 0 ] || die "must run as root: the tree keeps root ownership and xbps runs package scripts in it (run it with sudo)"
for f in "$tarball" "$packages" "$agent" "$pubkey"; do
	[ -r "$f" ] || die "cannot read $f"
done
for tool in tar mkfs.ext4 truncate; do
	command -v "$tool" >/dev/null || die "$tool is missing (Debian: apt-get install tar e2fsprogs coreutils)"
done
if [ -z "$xbps" ]; then
	xbps="$(command -v xbps-install.static || true)"
fi
if [ -z "$xbps" ] || [ ! -x "$xbps" ]; then
	die "the static xbps-install is missing: download https://repo-default.voidlinux.org/static/xbps-static-latest.x86_64-musl.tar.xz, unpack it and put usr/bin/xbps-install.static on PATH, or set XBPS_INSTALL to its path"
fi

mapfile -t pkgs < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$packages" | grep -v '^$' || true)
[ "${#pkgs[@]}" -gt 0 ] || die "$packages lists no packages"

outdir="$(dirname "$output")"
staging="$(mktemp -d "$outdir/.void-rootfs.XXXXXX")"
trap 'rm -rf "$staging" "$output.partial"' EXIT
r="$staging"

echo "==> unpacking $(basename "$tarball")"
tar -xpf "$tarball" -C "$r" --numeric-owner
[ -d "$r/etc" ] || die "$tarball does not look like a Void ROOTFS tarball (no etc/ at its top)"

echo "==> installing ${#pkgs[@]} packages from $packages"
XBPS_ARCH=x86_64 "$xbps" -S -y -r "$r" -R "$repo" "${pkgs[@]}"
rm -rf "$r/var/cache/xbps"

echo "==> installing the agent as a runit service"
install -D -m 0755 "$agent" "$r/usr/local/bin/banger-agent"
install -d -m 0755 "$r/etc/sv/banger-agent" "$r/etc/runit/runsvdir/default"
cat >"$r/etc/sv/banger-agent/run" <<'EOF'
#!/bin/sh
exec /usr/local/bin/banger-agent 2>&1
EOF
chmod 0755 "$r/etc/sv/banger-agent/run"
for svc in banger-agent sshd agetty-ttyS0; do
	ln -sfn "/etc/sv/$svc" "$r/etc/runit/runsvdir/default/$svc"
done

echo "==> hardening sshd"
install -d -m 0755 "$r/etc/ssh"
cfg="$r/etc/ssh/sshd_config"
touch "$cfg"
# sshd takes the first value it reads, so banger's settings go first and
# any other line setting the same keys goes.
keys='PermitRootLogin|PasswordAuthentication|KbdInteractiveAuthentication|ChallengeResponseAuthentication|PermitEmptyPasswords|PubkeyAuthentication'
{
	echo "# banger: key-only root login (images/void/make-rootfs-void.sh)"
	echo "PermitRootLogin prohibit-password"
	echo "PasswordAuthentication no"
	echo "KbdInteractiveAuthentication no"
	echo "PermitEmptyPasswords no"
	echo "PubkeyAuthentication yes"
	grep -Ev "^[[:space:]]*($keys)[[:space:]]" "$cfg" || true
} >"$cfg.new"
mv "$cfg.new" "$cfg"
chmod 0644 "$cfg"
rm -f "$r"/etc/ssh/ssh_host_*
install -d -m 0700 "$r/root" "$r/root/.ssh"
install -m 0600 "$pubkey" "$r/root/.ssh/authorized_keys"

echo "==> root environment, work disk, network"
[ -f "$r/etc/passwd" ] || die "$tarball has no etc/passwd"
sed -i -E 's#^(root:([^:]*:){5})[^:]*$#\1/bin/bash#' "$r/etc/passwd"
grep -qx /bin/bash "$r/etc/shells" 2>/dev/null || echo /bin/bash >>"$r/etc/shells"
# Root gets the skeleton's dotfiles (Void: .bashrc, .bash_profile, ...).
for f in "$r"/etc/skel/.[!.]*; do
	[ -e "$f" ] || continue
	[ -e "$r/root/${f##*/}" ] || cp -a "$f" "$r/root/"
done
if [ ! -f "$r/root/.bashrc" ]; then
	cat >"$r/root/.bashrc" <<'EOF'
# ~/.bashrc
[[ $- != *i* ]] && return
PS1='[\u@\h \W]\$ '
EOF
fi
if [ ! -f "$r/root/.profile" ]; then
	cat >"$r/root/.profile" <<'EOF'
# ~/.profile: login shells read it when there is no ~/.bash_profile
if [ -n "$BASH_VERSION" ] && [ -f "$HOME/.bashrc" ]; then
	. "$HOME/.bashrc"
fi
EOF
fi
chown -R 0:0 "$r/root"
touch "$r/etc/fstab"
grep -Eq '^/dev/vdb[[:space:]]' "$r/etc/fstab" || echo "/dev/vdb /root ext4 defaults,nofail 0 2" >>"$r/etc/fstab"
# The kernel's ip= argument configures eth0 and writes the resolver here.
ln -sfn /proc/net/pnp "$r/etc/resolv.conf"
# A powered-off guest leaves Firecracker running; a reboot (reboot=k) ends it.
install -d -m 0755 "$r/usr/local/sbin"
for cmd in poweroff halt; do
	printf '%s\n' '#!/bin/sh' '# banger: Firecracker ends only on reboot (reboot=k)' 'exec /usr/bin/reboot "$@"' >"$r/usr/local/sbin/$cmd"
	chmod 0755 "$r/usr/local/sbin/$cmd"
done

echo "==> writing $(basename "$output") ($size)"
rm -f "$output.partial"
truncate -s "$size" "$output.partial"
mkfs.ext4 -q -F -L banger-void -d "$r" "$output.partial"
chmod 0644 "$output.partial"
mv "$output.partial" "$output"
echo "==> done: $output"
