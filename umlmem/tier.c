/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * tier.c: the memory hierarchy below the frames, as the core sees it.
 *
 * A guest page is in exactly one of four states, kept in its page table
 * entry (internal.h):
 *
 *                 write, pin
 *    +--------+ ---------------------> +---------+   evict: clean copy -> drop (no I/O),
 *    |  ZERO  |                        |  FRAME  |   dirty -> tier store (batch)
 *    |        | <--------------------- |    f    | ---------------------------+
 *    +--------+  discard, destroy,     +---------+                            |
 *        ^       zeros merged/evicted    ^     ^                              v
 *        |                               |     |  key cached in a   +------------------+
 *        |                 load verified |     +--------------------|      STORED      |
 *        |                               |        frame: map, no I/O|  (tier, handle)  |
 *        |                          +---------+                     |                  |
 *        |                          |  BUSY   | <-- fault: load ----|                  |
 *        |                          |         | --- load failed --> |   (kept, -EIO)   |
 *        |                          +---------+                     +------------------+
 *        |                                                                  |
 *        +------------------------------------------------------------------+
 *               discard, destroy: the handle's reference is released
 *
 * A write of a whole STORED page drops the handle and takes a frame with
 * no load. A frame may keep its key after a load (frame->slot: a clean
 * copy), so evicting it again costs no I/O until it is written.
 *
 * Below the frames, tiers: the swap files today; a compressed pool in the
 * budget, a remote block store and read-only saved images are meant to
 * drop in beside them. What the core needs of a tier is small, and one
 * table of operations (tier.h) covers it, as io_ops covers the I/O
 * engines: store a batch of pages under new handles, load a batch, count
 * references to a handle, list the live handles near one (readahead),
 * verify, report. Every tier proves what it returns (checksum or
 * authentication tag): a page that cannot be proven is -EBADMSG, which the
 * core counts as a checksum error and returns as -EIO; never wrong bytes.
 *
 * Why the core, not each tier, keeps the swap cache. A handle may be named
 * by many guest pages (a shared frame is stored once; clones and restores
 * of one image share handles). When one of them faults the handle in, the
 * others must find that frame and not make a second copy, whatever tier
 * the handle is in; and a read in flight must make the others wait rather
 * than read again. So the core maps (tier, handle) -> frame in one table
 * (tcache_*, an open-addressed hash with linear probing, under host->lock)
 * and a tier only stores bytes and counts references. The frame that
 * caches a key holds one reference on it, so a cached handle is never
 * freed under the cache; host_check verifies that the table and the frames'
 * copies name each other one for one.
 *
 * Readahead lives in the core for the same reason: it asks the tier of the
 * faulting key which handles are live next to it (tier_ops.live) and reads
 * those no frame caches in the same batch as the fault.
 *
 * Locking: the cache is under host->lock; each tier has its own leaf locks
 * (tier.h). Loads and stores run with host->lock dropped, their pages
 * PTE_BUSY or their frames F_BUSY.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* ---- the cache ------------------------------------------------------------ */

struct tc_ent {
	uint64_t k;      /* TKEY_NONE: empty */
	uint32_t f1;     /* frame + 1 */
};

static inline uint64_t tc_home(const struct umlmem_host *h, uint64_t k)
{
	return (k * UINT64_C(0x9E3779B97F4A7C15)) >> 32 & h->tc_mask;
}

/* Smallest size of the cache; it grows and shrinks with its entries. */
#define TC_MIN 1024

/* Rebuilds the cache with @n entries (a power of two); false when there
   is no memory for it, and the old table stays. */
static bool tc_resize(struct umlmem_host *h, uint64_t n)
{
	struct tc_ent *old = h->tc, *t = malloc(n * sizeof(*t));
	uint64_t have = h->tc ? h->tc_mask + 1 : 0;

	if (!t)
		return false;
	for (uint64_t i = 0; i < n; i++)
		t[i].k = TKEY_NONE;
	h->tc = t;
	h->tc_mask = n - 1;
	for (uint64_t i = 0; i < have; i++) {
		uint64_t j;

		if (old[i].k == TKEY_NONE)
			continue;
		for (j = tc_home(h, old[i].k); t[j].k != TKEY_NONE; j = (j + 1) & h->tc_mask)
			;
		t[j] = old[i];
	}
	free(old);
	return true;
}

int tcache_init(struct umlmem_host *h)
{
	/* Sized by the keys frames hold (at most one per frame in use), not
	   by the budget: from TC_MIN, doubled past a load of 1/2, halved
	   below 1/8 (tcache_set). */
	h->tc = NULL;
	h->tc_n = 0;
	if (!tc_resize(h, TC_MIN))
		return seterr(-ENOMEM, "cannot allocate the swap cache of %u entries", TC_MIN);
	return 0;
}

void tcache_fini(struct umlmem_host *h)
{
	free(h->tc);
	h->tc = NULL;
}

