/*
 * bench_compress — figures for the codec, and the fuzzer's seed corpus.
 *
 *   bench_compress ratio FILE [PCT]  FILE cut into 4 KiB blocks (the last one
 *                                 padded with zeros): what tnd_compress_block
 *                                 stores, with and without the probe, as
 *                                 8-block extents, against liblz4's
 *                                 LZ4_compress_default() on each block (what
 *                                 `lz4 -1` runs per block, without the frame).
 *   bench_compress speed [FILE]   MB/s of tnd_compress_block with the probe
 *                                 on and off, on FILE or on 64 MiB of random
 *                                 bytes (incompressible) and of text.
 *   bench_compress seeds DIR      write the fuzz_decompress seed corpus.
 *
 * Not a test: it prints figures for a person to read (the report quotes them).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <lz4.h>

#include "tnd_compress.h"
#include "testdata.h"

#define BLK TND_COMPRESS_BLOCK

static unsigned char *slurp(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) {
		perror(path);
		exit(1);
	}
	size_t padded = ((size_t)st.st_size + BLK - 1) / BLK * BLK;
	unsigned char *buf = calloc(1, padded ? padded : BLK);
	size_t got = 0;
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
		if (n <= 0) {
			perror("read");
			exit(1);
		}
		got += (size_t)n;
	}
	close(fd);
	*len = padded;
	return buf;
}

static size_t sectors(size_t n)
{
	return (n + TND_COMPRESS_SECTOR - 1) / TND_COMPRESS_SECTOR * TND_COMPRESS_SECTOR;
}

struct tally {
	size_t exact;      /* bytes of the chosen form: clen, len or 0 */
	size_t on_disk;    /* the same rounded up to 512 B sectors */
	size_t compressed, raw, zero, rejects;
};

static void run(struct tnd_compress_ctx *c, const unsigned char *buf, size_t len, size_t unit,
		unsigned char *out, struct tally *t)
{
	for (size_t off = 0; off < len; off += unit) {
		size_t n = len - off < unit ? len - off : unit, clen = 0;
		int r = tnd_compress_block(c, buf + off, n, out, n, &clen);
		size_t stored = r == TND_COMPRESS_COMPRESSED ? clen : r == TND_COMPRESS_RAW ? n : 0;
		t->exact += stored;
		t->on_disk += sectors(stored);
		t->compressed += r == TND_COMPRESS_COMPRESSED;
		t->raw += r == TND_COMPRESS_RAW;
		t->zero += r == TND_COMPRESS_ZERO;
	}
	struct tnd_compress_stats st;
	tnd_compress_get_stats(c, &st);
	t->rejects = st.probe_rejects;
}

static void print_tally(const char *what, size_t len, const struct tally *t)
{
	printf("%-28s exact %11zu B ratio %.3f | on disk %11zu B ratio %.3f | "
	       "compressed %zu raw %zu (probe rejects %zu) zero %zu\n",
	       what, t->exact, (double)len / (double)t->exact, t->on_disk,
	       (double)len / (double)t->on_disk, t->compressed, t->raw, t->rejects, t->zero);
}

