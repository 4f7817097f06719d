/*
 * The io_uring event loop; see tnd_reactor.h for the contract.
 *
 * Cross-thread messages use a Treiber stack: senders CAS-push, the reactor
 * swaps the whole stack out and reverses it so messages from one sender run
 * in the order sent. A sender that pushes onto an empty stack writes the
 * eventfd; the reactor keeps one read armed on it. A push onto a non-empty
 * stack needs no wake-up, because whoever made it non-empty already woke
 * the reactor and the reactor drains the stack after every wait.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "tnd_common.h"
#include "tnd_reactor.h"

struct tnd_reactor {
	struct io_uring ring;
	unsigned index;

	int efd;
	uint64_t efd_buf;
	struct tnd_uring_op efd_op;
	bool efd_armed;
	_Atomic(struct tnd_msg *) inbox;
	/* Set while the polling thread blocks in the kernel (see "Wake-ups"
	 * at tnd_reactor_send): only then does a sender write the eventfd. */
	atomic_bool sleeping;

	atomic_bool stop;
	bool thread_started;
	pthread_t thread;
	/* The thread that last polled it, read from any thread by
	 * tnd_reactor_is_current(). Atomic because the reactor may change hands
	 * (a test polls it, then gives it a thread of its own). pthread_t is an
	 * integer on Linux, so the atomic is lock-free. */
	_Atomic pthread_t owner;
	atomic_bool owner_set;

	unsigned ring_flags;            /* IORING_SETUP_* the ring got */
	int cpu;                        /* tnd_reactor_set_cpu(); -1: not pinned */
	/* Busy-poll window (0: off) and whether the next wait spins first;
	 * with spin_hinted, only while spin_wanted > 0. */
	uint64_t spin_ns;
	bool spin_armed;
	bool spin_hinted;
	unsigned spin_wanted;
	unsigned spin_probe;            /* disarmed: every 64th wait spins anyway */
	_Atomic uint64_t spins, spin_total_ns; /* tnd_reactor_spin_stats; this thread writes */

	/* Deferred work for the next loop turn, FIFO. */
	struct tnd_defer *defer_head, **defer_tail;

	/* 1-based binary min-heap of armed timers, by deadline. */
	struct tnd_timer **heap;
	unsigned heap_len;
	unsigned heap_cap;
};

uint64_t tnd_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void efd_read_done(struct tnd_uring_op *op, int res, unsigned flags)
{
	(void)res;
	(void)flags;
	struct tnd_reactor *r = tnd_container_of(op, struct tnd_reactor, efd_op);
	r->efd_armed = false;
}

int tnd_reactor_create(unsigned index, unsigned entries, struct tnd_reactor **out)
{
	struct tnd_reactor *r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->index = index;
	r->cpu = -1;
	r->efd_op.cb = efd_read_done;
	r->defer_tail = &r->defer_head;

	/*
	 * COOP_TASKRUN: a completion's task work (a socket's recv, say) waits
	 * for our next kernel entry instead of interrupting the thread; the
	 * reactor enters the kernel every loop turn anyway, so this saves the
	 * interrupts. TASKRUN_FLAG shows pending work in the SQ flags, which
	 * liburing's peek and the busy-poll check. Kernels before 5.19 lack
	 * both: run without.
	 */
	unsigned fl = IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG;
	int ret = io_uring_queue_init(entries, &r->ring, fl);
	if (ret == -EINVAL) {
		fl = 0;
		ret = io_uring_queue_init(entries, &r->ring, fl);
	}
	r->ring_flags = fl;
	if (ret < 0)
		goto err_free;
	r->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (r->efd < 0) {
		ret = -errno;
		goto err_ring;
	}
	*out = r;
	return 0;

err_ring:
	io_uring_queue_exit(&r->ring);
err_free:
	free(r);
	return ret;
}

