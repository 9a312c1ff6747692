/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The access paths: copy in and out at any offset and length, pins, discard,
 * and the page-state counters after each step. Expected content always comes
 * from a plain byte array kept by the test, never from the library.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#define PG UMLMEM_PAGE_SIZE

static char dir[64];
static umlmem_host *H;

static void setup(void)
{
	tu_mkswapdir(dir);
	H = NULL;
}

static void teardown(void)
{
	umlmem_host_destroy(H);
	H = NULL;
	tu_rmswapdir(dir);
}

TestSuite(access, .init = setup, .fini = teardown);

static uint64_t pages_of(uint64_t bytes)
{
	return (bytes + PG - 1) / PG;
}

/* The page-state identity for each guest and the host, the host as the sum
   of its guests, and the budget. Without dedup every resident page has its
   own frame, so frames_used must equal resident_pages exactly. */
static void stats_ok_at(int line, umlmem_host *h, umlmem_guest **g, const uint64_t *bytes,
			unsigned n, uint64_t budget_pages)
{
	struct umlmem_stats hs, gs;
	uint64_t ram = 0, res = 0, swp = 0, zero = 0;

	cr_assert_eq(umlmem_host_stats(h, &hs), 0);
	for (unsigned i = 0; i < n; i++) {
		cr_assert_eq(umlmem_guest_stats(g[i], &gs), 0);
		cr_assert_eq(gs.ram_pages, pages_of(bytes[i]),
			     "line %d: guest %u: ram_pages %llu, expected %llu", line, i,
			     (unsigned long long)gs.ram_pages, (unsigned long long)pages_of(bytes[i]));
		cr_assert_eq(gs.resident_pages + gs.swapped_pages + gs.zero_pages, gs.ram_pages,
			     "line %d: guest %u: resident %llu + swapped %llu + zero %llu != ram %llu",
			     line, i, (unsigned long long)gs.resident_pages,
			     (unsigned long long)gs.swapped_pages, (unsigned long long)gs.zero_pages,
			     (unsigned long long)gs.ram_pages);
		ram += gs.ram_pages;
		res += gs.resident_pages;
		swp += gs.swapped_pages;
		zero += gs.zero_pages;
	}
	cr_assert_eq(hs.resident_pages + hs.swapped_pages + hs.zero_pages, hs.ram_pages,
		     "line %d: host: resident %llu + swapped %llu + zero %llu != ram %llu", line,
		     (unsigned long long)hs.resident_pages, (unsigned long long)hs.swapped_pages,
		     (unsigned long long)hs.zero_pages, (unsigned long long)hs.ram_pages);
	cr_assert_eq(hs.ram_pages, ram, "line %d: host ram_pages %llu, guests sum %llu", line,
		     (unsigned long long)hs.ram_pages, (unsigned long long)ram);
	cr_assert_eq(hs.resident_pages, res, "line %d: host resident %llu, guests sum %llu", line,
		     (unsigned long long)hs.resident_pages, (unsigned long long)res);
	cr_assert_eq(hs.swapped_pages, swp, "line %d: host swapped %llu, guests sum %llu", line,
		     (unsigned long long)hs.swapped_pages, (unsigned long long)swp);
	cr_assert_eq(hs.zero_pages, zero, "line %d: host zero %llu, guests sum %llu", line,
		     (unsigned long long)hs.zero_pages, (unsigned long long)zero);
	cr_assert_leq(hs.frames_used, budget_pages, "line %d: frames_used %llu above budget %llu",
		      line, (unsigned long long)hs.frames_used, (unsigned long long)budget_pages);
	cr_assert_eq(hs.frames_used, hs.resident_pages + tu_cached(h),
		     "line %d: frames_used %llu != resident %llu + read ahead %llu with nothing "
		     "shared", line, (unsigned long long)hs.frames_used,
		     (unsigned long long)hs.resident_pages, (unsigned long long)tu_cached(h));
}
#define stats_ok(h, g, b, n, bp) stats_ok_at(__LINE__, h, g, b, n, bp)

