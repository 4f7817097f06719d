/*
 * Unit tests for the SCSI layer (target/src/scsi*.c).
 *
 * Each test builds a fixture: a real reactor polled by the test thread, an
 * in-memory volume (memvol.c), an LU on it and a nexus. Commands go
 * through tnd_scsi_exec() exactly as the transport sends them, and the
 * tests check the bytes returned, status, sense, residual fields, and what
 * reached the volume.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "memvol.h"
#include "scsi.h"
#include "scsi_priv.h"
#include "tnd_common.h"
#include "tnd_reactor.h"

#define BS 512u
#define NBLOCKS 2048u

struct fx {
	struct tnd_reactor *r;
	struct memvol *mv;
	struct tnd_scsi_lu *lu;
	struct tnd_scsi_nexus *nx;
	uint64_t luns[3];
	struct tnd_scsi_lu *view[3];    /* the LUs behind luns[], for XCOPY */
};

struct tcmd {
	struct tnd_scsi_cmd c;
	int calls;
};

static const struct tnd_scsi_port port = {
	.target_name = "iqn.2026-01.test:disk",
	.tpgt = 1,
	.rel_port_id = 1,
};

static void on_done(struct tnd_scsi_cmd *cmd)
{
	struct tcmd *t = tnd_container_of(cmd, struct tcmd, c);
	t->calls++;
}

/* The PDU's direction as a well-behaved initiator sets it. */
static enum tnd_scsi_dir cdb_dir(const struct tnd_scsi_lu *lu, const uint8_t *cdb, uint32_t len)
{
	enum tnd_scsi_dir dir;
	uint32_t want;
	if (!len)
		return TND_SCSI_DIR_NONE;
	if (tnd_scsi_cdb_xfer(lu, cdb, 16, &dir, &want) == 0 && dir != TND_SCSI_DIR_NONE)
		return dir;
	return TND_SCSI_DIR_READ;
}

/* Run one command to completion and check it completed exactly once. */
static struct tcmd run_on(struct fx *f, struct tnd_scsi_nexus *nx, struct tnd_scsi_lu *lu,
			  void *data, uint32_t data_len, const uint8_t *cdb, unsigned cdb_len)
{
	struct tcmd t;
	memset(&t, 0, sizeof(t));
	memcpy(t.c.cdb, cdb, cdb_len);
	t.c.cdb_len = 16;
	t.c.lu = lu;
	t.c.nexus = nx;
	t.c.reactor = f->r;
	t.c.data = data;
	t.c.data_len = data_len;
	t.c.exp_len = data_len;
	t.c.dir = cdb_dir(lu, t.c.cdb, data_len);
	t.c.luns = f->luns;
	t.c.view_lus = f->view;
	t.c.nr_luns = 3;
	t.c.done = on_done;
	tnd_scsi_exec(&t.c);
	for (int i = 0; i < 1000 && t.calls == 0; i++)
		assert_true(tnd_reactor_poll(f->r, 10) >= 0);
	/* Anything still queued would be a second completion. */
	for (int i = 0; i < 3; i++)
		tnd_reactor_poll(f->r, 0);
	assert_int_equal(t.calls, 1);
	assert_null(t.c.io);
	assert_true(t.c.in_len <= data_len);
	return t;
}

#define CDB(...) (const uint8_t[]){ __VA_ARGS__ }, sizeof((const uint8_t[]){ __VA_ARGS__ })
#define RUN(f, data, len, ...) run_on((f), (f)->nx, (f)->lu, (data), (len), CDB(__VA_ARGS__))

static void assert_good(const struct tcmd *t)
{
	if (t->c.status != TND_SAM_GOOD)
		fail_msg("status %02x sense %x/%02x/%02x", t->c.status, t->c.sense[2] & 0xf,
			 t->c.sense[12], t->c.sense[13]);
}

static void assert_sense(const struct tcmd *t, uint8_t key, uint8_t asc, uint8_t ascq)
{
	assert_int_equal(t->c.status, TND_SAM_CHECK_CONDITION);
	assert_int_equal(t->c.sense_len, 18);
	assert_int_equal(t->c.sense[0] & 0x7f, 0x70);
	if ((t->c.sense[2] & 0xf) != key || t->c.sense[12] != asc || t->c.sense[13] != ascq)
		fail_msg("want %x/%02x/%02x got %x/%02x/%02x", key, asc, ascq,
			 t->c.sense[2] & 0xf, t->c.sense[12], t->c.sense[13]);
}

/* Sense-key-specific field pointer of an ILLEGAL REQUEST. */
static void assert_field_ptr(const struct tcmd *t, bool in_cdb, unsigned byte)
{
	assert_true(t->c.sense[15] & 0x80);
	assert_int_equal(!!(t->c.sense[15] & 0x40), in_cdb);
	assert_int_equal(tnd_get_be16(t->c.sense + 16), byte);
}

static struct fx *fx_new(uint32_t bs, uint64_t nblocks)
{
	struct fx *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	assert_int_equal(tnd_reactor_create(0, 64, &f->r), 0);
	f->mv = memvol_create(bs, nblocks);
	assert_non_null(f->mv);
	struct tnd_scsi_lu_desc d = { .name = "dev0", .vol = &f->mv->vol };
	assert_int_equal(tnd_scsi_lu_create(&d, &f->lu), 0);
	assert_int_equal(tnd_scsi_nexus_create("iqn.2026-01.test:host,i,0x1", &port, &f->nx), 0);
	f->luns[0] = 0;
	f->luns[1] = 1;
	f->luns[2] = 300;
	f->view[0] = f->lu;
	return f;
}

/* Consume the power-on unit attention so a test starts from quiet. */
static void fx_clear_ua(struct fx *f, struct tnd_scsi_nexus *nx)
{
	struct tcmd t = run_on(f, nx, f->lu, NULL, 0, CDB(0x00, 0, 0, 0, 0, 0));
	assert_sense(&t, 0x6, 0x29, 0x00);
	t = run_on(f, nx, f->lu, NULL, 0, CDB(0x00, 0, 0, 0, 0, 0));
	assert_good(&t);
}

static int setup(void **state)
{
	struct fx *f = fx_new(BS, NBLOCKS);
	fx_clear_ua(f, f->nx);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	tnd_scsi_nexus_destroy(f->nx);
	tnd_scsi_lu_destroy(f->lu);
	tnd_volume_destroy(&f->mv->vol);
	tnd_reactor_destroy(f->r);
	free(f);
	return 0;
}

static void put_rw10(uint8_t *c, uint8_t op, uint8_t b1, uint32_t lba, uint16_t n)
{
	memset(c, 0, 16);
	c[0] = op;
	c[1] = b1;
	tnd_put_be32(c + 2, lba);
	tnd_put_be16(c + 7, n);
}

static void put_rw16(uint8_t *c, uint8_t op, uint8_t b1, uint64_t lba, uint32_t n)
{
	memset(c, 0, 16);
	c[0] = op;
	c[1] = b1;
	tnd_put_be64(c + 2, lba);
	tnd_put_be32(c + 10, n);
}

static struct tcmd run_raw(struct fx *f, const uint8_t *cdb, void *data, uint32_t len)
{
	return run_on(f, f->nx, f->lu, data, len, cdb, 16);
}

/* ---- unit attentions ---- */

static void ua_power_on_sequence(void **state)
{
	struct fx *f = *state;
	struct tnd_scsi_nexus *nx;
	assert_int_equal(tnd_scsi_nexus_create("iqn.x,i,0x2", &port, &nx), 0);
	uint8_t buf[256];

	/* INQUIRY and REPORT LUNS answer normally and leave the UA pending. */
	struct tcmd t = run_on(f, nx, f->lu, buf, 96, CDB(0x12, 0, 0, 0, 96, 0));
	assert_good(&t);
	t = run_on(f, nx, f->lu, buf, 64, CDB(0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0));
	assert_good(&t);
	/* REQUEST SENSE returns it as data and clears it. */
	t = run_on(f, nx, f->lu, buf, 18, CDB(0x03, 0, 0, 0, 18, 0));
	assert_good(&t);
	assert_int_equal(t.c.in_len, 18);
	assert_int_equal(buf[2] & 0xf, 0x6);
	assert_int_equal(buf[12], 0x29);
	assert_int_equal(buf[13], 0x00);
	t = run_on(f, nx, f->lu, NULL, 0, CDB(0x00, 0, 0, 0, 0, 0));
	assert_good(&t);
	/* Then REQUEST SENSE says there is nothing. */
	t = run_on(f, nx, f->lu, buf, 18, CDB(0x03, 0, 0, 0, 18, 0));
	assert_good(&t);
	assert_int_equal(buf[2] & 0xf, 0);
	assert_int_equal(buf[12], 0);
	tnd_scsi_nexus_destroy(nx);
}

static void ua_first_command_reports_power_on(void **state)
{
	struct fx *f = *state;
	struct tnd_scsi_nexus *nx;
	assert_int_equal(tnd_scsi_nexus_create("iqn.x,i,0x3", &port, &nx), 0);
	uint8_t buf[BS];
	uint8_t c[16];
	put_rw10(c, 0x28, 0, 0, 1);
	struct tcmd t = run_on(f, nx, f->lu, buf, BS, c, 16);
	assert_sense(&t, 0x6, 0x29, 0x00);
	assert_int_equal(f->mv->count[TND_IO_READ], 0);
	t = run_on(f, nx, f->lu, buf, BS, c, 16);
	assert_good(&t);
	tnd_scsi_nexus_destroy(nx);
}

static void ua_after_lu_reset(void **state)
{
	struct fx *f = *state;
	tnd_scsi_lu_reset(f->lu);
	struct tcmd t = RUN(f, NULL, 0, 0x00, 0, 0, 0, 0, 0);
	assert_sense(&t, 0x6, 0x29, 0x03);
	t = RUN(f, NULL, 0, 0x00, 0, 0, 0, 0, 0);
	assert_good(&t);
}

static void ua_capacity_changed(void **state)
{
	struct fx *f = *state;
	assert_int_equal(tnd_volume_resize(&f->mv->vol, NBLOCKS * 2), 0);
	uint8_t buf[8];
	struct tcmd t = RUN(f, buf, 8, 0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0);
	assert_sense(&t, 0x6, 0x2a, 0x09);
	t = RUN(f, buf, 8, 0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0);
	assert_good(&t);
	assert_int_equal(tnd_get_be32(buf), NBLOCKS * 2 - 1);
}

/* A MODE SELECT(6) parameter list: header + caching page, WCE as given. */
static unsigned caching_list(uint8_t *p, bool wce)
{
	memset(p, 0, 24);
	p[4] = 0x08;
	p[5] = 0x12;
	p[6] = wce ? 0x04 : 0;
	return 24;
}

/* Several conditions pending: reported one per command, in priority
 * order, and a power-on report covers a reset that came after it. */
static void ua_priority_order(void **state)
{
	struct fx *f = *state;
	struct tnd_scsi_nexus *nx, *other;
	assert_int_equal(tnd_scsi_nexus_create("iqn.x,i,0x5", &port, &nx), 0);
	assert_int_equal(tnd_scsi_nexus_create("iqn.x,i,0x6", &port, &other), 0);
	fx_clear_ua(f, other);
	/* nx: power on pending; now also a reset. */
	run_on(f, nx, f->lu, NULL, 0, CDB(0x12, 0, 0, 0, 0, 0)); /* INQUIRY: ITL exists */
	tnd_scsi_lu_reset(f->lu);
	struct tcmd t = run_on(f, nx, f->lu, NULL, 0, CDB(0x00, 0, 0, 0, 0, 0));
	assert_sense(&t, 0x6, 0x29, 0x00);
	t = run_on(f, nx, f->lu, NULL, 0, CDB(0x00, 0, 0, 0, 0, 0));
	assert_good(&t);

	/* other: a reset, a mode change by nx and a capacity change. */
	uint8_t p[24];
	unsigned n = caching_list(p, false);
	t = run_on(f, nx, f->lu, p, n, CDB(0x15, 0x10, 0, 0, (uint8_t)n, 0));
	assert_good(&t);
	tnd_scsi_lu_reset(f->lu);
	assert_int_equal(tnd_volume_resize(&f->mv->vol, NBLOCKS + 8), 0);
	uint8_t b[18];
	t = run_on(f, other, f->lu, b, 18, CDB(0x03, 0, 0, 0, 18, 0));
	assert_good(&t);
	assert_int_equal(b[12], 0x29);
	assert_int_equal(b[13], 0x03);
	t = run_on(f, other, f->lu, NULL, 0, CDB(0x00, 0, 0, 0, 0, 0));
	assert_sense(&t, 0x6, 0x2a, 0x01);
	t = run_on(f, other, f->lu, NULL, 0, CDB(0x00, 0, 0, 0, 0, 0));
	assert_sense(&t, 0x6, 0x2a, 0x09);
	t = run_on(f, other, f->lu, NULL, 0, CDB(0x00, 0, 0, 0, 0, 0));
	assert_good(&t);
	tnd_scsi_nexus_destroy(nx);
	tnd_scsi_nexus_destroy(other);
}

/* ---- INQUIRY ---- */

static void inquiry_standard(void **state)
{
	struct fx *f = *state;
	uint8_t buf[255];
	memset(buf, 0xee, sizeof(buf));
	struct tcmd t = RUN(f, buf, 255, 0x12, 0, 0, 0, 255, 0);
	assert_good(&t);
	/* The command returns what it has; the transport reports the rest of
	 * the expected length as an underflow residual. */
	assert_int_equal(t.c.in_len, 66);
	assert_int_equal(t.c.xfer_len, 66);
	assert_int_equal(buf[0], 0x00);       /* connected direct-access */
	assert_int_equal(buf[2], 0x06);       /* SPC-4 */
	assert_int_equal(buf[3], 0x12);       /* HiSup, response data format 2 */
	assert_int_equal(buf[4], 66 - 5);     /* additional length */
	assert_int_equal(buf[7] & 0x02, 0x02); /* CmdQue */
	assert_memory_equal(buf + 8, "TANDEM  ", 8);
	assert_memory_equal(buf + 16, "tandem mem      ", 16);
	/* PRODUCT REVISION LEVEL: four digits, major / minor (2) / patch. */
	static const char rev[4] = TND_REVISION_DIGITS;
	assert_memory_equal(buf + 32, rev, 4);
	for (int i = 32; i < 36; i++)
		assert_true(buf[i] >= '0' && buf[i] <= '9');
	assert_int_equal(tnd_get_be16(buf + 60), 0x0460); /* SPC-4 descriptor */
	assert_int_equal(buf[66], 0xee);      /* nothing written past it */
}

static void inquiry_truncates_to_allocation_length(void **state)
{
	struct fx *f = *state;
	uint8_t buf[255];
	memset(buf, 0xee, sizeof(buf));
	struct tcmd t = RUN(f, buf, 255, 0x12, 0, 0, 0, 5, 0);
	assert_good(&t);
	assert_int_equal(t.c.in_len, 5);
	assert_int_equal(t.c.xfer_len, 5);
	assert_int_equal(buf[4], 61);
	assert_int_equal(buf[5], 0xee);

	/* A smaller transport buffer than the allocation length: what fits,
	 * and xfer_len says how much the command wanted. */
	t = RUN(f, buf, 36, 0x12, 0, 0, 0, 255, 0);
	assert_good(&t);
	assert_int_equal(t.c.in_len, 36);
	assert_int_equal(t.c.xfer_len, 66);

	/* VPD pages truncate the same way. */
	t = RUN(f, buf, 255, 0x12, 1, 0x83, 0, 4, 0);
	assert_good(&t);
	assert_int_equal(t.c.in_len, 4);
	assert_int_equal(buf[1], 0x83);
}

static void inquiry_custom_product(void **state)
{
	struct fx *f = *state;
	struct tnd_scsi_lu *lu;
	struct tnd_scsi_lu_desc d = { .name = "x", .vol = &f->mv->vol, .vendor = "ACME",
				      .product = "A very long product name" };
	assert_int_equal(tnd_scsi_lu_create(&d, &lu), 0);
	uint8_t buf[66];
	struct tcmd t = run_on(f, f->nx, lu, buf, 66, CDB(0x12, 0, 0, 0, 66, 0));
	assert_good(&t);
	assert_memory_equal(buf + 8, "ACME    ", 8);
	assert_memory_equal(buf + 16, "A very long prod", 16);
	tnd_scsi_lu_destroy(lu);
}

static void inquiry_no_lun(void **state)
{
	struct fx *f = *state;
	uint8_t buf[96];
	struct tcmd t = run_on(f, f->nx, NULL, buf, 96, CDB(0x12, 0, 0, 0, 96, 0));
	assert_good(&t);
	assert_int_equal(buf[0], 0x7f); /* qualifier 011b, type 1Fh */
	assert_int_equal(t.c.in_len, 66);
	t = run_on(f, f->nx, NULL, buf, 96, CDB(0x12, 0, 0, 0, 96, 0x04)); /* NACA */
	assert_sense(&t, 0x5, 0x24, 0x00);
	t = run_on(f, f->nx, NULL, NULL, 0, CDB(0x00, 0, 0, 0, 0, 0));
	assert_sense(&t, 0x5, 0x25, 0x00);
	uint8_t rb[512];
	t = run_on(f, f->nx, NULL, rb, BS, CDB(0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0));
	assert_sense(&t, 0x5, 0x25, 0x00);
	/* REPORT LUNS works without a logical unit (LUN 0 may be absent). */
	t = run_on(f, f->nx, NULL, rb, 64, CDB(0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0));
	assert_good(&t);
	/* REQUEST SENSE answers with the reason as data. */
	t = run_on(f, f->nx, NULL, rb, 18, CDB(0x03, 0, 0, 0, 18, 0));
	assert_good(&t);
	assert_int_equal(rb[2] & 0xf, 0x5);
	assert_int_equal(rb[12], 0x25);
}

static void inquiry_invalid_fields(void **state)
{
	struct fx *f = *state;
	uint8_t buf[255];
	/* A page code without EVPD. */
	struct tcmd t = RUN(f, buf, 255, 0x12, 0, 0x80, 0, 255, 0);
	assert_sense(&t, 0x5, 0x24, 0x00);
	assert_field_ptr(&t, true, 2);
	/* A page we do not have. */
	t = RUN(f, buf, 255, 0x12, 1, 0x99, 0, 255, 0);
	assert_sense(&t, 0x5, 0x24, 0x00);
	/* Reserved bit in byte 1 (bit 1, obsolete CMDDT). */
	t = RUN(f, buf, 255, 0x12, 0x02, 0, 0, 255, 0);
	assert_sense(&t, 0x5, 0x24, 0x00);
	assert_field_ptr(&t, true, 1);
	assert_int_equal(t.c.sense[15] & 0x0f, 0x08 | 1); /* BPV, bit 1 */
	/* NACA in the CONTROL byte. */
	t = RUN(f, buf, 255, 0x12, 0, 0, 0, 255, 0x04);
	assert_sense(&t, 0x5, 0x24, 0x00);
	assert_field_ptr(&t, true, 5);
}

static void vpd_supported_and_serial(void **state)
{
	struct fx *f = *state;
	uint8_t buf[255];
	struct tcmd t = RUN(f, buf, 255, 0x12, 1, 0x00, 0, 255, 0);
	assert_good(&t);
	assert_int_equal(buf[1], 0x00);
	uint16_t n = tnd_get_be16(buf + 2);
	assert_int_equal(t.c.in_len, 4 + n);
	static const uint8_t want[] = { 0x00, 0x80, 0x83, 0x8f, 0xb0, 0xb1, 0xb2 };
	assert_int_equal(n, sizeof(want));
	assert_memory_equal(buf + 4, want, sizeof(want));

	t = RUN(f, buf, 255, 0x12, 1, 0x80, 0, 255, 0);
	assert_good(&t);
	n = tnd_get_be16(buf + 2);
	assert_true(n > 0);
	char serial[64] = { 0 };
	memcpy(serial, buf + 4, n);

	/* Stable: another LU on the same device name has the same serial. */
	struct tnd_scsi_lu *lu2;
	struct tnd_scsi_lu_desc d = { .name = "dev0", .vol = &f->mv->vol };
	assert_int_equal(tnd_scsi_lu_create(&d, &lu2), 0);
	t = run_on(f, f->nx, lu2, buf, 255, CDB(0x12, 1, 0x80, 0, 255, 0));
	assert_good(&t); /* INQUIRY is answered despite the pending UA */
	assert_memory_equal(buf + 4, serial, n);
	tnd_scsi_lu_destroy(lu2);
}

/* Find designator of @type/@assoc in a page 83h; NULL if absent. */
static const uint8_t *find_designator(const uint8_t *page, unsigned type, unsigned assoc)
{
	unsigned len = 4 + tnd_get_be16(page + 2);
	for (unsigned off = 4; off + 4 <= len; off += 4 + page[off + 3]) {
		const uint8_t *d = page + off;
		if ((d[1] & 0x0f) == type && ((d[1] >> 4) & 3) == assoc)
			return d;
	}
	return NULL;
}

static void vpd_device_identification(void **state)
{
	struct fx *f = *state;
	uint8_t buf[512];
	struct tcmd t = RUN(f, buf, 512, 0x12, 1, 0x83, 0x01, 0x00, 0);
	assert_good(&t);
	assert_int_equal(buf[1], 0x83);
	assert_int_equal(t.c.in_len, 4 + tnd_get_be16(buf + 2));

	const uint8_t *naa = find_designator(buf, 3, 0);
	assert_non_null(naa);
	assert_int_equal(naa[0] & 0x0f, 1); /* binary */
	assert_int_equal(naa[3], 16);
	assert_int_equal(naa[4] >> 4, 6);   /* NAA IEEE Registered Extended */
	uint8_t naa1[16];
	memcpy(naa1, naa + 4, 16);

	const uint8_t *name = find_designator(buf, 8, 1);
	assert_non_null(name);
	assert_int_equal(name[0], 0x53);    /* iSCSI, UTF-8 */
	assert_int_equal(name[1] & 0x80, 0x80); /* PIV */
	assert_int_equal(name[3] % 4, 0);
	assert_string_equal((const char *)name + 4, "iqn.2026-01.test:disk,t,0x0001");

	const uint8_t *rel = find_designator(buf, 4, 1);
	assert_non_null(rel);
	assert_int_equal(tnd_get_be16(rel + 6), 1);
	const uint8_t *tpg = find_designator(buf, 5, 1);
	assert_non_null(tpg);
	assert_int_equal(tnd_get_be16(tpg + 6), 1);

	/* A different device name: a different NAA; the same name: the same. */
	struct tnd_scsi_lu *lu2;
	struct tnd_scsi_lu_desc d = { .name = "dev1", .vol = &f->mv->vol };
	assert_int_equal(tnd_scsi_lu_create(&d, &lu2), 0);
	t = run_on(f, f->nx, lu2, buf, 512, CDB(0x12, 1, 0x83, 0x01, 0x00, 0));
	assert_good(&t);
	naa = find_designator(buf, 3, 0);
	assert_non_null(naa);
	assert_memory_not_equal(naa + 4, naa1, 16);
	tnd_scsi_lu_destroy(lu2);
}

