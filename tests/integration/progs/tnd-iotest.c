/*
 * tnd-iotest — a small libiscsi client for integration tests.
 *
 * Three modes, one per question a test asks of a target:
 *
 *   --write-read BYTES --seed S
 *       "Does data come back as written?" Writes BYTES of seeded
 *       pseudo-random data from LBA 0 in --chunk pieces (WRITE(16), default
 *       1 MiB), reads it all back (READ(16)) and compares. Synchronous: the
 *       point is correctness of large transfers (R2T, Data-Out, digests),
 *       not speed.
 *
 *   --write-log FILE [--count N]
 *       "Is every acknowledged and flushed write durable?" Writes tagged
 *       --bs blocks at random LBAs, --qd at a time, and issues a
 *       SYNCHRONIZE CACHE after every --flush-every acknowledged writes.
 *       When a SYNCHRONIZE CACHE completes, the writes that had been
 *       acknowledged *before it was sent* are appended to FILE as
 *       "LBA TAG" lines and the file is flushed, so FILE always lists only
 *       writes the target promised were stable. Runs until killed, until
 *       the target goes away, or until N writes are done (then a last
 *       flush covers the rest).
 *
 *   --check-log FILE
 *       Reads every block FILE names and checks its tag; the last line for
 *       an LBA wins. A block may also hold a *newer* tag than logged (a
 *       write acknowledged but not yet covered by a flush when the target
 *       died, which happened to survive): that is allowed, because two
 *       writes to one block are never in flight together, so a newer tag
 *       can only come from a later write to the same block. An older tag
 *       (a lost write), zeros, another block's data, a corrupted body, or a
 *       block whose sectors carry different tags (torn; --allow-torn
 *       permits it) fail the check.
 *
 * Block tag (every 512 bytes, little-endian): u64 magic "TNDIOLOG",
 * u64 sector (byte offset / 512), u64 seed, u64 tag, then 480 bytes derived
 * from (seed, sector, tag). FILE starts with a header line naming seed and
 * block sizes, so --check-log needs nothing but FILE and the URL.
 *
 * Exit status: 0 pass; 1 data check failed; 2 usage or setup error (login,
 * bad file); 3 I/O error or connection lost (the expected end of
 * --write-log when the daemon is killed under it); 77 a feature this
 * libiscsi lacks (data digests).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>

#include "tnd_client.h"

enum {
	EXIT_PASS = 0,
	EXIT_MISMATCH = 1,
	EXIT_USAGE = 2,
	EXIT_IO = 3,
	EXIT_UNSUPPORTED = 77,
};

#define SECTOR       512u
#define TAG_MAGIC    0x474f4c4f49444e54ull   /* "TNDIOLOG" as little-endian bytes */
#define TAG_HDR      32u
#define MAX_REPORTED 10

enum mode {
	MODE_NONE,
	MODE_WRITE_READ,
	MODE_WRITE_LOG,
	MODE_CHECK_LOG,
};

struct opts {
	const char *url;
	const char *initiator;
	bool header_digest;
	bool data_digest;
	enum mode mode;
	uint64_t bytes;           /* --write-read */
	const char *log;          /* --write-log / --check-log */
	uint64_t count;           /* 0: until killed */
	uint64_t seed;
	uint64_t chunk;
	uint64_t bs;              /* 0: max(4096, block size) */
	uint64_t size;            /* working set; 0: whole LUN */
	int qd;
	int flush_every;
	bool log_acked;           /* log at acknowledgement, never flush */
	bool allow_torn;
};

/* One connected LUN. */
struct lun {
	struct iscsi_context *iscsi;
	int lun;
	uint32_t block_size;
	uint64_t nblocks;
};

/* ---- data ------------------------------------------------------------------ */

static uint64_t mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Counter-based stream: the 8 bytes at @off depend only on (seed, off), so
 * any chunk can be regenerated for the read-back without keeping it. */
static void fill_stream(unsigned char *buf, size_t len, uint64_t seed, uint64_t off)
{
	for (size_t i = 0; i < len; i += 8)
		tnd_client_put_le64(buf + i, mix64(seed * 0x9e3779b97f4a7c15ull + (off + i) / 8 + 1));
}

static void fill_tag_sector(unsigned char *p, uint64_t sector, uint64_t seed, uint64_t tag)
{
	tnd_client_put_le64(p, TAG_MAGIC);
	tnd_client_put_le64(p + 8, sector);
	tnd_client_put_le64(p + 16, seed);
	tnd_client_put_le64(p + 24, tag);
	uint64_t k = mix64(seed ^ mix64(sector ^ mix64(tag)));
	for (unsigned off = TAG_HDR; off < SECTOR; off += 8)
		tnd_client_put_le64(p + off, mix64(k + off));
}

