/*
 * tnd_client — how tandem's own iSCSI initiators log in.
 *
 * tandem-bench and the integration tests' client programs drive tandemd
 * through libiscsi. They must agree on what a session is: a login to the
 * URL's target and LUN with the digests asked for, a timeout so that a hung
 * target ends the run instead of hanging it, and no automatic reconnect,
 * because a test that kills the daemon on purpose or a benchmark whose
 * target dropped the connection must see that, not have it papered over.
 * This library is that one definition, plus READ CAPACITY(16) and the
 * little-endian stores their on-wire data patterns use.
 *
 * Threading: none of its own. A context belongs to the caller and is used
 * by one thread at a time, as libiscsi requires. Errors are printed to
 * stderr with the caller's program name, since every user is a command-line
 * tool whose only report is its output, and returned as -errno.
 */
#ifndef TND_CLIENT_H
#define TND_CLIENT_H

#include <stdbool.h>
#include <stdint.h>

struct iscsi_context;

struct tnd_client_opts {
	const char *prog;        /* prefix of error messages, e.g. "tandem-bench" */
	const char *initiator;   /* initiator IQN */
	bool header_digest;      /* CRC32C header digests */
	bool data_digest;        /* CRC32C data digests (see tnd_client_data_digest) */
};

/* Whether this build's libiscsi can negotiate data digests (1.19 cannot). */
bool tnd_client_data_digest(void);

/*
 * Log in to @url (iscsi://[user%pass@]host[:port]/iqn/lun). On success
 * *@out is the connected context (the caller destroys it with
 * tnd_client_close) and *@lun the URL's LUN. -ENOMEM, -EINVAL (bad URL),
 * -ECONNREFUSED (connect or login failed).
 */
int tnd_client_connect(const struct tnd_client_opts *o, const char *url,
		       struct iscsi_context **out, int *lun);

/* Log out if logged in, and destroy @iscsi (NULL: nothing). */
void tnd_client_close(struct iscsi_context *iscsi);

/* READ CAPACITY(16) of @lun: its logical block size and number of blocks.
 * -EIO when the command fails or the answer cannot be parsed. */
int tnd_client_capacity(const struct tnd_client_opts *o, struct iscsi_context *iscsi, int lun,
			uint32_t *block_size, uint64_t *nblocks);

/* A name for a libiscsi task status (SCSI status or transport outcome),
 * for error messages. */
const char *tnd_client_status_name(int status);

static inline void tnd_client_put_le64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static inline uint64_t tnd_client_get_le64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

#endif
