/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * access.c: the copy, pin and discard calls, and the fault path they share.
 *
 * Reads of resident pages take no lock (see internal.h, "Lock-free
 * reads"): an emulator's loads are the hottest path there is, and a page
 * that is resident needs nothing from the pager but its referenced bit.
 * Everything else works one page at a time under host->lock: look up the
 * entry, fault the page in if the access needs a frame, copy, release the
 * lock. The lock is dropped while a page is loaded from its tier (the entry
 * is PTE_BUSY; others who want that page wait for this read rather than
 * issuing their own) and while the pager writes a batch out.
 *
 * What needs a frame:
 *  - a write: always (a ZERO page gets a cleared frame, unless the write
 *    covers the whole page; a STORED page is read in, unless the write
 *    covers the whole page, when its stored copy is simply dropped);
 *  - a pin: always, read or write (the caller gets a pointer);
 *  - a read: only of a STORED page; a ZERO page reads as zeros with no
 *    frame. When no frame can be had (all pinned, swap full and nothing
 *    clean to drop, write-out failing) a read of a STORED page still
 *    succeeds through a page on the stack: a full swap never makes data
 *    unreadable.
 *
 * A write or a write pin drops the page's clean stored copy (frame->slot):
 * from then on the frame is the only copy and the pager must write it out.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* ---- reverse map --------------------------------------------------------- */

static bool mergeable(const struct umlmem_guest *g)
{
	return !(g->flags & UMLMEM_GUEST_NOMERGE);
}

/* ---- the further mappers of shared frames ------------------------------------
 * Most frames have one mapper, kept in the frame itself. A shared frame's
 * others are in host->rmore[f], a table indexed by frame number like the
 * frame table: with two mappers (a clone's pages, a merged pair: most
 * shared frames) the second is in the entry itself, with more the entry
 * points to an array. So sharing a frame costs no allocation and no
 * lookup, and cloning a guest of N private pages writes N entries in the
 * order of their frames.
 *
 * The table is reserved for every frame of the budget at the first
 * sharing, 16 bytes a frame, and advised for huge pages (meta_alloc):
 * memory comes with the first entry written in each 2 MiB, at most 0.4%
 * of the budget. It replaced a hash table sized by the shared frames
 * (32 bytes an entry at a load of 1/4 to 1/2, grown by doubling, an
 * allocation per shared frame): a first clone of a guest of 1 GiB
 * touched 26 MiB of new memory for it, 4 MiB now, and the first touch of
 * memory is what a first clone costs (README, "Clones"). Everything here
 * is under host->lock. */

static size_t rmore_bytes(const struct umlmem_host *h)
{
	return h->nframes * sizeof(*h->rmore);
}

struct rmap *rmap_more(const struct umlmem_host *h, uint64_t f)
{
	uint32_t refs = h->frames[f].refs;

	if (refs < 2)
		return NULL;
	return refs == 2 ? &h->rmore[f].one : h->rmore[f].more;
}

void rmap_fini(struct umlmem_host *h)
{
	if (!h->rmore)
		return;
	for (uint64_t f = 0; f < h->nmade; f++)
		if (!frame_gone(h, f) && h->frames[f].refs > 2)
			free(h->rmore[f].more);
	meta_free(h->rmore, rmore_bytes(h));
	h->rmore = NULL;
}

uint64_t rmap_table_bytes(const struct umlmem_host *h)
{
	/* the table, touched over the frames made at most, and the arrays:
	   every further mapper but the one in each entry */
	return (h->rmore ? h->nmade * sizeof(*h->rmore) : 0) +
	       (h->sharing_pages - h->shared_frames) * sizeof(struct rmap);
}

/* Every page mapping frame @f belongs to a guest that shares. */
static bool frame_mergeable(struct umlmem_host *h, uint64_t f)
{
	const struct frame *fr = &h->frames[f];
	const struct rmap *more = rmap_more(h, f);

	if (fr->refs && !mergeable(fr->g))
		return false;
	for (uint32_t i = 0; i + 1 < fr->refs; i++)
		if (!mergeable(more[i].g))
			return false;
	return true;
}

int rmap_add(struct umlmem_host *h, uint64_t f, struct umlmem_guest *g, uint64_t idx)
{
	struct frame *fr = &h->frames[f];
	uint32_t n = fr->refs - 1;   /* further mappers before this one */
	struct rmap *more;

	if (!fr->refs) {
		fr->g = g;
		fr->idx = idx;
		fr->nv = 0;
		fr->refs = 1;
		return 0;
	}
	if (!n) {
		/* the second mapper: in the table entry */
		if (!h->rmore && !(h->rmore = meta_alloc(rmore_bytes(h))))
			return seterr(-ENOMEM, "cannot allocate the table of shared frames "
				      "(%zu bytes)", rmore_bytes(h));
		h->rmore[f].one = (struct rmap){ g, idx, 0 };
	} else {
		/* more[] holds n entries in room for at least the power of two
		   at or above n: it grows only when n + 1 passes one (rmap_del
		   shrinks it only back into the entry), so a frame's k-th
		   sharer costs O(1), not a copy of k */
		struct rmap_ent *ent = &h->rmore[f];

		more = n == 1 ? NULL : ent->more;
		if (!(n & (n - 1))) {
			uint32_t room = 1;

			while (room < n + 1)
				room <<= 1;
			more = realloc(more, room * sizeof(*more));
			if (!more)
				return seterr(-ENOMEM, "cannot grow the reverse map of a shared frame");
			if (n == 1)
				more[0] = ent->one;
			ent->more = more;
		}
		more[n] = (struct rmap){ g, idx, 0 };
	}
	fr->refs++;
	h->shared_frames += fr->refs == 2;
	h->sharing_pages++;
	return 0;
}

void rmap_del(struct umlmem_host *h, uint64_t f, struct umlmem_guest *g, uint64_t idx)
{
	struct frame *fr = &h->frames[f];
	struct rmap *more = rmap_more(h, f);
	uint32_t n = fr->refs - 1;   /* entries in more[] */

	if (fr->refs > 1) {
		h->sharing_pages--;
		if (fr->refs == 2) {
			h->shared_frames--;
			dedup_frame_unshared(h, f);
		}
	}

	/* A native view of the frame goes with the mapper: the view's mapping
	   may stay (it faults on the next access, see native.c), its present
	   entry may not. */
	if (fr->g == g && fr->idx == idx) {
		if (fr->nv & NV_LIVE)
			native_zap(g, idx);
		if (n) {
			fr->g = more[n - 1].g;
			fr->idx = more[n - 1].idx;
			fr->nv = more[n - 1].nv;
		}
	} else {
		for (uint32_t i = 0; i < n; i++)
			if (more[i].g == g && more[i].idx == idx) {
				if (more[i].nv & NV_LIVE)
					native_zap(g, idx);
				more[i] = more[n - 1];
				break;
			}
	}
	/* the array keeps its size until one further mapper is left, which
	   goes back into the entry */
	if (n == 2) {
		struct rmap one = more[0];

		free(more);
		h->rmore[f].one = one;
	}
	fr->refs--;
}

/* ---- checks ---------------------------------------------------------------- */

static int check_range(struct umlmem_guest *g, uint64_t gpa, uint64_t len, const char *fn)
{
	if (len > g->ram_bytes || gpa > g->ram_bytes - len)
		return seterr(-EFAULT, "%s: [0x%llx, +%llu) is outside guest '%s' of %llu bytes",
			      fn, (unsigned long long)gpa, (unsigned long long)len, g->name,
			      (unsigned long long)g->ram_bytes);
	return 0;
}

static int check_page(struct umlmem_guest *g, uint64_t gpa, const char *fn)
{
	if (!g)
		return seterr(-EINVAL, "%s: guest is NULL", fn);
	if (gpa & (PAGE_SIZE - 1))
		return seterr(-EINVAL, "%s: gpa 0x%llx is not page-aligned", fn,
			      (unsigned long long)gpa);
	if (gpa >= g->ram_bytes)
		return seterr(-EFAULT, "%s: gpa 0x%llx is outside guest '%s' of %llu bytes", fn,
			      (unsigned long long)gpa, g->name, (unsigned long long)g->ram_bytes);
	return 0;
}

/* ---- the fault path -------------------------------------------------------- */

/* Page @idx of @g, now in frame @f (which no other page maps), becomes
   resident. */
static void map_new(struct umlmem_guest *g, uint64_t idx, pte_t *e, uint64_t f)
{
	rmap_add(g->host, f, g, idx);
	pte_set(g, e, PTE_MK(PTE_FRAME, f));
	g->resident++;
	g->ev.faults++;
	g->host->ev.faults++;
	pager_refault(g->host, g, idx, f);
}

/* A cached copy of key @k that no page maps, of a key that no entry names
   any more (its page was discarded or written whole), is garbage: free
   both. */
static void cache_drop_orphan(struct umlmem_host *h, uint64_t k)
{
	uint32_t f1 = tcache_get(h, k);
	struct frame *fr;

	if (!f1)
		return;
	fr = &h->frames[f1 - 1];
	if (fr->refs || (fr->flags & F_BUSY) || tier_refs(h, k) != 1)
		return;
	tcache_set(h, k, 0);
	fr->slot = TKEY_NONE;
	h->cached--;
	tier_unref(h, k, 1);
	frame_put(h, f1 - 1);
}

/* Picks the handles to read ahead of a load of key @k (the live ones that
   follow it in its tier and that no frame caches) and gives each a free
   frame, cached and F_BUSY, holding a reference on its key; evicts first
   (the lock may drop: the caller's page is PTE_BUSY and its frame F_BUSY,
   so nothing of the caller's moves) when too few frames are free. Returns
   how many; their frames and keys are in @ra. */
static unsigned readahead_prepare(struct umlmem_guest *g, uint64_t k, struct ra_page *ra)
{
	struct umlmem_host *h = g->host;
	struct tier *t = tier_of(h, k);
	uint64_t hd = tkey_handle(k), last = g->ra_last, live[RA_MAX];
	unsigned win, n, got = 0;

	if (last != TKEY_NONE && tkey_tier(last) == t->id && hd > tkey_handle(last) &&
	    hd - tkey_handle(last) <= RA_GAP)
		g->ra_run++;
	else
		g->ra_run = 0;
	g->ra_last = k;
	if (!g->ra_run || (h->cfg.flags & UMLMEM_NO_READAHEAD))
		return 0;
	win = g->ra_run > 4 ? RA_MAX : RA_MIN << (g->ra_run - 1);
	if (win > RA_MAX)
		win = RA_MAX;
	win = pager_ra_window(h, win);
	if (!win)
		return 0;
	/* victims already written make room for the pages a run will want;
	   no page in use goes for a guess */
	if (h->nfree < win)
		pager_drop_written(h, win - h->nfree);
	if (win > h->nfree)
		win = (unsigned)h->nfree;
	n = win && hd < TIER_HANDLE_MAX ? t->ops->live(t, hd + 1, win, live) : 0;
	for (unsigned i = 0; i < n; i++) {
		uint64_t f, rk = tkey(t->id, live[i]);

		if (tcache_get(h, rk))
			continue;
		if (frame_take(h, &f))
			break;
		h->frames[f].flags = F_BUSY;
		h->busy_frames++;
		tier_ref(h, rk, 1);
		frame_set_slot(h, f, rk);
		h->cached++;
		ra[got].f = f;
		ra[got].key = rk;
		got++;
	}
	return got;
}

/* Completes a readahead page: verified, it stays cached; otherwise it is
   dropped (the fault that wants it will read it and report). */
void readahead_finish(struct umlmem_host *h, struct ra_page *ra, int res)
{
	struct frame *fr = &h->frames[ra->f];

	fr->flags &= ~F_BUSY;
	h->busy_frames--;
	if (!res) {
		h->ra_pages++;
		h->ev.swap_ins++;
		/* unused so far: it waits in the pager's small FIFO */
		frame_ref_set(h, ra->f, false);
		pager_readahead(h, ra->f);
		cache_drop_orphan(h, ra->key);
		return;
	}
	fr->slot = TKEY_NONE;
	tcache_set(h, ra->key, 0);
	tier_unref(h, ra->key, 1);
	h->cached--;
	frame_put(h, ra->f);
}

/* Reads key @k into the free frame @f for page @idx, with host->lock
   dropped, together with the pages read ahead of it; the entry is PTE_BUSY
   meanwhile, so the page's reference on the key stays put and everyone
   else who wants the page waits for this read. */
static int swap_in(struct umlmem_guest *g, uint64_t idx, pte_t *e, uint64_t k, uint64_t f)
{
	struct umlmem_host *h = g->host;
	struct frame *fr = &h->frames[f];
	struct ra_page ra[RA_MAX + 1];
	uint64_t keys[RA_MAX + 1];
	void *bufs[RA_MAX + 1];
	int res[RA_MAX + 1];
	unsigned nra;
	int rc;

	fr->flags = F_BUSY;
	h->busy_frames++;
	pte_set(g, e, PTE_BUSY);
	/* Named in the swap cache from now on, busy: a sharer of the key that
	   faults meanwhile waits for this read instead of making a second
	   copy. */
	tcache_set(h, k, (uint32_t)f + 1);
	ra[0] = (struct ra_page){ f, k };
	nra = readahead_prepare(g, k, ra + 1);
	for (unsigned i = 0; i <= nra; i++) {
		keys[i] = ra[i].key;
		bufs[i] = frame_addr(h, ra[i].f);
	}
	host_unlock(h);
	tier_load(h, keys, bufs, 1 + nra, res);
	host_lock(h);
	rc = res[0];
	for (unsigned i = 1; i <= nra; i++)
		readahead_finish(h, &ra[i], res[i]);
	fr->flags &= ~F_BUSY;
	h->busy_frames--;
	pthread_cond_broadcast(&h->cond);
	rc = pager_count_read(h, g, k, rc);
	if (rc) {
		tcache_set(h, k, 0);
		pte_set(g, e, PTE_MK(PTE_STORED, k));
		frame_put(h, f);
		return rc;
	}
	if (!mergeable(g) && tier_refs(h, k) > 1) {
		/* other pages share this key, and this guest shares nothing:
		   its copy is its own, and the key stays for the others */
		tcache_set(h, k, 0);
		tier_unref(h, k, 1);
	} else {
		/* The entry's reference on the key becomes the frame's: the
		   page is clean until written. */
		frame_set_slot(h, f, k);
	}
	g->swapped--;
	map_new(g, idx, e, f);
	return 0;
}

/* Page @idx, whose entry names key @k, finds the key's content already in
   frame @f (read ahead, or faulted in by another sharer): map it, no I/O. */
static int map_cached(struct umlmem_guest *g, uint64_t idx, pte_t *e, uint64_t k, uint64_t f)
{
	struct umlmem_host *h = g->host;
	struct frame *fr = &h->frames[f];

	int rc;

	if (!fr->refs) {
		/* a page read ahead: it continues the run that read it */
		h->cached--;
		h->ra_hits++;
		g->ra_last = k;
		pager_refault(h, g, idx, f);
	}
	rc = rmap_add(h, f, g, idx);
	if (rc)
		return rc;
	pte_set(g, e, PTE_MK(PTE_FRAME, f));
	g->resident++;
	g->ev.faults++;
	h->ev.faults++;
	/* the frame keeps its own reference; the entry's goes */
	tier_unref(h, k, 1);
	g->swapped--;
	g->ev.swap_ins++;
	return 0;
}

/* Copy on write: page (g, idx) leaves shared frame @f for a private copy
   (no copy when the write covers the whole page). -EAGAIN when getting the
   frame dropped the lock: the caller looks at its page again. */
static int cow_break(struct umlmem_guest *g, uint64_t idx, pte_t *e, uint64_t f, bool whole,
		     uint64_t *out)
{
	struct umlmem_host *h = g->host;
	uint64_t nf;
	int rc;

	rc = frame_get(h, false, &nf);
	if (rc)
		return rc;
	if (!whole)
		memcpy(frame_addr(h, nf), frame_addr(h, f), PAGE_SIZE);
	rmap_del(h, f, g, idx);
	rmap_add(h, nf, g, idx);
	pte_set(g, e, PTE_MK(PTE_FRAME, nf));
	g->ev.cow_breaks++;
	h->ev.cow_breaks++;
	g->ev.faults++;
	h->ev.faults++;
	*out = nf;
	return 0;
}

/* page_fault(), telling in *nofr whether it failed for want of a frame (the
   page itself is fine) rather than because its swap copy could not be read.
   @pin: the caller will hold the frame, so it must not be under write-out.
   Every path first gets the page mapped, then a write makes it private
   (copy on write) and dirty (its clean swap copy goes). */
static int fault(struct umlmem_guest *g, uint64_t idx, bool for_write, bool whole, bool pin,
		 uint64_t *out, bool *nofr)
{
	struct umlmem_host *h = g->host;
	pte_t *e = pte_alloc(g, idx);
	uint64_t f, s, c;
	bool resident, loaded;
	int rc;

	if (!e)
		return seterr(-ENOMEM, "cannot allocate page table for guest '%s'", g->name);
	for (;;) {
		resident = false;
		loaded = false;
		switch (PTE_TYPE(*e)) {
		case PTE_BUSY:
			host_wait(h);
			continue;
		case PTE_FRAME:
			f = PTE_VAL(*e);
			/* the content of a frame being written out must not move */
			if ((for_write || pin) && (h->frames[f].flags & F_BUSY)) {
				host_wait(h);
				continue;
			}
			resident = true;
			break;
		case PTE_ZERO:
			rc = frame_get(h, !whole, &f);
			if (rc == -EAGAIN)
				continue;
			if (rc) {
				*nofr = true;
				return rc;
			}
			g->zero--;
			map_new(g, idx, e, f);
			break;
		default: /* PTE_STORED */
			loaded = true;
			s = PTE_VAL(*e);
			c = tcache_get(h, s);
			if (c--) {
				if (h->frames[c].flags & F_BUSY) {
					host_wait(h);
					continue;
				}
				/* a pinned frame takes no further sharer: a write
				   to its own page would then have to move it */
				if (!h->frames[c].refs ||
				    (mergeable(g) && frame_mergeable(h, c) && !h->frames[c].pins &&
				     h->frames[c].refs < h->dd.max_sharing)) {
					rc = map_cached(g, idx, e, s, c);
					if (rc)
						return rc;
					f = c;
					break;
				}
				/* mapped by others, pinned, full (the merge scanner
				   may have added sharers while this page was out), or
				   this guest or one of them shares nothing: a copy of
				   its own */
				rc = frame_get(h, false, &f);
				if (rc == -EAGAIN)
					continue;
				if (rc) {
					*nofr = true;
					return rc;
				}
				memcpy(frame_addr(h, f), frame_addr(h, c), PAGE_SIZE);
				tier_unref(h, s, 1);
				g->swapped--;
				g->ev.swap_ins++;
				map_new(g, idx, e, f);
				break;
			}
			rc = frame_get(h, false, &f);
			if (rc == -EAGAIN)
				continue;
			if (rc) {
				*nofr = true;
				return rc;
			}
			if (for_write && whole) {
				/* every byte is about to be overwritten: no read */
				tier_unref(h, s, 1);
				g->swapped--;
				map_new(g, idx, e, f);
			} else {
				rc = swap_in(g, idx, e, s, f);
				if (rc)
					return rc;
			}
			break;
		}
		if (loaded && g->rec_on)
			guest_record_load(g, idx);
		/* Page @idx is in frame @f. A write needs it private; so does a
		   pin, read or write: a pinned page never moves, and a later
		   write pin of a shared frame would have to move it. */
		if ((for_write || pin) && h->frames[f].refs > 1) {
			rc = cow_break(g, idx, e, f, whole, &f);
			if (rc == -EAGAIN)
				continue;
			if (rc) {
				*nofr = true;
				return rc;
			}
		}
		/* a use of a page already in memory counts for the pager; the
		   access that brought it in does not (see pager.c) */
		if (resident)
			frame_touch(h, f);
		if (for_write) {
			frame_drop_slot(h, f);
			h->frames[f].wpass = h->dd.pass & 0xff;
			h->dd.changes++;
		}
		*out = f;
		return 0;
	}
}

int page_fault(struct umlmem_guest *g, uint64_t idx, bool for_write, bool whole, uint64_t *out)
{
	bool nofr = false;

	return fault(g, idx, for_write, whole, false, out, &nofr);
}

void page_zap(struct umlmem_guest *g, uint64_t idx, pte_t *e)
{
	struct umlmem_host *h = g->host;
	uint64_t f;

	switch (PTE_TYPE(*e)) {
	case PTE_FRAME:
		f = PTE_VAL(*e);
		rmap_del(h, f, g, idx);
		if (!h->frames[f].refs) {
			frame_drop_slot(h, f);
			frame_put(h, f);
		}
		g->resident--;
		break;
	case PTE_STORED:
		tier_unref(h, PTE_VAL(*e), 1);
		cache_drop_orphan(h, PTE_VAL(*e));
		g->swapped--;
		break;
	default:
		return;
	}
	g->zero++;
	pte_set(g, e, PTE_ZERO);
}

void frame_unmap_all(struct umlmem_host *h, uint64_t f, pte_t to)
{
	struct frame *fr = &h->frames[f];

	while (fr->refs) {
		struct umlmem_guest *g = fr->g;
		uint64_t idx = fr->idx;

		pte_set(g, pte_find(g, idx), to);
		g->resident--;
		if (PTE_TYPE(to) == PTE_STORED)
			g->swapped++;
		else
			g->zero++;
		rmap_del(h, f, g, idx);
	}
	frame_put(h, f);
}

/* ---- copy access ----------------------------------------------------------- */

/* A read of a stored page when no frame can be had: through a page on the
   stack, holding a reference so the handle cannot be reused meanwhile. */
static int read_through(struct umlmem_guest *g, uint64_t k, uint32_t off, void *dst, size_t n)
{
	_Alignas(4096) uint8_t page[PAGE_SIZE];
	struct umlmem_host *h = g->host;
	void *buf = page;
	int rc;

	tier_ref(h, k, 1);
	host_unlock(h);
	tier_load(h, &k, &buf, 1, &rc);
	host_lock(h);
	tier_unref(h, k, 1);
	rc = pager_count_read(h, g, k, rc);
	if (!rc)
		memcpy(dst, page + off, n);
	return rc;
}

/* The part of a read that is in one page, under host->lock. */
static int read_locked(struct umlmem_guest *g, uint64_t idx, uint32_t off, uint8_t *dst, size_t n)
{
	struct umlmem_host *h = g->host;
	bool nofr = false;
	uint64_t f;
	pte_t *e;
	int rc;

	for (;;) {
		e = pte_find(g, idx);
		switch (e ? PTE_TYPE(*e) : PTE_ZERO) {
		case PTE_ZERO:
			memset(dst, 0, n);
			return 0;
		case PTE_BUSY:
			host_wait(h);
			continue;
		case PTE_FRAME:
			f = PTE_VAL(*e);
			frame_touch(h, f);
			break;
		default:
			rc = fault(g, idx, false, false, false, &f, &nofr);
			if (rc && nofr && PTE_TYPE(*e) == PTE_STORED)
				return read_through(g, PTE_VAL(*e), off, dst, n);
			if (rc)
				return rc;
			break;
		}
		memcpy(dst, (uint8_t *)frame_addr(h, f) + off, n);
		return 0;
	}
}

/* The lock-free read of one resident or never-written page; false when the
   page needs the locked path. */
static bool read_fast(struct umlmem_guest *g, uint64_t idx, uint32_t off, uint8_t *dst, size_t n)
{
	struct umlmem_host *h = g->host;
	uint32_t seq = LOAD_ACQ(&g->seq);	/* pairs with seq_end()'s release */
	pte_t *e, pte;
	uint64_t f;

	if (seq & 1)
		return false;
	e = pte_find(g, idx);
	pte = e ? LOAD(e) : PTE_ZERO;
	if (pte == PTE_ZERO) {
		/* never written or discarded: zeros are a correct answer even
		   if a write is racing with this read */
		memset(dst, 0, n);
		return true;
	}
	if (PTE_TYPE(pte) != PTE_FRAME)
		return false;
	f = PTE_VAL(pte);
	memcpy(dst, (uint8_t *)frame_addr(h, f) + off, n);
	/* the copy is done before the count is read again: pairs with
	   seq_begin()'s release fence */
	__atomic_thread_fence(__ATOMIC_ACQUIRE);
	if (LOAD(&g->seq) != seq)
		return false;
	frame_touch(h, f);
	return true;
}

int umlmem_read(umlmem_guest *g, uint64_t gpa, void *buf, size_t len)
{
	struct umlmem_host *h;
	uint8_t *dst = buf;
	int rc;

	clearerr_tls();
	if (!g || (!buf && len))
		return seterr(-EINVAL, "umlmem_read: %s is NULL", g ? "buf" : "guest");
	rc = check_range(g, gpa, len, "umlmem_read");
	if (rc)
		return rc;
	h = g->host;
	while (len) {
		uint64_t idx = gpa >> PAGE_SHIFT;
		uint32_t off = gpa & (PAGE_SIZE - 1);
		size_t n = PAGE_SIZE - off < len ? PAGE_SIZE - off : len;

		if (!read_fast(g, idx, off, dst, n)) {
			/* @buf may lie in a native view, whose faults need the lock */
			_Alignas(64) uint8_t bounce[PAGE_SIZE];
			bool b = native_bounce();

			host_lock(h);
			rc = read_locked(g, idx, off, b ? bounce : dst, n);
			host_unlock(h);
			if (rc)
				return api_done(h, rc);
			if (b)
				memcpy(dst, bounce, n);
		}
		dst += n;
		gpa += n;
		len -= n;
	}
	return api_done(h, 0);
}

int umlmem_write(umlmem_guest *g, uint64_t gpa, const void *buf, size_t len)
{
	struct umlmem_host *h;
	const uint8_t *src = buf;
	int rc;

	clearerr_tls();
	if (!g || (!buf && len))
		return seterr(-EINVAL, "umlmem_write: %s is NULL", g ? "buf" : "guest");
	rc = check_range(g, gpa, len, "umlmem_write");
	if (rc)
		return rc;
	h = g->host;
	while (len) {
		uint64_t idx = gpa >> PAGE_SHIFT, f;
		uint32_t off = gpa & (PAGE_SIZE - 1);
		size_t n = PAGE_SIZE - off < len ? PAGE_SIZE - off : len;
		_Alignas(64) uint8_t bounce[PAGE_SIZE];
		const uint8_t *from = src;

		/* @buf may lie in a native view, whose faults need the lock */
		if (native_bounce()) {
			memcpy(bounce, src, n);
			from = bounce;
		}
		host_lock(h);
		rc = page_fault(g, idx, true, n == PAGE_SIZE, &f);
		if (!rc)
			memcpy((uint8_t *)frame_addr(h, f) + off, from, n);
		host_unlock(h);
		if (rc)
			return api_done(h, rc);
		src += n;
		gpa += n;
		len -= n;
	}
	return api_done(h, 0);
}

/* ---- pins ------------------------------------------------------------------ */

#define MAX_PINS INT32_MAX

int umlmem_pin(umlmem_guest *g, uint64_t gpa, unsigned access, void **page)
{
	struct umlmem_host *h;
	bool nofr = false;
	uint64_t f;
	int rc;

	clearerr_tls();
	rc = check_page(g, gpa, "umlmem_pin");
	if (rc)
		return rc;
	if (!page)
		return seterr(-EINVAL, "umlmem_pin: page is NULL");
	if (!access || (access & ~(UMLMEM_READ | UMLMEM_WRITE)))
		return seterr(-EINVAL, "umlmem_pin: access 0x%x is not UMLMEM_READ, "
			      "UMLMEM_WRITE or both", access);
	h = g->host;
	host_lock(h);
	rc = fault(g, gpa >> PAGE_SHIFT, access & UMLMEM_WRITE, false, true, &f, &nofr);
	if (!rc && h->frames[f].pins >= MAX_PINS)
		rc = seterr(-EOVERFLOW, "umlmem_pin: page 0x%llx already holds %u pins",
			    (unsigned long long)gpa, MAX_PINS);
	if (!rc) {
		h->frames[f].pins++;
		*page = frame_addr(h, f);
	}
	host_unlock(h);
	return api_done(h, rc);
}

int umlmem_unpin(umlmem_guest *g, uint64_t gpa)
{
	struct umlmem_host *h;
	pte_t *e;
	int rc;

	clearerr_tls();
	rc = check_page(g, gpa, "umlmem_unpin");
	if (rc)
		return rc;
	h = g->host;
	host_lock(h);
	e = pte_find(g, gpa >> PAGE_SHIFT);
	if (e && PTE_TYPE(*e) == PTE_FRAME && h->frames[PTE_VAL(*e)].pins)
		h->frames[PTE_VAL(*e)].pins--;
	else
		rc = seterr(-EINVAL, "umlmem_unpin: page 0x%llx of guest '%s' is not pinned",
			    (unsigned long long)gpa, g->name);
	host_unlock(h);
	return api_done(h, rc);
}

/* ---- discard --------------------------------------------------------------- */

/* Calls @fn on each allocated, non-ZERO entry of pages [a, b), skipping
   unallocated parts of the tree whole. Stops at the first nonzero return. */
static int range_walk(struct umlmem_guest *g, uint64_t a, uint64_t b,
		      int (*fn)(struct umlmem_guest *, uint64_t, pte_t *))
{
	const unsigned top_shift = PT_LEAF_BITS + PT_DIR_BITS;

	while (a < b) {
		pte_t **dir = g->top[a >> top_shift];
		pte_t *leaf;
		uint64_t end;
		int rc;

		if (!dir) {
			a = ((a >> top_shift) + 1) << top_shift;
			continue;
		}
		leaf = dir[(a >> PT_LEAF_BITS) & (PT_DIR_N - 1)];
		end = ((a >> PT_LEAF_BITS) + 1) << PT_LEAF_BITS;
		if (end > b)
			end = b;
		for (; leaf && a < end; a++) {
			pte_t *e = &leaf[a & (PT_LEAF_N - 1)];

			if (*e != PTE_ZERO && (rc = fn(g, a, e)))
				return rc;
		}
		a = end;
	}
	return 0;
}

/* 1: under I/O (wait for it); -EBUSY: pinned. */
static int blocked(struct umlmem_guest *g, uint64_t idx, pte_t *e, bool pins_block)
{
	struct frame *fr;

	(void)idx;
	if (PTE_TYPE(*e) == PTE_BUSY)
		return 1;
	if (PTE_TYPE(*e) != PTE_FRAME)
		return 0;
	fr = &g->host->frames[PTE_VAL(*e)];
	if (pins_block && fr->pins)
		return -EBUSY;
	return fr->flags & F_BUSY ? 1 : 0;
}

static int blocked_pins(struct umlmem_guest *g, uint64_t idx, pte_t *e)
{
	return blocked(g, idx, e, true);
}

static int blocked_io(struct umlmem_guest *g, uint64_t idx, pte_t *e)
{
	return blocked(g, idx, e, false);
}

static int zap(struct umlmem_guest *g, uint64_t idx, pte_t *e)
{
	page_zap(g, idx, e);
	return 0;
}

int range_zap(struct umlmem_guest *g, uint64_t a, uint64_t b, bool force)
{
	int rc;

	/* All or nothing: wait until no page of the range is under I/O, then
	   refuse if one is pinned (unless forced), then zap under one hold of
	   the lock, so that no I/O can start in between. */
	while ((rc = range_walk(g, a, b, force ? blocked_io : blocked_pins)) == 1)
		host_wait(g->host);
	if (rc)
		return rc;
	return range_walk(g, a, b, zap);
}

int umlmem_discard(umlmem_guest *g, uint64_t gpa, uint64_t len)
{
	struct umlmem_host *h;
	int rc;

	clearerr_tls();
	if (!g)
		return seterr(-EINVAL, "umlmem_discard: guest is NULL");
	rc = check_range(g, gpa, len, "umlmem_discard");
	if (rc)
		return rc;
	if ((gpa & (PAGE_SIZE - 1)) || ((len & (PAGE_SIZE - 1)) && gpa + len != g->ram_bytes))
		return seterr(-EINVAL, "umlmem_discard: [0x%llx, +%llu) is not whole pages "
			      "(gpa and len must be multiples of %u, or the range must end at "
			      "the guest's end)", (unsigned long long)gpa,
			      (unsigned long long)len, PAGE_SIZE);
	h = g->host;
	host_lock(h);
	rc = range_zap(g, gpa >> PAGE_SHIFT, (gpa + len + PAGE_SIZE - 1) >> PAGE_SHIFT, false);
	if (rc)
		seterr(rc, "umlmem_discard: a page in [0x%llx, +%llu) is pinned; "
		       "nothing was discarded", (unsigned long long)gpa, (unsigned long long)len);
	host_unlock(h);
	tier_maintain(h);
	frames_trim(h);
	return api_done(h, rc);
}

/* ---- merging on and off ---------------------------------------------------- */

static int unmerge_one(struct umlmem_guest *g, uint64_t idx, pte_t *e)
{
	uint64_t f;

	if (PTE_TYPE(*e) != PTE_FRAME || g->host->frames[PTE_VAL(*e)].refs < 2)
		return 0;
	/* a write fault without the write: it copies the shared frame */
	return page_fault(g, idx, true, false, &f);
}

int umlmem_guest_set_merge(umlmem_guest *g, int enable)
{
	struct umlmem_host *h;
	int rc = 0;

	clearerr_tls();
	if (!g)
		return seterr(-EINVAL, "umlmem_guest_set_merge: guest is NULL");
	h = g->host;
	host_lock(h);
	if (enable) {
		if (g->flags & UMLMEM_GUEST_NOMERGE)
			h->dd.changes++;     /* its pages are new to the scanner */
		g->flags &= ~UMLMEM_GUEST_NOMERGE;
	} else {
		g->flags |= UMLMEM_GUEST_NOMERGE;
		dedup_forget_guest(h, g);
		/* Only the allocated parts of the page table: a sparse guest of
		   128 TiB costs its top array and its leaves, not 2^35 entries.
		   A fault may drop the lock: the tree only grows (entry
		   pointers stay good), and no scanner merges this guest's
		   pages from now on. */
		rc = range_walk(g, 0, g->npages, unmerge_one);
	}
	host_unlock(h);
	return api_done(h, rc);
}
