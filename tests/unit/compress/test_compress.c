/*
 * Unit tests for compress/: what tnd_compress_block() decides for zeros,
 * random, text, mixed data and extents; the one-sector rule at its exact
 * boundary; tnd_decompress() on corrupt, truncated and over-long input
 * (run under ASan, with a canary after the output to see overruns even
 * without it).
 */
#include <errno.h>
#include <malloc.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <lz4.h>

#include "tnd_compress.h"
#include "testdata.h"

#define BLK TND_COMPRESS_BLOCK
#define CANARY 0xA5

struct fixture {
	struct tnd_compress_ctx *c;         /* defaults: probe on */
	struct tnd_compress_ctx *noprobe;
	unsigned char *in, *out, *back;     /* TND_COMPRESS_MAX_LEN (+ canary) each */
	uint64_t seed;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct tnd_compress_opts o;

	assert_non_null(f);
	assert_int_equal(tnd_compress_ctx_create(NULL, &f->c), 0);
	tnd_compress_opts_default(&o);
	o.probe = false;
	assert_int_equal(tnd_compress_ctx_create(&o, &f->noprobe), 0);
	f->in = malloc(TND_COMPRESS_MAX_LEN);
	f->out = malloc(TND_COMPRESS_MAX_LEN);
	f->back = malloc(TND_COMPRESS_MAX_LEN + 64);
	assert_non_null(f->in);
	assert_non_null(f->out);
	assert_non_null(f->back);
	f->seed = 0x1234567887654321ull;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	tnd_compress_ctx_destroy(f->c);
	tnd_compress_ctx_destroy(f->noprobe);
	free(f->in);
	free(f->out);
	free(f->back);
	free(f);
	return 0;
}

/*
 * Compress @len bytes of f->in with @c and check the promise that goes with
 * the result: ZERO really is zero, COMPRESSED saves a sector and decodes
 * back exactly, with nothing written past the end. Returns the result.
 */
static int round_trip(struct fixture *f, struct tnd_compress_ctx *c, size_t len)
{
	size_t clen = 0;
	int r = tnd_compress_block(c, f->in, len, f->out, len, &clen);

	assert_true(r >= 0);
	switch (r) {
	case TND_COMPRESS_ZERO:
		assert_true(tnd_compress_is_zero(f->in, len));
		break;
	case TND_COMPRESS_RAW:
		assert_false(tnd_compress_is_zero(f->in, len));
		break;
	case TND_COMPRESS_COMPRESSED:
		assert_true(clen > 0);
		assert_true((clen + TND_COMPRESS_SECTOR - 1) / TND_COMPRESS_SECTOR * TND_COMPRESS_SECTOR < len);
		memset(f->back, CANARY, len + 64);
		assert_int_equal(tnd_decompress(f->out, clen, f->back, len), 0);
		assert_memory_equal(f->back, f->in, len);
		for (size_t i = len; i < len + 64; i++)
			assert_int_equal(f->back[i], CANARY);
		break;
	default:
		fail_msg("unknown result %d", r);
	}
	return r;
}

static void zeros_are_reported(void **state)
{
	struct fixture *f = *state;
	struct tnd_compress_stats st;

	memset(f->in, 0, 8 * BLK);
	assert_int_equal(round_trip(f, f->c, BLK), TND_COMPRESS_ZERO);
	assert_int_equal(round_trip(f, f->c, 8 * BLK), TND_COMPRESS_ZERO);
	/* One byte anywhere, even the last, makes it data (and very compressible). */
	f->in[BLK - 1] = 1;
	assert_int_equal(round_trip(f, f->c, BLK), TND_COMPRESS_COMPRESSED);
	f->in[BLK - 1] = 0;
	f->in[5 * BLK + 17] = 0x80;
	assert_int_equal(round_trip(f, f->c, 8 * BLK), TND_COMPRESS_COMPRESSED);
	assert_true(tnd_compress_is_zero(f->in, 5 * BLK + 17));
	assert_false(tnd_compress_is_zero(f->in, 5 * BLK + 18));
	assert_true(tnd_compress_is_zero(f->in + 1, 63));  /* short and unaligned */

	tnd_compress_get_stats(f->c, &st);
	assert_int_equal(st.zero, 2);
	assert_int_equal(st.compressed, 2);
	assert_int_equal(st.bytes_in, 18 * BLK);
}

