/*
 * Deterministic test data for the codec's tests, fuzzer seeds and bench:
 * random bytes, text-like bytes (words from a small vocabulary, so LZ4
 * finds matches as it does in documents and logs), and mixtures.
 */
#ifndef TND_TEST_COMPRESS_DATA_H
#define TND_TEST_COMPRESS_DATA_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline uint64_t td_next(uint64_t *s)
{
	/* xorshift64*: good enough for test data, and reproducible. */
	uint64_t x = *s;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * UINT64_C(2685821657736338717);
}

static inline void td_random(uint64_t *s, void *buf, size_t len)
{
	unsigned char *p = buf;
	while (len >= 8) {
		uint64_t v = td_next(s);
		memcpy(p, &v, 8);
		p += 8;
		len -= 8;
	}
	while (len--)
		*p++ = (unsigned char)td_next(s);
}

static inline void td_text(uint64_t *s, void *buf, size_t len)
{
	static const char *const words[] = {
		"the", "volume", "block", "write", "read", "segment", "checkpoint",
		"initiator", "target", "replica", "of", "and", "to", "a", "in",
		"is", "that", "for", "with", "on", "as", "device", "lsfs", "map",
		"log", "record", "header", "payload", "sequence", "number", "\n",
	};
	char *p = buf;
	size_t n = 0;
	while (n < len) {
		const char *w = words[td_next(s) % (sizeof(words) / sizeof(words[0]))];
		for (size_t i = 0; w[i] && n < len; i++)
			p[n++] = w[i];
		if (n < len)
			p[n++] = ' ';
	}
}

#endif
