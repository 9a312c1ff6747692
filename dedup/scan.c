/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * dedup/scan.c: the merge scanner. Identical resident pages of different
 * guests (or of one guest) become one shared frame, copied again on the
 * first write to it (umlmem/access.c, cow_break).
 *
 * The design is Linux KSM's, adapted to a library that sees every write:
 *
 * The cursor walks the resident pages of mergeable guests, guest by guest,
 * in page order. A full pass ends when it has been round every guest.
 *
 * Volatility. KSM cannot see writes to anonymous memory, so it compares a
 * page's checksum with the one it had on the previous visit and skips pages
 * that changed. Every write to guest memory here goes through the fault path
 * (a copy write, a write pin), which stamps the frame with the current pass
 * (frame->wpass). A page written during this pass or the previous one is
 * volatile and skipped: merging it would only buy a copy-on-write soon. That
 * is the same rule as KSM's (a page must stay unchanged for a pass), for
 * free, and it lets pages written before scanning began merge on the first
 * visit instead of the second.
 *
 * The stable index holds shared frames, keyed by a hash of their content.
 * A shared frame is never written in place (a write copies it first), so its
 * key stays true while it is shared. A page is looked up there first: most
 * duplicates in a fleet of guests are duplicates of something already
 * shared. The index is kept up to date one frame at a time: a frame enters
 * when it becomes shared and leaves (dedup_frame_unshared) when its last
 * sharer but one goes, so no pass ever rebuilds it.
 *
 * The unstable index holds this pass's private candidates. A page not found
 * in the stable index is looked up there; a match makes the candidate's
 * frame shared (it moves to the stable index) and frees the page's own
 * frame; no match makes the page a candidate. The unstable index is emptied
 * at each new pass: its entries are only as good as the pages they name,
 * which may have been written, evicted or freed since. Entries carry their
 * pass, so emptying it is a counter increment, not a sweep: the work of a
 * pass is the pages it visits, whatever the budget or the index size.
 *
 * Why nothing wrong can merge. Keys are xxh3 with a per-host random seed
 * (and the merge domain mixed in), so a guest cannot craft collisions. But no
 * merge trusts a key: before every merge, under host->lock, the two frames
 * are checked (private or shared as expected, not pinned, not under I/O, in
 * the same merge domain) and compared byte for byte with memcmp. Every
 * writer of guest memory needs host->lock to get a writable frame, and a
 * pinned frame is never merged, so the bytes compared are the bytes merged.
 * Stale index entries (a frame freed, reused, written) simply fail those
 * checks; that is also why no entry is ever removed one by one.
 *
 * Pages of zeros become PTE_ZERO and give their frame back, with no index.
 * At most max_sharing pages share one frame; a further duplicate starts a
 * new shared frame of its own. Pages merge only within one merge domain,
 * never from a guest with UMLMEM_GUEST_NOMERGE, and with UMLMEM_DEDUP_ZERO_ONLY
 * only pages of zeros merge at all.
 *
 * Locking and faults first. Everything is under host->lock, and the
 * scanner is background work (internal.h, "Faults first"): it visits one
 * page at a time and calls host_yield() before each, so a fault that wants
 * the lock waits for at most one visit (a hash, an index probe, a memcmp:
 * about a microsecond) however many pages a call or a batch asks for.
 * Every CPU_STEPS steps it also offers its CPU (sched_yield) to whatever
 * is runnable there: a faulting thread preempted by the scanner would
 * otherwise wait out the scanner's time slice, milliseconds, with the lock
 * free. The page is hashed under the lock: hashing outside it would need the frame
 * held still (F_BUSY) across the unlocked stretch, which makes a writer of
 * that page wait on host->cond and wakes every thread waiting there for I/O
 * at each visit; with one visit per hold, the hold is short enough.
 * The cursor is fixed up by guest_destroy and set_merge under the lock.
 *
 * Passes on a small set. A pass over a few hundred resident pages takes
 * well under a millisecond, so a merge thread told to scan 100000 pages
 * with no sleep would begin pass after pass, finding nothing new. The
 * thread therefore begins a pass only when the last one can have left
 * something to do (pages written or faulted in since it began, or pages it
 * had to skip: volatile, pinned, under I/O, native-writable; or merges,
 * which may enable more), and no sooner than DEDUP_PASS_MIN_MS after the
 * last began; otherwise it sleeps. That also bounds how often a page can
 * be judged volatile: it must stay unwritten for two passes, so at least
 * two such intervals, before it merges. umlmem_dedup_scan() does what it is
 * asked, pass after pass; its passes cost only the pages they visit.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "internal.h"

