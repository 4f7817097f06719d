/*
 * tnd_common.h — small shared helpers: logging, CRC32C, sizes, errors.
 *
 * Logging goes to stderr (the daemon runs under systemd or a terminal), one
 * line per message with a level and a module tag. The threshold is set once
 * by main before any thread starts and only read afterwards.
 *
 * CRC32C is ISA-L's (hardware accelerated where the CPU allows), wrapped so
 * that the seed and final inversion follow the usual convention: the CRC of
 * "123456789" is 0xE3069283, and tnd_crc32c(tnd_crc32c(0, a), b) equals the
 * CRC of a followed by b.
 */
#ifndef TND_COMMON_H
#define TND_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#define TND_VERSION_MAJOR 0
#define TND_VERSION_MINOR 1
#define TND_VERSION_PATCH 0
#define TND_STR_(x) #x
#define TND_STR(x) TND_STR_(x)
#define TND_VERSION TND_STR(TND_VERSION_MAJOR) "." TND_STR(TND_VERSION_MINOR) "." \
	TND_STR(TND_VERSION_PATCH)
/* INQUIRY's four-character PRODUCT REVISION LEVEL: major, minor (2 digits), patch. */
#define TND_REVISION_DIGITS \
	{ '0' + TND_VERSION_MAJOR % 10, '0' + TND_VERSION_MINOR / 10 % 10, \
	  '0' + TND_VERSION_MINOR % 10, '0' + TND_VERSION_PATCH % 10 }

#define tnd_container_of(ptr, type, member) \
	((type *)((char *)(ptr) - offsetof(type, member)))

#define TND_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#define TND_MIN(a, b) ((a) < (b) ? (a) : (b))
#define TND_MAX(a, b) ((a) > (b) ? (a) : (b))

enum tnd_log_level {
	TND_LOG_ERROR,
	TND_LOG_WARN,
	TND_LOG_INFO,
	TND_LOG_DEBUG,
};

void tnd_log_set_level(enum tnd_log_level level);
enum tnd_log_level tnd_log_get_level(void);
/* Parse "error", "warn", "info", "debug". Returns 0 or -EINVAL. */
int tnd_log_parse_level(const char *s, enum tnd_log_level *out);

void tnd_log(enum tnd_log_level level, const char *tag, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#define tnd_err(tag, ...)   tnd_log(TND_LOG_ERROR, tag, __VA_ARGS__)
#define tnd_warn(tag, ...)  tnd_log(TND_LOG_WARN, tag, __VA_ARGS__)
#define tnd_info(tag, ...)  tnd_log(TND_LOG_INFO, tag, __VA_ARGS__)
#define tnd_debug(tag, ...) \
	do { if (tnd_log_get_level() >= TND_LOG_DEBUG) tnd_log(TND_LOG_DEBUG, tag, __VA_ARGS__); } while (0)

/* CRC32C (Castagnoli), continuing from @crc (0 to start). */
uint32_t tnd_crc32c(uint32_t crc, const void *buf, size_t len);

/*
 * Parse a size: plain bytes ("1048576") or with a binary suffix
 * (KiB, MiB, GiB, TiB; also K, M, G, T). Returns 0 or -EINVAL/-ERANGE.
 */
int tnd_parse_size(const char *s, uint64_t *out);

/*
 * Small files that must survive a crash whole (the persisted config, the
 * API token, APTPL reservations). These are blocking calls for the threads
 * that own such files (the API server, start-up), never for a reactor.
 * -errno on failure.
 */
/* write(2) all of @buf, across short writes and EINTR. */
int tnd_write_all(int fd, const void *buf, size_t len);
/* fsync(2) the directory @dir, making a rename or unlink in it durable. */
int tnd_fsync_dir(const char *dir);
/* Replace @dir/@name by @len bytes of @data, mode 0600: a temporary file in
 * @dir, fsync, rename over @name, fsync @dir. A crash leaves the old file or
 * the new one, never a mix; on error the old file is untouched. */
int tnd_file_replace(const char *dir, const char *name, const void *data, size_t len);

/* Big-endian load/store helpers for wire formats. */
static inline uint16_t tnd_get_be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t tnd_get_be24(const uint8_t *p) { return (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2]; }
static inline uint32_t tnd_get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline uint64_t tnd_get_be64(const uint8_t *p)
{
	return (uint64_t)tnd_get_be32(p) << 32 | tnd_get_be32(p + 4);
}
static inline void tnd_put_be16(uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = (uint8_t)v; }
static inline void tnd_put_be24(uint8_t *p, uint32_t v) { p[0] = (uint8_t)(v >> 16); p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)v; }
static inline void tnd_put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}
static inline void tnd_put_be64(uint8_t *p, uint64_t v)
{
	tnd_put_be32(p, (uint32_t)(v >> 32));
	tnd_put_be32(p + 4, (uint32_t)v);
}

#endif
