/* Unit tests for common/: CRC32C, size parsing, the reactor, volume layout. */
#include <dirent.h>
#include <errno.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <pthread.h>
#include <cmocka.h>

#include "tnd_common.h"
#include "tnd_reactor.h"
#include "tnd_volume.h"

static void crc32c_known_vectors(void **state)
{
	(void)state;
	assert_int_equal(tnd_crc32c(0, "123456789", 9), 0xE3069283u);
	/* RFC 3720 B.4: 32 bytes of zeros. */
	uint8_t z[32] = { 0 };
	assert_int_equal(tnd_crc32c(0, z, sizeof(z)), 0x8A9136AAu);
	uint8_t f[32];
	memset(f, 0xff, sizeof(f));
	assert_int_equal(tnd_crc32c(0, f, sizeof(f)), 0x62A8AB43u);
	/* Chaining equals one pass. */
	assert_int_equal(tnd_crc32c(tnd_crc32c(0, "1234", 4), "56789", 5), 0xE3069283u);
}

static void size_parsing(void **state)
{
	(void)state;
	uint64_t v;
	assert_int_equal(tnd_parse_size("4096", &v), 0);
	assert_int_equal(v, 4096);
	assert_int_equal(tnd_parse_size("1GiB", &v), 0);
	assert_int_equal(v, 1ull << 30);
	assert_int_equal(tnd_parse_size("10g", &v), 0);
	assert_int_equal(v, 10ull << 30);
	assert_int_equal(tnd_parse_size("2TiB", &v), 0);
	assert_int_equal(v, 2ull << 40);
	assert_int_equal(tnd_parse_size("", &v), -EINVAL);
	assert_int_equal(tnd_parse_size("-1", &v), -EINVAL);
	assert_int_equal(tnd_parse_size("12XB", &v), -EINVAL);
	assert_int_equal(tnd_parse_size("99999999999999999999", &v), -ERANGE);
	assert_int_equal(tnd_parse_size("16777216TiB", &v), -ERANGE);
}

struct nop_ctx {
	struct tnd_uring_op op;
	int res;
	int calls;
};

static void nop_done(struct tnd_uring_op *op, int res, unsigned flags)
{
	(void)flags;
	struct nop_ctx *c = tnd_container_of(op, struct nop_ctx, op);
	c->res = res;
	c->calls++;
}

static void reactor_runs_completions(void **state)
{
	(void)state;
	struct tnd_reactor *r;
	assert_int_equal(tnd_reactor_create(0, 64, &r), 0);
	struct nop_ctx c = { .op.cb = nop_done, .res = -1 };
	struct io_uring_sqe *sqe = tnd_reactor_sqe(r, &c.op);
	assert_non_null(sqe);
	io_uring_prep_nop(sqe);
	for (int i = 0; i < 100 && c.calls == 0; i++)
		assert_true(tnd_reactor_poll(r, 100) >= 0);
	assert_int_equal(c.calls, 1);
	assert_int_equal(c.res, 0);
	tnd_reactor_destroy(r);
}

