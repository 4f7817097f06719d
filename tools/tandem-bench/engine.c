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
 *
 * Threads: every worker runs these phases on its own clock against the
 * shared deadlines in struct bench; after the drain each reports in and
 * waits, so that the main thread can read the target's CPU time between
 * the last measured completion and the verify pass.
 */
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <linux/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "bench.h"
#include "tnd_client.h"
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
	struct bench_worker *w = s->w;
	uint32_t bs = b->o->bs;

	if (b->o->verify) {
		/* Per worker: all sessions of a LUN share one worker under
		 * --verify, so a generation is still unique per unit. */
		if (++w->next_gen == 0)
			w->next_gen = 1;   /* 0 means "unknown" in lun->gen */
		sl->gen = w->next_gen;
		bench_pattern_fill(sl->buf, bs, slot_sector(sl), b->o->seed, sl->gen);
	} else if (b->o->data != BENCH_DATA_DUP) {
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
	struct bench_worker *w = s->w;
	struct bench_lun *l = s->lun;

	if (l->gen == NULL || l->gen[sl->unit] == 0)
		return;   /* not written by this run: nothing to expect */
	w->st.verified_units++;
	char why[160];
	long bad = bench_pattern_check(sl->buf, b->o->bs, slot_sector(sl), b->o->seed,
				       l->gen[sl->unit], why, sizeof(why));
	if (bad < 0)
		return;
	w->st.mismatches++;
	if (w->reported_mismatches++ < MAX_REPORTED) {
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

static void report_error(struct bench_slot *sl, int status, struct scsi_task *task)
{
	struct bench_session *s = sl->sess;
	struct bench_worker *w = s->w;

	if (w->reported_errors++ >= MAX_REPORTED)
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
			tnd_client_status_name(status), (unsigned)status);
}

/* Count a failed command; the first to reach --max-errors says so. */
static void count_error(struct bench_worker *w)
{
	struct bench *b = w->b;

	w->st.errors++;
	if (atomic_fetch_add(&b->errors_total, 1) + 1 == (uint64_t)b->o->max_errors)
		fprintf(stderr, "tandem-bench: %d errors, stopping\n", b->o->max_errors);
}

static void on_complete(struct iscsi_context *iscsi, int status, void *command_data,
			void *private_data)
{
	struct bench_slot *sl = private_data;
	struct bench_session *s = sl->sess;
	struct bench_worker *w = s->w;
	struct bench_lun *l = s->lun;
	uint64_t t1 = bench_now_ns();
	bool measured = false;
	(void)iscsi;
	(void)command_data;   /* the same task as sl->task */

	if (w == NULL || w->phase == BENCH_PHASE_DONE)
		goto release;   /* cancelled by teardown: nothing to count */
	measured = sl->counted && (w->phase == BENCH_PHASE_RUN || w->phase == BENCH_PHASE_DRAIN);
	/* GOOD with a residual means the target moved less (or more) data
	 * than asked: a wrong answer, not a success to count. */
	if (status == SCSI_STATUS_GOOD && op_table[sl->op].has_data &&
	    sl->task->residual_status != SCSI_RESIDUAL_NO_RESIDUAL && sl->task->residual > 0) {
		if (w->reported_errors++ < MAX_REPORTED)
			fprintf(stderr, "tandem-bench: session %d: %s LBA %" PRIu64
				": GOOD status with a residual %s of %zu bytes\n", s->idx,
				op_table[sl->op].name, slot_lba(sl),
				sl->task->residual_status == SCSI_RESIDUAL_UNDERFLOW ? "underflow"
										     : "overflow",
				sl->task->residual);
		count_error(w);
		if (sl->op == BENCH_OP_WRITE && l->gen)
			l->gen[sl->unit] = 0;
	} else if (status == SCSI_STATUS_GOOD) {
		op_table[sl->op].done(sl);
	} else {
		report_error(sl, status, sl->task);
		count_error(w);
		/* A failed write leaves the unit's content unknown. */
		if (sl->op == BENCH_OP_WRITE && l->gen)
			l->gen[sl->unit] = 0;
	}

	if (measured) {
		uint64_t ns = t1 - sl->t0;
		w->st.ops[sl->op]++;
		if (op_table[sl->op].has_data) {
			w->st.bytes[sl->op] += w->o->bs;
			bench_hist_add(&w->st.lat_io, ns);
		}
		bench_hist_add(&w->st.lat[sl->op], ns);
		if (t1 > w->t_end)
			w->t_end = t1;
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
		} else if (o->hot) {
			/* Skewed: "80/20" is --hot 80. */
			uint64_t hot = l->units * (uint64_t)(100 - o->hot) / 100;
			if (hot == 0)
				hot = 1;
			if (hot >= l->units || bench_rng_below(&s->rng, 100) < (uint64_t)o->hot)
				u = bench_rng_below(&s->rng, hot < l->units ? hot : l->units);
			else
				u = hot + bench_rng_below(&s->rng, l->units - hot);
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

static bool may_issue(const struct bench_worker *w)
{
	switch (w->phase) {
	case BENCH_PHASE_RAMP:
		return true;
	case BENCH_PHASE_RUN:
		return w->o->count == 0 || w->submitted < w->count_limit;
	case BENCH_PHASE_VERIFY:
		return true;
	case BENCH_PHASE_DRAIN:
	case BENCH_PHASE_DRAINED:
	case BENCH_PHASE_DONE:
		break;
	}
	return false;
}

/* Issue commands until @s has --qd in flight or nothing more may be issued. */
static void session_fill(struct bench_session *s)
{
	struct bench_worker *w = s->w;
	struct bench_lun *l = s->lun;

	while (!s->dead && s->nfree > 0 && may_issue(w)) {
		struct bench_slot *sl = &s->slots[s->free_slots[s->nfree - 1]];
		enum bench_op op;
		uint64_t unit = 0;
		if (w->phase == BENCH_PHASE_VERIFY) {
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
		sl->counted = w->phase == BENCH_PHASE_RUN;
		sl->t0 = bench_now_ns();
		if (op_table[op].submit(sl) < 0) {
			fprintf(stderr, "tandem-bench: session %d: cannot queue %s: %s\n",
				s->idx, op_table[op].name, iscsi_get_error(s->iscsi));
			s->dead = true;
			return;
		}
		s->nfree--;
		s->inflight++;
		s->queued++;
		s->queued_data |= op == BENCH_OP_WRITE;
		if (op == BENCH_OP_FLUSH) {
			s->flush_inflight = true;
			s->writes_since_flush = 0;
		} else if (l->busy) {
			l->busy[unit] = 1;
			sl->locked = true;
		}
		if (sl->counted)
			w->submitted++;
	}
}

/* ---- setup and teardown ------------------------------------------------------- */

static int session_connect(struct bench *b, struct bench_session *s, const char *url)
{
	const struct bench_opts *o = b->o;
	const struct tnd_client_opts co = { .prog = "tandem-bench", .initiator = o->initiator,
					    .header_digest = o->header_digest,
					    .data_digest = o->data_digest };
	return tnd_client_connect(&co, url, &s->iscsi, &s->lun_no);
}

static int lun_probe(struct bench *b, struct bench_lun *l, struct bench_session *s)
{
	const struct bench_opts *o = b->o;
	const struct tnd_client_opts co = { .prog = "tandem-bench" };
	int ret = tnd_client_capacity(&co, s->iscsi, s->lun_no, &l->block_size, &l->nblocks);
	if (ret < 0)
		return ret;
	if (o->bs % l->block_size != 0) {
		fprintf(stderr, "tandem-bench: --bs %u is not a multiple of the block size %u of %s\n",
			o->bs, l->block_size, l->url);
		return -EINVAL;
	}
	uint64_t bytes = l->nblocks * l->block_size;
	if (o->size > bytes) {
		fprintf(stderr, "tandem-bench: --size %" PRIu64 " exceeds the %" PRIu64
			" bytes of %s\n", o->size, bytes, l->url);
		return -EINVAL;
	}
	l->units = (o->size ? o->size : bytes) / o->bs;
	if (l->units == 0) {
		fprintf(stderr, "tandem-bench: working set of %s is smaller than --bs\n", l->url);
		return -EINVAL;
	}
	if (o->verify) {
		/* 5 bytes of state per unit: fine for GiBs, not for a whole
		 * multi-TiB LUN in 4 KiB units. Ask for a working set instead. */
		if (l->units > (1ull << 28)) {
			fprintf(stderr, "tandem-bench: --verify on %" PRIu64 " units of %s would need "
				"%" PRIu64 " MiB of state; limit the working set with --size\n",
				l->units, l->url, l->units * 5 >> 20);
			return -EINVAL;
		}
		l->gen = calloc(l->units, sizeof(*l->gen));
		l->busy = calloc(l->units, sizeof(*l->busy));
		if (l->gen == NULL || l->busy == NULL)
			return -ENOMEM;
	}
	return 0;
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
		/* Random by default, hence incompressible: a compressing
		 * target gets no free ride from the benchmark's data unless
		 * --data asks for one. */
		static const char words[] = "the quick brown fox jumps over the lazy dog; "
					    "tandem stores blocks in a log. ";
		uint64_t dup = 0x9e3779b97f4a7c15ull;
		for (uint32_t off = 0; off + 8 <= o->bs; off += 8) {
			uint64_t v = bench_rng_next(&s->rng);
			if (o->data == BENCH_DATA_DUP) {
				/* the same 4 KiB everywhere */
				v = off % 4096 * 0x100000001b3ull ^ dup;
				v ^= v >> 29;
				v *= 0xbf58476d1ce4e5b9ull;
			}
			memcpy(sl->buf + off, &v, sizeof(v));
			if (o->data == BENCH_DATA_TEXT)
				for (int k = 0; k < 8; k++)
					sl->buf[off + k] = (uint8_t)words[(off + k + (v & 7)) %
									  (sizeof(words) - 1)];
		}
		s->free_slots[s->nfree++] = o->qd - 1 - i;
	}
	return 0;
}

static void stats_reset(struct bench_stats *st)
{
	memset(st, 0, sizeof(*st));
	bench_hist_reset(&st->lat_io);
	for (int i = 0; i < BENCH_OP_COUNT; i++)
		bench_hist_reset(&st->lat[i]);
}

/*
 * Share the sessions out to --threads workers. With --verify a LUN's
 * sessions all go to one worker (LUN i to worker i mod N), because the
 * verify state of a LUN is written without locks; otherwise sessions are
 * dealt round-robin. A worker may end up with none: it simply idles.
 */
static int workers_init(struct bench *b)
{
	const struct bench_opts *o = b->o;
	int n = o->threads;

	b->workers = calloc((size_t)n, sizeof(*b->workers));
	if (b->workers == NULL)
		return -ENOMEM;
	if (pthread_mutex_init(&b->lock, NULL) != 0) {
		free(b->workers);
		b->workers = NULL;
		return -ENOMEM;
	}
	pthread_cond_init(&b->cond, NULL);
	b->nworkers = n;
	for (int i = 0; i < n; i++) {
		struct bench_worker *w = &b->workers[i];
		w->b = b;
		w->o = o;
		stats_reset(&w->st);
		w->sess = calloc((size_t)b->nsess, sizeof(*w->sess));
		if (w->sess == NULL)
			return -ENOMEM;
	}
	for (int i = 0; i < b->nsess; i++) {
		struct bench_session *s = &b->sess[i];
		int k = o->verify ? (int)(s->lun - b->luns) % n : i % n;
		struct bench_worker *w = &b->workers[k];
		s->w = w;
		w->sess[w->nsess++] = s;
	}
	/* --count shared out by sessions, so idle workers take no share; the
	 * rounding remainder goes to the first busy worker. */
	uint64_t given = 0;
	struct bench_worker *first = NULL;
	for (int i = 0; i < n; i++) {
		struct bench_worker *w = &b->workers[i];
		w->count_limit = (uint64_t)((unsigned __int128)o->count * (uint64_t)w->nsess /
						(uint64_t)b->nsess);
		given += w->count_limit;
		if (first == NULL && w->nsess > 0)
			first = w;
	}
	if (first)
		first->count_limit += o->count - given;
	stats_reset(&b->st);
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
	return workers_init(b);
}

void bench_teardown(struct bench *b)
{
	/* Phase DONE first: callbacks fired while contexts are destroyed must
	 * not count anything. */
	for (int i = 0; i < b->nworkers; i++)
		b->workers[i].phase = BENCH_PHASE_DONE;
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
	for (int i = 0; i < b->nworkers; i++)
		free(b->workers[i].sess);
	if (b->workers) {
		pthread_cond_destroy(&b->cond);
		pthread_mutex_destroy(&b->lock);
	}
	free(b->workers);
	free(b->sess);
	free(b->luns);
}

/* ---- the loop ------------------------------------------------------------------ */

/* Data-carrying TCP segments sent so far on @s's connection; 0 when the
 * kernel's tcp_info is too old to count them (before Linux 4.6). */
static uint64_t session_data_segs(struct bench_session *s)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);
	memset(&ti, 0, sizeof(ti));
	if (s->dead || getsockopt(iscsi_get_fd(s->iscsi), IPPROTO_TCP, TCP_INFO, &ti, &len) < 0 ||
	    len < offsetof(struct tcp_info, tcpi_data_segs_out) + sizeof(ti.tcpi_data_segs_out))
		return 0;
	return ti.tcpi_data_segs_out;
}

static void start_measuring(struct bench_worker *w)
{
	/* Throughput and latency start afresh; errors and mismatches seen in
	 * the ramp still count against the run. */
	memset(w->st.ops, 0, sizeof(w->st.ops));
	memset(w->st.bytes, 0, sizeof(w->st.bytes));
	bench_hist_reset(&w->st.lat_io);
	for (int i = 0; i < BENCH_OP_COUNT; i++)
		bench_hist_reset(&w->st.lat[i]);
	w->submitted = 0;
	w->t_end = w->b->t_start;
	for (int i = 0; i < w->nsess; i++)
		w->sess[i]->segs_start = session_data_segs(w->sess[i]);
	w->phase = BENCH_PHASE_RUN;
}

static int live_inflight(const struct bench_worker *w, int *alive)
{
	int n = 0;
	*alive = 0;
	for (int i = 0; i < w->nsess; i++) {
		if (w->sess[i]->dead)
			continue;
		(*alive)++;
		n += w->sess[i]->inflight;
	}
	return n;
}

/* Move between phases; returns the ns until the next deadline (or 100 ms). */
static uint64_t advance(struct bench_worker *w, uint64_t now)
{
	const struct bench_opts *o = w->o;
	struct bench *b = w->b;
	uint64_t wait = 100 * 1000000ull;
	int alive;
	int inflight = live_inflight(w, &alive);

	if (alive == 0) {
		/* Nothing left to drive (or never was): skip to the end of the
		 * phase we are in. */
		w->phase = w->phase < BENCH_PHASE_DRAINED ? BENCH_PHASE_DRAINED : BENCH_PHASE_DONE;
		return 0;
	}
	if (w->phase <= BENCH_PHASE_RUN &&
	    (atomic_load(&b->errors_total) >= (uint64_t)o->max_errors || atomic_load(&b->abort)))
		w->phase = BENCH_PHASE_DRAIN;
	switch (w->phase) {
	case BENCH_PHASE_RAMP:
		if (now >= b->ramp_end)
			start_measuring(w);
		else
			wait = TND_MIN(wait, b->ramp_end - now);
		break;
	case BENCH_PHASE_RUN:
		if (o->count) {
			if (w->submitted >= w->count_limit)
				w->phase = BENCH_PHASE_DRAIN;
		} else if (now >= b->run_end) {
			w->phase = BENCH_PHASE_DRAIN;
		} else {
			wait = TND_MIN(wait, b->run_end - now);
		}
		break;
	case BENCH_PHASE_DRAIN:
		if (inflight == 0)
			w->phase = BENCH_PHASE_DRAINED;
		break;
	case BENCH_PHASE_VERIFY: {
		bool more = false;
		for (int i = 0; i < w->nsess; i++)
			more |= w->sess[i]->lun->verify_cursor < w->sess[i]->lun->units;
		if (!more && inflight == 0)
			w->phase = BENCH_PHASE_DONE;
		break;
	}
	case BENCH_PHASE_DRAINED:
	case BENCH_PHASE_DONE:
		break;
	}
	return wait;
}

static void session_lost(struct bench_session *s)
{
	fprintf(stderr, "tandem-bench: session %d: %s\n", s->idx, iscsi_get_error(s->iscsi));
	s->dead = true;
}

/*
 * Send what session_fill() queued. libiscsi sends every PDU header with a
 * send() of its own and the data with a writev() after it, on a TCP_NODELAY
 * socket: left alone, a 4 KiB write is two TCP segments and a round of 32
 * reads 32 segments. Kernel initiators send header and data as one
 * (MSG_MORE), and a real NIC's GRO merges back-to-back segments before the
 * target's stack sees them; loopback does neither, so without the cork the
 * bench would charge both the target and itself a segment's cost per PDU
 * header. Corked for the push, the round leaves in as few segments as it
 * fills; uncorking sends them at once, so no command waits for a timer.
 * One command without data is one segment anyway: no cork, no extra
 * system calls on the QD1 path. --no-cork keeps libiscsi's own pattern.
 */
static int session_push(struct bench_session *s)
{
	if (!(iscsi_which_events(s->iscsi) & POLLOUT))
		return 0;
	bool cork = s->b->o->cork && (s->queued > 1 || s->queued_data);
	int fd = iscsi_get_fd(s->iscsi), on = 1, off = 0;
	s->queued = 0;
	s->queued_data = false;
	/* A failed setsockopt only costs the batching, never data: ignored. */
	if (cork)
		(void)setsockopt(fd, IPPROTO_TCP, TCP_CORK, &on, sizeof(on));
	int ret = iscsi_service(s->iscsi, POLLOUT);
	if (cork)
		(void)setsockopt(fd, IPPROTO_TCP, TCP_CORK, &off, sizeof(off));
	return ret;
}

/* Drive @w's sessions until its phase reaches @until (DRAINED or DONE). */
static int worker_loop(struct bench_worker *w, enum bench_phase until)
{
	struct pollfd *pfd = calloc((size_t)w->nsess + 1, sizeof(*pfd));
	if (pfd == NULL)
		return -ENOMEM;

	uint64_t now = bench_now_ns();
	for (;;) {
		/* Phase changes happen on the way in, so a completion that ends
		 * the drain is noticed before we wait again. */
		uint64_t wait = advance(w, now);
		if (w->phase >= until)
			break;
		bool changed = false;
		for (int i = 0; i < w->nsess; i++)
			session_fill(w->sess[i]);
		/* Push queued PDUs out now rather than after a poll round trip;
		 * at QD1 that round trip would be part of every latency. */
		for (int i = 0; i < w->nsess; i++) {
			struct bench_session *s = w->sess[i];
			if (!s->dead && session_push(s) < 0) {
				session_lost(s);
				changed = true;
			}
		}
		if (changed)
			continue;

		int n = 0;
		for (int i = 0; i < w->nsess; i++) {
			struct bench_session *s = w->sess[i];
			pfd[i].fd = -1;   /* poll() ignores negative fds */
			pfd[i].events = 0;
			pfd[i].revents = 0;
			if (s->dead)
				continue;
			int ev = iscsi_which_events(s->iscsi);
			if (ev == 0)
				continue;   /* libiscsi asks for a pause */
			pfd[i].fd = iscsi_get_fd(s->iscsi);
			pfd[i].events = (short)ev;
			n++;
		}
		int ms = (int)((wait + 999999) / 1000000);
		if (poll(pfd, (nfds_t)w->nsess, n ? ms : TND_MIN(ms, 100)) < 0 && errno != EINTR) {
			int ret = -errno;
			free(pfd);
			return ret;
		}
		now = bench_now_ns();
		bool tick = now - w->last_service >= NS_PER_S;
		if (tick)
			w->last_service = now;
		for (int i = 0; i < w->nsess; i++) {
			struct bench_session *s = w->sess[i];
			if (s->dead || (pfd[i].revents == 0 && !tick))
				continue;
			/* revents 0 once a second: libiscsi checks its timeouts. */
			if (iscsi_service(s->iscsi, pfd[i].revents) < 0)
				session_lost(s);
		}
	}
	free(pfd);
	return 0;
}

static void *worker_main(void *arg)
{
	struct bench_worker *w = arg;
	struct bench *b = w->b;

	w->last_service = bench_now_ns();
	if (b->o->ramp_s > 0)
		w->phase = BENCH_PHASE_RAMP;
	else
		start_measuring(w);
	w->ret = worker_loop(w, BENCH_PHASE_DRAINED);
	/* The counter is 32 bits in the kernel: modular difference. */
	for (int i = 0; i < w->nsess; i++) {
		uint64_t now_segs = session_data_segs(w->sess[i]);
		if (now_segs && w->sess[i]->segs_start)
			w->st.data_segs += (uint32_t)(now_segs - w->sess[i]->segs_start);
	}

	pthread_mutex_lock(&b->lock);
	b->drained++;
	pthread_cond_broadcast(&b->cond);
	while (!b->resume)
		pthread_cond_wait(&b->cond, &b->lock);
	pthread_mutex_unlock(&b->lock);

	if (w->ret == 0 && w->phase == BENCH_PHASE_DRAINED && b->o->verify) {
		w->phase = BENCH_PHASE_VERIFY;
		w->ret = worker_loop(w, BENCH_PHASE_DONE);
	}
	w->phase = BENCH_PHASE_DONE;
	for (int i = 0; i < w->nsess; i++) {
		if (w->sess[i]->dead) {
			/* Commands lost with the connection never completed: errors;
			 * and a lost session is an error even with none in flight. */
			w->st.errors += (uint64_t)w->sess[i]->inflight;
			if (w->st.errors == 0)
				w->st.errors = 1;
		}
	}
	return NULL;
}

static void sleep_until(uint64_t t)
{
	struct timespec ts = { .tv_sec = (time_t)(t / NS_PER_S), .tv_nsec = (long)(t % NS_PER_S) };
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

static void stats_merge(struct bench_stats *dst, const struct bench_stats *src)
{
	for (int i = 0; i < BENCH_OP_COUNT; i++) {
		dst->ops[i] += src->ops[i];
		dst->bytes[i] += src->bytes[i];
		bench_hist_merge(&dst->lat[i], &src->lat[i]);
	}
	bench_hist_merge(&dst->lat_io, &src->lat_io);
	dst->errors += src->errors;
	dst->mismatches += src->mismatches;
	dst->verified_units += src->verified_units;
	dst->data_segs += src->data_segs;
}

int bench_run(struct bench *b)
{
	const struct bench_opts *o = b->o;
	int started = 0, ret = 0;

	uint64_t now = bench_now_ns();
	b->ramp_end = now + (uint64_t)(o->ramp_s * 1e9);
	b->run_end = b->ramp_end + (uint64_t)(o->time_s * 1e9);
	b->t_start = b->ramp_end;
	for (; started < b->nworkers; started++) {
		int err = pthread_create(&b->workers[started].thread, NULL, worker_main,
					 &b->workers[started]);
		if (err != 0) {
			fprintf(stderr, "tandem-bench: cannot start thread: %s\n", strerror(err));
			atomic_store(&b->abort, true);
			ret = -err;
			break;
		}
	}

	/* The window's edges, as seen from outside the event loops. */
	sleep_until(b->ramp_end);
	if (o->target_pid)
		b->cpu_before = bench_proc_cpu_ticks(o->target_pid);
	b->self_cpu_before = bench_self_cpu_ns();

	pthread_mutex_lock(&b->lock);
	while (b->drained < started)
		pthread_cond_wait(&b->cond, &b->lock);
	b->self_cpu_after = bench_self_cpu_ns();
	if (o->target_pid)
		b->cpu_after = bench_proc_cpu_ticks(o->target_pid);
	b->resume = true;
	pthread_cond_broadcast(&b->cond);
	pthread_mutex_unlock(&b->lock);

	b->t_end = b->t_start;
	for (int i = 0; i < started; i++) {
		struct bench_worker *w = &b->workers[i];
		pthread_join(w->thread, NULL);
		if (w->ret < 0 && ret == 0)
			ret = w->ret;
		stats_merge(&b->st, &w->st);
		if (w->t_end > b->t_end)
			b->t_end = w->t_end;
	}
	return ret;
}
