/*
 * tnd_reactor.h — one io_uring event loop per thread.
 *
 * A reactor owns one io_uring and runs on exactly one thread. Everything
 * tandem does on the data path — socket receive and send, disk reads and
 * writes, fsync, timers — is a completion on some reactor's ring. A
 * connection, a volume's private state or a buffer pool belongs to one
 * reactor for its life; nothing on the hot path takes a sleeping lock.
 *
 * Submitting work: embed a struct tnd_uring_op in your own object, fill in
 * its cb, take an SQE with tnd_reactor_sqe() (which binds the op as the
 * SQE's user_data) and prepare it with the ordinary io_uring_prep_*()
 * helpers. The reactor submits pending SQEs in one batch each loop turn and
 * calls op->cb(op, cqe->res, cqe->flags) on its own thread. The op must stay
 * alive until its callback has run (for multishot requests: until a
 * completion without IORING_CQE_F_MORE).
 *
 * Crossing threads: tnd_reactor_send() is the only call that may be made
 * from another thread. It pushes an intrusive message onto a lock-free
 * stack and wakes the reactor through an eventfd; the message's fn runs on
 * the reactor's thread. The sender owns the message memory until fn runs;
 * fn then owns it.
 *
 * Deferred work: tnd_reactor_defer() runs a function once, on the
 * reactor's thread, at the end of the current loop turn (after the turn's
 * completions, messages and timers), before the ring is next submitted. It lets a producer that gets called many times in one turn
 * (a connection queueing one response per completed command) act once for
 * all of them (one sendmsg carrying every response), instead of once for
 * the first and again for the rest.
 *
 * Timers are kept in user space (a min-heap) and bound the ring's wait, so
 * that cancelling a timer is a plain function call with no kernel round
 * trip. They are for seconds-scale work (NOP-In pings, GC ticks), not for
 * I/O completion.
 *
 * Busy-poll (off by default): before sleeping, a reactor can spin for a
 * few microseconds watching its completion queue, so that a completion
 * arriving soon is handled without a sleep and a wake-up. Where the
 * generator and the target each have a CPU (an otherwise idle machine,
 * and a VM above all, where waking an idle vCPU is costly) this cuts QD1
 * latency; where they share one it only takes CPU from the peer, and it
 * always costs CPU time. It adapts: a wait that lasted longer than twice
 * the window disarms it until a short wait re-arms it, so an idle reactor
 * spends one window per idle spell, not a spinning CPU.
 *
 * Tests drive a reactor deterministically on their own thread with
 * tnd_reactor_poll(); the daemon gives each reactor a thread with
 * tnd_reactor_start().
 */
#ifndef TND_REACTOR_H
#define TND_REACTOR_H

#include <stdbool.h>
#include <stdint.h>
#include <liburing.h>

struct tnd_reactor;
struct tnd_uring_op;

typedef void (*tnd_uring_cb)(struct tnd_uring_op *op, int res, unsigned flags);

struct tnd_uring_op {
	tnd_uring_cb cb;
};

struct tnd_msg;
typedef void (*tnd_msg_fn)(struct tnd_msg *msg);

struct tnd_msg {
	struct tnd_msg *next;   /* private to the reactor */
	tnd_msg_fn fn;
};

struct tnd_defer;
typedef void (*tnd_defer_fn)(struct tnd_defer *d);

struct tnd_defer {
	struct tnd_defer *next; /* private */
	bool queued;            /* private */
	tnd_defer_fn fn;
};

struct tnd_timer;
typedef void (*tnd_timer_fn)(struct tnd_timer *t);

struct tnd_timer {
	uint64_t deadline_ns;   /* private */
	unsigned heap_idx;      /* private; 0 = not armed */
	tnd_timer_fn fn;
};

/* Create a reactor with a ring of @entries SQEs. Returns 0 or -errno. */
int tnd_reactor_create(unsigned index, unsigned entries, struct tnd_reactor **out);

/*
 * Destroy a stopped reactor. Pending messages are dropped without running;
 * in-flight ring operations are abandoned, so callers must have drained
 * their I/O first.
 */
void tnd_reactor_destroy(struct tnd_reactor *r);

unsigned tnd_reactor_index(const struct tnd_reactor *r);

/*
 * Take an SQE bound to @op. Flushes the submission queue if it is full, so
 * it returns NULL only when the ring itself is broken.
 */
