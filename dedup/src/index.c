/*
 * The fingerprint index; the layout and the budget are described in
 * tnd_dedup.h. Two tables in one allocation:
 *
 *   slots[nslots]  16 B each: pba, and meta = occupied | ref | 56-bit tag.
 *                  A fingerprint with home slot h lives in one of
 *                  slots[h .. h + TND_DEDUP_WINDOW - 1] (wrapping). Lookups
 *                  scan the whole window (four cache lines), so a slot can
 *                  be emptied in place: no tombstones, no shifting, and a
 *                  filled slot never moves.
 *   rev[2*nslots]  4 B each: slot number + 1 (0 = empty), keyed by pba with
 *                  plain linear probing. There are never more entries than
 *                  slots, so the load stays at or below 1/2: inserting always
 *                  finds room and a probe sequence is short (about 1.5
 *                  entries to find a pba, 2.5 to miss). Deletion shifts the
 *                  following entries back (no tombstones either).
 *                  The slot number takes only as many low bits as nslots
 *                  needs; the bits above it hold a tag of the pba (another
 *                  hash of it than the one that picks the home). A probe
 *                  reads the slot's pba, a cache miss at a random place in
 *                  a large table, only when the tag agrees: every write of
 *                  new data asks whether its pba is indexed (usually not),
 *                  and every freed block asks again, so most probes are
 *                  misses that the tag now answers from the rev line alone.
 *                  An index of 2^24 slots (384 MiB) keeps 8 tag bits; one
 *                  so large that the slot number needs all 32 keeps none
 *                  and dereferences every probe, as before.
 *
 * Invariants: each pba is in at most one slot, and each occupied slot has
 * exactly one rev entry, found by probing from the pba's home.
 */
#include <errno.h>
#include <stdlib.h>

#include "tnd_dedup.h"
#include "hash.h"

#define META_OCC  (UINT64_C(1) << 63)
#define META_REF  (UINT64_C(1) << 62)
#define TAG_MASK  ((UINT64_C(1) << 56) - 1)
#define REV_NONE  UINT64_MAX

struct dd_slot {
	uint64_t pba;
	uint64_t meta;
};

_Static_assert(sizeof(struct dd_slot) + 2 * sizeof(uint32_t) == TND_DEDUP_SLOT_BYTES,
	       "TND_DEDUP_SLOT_BYTES must match the layout");

struct tnd_dedup {
	struct dd_slot *slots;
	uint32_t *rev;
	uint64_t nslots;
	uint64_t nrev;
	unsigned sbits;                 /* low bits of a rev entry: slot number + 1 */
	uint64_t hand;                  /* rotates where CLOCK starts in a window */
	struct tnd_dedup_stats st;
};

struct dd_key {
	uint64_t home;
	uint64_t tag;
};

static struct dd_key key_of(const struct tnd_dedup *d, const struct tnd_dedup_fp *fp)
{
	/* Both halves feed both outputs, so truncated fingerprints spread too. */
	uint64_t h1 = dd_mix64(fp->lo ^ dd_mix64(fp->hi ^ UINT64_C(0x9e3779b97f4a7c15)));
	uint64_t h2 = dd_mix64(h1 ^ UINT64_C(0x632be59bd9b4e019));

	return (struct dd_key){ .home = dd_range(h1, d->nslots), .tag = h2 & TAG_MASK };
}

static inline uint64_t slot_at(const struct tnd_dedup *d, uint64_t home, unsigned i)
{
	uint64_t s = home + i;
	return s >= d->nslots ? s - d->nslots : s;
}

static inline bool slot_is(const struct dd_slot *s, uint64_t tag)
{
	return (s->meta & (META_OCC | TAG_MASK)) == (META_OCC | tag);
}

/* ---- reverse table ---- */

static inline uint64_t rev_home(const struct tnd_dedup *d, uint64_t pba)
{
	return dd_range(dd_mix64(pba), d->nrev);
}

static inline uint64_t rev_next(const struct tnd_dedup *d, uint64_t i)
{
	return i + 1 == d->nrev ? 0 : i + 1;
}

/* The tag bits of a rev entry (none when the slot number needs all 32). */
static inline uint32_t rev_tmask(const struct tnd_dedup *d)
{
	return d->sbits >= 32 ? 0 : ~((UINT32_C(1) << d->sbits) - 1);
}

/* @pba's tag, in place above the slot bits. */
static inline uint32_t rev_tag(const struct tnd_dedup *d, uint64_t pba)
{
	/* rev_home uses the high bits of this mix; the tag takes the low ones. */
	return (uint32_t)(dd_mix64(pba) << (d->sbits & 31)) & rev_tmask(d);
}

