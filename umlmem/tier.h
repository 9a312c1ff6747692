/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * tier.h: the store interface below the frames. See tier.c for the design.
 *
 * A page whose content is not in a frame lives in a *tier* under a
 * *handle* the tier chose. The core names it by one 64-bit store key,
 * handle << TIER_BITS | tier, kept in the page's entry (PTE_STORED) and in
 * a frame that holds a clean copy of it (frame->slot). A tier counts the
 * references to each handle; the core holds one per entry that names the
 * key and one per frame that caches it.
 */
#ifndef UMLMEM_TIER_H
#define UMLMEM_TIER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct umlmem_host;

/* ---- store keys --------------------------------------------------------- */
#define TIER_BITS   3u
#define TIER_MAX    (1u << TIER_BITS)
#define TKEY_NONE   UINT64_MAX
/* Handles must fit beside the tier and the entry's type bits. */
#define TIER_HANDLE_MAX ((UINT64_C(1) << (62 - TIER_BITS)) - 1)

/* The tiers a host may have; a host without one leaves its place NULL. */
enum {
	TIER_SWAP = 0,   /* sparse swap files (swapfiles/tier_swap.c) */
	TIER_POOL = 1,   /* compressed pool in frames of the budget (zpool.c) */
	TIER_IMAGE = 2,  /* saved images, read-only (tier_image.c, image.h) */
};

static inline uint64_t tkey(unsigned tier, uint64_t handle)
{
	return handle << TIER_BITS | tier;
}
static inline unsigned tkey_tier(uint64_t k)
{
	return (unsigned)(k & (TIER_MAX - 1));
}
static inline uint64_t tkey_handle(uint64_t k)
{
	return k >> TIER_BITS;
}

/* ---- the interface ------------------------------------------------------ */

/* What a tier reports about itself (umlmem_host_info, stats, check). */
struct tier_info {
	uint64_t handles;        /* live handles (pages stored once, whatever their sharers) */
	uint64_t capacity;       /* the most handles it can hold; 0: no fixed limit */
	uint64_t bytes;          /* bytes the tier holds for them (disk, memory) */
	uint64_t punches;        /* regions given back to the medium (hole punching) */
	uint64_t frames;         /* frames of the budget it holds (in frames_used) */
};

struct tier;

#define TIER_STORE_BELOW 0x1u   /* tier_ops.store: for the tier above */

/*
 * Operations of one kind of tier. Unless marked "no lock", a call may be
 * made holding host->lock: it takes only the tier's own leaf locks and
 * never calls back into the core.
 */
struct tier_ops {
	const char *name;
	/* No lock. Stores the @n pages at @pages[i] (4096 bytes each, kept
	   still by the caller), each under a new handle with one reference, and
	   records its checksum. res[i] is 0 with handles[i] set, -ENOSPC when
	   the tier had no room (nothing written), or the negative errno of a
	   failed write (the handle is released again). Returns how many
	   writes failed (I/O errors, as opposed to a full tier); @msg gets a
	   sentence about the first failure of either kind. With
	   TIER_STORE_BELOW the pages are a tier's above (it moves them down)
	   and no page table entry will name the handles: live() must never
	   offer them, as no fault would map a frame read ahead into one. */
	unsigned (*store)(struct tier *t, void *const *pages, unsigned n, uint64_t *handles,
			  int *res, unsigned flags, char *msg, size_t msglen);
	/* No lock. Reads the @n handles into bufs[i] (4096-aligned), which the
	   caller keeps referenced meanwhile; res[i] is 0 when the content is
	   proven to be what was stored, -EBADMSG when it does not match its
	   checksum, or the negative errno of the failed read. The handle is
	   never changed by a failure: a retry may succeed. */
	void (*load)(struct tier *t, const uint64_t *handles, void *const *bufs, unsigned n,
		     int *res);
	void (*ref)(struct tier *t, uint64_t handle, unsigned n);
	/* At zero references the handle is free; its space may be given back
	   later by maintain(). */
	void (*unref)(struct tier *t, uint64_t handle, unsigned n);
	uint32_t (*refs)(struct tier *t, uint64_t handle);
	/* The live handles in [from, from + n), ascending, into @out: what
	   readahead may read next to a fault on from - 1. Returns how many. */
	unsigned (*live)(struct tier *t, uint64_t from, unsigned n, uint64_t *out);
	/* No lock. Deferred work that may block (punching freed space). */
	void (*maintain)(struct tier *t);
	/* Consistency of the tier's own records; 0 or -EUCLEAN with @err. */
	int (*check)(struct tier *t, char *err, size_t errlen);
	void (*info)(struct tier *t, struct tier_info *out);
	void (*fini)(struct tier *t);
	/* Optional. Caller holds host->lock: a tier that keeps its data in
	   frames of the budget takes free frames it will need (frame_take) or
	   gives back those it does not (frame_put), marked F_POOL meanwhile. */
	void (*balance)(struct tier *t);
	/* Optional. No lock. The pages at pages[i] (kept still by the caller)
	   are clean copies of handles[i], about to leave their frames: the
	   tier may keep their content nearer than it has it now (the pool
	   compresses a page it holds only in the tier below, so that the next
	   fault on it reads no disk). Best effort; the handles and their
	   references are unchanged. */
	void (*absorb)(struct tier *t, const uint64_t *handles, void *const *pages, unsigned n);
	/* Optional, for host_check: calls @fn for every key of another tier
	   on which this tier holds a reference (pages it moved down). */
	void (*held)(struct tier *t, void (*fn)(void *arg, uint64_t key), void *arg);
	/* Optional. Caller holds a reference on @handle. Names where its
	   content is, for a message about a failed load ("image file
	   '/srv/vm.img', record 12 at offset 53248"); without it, the tier's
	   name serves. */
	void (*where)(struct tier *t, uint64_t handle, char *buf, size_t len);
};

