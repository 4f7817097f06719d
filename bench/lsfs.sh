#!/usr/bin/env bash
# lsfs.sh — the lsfs goals of the lsfs issue, measured on this machine.
#
#  1. 4 KiB random writes, QD32, SYNCHRONIZE CACHE every 32 writes: an lsfs
#     device vs a flat device of the same size on the same file system,
#     alternating runs (A B, B A, ...), medians. Goal: lsfs >= 1.5x flat.
#  2. GC write amplification under sustained 4 KiB random overwrites of a
#     device whose LBAs are 80 % written; IOPS while cleaning vs before
#     cleaning began. Goals: WA <= 2.0, IOPS >= 0.6x. Part 2s: the same
#     with a skewed load (80 % of the writes to 20 % of the blocks).
#  3. Block map RAM per mapped 4 KiB block after the fill. Goal <= 16 B.
#  4. Start-up time of a 10 GiB lsfs device with 1 GiB written, after
#     SIGKILL (log replay) and after a clean SIGTERM.
#
# Everything goes through iSCSI over 127.0.0.1 (tandem-bench) and the
# management API of a tandemd started here on free ports. Every process
# started here is killed on exit and every file made here is removed.
# See bench/README.md.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/.." && pwd)
BUILD=${TND_BUILD:-$SRC/build}

RUNS=5
SECONDS_PER_RUN=10
RAMP=2
SIZE=1GiB          # part 1 devices, part 2 device
GC_SECONDS=90      # part 2: random overwrite time after the fill
GC_STEP=2          # part 2: length of one tandem-bench run in the overwrite phase
BIG=10GiB          # part 4 device
BIG_WRITE=1GiB     # part 4: bytes written before the restarts
OUT=""
DO_BUILD=1
DO_DEPS=1
QUICK=0
NOTE=""
PARTS="1,2,2s,4"
COMPRESS=none      # parts 2-3: the GC devices' compress option

usage() {
	cat <<EOF
usage: bench/lsfs.sh [options]
  --quick            smoke check: 3 runs of 1+3 s, 256 MiB devices, 30 s of GC
  --runs N           part 1 runs per device (default $RUNS)
  --seconds S        part 1 measured seconds per run (default $SECONDS_PER_RUN)
  --ramp S           part 1 unmeasured warm-up per run (default $RAMP)
  --size SIZE        part 1 and 2 device size (default $SIZE)
  --gc-seconds S     part 2 overwrite time (default $GC_SECONDS)
  --out FILE         report path (default bench/results/<date>-<host>-lsfs.md)
  --no-build         use the binaries in \$TND_BUILD (default build/) as they are
  --no-deps          do not call packaging/deps.sh
  --note TEXT        a line for the report's header (e.g. "shared 2-core VM")
  --parts LIST       which parts to run, comma-separated from 1,2,2s,4 (default $PARTS;
                     3 comes with 2 or 2s)
  --compress lz4     parts 2-3: GC devices store LZ4 (compress "lz4") and every write
                     carries text-like data (tandem-bench --data text, about 2-3x with
                     LZ4); WA is still backing bytes over client bytes, so it can be < 1
EOF
}

while [ $# -gt 0 ]; do
	case $1 in
	--quick) QUICK=1; RUNS=3; SECONDS_PER_RUN=3; RAMP=1; SIZE=256MiB; GC_SECONDS=30 ;;
	--runs) RUNS=$2; shift ;;
	--seconds) SECONDS_PER_RUN=$2; shift ;;
	--ramp) RAMP=$2; shift ;;
	--size) SIZE=$2; shift ;;
	--gc-seconds) GC_SECONDS=$2; shift ;;
	--out) OUT=$2; shift ;;
	--no-build) DO_BUILD=0 ;;
	--no-deps) DO_DEPS=0 ;;
	--note) NOTE=$2; shift ;;
	--parts) PARTS=$2; shift ;;
	--compress) COMPRESS=$2; shift ;;
	-h|--help) usage; exit 0 ;;
	*) echo "lsfs.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
	esac
	shift
done
case $RUNS in ''|*[!0-9]*|0) echo "lsfs.sh: --runs wants a positive number" >&2; exit 2 ;; esac
for p in ${PARTS//,/ }; do
	case $p in 1|2|2s|4) ;; *) echo "lsfs.sh: --parts: unknown part $p" >&2; exit 2 ;; esac
