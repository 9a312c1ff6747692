/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * umlmem internals: the objects of DESIGN.md and the prototypes of each
 * file of umlmem/, grouped by file. Only the library and its tests include
 * this header.
 *
 * Locking. Each lock is documented where it is declared; in order:
 *   host->lock   one mutex per host: page tables, frame table, free list,
 *                pager state, the swap cache (tier.c), counters. Never held
 *                across tier I/O: a page being read in is PTE_BUSY and a
 *                frame being written out is
 *                F_BUSY while the lock is dropped, and whoever needs such a
 *                page waits on host->cond.
 *   tier locks   leaf locks inside each tier (tier.h): swap->lock in the
 *                swap set (swapfiles/swap.h), the compressed pool's lock
 *                (zpool.c), the image tier's (tier_image.c); taken under
 *                host->lock by the tier calls, or alone. The pool's zstd
 *                context locks are taken with trylock only, so never
 *                waited on under another.
 *   nv_views_lock  process-wide, a leaf (native.c): taken by the native
 *                map and unmap calls under host->lock; the fork handler
 *                reads the views without it.
 *   engine locks internal to the I/O engines; taken with no umlmem lock held,
 *                but for the io_uring pool's lock, a leaf, which frames.c
 *                takes under host->lock through io_store_chunk().
 *   mmap_lock    the kernel's, of this process: taken by the mmap, madvise
 *                and userfaultfd calls of native.c, which make them under
 *                host->lock. No thread may fault on a native mapping while
 *                it holds host->lock (the handler that serves the fault
 *                needs it): the copy calls bounce user buffers that may lie
 *                in one (see native_bounce()).
 *   err (TLS)    the per-thread error message needs no lock.
 *
 * Faults first. Two kinds of threads take host->lock: foreground ones,
 * serving a guest's access (the copy and pin calls, native faults), which
 * someone is waiting for, and background work that nobody waits for: the
 * merge scanner (its thread, or a umlmem_dedup_scan() call) and the reclaim
 * thread. Background work runs in steps of one page (the scanner) or one
 * batch (reclaim), and between steps calls host_yield(): when a foreground
 * thread is blocked in host_lock() (host->lock_waiters), it lets every
 * thread that was waiting take the lock first (host->lock_entries counts
 * them in) and only then goes on. A mutex alone cannot do this: glibc's is
 * not fair, and a thread that unlocks and locks again takes the lock back
 * before a sleeping waiter has even been woken (tens of microseconds when
 * it slept on the other CPU). So a fault waits for at most one step of
 * background work, whatever the scanner's settings. The mutex is adaptive
 * (it spins a little before sleeping): most holds are a few microseconds,
 * shorter than a sleep and a wake-up.
 *
 * Why one lock. Every fault needs the frame table, the free list and the
 * pager, whatever the guest: a lock per guest alone would only move the
 * contention to those. A split that pays needs them all apart (guest page
 * tables, per-CPU free frames, the pager's hand, striped frame locks); see
 * README, "Threads and the host lock", for how far one lock goes and that
 * split. Reads of resident pages, the hottest path, take no lock at all
 * (below).
 *
 * Lock-free reads. umlmem_read() of a resident page takes no lock: it loads
 * the entry, copies from the frame and checks the guest's sequence count
 * (guest->seq) before and after. Every change that takes a frame away from
 * a page (eviction, discard, destroy) is made inside seq_begin/seq_end on
 * that page's guest, so a copy that raced with one is retried under the
 * lock. Page table nodes are published with release stores and never freed
 * while the guest lives; entries are written with atomic stores.
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
#include "dedup.h"
#include "tier.h"

#define PAGE_SHIFT 12
#define PAGE_SIZE  UMLMEM_PAGE_SIZE

/* Accesses to data that lock-free readers see. */
#define LOAD(p)         __atomic_load_n((p), __ATOMIC_RELAXED)
#define LOAD_ACQ(p)     __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define STORE(p, v)     __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define STORE_REL(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)

/* Debug level: 1 checks invariants (host_check) at the end of every
   mutating call; 0 (default) only when a test asks. */
#ifndef UMLMEM_DEBUG
#define UMLMEM_DEBUG 0
#endif

/* ---- page table entries ------------------------------------------------
 * One 64-bit entry per guest page; the low two bits say what it is and the
 * rest is the payload:
 *   PTE_ZERO   0                no frame, no stored copy: reads as zeros
 *   PTE_FRAME  frame << 2 | 1   content in frame (private or shared)
 *   PTE_STORED key << 2 | 2     content only in a tier below the frames: the
 *                               store key (tier, handle) of tier.h
 *   PTE_BUSY   3                being read in from a tier; waiters sleep on host->cond
 * Its transitions (tier.c says who makes each and why):
 *
 *            write, pin                              evict dirty: tier store
 *   ZERO ------------------------------> FRAME f ----------------------+
 *    ^  <------------------------------   ^   ^  evict clean: no I/O   |
 *    |   discard, destroy, zeros          |   |                        v
 *    |   merged or evicted     load verified  +-- key cached in a -- STORED
 *    |                                    |       frame: map          (tier, handle)
 *    |                                  BUSY <------- fault ---------- |  ^
 *    |                                    +------- load failed: -EIO --|--+
 *    +---------- discard, destroy: the handle's reference released ----+
 *
 * A zero-filled leaf is all PTE_ZERO, so lazily allocated chunks need no
 * initialisation beyond calloc.
 */
typedef uint64_t pte_t;
enum { PTE_ZERO = 0, PTE_FRAME = 1, PTE_STORED = 2, PTE_BUSY = 3 };
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
 *  - refs == 0 and slot == TKEY_NONE <=> the frame is on the free list (or
 *    being read into, F_BUSY); refs == 0 and slot != TKEY_NONE: a cached
 *    copy that no page maps yet (read ahead), evictable at no cost;
 *  - refs == number of page table entries PTE_FRAME(n); the first mapper is
 *    (g, idx), further ones (shared frames) are in rmap_more(h, n)[0 ..
 *    refs - 2], which exists exactly when refs > 1;
 *  - slot != TKEY_NONE: the store key (tier, handle) whose content is
 *    exactly the frame's; this frame holds one reference on it (the page
 *    is clean), and the swap cache (tier.c) names this frame for that key
 *    and names no frame for any other key;
 *  - pins > 0: the pager and the dedup scanner leave the frame alone;
 *  - F_BUSY with refs > 0: being written out; its content must not change
 *    (writers, pinners, discard wait), readers may still copy from it.
 * The referenced bit lives apart, in host->fref (frame_ref), because
 * lock-free readers set it.
 *
 * Size. The table is metadata of every frame in use, so the entry is kept
 * to 32 bytes: with the referenced bit and a page table entry, 40.1 bytes
 * per 4 KiB frame, 0.98% of it. The page index, the flags, the first
 * mapper's native state and the merge scanner's two volatility hints share
 * one word (a page index is below UMLMEM_MAX_GUEST_BYTES >> PAGE_SHIFT =
 * 2^35; the hints keep a few low bits, which only ever delays or hastens a
 * merge, see frame_written_lately), and the further mappers of shared
 * frames, which few frames have, live in a side table (access.c,
 * rmap_more) rather than a pointer in every entry.
 */
