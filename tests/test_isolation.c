/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Isolation and secrecy: no guest reads bytes another guest (or another
 * page of its own) wrote, by any path, and the swap files keep no secret
 * where a name or a freed slot could reach it.
 *
 * Guest A writes a secret: pages full of an 8-byte marker that no other
 * content of these tests contains ("SECRET!A" plus the page number), so
 * that any of its bytes showing up anywhere else is found by a scan, not
 * only by a comparison with the expected bytes. Guest B then takes A's
 * frames and slots by every path there is: fresh frames, recycled frames
 * (after A is destroyed, after A discards, while A's pages are evicted),
 * frames read ahead for A and never touched, copy-on-write of merged
 * pages, swap slots freed and reused (after a punch, and at the cap,
 * without one), and discard. B reads whole pages where it wrote one byte:
 * the rest must be zeros.
 *
 * The swap files: no name reaches them (O_TMPFILE or unlinked: the link in
 * /proc/self/fd says "(deleted)", the link count is 0, the directory is
 * empty), they are mode 0600 whatever the umask, every descriptor the host
 * opens is close-on-exec, and a cluster whose slots are all freed is
 * punched: reading the file there gives zeros, SEEK_DATA finds a hole, and
 * no marker is left anywhere in the files.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"
#include "internal.h"
#include "swap.h"

#define PG UMLMEM_PAGE_SIZE

static struct {
	char dir[64];
	umlmem_host *h;
	uint8_t *buf, *buf2;
} I;

static void iso_setup(void)
{
	memset(&I, 0, sizeof(I));
	tu_mkswapdir(I.dir);
	I.buf = aligned_alloc(PG, 2 * PG);
	I.buf2 = aligned_alloc(PG, 2 * PG);
	cr_assert(I.buf && I.buf2);
}

static void iso_teardown(void)
{
	umlmem_host_destroy(I.h);
	I.h = NULL;
	free(I.buf);
	free(I.buf2);
	tu_rmswapdir(I.dir);
}

TestSuite(isolation, .init = iso_setup, .fini = iso_teardown);

/* ---- helpers ----------------------------------------------------------------- */

static umlmem_host *mk_host(uint64_t budget, uint64_t cap, unsigned nfiles, unsigned flags,
			    enum umlmem_io_engine io)
{
	struct umlmem_host_config cfg;
	umlmem_host *h = NULL;
	int rc;

	umlmem_host_config_init(&cfg);
	cfg.resident_bytes = budget * PG;
	cfg.swap_bytes = cap * PG;
	cfg.swap_dir = I.dir;
	cfg.swap_files = nfiles;
	cfg.flags = flags;
	cfg.io = io;
	rc = umlmem_host_create(&cfg, &h);
	if (rc == -ENOTSUP && io != UMLMEM_IO_AUTO) {
		char why[512];

		snprintf(why, sizeof(why), "%s", umlmem_errmsg());
		iso_teardown();
		memset(&I, 0, sizeof(I));
		cr_skip_test("engine %d cannot run here: %s", (int)io, why);
	}
	cr_assert_eq(rc, 0, "umlmem_host_create: %s: %s", umlmem_strerror(rc), umlmem_errmsg());
	return h;
}

static umlmem_guest *mk_guest(uint64_t bytes, uint32_t domain, unsigned flags)
{
	struct umlmem_guest_config cfg;
	umlmem_guest *g = NULL;
	int rc;

	umlmem_guest_config_init(&cfg);
	cfg.ram_bytes = bytes;
	cfg.merge_domain = domain;
	cfg.flags = flags;
	rc = umlmem_guest_create(I.h, &cfg, &g);
	cr_assert_eq(rc, 0, "umlmem_guest_create: %s", umlmem_errmsg());
	return g;
}

/* A's secret page @idx: the marker "SECRET!A" and the page number, over
   and over. */
static void secret(void *page, uint64_t idx)
{
	uint8_t *p = page;

	for (unsigned o = 0; o < PG; o += 16) {
		memcpy(p + o, "SECRET!A", 8);
		memcpy(p + o + 8, &idx, 8);
	}
}

/* Whether @len bytes at @p hold any 8 bytes of the marker, at any offset. */
static bool has_marker(const uint8_t *p, size_t len)
{
	return len >= 8 && memmem(p, len, "SECRET!A", 8) != NULL;
}

static void write_secret(umlmem_guest *a, uint64_t first, uint64_t n)
{
	for (uint64_t i = first; i < first + n; i++) {
		secret(I.buf, i);
		cr_assert_eq(umlmem_write(a, i * PG, I.buf, PG), 0, "A page %" PRIu64 ": %s", i,
			     umlmem_errmsg());
	}
}

/* B's page @idx at version @ver: random bytes (checked not to contain the
   marker). */
static void bpage(void *page, uint64_t idx, unsigned ver)
{
	tu_fill(page, PG, idx * 0x9e3779b97f4a7c15ull + ver + 0xb0b);
	cr_assert(!has_marker(page, PG));
}

/* Reads page @idx of @g whole and fails unless it is zeros but for
   @n bytes at @off equal to @val (n 0: all zeros). Names @what. */
static void expect_sparse(umlmem_guest *g, uint64_t idx, unsigned off, unsigned n, uint8_t val,
			  const char *what)
{
	int rc;

	memset(I.buf2, 0x5a, PG);
	rc = umlmem_read(g, idx * PG, I.buf2, PG);
	cr_assert_eq(rc, 0, "%s: read page %" PRIu64 ": %s: %s", what, idx, umlmem_strerror(rc),
		     umlmem_errmsg());
	cr_assert(!has_marker(I.buf2, PG), "%s: page %" PRIu64 " shows guest A's secret", what, idx);
	memset(I.buf2 + PG, 0, PG);
	memset(I.buf2 + PG + off, val, n);
	if (memcmp(I.buf2, I.buf2 + PG, PG) == 0)
		return;
	for (unsigned k = 0; k < PG; k++)
		cr_assert_eq(I.buf2[k], I.buf2[PG + k], "%s: page %" PRIu64 " byte %u is 0x%02x, "
			     "expected 0x%02x", what, idx, k, I.buf2[k], I.buf2[PG + k]);
}

static void expect_page(umlmem_guest *g, uint64_t idx, const void *want, const char *what)
{
	int rc;

	memset(I.buf2, 0x5a, PG);
	rc = umlmem_read(g, idx * PG, I.buf2, PG);
	cr_assert_eq(rc, 0, "%s: read page %" PRIu64 ": %s: %s", what, idx, umlmem_strerror(rc),
		     umlmem_errmsg());
	cr_assert(memcmp(I.buf2, want, PG) == 0, "%s: page %" PRIu64 " reads other bytes%s", what,
		  idx, has_marker(I.buf2, PG) ? " (guest A's secret)" : "");
}

static struct umlmem_stats hstats(void)
{
	struct umlmem_stats s;

	cr_assert_eq(umlmem_host_stats(I.h, &s), 0);
	return s;
}

static struct umlmem_host_info hinfo(void)
{
	struct umlmem_host_info i;

	cr_assert_eq(umlmem_host_info(I.h, &i, sizeof(i)), 0);
	return i;
}

static pte_t pte_of(umlmem_guest *g, uint64_t idx)
{
	pte_t *e = pte_find(g, idx);

	return e ? LOAD(e) : PTE_ZERO;
}

/* Evicts everything evictable. */
static void evict_all(uint64_t budget)
{
	int rc = umlmem_reclaim(I.h, budget, NULL);

	cr_assert_eq(rc, 0, "umlmem_reclaim: %s: %s", umlmem_strerror(rc), umlmem_errmsg());
}

/*
 * Guest B, on frames and slots that held A's secret: pins of pages never
 * written (read and write pins) show zeros; one byte written per page
 * (through a copy write, at a different offset on each page) leaves the
 * other 4095 zeros, in memory and again after a trip through swap; reads
 * of untouched pages are zeros and take no frame; whole pages written are
 * B's own.
 */
static void b_takes_over(umlmem_guest *b, uint64_t npages, uint64_t budget, const char *what)
{
	struct umlmem_stats s0, s1;
	void *p;
	char w[128];

	/* untouched: zeros, no frame */
	cr_assert_eq(umlmem_guest_stats(b, &s0), 0);
	for (uint64_t i = 0; i < npages; i++) {
		snprintf(w, sizeof(w), "%s, untouched", what);
		expect_sparse(b, i, 0, 0, 0, w);
	}
	cr_assert_eq(umlmem_guest_stats(b, &s1), 0);
	cr_assert_eq(s1.resident_pages, s0.resident_pages, "%s: reading zeros took frames", what);
	/* pins of pages never written, as many as the budget, read and write */
	for (uint64_t i = 0; i < budget / 2; i++) {
		unsigned acc = i & 1 ? UMLMEM_WRITE : UMLMEM_READ;

		cr_assert_eq(umlmem_pin(b, i * PG, acc, &p), 0, "%s: pin: %s", what, umlmem_errmsg());
		cr_assert(!has_marker(p, PG), "%s: a pinned new page shows A's secret", what);
		memset(I.buf2, 0, PG);
		cr_assert(memcmp(p, I.buf2, PG) == 0, "%s: pinned new page %" PRIu64 " is not zeros",
			  what, i);
		cr_assert_eq(umlmem_unpin(b, i * PG), 0);
	}
	cr_assert_eq(umlmem_discard(b, 0, npages * PG), 0);
	/* one byte per page */
	for (uint64_t i = 0; i < npages; i++) {
		uint8_t v = (uint8_t)(0x80 | (i & 0x7f));

		cr_assert_eq(umlmem_write(b, i * PG + (i * 37) % PG, &v, 1), 0, "%s: %s", what,
			     umlmem_errmsg());
	}
	for (int round = 0; round < 2; round++) {
		for (uint64_t i = 0; i < npages; i++) {
			snprintf(w, sizeof(w), "%s, one byte written%s", what,
				 round ? ", back from swap" : "");
			expect_sparse(b, i, (unsigned)((i * 37) % PG), 1,
				      (uint8_t)(0x80 | (i & 0x7f)), w);
		}
		evict_all(budget);
	}
	/* whole pages */
	for (uint64_t i = 0; i < npages; i += 2) {
		bpage(I.buf, i, 1);
		cr_assert_eq(umlmem_write(b, i * PG, I.buf, PG), 0);
	}
	evict_all(budget);
	for (uint64_t i = 0; i < npages; i += 2) {
		bpage(I.buf, i, 1);
		snprintf(w, sizeof(w), "%s, whole page", what);
		expect_page(b, i, I.buf, w);
	}
}

/* ---- frames ----------------------------------------------------------------- */

/* A fresh host: the first frames (never used) and then the recycled ones
   of the guest's own evicted pages; a byte at a different place on every
   page, the other 4095 zeros. One page never sees another page's bytes,
   of the same guest either. */
Test(isolation, fresh_and_own_frames)
{
	const uint64_t budget = 32, n = 160;
	umlmem_guest *g;

	I.h = mk_host(budget, 0, 1, 0, UMLMEM_IO_AUTO);
	g = mk_guest(n * PG, 0, 0);
	for (uint64_t i = 0; i < n; i++) {
		uint8_t v = (uint8_t)(1 + i % 251);

		cr_assert_eq(umlmem_write(g, i * PG + (i * 101) % PG, &v, 1), 0);
	}
	cr_assert_gt(hstats().swap_outs, 0);
	for (uint64_t i = 0; i < n; i++)
		expect_sparse(g, i, (unsigned)((i * 101) % PG), 1, (uint8_t)(1 + i % 251),
			      "one byte per page");
	tu_check(I.h);
}

/* A fills frames and swap with its secret (and leaves pages read ahead,
   never touched, in the swap cache), then is destroyed: B sees none of it. */
Test(isolation, recycled_after_destroy)
{
	const uint64_t budget = 32, n = 4 * 32;
	umlmem_guest *a, *b;

	I.h = mk_host(budget, 0, 1, 0, UMLMEM_IO_AUTO);
	a = mk_guest(n * PG, 0, 0);
	write_secret(a, 0, n);
	evict_all(budget);
	/* an ascending run: readahead fills frames A never maps */
	for (uint64_t i = 0; i < 6; i++)
		cr_assert_eq(umlmem_read(a, i * PG, I.buf, PG), 0);
	cr_assert_gt(hinfo().frames_cached, 0, "nothing was read ahead");
	umlmem_guest_destroy(a);
	cr_assert_eq(hstats().frames_used, 0);
	b = mk_guest(n * PG, 0, 0);
	b_takes_over(b, n, budget, "after A was destroyed");
	tu_check(I.h);
}

/* The same with A alive: it discards its secret (resident, in swap and read
   ahead), and later its secret pages are evicted while B needs frames. */
Test(isolation, recycled_after_discard_and_eviction)
{
	const uint64_t budget = 32, n = 4 * 32;
	umlmem_guest *a, *b;
	void *p;

	I.h = mk_host(budget, 0, 1, 0, UMLMEM_IO_AUTO);
	a = mk_guest(n * PG, 0, 0);
	b = mk_guest(n * PG, 0, 0);
	write_secret(a, 0, n);
	evict_all(budget);
	for (uint64_t i = 0; i < 6; i++)
		cr_assert_eq(umlmem_read(a, i * PG, I.buf, PG), 0);
	cr_assert_gt(hinfo().frames_cached, 0, "nothing was read ahead");
	cr_assert_eq(umlmem_discard(a, 0, n * PG), 0);
	cr_assert_eq(hstats().frames_used, 0, "discard left frames in use");
	b_takes_over(b, n, budget, "after A discarded");

	/* A writes its secret again and keeps it; B's new pages take the
	   frames A's pages are evicted from */
	cr_assert_eq(umlmem_discard(b, 0, n * PG), 0);
	write_secret(a, 0, n);
	for (uint64_t i = 0; i < n; i++) {
		uint8_t v = 0xee;

		cr_assert_eq(umlmem_write(b, i * PG + 7, &v, 1), 0);
		expect_sparse(b, i, 7, 1, 0xee, "while A's pages are evicted");
		if (i % 8 == 0) {
			/* and a write pin of a new page */
			cr_assert_eq(umlmem_pin(b, (n - 1 - i) * PG, UMLMEM_WRITE, &p), 0);
			cr_assert(!has_marker(p, PG), "a write pin shows A's secret");
			cr_assert_eq(umlmem_unpin(b, (n - 1 - i) * PG), 0);
		}
	}
	/* A still has its secret, all of it */
	for (uint64_t i = 0; i < n; i++) {
		secret(I.buf, i);
		expect_page(a, i, I.buf, "A's own secret");
	}
	tu_check(I.h);
}

/* ---- copy on write ------------------------------------------------------------ */

static uint64_t merge_all(umlmem_host *h, uint64_t per)
{
	uint64_t total = 0;
	int quiet = 0;

	for (int k = 0; k < 64 && quiet < 2; k++) {
		uint64_t m = 0;

		cr_assert_eq(umlmem_dedup_scan(h, per, &m), 0);
		total += m;
		quiet = m ? 0 : quiet + 1;
	}
	return total;
}

/*
 * A and B hold the same pages, merged into shared frames. A changes them
 * by every kind of write (one byte, a whole page, through a write pin, a
 * discard), while resident and after the shared frames went to swap (the
 * slot shared too); B keeps reading the original. A guest that opted out
 * and a guest of another merge domain, with the same content, share with
 * no one.
 */
Test(isolation, cow_after_merge)
{
	enum { N = 24 };
	const uint64_t budget = 128;
	umlmem_guest *a, *b, *c, *d;
	uint8_t orig[N][PG];
	struct umlmem_stats s;
	void *p;

	I.h = mk_host(budget, 0, 1, 0, UMLMEM_IO_AUTO);
	a = mk_guest(N * PG, 0, 0);
	b = mk_guest(N * PG, 0, 0);
	c = mk_guest(N * PG, 0, UMLMEM_GUEST_NOMERGE);
	d = mk_guest(N * PG, 1, 0);
	for (uint64_t i = 0; i < N; i++) {
		bpage(orig[i], i, 9);
		cr_assert_eq(umlmem_write(a, i * PG, orig[i], PG), 0);
		cr_assert_eq(umlmem_write(b, i * PG, orig[i], PG), 0);
		cr_assert_eq(umlmem_write(c, i * PG, orig[i], PG), 0);
		cr_assert_eq(umlmem_write(d, i * PG, orig[i], PG), 0);
	}
	merge_all(I.h, 4 * N);
	s = hstats();
	cr_assert_eq(s.sharing_pages, N, "%" PRIu64 " pages merged, expected the %d of A and B "
		     "only", s.sharing_pages, N);
	for (uint64_t i = 0; i < N; i++)
		cr_assert_eq(pte_of(a, i), pte_of(b, i), "page %" PRIu64 " of A and B not merged", i);

	/* resident: a byte, a whole page, a write pin, a discard */
	cr_assert_eq(umlmem_write(a, 0 * PG + 100, "\x01", 1), 0);
	memset(I.buf, 0x11, PG);
	cr_assert_eq(umlmem_write(a, 1 * PG, I.buf, PG), 0);
	cr_assert_eq(umlmem_pin(a, 2 * PG, UMLMEM_WRITE, &p), 0);
	memset((uint8_t *)p + 1000, 0x22, 50);
	cr_assert_eq(umlmem_unpin(a, 2 * PG), 0);
	cr_assert_eq(umlmem_pin(a, 3 * PG, UMLMEM_READ, &p), 0);   /* a read pin copies too */
	cr_assert_eq(umlmem_unpin(a, 3 * PG), 0);
	cr_assert_eq(umlmem_discard(a, 4 * PG, PG), 0);
	/* and B's own write to a shared page does not reach A */
	cr_assert_eq(umlmem_write(b, 5 * PG + 9, "\x02", 1), 0);
	for (uint64_t i = 0; i < 5; i++)
		expect_page(b, i, orig[i], "B after A's writes to shared pages");
	expect_page(a, 5, orig[5], "A after B's write to a shared page");

	/* the shared frames go to swap, one slot for both */
	evict_all(budget);
	cr_assert_eq(hstats().resident_pages, 0);
	for (uint64_t i = 8; i < N; i++) {
		cr_assert_eq(PTE_TYPE(pte_of(a, i)), PTE_STORED);
		cr_assert_eq(pte_of(a, i), pte_of(b, i), "page %" PRIu64 " not in one shared slot", i);
	}
	/* A writes a byte to a page only in swap; B reads it from the slot */
	cr_assert_eq(umlmem_write(a, 8 * PG + 5, "\x03", 1), 0);
	expect_page(b, 8, orig[8], "B after A's write to a shared page in swap");
	/* B brings one in first; A faults it from the swap cache (shared
	   frame), then writes */
	expect_page(b, 9, orig[9], "B");
	expect_page(a, 9, orig[9], "A");
	cr_assert_eq(umlmem_write(a, 9 * PG + 4000, "\x04", 1), 0);
	expect_page(b, 9, orig[9], "B after A's write to a page faulted from the swap cache");
	/* A writes a whole page over a shared slot */
	memset(I.buf, 0x33, PG);
	cr_assert_eq(umlmem_write(a, 10 * PG, I.buf, PG), 0);
	expect_page(b, 10, orig[10], "B after A's whole-page write over a shared slot");
	/* A discards a page that is only in the shared slot */
	cr_assert_eq(umlmem_discard(a, 11 * PG, PG), 0);
	expect_page(b, 11, orig[11], "B after A discarded a shared slot");
	expect_sparse(a, 11, 0, 0, 0, "A's discarded page");
	/* B's write to a shared slot page does not reach A */
	cr_assert_eq(umlmem_write(b, 12 * PG + 1, "\x05", 1), 0);
	expect_page(a, 12, orig[12], "A after B's write to a shared slot");
	/* merging off for A: its shared pages get copies of their own */
	cr_assert_eq(umlmem_guest_set_merge(a, 0), 0, "%s", umlmem_errmsg());
	cr_assert_eq(umlmem_write(a, 13 * PG, "\x06", 1), 0);
	expect_page(b, 13, orig[13], "B after A unmerged and wrote");

	/* the opted-out guest and the other domain were never merged */
	for (uint64_t i = 0; i < N; i++) {
		cr_assert_neq(pte_of(c, i), pte_of(a, i));
		cr_assert_neq(pte_of(d, i), pte_of(b, i));
		expect_page(c, i, orig[i], "the guest that opted out");
		expect_page(d, i, orig[i], "the guest of another domain");
	}
	for (uint64_t i = 14; i < N; i++) {
		expect_page(a, i, orig[i], "A, untouched");
		expect_page(b, i, orig[i], "B, untouched");
	}
	tu_check(I.h);
}

/* ---- swap slots --------------------------------------------------------------- */

/* The slot of page @idx, or SLOT_NONE unless it is only in swap. */
static uint64_t slot_of(umlmem_guest *g, uint64_t idx)
{
	pte_t v = pte_of(g, idx);

	return PTE_TYPE(v) == PTE_STORED && tkey_tier(PTE_VAL(v)) == TIER_SWAP ?
	       tkey_handle(PTE_VAL(v)) : SLOT_NONE;
}

/*
 * A's secret in swap, two whole clusters of it; A destroyed: its clusters
 * are punched. B's pages then go to the same slots (one byte per page, and
 * whole pages) and read back as B's only. Pages A had read ahead into the
 * swap cache before it went are not found for B's reused slots.
 */
Test(isolation, slots_reused_after_punch)
{
	const uint64_t budget = 16, n = 2 * SWAP_CLUSTER_PAGES;
	umlmem_guest *a, *b;
	uint64_t *aslots = calloc(n, sizeof(uint64_t)), reused = 0, p0;
	uint8_t *seen = calloc(4 * n, 1);

	cr_assert(aslots && seen);
	I.h = mk_host(budget, 0, 1, 0, UMLMEM_IO_AUTO);
	a = mk_guest(n * PG, 0, 0);
	write_secret(a, 0, n);
	evict_all(budget);
	for (uint64_t i = 0; i < n; i++) {
		aslots[i] = slot_of(a, i);
		cr_assert_neq(aslots[i], SLOT_NONE);
		cr_assert_lt(aslots[i], 4 * n);
		seen[aslots[i]] = 1;
	}
	for (uint64_t i = 0; i < 6; i++)
		cr_assert_eq(umlmem_read(a, i * PG, I.buf, PG), 0);
	cr_assert_gt(hinfo().frames_cached, 0, "nothing was read ahead");
	p0 = hinfo().swap_punches;
	umlmem_guest_destroy(a);
	cr_assert_geq(hinfo().swap_punches, p0 + 2, "A's two clusters were not punched (%" PRIu64
		      " punches)", hinfo().swap_punches - p0);
	cr_assert_eq(hinfo().swap_slots_used, 0);

	b = mk_guest(n * PG, 0, 0);
	for (uint64_t i = 0; i < n; i++) {
		if (i % 2) {
			bpage(I.buf, i, 2);
			cr_assert_eq(umlmem_write(b, i * PG, I.buf, PG), 0);
		} else {
			uint8_t v = 0x7b;

			cr_assert_eq(umlmem_write(b, i * PG + 2 * i, &v, 1), 0);
		}
	}
	evict_all(budget);
	for (uint64_t i = 0; i < n; i++) {
		uint64_t s = slot_of(b, i);

		if (s != SLOT_NONE && s < 4 * n && seen[s])
			reused++;
	}
	cr_assert_gt(reused, n / 2, "only %" PRIu64 " of B's pages went to A's old slots", reused);
	/* read in order, so that readahead runs over the reused slots too */
	for (uint64_t i = 0; i < n; i++) {
		if (i % 2) {
			bpage(I.buf, i, 2);
			expect_page(b, i, I.buf, "B's page in a reused slot");
		} else {
			expect_sparse(b, i, (unsigned)(2 * i), 1, 0x7b, "B's one byte in a reused slot");
		}
	}
	tu_check(I.h);
	free(aslots);
	free(seen);
}

/* At the cap, freed slots of clusters that still hold live ones are
   handed out again with no punch between: B's pages in A's freed slots
   read as B's. */
Test(isolation, slots_reused_at_cap)
{
	const uint64_t budget = 16, cap = 80, n = 64;
	umlmem_guest *a, *b, *keep;
	uint64_t reused = 0;
	uint8_t seen[128] = { 0 };
	int rc;

	I.h = mk_host(budget, cap, 1, 0, UMLMEM_IO_AUTO);
	a = mk_guest(n * PG, 0, 0);
	keep = mk_guest(n * PG, 0, 0);
	/* A and a keeper interleave, so every cluster keeps live slots */
	for (uint64_t i = 0; i < 40; i++) {
		secret(I.buf, i);
		cr_assert_eq(umlmem_write(a, i * PG, I.buf, PG), 0);
		bpage(I.buf, i, 7);
		cr_assert_eq(umlmem_write(keep, i * PG, I.buf, PG), 0);
	}
	evict_all(budget);
	for (uint64_t i = 0; i < 40; i++) {
		uint64_t s = slot_of(a, i);

		cr_assert_neq(s, SLOT_NONE);
		seen[s] = 1;
	}
	umlmem_guest_destroy(a);
	b = mk_guest(n * PG, 0, 0);
	/* until the cap: B's pages take the freed slots */
	for (uint64_t i = 0; i < n; i++) {
		uint8_t v = 0x42;

		rc = umlmem_write(b, i * PG + i, &v, 1);
		if (rc)
			break;
	}
	cr_assert(rc == 0 || rc == -ENOSPC, "B's write at the cap: %s", umlmem_strerror(rc));
	rc = umlmem_reclaim(I.h, budget, NULL);
	cr_assert(rc == 0 || rc == -ENOSPC, "reclaim at the cap: %s", umlmem_strerror(rc));
	for (uint64_t i = 0; i < n; i++) {
		uint64_t s = slot_of(b, i);

		if (s != SLOT_NONE && s < 128 && seen[s])
			reused++;
	}
	cr_assert_gt(reused, 10, "only %" PRIu64 " of B's pages went to A's old slots", reused);
	for (uint64_t i = 0; i < n; i++) {
		if (slot_of(b, i) == SLOT_NONE && PTE_TYPE(pte_of(b, i)) == PTE_ZERO)
			expect_sparse(b, i, 0, 0, 0, "B's page never written");
		else
			expect_sparse(b, i, (unsigned)i, 1, 0x42, "B's one byte in a reused slot");
	}
	for (uint64_t i = 0; i < 40; i++) {
		bpage(I.buf, i, 7);
		expect_page(keep, i, I.buf, "the keeper");
	}
	tu_check(I.h);
}

/* ---- discard ----------------------------------------------------------------- */

/* Pages in every state, discarded, read as zeros (by copy and by pin), and
   hold neither frame nor slot; a pinned one refuses until unpinned. */
Test(isolation, discard_reads_zero)
{
	const uint64_t budget = 48, n = 160;
	umlmem_guest *a, *b;
	struct umlmem_stats s;
	void *p;

	I.h = mk_host(budget, 0, 1, 0, UMLMEM_IO_AUTO);
	a = mk_guest(n * PG + 100, 0, 0);
	b = mk_guest(n * PG, 0, 0);
	write_secret(a, 0, n);
	/* the partial last page, to its last byte */
	memset(I.buf, 'S', 100);
	cr_assert_eq(umlmem_write(a, n * PG, I.buf, 100), 0);
	for (uint64_t i = 0; i < 16; i++)       /* back in, to be merged */
		cr_assert_eq(umlmem_read(a, i * PG, I.buf, PG), 0);
	for (uint64_t i = 0; i < 16; i++) {     /* some shared with B */
		secret(I.buf, i);
		cr_assert_eq(umlmem_write(b, i * PG, I.buf, PG), 0);
	}
	merge_all(I.h, 4 * budget);
	cr_assert_gt(hstats().sharing_pages, 0, "nothing merged: shared pages are not tested");
	evict_all(budget);
	/* clean resident pages, and pages read ahead */
	for (uint64_t i = 20; i < 30; i++)
		cr_assert_eq(umlmem_read(a, i * PG, I.buf, PG), 0);
	/* dirty resident pages */
	write_secret(a, 100, 10);
	cr_assert_eq(umlmem_pin(a, 50 * PG, UMLMEM_READ, &p), 0);
	cr_assert_eq(umlmem_discard(a, 0, n * PG + 100), -EBUSY);
	secret(I.buf, 50);
	cr_assert(memcmp(p, I.buf, PG) == 0, "a refused discard changed a pinned page");
	cr_assert_eq(umlmem_unpin(a, 50 * PG), 0);
	cr_assert_eq(umlmem_discard(a, 0, n * PG + 100), 0);

	cr_assert_eq(umlmem_guest_stats(a, &s), 0);
	cr_assert_eq(s.zero_pages, n + 1, "%" PRIu64 " of %" PRIu64 " pages zero after discarding "
		     "everything", s.zero_pages, n + 1);
	for (uint64_t i = 0; i < n; i++)
		expect_sparse(a, i, 0, 0, 0, "discarded");
	memset(I.buf, 0x5a, 100);
	cr_assert_eq(umlmem_read(a, n * PG, I.buf, 100), 0);
	for (int k = 0; k < 100; k++)
		cr_assert_eq(I.buf[k], 0, "the discarded partial last page byte %d", k);
	for (uint64_t i = 0; i < n; i += 9) {
		cr_assert_eq(umlmem_pin(a, i * PG, i & 1 ? UMLMEM_WRITE : UMLMEM_READ, &p), 0);
		memset(I.buf, 0, PG);
		cr_assert(memcmp(p, I.buf, PG) == 0, "a pin of discarded page %" PRIu64 " is not "
			  "zeros", i);
		cr_assert_eq(umlmem_unpin(a, i * PG), 0);
	}
	/* B, which shared some of them, still has them */
	for (uint64_t i = 0; i < 16; i++) {
		secret(I.buf, i);
		expect_page(b, i, I.buf, "B's copy of a page A discarded");
	}
	tu_check(I.h);
}

/* ---- the swap files ----------------------------------------------------------- */

/* The descriptors of /proc/self/fd, as a bitmap of fd numbers < 1024. */
static void fd_set_now(uint8_t *set)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;

	cr_assert_not_null(d);
	memset(set, 0, 1024);
	while ((de = readdir(d)))
		if (de->d_name[0] != '.' && atoi(de->d_name) < 1024 && atoi(de->d_name) != dirfd(d))
			set[atoi(de->d_name)] = 1;
	closedir(d);
}

