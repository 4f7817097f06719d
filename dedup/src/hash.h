/*
 * Small integer hashes shared by the index and the refcount table.
 *
 * Fingerprints are already uniform in a normal build, but a
 * TND_DEDUP_FP_BITS=12 build leaves most of their bits zero, and pbas are
 * sequential; mixing both through a 64-bit finaliser makes every bit of the
 * input reach the bits the tables use.
 */
#ifndef TND_DEDUP_HASH_H
#define TND_DEDUP_HASH_H

#include <stdint.h>

/* MurmurHash3's 64-bit finaliser: a bijection with full avalanche. */
static inline uint64_t dd_mix64(uint64_t x)
{
	x ^= x >> 33;
	x *= UINT64_C(0xff51afd7ed558ccd);
	x ^= x >> 33;
	x *= UINT64_C(0xc4ceb9fe1a85ec53);
	x ^= x >> 33;
	return x;
}

/* Map a uniform 64-bit @h onto [0, n) without a division (Lemire). */
static inline uint64_t dd_range(uint64_t h, uint64_t n)
{
	return (uint64_t)(((unsigned __int128)h * n) >> 64);
}

#endif
