/* Durable small-file helpers: see tnd_common.h. */
#include "tnd_common.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int tnd_write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int tnd_fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int ret = fsync(fd) < 0 ? -errno : 0;
	close(fd);
	return ret;
}

int tnd_file_replace(const char *dir, const char *name, const void *data, size_t len)
{
	char path[PATH_MAX], tmp[PATH_MAX];
	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path) ||
	    (size_t)snprintf(tmp, sizeof(tmp), "%s/.%s.XXXXXX", dir, name) >= sizeof(tmp))
		return -ENAMETOOLONG;
	int fd = mkostemp(tmp, O_CLOEXEC);   /* created 0600 */
	if (fd < 0)
		return -errno;
	int ret = tnd_write_all(fd, data, len);
	if (ret < 0)
		goto err_close;
	/* The umask may only take bits away, but say 0600 explicitly anyway. */
	if (fchmod(fd, 0600) < 0 || fsync(fd) < 0) {
		ret = -errno;
		goto err_close;
	}
	if (close(fd) < 0) {
		ret = -errno;
		goto err_unlink;
	}
	if (rename(tmp, path) < 0) {
		ret = -errno;
		goto err_unlink;
	}
	return tnd_fsync_dir(dir);

err_close:
	close(fd);
err_unlink:
	unlink(tmp);
	return ret;
}