void tnd_reactor_destroy(struct tnd_reactor *r)
{
	if (!r)
		return;
	/*
	 * Cancel what is still in flight (the wake-up read on the eventfd at
	 * least) before the ring goes. A ring closed with a poll-armed read
	 * on it is not freed until the process exits (kernel 6.18: about 10
	 * KiB of slab per ring, io_kiocb and the ring's context), and the
	 * crash tests make and drop reactors by the hundred thousand. The
	 * kernel cancels poll-armed requests while it takes the SQE, so no
	 * wait is needed; nothing will reap the completions, the ring goes.
	 */
	struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
	if (!sqe) {
		io_uring_submit(&r->ring);
		sqe = io_uring_get_sqe(&r->ring);
	}
	if (sqe) {
		io_uring_prep_cancel(sqe, NULL, IORING_ASYNC_CANCEL_ANY);
		io_uring_sqe_set_data64(sqe, 0);
		io_uring_submit(&r->ring);
	}
	io_uring_queue_exit(&r->ring);
	close(r->efd);
	free(r->heap);
	free(r);
}

unsigned tnd_reactor_index(const struct tnd_reactor *r)
{
	return r->index;
}

struct io_uring_sqe *tnd_reactor_sqe(struct tnd_reactor *r, struct tnd_uring_op *op)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
	if (!sqe) {
		io_uring_submit(&r->ring);
		sqe = io_uring_get_sqe(&r->ring);
		if (!sqe)
			return NULL;
	}
	io_uring_sqe_set_data(sqe, op);
	return sqe;
}

int tnd_reactor_flush(struct tnd_reactor *r)
{
	int ret = io_uring_submit(&r->ring);
	return ret < 0 ? ret : 0;
}

bool tnd_reactor_is_current(const struct tnd_reactor *r)
{
	return atomic_load_explicit(&r->owner_set, memory_order_acquire) &&
	       pthread_equal(atomic_load_explicit(&r->owner, memory_order_relaxed),
			     pthread_self());
}

/*
 * Wake-ups. A message needs the eventfd written only when the receiving
 * thread is blocked in the kernel: a reactor that is running or spinning
 * drains its inbox on its next loop turn anyway, and under load (writes
 * forwarded to a volume's home reactor, completions sent back) that is
 * most messages, each of which cost a write(2) before. The two sides form
 * a Dekker pair: the sender pushes, then (full fence) reads `sleeping`;
 * the poller sets `sleeping`, then (full fence) looks at the inbox before
 * it blocks and does not block if anything is there. Whatever the
 * interleaving, either the sender sees it sleeping and writes, or the
 * poller sees the message and stays up.
 */
void tnd_reactor_send(struct tnd_reactor *r, struct tnd_msg *msg)
{
	struct tnd_msg *head = atomic_load_explicit(&r->inbox, memory_order_relaxed);
	do {
		msg->next = head;
	} while (!atomic_compare_exchange_weak_explicit(&r->inbox, &head, msg,
							memory_order_seq_cst,
							memory_order_relaxed));
	atomic_thread_fence(memory_order_seq_cst);
	if (head == NULL && atomic_load_explicit(&r->sleeping, memory_order_relaxed)) {
		uint64_t one = 1;
		/* EAGAIN means the counter is saturated: already awake. */
		(void)!write(r->efd, &one, sizeof(one));
	}
}

static int drain_inbox(struct tnd_reactor *r)
{
	struct tnd_msg *m = atomic_exchange_explicit(&r->inbox, NULL, memory_order_acquire);
	struct tnd_msg *rev = NULL;
	int n = 0;
	while (m) {
		struct tnd_msg *next = m->next;
		m->next = rev;
		rev = m;
		m = next;
	}
	while (rev) {
		struct tnd_msg *next = rev->next;
		rev->fn(rev);
		rev = next;
		n++;
	}
	return n;
}

/* ---- deferred work ---- */

void tnd_reactor_defer(struct tnd_reactor *r, struct tnd_defer *d)
{
	if (d->queued)
		return;
	d->queued = true;
	d->next = NULL;
	*r->defer_tail = d;
	r->defer_tail = &d->next;
}

/*
 * Run what is deferred, including what those functions defer in turn (a
 * completed write queues its response, whose send is deferred too), for a
 * bounded number of rounds so an entry that keeps deferring itself cannot
 * starve the ring; what is left runs next turn.
 */
#define DEFER_ROUNDS 4

