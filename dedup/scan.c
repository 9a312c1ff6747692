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
 * shared.
 *
 * The unstable index holds this pass's private candidates. A page not found
 * in the stable index is looked up there; a match makes the candidate's
 * frame shared (it moves to the stable index) and frees the page's own
 * frame; no match makes the page a candidate. The unstable index is emptied
 * at each new pass: its entries are only as good as the pages they name,
 * which may have been written, evicted or freed since.
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
 * Locking: everything under host->lock. The scanner drops and retakes it
 * every SCAN_HOLD pages so that faults and other guests are not held up by
 * a long scan; the cursor is fixed up by guest_destroy under the lock.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "internal.h"

#define SCAN_HOLD 64

/* ---- indexes ---------------------------------------------------------------- */

static void table_clear(struct dent *t, uint64_t n)
{
	for (uint64_t i = 0; i < n; i++)
		t[i] = (struct dent){ 0, DENT_EMPTY };
}

/* Inserts (key, f); false when the table is half full (a pass with more
   candidates than that merges less, nothing worse). */
static bool table_put(struct dedup *d, struct dent *t, uint64_t *used, uint64_t key, uint64_t f)
{
	uint64_t i = key & d->mask;

	if (*used >= (d->mask + 1) / 2)
		return false;
	while (t[i].frame != DENT_EMPTY)
		i = (i + 1) & d->mask;
	t[i] = (struct dent){ key, (uint32_t)f };
	(*used)++;
	return true;
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
   empty entry, which table_put finds full. */
static struct dent no_table[1] = { { 0, DENT_EMPTY } };

/* Sizes both indexes for the frames the host has made (twice as many
   entries, a power of two, at least 1024): they follow the frames in use,
   not the budget, and a host that never scans never has them. Reallocated
   when that size grew or fell to a quarter; start of a pass, where both
   are rebuilt anyway. Out of memory, the old ones (or none) serve: a pass
   then merges less, nothing worse. */
static void tables_fit(struct umlmem_host *h)
{
	struct dedup *d = &h->dd;
	uint64_t n = 1024, have = d->stable == no_table ? 0 : d->mask + 1;
	struct dent *s, *u;

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
	if (have) {
		free(d->stable);
		free(d->unstable);
	}
	d->stable = s;
	d->unstable = u;
	d->mask = n - 1;
}

/* Rebuilds the stable index from the frames flagged F_STABLE, dropping
   stale entries; empties the unstable one. Start of every pass. */
static void new_pass(struct umlmem_host *h)
{
	struct dedup *d = &h->dd;

	if (d->pass)
		d->full_scans++;
	tables_fit(h);
	d->pass = d->pass ? d->pass + 1 : 2;
	d->pass_visits = 0;
	table_clear(d->unstable, d->mask + 1);
	d->nunstable = 0;
	table_clear(d->stable, d->mask + 1);
	d->nstable = 0;
	for (uint64_t f = 0; f < h->nmade; f++) {
		struct frame *fr = &h->frames[f];

		if (frame_gone(h, f))
			f |= FRAME_CHUNK - 1;
		else if ((fr->flags & F_STABLE) && fr->refs > 1)
			table_put(d, d->stable, &d->nstable, page_key(h, fr->g, f), f);
	}
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
	if (!stable && h->frames[c].wpass + 1 >= h->dd.pass)
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
	return true;
}

static bool try_index(struct umlmem_host *h, struct umlmem_guest *g, uint64_t idx, pte_t *e,
		      uint64_t f, uint64_t key, bool stable)
{
	struct dedup *d = &h->dd;
	struct dent *t = stable ? d->stable : d->unstable;

	for (uint64_t i = key & d->mask; t[i].frame != DENT_EMPTY; i = (i + 1) & d->mask) {
		uint64_t c = t[i].frame;

		if (t[i].key != key || !can_join(h, g, f, c, stable))
			continue;
		if (!join(h, g, idx, e, f, c))
			return false;
		if (!stable) {
			/* the candidate's frame is shared now: it moves */
			h->frames[c].flags |= F_STABLE;
			table_put(d, d->stable, &d->nstable, key, c);
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
	if (fr->pins || (fr->flags & F_BUSY))
		return 0;
	if (fr->refs > 1) {
		/* shared already (it came back from swap shared, say): make
		   sure the stable index knows it */
		if (!(fr->flags & F_STABLE) && !d->zero_only) {
			fr->flags |= F_STABLE;
			table_put(d, d->stable, &d->nstable, page_key(h, g, f), f);
		}
		return 0;
	}
	if (native_writable(h, f)) {
		/* native stores are unseen (native.c): a page whose hash moved
		   since the last visit is being written */
		uint32_t sum = (uint32_t)page_key(h, g, f);

		if (sum != fr->nvsum) {
			fr->nvsum = sum;
			d->volatile_skips++;
			return 0;
		}
	}
	if (fr->wpass + 1 >= d->pass) {
		d->volatile_skips++;
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
	if (table_put(d, d->unstable, &d->nunstable, key, f))
		d->unshared++;
	return 0;
}

/* The next resident page at or after the cursor in guest d->cur, or false
   at the guest's end. Skips unallocated parts of the page table whole. */
static bool next_resident(struct dedup *d, uint64_t *idx, pte_t **ep)
{
	struct umlmem_guest *g = d->cur;
	const unsigned top_shift = PT_LEAF_BITS + PT_DIR_BITS;
	uint64_t a = d->cur_idx;

	while (a < g->npages) {
		pte_t **dir = g->top[a >> top_shift];
		pte_t *leaf;
		uint64_t end;

		if (!dir) {
			a = ((a >> top_shift) + 1) << top_shift;
			continue;
		}
		leaf = dir[(a >> PT_LEAF_BITS) & (PT_DIR_N - 1)];
		end = ((a >> PT_LEAF_BITS) + 1) << PT_LEAF_BITS;
		if (end > g->npages)
			end = g->npages;
		for (; leaf && a < end; a++)
			if (PTE_TYPE(leaf[a & (PT_LEAF_N - 1)]) == PTE_FRAME) {
				*idx = a;
				*ep = &leaf[a & (PT_LEAF_N - 1)];
				d->cur_idx = a + 1;
				return true;
			}
		a = end;
	}
	d->cur_idx = a;
	return false;
}

static struct umlmem_guest *next_guest(struct umlmem_guest *g)
{
	while (g && !mergeable(g))
		g = g->next;
	return g;
}

void dedup_scan_locked(struct umlmem_host *h, uint64_t pages, uint64_t *merged)
{
	struct dedup *d = &h->dd;
	uint64_t done = 0, held = 0, empty_passes = 0;

	*merged = 0;
	if (!d->pass)
		new_pass(h);
	while (done < pages) {
		uint64_t idx;
		pte_t *e;

		if (!d->cur) {
			d->cur = next_guest(h->guests);
			d->cur_idx = 0;
			if (!d->cur)
				break;          /* nothing mergeable at all */
		}
		if (!next_resident(d, &idx, &e)) {
			d->cur = next_guest(d->cur->next);
			d->cur_idx = 0;
			if (!d->cur) {
				/* round every guest: a new pass; two in a row
				   that found nothing to visit end the call */
				if (!d->pass_visits && ++empty_passes >= 2)
					break;
				new_pass(h);
			}
			continue;
		}
		d->pass_visits++;
		*merged += visit(h, d->cur, idx, e);
		done++;
		if (++held == SCAN_HOLD) {
			/* let faults and other guests in */
			held = 0;
			pthread_mutex_unlock(&h->lock);
			pthread_mutex_lock(&h->lock);
		}
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
	/* private again: writable in place, so it leaves the stable index
	   (lazily: its entry fails can_join from now on) */
	h->frames[f].flags &= ~F_STABLE;
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

		if (!d->paused)
			dedup_scan_locked(h, d->batch, &merged);
		frames_trim_locked(h);
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += (long)d->sleep_us * 1000;
		ts.tv_sec += ts.tv_nsec / 1000000000;
		ts.tv_nsec %= 1000000000;
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
	pthread_cond_init(&d->cond, NULL);
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
	dedup_scan_locked(h, pages, &m);
	pthread_mutex_unlock(&h->lock);
	frames_trim(h);
	if (merged)
		*merged = m;
	return 0;
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
	return 0;
}
