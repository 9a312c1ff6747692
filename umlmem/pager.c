/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * pager.c: keeps the host within its budget by moving pages out to swap.
 *
 * Replacement is a CLOCK over two sets, active and inactive, in the way of
 * Linux's two LRU lists. Every access sets the frame's referenced byte
 * (host->fref, set without a lock by the lock-free read path). A page
 * comes in inactive, its referenced byte clear: the access that faulted it
 * does not count. The hand sweeps the frame table: an inactive frame found
 * referenced (used again since it came in) is promoted to active; one found
 * unreferenced is taken. An active frame found unreferenced is demoted to
 * inactive while the active set is over half the budget; found referenced,
 * its byte is cleared and it stays. So a page must be used twice to be
 * protected, and a sequential sweep through more memory than the budget
 * (touching each page once) only ever replaces inactive pages: the working
 * set in the active half survives it, where plain CLOCK would flush it.
 * The cost is still one byte per frame and no list on the access path.
 *
 * Eviction works in batches of cfg.reclaim_batch frames:
 *  - a clean frame (frame->slot valid: the swap copy equals the frame) is
 *    dropped without I/O, its mappers pointed back at the slot;
 *  - a frame of zeros is dropped to PTE_ZERO without I/O, so a page that
 *    was cleared by its guest costs neither a frame nor a slot;
 *  - the rest are written together into slots that swap_alloc() hands out
 *    contiguously, so the batch is one sequential write. Each slot records
 *    the xxh3-64 checksum of what was written; every read checks it.
 * While a batch is written, host->lock is dropped. Its frames are F_BUSY:
 * the hand skips them, readers may still copy from them, and writers,
 * pinners and discard wait on host->cond until the write completes. So no
 * fault on another page ever waits behind a write-out, and every other
 * guest keeps running.
 * A failed write leaves its frame resident and mapped (nothing is lost),
 * frees the slot and counts an io_error. Pinned frames are never chosen.
 *
 * With UMLMEM_BACKGROUND a reclaim thread keeps the free frames between
 * the low and the high watermark, so that faults find a free frame and
 * rarely reclaim (and wait for a write) themselves. The faulting thread
 * wakes it only when the free count crosses the low mark: a wake-up costs
 * tens of microseconds, once per (high - low) frames.
 *
 * Caller holds host->lock for every function here but pager_read_slot().
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

struct victim {
	uint64_t f, slot, csum;
};

/* Picks up to @max victims, marking them F_BUSY so that neither this sweep
   (wrapping round) nor another evictor picks one twice. After one whole
   turn that found too few inactive victims, the active set gives back what
   it must, whatever its share (a reclaim may ask for everything). Four
   turns at most: promote or clear, demote, clear, take. */
static unsigned pick(struct umlmem_host *h, struct victim *v, unsigned max)
{
	uint64_t limit = 4 * h->nmade;   /* frames above were never used */
	unsigned n = 0;

	for (uint64_t step = 0; n < max && step < limit; step++) {
		uint64_t f = h->hand < h->nmade ? h->hand : 0;
		struct frame *fr = &h->frames[f];
		bool ref;

		if (frame_gone(h, f))
			f |= FRAME_CHUNK - 1;   /* a chunk of free frames: skip it */
		h->hand = f + 1 >= h->nmade ? 0 : f + 1;
		if (frame_gone(h, f))
			continue;
		/* free frames have neither mappers nor a slot; a frame with
		   only a slot is a cached copy read ahead, and fair game */
		if ((!fr->refs && fr->slot == SLOT_NONE) || fr->pins || (fr->flags & F_BUSY))
			continue;
		ref = LOAD(&h->fref[f]);
		if (ref)
			STORE(&h->fref[f], 0);
		/* present in a native view: accesses to it are unseen, so
		   count it used and zap it; the next one faults and sets
		   fref (native.c) */
		if (fr->flags & F_NV) {
			native_quiesce(h, f);
			ref = true;
		}
		if (fr->flags & F_ACTIVE) {
			/* the active set keeps what was used again; it gives
			   back what was not, once it is over its share */
			if (!ref && (h->nactive > h->nframes / 4 * 3 || (step >= h->nmade && !n))) {
				fr->flags &= ~F_ACTIVE;
				h->nactive--;
			}
			continue;
		}
		if (ref) {
			/* used again since it came in: it is not a scan */
			fr->flags |= F_ACTIVE;
			h->nactive++;
			continue;
		}
		fr->flags |= F_BUSY;
		h->busy_frames++;
		v[n++].f = f;
	}
	return n;
}