/* The kernel's unreclaimable slab, in KiB (/proc/meminfo), or -1. */
static long slab_unreclaimable_kib(void)
{
	FILE *f = fopen("/proc/meminfo", "r");
	char line[128];
	long kib = -1;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "SUnreclaim: %ld kB", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

/*
 * A destroyed reactor gives its ring back to the kernel at once. With its
 * wake-up read still armed on the eventfd, a closed ring used to stay
 * until the process exited (about 10 KiB of slab each): 30,000 reactors
 * made and dropped held about 300 MiB, and the lsfs crash soak, which makes
 * reactors by the hundred thousand, was OOM-killed. The bound leaves room
 * for whatever else the machine does meanwhile.
 */
static void reactor_destroy_frees_the_ring(void **state)
{
	(void)state;
	long before = slab_unreclaimable_kib();
	if (before < 0)
		skip();
	for (int i = 0; i < 30000; i++) {
		struct tnd_reactor *r;
		assert_int_equal(tnd_reactor_create(0, 8, &r), 0);
		assert_true(tnd_reactor_poll(r, 0) >= 0);   /* arms the wake-up read */
		tnd_reactor_destroy(r);
	}
	long after = slab_unreclaimable_kib();
	assert_true(after - before < 100 * 1024);
}

struct defer_ctx {
	struct tnd_defer d;
	struct tnd_reactor *r;
	int calls;
	struct defer_ctx *next;
	int *order;             /* shared counter: when each one ran */
	int ran_at;
};

static void defer_fn(struct tnd_defer *d)
{
	struct defer_ctx *c = tnd_container_of(d, struct defer_ctx, d);
	c->calls++;
	c->ran_at = (*c->order)++;
	if (c->next)
		tnd_reactor_defer(c->r, &c->next->d);
}

/* Deferred work runs once, in order, within one poll, without sleeping. */
static void reactor_defer_runs_once_per_turn(void **state)
{
	(void)state;
	struct tnd_reactor *r;
	assert_int_equal(tnd_reactor_create(0, 64, &r), 0);
	int order = 0;
	struct defer_ctx a = { .d.fn = defer_fn, .r = r, .order = &order };
	struct defer_ctx b = { .d.fn = defer_fn, .r = r, .order = &order };
	struct defer_ctx c = { .d.fn = defer_fn, .r = r, .order = &order };
	a.next = &c;    /* a defers c while running */
	tnd_reactor_defer(r, &a.d);
	tnd_reactor_defer(r, &b.d);
	tnd_reactor_defer(r, &a.d); /* already queued: no second run */
	/* Deferred between turns, it is an event: poll(-1) must not sleep. */
	assert_int_equal(tnd_reactor_poll(r, -1), 3);
	assert_int_equal(a.calls, 1);
	assert_int_equal(b.calls, 1);
	assert_int_equal(c.calls, 1);
	assert_int_equal(a.ran_at, 0);
	assert_int_equal(b.ran_at, 1);
	assert_int_equal(c.ran_at, 2);
	/* Nothing left: the next turn runs none of them again. */
	assert_int_equal(tnd_reactor_poll(r, 0), 0);
	assert_int_equal(a.calls + b.calls + c.calls, 3);
	tnd_reactor_destroy(r);
}

static void defer_self_fn(struct tnd_defer *d)
{
	struct defer_ctx *c = tnd_container_of(d, struct defer_ctx, d);
	c->calls++;
	tnd_reactor_defer(c->r, d);
}

/* An entry that always defers itself cannot keep one turn going forever. */
static void reactor_defer_self_is_bounded(void **state)
{
	(void)state;
	struct tnd_reactor *r;
	assert_int_equal(tnd_reactor_create(0, 64, &r), 0);
	int order = 0;
	struct defer_ctx a = { .d.fn = defer_self_fn, .r = r, .order = &order };
	tnd_reactor_defer(r, &a.d);
	int n = tnd_reactor_poll(r, -1);
	assert_true(n >= 1);
	int after_one = a.calls;
	assert_true(after_one >= 1);
	assert_true(tnd_reactor_poll(r, -1) >= 1);
	assert_true(a.calls > after_one);
	tnd_reactor_destroy(r);
}

struct count_msg {
	struct tnd_msg msg;
	int *counter;
	int seq;
	int *last_seq;
};

static void count_fn(struct tnd_msg *m)
{
	struct count_msg *c = tnd_container_of(m, struct count_msg, msg);
	/* Messages from one sender run in the order sent. */
	assert_int_equal(c->seq, *c->last_seq + 1);
	*c->last_seq = c->seq;
	(*c->counter)++;
	free(c);
}

struct sender_arg {
	struct tnd_reactor *r;
	int *counter;
	int *last_seq;
	int n;
};

static void *sender(void *p)
{
	struct sender_arg *a = p;
	for (int i = 0; i < a->n; i++) {
		struct count_msg *m = calloc(1, sizeof(*m));
		m->msg.fn = count_fn;
		m->counter = a->counter;
		m->seq = i;
		m->last_seq = a->last_seq;
		tnd_reactor_send(a->r, &m->msg);
	}
	return NULL;
}

static void reactor_messages_cross_threads(void **state)
{
	(void)state;
	struct tnd_reactor *r;
	assert_int_equal(tnd_reactor_create(0, 64, &r), 0);
	int counter = 0, last = -1;
	struct sender_arg a = { .r = r, .counter = &counter, .last_seq = &last, .n = 20000 };
	pthread_t t;
	pthread_create(&t, NULL, sender, &a);
	while (counter < a.n)
		assert_true(tnd_reactor_poll(r, 1000) >= 0);
	pthread_join(t, NULL);
	assert_int_equal(counter, a.n);
	tnd_reactor_destroy(r);
}

/* A message bounced between two started reactors, each blocking without a
 * timeout between hops: a wake-up lost on either side stops the ball, and
 * the test sees it stall. Every hop races the receiver's way into its
 * sleep (the "Wake-ups" protocol of tnd_reactor_send). */
struct pingpong {
	struct tnd_msg msg;
	struct tnd_reactor *r[2];
	int hops;                       /* written by the reactor holding the ball */
	int target;
	_Atomic int done;
};

static void pingpong_fn(struct tnd_msg *m)
{
	struct pingpong *p = tnd_container_of(m, struct pingpong, msg);
	if (++p->hops == p->target) {
		atomic_store(&p->done, 1);
		return;
	}
	tnd_reactor_send(p->r[p->hops & 1], &p->msg);
}

static void reactor_wakeups_are_not_lost(void **state)
{
	(void)state;
	struct pingpong p = { .msg.fn = pingpong_fn, .target = 20000 };
	for (int i = 0; i < 2; i++) {
		assert_int_equal(tnd_reactor_create((unsigned)i, 64, &p.r[i]), 0);
		assert_int_equal(tnd_reactor_start(p.r[i]), 0);
	}
	tnd_reactor_send(p.r[0], &p.msg);
	/* 20,000 hops take well under a second; 20 s means a stall. */
	for (int i = 0; i < 20000 && !atomic_load(&p.done); i++)
		usleep(1000);
	assert_true(atomic_load(&p.done));
	for (int i = 0; i < 2; i++) {
		tnd_reactor_stop(p.r[i]);
		tnd_reactor_join(p.r[i]);
		tnd_reactor_destroy(p.r[i]);
	}
}

struct timer_probe {
	struct tnd_timer t;
	int order;
	int *next;
};

static void timer_fn(struct tnd_timer *t)
{
	struct timer_probe *p = tnd_container_of(t, struct timer_probe, t);
	p->order = (*p->next)++;
}

static void reactor_timers_fire_in_order_and_cancel(void **state)
{
	(void)state;
	struct tnd_reactor *r;
	assert_int_equal(tnd_reactor_create(0, 64, &r), 0);
	int next = 0;
	struct timer_probe p[4];
	for (int i = 0; i < 4; i++)
		p[i] = (struct timer_probe){ .t.fn = timer_fn, .order = -1, .next = &next };
	/* Before arming: a preemption between arming and reading the clock
	 * would otherwise make the 30 ms timer look early. */
	uint64_t start = tnd_now_ns();
	tnd_reactor_timer_arm(r, &p[0].t, 30 * 1000000ull);
	tnd_reactor_timer_arm(r, &p[1].t, 10 * 1000000ull);
	tnd_reactor_timer_arm(r, &p[2].t, 20 * 1000000ull);
	tnd_reactor_timer_arm(r, &p[3].t, 15 * 1000000ull);
	tnd_reactor_timer_cancel(r, &p[3].t);
	while (next < 3 && tnd_now_ns() - start < 2000000000ull)
		tnd_reactor_poll(r, -1);
	assert_int_equal(p[1].order, 0);
	assert_int_equal(p[2].order, 1);
	assert_int_equal(p[0].order, 2);
	assert_int_equal(p[3].order, -1);
	assert_true(tnd_now_ns() - start >= 30 * 1000000ull);
	tnd_reactor_destroy(r);
}

struct current_probe {
	struct tnd_msg msg;
	struct tnd_reactor *r;
	int seen;        /* 1: current on the reactor thread, -1: not */
};

static void current_fn(struct tnd_msg *m)
{
	struct current_probe *p = tnd_container_of(m, struct current_probe, msg);
	p->seen = tnd_reactor_is_current(p->r) ? 1 : -1;
}

/* A reactor polled by a test thread and then given a thread of its own is
 * current on the new thread, and no longer on the old one. */
static void reactor_changes_hands(void **state)
{
	(void)state;
	struct tnd_reactor *r;
	assert_int_equal(tnd_reactor_create(0, 64, &r), 0);
	assert_false(tnd_reactor_is_current(r));
	tnd_reactor_poll(r, 0);
	assert_true(tnd_reactor_is_current(r));
	assert_int_equal(tnd_reactor_start(r), 0);
	struct current_probe p = { .msg.fn = current_fn, .r = r };
	tnd_reactor_send(r, &p.msg);
	for (int i = 0; i < 2000 && __atomic_load_n(&p.seen, __ATOMIC_ACQUIRE) == 0; i++)
		usleep(1000);
	assert_int_equal(__atomic_load_n(&p.seen, __ATOMIC_ACQUIRE), 1);
	assert_false(tnd_reactor_is_current(r));
	tnd_reactor_stop(r);
	tnd_reactor_join(r);
	tnd_reactor_destroy(r);
}

/* ---- a reactor pinned to a CPU ---- */

struct pin_probe {
	struct tnd_msg msg;
	struct tnd_reactor *r;
	struct tnd_uring_op nop_op;
	int cpu_seen;           /* where the reactor's thread ran the message */
	int mask_cpus;          /* CPUs in its affinity mask */
	pid_t tid;
	int nop_res;
	int done;
};

static void pin_nop_done(struct tnd_uring_op *op, int res, unsigned flags)
{
	(void)flags;
	struct pin_probe *p = tnd_container_of(op, struct pin_probe, nop_op);
	p->nop_res = res;
	__atomic_store_n(&p->done, 1, __ATOMIC_RELEASE);
}

static void pin_fn(struct tnd_msg *m)
{
	struct pin_probe *p = tnd_container_of(m, struct pin_probe, msg);
	cpu_set_t set;
	p->cpu_seen = sched_getcpu();
	p->mask_cpus = pthread_getaffinity_np(pthread_self(), sizeof(set), &set) == 0 ?
			       CPU_COUNT(&set) : -1;
	p->tid = gettid();
	/* A request io_uring must give to a worker thread: the reactor's
	 * thread makes its first io-wq worker now. */
	p->nop_op.cb = pin_nop_done;
	struct io_uring_sqe *sqe = tnd_reactor_sqe(p->r, &p->nop_op);
	io_uring_prep_nop(sqe);
	io_uring_sqe_set_flags(sqe, IOSQE_ASYNC);
}

/* The CPUs one of our threads may run on, as /proc shows them ("" if gone). */
static void task_cpus(const char *comm, char *out, size_t len)
{
	char path[64], buf[256];
	out[0] = 0;
	snprintf(path, sizeof(path), "/proc/self/task");
	DIR *d = opendir(path);
	assert_non_null(d);
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%.20s/comm", e->d_name);
		FILE *f = fopen(path, "r");
		if (!f)
			continue;
		bool match = fgets(buf, sizeof(buf), f) && strncmp(buf, comm, strlen(comm)) == 0 &&
			     (buf[strlen(comm)] == '\n' || buf[strlen(comm)] == 0);
		fclose(f);
		if (!match)
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%.20s/status", e->d_name);
		f = fopen(path, "r");
		assert_non_null(f);
		while (fgets(buf, sizeof(buf), f))
			if (sscanf(buf, "Cpus_allowed_list: %63s", out) == 1)
				break;
		fclose(f);
		break;
	}
	closedir(d);
}

