#!/usr/bin/env bash
# A new user's first look: discovery lists the demo target; INQUIRY and
# READ CAPACITY(16) answer on its LUN 0 (1 GiB, 512-byte blocks).
source "$(dirname "$0")/lib.sh"

start_tandemd

out=$(iscsi-ls "iscsi://127.0.0.1:$TND_PORT") || fail "iscsi-ls failed: $out"
echo "$out"
grep <<<"$out" -q "Target:$TND_IQN Portal:127.0.0.1:$TND_PORT,1" ||
	fail "iscsi-ls does not list $TND_IQN at 127.0.0.1:$TND_PORT"

out=$(iscsi-ls -s "iscsi://127.0.0.1:$TND_PORT") || fail "iscsi-ls -s failed: $out"
echo "$out"
grep <<<"$out" -q "Lun:0" || fail "iscsi-ls -s shows no LUN 0"

out=$(iscsi-inq "$TND_URL") || fail "iscsi-inq failed: $out"
echo "$out"
grep <<<"$out" -qi "TANDEM" || fail "INQUIRY vendor is not TANDEM"

out=$(iscsi-inq -e 1 -c 128 "$TND_URL") || fail "iscsi-inq VPD 0x80 failed: $out"
echo "$out"
out=$(iscsi-inq -e 1 -c 131 "$TND_URL") || fail "iscsi-inq VPD 0x83 failed: $out"
echo "$out"
grep <<<"$out" -qi "NAA" || fail "VPD 0x83 has no NAA designator"

out=$(iscsi-readcapacity16 "$TND_URL") || fail "iscsi-readcapacity16 failed: $out"
echo "$out"
grep <<<"$out" -q "LOGICAL BLOCK LENGTH IN BYTES:512" || fail "block length is not 512"
grep <<<"$out" -q "RETURNED LOGICAL BLOCK ADDRESS:2097151" || fail "capacity is not 1 GiB"

stop_tandemd

# Two portals, IPv4 and IPv6: SendTargets reports both, both serve.
if ip -6 addr show lo 2>/dev/null | grep -q "::1/128"; then
	v6="[::1]:$(free_port)"
	start_tandemd --portal "$v6"
	out=$(iscsi-ls "iscsi://$v6") || fail "iscsi-ls over IPv6 failed: $out"
	echo "$out"
	grep <<<"$out" -qF "Portal:$v6,1" || fail "SendTargets lacks the IPv6 portal"
	grep <<<"$out" -qF "Portal:127.0.0.1:$TND_PORT,1" || fail "SendTargets lacks the IPv4 portal"
	iscsi-inq "iscsi://$v6/$TND_IQN/0" >/dev/null || fail "INQUIRY over IPv6 failed"
	stop_tandemd
else
	echo "no ::1 on this machine: IPv6 portal check skipped"
fi
echo "discovery: ok"
