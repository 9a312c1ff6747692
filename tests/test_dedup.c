/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The merge scanner and copy on write: exact savings, isolation of writes
 * between sharers, merge domains and opting out, volatility, zero pages,
 * the sharing limit, shared frames in swap, unmerging, pins, and the
 * background thread.
 *
 * Every expectation is computed from what the test wrote: a plain byte copy
 * of each guest says what every read must return, and the sharing counts
 * are derived from which pages the test made identical. The library's own
 * counters are compared with those numbers, never only with each other.
 *
 * The random tests print their seed on failure; UMLMEM_TEST_SEED=<seed>
 * replays a run. UMLMEM_TEST_SCALE=valgrind runs a tenth of their steps.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

#define PG UMLMEM_PAGE_SIZE
#define MAXG 12

/* One guest and the bytes it must read as. */
struct tg {
	umlmem_guest *g;
	uint8_t *mem;
	uint64_t bytes;
};

static char dir[64];
static umlmem_host *H;
static struct tg T[MAXG];
static uint64_t Seed;

static void setup(void)
{
	tu_mkswapdir(dir);
	H = NULL;
	memset(T, 0, sizeof(T));
	Seed = 0;
}

static void teardown(void)
{
	/* after a failed assertion guests and pins may remain: destroying
	   the host releases them all */
	umlmem_host_destroy(H);
	H = NULL;
	for (int i = 0; i < MAXG; i++)
		free(T[i].mem);
	memset(T, 0, sizeof(T));
	tu_rmswapdir(dir);
}

TestSuite(dedup, .init = setup, .fini = teardown);

/* ---- helpers ------------------------------------------------------------- */

/* Failures of the random tests name the seed, so they can be replayed. */
#define SCHK(cond, fmt, ...) \
	cr_assert(cond, "%s" fmt, sd(), ##__VA_ARGS__)

static uint64_t pick_seed(void)
{
	const char *s = getenv("UMLMEM_TEST_SEED");
	struct timespec ts;
	uint64_t st;

	if (s && *s)
		return strtoull(s, NULL, 0);
	clock_gettime(CLOCK_REALTIME, &ts);
	st = (uint64_t)ts.tv_sec * 1000000007ull ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32);
	return tu_splitmix64(&st);
}

/* The seed as a prefix for messages; "" in the tests that use none. */
static const char *sd(void)
{
	static char b[40];

	if (!Seed)
		return "";
	snprintf(b, sizeof(b), "[seed=0x%016" PRIx64 "] ", Seed);
	return b;
}

static uint64_t Rng;

static uint64_t below(uint64_t n)
{
	return tu_splitmix64(&Rng) % n;
}

/* A seed for page content from two numbers: equal pairs give equal pages,
   different pairs different ones. */
static uint64_t seed_of(uint64_t a, uint64_t b)
{
	uint64_t st = a * 0x100000001b3ull ^ (b << 20) ^ 0x5eed;

	return tu_splitmix64(&st) ^ b;
}

/* A page of content that is certainly not all zeros (a zero page would be
   freed by the scanner instead of shared, which would skew the counts). */
static void fill_page(uint8_t *p, uint64_t seed)
{
	tu_fill(p, PG, seed);
	p[0] |= 1;
}

static umlmem_host *mk_host_cfg(struct umlmem_host_config *cfg)
{
	umlmem_host *h = NULL;
	int rc;

	cfg->swap_dir = dir;
	rc = umlmem_host_create(cfg, &h);
	cr_assert_eq(rc, 0, "umlmem_host_create: %s: %s", umlmem_strerror(rc), umlmem_errmsg());
	return h;
}

/* A host of @budget_pages frames, no background threads unless @flags say. */
static umlmem_host *mk_host(uint64_t budget_pages, unsigned flags, uint32_t max_sharing)
{
	struct umlmem_host_config cfg;

	umlmem_host_config_init(&cfg);
	cfg.resident_bytes = budget_pages * PG;
	cfg.flags = flags;
	cfg.max_sharing = max_sharing;
	return mk_host_cfg(&cfg);
}

/* Guest slot @i: @bytes of RAM, its byte model all zeros. */
static void mk_guest(int i, uint64_t bytes, uint32_t domain, unsigned flags)
{
	struct umlmem_guest_config cfg;
	char name[16];
	int rc;

	cr_assert(i < MAXG && !T[i].g);
	snprintf(name, sizeof(name), "g%d", i);
	umlmem_guest_config_init(&cfg);
	cfg.ram_bytes = bytes;
	cfg.merge_domain = domain;
	cfg.flags = flags;
	cfg.name = name;
	rc = umlmem_guest_create(H, &cfg, &T[i].g);
	cr_assert_eq(rc, 0, "umlmem_guest_create(%d): %s: %s", i, umlmem_strerror(rc),
		     umlmem_errmsg());
	free(T[i].mem);
	T[i].mem = calloc(1, bytes);
	cr_assert_not_null(T[i].mem);
	T[i].bytes = bytes;
}

static void destroy_guest(int i)
{
	umlmem_guest_destroy(T[i].g);
	T[i].g = NULL;
}

static struct umlmem_stats hstats(void)
{
	struct umlmem_stats s;

	cr_assert_eq(umlmem_host_stats(H, &s), 0);
	return s;
}

static struct umlmem_stats gstats(int i)
{
	struct umlmem_stats s;

	cr_assert_eq(umlmem_guest_stats(T[i].g, &s), 0);
	return s;
}

static struct umlmem_host_info hinfo(void)
{
	struct umlmem_host_info in;

	cr_assert_eq(umlmem_host_info(H, &in, sizeof(in)), 0);
	return in;
}

/* Writes @len bytes of guest @i's model at @gpa to the guest. */
static void push_at(int line, int i, uint64_t gpa, uint64_t len)
{
	int rc = umlmem_write(T[i].g, gpa, T[i].mem + gpa, len);

	cr_assert_eq(rc, 0, "line %d: %swrite g%d %" PRIu64 "+%" PRIu64
		     ": %s: %s", line, sd(), i, gpa, len, umlmem_strerror(rc), umlmem_errmsg());
}
#define push(i, gpa, len) push_at(__LINE__, i, gpa, len)

