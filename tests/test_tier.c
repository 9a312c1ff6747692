/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The store interface and the compressed pool: pages that leave the frames
 * come back byte for byte from the pool or from swap, against a plain copy
 * of every guest page; a page whose compressed bytes were damaged is -EIO
 * and a counted checksum error; a pool that cannot allocate or is full
 * sends pages on to swap; a shared page is stored once; the budget counts
 * the pool; configuration errors name the field.
 */
#include <errno.h>
#include <inttypes.h>

#include "testutil.h"

#define PG UMLMEM_PAGE_SIZE
#define NP 256u          /* guest pages */
#define BUDGET (64 * PG)

static struct {
	char dir[64];
	umlmem_host *h;
	umlmem_guest *g[2];
	uint8_t *mem;        /* the oracle of guest 0 */
} T;

static void setup(void)
{
	memset(&T, 0, sizeof(T));
	tu_mkswapdir(T.dir);
	T.mem = calloc(NP, PG);
	cr_assert_not_null(T.mem);
}

static void teardown(void)
{
	umlmem_host_destroy(T.h);
	free(T.mem);
	tu_rmswapdir(T.dir);
}

TestSuite(tier, .init = setup, .fini = teardown);

static umlmem_host *pool_host_flags(enum umlmem_compress c, uint64_t pool_bytes,
				    unsigned flags)
{
	struct umlmem_host_config cfg;
	umlmem_host *h = NULL;
	int rc;

	umlmem_host_config_init(&cfg);
	cfg.resident_bytes = BUDGET;
	cfg.swap_dir = T.dir;
	cfg.reclaim_batch = 16;
	cfg.compress = c;
	cfg.compress_pool_bytes = pool_bytes;
	cfg.flags = flags;
	rc = umlmem_host_create(&cfg, &h);
	cr_assert_eq(rc, 0, "umlmem_host_create: %s", umlmem_errmsg());
	return h;
}

static umlmem_host *pool_host(enum umlmem_compress c, uint64_t pool_bytes)
{
	return pool_host_flags(c, pool_bytes, 0);
}

/* Page @i's content: kind 0 compresses (a 64-byte run repeated, a few
   bytes changed), 1 is one repeated 8-byte word, 2 is random (does not
   compress); every page differs from every other. */
static void page_content(uint8_t *p, uint64_t i, unsigned kind, uint64_t seed)
{
	if (kind == 1) {
		uint64_t w = 0x0101010101010101ull * (i % 251 + 1) ^ seed;

		for (unsigned j = 0; j < PG / 8; j++)
			memcpy(p + 8 * j, &w, 8);
		return;
	}
	if (kind == 2) {
		tu_fill(p, PG, seed * 1000003 + i);
		return;
	}
	tu_fill(p, 64, seed * 7919 + i);
	for (unsigned j = 64; j < PG; j++)
		p[j] = p[j - 64];
	memcpy(p + 128, &i, sizeof(i));
	memcpy(p + 2048, &seed, sizeof(seed));
}

static void write_all(umlmem_guest *g, uint8_t *mem, unsigned kinds, uint64_t seed)
{
	for (uint64_t i = 0; i < NP; i++) {
		page_content(mem + i * PG, i, kinds == 1 ? 0 : (unsigned)(i % kinds), seed);
		cr_assert_eq(umlmem_write(g, i * PG, mem + i * PG, PG), 0, "%s", umlmem_errmsg());
	}
}

static void check_all(umlmem_guest *g, const uint8_t *mem)
{
	static uint8_t buf[PG];

	for (uint64_t i = 0; i < NP; i++) {
		int rc = umlmem_read(g, i * PG, buf, PG);

		cr_assert_eq(rc, 0, "page %" PRIu64 ": %s", i, umlmem_errmsg());
		cr_assert(!memcmp(buf, mem + i * PG, PG), "page %" PRIu64 " differs", i);
	}
}

static void evict_all(void)
{
	uint64_t n;

	cr_assert_eq(umlmem_reclaim(T.h, BUDGET / PG, &n), 0, "%s", umlmem_errmsg());
}

static struct umlmem_host_info info(void)
{
	struct umlmem_host_info i;

	cr_assert_eq(umlmem_host_info(T.h, &i, sizeof(i)), 0);
	return i;
}

static struct umlmem_stats stats(void)
{
	struct umlmem_stats s;

	cr_assert_eq(umlmem_host_stats(T.h, &s), 0);
	cr_assert_eq(s.resident_pages + s.swapped_pages + s.zero_pages, s.ram_pages);
	cr_assert_leq(s.frames_used, BUDGET / PG);
	return s;
}

