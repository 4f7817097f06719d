# Per-test outcome of an iscsi-test-cu log: one "Suite.Test<TAB>flags" line
# per test run, in order (F: failed, S: some part skipped). A suite can run
# more than once, under several families, so a name can repeat. CUnit prints
# a test's SKIPPED notes after its name, sometimes after its "passed" (the
# suite's teardown probes too), so everything up to the next test belongs to
# the current one. Used by t_conformance.sh and bench/conformance-vs-tgt.sh.
/^Suite: / { s = $2 }
/^  Test: / { n++; name[n] = s "." $2 }
n && (/\.\.\.FAILED/ || /^    [0-9]+\. [^ ]+:[0-9]+ /) { f[n] = 1 }
n && /\[SKIPPED\]/ { k[n] = 1 }
END {
	for (i = 1; i <= n; i++)
		print name[i] "\t" (f[i] ? "F" : "") (k[i] ? "S" : "")
}