static void fill_tagged(unsigned char *buf, size_t len, uint64_t first_sector,
			uint64_t seed, uint64_t tag)
{
	for (size_t i = 0; i < len / SECTOR; i++)
		fill_tag_sector(buf + i * SECTOR, first_sector + i, seed, tag);
}

/* Simple xorshift for picking LBAs; quality is not the point. */
static uint64_t rng_next(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

/* ---- connection --------------------------------------------------------------- */

static int lun_connect(const struct opts *o, struct lun *l)
{
	const struct tnd_client_opts co = { .prog = "tnd-iotest", .initiator = o->initiator,
					    .header_digest = o->header_digest,
					    .data_digest = o->data_digest };
	int ret = tnd_client_connect(&co, o->url, &l->iscsi, &l->lun);
	if (ret < 0)
		return ret;
	ret = tnd_client_capacity(&co, l->iscsi, l->lun, &l->block_size, &l->nblocks);
	if (ret == 0 && l->block_size % SECTOR) {
		fprintf(stderr, "tnd-iotest: block size %u is not a multiple of %u\n", l->block_size,
			SECTOR);
		ret = -EIO;
	}
	if (ret < 0) {
		tnd_client_close(l->iscsi);
		l->iscsi = NULL;
	}
	return ret;
}

static void lun_close(struct lun *l)
{
	tnd_client_close(l->iscsi);
	l->iscsi = NULL;
}

static void print_task_error(struct lun *l, const char *what, uint64_t lba, int status,
			     struct scsi_task *task)
{
	(void)l;
	if (status == SCSI_STATUS_CHECK_CONDITION && task)
		fprintf(stderr, "tnd-iotest: %s at LBA %" PRIu64 ": CHECK CONDITION %s / %s\n",
			what, lba, scsi_sense_key_str(task->sense.key),
			scsi_sense_ascq_str(task->sense.ascq));
	else
		fprintf(stderr, "tnd-iotest: %s at LBA %" PRIu64 " failed: %s (0x%x)\n",
			what, lba, tnd_client_status_name(status), (unsigned)status);
}

/* ---- --write-read -------------------------------------------------------------- */

static int run_write_read(const struct opts *o, struct lun *l)
{
	int rc = EXIT_PASS;

	if (o->bytes == 0 || o->bytes % l->block_size) {
		fprintf(stderr, "tnd-iotest: --write-read %" PRIu64
			" is not a positive multiple of the block size %u\n", o->bytes, l->block_size);
		return EXIT_USAGE;
	}
	if (o->bytes > l->nblocks * l->block_size) {
		fprintf(stderr, "tnd-iotest: --write-read %" PRIu64 " exceeds the LUN (%" PRIu64
			" bytes)\n", o->bytes, l->nblocks * l->block_size);
		return EXIT_USAGE;
	}
	uint64_t chunk = o->chunk - o->chunk % l->block_size;
	if (chunk == 0)
		chunk = l->block_size;
	unsigned char *buf = malloc(chunk);
	if (buf == NULL)
		return EXIT_USAGE;

	for (uint64_t off = 0; off < o->bytes; off += chunk) {
		uint32_t len = (uint32_t)(o->bytes - off < chunk ? o->bytes - off : chunk);
		uint64_t lba = off / l->block_size;
		fill_stream(buf, len, o->seed, off);
		struct scsi_task *t = iscsi_write16_sync(l->iscsi, l->lun, lba, buf, len,
							 (int)l->block_size, 0, 0, 0, 0, 0);
		int status = t ? t->status : SCSI_STATUS_ERROR;
		if (status != SCSI_STATUS_GOOD) {
			print_task_error(l, "WRITE(16)", lba, status, t);
			rc = EXIT_IO;
		} else if (t->residual_status != SCSI_RESIDUAL_NO_RESIDUAL && t->residual > 0) {
			fprintf(stderr, "tnd-iotest: WRITE(16) at LBA %" PRIu64 ": GOOD with a "
				"residual of %zu bytes\n", lba, t->residual);
			rc = EXIT_MISMATCH;
		}
		if (t)
			scsi_free_scsi_task(t);
		if (rc != EXIT_PASS)
			goto out_free;
	}

	unsigned char *want = malloc(chunk);
	if (want == NULL) {
		rc = EXIT_USAGE;
		goto out_free;
	}
	for (uint64_t off = 0; off < o->bytes && rc == EXIT_PASS; off += chunk) {
		uint32_t len = (uint32_t)(o->bytes - off < chunk ? o->bytes - off : chunk);
		uint64_t lba = off / l->block_size;
		struct scsi_task *t = iscsi_read16_sync(l->iscsi, l->lun, lba, len,
							(int)l->block_size, 0, 0, 0, 0, 0);
		int status = t ? t->status : SCSI_STATUS_ERROR;
		if (status != SCSI_STATUS_GOOD) {
			print_task_error(l, "READ(16)", lba, status, t);
			rc = EXIT_IO;
		} else if ((uint64_t)t->datain.size != len) {
			fprintf(stderr, "tnd-iotest: READ(16) at LBA %" PRIu64 " returned %d bytes, "
				"expected %u\n", lba, t->datain.size, len);
			rc = EXIT_MISMATCH;
		} else {
			fill_stream(want, len, o->seed, off);
			if (memcmp(t->datain.data, want, len) != 0) {
				uint32_t i = 0;
				while (t->datain.data[i] == want[i])
					i++;
				fprintf(stderr, "tnd-iotest: data differs at byte %" PRIu64
					" (LBA %" PRIu64 ")\n", off + i, (off + i) / l->block_size);
				rc = EXIT_MISMATCH;
			}
		}
		if (t)
			scsi_free_scsi_task(t);
	}
	free(want);
	if (rc == EXIT_PASS)
		printf("tnd-iotest: wrote and read back %" PRIu64 " bytes, identical\n", o->bytes);
out_free:
	free(buf);
	return rc;
}

/* ---- the asynchronous part: slots and a poll loop --------------------------------- */

struct slot {
	struct aio *a;
	struct scsi_task *task;     /* NULL when free */
	unsigned char *buf;
	struct scsi_iovec iov;      /* libiscsi keeps a pointer until completion */
	uint64_t unit;
	uint64_t tag;
};

struct logent {
	uint64_t lba;
	uint64_t tag;
	uint64_t order;             /* line number, for "last line wins" */
};

struct logvec {
	struct logent *v;
	size_t n, cap;
};

/* State of --write-log and --check-log. */
struct aio {
	const struct opts *o;
	struct lun *l;
	uint32_t bs;
	uint64_t units;
	struct slot *slots;
	int inflight;
	bool io_failed;
	bool closing;               /* context being destroyed: callbacks only free */
	uint64_t seed;              /* of the data: --seed, or the log's header */
	/* write-log */
	FILE *log;
	uint64_t next_tag;
	uint64_t issued, acked, logged;
	uint64_t rng;
	struct logvec acked_since_flush;  /* acknowledged, not yet covered */
	struct logvec covered;            /* covered by the flush in flight */
	struct scsi_task *flush_task;
	/* check-log */
	struct logent *todo;
	size_t ntodo, next_todo;
	uint64_t checked, exact, newer, bad;
};

static int logvec_push(struct logvec *lv, uint64_t lba, uint64_t tag, uint64_t order)
{
	if (lv->n == lv->cap) {
		size_t cap = lv->cap ? lv->cap * 2 : 256;
		struct logent *v = realloc(lv->v, cap * sizeof(*v));
		if (v == NULL)
			return -ENOMEM;
		lv->v = v;
		lv->cap = cap;
	}
	lv->v[lv->n++] = (struct logent){ .lba = lba, .tag = tag, .order = order };
	return 0;
}

static int slots_alloc(struct aio *a)
{
	a->slots = calloc((size_t)a->o->qd, sizeof(*a->slots));
	if (a->slots == NULL)
		return -ENOMEM;
	for (int i = 0; i < a->o->qd; i++) {
		a->slots[i].a = a;
		if (posix_memalign((void **)&a->slots[i].buf, 4096, a->bs) != 0)
			return -ENOMEM;
	}
	return 0;
}

static void slots_free(struct aio *a)
{
	for (int i = 0; a->slots && i < a->o->qd; i++)
		free(a->slots[i].buf);
	free(a->slots);
}

static struct slot *free_slot(struct aio *a)
{
	for (int i = 0; i < a->o->qd; i++)
		if (a->slots[i].task == NULL)
			return &a->slots[i];
	return NULL;
}

static bool unit_busy(const struct aio *a, uint64_t unit)
{
	for (int i = 0; i < a->o->qd; i++)
		if (a->slots[i].task && a->slots[i].unit == unit)
			return true;
	return false;
}

static uint64_t unit_lba(const struct aio *a, uint64_t unit)
{
	return unit * (a->bs / a->l->block_size);
}

/* GOOD, yet the target moved a different amount of data than asked. */
static bool short_transfer(const struct scsi_task *task, int status)
{
	return status == SCSI_STATUS_GOOD && task->residual_status != SCSI_RESIDUAL_NO_RESIDUAL &&
	       task->residual > 0;
}

/* One poll round. 0, or -EIO when the connection is gone. */
static int aio_poll(struct aio *a)
{
	struct pollfd pfd = {
		.fd = iscsi_get_fd(a->l->iscsi),
		.events = (short)iscsi_which_events(a->l->iscsi),
	};
	if (pfd.events == 0)
		pfd.fd = -1;   /* libiscsi asks for a pause; service timeouts only */
	int n = poll(&pfd, 1, 1000);
	if (n < 0 && errno != EINTR)
		return -errno;
	if (iscsi_service(a->l->iscsi, n > 0 ? pfd.revents : 0) < 0) {
		fprintf(stderr, "tnd-iotest: connection lost: %s\n", iscsi_get_error(a->l->iscsi));
		return -EIO;
	}
	return 0;
}

/* ---- --write-log ----------------------------------------------------------------- */

static int log_covered(struct aio *a);

/* --log-acked: a graceful stop must keep every acknowledged write, flushed
 * or not, so each one is logged the moment its GOOD status arrives. */
static void log_acked_now(struct aio *a)
{
	struct logvec t = a->covered;
	a->covered = a->acked_since_flush;
	a->acked_since_flush = t;
	a->acked_since_flush.n = 0;
	if (log_covered(a) < 0)
		a->io_failed = true;
}

static void on_write_done(struct iscsi_context *iscsi, int status, void *command_data,
			  void *private_data)
{
	struct slot *s = private_data;
	struct aio *a = s->a;
	(void)iscsi;
	(void)command_data;

	if (!a->closing && short_transfer(s->task, status)) {
		fprintf(stderr, "tnd-iotest: WRITE(16) at LBA %" PRIu64 ": GOOD with a residual of %zu"
			" bytes\n", unit_lba(a, s->unit), s->task->residual);
		a->io_failed = true;
	} else if (a->closing) {
		/* cancelled by teardown */
	} else if (status != SCSI_STATUS_GOOD) {
		if (!a->io_failed)   /* the first failure tells; the rest echo it */
			print_task_error(a->l, "WRITE(16)", unit_lba(a, s->unit), status, s->task);
		a->io_failed = true;
	} else {
		a->acked++;
		if (logvec_push(&a->acked_since_flush, unit_lba(a, s->unit), s->tag, 0) < 0)
			a->io_failed = true;
		else if (a->o->log_acked)
			log_acked_now(a);
	}
	scsi_free_scsi_task(s->task);
	s->task = NULL;
	a->inflight--;
}

static int log_covered(struct aio *a)
{
	for (size_t i = 0; i < a->covered.n; i++)
		fprintf(a->log, "%" PRIu64 " %" PRIu64 "\n", a->covered.v[i].lba,
			a->covered.v[i].tag);
	/* Into the kernel now: the test may SIGKILL us at any moment. */
	if (fflush(a->log) != 0)
		return -errno;
	a->logged += a->covered.n;
	a->covered.n = 0;
	return 0;
}

static void on_flush_done(struct iscsi_context *iscsi, int status, void *command_data,
			  void *private_data)
{
	struct aio *a = private_data;
	(void)iscsi;
	(void)command_data;

	if (a->closing) {
		/* cancelled by teardown */
	} else if (status != SCSI_STATUS_GOOD) {
		if (!a->io_failed)
			print_task_error(a->l, "SYNCHRONIZE CACHE(10)", 0, status, a->flush_task);
		a->io_failed = true;
	} else if (log_covered(a) < 0) {
		fprintf(stderr, "tnd-iotest: writing %s: %s\n", a->o->log, strerror(errno));
		a->io_failed = true;
	}
	scsi_free_scsi_task(a->flush_task);
	a->flush_task = NULL;
}

/* Send a SYNCHRONIZE CACHE covering every write acknowledged so far. */
static int start_flush(struct aio *a)
{
	struct logvec t = a->covered;
	a->covered = a->acked_since_flush;
	a->acked_since_flush = t;
	a->acked_since_flush.n = 0;
	a->flush_task = iscsi_synchronizecache10_task(a->l->iscsi, a->l->lun, 0, 0, 0, 0,
						      on_flush_done, a);
	return a->flush_task ? 0 : -ENOMEM;
}

static int start_write(struct aio *a, struct slot *s)
{
	uint64_t unit;
	int tries = 0;
	do {
		unit = rng_next(&a->rng) % a->units;
	} while (unit_busy(a, unit) && ++tries < 64);
	if (tries == 64)
		return 0;   /* working set smaller than the queue; try later */

	s->unit = unit;
	s->tag = ++a->next_tag;
	fill_tagged(s->buf, a->bs, unit * (a->bs / SECTOR), a->seed, s->tag);
	s->iov.iov_base = s->buf;
	s->iov.iov_len = a->bs;
	s->task = iscsi_write16_iov_task(a->l->iscsi, a->l->lun, unit_lba(a, unit), NULL, a->bs,
					 (int)a->l->block_size, 0, 0, 0, 0, 0, on_write_done, s,
					 &s->iov, 1);
	if (s->task == NULL)
		return -ENOMEM;
	a->inflight++;
	a->issued++;
	return 0;
}

static int run_write_log(const struct opts *o, struct lun *l, struct aio *a)
{
	int rc = EXIT_PASS;

	a->log = fopen(o->log, "w");
	if (a->log == NULL) {
		fprintf(stderr, "tnd-iotest: cannot create %s: %s\n", o->log, strerror(errno));
		return EXIT_USAGE;
	}
	a->rng = mix64(a->seed) | 1;   /* xorshift state must not be 0 */
	fprintf(a->log, "# tnd-iotest write-log v1 seed=%" PRIu64 " bs=%u block_size=%u\n",
		o->seed, a->bs, l->block_size);
	fflush(a->log);

	for (;;) {
		bool writing = o->count == 0 || a->issued < o->count;
		struct slot *s;
		while (writing && !a->io_failed && (s = free_slot(a)) != NULL &&
		       (o->count == 0 || a->issued < o->count)) {
			uint64_t before = a->issued;
			if (start_write(a, s) < 0) {
				fprintf(stderr, "tnd-iotest: cannot queue WRITE(16): %s\n",
					iscsi_get_error(l->iscsi));
				a->io_failed = true;
			}
			if (a->issued == before)
				break;
		}
		bool all_written = !writing && a->inflight == 0;
		if (!a->io_failed && a->flush_task == NULL && a->acked_since_flush.n > 0 &&
		    (a->acked_since_flush.n >= (size_t)o->flush_every || all_written)) {
			if (start_flush(a) < 0) {
				fprintf(stderr, "tnd-iotest: cannot queue SYNCHRONIZE CACHE: %s\n",
					iscsi_get_error(l->iscsi));
				a->io_failed = true;
			}
		}
		if (a->io_failed) {
			rc = EXIT_IO;
			break;
		}
		if (all_written && a->flush_task == NULL && a->acked_since_flush.n == 0)
			break;
		if (aio_poll(a) < 0) {
			rc = EXIT_IO;
			break;
		}
	}
	fprintf(stderr, "tnd-iotest: write-log: %" PRIu64 " writes issued, %" PRIu64
		" acknowledged, %" PRIu64 " flushed and logged\n", a->issued, a->acked, a->logged);
	fclose(a->log);
	return rc;
}

/* ---- --check-log -------------------------------------------------------------------- */

static int cmp_lba_order(const void *x, const void *y)
{
	const struct logent *a = x, *b = y;
	if (a->lba != b->lba)
		return a->lba < b->lba ? -1 : 1;
	return a->order < b->order ? -1 : a->order > b->order;
}

/* Parse FILE into a->todo: one entry per LBA, its last logged tag. */
static int load_log(struct aio *a, uint64_t *seed, uint32_t *bs, uint32_t *block_size)
{
	const struct opts *o = a->o;
	struct logvec lv = { 0 };
	char line[256];
	uint64_t lineno = 0;
	int ret = 0;

	FILE *f = fopen(o->log, "r");
	if (f == NULL) {
		fprintf(stderr, "tnd-iotest: cannot open %s: %s\n", o->log, strerror(errno));
		return -errno;
	}
	if (fgets(line, sizeof(line), f) == NULL ||
	    sscanf(line, "# tnd-iotest write-log v1 seed=%" SCNu64 " bs=%" SCNu32
		   " block_size=%" SCNu32, seed, bs, block_size) != 3) {
		fprintf(stderr, "tnd-iotest: %s: not a write-log file\n", o->log);
		ret = -EINVAL;
		goto out_close;
	}
	while (fgets(line, sizeof(line), f) != NULL) {
		lineno++;
		/* A line cut short by a kill mid-write has no newline: every
		 * complete line before it was flushed, that one may not be. */
		if (strchr(line, '\n') == NULL)
			break;
		uint64_t lba, tag;
		if (sscanf(line, "%" SCNu64 " %" SCNu64, &lba, &tag) != 2) {
			fprintf(stderr, "tnd-iotest: %s:%" PRIu64 ": bad line\n", o->log, lineno + 1);
			ret = -EINVAL;
			goto out_free;
		}
		if (logvec_push(&lv, lba, tag, lineno) < 0) {
			ret = -ENOMEM;
			goto out_free;
		}
	}
	qsort(lv.v, lv.n, sizeof(*lv.v), cmp_lba_order);
	size_t out = 0;
	for (size_t i = 0; i < lv.n; i++) {
		if (i + 1 < lv.n && lv.v[i + 1].lba == lv.v[i].lba)
			continue;   /* a later line for this LBA wins */
		lv.v[out++] = lv.v[i];
	}
	a->todo = lv.v;
	a->ntodo = out;
	goto out_close;

out_free:
	free(lv.v);
out_close:
	fclose(f);
	return ret;
}

/* Judge one block read back against the tag logged for it. */
static void check_block(struct aio *a, const struct slot *s)
{
	const struct logent *e = &a->todo[s->unit];
	uint64_t first_sector = e->lba * a->l->block_size / SECTOR;
	uint64_t seen_tag = 0;
	unsigned char want[SECTOR];
	const char *problem = NULL;
	uint64_t bad_sector = 0, found_tag = 0;

	for (uint32_t i = 0; i < a->bs / SECTOR && problem == NULL; i++) {
		const unsigned char *p = s->buf + (size_t)i * SECTOR;
		uint64_t sector = first_sector + i;
		uint64_t tag = tnd_client_get_le64(p + 24);
		bad_sector = sector;
		found_tag = tag;
		if (tnd_client_get_le64(p) != TAG_MAGIC) {
			problem = "no tag (zeros or foreign data)";
		} else if (tnd_client_get_le64(p + 8) != sector) {
			problem = "data of another block (misdirected)";
		} else if (tnd_client_get_le64(p + 16) != a->seed) {
			problem = "tag of another run";
		} else if (tag < e->tag) {
			problem = "older tag than acknowledged and flushed (lost write)";
		} else {
			fill_tag_sector(want, sector, a->seed, tag);
			if (memcmp(p, want, SECTOR) != 0)
				problem = "corrupted body";
			else if (i > 0 && tag != seen_tag && !a->o->allow_torn)
				problem = "sectors of one block carry different tags (torn)";
		}
		seen_tag = tag;
	}
	a->checked++;
	if (problem == NULL) {
		if (seen_tag == e->tag)
			a->exact++;
		else
			a->newer++;
		return;
	}
	if (a->bad++ < MAX_REPORTED)
		fprintf(stderr, "tnd-iotest: LBA %" PRIu64 " (sector %" PRIu64 "): %s; logged tag %"
			PRIu64 ", found %" PRIu64 "\n", e->lba, bad_sector, problem, e->tag,
			found_tag);
}

static void on_read_done(struct iscsi_context *iscsi, int status, void *command_data,
			 void *private_data)
{
	struct slot *s = private_data;
	struct aio *a = s->a;
	(void)iscsi;
	(void)command_data;

	if (!a->closing && short_transfer(s->task, status)) {
		fprintf(stderr, "tnd-iotest: READ(16) at LBA %" PRIu64 ": GOOD with a residual of %zu"
			" bytes\n", a->todo[s->unit].lba, s->task->residual);
		a->io_failed = true;
	} else if (a->closing) {
		/* cancelled by teardown */
	} else if (status != SCSI_STATUS_GOOD) {
		if (!a->io_failed)
			print_task_error(a->l, "READ(16)", a->todo[s->unit].lba, status, s->task);
		a->io_failed = true;
	} else {
		check_block(a, s);
	}
	scsi_free_scsi_task(s->task);
	s->task = NULL;
	a->inflight--;
}

static int run_check_log(const struct opts *o, struct lun *l, struct aio *a)
{
	/* Reads use a->todo indexes as "units". */
	for (;;) {
		struct slot *s;
		while (!a->io_failed && a->next_todo < a->ntodo && (s = free_slot(a)) != NULL) {
			s->unit = a->next_todo++;
			s->iov.iov_base = s->buf;
			s->iov.iov_len = a->bs;
			s->task = iscsi_read16_iov_task(l->iscsi, l->lun, a->todo[s->unit].lba, a->bs,
							(int)l->block_size, 0, 0, 0, 0, 0,
							on_read_done, s, &s->iov, 1);
			if (s->task == NULL) {
				fprintf(stderr, "tnd-iotest: cannot queue READ(16): %s\n",
					iscsi_get_error(l->iscsi));
				a->io_failed = true;
				break;
			}
			a->inflight++;
		}
		if (a->io_failed)
			return EXIT_IO;
		if (a->next_todo == a->ntodo && a->inflight == 0)
			break;
		if (aio_poll(a) < 0)
			return EXIT_IO;
	}
	printf("tnd-iotest: check-log: %" PRIu64 " blocks checked: %" PRIu64 " as logged, %"
	       PRIu64 " newer (unflushed writes that survived), %" PRIu64 " bad\n",
	       a->checked, a->exact, a->newer, a->bad);
	(void)o;
	return a->bad ? EXIT_MISMATCH : EXIT_PASS;
}

/* ---- main ------------------------------------------------------------------------- */

static int run_async(const struct opts *o, struct lun *l)
{
	struct aio a = { .o = o, .l = l };
	int rc;

	if (o->mode == MODE_CHECK_LOG) {
		uint64_t seed;
		uint32_t bs, block_size;
		if (load_log(&a, &seed, &bs, &block_size) < 0)
			return EXIT_USAGE;
		if (block_size != l->block_size) {
			fprintf(stderr, "tnd-iotest: log was written with block size %u, LUN has %u\n",
				block_size, l->block_size);
			rc = EXIT_USAGE;
			goto out_free;
		}
		/* The check uses the seed and block size the log was written with. */
		a.seed = seed;
		a.bs = bs;
		if (bs == 0 || bs % block_size) {
			fprintf(stderr, "tnd-iotest: %s: bad bs %u\n", o->log, bs);
			rc = EXIT_USAGE;
			goto out_free;
		}
	} else {
		a.seed = o->seed;
		a.bs = (uint32_t)(o->bs ? o->bs : (l->block_size > 4096 ? l->block_size : 4096));
		if (a.bs % l->block_size) {
			fprintf(stderr, "tnd-iotest: --bs %u is not a multiple of the block size %u\n",
				a.bs, l->block_size);
			return EXIT_USAGE;
		}
		uint64_t bytes = l->nblocks * l->block_size;
		if (o->size && o->size < bytes)
			bytes = o->size;
		a.units = bytes / a.bs;
		if (a.units == 0) {
			fprintf(stderr, "tnd-iotest: working set smaller than one block\n");
			return EXIT_USAGE;
		}
	}
	if (slots_alloc(&a) < 0) {
		rc = EXIT_USAGE;
		goto out_free;
	}
	rc = o->mode == MODE_CHECK_LOG ? run_check_log(o, l, &a) : run_write_log(o, l, &a);
	if (rc == EXIT_IO) {
		/* Commands still queued in libiscsi point into our slots: drop
		 * the context before the buffers. */
		a.closing = true;
		iscsi_destroy_context(l->iscsi);
		l->iscsi = NULL;
	}
out_free:
	slots_free(&a);
	free(a.acked_since_flush.v);
	free(a.covered.v);
	free(a.todo);
	return rc;
}

static const struct mode_desc {
	const char *name;
	int (*run)(const struct opts *o, struct lun *l);
} modes[] = {
	[MODE_WRITE_READ] = { .name = "write-read", .run = run_write_read },
	[MODE_WRITE_LOG] = { .name = "write-log", .run = run_async },
	[MODE_CHECK_LOG] = { .name = "check-log", .run = run_async },
};

static void usage(FILE *f)
{
	fprintf(f,
"usage: tnd-iotest --url iscsi://HOST:PORT/IQN/LUN [--header-digest] [--data-digest]\n"
"                  [--initiator-name IQN] MODE\n"
"modes:\n"
"  --write-read BYTES --seed S [--chunk SIZE]\n"
"        write BYTES of seeded data from LBA 0 (WRITE(16), --chunk bytes per\n"
"        command, default 1048576), read it back and compare\n"
"  --write-log FILE [--count N] [--seed S] [--qd N] [--bs B] [--size BYTES]\n"
"                   [--flush-every N] [--log-acked]\n"
"        write tagged blocks at random LBAs (--qd 16, --bs 4096, the whole LUN,\n"
"        SYNCHRONIZE CACHE every 32 acknowledged writes); after each completed\n"
"        flush append the writes it covers to FILE as \"LBA TAG\" lines\n"
"  --check-log FILE [--allow-torn]\n"
"        read back every block FILE lists and check its tag (last line per LBA\n"
"        wins; a newer tag of ours is accepted)\n"
"exit: 0 pass, 1 data check failed, 2 usage/setup error, 3 I/O error or\n"
"      connection lost, 77 unsupported by this libiscsi\n");
}

static int parse_num(const char *s, uint64_t *out)
{
	char *end;
	if (s == NULL || s[0] < '0' || s[0] > '9')
		return -EINVAL;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 0);
	if (errno || *end)
		return -EINVAL;
	*out = v;
	return 0;
}