static void vpd_block_limits(void **state)
{
	struct fx *f = *state;
	uint8_t buf[255];
	struct tcmd t = RUN(f, buf, 255, 0x12, 1, 0xb0, 0, 255, 0);
	assert_good(&t);
	assert_int_equal(tnd_get_be16(buf + 2), 0x3c);
	assert_int_equal(tnd_get_be32(buf + 8), TND_SCSI_MAX_XFER_BYTES / BS);
	assert_int_equal(tnd_get_be16(buf + 6), 8);             /* 4 KiB in 512 B blocks */
	assert_int_equal(tnd_get_be32(buf + 20), 1u << 16);     /* max unmap LBA count */
	assert_true(tnd_get_be32(buf + 24) > 0);                /* max unmap descriptors */

	/* A huge volume limit is capped to what one command may do. */
	f->mv->info.max_unmap_blocks = UINT32_MAX;
	t = RUN(f, buf, 255, 0x12, 1, 0xb0, 0, 255, 0);
	assert_int_equal(tnd_get_be32(buf + 20), 1u << 20);
	/* A volume that cannot unmap advertises no unmap limits. */
	f->mv->info.max_unmap_blocks = 0;
	t = RUN(f, buf, 255, 0x12, 1, 0xb0, 0, 255, 0);
	assert_good(&t);
	assert_int_equal(tnd_get_be32(buf + 20), 0);
	assert_int_equal(tnd_get_be32(buf + 24), 0);
}

static void vpd_block_characteristics_and_lbp(void **state)
{
	struct fx *f = *state;
	uint8_t buf[255];
	struct tcmd t = RUN(f, buf, 255, 0x12, 1, 0xb1, 0, 255, 0);
	assert_good(&t);
	assert_int_equal(tnd_get_be16(buf + 4), 1); /* non-rotating */
	f->mv->info.rotational = true;
	t = RUN(f, buf, 255, 0x12, 1, 0xb1, 0, 255, 0);
	assert_int_equal(tnd_get_be16(buf + 4), 0);

	t = RUN(f, buf, 255, 0x12, 1, 0xb2, 0, 255, 0);
	assert_good(&t);
	assert_int_equal(buf[5] & 0xe4, 0x80 | 0x40 | 0x20 | 0x04); /* LBPU LBPWS LBPWS10 LBPRZ */
	assert_int_equal(buf[6] & 0x07, 2);                        /* thin */

	f->mv->info.thin = false;
	t = RUN(f, buf, 255, 0x12, 1, 0xb2, 0, 255, 0);
	assert_good(&t);
	assert_int_equal(buf[5], 0);
	assert_int_equal(buf[6] & 0x07, 0);
}

/* ---- REPORT LUNS ---- */

static void report_luns(void **state)
{
	struct fx *f = *state;
	uint8_t buf[64];
	struct tcmd t = RUN(f, buf, 64, 0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0);
	assert_good(&t);
	assert_int_equal(tnd_get_be32(buf), 24);
	assert_int_equal(t.c.in_len, 32);
	assert_int_equal(tnd_get_be64(buf + 8), 0);
	assert_int_equal(tnd_get_be64(buf + 16), 0x0001000000000000ull);
	assert_int_equal(tnd_get_be64(buf + 24), 0x412c000000000000ull); /* flat 300 */

	t = RUN(f, buf, 64, 0xa0, 0, 2, 0, 0, 0, 0, 0, 0, 64, 0, 0);
	assert_good(&t);
	assert_int_equal(tnd_get_be32(buf), 24);
	/* Well-known LUs only: we have none. */
	t = RUN(f, buf, 64, 0xa0, 0, 1, 0, 0, 0, 0, 0, 0, 64, 0, 0);
	assert_good(&t);
	assert_int_equal(tnd_get_be32(buf), 0);
	assert_int_equal(t.c.in_len, 8);

	t = RUN(f, buf, 64, 0xa0, 0, 3, 0, 0, 0, 0, 0, 0, 64, 0, 0);
	assert_sense(&t, 0x5, 0x24, 0x00);
	t = RUN(f, buf, 64, 0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 15, 0, 0);
	assert_sense(&t, 0x5, 0x24, 0x00);
	/* 16 is enough: header plus the first LUN, list length intact. */
	t = RUN(f, buf, 64, 0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0);
	assert_good(&t);
	assert_int_equal(t.c.in_len, 16);
	assert_int_equal(tnd_get_be32(buf), 24);
}

/* ---- capacity ---- */

static void read_capacity(void **state)
{
	struct fx *f = *state;
	uint8_t buf[32];
	struct tcmd t = RUN(f, buf, 8, 0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0);
	assert_good(&t);
	assert_int_equal(tnd_get_be32(buf), NBLOCKS - 1);
	assert_int_equal(tnd_get_be32(buf + 4), BS);
	/* LBA without PMI */
	t = RUN(f, buf, 8, 0x25, 0, 0, 0, 0, 1, 0, 0, 0, 0);
	assert_sense(&t, 0x5, 0x24, 0x00);

	t = RUN(f, buf, 32, 0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0);
	assert_good(&t);
	assert_int_equal(t.c.in_len, 32);
	assert_int_equal(tnd_get_be64(buf), NBLOCKS - 1);
	assert_int_equal(tnd_get_be32(buf + 8), BS);
	assert_int_equal(buf[14] & 0xc0, 0xc0); /* LBPME, LBPRZ */

	f->mv->info.thin = false;
	t = RUN(f, buf, 32, 0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0);
	assert_good(&t);
	assert_int_equal(buf[14] & 0xc0, 0);
	/* Truncated to the allocation length. */
	t = RUN(f, buf, 32, 0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 0, 0);
	assert_good(&t);
	assert_int_equal(t.c.in_len, 12);
	/* Unknown service action. */
	t = RUN(f, buf, 32, 0x9e, 0x1f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0);
	assert_sense(&t, 0x5, 0x24, 0x00);
}

static void read_capacity_10_too_large(void **state)
{
	struct fx *f = *state;
	/* Claim a huge size; READ CAPACITY does no I/O. */
	f->mv->info.num_blocks = 0x100000000ull + 5;
	uint8_t buf[32];
	struct tcmd t = RUN(f, buf, 8, 0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0);
	assert_sense(&t, 0x6, 0x2a, 0x09); /* the size changed */
	t = RUN(f, buf, 8, 0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0);
	assert_good(&t);
	assert_int_equal(tnd_get_be32(buf), 0xffffffffu);
	t = RUN(f, buf, 32, 0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0);
	assert_good(&t);
	assert_int_equal(tnd_get_be64(buf), 0x100000000ull + 4);
	f->mv->info.num_blocks = NBLOCKS;
}

/* ---- READ / WRITE ---- */

static void fill(uint8_t *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(seed * 31 + i * 7 + (i >> 9));
}

static void read_write_all_sizes(void **state)
{
	struct fx *f = *state;
	uint8_t out[4 * BS], in[4 * BS];
	uint8_t c[16];

	/* WRITE(6) at 10, READ(10) back. */
	fill(out, sizeof(out), 1);
	struct tcmd t = RUN(f, out, 2 * BS, 0x0a, 0, 0, 10, 2, 0);
	assert_good(&t);
	assert_int_equal(t.c.xfer_len, 2 * BS);
	assert_memory_equal(f->mv->data + 10 * BS, out, 2 * BS);
	put_rw10(c, 0x28, 0, 10, 2);
	t = run_raw(f, c, in, 2 * BS);
	assert_good(&t);
	assert_int_equal(t.c.in_len, 2 * BS);
	assert_memory_equal(in, out, 2 * BS);

	/* WRITE(10) / READ(6). */
	fill(out, sizeof(out), 2);
	put_rw10(c, 0x2a, 0, 100, 3);
	t = run_raw(f, c, out, 3 * BS);
	assert_good(&t);
	t = RUN(f, in, 3 * BS, 0x08, 0, 0, 100, 3, 0);
	assert_good(&t);
	assert_memory_equal(in, out, 3 * BS);

	/* WRITE(12) / READ(16). */
	fill(out, sizeof(out), 3);
	t = RUN(f, out, 4 * BS, 0xaa, 0, 0, 0, 0x01, 0x00, 0, 0, 0, 4, 0, 0);
	assert_good(&t);
	put_rw16(c, 0x88, 0, 256, 4);
	t = run_raw(f, c, in, 4 * BS);
	assert_good(&t);
	assert_memory_equal(in, out, 4 * BS);

	/* WRITE(16) at the last block / READ(12). */
	fill(out, sizeof(out), 4);
	put_rw16(c, 0x8a, 0, NBLOCKS - 1, 1);
	t = run_raw(f, c, out, BS);
	assert_good(&t);
	t = RUN(f, in, BS, 0xa8, 0, 0, 0, (NBLOCKS - 1) >> 8, (NBLOCKS - 1) & 0xff, 0, 0, 0, 1, 0, 0);
	assert_good(&t);
	assert_memory_equal(in, out, BS);
}

static void read6_zero_means_256(void **state)
{
	struct fx *f = *state;
	static uint8_t in[256 * BS];
	struct tcmd t = RUN(f, in, sizeof(in), 0x08, 0, 0, 0, 0, 0);
	assert_good(&t);
	assert_int_equal(f->mv->last.nblocks, 256);
	assert_int_equal(t.c.xfer_len, 256 * BS);
	assert_int_equal(t.c.in_len, 256 * BS);
}

static void rw10_zero_length_is_no_transfer(void **state)
{
	struct fx *f = *state;
	uint8_t c[16];
	put_rw10(c, 0x28, 0, 5, 0);
	struct tcmd t = run_raw(f, c, NULL, 0);
	assert_good(&t);
	assert_int_equal(t.c.xfer_len, 0);
	put_rw10(c, 0x2a, 0, 5, 0);
	t = run_raw(f, c, NULL, 0);
	assert_good(&t);
	assert_int_equal(f->mv->count[TND_IO_READ] + f->mv->count[TND_IO_WRITE], 0);
	/* Still range-checked. */
	put_rw10(c, 0x28, 0, NBLOCKS + 1, 0);
	t = run_raw(f, c, NULL, 0);
	assert_sense(&t, 0x5, 0x21, 0x00);
}

static void rw_out_of_range(void **state)
{
	struct fx *f = *state;
	uint8_t buf[2 * BS] = { 0 };
	uint8_t c[16];
	put_rw10(c, 0x28, 0, NBLOCKS - 1, 2);
	struct tcmd t = run_raw(f, c, buf, 2 * BS);
	assert_sense(&t, 0x5, 0x21, 0x00);
	put_rw10(c, 0x2a, 0, NBLOCKS, 1);
	t = run_raw(f, c, buf, BS);
	assert_sense(&t, 0x5, 0x21, 0x00);
	/* LBA + length wrapping around 2^64. */
	put_rw16(c, 0x88, 0, UINT64_MAX, 2);
	t = run_raw(f, c, buf, 2 * BS);
	assert_sense(&t, 0x5, 0x21, 0x00);
	/* READ(6) beyond the end. */
	t = RUN(f, buf, BS, 0x08, 0x1f, 0xff, 0xff, 1, 0);
	assert_sense(&t, 0x5, 0x21, 0x00);
	assert_int_equal(f->mv->count[TND_IO_READ] + f->mv->count[TND_IO_WRITE], 0);
}

static void rw_too_long_for_max_transfer(void **state)
{
	struct fx *f = *state;
	uint8_t c[16];
	put_rw16(c, 0x88, 0, 0, TND_SCSI_MAX_XFER_BYTES / BS + 1);
	f->mv->info.num_blocks = 1u << 20; /* in range, but too long */
	struct tcmd t = run_raw(f, c, NULL, 0);
	assert_sense(&t, 0x6, 0x2a, 0x09);
	t = run_raw(f, c, NULL, 0);
	assert_sense(&t, 0x5, 0x24, 0x00);
	assert_field_ptr(&t, true, 10);
	f->mv->info.num_blocks = NBLOCKS;
}

static void fua_passed_through(void **state)
{
	struct fx *f = *state;
	uint8_t buf[BS] = { 1 };
	uint8_t c[16];
	put_rw10(c, 0x2a, 0x08, 1, 1);
	struct tcmd t = run_raw(f, c, buf, BS);
	assert_good(&t);
	assert_int_equal(f->mv->last.type, TND_IO_WRITE);
	assert_int_equal(f->mv->last.flags & TND_IO_FUA, TND_IO_FUA);
	put_rw16(c, 0x8a, 0x10, 1, 1); /* DPO only */
	t = run_raw(f, c, buf, BS);
	assert_good(&t);
	assert_int_equal(f->mv->last.flags & TND_IO_FUA, 0);
	put_rw16(c, 0x8a, 0x08, 1, 1);
	t = run_raw(f, c, buf, BS);
	assert_good(&t);
	assert_int_equal(f->mv->last.flags & TND_IO_FUA, TND_IO_FUA);
	/* FUA on a read is accepted (nothing to make stable). */
	put_rw10(c, 0x28, 0x18, 1, 1);
	t = run_raw(f, c, buf, BS);
	assert_good(&t);
	/* RDPROTECT is not supported: reserved for us. */
	put_rw10(c, 0x28, 0x20, 1, 1);
	t = run_raw(f, c, buf, BS);
	assert_sense(&t, 0x5, 0x24, 0x00);
}

static void read_residual_when_expected_length_short(void **state)
{
	struct fx *f = *state;
	uint8_t c[16];
	uint8_t in[BS];
	fill(f->mv->data, 2 * BS, 9);
	put_rw10(c, 0x28, 0, 0, 2);
	struct tcmd t = run_raw(f, c, in, BS);
	assert_good(&t);
	assert_int_equal(t.c.in_len, BS);
	assert_int_equal(t.c.xfer_len, 2 * BS);
	assert_memory_equal(in, f->mv->data, BS);
	/* A partial last block. */
	t = run_raw(f, c, in, 300);
	assert_good(&t);
	assert_int_equal(t.c.in_len, 300);
	assert_int_equal(t.c.xfer_len, 2 * BS);
	assert_memory_equal(in, f->mv->data, 300);
}

/* Regression: a READ with no buffer at all (EDTL 0) copied from a NULL
 * destination; it must read, return nothing and report the overflow. */
static void read_with_no_buffer_reports_overflow(void **state)
{
	struct fx *f = *state;
	uint8_t c[16];
	put_rw16(c, 0x88, 0, 0, 1);
	struct tcmd t = run_raw(f, c, NULL, 0);
	assert_good(&t);
	assert_int_equal(t.c.in_len, 0);
	assert_int_equal(t.c.xfer_len, BS);
}

/*
 * EDTL shorter than the CDB's transfer length: only the whole blocks the
 * initiator sent are written, the command is GOOD and xfer_len tells the
 * transport to report the overflow.
 */
static void write_short_data_out_writes_whole_blocks(void **state)
{
	struct fx *f = *state;
	uint8_t c[16];
	uint8_t out[BS];
	memset(f->mv->data, 'a', 2 * BS);
	memset(out, 'b', BS);
	put_rw10(c, 0x2a, 0, 0, 2);
	struct tcmd t = run_raw(f, c, out, BS);
	assert_good(&t);
	assert_int_equal(t.c.xfer_len, 2 * BS);
	assert_int_equal(f->mv->last.nblocks, 1);
	assert_int_equal(f->mv->data[BS - 1], 'b');
	assert_int_equal(f->mv->data[BS], 'a');

	/* Less than one block: nothing is written. */
	memset(out, 'c', BS);
	put_rw10(c, 0x2a, 0, 0, 1);
	t = run_raw(f, c, out, 200);
	assert_good(&t);
	assert_int_equal(t.c.xfer_len, BS);
	assert_int_equal(f->mv->count[TND_IO_WRITE], 1);
	assert_int_equal(f->mv->data[0], 'b');

	/* More than the CDB asks: only the CDB's blocks are written. */
	uint8_t big[3 * BS];
	memset(big, 'd', sizeof(big));
	t = run_raw(f, c, big, sizeof(big));
	assert_good(&t);
	assert_int_equal(t.c.xfer_len, BS);
	assert_int_equal(f->mv->last.nblocks, 1);
	assert_int_equal(f->mv->data[BS], 'a');
}

/*
 * A WRITE whose PDU did not carry the W bit: the buffer is the transport's
 * data-in buffer, full of someone else's old bytes. Nothing may be written
 * from it; the command moves no data.
 */
static void write_without_w_bit_writes_nothing(void **state)
{
	struct fx *f = *state;
	uint8_t junk[BS];
	memset(junk, 0xee, BS);
	struct tcmd t;
	memset(&t, 0, sizeof(t));
	put_rw10(t.c.cdb, 0x2a, 0, 0, 1);
	t.c.cdb_len = 16;
	t.c.lu = f->lu;
	t.c.nexus = f->nx;
	t.c.reactor = f->r;
	t.c.dir = TND_SCSI_DIR_READ;
	t.c.data = junk;
	t.c.data_len = BS;
	t.c.exp_len = BS;
	t.c.done = on_done;
	tnd_scsi_exec(&t.c);
	for (int i = 0; i < 100 && !t.calls; i++)
		tnd_reactor_poll(f->r, 10);
	assert_int_equal(t.calls, 1);
	assert_good(&t);
	assert_int_equal(t.c.xfer_len, BS);
	assert_int_equal(f->mv->count[TND_IO_WRITE], 0);
	assert_int_equal(f->mv->data[0], 0);
	/* MODE SELECT likewise finds no parameter list. */
	t.calls = 0;
	memset(t.c.cdb, 0, 16);
	memcpy(t.c.cdb, (uint8_t[]){ 0x15, 0x10, 0, 0, 24, 0 }, 6);
	tnd_scsi_exec(&t.c);
	assert_int_equal(t.calls, 1);
	assert_sense(&t, 0x5, 0x1a, 0x00);
}

static void read_errors_mapped(void **state)
{
	struct fx *f = *state;
	uint8_t c[16];
	uint8_t buf[BS] = { 0 };
	put_rw10(c, 0x28, 0, 0, 1);

	f->mv->fail_type = TND_IO_READ;
	f->mv->fail_err = -EIO;
	struct tcmd t = run_raw(f, c, buf, BS);
	assert_sense(&t, 0x3, 0x11, 0x00);
	assert_int_equal(t.c.in_len, 0);

	f->mv->fail_err = -EILSEQ;
	t = run_raw(f, c, buf, BS);
	assert_sense(&t, 0x3, 0x11, 0x00);

	f->mv->fail_err = -ENOTCONN;
	t = run_raw(f, c, buf, BS);
	assert_sense(&t, 0x4, 0x44, 0x00);

	/* Refused at submit: same mapping, still one completion. */
	f->mv->fail_err = -EIO;
	f->mv->fail_submit = true;
	t = run_raw(f, c, buf, BS);
	assert_sense(&t, 0x3, 0x11, 0x00);

	t = run_raw(f, c, buf, BS);
	assert_good(&t);
}

static void write_errors_mapped(void **state)
{
	struct fx *f = *state;
	uint8_t c[16];
	uint8_t buf[BS] = { 0 };
	put_rw10(c, 0x2a, 0, 0, 1);
	f->mv->fail_type = TND_IO_WRITE;

	f->mv->fail_err = -EIO;
	struct tcmd t = run_raw(f, c, buf, BS);
	assert_sense(&t, 0x3, 0x0c, 0x00);
	f->mv->fail_err = -ENOSPC;
	t = run_raw(f, c, buf, BS);
	assert_sense(&t, 0x7, 0x27, 0x07);
	f->mv->fail_err = -EROFS;
	t = run_raw(f, c, buf, BS);
	assert_sense(&t, 0x7, 0x27, 0x00);
	f->mv->fail_err = -EPERM;
	t = run_raw(f, c, buf, BS);
	assert_sense(&t, 0x4, 0x44, 0x00);
	f->mv->fail_err = -ENOMEM;
	t = run_raw(f, c, buf, BS);
	assert_int_equal(t.c.status, TND_SAM_BUSY);
	/* A flush error reads as a write error. */
	f->mv->fail_type = TND_IO_FLUSH;
	f->mv->fail_err = -EIO;
	t = RUN(f, NULL, 0, 0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0);
	assert_sense(&t, 0x3, 0x0c, 0x00);
}

static void read_only_volume(void **state)
{
	struct fx *f = *state;
	f->mv->info.read_only = true;
	uint8_t c[16];
	uint8_t buf[BS] = { 0 };
	put_rw10(c, 0x2a, 0, 0, 1);
	struct tcmd t = run_raw(f, c, buf, BS);
	assert_sense(&t, 0x7, 0x27, 0x00);
	put_rw10(c, 0x28, 0, 0, 1);
	t = run_raw(f, c, buf, BS);
	assert_good(&t);
	/* MODE SENSE shows WP. */
	uint8_t m[64];
	t = RUN(f, m, 64, 0x1a, 0, 0x08, 0, 64, 0);
	assert_good(&t);
	assert_int_equal(m[2] & 0x80, 0x80);
}

/* ---- VERIFY / WRITE AND VERIFY ---- */

static void verify(void **state)
{
	struct fx *f = *state;
	uint8_t c[16];
	uint8_t buf[4 * BS];
	fill(f->mv->data + 8 * BS, 4 * BS, 5);
	memcpy(buf, f->mv->data + 8 * BS, 4 * BS);

	/* BYTCHK 0: range check only. */
	put_rw10(c, 0x2f, 0, 8, 4);
	struct tcmd t = run_raw(f, c, NULL, 0);
	assert_good(&t);
	put_rw10(c, 0x2f, 0, NBLOCKS - 2, 4);
	t = run_raw(f, c, NULL, 0);
	assert_sense(&t, 0x5, 0x21, 0x00);

	/* BYTCHK 1: compare. */
	put_rw10(c, 0x2f, 0x02, 8, 4);
	t = run_raw(f, c, buf, 4 * BS);
	assert_good(&t);
	assert_int_equal(t.c.xfer_len, 4 * BS);
	buf[2 * BS + 17] ^= 0xff;
	t = run_raw(f, c, buf, 4 * BS);
	assert_sense(&t, 0xe, 0x1d, 0x00);
	assert_int_equal(t.c.sense[0] & 0x80, 0x80); /* INFORMATION valid */
	assert_int_equal(tnd_get_be32(t.c.sense + 3), 2 * BS + 17);
	buf[2 * BS + 17] ^= 0xff;

	put_rw16(c, 0x8f, 0x02, 8, 4);
	t = run_raw(f, c, buf, 4 * BS);
	assert_good(&t);
	/* VERIFY(12) with DPO. */
	t = RUN(f, buf, 4 * BS, 0xaf, 0x12, 0, 0, 0, 8, 0, 0, 0, 4, 0, 0);
	assert_good(&t);

	/* BYTCHK 3: one block against each. */
	memset(f->mv->data + 20 * BS, 0x5a, 3 * BS);
	uint8_t one[BS];
	memset(one, 0x5a, BS);
	put_rw16(c, 0x8f, 0x06, 20, 3);
	t = run_raw(f, c, one, BS);
	assert_good(&t);
	f->mv->data[22 * BS + 3] = 0;
	t = run_raw(f, c, one, BS);
	assert_sense(&t, 0xe, 0x1d, 0x00);

	/* BYTCHK 2 is reserved. */
	put_rw10(c, 0x2f, 0x04, 8, 1);
	t = run_raw(f, c, buf, BS);
	assert_sense(&t, 0x5, 0x24, 0x00);

	/* A read error while verifying. */
	f->mv->fail_type = TND_IO_READ;
	f->mv->fail_err = -EILSEQ;
	put_rw10(c, 0x2f, 0x02, 8, 4);
	t = run_raw(f, c, buf, 4 * BS);
	assert_sense(&t, 0x3, 0x11, 0x00);
}