/* The merge thread begins a pass no sooner than this after the last. */
#define DEDUP_PASS_MIN_MS 50
/* Entries of the page table one step of the walk looks at, at most. */
#define WALK_STEP PT_LEAF_N
/* Steps between two offers of the CPU to runnable threads (sched_yield). */
#define CPU_STEPS 64

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- indexes ---------------------------------------------------------------- */

static void table_clear(struct dent *t, uint64_t n)
{
	for (uint64_t i = 0; i < n; i++)
		t[i] = (struct dent){ 0, DENT_EMPTY, 0 };
}

/* A slot of the unstable index holds an entry of this pass; a slot of the
   stable index (pass 0 passed) holds an entry. */
static bool live(const struct dent *e, uint32_t pass)
{
	return e->frame != DENT_EMPTY && e->pass == pass;
}

/* Inserts (key, f) into the table of @pass (0: the stable one); false when
   the table is half full (a pass with more candidates than that merges
   less, nothing worse). */
static bool table_put(struct dedup *d, struct dent *t, uint32_t pass, uint64_t *used,
		      uint64_t key, uint64_t f)
{
	uint64_t i = key & d->mask;

	if (*used >= (d->mask + 1) / 2)
		return false;
	while (live(&t[i], pass))
		i = (i + 1) & d->mask;
	t[i] = (struct dent){ key, (uint32_t)f, pass };
	(*used)++;
	return true;
}

/* Removes frame @f, filed under @key, from the stable index, if it is
   there: linear probing's deletion, which moves later entries of the run
   back so that no lookup stops short. */
static void stable_del(struct dedup *d, uint64_t key, uint64_t f)
{
	struct dent *t = d->stable;
	uint64_t i = key & d->mask, j;

	while (t[i].frame != f || t[i].key != key) {
		if (t[i].frame == DENT_EMPTY)
			return;
		i = (i + 1) & d->mask;
	}
	for (j = i;;) {
		uint64_t home;

		t[i].frame = DENT_EMPTY;
		do {
			j = (j + 1) & d->mask;
			if (t[j].frame == DENT_EMPTY) {
				d->nstable--;
				return;
			}
			home = t[j].key & d->mask;
			/* the entry at j may fill the hole at i when its home is
			   not cyclically in (i, j] */
		} while (i <= j ? (i < home && home <= j) : (i < home || home <= j));
		t[i] = t[j];
		i = j;
	}
}

static uint64_t page_key(struct umlmem_host *h, struct umlmem_guest *g, uint64_t f)
{
	/* the domain is part of the key: other domains' pages are not even
	   compared (and are refused if a key ever collides) */
	return page_hash(frame_addr(h, f), h->dd.seed ^ ((uint64_t)g->merge_domain * 0x9e3779b97f4a7c15ull));
}

static bool mergeable(const struct umlmem_guest *g)
{
	return !(g->flags & UMLMEM_GUEST_NOMERGE);
}

/* Both indexes before the first pass, or when they cannot be had: one
   empty entry, which table_put finds full and lookups find empty. */
static struct dent no_table[1] = { { 0, DENT_EMPTY, 0 } };

/* Sizes both indexes for the frames the host has made (twice as many
   entries, a power of two, at least 1024): they follow the frames in use,
   not the budget, and a host that never scans never has them. Reallocated
   when that size grew or fell to a quarter, at the start of a pass (the
   unstable index is emptied then anyway); the stable one is kept up to
   date frame by frame, so its entries move to the new table with their
   keys. Out of memory, the old ones (or none) serve: a pass then merges
   less, nothing worse. */
