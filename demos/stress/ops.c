/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * ops.c: what a thread of `umlmem stress` does: the blocks it owns, the
 * ranges it picks in them, and each kind of operation with the model kept
 * in step and every result checked.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CLI_CMD "stress"
#include "cli.h"
#include "rng.h"
#include "stress.h"

/* ------------------------------------------------------------------------ */
/* Ownership                                                                */
/* ------------------------------------------------------------------------ */

void ops_block_of(const struct stress *s, uint64_t k, struct block *b)
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
		ops_block_of(w->s, (uint64_t)pn->gi * w->s->guest_blocks + pn->page / BLOCK_PAGES, b);
		return i;
	}
	ops_block_of(w->s, w->id + (uint64_t)w->s->threads * rng_below(&w->rng, w->nblocks), b);
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

void ops_set_current(struct worker *w, enum op_kind op, unsigned gi, uint64_t gpa)
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
	ops_set_current(w, OP_READ, b.gi, gpa);
	/* Poisoned, so a read that claims success but copies nothing shows. */
	memset(w->buf, poison, len);
	rc = umlmem_read(w->s->g[b.gi], gpa, w->buf, len);
	w->c.reads++;
	if (rc) {
		stress_lib_error(w, rc, "umlmem_read(guest %u, 0x%" PRIx64 ", %" PRIu64 ")", b.gi, gpa, len);
		return;
	}
	model_check_range(w, b.gi, gpa, len, w->buf);
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
	if (!model_fits(s, &s->pm[b.gi][first], first, (unsigned)(gpa - first * PAGE),
			  (unsigned)((first == last ? end : first * PAGE + model_page_len(s, first)) -
				     first * PAGE), ns)) {
		gpa = first * PAGE;
		if (first == last)
			end = first * PAGE + model_page_len(s, first);
	}
	if (last != first &&
	    !model_fits(s, &s->pm[b.gi][last], last, 0, (unsigned)(end - last * PAGE), ns))
		end = last * PAGE + model_page_len(s, last);
	len = end - gpa;

	ops_set_current(w, OP_WRITE, b.gi, gpa);
	for (p = first; p <= last; p++) {
		ps = p == first ? gpa - p * PAGE : 0;
		pe = p == last ? end - p * PAGE : model_page_len(s, p);
		model_seg_fill(w, b.gi, p, &ns, (unsigned)ps, (unsigned)pe, w->buf + (p * PAGE + ps - gpa));
	}
	rc = umlmem_write(s->g[b.gi], gpa, w->buf, len);
	w->c.writes++;
	if (rc) {
		stress_lib_error(w, rc, "umlmem_write(guest %u, 0x%" PRIx64 ", %" PRIu64 ")", b.gi, gpa, len);
		model_unknown(w, b.gi, first, last);
		return;
	}
	for (p = first; p <= last; p++) {
		ps = p == first ? gpa - p * PAGE : 0;
		pe = p == last ? end - p * PAGE : model_page_len(s, p);
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
	ops_set_current(w, OP_FILL, b.gi, gpa);
	for (i = 0; i < n; i++) {
		ns[i].kind = rng_below(&w->rng, 5) ? SEG_PAT : SEG_ZERO;
		ns[i].pat = (uint8_t)rng_below(&w->rng, NPAT);
		ns[i].stamp = 0;
		model_seg_fill(w, b.gi, first + i, &ns[i], 0, (unsigned)model_page_len(s, first + i),
			 w->buf + i * PAGE);
		len += model_page_len(s, first + i);
	}
	rc = umlmem_write(s->g[b.gi], gpa, w->buf, len);
	w->c.fills++;
	if (rc) {
		stress_lib_error(w, rc, "umlmem_write(guest %u, 0x%" PRIx64 ", %" PRIu64 ") of whole pages",
			  b.gi, gpa, len);
		model_unknown(w, b.gi, first, first + n - 1);
		return;
	}
	for (i = 0; i < n; i++)
		model_apply(w, b.gi, first + i, 0, (unsigned)model_page_len(s, first + i), ns[i]);
}

/* Writes a random run of a write-pinned page through its pointer. */
static void pin_write(struct worker *w, const struct pin *pn)
{
	struct stress *s = w->s;
	unsigned plen = (unsigned)model_page_len(s, pn->page), lo, hi;
	struct seg ns = new_seg(w);

	lo = (unsigned)rng_below(&w->rng, plen);
	hi = lo + 1 + (unsigned)rng_below(&w->rng, plen - lo);
	if (!model_fits(s, &s->pm[pn->gi][pn->page], pn->page, lo, hi, ns)) {
		lo = 0;
		hi = plen;
	}
	model_seg_fill(w, pn->gi, pn->page, &ns, lo, hi, pn->p + lo);
	model_apply(w, pn->gi, pn->page, lo, hi, ns);
	w->c.pin_writes++;
}

static void pin_check(struct worker *w, const struct pin *pn)
{
	model_check_page(w, pn->gi, pn->page, 0, (unsigned)model_page_len(w->s, pn->page), pn->p);
	w->c.pin_checks++;
}