/*
 * A frame's states, as its fields and flags tell them (the pager's sets
 * inside MAPPED are drawn in pager.c):
 *
 *   never used: [nmade, nframes), F_FRESH
 *        | frame_get
 *        v
 *   FREE: refs 0, slot NONE, on the free stack; warm (holds memory) or,
 *   | ^   past the hysteresis band, cold (punched: F_FRESH)
 *   | |
 *   | +--- discard, destroy, evict clean (no I/O), write-out done,
 *   |      failed load, a cached copy evicted, the pool giving one back
 *   |
 *   +--> POOL: F_POOL, lent to the compressed pool (zpool.c)
 *   +--> READ-IN: F_BUSY, refs 0 --loaded--> CACHED: refs 0, slot set
 *   |                                        (F_RA while read ahead, unused)
 *   |                                          | a fault maps it
 *   +--> MAPPED: refs >= 1  <------------------+
 *        slot NONE (dirty) or set (clean copy); F_SMALL, or F_ACTIVE with
 *        F_FREQ, in the pager's sets, or F_WRITTEN; F_NV, F_STABLE
 *        (merged) beside
 *          | evict dirty                    ^
 *          v                                | write failed: nothing lost
 *        WRITE-OUT: F_BUSY, refs >= 1 ------+
 *          | stored
 *          v
 *        MAPPED, clean, F_WRITTEN ---- a frame is needed: every mapper
 *          (a clean victim chosen          now PTE_STORED --> FREE
 *          comes here at once)         (at once for a page the pool
 *                                      compressed: its copy took frames)
 */
enum {
	F_FRESH = 0x1,   /* never used since the store was created: reads as zeros */
	F_BUSY  = 0x2,   /* owned by an I/O in flight: a write-out (refs > 0) or a
			    read-in (refs == 0, off the free list) */
	F_STABLE = 0x4,  /* shared by the merge scanner, in its stable index;
			    cleared when refs falls to 1 */
	F_ACTIVE = 0x8,  /* in the pager's main set (see pager.c) */
	F_NV    = 0x10,  /* some mapper may have it present in a native mapping
			    (NV_LIVE); clear: none has (see native.c) */
	F_POOL  = 0x20,  /* lent to a tier that keeps its data in frames (the
			    compressed pool, zpool.c): no mapper, no copy, not
			    free; only that tier touches its bytes */
	F_SMALL = 0x40,  /* has an entry in the pager's small FIFO (pager.c) */
	F_FREQ  = 0x180, /* a main frame's uses seen by the hand, 0 to 3 */
	F_RA    = 0x200, /* a copy read ahead, unused yet, with an entry in the
			    pager's readahead FIFO (pager.c) */
	F_WRITTEN = 0x400, /* chosen by the pager and made clean (written out if
			    it was dirty), still mapped: waits in its written
			    FIFO until a frame is needed (pager.c); F_FREQ 1
			    meanwhile marks a page that leaves the small FIFO */
};
#define F_FREQ_SHIFT 7

