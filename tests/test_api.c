/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Bad input, call by call, against the errors documented in umlmem.h.
 *
 * Every test runs next to a guest that already holds data, part of it in
 * swap; after each refused call the whole guest is read back against a byte
 * model and the invariant checker runs, so a refused call that still
 * changed something (or lost something) fails here, not later.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

#define PG UMLMEM_PAGE_SIZE

/* The guest is deliberately not a whole number of pages, and its data does
   not fit in the budget, so that the checks after each bad call go through
   swap and the partial last page. */
#define G_BYTES  (512 * 1024 + 123)
#define H_BUDGET (64 * PG)

static char dir[64];
static umlmem_host *H;
static umlmem_guest *G;
static uint8_t *model;   /* what every byte of G must read as */

static void mwrite(uint64_t gpa, size_t len, uint64_t seed)
{
	uint8_t *buf = malloc(len);

	cr_assert_not_null(buf);
	tu_fill(buf, len, seed);
	int rc = umlmem_write(G, gpa, buf, len);
	cr_assert_eq(rc, 0, "write %llu+%zu: %s: %s", (unsigned long long)gpa, len,
		     umlmem_strerror(rc), umlmem_errmsg());
	memcpy(model + gpa, buf, len);
	free(buf);
}

static void setup(void)
{
	tu_mkswapdir(dir);
	H = tu_host(dir, H_BUDGET, 0);
	G = tu_guest(H, G_BYTES);
	model = calloc(1, G_BYTES);
	cr_assert_not_null(model);
	/* 300 KiB at an odd offset: more than the 256 KiB budget, so the
	   first pages are in swap by now. */
	mwrite(777, 300 * 1024, 1);
	/* The partial last page, to its very last byte. */
	mwrite(G_BYTES - 50, 50, 2);
	/* One lone page in the middle. */
	mwrite(400 * 1024, PG, 3);
}

static void teardown(void)
{
	umlmem_host_destroy(H);
	H = NULL;
	G = NULL;
	free(model);
	model = NULL;
	tu_rmswapdir(dir);
}

/* Reads the whole guest and compares it with the model, then runs the
   invariant checker: a refused call must have left everything as it was. */
static void intact_at(int line)
{
	static uint8_t buf[64 * 1024];

	for (uint64_t off = 0; off < G_BYTES; off += sizeof(buf)) {
		size_t n = G_BYTES - off < sizeof(buf) ? G_BYTES - off : sizeof(buf);
		int rc = umlmem_read(G, off, buf, n);

		cr_assert_eq(rc, 0, "line %d: read back %llu+%zu: %s: %s", line,
			     (unsigned long long)off, n, umlmem_strerror(rc), umlmem_errmsg());
		for (size_t i = 0; i < n; i++)
			cr_assert_eq(buf[i], model[off + i],
				     "line %d: guest byte %llu is %#x, expected %#x", line,
				     (unsigned long long)(off + i), buf[i], model[off + i]);
	}
	tu_check(H);
}
#define intact() intact_at(__LINE__)

/* A refused call: the documented code, a message for the person, and
   nothing changed. */
#define BAD(call, want) do { \
	int rc_ = (call); \
	cr_assert_eq(rc_, (want), "%s: got %d (%s), expected %d (%s)", #call, rc_, \
		     umlmem_strerror(rc_), (want), umlmem_strerror(want)); \
	cr_assert(umlmem_errmsg() && umlmem_errmsg()[0], "%s: empty umlmem_errmsg()", #call); \
	intact(); \
} while (0)

/* Same, and the message must name what was wrong. */
#define BAD_MSG(call, want, word) do { \
	int rc_ = (call); \
	cr_assert_eq(rc_, (want), "%s: got %d (%s), expected %d (%s)", #call, rc_, \
		     umlmem_strerror(rc_), (want), umlmem_strerror(want)); \
	const char *m_ = umlmem_errmsg(); \
	cr_assert(m_ && strstr(m_, (word)), "%s: umlmem_errmsg() \"%s\" does not name \"%s\"", \
		  #call, m_ ? m_ : "(null)", (word)); \
	intact(); \
} while (0)

TestSuite(api, .init = setup, .fini = teardown);

