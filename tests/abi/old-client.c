/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A program built against the header of umlmem 0.1 (umlmem-0.1.h, a copy
 * of it as released), run with the library of this tree: the config and
 * stats structs it hands over have their 0.1 layout, and the library must
 * fill and read them as such. Each struct sits between canary bytes, so a
 * library that writes its own, larger, struct into the caller's is caught;
 * the bytes of the guest are checked against a copy kept here, and the
 * counters against what the program did.
 *
 * Linked with -lumlmem only: the Makefile checks that every umlmem symbol
 * it binds is of version UMLMEM_0.1.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "umlmem-0.1.h"

#define CANARY 0xa5
#define BUDGET_PAGES 64
#define GUEST_PAGES 256

static int failed;

#define CHECK(cond, ...)                                                      \
	do {                                                                  \
		if (!(cond)) {                                                \
			fprintf(stderr, "old-client: %s:%d: %s: ", __FILE__,  \
				__LINE__, #cond);                             \
			fprintf(stderr, __VA_ARGS__);                         \
			fprintf(stderr, " (%s)\n", umlmem_errmsg());          \
			failed = 1;                                           \
		}                                                             \
	} while (0)

#define GUARDED(type) struct { unsigned char pre[32]; type s; unsigned char post[32]; }

static int intact(const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != CANARY)
			return 0;
	return 1;
}

#define FILL(g) memset(&(g), CANARY, sizeof(g))
#define CANARIES_OK(g) (intact((g).pre, sizeof((g).pre)) && intact((g).post, sizeof((g).post)))

/* The byte at @off of the guest after the writes below. */
static unsigned char expect(uint64_t off)
{
	uint64_t page = off / UMLMEM_PAGE_SIZE;

	return page % 3 == 2 ? 0 : (unsigned char)(off * 7 + page * 13 + 1);
}

