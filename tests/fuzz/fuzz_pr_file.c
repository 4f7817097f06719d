/*
 * fuzz_pr_file.c — libFuzzer target for the APTPL persistent reservation
 * file (target/src/scsi_pr.c): the input is written as
 * <state_dir>/pr/fuzz.json and an LU of device "fuzz" is created from that
 * directory, which loads and validates it.
 *
 * Checked: no crash, leak or sanitizer report; LU creation always succeeds
 * (a bad file is ignored, never fatal); whatever was accepted answers READ
 * KEYS and READ RESERVATION consistently (key count matches the length,
 * the reservation data is 0 or 16 bytes).
 *
 * Seeds (corpus/pr_file/): a file as tandem writes it, an all-registrants
 * reservation, and near misses (holder out of range, bad key, wrong device).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "scsi.h"
#include "tnd_common.h"
#include "tnd_reactor.h"
#include "tnd_volume.h"

#define CHECK(x) do { if (!(x)) __builtin_trap(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A volume nothing is ever submitted to: the target only asks its info. */
static int nvol_submit(struct tnd_volume *vol, struct tnd_io *io)
{
	(void)vol;
	(void)io;
	return -EIO;
}

static void nvol_info(struct tnd_volume *vol, struct tnd_volume_info *out)
{
	(void)vol;
	*out = (struct tnd_volume_info){ .block_size = 512, .num_blocks = 64 };
}

static void nvol_destroy(struct tnd_volume *vol)
{
	free(vol);
}

static const struct tnd_volume_ops nvol_ops = {
	.type = "fuzz",
	.submit = nvol_submit,
	.info = nvol_info,
	.destroy = nvol_destroy,
};

struct world {
	struct tnd_reactor *r;
	struct tnd_volume *vol;
	char dir[64];
	char path[128];
};

static struct world *the_world;

/* libFuzzer leaves through exit(): take the temp directory with us. */
static void world_cleanup(void)
{
	struct world *w = the_world;
	char pr[96];
	snprintf(pr, sizeof(pr), "%s/pr", w->dir);
	unlink(w->path);
	rmdir(pr);
	rmdir(w->dir);
}

static struct world *world_get(void)
{
	static struct world *w;
	if (w)
		return w;
	w = calloc(1, sizeof(*w));
	CHECK(w);
	CHECK(tnd_reactor_create(0, 16, &w->r) == 0);
	w->vol = calloc(1, sizeof(*w->vol));
	CHECK(w->vol);
	tnd_volume_init(w->vol, &nvol_ops, NULL);
	snprintf(w->dir, sizeof(w->dir), "/tmp/tnd-fuzz-pr.XXXXXX");
	CHECK(mkdtemp(w->dir));
	char pr[96];
	snprintf(pr, sizeof(pr), "%s/pr", w->dir);
	CHECK(mkdir(pr, 0700) == 0);
	snprintf(w->path, sizeof(w->path), "%s/fuzz.json", pr);
	the_world = w;
	atexit(world_cleanup);
	return w;
}

struct fcmd {
	struct tnd_scsi_cmd c;
	int calls;
};

static void fdone(struct tnd_scsi_cmd *cmd)
{
	tnd_container_of(cmd, struct fcmd, c)->calls++;
}

static struct fcmd prin(struct world *w, struct tnd_scsi_lu *lu, struct tnd_scsi_nexus *nx,
			uint8_t sa, uint8_t *buf, uint16_t len)
{
	struct fcmd f;
	memset(&f, 0, sizeof(f));
	uint8_t cdb[16] = { 0x5e, sa, 0, 0, 0, 0, 0, (uint8_t)(len >> 8), (uint8_t)len, 0 };
	memcpy(f.c.cdb, cdb, 16);
	f.c.cdb_len = 10;
	f.c.lu = lu;
	f.c.nexus = nx;
	f.c.reactor = w->r;
	f.c.dir = TND_SCSI_DIR_READ;
	f.c.data = buf;
	f.c.data_len = len;
	f.c.exp_len = len;
	f.c.done = fdone;
	tnd_scsi_exec(&f.c);
	CHECK(f.calls == 1);
	return f;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct world *w = world_get();
	FILE *fp = fopen(w->path, "wb");
	CHECK(fp);
	CHECK(fwrite(data, 1, size, fp) == size);
	CHECK(fclose(fp) == 0);

	struct tnd_scsi_lu *lu;
	struct tnd_scsi_lu_desc d = { .name = "fuzz", .vol = w->vol, .state_dir = w->dir };
	CHECK(tnd_scsi_lu_create(&d, &lu) == 0);
	struct tnd_scsi_port port = { .target_name = "t", .tpgt = 1, .rel_port_id = 1 };
	struct tnd_scsi_nexus *nx;
	CHECK(tnd_scsi_nexus_create("iqn.x,i,0x1", &port, &nx) == 0);

	static uint8_t buf[8 + 8 * 512];
	struct fcmd f = prin(w, lu, nx, 0, buf, sizeof(buf));   /* power-on UA */
	CHECK(f.c.status == TND_SAM_CHECK_CONDITION);
	f = prin(w, lu, nx, 0, buf, sizeof(buf));
	CHECK(f.c.status == TND_SAM_GOOD);
	uint32_t len = tnd_get_be32(buf + 4);
	CHECK(len % 8 == 0 && len <= 8 * 256 && f.c.in_len == 8 + len);
	f = prin(w, lu, nx, 1, buf, sizeof(buf));
	CHECK(f.c.status == TND_SAM_GOOD);
	len = tnd_get_be32(buf + 4);
	CHECK(len == 0 || len == 16);
	CHECK(len == 0 || ((buf[21] & 0x0f) != 0 && (buf[21] & 0x0f) != 2));

	tnd_scsi_nexus_destroy(nx);
	tnd_scsi_lu_destroy(lu);
	return 0;
}