static void tables_fit(struct umlmem_host *h)
{
	struct dedup *d = &h->dd;
	uint64_t n = 1024, have = d->stable == no_table ? 0 : d->mask + 1;
	struct dent *s, *u, *old = d->stable;

	while (n < 2 * h->nmade)
		n <<= 1;
	if (n <= have && n * 4 > have)
		return;
	s = malloc(n * sizeof(*s));
	u = malloc(n * sizeof(*u));
	if (!s || !u) {
		free(s);
		free(u);
		return;
	}
	table_clear(s, n);
	table_clear(u, n);
	if (have)
		free(d->unstable);
	d->stable = s;
	d->unstable = u;
	d->mask = n - 1;
	d->nstable = 0;
	d->nunstable = 0;
	/* the shared frames number at most nmade <= n / 2: they all fit */
	for (uint64_t i = 0; i < have; i++)
		if (old[i].frame != DENT_EMPTY &&
		    !table_put(d, s, 0, &d->nstable, old[i].key, old[i].frame))
			h->frames[old[i].frame].flags &= ~F_STABLE;
	if (have)
		free(old);
}

/* Frame @f is shared now: it enters the stable index. F_STABLE says it is
   in there: when the index is full (it grows at the next pass, tables_fit)
   the frame stays unflagged, and a later visit adds it. */
static void stable_add(struct umlmem_host *h, uint64_t f, uint64_t key)
{
	if (table_put(&h->dd, h->dd.stable, 0, &h->dd.nstable, key, f))
		h->frames[f].flags |= F_STABLE;
	else
		h->dd.pass_redo++;
}

static uint64_t changes(struct umlmem_host *h)
{
	return h->dd.changes + h->ev.faults;
}

/* Begins a pass: empties the unstable index (by moving to a new pass
   number) and notes what the merge thread needs to judge the next one. */
static void new_pass(struct umlmem_host *h)
{
	struct dedup *d = &h->dd;

	if (d->pass)
		d->full_scans++;
	tables_fit(h);
	d->pass = d->pass ? d->pass + 1 : 2;
	if (d->pass == UINT32_MAX) {
		/* after 4 billion passes: old numbers would come round again */
		table_clear(d->unstable, d->mask + 1);
		d->pass = 2;
	}
	d->pass_visits = 0;
	d->nunstable = 0;
	d->pass_changes = changes(h);
	d->pass_redo = 0;
	d->pass_start_ns = now_ns();
}

/* ---- merging ----------------------------------------------------------------- */

/* Frame @c can take page (g, f) as a further sharer: the checks of the
   design comment, the byte comparison last. */
static bool can_join(struct umlmem_host *h, struct umlmem_guest *g, uint64_t f, uint64_t c,
		     bool stable)
{
	struct frame *fc = &h->frames[c];

	if (c == f || c >= h->nframes || !fc->refs || fc->pins || (fc->flags & F_BUSY))
		return false;
	if (stable ? !(fc->flags & F_STABLE) || fc->refs >= h->dd.max_sharing
		   : (fc->refs != 1 || (fc->flags & F_STABLE)))
		return false;
	if (fc->g->merge_domain != g->merge_domain || !mergeable(fc->g))
		return false;
	if (!stable && frame_written_lately(h, c))
		return false;   /* written since it was a candidate */
	if (memcmp(frame_addr(h, f), frame_addr(h, c), PAGE_SIZE))
		return false;
	if (!((h->frames[f].flags | fc->flags) & F_NV))
		return true;
	/* a native view may still be storing to either: take their entries
	   away, then look again at bytes nothing can change any more */
	native_quiesce(h, f);
	native_quiesce(h, c);
	return !memcmp(frame_addr(h, f), frame_addr(h, c), PAGE_SIZE);
}

/* Page (g, idx) in private frame @f joins frame @c; @f is freed. */
static bool join(struct umlmem_host *h, struct umlmem_guest *g, uint64_t idx, pte_t *e,
		 uint64_t f, uint64_t c)
{
	if (rmap_add(h, c, g, idx))
		return false;
	pte_set(g, e, PTE_MK(PTE_FRAME, c));
	rmap_del(h, f, g, idx);
	frame_drop_slot(h, f);
	frame_put(h, f);
	h->dd.merged++;
	h->dd.pass_redo++;
	return true;
}

static bool try_index(struct umlmem_host *h, struct umlmem_guest *g, uint64_t idx, pte_t *e,
		      uint64_t f, uint64_t key, bool stable)
{
	struct dedup *d = &h->dd;
	struct dent *t = stable ? d->stable : d->unstable;
	uint32_t pass = stable ? 0 : d->pass;

	for (uint64_t i = key & d->mask; live(&t[i], pass); i = (i + 1) & d->mask) {
		uint64_t c = t[i].frame;

		if (t[i].key != key || !can_join(h, g, f, c, stable))
			continue;
		if (!join(h, g, idx, e, f, c))
			return false;
		if (!stable) {
			/* the candidate's frame is shared now: it moves (its
			   unstable entry fails can_join from now on) */
			stable_add(h, c, key);
		}
		return true;
	}
	return false;
}

