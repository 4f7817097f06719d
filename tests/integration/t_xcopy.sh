#!/usr/bin/env bash
# EXTENDED COPY (VMware VAAI clone) through the daemon, and the XCOPY ACL
# boundary (CVE-2020-28374): initiator A sees LUNs 0, 1 and 2 (2 is
# read-only), initiator B sees LUN 0 only. A copies between its LUNs;
# B, naming LUN 1 by its NAA designator (learnt by A), is refused with
# COPY ABORTED / UNREACHABLE COPY TARGET and LUN 1 is left untouched,
# whichever direction B tries.
source "$(dirname "$0")/lib.sh"

IQN="iqn.2026-11.io.tandem.test:xcopy"
A="iqn.2026-11.io.tandem.test:a"
B="iqn.2026-11.io.tandem.test:b"
cfg="$TND_TMP/xcopy.json"
# A read-only image is opened, never created.
truncate -s 64M "$TND_TMP/xc2.img"
cat >"$cfg" <<JSON
{
  "devices": [
    { "name": "xc0", "type": "flat", "size": "64MiB" },
    { "name": "xc1", "type": "flat", "size": "64MiB" },
    { "name": "xc2", "type": "flat", "size": "64MiB", "read_only": true,
      "path": "$TND_TMP/xc2.img" }
  ],
  "targets": [
    { "iqn": "$IQN", "allow_any_initiator": false,
      "luns": { "0": "xc0", "1": "xc1", "2": "xc2" },
      "acls": [
        { "initiator": "$A" },
        { "initiator": "$B", "luns": [0] }
      ] }
  ]
}
JSON
start_tandemd --config "$cfg"
P="127.0.0.1:$TND_PORT"
url() { echo "iscsi://$P/$IQN/$1"; }
X="$PROGS/tnd-xcopy"

naa0=$("$X" -i "$A" naa "$(url 0)") || fail "no NAA for LUN 0"
naa1=$("$X" -i "$A" naa "$(url 1)") || fail "no NAA for LUN 1"
naa2=$("$X" -i "$A" naa "$(url 2)") || fail "no NAA for LUN 2"
[ "$naa0" != "$naa1" ] || fail "LUNs 0 and 1 share an NAA"
echo "NAA: LUN0 $naa0 LUN1 $naa1 LUN2 $naa2"
out=$("$X" -i "$A" opparams "$(url 0)") || fail "OPERATING PARAMETERS failed"
echo "operating parameters: $out"

# A: LUN 1 -> LUN 0, 4 MiB (several copy chunks), reads back on LUN 0.
"$X" -i "$A" fill "$(url 1)" 1000 8192 11 || fail "A cannot fill LUN 1"
"$X" -i "$A" fill "$(url 0)" 0 8192 22 || fail "A cannot fill LUN 0"
out=$("$X" -i "$A" copy "$(url 0)" "$naa1" "$naa0" 1000 0 8192) ||
	fail "A's copy LUN1 -> LUN0 failed: $out"
"$X" -i "$A" check "$(url 0)" 0 8192 11 || fail "LUN 0 does not hold LUN 1's data after the copy"
"$X" -i "$A" check "$(url 1)" 1000 8192 11 || fail "the copy changed its source"

# B: LUN 1 is outside its view. As destination and as source: refused
# with the answer an unknown designator gets, and LUN 1 is untouched.
"$X" -i "$B" fill "$(url 0)" 0 64 33 || fail "B cannot write its LUN 0"
out=$("$X" -i "$B" copy "$(url 0)" "$naa0" "$naa1" 0 1000 64) && fail "B copied into LUN 1: $out"
[ "$out" = "CHECK a/08/04" ] || fail "B's copy into LUN 1: want COPY ABORTED 08/04, got $out"
"$X" -i "$A" check "$(url 1)" 1000 8192 11 || fail "LUN 1 changed by B's refused copy"
out=$("$X" -i "$B" copy "$(url 0)" "$naa1" "$naa0" 1000 0 64) && fail "B copied out of LUN 1: $out"
[ "$out" = "CHECK a/08/04" ] || fail "B's copy out of LUN 1: want COPY ABORTED 08/04, got $out"
"$X" -i "$B" check "$(url 0)" 0 64 33 || fail "B's LUN 0 changed by a refused copy"
bogus="${naa1:0:30}$(printf '%02x' $(( (0x${naa1:30:2} + 1) % 256 )))"
out=$("$X" -i "$B" copy "$(url 0)" "$naa0" "$bogus" 0 1000 64) && fail "copy to an unknown NAA: $out"
[ "$out" = "CHECK a/08/04" ] || fail "unknown NAA: want COPY ABORTED 08/04, got $out"
# Within its own view B copies fine.
out=$("$X" -i "$B" copy "$(url 0)" "$naa0" "$naa0" 0 4096 64) || fail "B's copy within LUN 0 failed: $out"
"$X" -i "$B" check "$(url 0)" 4096 64 33 || fail "B's copy within LUN 0 did not land"
"$X" -i "$B" check "$(url 0)" 4096 64 34 2>/dev/null && fail "the pattern check accepts any data"
"$X" -i "$A" check "$(url 1)" 1000 8192 11 || fail "LUN 1 changed"

# A read-only destination: DATA PROTECT / WRITE PROTECTED, as for a WRITE.
out=$("$X" -i "$A" copy "$(url 0)" "$naa0" "$naa2" 0 0 64) && fail "copied into the read-only LUN 2: $out"
[ "$out" = "CHECK 7/27/00" ] || fail "read-only destination: want 7/27/00, got $out"
# Past the end of the destination: COPY ABORTED.
out=$("$X" -i "$A" copy "$(url 0)" "$naa1" "$naa0" 0 131070 64) && fail "copy past the end: $out"
[ "${out:0:7}" = "CHECK a" ] || fail "copy past the end: want COPY ABORTED, got $out"

kill -0 "$TND_PID" 2>/dev/null || fail "tandemd died"
stop_tandemd
echo "xcopy: ok"