static int cmd_ratio(const char *path, unsigned threshold)
{
	size_t len;
	unsigned char *buf = slurp(path, &len);
	unsigned char *out = malloc(LZ4_compressBound(8 * BLK));
	struct tnd_compress_opts o;
	struct tnd_compress_ctx *probe, *noprobe, *ext;

	tnd_compress_opts_default(&o);
	if (threshold)
		o.probe_threshold_pct = threshold;
	tnd_compress_ctx_create(&o, &probe);
	tnd_compress_ctx_create(&o, &ext);
	o.probe = false;
	tnd_compress_ctx_create(&o, &noprobe);

	struct tally tp = { 0 }, tn = { 0 }, te = { 0 }, tr = { 0 };
	run(probe, buf, len, BLK, out, &tp);
	run(noprobe, buf, len, BLK, out, &tn);
	run(ext, buf, len, 8 * BLK, out, &te);
	/*
	 * The reference: LZ4_compress_default() on every block separately, as
	 * `lz4 -1` compresses each block of its frame, keeping the block raw
	 * when LZ4 makes it bigger (as the frame format does); frame headers
	 * are not counted.
	 */
	for (size_t off = 0; off < len; off += BLK) {
		int n = LZ4_compress_default((const char *)buf + off, (char *)out, BLK,
					     LZ4_compressBound(BLK));
		size_t s = n > 0 && (size_t)n < BLK ? (size_t)n : BLK;
		tr.exact += s;
		tr.on_disk += sectors(s);
		tr.compressed += s < BLK;
		tr.raw += s == BLK;
	}
	printf("%s: %zu bytes, %zu blocks of 4 KiB\n", path, len, len / BLK);
	print_tally("lz4 -1 per block (liblz4)", len, &tr);
	print_tally("tnd, probe on", len, &tp);
	print_tally("tnd, probe off", len, &tn);
	print_tally("tnd, 8-block extents", len, &te);
	printf("tnd probe on vs lz4 -1, exact bytes: %+.2f %%\n",
	       100.0 * ((double)tp.exact - (double)tr.exact) / (double)tr.exact);
	tnd_compress_ctx_destroy(probe);
	tnd_compress_ctx_destroy(noprobe);
	tnd_compress_ctx_destroy(ext);
	free(out);
	free(buf);
	return 0;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * @hot: cycle over the first 256 KiB instead of streaming the whole buffer.
 * lsfs compresses a block it has just received, so the data is in the CPU
 * cache; streaming 64 MiB instead measures DRAM latency, which the probe's
 * strided reads pay more for than LZ4's sequential ones.
 */
static void speed_one(const char *what, const unsigned char *buf, size_t len, bool hot)
{
	unsigned char *out = malloc(BLK);
	struct tnd_compress_opts o;

	for (int probe = 1; probe >= 0; probe--) {
		struct tnd_compress_ctx *c;
		tnd_compress_opts_default(&o);
		o.probe = probe;
		tnd_compress_ctx_create(&o, &c);
		double best = 0;
		for (int rep = 0; rep < 3; rep++) {
			double t0 = now_s();
			size_t clen;
			for (size_t off = 0; off < len; off += BLK)
				tnd_compress_block(c, buf + (hot ? off % (256u << 10) : off), BLK,
						   out, BLK, &clen);
			double mbs = (double)len / (now_s() - t0) / 1e6;
			if (mbs > best)
				best = mbs;
		}
		struct tnd_compress_stats st;
		tnd_compress_get_stats(c, &st);
		printf("%-14s %-4s probe %-3s %8.0f MB/s  (compressed %llu raw %llu rejects %llu zero %llu)\n",
		       what, hot ? "hot" : "cold", probe ? "on" : "off", best, (unsigned long long)st.compressed,
		       (unsigned long long)st.raw, (unsigned long long)st.probe_rejects,
		       (unsigned long long)st.zero);
		tnd_compress_ctx_destroy(c);
	}
	free(out);
}

static int cmd_speed(const char *path)
{
	size_t len = 64u << 20;
	uint64_t seed = 42;

	if (path) {
		unsigned char *buf = slurp(path, &len);
		speed_one(path, buf, len, true);
		speed_one(path, buf, len, false);
		free(buf);
		return 0;
	}
	unsigned char *buf = malloc(len);
	td_random(&seed, buf, len);
	speed_one("random", buf, len, true);
	speed_one("random", buf, len, false);
	td_text(&seed, buf, len);
	speed_one("text", buf, len, true);
	speed_one("text", buf, len, false);
	free(buf);
	return 0;
}

static void write_file(const char *dir, const char *name, const void *buf, size_t len)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(buf, 1, len, f) != len || fclose(f)) {
		perror(path);
		exit(1);
	}
}

/* Seeds: byte 0 selects the mode (see fuzz_decompress.c). */
static int cmd_seeds(const char *dir)
{
	unsigned char in[2 * BLK], seed[1 + 2 * BLK];
	struct tnd_compress_opts o;
	struct tnd_compress_ctx *c;
	uint64_t s = 7;
	size_t clen;

	tnd_compress_opts_default(&o);
	o.probe = false;
	tnd_compress_ctx_create(&o, &c);

	td_text(&s, in, BLK);
	tnd_compress_block(c, in, BLK, seed + 1, BLK, &clen);
	seed[0] = 0;                                  /* decode, 1 block */
	write_file(dir, "text-1blk", seed, 1 + clen);
	write_file(dir, "text-1blk-truncated", seed, 1 + clen / 2);

	td_text(&s, in, 2 * BLK);
	tnd_compress_block(c, in, 2 * BLK, seed + 1, 2 * BLK, &clen);
	seed[0] = 2;                                  /* decode, 2 blocks */
	write_file(dir, "text-2blk", seed, 1 + clen);

	memset(in, 0, BLK);
	in[100] = 7;
	tnd_compress_block(c, in, BLK, seed + 1, BLK, &clen);
	seed[0] = 0;
	write_file(dir, "sparse-1blk", seed, 1 + clen);

	td_text(&s, seed + 1, 1500);
	seed[0] = 1;                                  /* compress */
	write_file(dir, "compress-text", seed, 1 + 1500);
	td_random(&s, seed + 1, 600);
	write_file(dir, "compress-random", seed, 1 + 600);
	tnd_compress_ctx_destroy(c);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 3 && !strcmp(argv[1], "ratio"))
		return cmd_ratio(argv[2], argc >= 4 ? (unsigned)atoi(argv[3]) : 0);
	if (argc >= 2 && !strcmp(argv[1], "speed"))
		return cmd_speed(argc >= 3 ? argv[2] : NULL);
	if (argc >= 3 && !strcmp(argv[1], "seeds"))
		return cmd_seeds(argv[2]);
	fprintf(stderr, "usage: %s ratio FILE [PCT] | speed [FILE] | seeds DIR\n", argv[0]);
	return 2;
}