/* Visits page (g, idx), resident in frame PTE_VAL(*e). Returns 1 when it
   merged. */
static int visit(struct umlmem_host *h, struct umlmem_guest *g, uint64_t idx, pte_t *e)
{
	struct dedup *d = &h->dd;
	uint64_t f = PTE_VAL(*e), key;
	struct frame *fr = &h->frames[f];

	d->scanned++;
	if (fr->pins || (fr->flags & F_BUSY)) {
		d->pass_redo++;
		return 0;
	}
	if (fr->refs > 1) {
		/* shared already (it came back from swap shared, say): make
		   sure the stable index knows it */
		if (!(fr->flags & F_STABLE) && !d->zero_only)
			stable_add(h, f, page_key(h, g, f));
		return 0;
	}
	if (native_writable(h, f)) {
		/* native stores are unseen (native.c): a page whose hash moved
		   since the last visit is being written */
		uint32_t sum = (uint32_t)page_key(h, g, f) & FRAME_NVSUM_MASK;

		d->pass_redo++;
		if (sum != fr->nvsum) {
			fr->nvsum = sum;
			d->volatile_skips++;
			return 0;
		}
	}
	if (frame_written_lately(h, f)) {
		d->volatile_skips++;
		d->pass_redo++;
		return 0;
	}
	if (page_is_zero(frame_addr(h, f)) &&
	    (!(fr->flags & F_NV) || (native_quiesce(h, f), page_is_zero(frame_addr(h, f))))) {
		page_zap(g, idx, e);
		d->merged++;
		d->zero_merged++;
		return 1;
	}
	if (d->zero_only)
		return 0;
	key = page_key(h, g, f);
	if (try_index(h, g, idx, e, f, key, true) || try_index(h, g, idx, e, f, key, false))
		return 1;
	if (table_put(d, d->unstable, d->pass, &d->nunstable, key, f))
		d->unshared++;
	else
		d->pass_redo++;
	return 0;
}

/* One step of the walk of guest d->cur from the cursor: 1 with the next
   resident page in *idx, *ep; 0 at the guest's end; -1 when WALK_STEP
   entries (or unallocated parts of the table, skipped whole) were looked
   at without finding one, so that the caller may yield. */
static int next_resident(struct dedup *d, uint64_t *idx, pte_t **ep)
{
	struct umlmem_guest *g = d->cur;
	const unsigned top_shift = PT_LEAF_BITS + PT_DIR_BITS;
	uint64_t a = d->cur_idx;
	unsigned work = 0;

	while (a < g->npages) {
		pte_t **dir = g->top[a >> top_shift];
		pte_t *leaf;
		uint64_t end;

		if (work >= WALK_STEP) {
			d->cur_idx = a;
			return -1;
		}
		if (!dir) {
			a = ((a >> top_shift) + 1) << top_shift;
			work++;
			continue;
		}
		leaf = dir[(a >> PT_LEAF_BITS) & (PT_DIR_N - 1)];
		end = ((a >> PT_LEAF_BITS) + 1) << PT_LEAF_BITS;
		if (end > g->npages)
			end = g->npages;
		if (!leaf) {
			a = end;
			work++;
			continue;
		}
		for (; a < end; a++, work++)
			if (PTE_TYPE(leaf[a & (PT_LEAF_N - 1)]) == PTE_FRAME) {
				*idx = a;
				*ep = &leaf[a & (PT_LEAF_N - 1)];
				d->cur_idx = a + 1;
				return 1;
			}
	}
	d->cur_idx = a;
	return 0;
}

static struct umlmem_guest *next_guest(struct umlmem_guest *g)
{
	while (g && !mergeable(g))
		g = g->next;
	return g;
}

/* Between two passes: whether to begin the next one now. The merge thread
   skips a pass that cannot merge anything (nothing changed, nothing left
   over), counting it as done, and waits out DEDUP_PASS_MIN_MS. */
