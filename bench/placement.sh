#!/usr/bin/env bash
# placement.sh — one session to one lsfs device, and where it runs.
#
#   bench/placement.sh [--runs N] [--seconds S] [--features JSON] [--data KIND]
#                      A=TANDEMD B=TANDEMD ...
#
# Each variant (a label and a tandemd binary) runs side by side with the
# others, --reactors 2, one lsfs device (home reactor 0) on a target of its
# own, filled once. Then, N times, each variant in turn gets one tandem-bench
# run (QD32 4 KiB random writes over 256 MiB, 1 s ramp + S s) on a new
# connection; the reactor the session runs on is read from GET /v1/sessions
# during the run. Connections are handed to reactors round-robin, so without
# placement a variant's runs alternate between its device's home reactor
# (the whole write path on one CPU) and the other one; with placement every
# run should sit on reactor 1. One line per run: label, run, reactor, IOPS,
# target CPU seconds, load average; then per label and reactor the median.
# --features adds device keys (default: '"dedup": true, "compress": "lz4"'),
# --data is tandem-bench's --data (default text). Target and generator run
# under nice -n -10 (root). Everything started here is killed on exit.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/.." && pwd)
BENCH=${TND_BENCH:-$SRC/build/tools/tandem-bench/tandem-bench}
RUNS=6
SECS=5
FEAT='"dedup": true, "compress": "lz4"'
DATAKIND=text
VARIANTS=()
while [ $# -gt 0 ]; do
	case $1 in
	--runs) RUNS=$2; shift ;;
	--seconds) SECS=$2; shift ;;
	--features) FEAT=$2; shift ;;
	--data) DATAKIND=$2; shift ;;
	*=*) VARIANTS+=("$1") ;;
	*) echo "placement.sh: unknown option $1" >&2; exit 2 ;;
	esac
	shift
done
[ ${#VARIANTS[@]} -ge 1 ] || { echo "placement.sh: name at least one LABEL=TANDEMD" >&2; exit 2; }

source "$SRC/bench/lib.sh"
bench_workdir placement
NICE="nice -n -10"
[ "$(id -u)" = 0 ] || NICE=""
IQN=iqn.2026-11.io.tandem:placement
declare -A PORT MGMT TP
for v in "${VARIANTS[@]}"; do
	l=${v%%=*} bin=${v#*=}
	mkdir -p "$WORK/$l"
	PORT[$l]=$(free_port)
	MGMT[$l]=$(free_port)
	cat >"$WORK/$l/c.json" <<EOF
{ "devices": [ { "name": "v", "type": "lsfs", "size": "1GiB"${FEAT:+, $FEAT} } ],
  "targets": [ { "iqn": "$IQN", "allow_any_initiator": true, "luns": { "0": "v" } } ] }
EOF
	$NICE "$bin" --data-dir "$WORK/$l" --portal "127.0.0.1:${PORT[$l]}" \
		--mgmt "127.0.0.1:${MGMT[$l]}" --config "$WORK/$l/c.json" --reactors 2 \
		>"$WORK/$l/log" 2>&1 &
	TP[$l]=$!
	PIDS+=("$!")
	wait_port "${PORT[$l]}" "${TP[$l]}" && wait_port "${MGMT[$l]}" "${TP[$l]}" ||
		{ tail "$WORK/$l/log" >&2; exit 1; }
	"$BENCH" --url "iscsi://127.0.0.1:${PORT[$l]}/$IQN/0" --rw write --pattern seq --bs 256k \
		--qd 8 --size 256MiB --count 1024 --data "$DATAKIND" >/dev/null
done

OUTF="$WORK/out.tsv"
: >"$OUTF"
for i in $(seq 1 "$RUNS"); do
	for v in "${VARIANTS[@]}"; do
		l=${v%%=*}
		$NICE "$BENCH" --url "iscsi://127.0.0.1:${PORT[$l]}/$IQN/0" --rw write --pattern rand \
			--bs 4k --qd 32 --size 256MiB --ramp 1 --time "$SECS" --data "$DATAKIND" \
			--target-pid "${TP[$l]}" --json >"$WORK/r.json" &
		bp=$!
		sleep 1.5
		re=$(curl -s -H "Authorization: Bearer $(cat "$WORK/$l/api.token")" \
			"http://127.0.0.1:${MGMT[$l]}/v1/sessions" | python3 -c "
import json, sys
print(','.join(str(s['reactor']) for s in json.load(sys.stdin)['sessions']))")
		wait $bp
		read -r iops cpu < <(python3 -c "
import json; r = json.load(open('$WORK/r.json')); print(round(r['iops']), r['target_cpu_s'])")
		load=$(cut -d' ' -f1 /proc/loadavg)
		printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$l" "$i" "$re" "$iops" "$cpu" "$load" | tee -a "$OUTF"
	done
done
echo "label reactor runs median_iops"
sort -k1,1 -k3,3 -k4,4n "$OUTF" | awk -F'\t' '
	{ k = $1 " " $3; v[k, ++n[k]] = $4 }
	END { for (k in n) { m = n[k]; med = m % 2 ? v[k, (m + 1) / 2] : (v[k, m / 2] + v[k, m / 2 + 1]) / 2
		print k, m, med } }' | sort
