/*
 * metrics.c — GET /metrics: the backend's stats object (docs/api.md) in the
 * Prometheus text exposition format, version 0.0.4.
 *
 * The format wants every sample of one metric family together, after its
 * HELP and TYPE lines, so the outer loop is over families (a table) and the
 * inner one over devices. A stat the backend does not give is left out, not
 * reported as zero: a missing number and a zero mean different things on a
 * dashboard.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tnd_common.h"
#include "tnd_mgmt.h"

struct family {
	const char *key;        /* member of a device's stats object */
	const char *name;
	const char *type;
	const char *help;
};

static const struct family device_families[] = {
	{ .key = "size", .name = "tandem_device_size_bytes", .type = "gauge",
	  .help = "Logical size of the device." },
	{ .key = "logical_bytes", .name = "tandem_device_logical_bytes", .type = "gauge",
	  .help = "Bytes written and not unmapped, as the initiators see them." },
	{ .key = "physical_bytes", .name = "tandem_device_physical_bytes", .type = "gauge",
	  .help = "Bytes the device occupies on its backing store." },
	{ .key = "dedup_ratio", .name = "tandem_device_dedup_ratio", .type = "gauge",
	  .help = "Logical blocks per stored unique block." },
	{ .key = "compression_ratio", .name = "tandem_device_compression_ratio", .type = "gauge",
	  .help = "Uncompressed bytes per stored byte." },
	{ .key = "read_ops", .name = "tandem_device_read_ops_total", .type = "counter",
	  .help = "Read commands completed." },
	{ .key = "write_ops", .name = "tandem_device_write_ops_total", .type = "counter",
	  .help = "Write commands completed." },
	{ .key = "read_bytes", .name = "tandem_device_read_bytes_total", .type = "counter",
	  .help = "Bytes read." },
	{ .key = "write_bytes", .name = "tandem_device_write_bytes_total", .type = "counter",
	  .help = "Bytes written." },
};

static void put_label_value(FILE *f, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\' || *s == '"')
			fprintf(f, "\\%c", *s);
		else if (*s == '\n')
			fputs("\\n", f);
		else
			fputc(*s, f);
	}
}

static bool put_number(FILE *f, const json_t *v)
{
	if (json_is_integer(v))
		fprintf(f, "%" JSON_INTEGER_FORMAT "\n", json_integer_value(v));
	else if (json_is_real(v))
		fprintf(f, "%.17g\n", json_real_value(v));
	else
		return false;
	return true;
}