static struct umlmem_stats gstats(umlmem_guest *g)
{
	struct umlmem_stats s;

	cr_assert_eq(umlmem_guest_stats(g, &s), 0);
	return s;
}

static struct umlmem_stats hstats(umlmem_host *h)
{
	struct umlmem_stats s;

	cr_assert_eq(umlmem_host_stats(h, &s), 0);
	return s;
}

/* Reads [gpa, gpa + len) and compares it with @expect. */
static void expect_at(int line, umlmem_guest *g, uint64_t gpa, const uint8_t *expect, size_t len)
{
	uint8_t *buf = malloc(len ? len : 1);

	cr_assert_not_null(buf);
	memset(buf, 0x5a, len);
	int rc = umlmem_read(g, gpa, buf, len);
	cr_assert_eq(rc, 0, "line %d: read %llu+%zu: %s: %s", line, (unsigned long long)gpa, len,
		     umlmem_strerror(rc), umlmem_errmsg());
	for (size_t i = 0; i < len; i++)
		cr_assert_eq(buf[i], expect[i], "line %d: byte %llu is %#x, expected %#x", line,
			     (unsigned long long)(gpa + i), buf[i], expect[i]);
	free(buf);
}
#define expect(g, gpa, e, len) expect_at(__LINE__, g, gpa, e, len)

static void expect_zero_at(int line, umlmem_guest *g, uint64_t gpa, size_t len)
{
	uint8_t *z = calloc(1, len ? len : 1);

	cr_assert_not_null(z);
	expect_at(line, g, gpa, z, len);
	free(z);
}
#define expect_zero(g, gpa, len) expect_zero_at(__LINE__, g, gpa, len)

static void wr(umlmem_guest *g, uint64_t gpa, const void *buf, size_t len)
{
	int rc = umlmem_write(g, gpa, buf, len);

	cr_assert_eq(rc, 0, "write %llu+%zu: %s: %s", (unsigned long long)gpa, len,
		     umlmem_strerror(rc), umlmem_errmsg());
}

Test(access, never_written_reads_zero)
{
	const uint64_t bytes = 1 * TU_GiB;
	umlmem_guest *g;
	struct umlmem_stats s;
	uint8_t page[PG];

	H = tu_host(dir, 256 * PG, 0);
	g = tu_guest(H, bytes);
	/* Beginning, an odd middle, the end, and a range across a 2 MiB
	   (page-table leaf) boundary. */
	expect_zero(g, 0, 64 * 1024);
	expect_zero(g, bytes / 2 + 12345, 3 * PG + 7);
	expect_zero(g, bytes - 64 * 1024, 64 * 1024);
	expect_zero(g, 2 * TU_MiB - 100, 200);
	s = gstats(g);
	cr_assert_eq(s.resident_pages, 0, "reads of zeros made %llu pages resident",
		     (unsigned long long)s.resident_pages);
	cr_assert_eq(s.zero_pages, pages_of(bytes));
	cr_assert_eq(s.faults, 0, "reads of zeros faulted %llu times", (unsigned long long)s.faults);
	s = hstats(H);
	cr_assert_eq(s.frames_used, 0, "reads of zeros took %llu frames",
		     (unsigned long long)s.frames_used);
	cr_assert_eq(s.swapped_pages, 0);
	stats_ok(H, &g, &bytes, 1, 256);

	/* A neighbour of a written page (same page-table leaf) is still free. */
	memset(page, 0x11, sizeof(page));
	wr(g, 5 * PG, page, PG);
	expect_zero(g, 6 * PG, PG);
	expect_zero(g, 4 * PG, PG);
	s = hstats(H);
	cr_assert_eq(s.frames_used, 1, "one written page, %llu frames", (unsigned long long)s.frames_used);
	cr_assert_eq(gstats(g).resident_pages, 1);
	stats_ok(H, &g, &bytes, 1, 256);
	tu_check(H);
}

