#!/usr/bin/env bash
# Persistent reservations across restarts: registered and reserved with
# APTPL=1 they survive both SIGTERM and SIGKILL of tandemd (kept in
# <data-dir>/pr/<device>.json); with APTPL=0 they are gone after a restart.
# While the Write Exclusive - Registrants Only reservation (what Windows
# failover clustering takes) holds, a second, unregistered initiator gets
# RESERVATION CONFLICT on a write and the registered holder writes fine.
# A device mapped in two targets has one reservation state, and deleting the
# device removes its file.
source "$(dirname "$0")/lib.sh"

PR="$PROGS/tnd-pr"
[ -x "$PR" ] || skip "tnd-pr not built"
A="iqn.2026-11.io.tandem:host-a"
B="iqn.2026-11.io.tandem:host-b"
KEY=0x1122334455667788
WERO=5

pr() { "$PR" "$TND_URL" "$@"; }

expect_state() {   # expect_state KEYS RESERVATION
	local keys res
	keys=$(pr "$A" 7 keys) || fail "read keys failed"
	res=$(pr "$A" 7 reservation) || fail "read reservation failed"
	[ "$keys" = "$1" ] || fail "keys: want '$1', got '$keys'"
	[ "$res" = "$2" ] || fail "reservation: want '$2', got '$res'"
}

expect_conflict_for_b() {
	local rc=0
	pr "$B" 9 write 8 2>/dev/null || rc=$?
	[ $rc = 2 ] || fail "write from the unregistered initiator: want RESERVATION CONFLICT (2), got $rc"
	pr "$A" 7 write 8 || fail "write from the reservation holder failed"
}

start_tandemd
data=$TND_DATA

# ---- APTPL=1: survives SIGTERM and SIGKILL ----
pr "$A" 7 register $KEY aptpl || fail "register with APTPL failed"
pr "$A" 7 reserve $KEY $WERO || fail "reserve failed"
expect_state "$KEY" "$KEY $WERO"
expect_conflict_for_b
prfile=$(ls "$data"/pr/*.json 2>/dev/null | head -1) || true
[ -n "$prfile" ] || fail "no APTPL file under $data/pr"

stop_tandemd
start_tandemd --data-dir "$data"
expect_state "$KEY" "$KEY $WERO"
expect_conflict_for_b

kill_tandemd
start_tandemd --data-dir "$data"
expect_state "$KEY" "$KEY $WERO"
expect_conflict_for_b

# Unregistering the holder ends the reservation and empties the file.
pr "$A" 7 unregister $KEY || fail "unregister failed"
expect_state "" "none"
if ls "$data"/pr/*.json >/dev/null 2>&1; then fail "APTPL file left behind"; fi

# ---- APTPL=0: gone after a restart ----
pr "$A" 7 register $KEY || fail "register without APTPL failed"
pr "$A" 7 reserve $KEY $WERO || fail "reserve failed"
expect_state "$KEY" "$KEY $WERO"
expect_conflict_for_b
if ls "$data"/pr/*.json >/dev/null 2>&1; then fail "APTPL file written without APTPL"; fi
kill_tandemd
start_tandemd --data-dir "$data"
expect_state "" "none"
pr "$B" 9 write 8 || fail "write from the second initiator after the restart failed"

# ---- a corrupt file is ignored, not trusted, and the daemon runs ----
stop_tandemd
dev=$(basename "$prfile" .json)
printf '{"format": "tandem-pr", "version": 1, "device": "%s", "generation": 3, "registrations": [{"key": "0xzz"}], "reservation": null}' "$dev" >"$prfile"
start_tandemd --data-dir "$data"
expect_state "" "none"
grep -q "ignoring persistent reservation file" "$TND_LOG" || fail "corrupt APTPL file not reported"
stop_tandemd

# ---- one device in two targets: one reservation state; deleting the
# device forgets its APTPL file ----
CTL="$TND_BUILD/tools/tandemctl/tandemctl"
T2=iqn.2026-11.io.tandem:second
MPORT=$(free_port)
start_tandemd --data-dir "$data" --mgmt "127.0.0.1:$MPORT"
wait_port "$MPORT" "$TND_PID" || fail "the management API did not come up"
ctl() { "$CTL" --url "http://127.0.0.1:$MPORT" --data-dir "$data" "$@" >/dev/null; }
ctl device create prdel --type flat --size 16MiB || fail "device create"
ctl lun map "$TND_IQN" 1 prdel || fail "lun map 1"
ctl target create "$T2" --allow-any-initiator || fail "target create"
ctl lun map "$T2" 0 prdel || fail "lun map in the second target"
URL1="iscsi://127.0.0.1:$TND_PORT/$TND_IQN/1"
URL2="iscsi://127.0.0.1:$TND_PORT/$T2/0"
"$PR" "$URL1" "$A" 7 register 0x77 aptpl || fail "register through target 1"
"$PR" "$URL1" "$A" 7 reserve 0x77 $WERO || fail "reserve through target 1"
keys=$("$PR" "$URL2" "$B" 9 keys) || fail "read keys through target 2"
[ "$keys" = "0x0000000000000077" ] || fail "target 2 sees keys '$keys'"
rc=0
"$PR" "$URL2" "$B" 9 write 8 2>/dev/null || rc=$?
[ $rc = 2 ] || fail "write through target 2 while reserved through target 1: want conflict, got $rc"
[ -f "$data/pr/prdel.json" ] || fail "no APTPL file for prdel"
ctl device delete prdel --force || fail "device delete"
[ ! -e "$data/pr/prdel.json" ] || fail "the deleted device's APTPL file is still there"
stop_tandemd
echo "pr_aptpl: APTPL=1 survived SIGTERM and SIGKILL, APTPL=0 did not; conflicts as expected"
