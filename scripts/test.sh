#!/usr/bin/env bash
# The tier functions run through tier "$@", which shellcheck cannot follow.
# shellcheck disable=SC2317
# `make test`: every test tier this machine can run, each run even when an
# earlier one failed, then one result line per tier; exits 1 if any failed.
#
#   build   banger, banger-full, bangerd, banger-agent and the fake Firecracker
#   vet     go vet and gofmt
#   unit    go test ./...: unit tests everywhere, and as root the privileged
#           ones (bridges, taps, nftables, loop devices in throwaway
#           network namespaces); tests that need a missing tool skip, naming it;
#           then internal/cli again as the front binary's (-tags banger_front)
#   system  go test -tags system ./test/...: the real banger and bangerd
#           against the fake Firecracker (needs the build)
#   image   scripts/test-image.sh: the Debian image built by banger, booted
#           under QEMU and checked over SSH (root, qemu-system-x86, debootstrap)
#
# Environment (set by the Makefile): GO, TESTFLAGS.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
GO=${GO:-go}
# shellcheck disable=SC2206 # TESTFLAGS is a list of go test flags
testflags=(${TESTFLAGS:-})

results=()
failed=0
last=0 # 0 when the last tier passed

# tier NAME CMD...: run CMD as tier NAME and record its result.
tier() {
	local name=$1
	shift
	echo "=== tier $name: $*"
	local start=$SECONDS
	if "$@"; then
		last=0
		results+=("tier $name: PASS ($((SECONDS - start))s)")
	else
		last=$?
		results+=("tier $name: FAIL (exit $last, $((SECONDS - start))s)")
		failed=1
	fi
}

vet() {
	"$GO" vet ./... || return
	"$GO" vet -tags banger_front ./cmd/banger ./internal/cli || return
	local unformatted
	unformatted=$(gofmt -l cmd internal test) || return
	if [ -n "$unformatted" ]; then
		printf 'gofmt needed:\n%s\n' "$unformatted"
		return 1
	fi
}

unit() {
	local rc=0
	"$GO" test -count=1 -timeout 30m "${testflags[@]}" ./... || rc=$?
	"$GO" test -count=1 -tags banger_front "${testflags[@]}" ./internal/cli || rc=$?
	return "$rc"
}

image_tier() {
	if ./scripts/test-image.sh; then
		echo "--- PASS: test-image (Debian image built and booted under QEMU, checked over SSH)"
	else
		echo "--- FAIL: test-image (scripts/test-image.sh failed; its log is above)"
		return 1
	fi
}

tier build make -s build fcfake
built=$last
tier vet vet
tier unit unit
if [ "$built" = 0 ]; then
	tier system "$GO" test -count=1 -timeout 20m -tags system "${testflags[@]}" ./test/...
else
	results+=("tier system: FAIL (not run: it needs the build)")
fi
if [ "$(id -u)" != 0 ] || ! command -v qemu-system-x86_64 >/dev/null || ! command -v debootstrap >/dev/null; then
	echo "--- SKIP: test-image (the image tier needs root, qemu-system-x86 and debootstrap; CI installs them)"
	results+=("tier image: SKIP (needs root, qemu-system-x86 and debootstrap; CI installs them)")
elif [ "$built" = 0 ]; then
	tier image image_tier
else
	results+=("tier image: FAIL (not run: it needs the build)")
fi

echo
echo "=== test tiers"
printf '%s\n' "${results[@]}"
exit "$failed"