/* The key page @idx of @g is stored under; fails unless it is stored. */
static uint64_t key_of(umlmem_guest *g, uint64_t idx)
{
	pte_t *e = pte_find(g, idx);
	pte_t v = e ? LOAD(e) : PTE_ZERO;

	cr_assert_eq(PTE_TYPE(v), PTE_STORED, "page %" PRIu64 " is not stored (type %u)", idx,
		     PTE_TYPE(v));
	return PTE_VAL(v);
}

Test(tier, pool_roundtrip)
{
	struct umlmem_host_info i;
	struct umlmem_stats s;

	T.h = pool_host(UMLMEM_COMPRESS_LZ4, 0);
	T.g[0] = tu_guest(T.h, NP * PG);
	write_all(T.g[0], T.mem, 3, 1);
	evict_all();
	tu_check(T.h);
	i = info();
	s = stats();
	/* a third of the pages each: compressible, same-filled, random */
	cr_assert_gt(i.pool_pages, 0);
	cr_assert_gt(i.pool_same_filled, 0);
	cr_assert_gt(i.pool_rejects, 0, "random pages were not refused");
	cr_assert_gt(i.pool_frames, 0);
	cr_assert_lt(i.pool_frames * 2, i.pool_pages, "the pool holds %" PRIu64 " pages in %"
		     PRIu64 " frames", i.pool_pages, i.pool_frames);
	cr_assert_gt(s.swapped_pages, 0);
	cr_assert_eq(s.frames_used, s.resident_pages + tu_cached(T.h));
	check_all(T.g[0], T.mem);
	cr_assert_gt(info().pool_hits, 0);
	/* the pages read are clean: evicting them again stores nothing new */
	i = info();
	evict_all();
	cr_assert_eq(info().pool_pages, i.pool_pages);
	check_all(T.g[0], T.mem);
	tu_check(T.h);
}

Test(tier, pool_zstd)
{
	T.h = pool_host(UMLMEM_COMPRESS_ZSTD, 0);
	T.g[0] = tu_guest(T.h, NP * PG);
	write_all(T.g[0], T.mem, 3, 2);
	evict_all();
	tu_check(T.h);
	cr_assert_gt(info().pool_pages, 0);
	check_all(T.g[0], T.mem);
	tu_check(T.h);
}

Test(tier, pool_off_has_no_pool)
{
	T.h = pool_host(UMLMEM_COMPRESS_OFF, 0);
	T.g[0] = tu_guest(T.h, NP * PG);
	write_all(T.g[0], T.mem, 1, 3);
	evict_all();
	cr_assert_eq(info().pool_pages, 0);
	cr_assert_eq(info().pool_frames, 0);
	cr_assert_gt(stats().swap_outs, 0);
	check_all(T.g[0], T.mem);
	tu_check(T.h);
}

Test(tier, pool_corrupt_is_eio)
{
	uint8_t buf[PG];
	uint64_t k, idx;
	int rc;

	T.h = pool_host(UMLMEM_COMPRESS_LZ4, 0);
	T.g[0] = tu_guest(T.h, NP * PG);
	write_all(T.g[0], T.mem, 1, 4);
	evict_all();
	/* the last page stored in the pool */
	for (idx = NP; idx--;) {
		pte_t v = LOAD(pte_find(T.g[0], idx));

		if (PTE_TYPE(v) == PTE_STORED && tkey_tier(PTE_VAL(v)) == TIER_POOL)
			break;
	}
	cr_assert_lt(idx, NP, "no page went to the pool");
	k = key_of(T.g[0], idx);
	cr_assert(zpool_corrupt(T.h->tier[TIER_POOL], tkey_handle(k)));
	for (int round = 0; round < 2; round++) {
		rc = umlmem_read(T.g[0], idx * PG, buf, PG);
		cr_assert_eq(rc, -EIO, "a damaged page read as %d", rc);
		cr_assert_not_null(strstr(umlmem_errmsg(), "checksum"), "%s", umlmem_errmsg());
	}
	cr_assert_eq(stats().checksum_errors, 2);
	/* a write of the whole page replaces it; the rest is intact */
	page_content(T.mem + idx * PG, idx, 0, 99);
	cr_assert_eq(umlmem_write(T.g[0], idx * PG, T.mem + idx * PG, PG), 0);
	check_all(T.g[0], T.mem);
	tu_check(T.h);
}

