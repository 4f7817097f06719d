/* CRC32C through ISA-L; see tnd_common.h for the convention. */
#include <isa-l/crc.h>

#include "tnd_common.h"

uint32_t tnd_crc32c(uint32_t crc, const void *buf, size_t len)
{
	/* ISA-L takes the raw register and an int length: invert around it
	 * and feed large buffers in pieces. */
	uint32_t reg = ~crc;
	const unsigned char *p = buf;
	while (len > 0) {
		int n = len > (1u << 30) ? (1 << 30) : (int)len;
		reg = crc32_iscsi((unsigned char *)p, n, reg);
		p += n;
		len -= (size_t)n;
	}
	return ~reg;
}
