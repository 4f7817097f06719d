/*
 * bench.h — internals of tandem-bench, the libiscsi load generator.
 *
 * Shape: a poll() loop per thread over its iSCSI sessions (libiscsi starts
 * no threads; we drive it); one thread unless --threads says more. Each session keeps --qd commands in
 * flight; a command lives in a *slot* that owns its data buffer, so the hot
 * path allocates nothing of ours (libiscsi still allocates its task and PDU).
 *
 * Sessions to the same URL share one struct bench_lun, which carries the
 * verify state: the generation last written to each bs-sized unit of the
 * working set, and a busy flag per unit. A unit with a command in flight is
 * never picked again until that command completes, so a read can never race
 * a write to the same blocks and a verify mismatch always means the target
 * returned data it should not have.
 *
 * Threads (--threads): each runs its own loop over its share of the
 * sessions (struct bench_worker) and nothing of a session is touched by
 * another thread. With --verify all sessions of one URL go to the same
 * thread, so the per-unit verify state needs no locks. The main thread only
 * takes the CPU snapshots at the edges of the measured window and merges
 * the workers' statistics at the end.
 *
 * Everything here is owned by one struct bench built in main(); there is no
 * global mutable state.
 */
#ifndef TND_BENCH_H
#define TND_BENCH_H

#include <stdbool.h>
#include <stdint.h>
#include <pthread.h>
#include <sys/types.h>

#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>

/* ---- latency histogram (hist.c) ---------------------------------------- */

/*
 * Log-linear buckets: 16 sub-buckets per power of two, so a reported
 * percentile is within ~3% of the true value, at a fixed 8 KiB per
 * histogram and O(1) recording. Values are nanoseconds.
 */
#define BENCH_HIST_SUB     16
#define BENCH_HIST_BUCKETS (61 * BENCH_HIST_SUB)

struct bench_hist {
	uint64_t count;
	uint64_t sum;
	uint64_t min;
	uint64_t max;
	uint64_t bucket[BENCH_HIST_BUCKETS];
};

void bench_hist_reset(struct bench_hist *h);
void bench_hist_add(struct bench_hist *h, uint64_t ns);
/* Value at percentile @pct (0..100); 0 if the histogram is empty. */
uint64_t bench_hist_pct(const struct bench_hist *h, double pct);
uint64_t bench_hist_mean(const struct bench_hist *h);
/* Add @src's samples to @dst. */
void bench_hist_merge(struct bench_hist *dst, const struct bench_hist *src);

/* ---- data patterns (pattern.c) ------------------------------------------ */

#define BENCH_SECTOR 512u

/* xoshiro256** — fast, good enough for picking LBAs and filling buffers. */
struct bench_rng {
	uint64_t s[4];
};

void bench_rng_seed(struct bench_rng *r, uint64_t seed);
uint64_t bench_rng_next(struct bench_rng *r);
/* Uniform in [0, n), n > 0 (Lemire's multiply-shift, negligible bias). */
uint64_t bench_rng_below(struct bench_rng *r, uint64_t n);

/*
 * Verify tag: every 512 bytes of a verified write hold a header naming the
 * sector (byte offset / 512, independent of the LUN block size), the run's
 * seed and the write's generation, then 480 bytes derived from those. A
 * read is checked by regenerating the expected 512 bytes and comparing.
 */
void bench_pattern_fill(unsigned char *buf, size_t len, uint64_t first_sector,
			uint64_t seed, uint32_t gen);
/*
 * Compare @len bytes read from @first_sector against generation @gen.
 * Returns the index of the first bad sector, or -1 if all match. @why gets
 * a short description of what was found instead (stale generation, another
 * sector's data, zeros, garbage).
 */
long bench_pattern_check(const unsigned char *buf, size_t len, uint64_t first_sector,
			 uint64_t seed, uint32_t gen, char *why, size_t whylen);

/* ---- options (main.c) ----------------------------------------------------- */

enum bench_rw {
	BENCH_RW_READ,
	BENCH_RW_WRITE,
	BENCH_RW_MIXED,
};

enum bench_pattern {
	BENCH_PAT_RAND,
	BENCH_PAT_SEQ,
};

/* What unverified writes carry (--data). */
enum bench_data {
	BENCH_DATA_RANDOM,        /* incompressible, every 4 KiB unique */
	BENCH_DATA_TEXT,          /* text-like (LZ4 about 2-3x), every 4 KiB unique */
	BENCH_DATA_DUP,           /* one random 4 KiB block, over and over */
};

struct bench_opts {
	const char **urls;        /* borrowed from argv */
	int nurls;
	int sessions;             /* per URL */
	uint32_t bs;
	int qd;                   /* per session */
	enum bench_rw rw;
	int mix;                  /* read percent for BENCH_RW_MIXED */
	enum bench_pattern pattern;
	enum bench_data data;
	int hot;                  /* rand: this % of I/Os go to the first (100 - hot) % of
				     the working set; 0: uniform */
	uint64_t flush_every;     /* 0: never */
	double time_s;            /* 0 with count 0: default 10 s */
	double ramp_s;
	uint64_t count;           /* 0: time-bound */
	uint64_t size;            /* working set bytes; 0: whole LUN */
	uint64_t seed;
	bool verify;
	pid_t target_pid;         /* 0: none */
	bool header_digest;
	bool data_digest;
	const char *initiator;
	bool json;
	int max_errors;           /* stop after this many I/O errors */
	int threads;              /* event loops; sessions are shared out */
	bool cork;                /* push a round's commands corked (default) */
};

