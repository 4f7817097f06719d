#!/usr/bin/env bash
# ab.sh — A/B two tandemd variants on one workload, alternating A B A B.
#
#   bench/ab.sh [--pairs N] [--seconds S] [--ramp S] [--size SIZE]
#               [--pin] A=CMD B=CMD -- TANDEM-BENCH-WORKLOAD-ARGS
#
# A variant is a label and a command prefix that runs tandemd, e.g.
#   main=/work/main/build/daemon/tandemd
#   poll=env TND_X=1 build/daemon/tandemd
# Each run starts the variant fresh on the one page-cache-warm flat image,
# runs tandem-bench with --target-pid, and counts the target's context
# switches and io_uring_enter calls over the measured window with perf stat.
# Target and generator run under nice -n -10 (root) to cut interference
# from other tenants of a shared machine. One line per run; medians at the
# end. --pin puts the target on CPU 1 and the generator on CPU 0 (taskset),
# the placement an otherwise idle 2-CPU machine ends up with, where every
# wake-up crosses CPUs; unpinned on a busy machine the scheduler tends to
# run both on one CPU, taking turns. Everything started here is killed on
# exit.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/.." && pwd)
BENCH=${TND_BENCH:-$SRC/build/tools/tandem-bench/tandem-bench}
PAIRS=3
SECS=3
RAMP=1
SIZE=256MiB
PIN=0
VARIANTS=()
while [ $# -gt 0 ]; do
	case $1 in
	--pairs) PAIRS=$2; shift ;;
	--seconds) SECS=$2; shift ;;
	--ramp) RAMP=$2; shift ;;
	--size) SIZE=$2; shift ;;
	--pin) PIN=1 ;;
	--) shift; break ;;
	*=*) VARIANTS+=("$1") ;;
	*) echo "ab.sh: unknown option $1" >&2; exit 2 ;;
	esac
	shift
done
[ ${#VARIANTS[@]} -ge 1 ] || { echo "ab.sh: name at least one LABEL=CMD" >&2; exit 2; }
WL=("$@")

source "$SRC/bench/lib.sh"
bench_workdir ab
NICE="nice -n -10"
[ "$(id -u)" = 0 ] || NICE=""
TNICE=$NICE GNICE=$NICE
[ $PIN = 0 ] || { TNICE="$NICE taskset -c 1"; GNICE="$NICE taskset -c 0"; }

mb=${SIZE%MiB}
head -c $((mb * 1024 * 1024)) /dev/urandom >"$WORK/img"
OUTF="$WORK/out.tsv"
: >"$OUTF"

run_one() {
	local label=$1 cmd=$2 port pid perfpid
	port=$(free_port)
	cat >"$WORK/t.json" <<EOF
{
  "devices": [ { "name": "bench", "type": "flat", "path": "$WORK/img", "size": "$SIZE", "block_size": 512 } ],
  "targets": [ { "iqn": "iqn.2026-11.io.tandem:ab", "allow_any_initiator": true, "luns": { "0": "bench" } } ]
}
EOF
	rm -rf "$WORK/data"; mkdir -p "$WORK/data"
	# shellcheck disable=SC2086
	$TNICE $cmd --data-dir "$WORK/data" --portal "127.0.0.1:$port" --mgmt off \
		--config "$WORK/t.json" >"$WORK/tandemd.log" 2>&1 &
	pid=$!
	PIDS+=("$pid")
	wait_port "$port" "$pid" || { cat "$WORK/tandemd.log" >&2; exit 1; }
	cat "$WORK/img" >/dev/null
	# perf stat over ramp + measured time; the ramp share is subtracted by
	# scaling to the measured ops (counts are per command anyway).
	perf stat -x, -e context-switches -e syscalls:sys_enter_io_uring_enter -p "$pid" \
		-o "$WORK/perf.txt" -- sleep $((SECS + RAMP)) &
	perfpid=$!
	$GNICE "$BENCH" --url "iscsi://127.0.0.1:$port/iqn.2026-11.io.tandem:ab/0" "${WL[@]}" \
		--time "$SECS" --ramp "$RAMP" --target-pid "$pid" --json >"$WORK/r.json" 2>"$WORK/r.err" || {
		cat "$WORK/r.err" >&2; }
	wait "$perfpid" || true
	kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
	python3 - "$label" "$WORK/r.json" "$WORK/perf.txt" "$SECS" "$RAMP" >>"$OUTF" <<'EOF'
import json, sys
label, rj, pf, secs, ramp = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
r = json.load(open(rj))
cnt = {}
for line in open(pf):
    f = line.strip().split(',')
    if len(f) > 2 and f[0].replace('.', '').isdigit():
        cnt[f[2]] = float(f[0])
ops_all = r['iops'] * (secs + ramp)  # perf counted ramp too
cs = cnt.get('context-switches', float('nan')) / ops_all
en = cnt.get('syscalls:sys_enter_io_uring_enter', float('nan')) / ops_all
ops = r['iops'] * r['elapsed_s']
cpu = r['target_cpu_s'] * 1e6 / ops if ops else float('nan')
print(f"{label}\t{r['iops']:.0f}\t{r['lat']['p50_us']}\t{r['lat']['p99_us']}\t{cpu:.2f}\t{cs:.2f}\t{en:.2f}\t{r['flushes']}\t{r['bench_cpu_s']}\t{r.get('flush_lat', {}).get('p50_us', float('nan'))}")
EOF
	tail -n 1 "$OUTF" | awk -F'\t' '{ printf "%-10s iops %7d p50 %7.1f p99 %8.1f cpu_us/op %6.2f cs/op %5.2f enter/op %5.2f flushes %d bench_cpu %s flush_p50 %s\n", $1,$2,$3,$4,$5,$6,$7,$8,$9,$10 }'
}

echo "ab.sh: ${WL[*]}; load: $(cut -d' ' -f1-3 /proc/loadavg)"
for p in $(seq 1 "$PAIRS"); do
	for v in "${VARIANTS[@]}"; do run_one "${v%%=*}" "${v#*=}"; done
done
echo "medians ($PAIRS runs each); load now: $(cut -d' ' -f1-3 /proc/loadavg)"
for v in "${VARIANTS[@]}"; do
	l=${v%%=*}
	awk -F'\t' -v l="$l" '$1 == l' "$OUTF" | python3 -c '
import sys, statistics as s
rows = [l.rstrip("\n").split("\t") for l in sys.stdin]
m = lambda i: s.median(float(r[i]) for r in rows)
print(f"{rows[0][0]:<10} iops {m(1):7.0f} p50 {m(2):7.1f} p99 {m(3):8.1f} cpu_us/op {m(4):6.2f} cs/op {m(5):5.2f} enter/op {m(6):5.2f} flushes {m(7):.0f} bench_cpu {m(8):.2f} flush_p50 {m(9):.0f}")'
done