/* Native-mapping state of one mapper (g, idx) of a frame, kept beside the
   mapper in the frame (nv) or its rmap entry; 0 when g is not mapped.
   NV_RW implies NV_LIVE implies NV_MAPPED, and NV_RW implies the frame is
   private, has no clean swap copy and is not under write-out (host_check). */
enum {
	NV_MAPPED = 0x1, /* the mapping of page idx is a view of this frame */
	NV_LIVE   = 0x2, /* its page table entry may be present: accesses are
			    not seen; a zap makes the next one fault */
	NV_RW     = 0x4, /* ... and writable */
};

/* host->nv_state: see struct umlmem_host. */
enum { NV_OFF = 0, NV_ON, NV_STOPPING };

/* Readahead: a load that continues a run of faults on ascending handles of
   one tier (each within RA_GAP of the last) also reads the next live
   handles, RA_MIN at the start of a run, doubling per fault up to RA_MAX,
   into frames that stay unmapped in the swap cache until their page is
   faulted. */
#define RA_GAP 8
#define RA_MIN 8
#define RA_MAX 64

struct ra_page {
	uint64_t f, key;        /* frame, store key read into it */
};

/* A ring of frame numbers, cap (a power of two, or 0) entries, head <= i <
   tail taken modulo cap (pager.c). */
struct pager_fifo {
	uint32_t *e;
	uint64_t head, tail, cap;
};

struct rmap {
	struct umlmem_guest *g;
	uint64_t idx : 40;      /* a page index, as frame.idx */
	uint64_t nv : 8;        /* NV_* of this mapper */
};

struct frame {
	uint64_t slot;          /* store key of a clean copy below, or TKEY_NONE */
	struct umlmem_guest *g; /* first mapper */
	uint64_t idx : 35;      /* its page index */
	uint64_t flags : 11;    /* F_* */
	uint64_t nv : 3;        /* NV_* of the first mapper (g, idx) */
	uint64_t wpass : 8;     /* merge pass of the last write, its low 8 bits
				   (frame_written_lately; dedup volatility) */
	uint64_t nvsum : 7;     /* 7 bits of its hash at the merge scanner's last
				   visit while writable in a native view (dedup
				   volatility) */
	uint32_t refs;
	uint32_t pins;
};
_Static_assert(sizeof(struct frame) == 32, "struct frame: 32 bytes, see Size above");
_Static_assert((F_SMALL | F_FREQ | F_RA | F_WRITTEN) < (1u << 11), "every F_* flag fits frame.flags");
_Static_assert((UMLMEM_MAX_GUEST_BYTES >> PAGE_SHIFT) <= (UINT64_C(1) << 35),
	       "a page index fits frame.idx");
#define FRAME_NVSUM_MASK 0x7fu

/* One frame's further mappers, in the side table indexed by frame
   (access.c); meaningful only while the frame has refs > 1. */
struct rmap_ent {
	union {
		struct rmap one;    /* refs == 2: the one further mapper */
		struct rmap *more;  /* refs > 2: its mappers but the first,
					   refs - 1 of them */
	};
};
_Static_assert(sizeof(struct rmap_ent) == 16, "struct rmap_ent: 16 bytes a frame");

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
	/* Odd while a frame is being taken away from one of this guest's pages;
	   lock-free readers retry when it moved. Written under host->lock. */
	uint32_t seq;
	uint32_t merge_domain;
	unsigned flags;
	char name[64];
	/* page table, under host->lock */
	pte_t ***top;          /* top[i][j][k]: entry of page (i << 18 | j << 9 | k) */
	uint64_t ntop;
	uint64_t meta_bytes;   /* bytes of page table allocated */
	/* leaves allocated together (pt_alloc_like), freed with the guest */
	pte_t *pt_block;
	uint64_t pt_block_bytes;
	/* page-state counts, under host->lock; resident + swapped + zero == npages */
	uint64_t resident, swapped, zero;
	struct counters ev;
	/* native mapping (native.c): [nv_base, nv_base + ram_bytes) or NULL;
	   under host->lock */
	uint8_t *nv_base;
	/* handler threads serving a fault on this guest that may drop the
	   lock; destroy waits for none (host->cond), under host->lock */
	uint32_t nv_serving;
	/* its number on the host, in order of creation: names its pages in
	   the pager's ghost set (pager.c), so that the pager's choices do not
	   depend on where the guest was allocated */
	uint64_t pager_id;
	/* readahead state, under host->lock */
	uint64_t ra_last;      /* store key of the last load */
	unsigned ra_run;       /* faults in the current ascending run */
	/* working-set record (umlmem_guest_record, snapshot.c), under
	   host->lock: the first rec_n of the pages loaded from a tier while
	   rec_on, at most rec_max */
	bool rec_on;
	uint64_t *rec, rec_n, rec_max;
};