/* Reads [gpa, gpa + len) of guest @i and compares it with the model. */
static void verify_range_at(int line, int i, uint64_t gpa, uint64_t len)
{
	uint8_t *buf = malloc(len ? len : 1);
	const uint8_t *want = T[i].mem + gpa;
	int rc;

	cr_assert_not_null(buf);
	memset(buf, 0xa5, len);
	rc = umlmem_read(T[i].g, gpa, buf, len);
	if (rc)
		free(buf);
	cr_assert_eq(rc, 0, "line %d: %sread g%d %" PRIu64 "+%" PRIu64
		     ": %s: %s", line, sd(), i, gpa, len, umlmem_strerror(rc), umlmem_errmsg());
	if (memcmp(buf, want, len)) {
		uint64_t k = 0;
		unsigned got, exp;

		while (buf[k] == want[k])
			k++;
		got = buf[k];
		exp = want[k];
		free(buf);
		cr_assert_fail("line %d: %sg%d byte %" PRIu64 " (page %"
			       PRIu64 ") reads %#x, expected %#x", line, sd(), i, gpa + k,
			       (gpa + k) / PG, got, exp);
	}
	free(buf);
}
#define verify_range(i, gpa, len) verify_range_at(__LINE__, i, gpa, len)

static void verify_all_at(int line)
{
	for (int i = 0; i < MAXG; i++)
		if (T[i].g)
			verify_range_at(line, i, 0, T[i].bytes);
}
#define verify_all() verify_all_at(__LINE__)

/* Counts that hold whenever no call is in flight: every page has one state,
   and each frame is counted once however many pages share it (a frame with
   k sharers is k resident pages and k - 1 sharing pages). */
static void ident_at(int line)
{
	struct umlmem_stats s = hstats();
	struct umlmem_host_info in = hinfo();

	cr_assert_eq(s.resident_pages + s.swapped_pages + s.zero_pages, s.ram_pages,
		     "line %d: %sresident %" PRIu64 " + swapped %" PRIu64
		     " + zero %" PRIu64 " != ram %" PRIu64, line, sd(), s.resident_pages,
		     s.swapped_pages, s.zero_pages, s.ram_pages);
	cr_assert_eq(s.frames_used, s.resident_pages - s.sharing_pages + in.frames_cached +
		     in.frames_busy,
		     "line %d: %sframes_used %" PRIu64 " != resident %"
		     PRIu64 " - sharing %" PRIu64 " + cached %" PRIu64 " + busy %" PRIu64, line,
		     sd(), s.frames_used, s.resident_pages, s.sharing_pages, in.frames_cached,
		     in.frames_busy);
	cr_assert_leq(s.shared_frames, s.sharing_pages, "line %d: shared_frames %" PRIu64
		      " > sharing_pages %" PRIu64, line, s.shared_frames, s.sharing_pages);
	cr_assert_leq(s.frames_used, in.frames_total, "line %d", line);
}
#define ident() ident_at(__LINE__)

/* Scans until nothing more merges: calls of at least two passes each (every
   resident page twice), until two calls in a row merge nothing, so that
   pages still volatile at the first of them have had their chance.
   Returns the pages merged. */
static uint64_t settle_at(int line)
{
	uint64_t per = 2 * hstats().resident_pages + 16, total = 0;
	int quiet = 0;

	for (int n = 0; n < 64 && quiet < 2; n++) {
		uint64_t m = UINT64_MAX;
		int rc = umlmem_dedup_scan(H, per, &m);

		cr_assert_eq(rc, 0, "line %d: umlmem_dedup_scan: %s", line, umlmem_strerror(rc));
		cr_assert_leq(m, per, "line %d: umlmem_dedup_scan(%" PRIu64 ") merged %" PRIu64,
			      line, per, m);
		total += m;
		quiet = m ? 0 : quiet + 1;
	}
	cr_assert_eq(quiet, 2, "line %d: the scanner still merges after 64 calls", line);
	return total;
}
#define settle() settle_at(__LINE__)

/* One call of exactly @pages visits; returns the pages merged. */
static uint64_t scan(uint64_t pages)
{
	uint64_t m = UINT64_MAX;
	int rc = umlmem_dedup_scan(H, pages, &m);

	cr_assert_eq(rc, 0, "umlmem_dedup_scan: %s", umlmem_strerror(rc));
	return m;
}

/* Evicts everything evictable; returns the pages that left memory. */
static uint64_t reclaim_all(void)
{
	uint64_t ev = UINT64_MAX;
	int rc = umlmem_reclaim(H, hinfo().frames_total, &ev);

	cr_assert_eq(rc, 0, "umlmem_reclaim: %s: %s", umlmem_strerror(rc), umlmem_errmsg());
	return ev;
}

/* End of every test: the invariants, then every guest destroyed, which must
   leave nothing behind (no frame, no slot, no sharing), then the host. */
static void finish(void)
{
	struct umlmem_stats s;
	struct umlmem_host_info in;

	ident();
	tu_check(H);
	for (int i = 0; i < MAXG; i++)
		destroy_guest(i);
	tu_check(H);
	s = hstats();
	in = hinfo();
	cr_assert_eq(s.ram_pages, 0);
	cr_assert_eq(s.frames_used, 0, "frames_used %" PRIu64 " with no guest left",
		     s.frames_used);
	cr_assert_eq(s.shared_frames, 0);
	cr_assert_eq(s.sharing_pages, 0);
	cr_assert_eq(in.swap_slots_used, 0, "%" PRIu64 " swap slots in use with no guest left",
		     in.swap_slots_used);
	umlmem_host_destroy(H);
	H = NULL;
}

#define EQ(what, got, want)                                                         \
	cr_assert_eq((uint64_t)(got), (uint64_t)(want),                                \
		     "%s%s: %" PRIu64 ", expected %" PRIu64, sd(), \
		     what, (uint64_t)(got), (uint64_t)(want))

/* ---- 1. savings -------------------------------------------------------------- */

/* N guests whose first 3/4 are the same page for page (distinct between page
   indexes) and whose rest is their own: exactly (N - 1) * 3P/4 pages saved,
   one shared frame per common index. */
Test(dedup, savings_exact)
{
	const int N = 8;
	const uint64_t P = 256, S = 3 * P / 4;
	struct umlmem_stats s;
	struct umlmem_host_info in;
	uint64_t merged;

	H = mk_host(N * P + 64, 0, 0);
	for (int g = 0; g < N; g++) {
		mk_guest(g, P * PG, 0, 0);
		for (uint64_t i = 0; i < P; i++)
			fill_page(T[g].mem + i * PG, i < S ? seed_of(1, i) : seed_of(100 + g, i));
		push(g, 0, P * PG);
	}
	s = hstats();
	EQ("frames_used before", s.frames_used, N * P);
	EQ("sharing_pages before", s.sharing_pages, 0);

	merged = settle();
	s = hstats();
	in = hinfo();
	EQ("sharing_pages", s.sharing_pages, (N - 1) * S);
	EQ("shared_frames", s.shared_frames, S);
	EQ("frames_used", s.frames_used, N * P - (N - 1) * S);
	EQ("resident_pages", s.resident_pages, N * P);
	EQ("pages merged by the calls", merged, (N - 1) * S);
	EQ("pages_merged", in.pages_merged, (N - 1) * S);
	EQ("zero_merged", in.zero_merged, 0);
	EQ("stable_frames", in.stable_frames, S);
	EQ("cow_breaks", s.cow_breaks, 0);
	verify_all();

	/* more scans find nothing new */
	EQ("merged by a later settle", settle(), 0);
	EQ("sharing_pages after more scans", hstats().sharing_pages, (N - 1) * S);
	ident();
	finish();
}

