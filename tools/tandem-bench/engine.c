/*
 * engine.c — sessions, the submit/complete cycle and the poll loop of
 * tandem-bench.
 *
 * Life of a command: session_fill() takes a free slot, decides what it does
 * (a SYNCHRONIZE CACHE when --flush-every writes have completed since the
 * last one, else a read or a write by --rw/--mix) and on which unit (random
 * or sequential), then hands it to the op table below, which queues it in
 * libiscsi with the slot's own buffer (no copy on our side). libiscsi calls
 * on_complete() from inside iscsi_service(); the slot is checked, counted
 * and freed there, and the loop refills the session after servicing it.
 *
 * Phases: an optional ramp (commands run but are not counted), the measured
 * window (ends at --time or after --count commands), a drain (nothing new is
 * issued; completions of commands issued in the window still count, and the
 * window ends at the last of them), and with --verify a read-back pass over
 * every unit written, so that write-only runs are checked too.
 *
 * Only commands *issued* in the measured window are counted, so the ramp's
 * stragglers do not inflate the numbers and the window's stragglers are not
 * lost.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"
#include "tnd_common.h"

#define MAX_REPORTED 10
#define NS_PER_S 1000000000ull

uint64_t bench_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

uint64_t bench_self_cpu_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

int64_t bench_proc_cpu_ticks(pid_t pid)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return -errno;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* comm (field 2) may hold spaces and parentheses: start after the last ')'.
	 * Then field 3 is the state; utime and stime are fields 14 and 15. */
	char *p = strrchr(buf, ')');
	if (p == NULL)
		return -EINVAL;
	unsigned long long utime, stime;
	if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
		   &utime, &stime) != 2)
		return -EINVAL;
	return (int64_t)(utime + stime);
}

/* ---- the op table ---------------------------------------------------------- */

static void on_complete(struct iscsi_context *iscsi, int status, void *command_data,
			void *private_data);

static uint64_t slot_lba(const struct bench_slot *sl)
{
	const struct bench_session *s = sl->sess;
	return sl->unit * (s->b->o->bs / s->lun->block_size);
}

static uint64_t slot_sector(const struct bench_slot *sl)
{
	return sl->unit * (sl->sess->b->o->bs / BENCH_SECTOR);
}

static int submit_read(struct bench_slot *sl)
{
	struct bench_session *s = sl->sess;
	uint32_t bs = s->b->o->bs;

	sl->iov.iov_base = sl->buf;
	sl->iov.iov_len = bs;
	sl->task = iscsi_read16_iov_task(s->iscsi, s->lun_no, slot_lba(sl), bs,
					 (int)s->lun->block_size, 0, 0, 0, 0, 0,
					 on_complete, sl, &sl->iov, 1);
	return sl->task ? 0 : -ENOMEM;
}

static int submit_write(struct bench_slot *sl)
{
	struct bench_session *s = sl->sess;
	struct bench *b = s->b;
	uint32_t bs = b->o->bs;

	if (b->o->verify) {
		if (++b->next_gen == 0)
			b->next_gen = 1;   /* 0 means "unknown" in lun->gen */
		sl->gen = b->next_gen;
		bench_pattern_fill(sl->buf, bs, slot_sector(sl), b->o->seed, sl->gen);
	} else {
		/* Unverified data is random from setup; stamping a counter into
		 * every 4 KiB keeps each written block unique, so a deduplicating
		 * target cannot turn the benchmark into a no-op. */
		for (uint32_t off = 0; off + 8 <= bs; off += 4096) {
			uint64_t v = s->stamp++ ^ ((uint64_t)s->idx << 48);
			memcpy(sl->buf + off, &v, sizeof(v));
		}
	}
	sl->iov.iov_base = sl->buf;
	sl->iov.iov_len = bs;
	sl->task = iscsi_write16_iov_task(s->iscsi, s->lun_no, slot_lba(sl), NULL, bs,
					  (int)s->lun->block_size, 0, 0, 0, 0, 0,
					  on_complete, sl, &sl->iov, 1);
	return sl->task ? 0 : -ENOMEM;
}

