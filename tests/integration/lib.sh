# Shared helpers for integration tests; sourced by every t_*.sh.
#
# Environment (set by ctest): TND_BUILD (the build dir), TND_SRC (the source
# dir), TND_SANITIZE (ON in the ASan+UBSan build).
#
#   start_tandemd [ARGS...]  starts tandemd on 127.0.0.1:<free port> with a
#                            fresh data dir unless ARGS give --data-dir;
#                            sets TND_PORT, TND_PID, TND_DATA, TND_LOG, TND_URL
#                            (iscsi://127.0.0.1:PORT/iqn.2026-11.io.tandem:demo/0)
#   stop_tandemd             SIGTERM, wait, fail unless it exited 0
#   kill_tandemd             SIGKILL, wait
#   fail MSG                 print MSG and the daemon log tail, exit 1
#   skip MSG                 exit 77
#
# Every process started here is killed and every temp dir removed on exit.
set -euo pipefail

: "${TND_BUILD:?run through ctest}"
: "${TND_SRC:?run through ctest}"
TANDEMD="$TND_BUILD/daemon/tandemd"
PROGS="$TND_BUILD/tests/integration/progs"
TND_TMP=$(mktemp -d /tmp/tnd-it.XXXXXX)
TND_PIDS=()
TND_IQN="iqn.2026-11.io.tandem:demo"

tnd_cleanup() {
	local p
	for p in "${TND_PIDS[@]:-}"; do
		[ -n "$p" ] && kill -KILL "$p" 2>/dev/null || true
	done
	for p in "${TND_PIDS[@]:-}"; do
		[ -n "$p" ] && wait "$p" 2>/dev/null || true
	done
	rm -rf "$TND_TMP"
}
trap tnd_cleanup EXIT

fail() {
	echo "FAIL: $*" >&2
	if [ -n "${TND_LOG:-}" ] && [ -f "$TND_LOG" ]; then
		echo "--- tandemd log (tail) ---" >&2
		tail -n 40 "$TND_LOG" >&2
	fi
	exit 1
}

skip() {
	echo "SKIP: $*" >&2
	exit 77
}

# free_port and wait_port PORT PID: bench/lib.sh's, one copy for both
# (start_tandemd retries when a port is taken between the check and the bind).
# shellcheck source=../../bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../bench/lib.sh"

TND_N=0
start_tandemd() {
	local has_data=0 has_mgmt=0 a
	for a in "$@"; do
		[ "$a" = "--data-dir" ] && has_data=1
		[ "$a" = "--mgmt" ] && has_mgmt=1
	done
	# Parallel tests must not fight over the API's default port 9260.
	[ $has_mgmt = 1 ] || set -- --mgmt 127.0.0.1:0 "$@"
	for _ in 1 2 3 4 5; do
		TND_N=$((TND_N + 1))
		TND_PORT=$(free_port)
		TND_LOG="$TND_TMP/tandemd.$TND_N.log"
		if [ $has_data = 0 ]; then
			TND_DATA="$TND_TMP/data.$TND_N"
			"$TANDEMD" --data-dir "$TND_DATA" --portal "127.0.0.1:$TND_PORT" "$@" >"$TND_LOG" 2>&1 &
		else
			"$TANDEMD" --portal "127.0.0.1:$TND_PORT" "$@" >"$TND_LOG" 2>&1 &
		fi
		TND_PID=$!
		TND_PIDS+=("$TND_PID")
		if wait_port "$TND_PORT" "$TND_PID"; then
			TND_URL="iscsi://127.0.0.1:$TND_PORT/$TND_IQN/0"
			return 0
		fi
		if grep -qi "address already in use" "$TND_LOG"; then
			continue
		fi
		fail "tandemd did not start"
	done
	fail "no free port for tandemd"
}

# start_with_mgmt [ARGS...]: tandemd on $DATA with ARGS and its management
# API on a free port, $MPORT; returns once the API listens.
start_with_mgmt() {
	MPORT=$(free_port)
	start_tandemd --data-dir "$DATA" --mgmt "127.0.0.1:$MPORT" "$@"
	wait_port "$MPORT" "$TND_PID" || fail "the management API did not come up on $MPORT"
}

