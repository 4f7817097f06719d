# bench/lib.sh — what every bench script needs, sourced after it has set
# its own options. Not a script of its own.
#
#   bench_workdir NAME   make WORK=$TND_BENCH_DIR/tnd-NAME.XXXXXX (TND_BENCH_DIR
#                        defaults to /var/tmp; point it at another file system
#                        to measure images there) and arrange that on
#                        exit every pid in PIDS gets SIGTERM, then SIGKILL
#                        half a second later, is reaped, and WORK is removed
#   free_port            a TCP port nobody listens on (best effort)
#   wait_port PORT PID [TRIES]
#                        poll every 10 ms (TRIES, default 1000) until something
#                        listens on PORT; fails early if PID died
#
# Bench scripts run tandemd, tgtd and generators on loopback only.

bench_workdir() {
	WORK=$(mktemp -d "${TND_BENCH_DIR:-/var/tmp}/tnd-$1.XXXXXX")
	PIDS=()
	trap bench_cleanup EXIT
	trap 'exit 130' INT TERM
}

bench_cleanup() {
	local p
	for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -TERM "$p" 2>/dev/null || true; done
	sleep 0.5
	for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -KILL "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done
	rm -rf "$WORK"
}

# A port below the kernel's ephemeral range that no socket uses (one inside
# it can be taken by any outgoing connection before the daemon binds it).
free_port() {
	local p lo
	lo=$(awk '{ print $1 }' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
	[ "$lo" -gt 12000 ] 2>/dev/null || lo=32768
	for _ in $(seq 1 200); do
		p=$(( RANDOM % (lo - 10000) + 10000 ))
		if ! ss -Htan "sport = :$p" | grep -q .; then echo "$p"; return 0; fi
	done
	return 1
}

wait_port() {
	local port=$1 pid=$2 tries=${3:-1000}
	for _ in $(seq 1 "$tries"); do
		ss -Htln "sport = :$port" | grep -q . && return 0
		kill -0 "$pid" 2>/dev/null || return 1
		sleep 0.01
	done
	return 1
}