static void random_is_raw_and_probe_rejects_it(void **state)
{
	struct fixture *f = *state;
	struct tnd_compress_stats st;

	for (int i = 0; i < 64; i++) {
		td_random(&f->seed, f->in, BLK);
		assert_int_equal(round_trip(f, f->c, BLK), TND_COMPRESS_RAW);
		assert_int_equal(round_trip(f, f->noprobe, BLK), TND_COMPRESS_RAW);
	}
	td_random(&f->seed, f->in, 16 * BLK);
	assert_int_equal(round_trip(f, f->c, 16 * BLK), TND_COMPRESS_RAW);

	tnd_compress_get_stats(f->c, &st);
	assert_int_equal(st.raw, 65);
	assert_int_equal(st.probe_rejects, 65);  /* LZ4 never ran */
	assert_int_equal(st.bytes_out, st.bytes_in);
	tnd_compress_get_stats(f->noprobe, &st);
	assert_int_equal(st.raw, 64);
	assert_int_equal(st.probe_rejects, 0);
}

static void text_compresses(void **state)
{
	struct fixture *f = *state;
	struct tnd_compress_stats st;

	for (int i = 0; i < 64; i++) {
		td_text(&f->seed, f->in, BLK);
		assert_int_equal(round_trip(f, f->c, BLK), TND_COMPRESS_COMPRESSED);
	}
	tnd_compress_get_stats(f->c, &st);
	assert_int_equal(st.compressed, 64);
	assert_int_equal(st.probe_rejects, 0);
	/* Text from a 31-word vocabulary: LZ4 at least halves it. */
	assert_true(st.bytes_out * 2 < st.bytes_in);
}

/*
 * Half random, half text, in stripes of various widths: whatever the
 * decision, it must keep its promise, and with the probe on a block the
 * probe lets through must decide exactly as without the probe.
 */
static void mixed_data_keeps_promises(void **state)
{
	struct fixture *f = *state;
	static const size_t widths[] = { 64, 256, 512, 700, 1024, 2048, 3000 };

	for (size_t w = 0; w < sizeof(widths) / sizeof(widths[0]); w++) {
		for (size_t off = 0; off < BLK; off += widths[w]) {
			size_t n = BLK - off < widths[w] ? BLK - off : widths[w];
			if ((off / widths[w]) % 2)
				td_random(&f->seed, f->in + off, n);
			else
				td_text(&f->seed, f->in + off, n);
		}
		int with = round_trip(f, f->c, BLK);
		int without = round_trip(f, f->noprobe, BLK);
		if (with == TND_COMPRESS_COMPRESSED)
			assert_int_equal(without, TND_COMPRESS_COMPRESSED);
		/* Half text always saves a sector; the probe must see the text. */
		assert_int_equal(with, TND_COMPRESS_COMPRESSED);
	}
	/* Random with a zero tail of 1 KiB: a sector can be saved, and is. */
	td_random(&f->seed, f->in, BLK - 1024);
	memset(f->in + BLK - 1024, 0, 1024);
	assert_int_equal(round_trip(f, f->c, BLK), TND_COMPRESS_COMPRESSED);
}

