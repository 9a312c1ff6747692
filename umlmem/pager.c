/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * pager.c: keeps the host within its budget by moving pages out to swap.
 *
 * Replacement is CLOCK (second chance): every access sets F_REF on its
 * frame; the hand sweeps the frame table, clears F_REF where it finds it
 * set and takes the frames where it finds it clear. A frame that was used
 * since the hand last passed survives one more sweep, which approximates
 * LRU at the cost of one bit per frame and no list to maintain on the
 * access path (the access path only sets a bit under the lock it already
 * holds).
 *
 * Eviction works in batches of cfg.reclaim_batch frames:
 *  - a clean frame (frame->slot valid: the swap copy equals the frame) is
 *    dropped without I/O, its mappers pointed back at the slot;
 *  - a frame of zeros is dropped to PTE_ZERO without I/O, so a page that
 *    was cleared by its guest costs neither a frame nor a slot;
 *  - the rest are written together into slots that swap_alloc() hands out
 *    contiguously, so the batch is one sequential write (the sync engine
 *    merges adjacent requests into one pwritev). Each slot records the
 *    xxh3-64 checksum of what was written; every read checks it.
 * A failed write leaves its frame resident and mapped (nothing is lost),
 * frees the slot and counts an io_error. Pinned frames are never chosen.
 *
 * Caller holds host->lock for every function here. In this version the
 * swap I/O itself runs under it too.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int pager_init(struct umlmem_host *h)
{
	unsigned n = h->cfg.reclaim_batch;

	h->pv = calloc(n, sizeof(*h->pv));
	h->pslot = calloc(n, sizeof(*h->pslot));
	h->pcsum = calloc(n, sizeof(*h->pcsum));
	h->preq = calloc(n, sizeof(*h->preq));
	if (!h->pv || !h->pslot || !h->pcsum || !h->preq)
		return seterr(-ENOMEM, "cannot allocate the pager's batch of %u", n);
	return 0;
}

void pager_fini(struct umlmem_host *h)
{
	free(h->pv);
	free(h->pslot);
	free(h->pcsum);
	free(h->preq);
}

/* Picks up to @max victims into h->pv, marking them F_BUSY so that a sweep
   that wraps around cannot pick one twice. Two turns of the hand at most:
   the first may only clear reference bits. */
static unsigned pick(struct umlmem_host *h, unsigned max)
{
	uint64_t limit = 2 * h->nframes;
	unsigned n = 0;

	for (uint64_t step = 0; n < max && step < limit; step++) {
		uint64_t f = h->hand;
		struct frame *fr = &h->frames[f];

		h->hand = f + 1 == h->nframes ? 0 : f + 1;
		if (!fr->refs || fr->pins || (fr->flags & F_BUSY))
			continue;
		if (fr->flags & F_REF) {
			fr->flags &= ~F_REF;
			continue;
		}
		fr->flags |= F_BUSY;
		h->pv[n++] = f;
	}
	return n;
}

static bool page_is_zero(const uint8_t *p)
{
	return p[0] == 0 && !memcmp(p, p + 1, PAGE_SIZE - 1);
}