int main(int argc, char **argv)
{
	enum {
		O_URL = 256, O_HDR, O_DATA, O_INIT, O_WR, O_WL, O_CL, O_COUNT, O_SEED,
		O_CHUNK, O_BS, O_SIZE, O_QD, O_FLUSH, O_TORN, O_ACKED, O_HELP,
	};
	static const struct option lo[] = {
		{ "url", required_argument, NULL, O_URL },
		{ "header-digest", no_argument, NULL, O_HDR },
		{ "data-digest", no_argument, NULL, O_DATA },
		{ "initiator-name", required_argument, NULL, O_INIT },
		{ "write-read", required_argument, NULL, O_WR },
		{ "write-log", required_argument, NULL, O_WL },
		{ "check-log", required_argument, NULL, O_CL },
		{ "count", required_argument, NULL, O_COUNT },
		{ "seed", required_argument, NULL, O_SEED },
		{ "chunk", required_argument, NULL, O_CHUNK },
		{ "bs", required_argument, NULL, O_BS },
		{ "size", required_argument, NULL, O_SIZE },
		{ "qd", required_argument, NULL, O_QD },
		{ "flush-every", required_argument, NULL, O_FLUSH },
		{ "allow-torn", no_argument, NULL, O_TORN },
		{ "log-acked", no_argument, NULL, O_ACKED },
		{ "help", no_argument, NULL, O_HELP },
		{ NULL, 0, NULL, 0 },
	};
	struct opts o = {
		.initiator = "iqn.2026-11.io.tandem:iotest", .seed = 1, .chunk = 1u << 20,
		.qd = 16, .flush_every = 32,
	};
	struct lun l = { 0 };
	uint64_t v;
	int c, bad = 0, nmodes = 0;

	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case O_URL: o.url = optarg; break;
		case O_HDR: o.header_digest = true; break;
		case O_DATA: o.data_digest = true; break;
		case O_INIT: o.initiator = optarg; break;
		case O_WR: o.mode = MODE_WRITE_READ; nmodes++; bad |= parse_num(optarg, &o.bytes); break;
		case O_WL: o.mode = MODE_WRITE_LOG; nmodes++; o.log = optarg; break;
		case O_CL: o.mode = MODE_CHECK_LOG; nmodes++; o.log = optarg; break;
		case O_COUNT: bad |= parse_num(optarg, &o.count); break;
		case O_SEED: bad |= parse_num(optarg, &o.seed); break;
		case O_CHUNK: bad |= parse_num(optarg, &o.chunk); break;
		case O_BS: bad |= parse_num(optarg, &o.bs); break;
		case O_SIZE: bad |= parse_num(optarg, &o.size); break;
		case O_QD:
			bad |= parse_num(optarg, &v);
			bad |= (v < 1 || v > 1024) ? -EINVAL : 0;
			o.qd = (int)v;
			break;
		case O_FLUSH:
			bad |= parse_num(optarg, &v);
			bad |= (v < 1 || v > 1000000) ? -EINVAL : 0;
			o.flush_every = (int)v;
			break;
		case O_TORN: o.allow_torn = true; break;
		case O_ACKED: o.log_acked = true; break;
		case O_HELP: usage(stdout); return EXIT_PASS;
		default: usage(stderr); return EXIT_USAGE;
		}
	}
	if (bad || optind < argc || o.url == NULL || nmodes != 1 ||
	    (o.bs && (o.bs % SECTOR || o.bs > (16u << 20))) || o.chunk == 0 ||
	    o.chunk > (64u << 20)) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (o.data_digest && !tnd_client_data_digest()) {
		fprintf(stderr, "tnd-iotest: this libiscsi cannot negotiate data digests\n");
		return EXIT_UNSUPPORTED;
	}
	if (lun_connect(&o, &l) < 0)
		return EXIT_USAGE;
	int rc = modes[o.mode].run(&o, &l);
	lun_close(&l);
	return rc;
}