/* The fixture itself: if this fails, every other api test is void. */
Test(api, fixture_roundtrip)
{
	struct umlmem_stats s;

	intact();
	cr_assert_eq(umlmem_guest_stats(G, &s), 0);
	cr_assert_eq(s.ram_pages, (G_BYTES + PG - 1) / PG);
	cr_assert_gt(s.swapped_pages, 0, "setup wrote more than the budget, yet nothing is in swap");
}

static int host_with(struct umlmem_host_config *cfg)
{
	umlmem_host *h = NULL;
	int rc = umlmem_host_create(cfg, &h);

	if (rc == 0) {
		umlmem_host_destroy(h);
	}
	return rc;
}

static void cfg_default(struct umlmem_host_config *cfg)
{
	umlmem_host_config_init(cfg);
	cfg->resident_bytes = 16 * PG;
	cfg->swap_dir = dir;
}

Test(api, host_create_null)
{
	struct umlmem_host_config cfg;
	umlmem_host *h = NULL;

	cfg_default(&cfg);
	BAD(umlmem_host_create(NULL, &h), -EINVAL);
	BAD(umlmem_host_create(&cfg, NULL), -EINVAL);
	/* NULL is ignored by both destroys. */
	umlmem_host_destroy(NULL);
	umlmem_guest_destroy(NULL);
	intact();
}

Test(api, config_init_defaults)
{
	struct umlmem_host_config hc;
	struct umlmem_guest_config gc;

	/* Garbage first: init must set every field, not only some. */
	memset(&hc, 0xa5, sizeof(hc));
	umlmem_host_config_init(&hc);
	cr_assert_eq(hc.resident_bytes, 0);
	cr_assert_null(hc.swap_dir);
	cr_assert_eq(hc.swap_bytes, 0);
	/* 0 stands for the default, so either spelling of it is right. */
	cr_assert(hc.swap_files == 0 || hc.swap_files == 1, "swap_files %u", hc.swap_files);
	cr_assert_eq(hc.io, UMLMEM_IO_AUTO);
	cr_assert_eq(hc.flags, 0);
	cr_assert(hc.reclaim_batch == 0 || hc.reclaim_batch == 64, "reclaim_batch %u",
		  hc.reclaim_batch);
	/* resident_bytes 0 after init: the caller must set it. */
	BAD(host_with(&hc), -EINVAL);

	memset(&gc, 0xa5, sizeof(gc));
	umlmem_guest_config_init(&gc);
	cr_assert_eq(gc.ram_bytes, 0);
	cr_assert_eq(gc.merge_domain, 0);
	cr_assert_eq(gc.flags, 0);
	cr_assert_null(gc.name);
}

Test(api, resident_bytes)
{
	struct umlmem_host_config cfg;
	long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
	uint64_t phys = (uint64_t)pages * (uint64_t)psz;

	cr_assert_gt(pages, 0);
	cfg_default(&cfg);
	cfg.resident_bytes = 0;
	BAD_MSG(host_with(&cfg), -EINVAL, "resident_bytes");
	cfg.resident_bytes = 1;
	BAD_MSG(host_with(&cfg), -EINVAL, "resident_bytes");
	cfg.resident_bytes = PG - 1;
	BAD_MSG(host_with(&cfg), -EINVAL, "resident_bytes");
	/* Above physical memory: a page more, twice as much, and the absurd. */
	cfg.resident_bytes = phys + PG;
	BAD_MSG(host_with(&cfg), -EINVAL, "resident_bytes");
	cfg.resident_bytes = phys * 2;
	BAD_MSG(host_with(&cfg), -EINVAL, "resident_bytes");
	cfg.resident_bytes = UINT64_MAX;
	BAD_MSG(host_with(&cfg), -EINVAL, "resident_bytes");
	/* One page is the smallest budget, and a budget that is not whole
	   pages is rounded down, not refused. */
	cfg.resident_bytes = PG;
	cr_assert_eq(host_with(&cfg), 0, "one-page budget: %s", umlmem_errmsg());
	cfg.resident_bytes = PG + 100;
	cr_assert_eq(host_with(&cfg), 0, "budget of a page and a bit: %s", umlmem_errmsg());
	intact();
}

