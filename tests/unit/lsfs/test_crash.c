/*
 * Model-based crash test for lsfs.
 *
 * A random workload (writes, overwrites, FUA writes, unmaps, write-zeroes,
 * flushes, GC passes, checkpoints, reads) runs against lsfs(fault(ram))
 * while an oracle tracks, per logical block, the newest version known to
 * be durable and every version written since. At injection points (every
 * backing write or flush: each one in short workloads, a random sample in
 * long ones) the test builds the images a power cut could leave (pending
 * writes all dropped, all kept, random subsets, one torn at 512 B), runs
 * the checker on each, reopens it on a second reactor and reads every
 * block: each must hold its durable version or a later one, byte for byte
 * (no torn, foreign or stale block; zeros only where allowed).
 *
 * A second campaign makes one backing write or flush fail (-EIO, -ENOSPC)
 * at every point of a short workload: the device must fail-stop (writes
 * refused) without losing anything durable.
 *
 * Every campaign runs twice: on a plain store with incompressible data,
 * and with compression on (LZ4, packed payloads), dedup on in two thirds
 * of the runs (a tiny fingerprint index, so it also evicts), over a mix
 * of random, text-like, mostly-zero, half-compressible, duplicate and
 * all-zero blocks; some stores formatted with the features and some
 * formatted plain and switched on at open (the crash points then include
 * marking the superblock), some opened plain and switched on, and in some
 * runs off again, live during the workload with writes in flight
 * (tnd_lsfs_set_features). The checker runs on every crash image, so the
 * reference counts (the map's) are checked after every recovery. Half the
 * compressed runs defer compression; their store is marked for deferred
 * records (superblock bit 2) by an update on the home reactor when the
 * first chunk is to be deferred, and the run must have crash states both
 * inside that update (the copies disagree) and after it, before any
 * deferred block (the checker fails a deferred block without the bit).
 *
 * Dead segments come back after a backing flush, without a checkpoint, so
 * replay must follow the log into segments the checkpoint lists as used;
 * each of the two runs must have crash states that do (with the features
 * on, those segments held packed and shared payloads whose referrers were
 * all superseded), or it fails: a test that never reaches the path proves
 * nothing about it. The same holds for GC-only segments (hot/cold
 * separation: GC's moves staged in RAM and written as a segment of their
 * own between two client segments): each run must have crash states whose
 * replay applies records of such segments.
 *
 * `test_crash` runs the normal campaign (>= 20,000 crash states for each
 * of the two); `test_crash soak` runs a much longer one. Exit 0 pass, 1
 * fail.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tnd_common.h"
#include "tnd_lsfs.h"
#include "tnd_reactor.h"
#include "testvol.h"

struct cand {
	uint32_t ver;              /* 0: zeros (unmap) */
	uint64_t ack;              /* ack order, 0 while in flight or failed */
};

struct uhist {
	uint32_t durable;
	struct cand *c;
	uint32_t n, cap;
};

struct cfg {
	const char *name;
	uint32_t lbs;
	bool wc;
	uint32_t nops;
	uint32_t every;            /* verify at 1 in @every injection points */
	uint64_t seed;
	int fail_err;              /* error campaign: fail this point with this */
	uint64_t fail_at;
	int compress;              /* 0 off; 1 formatted with it; 2 formatted plain, opened with it */
	int dedup;                 /* the same for dedup */
	int live;                  /* 1: formatted and opened plain, the features switched on a
				      third into the workload (tnd_lsfs_set_features); 2: and
				      off again two thirds in */
	uint32_t log_writes;       /* lsfs's log writes in flight (0: the default, 1) */
	int cmode;                 /* compress_mode (DEFERRED: raw, compressed by GC's passes) */
};

struct model {
	struct cfg cfg;
	struct tnd_reactor *r, *v;
	struct tnd_volume *vol;
	struct fault_vol *fv;
	uint64_t dev_size;
	uint8_t *img;
	uint64_t nunits;
	uint32_t lbs;
	struct uhist *h;
	bool *busy;
	uint64_t acks;
	uint32_t next_ver;
	uint64_t rng;
	int inflight;
	uint64_t states;
	uint64_t reused_states;    /* states whose replay went on in a reused segment */
	uint64_t gc_states;        /* states whose replay applied records of a GC-only segment */
	uint64_t warmups;          /* recovered dedup stores whose index warm-up ran before the reads */
	uint64_t marked_states;    /* images marked DEFERRED (bit 2) with no deferred block yet */
	uint64_t mid_mark_states;  /* images whose two superblock copies disagree on bit 2 */
	uint64_t violations;
	bool gc_busy, ckpt_busy;
	bool errors_seen;
	struct tnd_lsfs_opts opts;
};

struct op {
	struct model *m;
	enum tnd_io_type type;
	uint64_t lba;
	uint32_t n;
	unsigned flags;
	uint64_t mark;
	uint32_t *vers;
	uint8_t *buf;
	bool verify;
	struct iovec iov;
	struct tnd_io *io;
};

