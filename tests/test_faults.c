/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Swap I/O that fails, on every engine (io_uring, libaio, pread/pwrite):
 *
 *  - random: a model-based random run (copy reads and writes of any length
 *    and alignment, pins, discards, reclaims, merge scans) over several
 *    guests on a budget of 1/8 of what they touch, while io_inject() arms
 *    read and write faults (EIO, short transfers, ENOSPC) at random points
 *    with random counts. Every call must either succeed with exactly the
 *    bytes of a plain in-memory model, or fail with -EIO or -ENOSPC, and
 *    only when an injected fault of the matching kind fired during that
 *    call; a failed call must have changed nothing it promises not to
 *    change (a failed write: a prefix of its pages written, the rest not;
 *    a failed read: the pages before the failing one delivered, nothing
 *    after). After disarming, every page of every guest reads back exactly
 *    as the model says, and the invariant checker passes. The counters are
 *    checked against what the injector really fired: io_errors never more
 *    than the faults that fired, at least one per failed call, at least
 *    every failed write; with readahead off (the "exact" variants) exactly
 *    the faults that fired; checksum_errors stays 0, since an injected
 *    fault is a failed transfer, never wrong data. The "background"
 *    variants run the same with the reclaim thread writing (and failing)
 *    on its own; there only the outcomes and the data are checked.
 *
 *  - corrupt: the swap files are changed behind the library's back (a bit
 *    flipped, garbage, zeros, a torn page, another slot's valid content,
 *    and a slot that two merged pages share): each such page reads as -EIO
 *    and one checksum error per read, never as the changed bytes, while
 *    every other page reads right; the slot is kept, so restoring its bytes
 *    (or overwriting the whole page) heals it.
 *
 * An engine that cannot run here is skipped with the reason. The seed is
 * printed; UMLMEM_TEST_SEED=<seed> replays a run; UMLMEM_TEST_SCALE=valgrind
 * runs a tenth of the steps.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"
#include "internal.h"
#include "swap.h"

#define PG UMLMEM_PAGE_SIZE
#define NG 4
#define MAXPINS 4
#define BUFSZ (16 * PG)

struct fparams {
	const char *name;
	enum umlmem_io_engine io;
	unsigned flags;        /* host flags */
	uint64_t steps;        /* natively; a tenth under valgrind */
	bool dedup;            /* merge scans among the operations */
};

struct fg {
	umlmem_guest *g;
	uint64_t size, npages;
	uint8_t *mem;          /* the model: what every byte must read as */
	uint32_t *pins;        /* pins we hold per page */
};

struct fpin {
	int gi;
	uint64_t idx;
	bool write;
	uint8_t *p;
};

/* What the injector has been told for one direction, and what it fired. */
struct farm {
	bool armed;
	enum io_fault kind;
	uint64_t first;        /* absolute request number of the first hit */
	uint64_t count;
	uint64_t fired_before; /* fired by earlier armings */
};

/* The whole state of one run; static so that the fixture can clean up after
   a failed assertion. */
static struct {
	char dir[64];
	umlmem_host *h;
	struct io_engine *e;
	struct fg g[NG];
	struct fpin pins[MAXPINS];
	unsigned npins;
	uint64_t seed, rng, step;
	const struct fparams *p;
	uint8_t *buf, *buf2;
	struct farm arm[2];
	/* tallies */
	uint64_t calls_failed, n_eio, n_enospc, n_arms;
	uint64_t failed_writes, failed_reads, failed_pins, failed_reclaims;
	uint64_t partial_writes;   /* failed writes that had written a prefix */
} F;

static const uint64_t budget_pages = 32;

