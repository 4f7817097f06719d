#!/usr/bin/env bash
# dedup.sh — the goals of the dedup/compression issue, measured on this
# machine, through iSCSI over 127.0.0.1 and the management API of a tandemd
# started here on free ports.
#
#  1. Eight copies of the same 256 MiB random image written to one device
#     (dedup + lz4): stored bytes <= 1.1x one copy. Then the same on a second
#     device with a tandemd restart after the first copy: the dedup index
#     starts empty at open and is rebuilt from the log in the background
#     (index warm-up); the copies after the restart are written once it is
#     done. Reports that ratio and the warm-up time per GiB stored.
#  2. A compressible data set (a tar of /usr/share, cut to --tar-size) written
#     as a raw image to an lz4 device: stored bytes vs `lz4 -1` applied to
#     each 4 KiB block separately (liblz4's LZ4_compress_default per block,
#     as bench_compress computes it, a block counted as stored raw unless
#     that saves a 512 B sector). Goal: within 10 %. The device compresses
#     adaptively (compress_mode default): what it stored raw while the
#     write path was saturated is compressed by idle compaction, so the
#     ratio is taken once deferred_blocks is 0 (and right after the write).
#  3. Write IOPS at QD32, features on (dedup + lz4) / off, same device type,
#     alternating runs, medians: 4 KiB random writes of unique compressible,
#     unique incompressible and fully duplicate data, and 256 KiB sequential
#     writes of compressible data. Goals >= 0.70, 0.85, 1.0, 0.5. "on" runs
#     in the default compress_mode (adaptive); seq-256k is also run with
#     compress_mode inline (LZ4 always on the write path), for comparison.
#  4. Index RAM per unique block: the daemon's own accounting (index bytes /
#     entries once the index is full), cross-checked with tandemd's RSS growth
#     with and without dedup for the same writes.
#
# Every process started here is killed on exit and every file made here is
# removed. See bench/README.md.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/.." && pwd)
BUILD=${TND_BUILD:-$SRC/build}

RUNS=3
SECONDS_PER_RUN=5
RAMP=1
COPY_MIB=256
TAR_MIB=256
OUT=""
DO_BUILD=1
NOTE=""
PART1_ONLY=0

usage() {
	cat <<EOF
usage: bench/dedup.sh [options]
  --quick            1 run of 1+3 s per workload, 64 MiB copies, 64 MiB of tar
  --runs N           part 3 runs per device and workload (default $RUNS)
  --seconds S        part 3 measured seconds per run (default $SECONDS_PER_RUN)
  --copy-mib N       part 1 image size (default $COPY_MIB)
  --tar-mib N        part 2 data set size (default $TAR_MIB)
  --out FILE         report path (default bench/results/<date>-<host>-dedup.md)
  --no-build         use the binaries in \$TND_BUILD (default build/) as they are
  --note TEXT        a line for the report's header
  --part1-only       only part 1 (copies, and copies across a restart); report on stdout
EOF
}

while [ $# -gt 0 ]; do
	case $1 in
	--quick) RUNS=1; SECONDS_PER_RUN=3; COPY_MIB=64; TAR_MIB=64 ;;
	--runs) RUNS=$2; shift ;;
	--seconds) SECONDS_PER_RUN=$2; shift ;;
	--copy-mib) COPY_MIB=$2; shift ;;
	--tar-mib) TAR_MIB=$2; shift ;;
	--out) OUT=$2; shift ;;
	--no-build) DO_BUILD=0 ;;
	--note) NOTE=$2; shift ;;
	--part1-only) PART1_ONLY=1 ;;
	-h|--help) usage; exit 0 ;;
	*) echo "dedup.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
	esac
	shift
done

if [ $DO_BUILD = 1 ]; then
	cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build "$BUILD" -j2 --target tandem-bench --target tandemd --target bench_compress
