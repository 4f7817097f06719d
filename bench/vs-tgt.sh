#!/usr/bin/env bash
# vs-tgt.sh — tandem side by side with tgt (Debian's tgtd) on this machine.
#
# Both targets serve a copy of the same preallocated, page-cache-warm image
# file over 127.0.0.1, and tandem-bench (libiscsi, no kernel initiator in
# the way) drives the same workloads against each. tgt runs twice: with its
# defaults, and tuned (256 KiB data segments, InitialR2T=No,
# ImmediateData=Yes); tandem is compared with the better of the two.
#
# Runs of one workload alternate between the systems (A B C, then C B A,
# ...) so that drift over time (thermal, other tenants, page cache) hits all
# of them alike; the report gives medians. See bench/README.md.
#
# Nothing runs by surprise: packaging/deps.sh installs only what is
# missing, every process started here is killed on exit, every file made
# here is removed, and no traffic leaves 127.0.0.1.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/.." && pwd)
BUILD=${TND_BUILD:-$SRC/build}

RUNS=5
SECONDS_PER_RUN=10
RAMP=2
SIZE=1GiB
SYSTEMS="tgt-default tgt-tuned tandem"
WORKLOADS="rr4k_qd32 rw4k_qd32_flush rr4k_qd1 sr256k_qd8 sw256k_qd8 mixed70_qd32_s4"
OUT=""
DO_BUILD=1
DO_DEPS=1
QUICK=0
BENCH_THREADS=1
TANDEM_ARGS=""
PIN=0
CORK_ARG=""

usage() {
	cat <<EOF
usage: bench/vs-tgt.sh [options]
  --quick            short runs for a smoke check: 3 runs of 3 s, 256 MiB image
  --runs N           runs per workload and system (default $RUNS)
  --seconds S        measured seconds per run (default $SECONDS_PER_RUN)
  --ramp S           unmeasured warm-up per run (default $RAMP)
  --size SIZE        image size, e.g. 1GiB, 256MiB (default $SIZE)
  --systems "LIST"   subset of: $SYSTEMS
  --workloads "LIST" subset of: $WORKLOADS
  --out FILE         report path (default bench/results/<date>-<host>.md)
  --no-build         use the binaries in \$TND_BUILD (default build/) as they are
  --no-deps          do not call packaging/deps.sh
  --tandem-args "A"  extra tandemd options, e.g. "--busy-poll-us 30"
  --pin              targets on CPU 1, generator on CPU 0 (taskset): the
                     placement a quiet 2-CPU box ends up with, reproducible
                     on a busy one (see results/2026-11-22-vm-perf-qd1.md)
  --no-cork          tandem-bench sends as libiscsi does by itself, a TCP
                     segment per PDU header and per data segment, instead
                     of a round's commands corked together (what kernel
                     initiators and NICs with GRO deliver)
  --bench-threads N  tandem-bench event-loop threads (default 1); on a box
                     with many CPUs, more keep the generator off the
                     critical path for multi-session workloads
EOF
}

while [ $# -gt 0 ]; do
	case $1 in
	--quick) QUICK=1; RUNS=3; SECONDS_PER_RUN=3; RAMP=1; SIZE=256MiB ;;
	--runs) RUNS=$2; shift ;;
	--seconds) SECONDS_PER_RUN=$2; shift ;;
	--ramp) RAMP=$2; shift ;;
	--size) SIZE=$2; shift ;;
	--systems) SYSTEMS=$2; shift ;;
	--workloads) WORKLOADS=$2; shift ;;
	--out) OUT=$2; shift ;;
	--no-build) DO_BUILD=0 ;;
	--no-deps) DO_DEPS=0 ;;
	--bench-threads) BENCH_THREADS=$2; shift ;;
	--tandem-args) TANDEM_ARGS=$2; shift ;;
	--pin) PIN=1 ;;
	--no-cork) CORK_ARG=--no-cork ;;
	-h|--help) usage; exit 0 ;;
	*) echo "vs-tgt.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
	esac
	shift
done

case $RUNS in ''|*[!0-9]*|0) echo "vs-tgt.sh: --runs wants a positive number" >&2; exit 2 ;; esac

