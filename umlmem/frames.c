/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * frames.c: the frame store and the frame table.
 *
 * The store is one memfd of the budget's size, mapped once. One file rather
 * than anonymous memory because (a) the same frame can later be mapped into
 * several guests' native views, the way User-Mode Linux maps its RAM file,
 * and (b) an I/O engine can register the whole store as fixed buffers and
 * move frames to and from swap with no bounce copy.
 *
 * Frames are recycled through a free stack and never returned to the
 * kernel while the host lives: the budget is a promise about the most the
 * host holds, and giving pages back would only make the next fault slower.
 * A recycled frame still holds its previous page's bytes, so a frame handed
 * to a page that must read as zeros is cleared first (F_FRESH marks frames
 * the kernel has never handed out, which read as zeros already: the first
 * pass over a new host costs no memset).
 *
 * Caller holds host->lock for everything here but frames_init/fini.
 * frame_get() may drop it to reclaim; see its prototype.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

int frames_init(struct umlmem_host *h)
{
	size_t bytes = h->nframes * PAGE_SIZE;

	h->store_fd = memfd_create("umlmem-frames", MFD_CLOEXEC);
	if (h->store_fd < 0)
		return seterr(-errno, "memfd_create for the frame store failed: %s",
			      strerror(errno));
	if (ftruncate(h->store_fd, (off_t)bytes) < 0)
		return seterr(-errno, "cannot size the frame store to %zu bytes: %s",
			      bytes, strerror(errno));
	h->store = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, h->store_fd, 0);
	if (h->store == MAP_FAILED) {
		h->store = NULL;
		return seterr(-ENOMEM, "cannot map the frame store (%zu bytes): %s",
			      bytes, strerror(errno));
	}
	h->frames = calloc(h->nframes, sizeof(*h->frames));
	h->fref = calloc(h->nframes, 1);
	h->free = malloc(h->nframes * sizeof(*h->free));
	if (!h->frames || !h->fref || !h->free)
		return seterr(-ENOMEM, "cannot allocate the frame table for %llu frames",
			      (unsigned long long)h->nframes);
	/* Pushed high to low so that frames are used from the start of the
	   store: a host that never fills its budget touches a compact prefix. */
	for (uint64_t i = 0; i < h->nframes; i++) {
		h->free[i] = (uint32_t)(h->nframes - 1 - i);
		h->frames[i].slot = TKEY_NONE;
		h->frames[i].flags = F_FRESH;
	}
	h->nfree = h->nframes;
	return 0;
}

void frames_fini(struct umlmem_host *h)
{
	if (h->store)
		munmap(h->store, h->nframes * PAGE_SIZE);
	if (h->store_fd >= 0)
		close(h->store_fd);
	free(h->frames);
	free(h->fref);
	free(h->free);
}

int frame_get(struct umlmem_host *h, bool zero, uint64_t *out)
{
	struct frame *fr;
	uint64_t f, done;
	int rc;

	if (!h->nfree) {
		rc = pager_evict(h, h->cfg.reclaim_batch, &done, NULL);
		/* the lock was dropped if anything was written: look again */
		if (h->nfree || done)
			return -EAGAIN;
		/* Frames under I/O are neither free nor evictable yet; they
		   will be soon, so that is not a failure. */
		if (h->busy_frames) {
			host_wait(h);
			return -EAGAIN;
		}
		return rc ? rc : -ENOMEM;
	}
	frame_take(h, &f);
	fr = &h->frames[f];
	if (zero && (fr->flags & F_FRESH) == 0)
		memset(frame_addr(h, f), 0, PAGE_SIZE);
	fr->flags = 0;
	*out = f;
	return 0;
}

int frame_take(struct umlmem_host *h, uint64_t *out)
{
	uint64_t f;

	if (!h->nfree)
		return -ENOMEM;
	f = h->free[--h->nfree];
	h->frames[f].wpass = 0;
	/* F_FRESH is left for frame_get to see; every user clears flags.
	   The faulting access does not count as a use (see pager.c). */
	STORE(&h->fref[f], 0);
	pager_kick(h);
	*out = f;
	return 0;
}

void frame_set_slot(struct umlmem_host *h, uint64_t f, uint64_t k)
{
	h->frames[f].slot = k;
	tcache_set(h, k, (uint32_t)f + 1);
}

void host_wait(struct umlmem_host *h)
{
	pthread_cond_wait(&h->cond, &h->lock);
}

bool host_yield(struct umlmem_host *h)
{
	uint32_t waiting = __atomic_load_n(&h->lock_waiters, __ATOMIC_RELAXED);
	uint64_t want = h->lock_entries + waiting;

	if (!waiting)
		return false;
	/* Every thread counted now gets in before this one goes on: each
	   entry is broadcast by host_lock() under the lock, so no wake-up is
	   lost; a waiter that is not counted yet is served at the next step. */
	h->yielders++;
	while (__atomic_load_n(&h->lock_waiters, __ATOMIC_RELAXED) &&
	       (int64_t)(h->lock_entries - want) < 0)
		pthread_cond_wait(&h->yield_cond, &h->lock);
	h->yielders--;
	h->yields++;
	return true;
}

void frame_put(struct umlmem_host *h, uint64_t f)
{
	struct frame *fr = &h->frames[f];

	if (fr->flags & F_ACTIVE)
		h->nactive--;
	free(fr->more);
	fr->more = NULL;
	fr->g = NULL;
	fr->refs = 0;
	fr->pins = 0;
	fr->flags = 0;
	fr->slot = TKEY_NONE;
	h->free[h->nfree++] = (uint32_t)f;
}

void frame_drop_slot(struct umlmem_host *h, uint64_t f)
{
	struct frame *fr = &h->frames[f];

	if (fr->slot != TKEY_NONE) {
		tcache_set(h, fr->slot, 0);
		tier_unref(h, fr->slot, 1);
		fr->slot = TKEY_NONE;
	}
}
