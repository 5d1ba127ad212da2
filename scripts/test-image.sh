#!/usr/bin/env bash
# The real boot lane (DESIGN.md §6, image tier): build the default Debian
# image with banger's own builder (`banger image build debian` against a
# daemon in a temporary state directory), boot it under QEMU software
# emulation (-machine microvm -accel tcg) with the kernel line of DESIGN.md
# §5, and check it over real SSH with the bundle key.
#
# Kernel: the cached guest kernel from scripts/build-kernel.sh (make kernel)
# when present, else Debian's linux-image-cloud-amd64 (downloaded with
# apt-get download and unpacked, never installed) with a small initramfs
# that loads the virtio modules.
#
# Needs root and: qemu-system-x86 debootstrap e2fsprogs openssh-client
# iproute2 jq (and, for the fallback kernel, busybox-static is downloaded the
# same way). Installs nothing. Run after `make build`.
#
# Environment: BANGER_TEST_IMAGE_KEEP=1 keeps the work directory;
# BANGER_TEST_IMAGE_ROOTFS + BANGER_TEST_IMAGE_KEY boot an image built
# earlier instead of building one (for iterating on the boot checks);
# BANGER_TEST_KERNEL=path/to/vmlinux forces a kernel (no initrd).
# Commands in single quotes run in the guest, where they expand.
# shellcheck disable=SC2016
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin="$repo/build/bin"
boot_timeout=${BANGER_BOOT_TIMEOUT:-300}