#define DEV_SIZE (544u << 10)
#define SEG_SIZE (32u << 10)
#define LOGICAL (192u << 10)

/*
 * Version @ver of logical block @unit: the first 8 bytes name both (so a
 * foreign or stale block is recognised), the rest is random, or with
 * @mixed one of five kinds chosen by the version: random, text-like,
 * nearly all zero, half random and half repeated, and one of three
 * duplicate blocks that are the same for every unit (dedup shares them;
 * they name only their class).
 */
static void pattern(uint64_t unit, uint32_t ver, uint32_t lbs, uint8_t *out, bool mixed)
{
	if (ver == 0) {
		memset(out, 0, lbs);
		return;
	}
	unsigned kind = mixed ? ver % 5 : 0;
	uint64_t head = kind == 4 ? 0xd0d0d0d0ull << 32 | ver % 3 : unit << 32 | ver;
	uint64_t s = head;
	for (uint32_t i = 0; i < lbs; i += 8) {
		uint64_t w = test_rand(&s);
		if (kind == 1) {
			static const char words[] = "the quick log structured store packs every sector ";
			for (int b = 0; b < 8; b++)
				out[i + b] = (uint8_t)words[(i + b + ver) % (sizeof(words) - 1)];
			if (i % 256 == 128)
				memcpy(out + i, &w, 2);
			continue;
		}
		if ((kind == 2 && i + 8 < lbs) || (kind == 3 && i >= lbs / 2))
			w = kind == 2 ? 0 : 0x0101010101010101ull * (ver & 0xff);
		memcpy(out + i, &w, 8);
	}
	memcpy(out, &head, 8);
}

static void add_cand(struct uhist *h, uint32_t ver)
{
	if (h->n == h->cap) {
		h->cap = h->cap ? h->cap * 2 : 4;
		h->c = realloc(h->c, h->cap * sizeof(*h->c));
	}
	h->c[h->n++] = (struct cand){ .ver = ver };
}

static void promote(struct uhist *h, uint32_t idx)
{
	h->durable = h->c[idx].ver;
	memmove(h->c, h->c + idx + 1, (h->n - idx - 1) * sizeof(*h->c));
	h->n -= idx + 1;
}

/* Does @data hold a version of @unit the oracle allows? */
static bool allowed(struct model *m, uint64_t unit, const uint8_t *data, char *why, size_t whylen)
{
	struct uhist *h = &m->h[unit];
	uint8_t exp[4096];
	uint64_t w;
	memcpy(&w, data, 8);
	if (w >> 32 == 0xd0d0d0d0u) {
		/* A duplicate block names only its class: try every allowed
		 * version byte for byte. */
		for (int32_t i = -1; i < (int32_t)h->n; i++) {
			pattern(unit, i < 0 ? h->durable : h->c[i].ver, m->lbs, exp, m->cfg.compress);
			if (memcmp(exp, data, m->lbs) == 0)
				return true;
		}
		snprintf(why, whylen, "duplicate block of class %u not allowed (durable %u, %u later)",
			 (uint32_t)w, h->durable, h->n);
		return false;
	}
	uint32_t ver = (uint32_t)w;
	bool zero = true;
	for (uint32_t i = 0; i < m->lbs && zero; i++)
		zero = data[i] == 0;
	if (zero)
		ver = 0;
	else if (w >> 32 != unit) {
		snprintf(why, whylen, "foreign block (belongs to unit %llu)", (unsigned long long)(w >> 32));
		return false;
	}
	bool ok = h->durable == ver;
	for (uint32_t i = 0; i < h->n && !ok; i++)
		ok = h->c[i].ver == ver;
	if (!ok) {
		snprintf(why, whylen, "version %u not allowed (durable %u, %u later)", ver, h->durable, h->n);
		return false;
	}
	pattern(unit, ver, m->lbs, exp, m->cfg.compress);
	if (memcmp(exp, data, m->lbs) != 0) {
		snprintf(why, whylen, "torn content of version %u", ver);
		return false;
	}
	return true;
}

/* ---- synchronous I/O on the verify reactor ---- */

struct sync_io {
	bool done;
	int status;
};

static void sync_cb(struct tnd_io *io, int status)
{
	struct sync_io *s = io->cb_arg;
	s->status = status;
	s->done = true;
}

static int vol_rw(struct tnd_volume *vol, struct tnd_reactor *r, enum tnd_io_type t, uint64_t lba,
		  uint32_t n, void *buf, uint32_t lbs)
{
	struct tnd_io *io = calloc(1, tnd_volume_io_size(vol));
	struct iovec iov = { .iov_base = buf, .iov_len = (size_t)n * lbs };
	struct sync_io s = { 0 };
	io->type = t;
	io->lba = lba;
	io->nblocks = n;
	io->iov = &iov;
	io->iovcnt = 1;
	io->reactor = r;
	io->cb = sync_cb;
	io->cb_arg = &s;
	int ret = tnd_volume_submit(vol, io);
	while (ret == 0 && !s.done)
		tnd_reactor_poll(r, -1);
	free(io);
	return ret < 0 ? ret : s.status;
}