/* ---- 2. copy on write ------------------------------------------------------- */

/* Random writes of every kind over merged guests. Which guests still share
   each common page is tracked apart (a bit per guest), so the exact copy
   count, sharing count and per-guest copy counts are known after every
   write, and the byte models show any write leaking into another guest. */
Test(dedup, cow_isolation)
{
	enum { N = 4 };
	const uint64_t P = 32, S = 24, bytes = P * PG;
	uint64_t steps = tu_scaled(600), exp_cow = 0, exp_gcow[N] = { 0 };
	unsigned group[32];

	Seed = pick_seed();
	Rng = Seed;
	H = mk_host(N * P + 64, 0, 0);
	for (int g = 0; g < N; g++) {
		mk_guest(g, bytes, 0, 0);
		for (uint64_t i = 0; i < P; i++)
			fill_page(T[g].mem + i * PG, i < S ? seed_of(2, i) : seed_of(200 + g, i));
		push(g, 0, bytes);
	}
	settle();
	EQ("sharing_pages after merge", hstats().sharing_pages, (N - 1) * S);
	for (uint64_t i = 0; i < P; i++)
		group[i] = i < S ? (1u << N) - 1 : 0;

	for (uint64_t step = 0; step < steps; step++) {
		int g = (int)below(N);
		uint64_t r = below(100), gpa, len;
		struct umlmem_stats s;
		uint64_t sharing = 0, shared = 0;

		if (r < 40) {
			/* any offset, any length, often across pages */
			len = 1 + below(3 * PG);
			gpa = below(bytes);
			if (len > bytes - gpa)
				len = bytes - gpa;
		} else if (r < 70) {
			/* whole pages: the copy is skipped, the sharing is not */
			gpa = below(P) * PG;
			len = (1 + below(3)) * PG;
			if (len > bytes - gpa)
				len = bytes - gpa;
		} else {
			/* through a write pin, a random part of one page */
			gpa = below(P) * PG;
			len = PG;
		}
		for (uint64_t i = gpa / PG; i <= (gpa + len - 1) / PG; i++) {
			if (group[i] & (1u << g)) {
				if (__builtin_popcount(group[i]) > 1) {
					exp_cow++;
					exp_gcow[g]++;
				}
				group[i] &= ~(1u << g);
			}
		}
		if (r < 70) {
			tu_fill(T[g].mem + gpa, len, tu_splitmix64(&Rng));
			push(g, gpa, len);
		} else {
			void *p = NULL;
			uint64_t a = below(PG), n = 1 + below(PG - a);
			int rc = umlmem_pin(T[g].g, gpa, UMLMEM_WRITE, &p);

			SCHK(rc == 0, "step %" PRIu64 ": write pin g%d page %" PRIu64 ": %s", step, g,
			     gpa / PG, umlmem_strerror(rc));
			/* the pin shows the page as it was, then takes the write */
			SCHK(memcmp(p, T[g].mem + gpa, PG) == 0,
			     "step %" PRIu64 ": write pin g%d page %" PRIu64 " shows other bytes",
			     step, g, gpa / PG);
			tu_fill(T[g].mem + gpa + a, n, tu_splitmix64(&Rng));
			memcpy((uint8_t *)p + a, T[g].mem + gpa + a, n);
			SCHK(umlmem_unpin(T[g].g, gpa) == 0, "unpin");
		}

		for (uint64_t i = 0; i < P; i++) {
			int k = __builtin_popcount(group[i]);

			sharing += k > 1 ? (uint64_t)k - 1 : 0;
			shared += k > 1;
		}
		s = hstats();
		SCHK(s.cow_breaks == exp_cow && s.sharing_pages == sharing &&
		     s.shared_frames == shared && s.frames_used == N * P - sharing,
		     "step %" PRIu64 " (g%d %" PRIu64 "+%" PRIu64 ", kind %" PRIu64 "): cow_breaks %"
		     PRIu64 " sharing %" PRIu64 " shared %" PRIu64 " frames %" PRIu64 ", expected %"
		     PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64, step, g, gpa, len, r,
		     s.cow_breaks, s.sharing_pages, s.shared_frames, s.frames_used, exp_cow,
		     sharing, shared, N * P - sharing);
		for (int j = 0; j < N; j++)
			SCHK(gstats(j).cow_breaks == exp_gcow[j], "step %" PRIu64 ": g%d cow_breaks %"
			     PRIu64 ", expected %" PRIu64, step, j, gstats(j).cow_breaks, exp_gcow[j]);
		/* the written guest right away, everyone now and then */
		verify_range(g, gpa, len);
		if (step % 16 == 15)
			verify_all();
	}
	verify_all();
	cr_assert_gt(exp_cow, 0, "the run broke no sharing: it tested nothing");
	finish();
}

/* A pair sharing one frame: the first writer copies, the second is alone
   in the frame by then and writes in place. */
Test(dedup, cow_last_sharer)
{
	struct umlmem_stats s;

	H = mk_host(64, 0, 0);
	for (int g = 0; g < 2; g++) {
		mk_guest(g, 4 * PG, 0, 0);
		for (uint64_t i = 0; i < 4; i++)
			fill_page(T[g].mem + i * PG, i == 0 ? seed_of(3, 0) : seed_of(300 + g, i));
		push(g, 0, 4 * PG);
	}
	settle();
	s = hstats();
	EQ("shared_frames", s.shared_frames, 1);
	EQ("sharing_pages", s.sharing_pages, 1);
	EQ("frames_used", s.frames_used, 7);

	T[0].mem[100] ^= 0xff;
	push(0, 100, 1);
	s = hstats();
	EQ("cow_breaks after the first writer", s.cow_breaks, 1);
	EQ("g0 cow_breaks", gstats(0).cow_breaks, 1);
	EQ("sharing_pages after the first writer", s.sharing_pages, 0);
	EQ("shared_frames after the first writer", s.shared_frames, 0);
	EQ("frames_used after the first writer", s.frames_used, 8);
	verify_all();

	T[1].mem[200] ^= 0xff;
	push(1, 200, 1);
	s = hstats();
	EQ("cow_breaks after the last sharer wrote", s.cow_breaks, 1);
	EQ("g1 cow_breaks", gstats(1).cow_breaks, 0);
	EQ("frames_used after the last sharer wrote", s.frames_used, 8);
	verify_all();
	finish();
}