Test(access, odd_offsets_model)
{
	/* Not whole pages, and four times the budget, so the random accesses
	   go through eviction and swap-in all the time. */
	const uint64_t bytes = 256 * 1024 + 1000;
	const uint64_t budget = 16;
	const unsigned ops = (unsigned)tu_scaled(3000);
	uint8_t *model = calloc(1, bytes);
	uint8_t *buf = malloc(4 * PG);
	uint64_t st = 42;
	umlmem_guest *g;

	cr_assert(model && buf);
	H = tu_host(dir, budget * PG, 0);
	g = tu_guest(H, bytes);
	for (unsigned i = 0; i < ops; i++) {
		uint64_t r = tu_splitmix64(&st);
		size_t len = 1 + r % (3 * PG + 17);
		uint64_t gpa = tu_splitmix64(&st) % (bytes - len + 1);

		if (r >> 60 < 10) {
			tu_fill(buf, len, r);
			wr(g, gpa, buf, len);
			memcpy(model + gpa, buf, len);
		} else {
			expect(g, gpa, model + gpa, len);
		}
		stats_ok(H, &g, &bytes, 1, budget);
		if (i % 256 == 0)
			tu_check(H);
	}
	/* Everything, including the partial last page. */
	expect(g, 0, model, bytes);
	cr_assert_gt(gstats(g).swap_outs, 0, "a guest four times the budget never swapped out");
	cr_assert_gt(gstats(g).swap_ins, 0, "a guest four times the budget never swapped in");
	tu_check(H);
	free(model);
	free(buf);
}

Test(access, boundaries_across_pages)
{
	const uint64_t bytes = 64 * PG;
	uint8_t *model = calloc(1, bytes);
	uint8_t buf[3 * PG];
	umlmem_guest *g;

	cr_assert_not_null(model);
	H = tu_host(dir, 8 * PG, 0);
	g = tu_guest(H, bytes);
	/* Each write straddles a page boundary by a different amount, from
	   one byte on either side to more than a whole page. */
	static const struct { uint64_t gpa; size_t len; } w[] = {
		{ PG - 1, 2 }, { 2 * PG - 1, 1 }, { 3 * PG, 1 }, { 4 * PG - 3, PG + 6 },
		{ 7 * PG + 1, 2 * PG - 2 }, { 10 * PG - 2048, 3 * PG }, { 20 * PG + 4095, 1 },
		{ 63 * PG, PG }, { 62 * PG + 1, PG },
	};
	for (size_t i = 0; i < sizeof(w) / sizeof(w[0]); i++) {
		tu_fill(buf, w[i].len, 1000 + i);
		wr(g, w[i].gpa, buf, w[i].len);
		memcpy(model + w[i].gpa, buf, w[i].len);
		expect(g, 0, model, bytes);
	}
	/* Single bytes read one by one, across the same boundaries. */
	for (uint64_t a = PG - 4; a < PG + 4; a++) {
		uint8_t b = 0x77;
		cr_assert_eq(umlmem_read(g, a, &b, 1), 0);
		cr_assert_eq(b, model[a], "byte %llu", (unsigned long long)a);
	}
	stats_ok(H, &g, &bytes, 1, 8);
	tu_check(H);
	free(model);
}

