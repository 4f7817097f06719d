/*
 * fuzz_login_keys.c — libFuzzer target for the text key parser and the
 * negotiator.
 *
 * Input layout:
 *   [0]   bits 0-1 stage (security, operational, full feature), bit2 run
 *         the text a second time (renegotiation), bit3 declare afterwards
 *   [1..] the request text ("key=value\0" pairs, any bytes)
 *
 * Checked: no crash, leak or out-of-bounds access; the response is a
 * well-formed list of "key=value\0" pairs within the size limit; the
 * negotiated parameters stay inside their RFC 7143 ranges and our offers.
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
#include "../../target/src/iscsi_text.c"

#define CHECK(x) do { if (!(x)) __builtin_trap(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_response(const struct tnd_iscsi_text *t)
{
	CHECK(t->len <= TND_ISCSI_TEXT_MAX);
	size_t off = 0;
	while (off < t->len) {
		const char *kv = t->buf + off;
		size_t l = strnlen(kv, t->len - off);
		CHECK(l < t->len - off);          /* NUL terminated */
		CHECK(memchr(kv, '=', l) != NULL);
		off += l + 1;
	}
}

static void check_params(const struct tnd_iscsi_params *p)
{
	CHECK(p->max_burst >= 512 && p->max_burst <= TND_ISCSI_OUR_MAX_BURST);
	CHECK(p->first_burst >= 512 && p->first_burst <= TND_ISCSI_OUR_FIRST_BURST);
	CHECK(p->max_outstanding_r2t >= 1 &&
	      p->max_outstanding_r2t <= TND_ISCSI_OUR_MAX_OUTSTANDING_R2T);
	CHECK(p->max_xmit_dsl >= 512 && p->max_xmit_dsl < (1u << 24));
	CHECK(p->erl == 0);
	CHECK(p->max_conns == 1);
	CHECK(p->data_pdu_in_order && p->data_seq_in_order);
	CHECK(p->time2wait <= 3600 && p->time2retain <= 20);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const unsigned stages[] = { TND_ISCSI_IN_SECURITY, TND_ISCSI_IN_OPERATIONAL,
					   TND_ISCSI_IN_FFP, TND_ISCSI_IN_OPERATIONAL };
	if (size < 1 || size - 1 > TND_ISCSI_TEXT_MAX)
		return 0;
	unsigned stage = stages[data[0] & 3];
	int rounds = (data[0] & 4) ? 2 : 1;
	struct tnd_iscsi_negotiator ng;
	tnd_iscsi_negotiator_init(&ng);
	struct tnd_iscsi_pair *pairs = malloc(TND_ISCSI_PAIRS_MAX * sizeof(*pairs));
	char *buf = malloc(size);
	if (!pairs || !buf)
		goto out;
	for (int r = 0; r < rounds; r++) {
		memcpy(buf, data + 1, size - 1);
		int n = tnd_iscsi_text_parse(buf, size - 1, pairs, TND_ISCSI_PAIRS_MAX);
		if (n < 0)
			break;
		for (int i = 0; i < n; i++) {
			CHECK(strlen(pairs[i].key) <= TND_ISCSI_KEY_MAX && pairs[i].key[0]);
			CHECK(pairs[i].value_too_long == (strlen(pairs[i].value) > TND_ISCSI_VALUE_MAX));
		}
		struct tnd_iscsi_text resp = { 0 };
		int ret = tnd_iscsi_negotiate(&ng, stage, pairs, (unsigned)n, &resp);
		if (ret == 0 && (data[0] & 8))
			ret = tnd_iscsi_negotiate_declare(&ng, &resp);
		check_response(&resp);
		tnd_iscsi_text_free(&resp);
		check_params(&ng.params);
		CHECK(strlen(ng.initiator_name) <= TND_ISCSI_NAME_MAX);
		CHECK(strlen(ng.target_name) <= TND_ISCSI_NAME_MAX);
	}
out:
	free(pairs);
	free(buf);
	return 0;
}
