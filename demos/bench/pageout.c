/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * pageout.c: pages per second written out, umlmem against raw batch writes.
 *
 * pageout_seq -- pages per second written out by umlmem_reclaim(). A host
 *   of budget B and a guest of B, every page written (dirty, resident,
 *   distinct), then umlmem_reclaim(h, everything) is timed; pages come from
 *   the swap_outs delta. Each repetition makes a new host, so its swap file
 *   is new and every write allocates blocks, as the baseline's do (a reused
 *   file with its clusters punched out would be a different workload).
 *   Baseline: the same number of pages written sequentially through the
 *   same engine in batches of the host's reclaim_batch (64 pages: 256 KiB)
 *   into a fresh swap set of the same directory, slots from swap_alloc as
 *   the pager takes them. The pager additionally scans the clock, checks
 *   for zero pages, checksums each page and updates page tables: that is
 *   the cost being measured. Best of 5 (--quick 3) for both, alternating.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <string.h>

#include "harness.h"

enum { PAGEOUT };

#define PAGEOUT_REPS 5
#define RECLAIM_BATCH 64u	/* umlmem_host_config_init()'s default */

/* One baseline repetition: a fresh swap set, @npages written in batches. */
static int pageout_raw_once(struct bench *b, struct result *r, uint64_t npages, double *secs)
{
	uint64_t slots[RECLAIM_BATCH];
	struct rawfile f;
	uint64_t p, n;
	double t0;
	int rc;

	rc = raw_open(b, r, &f, 0, RECLAIM_BATCH);
	if (rc)
		return rc;
	t0 = now_s();
	for (p = 0; p < npages; p += n) {
		n = npages - p < RECLAIM_BATCH ? npages - p : RECLAIM_BATCH;
		rc = raw_write_batch(r, &f, slots, (unsigned)n);
		if (rc) {
			raw_close(&f);
			return rc;
		}
	}
	*secs = now_s() - t0;
	raw_close(&f);
	return 0;
}

/* One umlmem repetition: a fresh host (so a fresh swap file, like the
   baseline's), @npages dirty pages, one timed umlmem_reclaim of them all. */
static int pageout_umlmem_once(struct bench *b, struct result *r, uint64_t npages, int rep,
			       double *secs, uint64_t *pages)
{
	struct umlmem_stats s0, s1;
	umlmem_host *h;
	umlmem_guest *g;
	uint64_t evicted;
	double t0;
	int rc;

	rc = bench_host(b, r, npages * PAGE, npages * PAGE, 0, "bench-pageout", &h, &g);
	if (rc)
		return rc;
	rc = bench_fill_guest(r, g, npages * PAGE, (uint64_t)rep << 40, NULL);
	if (!rc) {
		umlmem_guest_stats(g, &s0);
		t0 = now_s();
		rc = umlmem_reclaim(h, UINT64_MAX, &evicted);
		*secs = now_s() - t0;
		umlmem_guest_stats(g, &s1);
		if (rc)
			res_lib_fail(r, rc, "umlmem_reclaim");
		*pages = s1.swap_outs - s0.swap_outs;
	}
	umlmem_host_destroy(h);
	return rc;
}

static void pageout_run(struct bench *b, struct result **res)
{
	struct result *r = res[PAGEOUT];
	uint64_t npages = b->budget / PAGE, pages = 0, best_pages = 0;
	double best_u = 0, best_raw = 0, dt = 0, rate;
	int rep, reps = b->quick ? 3 : PAGEOUT_REPS;
	char b1[32];

	if (!res[PAGEOUT]->want)
		return;
	bench_progress("pageout_seq: %s of dirty pages reclaimed, and as many raw batch writes, "
		       "%d times each, alternating", fmt_bytes(b1, sizeof(b1), b->budget), reps);
	for (rep = 0; rep < reps; rep++) {
		if (pageout_umlmem_once(b, r, npages, rep, &dt, &pages))
			return;
		rate = dt > 0 ? (double)pages / dt : 0;
		if (rate > best_u) {
			best_u = rate;
			best_pages = pages;
		}
		bench_progress("pageout_seq: rep %d: umlmem %.0f pages/s", rep + 1, rate);
		if (pageout_raw_once(b, r, npages, &dt))
			return;
		rate = dt > 0 ? (double)npages / dt : 0;
		if (rate > best_raw)
			best_raw = rate;
		bench_progress("pageout_seq: rep %d: raw %.0f pages/s", rep + 1, rate);
	}
	res_set(r, best_u, best_raw, "pages/s", false);
	res_int(r, "pages", (int64_t)best_pages);
	res_int(r, "batch", RECLAIM_BATCH);
	res_int(r, "reps", reps);
	res_num(r, "MiB_per_s", best_u * PAGE / (1024.0 * 1024.0));
	res_num(r, "baseline_MiB_per_s", best_raw * PAGE / (1024.0 * 1024.0));
	res_str(r, "engine", "%s", engine_name(b->engine));
	res_str(r, "baseline_mode", "%" PRIu64 " pages in io_run batches of %u into a fresh "
		"swap set, best of %d", npages, RECLAIM_BATCH, reps);
	if (best_pages < npages)
		res_note(r, "reclaim wrote %" PRIu64 " of %" PRIu64 " pages (the rest were "
			 "already out)", best_pages, npages);
	if (r->ratio > 1.1)
		res_note(r, "more than 10%% above raw batch writes of the same size: the disk's "
			 "speed varied between repetitions; compare several runs");
	else if (r->ratio >= 0.9)
		res_note(r, "within 10%% of raw batch writes: disk-bound");
}

static const struct bench_key keys[] = {
	[PAGEOUT] = { "pageout_seq",
		"pages/s written by umlmem_reclaim; baseline: raw batch\n"
		"writes of 64 pages into a fresh file\n" },
	{ NULL },
};

const struct bench_family bench_pageout = { "pageout", keys, pageout_run };
