/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * replay_policies.c: ARC simulated exactly, for `umlmem replay`.
 *
 * ARC (Adaptive Replacement Cache, N. Megiddo and D. Modha, "ARC: A
 * Self-Tuning, Low Overhead Replacement Cache", FAST 2003) is the usual
 * yardstick of adaptive policies: it keeps c pages in two LRU lists, T1
 * (seen once recently) and T2 (seen at least twice), remembers as many
 * pages again in two ghost lists, B1 and B2 (pages just evicted from T1
 * and T2, no content), and moves its target p for the size of T1 by each
 * ghost hit: a hit in B1 says T1 was too small, one in B2 that T2 was.
 * This is the paper's algorithm as published (its Figure 4), cases I to
 * IV, with p a real number and the adaptation steps max(1, |B2|/|B1|)
 * and max(1, |B1|/|B2|); a fault is a reference to a page not in T1 or
 * T2, as for LRU and MIN in replay.c.
 *
 * Four doubly linked lists share two arrays of links indexed by page, so
 * a reference costs O(1) and the whole simulation 13 bytes a page.
 *
 * S3-FIFO (J. Yang et al., "FIFO queues are all you need for cache
 * eviction", SOSP 2023), the newer yardstick, also simulated exactly as
 * published (its original version): a small FIFO S of a tenth of the
 * frames (one at least), a main FIFO M of the rest, and a ghost FIFO G of
 * as many page numbers as M has frames. A hit adds one to the page's
 * two-bit use count (at most 3). A miss inserts the page into M if G holds
 * it, else into S. To make room: while S holds a tenth of the frames or
 * more (or M is empty), S's oldest page moves to M if it was used since
 * it came in (its count cleared), else it leaves into G; otherwise M's
 * oldest page goes back to M's head with one use spent if it has any, and
 * leaves if not. G is kept as the time each page entered it (a page is in
 * G while fewer than |G| pages entered after it), so the simulation needs
 * two rings of page numbers and ten bytes a page.
 */
#include <stdlib.h>

#include "replay_policies.h"

#define NIL UINT32_MAX
#define REF_PAGE_MASK 0x7fffffffu

enum { IN_NONE, IN_T1, IN_T2, IN_B1, IN_B2 };

struct list {
	uint32_t head, tail;	/* head: most recent */
	uint64_t n;
};

struct arc {
	uint32_t *prev, *next;
	uint8_t *in;		/* IN_*: the list a page is on */
	struct list l[5];	/* indexed by IN_* (l[IN_NONE] unused) */
};

static void unlink_page(struct arc *a, uint32_t p)
{
	struct list *l = &a->l[a->in[p]];

	if (a->prev[p] != NIL)
		a->next[a->prev[p]] = a->next[p];
	else
		l->head = a->next[p];
	if (a->next[p] != NIL)
		a->prev[a->next[p]] = a->prev[p];
	else
		l->tail = a->prev[p];
	l->n--;
	a->in[p] = IN_NONE;
}

/* Puts page @p, on no list, at the most recent end of list @w. */
static void push(struct arc *a, uint32_t p, int w)
{
	struct list *l = &a->l[w];

	a->prev[p] = NIL;
	a->next[p] = l->head;
	if (l->head != NIL)
		a->prev[l->head] = p;
	else
		l->tail = p;
	l->head = p;
	l->n++;
	a->in[p] = (uint8_t)w;
}

/* Moves the least recent page of list @from to the most recent end of @to
   (or drops it: @to IN_NONE). */
static void move_lru(struct arc *a, int from, int to)
{
	uint32_t p = a->l[from].tail;

	unlink_page(a, p);
	if (to != IN_NONE)
		push(a, p, to);
}

/* The paper's REPLACE(x, p): evicts the LRU page of T1 into B1 or that of
   T2 into B2. */
static void replace(struct arc *a, double p, int x_in_b2)
{
	uint64_t t1 = a->l[IN_T1].n;

	if (t1 && ((x_in_b2 && (double)t1 == p) || (double)t1 > p))
		move_lru(a, IN_T1, IN_B1);
	else
		move_lru(a, IN_T2, IN_B2);
}

int sim_arc(const uint32_t *ref, const uint32_t *owner, uint64_t nrefs, uint32_t npages,
	    uint64_t budget, uint64_t *faults)
{
	struct arc a = {
		.prev = malloc((size_t)npages * sizeof(uint32_t)),
		.next = malloc((size_t)npages * sizeof(uint32_t)),
		.in = calloc(npages ? npages : 1, 1),
	};
	double c = (double)budget, p = 0;

	if (!a.prev || !a.next || !a.in) {
		free(a.prev);
		free(a.next);
		free(a.in);
		return -1;
	}
	for (int w = 0; w < 5; w++)
		a.l[w] = (struct list){ NIL, NIL, 0 };

	for (uint64_t i = 0; i < nrefs; i++) {
		uint32_t x = ref[i] & REF_PAGE_MASK;
		uint64_t b1 = a.l[IN_B1].n, b2 = a.l[IN_B2].n;
		uint64_t t1 = a.l[IN_T1].n, t2 = a.l[IN_T2].n;

		switch (a.in[x]) {
		case IN_T1:
		case IN_T2:
			/* Case I: a hit */
			unlink_page(&a, x);
			push(&a, x, IN_T2);
			continue;
		case IN_B1:
			/* Case II: T1 was too small */
			p += b1 >= b2 ? 1.0 : (double)b2 / (double)b1;
			if (p > c)
				p = c;
			replace(&a, p, 0);
			unlink_page(&a, x);
			push(&a, x, IN_T2);
			break;
		case IN_B2:
			/* Case III: T2 was too small */
			p -= b2 >= b1 ? 1.0 : (double)b1 / (double)b2;
			if (p < 0)
				p = 0;
			replace(&a, p, 1);
			unlink_page(&a, x);
			push(&a, x, IN_T2);
			break;
		default:
			/* Case IV: not in the cache nor in its history */
			if (t1 + b1 == budget) {
				if (t1 < budget) {
					move_lru(&a, IN_B1, IN_NONE);
					replace(&a, p, 0);
				} else {
					move_lru(&a, IN_T1, IN_NONE);
				}
			} else if (t1 + t2 + b1 + b2 >= budget) {
				if (t1 + t2 + b1 + b2 == 2 * budget)
					move_lru(&a, IN_B2, IN_NONE);
				replace(&a, p, 0);
			}
			push(&a, x, IN_T1);
			break;
		}
		faults[owner ? owner[i] : 0]++;
	}
	free(a.prev);
	free(a.next);
	free(a.in);
	return 0;
}

/* ---- S3-FIFO ---------------------------------------------------------- */

struct ring {
	uint32_t *a;
	uint64_t cap, head, tail;	/* head <= i < tail, taken modulo cap */
};

static uint64_t ring_n(const struct ring *r)
{
	return r->tail - r->head;
}

static void ring_push(struct ring *r, uint32_t p)
{
	r->a[r->tail++ % r->cap] = p;
}

static uint32_t ring_pop(struct ring *r)
{
	return r->a[r->head++ % r->cap];
}

enum { S3_NONE, S3_S, S3_M };

int sim_s3fifo(const uint32_t *ref, const uint32_t *owner, uint64_t nrefs, uint32_t npages,
	       uint64_t budget, uint64_t *faults)
{
	uint64_t ssz = budget / 10 ? budget / 10 : 1;
	uint64_t gsz = budget > ssz ? budget - ssz : 1;
	struct ring s = { malloc((budget + 1) * sizeof(uint32_t)), budget + 1, 0, 0 };
	struct ring m = { malloc((budget + 1) * sizeof(uint32_t)), budget + 1, 0, 0 };
	uint8_t *in = calloc(npages ? npages : 1, 1), *freq = calloc(npages ? npages : 1, 1);
	/* G as the time each page entered it: pages entered so far, 1 on;
	   a page is in G while fewer than gsz pages entered after it */
	uint64_t *ghost_at = calloc(npages ? npages : 1, sizeof(uint64_t)), gin = 0;
	int rc = -1;

	if (!s.a || !m.a || !in || !freq || !ghost_at)
		goto out;
	for (uint64_t i = 0; i < nrefs; i++) {
		uint32_t x = ref[i] & REF_PAGE_MASK;

		if (in[x] != S3_NONE) {
			if (freq[x] < 3)
				freq[x]++;
			continue;
		}
		faults[owner ? owner[i] : 0]++;
		while (ring_n(&s) + ring_n(&m) >= budget) {
			if (ring_n(&s) >= ssz || !ring_n(&m)) {
				uint32_t t = ring_pop(&s);

				if (freq[t]) {
					freq[t] = 0;
					in[t] = S3_M;
					ring_push(&m, t);
					continue;
				}
				in[t] = S3_NONE;
				ghost_at[t] = ++gin;
			} else {
				uint32_t t = ring_pop(&m);

				if (freq[t]) {
					freq[t]--;
					ring_push(&m, t);
					continue;
				}
				in[t] = S3_NONE;
			}
		}
		freq[x] = 0;
		if (ghost_at[x] && gin - ghost_at[x] < gsz) {
			ghost_at[x] = 0;
			in[x] = S3_M;
			ring_push(&m, x);
		} else {
			in[x] = S3_S;
			ring_push(&s, x);
		}
	}
	rc = 0;
out:
	free(s.a);
	free(m.a);
	free(in);
	free(freq);
	free(ghost_at);
	return rc;
}
