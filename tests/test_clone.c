/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * umlmem_guest_clone: a clone reads as its source did at the call, and the
 * two stay independent whatever happens next to either: writes, swap,
 * merging, pins, discard, destroy, native stores, further clones, the
 * sharing cap.
 *
 * The oracle is a plain byte copy of every guest: a clone copies its
 * source's bytes in the model, every write goes to both the library and the
 * model, and every read must match the model. Frame counts are derived from
 * what the test did (pages written, clones made, the cap), never from the
 * library's other counters. host_check runs after every step of the random
 * runs.
 *
 * The random tests print their seed on failure; UMLMEM_TEST_SEED=<seed>
 * replays a run. UMLMEM_TEST_SCALE=valgrind runs a tenth of their steps.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

#define PG UMLMEM_PAGE_SIZE
#define MAXG 24

struct tg {
	umlmem_guest *g;
	uint8_t *mem;           /* what the guest must read as */
	uint64_t bytes;
};

static char dir[64];
static umlmem_host *H;
static struct tg T[MAXG];
static uint64_t Seed;
static char Sd[64];

static void setup(void)
{
	tu_mkswapdir(dir);
	H = NULL;
	memset(T, 0, sizeof(T));
	Seed = 0;
	Sd[0] = '\0';
}

static void teardown(void)
{
	umlmem_host_destroy(H);
	H = NULL;
	for (int i = 0; i < MAXG; i++)
		free(T[i].mem);
	memset(T, 0, sizeof(T));
	tu_rmswapdir(dir);
}

TestSuite(clone, .init = setup, .fini = teardown);

#define SCHK(cond, fmt, ...) cr_assert(cond, "%s" fmt, Sd, ##__VA_ARGS__)

static uint64_t pick_seed(void)
{
	const char *s = getenv("UMLMEM_TEST_SEED");
	struct timespec ts;

	if (s && *s)
		Seed = strtoull(s, NULL, 0);
	else {
		clock_gettime(CLOCK_REALTIME, &ts);
		Seed = (uint64_t)ts.tv_sec * 1000000007ull ^ (uint64_t)ts.tv_nsec ^
		       ((uint64_t)getpid() << 32);
	}
	snprintf(Sd, sizeof(Sd), "[UMLMEM_TEST_SEED=%" PRIu64 "] ", Seed);
	return Seed;
}

static umlmem_host *host_cfg(uint64_t budget, uint32_t max_sharing)
{
	struct umlmem_host_config cfg;
	umlmem_host *h = NULL;
	int rc;

	umlmem_host_config_init(&cfg);
	cfg.resident_bytes = budget;
	cfg.swap_dir = dir;
	cfg.max_sharing = max_sharing;
	rc = umlmem_host_create(&cfg, &h);
	cr_assert_eq(rc, 0, "umlmem_host_create: %s", umlmem_errmsg());
	return h;
}

static void mk(int i, uint64_t bytes)
{
	T[i].g = tu_guest(H, bytes);
	T[i].bytes = bytes;
	T[i].mem = calloc(1, bytes);
	cr_assert_not_null(T[i].mem);
}

/* T[d] becomes a clone of T[s], in the library and in the model. */
static void clone_into(int d, int s)
{
	int rc = umlmem_guest_clone(T[s].g, NULL, &T[d].g);

	SCHK(rc == 0, "umlmem_guest_clone: %s: %s", umlmem_strerror(rc), umlmem_errmsg());
	T[d].bytes = T[s].bytes;
	T[d].mem = malloc(T[s].bytes);
	cr_assert_not_null(T[d].mem);
	memcpy(T[d].mem, T[s].mem, T[s].bytes);
}

static void drop(int i)
{
	umlmem_guest_destroy(T[i].g);
	free(T[i].mem);
	T[i] = (struct tg){ 0 };
}

static void wr(int i, uint64_t off, const void *buf, size_t len)
{
	int rc = umlmem_write(T[i].g, off, buf, len);

	SCHK(rc == 0, "write guest %d at %" PRIu64 ": %s", i, off, umlmem_errmsg());
	memcpy(T[i].mem + off, buf, len);
}

