/*
 * The lsfs volume: write pipeline, reads, flushes, checkpoints and garbage
 * collection, all on the home reactor.
 *
 * Write pipeline. A write is turned into descriptors and 4 KiB payload
 * slots appended to the open record in the open segment's RAM buffer (one
 * copy, which also lets reads of not-yet-written blocks be served from
 * RAM). The map is updated at once. Up to opts.log_writes backing writes
 * are in flight, issued in log order, each carrying everything sealed
 * since the previous one, so a burst of concurrent writes becomes one
 * large sequential write (see kick() for when a small record may go out
 * while others are in flight). They may land in any order, as buffered
 * writes are written back in any order; what makes durability a plain
 * number is that written_seq advances only over a prefix of them:
 * written_seq is the last record such that it and every record before it
 * are on the backing volume, durable_seq the last one covered by a
 * completed backing flush. A FUA write and any write without write cache
 * wait in wait_written for their record, then with a FLUSH or a checkpoint
 * in wait_durable for a backing flush, which all waiters share (group
 * commit). Both queues are FIFOs ordered by the sequence number they need.
 *
 * Acknowledgement. With the write cache on (WCE=1), a write is
 * acknowledged once it is in the segment buffer: in RAM, which is what
 * WCE=1 tells the initiator (design.md's durability contract), as a disk
 * acknowledges from its cache. acked_rec is the newest record holding such
 * a write; a FLUSH waits for every record up to it to be written and
 * flushed, and makes the open record go out at once if it is one of them.
 * Waiting for the backing write instead (a buffered write, handed to the
 * kernel's io-wq) made every write's latency include that hand-off and
 * the lingering that lets records grow, for no durability: the page
 * cache is not stable storage either. What it costs: a crash of tandemd
 * alone (the host stays up) now loses the unflushed writes still in the
 * segment buffers, as a power loss does, where before the page cache
 * kept them. Writes are bounded by the buffers (-EAGAIN below).
 *
 * Segments. FREE -> NEXT (reserved as the successor, named in every record
 * of the segment before it) -> OPEN -> USED -> DEAD (no live block) ->
 * FREE. The last step, reuse, needs care: after a crash, recovery starts
 * from the newest durable checkpoint C (the base) and replays the log
 * written after C's tail, and neither may be spoilt by the new life of a
 * segment. A dead segment S becomes FREE in one of two ways:
 *
 *  - by a checkpoint taken after S died, once it is durable (S is free in
 *    it, and nothing it maps or replays is in S); or
 *  - by reclaim, without a checkpoint, when (a) S was opened before C's
 *    tail segment (S.seg_seq < C.replay_seg_seq, base_replay_seq here),
 *    and (b) the record that took S's last live block (dead_rec) is
 *    durable. Why that is enough: by (a) replay from C never reads S's
 *    old records (the log after C's tail is in segments opened later);
 *    C's map may still point into S, but every such entry was superseded
 *    (overwritten, moved by GC, or unmapped by a TRIM descriptor) by a
 *    record after C, the last of them at dead_rec at the latest, and by
 *    (b) that record and everything before it in the log is durable, so
 *    replay applies all of them before it can reach anything written into
 *    S's new life (which comes later in the log). A TRIM or an overwrite
 *    can therefore not be lost, nor a stale block resurrected: the records
 *    that carry them live in segments opened after C, which (a) keeps
 *    from reuse until a newer checkpoint is durable, and that checkpoint
 *    has applied them. Recovery may also pick a newer checkpoint C' that
 *    was written but not yet known durable: S is either free in C'
 *    (it died before C' was taken) or its killer is after C''s tail and
 *    durable, the same argument. Replay must accept S as a successor even
 *    though C lists it as used: open.c does, when the map replayed so far
 *    holds no block in S.
 *   Reclaim keeps the invariant recovery's sequence-number jump relies on:
 *   a segment opened after the base checkpoint has a seg_seq above
 *   base_replay_seq, so it is reused at most once before a newer durable
 *   checkpoint. Reclaim costs a backing flush (shared with anyone else's),
 *   not a copy of the whole map; checkpoints are then scheduled only to
 *   bound replay (see ckpt_due), and dead segments that replay would read
 *   (ndead_locked: hot data that died young) wait for one.
 *
 * Reclaim with compression and dedup. The argument above is about map
 * entries, never payload bytes (replay applies descriptors and reads no
 * payload), so it holds when "live" counts the right thing: a segment's
 * live is the number of chunks whose map entry points into it, a payload
 * shared by n chunks counting n, whether they got it by a DATA or by a
 * DEDUP descriptor (live_sec, its stored sectors with shared payloads
 * counted once, only ranks GC victims). So S is DEAD, and dead_rec set,
 * only when the last chunk, sharers included, has been written elsewhere,
 * unmapped or moved, and each of those steps is a descriptor in the log;
 * replay's successor test counts the same way (open.c: every DATA, DEDUP
 * and TRIM descriptor adjusts the live count of the segment it leaves and
 * enters). A packed block holds payloads of one segment only, so sector
 * packing changes nothing here. The writer never makes a new reference
 * into a dead segment: the index forgets a payload with its last
 * reference, and try_share() also checks the candidate's segment is
 * USED/OPEN in the same life (seg_seq) and not the GC victim. The index
 * warm-up after open, which refills the index from the log, adds an entry
 * only for a payload that is referenced at that very moment, in the same
 * segment life as the bytes it read, outside GC's victims (the argument is
 * under "Index warm-up" below), so the invariant holds for its entries too.
 *
 * Garbage collection reads a whole victim segment in one backing read
 * and collects the chunks that still map into it: from its records, or,
 * with dedup (a shared payload's sharers are named by records elsewhere),
 * by one pass over the map, sorted by payload so that a shared payload
 * moves once and its sharers follow it with DEDUP descriptors. Each move
 * is checked against the map right before the append, so a block
 * overwritten meanwhile is not resurrected. The victim stays pinned
 * (readers) for the whole pass: emptied by writers while the pass waits
 * for a buffer, it must not be reused under the listed moves (its new life
 * could put a payload at a listed address). The stored bytes, LZ4 or not,
 * their length and CRC move unchanged: a block that was already corrupt
 * stays unreadable rather than being blessed with a new CRC. The same
 * holds for mapped blocks a victim's records cannot explain (a damaged
 * log replayed short of the records that had moved them, the segment
 * written again since): GC then collects by the map pass and moves them
 * as they are, packed or shared ones too, so reads of them keep failing
 * their CRC instead of the segment being skipped forever.
 *
 * Hot/cold separation. A block GC moves has survived a segment's life:
 * it is cold, and appended among the clients' fresh (hot) writes it makes
 * every segment a mix that dies slowly. So a pass normally stages its moves
 * instead: the stored bytes are copied to a RAM stage (from one or more
 * victims, room for two segments), and once a segment's worth is staged,
 * at the next segment boundary (make_room closed the clients' open segment
 * and is about to open the next) it is appended as a segment of its own,
 * filled to the end, every record flagged GC; what does not fit stays
 * staged for the next one (a half-empty GC segment would only have to be
 * cleaned again: that first version wrote 20 % more). The
 * log stays one chain (client segment, GC segment, client segment:
 * consecutive records, each segment naming its predecessor), so replay
 * needs nothing new. Why it is crash-safe, and keeps reuse after a flush
 * valid: staging changes nothing, neither map nor live counts nor log; a
 * staged block stays mapped (and is read) at its old address until the
 * record that moves it is appended and applied, and the move is checked
 * against the map right then (dropped if the block was overwritten,
 * unmapped or moved meanwhile). A victim therefore becomes DEAD only
 * through records in the log, and its reuse waits for the durability of
 * the record that emptied it, as above. The victim is pinned (readers)
 * from staging until its last staged move is appended: emptied by writers
 * meanwhile, it must not get a new life that could put another payload at
 * a staged address (the check compares addresses); when the writers empty
 * it, its staged moves are voided (address 0) and it is unpinned at once
 * (a pinned dead segment would count as free but could not be opened). A
 * stage that finds no room at all is dropped. A crash loses only the
 * stage. A GC segment always holds a record (it is opened only with a
 * staged block still live): replay finds a successor by its first record.
 * The fallback is the old mixing: an explicit pass (tnd_lsfs_gc_run), the
 * gc_mix option, fewer than three free segments, or writers waiting for
 * space append the moves at once among the clients' writes, so GC never
 * waits for a boundary while the store fills up, the 1/32-dead victim rule
 * and the 'store full' fail-fast work as before (a stage that finds no room
 * at all is dropped, unpinning its victims), and an idle log gets its stage
 * appended after a tick without a record.
 *
 * Deferred records. Invariant: no record with the DEFERRED descriptor
 * flag, and no map aux with the deferred mark, reaches the disk before
 * the superblock with LSFS_INCOMPAT_DEFERRED is durable in both copies.
 * The bit is set lazily, by one asynchronous superblock update on home
 * that the first chunk a mode wants deferred starts; until it lands such
 * chunks are compressed inline (see "Deferred mark").
 *
 * Partial chunks (512 B volumes) are merged with the chunk's current
 * content at append time: from RAM when it is there, else from a copy read
 * beforehand and still current (same pba); if the chunk moved on while we
 * waited, the copy is read again.
 */
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "lsfs_int.h"
#include "tnd_compress.h"
#include "tnd_dedup.h"

#define LSFS_NBUF 3
#define LSFS_PRE_MAX_BYTES (8u << 20)  /* larger writes are staged at home */
#define LSFS_MAX_WRITES 8             /* most log writes in flight (opts.log_writes) */
#define LSFS_GC_RESERVE 2u            /* segments only GC may take */

struct lsfs;
struct lsfs_waiter;
struct close_req;
typedef void (*lsfs_wait_fn)(struct lsfs_waiter *w, int status);

struct lsfs_waiter {
	struct lsfs_waiter *next;
	uint64_t need;
	lsfs_wait_fn fn;
};

struct lsfs_wq {
	struct lsfs_waiter *head, *tail;
};

struct lsfs_buf {
	uint8_t *data;
	uint32_t seg;
	uint64_t seg_seq;
	uint32_t fill;                 /* bytes appended */
	uint32_t sealed_end;           /* bytes in sealed records */
	uint64_t sealed_seq;           /* last sealed record */
	uint32_t issued;               /* bytes handed to the backing volume */
	uint32_t done;                 /* bytes written */
	bool active;                   /* holds segment @seg's data */
	bool gc_only;                  /* a GC-only segment: its records say so (LSFS_REC_F_GC) */
};

struct lsfs_child;
typedef void (*lsfs_child_fn)(struct lsfs_child *c, int status);

struct lsfs_child {
	struct lsfs *ls;
	lsfs_child_fn fn;
	void *arg;
	uint64_t u64;
	struct iovec iov;
	struct tnd_io io;              /* must be last: sized for the base's stack */
};

enum io_stage {
	IO_NEW,
	IO_PREP,                       /* reading chunks for read-modify-write */
	IO_QUEUED,                     /* in the append queue */
	IO_WAIT,                       /* appended, waiting for written/durable */
};

struct rd_slot {
	uint64_t iov_off;
	uint32_t s, e;                 /* byte range within the chunk */
	uint32_t crc;
	uint32_t seg;
	uint64_t pba;
	uint16_t aux;                  /* the map entry's: where in pba, length, LZ4 */
	uint32_t boff;                 /* first bounce block */
};

/* Dedup state of one full chunk of a write, from dd_prep() to the append. */
struct dd_chunk {
	struct tnd_dedup_fp fp;
	uint64_t val;                  /* the index's candidate: dd_val(loc, aux) */
	uint64_t seg_seq;              /* the candidate segment's life when looked up */
	uint8_t *raw;                  /* its stored bytes as read (from its block), or NULL */
	bool have_fp;
	bool cand;
};

/*
 * Recently verified candidates' stored bytes, by index value: a block
 * written over and over (a template, a zeroed-then-stamped pattern) is
 * compared against this copy instead of being read from disk for every
 * write. Valid while the payload's segment is in the same life.
 */
#define DD_CACHE_N 64u

struct dd_cache_ent {
	uint64_t val;                  /* dd_val; 0: empty */
	uint64_t seg_seq;
	uint8_t *raw;                  /* 2 x 4 KiB from the payload's block */
};

/*
 * A full chunk's write stages, done before the home reactor (see "Off-home
 * stages" above lsfs_submit): what store_chunk() would compute.
 */
struct pre_chunk {
	struct tnd_dedup_fp fp;
	const uint8_t *pay;            /* the payload: in the caller's buffer, or after pre[] */
	uint32_t crc;                  /* of pay[0, len) */
	uint16_t len;                  /* 0: all zero */
	bool lz4;
	bool deferred;                 /* stored raw, compression deferred (DEFERRED mark) */
	bool defer_held;               /* wanted deferring, compressed inline: the store is
					* not yet marked for DEFERRED records (dm_start) */
	bool have_fp;
	bool valid;                    /* a full chunk whose stages ran */
};

#define PRE_LZ4 1u                     /* compress */
#define PRE_FP  2u                     /* fingerprint */

/*
 * Adaptive compression's saturation signal, per reactor that runs write
 * stages (no locks: each meter is touched by its own reactor only). The
 * share of wall time the reactor spent in write stages over the last
 * window; above METER_BUSY_PM per mille with LZ4 on, LZ4 is what saturates
 * it, so it defers for METER_HOLD_NS and then compresses for a window again
 * to re-measure. Two clock reads (vDSO, no syscall) per staged range. On
 * the 2-CPU bench VM (bench/results/2026-11-22-vm-dedup.md, "Adaptive
 * compression") a 256 KiB sequential text stream at QD32 deferred 85-94 %
 * of its chunks, 4 KiB text, random and duplicate streams at QD32 none.
 */
#define METER_WIN_NS   (20ull * 1000000ull)
#define METER_HOLD_NS  (200ull * 1000000ull)
#define METER_BUSY_PM  500u
/* A staged chunk takes 5-10 us (LZ4 at 550-800 MB/s, CRC, fingerprint).
 * Wall time, not CPU time, on purpose: a reactor that shares saturated
 * CPUs waits for one inside its stages, and that is saturation too. But a
 * single preemption (a few ms) must not make one 4 KiB chunk look like a
 * busy window: a sample counts at most this much per chunk. */
#define METER_CHUNK_MAX_NS 250000ull

struct stage_meter {
	uint64_t win_start;            /* 0: no window open */
	uint64_t busy;                 /* ns in stages since win_start */
	uint64_t defer_until;          /* deferring while now < this */
};

static bool meter_defer(const struct stage_meter *m, uint64_t now)
{
	return now < m->defer_until;
}

/* Stages of @n chunks ran from @t0 to @t1 (compressing unless @deferring). */
static void meter_add(struct stage_meter *m, uint64_t t0, uint64_t t1, uint64_t n, bool deferring)
{
	if (deferring) {
		/* Only compressing windows are measured: the hold ends, then
		 * a fresh window decides again. */
		m->win_start = 0;
		return;
	}
	if (!m->win_start || t0 - m->win_start > 4 * METER_WIN_NS) {
		m->win_start = t0;      /* idle since: a new window */
		m->busy = 0;
	}
	m->busy += TND_MIN(t1 - t0, n * METER_CHUNK_MAX_NS);
	uint64_t el = t1 - m->win_start;
	if (el < METER_WIN_NS)
		return;
	if (m->busy * 1000 >= el * METER_BUSY_PM)
		m->defer_until = t1 + METER_HOLD_NS;
	m->win_start = 0;
}

struct lsfs_helper {
	struct tnd_reactor *r;
	struct tnd_compress_ctx *cctx; /* made and used on @r only */
	bool cctx_failed;
	unsigned rr;                   /* @r's next partner for half a large write; @r only */
	struct stage_meter meter;      /* @r only */
};

struct lsfs_ioctx {
	struct tnd_msg msg;
	struct lsfs_waiter w;
	struct lsfs_ioctx *qnext;
	struct lsfs *ls;
	struct tnd_io *io;
	int status;
	int pending;
	bool in_submit;
	bool durable;
	bool space_ok;
	uint8_t stage;
	uint64_t b0, b1;               /* byte range */
	uint64_t c0, c1;               /* chunk range */
	uint64_t cursor;               /* next chunk to append */
	uint64_t last_rec;
	uint8_t *edge;                 /* 2 x 4 KiB old content of head/tail chunk, then
					* 2 x 8 KiB for their stored bytes as read */
	uint64_t edge_loc[2];          /* which payload edge[] holds (lsfs_ment_loc); 0: none */
	struct rd_slot *slots;
	uint8_t *bounce;
	uint32_t nslots;
	struct dd_chunk *dd;           /* per chunk of a write with dedup on, or NULL */
	uint8_t *ddbuf;                /* 8 KiB per candidate read from disk */
	struct pre_chunk *pre;         /* per chunk, from the off-home stages, or NULL */
	struct lsfs_ioctx *gnext;      /* the home gate's FIFO */
	int parts;                     /* stage parts still running on other reactors */
};

/* Dedup: a shared payload moves once; its other sharers follow it with
 * DEDUP descriptors as long as the chunk that got the copy still maps it. */
struct gc_grp {
	uint64_t old;                  /* the payload being moved (lsfs_ment_loc) */
	uint64_t new_loc;              /* its new address (0: not moved yet) */
	uint64_t lba;                  /* the chunk that got the copy */
};

/* A staged victim: pinned until the moves before stg[end] are appended. */
struct stg_victim {
	uint32_t seg;
	uint32_t end;
};

/* A move staged for a GC-only segment. */
struct gc_stage_ent {
	uint64_t lba;
	uint64_t loc;                  /* where its payload was when staged */
	uint32_t off;                  /* its stored bytes in stg_buf */
	uint32_t sec;                  /* payload sectors it adds (0: a sharer following) */
};

struct lsfs {
	struct tnd_volume vol;
	struct tnd_reactor *home;
	struct tnd_lsfs_opts opts;
	struct lsfs_sb sb;
	uint32_t seg_blocks;
	uint64_t num_blocks;
	struct lsfs_map map;
	struct lsfs_seginfo *segs;
	uint32_t *readers;             /* in-flight reads per segment: no reuse meanwhile */
	uint64_t *dead_rec;            /* DEAD segments: the record that emptied it */
	uint32_t nfree;
	uint32_t ndead;
	bool failed;
	bool closing;

	/* log head */
	uint64_t next_rec_seq;
	uint64_t max_seg_seq;
	struct lsfs_buf bufs[LSFS_NBUF];
	struct lsfs_buf *cur;
	uint32_t next_seg;
	uint64_t cur_prev_seq;         /* seg_seq of the segment before cur in the log */
	uint32_t tail_seg;
	uint32_t tail_off;
	uint64_t tail_seg_seq;
	bool rec_open;
	uint32_t rec_off;
	uint32_t rec_ndesc;
	uint32_t rec_sec;              /* payload sectors in the open record */
	uint64_t rec_seq;
	uint64_t acked_rec;            /* newest record holding a write acknowledged from RAM */

	/* pipeline: log writes in flight, a ring in issue (= log) order */
	struct lsfs_wr {
		struct lsfs_buf *b;
		uint32_t end;          /* b->done once this and all before it are written */
		uint64_t seq;          /* the last record it carries */
		bool done;
	} wr[LSFS_MAX_WRITES];
	uint32_t wr_head, wr_n;
	uint64_t written_seq;
	uint64_t durable_seq;
	bool flush_busy;
	uint64_t flush_target;
	struct lsfs_wq wait_written, wait_durable;
	struct lsfs_ioctx *aq_head, *aq_tail;
	bool kick_pending;
	struct tnd_msg kick_msg;
	bool pumping;

	/* checkpoint */
	bool ckpt_busy;
	uint64_t ckpt_seq;
	uint8_t *ckpt_buf;
	size_t ckpt_len;
	uint64_t *ckpt_frees;          /* seg_seq + 1 of segments dead in the snapshot, else 0 */
	uint64_t ckpt_replay_seq;      /* replay_seg_seq of the snapshot in flight */
	uint64_t base_replay_seq;      /* ... of the newest durable checkpoint */
	uint64_t last_ckpt_bytes;      /* size of the newest checkpoint */
	uint64_t log_since_ckpt;       /* log bytes issued since the last snapshot */
	struct lsfs_waiter ckpt_w;
	tnd_done_cb ckpt_cb;
	void *ckpt_cb_arg;
	uint32_t segs_since_ckpt;

	/* reclaiming dead segments by a flush instead of a checkpoint */
	bool reclaim_busy;
	struct lsfs_waiter reclaim_w;
	uint32_t nreclaim_pending;     /* dead, old enough, waiting for their killer to be durable */
	uint32_t ndead_locked;         /* dead, but in the newest durable checkpoint's replay */
	tnd_done_cb reclaim_cb;
	void *reclaim_cb_arg;

	/* batching small records */
	struct tnd_timer linger;
	bool linger_armed;
	bool rec_urgent;               /* the open record holds a write someone waits to be durable */
	uint32_t linger_ndesc;         /* descriptors in the open record when the timer was armed */
	uint64_t linger_start;
	uint32_t linger_misses;        /* recent lingers that caught nothing */
	uint32_t linger_skip;          /* records to seal at once before trying again */

	/* gc */
	bool gc_busy;
	bool gc_wait_buf;
	uint32_t gc_victim;
	bool gc_pinned;                /* readers[gc_victim] held for the whole pass */
	uint8_t *gc_buf;
	uint64_t *gc_locs;             /* lsfs_ment_loc of live payloads found in the victim */
	uint64_t *gc_lbas;             /* the chunk mapping each */
	uint8_t *gc_secs;              /* the sectors each payload is stored in (1..8) */
	uint32_t gc_cap;               /* room in gc_locs/gc_lbas/gc_secs */
	struct gc_grp gc_grp;          /* dedup: the shared payload the pass is moving */
	uint32_t gc_nmoves, gc_next;
	bool *gc_skip;
	tnd_done_cb gc_cb;
	void *gc_cb_arg;
	bool gc_stalled;               /* GC ran out of room; cleared when a segment frees */
	bool gc_in_append;             /* GC is appending moves: no GC-only segment from make_room */
	bool gc_compact;               /* the pass's victim was picked for its deferred blocks */
	uint8_t *gcz;                  /* 4 KiB: a deferred payload compressed by a move */

	/* deferred compression */
	_Atomic unsigned cmode;        /* enum tnd_lsfs_compress_mode (any thread reads) */
	struct stage_meter home_meter; /* stages run at the append, on home */
	uint64_t ndeferred;            /* mapped chunks whose payload is DEFERRED */
	/* marking the store for DEFERRED records ("Deferred mark" below) */
	_Atomic bool defer_ok;         /* the bit is durable: stages may defer (any thread reads) */
	bool dm_busy;                  /* its superblock update is in flight */
	bool dm_want;                  /* a stage wanted to defer; the update has not started */
	unsigned dm_step;              /* 0 write copy A, 1 flush, 2 write copy B, 3 flush */
	uint8_t *dm_blk;               /* 4 KiB: the superblock being written */
	struct lsfs_sb dm_sb;
	pthread_mutex_t sb_mu;         /* one superblock writer at a time: this update on home,
					* or tnd_lsfs_set_features on its caller's thread */
	/* duplicate streams ("Duplicate streams" at dup_note) */
	_Atomic bool dup_stream;       /* stages fingerprint only (any thread reads) */
	uint32_t dw_chunks, dw_hits;   /* this window's full chunks looked up / shared */
	_Atomic uint64_t dup_fp_only;  /* chunks staged off home by fingerprint only */
	uint64_t idle_writes;          /* st.writes at the last tick */
	uint32_t idle_ticks;           /* ticks in a row without a client write */

	/* hot/cold separation: moves staged for a GC-only segment */
	uint8_t *stg_buf;              /* 2 x seg_size: the staged payloads' stored bytes, by sector */
	struct gc_stage_ent *stg;      /* the staged moves, in the order they are to be appended */
	uint32_t stg_n, stg_cap;
	uint32_t stg_next;             /* first not yet appended */
	uint32_t stg_bsec;             /* sectors of stg_buf in use */
	uint32_t stg_sec;              /* payload sectors of the moves not yet appended */
	uint8_t *stg_pinned;           /* per segment: a staged victim (holds a readers[] count) */
	struct stg_victim *stg_vict;   /* the staged victims, in staging order */
	uint32_t stg_nvict;
	struct gc_grp stg_grp;
	bool stg_full;                 /* a segment's worth staged: the next boundary writes it */
	uint64_t stg_idle_seq;         /* next_rec_seq at the last tick (idle log: append anyway) */
	bool full_logged;              /* "store full" logged; cleared by the next write */
	struct tnd_timer tick;
	bool tick_armed;
	_Atomic bool home_seen;        /* some of our code has run on the home reactor */
	struct close_req *close_req;

	/* write stages: zero detection, compression */
	struct tnd_compress_ctx *cctx; /* NULL: compression off */
	uint8_t *zbuf;                 /* 4 KiB: a chunk's new content, gathered */
	uint8_t *cbuf;                 /* 4 KiB: its compressed form */
	uint8_t *dbuf;                 /* 4 KiB: a decompressed chunk on the read path */
	uint64_t map_cap;              /* most chunks a checkpoint can map */
	struct tnd_dedup *ddx;         /* fingerprint index; NULL: dedup off */
	struct tnd_dedup_refs *refs;   /* shares per payload address (DEDUP stores) */
	uint64_t shared_extra;         /* map entries beyond the first per payload */
	struct dd_cache_ent *dd_cache; /* DD_CACHE_N entries, with ddx */

	/* index warm-up (see "Index warm-up" below) */
	uint32_t *wu_segs;             /* the segments to scan, newest first */
	uint64_t *wu_seqs;             /* ... and the life (seg_seq) each was in then */
	uint32_t wu_n, wu_next;
	uint8_t *wu_buf;               /* seg_size: the segment being read */
	uint8_t *wu_dbuf;              /* 4 KiB: a decompressed payload */
	bool wu_busy;                  /* a segment read in flight (readers[wu_seg] held) */
	bool wu_pending;               /* dedup switched on while a read of the last walk was out */
	uint32_t wu_seg;
	uint64_t wu_seg_seq;
	uint64_t wu_gen;               /* walk number: a read of an ended walk is ignored */
	uint32_t wu_quota;             /* segments this tick (or explicit run) may still scan */
	uint64_t wu_io;                /* client reads + writes at the last tick */
	_Atomic uint32_t wu_mbps;      /* opts.dedup_warmup_mbps (any thread writes) */
	bool wu_paced;                 /* this tick is under client load: scans spend wu_credit */
	int64_t wu_credit;             /* bytes the paced walk may still scan (a segment larger
					* than a tick's share drives it negative: paid off by the
					* next ticks) */
	uint64_t wu_tick_ns;           /* the last tick that granted credit */
	uint64_t wu_t0, wu_t1;         /* start, end (ns) */
	uint64_t wu_evicted;           /* entries the walk's inserts evicted */
	tnd_done_cb wu_cb;             /* tnd_lsfs_warmup_run */
	void *wu_cb_arg;

	/* off-home write stages */
	struct lsfs_helper *helpers;
	unsigned nhelpers;
	_Atomic unsigned pre_feat;     /* PRE_*, what the stages compute now (any thread reads) */
	struct lsfs_ioctx *gate_head, *gate_tail; /* write-type I/O in submission order */

	struct tnd_lsfs_stats st;
};