static int submit_flush(struct bench_slot *sl)
{
	struct bench_session *s = sl->sess;

	/* LBA 0, 0 blocks: the whole medium. */
	sl->task = iscsi_synchronizecache10_task(s->iscsi, s->lun_no, 0, 0, 0, 0,
						 on_complete, sl);
	return sl->task ? 0 : -ENOMEM;
}

/* Successful completion hooks: where verify state changes. */
static void done_read(struct bench_slot *sl)
{
	struct bench_session *s = sl->sess;
	struct bench *b = s->b;
	struct bench_lun *l = s->lun;

	if (l->gen == NULL || l->gen[sl->unit] == 0)
		return;   /* not written by this run: nothing to expect */
	b->st.verified_units++;
	char why[160];
	long bad = bench_pattern_check(sl->buf, b->o->bs, slot_sector(sl), b->o->seed,
				       l->gen[sl->unit], why, sizeof(why));
	if (bad < 0)
		return;
	b->st.mismatches++;
	if (b->reported_mismatches++ < MAX_REPORTED) {
		uint64_t sector = slot_sector(sl) + (uint64_t)bad;
		fprintf(stderr, "tandem-bench: verify mismatch at LBA %" PRIu64
			" (%s, byte offset %" PRIu64 "): %s\n",
			sector * BENCH_SECTOR / l->block_size, l->url,
			sector * BENCH_SECTOR, why);
	}
}

static void done_write(struct bench_slot *sl)
{
	struct bench_session *s = sl->sess;

	if (s->lun->gen)
		s->lun->gen[sl->unit] = sl->gen;
	s->writes_since_flush++;
}

static void done_flush(struct bench_slot *sl)
{
	(void)sl;
}

static const struct bench_op_desc {
	const char *name;
	bool has_data;
	int (*submit)(struct bench_slot *sl);     /* <0: not queued, no callback */
	void (*done)(struct bench_slot *sl);      /* after a GOOD status */
} op_table[BENCH_OP_COUNT] = {
	[BENCH_OP_READ] = { .name = "read", .has_data = true,
			    .submit = submit_read, .done = done_read },
	[BENCH_OP_WRITE] = { .name = "write", .has_data = true,
			     .submit = submit_write, .done = done_write },
	[BENCH_OP_FLUSH] = { .name = "flush", .has_data = false,
			     .submit = submit_flush, .done = done_flush },
};

/* ---- completion -------------------------------------------------------------- */

static const char *status_name(int status)
{
	switch (status) {
	case SCSI_STATUS_BUSY: return "BUSY";
	case SCSI_STATUS_RESERVATION_CONFLICT: return "RESERVATION CONFLICT";
	case SCSI_STATUS_TASK_SET_FULL: return "TASK SET FULL";
	case SCSI_STATUS_TASK_ABORTED: return "TASK ABORTED";
	case SCSI_STATUS_CANCELLED: return "cancelled (connection lost)";
	case SCSI_STATUS_ERROR: return "transport error";
	case SCSI_STATUS_TIMEOUT: return "timeout";
	default: return "unexpected status";
	}
}

static void report_error(struct bench_slot *sl, int status, struct scsi_task *task)
{
	struct bench_session *s = sl->sess;
	struct bench *b = s->b;

	if (b->reported_errors++ >= MAX_REPORTED)
		return;
	const char *what = op_table[sl->op].name;
	if (status == SCSI_STATUS_CHECK_CONDITION && task != NULL)
		fprintf(stderr, "tandem-bench: session %d: %s LBA %" PRIu64
			" failed: CHECK CONDITION %s / %s\n", s->idx, what, slot_lba(sl),
			scsi_sense_key_str(task->sense.key),
			scsi_sense_ascq_str(task->sense.ascq));
	else
		fprintf(stderr, "tandem-bench: session %d: %s LBA %" PRIu64
			" failed: %s (0x%x)\n", s->idx, what, slot_lba(sl),
			status_name(status), (unsigned)status);
}

