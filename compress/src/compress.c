/*
 * The LZ4 block codec; see tnd_compress.h for what it decides and why.
 *
 * Per call, cheapest test first: the zero check stops at the first
 * non-zero 64-byte stretch (immediately, for most data); the probe reads
 * 1/16 of the input; only then does LZ4 run, with an output capacity that
 * encodes the one-sector rule.
 *
 * LZ4 state. LZ4_compress_fast_extState() clears its 16 KiB hash table on
 * every call, which costs as much as compressing a random 4 KiB block. The
 * stable streaming API avoids it: LZ4_resetStream_fast() starts a new,
 * independent stream on an initialised state in O(1) (it moves the
 * stream's base offset so that old hash entries fall out of reach), and
 * the first LZ4_compress_fast_continue() of a stream has no dictionary, so
 * its output is plain LZ4 block format that LZ4_decompress_safe() reads.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <lz4.h>

#include "tnd_compress.h"

#define PROBE_STRIDE 512u   /* one window per sector ... */
#define PROBE_WINDOW 32u    /* ... of this many bytes */

struct tnd_compress_ctx {
	LZ4_stream_t lz4;               /* match finder; initialised once at create */
	uint32_t hist[256];             /* probe scratch */
	struct tnd_compress_opts opts;
	struct tnd_compress_stats stats;
};

void tnd_compress_opts_default(struct tnd_compress_opts *o)
{
	*o = (struct tnd_compress_opts){
		.acceleration = 1,
		.probe = true,
		.probe_threshold_pct = 150,
	};
}

int tnd_compress_ctx_create(const struct tnd_compress_opts *o, struct tnd_compress_ctx **out)
{
	struct tnd_compress_opts def;

	if (!o) {
		tnd_compress_opts_default(&def);
		o = &def;
	}
	if (o->acceleration < 1)
		return -EINVAL;

	struct tnd_compress_ctx *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	if (!LZ4_initStream(&c->lz4, sizeof(c->lz4))) {
		/* Only fails on a misaligned or short buffer: a build problem. */
		free(c);
		return -EINVAL;
	}
	c->opts = *o;
	*out = c;
	return 0;
}

void tnd_compress_ctx_destroy(struct tnd_compress_ctx *c)
{
	free(c);
}

bool tnd_compress_is_zero(const void *buf, size_t len)
{
	const unsigned char *p = buf;

	/*
	 * OR eight words together and test once per 64 bytes: the loop body has
	 * no branch per word, so the compiler vectorises it, and non-zero data
	 * (the common case) still leaves after the first 64 bytes.
	 */
	while (len >= 64) {
		uint64_t w[8];
		memcpy(w, p, sizeof(w));
		if (w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7])
			return false;
		p += 64;
		len -= 64;
	}
	while (len--)
		if (*p++)
			return false;
	return true;
}

/*
 * True when the sampled bytes look uniformly random. For n sampled bytes
 * with counts c[i], the number of equal pairs is sum c[i](c[i]-1)/2;
 * uniform bytes give n(n-1)/512 of them on average, skewed data more. The
 * test compares the two, scaled by the threshold, in integers.
 */
static bool probe_looks_random(struct tnd_compress_ctx *c, const unsigned char *in, size_t len)
{
	uint64_t n = 0, sumsq = 0;

	memset(c->hist, 0, sizeof(c->hist));
	for (size_t off = 0; off < len; off += PROBE_STRIDE) {
		const unsigned char *w = in + off;
		for (unsigned i = 0; i < PROBE_WINDOW; i++)
			c->hist[w[i]]++;
		n += PROBE_WINDOW;
	}
	for (unsigned i = 0; i < 256; i++)
		sumsq += (uint64_t)c->hist[i] * c->hist[i];

	/* pairs * 2 = sumsq - n; uniform expectation * 2 = n(n-1)/256. */
	return (sumsq - n) * 256u * 100u < (uint64_t)c->opts.probe_threshold_pct * n * (n - 1);
}

static int account(struct tnd_compress_ctx *c, size_t len, enum tnd_compress_result r, size_t stored)
{
	c->stats.units++;
	c->stats.bytes_in += len;
	c->stats.bytes_out += stored;
	switch (r) {
	case TND_COMPRESS_ZERO:       c->stats.zero++; break;
	case TND_COMPRESS_RAW:        c->stats.raw++; break;
	case TND_COMPRESS_COMPRESSED: c->stats.compressed++; break;
	}
	return (int)r;
}

int tnd_compress_block(struct tnd_compress_ctx *c, const void *in, size_t len,
		       void *out, size_t out_cap, size_t *out_len)
{
	if (len == 0 || len % TND_COMPRESS_BLOCK || len > TND_COMPRESS_MAX_LEN || out_cap == 0)
		return -EINVAL;

	if (tnd_compress_is_zero(in, len))
		return account(c, len, TND_COMPRESS_ZERO, 0);

	if (c->opts.probe && probe_looks_random(c, in, len)) {
		c->stats.probe_rejects++;
		return account(c, len, TND_COMPRESS_RAW, len);
	}

	/*
	 * The one-sector rule as LZ4's output limit: anything longer than
	 * len - 512 would round up to len and save nothing, so LZ4 may give up
	 * as soon as it gets there (it returns 0).
	 */
	size_t cap = len - TND_COMPRESS_SECTOR;
	if (out_cap < cap)
		cap = out_cap;
	LZ4_resetStream_fast(&c->lz4);
	int n = LZ4_compress_fast_continue(&c->lz4, in, out, (int)len, (int)cap,
					   c->opts.acceleration);
	if (n <= 0)
		return account(c, len, TND_COMPRESS_RAW, len);
	*out_len = (size_t)n;
	return account(c, len, TND_COMPRESS_COMPRESSED, (size_t)n);
}

int tnd_decompress(const void *in, size_t in_len, void *out, size_t expect_len)
{
	if (in_len == 0 || in_len > INT_MAX || expect_len == 0 || expect_len > TND_COMPRESS_MAX_LEN)
		return -EINVAL;
	/*
	 * LZ4_decompress_safe() never reads past in + in_len nor writes past
	 * out + expect_len, whatever the input; it returns the decoded length
	 * or a negative number. Anything but the full length is corruption: a
	 * short result would otherwise leave stale bytes in the caller's
	 * buffer.
	 */
	int n = LZ4_decompress_safe(in, out, (int)in_len, (int)expect_len);
	if (n < 0 || (size_t)n != expect_len)
		return -EILSEQ;
	return 0;
}

void tnd_compress_get_stats(const struct tnd_compress_ctx *c, struct tnd_compress_stats *out)
{
	*out = c->stats;
}
