#!/usr/bin/env bash
# conformance-vs-tgt.sh — the libiscsi conformance suite (iscsi-test-cu
# --dataloss) against tgt (Debian's tgtd) and against tandem, on this
# machine, each with two portals so the MultipathIO suites run; writes a
# Markdown report of totals, failures and tests with skipped parts to
# bench/results/<date>-<host>-conformance.md.
#
# Not part of `make test` (tgtd wants root and is the peer, not us); the
# ctest integration.conformance runs the tandem half on every `make test`.
#
# Usage: bench/conformance-vs-tgt.sh [--build DIR] [--out FILE] [--type lsfs|flat]
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD="$SRC/build"
OUT=""
TYPE=lsfs
while [ $# -gt 0 ]; do
	case $1 in
	--build) BUILD=$2; shift 2 ;;
	--out) OUT=$2; shift 2 ;;
	--type) TYPE=$2; shift 2 ;;
	-h|--help) sed -n 2,12p "$0"; exit 0 ;;
	*) echo "conformance-vs-tgt.sh: unknown option $1" >&2; exit 2 ;;
	esac
done
case $TYPE in lsfs|flat) ;; *) echo "conformance-vs-tgt.sh: --type lsfs or flat" >&2; exit 2 ;; esac
TANDEMD="$BUILD/daemon/tandemd"
[ -x "$TANDEMD" ] || { echo "conformance-vs-tgt.sh: $TANDEMD not built (make build)" >&2; exit 1; }
for c in tgtd tgtadm iscsi-test-cu; do
	command -v $c >/dev/null || { echo "conformance-vs-tgt.sh: $c not installed (packaging/deps.sh)" >&2; exit 1; }
done
[ -n "$OUT" ] || OUT="$SRC/bench/results/$(date +%F)-$(hostname -s)-conformance.md"

source "$SRC/bench/lib.sh"
bench_workdir conf

outcomes() { awk -f "$SRC/tests/integration/cu-outcomes.awk" "$1"; }
# Totals of one log: "total ran passed failed tests-with-skipped-parts".
summarise() {
	local log=$1 total ran passed failed skipped
	read -r _ total ran passed failed _ < <(grep -E "^ +tests +[0-9]" "$log") || {
		echo "? ? ? ? ?"; return; }
	skipped=$(outcomes "$log" | grep -c "S$" || true)
	echo "$total $ran $passed $failed $skipped"
}
failed_names() { outcomes "$1" | awk -F'\t' '$2 ~ /F/{print $1}' | sort | uniq -c | sed 's/^ *//'; }
skipped_names() { outcomes "$1" | awk -F'\t' '$2 ~ /S/{print $1}' | sort | uniq -c | sed 's/^ *//'; }
# Why parts were skipped, most frequent first.
skip_reasons() { grep -o "\[SKIPPED\].*" "$1" | sed 's/\[SKIPPED\] *//' | sort | uniq -c | sort -rn; }

run_cu() {
	local name=$1 url1=$2 url2=$3
	echo "conformance-vs-tgt.sh: iscsi-test-cu against $name"
	timeout 1200 iscsi-test-cu --dataloss "$url1" "$url2" >"$WORK/$name.log" 2>&1 || true
}

# ---- tgt: one target, two portals, LUN 1 on a 1 GiB file (LUN 0 is tgt's controller)
truncate -s 1G "$WORK/tgt.img"
p1=$(free_port); p2=$(free_port)
ctl=$(( (RANDOM % 50000) + 10000 ))
tgtd -f -C "$ctl" --iscsi "portal=127.0.0.1:$p1,portal=127.0.0.1:$p2" >"$WORK/tgtd.log" 2>&1 &
PIDS+=($!)
wait_port "$p1" $! || { cat "$WORK/tgtd.log" >&2; exit 1; }
TIQN=iqn.2026-11.io.tandem:conf-tgt
adm="tgtadm -C $ctl --lld iscsi"
$adm --op new --mode target --tid 1 -T "$TIQN"
$adm --op new --mode logicalunit --tid 1 --lun 1 -b "$WORK/tgt.img"
$adm --op bind --mode target --tid 1 -I ALL
run_cu tgt "iscsi://127.0.0.1:$p1/$TIQN/1" "iscsi://127.0.0.1:$p2/$TIQN/1"

