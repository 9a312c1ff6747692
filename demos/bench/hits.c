/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * hits.c: the cost of a read that hits a resident page, against memcpy.
 *
 * hit_read_8b, hit_read_4k -- ns per umlmem_read() of 8 bytes (at a random
 *   8-aligned offset of a random page) and of a whole page, from a guest
 *   whose every page is resident (B/2 of data on a budget of B, so no
 *   pager watermark can push anything out). Baseline: memcpy of the same
 *   length from a plain buffer of the same size holding the same content,
 *   at the same precomputed offsets. Both loops do the same surrounding
 *   work: one out-of-line call per access (memcpy through a volatile
 *   function pointer, so the compiler can neither inline nor elide it, and
 *   with the length a run-time argument), one check of its result, one
 *   8-byte load from the destination added to a volatile sink. The two
 *   sums must agree, which checks that both read the same bytes. Both
 *   sources use 4 KiB pages (the frame store is shmem; the buffer is
 *   madvised MADV_NOHUGEPAGE) so TLB reach is the same. One warm-up pass,
 *   then the best of 5, interleaved.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "harness.h"

enum { HIT8, HIT4K };

#define HIT_REPS 5

/* Called through a volatile pointer: an out-of-line call the compiler can
   neither inline, specialise for the length, nor drop. */
static void *(*volatile memcpy_fn)(void *, const void *, size_t) = memcpy;
static volatile uint64_t sink;

static __attribute__((noinline)) int
loop_umlmem(umlmem_guest *g, const uint64_t *off, size_t n, size_t len, uint8_t *dst,
	    uint64_t *sum)
{
	uint64_t v;
	int rc;

	for (size_t i = 0; i < n; i++) {
		rc = umlmem_read(g, off[i], dst, len);
		if (rc)
			return rc;
		memcpy(&v, dst, 8);
		sink += v;
	}
	*sum = sink;
	return 0;
}

static __attribute__((noinline)) int
loop_memcpy(const uint8_t *src, const uint64_t *off, size_t n, size_t len, uint8_t *dst,
	    uint64_t *sum)
{
	uint64_t v;

	for (size_t i = 0; i < n; i++) {
		if (!memcpy_fn(dst, src + off[i], len))
			return -EFAULT;
		memcpy(&v, dst, 8);
		sink += v;
	}
	*sum = sink;
	return 0;
}

static void hit_one(struct result *r, umlmem_guest *g, const uint8_t *src,
		    uint64_t bytes, size_t len, size_t iters)
{
	uint64_t *off = malloc(iters * sizeof(*off));
	uint8_t *dst = aligned_alloc(PAGE, PAGE);
	uint64_t npages = bytes / PAGE, rng = 0x1234u + len, sum_u = 0, sum_m = 0, s0;
	double best_u = INFINITY, best_m = INFINITY, t0, dt;
	struct umlmem_stats st0, st1;
	int rep, rc;

	if (!off || !dst) {
		res_fail(r, RS_ERROR, "out of memory for %zu offsets", iters);
		goto out;
	}
	for (size_t i = 0; i < iters; i++) {
		uint64_t page = rng_below(&rng, npages);

		off[i] = page * PAGE + (len < PAGE ? rng_below(&rng, (PAGE - len) / 8 + 1) * 8 : 0);
	}
	umlmem_guest_stats(g, &st0);
	/* rep 0 is the warm-up, not counted */
	for (rep = 0; rep <= HIT_REPS; rep++) {
		s0 = sink;
		t0 = now_s();
		rc = loop_umlmem(g, off, iters, len, dst, &sum_u);
		dt = now_s() - t0;
		if (rc) {
			res_lib_fail(r, rc, "umlmem_read");
			goto out;
		}
		sum_u -= s0;
		if (rep && dt < best_u)
			best_u = dt;

		s0 = sink;
		t0 = now_s();
		rc = loop_memcpy(src, off, iters, len, dst, &sum_m);
		dt = now_s() - t0;
		sum_m -= s0;
		if (rc) {
			res_fail(r, RS_ERROR, "memcpy returned NULL");
			goto out;
		}
		if (rep && dt < best_m)
			best_m = dt;
		if (sum_u != sum_m) {
			res_fail(r, RS_ERROR, "umlmem_read and memcpy read different bytes "
				 "(sums 0x%" PRIx64 " and 0x%" PRIx64 ")", sum_u, sum_m);
			goto out;
		}
	}
	umlmem_guest_stats(g, &st1);
	res_set(r, best_u * 1e9 / (double)iters, best_m * 1e9 / (double)iters, "ns", true);
	res_int(r, "bytes", (int64_t)len);
	res_int(r, "iterations", (int64_t)iters);
	res_int(r, "reps", HIT_REPS);
	res_int(r, "resident_bytes", (int64_t)bytes);
	res_int(r, "faults", (int64_t)(st1.faults - st0.faults));
	res_str(r, "baseline_mode", "memcpy through a function pointer from a plain %s buffer, "
		"same offsets, best of %d", len == 8 ? "8 B" : "4 KiB", HIT_REPS);
	if (st1.faults != st0.faults)
		res_note(r, "%" PRIu64 " faults during the timed loops: not every page stayed "
			 "resident", st1.faults - st0.faults);
	res_note(r, "source region %" PRIu64 " MiB on both sides (4 KiB pages)", bytes >> 20);
out:
	free(off);
	free(dst);
}

static void hits_run(struct bench *b, struct result **res)
{
	bool do8 = res[HIT8]->want, do4 = res[HIT4K]->want;
	struct result *r = do8 ? res[HIT8] : res[HIT4K];
	uint64_t bytes = b->budget / 2 / PAGE * PAGE;
	struct umlmem_stats st;
	umlmem_host *h = NULL;
	umlmem_guest *g = NULL;
	uint8_t *src = NULL;
	char b1[32];

	if (!do8 && !do4)
		return;
	if (bytes < PAGE)
		bytes = PAGE;
	bench_progress("hit reads: %s resident on a budget twice that, against memcpy",
		       fmt_bytes(b1, sizeof(b1), bytes));
	if (bench_host(b, r, b->budget, bytes, 0, "bench-hits", &h, &g))
		goto out;
	if (bench_fill_guest(r, g, bytes, 0, NULL))
		goto out;
	umlmem_guest_stats(g, &st);
	if (st.swapped_pages) {
		res_fail(r, RS_ERROR, "%" PRIu64 " pages went to swap although the resident set "
			 "is half the budget", st.swapped_pages);
		goto out;
	}
	src = bench_map_pages(bytes);
	if (!src) {
		res_fail(r, RS_ERROR, "cannot map %" PRIu64 " bytes for the baseline", bytes);
		goto out;
	}
	bench_fill_pages((uint64_t *)src, 0, bytes / PAGE, 0);
	if (do8)
		hit_one(res[HIT8], g, src, bytes, 8, b->quick ? (1u << 19) : (1u << 21));
	if (do4)
		hit_one(res[HIT4K], g, src, bytes, PAGE, b->quick ? (1u << 16) : (1u << 18));
out:
	if (src)
		munmap(src, bytes);
	umlmem_host_destroy(h);
}

static const struct bench_key keys[] = {
	[HIT8] = { "hit_read_8b",
		"ns per 8-byte umlmem_read of a resident page; baseline: memcpy\n" },
	[HIT4K] = { "hit_read_4k",
		"ns per 4 KiB umlmem_read of a resident page; baseline: memcpy\n" },
	{ NULL },
};

const struct bench_family bench_hits = { "hits", keys, hits_run };
