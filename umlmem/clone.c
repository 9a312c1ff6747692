/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * clone.c: umlmem_guest_clone(), a new guest equal to its source at one
 * instant, sharing every page with it copy-on-write.
 *
 * The library already knows how to share a page: a frame mapped by several
 * entries (its reverse map names each), copied on the first write to it
 * (access.c, cow_break), and a store key referenced by several entries, read
 * in once into the frame the swap cache names for it and mapped by every
 * sharer that faults it. A clone is only more of that: one pass over the
 * source's page table, in the same lock hold, gives the clone
 *  - for a resident page, a further mapper of the source's frame;
 *  - for a stored page (swap, the compressed pool), a further reference on
 *    its store key; the swap cache then serves whichever of the two faults
 *    it first to the other;
 *  - for a ZERO page, nothing.
 * No byte is copied and no frame is taken (but see the sharing cap below),
 * so a clone costs a walk of the source's allocated leaves and one reverse
 * map entry per resident page: time proportional to the pages the source
 * touched, whatever its nominal size. Both guests are ordinary guests
 * afterwards: either may be written (copy on write), evicted, discarded or
 * destroyed first, merged by the scanner, cloned again.
 *
 * The instant. Everything happens under one hold of host->lock, so no copy
 * call, pin, fault, eviction or merge of the source can come in between; a
 * page of the source being read in (PTE_BUSY) is waited for first. A frame
 * being written out (F_BUSY) cannot take a sharer the write-out does not
 * expect, and a pinned frame takes none (its pinner may write it in place),
 * so the clone gets a copy of such a page, made under the lock: F_BUSY
 * keeps the content still, and a pinned page's content at any moment of
 * the call is as good an instant as any. The price of one instant is one
 * hold of the lock for the whole walk: faults of every guest of the host
 * wait for the clone of a large guest (README, "Clones", has the time of
 * one of 1 GiB). A clone is a foreground call, like a large write, and
 * does not step aside for them (host_yield): that would split the instant.
 *
 * The sharing cap. A frame serves at most max_sharing pages (host_check).
 * A frame that has reached it cannot take the clone's page; then the
 * source's page moves to a copy of the frame, which the clone shares: the
 * old frame keeps its other sharers, and the next clones share the copy.
 * So one copy per page is made every max_sharing - 1 clones of one guest,
 * and the 300th clone is as fast as the second but for those. (With a cap
 * of 1 nothing can be shared, and the clone gets copies.) Copies need
 * free frames: when there are none, the clone is undone (its entries
 * zapped, which drops every reference it took) and the pass starts again
 * after the pager has freed enough; the lock is dropped only then, and
 * whatever the source did meanwhile is simply part of the new instant.
 *
 * Native views. A source page writable in its native view (NV_RW) is
 * stored to with no fault, so it cannot be shared as it is: the pass clears
 * NV_LIVE and NV_RW on it, and takes the whole view's page table entries
 * out with one call before the lock is dropped; the next store through the
 * view faults and breaks the sharing, as for any shared frame. A clone is
 * not mapped; umlmem_guest_map() maps it like any guest.
 *
 * Memory. A clone of N private resident pages makes N frames shared: N
 * entries of the side table indexed by frame (access.c, 16 bytes each)
 * and the clone's leaves (8 bytes a page). The first clone of a process
 * touches that memory for the first time, and on a virtual machine whose
 * host backs memory only when it is first touched that costs more than
 * the walk itself; so it is kept to those 24 bytes a page, allocated in
 * huge pages, the leaves in one block before the walk (pt_alloc_like,
 * meta_alloc). README, "Clones", has the times of a first and a later
 * clone.
 *
 * Merging. The clone shares with its source whatever its merge domain and
 * flags: sharing by construction is not merging by content. Its domain and
 * UMLMEM_GUEST_NOMERGE govern what the scanner does with its pages later
 * (and a NOMERGE guest's own later faults of stored pages, as for any
 * guest).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define TOP_SHIFT (PT_LEAF_BITS + PT_DIR_BITS)

/* Why a pass stopped short. */
enum { CLONE_WAIT = 1, CLONE_FRAMES = 2 };

struct clone_pass {
	struct umlmem_guest *src, *dst;
	bool zap_view;          /* NV_RW cleared on some page of src */
};

