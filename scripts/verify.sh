#!/usr/bin/env bash
# Live smoke test for banger on a workstation with KVM and Firecracker.
#
#   scripts/verify.sh [--nat] [--image NAME]
#
# Creates a uniquely named VM through the banger CLI, waits until the daemon
# reports it running and its agent healthy, then (within the same deadline)
# until ssh answers, runs a few checks over ssh, stops and deletes the VM and
# checks that its Firecracker process, tap and directory are gone. On any
# failure it prints every diagnostics section (VM metadata, Firecracker and
# daemon logs, tap and bridge, sockets, NAT ruleset) before exiting 1. The VM
# is always deleted, also on failure or Ctrl-C.
#
# Environment: VERIFY_DEADLINE  seconds for boot, readiness and ssh (default 60)
#              BANGER           the banger binary (default: banger on PATH)
# Tools: the banger CLI, ssh, ip, and nft for the NAT diagnostics.
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
}

nat=0
image=""
while [ $# -gt 0 ]; do
  case "$1" in
    --nat) nat=1 ;;
    --image)
      if [ $# -lt 2 ] || [ -z "$2" ]; then
        echo "verify: --image needs a name" >&2
        exit 2
      fi
      image=$2
      shift
      ;;
    --image=*) image=${1#--image=} ;;
    -h | --help) usage; exit 0 ;;
    *) echo "verify: unknown argument $1 (see $0 --help)" >&2; exit 2 ;;
  esac
  shift
done

deadline_s=${VERIFY_DEADLINE:-60}
case "$deadline_s" in
  '' | *[!0-9]* | 0) echo "verify: VERIFY_DEADLINE=$deadline_s is not a positive number of seconds" >&2; exit 2 ;;
esac
BANGER=${BANGER:-banger}
for tool in "$BANGER" ssh ip; do
  command -v "$tool" >/dev/null 2>&1 || { echo "verify: $tool is not on PATH" >&2; exit 2; }
done

name="verify-$(date +%s)-$$"
phase="setup"
started=$(date +%s)
deadline=$((started + deadline_s))
vm_json=""
created=0
ssh_last=""

say() { printf 'verify: [%3ss] %s\n' "$(($(date +%s) - started))" "$*"; }
remaining() { echo $((deadline - $(date +%s))); }

# field KEY [JSON]: a top-level string or number of an indented JSON object
# as banger prints it (default: the VM's metadata).
field() {
  printf '%s\n' "${2:-$vm_json}" | sed -n "s/^  \"$1\": \(.*\)\$/\1/p" | head -n 1 | sed 's/,$//; s/^"//; s/"$//'
}

refresh_vm() { vm_json=$("$BANGER" vm show "$name" --json 2>/dev/null) || vm_json=""; }

section() { printf '\n=== diagnostics: %s ===\n' "$1"; }

diagnostics() {
  refresh_vm
  local tap dir api vsock pid bridge state_dir status
  tap=$(field tap)
  dir=$(field dir)
  api=$(field api_socket)
  vsock=$(field vsock_path)
  pid=$(field pid)
  bridge=$("$BANGER" config show 2>/dev/null | awk '$1 == "bridge_name" {print $2}') || true

  section "vm show --json"
  if [ -n "$vm_json" ]; then printf '%s\n' "$vm_json"; else "$BANGER" vm show "$name" --json 2>&1 || true; fi

  section "firecracker log (last 50 lines)"
  "$BANGER" vm logs --firecracker "$name" 2>&1 | tail -n 50 || true

  section "serial console (last 50 lines)"
  "$BANGER" vm logs "$name" 2>&1 | tail -n 50 || true

  section "daemon log (last 50 lines)"
  status=$("$BANGER" daemon status --json 2>&1) || true
  state_dir=$(field state_dir "$status")
  if [ -n "$state_dir" ] && [ -r "$state_dir/bangerd.log" ]; then
    tail -n 50 "$state_dir/bangerd.log"
  else
    echo "(daemon log not readable; daemon status said: $status)"
  fi

  section "tap and bridge"
  if [ -n "$tap" ]; then ip -d link show dev "$tap" 2>&1 || true; else echo "(no tap recorded for $name)"; fi
  if [ -n "$bridge" ]; then
    ip -d addr show dev "$bridge" 2>&1 || true
    echo "ports of $bridge:"
    ip link show master "$bridge" 2>&1 || true
  else
    echo "(bridge name unknown: banger config show failed)"
  fi

  section "api and vsock sockets"
  local s
  for s in "$api" "$vsock"; do
    [ -n "$s" ] || continue
    if [ -S "$s" ]; then ls -l "$s"; else echo "$s: missing or not a socket"; fi
  done
  if [ -n "$pid" ]; then
    if [ -r "/proc/$pid/cmdline" ]; then
      echo "firecracker pid $pid: alive: $(tr '\0' ' ' <"/proc/$pid/cmdline")"
    else
      echo "firecracker pid $pid: not running"
    fi
  else
    echo "(no firecracker pid recorded)"
  fi
  if [ -n "$dir" ]; then ls -la "$dir" 2>&1 || true; fi

  section "nat ruleset"
  echo "net.ipv4.ip_forward = $(cat /proc/sys/net/ipv4/ip_forward 2>/dev/null || echo unknown)"
  if command -v nft >/dev/null 2>&1; then
    nft list table ip "banger-${bridge:-banger0}" 2>&1 || true
  else
    echo "(nft is not installed)"
  fi
  echo
}