Test(api, swap_bytes)
{
	struct umlmem_host_config cfg;

	cfg_default(&cfg);
	cfg.swap_bytes = 1;
	BAD_MSG(host_with(&cfg), -EINVAL, "swap_bytes");
	cfg.swap_bytes = PG - 1;
	BAD_MSG(host_with(&cfg), -EINVAL, "swap_bytes");
	cfg.swap_bytes = PG;
	cr_assert_eq(host_with(&cfg), 0, "one-page swap: %s", umlmem_errmsg());
	cfg.swap_bytes = 0;
	cr_assert_eq(host_with(&cfg), 0, "unlimited swap: %s", umlmem_errmsg());
	intact();
}

Test(api, swap_files)
{
	struct umlmem_host_config cfg;

	cfg_default(&cfg);
	cfg.swap_files = 65;
	BAD_MSG(host_with(&cfg), -EINVAL, "swap_files");
	cfg.swap_files = UINT_MAX;
	BAD_MSG(host_with(&cfg), -EINVAL, "swap_files");
	cfg.swap_files = 64;
	cr_assert_eq(host_with(&cfg), 0, "64 swap files: %s", umlmem_errmsg());
	cfg.swap_files = 1;
	cr_assert_eq(host_with(&cfg), 0, "1 swap file: %s", umlmem_errmsg());
	intact();
}

Test(api, io_engine)
{
	struct umlmem_host_config cfg;
	umlmem_host *h;
	const char *why = NULL;

	cfg_default(&cfg);
	cfg.io = (enum umlmem_io_engine)4;
	BAD(host_with(&cfg), -EINVAL);
	cfg.io = (enum umlmem_io_engine)99;
	BAD(host_with(&cfg), -EINVAL);
	cfg.io = (enum umlmem_io_engine)-1;
	BAD(host_with(&cfg), -EINVAL);

	/* The synchronous engine runs everywhere, and is what the host says. */
	cfg.io = UMLMEM_IO_SYNC;
	cr_assert_eq(umlmem_host_create(&cfg, &h), 0, "sync engine: %s", umlmem_errmsg());
	cr_assert_eq(umlmem_host_io_engine(h, NULL), UMLMEM_IO_SYNC);
	umlmem_host_destroy(h);

	/* AUTO resolves to a real engine, and why is a string. */
	cfg.io = UMLMEM_IO_AUTO;
	cr_assert_eq(umlmem_host_create(&cfg, &h), 0, "auto engine: %s", umlmem_errmsg());
	enum umlmem_io_engine e = umlmem_host_io_engine(h, &why);
	cr_assert(e == UMLMEM_IO_URING || e == UMLMEM_IO_AIO || e == UMLMEM_IO_SYNC,
		  "AUTO resolved to %d", (int)e);
	cr_assert_not_null(why);
	umlmem_host_destroy(h);

	/* The others either work or say they cannot run here. */
	for (int k = UMLMEM_IO_URING; k <= UMLMEM_IO_AIO; k++) {
		cfg.io = (enum umlmem_io_engine)k;
		int rc = umlmem_host_create(&cfg, &h);
		cr_assert(rc == 0 || rc == -ENOTSUP, "engine %d: %d (%s)", k, rc, umlmem_errmsg());
		if (rc == 0) {
			cr_assert_eq(umlmem_host_io_engine(h, NULL), (enum umlmem_io_engine)k);
			umlmem_host_destroy(h);
		} else {
			cr_assert(umlmem_errmsg()[0], "engine %d refused without a message", k);
		}
	}
	intact();
}

Test(api, host_flags)
{
	struct umlmem_host_config cfg;

	cfg_default(&cfg);
	cfg.flags = 0x100;
	BAD_MSG(host_with(&cfg), -EINVAL, "flags");
	cfg.flags = 0x80000000u;
	BAD_MSG(host_with(&cfg), -EINVAL, "flags");
	cfg.flags = UMLMEM_BACKGROUND | 0x40;
	BAD_MSG(host_with(&cfg), -EINVAL, "flags");
	intact();
}

