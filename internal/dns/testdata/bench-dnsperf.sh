#!/bin/sh
# Measures banger's DNS server against dnsmasq: the same A records (500 by
# default, as for 500 running VMs), the same loopback address, queried for
# every name, each server back to back:
#   1. loadgen (testdata/loadgen: batched sendmmsg/recvmmsg, blocking
#      threads; light enough not to be the bottleneck) at full load: q/s;
#   2. loadgen at a steady 10,000 q/s, paced query by query: p50/p90/p99
#      latency from send to answer;
#   3. dnsperf at full load and at -Q 10000, as before (on 2 cores dnsperf
#      itself is the bottleneck at full load: it needs more CPU per query
#      than either server).
# For every run it prints each server's CPU per query (utime+stime from
# /proc/PID/stat, before/after: the honest capacity figure, independent of
# what the generator can push) and context switches per query (voluntary
# plus involuntary, summed over /proc/PID/task/*/status), and the
# generator's own CPU, so the split of the cores is visible. Then the
# ratios issue 15 asks for.
# Needs the Debian packages dnsperf and dnsmasq, and Go; Linux amd64/arm64.
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

(cd "$here/../../.." && go build -o "$tmp/benchserver" ./internal/dns/testdata/benchserver &&
	go build -o "$tmp/loadgen" ./internal/dns/testdata/loadgen)
"$tmp/benchserver" "$addr:$bport" "$records" 2>"$tmp/banger.log" &
bpid=$!

dnsmasq --keep-in-foreground --no-daemon --no-resolv --no-hosts --addn-hosts="$tmp/hosts" \
	--listen-address="$addr" --bind-interfaces --port="$mport" --pid-file= --user=root \
	--local-ttl=5 --log-facility="$tmp/dnsmasq.log" 2>/dev/null &
mpid=$!
sleep 1

check() {
	got=$(dig +short -p "$2" @"$addr" vm3.vm A 2>/dev/null || true)
	[ "$got" = "172.16.0.13" ] || { echo "$1 does not answer vm3.vm (got '$got')" >&2; exit 1; }
}
if command -v dig >/dev/null 2>&1; then check banger "$bport"; check dnsmasq "$mport"; fi

# usage PID: CPU ticks (utime+stime) and context switches of every thread
usage() {
	t=$(awk '{print $14 + $15}' "/proc/$1/stat")
	cs=$(cat "/proc/$1"/task/*/status | awk '/voluntary_ctxt_switches/ {s += $2} END {print s}')
	echo "$t $cs"
}
hz=$(getconf CLK_TCK)

# kv KEY LINE: the value of KEY=value in LINE
kv() { echo "$2" | tr ' ' '\n' | awk -F= -v k="$1" '$1 == k {print $2}'; }

# measure NAME PID PORT KIND: runs one generator, prints one line, and
# leaves "qps p50 cpu_us_per_query" in $tmp/NAME.KIND
measure() {
	before=$(usage "$2")
	case $4 in
	full) out=$("$tmp/loadgen" -s "$addr:$3" -names "$records" -d "${secs}s" -mode full -sockets 2 -window 64) ;;
	rate) out=$("$tmp/loadgen" -s "$addr:$3" -names "$records" -d "${secs}s" -mode rate -rate 10000 -sockets 1) ;;
	dnsperf)
		dnsperf -s "$addr" -p "$3" -d "$tmp/queries.txt" -l "$secs" >"$tmp/dp.out" 2>&1
		out="qps=$(awk '/Queries per second:/ {print $4}' "$tmp/dp.out") answered=$(awk '/Queries completed:/ {print $3}' "$tmp/dp.out") lost=$(awk '/Queries lost:/ {print $3}' "$tmp/dp.out")" ;;
	dnsperf-rate)
		dnsperf -s "$addr" -p "$3" -d "$tmp/queries.txt" -l "$secs" -Q 10000 >"$tmp/dp.out" 2>&1
		out="qps=$(awk '/Queries per second:/ {print $4}' "$tmp/dp.out") answered=$(awk '/Queries completed:/ {print $3}' "$tmp/dp.out") lost=$(awk '/Queries lost:/ {print $3}' "$tmp/dp.out") avg_us=$(awk '/Average Latency/ {printf "%.1f", $4 * 1e6}' "$tmp/dp.out")" ;;
	esac
	after=$(usage "$2")
	n=$(kv answered "$out")
	cpu=$(echo "$before $after" | awk -v n="$n" -v hz="$hz" '{printf "%.2f", ($3 - $1) / hz * 1e6 / n}')
	cs=$(echo "$before $after" | awk -v n="$n" '{printf "%.3f", ($4 - $2) / n}')
	srvs=$(echo "$before $after" | awk -v hz="$hz" '{printf "%.2f", ($3 - $1) / hz}')
	line=$(printf '%-8s %-12s %8.0f q/s  lost %-6s' "$1" "$4" "$(kv qps "$out")" "$(kv lost "$out")")
	[ -n "$(kv p50_us "$out")" ] && line="$line  p50 $(kv p50_us "$out") p90 $(kv p90_us "$out") p99 $(kv p99_us "$out") µs"
	[ -n "$(kv avg_us "$out")" ] && line="$line  avg $(kv avg_us "$out") µs"
	line="$line | server: ${cpu} µs CPU/query, ${cs} ctx switches/query, ${srvs} s CPU"
	[ -n "$(kv loadgen_cpu_s "$out")" ] && line="$line | loadgen: $(kv loadgen_cpu_us_per_query "$out") µs CPU/query, $(kv loadgen_cpu_s "$out") s CPU"
	echo "$line"
	p50=$(kv p50_us "$out")
	echo "$(kv qps "$out") ${p50:--} $cpu" >"$tmp/$1.$4"
}

cores=$(nproc)
echo "$records names, ${secs} s per run, $cores cores; $(uptime | sed 's/.*load/load/')"
for kind in full rate dnsperf dnsperf-rate; do
	measure banger "$bpid" "$bport" "$kind"
	measure dnsmasq "$mpid" "$mport" "$kind"
done

read -r bq bp bc <"$tmp/banger.full"
read -r mq mp mc <"$tmp/dnsmasq.full"
awk -v b="$bq" -v m="$mq" 'BEGIN { printf "ratio banger/dnsmasq, q/s at full load (loadgen): %.2f (target >= 1.5)\n", b / m }'
awk -v b="$bc" -v m="$mc" 'BEGIN { printf "ratio banger/dnsmasq, CPU per query at full load: %.2f, so capacity per core %.2fx (%.0f vs %.0f q/s per core)\n", b / m, m / b, 1e6 / b, 1e6 / m }'
read -r bq bp bc <"$tmp/banger.rate"
read -r mq mp mc <"$tmp/dnsmasq.rate"
awk -v b="$bp" -v m="$mp" 'BEGIN { printf "ratio banger/dnsmasq, p50 latency at 10k q/s (loadgen): %.2f (target <= 1)\n", b / m }'
awk -v b="$bc" -v m="$mc" 'BEGIN { printf "ratio banger/dnsmasq, CPU per query at 10k q/s: %.2f\n", b / m }'
read -r bq bp bc <"$tmp/banger.dnsperf"
read -r mq mp mc <"$tmp/dnsmasq.dnsperf"
awk -v b="$bq" -v m="$mq" 'BEGIN { printf "ratio banger/dnsmasq, q/s at full load (dnsperf, generator-bound): %.2f\n", b / m }'
