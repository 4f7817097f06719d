/* Test-only ram and fault volumes; see testvol.h. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tnd_common.h"
#include "tnd_reactor.h"
#include "testvol.h"

/* ---- ram ---- */

struct ram_vol {
	struct tnd_volume vol;
	uint8_t *data;
	bool owned;
	uint64_t size;
	uint32_t bs;
};

struct ram_ctx {
	struct tnd_msg msg;
	struct tnd_io *io;
	int status;
};

static void ram_complete(struct tnd_msg *m)
{
	struct ram_ctx *c = tnd_container_of(m, struct ram_ctx, msg);
	c->io->cb(c->io, c->status);
}

static int ram_submit(struct tnd_volume *v, struct tnd_io *io)
{
	struct ram_vol *r = tnd_container_of(v, struct ram_vol, vol);
	struct ram_ctx *c = tnd_io_ctx(io, v);
	c->io = io;
	c->status = 0;
	uint64_t off = io->lba * r->bs, len = (uint64_t)io->nblocks * r->bs;
	if (io->type != TND_IO_FLUSH && (off + len > r->size || off + len < off)) {
		c->status = -EINVAL;
	} else {
		uint64_t o = off;
		for (int i = 0; i < io->iovcnt && io->type != TND_IO_FLUSH; i++) {
			size_t n = TND_MIN(io->iov[i].iov_len, off + len - o);
			if (io->type == TND_IO_READ)
				memcpy(io->iov[i].iov_base, r->data + o, n);
			else if (io->type == TND_IO_WRITE)
				memcpy(r->data + o, io->iov[i].iov_base, n);
			o += n;
		}
		if (io->type == TND_IO_UNMAP || io->type == TND_IO_WRITE_ZEROES)
			memset(r->data + off, 0, len);
	}
	c->msg.fn = ram_complete;
	tnd_reactor_send(io->reactor, &c->msg);
	return 0;
}

static void ram_info(struct tnd_volume *v, struct tnd_volume_info *out)
{
	struct ram_vol *r = tnd_container_of(v, struct ram_vol, vol);
	*out = (struct tnd_volume_info){ .block_size = r->bs, .num_blocks = r->size / r->bs,
					 .write_cache = true };
}

static void ram_destroy(struct tnd_volume *v)
{
	struct ram_vol *r = tnd_container_of(v, struct ram_vol, vol);
	if (r->owned)
		free(r->data);
	free(r);
}

static const struct tnd_volume_ops ram_ops = {
	.type = "ram",
	.ctx_size = sizeof(struct ram_ctx),
	.submit = ram_submit,
	.info = ram_info,
	.destroy = ram_destroy,
};

int ram_vol_wrap(uint8_t *data, uint64_t size, uint32_t bs, struct tnd_volume **out)
{
	struct ram_vol *r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	tnd_volume_init(&r->vol, &ram_ops, NULL);
	r->data = data;
	r->size = size;
	r->bs = bs;
	*out = &r->vol;
	return 0;
}

int ram_vol_create(uint64_t size, uint32_t bs, struct tnd_volume **out)
{
	uint8_t *d = calloc(1, size);
	if (!d)
		return -ENOMEM;
	int ret = ram_vol_wrap(d, size, bs, out);
	if (ret < 0) {
		free(d);
		return ret;
	}
	tnd_container_of(*out, struct ram_vol, vol)->owned = true;
	return 0;
}

uint8_t *ram_vol_data(struct tnd_volume *v)
{
	return tnd_container_of(v, struct ram_vol, vol)->data;
}

/* ---- fault ---- */

struct pend {
	uint64_t off;
	uint32_t len;
	bool completed;
	uint64_t cover;            /* flush id that covers it; 0: none yet */
	uint8_t *data;
};

struct fault_vol {
	struct tnd_volume vol;
	uint64_t size;
	uint32_t bs;
	uint8_t *durable;
	struct pend *pend;
	size_t npend, cap;
	uint64_t next_id;          /* write ids for matching completions */
	uint64_t flush_id;
	uint64_t points;
	uint64_t fail_at;
	int fail_err;
	fault_hook_fn hook;
	void *hook_arg;
};

struct fault_ctx {
	struct tnd_msg msg;
	struct fault_vol *f;
	struct tnd_io *io;
	tnd_io_cb cb;
	void *cb_arg;
	uint64_t id;
	int status;
};

static void fault_err_done(struct tnd_msg *m)
{
	struct fault_ctx *c = tnd_container_of(m, struct fault_ctx, msg);
	c->io->cb(c->io, c->status);
}

static void fault_child_done(struct tnd_io *io, int status)
{
	struct fault_ctx *c = tnd_io_ctx(io, io->cb_arg);
	struct fault_vol *f = c->f;
	io->cb = c->cb;
	io->cb_arg = c->cb_arg;
	if (io->type == TND_IO_WRITE) {
		/* Matched by the pending copy's address: unique while pending. */
		for (size_t i = 0; i < f->npend; i++) {
			if ((uint64_t)(uintptr_t)f->pend[i].data == c->id) {
				f->pend[i].completed = status == 0;
				break;
			}
		}
	} else if (io->type == TND_IO_FLUSH && status == 0) {
		/* Everything this flush covers is now durable. */
		size_t k = 0;
		for (size_t i = 0; i < f->npend; i++) {
			struct pend *p = &f->pend[i];
			if (p->cover && p->cover <= c->id) {
				memcpy(f->durable + p->off, p->data, p->len);
				free(p->data);
				continue;
			}
			f->pend[k++] = *p;
		}
		f->npend = k;
	}
	io->cb(io, status);
}

