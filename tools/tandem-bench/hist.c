/*
 * hist.c — log-linear latency histogram for tandem-bench.
 *
 * Bucket i < 16 holds the value i exactly. Above that, a value v with its
 * highest set bit at position m (m >= 4) goes to the bucket chosen by m and
 * the next four bits below it: 16 equal-width buckets per power of two. So
 * the relative width of a bucket is at most 1/16 and reporting its midpoint
 * errs by at most ~3%, which is finer than run-to-run noise on a loopback
 * benchmark, while recording is a count-leading-zeros and an increment.
 */
#include <string.h>

#include "bench.h"

static unsigned bucket_of(uint64_t v)
{
	if (v < BENCH_HIST_SUB)
		return (unsigned)v;
	unsigned msb = 63u - (unsigned)__builtin_clzll(v);
	unsigned sub = (unsigned)(v >> (msb - 4)) & (BENCH_HIST_SUB - 1);
	return (msb - 3) * BENCH_HIST_SUB + sub;
}

/* Midpoint of bucket @i: the value we report for samples that fell in it. */
static uint64_t bucket_mid(unsigned i)
{
	if (i < BENCH_HIST_SUB)
		return i;
	unsigned msb = i / BENCH_HIST_SUB + 3;
	uint64_t sub = i % BENCH_HIST_SUB;
	uint64_t width = 1ull << (msb - 4);
	return ((BENCH_HIST_SUB + sub) << (msb - 4)) + width / 2;
}

void bench_hist_reset(struct bench_hist *h)
{
	memset(h, 0, sizeof(*h));
	h->min = UINT64_MAX;
}

void bench_hist_add(struct bench_hist *h, uint64_t ns)
{
	h->bucket[bucket_of(ns)]++;
	h->count++;
	h->sum += ns;
	if (ns < h->min)
		h->min = ns;
	if (ns > h->max)
		h->max = ns;
}

uint64_t bench_hist_pct(const struct bench_hist *h, double pct)
{
	if (h->count == 0)
		return 0;
	/* The rank of the sample at @pct, 1-based, rounded up (nearest-rank). */
	double want = pct / 100.0 * (double)h->count;
	uint64_t rank = (uint64_t)want;
	if ((double)rank < want)
		rank++;
	if (rank == 0)
		rank = 1;
	uint64_t seen = 0;
	for (unsigned i = 0; i < BENCH_HIST_BUCKETS; i++) {
		seen += h->bucket[i];
		if (seen >= rank) {
			uint64_t v = bucket_mid(i);
			/* Never report outside what was actually observed. */
			if (v > h->max)
				v = h->max;
			if (v < h->min)
				v = h->min;
			return v;
		}
	}
	return h->max;
}

uint64_t bench_hist_mean(const struct bench_hist *h)
{
	return h->count ? h->sum / h->count : 0;
}

void bench_hist_merge(struct bench_hist *dst, const struct bench_hist *src)
{
	for (unsigned i = 0; i < BENCH_HIST_BUCKETS; i++)
		dst->bucket[i] += src->bucket[i];
	dst->count += src->count;
	dst->sum += src->sum;
	if (src->min < dst->min)
		dst->min = src->min;
	if (src->max > dst->max)
		dst->max = src->max;
}