/* ---- 3. domains and opting out ---------------------------------------------- */

/* The same content in two guests of domain 0, two of domain 1, a NOMERGE
   guest in each, and a lone guest of domain 7: only the pairs share. Then
   every guest writes every page in turn; only the first writer of each
   pair copies, and no write shows anywhere else. */
Test(dedup, domains_and_optout)
{
	enum { N = 7 };
	const uint64_t P = 32;
	static const uint32_t dom[N] = { 0, 0, 1, 1, 0, 1, 7 };
	static const unsigned flg[N] = { 0, 0, 0, 0, UMLMEM_GUEST_NOMERGE,
					 UMLMEM_GUEST_NOMERGE, 0 };
	static const uint64_t cows[N] = { 32, 0, 32, 0, 0, 0, 0 };
	struct umlmem_stats s;

	H = mk_host(N * P + 64, 0, 0);
	for (int g = 0; g < N; g++) {
		mk_guest(g, P * PG, dom[g], flg[g]);
		for (uint64_t i = 0; i < P; i++)
			fill_page(T[g].mem + i * PG, seed_of(4, i));
		push(g, 0, P * PG);
	}
	settle();
	s = hstats();
	/* one frame per page and domain: 2P saved; across domains it would be
	   more, with the NOMERGE guests more still */
	EQ("sharing_pages", s.sharing_pages, 2 * P);
	EQ("shared_frames", s.shared_frames, 2 * P);
	EQ("frames_used", s.frames_used, N * P - 2 * P);
	verify_all();

	for (int g = 0; g < N; g++) {
		for (uint64_t i = 0; i < P; i++) {
			uint64_t off = i * PG + (uint64_t)(g * 131 + i * 7) % PG;

			T[g].mem[off] ^= (uint8_t)(0x11 * (g + 1));
			push(g, off, 1);
		}
		verify_all();
	}
	for (int g = 0; g < N; g++)
		EQ("guest cow_breaks", gstats(g).cow_breaks, cows[g]);
	s = hstats();
	EQ("sharing_pages after every page was written", s.sharing_pages, 0);
	EQ("frames_used after every page was written", s.frames_used, N * P);
	finish();
}

/* ---- 4. volatility ---------------------------------------------------------- */

/* Two guests, identical except that pages [0, V) are rewritten (identically
   in both) between or in the middle of every pass: those never merge. Each
   call scans exactly one pass (both guests' 2P resident pages), so pass
   boundaries are known. A page left alone merges in the second pass after
   its last write: skipped in the first as written during the last one. */
Test(dedup, volatile_not_merged)
{
	const uint64_t P = 32, V = 8, rounds = 6;
	struct umlmem_host_info in0, in1;
	uint64_t m;

	H = mk_host(4 * P, 0, 0);
	for (int g = 0; g < 2; g++) {
		mk_guest(g, P * PG, 0, 0);
		for (uint64_t i = 0; i < P; i++)
			fill_page(T[g].mem + i * PG, i < V ? seed_of(500 + g, i) : seed_of(5, i));
		push(g, 0, P * PG);
	}
	/* written before the first scan: the first pass merges what is equal */
	EQ("merged by the first pass", scan(2 * P), P - V);
	EQ("merged by the second pass", scan(2 * P), 0);

	for (uint64_t r = 0; r < rounds; r++) {
		bool mid = r & 1;

		in0 = hinfo();
		m = mid ? scan(P) : 0;
		for (int g = 0; g < 2; g++) {
			for (uint64_t i = 0; i < V; i++)
				fill_page(T[g].mem + i * PG, seed_of(600 + r, i));
			push(g, 0, V * PG);
		}
		m += scan(mid ? P : 2 * P);
		in1 = hinfo();
		EQ("merged in a pass with volatile pages", m, 0);
		EQ("sharing_pages with volatile pages", hstats().sharing_pages, P - V);
		/* at least the copies visited after the write were skipped */
		cr_assert_geq(in1.pages_volatile - in0.pages_volatile, V,
			      "round %" PRIu64 ": %" PRIu64 " volatile skips, expected at least %"
			      PRIu64, r, in1.pages_volatile - in0.pages_volatile, V);
		verify_all();
	}
	/* left alone now: the next pass still skips them, the one after merges */
	EQ("merged in the first quiet pass", scan(2 * P), 0);
	EQ("merged in the second quiet pass", scan(2 * P), V);
	EQ("sharing_pages once stable", hstats().sharing_pages, P);
	verify_all();

	/* The volatile page can also be the one already waiting in the index:
	   page 0 of both guests gets new equal bytes, g1's copy becomes a
	   candidate in the first half of a pass (g1, the newer guest, is
	   scanned first), is rewritten with the very same bytes, and then g0's
	   quiet copy comes by. g1's was written during this pass: no merge
	   until two passes later. */
	for (int g = 0; g < 2; g++) {
		fill_page(T[g].mem, seed_of(700, 0));
		push(g, 0, PG);
	}
	EQ("merged in the pass after the write", scan(2 * P), 0);
	EQ("merged in g1's half", scan(P), 0);
	push(1, 0, PG);
	EQ("merged in g0's half, g1's copy rewritten", scan(P), 0);
	EQ("merged in the pass after the rewrite", scan(2 * P), 0);
	EQ("merged in the second pass after the rewrite", scan(2 * P), 1);
	EQ("sharing_pages at the end", hstats().sharing_pages, P);
	verify_all();
	finish();
}

/* ---- 5. zero pages ---------------------------------------------------------- */

/* Pages that hold zeros (written as zeros, or cleared by later writes) give
   their frame back and read as zeros; pages that differ from zero in one
   byte stay. */
Test(dedup, zero_pages)
{
	const uint64_t P = 64;
	uint64_t written = 0, zeros = 0, untouched = 0, merged;
	struct umlmem_stats s;
	struct umlmem_host_info in;

	H = mk_host(2 * P, 0, 0);
	mk_guest(0, P * PG, 0, 0);
	for (uint64_t i = 0; i < P; i++) {
		uint8_t *p = T[0].mem + i * PG;

		switch (i % 4) {
		case 0:         /* zeros written whole */
			push(0, i * PG, PG);
			written++;
			zeros++;
			break;
		case 1:         /* never written */
			untouched++;
			break;
		case 2:         /* content, then cleared in two halves */
			fill_page(p, seed_of(7, i));
			push(0, i * PG, PG);
			memset(p, 0, PG);
			push(0, i * PG, PG / 2);
			push(0, i * PG + PG / 2, PG / 2);
			written++;
			zeros++;
			break;
		default:        /* all zeros but one byte, or random */
			if (i % 8 == 3)
				p[(i * 37) % PG] = (uint8_t)(1 + i);
			else
				fill_page(p, seed_of(8, i));
			push(0, i * PG, PG);
			written++;
			break;
		}
	}
	s = hstats();
	EQ("resident before", s.resident_pages, written);
	EQ("zero_pages before", s.zero_pages, untouched);
	EQ("frames_used before", s.frames_used, written);

	merged = settle();
	s = hstats();
	in = hinfo();
	EQ("merged", merged, zeros);
	EQ("zero_merged", in.zero_merged, zeros);
	EQ("resident after", s.resident_pages, written - zeros);
	EQ("zero_pages after", s.zero_pages, untouched + zeros);
	EQ("frames_used after", s.frames_used, written - zeros);
	EQ("sharing_pages", s.sharing_pages, 0);
	verify_all();

	/* a page freed that way takes a write like any untouched page */
	T[0].mem[5] = 0x42;
	push(0, 5, 1);
	EQ("frames_used after writing a zero page", hstats().frames_used, written - zeros + 1);
	verify_all();
	finish();
}