/* ---- host --------------------------------------------------------------- */
struct umlmem_host {
	/* Protects everything below that is not marked otherwise, and every
	   guest's page table and counters. Taken before swap->lock. */
	pthread_mutex_t lock;
	/* Broadcast (under lock) when an I/O completes: PTE_BUSY entries and
	   F_BUSY frames have changed state. */
	pthread_cond_t cond;
	/* Faults first (see "Faults first" above). lock_waiters: threads
	   blocked in host_lock(), atomic, changed without the lock. The rest
	   under lock: lock_entries counts acquisitions through host_lock();
	   yielders are background threads in host_yield(), sleeping on
	   yield_cond, which host_lock() broadcasts while there are any. */
	uint32_t lock_waiters;
	uint32_t yielders;
	uint64_t lock_entries;
	pthread_cond_t yield_cond;
	uint64_t yields;              /* host_yield() calls that let someone in */

	struct umlmem_host_config cfg;
	char swap_dir[4096];
	uint64_t nframes;

	/* frame store: fixed after create, no lock needed to compute addresses.
	   The tables are reserved for the whole budget and never move; only
	   entries of frames [0, nmade) were ever written (frames.c). */
	int store_fd;
	uint8_t *store;
	struct frame *frames;
	uint64_t *fref;               /* referenced bits, one per frame (frame_ref) */

	/* Free frames (frames.c): the stack free[0 .. nstack), whose bottom
	   free[0 .. npunched) was given back to the kernel (cold, F_FRESH) and
	   the rest still holds memory (warm, newest on top), and the frames
	   never used, [nmade, nframes). nfree = nstack + nframes - nmade;
	   the ntrim frames being given back are on no list. */
	uint32_t *free;
	uint64_t nfree;
	uint64_t nstack, npunched, nmade;
	uint64_t nstack_max;          /* the stack's deepest: its pages touched */
	uint64_t ntrim;
	uint64_t trim_lo, trim_hi;    /* warm frames kept below the budget */
	uint64_t frames_returned;     /* frames given back, ever */
	/* Per chunk of FRAME_CHUNK frames: how many are cold, and CHUNK_GONE
	   once all are and the chunk's frame table entries were given back
	   too (they read as zeros until a frame of it is taken again). */
	uint16_t *chunk;
	uint64_t chunks_gone;
	/* Per registration chunk of 1 << rshift frames (io_store_chunk): its
	   frames that hold memory, made and not given back. The engine has the
	   chunk registered exactly while all of them do. */
	uint32_t *backed;
	unsigned rshift;
	bool trim_due;                /* frames_trim has work; atomic (read unlocked) */
	bool no_punch;                /* the store cannot punch holes: keep all warm */
	int self_pidfd;               /* for process_madvise; -1: not available */
#define FRAMES_TRIM_BATCH 1024u
	uint32_t trim_buf[FRAMES_TRIM_BATCH]; /* the batch being given back,
						 when a larger one cannot be had */

	/* pager: CLOCK hand over frame numbers */
	uint64_t hand;
	uint64_t busy_frames;         /* F_BUSY frames: I/O in flight on them */
	uint64_t nactive;             /* F_ACTIVE frames */
	/* pager policy (pager.c): the ghost set of evicted pages (size a
	   power of two, mask = size - 1), the frames evicted so far (its
	   clock), and the refaults it activated */
	uint64_t *ghost, ghost_mask;
	/* the small FIFO (frames faulted in), the readahead FIFO (copies
	   read ahead, unused yet) and the written FIFO (victims made clean,
	   still mapped, F_WRITTEN: nwritten of them): frame numbers in the
	   order they came in */
	struct pager_fifo small, rafifo, written;
	uint64_t nwritten;
	uint64_t evictions;
	uint64_t refaults;
	uint64_t guests_made;         /* guests linked so far: the next pager_id */
	uint32_t restoring;           /* restores between taking their image's
					 references and linking their guest
					 (snapshot.c): host_check skips the
					 reference counts while it is not 0 */
	uint64_t cached;              /* frames with refs 0 and a slot: read ahead */
	uint64_t shared_frames;       /* frames with refs > 1 */
	/* their further mappers, indexed by frame: nframes entries, NULL
	   before the first sharing (access.c) */
	struct rmap_ent *rmore;
	uint64_t sharing_pages;       /* sum of refs - 1 over them */
	struct dedup dd;              /* the merge scanner (dedup/scan.c) */
	uint64_t ra_pages, ra_hits;   /* pages read ahead; faults they served */
	/* background reclaim (UMLMEM_BACKGROUND): keeps nfree in [low, high] */
	uint64_t low, high;
	pthread_t kthread;
	bool kthread_on, kthread_stop, kthread_idle;
	pthread_cond_t kcond;         /* wakes the reclaim thread; with lock */
	uint64_t kwakeups;

