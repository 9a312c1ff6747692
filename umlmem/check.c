/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * check.c: host_check(), which recomputes every count and reference the
 * library keeps incrementally and compares: page-state counts per guest,
 * frame reference counts and reverse maps, the free list, the swap cache,
 * and every tier's reference counts (page table entries plus clean frames)
 * and its own records. Tests call it
 * along their random runs; with UMLMEM_DEBUG it can guard every call.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct ctx {
	struct umlmem_host *h;
	uint32_t *frefs;          /* mappings seen per frame */
	uint64_t *slots;          /* every store key reference seen */
	uint64_t nslots, capslots;
	uint64_t resident, swapped;
	bool nomem;
	char *err;
	size_t errlen;
};

static int fail(struct ctx *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->err, c->errlen, fmt, ap);
	va_end(ap);
	return -EUCLEAN;
}

static int add_slot(struct ctx *c, uint64_t s)
{
	if (c->nslots == c->capslots) {
		uint64_t n = c->capslots ? 2 * c->capslots : 1024;
		uint64_t *p = realloc(c->slots, n * sizeof(*p));

		if (!p)
			return fail(c, "out of memory while checking");
		c->slots = p;
		c->capslots = n;
	}
	c->slots[c->nslots++] = s;
	return 0;
}

static void add_held(void *arg, uint64_t key)
{
	struct ctx *c = arg;

	if (add_slot(c, key))
		c->nomem = true;
}

static bool maps(const struct umlmem_host *h, uint64_t f, struct umlmem_guest *g, uint64_t idx)
{
	const struct frame *fr = &h->frames[f];
	const struct rmap *more = rmap_more(h, f);

	if (fr->g == g && fr->idx == idx)
		return true;
	for (uint32_t i = 0; i + 1 < fr->refs; i++)
		if (more[i].g == g && more[i].idx == idx)
			return true;
	return false;
}

/* The native state of one mapper of frame @f (see NV_* in internal.h). */
static int check_nv(struct ctx *c, uint64_t f, struct umlmem_guest *g, uint32_t nv)
{
	const struct frame *fr = &c->h->frames[f];
	const char *why = NULL;

	if (!nv)
		return 0;
	if (!g->nv_base)
		why = "native state on a guest that is not mapped";
	else if ((nv & NV_LIVE) && !(nv & NV_MAPPED))
		why = "present but not mapped";
	else if ((nv & NV_RW) && !(nv & NV_LIVE))
		why = "writable but not present";
	else if ((nv & NV_LIVE) && !(fr->flags & F_NV))
		why = "present, but the frame is not marked F_NV";
	else if ((nv & NV_RW) && (fr->refs > 1 || fr->slot != TKEY_NONE))
		why = "writable, but shared or with a clean copy in swap";
	if (!why)
		return 0;
	return fail(c, "frame %llu, mapper in guest '%s': %s (nv 0x%x)", (unsigned long long)f,
		    g->name, why, nv);
}