static void kick(struct lsfs *ls);
static void pump(struct lsfs *ls);
static void dd_cache_free(struct dd_cache_ent *cache);
static int dedup_tables(const struct lsfs *ls, struct tnd_dedup **ddx, struct dd_cache_ent **cache);
static void home_enter(struct lsfs *ls);
static void close_check(struct lsfs *ls);
static void gc_step(struct lsfs *ls);
static void gc_continue(struct lsfs *ls);
static void gc_finish(struct lsfs *ls);
static int ckpt_start(struct lsfs *ls, tnd_done_cb cb, void *arg);
static void ckpt_apply_frees(struct lsfs *ls);
static void start_io(struct lsfs *ls, struct lsfs_ioctx *x);
static void reclaim_kick(struct lsfs *ls);
static bool linger_hold(struct lsfs *ls);
static void linger_stop(struct lsfs *ls);
static bool gc_stage_ready(struct lsfs *ls);
static void gc_stage_write(struct lsfs *ls);
static void gc_stage_retire(struct lsfs *ls, bool drop);
static void gc_stage_unpin(struct lsfs *ls, uint32_t s);
static void wu_stop(struct lsfs *ls, const char *why);
static void dm_start(struct lsfs *ls);

static struct lsfs *to_lsfs(struct tnd_volume *v)
{
	return tnd_container_of(v, struct lsfs, vol);
}

static struct lsfs_ioctx *ioctx(struct lsfs *ls, struct tnd_io *io)
{
	return tnd_io_ctx(io, &ls->vol);
}

/* ---- small helpers ---- */

static void wq_push(struct lsfs_wq *q, struct lsfs_waiter *w)
{
	w->next = NULL;
	if (q->tail)
		q->tail->next = w;
	else
		q->head = w;
	q->tail = w;
}

/* Queue @w behind the others, its need raised to theirs: a queue is ordered by need. */
static void wq_push_ordered(struct lsfs_wq *q, struct lsfs_waiter *w)
{
	if (q->tail && q->tail->need > w->need)
		w->need = q->tail->need;
	wq_push(q, w);
}

static struct lsfs_waiter *wq_pop_upto(struct lsfs_wq *q, uint64_t seq)
{
	struct lsfs_waiter *w = q->head;
	if (!w || w->need > seq)
		return NULL;
	q->head = w->next;
	if (!q->head)
		q->tail = NULL;
	return w;
}

static uint32_t seg_of(const struct lsfs *ls, uint64_t pba)
{
	return (uint32_t)((pba - lsfs_seg_base_pba(&ls->sb, 0)) / ls->seg_blocks);
}

static void copy_from_iov(const struct iovec *iov, int cnt, uint64_t off, uint8_t *dst, size_t len)
{
	for (int i = 0; i < cnt && len; i++) {
		if (off >= iov[i].iov_len) {
			off -= iov[i].iov_len;
			continue;
		}
		size_t n = TND_MIN(len, iov[i].iov_len - off);
		memcpy(dst, (uint8_t *)iov[i].iov_base + off, n);
		dst += n;
		len -= n;
		off = 0;
	}
}

static void copy_to_iov(const struct iovec *iov, int cnt, uint64_t off, const uint8_t *src, size_t len)
{
	for (int i = 0; i < cnt && len; i++) {
		if (off >= iov[i].iov_len) {
			off -= iov[i].iov_len;
			continue;
		}
		size_t n = TND_MIN(len, iov[i].iov_len - off);
		memcpy((uint8_t *)iov[i].iov_base + off, src, n);
		src += n;
		len -= n;
		off = 0;
	}
}

static void zero_iov(const struct iovec *iov, int cnt, uint64_t off, size_t len)
{
	static const uint8_t zeros[LSFS_BLK];
	while (len) {
		size_t n = TND_MIN(len, sizeof(zeros));
		copy_to_iov(iov, cnt, off, zeros, n);
		off += n;
		len -= n;
	}
}

/* The buffer holding segment @seg's bytes, if it is still in RAM. */
static struct lsfs_buf *buf_of_seg(struct lsfs *ls, uint32_t seg)
{
	for (int i = 0; i < LSFS_NBUF; i++)
		if (ls->bufs[i].active && ls->bufs[i].seg == seg)
			return &ls->bufs[i];
	return NULL;
}

static const uint8_t *ram_block(struct lsfs *ls, uint64_t pba)
{
	uint32_t seg = seg_of(ls, pba);
	struct lsfs_buf *b = buf_of_seg(ls, seg);
	if (!b)
		return NULL;
	uint64_t off = (pba - lsfs_seg_base_pba(&ls->sb, seg)) * LSFS_BLK;
	return off < b->fill ? b->data + off : NULL;
}

/* ---- child I/O on the backing volume ---- */

static void child_cb(struct tnd_io *io, int status)
{
	struct lsfs_child *c = io->cb_arg;
	struct lsfs *ls = c->ls;
	c->fn(c, status);
	free(c);
	close_check(ls);
}

static int child_submit(struct lsfs *ls, enum tnd_io_type type, uint64_t off, void *buf,
			size_t len, lsfs_child_fn fn, void *arg, uint64_t u64)
{
	struct tnd_volume *b = ls->vol.base;
	struct tnd_volume_info info;
	tnd_volume_info(b, &info);
	struct lsfs_child *c = calloc(1, offsetof(struct lsfs_child, io) + tnd_volume_io_size(b));
	if (!c)
		return -ENOMEM;
	c->ls = ls;
	c->fn = fn;
	c->arg = arg;
	c->u64 = u64;
	c->iov.iov_base = buf;
	c->iov.iov_len = len;
	c->io.type = type;
	c->io.lba = off / info.block_size;
	c->io.nblocks = (uint32_t)(len / info.block_size);
	c->io.iov = buf ? &c->iov : NULL;
	c->io.iovcnt = buf ? 1 : 0;
	c->io.reactor = ls->home;
	c->io.cb = child_cb;
	c->io.cb_arg = c;
	int ret = tnd_volume_submit(b, &c->io);
	if (ret < 0)
		free(c);
	else if (type == TND_IO_WRITE)
		ls->st.backing_bytes_written += len;
	return ret;
}

/* ---- completing user I/O ---- */

static void complete_msg(struct tnd_msg *m)
{
	struct lsfs_ioctx *x = tnd_container_of(m, struct lsfs_ioctx, msg);
	x->io->cb(x->io, x->status);
}

static void complete_io(struct lsfs_ioctx *x, int status)
{
	struct tnd_io *io = x->io;
	free(x->edge);
	free(x->slots);
	free(x->bounce);
	free(x->dd);
	free(x->ddbuf);
	free(x->pre);
	x->pre = NULL;
	x->edge = NULL;
	x->slots = NULL;
	x->bounce = NULL;
	x->dd = NULL;
	x->ddbuf = NULL;
	x->status = status;
	/* Never call back from inside submit, and always on the submitter. */
	if (io->reactor != x->ls->home || x->in_submit) {
		x->msg.fn = complete_msg;
		tnd_reactor_send(io->reactor, &x->msg);
		return;
	}
	io->cb(io, status);
}

/* ---- fail-stop ---- */

static void fail_waiters(struct lsfs_wq *q, int err)
{
	struct lsfs_waiter *w;
	while ((w = wq_pop_upto(q, UINT64_MAX)) != NULL)
		w->fn(w, err);
}

static void fail_stop(struct lsfs *ls, int err, const char *what)
{
	if (!ls->failed)
		tnd_err(LSFS_TAG, "backing store %s failed (%s): device fail-stopped, writes refused",
			what, strerror(-err));
	ls->failed = true;
	fail_waiters(&ls->wait_written, -EIO);
	fail_waiters(&ls->wait_durable, -EIO);
	while (ls->aq_head) {
		struct lsfs_ioctx *x = ls->aq_head;
		ls->aq_head = x->qnext;
		complete_io(x, x->cursor > x->c0 ? -EIO : -EROFS);
	}
	ls->aq_tail = NULL;
	gc_stage_retire(ls, true);
	wu_stop(ls, "the device failed");
	if (ls->gc_wait_buf || (ls->gc_cb && !ls->gc_busy)) {
		ls->gc_busy = true;
		gc_finish(ls);
	}
}

/* ---- the deferred mark ---- */

/*
 * Deferred mark. A DEFERRED record (and the map aux that says deferred)
 * must never reach the disk before the superblock with
 * LSFS_INCOMPAT_DEFERRED is durable in both copies: an older build would
 * take the flag for a torn record, and our own open and check call a
 * deferred payload in an unmarked store corruption. The bit is set
 * lazily, so that a store that never defers (adaptive mode rarely does)
 * stays readable by older builds: until it is durable (defer_ok), a
 * chunk the policy wants deferred is compressed inline, as in INLINE
 * mode, and the first such chunk starts this one update on home:
 * superblock copy A written, flushed, copy B written, flushed (each copy
 * durable before the other is touched, as lsfs_sb_write does, so a power
 * cut leaves one whole copy, either the old or the new; open repairs the
 * other), all through the child I/O path without blocking the reactor.
 * Only then does defer_ok let the stages defer. A failed write or flush
 * fail-stops the volume like any other. The bit is never cleared.
 *
 * sb_mu keeps it from racing tnd_lsfs_set_features, which writes the
 * superblock from its caller's thread: home only trylocks (a wish that
 * finds it taken leaves dm_want for the next wish or tick), and holds the
 * lock from the copy of ls->sb to the completion, on home throughout.
 */
static void dm_end(struct lsfs *ls)
{
	ls->dm_busy = false;
	free(ls->dm_blk);
	ls->dm_blk = NULL;
	pthread_mutex_unlock(&ls->sb_mu);
}

static void dm_next(struct lsfs *ls);

static void dm_io_done(struct lsfs_child *c, int status)
{
	struct lsfs *ls = c->ls;
	if (status < 0) {
		dm_end(ls);
		tnd_err(LSFS_TAG, "marking the store for deferred compression failed (%s)",
			strerror(-status));
		fail_stop(ls, status, "superblock write");
		return;
	}
	ls->dm_step++;
	dm_next(ls);
}

static void dm_next(struct lsfs *ls)
{
	if (ls->failed) {
		/* A copy may be new, the other old: open takes the newer. */
		dm_end(ls);
		return;
	}
	if (ls->dm_step == 4) {
		ls->sb.incompat = ls->dm_sb.incompat;
		ls->sb.sb_seq = ls->dm_sb.sb_seq;
		dm_end(ls);
		atomic_store_explicit(&ls->defer_ok, true, memory_order_relaxed);
		tnd_info(LSFS_TAG, "store marked as holding deferred records (older builds will "
			 "refuse it)");
		return;
	}
	int ret = ls->dm_step & 1 ? child_submit(ls, TND_IO_FLUSH, 0, NULL, 0, dm_io_done, NULL, 0)
				  : child_submit(ls, TND_IO_WRITE, (uint64_t)(ls->dm_step / 2) * LSFS_BLK,
						 ls->dm_blk, LSFS_BLK, dm_io_done, NULL, 0);
	if (ret < 0) {
		dm_end(ls);
		tnd_err(LSFS_TAG, "marking the store for deferred compression failed (%s)",
			strerror(-ret));
		fail_stop(ls, ret, "superblock write");
	}
}

/* A stage wanted to defer a chunk and could not: mark the store (home). */
static void dm_start(struct lsfs *ls)
{
	if (atomic_load_explicit(&ls->defer_ok, memory_order_relaxed)) {
		ls->dm_want = false;
		return;
	}
	if (ls->dm_busy || ls->failed || ls->closing)
		return;
	ls->dm_want = true;
	if (pthread_mutex_trylock(&ls->sb_mu) != 0)
		return;
	ls->dm_blk = lsfs_alloc_blocks(LSFS_BLK);
	if (!ls->dm_blk) {
		pthread_mutex_unlock(&ls->sb_mu);
		return;   /* the next wish or tick tries again */
	}
	ls->dm_want = false;
	ls->dm_busy = true;
	ls->dm_sb = ls->sb;
	ls->dm_sb.incompat |= LSFS_INCOMPAT_DEFERRED;
	ls->dm_sb.sb_seq++;
	lsfs_sb_encode(&ls->dm_sb, ls->dm_blk);
	ls->dm_step = 0;
	dm_next(ls);
}

/* ---- segments ---- */

static uint32_t find_free_seg(struct lsfs *ls)
{
	for (uint32_t i = 0; i < ls->sb.seg_count; i++)
		if (ls->segs[i].state == LSFS_SEG_FREE && ls->readers[i] == 0)
			return i;
	return LSFS_NONE32;
}

static void reserve_next(struct lsfs *ls)
{
	if (ls->next_seg != LSFS_NONE32)
		return;
	uint32_t s = find_free_seg(ls);
	if (s == LSFS_NONE32)
		return;
	ls->segs[s].state = LSFS_SEG_NEXT;
	ls->nfree--;
	ls->next_seg = s;
}

/* The dedup index's value for a payload: its address and layout. */
static uint64_t dd_val(uint64_t loc, uint16_t aux)
{
	return loc | (uint64_t)aux << 48;
}

/*
 * A chunk stopped using the payload @old (a map entry) describes. With
 * dedup the payload's space is only given up with its last reference.
 */
static void seg_lost_block(struct lsfs *ls, const struct lsfs_ment *old)
{
	uint32_t s = seg_of(ls, lsfs_ment_pba(old));
	ls->segs[s].live--;
	if (lsfs_aux_deferred(old->aux)) {
		ls->segs[s].deferred--;
		ls->ndeferred--;
	}
	bool last = true;
	if (ls->refs) {
		uint64_t loc = lsfs_ment_loc(old);
		if (tnd_dedup_ref_get(ls->refs, loc) >= 2) {
			tnd_dedup_ref_dec(ls->refs, loc);
			ls->shared_extra--;
			last = false;
		} else if (ls->ddx) {
			tnd_dedup_remove_pba(ls->ddx, dd_val(loc, old->aux));
		}
	}
	if (last)
		ls->segs[s].live_sec -= lsfs_len_sectors(lsfs_aux_len(old->aux));
	if (ls->segs[s].live == 0 && ls->stg_pinned[s])
		gc_stage_unpin(ls, s);
	if (ls->segs[s].live == 0 && ls->segs[s].state == LSFS_SEG_USED) {
		ls->segs[s].state = LSFS_SEG_DEAD;
		ls->ndead++;
		/* The descriptor that emptied it is in the open record. */
		ls->dead_rec[s] = ls->rec_open ? ls->rec_seq : ls->next_rec_seq - 1;
	}
}

static void seal_record(struct lsfs *ls)
{
	if (!ls->rec_open)
		return;
	struct lsfs_buf *b = ls->cur;
	reserve_next(ls);
	struct lsfs_rec r = {
		.rec_seq = ls->rec_seq,
		.seg_seq = b->seg_seq,
		.prev_seg_seq = ls->cur_prev_seq,
		.ndesc = ls->rec_ndesc,
		.npayload = (ls->rec_sec + 7) / 8,
		.next_seg = ls->next_seg,
		.flags = b->gc_only ? LSFS_REC_F_GC : 0,
	};
	memcpy(r.uuid, ls->sb.uuid, 16);
	uint8_t *hdr = b->data + ls->rec_off;
	lsfs_rec_encode_head(&r, hdr);
	lsfs_rec_seal(hdr);
	b->sealed_end = b->fill;
	b->sealed_seq = ls->rec_seq;
	ls->rec_open = false;
	ls->rec_urgent = false;
	ls->st.records++;
}

static void close_segment(struct lsfs *ls)
{
	struct lsfs_buf *b = ls->cur;
	if (!b)
		return;
	seal_record(ls);
	struct lsfs_seginfo *s = &ls->segs[b->seg];
	if (s->live == 0) {
		s->state = LSFS_SEG_DEAD;
		ls->ndead++;
		ls->dead_rec[b->seg] = ls->next_rec_seq - 1;
	} else {
		s->state = LSFS_SEG_USED;
	}
	ls->tail_off = b->fill;
	ls->cur = NULL;
	ls->segs_since_ckpt++;
}

/* Open a new segment for appending. -EAGAIN: no buffer yet; -ENOSPC. */
static int open_segment(struct lsfs *ls)
{
	struct lsfs_buf *nb = NULL;
	for (int i = 0; i < LSFS_NBUF; i++) {
		struct lsfs_buf *b = &ls->bufs[i];
		if (!b->active) {
			nb = b;
			break;
		}
		if (b->done == b->fill && b != ls->cur && (!nb || b->seg_seq < nb->seg_seq))
			nb = b;
	}
	if (!nb)
		return -EAGAIN;
	reserve_next(ls);
	uint32_t seg = ls->next_seg;
	if (seg == LSFS_NONE32)
		return -ENOSPC;
	if (!nb->data) {
		nb->data = lsfs_alloc_blocks(ls->sb.seg_size);
		if (!nb->data)
			return -ENOMEM;
	}
	ls->next_seg = LSFS_NONE32;
	/* The previous segment in log order is the current tail. */
	uint64_t prev = ls->tail_seg_seq;
	struct lsfs_seginfo *s = &ls->segs[seg];
	s->state = LSFS_SEG_OPEN;
	s->seq = ++ls->max_seg_seq;
	s->live = s->live_sec = s->deferred = 0;
	/* An older buffer may still hold this segment's previous life. */
	for (int i = 0; i < LSFS_NBUF; i++)
		if (ls->bufs[i].active && ls->bufs[i].seg == seg && &ls->bufs[i] != nb)
			ls->bufs[i].active = false;
	nb->seg = seg;
	nb->seg_seq = s->seq;
	nb->fill = nb->sealed_end = nb->issued = nb->done = 0;
	nb->sealed_seq = 0;
	nb->active = true;
	nb->gc_only = false;
	ls->cur = nb;
	ls->cur_prev_seq = prev;
	ls->tail_seg = seg;
	ls->tail_off = 0;
	ls->tail_seg_seq = s->seq;
	reserve_next(ls);
	return 0;
}

/*
 * Make room in the open record for one descriptor and @len bytes of
 * payload (0: none): seal a full record, close a full segment, open the
 * next. Payloads are packed at sector granularity, so the record ends at
 * its payload sectors rounded up to a block.
 */
static int make_room(struct lsfs *ls, uint32_t len)
{
	uint32_t nsec = lsfs_len_sectors(len);
	for (;;) {
		struct lsfs_buf *b = ls->cur;
		if (b) {
			if (ls->rec_open && ls->rec_ndesc >= LSFS_REC_MAX_DESC) {
				seal_record(ls);
				continue;
			}
			uint64_t start = ls->rec_open ? ls->rec_off : b->fill;
			uint64_t sec = (ls->rec_open ? ls->rec_sec : 0) + nsec;
			uint64_t end = start + LSFS_BLK +
				       (sec * LSFS_SECTOR + LSFS_BLK - 1) / LSFS_BLK * LSFS_BLK;
			if (end <= ls->sb.seg_size)
				break;
			close_segment(ls);
		}
		/* A segment boundary: GC's staged moves may go out first, as
		 * a segment of their own (hot/cold separation). */
		if (gc_stage_ready(ls))
			gc_stage_write(ls);
		int ret = open_segment(ls);
		if (ret < 0)
			return ret;
	}
	if (!ls->rec_open) {
		struct lsfs_buf *b = ls->cur;
		ls->rec_off = b->fill;
		memset(b->data + b->fill, 0, LSFS_BLK);
		b->fill += LSFS_BLK;
		ls->rec_seq = ls->next_rec_seq++;
		ls->rec_ndesc = 0;
		ls->rec_sec = 0;
		ls->rec_open = true;
	}
	return 0;
}

/*
 * Take @len bytes of payload space in the open record (make_room first):
 * the next free sector. Bytes between payloads and after the last one
 * are zero (new blocks are cleared as the record grows into them).
 */
static uint8_t *data_slot(struct lsfs *ls, uint32_t len, uint64_t *pba, uint32_t *sector)
{
	struct lsfs_buf *b = ls->cur;
	uint32_t pos = ls->rec_off + LSFS_BLK + ls->rec_sec * LSFS_SECTOR;
	ls->rec_sec += lsfs_len_sectors(len);
	uint32_t end = ls->rec_off + LSFS_BLK +
		       (ls->rec_sec * LSFS_SECTOR + LSFS_BLK - 1) / LSFS_BLK * LSFS_BLK;
	if (end > b->fill) {
		memset(b->data + b->fill, 0, end - b->fill);
		b->fill = end;
	}
	*pba = lsfs_seg_base_pba(&ls->sb, b->seg) + pos / LSFS_BLK;
	*sector = (pos % LSFS_BLK) / LSFS_SECTOR;
	return b->data + pos;
}

static void add_desc(struct lsfs *ls, uint64_t lba, uint32_t crc, uint16_t flags,
		     uint16_t stored_len, uint64_t arg)
{
	struct lsfs_desc d = { .lba = lba, .crc = crc, .flags = flags, .stored_len = stored_len, .arg = arg };
	lsfs_desc_encode(&d, ls->cur->data + ls->rec_off, ls->rec_ndesc++);
}

/* A TRIM of @n chunks from @c; it extends the record's last descriptor
 * when that is a TRIM ending at @c (runs of zero chunks cost one). */
static void add_trim(struct lsfs *ls, uint64_t c, uint64_t n)
{
	uint8_t *hdr = ls->cur->data + ls->rec_off;
	if (ls->rec_ndesc) {
		struct lsfs_desc d;
		lsfs_desc_decode(hdr, ls->rec_ndesc - 1, &d);
		if (d.flags == LSFS_DESC_TRIM && d.lba + d.arg == c) {
			d.arg += n;
			lsfs_desc_encode(&d, hdr, ls->rec_ndesc - 1);
			return;
		}
	}
	add_desc(ls, c, 0, LSFS_DESC_TRIM, 0, n);
}

/* Map chunk @c to a payload: a new one, or (@shared, its reference
 * already counted) one that other chunks map too. */
static void map_update(struct lsfs *ls, uint64_t c, uint64_t pba, uint32_t crc, uint16_t aux,
		       bool shared)
{
	struct lsfs_seginfo *si = &ls->segs[seg_of(ls, pba)];
	si->live++;
	if (lsfs_aux_deferred(aux)) {
		si->deferred++;
		ls->ndeferred++;
	}
	if (shared)
		ls->shared_extra++;
	else
		si->live_sec += lsfs_len_sectors(lsfs_aux_len(aux));
	struct lsfs_ment old;
	if (lsfs_map_set(&ls->map, c, pba, crc, aux, &old))
		seg_lost_block(ls, &old);
}

static void trim_range(struct lsfs *ls, uint64_t c, uint64_t n)
{
	uint64_t end = c + n;
	for (uint64_t x = c; lsfs_map_next(&ls->map, &x) && x < end; x++) {
		struct lsfs_ment old;
		lsfs_map_clear(&ls->map, x, &old);
		seg_lost_block(ls, &old);
	}
}

/* The stored bytes of @m's payload when they are still in RAM, else NULL. */
static const uint8_t *ram_payload(struct lsfs *ls, const struct lsfs_ment *m)
{
	const uint8_t *p = ram_block(ls, lsfs_ment_pba(m));
	return p ? p + lsfs_aux_sector(m->aux) * LSFS_SECTOR : NULL;
}

/*
 * Turn the stored bytes @p of a payload laid out as @aux into the chunk's
 * 4 KiB at @out, checking them against @crc first. 0 or -EILSEQ (counted
 * as a CRC error: a payload that fails to decompress is as damaged as one
 * that fails its CRC).
 */
static int decode_payload(struct lsfs *ls, uint32_t crc, uint16_t aux, const uint8_t *p, uint8_t *out)
{
	uint32_t len = lsfs_aux_len(aux);
	if (tnd_crc32c(0, p, len) != crc ||
	    (lsfs_aux_lz4(aux) ? tnd_decompress(p, len, out, LSFS_BLK) < 0 : (memcpy(out, p, LSFS_BLK), 0))) {
		ls->st.crc_errors++;
		return -EILSEQ;
	}
	return 0;
}

/* The @len bytes at @off of @iov when they are contiguous there, else NULL. */
static const uint8_t *iov_span(const struct iovec *iov, int cnt, uint64_t off, size_t len)
{
	for (int i = 0; i < cnt; i++) {
		if (off < iov[i].iov_len)
			return iov[i].iov_len - off >= len ? (const uint8_t *)iov[i].iov_base + off : NULL;
		off -= iov[i].iov_len;
	}
	return NULL;
}

/*
 * The append stage for one chunk: a zero chunk (@len 0) becomes a TRIM
 * (unmapped reads as zeros); else the payload @pay (borrowed, @len bytes,
 * LZ4 when @lz4, CRC32C @crc) is appended and the map updated, and with
 * dedup it is indexed under @fp (NULL: not indexed). 0 or make_room's
 * -errno.
 */
static int store_payload(struct lsfs *ls, uint64_t c, const uint8_t *pay, uint32_t len, bool lz4,
			 bool deferred, uint32_t crc, const struct tnd_dedup_fp *fp)
{
	if (len == 0) {
		int ret = make_room(ls, 0);
		if (ret < 0)
			return ret;
		add_trim(ls, c, 1);
		trim_range(ls, c, 1);
		ls->st.zero_blocks++;
		return 0;
	}
	int ret = make_room(ls, len);
	if (ret < 0)
		return ret;
	uint64_t pba;
	uint32_t sector;
	uint8_t *slot = data_slot(ls, len, &pba, &sector);
	memcpy(slot, pay, len);
	/* (Deferred only when the store is marked for it: a mode change
	 * raced with a staged write otherwise stores it plainly.) */
	deferred = deferred && !lz4 && (ls->sb.incompat & LSFS_INCOMPAT_DEFERRED);
	add_desc(ls, c, crc, (uint16_t)(LSFS_DESC_DATA | (lz4 ? LSFS_DESC_F_LZ4 : 0) |
					(deferred ? LSFS_DESC_F_DEFERRED : 0)), (uint16_t)len, 0);
	uint16_t aux = deferred ? lsfs_aux_make_deferred(sector) : lsfs_aux_make(lz4, sector, len);
	map_update(ls, c, pba, crc, aux, false);
	if (lz4)
		ls->st.compressed_blocks++;
	else
		ls->st.raw_blocks++;
	if (deferred)
		ls->st.deferred_writes++;
	if (ls->ddx && fp)
		tnd_dedup_insert(ls->ddx, fp, dd_val(pba << 3 | sector, aux));
	return 0;
}

/*
 * The write stages for one chunk of new content @src (borrowed, 4 KiB):
 * zero test, compression when it is on and saves a sector (with @cctx
 * into @cbuf, LSFS_LZ4_MAX bytes; with @defer not now: the chunk is
 * stored raw and marked deferred; @held: deferring was wanted but the
 * store is not marked for it yet, so it is compressed now and the chunk
 * says so), CRC32C, and with @want_fp the fingerprint. Pure computation
 * on the caller's buffers: runs on any reactor.
 */
static void chunk_stages(struct tnd_compress_ctx *cctx, bool defer, bool held, const uint8_t *src,
			 uint8_t *cbuf, bool want_fp, struct pre_chunk *pc)
{
	pc->have_fp = false;
	pc->lz4 = false;
	pc->deferred = false;
	pc->defer_held = false;
	pc->pay = src;
	pc->len = LSFS_BLK;
	size_t clen = 0;
	int r = cctx && !defer ? tnd_compress_block(cctx, src, LSFS_BLK, cbuf, LSFS_LZ4_MAX, &clen)
			       : (tnd_compress_is_zero(src, LSFS_BLK) ? TND_COMPRESS_ZERO : TND_COMPRESS_RAW);
	if (r == TND_COMPRESS_ZERO) {
		pc->len = 0;
		pc->crc = 0;
		return;
	}
	pc->deferred = cctx && defer;
	pc->defer_held = cctx && held;
	if (r == TND_COMPRESS_COMPRESSED && clen > 0 && clen <= LSFS_LZ4_MAX) {
		pc->pay = cbuf;
		pc->len = (uint16_t)clen;
		pc->lz4 = true;
	}
	pc->crc = tnd_crc32c(0, pc->pay, pc->len);
	if (want_fp) {
		tnd_dedup_fingerprint(src, LSFS_BLK, &pc->fp);
		pc->have_fp = true;
	}
}

