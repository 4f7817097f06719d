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
# Kill at a different moment each round, once some flushes have landed.
for round in $(seq 1 "$rounds"); do
	sigkill_round "$round" $(( 20 + (round * 37) % 300 )) 200 start_tandemd --data-dir "$data"
done
stop_tandemd
echo "sigkill_loop: $rounds SIGKILL/restart rounds, no acknowledged flushed write lost"
