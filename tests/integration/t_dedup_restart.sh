#!/usr/bin/env bash
# Dedup across a restart: the on-disk format holds no fingerprints, so
# after tandemd restarts the index is rebuilt from the log in the
# background (index warm-up). A 32 MiB random image is written through
# iSCSI to a dedup device, tandemd restarts, GET /v1/devices/{name} is
# polled until "index_warmup" is "done", and the same image is written at
# another offset: it must be stored as shares (the stored bytes grow by
# less than 10 % of the image); both copies read back byte for byte and
# tandem-check is clean.
#
# The warm-up's rate under client load (dedup_warmup_mbps): bad values
# are a 400 naming the field; at 2 MB/s, with tandem-bench reading all
# the while, a walk started by switching dedup off and on live has
# scanned no more after ~1.5 s than the rate allows (a 4 MiB segment
# takes 2 s: at most the first few), and switched to 0 (unlimited) it
# finishes under the same load. The rate is persisted across a restart.
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

BENCH="$TND_BUILD/tools/tandem-bench/tandem-bench"
for bad in -1 100001 '"fast"' 1.5; do
	r=$(api PATCH /v1/devices/dr "{\"dedup_warmup_mbps\":$bad}")
	[ "$(tail -1 <<<"$r")" = 400 ] && grep -q dedup_warmup_mbps <<<"$r" ||
		fail "dedup_warmup_mbps $bad: $r"
done
ctl device set dr dedup_warmup_mbps=2 || fail "tandemctl device set dedup_warmup_mbps=2"
s=$(stats)
[ "$(echo "$s" | field dedup_warmup_mbps)" = 2 ] || fail "GET does not show the rate: $s"
ctl device set dr dedup=false || fail "dedup off"
"$BENCH" --url "$URL" --rw read --bs 4k --qd 1 --time 5 >"$TND_TMP/bench.out" 2>&1 &
bench=$!
sleep 0.5
ctl device set dr dedup=true || fail "dedup on again"
t0=$(date +%s%N)
sleep 1.5
s=$(stats)
t1=$(date +%s%N)
segsize=$(echo "$s" | field segment_size)
scanned=$(echo "$s" | field index_warmup_scanned)
segs=$(echo "$s" | field index_warmup_segments)
# + 3: the segment a tick starts on credit (paid off afterwards), the
# open segment parsed from RAM (cheap), and one for the walk starting
# before t0.
most=$(( (t1 - t0) / 1000000 * 2000 / segsize + 3 ))
echo "paced warm-up: $scanned of $segs segments of $segsize bytes in $(((t1 - t0) / 1000000)) ms at 2 MB/s (at most $most)"
[ "$(echo "$s" | sfield index_warmup)" = running ] || fail "the paced warm-up is not running: $s"
[ "$segs" -gt $((most + 4)) ] || fail "too few segments ($segs) to tell a rate"
[ "$scanned" -le "$most" ] || fail "the warm-up scanned $scanned segments, more than 2 MB/s allows"
ctl device set dr dedup_warmup_mbps=0 || fail "tandemctl device set dedup_warmup_mbps=0"
for _ in $(seq 1 100); do
	s=$(stats)
	[ "$(echo "$s" | sfield index_warmup)" = done ] && break
	sleep 0.1
done
[ "$(echo "$s" | sfield index_warmup)" = done ] || fail "unlimited, the warm-up did not finish: $s"
kill -0 $bench 2>/dev/null && echo "unlimited warm-up finished while tandem-bench was still reading"
wait $bench || fail "tandem-bench failed: $(cat "$TND_TMP/bench.out")"
stop_tandemd
start
[ "$(stats | field dedup_warmup_mbps)" = 0 ] || fail "dedup_warmup_mbps not persisted"

back="$TND_TMP/back.raw"
qemu-img convert -f raw -O raw "$URL" "$back" || fail "reading the LUN failed"
cmp -n $((IMG_MIB * MIB)) "$img" "$back" || fail "the first copy differs"
cmp -i 0:$((IMG_MIB * MIB)) -n $((IMG_MIB * MIB)) "$img" "$back" || fail "the second copy differs"
stop_tandemd
"$CHECK" "$DATA/dr.lsfs" || fail "tandem-check is not clean"
echo "dedup_restart: ok"