	struct swap *swap;            /* own lock, leaf; the swap tier's */
	struct io_engine *io;         /* thread-safe; fixed after create */
	/* the tiers below the frames by id (tier.h), fixed after create; the
	   pager writes out to tier_out */
	struct tier *tier[TIER_MAX];
	struct tier *tier_out;
	/* the swap cache: store key -> frame + 1 (tier.c), under lock */
	struct tc_ent *tc;
	uint64_t tc_mask, tc_n;
	char io_why[256];

	struct umlmem_guest *guests;  /* list head */
	uint64_t nguests;
	uint64_t ram_pages;           /* sum over live guests */
	struct counters ev;           /* host-wide, including destroyed guests */

	/* native mode (native.c), under lock unless marked */
	/* NV_OFF: no handler, uffd -1; NV_ON: handlers serve uffd; NV_STOPPING:
	   the thread that set it (native_stop()) joins the handlers and closes
	   uffd and nv_stopfd with the lock dropped, and alone touches them;
	   umlmem_guest_map() waits on cond until NV_OFF. */
	unsigned nv_state;
	int uffd;                     /* -1 until the first guest is mapped */
	int nv_stopfd;                /* eventfd that stops the handler threads */
	unsigned nv_nthreads;
	pthread_t nv_threads[8];
	uint64_t nv_guests;           /* guests mapped now */
	uint64_t nv_vmas;             /* mappings this host's views may have added */
	uint64_t nv_faults, nv_maps, nv_zaps, nv_flushes;
	uint64_t nv_cpu_sampled, nv_cpu_local;

};

/* Takes host->lock for a foreground thread (one serving an access): a
   thread that finds it held is counted in lock_waiters while it waits, so
   that background work steps aside (host_yield). */
static inline void host_lock(struct umlmem_host *h)
{
	if (pthread_mutex_trylock(&h->lock)) {
		__atomic_add_fetch(&h->lock_waiters, 1, __ATOMIC_RELAXED);
		pthread_mutex_lock(&h->lock);
		__atomic_sub_fetch(&h->lock_waiters, 1, __ATOMIC_RELAXED);
	}
	h->lock_entries++;
	if (h->yielders)
		pthread_cond_broadcast(&h->yield_cond);
}

static inline void host_unlock(struct umlmem_host *h)
{
	pthread_mutex_unlock(&h->lock);
}

/* The odd count is visible before the entry changes: the release fence
   pairs with the acquire fence read_fast() (access.c) puts between its copy
   and its second load of the count. */
static inline void seq_begin(struct umlmem_guest *g)
{
	STORE(&g->seq, g->seq + 1);
	__atomic_thread_fence(__ATOMIC_RELEASE);
}

/* The changed entry is visible before the even count: pairs with
   read_fast()'s first, acquire load of the count. */
static inline void seq_end(struct umlmem_guest *g)
{
	STORE_REL(&g->seq, g->seq + 1);
}

/* Sets entry @e of guest @g; a change that takes a frame away is bracketed
   by the guest's sequence count. Caller holds host->lock. */
static inline void pte_set(struct umlmem_guest *g, pte_t *e, pte_t v)
{
	if (PTE_TYPE(*e) == PTE_FRAME && *e != v) {
		seq_begin(g);
		STORE(e, v);
		seq_end(g);
	} else {
		STORE(e, v);
	}
}

/* ---- native.c ------------------------------------------------------------ */
/* Takes the page table entry of page idx out of g's native mapping, so that
   the next access faults. Caller holds host->lock. */
void native_zap(struct umlmem_guest *g, uint64_t idx);
/* Takes every page table entry of g's native view (if any) out with one
   call: afterwards each access faults. The caller clears the NV_LIVE and
   NV_RW bits it relies on. Caller holds host->lock. */
void native_zap_view(struct umlmem_guest *g);
/* Zaps every NV_LIVE mapper of frame @f: afterwards no native access can
   change or read it without a fault. Caller holds host->lock. */
void native_quiesce(struct umlmem_host *h, uint64_t f);
/* True when some mapper has frame @f writable in a native view: stores to
   it are not seen. Caller holds host->lock. */
bool native_writable(struct umlmem_host *h, uint64_t f);
/* Unmaps g's native view, if any. Caller holds host->lock; returns true
   when it was the host's last mapped guest: the host is then NV_STOPPING,
   and the caller must call native_stop() once the lock is dropped. */
bool native_unmap_locked(struct umlmem_guest *g);
/* Stops the handler threads when the host is NV_STOPPING (only the caller
   that made it so calls it), else does nothing. No lock held. */
void native_stop(struct umlmem_host *h);
/* Test hook: each step of native.c that can fail for want of a resource
   asks it first; a negative errno makes the step fail with it. */
enum native_step { NV_STEP_THREAD, NV_STEP_PLACEHOLDER, NV_STEP_MREMAP };
extern int (*native_fail_hook)(enum native_step step);
/* Test hook: called by native_stop() before it stops anything. */
extern void (*native_stop_hook)(struct umlmem_host *h);
/* True when a user buffer of a copy call must be bounced through a page of
   the caller's stack before host->lock is taken: some guest of the process
   is mapped, and the buffer might lie in its view. */