Test(tier, pool_alloc_failure_goes_to_swap)
{
	T.h = pool_host(UMLMEM_COMPRESS_LZ4, 0);
	T.g[0] = tu_guest(T.h, NP * PG);
	zpool_inject_alloc_fail(T.h->tier[TIER_POOL], 1000000);
	write_all(T.g[0], T.mem, 1, 5);
	evict_all();
	cr_assert_eq(info().pool_bytes, 0, "a failing pool stored %" PRIu64 " bytes",
		     info().pool_bytes);
	cr_assert_gt(info().pool_rejects, 0);
	cr_assert_gt(info().swap_slots_used, 0);
	cr_assert_eq(stats().io_errors, 0);
	zpool_inject_alloc_fail(T.h->tier[TIER_POOL], 0);
	check_all(T.g[0], T.mem);
	tu_check(T.h);
}

/* A page that found no pool room goes to swap under a pool handle, so that
   when it is read and leaves its frame clean the pool can take it in; so
   does a page that does not compress, which the pool then never takes. */
Test(tier, pool_refused_pages_absorbed)
{
	static uint8_t buf[PG];
	struct umlmem_host_info i0;

	/* no readahead: the loads counted are the faults' own */
	T.h = pool_host_flags(UMLMEM_COMPRESS_LZ4, 0, UMLMEM_NO_READAHEAD);
	T.g[0] = tu_guest(T.h, NP * PG);
	zpool_inject_alloc_fail(T.h->tier[TIER_POOL], 1000000);
	write_all(T.g[0], T.mem, 3, 8);
	evict_all();
	zpool_inject_alloc_fail(T.h->tier[TIER_POOL], 0);
	tu_check(T.h);
	cr_assert_eq(info().pool_bytes, 0);
	for (uint64_t i = 0; i < NP; i++)
		cr_assert_eq(tkey_tier(key_of(T.g[0], i)), TIER_POOL,
			     "page %" PRIu64 " (kind %u) not under a pool key", i, (unsigned)(i % 3));
	/* page 0 compresses, page 2 does not: both read from swap, then
	   evicted clean; only page 0 comes back from the pool */
	for (int round = 0; round < 2; round++) {
		for (uint64_t p = 0; p <= 2; p += 2) {
			i0 = info();
			cr_assert_eq(umlmem_read(T.g[0], p * PG, buf, PG), 0, "%s", umlmem_errmsg());
			cr_assert(!memcmp(buf, T.mem + p * PG, PG));
			cr_assert_eq(info().pool_hits, i0.pool_hits + (round && !p),
				     "round %d, page %" PRIu64 ": %" PRIu64 " pool hits", round, p,
				     info().pool_hits - i0.pool_hits);
		}
		evict_all();
		tu_check(T.h);
	}
	check_all(T.g[0], T.mem);
	cr_assert_eq(umlmem_discard(T.g[0], 0, NP * PG), 0);
	memset(T.mem, 0, NP * PG);
	tu_check(T.h);
	cr_assert_eq(info().pool_pages, 0);
	cr_assert_eq(info().swap_slots_used, 0);
}

/* A pool whose pages all leave unread (a guest that only writes) does not
   pay for their compression: after a window of departures it takes only a
   sample of the pages and sends the rest straight below, under pool
   handles; every byte still comes back. */
Test(tier, pool_bypassed_when_unread)
{
	enum { N = 2048 };
	uint8_t *mem = malloc((size_t)N * PG), *buf = malloc(PG);
	struct umlmem_host_info i0, i1;
	umlmem_guest *g;

	cr_assert(mem && buf);
	T.h = pool_host(UMLMEM_COMPRESS_LZ4, 4 * PG);
	g = tu_guest(T.h, (uint64_t)N * PG);
	for (unsigned pass = 0; pass < 2; pass++) {
		i0 = info();
		for (uint64_t i = 0; i < N; i++) {
			page_content(mem + i * PG, i, 0, 20 + pass);
			cr_assert_eq(umlmem_write(g, i * PG, mem + i * PG, PG), 0, "%s",
				     umlmem_errmsg());
		}
		evict_all();
		i1 = info();
		if (!pass)
			cr_assert_gt(i1.pool_writebacks - i0.pool_writebacks, 0,
				     "the pool was meant to turn over");
		else
			cr_assert_gt(i1.pool_rejects - i0.pool_rejects, N / 2,
				     "a pool whose pages all left unread still took %" PRIu64
				     " of %u", N - (i1.pool_rejects - i0.pool_rejects), N);
	}
	tu_check(T.h);
	for (uint64_t i = 0; i < N; i++) {
		cr_assert_eq(umlmem_read(g, i * PG, buf, PG), 0, "%s", umlmem_errmsg());
		cr_assert(!memcmp(buf, mem + i * PG, PG), "page %" PRIu64 " differs", i);
	}
	tu_check(T.h);
	free(mem);
	free(buf);
}

