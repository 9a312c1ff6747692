/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The pager: the budget holds, eviction works in batches and in LRU order,
 * clean pages leave without I/O, pinned pages stay, every failure of the
 * swap files (write errors, read errors, a full disk, a corrupted slot)
 * costs an error code and never data, and the swap files themselves are
 * private and give their space back.
 *
 * Pages are filled with a pattern derived from (page, version) and never
 * with zeros, because the pager may drop an all-zero page without writing
 * it, which would make swap counts depend on content.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"
#include "internal.h"
#include "swap.h"

#define PG UMLMEM_PAGE_SIZE

/* One host per test; static so that the fixture can clean up after a failed
   assertion. */
static struct {
	char dir[64];
	umlmem_host *h;
	uint8_t *buf, *buf2;
} P;

static void pager_setup(void)
{
	memset(&P, 0, sizeof(P));
	tu_mkswapdir(P.dir);
	P.buf = aligned_alloc(PG, 16 * PG);
	P.buf2 = aligned_alloc(PG, 16 * PG);
	cr_assert(P.buf && P.buf2);
}

static void pager_teardown(void)
{
	umlmem_host_destroy(P.h);
	P.h = NULL;
	free(P.buf);
	free(P.buf2);
	tu_rmswapdir(P.dir);
}

TestSuite(pager, .init = pager_setup, .fini = pager_teardown);

/* A host of @budget_pages frames; @batch 0 keeps the default batch, @nfiles
   0 one swap file, @cap_pages 0 unlimited swap. */
static umlmem_host *mk_host(uint64_t budget_pages, unsigned batch, unsigned nfiles,
			    uint64_t cap_pages)
{
	struct umlmem_host_config cfg;
	int rc;

	umlmem_host_config_init(&cfg);
	cfg.resident_bytes = budget_pages * PG;
	cfg.swap_dir = P.dir;
	cfg.swap_bytes = cap_pages * PG;
	cfg.swap_files = nfiles;
	if (batch)
		cfg.reclaim_batch = batch;
	/* these tests count the pager's own reads and writes page by page;
	   readahead has tests of its own */
	cfg.flags = UMLMEM_NO_READAHEAD;
	rc = umlmem_host_create(&cfg, &P.h);
	cr_assert_eq(rc, 0, "umlmem_host_create(%" PRIu64 " pages): %s: %s", budget_pages,
		     umlmem_strerror(rc), umlmem_errmsg());
	return P.h;
}

/* The content of page @idx at version @ver: random-looking, never all zero,
   different for every (page, version). */
static void pattern(void *page, uint64_t idx, unsigned ver)
{
	tu_fill(page, PG, idx * 0x100000001b3ull + ver * 0x9e3779b9ull + 1);
	((uint8_t *)page)[0] |= 1;
}

static void write_page(umlmem_guest *g, uint64_t idx, unsigned ver)
{
	int rc;

	pattern(P.buf, idx, ver);
	rc = umlmem_write(g, idx * PG, P.buf, PG);
	cr_assert_eq(rc, 0, "umlmem_write(page %" PRIu64 "): %s: %s", idx, umlmem_strerror(rc),
		     umlmem_errmsg());
}

/* Fails the test unless page @idx reads back as version @ver. */
static void expect_page(umlmem_guest *g, uint64_t idx, unsigned ver)
{
	int rc;

	memset(P.buf, 0x5a, PG);
	rc = umlmem_read(g, idx * PG, P.buf, PG);
	cr_assert_eq(rc, 0, "umlmem_read(page %" PRIu64 "): %s: %s", idx, umlmem_strerror(rc),
		     umlmem_errmsg());
	pattern(P.buf2, idx, ver);
	cr_assert(memcmp(P.buf, P.buf2, PG) == 0, "page %" PRIu64 " does not read back as version %u",
		  idx, ver);
}

static void expect_zero_page(umlmem_guest *g, uint64_t idx)
{
	int rc;

	memset(P.buf, 0x5a, PG);
	rc = umlmem_read(g, idx * PG, P.buf, PG);
	cr_assert_eq(rc, 0, "umlmem_read(page %" PRIu64 "): %s", idx, umlmem_strerror(rc));
	memset(P.buf2, 0, PG);
	cr_assert(memcmp(P.buf, P.buf2, PG) == 0, "page %" PRIu64 " does not read as zeros", idx);
}

static struct umlmem_stats hstats(void)
{
	struct umlmem_stats s;

	cr_assert_eq(umlmem_host_stats(P.h, &s), 0);
	return s;
}

static struct umlmem_stats gstats(umlmem_guest *g)
{
	struct umlmem_stats s;

	cr_assert_eq(umlmem_guest_stats(g, &s), 0);
	return s;
}

static void expect_counts_add_up(const struct umlmem_stats *s)
{
	cr_assert_eq(s->resident_pages + s->swapped_pages + s->zero_pages, s->ram_pages,
		     "resident %" PRIu64 " + swapped %" PRIu64 " + zero %" PRIu64 " != ram %" PRIu64,
		     s->resident_pages, s->swapped_pages, s->zero_pages, s->ram_pages);
}

static void clear_faults(void)
{
	io_inject(host_engine(P.h), IO_READ, 1, IO_FAULT_NONE, 0);
	io_inject(host_engine(P.h), IO_WRITE, 1, IO_FAULT_NONE, 0);
}

/* ---- the budget ----------------------------------------------------------- */

/* Writing eight times the budget never takes more frames than the budget,
   whether the writes are whole pages or straddle pages, and all of it reads
   back. */
Test(pager, budget_held)
{
	const uint64_t budget = 64, npages = 8 * budget + 17;
	umlmem_guest *g;
	struct umlmem_stats s;

	mk_host(budget, 0, 0, 0);
	g = tu_guest(P.h, npages * PG);
	for (uint64_t i = 0; i < npages; i++) {
		write_page(g, i, 0);
		s = hstats();
		cr_assert_leq(s.frames_used, budget, "after page %" PRIu64 ": frames_used %" PRIu64
			      " above the budget of %" PRIu64, i, s.frames_used, budget);
		expect_counts_add_up(&s);
	}
	/* Unaligned writes of three pages touch four pages each. */
	for (uint64_t off = 100; off + 4 * PG <= npages * PG; off += 5 * PG + 333) {
		uint64_t first = off / PG;
		int rc;

		/* rewrite the pages with version 1 in one straddling call */
		for (uint64_t k = 0; k < 4; k++)
			pattern(P.buf2 + k * PG, first + k, 1);
		rc = umlmem_write(g, off, P.buf2 + off % PG, 3 * PG);
		cr_assert_eq(rc, 0, "umlmem_write(0x%" PRIx64 ", 3 pages): %s", off, umlmem_strerror(rc));
		rc = umlmem_read(g, first * PG, P.buf, 4 * PG);
		cr_assert_eq(rc, 0);
		cr_assert(memcmp(P.buf + off % PG, P.buf2 + off % PG, 3 * PG) == 0,
			  "straddling write at 0x%" PRIx64 " does not read back", off);
		/* restore every page to version 0, so the final check is simple */
		for (uint64_t k = 0; k < 4; k++)
			write_page(g, first + k, 0);
		s = hstats();
		cr_assert_leq(s.frames_used, budget, "frames_used %" PRIu64 " above the budget",
			      s.frames_used);
	}
	for (uint64_t i = 0; i < npages; i++) {
		expect_page(g, i, 0);
		s = hstats();
		cr_assert_leq(s.frames_used, budget);
	}
	s = hstats();
	cr_assert_geq(s.swap_outs, npages - budget, "only %" PRIu64 " swap-outs for %" PRIu64
		      " pages", s.swap_outs, npages);
	expect_counts_add_up(&s);
	tu_check(P.h);
	umlmem_guest_destroy(g);
	umlmem_host_destroy(P.h);
	P.h = NULL;
}

/* ---- batches -------------------------------------------------------------- */

/* Fills the budget, then faults once more: the pager must write a batch,
   not one page, yet free only the frame the fault needs. The other pages
   written stay resident, and their frames serve the next faults without
   further I/O. */