bool native_bounce(void);
/* Test hook: the number of mappings umlmem may add to the process, in
   place of the one derived from vm.max_map_count (0: derive). */
extern uint64_t native_map_limit_override;
/* The mappings umlmem allows itself in this process (0 before a map). */
uint64_t native_map_limit(void);

/* Frame table chunks (frames.c): FRAME_CHUNK entries fill whole pages. */
#define FRAME_CHUNK_SHIFT 9
#define FRAME_CHUNK (1u << FRAME_CHUNK_SHIFT)
#define CHUNK_GONE 0x8000u

/* True when frame @f's table entry was given back with its chunk's: the
   frame is free and cold, its entry reads as zeros, and a walk of the
   frame table skips to the next chunk. Caller holds host->lock. */
static inline bool frame_gone(const struct umlmem_host *h, uint64_t f)
{
	return h->chunk[f >> FRAME_CHUNK_SHIFT] & CHUNK_GONE;
}

/* Whether frame @f was written during the merge scanner's current pass or
   the one before: then it is too volatile to merge. wpass keeps the pass's
   low 8 bits, so a frame unwritten for 254 passes looks written lately for
   2 passes in 256, which only delays its merge by those. Caller holds
   host->lock. */
static inline bool frame_written_lately(const struct umlmem_host *h, uint64_t f)
{
	return (uint8_t)(h->dd.pass - h->frames[f].wpass) <= 1;
}

/* The referenced bits: bit f % 64 of host->fref[f / 64] says frame f was
   used since the pager last looked. Lock-free readers set them
   (frame_touch) while the lock holder tests and clears neighbours, so every
   change is an atomic read-modify-write of the word, made only when the
   bit changes: a hit on a page already marked only loads. */
static inline bool frame_ref(const struct umlmem_host *h, uint64_t f)
{
	return LOAD(&h->fref[f >> 6]) >> (f & 63) & 1;
}

static inline void frame_ref_set(struct umlmem_host *h, uint64_t f, bool on)
{
	uint64_t bit = UINT64_C(1) << (f & 63);

	if (!(LOAD(&h->fref[f >> 6]) & bit) == !on)
		return;
	if (on)
		__atomic_fetch_or(&h->fref[f >> 6], bit, __ATOMIC_RELAXED);
	else
		__atomic_fetch_and(&h->fref[f >> 6], ~bit, __ATOMIC_RELAXED);
}

static inline void frame_touch(struct umlmem_host *h, uint64_t f)
{
	frame_ref_set(h, f, true);
}

