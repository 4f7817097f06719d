#!/usr/bin/env bash
# Session placement: with two reactors, a normal session moves right after
# login to a reactor that is not the home of its LUNs (docs/architecture.md,
# "Connections and sessions").
#
# Four lsfs devices, homes in config order: a and c on reactor 0, b and d on
# 1; targets ta (a), tb (b) and tab (c as LUN 0, d as LUN 1). tandem-bench
# opens, in turn: 3 sessions to ta, 2 to tab, 3 to tb, each writing with
# --verify while GET /v1/sessions is read. Every ta session must sit on
# reactor 1, every tb session on 0, and both tab sessions on reactor 0: both
# reactors are a home of tab, and when they log in 0 has no session and 1
# has three (round-robin alone would put one on each). Every bench must
# read back exactly what it wrote. tandemctl session list shows the reactor.
# Header and data digests and a CHAP login work through moved sessions.
# Then with --reactors 1 everything stays on reactor 0 and I/O works.
source "$(dirname "$0")/lib.sh"

command -v curl >/dev/null || skip "curl not installed"
BENCH="$TND_BUILD/tools/tandem-bench/tandem-bench"
[ -x "$BENCH" ] || fail "tandem-bench not built at $BENCH"

P=iqn.2026-11.io.tandem:place
C=iqn.2026-11.io.tandem:place-chap
CSECRET=placement-chap-secret
DATA="$TND_TMP/data"
mkdir -m 700 "$DATA"
touch "$TND_TMP/config.json"
chmod 600 "$TND_TMP/config.json"   # it holds a CHAP secret
cat >"$TND_TMP/config.json" <<EOF
{
  "devices": [ { "name": "a", "type": "lsfs", "size": "32MiB" },
               { "name": "b", "type": "lsfs", "size": "32MiB" },
               { "name": "c", "type": "lsfs", "size": "32MiB" },
               { "name": "d", "type": "lsfs", "size": "32MiB" } ],
  "targets": [ { "iqn": "$P-ta", "allow_any_initiator": true, "luns": { "0": "a" },
                 "acls": [ { "initiator": "$C", "chap": { "user": "cuser", "secret": "$CSECRET" } } ] },
               { "iqn": "$P-tb", "allow_any_initiator": true, "luns": { "0": "b" } },
               { "iqn": "$P-tab", "allow_any_initiator": true, "luns": { "0": "c", "1": "d" } } ]
}
EOF

# reactors TARGET: the reactor of each normal session to TARGET, sorted, on one line.
reactors() {
	api GET /v1/sessions | head -n -1 | python3 -c "
import json, sys
s = json.load(sys.stdin)['sessions']
print(' '.join(sorted(str(x['reactor']) for x in s if x['type'] == 'normal' and x['target'] == '$1')))"
}

# wait_sessions TARGET N: until TARGET has N normal sessions (10 s at most).
wait_sessions() {
	local got
	for _ in $(seq 1 200); do
		got=$(reactors "$1" | wc -w)
		[ "$got" -ge "$2" ] && return 0
		sleep 0.05
	done
	fail "$1: $got sessions logged in, expected $2"
}

# bench NAME SECONDS SESSIONS URL...: tandem-bench --verify in the background.
declare -A BPID
NBENCH=0
bench() {
	local name=$1 secs=$2 n=$3 urls=() u
	shift 3
	for u in "$@"; do urls+=(--url "$u"); done
	"$BENCH" "${urls[@]}" --sessions "$n" --verify --rw write --pattern rand --bs 4k --qd 8 \
		--size 8MiB --time "$secs" --seed $((++NBENCH)) --json \
		>"$TND_TMP/bench.$name.json" 2>"$TND_TMP/bench.$name.err" &
	BPID[$name]=$!
	TND_PIDS+=("$!")
}

bench_ok() {
	wait "${BPID[$1]}" || fail "tandem-bench $1: $(cat "$TND_TMP/bench.$1.err" "$TND_TMP/bench.$1.json")"
	python3 -c "import json; r = json.load(open('$TND_TMP/bench.$1.json')); \
assert r['errors'] == 0 and r['mismatches'] == 0 and r['write_iops'] > 0 \
and r['verified'] > 0, r" || fail "tandem-bench $1: errors, mismatches or nothing verified"
}

start_with_mgmt --config "$TND_TMP/config.json" --reactors 2 --log-level debug
url() { echo "iscsi://127.0.0.1:$TND_PORT/$P-$1/$2"; }

bench ta 8 3 "$(url ta 0)"
wait_sessions "$P-ta" 3
bench tab 7 1 "$(url tab 0)" "$(url tab 1)"
wait_sessions "$P-tab" 2
bench tb 6 3 "$(url tb 0)"
wait_sessions "$P-tb" 3

ra=$(reactors "$P-ta") rb=$(reactors "$P-tb") rab=$(reactors "$P-tab")
echo "placement: ta on [$ra], tb on [$rb], tab on [$rab]"
[ "$ra" = "1 1 1" ] || fail "sessions to ta (LUN home reactor 0) are on reactors [$ra], not all on 1"
[ "$rb" = "0 0 0" ] || fail "sessions to tb (LUN home reactor 1) are on reactors [$rb], not all on 0"
[ "$rab" = "0 0" ] || fail "sessions to tab (LUNs on both homes) are on reactors [$rab], not [0 0]"
out=$(ctl session list) || fail "tandemctl session list"
echo "$out"
head -1 <<<"$out" | grep -q "REACTOR" || fail "tandemctl session list shows no REACTOR column"
echo "$out" | grep "$P-ta " | grep -qv " 1$" && fail "tandemctl shows a ta session off reactor 1"
echo "$out" | grep "$P-tb " | grep -qv " 0$" && fail "tandemctl shows a tb session off reactor 0"

for b in ta tab tb; do bench_ok "$b"; done

# Digests and CHAP through sessions that move (to ta: all go to reactor 1;
# each program twice, so that one of the two connections lands on 0).
for seed in 11 12; do
	"$PROGS/tnd-iotest" --url "$(url ta 0)" --header-digest --write-read $((4 << 20)) \
		--seed $seed || fail "write/read with HeaderDigest through a placed session"
	"$PROGS/tnd-rawio" 127.0.0.1 "$TND_PORT" "$P-ta" $((4 << 20)) $seed ||
		fail "write/read with HeaderDigest and DataDigest through a placed session"
	"$PROGS/tnd-iotest" --initiator-name "$C" \
		--url "iscsi://cuser%$CSECRET@127.0.0.1:$TND_PORT/$P-ta/0" --write-read 65536 \
		--seed $seed || fail "write/read after a CHAP login through a placed session"
done
for ini in iotest rawio place-chap; do
	grep -q "session of iqn.2026-11.io.tandem:$ini placed on reactor 1 (was 0)" "$TND_LOG" ||
		fail "no session of $ini moved from reactor 0 to 1"
done
stop_tandemd

# One reactor: nothing moves, I/O works.
start_with_mgmt --config "$TND_TMP/config.json" --reactors 1
bench one 3 2 "$(url ta 0)" "$(url tb 0)"
wait_sessions "$P-tb" 2
ra=$(reactors "$P-ta") rb=$(reactors "$P-tb")
[ "$ra $rb" = "0 0 0 0" ] || fail "one reactor: sessions on [$ra] [$rb]"
bench_ok one
stop_tandemd
echo "placement: ok"
