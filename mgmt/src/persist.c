/*
 * persist.c — writing the running configuration to <data-dir>/config.json.
 *
 * An atomic replace (tnd_file_replace): a reader (the daemon at its next
 * start) sees the old document or the new one, never a torn one. Mode 0600:
 * the document holds the CHAP secrets.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tnd_common.h"
#include "tnd_mgmt.h"

int tnd_mgmt_persist_config(const char *data_dir, const json_t *cfg)
{
	char *text = json_dumps(cfg, JSON_INDENT(2));
	if (!text)
		return -ENOMEM;
	size_t len = strlen(text);
	char *nl = realloc(text, len + 2);
	if (!nl) {
		free(text);
		return -ENOMEM;
	}
	memcpy(nl + len, "\n", 2);
	int ret = tnd_file_replace(data_dir, TND_MGMT_CONFIG_FILE, nl, len + 1);
	free(nl);
	return ret;
}