# ctl ARGS...: tandemctl against that API.
ctl() { "$TND_BUILD/tools/tandemctl/tandemctl" --url "http://127.0.0.1:$MPORT" --data-dir "$DATA" "$@"; }

stop_tandemd() {
	local pid=${1:-$TND_PID} rc=0
	kill -TERM "$pid" 2>/dev/null || fail "tandemd $pid not running"
	wait "$pid" || rc=$?
	[ $rc = 0 ] || fail "tandemd exited with $rc after SIGTERM"
}

# api METHOD PATH [BODY]: one call to the management API of the daemon
# start_with_mgmt started (its token in $DATA); prints the response body,
# then the HTTP status on a line of its own.
api() {
	curl -s -w '\n%{http_code}\n' -X "$1" -H "Authorization: Bearer $(cat "$DATA/api.token")" \
		${3:+-H 'Content-Type: application/json' -d "$3"} "http://127.0.0.1:$MPORT$2"
}

# field KEY: the number after "KEY": in the JSON on stdin (no jq needed).
field() { grep -o "\"$1\": *[0-9.e+-]*" | head -1 | sed 's/.*: *//'; }

# lun_put FILE OFFSET IQN [LUN]: FILE written into the LUN at byte OFFSET
# through QEMU's iSCSI driver (the raw driver's offset, so no image format
# gets in the way).
lun_put() {
	qemu-img convert -n -f raw -O raw "$1" \
		"json:{\"driver\":\"raw\",\"offset\":$2,\"size\":$(stat -c %s "$1"),\"file\":{\"driver\":\"iscsi\",\"transport\":\"tcp\",\"portal\":\"127.0.0.1:$TND_PORT\",\"target\":\"$3\",\"lun\":${4:-0}}}"
}

# mirror_put FILE OFFSET IQN MIRROR: FILE into LUN 0 of IQN at byte OFFSET
# (lun_put), and into the local MIRROR image at the same offset, so that
# MIRROR holds what the LUN must read back.
mirror_put() {
	lun_put "$1" "$2" "$3" || fail "writing $1 at $2 failed"
	dd if="$1" of="$4" bs=1M seek=$(($2 >> 20)) conv=notrunc status=none
}

# lun_equals WHAT URL FILE BYTES: the first BYTES of the LUN at URL equal
# those of FILE; WHAT names the step in the failure message.
lun_equals() {
	qemu-img convert -f raw -O raw "$2" "$TND_TMP/back.raw" || fail "read ($1) failed"
	cmp -n "$4" "$3" "$TND_TMP/back.raw" || fail "data read back differs ($1)"
}

kill_tandemd() {
	local pid=${1:-$TND_PID}
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

# sigkill_round ROUND WANT POLLS RESTART-COMMAND...: one power cut. A
# writer (seed ROUND) logs every write acknowledged and then covered by a
# completed SYNCHRONIZE CACHE; tandemd is SIGKILLed once the log holds
# WANT of them (or after POLLS polls of 20 ms), restarted by the command,
# and every logged write must read back (or a newer write of ours to the
# same block; never an older one, zeros, or another block's data).
sigkill_round() {
	local round=$1 want=$2 polls=$3 writer
	shift 3
	local wlog="$TND_TMP/acked.$round.log"
	"$PROGS/tnd-iotest" --url "$TND_URL" --write-log "$wlog" --count 100000000 \
		--seed "$round" --size $((64 << 20)) --flush-every 8 >"$TND_TMP/writer.out" 2>&1 &
	writer=$!
	TND_PIDS+=("$writer")
	local n
	for _ in $(seq 1 "$polls"); do
		n=$(grep -vc '^#' "$wlog" 2>/dev/null) || true   # no file yet: ""
		[ "${n:-0}" -ge "$want" ] && break
		sleep 0.02
	done
	kill_tandemd
	wait "$writer" 2>/dev/null || true
	"$@"
	"$PROGS/tnd-iotest" --url "$TND_URL" --check-log "$wlog" >"$TND_TMP/check.out" 2>&1 || {
		cat "$TND_TMP/check.out"
		fail "round $round: acknowledged and flushed writes lost after SIGKILL"
	}
}