static void batch_case(unsigned cfg_batch, unsigned expect_max)
{
	const uint64_t budget = 128;
	struct umlmem_stats s0, s1, s2;
	umlmem_guest *g;
	uint64_t jump, next;

	mk_host(budget, cfg_batch, 0, 0);
	g = tu_guest(P.h, 4 * budget * PG);
	for (uint64_t i = 0; i < budget; i++)
		write_page(g, i, 0);
	s0 = hstats();
	cr_assert_eq(s0.frames_used, budget, "the budget is not full after %" PRIu64 " pages",
		     budget);
	cr_assert_eq(s0.swap_outs, 0, "swap-outs before the budget was full");

	write_page(g, budget, 0);
	s1 = hstats();
	jump = s1.swap_outs - s0.swap_outs;
	cr_log_info("pager/batch (reclaim_batch %u): one fault on a full budget wrote %" PRIu64
		    " pages", cfg_batch, jump);
	cr_assert_eq(s1.faults - s0.faults, 1);
	cr_assert_gt(jump, 1, "one fault on a full budget evicted %" PRIu64 " page(s): no batch",
		     jump);
	cr_assert_leq(jump, expect_max, "a batch of %" PRIu64 " pages, above the batch size %u",
		      jump, expect_max);
	cr_assert_eq(s1.resident_pages, budget, "one fault on a full budget left %" PRIu64
		     " of %" PRIu64 " pages resident: the batch written for it left with it",
		     s1.resident_pages, budget);
	cr_assert_eq(s1.swapped_pages, 1);

	/* The batch left jump - 1 pages written and still resident: that many
	   first touches take their frames without writing. */
	next = budget + 1;
	for (uint64_t k = 0; k + 1 < jump; k++)
		write_page(g, next++, 0);
	s2 = hstats();
	cr_assert_eq(s2.swap_outs, s1.swap_outs, "%" PRIu64 " swap-outs although pages were "
		     "written already", s2.swap_outs - s1.swap_outs);
	cr_assert_eq(s2.frames_used, budget);
	cr_assert_eq(s2.resident_pages, budget);
	cr_assert_eq(s2.swapped_pages, jump);
	write_page(g, next++, 0);
	cr_assert_gt(hstats().swap_outs - s2.swap_outs, 1, "the second batch is a single page");

	for (uint64_t i = 0; i < next; i++)
		expect_page(g, i, 0);
	tu_check(P.h);
	umlmem_host_destroy(P.h);   /* also destroys the guest */
	P.h = NULL;
}

Test(pager, batch_default)
{
	struct umlmem_host_config cfg;

	umlmem_host_config_init(&cfg);
	cr_assert(cfg.reclaim_batch == 64 || cfg.reclaim_batch == 0,
		  "reclaim_batch defaults to %u, the header says 64", cfg.reclaim_batch);
	batch_case(0, 64);
}

Test(pager, batch_configured)
{
	batch_case(16, 16);
}

/* A page written out in a batch but still resident, and used again
   before its frame was needed, is in use: the next fault writes a new
   batch rather than take its frame, and reading it again is no fault. */
Test(pager, written_used_again)
{
	const uint64_t budget = 64, batch = 16;
	struct umlmem_stats s0, s1, s2;
	umlmem_guest *g;

	mk_host(budget, batch, 0, 0);
	g = tu_guest(P.h, 4 * budget * PG);
	for (uint64_t i = 0; i <= budget; i++)
		write_page(g, i, 0);
	s0 = hstats();
	cr_assert_eq(s0.swap_outs, batch, "a fault on a full budget wrote %" PRIu64 " pages",
		     s0.swap_outs);
	cr_assert_eq(s0.swapped_pages, 1);
	/* the batch was the oldest pages, 0 .. 15, and 0 left: use the rest */
	for (uint64_t i = 1; i < batch; i++)
		expect_page(g, i, 0);
	s1 = hstats();
	cr_assert_eq(s1.faults, s0.faults, "%" PRIu64 " faults on pages written but resident",
		     s1.faults - s0.faults);
	write_page(g, budget + 1, 0);
	s2 = hstats();
	cr_assert_gt(s2.swap_outs, s1.swap_outs, "a fault took the frame of a page written "
		     "and used again instead of writing a new batch");
	for (uint64_t i = 1; i < batch; i++)
		expect_page(g, i, 0);
	cr_assert_eq(hstats().faults, s2.faults, "%" PRIu64 " pages used again after their "
		     "write faulted afterwards", hstats().faults - s2.faults);
	for (uint64_t i = 0; i <= budget + 1; i++)
		expect_page(g, i, 0);
	tu_check(P.h);
}

/* A victim waiting in the written FIFO whose stored copy another guest
   shares: that guest's fault maps the waiting frame too (the swap cache
   names it) and reads nothing, and every byte of both guests holds. */
Test(pager, written_victim_mapped_by_a_sharer)
{
	const uint64_t budget = 64, batch = 16, n = 32;
	struct umlmem_stats s0, s1;
	umlmem_guest *g, *c = NULL;
	uint64_t ev;
	int rc;

	mk_host(budget, batch, 0, 0);
	g = tu_guest(P.h, 4 * budget * PG);
	for (uint64_t i = 0; i < n; i++)
		write_page(g, i, 0);
	cr_assert_eq(umlmem_reclaim(P.h, budget, &ev), 0);
	cr_assert_eq(ev, n);
	rc = umlmem_guest_clone(g, NULL, &c);
	cr_assert_eq(rc, 0, "umlmem_guest_clone: %s: %s", umlmem_strerror(rc), umlmem_errmsg());
	/* the clone reads the pages back (clean copies of handles g shares),
	   fills the budget, and one fault more chooses a batch of the oldest,
	   its pages 0 .. 15: page 0 leaves, the rest wait */
	for (uint64_t i = 0; i < n; i++)
		expect_page(c, i, 0);
	for (uint64_t i = n; i <= budget; i++)
		write_page(c, i, 0);
	s0 = hstats();
	cr_assert_eq(s0.resident_pages, budget);
	cr_assert_eq(s0.swap_outs, n, "a batch of clean pages wrote %" PRIu64 " pages",
		     s0.swap_outs - n);
	/* g's pages 1 .. 15 are in those frames: no read */
	for (uint64_t i = 1; i < batch; i++)
		expect_page(g, i, 0);
	s1 = hstats();
	cr_assert_eq(s1.swap_ins, s0.swap_ins, "g read %" PRIu64 " pages the clone still "
		     "had resident", s1.swap_ins - s0.swap_ins);
	tu_check(P.h);
	for (uint64_t i = 0; i < n; i++)
		expect_page(g, i, 0);
	for (uint64_t i = 0; i <= budget; i++)
		expect_page(c, i, 0);
	for (uint64_t i = n; i <= budget; i++)
		expect_zero_page(g, i);
	tu_check(P.h);
	umlmem_guest_destroy(c);
}

/* ---- clean pages ---------------------------------------------------------- */

/* A page read back from swap and not written since still has its swap copy:
   evicting it again costs no write. A write (or a write pin) makes it dirty
   again. */