static int run_deferred(struct tnd_reactor *r)
{
	int n = 0;
	for (int round = 0; round < DEFER_ROUNDS && r->defer_head; round++) {
		struct tnd_defer *d = r->defer_head;
		r->defer_head = NULL;
		r->defer_tail = &r->defer_head;
		while (d) {
			struct tnd_defer *next = d->next;
			d->queued = false;
			d->fn(d);
			d = next;
			n++;
		}
	}
	return n;
}

/* ---- timers: a min-heap keyed by deadline ---- */

static void heap_swap(struct tnd_reactor *r, unsigned a, unsigned b)
{
	struct tnd_timer *t = r->heap[a];
	r->heap[a] = r->heap[b];
	r->heap[b] = t;
	r->heap[a]->heap_idx = a;
	r->heap[b]->heap_idx = b;
}

static void heap_up(struct tnd_reactor *r, unsigned i)
{
	while (i > 1 && r->heap[i / 2]->deadline_ns > r->heap[i]->deadline_ns) {
		heap_swap(r, i, i / 2);
		i /= 2;
	}
}

static void heap_down(struct tnd_reactor *r, unsigned i)
{
	for (;;) {
		unsigned l = 2 * i, m = i;
		if (l <= r->heap_len && r->heap[l]->deadline_ns < r->heap[m]->deadline_ns)
			m = l;
		if (l + 1 <= r->heap_len && r->heap[l + 1]->deadline_ns < r->heap[m]->deadline_ns)
			m = l + 1;
		if (m == i)
			return;
		heap_swap(r, i, m);
		i = m;
	}
}

void tnd_reactor_timer_cancel(struct tnd_reactor *r, struct tnd_timer *t)
{
	unsigned i = t->heap_idx;
	if (i == 0)
		return;
	t->heap_idx = 0;
	if (i != r->heap_len) {
		r->heap[i] = r->heap[r->heap_len];
		r->heap[i]->heap_idx = i;
		r->heap_len--;
		heap_down(r, i);
		heap_up(r, i);
	} else {
		r->heap_len--;
	}
}

void tnd_reactor_timer_arm(struct tnd_reactor *r, struct tnd_timer *t, uint64_t delay_ns)
{
	tnd_reactor_timer_cancel(r, t);
	if (r->heap_len + 1 >= r->heap_cap) {
		unsigned cap = r->heap_cap ? r->heap_cap * 2 : 64;
		struct tnd_timer **h = realloc(r->heap, cap * sizeof(*h));
		if (!h)
			abort(); /* timers guard liveness; running without one is worse */
		r->heap = h;
		r->heap_cap = cap;
	}
	t->deadline_ns = tnd_now_ns() + delay_ns;
	t->heap_idx = ++r->heap_len;
	r->heap[t->heap_idx] = t;
	heap_up(r, t->heap_idx);
}

static int run_timers(struct tnd_reactor *r)
{
	int n = 0;
	uint64_t now = tnd_now_ns();
	while (r->heap_len > 0 && r->heap[1]->deadline_ns <= now) {
		struct tnd_timer *t = r->heap[1];
		tnd_reactor_timer_cancel(r, t);
		t->fn(t);
		n++;
	}
	return n;
}

/* ---- the loop ---- */

void tnd_reactor_set_busy_poll(struct tnd_reactor *r, uint32_t usec)
{
	r->spin_ns = (uint64_t)usec * 1000;
	r->spin_armed = true;
	r->spin_hinted = false;
}

void tnd_reactor_set_busy_poll_hinted(struct tnd_reactor *r, uint32_t usec)
{
	tnd_reactor_set_busy_poll(r, usec);
	r->spin_hinted = true;
}

void tnd_reactor_spin_stats(const struct tnd_reactor *r, uint64_t *spins, uint64_t *spin_ns)
{
	*spins = atomic_load_explicit(&r->spins, memory_order_relaxed);
	*spin_ns = atomic_load_explicit(&r->spin_total_ns, memory_order_relaxed);
}

void tnd_reactor_spin_want(struct tnd_reactor *r, bool on)
{
	if (on)
		r->spin_wanted++;
	else if (r->spin_wanted > 0)
		r->spin_wanted--;
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ volatile("yield");
#endif
}

