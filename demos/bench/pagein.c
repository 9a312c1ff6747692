/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * pagein.c: swap-ins per second, umlmem against the raw disk.
 *
 * pagein_random_t1 -- swap-ins per second, one thread. One guest of 4B on a
 *   budget of B, every page written with distinct content (word w of page p
 *   holds p * 512 + w + 1: nothing is a zero page and nothing is equal to
 *   anything else), so that 3/4 of it is in swap. Then one thread reads 8
 *   bytes at a uniformly random page for the timed phase; the value is the
 *   guest's swap_ins delta over that phase divided by its length. With
 *   uniform access about B / 4B of the reads hit resident pages; those cost
 *   nanoseconds against the tens of microseconds of a fault, and are
 *   reported ("reads", "hit_fraction") rather than hidden. Every value read
 *   is checked against the content written. The guest's swap_ins also
 *   counts a fault that finds its page already read ahead; random pages
 *   rarely continue an ascending run of slots, and the host's readahead
 *   counters over the same interval are reported so that this can be seen.
 *   Baseline: raw 4 KiB random reads at queue depth 1 from a file of the
 *   working set's size, made with the same swap set code (swap_open on the
 *   same directory, so the same O_DIRECT decision and the same filesystem)
 *   and read through an I/O engine of the kind the host really uses, into
 *   a 4096-aligned buffer that the engine was given as its store (so the
 *   io_uring engine reads it with READ_FIXED, as it reads frames). That is
 *   what one fault has to do at the least: one page from the disk. The gap
 *   between the two is the library's own cost per fault ("overhead_us").
 *   The timed phase is cut into slices (8; --quick 4) that alternate
 *   between umlmem and the baseline, so that a change in the disk's speed
 *   or in other load on the machine during the run falls on both alike.
 *
 * pagein_random_t8 -- the same with 8 threads reading random pages of the
 *   same one guest (one guest rather than 8: the question is whether faults
 *   of one guest overlap). Baseline: 8 threads each doing queue-depth-1
 *   reads through the same engine on the baseline file, which is the closer
 *   analogue of 8 faulting threads than one thread submitting batches of 8.
 *   "scaling_vs_t1" compares with the one-thread figure of the same run.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>

#include "harness.h"

enum { T1, T8 };

static void pagein_result(struct bench *b, struct result *r, unsigned threads,
			  const struct phase_out *u, const struct phase_out *raw,
			  uint64_t npages, bool direct)
{
	double value = u->secs > 0 ? (double)u->swap_ins / u->secs : 0;
	double base = raw->secs > 0 ? (double)raw->ops / raw->secs : 0;

	res_set(r, value, base, "faults/s", false);
	res_int(r, "threads", threads);
	res_int(r, "guests", 1);
	res_int(r, "pages", (int64_t)npages);
	res_int(r, "budget_pages", (int64_t)(b->budget / PAGE));
	res_num(r, "seconds", u->secs);
	res_int(r, "reads", (int64_t)u->ops);
	res_int(r, "swap_ins", (int64_t)u->swap_ins);
	res_int(r, "faults", (int64_t)u->faults);
	res_int(r, "readahead_pages", (int64_t)u->ra_pages);
	res_int(r, "readahead_hits", (int64_t)u->ra_hits);
	res_num(r, "hit_fraction", u->ops ? 1.0 - (double)u->swap_ins / (double)u->ops : NAN);
	res_int(r, "baseline_reads", (int64_t)raw->ops);
	res_num(r, "baseline_seconds", raw->secs);
	if (value > 0 && base > 0)
		res_num(r, "overhead_us", 1e6 * threads / value - 1e6 * threads / base);
	res_str(r, "engine", "%s", engine_name(b->engine));
	res_bool(r, "direct", direct);
	res_str(r, "baseline_mode", threads == 1 ?
		"one thread, one 4 KiB read per io_run (queue depth 1)" :
		"%u threads, each one 4 KiB read per io_run (queue depth 1 each)", threads);
	if (!direct)
		res_note(r, "the swap directory does not take O_DIRECT: both sides read "
			 "through the page cache");
	if (u->ra_hits * 100 > u->swap_ins)
		res_note(r, "%" PRIu64 " of the swap-ins found their page read ahead, with no read "
			 "of their own", u->ra_hits);
	if (r->ratio > 1.1)
		res_note(r, "more than 10%% above the raw reads it cannot beat (one read per "
			 "fault): the disk's speed varied between slices by more than the "
			 "library costs; compare several runs");
	else if (r->ratio >= 0.9)
		res_note(r, "within 10%% of the raw disk: disk-bound");
	else if (r->ratio > 0)
		res_note(r, "%.1f us per fault above a raw read: the library's own cost "
			 "per fault", 1e6 * threads / value - 1e6 * threads / base);
}

