/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * umlmem internals: the objects of DESIGN.md and the prototypes of each
 * file of umlmem/, grouped by file. Only the library and its tests include
 * this header.
 *
 * Locking (issue-level summary; each lock is documented where declared):
 *   host->lock   one mutex per host; protects every page table of the host's
 *                guests, the frame table, the free list, the pager's clock
 *                and the counters. Taken first.
 *   swap->lock   leaf lock inside the swap set (swapfiles/swap.h); taken
 *                under host->lock by the swap_* calls.
 *   err (TLS)    the per-thread error message needs no lock.
 * In this version swap I/O is done under host->lock (one coarse lock, as
 * simple as correct); the entry state PTE_BUSY is reserved for the engines
 * that drop the lock across I/O.
 */
#ifndef UMLMEM_INTERNAL_H
#define UMLMEM_INTERNAL_H

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>
#include "umlmem.h"
#include "swap.h"

#define PAGE_SHIFT 12
#define PAGE_SIZE  UMLMEM_PAGE_SIZE

/* Debug level: 1 checks invariants (host_check) at the end of every
   mutating call; 0 (default) only when a test asks. */
#ifndef UMLMEM_DEBUG
#define UMLMEM_DEBUG 0
#endif

/* ---- page table entries ------------------------------------------------
 * One 64-bit entry per guest page; the low two bits say what it is and the
 * rest is the payload:
 *   PTE_ZERO   0                no frame, no slot: reads as zeros
 *   PTE_FRAME  frame << 2 | 1   content in frame (private or shared)
 *   PTE_SLOT   slot << 2 | 2    content only in swap slot
 *   PTE_BUSY   3                I/O in flight; waiters sleep on host->cond
 * A zero-filled leaf is all PTE_ZERO, so lazily allocated chunks need no
 * initialisation beyond calloc.
 */
typedef uint64_t pte_t;
enum { PTE_ZERO = 0, PTE_FRAME = 1, PTE_SLOT = 2, PTE_BUSY = 3 };
#define PTE_TYPE(e)      ((unsigned)((e) & 3))
#define PTE_VAL(e)       ((e) >> 2)
#define PTE_MK(type, v)  (((uint64_t)(v) << 2) | (type))

/* Page table geometry: leaves of 512 entries (2 MiB of guest), directories
 * of 512 leaves (1 GiB), a top array sized for the guest (1 TiB: 1024
 * pointers). A guest that touched one page costs one top array, one
 * directory and one leaf. */
#define PT_LEAF_BITS 9
#define PT_DIR_BITS  9
#define PT_LEAF_N    (1u << PT_LEAF_BITS)
#define PT_DIR_N     (1u << PT_DIR_BITS)

/* ---- frames ------------------------------------------------------------
 * Frame n is bytes [n * 4096, (n + 1) * 4096) of the frame store.
 *
 * Invariants (checked by host_check):
 *  - refs == 0  <=> the frame is on the free list, pins == 0, slot == NONE;
 *  - refs == number of page table entries PTE_FRAME(n); the first mapper is
 *    (g, idx), further ones (shared frames) are in more[0 .. refs - 2];
 *  - slot != SLOT_NONE: that slot holds exactly the frame's content and
 *    this frame holds one reference on it (the page is clean);
 *  - pins > 0: the pager and the dedup scanner leave the frame alone.
 */
enum {
	F_REF   = 0x1,   /* referenced since the clock hand last passed */
	F_FRESH = 0x2,   /* never used since the store was created: reads as zeros */
	F_BUSY  = 0x4,   /* taken by the pager for the batch in progress */
};

struct rmap {
	struct umlmem_guest *g;
	uint64_t idx;
};

struct frame {
	uint64_t slot;          /* clean copy in swap, or SLOT_NONE */
	struct umlmem_guest *g; /* first mapper */
	uint64_t idx;           /* its page index */
	struct rmap *more;      /* further mappers of a shared frame (refs - 1) */
	uint32_t refs;
	uint32_t pins;
	uint32_t flags;
};

/* ---- counters ----------------------------------------------------------
 * One table: the name of each counter in struct umlmem_stats that the
 * library counts as events (the page-state counts are kept apart). */
#define UMLMEM_EVENT_COUNTERS(X) \
	X(faults) X(swap_ins) X(swap_outs) X(cow_breaks) X(io_errors) X(checksum_errors)

struct counters {
#define X(n) uint64_t n;
	UMLMEM_EVENT_COUNTERS(X)
#undef X
};

/* ---- guest -------------------------------------------------------------- */
struct umlmem_guest {
	struct umlmem_host *host;
	struct umlmem_guest *prev, *next;   /* host's guest list, under host->lock */
	uint64_t ram_bytes;
	uint64_t npages;
	uint32_t merge_domain;
	unsigned flags;
	char name[64];
	/* page table, under host->lock */
	pte_t ***top;          /* top[i][j][k]: entry of page (i << 18 | j << 9 | k) */
	uint64_t ntop;
	uint64_t meta_bytes;   /* bytes of page table allocated */
	/* page-state counts, under host->lock; resident + swapped + zero == npages */
	uint64_t resident, swapped, zero;
	struct counters ev;
};

