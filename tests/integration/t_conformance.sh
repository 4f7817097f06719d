#!/usr/bin/env bash
# The libiscsi conformance suite against the demo LUN. For now it must run
# to the end without tandemd crashing; the totals are printed so the log
# shows the pass/fail counts. (Driving failures to zero is the next issue.)
source "$(dirname "$0")/lib.sh"

command -v iscsi-test-cu >/dev/null || skip "iscsi-test-cu not installed"
start_tandemd
log="$TND_TMP/cu.log"
rc=0
timeout 600 iscsi-test-cu --dataloss --silent "$TND_URL" >"$log" 2>&1 || rc=$?
grep -E "Run Summary|suites|tests|asserts" "$log" || true
kill -0 "$TND_PID" 2>/dev/null || { tail -50 "$log"; fail "tandemd died during iscsi-test-cu"; }
[ $rc -ne 124 ] || fail "iscsi-test-cu timed out (hang?)"
# Still serving after the suite: a fresh INQUIRY works.
iscsi-inq "$TND_URL" >/dev/null || fail "tandemd no longer answers after the suite"
stop_tandemd
echo "conformance: iscsi-test-cu exit code $rc (failures are tracked, not fatal, for now)"
