/* Generic parts of the volume interface; see tnd_volume.h. */
#include <errno.h>
#include <string.h>

#include "tnd_common.h"
#include "tnd_volume.h"

void tnd_volume_init(struct tnd_volume *vol, const struct tnd_volume_ops *ops,
		     struct tnd_volume *base)
{
	vol->ops = ops;
	vol->base = base;
	/* Slices grow bottom-up: ours starts where the base's stack ends. */
	size_t below = base ? base->io_size : sizeof(struct tnd_io);
	size_t ctx = (ops->ctx_size + 15) & ~(size_t)15;
	vol->ctx_offset = below - sizeof(struct tnd_io);
	vol->io_size = below + ctx;
}

void tnd_volume_stats_json(struct tnd_volume *vol, json_t *out)
{
	struct tnd_volume_info info;
	tnd_volume_info(vol, &info);
	json_object_set_new(out, "type", json_string(vol->ops->type));
	json_object_set_new(out, "block_size", json_integer(info.block_size));
	json_object_set_new(out, "num_blocks", json_integer((json_int_t)info.num_blocks));
	json_object_set_new(out, "size", json_integer((json_int_t)(info.num_blocks * info.block_size)));
	json_object_set_new(out, "state",
			    json_string(info.state == TND_VOLUME_ONLINE ? "online" : "failed"));
	json_object_set_new(out, "write_cache", json_boolean(info.write_cache));
	/* Bottom-up, so where two layers name the same counter the upper one,
	 * nearer to the initiator, wins (e.g. the accounting layer's
	 * read_ops over the backing file's). */
	struct tnd_volume *chain[16];
	unsigned n = 0;
	for (struct tnd_volume *v = vol; v && n < TND_ARRAY_SIZE(chain); v = v->base)
		chain[n++] = v;
	while (n-- > 0)
		if (chain[n]->ops->stats_json)
			chain[n]->ops->stats_json(chain[n], out);
}

int tnd_volume_resize(struct tnd_volume *vol, uint64_t num_blocks)
{
	if (!vol->ops->resize)
		return -EOPNOTSUPP;
	return vol->ops->resize(vol, num_blocks);
}

void tnd_volume_destroy(struct tnd_volume *vol)
{
	if (vol)
		vol->ops->destroy(vol);
}

size_t tnd_iov_length(const struct iovec *iov, int iovcnt)
{
	size_t n = 0;
	for (int i = 0; i < iovcnt; i++)
		n += iov[i].iov_len;
	return n;
}

void tnd_iov_zero(const struct iovec *iov, int iovcnt)
{
	for (int i = 0; i < iovcnt; i++)
		memset(iov[i].iov_base, 0, iov[i].iov_len);
}