fi
BENCH="$BUILD/tools/tandem-bench/tandem-bench"
TANDEMD="$BUILD/daemon/tandemd"
BCOMP="$BUILD/tests/unit/compress/bench_compress"
for b in "$BENCH" "$TANDEMD" "$BCOMP"; do [ -x "$b" ] || { echo "dedup.sh: $b not built" >&2; exit 1; }; done
for c in curl qemu-img tar; do command -v $c >/dev/null || { echo "dedup.sh: $c not installed" >&2; exit 1; }; done

source "$SRC/bench/lib.sh"
bench_workdir dedup

IQN="iqn.2026-11.io.tandem:dedup-bench"
PORT=$(free_port)
MGMT=$(free_port)
DATA="$WORK/data"
mkdir -p "$DATA"
COPY_BYTES=$((COPY_MIB << 20))
DD_SIZE=$(( (8 * COPY_MIB + 64) ))MiB
# (dr, part 1 across a restart, comes last: the others keep their reactors.)
# Devices get home reactors in turn, in this order. Each device has a target
# of its own (LUN 0), as a VM's disk would: tandemd places a session away
# from the home reactors of its target's LUNs, so every session here gets
# the placement a lone VM gets (iSCSI work on one reactor, the store's on
# its home), whichever device it writes to.
cat >"$DATA/tandem.json" <<EOF
{
  "devices": [
    { "name": "dd", "type": "lsfs", "size": "$DD_SIZE", "dedup": true, "compress": "lz4" },
    { "name": "on", "type": "lsfs", "size": "1GiB", "dedup": true, "compress": "lz4" },
    { "name": "cz", "type": "lsfs", "size": "$((TAR_MIB + 64))MiB", "compress": "lz4" },
    { "name": "off", "type": "lsfs", "size": "1GiB" },
    { "name": "dr", "type": "lsfs", "size": "$DD_SIZE", "dedup": true, "compress": "lz4" }
  ],
  "targets": [
    { "iqn": "$IQN-dd", "allow_any_initiator": true, "luns": { "0": "dd" } },
    { "iqn": "$IQN-cz", "allow_any_initiator": true, "luns": { "0": "cz" } },
    { "iqn": "$IQN-on", "allow_any_initiator": true, "luns": { "0": "on" } },
    { "iqn": "$IQN-off", "allow_any_initiator": true, "luns": { "0": "off" } },
    { "iqn": "$IQN-dr", "allow_any_initiator": true, "luns": { "0": "dr" } }
  ]
}
EOF
start() {  # start DATA-DIR: tandemd with DATA-DIR/tandem.json
	DATA=$1
	"$TANDEMD" --data-dir "$DATA" --portal "127.0.0.1:$PORT" --mgmt "127.0.0.1:$MGMT" \
		--config "$DATA/tandem.json" >>"$DATA/tandemd.log" 2>&1 &
	TPID=$!
	PIDS+=("$TPID")
	wait_port "$PORT" "$TPID" 12000 || { tail -20 "$DATA/tandemd.log" >&2; echo "dedup.sh: tandemd did not start" >&2; exit 1; }
	wait_port "$MGMT" "$TPID" 500 || true
	echo "dedup.sh: tandemd pid $TPID, portal 127.0.0.1:$PORT, work dir $WORK"
}
start "$DATA"