static void verify(int i)
{
	uint8_t *buf = malloc(T[i].bytes);
	int rc;

	cr_assert_not_null(buf);
	rc = umlmem_read(T[i].g, 0, buf, T[i].bytes);
	SCHK(rc == 0, "read guest %d: %s", i, umlmem_errmsg());
	for (uint64_t p = 0; p < T[i].bytes; p += PG)
		SCHK(!memcmp(buf + p, T[i].mem + p, T[i].bytes - p < PG ? T[i].bytes - p : PG),
		     "guest %d page %" PRIu64
		     " differs from the model", i, p / PG);
	free(buf);
}

static void verify_all(void)
{
	for (int i = 0; i < MAXG; i++)
		if (T[i].g)
			verify(i);
}

static struct umlmem_stats hstats(void)
{
	struct umlmem_stats s;

	cr_assert_eq(umlmem_host_stats(H, &s), 0);
	return s;
}

/* ---- the call itself ----------------------------------------------------- */

Test(clone, shares_everything_and_diverges)
{
	const uint64_t n = 64;
	uint8_t page[PG];
	struct umlmem_stats s0, s1, gs;

	H = tu_host(dir, 4 * TU_MiB, 0);
	mk(0, 1 * TU_MiB);
	for (uint64_t p = 0; p < n; p++) {
		tu_fill(page, PG, p + 1);
		wr(0, p * 2 * PG, page, PG);        /* every other page */
	}
	s0 = hstats();
	clone_into(1, 0);
	s1 = hstats();
	/* nothing copied: the same frames, each now shared by two pages */
	cr_assert_eq(s1.frames_used, s0.frames_used);
	cr_assert_eq(s1.shared_frames, n);
	cr_assert_eq(s1.sharing_pages, n);
	cr_assert_eq(umlmem_guest_stats(T[1].g, &gs), 0);
	cr_assert_eq(gs.resident_pages, n);
	cr_assert_eq(gs.zero_pages, 1 * TU_MiB / PG - n);
	tu_check(H);
	verify(0);
	verify(1);

	/* a write to either copies one page and is seen by that one only */
	memset(page, 0xa5, PG);
	wr(1, 2 * PG, page, 100);
	wr(0, 4 * PG, page, PG);
	wr(0, 1 * PG, page, 10);                    /* a ZERO page of both */
	tu_check(H);
	verify(0);
	verify(1);
	s1 = hstats();
	cr_assert_eq(s1.shared_frames, n - 2);
	cr_assert_eq(s1.cow_breaks, 2);

	/* the source goes first; the clone keeps every byte */
	drop(0);
	tu_check(H);
	verify(1);
	cr_assert_eq(hstats().shared_frames, 0);
	cr_assert_eq(hstats().frames_used, n);      /* n - 1 it shared, one it copied */
}

Test(clone, stored_pages_and_swap_cache)
{
	const uint64_t n = 96;
	uint8_t page[PG];
	uint64_t ev;

	/* 64 frames: most of the source lives in swap when it is cloned */
	H = tu_host(dir, 64 * PG, 0);
	mk(0, n * PG);
	for (uint64_t p = 0; p < n; p++) {
		tu_fill(page, PG, 1000 + p);
		wr(0, p * PG, page, PG);
	}
	cr_assert_eq(umlmem_reclaim(H, 64, &ev), 0, "%s", umlmem_errmsg());
	clone_into(1, 0);
	clone_into(2, 1);
	tu_check(H);
	/* the clone reads each stored page in once; its sharers then find
	   it in the swap cache */
	verify(2);
	tu_check(H);
	verify(0);
	verify(1);
	tu_check(H);
	for (uint64_t p = 0; p < n; p += 3) {
		memset(page, (int)p, PG);
		wr((int)(p % 3), p * PG, page, PG / 2);
	}
	tu_check(H);
	verify_all();
	drop(1);
	tu_check(H);
	verify_all();
}

