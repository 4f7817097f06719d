#!/usr/bin/env bash
# The management API never stalls the data path: 8 clients create and
# delete devices concurrently while I/O runs on the demo LUN, and a slow
# client holds an HTTP connection open with half a request meanwhile. The
# I/O must complete without error and the state must be consistent after.
source "$(dirname "$0")/lib.sh"

CTL="$TND_BUILD/tools/tandemctl/tandemctl"
MPORT=$(free_port)
start_tandemd --mgmt "127.0.0.1:$MPORT"
wait_port "$MPORT" "$TND_PID" || fail "the management API did not come up"
ctl() { "$CTL" --url "http://127.0.0.1:$MPORT" --data-dir "$TND_DATA" "$@"; }

# A slow client: half a request, then silence, for the whole test.
exec 7<>"/dev/tcp/127.0.0.1/$MPORT"
printf 'GET /v1/devices HTTP/1.1\r\nHost: x\r\n' >&7

"$PROGS/tnd-iotest" --url "$TND_URL" --write-read $((64 << 20)) --seed 9 --chunk 65536 \
	>"$TND_TMP/io.out" 2>&1 &
io=$!
TND_PIDS+=("$io")

churn() {
	local i=$1 n
	for n in 1 2 3 4 5; do
		ctl device create "c$i-$n" --type flat --size 8MiB >/dev/null || return 1
		ctl device delete "c$i-$n" >/dev/null || return 1
	done
}
pids=()
for i in 1 2 3 4 5 6 7 8; do
	churn "$i" >"$TND_TMP/churn.$i" 2>&1 &
	pids+=("$!")
done
for p in "${pids[@]}"; do
	wait "$p" || { cat "$TND_TMP"/churn.*; fail "a management client failed"; }
done
wait "$io" || { cat "$TND_TMP/io.out"; fail "I/O failed while the API was busy"; }

exec 7>&-
left=$(ctl --json device list | grep -o '"name": *"c[0-9]-[0-9]"' || true)
[ -z "$left" ] || fail "devices left behind: $left"
# (not "ctl | grep -q": grep's early exit can SIGPIPE a long listing)
list=$(ctl --json device list)
grep -q '"demo"' <<<"$list" || fail "the demo device vanished"
ls "$TND_DATA" | grep -q '^c[0-9]-' && fail "image files left behind: $(ls "$TND_DATA")"
stop_tandemd
echo "mgmt_concurrency: ok"
