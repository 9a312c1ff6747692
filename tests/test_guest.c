/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Guests as objects: huge nominal sizes on a small budget, many guests on
 * one host, what destroying gives back, that no guest sees another's old
 * bytes on a recycled frame, and that the budget holds in the process's
 * real memory, not only in the counters.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
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

TestSuite(guest, .init = setup, .fini = teardown);

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

static uint64_t slots_used(umlmem_host *h)
{
	struct swap_info si;

	swap_info(host_swap(h), &si);
	return si.slots_used;
}

/* Writes the pattern of @seed at [gpa, gpa + len). */
static void put(umlmem_guest *g, uint64_t gpa, size_t len, uint64_t seed)
{
	uint8_t *buf = malloc(len);

	cr_assert_not_null(buf);
	tu_fill(buf, len, seed);
	int rc = umlmem_write(g, gpa, buf, len);
	cr_assert_eq(rc, 0, "write %llu+%zu: %s: %s", (unsigned long long)gpa, len,
		     umlmem_strerror(rc), umlmem_errmsg());
	free(buf);
}

/* Reads [gpa, gpa + len) and compares it with the pattern of @seed (or
   zeros for seed 0). */
static void check_at(int line, umlmem_guest *g, uint64_t gpa, size_t len, uint64_t seed)
{
	uint8_t *want, *got;

	if (len == 0)
		return;
	want = malloc(len);
	got = malloc(len);
	cr_assert(want && got);
	if (seed)
		tu_fill(want, len, seed);
	else
		memset(want, 0, len);
	memset(got, 0x5a, len);
	int rc = umlmem_read(g, gpa, got, len);
	cr_assert_eq(rc, 0, "line %d: read %llu+%zu: %s: %s", line, (unsigned long long)gpa, len,
		     umlmem_strerror(rc), umlmem_errmsg());
	if (memcmp(want, got, len) != 0) {
		size_t i = 0;
		while (want[i] == got[i])
			i++;
		cr_assert_fail("line %d: byte %llu is %#x, expected %#x", line,
			       (unsigned long long)(gpa + i), got[i], want[i]);
	}
	free(want);
	free(got);
}
#define check(g, gpa, len, seed) check_at(__LINE__, g, gpa, len, seed)

static uint64_t span_pages(uint64_t gpa, uint64_t len)
{
	return (gpa + len - 1) / PG - gpa / PG + 1;
}

Test(guest, one_tib)
{
	const uint64_t tib = 1ull << 40;
	const size_t chunk = 256 * 1024;
	/* Start, the middle at an odd offset, across a 1 GiB page-table
	   directory boundary, and flush against the end. */
	const uint64_t at[4] = { 0, tib / 2 + 12345, 3 * TU_GiB - 100, tib - chunk };
	umlmem_guest *g, *g1;
	uint64_t touched = 0, meta0, meta;
	struct umlmem_stats s;

	H = tu_host(dir, 64 * TU_MiB, 0);
	g = tu_guest(H, tib);
	s = gstats(g);
	cr_assert_eq(s.ram_pages, 1ull << 28, "ram_pages %llu", (unsigned long long)s.ram_pages);
	cr_assert_eq(s.zero_pages, 1ull << 28);
	cr_assert_eq(hstats(H).ram_pages, 1ull << 28);
	meta0 = guest_meta_bytes(g);
	cr_log_info("1 TiB guest, untouched: %llu bytes of page table",
		    (unsigned long long)meta0);
	cr_assert_lt(meta0, 64 * TU_KiB, "an untouched 1 TiB guest costs %llu bytes",
		     (unsigned long long)meta0);

	for (int i = 0; i < 4; i++) {
		put(g, at[i], chunk, 10 + i);
		touched += span_pages(at[i], chunk);
	}
	for (int i = 0; i < 4; i++)
		check(g, at[i], chunk, 10 + i);
	/* Between the pieces: zeros, and no frame taken for reading them. */
	check(g, tib / 4, 64 * 1024, 0);
	check(g, at[3] - 4096, 4096, 0);
	s = gstats(g);
	cr_assert_eq(s.resident_pages + s.swapped_pages, touched,
		     "%llu pages touched, %llu resident + %llu swapped", (unsigned long long)touched,
		     (unsigned long long)s.resident_pages, (unsigned long long)s.swapped_pages);
	cr_assert_eq(s.zero_pages, (1ull << 28) - touched);
	meta = guest_meta_bytes(g);
	cr_log_info("1 TiB guest, 1 MiB written in 4 places: %llu bytes of page table",
		    (unsigned long long)meta);
	cr_assert_lt(meta, 1 * TU_MiB, "1 MiB in 4 places costs %llu bytes of page table",
		     (unsigned long long)meta);

	/* 1 MiB in one place: a top array, one directory, a leaf or so. */
	g1 = tu_guest(H, tib);
	put(g1, 700 * TU_GiB, 1 * TU_MiB, 20);
	check(g1, 700 * TU_GiB, 1 * TU_MiB, 20);
	meta = guest_meta_bytes(g1);
	cr_log_info("1 TiB guest, 1 MiB written in one place: %llu bytes of page table",
		    (unsigned long long)meta);
	cr_assert_lt(meta, 256 * TU_KiB, "1 MiB in one place costs %llu bytes of page table",
		     (unsigned long long)meta);
	cr_assert_eq(hstats(H).ram_pages, 2ull << 28);
	tu_check(H);
}

