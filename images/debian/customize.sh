#!/usr/bin/env bash
# Turn a debootstrapped Debian bookworm tree into banger's default guest.
# Runs as root chrooted in the staging tree (see enter-chroot.sh); the build
# copies its inputs into /tmp/banger-build first:
#   packages.apt      the package list (comments and blank lines ignored)
#   banger-agent      the guest agent binary
#   authorized_keys   the runtime bundle's public key
#
# What the guest gets (DESIGN.md §5):
#   - the packages of packages.apt, root's login shell bash, /root/.bashrc and
#     /root/.profile from /etc/skel;
#   - sshd key-only (drop-in sshd_config.d/banger.conf), the bundle key in
#     /root/.ssh/authorized_keys, no baked host keys: the oneshot
#     banger-ssh-hostkeys.service runs `ssh-keygen -A` before ssh.service;
#   - the agent at /usr/local/bin/banger-agent, banger-agent.service enabled;
#   - /dev/vdb on /root through fstab (nofail);
#   - networking from the kernel's ip= argument only (no DHCP client,
#     systemd-networkd disabled), /etc/resolv.conf -> /proc/net/pnp;
#   - poweroff mapped to reboot: poweroff.target and halt.target in
#     /etc/systemd/system are symlinks to reboot.target, so `poweroff` reboots
#     and, with reboot=k, ends the Firecracker (or QEMU -no-reboot) process;
#   - a getty on the serial console ttyS0;
#   - kernel modules the build copied into /lib/modules indexed, with the
#     vsock transport loaded at boot when it is a module.
set -euo pipefail

in=/tmp/banger-build
log() { printf '[customize] %s\n' "$*"; }

for f in packages.apt banger-agent authorized_keys; do
	[ -s "$in/$f" ] || { echo "customize: missing input $in/$f" >&2; exit 1; }
done

export DEBIAN_FRONTEND=noninteractive
# No service starts inside the chroot while packages install.
printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
chmod 0755 /usr/sbin/policy-rc.d

log "apt sources"
mirror=$(awk '$1 == "deb" { print $2; exit }' /etc/apt/sources.list)
[ -n "$mirror" ] || { echo "customize: no mirror in /etc/apt/sources.list" >&2; exit 1; }
printf 'deb %s bookworm main\ndeb %s bookworm-updates main\n' "$mirror" "$mirror" >/etc/apt/sources.list
cat >/etc/apt/apt.conf.d/90banger <<'CONF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Retries "3";
CONF

mapfile -t pkgs < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$in/packages.apt" | grep -v '^$')
[ "${#pkgs[@]}" -gt 0 ] || { echo "customize: packages.apt lists no packages" >&2; exit 1; }
log "installing ${#pkgs[@]} packages"
apt-get update -q
apt-get install -y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${pkgs[@]}"
apt-get clean
rm -rf /var/lib/apt/lists/*

log "locale"
if [ -f /etc/locale.gen ]; then
	sed -i 's/^# *\(en_US.UTF-8 UTF-8\)/\1/' /etc/locale.gen
	locale-gen >/dev/null
fi
printf 'LANG=C.UTF-8\n' >/etc/default/locale

log "root environment"
usermod -s /bin/bash root
install -d -m 0700 /root
install -m 0644 /etc/skel/.bashrc /root/.bashrc
install -m 0644 /etc/skel/.profile /root/.profile
install -d -m 0700 /root/.ssh
install -m 0600 "$in/authorized_keys" /root/.ssh/authorized_keys
chown -R root:root /root

log "sshd"
install -d -m 0755 /etc/ssh/sshd_config.d
cat >/etc/ssh/sshd_config.d/banger.conf <<'CONF'
# banger: key-only root login with the runtime bundle's key.
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
UseDNS no
CONF
rm -f /etc/ssh/ssh_host_*
cat >/etc/systemd/system/banger-ssh-hostkeys.service <<'UNIT'
[Unit]
Description=Generate SSH host keys on first boot (banger)
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A
RemainAfterExit=yes

[Install]
WantedBy=ssh.service
UNIT
install -d /etc/systemd/system/ssh.service.wants
ln -sf /etc/systemd/system/banger-ssh-hostkeys.service /etc/systemd/system/ssh.service.wants/banger-ssh-hostkeys.service
install -d /etc/systemd/system/multi-user.target.wants
ln -sf /lib/systemd/system/ssh.service /etc/systemd/system/multi-user.target.wants/ssh.service

log "agent"
install -m 0755 "$in/banger-agent" /usr/local/bin/banger-agent
cat >/etc/systemd/system/banger-agent.service <<'UNIT'
[Unit]
Description=banger guest agent (HTTP over vsock)
After=local-fs.target

[Service]
ExecStart=/usr/local/bin/banger-agent
Restart=always
RestartSec=1

[Install]
WantedBy=multi-user.target
UNIT
ln -sf /etc/systemd/system/banger-agent.service /etc/systemd/system/multi-user.target.wants/banger-agent.service

log "fstab"
cat >/etc/fstab <<'FSTAB'
# banger guest: the root disk is /dev/vda, the VM's work disk /dev/vdb.
/dev/vda / ext4 defaults 0 0
/dev/vdb /root ext4 defaults,nofail 0 2
FSTAB

log "network"
# The kernel configures eth0 from ip=; nothing may touch it afterwards.
for unit in systemd-networkd.service systemd-networkd.socket systemd-networkd-wait-online.service systemd-resolved.service; do
	if [ -e "/lib/systemd/system/$unit" ]; then
		systemctl disable "$unit" >/dev/null 2>&1 || true
	fi
done
ln -sfn /proc/net/pnp /etc/resolv.conf
rm -f /etc/hostname
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >/etc/hosts

log "poweroff -> reboot"
ln -sfn /lib/systemd/system/reboot.target /etc/systemd/system/poweroff.target
ln -sfn /lib/systemd/system/reboot.target /etc/systemd/system/halt.target

log "serial console"
install -d /etc/systemd/system/getty.target.wants
ln -sf /lib/systemd/system/serial-getty@.service /etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service

log "kernel modules"
if [ -d /lib/modules ]; then
	for dir in /lib/modules/*/; do
		[ -d "$dir" ] || continue
		ver=$(basename "$dir")
		depmod -a "$ver"
		if find "$dir" -name 'vmw_vsock_virtio_transport.ko*' | grep -q .; then
			printf 'vmw_vsock_virtio_transport\n' >/etc/modules-load.d/banger.conf
		fi
	done
fi

log "first boot"
# Each VM makes its own machine id.
: >/etc/machine-id
rm -f /var/lib/dbus/machine-id
rm -f /usr/sbin/policy-rc.d
rm -rf "$in" /var/cache/apt/*.bin /var/log/apt/* /var/log/dpkg.log
log "done"