int main(void)
{
	GUARDED(struct umlmem_host_config) hc;
	GUARDED(struct umlmem_guest_config) gc;
	GUARDED(struct umlmem_stats) hs, gs;
	GUARDED(struct umlmem_host_info) hi;
	static unsigned char buf[GUEST_PAGES * UMLMEM_PAGE_SIZE];
	umlmem_host *h = NULL;
	umlmem_guest *g = NULL;
	uint64_t bad = 0;
	int rc;

	FILL(hc);
	umlmem_host_config_init(&hc.s);
	CHECK(CANARIES_OK(hc), "umlmem_host_config_init wrote outside the 0.1 struct");
	CHECK(hc.s.resident_bytes == 0 && hc.s.swap_dir == NULL && hc.s.swap_bytes == 0 &&
	      hc.s.swap_files == 1 && hc.s.io == UMLMEM_IO_AUTO && hc.s.flags == 0 &&
	      hc.s.reclaim_batch == 0 && hc.s.reclaim_low == 0 && hc.s.reclaim_high == 0 &&
	      hc.s.max_sharing == 0 && hc.s.dedup_pages == 0 && hc.s.dedup_sleep_us == 0,
	      "umlmem_host_config_init did not set the 0.1 defaults");
	hc.s.resident_bytes = BUDGET_PAGES * UMLMEM_PAGE_SIZE;
	hc.s.io = UMLMEM_IO_SYNC;
	rc = umlmem_host_create(&hc.s, &h);
	CHECK(rc == 0, "umlmem_host_create: %s", umlmem_strerror(rc));
	CHECK(CANARIES_OK(hc), "umlmem_host_create wrote around the config");
	if (rc)
		return 1;

	FILL(gc);
	umlmem_guest_config_init(&gc.s);
	CHECK(CANARIES_OK(gc), "umlmem_guest_config_init wrote outside the 0.1 struct");
	CHECK(gc.s.ram_bytes == 0 && gc.s.merge_domain == 0 && gc.s.flags == 0 && gc.s.name == NULL,
	      "umlmem_guest_config_init did not set the 0.1 defaults");
	gc.s.ram_bytes = GUEST_PAGES * UMLMEM_PAGE_SIZE;
	gc.s.name = "old";
	rc = umlmem_guest_create(h, &gc.s, &g);
	CHECK(rc == 0, "umlmem_guest_create: %s", umlmem_strerror(rc));
	if (rc)
		return 1;

	/* Four times the budget, every third page left untouched: swap-outs. */
	for (uint64_t off = 0; off < sizeof(buf); off++)
		buf[off] = expect(off);
	for (uint64_t p = 0; p < GUEST_PAGES; p++) {
		if (p % 3 == 2)
			continue;
		rc = umlmem_write(g, p * UMLMEM_PAGE_SIZE, buf + p * UMLMEM_PAGE_SIZE,
				  UMLMEM_PAGE_SIZE);
		CHECK(rc == 0, "umlmem_write of page %llu: %s", (unsigned long long)p,
		      umlmem_strerror(rc));
	}
	memset(buf, 0, sizeof(buf));
	rc = umlmem_read(g, 0, buf, sizeof(buf));
	CHECK(rc == 0, "umlmem_read: %s", umlmem_strerror(rc));
	for (uint64_t off = 0; off < sizeof(buf); off++)
		bad += buf[off] != expect(off);
	CHECK(bad == 0, "%llu bytes of the guest differ from what was written",
	      (unsigned long long)bad);

	FILL(hs);
	rc = umlmem_host_stats(h, &hs.s);
	CHECK(rc == 0, "umlmem_host_stats: %s", umlmem_strerror(rc));
	CHECK(CANARIES_OK(hs), "umlmem_host_stats wrote outside the 0.1 struct");
	CHECK(hs.s.ram_pages == GUEST_PAGES, "host ram_pages %llu", (unsigned long long)hs.s.ram_pages);
	CHECK(hs.s.resident_pages + hs.s.swapped_pages + hs.s.zero_pages == GUEST_PAGES,
	      "host resident %llu + swapped %llu + zero %llu != %u",
	      (unsigned long long)hs.s.resident_pages, (unsigned long long)hs.s.swapped_pages,
	      (unsigned long long)hs.s.zero_pages, GUEST_PAGES);
	CHECK(hs.s.frames_used <= BUDGET_PAGES && hs.s.frames_used > 0, "host frames_used %llu",
	      (unsigned long long)hs.s.frames_used);
	CHECK(hs.s.swap_outs > 0 && hs.s.swapped_pages > 0, "no swap-out with 4 times the budget");
	CHECK(hs.s.io_errors == 0 && hs.s.checksum_errors == 0, "I/O errors");

	FILL(gs);
	rc = umlmem_guest_stats(g, &gs.s);
	CHECK(rc == 0, "umlmem_guest_stats: %s", umlmem_strerror(rc));
	CHECK(CANARIES_OK(gs), "umlmem_guest_stats wrote outside the 0.1 struct");
	CHECK(gs.s.ram_pages == GUEST_PAGES && gs.s.zero_pages >= GUEST_PAGES / 3 &&
	      gs.s.resident_pages == hs.s.resident_pages && gs.s.swapped_pages == hs.s.swapped_pages,
	      "guest ram %llu zero %llu resident %llu swapped %llu",
	      (unsigned long long)gs.s.ram_pages, (unsigned long long)gs.s.zero_pages,
	      (unsigned long long)gs.s.resident_pages, (unsigned long long)gs.s.swapped_pages);

	FILL(hi);
	rc = umlmem_host_info(h, &hi.s, sizeof(hi.s));
	CHECK(rc == 0, "umlmem_host_info: %s", umlmem_strerror(rc));
	CHECK(CANARIES_OK(hi), "umlmem_host_info wrote outside the 0.1 struct");
	CHECK(hi.s.frames_total == BUDGET_PAGES && hi.s.engine == UMLMEM_IO_SYNC &&
	      hi.s.frames_total - hi.s.frames_free == hs.s.frames_used,
	      "host info: frames_total %llu free %llu engine %llu",
	      (unsigned long long)hi.s.frames_total, (unsigned long long)hi.s.frames_free,
	      (unsigned long long)hi.s.engine);

	umlmem_host_destroy(h);
	if (!failed)
		printf("old-client: a program built against the 0.1 header runs with this library\n");
	return failed;
}
