/*
 * tandem-check — offline checker for an lsfs store.
 *
 *   tandem-check [-q] PATH
 *
 * PATH is the backing file or block device of an lsfs device that no
 * tandemd has open. The store is opened read-only through the flat volume
 * and checked by tnd_lsfs_check() (superblocks, checkpoints, every
 * record's CRC, the block map against the log, segment usage). The report
 * goes to stdout. Exit status: 0 clean, 1 inconsistencies found, 2 the
 * store could not be read at all (usage, I/O error).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "tnd_common.h"
#include "tnd_flat.h"
#include "tnd_lsfs.h"

static int usage(void)
{
	fprintf(stderr, "usage: tandem-check [-q] PATH\n"
			"  Check the lsfs store on PATH (offline). Exit 0 clean, 1 not clean, 2 error.\n");
	return 2;
}

int main(int argc, char **argv)
{
	bool quiet = false;
	int opt;
	while ((opt = getopt(argc, argv, "qh")) != -1) {
		if (opt == 'q')
			quiet = true;
		else
			return usage();
	}
	if (optind + 1 != argc)
		return usage();
	const char *path = argv[optind];
	tnd_log_set_level(TND_LOG_ERROR);

	struct tnd_flat_opts fo = { .path = path, .block_size = 512, .passthrough = true, .read_only = true };
	struct tnd_volume *vol;
	int ret = tnd_flat_open(&fo, &vol);
	if (ret < 0) {
		fprintf(stderr, "tandem-check: cannot open %s: %s\n", path, strerror(-ret));
		return 2;
	}
	if (!quiet)
		printf("tandem-check %s: %s\n", TND_VERSION, path);
	struct tnd_lsfs_check_result res;
	ret = tnd_lsfs_check(vol, quiet ? NULL : stdout, &res);
	tnd_volume_destroy(vol);
	if (ret < 0) {
		fprintf(stderr, "tandem-check: reading %s failed: %s\n", path, strerror(-ret));
		return 2;
	}
	if (quiet)
		printf("%s: %s (%llu errors, %llu warnings)\n", path, res.errors ? "NOT CLEAN" : "clean",
		       (unsigned long long)res.errors, (unsigned long long)res.warnings);
	return res.errors ? 1 : 0;
}
