#!/usr/bin/env bash
# Dedup, compression and zero elision through iSCSI: an lsfs device created
# through the API with "dedup": true and "compress": "lz4" takes random,
# duplicate, all-zero, text-like and mixed data with qemu-img over
# iscsi://; everything reads back byte for byte, also after a restart
# (replay/checkpoint of packed and shared records) and passes tandem-check;
# GET /v1/devices/{name} reports plausible figures: duplicates are shared
# (dedup ratio > 1.5), text compresses, zeros are not stored, random data
# is stored raw.
source "$(dirname "$0")/lib.sh"

command -v qemu-img >/dev/null || skip "qemu-img not installed"
command -v curl >/dev/null || skip "curl not installed"

CHECK="$TND_BUILD/tools/tandem-check/tandem-check"
T=iqn.2026-11.io.tandem:cz
DATA="$TND_TMP/data"
mkdir -m 700 "$DATA"
MIB=$((1 << 20))

start() { start_with_mgmt; URL="iscsi://127.0.0.1:$TND_PORT/$T/0"; }
stats() {
	curl -sf -H "Authorization: Bearer $(cat "$DATA/api.token")" \
		"http://127.0.0.1:$MPORT/v1/devices/cz"
}

start
# compress_mode inline: the counts below are of compression on the write
# path (adaptive may defer it on a loaded machine; t_deferred_compress
# covers that).
ctl device create cz --size 64MiB --compress lz4 --compress-mode inline --dedup ||
	fail "device create --compress lz4 --dedup"
ctl device create cz2 --size 4MiB --compress zstd 2>/dev/null && fail "compress zstd accepted"
ctl target create "$T" --allow-any-initiator || fail "target create"
ctl lun map "$T" 0 cz || fail "lun map"
s=$(stats)
grep -q '"compress": *"lz4"' <<<"$s" || fail "the device does not say compress lz4: $s"
grep -q '"dedup": *true' <<<"$s" || fail "the device does not say dedup true: $s"

# The patterns, 8 MiB each, at 8 MiB offsets: random, duplicate (one
# random MiB eight times), zeros, text, mixed (text, random and zero 64 KiB
# pieces interleaved).
img="$TND_TMP/img.raw"
rnd="$TND_TMP/rnd"
head -c $((8 * MIB)) /dev/urandom >"$rnd"
txt="$TND_TMP/txt"
# (head closes its input early: no pipefail in here)
(
	set +o pipefail
	{
		find /usr/share/doc -type f -name '*copyright*' 2>/dev/null | head -400 |
			xargs cat 2>/dev/null
		for i in $(seq 1 200000); do echo "line $i: the quick brown fox jumps over the lazy dog"; done
	} | head -c $((8 * MIB)) >"$txt"
) || true
[ "$(stat -c %s "$txt")" = $((8 * MIB)) ] || fail "could not make 8 MiB of text"
{
	cat "$rnd"
	for _ in 1 2 3 4 5 6 7 8; do head -c $MIB "$rnd"; done
	head -c $((8 * MIB)) /dev/zero
	cat "$txt"
	for i in $(seq 0 127); do
		case $((i % 3)) in
		0) dd if="$txt" bs=64K skip="$i" count=1 status=none ;;
		1) dd if="$rnd" bs=64K skip="$i" count=1 status=none ;;
		2) head -c $((64 << 10)) /dev/zero ;;
		esac
	done
} >"$img"
[ "$(stat -c %s "$img")" = $((40 * MIB)) ] || fail "test image is $(stat -c %s "$img") bytes"

qemu-img convert -n -f raw -O raw "$img" "$URL" || fail "qemu-img convert into the LUN failed"
back="$TND_TMP/back.raw"
qemu-img convert -f raw -O raw "$URL" "$back" || fail "qemu-img convert out of the LUN failed"
cmp -n $((40 * MIB)) "$img" "$back" || fail "data read back differs"
cmp -i $((40 * MIB)) -n $((24 * MIB)) "$back" /dev/zero || fail "unwritten blocks are not zero"