size_bytes() {
	local s=$1 n unit
	n=${s%%[!0-9]*}
	unit=${s#"$n"}
	case $unit in
	''|B) echo "$n" ;;
	K|KiB|k) echo $((n << 10)) ;;
	M|MiB) echo $((n << 20)) ;;
	G|GiB) echo $((n << 30)) ;;
	*) echo "vs-tgt.sh: bad size $s" >&2; return 1 ;;
	esac
}
SIZE_BYTES=$(size_bytes "$SIZE")
[ $((SIZE_BYTES % (1 << 20))) = 0 ] || { echo "vs-tgt.sh: --size must be whole MiB" >&2; exit 2; }

# ---- workloads: name -> tandem-bench arguments -------------------------------
workload_args() {
	case $1 in
	rr4k_qd32)       echo "--bs 4k --qd 32 --rw read --pattern rand" ;;
	rw4k_qd32_flush) echo "--bs 4k --qd 32 --rw write --pattern rand --flush-every 32" ;;
	rr4k_qd1)        echo "--bs 4k --qd 1 --rw read --pattern rand" ;;
	sr256k_qd8)      echo "--bs 256k --qd 8 --rw read --pattern seq" ;;
	sw256k_qd8)      echo "--bs 256k --qd 8 --rw write --pattern seq" ;;
	mixed70_qd32_s4) echo "--bs 4k --qd 32 --sessions 4 --rw mixed --mix 70 --pattern rand" ;;
	*) echo "vs-tgt.sh: unknown workload $1" >&2; return 1 ;;
	esac
}
workload_title() {
	case $1 in
	rr4k_qd32)       echo "4 KiB random read, QD32" ;;
	rw4k_qd32_flush) echo "4 KiB random write, QD32, SYNC CACHE every 32 writes" ;;
	rr4k_qd1)        echo "4 KiB random read, QD1" ;;
	sr256k_qd8)      echo "256 KiB sequential read, QD8" ;;
	sw256k_qd8)      echo "256 KiB sequential write, QD8" ;;
	mixed70_qd32_s4) echo "4 KiB random 70/30 read/write, 4 sessions x QD32" ;;
	esac
}
for w in $WORKLOADS; do workload_args "$w" >/dev/null; done
for s in $SYSTEMS; do
	case $s in tgt-default|tgt-tuned|tandem) ;; *) echo "vs-tgt.sh: unknown system $s" >&2; exit 2 ;; esac
done

# ---- dependencies and build ----------------------------------------------------
if [ $DO_DEPS = 1 ]; then
	"$SRC/packaging/deps.sh"
fi
if [ $DO_BUILD = 1 ]; then
	cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	targets="--target tandem-bench"
	case " $SYSTEMS " in *" tandem "*) targets="$targets --target tandemd" ;; esac
	# shellcheck disable=SC2086
	cmake --build "$BUILD" -j "$(nproc)" $targets
fi
BENCH="$BUILD/tools/tandem-bench/tandem-bench"
TANDEMD="$BUILD/daemon/tandemd"
[ -x "$BENCH" ] || { echo "vs-tgt.sh: $BENCH not built" >&2; exit 1; }
case " $SYSTEMS " in *" tandem "*)
	[ -x "$TANDEMD" ] || { echo "vs-tgt.sh: $TANDEMD not built" >&2; exit 1; } ;;
esac
case " $SYSTEMS " in *" tgt-"*)
	command -v tgtd >/dev/null && command -v tgtadm >/dev/null ||
		{ echo "vs-tgt.sh: tgtd/tgtadm not installed" >&2; exit 1; } ;;
esac

TPIN="" GPIN=""
[ $PIN = 0 ] || { TPIN="taskset -c 1"; GPIN="taskset -c 0"; }

# ---- scratch space and cleanup ---------------------------------------------------
source "$SRC/bench/lib.sh"
bench_workdir vs-tgt

