/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * umlmem stress: many threads of random operations on several guests of an
 * overcommitted host, every byte that comes back checked against a model.
 *
 * Workload. Several guests (default 8 of 64 MiB) on a budget of 64 MiB, so
 * that most of what the threads touch is in swap and every few operations
 * fault. Each thread (default 4) repeats, on a random page range it owns:
 *  - read: 1 byte to a few pages, often across page boundaries, compared
 *    with the model;
 *  - write: the same lengths, content random (a function of the address and
 *    a per-write stamp), a fixed per-page pattern, or zeros;
 *  - fill: 1 to 4 whole pages, each one of a few fixed patterns or zeros,
 *    so that identical pages exist across pages, threads and guests and the
 *    merge scanner has something to merge (and zero pages to give back);
 *  - pin: READ, WRITE or both, possibly of a page it already holds (pins
 *    nest); the page is compared through the pointer, and a write pin is
 *    sometimes written through; pins are held across later operations and
 *    dropped by unpin operations;
 *  - discard of 1 to 4 pages: -EBUSY, with nothing discarded, exactly when
 *    one of them is pinned;
 *  - with --dedup, umlmem_dedup_scan() of a few hundred pages;
 *  - calls that break a documented rule (a range beyond the guest's end, a
 *    misaligned pin or discard, an unpin without a pin, an empty access
 *    mask), which must fail with the documented error and change nothing.
 * Any other result of a library call is an error: counted, reported with
 * the library's own message, and the run is not verified.
 *
 * Ownership. Guest pages are cut into blocks of BLOCK_PAGES pages, numbered
 * across all guests; thread t owns the blocks whose number is t modulo the
 * thread count and touches nothing else (the merge scanner and the pager
 * touch everything, which is the point). So the owner's model of its pages
 * is an exact oracle however the threads interleave. BLOCK_PAGES is not a
 * power of two so that block edges drift across whatever power-of-two
 * chunking the library uses internally, and operations inside one block
 * cross those edges too.
 *
 * The model. A byte per guest byte would cost as much as the guests'
 * nominal RAM, which is exactly what small-ram.sh runs this under a memory
 * limit far below. Instead each page is described by at most MAX_SEGS runs
 * of bytes, each run zeros, a pattern, or the random content of one write
 * (regenerated from its stamp and the address): 56 bytes a page, 1/73 of
 * the RAM modelled, and nothing for pages never touched (the model arrays
 * are calloc'ed; an all-zero entry means "never written"). A write that
 * would leave more runs than that on a page is widened to cover the whole
 * page, which is still a legal write and keeps the description exact.
 *
 * At the end each thread drops its pins (checking the pages once more) and,
 * once all threads have stopped, reads every one of its blocks back whole:
 * every byte of every guest is compared. "verified" means that final check
 * covered every byte, no comparison ever differed and no call failed in an
 * unexpected way.
 *
 * A thread's sequence of operations depends only on the options and its number,
 * so a failure with --threads 1 --ops N (no --background) repeats exactly.
 * If no operation completes for STALL_S seconds the run is reported as hung,
 * with what each thread was doing, and the process exits.
 *
 * Exit status: 0 verified, 1 not verified (mismatch, error, hang), 2 usage.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "umlmem.h"
#include "cmd.h"
#define CLI_CMD "stress"
#include "cli.h"
#include "rng.h"

#define CMD		"stress"

#define PAGE		((uint64_t)UMLMEM_PAGE_SIZE)
#define MIB		(1024.0 * 1024.0)

#define BLOCK_PAGES	13u	/* unit of ownership; see the top comment */
#define MAX_SEGS	6u	/* runs per page in the model */
#define MAX_OP_PAGES	4u	/* longest read or write, in pages */
#define NPAT		4u	/* few, so that equal pages are common */
#define MAX_PINS	8u	/* pins a thread holds at most */
#define MAX_THREADS	256u
#define MAX_GUESTS	4096u
#define MAX_REPORTS	10u	/* mismatches and errors printed in full */
#define PROGRESS_S	1.0
#define STALL_S		60.0

/* ------------------------------------------------------------------------ */
/* State                                                                    */
/* ------------------------------------------------------------------------ */

enum op_kind {
	OP_NONE, OP_READ, OP_WRITE, OP_FILL, OP_PIN, OP_PINNED, OP_UNPIN,
	OP_DISCARD, OP_DEDUP, OP_BAD, OP_FINAL, NOPS
};

static const char *const op_name[NOPS] = {
	"idle", "read", "write", "fill", "pin", "pinned access", "unpin",
	"discard", "dedup scan", "bad call", "final check",
};

enum seg_kind { SEG_ZERO = 0, SEG_PAT, SEG_RAND };

/* One run of a page's bytes, from the previous run's end to @end. */
struct seg {
	uint16_t end;
	uint8_t kind;		/* enum seg_kind */
	uint8_t pat;		/* SEG_PAT: which pattern */
	uint32_t stamp;		/* SEG_RAND: which write of the owner */
};

/* n == 0: never written since the start, all zeros. */
struct page_model {
	struct seg s[MAX_SEGS];
	uint32_t last_op;	/* the owner's op number that last changed it */
	uint8_t n;
	uint8_t last_kind;	/* enum op_kind of that op */
	uint8_t unknown;	/* a failed write left it partly written */
};

struct pin {
	unsigned gi;
	uint64_t page;
	unsigned access;
	unsigned char *p;
};

struct counters {
	uint64_t ops, reads, writes, fills, pins, pin_checks, pin_writes, unpins;
	uint64_t discards, busy_discards, scans, merged, bad_calls;
	uint64_t errors, mismatches, mismatched_bytes;
	uint64_t checked_bytes;	/* by the final check */
};

struct stress;

struct worker {
	struct stress *s;
	unsigned id;
	pthread_t tid;
	uint64_t rng;
	uint64_t quota;		/* ops, with --ops */
	bool by_ops;		/* else until told to stop */
	uint64_t nblocks;	/* blocks owned */
	uint64_t key;		/* base of this thread's random content */
	uint32_t stamp;
	uint32_t opno;
	enum op_kind op;	/* the op being done, for reports */
	struct pin pins[MAX_PINS];
	unsigned npins;
	unsigned char *buf;	/* BLOCK_PAGES pages: data in or out */
	unsigned char *want;	/* one page: expected bytes */
	struct counters c;
	/* read by the main thread while the worker runs */
	_Atomic uint64_t a_ops;
	_Atomic uint64_t a_checked;
	_Atomic int a_op;
	_Atomic unsigned a_gi;
	_Atomic uint64_t a_gpa;
};

struct stress {
	/* options */
	unsigned threads;
	unsigned guests;
	uint64_t guest_bytes;
	uint64_t budget_bytes;
	double seconds;
	uint64_t ops_total;	/* 0: run for @seconds */
	const char *swap_dir;
	uint64_t seed;
	bool json, quiet, background, dedup;

	/* derived */
	uint64_t guest_pages;
	uint64_t guest_blocks;	/* per guest */
	uint64_t total_blocks;
	unsigned max_pins;	/* per thread */

	/* run state */
	umlmem_host *host;
	umlmem_guest **g;
	unsigned created;
	struct page_model **pm;
	unsigned char (*pat)[PAGE];
	struct worker *w;
	pthread_barrier_t barrier;
	atomic_bool stop;
	atomic_uint finished;	/* workers done with everything */
	atomic_uint final_started;
	_Atomic uint64_t a_errors, a_mismatches;
	atomic_uint reports;
	pthread_mutex_t lock;
	char error[1024];	/* first unexpected failure */
	char mismatch[1024];	/* first mismatch */

	/* results */
	struct counters tot;
	struct umlmem_stats st;
	struct umlmem_host_info info;
	bool have_stats;
	uint64_t peak_frames;
	enum umlmem_io_engine engine;
	char engine_why[256];
	bool final_complete;
	uint64_t warnings;
	double t0, wall_s, run_s;
};

/* ------------------------------------------------------------------------ */
/* Reports                                                                  */
/* ------------------------------------------------------------------------ */

/* Prints the first MAX_REPORTS failures in full, then says once that the
 * rest are only counted; keeps the first of each sort for the summary. */
static void report(struct stress *s, char *first, size_t firstlen, const char *line)
{
	unsigned n = atomic_fetch_add(&s->reports, 1);

	if (n < MAX_REPORTS)
		fprintf(stderr, "%s %s: %s\n", PROG, CMD, line);
	else if (n == MAX_REPORTS)
		fprintf(stderr, "%s %s: further failures are counted, not shown\n", PROG, CMD);
	pthread_mutex_lock(&s->lock);
	if (!first[0])
		snprintf(first, firstlen, "%s", line);
	pthread_mutex_unlock(&s->lock);
}

/* A call that did not do what its documentation says. */
static void fail_line(struct worker *w, const char *what)
{
	char line[1024];

	snprintf(line, sizeof(line), "thread %u %s #%" PRIu32 ": %s", w->id,
		 op_name[w->op], w->opno, what);
	w->c.errors++;
	atomic_fetch_add_explicit(&w->s->a_errors, 1, memory_order_relaxed);
	report(w->s, w->s->error, sizeof(w->s->error), line);
}

/* An unexpected result of a library call. The library's message is copied
 * first: it is only kept until the thread's next umlmem call. */
static void __attribute__((format(printf, 3, 4)))
lib_error(struct worker *w, int rc, const char *fmt, ...)
{
	char what[256], msg[512], line[900];
	va_list ap;

	snprintf(msg, sizeof(msg), "%s", rc < 0 ? umlmem_errmsg() : "");
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	snprintf(line, sizeof(line), "%s: %s%s%s", what, umlmem_strerror(rc),
		 msg[0] ? ": " : "", msg);
	fail_line(w, line);
}

/* A documented error that did not come: @rc is what came instead. */
static void unexpected(struct worker *w, int rc, int want, const char *call)
{
	lib_error(w, rc, "%s should fail with %s but returned", call, umlmem_strerror(want));
}

/* ------------------------------------------------------------------------ */
/* Content and the model                                                    */
/* ------------------------------------------------------------------------ */

static inline uint64_t page_len(const struct stress *s, uint64_t page)
{
	uint64_t left = s->guest_bytes - page * PAGE;

	return left < PAGE ? left : PAGE;
}

/* The bytes [lo, hi) of run @sg of page @page of guest @gi, into @out. */
static void seg_fill(const struct worker *w, unsigned gi, uint64_t page,
		     const struct seg *sg, unsigned lo, unsigned hi, unsigned char *out)
{
	uint64_t a, word, key;
	unsigned n = hi - lo, i = 0, sh;

	switch (sg->kind) {
	case SEG_ZERO:
		memset(out, 0, n);
		return;
	case SEG_PAT:
		memcpy(out, w->s->pat[sg->pat] + lo, n);
		return;
	}
	/* Random content depends on the address as well as the stamp, so
	 * that a byte landing at the wrong offset, page or guest shows. */
	key = mix64(w->key ^ sg->stamp) + (uint64_t)gi * 0xd1b54a32d192ed03ull;
	a = page * PAGE + lo;
	while (i < n) {
		word = mix64(key + (a >> 3) * RNG_GOLDEN);
		for (sh = (unsigned)(a & 7); sh < 8 && i < n; sh++, a++)
			out[i++] = (unsigned char)(word >> (8 * sh));
	}
}

/* The runs of a page; a page never written is one run of zeros. */
static const struct seg *page_segs(const struct stress *s, const struct page_model *m,
				   uint64_t page, struct seg *tmp, unsigned *n)
{
	if (m->n) {
		*n = m->n;
		return m->s;
	}
	tmp->end = (uint16_t)page_len(s, page);
	tmp->kind = SEG_ZERO;
	tmp->pat = 0;
	tmp->stamp = 0;
	*n = 1;
	return tmp;
}

/* Expected bytes [lo, hi) of a page, into @out. */
static void model_expect(const struct worker *w, unsigned gi, uint64_t page,
			 unsigned lo, unsigned hi, unsigned char *out)
{
	const struct page_model *m = &w->s->pm[gi][page];
	const struct seg *sg;
	struct seg tmp;
	unsigned n, i, start = 0, a, b;

	sg = page_segs(w->s, m, page, &tmp, &n);
	for (i = 0; i < n && start < hi; start = sg[i].end, i++) {
		a = start > lo ? start : lo;
		b = sg[i].end < hi ? sg[i].end : hi;
		if (a < b)
			seg_fill(w, gi, page, &sg[i], a, b, out + (a - lo));
	}
}

static bool seg_same(const struct seg *a, const struct seg *b)
{
	if (a->kind != b->kind)
		return false;
	if (a->kind == SEG_PAT)
		return a->pat == b->pat;
	if (a->kind == SEG_RAND)
		return a->stamp == b->stamp;
	return true;
}

static void seg_push(struct seg *out, unsigned *n, struct seg sg, unsigned end)
{
	sg.end = (uint16_t)end;
	if (*n && seg_same(&out[*n - 1], &sg))
		out[*n - 1].end = (uint16_t)end;
	else
		out[(*n)++] = sg;
}

/* The runs of a page after [lo, hi) is written with @ns, into @out (room
 * for MAX_SEGS + 2); returns how many. Equal neighbours are joined, which
 * is exact: every kind of content is a function of its position. */
static unsigned overlay(const struct stress *s, const struct page_model *m, uint64_t page,
			unsigned lo, unsigned hi, struct seg ns, struct seg *out)
{
	const struct seg *sg;
	struct seg tmp;
	unsigned n, i, start, k = 0;

	sg = page_segs(s, m, page, &tmp, &n);
	for (i = 0, start = 0; i < n; start = sg[i].end, i++)
		if (start < lo)
			seg_push(out, &k, sg[i], sg[i].end < lo ? sg[i].end : lo);
	seg_push(out, &k, ns, hi);
	for (i = 0; i < n; i++)
		if (sg[i].end > hi)
			seg_push(out, &k, sg[i], sg[i].end);
	return k;
}

static bool overlay_fits(const struct stress *s, const struct page_model *m, uint64_t page,
			 unsigned lo, unsigned hi, struct seg ns)
{
	struct seg out[MAX_SEGS + 2];

	return overlay(s, m, page, lo, hi, ns, out) <= MAX_SEGS;
}

static void model_apply(struct worker *w, unsigned gi, uint64_t page, unsigned lo,
			unsigned hi, struct seg ns)
{
	struct page_model *m = &w->s->pm[gi][page];
	struct seg out[MAX_SEGS + 2];
	unsigned k = overlay(w->s, m, page, lo, hi, ns, out);

	/* Callers widen writes so that this cannot overflow. */
	if (k > MAX_SEGS)
		abort();
	memcpy(m->s, out, k * sizeof(out[0]));
	m->n = (uint8_t)k;
	m->last_op = w->opno;
	m->last_kind = (uint8_t)w->op;
}

static void model_unknown(struct worker *w, unsigned gi, uint64_t first, uint64_t last)
{
	for (uint64_t p = first; p <= last; p++)
		w->s->pm[gi][p].unknown = 1;
}

/* Compares bytes [lo, hi) of a page, as read into @got, with the model. */
static void check_page(struct worker *w, unsigned gi, uint64_t page, unsigned lo,
		       unsigned hi, const unsigned char *got)
{
	struct stress *s = w->s;
	const struct page_model *m = &s->pm[gi][page];
	unsigned i, nbad = 0, first = 0, n = hi - lo;
	char line[1024];

	if (m->unknown || lo >= hi)
		return;
	model_expect(w, gi, page, lo, hi, w->want);
	if (!memcmp(w->want, got, n))
		return;
	for (i = 0; i < n; i++)
		if (w->want[i] != got[i] && !nbad++)
			first = i;
	w->c.mismatches++;
	w->c.mismatched_bytes += nbad;
	atomic_fetch_add_explicit(&s->a_mismatches, 1, memory_order_relaxed);
	snprintf(line, sizeof(line),
		 "MISMATCH guest %u page %" PRIu64 " (gpa 0x%" PRIx64 "): %u of %u bytes differ, "
		 "first at +0x%x (expected 0x%02x, got 0x%02x), found by %s #%" PRIu32
		 " of thread %u; the page was last changed by %s #%" PRIu32,
		 gi, page, page * PAGE, nbad, n, lo + first, w->want[first], got[first],
		 op_name[w->op], w->opno, w->id,
		 m->n ? op_name[m->last_kind] : "nothing (never written)", m->last_op);
	report(s, s->mismatch, sizeof(s->mismatch), line);
}

/* Checks @len bytes at @gpa (within one block) that were read into @got. */
static void check_range(struct worker *w, unsigned gi, uint64_t gpa, uint64_t len,
			const unsigned char *got)
{
	uint64_t a = gpa, end = gpa + len, page, pe;

	while (a < end) {
		page = a / PAGE;
		pe = (page + 1) * PAGE < end ? (page + 1) * PAGE : end;
		check_page(w, gi, page, (unsigned)(a - page * PAGE), (unsigned)(pe - page * PAGE),
			   got + (a - gpa));
		a = pe;
	}
}

/* ------------------------------------------------------------------------ */
/* Ownership                                                                */
/* ------------------------------------------------------------------------ */

struct block {
	unsigned gi;
	uint64_t first, end;	/* pages [first, end) */
};

static void block_of(const struct stress *s, uint64_t k, struct block *b)
{
	uint64_t bi = k % s->guest_blocks;

	b->gi = (unsigned)(k / s->guest_blocks);
	b->first = bi * BLOCK_PAGES;
	b->end = b->first + BLOCK_PAGES < s->guest_pages ? b->first + BLOCK_PAGES : s->guest_pages;
}

/* Returns the pin whose block was picked, or -1. Pins are few among many
 * pages, so an eighth of the picks go to a pinned page's block: else a
 * discard would almost never meet a pin, nor a write a pinned page. */
static int pick_block(struct worker *w, struct block *b)
{
	const struct pin *pn;
	int i;

	if (w->npins && rng_below(&w->rng, 8) == 0) {
		i = (int)rng_below(&w->rng, w->npins);
		pn = &w->pins[i];
		block_of(w->s, (uint64_t)pn->gi * w->s->guest_blocks + pn->page / BLOCK_PAGES, b);
		return i;
	}
	block_of(w->s, w->id + (uint64_t)w->s->threads * rng_below(&w->rng, w->nblocks), b);
	return -1;
}

static uint64_t block_bytes_end(const struct stress *s, const struct block *b)
{
	uint64_t e = b->end * PAGE;

	return e < s->guest_bytes ? e : s->guest_bytes;
}

/* A random byte range inside a random owned block: mostly short, often
 * straddling a page boundary, sometimes several pages. */
static void pick_range(struct worker *w, struct block *b, uint64_t *gpa, uint64_t *len)
{
	uint64_t lo, hi, a, n;

	pick_block(w, b);
	lo = b->first * PAGE;
	hi = block_bytes_end(w->s, b);
	switch (rng_below(&w->rng, 4)) {
	case 0:
		n = 1 + rng_below(&w->rng, 64);
		break;
	case 1:
		n = 1 + rng_below(&w->rng, PAGE);
		break;
	default:
		n = 1 + rng_below(&w->rng, MAX_OP_PAGES * PAGE);
		break;
	}
	if (rng_below(&w->rng, 4) == 0) {
		/* just before a page boundary, so even short ones cross it */
		a = lo + (1 + rng_below(&w->rng, b->end - b->first)) * PAGE;
		a -= 1 + rng_below(&w->rng, 64);
		if (a >= hi)
			a = hi - 1;
	} else {
		a = lo + rng_below(&w->rng, hi - lo);
	}
	if (n > hi - a)
		n = hi - a;
	*gpa = a;
	*len = n;
}

static uint64_t pick_page(struct worker *w, struct block *b)
{
	int i = pick_block(w, b);

	if (i >= 0 && rng_below(&w->rng, 2))
		return w->pins[i].page;
	return b->first + rng_below(&w->rng, b->end - b->first);
}

static int find_pin(const struct worker *w, unsigned gi, uint64_t page)
{
	for (unsigned i = 0; i < w->npins; i++)
		if (w->pins[i].gi == gi && w->pins[i].page == page)
			return (int)i;
	return -1;
}

static bool write_pinned(const struct worker *w, unsigned gi, uint64_t page)
{
	for (unsigned i = 0; i < w->npins; i++)
		if (w->pins[i].gi == gi && w->pins[i].page == page &&
		    (w->pins[i].access & UMLMEM_WRITE))
			return true;
	return false;
}

static void set_current(struct worker *w, enum op_kind op, unsigned gi, uint64_t gpa)
{
	w->op = op;
	atomic_store_explicit(&w->a_op, op, memory_order_relaxed);
	atomic_store_explicit(&w->a_gi, gi, memory_order_relaxed);
	atomic_store_explicit(&w->a_gpa, gpa, memory_order_relaxed);
}

/* ------------------------------------------------------------------------ */
/* Operations                                                               */
/* ------------------------------------------------------------------------ */

/* A new run of random (mostly), pattern or zero content. */
static struct seg new_seg(struct worker *w)
{
	struct seg sg = { 0, SEG_RAND, 0, 0 };
	uint64_t r = rng_below(&w->rng, 10);

	if (r < 7) {
		sg.stamp = ++w->stamp;
	} else if (r < 9) {
		sg.kind = SEG_PAT;
		sg.pat = (uint8_t)rng_below(&w->rng, NPAT);
	} else {
		sg.kind = SEG_ZERO;
	}
	return sg;
}

static void op_read(struct worker *w)
{
	struct block b;
	uint64_t gpa, len;
	unsigned char poison = (w->opno & 1) ? 0xa5 : 0x5a;
	int rc;

	pick_range(w, &b, &gpa, &len);
	set_current(w, OP_READ, b.gi, gpa);
	/* Poisoned, so a read that claims success but copies nothing shows. */
	memset(w->buf, poison, len);
	rc = umlmem_read(w->s->g[b.gi], gpa, w->buf, len);
	w->c.reads++;
	if (rc) {
		lib_error(w, rc, "umlmem_read(guest %u, 0x%" PRIx64 ", %" PRIu64 ")", b.gi, gpa, len);
		return;
	}
	check_range(w, b.gi, gpa, len, w->buf);
}

static void op_write(struct worker *w)
{
	struct stress *s = w->s;
	struct block b;
	struct seg ns = new_seg(w);
	uint64_t gpa, len, end, first, last, p, ps, pe;
	int rc;

	pick_range(w, &b, &gpa, &len);
	end = gpa + len;
	first = gpa / PAGE;
	last = (end - 1) / PAGE;
	/* Widen a partial first or last page that would need too many runs. */
	if (!overlay_fits(s, &s->pm[b.gi][first], first, (unsigned)(gpa - first * PAGE),
			  (unsigned)((first == last ? end : first * PAGE + page_len(s, first)) -
				     first * PAGE), ns)) {
		gpa = first * PAGE;
		if (first == last)
			end = first * PAGE + page_len(s, first);
	}
	if (last != first &&
	    !overlay_fits(s, &s->pm[b.gi][last], last, 0, (unsigned)(end - last * PAGE), ns))
		end = last * PAGE + page_len(s, last);
	len = end - gpa;

	set_current(w, OP_WRITE, b.gi, gpa);
	for (p = first; p <= last; p++) {
		ps = p == first ? gpa - p * PAGE : 0;
		pe = p == last ? end - p * PAGE : page_len(s, p);
		seg_fill(w, b.gi, p, &ns, (unsigned)ps, (unsigned)pe, w->buf + (p * PAGE + ps - gpa));
	}
	rc = umlmem_write(s->g[b.gi], gpa, w->buf, len);
	w->c.writes++;
	if (rc) {
		lib_error(w, rc, "umlmem_write(guest %u, 0x%" PRIx64 ", %" PRIu64 ")", b.gi, gpa, len);
		model_unknown(w, b.gi, first, last);
		return;
	}
	for (p = first; p <= last; p++) {
		ps = p == first ? gpa - p * PAGE : 0;
		pe = p == last ? end - p * PAGE : page_len(s, p);
		model_apply(w, b.gi, p, (unsigned)ps, (unsigned)pe, ns);
	}
}

/* Whole pages of a few fixed patterns or zeros: the duplicates merging
 * lives on. */
static void op_fill(struct worker *w)
{
	struct stress *s = w->s;
	struct seg ns[MAX_OP_PAGES];
	struct block b;
	uint64_t first = pick_page(w, &b), n, i, gpa, len;
	int rc;

	n = 1 + rng_below(&w->rng, MAX_OP_PAGES);
	if (n > b.end - first)
		n = b.end - first;
	gpa = first * PAGE;
	len = 0;
	set_current(w, OP_FILL, b.gi, gpa);
	for (i = 0; i < n; i++) {
		ns[i].kind = rng_below(&w->rng, 5) ? SEG_PAT : SEG_ZERO;
		ns[i].pat = (uint8_t)rng_below(&w->rng, NPAT);
		ns[i].stamp = 0;
		seg_fill(w, b.gi, first + i, &ns[i], 0, (unsigned)page_len(s, first + i),
			 w->buf + i * PAGE);
		len += page_len(s, first + i);
	}
	rc = umlmem_write(s->g[b.gi], gpa, w->buf, len);
	w->c.fills++;
	if (rc) {
		lib_error(w, rc, "umlmem_write(guest %u, 0x%" PRIx64 ", %" PRIu64 ") of whole pages",
			  b.gi, gpa, len);
		model_unknown(w, b.gi, first, first + n - 1);
		return;
	}
	for (i = 0; i < n; i++)
		model_apply(w, b.gi, first + i, 0, (unsigned)page_len(s, first + i), ns[i]);
}

/* Writes a random run of a write-pinned page through its pointer. */
static void pin_write(struct worker *w, const struct pin *pn)
{
	struct stress *s = w->s;
	unsigned plen = (unsigned)page_len(s, pn->page), lo, hi;
	struct seg ns = new_seg(w);

	lo = (unsigned)rng_below(&w->rng, plen);
	hi = lo + 1 + (unsigned)rng_below(&w->rng, plen - lo);
	if (!overlay_fits(s, &s->pm[pn->gi][pn->page], pn->page, lo, hi, ns)) {
		lo = 0;
		hi = plen;
	}
	seg_fill(w, pn->gi, pn->page, &ns, lo, hi, pn->p + lo);
	model_apply(w, pn->gi, pn->page, lo, hi, ns);
	w->c.pin_writes++;
}

static void pin_check(struct worker *w, const struct pin *pn)
{
	check_page(w, pn->gi, pn->page, 0, (unsigned)page_len(w->s, pn->page), pn->p);
	w->c.pin_checks++;
}

static void drop_pin(struct worker *w, unsigned i)
{
	struct pin *pn = &w->pins[i];
	int rc;

	set_current(w, OP_UNPIN, pn->gi, pn->page * PAGE);
	pin_check(w, pn);
	rc = umlmem_unpin(w->s->g[pn->gi], pn->page * PAGE);
	w->c.unpins++;
	if (rc)
		lib_error(w, rc, "umlmem_unpin(guest %u, 0x%" PRIx64 ") of a pinned page",
			  pn->gi, pn->page * PAGE);
	w->pins[i] = w->pins[--w->npins];
}

static void op_pin(struct worker *w)
{
	static const unsigned acc[3] = { UMLMEM_READ, UMLMEM_WRITE, UMLMEM_READ | UMLMEM_WRITE };
	struct pin pn;
	struct block b;
	void *p = NULL;
	int rc, old;

	if (w->npins >= w->s->max_pins)
		drop_pin(w, (unsigned)rng_below(&w->rng, w->npins));
	if (w->npins && rng_below(&w->rng, 4) == 0) {
		/* nest a second pin on a page already held */
		pn = w->pins[rng_below(&w->rng, w->npins)];
	} else {
		pn.page = pick_page(w, &b);
		pn.gi = b.gi;
	}
	pn.access = acc[rng_below(&w->rng, 3)];
	set_current(w, OP_PIN, pn.gi, pn.page * PAGE);
	rc = umlmem_pin(w->s->g[pn.gi], pn.page * PAGE, pn.access, &p);
	w->c.pins++;
	if (rc) {
		lib_error(w, rc, "umlmem_pin(guest %u, 0x%" PRIx64 ", %s)", pn.gi, pn.page * PAGE,
			  pn.access == UMLMEM_READ ? "READ" :
			  pn.access == UMLMEM_WRITE ? "WRITE" : "READ|WRITE");
		return;
	}
	pn.p = p;
	old = find_pin(w, pn.gi, pn.page);
	/* A pinned page never moves, so a nested pin sees the same bytes. */
	if (old >= 0 && w->pins[old].p != pn.p) {
		char what[256];

		snprintf(what, sizeof(what), "umlmem_pin(guest %u, 0x%" PRIx64 ") of a page "
			 "already pinned gave %p, the first pin %p: a pinned page moved",
			 pn.gi, pn.page * PAGE, (void *)pn.p, (void *)w->pins[old].p);
		fail_line(w, what);
	}
	w->pins[w->npins++] = pn;
	pin_check(w, &pn);
	if ((pn.access & UMLMEM_WRITE) && rng_below(&w->rng, 2))
		pin_write(w, &pn);
}

static void op_pinned(struct worker *w)
{
	struct pin *pn;

	if (!w->npins) {
		op_pin(w);
		return;
	}
	pn = &w->pins[rng_below(&w->rng, w->npins)];
	set_current(w, OP_PINNED, pn->gi, pn->page * PAGE);
	if (write_pinned(w, pn->gi, pn->page) && rng_below(&w->rng, 2))
		pin_write(w, pn);
	else
		pin_check(w, pn);
}

static void op_unpin(struct worker *w)
{
	if (!w->npins) {
		op_pin(w);
		return;
	}
	drop_pin(w, (unsigned)rng_below(&w->rng, w->npins));
}

static void op_discard(struct worker *w)
{
	struct stress *s = w->s;
	struct block b;
	uint64_t first = pick_page(w, &b), n, i, gpa, len;
	bool pinned = false;
	int rc;

	n = 1 + rng_below(&w->rng, MAX_OP_PAGES);
	if (n > b.end - first)
		n = b.end - first;
	gpa = first * PAGE;
	/* whole pages, or up to exactly the end of the guest */
	len = (first + n) * PAGE < s->guest_bytes ? n * PAGE : s->guest_bytes - gpa;
	for (i = 0; i < n; i++)
		if (find_pin(w, b.gi, first + i) >= 0)
			pinned = true;
	set_current(w, OP_DISCARD, b.gi, gpa);
	rc = umlmem_discard(s->g[b.gi], gpa, len);
	w->c.discards++;
	if (pinned) {
		w->c.busy_discards++;
		if (rc != -EBUSY)
			unexpected(w, rc, -EBUSY, "umlmem_discard of a range with a pinned page");
		if (rc == 0)
			model_unknown(w, b.gi, first, first + n - 1);
		return;
	}
	if (rc) {
		lib_error(w, rc, "umlmem_discard(guest %u, 0x%" PRIx64 ", %" PRIu64 ")",
			  b.gi, gpa, len);
		model_unknown(w, b.gi, first, first + n - 1);
		return;
	}
	for (i = 0; i < n; i++) {
		struct page_model *m = &s->pm[b.gi][first + i];

		m->n = 1;
		m->s[0] = (struct seg){ (uint16_t)page_len(s, first + i), SEG_ZERO, 0, 0 };
		m->last_op = w->opno;
		m->last_kind = OP_DISCARD;
	}
}

static void op_dedup(struct worker *w)
{
	uint64_t merged = 0, pages = 64 + rng_below(&w->rng, 960);
	int rc;

	set_current(w, OP_DEDUP, 0, 0);
	rc = umlmem_dedup_scan(w->s->host, pages, &merged);
	w->c.scans++;
	if (rc)
		lib_error(w, rc, "umlmem_dedup_scan(%" PRIu64 " pages)", pages);
	else
		w->c.merged += merged;
}

/*
 * A call that breaks a documented rule. It must fail with the documented
 * error and change nothing; what it might have changed is in this thread's
 * pages (or, for the end of a guest, checked by its owner), so a call that
 * wrongly did something shows as a mismatch later too.
 */
static void op_bad(struct worker *w)
{
	struct stress *s = w->s;
	struct block b;
	uint64_t page = pick_page(w, &b), gpa, len, over, i;
	umlmem_guest *g = s->g[b.gi];
	void *p = NULL;
	int rc, want;

	set_current(w, OP_BAD, b.gi, page * PAGE);
	switch (rng_below(&w->rng, 7)) {
	case 0:		/* read across or beyond the end: nothing copied */
	case 1:		/* write across or beyond the end: nothing written */
		over = s->guest_bytes < PAGE ? s->guest_bytes : PAGE;
		gpa = s->guest_bytes - rng_below(&w->rng, over + 1);
		len = s->guest_bytes - gpa + 1 + rng_below(&w->rng, PAGE);
		if (rng_below(&w->rng, 8) == 0) {
			/* so that gpa + len wraps around */
			gpa = UINT64_MAX - rng_below(&w->rng, PAGE);
			len = PAGE;
		}
		memset(w->buf, 0xa5, len);
		w->c.bad_calls++;
		if (rng_below(&w->rng, 2)) {
			rc = umlmem_read(g, gpa, w->buf, len);
			if (rc != -EFAULT) {
				unexpected(w, rc, -EFAULT, "umlmem_read beyond the guest's end");
				return;
			}
			for (i = 0; i < len; i++)
				if (w->buf[i] != 0xa5)
					break;
			if (i < len) {
				char what[256];

				snprintf(what, sizeof(what), "umlmem_read(guest %u, 0x%" PRIx64
					 ", %" PRIu64 ") beyond the end failed as it should but "
					 "copied bytes anyway", b.gi, gpa, len);
				fail_line(w, what);
			}
		} else {
			rc = umlmem_write(g, gpa, w->buf, len);
			if (rc != -EFAULT)
				unexpected(w, rc, -EFAULT, "umlmem_write beyond the guest's end");
		}
		return;
	case 2:		/* misaligned pin */
		gpa = page * PAGE + 1 + rng_below(&w->rng, page_len(s, page) > 1 ?
						  page_len(s, page) - 1 : 1);
		rc = umlmem_pin(g, gpa, UMLMEM_READ, &p);
		want = -EINVAL;
		if (rc == 0)
			umlmem_unpin(g, gpa & ~(PAGE - 1));
		/* past the end as well: either rule may be the one reported */
		if (gpa >= s->guest_bytes && rc == -EFAULT)
			rc = -EINVAL;
		break;
	case 3:		/* no access, or an unknown access bit */
		rc = umlmem_pin(g, page * PAGE, rng_below(&w->rng, 2) ? 0 : 0x4, &p);
		want = -EINVAL;
		if (rc == 0)
			umlmem_unpin(g, page * PAGE);
		break;
	case 4:		/* unpin of a page this thread has not pinned */
		if (find_pin(w, b.gi, page) >= 0)
			return;
		rc = umlmem_unpin(g, page * PAGE);
		want = -EINVAL;
		break;
	case 5:		/* discard at a misaligned address */
		gpa = page * PAGE + 1 + rng_below(&w->rng, PAGE - 1);
		rc = umlmem_discard(g, gpa, PAGE);
		/* past the end as well: either rule may be the one reported */
		if (gpa + PAGE > s->guest_bytes && rc == -EFAULT)
			rc = -EINVAL;
		want = -EINVAL;
		break;
	default:	/* discard of a part of a page that does not end the guest */
		len = 1 + rng_below(&w->rng, PAGE - 1);
		if (page * PAGE + len >= s->guest_bytes)
			return;
		rc = umlmem_discard(g, page * PAGE, len);
		want = -EINVAL;
		break;
	}
	w->c.bad_calls++;
	if (rc != want)
		unexpected(w, rc, want, "a call that breaks a documented rule");
}

/* ------------------------------------------------------------------------ */
/* Threads                                                                  */
/* ------------------------------------------------------------------------ */

static void random_ops(struct worker *w)
{
	struct stress *s = w->s;
	uint64_t r;

	while (w->by_ops ? w->c.ops < w->quota :
	       !atomic_load_explicit(&s->stop, memory_order_relaxed)) {
		w->opno++;
		r = rng_below(&w->rng, 1000);
		if (r < 340)
			op_read(w);
		else if (r < 590)
			op_write(w);
		else if (r < 690)
			op_fill(w);
		else if (r < 760)
			op_pin(w);
		else if (r < 820)
			op_pinned(w);
		else if (r < 880)
			op_unpin(w);
		else if (r < 930)
			op_discard(w);
		else if (r < 960 && s->dedup)
			op_dedup(w);
		else if (r < 960)
			op_read(w);
		else
			op_bad(w);
		w->c.ops++;
		atomic_store_explicit(&w->a_ops, w->c.ops, memory_order_relaxed);
	}
	while (w->npins)
		drop_pin(w, w->npins - 1);
}

/* Reads every owned block back whole and compares every byte. */
static void final_check(struct worker *w)
{
	struct stress *s = w->s;
	struct block b;
	uint64_t k, gpa, len;
	int rc;

	w->op = OP_FINAL;
	w->opno = 0;
	for (k = w->id; k < s->total_blocks; k += s->threads) {
		block_of(s, k, &b);
		gpa = b.first * PAGE;
		len = block_bytes_end(s, &b) - gpa;
		w->opno++;
		set_current(w, OP_FINAL, b.gi, gpa);
		memset(w->buf, (k & 1) ? 0xa5 : 0x5a, len);
		rc = umlmem_read(s->g[b.gi], gpa, w->buf, len);
		if (rc) {
			lib_error(w, rc, "umlmem_read(guest %u, 0x%" PRIx64 ", %" PRIu64 ")",
				  b.gi, gpa, len);
			continue;
		}
		check_range(w, b.gi, gpa, len, w->buf);
		for (uint64_t p = b.first; p < b.end; p++)
			if (!s->pm[b.gi][p].unknown)
				w->c.checked_bytes += page_len(s, p);
		atomic_store_explicit(&w->a_checked, w->c.checked_bytes, memory_order_relaxed);
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct stress *s = w->s;

	random_ops(w);
	set_current(w, OP_NONE, 0, 0);
	/* The final check starts when no thread does random operations any
	 * more, so it sees the guests at rest (but for the pager and the
	 * merge thread). */
	pthread_barrier_wait(&s->barrier);
	atomic_fetch_add(&s->final_started, 1);
	final_check(w);
	set_current(w, OP_NONE, 0, 0);
	atomic_fetch_add(&s->finished, 1);
	return NULL;
}

/* ------------------------------------------------------------------------ */
/* Setup, progress, results                                                 */
/* ------------------------------------------------------------------------ */

static void stress_usage(FILE *f)
{
	fprintf(f,
		"usage: %s stress [OPTIONS]\n\n"
		"Threads of random reads, writes, whole-page fills, pins (written through\n"
		"when writable), unpins, discards, merge scans and deliberately invalid\n"
		"calls on several guests of an overcommitted host. Each thread owns its\n"
		"own pages and checks every byte it reads against its model of them; at\n"
		"the end every guest is read back whole and compared. Exits 0 only when\n"
		"nothing differed, no call failed unexpectedly, and the final check\n"
		"covered every byte.\n\n"
		"options:\n"
		"  --threads N         worker threads (default 4, at most %u)\n"
		"  --guests N          number of guests (default 8)\n"
		"  --guest-size SIZE   nominal RAM per guest (default 64M)\n"
		"  --budget SIZE       host budget of resident RAM (default 64M)\n"
		"  --seconds S         run for S seconds (default 20)\n"
		"  --ops N             run N operations in all instead (split over the threads)\n"
		"  --swap-dir DIR      directory for the swap files\n"
		"                      (default: $TMPDIR, else /var/tmp)\n"
		"  --seed N            seed of every thread's operations (default 1)\n"
		"  --background        reclaim (and merge) threads in the library\n"
		"  --no-background     none (default)\n"
		"  --dedup             merge pages: the threads call umlmem_dedup_scan, and\n"
		"                      with --background the merge thread runs\n"
		"  --no-dedup          never merge (default)\n"
		"  --json              print one JSON object on stdout, progress on stderr\n"
		"  --quiet             no progress lines\n"
		"  -h, --help          this help\n\n"
		"SIZE is bytes, or a number with K, M, G, T (or KiB, MiB, GiB, TiB):\n"
		"powers of 1024. With --threads 1 --ops N and no --background a run\n"
		"repeats the same operations exactly.\n", PROG, MAX_THREADS);
}

/* Returns 0 to run, -1 after --help, or an exit status. */
static int stress_parse(struct stress *s, int argc, char **argv)
{
	enum { O_THREADS = 1, O_GUESTS, O_SIZE, O_BUDGET, O_SECONDS, O_OPS, O_SWAPDIR,
	       O_SEED, O_BG, O_NOBG, O_DEDUP, O_NODEDUP, O_JSON, O_QUIET, O_HELP };
	static const struct cli_opt opts[] = {
		{ "--threads", true, O_THREADS },
		{ "--guests", true, O_GUESTS },
		{ "--guest-size", true, O_SIZE },
		{ "--budget", true, O_BUDGET },
		{ "--seconds", true, O_SECONDS },
		{ "--ops", true, O_OPS },
		{ "--swap-dir", true, O_SWAPDIR },
		{ "--seed", true, O_SEED },
		{ "--background", false, O_BG },
		{ "--no-background", false, O_NOBG },
		{ "--dedup", false, O_DEDUP },
		{ "--no-dedup", false, O_NODEDUP },
		{ "--json", false, O_JSON },
		{ "--quiet", false, O_QUIET },
		{ "--help", false, O_HELP },
		{ "-h", false, O_HELP },
		{ NULL, false, 0 },
	};
	bool have_seconds = false;
	uint64_t v, frames, need;
	const char *arg;
	int i = 1, id;

	while ((id = cli_next(argc, argv, &i, opts, &arg)) != OPT_END) {
		switch (id) {
		case OPT_ERR:
			return EXIT_USAGE;
		case OPT_POSITIONAL:
			usage_error("unexpected argument '%s'", arg);
			return EXIT_USAGE;
		case O_HELP:
			stress_usage(stdout);
			return -1;
		case O_THREADS:
			if (!opt_u64("--threads", arg, 1, MAX_THREADS, &v))
				return EXIT_USAGE;
			s->threads = (unsigned)v;
			break;
		case O_GUESTS:
			if (!opt_u64("--guests", arg, 1, MAX_GUESTS, &v))
				return EXIT_USAGE;
			s->guests = (unsigned)v;
			break;
		case O_SIZE:
			if (!parse_size(arg, &v) || v < 1 || v > UMLMEM_MAX_GUEST_BYTES) {
				usage_error("--guest-size '%s': expected a size from 1 byte to 128T "
					    "(bytes, or with K, M, G, T)", arg);
				return EXIT_USAGE;
			}
			s->guest_bytes = v;
			break;
		case O_BUDGET:
			if (!opt_size("--budget", arg, 0, UINT64_MAX, &v))
				return EXIT_USAGE;
			/* the library rounds down; work with what it uses */
			s->budget_bytes = v / PAGE * PAGE;
			break;
		case O_SECONDS:
			if (!opt_seconds("--seconds", arg, 86400, &s->seconds))
				return EXIT_USAGE;
			have_seconds = true;
			break;
		case O_OPS:
			if (!parse_u64(arg, &v) || v < 1) {
				usage_error("--ops '%s': expected a whole number of at least 1", arg);
				return EXIT_USAGE;
			}
			s->ops_total = v;
			break;
		case O_SWAPDIR:
			if (!opt_dir("--swap-dir", arg))
				return EXIT_USAGE;
			s->swap_dir = arg;
			break;
		case O_SEED:
			if (!parse_u64(arg, &s->seed)) {
				usage_error("--seed '%s': expected a whole number from 0 to %" PRIu64
					    " (decimal or 0x hex)", arg, UINT64_MAX);
				return EXIT_USAGE;
			}
			break;
		case O_BG:
			s->background = true;
			break;
		case O_NOBG:
			s->background = false;
			break;
		case O_DEDUP:
			s->dedup = true;
			break;
		case O_NODEDUP:
			s->dedup = false;
			break;
		case O_JSON:
			s->json = true;
			break;
		case O_QUIET:
			s->quiet = true;
			break;
		}
	}
	if (have_seconds && s->ops_total) {
		usage_error("--seconds and --ops exclude each other: give one");
		return EXIT_USAGE;
	}
	if (s->guest_bytes > UINT64_MAX / s->guests) {
		usage_error("%u guests of %" PRIu64 " bytes overflow 64 bits", s->guests,
			    s->guest_bytes);
		return EXIT_USAGE;
	}
	s->guest_pages = (s->guest_bytes + PAGE - 1) / PAGE;
	s->guest_blocks = (s->guest_pages + BLOCK_PAGES - 1) / BLOCK_PAGES;
	s->total_blocks = s->guest_blocks * s->guests;
	if (s->total_blocks < s->threads) {
		usage_error("%u threads need at least %u blocks of %u pages to own, and %u "
			    "guest%s of %" PRIu64 " bytes make%s %" PRIu64 ": raise --guests or "
			    "--guest-size, or lower --threads", s->threads, s->threads, BLOCK_PAGES,
			    s->guests, s->guests > 1 ? "s" : "", s->guest_bytes,
			    s->guests > 1 ? "" : "s", s->total_blocks);
		return EXIT_USAGE;
	}
	/* Pins hold frames; kept to an eighth of the budget so that faults
	 * always find a frame to evict and -ENOMEM can never be the answer. */
	frames = s->budget_bytes / PAGE;
	need = (uint64_t)s->threads * 8 > 64 ? (uint64_t)s->threads * 8 : 64;
	if (frames < need) {
		usage_error("--budget: %u thread%s need a budget of at least %" PRIu64
			    " pages (%" PRIu64 " bytes), 8 per thread and 64 in all",
			    s->threads, s->threads > 1 ? "s" : "", need, need * PAGE);
		return EXIT_USAGE;
	}
	s->max_pins = (unsigned)(frames / 8 / s->threads < MAX_PINS ?
				 frames / 8 / s->threads : MAX_PINS);
	return 0;
}

static int stress_setup(struct stress *s)
{
	struct umlmem_host_config hc;
	struct umlmem_guest_config gc;
	const char *why = NULL;
	char name[32];
	unsigned i, t;
	uint64_t w;
	int rc;

	s->pat = aligned_alloc(PAGE, NPAT * PAGE);
	s->g = calloc(s->guests, sizeof(*s->g));
	s->pm = calloc(s->guests, sizeof(*s->pm));
	s->w = calloc(s->threads, sizeof(*s->w));
	if (!s->pat || !s->g || !s->pm || !s->w) {
		fprintf(stderr, "%s %s: out of memory\n", PROG, CMD);
		return -ENOMEM;
	}
	/* calloc: pages never touched cost no memory (see the top comment) */
	for (i = 0; i < s->guests; i++) {
		s->pm[i] = calloc(s->guest_pages, sizeof(**s->pm));
		if (!s->pm[i]) {
			fprintf(stderr, "%s %s: out of memory for the model of %u guests of %" PRIu64
				" pages (%zu bytes a page)\n", PROG, CMD, s->guests,
				s->guest_pages, sizeof(**s->pm));
			return -ENOMEM;
		}
	}
	/* Pattern 0 is one byte repeated, the others noise: both common in
	 * real memory, and neither all zeros. */
	memset(s->pat[0], 0x5a, PAGE);
	for (i = 1; i < NPAT; i++)
		for (w = 0; w < PAGE / 8; w++) {
			uint64_t v = mix64(s->seed ^ mix64(i * RNG_GOLDEN + w));

			memcpy(s->pat[i] + w * 8, &v, 8);
		}
	for (t = 0; t < s->threads; t++) {
		struct worker *wk = &s->w[t];

		wk->s = s;
		wk->id = t;
		wk->rng = mix64(s->seed ^ mix64(((uint64_t)t + 1) * RNG_GOLDEN));
		wk->key = mix64(wk->rng ^ 0x5354524553530000ull);
		wk->nblocks = (s->total_blocks - t + s->threads - 1) / s->threads;
		wk->by_ops = s->ops_total != 0;
		if (s->ops_total)
			wk->quota = s->ops_total / s->threads + (t < s->ops_total % s->threads);
		wk->buf = aligned_alloc(PAGE, BLOCK_PAGES * PAGE);
		wk->want = aligned_alloc(PAGE, PAGE);
		if (!wk->buf || !wk->want) {
			fprintf(stderr, "%s %s: out of memory\n", PROG, CMD);
			return -ENOMEM;
		}
	}

	umlmem_host_config_init(&hc);
	hc.resident_bytes = s->budget_bytes;
	hc.swap_dir = s->swap_dir;
	if (s->background)
		hc.flags |= UMLMEM_BACKGROUND;
	rc = umlmem_host_create(&hc, &s->host);
	if (rc) {
		s->host = NULL;
		snprintf(s->error, sizeof(s->error), "creating the host (budget %" PRIu64
			 " bytes%s%s): %s: %s", s->budget_bytes, s->swap_dir ? ", swap dir " : "",
			 s->swap_dir ? s->swap_dir : "", umlmem_strerror(rc), umlmem_errmsg());
		fprintf(stderr, "%s %s: %s\n", PROG, CMD, s->error);
		return rc;
	}
	s->engine = umlmem_host_io_engine(s->host, &why);
	snprintf(s->engine_why, sizeof(s->engine_why), "%s", why ? why : "");
	if (s->background && !s->dedup) {
		rc = umlmem_dedup_pause(s->host, 1);
		if (rc) {
			snprintf(s->error, sizeof(s->error), "pausing the merge thread: %s: %s",
				 umlmem_strerror(rc), umlmem_errmsg());
			fprintf(stderr, "%s %s: %s\n", PROG, CMD, s->error);
			return rc;
		}
	}
	for (i = 0; i < s->guests; i++) {
		umlmem_guest_config_init(&gc);
		gc.ram_bytes = s->guest_bytes;
		snprintf(name, sizeof(name), "stress%u", i);
		gc.name = name;
		rc = umlmem_guest_create(s->host, &gc, &s->g[i]);
		if (rc) {
			s->g[i] = NULL;
			snprintf(s->error, sizeof(s->error), "creating guest %u of %u (%" PRIu64
				 " bytes): %s: %s", i + 1, s->guests, s->guest_bytes,
				 umlmem_strerror(rc), umlmem_errmsg());
			fprintf(stderr, "%s %s: %s\n", PROG, CMD, s->error);
			return rc;
		}
		s->created++;
	}
	return 0;
}

static int sample(struct stress *s)
{
	int rc = umlmem_host_stats(s->host, &s->st);

	if (rc)
		return rc;
	s->have_stats = true;
	if (s->st.frames_used > s->peak_frames)
		s->peak_frames = s->st.frames_used;
	return 0;
}

static uint64_t sum_ops(struct stress *s)
{
	uint64_t n = 0;

	for (unsigned t = 0; t < s->threads; t++)
		n += atomic_load_explicit(&s->w[t].a_ops, memory_order_relaxed);
	return n;
}

static uint64_t sum_checked(struct stress *s)
{
	uint64_t n = 0;

	for (unsigned t = 0; t < s->threads; t++)
		n += atomic_load_explicit(&s->w[t].a_checked, memory_order_relaxed);
	return n;
}

static void progress(struct stress *s, double now, uint64_t ops, uint64_t dops, double dt)
{
	uint64_t nominal = (uint64_t)s->guests * s->guest_bytes;
	char phase[32];

	if (sample(s) || s->quiet)
		return;
	if (atomic_load(&s->final_started))
		snprintf(phase, sizeof(phase), "final %3u%%",
			 (unsigned)(sum_checked(s) * 100 / (nominal ? nominal : 1)));
	else
		snprintf(phase, sizeof(phase), "%9.0f op/s", dt > 0 ? (double)dops / dt : 0.0);
	fprintf(stderr, "stress %6.1f s  ops %10" PRIu64 "  %s  resident %6.1f MiB  "
		"swapped %7.1f MiB  shared %7" PRIu64 "  mismatches %" PRIu64 "  errors %" PRIu64 "\n",
		now - s->t0, ops, phase, (double)(s->st.resident_pages * PAGE) / MIB,
		(double)(s->st.swapped_pages * PAGE) / MIB, s->st.sharing_pages,
		atomic_load(&s->a_mismatches), atomic_load(&s->a_errors));
	fflush(stderr);
}

static void print_json(struct stress *s, FILE *f, bool verified);

/* No op has completed for STALL_S seconds: a hang in the library (or a
 * machine stopped). Says what each thread was doing, and ends the process,
 * since the stuck threads cannot be taken back. */
static void __attribute__((noreturn)) stalled(struct stress *s, double since)
{
	char line[1024];

	fprintf(stderr, "%s %s: HANG: no operation completed for %.0f s; the threads are in:\n",
		PROG, CMD, since);
	for (unsigned t = 0; t < s->threads; t++) {
		struct worker *w = &s->w[t];
		int op = atomic_load(&w->a_op);

		fprintf(stderr, "  thread %u: %s, guest %u, gpa 0x%" PRIx64 ", after %" PRIu64
			" ops\n", t, op_name[op >= 0 && op < NOPS ? op : OP_NONE],
			atomic_load(&w->a_gi), atomic_load(&w->a_gpa), atomic_load(&w->a_ops));
	}
	snprintf(line, sizeof(line), "no operation completed for %.0f s (hang)", since);
	pthread_mutex_lock(&s->lock);
	if (!s->error[0])
		snprintf(s->error, sizeof(s->error), "%s", line);
	pthread_mutex_unlock(&s->lock);
	/* Only what can be read without the library: it may hold its locks. */
	s->have_stats = false;
	s->wall_s = now_s() - s->t0;
	for (unsigned t = 0; t < s->threads; t++) {
		s->tot.ops += atomic_load(&s->w[t].a_ops);
		s->tot.checked_bytes += atomic_load(&s->w[t].a_checked);
	}
	s->tot.errors = atomic_load(&s->a_errors) + 1;
	s->tot.mismatches = atomic_load(&s->a_mismatches);
	if (s->json)
		print_json(s, stdout, false);
	fflush(stdout);
	fflush(stderr);
	_exit(1);
}

/* Starts the workers, prints progress, stops them; returns 0 or -errno. */
static int stress_run(struct stress *s)
{
	double now, last = 0, next, stall_t;
	uint64_t ops, last_ops = 0, stall_mark = UINT64_MAX, mark;
	unsigned t;
	int rc;

	rc = pthread_barrier_init(&s->barrier, NULL, s->threads);
	if (rc) {
		fprintf(stderr, "%s %s: pthread_barrier_init: %s\n", PROG, CMD, strerror(rc));
		return -rc;
	}
	s->t0 = last = stall_t = now_s();
	next = s->t0 + PROGRESS_S;
	for (t = 0; t < s->threads; t++) {
		rc = pthread_create(&s->w[t].tid, NULL, worker_main, &s->w[t]);
		if (rc) {
			/* The barrier counts on every thread: without them all
			 * the started ones would wait for ever. */
			fprintf(stderr, "%s %s: cannot start thread %u: %s\n", PROG, CMD, t,
				strerror(rc));
			_exit(1);
		}
	}
	while (atomic_load(&s->finished) < s->threads) {
		sleep_s(0.05);
		now = now_s();
		if (!s->ops_total && now - s->t0 >= s->seconds)
			atomic_store(&s->stop, true);
		ops = sum_ops(s);
		if (now >= next) {
			progress(s, now, ops, ops - last_ops, now - last);
			last = now;
			last_ops = ops;
			while (next <= now)
				next += PROGRESS_S;
		}
		mark = ops + sum_checked(s) + atomic_load(&s->final_started);
		if (mark != stall_mark) {
			stall_mark = mark;
			stall_t = now;
		} else if (now - stall_t >= STALL_S) {
			stalled(s, now - stall_t);
		}
		if (!atomic_load(&s->final_started))
			s->run_s = now - s->t0;
	}
	for (t = 0; t < s->threads; t++)
		pthread_join(s->w[t].tid, NULL);
	pthread_barrier_destroy(&s->barrier);
	return 0;
}

/*
 * Accounting the library promises. Checked when the workers are done; the
 * library's own threads may still be mid-call, so a broken sum is sampled
 * again a few times before it is reported.
 */
static void check_counters(struct stress *s)
{
	const struct umlmem_stats *st = &s->st;
	uint64_t want_pages = (uint64_t)s->guests * s->guest_pages;
	int i;

	for (i = 0; i < 20; i++) {
		if (sample(s))
			return;
		if (st->resident_pages + st->swapped_pages + st->zero_pages == st->ram_pages)
			break;
		sleep_s(0.01);
	}
	if (st->ram_pages != want_pages) {
		fprintf(stderr, "%s %s: warning: ram_pages is %" PRIu64 ", expected %" PRIu64 "\n",
			PROG, CMD, st->ram_pages, want_pages);
		s->warnings++;
	}
	if (st->resident_pages + st->swapped_pages + st->zero_pages != st->ram_pages) {
		fprintf(stderr, "%s %s: warning: resident %" PRIu64 " + swapped %" PRIu64
			" + zero %" PRIu64 " != ram_pages %" PRIu64 "\n", PROG, CMD,
			st->resident_pages, st->swapped_pages, st->zero_pages, st->ram_pages);
		s->warnings++;
	}
	if (s->peak_frames > s->budget_bytes / PAGE) {
		fprintf(stderr, "%s %s: warning: %" PRIu64 " frames in use, above the budget of %"
			PRIu64 "\n", PROG, CMD, s->peak_frames, s->budget_bytes / PAGE);
		s->warnings++;
	}
}

static void collect(struct stress *s)
{
	struct counters *c = &s->tot;
	uint64_t nominal = (uint64_t)s->guests * s->guest_bytes;

	for (unsigned t = 0; t < s->threads; t++) {
		const struct counters *w = &s->w[t].c;

		c->ops += w->ops;
		c->reads += w->reads;
		c->writes += w->writes;
		c->fills += w->fills;
		c->pins += w->pins;
		c->pin_checks += w->pin_checks;
		c->pin_writes += w->pin_writes;
		c->unpins += w->unpins;
		c->discards += w->discards;
		c->busy_discards += w->busy_discards;
		c->scans += w->scans;
		c->merged += w->merged;
		c->bad_calls += w->bad_calls;
		c->errors += w->errors;
		c->mismatches += w->mismatches;
		c->mismatched_bytes += w->mismatched_bytes;
		c->checked_bytes += w->checked_bytes;
	}
	s->final_complete = c->checked_bytes == nominal;
}

static bool stress_verified(const struct stress *s)
{
	return s->final_complete && !s->error[0] && s->tot.errors == 0 &&
	       s->tot.mismatches == 0;
}

static void print_json(struct stress *s, FILE *f, bool verified)
{
	const struct counters *c = &s->tot;
	const struct umlmem_stats *st = &s->st;

	fprintf(f, "{");
	fprintf(f, "\"verified\": %s, ", verified ? "true" : "false");
	fprintf(f, "\"ops\": %" PRIu64 ", ", c->ops);
	fprintf(f, "\"mismatches\": %" PRIu64 ", ", c->mismatches);
	fprintf(f, "\"mismatched_bytes\": %" PRIu64 ", ", c->mismatched_bytes);
	fprintf(f, "\"errors\": %" PRIu64 ", ", c->errors);
	fprintf(f, "\"reads\": %" PRIu64 ", ", c->reads);
	fprintf(f, "\"writes\": %" PRIu64 ", ", c->writes + c->fills);
	fprintf(f, "\"fills\": %" PRIu64 ", ", c->fills);
	fprintf(f, "\"pins\": %" PRIu64 ", ", c->pins);
	fprintf(f, "\"pin_checks\": %" PRIu64 ", ", c->pin_checks);
	fprintf(f, "\"pin_writes\": %" PRIu64 ", ", c->pin_writes);
	fprintf(f, "\"unpins\": %" PRIu64 ", ", c->unpins);
	fprintf(f, "\"discards\": %" PRIu64 ", ", c->discards);
	fprintf(f, "\"busy_discards\": %" PRIu64 ", ", c->busy_discards);
	fprintf(f, "\"dedup_scans\": %" PRIu64 ", ", c->scans);
	fprintf(f, "\"scan_merged\": %" PRIu64 ", ", c->merged);
	fprintf(f, "\"bad_calls\": %" PRIu64 ", ", c->bad_calls);
	fprintf(f, "\"final_checked_bytes\": %" PRIu64 ", ", c->checked_bytes);
	fprintf(f, "\"final_complete\": %s, ", s->final_complete ? "true" : "false");
	fprintf(f, "\"wall_s\": %.3f, ", s->wall_s);
	fprintf(f, "\"run_s\": %.3f, ", s->run_s);
	fprintf(f, "\"ops_per_s\": %.1f, ", s->run_s > 0 ? (double)c->ops / s->run_s : 0.0);
	fprintf(f, "\"threads\": %u, ", s->threads);
	fprintf(f, "\"guests\": %u, ", s->guests);
	fprintf(f, "\"guest_bytes\": %" PRIu64 ", ", s->guest_bytes);
	fprintf(f, "\"budget_bytes\": %" PRIu64 ", ", s->budget_bytes);
	fprintf(f, "\"seed\": %" PRIu64 ", ", s->seed);
	fprintf(f, "\"background\": %s, ", s->background ? "true" : "false");
	fprintf(f, "\"dedup\": %s, ", s->dedup ? "true" : "false");
	if (s->have_stats) {
		fprintf(f, "\"faults\": %" PRIu64 ", ", st->faults);
		fprintf(f, "\"swap_ins\": %" PRIu64 ", ", st->swap_ins);
		fprintf(f, "\"swap_outs\": %" PRIu64 ", ", st->swap_outs);
		fprintf(f, "\"sharing_pages\": %" PRIu64 ", ", st->sharing_pages);
		fprintf(f, "\"shared_frames\": %" PRIu64 ", ", st->shared_frames);
		fprintf(f, "\"cow_breaks\": %" PRIu64 ", ", st->cow_breaks);
		fprintf(f, "\"frames_used\": %" PRIu64 ", ", st->frames_used);
		fprintf(f, "\"peak_frames_used\": %" PRIu64 ", ", s->peak_frames);
		fprintf(f, "\"budget_frames\": %" PRIu64 ", ", s->info.frames_total);
		fprintf(f, "\"resident_pages\": %" PRIu64 ", ", st->resident_pages);
		fprintf(f, "\"swapped_pages\": %" PRIu64 ", ", st->swapped_pages);
		fprintf(f, "\"zero_pages\": %" PRIu64 ", ", st->zero_pages);
		fprintf(f, "\"pages_merged\": %" PRIu64 ", ", s->info.pages_merged);
		fprintf(f, "\"zero_merged\": %" PRIu64 ", ", s->info.zero_merged);
		fprintf(f, "\"readahead_pages\": %" PRIu64 ", ", s->info.readahead_pages);
		fprintf(f, "\"swap_disk_bytes\": %" PRIu64 ", ", st->swap_disk_bytes);
		fprintf(f, "\"io_errors\": %" PRIu64 ", ", st->io_errors);
		fprintf(f, "\"checksum_errors\": %" PRIu64 ", ", st->checksum_errors);
		fprintf(f, "\"counter_warnings\": %" PRIu64 ", ", s->warnings);
		fprintf(f, "\"engine\": ");
		json_string(f, engine_name(s->engine));
		fprintf(f, ", ");
	}
	fprintf(f, "\"error\": ");
	json_string(f, s->error[0] ? s->error : NULL);
	fprintf(f, ", \"first_mismatch\": ");
	json_string(f, s->mismatch[0] ? s->mismatch : NULL);
	fprintf(f, "}\n");
}

static void print_text(const struct stress *s, bool verified)
{
	const struct counters *c = &s->tot;
	const struct umlmem_stats *st = &s->st;
	uint64_t nominal = (uint64_t)s->guests * s->guest_bytes;
	char b1[32], b2[32], b3[32];
	FILE *f = stdout;

	if (!s->quiet)
		fputc('\n', f);
	fprintf(f, "umlmem stress: %u threads, %u guests x %s = %s nominal on a %s budget\n",
		s->threads, s->guests, fmt_bytes(b1, sizeof(b1), s->guest_bytes),
		fmt_bytes(b2, sizeof(b2), nominal), fmt_bytes(b3, sizeof(b3), s->budget_bytes));
	fprintf(f, "  seed %" PRIu64 ", background %s, dedup %s, I/O engine %s%s%s%s\n", s->seed,
		s->background ? "on" : "off", s->dedup ? "on" : "off", engine_name(s->engine),
		s->engine_why[0] ? " (" : "", s->engine_why, s->engine_why[0] ? ")" : "");
	fprintf(f, "  ops              %" PRIu64 " in %.2f s (%.0f/s)\n", c->ops, s->run_s,
		s->run_s > 0 ? (double)c->ops / s->run_s : 0.0);
	fprintf(f, "  reads            %" PRIu64 "\n", c->reads);
	fprintf(f, "  writes           %" PRIu64 " (%" PRIu64 " of them whole-page fills)\n",
		c->writes + c->fills, c->fills);
	fprintf(f, "  pins             %" PRIu64 " (%" PRIu64 " checks and %" PRIu64
		" writes through pins), %" PRIu64 " unpins\n", c->pins, c->pin_checks,
		c->pin_writes, c->unpins);
	fprintf(f, "  discards         %" PRIu64 " (%" PRIu64 " refused as pinned, as they should be)\n",
		c->discards, c->busy_discards);
	fprintf(f, "  dedup scans      %" PRIu64 " (%" PRIu64 " pages merged)\n", c->scans, c->merged);
	fprintf(f, "  invalid calls    %" PRIu64 " (each failed as documented unless counted below)\n",
		c->bad_calls);
	if (s->have_stats) {
		fprintf(f, "  faults           %" PRIu64 "\n", st->faults);
		fprintf(f, "  swap-ins/outs    %" PRIu64 " / %" PRIu64 "\n", st->swap_ins, st->swap_outs);
		fprintf(f, "  sharing pages    %" PRIu64 " at the end (%" PRIu64 " shared frames), %"
			PRIu64 " cow breaks\n", st->sharing_pages, st->shared_frames, st->cow_breaks);
		fprintf(f, "  frames used      %" PRIu64 " of %" PRIu64 ", peak seen %" PRIu64 "\n",
			st->frames_used, s->info.frames_total, s->peak_frames);
		fprintf(f, "  io/checksum err  %" PRIu64 " / %" PRIu64 "\n", st->io_errors,
			st->checksum_errors);
	}
	fprintf(f, "  final check      %s of %s\n", fmt_bytes(b1, sizeof(b1), c->checked_bytes),
		fmt_bytes(b2, sizeof(b2), nominal));
	fprintf(f, "  mismatches       %" PRIu64 " (%" PRIu64 " bytes)\n", c->mismatches,
		c->mismatched_bytes);
	fprintf(f, "  errors           %" PRIu64 "\n", c->errors);
	if (verified)
		fprintf(f, "  verdict          VERIFIED: every read matched the model and every byte "
			"was checked at the end\n");
	else if (s->error[0])
		fprintf(f, "  verdict          NOT VERIFIED: %s\n", s->error);
	else if (s->mismatch[0])
		fprintf(f, "  verdict          NOT VERIFIED: %s\n", s->mismatch);
	else
		fprintf(f, "  verdict          NOT VERIFIED: the final check did not cover every byte\n");
	fprintf(f, "  wall time        %.2f s\n", s->wall_s);
}

static void stress_free(struct stress *s)
{
	unsigned i;

	for (i = 0; i < s->created; i++)
		umlmem_guest_destroy(s->g[i]);
	umlmem_host_destroy(s->host);
	if (s->pm)
		for (i = 0; i < s->guests; i++)
			free(s->pm[i]);
	if (s->w)
		for (i = 0; i < s->threads; i++) {
			free(s->w[i].buf);
			free(s->w[i].want);
		}
	free(s->pm);
	free(s->g);
	free(s->w);
	free(s->pat);
}

int cmd_stress(int argc, char **argv)
{
	struct stress s = {
		.threads = 4,
		.guests = 8,
		.guest_bytes = 64ull << 20,
		.budget_bytes = 64ull << 20,
		.seconds = 20,
		.seed = 1,
	};
	bool verified;
	int rc;

	rc = stress_parse(&s, argc, argv);
	if (rc)
		return rc < 0 ? 0 : rc;
	pthread_mutex_init(&s.lock, NULL);

	s.t0 = now_s();
	if (!s.quiet) {
		char b1[32], b2[32], len[48];

		if (s.ops_total)
			snprintf(len, sizeof(len), "%" PRIu64 " ops", s.ops_total);
		else
			snprintf(len, sizeof(len), "%g s", s.seconds);
		fprintf(stderr, "umlmem stress: %u threads, %u guests of %s on a %s budget, %s, "
			"seed %" PRIu64 "%s%s\n", s.threads, s.guests,
			fmt_bytes(b1, sizeof(b1), s.guest_bytes),
			fmt_bytes(b2, sizeof(b2), s.budget_bytes), len, s.seed,
			s.background ? ", background" : "", s.dedup ? ", dedup" : "");
	}
	rc = stress_setup(&s);
	if (!rc)
		rc = stress_run(&s);
	if (s.host) {
		umlmem_host_info(s.host, &s.info, sizeof(s.info));
		check_counters(&s);
	}
	collect(&s);
	verified = !rc && stress_verified(&s);
	s.wall_s = now_s() - s.t0;
	/* JSON always, so that a script reading it learns why; the text
	 * summary only when there is something to summarise. */
	if (s.json)
		print_json(&s, stdout, verified);
	else if (s.have_stats || !rc)
		print_text(&s, verified);
	if (!verified && (s.tot.mismatches || s.tot.errors))
		fprintf(stderr, "%s %s: to repeat this thread by thread: %s stress --threads %u "
			"--guests %u --guest-size %" PRIu64 " --budget %" PRIu64 " --seed %" PRIu64
			" --ops %" PRIu64 "%s%s\n", PROG, CMD, PROG, s.threads, s.guests,
			s.guest_bytes, s.budget_bytes, s.seed, s.tot.ops,
			s.background ? " --background" : "", s.dedup ? " --dedup" : "");
	fflush(stdout);
	stress_free(&s);
	pthread_mutex_destroy(&s.lock);
	return verified ? 0 : 1;
}