/* A copy of frame @f in a new frame, into *out; false when no frame is free
   (the pass must stop and free some). Caller holds host->lock. */
static bool copy_frame(struct umlmem_host *h, uint64_t f, uint64_t *out)
{
	uint64_t nf;

	if (frame_take(h, &nf))
		return false;
	h->frames[nf].flags = 0;
	memcpy(frame_addr(h, nf), frame_addr(h, f), PAGE_SIZE);
	*out = nf;
	return true;
}

/* Page @idx of the clone, which must be ZERO, gets frame @f, private or one
   more sharer. -ENOMEM only. */
static int share_frame(struct clone_pass *p, uint64_t idx, pte_t *de, uint64_t f)
{
	int rc = rmap_add(p->dst->host, f, p->dst, idx);

	if (rc)
		return rc;
	STORE(de, PTE_MK(PTE_FRAME, f));
	p->dst->resident++;
	p->dst->zero--;
	return 0;
}

/* Gives page @idx of the clone what entry @e of the source holds. 0, or
   CLONE_WAIT (a page under read-in), CLONE_FRAMES (no free frame for a
   copy) or -ENOMEM; whatever it did to the clone stays for the undo. */
static int clone_page(struct clone_pass *p, uint64_t idx, pte_t *e, pte_t *de)
{
	struct umlmem_guest *src = p->src;
	struct umlmem_host *h = src->host;
	struct frame *fr;
	uint64_t f, nf;
	int rc;

	switch (PTE_TYPE(*e)) {
	case PTE_ZERO:
		return 0;
	case PTE_BUSY:
		return CLONE_WAIT;
	case PTE_STORED:
		tier_ref(h, PTE_VAL(*e), 1);
		STORE(de, *e);
		p->dst->swapped++;
		p->dst->zero--;
		return 0;
	}
	f = PTE_VAL(*e);
	fr = &h->frames[f];
	if (fr->pins || (fr->flags & F_BUSY) || h->dd.max_sharing < 2) {
		/* no further sharer: the clone's own copy */
		if (!copy_frame(h, f, &nf))
			return CLONE_FRAMES;
		return share_frame(p, idx, de, nf);
	}
	if (fr->refs >= h->dd.max_sharing) {
		/* full: the source moves to a copy, which the clone shares */
		if (!copy_frame(h, f, &nf))
			return CLONE_FRAMES;
		rmap_del(h, f, src, idx);
		rmap_add(h, nf, src, idx);     /* the first mapper: cannot fail */
		pte_set(src, e, PTE_MK(PTE_FRAME, nf));
		f = nf;
	} else if ((fr->flags & F_NV) && (fr->nv & NV_RW)) {
		/* writable in the source's view (so private: the first mapper
		   is the source's page): the view's entries go at the end of
		   the pass */
		fr->nv &= ~(NV_LIVE | NV_RW);
		p->zap_view = true;
	}
	rc = share_frame(p, idx, de, f);
	return rc;
}

/* One pass over the source's allocated leaves. Caller holds host->lock. */
static int clone_walk(struct clone_pass *p)
{
	struct umlmem_guest *src = p->src;
	int rc;

	for (uint64_t i = 0; i < src->ntop; i++) {
		pte_t **dir = src->top[i];

		if (!dir)
			continue;
		for (uint64_t j = 0; j < PT_DIR_N; j++) {
			pte_t *leaf = dir[j], *dleaf = NULL;
			uint64_t base = i << TOP_SHIFT | j << PT_LEAF_BITS;

			if (!leaf)
				continue;
			for (uint64_t k = 0; k < PT_LEAF_N; k++) {
				if (leaf[k] == PTE_ZERO)
					continue;
				if (!dleaf) {
					pte_t *de = pte_alloc(p->dst, base);

					if (!de)
						return seterr(-ENOMEM, "cannot allocate the "
							      "page table of the clone");
					dleaf = de;
				}
				rc = clone_page(p, base | k, &leaf[k], &dleaf[k]);
				if (rc)
					return rc;
			}
		}
	}
	return 0;
}

/* Frames a pass may need for copies: the pages on a pinned, busy or full
   frame (an upper bound when the source maps one frame at several pages,
   some of which fill it). Caller holds host->lock. */