# ---- tandem: one target, two portals, a 1 GiB device of --type
mkdir -p "$WORK/tandem-data"
QIQN=iqn.2026-11.io.tandem:conf
cat >"$WORK/tandem.json" <<EOF
{
  "devices": [ { "name": "conf", "type": "$TYPE", "size": "1GiB", "block_size": 512 } ],
  "targets": [ { "iqn": "$QIQN", "allow_any_initiator": true, "luns": { "0": "conf" } } ]
}
EOF
q1=$(free_port); q2=$(free_port)
"$TANDEMD" --config "$WORK/tandem.json" --data-dir "$WORK/tandem-data" --mgmt off \
	--portal "127.0.0.1:$q1" --portal "127.0.0.1:$q2" >"$WORK/tandemd.log" 2>&1 &
PIDS+=($!)
wait_port "$q1" $! || { cat "$WORK/tandemd.log" >&2; exit 1; }
run_cu tandem "iscsi://127.0.0.1:$q1/$QIQN/0" "iscsi://127.0.0.1:$q2/$QIQN/0"

read -r t_total t_ran t_pass t_fail t_skip < <(summarise "$WORK/tgt.log")
read -r q_total q_ran q_pass q_fail q_skip < <(summarise "$WORK/tandem.log")
{
	echo "# iscsi-test-cu --dataloss: tgt vs tandem — $(date +%F) on $(hostname -s)"
	echo
	echo "| | |"
	echo "|---|---|"
	echo "| CPU | $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //') ($(nproc) CPUs online) |"
	echo "| kernel | $(uname -r) |"
	echo "| libiscsi | $(dpkg-query -W -f '${Version}' libiscsi-bin 2>/dev/null || echo unknown) |"
	echo "| tgt | $(tgtd -V 2>/dev/null || echo unknown), rdwr backing store, 1 GiB file |"
	echo "| tandem | git $(git -C "$SRC" rev-parse --short HEAD 2>/dev/null || echo unknown), $TYPE device, 1 GiB |"
	echo "| run | two portals of one target (MultipathIO suites run), \`iscsi-test-cu --dataloss URL1 URL2\` |"
	echo
	echo "| | tests | run | passed | failed | with skipped parts |"
	echo "|---|---:|---:|---:|---:|---:|"
	echo "| tgt | $t_total | $t_ran | $t_pass | $t_fail | $t_skip |"
	echo "| tandem | $q_total | $q_ran | $q_pass | $q_fail | $q_skip |"
	echo
	echo "\"With skipped parts\" counts the tests that reported SKIPPED for some"
	echo "part (a command the target does not implement, or a check that needs"
	echo "something the run does not have)."
	echo
	for sys in tgt tandem; do
		echo "<details><summary>$sys: failed and skipped tests</summary>"
		echo
		echo "Failed:"
		echo
		failed_names "$WORK/$sys.log" | sed 's/^/- /'
		echo
		echo "With skipped parts:"
		echo
		skipped_names "$WORK/$sys.log" | sed 's/^/- /'
		echo
		echo "Skip notes (count, reason):"
		echo
		echo '```'
		skip_reasons "$WORK/$sys.log"
		echo '```'
		echo
		echo "</details>"
		echo
	done
	echo "Reproduce: \`bench/conformance-vs-tgt.sh --type $TYPE\`"
} >"$OUT"
echo "conformance-vs-tgt.sh: wrote $OUT"
cat "$OUT" | sed -n '1,25p'
