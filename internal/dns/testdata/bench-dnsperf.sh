#!/bin/sh
# Measures banger's DNS server against dnsmasq with dnsperf: the same A
# records (500 by default, as for 500 running VMs), the same loopback
# address, queried for every name; first at full load (queries/s), then at a
# steady 10,000 queries/s (latency), each server back to back.
# Needs the Debian packages dnsperf and dnsmasq, and Go.
# Usage: internal/dns/testdata/bench-dnsperf.sh [seconds] [records]   (from the repo root)
set -eu

secs=${1:-10}
records=${2:-500}
addr=127.0.0.1
bport=42169
mport=42170
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
bpid=
mpid=

cleanup() {
	if [ -n "$bpid" ]; then kill "$bpid" 2>/dev/null || true; wait "$bpid" 2>/dev/null || true; fi
	if [ -n "$mpid" ]; then kill "$mpid" 2>/dev/null || true; wait "$mpid" 2>/dev/null || true; fi
	rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

for tool in dnsperf dnsmasq go; do
	command -v "$tool" >/dev/null 2>&1 || { echo "needs $tool (apt-get install -y dnsperf dnsmasq)" >&2; exit 1; }
done

: >"$tmp/queries.txt"
: >"$tmp/hosts"
i=0
while [ "$i" -lt "$records" ]; do
	a=$((10 + i))
	printf 'vm%d.vm A\n' "$i" >>"$tmp/queries.txt"
	printf '172.16.%d.%d vm%d.vm\n' "$((a / 256))" "$((a % 256))" "$i" >>"$tmp/hosts"
	i=$((i + 1))
done

(cd "$here/../../.." && go build -o "$tmp/benchserver" ./internal/dns/testdata/benchserver)
"$tmp/benchserver" "$addr:$bport" "$records" 2>"$tmp/banger.log" &
bpid=$!

dnsmasq --keep-in-foreground --no-daemon --no-resolv --no-hosts --addn-hosts="$tmp/hosts" \
	--listen-address="$addr" --bind-interfaces --port="$mport" --pid-file= --user=root \
	--local-ttl=5 --log-facility="$tmp/dnsmasq.log" &
mpid=$!
sleep 1

check() {
	got=$(dig +short -p "$2" @"$addr" vm3.vm A 2>/dev/null || true)
	[ "$got" = "172.16.0.13" ] || { echo "$1 does not answer vm3.vm (got '$got')" >&2; exit 1; }
}
if command -v dig >/dev/null 2>&1; then check banger "$bport"; check dnsmasq "$mport"; fi

qps() {
	dnsperf -s "$addr" -p "$1" -d "$tmp/queries.txt" -l "$secs" >"$tmp/$2.out" 2>&1
	lost=$(awk '/Queries lost:/ {print $3}' "$tmp/$2.out")
	q=$(awk '/Queries per second:/ {print $4}' "$tmp/$2.out")
	echo "$2: $q queries/s (lost $lost)" >&2
	echo "$q"
}

latency() {
	dnsperf -s "$addr" -p "$1" -d "$tmp/queries.txt" -l "$secs" -Q 10000 >"$tmp/$2.lat" 2>&1
	l=$(awk '/Average Latency/ {print $4}' "$tmp/$2.lat")
	echo "$2: average latency at 10k q/s $(awk -v l="$l" 'BEGIN { printf "%.0f", l * 1e6 }') µs" >&2
	echo "$l"
}

b=$(qps "$bport" banger)
m=$(qps "$mport" dnsmasq)
awk -v b="$b" -v m="$m" 'BEGIN { printf "ratio banger/dnsmasq, queries/s at full load: %.2f\n", b / m }'
bl=$(latency "$bport" banger)
ml=$(latency "$mport" dnsmasq)
awk -v b="$bl" -v m="$ml" 'BEGIN { printf "ratio banger/dnsmasq, latency at 10k q/s: %.2f (below 1 is faster)\n", b / m }'