static void fd_link(int fd, char *target, size_t len)
{
	char link[64];
	ssize_t n;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, target, len - 1);
	cr_assert_gt(n, 0, "readlink %s: %s", link, strerror(errno));
	target[n] = '\0';
}

/*
 * For one engine: a host of three swap files made under umask 0, with
 * pages in swap. Every descriptor the host opened is close-on-exec; those
 * in the swap directory are exactly the swap files, each with no name (the
 * link says "(deleted)", no directory entry, link count 0), mode 0600,
 * owned by us; the frame store is a memfd, with no name either.
 */
static void files_unreachable(enum umlmem_io_engine io)
{
	uint8_t before[1024], after[1024];
	unsigned in_dir = 0, memfds = 0, entries = 0;
	struct swap *sw;
	umlmem_guest *g;
	mode_t old;
	DIR *d;
	struct dirent *de;

	fd_set_now(before);
	old = umask(0);
	I.h = mk_host(16, 0, 3, 0, io);
	umask(old);
	g = mk_guest(512 * PG, 0, 0);
	write_secret(g, 0, 400);
	cr_assert_gt(hstats().swapped_pages, 3 * SWAP_CLUSTER_PAGES);
	fd_set_now(after);
	sw = host_swap(I.h);

	for (int fd = 0; fd < 1024; fd++) {
		char target[PATH_MAX];
		struct stat st;
		bool is_swap = false;

		if (!after[fd] || before[fd])
			continue;
		fd_link(fd, target, sizeof(target));
		cr_assert(fcntl(fd, F_GETFD) & FD_CLOEXEC, "descriptor %d (%s) of the host is not "
			  "close-on-exec", fd, target);
		for (unsigned f = 0; f < swap_nfiles(sw); f++)
			is_swap = is_swap || swap_fd(sw, f) == fd;
		if (strstr(target, "memfd:"))
			memfds++;
		if (strncmp(target, I.dir, strlen(I.dir)) != 0)
			continue;
		in_dir++;
		cr_assert(is_swap, "descriptor %d (%s) in the swap directory is not a swap file", fd,
			  target);
		cr_assert(strstr(target, " (deleted)") != NULL, "swap file %s is reachable by name",
			  target);
		cr_assert_eq(fstat(fd, &st), 0);
		cr_assert(S_ISREG(st.st_mode));
		cr_assert_eq(st.st_nlink, 0, "%s has %lu names", target, (unsigned long)st.st_nlink);
		cr_assert_eq(st.st_mode & 07777, 0600, "%s has mode %o under umask 0", target,
			     (unsigned)(st.st_mode & 07777));
		cr_assert_eq(st.st_uid, geteuid());
		cr_assert_gt(st.st_blocks, 0, "%s holds nothing: the wrong file?", target);
	}
	cr_assert_eq(in_dir, 3, "%u descriptors in the swap directory, 3 swap files", in_dir);
	cr_assert_eq(memfds, 1, "%u memfds: the frame store should be the one", memfds);
	d = opendir(I.dir);
	cr_assert_not_null(d);
	while ((de = readdir(d)))
		entries += de->d_name[0] != '.';
	closedir(d);
	cr_assert_eq(entries, 0, "%u names in the swap directory", entries);
	umlmem_host_destroy(I.h);
	I.h = NULL;
	fd_set_now(after);
	cr_assert(memcmp(before, after, sizeof(before)) == 0, "the destroyed host left descriptors");
}

