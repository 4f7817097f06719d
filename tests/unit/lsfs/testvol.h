/*
 * Test-only volumes for the lsfs tests.
 *
 * ram: a backing volume in memory. I/O is applied at submit and completed
 * by message on io->reactor, like a real asynchronous device.
 *
 * fault: a layer between lsfs and its backing volume that models a disk
 * with a volatile write cache. Writes pass through (so reads see them) and
 * are remembered as pending until a flush that was submitted after they
 * completed has completed; `durable` is the image a power cut would leave
 * if every pending write were lost. fault_crash_image() builds what a power
 * cut at this instant could leave: all pending writes dropped, all kept, a
 * random subset, or a random subset with one write torn at 512 B
 * granularity. Every write or flush submission is an injection point: the
 * hook runs first, and fail_at makes that one operation fail with an error
 * instead of reaching the disk.
 */
#ifndef TND_TESTVOL_H
#define TND_TESTVOL_H

#include <stdbool.h>
#include <stdint.h>

#include "tnd_volume.h"

int ram_vol_create(uint64_t size, uint32_t block_size, struct tnd_volume **out);
/* Wrap @data (borrowed, @size bytes) instead of owning a buffer. */
int ram_vol_wrap(uint8_t *data, uint64_t size, uint32_t block_size, struct tnd_volume **out);
uint8_t *ram_vol_data(struct tnd_volume *v);

struct fault_vol;
typedef void (*fault_hook_fn)(struct fault_vol *f, uint64_t point, void *arg);

enum crash_mode {
	CRASH_DROP_ALL,
	CRASH_KEEP_ALL,
	CRASH_RANDOM,
	CRASH_TEAR,
};

/* Takes ownership of @base, which must be a ram volume. */
int fault_vol_create(struct tnd_volume *base, struct tnd_volume **out);
struct fault_vol *fault_vol_of(struct tnd_volume *v);
void fault_set_hook(struct fault_vol *f, fault_hook_fn fn, void *arg);
/* Make injection point @point fail with @err (0: none). */
void fault_fail_at(struct fault_vol *f, uint64_t point, int err);
uint64_t fault_points(struct fault_vol *f);
uint64_t fault_pending(struct fault_vol *f);
uint64_t fault_size(struct fault_vol *f);
/* Fill @out (fault_size bytes) with a post-crash image. */
void fault_crash_image(struct fault_vol *f, enum crash_mode mode, uint64_t *rng, uint8_t *out);

static inline uint64_t test_rand(uint64_t *s)
{
	/* splitmix64: deterministic per seed, no global state */
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

#endif