/* tnd_reactor_set_cpu: the reactor's thread runs on that CPU alone, and so
 * do the io_uring workers it starts (inherited, not set after the fact);
 * a CPU the process may not use is refused at start. */
static void reactor_pinned_with_its_workers(void **state)
{
	(void)state;
	cpu_set_t allowed;
	assert_int_equal(sched_getaffinity(0, sizeof(allowed), &allowed), 0);
	int cpu = -1;
	for (int c = 0; c < CPU_SETSIZE; c++)
		if (CPU_ISSET(c, &allowed))
			cpu = c;    /* the last: not where a new thread lands anyway */
	assert_true(cpu >= 0);

	struct tnd_reactor *r;
	assert_int_equal(tnd_reactor_create(0, 64, &r), 0);
	tnd_reactor_set_cpu(r, cpu);
	assert_int_equal(tnd_reactor_start(r), 0);
	struct pin_probe p = { .msg.fn = pin_fn, .r = r, .cpu_seen = -2 };
	tnd_reactor_send(r, &p.msg);
	for (int i = 0; i < 5000 && !__atomic_load_n(&p.done, __ATOMIC_ACQUIRE); i++)
		usleep(1000);
	assert_int_equal(__atomic_load_n(&p.done, __ATOMIC_ACQUIRE), 1);
	assert_int_equal(p.nop_res, 0);
	assert_int_equal(p.cpu_seen, cpu);
	assert_int_equal(p.mask_cpus, 1);
	char comm[32], cpus[64], want[16];
	snprintf(comm, sizeof(comm), "iou-wrk-%d", (int)p.tid);
	snprintf(want, sizeof(want), "%d", cpu);
	task_cpus(comm, cpus, sizeof(cpus));
	assert_string_equal(cpus, want);
	tnd_reactor_stop(r);
	tnd_reactor_join(r);
	tnd_reactor_destroy(r);

	int banned = -1;
	for (int c = CPU_SETSIZE - 1; c >= 0 && banned < 0; c--)
		if (!CPU_ISSET(c, &allowed))
			banned = c;
	if (banned < 0)
		return;
	assert_int_equal(tnd_reactor_create(0, 64, &r), 0);
	tnd_reactor_set_cpu(r, banned);
	assert_int_equal(tnd_reactor_start(r), -EINVAL);
	tnd_reactor_destroy(r);
}

