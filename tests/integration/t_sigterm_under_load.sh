#!/usr/bin/env bash
# SIGTERM while writes are in flight: tandemd drains, flushes and exits 0;
# after a restart every write that was acknowledged (flushed or not: the
# writer never flushes) reads back.
source "$(dirname "$0")/lib.sh"

start_tandemd
data=$TND_DATA
wlog="$TND_TMP/acked.log"
"$PROGS/tnd-iotest" --url "$TND_URL" --write-log "$wlog" --log-acked --count 2000000 --seed 11 \
	>"$TND_TMP/writer.out" 2>&1 &
writer=$!
TND_PIDS+=("$writer")
# Let the load build up (and some flushes complete) before pulling the plug.
for _ in $(seq 1 100); do
	[ -s "$wlog" ] && [ "$(wc -l <"$wlog")" -gt 200 ] && break
	sleep 0.05
done
[ -s "$wlog" ] || fail "the writer logged no acknowledged writes"
stop_tandemd
wait "$writer" 2>/dev/null || true
n=$(wc -l <"$wlog")
echo "acknowledged writes before SIGTERM: $n"

start_tandemd --data-dir "$data"
"$PROGS/tnd-iotest" --url "$TND_URL" --check-log "$wlog" ||
	fail "acknowledged writes were lost across a graceful stop"
stop_tandemd
echo "sigterm_under_load: ok"