Test(pager, clean_dropped)
{
	const uint64_t budget = 64, n = 32;
	struct umlmem_stats s0, s1, s2, s3;
	umlmem_guest *g;
	uint64_t ev = 0;
	void *ptr;
	int rc;

	mk_host(budget, 0, 0, 0);
	g = tu_guest(P.h, 2 * budget * PG);
	for (uint64_t i = 0; i < n; i++)
		write_page(g, i, 0);
	cr_assert_eq(umlmem_reclaim(P.h, budget, &ev), 0);
	cr_assert_eq(ev, n);
	s0 = hstats();
	cr_assert_eq(s0.swap_outs, n);
	cr_assert_eq(s0.swapped_pages, n);
	cr_assert_eq(s0.resident_pages, 0);

	/* read everything back: clean copies */
	for (uint64_t i = 0; i < n; i++)
		expect_page(g, i, 0);
	s1 = hstats();
	cr_assert_eq(s1.swap_ins - s0.swap_ins, n);
	cr_assert_eq(s1.resident_pages, n);
	cr_assert_eq(s1.swapped_pages, 0);

	/* evicting clean pages writes nothing */
	cr_assert_eq(umlmem_reclaim(P.h, budget, &ev), 0);
	cr_assert_eq(ev, n, "reclaim evicted %" PRIu64 " of %" PRIu64 " clean pages", ev, n);
	s2 = hstats();
	cr_assert_eq(s2.swap_outs, s1.swap_outs, "evicting %" PRIu64 " clean pages wrote %" PRIu64,
		     n, s2.swap_outs - s1.swap_outs);
	cr_assert_eq(s2.swapped_pages, n);
	cr_assert_eq(s2.resident_pages, 0);
	tu_check(P.h);

	/* One page written (1 byte), one read-pinned, one write-pinned without
	   a store: only the written and the write-pinned one are dirty. */
	cr_assert_eq(umlmem_read(g, 5 * PG, P.buf2, PG), 0);   /* fault it in first */
	P.buf2[100] ^= 0xff;
	cr_assert_eq(umlmem_write(g, 5 * PG + 100, P.buf2 + 100, 1), 0);
	rc = umlmem_pin(g, 7 * PG, UMLMEM_READ, &ptr);
	cr_assert_eq(rc, 0, "umlmem_pin(read): %s", umlmem_strerror(rc));
	cr_assert_eq(umlmem_unpin(g, 7 * PG), 0);
	rc = umlmem_pin(g, 8 * PG, UMLMEM_READ | UMLMEM_WRITE, &ptr);
	cr_assert_eq(rc, 0, "umlmem_pin(write): %s", umlmem_strerror(rc));
	cr_assert_eq(umlmem_unpin(g, 8 * PG), 0);
	s2 = hstats();
	cr_assert_eq(s2.resident_pages, 3);
	cr_assert_eq(umlmem_reclaim(P.h, budget, &ev), 0);
	cr_assert_eq(ev, 3);
	s3 = hstats();
	cr_assert_eq(s3.swap_outs - s2.swap_outs, 2,
		     "evicting a written, a read-pinned and a write-pinned page wrote %" PRIu64
		     " pages, expected 2", s3.swap_outs - s2.swap_outs);

	cr_assert_eq(umlmem_read(g, 5 * PG, P.buf, PG), 0);
	cr_assert(memcmp(P.buf, P.buf2, PG) == 0, "page 5 lost its one-byte write");
	for (uint64_t i = 0; i < n; i++)
		if (i != 5)
			expect_page(g, i, 0);
	tu_check(P.h);
	umlmem_host_destroy(P.h);
	P.h = NULL;
}

/* ---- replacement order ---------------------------------------------------- */

/* A hot set touched between every two cold accesses stays resident while
   a cold set many times the budget streams past it. */
Test(pager, lru_hot_set)
{
	const uint64_t budget = 256, nhot = 32;
	const uint64_t ncold = tu_valgrind() ? 3 * budget : 8 * budget;
	uint64_t hot_faults = 0, cold_faults = 0, rng = 42;
	umlmem_guest *hot, *cold;
	struct umlmem_stats a, b;
	uint8_t byte;

	mk_host(budget, 0, 0, 0);
	hot = tu_guest(P.h, nhot * PG);
	cold = tu_guest(P.h, ncold * PG);
	for (uint64_t i = 0; i < nhot; i++)
		write_page(hot, i, 0);
	for (uint64_t i = 0; i < ncold; i++)
		write_page(cold, i, 0);

	/* warm the hot set first: only faults in steady state count */
	for (uint64_t i = 0; i < nhot; i++)
		cr_assert_eq(umlmem_read(hot, i * PG, &byte, 1), 0);
	for (uint64_t k = 0; k < ncold; k++) {
		uint64_t c = tu_splitmix64(&rng) % ncold;

		a = hstats();
		cr_assert_eq(umlmem_read(cold, c * PG + 7, &byte, 1), 0);
		b = hstats();
		cold_faults += b.faults - a.faults;
		for (uint64_t i = 0; i < nhot; i++)
			cr_assert_eq(umlmem_read(hot, i * PG + (k % PG), &byte, 1), 0);
		a = hstats();
		hot_faults += a.faults - b.faults;
	}
	cr_log_info("pager/lru_hot_set: %" PRIu64 " cold accesses faulted %" PRIu64
		    " times, %" PRIu64 " hot accesses %" PRIu64 " times", ncold, cold_faults,
		    ncold * nhot, hot_faults);
	/* Most cold accesses miss (the cold set is far beyond the budget)... */
	cr_assert_geq(cold_faults, ncold / 2, "only %" PRIu64 " cold faults", cold_faults);
	/* ...while the hot pages, touched far more often, almost never do. */
	cr_assert_leq(hot_faults * 10, cold_faults,
		      "the hot set faulted %" PRIu64 " times against %" PRIu64 " cold faults",
		      hot_faults, cold_faults);
	cr_assert_eq(gstats(hot).resident_pages, nhot, "the hot set is not resident at the end");

	for (uint64_t i = 0; i < nhot; i++)
		expect_page(hot, i, 0);
	for (uint64_t i = 0; i < ncold; i += 7)
		expect_page(cold, i, 0);
	tu_check(P.h);
	umlmem_host_destroy(P.h);
	P.h = NULL;
}

/* ---- pins ------------------------------------------------------------------ */

/* umlmem_reclaim never takes a pinned page, however often it is asked. */
Test(pager, pinned_skipped)
{
	const uint64_t budget = 64, npin = 8;
	uint8_t *ptr[8], *again;
	umlmem_guest *g;
	struct umlmem_stats s, t;
	uint64_t ev, total = 0;
	int rc;

	mk_host(budget, 0, 0, 0);
	g = tu_guest(P.h, 4 * budget * PG);
	for (uint64_t i = 0; i < budget; i++)
		write_page(g, i, 0);
	/* pages 10, 15, ... 45: half read pins, half write pins with new content */
	for (uint64_t k = 0; k < npin; k++) {
		uint64_t idx = 10 + 5 * k;
		bool wr = k & 1;

		rc = umlmem_pin(g, idx * PG, wr ? UMLMEM_READ | UMLMEM_WRITE : UMLMEM_READ,
				(void **)&ptr[k]);
		cr_assert_eq(rc, 0, "umlmem_pin(page %" PRIu64 "): %s", idx, umlmem_strerror(rc));
		if (wr)
			pattern(ptr[k], idx, 1);
	}
	for (int round = 0; round < 5; round++) {
		rc = umlmem_reclaim(P.h, budget, &ev);
		cr_assert_eq(rc, 0, "umlmem_reclaim: %s", umlmem_strerror(rc));
		total += ev;
		if (!ev)
			break;
	}
	s = hstats();
	cr_assert_leq(total, budget - npin, "reclaim evicted %" PRIu64 " pages with %" PRIu64
		      " of %" PRIu64 " pinned", total, npin, budget);
	cr_assert_eq(s.resident_pages, npin, "%" PRIu64 " pages resident after reclaiming "
		     "everything, expected the %" PRIu64 " pinned ones", s.resident_pages, npin);
	cr_assert_eq(s.frames_used, npin);

	/* The pinned pages are still there: reading them needs no fault, the
	   pointers still hold their content, and pinning again gives the same
	   address. */
	for (uint64_t k = 0; k < npin; k++) {
		uint64_t idx = 10 + 5 * k;

		s = hstats();
		expect_page(g, idx, k & 1);
		t = hstats();
		cr_assert_eq(t.faults, s.faults, "reading pinned page %" PRIu64 " faulted", idx);
		pattern(P.buf2, idx, k & 1);
		cr_assert(memcmp(ptr[k], P.buf2, PG) == 0, "pinned page %" PRIu64 " changed", idx);
		cr_assert_eq(umlmem_pin(g, idx * PG, UMLMEM_READ, (void **)&again), 0);
		cr_assert_eq(again, ptr[k], "pinned page %" PRIu64 " moved", idx);
		cr_assert_eq(umlmem_unpin(g, idx * PG), 0);
	}
	/* A discard over a pinned page is refused as a whole. */
	cr_assert_eq(umlmem_discard(g, 8 * PG, 4 * PG), -EBUSY);
	expect_page(g, 8, 0);

	for (uint64_t k = 0; k < npin; k++)
		cr_assert_eq(umlmem_unpin(g, (10 + 5 * k) * PG), 0);
	s = hstats();
	cr_assert_eq(umlmem_reclaim(P.h, budget, &ev), 0);
	cr_assert_eq(ev, s.resident_pages, "after unpinning, reclaim evicted %" PRIu64 " of %" PRIu64,
		     ev, s.resident_pages);
	for (uint64_t i = 0; i < budget; i++) {
		bool pinned_w = i >= 10 && i < 10 + 5 * npin && (i - 10) % 5 == 0 && ((i - 10) / 5) & 1;

		expect_page(g, i, pinned_w ? 1 : 0);
	}
	tu_check(P.h);
	umlmem_host_destroy(P.h);
	P.h = NULL;
}