/* UMLMEM_DEDUP_ZERO_ONLY: zero pages are still freed, but equal pages with
   content, across guests or within one, never share. */
Test(dedup, zero_only)
{
	const uint64_t P = 32;
	struct umlmem_stats s;
	struct umlmem_host_info in;

	H = mk_host(4 * P, UMLMEM_DEDUP_ZERO_ONLY, 0);
	for (int g = 0; g < 2; g++) {
		mk_guest(g, P * PG, 0, 0);
		/* even pages: 4 contents, each repeated in both guests and
		   within each; odd pages: zeros */
		for (uint64_t i = 0; i < P; i += 2)
			fill_page(T[g].mem + i * PG, seed_of(9, i % 8));
		push(g, 0, P * PG);
	}
	EQ("frames_used before", hstats().frames_used, 2 * P);
	settle();
	s = hstats();
	in = hinfo();
	EQ("sharing_pages", s.sharing_pages, 0);
	EQ("shared_frames", s.shared_frames, 0);
	EQ("zero_merged", in.zero_merged, P);
	EQ("resident_pages", s.resident_pages, P);
	EQ("frames_used", s.frames_used, P);
	EQ("zero_pages", s.zero_pages, P);
	verify_all();
	finish();
}

/* ---- 6. the sharing limit --------------------------------------------------- */

/* The largest number of pages any frame serves, read from the frame table. */
static uint32_t max_refs(void)
{
	uint32_t m = 0;

	pthread_mutex_lock(&H->lock);
	for (uint64_t f = 0; f < H->nframes; f++)
		if (H->frames[f].refs > m)
			m = H->frames[f].refs;
	pthread_mutex_unlock(&H->lock);
	return m;
}

/* max_sharing 4: 10 equal pages need ceil(10/4) = 3 frames (4 + 4 + 2),
   saving 7; 3 more fill the third frame and start nothing shared. */
Test(dedup, max_sharing)
{
	struct umlmem_stats s;

	H = mk_host(64, 0, 4);
	for (int g = 0; g < 2; g++) {
		mk_guest(g, 8 * PG, 0, 0);
		for (uint64_t i = 0; i < 8; i++)
			fill_page(T[g].mem + i * PG, i < 5 ? seed_of(10, 0) : seed_of(1000 + g, i));
		push(g, 0, 8 * PG);
	}
	settle();
	s = hstats();
	EQ("sharing_pages", s.sharing_pages, 10 - 3);
	EQ("shared_frames", s.shared_frames, 3);
	EQ("frames_used", s.frames_used, 16 - 7);
	cr_assert_leq(max_refs(), 4, "a frame serves %u pages, max_sharing is 4", max_refs());
	verify_all();

	/* 13 equal pages: 4 + 4 + 4 + 1 */
	for (uint64_t i = 5; i < 8; i++)
		fill_page(T[0].mem + i * PG, seed_of(10, 0));
	push(0, 5 * PG, 3 * PG);
	settle();
	s = hstats();
	EQ("sharing_pages of 13", s.sharing_pages, 13 - 4);
	EQ("shared_frames of 13", s.shared_frames, 3);
	EQ("frames_used of 13", s.frames_used, 16 - 9);
	cr_assert_leq(max_refs(), 4, "a frame serves %u pages, max_sharing is 4", max_refs());
	verify_all();
	finish();
}

/* ---- 7. shared frames in swap ----------------------------------------------- */

/* A shared frame goes to swap once, and comes back once: the first sharer
   to read it faults it in, the others find it in memory and share it
   again. Readahead is off so that every frame in use is a page's. */
Test(dedup, swap_and_sharing)
{
	enum { N = 4 };
	const uint64_t P = 16;
	struct umlmem_stats s0, s;
	struct umlmem_host_info in;
	uint64_t ev;

	H = mk_host(256, UMLMEM_NO_READAHEAD, 0);
	for (int g = 0; g < N; g++) {
		mk_guest(g, P * PG, 0, 0);
		for (uint64_t i = 0; i < P; i++)
			fill_page(T[g].mem + i * PG, seed_of(11, i));
		push(g, 0, P * PG);
	}
	settle();
	EQ("sharing_pages merged", hstats().sharing_pages, (N - 1) * P);

	s0 = hstats();
	ev = reclaim_all();
	s = hstats();
	in = hinfo();
	EQ("pages evicted", ev, N * P);
	EQ("swap_outs: one per frame, not per page", s.swap_outs - s0.swap_outs, P);
	EQ("swap slots used", in.swap_slots_used, P);
	EQ("swapped_pages: every sharer", s.swapped_pages, N * P);
	EQ("resident_pages after reclaim", s.resident_pages, 0);
	EQ("frames_used after reclaim", s.frames_used, 0);
	EQ("sharing_pages after reclaim", s.sharing_pages, 0);
	ident();

	/* page 0: one read from swap, then the other sharers map that frame */
	s0 = hstats();
	verify_range(0, 0, PG);
	s = hstats();
	EQ("frames_used after one sharer read", s.frames_used, 1);
	cr_assert_gt(s.swap_ins, s0.swap_ins, "a page came back without a swap-in");
	for (int g = 1; g < N; g++)
		verify_range(g, 0, PG);
	s = hstats();
	EQ("frames_used after every sharer read", s.frames_used, 1);
	EQ("sharing_pages after every sharer read", s.sharing_pages, N - 1);
	EQ("shared_frames after every sharer read", s.shared_frames, 1);
	EQ("swapped_pages", s.swapped_pages, N * P - N);

	/* all of it */
	verify_all();
	s = hstats();
	EQ("frames_used after reading all", s.frames_used, P);
	EQ("sharing_pages after reading all", s.sharing_pages, (N - 1) * P);
	EQ("shared_frames after reading all", s.shared_frames, P);
	ident();

	/* a write copies, and only the writer sees it */
	s0 = hstats();
	T[2].mem[5 * PG + 9] ^= 0x5a;
	push(2, 5 * PG + 9, 1);
	s = hstats();
	EQ("cow_breaks", s.cow_breaks - s0.cow_breaks, 1);
	EQ("frames_used after the write", s.frames_used, P + 1);
	EQ("sharing_pages after the write", s.sharing_pages, (N - 1) * P - 1);
	verify_all();

	/* page 1 in swap again; only g1 reads it back, alone in the frame,
	   and writes: no copy, and the others still get the old bytes from
	   swap */
	reclaim_all();
	EQ("frames_used after the second reclaim", hstats().frames_used, 0);
	verify_range(1, 1 * PG, PG);
	s0 = hstats();
	T[1].mem[1 * PG + 77] ^= 0xa5;
	push(1, 1 * PG + 77, 1);
	s = hstats();
	EQ("cow_breaks writing a frame no one else maps", s.cow_breaks - s0.cow_breaks, 0);
	for (int g = 0; g < N; g++)
		verify_range(g, 1 * PG, PG);
	s = hstats();
	EQ("frames_used: g1's own page 1 and the others' shared one", s.frames_used, 2);
	EQ("sharing_pages on page 1", s.sharing_pages, N - 2);
	verify_all();
	ident();
	finish();
}