/*
 * Busy-poll: watch the CQ and the inbox for up to spin_ns (less when a
 * timer is due sooner) instead of sleeping. A plain ring needs no system
 * call for this: a completion's task work interrupts the spinning thread
 * and runs on its way back to user space. With COOP_TASKRUN that work
 * waits for the next kernel entry, which the ring flags as IORING_SQ_TASKRUN:
 * then enter to run it. Returns true when there is something to handle;
 * *spun is how long it spun.
 */
static bool spin(struct tnd_reactor *r, int64_t wait_ns, uint64_t *spun)
{
	uint64_t start = tnd_now_ns(), limit = r->spin_ns, now = start;
	if (wait_ns > 0 && (uint64_t)wait_ns < limit)
		limit = (uint64_t)wait_ns;
	for (;;) {
		if ((r->ring_flags & IORING_SETUP_TASKRUN_FLAG) &&
		    (IO_URING_READ_ONCE(*r->ring.sq.kflags) & IORING_SQ_TASKRUN))
			io_uring_get_events(&r->ring);
		if (io_uring_cq_ready(&r->ring) ||
		    atomic_load_explicit(&r->inbox, memory_order_relaxed))
			break;
		now = tnd_now_ns();
		if (now - start >= limit)
			break;
		cpu_relax();
	}
	*spun = now - start;
	/* Plain stores, no locked add: only this thread writes them. */
	atomic_store_explicit(&r->spins, atomic_load_explicit(&r->spins, memory_order_relaxed) + 1,
			      memory_order_relaxed);
	atomic_store_explicit(&r->spin_total_ns,
			      atomic_load_explicit(&r->spin_total_ns, memory_order_relaxed) + *spun,
			      memory_order_relaxed);
	return io_uring_cq_ready(&r->ring) ||
	       atomic_load_explicit(&r->inbox, memory_order_relaxed);
}

static int reap(struct tnd_reactor *r)
{
	struct io_uring_cqe *cqe;
	int n = 0;
	while (io_uring_peek_cqe(&r->ring, &cqe) == 0) {
		struct tnd_uring_op *op = io_uring_cqe_get_data(cqe);
		int res = cqe->res;
		unsigned flags = cqe->flags;
		io_uring_cqe_seen(&r->ring, cqe);
		if (op)
			op->cb(op, res, flags);
		n++;
	}
	return n;
}