/*
 * A chunk whose stages did not run off home: run them here, then store.
 * With dedup it is indexed under @fp (NULL: computed here).
 */
static int store_chunk(struct lsfs *ls, uint64_t c, const uint8_t *src, const struct tnd_dedup_fp *fp)
{
	struct pre_chunk pc;
	unsigned mode = atomic_load_explicit(&ls->cmode, memory_order_relaxed);
	bool want = false, metered = ls->cctx && mode == TND_LSFS_COMPRESS_ADAPTIVE;
	uint64_t t0 = 0;
	if (metered) {
		t0 = tnd_now_ns();
		want = meter_defer(&ls->home_meter, t0);
	} else {
		want = ls->cctx && mode == TND_LSFS_COMPRESS_DEFERRED;
	}
	bool may = atomic_load_explicit(&ls->defer_ok, memory_order_relaxed);
	chunk_stages(ls->cctx, want && may, want && !may, src, ls->cbuf, ls->ddx && !fp, &pc);
	if (metered)
		meter_add(&ls->home_meter, t0, tnd_now_ns(), 1, want && may);
	if (!fp && pc.have_fp)
		fp = &pc.fp;
	if (pc.defer_held)
		dm_start(ls);
	return store_payload(ls, c, pc.pay, pc.len, pc.lz4, pc.deferred, pc.crc, fp);
}

/*
 * Dedup: share the payload the index suggests for the chunk @src, if it
 * is still what was looked up (the index still names it, its segment is
 * in the same life) and holds exactly these bytes. 1: shared; 0: store
 * the chunk (no candidate, a mismatch, a saturated count); or make_room's
 * -errno. The candidate's bytes come from RAM, or from the read dd_prep()
 * made; a candidate that shows up only now (written since, typically by
 * this very write) is used only while it is in RAM.
 */
static int try_share(struct lsfs *ls, uint64_t c, const uint8_t *src, struct dd_chunk *dd)
{
	if (!dd->have_fp)
		return 0;
	uint64_t v;
	if (tnd_dedup_lookup(ls->ddx, &dd->fp, &v) < 0)
		return 0;
	uint64_t loc = v & ((UINT64_C(1) << 48) - 1);
	uint16_t aux = (uint16_t)(v >> 48);
	uint64_t pba = loc >> 3;
	uint32_t seg = seg_of(ls, pba);
	const struct lsfs_seginfo *si = &ls->segs[seg];
	if ((si->state != LSFS_SEG_USED && si->state != LSFS_SEG_OPEN) ||
	    (ls->gc_busy && seg == ls->gc_victim) || ls->stg_pinned[seg])
		return 0;
	const uint8_t *p = ram_block(ls, pba);
	if (p)
		p += (loc & 7) * LSFS_SECTOR;
	else if (dd->cand && dd->val == v && dd->raw && dd->seg_seq == si->seq)
		p = dd->raw + (loc & 7) * LSFS_SECTOR;
	else
		return 0;
	uint32_t len = lsfs_aux_len(aux);
	const uint8_t *data = p;
	if (lsfs_aux_lz4(aux)) {
		if (tnd_decompress(p, len, ls->dbuf, LSFS_BLK) < 0)
			data = NULL;
		else
			data = ls->dbuf;
	}
	if (!data || memcmp(data, src, LSFS_BLK) != 0) {
		/* The fingerprint matched, the bytes did not. */
		tnd_dedup_reject(ls->ddx, &dd->fp, v);
		return 0;
	}
	uint32_t crc = tnd_crc32c(0, p, len);
	int ret = make_room(ls, 0);
	if (ret < 0)
		return ret;
	if (tnd_dedup_ref_inc(ls->refs, loc) < 0) {
		/* Saturated (or no memory for the count): a new copy, which
		 * the index then names instead. */
		ls->st.dedup_saturated++;
		return 0;
	}
	add_desc(ls, c, crc, (uint16_t)(LSFS_DESC_DATA | LSFS_DESC_F_DEDUP |
					(lsfs_aux_lz4(aux) ? LSFS_DESC_F_LZ4 : 0) |
					(lsfs_aux_deferred(aux) ? LSFS_DESC_F_DEFERRED : 0)), (uint16_t)len, loc);
	map_update(ls, c, pba, crc, aux, true);
	tnd_dedup_confirm(ls->ddx, &dd->fp, v);
	ls->st.dedup_hits++;
	return 1;
}

static void schedule_kick(struct lsfs *ls);

/* ---- write-type I/O: WRITE, UNMAP, WRITE_ZEROES ---- */

/* A full chunk's new content at @off of @io's buffer, contiguous (in ls->zbuf if need be). */
static const uint8_t *full_src(struct lsfs *ls, const struct tnd_io *io, uint64_t off)
{
	const uint8_t *src = iov_span(io->iov, io->iovcnt, off, LSFS_BLK);
	if (!src) {
		copy_from_iov(io->iov, io->iovcnt, off, ls->zbuf, LSFS_BLK);
		src = ls->zbuf;
	}
	return src;
}

/*
 * Duplicate streams. A chunk's stages off home (zero test, LZ4, CRC) run
 * before home can look its fingerprint up, so a chunk that turns out to
 * be a duplicate paid for an LZ4 pass and a CRC it never uses; writing a
 * clone of a stored VM image is almost nothing but such chunks. Home
 * counts, per window of DUP_WINDOW full chunks it looked up, how many it
 * shared; at DUP_ON_PCT or more the stages switch to the zero test and
 * the fingerprint only, and a chunk home then cannot share gets its
 * stages on home at the append (store_chunk), as without helpers. Below
 * DUP_OFF_PCT they switch back. Home goes on looking every chunk up
 * either way, so the share it measures stays true. What a wrong guess
 * costs: the unique chunks of a mostly duplicate stream are compressed
 * on home instead of off it; nothing about what is stored changes.
 */
#define DUP_WINDOW 256u
#define DUP_ON_PCT 75u
#define DUP_OFF_PCT 50u

static void dup_note(struct lsfs *ls, bool shared)
{
	ls->dw_hits += shared;
	if (++ls->dw_chunks < DUP_WINDOW)
		return;
	bool on = atomic_load_explicit(&ls->dup_stream, memory_order_relaxed);
	uint32_t pct = ls->dw_hits * 100u / ls->dw_chunks;
	if (!on && pct >= DUP_ON_PCT)
		atomic_store_explicit(&ls->dup_stream, true, memory_order_relaxed);
	else if (on && pct < DUP_OFF_PCT)
		atomic_store_explicit(&ls->dup_stream, false, memory_order_relaxed);
	ls->dw_chunks = ls->dw_hits = 0;
}

/*
 * Append what is left of @x from its cursor. 0: all appended; 1: a
 * partial chunk's old content must be read (again) first; -EAGAIN: wait
 * for a segment buffer; -ENOSPC; other -errno.
 */
static int append_io(struct lsfs *ls, struct lsfs_ioctx *x)
{
	struct tnd_io *io = x->io;
	bool is_write = io->type == TND_IO_WRITE;
	while (x->cursor < x->c1) {
		uint64_t c = x->cursor;
		uint64_t cs = c * LSFS_BLK, ce = cs + LSFS_BLK;
		uint64_t s = TND_MAX(cs, x->b0), e = TND_MIN(ce, x->b1);
		bool full = s == cs && e == ce;
		if (full && !is_write) {
			uint64_t n = 1;
			while (c + n < x->c1 && (c + n + 1) * LSFS_BLK <= x->b1)
				n++;
			int ret = make_room(ls, 0);
			if (ret < 0)
				return ret;
			add_trim(ls, c, n);
			trim_range(ls, c, n);
			x->cursor += n;
			x->last_rec = ls->rec_seq;
			continue;
		}
		/* The chunk's new content, whole, in one place (partial chunks
		 * are merged with the old content, from RAM or from edge[]); a
		 * full chunk whose stages ran off home needs it only to
		 * compare with a dedup candidate. */
		const struct pre_chunk *pc = full && x->pre && x->pre[c - x->c0].valid ?
					     &x->pre[c - x->c0] : NULL;
		const uint8_t *src = NULL;
		if (full) {
			if (!pc)
				src = full_src(ls, io, s - x->b0);
		} else {
			const struct lsfs_ment *m = lsfs_map_get(&ls->map, c);
			uint8_t *chunk = ls->zbuf;
			if (m) {
				const uint8_t *p = ram_payload(ls, m);
				if (p) {
					int ret = decode_payload(ls, m->crc, m->aux, p, chunk);
					if (ret < 0)
						return ret;
				} else {
					int k = c == x->c0 ? 0 : 1;
					if (x->edge_loc[k] != lsfs_ment_loc(m))
						return 1;
					memcpy(chunk, x->edge + k * LSFS_BLK, LSFS_BLK);
				}
			} else {
				memset(chunk, 0, LSFS_BLK);
			}
			if (is_write)
				copy_from_iov(io->iov, io->iovcnt, s - x->b0, chunk + (s - cs), e - s);
			else
				memset(chunk + (s - cs), 0, e - s);
			src = chunk;
		}
		struct dd_chunk *dd = full && x->dd ? &x->dd[c - x->c0] : NULL;
		if (dd && ls->ddx && dd->have_fp) {
			if (!src)
				src = full_src(ls, io, s - x->b0);
			int r = try_share(ls, c, src, dd);
			if (r < 0)
				return r;
			dup_note(ls, r == 1);
			if (r == 1) {
				x->cursor++;
				x->last_rec = ls->rec_seq;
				continue;
			}
		}
		const struct tnd_dedup_fp *fp = dd && dd->have_fp ? &dd->fp :
						pc && pc->have_fp ? &pc->fp : NULL;
		int ret;
		if (pc) {
			struct tnd_dedup_fp f;
			if (!fp && ls->ddx && pc->len) {
				/* Dedup was turned on after the stages ran. */
				tnd_dedup_fingerprint(full_src(ls, io, s - x->b0), LSFS_BLK, &f);
				fp = &f;
			}
			if (pc->defer_held)
				dm_start(ls);
			ret = store_payload(ls, c, pc->pay, pc->len, pc->lz4, pc->deferred, pc->crc, fp);
		} else {
			ret = store_chunk(ls, c, src, fp);
		}
		if (ret < 0)
			return ret;
		if (!full)
			ls->st.rmw++;
		x->cursor++;
		x->last_rec = ls->rec_seq;
	}
	return 0;
}

static uint64_t free_blocks(struct lsfs *ls, uint32_t reserve)
{
	uint64_t avail = ls->cur ? (ls->sb.seg_size - ls->cur->fill) / LSFS_BLK : 0;
	uint32_t segs = ls->nfree + (ls->next_seg != LSFS_NONE32);
	if (segs > reserve)
		avail += (uint64_t)(segs - reserve) * (ls->seg_blocks - 2);
	return avail;
}

/*
 * Writes leave LSFS_GC_RESERVE segments to GC, so that GC can always move
 * a victim's live blocks. UNMAP and WRITE_ZEROES may dip into the reserve:
 * they cost a descriptor (plus at most two partial chunks) and they are
 * how a full store gets space back.
 */
static bool space_for(struct lsfs *ls, struct lsfs_ioctx *x)
{
	bool is_write = x->io->type == TND_IO_WRITE;
	uint64_t n = is_write ? x->c1 - x->c0 : 2;
	uint64_t need = n + n / (LSFS_REC_MAX_DESC - 1) + 2;
	return need <= free_blocks(ls, is_write ? LSFS_GC_RESERVE : 0);
}

/*
 * The checkpoint area has room for ls->map_cap map entries. Without
 * packing no more chunks can be mapped than there are data slots, which
 * is what it is sized for; with compression more could, so a write that
 * would map more chunks than a checkpoint can hold fails with -ENOSPC
 * (the store is full of metadata; GC cannot help, UNMAP can).
 */
static bool map_room(struct lsfs *ls, struct lsfs_ioctx *x)
{
	uint64_t n = x->c1 - x->c0;
	if (ls->map.mapped + n <= ls->map_cap)
		return true;
	uint64_t fresh = 0;
	for (uint64_t c = x->c0; c < x->c1; c++)
		fresh += lsfs_map_get(&ls->map, c) == NULL;
	return ls->map.mapped + fresh <= ls->map_cap;
}

static uint32_t pick_victim(struct lsfs *ls);

/* Can waiting produce space: a checkpoint to free dead segments, GC work? */
static bool space_may_come(struct lsfs *ls)
{
	return ls->ndead > 0 || ls->ckpt_busy || ls->gc_busy || ls->reclaim_busy ||
	       (!ls->gc_stalled && ls->stg_next < ls->stg_n) || (!ls->gc_stalled && pick_victim(ls) != LSFS_NONE32);
}

static void io_durable(struct lsfs_waiter *w, int status)
{
	struct lsfs_ioctx *x = tnd_container_of(w, struct lsfs_ioctx, w);
	complete_io(x, status);
}

/* A client WRITE completes: count its bytes (the WA denominator). */
static void count_client_write(struct lsfs *ls, const struct lsfs_ioctx *x)
{
	if (x->io->type == TND_IO_WRITE)
		ls->st.client_bytes_written += (uint64_t)x->io->nblocks * ls->sb.block_size;
}

/* A write-through or FUA write's record is on the backing volume: now a flush. */
static void io_written(struct lsfs_waiter *w, int status)
{
	struct lsfs_ioctx *x = tnd_container_of(w, struct lsfs_ioctx, w);
	if (status == 0)
		count_client_write(x->ls, x);
	if (status < 0) {
		complete_io(x, status);
		return;
	}
	w->fn = io_durable;
	wq_push_ordered(&x->ls->wait_durable, w);
}

static void prep_io(struct lsfs *ls, struct lsfs_ioctx *x);

static void aq_pop(struct lsfs *ls)
{
	ls->aq_head = ls->aq_head->qnext;
	if (!ls->aq_head)
		ls->aq_tail = NULL;
}

/*
 * A write refused for space (SPACE ALLOCATION FAILED WRITE PROTECT to the
 * initiator): the admin hears of it once per episode, not once per write;
 * reads go on, and UNMAP or a larger capacity ends it.
 */
static void fail_for_space(struct lsfs *ls, struct lsfs_ioctx *x, const char *why)
{
	if (!ls->full_logged) {
		tnd_warn(LSFS_TAG, "store full: writes fail until space is freed (%s); "
			 "%llu blocks mapped, %u of %u segments free", why,
			 (unsigned long long)ls->map.mapped, ls->nfree, ls->sb.seg_count);
		ls->full_logged = true;
	}
	complete_io(x, -ENOSPC);
}

static void pump(struct lsfs *ls)
{
	if (ls->pumping)
		return;
	ls->pumping = true;
	while (ls->failed && ls->aq_head) {
		struct lsfs_ioctx *x = ls->aq_head;
		aq_pop(ls);
		complete_io(x, x->cursor > x->c0 ? -EIO : -EROFS);
	}
	if (ls->gc_wait_buf)
		gc_continue(ls);
	while (ls->aq_head && !ls->failed && !ls->gc_wait_buf) {
		struct lsfs_ioctx *x = ls->aq_head;
		if (!x->space_ok) {
			if (x->io->type == TND_IO_WRITE && !map_room(ls, x)) {
				aq_pop(ls);
				fail_for_space(ls, x, "the checkpoint area holds no more mapped blocks");
				continue;
			}
			if (!space_for(ls, x)) {
				if (!space_may_come(ls)) {
					aq_pop(ls);
					fail_for_space(ls, x, "no free segments and nothing left to clean");
					continue;
				}
				gc_step(ls);     /* may free dead segments at once */
				if (!space_for(ls, x)) {
					/* (GC may have found it has no room either) */
					if (!space_may_come(ls)) {
						aq_pop(ls);
						fail_for_space(ls, x, "no free segments and nothing left to clean");
						continue;
					}
					break;
				}
			}
			x->space_ok = true;
		}
		int ret = append_io(ls, x);
		if (ret == -EAGAIN) {
			/* Every segment buffer still has data to write: get it
			 * going, its completion pumps again. */
			schedule_kick(ls);
			break;
		}
		if (ret == -ENOSPC && space_may_come(ls)) {
			gc_step(ls);
			break;
		}
		aq_pop(ls);
		if (ret == -ENOSPC && x->cursor == x->c0) {
			fail_for_space(ls, x, "no room for the record");
			continue;
		}
		if (ret < 0) {
			complete_io(x, x->cursor > x->c0 ? -EIO : ret);
			continue;
		}
		ls->full_logged = false;
		if (ret == 1) {
			prep_io(ls, x);
			continue;
		}
		if (!x->durable) {
			/* Write cache on: acknowledged from the segment buffer
			 * (see "Acknowledgement" at the top of this file). */
			if (x->last_rec > ls->acked_rec)
				ls->acked_rec = x->last_rec;
			count_client_write(ls, x);
			complete_io(x, 0);
			schedule_kick(ls);
			continue;
		}
		x->stage = IO_WAIT;
		x->w.need = x->last_rec;
		x->w.fn = io_written;
		wq_push(&ls->wait_written, &x->w);
		ls->rec_urgent = true;   /* no lingering: someone waits for the disk */
		linger_stop(ls);
		schedule_kick(ls);
	}
	ls->pumping = false;
}

static void enqueue(struct lsfs *ls, struct lsfs_ioctx *x)
{
	x->stage = IO_QUEUED;
	x->qnext = NULL;
	if (ls->aq_tail)
		ls->aq_tail->qnext = x;
	else
		ls->aq_head = x;
	ls->aq_tail = x;
	pump(ls);
}

#define EDGE_RAW(x, k) ((x)->edge + 2 * LSFS_BLK + (size_t)(k) * 2 * LSFS_BLK)

static void prep_read_done(struct lsfs_child *c, int status)
{
	struct lsfs *ls = c->ls;
	struct lsfs_ioctx *x = c->arg;
	int k = (int)(c->u64 & 1);
	uint64_t loc = c->u64 >> 1;
	ls->readers[seg_of(ls, loc >> 3)]--;
	if (status < 0) {
		x->status = -EIO;
	} else {
		const struct lsfs_ment *m = lsfs_map_get(&ls->map, k == 0 ? x->c0 : x->c1 - 1);
		/* Only a still-current copy is checked; a stale one is re-read. */
		if (m && lsfs_ment_loc(m) == loc) {
			const uint8_t *p = EDGE_RAW(x, k) + (loc & 7) * LSFS_SECTOR;
			if (decode_payload(ls, m->crc, m->aux, p, x->edge + k * LSFS_BLK) < 0)
				x->status = -EILSEQ;
			else
				x->edge_loc[k] = loc;
		}
	}
	if (--x->pending)
		return;
	if (x->status < 0)
		complete_io(x, x->status);
	else
		enqueue(ls, x);
}

/* Read the old content of partial chunks that are only on disk. */
static void prep_io(struct lsfs *ls, struct lsfs_ioctx *x)
{
	x->stage = IO_PREP;
	if (!x->edge) {
		x->edge = lsfs_alloc_blocks(6 * LSFS_BLK);
		if (!x->edge) {
			complete_io(x, -ENOMEM);
			return;
		}
	}
	x->pending = 1;   /* held while issuing */
	for (int k = 0; k < 2; k++) {
		uint64_t c = k == 0 ? x->c0 : x->c1 - 1;
		if (k == 1 && c == x->c0)
			break;
		uint64_t cs = c * LSFS_BLK;
		bool partial = x->b0 > cs || x->b1 < cs + LSFS_BLK;
		if (!partial || c < x->cursor)
			continue;
		const struct lsfs_ment *m = lsfs_map_get(&ls->map, c);
		if (!m)
			continue;
		uint64_t pba = lsfs_ment_pba(m), loc = lsfs_ment_loc(m);
		if (ram_payload(ls, m) || x->edge_loc[k] == loc)
			continue;
		x->pending++;
		ls->readers[seg_of(ls, pba)]++;
		int ret = child_submit(ls, TND_IO_READ, pba * LSFS_BLK, EDGE_RAW(x, k),
				       (size_t)lsfs_aux_blocks(m->aux) * LSFS_BLK, prep_read_done, x,
				       loc << 1 | (uint64_t)k);
		if (ret < 0) {
			ls->readers[seg_of(ls, pba)]--;
			x->pending--;
			x->status = ret;
		}
	}
	if (--x->pending)
		return;
	if (x->status < 0)
		complete_io(x, x->status);
	else
		enqueue(ls, x);
}

static void dd_continue(struct lsfs *ls, struct lsfs_ioctx *x)
{
	if (x->b0 % LSFS_BLK || x->b1 % LSFS_BLK)
		prep_io(ls, x);
	else
		enqueue(ls, x);
}

static struct dd_cache_ent *dd_cache_slot(struct lsfs *ls, uint64_t val)
{
	uint64_t h = val * 0x9e3779b97f4a7c15ull;
	return &ls->dd_cache[(h >> 32) % DD_CACHE_N];
}

static void dd_read_done(struct lsfs_child *c, int status)
{
	struct lsfs *ls = c->ls;
	struct lsfs_ioctx *x = c->arg;
	struct dd_chunk *dd = &x->dd[c->u64];
	uint32_t seg = seg_of(ls, (dd->val & ((UINT64_C(1) << 48) - 1)) >> 3);
	ls->readers[seg]--;
	if (status < 0) {
		dd->raw = NULL;   /* no share; the write itself goes on */
	} else if (ls->dd_cache && ls->segs[seg].seq == dd->seg_seq) {
		struct dd_cache_ent *ce = dd_cache_slot(ls, dd->val);
		ce->val = dd->val;
		ce->seg_seq = dd->seg_seq;
		memcpy(ce->raw, dd->raw, 2 * LSFS_BLK);
	}
	if (--x->pending)
		return;
	dd_continue(ls, x);
}

/*
 * Dedup's stage before the append queue: fingerprint every full chunk of
 * a write, look it up, and read the candidates that are only on disk, so
 * that the append can compare bytes without waiting. Nothing here can
 * fail the write: without memory or a read, the chunks are just stored.
 */
static void dd_prep(struct lsfs *ls, struct lsfs_ioctx *x)
{
	struct tnd_io *io = x->io;
	uint64_t n = x->c1 - x->c0;
	x->dd = calloc(n, sizeof(*x->dd));
	if (!x->dd) {
		dd_continue(ls, x);
		return;
	}
	uint32_t ncand = 0;
	for (uint64_t i = 0; i < n; i++) {
		struct dd_chunk *dd = &x->dd[i];
		uint64_t cs = (x->c0 + i) * LSFS_BLK;
		if (cs < x->b0 || cs + LSFS_BLK > x->b1)
			continue;
		const struct pre_chunk *pc = x->pre && x->pre[i].valid ? &x->pre[i] : NULL;
		if (x->pre && x->pre[i].have_fp) {
			/* Staged in full, or by fingerprint only (a duplicate stream). */
			dd->fp = x->pre[i].fp;
		} else {
			if (pc && pc->len == 0)
				continue;
			const uint8_t *src = full_src(ls, io, cs - x->b0);
			if (tnd_compress_is_zero(src, LSFS_BLK))
				continue;
			tnd_dedup_fingerprint(src, LSFS_BLK, &dd->fp);
		}
		dd->have_fp = true;
		uint64_t v;
		if (tnd_dedup_lookup(ls->ddx, &dd->fp, &v) < 0)
			continue;
		uint64_t pba = (v & ((UINT64_C(1) << 48) - 1)) >> 3;
		const struct lsfs_seginfo *si = &ls->segs[seg_of(ls, pba)];
		if (si->state != LSFS_SEG_USED && si->state != LSFS_SEG_OPEN)
			continue;
		dd->val = v;
		dd->seg_seq = si->seq;
		dd->cand = true;
		ncand++;
	}
	/* Each candidate's stored bytes: copied now when they are in RAM
	 * (the segment buffer may be recycled before the append), else read. */
	if (ncand) {
		x->ddbuf = lsfs_alloc_blocks((size_t)ncand * 2 * LSFS_BLK);
		if (!x->ddbuf)
			ncand = 0;
	}
	x->pending = 1;   /* held while issuing */
	uint32_t k = 0;
	for (uint64_t i = 0; i < n && ncand; i++) {
		struct dd_chunk *dd = &x->dd[i];
		uint64_t pba = (dd->val & ((UINT64_C(1) << 48) - 1)) >> 3;
		if (!dd->cand)
			continue;
		size_t len = (size_t)lsfs_aux_blocks((uint16_t)(dd->val >> 48)) * LSFS_BLK;
		dd->raw = x->ddbuf + (size_t)k++ * 2 * LSFS_BLK;
		const uint8_t *ram = ram_block(ls, pba);
		if (ram) {
			memcpy(dd->raw, ram, len);
			continue;
		}
		const struct dd_cache_ent *ce = dd_cache_slot(ls, dd->val);
		if (ce->val == dd->val && ce->seg_seq == dd->seg_seq) {
			memcpy(dd->raw, ce->raw, len);
			continue;
		}
		uint32_t seg = seg_of(ls, pba);
		x->pending++;
		ls->readers[seg]++;
		int ret = child_submit(ls, TND_IO_READ, pba * LSFS_BLK, dd->raw, len,
				       dd_read_done, x, i);
		if (ret < 0) {
			ls->readers[seg]--;
			x->pending--;
			dd->raw = NULL;
		}
	}
	if (--x->pending)
		return;
	dd_continue(ls, x);
}

static void start_write(struct lsfs *ls, struct lsfs_ioctx *x)
{
	struct tnd_io *io = x->io;
	uint32_t lbs = ls->sb.block_size;
	if (ls->failed) {
		complete_io(x, -EROFS);
		return;
	}
	if (io->lba + io->nblocks > ls->num_blocks || io->lba + io->nblocks < io->lba) {
		complete_io(x, -EINVAL);
		return;
	}
	ls->idle_ticks = 0;            /* compaction yields to clients */
	if (io->type == TND_IO_WRITE) {
		ls->st.writes++;
		if (tnd_iov_length(io->iov, io->iovcnt) < (size_t)io->nblocks * lbs) {
			complete_io(x, -EINVAL);
			return;
		}
		ls->st.logical_bytes_written += (uint64_t)io->nblocks * lbs;
	} else {
		ls->st.unmaps++;
	}
	if (io->nblocks == 0) {
		complete_io(x, 0);
		return;
	}
	x->b0 = io->lba * lbs;
	x->b1 = (io->lba + io->nblocks) * lbs;
	x->c0 = x->b0 / LSFS_BLK;
	x->c1 = (x->b1 + LSFS_BLK - 1) / LSFS_BLK;
	x->cursor = x->c0;
	x->durable = (io->flags & TND_IO_FUA) || !ls->opts.write_cache;
	int ret = lsfs_map_reserve(&ls->map, x->c0, x->c1 - x->c0);
	if (ret < 0) {
		complete_io(x, ret);
		return;
	}
	if (ls->ddx && io->type == TND_IO_WRITE)
		dd_prep(ls, x);
	else
		dd_continue(ls, x);
}

