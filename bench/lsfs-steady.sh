#!/usr/bin/env bash
# lsfs-steady.sh — the steady state of lsfs.sh's part-1 load (4 KiB random
# writes QD32, a flush every 32) once GC runs, for A/B of builds.
#
#   bench/lsfs-steady.sh [--pairs N] [--seconds S] [--size SIZE] [--perf]
#                        LABEL=BUILD-DIR LABEL=BUILD-DIR ...
#
# Per run and build (alternated, N rounds): a fresh tandemd (BUILD-DIR/
# daemon/tandemd) with one lsfs device of SIZE (block_size 512, as part 1),
# filled with 256 KiB sequential writes, then S seconds of the part-1 load to
# bring GC in (warm) and S seconds more measured (steady, with
# --target-pid). GC's counters (gc_passes, gc_moved_blocks) come from
# GET /v1/devices/lsfs around the steady run. --perf records
# `perf record -g` of tandemd for 6 s of the steady run (the profile stays
# in the work dir, printed at the end). One line per run; the generator
# is this tree's build/tools/tandem-bench (TND_BENCH overrides).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/.." && pwd)
BENCH=${TND_BENCH:-$SRC/build/tools/tandem-bench/tandem-bench}
PAIRS=2
SECS=14
SIZE=1GiB
PERF=0
BUILDS=()
while [ $# -gt 0 ]; do
	case $1 in
	--pairs) PAIRS=$2; shift ;;
	--seconds) SECS=$2; shift ;;
	--size) SIZE=$2; shift ;;
	--perf) PERF=1 ;;
	*=*) BUILDS+=("$1") ;;
	*) echo "lsfs-steady.sh: unknown option $1" >&2; exit 2 ;;
	esac
	shift
done
[ ${#BUILDS[@]} -gt 0 ] || { echo "lsfs-steady.sh: name at least one LABEL=BUILD-DIR" >&2; exit 2; }
for b in "${BUILDS[@]}"; do
	[ -x "${b#*=}/daemon/tandemd" ] || { echo "lsfs-steady.sh: ${b#*=}/daemon/tandemd not built" >&2; exit 1; }
done
[ -x "$BENCH" ] || { echo "lsfs-steady.sh: $BENCH not built" >&2; exit 1; }
source "$SRC/bench/lib.sh"
bench_workdir lsfs-steady
IQN="iqn.2026-11.io.tandem:lsfs-steady"

num() {  # num FILE KEY: the first number under "KEY" in FILE
	{ grep -o "\"$2\": *[-0-9.eE+]*" "$1" || true; } | head -n 1 | sed 's/.*: *//'
}

run() {  # run LABEL BUILD-DIR ROUND
	local w="$WORK/$1-$3" port mgmt tpid url pp=""
	mkdir -p "$w"
	port=$(free_port)
	mgmt=$(free_port)
	cat >"$w/t.json" <<EOF
{ "devices": [ { "name": "lsfs", "type": "lsfs", "size": "$SIZE", "block_size": 512 } ],
  "targets": [ { "iqn": "$IQN", "allow_any_initiator": true, "luns": { "0": "lsfs" } } ] }
EOF
	"$2/daemon/tandemd" --data-dir "$w" --portal "127.0.0.1:$port" --mgmt "127.0.0.1:$mgmt" \
		--config "$w/t.json" >>"$w/tandemd.log" 2>&1 &
	tpid=$!
	PIDS+=("$tpid")
	wait_port "$port" "$tpid" 12000 || { tail "$w/tandemd.log" >&2; exit 1; }
	wait_port "$mgmt" "$tpid" 500 || true
	url="iscsi://127.0.0.1:$port/$IQN/0"
	stats() { curl -sf -H "Authorization: Bearer $(cat "$w/api.token")" \
		"http://127.0.0.1:$mgmt/v1/devices/lsfs" >"$w/$1.json"; }
	local bytes
	bytes=$(awk -v s="$SIZE" 'BEGIN { n = s + 0; u = substr(s, length(n "") + 1);
		m = u == "GiB" ? 2^30 : u == "MiB" ? 2^20 : 1; printf "%d", n * m }')
	"$BENCH" --url "$url" --bs 256k --qd 8 --rw write --pattern seq --size "$bytes" \
		--count $((bytes / 262144)) --seed 7 >/dev/null
	"$BENCH" --url "$url" --bs 4k --qd 32 --rw write --pattern rand --flush-every 32 --time "$SECS" \
		--seed 1 --json >"$w/warm.json"
	stats s0
	if [ $PERF = 1 ]; then
		(sleep 4; perf record -g -o "$w/perf.data" -p "$tpid" -- sleep 6 >/dev/null 2>&1) &
		pp=$!
	fi
	"$BENCH" --url "$url" --bs 4k --qd 32 --rw write --pattern rand --flush-every 32 --time "$SECS" \
		--seed 2 --target-pid "$tpid" --json >"$w/steady.json"
	stats s1
	[ -z "$pp" ] || wait "$pp"
	kill -TERM "$tpid"
	wait "$tpid" || true
	local p mv
	p=$(( $(num "$w/s1.json" gc_passes) - $(num "$w/s0.json" gc_passes) ))
	mv=$(( $(num "$w/s1.json" gc_moved_blocks) - $(num "$w/s0.json" gc_moved_blocks) ))
	printf '%-8s round %d: warm %8.0f  steady %8.0f IOPS  tandemd CPU %5.2f s  gc_passes/s %6.1f  moved/pass %4d  load %s\n' \
		"$1" "$3" "$(num "$w/warm.json" iops)" "$(num "$w/steady.json" iops)" \
		"$(num "$w/steady.json" target_cpu_s)" "$(echo "$p / $SECS" | bc -l)" "$((mv / (p > 0 ? p : 1)))" \
		"$(cut -d' ' -f1 /proc/loadavg)"
	if [ $PERF = 1 ]; then
		perf report -i "$w/perf.data" --no-children --sort dso,sym --stdio -g none 2>/dev/null |
			grep -E '^ +[0-9]' | head -n 15 | sed 's/^/    /'
	fi
}

for r in $(seq 1 "$PAIRS"); do
	for b in "${BUILDS[@]}"; do
		run "${b%%=*}" "${b#*=}" "$r"
	done
done