/* ---- a reactor on its own thread, after a test thread had it ----
 * Guards what a change of the ring's setup (single-issuer rings, deferred
 * task work) must keep: hand-over between threads in both directions. */

struct own_probe {
	struct tnd_reactor *r;
	struct nop_ctx nop;             /* queued before start */
	int nop_current;
	struct tnd_uring_op read_op;
	int pipe_rd;
	char buf[16];
	int read_res;                   /* 0: not yet */
	int read_current;
	struct tnd_timer timer;
	uint64_t timer_armed_ns, timer_fired_ns;
	int timer_current;
	struct tnd_msg arm_msg;
	int armed;
	int msgs, last_seq, out_of_order;
};

static void own_nop_done(struct tnd_uring_op *op, int res, unsigned flags)
{
	struct nop_ctx *c = tnd_container_of(op, struct nop_ctx, op);
	struct own_probe *p = tnd_container_of(c, struct own_probe, nop);
	nop_done(op, res, flags);
	__atomic_store_n(&p->nop_current, tnd_reactor_is_current(p->r) ? 1 : -1, __ATOMIC_RELEASE);
}

static void own_read_done(struct tnd_uring_op *op, int res, unsigned flags)
{
	(void)flags;
	struct own_probe *p = tnd_container_of(op, struct own_probe, read_op);
	p->read_current = tnd_reactor_is_current(p->r) ? 1 : -1;
	__atomic_store_n(&p->read_res, res == 0 ? -1000 : res, __ATOMIC_RELEASE);
}