/* ---- host --------------------------------------------------------------- */
struct umlmem_host {
	/* Protects everything below that is not marked otherwise, and every
	   guest's page table and counters. Taken before swap->lock. */
	pthread_mutex_t lock;
	pthread_cond_t cond;          /* PTE_BUSY waiters (reserved) */

	struct umlmem_host_config cfg;
	char swap_dir[4096];
	uint64_t nframes;

	/* frame store: fixed after create, no lock needed to compute addresses */
	int store_fd;
	uint8_t *store;
	struct frame *frames;

	/* free frames: a stack of frame numbers */
	uint32_t *free;
	uint64_t nfree;

	/* pager: CLOCK hand over frame numbers */
	uint64_t hand;

	struct swap *swap;            /* own lock, leaf */
	struct io_engine *io;         /* thread-safe; fixed after create */
	char io_why[256];

	struct umlmem_guest *guests;  /* list head */
	uint64_t nguests;
	uint64_t ram_pages;           /* sum over live guests */
	struct counters ev;           /* host-wide, including destroyed guests */

	/* the pager's batch (cfg.reclaim_batch entries each) */
	uint64_t *pv;                 /* victim frames */
	uint64_t *pslot;              /* their new slots */
	uint64_t *pcsum;              /* checksums of what is written */
	struct io_req *preq;
};

/* ---- host.c ------------------------------------------------------------- */
/* Record the calling thread's message for umlmem_errmsg(); returns err. */
int  seterr(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void clearerr_tls(void);
static inline void *frame_addr(const struct umlmem_host *h, uint64_t f)
{
	return h->store + (f << PAGE_SHIFT);
}

/* ---- frames.c ----------------------------------------------------------- */
int  frames_init(struct umlmem_host *h);
void frames_fini(struct umlmem_host *h);
/* Takes a free frame, evicting a batch first when none is free; @zero: the
   frame must read as zeros. Caller holds host->lock. -ENOMEM (all pinned),
   -ENOSPC (swap full), -EIO (write-out failed). */
int  frame_get(struct umlmem_host *h, bool zero, uint64_t *f);
/* Returns an unmapped frame (refs already 0, slot released) to the free list. */
void frame_put(struct umlmem_host *h, uint64_t f);
/* Drops the clean swap copy of frame @f (the page is about to change). */
void frame_drop_slot(struct umlmem_host *h, uint64_t f);

/* ---- guest.c ------------------------------------------------------------ */
/* Entry of page @idx; NULL when its leaf was never allocated (the entry is
   then PTE_ZERO). Caller holds host->lock. */
pte_t *pte_find(struct umlmem_guest *g, uint64_t idx);
/* Same, allocating the path; NULL only on -ENOMEM. */
pte_t *pte_alloc(struct umlmem_guest *g, uint64_t idx);
/* Calls @fn on every allocated entry that is not PTE_ZERO, in order. */
int  pt_walk(struct umlmem_guest *g, int (*fn)(struct umlmem_guest *g, uint64_t idx,
					       pte_t *e, void *arg), void *arg);

/* ---- access.c ----------------------------------------------------------- */
/* Makes page @idx resident (faulting it in as needed) and returns its frame;
   @for_write breaks sharing and drops the clean swap copy. Caller holds
   host->lock. */
int  page_fault(struct umlmem_guest *g, uint64_t idx, bool for_write, bool whole, uint64_t *f);
/* Puts page @idx back to ZERO, freeing its frame or slot. Caller holds host->lock. */
void page_zap(struct umlmem_guest *g, uint64_t idx, pte_t *e);
/* Points every mapper of frame @f at @to (a PTE_SLOT entry, whose slot
   already holds one reference per mapper, or PTE_ZERO) and frees the frame.
   Caller holds host->lock. */
void frame_unmap_all(struct umlmem_host *h, uint64_t f, pte_t to);

/* ---- pager.c ------------------------------------------------------------ */
int  pager_init(struct umlmem_host *h);
void pager_fini(struct umlmem_host *h);
/* Evicts up to @want pages (one clock pass at most per batch). Caller holds
   host->lock. Returns 0 or the first error; *done gets the pages evicted. */
int  pager_evict(struct umlmem_host *h, uint64_t want, uint64_t *done);
/* Reads slot @slot into @buf and verifies its checksum; counts swap_ins on
   @g and the host, io and checksum errors on the host. -EIO on failure. */
int  pager_read_slot(struct umlmem_host *h, struct umlmem_guest *g, uint64_t slot, void *buf);

/* ---- check.c ------------------------------------------------------------ */
/* Verifies every invariant of the host, its guests, frames and swap set;
   0, or -EUCLEAN with the first violation in @err. Takes host->lock. */
int  host_check(struct umlmem_host *h, char *err, size_t errlen);

/* ---- test access (tests/ only) ----------------------------------------- */
static inline struct io_engine *host_engine(struct umlmem_host *h) { return h->io; }
static inline struct swap *host_swap(struct umlmem_host *h) { return h->swap; }
static inline uint64_t guest_meta_bytes(struct umlmem_guest *g) { return g->meta_bytes; }

#endif