static inline uint64_t rev_slot(const struct tnd_dedup *d, uint32_t e)
{
	return (uint64_t)(e & ~rev_tmask(d)) - 1;
}

/* Position in rev of @pba's entry, or REV_NONE. */
static uint64_t rev_find(const struct tnd_dedup *d, uint64_t pba)
{
	uint32_t tag = rev_tag(d, pba), tmask = rev_tmask(d);

	for (uint64_t i = rev_home(d, pba); d->rev[i]; i = rev_next(d, i))
		if ((d->rev[i] & tmask) == tag && d->slots[rev_slot(d, d->rev[i])].pba == pba)
			return i;
	return REV_NONE;
}

static void rev_insert(struct tnd_dedup *d, uint64_t pba, uint64_t slot)
{
	uint64_t i = rev_home(d, pba);

	while (d->rev[i])
		i = rev_next(d, i);
	d->rev[i] = rev_tag(d, pba) | (uint32_t)(slot + 1);
}

/*
 * Empty rev[i] and move later entries of the same run back into the hole
 * when their home allows it, so that every entry stays reachable from its
 * home without tombstones (Knuth's algorithm R).
 */
static void rev_delete_at(struct tnd_dedup *d, uint64_t i)
{
	uint64_t j = i;

	for (;;) {
		j = rev_next(d, j);
		if (!d->rev[j])
			break;
		uint64_t k = rev_home(d, d->slots[rev_slot(d, d->rev[j])].pba);
		/* Leave it when its home lies cyclically in (i, j]. */
		bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
		if (stays)
			continue;
		d->rev[i] = d->rev[j];
		i = j;
	}
	d->rev[i] = 0;
}

/* ---- slots ---- */

/* Empty slot @s, whose rev entry is at @ri. */
static void slot_clear(struct tnd_dedup *d, uint64_t s, uint64_t ri)
{
	rev_delete_at(d, ri);
	d->slots[s].meta = 0;
	d->st.entries--;
}

/* Empty slot @s, finding its rev entry first. */
static void slot_clear_by_slot(struct tnd_dedup *d, uint64_t s)
{
	uint64_t ri = rev_find(d, d->slots[s].pba);

	/* Unreachable unless the invariants broke; then leave rev as it is. */
	if (ri == REV_NONE) {
		d->slots[s].meta = 0;
		d->st.entries--;
		return;
	}
	slot_clear(d, s, ri);
}

/*
 * A slot in @k's window to put a new entry in: a free one, else a CLOCK
 * victim, which is emptied first. Second chance: a set reference bit is
 * cleared and the slot passed over; when every slot had its bit set, the
 * first one looked at goes.
 */
static uint64_t slot_make_room(struct tnd_dedup *d, struct dd_key k)
{
	for (unsigned i = 0; i < TND_DEDUP_WINDOW; i++) {
		uint64_t s = slot_at(d, k.home, i);
		if (!(d->slots[s].meta & META_OCC))
			return s;
	}

	unsigned start = (unsigned)(d->hand++ % TND_DEDUP_WINDOW);
	uint64_t victim = slot_at(d, k.home, start);
	for (unsigned i = 0; i < TND_DEDUP_WINDOW; i++) {
		uint64_t s = slot_at(d, k.home, (start + i) % TND_DEDUP_WINDOW);
		if (!(d->slots[s].meta & META_REF)) {
			victim = s;
			break;
		}
		d->slots[s].meta &= ~META_REF;
	}
	slot_clear_by_slot(d, victim);
	d->st.evictions++;
	return victim;
}

/* ---- public ---- */

int tnd_dedup_create(uint64_t budget_bytes, struct tnd_dedup **out)
{
	if (budget_bytes < TND_DEDUP_MIN_BUDGET)
		return -EINVAL;

	uint64_t nslots = (budget_bytes - sizeof(struct tnd_dedup)) / TND_DEDUP_SLOT_BYTES;
	/* rev holds slot numbers + 1 in 32 bits. */
	if (nslots > UINT32_MAX - 1)
		nslots = UINT32_MAX - 1;
	if (nslots < TND_DEDUP_WINDOW)
		return -EINVAL;

	struct tnd_dedup *d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	/*
	 * One calloc for both tables: for a large budget it is a fresh
	 * anonymous mapping, whose pages the kernel supplies only when the
	 * index first writes them.
	 */
	d->slots = calloc(nslots, TND_DEDUP_SLOT_BYTES);
	if (!d->slots)
		goto err_free_handle;
	d->nslots = nslots;
	d->rev = (uint32_t *)(d->slots + nslots);
	d->nrev = 2 * nslots;
	d->sbits = 64 - (unsigned)__builtin_clzll(nslots);   /* holds 1..nslots */
	d->st.slots = nslots;
	d->st.bytes = sizeof(*d) + nslots * TND_DEDUP_SLOT_BYTES;
	*out = d;
	return 0;

err_free_handle:
	free(d);
	return -ENOMEM;
}