/* ---- 8. everything in any order --------------------------------------------- */

enum { AO_G = 4, AO_PAGES = 40, AO_BUDGET = 48, AO_POOL = 6 };

/* A page from a small pool (index AO_POOL: zeros), so that equal pages are
   common and keep merging, splitting, going to swap and coming back. */
static void pool_page(uint8_t *p, size_t len, unsigned k)
{
	uint8_t page[PG];

	if (k == AO_POOL)
		memset(page, 0, PG);
	else
		fill_page(page, seed_of(12, k));
	memcpy(p, page, len);
}

static void ao_guest(int i)
{
	/* g3 ends in a partial page */
	mk_guest(i, AO_PAGES * PG - (i == 3 ? 100 : 0), (uint32_t)below(2),
		 below(5) ? 0 : UMLMEM_GUEST_NOMERGE);
}

/* Writes, scans, reclaims, discards, pins, merge switches and guest
   destruction in a seeded random order over guests whose RAM together is
   several times the budget; the byte models say what every read returns. */
Test(dedup, any_order)
{
	uint64_t steps = tu_scaled(10000), destroys = 0;
	struct umlmem_stats s;
	struct umlmem_host_info in;

	Seed = pick_seed();
	Rng = Seed;
	{
		struct umlmem_host_config cfg;

		umlmem_host_config_init(&cfg);
		cfg.resident_bytes = AO_BUDGET * PG;
		cfg.reclaim_batch = 16;
		H = mk_host_cfg(&cfg);
	}
	for (int i = 0; i < AO_G; i++)
		ao_guest(i);

	for (uint64_t step = 0; step < steps; step++) {
		int g = (int)below(AO_G);
		uint64_t bytes = T[g].bytes, np = (bytes + PG - 1) / PG;
		uint64_t r = below(100), k = below(np), gpa, len;
		int rc;

		if (r < 30) {
			/* whole pages from the pool */
			uint64_t n = 1 + below(3);

			if (n > np - k)
				n = np - k;
			gpa = k * PG;
			len = n * PG;
			if (len > bytes - gpa)
				len = bytes - gpa;
			for (uint64_t j = 0; j < n; j++) {
				uint64_t l = len - j * PG < PG ? len - j * PG : PG;

				pool_page(T[g].mem + gpa + j * PG, l, (unsigned)below(AO_POOL + 1));
			}
			push(g, gpa, len);
		} else if (r < 40) {
			/* random bytes anywhere */
			gpa = below(bytes);
			len = 1 + below(2 * PG);
			if (len > bytes - gpa)
				len = bytes - gpa;
			tu_fill(T[g].mem + gpa, len, tu_splitmix64(&Rng));
			push(g, gpa, len);
		} else if (r < 55) {
			gpa = below(bytes);
			len = 1 + below(3 * PG);
			if (len > bytes - gpa)
				len = bytes - gpa;
			verify_range(g, gpa, len);
		} else if (r < 67) {
			uint64_t want = 1 + below(200), m = UINT64_MAX;

			rc = umlmem_dedup_scan(H, want, &m);
			SCHK(rc == 0 && m <= want, "step %" PRIu64 ": scan(%" PRIu64 "): %s, merged %"
			     PRIu64, step, want, umlmem_strerror(rc), m);
		} else if (r < 75) {
			uint64_t want = 1 + below(AO_BUDGET), ev;

			rc = umlmem_reclaim(H, want, &ev);
			SCHK(rc == 0, "step %" PRIu64 ": reclaim(%" PRIu64 "): %s: %s", step, want,
			     umlmem_strerror(rc), umlmem_errmsg());
		} else if (r < 82) {
			uint64_t n = 1 + below(4);

			if (n > np - k)
				n = np - k;
			gpa = k * PG;
			len = k + n == np ? bytes - gpa : n * PG;
			rc = umlmem_discard(T[g].g, gpa, len);
			SCHK(rc == 0, "step %" PRIu64 ": discard g%d %" PRIu64 "+%" PRIu64 ": %s: %s",
			     step, g, gpa, len, umlmem_strerror(rc), umlmem_errmsg());
			memset(T[g].mem + gpa, 0, len);
		} else if (r < 88) {
			unsigned acc = (unsigned)(1 + below(3));
			uint64_t in = bytes - k * PG < PG ? bytes - k * PG : PG;
			void *p = NULL;

			rc = umlmem_pin(T[g].g, k * PG, acc, &p);
			SCHK(rc == 0, "step %" PRIu64 ": pin g%d page %" PRIu64 ": %s: %s", step, g,
			     k, umlmem_strerror(rc), umlmem_errmsg());
			SCHK(memcmp(p, T[g].mem + k * PG, in) == 0,
			     "step %" PRIu64 ": pin g%d page %" PRIu64 " shows other bytes", step, g, k);
			if (acc & UMLMEM_WRITE) {
				uint64_t a = below(in), n = 1 + below(in - a);

				tu_fill(T[g].mem + k * PG + a, n, tu_splitmix64(&Rng));
				memcpy((uint8_t *)p + a, T[g].mem + k * PG + a, n);
			}
			SCHK(umlmem_unpin(T[g].g, k * PG) == 0, "step %" PRIu64 ": unpin", step);
		} else if (r < 91) {
			int on = (int)below(2);

			rc = umlmem_guest_set_merge(T[g].g, on);
			SCHK(rc == 0, "step %" PRIu64 ": set_merge(g%d, %d): %s: %s", step, g, on,
			     umlmem_strerror(rc), umlmem_errmsg());
		} else if (r < 94) {
			/* a guest goes, whatever it shares; the others keep
			   every byte */
			destroy_guest(g);
			destroys++;
			verify_all();
			ao_guest(g);
		} else {
			verify_range(g, 0, bytes);
		}
		if (step % 100 == 99) {
			ident();
			tu_check(H);
		}
	}
	verify_all();
	ident();
	tu_check(H);
	s = hstats();
	in = hinfo();
	cr_log_info("dedup/any_order: seed 0x%016" PRIx64 ", %" PRIu64 " steps, %" PRIu64
		    " guests destroyed, %" PRIu64 " pages merged, %" PRIu64 " copies on write, %"
		    PRIu64 " swap-outs", Seed, steps, destroys, in.pages_merged, s.cow_breaks,
		    s.swap_outs);

	/* the same for a guest that certainly shares: merge everything, then
	   destroy g0 */
	for (int i = 0; i < AO_G; i++) {
		cr_assert_eq(umlmem_guest_set_merge(T[i].g, 1), 0);
		for (uint64_t j = 0; j < 4; j++)
			pool_page(T[i].mem + j * PG, PG, 0);
		push(i, 0, 4 * PG);
	}
	settle();
	s = hstats();
	cr_assert_gt(s.sharing_pages, 0, "nothing shared before the destroy");
	destroy_guest(0);
	verify_all();
	ident();
	tu_check(H);
	finish();
}