static void on_complete(struct iscsi_context *iscsi, int status, void *command_data,
			void *private_data)
{
	struct bench_slot *sl = private_data;
	struct bench_session *s = sl->sess;
	struct bench *b = s->b;
	struct bench_lun *l = s->lun;
	uint64_t t1 = bench_now_ns();
	bool measured = sl->counted && (b->phase == BENCH_PHASE_RUN ||
					 b->phase == BENCH_PHASE_DRAIN);
	(void)iscsi;
	(void)command_data;   /* the same task as sl->task */

	if (b->phase == BENCH_PHASE_DONE)
		goto release;   /* cancelled by teardown: nothing to count */
	/* GOOD with a residual means the target moved less (or more) data
	 * than asked: a wrong answer, not a success to count. */
	if (status == SCSI_STATUS_GOOD && op_table[sl->op].has_data &&
	    sl->task->residual_status != SCSI_RESIDUAL_NO_RESIDUAL && sl->task->residual > 0) {
		if (b->reported_errors++ < MAX_REPORTED)
			fprintf(stderr, "tandem-bench: session %d: %s LBA %" PRIu64
				": GOOD status with a residual %s of %zu bytes\n", s->idx,
				op_table[sl->op].name, slot_lba(sl),
				sl->task->residual_status == SCSI_RESIDUAL_UNDERFLOW ? "underflow"
										     : "overflow",
				sl->task->residual);
		status = SCSI_STATUS_ERROR;
		b->st.errors++;
		if (sl->op == BENCH_OP_WRITE && l->gen)
			l->gen[sl->unit] = 0;
	} else if (status == SCSI_STATUS_GOOD) {
		op_table[sl->op].done(sl);
	} else {
		b->st.errors++;
		report_error(sl, status, sl->task);
		/* A failed write leaves the unit's content unknown. */
		if (sl->op == BENCH_OP_WRITE && l->gen)
			l->gen[sl->unit] = 0;
		if (b->st.errors >= (uint64_t)b->o->max_errors &&
		    b->phase < BENCH_PHASE_DRAIN) {
			fprintf(stderr, "tandem-bench: %" PRIu64 " errors, stopping\n",
				b->st.errors);
			b->phase = BENCH_PHASE_DRAIN;
		}
	}

	if (measured) {
		uint64_t ns = t1 - sl->t0;
		b->st.ops[sl->op]++;
		if (op_table[sl->op].has_data) {
			b->st.bytes[sl->op] += b->o->bs;
			bench_hist_add(&b->st.lat_io, ns);
		}
		bench_hist_add(&b->st.lat[sl->op], ns);
		if (t1 > b->t_end)
			b->t_end = t1;
	}

release:
	if (sl->op == BENCH_OP_FLUSH)
		s->flush_inflight = false;
	if (sl->locked)
		l->busy[sl->unit] = 0;
	sl->locked = false;
	scsi_free_scsi_task(sl->task);
	sl->task = NULL;
	s->free_slots[s->nfree++] = (int)(sl - s->slots);
	s->inflight--;
}

/* ---- submission ---------------------------------------------------------------- */

/* Next unit for @s, or -EBUSY if every try hit a unit with a command in flight. */
static int pick_unit(struct bench_session *s, uint64_t *unit)
{
	struct bench_lun *l = s->lun;
	const struct bench_opts *o = s->b->o;

	for (int tries = 0; tries < 16; tries++) {
		uint64_t u;
		if (o->pattern == BENCH_PAT_SEQ) {
			u = s->seq_next;
			s->seq_next = (u + 1) % l->units;
		} else {
			u = bench_rng_below(&s->rng, l->units);
		}
		if (l->busy == NULL || !l->busy[u]) {
			*unit = u;
			return 0;
		}
	}
	return -EBUSY;
}

/* Next written unit for the read-back pass, or -ENOENT when done. */
static int pick_verify_unit(struct bench_session *s, uint64_t *unit)
{
	struct bench_lun *l = s->lun;

	while (l->verify_cursor < l->units) {
		uint64_t u = l->verify_cursor++;
		if (l->gen[u] != 0 && !l->busy[u]) {
			*unit = u;
			return 0;
		}
	}
	return -ENOENT;
}

static enum bench_op choose_op(struct bench_session *s)
{
	const struct bench_opts *o = s->b->o;

	if (o->flush_every && s->writes_since_flush >= o->flush_every && !s->flush_inflight)
		return BENCH_OP_FLUSH;
	switch (o->rw) {
	case BENCH_RW_READ:
		return BENCH_OP_READ;
	case BENCH_RW_WRITE:
		return BENCH_OP_WRITE;
	case BENCH_RW_MIXED:
		break;
	}
	return bench_rng_below(&s->rng, 100) < (uint64_t)o->mix ? BENCH_OP_READ : BENCH_OP_WRITE;
}