/* Every frame pinned: whatever needs a new frame fails with -ENOMEM and
   changes nothing; once the pins go, everything works and nothing is lost. */
Test(pager, all_pinned_enomem)
{
	const uint64_t budget = 16;
	uint8_t *ptr[16];
	umlmem_guest *g;
	struct umlmem_stats s;
	uint64_t ev = 1;
	void *p;
	int rc;

	mk_host(budget, 0, 0, 0);
	g = tu_guest(P.h, 64 * PG);
	for (uint64_t i = 0; i < 32; i++)
		write_page(g, i, 0);
	for (uint64_t i = 0; i < budget; i++) {
		rc = umlmem_pin(g, i * PG, UMLMEM_READ | UMLMEM_WRITE, (void **)&ptr[i]);
		cr_assert_eq(rc, 0, "umlmem_pin(page %" PRIu64 "): %s", i, umlmem_strerror(rc));
		pattern(ptr[i], i, 1);
	}
	s = hstats();
	cr_assert_eq(s.frames_used, budget);

	/* a first touch */
	pattern(P.buf, 40, 0);
	rc = umlmem_write(g, 40 * PG, P.buf, PG);
	cr_assert_eq(rc, -ENOMEM, "write to a new page with every frame pinned: %s",
		     umlmem_strerror(rc));
	/* a partial write of a page in swap */
	rc = umlmem_write(g, 20 * PG + 10, "xyz", 3);
	cr_assert_eq(rc, -ENOMEM, "write to a swapped page with every frame pinned: %s",
		     umlmem_strerror(rc));
	/* a pin */
	rc = umlmem_pin(g, 21 * PG, UMLMEM_READ, &p);
	cr_assert_eq(rc, -ENOMEM, "pin with every frame pinned: %s", umlmem_strerror(rc));
	/* a read of a swapped page may be served without a frame; if not, it
	   is -ENOMEM, never wrong bytes */
	memset(P.buf, 0x5a, PG);
	rc = umlmem_read(g, 22 * PG, P.buf, PG);
	cr_assert(rc == 0 || rc == -ENOMEM, "read of a swapped page: %s", umlmem_strerror(rc));
	if (rc == 0) {
		pattern(P.buf2, 22, 0);
		cr_assert(memcmp(P.buf, P.buf2, PG) == 0, "page 22 read wrong bytes");
	}
	/* never-written pages read as zeros without a frame */
	expect_zero_page(g, 50);
	/* a pinned page can still be written by copy: it has its frame */
	pattern(P.buf, 3, 2);
	cr_assert_eq(umlmem_write(g, 3 * PG, P.buf, PG), 0);
	cr_assert(memcmp(ptr[3], P.buf, PG) == 0, "the pin of page 3 does not see the write");
	rc = umlmem_reclaim(P.h, budget, &ev);
	cr_assert_eq(rc, 0, "reclaim with every frame pinned: %s", umlmem_strerror(rc));
	cr_assert_eq(ev, 0);
	s = hstats();
	cr_assert_eq(s.frames_used, budget);
	cr_assert_eq(gstats(g).faults, s.faults);
	expect_counts_add_up(&s);
	tu_check(P.h);

	for (uint64_t i = 0; i < budget; i++)
		cr_assert_eq(umlmem_unpin(g, i * PG), 0);
	cr_assert_eq(umlmem_unpin(g, 0), -EINVAL, "an unpin without a pin is accepted");
	write_page(g, 40, 0);
	rc = umlmem_pin(g, 21 * PG, UMLMEM_READ, &p);
	cr_assert_eq(rc, 0, "pin after unpinning: %s", umlmem_strerror(rc));
	cr_assert_eq(umlmem_unpin(g, 21 * PG), 0);
	for (uint64_t i = 0; i < 32; i++)
		expect_page(g, i, i == 3 ? 2 : i < budget ? 1 : 0);
	expect_page(g, 40, 0);
	tu_check(P.h);
	umlmem_host_destroy(P.h);
	P.h = NULL;
}

/* ---- umlmem_reclaim ------------------------------------------------------ */

/* The count umlmem_reclaim reports is exactly what left memory, as the
   host's and the guests' counters show. */
Test(pager, reclaim_counts)
{
	const uint64_t budget = 128, per_guest = 3 * budget / 2;
	static const uint64_t wants[] = { 0, 1, 5, 17, 64, 100, 1000, 3, 128 };
	umlmem_guest *g[2];
	uint64_t rng = 7;

	mk_host(budget, 0, 0, 0);
	g[0] = tu_guest(P.h, per_guest * PG);
	g[1] = tu_guest(P.h, per_guest * PG + 5);
	for (uint64_t i = 0; i < per_guest; i++) {
		write_page(g[0], i, 0);
		write_page(g[1], i, 0);
	}
	cr_assert_eq(umlmem_reclaim(NULL, 1, NULL), -EINVAL);

	for (size_t w = 0; w < sizeof(wants) / sizeof(wants[0]); w++) {
		struct umlmem_stats a = hstats(), b;
		struct umlmem_stats ga[2] = { gstats(g[0]), gstats(g[1]) }, gb[2];
		uint64_t ev = UINT64_MAX, expect;
		int rc;

		rc = umlmem_reclaim(P.h, wants[w], &ev);
		cr_assert_eq(rc, 0, "umlmem_reclaim(%" PRIu64 "): %s", wants[w], umlmem_strerror(rc));
		b = hstats();
		gb[0] = gstats(g[0]);
		gb[1] = gstats(g[1]);
		expect = wants[w] < a.resident_pages ? wants[w] : a.resident_pages;
		cr_assert_eq(ev, expect, "umlmem_reclaim(%" PRIu64 ") with %" PRIu64
			     " pages resident, none pinned, evicted %" PRIu64, wants[w],
			     a.resident_pages, ev);
		cr_assert_eq(a.resident_pages - b.resident_pages, ev,
			     "reclaim reported %" PRIu64 ", resident fell by %" PRIu64, ev,
			     a.resident_pages - b.resident_pages);
		cr_assert_eq(b.swapped_pages - a.swapped_pages, ev,
			     "reclaim reported %" PRIu64 ", swapped rose by %" PRIu64, ev,
			     b.swapped_pages - a.swapped_pages);
		cr_assert_eq(a.frames_used - b.frames_used, ev);
		cr_assert_leq(b.swap_outs - a.swap_outs, ev, "more writes than pages evicted");
		cr_assert_eq((ga[0].resident_pages - gb[0].resident_pages) +
			     (ga[1].resident_pages - gb[1].resident_pages), ev,
			     "the guests' resident counts do not add up to the evicted count");
		cr_assert_eq((gb[0].swap_outs - ga[0].swap_outs) + (gb[1].swap_outs - ga[1].swap_outs),
			     b.swap_outs - a.swap_outs);
		expect_counts_add_up(&b);

		/* bring some pages back: some only read (clean), some written */
		for (int k = 0; k < 40; k++) {
			uint64_t r = tu_splitmix64(&rng), idx = (r >> 8) % per_guest;
			umlmem_guest *gg = g[r & 1];

			if (r & 2)
				write_page(gg, idx, 0);
			else
				expect_page(gg, idx, 0);
		}
	}
	/* evicted may be NULL */
	cr_assert_eq(umlmem_reclaim(P.h, 10, NULL), 0);
	for (uint64_t i = 0; i < per_guest; i++) {
		expect_page(g[0], i, 0);
		expect_page(g[1], i, 0);
	}
	tu_check(P.h);
	umlmem_host_destroy(P.h);
	P.h = NULL;
}

/* ---- disk space ---------------------------------------------------------- */

/* Discarding most of what is in swap gives the disk space back: clusters
   without live slots are punched out of the files. */