struct io_uring_sqe *tnd_reactor_sqe(struct tnd_reactor *r, struct tnd_uring_op *op);

/* Submit what is queued now, without waiting. Returns 0 or -errno. */
int tnd_reactor_flush(struct tnd_reactor *r);

/*
 * Run one loop turn: submit, wait up to @timeout_ms for at least one
 * completion (0: don't wait, -1: wait until a completion, message or timer),
 * then run all completions, messages and expired timers. Returns the number
 * of events handled or -errno.
 */
int tnd_reactor_poll(struct tnd_reactor *r, int timeout_ms);

/*
 * Spin up to @usec microseconds before each sleep (0: never; the default).
 * Call before tnd_reactor_start() or on the reactor's thread.
 */
void tnd_reactor_set_busy_poll(struct tnd_reactor *r, uint32_t usec);

/*
 * The same window, but spent only while some user of the reactor wants
 * it (tnd_reactor_spin_want). Spinning pays where
 * the next event follows the last answer within microseconds and nothing
 * else is in flight: a QD1 initiator. A reactor with a deep queue seldom
 * sleeps, and its brief idle moments are where spinning wastes the CPU
 * that its generator or another reactor could use; so the users that can
 * tell (an iSCSI connection that answered its only command, again and
 * again) say so, and the others never make the reactor spin.
 */
void tnd_reactor_set_busy_poll_hinted(struct tnd_reactor *r, uint32_t usec);

/*
 * A user starts (@on) or stops wanting @r's waits to spin (hinted
 * busy-poll): an iSCSI connection wants it from the answer of its only
 * command to the arrival of the next. Calls pair up. @r's thread only.
 */
void tnd_reactor_spin_want(struct tnd_reactor *r, bool on);

/*
 * Busy-poll accounting: waits that spun, and the wall time they spun (ns).
 * Written by @r's thread, readable from any (relaxed: a snapshot).
 */
void tnd_reactor_spin_stats(const struct tnd_reactor *r, uint64_t *spins, uint64_t *spin_ns);

/*
 * Run the reactor's thread on CPU @cpu only (-1, the default: wherever the
 * scheduler puts it). The thread is created with that mask, before it
 * submits anything, so the io_uring workers the kernel starts for its
 * blocking requests (every buffered write on ext4, fsync) inherit it and
 * run on the same CPU. That is the point: a QD1 write then hands off to
 * its worker and back without waking another CPU, which a VM pays for
 * dearly (bench/results/2026-11-22-vm-session7.md: p50 56 → 46 us). The
 * price is that a reactor can no longer dodge a CPU that something else
 * keeps busy, and its workers no longer spread to idle CPUs: for hosts
 * that give tandem its own cores. Call before tnd_reactor_start().
 */
void tnd_reactor_set_cpu(struct tnd_reactor *r, int cpu);

/* Start a thread that runs tnd_reactor_poll(r, -1) until stopped;
 * -EINVAL if the CPU set with tnd_reactor_set_cpu() is not allowed. */
int tnd_reactor_start(struct tnd_reactor *r);

/* Ask the reactor's loop to stop (any thread); tnd_reactor_join() waits. */
void tnd_reactor_stop(struct tnd_reactor *r);
void tnd_reactor_join(struct tnd_reactor *r);

/* True when called on @r's own thread (or on the test thread polling it). */
bool tnd_reactor_is_current(const struct tnd_reactor *r);

/* Run msg->fn(msg) on @r's thread. Safe from any thread; never fails. */
void tnd_reactor_send(struct tnd_reactor *r, struct tnd_msg *msg);

/*
 * Run d->fn(d) once at the end of @r's current loop turn, or at the start
 * of the next when deferred between turns (reactor thread only). Deferring an entry that is already queued does
 * nothing. What fn defers runs in the same turn, for a few rounds; an
 * entry that defers itself again is run in the next turn at the latest. The caller keeps @d alive until fn ran;
 * entries still queued when the reactor is destroyed are dropped.
 */
void tnd_reactor_defer(struct tnd_reactor *r, struct tnd_defer *d);

/* Arm @t to fire once after @delay_ns (re-arming moves it). Reactor thread only. */
void tnd_reactor_timer_arm(struct tnd_reactor *r, struct tnd_timer *t, uint64_t delay_ns);
void tnd_reactor_timer_cancel(struct tnd_reactor *r, struct tnd_timer *t);

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t tnd_now_ns(void);

#endif