static bool may_issue(const struct bench *b)
{
	switch (b->phase) {
	case BENCH_PHASE_RAMP:
		return true;
	case BENCH_PHASE_RUN:
		return b->o->count == 0 || b->submitted < b->o->count;
	case BENCH_PHASE_VERIFY:
		return true;
	case BENCH_PHASE_DRAIN:
	case BENCH_PHASE_DONE:
		break;
	}
	return false;
}

/* Issue commands until @s has --qd in flight or nothing more may be issued. */
static void session_fill(struct bench_session *s)
{
	struct bench *b = s->b;
	struct bench_lun *l = s->lun;

	while (!s->dead && s->nfree > 0 && may_issue(b)) {
		struct bench_slot *sl = &s->slots[s->free_slots[s->nfree - 1]];
		enum bench_op op;
		uint64_t unit = 0;
		if (b->phase == BENCH_PHASE_VERIFY) {
			op = BENCH_OP_READ;
			if (pick_verify_unit(s, &unit) < 0)
				return;
		} else {
			op = choose_op(s);
			if (op != BENCH_OP_FLUSH && pick_unit(s, &unit) < 0)
				return;   /* retry after a completion frees a unit */
		}
		sl->op = op;
		sl->unit = unit;
		sl->gen = 0;
		sl->counted = b->phase == BENCH_PHASE_RUN;
		sl->t0 = bench_now_ns();
		if (op_table[op].submit(sl) < 0) {
			fprintf(stderr, "tandem-bench: session %d: cannot queue %s: %s\n",
				s->idx, op_table[op].name, iscsi_get_error(s->iscsi));
			s->dead = true;
			return;
		}
		s->nfree--;
		s->inflight++;
		if (op == BENCH_OP_FLUSH) {
			s->flush_inflight = true;
			s->writes_since_flush = 0;
		} else if (l->busy) {
			l->busy[unit] = 1;
			sl->locked = true;
		}
		if (sl->counted)
			b->submitted++;
	}
}

/* ---- setup and teardown ------------------------------------------------------- */

static int session_connect(struct bench *b, struct bench_session *s, const char *url)
{
	const struct bench_opts *o = b->o;
	int ret;

	s->iscsi = iscsi_create_context(o->initiator);
	if (s->iscsi == NULL) {
		fprintf(stderr, "tandem-bench: cannot create iSCSI context\n");
		return -ENOMEM;
	}
	struct iscsi_url *u = iscsi_parse_full_url(s->iscsi, url);
	if (u == NULL) {
		fprintf(stderr, "tandem-bench: bad URL %s: %s\n", url, iscsi_get_error(s->iscsi));
		ret = -EINVAL;
		goto err_destroy;
	}
	iscsi_set_targetname(s->iscsi, u->target);
	iscsi_set_session_type(s->iscsi, ISCSI_SESSION_NORMAL);
	if (u->user[0])
		iscsi_set_initiator_username_pwd(s->iscsi, u->user, u->passwd);
	iscsi_set_header_digest(s->iscsi, o->header_digest ? ISCSI_HEADER_DIGEST_CRC32C
							   : ISCSI_HEADER_DIGEST_NONE);
#ifdef TND_HAVE_ISCSI_DATA_DIGEST
	iscsi_set_data_digest(s->iscsi, o->data_digest ? ISCSI_DATA_DIGEST_CRC32C
						       : ISCSI_DATA_DIGEST_NONE);
#endif
	/* A dropped connection is a result to report, not something to hide
	 * behind a silent reconnect. */
	iscsi_set_noautoreconnect(s->iscsi, 1);
	/* Without a timeout a hung target would hang the benchmark. */
	iscsi_set_timeout(s->iscsi, 30);
	if (iscsi_full_connect_sync(s->iscsi, u->portal, u->lun) != 0) {
		fprintf(stderr, "tandem-bench: login to %s failed: %s\n", url,
			iscsi_get_error(s->iscsi));
		ret = -ECONNREFUSED;
		goto err_free_url;
	}
	s->lun_no = u->lun;
	iscsi_destroy_url(u);
	return 0;

err_free_url:
	iscsi_destroy_url(u);
err_destroy:
	iscsi_destroy_context(s->iscsi);
	s->iscsi = NULL;
	return ret;
}

