#!/bin/sh
# Measures, as root, the copy driver preparing a VM root disk (sparse copy
# of a 2 GiB image holding ~600 MiB of random data, extended to 8 GiB,
# e2fsck -f + resize2fs) and the creation of a 16 GiB work disk seeded from
# the image's /root (cold: seed built first; cached: seed reused).
#
#   sudo sh internal/storage/testdata/bench.sh [benchtime, default 5x]
#
# TMPDIR picks the filesystem measured (reflink-capable ones such as btrfs
# or XFS make the root-disk copy near-instant).
set -eu
cd "$(dirname "$0")/../../.."
exec go test -run '^$' -bench 'CopyRoot|WorkDisk' -benchtime "${1:-5x}" ./internal/storage