done
case $COMPRESS in none|lz4) ;; *) echo "lsfs.sh: --compress wants lz4 or none" >&2; exit 2 ;; esac
# What the GC devices' writes carry: random (incompressible) unless --compress.
GC_DATA=random
[ "$COMPRESS" = none ] || GC_DATA=text
has_part() { case ",$PARTS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

size_bytes() {
	local s=$1 n unit
	n=${s%%[!0-9]*}
	unit=${s#"$n"}
	case $unit in
	''|B) echo "$n" ;;
	K|KiB|k) echo $((n << 10)) ;;
	M|MiB) echo $((n << 20)) ;;
	G|GiB) echo $((n << 30)) ;;
	*) echo "lsfs.sh: bad size $s" >&2; return 1 ;;
	esac
}
SIZE_BYTES=$(size_bytes "$SIZE")
BIG_BYTES=$(size_bytes "$BIG")
BIG_WRITE_BYTES=$(size_bytes "$BIG_WRITE")
[ $((SIZE_BYTES % (4 << 20))) = 0 ] || { echo "lsfs.sh: --size must be a multiple of 4 MiB" >&2; exit 2; }

# ---- dependencies and build ----------------------------------------------------
if [ $DO_DEPS = 1 ]; then
	"$SRC/packaging/deps.sh"
fi
if [ $DO_BUILD = 1 ]; then
	cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build "$BUILD" -j "$(nproc)" --target tandem-bench --target tandemd
fi
BENCH="$BUILD/tools/tandem-bench/tandem-bench"
TANDEMD="$BUILD/daemon/tandemd"
for b in "$BENCH" "$TANDEMD"; do [ -x "$b" ] || { echo "lsfs.sh: $b not built" >&2; exit 1; }; done
command -v curl >/dev/null || { echo "lsfs.sh: curl not installed" >&2; exit 1; }

# ---- scratch space and cleanup ---------------------------------------------------
source "$SRC/bench/lib.sh"
bench_workdir lsfs
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

IQN="iqn.2026-11.io.tandem:lsfs-bench"
TPID="" PORT="" MGMT="" DATA=""
# start_tandemd DATA-DIR CONFIG: starts tandemd, sets TPID/PORT/MGMT/DATA and
# START_MS (ms from exec to the portal accepting). Ports are kept across
# restarts of the same data dir.
start_tandemd() {
	DATA=$1
	[ -n "$PORT" ] || PORT=$(free_port)
	[ -n "$MGMT" ] || MGMT=$(free_port)
	local t0
	t0=$(now_ms)
	"$TANDEMD" --data-dir "$DATA" --portal "127.0.0.1:$PORT" --mgmt "127.0.0.1:$MGMT" \
		--config "$2" >>"$DATA/tandemd.log" 2>&1 &
	TPID=$!
	PIDS+=("$TPID")
	if ! wait_port "$PORT" "$TPID" 12000; then
		tail -20 "$DATA/tandemd.log" >&2
		echo "lsfs.sh: tandemd did not start" >&2
		exit 1
	fi
	START_MS=$(( $(now_ms) - t0 ))
	wait_port "$MGMT" "$TPID" 500 || true
}
stop_tandemd() {  # stop_tandemd SIGNAL
	kill "-$1" "$TPID" 2>/dev/null || true
	wait "$TPID" 2>/dev/null || true
	TPID=""
}
url() { echo "iscsi://127.0.0.1:$PORT/$IQN/$1"; }
devstats() {  # devstats NAME FILE: GET /v1/devices/NAME into FILE
	curl -sf -H "Authorization: Bearer $(cat "$DATA/api.token")" \
		"http://127.0.0.1:$MGMT/v1/devices/$1" >"$2"
}
# jget FILE KEY: first "KEY": number in FILE (JSON pretty-printed or not)
jget() {  # jget FILE KEY: empty when the file is missing (a part that did not run)
	{ grep -so "\"$2\": *[-0-9.eE+]*" "$1" || true; } | head -n 1 | sed 's/.*: *//'
}
jnum() {  # jnum FILE KEY [LINE-PREFIX]: a number from tandem-bench's JSON
	local line
	if [ -n "${3:-}" ]; then line=$(grep "^  \"$3\":" "$1" || true); else line=$(cat "$1"); fi
	{ echo "$line" | grep -o "\"$2\": [-0-9.eE+]*" || true; } | head -n 1 | awk '{print $2}'
}
FAILED=0
bench() {  # bench OUT.json ARGS...: run tandem-bench, JSON into OUT.json
	local out=$1 rc=0
	shift
	"$BENCH" "$@" --json >"$out" 2>"$WORK/bench.err" || rc=$?
	if [ $rc != 0 ] || ! grep -q '"iops"' "$out"; then
		echo "  tandem-bench $* exited $rc" >&2
		sed 's/^/    /' "$WORK/bench.err" >&2
		FAILED=1
		return 1
	fi
}

