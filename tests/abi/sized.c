/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The sized entry points against the rules of umlmem.h ("Versions and
 * binary compatibility"), as programs built against other headers would
 * call them:
 *  - a struct larger than the library's (a newer header's): a config whose
 *    extra bytes are zero is accepted, one with a non-zero extra byte gets
 *    -EINVAL and a message naming it; the counters' extra bytes are zeroed;
 *  - a struct smaller than the library's: the library reads and writes
 *    only @size bytes of it. Each such struct ends exactly at a page the
 *    program made inaccessible, so a library that touches one byte more
 *    kills the test with SIGSEGV; the counters it does not write keep
 *    their old value.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "umlmem.h"

static int failed;

#define CHECK(cond, ...)                                                      \
	do {                                                                  \
		if (!(cond)) {                                                \
			fprintf(stderr, "sized: %s:%d: %s: ", __FILE__,       \
				__LINE__, #cond);                             \
			fprintf(stderr, __VA_ARGS__);                         \
			fprintf(stderr, " (errmsg: %s)\n", umlmem_errmsg());  \
			failed = 1;                                           \
		}                                                             \
	} while (0)

/* The sizes of the 0.1 structs, up to the end of their last field. */
#define HOST_CONFIG_0_1  68
#define GUEST_CONFIG_0_1 24

static unsigned char *fence;

/* @n bytes that end where an inaccessible page begins. */
static void *at_fence(size_t n)
{
	return fence + getpagesize() - n;
}

static int all(const void *p, size_t n, unsigned char v)
{
	const unsigned char *b = p;

	for (size_t i = 0; i < n; i++)
		if (b[i] != v)
			return 0;
	return 1;
}

int main(void)
{
	struct {
		struct umlmem_host_config c;
		uint64_t next[2]; /* fields of a later release */
	} bigh;
	struct {
		struct umlmem_guest_config c;
		uint64_t next[2];
	} bigg;
	struct {
		struct umlmem_stats s;
		uint64_t next[3];
	} bigs;
	struct {
		struct umlmem_host_info i;
		uint64_t next[3];
	} bigi;
	struct umlmem_host_config *hc;
	struct umlmem_guest_config *gc;
	struct umlmem_stats *st;
	umlmem_host *h = NULL, *h2 = NULL;
	umlmem_guest *g = NULL, *g2 = NULL;
	char want[128];
	int rc;

	fence = mmap(NULL, 2 * getpagesize(), PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (fence == MAP_FAILED || mprotect(fence + getpagesize(), getpagesize(), PROT_NONE)) {
		perror("sized: mmap");
		return 1;
	}

	/* Larger config, extra bytes left as config_init set them: accepted. */
	memset(&bigh, 0xff, sizeof(bigh));
	rc = umlmem_host_config_init_sized(&bigh.c, sizeof(bigh));
	CHECK(rc == 0, "config_init_sized of a larger struct: %s", umlmem_strerror(rc));
	CHECK(bigh.next[0] == 0 && bigh.next[1] == 0, "the unknown tail was not zeroed");
	CHECK(bigh.c.swap_files == 1 && bigh.c.resident_bytes == 0 && bigh.c.swap_dir == NULL,
	      "defaults not set in a larger struct");
	bigh.c.resident_bytes = 32 * UMLMEM_PAGE_SIZE;
	rc = umlmem_host_create_sized(&bigh.c, sizeof(bigh), &h);
	CHECK(rc == 0 && h, "host_create_sized of a larger struct with a zero tail: %s",
	      umlmem_strerror(rc));
	umlmem_host_destroy(h);
	h = NULL;

	/* ... with a field the library does not know set: refused, named. */
	bigh.next[1] = UINT64_MAX;
	rc = umlmem_host_create_sized(&bigh.c, sizeof(bigh), &h);
	snprintf(want, sizeof(want), "bytes %zu to %zu of the caller's %zu are not zero",
		 sizeof(bigh.c) + 8, sizeof(bigh.c) + 15, sizeof(bigh));
	CHECK(rc == -EINVAL && h == NULL, "a set unknown field: rc %d", rc);
	CHECK(strstr(umlmem_errmsg(), want) && strstr(umlmem_errmsg(), "umlmem_host_config"),
	      "the message does not say \"%s\"", want);

	/* The 0.1 size, ending at the fence: read no further. */
	hc = at_fence(HOST_CONFIG_0_1);
	rc = umlmem_host_config_init_sized(hc, HOST_CONFIG_0_1);
	CHECK(rc == 0 && hc->swap_files == 1, "config_init_sized at the 0.1 size: %s",
	      umlmem_strerror(rc));
	hc->resident_bytes = 64 * UMLMEM_PAGE_SIZE;
	hc->io = UMLMEM_IO_SYNC;
	rc = umlmem_host_create_sized(hc, HOST_CONFIG_0_1, &h);
	CHECK(rc == 0 && h, "host_create_sized at the 0.1 size: %s", umlmem_strerror(rc));
	if (!h)
		return 1;
	rc = umlmem_host_config_init_sized(hc, HOST_CONFIG_0_1 - 1);
	CHECK(rc == -EINVAL && strstr(umlmem_errmsg(), "below"),
	      "config_init_sized below the 0.1 size: rc %d", rc);
	rc = umlmem_host_create_sized(hc, HOST_CONFIG_0_1 - 1, &h2);
	CHECK(rc == -EINVAL && h2 == NULL, "host_create_sized below the 0.1 size: rc %d", rc);

	/* Guest configs: the same rules. */
	memset(&bigg, 0xff, sizeof(bigg));
	rc = umlmem_guest_config_init_sized(&bigg.c, sizeof(bigg));
	CHECK(rc == 0 && bigg.next[0] == 0 && bigg.next[1] == 0 && bigg.c.ram_bytes == 0,
	      "guest config_init_sized of a larger struct: %s", umlmem_strerror(rc));
	bigg.c.ram_bytes = 1 << 20;
	bigg.next[0] = 0x100;
	rc = umlmem_guest_create_sized(h, &bigg.c, sizeof(bigg), &g);
	snprintf(want, sizeof(want), "bytes %zu to %zu of", sizeof(bigg.c) + 1, sizeof(bigg.c) + 1);
	CHECK(rc == -EINVAL && g == NULL && strstr(umlmem_errmsg(), want),
	      "guest config with a set unknown byte: rc %d, want \"%s\"", rc, want);
	bigg.next[0] = 0;
	rc = umlmem_guest_create_sized(h, &bigg.c, sizeof(bigg), &g);
	CHECK(rc == 0 && g, "guest_create_sized of a larger struct: %s", umlmem_strerror(rc));
	gc = at_fence(GUEST_CONFIG_0_1);
	rc = umlmem_guest_config_init_sized(gc, GUEST_CONFIG_0_1);
	CHECK(rc == 0, "guest config_init_sized at the 0.1 size: %s", umlmem_strerror(rc));
	gc->ram_bytes = 3 * UMLMEM_PAGE_SIZE;
	rc = umlmem_guest_create_sized(h, gc, GUEST_CONFIG_0_1, &g2);
	CHECK(rc == 0 && g2, "guest_create_sized at the 0.1 size: %s", umlmem_strerror(rc));
	if (!g || !g2)
		return 1;
	rc = umlmem_write(g, 5 * UMLMEM_PAGE_SIZE, "x", 1);
	CHECK(rc == 0, "umlmem_write: %s", umlmem_strerror(rc));

	/* Larger counters: known ones filled, the tail zeroed. */
	memset(&bigs, 0xff, sizeof(bigs));
	rc = umlmem_host_stats_sized(h, &bigs.s, sizeof(bigs));
	CHECK(rc == 0 && bigs.s.ram_pages == 256 + 3 && bigs.s.resident_pages == 1 &&
	      bigs.s.io_errors == 0 && all(bigs.next, sizeof(bigs.next), 0),
	      "host_stats_sized of a larger struct: ram %llu resident %llu",
	      (unsigned long long)bigs.s.ram_pages, (unsigned long long)bigs.s.resident_pages);
	memset(&bigs, 0xff, sizeof(bigs));
	rc = umlmem_guest_stats_sized(g2, &bigs.s, sizeof(bigs));
	CHECK(rc == 0 && bigs.s.ram_pages == 3 && bigs.s.zero_pages == 3 &&
	      all(bigs.next, sizeof(bigs.next), 0), "guest_stats_sized of a larger struct");
	memset(&bigi, 0xff, sizeof(bigi));
	rc = umlmem_host_info(h, &bigi.i, sizeof(bigi));
	CHECK(rc == 0 && bigi.i.frames_total == 64 && all(bigi.next, sizeof(bigi.next), 0),
	      "host_info of a larger struct");

	/* Smaller counters (two fields), at the fence: the rest untouched. */
	st = at_fence(2 * sizeof(uint64_t));
	rc = umlmem_host_stats_sized(h, st, 2 * sizeof(uint64_t));
	CHECK(rc == 0 && st->ram_pages == 259 && st->resident_pages == 1,
	      "host_stats_sized of two fields");
	rc = umlmem_guest_stats_sized(g, st, 2 * sizeof(uint64_t));
	CHECK(rc == 0 && st->ram_pages == 256 && st->resident_pages == 1,
	      "guest_stats_sized of two fields");
	memset(&bigs, 0xee, sizeof(bigs));
	rc = umlmem_guest_stats_sized(g, &bigs.s, 2 * sizeof(uint64_t));
	CHECK(rc == 0 && bigs.s.ram_pages == 256 &&
	      all(&bigs.s.frames_used, sizeof(bigs) - 2 * sizeof(uint64_t), 0xee),
	      "guest_stats_sized wrote beyond two fields");
	rc = umlmem_host_info(h, at_fence(8), 8);
	CHECK(rc == 0 && *(uint64_t *)at_fence(8) == 64, "host_info of one field");

	/* NULL: refused, with a message. */
	rc = umlmem_host_config_init_sized(NULL, sizeof(*hc));
	CHECK(rc == -EINVAL && strstr(umlmem_errmsg(), "NULL"), "config_init_sized(NULL)");
	rc = umlmem_host_stats_sized(h, NULL, 0);
	CHECK(rc == -EINVAL, "host_stats_sized(NULL)");

	umlmem_host_destroy(h);
	if (!failed)
		printf("sized: larger and smaller structs are handled by the rules\n");
	return failed;
}
