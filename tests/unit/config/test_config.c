/* Unit tests for the configuration parser: good files parse, bad ones name the field. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"

static void default_config_is_the_demo(void **state)
{
	(void)state;
	struct tnd_config *c;
	assert_int_equal(tnd_config_default(&c), 0);
	assert_int_equal(c->nr_devices, 1);
	assert_string_equal(c->devices[0].name, "demo");
	assert_int_equal(c->devices[0].type, TND_DEV_LSFS);
	assert_int_equal(c->devices[0].size, 1ull << 30);
	assert_true(c->devices[0].write_cache);
	/* Thin backing with room for the log to clean: size + 1/4 + 64 MiB. */
	assert_int_equal(c->devices[0].capacity, (1ull << 30) + (1ull << 28) + (64ull << 20));
	assert_int_equal(c->nr_targets, 1);
	assert_string_equal(c->targets[0].iqn, TND_DEMO_IQN);
	assert_true(c->targets[0].allow_any);
	assert_int_equal(c->targets[0].nr_luns, 1);
	assert_int_equal(c->targets[0].luns[0].lun, 0);
	assert_int_equal(tnd_config_resolve(c, "/data", NULL, 0), 0);
	assert_string_equal(c->devices[0].path, "/data/demo.lsfs");
	tnd_config_free(c);
}

static void full_config_parses(void **state)
{
	(void)state;
	const char *j =
		"{\"portals\":[\"127.0.0.1:3260\",\"[::1]:3260\"],"
		"\"devices\":[{\"name\":\"a\",\"type\":\"flat\",\"size\":\"64MiB\",\"block_size\":4096,"
		"\"path\":\"imgs/a.img\"},"
		"{\"name\":\"b\",\"type\":\"passthrough\",\"path\":\"/dev/sdz\"}],"
		"\"targets\":[{\"iqn\":\"iqn.2026-11.io.tandem:t1\",\"initiators\":"
		"[\"iqn.1994-05.com.redhat:abc\"],\"luns\":{\"0\":\"a\",\"7\":\"b\"}}]}";
	struct tnd_config *c;
	char err[256] = "";
	assert_int_equal(tnd_config_parse(j, &c, err, sizeof(err)), 0);
	assert_int_equal(c->nr_portals, 2);
	assert_int_equal(c->devices[0].block_size, 4096);
	assert_int_equal(c->devices[1].type, TND_DEV_PASSTHROUGH);
	assert_int_equal(c->devices[1].size, 0);
	assert_false(c->targets[0].allow_any);
	assert_int_equal(c->targets[0].nr_initiators, 1);
	assert_int_equal(c->targets[0].nr_luns, 2);
	assert_int_equal(tnd_config_resolve(c, "/d", err, sizeof(err)), 0);
	assert_string_equal(c->devices[0].path, "/d/imgs/a.img");
	assert_string_equal(c->devices[1].path, "/dev/sdz");
	tnd_config_free(c);

	/* compress: off unless asked for, "lz4" or "none". */
	assert_int_equal(tnd_config_parse("{\"devices\":[{\"name\":\"z\",\"size\":4096,"
					  "\"compress\":\"lz4\",\"dedup\":true,\"dedup_index_bytes\":\"1MiB\","
					  "\"direct_io\":true},"
					  "{\"name\":\"y\",\"size\":4096},"
					  "{\"name\":\"x\",\"size\":4096,\"compress\":\"none\"}]}",
					  &c, err, sizeof(err)), 0);
	assert_true(c->devices[0].compress);
	assert_true(c->devices[0].dedup);
	assert_int_equal(c->devices[0].dedup_index_bytes, 1u << 20);
	assert_false(c->devices[1].compress);
	assert_false(c->devices[1].dedup);
	assert_true(c->devices[0].direct_io);
	assert_false(c->devices[1].direct_io);   /* off unless asked for */
	assert_false(c->devices[2].compress);
	/* compress_mode: adaptive unless asked for. */
	assert_int_equal(c->devices[0].compress_mode, TND_CONFIG_CMODE_ADAPTIVE);
	/* dedup_warmup_mbps: the default unless asked for. */
	assert_int_equal(c->devices[0].dedup_warmup_mbps, TND_CONFIG_WARMUP_MBPS_DEFAULT);
	tnd_config_free(c);
	assert_int_equal(tnd_config_parse("{\"devices\":[{\"name\":\"z\",\"size\":4096,"
					  "\"compress\":\"lz4\",\"compress_mode\":\"deferred\","
					  "\"dedup_warmup_mbps\":0},"
					  "{\"name\":\"y\",\"size\":4096,\"compress_mode\":\"inline\","
					  "\"dedup_warmup_mbps\":50}]}",
					  &c, err, sizeof(err)), 0);
	assert_int_equal(c->devices[0].compress_mode, TND_CONFIG_CMODE_DEFERRED);
	assert_int_equal(c->devices[1].compress_mode, TND_CONFIG_CMODE_INLINE);
	assert_int_equal(c->devices[0].dedup_warmup_mbps, 0);
	assert_int_equal(c->devices[1].dedup_warmup_mbps, 50);
	tnd_config_free(c);
}

