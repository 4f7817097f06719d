#!/usr/bin/env bash
# 64 MiB of seeded random data written and read back identical through
# libiscsi with header digests on and off; and 64 MiB with both header and
# data digests through tnd-rawio.
source "$(dirname "$0")/lib.sh"

start_tandemd
"$PROGS/tnd-iotest" --url "$TND_URL" --header-digest --write-read $((64 << 20)) --seed 7 ||
	fail "64 MiB write/read with HeaderDigest=CRC32C did not read back identical"
"$PROGS/tnd-iotest" --url "$TND_URL" --write-read $((16 << 20)) --seed 8 ||
	fail "16 MiB write/read without digests did not read back identical"
# libiscsi never offers DataDigest, so our own small initiator checks it.
"$PROGS/tnd-rawio" 127.0.0.1 "$TND_PORT" "$TND_IQN" $((64 << 20)) 5 ||
	fail "64 MiB write/read with HeaderDigest and DataDigest CRC32C failed"
stop_tandemd
echo "io_digest: ok"