Test(isolation, files_unreachable_uring) { files_unreachable(UMLMEM_IO_URING); }
Test(isolation, files_unreachable_aio) { files_unreachable(UMLMEM_IO_AIO); }
Test(isolation, files_unreachable_sync) { files_unreachable(UMLMEM_IO_SYNC); }

/* The swap file holding @slot, opened again through /proc (buffered, read
   only: a second look that does not go through the library). */
static int reopen_swap(unsigned file)
{
	char link[64];
	int fd;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", swap_fd(host_swap(I.h), file));
	fd = open(link, O_RDONLY | O_CLOEXEC);
	cr_assert_geq(fd, 0, "open %s: %s", link, strerror(errno));
	return fd;
}

/* Scans the whole file for the marker; returns the offset of the first,
   or -1. */
static off_t find_marker(int fd)
{
	static uint8_t chunk[64 * 1024 + 8];
	struct stat st;
	off_t off = 0;

	cr_assert_eq(fstat(fd, &st), 0);
	while (off < st.st_size) {
		ssize_t n = pread(fd, chunk, sizeof(chunk), off);
		uint8_t *m;

		cr_assert_geq(n, 0);
		if (n == 0)
			break;
		m = memmem(chunk, (size_t)n, "SECRET!A", 8);
		if (m)
			return off + (m - chunk);
		off += n > 8 ? n - 8 : n;
	}
	return -1;
}