Test(pager, swap_disk_shrinks)
{
	const uint64_t budget = 64;
	const uint64_t npages = tu_valgrind() ? 512 : 1024;
	const uint64_t keep = npages / 10;
	struct umlmem_stats s;
	struct swap_info si;
	uint64_t d1, d2, d3, ev;
	umlmem_guest *g;

	mk_host(budget, 0, 0, 0);
	g = tu_guest(P.h, npages * PG);
	for (uint64_t i = 0; i < npages; i++)
		write_page(g, i, 0);
	cr_assert_eq(umlmem_reclaim(P.h, budget, &ev), 0);
	s = hstats();
	cr_assert_eq(s.swapped_pages, npages);
	d1 = s.swap_disk_bytes;
	cr_assert_geq(d1, npages * PG, "swap_disk_bytes %" PRIu64 " for %" PRIu64 " swapped pages",
		      d1, npages);

	/* discard everything but the last tenth */
	cr_assert_eq(umlmem_discard(g, 0, (npages - keep) * PG), 0);
	s = hstats();
	d2 = s.swap_disk_bytes;
	swap_info(host_swap(P.h), &si);
	cr_log_info("pager/swap_disk_shrinks: %" PRIu64 " bytes on disk for %" PRIu64
		    " pages, %" PRIu64 " after keeping %" PRIu64 " (%" PRIu64 " clusters punched)",
		    d1, npages, d2, keep, si.punches);
	cr_assert_eq(s.swapped_pages, keep);
	cr_assert_gt(si.punches, 0, "no cluster was punched");
	cr_assert_leq(d2, d1 / 2, "swap_disk_bytes went from %" PRIu64 " to only %" PRIu64
		      " after discarding 90%% of the swapped pages", d1, d2);
	for (uint64_t i = npages - keep; i < npages; i++)
		expect_page(g, i, 0);

	/* and the rest */
	cr_assert_eq(umlmem_reclaim(P.h, budget, &ev), 0);
	cr_assert_eq(umlmem_discard(g, 0, npages * PG), 0);
	d3 = hstats().swap_disk_bytes;
	cr_assert_leq(d3, d2);
	cr_assert_leq(d3, 2 * SWAP_CLUSTER_BYTES, "%" PRIu64 " bytes still on disk with no page "
		      "in swap", d3);
	tu_check(P.h);
	umlmem_host_destroy(P.h);
	P.h = NULL;
}

/* ---- failing writes -------------------------------------------------------- */

/* Every swap write fails as @kind: reclaim and any fault that needs a frame
   fail, pages stay resident with their data, and once the fault is gone
   everything works. The error codes are checked last, so that a wrong code
   is reported only after everything else was found right. */
static void write_failure_case(enum io_fault kind, int want_err)
{
	const uint64_t budget = 32;
	struct umlmem_stats s0, s1, s;
	struct swap_info si;
	umlmem_guest *g;
	uint64_t ev = 99;
	int rc_write, rc_reclaim;

	mk_host(budget, 0, 0, 0);
	g = tu_guest(P.h, 4 * budget * PG);
	for (uint64_t i = 0; i < budget; i++)
		write_page(g, i, 0);
	s0 = hstats();
	io_inject(host_engine(P.h), IO_WRITE, 1, kind, 1000000);

	rc_reclaim = umlmem_reclaim(P.h, budget, &ev);
	s1 = hstats();
	cr_assert_neq(rc_reclaim, 0, "reclaim succeeded although every write failed");
	cr_assert_eq(ev, 0, "reclaim reported %" PRIu64 " evicted although every write failed", ev);
	cr_assert_eq(s1.resident_pages, budget, "pages left memory although their write failed");
	cr_assert_eq(s1.swapped_pages, 0);
	cr_assert_eq(s1.swap_outs, s0.swap_outs);
	swap_info(host_swap(P.h), &si);
	cr_assert_eq(si.slots_used, 0, "%" PRIu64 " slots held by failed writes", si.slots_used);
	tu_check(P.h);

	/* a first touch needs a frame, which needs a write */
	pattern(P.buf, 100, 0);
	rc_write = umlmem_write(g, 100 * PG, P.buf, PG);
	cr_assert_neq(rc_write, 0, "a write needing a frame succeeded with every swap write failing");
	expect_zero_page(g, 100);
	/* nothing was lost, and the resident pages read without a fault */
	s1 = hstats();
	for (uint64_t i = 0; i < budget; i++)
		expect_page(g, i, 0);
	s = hstats();
	cr_assert_eq(s.faults, s1.faults);
	cr_assert_eq(s.resident_pages, budget);
	tu_check(P.h);

	clear_faults();
	cr_assert_eq(umlmem_reclaim(P.h, budget, &ev), 0);
	cr_assert_eq(ev, budget);
	s = hstats();
	cr_assert_eq(s.swapped_pages, budget);
	write_page(g, 100, 0);
	for (uint64_t i = 0; i < budget; i++)
		expect_page(g, i, 0);
	expect_page(g, 100, 0);
	tu_check(P.h);

	cr_assert_eq(rc_reclaim, want_err, "reclaim with swap writes failing as %s: %s, expected %s",
		     kind == IO_FAULT_ENOSPC ? "ENOSPC" : kind == IO_FAULT_SHORT ? "short" : "EIO",
		     umlmem_strerror(rc_reclaim), umlmem_strerror(want_err));
	cr_assert_eq(rc_write, want_err, "a write needing a frame with swap writes failing as %s: "
		     "%s, expected %s",
		     kind == IO_FAULT_ENOSPC ? "ENOSPC" : kind == IO_FAULT_SHORT ? "short" : "EIO",
		     umlmem_strerror(rc_write), umlmem_strerror(want_err));
}

Test(pager, write_eio)
{
	struct umlmem_stats s;

	write_failure_case(IO_FAULT_EIO, -EIO);
	s = hstats();
	cr_assert_geq(s.io_errors, 2, "io_errors %" PRIu64 " after failed writes", s.io_errors);
	cr_assert_eq(s.checksum_errors, 0);
	umlmem_host_destroy(P.h);
	P.h = NULL;
}

Test(pager, write_short)
{
	struct umlmem_stats s;

	write_failure_case(IO_FAULT_SHORT, -EIO);
	s = hstats();
	cr_assert_geq(s.io_errors, 2, "io_errors %" PRIu64 " after short writes", s.io_errors);
	umlmem_host_destroy(P.h);
	P.h = NULL;
}

/* A swap file whose writes fail with ENOSPC (a full disk) is a full swap:
   -ENOSPC, as when the swap_bytes cap is reached, and nothing lost. */
Test(pager, write_enospc_injected)
{
	write_failure_case(IO_FAULT_ENOSPC, -ENOSPC);
	umlmem_host_destroy(P.h);
	P.h = NULL;
}

/* ---- failing reads -------------------------------------------------------- */

/* A failed swap read is -EIO; the slot stays, so the same read succeeds once
   the fault is gone; an access that failed changed nothing. */
static void read_failure_case(enum io_fault kind)
{
	const uint64_t budget = 16;
	struct umlmem_stats s0, s1, s;
	umlmem_guest *g;
	uint64_t ev;
	int rc;

	mk_host(budget, 0, 0, 0);
	g = tu_guest(P.h, 64 * PG);
	for (uint64_t i = 0; i < 32; i++)
		write_page(g, i, 0);
	cr_assert_eq(umlmem_reclaim(P.h, budget, &ev), 0);
	s0 = hstats();
	cr_assert_eq(s0.swapped_pages, 32);

	/* failing until cleared */
	io_inject(host_engine(P.h), IO_READ, 1, kind, 1000000);
	for (int attempt = 0; attempt < 2; attempt++) {
		rc = umlmem_read(g, 3 * PG, P.buf, PG);
		cr_assert_eq(rc, -EIO, "read with a failing swap read: %s", umlmem_strerror(rc));
	}
	/* a partial write needs the old content: it fails too, and writes nothing */
	rc = umlmem_write(g, 5 * PG + 10, "abc", 3);
	cr_assert_eq(rc, -EIO, "partial write with a failing swap read: %s", umlmem_strerror(rc));
	{
		void *p;

		rc = umlmem_pin(g, 6 * PG, UMLMEM_READ, &p);
		cr_assert_eq(rc, -EIO, "pin with a failing swap read: %s", umlmem_strerror(rc));
	}
	s1 = hstats();
	cr_assert_geq(s1.io_errors - s0.io_errors, 4, "io_errors rose by %" PRIu64 " for 4 failed reads",
		      s1.io_errors - s0.io_errors);
	cr_assert_eq(s1.checksum_errors, 0, "an I/O error was counted as a checksum error");
	cr_assert_eq(s1.swapped_pages, 32, "a failed read lost the page's swap copy");
	cr_assert_eq(s1.swap_ins, s0.swap_ins);
	tu_check(P.h);

	clear_faults();
	expect_page(g, 3, 0);
	expect_page(g, 5, 0);
	expect_page(g, 6, 0);

	/* one failing read only (count 1): the retry succeeds by itself */
	io_inject(host_engine(P.h), IO_READ, 1, kind, 1);
	rc = umlmem_read(g, 7 * PG, P.buf, PG);
	cr_assert_eq(rc, -EIO);
	expect_page(g, 7, 0);

	/* a read over a resident page and a failing one: the first page's bytes
	   are delivered, the call fails */
	io_inject(host_engine(P.h), IO_READ, 1, kind, 1);
	memset(P.buf, 0x5a, 2 * PG);
	rc = umlmem_read(g, 7 * PG, P.buf, 2 * PG);
	cr_assert_eq(rc, -EIO, "two-page read with the second page failing: %s", umlmem_strerror(rc));
	pattern(P.buf2, 7, 0);
	cr_assert(memcmp(P.buf, P.buf2, PG) == 0, "the first page of a failed read was not delivered");
	clear_faults();

	for (uint64_t i = 0; i < 32; i++)
		expect_page(g, i, 0);
	s = hstats();
	cr_assert_eq(s.checksum_errors, 0);
	tu_check(P.h);
	umlmem_host_destroy(P.h);
	P.h = NULL;
}

