/*
 * Unit tests for tandem-bench's latency histogram and verify tags.
 *
 * The histogram must report percentiles within its stated ~3% and never a
 * value outside what was observed; the tag check must pass what was written
 * and, for each way a target can get data wrong, fail at the right sector
 * with the right diagnosis.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include "bench.h"

static void assert_within(uint64_t got, uint64_t want, double rel)
{
	double d = (double)got - (double)want;
	if (d < 0)
		d = -d;
	if (d > rel * (double)want) {
		print_error("got %llu, want %llu +- %.1f%%\n", (unsigned long long)got,
			    (unsigned long long)want, rel * 100);
		fail();
	}
}

static void test_hist_empty(void **state)
{
	struct bench_hist h;
	(void)state;
	bench_hist_reset(&h);
	assert_int_equal(bench_hist_pct(&h, 50), 0);
	assert_int_equal(bench_hist_mean(&h), 0);
}

static void test_hist_small_values_exact(void **state)
{
	struct bench_hist h;
	(void)state;
	bench_hist_reset(&h);
	for (uint64_t v = 0; v < 16; v++)
		bench_hist_add(&h, v);
	assert_int_equal(bench_hist_pct(&h, 50), 7);
	assert_int_equal(bench_hist_pct(&h, 100), 15);
	assert_int_equal(h.min, 0);
}

static void test_hist_uniform_percentiles(void **state)
{
	struct bench_hist h;
	(void)state;
	bench_hist_reset(&h);
	/* 1 us .. 10 ms in 1 us steps */
	for (uint64_t v = 1; v <= 10000; v++)
		bench_hist_add(&h, v * 1000);
	assert_within(bench_hist_pct(&h, 50), 5000 * 1000, 0.04);
	assert_within(bench_hist_pct(&h, 99), 9900 * 1000, 0.04);
	assert_within(bench_hist_pct(&h, 99.9), 9990 * 1000, 0.04);
	assert_int_equal(bench_hist_mean(&h), 5000500);
}

static void test_hist_clamped_to_observed(void **state)
{
	struct bench_hist h;
	(void)state;
	bench_hist_reset(&h);
	for (int i = 0; i < 100; i++)
		bench_hist_add(&h, 123456789);
	/* The bucket midpoint is not a value we saw: report the real one. */
	assert_int_equal(bench_hist_pct(&h, 50), 123456789);
	assert_int_equal(bench_hist_pct(&h, 99.9), 123456789);
}

static void test_hist_tail(void **state)
{
	struct bench_hist h;
	(void)state;
	bench_hist_reset(&h);
	for (int i = 0; i < 990; i++)
		bench_hist_add(&h, 100000);
	for (int i = 0; i < 10; i++)
		bench_hist_add(&h, 5000000);
	assert_within(bench_hist_pct(&h, 50), 100000, 0.04);
	assert_within(bench_hist_pct(&h, 99), 100000, 0.04);
	assert_within(bench_hist_pct(&h, 99.9), 5000000, 0.04);
	assert_int_equal(h.max, 5000000);
}

static void test_rng_below_range(void **state)
{
	struct bench_rng r;
	int seen[7] = { 0 };
	(void)state;
	bench_rng_seed(&r, 42);
	for (int i = 0; i < 7000; i++) {
		uint64_t v = bench_rng_below(&r, 7);
		assert_true(v < 7);
		seen[v]++;
	}
	for (int i = 0; i < 7; i++)
		assert_true(seen[i] > 800 && seen[i] < 1200);
}

#define BS 4096

static void test_pattern_roundtrip(void **state)
{
	unsigned char buf[BS];
	char why[160] = "";
	(void)state;
	bench_pattern_fill(buf, BS, 800, 7, 3);
	assert_int_equal(bench_pattern_check(buf, BS, 800, 7, 3, why, sizeof(why)), -1);
}

static void test_pattern_detects(void **state)
{
	unsigned char buf[BS], other[BS];
	char why[160];
	(void)state;

	/* A flipped bit in the body of sector 5. */
	bench_pattern_fill(buf, BS, 800, 7, 3);
	buf[5 * BENCH_SECTOR + 200] ^= 1;
	assert_int_equal(bench_pattern_check(buf, BS, 800, 7, 3, why, sizeof(why)), 5);
	assert_non_null(strstr(why, "corrupted body"));

	/* A lost write: the previous generation came back. */
	bench_pattern_fill(buf, BS, 800, 7, 2);
	assert_int_equal(bench_pattern_check(buf, BS, 800, 7, 3, why, sizeof(why)), 0);
	assert_non_null(strstr(why, "stale"));

	/* Misdirected: another block's data. */
	bench_pattern_fill(buf, BS, 808, 7, 3);
	assert_int_equal(bench_pattern_check(buf, BS, 800, 7, 3, why, sizeof(why)), 0);
	assert_non_null(strstr(why, "misdirected"));

	/* Zeros (an unwritten or trimmed block). */
	memset(buf, 0, BS);
	assert_int_equal(bench_pattern_check(buf, BS, 800, 7, 3, why, sizeof(why)), 0);
	assert_non_null(strstr(why, "zeros"));

	/* Torn: the last sector is from the older write. */
	bench_pattern_fill(buf, BS, 800, 7, 3);
	bench_pattern_fill(other, BS, 800, 7, 2);
	memcpy(buf + 7 * BENCH_SECTOR, other + 7 * BENCH_SECTOR, BENCH_SECTOR);
	assert_int_equal(bench_pattern_check(buf, BS, 800, 7, 3, why, sizeof(why)), 7);

	/* Another run's data. */
	bench_pattern_fill(buf, BS, 800, 8, 3);
	assert_int_equal(bench_pattern_check(buf, BS, 800, 7, 3, why, sizeof(why)), 0);
	assert_non_null(strstr(why, "another run"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hist_empty),
		cmocka_unit_test(test_hist_small_values_exact),
		cmocka_unit_test(test_hist_uniform_percentiles),
		cmocka_unit_test(test_hist_clamped_to_observed),
		cmocka_unit_test(test_hist_tail),
		cmocka_unit_test(test_rng_below_range),
		cmocka_unit_test(test_pattern_roundtrip),
		cmocka_unit_test(test_pattern_detects),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