/* A run compressed as one extent finds matches across block boundaries. */
static void extents_compress_as_one_unit(void **state)
{
	struct fixture *f = *state;
	size_t clen, per_block = 0;

	/* The same 4 KiB of random data written 8 times: no block compresses on
	 * its own, the extent compresses to about one block. */
	td_random(&f->seed, f->in, BLK);
	for (int i = 1; i < 8; i++)
		memcpy(f->in + i * BLK, f->in, BLK);
	for (int i = 0; i < 8; i++) {
		assert_int_equal(tnd_compress_block(f->noprobe, f->in + i * BLK, BLK, f->out, BLK, &clen),
				 TND_COMPRESS_RAW);
		per_block += BLK;
	}
	assert_int_equal(round_trip(f, f->noprobe, 8 * BLK), TND_COMPRESS_COMPRESSED);
	/* The probe samples every block alike, so it sees the repeat too. */
	assert_int_equal(round_trip(f, f->c, 8 * BLK), TND_COMPRESS_COMPRESSED);
	assert_int_equal(tnd_compress_block(f->noprobe, f->in, 8 * BLK, f->out, 8 * BLK, &clen),
			 TND_COMPRESS_COMPRESSED);
	assert_true(clen < BLK + 512);
	assert_true(clen * 4 < per_block);

	/* A text run: the extent is smaller than the sum of its blocks. */
	size_t sum = 0;
	td_text(&f->seed, f->in, 32 * BLK);
	for (int i = 0; i < 32; i++) {
		assert_int_equal(tnd_compress_block(f->c, f->in + i * BLK, BLK, f->out, BLK, &clen),
				 TND_COMPRESS_COMPRESSED);
		sum += clen;
	}
	assert_int_equal(tnd_compress_block(f->c, f->in, 32 * BLK, f->out, 32 * BLK, &clen),
			 TND_COMPRESS_COMPRESSED);
	assert_true(clen < sum);
	assert_int_equal(round_trip(f, f->c, 32 * BLK), TND_COMPRESS_COMPRESSED);
	/* The largest extent. */
	td_text(&f->seed, f->in, TND_COMPRESS_MAX_LEN);
	assert_int_equal(round_trip(f, f->c, TND_COMPRESS_MAX_LEN), TND_COMPRESS_COMPRESSED);
}

/*
 * Find a block whose LZ4 form is exactly @target bytes: random bytes, then
 * zeros (one long match), with one marker byte in the zeros to nudge the
 * size by a byte or two. Returns false when no such block was found.
 */
static bool craft_block(struct fixture *f, int target, unsigned char *blk)
{
	unsigned char *tmp = malloc(LZ4_compressBound(BLK));
	bool found = false;

	assert_non_null(tmp);
	for (size_t k = 3300; k < 3700 && !found; k++) {
		for (size_t m = 0; m < 64 && !found; m++) {
			uint64_t seed = 99 + k;
			td_random(&seed, blk, k);
			memset(blk + k, 0, BLK - k);
			if (m)
				blk[k + 16 + m * 8] = 1;
			int n = LZ4_compress_default((const char *)blk, (char *)tmp, BLK,
						     LZ4_compressBound(BLK));
			found = n == target;
		}
	}
	free(tmp);
	return found;
}

static void one_sector_rule_at_its_boundary(void **state)
{
	struct fixture *f = *state;
	size_t clen = 0;

	/* 3584 = 4096 - 512: rounds up to 3584, saves one sector. */
	assert_true(craft_block(f, BLK - 512, f->in));
	assert_int_equal(tnd_compress_block(f->noprobe, f->in, BLK, f->out, BLK, &clen),
			 TND_COMPRESS_COMPRESSED);
	assert_int_equal(clen, BLK - 512);
	assert_int_equal(round_trip(f, f->noprobe, BLK), TND_COMPRESS_COMPRESSED);
	/* An output capacity one byte short of that demands more saving. */
	assert_int_equal(tnd_compress_block(f->noprobe, f->in, BLK, f->out, BLK - 513, &clen),
			 TND_COMPRESS_RAW);

	/* 3585 rounds up to 4096: saves nothing, stored raw. */
	assert_true(craft_block(f, BLK - 511, f->in));
	assert_int_equal(round_trip(f, f->noprobe, BLK), TND_COMPRESS_RAW);
	/* Even when the caller offers a big output buffer. */
	assert_int_equal(tnd_compress_block(f->noprobe, f->in, BLK, f->out, 2 * BLK, &clen),
			 TND_COMPRESS_RAW);

	/* The same rule on an extent: len - 512 is the limit. */
	size_t len = 2 * BLK;
	td_random(&f->seed, f->in, len - 600);
	memset(f->in + len - 600, 0, 600);
	assert_int_equal(round_trip(f, f->noprobe, len), TND_COMPRESS_COMPRESSED);
	td_random(&f->seed, f->in, len - 300);
	memset(f->in + len - 300, 0, 300);
	assert_int_equal(round_trip(f, f->noprobe, len), TND_COMPRESS_RAW);
}

