#!/usr/bin/env bash
# The libiscsi conformance suite against the demo LUN: it must run to the
# end, tandemd must survive it, and no test may fail (the totals are printed
# so the log shows the counts, skipped parts included).
source "$(dirname "$0")/lib.sh"

command -v iscsi-test-cu >/dev/null || skip "iscsi-test-cu not installed"
# Two portals of the same target, so the MultipathIO suites run too.
port2=$(free_port)
start_tandemd --portal "127.0.0.1:$port2"
url2="iscsi://127.0.0.1:$port2/$TND_IQN/0"
log="$TND_TMP/cu.log"
rc=0
timeout 600 iscsi-test-cu --dataloss "$TND_URL" "$url2" >"$log" 2>&1 || rc=$?
grep -E "Run Summary|suites|tests|asserts" "$log" || true
kill -0 "$TND_PID" 2>/dev/null || { tail -50 "$log"; fail "tandemd died during iscsi-test-cu"; }
[ $rc -ne 124 ] || fail "iscsi-test-cu timed out (hang?)"
# Still serving after the suite: a fresh INQUIRY works.
iscsi-inq "$TND_URL" >/dev/null || fail "tandemd no longer answers after the suite"
stop_tandemd
read -r _ total ran passed failed _ < <(grep -E "^ +tests +[0-9]" "$log") ||
	fail "no run summary in the iscsi-test-cu log"
skipped=$(awk -f "$TND_SRC/tests/integration/cu-outcomes.awk" "$log" | grep -c "S$" || true)
echo "conformance: $total tests, $ran run, $passed passed, $failed failed, $skipped with skipped parts"
grep -o "\[SKIPPED\].*" "$log" | sort | uniq -c | sort -rn || true
[ "$failed" = 0 ] || { grep -B2 "FAILED" "$log" | tail -40; fail "$failed conformance tests failed"; }