#define FCHK(cond, fmt, ...)                                                   \
	cr_assert(cond, "[%s seed=0x%016" PRIx64 " step=%" PRIu64 "] " fmt,  \
		  F.p ? F.p->name : "?", F.seed, F.step, ##__VA_ARGS__)

static void faults_setup(void)
{
	memset(&F, 0, sizeof(F));
	tu_mkswapdir(F.dir);
}

static void faults_teardown(void)
{
	umlmem_host_destroy(F.h);
	F.h = NULL;
	for (int i = 0; i < NG; i++) {
		free(F.g[i].mem);
		free(F.g[i].pins);
	}
	free(F.buf);
	free(F.buf2);
	tu_rmswapdir(F.dir);
}

TestSuite(faults, .init = faults_setup, .fini = faults_teardown);

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

static uint64_t below(uint64_t n)
{
	return tu_splitmix64(&F.rng) % n;
}

static bool chance(unsigned percent)
{
	return below(100) < percent;
}

static const char *kind_name(enum io_fault k)
{
	switch (k) {
	case IO_FAULT_EIO: return "EIO";
	case IO_FAULT_SHORT: return "SHORT";
	case IO_FAULT_ENOSPC: return "ENOSPC";
	default: return "none";
	}
}

/* A host on @io; skips the test (cleaning up first: a skipped test gets no
   .fini) when the engine cannot run here. */
static umlmem_host *mk_host(enum umlmem_io_engine io, uint64_t budget, unsigned flags,
			    unsigned nfiles, unsigned batch)
{
	struct umlmem_host_config cfg;
	umlmem_host *h = NULL;
	int rc;

	umlmem_host_config_init(&cfg);
	cfg.resident_bytes = budget * PG;
	cfg.swap_dir = F.dir;
	cfg.swap_files = nfiles;
	cfg.reclaim_batch = batch;
	cfg.io = io;
	cfg.flags = flags;
	rc = umlmem_host_create(&cfg, &h);
	if (rc == -ENOTSUP) {
		char why[512];

		snprintf(why, sizeof(why), "%s", umlmem_errmsg());
		faults_teardown();
		memset(&F, 0, sizeof(F));
		cr_skip_test("engine %d cannot run here: %s", (int)io, why);
	}
	cr_assert_eq(rc, 0, "umlmem_host_create: %s: %s", umlmem_strerror(rc), umlmem_errmsg());
	cr_assert_eq(umlmem_host_io_engine(h, NULL), io, "asked for engine %d, got %d", (int)io,
		     (int)umlmem_host_io_engine(h, NULL));
	return h;
}

/* ---- the injector's books ------------------------------------------------- */

static uint64_t seen(int op)
{
	return __atomic_load_n(&F.e->seen[op], __ATOMIC_RELAXED);
}

/* Faults the current arming of @op has fired so far: requests number
   first .. first + count - 1 of that direction fail. */
static uint64_t fired_now(int op)
{
	const struct farm *a = &F.arm[op];
	uint64_t s = seen(op);

	if (!a->armed || s < a->first)
		return 0;
	return s - a->first + 1 < a->count ? s - a->first + 1 : a->count;
}

static uint64_t fired_total(int op)
{
	return F.arm[op].fired_before + fired_now(op);
}

static void disarm(int op)
{
	F.arm[op].fired_before += fired_now(op);
	F.arm[op].armed = false;
	F.arm[op].kind = IO_FAULT_NONE;
	io_inject(F.e, (enum io_op)op, 1, IO_FAULT_NONE, 0);
}

static void disarm_all(void)
{
	disarm(IO_READ);
	disarm(IO_WRITE);
}

static void arm(int op, enum io_fault kind, uint64_t nth, uint64_t count)
{
	disarm(op);
	F.arm[op].armed = true;
	F.arm[op].kind = kind;
	F.arm[op].first = seen(op) + nth;
	F.arm[op].count = count;
	io_inject(F.e, (enum io_op)op, nth, kind, count);
	F.n_arms++;
}

/* A random arming: either direction, any kind, the nth request from now
   (1 to 24), for 1 to 3 requests, 4 to 31, or until disarmed. */
static void op_arm(void)
{
	int op = (int)below(2);
	unsigned r = (unsigned)below(100);
	uint64_t count;

	if (r < 20) {
		disarm(op);
		return;
	}
	count = r < 65 ? 1 + below(3) : r < 90 ? 4 + below(28) : 1000000000ull;
	arm(op, (enum io_fault)(1 + below(3)), 1 + below(24), count);
}

/* ---- one call, and what it may return ---------------------------------- */

struct snap {
	uint64_t fr, fw;             /* faults fired so far, per direction */
	struct umlmem_stats s;
};

static void snap_take(struct snap *sn)
{
	sn->fr = fired_total(IO_READ);
	sn->fw = fired_total(IO_WRITE);
	FCHK(umlmem_host_stats(F.h, &sn->s) == 0, "umlmem_host_stats");
}

/*
 * Checks the outcome @rc of call @what against what the injector fired
 * during it (armings do not change within a call):
 *  - only 0, -EIO and -ENOSPC (a read: only 0 and -EIO);
 *  - -ENOSPC only when writes failed as ENOSPC during the call (swap has no
 *    cap here); -EIO only when a read failed, or a write failed as EIO or
 *    SHORT;
 *  - io_errors rose by no more than the faults fired, by at least one on
 *    a failure, and by at least the failed writes (every failed write-out
 *    is counted); with readahead off, by exactly the faults fired;
 *  - checksum_errors never moves: an injected fault is no corruption;
 *  - a failure leaves a message.
 */
static void expect_outcome(const char *what, int rc, const struct snap *b, bool is_read)
{
	struct snap a;
	uint64_t dr, dw, dio;
	enum io_fault wk = F.arm[IO_WRITE].kind;
	bool bg = F.p->flags & UMLMEM_BACKGROUND;
	char msg[512];

	/* the message first: the stats call below clears it */
	snprintf(msg, sizeof(msg), "%s", umlmem_errmsg());
	snap_take(&a);
	dr = a.fr - b->fr;
	dw = a.fw - b->fw;
	dio = a.s.io_errors - b->s.io_errors;
	FCHK(rc == 0 || rc == -EIO || (rc == -ENOSPC && !is_read),
	     "%s returned %d (%s): not a documented outcome (faults fired: %" PRIu64 " reads, %"
	     PRIu64 " writes as %s): %s", what, rc, umlmem_strerror(rc), dr, dw, kind_name(wk),
	     msg);
	FCHK(a.s.checksum_errors == b->s.checksum_errors,
	     "%s: checksum_errors went %" PRIu64 " -> %" PRIu64 " with only injected transfer faults",
	     what, b->s.checksum_errors, a.s.checksum_errors);
	if (bg) {
		/* the reclaim thread writes (and fails) between and during
		   our calls: only what holds whoever did the I/O */
		if (rc == 0)
			return;
		F.calls_failed++;
		FCHK(msg[0] != '\0', "%s failed with %s and left no message", what,
		     umlmem_strerror(rc));
		FCHK(rc != -ENOSPC || wk == IO_FAULT_ENOSPC, "%s returned -ENOSPC with unlimited "
		     "swap and no ENOSPC fault armed (writes fail as %s): %s", what, kind_name(wk),
		     msg);
		FCHK(!is_read || F.arm[IO_READ].armed, "%s returned -EIO with no read fault armed: "
		     "%s", what, msg);
		if (rc == -ENOSPC)
			F.n_enospc++;
		else
			F.n_eio++;
		return;
	}
	FCHK(dio <= dr + dw, "%s: io_errors rose by %" PRIu64 " but only %" PRIu64 " reads and %"
	     PRIu64 " writes failed", what, dio, dr, dw);
	FCHK(dio >= dw, "%s: %" PRIu64 " writes failed but io_errors rose by %" PRIu64, what, dw, dio);
	if (F.p->flags & UMLMEM_NO_READAHEAD)
		FCHK(dio == dr + dw, "%s: io_errors rose by %" PRIu64 ", %" PRIu64 " reads and %"
		     PRIu64 " writes failed (no readahead: every failed request is counted)",
		     what, dio, dr, dw);
	if (rc == 0)
		return;
	F.calls_failed++;
	FCHK(dio >= 1, "%s failed with %s but io_errors did not move", what, umlmem_strerror(rc));
	FCHK(msg[0] != '\0', "%s failed with %s and left no message", what,
	     umlmem_strerror(rc));
	FCHK(strstr(msg, "swap") != NULL, "%s failed with %s; the message does not "
	     "say swap is involved: \"%s\"", what, umlmem_strerror(rc), msg);
	if (rc == -ENOSPC) {
		F.n_enospc++;
		FCHK(dw > 0 && wk == IO_FAULT_ENOSPC, "%s returned -ENOSPC with unlimited swap, "
		     "but no write failed as ENOSPC during the call (%" PRIu64 " failed as %s): %s",
		     what, dw, kind_name(wk), msg);
	} else {
		F.n_eio++;
		if (is_read)
			FCHK(dr > 0, "%s returned -EIO but no swap read failed during the call "
			     "(%" PRIu64 " writes failed as %s): %s", what, dw, kind_name(wk),
			     msg);
		else
			FCHK(dr > 0 || (dw > 0 && wk != IO_FAULT_ENOSPC),
			     "%s returned -EIO but no read failed and no write failed as EIO or "
			     "SHORT during the call (%" PRIu64 " writes failed as %s): %s", what, dw,
			     kind_name(wk), msg);
	}
}

/* ---- the model -------------------------------------------------------------- */

static size_t page_len(const struct fg *m, uint64_t idx)
{
	uint64_t end = (idx + 1) * PG;

	return end <= m->size ? PG : (size_t)(m->size - idx * PG);
}

static void fill_content(uint8_t *b, size_t len)
{
	unsigned k = (unsigned)below(10);

	if (k < 7)
		tu_fill(b, len, tu_splitmix64(&F.rng));
	else if (k < 8)
		memset(b, 0, len);
	else
		memset(b, (int)(below(255) + 1), len);
}

static void check_bytes(int gi, uint64_t gpa, const uint8_t *got, size_t len, const char *what)
{
	const uint8_t *want = F.g[gi].mem + gpa;

	if (memcmp(got, want, len) == 0)
		return;
	for (size_t i = 0; i < len; i++)
		FCHK(got[i] == want[i], "%s: guest %d byte at gpa 0x%" PRIx64 " (page %" PRIu64
		     "): expected 0x%02x, got 0x%02x", what, gi, gpa + i, (gpa + i) / PG, want[i],
		     got[i]);
}

/* Reads pages [first, last] of guest @gi, one at a time, with no fault
   armed: each must succeed and match the model. */
static void verify_pages(int gi, uint64_t first, uint64_t last, const char *what)
{
	struct fg *m = &F.g[gi];

	for (uint64_t idx = first; idx <= last; idx++) {
		size_t pl = page_len(m, idx);
		int rc;

		memset(F.buf2, 0xa5, pl);
		rc = umlmem_read(m->g, idx * PG, F.buf2, pl);
		FCHK(rc == 0, "%s: umlmem_read(guest %d, page %" PRIu64 ") with no fault armed: %s: %s",
		     what, gi, idx, umlmem_strerror(rc), umlmem_errmsg());
		check_bytes(gi, idx * PG, F.buf2, pl, what);
	}
}

static void check_all(const char *what)
{
	for (int gi = 0; gi < NG; gi++)
		verify_pages(gi, 0, F.g[gi].npages - 1, what);
}

static void pick_range(const struct fg *m, uint64_t *gpa, size_t *len)
{
	uint64_t l, a;

	if (chance(25))
		l = (1 + below(4)) * PG;
	else
		l = 1 + below(4 * PG);
	if (l > m->size)
		l = m->size;
	if (chance(25))
		a = below((m->size - l) / PG + 1) * PG;
	else
		a = below(m->size - l + 1);
	*gpa = a;
	*len = (size_t)l;
}

/* Where the sequential writer is: it passes over every guest in order, so
   that every page holds data early in the run. */
static int sweep_gi;
static uint64_t sweep_gpa;

static void op_write(void)
{
	int gi = (int)below(NG);
	struct fg *m;
	uint64_t gpa;
	size_t len;
	struct snap b;
	int rc;

	if (chance(25)) {
		gi = sweep_gi;
		m = &F.g[gi];
		gpa = sweep_gpa;
		len = (size_t)(1 + below(3 * PG));
		if (gpa + len > m->size)
			len = (size_t)(m->size - gpa);
	} else {
		m = &F.g[gi];
		pick_range(m, &gpa, &len);
	}
	fill_content(F.buf, len);
	snap_take(&b);
	rc = umlmem_write(m->g, gpa, F.buf, len);
	expect_outcome("umlmem_write", rc, &b, false);
	if (rc == 0) {
		memcpy(m->mem + gpa, F.buf, len);
		if (m == &F.g[sweep_gi] && gpa == sweep_gpa) {
			sweep_gpa += len;
			if (sweep_gpa >= m->size) {
				sweep_gpa = 0;
				sweep_gi = (sweep_gi + 1) % NG;
			}
		}
		return;
	}
	F.failed_writes++;
	/*
	 * "On an error the pages before the failing one are written, the
	 * failing page and those after it are not": read the pages back with
	 * no fault armed and find exactly that. Bytes of those pages outside
	 * the write never change.
	 */
	disarm_all();
	{
		uint64_t first = gpa / PG, last = (gpa + len - 1) / PG;
		uint64_t a0 = first * PG, span = (last + 1) * PG;
		bool in_prefix = true, ambiguous = false;
		unsigned written = 0, kept = 0;
		int rrc;

		if (span > m->size)
			span = m->size;
		rrc = umlmem_read(m->g, a0, F.buf2, span - a0);
		FCHK(rrc == 0, "reading back a failed write (guest %d, 0x%" PRIx64 "+%zu): %s: %s", gi,
		     gpa, len, umlmem_strerror(rrc), umlmem_errmsg());
		for (uint64_t idx = first; idx <= last; idx++) {
			uint64_t ps = idx * PG, pe = ps + page_len(m, idx);
			uint64_t ws = gpa > ps ? gpa : ps, we = gpa + len < pe ? gpa + len : pe;
			const uint8_t *got = F.buf2 + (ws - a0);
			bool is_new = memcmp(got, F.buf + (ws - gpa), we - ws) == 0;
			bool is_old = memcmp(got, m->mem + ws, we - ws) == 0;

			/* outside the write, the page is as it was */
			check_bytes(gi, ps, F.buf2 + (ps - a0), ws - ps, "page around a failed write");
			check_bytes(gi, we, F.buf2 + (we - a0), pe - we, "page around a failed write");
			if (is_new && is_old)
				ambiguous = true;
			if (in_prefix && is_new) {
				written++;
				continue;
			}
			in_prefix = false;
			FCHK(is_old, "umlmem_write(guest %d, 0x%" PRIx64 "+%zu) failed (%s), and its "
			     "page %" PRIu64 " holds neither the old bytes nor (as part of a written "
			     "prefix) the new ones", gi, gpa, len, umlmem_strerror(rc), idx);
			kept++;
		}
		FCHK(kept > 0 || ambiguous, "umlmem_write(guest %d, 0x%" PRIx64 "+%zu) returned %s "
		     "but wrote every page", gi, gpa, len, umlmem_strerror(rc));
		if (written && kept)
			F.partial_writes++;
		memcpy(m->mem + a0, F.buf2, span - a0);
	}
}

static void op_read(void)
{
	int gi = (int)below(NG);
	struct fg *m = &F.g[gi];
	uint8_t sentinel = (uint8_t)below(256);
	uint64_t gpa;
	size_t len, p, i;
	struct snap b;
	int rc;

	pick_range(m, &gpa, &len);
	if (chance(5)) {
		len = (size_t)(1 + below(BUFSZ));
		if (len > m->size)
			len = (size_t)m->size;
		gpa = below(m->size - len + 1);
	}
	memset(F.buf, sentinel, len);
	snap_take(&b);
	rc = umlmem_read(m->g, gpa, F.buf, len);
	expect_outcome("umlmem_read", rc, &b, true);
	if (rc == 0) {
		check_bytes(gi, gpa, F.buf, len, "umlmem_read");
		return;
	}
	F.failed_reads++;
	/* The pages before the failing one are delivered right; from the
	   failing page on, the buffer is as it was: nothing torn, nothing
	   of another page. */
	for (i = 0; i < len && F.buf[i] == m->mem[gpa + i]; i++)
		;
	p = i == len ? len : (size_t)(((gpa + i) & ~(uint64_t)(PG - 1)) > gpa ?
				      ((gpa + i) & ~(uint64_t)(PG - 1)) - gpa : 0);
	for (i = p; i < len; i++)
		FCHK(F.buf[i] == sentinel, "umlmem_read(guest %d, 0x%" PRIx64 "+%zu) failed (%s) but "
		     "wrote byte %zu of the buffer (0x%02x) at or after the failing page (offset %zu)",
		     gi, gpa, len, umlmem_strerror(rc), i, F.buf[i], p);
	disarm_all();
	verify_pages(gi, gpa / PG, (gpa + len - 1) / PG, "pages of a failed read");
}

static void check_pin(const struct fpin *pn, const char *what)
{
	check_bytes(pn->gi, pn->idx * PG, pn->p, page_len(&F.g[pn->gi], pn->idx), what);
}

static void scribble(const struct fpin *pn)
{
	struct fg *m = &F.g[pn->gi];
	size_t pl = page_len(m, pn->idx);
	size_t off = (size_t)below(pl);
	size_t len = (size_t)(1 + below(pl - off));

	fill_content(F.buf2, len);
	memcpy(pn->p + off, F.buf2, len);
	memcpy(m->mem + pn->idx * PG + off, F.buf2, len);
}

static void op_pin(void)
{
	struct fpin pn;
	struct fg *m;
	void *ptr = NULL;
	struct snap b;
	int rc;

	if (F.npins >= MAXPINS)
		return;
	pn.gi = (int)below(NG);
	m = &F.g[pn.gi];
	pn.idx = below(m->npages);
	pn.write = chance(50);
	snap_take(&b);
	rc = umlmem_pin(m->g, pn.idx * PG, pn.write ? UMLMEM_READ | UMLMEM_WRITE : UMLMEM_READ,
			&ptr);
	expect_outcome("umlmem_pin", rc, &b, false);
	if (rc) {
		F.failed_pins++;
		disarm_all();
		verify_pages(pn.gi, pn.idx, pn.idx, "page of a failed pin");
		return;
	}
	pn.p = ptr;
	m->pins[pn.idx]++;
	check_pin(&pn, "umlmem_pin");
	if (pn.write)
		scribble(&pn);
	F.pins[F.npins++] = pn;
}

static void op_unpin(void)
{
	unsigned k;
	struct fpin pn;
	int rc;

	if (!F.npins)
		return;
	k = (unsigned)below(F.npins);
	pn = F.pins[k];
	check_pin(&pn, "pinned page before unpin");
	if (pn.write && chance(50))
		scribble(&pn);
	rc = umlmem_unpin(F.g[pn.gi].g, pn.idx * PG);
	FCHK(rc == 0, "umlmem_unpin(guest %d, page %" PRIu64 "): %s", pn.gi, pn.idx,
	     umlmem_strerror(rc));
	F.g[pn.gi].pins[pn.idx]--;
	F.pins[k] = F.pins[--F.npins];
}

static void op_scribble(void)
{
	for (unsigned t = 0; t < F.npins; t++) {
		const struct fpin *pn = &F.pins[below(F.npins)];

		if (pn->write) {
			scribble(pn);
			return;
		}
	}
}

static void op_discard(void)
{
	int gi = (int)below(NG);
	struct fg *m = &F.g[gi];
	uint64_t first = below(m->npages), n = 1 + below(8), len;
	bool busy = false;
	int rc;

	if (first + n >= m->npages) {
		n = m->npages - first;
		len = m->size - first * PG;
	} else {
		len = n * PG;
	}
	for (uint64_t idx = first; idx < first + n; idx++)
		busy = busy || m->pins[idx];
	rc = umlmem_discard(m->g, first * PG, len);
	if (busy) {
		FCHK(rc == -EBUSY, "umlmem_discard over a pinned page: %s", umlmem_strerror(rc));
		return;
	}
	FCHK(rc == 0, "umlmem_discard(guest %d, page %" PRIu64 ", %" PRIu64 " pages): %s: %s", gi,
	     first, n, umlmem_strerror(rc), umlmem_errmsg());
	memset(m->mem + first * PG, 0, len);
}

static void op_reclaim(void)
{
	uint64_t want = below(2 * budget_pages + 1), ev = UINT64_MAX;
	struct umlmem_stats s0, s1;
	struct snap b;
	int rc;

	FCHK(umlmem_host_stats(F.h, &s0) == 0, "stats");
	snap_take(&b);
	rc = umlmem_reclaim(F.h, want, &ev);
	expect_outcome("umlmem_reclaim", rc, &b, false);
	FCHK(umlmem_host_stats(F.h, &s1) == 0, "stats");
	/* what it reports evicted is what left memory, failures or not (the
	   reclaim thread may evict more meanwhile, never less) */
	FCHK((F.p->flags & UMLMEM_BACKGROUND) ? s0.resident_pages - s1.resident_pages >= ev :
	     s0.resident_pages - s1.resident_pages == ev, "umlmem_reclaim(%" PRIu64 ") -> %s "
	     "reported %" PRIu64 " evicted, resident went %" PRIu64 " -> %" PRIu64, want,
	     umlmem_strerror(rc), ev, s0.resident_pages, s1.resident_pages);
	if (rc)
		F.failed_reclaims++;
}

static void op_dedup(void)
{
	uint64_t merged = 0;
	int rc = umlmem_dedup_scan(F.h, below(4 * budget_pages + 1), &merged);

	FCHK(rc == 0, "umlmem_dedup_scan: %s", umlmem_strerror(rc));
}

static void do_check(void)
{
	char msg[512] = "";
	int rc = host_check(F.h, msg, sizeof(msg));

	FCHK(rc == 0, "host_check: %d: %s", rc, msg);
}

static void check_counts(void)
{
	struct umlmem_stats s;

	FCHK(umlmem_host_stats(F.h, &s) == 0, "stats");
	FCHK(s.resident_pages + s.swapped_pages + s.zero_pages == s.ram_pages,
	     "resident %" PRIu64 " + swapped %" PRIu64 " + zero %" PRIu64 " != ram %" PRIu64,
	     s.resident_pages, s.swapped_pages, s.zero_pages, s.ram_pages);
	FCHK(s.frames_used <= budget_pages, "frames_used %" PRIu64 " above the budget",
	     s.frames_used);
}

static void run_faults(const struct fparams *p)
{
	static const uint64_t sizes[NG] = { 96 * PG, 80 * PG + 1234, 112 * PG, 64 * PG + 7 };
	uint64_t steps = tu_scaled(p->steps), total = 0, fr, fw;
	struct umlmem_stats s;

	F.p = p;
	F.seed = pick_seed();
	F.rng = F.seed;
	sweep_gi = 0;
	sweep_gpa = 0;
	cr_log_info("faults/%s: seed 0x%016" PRIx64 " (replay: UMLMEM_TEST_SEED=0x%016" PRIx64
		    "), %" PRIu64 " steps", p->name, F.seed, F.seed, steps);
	F.h = mk_host(p->io, budget_pages, p->flags, 2, 8);
	F.e = host_engine(F.h);
	F.buf = aligned_alloc(PG, BUFSZ);
	F.buf2 = aligned_alloc(PG, BUFSZ);
	cr_assert(F.buf && F.buf2);
	for (int i = 0; i < NG; i++) {
		struct fg *m = &F.g[i];

		m->size = sizes[i];
		m->npages = (m->size + PG - 1) / PG;
		m->g = tu_guest(F.h, m->size);
		m->mem = calloc(1, m->size);
		m->pins = calloc(m->npages, sizeof(*m->pins));
		cr_assert(m->mem && m->pins);
		total += m->npages;
	}
	cr_assert_geq(total, 8 * budget_pages);

	for (F.step = 1; F.step <= steps; F.step++) {
		unsigned r = (unsigned)below(100);

		if (r < 4)
			op_arm();
		else if (r < 38)
			op_write();
		else if (r < 66)
			op_read();
		else if (r < 72)
			op_pin();
		else if (r < 78)
			op_unpin();
		else if (r < 81)
			op_scribble();
		else if (r < 87)
			op_discard();
		else if (r < 96 || !p->dedup)
			op_reclaim();
		else
			op_dedup();
		check_counts();
		/* short runs (valgrind) must see both directions fail too:
		   a direction that has not failed yet is armed for its next
		   request */
		if (F.step % 100 == 50) {
			for (int op = IO_READ; op <= IO_WRITE; op++)
				if (!fired_total(op) && !F.arm[op].armed)
					arm(op, (enum io_fault)(1 + below(3)), 1, 1 + below(3));
		}
		if (F.step % 500 == 0) {
			disarm_all();
			check_all("periodic full read");
			do_check();
		}
	}

	/* Disarmed: every page of every guest is exactly the model, from
	   memory and again from swap. */
	disarm_all();
	while (F.npins)
		op_unpin();
	do_check();
	check_all("final read");
	{
		int rc = umlmem_reclaim(F.h, budget_pages, NULL);

		FCHK(rc == 0, "umlmem_reclaim with no fault armed: %s: %s", umlmem_strerror(rc),
		     umlmem_errmsg());
	}
	check_all("final read after reclaim");
	do_check();

	fr = fired_total(IO_READ);
	fw = fired_total(IO_WRITE);
	cr_assert_eq(umlmem_host_stats(F.h, &s), 0);
	cr_log_info("faults/%s: %" PRIu64 " armings; faults fired: %" PRIu64 " reads, %" PRIu64
		    " writes; failed calls %" PRIu64 " (%" PRIu64 " -EIO, %" PRIu64 " -ENOSPC): "
		    "writes %" PRIu64 " (%" PRIu64 " after writing a prefix), reads %" PRIu64
		    ", pins %" PRIu64 ", reclaims %" PRIu64 "; io_errors %" PRIu64
		    " checksum_errors %" PRIu64 " swap_outs %" PRIu64 " swap_ins %" PRIu64,
		    p->name, F.n_arms, fr, fw, F.calls_failed, F.n_eio, F.n_enospc, F.failed_writes,
		    F.partial_writes, F.failed_reads, F.failed_pins, F.failed_reclaims, s.io_errors,
		    s.checksum_errors, s.swap_outs, s.swap_ins);
	FCHK(s.checksum_errors == 0, "checksum_errors %" PRIu64 " with only transfer faults",
	     s.checksum_errors);
	FCHK((p->flags & UMLMEM_BACKGROUND) ||
	     (s.io_errors <= fr + fw && s.io_errors >= fw && s.io_errors >= F.calls_failed),
	     "io_errors %" PRIu64 ": %" PRIu64 " reads and %" PRIu64 " writes failed, %" PRIu64
	     " calls failed", s.io_errors, fr, fw, F.calls_failed);
	if (p->flags & UMLMEM_NO_READAHEAD)
		FCHK(s.io_errors == fr + fw, "io_errors %" PRIu64 ", faults fired %" PRIu64,
		     s.io_errors, fr + fw);
	/* the run must really have exercised failures */
	FCHK(fr > 0 && fw > 0, "faults fired: %" PRIu64 " reads, %" PRIu64 " writes", fr, fw);
	FCHK(s.io_errors > 0, "faults fired but io_errors is 0");
	FCHK(F.calls_failed > 0, "no call ever failed");
	if (!tu_valgrind())
		FCHK(F.n_eio > 0 && F.n_enospc > 0, "-EIO %" PRIu64 " times, -ENOSPC %" PRIu64
		     " times", F.n_eio, F.n_enospc);
	FCHK(s.swap_outs > 0 && s.swap_ins > 0, "no swap traffic");

	for (int i = 0; i < NG; i++) {
		umlmem_guest_destroy(F.g[i].g);
		F.g[i].g = NULL;
	}
	cr_assert_eq(umlmem_host_stats(F.h, &s), 0);
	cr_assert_eq(s.frames_used, 0, "%" PRIu64 " frames used with no guest", s.frames_used);
	{
		struct swap_info si;

		swap_info(host_swap(F.h), &si);
		cr_assert_eq(si.slots_used, 0, "%" PRIu64 " slots used with no guest",
			     si.slots_used);
	}
	tu_check(F.h);
}

#define FAULT_RUN(tname, engine, hflags, nsteps, merge)                        \
	Test(faults, tname)                                                    \
	{                                                                      \
		static const struct fparams p = {                              \
			.name = #tname, .io = engine, .flags = hflags,          \
			.steps = nsteps, .dedup = merge,                        \
		};                                                             \
		run_faults(&p);                                                \
	}

/* With readahead and merge scans: the counts are bounded. */
FAULT_RUN(random_uring, UMLMEM_IO_URING, 0, 6000, true)
FAULT_RUN(random_aio, UMLMEM_IO_AIO, 0, 6000, true)
FAULT_RUN(random_sync, UMLMEM_IO_SYNC, 0, 6000, true)
/* Without readahead: every fault that fires is one counted io_error. */
FAULT_RUN(exact_uring, UMLMEM_IO_URING, UMLMEM_NO_READAHEAD, 4000, false)
FAULT_RUN(exact_aio, UMLMEM_IO_AIO, UMLMEM_NO_READAHEAD, 4000, false)
FAULT_RUN(exact_sync, UMLMEM_IO_SYNC, UMLMEM_NO_READAHEAD, 4000, false)
/* With the reclaim thread writing (and failing) on its own: the outcomes
   and the data are checked, the counts only where the thread cannot move
   them. */
FAULT_RUN(background_uring, UMLMEM_IO_URING, UMLMEM_BACKGROUND, 4000, true)
FAULT_RUN(background_aio, UMLMEM_IO_AIO, UMLMEM_BACKGROUND, 4000, true)
FAULT_RUN(background_sync, UMLMEM_IO_SYNC, UMLMEM_BACKGROUND, 4000, true)

/* ---- swap files changed behind the library's back -------------------------- */

/* The content of page @idx of guest @gi: never all zeros. */
static void pattern(void *page, int gi, uint64_t idx)
{
	tu_fill(page, PG, (uint64_t)gi << 40 ^ idx * 0x9e3779b97f4a7c15ull ^ 0xc0ffee);
	((uint8_t *)page)[0] |= 1;
}

/* The slot that page @idx of @g lives in; fails unless it is in swap only. */
static uint64_t slot_of(umlmem_guest *g, uint64_t idx)
{
	pte_t *e = pte_find(g, idx);
	pte_t v = e ? LOAD(e) : PTE_ZERO;

	cr_assert_eq(PTE_TYPE(v), PTE_STORED, "page %" PRIu64 " is not in swap (entry type %u)", idx,
		     PTE_TYPE(v));
	cr_assert_eq(tkey_tier(PTE_VAL(v)), TIER_SWAP, "page %" PRIu64 " is not in the swap tier",
		     idx);
	return tkey_handle(PTE_VAL(v));
}

/* Reads or writes the raw 4 KiB of slot @slot through the library's own
   descriptor (aligned buffer and offset: the files may be O_DIRECT). */
static void slot_io(uint64_t slot, void *page, bool write)
{
	struct swap *sw = host_swap(F.h);
	unsigned file;
	uint64_t off;
	ssize_t n;

	swap_where(sw, slot, &file, &off);
	if (write)
		n = pwrite(swap_fd(sw, file), page, PG, (off_t)off);
	else
		n = pread(swap_fd(sw, file), page, PG, (off_t)off);
	cr_assert_eq(n, (ssize_t)PG, "%s of slot %" PRIu64 " (file %u, offset %" PRIu64 "): %zd: %s",
		     write ? "pwrite" : "pread", slot, file, off, n, strerror(errno));
	if (write)
		cr_assert_eq(fdatasync(swap_fd(sw, file)), 0);
}

struct target {
	int gi;
	uint64_t idx, slot;
	uint8_t *orig;         /* the slot's bytes before the damage */
	const char *how;
};

/* A read of a damaged page: -EIO, a message about the checksum, and not a
   byte of the buffer written. */
static void expect_bad(umlmem_guest *g, uint64_t idx, const char *how)
{
	uint8_t *b = F.buf;
	int rc;

	memset(b, 0x5a, PG);
	rc = umlmem_read(g, idx * PG, b, PG);
	cr_assert_eq(rc, -EIO, "read of a page whose slot was damaged (%s): %s, expected -EIO",
		     how, umlmem_strerror(rc));
	cr_assert_not_null(strstr(umlmem_errmsg(), "checksum"), "the message does not name the "
			   "checksum: \"%s\"", umlmem_errmsg());
	for (unsigned i = 0; i < PG; i++)
		cr_assert_eq(b[i], 0x5a, "a failed read (%s) delivered byte %u", how, i);
}

static void expect_good(umlmem_guest *g, int gi, uint64_t idx, size_t len)
{
	int rc;

	memset(F.buf, 0x5a, PG);
	rc = umlmem_read(g, idx * PG, F.buf, len);
	cr_assert_eq(rc, 0, "read of guest %d page %" PRIu64 ": %s: %s", gi, idx,
		     umlmem_strerror(rc), umlmem_errmsg());
	pattern(F.buf2, gi, idx);
	cr_assert(memcmp(F.buf, F.buf2, len) == 0, "guest %d page %" PRIu64 " reads wrong bytes",
		  gi, idx);
}

static uint64_t merge_all(void)
{
	uint64_t total = 0;
	int quiet = 0;

	for (int n = 0; n < 64 && quiet < 2; n++) {
		uint64_t m = 0;

		cr_assert_eq(umlmem_dedup_scan(F.h, 4 * budget_pages, &m), 0);
		total += m;
		quiet = m ? 0 : quiet + 1;
	}
	return total;
}

static void corrupt_case(enum umlmem_io_engine io)
{
	enum { NT = 6, GP = 80, SP = 8 };
	static const uint64_t gbytes[2] = { GP * PG, GP * PG - 1000 };
	umlmem_guest *g[2], *c[2];
	struct target t[NT];
	struct umlmem_stats s0, s1;
	uint64_t rng = 0x5eed ^ (uint64_t)io, ev, shared_slot;
	uint8_t *junk = aligned_alloc(PG, PG), *spage = aligned_alloc(PG, PG);
	void *pp;
	int rc;

	cr_assert(junk && spage);
	F.h = mk_host(io, 24, 0, 2, 8);
	F.buf = aligned_alloc(PG, BUFSZ);
	F.buf2 = aligned_alloc(PG, BUFSZ);
	cr_assert(F.buf && F.buf2);
	for (int gi = 0; gi < 2; gi++) {
		g[gi] = tu_guest(F.h, gbytes[gi]);
		for (uint64_t i = 0; i < GP; i++) {
			size_t len = (i + 1) * PG <= gbytes[gi] ? PG : (size_t)(gbytes[gi] - i * PG);

			pattern(F.buf, gi, i);
			cr_assert_eq(umlmem_write(g[gi], i * PG, F.buf, len), 0, "%s",
				     umlmem_errmsg());
		}
	}
	/* two more guests with the same SP pages, merged, so that each
	   merged frame goes to swap once and its slot serves both */
	for (int k = 0; k < 2; k++) {
		c[k] = tu_guest(F.h, SP * PG);
		for (uint64_t i = 0; i < SP; i++) {
			pattern(F.buf, 7, i);
			cr_assert_eq(umlmem_write(c[k], i * PG, F.buf, PG), 0);
		}
	}
	/* the merged pairs must be resident together: read them back in */
	for (int k = 0; k < 2; k++)
		for (uint64_t i = 0; i < SP; i++)
			cr_assert_eq(umlmem_read(c[k], i * PG, F.buf, PG), 0);
	merge_all();
	cr_assert_eq(umlmem_host_stats(F.h, &s0), 0);
	cr_assert_gt(s0.sharing_pages, 0, "nothing merged: the shared-slot case tests nothing");
	cr_assert_eq(umlmem_reclaim(F.h, 24, &ev), 0, "%s", umlmem_errmsg());
	cr_assert_eq(umlmem_host_stats(F.h, &s0), 0);
	cr_assert_eq(s0.resident_pages, 0, "pages still resident after reclaiming the budget");

	/* Damage NT slots of the first two guests, each another way. */
	for (int k = 0; k < NT; k++) {
		bool dup;

		do {
			t[k].gi = (int)(tu_splitmix64(&rng) & 1);
			t[k].idx = tu_splitmix64(&rng) % (GP - 1);
			dup = false;
			for (int j = 0; j < k; j++)
				dup = dup || (t[j].gi == t[k].gi && t[j].idx == t[k].idx);
		} while (dup);
		t[k].slot = slot_of(g[t[k].gi], t[k].idx);
		t[k].orig = aligned_alloc(PG, PG);
		cr_assert_not_null(t[k].orig);
		slot_io(t[k].slot, t[k].orig, false);
		/* the slot really holds the page: the file is read right */
		pattern(F.buf2, t[k].gi, t[k].idx);
		cr_assert(memcmp(t[k].orig, F.buf2, PG) == 0, "slot %" PRIu64 " does not hold guest "
			  "%d page %" PRIu64, t[k].slot, t[k].gi, t[k].idx);
		memcpy(junk, t[k].orig, PG);
		switch (k) {
		case 0:
			t[k].how = "one bit flipped";
			junk[tu_splitmix64(&rng) % PG] ^= (uint8_t)(1u << (tu_splitmix64(&rng) % 8));
			break;
		case 1:
			t[k].how = "garbage";
			tu_fill(junk, PG, tu_splitmix64(&rng));
			break;
		case 2:
			t[k].how = "zeros";
			memset(junk, 0, PG);
			break;
		case 3:
			t[k].how = "a torn page (second half zeros)";
			memset(junk + PG / 2, 0, PG / 2);
			break;
		case 4:
			t[k].how = "another slot's valid content";
			slot_io(slot_of(g[t[k].gi], t[k].idx + 1), junk, false);
			break;
		default:
			t[k].how = "the last byte changed";
			junk[PG - 1] ^= 0xff;
			break;
		}
		slot_io(t[k].slot, junk, true);
	}
	/* and one slot two merged pages share */
	shared_slot = slot_of(c[0], 3);
	cr_assert_eq(slot_of(c[1], 3), shared_slot, "the merged page was not swapped out once");
	slot_io(shared_slot, spage, false);
	memcpy(junk, spage, PG);
	junk[100] ^= 4;
	slot_io(shared_slot, junk, true);

	/* Every page, in order (so readahead meets the damaged slots too). */
	cr_assert_eq(umlmem_host_stats(F.h, &s0), 0);
	for (int gi = 0; gi < 2; gi++) {
		for (uint64_t i = 0; i < GP; i++) {
			size_t len = (i + 1) * PG <= gbytes[gi] ? PG : (size_t)(gbytes[gi] - i * PG);
			const char *how = NULL;

			for (int k = 0; k < NT; k++)
				if (t[k].gi == gi && t[k].idx == i)
					how = t[k].how;
			if (how)
				expect_bad(g[gi], i, how);
			else
				expect_good(g[gi], gi, i, len);
		}
	}
	for (int k = 0; k < 2; k++) {
		for (uint64_t i = 0; i < SP; i++) {
			if (i == 3) {
				expect_bad(c[k], 3, "a shared slot with one bit flipped");
				continue;
			}
			cr_assert_eq(umlmem_read(c[k], i * PG, F.buf, PG), 0);
			pattern(F.buf2, 7, i);
			cr_assert(memcmp(F.buf, F.buf2, PG) == 0, "merged guest %d page %" PRIu64
				  " reads wrong bytes", k, i);
		}
	}
	cr_assert_eq(umlmem_host_stats(F.h, &s1), 0);
	cr_assert_eq(s1.checksum_errors - s0.checksum_errors, NT + 2, "%d damaged reads counted "
		     "as %" PRIu64 " checksum errors", NT + 2, s1.checksum_errors - s0.checksum_errors);
	cr_assert_eq(s1.io_errors, s0.io_errors, "damaged slots counted as I/O errors");
	tu_check(F.h);

	/* The slot is kept: the same reads fail again, as do a pin and a
	   partial write, which need the old bytes; none changes anything. */
	for (int k = 0; k < NT; k++)
		expect_bad(g[t[k].gi], t[k].idx, t[k].how);
	rc = umlmem_pin(g[t[0].gi], t[0].idx * PG, UMLMEM_READ, &pp);
	cr_assert_eq(rc, -EIO, "pin of a damaged page: %s", umlmem_strerror(rc));
	rc = umlmem_write(g[t[1].gi], t[1].idx * PG + 17, "x", 1);
	cr_assert_eq(rc, -EIO, "partial write of a damaged page: %s", umlmem_strerror(rc));
	cr_assert_eq(umlmem_host_stats(F.h, &s0), 0);
	cr_assert_eq(s0.checksum_errors - s1.checksum_errors, NT + 2);
	tu_check(F.h);

	/* A whole-page write needs no old bytes: it heals page 2. */
	tu_fill(F.buf, PG, 0xabcdef);
	cr_assert_eq(umlmem_write(g[t[2].gi], t[2].idx * PG, F.buf, PG), 0, "whole-page write over a "
		     "damaged slot: %s", umlmem_errmsg());
	memset(F.buf2, 0, PG);
	cr_assert_eq(umlmem_read(g[t[2].gi], t[2].idx * PG, F.buf2, PG), 0);
	cr_assert(memcmp(F.buf, F.buf2, PG) == 0, "the whole-page write does not read back");
	/* The others heal when their bytes come back. */
	for (int k = 0; k < NT; k++)
		if (k != 2)
			slot_io(t[k].slot, t[k].orig, true);
	slot_io(shared_slot, spage, true);
	for (int k = 0; k < NT; k++)
		if (k != 2)
			expect_good(g[t[k].gi], t[k].gi, t[k].idx, PG);
	for (int k = 0; k < 2; k++) {
		cr_assert_eq(umlmem_read(c[k], 3 * PG, F.buf, PG), 0, "restored shared slot: %s",
			     umlmem_errmsg());
		pattern(F.buf2, 7, 3);
		cr_assert(memcmp(F.buf, F.buf2, PG) == 0);
	}
	/* and nothing else was touched */
	for (int gi = 0; gi < 2; gi++)
		for (uint64_t i = 0; i < GP; i++) {
			size_t len = (i + 1) * PG <= gbytes[gi] ? PG : (size_t)(gbytes[gi] - i * PG);

			if (gi == t[2].gi && i == t[2].idx)
				continue;
			expect_good(g[gi], gi, i, len);
		}
	cr_assert_eq(umlmem_host_stats(F.h, &s1), 0);
	cr_assert_eq(s1.io_errors, 0);
	tu_check(F.h);
	for (int k = 0; k < NT; k++)
		free(t[k].orig);
	free(junk);
	free(spage);
}

Test(faults, corrupt_uring) { corrupt_case(UMLMEM_IO_URING); }
Test(faults, corrupt_aio) { corrupt_case(UMLMEM_IO_AIO); }
Test(faults, corrupt_sync) { corrupt_case(UMLMEM_IO_SYNC); }