static uint64_t tc_find(const struct umlmem_host *h, uint64_t k)
{
	uint64_t i = tc_home(h, k);

	while (h->tc[i].k != TKEY_NONE && h->tc[i].k != k)
		i = (i + 1) & h->tc_mask;
	return i;
}

uint32_t tcache_get(struct umlmem_host *h, uint64_t k)
{
	uint64_t i = tc_find(h, k);

	return h->tc[i].k == k ? h->tc[i].f1 : 0;
}

void tcache_set(struct umlmem_host *h, uint64_t k, uint32_t frame1)
{
	uint64_t i = tc_find(h, k), j;

	if (frame1) {
		if (h->tc[i].k != k) {
			/* Past a load of 1/2, twice the size; without the
			   memory for it the table fills further and probes
			   get longer. */
			if (2 * (h->tc_n + 1) > h->tc_mask + 1 &&
			    tc_resize(h, 2 * (h->tc_mask + 1)))
				i = tc_find(h, k);
			h->tc[i].k = k;
			h->tc_n++;
		}
		h->tc[i].f1 = frame1;
		return;
	}
	if (h->tc[i].k != k)
		return;
	/* Backward-shift deletion: move later members of the run into the
	   hole when the hole lies between their home and them. */
	h->tc_n--;
	for (;;) {
		h->tc[i].k = TKEY_NONE;
		j = i;
		for (;;) {
			uint64_t home;

			j = (j + 1) & h->tc_mask;
			if (h->tc[j].k == TKEY_NONE)
				goto shrink;
			home = tc_home(h, h->tc[j].k);
			/* stays when home lies cyclically in (i, j] */
			if (i <= j ? (i < home && home <= j) : (i < home || home <= j))
				continue;
			break;
		}
		h->tc[i] = h->tc[j];
		i = j;
	}
shrink:
	/* below a load of 1/8, half the size (the band between is the
	   hysteresis); without the memory, the larger table serves */
	if (h->tc_mask + 1 > TC_MIN && 8 * h->tc_n < h->tc_mask + 1)
		tc_resize(h, (h->tc_mask + 1) / 2);
}

uint64_t tcache_count(struct umlmem_host *h)
{
	return h->tc_n;
}

/* ---- dispatch ------------------------------------------------------------- */

struct tier *tier_of(struct umlmem_host *h, uint64_t k)
{
	return h->tier[tkey_tier(k)];
}

const char *tier_where(struct umlmem_host *h, uint64_t k, char *buf, size_t len)
{
	struct tier *t = tier_of(h, k);

	if (t->ops->where)
		t->ops->where(t, tkey_handle(k), buf, len);
	else
		snprintf(buf, len, "%s", t->ops->name);
	return buf;
}

void tier_ref(struct umlmem_host *h, uint64_t k, unsigned n)
{
	struct tier *t = tier_of(h, k);

	if (n)
		t->ops->ref(t, tkey_handle(k), n);
}

void tier_unref(struct umlmem_host *h, uint64_t k, unsigned n)
{
	struct tier *t = tier_of(h, k);

	if (n)
		t->ops->unref(t, tkey_handle(k), n);
}

uint32_t tier_refs(struct umlmem_host *h, uint64_t k)
{
	struct tier *t = tier_of(h, k);

	return t->ops->refs(t, tkey_handle(k));
}

void tier_load(struct umlmem_host *h, const uint64_t *keys, void *const *bufs, unsigned n,
	       int *res)
{
	struct tier *t = tier_of(h, keys[0]);
	uint64_t hd[1 + RA_MAX];

	for (unsigned i = 0; i < n; i++)
		hd[i] = tkey_handle(keys[i]);
	t->ops->load(t, hd, bufs, n, res);
}

void tier_maintain(struct umlmem_host *h)
{
	for (unsigned i = 0; i < TIER_MAX; i++)
		if (h->tier[i] && h->tier[i]->ops->maintain)
			h->tier[i]->ops->maintain(h->tier[i]);
}

void tier_balance(struct umlmem_host *h)
{
	for (unsigned i = 0; i < TIER_MAX; i++)
		if (h->tier[i] && h->tier[i]->ops->balance)
			h->tier[i]->ops->balance(h->tier[i]);
}

void tier_info_all(struct umlmem_host *h, struct tier_info *out)
{
	memset(out, 0, sizeof(*out));
	for (unsigned i = 0; i < TIER_MAX; i++) {
		struct tier_info ti;

		if (!h->tier[i])
			continue;
		memset(&ti, 0, sizeof(ti));
		h->tier[i]->ops->info(h->tier[i], &ti);
		out->handles += ti.handles;
		out->capacity += ti.capacity;
		out->bytes += ti.bytes;
		out->punches += ti.punches;
		out->frames += ti.frames;
	}
}

void tiers_fini(struct umlmem_host *h)
{
	for (unsigned i = 0; i < TIER_MAX; i++)
		if (h->tier[i]) {
			h->tier[i]->ops->fini(h->tier[i]);
			h->tier[i] = NULL;
		}
	tcache_fini(h);
}