static void own_timer_fn(struct tnd_timer *t)
{
	struct own_probe *p = tnd_container_of(t, struct own_probe, timer);
	p->timer_current = tnd_reactor_is_current(p->r) ? 1 : -1;
	__atomic_store_n(&p->timer_fired_ns, tnd_now_ns(), __ATOMIC_RELEASE);
}

static void own_arm_read(struct own_probe *p)
{
	struct io_uring_sqe *sqe = tnd_reactor_sqe(p->r, &p->read_op);
	assert_non_null(sqe);
	io_uring_prep_read(sqe, p->pipe_rd, p->buf, sizeof(p->buf), 0);
}

static void own_arm_fn(struct tnd_msg *m)
{
	struct own_probe *p = tnd_container_of(m, struct own_probe, arm_msg);
	own_arm_read(p);
	p->timer_armed_ns = tnd_now_ns();
	tnd_reactor_timer_arm(p->r, &p->timer, 20 * 1000000ull);
	__atomic_store_n(&p->armed, 1, __ATOMIC_RELEASE);
}

struct seq_msg {
	struct tnd_msg msg;
	struct own_probe *p;
	int seq;
};

static void seq_fn(struct tnd_msg *m)
{
	struct seq_msg *s = tnd_container_of(m, struct seq_msg, msg);
	if (s->seq != s->p->last_seq + 1 || !tnd_reactor_is_current(s->p->r))
		s->p->out_of_order++;
	s->p->last_seq = s->seq;
	__atomic_add_fetch(&s->p->msgs, 1, __ATOMIC_RELEASE);
}