/*
 * ---- the log writer: up to opts.log_writes backing writes in flight ----
 *
 * Through the page cache a log write completed in microseconds and one at
 * a time was enough; written with O_DIRECT (flat's direct_writes) it takes
 * the device's latency, and a single write in flight left the disk idle
 * while the next batch waited. Writes are issued in log order and may
 * complete in any order; what they made "written" (written_seq, b->done)
 * advances only over a prefix of them, so a write is acknowledged only
 * when every record before its own is written too. On disk a later record
 * may land before an earlier one: recovery replays a prefix and stops at
 * the first torn or missing record, which is what it already did for
 * buffered writes (written back in any order), and nothing past that
 * prefix was ever acknowledged as durable.
 */

static void maybe_flush(struct lsfs *ls);

static void write_done(struct lsfs_child *c, int status)
{
	struct lsfs *ls = c->ls;
	ls->wr[c->u64].done = true;
	if (status < 0)
		fail_stop(ls, status, "write");
	while (ls->wr_n > 0 && ls->wr[ls->wr_head].done) {
		struct lsfs_wr *wr = &ls->wr[ls->wr_head];
		if (!ls->failed) {
			wr->b->done = wr->end;
			if (wr->seq > ls->written_seq)
				ls->written_seq = wr->seq;
		}
		ls->wr_head = (ls->wr_head + 1) % LSFS_MAX_WRITES;
		ls->wr_n--;
	}
	if (ls->failed)
		return;
	struct lsfs_waiter *w;
	while ((w = wq_pop_upto(&ls->wait_written, ls->written_seq)) != NULL)
		w->fn(w, 0);
	maybe_flush(ls);
	kick(ls);
	pump(ls);
}

/*
 * The open record goes out while other writes are in flight only once it
 * holds this many blocks (or someone waits for it): each record costs a
 * 4 KiB header, and a record sealed at every free slot would carry one or
 * two blocks. Smaller ones wait for the writes in flight to land, and then
 * for the linger below, as a lone writer always did.
 */
#define LSFS_PIPE_MIN_DESC 16

/* Issue the sealed log not yet written, oldest first, while slots are free. */
static void kick(struct lsfs *ls)
{
	while (ls->wr_n < ls->opts.log_writes && !ls->failed) {
		struct lsfs_buf *b = NULL;
		for (int i = 0; i < LSFS_NBUF; i++) {
			struct lsfs_buf *bi = &ls->bufs[i];
			if (bi->active && bi->issued < bi->sealed_end &&
			    (!b || bi->seg_seq < b->seg_seq))
				b = bi;
		}
		if (!b && ls->rec_open) {
			if (ls->wr_n > 0 ? !ls->rec_urgent && !ls->closing &&
					   ls->rec_ndesc < LSFS_PIPE_MIN_DESC
					 : linger_hold(ls))
				return;
			seal_record(ls);
			b = ls->cur;
		}
		if (!b)
			return;
		uint32_t start = b->issued;
		uint32_t slot = (ls->wr_head + ls->wr_n) % LSFS_MAX_WRITES;
		ls->wr[slot] = (struct lsfs_wr){ .b = b, .end = b->sealed_end, .seq = b->sealed_seq };
		ls->wr_n++;
		ls->log_since_ckpt += b->sealed_end - start;
		b->issued = b->sealed_end;
		ls->st.batches++;
		int ret = child_submit(ls, TND_IO_WRITE,
				       ls->sb.seg_off + (uint64_t)b->seg * ls->sb.seg_size + start,
				       b->data + start, b->sealed_end - start, write_done, NULL, slot);
		if (ret < 0) {
			ls->wr_n--;
			fail_stop(ls, ret, "write");
		}
	}
}

static void kick_msg_fn(struct tnd_msg *m)
{
	struct lsfs *ls = tnd_container_of(m, struct lsfs, kick_msg);
	ls->kick_pending = false;
	kick(ls);
	close_check(ls);
}

/*
 * Kick the writer once the current burst has been appended: the message
 * runs after everything already queued on the reactor, so writes that
 * arrive together leave in one backing write.
 */
static void schedule_kick(struct lsfs *ls)
{
	if (ls->kick_pending || ls->wr_n >= ls->opts.log_writes)
		return;
	ls->kick_pending = true;
	ls->kick_msg.fn = kick_msg_fn;
	tnd_reactor_send(ls->home, &ls->kick_msg);
}

/*
 * Batching. Every record costs a 4 KiB header, so a record of 5 blocks
 * writes 20 % more than its data (and fills segments that much faster,
 * which GC pays for again). When the writer is idle and the open record
 * is small, it may wait up to batch_linger_us for more writes to join, as
 * long as they keep coming (a 50 us gap ends it). Never when someone waits
 * for the record to be durable (FUA, write-through, a checkpoint), and it
 * backs off when lingering catches nothing (a lone writer at queue depth
 * 1 then pays for one probe in 64 records).
 */
#define LSFS_LINGER_GAP_NS 50000ull

static void linger_fn(struct tnd_timer *t)
{
	struct lsfs *ls = tnd_container_of(t, struct lsfs, linger);
	ls->linger_armed = false;
	if (!ls->rec_open || ls->wr_n > 0 || ls->failed)
		return;
	uint64_t now = tnd_now_ns();
	bool grew = ls->rec_ndesc > ls->linger_ndesc;
	if (grew && !ls->rec_urgent && !ls->closing &&
	    now - ls->linger_start < (uint64_t)ls->opts.batch_linger_us * 1000 &&
	    ls->rec_ndesc < LSFS_REC_MAX_DESC / 2) {
		ls->linger_ndesc = ls->rec_ndesc;
		ls->linger_armed = true;
		tnd_reactor_timer_arm(ls->home, &ls->linger, LSFS_LINGER_GAP_NS);
		return;
	}
	if (!grew && now - ls->linger_start < 2 * LSFS_LINGER_GAP_NS) {
		if (++ls->linger_misses >= 4) {
			ls->linger_misses = 0;
			ls->linger_skip = 64;
		}
	} else {
		ls->linger_misses = 0;
	}
	seal_record(ls);
	kick(ls);
	close_check(ls);
}

/* kick() is about to seal a small open record: wait for more instead? */
static bool linger_hold(struct lsfs *ls)
{
	if (ls->linger_armed)
		return true;
	if (!ls->opts.batch_linger_us || ls->rec_urgent || ls->closing ||
	    ls->rec_ndesc >= LSFS_REC_MAX_DESC / 2)
		return false;
	if (ls->linger_skip) {
		ls->linger_skip--;
		return false;
	}
	ls->linger_armed = true;
	ls->linger_ndesc = ls->rec_ndesc;
	ls->linger_start = tnd_now_ns();
	tnd_reactor_timer_arm(ls->home, &ls->linger, LSFS_LINGER_GAP_NS);
	return true;
}

/* Seal and send what lingers now (urgent waiter, closing). */
static void linger_stop(struct lsfs *ls)
{
	if (!ls->linger_armed)
		return;
	tnd_reactor_timer_cancel(ls->home, &ls->linger);
	ls->linger_armed = false;
	if (ls->rec_open && ls->wr_n < ls->opts.log_writes && !ls->failed) {
		seal_record(ls);
		kick(ls);
	}
}

static void flush_done(struct lsfs_child *c, int status)
{
	struct lsfs *ls = c->ls;
	ls->flush_busy = false;
	if (status < 0) {
		fail_stop(ls, status, "flush");
		return;
	}
	if (ls->flush_target > ls->durable_seq)
		ls->durable_seq = ls->flush_target;
	struct lsfs_waiter *w;
	while ((w = wq_pop_upto(&ls->wait_durable, ls->durable_seq)) != NULL)
		w->fn(w, 0);
	maybe_flush(ls);
	/* Someone's flush may have made dead segments reusable. */
	if (ls->nreclaim_pending && !ls->reclaim_busy) {
		uint32_t before = ls->nfree;
		reclaim_kick(ls);
		if (ls->nfree > before)
			pump(ls);
	}
}

static void maybe_flush(struct lsfs *ls)
{
	if (ls->flush_busy || ls->failed || !ls->wait_durable.head ||
	    ls->wait_durable.head->need > ls->written_seq)
		return;
	ls->flush_busy = true;
	ls->flush_target = ls->written_seq;
	ls->st.backing_flushes++;
	int ret = child_submit(ls, TND_IO_FLUSH, 0, NULL, 0, flush_done, NULL, 0);
	if (ret < 0) {
		ls->flush_busy = false;
		fail_stop(ls, ret, "flush");
	}
}

static void flush_io_done(struct lsfs_waiter *w, int status)
{
	struct lsfs_ioctx *x = tnd_container_of(w, struct lsfs_ioctx, w);
	complete_io(x, status);
}

static void start_flush_io(struct lsfs *ls, struct lsfs_ioctx *x)
{
	ls->st.flushes++;
	if (ls->failed) {
		complete_io(x, -EROFS);
		return;
	}
	/*
	 * Every write that has completed is in a record up to acked_rec
	 * (acknowledged from RAM) or written_seq (write-through and FUA
	 * writes complete once written). A record not yet on the backing
	 * volume goes out now: no lingering while a flush waits for it.
	 */
	uint64_t need = TND_MAX(ls->acked_rec, ls->written_seq);
	if (need <= ls->durable_seq) {
		complete_io(x, 0);
		return;
	}
	x->stage = IO_WAIT;
	x->w.need = need;
	x->w.fn = flush_io_done;
	wq_push_ordered(&ls->wait_durable, &x->w);
	if (need > ls->written_seq) {
		if (ls->rec_open && ls->rec_seq <= need)
			ls->rec_urgent = true;
		linger_stop(ls);
		schedule_kick(ls);
	}
	maybe_flush(ls);
}

/* ---- reads ---- */

/* Check and decode the stored bytes @p of a payload laid out as @aux and
 * give the caller bytes [s, e) of the chunk. 0 or -EILSEQ. */
static int deliver(struct lsfs *ls, struct tnd_io *io, uint64_t iov_off, uint32_t crc, uint16_t aux,
		   const uint8_t *p, uint32_t s, uint32_t e)
{
	if (lsfs_aux_lz4(aux)) {
		int ret = decode_payload(ls, crc, aux, p, ls->dbuf);
		if (ret < 0)
			return ret;
		p = ls->dbuf;
	} else if (tnd_crc32c(0, p, LSFS_BLK) != crc) {
		ls->st.crc_errors++;
		return -EILSEQ;
	}
	copy_to_iov(io->iov, io->iovcnt, iov_off, p + s, e - s);
	return 0;
}

static void read_done(struct lsfs_child *c, int status)
{
	struct lsfs *ls = c->ls;
	struct lsfs_ioctx *x = c->arg;
	if (status < 0)
		x->status = -EIO;
	if (--x->pending)
		return;
	struct tnd_io *io = x->io;
	for (uint32_t i = 0; i < x->nslots; i++) {
		struct rd_slot *sl = &x->slots[i];
		const uint8_t *p = x->bounce + (size_t)sl->boff * LSFS_BLK + lsfs_aux_sector(sl->aux) * LSFS_SECTOR;
		ls->readers[sl->seg]--;
		if (x->status == -EIO)
			continue;
		if (deliver(ls, io, sl->iov_off, sl->crc, sl->aux, p, sl->s, sl->e) < 0) {
			tnd_warn(LSFS_TAG, "CRC mismatch reading physical block %llu", (unsigned long long)sl->pba);
			x->status = -EILSEQ;
		}
	}
	complete_io(x, x->status);
}

static void start_read(struct lsfs *ls, struct lsfs_ioctx *x)
{
	struct tnd_io *io = x->io;
	uint32_t lbs = ls->sb.block_size;
	ls->st.reads++;
	if (io->lba + io->nblocks > ls->num_blocks || io->lba + io->nblocks < io->lba ||
	    tnd_iov_length(io->iov, io->iovcnt) < (size_t)io->nblocks * lbs) {
		complete_io(x, -EINVAL);
		return;
	}
	x->b0 = io->lba * lbs;
	x->b1 = (io->lba + io->nblocks) * lbs;
	x->c0 = x->b0 / LSFS_BLK;
	x->c1 = (x->b1 + LSFS_BLK - 1) / LSFS_BLK;
	uint32_t ndisk = 0, nblk = 0;
	for (uint64_t c = x->c0; c < x->c1; c++) {
		const struct lsfs_ment *m = lsfs_map_get(&ls->map, c);
		if (m && !ram_payload(ls, m)) {
			ndisk++;
			nblk += lsfs_aux_blocks(m->aux);
		}
	}
	if (ndisk) {
		x->slots = calloc(ndisk, sizeof(*x->slots));
		x->bounce = lsfs_alloc_blocks((size_t)nblk * LSFS_BLK);
		if (!x->slots || !x->bounce) {
			complete_io(x, -ENOMEM);
			return;
		}
	}
	uint32_t boff = 0;
	for (uint64_t c = x->c0; c < x->c1; c++) {
		uint64_t cs = c * LSFS_BLK;
		uint64_t s = TND_MAX(cs, x->b0), e = TND_MIN(cs + LSFS_BLK, x->b1);
		uint64_t iov_off = s - x->b0;
		const struct lsfs_ment *m = lsfs_map_get(&ls->map, c);
		if (!m) {
			zero_iov(io->iov, io->iovcnt, iov_off, e - s);
			continue;
		}
		uint64_t pba = lsfs_ment_pba(m);
		const uint8_t *p = ram_payload(ls, m);
		if (p) {
			if (deliver(ls, io, iov_off, m->crc, m->aux, p, (uint32_t)(s - cs), (uint32_t)(e - cs)) < 0)
				x->status = -EILSEQ;
			continue;
		}
		struct rd_slot *sl = &x->slots[x->nslots++];
		*sl = (struct rd_slot){ .iov_off = iov_off, .s = (uint32_t)(s - cs), .e = (uint32_t)(e - cs),
					.crc = m->crc, .seg = seg_of(ls, pba), .pba = pba, .aux = m->aux,
					.boff = boff };
		boff += lsfs_aux_blocks(m->aux);
		/* Pin the segment: it must not be reused under this read. */
		ls->readers[sl->seg]++;
	}
	if (!x->nslots) {
		complete_io(x, x->status);
		return;
	}
	/* One backing read per run of physically adjacent blocks (the bounce
	 * blocks of a run are adjacent too). */
	x->pending = 1;
	for (uint32_t i = 0; i < x->nslots;) {
		uint32_t n = 1;
		uint32_t blocks = lsfs_aux_blocks(x->slots[i].aux);
		while (i + n < x->nslots && x->slots[i + n].pba == x->slots[i].pba + blocks) {
			blocks += lsfs_aux_blocks(x->slots[i + n].aux);
			n++;
		}
		x->pending++;
		int ret = child_submit(ls, TND_IO_READ, x->slots[i].pba * LSFS_BLK,
				       x->bounce + (size_t)x->slots[i].boff * LSFS_BLK, (size_t)blocks * LSFS_BLK,
				       read_done, x, 0);
		if (ret < 0) {
			x->pending--;
			x->status = -EIO;
		}
		i += n;
	}
	struct lsfs_child fake = { .ls = ls, .arg = x };
	read_done(&fake, 0);
}

/* ---- checkpoints ---- */

static void ckpt_finish(struct lsfs *ls, int status)
{
	ls->ckpt_busy = false;
	free(ls->ckpt_buf);
	ls->ckpt_buf = NULL;
	if (status == 0)
		ckpt_apply_frees(ls);
	memset(ls->ckpt_frees, 0, ls->sb.seg_count * sizeof(*ls->ckpt_frees));
	tnd_done_cb cb = ls->ckpt_cb;
	ls->ckpt_cb = NULL;
	if (cb)
		cb(ls->ckpt_cb_arg);
	pump(ls);
	gc_step(ls);
}

static void ckpt_flushed(struct lsfs_child *c, int status)
{
	struct lsfs *ls = c->ls;
	if (status < 0)
		fail_stop(ls, status, "flush");
	ckpt_finish(ls, status);
}

static void ckpt_written(struct lsfs_child *c, int status)
{
	struct lsfs *ls = c->ls;
	if (status < 0) {
		fail_stop(ls, status, "checkpoint write");
		ckpt_finish(ls, status);
		return;
	}
	int ret = child_submit(ls, TND_IO_FLUSH, 0, NULL, 0, ckpt_flushed, NULL, 0);
	if (ret < 0) {
		fail_stop(ls, ret, "flush");
		ckpt_finish(ls, ret);
	}
}

/* The log up to the snapshot is durable: now the checkpoint may be. */
static void ckpt_data_durable(struct lsfs_waiter *w, int status)
{
	struct lsfs *ls = tnd_container_of(w, struct lsfs, ckpt_w);
	if (status < 0) {
		ckpt_finish(ls, status);
		return;
	}
	uint64_t off = ls->sb.ckpt_off + (ls->ckpt_seq & 1) * ls->sb.ckpt_size;
	ls->st.ckpt_bytes_written += ls->ckpt_len;
	int ret = child_submit(ls, TND_IO_WRITE, off, ls->ckpt_buf, ls->ckpt_len, ckpt_written, NULL, 0);
	if (ret < 0) {
		fail_stop(ls, ret, "checkpoint write");
		ckpt_finish(ls, ret);
	}
}

static void ckpt_data_written(struct lsfs_waiter *w, int status)
{
	struct lsfs *ls = tnd_container_of(w, struct lsfs, ckpt_w);
	if (status < 0) {
		ckpt_finish(ls, status);
		return;
	}
	w->fn = ckpt_data_durable;
	wq_push(&ls->wait_durable, w);
}

/*
 * Snapshot the map and segment table at a record boundary, wait until the
 * log up to there is durable, write the snapshot into the older of the two
 * areas, flush. The snapshot is a full copy for now (24 bytes per mapped
 * block); an incremental one is future work.
 */
static int ckpt_build(struct lsfs *ls)
{
	seal_record(ls);
	const struct lsfs_sb *sb = &ls->sb;
	uint64_t nmapped = ls->map.mapped;
	uint64_t body_len = (uint64_t)sb->seg_count * LSFS_CKPT_SEG_ENT + nmapped * LSFS_CKPT_MAP_ENT;
	size_t len = (LSFS_BLK + body_len + LSFS_BLK - 1) & ~(size_t)(LSFS_BLK - 1);
	if (len > sb->ckpt_size) {
		/* map_room() keeps this from happening; never spill into the
		 * other area. */
		tnd_err(LSFS_TAG, "checkpoint of %llu map entries does not fit its area",
			(unsigned long long)nmapped);
		return -EOVERFLOW;
	}
	uint8_t *buf = lsfs_alloc_blocks(len);
	if (!buf)
		return -ENOMEM;
	uint8_t *p = buf + LSFS_BLK;
	for (uint32_t i = 0; i < sb->seg_count; i++, p += LSFS_CKPT_SEG_ENT) {
		const struct lsfs_seginfo *s = &ls->segs[i];
		bool used = s->state == LSFS_SEG_USED || s->state == LSFS_SEG_OPEN;
		ls->ckpt_frees[i] = s->state == LSFS_SEG_DEAD ? s->seq + 1 : 0;
		tnd_put_be64(p, s->seq);
		tnd_put_be32(p + 8, used ? s->live : 0);
		tnd_put_be32(p + 12, used ? LSFS_SEG_USED : LSFS_SEG_FREE);
	}
	uint64_t n = 0;
	for (uint64_t c = 0; lsfs_map_next(&ls->map, &c); c++, n++, p += LSFS_CKPT_MAP_ENT) {
		const struct lsfs_ment *m = lsfs_map_get(&ls->map, c);
		tnd_put_be64(p, c);
		tnd_put_be64(p + 8, lsfs_ment_pba(m));
		tnd_put_be32(p + 16, m->crc);
		tnd_put_be32(p + 20, m->aux);
	}
	struct lsfs_ckpt ck = {
		.ckpt_seq = ++ls->ckpt_seq,
		.num_blocks = ls->num_blocks,
		.next_rec_seq = ls->next_rec_seq,
		.replay_seg = ls->cur ? ls->cur->seg : ls->tail_seg,
		.replay_off = ls->cur ? ls->cur->fill : ls->tail_off,
		.replay_seg_seq = ls->cur ? ls->cur->seg_seq : ls->tail_seg_seq,
		.max_seg_seq = ls->max_seg_seq,
		.seg_count = sb->seg_count,
		.nmapped = n,
		.body_len = body_len,
		.next_seg = ls->next_seg,
	};
	memcpy(ck.uuid, sb->uuid, 16);
	ck.body_crc = tnd_crc32c(0, buf + LSFS_BLK, body_len);
	lsfs_ckpt_encode_head(&ck, buf);
	ls->ckpt_buf = buf;
	ls->ckpt_len = len;
	ls->ckpt_replay_seq = ck.replay_seg_seq;
	ls->last_ckpt_bytes = len;
	ls->segs_since_ckpt = 0;
	ls->log_since_ckpt = 0;
	return 0;
}

/* Segments that were dead in the snapshot are not needed by any replay
 * once it is durable: they can be written again (unless they already
 * were, by reclaim, and died again since: their seg_seq tells). Replay
 * from now on starts at the snapshot's tail. */
static void ckpt_apply_frees(struct lsfs *ls)
{
	ls->base_replay_seq = ls->ckpt_replay_seq;
	for (uint32_t i = 0; i < ls->sb.seg_count; i++) {
		if (ls->ckpt_frees[i] && ls->segs[i].state == LSFS_SEG_DEAD &&
		    ls->segs[i].seq + 1 == ls->ckpt_frees[i]) {
			ls->segs[i].state = LSFS_SEG_FREE;
			ls->ndead--;
			ls->nfree++;
			ls->gc_stalled = false;
		}
	}
	ls->st.checkpoints++;
}

static int ckpt_start(struct lsfs *ls, tnd_done_cb cb, void *arg)
{
	if (ls->failed)
		return -EROFS;
	if (ls->ckpt_busy)
		return -EBUSY;
	int ret = ckpt_build(ls);
	if (ret < 0)
		return ret;
	ls->ckpt_busy = true;
	ls->ckpt_cb = cb;
	ls->ckpt_cb_arg = arg;
	ls->ckpt_w.need = ls->next_rec_seq - 1;
	if (ls->ckpt_w.need <= ls->durable_seq) {
		ckpt_data_durable(&ls->ckpt_w, 0);
	} else if (ls->ckpt_w.need <= ls->written_seq) {
		ls->ckpt_w.fn = ckpt_data_durable;
		wq_push(&ls->wait_durable, &ls->ckpt_w);
		maybe_flush(ls);
	} else {
		ls->ckpt_w.fn = ckpt_data_written;
		wq_push(&ls->wait_written, &ls->ckpt_w);
		schedule_kick(ls);
	}
	return 0;
}

/* ---- reclaiming dead segments without a checkpoint ---- */

/*
 * Free every dead segment that replay from the newest durable checkpoint
 * never reads (it was opened before that checkpoint's tail: seg_seq <
 * base_replay_seq) and whose killer record is durable; see the essay at
 * the top for why that is safe. Counts the dead segments still waiting
 * for a flush (nreclaim_pending) or for a checkpoint (ndead_locked), and
 * returns the record a flush must cover to free the former (0: none).
 */
static uint64_t reclaim_scan(struct lsfs *ls)
{
	uint64_t need = 0;
	uint32_t pending = 0, locked = 0;
	for (uint32_t i = 0; ls->ndead > 0 && i < ls->sb.seg_count; i++) {
		struct lsfs_seginfo *s = &ls->segs[i];
		if (s->state != LSFS_SEG_DEAD)
			continue;
		if (s->seq >= ls->base_replay_seq) {
			locked++;
		} else if (ls->dead_rec[i] > ls->durable_seq) {
			pending++;
			need = TND_MAX(need, ls->dead_rec[i]);
		} else {
			s->state = LSFS_SEG_FREE;
			ls->ndead--;
			ls->nfree++;
			ls->gc_stalled = false;
			ls->st.reclaimed_segments++;
		}
	}
	ls->nreclaim_pending = pending;
	ls->ndead_locked = locked;
	return need;
}

static void reclaim_durable(struct lsfs_waiter *w, int status)
{
	struct lsfs *ls = tnd_container_of(w, struct lsfs, reclaim_w);
	ls->reclaim_busy = false;
	if (status == 0)
		reclaim_scan(ls);
	tnd_done_cb cb = ls->reclaim_cb;
	if (cb && status == 0 && ls->nreclaim_pending) {
		reclaim_kick(ls);             /* more died meanwhile: the caller waits for all */
		if (ls->reclaim_busy)
			cb = NULL;
	}
	if (cb) {
		ls->reclaim_cb = NULL;
		cb(ls->reclaim_cb_arg);
	}
	pump(ls);
	gc_step(ls);
}

/* Reclaim once what @w->need covers is durable (a backing flush away). */
static void reclaim_wait_durable(struct lsfs *ls, struct lsfs_waiter *w)
{
	w->fn = reclaim_durable;
	wq_push_ordered(&ls->wait_durable, w);
	maybe_flush(ls);
}

static void reclaim_written(struct lsfs_waiter *w, int status)
{
	struct lsfs *ls = tnd_container_of(w, struct lsfs, reclaim_w);
	if (status < 0) {
		reclaim_durable(w, status);
		return;
	}
	reclaim_wait_durable(ls, w);
}

/*
 * Free what can be freed now; for dead segments whose killer is not yet
 * durable, get a backing flush going (one flush frees them all).
 */
static void reclaim_kick(struct lsfs *ls)
{
	uint64_t need = reclaim_scan(ls);
	if (!need || ls->reclaim_busy || ls->failed)
		return;
	ls->reclaim_busy = true;
	struct lsfs_waiter *w = &ls->reclaim_w;
	w->need = need;
	if (need <= ls->written_seq) {
		reclaim_wait_durable(ls, w);
	} else {
		w->fn = reclaim_written;
		wq_push_ordered(&ls->wait_written, w);
		schedule_kick(ls);
	}
}

/*
 * Dead segments inside the durable checkpoint's replay wait for the next
 * checkpoint. Taking one early for space pays when it writes less per
 * byte it frees than cleaning the best victim would (its live blocks per
 * dead one), or when nothing else can make room.
 */
static bool ckpt_for_space(struct lsfs *ls)
{
	if (ls->ndead_locked == 0 || ls->ckpt_busy)
		return false;
	uint32_t v = ls->gc_stalled ? LSFS_NONE32 : pick_victim(ls);
	if (v == LSFS_NONE32)
		return ls->nreclaim_pending == 0 && !ls->reclaim_busy;
	/* In sectors, as pick_victim: packed payloads fill less than a slot. */
	uint32_t cap = (ls->seg_blocks - 1) * (LSFS_BLK / LSFS_SECTOR), live = ls->segs[v].live_sec;
	double gc_cost = (double)live / (double)(cap - live);
	double ckpt_cost = (double)ls->last_ckpt_bytes / ((double)ls->ndead_locked * ls->sb.seg_size);
	return ckpt_cost < gc_cost;
}

/* ---- garbage collection ---- */

/*
 * Cost-benefit (as in Sprite LFS): benefit/cost = (1 - u) * age / (1 + u),
 * u the live fraction, age in segments written since. Cold, mostly dead
 * segments first; a segment that would free less than two blocks is not
 * worth a pass.
 */