static void write_and_verify(void **state)
{
	struct fx *f = *state;
	uint8_t c[16];
	uint8_t buf[2 * BS];
	fill(buf, sizeof(buf), 6);
	put_rw10(c, 0x2e, 0x02, 30, 2);
	struct tcmd t = run_raw(f, c, buf, 2 * BS);
	assert_good(&t);
	assert_memory_equal(f->mv->data + 30 * BS, buf, 2 * BS);
	assert_int_equal(f->mv->count[TND_IO_WRITE], 1);
	assert_true(f->mv->count[TND_IO_READ] >= 1);
	put_rw16(c, 0x8e, 0, 40, 2);
	t = run_raw(f, c, buf, 2 * BS);
	assert_good(&t);
	assert_memory_equal(f->mv->data + 40 * BS, buf, 2 * BS);
	put_rw16(c, 0x8e, 0, NBLOCKS - 1, 2);
	t = run_raw(f, c, buf, 2 * BS);
	assert_sense(&t, 0x5, 0x21, 0x00);
	/* WRITE AND VERIFY(12) */
	fill(buf, sizeof(buf), 10);
	t = RUN(f, buf, 2 * BS, 0xae, 0x02, 0, 0, 0, 50, 0, 0, 0, 2, 0, 0);
	assert_good(&t);
	assert_memory_equal(f->mv->data + 50 * BS, buf, 2 * BS);
	/* A read error during the verify step. */
	f->mv->fail_type = TND_IO_READ;
	f->mv->fail_err = -EIO;
	t = RUN(f, buf, 2 * BS, 0xae, 0x02, 0, 0, 0, 50, 0, 0, 0, 2, 0, 0);
	assert_sense(&t, 0x3, 0x11, 0x00);
}

/* ---- SYNCHRONIZE CACHE ---- */

static void synchronize_cache(void **state)
{
	struct fx *f = *state;
	uint8_t c[16];
	put_rw10(c, 0x35, 0, 0, 0);
	struct tcmd t = run_raw(f, c, NULL, 0);
	assert_good(&t);
	assert_int_equal(f->mv->count[TND_IO_FLUSH], 1);
	put_rw16(c, 0x91, 0x02, 100, 10); /* IMMED */
	t = run_raw(f, c, NULL, 0);
	assert_good(&t);
	assert_int_equal(f->mv->count[TND_IO_FLUSH], 2);
	put_rw16(c, 0x91, 0, NBLOCKS, 1);
	t = run_raw(f, c, NULL, 0);
	assert_sense(&t, 0x5, 0x21, 0x00);
	assert_int_equal(f->mv->count[TND_IO_FLUSH], 2);
}

/* ---- MODE SENSE / SELECT ---- */

/* Find page @code after the header and block descriptors. */
static const uint8_t *mode_find(const uint8_t *b, unsigned n, bool ten, uint8_t code)
{
	unsigned hdr = ten ? 8 : 4;
	unsigned bd = ten ? tnd_get_be16(b + 6) : b[3];
	for (unsigned off = hdr + bd; off + 2 <= n; off += 2 + b[off + 1])
		if ((b[off] & 0x3f) == code)
			return b + off;
	return NULL;
}

static void mode_sense(void **state)
{
	struct fx *f = *state;
	uint8_t b[255];
	struct tcmd t = RUN(f, b, 255, 0x1a, 0, 0x3f, 0, 255, 0);
	assert_good(&t);
	unsigned n = t.c.in_len;
	assert_int_equal(b[0], n - 1);
	assert_int_equal(b[2] & 0x80, 0);    /* not write protected */
	assert_int_equal(b[3], 8);           /* block descriptor */
	assert_int_equal(tnd_get_be32(b + 4), NBLOCKS);
	assert_int_equal(tnd_get_be24(b + 9), BS);
	const uint8_t *cp = mode_find(b, n, false, 0x08);
	assert_non_null(cp);
	assert_int_equal(cp[1], 0x12);
	assert_int_equal(cp[2] & 0x04, 0x04); /* WCE: the volume caches */
	assert_non_null(mode_find(b, n, false, 0x0a));
	assert_non_null(mode_find(b, n, false, 0x1c));

	/* DBD */
	t = RUN(f, b, 255, 0x1a, 0x08, 0x08, 0, 255, 0);
	assert_good(&t);
	assert_int_equal(b[3], 0);
	assert_int_equal(t.c.in_len, 4 + 20);
	assert_int_equal(b[4], 0x08);

	/* MODE SENSE(10), long LBA descriptor */
	t = RUN(f, b, 255, 0x5a, 0x10, 0x0a, 0, 0, 0, 0, 0, 255, 0);
	assert_good(&t);
	assert_int_equal(tnd_get_be16(b), t.c.in_len - 2);
	assert_int_equal(b[4] & 1, 1);
	assert_int_equal(tnd_get_be16(b + 6), 16);
	assert_int_equal(tnd_get_be64(b + 8), NBLOCKS);
	assert_int_equal(tnd_get_be32(b + 8 + 12), BS);
	assert_int_equal(b[24], 0x0a);

	/* Changeable values: only WCE. */
	t = RUN(f, b, 255, 0x1a, 0x08, 0x48, 0, 255, 0);
	assert_good(&t);
	assert_int_equal(b[4 + 2], 0x04);
	/* Control page: nothing changeable. */
	t = RUN(f, b, 255, 0x1a, 0x08, 0x4a, 0, 255, 0);
	assert_good(&t);
	for (unsigned i = 2; i < 12; i++)
		assert_int_equal(b[4 + i], 0);
	/* Default values. */
	t = RUN(f, b, 255, 0x1a, 0x08, 0x88, 0, 255, 0);
	assert_good(&t);
	assert_int_equal(b[4 + 2], 0x04);
	/* Saved values: not supported. */
	t = RUN(f, b, 255, 0x1a, 0x08, 0xc8, 0, 255, 0);
	assert_sense(&t, 0x5, 0x39, 0x00);
	/* Unknown page, unknown subpage. */
	t = RUN(f, b, 255, 0x1a, 0x08, 0x19, 0, 255, 0);
	assert_sense(&t, 0x5, 0x24, 0x00);
	t = RUN(f, b, 255, 0x1a, 0x08, 0x08, 0x01, 255, 0);
	assert_sense(&t, 0x5, 0x24, 0x00);
	/* All subpages of all pages. */
	t = RUN(f, b, 255, 0x1a, 0x08, 0x3f, 0xff, 255, 0);
	assert_good(&t);
	/* Truncation keeps the header's full length. */
	t = RUN(f, b, 255, 0x1a, 0, 0x3f, 0, 4, 0);
	assert_good(&t);
	assert_int_equal(t.c.in_len, 4);
	assert_int_equal(b[0], n - 1);

	/* A volume without a write cache reports WCE=0, unchangeable. */
	struct memvol *mv2 = memvol_create(4096, 16);
	mv2->info.write_cache = false;
	struct tnd_scsi_lu *lu2;
	struct tnd_scsi_lu_desc d = { .name = "wt", .vol = &mv2->vol };
	assert_int_equal(tnd_scsi_lu_create(&d, &lu2), 0);
	run_on(f, f->nx, lu2, NULL, 0, CDB(0x00, 0, 0, 0, 0, 0));
	t = run_on(f, f->nx, lu2, b, 255, CDB(0x1a, 0, 0x08, 0, 255, 0));
	assert_good(&t);
	assert_int_equal(tnd_get_be24(b + 9), 4096);
	assert_int_equal(b[12 + 2] & 0x04, 0);
	t = run_on(f, f->nx, lu2, b, 255, CDB(0x1a, 0x08, 0x48, 0, 255, 0));
	assert_int_equal(b[4 + 2], 0);
	tnd_scsi_lu_destroy(lu2);
	tnd_volume_destroy(&mv2->vol);
}

static void mode_select_wce_makes_writes_fua(void **state)
{
	struct fx *f = *state;
	struct tnd_scsi_nexus *other;
	assert_int_equal(tnd_scsi_nexus_create("iqn.other,i,0x9", &port, &other), 0);
	fx_clear_ua(f, other);

	uint8_t p[24];
	unsigned n = caching_list(p, false);
	struct tcmd t = RUN(f, p, n, 0x15, 0x10, 0, 0, (uint8_t)n, 0);
	assert_good(&t);
	/* Turning the cache off first flushes what it held. */
	assert_int_equal(f->mv->count[TND_IO_FLUSH], 1);

	/* The caching page now says WCE=0 ... */
	uint8_t b[64];
	t = RUN(f, b, 64, 0x1a, 0x08, 0x08, 0, 64, 0);
	assert_good(&t);
	assert_int_equal(b[4 + 2] & 0x04, 0);
	/* ... and every write is made stable before it is acknowledged. */
	uint8_t c[16], buf[BS] = { 0 };
	put_rw10(c, 0x2a, 0, 0, 1);
	t = run_raw(f, c, buf, BS);
	assert_good(&t);
	assert_int_equal(f->mv->last.flags & TND_IO_FUA, TND_IO_FUA);
	/* WRITE SAME too. */
	memset(buf, 1, BS);
	put_rw10(c, 0x41, 0, 0, 2);
	t = run_raw(f, c, buf, BS);
	assert_good(&t);
	assert_int_equal(f->mv->last.flags & TND_IO_FUA, TND_IO_FUA);

	/* The other nexus is told, once; we are not. */
	t = run_on(f, other, f->lu, NULL, 0, CDB(0x00, 0, 0, 0, 0, 0));
	assert_sense(&t, 0x6, 0x2a, 0x01);
	t = run_on(f, other, f->lu, NULL, 0, CDB(0x00, 0, 0, 0, 0, 0));
	assert_good(&t);
	t = RUN(f, NULL, 0, 0x00, 0, 0, 0, 0, 0);
	assert_good(&t);

	/* Back on with MODE SELECT(10): writes are no longer forced. */
	uint8_t p10[28] = { 0 };
	p10[8] = 0x08;
	p10[9] = 0x12;
	p10[10] = 0x04;
	t = RUN(f, p10, 28, 0x55, 0x10, 0, 0, 0, 0, 0, 0, 28, 0);
	assert_good(&t);
	put_rw10(c, 0x2a, 0, 0, 1);
	t = run_raw(f, c, buf, BS);
	assert_good(&t);
	assert_int_equal(f->mv->last.flags & TND_IO_FUA, 0);
	t = run_on(f, other, f->lu, NULL, 0, CDB(0x00, 0, 0, 0, 0, 0));
	assert_sense(&t, 0x6, 0x2a, 0x01);

	/* Selecting the current value changes nothing and tells nobody. */
	n = caching_list(p, true);
	t = RUN(f, p, n, 0x15, 0x10, 0, 0, (uint8_t)n, 0);
	assert_good(&t);
	t = run_on(f, other, f->lu, NULL, 0, CDB(0x00, 0, 0, 0, 0, 0));
	assert_good(&t);
	tnd_scsi_nexus_destroy(other);
}

/* A cache layer switched to write-through: the caching page follows at
 * once, and WCE=1 can no longer be selected. */
static void wce_follows_volume_write_cache(void **state)
{
	struct fx *f = *state;
	uint8_t b[64];
	f->mv->info.write_cache = false;
	struct tcmd t = RUN(f, b, 64, 0x1a, 0x08, 0x08, 0, 64, 0);
	assert_good(&t);
	assert_int_equal(b[6] & 0x04, 0);
	t = RUN(f, b, 64, 0x1a, 0x08, 0x48, 0, 64, 0);
	assert_int_equal(b[6] & 0x04, 0);
	uint8_t p[24];
	unsigned n = caching_list(p, true);
	t = RUN(f, p, n, 0x15, 0x10, 0, 0, (uint8_t)n, 0);
	assert_sense(&t, 0x5, 0x26, 0x00);
	f->mv->info.write_cache = true;
	t = RUN(f, b, 64, 0x1a, 0x08, 0x08, 0, 64, 0);
	assert_int_equal(b[6] & 0x04, 0x04);
}

static void mode_select_rejects(void **state)
{
	struct fx *f = *state;
	uint8_t p[64];
	unsigned n = caching_list(p, false);

	/* PF=0 */
	struct tcmd t = RUN(f, p, n, 0x15, 0x00, 0, 0, (uint8_t)n, 0);
	assert_sense(&t, 0x5, 0x24, 0x00);
	/* SP=1 */
	t = RUN(f, p, n, 0x15, 0x11, 0, 0, (uint8_t)n, 0);
	assert_sense(&t, 0x5, 0x24, 0x00);
	/* A field that cannot change (RCD). */
	p[6] |= 0x01;
	t = RUN(f, p, n, 0x15, 0x10, 0, 0, (uint8_t)n, 0);
	assert_sense(&t, 0x5, 0x26, 0x00);
	assert_field_ptr(&t, false, 6);
	p[6] &= (uint8_t)~0x01;
	/* Wrong page length. */
	p[5] = 0x10;
	t = RUN(f, p, n, 0x15, 0x10, 0, 0, (uint8_t)n, 0);
	assert_sense(&t, 0x5, 0x26, 0x00);
	p[5] = 0x12;
	/* Page cut short by the parameter list length. */
	t = RUN(f, p, 10, 0x15, 0x10, 0, 0, 10, 0);
	assert_sense(&t, 0x5, 0x1a, 0x00);
	/* Shorter than the header. */
	t = RUN(f, p, 3, 0x15, 0x10, 0, 0, 3, 0);
	assert_sense(&t, 0x5, 0x1a, 0x00);
	/* A page we do not have. */
	p[4] = 0x19;
	t = RUN(f, p, n, 0x15, 0x10, 0, 0, (uint8_t)n, 0);
	assert_sense(&t, 0x5, 0x26, 0x00);
	p[4] = 0x08;
	/* Control page: QAM cannot change. */
	uint8_t q[16] = { 0 };
	q[4] = 0x0a;
	q[5] = 0x0a;
	q[7] = 0x00; /* current is 0x10 */
	q[12] = 0xff;
	q[13] = 0xff;
	t = RUN(f, q, 16, 0x15, 0x10, 0, 0, 16, 0);
	assert_sense(&t, 0x5, 0x26, 0x00);
	/* Block descriptor with a different block size. */
	uint8_t r[12] = { 0 };
	r[3] = 8;
	tnd_put_be24(r + 9, 4096);
	t = RUN(f, r, 12, 0x15, 0x10, 0, 0, 12, 0);
	assert_sense(&t, 0x5, 0x26, 0x00);
	/* Same block size: accepted. */
	tnd_put_be24(r + 9, BS);
	t = RUN(f, r, 12, 0x15, 0x10, 0, 0, 12, 0);
	assert_good(&t);
	/* Nothing above changed WCE. */
	uint8_t b[64];
	t = RUN(f, b, 64, 0x1a, 0x08, 0x08, 0, 64, 0);
	assert_int_equal(b[6] & 0x04, 0x04);
}

/* ---- misc commands ---- */

static void request_sense_desc_refused(void **state)
{
	struct fx *f = *state;
	uint8_t b[32];
	struct tcmd t = RUN(f, b, 32, 0x03, 0x01, 0, 0, 32, 0);
	assert_sense(&t, 0x5, 0x24, 0x00);
	/* Allocation length honoured. */
	t = RUN(f, b, 32, 0x03, 0, 0, 0, 8, 0);
	assert_good(&t);
	assert_int_equal(t.c.in_len, 8);
}

static void start_stop_unit(void **state)
{
	struct fx *f = *state;
	struct tcmd t = RUN(f, NULL, 0, 0x1b, 0, 0, 0, 0x01, 0); /* START */
	assert_good(&t);
	t = RUN(f, NULL, 0, 0x1b, 0, 0, 0, 0x03, 0);             /* LOEJ + START: load */
	assert_good(&t);
	t = RUN(f, NULL, 0, 0x1b, 0, 0, 0, 0x00, 0);             /* stop */
	assert_good(&t);
	assert_int_equal(f->mv->count[TND_IO_FLUSH], 1);         /* stopping flushes */
	t = RUN(f, NULL, 0, 0x1b, 0x01, 0, 0, 0x04, 0);          /* IMMED, NO_FLUSH */
	assert_good(&t);
	assert_int_equal(f->mv->count[TND_IO_FLUSH], 1);
	/* Eject: the medium is not removable. */
	t = RUN(f, NULL, 0, 0x1b, 0x01, 0, 0, 0x02, 0);
	assert_sense(&t, 0x5, 0x24, 0x00);
	assert_field_ptr(&t, true, 4);
	/* With a power condition, LOEJ and START are ignored. */
	t = RUN(f, NULL, 0, 0x1b, 0x01, 0, 0, 0x32, 0);
	assert_good(&t);
	assert_int_equal(f->mv->count[TND_IO_FLUSH], 1);
}

static void invalid_opcode_and_reserved_bits(void **state)
{
	struct fx *f = *state;
	struct tcmd t = RUN(f, NULL, 0, 0xc7, 0, 0, 0, 0, 0);
	assert_sense(&t, 0x5, 0x20, 0x00);
	t = RUN(f, NULL, 0, 0x00, 0, 0, 0, 0, 0x04); /* TUR with NACA */
	assert_sense(&t, 0x5, 0x24, 0x00);
	assert_field_ptr(&t, true, 5);
	t = RUN(f, NULL, 0, 0x00, 0x01, 0, 0, 0, 0); /* reserved byte */
	assert_sense(&t, 0x5, 0x24, 0x00);
	assert_field_ptr(&t, true, 1);
	/* MAINTENANCE IN with an unknown service action. */
	uint8_t b[64];
	t = RUN(f, b, 64, 0xa3, 0x05, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0);
	assert_sense(&t, 0x5, 0x24, 0x00);
}

/* ---- thin provisioning ---- */

static void unmap_param(uint8_t *p, unsigned nr, const uint64_t *lba, const uint32_t *n)
{
	memset(p, 0, 8 + 16 * nr);
	tnd_put_be16(p, (uint16_t)(6 + 16 * nr));
	tnd_put_be16(p + 2, (uint16_t)(16 * nr));
	for (unsigned i = 0; i < nr; i++) {
		tnd_put_be64(p + 8 + 16 * i, lba[i]);
		tnd_put_be32(p + 8 + 16 * i + 8, n[i]);
	}
}

static void unmap(void **state)
{
	struct fx *f = *state;
	memset(f->mv->data, 0xab, (size_t)NBLOCKS * BS);
	uint8_t p[8 + 16 * 3];
	uint64_t lba[] = { 10, 100, 0 };
	uint32_t n[] = { 5, 0, 2 };
	unmap_param(p, 3, lba, n);
	struct tcmd t = RUN(f, p, sizeof(p), 0x42, 0, 0, 0, 0, 0, 0, 0, sizeof(p), 0);
	assert_good(&t);
	assert_int_equal(f->mv->count[TND_IO_UNMAP], 2);
	assert_int_equal(f->mv->data[10 * BS], 0);
	assert_int_equal(f->mv->data[15 * BS - 1], 0);
	assert_int_equal(f->mv->data[15 * BS], 0xab);
	assert_int_equal(f->mv->data[BS], 0);
	assert_int_equal(f->mv->data[2 * BS], 0xab);

	/* Out of range: nothing is unmapped. */
	lba[1] = NBLOCKS - 1;
	n[1] = 2;
	unmap_param(p, 3, lba, n);
	t = RUN(f, p, sizeof(p), 0x42, 0, 0, 0, 0, 0, 0, 0, sizeof(p), 0);
	assert_sense(&t, 0x5, 0x21, 0x00);
	assert_int_equal(f->mv->count[TND_IO_UNMAP], 2);
	/* More blocks in total than the maximum we advertise. */
	f->mv->info.max_unmap_blocks = 8;
	lba[1] = 0;
	n[1] = 2;
	unmap_param(p, 3, lba, n);
	t = RUN(f, p, sizeof(p), 0x42, 0, 0, 0, 0, 0, 0, 0, sizeof(p), 0);
	assert_sense(&t, 0x5, 0x26, 0x00);
	f->mv->info.max_unmap_blocks = 1u << 16;
	/* ANCHOR */
	t = RUN(f, p, sizeof(p), 0x42, 0x01, 0, 0, 0, 0, 0, 0, sizeof(p), 0);
	assert_sense(&t, 0x5, 0x24, 0x00);
	/* Parameter list shorter than its header. */
	t = RUN(f, p, 4, 0x42, 0, 0, 0, 0, 0, 0, 0, 4, 0);
	assert_sense(&t, 0x5, 0x1a, 0x00);
	/* Empty parameter list: nothing to do. */
	t = RUN(f, NULL, 0, 0x42, 0, 0, 0, 0, 0, 0, 0, 0, 0);
	assert_good(&t);
	/* A volume that cannot deallocate has no UNMAP. */
	f->mv->info.thin = false;
	t = RUN(f, p, sizeof(p), 0x42, 0, 0, 0, 0, 0, 0, 0, sizeof(p), 0);
	assert_sense(&t, 0x5, 0x20, 0x00);
}

static void write_same(void **state)
{
	struct fx *f = *state;
	uint8_t c[16];
	uint8_t blk[BS];
	memset(f->mv->data, 0xab, (size_t)NBLOCKS * BS);

	/* A pattern. */
	fill(blk, BS, 7);
	put_rw10(c, 0x41, 0, 50, 3);
	struct tcmd t = run_raw(f, c, blk, BS);
	assert_good(&t);
	assert_int_equal(t.c.xfer_len, BS);
	for (int i = 0; i < 3; i++)
		assert_memory_equal(f->mv->data + (50 + i) * BS, blk, BS);
	assert_int_equal(f->mv->data[53 * BS], 0xab);

	/* Zeros with UNMAP: deallocated. */
	memset(blk, 0, BS);
	put_rw16(c, 0x93, 0x08, 60, 4);
	t = run_raw(f, c, blk, BS);
	assert_good(&t);
	assert_int_equal(f->mv->last.type, TND_IO_UNMAP);
	assert_int_equal(f->mv->data[60 * BS], 0);
	assert_int_equal(f->mv->data[64 * BS - 1], 0);
	/* Zeros without UNMAP: written as zeros. */
	put_rw16(c, 0x93, 0, 70, 4);
	t = run_raw(f, c, blk, BS);
	assert_good(&t);
	assert_int_equal(f->mv->last.type, TND_IO_WRITE_ZEROES);
	/* NDOB: no data-out. */
	put_rw16(c, 0x93, 0x09, 80, 4);
	t = run_raw(f, c, NULL, 0);
	assert_good(&t);
	assert_int_equal(t.c.xfer_len, 0);
	assert_int_equal(f->mv->data[80 * BS], 0);
	/* ANCHOR, zero blocks, out of range. */
	put_rw16(c, 0x93, 0x18, 80, 4);
	t = run_raw(f, c, blk, BS);
	assert_sense(&t, 0x5, 0x24, 0x00);
	put_rw10(c, 0x41, 0, 80, 0);
	t = run_raw(f, c, blk, BS);
	assert_sense(&t, 0x5, 0x24, 0x00);
	put_rw10(c, 0x41, 0, NBLOCKS - 1, 2);
	t = run_raw(f, c, blk, BS);
	assert_sense(&t, 0x5, 0x21, 0x00);
	/* Data-out must be exactly one block. */
	uint8_t two[2 * BS] = { 0 };
	put_rw10(c, 0x41, 0, 80, 1);
	t = run_raw(f, c, two, BS / 2);
	assert_sense(&t, 0x5, 0x24, 0x00);
	t = run_raw(f, c, two, 2 * BS);
	assert_sense(&t, 0x5, 0x24, 0x00);
	/* Longer than MAXIMUM WRITE SAME LENGTH (which the VPD page says). */
	uint8_t vpd[64];
	t = RUN(f, vpd, 64, 0x12, 1, 0xb0, 0, 64, 0);
	assert_int_equal(tnd_get_be64(vpd + 36), 0xffff);
	assert_int_equal(tnd_volume_resize(&f->mv->vol, 0x10000 + 8), 0);
	put_rw16(c, 0x93, 0x08, 0, 0x10000);
	t = run_raw(f, c, blk, BS);
	assert_sense(&t, 0x6, 0x2a, 0x09); /* the resize */
	t = run_raw(f, c, blk, BS);
	assert_sense(&t, 0x5, 0x24, 0x00);
	assert_field_ptr(&t, true, 10);
	/* A large range is written in chunks. */
	fill(blk, BS, 8);
	put_rw16(c, 0x93, 0, 0, NBLOCKS);
	t = run_raw(f, c, blk, BS);
	assert_good(&t);
	assert_memory_equal(f->mv->data + (NBLOCKS - 1) * BS, blk, BS);
}