static void bad_configs_name_the_field(void **state)
{
	(void)state;
	static const struct { const char *json; const char *expect; } cases[] = {
		{ "{", "line 1" },
		{ "[]", "top level" },
		{ "{\"devices\":{}}", "devices: must be an array" },
		{ "{\"devcies\":[]}", "config.devcies: unknown field" },
		{ "{\"devices\":[{\"type\":\"flat\",\"size\":\"1GiB\"}]}", "devices[0].name: missing" },
		{ "{\"devices\":[{\"name\":\"a b\",\"size\":\"1GiB\"}]}", "devices[0].name" },
		{ "{\"devices\":[{\"name\":\"a\",\"size\":\"1GiB\",\"type\":\"zfs\"}]}", "devices[0].type" },
		{ "{\"devices\":[{\"name\":\"a\",\"size\":\"lots\"}]}", "devices[0].size" },
		{ "{\"devices\":[{\"name\":\"a\"}]}", "devices[0].size: missing" },
		{ "{\"devices\":[{\"name\":\"a\",\"size\":1000}]}", "not a multiple" },
		{ "{\"devices\":[{\"name\":\"a\",\"size\":4096,\"block_size\":1024}]}", "devices[0].block_size" },
		{ "{\"devices\":[{\"name\":\"a\",\"type\":\"passthrough\"}]}", "devices[0].path: missing" },
		{ "{\"devices\":[{\"name\":\"a\",\"size\":4096},{\"name\":\"a\",\"size\":4096}]}", "devices[1].name" },
		{ "{\"devices\":[{\"name\":\"a\",\"size\":4096,\"read_only\":1}]}", "devices[0].read_only" },
		{ "{\"devices\":[{\"name\":\"a\",\"type\":\"flat\",\"size\":4096,\"capacity\":8192}]}", "lsfs devices only" },
		{ "{\"devices\":[{\"name\":\"a\",\"size\":512}]}", "multiple of 4 KiB" },
		{ "{\"devices\":[{\"name\":\"a\",\"size\":\"65TiB\"}]}", "at most 64 TiB" },
		{ "{\"devices\":[{\"name\":\"a\",\"size\":4096,\"write_cache\":\"no\"}]}", "write_cache" },
		{ "{\"devices\":[{\"name\":\"a\",\"size\":4096,\"compress\":\"zstd\"}]}", "devices[0].compress" },
		{ "{\"devices\":[{\"name\":\"a\",\"size\":4096,\"compress\":true}]}", "devices[0].compress" },
		{ "{\"devices\":[{\"name\":\"a\",\"size\":4096,\"dedup\":\"yes\"}]}", "devices[0].dedup" },
		{ "{\"devices\":[{\"name\":\"a\",\"size\":4096,\"compress_mode\":\"lazy\"}]}", "devices[0].compress_mode" },
		{ "{\"devices\":[{\"name\":\"a\",\"size\":4096,\"compress_mode\":1}]}", "devices[0].compress_mode" },
		{ "{\"devices\":[{\"name\":\"a\",\"type\":\"flat\",\"size\":4096,\"compress_mode\":\"inline\"}]}", "lsfs devices only" },
		{ "{\"devices\":[{\"name\":\"a\",\"size\":4096,\"dedup_index_bytes\":100}]}", "at least 4096" },
		{ "{\"devices\":[{\"name\":\"a\",\"size\":4096,\"dedup_warmup_mbps\":-1}]}", "devices[0].dedup_warmup_mbps" },
		{ "{\"devices\":[{\"name\":\"a\",\"size\":4096,\"dedup_warmup_mbps\":100001}]}", "devices[0].dedup_warmup_mbps" },
		{ "{\"devices\":[{\"name\":\"a\",\"size\":4096,\"dedup_warmup_mbps\":\"fast\"}]}", "devices[0].dedup_warmup_mbps" },
		{ "{\"devices\":[{\"name\":\"a\",\"type\":\"flat\",\"size\":4096,\"dedup_warmup_mbps\":5}]}", "lsfs devices only" },
		{ "{\"devices\":[{\"name\":\"a\",\"type\":\"flat\",\"size\":4096,\"dedup\":true}]}", "lsfs devices only" },
		{ "{\"devices\":[{\"name\":\"a\",\"type\":\"flat\",\"size\":4096,\"direct_io\":true}]}", "lsfs devices only" },
		{ "{\"devices\":[{\"name\":\"a\",\"size\":4096,\"direct_io\":1}]}", "devices[0].direct_io" },
		{ "{\"devices\":[{\"name\":\"a\",\"type\":\"flat\",\"size\":4096,\"compress\":\"lz4\"}]}", "lsfs devices only" },
		{ "{\"targets\":[{\"iqn\":\"IQN.bad\"}]}", "targets[0].iqn" },
		{ "{\"targets\":[{\"iqn\":\"iqn.2026-11.x:y\",\"luns\":{\"0\":\"nope\"}}]}", "no device named" },
		{ "{\"targets\":[{\"iqn\":\"iqn.2026-11.x:y\",\"luns\":{\"x\":\"a\"}}]}", "targets[0].luns.x" },
		{ "{\"targets\":[{\"iqn\":\"iqn.2026-11.x:y\",\"luns\":{\"99999\":\"a\"}}]}", "LUN must be" },
		{ "{\"targets\":[{\"iqn\":\"iqn.2026-11.x:y\",\"allow_any_initator\":true}]}", "unknown field" },
		{ "{\"targets\":[{\"iqn\":\"iqn.2026-11.x:y\",\"initiators\":[\"bob\"]}]}", "initiators[0]" },
		{ "{\"targets\":[{\"iqn\":\"iqn.2026-11.x:y\"},{\"iqn\":\"iqn.2026-11.x:y\"}]}", "declared twice" },
		{ "{\"portals\":[3260]}", "portals[0]" },
		{ "{\"devices\":[],\"devices\":[]}", "duplicate" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct tnd_config *c = NULL;
		char err[256] = "";
		int ret = tnd_config_parse(cases[i].json, &c, err, sizeof(err));
		if (ret != -EINVAL || !strstr(err, cases[i].expect))
			fail_msg("case %zu (%s): ret %d, message \"%s\", expected \"%s\"", i,
				 cases[i].json, ret, err, cases[i].expect);
		assert_null(c);
	}
}

static void iqn_validation(void **state)
{
	(void)state;
	assert_true(tnd_config_iqn_valid("iqn.2026-11.io.tandem:demo"));
	assert_true(tnd_config_iqn_valid("iqn.1991-05.com.microsoft:host1"));
	assert_true(tnd_config_iqn_valid("eui.02004567a425678d"));
	assert_true(tnd_config_iqn_valid("naa.52004567ba64678d"));
	assert_false(tnd_config_iqn_valid("iqn.26-11.io"));
	assert_false(tnd_config_iqn_valid("iqn.2026-11.IO.tandem"));
	assert_false(tnd_config_iqn_valid("eui.123"));
	assert_false(tnd_config_iqn_valid("foo"));
	assert_false(tnd_config_iqn_valid("iqn.2026-11.a b"));
}

static void acls_parse_and_validate(void **state)
{
	(void)state;
	const char *j =
		"{\"devices\":[{\"name\":\"a\",\"size\":\"64MiB\"}],"
		"\"targets\":[{\"iqn\":\"iqn.2026-11.io.tandem:t\",\"luns\":{\"0\":\"a\",\"1\":\"a\"},"
		"\"acls\":[{\"initiator\":\"iqn.1991-05.com.microsoft:hv1\",\"luns\":[1],"
		"\"chap\":{\"user\":\"hv1\",\"secret\":\"0123456789abcdef\"},"
		"\"mutual_chap\":{\"user\":\"tgt\",\"secret\":\"fedcba9876543210\"}},"
		"{\"initiator\":\"iqn.1994-05.com.redhat:kvm\"}]}]}";
	struct tnd_config *c;
	char err[256] = "";
	assert_int_equal(tnd_config_parse(j, &c, err, sizeof(err)), 0);
	assert_true(c->has_secrets);
	struct tnd_config_target *t = &c->targets[0];
	assert_int_equal(t->nr_acls, 2);
	assert_string_equal(t->acls[0].initiator, "iqn.1991-05.com.microsoft:hv1");
	assert_int_equal(t->acls[0].nr_luns, 1);
	assert_int_equal(t->acls[0].luns[0], 1);
	assert_string_equal(t->acls[0].chap->user, "hv1");
	assert_string_equal(t->acls[0].mutual_chap->secret, "fedcba9876543210");
	assert_null(t->acls[1].luns);
	assert_null(t->acls[1].chap);
	tnd_config_free(c);

	static const struct { const char *acl; const char *expect; } bad[] = {
		{ "{\"luns\":[0]}", "acls[0].initiator: missing" },
		{ "{\"initiator\":\"nope\"}", "acls[0].initiator" },
		{ "{\"initiator\":\"iqn.2026-11.x:i\",\"luns\":[\"0\"]}", "acls[0].luns[0]" },
		{ "{\"initiator\":\"iqn.2026-11.x:i\",\"chap\":{\"user\":\"u\",\"secret\":\"short\"}}", "chap.secret: must be 12" },
		{ "{\"initiator\":\"iqn.2026-11.x:i\",\"chap\":{\"user\":\"u\"}}", "chap.secret: missing" },
		{ "{\"initiator\":\"iqn.2026-11.x:i\",\"mutual_chap\":{\"user\":\"u\",\"secret\":\"0123456789abc\"}}", "needs chap" },
		{ "{\"initiator\":\"iqn.2026-11.x:i\",\"chap\":{\"user\":\"u\",\"secret\":\"0123456789abc\"},\"mutual_chap\":{\"user\":\"t\",\"secret\":\"0123456789abc\"}}", "must differ" },
		{ "{\"initiator\":\"iqn.2026-11.x:i\",\"chap\":{\"user\":\"u\",\"secret\":\"0123456789abc\",\"pw\":1}}", "unknown field" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char doc[512];
		snprintf(doc, sizeof(doc), "{\"targets\":[{\"iqn\":\"iqn.2026-11.x:y\",\"acls\":[%s]}]}",
			 bad[i].acl);
		c = NULL;
		err[0] = 0;
		int ret = tnd_config_parse(doc, &c, err, sizeof(err));
		if (ret != -EINVAL || !strstr(err, bad[i].expect))
			fail_msg("acl case %zu: ret %d, \"%s\", expected \"%s\"", i, ret, err, bad[i].expect);
	}
}

/* A config file with secrets readable by others is refused; 0600 is fine. */
static void secrets_need_a_private_file(void **state)
{
	(void)state;
	char path[] = "/tmp/tnd-cfg.XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	const char *j = "{\"targets\":[{\"iqn\":\"iqn.2026-11.x:y\",\"acls\":[{\"initiator\":"
			"\"iqn.2026-11.x:i\",\"chap\":{\"user\":\"u\",\"secret\":\"0123456789abc\"}}]}]}";
	assert_int_equal(write(fd, j, strlen(j)), (ssize_t)strlen(j));
	close(fd);
	struct tnd_config *c = NULL;
	char err[512] = "";
	assert_int_equal(chmod(path, 0644), 0);
	assert_int_equal(tnd_config_load(path, &c, err, sizeof(err)), -EACCES);
	assert_non_null(strstr(err, "chmod 600"));
	assert_null(c);
	assert_int_equal(chmod(path, 0600), 0);
	assert_int_equal(tnd_config_load(path, &c, err, sizeof(err)), 0);
	tnd_config_free(c);
	unlink(path);
}

/* The sample shipped in packaging/ must stay valid. */
static void sample_config_is_valid(void **state)
{
	(void)state;
	struct tnd_config *c = NULL;
	char err[512] = "";
	int ret = tnd_config_load(TND_SRC_DIR "/packaging/tandem.sample.json", &c, err, sizeof(err));
	if (ret)
		fail_msg("%s", err);
	assert_int_equal(c->nr_devices, 2);
	assert_int_equal(c->nr_targets, 2);
	tnd_config_free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(default_config_is_the_demo),
		cmocka_unit_test(full_config_parses),
		cmocka_unit_test(bad_configs_name_the_field),
		cmocka_unit_test(iqn_validation),
		cmocka_unit_test(sample_config_is_valid),
		cmocka_unit_test(acls_parse_and_validate),
		cmocka_unit_test(secrets_need_a_private_file),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