static void violation(struct model *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void violation(struct model *m, const char *fmt, ...)
{
	m->violations++;
	if (m->violations > 20)
		return;
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "VIOLATION [%s seed %llu state %llu]: ", m->cfg.name,
		(unsigned long long)m->cfg.seed, (unsigned long long)m->states);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static void warm_done(void *arg)
{
	*(bool *)arg = true;
}

static void verify_image(struct model *m)
{
	struct tnd_volume *ram;
	ram_vol_wrap(m->img, m->dev_size, 512, &ram);
	struct tnd_lsfs_check_result res;
	int ret = tnd_lsfs_check(ram, NULL, &res);
	if (ret < 0 || res.errors) {
		violation(m, "checker: ret %d, %llu errors:", ret, (unsigned long long)res.errors);
		if (m->violations <= 3)
			tnd_lsfs_check(ram, stderr, &res);
	}
	if (ret == 0 && res.reused_segments)
		m->reused_states++;
	if (ret == 0 && res.gc_replayed_records)
		m->gc_states++;
	/* The deferred mark is set lazily, by a superblock update on home
	 * before the first deferred record: count the crashes that hit
	 * inside it (one copy new) or after it, before any deferred block
	 * (the checker above fails a deferred block without the bit). */
	bool bit0 = tnd_get_be64(m->img + 16) & 4, bit1 = tnd_get_be64(m->img + 4096 + 16) & 4;
	if (bit0 != bit1)
		m->mid_mark_states++;
	else if (bit0 && ret == 0 && res.deferred_blocks == 0)
		m->marked_states++;
	struct tnd_volume *vol;
	ret = tnd_lsfs_open(ram, m->v, &m->opts, &vol);
	if (ret < 0) {
		violation(m, "reopen failed: %s", strerror(-ret));
		tnd_volume_destroy(ram);
		m->states++;
		return;
	}
	/* Every fourth recovered dedup store rebuilds its index from the
	 * (possibly torn) log before it is read: the walk must neither fail
	 * nor change what reads return. */
	if (m->opts.dedup && m->states % 4 == 0) {
		bool wdone = false;
		if (tnd_lsfs_warmup_run(vol, 0, warm_done, &wdone) < 0)
			violation(m, "warm-up refused");
		while (!wdone)
			tnd_reactor_poll(m->v, -1);
		struct tnd_lsfs_stats st;
		tnd_lsfs_get_stats(vol, &st);
		if (st.index_warmup != TND_LSFS_WARMUP_DONE || st.warmup_scanned != st.warmup_segments)
			violation(m, "warm-up did not finish: state %u, %llu of %llu segments",
				  st.index_warmup, (unsigned long long)st.warmup_scanned,
				  (unsigned long long)st.warmup_segments);
		m->warmups++;
	}
	uint8_t *data = malloc(m->nunits * m->lbs);
	ret = vol_rw(vol, m->v, TND_IO_READ, 0, (uint32_t)m->nunits, data, m->lbs);
	if (ret < 0) {
		violation(m, "read after reopen: %s", strerror(-ret));
	} else {
		for (uint64_t u = 0; u < m->nunits; u++) {
			char why[128];
			if (!allowed(m, u, data + u * m->lbs, why, sizeof(why))) {
				violation(m, "unit %llu: %s", (unsigned long long)u, why);
				break;
			}
		}
	}
	free(data);
	tnd_volume_destroy(vol);
	m->states++;
}

static void hook(struct fault_vol *f, uint64_t point, void *arg)
{
	struct model *m = arg;
	if (m->cfg.every > 1 && test_rand(&m->rng) % m->cfg.every)
		return;
	static const enum crash_mode modes[] = {
		CRASH_DROP_ALL, CRASH_KEEP_ALL, CRASH_RANDOM, CRASH_RANDOM, CRASH_TEAR, CRASH_TEAR,
	};
	size_t nmodes = fault_pending(f) ? TND_ARRAY_SIZE(modes) : 1;
	for (size_t i = 0; i < nmodes; i++) {
		fault_crash_image(f, modes[i], &m->rng, m->img);
		verify_image(m);
	}
}

/* ---- the workload ---- */

static void op_done(struct tnd_io *io, int status)
{
	struct op *o = io->cb_arg;
	struct model *m = o->m;
	m->inflight--;
	if (status < 0)
		m->errors_seen = true;
	if (o->type == TND_IO_FLUSH) {
		if (status == 0) {
			for (uint64_t u = 0; u < m->nunits; u++) {
				struct uhist *h = &m->h[u];
				for (int32_t i = (int32_t)h->n - 1; i >= 0; i--) {
					if (h->c[i].ack && h->c[i].ack <= o->mark) {
						promote(h, (uint32_t)i);
						break;
					}
				}
			}
		}
	} else if (o->type == TND_IO_READ) {
		if (status == 0 && o->verify) {
			for (uint32_t i = 0; i < o->n; i++) {
				char why[128];
				if (!allowed(m, o->lba + i, o->buf + (size_t)i * m->lbs, why, sizeof(why))) {
					violation(m, "online read of unit %llu: %s",
						  (unsigned long long)(o->lba + i), why);
					break;
				}
			}
		} else if (status < 0 && status != -EROFS) {
			violation(m, "online read failed: %s", strerror(-status));
		}
		for (uint32_t i = 0; i < o->n; i++)
			m->busy[o->lba + i] = false;
	} else {
		bool durable = (o->flags & TND_IO_FUA) || !m->cfg.wc;
		for (uint32_t i = 0; i < o->n; i++) {
			struct uhist *h = &m->h[o->lba + i];
			m->busy[o->lba + i] = false;
			if (status < 0)
				continue;
			h->c[h->n - 1].ack = ++m->acks;
			if (durable)
				promote(h, h->n - 1);
		}
	}
	free(o->vers);
	free(o->buf);
	free(o->io);
	free(o);
}

static bool range_free(struct model *m, uint64_t lba, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		if (m->busy[lba + i])
			return false;
	return true;
}

static void done_flag(void *arg)
{
	*(bool *)arg = false;
}

static void issue(struct model *m)
{
	uint64_t r = test_rand(&m->rng) % 100;
	uint32_t per_chunk = 4096 / m->lbs;
	struct op *o = calloc(1, sizeof(*o));
	o->m = m;
	if (r < 60) {
		o->type = TND_IO_WRITE;
		if (test_rand(&m->rng) % 10 == 0)
			o->flags = TND_IO_FUA;
	} else if (r < 68) {
		o->type = TND_IO_UNMAP;
	} else if (r < 72) {
		o->type = TND_IO_WRITE_ZEROES;
	} else if (r < 84) {
		o->type = TND_IO_FLUSH;
	} else if (r < 86) {
		free(o);
		/* The callback may run before gc_run returns. */
		if (!m->gc_busy) {
			m->gc_busy = true;
			if (tnd_lsfs_gc_run(m->vol, done_flag, &m->gc_busy) < 0)
				m->gc_busy = false;
		}
		return;
	} else if (r < 88) {
		free(o);
		if (!m->ckpt_busy) {
			m->ckpt_busy = true;
			if (tnd_lsfs_checkpoint_run(m->vol, done_flag, &m->ckpt_busy) < 0)
				m->ckpt_busy = false;
		}
		return;
	} else {
		o->type = TND_IO_READ;
		o->verify = true;
	}
	if (o->type != TND_IO_FLUSH) {
		uint32_t maxn = 3 * per_chunk;
		o->n = 1 + (uint32_t)(test_rand(&m->rng) % maxn);
		if (o->type == TND_IO_UNMAP && test_rand(&m->rng) % 4 == 0)
			o->n = 8 * per_chunk;
		if (o->n > m->nunits)
			o->n = (uint32_t)m->nunits;
		o->lba = test_rand(&m->rng) % (m->nunits - o->n + 1);
		/* Mostly chunk-aligned on 512 B volumes, sometimes not. */
		if (per_chunk > 1 && test_rand(&m->rng) % 3 == 0) {
			o->lba -= o->lba % per_chunk;
			o->n = (o->n + per_chunk - 1) / per_chunk * per_chunk;
			if (o->lba + o->n > m->nunits)
				o->n = (uint32_t)(m->nunits - o->lba);
		}
		if (!range_free(m, o->lba, o->n)) {
			free(o);
			return;
		}
		o->buf = malloc((size_t)o->n * m->lbs);
		if (o->type != TND_IO_READ) {
			/* With compression, some writes carry all-zero data. */
			bool zeros = m->cfg.compress && test_rand(&m->rng) % 8 == 0;
			o->vers = calloc(o->n, sizeof(*o->vers));
			for (uint32_t i = 0; i < o->n; i++) {
				o->vers[i] = o->type == TND_IO_WRITE && !zeros ? ++m->next_ver : 0;
				add_cand(&m->h[o->lba + i], o->vers[i]);
				pattern(o->lba + i, o->vers[i], m->lbs, o->buf + (size_t)i * m->lbs,
					m->cfg.compress);
			}
		}
		for (uint32_t i = 0; i < o->n; i++)
			m->busy[o->lba + i] = true;
	} else {
		o->mark = m->acks;
	}
	o->io = calloc(1, tnd_volume_io_size(m->vol));
	o->iov.iov_base = o->buf;
	o->iov.iov_len = (size_t)o->n * m->lbs;
	o->io->type = o->type;
	o->io->flags = o->flags;
	o->io->lba = o->lba;
	o->io->nblocks = o->n;
	o->io->iov = o->buf ? &o->iov : NULL;
	o->io->iovcnt = o->buf ? 1 : 0;
	o->io->reactor = m->r;
	o->io->cb = op_done;
	o->io->cb_arg = o;
	m->inflight++;
	int ret = tnd_volume_submit(m->vol, o->io);
	if (ret < 0) {
		fprintf(stderr, "submit refused: %d\n", ret);
		m->violations++;
	}
}

static uint64_t reused_states;
static uint64_t gc_states;
static uint64_t warmups;
static uint64_t marked_states, mid_mark_states;

static uint64_t run(const struct cfg *cfg, uint64_t *violations, struct tnd_lsfs_stats *totals)
{
	struct model *m = calloc(1, sizeof(*m));
	m->cfg = *cfg;
	m->rng = cfg->seed * 7919 + 17;
	m->lbs = cfg->lbs;
	m->dev_size = DEV_SIZE;
	m->nunits = LOGICAL / cfg->lbs;
	m->h = calloc(m->nunits, sizeof(*m->h));
	m->busy = calloc(m->nunits, sizeof(*m->busy));
	m->img = malloc(m->dev_size);
	tnd_reactor_create(0, 64, &m->r);
	tnd_reactor_create(1, 64, &m->v);

	tnd_lsfs_opts_default(&m->opts);
	m->opts.size = LOGICAL;
	m->opts.block_size = cfg->lbs;
	m->opts.segment_size = SEG_SIZE;
	m->opts.write_cache = cfg->wc;
	m->opts.gc_interval_ms = 0;
	m->opts.gc_free_low = 4;
	m->opts.compress = cfg->compress == 1;
	m->opts.dedup = cfg->dedup == 1;
	m->opts.dedup_index_bytes = 8192;   /* small: evictions happen */
	m->opts.compress_mode = (enum tnd_lsfs_compress_mode)cfg->cmode;
	if (cfg->log_writes)
		m->opts.log_writes = cfg->log_writes;

	struct tnd_volume *ram, *fault;
	ram_vol_create(m->dev_size, 512, &ram);
	if (tnd_lsfs_format(ram, &m->opts) != 0) {
		fprintf(stderr, "format failed\n");
		exit(1);
	}
	m->opts.compress = cfg->compress != 0 && !cfg->live;
	m->opts.dedup = cfg->dedup != 0 && !cfg->live;
	fault_vol_create(ram, &fault);
	m->fv = fault_vol_of(fault);
	/* Crashes during the first open (its checkpoint) count too. */
	fault_set_hook(m->fv, hook, m);
	if (tnd_lsfs_open(fault, m->r, &m->opts, &m->vol) != 0) {
		fprintf(stderr, "open failed\n");
		exit(1);
	}
	if (cfg->fail_err)
		fault_fail_at(m->fv, fault_points(m->fv) + cfg->fail_at, cfg->fail_err);

	for (uint32_t i = 0; i < cfg->nops; i++) {
		while (m->inflight >= 4)
			tnd_reactor_poll(m->r, -1);
		if (cfg->live && (i == cfg->nops / 3 || (cfg->live == 2 && i == 2 * cfg->nops / 3))) {
			/* Live, with writes in flight: the crash points now
			 * include marking the superblock. */
			bool on = i == cfg->nops / 3;
			tnd_reactor_poll(m->r, 0);   /* this thread polls the home reactor */
			int ret = tnd_lsfs_set_features(m->vol, on && cfg->compress, on && cfg->dedup);
			if (ret < 0 && !cfg->fail_err)
				violation(m, "switching the features failed: %d", ret);
		}
		issue(m);
		/* Let some completions in now and then, so batches vary. */
		if (test_rand(&m->rng) % 3 == 0)
			tnd_reactor_poll(m->r, 0);
	}
	while (m->inflight || m->gc_busy || m->ckpt_busy)
		tnd_reactor_poll(m->r, -1);

	if (cfg->fail_err) {
		struct tnd_volume_info info;
		tnd_volume_info(m->vol, &info);
		if (m->errors_seen && info.state != TND_VOLUME_FAILED)
			violation(m, "an injected error did not fail-stop the device");
	}
	/* Final states: the end of the workload, after a last look. */
	fault_set_hook(m->fv, NULL, NULL);
	struct tnd_lsfs_stats st;
	tnd_lsfs_get_stats(m->vol, &st);
	totals->gc_passes += st.gc_passes;
	totals->gc_moved_blocks += st.gc_moved_blocks;
	totals->gc_freed_segments += st.gc_freed_segments;
	totals->checkpoints += st.checkpoints;
	totals->reclaimed_segments += st.reclaimed_segments;
	totals->gc_segments_written += st.gc_segments_written;
	totals->gc_mixed_blocks += st.gc_mixed_blocks;
	totals->batches += st.batches;
	totals->writes += st.writes;
	totals->rmw += st.rmw;
	totals->compressed_blocks += st.compressed_blocks;
	totals->deferred_writes += st.deferred_writes;
	totals->compacted_blocks += st.compacted_blocks;
	totals->compaction_passes += st.compaction_passes;
	totals->raw_blocks += st.raw_blocks;
	totals->zero_blocks += st.zero_blocks;
	totals->dedup_hits += st.dedup_hits;
	fault_crash_image(m->fv, CRASH_DROP_ALL, &m->rng, m->img);
	verify_image(m);
	fault_crash_image(m->fv, CRASH_KEEP_ALL, &m->rng, m->img);
	verify_image(m);

	tnd_volume_destroy(m->vol);
	while (tnd_reactor_poll(m->r, 0) > 0)
		;
	tnd_reactor_destroy(m->r);
	tnd_reactor_destroy(m->v);
	for (uint64_t u = 0; u < m->nunits; u++)
		free(m->h[u].c);
	free(m->h);
	free(m->busy);
	free(m->img);
	uint64_t states = m->states;
	*violations += m->violations;
	reused_states += m->reused_states;
	gc_states += m->gc_states;
	warmups += m->warmups;
	marked_states += m->marked_states;
	mid_mark_states += m->mid_mark_states;
	free(m);
	return states;
}

/*
 * Corruption campaign: recovery and the checker must survive whatever the
 * disk holds. Random bytes of a used image are changed, some in metadata
 * blocks whose CRC is then fixed up so the damage gets past the first
 * check; open, check, read everything and write a little. Nothing is
 * asserted about the data (it is damaged on purpose): the run must not
 * crash, hang or trip the sanitizers, and a store that opens must work.
 */
static void fix_crc(uint8_t *blk)
{
	tnd_put_be32(blk + 4092, tnd_crc32c(0, blk, 4092));
}

static uint64_t corruption_campaign(uint64_t n, uint64_t seed, bool compress, uint64_t *violations)
{
	/* (compress here means both features) */
	struct tnd_reactor *r;
	tnd_reactor_create(0, 64, &r);
	struct tnd_lsfs_opts o;
	tnd_lsfs_opts_default(&o);
	o.size = LOGICAL;
	o.segment_size = SEG_SIZE;
	o.gc_interval_ms = 0;
	o.compress = compress;
	o.dedup = compress;
	uint8_t *base = calloc(1, DEV_SIZE), *img = malloc(DEV_SIZE);
	struct tnd_volume *ram, *vol;
	ram_vol_wrap(base, DEV_SIZE, 512, &ram);
	tnd_lsfs_format(ram, &o);
	tnd_lsfs_open(ram, r, &o, &vol);
	uint64_t rng = seed;
	uint8_t *buf = malloc(4 * 4096);
	uint32_t nchunks = LOGICAL / 4096;
	for (int i = 0; i < 300; i++) {
		uint32_t k = 1 + (uint32_t)(test_rand(&rng) % 4);
		uint64_t lba = test_rand(&rng) % (nchunks - k);
		for (uint32_t j = 0; j < k; j++)
			pattern(lba + j, (uint32_t)i + 1 + j % 2 * 5, 4096, buf + j * 4096, true);
		vol_rw(vol, r, test_rand(&rng) % 8 ? TND_IO_WRITE : TND_IO_UNMAP, lba, k, buf, 4096);
	}
	/* Leave a log to replay: snapshot the image while still open. */
	memcpy(img, base, DEV_SIZE);
	tnd_volume_destroy(vol);
	uint8_t *open_img = malloc(DEV_SIZE);
	memcpy(open_img, img, DEV_SIZE);

	uint64_t runs = 0;
	for (uint64_t i = 0; i < n; i++) {
		memcpy(img, i % 2 ? base : open_img, DEV_SIZE);
		uint32_t patches = 1 + (uint32_t)(test_rand(&rng) % 4);
		for (uint32_t p = 0; p < patches; p++) {
			uint64_t blk = test_rand(&rng) % (DEV_SIZE / 4096);
			uint8_t *b = img + blk * 4096;
			bool meta = memcmp(b, "TNDL", 4) == 0;
			if (!meta && test_rand(&rng) % 2) {
				/* aim at metadata: a superblock, a checkpoint or a record header */
				for (uint32_t t = 0; t < 64 && !meta; t++) {
					blk = test_rand(&rng) % (DEV_SIZE / 4096);
					b = img + blk * 4096;
					meta = memcmp(b, "TNDL", 4) == 0;
				}
			}
			uint32_t off = (uint32_t)(test_rand(&rng) % (meta ? 128 : 4092));
			b[off] ^= (uint8_t)(1u << (test_rand(&rng) % 8));
			if (test_rand(&rng) % 3 == 0)
				b[off] = (uint8_t)test_rand(&rng);
			if (meta && test_rand(&rng) % 4)
				fix_crc(b);
		}
		struct tnd_volume *rv;
		ram_vol_wrap(img, DEV_SIZE, 512, &rv);
		struct tnd_lsfs_check_result res;
		int ret = tnd_lsfs_check(rv, NULL, &res);
		if (ret < 0 && ret != -ENOMEM) {
			fprintf(stderr, "corruption: checker failed to run: %d\n", ret);
			tnd_lsfs_check(rv, stderr, &res);
			(*violations)++;
		}
		ret = tnd_lsfs_open(rv, r, &o, &vol);
		if (ret < 0) {
			tnd_volume_destroy(rv);
			runs++;
			continue;
		}
		struct tnd_volume_info info;
		tnd_volume_info(vol, &info);
		uint32_t nb = (uint32_t)TND_MIN(info.num_blocks, 64);
		uint8_t *all = malloc((size_t)nb * info.block_size);
		vol_rw(vol, r, TND_IO_READ, 0, nb, all, info.block_size);
		memset(all, 0x33, (size_t)nb * info.block_size);
		int wr = vol_rw(vol, r, TND_IO_WRITE, 0, TND_MIN(nb, 4), all, info.block_size);
		int rr = vol_rw(vol, r, TND_IO_READ, 0, TND_MIN(nb, 4), all, info.block_size);
		for (uint32_t j = 0; rr == 0 && j < TND_MIN(nb, 4) * info.block_size; j++)
			if (all[j] != 0x33) {
				fprintf(stderr, "corruption: image %llu: a store that opened returned wrong data "
					"(byte %u: 0x%02x; the write returned %d)\n", (unsigned long long)i, j,
					all[j], wr);
				(*violations)++;
				break;
			}
		free(all);
		tnd_volume_destroy(vol);
		runs++;
	}
	free(buf);
	free(base);
	free(img);
	free(open_img);
	tnd_reactor_destroy(r);
	return runs;
}

int main(int argc, char **argv)
{
	bool soak = argc > 1 && strcmp(argv[1], "soak") == 0;
	tnd_log_set_level(TND_LOG_ERROR);
	if (argc > 3 && strcmp(argv[1], "corrupt") == 0) {
		/* test_lsfs_crash corrupt N SEED: only the corruption campaign */
		uint64_t v = 0;
		uint64_t n = corruption_campaign(strtoull(argv[2], NULL, 0), strtoull(argv[3], NULL, 0),
						 argc > 4 && strcmp(argv[4], "lz4") == 0, &v);
		printf("corruption: %llu images, %llu violations\n", (unsigned long long)n, (unsigned long long)v);
		return v ? 1 : 0;
	}
	uint64_t t0 = tnd_now_ns();
	uint64_t states = 0, violations = 0, target = soak ? 500000 : 20000;
	uint64_t seed = 1;
	struct tnd_lsfs_stats tot = { 0 };
	uint64_t err_states = 0, by_feature[2] = { 0, 0 }, reused_by_feature[2] = { 0, 0 };
	uint64_t gc_by_feature[2] = { 0, 0 };

	for (int lz4 = 0; lz4 < 2 && violations == 0; lz4++) {
		uint64_t st0 = states, r0 = reused_states, g0 = gc_states;
		/* Error campaign: one failing write or flush at every point of
		 * a short workload. */
		for (uint64_t p = 0; p < (soak ? 400 : 60); p++) {
			struct cfg c = { .name = lz4 ? "fail-lz4" : "fail", .lbs = p % 3 ? 4096 : 512,
					 .wc = p % 4 != 0, .nops = 60, .every = 4, .seed = 1000 + p,
					 .fail_err = p % 2 ? -EIO : -ENOSPC, .fail_at = p,
					 .compress = lz4 ? 1 + (int)(p % 2) : 0,
					 .dedup = lz4 ? (int)(p % 3) : 0,
					 .live = lz4 && p % 5 == 0 ? 1 + (int)(p / 5 % 2) : 0,
					 .log_writes = p % 5 < 2 ? 4 : 1,
					 .cmode = lz4 && p % 3 == 1 ? TND_LSFS_COMPRESS_DEFERRED : 0 };
			uint64_t n = run(&c, &violations, &tot);
			err_states += n;
			states += n;
		}

		/* Crash campaign: every point of short workloads, sampled
		 * points of long ones; 4 KiB and 512 B blocks, with and without
		 * write cache. */
		while (states - st0 < target && violations == 0) {
			struct cfg shorts[] = {
				{ .name = "short-4k-wc", .lbs = 4096, .wc = true, .nops = 120, .every = 1 },
				{ .name = "short-512-wc", .lbs = 512, .wc = true, .nops = 120, .every = 1 },
				{ .name = "short-4k-nowc", .lbs = 4096, .wc = false, .nops = 120, .every = 1 },
				{ .name = "long-4k-wc", .lbs = 4096, .wc = true, .nops = 1500, .every = 12 },
				{ .name = "long-512-wc", .lbs = 512, .wc = true, .nops = 1500, .every = 12 },
			};
			for (size_t i = 0; i < TND_ARRAY_SIZE(shorts) && violations == 0; i++) {
				shorts[i].seed = seed++;
				/* Every other seed as a direct_io device runs it. */
				shorts[i].log_writes = seed % 2 ? 4 : 1;
				if (lz4) {
					shorts[i].compress = 1 + (int)(i % 2);
					shorts[i].dedup = (int)((i + seed) % 3);
					/* Half deferred: written raw, compressed by
					 * the GC passes of the op mix (compaction). */
					shorts[i].cmode = (i + seed) % 2 ? TND_LSFS_COMPRESS_DEFERRED
									 : TND_LSFS_COMPRESS_INLINE;
					/* Some switched on (and off) live instead. */
					shorts[i].live = (int)((i + 2 * seed) % 4) < 2 ? (int)((i + 2 * seed) % 4) + 1 : 0;
					if (shorts[i].live)
						shorts[i].compress = 2;
				}
				states += run(&shorts[i], &violations, &tot);
			}
		}
		by_feature[lz4] = states - st0;
		reused_by_feature[lz4] = reused_states - r0;
		gc_by_feature[lz4] = gc_states - g0;
	}
	uint64_t corrupt = corruption_campaign(soak ? 50000 : 1500, 77, false, &violations);
	corrupt += corruption_campaign(soak ? 50000 : 1500, 78, true, &violations);
	double secs = (double)(tnd_now_ns() - t0) / 1e9;
	printf("lsfs crash test: %llu crash states (%llu plain, %llu with compression; %llu with "
	       "injected errors), %llu violations, %.1f s\n",
	       (unsigned long long)states, (unsigned long long)by_feature[0],
	       (unsigned long long)by_feature[1], (unsigned long long)err_states,
	       (unsigned long long)violations, secs);
	printf("  workload: %llu writes in %llu backing writes, %llu read-modify-writes, %llu GC passes "
	       "moving %llu blocks and freeing %llu segments, %llu checkpoints, %llu dead segments "
	       "reused after a flush\n",
	       (unsigned long long)tot.writes, (unsigned long long)tot.batches, (unsigned long long)tot.rmw,
	       (unsigned long long)tot.gc_passes, (unsigned long long)tot.gc_moved_blocks,
	       (unsigned long long)tot.gc_freed_segments, (unsigned long long)tot.checkpoints,
	       (unsigned long long)tot.reclaimed_segments);
	printf("  compression and dedup: %llu blocks stored LZ4, %llu raw, %llu all-zero blocks not "
	       "stored, %llu shared\n",
	       (unsigned long long)tot.compressed_blocks, (unsigned long long)tot.raw_blocks,
	       (unsigned long long)tot.zero_blocks, (unsigned long long)tot.dedup_hits);
	printf("  deferred compression: %llu blocks written raw and deferred, %llu compressed by %llu "
	       "compaction passes\n", (unsigned long long)tot.deferred_writes,
	       (unsigned long long)tot.compacted_blocks, (unsigned long long)tot.compaction_passes);
	printf("  corruption: %llu damaged images opened and checked without a crash\n",
	       (unsigned long long)corrupt);
	printf("  %llu recovered dedup stores rebuilt their index (warm-up) before being read\n",
	       (unsigned long long)warmups);
	if (violations == 0 && warmups == 0) {
		printf("  no recovered store ran the index warm-up\n");
		return 1;
	}
	printf("  %llu crash states replayed into segments reused after a flush (the checkpoint "
	       "listed them as used): %llu plain, %llu with compression/dedup\n",
	       (unsigned long long)reused_states, (unsigned long long)reused_by_feature[0],
	       (unsigned long long)reused_by_feature[1]);
	printf("  %llu GC-only segments written (%llu blocks GC moved among client writes); %llu crash "
	       "states replayed records of GC-only segments: %llu plain, %llu with compression/dedup\n",
	       (unsigned long long)tot.gc_segments_written, (unsigned long long)tot.gc_mixed_blocks,
	       (unsigned long long)gc_states, (unsigned long long)gc_by_feature[0],
	       (unsigned long long)gc_by_feature[1]);
	/* Both campaigns must reach those paths, or the test proves nothing
	 * about reuse, or GC-only segments, with packed and shared payloads. */
	if (violations == 0 && (tot.deferred_writes == 0 || tot.compacted_blocks == 0)) {
		printf("  no deferred block was written or compacted\n");
		return 1;
	}
	printf("  deferred mark: %llu crash states inside its superblock update (copies differ), "
	       "%llu after it with no deferred block yet\n", (unsigned long long)mid_mark_states,
	       (unsigned long long)marked_states);
	if (violations == 0 && (mid_mark_states == 0 || marked_states == 0)) {
		printf("  no crash state hit the deferred mark's superblock update\n");
		return 1;
	}
	if (violations == 0 && (reused_by_feature[0] == 0 || reused_by_feature[1] == 0)) {
		printf("  a campaign had no crash state replay into a reused segment\n");
		return 1;
	}
	if (violations == 0 && (gc_by_feature[0] == 0 || gc_by_feature[1] == 0)) {
		printf("  a campaign had no crash state replay a GC-only segment\n");
		return 1;
	}
	return violations ? 1 : 0;
}