/* ---- 9. unmerging ----------------------------------------------------------- */

static void read_guest(int i)
{
	verify_range(i, 0, T[i].bytes);
}

/* set_merge(g, 0) gives g private copies of everything it shares, in memory
   at once and in swap when it comes back, whoever reads first; scans leave
   it alone until set_merge(g, 1). */
Test(dedup, unmerge)
{
	const uint64_t P = 16;
	struct umlmem_stats s, a0;

	H = mk_host(256, UMLMEM_NO_READAHEAD, 0);
	for (int g = 0; g < 3; g++) {
		mk_guest(g, P * PG, 0, 0);
		for (uint64_t i = 0; i < P; i++)
			fill_page(T[g].mem + i * PG, seed_of(13, i));
		push(g, 0, P * PG);
	}
	settle();
	EQ("sharing_pages of three", hstats().sharing_pages, 2 * P);

	/* in memory */
	cr_assert_eq(umlmem_guest_set_merge(T[0].g, 0), 0);
	s = hstats();
	EQ("sharing_pages after unmerging g0", s.sharing_pages, P);
	EQ("shared_frames after unmerging g0", s.shared_frames, P);
	EQ("frames_used after unmerging g0", s.frames_used, 2 * P);
	verify_all();
	EQ("merged while g0 is off", settle(), 0);
	EQ("sharing_pages after scans with g0 off", hstats().sharing_pages, P);
	cr_assert_eq(umlmem_guest_set_merge(T[0].g, 1), 0);
	settle();
	s = hstats();
	EQ("sharing_pages after g0 is back", s.sharing_pages, 2 * P);
	EQ("frames_used after g0 is back", s.frames_used, P);
	verify_all();

	/* in swap, another sharer reading first */
	EQ("evicted", reclaim_all(), 3 * P);
	read_guest(1);
	cr_assert_eq(umlmem_guest_set_merge(T[0].g, 0), 0);
	read_guest(0);
	read_guest(2);
	s = hstats();
	EQ("sharing_pages, g1 read first", s.sharing_pages, P);
	EQ("frames_used, g1 read first", s.frames_used, 2 * P);

	/* in swap, g0 reading first: the others must not join its frames */
	cr_assert_eq(umlmem_guest_set_merge(T[0].g, 1), 0);
	settle();
	EQ("sharing_pages merged again", hstats().sharing_pages, 2 * P);
	EQ("evicted again", reclaim_all(), 3 * P);
	cr_assert_eq(umlmem_guest_set_merge(T[0].g, 0), 0);
	read_guest(0);
	read_guest(1);
	read_guest(2);
	s = hstats();
	EQ("sharing_pages, g0 read first", s.sharing_pages, P);
	EQ("frames_used, g0 read first", s.frames_used, 2 * P);
	/* g0 shares nothing, so its writes copy nothing */
	a0 = gstats(0);
	for (uint64_t i = 0; i < P; i++) {
		T[0].mem[i * PG + 3] ^= 0x3c;
		push(0, i * PG + 3, 1);
	}
	EQ("g0 cow_breaks writing while unmerged", gstats(0).cow_breaks - a0.cow_breaks, 0);
	verify_all();
	finish();
}

/* ---- 10. pins --------------------------------------------------------------- */

/* A pinned page is never merged; a read pin of a shared page makes the pinner
   a copy of its own, at an address that holds through nested pins, scans
   and a write pin. */
Test(dedup, pinned_never_merged)
{
	const uint64_t P = 8;
	void *r0 = NULL, *w1 = NULL, *p1 = NULL, *p2 = NULL, *p3 = NULL;
	struct umlmem_stats s;

	H = mk_host(64, 0, 0);
	for (int g = 0; g < 2; g++) {
		mk_guest(g, P * PG, 0, 0);
		for (uint64_t i = 0; i < P; i++)
			fill_page(T[g].mem + i * PG, seed_of(14, i));
		push(g, 0, P * PG);
	}
	cr_assert_eq(umlmem_pin(T[0].g, 0, UMLMEM_READ, &r0), 0);
	cr_assert_eq(umlmem_pin(T[0].g, PG, UMLMEM_WRITE, &w1), 0);
	settle();
	s = hstats();
	EQ("sharing_pages with two pages pinned", s.sharing_pages, P - 2);
	EQ("frames_used with two pages pinned", s.frames_used, 2 * P - (P - 2));
	cr_assert(memcmp(r0, T[0].mem, PG) == 0 && memcmp(w1, T[0].mem + PG, PG) == 0);
	cr_assert_eq(umlmem_unpin(T[0].g, 0), 0);
	cr_assert_eq(umlmem_unpin(T[0].g, PG), 0);
	settle();
	EQ("sharing_pages once unpinned", hstats().sharing_pages, P);
	verify_all();

	/* a read pin of a shared page: a copy, stable from then on */
	cr_assert_eq(umlmem_pin(T[0].g, 3 * PG, UMLMEM_READ, &p1), 0);
	s = hstats();
	EQ("sharing_pages after a read pin", s.sharing_pages, P - 1);
	EQ("frames_used after a read pin", s.frames_used, P + 1);
	cr_assert(memcmp(p1, T[0].mem + 3 * PG, PG) == 0, "the read pin shows other bytes");
	cr_assert_eq(umlmem_pin(T[0].g, 3 * PG, UMLMEM_READ, &p2), 0);
	cr_assert_eq(p2, p1, "a nested read pin moved the page");
	settle();
	EQ("sharing_pages with the page pinned", hstats().sharing_pages, P - 1);
	cr_assert_eq(umlmem_pin(T[0].g, 3 * PG, UMLMEM_WRITE, &p3), 0);
	cr_assert_eq(p3, p1, "a write pin over read pins moved the page");
	memset((uint8_t *)p3 + 100, 0xee, 50);
	memset(T[0].mem + 3 * PG + 100, 0xee, 50);
	cr_assert(memcmp(p1, T[0].mem + 3 * PG, PG) == 0, "the first pin does not see the write");
	verify_all();
	settle();
	cr_assert(memcmp(p1, T[0].mem + 3 * PG, PG) == 0, "a scan changed a pinned page");
	EQ("sharing_pages with the page written", hstats().sharing_pages, P - 1);
	for (int n = 0; n < 3; n++)
		cr_assert_eq(umlmem_unpin(T[0].g, 3 * PG), 0);
	cr_assert_eq(umlmem_unpin(T[0].g, 3 * PG), -EINVAL, "a fourth unpin of three pins");
	verify_all();
	finish();
}