/* A probe with its own reactor; fds[0] (its read side) and fds[1] a new pipe. */
static struct own_probe *own_probe_new(int fds[2])
{
	struct own_probe *p = calloc(1, sizeof(*p));
	assert_non_null(p);
	assert_int_equal(tnd_reactor_create(0, 64, &p->r), 0);
	assert_int_equal(pipe(fds), 0);
	p->pipe_rd = fds[0];
	p->read_op.cb = own_read_done;
	return p;
}

/* Wait up to 2 s for *v to become nonzero. */
static int wait_set(int *v)
{
	for (int i = 0; i < 2000 && __atomic_load_n(v, __ATOMIC_ACQUIRE) == 0; i++)
		usleep(1000);
	return __atomic_load_n(v, __ATOMIC_ACQUIRE);
}

/* A started reactor runs, on its thread: an SQE queued before the start,
 * a pipe read completed by another thread's write, a timer no earlier than
 * due, and one sender's messages in order. Stopped, it can be polled by
 * the test thread again. */
static void reactor_own_thread_runs_io_messages_timers(void **state)
{
	(void)state;
	int fds[2];
	struct own_probe *p = own_probe_new(fds);
	p->timer.fn = own_timer_fn;
	p->last_seq = -1;
	p->nop.op.cb = own_nop_done;
	struct io_uring_sqe *sqe = tnd_reactor_sqe(p->r, &p->nop.op);
	assert_non_null(sqe);
	io_uring_prep_nop(sqe);

	assert_int_equal(tnd_reactor_start(p->r), 0);
	p->arm_msg.fn = own_arm_fn;
	tnd_reactor_send(p->r, &p->arm_msg);
	enum { NMSG = 2000 };
	struct seq_msg *m = calloc(NMSG, sizeof(*m));
	for (int i = 0; i < NMSG; i++) {
		m[i] = (struct seq_msg){ .msg.fn = seq_fn, .p = p, .seq = i };
		tnd_reactor_send(p->r, &m[i].msg);
	}
	assert_int_equal(wait_set(&p->armed), 1);
	usleep(2000);
	assert_int_equal(write(fds[1], "tandem", 6), 6);

	assert_int_equal(wait_set(&p->nop_current), 1);
	assert_int_equal(p->nop.res, 0);
	assert_int_equal(p->nop.calls, 1);
	assert_int_equal(wait_set(&p->read_res), 6);
	assert_memory_equal(p->buf, "tandem", 6);
	assert_int_equal(p->read_current, 1);
	for (int i = 0; i < 2000 && __atomic_load_n(&p->timer_fired_ns, __ATOMIC_ACQUIRE) == 0; i++)
		usleep(1000);
	uint64_t fired = __atomic_load_n(&p->timer_fired_ns, __ATOMIC_ACQUIRE);
	assert_true(fired >= p->timer_armed_ns + 20 * 1000000ull);
	assert_true(fired < p->timer_armed_ns + 1000 * 1000000ull);
	assert_int_equal(p->timer_current, 1);
	for (int i = 0; i < 2000 && __atomic_load_n(&p->msgs, __ATOMIC_ACQUIRE) < NMSG; i++)
		usleep(1000);
	assert_int_equal(__atomic_load_n(&p->msgs, __ATOMIC_ACQUIRE), NMSG);
	assert_int_equal(p->out_of_order, 0);
	tnd_reactor_stop(p->r);
	tnd_reactor_join(p->r);

	/* Back on this thread: I/O still runs. */
	p->read_res = 0;
	own_arm_read(p);
	assert_int_equal(write(fds[1], "again", 5), 5);
	for (int i = 0; i < 100 && p->read_res == 0; i++)
		assert_true(tnd_reactor_poll(p->r, 100) >= 0);
	assert_int_equal(p->read_res, 5);
	assert_memory_equal(p->buf, "again", 5);
	assert_int_equal(p->read_current, 1);

	tnd_reactor_destroy(p->r);
	close(fds[0]);
	close(fds[1]);
	free(m);
	free(p);
}