static int lun_probe(struct bench *b, struct bench_lun *l, struct bench_session *s)
{
	const struct bench_opts *o = b->o;
	int ret = 0;

	struct scsi_task *task = iscsi_readcapacity16_sync(s->iscsi, s->lun_no);
	if (task == NULL || task->status != SCSI_STATUS_GOOD) {
		fprintf(stderr, "tandem-bench: READ CAPACITY(16) on %s failed: %s\n", l->url,
			iscsi_get_error(s->iscsi));
		ret = -EIO;
		goto out_free_task;
	}
	struct scsi_readcapacity16 *rc = scsi_datain_unmarshall(task);
	if (rc == NULL || rc->block_length == 0) {
		fprintf(stderr, "tandem-bench: cannot parse READ CAPACITY(16) of %s\n", l->url);
		ret = -EIO;
		goto out_free_task;
	}
	l->block_size = rc->block_length;
	l->nblocks = rc->returned_lba + 1;

	if (o->bs % l->block_size != 0) {
		fprintf(stderr, "tandem-bench: --bs %u is not a multiple of the block size %u of %s\n",
			o->bs, l->block_size, l->url);
		ret = -EINVAL;
		goto out_free_task;
	}
	uint64_t bytes = l->nblocks * l->block_size;
	if (o->size > bytes) {
		fprintf(stderr, "tandem-bench: --size %" PRIu64 " exceeds the %" PRIu64
			" bytes of %s\n", o->size, bytes, l->url);
		ret = -EINVAL;
		goto out_free_task;
	}
	l->units = (o->size ? o->size : bytes) / o->bs;
	if (l->units == 0) {
		fprintf(stderr, "tandem-bench: working set of %s is smaller than --bs\n", l->url);
		ret = -EINVAL;
		goto out_free_task;
	}
	if (o->verify) {
		/* 5 bytes of state per unit: fine for GiBs, not for a whole
		 * multi-TiB LUN in 4 KiB units. Ask for a working set instead. */
		if (l->units > (1ull << 28)) {
			fprintf(stderr, "tandem-bench: --verify on %" PRIu64 " units of %s would need "
				"%" PRIu64 " MiB of state; limit the working set with --size\n",
				l->units, l->url, l->units * 5 >> 20);
			ret = -EINVAL;
			goto out_free_task;
		}
		l->gen = calloc(l->units, sizeof(*l->gen));
		l->busy = calloc(l->units, sizeof(*l->busy));
		if (l->gen == NULL || l->busy == NULL) {
			ret = -ENOMEM;
			goto out_free_task;
		}
	}
out_free_task:
	if (task)
		scsi_free_scsi_task(task);
	return ret;
}

static int session_init_slots(struct bench *b, struct bench_session *s)
{
	const struct bench_opts *o = b->o;

	s->slots = calloc((size_t)o->qd, sizeof(*s->slots));
	s->free_slots = calloc((size_t)o->qd, sizeof(*s->free_slots));
	if (s->slots == NULL || s->free_slots == NULL)
		return -ENOMEM;
	for (int i = 0; i < o->qd; i++) {
		struct bench_slot *sl = &s->slots[i];
		sl->sess = s;
		if (posix_memalign((void **)&sl->buf, 4096, o->bs) != 0)
			return -ENOMEM;
		/* Random, hence incompressible: a compressing target gets no
		 * free ride from the benchmark's data. */
		for (uint32_t off = 0; off + 8 <= o->bs; off += 8) {
			uint64_t v = bench_rng_next(&s->rng);
			memcpy(sl->buf + off, &v, sizeof(v));
		}
		s->free_slots[s->nfree++] = o->qd - 1 - i;
	}
	return 0;
}