Test(pager, read_eio)
{
	read_failure_case(IO_FAULT_EIO);
}

Test(pager, read_short)
{
	read_failure_case(IO_FAULT_SHORT);
}

/* ---- corrupted swap ---------------------------------------------------------- */

/* Finds the one 4 KiB block of the swap files that holds @page; returns its
   file and offset. Reads through the library's own descriptors, with an
   aligned buffer and offset so that O_DIRECT files work too. */
static void find_in_swap(const void *page, unsigned *file, uint64_t *off)
{
	struct swap *sw = host_swap(P.h);
	uint8_t *blk = P.buf2;
	int found = 0;

	for (unsigned f = 0; f < swap_nfiles(sw); f++) {
		int fd = swap_fd(sw, f);
		struct stat st;

		cr_assert_eq(fstat(fd, &st), 0);
		for (uint64_t o = 0; o + PG <= (uint64_t)st.st_size; o += PG) {
			ssize_t n = pread(fd, blk, PG, (off_t)o);

			cr_assert_eq(n, (ssize_t)PG, "pread of swap file %u at %" PRIu64 ": %zd", f, o, n);
			if (memcmp(blk, page, PG) == 0) {
				*file = f;
				*off = o;
				found++;
			}
		}
	}
	cr_assert_eq(found, 1, "the page was found %d times in the swap files", found);
}

static void overwrite_swap(unsigned file, uint64_t off, const void *page)
{
	ssize_t n;

	memcpy(P.buf2, page, PG);   /* aligned copy for O_DIRECT */
	n = pwrite(swap_fd(host_swap(P.h), file), P.buf2, PG, (off_t)off);
	cr_assert_eq(n, (ssize_t)PG, "pwrite into swap file %u at %" PRIu64 ": %zd", file, off, n);
}

/* A slot changed behind the library's back reads as -EIO and a checksum
   error, never as the changed bytes; the slot is kept, so once its content
   is restored the page reads correctly. */
Test(pager, corrupt_slot_detected)
{
	const uint64_t budget = 16, idx = 7;
	uint8_t *orig = aligned_alloc(PG, PG), *junk = aligned_alloc(PG, PG);
	struct umlmem_stats s0, s1;
	umlmem_guest *g;
	unsigned file = 0;
	uint64_t off = 0, ev;
	void *p;
	int rc;

	cr_assert(orig && junk);
	mk_host(budget, 0, 0, 0);
	g = tu_guest(P.h, 64 * PG);
	/* one known page, alone in swap */
	write_page(g, idx, 0);
	cr_assert_eq(umlmem_reclaim(P.h, budget, &ev), 0);
	cr_assert_eq(ev, 1);
	pattern(orig, idx, 0);
	find_in_swap(orig, &file, &off);

	/* other pages come and go meanwhile */
	for (uint64_t i = 20; i < 60; i++)
		write_page(g, i, 0);

	/* flip one bit: the smallest corruption must be caught too */
	memcpy(junk, orig, PG);
	junk[1234] ^= 0x10;
	overwrite_swap(file, off, junk);
	s0 = hstats();
	memset(P.buf, 0x5a, PG);
	rc = umlmem_read(g, idx * PG, P.buf, PG);
	s1 = hstats();
	cr_assert_eq(rc, -EIO, "read of a corrupted slot: %s", umlmem_strerror(rc));
	cr_assert_eq(s1.checksum_errors - s0.checksum_errors, 1);
	cr_assert(memcmp(P.buf, junk, PG) != 0, "the corrupted bytes were delivered");

	/* garbage over the whole slot */
	tu_fill(junk, PG, 0xbadc0ffee);
	overwrite_swap(file, off, junk);
	memset(P.buf, 0x5a, 2 * PG);
	rc = umlmem_read(g, idx * PG + 100, P.buf, 50);
	cr_assert_eq(rc, -EIO, "read of a garbage slot: %s", umlmem_strerror(rc));
	cr_assert(memcmp(P.buf, junk + 100, 50) != 0, "garbage bytes were delivered");
	rc = umlmem_pin(g, idx * PG, UMLMEM_READ, &p);
	cr_assert_eq(rc, -EIO, "pin of a garbage slot: %s", umlmem_strerror(rc));
	rc = umlmem_write(g, idx * PG + 5, "q", 1);
	cr_assert_eq(rc, -EIO, "partial write over a garbage slot: %s", umlmem_strerror(rc));
	s1 = hstats();
	cr_assert_geq(s1.checksum_errors - s0.checksum_errors, 4);
	cr_assert_eq(gstats(g).swapped_pages + gstats(g).resident_pages, 41,
		     "the corrupted page is no longer counted");
	tu_check(P.h);

	/* the slot was kept: restore it and the page reads right */
	overwrite_swap(file, off, orig);
	expect_page(g, idx, 0);
	for (uint64_t i = 20; i < 60; i++)
		expect_page(g, i, 0);
	tu_check(P.h);
	free(orig);
	free(junk);
	umlmem_host_destroy(P.h);
	P.h = NULL;
}

/* ---- the swap files ---------------------------------------------------------- */

/* The swap files are unlinked from the start (the directory stays empty),
   private (0600) and live in swap_dir. */