# ---- part 1-3: one tandemd with an lsfs, a flat and a GC device -------------------
D1="$WORK/d1"
mkdir -p "$D1"
# The flat image is preallocated (as a flat image in service would be), so
# its writes do not pay for block allocation; lsfs makes its own sparse file.
fallocate -l "$SIZE_BYTES" "$D1/flat.img"
cat >"$D1/tandem.json" <<EOF
{
  "devices": [
    { "name": "lsfs", "type": "lsfs", "size": "$SIZE", "block_size": 512 },
    { "name": "flat", "type": "flat", "path": "$D1/flat.img", "size": "$SIZE", "block_size": 512 },
    { "name": "gc", "type": "lsfs", "size": "$SIZE", "block_size": 512, "compress": "$COMPRESS" },
    { "name": "gcs", "type": "lsfs", "size": "$SIZE", "block_size": 512, "compress": "$COMPRESS" }
  ],
  "targets": [
    { "iqn": "$IQN", "allow_any_initiator": true,
      "luns": { "0": "lsfs", "1": "flat", "2": "gc", "3": "gcs" } }
  ]
}
EOF
start_tandemd "$D1" "$D1/tandem.json"
echo "lsfs.sh: tandemd pid $TPID, portal 127.0.0.1:$PORT, work dir $WORK"

# Part 1 ------------------------------------------------------------------------------
R1="$WORK/p1.tsv"   # device run iops p50 p99 target_cpu_s
: >"$R1"
has_part 1 && echo "== 1: 4 KiB random write QD32, flush every 32: lsfs vs flat, $RUNS runs of ${RAMP}+${SECONDS_PER_RUN} s"
for r in $(seq 1 "$RUNS"); do
	has_part 1 || break
	if [ $((r % 2)) = 1 ]; then order="lsfs flat"; else order="flat lsfs"; fi
	for dev in $order; do
		case $dev in lsfs) lun=0 ;; flat) lun=1 ;; esac
		j="$WORK/p1-$dev-$r.json"
		bench "$j" --url "$(url $lun)" --bs 4k --qd 32 --rw write --pattern rand --flush-every 32 \
			--time "$SECONDS_PER_RUN" --ramp "$RAMP" --seed "$r" --target-pid "$TPID" || continue
		printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$dev" "$r" "$(jnum "$j" iops)" \
			"$(jnum "$j" p50_us lat)" "$(jnum "$j" p99_us lat)" "$(jnum "$j" target_cpu_s)" >>"$R1"
		printf '  %-5s run %d: %9.0f IOPS  p50 %8.1f us  p99 %8.1f us\n' "$dev" "$r" \
			"$(jnum "$j" iops)" "$(jnum "$j" p50_us lat)" "$(jnum "$j" p99_us lat)"
	done