url() { echo "iscsi://127.0.0.1:$PORT/$IQN-$1/0"; }  # url DEVICE
devstats() {
	curl -sf -H "Authorization: Bearer $(cat "$DATA/api.token")" \
		"http://127.0.0.1:$MGMT/v1/devices/$1" >"$2"
}
devpatch() {  # devpatch NAME JSON
	curl -sf -X PATCH -H "Authorization: Bearer $(cat "$DATA/api.token")" \
		-H 'Content-Type: application/json' -d "$2" \
		"http://127.0.0.1:$MGMT/v1/devices/$1" >/dev/null
}
jget() { { grep -o "\"$2\": *[-0-9.eE+]*" "$1" || true; } | head -n 1 | sed 's/.*: *//'; }
jnum() { { grep -o "\"$2\": [-0-9.eE+]*" "$1" || true; } | head -n 1 | awk '{print $2}'; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$TPID/status"; }
# put_at SRC DEVICE OFFSET: raw image SRC into DEVICE at byte OFFSET (qemu's raw driver over iscsi)
put_at() {
	qemu-img convert -n -f raw -O raw "$1" \
		"json:{\"driver\":\"raw\",\"offset\":$3,\"size\":$(stat -c %s "$1"),\"file\":{\"driver\":\"iscsi\",\"transport\":\"tcp\",\"portal\":\"127.0.0.1:$PORT\",\"target\":\"$IQN-$2\",\"lun\":0}}"
}

# Part 1 ---------------------------------------------------------------------------
echo "== 1: eight copies of one ${COPY_MIB} MiB random image into device dd (dedup + lz4)"
head -c "$COPY_BYTES" /dev/urandom >"$WORK/copy.raw"
t0=$(date +%s%N)
for i in 0 1 2 3 4 5 6 7; do
	put_at "$WORK/copy.raw" dd $((i * COPY_BYTES))
done
t1=$(date +%s%N)
devstats dd "$WORK/dd.json"
P1_STORED=$(jget "$WORK/dd.json" stored_bytes)
P1_MAPPED=$(jget "$WORK/dd.json" logical_bytes)
P1_PHYS=$(jget "$WORK/dd.json" physical_bytes)
P1_DR=$(jget "$WORK/dd.json" dedup_ratio)
P1_MISM=$(jget "$WORK/dd.json" verify_mismatches)
P1_X=$(awk -v s="$P1_STORED" -v c="$COPY_BYTES" 'BEGIN { printf "%.3f", s / c }')
P1_MBS=$(awk -v b=$((8 * COPY_BYTES)) -v ns=$((t1 - t0)) 'BEGIN { printf "%.0f", b / ns * 1e9 / 1048576 }')
echo "   mapped $P1_MAPPED, stored $P1_STORED (${P1_X}x one copy), backing file $P1_PHYS, dedup ratio $P1_DR, $P1_MBS MiB/s"

echo "== 1b: the same into device dr with a tandemd restart after the first copy"
put_at "$WORK/copy.raw" dr 0
kill -TERM "$TPID"
wait "$TPID" || true
t0=$(date +%s%N)
start "$DATA"
devstats dr "$WORK/dr.json"
while [ "$(grep -o '"index_warmup": *"[a-z]*"' "$WORK/dr.json" | sed 's/.*"\([a-z]*\)"$/\1/')" = running ] &&
	[ $(( ($(date +%s%N) - t0) / 1000000000 )) -lt 600 ]; do
	sleep 0.05
	devstats dr "$WORK/dr.json"
done
P1R_STATE=$(grep -o '"index_warmup": *"[a-z]*"' "$WORK/dr.json" | sed 's/.*"\([a-z]*\)"$/\1/')
P1R_WMS=$(jget "$WORK/dr.json" index_warmup_ms)
P1R_WENT=$(jget "$WORK/dr.json" index_warmup_entries)
P1R_WSEG=$(jget "$WORK/dr.json" index_warmup_segments)
P1R_STORED0=$(jget "$WORK/dr.json" stored_bytes)
P1R_MSGIB=$(awk -v ms="$P1R_WMS" -v b="$P1R_STORED0" 'BEGIN { printf "%.0f", (b > 0 ? ms / (b / 1073741824) : 0) }')
for i in 1 2 3 4 5 6 7; do
	put_at "$WORK/copy.raw" dr $((i * COPY_BYTES))
done
devstats dr "$WORK/dr.json"
P1R_STORED=$(jget "$WORK/dr.json" stored_bytes)
P1R_DR=$(jget "$WORK/dr.json" dedup_ratio)
P1R_X=$(awk -v s="$P1R_STORED" -v c="$COPY_BYTES" 'BEGIN { printf "%.3f", s / c }')
echo "   warm-up $P1R_STATE: $P1R_WSEG segments, $P1R_WENT entries in $P1R_WMS ms from open" \
	"($P1R_MSGIB ms per GiB stored); after 7 more copies stored $P1R_STORED (${P1R_X}x one copy)," \
	"dedup ratio $P1R_DR"
if [ "$PART1_ONLY" = 1 ]; then
	echo "| goal | measured | target |"
	echo "|---|---|---|"
	echo "| 8 x ${COPY_MIB} MiB random image: stored bytes / one copy | $P1_X (dedup ratio $P1_DR, $P1_MISM verify mismatches, $P1_MBS MiB/s) | <= 1.1 |"
	echo "| the same, tandemd restarted after the first copy | $P1R_X (dedup ratio $P1R_DR) | <= 1.1 |"
	echo "| index warm-up after the restart, per GiB stored | $P1R_MSGIB ms ($P1R_WENT entries from $P1R_WSEG segments, $P1R_WMS ms for $((P1R_STORED0 >> 20)) MiB, from open) | - |"
	exit 0
fi

# Part 2 ---------------------------------------------------------------------------
echo "== 2: ${TAR_MIB} MiB of a tar of /usr/share into device cz (lz4)"
( set +o pipefail; tar cf - /usr/share 2>/dev/null | head -c $((TAR_MIB << 20)) >"$WORK/tar.raw" ) || true
put_at "$WORK/tar.raw" cz 0
devstats cz "$WORK/cz.json"
P2_NOW=$(jget "$WORK/cz.json" stored_bytes)
P2_DEF=$(jget "$WORK/cz.json" deferred_blocks)
# Settle: idle compaction compresses what was deferred (poll, 300 s at most).
t0=$(date +%s%N)
while [ "$(jget "$WORK/cz.json" deferred_blocks)" != 0 ] && [ $(( ($(date +%s%N) - t0) / 1000000000 )) -lt 300 ]; do
	sleep 0.2
	devstats cz "$WORK/cz.json"
done
P2_SETTLE=$(awk -v ns=$(($(date +%s%N) - t0)) 'BEGIN { printf "%.1f", ns / 1e9 }')
P2_LEFT=$(jget "$WORK/cz.json" deferred_blocks)
P2_STORED=$(jget "$WORK/cz.json" stored_bytes)
P2_MAPPED=$(jget "$WORK/cz.json" logical_bytes)
echo "   right after the write: stored $P2_NOW, $P2_DEF blocks deferred; settled in $P2_SETTLE s ($P2_LEFT deferred left)"
"$BCOMP" ratio "$WORK/tar.raw" >"$WORK/ratio.txt" 2>&1 || true
# bench_compress: LZ4_compress_default() on each 4 KiB block, as `lz4 -1`
# does per block, the result rounded up to 512 B sectors ("on disk"; a block
# that does not shrink counts 4096). See tests/unit/compress/bench_compress.c.
P2_LZ4=$(awk '/^lz4 -1 per block/ { for (i = 1; i < NF; i++) if ($i == "disk") { print $(i + 1); exit } }' "$WORK/ratio.txt")
echo "   mapped $P2_MAPPED, stored $P2_STORED; lz4 -1 per 4 KiB block, on disk: ${P2_LZ4:-?}"
sed 's/^/   | /' "$WORK/ratio.txt"

# Part 3 ---------------------------------------------------------------------------
R3="$WORK/p3.tsv"
: >"$R3"
run3() {  # run3 WORKLOAD DEV RUN ARGS...
	local wl=$1 dev=$2 r=$3 j="$WORK/p3-$1-$2-$3.json"
	shift 3
	# The share of the chunks stored (LZ4 or raw) that were deferred.
	local d0 n0 d1 n1 df=-
	devstats "$dev" "$WORK/s0.json"
	d0=$(jget "$WORK/s0.json" deferred_writes)
	n0=$(( $(jget "$WORK/s0.json" compressed_blocks) + $(jget "$WORK/s0.json" raw_blocks) ))
	if "$BENCH" --url "$(url "$dev")" --qd 32 --rw write --time "$SECONDS_PER_RUN" --ramp "$RAMP" \
		--seed "$r" --size 512MiB "$@" --json >"$j" 2>"$WORK/bench.err"; then
		devstats "$dev" "$WORK/s1.json"
		d1=$(jget "$WORK/s1.json" deferred_writes)
		n1=$(( $(jget "$WORK/s1.json" compressed_blocks) + $(jget "$WORK/s1.json" raw_blocks) ))
		[ "$n1" -gt "$n0" ] && df=$(awk -v d=$((d1 - d0)) -v n=$((n1 - n0)) 'BEGIN { printf "%.2f", d / n }')
		printf '%s\t%s\t%s\t%s\t%s\n' "$wl" "$dev" "$r" "$(jnum "$j" iops)" "$df" >>"$R3"
		printf '  %-15s %-3s run %d: %9.0f IOPS, deferred share %s\n' "$wl" "$dev" "$r" "$(jnum "$j" iops)" "$df"
	else
		sed 's/^/    /' "$WORK/bench.err" >&2
	fi
}
echo "== 3: write IOPS QD32, dedup+lz4 (on) vs plain (off), $RUNS runs of ${RAMP}+${SECONDS_PER_RUN} s"
for r in $(seq 1 "$RUNS"); do
	if [ $((r % 2)) = 1 ]; then order="on off"; else order="off on"; fi
	for dev in $order; do
		run3 text-4k "$dev" "$r" --bs 4k --pattern rand --data text
		run3 random-4k "$dev" "$r" --bs 4k --pattern rand --data random
		run3 dup-4k "$dev" "$r" --bs 4k --pattern rand --data dup
		run3 seq-256k "$dev" "$r" --bs 256k --pattern seq --data text
	done
done
# seq-256k with LZ4 always on the write path, for comparison.
devpatch on '{"compress_mode":"inline"}'
for r in $(seq 1 "$RUNS"); do
	run3 seq-256k-inline on "$r" --bs 256k --pattern seq --data text
done
devpatch on '{"compress_mode":"adaptive"}'
median3() {  # median3 WORKLOAD DEV
	awk -F'\t' -v w="$1" -v d="$2" '$1 == w && $2 == d && $4 != "" { print $4 }' "$R3" | sort -g |
		awk '{ v[NR] = $1 } END { if (NR == 0) { print "nan"; exit }
			if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# Part 4 ---------------------------------------------------------------------------
# Two fresh tandemds in turn, one 3 GiB device each, the same 2.75 GiB of
# unique 256 KiB sequential writes: one with dedup and a 16 MiB index (about
# 700,000 slots, full after the fill), one without. The difference of their
# RSS growth is what dedup's index and tables cost; per index entry it
# cross-checks the daemon's own figure (index_bytes / index_entries).
kill -TERM "$TPID" 2>/dev/null || true
wait "$TPID" 2>/dev/null || true
FILL_COUNT=11264   # x 256 KiB = 2.75 GiB
fill4() {  # fill4 NAME DEDUP: prints "rss_kib_after entries index_bytes map_bytes"
	local d="$WORK/p4-$1"
	mkdir -p "$d"
	cat >"$d/tandem.json" <<EOF
{
  "devices": [ { "name": "ram", "type": "lsfs", "size": "3GiB", "dedup": $2, "dedup_index_bytes": "16MiB" } ],
  "targets": [ { "iqn": "$IQN-ram", "allow_any_initiator": true, "luns": { "0": "ram" } } ]
}
EOF
	start "$d" >/dev/null
	# The RSS after the fill, not its growth since start: the index is
	# allocated and touched at open (its warm-up walks it), so growth
	# since start would miss it. What both daemons allocate (segment
	# buffers, the map) cancels in the difference of the two.
	local r1
	"$BENCH" --url "$(url ram)" --qd 8 --rw write --bs 256k --pattern seq --size 3GiB \
		--count "$FILL_COUNT" --seed 2 >/dev/null 2>&1 || true
	devstats ram "$d/stats.json"
	r1=$(rss_kib)
	echo "$r1 $(jget "$d/stats.json" index_entries) $(jget "$d/stats.json" index_bytes) $(jget "$d/stats.json" map_bytes)"
	kill -TERM "$TPID" 2>/dev/null || true
	wait "$TPID" 2>/dev/null || true
}
echo "== 4: index RAM: 2.75 GiB of unique blocks, dedup with a 16 MiB index vs no dedup, fresh tandemds"
read -r G_ON E_ON IB_ON M_ON < <(fill4 on true)
read -r G_OFF _ _ M_OFF < <(fill4 off false)
P4_ACCT=$(awk -v b="$IB_ON" -v e="$E_ON" 'BEGIN { printf "%.1f", (e ? b / e : 0) }')
P4_RSS=$(awk -v a="$G_ON" -v b="$G_OFF" -v e="$E_ON" 'BEGIN { printf "%.1f", (e ? (a - b) * 1024 / e : 0) }')
echo "   dedup: RSS $G_ON KiB after the fill, $E_ON index entries in $IB_ON bytes ($P4_ACCT B/entry), map $M_ON B"
echo "   plain: RSS $G_OFF KiB after the fill, map $M_OFF B; difference per index entry: $P4_RSS B"

# Report ---------------------------------------------------------------------------
[ -n "$OUT" ] || OUT="$SRC/bench/results/$(date -u +%F)-$(hostname -s)-dedup.md"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0 && a == a + 0) printf "%.2f", a / b; else print "n/a" }'; }
{
	echo "# dedup and compression: bench/dedup.sh, $(date -u '+%F %H:%M UTC')"
	echo
	echo "Host: $(hostname -s), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg) at the end. ${NOTE}"
	echo "Commit: $(git -C "$SRC" rev-parse --short HEAD 2>/dev/null || echo '?'). Runs: $RUNS x (${RAMP}+${SECONDS_PER_RUN} s)."
	echo
	echo "| goal | measured | target |"
	echo "|---|---|---|"
	echo "| 8 x ${COPY_MIB} MiB random image: stored bytes / one copy | $P1_X (dedup ratio $P1_DR, $P1_MISM verify mismatches, backing file $((P1_PHYS >> 20)) MiB, $P1_MBS MiB/s) | <= 1.1 |"
	echo "| the same, tandemd restarted after the first copy | $P1R_X (dedup ratio $P1R_DR) | <= 1.1 |"
	echo "| index warm-up after the restart, per GiB stored | $P1R_MSGIB ms ($P1R_WENT entries from $P1R_WSEG segments, $P1R_WMS ms for $((P1R_STORED0 >> 20)) MiB, from open) | - |"
	echo "| tar of /usr/share (${TAR_MIB} MiB): stored / lz4 -1 per block, settled | $(ratio "$P2_STORED" "${P2_LZ4:-0}") ($P2_STORED vs ${P2_LZ4:-?} bytes, of $P2_MAPPED mapped; settled in $P2_SETTLE s, $P2_LEFT deferred left) | <= 1.10 |"
	echo "| the same right after the write (adaptive: $P2_DEF blocks deferred) | $(ratio "$P2_NOW" "${P2_LZ4:-0}") ($P2_NOW bytes) | - |"
	for wl in text-4k random-4k dup-4k seq-256k; do
		on=$(median3 $wl on); off=$(median3 $wl off)
		case $wl in text-4k) g=">= 0.70" ;; random-4k) g=">= 0.85" ;; dup-4k) g=">= 1.0" ;; seq-256k) g=">= 0.5" ;; esac
		echo "| write IOPS QD32 $wl, on / off | $(ratio "$on" "$off") ($on / $off) | $g |"
	done
	on=$(median3 seq-256k-inline on); off=$(median3 seq-256k off)
	echo "| the same, seq-256k with compress_mode inline | $(ratio "$on" "$off") ($on / $off) | - |"
	echo "| index RAM per indexed block, daemon's accounting (16 MiB index, full) | $P4_ACCT B ($E_ON entries in $IB_ON B) | <= 32 |"
	echo "| the same from RSS: RSS after the fill with dedup minus without, per entry | $P4_RSS B ($G_ON KiB vs $G_OFF KiB) | <= 32 |"
	echo
	echo "Raw part 3 runs (workload, device, run, IOPS, share of the chunks stored that were deferred):"
	echo
	echo '```'
	cat "$R3"
	echo '```'
} >"$OUT"
echo "dedup.sh: report in $OUT"