int bench_setup(struct bench *b, const struct bench_opts *o)
{
	int ret;

	memset(b, 0, sizeof(*b));
	b->o = o;
	b->cpu_before = b->cpu_after = -1;
	b->luns = calloc((size_t)o->nurls, sizeof(*b->luns));
	b->sess = calloc((size_t)(o->nurls * o->sessions), sizeof(*b->sess));
	if (b->luns == NULL || b->sess == NULL)
		return -ENOMEM;
	/* Counts set only now: teardown walks exactly what was allocated. */
	b->nluns = o->nurls;
	b->nsess = o->nurls * o->sessions;

	for (int i = 0; i < b->nsess; i++) {
		struct bench_session *s = &b->sess[i];
		struct bench_lun *l = &b->luns[i / o->sessions];
		int k = i % o->sessions;

		s->b = b;
		s->idx = i;
		s->lun = l;
		l->url = o->urls[i / o->sessions];
		bench_rng_seed(&s->rng, o->seed * 1000003u + (uint64_t)i);
		ret = session_connect(b, s, l->url);
		if (ret < 0)
			return ret;
		if (k == 0) {
			ret = lun_probe(b, l, s);
			if (ret < 0)
				return ret;
		}
		/* Sequential streams of one LUN start evenly spread over it. */
		s->seq_next = l->units * (uint64_t)k / (uint64_t)o->sessions;
		ret = session_init_slots(b, s);
		if (ret < 0)
			return ret;
	}
	bench_hist_reset(&b->st.lat_io);
	for (int i = 0; i < BENCH_OP_COUNT; i++)
		bench_hist_reset(&b->st.lat[i]);
	return 0;
}

void bench_teardown(struct bench *b)
{
	/* Phase DONE first: callbacks fired while contexts are destroyed must
	 * not count anything. */
	b->phase = BENCH_PHASE_DONE;
	for (int i = 0; i < b->nsess; i++) {
		struct bench_session *s = &b->sess[i];
		if (s->iscsi) {
			if (!s->dead && s->inflight == 0)
				iscsi_logout_sync(s->iscsi);
			iscsi_destroy_context(s->iscsi);
		}
		for (int k = 0; s->slots && k < b->o->qd; k++)
			free(s->slots[k].buf);
		free(s->slots);
		free(s->free_slots);
	}
	for (int i = 0; i < b->nluns; i++) {
		free(b->luns[i].gen);
		free(b->luns[i].busy);
	}
	free(b->sess);
	free(b->luns);
}

/* ---- the loop ------------------------------------------------------------------ */

static void start_measuring(struct bench *b, uint64_t now)
{
	memset(b->st.ops, 0, sizeof(b->st.ops));
	memset(b->st.bytes, 0, sizeof(b->st.bytes));
	bench_hist_reset(&b->st.lat_io);
	for (int i = 0; i < BENCH_OP_COUNT; i++)
		bench_hist_reset(&b->st.lat[i]);
	b->submitted = 0;
	if (b->o->target_pid)
		b->cpu_before = bench_proc_cpu_ticks(b->o->target_pid);
	b->self_cpu_before = bench_self_cpu_ns();
	b->t_start = now;
	b->t_end = now;
	b->phase = BENCH_PHASE_RUN;
}

static int live_inflight(const struct bench *b, int *alive)
{
	int n = 0;
	*alive = 0;
	for (int i = 0; i < b->nsess; i++) {
		if (b->sess[i].dead)
			continue;
		(*alive)++;
		n += b->sess[i].inflight;
	}
	return n;
}

/* Move between phases; returns the ns until the next deadline (or 100 ms). */
static uint64_t advance(struct bench *b, uint64_t now, uint64_t ramp_end)
{
	const struct bench_opts *o = b->o;
	uint64_t wait = 100 * 1000000ull;
	int alive;
	int inflight = live_inflight(b, &alive);

	if (alive == 0 && b->phase != BENCH_PHASE_DONE) {
		if (b->phase <= BENCH_PHASE_DRAIN) {
			b->self_cpu_after = bench_self_cpu_ns();
			if (o->target_pid)
				b->cpu_after = bench_proc_cpu_ticks(o->target_pid);
		}
		b->phase = BENCH_PHASE_DONE;
		return 0;
	}
	switch (b->phase) {
	case BENCH_PHASE_RAMP:
		if (now >= ramp_end)
			start_measuring(b, now);
		else
			wait = TND_MIN(wait, ramp_end - now);
		break;
	case BENCH_PHASE_RUN:
		if (o->count) {
			if (b->submitted >= o->count)
				b->phase = BENCH_PHASE_DRAIN;
		} else {
			uint64_t end = b->t_start + (uint64_t)(o->time_s * 1e9);
			if (now >= end)
				b->phase = BENCH_PHASE_DRAIN;
			else
				wait = TND_MIN(wait, end - now);
		}
		break;
	case BENCH_PHASE_DRAIN:
		if (inflight == 0) {
			b->self_cpu_after = bench_self_cpu_ns();
			if (o->target_pid)
				b->cpu_after = bench_proc_cpu_ticks(o->target_pid);
			b->phase = o->verify ? BENCH_PHASE_VERIFY : BENCH_PHASE_DONE;
		}
		break;
	case BENCH_PHASE_VERIFY: {
		bool more = false;
		for (int i = 0; i < b->nluns; i++)
			more |= b->luns[i].verify_cursor < b->luns[i].units;
		if (!more && inflight == 0)
			b->phase = BENCH_PHASE_DONE;
		break;
	}
	case BENCH_PHASE_DONE:
		break;
	}
	return wait;
}