Test(access, partial_last_page)
{
	const uint64_t bytes = 10000;
	umlmem_guest *g;
	uint8_t b = 0xab, two[2] = { 1, 2 }, tail[10];
	void *p;

	H = tu_host(dir, 16 * PG, 0);
	g = tu_guest(H, bytes);
	cr_assert_eq(gstats(g).ram_pages, 3, "10000 bytes are 3 pages, not %llu",
		     (unsigned long long)gstats(g).ram_pages);
	wr(g, 9999, &b, 1);
	b = 0;
	cr_assert_eq(umlmem_read(g, 9999, &b, 1), 0);
	cr_assert_eq(b, 0xab);
	cr_assert_eq(umlmem_write(g, 10000, &b, 1), -EFAULT);
	cr_assert_eq(umlmem_read(g, 10000, &b, 1), -EFAULT);
	cr_assert_eq(umlmem_write(g, 9999, two, 2), -EFAULT);
	cr_assert_eq(umlmem_read(g, 9990, tail, 10), 0);
	cr_assert_eq(tail[9], 0xab);
	cr_assert_eq(umlmem_read(g, 9990, tail, 11), -EFAULT);
	/* The partial page pins; the page after it does not exist. */
	cr_assert_eq(umlmem_pin(g, 8192, UMLMEM_READ, &p), 0, "%s", umlmem_errmsg());
	cr_assert_eq(((uint8_t *)p)[9999 - 8192], 0xab);
	cr_assert_eq(umlmem_unpin(g, 8192), 0);
	cr_assert_eq(umlmem_pin(g, 12288, UMLMEM_READ, &p), -EFAULT);
	/* Through swap and back, the last byte survives. */
	cr_assert_eq(umlmem_reclaim(H, 100, NULL), 0);
	cr_assert_eq(gstats(g).swapped_pages, 1);
	b = 0;
	cr_assert_eq(umlmem_read(g, 9999, &b, 1), 0);
	cr_assert_eq(b, 0xab, "last byte after swap: %#x", b);
	/* Discard of the partial page by its exact length. */
	cr_assert_eq(umlmem_discard(g, 8192, bytes - 8192), 0, "%s", umlmem_errmsg());
	expect_zero(g, 8192, bytes - 8192);
	cr_assert_eq(gstats(g).zero_pages, 3);
	stats_ok(H, &g, &bytes, 1, 16);
	tu_check(H);
}

Test(access, pin_write_then_read)
{
	const uint64_t bytes = 64 * PG;
	umlmem_guest *g;
	uint8_t pat[PG], other[PG];
	void *p;

	H = tu_host(dir, 8 * PG, 0);
	g = tu_guest(H, bytes);
	/* A write pin on a never-written page gives a zeroed page. */
	cr_assert_eq(umlmem_pin(g, 5 * PG, UMLMEM_WRITE, &p), 0, "%s", umlmem_errmsg());
	cr_assert_not_null(p);
	cr_assert_eq((uintptr_t)p % PG, 0, "pinned pointer %p not page-aligned", p);
	memset(other, 0, sizeof(other));
	cr_assert_eq(memcmp(p, other, PG), 0, "fresh pinned page is not zeros");
	tu_fill(pat, PG, 7);
	memcpy(p, pat, PG);
	cr_assert_eq(umlmem_unpin(g, 5 * PG), 0);
	expect(g, 5 * PG, pat, PG);

	/* The write pin marked the page dirty: after eviction the bytes
	   written through the pointer come back from swap. */
	uint64_t ev = 0;
	cr_assert_eq(umlmem_reclaim(H, 1000, &ev), 0);
	cr_assert_eq(ev, 1);
	cr_assert_eq(gstats(g).swapped_pages, 1);
	expect(g, 5 * PG, pat, PG);

	/* Again on a page that is clean in memory with a copy in swap: the
	   pin must drop that copy, or eviction would keep the old bytes. */
	cr_assert_eq(umlmem_pin(g, 5 * PG, UMLMEM_WRITE, &p), 0);
	tu_fill(other, PG, 8);
	memcpy(p, other, PG);
	cr_assert_eq(umlmem_unpin(g, 5 * PG), 0);
	cr_assert_eq(umlmem_reclaim(H, 1000, &ev), 0);
	cr_assert_eq(ev, 1, "the rewritten page was not evicted (%llu)", (unsigned long long)ev);
	expect(g, 5 * PG, other, PG);

	/* A read pin sees what umlmem_write put there. */
	tu_fill(pat, PG, 9);
	wr(g, 6 * PG, pat, PG);
	cr_assert_eq(umlmem_reclaim(H, 1000, NULL), 0);
	cr_assert_eq(umlmem_pin(g, 6 * PG, UMLMEM_READ, &p), 0);
	cr_assert_eq(memcmp(p, pat, PG), 0, "read pin does not show the written bytes");
	cr_assert_eq(umlmem_unpin(g, 6 * PG), 0);
	stats_ok(H, &g, &bytes, 1, 8);
	tu_check(H);
}