static void unbusy(struct umlmem_host *h, uint64_t f)
{
	h->frames[f].flags &= ~F_BUSY;
	h->busy_frames--;
}

bool page_is_zero(const uint8_t *p)
{
	return p[0] == 0 && !memcmp(p, p + 1, PAGE_SIZE - 1);
}

static int by_address(const void *a, const void *b, void *arg)
{
	const struct frame *x = &((struct umlmem_host *)arg)->frames[((const struct victim *)a)->f];
	const struct frame *y = &((struct umlmem_host *)arg)->frames[((const struct victim *)b)->f];

	if (x->g != y->g)
		return (uintptr_t)x->g < (uintptr_t)y->g ? -1 : 1;
	return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* Evicts the @n victims in @v; returns how many left memory. Drops
   host->lock while writing. */
static unsigned evict_batch(struct umlmem_host *h, struct victim *v, unsigned n,
			    struct io_req *req, uint64_t *slots, uint64_t *pages, int *err)
{
	unsigned done = 0, ndirty = 0, got;

	for (unsigned i = 0; i < n; i++) {
		uint64_t f = v[i].f;
		struct frame *fr = &h->frames[f];

		if (fr->slot != SLOT_NONE) {
			uint64_t s = fr->slot;

			/* the frame's reference on the slot becomes the first
			   mapper's; every further mapper needs its own; a copy
			   no page maps just gives its reference back */
			swap_cache_set(h->swap, s, 0);
			if (!fr->refs) {
				swap_unref(h->swap, s, 1);
				h->cached--;
			} else if (fr->refs > 1) {
				swap_ref(h->swap, s, fr->refs - 1);
			}
			fr->slot = SLOT_NONE;
			h->busy_frames--;
			*pages += fr->refs;
			frame_unmap_all(h, f, PTE_MK(PTE_SLOT, s));
			done++;
		} else if (page_is_zero(frame_addr(h, f))) {
			h->busy_frames--;
			*pages += fr->refs;
			frame_unmap_all(h, f, PTE_ZERO);
			done++;
		} else {
			v[ndirty++].f = f;
		}
	}
	if (!ndirty)
		return done;

	/* Slots follow guest addresses: a guest that later reads its memory
	   in order finds it in ascending slots, which readahead recognises. */
	qsort_r(v, ndirty, sizeof(*v), by_address, h);
	got = swap_alloc(h->swap, ndirty, slots);
	if (got < ndirty) {
		*err = seterr(-ENOSPC, "swap is full (swap_bytes %llu): %u dirty pages could not "
			      "be written out; discard guest memory or raise swap_bytes",
			      (unsigned long long)h->cfg.swap_bytes, ndirty - got);
		for (unsigned i = got; i < ndirty; i++)
			unbusy(h, v[i].f);
	}
	for (unsigned i = 0; i < got; i++) {
		unsigned file;

		v[i].slot = slots[i];
		swap_where(h->swap, slots[i], &file, &req[i].off);
		req[i].file = (uint16_t)file;
		req[i].buf = frame_addr(h, v[i].f);
		req[i].len = PAGE_SIZE;
		req[i].op = IO_WRITE;
		req[i].res = 0;
	}

	pthread_mutex_unlock(&h->lock);
	/* F_BUSY keeps the content still: checksum and write need no lock */
	for (unsigned i = 0; i < got; i++)
		v[i].csum = swap_page_csum(req[i].buf);
	io_run(h->io, req, got);
	swap_punch_pending(h->swap);
	pthread_mutex_lock(&h->lock);

	for (unsigned i = 0; i < got; i++) {
		uint64_t f = v[i].f, s = v[i].slot;
		struct frame *fr = &h->frames[f];

		if (req[i].res) {
			swap_unref(h->swap, s, 1);
			unbusy(h, f);
			h->ev.io_errors++;
			/* a filesystem out of space is a full swap to the caller */
			if (req[i].res == -ENOSPC)
				swap_note_fs_full(h->swap);
			if (req[i].res == -ENOSPC)
				*err = seterr(-ENOSPC, "the filesystem of swap_dir '%s' is full; "
					      "the page stays in memory", h->swap_dir);
			else
				*err = seterr(-EIO, "writing a page to swap in '%s' failed (%s); "
					      "the page stays in memory", h->swap_dir,
					      umlmem_strerror(req[i].res));
			continue;
		}
		swap_set_csum(h->swap, s, v[i].csum);
		if (fr->refs > 1)
			swap_ref(h->swap, s, fr->refs - 1);
		fr->g->ev.swap_outs++;
		h->ev.swap_outs++;
		h->busy_frames--;
		*pages += fr->refs;
		frame_unmap_all(h, f, PTE_MK(PTE_SLOT, s));
		done++;
	}
	pthread_cond_broadcast(&h->cond);
	return done;
}

int pager_evict(struct umlmem_host *h, uint64_t want, uint64_t *out, uint64_t *pages)
{
	uint64_t npages = 0;
	unsigned batch = h->cfg.reclaim_batch;
	uint64_t total = 0, scanned = 0;
	struct victim *v;
	struct io_req *req;
	uint64_t *slots;
	int err = 0;

	*out = 0;
	v = malloc(batch * sizeof(*v));
	req = malloc(batch * sizeof(*req));
	slots = malloc(batch * sizeof(*slots));
	if (!v || !req || !slots) {
		err = seterr(-ENOMEM, "cannot allocate a reclaim batch of %u", batch);
		goto out;
	}
	while (total < want) {
		uint64_t left = want - total;
		unsigned n = pick(h, v, left < batch ? (unsigned)left : batch);
		unsigned done;

		if (!n) {
			if (!err)
				err = seterr(-ENOMEM, "no page can be evicted: all %llu frames of the "
					     "budget are pinned, free or under I/O; unpin pages or "
					     "raise resident_bytes", (unsigned long long)h->nframes);
			break;
		}
		done = evict_batch(h, v, n, req, slots, &npages, &err);
		total += done;
		scanned += n;
		/* A batch of only dirty pages with swap full (or failing) frees
		   nothing, but a clean page further round the clock may: keep
		   going until every frame has been looked at once. */
		if (!done && scanned >= h->nframes)
			break;
	}
out:
	free(v);
	free(req);
	free(slots);
	*out = total;
	if (pages)
		*pages = npages;
	return err;
}

static int read_batch(struct umlmem_host *h, const uint64_t *slot, void *const *buf, unsigned n,
		      int *res, bool *csum_bad)
{
	struct io_req req[1 + RA_MAX];
	unsigned file;

	for (unsigned i = 0; i < n; i++) {
		req[i] = (struct io_req){ .buf = buf[i], .len = PAGE_SIZE, .op = IO_READ };
		swap_where(h->swap, slot[i], &file, &req[i].off);
		req[i].file = (uint16_t)file;
	}
	io_run(h->io, req, n);
	*csum_bad = false;
	for (unsigned i = 0; i < n; i++) {
		res[i] = req[i].res;
		if (!res[i] && swap_page_csum(buf[i]) != swap_csum(h->swap, slot[i])) {
			res[i] = -EIO;
			if (!i)
				*csum_bad = true;
		}
	}
	return res[0];
}

int pager_read_slot(struct umlmem_host *h, uint64_t slot, void *buf, bool *csum_bad)
{
	int res;

	return read_batch(h, &slot, &buf, 1, &res, csum_bad);
}

void pager_read_slots(struct umlmem_host *h, const struct ra_page *p, unsigned n, int *res,
		      bool *csum_bad)
{
	uint64_t slot[1 + RA_MAX];
	void *buf[1 + RA_MAX];

	for (unsigned i = 0; i < n; i++) {
		slot[i] = p[i].slot;
		buf[i] = frame_addr(h, p[i].f);
	}
	read_batch(h, slot, buf, n, res, csum_bad);
}

int pager_count_read(struct umlmem_host *h, struct umlmem_guest *g, int rc, bool csum_bad)
{
	if (!rc) {
		g->ev.swap_ins++;
		h->ev.swap_ins++;
		return 0;
	}
	if (csum_bad) {
		h->ev.checksum_errors++;
		return seterr(-EIO, "a guest '%s' page read from swap does not match its "
			      "checksum: the swap file was changed or the disk returned bad data",
			      g->name);
	}
	h->ev.io_errors++;
	return seterr(-EIO, "reading guest '%s' page from swap failed (%s); its swap copy "
		      "is kept, so a retry may succeed", g->name, umlmem_strerror(rc));
}

/* ---- background reclaim ---------------------------------------------------- */

static void *kthread_main(void *arg)
{
	struct umlmem_host *h = arg;

	pthread_mutex_lock(&h->lock);
	while (!h->kthread_stop) {
		uint64_t done = 0;

		if (h->nfree < h->high) {
			pager_evict(h, h->high - h->nfree, &done, NULL);
			if (done)
				continue;
		}
		frames_trim_locked(h);
		/* Idle: above the high mark, or nothing could be evicted (all
		   pinned, swap full). In the latter case retry now and then
		   rather than at every kick, which would spin. */
		h->kthread_idle = true;
		if (h->nfree >= h->high) {
			pthread_cond_wait(&h->kcond, &h->lock);
		} else {
			struct timespec ts;

			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += 10 * 1000 * 1000;
			if (ts.tv_nsec >= 1000000000) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000;
			}
			pthread_cond_timedwait(&h->kcond, &h->lock, &ts);
		}
		h->kthread_idle = false;
	}
	pthread_mutex_unlock(&h->lock);
	return NULL;
}