/* The message must name the directory: by the field or by its path. */
#define BAD_DIR(call, want, path) do { \
	int rc_ = (call); \
	cr_assert_eq(rc_, (want), "%s: got %d (%s), expected %d (%s)", #call, rc_, \
		     umlmem_strerror(rc_), (want), umlmem_strerror(want)); \
	const char *m_ = umlmem_errmsg(); \
	cr_assert(m_ && (strstr(m_, "swap_dir") || strstr(m_, (path))), \
		  "umlmem_errmsg() \"%s\" names neither swap_dir nor %s", m_ ? m_ : "(null)", (path)); \
	intact(); \
} while (0)

Test(api, swap_dir_missing)
{
	struct umlmem_host_config cfg;
	char path[128];

	snprintf(path, sizeof(path), "%s/no-such-dir", dir);
	cfg_default(&cfg);
	cfg.swap_dir = path;
	BAD_DIR(host_with(&cfg), -ENOENT, path);
	/* Nothing was created on the way. */
	struct stat st;
	cr_assert_neq(stat(path, &st), 0, "a refused create left %s behind", path);
}

Test(api, swap_dir_regular_file)
{
	struct umlmem_host_config cfg;
	char path[128];

	snprintf(path, sizeof(path), "%s/plain-file", dir);
	FILE *f = fopen(path, "w");
	cr_assert_not_null(f);
	fputs("not a directory\n", f);
	fclose(f);
	cfg_default(&cfg);
	cfg.swap_dir = path;
	BAD_DIR(host_with(&cfg), -ENOTDIR, path);
	unlink(path);
}

Test(api, swap_dir_not_writable)
{
	struct umlmem_host_config cfg;
	umlmem_host *h = NULL;

	/* /proc takes no files, not even from root. */
	cfg_default(&cfg);
	cfg.swap_dir = "/proc";
	int rc = umlmem_host_create(&cfg, &h);
	cr_assert_lt(rc, 0, "a host with its swap in /proc was created");
	cr_assert_gt(rc, -4096, "not a negative errno: %d", rc);
	const char *m = umlmem_errmsg();
	cr_assert(m && (strstr(m, "swap_dir") || strstr(m, "/proc")),
		  "umlmem_errmsg() \"%s\" names neither swap_dir nor /proc", m ? m : "(null)");
	intact();
}

static int guest_with(umlmem_host *h, uint64_t bytes, unsigned flags)
{
	struct umlmem_guest_config cfg;
	umlmem_guest *g = NULL;
	int rc;

	umlmem_guest_config_init(&cfg);
	cfg.ram_bytes = bytes;
	cfg.flags = flags;
	rc = umlmem_guest_create(h, &cfg, &g);
	if (rc == 0)
		umlmem_guest_destroy(g);
	return rc;
}

Test(api, guest_create)
{
	struct umlmem_guest_config cfg;
	umlmem_guest *g = NULL;
	struct umlmem_stats s;

	umlmem_guest_config_init(&cfg);
	cfg.ram_bytes = PG;
	BAD(umlmem_guest_create(NULL, &cfg, &g), -EINVAL);
	BAD(umlmem_guest_create(H, NULL, &g), -EINVAL);
	BAD(umlmem_guest_create(H, &cfg, NULL), -EINVAL);

	BAD_MSG(guest_with(H, 0, 0), -EINVAL, "ram_bytes");
	BAD_MSG(guest_with(H, UMLMEM_MAX_GUEST_BYTES + 1, 0), -EINVAL, "ram_bytes");
	BAD_MSG(guest_with(H, UMLMEM_MAX_GUEST_BYTES + PG, 0), -EINVAL, "ram_bytes");
	BAD_MSG(guest_with(H, UINT64_MAX, 0), -EINVAL, "ram_bytes");
	BAD_MSG(guest_with(H, PG, 0x100), -EINVAL, "flags");
	BAD_MSG(guest_with(H, PG, 0x80000000u), -EINVAL, "flags");

	/* A refused create leaves the host's nominal RAM as it was. */
	cr_assert_eq(umlmem_host_stats(H, &s), 0);
	cr_assert_eq(s.ram_pages, (G_BYTES + PG - 1) / PG);

	/* Both limits are accepted: 1 byte and exactly 128 TiB. */
	cr_assert_eq(guest_with(H, 1, 0), 0, "1-byte guest: %s", umlmem_errmsg());
	cr_assert_eq(guest_with(H, UMLMEM_MAX_GUEST_BYTES, 0), 0, "128 TiB guest: %s",
		     umlmem_errmsg());
	cr_assert_eq(guest_with(H, PG, UMLMEM_GUEST_NOMERGE), 0, "NOMERGE: %s", umlmem_errmsg());

	/* A long name is cut, not refused. */
	char name[200];
	memset(name, 'n', sizeof(name) - 1);
	name[sizeof(name) - 1] = 0;
	cfg.name = name;
	cr_assert_eq(umlmem_guest_create(H, &cfg, &g), 0, "long name: %s", umlmem_errmsg());
	umlmem_guest_destroy(g);
	intact();
}

