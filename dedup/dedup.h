/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * dedup: the merge scanner's state and its interface to the core.
 * See dedup/scan.c for the design.
 */
#ifndef UMLMEM_DEDUP_H
#define UMLMEM_DEDUP_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct umlmem_host;
struct umlmem_guest;

/* One entry of an index: a page hash and the frame that had it. The
   stable index loses an entry when its frame stops being shared
   (dedup_frame_unshared); other stale entries fail the checks done before
   every merge (state, domain, and memcmp). An unstable entry is live only
   during the pass that wrote it (pass == dedup.pass): a new pass empties
   the unstable index without touching it. */
struct dent {
	uint64_t key;
	uint32_t frame;    /* DENT_EMPTY: free slot */
	uint32_t pass;     /* unstable index: the pass it belongs to */
};
#define DENT_EMPTY UINT32_MAX

/* The scanner of one host. Everything is under host->lock but the thread
   fields, which are set before the thread starts and after it stops. */
struct dedup {
	uint64_t seed;               /* per host, from getrandom: keys cannot be crafted */
	struct dent *stable;         /* shared frames, keyed by content */
	struct dent *unstable;       /* this pass's single candidates */
	uint64_t mask;               /* both tables have mask + 1 entries */
	uint64_t nstable, nunstable; /* entries used (unstable: in this pass) */
	uint32_t pass;               /* full passes begun (+1): 0 before the first scan */
	struct umlmem_guest *cur;    /* cursor: the guest and page scanned next; */
	uint64_t cur_idx;            /* NULL between two passes */
	uint64_t pass_visits;        /* pages visited in this pass */
	/* Whether another pass could merge anything (the merge thread starts
	   none otherwise): pages written or faulted in since this pass began
	   (changes, counted by the fault path, plus host faults), and pages
	   this pass met that a later one may see differently (redo: merged,
	   volatile, pinned, under I/O, writable in a native view, or left out
	   of a full index). */
	uint64_t changes;
	uint64_t pass_changes;       /* changes + host faults when the pass began */
	uint64_t pass_redo;
	uint64_t pass_start_ns;      /* CLOCK_MONOTONIC when the pass began */
	uint32_t max_sharing;
	bool zero_only;
	/* counters (umlmem_host_info) */
	uint64_t scanned, merged, zero_merged, volatile_skips, unshared, full_scans;
	uint64_t idle_passes;        /* passes the merge thread found pointless */
	/* background scanning (UMLMEM_BACKGROUND) */
	pthread_t thread;
	pthread_cond_t cond;         /* wakes the thread: stop, resume; with host->lock */
	bool on, stop, paused;
	unsigned batch;              /* pages per batch */
	unsigned sleep_us;           /* pause between batches */
};

/* scan.c; caller holds host->lock unless said otherwise */
int  dedup_init(struct umlmem_host *h);          /* at create, no lock */
void dedup_fini(struct umlmem_host *h);          /* at destroy, no lock, thread stopped */
int  dedup_start(struct umlmem_host *h);         /* no lock */
void dedup_stop(struct umlmem_host *h);          /* no lock */
/* Scans up to @pages resident pages; *merged gets the pages merged (into a
   shared frame, or into ZERO). Lets waiting faults in between pages
   (host_yield), dropping the lock. @background: the merge thread, which
   starts no pass that cannot merge anything, nor one sooner than
   DEDUP_PASS_MIN_MS after the last; it returns early instead. */
void dedup_scan_locked(struct umlmem_host *h, uint64_t pages, bool background,
		       uint64_t *merged);
/* The scanner's invariants (host_check): each stable entry names a shared
   F_STABLE frame, once, under the key of its content, reachable from its
   home slot; the counts match. 0, or -EUCLEAN with the violation in @err. */
int  dedup_check(struct umlmem_host *h, char *err, size_t errlen);
/* Guest @g is going away: move the cursor off it. */
void dedup_forget_guest(struct umlmem_host *h, struct umlmem_guest *g);
/* Bytes of the two indexes (0 before the first pass). */
uint64_t dedup_table_bytes(const struct umlmem_host *h);
/* Frame @f just became shared (refs 2) or stopped being shared (refs 1). */
void dedup_frame_unshared(struct umlmem_host *h, uint64_t f);

#endif