# One image, fully allocated and random (no holes for either target to skip,
# nothing for a compressing store to squeeze), copied for each target.
echo "vs-tgt.sh: preparing a $SIZE image in $WORK"
head -c "$SIZE_BYTES" /dev/urandom >"$WORK/master.img"
cp --sparse=never "$WORK/master.img" "$WORK/tgt.img"
cp --sparse=never "$WORK/master.img" "$WORK/tandem.img"
rm -f "$WORK/master.img"

warm_cache() {
	cat "$WORK/tgt.img" "$WORK/tandem.img" >/dev/null
}

# ---- tgt --------------------------------------------------------------------------
TGT_PID=""
TGT_PORT=""
TGT_IQN_DEFAULT="iqn.2026-11.io.tandem:vs-tgt-default"
TGT_IQN_TUNED="iqn.2026-11.io.tandem:vs-tgt-tuned"
start_tgt() {
	local ctl started=0
	# A private control port keeps us off any tgtd the machine already runs;
	# if it (or the portal) races with someone else's, try another pair.
	for _ in 1 2 3 4 5; do
		TGT_PORT=$(free_port)
		ctl=$(( (RANDOM % 50000) + 10000 ))
		$TPIN tgtd -f -C "$ctl" --iscsi "portal=127.0.0.1:$TGT_PORT" >"$WORK/tgtd.log" 2>&1 &
		TGT_PID=$!
		PIDS+=("$TGT_PID")
		if wait_port "$TGT_PORT" "$TGT_PID"; then
			started=1
			break
		fi
		kill -KILL "$TGT_PID" 2>/dev/null || true
		wait "$TGT_PID" 2>/dev/null || true
	done
	[ $started = 1 ] || { cat "$WORK/tgtd.log" >&2; echo "vs-tgt.sh: tgtd did not start" >&2; exit 1; }
	local adm="tgtadm -C $ctl --lld iscsi"
	# Two targets on the one tgtd and the one file: tid 1 keeps the
	# defaults, tid 2 is tuned. LUN 0 of a tgt target is its controller;
	# the disk is LUN 1. Runs never overlap, so sharing the file is fine.
	$adm --op new --mode target --tid 1 -T "$TGT_IQN_DEFAULT"
	$adm --op new --mode target --tid 2 -T "$TGT_IQN_TUNED"
	for tid in 1 2; do
		$adm --op new --mode logicalunit --tid $tid --lun 1 -b "$WORK/tgt.img"
		$adm --op bind --mode target --tid $tid -I 127.0.0.1
	done
	$adm --op update --mode target --tid 2 --name MaxRecvDataSegmentLength --value 262144
	$adm --op update --mode target --tid 2 --name MaxXmitDataSegmentLength --value 262144
	$adm --op update --mode target --tid 2 --name InitialR2T --value No
	$adm --op update --mode target --tid 2 --name ImmediateData --value Yes
	$adm --op show --mode target >"$WORK/tgt-show.txt"
}

# ---- tandem -------------------------------------------------------------------------
TANDEM_PID=""
TANDEM_PORT=""
TANDEM_IQN="iqn.2026-11.io.tandem:bench"
start_tandem() {
	mkdir -p "$WORK/tandem-data"
	cat >"$WORK/tandem.json" <<EOF
{
  "devices": [
    { "name": "bench", "type": "flat", "path": "$WORK/tandem.img", "size": "$SIZE", "block_size": 512 }
  ],
  "targets": [
    { "iqn": "$TANDEM_IQN", "allow_any_initiator": true, "luns": { "0": "bench" } }
  ]
}
EOF
	TANDEM_PORT=$(free_port)
	# shellcheck disable=SC2086
	$TPIN "$TANDEMD" --data-dir "$WORK/tandem-data" --portal "127.0.0.1:$TANDEM_PORT" --mgmt off \
		--config "$WORK/tandem.json" $TANDEM_ARGS >"$WORK/tandemd.log" 2>&1 &
	TANDEM_PID=$!
	PIDS+=("$TANDEM_PID")
	wait_port "$TANDEM_PORT" "$TANDEM_PID" || { cat "$WORK/tandemd.log" >&2; echo "vs-tgt.sh: tandemd did not start" >&2; exit 1; }
}