static bool pass_begin(struct umlmem_host *h, bool background)
{
	struct dedup *d = &h->dd;

	if (d->pass && background) {
		if (now_ns() - d->pass_start_ns < DEDUP_PASS_MIN_MS * 1000000ull)
			return false;
		if (!d->pass_redo && changes(h) == d->pass_changes) {
			/* the same pages, unchanged: the same outcome, none */
			d->idle_passes++;
			d->full_scans++;
			d->pass_start_ns = now_ns();
			return false;
		}
	}
	new_pass(h);
	return true;
}

void dedup_scan_locked(struct umlmem_host *h, uint64_t pages, bool background, uint64_t *merged)
{
	struct dedup *d = &h->dd;
	uint64_t done = 0, steps = 0;
	int r;

	*merged = 0;
	while (done < pages) {
		uint64_t idx;
		pte_t *e;

		/* faults first: a step of scanning at a time */
		host_yield(h);
		if (++steps % CPU_STEPS == 0) {
			/* and the CPU: a thread that is runnable on this one,
			   about to fault, need not wait for the end of this
			   thread's time slice */
			pthread_mutex_unlock(&h->lock);
			sched_yield();
			pthread_mutex_lock(&h->lock);
		}
		if (!d->cur) {
			if (!pass_begin(h, background))
				break;
			d->cur = next_guest(h->guests);
			d->cur_idx = 0;
			if (!d->cur)
				break;          /* nothing mergeable at all */
		}
		r = next_resident(d, &idx, &e);
		if (r < 0)
			continue;
		if (!r) {
			d->cur = next_guest(d->cur->next);
			d->cur_idx = 0;
			/* round every guest: the pass ends; one that found
			   nothing to visit ends the call */
			if (!d->cur && !d->pass_visits)
				break;
			continue;
		}
		d->pass_visits++;
		*merged += visit(h, d->cur, idx, e);
		done++;
	}
}

void dedup_forget_guest(struct umlmem_host *h, struct umlmem_guest *g)
{
	if (h->dd.cur == g) {
		h->dd.cur = next_guest(g->next);
		h->dd.cur_idx = 0;
	}
}

void dedup_frame_unshared(struct umlmem_host *h, uint64_t f)
{
	struct frame *fr = &h->frames[f];

	/* private again: writable in place, so it leaves the stable index.
	   Its content is what it was when it entered (a shared frame is
	   never written), so its key is too. */
	if (fr->flags & F_STABLE) {
		stable_del(&h->dd, page_key(h, fr->g, f), f);
		fr->flags &= ~F_STABLE;
	}
}

int dedup_check(struct umlmem_host *h, char *err, size_t errlen)
{
	struct dedup *d = &h->dd;
	uint64_t n = d->mask + 1, used = 0, ucur = 0;
	uint8_t *seen = calloc(h->nframes, 1);
	int rc = 0;

	if (!seen)
		return -ENOMEM;
	for (uint64_t i = 0; i < n && !rc; i++) {
		const struct dent *e = &d->stable[i];
		const struct frame *fr;

		ucur += live(&d->unstable[i], d->pass);
		if (e->frame == DENT_EMPTY)
			continue;
		used++;
		fr = e->frame < h->nframes ? &h->frames[e->frame] : NULL;
		if (!fr || !(fr->flags & F_STABLE) || fr->refs < 2 || seen[e->frame]++)
			rc = -EUCLEAN;
		else if (page_key(h, fr->g, e->frame) != e->key)
			rc = -EUCLEAN;
		/* no empty slot between its home and it: lookups find it */
		for (uint64_t j = e->key & d->mask; !rc && j != i; j = (j + 1) & d->mask)
			if (d->stable[j].frame == DENT_EMPTY)
				rc = -EUCLEAN;
		if (rc)
			snprintf(err, errlen, "stable index slot %llu: frame %u (flags 0x%x, refs %u) "
				 "is stale, twice, under a wrong key or unreachable",
				 (unsigned long long)i, e->frame, fr ? fr->flags : 0, fr ? fr->refs : 0);
	}
	free(seen);
	if (!rc && (used != d->nstable || ucur != d->nunstable)) {
		snprintf(err, errlen, "merge indexes: %llu stable / %llu unstable entries, %llu / "
			 "%llu recorded", (unsigned long long)used, (unsigned long long)ucur,
			 (unsigned long long)d->nstable, (unsigned long long)d->nunstable);
		rc = -EUCLEAN;
	}
	return rc;
}

