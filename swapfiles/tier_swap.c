/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * tier_swap.c: the swap files as a tier of the store interface (tier.h).
 *
 * A handle is a slot of the swap set (swap.c); its references and checksum
 * are the slot's. A batch stored is a batch of slots that swap_alloc()
 * hands out contiguously, so it leaves as one sequential write through the
 * I/O engine (io.c merges adjacent pages); a batch loaded is the fault's
 * slot and the slots read ahead of it, again merged where adjacent. The
 * checksum (xxh3-64) is taken before the write and checked after every
 * read: a mismatch is -EBADMSG, never the bytes.
 *
 * Sealed (UMLMEM_SWAP_ENCRYPT): each page is encrypted and authenticated
 * (seal.c) under the name tkey(TIER_SWAP, slot) and a fresh nonce, and the
 * tag goes to the slot's record in place of the checksum, so a page opens
 * only in the slot and from the write it was sealed for. A store seals
 * into bounce pages and writes those: the frames stay as they are, since a
 * frame being written out may be read meanwhile (native views, read pins,
 * the swap cache) and must never hold ciphertext. A load decrypts in place,
 * in the frame it read into, which no one sees before the load returns.
 * A page whose tag does not open is -EBADMSG, as a bad checksum is.
 *
 * The bounce pages are kept between stores (a few batches of TS_BOUNCE
 * pages, taken and given back with one atomic exchange each): a batch of
 * fresh memory costs a page fault per page, and above malloc's mmap
 * threshold an mmap and a munmap, which together cost more than the
 * sealing itself. A store of more pages than a kept batch holds, or one
 * that finds every kept batch taken, allocates its own.
 *
 * The swap set and the engine are created by host.c (the engine maps the
 * frame store as fixed buffers) and closed by it; the tier only borrows
 * them. Locking: swap.lock (leaf, inside swap.c) and the engine's own; the
 * tier adds none.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Bounce pages kept: TS_BOUNCE_KEEP batches of TS_BOUNCE pages (the
   largest default reclaim_batch), enough for the reclaim thread and a
   faulting thread or two storing at once. */
#define TS_BOUNCE       64u
#define TS_BOUNCE_KEEP  4u

struct tswap {
	struct tier t;
	struct umlmem_host *h;   /* for swap, io, swap_dir, cfg: fixed after create */
	struct seal *seal;       /* sealed tier, else NULL; thread-safe, fixed after create */
	/* Kept batches of TS_BOUNCE bounce pages, or NULL. A batch belongs
	   to whoever exchanged its pointer out (atomics: the release in
	   ts_bounce_put() pairs with the acquire in ts_bounce_get(), so the
	   last store's use of the pages happens before the next one's). */
	uint8_t *bounce[TS_BOUNCE_KEEP];
};

static struct tswap *ts(struct tier *t)
{
	return (struct tswap *)t;
}

/* Bounce pages for a sealed batch of @n pages: a kept batch when one is
   free and large enough, else fresh memory; NULL when out of memory. */
static uint8_t *ts_bounce_get(struct tswap *s, unsigned n)
{
	if (n <= TS_BOUNCE)
		for (unsigned i = 0; i < TS_BOUNCE_KEEP; i++) {
			/* pairs with ts_bounce_put()'s release: the pages'
			   last use happened before this one */
			uint8_t *b = __atomic_exchange_n(&s->bounce[i], NULL, __ATOMIC_ACQUIRE);

			if (b)
				return b;
		}
	return aligned_alloc(PAGE_SIZE, (size_t)(n > TS_BOUNCE ? n : TS_BOUNCE) * PAGE_SIZE);
}

/* Gives back what ts_bounce_get() returned for @n pages: kept when a slot
   is free, else freed. */
static void ts_bounce_put(struct tswap *s, uint8_t *b, unsigned n)
{
	if (!b)
		return;
	if (n <= TS_BOUNCE)
		for (unsigned i = 0; i < TS_BOUNCE_KEEP; i++) {
			uint8_t *none = NULL;

			/* pairs with ts_bounce_get()'s acquire */
			if (__atomic_compare_exchange_n(&s->bounce[i], &none, b, false,
							__ATOMIC_RELEASE, __ATOMIC_RELAXED))
				return;
		}
	free(b);
}