/*
 * What the probe is documented to miss: bytes that look uniform but repeat
 * at a distance. Stored raw with the probe, compressed without it.
 */
static void probe_misses_long_repeats(void **state)
{
	struct fixture *f = *state;

	/* A 1000-byte random pattern, four times and a bit: the probe's
	 * windows (every 512 B) land on different parts of it. */
	td_random(&f->seed, f->in, 1000);
	for (size_t off = 1000; off < BLK; off += 1000)
		memcpy(f->in + off, f->in, BLK - off < 1000 ? BLK - off : 1000);
	assert_int_equal(round_trip(f, f->c, BLK), TND_COMPRESS_RAW);
	assert_int_equal(round_trip(f, f->noprobe, BLK), TND_COMPRESS_COMPRESSED);
	/* With a period of 1 KiB the windows sample the same bytes again,
	 * which the collision count sees. */
	td_random(&f->seed, f->in, 1024);
	for (int i = 1; i < 4; i++)
		memcpy(f->in + i * 1024, f->in, 1024);
	assert_int_equal(round_trip(f, f->c, BLK), TND_COMPRESS_COMPRESSED);
}

/* The context holds all scratch state: compressing allocates nothing. */
static void no_allocation_per_block(void **state)
{
	struct fixture *f = *state;
	size_t clen;

	td_text(&f->seed, f->in, 64 * BLK);
	tnd_compress_block(f->c, f->in, BLK, f->out, BLK, &clen);  /* warm up */
	struct mallinfo2 before = mallinfo2();
	for (int i = 0; i < 64; i++) {
		assert_true(tnd_compress_block(f->c, f->in + i * BLK, BLK, f->out, BLK, &clen) >= 0);
		assert_true(tnd_compress_block(f->noprobe, f->in, 16 * BLK, f->out, 16 * BLK, &clen) >= 0);
		assert_int_equal(tnd_decompress(f->out, clen, f->back, 16 * BLK), 0);
	}
	struct mallinfo2 after = mallinfo2();
	assert_int_equal(after.uordblks, before.uordblks);
	assert_int_equal(after.hblkhd, before.hblkhd);
}

static void bad_arguments(void **state)
{
	struct fixture *f = *state;
	struct tnd_compress_opts o;
	struct tnd_compress_ctx *c;
	size_t clen;

	td_text(&f->seed, f->in, 2 * BLK);
	assert_int_equal(tnd_compress_block(f->c, f->in, 0, f->out, BLK, &clen), -EINVAL);
	assert_int_equal(tnd_compress_block(f->c, f->in, 1000, f->out, BLK, &clen), -EINVAL);
	assert_int_equal(tnd_compress_block(f->c, f->in, BLK + 512, f->out, BLK, &clen), -EINVAL);
	assert_int_equal(tnd_compress_block(f->c, f->in, TND_COMPRESS_MAX_LEN + BLK, f->out, BLK, &clen),
			 -EINVAL);
	assert_int_equal(tnd_compress_block(f->c, f->in, BLK, f->out, 0, &clen), -EINVAL);
	assert_int_equal(tnd_decompress(f->out, 0, f->back, BLK), -EINVAL);
	assert_int_equal(tnd_decompress(f->out, 10, f->back, 0), -EINVAL);
	assert_int_equal(tnd_decompress(f->out, 10, f->back, TND_COMPRESS_MAX_LEN + 1), -EINVAL);

	tnd_compress_opts_default(&o);
	o.acceleration = 0;
	assert_int_equal(tnd_compress_ctx_create(&o, &c), -EINVAL);
	tnd_compress_ctx_destroy(NULL);
}