static int visit(struct umlmem_guest *g, uint64_t idx, pte_t *e, void *arg)
{
	struct ctx *c = arg;
	uint64_t v = PTE_VAL(*e);

	if (idx >= g->npages)
		return fail(c, "guest '%s': entry %llu past its %llu pages", g->name,
			    (unsigned long long)idx, (unsigned long long)g->npages);
	switch (PTE_TYPE(*e)) {
	case PTE_FRAME:
		if (v >= c->h->nmade)
			return fail(c, "guest '%s' page %llu: frame %llu out of range", g->name,
				    (unsigned long long)idx, (unsigned long long)v);
		if (!maps(c->h, v, g, idx))
			return fail(c, "guest '%s' page %llu: frame %llu does not map it back",
				    g->name, (unsigned long long)idx, (unsigned long long)v);
		c->frefs[v]++;
		c->resident++;
		return 0;
	case PTE_STORED:
		if (!tier_of(c->h, v))
			return fail(c, "guest '%s' page %llu: stored in tier %u, which the host "
				    "does not have", g->name, (unsigned long long)idx, tkey_tier(v));
		c->swapped++;
		return add_slot(c, v);
	default:
		return fail(c, "guest '%s' page %llu: entry type %u outside an I/O", g->name,
			    (unsigned long long)idx, PTE_TYPE(*e));
	}
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static int check_locked(struct ctx *c)
{
	struct umlmem_host *h = c->h;
	uint64_t ram = 0, nguests = 0, freecount = 0, cached = 0, shared = 0, sharing = 0, active = 0;
	uint64_t small = 0, ra = 0, written = 0;
	uint64_t copies = 0, pooled = 0;
	uint8_t *isfree;
	int rc;

	for (struct umlmem_guest *g = h->guests; g; g = g->next) {
		c->resident = c->swapped = 0;
		rc = pt_walk(g, visit, c);
		if (rc)
			return rc;
		if (c->resident != g->resident || c->swapped != g->swapped ||
		    g->resident + g->swapped + g->zero != g->npages)
			return fail(c, "guest '%s': counted %llu resident %llu swapped, recorded "
				    "%llu + %llu + %llu zero of %llu", g->name,
				    (unsigned long long)c->resident, (unsigned long long)c->swapped,
				    (unsigned long long)g->resident, (unsigned long long)g->swapped,
				    (unsigned long long)g->zero, (unsigned long long)g->npages);
		ram += g->npages;
		nguests++;
	}
	if (ram != h->ram_pages || nguests != h->nguests)
		return fail(c, "host: ram_pages %llu / guests %llu recorded, %llu / %llu counted",
			    (unsigned long long)h->ram_pages, (unsigned long long)h->nguests,
			    (unsigned long long)ram, (unsigned long long)nguests);

	if (h->nmade > h->nframes || h->npunched > h->nstack || h->ntrim ||
	    h->nfree != h->nstack + h->nframes - h->nmade)
		return fail(c, "free frames: %llu counted free, stack of %llu (%llu given back), "
			    "%llu of %llu frames made, %llu being given back",
			    (unsigned long long)h->nfree, (unsigned long long)h->nstack,
			    (unsigned long long)h->npunched, (unsigned long long)h->nmade,
			    (unsigned long long)h->nframes, (unsigned long long)h->ntrim);
	isfree = calloc(h->nmade + 1, 1);
	if (!isfree)
		return fail(c, "out of memory while checking");
	rc = 0;
	for (uint64_t i = 0; i < h->nstack && !rc; i++) {
		uint32_t f = h->free[i];

		if (f >= h->nmade || isfree[f]++)
			rc = fail(c, "free list: frame %u out of range or listed twice", f);
		else if (i < h->npunched && !frame_gone(h, f) && h->frames[f].flags != F_FRESH)
			rc = fail(c, "frame %u was given back but is not marked fresh", f);
		else if (i < h->npunched)
			isfree[f]++;    /* 2: cold */
	}
	/* each chunk's count of cold frames; a chunk given back is all cold */
	for (uint64_t k = 0, f = 0; f < h->nmade && !rc; k++) {
		unsigned cold = 0;

		for (uint64_t e = f + FRAME_CHUNK; f < e && f < h->nmade; f++)
			cold += isfree[f] == 2;
		if ((h->chunk[k] & ~CHUNK_GONE) != cold ||
		    ((h->chunk[k] & CHUNK_GONE) && cold != FRAME_CHUNK))
			rc = fail(c, "frame table chunk %llu: %u cold frames, recorded 0x%x",
				  (unsigned long long)k, cold, h->chunk[k]);
	}
	/* each registration chunk's count of frames holding memory: made,
	   and not given back (io_store_chunk registers the full ones) */
	for (uint64_t k = 0, f = 0; f < h->nmade && !rc; k++) {
		uint64_t backed = 0;

		for (uint64_t e = f + (UINT64_C(1) << h->rshift); f < e && f < h->nmade; f++)
			backed += isfree[f] != 2;
		if (h->backed[k] != backed)
			rc = fail(c, "registration chunk %llu: %llu frames hold memory, "
				  "recorded %u", (unsigned long long)k,
				  (unsigned long long)backed, h->backed[k]);
	}
	freecount = h->nframes - h->nmade;
	for (uint64_t f = 0; f < h->nmade && !rc; f++) {
		const struct frame *fr = &h->frames[f];

		if (frame_gone(h, f)) {
			freecount += FRAME_CHUNK;
			f |= FRAME_CHUNK - 1;
			continue;
		}

		if (fr->flags & F_POOL) {
			pooled++;
			if (fr->refs || c->frefs[f] || fr->slot != TKEY_NONE || isfree[f] || fr->pins)
				rc = fail(c, "frame %llu lent to a tier is also mapped, cached, "
					  "pinned or free", (unsigned long long)f);
			continue;
		}
		if (fr->refs != c->frefs[f])
			rc = fail(c, "frame %llu: refs %u, but %u entries map it",
				  (unsigned long long)f, fr->refs, c->frefs[f]);
		else if ((!fr->refs && fr->slot == TKEY_NONE) != !!isfree[f])
			rc = fail(c, "frame %llu: refs %u, slot %s, but %son the free list",
				  (unsigned long long)f, fr->refs,
				  fr->slot == TKEY_NONE ? "none" : "set", isfree[f] ? "" : "not ");
		else if (!fr->refs && fr->pins)
			rc = fail(c, "unmapped frame %llu holds a pin", (unsigned long long)f);
		else if (fr->slot != TKEY_NONE && !tier_of(h, fr->slot))
			rc = fail(c, "frame %llu holds a copy in tier %u, which the host does not "
				  "have", (unsigned long long)f, tkey_tier(fr->slot));
		else if (fr->slot != TKEY_NONE && tcache_get(h, fr->slot) != (uint32_t)f + 1)
			rc = fail(c, "frame %llu holds key %llu, but the swap cache names frame %u",
				  (unsigned long long)f, (unsigned long long)fr->slot,
				  tcache_get(h, fr->slot));
		else if (fr->flags & F_BUSY)
			rc = fail(c, "frame %llu still marked busy", (unsigned long long)f);
		else if (fr->slot != TKEY_NONE)
			rc = add_slot(c, fr->slot);
		copies += fr->slot != TKEY_NONE;
		freecount += isfree[f];
		cached += !fr->refs && fr->slot != TKEY_NONE;
		shared += fr->refs > 1;
		active += !!(fr->flags & F_ACTIVE);
		small += !!(fr->flags & F_SMALL);
		ra += !!(fr->flags & F_RA);
		written += !!(fr->flags & F_WRITTEN);
		/* a victim waiting in the written FIFO is mapped, clean or
		   written to since (then used again), in no other set, and no
		   I/O is on it */
		if ((fr->flags & F_WRITTEN) &&
		    (!fr->refs || (fr->flags & (F_SMALL | F_ACTIVE | F_RA | F_BUSY))) && !rc)
			rc = fail(c, "frame %llu is in the pager's written FIFO with %u mappers, "
				  "flags 0x%x", (unsigned long long)f, fr->refs, fr->flags);
		if ((fr->flags & F_SMALL) && (fr->flags & F_ACTIVE) && !rc)
			rc = fail(c, "frame %llu is in both the pager's small FIFO and its main set",
				  (unsigned long long)f);
		/* a copy read ahead leaves that FIFO when a page maps it */
		if ((fr->flags & F_RA) && (fr->refs || fr->slot == TKEY_NONE ||
					   (fr->flags & (F_SMALL | F_ACTIVE))) && !rc)
			rc = fail(c, "frame %llu is in the pager's readahead FIFO with %u mappers%s",
				  (unsigned long long)f, fr->refs,
				  fr->slot == TKEY_NONE ? " and no stored copy" :
				  (fr->flags & (F_SMALL | F_ACTIVE)) ? " and in another set" : "");
		sharing += fr->refs > 1 ? fr->refs - 1 : 0;
		if (fr->refs > h->dd.max_sharing && !rc)
			rc = fail(c, "frame %llu: %u sharers, more than max_sharing %u",
				  (unsigned long long)f, fr->refs, h->dd.max_sharing);
		if ((fr->flags & F_STABLE) && fr->refs < 2 && !rc)
			rc = fail(c, "frame %llu: in the stable index with refs %u",
				  (unsigned long long)f, fr->refs);
		if ((fr->refs > 1) != !!rmap_more(h, f) && !rc)
			rc = fail(c, "frame %llu: refs %u, but %s further mappers in the side "
				  "table", (unsigned long long)f, fr->refs,
				  fr->refs > 1 ? "no" : "some");
		for (uint32_t i = 0; i < fr->refs && !rc; i++)
			rc = check_nv(c, f, i ? rmap_more(h, f)[i - 1].g : fr->g,
				      i ? rmap_more(h, f)[i - 1].nv : fr->nv);
	}
	free(isfree);
	if (rc)
		return rc;
	rc = dedup_check(h, c->err, c->errlen);
	if (rc)
		return rc;
	if (shared != h->shared_frames || sharing != h->sharing_pages)
		return fail(c, "sharing: %llu frames / %llu pages counted, %llu / %llu recorded",
			    (unsigned long long)shared, (unsigned long long)sharing,
			    (unsigned long long)h->shared_frames, (unsigned long long)h->sharing_pages);
	if (active != h->nactive)
		return fail(c, "%llu active frames counted, %llu recorded",
			    (unsigned long long)active, (unsigned long long)h->nactive);
	/* every F_SMALL frame has its entry in the ring (stale ones add more) */
	if (small > h->small.tail - h->small.head)
		return fail(c, "%llu frames in the small FIFO, %llu entries in its ring",
			    (unsigned long long)small,
			    (unsigned long long)(h->small.tail - h->small.head));
	if (written != h->nwritten || written > h->written.tail - h->written.head)
		return fail(c, "%llu frames in the written FIFO, %llu recorded, %llu entries in "
			    "its ring", (unsigned long long)written,
			    (unsigned long long)h->nwritten,
			    (unsigned long long)(h->written.tail - h->written.head));
	if (ra > h->rafifo.tail - h->rafifo.head)
		return fail(c, "%llu frames in the readahead FIFO, %llu entries in its ring",
			    (unsigned long long)ra,
			    (unsigned long long)(h->rafifo.tail - h->rafifo.head));
	if (cached != h->cached)
		return fail(c, "%llu cached frames counted, %llu recorded",
			    (unsigned long long)cached, (unsigned long long)h->cached);
	/* every cache entry is some frame's copy: one for one */
	if (copies != tcache_count(h))
		return fail(c, "swap cache: %llu entries, but %llu frames hold a copy",
			    (unsigned long long)tcache_count(h), (unsigned long long)copies);

	/* references tiers hold on keys of the tiers below them */
	for (unsigned t = 0; t < TIER_MAX; t++)
		if (h->tier[t] && h->tier[t]->ops->held)
			h->tier[t]->ops->held(h->tier[t], add_held, c);
	if (c->nomem)
		return fail(c, "out of memory while checking");
	{
		struct tier_info ti;

		tier_info_all(h, &ti);
		if (ti.frames != pooled)
			return fail(c, "%llu frames lent to tiers, %llu marked F_POOL",
				    (unsigned long long)ti.frames, (unsigned long long)pooled);
	}
	/* a restore in progress holds references its unlinked guest's entries
	   will take (snapshot.c): the counts below agree again once it links */
	if (h->restoring)
		return 0;
	/* every key's reference count is the number of its references seen */
	if (c->nslots)
		qsort(c->slots, c->nslots, sizeof(*c->slots), cmp_u64);
	for (uint64_t i = 0, j; i < c->nslots; i = j) {
		uint32_t refs;

		for (j = i; j < c->nslots && c->slots[j] == c->slots[i]; j++)
			;
		refs = tier_refs(h, c->slots[i]);
		if (refs != j - i)
			return fail(c, "tier %u handle %llu: refs %u, but %llu references exist",
				    tkey_tier(c->slots[i]), (unsigned long long)tkey_handle(c->slots[i]),
				    refs, (unsigned long long)(j - i));
	}
	/* every tier holds exactly the handles referenced (no leak), and its
	   own records agree */
	for (unsigned t = 0; t < TIER_MAX; t++) {
		struct tier *tr = h->tier[t];
		struct tier_info ti;
		uint64_t distinct = 0;

		if (!tr)
			continue;
		tr->ops->info(tr, &ti);
		for (uint64_t i = 0; i < c->nslots; i++)
			distinct += tkey_tier(c->slots[i]) == t &&
				    (!i || c->slots[i] != c->slots[i - 1]);
		if (ti.handles != distinct)
			return fail(c, "tier %s: %llu handles in use, %llu referenced (a leak)",
				    tr->ops->name, (unsigned long long)ti.handles,
				    (unsigned long long)distinct);
		rc = tr->ops->check(tr, c->err, c->errlen);
		if (rc)
			return rc;
	}
	return 0;
}

int host_check(struct umlmem_host *h, char *err, size_t errlen)
{
	struct ctx c = { .h = h, .err = err, .errlen = errlen };
	int rc;

	if (errlen)
		err[0] = '\0';
	c.frefs = calloc(h->nframes, sizeof(*c.frefs));
	if (!c.frefs)
		return -ENOMEM;
	pthread_mutex_lock(&h->lock);
	/* I/O in flight (the reclaim thread's, another caller's) leaves pages
	   between states: check once it has landed, before more can start */
	while (h->busy_frames || h->ntrim)
		host_wait(h);
	rc = check_locked(&c);
	pthread_mutex_unlock(&h->lock);
	free(c.frefs);
	free(c.slots);
	return rc;
}
