/*
 * Fingerprints: XXH3-128 of the block, truncated to TND_DEDUP_FP_BITS in
 * test builds (see tnd_dedup.h) so that collisions become common enough to
 * exercise the verify path.
 */
#include <xxhash.h>
#if defined(__x86_64__) || defined(__i386__)
/*
 * libxxhash's x86 dispatcher: XXH3_128bits becomes a call that picks the
 * widest vector unit the CPU has (AVX2, AVX-512) at first use. The plain
 * entry point is built for the baseline SSE2. Same hash, other speed: a
 * 4 KiB block in cache hashes in about 77 ns instead of 218, one fetched
 * from memory in about 406 ns instead of 679 (2-CPU EPYC VM), and every
 * stored or looked-up chunk pays it.
 */
#include <xxh_x86dispatch.h>
#endif

#include "tnd_dedup.h"

_Static_assert(TND_DEDUP_FP_BITS >= 1 && TND_DEDUP_FP_BITS <= 128,
	       "TND_DEDUP_FP_BITS must be 1..128");

void tnd_dedup_fingerprint(const void *buf, size_t len, struct tnd_dedup_fp *out)
{
	XXH128_hash_t h = XXH3_128bits(buf, len);

	out->lo = h.low64;
	out->hi = h.high64;
#if TND_DEDUP_FP_BITS < 64
	out->lo &= (UINT64_C(1) << TND_DEDUP_FP_BITS) - 1;
	out->hi = 0;
#elif TND_DEDUP_FP_BITS == 64
	out->hi = 0;
#elif TND_DEDUP_FP_BITS < 128
	out->hi &= (UINT64_C(1) << (TND_DEDUP_FP_BITS - 64)) - 1;
#endif
}

unsigned tnd_dedup_fp_bits(void)
{
	return TND_DEDUP_FP_BITS;
}
