/* Logging to stderr; see tnd_common.h. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "tnd_common.h"

/*
 * The one piece of process-wide state in common/: written by main before
 * threads start, read-only afterwards. An atomic keeps TSan quiet if a
 * later change sets it at run time.
 */
static _Atomic int log_level = TND_LOG_INFO;

static const char *const level_names[] = {
	[TND_LOG_ERROR] = "error",
	[TND_LOG_WARN] = "warn",
	[TND_LOG_INFO] = "info",
	[TND_LOG_DEBUG] = "debug",
};

void tnd_log_set_level(enum tnd_log_level level) { log_level = level; }
enum tnd_log_level tnd_log_get_level(void) { return log_level; }

int tnd_log_parse_level(const char *s, enum tnd_log_level *out)
{
	for (size_t i = 0; i < TND_ARRAY_SIZE(level_names); i++) {
		if (strcmp(s, level_names[i]) == 0) {
			*out = (enum tnd_log_level)i;
			return 0;
		}
	}
	return -EINVAL;
}

void tnd_log(enum tnd_log_level level, const char *tag, const char *fmt, ...)
{
	if ((int)level > log_level)
		return;

	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);

	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	/* One fprintf per line so concurrent threads don't interleave mid-line. */
	fprintf(stderr, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s %s: %s\n",
		tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
		tm.tm_sec, ts.tv_nsec / 1000000, level_names[level], tag, msg);
}