Test(guest, many_guests)
{
	const unsigned n = 200;
	const uint64_t budget = 64;
	umlmem_guest **g = calloc(n, sizeof(*g));
	uint64_t *bytes = calloc(n, sizeof(*bytes)), *gpa = calloc(n, sizeof(*gpa));
	struct umlmem_guest_config cfg;
	char name[32];
	uint64_t ram = 0;
	struct umlmem_stats hs, gs;

	cr_assert(g && bytes && gpa);
	H = tu_host(dir, budget * PG, 0);
	for (unsigned i = 0; i < n; i++) {
		/* Odd sizes, each guest its own; 8 KiB of data at an odd place,
		   three times the budget in all. */
		bytes[i] = 64 * 1024 + i * PG + i;
		gpa[i] = (i * 7777ull) % (bytes[i] - 8192);
		snprintf(name, sizeof(name), "guest-%u", i);
		umlmem_guest_config_init(&cfg);
		cfg.ram_bytes = bytes[i];
		cfg.name = name;
		cr_assert_eq(umlmem_guest_create(H, &cfg, &g[i]), 0, "guest %u: %s", i,
			     umlmem_errmsg());
		put(g[i], gpa[i], 8192, 1000 + i);
		ram += (bytes[i] + PG - 1) / PG;
	}
	for (unsigned i = 0; i < n; i++)
		check(g[i], gpa[i], 8192, 1000 + i);
	hs = hstats(H);
	cr_assert_eq(hs.ram_pages, ram);
	cr_assert_leq(hs.frames_used, budget);
	tu_check(H);

	/* Every other guest goes; the rest keep their data, the host counts
	   only them. */
	for (unsigned i = 0; i < n; i += 2) {
		umlmem_guest_destroy(g[i]);
		ram -= (bytes[i] + PG - 1) / PG;
		g[i] = NULL;
	}
	uint64_t res = 0, swp = 0;
	for (unsigned i = 1; i < n; i += 2) {
		check(g[i], gpa[i], 8192, 1000 + i);
		check(g[i], 0, gpa[i], 0);
	}
	/* Counted after all the reads, which move pages in and out. */
	for (unsigned i = 1; i < n; i += 2) {
		gs = gstats(g[i]);
		res += gs.resident_pages;
		swp += gs.swapped_pages;
	}
	hs = hstats(H);
	cr_assert_eq(hs.ram_pages, ram, "host ram_pages %llu, live guests %llu",
		     (unsigned long long)hs.ram_pages, (unsigned long long)ram);
	cr_assert_eq(hs.resident_pages, res, "host resident %llu, live guests %llu",
		     (unsigned long long)hs.resident_pages, (unsigned long long)res);
	cr_assert_eq(hs.swapped_pages, swp, "host swapped %llu, live guests %llu",
		     (unsigned long long)hs.swapped_pages, (unsigned long long)swp);
	cr_assert_eq(hs.frames_used, res + tu_cached(H),
		     "frames_used %llu, live guests resident %llu + read ahead %llu",
		     (unsigned long long)hs.frames_used, (unsigned long long)res,
		     (unsigned long long)tu_cached(H));
	tu_check(H);

	for (unsigned i = 1; i < n; i += 2)
		umlmem_guest_destroy(g[i]);
	hs = hstats(H);
	cr_assert_eq(hs.ram_pages, 0);
	cr_assert_eq(hs.frames_used, 0);
	cr_assert_eq(hs.swapped_pages, 0);
	cr_assert_eq(slots_used(H), 0, "%llu swap slots live without guests",
		     (unsigned long long)slots_used(H));
	tu_check(H);
	free(g);
	free(bytes);
	free(gpa);
}