/* Evicts the @n victims in h->pv; returns how many left memory. */
static unsigned evict_batch(struct umlmem_host *h, unsigned n, int *err)
{
	unsigned done = 0, ndirty = 0, got;

	for (unsigned i = 0; i < n; i++) {
		uint64_t f = h->pv[i];
		struct frame *fr = &h->frames[f];

		if (fr->slot != SLOT_NONE) {
			uint64_t s = fr->slot;

			/* the frame's reference on the slot becomes the first
			   mapper's; every further mapper needs its own */
			if (fr->refs > 1)
				swap_ref(h->swap, s, fr->refs - 1);
			fr->slot = SLOT_NONE;
			frame_unmap_all(h, f, PTE_MK(PTE_SLOT, s));
			done++;
		} else if (page_is_zero(frame_addr(h, f))) {
			frame_unmap_all(h, f, PTE_ZERO);
			done++;
		} else {
			h->pv[ndirty++] = f;
		}
	}
	if (!ndirty)
		return done;

	got = swap_alloc(h->swap, ndirty, h->pslot);
	if (got < ndirty) {
		*err = seterr(-ENOSPC, "swap is full (swap_bytes %llu): %u dirty pages could not "
			      "be written out; discard guest memory or raise swap_bytes",
			      (unsigned long long)h->cfg.swap_bytes, ndirty - got);
		for (unsigned i = got; i < ndirty; i++)
			h->frames[h->pv[i]].flags &= ~F_BUSY;
	}
	for (unsigned i = 0; i < got; i++) {
		struct io_req *r = &h->preq[i];
		unsigned file;

		swap_where(h->swap, h->pslot[i], &file, &r->off);
		r->file = (uint16_t)file;
		r->buf = frame_addr(h, h->pv[i]);
		r->len = PAGE_SIZE;
		r->op = IO_WRITE;
		r->res = 0;
		h->pcsum[i] = swap_page_csum(r->buf);
	}
	io_run(h->io, h->preq, got);
	for (unsigned i = 0; i < got; i++) {
		uint64_t f = h->pv[i], s = h->pslot[i];
		struct frame *fr = &h->frames[f];

		if (h->preq[i].res) {
			swap_unref(h->swap, s, 1);
			fr->flags &= ~F_BUSY;
			h->ev.io_errors++;
			/* a filesystem out of space is a full swap to the caller */
			if (h->preq[i].res == -ENOSPC)
				*err = seterr(-ENOSPC, "the filesystem of swap_dir '%s' is full; "
					      "the page stays in memory", h->swap_dir);
			else
				*err = seterr(-EIO, "writing a page to swap in '%s' failed (%s); "
					      "the page stays in memory", h->swap_dir,
					      umlmem_strerror(h->preq[i].res));
			continue;
		}
		swap_set_csum(h->swap, s, h->pcsum[i]);
		if (fr->refs > 1)
			swap_ref(h->swap, s, fr->refs - 1);
		fr->g->ev.swap_outs++;
		h->ev.swap_outs++;
		frame_unmap_all(h, f, PTE_MK(PTE_SLOT, s));
		done++;
	}
	return done;
}

int pager_evict(struct umlmem_host *h, uint64_t want, uint64_t *out)
{
	uint64_t total = 0, scanned = 0;
	int err = 0;

	while (total < want) {
		uint64_t left = want - total;
		unsigned n = pick(h, left < h->cfg.reclaim_batch ? (unsigned)left
						     : h->cfg.reclaim_batch);
		unsigned done;

		if (!n) {
			if (!err)
				err = seterr(-ENOMEM, "no page can be evicted: all %llu frames of the "
					     "budget are pinned or free; unpin pages or raise "
					     "resident_bytes", (unsigned long long)h->nframes);
			break;
		}
		done = evict_batch(h, n, &err);
		total += done;
		scanned += n;
		/* A batch of only dirty pages with swap full (or failing) frees
		   nothing, but a clean page further round the clock may: keep
		   going until every frame has been looked at once. */
		if (!done && scanned >= h->nframes)
			break;
	}
	*out = total;
	return err;
}

int pager_read_slot(struct umlmem_host *h, struct umlmem_guest *g, uint64_t slot, void *buf)
{
	struct io_req r = { .buf = buf, .len = PAGE_SIZE, .op = IO_READ };
	unsigned file;

	swap_where(h->swap, slot, &file, &r.off);
	r.file = (uint16_t)file;
	io_run(h->io, &r, 1);
	if (r.res) {
		h->ev.io_errors++;
		return seterr(-EIO, "reading guest '%s' page from swap failed (%s); its swap copy "
			      "is kept, so a retry may succeed", g->name, umlmem_strerror(r.res));
	}
	if (swap_page_csum(buf) != swap_csum(h->swap, slot)) {
		h->ev.checksum_errors++;
		return seterr(-EIO, "a guest '%s' page read from swap does not match its "
			      "checksum: the swap file was changed or the disk returned bad data",
			      g->name);
	}
	g->ev.swap_ins++;
	h->ev.swap_ins++;
	return 0;
}

int umlmem_reclaim(umlmem_host *h, uint64_t pages, uint64_t *evicted)
{
	uint64_t done = 0;
	int rc;

	clearerr_tls();
	if (evicted)
		*evicted = 0;
	if (!h)
		return seterr(-EINVAL, "umlmem_reclaim: host is NULL");
	pthread_mutex_lock(&h->lock);
	rc = pager_evict(h, pages, &done);
	pthread_mutex_unlock(&h->lock);
	if (rc == -ENOMEM) {
		/* nothing (more) evictable is not a failure of reclaim */
		rc = 0;
		clearerr_tls();
	}
	if (evicted)
		*evicted = done;
	return rc;
}
