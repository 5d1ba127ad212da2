#!/bin/sh
# Measures banger's DNS server against dnsmasq with dnsperf: the same ten A
# records, the same loopback address, one run of each, back to back.
# Needs the Debian packages dnsperf and dnsmasq, and Go.
# Usage: internal/dns/testdata/bench-dnsperf.sh [seconds]   (from the repo root)
set -eu

secs=${1:-10}
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
while [ "$i" -lt 10 ]; do
	printf 'vm%d.vm A\n' "$i" >>"$tmp/queries.txt"
	printf '172.16.0.%d vm%d.vm\n' "$((10 + i))" "$i" >>"$tmp/hosts"
	i=$((i + 1))
done

(cd "$here/../../.." && go build -o "$tmp/benchserver" ./internal/dns/testdata/benchserver)
"$tmp/benchserver" "$addr:$bport" 2>"$tmp/banger.log" &
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

b=$(qps "$bport" banger)
m=$(qps "$mport" dnsmasq)
awk -v b="$b" -v m="$m" 'BEGIN { printf "ratio banger/dnsmasq: %.2f\n", b / m }'