Test(guest, destroy_releases)
{
	const uint64_t budget = 64;
	umlmem_guest *a, *b;
	struct umlmem_stats bs, hs;

	H = tu_host(dir, budget * PG, 0);
	a = tu_guest(H, 1 * TU_MiB);
	b = tu_guest(H, 1 * TU_MiB + 5);
	put(a, 0, 128 * PG, 1);           /* twice the budget: half in swap */
	put(b, 100, 32 * PG, 2);
	cr_assert_eq(umlmem_reclaim(H, 16, NULL), 0);
	check(a, 0, 16 * PG, 1);          /* some of A back in, clean */
	hs = hstats(H);
	cr_assert_gt(hs.swapped_pages, 0);
	cr_assert_geq(hs.swap_disk_bytes, hs.swapped_pages * PG,
		      "%llu pages in swap on %llu bytes of disk",
		      (unsigned long long)hs.swapped_pages, (unsigned long long)hs.swap_disk_bytes);
	bs = gstats(b);

	umlmem_guest_destroy(a);
	hs = hstats(H);
	cr_assert_eq(hs.ram_pages, bs.ram_pages);
	cr_assert_eq(hs.frames_used, bs.resident_pages + tu_cached(H),
		     "frames_used %llu, B holds %llu", (unsigned long long)hs.frames_used,
		     (unsigned long long)bs.resident_pages);
	cr_assert_eq(hs.resident_pages, bs.resident_pages);
	cr_assert_eq(hs.swapped_pages, bs.swapped_pages, "swapped %llu, B has %llu",
		     (unsigned long long)hs.swapped_pages, (unsigned long long)bs.swapped_pages);
	/* Slots: B's swapped pages, plus at most one clean copy per resident
	   page of B. */
	uint64_t su = slots_used(H);
	cr_assert_geq(su, bs.swapped_pages);
	cr_assert_leq(su, bs.swapped_pages + bs.resident_pages, "%llu slots live, B can hold %llu",
		      (unsigned long long)su,
		      (unsigned long long)(bs.swapped_pages + bs.resident_pages));
	check(b, 100, 32 * PG, 2);
	tu_check(H);

	umlmem_guest_destroy(b);
	hs = hstats(H);
	cr_assert_eq(hs.frames_used, 0);
	cr_assert_eq(hs.swapped_pages, 0);
	cr_assert_eq(slots_used(H), 0);
	/* Disk use follows live data: no live slot, (almost) no blocks. */
	cr_assert_leq(hs.swap_disk_bytes, 64 * TU_KiB, "%llu bytes of swap on disk with no guest",
		      (unsigned long long)hs.swap_disk_bytes);
	tu_check(H);

	/* The freed frames and slots serve a new guest. */
	a = tu_guest(H, 1 * TU_MiB);
	put(a, 0, 200 * PG, 3);
	check(a, 0, 200 * PG, 3);
	tu_check(H);
}

static unsigned count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	unsigned n = 0;

	cr_assert_not_null(d);
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

static unsigned count_memfd_maps(void)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];
	unsigned n = 0;

	cr_assert_not_null(f);
	while (fgets(line, sizeof(line), f))
		if (strstr(line, "memfd:"))
			n++;
	fclose(f);
	return n;
}

static bool dir_empty(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *de;
	bool empty = true;

	cr_assert_not_null(d);
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			empty = false;
	closedir(d);
	return empty;
}

