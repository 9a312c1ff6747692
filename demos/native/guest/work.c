/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The demo guests' work (see work.h), written to be built twice: into the
 * freestanding guest image, where there is no libc and nothing but this
 * file and start.S, and into the host program, which runs it on an array of
 * its own to know what each guest must report. One source for both is what
 * makes the host's expectation worth anything: a bug in the algorithm gives
 * the same wrong answer twice, but a byte the memory under the guest lost or
 * mixed up gives a different hash.
 *
 * Why this work: filling touches every page of the array in order; heap
 * sort then reads and writes all over it (each sift runs from the root to a
 * leaf, one page per level below the first few), which is the access
 * pattern that hurts a pager most; the sorted result of two guests with the
 * same seed is the same bytes page for page, which is what merging looks
 * for. The hash is over bytes (FNV-1a 64), so it does not depend on
 * anything but the array's contents.
 *
 * Freestanding rules: no calls out of this file, no globals (the image's
 * .bss would have to be zeroed by someone), no struct copies or byte loops
 * that gcc would turn into memset/memcpy calls (the guest build also says
 * -fno-builtin -fno-tree-loop-distribute-patterns, and start.S has both
 * functions in case). The results go through a volatile pointer so that the
 * stores happen in the order written: done last.
 */
#include <stddef.h>

#include "work.h"

/* start.S loads array_gpa from this offset of the params block. */
_Static_assert(offsetof(struct guest_params, array_gpa) == 16,
	       "start.S reads array_gpa at offset 16");

#define FNV_OFFSET 0xcbf29ce484222325ull
#define FNV_PRIME  0x100000001b3ull

/* One seed per round, spread by splitmix64's finaliser so that seeds 0, 1,
   2 and rounds 0, 1, 2 start far apart; xorshift64* must not start at 0. */
static uint64_t round_state(uint64_t seed, uint64_t round)
{
	uint64_t z = seed + (round + 1) * 0x9e3779b97f4a7c15ull;

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	z ^= z >> 31;
	return z ? z : 0x2545f4914f6cdd1dull;
}

static uint64_t xorshift64star(uint64_t *state)
{
	uint64_t x = *state;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * 0x2545f4914f6cdd1dull;
}

/* Moves a[root] down the max-heap a[0, end) to where it belongs. */
static void sift_down(uint64_t *a, uint64_t root, uint64_t end)
{
	uint64_t v = a[root];

	for (;;) {
		uint64_t child = 2 * root + 1;

		if (child >= end)
			break;
		if (child + 1 < end && a[child] < a[child + 1])
			child++;
		if (a[child] <= v)
			break;
		a[root] = a[child];
		root = child;
	}
	a[root] = v;
}

static void heap_sort(uint64_t *a, uint64_t n)
{
	uint64_t i, end;

	for (i = n / 2; i-- > 0;)
		sift_down(a, i, n);
	for (end = n; end-- > 1;) {
		uint64_t t = a[0];

		a[0] = a[end];
		a[end] = t;
		sift_down(a, 0, end);
	}
}

void guest_work(struct guest_params *p, uint64_t *array)
{
	volatile struct guest_params *vp = p;
	uint64_t n = vp->n, seed = vp->seed, rounds = vp->rounds;
	uint64_t hash = FNV_OFFSET, sorted = 1, r, i;

	if (vp->magic != GUEST_MAGIC) {
		/* Not set up by the host: report nothing sorted, and finish. */
		vp->hash = 0;
		vp->sorted = 0;
		vp->done = 1;
		return;
	}
	for (r = 0; r < rounds; r++) {
		uint64_t state = round_state(seed, r);

		for (i = 0; i < n; i++)
			array[i] = xorshift64star(&state);
		heap_sort(array, n);
		for (i = 1; i < n; i++)
			if (array[i - 1] > array[i])
				sorted = 0;
		hash = FNV_OFFSET;
		for (i = 0; i < n; i++) {
			uint64_t w = array[i];
			unsigned b;

			for (b = 0; b < 8; b++) {
				hash ^= (w >> (8 * b)) & 0xff;
				hash *= FNV_PRIME;
			}
		}
	}
	vp->hash = hash;
	vp->sorted = sorted;
	vp->done = 1;
}