Test(access, nested_pins)
{
	const uint64_t bytes = 64 * PG;
	umlmem_guest *g;
	uint8_t pat[PG];
	void *p1, *p2, *p3;
	uint64_t ev;

	H = tu_host(dir, 8 * PG, 0);
	g = tu_guest(H, bytes);
	tu_fill(pat, PG, 3);
	wr(g, 2 * PG, pat, PG);
	cr_assert_eq(umlmem_pin(g, 2 * PG, UMLMEM_READ, &p1), 0);
	cr_assert_eq(umlmem_pin(g, 2 * PG, UMLMEM_WRITE, &p2), 0);
	cr_assert_eq(umlmem_pin(g, 2 * PG, UMLMEM_READ | UMLMEM_WRITE, &p3), 0);
	cr_assert_eq(p1, p2, "nested pins of one page gave %p and %p", p1, p2);
	cr_assert_eq(p2, p3);
	cr_assert_eq(umlmem_unpin(g, 2 * PG), 0);
	cr_assert_eq(umlmem_unpin(g, 2 * PG), 0);
	/* One pin is left: the page stays through a full reclaim. */
	cr_assert_eq(umlmem_reclaim(H, 1000, &ev), 0);
	cr_assert_eq(ev, 0, "reclaim evicted a pinned page (%llu)", (unsigned long long)ev);
	cr_assert_eq(gstats(g).resident_pages, 1);
	cr_assert_eq(memcmp(p1, pat, PG), 0);
	cr_assert_eq(umlmem_discard(g, 2 * PG, PG), -EBUSY);
	cr_assert_eq(umlmem_unpin(g, 2 * PG), 0);
	/* The last pin dropped: now it is evictable and a fourth unpin is
	   refused. */
	cr_assert_eq(umlmem_unpin(g, 2 * PG), -EINVAL);
	cr_assert_eq(umlmem_reclaim(H, 1000, &ev), 0);
	cr_assert_eq(ev, 1);
	cr_assert_eq(gstats(g).resident_pages, 0);
	cr_assert_eq(gstats(g).swapped_pages, 1);
	expect(g, 2 * PG, pat, PG);
	stats_ok(H, &g, &bytes, 1, 8);
	tu_check(H);
}

