/*
 * tnd-xcopy — EXTENDED COPY (LID1) as VMware's VAAI clone sends it, for
 * t_xcopy.sh: identification CSCD descriptors (E4h) naming LUs by their
 * NAA designator, one block-to-block segment. Plus the few block I/O
 * helpers the script needs to prove what was and was not copied.
 *
 *   tnd-xcopy -i INITIATOR naa URL
 *       print the NAA designator of URL's LU (VPD page 83h), in hex
 *   tnd-xcopy -i INITIATOR copy URL SRC_NAA DST_NAA SRC_LBA DST_LBA BLOCKS
 *       send EXTENDED COPY to URL's LU; prints GOOD or the sense as
 *       "CHECK key/asc/ascq"; exit 0 GOOD, 2 CHECK CONDITION, 1 other
 *   tnd-xcopy -i INITIATOR fill URL LBA BLOCKS SEED
 *       write a pattern derived from SEED (WRITE(16))
 *   tnd-xcopy -i INITIATOR check URL LBA BLOCKS SEED
 *       read back and compare with the pattern; exit 0 when equal, 3 when
 *       not (the pattern is relative to LBA: a copied range checks too)
 *   tnd-xcopy -i INITIATOR opparams URL
 *       print RECEIVE COPY RESULTS / OPERATING PARAMETERS limits
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>

#define BS 512u

struct dev {
	struct iscsi_context *iscsi;
	int lun;
};

static int dev_open(struct dev *d, const char *initiator, const char *url)
{
	d->iscsi = iscsi_create_context(initiator);
	if (!d->iscsi)
		return -1;
	struct iscsi_url *u = iscsi_parse_full_url(d->iscsi, url);
	if (!u) {
		fprintf(stderr, "bad url %s: %s\n", url, iscsi_get_error(d->iscsi));
		return -1;
	}
	iscsi_set_targetname(d->iscsi, u->target);
	iscsi_set_session_type(d->iscsi, ISCSI_SESSION_NORMAL);
	iscsi_set_header_digest(d->iscsi, ISCSI_HEADER_DIGEST_NONE_CRC32C);
	d->lun = u->lun;
	int ret = iscsi_full_connect_sync(d->iscsi, u->portal, u->lun);
	iscsi_destroy_url(u);
	if (ret) {
		fprintf(stderr, "login failed: %s\n", iscsi_get_error(d->iscsi));
		return -1;
	}
	/* Swallow the power-on unit attention. */
	for (int i = 0; i < 3; i++) {
		struct scsi_task *t = iscsi_testunitready_sync(d->iscsi, d->lun);
		int good = t && t->status == SCSI_STATUS_GOOD;
		if (t)
			scsi_free_scsi_task(t);
		if (good)
			break;
	}
	return 0;
}

static int hex_naa(const char *s, uint8_t *out)
{
	if (strlen(s) != 32)
		return -1;
	for (int i = 0; i < 16; i++) {
		unsigned v;
		if (sscanf(s + 2 * i, "%2x", &v) != 1)
			return -1;
		out[i] = (uint8_t)v;
	}
	return 0;
}

static int cmd_naa(struct dev *d)
{
	struct scsi_task *t = iscsi_inquiry_sync(d->iscsi, d->lun, 1, 0x83, 255);
	if (!t || t->status != SCSI_STATUS_GOOD) {
		fprintf(stderr, "INQUIRY 83h failed\n");
		return 1;
	}
	struct scsi_inquiry_device_identification *di = scsi_datain_unmarshall(t);
	for (struct scsi_inquiry_device_designator *g = di ? di->designators : NULL; g;
	     g = g->next) {
		if (g->designator_type == SCSI_DESIGNATOR_TYPE_NAA &&
		    g->association == SCSI_ASSOCIATION_LOGICAL_UNIT && g->designator_length == 16) {
			for (int i = 0; i < 16; i++)
				printf("%02x", (uint8_t)g->designator[i]);
			printf("\n");
			scsi_free_scsi_task(t);
			return 0;
		}
	}
	fprintf(stderr, "no NAA designator\n");
	scsi_free_scsi_task(t);
	return 1;
}

static int report(struct scsi_task *t)
{
	if (!t) {
		fprintf(stderr, "command failed to run\n");
		return 1;
	}
	int rc = 1;
	if (t->status == SCSI_STATUS_GOOD) {
		printf("GOOD\n");
		rc = 0;
	} else if (t->status == SCSI_STATUS_CHECK_CONDITION) {
		printf("CHECK %x/%02x/%02x\n", t->sense.key, t->sense.ascq >> 8,
		       t->sense.ascq & 0xff);
		rc = 2;
	} else {
		printf("STATUS %02x\n", t->status);
	}
	scsi_free_scsi_task(t);
	return rc;
}