void ops_drop_pin(struct worker *w, unsigned i)
{
	struct pin *pn = &w->pins[i];
	int rc;

	ops_set_current(w, OP_UNPIN, pn->gi, pn->page * PAGE);
	pin_check(w, pn);
	rc = umlmem_unpin(w->s->g[pn->gi], pn->page * PAGE);
	w->c.unpins++;
	if (rc)
		stress_lib_error(w, rc, "umlmem_unpin(guest %u, 0x%" PRIx64 ") of a pinned page",
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
		ops_drop_pin(w, (unsigned)rng_below(&w->rng, w->npins));
	if (w->npins && rng_below(&w->rng, 4) == 0) {
		/* nest a second pin on a page already held */
		pn = w->pins[rng_below(&w->rng, w->npins)];
	} else {
		pn.page = pick_page(w, &b);
		pn.gi = b.gi;
	}
	pn.access = acc[rng_below(&w->rng, 3)];
	ops_set_current(w, OP_PIN, pn.gi, pn.page * PAGE);
	rc = umlmem_pin(w->s->g[pn.gi], pn.page * PAGE, pn.access, &p);
	w->c.pins++;
	if (rc) {
		stress_lib_error(w, rc, "umlmem_pin(guest %u, 0x%" PRIx64 ", %s)", pn.gi, pn.page * PAGE,
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
		stress_fail_line(w, what);
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
	ops_set_current(w, OP_PINNED, pn->gi, pn->page * PAGE);
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
	ops_drop_pin(w, (unsigned)rng_below(&w->rng, w->npins));
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
	ops_set_current(w, OP_DISCARD, b.gi, gpa);
	rc = umlmem_discard(s->g[b.gi], gpa, len);
	w->c.discards++;
	if (pinned) {
		w->c.busy_discards++;
		if (rc != -EBUSY)
			stress_unexpected(w, rc, -EBUSY, "umlmem_discard of a range with a pinned page");
		if (rc == 0)
			model_unknown(w, b.gi, first, first + n - 1);
		return;
	}
	if (rc) {
		stress_lib_error(w, rc, "umlmem_discard(guest %u, 0x%" PRIx64 ", %" PRIu64 ")",
			  b.gi, gpa, len);
		model_unknown(w, b.gi, first, first + n - 1);
		return;
	}
	for (i = 0; i < n; i++) {
		struct page_model *m = &s->pm[b.gi][first + i];

		m->n = 1;
		m->s[0] = (struct seg){ (uint16_t)model_page_len(s, first + i), SEG_ZERO, 0, 0 };
		m->last_op = w->opno;
		m->last_kind = OP_DISCARD;
	}
}

static void op_dedup(struct worker *w)
{
	uint64_t merged = 0, pages = 64 + rng_below(&w->rng, 960);
	int rc;

	ops_set_current(w, OP_DEDUP, 0, 0);
	rc = umlmem_dedup_scan(w->s->host, pages, &merged);
	w->c.scans++;
	if (rc)
		stress_lib_error(w, rc, "umlmem_dedup_scan(%" PRIu64 " pages)", pages);
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

	ops_set_current(w, OP_BAD, b.gi, page * PAGE);
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
				stress_unexpected(w, rc, -EFAULT, "umlmem_read beyond the guest's end");
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
				stress_fail_line(w, what);
			}
		} else {
			rc = umlmem_write(g, gpa, w->buf, len);
			if (rc != -EFAULT)
				stress_unexpected(w, rc, -EFAULT, "umlmem_write beyond the guest's end");
		}
		return;
	case 2:		/* misaligned pin */
		gpa = page * PAGE + 1 + rng_below(&w->rng, model_page_len(s, page) > 1 ?
						  model_page_len(s, page) - 1 : 1);
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
		stress_unexpected(w, rc, want, "a call that breaks a documented rule");
}

/* ------------------------------------------------------------------------ */
/* A thread's run                                                           */
/* ------------------------------------------------------------------------ */

void ops_random(struct worker *w)
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
		ops_drop_pin(w, w->npins - 1);
}

/* Reads every owned block back whole and compares every byte. */
void ops_final_check(struct worker *w)
{
	struct stress *s = w->s;
	struct block b;
	uint64_t k, gpa, len;
	int rc;

	w->op = OP_FINAL;
	w->opno = 0;
	for (k = w->id; k < s->total_blocks; k += s->threads) {
		ops_block_of(s, k, &b);
		gpa = b.first * PAGE;
		len = block_bytes_end(s, &b) - gpa;
		w->opno++;
		ops_set_current(w, OP_FINAL, b.gi, gpa);
		memset(w->buf, (k & 1) ? 0xa5 : 0x5a, len);
		rc = umlmem_read(s->g[b.gi], gpa, w->buf, len);
		if (rc) {
			stress_lib_error(w, rc, "umlmem_read(guest %u, 0x%" PRIx64 ", %" PRIu64 ")",
				  b.gi, gpa, len);
			continue;
		}
		model_check_range(w, b.gi, gpa, len, w->buf);
		for (uint64_t p = b.first; p < b.end; p++)
			if (!s->pm[b.gi][p].unknown)
				w->c.checked_bytes += model_page_len(s, p);
		atomic_store_explicit(&w->a_checked, w->c.checked_bytes, memory_order_relaxed);
	}
}