Test(api, read_write_null)
{
	uint8_t b[16] = { 0 };

	BAD(umlmem_read(NULL, 0, b, sizeof(b)), -EINVAL);
	BAD(umlmem_write(NULL, 0, b, sizeof(b)), -EINVAL);
	BAD(umlmem_read(G, 0, NULL, 1), -EINVAL);
	BAD(umlmem_write(G, 0, NULL, 1), -EINVAL);
	BAD(umlmem_read(NULL, 0, NULL, 0), -EINVAL);
	/* NULL with length 0 is no transfer at all, and allowed. */
	cr_assert_eq(umlmem_read(G, 0, NULL, 0), 0, "%s", umlmem_errmsg());
	cr_assert_eq(umlmem_write(G, 0, NULL, 0), 0, "%s", umlmem_errmsg());
	intact();
}

Test(api, read_write_range)
{
	uint8_t b[64], junk[64];
	const uint64_t end = G_BYTES;

	tu_fill(junk, sizeof(junk), 99);
	/* A read refused with -EFAULT copies nothing: the buffer keeps its
	   bytes even where the range was inside the guest. */
	memset(b, 0xee, sizeof(b));
	BAD(umlmem_read(G, end - 10, b, 11), -EFAULT);
	for (size_t i = 0; i < sizeof(b); i++)
		cr_assert_eq(b[i], 0xee, "refused read copied byte %zu", i);

	/* A refused write changes nothing (intact() compares every byte,
	   including the 10 in range here). */
	BAD(umlmem_write(G, end - 10, junk, 11), -EFAULT);
	BAD(umlmem_write(G, end - 1, junk, 2), -EFAULT);
	BAD(umlmem_write(G, end, junk, 1), -EFAULT);
	BAD(umlmem_read(G, end, b, 1), -EFAULT);
	BAD(umlmem_write(G, 0, junk, (size_t)end + 1), -EFAULT);
	BAD(umlmem_read(G, UMLMEM_MAX_GUEST_BYTES, b, 1), -EFAULT);
	/* gpa + len wraps around: must not pass as a small address. */
	BAD(umlmem_write(G, UINT64_MAX - 5, junk, 10), -EFAULT);
	BAD(umlmem_read(G, UINT64_MAX - 5, b, 10), -EFAULT);
	BAD(umlmem_write(G, UINT64_MAX, junk, 1), -EFAULT);
	BAD(umlmem_read(G, UINT64_MAX, b, 1), -EFAULT);
	BAD(umlmem_write(G, 1, junk, SIZE_MAX), -EFAULT);
	BAD(umlmem_read(G, 1, b, SIZE_MAX), -EFAULT);

	/* The exact limits are fine: the last byte, and nothing at the end. */
	cr_assert_eq(umlmem_read(G, end - 1, b, 1), 0, "%s", umlmem_errmsg());
	cr_assert_eq(b[0], model[end - 1]);
	cr_assert_eq(umlmem_read(G, end, b, 0), 0, "len 0 at the end: %s", umlmem_errmsg());
	cr_assert_eq(umlmem_write(G, end, junk, 0), 0, "len 0 at the end: %s", umlmem_errmsg());
	intact();
}