Test(access, pinned_survives_reclaim)
{
	const uint64_t bytes = 256 * PG;
	const uint64_t budget = 16;
	umlmem_guest *g;
	uint8_t pat[PG], buf[PG];
	void *p, *q;
	uint64_t ev = 0;

	H = tu_host(dir, budget * PG, 0);
	g = tu_guest(H, bytes);
	for (unsigned i = 0; i < 8; i++) {
		tu_fill(buf, PG, 100 + i);
		wr(g, i * PG, buf, PG);
	}
	cr_assert_eq(umlmem_pin(g, 3 * PG, UMLMEM_WRITE, &p), 0);
	cr_assert_eq(umlmem_reclaim(H, UINT64_MAX, &ev), 0);
	cr_assert_eq(ev, 7, "reclaim of everything evicted %llu of 7 unpinned pages",
		     (unsigned long long)ev);
	struct umlmem_stats s = gstats(g);
	cr_assert_eq(s.resident_pages, 1);
	cr_assert_eq(s.swapped_pages, 7);
	cr_assert_eq(hstats(H).frames_used, 1);
	tu_fill(buf, PG, 103);
	cr_assert_eq(memcmp(p, buf, PG), 0, "pinned page content changed by reclaim");

	/* Traffic through every other frame, many times over: the pinned
	   page keeps its place and its bytes. */
	for (unsigned i = 8; i < 8 + 10 * budget; i++) {
		tu_fill(buf, PG, 100 + i);
		wr(g, i * PG, buf, PG);
	}
	tu_fill(buf, PG, 103);
	cr_assert_eq(memcmp(p, buf, PG), 0, "pinned page content changed by traffic");
	cr_assert_eq(umlmem_pin(g, 3 * PG, UMLMEM_READ, &q), 0);
	cr_assert_eq(p, q, "pinned page moved from %p to %p", p, q);
	cr_assert_eq(umlmem_unpin(g, 3 * PG), 0);

	/* Still writable through the pointer, and seen by reads. */
	tu_fill(pat, PG, 555);
	memcpy(p, pat, PG);
	cr_assert_eq(umlmem_unpin(g, 3 * PG), 0);
	expect(g, 3 * PG, pat, PG);
	for (unsigned i = 0; i < 8 + 10 * budget; i++) {
		if (i == 3)
			continue;
		tu_fill(buf, PG, 100 + i);
		expect(g, i * PG, buf, PG);
	}
	stats_ok(H, &g, &bytes, 1, budget);
	tu_check(H);
}

Test(access, discard_frees)
{
	const uint64_t bytes = 64 * PG;
	const uint64_t budget = 32;
	uint8_t *model = calloc(1, bytes);
	umlmem_guest *g;
	struct umlmem_stats a, b;

	cr_assert_not_null(model);
	H = tu_host(dir, budget * PG, 0);
	g = tu_guest(H, bytes);
	tu_fill(model, 16 * PG, 77);
	wr(g, 0, model, 16 * PG);
	a = hstats(H);
	cr_assert_eq(a.frames_used, 16);

	/* Resident pages: frames come back. */
	cr_assert_eq(umlmem_discard(g, 4 * PG, 4 * PG), 0, "%s", umlmem_errmsg());
	memset(model + 4 * PG, 0, 4 * PG);
	b = hstats(H);
	cr_assert_eq(b.frames_used, 12, "frames_used %llu after discarding 4 of 16",
		     (unsigned long long)b.frames_used);
	cr_assert_eq(b.zero_pages, a.zero_pages + 4);
	expect(g, 0, model, bytes);
	stats_ok(H, &g, &bytes, 1, budget);

	/* Swapped pages: slots come back. */
	cr_assert_eq(umlmem_reclaim(H, UINT64_MAX, NULL), 0);
	a = gstats(g);
	cr_assert_eq(a.swapped_pages, 12);
	cr_assert_eq(a.resident_pages, 0);
	struct swap_info si0, si1;
	swap_info(host_swap(H), &si0);
	cr_assert_eq(umlmem_discard(g, 0, 2 * PG), 0, "%s", umlmem_errmsg());
	memset(model, 0, 2 * PG);
	b = gstats(g);
	cr_assert_eq(b.swapped_pages, 10, "swapped_pages %llu after discarding 2 of 12 in swap",
		     (unsigned long long)b.swapped_pages);
	swap_info(host_swap(H), &si1);
	cr_assert_eq(si1.slots_used, si0.slots_used - 2, "slots in use %llu -> %llu",
		     (unsigned long long)si0.slots_used, (unsigned long long)si1.slots_used);
	stats_ok(H, &g, &bytes, 1, budget);

	/* Clean resident pages with a copy in swap: frame and slot both go. */
	expect(g, 0, model, bytes);      /* faults 10 pages back in, clean */
	swap_info(host_swap(H), &si0);
	a = hstats(H);
	cr_assert_eq(umlmem_discard(g, 8 * PG, 4 * PG), 0, "%s", umlmem_errmsg());
	memset(model + 8 * PG, 0, 4 * PG);
	b = hstats(H);
	swap_info(host_swap(H), &si1);
	cr_assert_eq(b.frames_used, a.frames_used - 4);
	/* The clean copies were either kept at swap-in (then the four go
	   now) or freed at swap-in (then there are none). */
	cr_assert_eq(si1.slots_used, si0.slots_used == 0 ? 0 : si0.slots_used - 4,
		     "slots in use %llu -> %llu after discarding 4 clean pages",
		     (unsigned long long)si0.slots_used, (unsigned long long)si1.slots_used);
	expect(g, 0, model, bytes);
	stats_ok(H, &g, &bytes, 1, budget);

	/* All of it: nothing left anywhere. */
	cr_assert_eq(umlmem_discard(g, 0, bytes), 0);
	b = hstats(H);
	cr_assert_eq(b.frames_used, 0);
	cr_assert_eq(b.swapped_pages, 0);
	cr_assert_eq(b.zero_pages, 64);
	swap_info(host_swap(H), &si1);
	cr_assert_eq(si1.slots_used, 0, "%llu slots still in use after discarding everything",
		     (unsigned long long)si1.slots_used);
	expect_zero(g, 0, bytes);
	/* And discarded memory reads as zeros without taking a frame. */
	cr_assert_eq(hstats(H).frames_used, 0);
	tu_check(H);
	free(model);
}

