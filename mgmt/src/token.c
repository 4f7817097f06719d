/*
 * token.c — the API's bearer token in <data-dir>/api.token.
 *
 * Created once, at the first start, from getrandom(2): 32 bytes written as 64
 * hex digits and a newline. O_CREAT|O_EXCL means two daemons racing on one
 * data directory cannot both write a token: the loser reads the winner's.
 * The file is the only credential of the API, so one that anybody but its
 * owner may read is refused rather than used (and not silently chmod-ed: the
 * token may already have leaked, the admin should know and make a new one).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tnd_common.h"
#include "tnd_mgmt.h"

static int fill_random(unsigned char *buf, size_t len)
{
	size_t got = 0;
	while (got < len) {
		ssize_t n = getrandom(buf + got, len - got, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		got += (size_t)n;
	}
	return 0;
}

/* -EEXIST when somebody else created it first. */
static int create_token(const char *dir, const char *path, char *token, char *err, size_t errlen)
{
	unsigned char raw[TND_MGMT_TOKEN_BYTES];
	char text[TND_MGMT_TOKEN_LEN + 2];
	int ret = fill_random(raw, sizeof(raw));
	if (ret) {
		snprintf(err, errlen, "getrandom: %s", strerror(-ret));
		return ret;
	}
	for (size_t i = 0; i < sizeof(raw); i++)
		snprintf(text + 2 * i, 3, "%02x", raw[i]);
	text[TND_MGMT_TOKEN_LEN] = '\n';
	text[TND_MGMT_TOKEN_LEN + 1] = '\0';
	explicit_bzero(raw, sizeof(raw));

	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		ret = -errno;
		if (ret != -EEXIST)
			snprintf(err, errlen, "cannot create %s: %s", path, strerror(-ret));
		goto out_wipe;
	}
	/* The umask may only take bits away, but say 0600 explicitly anyway. */
	if (fchmod(fd, 0600) < 0 || (ret = tnd_write_all(fd, text, TND_MGMT_TOKEN_LEN + 1)) < 0 ||
	    fsync(fd) < 0) {
		ret = ret ? ret : -errno;
		snprintf(err, errlen, "cannot write %s: %s", path, strerror(-ret));
		goto err_unlink;
	}
	close(fd);
	if ((ret = tnd_fsync_dir(dir)) < 0) {
		snprintf(err, errlen, "cannot sync %s: %s", dir, strerror(-ret));
		goto out_wipe;
	}
	memcpy(token, text, TND_MGMT_TOKEN_LEN);
	token[TND_MGMT_TOKEN_LEN] = '\0';
	ret = 0;
	goto out_wipe;

err_unlink:
	close(fd);
	unlink(path);
out_wipe:
	explicit_bzero(text, sizeof(text));
	return ret;
}

static int load_token(const char *path, char *token, char *err, size_t errlen)
{
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		int ret = -errno;
		if (ret != -ENOENT)
			snprintf(err, errlen, "cannot open %s: %s", path, strerror(-ret));
		return ret;
	}
	struct stat st;
	int ret = 0;
	char buf[TND_MGMT_TOKEN_LEN + 3];
	ssize_t n = 0;
	if (fstat(fd, &st) < 0) {
		ret = -errno;
		snprintf(err, errlen, "cannot stat %s: %s", path, strerror(-ret));
		goto out_close;
	}
	if (!S_ISREG(st.st_mode)) {
		ret = -EINVAL;
		snprintf(err, errlen, "%s is not a regular file", path);
		goto out_close;
	}
	if (st.st_mode & 077) {
		ret = -EACCES;
		snprintf(err, errlen,
			 "%s is accessible by group or others (mode %04o); refusing to use it. "
			 "Treat the token as leaked: delete the file so a new one is made at the "
			 "next start, or chmod 600 it if you are sure",
			 path, (unsigned)(st.st_mode & 07777));
		goto out_close;
	}
	n = read(fd, buf, sizeof(buf));
	if (n < 0) {
		ret = -errno;
		snprintf(err, errlen, "cannot read %s: %s", path, strerror(-ret));
		goto out_close;
	}
	/* Exactly 64 hex digits, optionally followed by one newline. */
	bool ok = n == TND_MGMT_TOKEN_LEN || (n == TND_MGMT_TOKEN_LEN + 1 &&
					      buf[TND_MGMT_TOKEN_LEN] == '\n');
	for (size_t i = 0; ok && i < TND_MGMT_TOKEN_LEN; i++)
		ok = (buf[i] >= '0' && buf[i] <= '9') || (buf[i] >= 'a' && buf[i] <= 'f');
	if (!ok) {
		ret = -EINVAL;
		snprintf(err, errlen, "%s does not hold a token (64 lowercase hex digits); delete it "
			 "to have a new one made", path);
		goto out_close;
	}
	memcpy(token, buf, TND_MGMT_TOKEN_LEN);
	token[TND_MGMT_TOKEN_LEN] = '\0';
out_close:
	explicit_bzero(buf, sizeof(buf));
	close(fd);
	return ret;
}

int tnd_mgmt_token_load_or_create(const char *data_dir, char *token, size_t len, char *err,
				  size_t errlen)
{
	char path[4096];
	if (len < TND_MGMT_TOKEN_LEN + 1)
		return -EINVAL;
	if ((size_t)snprintf(path, sizeof(path), "%s/%s", data_dir, TND_MGMT_TOKEN_FILE) >=
	    sizeof(path))
		return -ENAMETOOLONG;
	int ret = load_token(path, token, err, errlen);
	if (ret != -ENOENT)
		return ret;
	ret = create_token(data_dir, path, token, err, errlen);
	if (ret == -EEXIST)
		ret = load_token(path, token, err, errlen);
	return ret;
}