/* Decode into an exactly sized heap buffer, so ASan sees any overrun. */
static int decode_exact(const unsigned char *in, size_t in_len, size_t expect)
{
	unsigned char *out = malloc(expect);
	assert_non_null(out);
	int rc = tnd_decompress(in, in_len, out, expect);
	free(out);
	return rc;
}

static void corrupt_input_is_eilseq(void **state)
{
	struct fixture *f = *state;
	size_t clen;

	td_text(&f->seed, f->in, BLK);
	assert_int_equal(tnd_compress_block(f->c, f->in, BLK, f->out, BLK, &clen),
			 TND_COMPRESS_COMPRESSED);

	/* Every truncation. */
	for (size_t n = 1; n < clen; n++)
		assert_int_equal(decode_exact(f->out, n, BLK), -EILSEQ);
	/* Trailing garbage. */
	memset(f->out + clen, 0x11, 16);
	for (size_t n = clen + 1; n <= clen + 16; n++)
		assert_int_equal(decode_exact(f->out, n, BLK), -EILSEQ);
	/* The wrong expected length either way. */
	assert_int_equal(decode_exact(f->out, clen, BLK - 1), -EILSEQ);
	assert_int_equal(decode_exact(f->out, clen, BLK / 2), -EILSEQ);
	assert_int_equal(decode_exact(f->out, clen, 2 * BLK), -EILSEQ);

	/*
	 * Every single-byte corruption: a changed literal still decodes (that
	 * is the CRC's job), a changed token, length or offset must fail; none
	 * may write out of bounds or hand back a short result as success.
	 */
	unsigned char *copy = malloc(clen);
	assert_non_null(copy);
	unsigned failed = 0;
	for (size_t i = 0; i < clen; i++) {
		for (unsigned x = 1; x < 256; x <<= 1) {
			memcpy(copy, f->out, clen);
			copy[i] ^= (unsigned char)x;
			int rc = decode_exact(copy, clen, BLK);
			assert_true(rc == 0 || rc == -EILSEQ);
			failed += rc == -EILSEQ;
		}
	}
	assert_true(failed > 0);
	free(copy);

	/* Pure garbage of various lengths. */
	for (size_t n = 1; n < 2048; n += 37) {
		td_random(&f->seed, f->back, n);
		int rc = decode_exact(f->back, n, BLK);
		assert_true(rc == 0 || rc == -EILSEQ);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(zeros_are_reported, setup, teardown),
		cmocka_unit_test_setup_teardown(random_is_raw_and_probe_rejects_it, setup, teardown),
		cmocka_unit_test_setup_teardown(text_compresses, setup, teardown),
		cmocka_unit_test_setup_teardown(mixed_data_keeps_promises, setup, teardown),
		cmocka_unit_test_setup_teardown(extents_compress_as_one_unit, setup, teardown),
		cmocka_unit_test_setup_teardown(one_sector_rule_at_its_boundary, setup, teardown),
		cmocka_unit_test_setup_teardown(probe_misses_long_repeats, setup, teardown),
		cmocka_unit_test_setup_teardown(no_allocation_per_block, setup, teardown),
		cmocka_unit_test_setup_teardown(bad_arguments, setup, teardown),
		cmocka_unit_test_setup_teardown(corrupt_input_is_eilseq, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
