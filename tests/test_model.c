/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Model-based random test: several guests on one small host are driven by a
 * long seeded sequence of copy reads and writes, read and write pins,
 * discards and reclaims, while a plain in-memory copy of every guest's
 * bytes says what each read must return. The guests together touch many
 * times the budget, so nearly every access goes through the pager and the
 * swap files, and the bookkeeping (page-state counts, frames in use, the
 * library's own invariant checker) is verified along the way.
 *
 * The seed is printed; UMLMEM_TEST_SEED=<seed> replays a run exactly.
 * UMLMEM_TEST_SCALE=valgrind runs a tenth of the steps.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"
#include "internal.h"
#include "swap.h"

#define PG UMLMEM_PAGE_SIZE
#define NGUESTS 4
#define MAX_PINS 8

/* One variant of the run. */
struct model_params {
	const char *name;
	uint64_t budget_pages;
	unsigned reclaim_batch;
	unsigned swap_files;
	uint64_t swap_cap_pages;   /* 0: unlimited */
	uint64_t guest_bytes[NGUESTS];
	uint64_t steps;            /* natively; a tenth under valgrind */
	bool enospc;               /* the cap is meant to be hit */
	enum umlmem_io_engine io;  /* AUTO: io_uring where it works */
	unsigned flags;            /* host flags */
	bool dedup;                /* merge scans among the operations */
	enum umlmem_compress compress;  /* AUTO: the library's default */
	uint64_t pool_pages;       /* compress_pool_bytes in pages; 0: adaptive */
};

struct mguest {
	umlmem_guest *g;
	uint64_t size, npages;
	uint8_t *mem;              /* the oracle: what every byte must read as */
	uint8_t *untouched;        /* per page: not written or pinned since create/discard */
	uint8_t *ever;             /* per page: ever written or pinned */
	uint32_t *pins;            /* per page: pins we hold */
	uint64_t nuntouched;
};

struct mpin {
	int gi;
	uint64_t idx;
	bool write;
	uint8_t *p;
};

/* The whole state of one run; static so the fixture can clean up after a
   failed assertion (Criterion then skips the rest of the test body). */
static struct {
	char dir[64];
	umlmem_host *h;
	struct mguest mg[NGUESTS];
	struct mpin pins[MAX_PINS];
	unsigned npins;
	uint64_t rng;
	uint64_t seed;
	uint64_t step;
	const struct model_params *p;
	uint8_t *buf, *buf2;
	/* tallies for the log and the end-of-run checks */
	uint64_t n_write, n_read, n_pin, n_discard, n_busy, n_reclaim;
	uint64_t n_enospc_write, n_enospc_write_live, n_enospc_pin, n_enospc_reclaim;
} M;

#define BUFSZ (64 * PG)

/* Every failure names the seed and the step, so it can be replayed. */
#define MCHK(cond, fmt, ...)                                                   \
	cr_assert(cond, "[%s seed=0x%016" PRIx64 " step=%" PRIu64 "] " fmt,  \
		  M.p->name, M.seed, M.step, ##__VA_ARGS__)

static uint64_t rnd(void)
{
	return tu_splitmix64(&M.rng);
}

/* Uniform in [0, n); n > 0. */
static uint64_t below(uint64_t n)
{
	return rnd() % n;
}

static bool chance(unsigned percent)
{
	return below(100) < percent;
}

static void model_setup(void)
{
	memset(&M, 0, sizeof(M));
	tu_mkswapdir(M.dir);
}

static void model_teardown(void)
{
	/* After a failed assertion guests may still exist and pins be held:
	   destroying the host releases them all. */
	umlmem_host_destroy(M.h);
	M.h = NULL;
	for (int i = 0; i < NGUESTS; i++) {
		free(M.mg[i].mem);
		free(M.mg[i].untouched);
		free(M.mg[i].ever);
		free(M.mg[i].pins);
	}
	free(M.buf);
	free(M.buf2);
	tu_rmswapdir(M.dir);
}

TestSuite(model, .init = model_setup, .fini = model_teardown);

static uint64_t pick_seed(void)
{
	const char *s = getenv("UMLMEM_TEST_SEED");
	struct timespec ts;
	uint64_t st;

	if (s && *s)
		return strtoull(s, NULL, 0);
	clock_gettime(CLOCK_REALTIME, &ts);
	st = (uint64_t)ts.tv_sec * 1000000007ull ^ (uint64_t)ts.tv_nsec ^
	     ((uint64_t)getpid() << 32);
	return tu_splitmix64(&st);
}

static umlmem_host *make_host(const struct model_params *p)
{
	struct umlmem_host_config cfg;
	umlmem_host *h = NULL;
	int rc;

	umlmem_host_config_init(&cfg);
	cfg.resident_bytes = p->budget_pages * PG;
	cfg.swap_dir = M.dir;
	cfg.swap_bytes = p->swap_cap_pages * PG;
	cfg.swap_files = p->swap_files;
	cfg.reclaim_batch = p->reclaim_batch;
	cfg.io = p->io;
	cfg.flags = p->flags;
	cfg.compress = p->compress;
	cfg.compress_pool_bytes = p->pool_pages * PG;
	rc = umlmem_host_create(&cfg, &h);
	if (rc == -ENOTSUP && p->io != UMLMEM_IO_AUTO)
		cr_skip_test("engine %d not available here: %s", (int)p->io, umlmem_errmsg());
	cr_assert_eq(rc, 0, "umlmem_host_create: %s: %s", umlmem_strerror(rc), umlmem_errmsg());
	cr_assert(p->io == UMLMEM_IO_AUTO || umlmem_host_io_engine(h, NULL) == p->io);
	return h;
}

static void set_touched(struct mguest *m, uint64_t idx)
{
	if (m->untouched[idx]) {
		m->untouched[idx] = 0;
		m->nuntouched--;
	}
	m->ever[idx] = 1;
}

/* Bytes of page @idx that lie inside the guest (the last page is partial). */
static size_t page_len(const struct mguest *m, uint64_t idx)
{
	uint64_t end = (idx + 1) * PG;

	return end <= m->size ? PG : (size_t)(m->size - idx * PG);
}

/* Content for a write: random, all zeros, one repeated byte, or (one time
   in five) a random 64-byte run repeated with a few bytes changed, so that
   zero pages written back to swap, pages of one repeated word and pages
   that compress well (or only just) all appear. */
static void fill_content(uint8_t *b, size_t len)
{
	unsigned kind = (unsigned)below(10);

	if (kind < 2) {
		unsigned step = 16 + (unsigned)below(240);

		tu_fill(b, len < 64 ? len : 64, rnd());
		for (size_t i = 64; i < len; i++)
			b[i] = b[i - 64];
		for (size_t i = 0; i < len; i += step)
			b[i] = (uint8_t)rnd();
	} else if (kind < 6)
		tu_fill(b, len, rnd());
	else if (kind < 8)
		memset(b, 0, len);
	else
		memset(b, (int)(rnd() & 0xff), len);
}

static void check_bytes(int gi, uint64_t gpa, const uint8_t *got, size_t len, const char *what)
{
	const uint8_t *want = M.mg[gi].mem + gpa;

	if (memcmp(got, want, len) == 0)
		return;
	for (size_t i = 0; i < len; i++) {
		MCHK(got[i] == want[i],
		     "%s: guest %d byte at gpa 0x%" PRIx64 " (page %" PRIu64 "): expected 0x%02x, got 0x%02x",
		     what, gi, gpa + i, (gpa + i) / PG, want[i], got[i]);
	}
}

/* The page-state counts and frame use agree with each other and with the
   model after every step. */
static void check_stats(void)
{
	struct umlmem_stats hs, gs;
	uint64_t sum_res = 0, sum_swp = 0, sum_zero = 0, sum_ram = 0;
	struct swap_info si;
	struct umlmem_host_info hi;

	for (int i = 0; i < NGUESTS; i++) {
		struct mguest *m = &M.mg[i];

		MCHK(umlmem_guest_stats(m->g, &gs) == 0, "umlmem_guest_stats");
		MCHK(gs.ram_pages == m->npages, "guest %d ram_pages %" PRIu64 ", expected %" PRIu64,
		     i, gs.ram_pages, m->npages);
		MCHK(gs.resident_pages + gs.swapped_pages + gs.zero_pages == gs.ram_pages,
		     "guest %d: resident %" PRIu64 " + swapped %" PRIu64 " + zero %" PRIu64
		     " != ram %" PRIu64, i, gs.resident_pages, gs.swapped_pages, gs.zero_pages,
		     gs.ram_pages);
		/* A page never written nor pinned since creation or discard
		   holds no frame and no slot. */
		MCHK(gs.zero_pages >= m->nuntouched,
		     "guest %d: zero_pages %" PRIu64 " below the %" PRIu64 " pages never written",
		     i, gs.zero_pages, m->nuntouched);
		sum_res += gs.resident_pages;
		sum_swp += gs.swapped_pages;
		sum_zero += gs.zero_pages;
		sum_ram += gs.ram_pages;
	}
	MCHK(umlmem_host_stats(M.h, &hs) == 0, "umlmem_host_stats");
	MCHK(hs.ram_pages == sum_ram, "host ram_pages %" PRIu64 ", guests sum %" PRIu64,
	     hs.ram_pages, sum_ram);
	MCHK(hs.resident_pages + hs.swapped_pages + hs.zero_pages == hs.ram_pages,
	     "host: resident %" PRIu64 " + swapped %" PRIu64 " + zero %" PRIu64 " != ram %" PRIu64,
	     hs.resident_pages, hs.swapped_pages, hs.zero_pages, hs.ram_pages);
	/* With the reclaim thread on, pages move between these calls: only
	   each call's own identity holds (and host_check, under the lock). */
	MCHK((M.p->flags & UMLMEM_BACKGROUND) ||
	     (hs.resident_pages == sum_res && hs.swapped_pages == sum_swp &&
	      hs.zero_pages == sum_zero),
	     "host counts (res %" PRIu64 " swp %" PRIu64 " zero %" PRIu64
	     ") differ from the guests' sums (%" PRIu64 " %" PRIu64 " %" PRIu64 ")",
	     hs.resident_pages, hs.swapped_pages, hs.zero_pages, sum_res, sum_swp, sum_zero);
	MCHK(hs.frames_used <= M.p->budget_pages, "frames_used %" PRIu64 " above the budget of %" PRIu64,
	     hs.frames_used, M.p->budget_pages);
	/* Every resident page has a frame, shared ones save sharing_pages
	   frames, and the other frames in use hold pages read ahead. */
	MCHK((M.p->flags & UMLMEM_BACKGROUND) ||
	     hs.frames_used == sum_res - hs.sharing_pages + tu_cached(M.h),
	     "frames_used %" PRIu64 " but %" PRIu64 " resident pages, %" PRIu64 " saved by "
	     "sharing and %" PRIu64 " read ahead", hs.frames_used, sum_res, hs.sharing_pages,
	     tu_cached(M.h));
	MCHK(M.p->dedup || (M.p->flags & UMLMEM_BACKGROUND) ||
	     (hs.shared_frames == 0 && hs.sharing_pages == 0), "sharing without a dedup scan");
	MCHK(hs.sharing_pages >= hs.shared_frames, "%" PRIu64 " shared frames save only %" PRIu64
	     " pages", hs.shared_frames, hs.sharing_pages);
	MCHK(hs.io_errors == 0 && hs.checksum_errors == 0,
	     "io_errors %" PRIu64 " checksum_errors %" PRIu64 " with no fault injected",
	     hs.io_errors, hs.checksum_errors);
	/* Without sharing every swapped page holds a slot or a pool entry of
	   its own (clean resident pages may hold more), and the cap holds. */
	swap_info(host_swap(M.h), &si);
	MCHK(umlmem_host_info(M.h, &hi, sizeof(hi)) == 0, "umlmem_host_info");
	MCHK(M.p->dedup || (M.p->flags & UMLMEM_BACKGROUND) ||
	     si.slots_used + hi.pool_pages >= hs.swapped_pages,
	     "slots_used %" PRIu64 " + pool_pages %" PRIu64 " below swapped_pages %" PRIu64,
	     si.slots_used, hi.pool_pages, hs.swapped_pages);
	if (M.p->swap_cap_pages)
		MCHK(si.slots_used <= M.p->swap_cap_pages, "slots_used %" PRIu64 " above the cap %" PRIu64,
		     si.slots_used, M.p->swap_cap_pages);
}

static void do_check(void)
{
	char msg[512] = "";
	int rc = host_check(M.h, msg, sizeof(msg));

	MCHK(rc == 0, "host_check: %d: %s", rc, msg);
}

/* After a -ENOSPC the swap must really be full: the error is not allowed
   while a slot is still free. */
static void check_really_full(const char *what)
{
	struct swap_info si;

	swap_info(host_swap(M.h), &si);
	MCHK(M.p->swap_cap_pages != 0, "%s: -ENOSPC with unlimited swap", what);
	MCHK(si.slots_used == si.slots_cap,
	     "%s: -ENOSPC with %" PRIu64 " of %" PRIu64 " slots used", what, si.slots_used,
	     si.slots_cap);
}

/* A random range for a copy access: 1 byte to 3 pages, any alignment, often
   straddling pages; sometimes page-aligned whole pages. In -ENOSPC runs a
   write stays within one page, so that a failure leaves exactly that page
   unwritten and the model stays exact. */
static void pick_range(const struct mguest *m, bool single_page, uint64_t *gpa, size_t *len)
{
	uint64_t l, a;

	if (chance(20)) {
		l = (1 + below(single_page ? 1 : 3)) * PG;
	} else if (single_page) {
		l = 1 + below(PG);
	} else {
		l = 1 + below(3 * PG);
	}
	if (l > m->size)
		l = m->size;
	if (chance(20) && m->npages > 1) {
		a = below((m->size - l) / PG + 1) * PG;
	} else {
		a = below(m->size - l + 1);
	}
	if (single_page && a / PG != (a + l - 1) / PG) {
		/* keep it inside the first page it starts in */
		l = PG - a % PG;
		if (a + l > m->size)
			l = m->size - a;
	}
	*gpa = a;
	*len = (size_t)l;
}

/* A page index that holds data (written or pinned, not discarded), or any
   page when none is found quickly. */
static uint64_t pick_live_page(const struct mguest *m)
{
	uint64_t start = below(m->npages);

	for (uint64_t k = 0; k < m->npages; k++) {
		uint64_t idx = (start + k) % m->npages;

		if (!m->untouched[idx])
			return idx;
	}
	return start;
}

/* Where the sequential writer is: passes over all guests in order, so
   that every page gets touched even in short runs, interleaved with the
   random accesses. */
static int sweep_gi;
static uint64_t sweep_gpa;

static void op_write(void)
{
	int gi = (int)below(NGUESTS);
	struct mguest *m;
	uint64_t gpa;
	size_t len;
	int rc;

	if (chance(M.p->enospc ? 50 : 25)) {
		gi = sweep_gi;
		m = &M.mg[gi];
		gpa = sweep_gpa;
		if (M.p->enospc) {
			/* the rest of the page: writes stay single-page */
			len = (size_t)(PG - gpa % PG);
		} else {
			len = (size_t)(1 + below(3 * PG));
		}
		if (gpa + len > m->size)
			len = (size_t)(m->size - gpa);
		sweep_gpa += len;
		if (sweep_gpa >= m->size) {
			sweep_gpa = 0;
			sweep_gi = (sweep_gi + 1) % NGUESTS;
		}
	} else {
		m = &M.mg[gi];
		pick_range(m, M.p->enospc, &gpa, &len);
		if (M.p->enospc && chance(50)) {
			/* rewrite a page that holds data, resident or in
			   swap, not only first touches: a full swap must
			   keep those pages intact whatever the outcome */
			uint64_t idx = pick_live_page(m);
			size_t pl = page_len(m, idx);
			uint64_t off = below(pl);

			gpa = idx * PG + off;
			len = (size_t)(1 + below(pl - off));
		}
	}
	fill_content(M.buf, len);
	rc = umlmem_write(m->g, gpa, M.buf, len);
	M.n_write++;
	if (rc == -ENOSPC && M.p->enospc) {
		/* a single page, not written: the model stays as it is */
		M.n_enospc_write++;
		if (!m->untouched[gpa / PG])
			M.n_enospc_write_live++;
		check_really_full("umlmem_write");
		/* the failed write left the page as it was: read it back now */
		{
			uint64_t idx = gpa / PG;
			size_t pl = page_len(m, idx);
			int rrc = umlmem_read(m->g, idx * PG, M.buf2, pl);

			MCHK(rrc == 0, "umlmem_read after a -ENOSPC write (guest %d, page %" PRIu64
			     "): %s: %s", gi, idx, umlmem_strerror(rrc), umlmem_errmsg());
			check_bytes(gi, idx * PG, M.buf2, pl, "page after a -ENOSPC write");
		}
		return;
	}
	MCHK(rc == 0, "umlmem_write(guest %d, 0x%" PRIx64 ", %zu): %s: %s", gi, gpa, len,
	     umlmem_strerror(rc), umlmem_errmsg());
	memcpy(m->mem + gpa, M.buf, len);
	for (uint64_t idx = gpa / PG; idx <= (gpa + len - 1) / PG; idx++)
		set_touched(m, idx);
}

static void op_read(void)
{
	int gi = (int)below(NGUESTS);
	struct mguest *m = &M.mg[gi];
	struct umlmem_stats before, after;
	bool all_untouched = true;
	uint64_t gpa;
	size_t len;
	int rc;

	pick_range(m, false, &gpa, &len);
	if (chance(5)) {
		/* a long read across many pages */
		len = (size_t)(1 + below(BUFSZ));
		if (len > m->size)
			len = (size_t)m->size;
		gpa = below(m->size - len + 1);
	}
	for (uint64_t idx = gpa / PG; idx <= (gpa + len - 1) / PG; idx++)
		all_untouched = all_untouched && m->untouched[idx];
	if (all_untouched)
		MCHK(umlmem_guest_stats(m->g, &before) == 0, "umlmem_guest_stats");
	memset(M.buf, 0xa5, len);
	rc = umlmem_read(m->g, gpa, M.buf, len);
	M.n_read++;
	/* Reads never need new storage: a page in swap is read back in even
	   when the swap is full, never-written pages read as zeros. */
	MCHK(rc == 0, "umlmem_read(guest %d, 0x%" PRIx64 ", %zu): %s: %s", gi, gpa, len,
	     umlmem_strerror(rc), umlmem_errmsg());
	check_bytes(gi, gpa, M.buf, len, "umlmem_read");
	if (all_untouched) {
		/* never-written memory reads as zeros without taking a frame */
		MCHK(umlmem_guest_stats(m->g, &after) == 0, "umlmem_guest_stats");
		/* (the reclaim thread may evict meanwhile: then never more) */
		MCHK((after.resident_pages == before.resident_pages ||
		      ((M.p->flags & UMLMEM_BACKGROUND) &&
		       after.resident_pages < before.resident_pages)) &&
		     after.faults == before.faults,
		     "reading never-written pages of guest %d took frames (resident %" PRIu64
		     " -> %" PRIu64 ", faults %" PRIu64 " -> %" PRIu64 ")", gi,
		     before.resident_pages, after.resident_pages, before.faults, after.faults);
	}
}

/* Compares a pinned page with the model through its pointer. */
static void check_pin(const struct mpin *pn, const char *what)
{
	struct mguest *m = &M.mg[pn->gi];

	check_bytes(pn->gi, pn->idx * PG, pn->p, page_len(m, pn->idx), what);
}

/* Writes random bytes into part of a write-pinned page and into the model. */
static void scribble(const struct mpin *pn)
{
	struct mguest *m = &M.mg[pn->gi];
	size_t pl = page_len(m, pn->idx);
	size_t off = (size_t)below(pl);
	size_t len = (size_t)(1 + below(pl - off));

	fill_content(M.buf2, len);
	memcpy(pn->p + off, M.buf2, len);
	memcpy(m->mem + pn->idx * PG + off, M.buf2, len);
}

static void op_pin(void)
{
	struct mpin pn;
	struct mguest *m;
	void *ptr = NULL;
	int rc;

	if (M.npins >= MAX_PINS || M.npins + 1 >= M.p->budget_pages / 2)
		return;
	pn.gi = (int)below(NGUESTS);
	m = &M.mg[pn.gi];
	if (M.npins && chance(15)) {
		/* pins nest: pin a page we already hold once more */
		pn = M.pins[below(M.npins)];
		pn.write = chance(50);
		m = &M.mg[pn.gi];
	} else {
		pn.idx = below(m->npages);
		pn.write = chance(50);
	}
	rc = umlmem_pin(m->g, pn.idx * PG, pn.write ? UMLMEM_READ | UMLMEM_WRITE : UMLMEM_READ, &ptr);
	M.n_pin++;
	if (rc == -ENOSPC && M.p->enospc) {
		M.n_enospc_pin++;
		check_really_full("umlmem_pin");
		return;
	}
	MCHK(rc == 0, "umlmem_pin(guest %d, page %" PRIu64 ", %s): %s: %s", pn.gi, pn.idx,
	     pn.write ? "write" : "read", umlmem_strerror(rc), umlmem_errmsg());
	MCHK(ptr != NULL, "umlmem_pin gave a NULL page");
	MCHK(((uintptr_t)ptr & (PG - 1)) == 0, "pinned page %p not page-aligned", ptr);
	pn.p = ptr;
	for (unsigned i = 0; i < M.npins; i++) {
		if (M.pins[i].gi == pn.gi && M.pins[i].idx == pn.idx)
			MCHK(M.pins[i].p == pn.p, "a nested pin of guest %d page %" PRIu64
			     " moved the page (%p, then %p)", pn.gi, pn.idx, (void *)M.pins[i].p,
			     (void *)pn.p);
	}
	set_touched(m, pn.idx);
	m->pins[pn.idx]++;
	check_pin(&pn, "umlmem_pin");
	if (pn.write)
		scribble(&pn);
	M.pins[M.npins++] = pn;
}

static void op_unpin(void)
{
	unsigned k;
	struct mpin pn;
	int rc;

	if (!M.npins)
		return;
	k = (unsigned)below(M.npins);
	pn = M.pins[k];
	/* The pointer stayed valid and saw every copy write made meanwhile. */
	check_pin(&pn, "pinned page before unpin");
	if (pn.write && chance(50))
		scribble(&pn);
	rc = umlmem_unpin(M.mg[pn.gi].g, pn.idx * PG);
	MCHK(rc == 0, "umlmem_unpin(guest %d, page %" PRIu64 "): %s", pn.gi, pn.idx,
	     umlmem_strerror(rc));
	M.mg[pn.gi].pins[pn.idx]--;
	M.pins[k] = M.pins[--M.npins];
}

static void op_write_through_pin(void)
{
	if (!M.npins)
		return;
	for (unsigned tries = 0; tries < M.npins; tries++) {
		const struct mpin *pn = &M.pins[below(M.npins)];

		if (pn->write) {
			scribble(pn);
			return;
		}
	}
}

static void op_discard(void)
{
	int gi = (int)below(NGUESTS);
	struct mguest *m = &M.mg[gi];
	uint64_t first, n, len;
	bool busy = false;
	int rc;

	first = below(m->npages);
	if (M.npins && chance(10)) {
		/* aim at a pinned page: the whole discard must be refused */
		const struct mpin *pn = &M.pins[below(M.npins)];

		gi = pn->gi;
		m = &M.mg[gi];
		first = pn->idx > 2 ? pn->idx - below(3) : pn->idx;
	}
	n = 1 + below(16);
	if (first + n >= m->npages) {
		/* up to the end: the length reaches exactly the guest's end,
		   which need not be a whole page */
		n = m->npages - first;
		len = m->size - first * PG;
	} else {
		len = n * PG;
	}
	for (uint64_t idx = first; idx < first + n; idx++)
		busy = busy || m->pins[idx];
	rc = umlmem_discard(m->g, first * PG, len);
	M.n_discard++;
	if (busy) {
		M.n_busy++;
		MCHK(rc == -EBUSY, "umlmem_discard(guest %d, page %" PRIu64 ", %" PRIu64
		     " pages) over a pinned page: %s, expected -EBUSY", gi, first, n,
		     umlmem_strerror(rc));
		return;
	}
	MCHK(rc == 0, "umlmem_discard(guest %d, page %" PRIu64 ", %" PRIu64 " pages): %s: %s",
	     gi, first, n, umlmem_strerror(rc), umlmem_errmsg());
	memset(m->mem + first * PG, 0, len);
	for (uint64_t idx = first; idx < first + n; idx++) {
		if (!m->untouched[idx]) {
			m->untouched[idx] = 1;
			m->nuntouched++;
		}
	}
}

/* Pages pinned at least once (pins nest, so entries may repeat a page). */
static uint64_t distinct_pinned(void)
{
	uint64_t n = 0;

	for (unsigned i = 0; i < M.npins; i++) {
		bool seen = false;

		for (unsigned j = 0; j < i; j++)
			seen = seen || (M.pins[j].gi == M.pins[i].gi && M.pins[j].idx == M.pins[i].idx);
		n += !seen;
	}
	return n;
}

static void op_dedup(void)
{
	uint64_t merged = UINT64_MAX, want = below(4 * M.p->budget_pages + 1);
	int rc = umlmem_dedup_scan(M.h, want, &merged);

	MCHK(rc == 0, "umlmem_dedup_scan(%" PRIu64 "): %s", want, umlmem_strerror(rc));
	MCHK(merged <= want, "umlmem_dedup_scan(%" PRIu64 ") merged %" PRIu64, want, merged);
}

static void op_reclaim(void)
{
	struct umlmem_stats before, after;
	uint64_t want = below(2 * M.p->budget_pages + 1), ev = UINT64_MAX;
	int rc;

	MCHK(umlmem_host_stats(M.h, &before) == 0, "umlmem_host_stats");
	rc = umlmem_reclaim(M.h, want, &ev);
	M.n_reclaim++;
	if (rc == -ENOSPC && M.p->enospc) {
		M.n_enospc_reclaim++;
		check_really_full("umlmem_reclaim");
	} else {
		MCHK(rc == 0, "umlmem_reclaim(%" PRIu64 "): %s: %s", want, umlmem_strerror(rc),
		     umlmem_errmsg());
	}
	MCHK(umlmem_host_stats(M.h, &after) == 0, "umlmem_host_stats");
	/* frames freed are at most @want; pages evicted can be more when a
	   frame was shared (or became shared meanwhile: the merge thread) */
	MCHK(ev <= want || before.sharing_pages || (M.p->flags & UMLMEM_BACKGROUND),
	     "umlmem_reclaim(%" PRIu64 ") evicted %" PRIu64, want, ev);
	/* the reclaim thread may evict more meanwhile, never less */
	MCHK((M.p->flags & UMLMEM_BACKGROUND) ?
	     before.resident_pages - after.resident_pages >= ev :
	     before.resident_pages - after.resident_pages == ev,
	     "umlmem_reclaim(%" PRIu64 ") reported %" PRIu64 " evicted, resident went %" PRIu64
	     " -> %" PRIu64, want, ev, before.resident_pages, after.resident_pages);
	MCHK(after.resident_pages >= distinct_pinned(),
	     "umlmem_reclaim left %" PRIu64 " resident pages with %" PRIu64 " pages pinned",
	     after.resident_pages, distinct_pinned());
}

/* Reads every guest whole and compares it with the model. */
static void check_all(const char *what)
{
	for (int gi = 0; gi < NGUESTS; gi++) {
		struct mguest *m = &M.mg[gi];

		for (uint64_t gpa = 0; gpa < m->size; gpa += BUFSZ) {
			size_t len = m->size - gpa < BUFSZ ? (size_t)(m->size - gpa) : BUFSZ;
			int rc = umlmem_read(m->g, gpa, M.buf, len);

			MCHK(rc == 0, "%s: umlmem_read(guest %d, 0x%" PRIx64 ", %zu): %s: %s", what,
			     gi, gpa, len, umlmem_strerror(rc), umlmem_errmsg());
			check_bytes(gi, gpa, M.buf, len, what);
		}
	}
}

static void run_model(const struct model_params *p)
{
	uint64_t steps = tu_scaled(p->steps), touched = 0, total_pages = 0;
	struct umlmem_stats hs;
	struct swap_info si;

	M.p = p;
	M.seed = pick_seed();
	M.rng = M.seed;
	sweep_gi = 0;
	sweep_gpa = 0;
	cr_log_info("model/%s: seed 0x%016" PRIx64 " (replay: UMLMEM_TEST_SEED=0x%016" PRIx64
		    "), %" PRIu64 " steps", p->name, M.seed, M.seed, steps);

	M.buf = aligned_alloc(PG, BUFSZ);
	M.buf2 = aligned_alloc(PG, BUFSZ);
	cr_assert(M.buf && M.buf2);
	M.h = make_host(p);
	for (int i = 0; i < NGUESTS; i++) {
		struct mguest *m = &M.mg[i];

		m->size = p->guest_bytes[i];
		m->npages = (m->size + PG - 1) / PG;
		m->g = tu_guest(M.h, m->size);
		m->mem = calloc(1, m->size);
		m->untouched = malloc(m->npages);
		m->ever = calloc(1, m->npages);
		m->pins = calloc(m->npages, sizeof(*m->pins));
		cr_assert(m->mem && m->untouched && m->ever && m->pins);
		memset(m->untouched, 1, m->npages);
		m->nuntouched = m->npages;
		total_pages += m->npages;
	}
	cr_assert_geq(total_pages, 8 * p->budget_pages, "the guests must be at least 8x the budget");
	check_stats();

	for (M.step = 1; M.step <= steps; M.step++) {
		unsigned r = (unsigned)below(100);

		if (r < 36)
			op_write();
		else if (r < 66)
			op_read();
		else if (r < 74)
			op_pin();
		else if (r < 81)
			op_unpin();
		else if (r < 85)
			op_write_through_pin();
		else if (r < (p->enospc ? 95u : 91u))
			op_discard();
		else if (p->dedup && r < 95)
			op_dedup();
		else
			op_reclaim();
		check_stats();
		if (M.step % 64 == 0)
			do_check();
	}

	/* Let every pin go (checking each one), then read everything back. */
	while (M.npins)
		op_unpin();
	do_check();
	check_all("final read");
	check_stats();
	/* And once more after pushing out as much as fits in swap, so that
	   the final state is read back from the files as well. */
	umlmem_reclaim(M.h, p->budget_pages, NULL);
	check_all("final read after reclaim");
	do_check();

	for (int i = 0; i < NGUESTS; i++)
		for (uint64_t idx = 0; idx < M.mg[i].npages; idx++)
			touched += M.mg[i].ever[idx];
	cr_assert(umlmem_host_stats(M.h, &hs) == 0);
	swap_info(host_swap(M.h), &si);
	cr_log_info("model/%s: %" PRIu64 " writes (%" PRIu64 " -ENOSPC, %" PRIu64
		    " of them on pages holding data), %" PRIu64 " reads, %" PRIu64 " pins (%" PRIu64
		    " -ENOSPC), %" PRIu64 " discards (%" PRIu64 " -EBUSY), %" PRIu64
		    " reclaims (%" PRIu64 " -ENOSPC); %" PRIu64 " pages touched, budget %" PRIu64
		    "; faults %" PRIu64 " swap_ins %" PRIu64 " swap_outs %" PRIu64 " clusters %" PRIu64
		    " punched %" PRIu64, p->name, M.n_write, M.n_enospc_write, M.n_enospc_write_live,
		    M.n_read, M.n_pin, M.n_enospc_pin, M.n_discard, M.n_busy, M.n_reclaim,
		    M.n_enospc_reclaim, touched, p->budget_pages, hs.faults, hs.swap_ins,
		    hs.swap_outs, si.clusters, si.punches);
	cr_assert_geq(touched, 8 * p->budget_pages,
		      "[seed 0x%016" PRIx64 "] only %" PRIu64 " pages touched, budget %" PRIu64,
		      M.seed, touched, p->budget_pages);
	cr_assert_gt(hs.swap_outs, 0, "nothing was ever swapped out");
	cr_assert_gt(hs.swap_ins, 0, "nothing was ever swapped in");
	if (p->enospc)
		cr_assert_gt(M.n_enospc_write + M.n_enospc_pin + M.n_enospc_reclaim, 0,
			     "[seed 0x%016" PRIx64 "] the swap cap was never hit", M.seed);

	for (int i = 0; i < NGUESTS; i++) {
		umlmem_guest_destroy(M.mg[i].g);
		M.mg[i].g = NULL;
	}
	cr_assert(umlmem_host_stats(M.h, &hs) == 0);
	cr_assert_eq(hs.frames_used, 0, "frames_used %" PRIu64 " after every guest is gone",
		     hs.frames_used);
	cr_assert_eq(hs.ram_pages, 0);
	swap_info(host_swap(M.h), &si);
	cr_assert_eq(si.slots_used, 0, "%" PRIu64 " swap slots live after every guest is gone",
		     si.slots_used);
	tu_check(M.h);
	umlmem_host_destroy(M.h);
	M.h = NULL;
}

/* Four guests of different sizes, one of them not a whole number of pages,
   about 11.5 times the budget together. */
#define MODEL_GUESTS { 640 * TU_KiB, 1 * TU_MiB - PG + 777, 512 * TU_KiB + 3 * PG, 768 * TU_KiB }

Test(model, random)
{
	static const struct model_params p = {
		.name = "random",
		.budget_pages = 64,
		.reclaim_batch = 16,
		.swap_files = 1,
		.guest_bytes = MODEL_GUESTS,
		.steps = 25000,
	};

	run_model(&p);
}

/* The same run once per I/O engine, and once with the reclaim thread on. */
#define MODEL_RANDOM(tname, engine, hflags)                                    \
	Test(model, tname)                                                     \
	{                                                                      \
		static const struct model_params p = {                         \
			.name = #tname, .budget_pages = 64, .reclaim_batch = 16, \
			.swap_files = 1, .guest_bytes = MODEL_GUESTS,          \
			.steps = 15000, .io = engine, .flags = hflags,          \
		};                                                             \
		run_model(&p);                                                 \
	}
/* Merge scans among the operations: every read still matches the model,
   through merges, copy-on-write breaks, swapping of shared frames and
   discards of shared pages. */
Test(model, dedup)
{
	static const struct model_params p = {
		.name = "dedup", .budget_pages = 64, .reclaim_batch = 16, .swap_files = 1,
		.guest_bytes = MODEL_GUESTS, .steps = 25000, .dedup = true,
	};

	run_model(&p);
}

MODEL_RANDOM(engine_uring, UMLMEM_IO_URING, 0)
MODEL_RANDOM(engine_aio, UMLMEM_IO_AIO, 0)
MODEL_RANDOM(engine_sync, UMLMEM_IO_SYNC, 0)
MODEL_RANDOM(background, UMLMEM_IO_AUTO, UMLMEM_BACKGROUND)
MODEL_RANDOM(no_readahead, UMLMEM_IO_AUTO, UMLMEM_NO_READAHEAD)

/* With the compressed pool between the frames and swap, explicitly on
   (lz4, zstd), explicitly off, and with a pool of 8 frames that is full
   all the time, so its oldest pages are written back to swap over and
   over while sharers, discards and pins go on. */
#define MODEL_POOL(tname, algo, pool, hflags, dd)                              \
	Test(model, tname)                                                     \
	{                                                                      \
		static const struct model_params p = {                         \
			.name = #tname, .budget_pages = 64, .reclaim_batch = 16, \
			.swap_files = 1, .guest_bytes = MODEL_GUESTS,          \
			.steps = 15000, .compress = algo, .pool_pages = pool,   \
			.flags = hflags, .dedup = dd,                           \
		};                                                             \
		run_model(&p);                                                 \
	}
MODEL_POOL(pool_lz4, UMLMEM_COMPRESS_LZ4, 0, 0, false)
MODEL_POOL(pool_zstd, UMLMEM_COMPRESS_ZSTD, 0, 0, false)
MODEL_POOL(pool_off, UMLMEM_COMPRESS_OFF, 0, 0, false)
MODEL_POOL(pool_small, UMLMEM_COMPRESS_LZ4, 8, 0, true)
MODEL_POOL(pool_background, UMLMEM_COMPRESS_LZ4, 0, UMLMEM_BACKGROUND, true)
/* Encrypted swap: every page that leaves the frames is sealed, directly or
   through a small pool's write-back, with merging and copy on write. */
MODEL_RANDOM(encrypt, UMLMEM_IO_AUTO, UMLMEM_SWAP_ENCRYPT)
MODEL_POOL(encrypt_pool, UMLMEM_COMPRESS_LZ4, 8, UMLMEM_SWAP_ENCRYPT, true)

/* The same with the slots spread over three files, and the default batch. */
Test(model, three_swap_files)
{
	static const struct model_params p = {
		.name = "three_swap_files",
		.budget_pages = 64,
		.reclaim_batch = 0,
		.swap_files = 3,
		.guest_bytes = MODEL_GUESTS,
		.steps = 20000,
	};

	run_model(&p);
}

/* Swap capped at 64 slots beside a budget of 32 frames, while the guests
   touch 11 times the budget: the cap is hit over and over. Writes are single
   pages, so a -ENOSPC leaves the model exact; reads must never fail. */
Test(model, swap_full)
{
	static const struct model_params p = {
		.name = "swap_full",
		.budget_pages = 32,
		.reclaim_batch = 8,
		.swap_files = 1,
		.swap_cap_pages = 64,
		.guest_bytes = { 320 * TU_KiB, 256 * TU_KiB + 1000, 192 * TU_KiB, 640 * TU_KiB },
		.steps = 20000,
		.enospc = true,
	};

	run_model(&p);
}