Test(tier, pool_full_writes_back)
{
	struct umlmem_host_info i;

	/* four frames of pool: most pages must move on to swap */
	T.h = pool_host(UMLMEM_COMPRESS_LZ4, 4 * PG);
	T.g[0] = tu_guest(T.h, NP * PG);
	write_all(T.g[0], T.mem, 1, 6);
	evict_all();
	tu_check(T.h);
	i = info();
	cr_assert_leq(i.pool_frames, 4);
	cr_assert_gt(i.pool_writebacks, 0);
	cr_assert_gt(i.swap_slots_used, 0);
	cr_assert_gt(stats().swap_disk_bytes, 0);
	check_all(T.g[0], T.mem);
	/* pages moved below are discarded through their pool handle */
	cr_assert_eq(umlmem_discard(T.g[0], 0, NP * PG), 0);
	memset(T.mem, 0, NP * PG);
	tu_check(T.h);
	i = info();
	cr_assert_eq(i.pool_pages, 0);
	cr_assert_eq(i.swap_slots_used, 0);
	check_all(T.g[0], T.mem);
}

/* A page the pool holds only on disk comes back into the pool when it
   leaves its frame clean, so that its next fault reads no disk; a pool
   filled with such copies drops them again (they are on disk) and nothing
   is lost. */
Test(tier, pool_absorbs_clean_pages)
{
	static uint8_t buf[PG];
	struct umlmem_host_info i0, i1;
	uint64_t p = NP;

	T.h = pool_host(UMLMEM_COMPRESS_LZ4, 2 * PG);
	T.g[0] = tu_guest(T.h, NP * PG);
	write_all(T.g[0], T.mem, 1, 7);
	evict_all();
	i0 = info();
	cr_assert_gt(i0.pool_writebacks, 0);
	/* the first page of the pool that the full pool moved on to swap:
	   reading it is no pool hit */
	for (uint64_t i = 0; i < NP && p == NP; i++) {
		if (tkey_tier(key_of(T.g[0], i)) != TIER_POOL)
			continue;
		i0 = info();
		cr_assert_eq(umlmem_read(T.g[0], i * PG, buf, PG), 0, "%s", umlmem_errmsg());
		cr_assert(!memcmp(buf, T.mem + i * PG, PG));
		i1 = info();
		if (i1.pool_hits == i0.pool_hits)
			p = i;
	}
	cr_assert_lt(p, NP, "no page of the pool was moved on to swap");
	evict_all();
	tu_check(T.h);
	i0 = info();
	cr_assert_eq(umlmem_read(T.g[0], p * PG, buf, PG), 0, "%s", umlmem_errmsg());
	cr_assert(!memcmp(buf, T.mem + p * PG, PG));
	i1 = info();
	cr_assert_eq(i1.pool_hits, i0.pool_hits + 1, "page %" PRIu64 " was not taken back into "
		     "the pool", p);
	/* every page read and evicted clean: the pool overflows with copies */
	check_all(T.g[0], T.mem);
	evict_all();
	tu_check(T.h);
	check_all(T.g[0], T.mem);
	evict_all();
	tu_check(T.h);
	cr_assert_eq(umlmem_discard(T.g[0], 0, NP * PG), 0);
	memset(T.mem, 0, NP * PG);
	tu_check(T.h);
	i1 = info();
	cr_assert_eq(i1.pool_pages, 0);
	cr_assert_eq(i1.swap_slots_used, 0);
}