Test(access, host_sums_guests)
{
	uint64_t bytes[3] = { 40 * PG + 1, 100 * PG, 7 };
	umlmem_guest *g[3];
	uint8_t buf[3 * PG];

	H = tu_host(dir, 32 * PG, 0);
	for (int i = 0; i < 3; i++)
		g[i] = tu_guest(H, bytes[i]);
	stats_ok(H, g, bytes, 3, 32);
	for (unsigned step = 0; step < 60; step++) {
		unsigned i = step % 3;
		size_t len = bytes[i] < sizeof(buf) ? bytes[i] : sizeof(buf);
		uint64_t gpa = (step * 5 * PG + step) % (bytes[i] - len + 1);

		tu_fill(buf, len, step);
		wr(g[i], gpa, buf, len);
		stats_ok(H, g, bytes, 3, 32);
		if (step % 10 == 9) {
			cr_assert_eq(umlmem_reclaim(H, 7, NULL), 0);
			stats_ok(H, g, bytes, 3, 32);
		}
	}
	cr_assert_eq(umlmem_discard(g[1], 0, 50 * PG), 0);
	stats_ok(H, g, bytes, 3, 32);
	/* A guest gone: the host counts the other two only. */
	umlmem_guest_destroy(g[1]);
	g[1] = g[2];
	bytes[1] = bytes[2];
	stats_ok(H, g, bytes, 2, 32);
	tu_check(H);
}

/* ---- threads ------------------------------------------------------------
 * Criterion's assertions may only fail on the test's own thread, so each
 * worker records its first mismatch as text and the test asserts on it. */
struct worker {
	umlmem_guest *g;
	uint64_t base, len;      /* the range this worker owns */
	uint64_t seed;
	unsigned ops;
	uint8_t *model;          /* len bytes */
	char err[256];
};