/* ---- 11. the background thread ---------------------------------------------- */

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Polls until sharing_pages reaches @want or @ms pass; returns it. */
static uint64_t wait_sharing(uint64_t want, uint64_t ms)
{
	uint64_t end = now_ms() + ms, have;

	while ((have = hstats().sharing_pages) != want && now_ms() < end)
		usleep(2000);
	return have;
}

/* pages_scanned once it stops moving (a batch in flight when the pause came
   may finish). */
static uint64_t scanned_when_still(void)
{
	uint64_t a = hinfo().pages_scanned, b;

	for (int n = 0; n < 100; n++) {
		usleep(tu_valgrind() ? 100000 : 20000);
		b = hinfo().pages_scanned;
		if (a == b)
			return a;
		a = b;
	}
	cr_assert_fail("the merge thread keeps scanning while paused");
	return 0;
}

/* With UMLMEM_BACKGROUND the merge thread alone merges identical guests;
   paused it neither scans nor merges (new duplicates wait), resumed it
   merges them. Polled with a generous timeout: valgrind is slow. */
Test(dedup, background)
{
	enum { N = 4 };
	const uint64_t P1 = 64, P2 = 32, P = P1 + P2;
	uint64_t tmo = tu_valgrind() ? 120000 : 10000, have, scanned;
	struct umlmem_host_config cfg;
	struct umlmem_host_info in;

	umlmem_host_config_init(&cfg);
	cfg.resident_bytes = 1024 * PG;
	cfg.flags = UMLMEM_BACKGROUND;
	cfg.dedup_pages = 500;
	cfg.dedup_sleep_us = 1000;
	H = mk_host_cfg(&cfg);
	for (int g = 0; g < N; g++) {
		mk_guest(g, P * PG, 0, 0);
		for (uint64_t i = 0; i < P1; i++)
			fill_page(T[g].mem + i * PG, seed_of(15, i));
		push(g, 0, P1 * PG);
	}
	have = wait_sharing((N - 1) * P1, tmo);
	EQ("sharing_pages merged by the thread", have, (N - 1) * P1);
	verify_all();

	cr_assert_eq(umlmem_dedup_pause(H, 1), 0);
	scanned = scanned_when_still();
	in = hinfo();
	for (int g = 0; g < N; g++) {
		for (uint64_t i = P1; i < P; i++)
			fill_page(T[g].mem + i * PG, seed_of(16, i));
		push(g, P1 * PG, P2 * PG);
	}
	usleep(tu_valgrind() ? 1500000 : 300000);
	EQ("pages_scanned while paused", hinfo().pages_scanned, scanned);
	EQ("pages_merged while paused", hinfo().pages_merged, in.pages_merged);
	EQ("sharing_pages while paused", hstats().sharing_pages, (N - 1) * P1);

	cr_assert_eq(umlmem_dedup_pause(H, 0), 0);
	have = wait_sharing((N - 1) * P, tmo);
	EQ("sharing_pages after resuming", have, (N - 1) * P);
	EQ("frames_used after resuming", hstats().frames_used, P);
	verify_all();
	finish();
}

/* Turning merging off copies a guest's shared pages back out with a walk
   of its allocated page table, not of its nominal size: a 128 TiB guest
   that wrote three pages far apart costs its top array (128 Ki pointers)
   and three leaves, where a walk by index visits 2^26 leaves' worth of
   entries. Twenty toggles must take well under a second; the pages that
   were shared come back private with their bytes. */
Test(dedup, set_merge_sparse_huge)
{
	const uint64_t at[3] = { 0, 77 * TU_GiB, UMLMEM_MAX_GUEST_BYTES - PG };
	uint8_t page[PG], buf[PG];
	struct umlmem_stats s;
	umlmem_guest *g;
	struct timespec t0, t1;
	uint64_t m;
	double secs;

	H = tu_host(dir, 64 * PG, 0);
	g = tu_guest(H, UMLMEM_MAX_GUEST_BYTES);
	tu_fill(page, PG, 4242);
	for (int i = 0; i < 3; i++)
		cr_assert_eq(umlmem_write(g, at[i], page, PG), 0, "%s", umlmem_errmsg());
	cr_assert_eq(umlmem_dedup_scan(H, 6, &m), 0);
	cr_assert_eq(umlmem_host_stats(H, &s), 0);
	cr_assert_eq(s.sharing_pages, 2, "three equal pages: %llu sharing, want 2",
		     (unsigned long long)s.sharing_pages);

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0; i < 20; i++) {
		cr_assert_eq(umlmem_guest_set_merge(g, 0), 0, "%s", umlmem_errmsg());
		cr_assert_eq(umlmem_guest_set_merge(g, 1), 0, "%s", umlmem_errmsg());
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	secs = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
	cr_expect_lt(secs, 1.0, "20 set_merge toggles of a sparse 128 TiB guest: %.2f s", secs);

	cr_assert_eq(umlmem_host_stats(H, &s), 0);
	cr_expect_eq(s.sharing_pages, 0, "%llu pages still shared after set_merge(0)",
		     (unsigned long long)s.sharing_pages);
	cr_expect_eq(s.resident_pages, 3);
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(umlmem_read(g, at[i], buf, PG), 0);
		cr_expect(memcmp(buf, page, PG) == 0, "page at 0x%llx differs",
			  (unsigned long long)at[i]);
	}
	tu_check(H);
}