system_url() {
	case $1 in
	tgt-default) echo "iscsi://127.0.0.1:$TGT_PORT/$TGT_IQN_DEFAULT/1" ;;
	tgt-tuned)   echo "iscsi://127.0.0.1:$TGT_PORT/$TGT_IQN_TUNED/1" ;;
	tandem)      echo "iscsi://127.0.0.1:$TANDEM_PORT/$TANDEM_IQN/0" ;;
	esac
}
system_pid() {
	case $1 in
	tgt-*) echo "$TGT_PID" ;;
	tandem) echo "$TANDEM_PID" ;;
	esac
}

case " $SYSTEMS " in *" tgt-"*) start_tgt ;; esac
case " $SYSTEMS " in *" tandem "*) start_tandem ;; esac

# ---- the runs -------------------------------------------------------------------------
# results.tsv: system workload run iops mbps p50_us p99_us p999_us target_cpu_s
#              iops_per_cpu bench_cpu_s errors
RES="$WORK/results.tsv"
: >"$RES"
FAILED=0

jnum() {  # jnum FILE KEY [LINE-PREFIX]: a number from tandem-bench's JSON, or ""
	local line
	if [ -n "${3:-}" ]; then line=$(grep "^  \"$3\":" "$1" || true); else line=$(cat "$1"); fi
	{ echo "$line" | grep -o "\"$2\": [-0-9.eE+]*" || true; } | head -n 1 | awk '{print $2}'
}

run_one() {
	local sys=$1 w=$2 r=$3 json="$WORK/run.json" rc=0
	warm_cache
	# shellcheck disable=SC2046
	$GPIN "$BENCH" --url "$(system_url "$sys")" $(workload_args "$w") --time "$SECONDS_PER_RUN" \
		--ramp "$RAMP" --target-pid "$(system_pid "$sys")" --json --seed "$r" \
		--threads "$BENCH_THREADS" $CORK_ARG \
		>"$json" 2>"$WORK/run.err" || rc=$?
	if [ $rc != 0 ] || ! grep -q '"iops"' "$json"; then
		echo "  $sys $w run $r: tandem-bench exited $rc" >&2
		sed 's/^/    /' "$WORK/run.err" >&2
		FAILED=1
		return 0
	fi
	local cpu ipc
	cpu=$(jnum "$json" target_cpu_s); ipc=$(jnum "$json" iops_per_target_cpu_s)
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$sys" "$w" "$r" \
		"$(jnum "$json" iops)" "$(jnum "$json" mbps)" \
		"$(jnum "$json" p50_us lat)" "$(jnum "$json" p99_us lat)" "$(jnum "$json" p999_us lat)" \
		"${cpu:-nan}" "${ipc:-nan}" "$(jnum "$json" bench_cpu_s)" "$(jnum "$json" errors)" >>"$RES"
	printf '  %-12s %-16s run %d: %10.0f IOPS %8.1f MB/s  p50 %7.1f us  p99 %7.1f us  %8.0f IOPS/target-CPU-s\n' \
		"$sys" "$w" "$r" "$(jnum "$json" iops)" "$(jnum "$json" mbps)" \
		"$(jnum "$json" p50_us lat)" "$(jnum "$json" p99_us lat)" "${ipc:-0}"
}

n_sys=$(echo $SYSTEMS | wc -w)
n_wl=$(echo $WORKLOADS | wc -w)
est=$(awk -v n="$((n_wl * n_sys * RUNS))" -v s="$SECONDS_PER_RUN" -v r="$RAMP" \
	'BEGIN { printf "%.0f", n * (s + r + 1) / 60 + 0.5 }')
echo "vs-tgt.sh: $n_wl workloads x $n_sys systems x $RUNS runs of ${RAMP}+${SECONDS_PER_RUN} s (~$est min)"
for w in $WORKLOADS; do
	echo "== $w: $(workload_title "$w")"
	for r in $(seq 1 "$RUNS"); do
		# A B C, then C B A: each system goes first and last equally often.
		if [ $((r % 2)) = 1 ]; then order=$SYSTEMS; else order=$(echo $SYSTEMS | tr ' ' '\n' | tac | tr '\n' ' '); fi
		for s in $order; do run_one "$s" "$w" "$r"; done
	done