static void get_lba_status(void **state)
{
	struct fx *f = *state;
	uint8_t b[64];
	struct tcmd t = RUN(f, b, 64, 0x9e, 0x12, 0, 0, 0, 0, 0, 0, 0, 10, 0, 0, 0, 64, 0, 0);
	assert_good(&t);
	assert_int_equal(tnd_get_be32(b), 20);
	assert_int_equal(tnd_get_be64(b + 8), 10);
	assert_int_equal(tnd_get_be32(b + 16), NBLOCKS - 10);
	t = RUN(f, b, 64, 0x9e, 0x12, 0, 0, 0, 0, 0, 0, 0x08, 0, 0, 0, 0, 64, 0, 0);
	assert_sense(&t, 0x5, 0x21, 0x00);
}

/* A volume that knows: one descriptor per run, as many as fit. */
static void get_lba_status_runs(void **state)
{
	struct fx *f = *state;
	f->mv->block_status = true;
	uint8_t blk[512];
	memset(blk, 0x11, sizeof(blk));
	/* Blocks 4-5 and 9 hold data; the rest of the medium is zeros. */
	for (uint64_t lba = 4; lba < 6; lba++)
		memcpy(f->mv->data + lba * 512, blk, 512);
	memcpy(f->mv->data + 9 * 512, blk, 512);

	uint8_t b[128];
	struct tcmd t = RUN(f, b, 128, 0x9e, 0x12, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 128, 0, 0);
	assert_good(&t);
	/* 2-3 deallocated, 4-5 mapped, 6-8 deallocated, 9 mapped, rest deallocated. */
	static const struct { uint64_t lba; uint32_t n; uint8_t st; } want[] = {
		{ 2, 2, 1 }, { 4, 2, 0 }, { 6, 3, 1 }, { 9, 1, 0 }, { 10, NBLOCKS - 10, 1 },
	};
	assert_int_equal(tnd_get_be32(b), 4 + 16 * 5);
	assert_int_equal(t.c.in_len, 8 + 16 * 5);
	for (unsigned i = 0; i < 5; i++) {
		const uint8_t *d = b + 8 + 16 * i;
		assert_int_equal(tnd_get_be64(d), want[i].lba);
		assert_int_equal(tnd_get_be32(d + 8), want[i].n);
		assert_int_equal(d[12] & 0xf, want[i].st);
	}
	/* Room for two descriptors: two, and the length says so. */
	t = RUN(f, b, 40, 0x9e, 0x12, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 40, 0, 0);
	assert_good(&t);
	assert_int_equal(tnd_get_be32(b), 4 + 16 * 2);
	assert_int_equal(t.c.in_len, 40);
	assert_int_equal(tnd_get_be64(b + 24), 4);
	/* An allocation length shorter than one descriptor: truncated, GOOD. */
	t = RUN(f, b, 12, 0x9e, 0x12, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 12, 0, 0);
	assert_good(&t);
	assert_int_equal(t.c.in_len, 12);
	assert_int_equal(tnd_get_be32(b), 20);
	/* A volume error is a read error. */
	f->mv->fail_type = TND_IO_BLOCK_STATUS;
	f->mv->fail_err = -EIO;
	t = RUN(f, b, 128, 0x9e, 0x12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 128, 0, 0);
	assert_sense(&t, 0x3, 0x11, 0x00);
}

static void report_supported_opcodes(void **state)
{
	struct fx *f = *state;
	static uint8_t b[4096];
	struct tcmd t = RUN(f, b, sizeof(b), 0xa3, 0x0c, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0);
	assert_good(&t);
	uint32_t len = tnd_get_be32(b);
	assert_int_equal(t.c.in_len, len + 4);
	assert_int_equal(len % 8, 0);
	bool read10 = false, rc16 = false;
	for (uint32_t off = 4; off < len + 4; off += 8) {
		if (b[off] == 0x28)
			read10 = tnd_get_be16(b + off + 6) == 10;
		if (b[off] == 0x9e && tnd_get_be16(b + off + 2) == 0x10)
			rc16 = (b[off + 5] & 1) == 1;
	}
	assert_true(read10);
	assert_true(rc16);

	/* One command: WRITE(10) with its usage bitmap. */
	t = RUN(f, b, 64, 0xa3, 0x0c, 0x01, 0x2a, 0, 0, 0, 0, 0, 64, 0, 0);
	assert_good(&t);
	assert_int_equal(b[1] & 0x07, 3);
	assert_int_equal(tnd_get_be16(b + 2), 10);
	assert_int_equal(b[4], 0x2a);
	assert_int_equal(b[5], 0x18);
	/* Unsupported opcode. */
	t = RUN(f, b, 64, 0xa3, 0x0c, 0x01, 0xc7, 0, 0, 0, 0, 0, 64, 0, 0);
	assert_good(&t);
	assert_int_equal(b[1] & 0x07, 1);
	/* With service action. */
	t = RUN(f, b, 64, 0xa3, 0x0c, 0x02, 0x9e, 0, 0x10, 0, 0, 0, 64, 0, 0);
	assert_good(&t);
	assert_int_equal(b[1] & 0x07, 3);
	assert_int_equal(tnd_get_be16(b + 2), 16);
	/* Option 1 on a service-action opcode. */
	t = RUN(f, b, 64, 0xa3, 0x0c, 0x01, 0x9e, 0, 0, 0, 0, 0, 64, 0, 0);
	assert_sense(&t, 0x5, 0x24, 0x00);
	/* UNMAP is listed only where the LU can deallocate. */
	t = RUN(f, b, 64, 0xa3, 0x0c, 0x01, 0x42, 0, 0, 0, 0, 0, 64, 0, 0);
	assert_good(&t);
	assert_int_equal(b[1] & 0x07, 3);
	f->mv->info.thin = false;
	t = RUN(f, b, 64, 0xa3, 0x0c, 0x01, 0x42, 0, 0, 0, 0, 0, 64, 0, 0);
	assert_good(&t);
	assert_int_equal(b[1] & 0x07, 1);
	t = RUN(f, b, sizeof(b), 0xa3, 0x0c, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0);
	assert_good(&t);
	for (uint32_t off = 4; off < tnd_get_be32(b) + 4; off += 8)
		assert_int_not_equal(b[off], 0x42);
	f->mv->info.thin = true;
	/* With timeouts descriptors. */
	t = RUN(f, b, sizeof(b), 0xa3, 0x0c, 0x80, 0, 0, 0, 0, 0, 0x10, 0, 0, 0);
	assert_good(&t);
	assert_int_equal(tnd_get_be32(b) % 20, 0);

	t = RUN(f, b, 64, 0xa3, 0x0d, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0);
	assert_good(&t);
	assert_int_equal(t.c.in_len, 4);
	assert_int_equal(b[0] & 0x08, 0x08); /* LU reset */
}

/* ---- COMPARE AND WRITE ---- */

static void put_caw(uint8_t *c, uint8_t b1, uint64_t lba, uint8_t n)
{
	memset(c, 0, 16);
	c[0] = 0x89;
	c[1] = b1;
	tnd_put_be64(c + 2, lba);
	c[13] = n;
}

static void start_raw(struct fx *f, struct tcmd *t, const uint8_t *cdb, void *data, uint32_t len)
{
	memset(t, 0, sizeof(*t));
	memcpy(t->c.cdb, cdb, 16);
	t->c.cdb_len = 16;
	t->c.lu = f->lu;
	t->c.nexus = f->nx;
	t->c.reactor = f->r;
	t->c.data = data;
	t->c.data_len = len;
	t->c.exp_len = len;
	t->c.dir = len ? TND_SCSI_DIR_WRITE : TND_SCSI_DIR_NONE;
	t->c.done = on_done;
	tnd_scsi_exec(&t->c);
}

static void compare_and_write(void **state)
{
	struct fx *f = *state;
	uint8_t c[16];
	uint8_t d[3 * BS];
	memset(f->mv->data + 5 * BS, 'A', BS);
	memset(d, 'A', BS);
	memset(d + BS, 'B', BS);

	put_caw(c, 0, 5, 1);
	struct tcmd t = run_raw(f, c, d, 2 * BS);
	assert_good(&t);
	assert_int_equal(t.c.xfer_len, 2 * BS);
	assert_memory_equal(f->mv->data + 5 * BS, d + BS, BS);

	/* The medium now holds B: a compare against A fails at byte 0, and
	 * one differing at byte 100 reports 100; nothing is written. */
	memset(d + BS, 'C', BS);
	t = run_raw(f, c, d, 2 * BS);
	assert_sense(&t, 0xe, 0x1d, 0x00);
	assert_int_equal(tnd_get_be32(t.c.sense + 3), 0);
	memset(d, 'B', BS);
	d[100] = 'x';
	t = run_raw(f, c, d, 2 * BS);
	assert_sense(&t, 0xe, 0x1d, 0x00);
	assert_int_equal(tnd_get_be32(t.c.sense + 3), 100);
	assert_int_equal(f->mv->data[5 * BS], 'B');

	/* FUA reaches the write. */
	d[100] = 'B';
	put_caw(c, 0x08, 5, 1);
	t = run_raw(f, c, d, 2 * BS);
	assert_good(&t);
	assert_int_equal(f->mv->last.type, TND_IO_WRITE);
	assert_int_equal(f->mv->last.flags & TND_IO_FUA, TND_IO_FUA);
	assert_int_equal(f->mv->data[5 * BS], 'C');

	/* Data-out must be exactly verify + write data. */
	put_caw(c, 0, 5, 1);
	t = run_raw(f, c, d, BS);
	assert_sense(&t, 0x5, 0x24, 0x00);
	t = run_raw(f, c, d, 3 * BS);
	assert_sense(&t, 0x5, 0x24, 0x00);
	/* Zero blocks: nothing to do, and no data-out expected. */
	put_caw(c, 0, 5, 0);
	t = run_raw(f, c, NULL, 0);
	assert_good(&t);
	struct tcmd t0;
	start_raw(f, &t0, c, d, 2 * BS);
	assert_int_equal(t0.calls, 1); /* answered without I/O */
	assert_sense(&t0, 0x5, 0x24, 0x00);
	/* Too many, out of range. */
	put_caw(c, 0, 5, 17);
	t = run_raw(f, c, NULL, 0);
	assert_sense(&t, 0x5, 0x24, 0x00);
	put_caw(c, 0, NBLOCKS, 1);
	t = run_raw(f, c, d, 2 * BS);
	assert_sense(&t, 0x5, 0x21, 0x00);
	/* A read error releases the lock. */
	f->mv->fail_type = TND_IO_READ;
	f->mv->fail_err = -EIO;
	put_caw(c, 0, 5, 1);
	t = run_raw(f, c, d, 2 * BS);
	assert_sense(&t, 0x3, 0x11, 0x00);
	struct scsi_caw_waiter w;
	assert_true(scsi_caw_acquire(f->lu, &w));
	scsi_caw_release(f->lu);
}

static void compare_and_write_waits_for_lock(void **state)
{
	struct fx *f = *state;
	uint8_t c[16];
	uint8_t d1[2 * BS], d2[2 * BS];
	memset(f->mv->data, 'A', BS);
	memset(d1, 'A', BS);
	memset(d1 + BS, 'B', BS);
	memset(d2, 'B', BS);
	memset(d2 + BS, 'C', BS);

	struct scsi_caw_waiter holder;
	assert_true(scsi_caw_acquire(f->lu, &holder));
	struct tcmd t1, t2;
	put_caw(c, 0, 0, 1);
	start_raw(f, &t1, c, d1, sizeof(d1));
	start_raw(f, &t2, c, d2, sizeof(d2));
	for (int i = 0; i < 5; i++)
		tnd_reactor_poll(f->r, 0);
	assert_int_equal(t1.calls + t2.calls, 0);
	assert_int_equal(f->mv->count[TND_IO_READ], 0);

	/* Released: the waiters run in arrival order, A->B then B->C. */
	scsi_caw_release(f->lu);
	for (int i = 0; i < 1000 && t2.calls == 0; i++)
		tnd_reactor_poll(f->r, 10);
	assert_int_equal(t1.calls, 1);
	assert_int_equal(t2.calls, 1);
	assert_good(&t1);
	assert_good(&t2);
	assert_int_equal(f->mv->data[0], 'C');
	/* And the lock is free again. */
	assert_true(scsi_caw_acquire(f->lu, &holder));
	scsi_caw_release(f->lu);
}

/*
 * Two sessions on two reactor threads increment a counter in block 0 with
 * COMPARE AND WRITE, re-reading on MISCOMPARE. If the read-compare-write
 * were not atomic across reactors, two would succeed from the same value
 * and the final count would fall short.
 */
struct caw_worker {
	struct tnd_reactor *r;
	struct tnd_scsi_lu *lu;
	struct tnd_scsi_nexus *nx;
	struct tnd_msg kick;
	struct tnd_scsi_cmd cmd;
	uint8_t buf[2 * BS];
	uint64_t guess;
	unsigned successes, target;
	bool reading;
	atomic_bool finished;
	atomic_bool failed;
};

static void caw_worker_done(struct tnd_scsi_cmd *cmd);

static void caw_worker_issue(struct caw_worker *w)
{
	struct tnd_scsi_cmd *c = &w->cmd;
	memset(c, 0, sizeof(*c));
	c->cdb_len = 16;
	c->lu = w->lu;
	c->nexus = w->nx;
	c->reactor = w->r;
	c->done = caw_worker_done;
	c->priv = w;
	memset(w->buf, 0, sizeof(w->buf));
	if (w->reading) {
		put_rw10(c->cdb, 0x28, 0, 0, 1);
		c->data = w->buf;
		c->data_len = BS;
	} else {
		put_caw(c->cdb, 0, 0, 1);
		tnd_put_be64(w->buf, w->guess);
		tnd_put_be64(w->buf + BS, w->guess + 1);
		c->data = w->buf;
		c->data_len = 2 * BS;
	}
	c->exp_len = c->data_len;
	c->dir = w->reading ? TND_SCSI_DIR_READ : TND_SCSI_DIR_WRITE;
	tnd_scsi_exec(c);
}

static void caw_worker_done(struct tnd_scsi_cmd *cmd)
{
	struct caw_worker *w = cmd->priv;
	if (w->reading) {
		if (cmd->status == TND_SAM_GOOD) {
			w->guess = tnd_get_be64(w->buf);
			w->reading = false;
		}
	} else if (cmd->status == TND_SAM_GOOD) {
		w->guess++;
		if (++w->successes == w->target) {
			atomic_store(&w->finished, true);
			return;
		}
	} else if (cmd->status == TND_SAM_CHECK_CONDITION && (cmd->sense[2] & 0xf) == 0xe) {
		w->reading = true;
	} else if (!(cmd->status == TND_SAM_CHECK_CONDITION && (cmd->sense[2] & 0xf) == 0x6)) {
		atomic_store(&w->failed, true);
		atomic_store(&w->finished, true);
		return;
	}
	caw_worker_issue(w);
}

static void caw_worker_kick(struct tnd_msg *m)
{
	caw_worker_issue(tnd_container_of(m, struct caw_worker, kick));
}

static void compare_and_write_atomic_across_reactors(void **state)
{
	struct fx *f = *state;
	memset(f->mv->data, 0, BS);
	struct tnd_reactor *r2;
	assert_int_equal(tnd_reactor_create(1, 64, &r2), 0);
	static struct caw_worker w[2];
	memset(w, 0, sizeof(w));
	for (int i = 0; i < 2; i++) {
		w[i].r = i ? r2 : f->r;
		w[i].lu = f->lu;
		w[i].target = 5000;
		w[i].kick.fn = caw_worker_kick;
		assert_int_equal(tnd_scsi_nexus_create(i ? "iqn.w,i,0x2" : "iqn.w,i,0x1", &port,
						       &w[i].nx), 0);
	}
	assert_int_equal(tnd_reactor_start(f->r), 0);
	assert_int_equal(tnd_reactor_start(r2), 0);
	tnd_reactor_send(f->r, &w[0].kick);
	tnd_reactor_send(r2, &w[1].kick);
	for (int i = 0; i < 20000 && !(atomic_load(&w[0].finished) && atomic_load(&w[1].finished));
	     i++)
		usleep(1000);
	tnd_reactor_stop(f->r);
	tnd_reactor_stop(r2);
	tnd_reactor_join(f->r);
	tnd_reactor_join(r2);
	assert_true(atomic_load(&w[0].finished) && atomic_load(&w[1].finished));
	assert_false(atomic_load(&w[0].failed) || atomic_load(&w[1].failed));
	assert_int_equal(tnd_get_be64(f->mv->data), 10000);
	for (int i = 0; i < 2; i++)
		tnd_scsi_nexus_destroy(w[i].nx);
	tnd_reactor_destroy(r2);
}

/* ---- tnd_scsi_cdb_xfer ---- */

static void cdb_xfer(void **state)
{
	struct fx *f = *state;
	enum tnd_scsi_dir dir;
	uint32_t len;
	uint8_t c[16];
	put_rw10(c, 0x28, 0, 0, 8);
	assert_int_equal(tnd_scsi_cdb_xfer(f->lu, c, 16, &dir, &len), 0);
	assert_int_equal(dir, TND_SCSI_DIR_READ);
	assert_int_equal(len, 8 * BS);
	put_rw16(c, 0x8a, 0, 0, 3);
	assert_int_equal(tnd_scsi_cdb_xfer(f->lu, c, 16, &dir, &len), 0);
	assert_int_equal(dir, TND_SCSI_DIR_WRITE);
	assert_int_equal(len, 3 * BS);
	memcpy(c, (uint8_t[]){ 0x0a, 0, 0, 0, 0, 0 }, 6);
	assert_int_equal(tnd_scsi_cdb_xfer(f->lu, c, 16, &dir, &len), 0);
	assert_int_equal(len, 256 * BS);
	memcpy(c, (uint8_t[]){ 0x12, 0, 0, 0x01, 0x00, 0 }, 6);
	assert_int_equal(tnd_scsi_cdb_xfer(f->lu, c, 16, &dir, &len), 0);
	assert_int_equal(dir, TND_SCSI_DIR_READ);
	assert_int_equal(len, 256);
	memcpy(c, (uint8_t[]){ 0x00, 0, 0, 0, 0, 0 }, 6);
	assert_int_equal(tnd_scsi_cdb_xfer(f->lu, c, 16, &dir, &len), 0);
	assert_int_equal(dir, TND_SCSI_DIR_NONE);
	put_rw10(c, 0x2f, 0x02, 0, 4);
	assert_int_equal(tnd_scsi_cdb_xfer(f->lu, c, 16, &dir, &len), 0);
	assert_int_equal(dir, TND_SCSI_DIR_WRITE);
	assert_int_equal(len, 4 * BS);
	put_rw10(c, 0x41, 0, 0, 4);
	assert_int_equal(tnd_scsi_cdb_xfer(f->lu, c, 16, &dir, &len), 0);
	assert_int_equal(len, BS);
	c[0] = 0xc7;
	assert_int_equal(tnd_scsi_cdb_xfer(f->lu, c, 16, &dir, &len), -EINVAL);
	put_rw16(c, 0x88, 0, 0, 2);
	assert_int_equal(tnd_scsi_cdb_xfer(f->lu, c, 10, &dir, &len), -EINVAL);
	/* No LU: 512-byte blocks assumed. */
	put_rw10(c, 0x28, 0, 0, 1);
	assert_int_equal(tnd_scsi_cdb_xfer(NULL, c, 16, &dir, &len), 0);
	assert_int_equal(len, 512);
}

static void build_sense(void **state)
{
	(void)state;
	uint8_t b[18];
	assert_int_equal(tnd_scsi_build_sense(b, 0x5, 0x24, 0x00), 18);
	assert_int_equal(b[0], 0x70);
	assert_int_equal(b[2], 0x5);
	assert_int_equal(b[7], 10);
	assert_int_equal(b[12], 0x24);
	assert_int_equal(b[13], 0x00);
}

static void lu_create_rejects_bad_input(void **state)
{
	struct fx *f = *state;
	struct tnd_scsi_lu *lu;
	struct tnd_scsi_lu_desc d = { .name = "", .vol = &f->mv->vol };
	assert_int_equal(tnd_scsi_lu_create(&d, &lu), -EINVAL);
	d.name = "ok";
	d.vol = NULL;
	assert_int_equal(tnd_scsi_lu_create(&d, &lu), -EINVAL);
}

/* ---- ALUA ---- */

static void inquiry_tpgs_implicit_and_3pc(void **state)
{
	struct fx *f = *state;
	uint8_t b[96];
	struct tcmd t = RUN(f, b, sizeof(b), 0x12, 0, 0, 0, 96, 0);
	assert_good(&t);
	/* TPGS = 01b (implicit ALUA only), 3PC: EXTENDED COPY offered. */
	assert_int_equal(b[5] & 0x30, 0x10);
	assert_int_equal(b[5] & 0x08, 0x08);
}

static struct tcmd run_rtpg(struct fx *f, struct tnd_scsi_nexus *nx, unsigned format,
			    uint8_t *b, uint32_t alloc)
{
	uint8_t cdb[16] = { 0xa3, (uint8_t)(format << 5 | 0x0a) };
	tnd_put_be32(cdb + 6, alloc);
	return run_on(f, nx, f->lu, b, alloc, cdb, 16);
}

static void rtpg_both_formats(void **state)
{
	struct fx *f = *state;
	uint8_t b[64];
	memset(b, 0xee, sizeof(b));
	struct tcmd t = run_rtpg(f, f->nx, 0, b, sizeof(b));
	assert_good(&t);
	assert_int_equal(t.c.in_len, 16);
	assert_int_equal(tnd_get_be32(b), 12);
	assert_int_equal(b[4], 0x00);                 /* active/optimized, not preferred */
	assert_int_equal(b[5], 0x8f);                 /* T, U, S, AN, AO supported */
	assert_int_equal(tnd_get_be16(b + 6), 1);     /* group 1: this node */
	assert_int_equal(b[9], 0x00);                 /* status: never changed */
	assert_int_equal(b[11], 1);                   /* one target port */
	assert_int_equal(tnd_get_be16(b + 14), port.rel_port_id);

	memset(b, 0xee, sizeof(b));
	t = run_rtpg(f, f->nx, 1, b, sizeof(b));
	assert_good(&t);
	assert_int_equal(t.c.in_len, 20);
	assert_int_equal(tnd_get_be32(b), 16);
	assert_int_equal(b[4], 0x10);                 /* format type 001b */
	assert_int_equal(b[8], 0x00);
	assert_int_equal(tnd_get_be16(b + 10), 1);
	assert_int_equal(b[15], 1);
	assert_int_equal(tnd_get_be16(b + 18), port.rel_port_id);

	/* Truncated to the allocation length. */
	t = run_rtpg(f, f->nx, 0, b, 6);
	assert_good(&t);
	assert_int_equal(t.c.in_len, 6);
	assert_int_equal(tnd_get_be32(b), 12);

	t = run_rtpg(f, f->nx, 2, b, sizeof(b));
	assert_sense(&t, 0x5, 0x24, 0x00);
	assert_field_ptr(&t, true, 1);

	/* The port group's number in VPD 83h is the same group. */
	uint8_t v[256];
	t = RUN(f, v, sizeof(v), 0x12, 0x01, 0x83, 0x01, 0x00, 0);
	assert_good(&t);
	bool found = false;
	for (unsigned off = 4; off + 4 <= t.c.in_len; off += 4 + v[off + 3])
		if ((v[off + 1] & 0x0f) == 0x5) {
			assert_int_equal(tnd_get_be16(v + off + 6), 1);
			found = true;
		}
	assert_true(found);
}

