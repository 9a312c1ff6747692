/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Readahead: a run of swap-ins on ascending slots reads the next slots into
 * cached frames; random swap-ins read nothing extra; a page read ahead and
 * then discarded leaves nothing behind; a failed read ahead costs nothing
 * but the read.
 */
#include "testutil.h"

#define PAGES 1024u

struct ra {
	char dir[64];
	umlmem_host *h;
	umlmem_guest *g;
};

/* A guest of PAGES pages, all written (page p holds the stream of seed
   p + 1) and then pushed out to swap, oldest first, on a budget of 256. */
static void setup(struct ra *r, unsigned flags)
{
	struct umlmem_host_config cfg;
	uint8_t buf[4096];
	uint64_t ev;

	tu_mkswapdir(r->dir);
	umlmem_host_config_init(&cfg);
	cfg.resident_bytes = 256 * 4096;
	cfg.swap_dir = r->dir;
	cfg.flags = flags;
	cr_assert_eq(umlmem_host_create(&cfg, &r->h), 0, "%s", umlmem_errmsg());
	r->g = tu_guest(r->h, PAGES * 4096);
	for (uint64_t p = 0; p < PAGES; p++) {
		tu_fill(buf, sizeof(buf), p + 1);
		cr_assert_eq(umlmem_write(r->g, p * 4096, buf, sizeof(buf)), 0);
	}
	cr_assert_eq(umlmem_reclaim(r->h, PAGES, &ev), 0);
}

static void teardown(struct ra *r)
{
	tu_check(r->h);
	umlmem_host_destroy(r->h);
	tu_rmswapdir(r->dir);
}

static void read_page(struct ra *r, uint64_t p)
{
	uint8_t buf[4096], want[4096];

	tu_fill(want, sizeof(want), p + 1);
	cr_assert_eq(umlmem_read(r->g, p * 4096, buf, sizeof(buf)), 0, "page %llu: %s",
		     (unsigned long long)p, umlmem_errmsg());
	cr_assert(memcmp(buf, want, sizeof(buf)) == 0, "page %llu differs", (unsigned long long)p);
}

static struct umlmem_host_info info(struct ra *r)
{
	struct umlmem_host_info i;

	cr_assert_eq(umlmem_host_info(r->h, &i, sizeof(i)), 0);
	return i;
}

Test(readahead, sequential_run_is_read_ahead)
{
	struct ra r;
	struct umlmem_host_info i;
	struct umlmem_stats s;

	setup(&r, 0);
	for (uint64_t p = 0; p < PAGES; p++)
		read_page(&r, p);
	i = info(&r);
	umlmem_guest_stats(r.g, &s);
	cr_log_info("sequential: %llu swap-ins, %llu read ahead, %llu served by readahead",
		    (unsigned long long)s.swap_ins, (unsigned long long)i.readahead_pages,
		    (unsigned long long)i.readahead_hits);
	/* most faults must find their page already read */
	cr_expect_gt(i.readahead_hits, PAGES / 2, "only %llu of %u faults hit readahead",
		     (unsigned long long)i.readahead_hits, PAGES);
	cr_expect_eq(s.swap_ins, PAGES - 0, "every page came back from swap once");
	teardown(&r);
}

Test(readahead, off_means_off)
{
	struct ra r;

	setup(&r, UMLMEM_NO_READAHEAD);
	for (uint64_t p = 0; p < PAGES; p++)
		read_page(&r, p);
	cr_expect_eq(info(&r).readahead_pages, 0);
	teardown(&r);
}

Test(readahead, random_reads_little)
{
	struct ra r;
	struct umlmem_stats s;
	uint64_t st = 7;

	setup(&r, 0);
	for (unsigned k = 0; k < 400; k++)
		read_page(&r, tu_splitmix64(&st) % PAGES);
	umlmem_guest_stats(r.g, &s);
	/* a run needs two faults within RA_GAP slots: rare by chance */
	cr_expect_lt(info(&r).readahead_pages, s.swap_ins / 4, "%llu pages read ahead for %llu "
		     "random swap-ins", (unsigned long long)info(&r).readahead_pages,
		     (unsigned long long)s.swap_ins);
	teardown(&r);
}

Test(readahead, discard_leaves_nothing)
{
	struct ra r;
	struct umlmem_stats s;

	setup(&r, 0);
	for (uint64_t p = 0; p < 64; p++)
		read_page(&r, p);
	cr_assert_gt(info(&r).frames_cached, 0, "the run should have read ahead");
	cr_assert_eq(umlmem_discard(r.g, 0, PAGES * 4096ull), 0);
	umlmem_host_stats(r.h, &s);
	cr_expect_eq(s.frames_used, 0, "%llu frames left after discarding everything",
		     (unsigned long long)s.frames_used);
	cr_expect_eq(info(&r).swap_slots_used, 0);
	cr_expect_eq(info(&r).frames_cached, 0);
	teardown(&r);
}

Test(readahead, failed_readahead_is_harmless)
{
	struct ra r;

	setup(&r, 0);
	read_page(&r, 0);
	read_page(&r, 1);          /* starts a run: the next read reads ahead */
	/* fail the readahead reads (the demand read of the batch is first) */
	io_inject(host_engine(r.h), IO_READ, 2, IO_FAULT_EIO, 4);
	read_page(&r, 2);
	io_inject(host_engine(r.h), IO_READ, 1, IO_FAULT_NONE, 0);
	for (uint64_t p = 3; p < 128; p++)
		read_page(&r, p);
	teardown(&r);
}