static int cmd_copy(struct dev *d, char **av)
{
	uint8_t naa[2][16];
	if (hex_naa(av[0], naa[0]) || hex_naa(av[1], naa[1])) {
		fprintf(stderr, "NAA must be 32 hex digits\n");
		return 1;
	}
	uint64_t src = strtoull(av[2], NULL, 0), dst = strtoull(av[3], NULL, 0);
	unsigned n = (unsigned)strtoul(av[4], NULL, 0);
	uint8_t p[16 + 2 * 32 + 28];
	memset(p, 0, sizeof(p));
	p[0] = 1;                            /* list id, held for RCR */
	p[3] = 2 * 32;                       /* CSCD descriptor list length */
	p[11] = 28;                          /* segment descriptor list length */
	for (int i = 0; i < 2; i++) {
		uint8_t *c = p + 16 + 32 * i;
		c[0] = 0xe4;                 /* identification descriptor */
		c[4] = 0x01;                 /* binary */
		c[5] = 0x03;                 /* LU association, NAA */
		c[7] = 16;
		memcpy(c + 8, naa[i], 16);
		c[30] = BS >> 8;             /* disk block length */
		c[31] = BS & 0xff;
	}
	uint8_t *s = p + 16 + 64;
	s[0] = 0x02;                         /* block to block */
	s[3] = 24;
	s[7] = 1;                            /* source 0, destination 1 */
	s[10] = (uint8_t)(n >> 8);
	s[11] = (uint8_t)n;
	for (int i = 0; i < 8; i++) {
		s[12 + i] = (uint8_t)(src >> (56 - 8 * i));
		s[20 + i] = (uint8_t)(dst >> (56 - 8 * i));
	}
	struct iscsi_data data = { .size = sizeof(p), .data = p };
	return report(iscsi_extended_copy_sync(d->iscsi, d->lun, &data));
}

/* Depends on the offset from the start of the range, not on the LBA, so
 * a range copied elsewhere still checks against its seed. */
static void pattern(uint8_t *b, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		b[i] = (uint8_t)((i + seed * 7919u) * 2654435761u >> 13 ^ seed * 131u);
}

static int cmd_fill_check(struct dev *d, char **av, int check)
{
	uint64_t lba = strtoull(av[0], NULL, 0);
	unsigned n = (unsigned)strtoul(av[1], NULL, 0);
	unsigned seed = (unsigned)strtoul(av[2], NULL, 0);
	size_t len = (size_t)n * BS;
	uint8_t *b = malloc(len);
	if (!b)
		return 1;
	pattern(b, len, seed);
	int rc = 1;
	struct scsi_task *t;
	if (!check) {
		t = iscsi_write16_sync(d->iscsi, d->lun, lba, b, (uint32_t)len, BS, 0, 0, 0, 0, 0);
		rc = t && t->status == SCSI_STATUS_GOOD ? 0 : 1;
	} else {
		t = iscsi_read16_sync(d->iscsi, d->lun, lba, (uint32_t)len, BS, 0, 0, 0, 0, 0);
		if (t && t->status == SCSI_STATUS_GOOD && t->datain.size == (int)len)
			rc = memcmp(t->datain.data, b, len) == 0 ? 0 : 3;
		if (rc == 3)
			fprintf(stderr, "data at %llu differs from pattern %u\n",
				(unsigned long long)lba, seed);
	}
	if (t)
		scsi_free_scsi_task(t);
	free(b);
	return rc;
}

static int cmd_opparams(struct dev *d)
{
	struct scsi_task *t = iscsi_receive_copy_results_sync(d->iscsi, d->lun,
							      SCSI_COPY_RESULTS_OP_PARAMS, 0, 1024);
	if (!t || t->status != SCSI_STATUS_GOOD)
		return report(t);
	struct scsi_copy_results_op_params *op = scsi_datain_unmarshall(t);
	if (!op) {
		scsi_free_scsi_task(t);
		return 1;
	}
	printf("cscd=%u segments=%u list=%u segment_bytes=%u\n", op->max_target_desc_count,
	       op->max_segment_desc_count, op->max_desc_list_length, op->max_segment_length);
	scsi_free_scsi_task(t);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 5 || strcmp(argv[1], "-i") != 0) {
		fprintf(stderr, "usage: see the comment at the top of tnd-xcopy.c\n");
		return 1;
	}
	const char *initiator = argv[2], *what = argv[3], *url = argv[4];
	char **rest = argv + 5;
	int nrest = argc - 5;
	struct dev d;
	if (dev_open(&d, initiator, url) < 0)
		return 1;
	int rc = 1;
	if (strcmp(what, "naa") == 0)
		rc = cmd_naa(&d);
	else if (strcmp(what, "copy") == 0 && nrest == 5)
		rc = cmd_copy(&d, rest);
	else if ((strcmp(what, "fill") == 0 || strcmp(what, "check") == 0) && nrest == 3)
		rc = cmd_fill_check(&d, rest, what[0] == 'c');
	else if (strcmp(what, "opparams") == 0)
		rc = cmd_opparams(&d);
	else
		fprintf(stderr, "bad command %s\n", what);
	iscsi_logout_sync(d.iscsi);
	iscsi_destroy_context(d.iscsi);
	return rc;
}