Test(clone, config_and_errors)
{
	struct umlmem_guest_config cfg;
	umlmem_guest *c = NULL;
	struct umlmem_stats gs;
	uint8_t page[PG];

	H = tu_host(dir, 1 * TU_MiB, 0);
	mk(0, 10 * PG + 100);                     /* a partial last page */
	memset(page, 7, PG);
	wr(0, 10 * PG, page, 100);

	cr_assert_eq(umlmem_guest_clone(NULL, NULL, &c), -EINVAL);
	cr_assert(strstr(umlmem_errmsg(), "src"), "%s", umlmem_errmsg());
	cr_assert_eq(umlmem_guest_clone(T[0].g, NULL, NULL), -EINVAL);
	umlmem_guest_config_init(&cfg);
	cfg.ram_bytes = 11 * PG;
	cr_assert_eq(umlmem_guest_clone(T[0].g, &cfg, &c), -EINVAL);
	cr_assert_null(c);
	cr_assert(strstr(umlmem_errmsg(), "ram_bytes"), "%s", umlmem_errmsg());
	cfg.ram_bytes = 0;
	cfg.flags = 0x80;
	cr_assert_eq(umlmem_guest_clone(T[0].g, &cfg, &c), -EINVAL);
	cr_assert(strstr(umlmem_errmsg(), "flags"), "%s", umlmem_errmsg());
	cr_assert_eq(umlmem_guest_clone_sized(T[0].g, &cfg, 8, &c), -EINVAL);
	tu_check(H);

	/* a config: its size (0 here), its flags and name */
	cfg.flags = UMLMEM_GUEST_NOMERGE;
	cfg.name = "twin";
	cr_assert_eq(umlmem_guest_clone(T[0].g, &cfg, &T[1].g), 0, "%s", umlmem_errmsg());
	T[1].bytes = T[0].bytes;
	T[1].mem = malloc(T[1].bytes);
	memcpy(T[1].mem, T[0].mem, T[1].bytes);
	cr_assert_eq(umlmem_guest_stats(T[1].g, &gs), 0);
	cr_assert_eq(gs.ram_pages, 11);
	verify(1);
	/* reads and writes stop at the source's exact size */
	cr_assert_eq(umlmem_read(T[1].g, 10 * PG + 100, page, 1), -EFAULT);
	cr_assert_eq(umlmem_guest_clone(T[1].g, &cfg, &c), 0);   /* ram_bytes 0 */
	umlmem_guest_destroy(c);
	tu_check(H);
}

/* The 300th clone: the cap holds, no page is lost, and the frames are the
   fewest the cap allows: ceil(guests / cap) per page. */
Test(clone, three_hundred_clones)
{
	const uint64_t n = 16;
	const unsigned clones = 300;
	umlmem_guest **c = calloc(clones, sizeof(*c));
	uint8_t page[PG], got[PG];
	struct umlmem_stats s;

	cr_assert_not_null(c);
	H = tu_host(dir, 4 * TU_MiB, 0);
	mk(0, n * PG);
	for (uint64_t p = 0; p < n; p++) {
		tu_fill(page, PG, 77 + p);
		wr(0, p * PG, page, PG);
	}
	for (unsigned i = 0; i < clones; i++) {
		int rc = umlmem_guest_clone(T[0].g, NULL, &c[i]);

		cr_assert_eq(rc, 0, "clone %u: %s", i + 1, umlmem_errmsg());
		if (i % 37 == 0)
			tu_check(H);
	}
	tu_check(H);
	s = hstats();
	cr_assert_eq(s.frames_used, n * ((clones + 1 + 255) / 256),
		     "%" PRIu64 " frames for %u sharers of %" PRIu64 " pages",
		     s.frames_used, clones + 1, n);
	cr_assert_eq(s.resident_pages, n * (clones + 1));
	for (unsigned i = 0; i < clones; i += 13)
		for (uint64_t p = 0; p < n; p++) {
			cr_assert_eq(umlmem_read(c[i], p * PG, got, PG), 0);
			cr_assert(!memcmp(got, T[0].mem + p * PG, PG), "clone %u page %" PRIu64,
				  i, p);
		}
	/* clones of clones, each on a frame that may be full */
	for (unsigned i = 0; i < 20; i++) {
		umlmem_guest *cc;
		int rc = umlmem_guest_clone(c[i * 14], NULL, &cc);

		cr_assert_eq(rc, 0, "%s", umlmem_errmsg());
		umlmem_guest_destroy(c[i * 14]);
		c[i * 14] = cc;
	}
	tu_check(H);
	/* one write to the last clone is its own */
	memset(page, 1, PG);
	cr_assert_eq(umlmem_write(c[clones - 1], 0, page, 1), 0);
	cr_assert_eq(umlmem_read(c[clones - 2], 0, got, PG), 0);
	cr_assert(!memcmp(got, T[0].mem, PG));
	for (unsigned i = 0; i < clones; i += 2)
		umlmem_guest_destroy(c[i]);
	tu_check(H);
	verify(0);
	for (unsigned i = 1; i < clones; i += 2)
		umlmem_guest_destroy(c[i]);
	tu_check(H);
	verify(0);
	free(c);
}