Test(api, pin_errors)
{
	void *p = (void *)0x1;

	BAD(umlmem_pin(NULL, 0, UMLMEM_READ, &p), -EINVAL);
	BAD(umlmem_pin(G, 0, UMLMEM_READ, NULL), -EINVAL);
	BAD(umlmem_pin(G, 1, UMLMEM_READ, &p), -EINVAL);
	BAD(umlmem_pin(G, PG - 1, UMLMEM_WRITE, &p), -EINVAL);
	BAD(umlmem_pin(G, PG + 777, UMLMEM_READ, &p), -EINVAL);
	BAD(umlmem_pin(G, 0, 0, &p), -EINVAL);
	BAD(umlmem_pin(G, 0, 0x4, &p), -EINVAL);
	BAD(umlmem_pin(G, 0, UMLMEM_READ | UMLMEM_WRITE | 0x4, &p), -EINVAL);
	BAD(umlmem_pin(G, 0, 0x80000000u, &p), -EINVAL);
	/* Aligned but outside: the first page after the (partial) last one. */
	uint64_t past = (G_BYTES + PG - 1) / PG * PG;
	BAD(umlmem_pin(G, past, UMLMEM_READ, &p), -EFAULT);
	BAD(umlmem_pin(G, UMLMEM_MAX_GUEST_BYTES, UMLMEM_READ, &p), -EFAULT);
	BAD(umlmem_pin(G, UINT64_MAX & ~(uint64_t)(PG - 1), UMLMEM_READ, &p), -EFAULT);

	/* None of those left a pin behind. */
	BAD(umlmem_unpin(G, 0), -EINVAL);

	/* In a guest of whole pages the first page outside starts exactly
	   at ram_bytes. */
	umlmem_guest *g2 = tu_guest(H, 16 * PG);
	BAD(umlmem_pin(g2, 16 * PG, UMLMEM_READ, &p), -EFAULT);
	BAD(umlmem_unpin(g2, 16 * PG), -EFAULT);
	cr_assert_eq(umlmem_pin(g2, 15 * PG, UMLMEM_READ, &p), 0, "%s", umlmem_errmsg());
	cr_assert_eq(umlmem_unpin(g2, 15 * PG), 0);
	umlmem_guest_destroy(g2);

	/* The partial last page pins; READ|WRITE is a valid combination. */
	cr_assert_eq(umlmem_pin(G, past - PG, UMLMEM_READ | UMLMEM_WRITE, &p), 0, "%s",
		     umlmem_errmsg());
	cr_assert_not_null(p);
	cr_assert_eq(memcmp((uint8_t *)p + (G_BYTES - 50) % PG, model + G_BYTES - 50, 50), 0,
		     "pinned last page does not hold the last bytes written");
	cr_assert_eq(umlmem_unpin(G, past - PG), 0);
	intact();
}

Test(api, unpin_errors)
{
	void *p;

	BAD(umlmem_unpin(NULL, 0), -EINVAL);
	/* Never pinned: a written page, a swapped one, a never-written one. */
	BAD(umlmem_unpin(G, 0), -EINVAL);
	BAD(umlmem_unpin(G, 400 * 1024), -EINVAL);
	BAD(umlmem_unpin(G, 480 * 1024), -EINVAL);
	BAD(umlmem_unpin(G, 3), -EINVAL);
	BAD(umlmem_unpin(G, (G_BYTES + PG - 1) / PG * PG), -EFAULT);
	BAD(umlmem_unpin(G, UINT64_MAX & ~(uint64_t)(PG - 1)), -EFAULT);

	/* One pin, two unpins: the second is refused and nothing breaks. */
	cr_assert_eq(umlmem_pin(G, 8 * PG, UMLMEM_READ, &p), 0, "%s", umlmem_errmsg());
	cr_assert_eq(umlmem_unpin(G, 8 * PG), 0);
	BAD(umlmem_unpin(G, 8 * PG), -EINVAL);
	/* A misaligned unpin of a pinned page is refused and keeps the pin. */
	cr_assert_eq(umlmem_pin(G, 9 * PG, UMLMEM_READ, &p), 0, "%s", umlmem_errmsg());
	BAD(umlmem_unpin(G, 9 * PG + 1), -EINVAL);
	BAD(umlmem_discard(G, 9 * PG, PG), -EBUSY);
	cr_assert_eq(umlmem_unpin(G, 9 * PG), 0, "%s", umlmem_errmsg());
	BAD(umlmem_unpin(G, 9 * PG), -EINVAL);
}

