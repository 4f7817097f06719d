/*
 * fuzz_xcopy.c — libFuzzer target for the EXTENDED COPY parameter-list
 * parser and copy engine (target/src/scsi_xcopy.c), with the ACL guard as
 * an invariant.
 *
 * Three LUs: 0 (512-byte blocks) and 1 (4 KiB blocks) are in the nexus's
 * view, 2 is not. Random NAA designators would almost never name an LU,
 * so the harness fills them in: in every 32-byte CSCD slot of the
 * parameter list whose designator starts with a byte below 10h (no NAA 6
 * does), the 16 designator bytes become the NAA of LU (byte % 3); the
 * rest of the descriptor stays as the input has it.
 *
 * Input layout:
 *   [0]   bits 0-1: the LU the command is sent to (0 or 1; 2, 3 = 0),
 *         bit 2: inject a volume error, bits 3-5: ALUA state of LU 1
 *         (0-3, else active/optimized), bit 6: LU 1 read-only,
 *         bit 7: follow with RECEIVE COPY RESULTS (the SA from [1] bits 5-6)
 *   [1]   bits 0-2: which error, bit 3: fail reads (else writes),
 *         bit 4: cancel the command after its first step
 *   [2]   list identifier for the RECEIVE COPY RESULTS
 *   [3..] the parameter list (its length is the PARAMETER LIST LENGTH)
 *
 * Checked: no crash, leak or out-of-bounds access, exactly one
 * completion, CHECK CONDITION carries sense, nothing left in flight, and
 * LU 2 (outside the view) is never read or written.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scsi_priv.h"
#include "tnd_common.h"
#include "tnd_reactor.h"
#include "tnd_volume.h"
#include "fvol.h"


#define NLU 3

struct world {
	struct tnd_reactor *r;
	struct fvol *vol[NLU];
	struct tnd_scsi_lu *lu[NLU];
};

static struct world *world_get(void)
{
	static struct world *w;
	if (w)
		return w;
	w = calloc(1, sizeof(*w));
	if (!w || tnd_reactor_create(0, 64, &w->r) < 0)
		abort();
	static const uint32_t bs[NLU] = { 512, 4096, 512 };
	static const uint64_t nb[NLU] = { 8192, 1024, 64 };
	static const char *const names[NLU] = { "xc512", "xc4k", "hidden" };
	for (int i = 0; i < NLU; i++) {
		w->vol[i] = fvol_create(bs[i], nb[i]);
		w->vol[i]->rw_only = true;
		struct tnd_scsi_lu_desc d = { .name = names[i], .vol = &w->vol[i]->vol };
		if (tnd_scsi_lu_create(&d, &w->lu[i]) < 0)
			abort();
	}
	return w;
}

static const uint64_t luns[] = { 0, 1 };
static const int errs[] = { -EIO, -EILSEQ, -ENOSPC, -EROFS, -EINVAL, -ENOMEM, -EBUSY, -EPERM };
static const unsigned alua[] = {
	TND_SCSI_ALUA_ACTIVE_OPTIMIZED, TND_SCSI_ALUA_ACTIVE_NON_OPTIMIZED,
	TND_SCSI_ALUA_STANDBY, TND_SCSI_ALUA_UNAVAILABLE,
};

static void run(struct world *w, struct tnd_scsi_nexus *nx, struct tnd_scsi_lu *lu,
		const uint8_t *cdb, uint8_t *buf, uint32_t len, enum tnd_scsi_dir dir, bool cancel)
{
	struct fuzz_cmd f;
	fuzz_cmd_init(&f, w->r, nx, lu, cdb, 16, buf, len, dir);
	f.c.luns = luns;
	f.c.view_lus = w->lu;   /* the first two: LU 2 is outside the view */
	f.c.nr_luns = 2;
	f.cancel = cancel;
	fuzz_cmd_run(&f, w->r, 100000, w->vol, NLU);
	if (w->vol[2]->touched)
		abort(); /* an LU outside the view was read or written */
}

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t size)
{
	if (size < 3 || size > 4096)
		return 0;
	struct world *w = world_get();
	uint8_t flags = in[0], f1 = in[1];
	struct tnd_scsi_lu *lu = w->lu[(flags & 3) == 1 ? 1 : 0];
	for (int i = 0; i < NLU; i++) {
		w->vol[i]->fail_err = 0;
		w->vol[i]->info.read_only = false;
	}
	w->vol[1]->info.read_only = flags & 0x40;
	unsigned st = (flags >> 3) & 7;
	tnd_scsi_lu_set_alua_state(w->lu[1], st < 4 ? alua[st] : TND_SCSI_ALUA_ACTIVE_OPTIMIZED);
	if (flags & 0x04) {
		struct fvol *fv = w->vol[(f1 >> 5) & 1];
		fv->fail_err = errs[f1 & 7];
		fv->fail_type = (f1 & 0x08) ? TND_IO_READ : TND_IO_WRITE;
	}

	uint32_t len = (uint32_t)(size - 3);
	uint8_t *buf = malloc(len + 1);
	if (!buf)
		abort();
	memcpy(buf, in + 3, len);
	/* Name LUs in the CSCD slots (see the top of the file). */
	if (len >= 16) {
		uint32_t tlen = tnd_get_be16(buf + 2);
		for (uint32_t off = 16; off + 32 <= len && off < 16 + tlen; off += 32)
			if (buf[off + 8] < 0x10)
				memcpy(buf + off + 8, w->lu[buf[off + 8] % NLU]->naa, 16);
	}

	struct tnd_scsi_port port = { .target_name = "iqn.2026-01.fuzz:t", .tpgt = 1,
				      .rel_port_id = 1 };
	struct tnd_scsi_nexus *nx;
	if (tnd_scsi_nexus_create("iqn.2026-01.fuzz:i,i,0x1", &port, &nx) < 0)
		abort();
	static const uint8_t tur[16] = { 0 };
	/* Power-on (and ALUA change) unit attentions out of the way. */
	for (int i = 0; i < 3; i++)
		run(w, nx, lu, tur, NULL, 0, TND_SCSI_DIR_NONE, false);

	uint8_t cdb[16] = { 0x83, 0x00 };
	tnd_put_be32(cdb + 10, len);
	run(w, nx, lu, cdb, buf, len, len ? TND_SCSI_DIR_WRITE : TND_SCSI_DIR_NONE, f1 & 0x10);

	if (flags & 0x80) {
		static const uint8_t sas[4] = { 0x00, 0x03, 0x04, 0x01 };
		uint8_t rcr[16] = { 0x84, sas[(f1 >> 5) & 3], in[2] };
		uint8_t out[256];
		tnd_put_be32(rcr + 10, sizeof(out));
		run(w, nx, lu, rcr, out, sizeof(out), TND_SCSI_DIR_READ, false);
	}

	free(buf);
	tnd_scsi_nexus_destroy(nx);
	return 0;
}