static void pagein_run(struct bench *b, struct result **res)
{
	struct result *r1 = res[T1], *r8 = res[T8];
	bool do1 = r1->want, do8 = r8->want;
	struct result *r = do1 ? r1 : r8;	/* setup failures go to the first */
	uint64_t ws = 4 * b->budget, npages = ws / PAGE;
	struct umlmem_stats st;
	struct phase_out u1 = { 0 }, raw1 = { 0 }, u8 = { 0 }, raw8 = { 0 };
	struct rawfile raw = { 0 };
	struct phase *ph = NULL;
	umlmem_host *h = NULL;
	umlmem_guest *g = NULL;
	char b1[32], b2[32];
	double t;

	if (!do1 && !do8)
		return;
	ph = phase_new(r, npages);
	if (!ph)
		goto out;
	bench_progress("pagein: guest of %s on a budget of %s, filling it",
		       fmt_bytes(b1, sizeof(b1), ws), fmt_bytes(b2, sizeof(b2), b->budget));
	if (bench_host(b, r, b->budget, ws, 0, "bench-pagein", &h, &g))
		goto out;
	t = now_s();
	if (bench_fill_guest(r, g, ws, 0, "pagein fill"))
		goto out;
	umlmem_guest_stats(g, &st);
	bench_progress("pagein: filled in %.1f s: %" PRIu64 " pages resident, %" PRIu64 " in swap",
		       now_s() - t, st.resident_pages, st.swapped_pages);

	bench_progress("pagein: baseline file of %s in the swap directory (%s engine)",
		       fmt_bytes(b1, sizeof(b1), ws), engine_name(b->engine));
	t = now_s();
	if (raw_open(b, r, &raw, npages, RAW_WRITE_PAGES + RAW_THREADS_MAX) ||
	    raw_fill(r, &raw))
		goto out;
	bench_progress("pagein: baseline file written in %.1f s", now_s() - t);

	if (do1) {
		bench_progress("pagein_random_t1: umlmem and raw reads, 1 thread, %.1f s each in "
			       "alternating slices, after %.1f s warm-up each", b->seconds, b->warm);
		if (run_compare(b, r1, ph, 1, h, g, &raw, &u1, &raw1))
			goto t8;
		pagein_result(b, r1, 1, &u1, &raw1, npages, raw.direct);
	}
t8:
	if (do8) {
		bench_progress("pagein_random_t8: umlmem (8 threads, one guest) and raw reads (8 "
			       "threads), %.1f s each in alternating slices", b->seconds);
		if (run_compare(b, r8, ph, 8, h, g, &raw, &u8, &raw8))
			goto out;
		pagein_result(b, r8, 8, &u8, &raw8, npages, raw.direct);
		if (r1->state == RS_OK && r1->value > 0) {
			double sc = r8->value / r1->value;

			res_num(r8, "scaling_vs_t1", sc);
			if (sc < 1.3)
				res_note(r8, "8 threads fault at %.2fx the rate of one: their faults "
					 "barely overlap", sc);
		}
	}
out:
	/* a failed setup explains both figures */
	if (do1 && do8 && r1->state == RS_ERROR && r8->state == RS_NONE)
		res_fail(r8, RS_ERROR, "%s", r1->reason);
	raw_close(&raw);
	umlmem_host_destroy(h);	/* destroys the guest too */
	phase_free(ph);
}

static const struct bench_key keys[] = {
	[T1] = { "pagein_random_t1",
		"swap-ins/s, 1 thread, random pages of a 4x-budget guest;\n"
		"baseline: raw 4 KiB reads at queue depth 1, same engine\n" },
	[T8] = { "pagein_random_t8",
		"the same with 8 threads on one guest; baseline: 8 threads\n"
		"of queue-depth-1 raw reads\n" },
	{ NULL },
};

const struct bench_family bench_pagein = { "pagein", keys, pagein_run };
