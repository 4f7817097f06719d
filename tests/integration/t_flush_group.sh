#!/usr/bin/env bash
# Flush group commit on a flat device, through iSCSI: four sessions write
# 4 KiB blocks at random with a SYNCHRONIZE CACHE every 4 writes each, in
# --verify mode (every write tagged, all written blocks read back at the
# end). Passes when every command succeeds, nothing read back differs, and
# the device's stats show that concurrent flushes shared fdatasyncs
# (fdatasyncs run < flushes asked for) and no backing I/O error.
source "$(dirname "$0")/lib.sh"

command -v curl >/dev/null || skip "curl not installed"
BENCH="$TND_BUILD/tools/tandem-bench/tandem-bench"
[ -x "$BENCH" ] || fail "tandem-bench not built at $BENCH"

DATA="$TND_TMP/data"
mkdir -m 700 "$DATA"
cat >"$TND_TMP/config.json" <<EOF
{
  "devices": [ { "name": "fl", "type": "flat", "size": "32MiB" } ],
  "targets": [ { "iqn": "$TND_IQN", "allow_any_initiator": true, "luns": { "0": "fl" } } ]
}
EOF
stat_of() {
	curl -sf -H "Authorization: Bearer $(cat "$DATA/api.token")" \
		"http://127.0.0.1:$MPORT/v1/devices/fl" |
		python3 -c "import json, sys; print(json.load(sys.stdin)['stats']['$1'])"
}

start_with_mgmt --config "$TND_TMP/config.json"
"$BENCH" --url "$TND_URL" --verify --rw write --pattern rand --bs 4k --qd 8 --sessions 4 \
	--size 32MiB --flush-every 4 --time 2 --json >"$TND_TMP/bench.json" ||
	fail "tandem-bench: 4 sessions of writes with flushes, --verify, failed"
bench_flushes=$(python3 -c "import json; r = json.load(open('$TND_TMP/bench.json')); \
print(r['flushes'] if r['errors'] == 0 and r['mismatches'] == 0 else -1)")
[ "$bench_flushes" -gt 0 ] || fail "tandem-bench: errors, mismatches or no flushes: $(cat "$TND_TMP/bench.json")"
flushes=$(stat_of flush_ops) || fail "GET /v1/devices/fl"
syncs=$(stat_of fdatasyncs) || fail "GET /v1/devices/fl"
errors=$(stat_of io_errors) || fail "GET /v1/devices/fl"
echo "flush_group: $flushes flushes (initiator counted $bench_flushes in the measured window), $syncs fdatasyncs"
[ "$errors" = 0 ] || fail "backing I/O errors: $errors"
[ "$flushes" -ge "$bench_flushes" ] || fail "device saw $flushes flushes, fewer than the $bench_flushes completed"
[ "$syncs" -ge 1 ] && [ "$syncs" -lt "$flushes" ] ||
	fail "concurrent flushes did not share fdatasyncs: $syncs fdatasyncs for $flushes flushes"
stop_tandemd
echo "flush_group: ok"