/* Pinned pages and a full budget: copies are needed, and room is made. */
Test(clone, pins_cap_and_a_full_budget)
{
	const uint64_t n = 40;
	uint8_t page[PG];
	void *pin;

	/* 64 frames, cap 2: the second clone of the same guest needs a copy of
	   every page, which only eviction can make room for */
	H = host_cfg(64 * PG, 2);
	mk(0, n * PG);
	for (uint64_t p = 0; p < n; p++) {
		tu_fill(page, PG, 5 + p);
		wr(0, p * PG, page, PG);
	}
	cr_assert_eq(umlmem_pin(T[0].g, 3 * PG, UMLMEM_READ | UMLMEM_WRITE, &pin), 0);
	clone_into(1, 0);
	tu_check(H);
	clone_into(2, 0);
	tu_check(H);
	clone_into(3, 2);
	tu_check(H);
	/* the pinned page is the source's: a store through the pin is not the
	   clones' */
	memset(pin, 0xee, 16);
	memset(T[0].mem + 3 * PG, 0xee, 16);
	cr_assert_eq(umlmem_unpin(T[0].g, 3 * PG), 0);
	verify_all();
	tu_check(H);
}

/* Copies that no frame can be found for: the call fails, says why, and
   leaves the source and the host as they were. */
Test(clone, no_frame_for_the_copies)
{
	const uint64_t n = 16;
	umlmem_guest *c = (umlmem_guest *)&c;
	struct umlmem_stats s0, s1;
	uint8_t page[PG];
	void *pin;
	int rc;

	H = tu_host(dir, n * PG, 0);
	mk(0, n * PG);
	for (uint64_t p = 0; p < n; p++) {
		tu_fill(page, PG, 300 + p);
		wr(0, p * PG, page, PG);
		cr_assert_eq(umlmem_pin(T[0].g, p * PG, UMLMEM_READ, &pin), 0);
	}
	s0 = hstats();
	rc = umlmem_guest_clone(T[0].g, NULL, &c);
	cr_assert_eq(rc, -ENOMEM, "%d: %s", rc, umlmem_errmsg());
	cr_assert_null(c);
	cr_assert(strstr(umlmem_errmsg(), "no free frame"), "%s", umlmem_errmsg());
	s1 = hstats();
	cr_assert_eq(s1.ram_pages, s0.ram_pages);
	cr_assert_eq(s1.frames_used, s0.frames_used);
	tu_check(H);
	verify(0);
	/* unpinned, the pages are shared: nothing needs a frame */
	for (uint64_t p = 0; p < n; p++)
		cr_assert_eq(umlmem_unpin(T[0].g, p * PG), 0);
	clone_into(1, 0);
	tu_check(H);
	verify_all();
}

/* ---- native views -------------------------------------------------------- */

