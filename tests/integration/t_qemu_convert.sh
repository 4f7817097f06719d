#!/usr/bin/env bash
# qemu-img convert a 256 MiB random raw image into the LUN over iscsi://
# and back out again: byte-identical.
source "$(dirname "$0")/lib.sh"

command -v qemu-img >/dev/null || skip "qemu-img not installed"
start_tandemd

src="$TND_TMP/src.raw"
back="$TND_TMP/back.raw"
head -c $((256 << 20)) /dev/urandom >"$src"

qemu-img convert -n -f raw -O raw "$src" "$TND_URL" || fail "qemu-img convert into the LUN failed"
qemu-img convert -f raw -O raw "$TND_URL" "$back" || fail "qemu-img convert out of the LUN failed"
[ "$(stat -c %s "$back")" = $((1 << 30)) ] || fail "image read back is not 1 GiB"
cmp -n $((256 << 20)) "$src" "$back" || fail "data read back differs"
# The rest of the thin LUN was never written: zeros.
cmp -i $((256 << 20)) -n $((64 << 20)) "$back" /dev/zero || fail "unwritten blocks are not zero"

out=$(qemu-img info "$TND_URL") || fail "qemu-img info failed"
echo "$out"
grep <<<"$out" -q "virtual size: 1 GiB" || fail "qemu-img sees the wrong size"

stop_tandemd
echo "qemu_convert: ok"