/* ---- host.c ------------------------------------------------------------- */
/* Record the calling thread's message for umlmem_errmsg(); returns err. */
int  seterr(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void clearerr_tls(void);
/* Ends every public call that may change @h (NULL: none left): a success
   (@rc 0) empties the thread's message, so umlmem_errmsg() is "" after a
   success and describes the failure after a failure, whatever failed and
   was recovered inside the call; with UMLMEM_DEBUG, every invariant of @h
   is checked (host_check) and a violation aborts with its message.
   Returns @rc. Caller holds no lock. */
int  api_done(struct umlmem_host *h, int rc);
static inline void *frame_addr(const struct umlmem_host *h, uint64_t f)
{
	return h->store + (f << PAGE_SHIFT);
}

/* ---- abi.c -------------------------------------------------------------- */
/* The sizes of the structs of the 0.1 header, up to the end of their last
   field (tail padding left out: a later field may take its place): the
   smallest config a caller may pass, and what the 0.1 entry points take a
   struct to be. */
#define ABI_HOST_CONFIG_SIZE_0_1  68u
#define ABI_GUEST_CONFIG_SIZE_0_1 24u
#define ABI_STATS_SIZE_0_1        112u
/* Copies the caller's struct @what (@usize bytes at @u) into the library's
   (@ksize bytes at @k, holding the defaults): the fields the caller lacks
   keep them. Returns 0, or -EINVAL with a message when @usize is below
   @min, or when the caller's struct is larger and a byte beyond @ksize is
   not zero. Never reads beyond @usize bytes of @u. */
int  abi_copy_in(void *k, size_t ksize, const void *u, size_t usize, size_t min,
		 const char *what);
/* Copies the library's struct (@ksize bytes at @k) out to the caller's
   (@usize bytes at @u): as much as both have, then zeros beyond @ksize. */
void abi_copy_out(void *u, size_t usize, const void *k, size_t ksize);

/* ---- frames.c ----------------------------------------------------------- */
int  frames_init(struct umlmem_host *h);
void frames_fini(struct umlmem_host *h);
/* Takes a free frame into *f (@zero: it must read as zeros) and returns 0.
   When none is free it reclaims a batch, dropping host->lock during the
   write-out, and returns -EAGAIN: the caller must look at its page again.
   When nothing could be freed: -ENOMEM (all pinned), -ENOSPC (swap full),
   -EIO (write-out failed). Caller holds host->lock. */
int  frame_get(struct umlmem_host *h, bool zero, uint64_t *f);
/* Sleeps on host->cond until an I/O completes. Caller holds host->lock. */
void host_wait(struct umlmem_host *h);
/* Initialises @c for timed waits on CLOCK_MONOTONIC, so that a change of the
   wall clock neither stretches nor cuts a background thread's sleep; with
   cond_deadline(), the deadline @ns from now on that clock. */
int  cond_init_monotonic(pthread_cond_t *c);
void cond_deadline(struct timespec *ts, uint64_t ns);
/* Background work between two steps: if foreground threads are waiting for
   host->lock, sleeps (lock dropped) until each of them has had it. Caller
   holds host->lock and nothing of its own that those threads could need
   (no PTE_BUSY entry, no F_BUSY frame). Returns true when it let someone in. */
bool host_yield(struct umlmem_host *h);
/* Takes a free frame, never reclaiming: -ENOMEM when none is free. */
int  frame_take(struct umlmem_host *h, uint64_t *f);
/* Frame @f now holds a clean copy of store key @k, and holds a reference
   on it; the swap cache names @f for @k. */
void frame_set_slot(struct umlmem_host *h, uint64_t f, uint64_t k);
/* Returns an unmapped frame (refs already 0, slot released) to the free list. */
void frame_put(struct umlmem_host *h, uint64_t f);
/* Drops the clean stored copy of frame @f (the page is about to change). */
void frame_drop_slot(struct umlmem_host *h, uint64_t f);
/* Gives the oldest warm free frames back to the kernel while trim_due()
   says so, a batch at a time. Caller holds host->lock, which is dropped
   while a batch is punched; frames_trim() takes it, and returns at once
   when there is nothing to do. Call them where frames were freed, off the
   fault path: the end of a public call, the background threads. */
void frames_trim_locked(struct umlmem_host *h);
void frames_trim(struct umlmem_host *h);
/* Bytes of the frame table, referenced bytes and free stack in use. */
uint64_t frames_meta_bytes(const struct umlmem_host *h);
/* Gives the store to the I/O engine, which registers it by chunks as they
   fill (io_engine_store); after the engine is made, before any guest. */
int  frames_register(struct umlmem_host *h);
/* Frames in registration chunk @c (the last one may be short). */
static inline uint64_t frames_rchunk(const struct umlmem_host *h, uint64_t c)
{
	uint64_t first = c << h->rshift, n = UINT64_C(1) << h->rshift;

	return h->nframes - first < n ? h->nframes - first : n;
}

/* ---- guest.c ------------------------------------------------------------ */
/* Entry of page @idx; NULL when its leaf was never allocated (the entry is
   then PTE_ZERO). Safe without host->lock (nodes are published with release
   stores and live as long as the guest). */
pte_t *pte_find(struct umlmem_guest *g, uint64_t idx);
/* Same, allocating the path; NULL only on -ENOMEM. */
pte_t *pte_alloc(struct umlmem_guest *g, uint64_t idx);
/* A new guest of configuration @cfg (checked; -EINVAL with a message when
   it is not valid, -ENOMEM), on no list yet: its page table is empty. */
int  guest_alloc(struct umlmem_host *h, const struct umlmem_guest_config *cfg,
		 struct umlmem_guest **out);
/* Puts @g on its host's guest list. Caller holds host->lock. */
void guest_link(struct umlmem_guest *g);
/* Frees @g and its page table, which maps nothing any more; @g is on no
   list. */
void guest_free(struct umlmem_guest *g);
/* Gives @dst, whose page table is empty, a leaf wherever @src has one, all
   of them in one allocation (meta_alloc), which @dst keeps until it is
   freed; -ENOMEM. Caller holds host->lock. */
int  pt_alloc_like(struct umlmem_guest *dst, const struct umlmem_guest *src);
/* Large zeroed metadata (tables, page-table leaves of a clone): @bytes of
   them from the allocator when below 256 KiB, otherwise in a mapping of
   their own, rounded up to 2 MiB and advised for transparent huge pages,
   so that their first touch costs a page fault per 2 MiB rather than per
   4 KiB. meta_free takes the same @bytes. NULL when there is no memory. */
void *meta_alloc(size_t bytes);
void  meta_free(void *p, size_t bytes);
/* Calls @fn on every allocated entry that is not PTE_ZERO, in order. */
int  pt_walk(struct umlmem_guest *g, int (*fn)(struct umlmem_guest *g, uint64_t idx,
					       pte_t *e, void *arg), void *arg);

/* ---- access.c ----------------------------------------------------------- */
/* Makes page @idx resident (faulting it in as needed) and returns its frame;
   @for_write breaks sharing and drops the clean swap copy. Caller holds
   host->lock; it may be dropped and retaken while waiting for I/O. */
int  page_fault(struct umlmem_guest *g, uint64_t idx, bool for_write, bool whole, uint64_t *f);
/* Puts page @idx back to ZERO, freeing its frame or stored copy. Caller
   holds host->lock. */
void page_zap(struct umlmem_guest *g, uint64_t idx, pte_t *e);
/* Adds mapper (g, idx) to frame @f: the first in the frame itself, any
   further one (a shared frame) in its side table (rmap_more); keeps the sharing counts.
   -ENOMEM only for a further one. Caller holds host->lock. */
int  rmap_add(struct umlmem_host *h, uint64_t f, struct umlmem_guest *g, uint64_t idx);
/* Removes mapper (g, idx) of frame @f. Caller holds host->lock. */
void rmap_del(struct umlmem_host *h, uint64_t f, struct umlmem_guest *g, uint64_t idx);
/* The further mappers of frame @f (refs - 1 of them), NULL when it has
   none. Caller holds host->lock. */
struct rmap *rmap_more(const struct umlmem_host *h, uint64_t f);
/* Frees the side table at host destroy; its bytes for meta_bytes. */
void rmap_fini(struct umlmem_host *h);
uint64_t rmap_table_bytes(const struct umlmem_host *h);
/* Zaps every page of [a, b) once none is under I/O (waiting for it);
   -EBUSY, with nothing zapped, if one is pinned and !@force. Caller holds
   host->lock. */
int  range_zap(struct umlmem_guest *g, uint64_t a, uint64_t b, bool force);
/* Completes the read of a frame given to key @ra->key ahead of any fault
   (readahead, prefetch): verified (@res 0), it stays cached for the page
   that wants it; otherwise it is freed. Caller holds host->lock. */
void readahead_finish(struct umlmem_host *h, struct ra_page *ra, int res);
/* Points every mapper of frame @f at @to (a PTE_STORED entry, whose key
   already holds one reference per mapper, or PTE_ZERO) and frees the frame.
   Caller holds host->lock. */
void frame_unmap_all(struct umlmem_host *h, uint64_t f, pte_t to);

/* ---- snapshot.c ---------------------------------------------------------- */
/* Page @idx of @g was just loaded from a tier: recorded while g->rec_on.
   Caller holds host->lock. */
void guest_record_load(struct umlmem_guest *g, uint64_t idx);

/* ---- pager.c ------------------------------------------------------------ */
/* Frees up to @want frames by eviction: victims already written first,
   then a batch chosen and written, of which the frames not wanted stay
   mapped, clean, until the next call. Caller holds host->lock, which is
   dropped during write-outs. Returns 0 or the first error; *done gets the
   frames freed, *pages (may be NULL) the guest pages that left memory
   (fewer when cached copies were dropped, more when a shared frame was). */
int  pager_evict(struct umlmem_host *h, uint64_t want, uint64_t *done, uint64_t *pages);
/* What a fault that found no free frame asks pager_evict for: one frame,
   or a whole batch on a host whose pool needs the batch's frames. */
unsigned pager_fault_want(const struct umlmem_host *h);
/* Frees up to @want frames of victims already written (none is chosen or
   written now). Caller holds host->lock, which an absorbing tier's call
   drops. Returns the frames freed. */
uint64_t pager_drop_written(struct umlmem_host *h, uint64_t want);
/* Counts the outcome @rc of a tier load for page of @g on @g and the host
   and words the error, naming where key @k is (tier_where): -EBADMSG
   (content not proven) is a checksum error, any other failure an I/O
   error; both return -EIO. Caller holds host->lock. */
int  pager_count_read(struct umlmem_host *h, struct umlmem_guest *g, uint64_t k, int rc);
/* Page @idx of @g has just been faulted into frame @f: if the pager
   evicted it unused from its small FIFO recently, it enters the main set
   at once; otherwise it joins the small FIFO. Caller holds host->lock. */
void pager_refault(struct umlmem_host *h, struct umlmem_guest *g, uint64_t idx, uint64_t f);
/* Frame @f now holds a copy read ahead, unused yet: it joins the readahead
   FIFO, whose frames are the first to go. Caller holds host->lock. */
void pager_readahead(struct umlmem_host *h, uint64_t f);
/* The most pages a readahead of @win pages may take now: free frames and
   victims already written (pager_drop_written frees them). Caller holds
   host->lock. */
unsigned pager_ra_window(struct umlmem_host *h, unsigned win);
/* Starts and stops the background reclaim thread. */
bool page_is_zero(const uint8_t *p);
int  pager_start(struct umlmem_host *h);
void pager_stop(struct umlmem_host *h);
/* Called after a frame was taken: wakes the reclaim thread below the low
   watermark. Caller holds host->lock. */
void pager_kick(struct umlmem_host *h);

/* ---- check.c ------------------------------------------------------------ */
/* Verifies every invariant of the host, its guests, frames and swap set;
   0, or -EUCLEAN with the first violation in @err. Takes host->lock. */
int  host_check(struct umlmem_host *h, char *err, size_t errlen);

/* ---- test access (tests/ only) ----------------------------------------- */
static inline struct io_engine *host_engine(struct umlmem_host *h) { return h->io; }
static inline struct swap *host_swap(struct umlmem_host *h) { return h->swap; }
static inline uint64_t guest_meta_bytes(struct umlmem_guest *g) { return g->meta_bytes; }

#endif