Test(guest, host_destroy_with_live_guests)
{
	unsigned fds0 = count_fds(), maps0 = count_memfd_maps();
	umlmem_guest *g[3];
	void *p;

	/* Several swap files, guests with frames, slots and one pinned page:
	   host_destroy must take all of it down (valgrind checks the heap). */
	struct umlmem_host_config cfg;
	umlmem_host_config_init(&cfg);
	cfg.resident_bytes = 32 * PG;
	cfg.swap_dir = dir;
	cfg.swap_files = 3;
	cr_assert_eq(umlmem_host_create(&cfg, &H), 0, "%s", umlmem_errmsg());
	for (int i = 0; i < 3; i++) {
		g[i] = tu_guest(H, (i + 1) * TU_MiB);
		put(g[i], i * 1000, 40 * PG, 50 + i);
	}
	cr_assert_gt(hstats(H).swapped_pages, 0);
	cr_assert_eq(umlmem_pin(g[1], 4 * PG, UMLMEM_WRITE, &p), 0, "%s", umlmem_errmsg());
	tu_check(H);
	umlmem_host_destroy(H);
	H = NULL;
	cr_assert_eq(count_fds(), fds0, "host_destroy left %d file descriptors open",
		     (int)count_fds() - (int)fds0);
	cr_assert_eq(count_memfd_maps(), maps0, "host_destroy left the frame store mapped");
	cr_assert(dir_empty(dir), "host_destroy left files in the swap directory");
}

Test(guest, isolation_after_destroy)
{
	const uint64_t budget = 16;
	umlmem_guest *a, *b;
	void *p;
	uint8_t page[PG];

	H = tu_host(dir, budget * PG, 0);
	a = tu_guest(H, 64 * PG);
	/* A fills every frame with non-zero bytes (and swap, four times
	   over). */
	put(a, 0, 64 * PG, 0xa);
	umlmem_guest_destroy(a);
	cr_assert_eq(hstats(H).frames_used, 0);

	b = tu_guest(H, 64 * PG);
	/* Pinning a never-written page makes it resident on a recycled frame:
	   it must read as zeros. */
	for (unsigned i = 0; i < budget; i++) {
		cr_assert_eq(umlmem_pin(b, i * PG, UMLMEM_READ, &p), 0, "%s", umlmem_errmsg());
		memset(page, 0, PG);
		cr_assert_eq(memcmp(p, page, PG), 0, "page %u of a new guest shows old bytes", i);
		cr_assert_eq(umlmem_unpin(b, i * PG), 0);
	}
	/* One byte written per page: the other 4095 are zeros. */
	for (unsigned i = 0; i < 64; i++) {
		uint8_t v = (uint8_t)(i + 1);
		cr_assert_eq(umlmem_write(b, i * PG + i, &v, 1), 0);
	}
	for (unsigned i = 0; i < 64; i++) {
		memset(page, 0x5a, PG);
		cr_assert_eq(umlmem_read(b, i * PG, page, PG), 0);
		for (unsigned k = 0; k < PG; k++)
			cr_assert_eq(page[k], k == i ? i + 1 : 0,
				     "new guest page %u byte %u is %#x", i, k, page[k]);
	}
	tu_check(H);
}

