/*
 * fuzz_cdb.c — libFuzzer target for the SCSI layer: random CDBs with
 * random data-out against a small in-memory volume.
 *
 * Input layout:
 *   [0]     flags: bit0 no LU, bit1 clear the power-on UA first,
 *           bit2 use the 4 KiB-block LU, bit3 inject a volume error,
 *           bit4 LU reset first, bit5 resize the volume first,
 *           bits 6-7 pick cdb_len (16, 6, 10, 12)
 *   [1]     bits 0-2: which error, 3-6: which I/O type to fail,
 *           bit 7: give the PDU the wrong data direction
 *   [2..3]  the transport's buffer length (data_len), big-endian
 *   [4..19] the CDB
 *   [20..]  data-out (copied into the buffer, the rest zeroed)
 *
 * Checked: no crash, no leak, no out-of-bounds access (ASan), every
 * command completes exactly once, in_len never exceeds data_len, a CHECK
 * CONDITION carries sense, and no volume I/O is left in flight.
 *
 * The volume completes through a message to the reactor this thread
 * polls, as the async contract asks. The reactor and volumes live for the
 * whole run (libFuzzer has no teardown hook); fresh LUs (so fresh
 * reservation state) and a fresh nexus per input keep inputs independent.
 *
 * Reservations: before a PERSISTENT RESERVE OUT other than a REGISTER, the
 * harness registers this nexus with the input's RESERVATION KEY and a
 * second nexus with key 2 that holds a Write Exclusive reservation, so
 * RESERVE, RELEASE, CLEAR, PREEMPT and REGISTER AND MOVE get past the key
 * check and meet real state.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The library is built with -fsanitize=fuzzer-no-link in the fuzz build,
 * so libFuzzer sees its coverage through plain linking. */
#include "scsi.h"
#include "tnd_common.h"
#include "tnd_reactor.h"
#include "tnd_volume.h"
#include "fvol.h"


/* ---- the harness ---- */

struct world {
	struct tnd_reactor *r;
	struct fvol *vol[2];
	struct tnd_scsi_lu *lu[2];
};

static void world_new_lus(struct world *w)
{
	static const char *const names[2] = { "fuzz512", "fuzz4k" };
	for (int i = 0; i < 2; i++) {
		tnd_scsi_lu_destroy(w->lu[i]);
		struct tnd_scsi_lu_desc d = { .name = names[i], .vol = &w->vol[i]->vol };
		if (tnd_scsi_lu_create(&d, &w->lu[i]) < 0)
			abort();
	}
}

static struct world *world_get(void)
{
	static struct world *w;
	if (w) {
		world_new_lus(w);
		return w;
	}
	w = calloc(1, sizeof(*w));
	if (!w || tnd_reactor_create(0, 64, &w->r) < 0)
		abort();
	static const uint32_t bs[2] = { 512, 4096 };
	for (int i = 0; i < 2; i++)
		w->vol[i] = fvol_create(bs[i], 64);
	world_new_lus(w);
	return w;
}

static const int errs[] = { -EIO, -EILSEQ, -ENOSPC, -EROFS, -EINVAL, -ENOMEM, -EBUSY, -EPERM };
static const uint8_t cdb_lens[] = { 16, 6, 10, 12 };
static const uint64_t luns[] = { 0, 1, 7 };

static void run(struct world *w, struct tnd_scsi_nexus *nx, struct tnd_scsi_lu *lu,
		const uint8_t *cdb, uint8_t cdb_len, uint8_t *buf, uint32_t len, bool wrong_dir)
{
	/* The PDU's direction: what the CDB implies, or (when the input asks)
	 * a wrong one, as a broken initiator might send. */
	enum tnd_scsi_dir dir = TND_SCSI_DIR_NONE;
	uint32_t xlen;
	if (tnd_scsi_cdb_xfer(lu, cdb, cdb_len, &dir, &xlen) < 0 || dir == TND_SCSI_DIR_NONE)
		dir = len ? TND_SCSI_DIR_READ : TND_SCSI_DIR_NONE;
	if (wrong_dir)
		dir = (enum tnd_scsi_dir)((dir + 1) % 3);
	struct fuzz_cmd f;
	fuzz_cmd_init(&f, w->r, nx, lu, cdb, cdb_len, buf, len, dir);
	f.c.luns = luns;
	f.c.nr_luns = 3;
	/* Both LUs are in the view (EXTENDED COPY may name either). */
	struct tnd_scsi_lu *view[3] = { w->lu[0], w->lu[1], NULL };
	f.c.view_lus = view;
	fuzz_cmd_run(&f, w->r, 10000, w->vol, 2);
}