void pager_kick(struct umlmem_host *h)
{
	if (h->kthread_on && h->kthread_idle && h->nfree < h->low) {
		h->kthread_idle = false;
		h->kwakeups++;
		pthread_cond_signal(&h->kcond);
	}
}

int pager_start(struct umlmem_host *h)
{
	uint64_t n = h->nframes, b = h->cfg.reclaim_batch;

	/* Defaults: wake at 1/64 of the budget free (at least a batch, at most
	   1/8), refill to twice that (at most 1/4), so one wake-up writes
	   several batches back to back. */
	h->low = h->cfg.reclaim_low;
	if (!h->low) {
		h->low = n / 64 > b ? n / 64 : b;
		if (h->low > n / 8)
			h->low = n / 8;
	}
	h->high = h->cfg.reclaim_high;
	if (!h->high) {
		h->high = 2 * h->low;
		if (h->high > n / 4)
			h->high = n / 4;
	}
	if (h->high < h->low)
		h->high = h->low;
	if (!(h->cfg.flags & UMLMEM_BACKGROUND))
		return 0;
	pthread_cond_init(&h->kcond, NULL);
	if (pthread_create(&h->kthread, NULL, kthread_main, h)) {
		pthread_cond_destroy(&h->kcond);
		return seterr(-ENOMEM, "cannot start the reclaim thread");
	}
	h->kthread_on = true;
	return 0;
}

void pager_stop(struct umlmem_host *h)
{
	if (!h->kthread_on)
		return;
	pthread_mutex_lock(&h->lock);
	h->kthread_stop = true;
	pthread_cond_signal(&h->kcond);
	pthread_mutex_unlock(&h->lock);
	pthread_join(h->kthread, NULL);
	pthread_cond_destroy(&h->kcond);
	h->kthread_on = false;
}

int umlmem_reclaim(umlmem_host *h, uint64_t pages, uint64_t *evicted)
{
	uint64_t done = 0, npages = 0;
	int rc;

	clearerr_tls();
	if (evicted)
		*evicted = 0;
	if (!h)
		return seterr(-EINVAL, "umlmem_reclaim: host is NULL");
	pthread_mutex_lock(&h->lock);
	rc = pager_evict(h, pages, &done, &npages);
	pthread_mutex_unlock(&h->lock);
	frames_trim(h);
	if (rc == -ENOMEM) {
		/* nothing (more) evictable is not a failure of reclaim */
		rc = 0;
		clearerr_tls();
	}
	if (evicted)
		*evicted = npages;
	return rc;
}