/* Run a TEST UNIT READY and expect the UA of a state change, once. */
static void expect_alua_ua(struct fx *f)
{
	struct tcmd t = RUN(f, NULL, 0, 0x00, 0, 0, 0, 0, 0);
	assert_sense(&t, 0x6, 0x2a, 0x06);
}

static void alua_states_refuse_commands(void **state)
{
	struct fx *f = *state;
	uint8_t b[512];
	struct tcmd t;

	assert_int_equal(tnd_scsi_lu_alua_state(f->lu), TND_SCSI_ALUA_ACTIVE_OPTIMIZED);
	assert_int_equal(tnd_scsi_lu_set_alua_state(f->lu, 7), -EINVAL);

	/* Active/non-optimized: slower, but everything runs. */
	assert_int_equal(tnd_scsi_lu_set_alua_state(f->lu, TND_SCSI_ALUA_ACTIVE_NON_OPTIMIZED), 0);
	expect_alua_ua(f);
	t = RUN(f, b, 512, 0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0);
	assert_good(&t);
	t = run_rtpg(f, f->nx, 0, b, 64);
	assert_int_equal(b[4], 0x01);
	assert_int_equal(b[9], 0x02);                 /* altered implicitly */

	/* Standby: reads, writes and TEST UNIT READY are NOT READY, 04/0B;
	 * discovery, mode pages and RTPG run. */
	assert_int_equal(tnd_scsi_lu_set_alua_state(f->lu, TND_SCSI_ALUA_STANDBY), 0);
	expect_alua_ua(f);
	t = RUN(f, NULL, 0, 0x00, 0, 0, 0, 0, 0);
	assert_sense(&t, 0x2, 0x04, 0x0b);
	t = RUN(f, b, 512, 0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0);
	assert_sense(&t, 0x2, 0x04, 0x0b);
	memset(b, 0, 512);
	t = RUN(f, b, 512, 0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0);
	assert_sense(&t, 0x2, 0x04, 0x0b);
	assert_int_equal(f->mv->count[TND_IO_WRITE], 0);
	t = RUN(f, b, 8, 0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0);
	assert_sense(&t, 0x2, 0x04, 0x0b);
	t = RUN(f, b, 96, 0x12, 0, 0, 0, 96, 0);
	assert_good(&t);
	t = RUN(f, b, 64, 0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0);
	assert_good(&t);
	t = RUN(f, b, 255, 0x1a, 0, 0x3f, 0, 255, 0);
	assert_good(&t);
	t = RUN(f, b, 18, 0x03, 0, 0, 0, 18, 0);
	assert_good(&t);
	t = run_rtpg(f, f->nx, 0, b, 64);
	assert_good(&t);
	assert_int_equal(b[4], 0x02);

	/* Unavailable: mode pages no longer, 04/0C; INQUIRY and RTPG yes. */
	assert_int_equal(tnd_scsi_lu_set_alua_state(f->lu, TND_SCSI_ALUA_UNAVAILABLE), 0);
	expect_alua_ua(f);
	t = RUN(f, b, 255, 0x1a, 0, 0x3f, 0, 255, 0);
	assert_sense(&t, 0x2, 0x04, 0x0c);
	t = RUN(f, NULL, 0, 0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0);
	assert_sense(&t, 0x2, 0x04, 0x0c);
	t = RUN(f, b, 96, 0x12, 0, 0, 0, 96, 0);
	assert_good(&t);
	t = run_rtpg(f, f->nx, 1, b, 64);
	assert_good(&t);
	assert_int_equal(b[8], 0x03);

	/* Transitioning: 04/0A. */
	assert_int_equal(tnd_scsi_lu_set_alua_state(f->lu, TND_SCSI_ALUA_TRANSITIONING), 0);
	expect_alua_ua(f);
	t = RUN(f, NULL, 0, 0x00, 0, 0, 0, 0, 0);
	assert_sense(&t, 0x2, 0x04, 0x0a);
	t = run_rtpg(f, f->nx, 0, b, 64);
	assert_good(&t);
	assert_int_equal(b[4], 0x0f);

	/* Back to active/optimized: one UA per nexus, then business. */
	assert_int_equal(tnd_scsi_lu_set_alua_state(f->lu, TND_SCSI_ALUA_ACTIVE_OPTIMIZED), 0);
	expect_alua_ua(f);
	t = RUN(f, NULL, 0, 0x00, 0, 0, 0, 0, 0);
	assert_good(&t);
	/* Setting the same state again is no change and no UA. */
	assert_int_equal(tnd_scsi_lu_set_alua_state(f->lu, TND_SCSI_ALUA_ACTIVE_OPTIMIZED), 0);
	t = RUN(f, NULL, 0, 0x00, 0, 0, 0, 0, 0);
	assert_good(&t);
}

/* ---- EXTENDED COPY ---- */

#define XNBLOCKS 16384u   /* 8 MiB: several copy chunks */

struct xfx {
	struct fx *f;
	struct memvol *mv2;
	struct tnd_scsi_lu *lu2;
};

static void xfx_fill(struct memvol *mv, uint8_t seed)
{
	for (uint64_t i = 0; i < mv->info.num_blocks * mv->info.block_size; i++)
		mv->data[i] = (uint8_t)(seed + i / mv->info.block_size * 7 + i);
}

static int xsetup(void **state)
{
	struct xfx *x = calloc(1, sizeof(*x));
	assert_non_null(x);
	x->f = fx_new(BS, XNBLOCKS);
	x->mv2 = memvol_create(BS, XNBLOCKS);
	assert_non_null(x->mv2);
	struct tnd_scsi_lu_desc d = { .name = "dev1", .vol = &x->mv2->vol };
	assert_int_equal(tnd_scsi_lu_create(&d, &x->lu2), 0);
	xfx_fill(x->f->mv, 1);
	xfx_fill(x->mv2, 100);
	/* The nexus sees dev0 at LUN 0 and dev1 at LUN 1. */
	x->f->view[1] = x->lu2;
	fx_clear_ua(x->f, x->f->nx);
	*state = x;
	return 0;
}

static int xteardown(void **state)
{
	struct xfx *x = *state;
	tnd_scsi_lu_destroy(x->lu2);
	tnd_volume_destroy(&x->mv2->vol);
	teardown((void **)&x->f);
	free(x);
	return 0;
}

/* Parameter list: header, @nc CSCDs of @naa[i], @ns block→block segments. */
struct xseg {
	uint16_t src, dst, nblocks;
	uint64_t src_lba, dst_lba;
};

static uint32_t xlist(uint8_t *p, uint8_t list_id, const uint8_t *const *naa, unsigned nc,
		      const struct xseg *seg, unsigned ns)
{
	memset(p, 0, 16 + nc * 32 + ns * 28);
	p[0] = list_id;
	tnd_put_be16(p + 2, (uint16_t)(nc * 32));
	tnd_put_be32(p + 8, ns * 28);
	uint8_t *d = p + 16;
	for (unsigned i = 0; i < nc; i++, d += 32) {
		d[0] = 0xe4;
		d[4] = 0x01;       /* binary */
		d[5] = 0x03;       /* LU association, NAA */
		d[7] = 16;
		memcpy(d + 8, naa[i], 16);
		tnd_put_be24(d + 29, BS);
	}
	for (unsigned i = 0; i < ns; i++, d += 28) {
		d[0] = 0x02;
		tnd_put_be16(d + 2, 24);
		tnd_put_be16(d + 4, seg[i].src);
		tnd_put_be16(d + 6, seg[i].dst);
		tnd_put_be16(d + 10, seg[i].nblocks);
		tnd_put_be64(d + 12, seg[i].src_lba);
		tnd_put_be64(d + 20, seg[i].dst_lba);
	}
	return 16 + nc * 32 + ns * 28;
}

static struct tcmd run_xcopy_on(struct fx *f, struct tnd_scsi_lu *lu, uint8_t *p, uint32_t len)
{
	uint8_t cdb[16] = { 0x83, 0x00 };
	tnd_put_be32(cdb + 10, len);
	return run_on(f, f->nx, lu, p, len, cdb, 16);
}

static struct tcmd run_rcr(struct fx *f, uint8_t sa, uint8_t list_id, uint8_t *b, uint32_t alloc)
{
	uint8_t cdb[16] = { 0x84, sa, list_id };
	tnd_put_be32(cdb + 10, alloc);
	return run_on(f, f->nx, f->lu, b, alloc, cdb, 16);
}

/* COPY ABORTED with @asc/@ascq; returns the sense for more checks. */
static void assert_copy_aborted(const struct tcmd *t, uint8_t asc, uint8_t ascq)
{
	assert_int_equal(t->c.status, TND_SAM_CHECK_CONDITION);
	if ((t->c.sense[2] & 0xf) != 0xa || t->c.sense[12] != asc || t->c.sense[13] != ascq)
		fail_msg("want a/%02x/%02x got %x/%02x/%02x", asc, ascq, t->c.sense[2] & 0xf,
			 t->c.sense[12], t->c.sense[13]);
}

static void xcopy_copies_between_lus(void **state)
{
	struct xfx *x = *state;
	struct fx *f = x->f;
	const uint8_t *naa[] = { f->lu->naa, x->lu2->naa };
	struct xseg seg[] = {
		{ .src = 0, .dst = 1, .nblocks = 3000, .src_lba = 10, .dst_lba = 5000 },
		{ .src = 1, .dst = 0, .nblocks = 8, .src_lba = 0, .dst_lba = 16000 },
	};
	uint8_t expect1[8 * BS];
	memcpy(expect1, x->mv2->data, sizeof(expect1));
	uint8_t p[256];
	uint32_t len = xlist(p, 7, naa, 2, seg, 2);
	struct tcmd t = run_xcopy_on(f, f->lu, p, len);
	assert_good(&t);
	assert_memory_equal(x->mv2->data + 5000 * BS, f->mv->data + 10 * BS, 3000 * BS);
	assert_memory_equal(f->mv->data + 16000 * BS, expect1, sizeof(expect1));
	/* WCE on: plain writes. */
	assert_int_equal(f->mv->last.flags & TND_IO_FUA, 0);

	/* COPY STATUS of list 7: done, 2 segments, the bytes written. */
	uint8_t b[64];
	t = run_rcr(f, 0x00, 7, b, sizeof(b));
	assert_good(&t);
	assert_int_equal(t.c.in_len, 12);
	assert_int_equal(tnd_get_be32(b), 8);
	assert_int_equal(b[4], 0x00);
	assert_int_equal(tnd_get_be16(b + 5), 2);
	assert_int_equal(b[7], 0x00);
	assert_int_equal(tnd_get_be32(b + 8), 3008 * BS);
	/* No failure details for a copy that did not fail. */
	t = run_rcr(f, 0x04, 7, b, sizeof(b));
	assert_good(&t);
	assert_int_equal(tnd_get_be32(b), 0);
	/* Another list id: nothing held. */
	t = run_rcr(f, 0x00, 8, b, sizeof(b));
	assert_sense(&t, 0x5, 0x24, 0x00);
	assert_field_ptr(&t, true, 2);

	/* Sent to LU 1 (the copy manager need not be a copy target). */
	t = run_on(f, f->nx, x->lu2, NULL, 0, CDB(0x00, 0, 0, 0, 0, 0));
	assert_sense(&t, 0x6, 0x29, 0x00);
	struct xseg s3 = { .src = 0, .dst = 0, .nblocks = 1, .src_lba = 1, .dst_lba = 2 };
	len = xlist(p, 7, naa, 1, &s3, 1);
	t = run_xcopy_on(f, x->lu2, p, len);
	assert_good(&t);
	assert_memory_equal(f->mv->data + 2 * BS, f->mv->data + 1 * BS, BS);

	/* A parameter list of length 0 copies nothing and is no error. */
	t = run_xcopy_on(f, f->lu, p, 0);
	assert_good(&t);
}

static void xcopy_dest_fua_when_wce_off(void **state)
{
	struct xfx *x = *state;
	struct fx *f = x->f;
	x->mv2->info.write_cache = true;
	scsi_lu_set_wce(x->lu2, NULL, false);
	const uint8_t *naa[] = { f->lu->naa, x->lu2->naa };
	struct xseg seg = { .src = 0, .dst = 1, .nblocks = 4, .src_lba = 0, .dst_lba = 0 };
	uint8_t p[256];
	uint32_t len = xlist(p, 1, naa, 2, &seg, 1);
	struct tcmd t = run_xcopy_on(f, f->lu, p, len);
	assert_good(&t);
	assert_int_equal(x->mv2->last.type, TND_IO_WRITE);
	assert_int_equal(x->mv2->last.flags & TND_IO_FUA, TND_IO_FUA);
}

static void xcopy_within_lu_overlapping(void **state)
{
	struct xfx *x = *state;
	struct fx *f = x->f;
	const uint8_t *naa[] = { f->lu->naa };
	size_t sz = (size_t)XNBLOCKS * BS;
	uint8_t *ref = malloc(sz);
	assert_non_null(ref);

	/* Destination above the source, overlapping, over several chunks:
	 * the result is as if the whole source were read first. */
	memcpy(ref, f->mv->data, sz);
	memmove(ref + 1000 * BS, ref + 0, 5000 * BS);
	struct xseg up = { .src = 0, .dst = 0, .nblocks = 5000, .src_lba = 0, .dst_lba = 1000 };
	uint8_t p[256];
	uint32_t len = xlist(p, 1, naa, 1, &up, 1);
	struct tcmd t = run_xcopy_on(f, f->lu, p, len);
	assert_good(&t);
	assert_memory_equal(f->mv->data, ref, sz);

	/* Destination below the source. */
	memmove(ref + 100 * BS, ref + 2200 * BS, 6000 * BS);
	struct xseg down = { .src = 0, .dst = 0, .nblocks = 6000, .src_lba = 2200, .dst_lba = 100 };
	len = xlist(p, 2, naa, 1, &down, 1);
	t = run_xcopy_on(f, f->lu, p, len);
	assert_good(&t);
	assert_memory_equal(f->mv->data, ref, sz);
	free(ref);
}

static void xcopy_bad_descriptors(void **state)
{
	struct xfx *x = *state;
	struct fx *f = x->f;
	const uint8_t *naa[9];
	for (unsigned i = 0; i < 9; i++)
		naa[i] = f->lu->naa;
	struct xseg seg[17];
	for (unsigned i = 0; i < 17; i++)
		seg[i] = (struct xseg){ .nblocks = 1, .src_lba = 0, .dst_lba = 1 };
	uint8_t p[1024];
	struct tcmd t;
	uint32_t len;

	/* Unsupported CSCD type (Fibre Channel N_Port_Name). */
	len = xlist(p, 1, naa, 1, seg, 1);
	p[16] = 0xe0;
	t = run_xcopy_on(f, f->lu, p, len);
	assert_sense(&t, 0x5, 0x26, 0x07);
	assert_field_ptr(&t, false, 16);

	/* Unsupported segment type (stream to stream). */
	len = xlist(p, 1, naa, 1, seg, 1);
	p[48] = 0x03;
	t = run_xcopy_on(f, f->lu, p, len);
	assert_sense(&t, 0x5, 0x26, 0x09);
	assert_field_ptr(&t, false, 48);

	/* A CSCD list length that is not whole descriptors. */
	len = xlist(p, 1, naa, 2, seg, 1);
	tnd_put_be16(p + 2, 40);
	t = run_xcopy_on(f, f->lu, p, len);
	assert_sense(&t, 0x5, 0x26, 0x00);
	assert_field_ptr(&t, false, 2);

	/* Wrong segment descriptor length. */
	len = xlist(p, 1, naa, 1, seg, 1);
	tnd_put_be16(p + 50, 20);
	t = run_xcopy_on(f, f->lu, p, len);
	assert_sense(&t, 0x5, 0x26, 0x00);

	/* Too many CSCDs, too many segments. */
	len = xlist(p, 1, naa, 9, seg, 1);
	t = run_xcopy_on(f, f->lu, p, len);
	assert_sense(&t, 0x5, 0x26, 0x06);
	len = xlist(p, 1, naa, 1, seg, 17);
	t = run_xcopy_on(f, f->lu, p, len);
	assert_sense(&t, 0x5, 0x26, 0x08);

	/* The list says more than the parameter list length holds. */
	len = xlist(p, 1, naa, 1, seg, 1);
	t = run_xcopy_on(f, f->lu, p, len - 1);
	assert_sense(&t, 0x5, 0x1a, 0x00);
	t = run_xcopy_on(f, f->lu, p, 15);
	assert_sense(&t, 0x5, 0x1a, 0x00);
	/* Descriptors beyond MAXIMUM DESCRIPTOR LIST LENGTH (1 KiB). */
	len = xlist(p, 1, naa, 8, seg, 17);
	tnd_put_be32(p + 8, 1024 - 8 * 32 + 28);
	t = run_xcopy_on(f, f->lu, p, len);
	assert_sense(&t, 0x5, 0x1a, 0x00);

	/* Inline data, LIST ID USAGE 01b, list id with usage 11b. */
	len = xlist(p, 1, naa, 1, seg, 1);
	tnd_put_be32(p + 12, 4);
	t = run_xcopy_on(f, f->lu, p, len + 4);
	assert_sense(&t, 0x5, 0x26, 0x00);
	len = xlist(p, 1, naa, 1, seg, 1);
	p[1] = 0x08;
	t = run_xcopy_on(f, f->lu, p, len);
	assert_sense(&t, 0x5, 0x26, 0x00);
	assert_field_ptr(&t, false, 1);
	p[1] = 0x18;
	t = run_xcopy_on(f, f->lu, p, len);
	assert_sense(&t, 0x5, 0x26, 0x00);
	assert_field_ptr(&t, false, 0);
	p[0] = 0;
	t = run_xcopy_on(f, f->lu, p, len);
	assert_good(&t);

	/* A CSCD's block length that is not the LU's. */
	len = xlist(p, 1, naa, 1, seg, 1);
	tnd_put_be24(p + 16 + 29, 4096);
	t = run_xcopy_on(f, f->lu, p, len);
	assert_sense(&t, 0x5, 0x26, 0x00);
	assert_field_ptr(&t, false, 16 + 29);

	/* A non-block peripheral type. */
	len = xlist(p, 1, naa, 1, seg, 1);
	p[17] = 0x01;
	t = run_xcopy_on(f, f->lu, p, len);
	assert_sense(&t, 0x5, 0x26, 0x00);

	/* The LID4 service action is not offered. */
	uint8_t cdb[16] = { 0x83, 0x01 };
	t = run_on(f, f->nx, f->lu, p, 0, cdb, 16);
	assert_sense(&t, 0x5, 0x24, 0x00);
	assert_int_equal(f->mv->count[TND_IO_WRITE], 1); /* only the good one above */
}

/* Nothing of @mv was read or written. */
static void assert_untouched(const struct memvol *mv)
{
	assert_int_equal(mv->count[TND_IO_READ], 0);
	assert_int_equal(mv->count[TND_IO_WRITE], 0);
}

static void xcopy_unknown_naa_refused(void **state)
{
	struct xfx *x = *state;
	struct fx *f = x->f;
	uint8_t bogus[16];
	memcpy(bogus, x->lu2->naa, 16);
	bogus[15] ^= 1;
	const uint8_t *naa[] = { f->lu->naa, bogus };
	struct xseg seg = { .src = 0, .dst = 1, .nblocks = 8, .src_lba = 0, .dst_lba = 0 };
	uint8_t p[256];
	uint32_t len = xlist(p, 1, naa, 2, &seg, 1);
	struct tcmd t = run_xcopy_on(f, f->lu, p, len);
	assert_copy_aborted(&t, 0x08, 0x04);
	assert_untouched(f->mv);
	assert_untouched(x->mv2);

	/* A designator that is not an NAA cannot name a copy target. */
	naa[1] = x->lu2->naa;
	len = xlist(p, 1, naa, 2, &seg, 1);
	p[16 + 32 + 5] = 0x01;  /* T10 vendor id */
	t = run_xcopy_on(f, f->lu, p, len);
	assert_copy_aborted(&t, 0x08, 0x04);

	/* A segment naming a CSCD index past the list. */
	struct xseg bad = { .src = 0, .dst = 2, .nblocks = 8 };
	len = xlist(p, 1, naa, 2, &bad, 1);
	t = run_xcopy_on(f, f->lu, p, len);
	assert_copy_aborted(&t, 0x08, 0x04);
	assert_untouched(f->mv);
	assert_untouched(x->mv2);
}

/* CVE-2020-28374: a copy target outside the nexus's LUN view. */
static void xcopy_lu_outside_view_refused(void **state)
{
	struct xfx *x = *state;
	struct fx *f = x->f;
	uint8_t *before = malloc((size_t)XNBLOCKS * BS);
	assert_non_null(before);
	memcpy(before, x->mv2->data, (size_t)XNBLOCKS * BS);
	/* dev1 exists but is masked from this nexus. */
	f->view[1] = NULL;
	const uint8_t *naa[] = { f->lu->naa, x->lu2->naa };
	uint8_t p[256];

	/* Neither as destination ... */
	struct xseg into = { .src = 0, .dst = 1, .nblocks = 8, .src_lba = 0, .dst_lba = 0 };
	uint32_t len = xlist(p, 1, naa, 2, &into, 1);
	struct tcmd t = run_xcopy_on(f, f->lu, p, len);
	assert_copy_aborted(&t, 0x08, 0x04);
	/* ... nor as source, and the answer is the one for a designator
	 * that names nothing at all. */
	struct xseg from = { .src = 1, .dst = 0, .nblocks = 8, .src_lba = 0, .dst_lba = 0 };
	len = xlist(p, 1, naa, 2, &from, 1);
	t = run_xcopy_on(f, f->lu, p, len);
	assert_copy_aborted(&t, 0x08, 0x04);
	assert_untouched(x->mv2);
	assert_untouched(f->mv);
	assert_memory_equal(x->mv2->data, before, (size_t)XNBLOCKS * BS);

	/* Without a view at all only the command's own LU is reachable. */
	uint8_t cdb[16] = { 0x83, 0x00 };
	len = xlist(p, 1, naa, 2, &into, 1);
	tnd_put_be32(cdb + 10, len);
	struct tcmd u;
	memset(&u, 0, sizeof(u));
	memcpy(u.c.cdb, cdb, 16);
	u.c.cdb_len = 16;
	u.c.lu = f->lu;
	u.c.nexus = f->nx;
	u.c.reactor = f->r;
	u.c.data = p;
	u.c.data_len = len;
	u.c.exp_len = len;
	u.c.dir = TND_SCSI_DIR_WRITE;
	u.c.done = on_done;
	tnd_scsi_exec(&u.c);
	assert_int_equal(u.calls, 1);
	assert_copy_aborted(&u, 0x08, 0x04);
	assert_memory_equal(x->mv2->data, before, (size_t)XNBLOCKS * BS);

	/* Unmasked again, the same list works. */
	f->view[1] = x->lu2;
	t = run_xcopy_on(f, f->lu, p, len);
	assert_good(&t);
	assert_memory_equal(x->mv2->data, f->mv->data, 8 * BS);
	free(before);
}

