/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * guest.c: guests and their page tables.
 *
 * A guest's page table is a three-level radix tree of 64-bit entries
 * (internal.h: PTE_*), allocated lazily: the top array has one pointer per
 * GiB of nominal RAM, a directory one pointer per 2 MiB, a leaf one entry
 * per page. Only writes allocate; a read of a page whose leaf is missing
 * sees PTE_ZERO. So a 1 TiB guest costs 8 KiB until it is written, and one
 * that wrote 1 MiB in one place costs 8 + 4 + 4 KiB.
 *
 * Leaves and directories are never freed while the guest lives: a page
 * that became ZERO again (discard) keeps its leaf, which bounds the work of
 * every later access and keeps entry pointers stable for the callers that
 * hold one across a frame_get().
 *
 * A clone's leaves are allocated together, one for each of its source's,
 * in one block of huge pages (pt_alloc_like, meta_alloc): a clone of a
 * guest with 1 GiB resident needs 2 MiB of leaves at once, and one page
 * fault for them rather than 512 is much of the difference between a
 * first clone and a later one (README, "Clones").
 *
 * Caller holds host->lock for pte_alloc, pt_alloc_like and pt_walk;
 * pte_find is also used by the lock-free read path.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "internal.h"

#define TOP_SHIFT (PT_LEAF_BITS + PT_DIR_BITS)

int umlmem_guest_config_init_sized(struct umlmem_guest_config *cfg, size_t size)
{
	struct umlmem_guest_config d = { 0 };

	clearerr_tls();
	if (!cfg)
		return seterr(-EINVAL, "umlmem_guest_config_init: cfg is NULL");
	if (size < ABI_GUEST_CONFIG_SIZE_0_1)
		return seterr(-EINVAL, "struct umlmem_guest_config: size %zu is below %u, the size "
			      "of its first release: pass sizeof(struct umlmem_guest_config)",
			      size, ABI_GUEST_CONFIG_SIZE_0_1);
	abi_copy_out(cfg, size, &d, sizeof(d));
	return 0;
}

#define GUEST_FLAGS UMLMEM_GUEST_NOMERGE

int guest_alloc(struct umlmem_host *h, const struct umlmem_guest_config *cfg,
		struct umlmem_guest **out)
{
	struct umlmem_guest *g;

	if (!cfg->ram_bytes || cfg->ram_bytes > UMLMEM_MAX_GUEST_BYTES)
		return seterr(-EINVAL, "ram_bytes %llu is out of range: a guest holds 1 byte "
			      "to %llu bytes (128 TiB)", (unsigned long long)cfg->ram_bytes,
			      (unsigned long long)UMLMEM_MAX_GUEST_BYTES);
	if (cfg->flags & ~GUEST_FLAGS)
		return seterr(-EINVAL, "unknown guest flags 0x%x", cfg->flags & ~GUEST_FLAGS);

	g = calloc(1, sizeof(*g));
	if (!g)
		return seterr(-ENOMEM, "cannot allocate the guest");
	g->host = h;
	g->ram_bytes = cfg->ram_bytes;
	g->npages = (cfg->ram_bytes + PAGE_SIZE - 1) / PAGE_SIZE;
	g->merge_domain = cfg->merge_domain;
	g->flags = cfg->flags;
	snprintf(g->name, sizeof(g->name), "%s", cfg->name ? cfg->name : "unnamed");
	g->ntop = (g->npages + (1ull << TOP_SHIFT) - 1) >> TOP_SHIFT;
	g->top = calloc(g->ntop, sizeof(*g->top));
	if (!g->top) {
		free(g);
		return seterr(-ENOMEM, "cannot allocate the page table root of a %llu-byte guest",
			      (unsigned long long)cfg->ram_bytes);
	}
	g->meta_bytes = sizeof(*g) + g->ntop * sizeof(*g->top);
	g->zero = g->npages;
	*out = g;
	return 0;
}