done
# Part 1's premise, measured: a log-structured store beats in-place writes
# where the backing writes scattered 4 KiB pages back much slower than a
# sequential stream. Write 64 MiB of 4 KiB pages into a preallocated 1 GiB
# file on the same file system, at random offsets or in order, and time the
# fdatasync that writes them back; three rounds each, best of three.
WB_RAND="nan" WB_SEQ="nan"
if has_part 1 && command -v python3 >/dev/null; then
	read -r WB_RAND WB_SEQ < <(python3 - "$WORK/writeback.img" <<'PYEOF'
import os, random, sys, time
path, size, n = sys.argv[1], 1 << 30, 16384
fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
os.posix_fallocate(fd, 0, size)
os.fsync(fd)
buf = os.urandom(4096)
rng = random.Random(1)
best = {"rand": 0.0, "seq": 0.0}
for r in range(3):
	for kind in ("rand", "seq"):
		if kind == "rand":
			offs = [rng.randrange(size // 4096) * 4096 for _ in range(n)]
		else:
			base = (r * n * 4096) % (size - n * 4096)
			offs = [base + i * 4096 for i in range(n)]
		for o in offs:
			os.pwrite(fd, buf, o)
		t = time.monotonic()
		os.fdatasync(fd)
		best[kind] = max(best[kind], n / (time.monotonic() - t))
os.close(fd)
os.unlink(path)
print("%.0f %.0f" % (best["rand"], best["seq"]))
PYEOF
	) || true
	echo "  backing writeback: random $WB_RAND, sequential $WB_SEQ 4 KiB pages/s"
fi
median1() {  # median1 DEVICE COLUMN
	awk -F'\t' -v d="$1" -v c="$2" '$1 == d && $c != "" { print $c }' "$R1" | sort -g |
		awk '{ v[NR] = $1 } END { if (NR == 0) { print "nan"; exit }
			if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# Part 2 and 3 -------------------------------------------------------------------------
# Fill 80 % of a GC device's LBAs once, sequentially, then overwrite that
# working set at random (uniform: device gc; 80/20 with --hot 80: device
# gcs) in back-to-back runs of GC_STEP seconds, reading the counters after
# each run. Columns of $WORK/p2-NAME.tsv: step t iops write_bytes gc_passes
# gc_moved_blocks records segments free_segments checkpoints
# backing_bytes_written client_bytes_written gc_bytes_written
# ckpt_bytes_written reclaimed_segments
WS=$(( SIZE_BYTES / 5 * 4 / (1 << 20) * (1 << 20) ))
gc_row() {  # gc_row STEP T BENCH-JSON STATS-JSON
	local k row
	row="$1	$2	$(jnum "$3" iops)"
	for k in write_bytes gc_passes gc_moved_blocks records segments free_segments checkpoints \
		backing_bytes_written client_bytes_written gc_bytes_written ckpt_bytes_written \
		reclaimed_segments; do
		row="$row	$(jget "$4" "$k")"
	done
	echo "$row"
}
run_gc() {  # run_gc NAME LUN [tandem-bench args]: the fill, then the overwrite phase
	local name=$1 lun=$2
	shift 2
	local r2="$WORK/p2-$name.tsv" j cur step=0 elapsed=0
	: >"$r2"
	echo "== 2 ($name): fill $((WS >> 20)) MiB of the $SIZE device (256 KiB sequential writes)"
	bench "$WORK/fill-$name.json" --url "$(url "$lun")" --bs 256k --qd 8 --rw write --pattern seq \
		--size "$WS" --count $((WS / 262144)) --seed 7 --data "$GC_DATA" || true
	sleep 0.5
	devstats "$name" "$WORK/gc-$name-0.json"
	echo "   mapped_blocks $(jget "$WORK/gc-$name-0.json" mapped_blocks), map_bytes $(jget "$WORK/gc-$name-0.json" map_bytes)"
	echo "== 2 ($name): random 4 KiB overwrites $* of the $((WS >> 20)) MiB working set, QD32, ${GC_SECONDS} s in ${GC_STEP} s runs"
	# A first, short run sized to fit in the free segments above GC's
	# low-water mark (1 % of the segments, 4..64), so that it sees no
	# cleaning: the "before GC" IOPS. Later runs start when that room is used up.
	local f0 s0 seg0 low probe
	f0=$(jget "$WORK/gc-$name-0.json" free_segments); s0=$(jget "$WORK/gc-$name-0.json" segments)
	seg0=$(jget "$WORK/gc-$name-0.json" segment_size)
	low=$(( s0 / 100 )); [ "$low" -ge 4 ] || low=4; [ "$low" -le 64 ] || low=64
	probe=$(( (f0 - low - 2) * (seg0 / 4096) / 2 ))
	if [ "$probe" -ge 2000 ]; then
		step=1
		j="$WORK/gc-$name-run-1.json"
		if bench "$j" --url "$(url "$lun")" --bs 4k --qd 32 --rw write --pattern rand --size "$WS" \
			--count "$probe" --seed 100 --data "$GC_DATA" "$@"; then
			cur="$WORK/gc-$name-1.json"
			devstats "$name" "$cur"
			gc_row "$step" "0 (probe, $probe writes)" "$j" "$cur" >>"$r2"
			printf '  probe (%d writes): %8.0f IOPS  gc_passes %6s  free_segments %s\n' "$probe" \
				"$(jnum "$j" iops)" "$(jget "$cur" gc_passes)" "$(jget "$cur" free_segments)"
		fi
	fi
	while [ "$elapsed" -lt "$GC_SECONDS" ]; do
		step=$((step + 1))
		j="$WORK/gc-$name-run-$step.json"
		bench "$j" --url "$(url "$lun")" --bs 4k --qd 32 --rw write --pattern rand --size "$WS" \
			--time "$GC_STEP" --seed $((100 + step)) --data "$GC_DATA" "$@" || break
		cur="$WORK/gc-$name-$step.json"
		devstats "$name" "$cur"
		gc_row "$step" "$elapsed" "$j" "$cur" >>"$r2"
		printf '  run %2d (t=%3d s): %8.0f IOPS  gc_passes %6s  gc_moved_blocks %9s  free_segments %s\n' \
			"$step" "$elapsed" "$(jnum "$j" iops)" "$(jget "$cur" gc_passes)" \
			"$(jget "$cur" gc_moved_blocks)" "$(jget "$cur" free_segments)"
		elapsed=$((elapsed + GC_STEP))
	done
}
if has_part 2; then run_gc gc 2; fi
if has_part 2s; then run_gc gcs 3 --hot 80; fi
stop_tandemd TERM

# Part 4 ---------------------------------------------------------------------------------
START_EMPTY_MS=nan START_KILL_MS=nan START_TERM_MS=nan
half=$((BIG_WRITE_BYTES / 2))
D4="$WORK/d4"
if has_part 4; then
echo "== 4: start-up of a $BIG lsfs device with $BIG_WRITE written"
D4="$WORK/d4"
mkdir -p "$D4"
cat >"$D4/tandem.json" <<EOF
{
  "devices": [ { "name": "big", "type": "lsfs", "size": "$BIG", "block_size": 512 } ],
  "targets": [ { "iqn": "$IQN", "allow_any_initiator": true, "luns": { "0": "big" } } ]
}
EOF
PORT="" MGMT=""
start_tandemd "$D4" "$D4/tandem.json"
START_EMPTY_MS=$START_MS
# Half the bytes in 256 KiB sequential writes, half in 4 KiB random ones.
half=$((BIG_WRITE_BYTES / 2))
bench "$WORK/big-seq.json" --url "$(url 0)" --bs 256k --qd 8 --rw write --pattern seq \
	--size "$half" --count $((half / 262144)) --seed 11 || true
bench "$WORK/big-rand.json" --url "$(url 0)" --bs 4k --qd 32 --rw write --pattern rand \
	--count $((half / 4096)) --seed 12 || true
devstats big "$WORK/big-0.json"
echo "   written; mapped_blocks $(jget "$WORK/big-0.json" mapped_blocks), backing file $(du -m "$D4/big.lsfs" | cut -f1) MiB"
# SIGKILL in the middle of more random writes, so that the log has a tail
# written after the last checkpoint that the next start must replay.
"$BENCH" --url "$(url 0)" --bs 4k --qd 32 --rw write --pattern rand --time 60 --seed 13 \
	>/dev/null 2>&1 &
LOADPID=$!
PIDS+=("$LOADPID")
sleep 2
devstats big "$WORK/big-0k.json" || cp "$WORK/big-0.json" "$WORK/big-0k.json"
stop_tandemd KILL
wait "$LOADPID" 2>/dev/null || true
start_tandemd "$D4" "$D4/tandem.json"
START_KILL_MS=$START_MS
echo "   after SIGKILL: portal accepting after ${START_KILL_MS} ms"
devstats big "$WORK/big-1.json"
stop_tandemd TERM
start_tandemd "$D4" "$D4/tandem.json"
START_TERM_MS=$START_MS
echo "   after SIGTERM: portal accepting after ${START_TERM_MS} ms"
devstats big "$WORK/big-2.json"
stop_tandemd TERM
echo "   (empty device, first start: ${START_EMPTY_MS} ms)"
fi

# ---- the figures --------------------------------------------------------------------------
L_IOPS=$(median1 lsfs 3); F_IOPS=$(median1 flat 3)
L_P99=$(median1 lsfs 5); F_P99=$(median1 flat 5)
RATIO1=$(awk -v a="$L_IOPS" -v b="$F_IOPS" 'BEGIN { if (a == "nan" || b == "nan" || b <= 0) print "nan"; else printf "%.2f", a / b }')

G0="$WORK/gc-gc-0.json"; [ -s "$G0" ] || G0="$WORK/gc-gcs-0.json"
MAPPED=$(jget "$G0" mapped_blocks 2>/dev/null || true); MAPB=$(jget "$G0" map_bytes 2>/dev/null || true)
BPB=$(awk -v m="$MAPPED" -v b="$MAPB" 'BEGIN { if (m > 0) printf "%.2f", b / m; else print "nan" }')
BIG_MAPPED=$(jget "$WORK/big-0.json" mapped_blocks); BIG_MAPB=$(jget "$WORK/big-0.json" map_bytes)
BIG_BPB=$(awk -v m="$BIG_MAPPED" -v b="$BIG_MAPB" 'BEGIN { if (m > 0) printf "%.2f", b / m; else print "nan" }')

# Write amplification, from lsfs's own counters in the API:
# backing_bytes_written (every byte lsfs wrote to its backing file: log
# records with their 4 KiB headers, GC's moves, checkpoints) over
# client_bytes_written (bytes of completed client WRITEs), as deltas over
# the overwrite phase, and over its second half (steady state). The shares:
# GC's moved payloads, checkpoints, record headers (4 KiB x records).
gc_figures() {  # gc_figures NAME: sets G_* for the report
	local r2="$WORK/p2-$1.tsv" f0="$WORK/gc-$1-0.json" nsteps mid
	G_RUNS=$(wc -l <"$r2")
	read -r G_WA G_DC G_DB G_DG G_DK G_DR G_DP G_NK G_RC < <(tail -n 1 "$r2" | awk -F'\t' \
		-v b0="$(jget "$f0" backing_bytes_written)" -v c0="$(jget "$f0" client_bytes_written)" \
		-v g0="$(jget "$f0" gc_bytes_written)" -v k0="$(jget "$f0" ckpt_bytes_written)" \
		-v r0="$(jget "$f0" records)" -v p0="$(jget "$f0" gc_passes)" \
		-v n0="$(jget "$f0" checkpoints)" -v x0="$(jget "$f0" reclaimed_segments)" \
		'{ dc = $12 - c0; if (dc <= 0) { print "nan 0 0 0 0 0 0 0 0"; exit }
		   printf "%.3f %.0f %.0f %.0f %.0f %.0f %.0f %.0f %.0f\n", ($11 - b0) / dc, dc, $11 - b0,
			$13 - g0, $14 - k0, $7 - r0, $5 - p0, $10 - n0, $15 - x0 }')
	G_SH_GC=$(awk -v a="$G_DG" -v c="$G_DC" 'BEGIN { if (c > 0) printf "%.3f", a / c; else print "nan" }')
	G_SH_CK=$(awk -v a="$G_DK" -v c="$G_DC" 'BEGIN { if (c > 0) printf "%.3f", a / c; else print "nan" }')
	G_SH_HD=$(awk -v a="$G_DR" -v c="$G_DC" 'BEGIN { if (c > 0) printf "%.3f", a * 4096 / c; else print "nan" }')
	G_BPR=$(awk -v r="$G_DR" -v c="$G_DC" 'BEGIN { if (r > 0) printf "%.1f", c / 4096 / r; else print "nan" }')
	nsteps=$G_RUNS
	mid=$(( nsteps / 2 ))
	G_WA2=nan
	if [ "$mid" -ge 1 ]; then
		G_WA2=$(awk -F'\t' -v m="$mid" 'NR == m { b0 = $11; c0 = $12 } END {
			if ($12 - c0 > 0) printf "%.3f", ($11 - b0) / ($12 - c0); else print "nan" }' "$r2")
	fi
	# IOPS before cleaning: the runs during which gc_passes did not move.
	# While cleaning: the median of the second half of the runs.
	local p0 pre_n first_gc
	p0=$(jget "$f0" gc_passes)
	read -r G_PRE G_PRE_N < <(awk -F'\t' -v p0="$p0" '{ if ($5 == p0) { s += $3; n++ } }
		END { if (n) printf "%.0f %d\n", s / n, n; else print "nan 0" }' "$r2")
	G_STEADY=$(awk -F'\t' -v m="$mid" 'NR > m { print $3 }' "$r2" | sort -g |
		awk '{ v[NR] = $1 } END { if (NR == 0) { print "nan"; exit }
			if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
	if [ "$G_PRE_N" -gt 0 ]; then
		G_BASE=$G_PRE; G_BASE_WHAT="mean of the $G_PRE_N run(s) with no GC pass"
	else
		first_gc=$(head -n 1 "$r2" | awk -F'\t' -v p0="$p0" '{ print $5 - p0 }')
		G_BASE=$(head -n 1 "$r2" | cut -f3)
		G_BASE_WHAT="first run (GC already ran $first_gc passes in it: no run was free of GC)"
	fi
	G_RATIO=$(awk -v a="$G_STEADY" -v b="$G_BASE" 'BEGIN { if (a == "nan" || b == "nan" || b <= 0) print "nan"; else printf "%.2f", a / b }')
	G_P0=$p0
}
# The report's section for one GC scenario; summary rows in SUM2.
SUM2=""
gc_section() {  # gc_section NAME TAG TITLE WORKLOAD
	local name=$1 tag=$2
	[ -s "$WORK/p2-$name.tsv" ] || return 0
	gc_figures "$name"
	SUM2="$SUM2| ${tag}a | GC write amplification, $3 (steady half: $G_WA2; GC $G_SH_GC, checkpoints $G_SH_CK, headers $G_SH_HD) | $G_WA | <= 2.0 | $(verdict "$G_WA" "<=" 2.0) |
| ${tag}b | IOPS while cleaning / before cleaning, $3 ($G_STEADY / $G_BASE) | ${G_RATIO}x | >= 0.6x | $(verdict "$G_RATIO" ">=" 0.6) |
"
	{
		echo "### $tag. $3"
		echo
		echo "Device \`$name\`: $SIZE, default capacity ($(jget "$WORK/gc-$name-0.json" segments) segments"
		echo "of $(( $(jget "$WORK/gc-$name-0.json" segment_size) >> 20 )) MiB). The first $((WS >> 20)) MiB of LBAs written once with 256 KiB"
		echo "sequential writes; then \`--bs 4k --qd 32 --rw write --pattern rand --size $WS $4\`"
		echo "(no flushes) in back-to-back runs of ${GC_STEP} s for ${GC_SECONDS} s, the counters read"
		echo "between runs."
		echo
		echo "| over the overwrite phase | |"
		echo "|---|---:|"
		echo "| client bytes written (\`client_bytes_written\`) | $(mib "$G_DC") MiB |"
		echo "| backing bytes written (\`backing_bytes_written\`) | $(mib "$G_DB") MiB |"
		echo "| of which GC's moved payloads (\`gc_bytes_written\`) | $(mib "$G_DG") MiB ($G_SH_GC x client) |"
		echo "| of which checkpoints (\`ckpt_bytes_written\`) | $(mib "$G_DK") MiB in $G_NK checkpoints ($G_SH_CK x client) |"
		echo "| of which record headers (4 KiB x \`records\`) | $(mib $((G_DR * 4096))) MiB in $G_DR records, $G_BPR client blocks per record ($G_SH_HD x client) |"
		echo "| GC passes / dead segments reused after a flush | $G_DP / $G_RC |"
		echo "| **WA = backing / client** | **$G_WA** (second half: $G_WA2) |"
		echo
		echo "IOPS before cleaning: $G_BASE_WHAT. While cleaning: median of the runs in"
		echo "the second half. GC passes during the fill: $G_P0. Run 1 (if t says probe)"
		echo "is a short run sized to fit in the free segments above GC's low-water mark."
		echo
		echo "| run | t (s) | IOPS | gc_passes | gc_moved_blocks | records | free_segments | checkpoints | backing MiB | client MiB |"
		echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
		awk -F'\t' '{ printf "| %s | %s | %.0f | %s | %s | %s | %s | %s | %.0f | %.0f |\n", $1, $2, $3, $5, $6, $7, $9, $10, $11 / 1048576, $12 / 1048576 }' "$WORK/p2-$name.tsv"
		echo
	} >"$WORK/sec-$name.md"
}

verdict() {  # verdict VALUE OP GOAL
	awk -v v="$1" -v op="$2" -v g="$3" 'BEGIN {
		if (v == "nan" || v == "") { print "n/a"; exit }
		ok = (op == ">=") ? (v + 0 >= g + 0) : (v + 0 <= g + 0)
		print ok ? "met" : "**not met**" }'
}

host=$(hostname -s 2>/dev/null || hostname)
date_s=$(date -u +%Y-%m-%d)
suffix=""
[ $QUICK = 1 ] && suffix="-quick"
[ -n "$OUT" ] || OUT="$HERE/results/$date_s-$host-lsfs$suffix.md"
mkdir -p "$(dirname "$OUT")"
cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
[ -n "$cpu_model" ] || cpu_model=$(uname -m)
rev=$(git -C "$SRC" rev-parse --short HEAD 2>/dev/null || echo unknown)
fs=$(df -T "$WORK" | awk 'NR == 2 { print $2 " (" $1 ")" }')
mib() { awk -v b="$1" 'BEGIN { printf "%.0f", b / 1048576 }'; }
gc_section gc 2 "uniform random overwrites" ""
gc_section gcs 2s "skewed overwrites, 80 % of the writes to 20 % of the blocks" "--hot 80"

{
	echo "# lsfs goals — $date_s on $host"
	if [ $QUICK = 1 ]; then
		echo
		echo "**--quick run: a check of the harness, too short for conclusions.**"
	fi
	echo
	echo "| | |"
	echo "|---|---|"
	echo "| CPU | $cpu_model ($(nproc) CPUs online) |"
	echo "| kernel | $(uname -r) |"
	echo "| file system | $fs, under /var/tmp |"
	echo "| tandem | git $rev |"
	echo "| libiscsi | $(pkg-config --modversion libiscsi 2>/dev/null || echo unknown) |"
	echo "| generator | tandem-bench, same host, over 127.0.0.1 |"
	echo "| GC devices (parts 2-3) | compress $COMPRESS, tandem-bench --data $GC_DATA |"
	echo
	if [ -n "$NOTE" ]; then echo "**Machine: $NOTE.**"; echo; fi
	echo "Client, target and the file system share the CPUs: on a small shared VM"
	echo "the figures move with the neighbours' load and the generator competes with"
	echo "tandemd for cycles."
	echo
	echo "## Summary"
	echo
	echo "| # | what | figure | goal | |"
	echo "|---|---|---:|---|---|"
	echo "| 1 | 4 KiB rand write QD32 + flush/32: lsfs / flat IOPS (medians $(printf '%.0f' "$L_IOPS") / $(printf '%.0f' "$F_IOPS")) | ${RATIO1}x | >= 1.5x | $(verdict "$RATIO1" ">=" 1.5) |"
	echo "| 1w | backing file system: fdatasync writeback of scattered / sequential 4 KiB pages (pages/s) | $WB_RAND / $WB_SEQ | — | |"
	printf '%s' "$SUM2"
	echo "| 3 | block map bytes per mapped 4 KiB block after the fill ($MAPB / $MAPPED) | $BPB | <= 16 | $(verdict "$BPB" "<=" 16) |"
	echo "| 4a | start-up, $BIG lsfs with $BIG_WRITE written, after SIGKILL (replay) | ${START_KILL_MS} ms | — | |"
	echo "| 4b | start-up, same, after a clean SIGTERM | ${START_TERM_MS} ms | — | |"
	echo
	echo "## 1. Random writes with flushes, lsfs vs flat"
	echo
	echo "Two $SIZE devices in one tandemd, files on the same file system: \`lsfs\`"
	echo "(default capacity, sparse backing file) and \`flat\` (image preallocated"
	echo "with fallocate). \`tandem-bench --bs 4k --qd 32 --rw write --pattern rand"
	echo "--flush-every 32\`, $RUNS runs of ${RAMP} s ramp + ${SECONDS_PER_RUN} s, order"
	echo "alternating (lsfs flat, flat lsfs, ...). The lsfs device is written over"
	echo "and over by these runs, so its later runs include GC work."
	echo
	echo "| device | median IOPS | median p99 us |"
	echo "|---|---:|---:|"
	echo "| lsfs | $(printf '%.0f' "$L_IOPS") | $L_P99 |"
	echo "| flat | $(printf '%.0f' "$F_IOPS") | $F_P99 |"
	echo
	echo "What the backing gives a log-structured layout to win: 64 MiB of 4 KiB pages"
	echo "written into a preallocated file on the same file system, at random offsets"
	echo "or in order, then \`fdatasync\` timed (best of three): $WB_RAND scattered vs"
	echo "$WB_SEQ sequential pages per second. lsfs turns scattered writes into a"
	echo "sequential log; that pays only where flat is bound by writing back scattered"
	echo "pages, i.e. where the scattered rate is near or below flat's IOPS. Where it is"
	echo "well above (fast SSD, a virtual disk backed by the host's cache), flat is"
	echo "bound by the target's CPU like lsfs, and lsfs's extra work (records, block"
	echo "map, CRC32C, GC moves) makes it the slower of the two."
	echo
	echo "## 2. GC under sustained overwrites, 80 % of the LBAs written"
	echo
	echo "WA = backing bytes / client bytes, both from lsfs's own counters in the API"
	echo "(\`backing_bytes_written\`: everything lsfs wrote to its backing file, i.e. records"
	echo "with their 4 KiB headers, GC's moves and checkpoints; \`client_bytes_written\`:"
	echo "completed client WRITEs), deltas over the overwrite phase."
	echo
	for n in gc gcs; do [ -s "$WORK/sec-$n.md" ] && cat "$WORK/sec-$n.md"; done
	echo "## 3. Block map RAM"
	echo
	echo "| device | state | mapped_blocks | map_bytes | bytes / block |"
	echo "|---|---|---:|---:|---:|"
	echo "| gc ($SIZE) | after the sequential fill | $MAPPED | $MAPB | $BPB |"
	echo "| big ($BIG) | after $BIG_WRITE written (half seq, half random 4 KiB) | $BIG_MAPPED | $BIG_MAPB | $BIG_BPB |"
	echo
	echo "## 4. Start-up"
	echo
	echo "A $BIG lsfs device (default capacity, sparse backing file). Written: $((half >> 20)) MiB"
	echo "in 256 KiB sequential writes, then $((half / 4096)) random 4 KiB writes over the"
	echo "whole device, no flush. Then tandemd is killed with SIGKILL 2 s into a further"
	echo "random-write load (so the log has an un-checkpointed tail: lsfs checkpoints"
	echo "once the log since the last one is 64 times that checkpoint's size, at least"
	echo "8 segments apart, so replay can be that long) and started"
	echo "(the log since the last checkpoint is replayed), stopped with SIGTERM and"
	echo "started again. Time: from starting tandemd to \`ss\` seeing the portal"
	echo "listen (polled every 10 ms)."
	echo
	echo "| start | ms | mapped_blocks after |"
	echo "|---|---:|---:|"
	echo "| first start, empty device (formats it) | $START_EMPTY_MS | — |"
	echo "| after SIGKILL | $START_KILL_MS | $(jget "$WORK/big-1.json" mapped_blocks) |"
	echo "| after SIGTERM | $START_TERM_MS | $(jget "$WORK/big-2.json" mapped_blocks) |"
	echo
	echo "After the 1 GiB: mapped_blocks $BIG_MAPPED; backing file $(jget "$WORK/big-0.json" physical_bytes) bytes allocated."
	echo "Just before the kill: mapped_blocks $(jget "$WORK/big-0k.json" mapped_blocks), checkpoints $(jget "$WORK/big-0k.json" checkpoints), client bytes $(jget "$WORK/big-0k.json" write_bytes)."
	echo "The mapped_blocks after the SIGKILL start differ a little from the count"
	echo "just before it: the load went on writing after the counters were read"
	echo "(none of it flushed; the page cache survives a process kill)."
	echo
	echo "Reproduce: \`bench/lsfs.sh$( [ $QUICK = 1 ] && echo " --quick" ) --runs $RUNS --seconds $SECONDS_PER_RUN --ramp $RAMP --size $SIZE --gc-seconds $GC_SECONDS\`"
	echo
	echo "<details><summary>part 1: all runs</summary>"
	echo
	echo "| device | run | IOPS | p50 us | p99 us | target CPU s |"
	echo "|---|---:|---:|---:|---:|---:|"
	sed 's/\t/ | /g; s/^/| /; s/$/ |/' "$R1"
	echo
	echo "</details>"
	echo
	echo "<details><summary>tandemd log lines from lsfs (part 4)</summary>"
	echo
	echo '```'
	grep -i 'lsfs\|replay\|checkpoint' "$D4/tandemd.log" 2>/dev/null | tail -n 30 || true
	echo '```'
	echo
	echo "</details>"
} >"$OUT"

echo "lsfs.sh: report written to $OUT"
awk '/^## Summary/ { p = 1 } p && /^## 1/ { exit } p' "$OUT"
exit $FAILED