static int fault_submit(struct tnd_volume *v, struct tnd_io *io)
{
	struct fault_vol *f = tnd_container_of(v, struct fault_vol, vol);
	struct fault_ctx *c = tnd_io_ctx(io, v);
	memset(c, 0, sizeof(*c));
	c->f = f;
	c->io = io;
	if (io->type == TND_IO_WRITE || io->type == TND_IO_FLUSH) {
		uint64_t point = f->points++;
		if (f->hook)
			f->hook(f, point, f->hook_arg);
		if (f->fail_err && point == f->fail_at) {
			c->status = f->fail_err;
			c->msg.fn = fault_err_done;
			tnd_reactor_send(io->reactor, &c->msg);
			return 0;
		}
	}
	if (io->type == TND_IO_WRITE) {
		if (f->npend == f->cap) {
			f->cap = f->cap ? f->cap * 2 : 64;
			f->pend = realloc(f->pend, f->cap * sizeof(*f->pend));
		}
		struct pend *p = &f->pend[f->npend++];
		p->off = io->lba * f->bs;
		p->len = io->nblocks * f->bs;
		p->completed = false;
		p->cover = 0;
		p->data = malloc(p->len);
		size_t o = 0;
		for (int i = 0; i < io->iovcnt && o < p->len; i++) {
			size_t n = TND_MIN(io->iov[i].iov_len, p->len - o);
			memcpy(p->data + o, io->iov[i].iov_base, n);
			o += n;
		}
		c->id = (uint64_t)(uintptr_t)p->data;
	} else if (io->type == TND_IO_FLUSH) {
		/* The flush covers the writes that have completed by now. */
		c->id = ++f->flush_id;
		for (size_t i = 0; i < f->npend; i++)
			if (f->pend[i].completed && !f->pend[i].cover)
				f->pend[i].cover = c->id;
	}
	c->cb = io->cb;
	c->cb_arg = io->cb_arg;
	io->cb = fault_child_done;
	io->cb_arg = v;
	int ret = tnd_volume_submit(v->base, io);
	if (ret < 0) {
		io->cb = c->cb;
		io->cb_arg = c->cb_arg;
	}
	return ret;
}

static void fault_info(struct tnd_volume *v, struct tnd_volume_info *out)
{
	tnd_volume_info(v->base, out);
}

static void fault_destroy(struct tnd_volume *v)
{
	struct fault_vol *f = tnd_container_of(v, struct fault_vol, vol);
	for (size_t i = 0; i < f->npend; i++)
		free(f->pend[i].data);
	free(f->pend);
	free(f->durable);
	tnd_volume_destroy(v->base);
	free(f);
}

static const struct tnd_volume_ops fault_ops = {
	.type = "fault",
	.ctx_size = sizeof(struct fault_ctx),
	.submit = fault_submit,
	.info = fault_info,
	.destroy = fault_destroy,
};

int fault_vol_create(struct tnd_volume *base, struct tnd_volume **out)
{
	struct fault_vol *f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	struct tnd_volume_info info;
	tnd_volume_info(base, &info);
	f->bs = info.block_size;
	f->size = info.num_blocks * info.block_size;
	f->durable = malloc(f->size);
	if (!f->durable) {
		free(f);
		return -ENOMEM;
	}
	/* What is on the base now is taken as durable. */
	memcpy(f->durable, ram_vol_data(base), f->size);
	tnd_volume_init(&f->vol, &fault_ops, base);
	*out = &f->vol;
	return 0;
}

struct fault_vol *fault_vol_of(struct tnd_volume *v)
{
	return tnd_container_of(v, struct fault_vol, vol);
}

void fault_set_hook(struct fault_vol *f, fault_hook_fn fn, void *arg)
{
	f->hook = fn;
	f->hook_arg = arg;
}

void fault_fail_at(struct fault_vol *f, uint64_t point, int err)
{
	f->fail_at = point;
	f->fail_err = err;
}

uint64_t fault_points(struct fault_vol *f) { return f->points; }
uint64_t fault_pending(struct fault_vol *f) { return f->npend; }
uint64_t fault_size(struct fault_vol *f) { return f->size; }

void fault_crash_image(struct fault_vol *f, enum crash_mode mode, uint64_t *rng, uint8_t *out)
{
	memcpy(out, f->durable, f->size);
	size_t torn = f->npend ? (size_t)(test_rand(rng) % f->npend) : 0;
	for (size_t i = 0; i < f->npend; i++) {
		const struct pend *p = &f->pend[i];
		bool keep;
		switch (mode) {
		case CRASH_DROP_ALL: keep = false; break;
		case CRASH_KEEP_ALL: keep = true; break;
		default: keep = test_rand(rng) & 1; break;
		}
		if (mode == CRASH_TEAR && i == torn) {
			/* Some 512 B sectors of this write made it, the rest did not. */
			for (uint32_t s = 0; s < p->len; s += 512)
				if (test_rand(rng) & 1)
					memcpy(out + p->off + s, p->data + s, 512);
			continue;
		}
		if (keep)
			memcpy(out + p->off, p->data, p->len);
	}
}