/* ---- the engine (engine.c) ------------------------------------------------ */

enum bench_op {
	BENCH_OP_READ,
	BENCH_OP_WRITE,
	BENCH_OP_FLUSH,
	BENCH_OP_COUNT,
};

struct bench_stats {
	uint64_t ops[BENCH_OP_COUNT];
	uint64_t bytes[BENCH_OP_COUNT];
	struct bench_hist lat_io;                 /* reads and writes together */
	struct bench_hist lat[BENCH_OP_COUNT];
	uint64_t errors;
	uint64_t mismatches;
	uint64_t verified_units;                  /* reads whose data was checked */
	uint64_t data_segs;                       /* TCP segments with payload sent in
						     the window; 0 if the kernel does not say */
};

struct bench_lun {
	const char *url;          /* borrowed */
	uint32_t block_size;
	uint64_t nblocks;         /* capacity in LUN blocks */
	uint64_t units;           /* working set in bs-sized units */
	uint32_t *gen;            /* verify: last generation written, 0 = unknown */
	uint8_t *busy;            /* verify: a command on this unit is in flight */
	uint64_t verify_cursor;   /* final read-back pass */
};

struct bench_session;

struct bench_slot {
	struct bench_session *sess;
	struct scsi_task *task;   /* NULL when free */
	unsigned char *buf;       /* bs bytes, page aligned */
	enum bench_op op;
	uint64_t unit;
	uint32_t gen;
	bool counted;             /* issued while measuring */
	bool locked;              /* holds lun->busy[unit] */
	uint64_t t0;
	struct scsi_iovec iov;    /* libiscsi keeps a pointer to it until completion */
};

struct bench_worker;

struct bench_session {
	struct bench *b;
	struct bench_worker *w;   /* the one thread that drives this session */
	struct bench_lun *lun;
	struct iscsi_context *iscsi;
	int lun_no;
	int idx;
	struct bench_slot *slots;
	int *free_slots;          /* stack of free slot indexes */
	int nfree;
	int inflight;
	uint64_t seq_next;        /* next unit for --pattern seq */
	uint64_t writes_since_flush;
	bool flush_inflight;
	bool dead;
	uint64_t segs_start;      /* TCP data segments sent when the window opened */
	int queued;               /* commands queued since the last push */
	bool queued_data;         /* one of them carries data */
	uint64_t stamp;           /* makes unverified writes unique per 4 KiB */
	struct bench_rng rng;
};

enum bench_phase {
	BENCH_PHASE_RAMP,
	BENCH_PHASE_RUN,
	BENCH_PHASE_DRAIN,
	BENCH_PHASE_DRAINED,      /* waiting for the other workers */
	BENCH_PHASE_VERIFY,
	BENCH_PHASE_DONE,
};

/* One event loop (one thread) and what it alone writes. */
struct bench_worker {
	struct bench *b;
	const struct bench_opts *o;
	struct bench_session **sess;  /* its share; the sessions live in bench */
	int nsess;
	enum bench_phase phase;
	uint64_t submitted;       /* in the measured window */
	uint64_t count_limit;     /* its share of --count */
	uint32_t next_gen;
	uint64_t t_end;           /* last measured completion, ns */
	uint64_t last_service;    /* ns; drives libiscsi's timeout processing */
	int reported_errors;
	int reported_mismatches;
	int ret;                  /* 0 or -errno from the loop */
	struct bench_stats st;
	pthread_t thread;
};

struct bench {
	const struct bench_opts *o;
	struct bench_lun *luns;
	int nluns;
	struct bench_session *sess;
	int nsess;
	struct bench_worker *workers;
	int nworkers;
	uint64_t ramp_end;        /* = t_start: the measured window opens */
	uint64_t run_end;         /* time mode: nothing new is issued after it */
	uint64_t t_start, t_end;  /* measured window, ns */
	int64_t cpu_before;       /* target utime+stime, clock ticks; <0 unknown */
	int64_t cpu_after;
	uint64_t self_cpu_before; /* our own CPU time (all threads), ns */
	uint64_t self_cpu_after;
	_Atomic uint64_t errors_total;  /* for --max-errors across workers */
	_Atomic bool abort;       /* stop issuing: a worker could not start */
	/* Workers report "drained" and wait for "resume", so the target's CPU
	 * is read after the last measured completion and before the verify
	 * pass adds load of its own. */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int drained;
	bool resume;
	struct bench_stats st;    /* merged from the workers after the run */
};

/*
 * Connect every session; returns 0 or -errno (message already printed).
 * @b is filled in (caller-owned storage); @o is borrowed and must outlive
 * @b. Call bench_teardown() whatever this returns: it releases whatever
 * part was set up.
 */
int bench_setup(struct bench *b, const struct bench_opts *o);
/* Run ramp, measured window, drain and verify pass; results in b->st and
 * the time/CPU fields. 0 or -errno. */
int bench_run(struct bench *b);
/* Log out, destroy the contexts, free everything bench_setup() allocated. */
void bench_teardown(struct bench *b);

uint64_t bench_now_ns(void);
uint64_t bench_self_cpu_ns(void);
/* utime+stime of @pid in clock ticks, or -errno. */
int64_t bench_proc_cpu_ticks(pid_t pid);

#endif