static void xcopy_target_state_and_protection(void **state)
{
	struct xfx *x = *state;
	struct fx *f = x->f;
	const uint8_t *naa[] = { f->lu->naa, x->lu2->naa };
	struct xseg seg = { .src = 0, .dst = 1, .nblocks = 8, .src_lba = 0, .dst_lba = 0 };
	uint8_t p[256];
	uint32_t len = xlist(p, 1, naa, 2, &seg, 1);

	/* A read-only destination: DATA PROTECT, as a WRITE would get. */
	x->mv2->info.read_only = true;
	struct tcmd t = run_xcopy_on(f, f->lu, p, len);
	assert_sense(&t, 0x7, 0x27, 0x00);
	/* A read-only source is fine. */
	struct xseg back = { .src = 1, .dst = 0, .nblocks = 8, .src_lba = 0, .dst_lba = 100 };
	uint32_t len2 = xlist(p, 2, naa, 2, &back, 1);
	t = run_xcopy_on(f, f->lu, p, len2);
	assert_good(&t);
	x->mv2->info.read_only = false;

	/* A copy target in standby on this node is unreachable. */
	assert_int_equal(tnd_scsi_lu_set_alua_state(x->lu2, TND_SCSI_ALUA_STANDBY), 0);
	len = xlist(p, 1, naa, 2, &seg, 1);
	t = run_xcopy_on(f, f->lu, p, len);
	assert_copy_aborted(&t, 0x08, 0x04);
	assert_int_equal(x->mv2->count[TND_IO_WRITE], 0);
	/* And the copy manager itself in standby refuses the command. */
	assert_int_equal(tnd_scsi_lu_set_alua_state(x->lu2, TND_SCSI_ALUA_ACTIVE_OPTIMIZED), 0);
	assert_int_equal(tnd_scsi_lu_set_alua_state(f->lu, TND_SCSI_ALUA_STANDBY), 0);
	expect_alua_ua(f);
	t = run_xcopy_on(f, f->lu, p, len);
	assert_sense(&t, 0x2, 0x04, 0x0b);
}

static void xcopy_errors_are_copy_aborted(void **state)
{
	struct xfx *x = *state;
	struct fx *f = x->f;
	const uint8_t *naa[] = { f->lu->naa, x->lu2->naa };
	uint8_t p[256], b[256];

	/* The second segment runs past the destination's end. */
	struct xseg seg[] = {
		{ .src = 0, .dst = 1, .nblocks = 4, .src_lba = 0, .dst_lba = 0 },
		{ .src = 0, .dst = 1, .nblocks = 8, .src_lba = 0, .dst_lba = XNBLOCKS - 4 },
	};
	uint32_t len = xlist(p, 3, naa, 2, seg, 2);
	struct tcmd t = run_xcopy_on(f, f->lu, p, len);
	assert_copy_aborted(&t, 0x00, 0x00);
	assert_int_equal(t.c.sense_len, 36);
	assert_int_equal(t.c.sense[7], 28);
	assert_int_equal(t.c.sense[8], 0);            /* no source sense */
	assert_int_equal(t.c.sense[9], 18);           /* destination sense at 18 */
	assert_int_equal(tnd_get_be16(t.c.sense + 10), 1);   /* segment 1 */
	assert_int_equal(t.c.sense[15], 0x80);
	assert_int_equal(tnd_get_be16(t.c.sense + 16), 16 + 64 + 28);
	assert_int_equal(t.c.sense[18 + 2] & 0xf, 0x5);
	assert_int_equal(t.c.sense[18 + 12], 0x21);
	/* The first segment was copied. */
	assert_memory_equal(x->mv2->data, f->mv->data, 4 * BS);

	t = run_rcr(f, 0x00, 3, b, sizeof(b));
	assert_good(&t);
	assert_int_equal(b[4], 0x01);                 /* completed with errors */
	assert_int_equal(tnd_get_be16(b + 5), 1);
	assert_int_equal(tnd_get_be32(b + 8), 4 * BS);
	t = run_rcr(f, 0x04, 3, b, sizeof(b));
	assert_good(&t);
	assert_int_equal(tnd_get_be32(b), 56 + 36);
	assert_int_equal(b[56], TND_SAM_CHECK_CONDITION);
	assert_int_equal(tnd_get_be16(b + 58), 36);
	assert_int_equal(b[60 + 2] & 0xf, 0xa);
	/* Delivered whole: discarded. */
	t = run_rcr(f, 0x04, 3, b, sizeof(b));
	assert_good(&t);
	assert_int_equal(tnd_get_be32(b), 0);

	/* A read error of the source: its sense comes as the source's. */
	f->mv->fail_type = TND_IO_READ;
	f->mv->fail_err = -EIO;
	len = xlist(p, 4, naa, 2, seg, 1);
	t = run_xcopy_on(f, f->lu, p, len);
	assert_copy_aborted(&t, 0x00, 0x00);
	assert_int_equal(t.c.sense[8], 18);
	assert_int_equal(t.c.sense[9], 0);
	assert_int_equal(t.c.sense[18 + 2] & 0xf, 0x3);
	assert_int_equal(t.c.sense[18 + 12], 0x11);

	/* A write error of the destination. */
	x->mv2->fail_type = TND_IO_WRITE;
	x->mv2->fail_err = -ENOSPC;
	t = run_xcopy_on(f, f->lu, p, len);
	assert_copy_aborted(&t, 0x00, 0x00);
	assert_int_equal(t.c.sense[9], 18);
	assert_int_equal(t.c.sense[18 + 2] & 0xf, 0x7);
	assert_int_equal(t.c.sense[18 + 12], 0x27);
	assert_int_equal(t.c.sense[18 + 13], 0x07);
}

static bool always_cancelled(const struct tnd_scsi_cmd *cmd)
{
	(void)cmd;
	return true;
}

/* The transport drops the answer: the copy stops and frees itself;
 * while it runs, the transport knows which LUs it holds. */
static void xcopy_cancelled_and_uses_lu(void **state)
{
	struct xfx *x = *state;
	struct fx *f = x->f;
	const uint8_t *naa[] = { f->lu->naa, x->lu2->naa };
	/* 8 MiB in 1 MiB chunks: still running after the few polls below. */
	struct xseg seg = { .src = 0, .dst = 1, .nblocks = 16000, .src_lba = 0, .dst_lba = 0 };
	uint8_t p[256];
	uint32_t len = xlist(p, 1, naa, 2, &seg, 1);
	uint8_t cdb[16] = { 0x83, 0x00 };
	tnd_put_be32(cdb + 10, len);

	struct tcmd t;
	memset(&t, 0, sizeof(t));
	memcpy(t.c.cdb, cdb, 16);
	t.c.cdb_len = 16;
	t.c.lu = f->lu;
	t.c.nexus = f->nx;
	t.c.reactor = f->r;
	t.c.data = p;
	t.c.data_len = len;
	t.c.exp_len = len;
	t.c.dir = TND_SCSI_DIR_WRITE;
	t.c.luns = f->luns;
	t.c.view_lus = f->view;
	t.c.nr_luns = 3;
	t.c.done = on_done;
	tnd_scsi_exec(&t.c);
	assert_int_equal(t.calls, 0);
	assert_true(tnd_scsi_cmd_uses_lu(&t.c, f->lu));
	assert_true(tnd_scsi_cmd_uses_lu(&t.c, x->lu2));
	/* While it runs: COPY STATUS says so, and its list id is taken. */
	uint8_t b[64];
	struct tcmd r = run_rcr(f, 0x00, 1, b, sizeof(b));
	assert_good(&r);
	assert_int_equal(b[4], 0x02);
	r = run_xcopy_on(f, f->lu, p, len);
	assert_sense(&r, 0x5, 0x00, 0x16);
	t.c.cancelled = always_cancelled;
	for (int i = 0; i < 1000 && t.calls == 0; i++)
		tnd_reactor_poll(f->r, 10);
	assert_int_equal(t.calls, 1);
	assert_int_equal(t.c.status, TND_SAM_TASK_ABORTED);
	assert_null(t.c.xcopy);
	assert_false(tnd_scsi_cmd_uses_lu(&t.c, x->lu2));
	/* Stopped early: not everything was written. */
	assert_true(x->mv2->count[TND_IO_WRITE] < 8);
}

/* Between LUs of different block sizes; DC says whose blocks count. */
static void xcopy_mixed_block_sizes(void **state)
{
	struct xfx *x = *state;
	struct fx *f = x->f;
	struct memvol *mv4 = memvol_create(4096, 2048);
	assert_non_null(mv4);
	struct tnd_scsi_lu *lu4;
	struct tnd_scsi_lu_desc d = { .name = "dev4k", .vol = &mv4->vol };
	assert_int_equal(tnd_scsi_lu_create(&d, &lu4), 0);
	f->view[2] = lu4;
	const uint8_t *naa[] = { f->lu->naa, lu4->naa };
	uint8_t p[256];
	/* 24 source blocks of 512 = 3 blocks of 4 KiB, to 4 KiB block 5. */
	struct xseg seg = { .src = 0, .dst = 1, .nblocks = 24, .src_lba = 7, .dst_lba = 5 };
	uint32_t len = xlist(p, 1, naa, 2, &seg, 1);
	tnd_put_be24(p + 16 + 32 + 29, 4096);
	struct tcmd t = run_xcopy_on(f, f->lu, p, len);
	assert_good(&t);
	assert_memory_equal(mv4->data + 5 * 4096, f->mv->data + 7 * BS, 3 * 4096);
	/* DC: the count is in destination (4 KiB) blocks: 2 of them back. */
	struct xseg back = { .src = 1, .dst = 0, .nblocks = 2, .src_lba = 5, .dst_lba = 3000 };
	len = xlist(p, 2, naa, 2, &back, 1);
	tnd_put_be24(p + 16 + 32 + 29, 4096);
	p[16 + 64 + 1] = 0x02;
	t = run_xcopy_on(f, f->lu, p, len);
	assert_sense(&t, 0x5, 0x26, 0x00);   /* 2 x 512 bytes: not whole 4 KiB blocks */
	p[16 + 64 + 1] = 0x00;
	t = run_xcopy_on(f, f->lu, p, len);
	assert_good(&t);
	assert_memory_equal(f->mv->data + 3000 * BS, mv4->data + 5 * 4096, 2 * 4096);
	f->view[2] = NULL;
	tnd_scsi_lu_destroy(lu4);
	tnd_volume_destroy(&mv4->vol);
}

static void rcr_operating_parameters(void **state)
{
	struct fx *f = *state;
	uint8_t b[128];
	memset(b, 0xee, sizeof(b));
	struct tcmd t = run_rcr(f, 0x03, 0, b, sizeof(b));
	assert_good(&t);
	assert_int_equal(t.c.in_len, 46);
	assert_int_equal(tnd_get_be32(b), 42);
	assert_int_equal(b[4] & 0x01, 0x01);          /* SNLID */
	assert_int_equal(tnd_get_be16(b + 8), 8);     /* CSCD descriptors */
	assert_int_equal(tnd_get_be16(b + 10), 16);   /* segment descriptors */
	assert_int_equal(tnd_get_be32(b + 12), 1024); /* descriptor list length */
	assert_int_equal(tnd_get_be32(b + 16), 16u << 20);
	assert_int_equal(tnd_get_be32(b + 20), 0);    /* no inline data */
	assert_int_equal(tnd_get_be32(b + 24), 0);    /* no held data */
	assert_int_equal(tnd_get_be16(b + 34), 8);
	assert_int_equal(b[36], 8);
	assert_int_equal(b[37], 9);                   /* 512-byte granularity */
	assert_int_equal(b[43], 2);
	assert_int_equal(b[44], 0x02);
	assert_int_equal(b[45], 0xe4);
	/* No copy ran on this nexus: no status for any list id. */
	t = run_rcr(f, 0x00, 1, b, sizeof(b));
	assert_sense(&t, 0x5, 0x24, 0x00);
	t = run_rcr(f, 0x04, 1, b, sizeof(b));
	assert_sense(&t, 0x5, 0x24, 0x00);
	/* Both opcodes show up in REPORT SUPPORTED OPERATION CODES. */
	uint8_t r[32];
	t = RUN(f, r, sizeof(r), 0xa3, 0x0c, 0x02, 0x83, 0x00, 0x00, 0, 0, 0, 32, 0, 0);
	assert_good(&t);
	assert_int_equal(r[1] & 0x07, 0x03);
	t = RUN(f, r, sizeof(r), 0xa3, 0x0c, 0x02, 0xa3, 0x00, 0x0a, 0, 0, 0, 32, 0, 0);
	assert_good(&t);
	assert_int_equal(r[1] & 0x07, 0x03);
	assert_int_equal(r[5], 0xea);
}

/* The Third-party Copy VPD page says what the parser enforces. */
static void vpd_third_party_copy(void **state)
{
	struct fx *f = *state;
	uint8_t b[255];
	struct tcmd t = RUN(f, b, 255, 0x12, 1, 0x8f, 0, 255, 0);
	assert_good(&t);
	assert_int_equal(b[1], 0x8f);
	unsigned n = tnd_get_be16(b + 2);
	assert_int_equal(t.c.in_len, 4 + n);
	unsigned seen = 0;
	for (unsigned off = 4; off < 4 + n;) {
		const uint8_t *d = b + off;
		unsigned type = tnd_get_be16(d), len = tnd_get_be16(d + 2);
		assert_int_equal(len % 4, 0);
		assert_true(off + 4 + len <= 4 + n);
		switch (type) {
		case 0x0001: {
			/* 83h/00h, and 84h/00h, 03h, 04h. */
			static const uint8_t cmds[] = { 0x83, 1, 0x00, 0x84, 3, 0x00, 0x03, 0x04 };
			assert_int_equal(d[4], sizeof(cmds));
			assert_memory_equal(d + 5, cmds, sizeof(cmds));
			seen |= 1;
			break;
		}
		case 0x0004:
			assert_int_equal(len, 0x1c);
			assert_int_equal(tnd_get_be16(d + 8), 8);
			assert_int_equal(tnd_get_be16(d + 10), 16);
			assert_int_equal(tnd_get_be32(d + 12), 1024);
			assert_int_equal(tnd_get_be32(d + 16), 0);
			seen |= 2;
			break;
		case 0x0008:
			assert_int_equal(d[4], 2);
			assert_int_equal(d[5], 0x02);
			assert_int_equal(d[6], 0xe4);
			seen |= 4;
			break;
		case 0x000c:
			assert_int_equal(tnd_get_be16(d + 4), 0);
			seen |= 8;
			break;
		case 0x8001:
			assert_int_equal(len, 0x20);
			assert_int_equal(tnd_get_be32(d + 4), 8);
			assert_int_equal(tnd_get_be32(d + 12), 16u << 20);
			assert_int_equal(d[16], 9);
			seen |= 16;
			break;
		default:
			fail_msg("unexpected descriptor %04x", type);
		}
		off += 4 + len;
	}
	assert_int_equal(seen, 31);
}

#define TX(fn) cmocka_unit_test_setup_teardown(fn, xsetup, xteardown)

/* ---- reservations ---- */

/* The address of a command result, for the assert helpers. */
#define PTR(expr) (&(struct tcmd[1]){ [0] = (expr) }[0])
/* The assert helpers with the caller's line in the message. */
#define GOOD(expr) do {								\
		struct tcmd t_ = (expr);					\
		if (t_.c.status != TND_SAM_GOOD)				\
			fail_msg("line %d: status %02x sense %x/%02x/%02x", __LINE__, \
				 t_.c.status, t_.c.sense[2] & 0xf, t_.c.sense[12],	\
				 t_.c.sense[13]);				\
	} while (0)
#define CONFLICT(expr) do {							\
		struct tcmd t_ = (expr);					\
		if (t_.c.status != TND_SAM_RESERVATION_CONFLICT || t_.c.sense_len) \
			fail_msg("line %d: want conflict, status %02x sense %x/%02x/%02x", \
				 __LINE__, t_.c.status, t_.c.sense[2] & 0xf,	\
				 t_.c.sense[12], t_.c.sense[13]);		\
	} while (0)
#define SENSE(expr, key, asc, ascq) do {					\
		struct tcmd t_ = (expr);					\
		if (t_.c.status != TND_SAM_CHECK_CONDITION || (t_.c.sense[2] & 0xf) != (key) || \
		    t_.c.sense[12] != (asc) || t_.c.sense[13] != (ascq))	\
			fail_msg("line %d: want %x/%02x/%02x, status %02x sense %x/%02x/%02x", \
				 __LINE__, key, asc, ascq, t_.c.status,		\
				 t_.c.sense[2] & 0xf, t_.c.sense[12], t_.c.sense[13]); \
	} while (0)


enum { PR_WE = 1, PR_EA = 3, PR_WE_RO = 5, PR_EA_RO = 6, PR_WE_AR = 7, PR_EA_AR = 8 };

static struct tnd_scsi_nexus *nexus_new(struct fx *f, const char *name)
{
	struct tnd_scsi_nexus *nx;
	assert_int_equal(tnd_scsi_nexus_create(name, &port, &nx), 0);
	fx_clear_ua(f, nx);
	return nx;
}

/* PERSISTENT RESERVE OUT with the basic 24-byte parameter list. */
static struct tcmd prout_on(struct fx *f, struct tnd_scsi_lu *lu, struct tnd_scsi_nexus *nx,
			    uint8_t sa, uint8_t type, uint64_t rk, uint64_t sark, uint8_t b20)
{
	uint8_t p[24] = { 0 };
	tnd_put_be64(p, rk);
	tnd_put_be64(p + 8, sark);
	p[20] = b20;
	uint8_t c[16] = { 0x5f, sa, type };
	tnd_put_be32(c + 5, sizeof(p));
	return run_on(f, nx, lu, p, sizeof(p), c, 16);
}

static struct tcmd prout(struct fx *f, struct tnd_scsi_nexus *nx, uint8_t sa, uint8_t type,
			 uint64_t rk, uint64_t sark)
{
	return prout_on(f, f->lu, nx, sa, type, rk, sark, 0);
}

static struct tcmd prin_on(struct fx *f, struct tnd_scsi_lu *lu, struct tnd_scsi_nexus *nx,
			   uint8_t sa, uint8_t *buf, uint16_t len)
{
	uint8_t c[16] = { 0x5e, sa };
	tnd_put_be16(c + 7, len);
	return run_on(f, nx, lu, buf, len, c, 16);
}

static void assert_conflict(const struct tcmd *t)
{
	if (t->c.status != TND_SAM_RESERVATION_CONFLICT)
		fail_msg("want RESERVATION CONFLICT, got status %02x sense %x/%02x/%02x",
			 t->c.status, t->c.sense[2] & 0xf, t->c.sense[12], t->c.sense[13]);
	assert_int_equal(t->c.sense_len, 0);
}

/* 1: GOOD, 0: RESERVATION CONFLICT, anything else fails the test. */
static int allowed(const struct tcmd *t)
{
	if (t->c.status == TND_SAM_GOOD)
		return 1;
	assert_conflict(t);
	return 0;
}

static int can_read(struct fx *f, struct tnd_scsi_nexus *nx)
{
	uint8_t b[BS];
	return allowed(PTR(run_on(f, nx, f->lu, b, BS, CDB(0x28, 0, 0, 0, 0, 5, 0, 0, 1, 0))));
}

static int can_write(struct fx *f, struct tnd_scsi_nexus *nx)
{
	uint8_t b[BS] = { 1 };
	return allowed(PTR(run_on(f, nx, f->lu, b, BS, CDB(0x2a, 0, 0, 0, 0, 5, 0, 0, 1, 0))));
}

static int can_cmd(struct fx *f, struct tnd_scsi_nexus *nx, const uint8_t *cdb, unsigned n)
{
	uint8_t b[256];
	return allowed(PTR(run_on(f, nx, f->lu, b, sizeof(b), cdb, n)));
}

static void clear_ua_on(struct fx *f, struct tnd_scsi_lu *lu, struct tnd_scsi_nexus *nx)
{
	for (int i = 0; i < 4; i++) {
		struct tcmd t = run_on(f, nx, lu, NULL, 0, CDB(0x00, 0, 0, 0, 0, 0));
		if (t.c.status == TND_SAM_GOOD)
			return;
	}
	fail_msg("unit attentions do not clear");
}

static void read_keys(struct fx *f, struct tnd_scsi_nexus *nx, uint32_t *gen, uint64_t *keys,
		      unsigned *n)
{
	uint8_t b[256];
	struct tcmd t = prin_on(f, f->lu, nx, 0, b, sizeof(b));
	assert_good(&t);
	*gen = tnd_get_be32(b);
	uint32_t len = tnd_get_be32(b + 4);
	assert_int_equal(len % 8, 0);
	*n = len / 8;
	assert_int_equal(t.c.in_len, 8 + len);
	for (unsigned i = 0; i < *n; i++)
		keys[i] = tnd_get_be64(b + 8 + 8 * i);
}

/* READ RESERVATION: false when none, else its key and type. */
static bool read_reservation(struct fx *f, struct tnd_scsi_nexus *nx, uint64_t *key,
			     uint8_t *type)
{
	uint8_t b[64];
	struct tcmd t = prin_on(f, f->lu, nx, 1, b, sizeof(b));
	assert_good(&t);
	uint32_t len = tnd_get_be32(b + 4);
	if (len == 0) {
		assert_int_equal(t.c.in_len, 8);
		return false;
	}
	assert_int_equal(len, 16);
	*key = tnd_get_be64(b + 8);
	*type = b[8 + 13] & 0x0f;
	assert_int_equal(b[8 + 13] >> 4, 0);    /* LU scope */
	return true;
}

/* A copy reads and writes for its initiator: reservations on the copy
 * targets that would refuse its READ or WRITE refuse the copy. */
static void xcopy_respects_reservations(void **state)
{
	struct xfx *x = *state;
	struct fx *f = x->f;
	const uint8_t *naa[] = { f->lu->naa, x->lu2->naa };
	struct xseg to2 = { .src = 0, .dst = 1, .nblocks = 4, .src_lba = 0, .dst_lba = 100 };
	struct xseg from2 = { .src = 1, .dst = 0, .nblocks = 4, .src_lba = 0, .dst_lba = 100 };
	uint8_t p[256];
	memset(f->mv->data, 0x5a, 4 * BS);
	memset(x->mv2->data, 0xa5, 4 * BS);
	uint8_t before[4 * BS];
	memcpy(before, x->mv2->data + 100 * BS, sizeof(before));

	struct tnd_scsi_nexus *other = nexus_new(f, "iqn.2026-01.test:other,i,0x1");
	clear_ua_on(f, x->lu2, other);
	GOOD((prout_on(f, x->lu2, other, 0x00, 0, 0, 0xabc, 0)));
	GOOD((prout_on(f, x->lu2, other, 0x01, PR_WE, 0xabc, 0, 0)));
	/* Write Exclusive held by another nexus: no writing LU 2, reading is fine. */
	uint32_t len = xlist(p, 1, naa, 2, &to2, 1);
	struct tcmd t = run_xcopy_on(f, f->lu, p, len);
	assert_conflict(&t);
	assert_memory_equal(x->mv2->data + 100 * BS, before, sizeof(before));
	len = xlist(p, 2, naa, 2, &from2, 1);
	t = run_xcopy_on(f, f->lu, p, len);
	assert_good(&t);
	assert_memory_equal(f->mv->data + 100 * BS, x->mv2->data, 4 * BS);
	/* Exclusive Access: not even reading it. */
	GOOD((prout_on(f, x->lu2, other, 0x02, PR_WE, 0xabc, 0, 0)));
	GOOD((prout_on(f, x->lu2, other, 0x01, PR_EA, 0xabc, 0, 0)));
	len = xlist(p, 3, naa, 2, &from2, 1);
	t = run_xcopy_on(f, f->lu, p, len);
	assert_conflict(&t);
	/* Released: the copy goes through. */
	GOOD((prout_on(f, x->lu2, other, 0x02, PR_EA, 0xabc, 0, 0)));
	len = xlist(p, 4, naa, 2, &to2, 1);
	t = run_xcopy_on(f, f->lu, p, len);
	assert_good(&t);
	assert_memory_equal(x->mv2->data + 100 * BS, f->mv->data, 4 * BS);
	tnd_scsi_nexus_destroy(other);
}

