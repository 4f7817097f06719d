#!/usr/bin/env bash
# Deferred compression through the API: an lsfs device with compress=lz4
# and dedup starts in compress_mode adaptive (GET shows it), refuses a bad
# mode with HTTP 400 naming the field; text written in adaptive mode at low
# load is compressed and does not mark the store for deferred records
# (deferred_marked false, no "store marked as holding deferred records" in
# the log, not even after the switch live to deferred with `tandemctl
# device set`); only a write in deferred mode marks it, logged once. Text
# written through iSCSI is then stored raw
# (deferred_writes, no compressed_blocks) and deduplicated inline; once
# the device is idle, compaction compresses it: deferred_blocks drops to
# 0 and the stored bytes fall below the logical ones. Data reads back at
# every step; the mode survives a restart; tandem-check is clean.
source "$(dirname "$0")/lib.sh"

command -v qemu-img >/dev/null || skip "qemu-img not installed"
command -v curl >/dev/null || skip "curl not installed"

CHECK="$TND_BUILD/tools/tandem-check/tandem-check"
T=iqn.2026-11.io.tandem:dz
DATA="$TND_TMP/data"
mkdir -m 700 "$DATA"
MIB=$((1 << 20))

start() { start_with_mgmt; URL="iscsi://127.0.0.1:$TND_PORT/$T/0"; }
stats() { api GET /v1/devices/dz | sed '$d'; }
put() { mirror_put "$1" "$2" "$T" "$img"; }  # put FILE OFFSET: into LUN 0 and $img
readback() { lun_equals "$1" "$URL" "$img" $((16 * MIB)); }  # readback WHAT: LUN's first 16 MiB = $img
settle() {  # settle WHAT: wait (up to 30 s) for deferred_blocks to reach 0
	local t0=$SECONDS s
	while :; do
		s=$(stats)
		[ "$(field deferred_blocks <<<"$s")" = 0 ] && break
		[ $((SECONDS - t0)) -lt 30 ] || fail "deferred blocks left 30 s after $1: $s"
		sleep 0.2
	done
	echo "$1: settled in $((SECONDS - t0)) s"
}
text() {  # text N SEED: N MiB of text, different in each MiB
	(
		set +o pipefail
		for i in $(seq 1 $(($1 * 20000))); do
			echo "seed $2 line $i: the quick brown fox jumps over the lazy dog"
		done | head -c $(($1 * MIB))
	) || true
}
text 6 a >"$TND_TMP/a"
head -c $MIB "$TND_TMP/a" >>"$TND_TMP/a"   # a duplicate MiB: shared inline
head -c $MIB "$TND_TMP/a" >>"$TND_TMP/a"
text 8 c >"$TND_TMP/c"
img="$TND_TMP/img.raw"
head -c $((16 * MIB)) /dev/zero >"$img"

start
ctl device create dz --size 64MiB --compress lz4 --dedup || fail "device create"
ctl target create "$T" --allow-any-initiator || fail "target create"
ctl lun map "$T" 0 dz || fail "lun map"
s=$(stats)
grep -q '"compress_mode": *"adaptive"' <<<"$s" || fail "the default mode is not adaptive: $s"
r=$(api PATCH /v1/devices/dz '{"compress_mode":"lazy"}')
[ "$(tail -1 <<<"$r")" = 400 ] && grep -q compress_mode <<<"$r" || fail "compress_mode lazy: $r"
ctl device set dz compress_mode=sometimes 2>/dev/null && fail "tandemctl accepted compress_mode=sometimes"
# Adaptive at this load (256 KiB: a 20 ms window never fills) defers
# nothing: the store is not marked, older builds could still open it.
text 1 b | head -c $((256 << 10)) >"$TND_TMP/b"
lun_put "$TND_TMP/b" $((40 * MIB)) "$T" || fail "writing b failed"
s=$(stats)
comp0=$(field compressed_blocks <<<"$s")
[ "$(field deferred_writes <<<"$s")" = 0 ] || fail "adaptive deferred at low load: $s"
grep -q '"deferred_marked": *false' <<<"$s" || fail "marked for deferred records before any: $s"
ctl device set dz compress_mode=deferred || fail "tandemctl device set compress_mode=deferred"
s=$(stats)
grep -q '"compress_mode": *"deferred"' <<<"$s" || fail "GET does not show deferred: $s"
grep -q '"deferred_marked": *false' <<<"$s" || fail "the mode change marked the store: $s"
grep -q "store marked as holding deferred records" "$TND_LOG" &&
	fail "store marked for deferred records before any was written"

# The first write it wants deferred is compressed and marks the store (a
# superblock update, two flushes); deferring starts once that is durable.
text 1 p | head -c $((64 << 10)) >"$TND_TMP/p"
lun_put "$TND_TMP/p" $((41 * MIB)) "$T" || fail "writing p failed"
for _ in $(seq 1 100); do
	s=$(stats)
	grep -q '"deferred_marked": *true' <<<"$s" && break
	sleep 0.1
done
grep -q '"deferred_marked": *true' <<<"$s" || fail "a write in deferred mode did not mark the store: $s"
[ "$(grep -c "store marked as holding deferred records" "$TND_LOG")" = 1 ] ||
	fail "the mark is not logged once after the first deferral"
comp0=$(field compressed_blocks <<<"$s")
def0=$(field deferred_writes <<<"$s")

put "$TND_TMP/a" 0
s=$(stats)
def=$(($(field deferred_writes <<<"$s") - def0))
comp=$(($(field compressed_blocks <<<"$s") - comp0))
hits=$(field dedup_hits <<<"$s")
echo "part a: $def deferred, $comp compressed, $hits shared"
[ "$def" -ge 1536 ] || fail "only $def blocks of 6 MiB text deferred: $s"
[ "$comp" = 0 ] || fail "$comp blocks compressed on the write path in deferred mode: $s"
[ "$hits" -ge 512 ] || fail "only $hits blocks of two duplicate MiB shared: $s"
readback "part a, deferred"
settle "part a"
s=$(stats)
stored=$(field stored_bytes <<<"$s")
echo "part a compacted: $(field compacted_blocks <<<"$s") blocks, stored $stored bytes for $((8 * MIB))"
[ "$(field compacted_blocks <<<"$s")" -ge 1536 ] || fail "compaction compressed too little: $s"
[ "$stored" -lt $((3 * MIB)) ] || fail "8 MiB of text stored in $stored bytes after compaction"
readback "part a, compacted"

# Restart with blocks still deferred (most likely: stopped right away).
put "$TND_TMP/c" $((8 * MIB))
stop_tandemd
"$CHECK" "$DATA/dz.lsfs" || fail "tandem-check is not clean with deferred blocks"
start
s=$(stats)
grep -q '"compress_mode": *"deferred"' <<<"$s" || fail "compress_mode lost by a restart: $s"
readback "after a restart"
settle "part c"
s=$(stats)
[ "$(field stored_bytes <<<"$s")" -lt $((6 * MIB)) ] || fail "16 MiB of text stored in too much: $s"
readback "part c, compacted"
stop_tandemd
"$CHECK" "$DATA/dz.lsfs" || fail "tandem-check is not clean at the end"
echo "deferred_compress: ok"