void tnd_dedup_destroy(struct tnd_dedup *d)
{
	if (!d)
		return;
	free(d->slots);
	free(d);
}

/* The slot of @k's window holding @pba (any pba when @any), or REV_NONE. */
static uint64_t window_find(const struct tnd_dedup *d, struct dd_key k, bool any, uint64_t pba)
{
	for (unsigned i = 0; i < TND_DEDUP_WINDOW; i++) {
		uint64_t s = slot_at(d, k.home, i);
		if (slot_is(&d->slots[s], k.tag) && (any || d->slots[s].pba == pba))
			return s;
	}
	return REV_NONE;
}

int tnd_dedup_lookup(struct tnd_dedup *d, const struct tnd_dedup_fp *fp, uint64_t *pba)
{
	d->st.lookups++;
	uint64_t s = window_find(d, key_of(d, fp), true, 0);
	if (s == REV_NONE)
		return -ENOENT;
	d->st.candidates++;
	*pba = d->slots[s].pba;
	return 0;
}

void tnd_dedup_confirm(struct tnd_dedup *d, const struct tnd_dedup_fp *fp, uint64_t pba)
{
	d->st.hits++;
	/* It may have been evicted between lookup and confirm; that is fine. */
	uint64_t s = window_find(d, key_of(d, fp), false, pba);
	if (s != REV_NONE)
		d->slots[s].meta |= META_REF;
}

void tnd_dedup_reject(struct tnd_dedup *d, const struct tnd_dedup_fp *fp, uint64_t pba)
{
	d->st.verify_mismatches++;
	/*
	 * The entry is wrong for this fingerprint (a tag or fingerprint
	 * collision, or a block lsfs rewrote without telling us): drop it so the
	 * next write of the same data does not pay for the same failed compare.
	 */
	uint64_t s = window_find(d, key_of(d, fp), false, pba);
	if (s != REV_NONE)
		slot_clear_by_slot(d, s);
}

void tnd_dedup_insert(struct tnd_dedup *d, const struct tnd_dedup_fp *fp, uint64_t pba)
{
	struct dd_key k = key_of(d, fp);
	uint64_t s;

	d->st.inserts++;

	/* Already indexed under this fingerprint: nothing to learn. */
	if (window_find(d, k, false, pba) != REV_NONE)
		return;

	/* The pba held other data before: that entry is stale. */
	uint64_t ri = rev_find(d, pba);
	if (ri != REV_NONE)
		slot_clear(d, rev_slot(d, d->rev[ri]), ri);

	/*
	 * The same fingerprint at another pba (its candidate was rejected, or
	 * its refcount saturated and this is the new copy): point it here. The
	 * newer copy is the one with room for references.
	 */
	s = window_find(d, k, true, 0);
	if (s != REV_NONE) {
		ri = rev_find(d, d->slots[s].pba);
		if (ri != REV_NONE)
			rev_delete_at(d, ri);
		d->slots[s].pba = pba;
		d->slots[s].meta = META_OCC | k.tag;
		rev_insert(d, pba, s);
		return;
	}

	s = slot_make_room(d, k);
	d->slots[s].pba = pba;
	d->slots[s].meta = META_OCC | k.tag;
	rev_insert(d, pba, s);
	d->st.entries++;
}

bool tnd_dedup_remove_pba(struct tnd_dedup *d, uint64_t pba)
{
	uint64_t ri = rev_find(d, pba);

	if (ri == REV_NONE)
		return false;
	slot_clear(d, rev_slot(d, d->rev[ri]), ri);
	d->st.removes++;
	return true;
}

bool tnd_dedup_move_pba(struct tnd_dedup *d, uint64_t old_pba, uint64_t new_pba)
{
	if (old_pba == new_pba)
		return rev_find(d, old_pba) != REV_NONE;

	/* Whatever the index thought was at new_pba is gone. */
	uint64_t ri = rev_find(d, new_pba);
	if (ri != REV_NONE)
		slot_clear(d, rev_slot(d, d->rev[ri]), ri);

	ri = rev_find(d, old_pba);
	if (ri == REV_NONE)
		return false;
	uint64_t s = rev_slot(d, d->rev[ri]);
	rev_delete_at(d, ri);
	d->slots[s].pba = new_pba;
	rev_insert(d, new_pba, s);
	return true;
}

void tnd_dedup_get_stats(const struct tnd_dedup *d, struct tnd_dedup_stats *out)
{
	*out = d->st;
}
