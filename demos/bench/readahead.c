/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * readahead.c: swap-in readahead, with against without, where it should
 * win (sequential reads) and where it must not lose (random reads).
 *
 * readahead_seq -- pages per second paged back in by a sequential read,
 *   with swap-in readahead against without it: readahead is kept only if it
 *   wins here. A fresh host of budget B (default flags: readahead on) and a
 *   guest of 4B, every page written in order with the content rule, then
 *   umlmem_reclaim(h, everything) so that the whole guest is in swap, in
 *   ascending slots (the pager writes each batch in address order); then one
 *   timed pass reads the guest in order with 64 KiB umlmem_read() calls,
 *   checking the first and last word of every page. The value is the
 *   guest's swap_ins delta over the pass divided by its length (a page
 *   found read ahead counts, since it was paged in). The pass reads the
 *   first 2B of the guest ("read_pages"): it fills the budget and then runs
 *   as long again evicting what it read, which is all a longer pass would
 *   add, while the side without readahead takes 4 KiB per fault and would
 *   spend most of the bench's time on the other half. Baseline: exactly the
 *   same on a host created with UMLMEM_NO_READAHEAD, same engine, same
 *   sizes. Every repetition of either side makes a new host, so each pass
 *   reads a swap file that only its own fill wrote. Best of 3 for both,
 *   in the order on, off / off, on / on, off, so that neither side always
 *   runs right after the other's write-out; every repetition's rate and
 *   both sides' readahead counters are reported.
 *
 * readahead_random -- readahead must not lose where it cannot help: the
 *   pagein_random_t1 workload (one thread, 8 bytes at uniformly random
 *   pages, every value checked; faults/s from the guest's swap_ins) on two
 *   hosts, each with its own guest of 4B on a budget of B filled the same
 *   way, that differ only in UMLMEM_NO_READAHEAD: the value is the host with
 *   readahead, the baseline the host without, and a ratio near 1 is the
 *   outcome to expect. The timed phase (8 s; --quick 2 s per side) is cut
 *   into slices (32; --quick 16) that alternate between the two hosts, as
 *   pagein_random_t1 alternates with its baseline, but shorter and in the
 *   order on, off / off, on / ..., because the difference sought is a few
 *   per cent: short turns share a busy machine's load alike, and the
 *   swapped order cancels a drift over the run. The two slices of a pair
 *   use the same seed, so both hosts read the same pages in the same order.
 *   Each side's readahead_pages and readahead_hits show how often a random
 *   fault looked like a run and whether the pages read for it were used.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

enum { RA_SEQ, RA_RAND };

#define RA_SEQ_REPS 3
#define RA_SEQ_CHUNK (64u << 10)	/* bytes per umlmem_read of the sequential pass */

static const char *ra_side(unsigned flags)
{
	return flags & UMLMEM_NO_READAHEAD ? "without readahead" : "with readahead";
}

struct ra_seq_out {
	double secs;
	uint64_t swap_ins, faults, ra_pages, ra_hits;
};

/*
 * One repetition of one side of readahead_seq: a fresh host with @flags
 * (so a fresh swap file, which only this guest's write-out lays out), the
 * guest of @bytes written in order, all of it reclaimed, then one timed pass
 * that reads its first @read bytes in order, RA_SEQ_CHUNK bytes per call.
 * The first and last word of every page are checked: that catches a page
 * read into the wrong place, and costs too little to weigh on either side.
 */
static int ra_seq_once(struct bench *b, struct result *r, unsigned flags, uint64_t bytes,
		       uint64_t read, struct ra_seq_out *o)
{
	struct umlmem_host_info i0, i1;
	struct umlmem_stats s0, s1;
	umlmem_host *h;
	umlmem_guest *g;
	uint64_t *buf = NULL, off, n, p, page, evicted;
	double t0;
	int rc;

	memset(o, 0, sizeof(*o));
	memset(&i0, 0, sizeof(i0));
	memset(&i1, 0, sizeof(i1));
	rc = bench_host(b, r, b->budget, bytes, flags, "bench-readahead-seq", &h, &g);
	if (rc)
		return rc;
	buf = aligned_alloc(PAGE, RA_SEQ_CHUNK);
	if (!buf) {
		res_fail(r, RS_ERROR, "out of memory for the read buffer");
		rc = -ENOMEM;
		goto out;
	}
	rc = bench_fill_guest(r, g, bytes, 0, NULL);
	if (rc)
		goto out;
	rc = umlmem_reclaim(h, UINT64_MAX, &evicted);
	if (rc) {
		res_lib_fail(r, rc, "umlmem_reclaim");
		goto out;
	}
	umlmem_guest_stats(g, &s0);
	if (s0.resident_pages) {
		/* the pass would start with part of the guest already in */
		res_fail(r, RS_ERROR, "%" PRIu64 " pages stayed resident after reclaiming "
			 "everything (%s)", s0.resident_pages, ra_side(flags));
		rc = -EAGAIN;
		goto out;
	}
	umlmem_host_info(h, &i0, sizeof(i0));
	t0 = now_s();
	for (off = 0; off < read; off += n) {
		n = read - off < RA_SEQ_CHUNK ? read - off : RA_SEQ_CHUNK;
		rc = umlmem_read(g, off, buf, n);
		if (rc) {
			res_lib_fail(r, rc, "umlmem_read of the sequential pass");
			goto out;
		}
		for (p = 0; p < n / PAGE; p++) {
			page = off / PAGE + p;
			if (buf[p * WORDS] != word_of(page, 0) ||
			    buf[p * WORDS + WORDS - 1] != word_of(page, WORDS - 1)) {
				res_fail(r, RS_ERROR, "page %" PRIu64 " read back with the wrong "
					 "content (%s)", page, ra_side(flags));
				rc = -EUCLEAN;
				goto out;
			}
		}
	}
	o->secs = now_s() - t0;
	umlmem_guest_stats(g, &s1);
	umlmem_host_info(h, &i1, sizeof(i1));
	o->swap_ins = s1.swap_ins - s0.swap_ins;
	o->faults = s1.faults - s0.faults;
	o->ra_pages = i1.readahead_pages - i0.readahead_pages;
	o->ra_hits = i1.readahead_hits - i0.readahead_hits;
out:
	free(buf);
	umlmem_host_destroy(h);	/* destroys the guest too */
	return rc;
}

static void ra_seq(struct bench *b, struct result *r)
{
	/* Half the guest: twice the budget, so that the pass fills the
	   budget and then runs as long again evicting what it read, as a
	   longer pass would; the rest would only lengthen the side without
	   readahead, 4 KiB per fault, by seconds per repetition. */
	uint64_t bytes = 4 * b->budget, npages = bytes / PAGE, read = 2 * b->budget;
	uint64_t rpages = read / PAGE;
	struct ra_seq_out o, on = { 0 }, off = { 0 };
	double rate, best_on = 0, best_off = 0;
	char rates_on[96] = "", rates_off[96] = "", b1[32], b2[32], b3[32];
	unsigned flags;
	int rep, k;

	if (!r->want)
		return;
	bench_progress("readahead_seq: guest of %s on a budget of %s, all in swap, its first %s "
		       "read in order with and without readahead, %d times each, alternating",
		       fmt_bytes(b1, sizeof(b1), bytes), fmt_bytes(b2, sizeof(b2), b->budget),
		       fmt_bytes(b3, sizeof(b3), read), RA_SEQ_REPS);
	for (rep = 0; rep < RA_SEQ_REPS; rep++) {
		for (k = 0; k < 2; k++) {
			/* on, off / off, on / ...: neither side always runs right
			   after the other's write-out, while the disk may still be
			   settling from it */
			flags = (rep + k) & 1 ? UMLMEM_NO_READAHEAD : 0;
			if (ra_seq_once(b, r, flags, bytes, read, &o))
				return;
			rate = o.secs > 0 ? (double)o.swap_ins / o.secs : 0;
			bench_progress("readahead_seq: rep %d: %s %.0f pages/s", rep + 1,
				       ra_side(flags), rate);
			if (flags) {
				res_rates_append(rates_off, sizeof(rates_off), rate);
				if (rate > best_off) {
					best_off = rate;
					off = o;
				}
			} else {
				res_rates_append(rates_on, sizeof(rates_on), rate);
				if (rate > best_on) {
					best_on = rate;
					on = o;
				}
			}
		}
	}
	res_set(r, best_on, best_off, "pages/s", false);
	res_int(r, "pages", (int64_t)npages);
	res_int(r, "budget_pages", (int64_t)(b->budget / PAGE));
	res_int(r, "read_pages", (int64_t)rpages);
	res_int(r, "call_bytes", RA_SEQ_CHUNK);
	res_int(r, "reps", RA_SEQ_REPS);
	res_num(r, "seconds", on.secs);
	res_int(r, "swap_ins", (int64_t)on.swap_ins);
	res_int(r, "readahead_pages", (int64_t)on.ra_pages);
	res_int(r, "readahead_hits", (int64_t)on.ra_hits);
	res_num(r, "MiB_per_s", best_on * PAGE / (1024.0 * 1024.0));
	res_str(r, "rates", "%s", rates_on);
	res_num(r, "baseline_seconds", off.secs);
	res_int(r, "baseline_swap_ins", (int64_t)off.swap_ins);
	res_int(r, "baseline_readahead_pages", (int64_t)off.ra_pages);
	res_int(r, "baseline_readahead_hits", (int64_t)off.ra_hits);
	res_num(r, "baseline_MiB_per_s", best_off * PAGE / (1024.0 * 1024.0));
	res_str(r, "baseline_rates", "%s", rates_off);
	res_str(r, "engine", "%s", engine_name(b->engine));
	res_str(r, "baseline_mode", "the same pass on a host with UMLMEM_NO_READAHEAD, fresh "
		"host each repetition, best of %d", RA_SEQ_REPS);
	if (on.swap_ins != rpages || off.swap_ins != rpages)
		res_note(r, "the passes paged in %" PRIu64 " and %" PRIu64 " pages, not the %"
			 PRIu64 " they read", on.swap_ins, off.swap_ins, rpages);
	if (!on.ra_hits)
		res_note(r, "no fault found its page read ahead: readahead never engaged");
	if (r->ratio < 1.0)
		res_note(r, "readahead loses on sequential access: it should not be kept");
	else if (r->ratio < 1.1)
		res_note(r, "readahead wins by less than 10%% on sequential access: within "
			 "what the disk's speed varies; compare several runs");
}

/* Slices per side: short ones, so that the two sides take turns often
   enough to share the load of a busy machine alike. */
#define RA_RAND_SLICES 32
#define RA_RAND_SLICES_QUICK 16

/* readahead_random's two sides: the same workload, one host flag apart. */
struct ra_side_host {
	unsigned flags;
	umlmem_host *h;
	umlmem_guest *g;
	struct phase_out out;
};

static void ra_random(struct bench *b, struct result *r)
{
	uint64_t ws = 4 * b->budget, npages = ws / PAGE;
	struct ra_side_host side[2] = { { .flags = 0 }, { .flags = UMLMEM_NO_READAHEAD } };
	unsigned rounds = b->quick ? RA_RAND_SLICES_QUICK : RA_RAND_SLICES, i, j, k;
	double slice = b->seconds / rounds, value, base;
	struct umlmem_stats st;
	struct phase *ph = NULL;
	struct phase_out *on = &side[0].out, *off = &side[1].out;
	char b1[32], b2[32];

	if (!r->want)
		return;
	ph = phase_new(r, npages);
	if (!ph)
		return;
	bench_progress("readahead_random: two guests of %s, each on its own budget of %s, one host "
		       "with readahead and one without, filling them", fmt_bytes(b1, sizeof(b1), ws),
		       fmt_bytes(b2, sizeof(b2), b->budget));
	for (k = 0; k < 2; k++) {
		if (bench_host(b, r, b->budget, ws, side[k].flags, "bench-readahead-random",
			       &side[k].h, &side[k].g))
			goto out;
		if (bench_fill_guest(r, side[k].g, ws, 0, "readahead_random fill"))
			goto out;
	}
	umlmem_guest_stats(side[0].g, &st);
	bench_progress("readahead_random: %" PRIu64 " pages resident, %" PRIu64 " in swap on each; "
		       "1 thread, %.1f s each in alternating slices, after %.1f s warm-up each",
		       st.resident_pages, st.swapped_pages, b->seconds, b->warm);
	for (i = 0; i < rounds; i++) {
		for (j = 0; j < 2; j++) {
			/* on, off / off, on / ...: a drift in load or disk speed
			   during the run cancels out instead of favouring the side
			   that always goes second */
			k = (i + j) & 1;
			/* the same seed on both sides: the same pages, in the same
			   order, so that the one difference is the flag */
			if (run_slice(r, ph, side[k].h, side[k].g, NULL, 1, 4 * i + 1,
				      i ? 0 : b->warm, slice, &side[k].out))
				goto out;
		}
	}
	value = on->secs > 0 ? (double)on->swap_ins / on->secs : 0;
	base = off->secs > 0 ? (double)off->swap_ins / off->secs : 0;
	res_set(r, value, base, "faults/s", false);
	res_int(r, "threads", 1);
	res_int(r, "pages", (int64_t)npages);
	res_int(r, "budget_pages", (int64_t)(b->budget / PAGE));
	res_int(r, "slices", rounds);
	res_num(r, "seconds", on->secs);
	res_int(r, "reads", (int64_t)on->ops);
	res_int(r, "swap_ins", (int64_t)on->swap_ins);
	res_int(r, "readahead_pages", (int64_t)on->ra_pages);
	res_int(r, "readahead_hits", (int64_t)on->ra_hits);
	res_num(r, "hit_fraction", on->ops ? 1.0 - (double)on->swap_ins / (double)on->ops : NAN);
	res_num(r, "baseline_seconds", off->secs);
	res_int(r, "baseline_reads", (int64_t)off->ops);
	res_int(r, "baseline_swap_ins", (int64_t)off->swap_ins);
	res_int(r, "baseline_readahead_pages", (int64_t)off->ra_pages);
	res_int(r, "baseline_readahead_hits", (int64_t)off->ra_hits);
	res_num(r, "baseline_hit_fraction", off->ops ? 1.0 - (double)off->swap_ins /
		(double)off->ops : NAN);
	res_str(r, "engine", "%s", engine_name(b->engine));
	res_str(r, "baseline_mode", "the same reads (same seeds) on a host with "
		"UMLMEM_NO_READAHEAD, in alternating slices");
	if (off->ra_pages || off->ra_hits)
		res_note(r, "the host without readahead read ahead: UMLMEM_NO_READAHEAD was "
			 "not honoured");
	if (r->ratio < 0.95)
		res_note(r, "readahead costs random access %.0f%%: more than the 5%% that "
			 "alternating slices leave as noise", 100.0 * (1.0 - r->ratio));
	else if (r->ratio <= 1.05)
		res_note(r, "within 5%%: readahead does not lose on random access");
out:
	for (k = 0; k < 2; k++)
		umlmem_host_destroy(side[k].h);	/* destroys the guest too */
	phase_free(ph);
}

static void readahead_run(struct bench *b, struct result **res)
{
	ra_seq(b, res[RA_SEQ]);
	ra_random(b, res[RA_RAND]);
}

static const struct bench_key keys[] = {
	[RA_SEQ] = { "readahead_seq",
		"pages/s paged in by reading a guest in swap in order;\n"
		"baseline: the same without readahead (UMLMEM_NO_READAHEAD)\n" },
	[RA_RAND] = { "readahead_random",
		"the pagein_random_t1 workload with readahead; baseline: the\n"
		"same without it (ratio ~1: readahead must not lose)\n" },
	{ NULL },
};

const struct bench_family bench_readahead = { "readahead", keys, readahead_run };
