#!/usr/bin/env bash
# Bad flags and bad configuration files stop start-up with a message that
# names the problem, and nothing is created on disk.
source "$(dirname "$0")/lib.sh"

expect_refusal() {
	local expect=$1 code=$2
	shift 2
	local out rc=0
	out=$("$TANDEMD" "$@" 2>&1) || rc=$?
	[ "$rc" = "$code" ] || fail "tandemd $*: exit $rc, expected $code; output: $out"
	# A here-string, not a pipe: with pipefail, grep -q quitting at the
	# first match can make echo die of SIGPIPE on a long usage text.
	grep -q -- "$expect" <<<"$out" || fail "tandemd $*: message lacks \"$expect\": $out"
}

grep -q "^tandemd " <<<"$("$TANDEMD" --version)" || fail "--version"
grep -q -- "--data-dir" <<<"$("$TANDEMD" --help)" || fail "--help"

expect_refusal "unrecognized option" 2 --bogus
expect_refusal "--reactors" 2 --reactors 0
expect_refusal "--busy-poll-us" 2 --busy-poll-us 1001
expect_refusal "--busy-poll-us" 2 --busy-poll-us 5us
expect_refusal "--busy-poll-us" 2 --busy-poll-us ""
expect_refusal "--busy-poll: expected qd1 or always" 2 --busy-poll sometimes
expect_refusal "--log-level" 2 --log-level loud
expect_refusal "unexpected argument" 2 stray

data="$TND_TMP/never"
cfg="$TND_TMP/bad.json"
echo '{"devices":[{"name":"a","type":"flat","size":"12 parsecs"}]}' >"$cfg"
expect_refusal "devices\[0\].size" 1 --data-dir "$data" --config "$cfg"
echo '{"devices":[{"name":"a","size":"1GiB"}],"targets":[{"iqn":"iqn.2026-11.x:y","luns":{"0":"b"}}]}' >"$cfg"
expect_refusal 'no device named "b"' 1 --data-dir "$data" --config "$cfg"
echo '{"devices":[' >"$cfg"
expect_refusal "bad.json: line" 1 --data-dir "$data" --config "$cfg"
expect_refusal "No such file" 1 --data-dir "$data" --config "$TND_TMP/missing.json"
[ ! -e "$data" ] || fail "an invalid configuration created $data"

# A good config file with a device of our own serves it.
cat >"$cfg" <<JSON
{"devices":[{"name":"small","type":"flat","size":"64MiB","block_size":4096}],
 "targets":[{"iqn":"iqn.2026-11.io.tandem:small","allow_any_initiator":true,"luns":{"3":"small"}}]}
JSON
start_tandemd --config "$cfg"
out=$(iscsi-readcapacity16 "iscsi://127.0.0.1:$TND_PORT/iqn.2026-11.io.tandem:small/3") ||
	fail "LUN 3 of the configured target did not answer: $out"
grep <<<"$out" -q "LOGICAL BLOCK LENGTH IN BYTES:4096" || fail "block size 4096 not honoured: $out"
[ -f "$TND_DATA/small.img" ] || fail "device image not created in the data dir"
stop_tandemd

# A busy portal is a clear error.
start_tandemd
rc=0
out=$("$TANDEMD" --data-dir "$TND_TMP/other" --portal "127.0.0.1:$TND_PORT" --mgmt off 2>&1) || rc=$?
[ $rc != 0 ] || fail "a second daemon on a busy port started"
grep <<<"$out" -qi "address already in use" || fail "busy port message: $out"
stop_tandemd
echo "config_errors: ok"