static uint32_t pick_victim(struct lsfs *ls)
{
	uint32_t best = LSFS_NONE32;
	double best_score = 0;
	/* In sectors: compressed payloads use less than a slot each. */
	uint32_t cap = (ls->seg_blocks - 1) * (LSFS_BLK / LSFS_SECTOR);
	/*
	 * A pass moves the victim's live blocks to free its dead ones, and
	 * the moved blocks bring record headers of their own. A victim with
	 * only a sliver dead (a segment filled by large writes: its headers)
	 * would give back next to nothing: on a full store GC would churn
	 * through such segments forever while writers wait, instead of the
	 * writers failing with ENOSPC. So a victim must have at least 1/32 of
	 * a segment, and two blocks, dead; a store whose segments are all
	 * fuller than that is full.
	 */
	uint32_t min_dead = TND_MAX(2u * (LSFS_BLK / LSFS_SECTOR), cap / 32);
	for (uint32_t i = 0; i < ls->sb.seg_count; i++) {
		const struct lsfs_seginfo *s = &ls->segs[i];
		if (s->state != LSFS_SEG_USED || ls->gc_skip[i] || ls->stg_pinned[i] ||
		    s->live_sec + min_dead > cap)
			continue;
		/* GC reads the victim from disk: all of it must be there. */
		const struct lsfs_buf *b = buf_of_seg(ls, i);
		if (b && b->done < b->fill)
			continue;
		double u = (double)s->live_sec / cap;
		double age = (double)(ls->max_seg_seq - s->seq + 1);
		double score = (1 - u) * age / (1 + u);
		if (best == LSFS_NONE32 || score > best_score) {
			best = i;
			best_score = score;
		}
	}
	return best;
}

/*
 * Compaction: the segment whose move gains most, counting the deferred
 * chunks in it (each expected to save half its sectors, about what LZ4
 * does on data worth compressing) and its dead sectors. Unlike GC's
 * victim it may be full: compressing is the point. The moves land in the
 * log head compressed and unmarked, so a segment is never picked again
 * for the same blocks, compressible or not.
 */
static uint32_t pick_compact_victim(struct lsfs *ls)
{
	uint32_t best = LSFS_NONE32;
	uint64_t best_gain = 0;
	uint32_t cap = (ls->seg_blocks - 1) * (LSFS_BLK / LSFS_SECTOR);
	for (uint32_t i = 0; i < ls->sb.seg_count; i++) {
		const struct lsfs_seginfo *s = &ls->segs[i];
		if (s->state != LSFS_SEG_USED || !s->deferred || ls->gc_skip[i] || ls->stg_pinned[i])
			continue;
		const struct lsfs_buf *b = buf_of_seg(ls, i);
		if (b && b->done < b->fill)
			continue;
		uint64_t gain = (uint64_t)s->deferred * (LSFS_BLK / LSFS_SECTOR / 2) +
				(s->live_sec < cap ? cap - s->live_sec : 0);
		if (best == LSFS_NONE32 || gain > best_gain) {
			best = i;
			best_gain = gain;
		}
	}
	return best;
}

/*
 * Idle compaction: deferred blocks exist, compression is on, the volume
 * has had no client write for compact_idle_ms (counted in ticks), and
 * there is room to move into beyond what GC keeps for itself. A client
 * write ends it (start_write resets idle_ticks): the pass under way
 * finishes, no next one starts.
 */
static bool compact_wanted(const struct lsfs *ls)
{
	if (!ls->cctx || !ls->ndeferred || !ls->opts.compact_idle_ms || !ls->opts.gc_interval_ms)
		return false;
	uint32_t need = (ls->opts.compact_idle_ms + ls->opts.gc_interval_ms - 1) / ls->opts.gc_interval_ms;
	return ls->idle_ticks >= TND_MAX(need, 1u) && ls->nfree > ls->opts.gc_free_low + LSFS_GC_RESERVE;
}

static void gc_finish(struct lsfs *ls)
{
	if (ls->gc_pinned) {
		ls->readers[ls->gc_victim]--;
		ls->gc_pinned = false;
	}
	ls->gc_busy = false;
	ls->gc_wait_buf = false;
	ls->gc_compact = false;
	ls->st.gc_passes++;
	tnd_done_cb cb = ls->gc_cb;
	void *arg = ls->gc_cb_arg;
	ls->gc_cb = NULL;
	if (cb) {
		/* An explicit pass ends when what it emptied is free: after a
		 * flush, or a checkpoint when replay still reads it. */
		bool waits = false;
		if (!ls->failed && ls->ndead > 0) {
			reclaim_kick(ls);
			if (ls->reclaim_busy && !ls->reclaim_cb) {
				ls->reclaim_cb = cb;
				ls->reclaim_cb_arg = arg;
				waits = true;
			} else if (ls->ndead_locked > 0) {
				waits = ckpt_start(ls, cb, arg) == 0;
			}
		}
		if (!waits)
			cb(arg);
	}
	pump(ls);
	gc_step(ls);
}

/*
 * Is there room in the open segment for one more descriptor and @len bytes
 * of payload without closing it? (make_room's arithmetic: a full record is
 * sealed and the next one starts at the fill.)
 */
static bool room_in_cur(const struct lsfs *ls, uint32_t len)
{
	const struct lsfs_buf *b = ls->cur;
	if (!b)
		return false;
	bool same = ls->rec_open && ls->rec_ndesc < LSFS_REC_MAX_DESC;
	uint64_t start = same ? ls->rec_off : b->fill;
	uint64_t sec = (same ? ls->rec_sec : 0) + lsfs_len_sectors(len);
	uint64_t end = start + LSFS_BLK + (sec * LSFS_SECTOR + LSFS_BLK - 1) / LSFS_BLK * LSFS_BLK;
	return end <= ls->sb.seg_size;
}

/*
 * The payload a move of @m's stored bytes @src appends. As stored, except
 * a DEFERRED one while compression is on: verified against its CRC, then
 * LZ4-compressed into ls->gcz when that saves a sector (the write path's
 * rule), with the CRC of the new bytes; else raw as it was. Either way it
 * is no longer deferred: a payload that does not compress is not tried
 * again. With compression off the mark stays (a later move, or idle
 * compaction once compression is back on, compresses it). One whose CRC
 * fails moves as it is, mark dropped: it stays unreadable, never blessed
 * with a new CRC, and compaction does not come back for it.
 */
struct gc_pay {
	const uint8_t *p;
	uint32_t len, crc;
	uint16_t flags;                /* LSFS_DESC_F_LZ4 / _DEFERRED */
	bool compacted;                /* was deferred, now compressed */
};

static void gc_payload(struct lsfs *ls, const struct lsfs_ment *m, const uint8_t *src, struct gc_pay *out)
{
	*out = (struct gc_pay){ .p = src, .len = lsfs_aux_len(m->aux), .crc = m->crc,
				.flags = lsfs_aux_lz4(m->aux) ? LSFS_DESC_F_LZ4 : 0 };
	if (!lsfs_aux_deferred(m->aux))
		return;
	if (!ls->cctx) {
		out->flags = LSFS_DESC_F_DEFERRED;
		return;
	}
	size_t clen = 0;
	if (tnd_crc32c(0, src, LSFS_BLK) == m->crc &&
	    tnd_compress_block(ls->cctx, src, LSFS_BLK, ls->gcz, LSFS_LZ4_MAX, &clen) ==
		    TND_COMPRESS_COMPRESSED &&
	    clen > 0 && clen <= LSFS_LZ4_MAX) {
		out->p = ls->gcz;
		out->len = (uint32_t)clen;
		out->crc = tnd_crc32c(0, ls->gcz, clen);
		out->flags = LSFS_DESC_F_LZ4;
		out->compacted = true;
	}
}

static uint16_t gc_pay_aux(const struct gc_pay *gp, uint32_t sector)
{
	return gp->flags & LSFS_DESC_F_DEFERRED ? lsfs_aux_make_deferred(sector)
						 : lsfs_aux_make(gp->flags & LSFS_DESC_F_LZ4, sector, gp->len);
}

/*
 * Move chunk @lba, whose payload GC found at @loc with the stored bytes
 * @src (borrowed: the payload as read from the victim), to the log head,
 * unless the chunk no longer maps it there (overwritten, unmapped or moved
 * meanwhile: the move must not resurrect it). With dedup a shared payload
 * moves once (@g) and its sharers follow the new copy (its address, CRC
 * and layout). The stored bytes, LZ4 or not, their length and CRC move
 * unchanged, except a DEFERRED payload's, which is compressed now
 * (gc_payload). With @whole the move must fit in the open segment as it
 * is (a GC-only segment is never closed for a move and never continued by
 * one). 0: done with this chunk; 1: @whole and no room; or make_room's
 * -errno (-EAGAIN: wait for a buffer).
 */
static int gc_move(struct lsfs *ls, struct gc_grp *g, uint64_t lba, uint64_t loc, const uint8_t *src,
		   bool whole)
{
	const struct lsfs_ment *m = lsfs_map_get(&ls->map, lba);
	if (!m || lsfs_ment_loc(m) != loc)
		return 0;
	if (loc != g->old) {
		g->old = loc;
		g->new_loc = 0;
	}
	const struct lsfs_ment *gm = g->new_loc ? lsfs_map_get(&ls->map, g->lba) : NULL;
	bool follow = gm && lsfs_ment_loc(gm) == g->new_loc;
	struct gc_pay gp;
	gc_payload(ls, m, src, &gp);
	/* (A sharer whose count is saturated needs a copy: room for one.) */
	if (whole && !room_in_cur(ls, gp.len))
		return 1;
	int ret = make_room(ls, follow ? 0 : gp.len);
	if (ret < 0)
		return ret;
	if (follow && tnd_dedup_ref_inc(ls->refs, g->new_loc) >= 0) {
		gm = lsfs_map_get(&ls->map, g->lba);
		uint16_t gaux = gm->aux;
		uint32_t glen = lsfs_aux_len(gaux);
		add_desc(ls, lba, gm->crc, (uint16_t)(LSFS_DESC_DATA | LSFS_DESC_F_DEDUP |
						      (lsfs_aux_lz4(gaux) ? LSFS_DESC_F_LZ4 : 0) |
						      (lsfs_aux_deferred(gaux) ? LSFS_DESC_F_DEFERRED : 0)),
			 (uint16_t)glen, g->new_loc);
		map_update(ls, lba, g->new_loc >> 3, gm->crc, gaux, true);
		ls->st.gc_moved_blocks++;
		return 0;
	}
	if (follow) {
		/* No count to add to: give this sharer its own copy. */
		ret = make_room(ls, gp.len);
		if (ret < 0)
			return ret;
	}
	m = lsfs_map_get(&ls->map, lba);
	uint16_t old_aux = m->aux;
	uint64_t npba;
	uint32_t nsector;
	uint8_t *slot = data_slot(ls, gp.len, &npba, &nsector);
	memcpy(slot, gp.p, gp.len);
	add_desc(ls, lba, gp.crc, (uint16_t)(LSFS_DESC_DATA | gp.flags), (uint16_t)gp.len, 0);
	uint16_t naux = gc_pay_aux(&gp, nsector);
	/* The index follows the payload (before the old address loses its
	 * last reference, which would drop the entry). */
	if (ls->ddx)
		tnd_dedup_move_pba(ls->ddx, dd_val(loc, old_aux), dd_val(npba << 3 | nsector, naux));
	map_update(ls, lba, npba, gp.crc, naux, false);
	if (ls->refs) {
		g->new_loc = npba << 3 | nsector;
		g->lba = lba;
	}
	ls->st.gc_moved_blocks++;
	if (lsfs_aux_deferred(old_aux) && !lsfs_aux_deferred(naux)) {
		if (gp.compacted) {
			ls->st.compacted_blocks++;
			ls->st.compacted_bytes_saved +=
				(uint64_t)(LSFS_BLK / LSFS_SECTOR - lsfs_len_sectors(gp.len)) * LSFS_SECTOR;
		} else {
			ls->st.compacted_raw_blocks++;
		}
	}
	/* What the move appends: its payload, packed (a sharer that follows
	 * appends a descriptor only). */
	ls->st.gc_bytes_written += (uint64_t)lsfs_len_sectors(gp.len) * LSFS_SECTOR;
	return 0;
}

/* The pass's moves, appended now among whatever else is being written. */
static void gc_continue(struct lsfs *ls)
{
	ls->gc_wait_buf = false;
	uint32_t v = ls->gc_victim;
	uint64_t base = lsfs_seg_base_pba(&ls->sb, v);
	ls->gc_in_append = true;
	while (ls->gc_next < ls->gc_nmoves && !ls->failed) {
		uint64_t loc = ls->gc_locs[ls->gc_next];
		const uint8_t *src = ls->gc_buf + ((loc >> 3) - base) * LSFS_BLK + (loc & 7) * LSFS_SECTOR;
		uint64_t moved = ls->st.gc_moved_blocks;
		int ret = gc_move(ls, &ls->gc_grp, ls->gc_lbas[ls->gc_next], loc, src, false);
		if (ret == -EAGAIN) {
			ls->gc_in_append = false;
			ls->gc_wait_buf = true;
			schedule_kick(ls);
			return;
		}
		if (ret < 0) {
			/* Until a checkpoint frees something, GC cannot help
			 * writers waiting for space: let them fail. Routine
			 * under heavy overwrites (the next flush or checkpoint
			 * frees segments), so not a warning; writes that do
			 * fail for space are reported on their own. */
			tnd_debug(LSFS_TAG, "gc: no room to move segment %u's blocks (%s)", v, strerror(-ret));
			ls->gc_stalled = true;
			break;
		}
		ls->st.gc_mixed_blocks += ls->st.gc_moved_blocks - moved;
		ls->gc_next++;
	}
	ls->gc_in_append = false;
	schedule_kick(ls);
	if (ls->segs[v].state == LSFS_SEG_DEAD)
		ls->st.gc_freed_segments++;
	else if (ls->gc_next >= ls->gc_nmoves && ls->segs[v].live > 0) {
		/* Live blocks the records do not account for: leave it alone. */
		tnd_warn(LSFS_TAG, "gc: segment %u keeps %u live blocks its records do not explain",
			 v, ls->segs[v].live);
		ls->gc_skip[v] = true;
	}
	gc_finish(ls);
}

/* ---- hot/cold separation: GC-only segments ---- */

static bool stg_any(const struct lsfs *ls)
{
	return ls->stg_next < ls->stg_n;
}

/*
 * A segment's worth staged (at least: a header per LSFS_REC_MAX_DESC
 * moves plus the payload blocks fill it)? The stage then waits for a
 * boundary; what does not fit in that GC segment stays staged for the
 * next one, so GC segments are written full.
 */
static bool stg_seg_worth(const struct lsfs *ls)
{
	uint32_t n = ls->stg_n - ls->stg_next;
	return (n + LSFS_REC_MAX_DESC - 1) / LSFS_REC_MAX_DESC + (ls->stg_sec + 7) / 8 >= ls->seg_blocks;
}

/* Room in the stage for @n more moves of @sec sectors? (Less than a
 * segment's worth is staged, and the buffer holds two.) */
static bool stg_fits(const struct lsfs *ls, uint32_t n, uint32_t sec)
{
	(void)n;
	return !stg_seg_worth(ls) && ls->stg_bsec + sec <= 2 * (ls->sb.seg_size / LSFS_SECTOR);
}

static bool gc_wanted(const struct lsfs *ls)
{
	return ls->nfree + ls->nreclaim_pending < ls->opts.gc_free_low;
}

static bool writers_wait(const struct lsfs *ls)
{
	return ls->aq_head && !ls->aq_head->space_ok;
}

/*
 * Room for a GC-only segment and the clients' next one beyond GC's
 * reserve? Below that, staged moves go out at once among the clients'
 * writes (as before separation): a near-full store cannot wait for a
 * boundary, and the reserve must stay GC's for moves that free space now.
 */
static bool stg_room(const struct lsfs *ls)
{
	return ls->nfree + (ls->next_seg != LSFS_NONE32) >= LSFS_GC_RESERVE + 1;
}

/*
 * Give staged victims back (their readers[] pins): those whose moves are
 * all appended (@drop false), or all of them (@drop: fail-stop, no room;
 * nothing was changed for a staged move until it is appended, so dropping
 * loses nothing). An emptied stage is reset; otherwise the moves left are
 * moved to the front of the stage.
 */
static void gc_stage_retire(struct lsfs *ls, bool drop)
{
	if (!ls->stg_pinned)
		return;
	if (drop)
		ls->stg_next = ls->stg_n;
	uint32_t k = 0;
	while (k < ls->stg_nvict && ls->stg_vict[k].end <= ls->stg_next) {
		uint32_t i = ls->stg_vict[k++].seg;
		ls->stg_pinned[i] = 0;
		ls->readers[i]--;
		if (drop)
			continue;
		if (ls->segs[i].state == LSFS_SEG_DEAD || ls->segs[i].state == LSFS_SEG_FREE) {
			ls->st.gc_freed_segments++;
		} else if (ls->segs[i].state == LSFS_SEG_USED && ls->segs[i].live > 0) {
			tnd_warn(LSFS_TAG, "gc: segment %u keeps %u live blocks its records do not explain",
				 i, ls->segs[i].live);
			ls->gc_skip[i] = true;
		}
	}
	memmove(ls->stg_vict, ls->stg_vict + k, (ls->stg_nvict - k) * sizeof(*ls->stg_vict));
	ls->stg_nvict -= k;
	if (!stg_any(ls)) {
		ls->stg_n = ls->stg_next = ls->stg_bsec = ls->stg_sec = 0;
		ls->stg_full = false;
		ls->stg_grp = (struct gc_grp){ 0 };
		return;
	}
	if (ls->stg_next == 0)
		return;
	/* Compact: the moves left and their bytes (in the same order) go to
	 * the front. */
	uint32_t first = ls->stg_next, boff = ls->stg[first].off;
	uint32_t n = ls->stg_n - first;
	memmove(ls->stg_buf, ls->stg_buf + boff, (size_t)ls->stg_bsec * LSFS_SECTOR - boff);
	memmove(ls->stg, ls->stg + first, (size_t)n * sizeof(*ls->stg));
	for (uint32_t i = 0; i < n; i++)
		ls->stg[i].off -= boff;
	for (uint32_t i = 0; i < ls->stg_nvict; i++)
		ls->stg_vict[i].end -= first;
	ls->stg_bsec -= boff / LSFS_SECTOR;
	ls->stg_n = n;
	ls->stg_next = 0;
	ls->stg_full = stg_seg_worth(ls);
}

/*
 * Staged victim @s no longer holds a mapped block (the clients overwrote
 * or unmapped the rest): its staged moves can only be dropped, so it need
 * not wait for them to be reused. Unpin it now (a pinned dead segment
 * would count as free but could not be opened), and make its moves name
 * no address (0 is never a payload's), so that a new life of the segment
 * cannot match one of them.
 */
static void gc_stage_unpin(struct lsfs *ls, uint32_t s)
{
	uint32_t start = 0;
	for (uint32_t k = 0; k < ls->stg_nvict; k++) {
		if (ls->stg_vict[k].seg != s) {
			start = ls->stg_vict[k].end;
			continue;
		}
		for (uint32_t i = TND_MAX(start, ls->stg_next); i < ls->stg_vict[k].end; i++)
			ls->stg[i].loc = 0;
		/* (Its range joins the next victim's: all dropped.) */
		memmove(ls->stg_vict + k, ls->stg_vict + k + 1, (ls->stg_nvict - k - 1) * sizeof(*ls->stg_vict));
		ls->stg_nvict--;
		ls->stg_pinned[s] = 0;
		ls->readers[s]--;
		ls->st.gc_freed_segments++;
		return;
	}
}

/*
 * Append the staged moves, in order. @whole: into the open GC-only
 * segment, up to its end (1: it is full, the rest stays staged); else
 * among the clients' writes, opening segments as needed (the fallback when
 * writers wait for space). 0 when all are appended (the stage is then
 * released), 1, or make_room's -errno.
 */
static int gc_stage_append(struct lsfs *ls, bool whole)
{
	int ret = 0;
	ls->gc_in_append = true;
	while (stg_any(ls) && !ls->failed) {
		const struct gc_stage_ent *e = &ls->stg[ls->stg_next];
		uint64_t moved = ls->st.gc_moved_blocks;
		ret = gc_move(ls, &ls->stg_grp, e->lba, e->loc, ls->stg_buf + e->off, whole);
		if (ret != 0)
			break;
		if (!whole)
			ls->st.gc_mixed_blocks += ls->st.gc_moved_blocks - moved;
		ls->stg_sec -= e->sec;
		ls->stg_next++;
	}
	ls->gc_in_append = false;
	if (ret == -EAGAIN) {
		schedule_kick(ls);
	} else if (ret < 0) {
		/* No room at all: drop the rest (nothing was changed for it)
		 * so that its victims are not held, and GC waits for space
		 * like a pass that found none. */
		tnd_debug(LSFS_TAG, "gc: no room to move %u staged blocks (%s)", ls->stg_n - ls->stg_next,
			  strerror(-ret));
		ls->gc_stalled = true;
		gc_stage_retire(ls, true);
	}
	if (!ls->failed)
		gc_stage_retire(ls, false);
	return ret;
}

/*
 * Stage the pass's moves instead of appending them now, when that is what
 * GC does (not for an explicit pass, not while writers wait for space) and
 * they fit in one GC-only segment with what is staged already. The stored
 * bytes are copied (the victim's buffer is the next pass's); the victim
 * stays pinned until the stage is appended. 1: staged; 2: left for later
 * (the stage is full: nothing was changed, the victim will be read again);
 * 0: move now.
 */
static int gc_stage_add(struct lsfs *ls)
{
	if (ls->opts.gc_mix || ls->gc_cb || ls->gc_compact || writers_wait(ls) || ls->closing || !ls->stg_buf ||
	    !stg_room(ls))
		return 0;
	uint32_t v = ls->gc_victim;
	uint64_t base = lsfs_seg_base_pba(&ls->sb, v);
	/* The moves were listed just now, in this same turn of the reactor
	 * (gc_read_done or gc_collect_from_map, from the map as it is): all
	 * live, their stored sizes taken with them, so staging looks nothing
	 * up in the map again (a map lookup is a cache miss per block; the
	 * append checks each move against the map anyway). */
	uint32_t n = ls->gc_nmoves, sec = 0;
	uint64_t prev = 0;
	for (uint32_t i = 0; i < n; i++) {
		if (ls->gc_locs[i] != prev)
			sec += ls->gc_secs[i];
		prev = ls->gc_locs[i];
	}
	if (n == 0)
		return 0;                       /* nothing live: the pass ends it at once */
	if (!stg_fits(ls, n, sec)) {
		if (!stg_any(ls))
			return 0;               /* too full for a segment of its own: move now */
		ls->stg_full = true;
		return 2;
	}
	if (ls->stg_n + n > ls->stg_cap) {
		uint32_t cap = TND_MAX(ls->stg_n + n, 2 * ls->stg_cap);
		struct gc_stage_ent *a = realloc(ls->stg, (size_t)cap * sizeof(*a));
		if (!a)
			return 0;
		ls->stg = a;
		ls->stg_cap = cap;
	}
	prev = 0;
	uint32_t off = 0;
	for (uint32_t i = 0; i < n; i++) {
		uint64_t loc = ls->gc_locs[i];
		struct gc_stage_ent *e = &ls->stg[ls->stg_n++];
		e->lba = ls->gc_lbas[i];
		e->loc = loc;
		e->sec = 0;
		if (loc != prev) {
			off = ls->stg_bsec * LSFS_SECTOR;
			memcpy(ls->stg_buf + off,
			       ls->gc_buf + ((loc >> 3) - base) * LSFS_BLK + (loc & 7) * LSFS_SECTOR,
			       (size_t)ls->gc_secs[i] * LSFS_SECTOR);
			e->sec = ls->gc_secs[i];
			ls->stg_bsec += e->sec;
			ls->stg_sec += e->sec;
		}
		e->off = off;
		prev = loc;
	}
	/* The pass's pin is the stage's now. */
	ls->stg_pinned[v] = 1;
	ls->stg_vict[ls->stg_nvict++] = (struct stg_victim){ .seg = v, .end = ls->stg_n };
	ls->gc_pinned = false;
	ls->stg_full = stg_seg_worth(ls);
	return 1;
}

/* The pass has its moves: stage them, or append them now. */
static void gc_dispatch(struct lsfs *ls)
{
	if (gc_stage_add(ls) == 0) {
		gc_continue(ls);
		return;
	}
	gc_finish(ls);
}

/*
 * At a segment boundary (the open segment just closed), should the stage
 * go out as a segment of its own? When it fills one (or GC has nothing
 * else to stage); not from inside GC's own appends. A smaller stage waits:
 * a GC segment closed half empty would only have to be cleaned again (an
 * idle log gets it appended by the tick).
 */
static bool gc_stage_ready(struct lsfs *ls)
{
	if (!stg_any(ls) || ls->gc_in_append || ls->failed || ls->closing)
		return false;
	return ls->stg_full;
}

/*
 * Write the stage as a GC-only segment, right here in the log (between the
 * client segment that just closed and the next one): open a segment, append
 * the staged moves into it, close it. Only with a free segment to spare
 * beyond GC's reserve and the writers' next one (else the fallback, mixing,
 * takes them when writers wait), and only with at least one move still
 * live: every segment in the log holds a record (replay finds a successor
 * by its first record).
 */
static void gc_stage_write(struct lsfs *ls)
{
	if (!stg_room(ls))
		return;
	bool live = false;
	for (uint32_t i = ls->stg_next; i < ls->stg_n && !live; i++) {
		const struct lsfs_ment *m = lsfs_map_get(&ls->map, ls->stg[i].lba);
		live = m && lsfs_ment_loc(m) == ls->stg[i].loc;
	}
	if (!live) {
		/* Everything staged was overwritten meanwhile. */
		ls->stg_next = ls->stg_n;
		gc_stage_retire(ls, false);
		return;
	}
	if (open_segment(ls) < 0)
		return;
	ls->cur->gc_only = true;
	gc_stage_append(ls, true);
	close_segment(ls);
	ls->st.gc_segments_written++;
	/* The victims it emptied come back after the flush that covers it. */
	reclaim_kick(ls);
}

/*
 * With dedup a payload may be mapped by chunks its record does not name,
 * so the records cannot list the victim's referrers: one pass over the
 * map collects every chunk that maps into the victim, sorted by payload
 * address so that the sharers of one payload come together. O(mapped
 * chunks) per pass (docs/on-disk-format.md: the alternative is a
 * persistent indirection for shared payloads).
 */
struct gc_pair {
	uint64_t loc, lba;
	uint8_t sec;
};

static int gc_pair_cmp(const void *a, const void *b)
{
	const struct gc_pair *x = a, *y = b;
	if (x->loc != y->loc)
		return x->loc < y->loc ? -1 : 1;
	return x->lba < y->lba ? -1 : x->lba > y->lba;
}

static int gc_collect_from_map(struct lsfs *ls, uint32_t v)
{
	uint32_t need = ls->segs[v].live;
	struct gc_pair *pairs = malloc(((size_t)need + 1) * sizeof(*pairs));
	if (!pairs)
		return -ENOMEM;
	if (need > ls->gc_cap) {
		uint64_t *a = realloc(ls->gc_locs, (size_t)need * sizeof(*a));
		if (a)
			ls->gc_locs = a;
		uint64_t *b = a ? realloc(ls->gc_lbas, (size_t)need * sizeof(*b)) : NULL;
		if (b)
			ls->gc_lbas = b;
		uint8_t *q = b ? realloc(ls->gc_secs, need) : NULL;
		if (q)
			ls->gc_secs = q;
		if (!a || !b || !q) {
			free(pairs);
			return -ENOMEM;
		}
		ls->gc_cap = need;
	}
	uint64_t base = lsfs_seg_base_pba(&ls->sb, v), end = base + ls->seg_blocks;
	uint32_t n = 0;
	for (uint64_t c = 0; n < need && lsfs_map_next(&ls->map, &c); c++) {
		const struct lsfs_ment *m = lsfs_map_get(&ls->map, c);
		uint64_t pba = lsfs_ment_pba(m);
		if (pba >= base && pba < end)
			pairs[n++] = (struct gc_pair){ .loc = lsfs_ment_loc(m), .lba = c,
						       .sec = (uint8_t)lsfs_len_sectors(lsfs_aux_len(m->aux)) };
	}
	qsort(pairs, n, sizeof(*pairs), gc_pair_cmp);
	for (uint32_t i = 0; i < n; i++) {
		ls->gc_locs[i] = pairs[i].loc;
		ls->gc_lbas[i] = pairs[i].lba;
		ls->gc_secs[i] = pairs[i].sec;
	}
	free(pairs);
	ls->gc_nmoves = n;
	ls->gc_next = 0;
	return 0;
}

