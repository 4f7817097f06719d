/*
 * tandem-bench — an iSCSI load generator on libiscsi's asynchronous API.
 *
 * Why our own: Debian's fio has no libiscsi engine, and a kernel initiator
 * would put the block layer and page cache between the benchmark and the
 * target. This tool talks iSCSI straight to any target (tandemd, tgt, LIO)
 * and measures what a target does under load: IOPS, bandwidth, latency
 * percentiles, and, with --target-pid, how much CPU the target burnt for
 * it, which is what decides how many guests one box can serve.
 *
 * main.c parses options, runs the engine (engine.c) and prints the result
 * as text or one JSON object. Exit status: 0 success; 1 I/O errors or
 * verify mismatches; 2 bad usage or setup failure; 77 a requested feature
 * this libiscsi lacks (the test-suite "skip" code).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "tnd_client.h"
#include "tnd_common.h"

enum {
	EXIT_HELP = -1,         /* parse_args: --help printed, exit 0 */
	EXIT_IO_ERRORS = 1,
	EXIT_USAGE = 2,
	EXIT_UNSUPPORTED = 77,
};

static void usage(FILE *f)
{
	fprintf(f,
"usage: tandem-bench --url iscsi://HOST[:PORT]/IQN/LUN [options]\n"
"\n"
"Generate iSCSI load with libiscsi (asynchronous, one event loop per thread)\n"
"and report\n"
"IOPS, MB/s (10^6 bytes), latency percentiles and errors.\n"
"\n"
"Target:\n"
"  --url URL             target LUN; repeat for several LUNs\n"
"  --sessions N          sessions per URL (default 1)\n"
"  --initiator-name IQN  (default iqn.2026-11.io.tandem:bench)\n"
"  --header-digest       require CRC32C header digests\n"
"  --data-digest         require CRC32C data digests (if libiscsi has them)\n"
"\n"
"Workload:\n"
"  --bs SIZE             I/O size, e.g. 4k, 256k (default 4k)\n"
"  --qd N                commands in flight per session (default 1)\n"
"  --rw read|write|mixed (default read)\n"
"  --mix PCT             read percentage for --rw mixed (default 70)\n"
"  --pattern rand|seq    (default rand); seq streams of one LUN start\n"
"                        evenly spread over the working set\n"
"  --data random|text|dup  what unverified writes carry: random (default,\n"
"                        incompressible), text-like (compresses about 2-3x\n"
"                        with LZ4), or one 4 KiB block everywhere (dedup)\n"
"  --hot PCT             rand: PCT %% of the I/Os go to the first (100 - PCT) %%\n"
"                        of the working set, the rest to the others (80: the\n"
"                        80/20 rule); 50..99, default uniform\n"
"  --flush-every N       SYNCHRONIZE CACHE after every N completed writes,\n"
"                        per session (default 0: never)\n"
"  --size SIZE           working set from LBA 0 (default: whole LUN)\n"
"  --time SECONDS        measured time (default 10)\n"
"  --ramp SECONDS        run this long first without counting (default 0)\n"
"  --count N             stop after N commands instead of a time\n"
"  --seed N              random seed (default 1)\n"
"  --max-errors N        stop after N failed commands (default 100)\n"
"  --threads N           event-loop threads the sessions are shared out to\n"
"                        (default 1); with --verify a URL's sessions stay\n"
"                        on one thread, so use several URLs to spread them\n"
"  --no-cork             send as libiscsi does by itself: every PDU header\n"
"                        and every data segment a TCP segment of its own.\n"
"                        By default the commands queued in one round go out\n"
"                        corked (TCP_CORK), in as few segments as they fill,\n"
"                        as kernel initiators (MSG_MORE) and NICs with GRO\n"
"                        deliver them to a target\n"
"\n"
"Checking and reporting:\n"
"  --verify              writes carry a tag (sector, seed, generation) in\n"
"                        every 512 bytes; reads of blocks this run wrote\n"
"                        are checked, and all written blocks are read back\n"
"                        at the end. A mismatch is reported with its LBA.\n"
"                        Sessions of one --url share the check; different\n"
"                        --url values must be different LUNs (not two paths\n"
"                        to one), or their writes would look like corruption.\n"
"  --target-pid PID      report the target's CPU seconds (utime+stime from\n"
"                        /proc/PID/stat, 10 ms resolution) and IOPS per\n"
"                        target CPU-second\n"
"  --json                print one JSON object instead of text\n"
"  --help\n"
"\n"
"Unverified writes are random data with a counter stamped into each 4 KiB,\n"
"so a deduplicating or compressing target gains nothing from them.\n"
"\n"
"Exit status: 0 success, 1 I/O errors or verify mismatches, 2 usage or\n"
"setup error, 77 feature not supported by this libiscsi.\n");
}

