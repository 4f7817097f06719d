#!/usr/bin/env bash
# ACLs, LUN masking and CHAP through the daemon: a configuration file with
# per-target "acls" (docs/config.md), driven with libiscsi's tools under
# different initiator names and credentials, and chap_probe for what
# libiscsi cannot send (reflected and over-long mutual challenges).
source "$(dirname "$0")/lib.sh"

IQN="iqn.2026-11.io.tandem.test:acl"
A="iqn.2026-11.io.tandem.test:a"          # every LUN, no CHAP
B="iqn.2026-11.io.tandem.test:b"          # LUN 1 only
C="iqn.2026-11.io.tandem.test:c"          # CHAP
M="iqn.2026-11.io.tandem.test:m"          # mutual CHAP
X="iqn.2026-11.io.tandem.test:stranger"   # no ACL
CSECRET="c-secret-123456"
MSECRET="m-secret-123456"
TSECRET="t-secret-654321"

cfg="$TND_TMP/acl.json"
cat >"$cfg" <<JSON
{
  "devices": [
    { "name": "acl0", "type": "flat", "size": "64MiB" },
    { "name": "acl1", "type": "flat", "size": "64MiB" }
  ],
  "targets": [
    { "iqn": "$IQN", "allow_any_initiator": false,
      "luns": { "0": "acl0", "1": "acl1" },
      "acls": [
        { "initiator": "$A" },
        { "initiator": "$B", "luns": [1] },
        { "initiator": "$C", "chap": { "user": "cuser", "secret": "$CSECRET" } },
        { "initiator": "$M", "chap": { "user": "muser", "secret": "$MSECRET" },
          "mutual_chap": { "user": "tgt", "secret": "$TSECRET" } }
      ] }
  ]
}
JSON
chmod 600 "$cfg"
start_tandemd --config "$cfg"
P="127.0.0.1:$TND_PORT"
url() { echo "iscsi://${2:+$2@}$P/$IQN/$1"; }

# An initiator in the ACL logs in, reads and writes.
iscsi-inq -i "$A" "$(url 0)" >/dev/null || fail "initiator A cannot INQUIRY LUN 0"
"$PROGS/tnd-iotest" --initiator-name "$A" --url "$(url 0)" --write-read 1048576 --seed 3 ||
	fail "initiator A: write/read-back on LUN 0 failed"
out=$(iscsi-ls -s -i "$A" "iscsi://$P") || fail "iscsi-ls as A failed: $out"
grep <<<"$out" -q "Lun:0" && grep <<<"$out" -q "Lun:1" || fail "A does not see LUNs 0 and 1: $out"

# Another initiator is refused, and discovery does not show it the target.
if iscsi-inq -i "$X" "$(url 0)" >/dev/null 2>&1; then
	fail "an initiator without an ACL logged in"
fi
out=$(iscsi-ls -i "$X" "iscsi://$P" 2>&1) || true
grep <<<"$out" -q "$IQN" && fail "SendTargets showed the target to a stranger: $out"

# LUN masking: B sees LUN 1 only; LUN 0 is unreachable for it.
out=$(iscsi-ls -s -i "$B" "iscsi://$P") || fail "iscsi-ls -s as B failed: $out"
echo "$out"
grep <<<"$out" -q "Lun:1" || fail "B does not see LUN 1"
grep <<<"$out" -q "Lun:0" && fail "B sees the masked LUN 0"
if iscsi-readcapacity16 -i "$B" "$(url 0)" >/dev/null 2>&1; then
	fail "B reached the masked LUN 0"
fi
iscsi-readcapacity16 -i "$B" "$(url 1)" >/dev/null || fail "B cannot reach LUN 1"

# CHAP: the right secret gets in; a wrong or missing one does not.
iscsi-inq -i "$C" "$(url 0 "cuser%$CSECRET")" >/dev/null || fail "CHAP with the right secret failed"
"$PROGS/tnd-iotest" --initiator-name "$C" --url "$(url 0 "cuser%$CSECRET")" --write-read 65536 --seed 4 ||
	fail "CHAP session: write/read-back failed"
if iscsi-inq -i "$C" "$(url 0 "cuser%wrong-secret-99")" >/dev/null 2>&1; then
	fail "CHAP with a wrong secret got in"
fi
if iscsi-inq -i "$C" "$(url 0)" >/dev/null 2>&1; then
	fail "an initiator that must use CHAP got in without it"
fi
grep -q "$CSECRET" "$TND_LOG" && fail "a CHAP secret appeared in the log"

# Mutual CHAP through libiscsi (it checks the target's answer), then by hand.
LIBISCSI_CHAP_TARGET_USERNAME=tgt LIBISCSI_CHAP_TARGET_PASSWORD="$TSECRET" \
	iscsi-inq -i "$M" "$(url 0 "muser%$MSECRET")" >/dev/null || fail "mutual CHAP through libiscsi failed"
if LIBISCSI_CHAP_TARGET_USERNAME=tgt LIBISCSI_CHAP_TARGET_PASSWORD="not-the-target-pw" \
	iscsi-inq -i "$M" "$(url 0 "muser%$MSECRET")" >/dev/null 2>&1; then
	fail "libiscsi accepted a target that does not know the mutual secret"
fi
"$PROGS/chap_probe" 127.0.0.1 "$TND_PORT" "$IQN" "$M" muser "$MSECRET" "$TSECRET" good ||
	fail "chap_probe: mutual exchange"
"$PROGS/chap_probe" 127.0.0.1 "$TND_PORT" "$IQN" "$M" muser "$MSECRET" "$TSECRET" reflect ||
	fail "chap_probe: a reflected challenge was not refused"
"$PROGS/chap_probe" 127.0.0.1 "$TND_PORT" "$IQN" "$M" muser "$MSECRET" "$TSECRET" long ||
	fail "chap_probe: an over-long challenge was not refused"
grep -q "$TSECRET\|$MSECRET" "$TND_LOG" && fail "a CHAP secret appeared in the log"

stop_tandemd
echo "acl_chap: ok"