/*
 * The records at the start of segment @s's bytes @data (@len of them), in
 * the segment's life @seq, read as GC and the index warm-up read them:
 * each record's CRC and life, consecutive sequence numbers, the record
 * within @len. @fn sees every descriptor that carries a payload, in order:
 * the payload's address @loc, its offset @at in @data, and @overrun when it
 * runs past its record's payload blocks (a damaged record). @fn answers
 * WALK_ON, WALK_NEXT_RECORD (skip the rest of this record) or WALK_STOP;
 * seg_walk returns false when @fn stopped it.
 */
enum walk_step { WALK_ON, WALK_NEXT_RECORD, WALK_STOP };
typedef enum walk_step (*seg_walk_fn)(struct lsfs *ls, const struct lsfs_desc *d, uint64_t loc,
				       uint32_t at, bool overrun, void *arg);

static bool seg_walk(struct lsfs *ls, uint32_t s, uint64_t seq, const uint8_t *data, uint32_t len,
		     seg_walk_fn fn, void *arg)
{
	uint64_t base = lsfs_seg_base_pba(&ls->sb, s);
	uint32_t off = 0;
	uint64_t expect = 0;
	while (off + LSFS_BLK <= len) {
		const uint8_t *hdr = data + off;
		struct lsfs_rec rh;
		if (lsfs_rec_decode(hdr, ls->sb.uuid, &rh) < 0 || rh.seg_seq != seq ||
		    (off && rh.rec_seq != expect) || off + (uint64_t)(1 + rh.npayload) * LSFS_BLK > len)
			break;
		uint64_t pay_end = (uint64_t)rh.npayload * LSFS_BLK;
		uint64_t sec = 0;
		for (uint32_t i = 0; i < rh.ndesc; i++) {
			struct lsfs_desc d;
			lsfs_desc_decode(hdr, i, &d);
			uint32_t plen = lsfs_desc_payload(&d);
			if (!plen)
				continue;
			uint64_t pos = sec * LSFS_SECTOR;
			sec += lsfs_len_sectors(plen);
			uint32_t at = off + LSFS_BLK + (uint32_t)pos;
			uint64_t loc = (base + at / LSFS_BLK) << 3 | (at % LSFS_BLK) / LSFS_SECTOR;
			enum walk_step step = fn(ls, &d, loc, at, pos + plen > pay_end, arg);
			if (step == WALK_STOP)
				return false;
			if (step == WALK_NEXT_RECORD)
				break;
		}
		expect = rh.rec_seq + 1;
		off += (1 + rh.npayload) * LSFS_BLK;
	}
	return true;
}

/* GC's pick from a victim's records: the DATA payloads still mapped where
 * they are (a damaged record's payloads included: the map decides). */
static enum walk_step gc_pick(struct lsfs *ls, const struct lsfs_desc *d, uint64_t loc, uint32_t at,
			      bool overrun, void *arg)
{
	(void)at;
	(void)overrun;
	uint32_t *n = arg;
	if ((d->flags & LSFS_DESC_KIND_MASK) != LSFS_DESC_DATA)
		return WALK_ON;
	const struct lsfs_ment *m = lsfs_map_get(&ls->map, d->lba);
	if (m && lsfs_ment_loc(m) == loc) {
		ls->gc_lbas[*n] = d->lba;
		ls->gc_locs[*n] = loc;
		ls->gc_secs[*n] = (uint8_t)lsfs_len_sectors(d->stored_len);
		(*n)++;
	}
	return WALK_ON;
}

/* Move victim @v's live blocks as the map names them (a dedup store, or
 * records that do not explain every mapped block). */
static void gc_by_map(struct lsfs *ls, uint32_t v)
{
	if (gc_collect_from_map(ls, v) < 0) {
		ls->gc_skip[v] = true;
		gc_finish(ls);
		return;
	}
	gc_dispatch(ls);
}

static void gc_read_done(struct lsfs_child *c, int status)
{
	struct lsfs *ls = c->ls;
	uint32_t v = ls->gc_victim;
	if (status < 0) {
		tnd_warn(LSFS_TAG, "gc: reading segment %u failed (%s); skipping it", v, strerror(-status));
		ls->gc_skip[v] = true;
		gc_finish(ls);
		return;
	}
	ls->gc_grp = (struct gc_grp){ 0 };
	uint32_t n = 0;
	seg_walk(ls, v, ls->segs[v].seq, ls->gc_buf, ls->sb.seg_size, gc_pick, &n);
	/*
	 * The victim's own records name n of its live blocks. With dedup,
	 * live counts the map entries that point into the segment, sharers
	 * included, and a sharer's descriptor lives in the record that shared,
	 * elsewhere. When the records explain every live block (nothing in it
	 * is shared: the common case under unique overwrites), they are the
	 * move list, and the pass over the whole map, which costs the map's
	 * size for every segment cleaned, is not needed.
	 *
	 * Otherwise the map decides. Without dedup live counts chunks and
	 * payloads alike, so a shortfall means mapped blocks the records do
	 * not account for: the log after the checkpoint was damaged before
	 * the records that moved them out were replayed, and the segment has
	 * been written again since (reuse after a flush). Their bytes are
	 * gone; the map's CRC makes every read of them a MEDIUM ERROR (or a
	 * failed decompression, for an LZ4 payload). The map pass moves them
	 * too, stored bytes, length and CRC as they are, so that they stay
	 * errors rather than pinning the segment (and its space) forever; a
	 * packed or shared payload moves like any other (once, its sharers
	 * following).
	 */
	if (n < ls->segs[v].live) {
		if (!ls->refs)
			tnd_warn(LSFS_TAG, "gc: segment %u holds %u mapped blocks its records do not "
				 "explain; moving them as they are (reads of them fail their CRC)",
				 v, ls->segs[v].live - n);
		gc_by_map(ls, v);
		return;
	}
	ls->gc_nmoves = n;
	ls->gc_next = 0;
	gc_dispatch(ls);
}

static void gc_step(struct lsfs *ls)
{
	if (ls->gc_busy || ls->closing)
		return;
	if (ls->failed) {
		if (ls->gc_cb) {
			ls->gc_busy = true;
			gc_finish(ls);
		}
		return;
	}
	bool waiting = writers_wait(ls);
	/* Dead segments a flush will free count as free. */
	bool low = gc_wanted(ls);
	bool forced = ls->gc_cb != NULL;
	/* Compaction: an explicit pass prefers a segment with deferred
	 * blocks; an idle volume compacts on its own. Not while space is
	 * short: GC's work comes first. */
	bool compact = !waiting && !low && ls->cctx && ls->ndeferred &&
		       (forced || compact_wanted(ls));
	if (!waiting && !low && !forced && !compact)
		return;
	/* Writers wait for space, or soon would: what is staged for a GC-only
	 * segment goes out now, among their writes, instead of at the next
	 * boundary (the victims it empties are what they wait for). */
	if (stg_any(ls) && (waiting || !stg_room(ls))) {
		gc_stage_append(ls, false);
		if (ls->failed)
			return;
	}
	if (ls->ndead > 0 && (waiting || low)) {
		uint32_t before = ls->nfree;
		reclaim_kick(ls);
		if (ckpt_for_space(ls)) {
			ckpt_start(ls, NULL, NULL);
			return;
		}
		if (ls->nfree > before && waiting && space_for(ls, ls->aq_head)) {
			pump(ls);               /* a no-op when pump called us: it goes on */
			return;
		}
		low = ls->nfree + ls->nreclaim_pending < ls->opts.gc_free_low;
		/* A flush on its way frees enough (its end calls us again):
		 * cleaning more now would only clean fuller segments. */
		if (!low && !forced && ls->reclaim_busy)
			return;
	}
	/* Out of room to move blocks into: a pass would only read the victim
	 * and give up. Wait for a checkpoint to free segments (its end calls
	 * us again); with nothing to free, writers get ENOSPC (pump). */
	uint32_t v = LSFS_NONE32;
	if (compact && !ls->gc_stalled) {
		v = pick_compact_victim(ls);
		ls->gc_compact = v != LSFS_NONE32;
		/* What is left is in the open segment, which no client fills
		 * while the volume is idle: close it (its tail stays unused,
		 * like a segment's dead space) so that a later pass, once it
		 * is written, can take it. */
		if (v == LSFS_NONE32 && ls->cur && ls->segs[ls->cur->seg].deferred &&
		    ls->segs[ls->cur->seg].deferred == ls->ndeferred) {
			close_segment(ls);
			schedule_kick(ls);
		}
	}
	if (v == LSFS_NONE32 && (waiting || low || forced))
		v = ls->gc_stalled ? LSFS_NONE32 : pick_victim(ls);
	if (v == LSFS_NONE32) {
		/* Nothing more to stage: the next boundary writes the stage. */
		if (stg_any(ls))
			ls->stg_full = true;
		if (forced) {
			ls->gc_busy = true;
			gc_finish(ls);
		}
		return;
	}
	/* The stage is as full as this victim allows: wait for the boundary
	 * that writes it (a pass now would read the victim for nothing). */
	if (!forced && !waiting && !ls->gc_compact && !ls->opts.gc_mix && stg_any(ls) && stg_room(ls) &&
	    (ls->stg_full || !stg_fits(ls, ls->segs[v].live, ls->segs[v].live_sec))) {
		ls->stg_full = true;
		return;
	}
	if (!ls->gc_buf) {
		ls->gc_buf = lsfs_alloc_blocks(ls->sb.seg_size);
		if (!ls->gc_buf)
			return;
	}
	ls->gc_busy = true;
	ls->gc_victim = v;
	if (ls->gc_compact)
		ls->st.compaction_passes++;
	/* Pinned until the pass ends, not only while it is read: a victim
	 * emptied by writers while the pass waits for a buffer must not be
	 * reused under the moves still listed. */
	ls->readers[v]++;
	ls->gc_pinned = true;
	int ret = child_submit(ls, TND_IO_READ, ls->sb.seg_off + (uint64_t)v * ls->sb.seg_size,
			       ls->gc_buf, ls->sb.seg_size, gc_read_done, NULL, 0);
	if (ret < 0) {
		ls->readers[v]--;
		ls->gc_pinned = false;
		ls->gc_busy = false;
		ls->gc_compact = false;
	}
}

/* ---- index warm-up ---- */

/*
 * Index warm-up. The format stores no fingerprints, so after open (and
 * after dedup is switched on live) the index is empty; this walk rebuilds
 * it from the log: it reads the USED segments (and the sealed part of the
 * open one, from RAM), newest first, parses their records as GC does, and
 * for each DATA descriptor with a payload of its own (a DEDUP descriptor
 * names a payload indexed through its DATA record; TRIM and SIZE carry
 * none) whose payload is live, checks the stored bytes' CRC, decompresses
 * them when LZ4, fingerprints the chunk and inserts it unless the index
 * already knows that fingerprint (a newer copy, met first, wins). Newest
 * first because a tight budget should hold the content written last; once
 * its inserts start to evict (WU_EVICT_DIV), the index is about full and
 * the walk ends (going on would mostly replace newer entries with older
 * ones). Memory stays the index's budget plus one segment buffer, freed at
 * the end.
 *
 * Why an entry it adds is safe. The index's invariant is that an entry
 * names only a live payload: seg_lost_block() drops it when the payload
 * loses its last reference, gc_move() moves it with the payload, and
 * try_share() relies on that (plus its segment checks and the byte
 * compare): a share of an entry naming a dead payload whose bytes are
 * still on disk would pass the compare and resurrect the payload, a
 * reference into space already counted free. So an entry is added only
 * when, at the moment of the insert (on home, synchronously, so nothing
 * can change between the test and the insert):
 *  - the segment is in the same life (seg_seq) as when its read was
 *    issued and is USED or OPEN: the bytes read are that life's, nothing
 *    in it was reused (the read also holds readers[] like any other, so a
 *    segment emptied meanwhile is not reused under it);
 *  - GC is not cleaning it (its victim) and has not staged it: a pass
 *    moves its payloads and moves their entries with them; an entry added
 *    behind its back could name the old copy;
 *  - the payload is referenced: the DATA descriptor's chunk still maps
 *    exactly that address (layout and CRC too), or, in a dedup store, the
 *    reference table counts it as shared (an entry there exists only for a
 *    live payload mapped by two or more chunks; a payload whose writer
 *    moved on and which is left with a single sharer is not indexed, a
 *    missed opportunity only). Payload addresses are unique within a
 *    segment's life, so the descriptor read is the one that wrote it and
 *    its layout is the one every sharer's map entry carries (replay
 *    derives it the same way), which is the value seg_lost_block() will
 *    remove.
 * From then on the entry is maintained like any the write path adds. A
 * payload whose stored bytes fail their CRC or decompression is not
 * indexed.
 *
 * Yield. One segment read in flight at most, issued from the background
 * tick, and from the completion of the one before, only when no GC pass
 * is running and no writer waits for space. A tick with client I/O since
 * the last one paces the walk by bytes: it grants the bytes its interval
 * is worth at opts.dedup_warmup_mbps (at most one interval's worth saved
 * up), and segments are scanned back to back while the credit is
 * positive, each costing its size (the sealed bytes of one in RAM, which
 * costs the CPU but no read); a segment bigger than a tick's grant drives
 * the credit negative and the next ticks pay it off, so the long-run rate
 * holds for any segment size. An idle tick lets the walk go on back to
 * back until client I/O shows up again, then waits for the next tick,
 * which paces it. Rate 0 never paces. Why a rate and not a segment per
 * tick (the first version): at 4 MiB a tick that was 40 MB/s, hours for a
 * 1 TB store under constant load; the CPU cost per byte (CRC, LZ4
 * decompression, XXH3: measured in docs/config.md) is what the rate
 * bounds.
 */
/* The walk ends once its inserts' evictions pass 1/WU_EVICT_DIV of them:
 * a window overflows long before the index is full (inserting random
 * fingerprints into a 4 MiB index, the first eviction came at 39 % of the
 * slots, 2 % of the inserts evicted at 78 %, 10 % at 93 %), and from
 * there on older content would mostly displace newer. */
#define WU_EVICT_DIV 50u

const char *tnd_lsfs_warmup_name(enum tnd_lsfs_warmup w)
{
	static const char *const names[] = {
		[TND_LSFS_WARMUP_OFF] = "off",
		[TND_LSFS_WARMUP_RUNNING] = "running",
		[TND_LSFS_WARMUP_DONE] = "done",
	};
	return (unsigned)w < TND_ARRAY_SIZE(names) ? names[w] : "off";
}

static uint64_t wu_ms(const struct lsfs *ls)
{
	uint64_t end = ls->st.index_warmup == TND_LSFS_WARMUP_RUNNING ? tnd_now_ns() : ls->wu_t1;
	return end > ls->wu_t0 ? (end - ls->wu_t0) / 1000000u : 0;
}

/* Drop the walk's list and buffers (not while a read uses the buffer). */
static void wu_release(struct lsfs *ls)
{
	free(ls->wu_segs);
	free(ls->wu_seqs);
	ls->wu_segs = NULL;
	ls->wu_seqs = NULL;
	ls->wu_n = ls->wu_next = 0;
	if (!ls->wu_busy) {
		free(ls->wu_buf);
		free(ls->wu_dbuf);
		ls->wu_buf = ls->wu_dbuf = NULL;
	}
}

static void wu_notify(struct lsfs *ls)
{
	tnd_done_cb cb = ls->wu_cb;
	void *arg = ls->wu_cb_arg;
	if (!cb || ls->wu_busy)
		return;
	if (ls->st.index_warmup == TND_LSFS_WARMUP_RUNNING && ls->wu_quota)
		return;
	ls->wu_cb = NULL;
	cb(arg);
}

static void wu_end(struct lsfs *ls, enum tnd_lsfs_warmup state, const char *why)
{
	if (ls->st.index_warmup != TND_LSFS_WARMUP_RUNNING)
		return;
	ls->wu_t1 = tnd_now_ns();
	ls->st.index_warmup = state;
	ls->wu_gen++;
	wu_release(ls);
	tnd_info(LSFS_TAG, "dedup index warm-up %s after %llu ms: %llu of %llu segments scanned, "
		 "%llu entries added%s%s", state == TND_LSFS_WARMUP_DONE ? "done" : "stopped",
		 (unsigned long long)wu_ms(ls), (unsigned long long)ls->st.warmup_scanned,
		 (unsigned long long)ls->st.warmup_segments, (unsigned long long)ls->st.warmup_entries,
		 why ? ", " : "", why ? why : "");
	wu_notify(ls);
}

static void wu_stop(struct lsfs *ls, const char *why)
{
	wu_end(ls, TND_LSFS_WARMUP_OFF, why);
	ls->wu_pending = false;
}

struct wu_key {
	uint64_t seq;
	uint32_t seg;
};

static int wu_key_cmp(const void *a, const void *b)
{
	const struct wu_key *x = a, *y = b;
	return x->seq > y->seq ? -1 : x->seq < y->seq;
}

/*
 * Start a walk over what is stored now (dedup on). Segments written from
 * here on are indexed by the write path. Called at open (no I/O, nothing
 * runs yet) and on home when dedup is switched on.
 */
static void wu_begin(struct lsfs *ls)
{
	ls->wu_pending = false;
	if (!ls->ddx || ls->failed)
		return;
	if (ls->wu_busy) {
		/* The last walk's read is still out: start when it is back. */
		ls->wu_pending = true;
		return;
	}
	wu_release(ls);
	uint32_t n = 0;
	for (uint32_t i = 0; i < ls->sb.seg_count; i++)
		n += ls->segs[i].state == LSFS_SEG_USED || ls->segs[i].state == LSFS_SEG_OPEN;
	struct wu_key *keys = malloc((n ? n : 1) * sizeof(*keys));
	ls->wu_segs = malloc((n ? n : 1) * sizeof(*ls->wu_segs));
	ls->wu_seqs = malloc((n ? n : 1) * sizeof(*ls->wu_seqs));
	ls->wu_buf = lsfs_alloc_blocks(ls->sb.seg_size);
	ls->wu_dbuf = lsfs_alloc_blocks(LSFS_BLK);
	ls->st.warmup_segments = ls->st.warmup_scanned = ls->st.warmup_entries = 0;
	ls->wu_evicted = 0;
	ls->wu_t0 = tnd_now_ns();
	ls->st.index_warmup = TND_LSFS_WARMUP_RUNNING;
	ls->wu_gen++;
	if (!keys || !ls->wu_segs || !ls->wu_seqs || !ls->wu_buf || !ls->wu_dbuf) {
		free(keys);
		wu_stop(ls, "out of memory");
		return;
	}
	uint32_t k = 0;
	for (uint32_t i = 0; i < ls->sb.seg_count; i++)
		if (ls->segs[i].state == LSFS_SEG_USED || ls->segs[i].state == LSFS_SEG_OPEN)
			keys[k++] = (struct wu_key){ .seq = ls->segs[i].seq, .seg = i };
	qsort(keys, k, sizeof(*keys), wu_key_cmp);   /* newest first */
	for (uint32_t i = 0; i < k; i++) {
		ls->wu_segs[i] = keys[i].seg;
		ls->wu_seqs[i] = keys[i].seq;
	}
	free(keys);
	ls->wu_n = k;
	ls->wu_next = 0;
	ls->st.warmup_segments = k;
	tnd_info(LSFS_TAG, "dedup index warm-up: %u segments (%llu MiB) to scan, newest first", k,
		 (unsigned long long)k * ls->sb.seg_size >> 20);
	if (k == 0)
		wu_end(ls, TND_LSFS_WARMUP_DONE, NULL);
}

/* May the walk take segment @s, in the life @seq, now? */
static bool wu_seg_ok(const struct lsfs *ls, uint32_t s, uint64_t seq)
{
	const struct lsfs_seginfo *si = &ls->segs[s];
	return si->seq == seq && (si->state == LSFS_SEG_USED || si->state == LSFS_SEG_OPEN) &&
	       !(ls->gc_busy && ls->gc_victim == s) && !ls->stg_pinned[s];
}

/*
 * The payload @p of the DATA descriptor @d at @loc (its segment's life
 * checked by the caller): index it if it is live and intact. False when
 * the index is full (WU_EVICT_DIV).
 */
static bool wu_index(struct lsfs *ls, const struct lsfs_desc *d, uint64_t loc, const uint8_t *p)
{
	bool lz4 = d->flags & LSFS_DESC_F_LZ4, deferred = d->flags & LSFS_DESC_F_DEFERRED;
	uint32_t sector = (uint32_t)(loc & 7);
	if (d->stored_len == 0 || d->stored_len > LSFS_BLK || (lz4 && d->stored_len > LSFS_LZ4_MAX) ||
	    (!lz4 && d->stored_len != LSFS_BLK))
		return true;
	uint16_t aux = deferred && !lz4 ? lsfs_aux_make_deferred(sector)
					: lsfs_aux_make(lz4, sector, d->stored_len);
	const struct lsfs_ment *m = lsfs_map_get(&ls->map, d->lba);
	bool live = (m && lsfs_ment_loc(m) == loc && m->aux == aux && m->crc == d->crc) ||
		    (ls->refs && tnd_dedup_ref_get(ls->refs, loc) >= 2);
	if (!live || tnd_crc32c(0, p, d->stored_len) != d->crc)
		return true;
	const uint8_t *data = p;
	if (lz4) {
		if (tnd_decompress(p, d->stored_len, ls->wu_dbuf, LSFS_BLK) < 0)
			return true;
		data = ls->wu_dbuf;
	}
	struct tnd_dedup_fp fp;
	tnd_dedup_fingerprint(data, LSFS_BLK, &fp);
	uint64_t v;
	if (tnd_dedup_lookup(ls->ddx, &fp, &v) == 0)
		return true;   /* known: a newer copy, or this one */
	struct tnd_dedup_stats before, after;
	tnd_dedup_get_stats(ls->ddx, &before);
	tnd_dedup_insert(ls->ddx, &fp, dd_val(loc, aux));
	tnd_dedup_get_stats(ls->ddx, &after);
	ls->st.warmup_entries++;
	ls->wu_evicted += after.evictions - before.evictions;
	return ls->wu_evicted * WU_EVICT_DIV <= ls->st.warmup_entries;
}

/* The warm-up's step of seg_walk: index a DATA payload; a damaged
 * record's remaining payloads are not trusted. */
static enum walk_step wu_visit(struct lsfs *ls, const struct lsfs_desc *d, uint64_t loc, uint32_t at,
			       bool overrun, void *arg)
{
	const uint8_t *data = arg;
	if (overrun)
		return WALK_NEXT_RECORD;
	if ((d->flags & LSFS_DESC_KIND_MASK) != LSFS_DESC_DATA)
		return WALK_ON;
	return wu_index(ls, d, loc, data + at) ? WALK_ON : WALK_STOP;
}

/*
 * Index the live payloads of segment @s's records in @data (@len bytes
 * from its start; the life checked by the caller). False: index full.
 */
static bool wu_parse(struct lsfs *ls, uint32_t s, uint64_t seq, const uint8_t *data, uint32_t len)
{
	return seg_walk(ls, s, seq, data, len, wu_visit, (void *)data);
}

static void wu_pump(struct lsfs *ls);

static void wu_read_done(struct lsfs_child *c, int status)
{
	struct lsfs *ls = c->ls;
	uint32_t s = ls->wu_seg;
	ls->readers[s]--;
	ls->wu_busy = false;
	if (c->u64 != ls->wu_gen || ls->st.index_warmup != TND_LSFS_WARMUP_RUNNING) {
		/* The walk ended meanwhile (dedup off, fail-stop). */
		if (ls->st.index_warmup != TND_LSFS_WARMUP_RUNNING)
			wu_release(ls);
		if (ls->wu_pending)
			wu_begin(ls);
		wu_notify(ls);
		return;
	}
	ls->st.warmup_scanned++;
	if (status < 0)
		tnd_warn(LSFS_TAG, "dedup index warm-up: reading segment %u failed (%s); skipping it", s,
			 strerror(-status));
	else if (wu_seg_ok(ls, s, ls->wu_seg_seq) &&
		 !wu_parse(ls, s, ls->wu_seg_seq, ls->wu_buf, ls->sb.seg_size)) {
		wu_end(ls, TND_LSFS_WARMUP_DONE, "index full");
		return;
	}
	/* An idle tick's run met client I/O: the rest waits for the next
	 * tick, which paces it (unless the rate is unlimited). */
	if (!ls->wu_cb && !ls->wu_paced && ls->st.reads + ls->st.writes != ls->wu_io &&
	    atomic_load_explicit(&ls->wu_mbps, memory_order_relaxed))
		ls->wu_quota = 0;
	wu_pump(ls);
}

/* Scan segments while the quota lasts, until a read is in flight. */
static void wu_pump(struct lsfs *ls)
{
	while (ls->st.index_warmup == TND_LSFS_WARMUP_RUNNING && !ls->wu_busy && ls->wu_quota &&
	       (!ls->wu_paced || ls->wu_credit > 0)) {
		if (ls->failed || !ls->ddx) {
			wu_stop(ls, ls->failed ? "the device failed" : "dedup off");
			return;
		}
		if (ls->closing)
			break;
		/* The background walk gives way to GC and to writers short of
		 * space; an explicit run only keeps away from GC's segments. */
		if (!ls->wu_cb && (ls->gc_busy || writers_wait(ls)))
			break;
		if (ls->wu_next >= ls->wu_n) {
			wu_end(ls, TND_LSFS_WARMUP_DONE, NULL);
			return;
		}
		uint32_t s = ls->wu_segs[ls->wu_next];
		uint64_t seq = ls->wu_seqs[ls->wu_next];
		ls->wu_next++;
		ls->wu_quota--;
		if (!wu_seg_ok(ls, s, seq)) {
			/* Emptied, reused or being cleaned since the list was
			 * made: GC's moves keep their entries, new lives are
			 * indexed by the writes that made them. */
			ls->st.warmup_scanned++;
			continue;
		}
		const struct lsfs_buf *b = buf_of_seg(ls, s);
		if (b) {
			/* Still in RAM (the open segment, or not yet written):
			 * its sealed records, no read. */
			ls->st.warmup_scanned++;
			if (ls->wu_paced)
				ls->wu_credit -= b->sealed_end;
			if (!wu_parse(ls, s, seq, b->data, b->sealed_end)) {
				wu_end(ls, TND_LSFS_WARMUP_DONE, "index full");
				return;
			}
			continue;
		}
		ls->wu_seg = s;
		ls->wu_seg_seq = seq;
		ls->wu_busy = true;
		ls->readers[s]++;
		if (ls->wu_paced)
			ls->wu_credit -= ls->sb.seg_size;
		int ret = child_submit(ls, TND_IO_READ, ls->sb.seg_off + (uint64_t)s * ls->sb.seg_size,
				       ls->wu_buf, ls->sb.seg_size, wu_read_done, NULL, ls->wu_gen);
		if (ret < 0) {
			ls->readers[s]--;
			ls->wu_busy = false;
			ls->st.warmup_scanned++;
		}
	}
	wu_notify(ls);
}

