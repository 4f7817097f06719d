#!/usr/bin/env bash
# An lsfs device with "direct_io": true (its log written with O_DIRECT,
# several log writes in flight, reads through the page cache): the API
# shows the mode, and over SIGKILL/restart rounds under writes with
# periodic SYNCHRONIZE CACHE every acknowledged and flushed write reads
# back (the same check as t_sigkill_loop, on this mode). Skipped when the
# file system of the temp dir refuses O_DIRECT (the device then logs that
# and writes through the page cache).
source "$(dirname "$0")/lib.sh"

command -v curl >/dev/null || skip "curl not installed"

rounds=${TND_DIRECT_ROUNDS:-8}
DATA="$TND_TMP/data"
mkdir -m 700 "$DATA"
cat >"$TND_TMP/config.json" <<EOF
{
  "devices": [ { "name": "dio", "type": "lsfs", "size": "64MiB", "direct_io": true } ],
  "targets": [ { "iqn": "$TND_IQN", "allow_any_initiator": true, "luns": { "0": "dio" } } ]
}
EOF
stats() {
	curl -sf -H "Authorization: Bearer $(cat "$DATA/api.token")" \
		"http://127.0.0.1:$MPORT/v1/devices/dio"
}

start_with_mgmt --config "$TND_TMP/config.json"
s=$(stats) || fail "GET /v1/devices/dio"
grep <<<"$s" -q '"direct_io": *true' || fail "config direct_io not shown: $s"
if ! grep <<<"$s" -q '"direct_writes": *true'; then
	grep -i "O_DIRECT" "$TND_LOG" || true
	skip "O_DIRECT refused under $TND_TMP: the direct path is not tested here"
fi

for round in $(seq 1 "$rounds"); do
	sigkill_round "$round" $(( 50 + (round * 97) % 400 )) 300 \
		start_with_mgmt --config "$TND_TMP/config.json"
done
s=$(stats) || fail "GET /v1/devices/dio at the end"
grep <<<"$s" -q '"io_errors": *0' || fail "backing I/O errors: $s"
stop_tandemd
echo "direct_io: $rounds SIGKILL/restart rounds, no acknowledged flushed write lost"
