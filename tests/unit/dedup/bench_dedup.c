/*
 * bench_dedup [BUDGET_MIB] — RAM per indexed block, by the index's own
 * accounting and by the process's RSS, and operation rates.
 *
 * Fills an index of BUDGET_MIB (default 256) with three times as many
 * unique fingerprints as it has slots, reading /proc/self/statm before
 * create, after create and after the fill. The table comes from one large
 * calloc, i.e. fresh anonymous pages, so RSS grows only as the index
 * touches them and the RSS growth is what the index really costs.
 *
 * Not a test: it prints figures for a person to read.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "tnd_dedup.h"

static uint64_t rss_bytes(void)
{
	unsigned long size, resident;
	FILE *f = fopen("/proc/self/statm", "r");

	if (!f || fscanf(f, "%lu %lu", &size, &resident) != 2) {
		perror("/proc/self/statm");
		exit(1);
	}
	fclose(f);
	return (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static struct tnd_dedup_fp fp_of(uint64_t i)
{
	/* Fingerprint a 16-byte "block": real XXH3-128 output, cheaply. */
	uint64_t blk[2] = { i, ~i };
	struct tnd_dedup_fp fp;
	tnd_dedup_fingerprint(blk, sizeof(blk), &fp);
	return fp;
}

int main(int argc, char **argv)
{
	uint64_t budget = (argc > 1 ? strtoull(argv[1], NULL, 0) : 256) << 20;
	struct tnd_dedup *d;
	struct tnd_dedup_stats st;
	uint64_t pba, found = 0;

	uint64_t rss0 = rss_bytes();
	if (tnd_dedup_create(budget, &d) < 0)
		return 1;
	uint64_t rss1 = rss_bytes();
	tnd_dedup_get_stats(d, &st);
	uint64_t slots = st.slots;

	double t0 = now_s();
	for (uint64_t i = 0; i < slots; i++) {
		struct tnd_dedup_fp fp = fp_of(i);
		tnd_dedup_insert(d, &fp, i);
	}
	double t1 = now_s();
	tnd_dedup_get_stats(d, &st);
	uint64_t rss2 = rss_bytes();
	printf("budget %llu MiB: %llu slots, accounting %llu B\n",
	       (unsigned long long)(budget >> 20), (unsigned long long)slots,
	       (unsigned long long)st.bytes);
	printf("after create:         RSS +%llu KiB\n", (unsigned long long)((rss1 - rss0) >> 10));
	printf("after 1x slots:       %llu entries (%.1f %% full), %llu evictions; "
	       "%.2f B/entry by accounting, %.2f B/entry by RSS growth\n",
	       (unsigned long long)st.entries, 100.0 * (double)st.entries / (double)slots,
	       (unsigned long long)st.evictions, (double)st.bytes / (double)st.entries,
	       (double)(rss2 - rss0) / (double)st.entries);

	for (uint64_t i = slots; i < 3 * slots; i++) {
		struct tnd_dedup_fp fp = fp_of(i);
		tnd_dedup_insert(d, &fp, i);
	}
	double t2 = now_s();
	tnd_dedup_get_stats(d, &st);
	uint64_t rss3 = rss_bytes();
	printf("after 3x slots:       %llu entries (%.1f %% full), %llu evictions; "
	       "%.2f B/entry by accounting, %.2f B/entry by RSS growth (RSS +%llu KiB vs create)\n",
	       (unsigned long long)st.entries, 100.0 * (double)st.entries / (double)slots,
	       (unsigned long long)st.evictions, (double)st.bytes / (double)st.entries,
	       (double)(rss3 - rss0) / (double)st.entries,
	       (unsigned long long)((rss3 - rss1) >> 10));

	double t3 = now_s();
	for (uint64_t i = 2 * slots; i < 3 * slots; i++) {
		struct tnd_dedup_fp fp = fp_of(i);
		found += tnd_dedup_lookup(d, &fp, &pba) == 0;
	}
	double t4 = now_s();
	for (uint64_t i = 0; i < slots; i++)
		tnd_dedup_remove_pba(d, 2 * slots + i);
	double t5 = now_s();
	printf("rates: insert (filling) %.2f M/s, insert (evicting) %.2f M/s, "
	       "lookup %.2f M/s (%llu found), remove by pba %.2f M/s "
	       "(includes fingerprinting for insert/lookup)\n",
	       (double)slots / (t1 - t0) / 1e6, 2.0 * (double)slots / (t2 - t1) / 1e6,
	       (double)slots / (t4 - t3) / 1e6, (unsigned long long)found,
	       (double)slots / (t5 - t4) / 1e6);
	tnd_dedup_destroy(d);

	/* The refcount table: 1 M shared blocks. */
	struct tnd_dedup_refs *r;
	struct tnd_dedup_refs_stats rs;
	if (tnd_dedup_refs_create(&r) < 0)
		return 1;
	for (uint64_t i = 0; i < (1u << 20); i++)
		tnd_dedup_ref_inc(r, i * 3);
	tnd_dedup_refs_get_stats(r, &rs);
	printf("refs: %llu shared blocks, %llu B, %.2f B per shared block (0 per unshared)\n",
	       (unsigned long long)rs.entries, (unsigned long long)rs.bytes,
	       (double)rs.bytes / (double)rs.entries);
	tnd_dedup_refs_destroy(r);
	return 0;
}