/* PERSISTENT RESERVE OUT with a basic parameter list. */
static void prout(struct world *w, struct tnd_scsi_nexus *nx, struct tnd_scsi_lu *lu,
		  uint8_t sa, uint8_t type, uint64_t rk, uint64_t sark)
{
	uint8_t p[24] = { 0 };
	tnd_put_be64(p, rk);
	tnd_put_be64(p + 8, sark);
	uint8_t cdb[16] = { 0x5f, sa, type, 0, 0, 0, 0, 0, sizeof(p), 0 };
	run(w, nx, lu, cdb, 10, p, sizeof(p), false);
}

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t size)
{
	if (size < 20)
		return 0;
	struct world *w = world_get();
	uint8_t flags = in[0];
	unsigned which = (flags >> 2) & 1;
	struct fvol *fv = w->vol[which];
	struct tnd_scsi_lu *lu = (flags & 1) ? NULL : w->lu[which];

	/* Each input starts from the same medium state. */
	fv->info.num_blocks = fv->cap_blocks;
	fv->fail_err = 0;
	w->vol[0]->info.num_blocks = w->vol[0]->cap_blocks;
	w->vol[1]->info.num_blocks = w->vol[1]->cap_blocks;

	struct tnd_scsi_port port = { .target_name = "iqn.2026-01.fuzz:t", .tpgt = 1,
				      .rel_port_id = 1 };
	struct tnd_scsi_nexus *nx;
	if (tnd_scsi_nexus_create("iqn.2026-01.fuzz:i,i,0x1", &port, &nx) < 0)
		abort();

	uint32_t len = tnd_get_be16(in + 2);
	uint8_t *buf = len ? malloc(len) : NULL;
	if (len && !buf)
		abort();
	size_t payload = size - 20;
	if (len) {
		memset(buf, 0, len);
		memcpy(buf, in + 20, TND_MIN((size_t)len, payload));
	}

	static const uint8_t tur[16] = { 0 };
	if (flags & 0x02)
		run(w, nx, lu, tur, 16, NULL, 0, false);
	const uint8_t *cdb = in + 4;
	struct tnd_scsi_nexus *other = NULL;
	if (lu && cdb[0] == 0x5f && (cdb[1] & 0x1f) != 0 && (cdb[1] & 0x1f) != 6 && len >= 8) {
		struct tnd_scsi_port p2 = port;
		if (tnd_scsi_nexus_create("iqn.2026-01.fuzz:j,i,0x2", &p2, &other) < 0)
			abort();
		run(w, other, lu, tur, 16, NULL, 0, false);
		run(w, nx, lu, tur, 16, NULL, 0, false);
		prout(w, other, lu, 6, 0, 0, 2);
		prout(w, other, lu, 1, 1, 2, 0);
		prout(w, nx, lu, 6, 0, 0, tnd_get_be64(buf));
	}
	if (lu && (flags & 0x10))
		tnd_scsi_lu_reset(lu);
	if (flags & 0x20)
		fv->info.num_blocks = fv->cap_blocks - (in[1] & 0x1f);
	if (flags & 0x08) {
		fv->fail_err = errs[in[1] & 7];
		fv->fail_type = (enum tnd_io_type)(((in[1] >> 3) & 0xf) % 5);
	}

	run(w, nx, lu, in + 4, cdb_lens[flags >> 6], buf, len, in[1] & 0x80);
	/* A second command on the same nexus sees what the first left. */
	run(w, nx, lu, tur, 16, NULL, 0, false);

	free(buf);
	tnd_scsi_nexus_destroy(other);
	tnd_scsi_nexus_destroy(nx);
	return 0;
}