/* ---- background thread -------------------------------------------------------- */

static void *dedup_main(void *arg)
{
	struct umlmem_host *h = arg;
	struct dedup *d = &h->dd;
	uint64_t merged;

	pthread_mutex_lock(&h->lock);
	while (!d->stop) {
		struct timespec ts;
		uint64_t sleep_ns = (uint64_t)d->sleep_us * 1000, t;

		if (!d->paused)
			dedup_scan_locked(h, d->batch, true, &merged);
		frames_trim_locked(h);
		/* between passes: the next begins DEDUP_PASS_MIN_MS after the last */
		t = now_ns() - d->pass_start_ns;
		if (!d->cur && d->pass && t < DEDUP_PASS_MIN_MS * 1000000ull &&
		    DEDUP_PASS_MIN_MS * 1000000ull - t > sleep_ns)
			sleep_ns = DEDUP_PASS_MIN_MS * 1000000ull - t;
		cond_deadline(&ts, sleep_ns);
		if (!d->stop)
			pthread_cond_timedwait(&d->cond, &h->lock, &ts);
	}
	pthread_mutex_unlock(&h->lock);
	return NULL;
}

int dedup_init(struct umlmem_host *h)
{
	struct dedup *d = &h->dd;

	/* the indexes come with the first pass (tables_fit) */
	d->stable = d->unstable = no_table;
	d->mask = 0;
	if (getrandom(&d->seed, sizeof(d->seed), 0) != sizeof(d->seed))
		d->seed = (uint64_t)time(NULL) * 0x9e3779b97f4a7c15ull ^ (uintptr_t)h;
	d->max_sharing = h->cfg.max_sharing ? h->cfg.max_sharing : 256;
	d->zero_only = h->cfg.flags & UMLMEM_DEDUP_ZERO_ONLY;
	d->batch = h->cfg.dedup_pages ? h->cfg.dedup_pages : 1000;
	d->sleep_us = h->cfg.dedup_sleep_us ? h->cfg.dedup_sleep_us : 20000;
	return 0;
}

void dedup_fini(struct umlmem_host *h)
{
	if (h->dd.stable != no_table) {
		free(h->dd.stable);
		free(h->dd.unstable);
	}
}

uint64_t dedup_table_bytes(const struct umlmem_host *h)
{
	return h->dd.stable == no_table ? 0 : 2 * (h->dd.mask + 1) * sizeof(struct dent);
}

int dedup_start(struct umlmem_host *h)
{
	struct dedup *d = &h->dd;

	if (!(h->cfg.flags & UMLMEM_BACKGROUND))
		return 0;
	cond_init_monotonic(&d->cond);
	if (pthread_create(&d->thread, NULL, dedup_main, h)) {
		pthread_cond_destroy(&d->cond);
		return seterr(-ENOMEM, "cannot start the merge thread");
	}
	d->on = true;
	return 0;
}

void dedup_stop(struct umlmem_host *h)
{
	struct dedup *d = &h->dd;

	if (!d->on)
		return;
	pthread_mutex_lock(&h->lock);
	d->stop = true;
	pthread_cond_signal(&d->cond);
	pthread_mutex_unlock(&h->lock);
	pthread_join(d->thread, NULL);
	pthread_cond_destroy(&d->cond);
	d->on = false;
}

/* ---- public calls ----------------------------------------------------------- */

int umlmem_dedup_scan(umlmem_host *h, uint64_t pages, uint64_t *merged)
{
	uint64_t m = 0;

	clearerr_tls();
	if (merged)
		*merged = 0;
	if (!h)
		return seterr(-EINVAL, "umlmem_dedup_scan: host is NULL");
	pthread_mutex_lock(&h->lock);
	dedup_scan_locked(h, pages, false, &m);
	pthread_mutex_unlock(&h->lock);
	frames_trim(h);
	if (merged)
		*merged = m;
	return api_done(h, 0);
}

int umlmem_dedup_pause(umlmem_host *h, int paused)
{
	clearerr_tls();
	if (!h)
		return seterr(-EINVAL, "umlmem_dedup_pause: host is NULL");
	pthread_mutex_lock(&h->lock);
	h->dd.paused = paused != 0;
	if (h->dd.on)
		pthread_cond_signal(&h->dd.cond);
	pthread_mutex_unlock(&h->lock);
	return api_done(h, 0);
}
