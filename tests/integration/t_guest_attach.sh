#!/usr/bin/env bash
# docs/guest-attach.md, executed: the two ways a LUN becomes a guest's
# pass-through disk, with the same configuration and commands the page shows.
#
# - parent-visible: the hypervisor host's initiator (hv1) sees LUN 0 and
#   nothing else;
# - parent-invisible: a guest's own initiator (vm-web1, with CHAP) sees
#   LUN 1 only, through QEMU's built-in libiscsi initiator (qemu-io uses the
#   same block driver and options as qemu-system's -blockdev), and the host
#   can neither see nor open it;
# - a second guest (vm-db1) is added at run time with tandemctl, as the page
#   shows, and gets its own LUN without disturbing the first.
source "$(dirname "$0")/lib.sh"

command -v qemu-io >/dev/null || skip "qemu-io not installed"

CTL="$TND_BUILD/tools/tandemctl/tandemctl"
T=iqn.2026-11.io.tandem:vmstore
HV=iqn.2026-11.com.example:hv1
WEB=iqn.2026-11.com.example:vm-web1
DB=iqn.2026-11.com.example:vm-db1
WEBSECRET=web1-secret-0123
DBSECRET=db1-secret-45678

DATA="$TND_TMP/data"
mkdir -m 700 "$DATA"
cfg="$TND_TMP/tandem.json"
cat >"$cfg" <<JSON
{
  "devices": [
    { "name": "hv1-disk", "type": "lsfs", "size": "256MiB" },
    { "name": "web1-disk", "type": "lsfs", "size": "256MiB" },
    { "name": "db1-disk", "type": "lsfs", "size": "128MiB" }
  ],
  "targets": [
    { "iqn": "$T", "luns": { "0": "hv1-disk", "1": "web1-disk" },
      "acls": [
        { "initiator": "$HV", "luns": [0] },
        { "initiator": "$WEB", "luns": [1],
          "chap": { "user": "vm-web1", "secret": "$WEBSECRET" } }
      ] }
  ]
}
JSON
chmod 600 "$cfg"
MPORT=$(free_port)
start_tandemd --config "$cfg" --data-dir "$DATA" --mgmt "127.0.0.1:$MPORT"
wait_port "$MPORT" "$TND_PID" || fail "the management API did not come up on $MPORT"
ctl() { "$CTL" --url "http://127.0.0.1:$MPORT" --data-dir "$DATA" "$@"; }
P="127.0.0.1:$TND_PORT"

# QEMU's iSCSI block driver as a guest would get it: own initiator name,
# CHAP secret passed as a secret object, never on the command line.
# Usage: qio INITIATOR LUN USER SECRET qemu-io-commands...
qio() {
	local ini=$1 lun=$2 user=$3 secret=$4
	shift 4
	local opts="driver=raw,file.driver=iscsi,file.transport=tcp,file.portal=$P"
	opts+=",file.target=$T,file.lun=$lun,file.initiator-name=$ini"
	local obj=()
	if [ -n "$user" ]; then
		printf '%s' "$secret" >"$TND_TMP/qsecret"
		obj=(--object "secret,id=sec0,file=$TND_TMP/qsecret")
		opts+=",file.user=$user,file.password-secret=sec0"
	fi
	qemu-io "${obj[@]}" --image-opts "$opts" "$@" 2>&1
}

# ---- parent-visible: the host logs in and sees its LUN, only that one.
out=$(iscsi-ls -s -i "$HV" "iscsi://$P") || fail "iscsi-ls as the host failed: $out"
grep <<<"$out" -q "Lun:0" || fail "the host does not see LUN 0: $out"
grep <<<"$out" -q "Lun:1" && fail "the host sees the guest's LUN 1: $out"
"$PROGS/tnd-iotest" --initiator-name "$HV" --url "iscsi://$P/$T/0" --write-read 1048576 --seed 11 ||
	fail "host: write/read-back on LUN 0 failed"

# ---- parent-invisible: the guest's own initiator, with CHAP.
out=$(qio "$WEB" 1 vm-web1 "$WEBSECRET" -c "write -P 0x5a 0 4M" -c "read -P 0x5a 0 4M" -c "read -P 0 4M 1M") ||
	fail "guest web1: qemu-io write/read on LUN 1 failed: $out"
grep <<<"$out" -q "Pattern verification failed" && fail "guest web1 read back wrong data: $out"
# The host cannot open the guest's LUN: it is absent from its view...
out=$(qio "$HV" 1 "" "" -c "read 0 4k") && fail "the host opened the guest's LUN: $out"
grep <<<"$out" -q "LOGICAL_UNIT_NOT_SUPPORTED" || fail "host on LUN 1: unexpected error: $out"
# ...and the guest cannot reach the host's LUN, nor log in without CHAP.
out=$(qio "$WEB" 0 vm-web1 "$WEBSECRET" -c "read 0 4k") && fail "the guest opened the host's LUN: $out"
out=$(qio "$WEB" 1 "" "" -c "read 0 4k") && fail "the guest logged in without CHAP: $out"
out=$(qio "$WEB" 1 vm-web1 wrong-secret-9999 -c "read 0 4k") && fail "a wrong CHAP secret was accepted: $out"
# An initiator nobody configured is refused at login.
out=$(qio iqn.2026-11.com.example:stranger 1 "" "" -c "read 0 4k") && fail "a stranger opened LUN 1: $out"

# ---- a second guest, added at run time through the API, as the page shows.
printf '%s\n' "$DBSECRET" >"$TND_TMP/db1.secret"
chmod 600 "$TND_TMP/db1.secret"
ctl lun map "$T" 2 db1-disk || fail "tandemctl lun map"
ctl acl add "$T" "$DB" --luns 2 --chap-user vm-db1 --chap-secret-file "$TND_TMP/db1.secret" ||
	fail "tandemctl acl add"
out=$(qio "$DB" 2 vm-db1 "$DBSECRET" -c "write -P 0xdb 0 1M" -c "read -P 0xdb 0 1M") ||
	fail "guest db1: qemu-io on LUN 2 failed: $out"
grep <<<"$out" -q "Pattern verification failed" && fail "guest db1 read back wrong data: $out"
out=$(iscsi-ls -s -i "$HV" "iscsi://$P") || fail "iscsi-ls as the host failed: $out"
grep <<<"$out" -q "Lun:2" && fail "the host sees db1's LUN 2: $out"
# The first guest's data is untouched.
out=$(qio "$WEB" 1 vm-web1 "$WEBSECRET" -c "read -P 0x5a 0 4M") || fail "guest web1 re-read failed: $out"
grep <<<"$out" -q "Pattern verification failed" && fail "guest web1's data changed: $out"

stop_tandemd
echo "guest_attach: ok"