/* Same order as long_opts[]: an option's name is long_opts[id - OPT_URL]. */
enum opt_id {
	OPT_URL = 256, OPT_SESSIONS, OPT_BS, OPT_QD, OPT_RW, OPT_MIX, OPT_PATTERN, OPT_HOT,
	OPT_FLUSH_EVERY, OPT_TIME, OPT_RAMP, OPT_COUNT, OPT_SIZE, OPT_SEED,
	OPT_VERIFY, OPT_TARGET_PID, OPT_HDR_DIGEST, OPT_DATA_DIGEST, OPT_INITIATOR,
	OPT_JSON, OPT_MAX_ERRORS, OPT_THREADS, OPT_DATA, OPT_NO_CORK, OPT_HELP,
};

static const struct option long_opts[] = {
	{ "url", required_argument, NULL, OPT_URL },
	{ "sessions", required_argument, NULL, OPT_SESSIONS },
	{ "bs", required_argument, NULL, OPT_BS },
	{ "qd", required_argument, NULL, OPT_QD },
	{ "rw", required_argument, NULL, OPT_RW },
	{ "mix", required_argument, NULL, OPT_MIX },
	{ "pattern", required_argument, NULL, OPT_PATTERN },
	{ "hot", required_argument, NULL, OPT_HOT },
	{ "flush-every", required_argument, NULL, OPT_FLUSH_EVERY },
	{ "time", required_argument, NULL, OPT_TIME },
	{ "ramp", required_argument, NULL, OPT_RAMP },
	{ "count", required_argument, NULL, OPT_COUNT },
	{ "size", required_argument, NULL, OPT_SIZE },
	{ "seed", required_argument, NULL, OPT_SEED },
	{ "verify", no_argument, NULL, OPT_VERIFY },
	{ "target-pid", required_argument, NULL, OPT_TARGET_PID },
	{ "header-digest", no_argument, NULL, OPT_HDR_DIGEST },
	{ "data-digest", no_argument, NULL, OPT_DATA_DIGEST },
	{ "initiator-name", required_argument, NULL, OPT_INITIATOR },
	{ "json", no_argument, NULL, OPT_JSON },
	{ "max-errors", required_argument, NULL, OPT_MAX_ERRORS },
	{ "threads", required_argument, NULL, OPT_THREADS },
	{ "data", required_argument, NULL, OPT_DATA },
	{ "no-cork", no_argument, NULL, OPT_NO_CORK },
	{ "help", no_argument, NULL, OPT_HELP },
	{ NULL, 0, NULL, 0 },
};

static int parse_u64(const char *s, uint64_t *out)
{
	char *end;
	if (s[0] < '0' || s[0] > '9')
		return -EINVAL;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end)
		return -EINVAL;
	*out = v;
	return 0;
}

static int parse_int(const char *s, int lo, int hi, int *out)
{
	uint64_t v;
	if (parse_u64(s, &v) < 0 || v < (uint64_t)lo || v > (uint64_t)hi)
		return -EINVAL;
	*out = (int)v;
	return 0;
}

static int parse_seconds(const char *s, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || *end || !(v >= 0) || v > 1e7)
		return -EINVAL;
	*out = v;
	return 0;
}