static unsigned ts_store(struct tier *t, void *const *pages, unsigned n, uint64_t *handles,
			 int *res, unsigned flags, char *msg, size_t msglen)
{
	struct umlmem_host *h = ts(t)->h;
	struct seal *seal = ts(t)->seal;
	struct io_req *req = malloc(n * sizeof(*req));
	uint64_t *csum = malloc(n * sizeof(*csum));
	struct seal_tag *tag = NULL;
	uint8_t *bounce = NULL;
	unsigned got, failed = 0;

	msg[0] = '\0';
	if (seal && n) {
		tag = malloc(n * sizeof(*tag));
		bounce = ts_bounce_get(ts(t), n);
	}
	if (!req || !csum || (seal && n && (!tag || !bounce))) {
		free(req);
		free(csum);
		free(tag);
		ts_bounce_put(ts(t), bounce, n);
		for (unsigned i = 0; i < n; i++)
			res[i] = -ENOMEM;
		snprintf(msg, msglen, "cannot allocate a write batch of %u pages", n);
		return 0;
	}
	got = swap_alloc(h->swap, n, handles);
	if (flags & TIER_STORE_BELOW)
		for (unsigned i = 0; i < got; i++)
			swap_hide(h->swap, handles[i]);
	for (unsigned i = got; i < n; i++)
		res[i] = -ENOSPC;
	if (got < n)
		snprintf(msg, msglen, "swap is full (swap_bytes %llu): %u dirty pages could not "
			 "be written out; discard guest memory or raise swap_bytes",
			 (unsigned long long)h->cfg.swap_bytes, n - got);
	for (unsigned i = 0; i < got; i++) {
		unsigned file;
		uint64_t off;

		swap_where(h->swap, handles[i], &file, &off);
		req[i] = (struct io_req){ .buf = pages[i], .off = off, .len = PAGE_SIZE,
					  .file = (uint16_t)file, .op = IO_WRITE };
		if (seal) {
			req[i].buf = bounce + (size_t)i * PAGE_SIZE;
			seal_page(seal, tkey(TIER_SWAP, handles[i]), pages[i], req[i].buf, &tag[i]);
		} else {
			csum[i] = swap_page_csum(pages[i]);
		}
	}
	io_run(h->io, req, got);
	for (unsigned i = 0; i < got; i++) {
		res[i] = req[i].res;
		if (!res[i]) {
			if (seal)
				swap_set_tag(h->swap, handles[i], &tag[i]);
			else
				swap_set_csum(h->swap, handles[i], csum[i]);
			continue;
		}
		swap_unref(h->swap, handles[i], 1);
		failed++;
		/* a filesystem out of space is a full swap to the caller */
		if (res[i] == -ENOSPC)
			swap_note_fs_full(h->swap);
		if (failed > 1 || got < n)
			continue;
		if (res[i] == -ENOSPC)
			snprintf(msg, msglen, "the filesystem of swap_dir '%s' is full; "
				 "the page stays in memory", h->swap_dir);
		else
			snprintf(msg, msglen, "writing a page to swap in '%s' failed (%s); "
				 "the page stays in memory",
				 h->cfg.swap_uri ? h->cfg.swap_uri : h->swap_dir,
				 umlmem_strerror(res[i]));
	}
	free(req);
	free(csum);
	free(tag);
	ts_bounce_put(ts(t), bounce, n);
	return failed;
}

static void ts_load(struct tier *t, const uint64_t *handles, void *const *bufs, unsigned n,
		    int *res)
{
	struct umlmem_host *h = ts(t)->h;
	struct io_req req[1 + RA_MAX];
	unsigned file;

	for (unsigned i = 0; i < n; i++) {
		req[i] = (struct io_req){ .buf = bufs[i], .len = PAGE_SIZE, .op = IO_READ };
		swap_where(h->swap, handles[i], &file, &req[i].off);
		req[i].file = (uint16_t)file;
	}
	io_run(h->io, req, n);
	for (unsigned i = 0; i < n; i++) {
		res[i] = req[i].res;
		if (res[i])
			continue;
		if (ts(t)->seal) {
			struct seal_tag tag;

			swap_tag(h->swap, handles[i], &tag);
			res[i] = seal_open(ts(t)->seal, tkey(TIER_SWAP, handles[i]), bufs[i],
					   bufs[i], &tag);
		} else if (swap_page_csum(bufs[i]) != swap_csum(h->swap, handles[i])) {
			res[i] = -EBADMSG;
		}
	}
}

static void ts_ref(struct tier *t, uint64_t handle, unsigned n)
{
	swap_ref(ts(t)->h->swap, handle, n);
}

static void ts_unref(struct tier *t, uint64_t handle, unsigned n)
{
	swap_unref(ts(t)->h->swap, handle, n);
}

static uint32_t ts_refs(struct tier *t, uint64_t handle)
{
	return swap_refs(ts(t)->h->swap, handle);
}

static unsigned ts_live(struct tier *t, uint64_t from, unsigned n, uint64_t *out)
{
	return swap_live(ts(t)->h->swap, from, n, out);
}

static void ts_maintain(struct tier *t)
{
	swap_punch_pending(ts(t)->h->swap);
}

static int ts_check(struct tier *t, char *err, size_t errlen)
{
	return swap_check(ts(t)->h->swap, err, errlen);
}

static void ts_info(struct tier *t, struct tier_info *out)
{
	struct swap_info si;

	swap_info(ts(t)->h->swap, &si);
	memset(out, 0, sizeof(*out));
	out->handles = si.slots_used;
	out->capacity = si.slots_cap;
	out->bytes = si.disk_bytes;
	out->punches = si.punches;
}

static void ts_fini(struct tier *t)
{
	for (unsigned i = 0; i < TS_BOUNCE_KEEP; i++)
		free(ts(t)->bounce[i]);
	seal_destroy(ts(t)->seal);
	free(ts(t));
}

static const struct tier_ops tier_swap_ops = {
	.name = "swap",
	.store = ts_store,
	.load = ts_load,
	.ref = ts_ref,
	.unref = ts_unref,
	.refs = ts_refs,
	.live = ts_live,
	.maintain = ts_maintain,
	.check = ts_check,
	.info = ts_info,
	.fini = ts_fini,
};

int tier_swap_create(struct umlmem_host *h, struct tier **out)
{
	struct tswap *s = calloc(1, sizeof(*s));

	if (!s)
		return seterr(-ENOMEM, "cannot allocate the swap tier");
	s->t.ops = &tier_swap_ops;
	s->t.id = TIER_SWAP;
	s->t.priv = s;
	s->h = h;
	if (h->cfg.flags & UMLMEM_SWAP_ENCRYPT) {
		char msg[256];
		int rc = seal_create(&s->seal, msg, sizeof(msg));

		if (!rc && swap_keep_tags(h->swap))
			rc = -EBUSY;    /* cannot happen: the set is fresh */
		if (rc) {
			seal_destroy(s->seal);
			free(s);
			return seterr(rc, "%s", rc == -EBUSY ? "swap encryption must be set up "
				      "before the first page is written to swap" : msg);
		}
	}
	*out = &s->t;
	return 0;
}