/* A reactor started while the thread that polled it has a read in flight
 * completes that read on the reactor's thread. */
static void reactor_started_with_io_in_flight_keeps_it(void **state)
{
	(void)state;
	int fds[2];
	struct own_probe *p = own_probe_new(fds);
	own_arm_read(p);
	assert_true(tnd_reactor_poll(p->r, 0) >= 0);    /* submitted, in flight */
	assert_int_equal(p->read_res, 0);
	assert_int_equal(tnd_reactor_start(p->r), 0);
	usleep(2000);
	assert_int_equal(write(fds[1], "inflight", 8), 8);
	assert_int_equal(wait_set(&p->read_res), 8);
	assert_memory_equal(p->buf, "inflight", 8);
	assert_int_equal(p->read_current, 1);
	tnd_reactor_stop(p->r);
	tnd_reactor_join(p->r);
	tnd_reactor_destroy(p->r);
	close(fds[0]);
	close(fds[1]);
	free(p);
}

/* ---- busy-poll ---- */

struct ping {
	struct tnd_msg msg;
	struct tnd_uring_op op;
	struct tnd_timer timer;
	struct tnd_reactor *r;
	int done;               /* 1 message ran, 2 NOP completed, 3 timer fired */
};

static void ping_timer(struct tnd_timer *t)
{
	struct ping *p = tnd_container_of(t, struct ping, timer);
	__atomic_store_n(&p->done, 3, __ATOMIC_RELEASE);
}

static void ping_nop_done(struct tnd_uring_op *op, int res, unsigned flags)
{
	(void)flags;
	struct ping *p = tnd_container_of(op, struct ping, op);
	assert_int_equal(res, 0);
	p->done = 2;
	/* Shorter than the spin window: the spin must end at the deadline. */
	tnd_reactor_timer_arm(p->r, &p->timer, 20 * 1000);
}

static void ping_fn(struct tnd_msg *m)
{
	struct ping *p = tnd_container_of(m, struct ping, msg);
	p->done = 1;
	struct io_uring_sqe *sqe = tnd_reactor_sqe(p->r, &p->op);
	assert_non_null(sqe);
	io_uring_prep_nop(sqe);
}

/* With busy-poll on, messages, completions and timers (one due before the
 * spin window ends) are all handled, one round trip after another. */
static void reactor_busy_poll_delivers(void **state)
{
	(void)state;
	struct tnd_reactor *r;
	assert_int_equal(tnd_reactor_create(0, 64, &r), 0);
	tnd_reactor_set_busy_poll(r, 500);
	assert_int_equal(tnd_reactor_start(r), 0);
	for (int i = 0; i < 200; i++) {
		struct ping p = { .msg.fn = ping_fn, .op.cb = ping_nop_done,
				  .timer.fn = ping_timer, .r = r };
		tnd_reactor_send(r, &p.msg);
		uint64_t until = tnd_now_ns() + 5000000000ull;
		while (__atomic_load_n(&p.done, __ATOMIC_ACQUIRE) != 3 && tnd_now_ns() < until)
			usleep(i % 2 ? 0 : 200);   /* inside and beyond the window */
		assert_int_equal(__atomic_load_n(&p.done, __ATOMIC_ACQUIRE), 3);
	}
	tnd_reactor_stop(r);
	tnd_reactor_join(r);
	tnd_reactor_destroy(r);
}

static uint64_t thread_cpu_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* An idle reactor does not spin on every wake-up: after one wait longer
 * than the window it sleeps at once, until a short wait re-arms it. */
static void reactor_busy_poll_idle_sleeps(void **state)
{
	(void)state;
	struct tnd_reactor *r;
	assert_int_equal(tnd_reactor_create(0, 64, &r), 0);
	tnd_reactor_set_busy_poll(r, 1000);
	uint64_t cpu0 = thread_cpu_ns(), wall0 = tnd_now_ns();
	/* 100 idle waits of 5 ms: spinning before each would burn 100 ms. */
	for (int i = 0; i < 100; i++)
		assert_true(tnd_reactor_poll(r, 5) >= 0);
	uint64_t cpu = thread_cpu_ns() - cpu0, wall = tnd_now_ns() - wall0;
	assert_true(wall >= 400000000ull);
	assert_true(cpu < 40000000ull);
	tnd_reactor_destroy(r);
}

