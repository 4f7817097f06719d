/*
 * fvol.h — the in-memory volume the SCSI fuzzers run their LUs on, and the
 * command runner with the invariants every SCSI fuzzer checks.
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
 *
 * fuzz_cmd_run() executes one command and polls the reactor until it
 * completes, then abort()s unless the command completed exactly once,
 * in_len stays within the buffer, nothing is left attached to it, a CHECK
 * CONDITION carries fixed-format sense, and no volume has I/O in flight.
 */
#ifndef TND_FUZZ_FVOL_H
#define TND_FUZZ_FVOL_H

#include <stdbool.h>
#include <stdint.h>

#include "scsi.h"
#include "tnd_reactor.h"
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

/* A command under test. The harness fills c (cdb, lu, nexus, data, dir,
 * view) with fuzz_cmd_init() and its own extras; cancel makes the command's
 * cancelled() hook answer true from its second call on. */
struct fuzz_cmd {
	struct tnd_scsi_cmd c;
	int calls;
	int steps;
	bool cancel;
};

/* @cdb: 16 bytes, of which @cdb_len count; @buf: @len bytes or NULL. */
void fuzz_cmd_init(struct fuzz_cmd *f, struct tnd_reactor *r, struct tnd_scsi_nexus *nx,
		   struct tnd_scsi_lu *lu, const uint8_t *cdb, uint8_t cdb_len, uint8_t *buf,
		   uint32_t len, enum tnd_scsi_dir dir);

/* Execute @f on @r, polling at most @max_polls times, and check the
 * invariants above against @vols. */
void fuzz_cmd_run(struct fuzz_cmd *f, struct tnd_reactor *r, unsigned max_polls,
		  struct fvol *const *vols, unsigned nvols);

#endif