/* Sizes: plain bytes or with a binary suffix; "4k" is accepted like "4K". */
static int parse_bytes(const char *s, uint64_t *out)
{
	return tnd_parse_size(s, out);
}

/* Returns 0, EXIT_HELP, or an exit status after printing why. */
static int parse_args(int argc, char **argv, struct bench_opts *o)
{
	static const char *const rw_names[] = {
		[BENCH_RW_READ] = "read", [BENCH_RW_WRITE] = "write", [BENCH_RW_MIXED] = "mixed",
	};
	static const char *const pat_names[] = {
		[BENCH_PAT_RAND] = "rand", [BENCH_PAT_SEQ] = "seq",
	};
	static const char *const data_names[] = {
		[BENCH_DATA_RANDOM] = "random", [BENCH_DATA_TEXT] = "text", [BENCH_DATA_DUP] = "dup",
	};
	uint64_t v;
	int c, bad = 0;

	*o = (struct bench_opts){
		.sessions = 1, .bs = 4096, .qd = 1, .rw = BENCH_RW_READ, .mix = 70,
		.pattern = BENCH_PAT_RAND, .seed = 1, .max_errors = 100, .threads = 1,
		.cork = true,
		.initiator = "iqn.2026-11.io.tandem:bench",
	};
	o->urls = calloc((size_t)argc, sizeof(*o->urls));
	if (o->urls == NULL)
		return EXIT_USAGE;

	while ((c = getopt_long(argc, argv, "", long_opts, NULL)) != -1) {
		const char *a = optarg;
		int ok = 0;
		switch (c) {
		case OPT_URL:
			o->urls[o->nurls++] = a;
			break;
		case OPT_SESSIONS:
			ok = parse_int(a, 1, 1024, &o->sessions);
			break;
		case OPT_BS:
			ok = parse_bytes(a, &v);
			if (ok == 0 && (v < BENCH_SECTOR || v % BENCH_SECTOR || v > (16u << 20)))
				ok = -EINVAL;
			o->bs = (uint32_t)v;
			break;
		case OPT_QD:
			ok = parse_int(a, 1, 4096, &o->qd);
			break;
		case OPT_RW:
			ok = -EINVAL;
			for (size_t i = 0; i < TND_ARRAY_SIZE(rw_names); i++)
				if (strcmp(a, rw_names[i]) == 0) {
					o->rw = (enum bench_rw)i;
					ok = 0;
				}
			break;
		case OPT_MIX:
			ok = parse_int(a, 0, 100, &o->mix);
			break;
		case OPT_PATTERN:
			ok = -EINVAL;
			for (size_t i = 0; i < TND_ARRAY_SIZE(pat_names); i++)
				if (strcmp(a, pat_names[i]) == 0) {
					o->pattern = (enum bench_pattern)i;
					ok = 0;
				}
			break;
		case OPT_HOT:
			ok = parse_int(a, 50, 99, &o->hot);
			break;
		case OPT_FLUSH_EVERY:
			ok = parse_u64(a, &o->flush_every);
			break;
		case OPT_DATA:
			ok = -EINVAL;
			for (size_t i = 0; i < TND_ARRAY_SIZE(data_names); i++)
				if (strcmp(a, data_names[i]) == 0) {
					o->data = (enum bench_data)i;
					ok = 0;
				}
			break;
		case OPT_TIME:
			ok = parse_seconds(a, &o->time_s);
			break;
		case OPT_RAMP:
			ok = parse_seconds(a, &o->ramp_s);
			break;
		case OPT_COUNT:
			ok = parse_u64(a, &o->count);
			break;
		case OPT_SIZE:
			ok = parse_bytes(a, &o->size);
			break;
		case OPT_SEED:
			ok = parse_u64(a, &o->seed);
			break;
		case OPT_VERIFY:
			o->verify = true;
			break;
		case OPT_TARGET_PID: {
			int pid;
			ok = parse_int(a, 1, 1 << 30, &pid);
			o->target_pid = (pid_t)pid;
			break;
		}
		case OPT_HDR_DIGEST:
			o->header_digest = true;
			break;
		case OPT_DATA_DIGEST:
			o->data_digest = true;
			break;
		case OPT_INITIATOR:
			o->initiator = a;
			break;
		case OPT_JSON:
			o->json = true;
			break;
		case OPT_MAX_ERRORS:
			ok = parse_int(a, 1, 1 << 30, &o->max_errors);
			break;
		case OPT_THREADS:
			ok = parse_int(a, 1, 256, &o->threads);
			break;
		case OPT_NO_CORK:
			o->cork = false;
			break;
		case OPT_HELP:
			usage(stdout);
			return EXIT_HELP;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
		if (ok < 0) {
			fprintf(stderr, "tandem-bench: bad value for --%s: %s\n",
				long_opts[c - OPT_URL].name, a);
			bad = 1;
		}
	}
	if (bad)
		return EXIT_USAGE;
	if (optind < argc) {
		fprintf(stderr, "tandem-bench: unexpected argument %s\n", argv[optind]);
		return EXIT_USAGE;
	}
	if (o->nurls == 0) {
		fprintf(stderr, "tandem-bench: --url is required (see --help)\n");
		return EXIT_USAGE;
	}
	if (o->time_s == 0 && o->count == 0)
		o->time_s = 10;
	if (o->time_s > 0 && o->count > 0) {
		fprintf(stderr, "tandem-bench: give --time or --count, not both\n");
		return EXIT_USAGE;
	}
	if (o->data_digest && !tnd_client_data_digest()) {
		fprintf(stderr, "tandem-bench: this libiscsi cannot negotiate data digests\n");
		return EXIT_UNSUPPORTED;
	}
	return 0;
}

/* ---- reporting ---------------------------------------------------------------- */

struct result {
	double elapsed;
	double iops, read_iops, write_iops;
	double mbps, read_mbps, write_mbps;
	double target_cpu;        /* seconds; <0 unknown */
	double ops_per_cpu;       /* reads+writes per target CPU-second */
	double self_cpu;
};

static struct result summarise(const struct bench *b)
{
	const struct bench_stats *st = &b->st;
	struct result r = { .target_cpu = -1 };

	r.elapsed = (double)(b->t_end - b->t_start) / 1e9;
	if (r.elapsed <= 0)
		r.elapsed = 1e-9;
	r.read_iops = (double)st->ops[BENCH_OP_READ] / r.elapsed;
	r.write_iops = (double)st->ops[BENCH_OP_WRITE] / r.elapsed;
	r.iops = r.read_iops + r.write_iops;
	r.read_mbps = (double)st->bytes[BENCH_OP_READ] / r.elapsed / 1e6;
	r.write_mbps = (double)st->bytes[BENCH_OP_WRITE] / r.elapsed / 1e6;
	r.mbps = r.read_mbps + r.write_mbps;
	if (b->cpu_before >= 0 && b->cpu_after >= b->cpu_before)
		r.target_cpu = (double)(b->cpu_after - b->cpu_before) /
			       (double)sysconf(_SC_CLK_TCK);
	/* Commands done per second of the target's CPU: the whole window's
	 * reads and writes over its CPU time (not IOPS over CPU time, which
	 * would shrink with the length of the run). */
	if (r.target_cpu > 0)
		r.ops_per_cpu = (double)(st->ops[BENCH_OP_READ] + st->ops[BENCH_OP_WRITE]) /
				r.target_cpu;
	r.self_cpu = (double)(b->self_cpu_after - b->self_cpu_before) / 1e9;
	return r;
}

static double us(uint64_t ns)
{
	return (double)ns / 1000.0;
}

static void print_lat_json(const char *name, const struct bench_hist *h, bool comma)
{
	printf("  \"%s\": {\"count\": %" PRIu64 ", \"p50_us\": %.1f, \"p99_us\": %.1f, "
	       "\"p999_us\": %.1f, \"mean_us\": %.1f, \"max_us\": %.1f}%s\n",
	       name, h->count, us(bench_hist_pct(h, 50)), us(bench_hist_pct(h, 99)),
	       us(bench_hist_pct(h, 99.9)), us(bench_hist_mean(h)), us(h->count ? h->max : 0),
	       comma ? "," : "");
}

static void print_json(const struct bench *b, const struct result *r)
{
	static const char *const rw_names[] = {
		[BENCH_RW_READ] = "read", [BENCH_RW_WRITE] = "write", [BENCH_RW_MIXED] = "mixed",
	};
	const struct bench_opts *o = b->o;
	const struct bench_stats *st = &b->st;

	printf("{\n");
	printf("  \"urls\": [");
	for (int i = 0; i < o->nurls; i++) {
		/* URLs are iscsi://host:port/iqn/lun: no quotes or backslashes to escape. */
		printf("%s\"%s\"", i ? ", " : "", o->urls[i]);
	}
	printf("],\n");
	printf("  \"sessions\": %d, \"threads\": %d, \"bs\": %u, \"qd\": %d, \"rw\": \"%s\","
	       " \"mix\": %d, \"pattern\": \"%s\", \"hot\": %d, \"flush_every\": %" PRIu64 ", \"verify\": %s,"
	       " \"cork\": %s,\n",
	       o->sessions, o->threads, o->bs, o->qd, rw_names[o->rw], o->mix,
	       o->pattern == BENCH_PAT_SEQ ? "seq" : "rand", o->hot, o->flush_every,
	       o->verify ? "true" : "false", o->cork ? "true" : "false");
	printf("  \"elapsed_s\": %.3f,\n", r->elapsed);
	printf("  \"iops\": %.1f, \"read_iops\": %.1f, \"write_iops\": %.1f,\n",
	       r->iops, r->read_iops, r->write_iops);
	printf("  \"mbps\": %.2f, \"read_mbps\": %.2f, \"write_mbps\": %.2f,\n",
	       r->mbps, r->read_mbps, r->write_mbps);
	print_lat_json("lat", &st->lat_io, true);
	print_lat_json("read_lat", &st->lat[BENCH_OP_READ], true);
	print_lat_json("write_lat", &st->lat[BENCH_OP_WRITE], true);
	print_lat_json("flush_lat", &st->lat[BENCH_OP_FLUSH], true);
	printf("  \"flushes\": %" PRIu64 ",\n", st->ops[BENCH_OP_FLUSH]);
	printf("  \"errors\": %" PRIu64 ",\n", st->errors);
	printf("  \"data_segs_out\": %" PRIu64 ",\n", st->data_segs);
	printf("  \"verified\": %" PRIu64 ", \"mismatches\": %" PRIu64 ",\n",
	       st->verified_units, st->mismatches);
	if (r->target_cpu >= 0)
		printf("  \"target_cpu_s\": %.2f, \"iops_per_target_cpu_s\": %.1f,\n",
		       r->target_cpu, r->ops_per_cpu);
	else
		printf("  \"target_cpu_s\": null, \"iops_per_target_cpu_s\": null,\n");
	printf("  \"bench_cpu_s\": %.2f\n", r->self_cpu);
	printf("}\n");
}

static void fmt_lat(char *buf, size_t len, uint64_t ns)
{
	if (ns >= 10000000)
		snprintf(buf, len, "%.1f ms", (double)ns / 1e6);
	else if (ns >= 1000000)
		snprintf(buf, len, "%.2f ms", (double)ns / 1e6);
	else
		snprintf(buf, len, "%.0f us", (double)ns / 1e3);
}

static void print_lat_text(const char *name, const struct bench_hist *h)
{
	char p50[32], p99[32], p999[32], mean[32], max[32];

	if (h->count == 0)
		return;
	fmt_lat(p50, sizeof(p50), bench_hist_pct(h, 50));
	fmt_lat(p99, sizeof(p99), bench_hist_pct(h, 99));
	fmt_lat(p999, sizeof(p999), bench_hist_pct(h, 99.9));
	fmt_lat(mean, sizeof(mean), bench_hist_mean(h));
	fmt_lat(max, sizeof(max), h->max);
	printf("  %-9s p50 %s  p99 %s  p99.9 %s  (mean %s, max %s)\n",
	       name, p50, p99, p999, mean, max);
}

static void print_text(const struct bench *b, const struct result *r)
{
	static const char *const rw_names[] = {
		[BENCH_RW_READ] = "read", [BENCH_RW_WRITE] = "write", [BENCH_RW_MIXED] = "mixed",
	};
	const struct bench_opts *o = b->o;
	const struct bench_stats *st = &b->st;

	printf("tandem-bench: %d url x %d session(s) x QD%d, bs %u, %s",
	       o->nurls, o->sessions, o->qd, o->bs, rw_names[o->rw]);
	if (o->rw == BENCH_RW_MIXED)
		printf(" (%d%% read)", o->mix);
	if (o->threads > 1)
		printf(", %d threads", o->threads);
	printf(", %s", o->pattern == BENCH_PAT_SEQ ? "seq" : "rand");
	if (o->hot && o->pattern != BENCH_PAT_SEQ)
		printf(" (%d%% of I/Os to %d%% of the blocks)", o->hot, 100 - o->hot);
	if (o->flush_every)
		printf(", flush every %" PRIu64, o->flush_every);
	if (!o->cork)
		printf(", uncorked");
	printf(", %.2f s\n", r->elapsed);
	printf("  IOPS      %.0f (read %.0f, write %.0f)\n", r->iops, r->read_iops, r->write_iops);
	printf("  MB/s      %.1f (read %.1f, write %.1f)\n", r->mbps, r->read_mbps, r->write_mbps);
	print_lat_text("latency", &st->lat_io);
	if (o->rw == BENCH_RW_MIXED) {
		print_lat_text("read", &st->lat[BENCH_OP_READ]);
		print_lat_text("write", &st->lat[BENCH_OP_WRITE]);
	}
	if (st->ops[BENCH_OP_FLUSH]) {
		printf("  flushes   %" PRIu64 "\n", st->ops[BENCH_OP_FLUSH]);
		print_lat_text("flush", &st->lat[BENCH_OP_FLUSH]);
	}
	printf("  errors    %" PRIu64 "\n", st->errors);
	uint64_t cmds = st->ops[BENCH_OP_READ] + st->ops[BENCH_OP_WRITE] + st->ops[BENCH_OP_FLUSH];
	if (st->data_segs && cmds)
		printf("  segments  %" PRIu64 " sent with data, %.2f per command\n", st->data_segs,
		       (double)st->data_segs / (double)cmds);
	if (o->verify)
		printf("  verify    %" PRIu64 " reads checked, %" PRIu64 " mismatches\n",
		       st->verified_units, st->mismatches);
	if (r->target_cpu >= 0)
		printf("  target    %.2f CPU s, %.0f IOPS per target CPU-second\n",
		       r->target_cpu, r->ops_per_cpu);
	printf("  bench     %.2f CPU s\n", r->self_cpu);
}

int main(int argc, char **argv)
{
	struct bench_opts o;
	struct bench b;
	int rc = parse_args(argc, argv, &o);
	if (rc == EXIT_HELP) {
		rc = 0;
		goto out_free_urls;
	}
	if (rc != 0)
		goto out_free_urls;

	int ret = bench_setup(&b, &o);
	if (ret < 0) {
		if (ret == -ENOMEM)
			fprintf(stderr, "tandem-bench: out of memory\n");
		rc = EXIT_USAGE;
		goto out_teardown;
	}
	ret = bench_run(&b);
	if (ret < 0) {
		fprintf(stderr, "tandem-bench: %s\n", strerror(-ret));
		rc = EXIT_USAGE;
		goto out_teardown;
	}
	struct result r = summarise(&b);
	if (o.json)
		print_json(&b, &r);
	else
		print_text(&b, &r);
	fflush(stdout);
	rc = (b.st.errors || b.st.mismatches) ? EXIT_IO_ERRORS : 0;

out_teardown:
	bench_teardown(&b);
out_free_urls:
	free(o.urls);
	return rc;
}