Test(guest, isolation_after_discard_and_eviction)
{
	const uint64_t budget = 16;
	umlmem_guest *a, *b;
	uint8_t page[PG];

	H = tu_host(dir, budget * PG, 0);
	a = tu_guest(H, 64 * PG);
	b = tu_guest(H, 64 * PG);
	/* Discard: A's frames go back to the free list with A's bytes. */
	put(a, 0, budget * PG, 0xb);
	cr_assert_eq(umlmem_discard(a, 0, 64 * PG), 0);
	for (unsigned i = 0; i < budget; i++) {
		uint8_t v = 0xff;
		cr_assert_eq(umlmem_write(b, i * PG + 100, &v, 1), 0);
		cr_assert_eq(umlmem_read(b, i * PG, page, PG), 0);
		for (unsigned k = 0; k < PG; k++)
			cr_assert_eq(page[k], k == 100 ? 0xff : 0,
				     "after discard: B page %u byte %u is %#x", i, k, page[k]);
	}
	/* Eviction: A, still alive, fills the budget; B's next first
	   touches take frames A's pages were evicted from. */
	put(a, 0, 64 * PG, 0xc);
	for (unsigned i = budget; i < 64; i++) {
		uint8_t v = 0xee;
		cr_assert_eq(umlmem_write(b, i * PG + 7, &v, 1), 0);
		cr_assert_eq(umlmem_read(b, i * PG, page, PG), 0);
		for (unsigned k = 0; k < PG; k++)
			cr_assert_eq(page[k], k == 7 ? 0xee : 0,
				     "after eviction: B page %u byte %u is %#x", i, k, page[k]);
	}
	/* Discarded pages of A itself read as zeros when touched again. */
	cr_assert_eq(umlmem_discard(a, 8 * PG, 8 * PG), 0);
	uint8_t v = 1;
	cr_assert_eq(umlmem_write(a, 9 * PG, &v, 1), 0);
	cr_assert_eq(umlmem_read(a, 9 * PG, page, PG), 0);
	for (unsigned k = 1; k < PG; k++)
		cr_assert_eq(page[k], 0, "rewritten discarded page byte %u is %#x", k, page[k]);
	check(a, 0, 8 * PG, 0xc);
	tu_check(H);
}

Test(guest, budget_holds)
{
	/* 4 MiB of budget, 64 MiB written over four guests (an eighth of both
	   under valgrind). */
	const uint64_t div = tu_valgrind() ? 8 : 1;
	const uint64_t budget = 4 * TU_MiB / div, total = 64 * TU_MiB / div;
	const uint64_t per = total / 4, chunk = 64 * 1024;
	const uint64_t slack = 2 * TU_MiB;
	umlmem_guest *g[4];
	uint64_t shm0, shm, max_frames = 0;
	struct umlmem_stats hs;

	shm0 = tu_rssshmem();
	H = tu_host(dir, budget, 0);
	for (int i = 0; i < 4; i++)
		g[i] = tu_guest(H, 2 * per + 4321);
	/* Interleaved, so that every guest's pages compete for the frames. */
	for (uint64_t off = 0; off < per; off += chunk) {
		for (int i = 0; i < 4; i++) {
			put(g[i], off + (uint64_t)i * 111, chunk, 1 + (off / chunk) * 4 + i);
			hs = hstats(H);
			cr_assert_leq(hs.frames_used, budget / PG, "frames_used %llu above %llu",
				      (unsigned long long)hs.frames_used,
				      (unsigned long long)(budget / PG));
			cr_assert_leq(hs.resident_pages, budget / PG);
			if (hs.frames_used > max_frames)
				max_frames = hs.frames_used;
		}
	}
	shm = tu_rssshmem();
	cr_log_info("budget %llu KiB, written %llu KiB, most frames %llu, RssShmem grew %lld KiB",
		    (unsigned long long)(budget / 1024), (unsigned long long)(total / 1024),
		    (unsigned long long)max_frames, ((long long)shm - (long long)shm0) / 1024);
	cr_assert_leq(shm, shm0 + budget + slack, "RssShmem grew by %llu KiB on a %llu KiB budget",
		      (unsigned long long)((shm - shm0) / 1024), (unsigned long long)(budget / 1024));
	hs = hstats(H);
	cr_assert_geq(hs.swap_outs, (total - budget) / PG,
		      "%llu pages written over a %llu-page budget, only %llu swapped out",
		      (unsigned long long)(total / PG), (unsigned long long)(budget / PG),
		      (unsigned long long)hs.swap_outs);

	/* Everything reads back, and reading keeps to the budget too. */
	for (uint64_t off = 0; off < per; off += chunk) {
		for (int i = 0; i < 4; i++) {
			check(g[i], off + (uint64_t)i * 111, chunk, 1 + (off / chunk) * 4 + i);
			cr_assert_leq(hstats(H).frames_used, budget / PG);
		}
	}
	shm = tu_rssshmem();
	cr_assert_leq(shm, shm0 + budget + slack, "RssShmem grew by %llu KiB on a %llu KiB budget",
		      (unsigned long long)((shm - shm0) / 1024), (unsigned long long)(budget / 1024));
	tu_check(H);
}