static int count_copy(struct umlmem_guest *g, uint64_t idx, pte_t *e, void *arg)
{
	const struct frame *fr;

	(void)idx;
	if (PTE_TYPE(*e) != PTE_FRAME)
		return 0;
	fr = &g->host->frames[PTE_VAL(*e)];
	if (fr->pins || (fr->flags & F_BUSY) || fr->refs >= g->host->dd.max_sharing ||
	    g->host->dd.max_sharing < 2)
		++*(uint64_t *)arg;
	return 0;
}

/* Fills @dst, a new guest on no list, with @src's pages; on success links
   it. Caller holds host->lock, which is dropped only between passes. */
static int clone_locked(struct umlmem_guest *src, struct umlmem_guest *dst)
{
	struct umlmem_host *h = src->host;
	struct clone_pass p = { .src = src, .dst = dst };
	uint64_t need, done, stuck = 0;
	char why[256];
	int rc;

	/* the clone's leaves, in one block (see "Memory" above) */
	if (pt_alloc_like(dst, src))
		return seterr(-ENOMEM, "cannot allocate the page table of the clone");
	for (;;) {
		p.zap_view = false;
		rc = clone_walk(&p);
		if (p.zap_view)
			native_zap_view(src);
		if (!rc)
			break;
		/* undo: every reference the clone took goes with its entries */
		range_zap(dst, 0, dst->npages, true);
		if (rc < 0)
			return rc;
		if (rc == CLONE_WAIT) {
			host_wait(h);
			continue;
		}
		need = 0;
		pt_walk(src, count_copy, &need);
		if (h->nfree >= need)
			need = h->nfree + 1;   /* the bound was low: one more */
		rc = pager_evict(h, need - h->nfree + h->cfg.reclaim_batch, &done, NULL);
		if (done) {
			stuck = 0;
			continue;
		}
		if (h->busy_frames || h->ntrim) {
			host_wait(h);
			continue;
		}
		if (++stuck < 3)
			continue;
		snprintf(why, sizeof(why), "%s", rc ? umlmem_errmsg() : "");
		return seterr(rc ? rc : -ENOMEM, "umlmem_guest_clone: no free frame for the "
			      "copies of %llu pages of guest '%s' (pinned, under I/O, or shared by "
			      "max_sharing %u pages), and none could be freed%s%s",
			      (unsigned long long)need, src->name, h->dd.max_sharing,
			      rc ? ": " : "", why);
	}
	guest_link(dst);
	return 0;
}

int umlmem_guest_clone_sized(umlmem_guest *src, const struct umlmem_guest_config *ucfg,
			     size_t size, umlmem_guest **out)
{
	struct umlmem_guest_config c = { 0 };
	struct umlmem_guest *dst;
	struct umlmem_host *h;
	char name[sizeof(src->name)];
	int rc;

	clearerr_tls();
	if (!src || !out)
		return seterr(-EINVAL, "umlmem_guest_clone: %s is NULL", !src ? "src" : "dst");
	*out = NULL;
	h = src->host;
	if (ucfg) {
		rc = abi_copy_in(&c, sizeof(c), ucfg, size, ABI_GUEST_CONFIG_SIZE_0_1,
				 "umlmem_guest_config");
		if (rc)
			return rc;
		if (c.ram_bytes && c.ram_bytes != src->ram_bytes)
			return seterr(-EINVAL, "umlmem_guest_clone: ram_bytes %llu differs from "
				      "the %llu bytes of guest '%s': pass 0 or its size",
				      (unsigned long long)c.ram_bytes,
				      (unsigned long long)src->ram_bytes, src->name);
	} else {
		/* set_merge changes flags under the lock */
		host_lock(h);
		c.merge_domain = src->merge_domain;
		c.flags = src->flags;
		host_unlock(h);
	}
	c.ram_bytes = src->ram_bytes;
	if (!c.name) {
		snprintf(name, sizeof(name), "%s", src->name);
		c.name = name;
	}
	rc = guest_alloc(h, &c, &dst);
	if (rc)
		return rc;
	host_lock(h);
	rc = clone_locked(src, dst);
	host_unlock(h);
	if (rc) {
		guest_free(dst);
		return api_done(h, rc);
	}
	*out = dst;
	return api_done(h, 0);
}
