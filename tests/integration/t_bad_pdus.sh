#!/usr/bin/env bash
# Malformed and hostile PDUs, each on its own connection, are answered with
# a Reject, a login failure or a close (never a hang or a crash), and a
# healthy libiscsi session works afterwards; tandemd then stops cleanly.
source "$(dirname "$0")/lib.sh"

start_tandemd
timeout 300 "$PROGS/bad_pdus" 127.0.0.1 "$TND_PORT" "$TND_IQN" ||
	fail "bad_pdus reported failures"
kill -0 "$TND_PID" 2>/dev/null || fail "tandemd died"
stop_tandemd
echo "bad_pdus: ok"
