/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * dedup: the merge scanner's state and its interface to the core.
 * See dedup/scan.c for the design.
 */
#ifndef UMLMEM_DEDUP_H
#define UMLMEM_DEDUP_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

struct umlmem_host;
struct umlmem_guest;

/* One entry of an index: a page hash and the frame that had it. Entries
   are never removed one by one; a stale one fails the checks done before
   every merge (state, domain, and memcmp), and the tables are rebuilt at
   the end of each full pass. */
struct dent {
	uint64_t key;
	uint32_t frame;    /* DENT_EMPTY: free slot */
};
#define DENT_EMPTY UINT32_MAX

/* The scanner of one host. Everything is under host->lock but the thread
   fields, which are set before the thread starts and after it stops. */
struct dedup {
	uint64_t seed;               /* per host, from getrandom: keys cannot be crafted */
	struct dent *stable;         /* shared frames, keyed by content */
	struct dent *unstable;       /* this pass's single candidates */
	uint64_t mask;               /* both tables have mask + 1 entries */
	uint64_t nstable, nunstable; /* entries used, stale ones included */
	uint32_t pass;               /* full passes begun (+1): 0 before the first scan */
	struct umlmem_guest *cur;    /* cursor: the guest and page scanned next */
	uint64_t cur_idx;
	uint64_t pass_visits;        /* pages visited in this pass */
	uint32_t max_sharing;
	bool zero_only;
	/* counters (umlmem_host_info) */
	uint64_t scanned, merged, zero_merged, volatile_skips, unshared, full_scans;
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
   shared frame, or into ZERO). May drop and retake the lock between pages. */
void dedup_scan_locked(struct umlmem_host *h, uint64_t pages, uint64_t *merged);
/* Guest @g is going away: move the cursor off it. */
void dedup_forget_guest(struct umlmem_host *h, struct umlmem_guest *g);
/* Bytes of the two indexes (0 before the first pass). */
uint64_t dedup_table_bytes(const struct umlmem_host *h);
/* Frame @f just became shared (refs 2) or stopped being shared (refs 1). */
void dedup_frame_unshared(struct umlmem_host *h, uint64_t f);

#endif
