/*
 * tnd_file_replace and friends: the file holds exactly the new bytes with
 * mode 0600, no temporary file is left behind, and a replace that fails
 * leaves the old file as it was.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "tnd_common.h"

struct fx {
	char dir[64];
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	strcpy(f->dir, "/tmp/tnd-file-XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	DIR *d = opendir(f->dir);
	struct dirent *e;
	while (d && (e = readdir(d))) {
		char p[512];
		if (e->d_name[0] == '.' && (!e->d_name[1] || (e->d_name[1] == '.' && !e->d_name[2])))
			continue;
		snprintf(p, sizeof(p), "%s/%s", f->dir, e->d_name);
		unlink(p);
	}
	if (d)
		closedir(d);
	rmdir(f->dir);
	free(f);
	return 0;
}

static size_t slurp(const char *dir, const char *name, char *buf, size_t cap)
{
	char p[512];
	snprintf(p, sizeof(p), "%s/%s", dir, name);
	int fd = open(p, O_RDONLY);
	assert_true(fd >= 0);
	ssize_t n = read(fd, buf, cap);
	assert_true(n >= 0);
	close(fd);
	return (size_t)n;
}

static unsigned entries(const char *dir)
{
	unsigned n = 0;
	DIR *d = opendir(dir);
	struct dirent *e;
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

static void replace_writes_whole_file(void **state)
{
	struct fx *f = *state;
	char buf[64];
	assert_int_equal(tnd_file_replace(f->dir, "a.json", "first version\n", 14), 0);
	assert_int_equal(slurp(f->dir, "a.json", buf, sizeof(buf)), 14);
	assert_memory_equal(buf, "first version\n", 14);
	/* A shorter replacement leaves nothing of the longer original. */
	assert_int_equal(tnd_file_replace(f->dir, "a.json", "v2", 2), 0);
	assert_int_equal(slurp(f->dir, "a.json", buf, sizeof(buf)), 2);
	assert_memory_equal(buf, "v2", 2);
	struct stat st;
	char p[512];
	snprintf(p, sizeof(p), "%s/a.json", f->dir);
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(entries(f->dir), 1);   /* no temporary file left */
	assert_int_equal(tnd_fsync_dir(f->dir), 0);
}

static void failed_replace_keeps_old_file(void **state)
{
	struct fx *f = *state;
	char buf[64], name[300];
	assert_int_equal(tnd_file_replace(f->dir, "b", "old", 3), 0);
	/* A missing directory: nothing is written anywhere. */
	char missing[128];
	snprintf(missing, sizeof(missing), "%s/nope", f->dir);
	assert_int_equal(tnd_file_replace(missing, "b", "new", 3), -ENOENT);
	assert_int_equal(tnd_fsync_dir(missing), -ENOENT);
	/* A name the file system refuses (too long for one component). */
	memset(name, 'n', sizeof(name) - 1);
	name[sizeof(name) - 1] = '\0';
	assert_int_equal(tnd_file_replace(f->dir, name, "new", 3), -ENAMETOOLONG);
	assert_int_equal(slurp(f->dir, "b", buf, sizeof(buf)), 3);
	assert_memory_equal(buf, "old", 3);
	assert_int_equal(entries(f->dir), 1);
}

static void write_all_writes_everything(void **state)
{
	struct fx *f = *state;
	char p[512];
	snprintf(p, sizeof(p), "%s/big", f->dir);
	int fd = open(p, O_WRONLY | O_CREAT, 0600);
	assert_true(fd >= 0);
	size_t len = 3u << 20;
	char *data = malloc(len);
	for (size_t i = 0; i < len; i++)
		data[i] = (char)(i * 7);
	assert_int_equal(tnd_write_all(fd, data, len), 0);
	close(fd);
	char *back = malloc(len);
	assert_int_equal(slurp(f->dir, "big", back, len), len);
	assert_memory_equal(back, data, len);
	free(back);
	free(data);
	assert_int_equal(tnd_write_all(-1, "x", 1), -EBADF);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(replace_writes_whole_file, setup, teardown),
		cmocka_unit_test_setup_teardown(failed_replace_keeps_old_file, setup, teardown),
		cmocka_unit_test_setup_teardown(write_all_writes_everything, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