int bench_run(struct bench *b)
{
	const struct bench_opts *o = b->o;
	struct pollfd *pfd = calloc((size_t)b->nsess, sizeof(*pfd));
	if (pfd == NULL)
		return -ENOMEM;

	uint64_t now = bench_now_ns();
	uint64_t ramp_end = now + (uint64_t)(o->ramp_s * 1e9);
	b->last_service = now;
	if (o->ramp_s > 0)
		b->phase = BENCH_PHASE_RAMP;
	else
		start_measuring(b, now);

	for (;;) {
		/* Phase changes happen on the way in, so a completion that ends
		 * the drain is noticed before we wait again. */
		uint64_t wait = advance(b, now, ramp_end);
		if (b->phase == BENCH_PHASE_DONE)
			break;
		bool changed = false;
		for (int i = 0; i < b->nsess; i++)
			session_fill(&b->sess[i]);
		/* Pass 1: push queued PDUs out now rather than after a poll round
		 * trip; at QD1 that round trip would be part of every latency. */
		for (int i = 0; i < b->nsess; i++) {
			struct bench_session *s = &b->sess[i];
			if (!s->dead && (iscsi_which_events(s->iscsi) & POLLOUT) &&
			    iscsi_service(s->iscsi, POLLOUT) < 0) {
				fprintf(stderr, "tandem-bench: session %d: %s\n", s->idx,
					iscsi_get_error(s->iscsi));
				s->dead = true;
				changed = true;
			}
		}
		if (changed)
			continue;

		int n = 0;
		for (int i = 0; i < b->nsess; i++) {
			struct bench_session *s = &b->sess[i];
			pfd[i].fd = -1;   /* poll() ignores negative fds */
			pfd[i].events = 0;
			pfd[i].revents = 0;
			if (s->dead)
				continue;
			int ev = iscsi_which_events(s->iscsi);
			if (ev == 0)
				continue;
			pfd[i].fd = iscsi_get_fd(s->iscsi);
			pfd[i].events = (short)ev;
			n++;
		}
		int ms = (int)((wait + 999999) / 1000000);
		if (poll(pfd, (nfds_t)b->nsess, n ? ms : TND_MIN(ms, 100)) < 0 &&
		    errno != EINTR) {
			free(pfd);
			return -errno;
		}
		now = bench_now_ns();
		bool tick = now - b->last_service >= NS_PER_S;
		if (tick)
			b->last_service = now;
		for (int i = 0; i < b->nsess; i++) {
			struct bench_session *s = &b->sess[i];
			if (s->dead || (pfd[i].revents == 0 && !tick))
				continue;
			/* revents 0 once a second: libiscsi checks its timeouts. */
			if (iscsi_service(s->iscsi, pfd[i].revents) < 0) {
				fprintf(stderr, "tandem-bench: session %d: %s\n", s->idx,
					iscsi_get_error(s->iscsi));
				s->dead = true;
			}
		}
	}
	free(pfd);

	for (int i = 0; i < b->nsess; i++) {
		if (b->sess[i].dead) {
			/* Commands lost with the connection never completed: errors. */
			b->st.errors += (uint64_t)b->sess[i].inflight;
			if (b->st.errors == 0)
				b->st.errors = 1;
		}
	}
	return 0;
}
