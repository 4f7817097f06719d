/*
 * memvol.h — a test-only volume that keeps its blocks in RAM.
 *
 * It completes every I/O through a message to the submitter's reactor, as
 * the async contract demands, so tests drive it by polling that reactor.
 * Tests steer it through the public struct: its info (size, caching,
 * thin, read-only), a one-shot error to inject for a given I/O type, and
 * a log of the last I/O submitted so that flags such as TND_IO_FUA can be
 * asserted. Submissions may come from several reactor threads: a mutex
 * guards the blocks and the log (test code; the product has no such lock).
 */
#ifndef TND_TEST_MEMVOL_H
#define TND_TEST_MEMVOL_H

#include <pthread.h>

#include "tnd_volume.h"

struct memvol {
	struct tnd_volume vol;            /* first: the volume handle */
	struct tnd_volume_info info;
	uint8_t *data;
	/* One-shot fault: the next I/O of type fail_type completes with
	 * fail_err (negative errno); fail_submit makes submit() refuse it. */
	int fail_err;
	enum tnd_io_type fail_type;
	bool fail_submit;
	/* TND_IO_BLOCK_STATUS: false answers -EOPNOTSUPP (a volume that cannot
	 * tell); true calls a block deallocated exactly when it is all zeros. */
	bool block_status;
	/* The last I/O seen, and counts per type. */
	struct {
		enum tnd_io_type type;
		unsigned flags;
		uint64_t lba;
		uint32_t nblocks;
	} last;
	unsigned count[8];
	pthread_mutex_t lock;
};

/* Create a volume of @num_blocks blocks of @block_size bytes, zeroed. */
struct memvol *memvol_create(uint32_t block_size, uint64_t num_blocks);

#endif