static void header(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One labelled sample: NAME{LABEL="VALUE"[,EXTRA]} NUMBER */
static void sample(FILE *f, const char *name, const char *label, const char *value,
		   const char *extra, const json_t *v)
{
	if (!json_is_number(v))
		return;
	fprintf(f, "%s{%s=\"", name, label);
	put_label_value(f, value);
	fprintf(f, "\"%s} ", extra ? extra : "");
	put_number(f, v);
}

/*
 * A latency histogram as the backend gives it: "buckets" of per-bucket (not
 * cumulative) counts with their upper bounds in microseconds, "count" (all
 * observations, including those above the last bound) and "sum_us".
 */
static void histogram(FILE *f, const char *dev, const char *op, const json_t *h)
{
	const json_t *buckets = json_object_get(h, "buckets");
	const json_t *count = json_object_get(h, "count");
	const json_t *sum = json_object_get(h, "sum_us");
	if (!json_is_array(buckets) || !json_is_integer(count))
		return;
	json_int_t cum = 0;
	size_t i;
	const json_t *b;
	json_array_foreach(buckets, i, b) {
		const json_t *le = json_object_get(b, "le_us");
		const json_t *n = json_object_get(b, "count");
		if (!json_is_number(le) || !json_is_integer(n))
			continue;
		cum += json_integer_value(n);
		fputs("tandem_device_latency_seconds_bucket{device=\"", f);
		put_label_value(f, dev);
		fprintf(f, "\",op=\"%s\",le=\"%.17g\"} %" JSON_INTEGER_FORMAT "\n", op,
			json_number_value(le) / 1e6, cum);
	}
	fputs("tandem_device_latency_seconds_bucket{device=\"", f);
	put_label_value(f, dev);
	fprintf(f, "\",op=\"%s\",le=\"+Inf\"} %" JSON_INTEGER_FORMAT "\n", op,
		json_integer_value(count));
	if (json_is_number(sum)) {
		fputs("tandem_device_latency_seconds_sum{device=\"", f);
		put_label_value(f, dev);
		fprintf(f, "\",op=\"%s\"} %.17g\n", op, json_number_value(sum) / 1e6);
	}
	fputs("tandem_device_latency_seconds_count{device=\"", f);
	put_label_value(f, dev);
	fprintf(f, "\",op=\"%s\"} %" JSON_INTEGER_FORMAT "\n", op, json_integer_value(count));
}

char *tnd_mgmt_metrics_text(const json_t *stats)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	if (!f)
		return NULL;

	const json_t *v = json_object_get(stats, "uptime_seconds");
	if (json_is_number(v)) {
		header(f, "tandem_uptime_seconds", "gauge", "Seconds since tandemd started.");
		fputs("tandem_uptime_seconds ", f);
		put_number(f, v);
	}
	v = json_object_get(stats, "sessions");
	if (json_is_number(v)) {
		header(f, "tandem_sessions", "gauge", "iSCSI sessions logged in.");
		fputs("tandem_sessions ", f);
		put_number(f, v);
	}

	const json_t *targets = json_object_get(stats, "targets");
	size_t i;
	const json_t *t, *d;
	if (json_is_array(targets) && json_array_size(targets)) {
		header(f, "tandem_target_sessions", "gauge", "iSCSI sessions logged in, per target.");
		json_array_foreach(targets, i, t) {
			const char *iqn = json_string_value(json_object_get(t, "iqn"));
			if (iqn)
				sample(f, "tandem_target_sessions", "target", iqn, NULL,
				       json_object_get(t, "sessions"));
		}
	}

	const json_t *devices = json_object_get(stats, "devices");
	if (!json_is_array(devices))
		devices = NULL;
	for (size_t k = 0; devices && k < TND_ARRAY_SIZE(device_families); k++) {
		const struct family *fam = &device_families[k];
		header(f, fam->name, fam->type, fam->help);
		json_array_foreach(devices, i, d) {
			const char *name = json_string_value(json_object_get(d, "name"));
			if (name)
				sample(f, fam->name, "device", name, NULL, json_object_get(d, fam->key));
		}
	}
	if (devices) {
		header(f, "tandem_device_state", "gauge",
		       "1 for the state the device is in (online, degraded, failed, ...).");
		json_array_foreach(devices, i, d) {
			const char *name = json_string_value(json_object_get(d, "name"));
			const char *state = json_string_value(json_object_get(d, "state"));
			if (!name || !state)
				continue;
			fputs("tandem_device_state{device=\"", f);
			put_label_value(f, name);
			fputs("\",state=\"", f);
			put_label_value(f, state);
			fputs("\"} 1\n", f);
		}
		header(f, "tandem_device_latency_seconds", "histogram",
		       "Command latency from submission to completion.");
		json_array_foreach(devices, i, d) {
			const char *name = json_string_value(json_object_get(d, "name"));
			const json_t *lat = json_object_get(d, "latency");
			if (!name || !json_is_object(lat))
				continue;
			static const char *const ops[] = { "read", "write" };
			for (size_t o = 0; o < TND_ARRAY_SIZE(ops); o++) {
				const json_t *h = json_object_get(lat, ops[o]);
				if (json_is_object(h))
					histogram(f, name, ops[o], h);
			}
		}
	}
	if (fclose(f) != 0) {
		free(text);
		return NULL;
	}
	return text;
}