int tnd_reactor_poll(struct tnd_reactor *r, int timeout_ms)
{
	pthread_t self = pthread_self();
	if (!atomic_load_explicit(&r->owner_set, memory_order_relaxed) ||
	    !pthread_equal(atomic_load_explicit(&r->owner, memory_order_relaxed), self)) {
		atomic_store_explicit(&r->owner, self, memory_order_relaxed);
		atomic_store_explicit(&r->owner_set, true, memory_order_release);
	}

	if (!r->efd_armed) {
		struct io_uring_sqe *sqe = tnd_reactor_sqe(r, &r->efd_op);
		if (!sqe)
			return -EBUSY;
		io_uring_prep_read(sqe, r->efd, &r->efd_buf, sizeof(r->efd_buf), 0);
		r->efd_armed = true;
	}

	/* Work deferred from outside the loop (a submit from the polling
	 * thread between turns) is an event: run it and do not sleep. */
	int n = run_deferred(r);

	int64_t wait_ns = timeout_ms < 0 ? -1 : (int64_t)timeout_ms * 1000000;
	if (n > 0 || atomic_load_explicit(&r->inbox, memory_order_relaxed) ||
	    io_uring_cq_ready(&r->ring) || r->defer_head)
		wait_ns = 0;
	if (r->heap_len > 0) {
		uint64_t now = tnd_now_ns();
		int64_t until = r->heap[1]->deadline_ns > now ? (int64_t)(r->heap[1]->deadline_ns - now) : 0;
		if (wait_ns < 0 || until < wait_ns)
			wait_ns = until;
	}

	int ret = 0;
	bool ready = false;
	bool hinted = r->spin_wanted > 0;
	/* Disarmed, a wait still spins now and then: a wait without the spin
	 * (a sleep and a wake-up) can be longer than twice the window even
	 * when spinning would catch the next event, and would never re-arm. */
	bool spin_now = wait_ns != 0 && r->spin_ns && (hinted || !r->spin_hinted) &&
			(r->spin_armed || (++r->spin_probe & 63) == 0);
	if (spin_now) {
		ret = io_uring_submit(&r->ring);
		if (ret < 0 && ret != -EBUSY && ret != -EAGAIN && ret != -EINTR)
			return ret;
		uint64_t spun;
		ready = spin(r, wait_ns, &spun);
		if (!ready && wait_ns > 0)
			wait_ns = wait_ns > (int64_t)spun ? wait_ns - (int64_t)spun : 0;
	}
	uint64_t t0 = r->spin_ns ? tnd_now_ns() : 0;
	if (ready) {
		/* The spin saw an event: no system call, and worth doing again. */
		r->spin_armed = true;
	} else if (wait_ns == 0) {
		ret = io_uring_submit(&r->ring);
	} else {
		/* See "Wake-ups": announce the sleep, then look once more. */
		atomic_store_explicit(&r->sleeping, true, memory_order_relaxed);
		atomic_thread_fence(memory_order_seq_cst);
		if (atomic_load_explicit(&r->inbox, memory_order_relaxed)) {
			ret = io_uring_submit(&r->ring);
		} else {
			struct io_uring_cqe *cqe;
			struct __kernel_timespec ts = {
				.tv_sec = wait_ns / 1000000000,
				.tv_nsec = wait_ns % 1000000000,
			};
			ret = io_uring_submit_and_wait_timeout(&r->ring, &cqe, 1,
							       wait_ns < 0 ? NULL : &ts, NULL);
		}
		atomic_store_explicit(&r->sleeping, false, memory_order_relaxed);
	}
	if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EBUSY && ret != -EAGAIN)
		return ret;
	/* Spin before the next sleep only if this wait was short: a reactor
	 * with nothing to do pays one spin window per idle spell, not one per
	 * wake-up. */
	if (r->spin_ns && !ready && wait_ns != 0 && (hinted || !r->spin_hinted))
		r->spin_armed = tnd_now_ns() - t0 < 2 * r->spin_ns;

	n += reap(r);
	n += drain_inbox(r);
	n += run_timers(r);
	/* What this turn's completions deferred (responses to send, inline
	 * writes to complete) runs now; its SQEs go out with the next submit. */
	n += run_deferred(r);
	return n;
}

static void *reactor_thread(void *arg)
{
	struct tnd_reactor *r = arg;
	while (!atomic_load(&r->stop)) {
		int ret = tnd_reactor_poll(r, -1);
		if (ret < 0) {
			tnd_err("reactor", "reactor %u: ring failed: %s", r->index, strerror(-ret));
			break;
		}
	}
	return NULL;
}

static void stop_msg(struct tnd_msg *m)
{
	free(m);
}

void tnd_reactor_set_cpu(struct tnd_reactor *r, int cpu)
{
	r->cpu = cpu;
}

int tnd_reactor_start(struct tnd_reactor *r)
{
	pthread_attr_t attr;
	int ret = pthread_attr_init(&attr);
	if (ret)
		return -ret;
	if (r->cpu >= 0) {
		if (r->cpu >= CPU_SETSIZE) {
			ret = EINVAL;
			goto out;
		}
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET(r->cpu, &set);
		/* In the attributes, not set by the thread itself: nothing of
		 * it (its io_uring workers above all) ever runs elsewhere. */
		ret = pthread_attr_setaffinity_np(&attr, sizeof(set), &set);
		if (ret)
			goto out;
	}
	ret = pthread_create(&r->thread, &attr, reactor_thread, r);
	if (ret == 0)
		r->thread_started = true;
out:
	pthread_attr_destroy(&attr);
	return -ret;
}

void tnd_reactor_stop(struct tnd_reactor *r)
{
	atomic_store(&r->stop, true);
	/* A message wakes the loop so it sees the flag. */
	struct tnd_msg *m = calloc(1, sizeof(*m));
	if (m) {
		m->fn = stop_msg;
		tnd_reactor_send(r, m);
	} else {
		uint64_t one = 1;
		(void)!write(r->efd, &one, sizeof(one));
	}
}

void tnd_reactor_join(struct tnd_reactor *r)
{
	if (r->thread_started) {
		pthread_join(r->thread, NULL);
		r->thread_started = false;
	}
}