s=$(stats)
echo "$s"
mapped=$(echo "$s" | field logical_bytes)
stored=$(echo "$s" | field stored_bytes)
ratio=$(echo "$s" | field compression_ratio)
zero=$(echo "$s" | field zero_blocks)
comp=$(echo "$s" | field compressed_blocks)
raw=$(echo "$s" | field raw_blocks)
hits=$(echo "$s" | field dedup_hits)
dratio=$(echo "$s" | field dedup_ratio)
mism=$(echo "$s" | field verify_mismatches)
# qemu-img may skip zero areas itself; whatever was written as zeros was
# not stored, and nothing zero is mapped: at most 40 - 8 - (zero part of
# mixed) MiB is mapped.
[ "$mapped" -le $(((40 - 8) * MIB)) ] || fail "zero blocks are mapped: logical_bytes $mapped"
[ "$mapped" -ge $(((40 - 8 - 3) * MIB)) ] || fail "too little mapped: logical_bytes $mapped"
# The eight duplicate MiB repeat the first random MiB, and the mixed part
# repeats pieces of the random and text parts: all shared.
[ "$hits" -ge $((8 * 256 + 2 * 40 * 16)) ] || fail "only $hits blocks deduplicated"
awk -v r="$dratio" 'BEGIN { exit !(r > 1.5) }' || fail "dedup ratio $dratio too low"
[ "$mism" = 0 ] || fail "$mism verify mismatches with full fingerprints"
# What is stored once: 8 MiB random, 8 MiB text (compressed).
[ "$comp" -ge 2048 ] || fail "only $comp blocks compressed"
[ "$raw" -ge 2048 ] || fail "only $raw blocks stored raw"
[ "$stored" -lt $((12 * MIB)) ] || fail "stored_bytes $stored: more than one copy stored"
awk -v r="$ratio" 'BEGIN { exit !(r > 1.3) }' || fail "compression ratio $ratio too low"
echo "dedup+compress: mapped $mapped stored $stored dedup $dratio ($hits shared) compression $ratio" \
	"zero $zero lz4 $comp raw $raw"

# qemu-img leaves zero areas out; write zeros as data (not WRITE SAME) over
# the first random MiB: those blocks are not stored, and read back zero.
if command -v qemu-io >/dev/null; then
	qemu-io -f raw -c "write -P 0 0 1M" "$URL" >/dev/null || fail "qemu-io zero write failed"
	dd if=/dev/zero of="$img" bs=1M count=1 conv=notrunc status=none
	s=$(stats)
	zero2=$(echo "$s" | field zero_blocks)
	mapped2=$(echo "$s" | field logical_bytes)
	[ $((zero2 - zero)) = 256 ] || fail "1 MiB of zeros: zero_blocks went from $zero to $zero2"
	[ $((mapped - mapped2)) = $MIB ] || fail "1 MiB of zeros left mapped: $mapped -> $mapped2"
	qemu-img convert -f raw -O raw "$URL" "$back" || fail "read after the zero write failed"
	cmp -n $((40 * MIB)) "$img" "$back" || fail "data differs after the zero write"
fi

# Restart: everything comes back from the checkpoint and the log.
stop_tandemd
grep -q "compression" "$TND_LOG" || fail "no compression figures in the shutdown log"
"$CHECK" "$DATA/cz.lsfs" || fail "tandem-check is not clean"
start
qemu-img convert -f raw -O raw "$URL" "$back" || fail "read after restart failed"
cmp -n $((40 * MIB)) "$img" "$back" || fail "data differs after a restart"
# Overwrite the text part with random and the random part with text: the
# old payloads die, GC may move packed ones; all reads back.
dd if="$rnd" of="$img" bs=1M seek=24 conv=notrunc status=none
dd if="$txt" of="$img" bs=1M seek=0 conv=notrunc status=none
qemu-img convert -n -f raw -O raw "$img" "$URL" || fail "second convert failed"
qemu-img convert -f raw -O raw "$URL" "$back" || fail "second read failed"
cmp -n $((40 * MIB)) "$img" "$back" || fail "data differs after overwriting"
stop_tandemd
"$CHECK" "$DATA/cz.lsfs" || fail "tandem-check is not clean after overwriting"
echo "dedup_compress: ok"
