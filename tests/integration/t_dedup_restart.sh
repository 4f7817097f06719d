#!/usr/bin/env bash
# Dedup across a restart: the on-disk format holds no fingerprints, so
# after tandemd restarts the index is rebuilt from the log in the
# background (index warm-up). A 32 MiB random image is written through
# iSCSI to a dedup device, tandemd restarts, GET /v1/devices/{name} is
# polled until "index_warmup" is "done", and the same image is written at
# another offset: it must be stored as shares (the stored bytes grow by
# less than 10 % of the image); both copies read back byte for byte and
# tandem-check is clean.
source "$(dirname "$0")/lib.sh"

command -v qemu-img >/dev/null || skip "qemu-img not installed"
command -v curl >/dev/null || skip "curl not installed"

CHECK="$TND_BUILD/tools/tandem-check/tandem-check"
T=iqn.2026-11.io.tandem:dr
DATA="$TND_TMP/data"
mkdir -m 700 "$DATA"
MIB=$((1 << 20))
IMG_MIB=32

start() { start_with_mgmt; URL="iscsi://127.0.0.1:$TND_PORT/$T/0"; }
stats() {
	curl -sf -H "Authorization: Bearer $(cat "$DATA/api.token")" \
		"http://127.0.0.1:$MPORT/v1/devices/dr"
}
sfield() { grep -o "\"$1\": *\"[a-z]*\"" | head -1 | sed 's/.*: *"//; s/"//'; }

img="$TND_TMP/img.raw"
head -c $((IMG_MIB * MIB)) /dev/urandom >"$img"
# write_at OFFSET_MIB: the image at that offset of the LUN.
write_at() { lun_put "$img" $(($1 * MIB)) "$T" || fail "writing the image at ${1} MiB failed"; }

start
ctl device create dr --size 128MiB --dedup || fail "device create --dedup"
ctl target create "$T" --allow-any-initiator || fail "target create"
ctl lun map "$T" 0 dr || fail "lun map"
s=$(stats)
[ "$(echo "$s" | sfield index_warmup)" = done ] || fail "a blank device's warm-up is not done: $s"
write_at 0
s=$(stats)
stored1=$(echo "$s" | field stored_bytes)
[ "$stored1" -ge $((IMG_MIB * MIB)) ] || fail "stored_bytes $stored1 after writing the image"

stop_tandemd
start
t0=$(date +%s%N)
state=
for _ in $(seq 1 600); do
	s=$(stats) || fail "GET /v1/devices/dr failed"
	state=$(echo "$s" | sfield index_warmup)
	[ "$state" = done ] && break
	[ "$state" = running ] || fail "index_warmup is '$state' after the restart: $s"
	sleep 0.1
done
[ "$state" = done ] || fail "the index warm-up did not finish in 60 s: $s"
t1=$(date +%s%N)
entries=$(echo "$s" | field index_warmup_entries)
segs=$(echo "$s" | field index_warmup_segments)
scanned=$(echo "$s" | field index_warmup_scanned)
ms=$(echo "$s" | field index_warmup_ms)
[ "$scanned" = "$segs" ] || fail "warm-up done after $scanned of $segs segments"
[ "$entries" -ge $((IMG_MIB * 256 * 9 / 10)) ] || fail "warm-up added only $entries index entries"
grep -q "dedup index warm-up done" "$TND_LOG" || fail "no warm-up line in the log"
echo "warm-up: $segs segments, $entries entries in $ms ms (polled: $(((t1 - t0) / 1000000)) ms)"

write_at $IMG_MIB
s=$(stats)
stored2=$(echo "$s" | field stored_bytes)
hits=$(echo "$s" | field dedup_hits)
grow=$((stored2 - stored1))
echo "second copy after the restart: stored $stored1 -> $stored2 bytes, $hits shared blocks"
[ "$grow" -lt $((IMG_MIB * MIB / 10)) ] ||
	fail "the copy after a restart grew the stored bytes by $grow (>= 10 % of the image)"
[ "$hits" -ge $((IMG_MIB * 256 * 9 / 10)) ] || fail "only $hits blocks shared"

back="$TND_TMP/back.raw"
qemu-img convert -f raw -O raw "$URL" "$back" || fail "reading the LUN failed"
cmp -n $((IMG_MIB * MIB)) "$img" "$back" || fail "the first copy differs"
cmp -i 0:$((IMG_MIB * MIB)) -n $((IMG_MIB * MIB)) "$img" "$back" || fail "the second copy differs"
stop_tandemd
"$CHECK" "$DATA/dr.lsfs" || fail "tandem-check is not clean"
echo "dedup_restart: ok"
