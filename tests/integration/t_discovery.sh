#!/usr/bin/env bash
# A new user's first look: discovery lists the demo target; INQUIRY and
# READ CAPACITY(16) answer on its LUN 0 (1 GiB, 512-byte blocks).
source "$(dirname "$0")/lib.sh"

start_tandemd

out=$(iscsi-ls "iscsi://127.0.0.1:$TND_PORT") || fail "iscsi-ls failed: $out"
echo "$out"
echo "$out" | grep -q "Target:$TND_IQN Portal:127.0.0.1:$TND_PORT,1" ||
	fail "iscsi-ls does not list $TND_IQN at 127.0.0.1:$TND_PORT"

out=$(iscsi-ls -s "iscsi://127.0.0.1:$TND_PORT") || fail "iscsi-ls -s failed: $out"
echo "$out"
echo "$out" | grep -q "Lun:0" || fail "iscsi-ls -s shows no LUN 0"

out=$(iscsi-inq "$TND_URL") || fail "iscsi-inq failed: $out"
echo "$out"
echo "$out" | grep -qi "TANDEM" || fail "INQUIRY vendor is not TANDEM"

out=$(iscsi-inq -e 1 -c 0x80 "$TND_URL") || fail "iscsi-inq VPD 0x80 failed: $out"
echo "$out"
out=$(iscsi-inq -e 1 -c 0x83 "$TND_URL") || fail "iscsi-inq VPD 0x83 failed: $out"
echo "$out"
echo "$out" | grep -qi "NAA" || fail "VPD 0x83 has no NAA designator"

out=$(iscsi-readcapacity16 "$TND_URL") || fail "iscsi-readcapacity16 failed: $out"
echo "$out"
echo "$out" | grep -q "LOGICAL BLOCK LENGTH IN BYTES:512" || fail "block length is not 512"
echo "$out" | grep -q "RETURNED LOGICAL BLOCK ADDRESS:2097151" || fail "capacity is not 1 GiB"

stop_tandemd
echo "discovery: ok"