void guest_link(struct umlmem_guest *g)
{
	struct umlmem_host *h = g->host;

	g->next = h->guests;
	if (h->guests)
		h->guests->prev = g;
	h->guests = g;
	h->nguests++;
	h->ram_pages += g->npages;
	g->pager_id = h->guests_made++;
}

/* ---- metadata memory ------------------------------------------------------ */

#define META_HUGE (2u << 20)   /* a transparent huge page on x86-64 and arm64 */

void *meta_alloc(size_t bytes)
{
	size_t len = (bytes + META_HUGE - 1) & ~(size_t)(META_HUGE - 1);
	uint8_t *p, *a;

	/* from an eighth of a huge page up, whole huge pages: at most
	   1.75 MiB more, for a first touch that costs one fault rather than
	   64 to 512 */
	if (bytes < META_HUGE / 8)
		return calloc(1, bytes);
	/* one huge page more than needed, to cut an aligned run out of it */
	p = mmap(NULL, len + META_HUGE, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	a = (uint8_t *)(((uintptr_t)p + META_HUGE - 1) & ~(uintptr_t)(META_HUGE - 1));
	if (a > p)
		munmap(p, (size_t)(a - p));
	if (a + len < p + len + META_HUGE)
		munmap(a + len, (size_t)(p + len + META_HUGE - (a + len)));
	/* advice only: without huge pages the memory is the same */
	(void)madvise(a, len, MADV_HUGEPAGE);
	return a;
}

void meta_free(void *p, size_t bytes)
{
	if (!p)
		return;
	if (bytes < META_HUGE / 8)
		free(p);
	else
		munmap(p, (bytes + META_HUGE - 1) & ~(size_t)(META_HUGE - 1));
}

void guest_free(struct umlmem_guest *g)
{
	for (uint64_t i = 0; i < g->ntop; i++) {
		if (!g->top[i])
			continue;
		for (unsigned j = 0; j < PT_DIR_N; j++) {
			pte_t *leaf = g->top[i][j];

			uintptr_t off = (uintptr_t)leaf - (uintptr_t)g->pt_block;

			if (!g->pt_block || off >= g->pt_block_bytes)
				free(leaf);
		}
		free(g->top[i]);
	}
	meta_free(g->pt_block, g->pt_block_bytes);
	free(g->top);
	free(g->rec);
	free(g);
}

int umlmem_guest_create_sized(umlmem_host *h, const struct umlmem_guest_config *ucfg,
			      size_t size, umlmem_guest **out)
{
	struct umlmem_guest_config c = { 0 };
	struct umlmem_guest *g;
	int rc;

	clearerr_tls();
	if (!h || !ucfg || !out)
		return seterr(-EINVAL, "umlmem_guest_create: %s is NULL",
			      !h ? "host" : !ucfg ? "cfg" : "guest");
	*out = NULL;
	rc = abi_copy_in(&c, sizeof(c), ucfg, size, ABI_GUEST_CONFIG_SIZE_0_1, "umlmem_guest_config");
	if (rc)
		return rc;
	rc = guest_alloc(h, &c, &g);
	if (rc)
		return rc;
	host_lock(h);
	guest_link(g);
	host_unlock(h);
	*out = g;
	return api_done(h, 0);
}

void umlmem_guest_destroy(umlmem_guest *g)
{
	struct umlmem_host *h;
	bool last_view;

	if (!g)
		return;
	h = g->host;
	host_lock(h);
	/* the view goes first, so that the zaps below need no system calls */
	last_view = native_unmap_locked(g);
	/* a handler may be in the middle of a fault on it (a second message
	   for a touch already served): let it see the view gone */
	while (g->nv_serving)
		pthread_cond_wait(&h->cond, &h->lock);
	/* Pins die with the guest: the frames go back to the free list. */
	range_zap(g, 0, g->npages, true);
	dedup_forget_guest(h, g);
	if (g->prev)
		g->prev->next = g->next;
	else
		h->guests = g->next;
	if (g->next)
		g->next->prev = g->prev;
	h->nguests--;
	h->ram_pages -= g->npages;
	/* frames the pool no longer needs go back to the free list */
	tier_balance(h);
	host_unlock(h);
	if (last_view)
		native_stop(h);
	tier_maintain(h);
	frames_trim(h);
	guest_free(g);
	api_done(h, 0);
}

pte_t *pte_find(struct umlmem_guest *g, uint64_t idx)
{
	/* both acquire loads pair with pte_alloc()'s release stores: a node
	   seen is a node whose zeroed entries are seen */
	pte_t **dir = LOAD_ACQ(&g->top[idx >> TOP_SHIFT]);
	pte_t *leaf;

	if (!dir)
		return NULL;
	leaf = LOAD_ACQ(&dir[(idx >> PT_LEAF_BITS) & (PT_DIR_N - 1)]);
	return leaf ? &leaf[idx & (PT_LEAF_N - 1)] : NULL;
}

pte_t *pte_alloc(struct umlmem_guest *g, uint64_t idx)
{
	pte_t ***dirp = &g->top[idx >> TOP_SHIFT];
	pte_t **leafp, **dir, *leaf;

	if (!*dirp) {
		dir = calloc(PT_DIR_N, sizeof(*dir));
		if (!dir)
			return NULL;
		g->meta_bytes += PT_DIR_N * sizeof(*dir);
		STORE_REL(dirp, dir);	/* pairs with pte_find()'s acquire loads */
	}
	leafp = &(*dirp)[(idx >> PT_LEAF_BITS) & (PT_DIR_N - 1)];
	if (!*leafp) {
		leaf = calloc(PT_LEAF_N, sizeof(*leaf));
		if (!leaf)
			return NULL;
		g->meta_bytes += PT_LEAF_N * sizeof(*leaf);
		STORE_REL(leafp, leaf);
	}
	return &(*leafp)[idx & (PT_LEAF_N - 1)];
}

int pt_alloc_like(struct umlmem_guest *dst, const struct umlmem_guest *src)
{
	uint64_t n = 0;
	pte_t *leaf;

	for (uint64_t i = 0; i < src->ntop; i++)
		for (uint64_t j = 0; src->top[i] && j < PT_DIR_N; j++)
			n += src->top[i][j] != NULL;
	if (!n)
		return 0;
	dst->pt_block = meta_alloc(n * PT_LEAF_N * sizeof(pte_t));
	if (!dst->pt_block)
		return -ENOMEM;
	dst->pt_block_bytes = n * PT_LEAF_N * sizeof(pte_t);
	dst->meta_bytes += dst->pt_block_bytes;
	leaf = dst->pt_block;
	for (uint64_t i = 0; i < src->ntop; i++) {
		if (!src->top[i])
			continue;
		dst->top[i] = calloc(PT_DIR_N, sizeof(pte_t *));
		if (!dst->top[i])
			return -ENOMEM;
		dst->meta_bytes += PT_DIR_N * sizeof(pte_t *);
		for (uint64_t j = 0; j < PT_DIR_N; j++)
			if (src->top[i][j]) {
				dst->top[i][j] = leaf;
				leaf += PT_LEAF_N;
			}
	}
	return 0;
}

int pt_walk(struct umlmem_guest *g,
	    int (*fn)(struct umlmem_guest *g, uint64_t idx, pte_t *e, void *arg), void *arg)
{
	int rc;

	for (uint64_t i = 0; i < g->ntop; i++) {
		if (!g->top[i])
			continue;
		for (uint64_t j = 0; j < PT_DIR_N; j++) {
			pte_t *leaf = g->top[i][j];

			if (!leaf)
				continue;
			for (uint64_t k = 0; k < PT_LEAF_N; k++) {
				if (leaf[k] == PTE_ZERO)
					continue;
				rc = fn(g, i << TOP_SHIFT | j << PT_LEAF_BITS | k, &leaf[k], arg);
				if (rc)
					return rc;
			}
		}
	}
	return 0;
}
