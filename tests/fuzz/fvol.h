/*
 * fvol.h — the in-memory volume the SCSI fuzzers run their LUs on.
 *
 * A test-only volume: blocks in RAM, completions by message to the
 * submitter's reactor (the async contract), a one-shot injected error per
 * I/O type (-EBUSY: refused at submit, no callback), and counters the
 * harnesses check as invariants: I/Os in flight (none may be left when an
 * input is done) and I/Os ever submitted (a volume outside an initiator's
 * view must never be touched). Single-threaded: the fuzzer's
 * thread polls the one reactor.
 *
 * Contract checks abort(), so libFuzzer reports them as crashes: a data
 * buffer whose size does not match the block count, and, with rw_only, any
 * I/O other than READ, WRITE or FLUSH (EXTENDED COPY only moves data).
 */
#ifndef TND_FUZZ_FVOL_H
#define TND_FUZZ_FVOL_H

#include <stdbool.h>
#include <stdint.h>

#include "tnd_volume.h"

struct fvol {
	struct tnd_volume vol;         /* first: the volume handle */
	struct tnd_volume_info info;
	uint8_t *data;
	uint64_t cap_blocks;           /* allocated size; info.num_blocks <= this */
	bool rw_only;
	int fail_err;                  /* one-shot: the next fail_type I/O gets it */
	enum tnd_io_type fail_type;
	unsigned inflight;
	unsigned touched;              /* I/Os ever submitted */
};

/* A zeroed, thin, write-back volume of @nblocks blocks of @bs bytes (aborts
 * on allocation failure). tnd_volume_destroy() frees it. */
struct fvol *fvol_create(uint32_t bs, uint64_t nblocks);

#endif