/*
 * A's secret in swap, three clusters of it, alone in the file. A fresh
 * descriptor on the file sees it there (so the check can see data). The
 * clusters are freed three ways: the pages of one are discarded, those of
 * the next are overwritten whole in memory (which drops their swap
 * copies), and the guest is destroyed. Each time, once the library says
 * the cluster was punched (swap_punches), the file reads as zeros at every
 * offset A's slots had, SEEK_DATA finds no data there, and at the end no
 * marker is left anywhere in the file.
 */
Test(isolation, freed_slots_punched)
{
	const uint64_t budget = 16, per = SWAP_CLUSTER_PAGES, n = 3 * SWAP_CLUSTER_PAGES;
	umlmem_guest *a;
	uint64_t *off = calloc(n, sizeof(uint64_t)), *cl = calloc(n, sizeof(uint64_t)), p0;
	uint64_t count[3] = { 0 };
	uint8_t *zero = calloc(1, PG);
	int fd;

	cr_assert(off && cl && zero);
	I.h = mk_host(budget, 0, 1, UMLMEM_NO_READAHEAD, UMLMEM_IO_AUTO);
	a = mk_guest(n * PG, 0, 0);
	write_secret(a, 0, n);
	evict_all(budget);
	cr_assert_eq(hinfo().swap_slots_used, n);
	fd = reopen_swap(0);
	for (uint64_t i = 0; i < n; i++) {
		uint64_t s = slot_of(a, i);
		unsigned file;

		cr_assert_neq(s, SLOT_NONE, "page %" PRIu64 " not in swap", i);
		swap_where(host_swap(I.h), s, &file, &off[i]);
		cl[i] = s / per;
		cr_assert_lt(cl[i], 3, "%" PRIu64 " slots in use, slot %" PRIu64 " beyond three "
			     "clusters", n, s);
		count[cl[i]]++;
		cr_assert_eq(pread(fd, I.buf, PG, (off_t)off[i]), (ssize_t)PG);
		secret(I.buf2, i);
		cr_assert(memcmp(I.buf, I.buf2, PG) == 0, "the file does not hold A's page %" PRIu64
			  " at offset %" PRIu64 ": the check would see nothing", i, off[i]);
	}
	cr_assert(count[0] == per && count[1] == per && count[2] == per);
	cr_assert_geq(find_marker(fd), 0);

#define EXPECT_GONE(c, how) do { \
		for (uint64_t i_ = 0; i_ < n; i_++) { \
			off_t d_; \
			if (cl[i_] != (c)) \
				continue; \
			memset(I.buf, 0x5a, PG); \
			cr_assert_eq(pread(fd, I.buf, PG, (off_t)off[i_]), (ssize_t)PG); \
			cr_assert(memcmp(I.buf, zero, PG) == 0, "%s: A's page %" PRIu64 " is still in " \
				  "the file at offset %" PRIu64 "%s", how, i_, off[i_], \
				  has_marker(I.buf, PG) ? " (the secret itself)" : ""); \
			d_ = lseek(fd, (off_t)off[i_], SEEK_DATA); \
			cr_assert(d_ < 0 ? errno == ENXIO : (uint64_t)d_ >= off[i_] + PG, \
				  "%s: SEEK_DATA at %" PRIu64 " finds data at %lld", how, off[i_], \
				  (long long)d_); \
		} \
	} while (0)

	/* 1: discard the pages of cluster 0 */
	p0 = hinfo().swap_punches;
	for (uint64_t i = 0; i < n; i++)
		if (cl[i] == 0)
			cr_assert_eq(umlmem_discard(a, i * PG, PG), 0);
	cr_assert_eq(hinfo().swap_punches, p0 + 1, "the cluster emptied by discards was not punched");
	EXPECT_GONE(0, "after a discard");
	/* 2: overwrite the pages of cluster 1 whole, in memory */
	p0 = hinfo().swap_punches;
	for (uint64_t i = 0; i < n; i++)
		if (cl[i] == 1) {
			bpage(I.buf, i, 3);
			cr_assert_eq(umlmem_write(a, i * PG, I.buf, PG), 0);
		}
	cr_assert_eq(hinfo().swap_punches, p0 + 1, "whole-page writes freed cluster 1 but it was "
		     "not punched");
	EXPECT_GONE(1, "after whole-page writes");
	/* 3: the guest goes */
	umlmem_guest_destroy(a);
	cr_assert_eq(hinfo().swap_slots_used, 0);
	EXPECT_GONE(2, "after the guest was destroyed");
	cr_assert_eq(find_marker(fd), -1, "A's secret is still in the swap file after every one of "
		     "its slots was freed");
	close(fd);
	free(off);
	free(cl);
	free(zero);
	tu_check(I.h);
#undef EXPECT_GONE
}