/* Hinted busy-poll spins only while someone wants it: 100 idle waits of
 * 1 ms with a 1 ms window cost almost no CPU when no one does, about 100 ms
 * of spinning while one user does, and nothing again once it stops. (A
 * wait as long as the window is spun whole, so a wait stretched by a busy
 * machine cannot disarm the spin and make the figures depend on the load.) */
static void reactor_busy_poll_spins_only_when_hinted(void **state)
{
	(void)state;
	struct tnd_reactor *r;
	assert_int_equal(tnd_reactor_create(0, 64, &r), 0);
	tnd_reactor_set_busy_poll_hinted(r, 1000);
	uint64_t n[4], ns[4], cpu[4];
	tnd_reactor_spin_stats(r, &n[0], &ns[0]);
	cpu[0] = thread_cpu_ns();
	for (int phase = 1; phase <= 3; phase++) {
		tnd_reactor_spin_want(r, phase == 2);
		for (int i = 0; i < 100; i++)
			assert_true(tnd_reactor_poll(r, 1) >= 0);
		tnd_reactor_spin_stats(r, &n[phase], &ns[phase]);
		cpu[phase] = thread_cpu_ns();
	}
	/* Unwanted, no wait spins; wanted, every wait spins its whole window
	 * (wall time: on a loaded machine the CPU it gets is another matter). */
	assert_int_equal(n[1] - n[0], 0);
	assert_int_equal(n[2] - n[1], 100);
	assert_true(ns[2] - ns[1] >= 100 * 1000000ull);
	assert_int_equal(n[3] - n[2], 0);
	/* And the spinning is CPU, the sleeping is not. */
	assert_true(cpu[2] - cpu[1] > 2 * (cpu[1] - cpu[0]));
	tnd_reactor_destroy(r);
}

static const struct tnd_volume_ops ops_a = { .type = "a", .ctx_size = 24 };
static const struct tnd_volume_ops ops_b = { .type = "b", .ctx_size = 40 };

static void volume_ctx_slices_do_not_overlap(void **state)
{
	(void)state;
	struct tnd_volume a, b, c;
	tnd_volume_init(&a, &ops_a, NULL);
	tnd_volume_init(&b, &ops_b, &a);
	tnd_volume_init(&c, &ops_a, &b);
	assert_int_equal(a.ctx_offset, 0);
	assert_true(b.ctx_offset >= a.ctx_offset + ops_a.ctx_size);
	assert_true(c.ctx_offset >= b.ctx_offset + ops_b.ctx_size);
	assert_true(c.io_size >= sizeof(struct tnd_io) + c.ctx_offset + ops_a.ctx_size);
	assert_int_equal(b.ctx_offset % 16, 0);
	assert_int_equal(c.ctx_offset % 16, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(crc32c_known_vectors),
		cmocka_unit_test(size_parsing),
		cmocka_unit_test(reactor_runs_completions),
		cmocka_unit_test(reactor_destroy_frees_the_ring),
		cmocka_unit_test(reactor_pinned_with_its_workers),
		cmocka_unit_test(reactor_messages_cross_threads),
		cmocka_unit_test(reactor_wakeups_are_not_lost),
		cmocka_unit_test(reactor_defer_runs_once_per_turn),
		cmocka_unit_test(reactor_defer_self_is_bounded),
		cmocka_unit_test(reactor_timers_fire_in_order_and_cancel),
		cmocka_unit_test(volume_ctx_slices_do_not_overlap),
		cmocka_unit_test(reactor_changes_hands),
		cmocka_unit_test(reactor_own_thread_runs_io_messages_timers),
		cmocka_unit_test(reactor_started_with_io_in_flight_keeps_it),
		cmocka_unit_test(reactor_busy_poll_delivers),
		cmocka_unit_test(reactor_busy_poll_idle_sleeps),
		cmocka_unit_test(reactor_busy_poll_spins_only_when_hinted),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