fail() {
  say "FAIL in phase $phase: $*"
  diagnostics
  say "FAIL in phase $phase: $*"
  exit 1
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ "$created" = 1 ] && "$BANGER" vm show "$name" >/dev/null 2>&1; then
    say "cleanup: deleting $name"
    if ! "$BANGER" vm delete "$name" >/dev/null 2>&1; then
      "$BANGER" vm kill "$name" >/dev/null 2>&1 || true
      "$BANGER" vm delete "$name" || echo "verify: could not delete $name; delete it with: $BANGER vm delete $name" >&2
    fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# vssh LIMIT CMD: one ssh attempt into the VM, cut off after LIMIT seconds
# (exit 124 then); the last non-empty stderr lands in ssh_last.
vssh() {
  local left=$1 errf err rc=0
  shift
  [ "$left" -gt 0 ] || left=1
  errf=$(mktemp)
  timeout -k 2 "$left" "$BANGER" vm ssh --no-reminder "$name" -- "$@" 2>"$errf" || rc=$?
  err=$(tail -n 5 "$errf")
  rm -f "$errf"
  [ -z "$err" ] || ssh_last=$err
  return "$rc"
}

# --- create -------------------------------------------------------------
phase="create"
args=(vm create "$name")
[ "$nat" = 1 ] && args+=(--nat)
[ -n "$image" ] && args+=(--image "$image")
say "creating $name (deadline ${deadline_s}s): $BANGER ${args[*]}"
created=1
if ! out=$(timeout -k 2 "$deadline_s" "$BANGER" "${args[@]}" 2>&1); then
  printf '%s\n' "$out"
  fail "banger vm create did not succeed"
fi
printf '%s\n' "$out"

# --- readiness: the daemon says running, the agent says healthy ---------
phase="readiness"
while :; do
  refresh_vm
  if [ "$(field state)" = running ] && "$BANGER" vm health "$name" >/dev/null 2>&1; then
    break
  fi
  [ "$(remaining)" -gt 0 ] || fail "$name not running and healthy within ${deadline_s}s (state: $(field state))"
  sleep 1
done
ip_addr=$(field ip)
pid=$(field pid)
tap=$(field tap)
dir=$(field dir)
api=$(field api_socket)
say "$name is running and healthy at $ip_addr (firecracker pid $pid, tap $tap)"

# --- ssh: the same deadline ---------------------------------------------
phase="ssh"
attempt=0
until vssh "$(remaining)" true; do
  rc=$?
  attempt=$((attempt + 1))
  say "ssh attempt $attempt: exit $rc${ssh_last:+ (${ssh_last##*$'\n'})}"
  if [ "$rc" -ne 255 ] && [ "$rc" -ne 124 ]; then
    fail "ssh to $name exited $rc: $ssh_last"
  fi
  [ "$(remaining)" -gt 0 ] || fail "no ssh into $name ($ip_addr) within ${deadline_s}s; last ssh error: ${ssh_last:-none}"
  sleep 1
done
say "ssh answers"

# --- checks over ssh ----------------------------------------------------
phase="checks"
shell=$(vssh 60 'getent passwd root | cut -d: -f7') || fail "reading root's shell: $ssh_last"
case "$shell" in
  */bash) say "root's shell is $shell" ;;
  *) fail "root's shell is '$shell', want bash" ;;
esac
# shellcheck disable=SC2016 # expanded by the guest's shell
vssh 60 '[ "$(stat -c %d /root)" != "$(stat -c %d /)" ]' ||
  fail "/root is not a separate filesystem (the work disk is not mounted): $ssh_last"
say "/root is the work disk ($(vssh 60 'df -h /root | tail -n 1' || true))"
if [ "$nat" = 1 ]; then
  vssh 60 'getent hosts deb.debian.org >/dev/null && timeout 10 bash -c "exec 3<>/dev/tcp/deb.debian.org/80"' ||
    fail "no outbound network from $name with --nat (DNS or TCP to deb.debian.org:80): $ssh_last"
  say "outbound network works"
fi

# --- stop and delete, then nothing may be left --------------------------
phase="teardown"
"$BANGER" vm stop "$name" || fail "banger vm stop $name failed"
"$BANGER" vm delete "$name" || fail "banger vm delete $name failed"
created=0
if [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$api"; then
  fail "firecracker pid $pid is still running after delete"
fi
if [ -n "$tap" ] && ip link show dev "$tap" >/dev/null 2>&1; then
  fail "tap $tap still exists after delete"
fi
if [ -n "$dir" ] && [ -e "$dir" ]; then
  fail "vm directory $dir still exists after delete"
fi
say "PASS: $name created, reachable over ssh, checked, stopped and deleted cleanly in $(($(date +%s) - started))s"