Test(api, discard_errors)
{
	const uint64_t npg = (G_BYTES + PG - 1) / PG;

	BAD(umlmem_discard(NULL, 0, PG), -EINVAL);
	BAD(umlmem_discard(G, 1, PG), -EINVAL);
	BAD(umlmem_discard(G, PG + 100, PG), -EINVAL);
	BAD(umlmem_discard(G, 0, 100), -EINVAL);
	BAD(umlmem_discard(G, 0, PG + 1), -EINVAL);
	/* Past the end: one page too many, starting outside, wrapping. */
	BAD(umlmem_discard(G, 0, (npg + 1) * PG), -EFAULT);
	BAD(umlmem_discard(G, npg * PG, PG), -EFAULT);
	BAD(umlmem_discard(G, UMLMEM_MAX_GUEST_BYTES, PG), -EFAULT);
	BAD(umlmem_discard(G, PG, UINT64_MAX & ~(uint64_t)(PG - 1)), -EFAULT);
	BAD(umlmem_discard(G, UINT64_MAX & ~(uint64_t)(PG - 1), 2 * PG), -EFAULT);
	/* len 0 does nothing, also at the end of a guest of whole pages. */
	cr_assert_eq(umlmem_discard(G, 0, 0), 0, "%s", umlmem_errmsg());
	cr_assert_eq(umlmem_discard(G, 8 * PG, 0), 0, "%s", umlmem_errmsg());
	umlmem_guest *g2 = tu_guest(H, 16 * PG);
	cr_assert_eq(umlmem_discard(g2, 16 * PG, 0), 0, "len 0 at the end: %s", umlmem_errmsg());
	BAD(umlmem_discard(g2, 17 * PG, PG), -EFAULT);
	cr_assert_eq(umlmem_discard(g2, 15 * PG, PG), 0, "last page: %s", umlmem_errmsg());
	umlmem_guest_destroy(g2);
	intact();

	/* A length that is not whole pages is fine when it reaches the exact
	   end of the guest: the partial last page reads as zeros after it. */
	cr_assert_eq(umlmem_discard(G, (npg - 1) * PG, G_BYTES - (npg - 1) * PG), 0, "%s",
		     umlmem_errmsg());
	memset(model + (npg - 1) * PG, 0, G_BYTES - (npg - 1) * PG);
	intact();
}

Test(api, discard_pinned_busy)
{
	void *p;
	struct umlmem_stats before, after;

	/* Pages 1..4 hold data (the 300 KiB write covers them); pin page 3
	   and discard 1..5: refused, and none of the five pages is zeroed,
	   not even those before the pinned one. */
	cr_assert_eq(umlmem_pin(G, 3 * PG, UMLMEM_READ, &p), 0, "%s", umlmem_errmsg());
	cr_assert_eq(umlmem_guest_stats(G, &before), 0);
	BAD(umlmem_discard(G, PG, 5 * PG), -EBUSY);
	BAD(umlmem_discard(G, 0, (G_BYTES + PG - 1) / PG * PG - PG), -EBUSY);
	BAD(umlmem_discard(G, 3 * PG, PG), -EBUSY);
	cr_assert_eq(umlmem_guest_stats(G, &after), 0);
	cr_assert_eq(after.zero_pages, before.zero_pages, "refused discard freed %lld pages",
		     (long long)(after.zero_pages - before.zero_pages));
	cr_assert_eq(memcmp(p, model + 3 * PG, PG), 0, "pinned page changed");
	cr_assert_eq(umlmem_unpin(G, 3 * PG), 0);

	/* Unpinned, the same discard goes through and zeroes exactly 1..5. */
	cr_assert_eq(umlmem_discard(G, PG, 5 * PG), 0, "%s", umlmem_errmsg());
	memset(model + PG, 0, 5 * PG);
	intact();
}