Test(pager, swap_files_private)
{
	const uint64_t budget = 16;
	struct swap *sw;
	umlmem_guest *g;
	struct dirent *de;
	DIR *d;
	int entries = 0;

	mk_host(budget, 0, 3, 0);
	g = tu_guest(P.h, 512 * PG);
	for (uint64_t i = 0; i < 400; i++)
		write_page(g, i, 0);
	cr_assert_gt(hstats().swapped_pages, 3 * SWAP_CLUSTER_PAGES, "not enough in swap");

	d = opendir(P.dir);
	cr_assert_not_null(d);
	while ((de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			entries++;
	closedir(d);
	cr_assert_eq(entries, 0, "%d names in the swap directory", entries);

	sw = host_swap(P.h);
	cr_assert_eq(swap_nfiles(sw), 3);
	for (unsigned f = 0; f < 3; f++) {
		int fd = swap_fd(sw, f);
		char link[64], target[PATH_MAX];
		struct stat st;
		ssize_t n;

		cr_assert_geq(fd, 0);
		cr_assert_eq(fstat(fd, &st), 0);
		cr_assert(S_ISREG(st.st_mode), "swap file %u is not a regular file", f);
		cr_assert_eq(st.st_mode & 07777, 0600, "swap file %u has mode %o", f,
			     (unsigned)(st.st_mode & 07777));
		cr_assert_eq(st.st_nlink, 0, "swap file %u has %lu links", f,
			     (unsigned long)st.st_nlink);
		cr_assert_gt(st.st_blocks, 0, "swap file %u holds nothing", f);
		snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
		n = readlink(link, target, sizeof(target) - 1);
		cr_assert_gt(n, 0);
		target[n] = 0;
		cr_assert(strncmp(target, P.dir, strlen(P.dir)) == 0 && target[strlen(P.dir)] == '/',
			  "swap file %u is %s, not in %s", f, target, P.dir);
		for (unsigned o = 0; o < f; o++)
			cr_assert_neq(swap_fd(sw, o), fd);
	}
	for (uint64_t i = 0; i < 400; i += 3)
		expect_page(g, i, 0);
	umlmem_host_destroy(P.h);
	P.h = NULL;
}

/* ---- a full swap ---------------------------------------------------------- */

/* With swap capped, exactly budget + cap pages fit; the next first touch is
   -ENOSPC; every page stays readable; discarding makes room again. */
Test(pager, swap_full)
{
	const uint64_t budget = 16, cap = 64;
	struct umlmem_stats s;
	umlmem_guest *g;
	uint64_t k, ev;
	int rc;

	mk_host(budget, 0, 0, cap);
	g = tu_guest(P.h, 256 * PG);
	for (k = 0; k < 200; k++) {
		pattern(P.buf, k, 0);
		rc = umlmem_write(g, k * PG, P.buf, PG);
		if (rc)
			break;
	}
	cr_assert_eq(rc, -ENOSPC, "writing page %" PRIu64 " with swap full: %s", k,
		     umlmem_strerror(rc));
	cr_assert_eq(k, budget + cap, "the swap filled up after %" PRIu64 " pages, expected %" PRIu64
		     " (budget %" PRIu64 " + cap %" PRIu64 ")", k, budget + cap, budget, cap);
	expect_zero_page(g, k);
	rc = umlmem_reclaim(P.h, budget, &ev);
	cr_assert_eq(rc, -ENOSPC, "reclaim of dirty pages with swap full: %s", umlmem_strerror(rc));
	cr_assert_eq(ev, 0);

	/* Every page reads, those in swap included, several times over. */
	for (int round = 0; round < 2; round++)
		for (uint64_t i = 0; i < k; i++)
			expect_page(g, i, 0);
	s = hstats();
	cr_assert_eq(s.io_errors, 0, "a full swap was counted as %" PRIu64 " I/O errors", s.io_errors);
	cr_assert_leq(s.frames_used, budget);
	expect_counts_add_up(&s);
	tu_check(P.h);

	/* room for ten more after discarding ten */
	cr_assert_eq(umlmem_discard(g, 0, 10 * PG), 0);
	for (uint64_t i = k; i < k + 10; i++)
		write_page(g, i, 0);
	pattern(P.buf, k + 10, 0);
	cr_assert_eq(umlmem_write(g, (k + 10) * PG, P.buf, PG), -ENOSPC);
	for (uint64_t i = 0; i < 10; i++)
		expect_zero_page(g, i);
	for (uint64_t i = 10; i < k + 10; i++)
		expect_page(g, i, 0);
	tu_check(P.h);
	umlmem_host_destroy(P.h);
	P.h = NULL;
}

/* ---- refaults ---------------------------------------------------------------- */

/* The frame of page @idx of @g, which must be resident. */
static uint64_t frame_of(umlmem_guest *g, uint64_t idx)
{
	pte_t *e = pte_find(g, idx);

	cr_assert(e && PTE_TYPE(*e) == PTE_FRAME, "page %" PRIu64 " is not resident", idx);
	return PTE_VAL(*e);
}

static bool is_active(umlmem_host *h, umlmem_guest *g, uint64_t idx)
{
	bool a;

	pthread_mutex_lock(&h->lock);
	a = h->frames[frame_of(g, idx)].flags & F_ACTIVE;
	pthread_mutex_unlock(&h->lock);
	return a;
}

static bool is_swapped(umlmem_guest *g, uint64_t idx)
{
	pte_t *e = pte_find(g, idx);

	return e && PTE_TYPE(*e) == PTE_STORED;
}

/* A page written once is evicted from the small FIFO, unused. Faulted
   back while it would still have been resident on twice the budget (fewer
   evictions since its own than there are frames), it comes back into the
   main set: it has been used twice. Faulted back after more evictions than
   that, it is a page seen for the first time again, in the small FIFO.
   Either way its content is intact. */
Test(pager, refault_activates)
{
	const uint64_t budget = 64, npages = 4 * budget;
	uint64_t recent = UINT64_MAX, old = UINT64_MAX, ev0, ev;
	umlmem_guest *g;

	mk_host(budget, 1, 0, 0);
	g = tu_guest(P.h, npages * PG);
	for (uint64_t i = 0; i < npages; i++)
		write_page(g, i, 1);
	cr_assert_eq(P.h->nactive, 0, "pages written once were promoted");
	ev0 = P.h->evictions;
	cr_assert_geq(ev0, npages - budget);
	/* pages are evicted in the order they came (all unreferenced): the
	   oldest swapped page left about ev0 evictions ago, the newest a
	   few */
	for (uint64_t i = 0; i < npages && old == UINT64_MAX; i++)
		if (is_swapped(g, i))
			old = i;
	for (uint64_t i = npages; i-- > 0 && recent == UINT64_MAX;)
		if (is_swapped(g, i))
			recent = i;
	cr_assert(old != UINT64_MAX && recent != UINT64_MAX && old < recent);

	expect_page(g, recent, 1);
	cr_assert(is_active(P.h, g, recent), "page %" PRIu64 ", evicted a few evictions ago, "
		  "came back inactive", recent);
	cr_assert_eq(P.h->nactive, 1);
	ev = P.h->evictions;
	expect_page(g, old, 1);
	cr_assert_gt(P.h->evictions - ev + ev0, budget);
	cr_assert(!is_active(P.h, g, old), "page %" PRIu64 ", evicted %" PRIu64 " evictions ago "
		  "on %" PRIu64 " frames, came back active", old, ev0, budget);
	for (uint64_t i = 0; i < npages; i++)
		expect_page(g, i, 1);
	tu_check(P.h);
	umlmem_host_destroy(P.h);
	P.h = NULL;
}

/* Misses of exact LRU with @budget frames on the references @ref[0 .. @n),
   first references included: the test's own model, independent of the
   pager. */
static uint64_t lru_misses(const uint64_t *ref, uint64_t n, uint64_t budget)
{
	uint64_t *stack = calloc(budget, sizeof(*stack)), used = 0, misses = 0;

	cr_assert(stack);
	for (uint64_t i = 0; i < n; i++) {
		uint64_t j = 0;

		while (j < used && stack[j] != ref[i])
			j++;
		if (j == used) {
			misses++;
			if (used < budget)
				used++;
			j = used - 1;
		}
		memmove(stack + 1, stack, j * sizeof(*stack));
		stack[0] = ref[i];
	}
	free(stack);
	return misses;
}

/* A loop over a few more pages than the budget, read again and again:
   exact LRU misses on every reference (each page has left just before it
   is wanted again). The pager's main set keeps most of the loop, so it
   faults on less than half as many references; every byte read is the
   one the model says. */
Test(pager, loop_beats_lru)
{
	const uint64_t budget = 64, nloop = 80, passes = 12;
	uint64_t *ref = malloc(passes * nloop * sizeof(*ref)), faults0, lru, faults;
	umlmem_guest *g;
	uint8_t byte, want[PG];

	cr_assert(ref);
	mk_host(budget, 0, 0, 0);
	g = tu_guest(P.h, nloop * PG);
	for (uint64_t i = 0; i < nloop; i++)
		write_page(g, i, 3);
	faults0 = hstats().faults;
	for (uint64_t k = 0; k < passes * nloop; k++) {
		uint64_t i = k % nloop, off = (k * 131) % PG;

		ref[k] = i;
		cr_assert_eq(umlmem_read(g, i * PG + off, &byte, 1), 0);
		pattern(want, i, 3);
		cr_assert_eq(byte, want[off], "page %" PRIu64 " byte %" PRIu64 ": %u, not %u", i,
			     off, byte, want[off]);
	}
	faults = hstats().faults - faults0;
	/* the model starts from the same place: the last budget pages
	   written, most recent last */
	{
		uint64_t *all = malloc((nloop + passes * nloop) * sizeof(*all));

		cr_assert(all);
		for (uint64_t i = 0; i < nloop; i++)
			all[i] = i;
		memcpy(all + nloop, ref, passes * nloop * sizeof(*ref));
		lru = lru_misses(all, nloop + passes * nloop, budget) - nloop;
		free(all);
	}
	cr_log_info("pager/loop_beats_lru: %" PRIu64 " references, %" PRIu64 " faults, exact "
		    "LRU %" PRIu64, passes * nloop, faults, lru);
	cr_assert_eq(lru, passes * nloop, "the LRU model missed %" PRIu64 " of %" PRIu64, lru,
		     passes * nloop);
	cr_assert_lt(2 * faults, lru, "%" PRIu64 " faults against exact LRU's %" PRIu64,
		     faults, lru);
	for (uint64_t i = 0; i < nloop; i++)
		expect_page(g, i, 3);
	tu_check(P.h);
	free(ref);
	umlmem_host_destroy(P.h);
	P.h = NULL;
}

/* The pager's memory follows use: a host whose budget is large and whose
   guests use a little of it has no ghost set (nothing was evicted) and a
   small FIFO ring of about the pages it faulted in, not of its budget. */
Test(pager, memory_follows_use)
{
	const uint64_t budget = 1ull << 16, used = 100;
	umlmem_guest *g;

	mk_host(budget, 0, 0, 0);
	g = tu_guest(P.h, used * PG);
	for (uint64_t i = 0; i < used; i++)
		write_page(g, i, 1);
	pthread_mutex_lock(&P.h->lock);
	cr_assert_null(P.h->ghost, "a ghost set before any eviction");
	cr_assert_geq(P.h->small.tail - P.h->small.head, used);
	cr_assert_leq(P.h->small.cap, 2 * used, "a ring of %" PRIu64 " entries for %" PRIu64
		      " pages", P.h->small.cap, used);
	pthread_mutex_unlock(&P.h->lock);
	for (uint64_t i = 0; i < used; i++)
		expect_page(g, i, 1);
	tu_check(P.h);
	umlmem_host_destroy(P.h);
	P.h = NULL;
}

/* ---- readahead --------------------------------------------------------------- */

static bool is_resident(umlmem_guest *g, uint64_t idx)
{
	pte_t *e = pte_find(g, idx);

	return e && PTE_TYPE(*e) == PTE_FRAME;
}

/* Copies read ahead fill frames that were free. When frames are wanted
   again, the copies no page used go first, before any page in use: a
   reclaim of as many frames as there are such copies frees exactly them,
   every resident page stays, and no page leaves memory. A copy a page then
   uses is that page's frame like any other. Every byte reads back as the
   model says. */
Test(pager, readahead_first_out)
{
	const uint64_t budget = 64, npages = 4 * budget;
	struct umlmem_host_config cfg;
	bool *was = calloc(npages, sizeof(*was));
	uint64_t ncached, got = UINT64_MAX;
	umlmem_guest *g;

	cr_assert(was);
	umlmem_host_config_init(&cfg);
	cfg.resident_bytes = budget * PG;
	cfg.swap_dir = P.dir;
	cr_assert_eq(umlmem_host_create(&cfg, &P.h), 0, "%s", umlmem_errmsg());
	g = tu_guest(P.h, npages * PG);
	for (uint64_t i = 0; i < npages; i++)
		write_page(g, i, 1);
	/* frames to spare, then a run of faults on ascending slots: the
	   second reads ahead into the free frames */
	cr_assert_eq(umlmem_reclaim(P.h, budget / 4, NULL), 0);
	cr_assert(!is_resident(g, 0) && !is_resident(g, 1) && !is_resident(g, 2));
	expect_page(g, 0, 1);
	expect_page(g, 1, 1);
	pthread_mutex_lock(&P.h->lock);
	ncached = P.h->cached;
	for (uint64_t i = 0; i < npages; i++)
		was[i] = is_resident(g, i);
	pthread_mutex_unlock(&P.h->lock);
	cr_assert_gt(ncached, 0, "nothing was read ahead");

	cr_assert_eq(umlmem_reclaim(P.h, ncached, &got), 0, "%s", umlmem_errmsg());
	cr_assert_eq(got, 0, "%" PRIu64 " pages left memory to free %" PRIu64 " frames of "
		     "unused copies", got, ncached);
	pthread_mutex_lock(&P.h->lock);
	cr_assert_eq(P.h->cached, 0, "%" PRIu64 " copies read ahead are still cached",
		     P.h->cached);
	for (uint64_t i = 0; i < npages; i++)
		cr_assert_eq(is_resident(g, i), was[i], "page %" PRIu64 " %s", i,
			     was[i] ? "left memory" : "came in");
	pthread_mutex_unlock(&P.h->lock);
	tu_check(P.h);

	/* read ahead again, and used this time: the copies are pages now */
	expect_page(g, 2, 1);
	expect_page(g, 3, 1);
	pthread_mutex_lock(&P.h->lock);
	for (uint64_t i = 4; i < npages && P.h->cached; i++)
		if (!is_resident(g, i) && tcache_get(P.h, PTE_VAL(*pte_find(g, i)))) {
			pthread_mutex_unlock(&P.h->lock);
			expect_page(g, i, 1);
			pthread_mutex_lock(&P.h->lock);
			cr_assert(!(P.h->frames[frame_of(g, i)].flags & F_RA),
				  "page %" PRIu64 " maps a copy still in the readahead FIFO", i);
		}
	pthread_mutex_unlock(&P.h->lock);
	tu_check(P.h);
	for (uint64_t i = 0; i < npages; i++)
		expect_page(g, i, 1);
	tu_check(P.h);
	free(was);
	umlmem_host_destroy(P.h);
	P.h = NULL;
}

/* ---- native mode ------------------------------------------------------------ */

/* Through a native view, a page touched once (however many stores hit it
   while its entry is present) is never promoted: a sweep of four times the
   budget leaves the active set empty. A hot set touched again between the
   cold pages is promoted, and no cold page is. Every
   byte reads back as the model says. */
Test(pager, native_scan_resistance, .timeout = 120)
{
	const uint64_t budget = 64, nhot = 8, ncold = 4 * budget;
	uint8_t *base, *model;
	umlmem_guest *g;
	unsigned nact;
	void *b = NULL;
	int rc;

	if (tu_valgrind())
		cr_skip_test("userfaultfd does not run under valgrind");
	mk_host(budget, 0, 0, 0);
	g = tu_guest(P.h, (nhot + ncold) * PG);
	rc = umlmem_guest_map(g, &b);
	if (rc == -EPERM || rc == -EOPNOTSUPP)
		cr_skip_test("native mode unavailable: %s", umlmem_errmsg());
	cr_assert_eq(rc, 0, "umlmem_guest_map: %s", umlmem_errmsg());
	base = b;
	model = calloc(nhot + ncold, 1);
	cr_assert_not_null(model);

	/* one sweep, every byte of every page written once */
	for (uint64_t i = nhot; i < nhot + ncold; i++) {
		memset(base + i * PG, (int)(i % 251 + 1), PG);
		model[i] = (uint8_t)(i % 251 + 1);
	}
	pthread_mutex_lock(&P.h->lock);
	cr_assert_eq(P.h->nactive, 0, "%" PRIu64 " pages touched once through the view were "
		     "promoted", P.h->nactive);
	pthread_mutex_unlock(&P.h->lock);

	/* a hot set, read between every two cold pages of a second sweep */
	for (uint64_t i = 0; i < nhot; i++) {
		base[i * PG] = (uint8_t)(i + 1);
		model[i] = (uint8_t)(i + 1);
	}
	for (uint64_t k = 0; k < 2 * ncold; k++) {
		uint64_t c = nhot + k % ncold;
		volatile uint8_t sum = 0;

		cr_assert_eq(base[c * PG + k % PG], model[c], "cold page %" PRIu64, c);
		for (uint64_t i = 0; i < nhot; i++)
			sum += base[i * PG + (k * 64) % PG];
		(void)sum;
	}
	/* CLOCK may have let one go for a turn; the cold pages, each
	   touched again only long after it left, are none of them active */
	nact = 0;
	for (uint64_t i = 0; i < nhot; i++)
		nact += is_active(P.h, g, i);
	cr_assert_geq(nact, nhot / 2, "only %u of %" PRIu64 " hot pages are active", nact, nhot);
	pthread_mutex_lock(&P.h->lock);
	cr_assert_eq(P.h->nactive, nact, "%" PRIu64 " cold pages are active",
		     P.h->nactive - nact);
	pthread_mutex_unlock(&P.h->lock);
	for (uint64_t i = 0; i < nhot + ncold; i++)
		cr_assert_eq(base[i * PG + PG - 1], i < nhot ? 0 : model[i], "page %" PRIu64, i);
	free(model);
	cr_assert_eq(umlmem_guest_unmap(g), 0, "%s", umlmem_errmsg());
	tu_check(P.h);
	umlmem_host_destroy(P.h);
	P.h = NULL;
}