log() { printf '[test-image %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf '[test-image] FATAL: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (debootstrap, network namespace, taps)"
for tool in qemu-system-x86_64 debootstrap mkfs.ext4 debugfs ssh ip jq; do
	command -v "$tool" >/dev/null || die "$tool not found; apt-get install -y qemu-system-x86 debootstrap e2fsprogs openssh-client iproute2 jq"
done
for b in banger bangerd banger-agent; do
	[ -x "$bin/$b" ] || die "$bin/$b missing; run make build first"
done

work=$(mktemp -d /var/tmp/banger-test-image.XXXXXX)
ns="bgti-$$"
qemu_pid=""
failures=0

cleanup() {
	local rc=$?
	set +e
	if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
		kill "$qemu_pid" 2>/dev/null
		sleep 1
		kill -9 "$qemu_pid" 2>/dev/null
	fi
	if [ -S "$work/run/banger/bangerd.sock" ]; then
		env "${banger_env[@]}" "$bin/banger" daemon stop >/dev/null 2>&1
		sleep 1
	fi
	ip netns del "$ns" 2>/dev/null
	if [ "${BANGER_TEST_IMAGE_KEEP:-}" = 1 ]; then
		log "kept $work"
	else
		rm -rf "$work"
	fi
	exit "$rc"
}
banger_env=()
trap cleanup EXIT INT TERM

# cloud_kernel DIR: Debian's cloud kernel and an initramfs (busybox, the
# kernel's modules, an init that loads the virtio and ext4 modules, applies
# the ip= argument and switches to /dev/vda), from downloaded packages.
cloud_kernel() {
	local dir=$1 pkg ver d
	mkdir -p "$dir/debs" "$dir/x"
	pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
	[ -n "$pkg" ] || die "cannot resolve linux-image-cloud-amd64 (run apt-get update)"
	(cd "$dir/debs" && apt-get download -q -o APT::Sandbox::User=root "$pkg" busybox-static >/dev/null) || die "apt-get download $pkg busybox-static failed"
	for d in "$dir"/debs/*.deb; do dpkg-deb -x "$d" "$dir/x"; done
	ver=${pkg#linux-image-}
	cp "$dir/x/boot/vmlinuz-$ver" "$dir/vmlinuz"
	local ird="$dir/initrd"
	mkdir -p "$ird/bin" "$ird/dev" "$ird/proc" "$ird/sys" "$ird/newroot" "$ird/lib/modules"
	cp "$dir/x/bin/busybox" "$ird/bin/busybox"
	cp -a "$dir/x/lib/modules/$ver" "$ird/lib/modules/"
	depmod -b "$ird" "$ver"
	cat >"$ird/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in virtio_mmio virtio_blk virtio_net ext4 vmw_vsock_virtio_transport; do modprobe "$m" 2>/dev/null; done
sleep 1
# ip=<guest>::<gw>:<mask>:<name>:<dev>:off:<dns>
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	ip=*)
		set -- $(echo "${arg#ip=}" | tr ':' ' ')
		ifconfig "$5" "$1" netmask "$3" up
		route add default gw "$2"
		hostname "$4"
		;;
	esac
done
mount -o rw /dev/vda /newroot || { echo "initrd: cannot mount /dev/vda"; sleep 5; reboot -f; }
mount --move /dev /newroot/dev
umount /proc /sys
exec switch_root /newroot /sbin/init
INIT
	chmod 0755 "$ird/init"
	(cd "$ird" && find . | cpio -o -H newc --quiet | gzip -1) >"$dir/initrd.img"
}

check() { # check NAME COMMAND...: run, print PASS/FAIL
	local name=$1
	shift
	local out
	if out=$("$@" 2>&1); then
		printf 'PASS  %s\n' "$name"
	else
		printf 'FAIL  %s\n' "$name"
		printf '      %s\n' "$out" | tail -n 5
		failures=$((failures + 1))
	fi
}

# --- build the image with banger -------------------------------------------
mkdir -p "$work/state" "$work/run" "$work/runtime"
chmod 0700 "$work/run"
cat >"$work/config.toml" <<EOF
runtime_dir = "$work/runtime"
vsock_agent_path = "$bin/banger-agent"
ssh_key_path = "$work/runtime/id_ed25519"
dns_listen_addr = "127.0.0.1:$((20000 + $$ % 20000))"
EOF
banger_env=(BANGER_STATE_DIR="$work/state" BANGER_CONFIG="$work/config.toml" XDG_RUNTIME_DIR="$work/run"
	BANGER_IMAGES_DIR="$repo/images")
if [ -n "${BANGER_TEST_IMAGE_ROOTFS:-}" ]; then
	# iterate on the boot checks with an image built earlier (and its key)
	rootfs=$BANGER_TEST_IMAGE_ROOTFS
	key=${BANGER_TEST_IMAGE_KEY:?BANGER_TEST_IMAGE_KEY must name the image key}
	build_s=0
else
	log "building the Debian image: banger image build debian (state in $work/state)"
	t0=$(date +%s)
	env "${banger_env[@]}" "$bin/banger" image build debian --name debian --size 4G
	build_s=$(($(date +%s) - t0))
	rootfs=$(env "${banger_env[@]}" "$bin/banger" image list --json | jq -r '.images[] | select(.name == "debian") | .rootfs_path')
	[ -f "$rootfs" ] || die "image build reported no rootfs"
	key="$work/runtime/id_ed25519"
	[ -s "$key" ] || die "the build did not leave the bundle key at $key"
	env "${banger_env[@]}" "$bin/banger" daemon stop >/dev/null 2>&1 || true
fi
log "image: $rootfs ($(du -h --apparent-size "$rootfs" | cut -f1) apparent, $(du -h "$rootfs" | cut -f1) used), built in ${build_s}s"

# --- work disk seeded from the image's /root --------------------------------
mkdir -p "$work/seed"
debugfs -R "rdump /root $work/seed" "$rootfs" >/dev/null 2>&1
[ -f "$work/seed/root/.ssh/authorized_keys" ] || die "image has no /root/.ssh/authorized_keys"
echo "banger-work-disk" >"$work/seed/root/.banger-work-disk"
mkfs.ext4 -F -q -L work -E root_owner=0:0 -d "$work/seed/root" "$work/work.ext4" 256M
debugfs -w -R "sif / mode 040700" "$work/work.ext4" >/dev/null 2>&1

# --- kernel --------------------------------------------------------------
kernel="${BANGER_TEST_KERNEL:-}"
initrd=""
if [ -z "$kernel" ]; then
	kernel=$("$repo/scripts/build-kernel.sh" --print-path 2>/dev/null || true)
	[ -s "$kernel" ] || kernel=""
fi
if [ -n "$kernel" ]; then
	log "kernel: $kernel (banger's kernel config)"
else
	log "no cached guest kernel (make kernel); falling back to Debian's linux-image-cloud-amd64"
	cloud_kernel "$work/cloud"
	kernel="$work/cloud/vmlinuz"
	initrd="$work/cloud/initrd.img"
fi

# --- network namespace with a bridge and a tap -----------------------------
guest=172.30.99.2
gw=172.30.99.1
ip netns add "$ns"
ip -n "$ns" link set lo up
ip -n "$ns" link add bgtibr0 type bridge
ip -n "$ns" addr add "$gw/24" dev bgtibr0
ip -n "$ns" link set bgtibr0 up
ip -n "$ns" tuntap add dev bgtitap0 mode tap
ip -n "$ns" link set bgtitap0 master bgtibr0
ip -n "$ns" link set bgtitap0 up

khz=$(awk -F: '/^cpu MHz/ { printf "%d", $2 * 1000; exit }' /proc/cpuinfo)
if [ -z "$khz" ] || [ "$khz" -le 0 ]; then
	die "cannot read the host TSC frequency from /proc/cpuinfo"
fi
cmdline="console=ttyS0 reboot=k panic=1 i8042.noaux i8042.nomux i8042.dumbkbd ip=$guest::$gw:255.255.255.0:bangertest:eth0:off:$gw root=/dev/vda rw tsc_early_khz=$khz"
# shellcheck disable=SC2054 # commas belong to QEMU options
qemu_args=(-machine microvm -accel tcg -cpu max -m 1024 -smp 1 -nodefaults -no-user-config -nographic
	-monitor none -serial "file:$work/console.log" -no-reboot
	-kernel "$kernel" -append "$cmdline"
	-drive "id=vda,file=$rootfs,format=raw,if=none,cache=unsafe" -device virtio-blk-device,drive=vda
	-drive "id=vdb,file=$work/work.ext4,format=raw,if=none,cache=unsafe" -device virtio-blk-device,drive=vdb
	-netdev tap,id=n0,ifname=bgtitap0,script=no,downscript=no -device virtio-net-device,netdev=n0)
[ -n "$initrd" ] && qemu_args+=(-initrd "$initrd")

log "booting: qemu-system-x86_64 ${qemu_args[*]}"
boot0=$(date +%s.%N)
ip netns exec "$ns" qemu-system-x86_64 "${qemu_args[@]}" >"$work/qemu.log" 2>&1 &
qemu_pid=$!

ssh_opts=(-i "$key" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR
	-o ConnectTimeout=5 -o BatchMode=yes -o IdentitiesOnly=yes)
gssh() { ip netns exec "$ns" ssh "${ssh_opts[@]}" "root@$guest" "$@"; }

deadline=$(($(date +%s) + boot_timeout))
until gssh true 2>/dev/null; do
	if ! kill -0 "$qemu_pid" 2>/dev/null; then
		tail -n 40 "$work/console.log" >&2 || true
		cat "$work/qemu.log" >&2 || true
		die "qemu exited before SSH answered"
	fi
	if [ "$(date +%s)" -ge "$deadline" ]; then
		tail -n 40 "$work/console.log" >&2 || true
		die "no SSH answer from $guest within ${boot_timeout}s"
	fi
	sleep 1
done
boot_s=$(awk -v a="$boot0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
log "SSH answered ${boot_s}s after QEMU started"

# --- checks over SSH --------------------------------------------------------
shell_out=$(gssh 'echo "$0"; getent passwd root | cut -d: -f7' 2>&1 || true)
check "root login gives bash" test "$shell_out" = "$(printf 'bash\n/bin/bash')"
check "/root is mounted from /dev/vdb" gssh 'findmnt -n -o SOURCE /root | grep -qx /dev/vdb && test -f /root/.banger-work-disk'
check "banger-agent unit is enabled" gssh 'test "$(systemctl is-enabled banger-agent)" = enabled'
check "banger-agent binary runs" gssh '/usr/local/bin/banger-agent --version'
check "sshd host keys generated at first boot" gssh 'test -s /etc/ssh/ssh_host_ed25519_key'
if [ -z "$initrd" ]; then
	check "resolv.conf follows the kernel ip= config" gssh "test \"\$(readlink /etc/resolv.conf)\" = /proc/net/pnp && grep -q 'nameserver $gw' /etc/resolv.conf"
else
	printf 'SKIP  resolv.conf follows the kernel ip= config (the fallback kernel configures eth0 in its initramfs)\n'
fi
pw_out=$(ip netns exec "$ns" ssh -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes \
	-o PreferredAuthentications=password -o PubkeyAuthentication=no -o ConnectTimeout=5 "root@$guest" true 2>&1) && pw_rc=0 || pw_rc=$?
check "sshd refuses password auth" bash -c '[ "$1" != 0 ] && grep -q "Permission denied" <<<"$2"' _ "$pw_rc" "$pw_out"

# --- poweroff ends QEMU -------------------------------------------------------
gssh 'systemctl poweroff' >/dev/null 2>&1 || true
off0=$(date +%s)
while kill -0 "$qemu_pid" 2>/dev/null && [ $(($(date +%s) - off0)) -lt 120 ]; do
	sleep 1
done
if kill -0 "$qemu_pid" 2>/dev/null; then
	printf 'FAIL  poweroff through SSH ends QEMU (still running after 120s)\n'
	failures=$((failures + 1))
else
	wait "$qemu_pid" 2>/dev/null || true
	qemu_pid=""
	printf 'PASS  poweroff through SSH ends QEMU (%ss)\n' "$(($(date +%s) - off0))"
fi

log "measured: build ${build_s}s, image $(du -h "$rootfs" | cut -f1) used of $(du -h --apparent-size "$rootfs" | cut -f1), boot to SSH ${boot_s}s"
if [ "$failures" -gt 0 ]; then
	log "$failures check(s) failed; console log tail:"
	tail -n 30 "$work/console.log" || true
	exit 1
fi
log "all checks passed"
