#!/usr/bin/env bash
# Pull the power cord 50 times: tandemd is SIGKILLed while libiscsi writes
# with periodic SYNCHRONIZE CACHE; after each restart every write that was
# acknowledged and then covered by a completed flush must read back (the
# check also accepts a newer write of ours to the same block, never an
# older one, zeros, or another block's data).
source "$(dirname "$0")/lib.sh"

rounds=${TND_SIGKILL_ROUNDS:-50}
start_tandemd
data=$TND_DATA
for round in $(seq 1 "$rounds"); do
	wlog="$TND_TMP/acked.$round.log"
	"$PROGS/tnd-iotest" --url "$TND_URL" --write-log "$wlog" --count 100000000 \
		--seed "$round" --size $((64 << 20)) --flush-every 8 >"$TND_TMP/writer.out" 2>&1 &
	writer=$!
	TND_PIDS+=("$writer")
	# Kill at a different moment each round, once some flushes have landed.
	want=$(( 20 + (round * 37) % 300 ))
	for _ in $(seq 1 200); do
		[ "$(grep -vc '^#' "$wlog" 2>/dev/null || echo 0)" -ge "$want" ] && break
		sleep 0.02
	done
	kill_tandemd
	wait "$writer" 2>/dev/null || true
	start_tandemd --data-dir "$data"
	"$PROGS/tnd-iotest" --url "$TND_URL" --check-log "$wlog" >"$TND_TMP/check.out" 2>&1 || {
		cat "$TND_TMP/check.out"
		fail "round $round: acknowledged and flushed writes lost after SIGKILL"
	}
done
stop_tandemd
echo "sigkill_loop: $rounds SIGKILL/restart rounds, no acknowledged flushed write lost"
