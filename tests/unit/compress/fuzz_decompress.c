/*
 * libFuzzer target for the codec. The first input byte picks what to do
 * with the rest:
 *   even: decode it as stored LZ4 into an exactly sized heap buffer of
 *         (1 + (byte >> 1) % 8) blocks; ASan flags any write past it, and
 *         success must mean the full length was produced (the API says so).
 *   odd:  compress it (padded with zeros to whole blocks, at most 8) and
 *         check that a COMPRESSED result decodes back to the input.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tnd_compress.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	uint8_t mode = data[0];
	data++;
	size--;

	if (!(mode & 1)) {
		size_t expect = (1 + (size_t)(mode >> 1) % 8) * TND_COMPRESS_BLOCK;
		uint8_t *out = malloc(expect);
		if (!out)
			return 0;
		int rc = tnd_decompress(data, size, out, expect);
		if (rc != 0 && rc != -EILSEQ)
			abort();
		free(out);
		return 0;
	}

	struct tnd_compress_ctx *c;
	if (tnd_compress_ctx_create(NULL, &c) < 0)
		abort();
	size_t max = 8 * TND_COMPRESS_BLOCK;
	size_t len = size > max ? max : size;
	size_t padded = (len + TND_COMPRESS_BLOCK - 1) / TND_COMPRESS_BLOCK * TND_COMPRESS_BLOCK;
	uint8_t *in = calloc(1, padded), *z = malloc(padded), *back = malloc(padded);
	if (!in || !z || !back)
		abort();
	memcpy(in, data, len);
	size_t clen = 0;
	int r = tnd_compress_block(c, in, padded, z, padded, &clen);
	if (r < 0)
		abort();
	if (r == TND_COMPRESS_COMPRESSED) {
		if (clen + TND_COMPRESS_SECTOR > padded)
			abort();
		if (tnd_decompress(z, clen, back, padded) != 0 || memcmp(back, in, padded))
			abort();
	} else if (r == TND_COMPRESS_ZERO && !tnd_compress_is_zero(in, padded)) {
		abort();
	}
	free(in);
	free(z);
	free(back);
	tnd_compress_ctx_destroy(c);
	return 0;
}