Test(clone, native_stores_after_the_clone_are_the_sources)
{
	const uint64_t n = 32;
	uint8_t *v, *w;
	int rc;

	if (tu_valgrind())
		cr_skip_test("userfaultfd does not run under valgrind");
	H = tu_host(dir, 4 * TU_MiB, 0);
	mk(0, n * PG);
	rc = umlmem_guest_map(T[0].g, (void **)&v);
	if (rc == -EPERM || rc == -EOPNOTSUPP)
		cr_skip_test("native mode unavailable: %s", umlmem_errmsg());
	cr_assert_eq(rc, 0, "%s", umlmem_errmsg());
	for (uint64_t p = 0; p < n; p++) {
		memset(v + p * PG, (int)p + 1, PG);           /* writable in the view */
		memset(T[0].mem + p * PG, (int)p + 1, PG);
	}
	clone_into(1, 0);
	tu_check(H);
	for (uint64_t p = 0; p < n; p += 2) {
		v[p * PG + 5] = 0x5a;                         /* breaks the sharing */
		T[0].mem[p * PG + 5] = 0x5a;
	}
	tu_check(H);
	verify(0);
	verify(1);
	/* the clone mapped too: its stores are its own */
	cr_assert_eq(umlmem_guest_map(T[1].g, (void **)&w), 0, "%s", umlmem_errmsg());
	for (uint64_t p = 1; p < n; p += 2) {
		w[p * PG] = 0x77;
		T[1].mem[p * PG] = 0x77;
	}
	for (uint64_t p = 0; p < n; p++) {
		cr_assert_eq(v[p * PG + 5], T[0].mem[p * PG + 5]);
		cr_assert_eq(w[p * PG], T[1].mem[p * PG]);
	}
	/* a clone of the mapped clone, while both are mapped */
	clone_into(2, 1);
	w[0] = 0x99;
	T[1].mem[0] = 0x99;
	tu_check(H);
	verify_all();
	cr_assert_eq(umlmem_guest_unmap(T[0].g), 0);
	drop(0);
	tu_check(H);
	verify_all();
}

/* ---- everything mixed, against the model ---------------------------------- */

static int free_slot(uint64_t *st)
{
	int i = (int)(tu_splitmix64(st) % MAXG);

	for (int k = 0; k < MAXG; k++, i = (i + 1) % MAXG)
		if (!T[i].g)
			return i;
	return -1;
}

static int live_slot(uint64_t *st)
{
	int i = (int)(tu_splitmix64(st) % MAXG);

	for (int k = 0; k < MAXG; k++, i = (i + 1) % MAXG)
		if (T[i].g)
			return i;
	return -1;
}

Test(clone, random_against_the_model, .timeout = 120)
{
	const uint64_t gbytes = 48 * PG;
	uint64_t st = pick_seed(), steps = tu_scaled(3000), x;
	uint8_t page[PG];

	/* 128 frames for up to 24 guests of 48 pages, a cap of 3: swap,
	   merging, the cap and copies for want of frames all happen often */
	H = host_cfg(128 * PG, 3);
	mk(0, gbytes);
	for (uint64_t step = 0; step < steps; step++) {
		int i = live_slot(&st), j;
		uint64_t r = tu_splitmix64(&st) % 100, p = tu_splitmix64(&st) % (gbytes / PG);
		size_t len;

		if (i < 0) {
			mk(0, gbytes);
			continue;
		}
		if (r < 35) {
			/* a write: a few patterns, so pages repeat and merge */
			x = tu_splitmix64(&st);
			tu_fill(page, PG, x % 8);
			len = x % 3 == 0 ? PG : 1 + (size_t)(x % (PG - 1));
			wr(i, p * PG + (len == PG ? 0 : (x >> 20) % (PG - len + 1)), page, len);
		} else if (r < 50) {
			j = free_slot(&st);
			if (j >= 0)
				clone_into(j, i);
		} else if (r < 56) {
			drop(i);
		} else if (r < 62) {
			uint64_t np = 1 + tu_splitmix64(&st) % 8;

			if (p + np > gbytes / PG)
				np = gbytes / PG - p;
			SCHK(umlmem_discard(T[i].g, p * PG, np * PG) == 0, "discard: %s",
			     umlmem_errmsg());
			memset(T[i].mem + p * PG, 0, np * PG);
		} else if (r < 70) {
			SCHK(umlmem_reclaim(H, 1 + tu_splitmix64(&st) % 64, &x) == 0,
			     "reclaim: %s", umlmem_errmsg());
		} else if (r < 76) {
			SCHK(umlmem_dedup_scan(H, 1 + tu_splitmix64(&st) % 400, &x) == 0,
			     "scan: %s", umlmem_errmsg());
		} else if (r < 80) {
			void *pin;
			int rc = umlmem_pin(T[i].g, p * PG, UMLMEM_READ, &pin);

			SCHK(rc == 0 || rc == -ENOMEM, "pin: %s", umlmem_errmsg());
			if (!rc) {
				SCHK(!memcmp(pin, T[i].mem + p * PG, PG), "pinned page differs");
				j = free_slot(&st);
				if (j >= 0)
					clone_into(j, i);   /* a clone while pinned */
				SCHK(umlmem_unpin(T[i].g, p * PG) == 0, "unpin");
			}
		} else {
			uint8_t got[PG];

			SCHK(umlmem_read(T[i].g, p * PG, got, PG) == 0, "read: %s",
			     umlmem_errmsg());
			SCHK(!memcmp(got, T[i].mem + p * PG, PG), "guest %d page %" PRIu64
			     " differs at step %" PRIu64, i, p, step);
		}
		tu_check(H);
	}
	verify_all();
}