static void *worker_run(void *arg)
{
	struct worker *w = arg;
	uint64_t st = w->seed;
	uint8_t *buf = malloc(3 * PG);

	if (!buf) {
		snprintf(w->err, sizeof(w->err), "malloc");
		return NULL;
	}
	for (unsigned i = 0; i < w->ops && !w->err[0]; i++) {
		uint64_t r = tu_splitmix64(&st);
		size_t n = 1 + r % (2 * PG + 100);
		uint64_t off = tu_splitmix64(&st) % (w->len - n + 1);
		int rc;

		if (r >> 62) {
			tu_fill(buf, n, r);
			rc = umlmem_write(w->g, w->base + off, buf, n);
			if (rc) {
				snprintf(w->err, sizeof(w->err), "op %u: write %llu+%zu: %d %s", i,
					 (unsigned long long)(w->base + off), n, rc, umlmem_errmsg());
				break;
			}
			memcpy(w->model + off, buf, n);
		} else {
			rc = umlmem_read(w->g, w->base + off, buf, n);
			if (rc) {
				snprintf(w->err, sizeof(w->err), "op %u: read %llu+%zu: %d %s", i,
					 (unsigned long long)(w->base + off), n, rc, umlmem_errmsg());
				break;
			}
			for (size_t k = 0; k < n; k++) {
				if (buf[k] != w->model[off + k]) {
					snprintf(w->err, sizeof(w->err),
						 "op %u: byte %llu is %#x, expected %#x", i,
						 (unsigned long long)(w->base + off + k), buf[k],
						 w->model[off + k]);
					break;
				}
			}
		}
	}
	free(buf);
	return NULL;
}

static void run_workers(struct worker *w, unsigned n)
{
	pthread_t th[8];

	for (unsigned i = 0; i < n; i++)
		cr_assert_eq(pthread_create(&th[i], NULL, worker_run, &w[i]), 0);
	for (unsigned i = 0; i < n; i++)
		cr_assert_eq(pthread_join(th[i], NULL), 0);
	for (unsigned i = 0; i < n; i++)
		cr_assert(!w[i].err[0], "worker %u: %s", i, w[i].err);
	/* Afterwards, from this thread, every range against its model. */
	for (unsigned i = 0; i < n; i++)
		expect(w[i].g, w[i].base, w[i].model, w[i].len);
}

Test(access, threads_one_guest)
{
	/* Ranges end mid-page, so neighbours write different bytes of the same
	   page at the same time; together they are 16 times the budget. */
	const uint64_t range = 128 * PG + 1001;
	const uint64_t bytes = 4 * range + 3;
	const uint64_t budget = 32;
	struct worker w[4];
	umlmem_guest *g;

	H = tu_host(dir, budget * PG, 0);
	g = tu_guest(H, bytes);
	for (unsigned i = 0; i < 4; i++) {
		w[i] = (struct worker){ .g = g, .base = i * range, .len = range, .seed = 1000 + i,
					.ops = (unsigned)tu_scaled(2000),
					.model = calloc(1, range) };
		cr_assert_not_null(w[i].model);
	}
	run_workers(w, 4);
	stats_ok(H, &g, &bytes, 1, budget);
	cr_assert_gt(gstats(g).swap_ins, 0, "no swap traffic: the test did not test much");
	tu_check(H);
	for (unsigned i = 0; i < 4; i++)
		free(w[i].model);
}

Test(access, threads_many_guests)
{
	/* Two threads share guest 0, the others have a guest each; all four
	   compete for one small budget. */
	const uint64_t range = 96 * PG + 77;
	const uint64_t budget = 24;
	uint64_t bytes[3] = { 2 * range, range, range };
	umlmem_guest *g[3];
	struct worker w[4];

	H = tu_host(dir, budget * PG, 0);
	for (unsigned i = 0; i < 3; i++)
		g[i] = tu_guest(H, bytes[i]);
	for (unsigned i = 0; i < 4; i++) {
		w[i] = (struct worker){ .g = g[i < 2 ? 0 : i - 1], .base = i == 1 ? range : 0,
					.len = range, .seed = 2000 + i,
					.ops = (unsigned)tu_scaled(2000),
					.model = calloc(1, range) };
		cr_assert_not_null(w[i].model);
	}
	run_workers(w, 4);
	stats_ok(H, g, bytes, 3, budget);
	tu_check(H);
	for (unsigned i = 0; i < 4; i++)
		free(w[i].model);
}