Test(tier, pool_shared_page_stored_once)
{
	uint8_t *mem1 = malloc(NP * PG);
	uint64_t merged;

	cr_assert_not_null(mem1);
	T.h = pool_host(UMLMEM_COMPRESS_LZ4, 0);
	T.g[0] = tu_guest(T.h, NP * PG);
	T.g[1] = tu_guest(T.h, NP * PG);
	/* 24 equal pages in each guest, all resident, merged */
	memset(mem1, 0, NP * PG);
	for (uint64_t i = 0; i < 24; i++) {
		page_content(T.mem + i * PG, i, 0, 7);
		memcpy(mem1 + i * PG, T.mem + i * PG, PG);
		cr_assert_eq(umlmem_write(T.g[0], i * PG, T.mem + i * PG, PG), 0);
		cr_assert_eq(umlmem_write(T.g[1], i * PG, mem1 + i * PG, PG), 0);
	}
	for (int pass = 0; pass < 4; pass++)
		cr_assert_eq(umlmem_dedup_scan(T.h, 4 * NP, &merged), 0);
	cr_assert_geq(stats().sharing_pages, 20, "only %" PRIu64 " pages merged",
		      stats().sharing_pages);
	evict_all();
	evict_all();
	tu_check(T.h);
	for (uint64_t i = 0; i < NP; i++)
		if (PTE_TYPE(LOAD(pte_find(T.g[0], i))) == PTE_STORED &&
		    PTE_TYPE(LOAD(pte_find(T.g[1], i))) == PTE_STORED)
			cr_assert_eq(key_of(T.g[0], i), key_of(T.g[1], i),
				     "page %" PRIu64 " stored twice", i);
	cr_assert_leq(info().pool_pages + info().swap_slots_used, NP);
	/* both read it; one writes: the other keeps the old bytes */
	check_all(T.g[1], mem1);
	check_all(T.g[0], T.mem);
	mem1[7 * PG] ^= 1;
	cr_assert_eq(umlmem_write(T.g[1], 7 * PG, mem1 + 7 * PG, 1), 0);
	evict_all();
	check_all(T.g[0], T.mem);
	check_all(T.g[1], mem1);
	tu_check(T.h);
	free(mem1);
}

Test(tier, pool_pins_and_native_untouched)
{
	void *p;

	T.h = pool_host(UMLMEM_COMPRESS_LZ4, 0);
	T.g[0] = tu_guest(T.h, NP * PG);
	write_all(T.g[0], T.mem, 1, 8);
	evict_all();
	/* a pin brings a pooled page back and keeps it */
	cr_assert_eq(umlmem_pin(T.g[0], 9 * PG, UMLMEM_READ | UMLMEM_WRITE, &p), 0);
	cr_assert(!memcmp(p, T.mem + 9 * PG, PG));
	((uint8_t *)p)[17] ^= 0xff;
	T.mem[9 * PG + 17] ^= 0xff;
	evict_all();
	cr_assert_eq(PTE_TYPE(LOAD(pte_find(T.g[0], 9))), PTE_FRAME);
	umlmem_unpin(T.g[0], 9 * PG);
	evict_all();
	check_all(T.g[0], T.mem);
	tu_check(T.h);
}

Test(tier, config_errors)
{
	struct umlmem_host_config cfg;
	umlmem_host *h = NULL;

	umlmem_host_config_init(&cfg);
	cr_assert_eq(cfg.compress, UMLMEM_COMPRESS_AUTO);
	cr_assert_eq(cfg.compress_pool_bytes, 0);
	cr_assert_null(cfg.swap_uri);
	cfg.resident_bytes = BUDGET;
	cfg.swap_dir = T.dir;
	{
		/* no server behind the socket: a clear error, no host */
		char uri[256];

		snprintf(uri, sizeof(uri), "nbd+unix:///x?socket=%s/no-server.sock", T.dir);
		cfg.swap_uri = uri;
		cr_assert_lt(umlmem_host_create(&cfg, &h), 0);
		cr_assert_not_null(strstr(umlmem_errmsg(), "swap_uri"), "%s", umlmem_errmsg());
		cr_assert_not_null(strstr(umlmem_errmsg(), "no-server.sock"), "%s", umlmem_errmsg());
		cfg.swap_uri = "";
		cr_assert_eq(umlmem_host_create(&cfg, &h), -EINVAL);
		cr_assert_not_null(strstr(umlmem_errmsg(), "swap_uri"), "%s", umlmem_errmsg());
	}
	cfg.swap_uri = NULL;
	cfg.compress = (enum umlmem_compress)7;
	cr_assert_eq(umlmem_host_create(&cfg, &h), -EINVAL);
	cr_assert_not_null(strstr(umlmem_errmsg(), "compress"), "%s", umlmem_errmsg());
	cfg.compress = UMLMEM_COMPRESS_LZ4;
	cfg.compress_pool_bytes = 2 * BUDGET;
	cr_assert_eq(umlmem_host_create(&cfg, &h), -EINVAL);
	cr_assert_not_null(strstr(umlmem_errmsg(), "compress_pool_bytes"), "%s", umlmem_errmsg());
	cr_assert_null(h);
}