static void pr_register_and_read_keys(void **state)
{
	struct fx *f = *state;
	struct tnd_scsi_nexus *b = nexus_new(f, "iqn.x:b,i,0x2");
	uint32_t gen;
	uint64_t keys[8];
	unsigned n;

	read_keys(f, f->nx, &gen, keys, &n);
	assert_int_equal(gen, 0);
	assert_int_equal(n, 0);
	/* Unregistered with a nonzero RESERVATION KEY: conflict. */
	CONFLICT((prout(f, f->nx, 0, 0, 5, 0xa1)));
	/* SARK 0 from an unregistered nexus: GOOD, nothing registered. */
	GOOD((prout(f, f->nx, 0, 0, 0, 0)));
	GOOD((prout(f, f->nx, 0, 0, 0, 0xa1)));
	GOOD((prout(f, b, 6, 0, 0, 0xb1)));
	read_keys(f, f->nx, &gen, keys, &n);
	assert_int_equal(gen, 2);
	assert_int_equal(n, 2);
	assert_true(keys[0] == 0xa1 && keys[1] == 0xb1);
	/* REGISTER with the wrong key conflicts; the right one re-keys. */
	CONFLICT((prout(f, f->nx, 0, 0, 0xa2, 0xa3)));
	GOOD((prout(f, f->nx, 0, 0, 0xa1, 0xa2)));
	/* REGISTER AND IGNORE EXISTING KEY ignores the key. */
	GOOD((prout(f, b, 6, 0, 0x999, 0xb2)));
	read_keys(f, b, &gen, keys, &n);
	assert_int_equal(gen, 4);
	assert_true(n == 2 && keys[0] == 0xa2 && keys[1] == 0xb2);
	/* Unregister. */
	GOOD((prout(f, f->nx, 0, 0, 0xa2, 0)));
	read_keys(f, b, &gen, keys, &n);
	assert_int_equal(gen, 5);
	assert_true(n == 1 && keys[0] == 0xb2);
	/* Registrations and reservations are no unit attention for anyone. */
	GOOD((RUN(f, NULL, 0, 0x00, 0, 0, 0, 0, 0)));
	tnd_scsi_nexus_destroy(b);
}

/* SPC-4 5.13.1 / SBC-3 4.17: who may read and write under each type. */
static void pr_conflict_matrix(void **state)
{
	struct fx *f = *state;
	static const struct {
		uint8_t type;
		int reg_read, reg_write, unreg_read, unreg_write;
	} m[] = {
		{ PR_WE, 1, 0, 1, 0 },    { PR_EA, 0, 0, 0, 0 },    { PR_WE_RO, 1, 1, 1, 0 },
		{ PR_EA_RO, 1, 1, 0, 0 }, { PR_WE_AR, 1, 1, 1, 0 }, { PR_EA_AR, 1, 1, 0, 0 },
	};
	struct tnd_scsi_nexus *reg = nexus_new(f, "iqn.x:reg,i,0x2");
	struct tnd_scsi_nexus *unreg = nexus_new(f, "iqn.x:unreg,i,0x3");
	for (unsigned i = 0; i < TND_ARRAY_SIZE(m); i++) {
		GOOD((prout(f, f->nx, 6, 0, 0, 0x10)));
		GOOD((prout(f, reg, 6, 0, 0, 0x20)));
		GOOD((prout(f, f->nx, 1, m[i].type, 0x10, 0)));
		/* The same reservation again is GOOD; another type conflicts,
		 * and so does any RESERVE by a non-holder. */
		GOOD((prout(f, f->nx, 1, m[i].type, 0x10, 0)));
		CONFLICT((prout(f, f->nx, 1, m[i].type == 1 ? 3 : 1, 0x10, 0)));
		if (m[i].type != PR_WE_AR && m[i].type != PR_EA_AR)
			CONFLICT((prout(f, reg, 1, m[i].type, 0x20, 0)));

		assert_int_equal(can_read(f, f->nx), 1);
		assert_int_equal(can_write(f, f->nx), 1);
		assert_int_equal(can_read(f, reg), m[i].reg_read);
		assert_int_equal(can_write(f, reg), m[i].reg_write);
		assert_int_equal(can_read(f, unreg), m[i].unreg_read);
		assert_int_equal(can_write(f, unreg), m[i].unreg_write);
		/* Always allowed: TEST UNIT READY, INQUIRY, READ CAPACITY,
		 * REPORT LUNS, PERSISTENT RESERVE IN. */
		assert_int_equal(can_cmd(f, unreg, CDB(0x00, 0, 0, 0, 0, 0)), 1);
		assert_int_equal(can_cmd(f, unreg, CDB(0x12, 0, 0, 0, 96, 0)), 1);
		assert_int_equal(can_cmd(f, unreg, CDB(0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0)), 1);
		assert_int_equal(can_cmd(f, unreg, CDB(0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0)), 1);
		assert_int_equal(can_cmd(f, unreg, CDB(0x5e, 0, 0, 0, 0, 0, 0, 0, 64, 0)), 1);
		/* MODE SENSE and SYNCHRONIZE CACHE go as writes do. */
		assert_int_equal(can_cmd(f, unreg, CDB(0x1a, 0, 0x3f, 0, 255, 0)), m[i].unreg_write);
		assert_int_equal(can_cmd(f, reg, CDB(0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0)),
				 m[i].reg_write);
		/* START STOP UNIT: START=1 passes, a stop does not. */
		assert_int_equal(can_cmd(f, unreg, CDB(0x1b, 0, 0, 0, 0x01, 0)), 1);
		assert_int_equal(can_cmd(f, unreg, CDB(0x1b, 0, 0, 0, 0x00, 0)), m[i].unreg_write);

		GOOD((prout(f, f->nx, 3, 0, 0x10, 0)));   /* CLEAR */
		/* The registrant that was cleared away hears of it, the
		 * nexus that cleared does not. */
		SENSE((run_on(f, reg, f->lu, NULL, 0, CDB(0x00, 0, 0, 0, 0, 0))), 0x6, 0x2a, 0x03);
		GOOD((RUN(f, NULL, 0, 0, 0, 0, 0, 0, 0)));
		assert_int_equal(can_write(f, reg), 1);
		assert_int_equal(can_write(f, unreg), 1);
	}
	tnd_scsi_nexus_destroy(reg);
	tnd_scsi_nexus_destroy(unreg);
}

static void pr_read_full_status(void **state)
{
	struct fx *f = *state;
	struct tnd_scsi_nexus *b = nexus_new(f, "iqn.2026-01.test:bee,i,0x400001370000");
	GOOD((prout(f, f->nx, 0, 0, 0, 0x1111)));
	/* ALL_TG_PT=1 registration for b. */
	GOOD((prout_on(f, f->lu, b, 0, 0, 0, 0x2222, 0x04)));
	GOOD((prout(f, f->nx, 1, PR_EA_RO, 0x1111, 0)));

	uint64_t key;
	uint8_t type;
	assert_true(read_reservation(f, b, &key, &type));
	assert_true(key == 0x1111 && type == PR_EA_RO);

	uint8_t buf[512];
	struct tcmd t = prin_on(f, f->lu, b, 3, buf, sizeof(buf));
	assert_good(&t);
	assert_int_equal(tnd_get_be32(buf), 2);           /* PRgeneration */
	uint32_t len = tnd_get_be32(buf + 4);
	assert_int_equal(t.c.in_len, 8 + len);
	const uint8_t *d = buf + 8;
	/* First: ours, the holder, on relative port 1. */
	assert_true(tnd_get_be64(d) == 0x1111);
	assert_int_equal(d[12], 0x01);                     /* R_HOLDER */
	assert_int_equal(d[13], PR_EA_RO);
	assert_int_equal(tnd_get_be16(d + 18), 1);
	uint32_t tl = tnd_get_be32(d + 20);
	assert_int_equal(tl % 4, 0);
	assert_true(tl >= 24);
	assert_int_equal(d[24], 0x45);                     /* format 01b, iSCSI */
	assert_int_equal(tnd_get_be16(d + 26), tl - 4);
	assert_string_equal((const char *)d + 28, "iqn.2026-01.test:host,i,0x1");
	d += 24 + tl;
	/* Second: b, all target ports, not a holder. */
	assert_true(tnd_get_be64(d) == 0x2222);
	assert_int_equal(d[12], 0x02);                     /* ALL_TG_PT */
	assert_int_equal(d[13], 0);
	tl = tnd_get_be32(d + 20);
	assert_string_equal((const char *)d + 28, "iqn.2026-01.test:bee,i,0x400001370000");
	assert_int_equal(d + 24 + tl - buf, 8 + len);
	/* Truncated to the allocation length, with the full length kept. */
	t = prin_on(f, f->lu, b, 3, buf, 10);
	assert_good(&t);
	assert_int_equal(t.c.in_len, 10);
	assert_int_equal(tnd_get_be32(buf + 4), len);

	/* All-registrants reservations report key 0 and every registrant
	 * as a holder. */
	GOOD((prout(f, f->nx, 2, PR_EA_RO, 0x1111, 0)));
	SENSE((run_on(f, b, f->lu, NULL, 0, CDB(0, 0, 0, 0, 0, 0))), 0x6, 0x2a, 0x04);
	GOOD((prout(f, b, 1, PR_WE_AR, 0x2222, 0)));
	assert_true(read_reservation(f, f->nx, &key, &type));
	assert_true(key == 0 && type == PR_WE_AR);
	t = prin_on(f, f->lu, b, 3, buf, sizeof(buf));
	assert_int_equal(buf[8 + 12], 0x01);
	tnd_scsi_nexus_destroy(b);
}

static void pr_report_capabilities(void **state)
{
	struct fx *f = *state;
	uint8_t b[8];
	struct tcmd t = prin_on(f, f->lu, f->nx, 2, b, sizeof(b));
	assert_good(&t);
	assert_int_equal(tnd_get_be16(b), 8);
	assert_int_equal(b[2] & 0x01, 0);                  /* PTPL_C: no state dir */
	assert_true(b[2] & 0x04);                          /* ATP_C */
	assert_int_equal(b[2] & 0x08, 0);                  /* SIP_C */
	assert_true(b[3] & 0x80);                          /* TMV */
	assert_int_equal(b[4], 0xea);
	assert_int_equal(b[5], 0x01);
	/* Reserved service actions: INVALID FIELD IN CDB at byte 1. */
	t = prin_on(f, f->lu, f->nx, 4, b, sizeof(b));
	assert_sense(&t, 0x5, 0x24, 0x00);
	assert_field_ptr(&t, true, 1);
	t = prout(f, f->nx, 8, 0, 0, 0);
	assert_sense(&t, 0x5, 0x24, 0x00);
}

static void pr_release_and_unit_attentions(void **state)
{
	struct fx *f = *state;
	struct tnd_scsi_nexus *b = nexus_new(f, "iqn.x:b,i,0x2");
	struct tnd_scsi_nexus *c = nexus_new(f, "iqn.x:c,i,0x3");
	GOOD((prout(f, f->nx, 6, 0, 0, 0xa)));
	GOOD((prout(f, b, 6, 0, 0, 0xb)));
	GOOD((prout(f, f->nx, 1, PR_WE_RO, 0xa, 0)));
	/* RELEASE by a non-holder does nothing; with the wrong type by the
	 * holder is INVALID RELEASE OF PERSISTENT RESERVATION; by an
	 * unregistered nexus a conflict. */
	GOOD((prout(f, b, 2, PR_WE_RO, 0xb, 0)));
	SENSE((prout(f, f->nx, 2, PR_WE, 0xa, 0)), 0x5, 0x26, 0x04);
	CONFLICT((prout(f, c, 2, PR_WE_RO, 0, 0)));
	uint64_t key;
	uint8_t type;
	assert_true(read_reservation(f, c, &key, &type));
	/* A real release: the other registrant gets RESERVATIONS RELEASED,
	 * neither the releaser nor the unregistered nexus does. */
	GOOD((prout(f, f->nx, 2, PR_WE_RO, 0xa, 0)));
	assert_false(read_reservation(f, c, &key, &type));
	SENSE((run_on(f, b, f->lu, NULL, 0, CDB(0, 0, 0, 0, 0, 0))), 0x6,
		     0x2a, 0x04);
	GOOD((run_on(f, b, f->lu, NULL, 0, CDB(0, 0, 0, 0, 0, 0))));
	GOOD((RUN(f, NULL, 0, 0, 0, 0, 0, 0, 0)));
	GOOD((run_on(f, c, f->lu, NULL, 0, CDB(0, 0, 0, 0, 0, 0))));

	/* The holder of a registrants-only reservation unregistering ends it,
	 * with RESERVATIONS RELEASED for the others. */
	GOOD((prout(f, f->nx, 1, PR_EA_RO, 0xa, 0)));
	GOOD((prout(f, f->nx, 0, 0, 0xa, 0)));
	assert_false(read_reservation(f, c, &key, &type));
	SENSE((run_on(f, b, f->lu, NULL, 0, CDB(0, 0, 0, 0, 0, 0))), 0x6,
		     0x2a, 0x04);
	/* An all-registrants reservation outlives its creator while anyone
	 * is registered. */
	GOOD((prout(f, f->nx, 6, 0, 0, 0xa)));
	GOOD((prout(f, f->nx, 1, PR_EA_AR, 0xa, 0)));
	GOOD((prout(f, f->nx, 0, 0, 0xa, 0)));
	assert_true(read_reservation(f, c, &key, &type));
	assert_true(key == 0 && type == PR_EA_AR);
	assert_int_equal(can_read(f, c), 0);
	GOOD((prout(f, b, 0, 0, 0xb, 0)));
	assert_false(read_reservation(f, c, &key, &type));
	assert_int_equal(can_read(f, c), 1);
	tnd_scsi_nexus_destroy(b);
	tnd_scsi_nexus_destroy(c);
}

static void pr_preempt(void **state)
{
	struct fx *f = *state;
	struct tnd_scsi_nexus *b = nexus_new(f, "iqn.x:b,i,0x2");
	struct tnd_scsi_nexus *c = nexus_new(f, "iqn.x:c,i,0x3");
	uint32_t gen, gen0;
	uint64_t keys[8], key;
	unsigned n;
	uint8_t type;
	GOOD((prout(f, f->nx, 6, 0, 0, 0xa)));
	GOOD((prout(f, b, 6, 0, 0, 0xb)));
	GOOD((prout(f, c, 6, 0, 0, 0xc)));
	GOOD((prout(f, f->nx, 1, PR_WE, 0xa, 0)));
	read_keys(f, f->nx, &gen0, keys, &n);

	/* Bad preempts: SARK 0 without an all-registrants reservation,
	 * a key nobody has, and a wrong own key. */
	SENSE((prout(f, b, 4, PR_EA, 0xb, 0)), 0x5, 0x26, 0x00);
	CONFLICT((prout(f, b, 4, PR_EA, 0xb, 0x77)));
	CONFLICT((prout(f, b, 4, PR_EA, 0xbad, 0xa)));

	/* b takes the reservation over, as Exclusive Access. */
	GOOD((prout(f, b, 4, PR_EA, 0xb, 0xa)));
	read_keys(f, b, &gen, keys, &n);
	assert_int_equal(gen, gen0 + 1);
	assert_true(n == 2 && keys[0] == 0xb && keys[1] == 0xc);
	assert_true(read_reservation(f, b, &key, &type));
	assert_true(key == 0xb && type == PR_EA);
	/* The preempted nexus hears REGISTRATIONS PREEMPTED, then conflicts;
	 * c, still registered, hears RESERVATIONS RELEASED (type changed). */
	SENSE((RUN(f, NULL, 0, 0x00, 0, 0, 0, 0, 0)), 0x6, 0x2a, 0x05);
	assert_int_equal(can_read(f, f->nx), 0);
	SENSE((run_on(f, c, f->lu, NULL, 0, CDB(0, 0, 0, 0, 0, 0))), 0x6,
		     0x2a, 0x04);
	assert_int_equal(can_read(f, c), 0);
	assert_int_equal(can_write(f, b), 1);

	/* PREEMPT AND ABORT of a registration only: the reservation stays. */
	GOOD((prout(f, b, 5, PR_EA, 0xb, 0xc)));
	read_keys(f, b, &gen, keys, &n);
	assert_true(n == 1 && keys[0] == 0xb);
	assert_true(read_reservation(f, b, &key, &type));
	assert_true(key == 0xb && type == PR_EA);
	SENSE((run_on(f, c, f->lu, NULL, 0, CDB(0, 0, 0, 0, 0, 0))), 0x6,
		     0x2a, 0x05);
	/* A PR OUT from a preempted nexus with its old key: conflict. */
	CONFLICT((prout(f, c, 1, PR_EA, 0xc, 0)));

	/* All-registrants: PREEMPT with SARK 0 removes everyone else. */
	GOOD((prout(f, f->nx, 6, 0, 0, 0xa)));
	GOOD((prout(f, b, 2, PR_EA, 0xb, 0)));
	GOOD((prout(f, b, 1, PR_WE_AR, 0xb, 0)));
	GOOD((prout(f, f->nx, 4, PR_WE_RO, 0xa, 0)));
	read_keys(f, f->nx, &gen, keys, &n);
	assert_true(n == 1 && keys[0] == 0xa);
	assert_true(read_reservation(f, f->nx, &key, &type));
	assert_true(key == 0xa && type == PR_WE_RO);
	SENSE((run_on(f, b, f->lu, NULL, 0, CDB(0, 0, 0, 0, 0, 0))), 0x6,
		     0x2a, 0x05);
	tnd_scsi_nexus_destroy(b);
	tnd_scsi_nexus_destroy(c);
}

static void pr_register_and_move(void **state)
{
	struct fx *f = *state;
	const char *bname = "iqn.x:b,i,0x2";
	struct tnd_scsi_nexus *b = nexus_new(f, bname);
	GOOD((prout(f, f->nx, 6, 0, 0, 0xa)));
	GOOD((prout(f, f->nx, 1, PR_WE, 0xa, 0)));

	uint8_t p[24 + 24] = { 0 };
	tnd_put_be64(p, 0xa);
	tnd_put_be64(p + 8, 0xbb);
	p[17] = 0x02;                                      /* UNREG */
	tnd_put_be16(p + 18, 1);
	tnd_put_be32(p + 20, 24);
	p[24] = 0x45;
	tnd_put_be16(p + 26, 20);
	memcpy(p + 28, bname, strlen(bname));
	uint8_t c[16] = { 0x5f, 7 };
	tnd_put_be32(c + 5, sizeof(p));

	/* Not the holder: conflict. */
	struct tcmd t = run_on(f, b, f->lu, p, sizeof(p), c, 16);
	assert_conflict(&t);
	/* Bad TransportID format (00b: a name without ISID). */
	p[24] = 0x05;
	t = run_on(f, f->nx, f->lu, p, sizeof(p), c, 16);
	assert_sense(&t, 0x5, 0x26, 0x00);
	assert_field_ptr(&t, false, 24);
	p[24] = 0x45;
	/* Parameter list length must match the TransportID length. */
	tnd_put_be32(c + 5, sizeof(p) - 4);
	t = run_on(f, f->nx, f->lu, p, sizeof(p), c, 16);
	assert_sense(&t, 0x5, 0x1a, 0x00);
	tnd_put_be32(c + 5, sizeof(p));

	t = run_on(f, f->nx, f->lu, p, sizeof(p), c, 16);
	assert_good(&t);
	uint32_t gen;
	uint64_t keys[4], key;
	unsigned n;
	uint8_t type;
	read_keys(f, b, &gen, keys, &n);
	assert_true(n == 1 && keys[0] == 0xbb);
	assert_true(read_reservation(f, b, &key, &type));
	assert_true(key == 0xbb && type == PR_WE);
	assert_int_equal(can_write(f, b), 1);
	assert_int_equal(can_write(f, f->nx), 0);
	tnd_scsi_nexus_destroy(b);
}

static void pr_out_parameter_errors(void **state)
{
	struct fx *f = *state;
	uint8_t p[32] = { 0 };
	uint8_t c[16] = { 0x5f, 0 };
	/* Parameter list length other than 24. */
	tnd_put_be32(c + 5, 20);
	SENSE((run_on(f, f->nx, f->lu, p, 20, c, 16)), 0x5, 0x1a, 0x00);
	tnd_put_be32(c + 5, 32);
	SENSE((run_on(f, f->nx, f->lu, p, 32, c, 16)), 0x5, 0x1a, 0x00);
	/* Less data-out than the list length says. */
	tnd_put_be32(c + 5, 24);
	SENSE((run_on(f, f->nx, f->lu, p, 16, c, 16)), 0x5, 0x1a, 0x00);
	/* SPEC_I_PT is not supported. */
	struct tcmd t = prout_on(f, f->lu, f->nx, 0, 0, 0, 1, 0x08);
	assert_sense(&t, 0x5, 0x26, 0x00);
	assert_field_ptr(&t, false, 20);
	assert_int_equal(t.c.sense[15] & 0x0f, 0x08 | 3);  /* BPV, bit 3 */
	/* APTPL without a state directory. */
	t = prout_on(f, f->lu, f->nx, 0, 0, 0, 1, 0x01);
	assert_sense(&t, 0x5, 0x26, 0x00);
	assert_field_ptr(&t, false, 20);
	/* Bad type and scope in a RESERVE. */
	GOOD((prout(f, f->nx, 0, 0, 0, 1)));
	t = prout(f, f->nx, 1, 2, 1, 0);
	assert_sense(&t, 0x5, 0x24, 0x00);
	assert_field_ptr(&t, true, 2);
	t = prout(f, f->nx, 1, 0x11, 1, 0);
	assert_sense(&t, 0x5, 0x24, 0x00);
	assert_field_ptr(&t, true, 2);
	uint32_t gen;
	uint64_t keys[4];
	unsigned n;
	read_keys(f, f->nx, &gen, keys, &n);
	assert_int_equal(gen, 1);                          /* failures change nothing */
}