Test(api, null_host_calls)
{
	struct umlmem_stats s;
	uint64_t n = 12345;

	BAD(umlmem_reclaim(NULL, 1, &n), -EINVAL);
	BAD(umlmem_dedup_scan(NULL, 1, &n), -EINVAL);
	BAD(umlmem_host_stats(NULL, &s), -EINVAL);
	BAD(umlmem_host_stats(H, NULL), -EINVAL);
	BAD(umlmem_guest_stats(NULL, &s), -EINVAL);
	BAD(umlmem_guest_stats(G, NULL), -EINVAL);
	/* The out-parameters may be NULL. */
	cr_assert_eq(umlmem_reclaim(H, 1, NULL), 0, "%s", umlmem_errmsg());
	cr_assert_eq(umlmem_dedup_scan(H, 1, NULL), 0, "%s", umlmem_errmsg());
	cr_assert_eq(umlmem_reclaim(H, 0, &n), 0, "%s", umlmem_errmsg());
	cr_assert_eq(n, 0, "reclaim of 0 pages evicted %llu", (unsigned long long)n);
	intact();
}

Test(api, strerror_names)
{
	static const int codes[] = {
		-EINVAL, -ENOMEM, -ENOSPC, -EIO, -EFAULT, -EBUSY, -ENOENT, -ENOTDIR,
		-EACCES, -EROFS, -ENOTSUP, -EOVERFLOW, -EUCLEAN,
	};
	const size_t n = sizeof(codes) / sizeof(codes[0]);
	const char *names[sizeof(codes) / sizeof(codes[0])];
	const char *unknown = umlmem_strerror(-123456);
	const char *ok = umlmem_strerror(0);

	cr_assert_not_null(unknown);
	cr_assert_not_null(ok);
	cr_assert(strcasestr(ok, "success") || strcasestr(ok, "ok"),
		  "umlmem_strerror(0) is \"%s\"", ok);
	for (size_t i = 0; i < n; i++) {
		names[i] = umlmem_strerror(codes[i]);
		cr_assert(names[i] && names[i][0], "umlmem_strerror(%d) empty", codes[i]);
		cr_assert_str_neq(names[i], unknown, "umlmem_strerror(%d) is the generic \"%s\"",
				  codes[i], unknown);
		cr_assert_str_neq(names[i], ok, "umlmem_strerror(%d) reads as success", codes[i]);
		for (size_t j = 0; j < i; j++)
			cr_assert_str_neq(names[i], names[j], "codes %d and %d share the name \"%s\"",
					  codes[i], codes[j], names[i]);
	}
	/* Anything else still gets a string. */
	static const int odd[] = { -123456, 123456, 1, INT_MIN, INT_MAX, -4095, -4096 };
	for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++)
		cr_assert_not_null(umlmem_strerror(odd[i]), "umlmem_strerror(%d) NULL", odd[i]);
}

struct errmsg_thread {
	char before[256];
	char after[256];
	int rc;
};

static void *errmsg_thread(void *arg)
{
	struct errmsg_thread *t = arg;
	const char *m = umlmem_errmsg();

	snprintf(t->before, sizeof(t->before), "%s", m ? m : "(null)");
	t->rc = umlmem_read(G, G_BYTES, t->after, 1);
	m = umlmem_errmsg();
	snprintf(t->after, sizeof(t->after), "%s", m ? m : "(null)");
	return NULL;
}

Test(api, errmsg_per_thread)
{
	struct errmsg_thread t;
	pthread_t th;
	char mine[256];

	/* This thread fails one way (and makes no umlmem call after it, as
	   the message only lasts until the next one) ... */
	cr_assert_eq(guest_with(H, 0, 0), -EINVAL);
	snprintf(mine, sizeof(mine), "%s", umlmem_errmsg());
	cr_assert(mine[0]);
	/* ... a fresh thread has no message, fails another way ... */
	cr_assert_eq(pthread_create(&th, NULL, errmsg_thread, &t), 0);
	cr_assert_eq(pthread_join(th, NULL), 0);
	cr_assert_str_eq(t.before, "", "a fresh thread's umlmem_errmsg() is \"%s\"", t.before);
	cr_assert_eq(t.rc, -EFAULT);
	cr_assert(t.after[0], "no message after the thread's -EFAULT");
	cr_assert_str_neq(t.after, mine, "both failures gave the same message \"%s\"", mine);
	/* ... and this thread's message is still its own. */
	cr_assert_str_eq(umlmem_errmsg(), mine, "another thread's failure replaced this "
			 "thread's message: \"%s\"", umlmem_errmsg());
	intact();
}