/* The background tick's share: its interval's bytes at the rate while
 * clients do I/O, all when idle. */
static void wu_tick(struct lsfs *ls)
{
	if (ls->wu_pending)
		wu_begin(ls);
	if (ls->st.index_warmup != TND_LSFS_WARMUP_RUNNING || ls->wu_cb)
		return;
	uint64_t io = ls->st.reads + ls->st.writes, now = tnd_now_ns();
	uint64_t mbps = atomic_load_explicit(&ls->wu_mbps, memory_order_relaxed);
	uint64_t iv = (uint64_t)ls->opts.gc_interval_ms * 1000000u;
	ls->wu_quota = UINT32_MAX;
	if (io == ls->wu_io || !mbps) {
		ls->wu_paced = false;
		ls->wu_credit = 0;
	} else {
		/* MB/s = bytes per us: ns * mbps / 1000. A late tick gets its
		 * time, up to a second; saved-up credit is capped at one
		 * interval's worth, a debt is kept. */
		uint64_t dt = ls->wu_paced && now > ls->wu_tick_ns ? now - ls->wu_tick_ns : iv;
		int64_t cap = (int64_t)(iv * mbps / 1000u);
		ls->wu_credit += (int64_t)(TND_MIN(dt, 1000000000ull) * mbps / 1000u);
		if (ls->wu_credit > cap)
			ls->wu_credit = cap;
		ls->wu_paced = true;
	}
	ls->wu_tick_ns = now;
	ls->wu_io = io;
	wu_pump(ls);
}

int tnd_lsfs_warmup_run(struct tnd_volume *vol, uint32_t max_segments, tnd_done_cb cb, void *arg)
{
	struct lsfs *ls = to_lsfs(vol);
	if (ls->wu_cb)
		return -EBUSY;
	home_enter(ls);
	if (ls->wu_pending)
		wu_begin(ls);
	ls->wu_cb = cb;
	ls->wu_cb_arg = arg;
	ls->wu_paced = false;
	ls->wu_quota = max_segments ? max_segments : UINT32_MAX;
	wu_pump(ls);
	return 0;
}

void tnd_lsfs_start_background(struct tnd_volume *vol)
{
	home_enter(to_lsfs(vol));
}

/*
 * A checkpoint costs a copy of the whole map, so it is scheduled by the
 * log written since the last one relative to that cost (ckpt_ratio) and
 * at least ckpt_segments segments apart; dead segments no longer wait
 * for it (reclaim). It still bounds replay at start-up and the dead
 * segments replay would read (ndead_locked): at the latest after a
 * quarter of the segments. The cost is the checkpoint actually written
 * (last_ckpt_bytes: its map entries), not its area: a compress/dedup
 * store's larger area (up to 8 mapped blocks per slot) only leaves room,
 * and a dedup store whose chunks outnumber its payloads pays for every
 * mapped chunk, so it checkpoints less often per log byte, still within
 * the quarter bound on replay.
 */
static bool ckpt_due(const struct lsfs *ls)
{
	uint32_t most = TND_MAX(ls->opts.ckpt_segments, ls->sb.seg_count / 4);
	if (ls->segs_since_ckpt >= most)
		return true;
	return ls->segs_since_ckpt >= ls->opts.ckpt_segments &&
	       ls->log_since_ckpt >= (uint64_t)ls->opts.ckpt_ratio * ls->last_ckpt_bytes;
}

static void tick_fn(struct tnd_timer *t)
{
	struct lsfs *ls = tnd_container_of(t, struct lsfs, tick);
	if (ls->failed || ls->closing) {
		ls->tick_armed = false;
		return;
	}
	/* Idle compaction counts ticks without a client write. */
	if (ls->st.writes == ls->idle_writes) {
		if (ls->idle_ticks < UINT32_MAX)
			ls->idle_ticks++;
	} else {
		ls->idle_ticks = 0;
		ls->idle_writes = ls->st.writes;
	}
	gc_step(ls);
	wu_tick(ls);
	if (ls->dm_want)
		dm_start(ls);
	/* A stage waits for a segment boundary; an idle log has none: after
	 * a tick without a record, append it among whatever comes next. */
	if (stg_any(ls) && !ls->gc_busy) {
		if (ls->next_rec_seq == ls->stg_idle_seq) {
			gc_stage_append(ls, false);
			schedule_kick(ls);
			pump(ls);
		}
		ls->stg_idle_seq = ls->next_rec_seq;
	}
	if (!ls->ckpt_busy && ckpt_due(ls))
		ckpt_start(ls, NULL, NULL);
	tnd_reactor_timer_arm(ls->home, &ls->tick, (uint64_t)ls->opts.gc_interval_ms * 1000000ull);
}

/* ---- block status ---- */

/*
 * Mapped or deallocated, from the map alone (no I/O). The map is kept per
 * 4 KiB chunk, so runs start and end on chunk boundaries, clipped to the
 * request. A mapped run is walked chunk by chunk, so it is capped at
 * BLOCK_STATUS_SCAN chunks to keep one call short; the caller asks again.
 */
#define BLOCK_STATUS_SCAN (1u << 20)

static void start_block_status(struct lsfs *ls, struct lsfs_ioctx *x)
{
	struct tnd_io *io = x->io;
	uint32_t lbs = ls->sb.block_size;
	if (io->iovcnt != 1 || io->iov[0].iov_len < sizeof(struct tnd_block_status) ||
	    io->nblocks == 0 || io->lba >= ls->num_blocks) {
		complete_io(x, -EINVAL);
		return;
	}
	uint64_t end = io->lba + TND_MIN((uint64_t)io->nblocks, ls->num_blocks - io->lba);
	uint64_t c0 = io->lba * lbs / LSFS_BLK;
	uint64_t cend = (end * lbs + LSFS_BLK - 1) / LSFS_BLK;
	bool mapped = lsfs_map_get(&ls->map, c0) != NULL;
	uint64_t c = c0 + 1;
	if (mapped) {
		while (c < cend && c - c0 < BLOCK_STATUS_SCAN && lsfs_map_get(&ls->map, c))
			c++;
	} else {
		if (!lsfs_map_next(&ls->map, &c) || c > cend)
			c = cend;
	}
	uint64_t run_end = TND_MIN(c * LSFS_BLK / lbs, end);
	struct tnd_block_status *bs = io->iov[0].iov_base;
	bs->nblocks = run_end - io->lba;
	bs->mapped = mapped;
	complete_io(x, 0);
}

/* ---- the volume ops ---- */

static void start_io(struct lsfs *ls, struct lsfs_ioctx *x)
{
	switch (x->io->type) {
	case TND_IO_READ:
		start_read(ls, x);
		break;
	case TND_IO_WRITE:
	case TND_IO_UNMAP:
	case TND_IO_WRITE_ZEROES:
		start_write(ls, x);
		break;
	case TND_IO_FLUSH:
		start_flush_io(ls, x);
		break;
	case TND_IO_BLOCK_STATUS:
		start_block_status(ls, x);
		break;
	default:
		complete_io(x, -EOPNOTSUPP);
		break;
	}
}

/*
 * Called whenever our code runs on the home reactor's thread. The timer
 * is armed here rather than at open, because open may run on another
 * thread while the home reactor is already running, and timers are
 * reactor-thread only.
 */
static void home_enter(struct lsfs *ls)
{
	if (!atomic_load_explicit(&ls->home_seen, memory_order_relaxed))
		atomic_store_explicit(&ls->home_seen, true, memory_order_release);
	if (!ls->tick_armed && ls->opts.gc_interval_ms && !ls->closing) {
		ls->tick_armed = true;
		tnd_reactor_timer_arm(ls->home, &ls->tick, (uint64_t)ls->opts.gc_interval_ms * 1000000ull);
	}
}

/*
 * Off-home stages. A write's CPU work per chunk (zero test, LZ4, CRC32C
 * of the payload, the dedup fingerprint) needs nothing of the volume's
 * state, so it runs before the write reaches the home reactor's append:
 * on the submitting reactor, in lsfs_submit, when that is not the home
 * or the write is large; and a large write (offload_min_bytes) is split,
 * its second half staged at the same time on another helper reactor
 * (round-robin per submitter, home included) that reports to home by
 * message. The home reactor is then left with the map, the dedup index,
 * the byte compare of a candidate and the append (store_payload). Small
 * writes submitted on home are staged at the append, as without helpers:
 * two messages cost more than the stages of 4 KiB. What the stages
 * compute is decided at submission (the pre_feat snapshot); a change of
 * the options meanwhile is absorbed at home (a missing fingerprint is
 * computed there; a chunk compressed after compression was turned off is
 * stored as it is: its feature bit was made durable before compression
 * was first turned on).
 *
 * Order. A write reaches home in its submitter's order (the submitter
 * forwards it itself, after its own half; messages between two reactors
 * are FIFO), and home starts write-type I/O through a FIFO gate: a write
 * whose other half is still being staged (parts > 0) holds it, and later
 * writes queue behind. Overlapping writes from one submitter so reach the
 * map in submission order, as without helpers. Reads and flushes pass
 * the gate: they are unordered with writes in flight, and a flush covers
 * only writes that completed before it.
 */
struct pre_part {
	struct tnd_msg msg;
	struct lsfs_ioctx *x;
	uint64_t i0, i1;               /* chunks of x->pre to stage */
	unsigned helper;
	unsigned feat;
};

/* x->pre for @n chunks, none staged yet; false without memory. */
static bool pre_alloc(struct lsfs_ioctx *x, uint64_t n)
{
	/* pre[n], then n 4 KiB slots: a compressed payload, or the chunk
	 * gathered when it is not contiguous in the caller's buffer. */
	struct pre_chunk *pre = malloc((size_t)n * (sizeof(*pre) + LSFS_BLK));
	if (!pre)
		return false;
	for (uint64_t i = 0; i < n; i++) {
		pre[i].valid = false;
		pre[i].have_fp = false;
	}
	x->pre = pre;
	return true;
}

/* Stage chunks [i0, i1) of @x's write with @h's compressor (on h->r). */
static void pre_range(struct lsfs_ioctx *x, struct lsfs_helper *h, uint64_t i0, uint64_t i1,
		      unsigned feat)
{
	struct lsfs *ls = x->ls;
	struct tnd_io *io = x->io;
	uint32_t lbs = ls->sb.block_size;
	uint64_t b0 = io->lba * lbs, b1 = b0 + (uint64_t)io->nblocks * lbs;
	uint64_t c0 = b0 / LSFS_BLK, n = (b1 + LSFS_BLK - 1) / LSFS_BLK - c0;
	struct tnd_compress_ctx *cctx = NULL;
	if (feat & PRE_LZ4) {
		if (!h->cctx && !h->cctx_failed && tnd_compress_ctx_create(NULL, &h->cctx) < 0)
			h->cctx_failed = true;
		cctx = h->cctx;
	}
	unsigned mode = atomic_load_explicit(&ls->cmode, memory_order_relaxed);
	bool want = false, metered = cctx && mode == TND_LSFS_COMPRESS_ADAPTIVE;
	uint64_t t0 = 0;
	if (metered) {
		t0 = tnd_now_ns();
		want = meter_defer(&h->meter, t0);
	} else {
		want = cctx && mode == TND_LSFS_COMPRESS_DEFERRED;
	}
	bool may = atomic_load_explicit(&ls->defer_ok, memory_order_relaxed);
	bool defer = want && may;
	/* A duplicate stream (see dup_note): the zero test and the
	 * fingerprint only; home stages what it cannot share. */
	bool fp_only = (feat & PRE_FP) && atomic_load_explicit(&ls->dup_stream, memory_order_relaxed);
	uint64_t nfp = 0;
	uint8_t *slots = (uint8_t *)(x->pre + n);
	uint8_t cbuf[LSFS_BLK];
	for (uint64_t i = i0; i < i1; i++) {
		struct pre_chunk *pc = &x->pre[i];
		uint64_t cs = (c0 + i) * LSFS_BLK;
		if (cs < b0 || cs + LSFS_BLK > b1)
			continue;   /* a partial chunk: merged and staged at the append */
		uint8_t *slot = slots + i * LSFS_BLK;
		const uint8_t *src = iov_span(io->iov, io->iovcnt, cs - b0, LSFS_BLK);
		if (!src) {
			copy_from_iov(io->iov, io->iovcnt, cs - b0, slot, LSFS_BLK);
			src = slot;
		}
		if (fp_only && !tnd_compress_is_zero(src, LSFS_BLK)) {
			/* Not valid: the append runs the stages if it cannot share. */
			tnd_dedup_fingerprint(src, LSFS_BLK, &pc->fp);
			pc->have_fp = true;
			nfp++;
			continue;
		}
		chunk_stages(cctx, defer, want && !may, src, cbuf, feat & PRE_FP, pc);
		if (pc->lz4) {
			memcpy(slot, cbuf, pc->len);
			pc->pay = slot;
		}
		pc->valid = true;
	}
	if (metered)
		meter_add(&h->meter, t0, tnd_now_ns(), i1 - i0, defer);
	if (nfp)
		atomic_fetch_add_explicit(&ls->dup_fp_only, nfp, memory_order_relaxed);
}

static struct lsfs_helper *helper_of(struct lsfs *ls, const struct tnd_reactor *r)
{
	for (unsigned i = 0; i < ls->nhelpers; i++)
		if (ls->helpers[i].r == r)
			return &ls->helpers[i];
	return NULL;
}

static bool is_write_type(const struct tnd_io *io)
{
	return io->type == TND_IO_WRITE || io->type == TND_IO_UNMAP || io->type == TND_IO_WRITE_ZEROES;
}

/* Start the writes at the gate's head whose stages are done. */
static void gate_drain(struct lsfs *ls)
{
	struct lsfs_ioctx *x;
	while ((x = ls->gate_head) != NULL && x->parts == 0) {
		ls->gate_head = x->gnext;
		if (!ls->gate_head)
			ls->gate_tail = NULL;
		start_io(ls, x);
	}
}

/* Home: an I/O arrives; a write-type one waits behind writes still being staged. */
static void home_start(struct lsfs *ls, struct lsfs_ioctx *x)
{
	if (!is_write_type(x->io) || (!ls->gate_head && x->parts == 0)) {
		start_io(ls, x);
		return;
	}
	x->gnext = NULL;
	if (ls->gate_tail)
		ls->gate_tail->gnext = x;
	else
		ls->gate_head = x;
	ls->gate_tail = x;
	gate_drain(ls);
}

static void forward_msg(struct tnd_msg *m)
{
	struct lsfs_ioctx *x = tnd_container_of(m, struct lsfs_ioctx, msg);
	home_enter(x->ls);
	home_start(x->ls, x);
}

/* Home: the other half of a write is staged (the write itself may not have arrived yet). */
static void part_done(struct lsfs *ls, struct pre_part *pp)
{
	struct lsfs_ioctx *x = pp->x;
	free(pp);
	home_enter(ls);
	x->parts--;
	gate_drain(ls);
}

static void part_done_msg(struct tnd_msg *m)
{
	struct pre_part *pp = tnd_container_of(m, struct pre_part, msg);
	part_done(pp->x->ls, pp);
}

/* On the partner: stage the second half, tell home. */
static void part_msg(struct tnd_msg *m)
{
	struct pre_part *pp = tnd_container_of(m, struct pre_part, msg);
	struct lsfs *ls = pp->x->ls;
	pre_range(pp->x, &ls->helpers[pp->helper], pp->i0, pp->i1, pp->feat);
	if (tnd_reactor_is_current(ls->home)) {
		part_done(ls, pp);
		return;
	}
	pp->msg.fn = part_done_msg;
	tnd_reactor_send(ls->home, &pp->msg);
}

/*
 * Stage @x's write on @me (the submitter's reactor), its second half on
 * a partner when it is large. Nothing here can fail the write: without
 * memory, the stages run at the append.
 */
static void pre_stage(struct lsfs *ls, struct lsfs_ioctx *x, struct lsfs_helper *me, uint64_t bytes,
		      unsigned feat)
{
	struct tnd_io *io = x->io;
	uint64_t b0 = io->lba * ls->sb.block_size;
	uint64_t n = (b0 + bytes + LSFS_BLK - 1) / LSFS_BLK - b0 / LSFS_BLK;
	if (!pre_alloc(x, n))
		return;
	uint64_t split = n;
	if (bytes >= ls->opts.offload_min_bytes && ls->nhelpers > 1 && n >= 2) {
		struct pre_part *pp = malloc(sizeof(*pp));
		if (pp) {
			unsigned mi = (unsigned)(me - ls->helpers);
			unsigned k = me->rr++ % (ls->nhelpers - 1);
			split = n / 2;
			*pp = (struct pre_part){ .msg.fn = part_msg, .x = x, .i0 = split, .i1 = n,
						 .helper = (mi + 1 + k) % ls->nhelpers, .feat = feat };
			/* Set before the send: from here on only home touches it. */
			x->parts = 1;
			tnd_reactor_send(ls->helpers[pp->helper].r, &pp->msg);
		}
	}
	pre_range(x, me, 0, split, feat);
}

static int lsfs_submit(struct tnd_volume *vol, struct tnd_io *io)
{
	struct lsfs *ls = to_lsfs(vol);
	struct lsfs_ioctx *x = ioctx(ls, io);
	memset(x, 0, sizeof(*x));
	x->ls = ls;
	x->io = io;
	/* Worth staging here: a write, with stages beyond the zero test
	 * (which is as cheap as the copy the append does anyway), whose
	 * buffer holds what it claims (else start_write refuses it), not a
	 * small one submitted on home. */
	unsigned feat = atomic_load_explicit(&ls->pre_feat, memory_order_relaxed);
	uint64_t bytes = (uint64_t)io->nblocks * ls->sb.block_size;
	if (io->type == TND_IO_WRITE && feat && ls->nhelpers && bytes >= LSFS_BLK &&
	    bytes <= LSFS_PRE_MAX_BYTES &&
	    (io->reactor != ls->home || bytes >= ls->opts.offload_min_bytes) &&
	    tnd_iov_length(io->iov, io->iovcnt) >= bytes) {
		struct lsfs_helper *me = helper_of(ls, io->reactor);
		if (me)
			pre_stage(ls, x, me, bytes, feat);
	}
	if (io->reactor != ls->home) {
		x->msg.fn = forward_msg;
		tnd_reactor_send(ls->home, &x->msg);
		return 0;
	}
	/* Completions decided inside start_io go out by message (a callback
	 * from inside submit would surprise the caller); later ones, from
	 * backing completions, call back directly. The message cannot run
	 * before we return: it is for this very thread. */
	home_enter(ls);
	x->in_submit = true;
	home_start(ls, x);
	x->in_submit = false;
	return 0;
}

static void lsfs_info(struct tnd_volume *vol, struct tnd_volume_info *out)
{
	struct lsfs *ls = to_lsfs(vol);
	struct tnd_volume_info bi;
	tnd_volume_info(vol->base, &bi);
	*out = (struct tnd_volume_info){
		.block_size = ls->sb.block_size,
		.num_blocks = ls->num_blocks,
		.write_cache = ls->opts.write_cache,
		.thin = true,
		.unmap_zeroes = true,
		.read_only = false,
		.rotational = bi.rotational,
		.state = ls->failed ? TND_VOLUME_FAILED : TND_VOLUME_ONLINE,
		.opt_io_blocks = LSFS_BLK / ls->sb.block_size,
		.max_unmap_blocks = 1u << 30,
		/* The map, the log and GC belong to home ("Threading" above). */
		.home = ls->home,
	};
}

void tnd_lsfs_get_stats(struct tnd_volume *vol, struct tnd_lsfs_stats *out)
{
	struct lsfs *ls = to_lsfs(vol);
	*out = ls->st;
	out->mapped_blocks = ls->map.mapped;
	out->map_bytes = lsfs_map_bytes(&ls->map);
	out->segments = ls->sb.seg_count;
	out->free_segments = ls->nfree;
	out->segment_size = ls->sb.seg_size;
	uint64_t sec = 0;
	for (uint32_t i = 0; i < ls->sb.seg_count; i++)
		sec += ls->segs[i].live_sec;
	out->stored_bytes = sec * LSFS_SECTOR;
	out->map_capacity = ls->map_cap;
	out->deferred_blocks = ls->ndeferred;
	out->dup_fp_only = atomic_load_explicit(&ls->dup_fp_only, memory_order_relaxed);
	out->deferred_marked = atomic_load_explicit(&ls->defer_ok, memory_order_relaxed);
	out->unique_blocks = ls->map.mapped - ls->shared_extra;
	if (ls->refs) {
		struct tnd_dedup_refs_stats rs;
		tnd_dedup_refs_get_stats(ls->refs, &rs);
		out->shared_payloads = rs.entries;
		out->refs_bytes = rs.bytes;
	}
	if (ls->ddx) {
		struct tnd_dedup_stats ds;
		tnd_dedup_get_stats(ls->ddx, &ds);
		out->verify_mismatches = ds.verify_mismatches;
		out->index_entries = ds.entries;
		out->index_bytes = ds.bytes;
	}
	out->warmup_ms = out->index_warmup == TND_LSFS_WARMUP_OFF && !ls->wu_t0 ? 0 : wu_ms(ls);
}

static const char *ls_compress_name(struct tnd_volume *vol)
{
	return to_lsfs(vol)->cctx ? "lz4" : "none";
}

static void lsfs_stats_json(struct tnd_volume *vol, json_t *out)
{
	struct tnd_lsfs_stats st;
	tnd_lsfs_get_stats(vol, &st);
	json_t *o = json_object();
	if (!o)
		return;
#define NUM(f) json_object_set_new(o, #f, json_integer((json_int_t)st.f))
	NUM(reads); NUM(writes); NUM(flushes); NUM(unmaps); NUM(crc_errors); NUM(batches);
	NUM(backing_flushes); NUM(records); NUM(rmw); NUM(gc_passes); NUM(gc_moved_blocks);
	NUM(gc_freed_segments); NUM(checkpoints); NUM(reclaimed_segments); NUM(mapped_blocks);
	NUM(map_bytes); NUM(client_bytes_written); NUM(backing_bytes_written); NUM(gc_bytes_written);
	NUM(ckpt_bytes_written); NUM(gc_segments_written); NUM(gc_mixed_blocks);
	NUM(segments); NUM(free_segments); NUM(segment_size); NUM(logical_bytes_written);
	NUM(stored_bytes); NUM(zero_blocks); NUM(compressed_blocks); NUM(raw_blocks);
	NUM(map_capacity); NUM(dedup_hits); NUM(dedup_saturated); NUM(dup_fp_only); NUM(verify_mismatches);
	NUM(shared_payloads); NUM(unique_blocks); NUM(index_entries); NUM(index_bytes); NUM(refs_bytes);
	NUM(deferred_writes); NUM(deferred_blocks); NUM(compacted_blocks); NUM(compacted_raw_blocks);
	NUM(compacted_bytes_saved); NUM(compaction_passes);
#undef NUM
	json_object_set_new(o, "dedup", json_boolean(to_lsfs(vol)->ddx != NULL));
	json_object_set_new(o, "deferred_marked", json_boolean(st.deferred_marked));
	json_object_set_new(o, "index_warmup", json_string(tnd_lsfs_warmup_name(st.index_warmup)));
	json_object_set_new(o, "index_warmup_segments", json_integer((json_int_t)st.warmup_segments));
	json_object_set_new(o, "index_warmup_scanned", json_integer((json_int_t)st.warmup_scanned));
	json_object_set_new(o, "index_warmup_entries", json_integer((json_int_t)st.warmup_entries));
	json_object_set_new(o, "index_warmup_ms", json_integer((json_int_t)st.warmup_ms));
	/* Mapped blocks per stored payload: what dedup saves. */
	json_object_set_new(o, "dedup_ratio", json_real(st.unique_blocks ? (double)st.mapped_blocks /
							(double)st.unique_blocks : 1.0));
	json_object_set_new(o, "compress", json_string(ls_compress_name(vol)));
	json_object_set_new(o, "compress_mode", json_string(tnd_lsfs_compress_mode_name(
		atomic_load_explicit(&to_lsfs(vol)->cmode, memory_order_relaxed))));
	/* Unique data over the space its payloads take: what compression saves. */
	json_object_set_new(o, "compression_ratio",
			    json_real(st.stored_bytes ? (double)st.unique_blocks * LSFS_BLK /
							  (double)st.stored_bytes : 1.0));
	json_object_set_new(out, "lsfs", o);
}

static int lsfs_resize(struct tnd_volume *vol, uint64_t num_blocks)
{
	struct lsfs *ls = to_lsfs(vol);
	if (ls->failed)
		return -EROFS;
	if (num_blocks < ls->num_blocks || num_blocks > LSFS_MAX_BYTES / ls->sb.block_size)
		return -EINVAL;   /* grow only: shrinking would drop data */
	if (num_blocks == ls->num_blocks)
		return 0;
	int ret = lsfs_map_grow(&ls->map, (num_blocks * ls->sb.block_size + LSFS_BLK - 1) / LSFS_BLK);
	if (ret < 0)
		return ret;
	/* The new size is a record: replay sees it before any write past the
	 * old end, since those come later in the log. */
	home_enter(ls);
	ret = make_room(ls, 0);
	if (ret < 0)
		return ret == -EAGAIN ? -EBUSY : ret;
	add_desc(ls, 0, 0, LSFS_DESC_SIZE, 0, num_blocks);
	ls->num_blocks = num_blocks;
	schedule_kick(ls);
	return 0;
}

static bool busy(const struct lsfs *ls)
{
	return ls->kick_pending || ls->wr_n > 0 || ls->flush_busy || ls->ckpt_busy || ls->gc_busy ||
	       ls->reclaim_busy || ls->linger_armed || ls->wu_busy || ls->dm_busy;
}

static void lsfs_free(struct lsfs *ls)
{
	for (int i = 0; i < LSFS_NBUF; i++)
		free(ls->bufs[i].data);
	lsfs_map_free(&ls->map);
	free(ls->segs);
	free(ls->readers);
	free(ls->dead_rec);
	free(ls->ckpt_frees);
	free(ls->ckpt_buf);
	free(ls->gc_buf);
	free(ls->gc_locs);
	tnd_dedup_destroy(ls->ddx);
	tnd_dedup_refs_destroy(ls->refs);
	dd_cache_free(ls->dd_cache);
	free(ls->zbuf);
	free(ls->cbuf);
	free(ls->dbuf);
	free(ls->gcz);
	tnd_compress_ctx_destroy(ls->cctx);
	for (unsigned i = 0; i < ls->nhelpers; i++)
		tnd_compress_ctx_destroy(ls->helpers[i].cctx);
	free(ls->helpers);
	free(ls->gc_lbas);
	free(ls->gc_secs);
	free(ls->gc_skip);
	free(ls->stg_buf);
	free(ls->stg);
	free(ls->stg_pinned);
	free(ls->stg_vict);
	free(ls->wu_segs);
	free(ls->wu_seqs);
	free(ls->wu_buf);
	free(ls->wu_dbuf);
	free(ls->dm_blk);
	pthread_mutex_destroy(&ls->sb_mu);
	free(ls);
}

/*
 * Synchronous checkpoint, for open and close, when nothing else of this
 * volume runs: write out whatever of the log is not yet written, flush,
 * write the checkpoint, flush. @r is a private reactor of the calling
 * thread, so this works whether or not the home reactor runs elsewhere.
 */
