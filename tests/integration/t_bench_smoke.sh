#!/usr/bin/env bash
# tandem-bench against tandemd's demo LUN: a few seconds of mixed random
# I/O in --verify mode (every write tagged, reads of written blocks checked,
# all written blocks read back at the end). Passes when tandem-bench exits 0:
# no I/O error, no verify mismatch. No timing assertions: this guards the
# tool and the data path, not performance.
source "$(dirname "$0")/lib.sh"

BENCH="$TND_BUILD/tools/tandem-bench/tandem-bench"
[ -x "$BENCH" ] || fail "tandem-bench not built at $BENCH"

start_tandemd
# 4 KiB random, two sessions sharing one working set, with flushes. A small
# working set makes reads land on blocks this run wrote, so they are checked.
"$BENCH" --url "$TND_URL" --verify --rw mixed --mix 50 --pattern rand --bs 4k \
	--qd 16 --sessions 2 --size 32MiB --flush-every 64 --time 3 ||
	fail "tandem-bench: 4 KiB mixed random I/O with --verify failed"
# The same with libiscsi's own sends (a segment per PDU header and per data
# segment) instead of the corked rounds above (many PDUs per segment): the
# target must parse both shapes of byte stream alike.
"$BENCH" --url "$TND_URL" --verify --rw mixed --mix 50 --pattern rand --bs 4k \
	--qd 16 --sessions 2 --size 32MiB --flush-every 64 --time 2 --no-cork ||
	fail "tandem-bench: 4 KiB mixed random I/O with --verify --no-cork failed"
# 256 KiB sequential: commands larger than the first burst, so R2T and
# multi-PDU Data-In/Data-Out are exercised too.
"$BENCH" --url "$TND_URL" --verify --rw mixed --mix 50 --pattern seq --bs 256k \
	--qd 4 --size 32MiB --time 2 ||
	fail "tandem-bench: 256 KiB mixed sequential I/O with --verify failed"
# Machine-readable output is what bench/vs-tgt.sh parses: keep it parseable.
"$BENCH" --url "$TND_URL" --rw read --bs 4k --qd 4 --count 2000 --json \
	--target-pid "$TND_PID" >"$TND_TMP/bench.json" || fail "tandem-bench --json run failed"
grep -q '"iops": [0-9]' "$TND_TMP/bench.json" || fail "tandem-bench --json: no iops"
grep -q '"target_cpu_s": [0-9]' "$TND_TMP/bench.json" || fail "tandem-bench --json: no target CPU"
grep -q '"cork": true' "$TND_TMP/bench.json" || fail "tandem-bench --json: corked sends are not the default"
# What the cork does on the wire, from the kernel's count of data segments
# the generator sent (TCP_INFO): libiscsi alone sends a WRITE's header and
# its data as two segments; corked, a round's commands share segments, so
# even a round of one WRITE is a single segment.
segs_per_write() {  # segs_per_write [tandem-bench options]: prints segments/command x 100
	"$BENCH" --url "$TND_URL" --rw write --bs 4k --qd 16 --count 4000 --json "$@" \
		>"$TND_TMP/segs.json" || fail "tandem-bench $* failed"
	python3 -c 'import json, sys
j = json.load(open(sys.argv[1]))
print(int(100 * j["data_segs_out"] / (j["write_iops"] * j["elapsed_s"])))' "$TND_TMP/segs.json"
}
corked=$(segs_per_write)
uncorked=$(segs_per_write --no-cork)
echo "bench_smoke: data segments per WRITE x100: corked $corked, --no-cork $uncorked"
[ "$uncorked" -ge 150 ] || fail "--no-cork sent $uncorked/100 segments per WRITE, expected about 2"
[ "$corked" -gt 0 ] && [ "$corked" -le 105 ] ||
	fail "corked rounds sent $corked/100 segments per WRITE, expected at most 1"
stop_tandemd
# The same data path with reactors that busy-poll before every sleep, and
# with busy-poll off (the runs above had the default: spin at QD1 only):
# QD1 (where the spin catches most completions) and QD16 with flushes.
for bp in "--busy-poll always --busy-poll-us 50" "--busy-poll-us 0"; do
	# shellcheck disable=SC2086
	start_tandemd $bp
	"$BENCH" --url "$TND_URL" --verify --rw mixed --mix 50 --pattern rand --bs 4k \
		--qd 1 --size 8MiB --time 1 ||
		fail "tandem-bench: QD1 --verify with $bp failed"
	"$BENCH" --url "$TND_URL" --verify --rw mixed --mix 50 --pattern rand --bs 4k \
		--qd 16 --sessions 2 --size 32MiB --flush-every 64 --time 1 ||
		fail "tandem-bench: QD16 --verify with $bp failed"
	stop_tandemd
done
# --pin-reactors: the same data path with every reactor on a CPU of its own
# choosing, and the io_uring workers of the writes on their reactor's CPU
# (each iou-wrk-TID allowed exactly the CPU its reactor TID is). The
# flushes make workers on any file system: io_uring always hands fsync to one.
start_tandemd --pin-reactors
"$BENCH" --url "$TND_URL" --verify --rw mixed --mix 50 --pattern rand --bs 4k \
	--qd 1 --size 8MiB --time 1 --flush-every 8 ||
	fail "tandem-bench: QD1 --verify with --pin-reactors failed"
grep -q "reactor 0 pinned to CPU" "$TND_LOG" || fail "--pin-reactors: no reactor reported pinned"
workers=0
for st in /proc/"$TND_PID"/task/*/status; do
	name=$(awk '/^Name:/ { print $2 }' "$st" 2>/dev/null) || continue
	case $name in iou-wrk-*) ;; *) continue ;; esac
	owner=/proc/$TND_PID/task/${name#iou-wrk-}/status
	[ -r "$owner" ] || continue
	mine=$(awk '/^Cpus_allowed_list:/ { print $2 }' "$st")
	theirs=$(awk '/^Cpus_allowed_list:/ { print $2 }' "$owner")
	# Threads other than reactors (start-up, devices' own) are not pinned.
	case $theirs in *[,-]*) continue ;; esac
	[ "$mine" = "$theirs" ] || fail "--pin-reactors: $name may run on $mine, its reactor on $theirs"
	workers=$((workers + 1))
done
[ $workers -gt 0 ] || fail "--pin-reactors: no io_uring worker of a reactor found after writes"
stop_tandemd
echo "bench_smoke: ok"