done

# ---- the report -------------------------------------------------------------------------
median() {  # median SYSTEM WORKLOAD COLUMN (1-based in results.tsv)
	awk -F'\t' -v s="$1" -v w="$2" -v c="$3" '$1 == s && $2 == w && $c != "nan" && $c != "" { print $c }' "$RES" |
		sort -g | awk '{ v[NR] = $1 } END {
			if (NR == 0) { print "nan"; exit }
			if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

COL_IOPS=4 COL_MBPS=5 COL_P50=6 COL_P99=7 COL_P999=8 COL_CPU=9 COL_IPC=10 COL_BCPU=11

host=$(hostname -s 2>/dev/null || hostname)
date_s=$(date -u +%Y-%m-%d)
# A quick run is a harness check, not a result: its name says so.
suffix=""
[ $QUICK = 1 ] && suffix="-quick"
[ -n "$OUT" ] || OUT="$HERE/results/$date_s-$host$suffix.md"
mkdir -p "$(dirname "$OUT")"
cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
[ -n "$cpu_model" ] || cpu_model=$(uname -m)
rev=$(git -C "$SRC" rev-parse --short HEAD 2>/dev/null || echo unknown)

# One table row: a metric across the systems and tandem's ratio to the best
# tgt (or to each tgt, for the sequential goal), with the goal and verdict.
# dir "hi": higher is better; "lo": lower is better.
row() {
	local w=$1 label=$2 col=$3 dir=$4 goal=$5 fmt=$6
	local d t x
	d=$(median tgt-default "$w" "$col"); t=$(median tgt-tuned "$w" "$col"); x=$(median tandem "$w" "$col")
	awk -v w="$w" -v label="$label" -v dir="$dir" -v goal="$goal" -v fmt="$fmt" \
	    -v d="$d" -v t="$t" -v x="$x" 'function f(v) { return v == "nan" ? "n/a" : sprintf(fmt, v) }
	function ok(v) { return v != "nan" && v != "" }
	BEGIN {
		best = "nan"
		if (ok(d)) best = d
		if (ok(t) && (best == "nan" || (dir == "hi" ? t + 0 > best + 0 : t + 0 < best + 0))) best = t
		ratio = "n/a"; verdict = ""
		if (ok(x) && best != "nan" && best + 0 > 0) {
			r = x / best; ratio = sprintf("%.2fx", r)
		}
		gtext = "—"
		if (goal ~ /^seq:/) {
			# 256 KiB goal: >= a x tgt default and >= b x tgt tuned
			split(substr(goal, 5), g, ",")
			gtext = sprintf(">= %.1fx default, >= %.1fx tuned", g[1], g[2])
			if (ok(x) && ok(d) && ok(t) && d > 0 && t > 0) {
				rd = x / d; rt = x / t
				ratio = sprintf("%.2fx / %.2fx", rd, rt)
				verdict = (rd >= g[1] && rt >= g[2]) ? "met" : "**not met**"
			}
		} else if (goal != "") {
			gtext = (dir == "hi" ? ">= " : "<= ") goal "x"
			if (ratio != "n/a")
				verdict = ((dir == "hi" && r >= goal) || (dir == "lo" && r <= goal)) ? "met" : "**not met**"
		}
		printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", w, label, f(d), f(t), f(x), ratio, gtext, verdict
	}'
}

{
	echo "# tandem vs tgt — $date_s on $host"
	if [ $QUICK = 1 ]; then
		echo
		echo "**--quick run: a check of the harness, too short for conclusions.**"
	fi
	echo
	echo "| | |"
	echo "|---|---|"
	echo "| CPU | $cpu_model ($(nproc) CPUs online) |"
	echo "| kernel | $(uname -r) |"
	echo "| tgt | $(tgtd -V 2>/dev/null || echo unknown) (Debian package, default thread count) |"
	echo "| tandem | git $rev, flat device |"
	echo "| libiscsi | $(pkg-config --modversion libiscsi 2>/dev/null || echo unknown) |"
	echo "| image | $SIZE random data, one copy per target, page cache warm (read before every run) |"
	echo "| runs | $RUNS per workload and system, ${RAMP} s ramp + ${SECONDS_PER_RUN} s measured, alternating order |"
	echo "| generator | tandem-bench, $BENCH_THREADS thread(s), same host, over 127.0.0.1, $([ -n "$CORK_ARG" ] && echo "libiscsi's own sends (--no-cork): a segment per PDU header and per data segment" || echo "each round's commands sent corked (TCP_CORK)") |"
	[ $PIN = 0 ] || echo "| placement | targets pinned to CPU 1, generator to CPU 0 (--pin) |"
	echo
	echo "Medians of $RUNS runs. *tgt tuned*: MaxRecvDataSegmentLength and"
	echo "MaxXmitDataSegmentLength 262144, InitialR2T=No, ImmediateData=Yes. The ratio"
	echo "is tandem over the better tgt of the two (for latency, the lower); for the"
	echo "256 KiB rows it is tandem over tgt default / tgt tuned."
	echo
	echo "| workload | metric | tgt default | tgt tuned | tandem | tandem / tgt | goal | |"
	echo "|---|---|---:|---:|---:|---:|---|---|"
	for w in $WORKLOADS; do
		case $w in
		rr4k_qd32)
			row "$w" "IOPS" $COL_IOPS hi 2.0 "%.0f"
			row "$w" "p99 latency (us)" $COL_P99 lo "" "%.0f" ;;
		rw4k_qd32_flush)
			row "$w" "IOPS" $COL_IOPS hi 2.0 "%.0f"
			row "$w" "p99 latency (us)" $COL_P99 lo "" "%.0f" ;;
		rr4k_qd1)
			row "$w" "p50 latency (us)" $COL_P50 lo 0.6 "%.1f"
			row "$w" "p99 latency (us)" $COL_P99 lo 0.5 "%.1f"
			row "$w" "IOPS" $COL_IOPS hi "" "%.0f" ;;
		sr256k_qd8|sw256k_qd8)
			row "$w" "MB/s" $COL_MBPS hi "seq:1.5,1.2" "%.0f" ;;
		mixed70_qd32_s4)
			row "$w" "IOPS" $COL_IOPS hi "" "%.0f"
			row "$w" "p99 latency (us)" $COL_P99 lo "" "%.0f" ;;
		esac
		row "$w" "IOPS per target CPU-s" $COL_IPC hi 2.5 "%.0f"
	done
	echo
	echo "Generator CPU (median CPU-seconds tandem-bench used per run; near"
	echo "${SECONDS_PER_RUN} s means the generator, not the target, set the pace):"
	echo
	echo "| workload | tgt default | tgt tuned | tandem |"
	echo "|---|---:|---:|---:|"
	for w in $WORKLOADS; do
		echo "| $w | $(median tgt-default "$w" $COL_BCPU) | $(median tgt-tuned "$w" $COL_BCPU) | $(median tandem "$w" $COL_BCPU) |"
	done
	echo
	echo "Reproduce: \`bench/vs-tgt.sh --runs $RUNS --seconds $SECONDS_PER_RUN --ramp $RAMP --size $SIZE --bench-threads $BENCH_THREADS${TANDEM_ARGS:+ --tandem-args \"$TANDEM_ARGS\"}$([ $PIN = 0 ] || echo " --pin")${CORK_ARG:+ $CORK_ARG}\`" \
		"(workloads: $WORKLOADS; systems: $SYSTEMS)"
	echo
	echo "<details><summary>all runs</summary>"
	echo
	echo "| system | workload | run | IOPS | MB/s | p50 us | p99 us | p99.9 us | target CPU s | IOPS/CPU-s | bench CPU s | errors |"
	echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
	sed 's/\t/ | /g; s/^/| /; s/$/ |/' "$RES"
	echo
	echo "</details>"
} >"$OUT"

echo "vs-tgt.sh: report written to $OUT"
awk '/^\| workload \| metric/ { p = 1 } p && /^$/ { exit } p' "$OUT"
exit $FAILED