static int ckpt_sync(struct lsfs *ls, struct tnd_reactor *r)
{
	struct tnd_volume *b = ls->vol.base;
	seal_record(ls);
	for (;;) {
		struct lsfs_buf *bb = NULL;
		for (int i = 0; i < LSFS_NBUF; i++) {
			struct lsfs_buf *bi = &ls->bufs[i];
			if (bi->active && bi->issued < bi->sealed_end && (!bb || bi->seg_seq < bb->seg_seq))
				bb = bi;
		}
		if (!bb)
			break;
		int ret = lsfs_sync_io(b, r, TND_IO_WRITE,
				       ls->sb.seg_off + (uint64_t)bb->seg * ls->sb.seg_size + bb->issued,
				       bb->data + bb->issued, bb->sealed_end - bb->issued);
		if (ret < 0)
			return ret;
		ls->st.backing_bytes_written += bb->sealed_end - bb->issued;
		bb->issued = bb->done = bb->sealed_end;
		if (bb->sealed_seq > ls->written_seq)
			ls->written_seq = bb->sealed_seq;
	}
	int ret = lsfs_sync_io(b, r, TND_IO_FLUSH, 0, NULL, 0);
	if (ret < 0)
		return ret;
	ls->durable_seq = ls->written_seq;
	ret = ckpt_build(ls);
	if (ret < 0)
		return ret;
	uint64_t off = ls->sb.ckpt_off + (ls->ckpt_seq & 1) * ls->sb.ckpt_size;
	ret = lsfs_sync_io(b, r, TND_IO_WRITE, off, ls->ckpt_buf, ls->ckpt_len);
	ls->st.backing_bytes_written += ls->ckpt_len;
	ls->st.ckpt_bytes_written += ls->ckpt_len;
	if (ret == 0)
		ret = lsfs_sync_io(b, r, TND_IO_FLUSH, 0, NULL, 0);
	free(ls->ckpt_buf);
	ls->ckpt_buf = NULL;
	if (ret == 0)
		ckpt_apply_frees(ls);
	memset(ls->ckpt_frees, 0, ls->sb.seg_count * sizeof(*ls->ckpt_frees));
	return ret;
}

/*
 * Closing has two halves. On the home reactor: stop the timer, refuse new
 * background work, and wait until the log writer, GC and any checkpoint
 * in flight have landed. Then, from the caller: a final synchronous
 * checkpoint (which first makes the whole log durable, so the next open
 * replays nothing) and the frees. The first half runs inline when the
 * caller is the home reactor's thread (or nothing ever ran there), else by
 * message while the caller waits.
 */
struct close_req {
	struct tnd_msg msg;
	struct lsfs *ls;
	sem_t done;
};

static void close_check(struct lsfs *ls)
{
	struct close_req *cr = ls->close_req;
	if (cr && !busy(ls)) {
		ls->close_req = NULL;
		sem_post(&cr->done);
	}
}

static void close_msg(struct tnd_msg *m)
{
	struct close_req *cr = tnd_container_of(m, struct close_req, msg);
	struct lsfs *ls = cr->ls;
	tnd_reactor_timer_cancel(ls->home, &ls->tick);
	ls->closing = true;
	linger_stop(ls);
	ls->close_req = cr;
	close_check(ls);
}

static void lsfs_destroy(struct tnd_volume *vol)
{
	struct lsfs *ls = to_lsfs(vol);
	if (!atomic_load_explicit(&ls->home_seen, memory_order_acquire)) {
		/* Nothing of ours ever ran on the home reactor: no I/O, no timer. */
		ls->closing = true;
	} else if (tnd_reactor_is_current(ls->home)) {
		tnd_reactor_timer_cancel(ls->home, &ls->tick);
		ls->closing = true;
		linger_stop(ls);
		while (busy(ls))
			tnd_reactor_poll(ls->home, -1);
	} else {
		struct close_req cr = { .msg.fn = close_msg, .ls = ls };
		sem_init(&cr.done, 0, 0);
		tnd_reactor_send(ls->home, &cr.msg);
		while (sem_wait(&cr.done) < 0)
			;
		sem_destroy(&cr.done);
	}
	struct tnd_lsfs_stats st;
	tnd_lsfs_get_stats(vol, &st);
	tnd_info(LSFS_TAG, "closing: %llu bytes written, %llu mapped stored in %llu (compression "
		 "%.2fx, %s), %llu all-zero blocks not stored, %llu CRC errors",
		 (unsigned long long)st.logical_bytes_written,
		 (unsigned long long)st.mapped_blocks * LSFS_BLK, (unsigned long long)st.stored_bytes,
		 st.stored_bytes ? (double)st.unique_blocks * LSFS_BLK / (double)st.stored_bytes : 1.0,
		 ls->cctx ? "lz4" : "off", (unsigned long long)st.zero_blocks,
		 (unsigned long long)st.crc_errors);
	if (ls->refs)
		tnd_info(LSFS_TAG, "closing: dedup %.2fx (%llu blocks in %llu payloads, %llu shared), "
			 "%llu blocks written as shares, %llu verify mismatches, %llu saturated; index "
			 "%llu entries in %llu bytes, reference table %llu bytes",
			 st.unique_blocks ? (double)st.mapped_blocks / (double)st.unique_blocks : 1.0,
			 (unsigned long long)st.mapped_blocks, (unsigned long long)st.unique_blocks,
			 (unsigned long long)st.shared_payloads, (unsigned long long)st.dedup_hits,
			 (unsigned long long)st.verify_mismatches, (unsigned long long)st.dedup_saturated,
			 (unsigned long long)st.index_entries, (unsigned long long)st.index_bytes,
			 (unsigned long long)st.refs_bytes);
	struct tnd_reactor *r;
	if (!ls->failed && tnd_reactor_create(0, 64, &r) == 0) {
		int ret = ckpt_sync(ls, r);
		if (ret < 0)
			tnd_err(LSFS_TAG, "final checkpoint failed (%s); the next open replays the log",
				strerror(-ret));
		tnd_reactor_destroy(r);
	}
	struct tnd_volume *base = vol->base;
	lsfs_free(ls);
	tnd_volume_destroy(base);
}

static const struct tnd_volume_ops lsfs_ops = {
	.type = "lsfs",
	.ctx_size = sizeof(struct lsfs_ioctx),
	.submit = lsfs_submit,
	.info = lsfs_info,
	.stats_json = lsfs_stats_json,
	.resize = lsfs_resize,
	.destroy = lsfs_destroy,
};

int tnd_lsfs_gc_run(struct tnd_volume *vol, tnd_done_cb cb, void *arg)
{
	struct lsfs *ls = to_lsfs(vol);
	if (ls->failed)
		return -EROFS;
	if (ls->gc_busy || ls->gc_cb || ls->reclaim_cb)
		return -EBUSY;
	home_enter(ls);
	ls->gc_cb = cb;
	ls->gc_cb_arg = arg;
	gc_step(ls);
	return 0;
}

int tnd_lsfs_checkpoint_run(struct tnd_volume *vol, tnd_done_cb cb, void *arg)
{
	home_enter(to_lsfs(vol));
	return ckpt_start(to_lsfs(vol), cb, arg);
}

/*
 * Live feature changes. Everything that can fail or block is done by the
 * caller's thread first: the new tables are made, and the superblock
 * gets the feature bits the new setting needs (written and flushed
 * through a private reactor, as at open) before any record can need them.
 * Then a message to the home reactor swaps the tables in or out and
 * publishes what the write stages compute; tables turned off are freed
 * by the caller afterwards. The only other superblock writer is the
 * deferred mark's update on home ("Deferred mark"); sb_mu, held from the
 * copy of ls->sb here to the swap, keeps the two apart, so the copy is
 * read safely by the caller and no update is lost. DEFERRED is never set
 * here: the first deferred chunk does that.
 */
struct feat_req {
	struct tnd_msg msg;
	struct lsfs *ls;
	bool compress, dedup;
	unsigned mode;                 /* enum tnd_lsfs_compress_mode */
	struct lsfs_sb sb;
	struct tnd_compress_ctx *cctx;
	struct tnd_dedup *ddx;
	struct dd_cache_ent *cache;
	struct tnd_dedup_refs *refs;
	int io_err;                    /* the superblock write failed: fail-stop */
	int ret;
	sem_t done;
};

static void feat_apply(struct feat_req *q)
{
	struct lsfs *ls = q->ls;
	if (q->io_err) {
		/* Like any backing write or flush error: a failed flush may
		 * have dropped log writes that went before it. */
		fail_stop(ls, q->io_err, "superblock write");
		q->ret = q->io_err;
		return;
	}
	if (ls->failed) {
		q->ret = -EROFS;
		return;
	}
	ls->sb.incompat = q->sb.incompat;
	ls->sb.sb_seq = q->sb.sb_seq;
	if (q->compress != (ls->cctx != NULL)) {
		struct tnd_compress_ctx *t = ls->cctx;
		ls->cctx = q->cctx;
		q->cctx = t;
	}
	bool dedup_on = q->dedup && !ls->ddx;
	if (q->dedup != (ls->ddx != NULL)) {
		struct tnd_dedup *t = ls->ddx;
		ls->ddx = q->ddx;
		q->ddx = t;
		struct dd_cache_ent *c = ls->dd_cache;
		ls->dd_cache = q->cache;
		q->cache = c;
	}
	/* The new index learns what is stored in the background; an index
	 * switched off ends the walk that filled it. */
	if (!ls->ddx) {
		wu_stop(ls, "dedup switched off");
		ls->st.index_warmup = TND_LSFS_WARMUP_OFF;
	}
	if (!ls->refs) {
		ls->refs = q->refs;
		q->refs = NULL;
	}
	ls->opts.compress = q->compress;
	ls->opts.dedup = q->dedup;
	ls->opts.compress_mode = (enum tnd_lsfs_compress_mode)q->mode;
	atomic_store_explicit(&ls->cmode, q->mode, memory_order_relaxed);
	atomic_store_explicit(&ls->pre_feat, (ls->cctx ? PRE_LZ4 : 0) | (ls->ddx ? PRE_FP : 0),
			      memory_order_relaxed);
	if (dedup_on)
		wu_begin(ls);
	q->ret = 0;
}

static void feat_msg(struct tnd_msg *m)
{
	struct feat_req *q = tnd_container_of(m, struct feat_req, msg);
	feat_apply(q);
	sem_post(&q->done);
}

/*
 * Take sb_mu. On the home thread (a test that polls home) the holder can
 * only be home's own deferred-mark update: poll home until it lands.
 */
static void sb_lock(struct lsfs *ls)
{
	if (!tnd_reactor_is_current(ls->home)) {
		pthread_mutex_lock(&ls->sb_mu);
		return;
	}
	while (pthread_mutex_trylock(&ls->sb_mu) != 0)
		tnd_reactor_poll(ls->home, 1);
}

static int set_features(struct tnd_volume *vol, bool compress, bool dedup, unsigned mode)
{
	struct lsfs *ls = to_lsfs(vol);
	struct feat_req q = { .msg.fn = feat_msg, .ls = ls, .compress = compress, .dedup = dedup,
			      .mode = mode };
	int ret = 0;
	if (compress && !ls->cctx)
		ret = tnd_compress_ctx_create(NULL, &q.cctx);
	if (ret == 0 && dedup && !ls->ddx)
		ret = dedup_tables(ls, &q.ddx, &q.cache);
	if (ret == 0 && dedup && !ls->refs)
		ret = tnd_dedup_refs_create(&q.refs);
	if (ret < 0)
		goto out;
	sb_lock(ls);
	q.sb = ls->sb;
	uint64_t want = q.sb.incompat | (compress || dedup ? LSFS_INCOMPAT_PACKED : 0) |
			(dedup ? LSFS_INCOMPAT_DEDUP : 0);
	if (want != q.sb.incompat) {
		struct tnd_reactor *r;
		q.sb.incompat = want;
		ret = tnd_reactor_create(0, 64, &r);
		if (ret < 0) {
			pthread_mutex_unlock(&ls->sb_mu);
			goto out;
		}
		ret = lsfs_sb_write(vol->base, r, &q.sb);
		tnd_reactor_destroy(r);
		if (ret < 0) {
			tnd_err(LSFS_TAG, "marking the store for %s failed (%s)",
				dedup ? "dedup" : "compression", strerror(-ret));
			q.io_err = ret;
		} else {
			tnd_info(LSFS_TAG, "store marked as holding %s (older builds will refuse it)",
				 dedup ? "shared blocks" : "compressed records");
		}
	}
	/* Not inline merely because no I/O has run yet (unlike destroy): one
	 * may start on the home thread at any moment. */
	if (tnd_reactor_is_current(ls->home)) {
		feat_apply(&q);
	} else {
		sem_init(&q.done, 0, 0);
		tnd_reactor_send(ls->home, &q.msg);
		while (sem_wait(&q.done) < 0)
			;
		sem_destroy(&q.done);
	}
	pthread_mutex_unlock(&ls->sb_mu);
	ret = q.ret;
	if (ret == 0)
		tnd_info(LSFS_TAG, "new writes: compression %s (%s), dedup %s", compress ? "lz4" : "off",
			 tnd_lsfs_compress_mode_name(mode), dedup ? "on" : "off");
out:
	tnd_compress_ctx_destroy(q.cctx);
	tnd_dedup_destroy(q.ddx);
	dd_cache_free(q.cache);
	tnd_dedup_refs_destroy(q.refs);
	return ret;
}

static int u64_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/*
 * The reference counts are not stored anywhere: they are the map's. A
 * payload mapped by k chunks has count k; the table keeps those with k >=
 * 2. Rebuilt here from the recovered map (sorted payload addresses), and
 * each segment's live sectors count a shared payload once.
 */
static int refs_rebuild(struct lsfs *ls)
{
	uint64_t n = ls->map.mapped;
	uint64_t *locs = malloc((n ? n : 1) * sizeof(*locs));
	if (!locs)
		return -ENOMEM;
	uint64_t k = 0;
	for (uint64_t c = 0; k < n && lsfs_map_next(&ls->map, &c); c++)
		locs[k++] = lsfs_ment_loc(lsfs_map_get(&ls->map, c)) << 16 | lsfs_map_get(&ls->map, c)->aux;
	qsort(locs, k, sizeof(*locs), u64_cmp);
	int ret = 0;
	for (uint64_t i = 0; i < k && ret == 0;) {
		uint64_t j = i + 1;
		while (j < k && locs[j] >> 16 == locs[i] >> 16)
			j++;
		if (j - i > 1) {
			uint64_t loc = locs[i] >> 16;
			ret = tnd_dedup_ref_set(ls->refs, loc, (unsigned)TND_MIN(j - i, (uint64_t)UINT32_MAX));
			ls->shared_extra += j - i - 1;
			ls->segs[seg_of(ls, loc >> 3)].live_sec -=
				(uint32_t)(j - i - 1) * lsfs_len_sectors(lsfs_aux_len((uint16_t)locs[i]));
		}
		i = j;
	}
	free(locs);
	if (ret == -EOVERFLOW)
		tnd_err(LSFS_TAG, "a payload is shared by more than %u blocks (run tandem-check)",
			LSFS_REF_MAX);
	return ret == -EOVERFLOW ? -EUCLEAN : ret;
}

static void dd_cache_free(struct dd_cache_ent *cache)
{
	if (cache)
		free(cache[0].raw);
	free(cache);
}

/* The fingerprint index (opts.dedup_index_bytes) and the verified-candidate cache. */
static int dedup_tables(const struct lsfs *ls, struct tnd_dedup **ddx, struct dd_cache_ent **cache)
{
	uint64_t budget = ls->opts.dedup_index_bytes;
	if (!budget)
		budget = TND_MIN((uint64_t)ls->sb.seg_count * (ls->seg_blocks - 1) * TND_DEDUP_SLOT_BYTES,
				 64ull << 20);
	budget = TND_MAX(budget, (uint64_t)TND_DEDUP_MIN_BUDGET);
	int ret = tnd_dedup_create(budget, ddx);
	if (ret < 0)
		return ret;
	*cache = calloc(DD_CACHE_N, sizeof(**cache));
	uint8_t *cache_raw = *cache ? lsfs_alloc_blocks((size_t)DD_CACHE_N * 2 * LSFS_BLK) : NULL;
	if (!cache_raw) {
		free(*cache);
		*cache = NULL;
		tnd_dedup_destroy(*ddx);
		*ddx = NULL;
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < DD_CACHE_N; i++)
		(*cache)[i].raw = cache_raw + (size_t)i * 2 * LSFS_BLK;
	return 0;
}

/* Dedup's tables, and the feature bits before the first shared record. */
static int dedup_setup(struct lsfs *ls, struct tnd_volume *backing, struct tnd_reactor *r,
		       struct lsfs_recovery *rec)
{
	if (!ls->opts.dedup && !(ls->sb.incompat & LSFS_INCOMPAT_DEDUP))
		return 0;
	int ret = tnd_dedup_refs_create(&ls->refs);
	if (ret == 0)
		ret = refs_rebuild(ls);
	if (ret < 0 || !ls->opts.dedup)
		return ret;
	ret = dedup_tables(ls, &ls->ddx, &ls->dd_cache);
	if (ret < 0)
		return ret;
	uint64_t want = LSFS_INCOMPAT_PACKED | LSFS_INCOMPAT_DEDUP;
	if ((ls->sb.incompat & want) != want) {
		ls->sb.incompat |= want;
		rec->sb_differ = false;
		rec->sb_valid[0] = rec->sb_valid[1] = 0;
		ret = lsfs_sb_write(backing, r, &ls->sb);
		if (ret < 0) {
			tnd_err(LSFS_TAG, "marking the store for dedup failed (%s)", strerror(-ret));
			return ret;
		}
		tnd_info(LSFS_TAG, "store marked as holding shared blocks (older builds will refuse it)");
	}
	return 0;
}

int lsfs_create_volume(struct tnd_volume *backing, struct tnd_reactor *home, struct tnd_reactor *r,
		       const struct tnd_lsfs_opts *opts, struct lsfs_recovery *rec,
		       struct tnd_volume **out)
{
	const struct lsfs_sb *sb = &rec->sb;
	struct lsfs *ls = calloc(1, sizeof(*ls));
	if (!ls)
		return -ENOMEM;
	tnd_volume_init(&ls->vol, &lsfs_ops, backing);
	pthread_mutex_init(&ls->sb_mu, NULL);
	ls->home = home;
	ls->opts = *opts;
	ls->opts.log_writes = TND_MIN(TND_MAX(opts->log_writes, 1u), LSFS_MAX_WRITES);
	/* GC keeps 1% of the segments free by default (at least 4, at most
	 * 64): dead segments come back after a flush, so little headroom is
	 * needed, and every free segment held back raises the live share of
	 * the segments GC cleans. */
	if (!ls->opts.gc_free_low)
		ls->opts.gc_free_low = TND_MAX(4u, TND_MIN(64u, sb->seg_count / 100));
	if (!ls->opts.ckpt_segments)
		ls->opts.ckpt_segments = 8;
	if (!ls->opts.ckpt_ratio)
		ls->opts.ckpt_ratio = 64;
	ls->sb = *sb;
	ls->seg_blocks = sb->seg_size / LSFS_BLK;
	ls->num_blocks = rec->num_blocks;
	ls->readers = calloc(sb->seg_count, sizeof(*ls->readers));
	ls->ckpt_frees = calloc(sb->seg_count, sizeof(*ls->ckpt_frees));
	ls->dead_rec = calloc(sb->seg_count, sizeof(*ls->dead_rec));
	ls->gc_skip = calloc(sb->seg_count, sizeof(*ls->gc_skip));
	ls->stg_pinned = calloc(sb->seg_count, sizeof(*ls->stg_pinned));
	ls->stg_vict = calloc(sb->seg_count, sizeof(*ls->stg_vict));
	if (!ls->opts.gc_mix)
		ls->stg_buf = lsfs_alloc_blocks(2 * (size_t)sb->seg_size);
	/* A packed segment holds up to eight payloads per block. */
	size_t max_pay = (size_t)ls->seg_blocks * (LSFS_BLK / LSFS_SECTOR);
	ls->gc_locs = calloc(max_pay, sizeof(*ls->gc_locs));
	ls->gc_lbas = calloc(max_pay, sizeof(*ls->gc_lbas));
	ls->gc_secs = calloc(max_pay, sizeof(*ls->gc_secs));
	ls->gc_cap = (uint32_t)max_pay;
	ls->zbuf = lsfs_alloc_blocks(LSFS_BLK);
	ls->cbuf = lsfs_alloc_blocks(LSFS_BLK);
	ls->dbuf = lsfs_alloc_blocks(LSFS_BLK);
	ls->gcz = lsfs_alloc_blocks(LSFS_BLK);
	if (!ls->gcz || !ls->readers || !ls->ckpt_frees || !ls->dead_rec || !ls->gc_skip || !ls->gc_locs || !ls->gc_lbas || !ls->gc_secs ||
	    !ls->stg_pinned || !ls->stg_vict || (!ls->opts.gc_mix && !ls->stg_buf) ||
	    !ls->zbuf || !ls->cbuf || !ls->dbuf) {
		lsfs_free(ls);
		return -ENOMEM;
	}
	ls->map_cap = lsfs_ckpt_capacity(sb);
	if (opts->compress) {
		int ret = tnd_compress_ctx_create(NULL, &ls->cctx);
		if (ret < 0) {
			lsfs_free(ls);
			return ret;
		}
		/* Older builds must refuse the store before it holds the
		 * first packed record. (The first deferred one marks it
		 * when it comes: "Deferred mark".) */
		uint64_t want = LSFS_INCOMPAT_PACKED;
		if ((ls->sb.incompat & want) != want) {
			ls->sb.incompat |= want;
			rec->sb_differ = false;
			rec->sb_valid[0] = rec->sb_valid[1] = 0;
			ret = lsfs_sb_write(backing, r, &ls->sb);
			if (ret < 0) {
				tnd_err(LSFS_TAG, "marking the store for compression failed (%s)",
					strerror(-ret));
				lsfs_free(ls);
				return ret;
			}
			tnd_info(LSFS_TAG, "store marked as holding compressed records "
				 "(older builds will refuse it)");
		}
	}
	/* Take the recovered map and segment table. */
	ls->map = rec->map;
	memset(&rec->map, 0, sizeof(rec->map));
	ls->segs = rec->segs;
	rec->segs = NULL;
	atomic_store_explicit(&ls->cmode, (unsigned)opts->compress_mode, memory_order_relaxed);
	atomic_store_explicit(&ls->wu_mbps, TND_MIN(opts->dedup_warmup_mbps, TND_LSFS_WARMUP_MBPS_MAX),
			      memory_order_relaxed);
	atomic_store_explicit(&ls->defer_ok, (ls->sb.incompat & LSFS_INCOMPAT_DEFERRED) != 0,
			      memory_order_relaxed);
	for (uint32_t i = 0; i < sb->seg_count; i++) {
		struct lsfs_seginfo *s = &ls->segs[i];
		ls->ndeferred += s->deferred;
		if (s->state == LSFS_SEG_USED || s->in_chain) {
			s->state = s->live ? LSFS_SEG_USED : LSFS_SEG_DEAD;
			ls->ndead += s->state == LSFS_SEG_DEAD;
		} else {
			s->state = LSFS_SEG_FREE;
			ls->nfree++;
		}
	}
	/*
	 * Records and segments written after the recovered prefix may exist
	 * (unflushed, lost in part): never reuse their sequence numbers, so
	 * that none of them can ever pass for a continuation of the new log.
	 * Between two durable checkpoints each segment is opened at most
	 * once, so a jump of one log's worth of numbers clears them all.
	 */
	ls->next_rec_seq = rec->next_rec_seq + (uint64_t)sb->seg_count * ls->seg_blocks + 1;
	ls->max_seg_seq = rec->max_seg_seq + sb->seg_count + 1;
	ls->written_seq = ls->durable_seq = ls->next_rec_seq - 1;
	ls->tail_seg = rec->tail_seg;
	ls->tail_off = rec->tail_off;
	ls->tail_seg_seq = rec->tail_seg_seq;
	ls->next_seg = LSFS_NONE32;
	ls->ckpt_seq = rec->ck.ckpt_seq;
	ls->tick.fn = tick_fn;
	ls->linger.fn = linger_fn;

	int dret = dedup_setup(ls, backing, r, rec);
	if (dret < 0) {
		lsfs_free(ls);
		return dret;
	}
	if (opts->nhelpers && opts->helpers) {
		ls->helpers = calloc(opts->nhelpers, sizeof(*ls->helpers));
		if (!ls->helpers) {
			lsfs_free(ls);
			return -ENOMEM;
		}
		for (unsigned i = 0; i < opts->nhelpers; i++)
			ls->helpers[i].r = opts->helpers[i];
		ls->nhelpers = TND_MIN(opts->nhelpers, (unsigned)UINT16_MAX);
	}
	ls->opts.helpers = NULL;   /* borrowed for open only; kept in ls->helpers */
	atomic_store_explicit(&ls->pre_feat, (ls->cctx ? PRE_LZ4 : 0) | (ls->ddx ? PRE_FP : 0),
			      memory_order_relaxed);
	/* An interrupted superblock update left one copy torn or older. */
	if (rec->sb_valid[0] || rec->sb_valid[1] || rec->sb_differ) {
		int ret = lsfs_sb_write(backing, r, &ls->sb);
		if (ret < 0) {
			lsfs_free(ls);
			return ret;
		}
	}
	/* A fresh checkpoint pins the recovered state and frees dead segments. */
	int ret = ckpt_sync(ls, r);
	if (ret < 0) {
		lsfs_free(ls);
		return ret;
	}
	/* The index starts empty: a background walk rebuilds it (nothing
	 * runs here yet; the first tick on home scans). */
	wu_begin(ls);
	*out = &ls->vol;
	return 0;
}

int tnd_lsfs_set_features(struct tnd_volume *vol, bool compress, bool dedup)
{
	if (!vol || vol->ops != &lsfs_ops)
		return -EINVAL;
	return set_features(vol, compress, dedup,
			    atomic_load_explicit(&to_lsfs(vol)->cmode, memory_order_relaxed));
}

int tnd_lsfs_set_compress_mode(struct tnd_volume *vol, enum tnd_lsfs_compress_mode mode)
{
	if (!vol || vol->ops != &lsfs_ops || !tnd_lsfs_compress_mode_name(mode))
		return -EINVAL;
	struct lsfs *ls = to_lsfs(vol);
	/* opts.compress and .dedup change only on the home reactor, by this
	 * very kind of request, which does not run concurrently with itself. */
	return set_features(vol, ls->opts.compress, ls->opts.dedup, (unsigned)mode);
}

int tnd_lsfs_set_warmup_rate(struct tnd_volume *vol, uint32_t mbps)
{
	if (!vol || vol->ops != &lsfs_ops || mbps > TND_LSFS_WARMUP_MBPS_MAX)
		return -EINVAL;
	atomic_store_explicit(&to_lsfs(vol)->wu_mbps, mbps, memory_order_relaxed);
	return 0;
}

static const char *const cmode_names[] = {
	[TND_LSFS_COMPRESS_INLINE] = "inline",
	[TND_LSFS_COMPRESS_ADAPTIVE] = "adaptive",
	[TND_LSFS_COMPRESS_DEFERRED] = "deferred",
};

const char *tnd_lsfs_compress_mode_name(enum tnd_lsfs_compress_mode m)
{
	return (unsigned)m < TND_ARRAY_SIZE(cmode_names) ? cmode_names[m] : NULL;
}

int tnd_lsfs_compress_mode_parse(const char *name, enum tnd_lsfs_compress_mode *out)
{
	for (unsigned i = 0; name && i < TND_ARRAY_SIZE(cmode_names); i++) {
		if (strcmp(name, cmode_names[i]) == 0) {
			*out = (enum tnd_lsfs_compress_mode)i;
			return 0;
		}
	}
	return -EINVAL;
}