/* ---- threads --------------------------------------------------------------- */

/* A writer keeps rewriting whole pages of the source, each filled with one
   value that only grows, while the source is paged in and out; the main
   thread clones it again and again. Each clone must hold whole pages (one
   value per page: no write half in), no value written after the clone
   returned, and must not move when the writer goes on. */
struct writer {
	umlmem_guest *g;
	uint64_t npages;
	uint64_t seq;           /* last value written; atomic */
	bool stop;              /* atomic */
	int err;
};

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	uint64_t page[PG / 8], st = 99;

	while (!__atomic_load_n(&w->stop, __ATOMIC_RELAXED)) {
		uint64_t v = __atomic_load_n(&w->seq, __ATOMIC_RELAXED) + 1;
		uint64_t p = tu_splitmix64(&st) % w->npages;

		for (unsigned k = 0; k < PG / 8; k++)
			page[k] = v;
		if ((w->err = umlmem_write(w->g, p * PG, page, PG)))
			break;
		__atomic_store_n(&w->seq, v, __ATOMIC_RELEASE);
		if (p % 5 == 0 && (w->err = umlmem_read(w->g, ((p * 7) % w->npages) * PG, page, 8)))
			break;
	}
	return NULL;
}

static void check_clone(umlmem_guest *c, uint64_t npages, uint64_t max, uint64_t *snap)
{
	uint64_t page[PG / 8];

	for (uint64_t p = 0; p < npages; p++) {
		cr_assert_eq(umlmem_read(c, p * PG, page, PG), 0, "%s", umlmem_errmsg());
		for (unsigned k = 1; k < PG / 8; k++)
			cr_assert_eq(page[k], page[0], "clone page %" PRIu64 " torn: word %u is %"
				     PRIu64 ", word 0 %" PRIu64, p, k, page[k], page[0]);
		cr_assert(page[0] <= max, "clone page %" PRIu64 " holds %" PRIu64 ", written "
			  "after the clone (%" PRIu64 ")", p, page[0], max);
		if (snap[p] != UINT64_MAX)
			cr_assert_eq(page[0], snap[p], "clone page %" PRIu64 " moved", p);
		snap[p] = page[0];
	}
}

Test(clone, while_another_thread_writes, .timeout = 120)
{
	const uint64_t npages = 96;
	struct writer w = { .npages = npages };
	uint64_t snap[96], ev, max;
	pthread_t t;

	H = tu_host(dir, 64 * PG, 0);
	mk(0, npages * PG);
	w.g = T[0].g;
	cr_assert_eq(pthread_create(&t, NULL, writer_main, &w), 0);
	for (unsigned i = 0; i < tu_scaled(60); i++) {
		umlmem_guest *c;
		int rc;

		rc = umlmem_guest_clone(T[0].g, NULL, &c);
		max = __atomic_load_n(&w.seq, __ATOMIC_ACQUIRE) + 1;
		cr_assert_eq(rc, 0, "clone %u: %s", i, umlmem_errmsg());
		for (uint64_t p = 0; p < npages; p++)
			snap[p] = UINT64_MAX;
		check_clone(c, npages, max, snap);
		cr_assert_eq(umlmem_reclaim(H, 32, &ev), 0, "%s", umlmem_errmsg());
		check_clone(c, npages, max, snap);
		umlmem_guest_destroy(c);
		if (i % 10 == 0)
			tu_check(H);
	}
	__atomic_store_n(&w.stop, true, __ATOMIC_RELAXED);
	pthread_join(t, NULL);
	cr_assert_eq(w.err, 0, "writer: %s", umlmem_strerror(w.err));
	tu_check(H);
}
