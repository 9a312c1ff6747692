/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The budget is a limit, not a reservation: a host costs memory for the
 * frames its guests use, not for its budget, and gives back what they free.
 *
 * The figures come from the kernel, not from the library: the process's
 * VmRSS, VmPin and VmLck (/proc/self/status) and the frame store's blocks
 * (st_blocks of the memfd, which umlmem_host_info's store_bytes reports and
 * which these tests also read through the descriptor). Every byte a guest
 * wrote is checked against a model (a plain copy of each guest's bytes) after
 * frames were given back and reused, and host_check runs after every step.
 * RSS figures mean nothing under valgrind, which keeps its own shadow
 * memory: there only the store's blocks and the pinned bytes are checked.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"
#include "internal.h"

#define PG UMLMEM_PAGE_SIZE

/* RSS follows the library's memory only in a plain build: valgrind keeps
   its own, and the sanitizers add shadow memory and keep freed blocks in
   quarantine. The byte checks run everywhere. */
static bool rss_checked(void)
{
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
	return false;
#else
	return !tu_valgrind();
#endif
}

static struct {
	char dir[64];
	umlmem_host *h;
	uint8_t *model;         /* the guest's bytes */
	uint8_t *buf;
} M;

static void mem_setup(void)
{
	memset(&M, 0, sizeof(M));
	tu_mkswapdir(M.dir);
}

static void mem_teardown(void)
{
	umlmem_host_destroy(M.h);
	M.h = NULL;
	free(M.model);
	free(M.buf);
	tu_rmswapdir(M.dir);
}

TestSuite(memory, .init = mem_setup, .fini = mem_teardown);

static umlmem_host *mk_host(uint64_t budget, unsigned flags)
{
	struct umlmem_host_config cfg;
	umlmem_host *h = NULL;
	int rc;

	umlmem_host_config_init(&cfg);
	cfg.resident_bytes = budget;
	cfg.swap_dir = M.dir;
	cfg.flags = flags;
	cfg.dedup_sleep_us = 1000;
	rc = umlmem_host_create(&cfg, &h);
	cr_assert_eq(rc, 0, "umlmem_host_create(budget %" PRIu64 "): %s: %s", budget,
		     umlmem_strerror(rc), umlmem_errmsg());
	return h;
}

static struct umlmem_host_info info(umlmem_host *h)
{
	struct umlmem_host_info i;

	cr_assert_eq(umlmem_host_info(h, &i, sizeof(i)), 0);
	return i;
}

/* The frame store's memory, from the kernel. */
static uint64_t store_blocks(umlmem_host *h)
{
	struct stat st;

	cr_assert_eq(fstat(h->store_fd, &st), 0);
	return (uint64_t)st.st_blocks * 512;
}

/* Writes pages [first, first + n) of @g with content of @version, in the
   guest and in the model. */
static void write_pages(umlmem_guest *g, uint64_t first, uint64_t n, uint64_t version)
{
	for (uint64_t p = first; p < first + n; p++) {
		uint8_t *m = M.model + p * PG;

		tu_fill(m, PG, p * 1000003 + version);
		cr_assert_eq(umlmem_write(g, p * PG, m, PG), 0, "write page %" PRIu64 ": %s",
			     p, umlmem_errmsg());
	}
}

static void discard_pages(umlmem_guest *g, uint64_t first, uint64_t n)
{
	cr_assert_eq(umlmem_discard(g, first * PG, n * PG), 0, "%s", umlmem_errmsg());
	memset(M.model + first * PG, 0, n * PG);
}

/* Every byte of @g equals the model's. */
static void check_bytes(umlmem_guest *g, uint64_t pages)
{
	for (uint64_t p = 0; p < pages; p += 64) {
		uint64_t n = pages - p < 64 ? pages - p : 64;

		cr_assert_eq(umlmem_read(g, p * PG, M.buf, n * PG), 0, "%s", umlmem_errmsg());
		for (uint64_t k = 0; k < n; k++)
			cr_assert_eq(memcmp(M.buf + k * PG, M.model + (p + k) * PG, PG), 0,
				     "page %" PRIu64 " differs from the model", p + k);
	}
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/*
 * An 8 GiB budget costs no memory and pins nothing: not at creation, not
 * once the engine's rings exist, and a written page costs its frame and its
 * tables' entries, not the budget's.
 */
Test(memory, large_budget_costs_nothing)
{
	const uint64_t budget = 8 * TU_GiB;
	uint64_t rss0, rss1, rss2, pin0, lck0;
	struct umlmem_host_info i;
	umlmem_guest *g;

	if ((uint64_t)sysconf(_SC_PHYS_PAGES) * (uint64_t)sysconf(_SC_PAGESIZE) < budget)
		cr_skip_test("an 8 GiB budget must fit in this machine's RAM");
	M.buf = aligned_alloc(PG, 64 * PG);
	memset(M.buf, 0x5a, 64 * PG);
	rss0 = tu_vmrss();
	pin0 = tu_status_bytes("VmPin");
	lck0 = tu_status_bytes("VmLck");
	M.h = mk_host(budget, 0);
	rss1 = tu_vmrss();
	i = info(M.h);
	cr_log_info("8 GiB host: RSS +%" PRIu64 " KiB, meta_bytes %" PRIu64 " KiB, store %" PRIu64
		    " KiB, VmPin %" PRIu64 " KiB, engine %s", (rss1 - rss0) >> 10,
		    i.meta_bytes >> 10, i.store_bytes >> 10, tu_status_bytes("VmPin") >> 10,
		    umlmem_host_io_engine(M.h, NULL) == UMLMEM_IO_URING ? "io_uring" : "other");
	cr_assert_eq(tu_status_bytes("VmPin"), pin0, "the host pinned memory");
	cr_assert_eq(tu_status_bytes("VmLck"), lck0, "the host locked memory");
	cr_assert_eq(i.store_bytes, 0);
	cr_assert_eq(store_blocks(M.h), 0);
	cr_assert_eq(i.frames_made, 0);
	cr_assert_eq(i.frames_free, budget / PG);
	cr_assert_lt(i.meta_bytes, 2 * TU_MiB, "%" PRIu64, i.meta_bytes);
	if (rss_checked())
		cr_assert_lt(rss1 - rss0, 2 * TU_MiB, "creating the host took %" PRIu64 " KiB",
			     (rss1 - rss0) >> 10);

	/* a guest as large as the budget, 64 pages written, read back, the
	   merge scanner run once: memory for 64 frames, not for the budget */
	g = tu_guest(M.h, budget);
	for (unsigned p = 0; p < 64; p++)
		cr_assert_eq(umlmem_write(g, (uint64_t)p * 1021 * PG, M.buf, PG), 0);
	cr_assert_eq(umlmem_dedup_scan(M.h, 1000, NULL), 0);
	for (unsigned p = 0; p < 64; p++) {
		uint8_t page[PG];

		cr_assert_eq(umlmem_read(g, (uint64_t)p * 1021 * PG, page, PG), 0);
		cr_assert_eq(memcmp(page, M.buf, PG), 0);
	}
	rss2 = tu_vmrss();
	i = info(M.h);
	cr_log_info("64 pages written: RSS +%" PRIu64 " KiB, meta_bytes %" PRIu64 " KiB, store %"
		    PRIu64 " KiB", (rss2 - rss0) >> 10, i.meta_bytes >> 10, i.store_bytes >> 10);
	cr_assert_leq(i.store_bytes, 64 * PG);
	cr_assert_eq(tu_status_bytes("VmPin"), pin0);
	cr_assert_lt(i.meta_bytes, 2 * TU_MiB, "%" PRIu64, i.meta_bytes);
	if (rss_checked())
		cr_assert_lt(rss2 - rss0, 4 * TU_MiB, "%" PRIu64 " KiB", (rss2 - rss0) >> 10);
	tu_check(M.h);
}

/*
 * The store follows the frames in use up and down: blocks come with the
 * first write of each frame and go when a discard or destroy frees them,
 * by the end of that call, down to the few warm frames kept for reuse.
 * Frames given back are reused before the store grows again, and every
 * byte survives.
 */
Test(memory, store_follows_use)
{
	const uint64_t budget = 64 * TU_MiB, pages = 8192;   /* a 32 MiB guest */
	uint64_t keep, rss0 = 0, rss;
	struct umlmem_host_info i;
	umlmem_guest *g;

	M.model = calloc(pages, PG);
	M.buf = aligned_alloc(PG, 64 * PG);
	cr_assert(M.model && M.buf);
	M.h = mk_host(budget, 0);
	keep = M.h->trim_hi * PG;
	g = tu_guest(M.h, pages * PG);
	/* the model's memory counts from the start */
	memset(M.model, 0, pages * PG);
	if (rss_checked())
		rss0 = tu_vmrss();

	write_pages(g, 0, 6144, 1);                             /* 24 MiB */
	i = info(M.h);
	cr_assert_eq(i.store_bytes, 6144 * PG);
	cr_assert_eq(i.frames_made, 6144);
	cr_assert_eq(i.store_bytes, store_blocks(M.h));
	if (rss_checked()) {
		rss = tu_vmrss();
		cr_log_info("24 MiB written: RSS +%" PRIu64 " KiB", (rss - rss0) >> 10);
		cr_assert_geq(rss - rss0 + TU_MiB, 24 * TU_MiB);
		cr_assert_lt(rss - rss0, 24 * TU_MiB + 24 * TU_MiB / 100 + 2 * TU_MiB);
	}
	tu_check(M.h);

	/* discard 20 MiB of it: given back by the end of the call */
	discard_pages(g, 512, 5120);
	i = info(M.h);
	cr_log_info("20 MiB discarded: store %" PRIu64 " KiB, %" PRIu64 " frames returned, %"
		    PRIu64 " warm", i.store_bytes >> 10, i.frames_returned, i.frames_warm);
	cr_assert_leq(i.store_bytes, 1024 * PG + keep);
	cr_assert_geq(i.frames_returned, 5120 - M.h->trim_hi);
	cr_assert_leq(i.frames_warm, M.h->trim_hi);
	cr_assert_eq(i.frames_free + 1024, budget / PG);
	if (rss_checked()) {
		rss = tu_vmrss();
		cr_log_info("after the discard: RSS +%" PRIu64 " KiB", (rss - rss0) >> 10);
		cr_assert_lt(rss - rss0, 4 * TU_MiB + 1024 * PG + keep);
	}
	tu_check(M.h);
	check_bytes(g, pages);

	/* written again: the frames given back come first, the store's
	   extent does not move */
	write_pages(g, 4096, 4096, 2);
	i = info(M.h);
	cr_assert_eq(i.frames_made, 6144, "%" PRIu64, i.frames_made);
	cr_assert_eq(i.store_bytes, (4096 + 512) * PG, "%" PRIu64, i.store_bytes >> 12);
	tu_check(M.h);
	check_bytes(g, pages);

	umlmem_guest_destroy(g);
	i = info(M.h);
	cr_assert_leq(i.store_bytes, keep);
	cr_assert_eq(i.store_bytes, store_blocks(M.h));
	cr_assert_eq(i.frames_free, budget / PG);
	tu_check(M.h);
}

/*
 * Pinned memory follows the frames too. io_uring registers the store by
 * chunks of 2 MiB once every frame of one holds memory, and unregisters a
 * chunk before any of its frames is given back: the pinned bytes never
 * exceed the store's, fall when frames are given back, and reach 0 once
 * the guest is gone. Meanwhile every page goes out to swap and back
 * through registered chunks, chunks given back and registered again, and
 * every byte is checked against the model. (With another engine, or a
 * kernel without sparse buffer tables, nothing is pinned at all.)
 */
Test(memory, pins_follow_use)
{
	const uint64_t budget = 16 * TU_MiB, pages = 16384;    /* a 64 MiB guest */
	uint64_t pin, most = 0;
	struct umlmem_host_info i;
	const char *why = NULL;
	umlmem_guest *g;
	bool chunked;

	M.model = calloc(pages, PG);
	M.buf = aligned_alloc(PG, 64 * PG);
	cr_assert(M.model && M.buf);
	M.h = mk_host(budget, 0);
	chunked = umlmem_host_io_engine(M.h, &why) == UMLMEM_IO_URING && !why[0];
	cr_assert_eq(tu_status_bytes("VmPin"), 0);
	g = tu_guest(M.h, pages * PG);
	for (unsigned round = 0; round < 3; round++) {
		/* the whole guest written (4x the budget: paged out as it
		   goes, the last quarter resident) */
		write_pages(g, 0, pages, 10 + round);
		pin = tu_status_bytes("VmPin");
		i = info(M.h);
		most = pin > most ? pin : most;
		cr_log_info("round %u written: VmPin %" PRIu64 " KiB, store %" PRIu64 " KiB", round,
			    pin >> 10, i.store_bytes >> 10);
		cr_assert_leq(pin, i.store_bytes, "pinned %" PRIu64 " KiB, store %" PRIu64 " KiB",
			      pin >> 10, i.store_bytes >> 10);
		/* the last three quarters discarded: their frames given
		   back, their chunks out of the tables first */
		discard_pages(g, pages / 4, pages - pages / 4);
		pin = tu_status_bytes("VmPin");
		i = info(M.h);
		cr_log_info("round %u discarded: VmPin %" PRIu64 " KiB, store %" PRIu64 " KiB",
			    round, pin >> 10, i.store_bytes >> 10);
		cr_assert_leq(pin, i.store_bytes);
		cr_assert_leq(i.store_bytes, (budget / PG - i.frames_free + M.h->trim_hi) * PG);
		tu_check(M.h);
		/* the first quarter read back from swap into frames given
		   back before, their chunks registered again as they fill */
		check_bytes(g, pages);
		pin = tu_status_bytes("VmPin");
		most = pin > most ? pin : most;
		cr_assert_leq(pin, info(M.h).store_bytes);
	}
	if (chunked)
		cr_assert_geq(most, budget / 2, "io_uring registered at most %" PRIu64 " KiB",
			      most >> 10);
	umlmem_guest_destroy(g);
	cr_assert_leq(tu_status_bytes("VmPin"), info(M.h).store_bytes);
	tu_check(M.h);
}

/*
 * Frames freed by the background threads (here the merge thread turning
 * written-then-cleared pages into zero pages) are given back by those
 * threads, within a bounded delay, with no call from the user.
 */
Test(memory, background_gives_back)
{
	const uint64_t pages = 4096;
	struct umlmem_host_info i;
	umlmem_guest *g;
	double t0;

	M.model = calloc(pages, PG);
	M.buf = aligned_alloc(PG, 64 * PG);
	cr_assert(M.model && M.buf);
	M.h = mk_host(64 * TU_MiB, UMLMEM_BACKGROUND);
	g = tu_guest(M.h, pages * PG);
	write_pages(g, 0, pages, 3);
	/* zeros written over 3/4 of it: the frames stay until merged */
	memset(M.model + 1024 * PG, 0, (pages - 1024) * PG);
	for (uint64_t p = 1024; p < pages; p += 64)
		cr_assert_eq(umlmem_write(g, p * PG, M.model + p * PG, 64 * PG), 0);
	t0 = now_s();
	do {
		usleep(10000);
		i = info(M.h);
	} while (i.store_bytes > 1024 * PG + M.h->trim_hi * PG && now_s() - t0 < 20);
	cr_log_info("merged zero pages given back after %.2f s: store %" PRIu64 " KiB, %" PRIu64
		    " returned", now_s() - t0, i.store_bytes >> 10, i.frames_returned);
	cr_assert_leq(i.store_bytes, 1024 * PG + M.h->trim_hi * PG,
		      "still %" PRIu64 " KiB after 20 s", i.store_bytes >> 10);
	cr_assert_gt(i.frames_returned, 0);
	check_bytes(g, pages);
	tu_check(M.h);
}

/*
 * A workload in steady state at its budget does not churn: the free frames
 * the reclaim thread keeps are the next faults' frames, and none is given
 * back. Reads and writes at random over four times the budget, checked
 * against the model.
 */
Test(memory, paging_at_budget_gives_nothing_back)
{
	const uint64_t budget = 4 * TU_MiB, pages = 4096;
	uint64_t seed = 17, ops = tu_scaled(20000);
	struct umlmem_host_info i;
	umlmem_guest *g;

	M.model = calloc(pages, PG);
	M.buf = aligned_alloc(PG, 64 * PG);
	cr_assert(M.model && M.buf);
	M.h = mk_host(budget, UMLMEM_BACKGROUND);
	g = tu_guest(M.h, pages * PG);
	write_pages(g, 0, pages, 4);
	for (uint64_t k = 0; k < ops; k++) {
		uint64_t r = tu_splitmix64(&seed), p = r % pages;

		if (r >> 62) {
			cr_assert_eq(umlmem_read(g, p * PG, M.buf, PG), 0, "%s", umlmem_errmsg());
			cr_assert_eq(memcmp(M.buf, M.model + p * PG, PG), 0, "page %" PRIu64, p);
		} else {
			write_pages(g, p, 1, 5 + k);
		}
	}
	i = info(M.h);
	cr_log_info("%" PRIu64 " operations at the budget: %" PRIu64 " frames returned, %" PRIu64
		    " warm, store %" PRIu64 " KiB", ops, i.frames_returned, i.frames_warm,
		    i.store_bytes >> 10);
	cr_assert_eq(i.frames_returned, 0);
	cr_assert_eq(i.frames_made, budget / PG);
	check_bytes(g, pages);
	tu_check(M.h);
}

/*
 * The tables follow use down too: after a peak, once the frames are given
 * back, so are the frame table's entries (by chunks of FRAME_CHUNK frames),
 * and what stays is the free stack and the referenced bits, 4.1 bytes per
 * frame of the peak. Frames taken again from chunks given back have their
 * entries written back and hold every byte.
 */
Test(memory, tables_follow_use_down)
{
	const uint64_t pages = tu_valgrind() ? 8192 : 32768;
	struct umlmem_host_info peak, after;
	uint64_t rss0 = 0, rss1, rss2;
	umlmem_guest *g;

	M.model = calloc(pages, PG);
	M.buf = aligned_alloc(PG, 64 * PG);
	cr_assert(M.model && M.buf);
	memset(M.model, 0, pages * PG);
	M.h = mk_host(2 * pages * PG, 0);
	if (rss_checked())
		rss0 = tu_vmrss();
	g = tu_guest(M.h, pages * PG);
	write_pages(g, 0, pages, 7);
	peak = info(M.h);
	rss1 = tu_vmrss();
	umlmem_guest_destroy(g);
	after = info(M.h);
	rss2 = tu_vmrss();
	cr_log_info("%" PRIu64 " MiB written: meta_bytes %" PRIu64 " KiB, RSS +%" PRIu64 " KiB; "
		    "destroyed: meta_bytes %" PRIu64 " KiB, store %" PRIu64 " KiB, RSS +%" PRIu64
		    " KiB", pages * PG >> 20, peak.meta_bytes >> 10, (rss1 - rss0) >> 10,
		    after.meta_bytes >> 10, after.store_bytes >> 10, (rss2 - rss0) >> 10);
	cr_assert_eq(after.frames_made, pages);
	/* at the peak: the frame table, referenced bits and page tables of
	   the frames in use, 40.1 bytes per 4 KiB frame (0.98%), plus the
	   host and the smallest tables: at most 1% and a fixed 64 KiB */
	cr_assert_leq(peak.meta_bytes, pages * PG / 100 + 64 * 1024,
		      "%" PRIu64 " KiB for %" PRIu64 " frames: %.2f%%", peak.meta_bytes >> 10,
		      pages, 100.0 * (double)peak.meta_bytes / (double)(pages * PG));
	cr_assert_leq(after.store_bytes, M.h->trim_hi * PG);
	/* frame table gone but for the chunks of the warm frames kept */
	cr_assert_leq(after.meta_bytes, sizeof(*M.h) + pages * 5 + 4 * PG +
		      2 * FRAME_CHUNK * sizeof(struct frame), "%" PRIu64 " KiB",
		      after.meta_bytes >> 10);
	cr_assert_lt(after.meta_bytes, peak.meta_bytes / 4);
	if (rss_checked())
		cr_assert_lt(rss2 - rss0, after.store_bytes + after.meta_bytes + 2 * TU_MiB,
			     "%" PRIu64 " KiB", (rss2 - rss0) >> 10);
	cr_assert_gt(M.h->chunks_gone, 0);
	tu_check(M.h);

	/* everything again, on another guest, from the chunks given back */
	memset(M.model, 0, pages * PG);
	g = tu_guest(M.h, pages * PG);
	write_pages(g, 0, pages, 8);
	cr_assert_eq(info(M.h).frames_made, pages);
	tu_check(M.h);
	check_bytes(g, pages);
	discard_pages(g, 0, pages / 2);
	tu_check(M.h);
	check_bytes(g, pages);
	umlmem_guest_destroy(g);
	tu_check(M.h);
}
