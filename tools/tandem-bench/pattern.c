/*
 * pattern.c — random numbers and the verify tag of tandem-bench.
 *
 * Sector layout of a verified write (512 bytes, little-endian fields):
 *
 *   0  u64 magic   "TTNDBCH1" (as bytes)
 *   8  u64 sector  byte offset on the LUN / 512
 *  16  u64 seed    the run's --seed
 *  24  u32 gen     generation of the write (unique per write in this run)
 *  28  u32 zero
 *  32  480 bytes   splitmix64 stream keyed by (seed, sector, gen)
 *
 * The header lets a mismatch say *what* came back: a stale generation of
 * the right sector (lost write), another sector's data (misdirected I/O),
 * zeros (unwritten or trimmed), or garbage (corruption). The body catches
 * torn or partially corrupted sectors that keep a valid-looking header.
 */
#include <stdio.h>
#include <string.h>

#include "bench.h"
#include "tnd_client.h"

#define PATTERN_MAGIC 0x31484342444e5454ull
#define PATTERN_HDR   32u

static inline uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

static inline uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

void bench_rng_seed(struct bench_rng *r, uint64_t seed)
{
	uint64_t x = seed;
	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix64(&x);
}

uint64_t bench_rng_next(struct bench_rng *r)
{
	uint64_t *s = r->s;
	uint64_t result = rotl(s[1] * 5, 7) * 9;
	uint64_t t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return result;
}

uint64_t bench_rng_below(struct bench_rng *r, uint64_t n)
{
	return (uint64_t)(((unsigned __int128)bench_rng_next(r) * n) >> 64);
}

static void fill_sector(unsigned char *p, uint64_t sector, uint64_t seed, uint32_t gen)
{
	tnd_client_put_le64(p, PATTERN_MAGIC);
	tnd_client_put_le64(p + 8, sector);
	tnd_client_put_le64(p + 16, seed);
	tnd_client_put_le64(p + 24, gen);
	uint64_t x = seed ^ (sector * 0x9e3779b97f4a7c15ull) ^ ((uint64_t)gen << 32 | gen);
	for (unsigned off = PATTERN_HDR; off < BENCH_SECTOR; off += 8)
		tnd_client_put_le64(p + off, splitmix64(&x));
}

void bench_pattern_fill(unsigned char *buf, size_t len, uint64_t first_sector,
			uint64_t seed, uint32_t gen)
{
	for (size_t i = 0; i < len / BENCH_SECTOR; i++)
		fill_sector(buf + i * BENCH_SECTOR, first_sector + i, seed, gen);
}

static void describe(const unsigned char *p, uint64_t sector, uint64_t seed,
		     uint32_t gen, char *why, size_t whylen)
{
	static const unsigned char zero[BENCH_SECTOR];

	if (memcmp(p, zero, BENCH_SECTOR) == 0) {
		snprintf(why, whylen, "zeros (expected gen %u)", gen);
		return;
	}
	if (tnd_client_get_le64(p) != PATTERN_MAGIC) {
		snprintf(why, whylen, "garbage, no tag (expected gen %u)", gen);
		return;
	}
	uint64_t s = tnd_client_get_le64(p + 8), sd = tnd_client_get_le64(p + 16);
	uint32_t g = (uint32_t)tnd_client_get_le64(p + 24);
	if (sd != seed)
		snprintf(why, whylen, "tag of another run (seed %llu, sector %llu, gen %u)",
			 (unsigned long long)sd, (unsigned long long)s, g);
	else if (s != sector)
		snprintf(why, whylen, "data of sector %llu gen %u (misdirected)",
			 (unsigned long long)s, g);
	else if (g != gen)
		snprintf(why, whylen, "gen %u instead of %u (%s)", g, gen,
			 g < gen ? "stale: lost write" : "newer than acknowledged");
	else
		snprintf(why, whylen, "right tag, corrupted body (gen %u)", gen);
}

long bench_pattern_check(const unsigned char *buf, size_t len, uint64_t first_sector,
			 uint64_t seed, uint32_t gen, char *why, size_t whylen)
{
	unsigned char want[BENCH_SECTOR];

	for (size_t i = 0; i < len / BENCH_SECTOR; i++) {
		const unsigned char *p = buf + i * BENCH_SECTOR;
		fill_sector(want, first_sector + i, seed, gen);
		if (memcmp(p, want, BENCH_SECTOR) != 0) {
			describe(p, first_sector + i, seed, gen, why, whylen);
			return (long)i;
		}
	}
	return -1;
}
