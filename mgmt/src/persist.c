/*
 * persist.c — writing the running configuration to <data-dir>/config.json.
 *
 * The usual atomic replace: write the whole document to a temp file in the
 * same directory (same file system, so rename is atomic), fsync it so its
 * data is on disk before its name is, rename it over the old file, fsync the
 * directory so the rename itself survives a crash. A reader (the daemon at
 * its next start) sees the old document or the new one, never a torn one.
 * Mode 0600: the document holds the CHAP secrets.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tnd_mgmt.h"

static int write_all(int fd, const char *buf, size_t len)
{
	while (len) {
		ssize_t n = write(fd, buf, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

int tnd_mgmt_persist_config(const char *data_dir, const json_t *cfg)
{
	char path[4096], tmp[4096];
	int ret;
	if ((size_t)snprintf(path, sizeof(path), "%s/%s", data_dir, TND_MGMT_CONFIG_FILE) >=
		    sizeof(path) ||
	    (size_t)snprintf(tmp, sizeof(tmp), "%s/.%s.XXXXXX", data_dir, TND_MGMT_CONFIG_FILE) >=
		    sizeof(tmp))
		return -ENAMETOOLONG;

	char *text = json_dumps(cfg, JSON_INDENT(2));
	if (!text)
		return -ENOMEM;
	size_t len = strlen(text);

	int fd = mkostemp(tmp, O_CLOEXEC);   /* created 0600 */
	if (fd < 0) {
		ret = -errno;
		goto out_text;
	}
	if ((ret = write_all(fd, text, len)) < 0 || (ret = write_all(fd, "\n", 1)) < 0)
		goto err_unlink;
	if (fchmod(fd, 0600) < 0 || fsync(fd) < 0) {
		ret = -errno;
		goto err_unlink;
	}
	if (close(fd) < 0) {
		fd = -1;
		ret = -errno;
		goto err_unlink;
	}
	fd = -1;
	if (rename(tmp, path) < 0) {
		ret = -errno;
		goto err_unlink;
	}
	int dfd = open(data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0) {
		ret = -errno;
		goto out_text;
	}
	ret = fsync(dfd) < 0 ? -errno : 0;
	close(dfd);
	goto out_text;

err_unlink:
	if (fd >= 0)
		close(fd);
	unlink(tmp);
out_text:
	free(text);
	return ret;
}