struct tier {
	const struct tier_ops *ops;
	unsigned id;             /* its place in host->tier[] */
	void *priv;              /* the tier's own state */
	/* the next tier down: where the pager sends what this one refuses
	   (-ENOSPC), and where this one moves its own pages; NULL: none */
	struct tier *below;
};

/* ---- tier.c: the core's side -------------------------------------------- */

/* The swap cache: which frame holds a clean copy of store key @k, keyed by
   (tier, handle), so that every sharer of a handle finds the one frame.
   Caller holds host->lock. tcache_get returns frame + 1, or 0. */
int      tcache_init(struct umlmem_host *h);
void     tcache_fini(struct umlmem_host *h);
uint32_t tcache_get(struct umlmem_host *h, uint64_t k);
/* @frame1 0 removes @k. Setting never fails: the table holds one entry per
   frame at most and is sized for all of them. */
void     tcache_set(struct umlmem_host *h, uint64_t k, uint32_t frame1);
uint64_t tcache_count(struct umlmem_host *h);

/* The tier of key @k, by the key's tier bits. */
struct tier *tier_of(struct umlmem_host *h, uint64_t k);
void     tier_ref(struct umlmem_host *h, uint64_t k, unsigned n);
void     tier_unref(struct umlmem_host *h, uint64_t k, unsigned n);
uint32_t tier_refs(struct umlmem_host *h, uint64_t k);
/* Reads @n keys of one tier into @bufs with no umlmem lock held; res[i] as
   for tier_ops.load. */
void     tier_load(struct umlmem_host *h, const uint64_t *keys, void *const *bufs, unsigned n,
		   int *res);
/* Where the content of key @k is, for messages (tier_ops.where): into
   @buf, which it returns. */
const char *tier_where(struct umlmem_host *h, uint64_t k, char *buf, size_t len);
/* Lets every tier that keeps data in frames take or give back frames
   (tier_ops.balance). Caller holds host->lock. */
void     tier_balance(struct umlmem_host *h);
/* Runs every tier's deferred work. No lock held. */
void     tier_maintain(struct umlmem_host *h);
/* Sum of every tier's info. */
void     tier_info_all(struct umlmem_host *h, struct tier_info *out);
void     tiers_fini(struct umlmem_host *h);

/* ---- zpool.c -------------------------------------------------------------- */
/* The compressed pool of @h (algorithm and size from h->cfg), storing into
   frames of the budget and moving its oldest pages to @below. */
int  zpool_create(struct umlmem_host *h, struct tier *below, struct tier **out);
struct umlmem_host_info;
/* Fills the pool_* fields of @i (no lock needed). */
void zpool_info(struct tier *t, struct umlmem_host_info *i);
/* Test hooks. The next @n pool allocations fail as if no frame could be
   had (the pages then go to the tier below). */
void zpool_inject_alloc_fail(struct tier *t, uint64_t n);
/* Flips one byte of the compressed bytes of handle @handle; false when it
   has none (same-filled, or moved below). */
bool zpool_corrupt(struct tier *t, uint64_t handle);

/* ---- swapfiles/tier_swap.c --------------------------------------------- */
/* Makes the swap files of @h (host->swap, host->io, opened by host.c) the
   tier TIER_SWAP of @h, sealed (seal.h) with UMLMEM_SWAP_ENCRYPT in its
   flags; call it before anything is written to swap. -ENOMEM, or with
   UMLMEM_SWAP_ENCRYPT -EIO (libsodium cannot start), with the message set. */
int tier_swap_create(struct umlmem_host *h, struct tier **out);

#endif
