/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * model.c: the model of `umlmem stress`: each page described by at most
 * MAX_SEGS runs of zeros, a pattern or one write's random content (see
 * stress.c's opening comment), the bytes a run must hold, and the checks
 * of what the library returned against it.
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
/* Content and the model                                                    */
/* ------------------------------------------------------------------------ */

uint64_t model_page_len(const struct stress *s, uint64_t page)
{
	uint64_t left = s->guest_bytes - page * PAGE;

	return left < PAGE ? left : PAGE;
}

/* The bytes [lo, hi) of run @sg of page @page of guest @gi, into @out. */
void model_seg_fill(const struct worker *w, unsigned gi, uint64_t page,
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
const struct seg *page_segs(const struct stress *s, const struct page_model *m,
			    uint64_t page, struct seg *tmp, unsigned *n)
{
	if (m->n) {
		*n = m->n;
		return m->s;
	}
	tmp->end = (uint16_t)model_page_len(s, page);
	tmp->kind = SEG_ZERO;
	tmp->pat = 0;
	tmp->stamp = 0;
	*n = 1;
	return tmp;
}

/* Expected bytes [lo, hi) of a page, into @out. */
void model_expect(const struct worker *w, unsigned gi, uint64_t page,
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
			model_seg_fill(w, gi, page, &sg[i], a, b, out + (a - lo));
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

bool model_fits(const struct stress *s, const struct page_model *m, uint64_t page,
		unsigned lo, unsigned hi, struct seg ns)
{
	struct seg out[MAX_SEGS + 2];

	return overlay(s, m, page, lo, hi, ns, out) <= MAX_SEGS;
}

void model_apply(struct worker *w, unsigned gi, uint64_t page, unsigned lo,
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

void model_unknown(struct worker *w, unsigned gi, uint64_t first, uint64_t last)
{
	for (uint64_t p = first; p <= last; p++)
		w->s->pm[gi][p].unknown = 1;
}

/* Compares bytes [lo, hi) of a page, as read into @got, with the model. */
void model_check_page(struct worker *w, unsigned gi, uint64_t page, unsigned lo,
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
	stress_report(s, s->mismatch, sizeof(s->mismatch), line);
}

/* Checks @len bytes at @gpa (within one block) that were read into @got. */
void model_check_range(struct worker *w, unsigned gi, uint64_t gpa, uint64_t len,
		       const unsigned char *got)
{
	uint64_t a = gpa, end = gpa + len, page, pe;

	while (a < end) {
		page = a / PAGE;
		pe = (page + 1) * PAGE < end ? (page + 1) * PAGE : end;
		model_check_page(w, gi, page, (unsigned)(a - page * PAGE), (unsigned)(pe - page * PAGE),
			   got + (a - gpa));
		a = pe;
	}
}