static void reserve6_and_release6(void **state)
{
	struct fx *f = *state;
	struct tnd_scsi_nexus *b = nexus_new(f, "iqn.x:b,i,0x2");
	GOOD((RUN(f, NULL, 0, 0x16, 0, 0, 0, 0, 0)));
	GOOD((RUN(f, NULL, 0, 0x16, 0, 0, 0, 0, 0)));   /* again */
	CONFLICT((run_on(f, b, f->lu, NULL, 0, CDB(0x16, 0, 0, 0, 0, 0))));
	/* Everything but INQUIRY, REPORT LUNS, REQUEST SENSE, RELEASE
	 * conflicts for the other nexus, TEST UNIT READY and PR IN too. */
	assert_int_equal(can_read(f, b), 0);
	assert_int_equal(can_cmd(f, b, CDB(0x00, 0, 0, 0, 0, 0)), 0);
	assert_int_equal(can_cmd(f, b, CDB(0x1a, 0, 0x3f, 0, 255, 0)), 0);
	assert_int_equal(can_cmd(f, b, CDB(0x5e, 0, 0, 0, 0, 0, 0, 0, 64, 0)), 0);
	assert_int_equal(can_cmd(f, b, CDB(0x12, 0, 0, 0, 96, 0)), 1);
	assert_int_equal(can_cmd(f, b, CDB(0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0)), 1);
	assert_int_equal(can_cmd(f, b, CDB(0x03, 0, 0, 0, 18, 0)), 1);
	/* PR OUT conflicts while RESERVE(6) is held by another. */
	CONFLICT((prout(f, b, 6, 0, 0, 0xb)));
	/* RELEASE from the other nexus: GOOD, nothing released. */
	GOOD((run_on(f, b, f->lu, NULL, 0, CDB(0x17, 0, 0, 0, 0, 0))));
	assert_int_equal(can_write(f, b), 0);
	assert_int_equal(can_write(f, f->nx), 1);
	GOOD((RUN(f, NULL, 0, 0x17, 0, 0, 0, 0, 0)));
	assert_int_equal(can_write(f, b), 1);
	/* RESERVE(10) is the same reservation. */
	GOOD((run_on(f, b, f->lu, NULL, 0, CDB(0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0))));
	assert_int_equal(can_write(f, f->nx), 0);
	GOOD((run_on(f, b, f->lu, NULL, 0, CDB(0x57, 0, 0, 0, 0, 0, 0, 0, 0, 0))));
	/* Obsolete third-party fields are refused. */
	struct tcmd t = RUN(f, NULL, 0, 0x16, 0x10, 0, 0, 0, 0);
	assert_sense(&t, 0x5, 0x24, 0x00);
	assert_field_ptr(&t, true, 1);

	/* While anyone is registered, RESERVE and RELEASE conflict. */
	GOOD((prout(f, b, 6, 0, 0, 0xb)));
	CONFLICT((RUN(f, NULL, 0, 0x16, 0, 0, 0, 0, 0)));
	CONFLICT((RUN(f, NULL, 0, 0x17, 0, 0, 0, 0, 0)));
	GOOD((prout(f, b, 0, 0, 0xb, 0)));
	tnd_scsi_nexus_destroy(b);
}

/* RESERVE(6) ends with a LUN reset and with its nexus; persistent
 * reservations survive both. */
static void reserve6_released_by_reset_and_nexus_loss(void **state)
{
	struct fx *f = *state;
	struct tnd_scsi_nexus *b = nexus_new(f, "iqn.x:b,i,0x2");
	GOOD((RUN(f, NULL, 0, 0x16, 0, 0, 0, 0, 0)));
	assert_int_equal(can_write(f, b), 0);
	tnd_scsi_lu_reset(f->lu);
	SENSE((run_on(f, b, f->lu, NULL, 0, CDB(0, 0, 0, 0, 0, 0))), 0x6,
		     0x29, 0x03);
	assert_int_equal(can_write(f, b), 1);
	SENSE((RUN(f, NULL, 0, 0, 0, 0, 0, 0, 0)), 0x6, 0x29, 0x03);

	/* b reserves, then its session ends: released. */
	GOOD((run_on(f, b, f->lu, NULL, 0, CDB(0x16, 0, 0, 0, 0, 0))));
	assert_int_equal(can_write(f, f->nx), 0);
	tnd_scsi_nexus_destroy(b);
	assert_int_equal(can_write(f, f->nx), 1);
	GOOD((RUN(f, NULL, 0, 0x16, 0, 0, 0, 0, 0)));
	GOOD((RUN(f, NULL, 0, 0x17, 0, 0, 0, 0, 0)));

	/* A persistent reservation is kept over a LUN reset. */
	b = nexus_new(f, "iqn.x:b,i,0x2");
	GOOD((prout(f, f->nx, 6, 0, 0, 0xa)));
	GOOD((prout(f, f->nx, 1, PR_EA, 0xa, 0)));
	tnd_scsi_lu_reset(f->lu);
	SENSE((run_on(f, b, f->lu, NULL, 0, CDB(0, 0, 0, 0, 0, 0))), 0x6,
		     0x29, 0x03);
	assert_int_equal(can_read(f, b), 0);
	uint64_t key;
	uint8_t type;
	assert_true(read_reservation(f, b, &key, &type));
	/* And over the holder's session ending: registrations belong to
	 * the I_T nexus name, so the same initiator port finds it again. */
	tnd_scsi_nexus_destroy(f->nx);
	f->nx = nexus_new(f, "iqn.2026-01.test:host,i,0x1");
	assert_int_equal(can_write(f, f->nx), 1);
	assert_int_equal(can_read(f, b), 0);
	tnd_scsi_nexus_destroy(b);
}

static void pr_opcodes_reported(void **state)
{
	struct fx *f = *state;
	uint8_t b[64];
	static const uint8_t want[][2] = { { 0x5e, 0 }, { 0x5e, 3 }, { 0x5f, 0 }, { 0x5f, 7 } };
	for (unsigned i = 0; i < TND_ARRAY_SIZE(want); i++) {
		struct tcmd t = RUN(f, b, sizeof(b), 0xa3, 0x0c, 0x02, want[i][0], 0, want[i][1], 0,
				    0, 0, sizeof(b), 0, 0);
		assert_good(&t);
		assert_int_equal(b[1] & 0x07, 0x03);       /* supported */
		assert_int_equal(tnd_get_be16(b + 2), 10);
		assert_int_equal(b[4], want[i][0]);
	}
	for (unsigned op = 0x16; op <= 0x17; op++) {
		struct tcmd t = RUN(f, b, sizeof(b), 0xa3, 0x0c, 0x01, op, 0, 0, 0, 0, 0,
				    sizeof(b), 0, 0);
		assert_good(&t);
		assert_int_equal(b[1] & 0x07, 0x03);
	}
	/* A service action we do not have. */
	struct tcmd t = RUN(f, b, sizeof(b), 0xa3, 0x0c, 0x02, 0x5e, 0, 4, 0, 0, 0, sizeof(b), 0, 0);
	assert_good(&t);
	assert_int_equal(b[1] & 0x07, 0x01);
}


/*
 * What a Windows failover cluster does (SPC-3 PR as Windows uses it): each
 * node registers every path with its node key, the owner reserves Write
 * Exclusive - Registrants Only, everyone polls READ KEYS / READ
 * RESERVATION; a challenger takes the disk by PREEMPTing the owner's key,
 * which throws out every path of the old owner.
 */
static void pr_windows_cluster_arbitration(void **state)
{
	struct fx *f = *state;
	struct tnd_scsi_nexus *a2 = nexus_new(f, "iqn.1991-05.com.microsoft:node-a,i,0x400001370001");
	struct tnd_scsi_nexus *b1 = nexus_new(f, "iqn.1991-05.com.microsoft:node-b,i,0x400001370000");
	struct tnd_scsi_nexus *b2 = nexus_new(f, "iqn.1991-05.com.microsoft:node-b,i,0x400001370001");
	const uint64_t ka = 0x1a2b3c4d00000001ull, kb = 0x1a2b3c4d00000002ull;
	GOOD((prout(f, f->nx, 6, 0, 0, ka)));
	GOOD((prout(f, a2, 6, 0, 0, ka)));
	GOOD((prout(f, b1, 6, 0, 0, kb)));
	GOOD((prout(f, b2, 6, 0, 0, kb)));
	GOOD((prout(f, f->nx, 1, PR_WE_RO, ka, 0)));
	/* CSV: every registered node writes. */
	assert_int_equal(can_write(f, a2), 1);
	assert_int_equal(can_write(f, b2), 1);
	uint64_t key;
	uint8_t type;
	assert_true(read_reservation(f, b1, &key, &type));
	assert_true(key == ka && type == PR_WE_RO);
	/* Node B arbitrates and wins. */
	GOOD((prout(f, b1, 4, PR_WE_RO, kb, ka)));
	assert_true(read_reservation(f, b2, &key, &type));
	assert_true(key == kb && type == PR_WE_RO);
	uint32_t gen;
	uint64_t keys[8];
	unsigned n;
	read_keys(f, b2, &gen, keys, &n);
	assert_true(n == 2 && keys[0] == kb && keys[1] == kb);
	/* Both paths of node A hear of it and can no longer write. */
	SENSE((RUN(f, NULL, 0, 0, 0, 0, 0, 0, 0)), 0x6, 0x2a, 0x05);
	SENSE((run_on(f, a2, f->lu, NULL, 0, CDB(0, 0, 0, 0, 0, 0))), 0x6, 0x2a, 0x05);
	assert_int_equal(can_write(f, f->nx), 0);
	assert_int_equal(can_write(f, a2), 0);
	assert_int_equal(can_read(f, a2), 1);
	assert_int_equal(can_write(f, b2), 1);
	/* Node A re-registers and joins as a registrant again. */
	GOOD((prout(f, f->nx, 6, 0, 0, ka)));
	assert_int_equal(can_write(f, f->nx), 1);
	tnd_scsi_nexus_destroy(a2);
	tnd_scsi_nexus_destroy(b1);
	tnd_scsi_nexus_destroy(b2);
}


/* One device mapped in two targets: one logical unit behind two target
 * ports, so one reservation state. */
static void pr_shared_by_the_lus_of_one_device(void **state)
{
	struct fx *f = *state;
	struct tnd_scsi_lu *lu2, *bad;
	struct tnd_scsi_lu_desc d = { .name = "dev0", .vol = &f->mv->vol, .share_with = f->lu };
	assert_int_equal(tnd_scsi_lu_create(&d, &lu2), 0);
	d.name = "dev1";
	assert_int_equal(tnd_scsi_lu_create(&d, &bad), -EINVAL);
	static const struct tnd_scsi_port port2 = {
		.target_name = "iqn.2026-01.test:other", .tpgt = 1, .rel_port_id = 1,
	};
	/* The same initiator port through the other target is another
	 * I_T nexus. */
	struct tnd_scsi_nexus *nx2, *c2;
	assert_int_equal(tnd_scsi_nexus_create("iqn.2026-01.test:host,i,0x1", &port2, &nx2), 0);
	assert_int_equal(tnd_scsi_nexus_create("iqn.x:c,i,0x3", &port2, &c2), 0);
	clear_ua_on(f, lu2, nx2);
	clear_ua_on(f, lu2, c2);

	GOOD((prout(f, f->nx, 6, 0, 0, 0xa)));
	GOOD((prout_on(f, lu2, nx2, 6, 0, 0, 0xb, 0)));
	GOOD((prout_on(f, lu2, nx2, 1, PR_WE_RO, 0xb, 0, 0)));
	uint8_t buf[64];
	GOOD((prin_on(f, f->lu, f->nx, 0, buf, sizeof(buf))));
	assert_int_equal(tnd_get_be32(buf + 4), 16);
	assert_true(tnd_get_be64(buf + 8) == 0xa && tnd_get_be64(buf + 16) == 0xb);
	uint64_t key;
	uint8_t type;
	assert_true(read_reservation(f, f->nx, &key, &type));
	assert_true(key == 0xb && type == PR_WE_RO);
	/* Unregistered through either target: no writes. */
	uint8_t blk[BS] = { 0 };
	CONFLICT((run_on(f, c2, lu2, blk, BS, CDB(0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0))));
	struct tnd_scsi_nexus *c1 = nexus_new(f, "iqn.x:c,i,0x3");
	assert_int_equal(can_write(f, c1), 0);
	assert_int_equal(can_write(f, f->nx), 1);
	/* A PREEMPT through one target reaches the nexus on the other. */
	GOOD((prout(f, f->nx, 4, PR_WE_RO, 0xa, 0xb)));
	SENSE((run_on(f, nx2, lu2, NULL, 0, CDB(0, 0, 0, 0, 0, 0))), 0x6, 0x2a, 0x05);
	CONFLICT((run_on(f, nx2, lu2, blk, BS, CDB(0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0))));
	/* Either LU may go first; the state lives while one remains. */
	tnd_scsi_lu_destroy(lu2);
	assert_true(read_reservation(f, f->nx, &key, &type));
	assert_true(key == 0xa);
	tnd_scsi_nexus_destroy(nx2);
	tnd_scsi_nexus_destroy(c2);
	tnd_scsi_nexus_destroy(c1);
}

/* ---- APTPL ---- */

static char *tmp_state_dir(void)
{
	char *d = strdup("/tmp/tnd-scsi-pr.XXXXXX");
	assert_non_null(mkdtemp(d));
	return d;
}

static void rm_state_dir(const char *d)
{
	char cmd[512];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d);
	assert_int_equal(system(cmd), 0);
}

static struct tnd_scsi_lu *lu_with_state(struct fx *f, const char *dir)
{
	struct tnd_scsi_lu *lu;
	struct tnd_scsi_lu_desc d = { .name = "dev0", .vol = &f->mv->vol, .state_dir = dir };
	assert_int_equal(tnd_scsi_lu_create(&d, &lu), 0);
	return lu;
}

static void aptpl_saved_and_restored(void **state)
{
	struct fx *f = *state;
	char *dir = tmp_state_dir();
	char path[512];
	snprintf(path, sizeof(path), "%s/pr/dev0.json", dir);
	struct tnd_scsi_lu *lu = lu_with_state(f, dir);
	struct tnd_scsi_nexus *b = nexus_new(f, "iqn.x:b,i,0x2");
	clear_ua_on(f, lu, f->nx);
	clear_ua_on(f, lu, b);

	uint8_t cap[8];
	GOOD((prin_on(f, lu, f->nx, 2, cap, 8)));
	assert_int_equal(cap[2] & 0x01, 1);                /* PTPL_C */
	assert_int_equal(cap[3] & 0x01, 0);                /* PTPL_A */
	/* Without APTPL nothing is written. */
	GOOD((prout_on(f, lu, f->nx, 6, 0, 0, 0xa, 0)));
	assert_int_equal(access(path, F_OK), -1);
	/* With APTPL the state is on disk when the command completes. */
	GOOD((prout_on(f, lu, b, 6, 0, 0, 0xb, 0x01)));
	GOOD((prout_on(f, lu, f->nx, 1, PR_WE_RO, 0xa, 0, 0)));
	assert_int_equal(access(path, F_OK), 0);
	GOOD((prin_on(f, lu, f->nx, 2, cap, 8)));
	assert_int_equal(cap[3] & 0x01, 1);                /* PTPL_A */
	tnd_scsi_lu_destroy(lu);

	/* "Restart": a new LU from the same directory. */
	lu = lu_with_state(f, dir);
	clear_ua_on(f, lu, f->nx);
	clear_ua_on(f, lu, b);
	uint8_t buf[256];
	struct tcmd t = prin_on(f, lu, b, 0, buf, sizeof(buf));
	assert_good(&t);
	assert_int_equal(tnd_get_be32(buf), 2);         /* two REGISTERs */
	assert_int_equal(tnd_get_be32(buf + 4), 16);
	assert_true(tnd_get_be64(buf + 8) == 0xa && tnd_get_be64(buf + 16) == 0xb);
	t = prin_on(f, lu, b, 1, buf, sizeof(buf));
	assert_true(tnd_get_be64(buf + 8) == 0xa && buf[21] == PR_WE_RO);
	/* And it still works: the holder writes, an unregistered nexus not. */
	struct tnd_scsi_nexus *c = nexus_new(f, "iqn.x:c,i,0x3");
	clear_ua_on(f, lu, c);
	uint8_t blk[BS] = { 0 };
	CONFLICT((run_on(f, c, lu, blk, BS, CDB(0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0))));
	GOOD((run_on(f, f->nx, lu, blk, BS, CDB(0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0))));

	/* A REGISTER with APTPL=0 turns it off: the file goes. */
	GOOD((prout_on(f, lu, b, 0, 0, 0xb, 0xbc, 0)));
	assert_int_equal(access(path, F_OK), -1);
	tnd_scsi_lu_destroy(lu);
	lu = lu_with_state(f, dir);
	clear_ua_on(f, lu, b);
	t = prin_on(f, lu, b, 0, buf, sizeof(buf));
	assert_int_equal(tnd_get_be32(buf + 4), 0);

	/* A deleted device's reservations are forgotten. */
	GOOD((prout_on(f, lu, b, 6, 0, 0, 0xb, 0x01)));
	tnd_scsi_lu_destroy(lu);
	assert_int_equal(access(path, F_OK), 0);
	assert_int_equal(tnd_scsi_pr_forget(dir, "dev0"), 0);
	assert_int_equal(access(path, F_OK), -1);
	assert_int_equal(tnd_scsi_pr_forget(dir, "dev0"), 0);
	lu = lu_with_state(f, dir);
	clear_ua_on(f, lu, b);
	t = prin_on(f, lu, b, 0, buf, sizeof(buf));
	assert_int_equal(tnd_get_be32(buf + 4), 0);
	tnd_scsi_lu_destroy(lu);

	tnd_scsi_nexus_destroy(b);
	tnd_scsi_nexus_destroy(c);
	rm_state_dir(dir);
	free(dir);
}

static void aptpl_bad_files_ignored(void **state)
{
	struct fx *f = *state;
	char *dir = tmp_state_dir();
	char pdir[512], path[600];
	snprintf(pdir, sizeof(pdir), "%s/pr", dir);
	snprintf(path, sizeof(path), "%s/dev0.json", pdir);
	assert_int_equal(mkdir(pdir, 0700), 0);
	static const char *const bad[] = {
		"",
		"{",
		"[]",
		"{\"format\": \"tandem-pr\"}",
		/* another device */
		"{\"format\": \"tandem-pr\", \"version\": 1, \"device\": \"other\", \"generation\": 1,"
		" \"registrations\": [{\"key\": \"0x1\", \"initiator\": \"iqn.x,i,0x1\", \"target\":"
		" \"t\", \"relative_port\": 1, \"all_target_ports\": false}], \"reservation\": null}",
		/* key 0 */
		"{\"format\": \"tandem-pr\", \"version\": 1, \"device\": \"dev0\", \"generation\": 1,"
		" \"registrations\": [{\"key\": \"0x0\", \"initiator\": \"iqn.x,i,0x1\", \"target\":"
		" \"t\", \"relative_port\": 1, \"all_target_ports\": false}], \"reservation\": null}",
		/* holder out of range */
		"{\"format\": \"tandem-pr\", \"version\": 1, \"device\": \"dev0\", \"generation\": 1,"
		" \"registrations\": [{\"key\": \"0x1\", \"initiator\": \"iqn.x,i,0x1\", \"target\":"
		" \"t\", \"relative_port\": 1, \"all_target_ports\": false}],"
		" \"reservation\": {\"type\": 1, \"holder\": 1}}",
		/* bad type */
		"{\"format\": \"tandem-pr\", \"version\": 1, \"device\": \"dev0\", \"generation\": 1,"
		" \"registrations\": [{\"key\": \"0x1\", \"initiator\": \"iqn.x,i,0x1\", \"target\":"
		" \"t\", \"relative_port\": 1, \"all_target_ports\": false}],"
		" \"reservation\": {\"type\": 2, \"holder\": 0}}",
		/* unknown member */
		"{\"format\": \"tandem-pr\", \"version\": 1, \"device\": \"dev0\", \"generation\": 1,"
		" \"registrations\": [{\"key\": \"0x1\", \"initiator\": \"iqn.x,i,0x1\", \"target\":"
		" \"t\", \"relative_port\": 1, \"all_target_ports\": false, \"x\": 1}],"
		" \"reservation\": null}",
	};
	for (unsigned i = 0; i < TND_ARRAY_SIZE(bad); i++) {
		FILE *fp = fopen(path, "w");
		assert_non_null(fp);
		fputs(bad[i], fp);
		fclose(fp);
		struct tnd_scsi_lu *lu = lu_with_state(f, dir);
		clear_ua_on(f, lu, f->nx);
		uint8_t buf[64];
		struct tcmd t = prin_on(f, lu, f->nx, 0, buf, sizeof(buf));
		assert_good(&t);
		if (tnd_get_be32(buf + 4) != 0)
			fail_msg("bad file %u was trusted", i);
		tnd_scsi_lu_destroy(lu);
	}
	/* A good one, for contrast. */
	FILE *fp = fopen(path, "w");
	assert_non_null(fp);
	fputs("{\"format\": \"tandem-pr\", \"version\": 1, \"device\": \"dev0\", \"generation\": 9,"
	      " \"registrations\": [{\"key\": \"0x1\", \"initiator\": \"iqn.x,i,0x1\", \"target\":"
	      " \"t\", \"relative_port\": 1, \"all_target_ports\": false}],"
	      " \"reservation\": {\"type\": 1, \"holder\": 0}}", fp);
	fclose(fp);
	struct tnd_scsi_lu *lu = lu_with_state(f, dir);
	clear_ua_on(f, lu, f->nx);
	uint8_t buf[64];
	GOOD((prin_on(f, lu, f->nx, 1, buf, sizeof(buf))));
	assert_int_equal(tnd_get_be32(buf), 9);
	assert_true(tnd_get_be64(buf + 8) == 1 && buf[21] == PR_WE);
	tnd_scsi_lu_destroy(lu);
	rm_state_dir(dir);
	free(dir);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(ua_power_on_sequence),
		T(ua_first_command_reports_power_on),
		T(ua_after_lu_reset),
		T(ua_capacity_changed),
		T(ua_priority_order),
		T(inquiry_standard),
		T(inquiry_truncates_to_allocation_length),
		T(inquiry_custom_product),
		T(inquiry_no_lun),
		T(inquiry_invalid_fields),
		T(vpd_supported_and_serial),
		T(vpd_device_identification),
		T(vpd_block_limits),
		T(vpd_block_characteristics_and_lbp),
		T(report_luns),
		T(read_capacity),
		T(read_capacity_10_too_large),
		T(read_write_all_sizes),
		T(read6_zero_means_256),
		T(rw10_zero_length_is_no_transfer),
		T(rw_out_of_range),
		T(rw_too_long_for_max_transfer),
		T(fua_passed_through),
		T(read_residual_when_expected_length_short),
		T(read_with_no_buffer_reports_overflow),
		T(write_short_data_out_writes_whole_blocks),
		T(write_without_w_bit_writes_nothing),
		T(read_errors_mapped),
		T(write_errors_mapped),
		T(read_only_volume),
		T(verify),
		T(write_and_verify),
		T(synchronize_cache),
		T(mode_sense),
		T(mode_select_wce_makes_writes_fua),
		T(mode_select_rejects),
		T(wce_follows_volume_write_cache),
		T(request_sense_desc_refused),
		T(start_stop_unit),
		T(invalid_opcode_and_reserved_bits),
		T(unmap),
		T(write_same),
		T(get_lba_status),
		T(get_lba_status_runs),
		T(report_supported_opcodes),
		T(compare_and_write),
		T(compare_and_write_waits_for_lock),
		T(compare_and_write_atomic_across_reactors),
		T(cdb_xfer),
		T(build_sense),
		T(lu_create_rejects_bad_input),
		T(inquiry_tpgs_implicit_and_3pc),
		T(rtpg_both_formats),
		T(alua_states_refuse_commands),
		T(rcr_operating_parameters),
		T(vpd_third_party_copy),
		TX(xcopy_copies_between_lus),
		TX(xcopy_dest_fua_when_wce_off),
		TX(xcopy_within_lu_overlapping),
		TX(xcopy_bad_descriptors),
		TX(xcopy_unknown_naa_refused),
		TX(xcopy_lu_outside_view_refused),
		TX(xcopy_target_state_and_protection),
		TX(xcopy_errors_are_copy_aborted),
		TX(xcopy_cancelled_and_uses_lu),
		TX(xcopy_mixed_block_sizes),
		TX(xcopy_respects_reservations),
		T(pr_register_and_read_keys),
		T(pr_conflict_matrix),
		T(pr_read_full_status),
		T(pr_report_capabilities),
		T(pr_release_and_unit_attentions),
		T(pr_preempt),
		T(pr_register_and_move),
		T(pr_windows_cluster_arbitration),
		T(pr_shared_by_the_lus_of_one_device),
		T(pr_out_parameter_errors),
		T(reserve6_and_release6),
		T(reserve6_released_by_reset_and_nexus_loss),
		T(pr_opcodes_reported),
		T(aptpl_saved_and_restored),
		T(aptpl_bad_files_ignored),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
