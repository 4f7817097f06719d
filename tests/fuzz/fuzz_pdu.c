/*
 * fuzz_pdu.c — libFuzzer target for the iSCSI PDU decoder.
 *
 * Input layout:
 *   [0]   bit0 HeaderDigest, bit1 DataDigest, bits 2-3 pick the
 *         MaxRecvDataSegmentLength limit (512, 8192, 262144, 16777215)
 *   [1..] a byte stream of PDUs, decoded one after another as a
 *         connection's receive buffer would be
 *
 * Checked: no crash or out-of-bounds read (ASan), lengths agree with each
 * other, the data segment lies inside the input, and the header-only
 * decoder agrees with the whole-PDU decoder. Text-carrying PDUs (Login,
 * Text) also go through the key parser.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/*
 * The code under test is compiled into this file rather than only linked
 * from tnd_target: the fuzz build instruments fuzz_*.c alone, and
 * libFuzzer needs coverage of the decoder itself to steer its mutations.
 * (Symbols defined here take the place of the library's copies.)
 */
#include "../../target/src/iscsi_pdu.c"
#include "../../target/src/iscsi_text.c"

#define CHECK(x) do { if (!(x)) __builtin_trap(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint32_t limits[] = { 512, 8192, 262144, (1u << 24) - 1 };
	if (size < 1)
		return 0;
	struct tnd_iscsi_pdu_limits lim = {
		.header_digest = data[0] & 1,
		.data_digest = data[0] & 2,
		.max_data = limits[(data[0] >> 2) & 3],
	};
	const uint8_t *p = data + 1;
	size_t left = size - 1;
	while (left > 0) {
		struct tnd_iscsi_hdr h, h2;
		const uint8_t *seg = NULL;
		int ret = tnd_iscsi_pdu_decode(p, left, &lim, &h, &seg);
		int hret = tnd_iscsi_hdr_decode(p, left, &lim, &h2);
		if (ret <= 0) {
			/* Header errors are seen by both decoders alike. */
			if (hret < 0)
				CHECK(ret == hret);
			break;
		}
		CHECK(hret == (int)h.hdr_len);
		CHECK(h.hdr_len >= ISCSI_BHS_LEN && h.hdr_len <= h.total_len);
		CHECK(h.total_len == h.hdr_len + h.data_len + h.trailer_len);
		CHECK((size_t)ret == h.total_len && h.total_len <= left);
		CHECK(h.data_len <= lim.max_data);
		CHECK(seg == p + h.hdr_len);
		CHECK(h.total_len % 4 == 0);
		if ((h.opcode == ISCSI_OP_LOGIN_REQ || h.opcode == ISCSI_OP_TEXT_REQ) &&
		    h.data_len <= TND_ISCSI_TEXT_MAX) {
			char *buf = malloc(h.data_len + 1);
			struct tnd_iscsi_pair *pairs = malloc(TND_ISCSI_PAIRS_MAX * sizeof(*pairs));
			if (buf && pairs) {
				memcpy(buf, seg, h.data_len);
				int n = tnd_iscsi_text_parse(buf, h.data_len, pairs, TND_ISCSI_PAIRS_MAX);
				for (int i = 0; i < n; i++)
					CHECK(strlen(pairs[i].key) <= TND_ISCSI_KEY_MAX);
			}
			free(buf);
			free(pairs);
		}
		p += h.total_len;
		left -= h.total_len;
	}
	return 0;
}
