/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * fuzz_model.c: a libFuzzer harness that drives one small host through a
 * sequence of operations decoded from the input, against a plain model.
 *
 * The model is one byte array per live guest, of its nominal size: what
 * every byte must read as. Every read (copy, pinned pointer, native
 * mapping) is compared with it byte for byte; every write that succeeds
 * (copy, through a write pin, native store) updates it; a discard zeroes
 * it. A call that fails must fail with the errno the header documents for
 * that situation (-EFAULT out of range, -EINVAL misaligned or NULL, -EBUSY
 * pinned, -ENOMEM only when every frame is pinned, -ENOSPC only when the
 * swap cap is reached, -EIO only while an injected I/O fault is armed), and
 * after an expected failure the model must still match: nothing is lost.
 * After every operation the counters' identities are checked
 * (include/umlmem.h), a few internal ones too (pins, sharing), and every
 * CHECK_EVERY operations the library's own invariant checker, host_check()
 * (umlmem/internal.h). At the end every guest is read back whole, pushed
 * out to swap, read back again, and everything is destroyed (no frame, no
 * slot, no malloc left). Any mismatch prints what and where, the last
 * operations, and abort()s, so libFuzzer records the input as a crash.
 *
 * Input format (bytes past the end read as 0; the run ends there):
 *   byte 0  budget: 16 + b % 49 frames
 *   byte 1  swap cap: b & 3 == 0 unlimited, else 4 + (b >> 2) pages
 *   byte 2  bit 0 NO_READAHEAD, bit 1 DEDUP_ZERO_ONLY, bits 2-3 swap files
 *           (1 + x % 3), bits 4-5 reclaim_batch (default, 1, 4, 16),
 *           bits 6-7 max_sharing (default, 2, 3, 8)
 *   byte 3  bits 0-3 the guest slots that start live; bits 4-7: 0xf io_uring,
 *           0xe libaio, anything else the sync engine
 *   then 2 bytes of size per starting guest (see guest_size), then
 *   operations, at most MAX_OPS, each one byte of opcode % 32 and its
 *   arguments (see each op_*):
 *     0-6 write          7-11 read        12 inject an I/O fault
 *     13-15 pin          16-18 unpin      19-20 store through a write pin
 *     21-22 discard      23-24 reclaim    25-26 merge scan
 *     27 set_merge       28 create or destroy a guest
 *     29 invalid arguments (16 kinds)     30 native map/unmap/load/store
 *     31 read a guest whole (argument 0xff: a guest of 1 TiB or 128 TiB)
 *
 * Swap files go where the library puts them by default: $TMPDIR, else
 * /var/tmp (fuzz/fuzz.mk sets TMPDIR from FUZZ_TMPDIR).
 * FUZZ_MODEL_TRACE=1 in the environment prints every operation as it runs;
 * FUZZ_MODEL_DUMP=1 also the frame table and page tables after each one;
 * FUZZ_MODEL_NATIVE=0 skips the native-mode operations (map, loads, stores);
 * FUZZ_MODEL_SIGBUS=1 lets native touches run where they may raise SIGBUS
 * (each costs the handler's seconds of retries; fuzz_replay sets it).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "umlmem.h"
#include "internal.h"

#define PG       UMLMEM_PAGE_SIZE
#define NSLOTS   4
#define MAX_OPS  2000
#define MAX_PINS 64
#define MAXBUF   (16 * PG)
#define CHECK_EVERY 8
#define NPAT     16
#define TRACE_N  48

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- input ----------------------------------------------------------------- */

struct in {
	const uint8_t *p;
	size_t n, i;
};

static uint8_t u8(struct in *r)
{
	return r->i < r->n ? r->p[r->i++] : 0;
}

static uint16_t u16(struct in *r)
{
	uint16_t v = u8(r);

	return (uint16_t)(v | (uint16_t)u8(r) << 8);
}

/* ---- state ----------------------------------------------------------------- */

struct mguest {
	umlmem_guest *g;
	uint64_t size, npages;
	uint8_t *mem;          /* the model: what every byte must read as */
	uint8_t *untouched;    /* per page: not written or pinned since create/discard */
	uint32_t *pins;        /* per page: pins we hold */
	uint64_t nuntouched;
	uint32_t domain;
	bool nomerge;          /* merging off (flag at create, or set_merge(0)) */
	bool unmerge_pending;  /* set_merge(0) failed part way: shared frames may stay */
	uint8_t *map;          /* native mapping, or NULL */
	struct umlmem_stats prev;
};

struct mpin {
	int slot;
	uint64_t idx;
	bool write;
	uint8_t *p;
};

static struct {
	umlmem_host *h;
	uint64_t budget;       /* frames */
	uint64_t cap;          /* swap cap in pages, 0: unlimited */
	unsigned max_sharing;  /* resolved */
	unsigned batch;        /* reclaim_batch asked (0: default) */
	unsigned flags;
	enum umlmem_io_engine io;
	struct mguest mg[NSLOTS];
	struct mpin pins[MAX_PINS];
	unsigned npins;
	uint64_t pinned_pages; /* distinct pages holding pins, all guests */
	unsigned nmapped;
	unsigned op;
	struct umlmem_stats hprev;
	bool trace;
	bool no_native;
	bool dump;
	bool huge_done;        /* op_huge is costly (a 1 MiB page table root): once */
	bool inj;              /* an I/O fault was armed when this operation began */
	bool inj_ever;         /* one was armed during this input: error counters move */
	bool sigbus_seen;      /* a native touch raised SIGBUS in this input */
	bool allow_sigbus;     /* FUZZ_MODEL_SIGBUS=1: touches that may raise it */
} S;

static uint8_t buf[MAXBUF] __attribute__((aligned(4096)));
static uint8_t buf2[MAXBUF] __attribute__((aligned(4096)));
static uint8_t buf3[MAXBUF] __attribute__((aligned(4096)));
static uint8_t pat[NPAT][PG];
/* The models, static rather than malloc'd: a fresh megabyte per guest per
   input would cost a page fault per page touched. All zeros between uses. */
#define MAX_GUEST_PAGES 256
static uint8_t model_mem[NSLOTS][MAX_GUEST_PAGES * PG];
static bool pat_ready;

static char trace_ring[TRACE_N][160];
static unsigned trace_n;

static void trace(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void trace(const char *fmt, ...)
{
	char *t = trace_ring[trace_n++ % TRACE_N];
	va_list ap;
	int n;

	n = snprintf(t, sizeof(trace_ring[0]), "#%u ", S.op);
	va_start(ap, fmt);
	vsnprintf(t + n, sizeof(trace_ring[0]) - (size_t)n, fmt, ap);
	va_end(ap);
	if (S.trace)
		fprintf(stderr, "fuzz_model: %s\n", t);
}

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fail(const char *fmt, ...)
{
	va_list ap;
	unsigned first = trace_n > TRACE_N ? trace_n - TRACE_N : 0;

	fprintf(stderr, "\nfuzz_model: host budget %" PRIu64 " frames, swap cap %" PRIu64
		" pages, max_sharing %u, reclaim_batch %u, flags 0x%x, engine %d\n",
		S.budget, S.cap, S.max_sharing, S.batch, S.flags, (int)S.io);
	fprintf(stderr, "fuzz_model: last operations:\n");
	for (unsigned i = first; i < trace_n; i++)
		fprintf(stderr, "  %s\n", trace_ring[i % TRACE_N]);
	fprintf(stderr, "fuzz_model: FAILED at operation %u: ", S.op);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nfuzz_model: umlmem_errmsg: \"%s\"\n", umlmem_errmsg());
	abort();
}

#define CHK(cond, ...) do { if (!(cond)) fail(__VA_ARGS__); } while (0)

/* rc must be exactly @want. A failure must leave a message. */
static void expect_rc(int rc, int want, const char *what)
{
	CHK(rc == want, "%s returned %d (%s), expected %d (%s)", what, rc, umlmem_strerror(rc),
	    want, umlmem_strerror(want));
	CHK(umlmem_strerror(rc) != NULL, "umlmem_strerror(%d) is NULL", rc);
	if (rc)
		CHK(umlmem_errmsg()[0] != '\0', "%s failed with %d but umlmem_errmsg() is empty",
		    what, rc);
}

/* rc must be one of @a, @b (e.g. when two argument errors combine). */
static void expect_rc2(int rc, int a, int b, const char *what)
{
	CHK(rc == a || rc == b, "%s returned %d (%s), expected %d or %d", what, rc,
	    umlmem_strerror(rc), a, b);
	if (rc)
		CHK(umlmem_errmsg()[0] != '\0', "%s failed with %d but umlmem_errmsg() is empty",
		    what, rc);
}

static void host_info(struct umlmem_host_info *i)
{
	int rc = umlmem_host_info(S.h, i, sizeof(*i));

	expect_rc(rc, 0, "umlmem_host_info");
}

static bool swap_full(void)
{
	struct umlmem_host_info i;

	if (!S.cap)
		return false;
	host_info(&i);
	return i.swap_slots_used >= i.swap_slots_cap;
}

/* Fewer than two free slots under the cap: an eviction may find no room. */
static bool swap_nearly_full(void)
{
	struct umlmem_host_info i;

	if (!S.cap)
		return false;
	host_info(&i);
	return i.swap_slots_used + 2 > i.swap_slots_cap;
}

static bool all_pinned(void)
{
	return S.pinned_pages >= S.budget;
}

/* A call that needed a frame failed: only where the header allows it.
   While an I/O fault is armed (op_inject), a failed swap read or write-out
   is -EIO, and a write-out that found the filesystem full is -ENOSPC. */
static void expect_frame_err(int rc, const char *what)
{
	trace("  %s: %s (expected)", what, rc == -ENOMEM ? "-ENOMEM" : rc == -ENOSPC ? "-ENOSPC" :
	      rc == -EIO ? "-EIO" : "?");
	CHK(rc == -ENOMEM || rc == -ENOSPC || (rc == -EIO && S.inj), "%s failed: %d (%s)%s", what,
	    rc, umlmem_strerror(rc), S.inj ? "" : " with no I/O fault injected");
	CHK(umlmem_errmsg()[0] != '\0', "%s failed with %d but umlmem_errmsg() is empty", what, rc);
	if (rc == -ENOMEM)
		CHK(all_pinned(), "%s: -ENOMEM with %" PRIu64 " of %" PRIu64 " frames pinned",
		    what, S.pinned_pages, S.budget);
	if (rc == -ENOSPC && !S.inj) {
		struct umlmem_host_info i;

		host_info(&i);
		CHK(S.cap != 0, "%s: -ENOSPC with unlimited swap", what);
		CHK(i.swap_slots_used >= i.swap_slots_cap,
		    "%s: -ENOSPC with %" PRIu64 " of %" PRIu64 " swap slots used", what,
		    i.swap_slots_used, i.swap_slots_cap);
	}
}

/* umlmem_read that must succeed; while an I/O fault is armed, a read that
   fails with -EIO is retried ("the swap copy is kept, so a retry may
   succeed"): the armed faults run out after a few requests. */
static int read_ok(umlmem_guest *g, uint64_t gpa, void *dst, size_t len, const char *what)
{
	int rc = umlmem_read(g, gpa, dst, len);

	for (int tries = 0; rc == -EIO && S.inj && tries < 16; tries++)
		rc = umlmem_read(g, gpa, dst, len);
	CHK(rc == 0, "%s: umlmem_read(0x%" PRIx64 ", %zu): %d (%s)", what, gpa, len, rc,
	    umlmem_strerror(rc));
	return rc;
}

/* ---- model helpers ------------------------------------------------------------ */

static size_t page_len(const struct mguest *m, uint64_t idx)
{
	uint64_t end = (idx + 1) * PG;

	return end <= m->size ? PG : (size_t)(m->size - idx * PG);
}

static void set_touched(struct mguest *m, uint64_t idx)
{
	if (m->untouched[idx]) {
		m->untouched[idx] = 0;
		m->nuntouched--;
	}
}

static void touch_range(struct mguest *m, uint64_t gpa, size_t len)
{
	if (!len)
		return;
	for (uint64_t idx = gpa / PG; idx <= (gpa + len - 1) / PG; idx++)
		set_touched(m, idx);
}

static void check_bytes(int slot, uint64_t gpa, const uint8_t *got, size_t len, const char *what)
{
	const uint8_t *want = S.mg[slot].mem + gpa;

	if (memcmp(got, want, len) == 0)
		return;
	for (size_t i = 0; i < len; i++)
		CHK(got[i] == want[i], "%s: guest %d byte at gpa 0x%" PRIx64 " (page %" PRIu64
		    "): expected 0x%02x, got 0x%02x", what, slot, gpa + i, (gpa + i) / PG,
		    want[i], got[i]);
}

/* A live slot chosen by @b, or -1 when none is live. */
static int live_slot(uint8_t b)
{
	for (int k = 0; k < NSLOTS; k++) {
		int s = (b + k) % NSLOTS;

		if (S.mg[s].g)
			return s;
	}
	return -1;
}

/* Content for a write of [gpa, gpa + len): zeros, one repeated byte, or
   one of NPAT pattern pages laid at the guest address, so that whole-page
   writes with the same pattern make identical pages (for the merger). */
static void fill(struct in *r, uint8_t *b, uint64_t gpa, size_t len)
{
	uint8_t k = u8(r);

	if (k < 40) {
		memset(b, 0, len);
	} else if (k < 80) {
		memset(b, k, len);
	} else {
		const uint8_t *p = pat[k % NPAT];
		size_t i = 0;

		while (i < len) {
			size_t off = (size_t)((gpa + i) & (PG - 1));
			size_t n = PG - off < len - i ? PG - off : len - i;

			memcpy(b + i, p + off, n);
			i += n;
		}
		if (k >= 240)
			b[(k * 131u) % len] ^= 0x5a;   /* a near duplicate */
	}
}

/* A range in guest @m: whole pages, anything, a few bytes, or long. */
static void pick_range(struct in *r, const struct mguest *m, uint64_t *gpa, size_t *len)
{
	uint8_t mode = u8(r);
	uint64_t page = u8(r) % m->npages, a, l;

	switch (mode & 3) {
	case 0:
		a = page * PG;
		l = (1 + (mode >> 2) % 4) * PG;
		break;
	case 1:
		a = page * PG + u16(r) % PG;
		l = 1 + u16(r) % (3 * PG);
		break;
	case 2:
		a = page * PG + u16(r) % PG;
		l = 1 + (mode >> 2);
		break;
	default:
		a = page * PG + ((mode & 4) ? u16(r) % PG : 0);
		l = 1 + u16(r) % MAXBUF;
		break;
	}
	if (a >= m->size)
		a = m->size - 1;
	if (l > m->size - a)
		l = m->size - a;
	*gpa = a;
	*len = (size_t)l;
}

/* ---- checks ------------------------------------------------------------------ */

static bool mapper_shares(const struct umlmem_guest *g)
{
	for (int s = 0; s < NSLOTS; s++)
		if (S.mg[s].g == g)
			return !(S.mg[s].nomerge && !S.mg[s].unmerge_pending);
	return true;   /* not ours: the huge guest of op_huge; it shares */
}

/* Internal identities the public counters cannot show: every pin we hold is
   on the frame the page maps, and no other frame holds one; a shared frame
   is shared only within one merge domain, by guests that merge, by at most
   max_sharing pages, and is never pinned. */
static void check_internal(void)
{
	struct umlmem_host *h = S.h;
	uint64_t pins = 0;

	pthread_mutex_lock(&h->lock);
	for (int s = 0; s < NSLOTS; s++) {
		struct mguest *m = &S.mg[s];

		if (!m->g)
			continue;
		for (unsigned i = 0; i < S.npins; i++) {
			const struct mpin *pn = &S.pins[i];
			pte_t *e;

			if (pn->slot != s)
				continue;
			e = pte_find(m->g, pn->idx);
			if (!e || PTE_TYPE(*e) != PTE_FRAME) {
				pthread_mutex_unlock(&h->lock);
				fail("guest %d page %" PRIu64 " is pinned but not resident (entry type %u)",
				     s, pn->idx, e ? PTE_TYPE(*e) : 0u);
			}
			if (h->frames[PTE_VAL(*e)].pins != m->pins[pn->idx] ||
			    frame_addr(h, PTE_VAL(*e)) != pn->p) {
				pthread_mutex_unlock(&h->lock);
				fail("guest %d page %" PRIu64 ": frame %" PRIu64 " holds %u pins at %p, "
				     "we hold %u at %p", s, pn->idx, (uint64_t)PTE_VAL(*e),
				     h->frames[PTE_VAL(*e)].pins, frame_addr(h, PTE_VAL(*e)),
				     m->pins[pn->idx], (void *)pn->p);
			}
		}
	}
	for (uint64_t f = 0; f < h->nframes; f++) {
		const struct frame *fr = &h->frames[f];
		const char *bad = NULL;

		pins += fr->pins;
		if (fr->refs < 2)
			continue;
		if (fr->pins)
			bad = "a shared frame is pinned";
		else if (fr->refs > S.max_sharing)
			bad = "more sharers than max_sharing";
		else if (!mapper_shares(fr->g))
			bad = "a guest that does not merge shares it";
		for (uint32_t i = 0; !bad && i + 1 < fr->refs; i++) {
			if (rmap_more(h, f)[i].g->merge_domain != fr->g->merge_domain)
				bad = "shared across merge domains";
			else if (!mapper_shares(rmap_more(h, f)[i].g))
				bad = "a guest that does not merge shares it";
		}
		if (bad) {
			unsigned refs = fr->refs;

			pthread_mutex_unlock(&h->lock);
			fail("frame %" PRIu64 " (refs %u): %s", f, refs, bad);
		}
	}
	pthread_mutex_unlock(&h->lock);
	CHK(pins == S.npins, "the frames hold %" PRIu64 " pins, we hold %u", pins, S.npins);
}

/* FUZZ_MODEL_DUMP=1: the frame table and the page tables after every
   operation, for working out what a failing input did. */
static void dump(void)
{
	struct umlmem_host *h = S.h;

	if (!S.dump)
		return;
	pthread_mutex_lock(&h->lock);
	for (uint64_t f = 0; f < h->nmade; f++) {
		const struct frame *fr = &h->frames[f];

		if (frame_gone(h, f) || (!fr->refs && fr->slot == SLOT_NONE))
			continue;
		fprintf(stderr, "    frame %" PRIu64 ": refs %u pins %u slot %" PRId64 " flags 0x%x, mapped by",
			f, fr->refs, fr->pins, fr->slot == SLOT_NONE ? (int64_t)-1 : (int64_t)fr->slot,
			fr->flags);
		for (uint32_t i = 0; i < fr->refs; i++) {
			const struct umlmem_guest *g = i ? rmap_more(h, f)[i - 1].g : fr->g;
			int slot = -1;

			for (int k = 0; k < NSLOTS; k++)
				if (S.mg[k].g == g)
					slot = k;
			fprintf(stderr, " %d:%" PRIu64, slot, i ? rmap_more(h, f)[i - 1].idx : fr->idx);
		}
		fprintf(stderr, "\n");
	}
	for (int k = 0; k < NSLOTS; k++) {
		if (!S.mg[k].g)
			continue;
		fprintf(stderr, "    guest %d:", k);
		for (uint64_t i = 0; i < S.mg[k].npages; i++) {
			pte_t *e = pte_find(S.mg[k].g, i);

			if (e && *e)
				fprintf(stderr, " %" PRIu64 "=%c%" PRIu64, i, "ZFSB"[PTE_TYPE(*e)],
					(uint64_t)PTE_VAL(*e));
		}
		fprintf(stderr, "\n");
	}
	pthread_mutex_unlock(&h->lock);
}

static void check_mono(const char *who, int slot, const struct umlmem_stats *prev,
		       const struct umlmem_stats *now)
{
#define MONO(f) CHK(now->f >= prev->f, "%s %d: counter " #f " went back from %" PRIu64 \
		    " to %" PRIu64, who, slot, prev->f, now->f)
	MONO(faults);
	MONO(swap_ins);
	MONO(swap_outs);
	MONO(cow_breaks);
#undef MONO
}

/* The identities of include/umlmem.h, after every operation. */
static void check_stats(void)
{
	struct umlmem_stats hs, gs;
	struct umlmem_host_info hi;
	uint64_t res = 0, swp = 0, zero = 0, ram = 0, faults = 0, outs = 0, cows = 0;
	int rc;

	/* A native touch returns as soon as its page is installed; a handler
	   thread may still be finishing other work (a second message for the
	   same touch). Wait for I/O in flight to end, as host_check() does: a
	   frame that stays busy for 2 s is a leak. */
	for (int i = 0; i < 2000; i++) {
		host_info(&hi);
		if (!hi.frames_busy)
			break;
		usleep(1000);
	}
	for (int s = 0; s < NSLOTS; s++) {
		struct mguest *m = &S.mg[s];

		if (!m->g)
			continue;
		rc = umlmem_guest_stats(m->g, &gs);
		expect_rc(rc, 0, "umlmem_guest_stats");
		CHK(gs.ram_pages == m->npages, "guest %d: ram_pages %" PRIu64 ", expected %" PRIu64,
		    s, gs.ram_pages, m->npages);
		CHK(gs.resident_pages + gs.swapped_pages + gs.zero_pages == gs.ram_pages,
		    "guest %d: resident %" PRIu64 " + swapped %" PRIu64 " + zero %" PRIu64
		    " != ram %" PRIu64, s, gs.resident_pages, gs.swapped_pages, gs.zero_pages,
		    gs.ram_pages);
		CHK(gs.zero_pages >= m->nuntouched, "guest %d: zero_pages %" PRIu64 " below the %"
		    PRIu64 " pages never written", s, gs.zero_pages, m->nuntouched);
		CHK(gs.frames_used == 0 && gs.shared_frames == 0 && gs.swap_disk_bytes == 0 &&
		    gs.io_errors == 0 && gs.checksum_errors == 0,
		    "guest %d: host-only counters not 0 in guest stats", s);
		check_mono("guest", s, &m->prev, &gs);
		m->prev = gs;
		res += gs.resident_pages;
		swp += gs.swapped_pages;
		zero += gs.zero_pages;
		ram += gs.ram_pages;
		faults += gs.faults;
		outs += gs.swap_outs;
		cows += gs.cow_breaks;
	}
	rc = umlmem_host_stats(S.h, &hs);
	expect_rc(rc, 0, "umlmem_host_stats");
	host_info(&hi);
	CHK(hs.ram_pages == ram, "host ram_pages %" PRIu64 ", guests sum %" PRIu64, hs.ram_pages, ram);
	CHK(hs.resident_pages == res && hs.swapped_pages == swp && hs.zero_pages == zero,
	    "host counts (res %" PRIu64 " swp %" PRIu64 " zero %" PRIu64 ") differ from the "
	    "guests' sums (%" PRIu64 " %" PRIu64 " %" PRIu64 ")", hs.resident_pages,
	    hs.swapped_pages, hs.zero_pages, res, swp, zero);
	CHK(hs.resident_pages + hs.swapped_pages + hs.zero_pages == hs.ram_pages,
	    "host: resident + swapped + zero != ram_pages");
	CHK(hs.faults >= faults && hs.swap_outs >= outs && hs.cow_breaks >= cows,
	    "host event counters below the sums of its live guests");
	check_mono("host", 0, &S.hprev, &hs);
	S.hprev = hs;
	CHK(S.inj_ever || (hs.io_errors == 0 && hs.checksum_errors == 0), "io_errors %" PRIu64
	    " checksum_errors %" PRIu64 " with no fault injected", hs.io_errors, hs.checksum_errors);
	CHK(hi.frames_total == S.budget, "frames_total %" PRIu64 ", budget %" PRIu64,
	    hi.frames_total, S.budget);
	CHK(hs.frames_used <= S.budget, "frames_used %" PRIu64 " above the budget", hs.frames_used);
	CHK(hs.frames_used == hi.frames_total - hi.frames_free,
	    "frames_used %" PRIu64 " != frames_total %" PRIu64 " - frames_free %" PRIu64,
	    hs.frames_used, hi.frames_total, hi.frames_free);
	CHK(hi.frames_busy == 0, "%" PRIu64 " frames busy with no call in flight", hi.frames_busy);
	CHK(hs.sharing_pages <= hs.resident_pages &&
	    hs.frames_used == hs.resident_pages - hs.sharing_pages + hi.frames_cached + hi.frames_busy,
	    "frames_used %" PRIu64 " != resident %" PRIu64 " - sharing %" PRIu64 " + cached %"
	    PRIu64 " + busy %" PRIu64, hs.frames_used, hs.resident_pages, hs.sharing_pages,
	    hi.frames_cached, hi.frames_busy);
	CHK(hs.sharing_pages >= hs.shared_frames && (hs.shared_frames == 0) == (hs.sharing_pages == 0),
	    "%" PRIu64 " shared frames save %" PRIu64 " pages", hs.shared_frames, hs.sharing_pages);
	CHK(hi.stable_frames <= hs.shared_frames, "stable_frames %" PRIu64 " > shared_frames %" PRIu64,
	    hi.stable_frames, hs.shared_frames);
	CHK(!(S.flags & UMLMEM_DEDUP_ZERO_ONLY) || (hs.sharing_pages == 0 &&
	    hi.pages_merged == hi.zero_merged), "sharing with UMLMEM_DEDUP_ZERO_ONLY");
	CHK(hi.pages_merged != hi.zero_merged || hs.sharing_pages == 0,
	    "%" PRIu64 " pages shared, but no page with content was ever merged", hs.sharing_pages);
	/* without sharing, each swapped page holds a slot of its own */
	CHK(hi.pages_merged != hi.zero_merged || hs.swapped_pages <= hi.swap_slots_used,
	    "%" PRIu64 " pages swapped in %" PRIu64 " slots with nothing ever shared",
	    hs.swapped_pages, hi.swap_slots_used);
	CHK(hi.swap_slots_cap == S.cap, "swap_slots_cap %" PRIu64 ", asked %" PRIu64,
	    hi.swap_slots_cap, S.cap);
	CHK(!S.cap || hi.swap_slots_used <= S.cap, "swap_slots_used %" PRIu64 " above the cap %"
	    PRIu64, hi.swap_slots_used, S.cap);
	CHK(hi.engine == (uint64_t)S.io, "engine %" PRIu64 ", asked %d", hi.engine, (int)S.io);
	CHK(hi.native_guests == S.nmapped, "native_guests %" PRIu64 ", %u mapped", hi.native_guests,
	    S.nmapped);
	CHK(hs.resident_pages >= S.pinned_pages, "%" PRIu64 " resident pages, %" PRIu64 " pinned",
	    hs.resident_pages, S.pinned_pages);
	dump();
	check_internal();
}

static void do_host_check(void)
{
	char msg[512] = "";
	int rc = host_check(S.h, msg, sizeof(msg));

	CHK(rc == 0, "host_check: %d: %s", rc, msg);
}

/* Reads guest @slot whole and compares it with the model. */
static void check_guest(int slot, const char *what)
{
	struct mguest *m = &S.mg[slot];

	for (uint64_t gpa = 0; gpa < m->size; gpa += MAXBUF) {
		size_t len = m->size - gpa < MAXBUF ? (size_t)(m->size - gpa) : MAXBUF;
		read_ok(m->g, gpa, buf, len, what);
		check_bytes(slot, gpa, buf, len, what);
	}
}

/* ---- operations ------------------------------------------------------------- */

static uint64_t guest_size(uint16_t v)
{
	uint64_t pages = 1 + (v & (MAX_GUEST_PAGES - 1));

	return pages * PG - ((v >> 8) & 7) * 511u;
}

static void guest_add(int slot, uint64_t size, unsigned flags, uint32_t domain, const char *name)
{
	struct umlmem_guest_config cfg;
	struct mguest *m = &S.mg[slot];
	int rc;

	umlmem_guest_config_init(&cfg);
	cfg.ram_bytes = size;
	cfg.flags = flags;
	cfg.merge_domain = domain;
	cfg.name = name;
	rc = umlmem_guest_create(S.h, &cfg, &m->g);
	expect_rc(rc, 0, "umlmem_guest_create");
	CHK(m->g != NULL, "umlmem_guest_create gave no guest");
	CHK(strlen(m->g->name) <= 63, "guest name of %zu bytes kept", strlen(m->g->name));
	m->size = size;
	m->npages = (size + PG - 1) / PG;
	m->mem = model_mem[slot];
	m->untouched = malloc(m->npages);
	m->pins = calloc(m->npages, sizeof(*m->pins));
	if (!m->mem || !m->untouched || !m->pins)
		fail("out of memory for the model");
	memset(m->untouched, 1, m->npages);
	m->nuntouched = m->npages;
	m->domain = domain;
	m->nomerge = flags & UMLMEM_GUEST_NOMERGE;
	m->unmerge_pending = false;
	m->map = NULL;
	memset(&m->prev, 0, sizeof(m->prev));
}

static void drop_pin_entry(unsigned k)
{
	struct mpin pn = S.pins[k];
	struct mguest *m = &S.mg[pn.slot];

	if (--m->pins[pn.idx] == 0)
		S.pinned_pages--;
	S.pins[k] = S.pins[--S.npins];
}

static void guest_del(int slot)
{
	struct mguest *m = &S.mg[slot];

	for (unsigned k = 0; k < S.npins;) {
		if (S.pins[k].slot == slot)
			drop_pin_entry(k);
		else
			k++;
	}
	if (m->map)
		S.nmapped--;
	umlmem_guest_destroy(m->g);
	memset(m->mem, 0, m->npages * PG);
	free(m->untouched);
	free(m->pins);
	memset(m, 0, sizeof(*m));
}

static void op_create(struct in *r)
{
	static const char longname[] = "a guest name longer than the sixty-three bytes "
				       "the library keeps of it, to see it cut";
	uint8_t b = u8(r);
	uint16_t v = u16(r);
	int slot = b % NSLOTS;
	const char *name = (b & 0x40) ? longname : (b & 0x80) ? "fuzz" : NULL;

	if (S.mg[slot].g)
		return;
	trace("create guest %d size %" PRIu64 " flags %u domain %u", slot, guest_size(v),
	      (b >> 2) & 1, (b >> 3) & 1);
	guest_add(slot, guest_size(v), (b & 4) ? UMLMEM_GUEST_NOMERGE : 0, (b >> 3) & 1, name);
}

static void op_destroy(struct in *r)
{
	int slot = live_slot(u8(r));

	if (slot < 0)
		return;
	trace("destroy guest %d", slot);
	guest_del(slot);
}

static void op_write(struct in *r)
{
	int slot = live_slot(u8(r));
	struct mguest *m;
	uint64_t gpa;
	size_t len;
	int rc;

	if (slot < 0)
		return;
	m = &S.mg[slot];
	pick_range(r, m, &gpa, &len);
	fill(r, buf, gpa, len);
	trace("write guest %d [0x%" PRIx64 ", +%zu) %02x", slot, gpa, len, buf[0]);
	rc = umlmem_write(m->g, gpa, buf, len);
	if (rc == 0) {
		memcpy(m->mem + gpa, buf, len);
		touch_range(m, gpa, len);
		return;
	}
	expect_frame_err(rc, "umlmem_write");
	/* The pages before the failing one are written, the rest are not:
	   read the range back and find where it switches. A page whose new
	   bytes equal its old ones cannot tell, so the failing page is one of
	   the run of such pages before the first page that kept its old bytes
	   (or that page itself); it needed a frame, so it is not pinned. */
	read_ok(m->g, gpa, buf2, len, "reading back a failed write");
	{
		size_t i = 0;
		bool written = true, unpinned_candidate = false;

		while (i < len) {
			uint64_t a = gpa + i;
			size_t n = PG - (size_t)(a & (PG - 1));
			bool is_new, is_old;

			if (n > len - i)
				n = len - i;
			is_new = !memcmp(buf2 + i, buf + i, n);
			is_old = !memcmp(buf2 + i, m->mem + a, n);
			if (written && !is_new) {
				written = false;
				unpinned_candidate = unpinned_candidate || !m->pins[a / PG];
				CHK(unpinned_candidate, "umlmem_write failed at page %" PRIu64
				    " of guest %d, which is pinned (resident, private)", a / PG, slot);
			}
			if (written) {
				/* ambiguous pages extend the run of candidates;
				   a page that surely took the new bytes ends it */
				if (is_old)
					unpinned_candidate = unpinned_candidate || !m->pins[a / PG];
				else
					unpinned_candidate = false;
				memcpy(m->mem + a, buf + i, n);
				set_touched(m, a / PG);
			} else {
				check_bytes(slot, a, buf2 + i, n,
					    "a page at or after the one a write failed on");
			}
			i += n;
		}
		CHK(!written || unpinned_candidate,
		    "umlmem_write failed, but every page took its new bytes");
	}
}

static void op_read(struct in *r)
{
	int slot = live_slot(u8(r));
	struct mguest *m;
	struct umlmem_stats before, after;
	bool untouched = true;
	uint64_t gpa;
	size_t len;
	int rc;

	if (slot < 0)
		return;
	m = &S.mg[slot];
	pick_range(r, m, &gpa, &len);
	trace("read guest %d [0x%" PRIx64 ", +%zu)", slot, gpa, len);
	for (uint64_t idx = gpa / PG; idx <= (gpa + len - 1) / PG; idx++)
		untouched = untouched && m->untouched[idx];
	if (untouched)
		expect_rc(umlmem_guest_stats(m->g, &before), 0, "umlmem_guest_stats");
	memset(buf, 0xa5, len);
	rc = umlmem_read(m->g, gpa, buf, len);
	if (rc == -EIO && S.inj) {
		trace("  umlmem_read: -EIO (expected)");
		CHK(umlmem_errmsg()[0] != '\0', "umlmem_read failed with -EIO but no message");
		return;
	}
	/* a full swap or an all-pinned budget never makes data unreadable */
	expect_rc(rc, 0, "umlmem_read");
	check_bytes(slot, gpa, buf, len, "umlmem_read");
	if (untouched) {
		expect_rc(umlmem_guest_stats(m->g, &after), 0, "umlmem_guest_stats");
		CHK(after.resident_pages == before.resident_pages && after.faults == before.faults,
		    "reading never-written pages of guest %d took frames (resident %" PRIu64
		    " -> %" PRIu64 ", faults %" PRIu64 " -> %" PRIu64 ")", slot,
		    before.resident_pages, after.resident_pages, before.faults, after.faults);
	}
}

/* Writes input-derived bytes through write pin @pn, and into the model. */
static void scribble(struct in *r, const struct mpin *pn)
{
	struct mguest *m = &S.mg[pn->slot];
	size_t pl = page_len(m, pn->idx);
	size_t off = u16(r) % pl;
	size_t len = 1 + u16(r) % (pl - off);

	fill(r, buf3, pn->idx * PG + off, len);
	trace("scribble guest %d page %" PRIu64 " [+%zu, +%zu)", pn->slot, pn->idx, off, len);
	memcpy(pn->p + off, buf3, len);
	memcpy(m->mem + pn->idx * PG + off, buf3, len);
}

static void op_pin(struct in *r)
{
	uint8_t b = u8(r);
	uint16_t v = u16(r);
	unsigned access = 1 + b % 3;   /* READ, WRITE, both */
	struct mpin pn;
	struct mguest *m;
	void *p = NULL;
	int rc;

	if (S.npins >= MAX_PINS)
		return;
	if (S.npins && (b & 0x80)) {
		/* pins nest: once more on a page we hold */
		pn = S.pins[v % S.npins];
	} else {
		pn.slot = live_slot(b >> 2);
		if (pn.slot < 0)
			return;
		pn.idx = v % S.mg[pn.slot].npages;
	}
	m = &S.mg[pn.slot];
	pn.write = access & UMLMEM_WRITE;
	trace("pin guest %d page %" PRIu64 " access %u", pn.slot, pn.idx, access);
	rc = umlmem_pin(m->g, pn.idx * PG, access, &p);
	if (rc) {
		CHK(!m->pins[pn.idx], "umlmem_pin of a page already pinned failed: %d", rc);
		expect_frame_err(rc, "umlmem_pin");
		read_ok(m->g, pn.idx * PG, buf, page_len(m, pn.idx), "reading a page whose pin failed");
		check_bytes(pn.slot, pn.idx * PG, buf, page_len(m, pn.idx), "page after a failed pin");
		return;
	}
	CHK(p != NULL && ((uintptr_t)p & (PG - 1)) == 0, "umlmem_pin gave %p", p);
	pn.p = p;
	for (unsigned i = 0; i < S.npins; i++)
		if (S.pins[i].slot == pn.slot && S.pins[i].idx == pn.idx)
			CHK(S.pins[i].p == pn.p, "a nested pin of guest %d page %" PRIu64 " moved it "
			    "(%p, then %p)", pn.slot, pn.idx, (void *)S.pins[i].p, (void *)pn.p);
	check_bytes(pn.slot, pn.idx * PG, pn.p, page_len(m, pn.idx), "umlmem_pin");
	set_touched(m, pn.idx);
	if (m->pins[pn.idx]++ == 0)
		S.pinned_pages++;
	S.pins[S.npins++] = pn;
	if (pn.write && (b & 0x40))
		scribble(r, &pn);
}

static void op_unpin(struct in *r)
{
	uint8_t b = u8(r);
	struct mpin pn;
	int rc;

	if (!S.npins)
		return;
	pn = S.pins[b % S.npins];
	trace("unpin guest %d page %" PRIu64, pn.slot, pn.idx);
	/* the pointer saw every write made meanwhile, by any path */
	check_bytes(pn.slot, pn.idx * PG, pn.p, page_len(&S.mg[pn.slot], pn.idx),
		    "pinned page before unpin");
	if (pn.write && (b & 0x80))
		scribble(r, &pn);
	rc = umlmem_unpin(S.mg[pn.slot].g, pn.idx * PG);
	expect_rc(rc, 0, "umlmem_unpin");
	drop_pin_entry(b % S.npins);
}

static void op_scribble(struct in *r)
{
	uint8_t b = u8(r);

	for (unsigned k = 0; k < S.npins; k++) {
		const struct mpin *pn = &S.pins[(b + k) % S.npins];

		if (pn->write) {
			scribble(r, pn);
			return;
		}
	}
}

static void op_discard(struct in *r)
{
	int slot = live_slot(u8(r));
	uint8_t b = u8(r);
	struct mguest *m;
	uint64_t first, n, len;
	bool busy = false;
	int rc;

	if (slot < 0)
		return;
	m = &S.mg[slot];
	first = u8(r) % m->npages;
	n = (b & 0x80) ? m->npages - first : 1 + (uint64_t)(b & 15);
	if (first + n >= m->npages) {
		/* to the end, which need not be a whole page */
		n = m->npages - first;
		len = m->size - first * PG;
	} else {
		len = n * PG;
	}
	for (uint64_t idx = first; idx < first + n; idx++)
		busy = busy || m->pins[idx];
	trace("discard guest %d pages [%" PRIu64 ", +%" PRIu64 ")%s", slot, first, n,
	      busy ? " (pinned)" : "");
	rc = umlmem_discard(m->g, first * PG, len);
	if (busy) {
		expect_rc(rc, -EBUSY, "umlmem_discard over a pinned page");
		return;
	}
	expect_rc(rc, 0, "umlmem_discard");
	memset(m->mem + first * PG, 0, len);
	for (uint64_t idx = first; idx < first + n; idx++) {
		if (!m->untouched[idx]) {
			m->untouched[idx] = 1;
			m->nuntouched++;
		}
	}
}

static void op_reclaim(struct in *r)
{
	uint8_t b = u8(r);
	uint64_t want = (b & 0x80) ? 1000 : b, ev = UINT64_MAX;
	struct umlmem_stats before, after;
	int rc;

	expect_rc(umlmem_host_stats(S.h, &before), 0, "umlmem_host_stats");
	trace("reclaim %" PRIu64, want);
	rc = umlmem_reclaim(S.h, want, (b & 0x40) ? NULL : &ev);
	if (rc)
		expect_frame_err(rc, "umlmem_reclaim");
	CHK(rc != -ENOMEM, "umlmem_reclaim returned -ENOMEM");
	expect_rc(umlmem_host_stats(S.h, &after), 0, "umlmem_host_stats");
	trace("  resident %" PRIu64 " -> %" PRIu64, before.resident_pages, after.resident_pages);
	if (!(b & 0x40))
		CHK(before.resident_pages - after.resident_pages == ev,
		    "umlmem_reclaim(%" PRIu64 ") said %" PRIu64 " evicted, resident went %" PRIu64
		    " -> %" PRIu64, want, ev, before.resident_pages, after.resident_pages);
	/* asked for every frame and no error: only the pinned ones stay */
	if (!rc && want >= before.frames_used)
		CHK(after.frames_used == S.pinned_pages,
		    "umlmem_reclaim(%" PRIu64 ") returned 0 with %" PRIu64 " frames in use, %" PRIu64
		    " pinned (from %" PRIu64 ")", want, after.frames_used, S.pinned_pages,
		    before.frames_used);
}

static void op_dedup(struct in *r)
{
	uint8_t b = u8(r);
	/* a scan of more pages than are resident goes round them in passes,
	   each clearing the indexes: keep it to a few passes */
	uint64_t want = (uint64_t)(b & 0x3f) * ((b & 0x80) ? 4 : 1), merged = UINT64_MAX;
	int rc;

	trace("dedup_scan %" PRIu64, want);
	rc = umlmem_dedup_scan(S.h, want, &merged);
	expect_rc(rc, 0, "umlmem_dedup_scan");
	CHK(merged <= want, "umlmem_dedup_scan(%" PRIu64 ") merged %" PRIu64, want, merged);
	trace("  merged %" PRIu64, merged);
	if ((b & 0x40) && !(b & 0x3f))
		expect_rc(umlmem_dedup_pause(S.h, b & 1), 0, "umlmem_dedup_pause");
}

static void op_set_merge(struct in *r)
{
	uint8_t b = u8(r);
	int slot = live_slot(b);
	struct mguest *m;
	int rc;

	if (slot < 0)
		return;
	m = &S.mg[slot];
	trace("set_merge guest %d %d", slot, (b >> 2) & 1);
	rc = umlmem_guest_set_merge(m->g, (b >> 2) & 1);
	if ((b >> 2) & 1) {
		expect_rc(rc, 0, "umlmem_guest_set_merge(1)");
		m->nomerge = false;
		m->unmerge_pending = false;
		return;
	}
	m->nomerge = true;
	if (rc) {
		expect_frame_err(rc, "umlmem_guest_set_merge(0)");
		m->unmerge_pending = true;
	} else {
		m->unmerge_pending = false;
	}
}

/* A guest of the largest size (or, mostly, of 1 TiB and a bit: the largest
   costs a 1 MiB page table root and a walk of it at destroy): a page at its
   very end is written, read, discarded, and the guest destroyed; the model
   guests are untouched. */
static void op_huge(struct in *r)
{
	struct umlmem_guest_config cfg;
	umlmem_guest *g = NULL;
	uint8_t x = u8(r);
	uint64_t size = (x & 0x0e) == 0x0e ? UMLMEM_MAX_GUEST_BYTES : (1ull << 40) + 3 * PG;
	uint64_t gpa = size - PG - (x & 1) * (1ull << 30);
	int rc;

	if (S.huge_done)
		return;
	S.huge_done = true;
	trace("guest of %" PRIu64 " bytes, page at 0x%" PRIx64, size, gpa);
	umlmem_guest_config_init(&cfg);
	cfg.ram_bytes = size;
	rc = umlmem_guest_create(S.h, &cfg, &g);
	expect_rc(rc, 0, "umlmem_guest_create(a huge guest)");
	memset(buf, 0x3c, PG);
	rc = umlmem_write(g, gpa, buf, PG);
	if (rc) {
		expect_frame_err(rc, "umlmem_write to the huge guest");
	} else {
		memset(buf2, 0, PG);
		read_ok(g, gpa, buf2, PG, "reading the huge guest");
		CHK(!memcmp(buf, buf2, PG), "the huge guest's last page reads back wrong");
	}
	expect_rc(umlmem_write(g, size, buf, 1), -EFAULT, "umlmem_write past the huge guest");
	expect_rc(umlmem_discard(g, gpa, PG), 0, "umlmem_discard of the huge guest");
	memset(buf2, 1, PG);
	read_ok(g, gpa, buf2, PG, "reading the huge guest");
	CHK(buf2[0] == 0 && !memcmp(buf2, buf2 + 1, PG - 1), "a discarded page is not zeros");
	umlmem_guest_destroy(g);
}

/* Arguments the header calls invalid, each with its documented errno. */
static void op_invalid(struct in *r)
{
	uint8_t sub = u8(r), b = u8(r);
	int slot = live_slot(b);
	struct mguest *m = slot >= 0 ? &S.mg[slot] : NULL;
	void *p = NULL;
	int rc;

	trace("invalid %u (b %u, guest %d)", sub % 16, b, slot);
	switch (sub % 16) {
	case 0: { /* read past the end: nothing copied */
		size_t len = 1 + b % 64;
		uint64_t gpa;

		if (!m)
			return;
		gpa = m->size - (len < m->size ? len : m->size) + 1 + (sub >> 4);
		memset(buf, 0x77, len);
		rc = umlmem_read(m->g, gpa, buf, len);
		expect_rc(rc, -EFAULT, "umlmem_read past the end");
		for (size_t i = 0; i < len; i++)
			CHK(buf[i] == 0x77, "umlmem_read past the end copied bytes");
		break;
	}
	case 1: { /* write past the end: nothing written */
		size_t len = 1 + b % 64;
		uint64_t gpa;

		if (!m)
			return;
		gpa = m->size - (len < m->size ? len : m->size) + 1 + (sub >> 4);
		memset(buf, 0x77, len);
		rc = umlmem_write(m->g, gpa, buf, len);
		expect_rc(rc, -EFAULT, "umlmem_write past the end");
		if (gpa < m->size) {
			read_ok(m->g, gpa, buf2, m->size - gpa, "reading after a write past the end");
			check_bytes(slot, gpa, buf2, m->size - gpa, "after a write past the end");
		}
		break;
	}
	case 2: { /* gpa + len overflows */
		uint64_t gpa = UINT64_MAX - b;
		size_t len = 1 + (size_t)b + (sub >> 4);

		if (!m)
			return;
		expect_rc(umlmem_read(m->g, gpa, buf, len), -EFAULT, "umlmem_read overflowing");
		expect_rc(umlmem_write(m->g, gpa, buf, len), -EFAULT, "umlmem_write overflowing");
		expect_rc(umlmem_read(m->g, 1, buf, SIZE_MAX), -EFAULT, "umlmem_read of SIZE_MAX");
		expect_rc(umlmem_discard(m->g, 0, UINT64_MAX - PG + 1), -EFAULT,
			  "umlmem_discard overflowing");
		expect_rc(umlmem_discard(m->g, UINT64_MAX - PG + 1, 2 * PG), -EFAULT,
			  "umlmem_discard overflowing");
		break;
	}
	case 3: /* NULL buffer */
		if (!m)
			return;
		expect_rc(umlmem_read(m->g, 0, NULL, 1 + b), -EINVAL, "umlmem_read(NULL buf)");
		expect_rc(umlmem_write(m->g, 0, NULL, 1 + b), -EINVAL, "umlmem_write(NULL buf)");
		expect_rc(umlmem_read(m->g, b % m->size, NULL, 0), 0, "umlmem_read(NULL, 0)");
		expect_rc(umlmem_write(m->g, b % m->size, NULL, 0), 0, "umlmem_write(NULL, 0)");
		break;
	case 4: /* NULL guest */
		expect_rc(umlmem_read(NULL, 0, buf, 1), -EINVAL, "umlmem_read(NULL guest)");
		expect_rc(umlmem_write(NULL, 0, buf, 1), -EINVAL, "umlmem_write(NULL guest)");
		expect_rc(umlmem_pin(NULL, 0, UMLMEM_READ, &p), -EINVAL, "umlmem_pin(NULL guest)");
		expect_rc(umlmem_unpin(NULL, 0), -EINVAL, "umlmem_unpin(NULL guest)");
		expect_rc(umlmem_discard(NULL, 0, PG), -EINVAL, "umlmem_discard(NULL guest)");
		expect_rc(umlmem_guest_set_merge(NULL, b & 1), -EINVAL, "umlmem_guest_set_merge(NULL)");
		{
			struct umlmem_stats st;

			expect_rc(umlmem_guest_stats(NULL, &st), -EINVAL, "umlmem_guest_stats(NULL)");
		}
		umlmem_guest_destroy(NULL);
		break;
	case 5: { /* bad pins */
		uint64_t idx;

		if (!m)
			return;
		idx = b % m->npages;
		/* misaligned and past the end (in a partial last page): either code */
		rc = umlmem_pin(m->g, idx * PG + 1 + (sub >> 4) * 255, UMLMEM_READ, &p);
		if (idx * PG + 1 + (sub >> 4) * 255 < m->size)
			expect_rc(rc, -EINVAL, "umlmem_pin misaligned");
		else
			expect_rc2(rc, -EINVAL, -EFAULT, "umlmem_pin misaligned past the end");
		expect_rc(umlmem_pin(m->g, m->npages * PG + (sub >> 4) * PG, UMLMEM_READ, &p), -EFAULT,
			  "umlmem_pin past the end");
		expect_rc(umlmem_pin(m->g, idx * PG, 0, &p), -EINVAL, "umlmem_pin access 0");
		expect_rc(umlmem_pin(m->g, idx * PG, UMLMEM_READ | 4u << (sub >> 4), &p), -EINVAL,
			  "umlmem_pin unknown access");
		expect_rc(umlmem_pin(m->g, idx * PG, UMLMEM_WRITE, NULL), -EINVAL,
			  "umlmem_pin(NULL page)");
		expect_rc(umlmem_guest_stats(m->g, NULL), -EINVAL, "umlmem_guest_stats(NULL stats)");
		break;
	}
	case 6: { /* bad unpins */
		uint64_t idx;

		if (!m)
			return;
		idx = b % m->npages;
		rc = umlmem_unpin(m->g, idx * PG + 1 + (sub >> 4));
		if (idx * PG + 1 + (sub >> 4) < m->size)
			expect_rc(rc, -EINVAL, "umlmem_unpin misaligned");
		else
			expect_rc2(rc, -EINVAL, -EFAULT, "umlmem_unpin misaligned past the end");
		expect_rc(umlmem_unpin(m->g, m->npages * PG + (sub >> 4) * PG), -EFAULT,
			  "umlmem_unpin past the end");
		for (uint64_t k = 0; k < m->npages; k++) {
			uint64_t i = (idx + k) % m->npages;

			if (!m->pins[i]) {
				expect_rc(umlmem_unpin(m->g, i * PG), -EINVAL,
					  "umlmem_unpin of a page not pinned");
				break;
			}
		}
		break;
	}
	case 7: { /* bad discards */
		uint64_t page;

		if (!m)
			return;
		page = b % m->npages;
		if ((page + 1) * PG + 1 + (sub >> 4) <= m->size)
			expect_rc(umlmem_discard(m->g, page * PG + 1 + (sub >> 4), PG), -EINVAL,
				  "umlmem_discard misaligned gpa");
		if ((page + 1) * PG + 1 + (sub >> 4) % 8 < m->size)
			expect_rc(umlmem_discard(m->g, page * PG, PG + 1 + (sub >> 4) % 8), -EINVAL,
				  "umlmem_discard of part of a page");
		expect_rc(umlmem_discard(m->g, page * PG, (m->npages - page + 1 + (sub >> 4)) * PG),
			  -EFAULT, "umlmem_discard past the end");
		expect_rc(umlmem_discard(m->g, page * PG, 0), 0, "umlmem_discard of 0 bytes");
		rc = umlmem_discard(m->g, m->npages * PG + PG, 0);
		expect_rc2(rc, 0, -EFAULT, "umlmem_discard of 0 bytes past the end");
		break;
	}
	case 8: { /* bad guest configs */
		struct umlmem_guest_config cfg;
		umlmem_guest *g = NULL;

		umlmem_guest_config_init(&cfg);
		expect_rc(umlmem_guest_create(S.h, &cfg, &g), -EINVAL, "umlmem_guest_create(ram 0)");
		cfg.ram_bytes = UMLMEM_MAX_GUEST_BYTES + 1 + b;
		expect_rc(umlmem_guest_create(S.h, &cfg, &g), -EINVAL,
			  "umlmem_guest_create(ram above the maximum)");
		cfg.ram_bytes = PG;
		cfg.flags = 2u << (sub >> 4) % 8;
		expect_rc(umlmem_guest_create(S.h, &cfg, &g), -EINVAL,
			  "umlmem_guest_create(unknown flags)");
		cfg.flags = 0;
		expect_rc(umlmem_guest_create(NULL, &cfg, &g), -EINVAL, "umlmem_guest_create(NULL host)");
		expect_rc(umlmem_guest_create(S.h, NULL, &g), -EINVAL, "umlmem_guest_create(NULL cfg)");
		expect_rc(umlmem_guest_create(S.h, &cfg, NULL), -EINVAL,
			  "umlmem_guest_create(NULL guest)");
		break;
	}
	case 9: { /* bad host configs */
		struct umlmem_host_config cfg;
		umlmem_host *h = NULL;

		umlmem_host_config_init(&cfg);
		switch (b % 8) {
		case 0: cfg.resident_bytes = (sub >> 4) * 255; break;
		case 1: cfg.resident_bytes = 1ull << 62; break;
		case 2: cfg.resident_bytes = PG; cfg.swap_bytes = 1 + (sub >> 4) * 255; break;
		case 3: cfg.resident_bytes = PG; cfg.swap_files = 65 + (sub >> 4); break;
		case 4: cfg.resident_bytes = PG; cfg.io = (enum umlmem_io_engine)(4 + (sub >> 4)); break;
		case 5: cfg.resident_bytes = PG; cfg.flags = 8u << (sub >> 4) % 8; break;
		case 6:
			expect_rc(umlmem_host_create(NULL, &h), -EINVAL, "umlmem_host_create(NULL cfg)");
			return;
		default:
			cfg.resident_bytes = PG;
			expect_rc(umlmem_host_create(&cfg, NULL), -EINVAL,
				  "umlmem_host_create(NULL host)");
			return;
		}
		rc = umlmem_host_create(&cfg, &h);
		if (rc == 0)
			umlmem_host_destroy(h);
		expect_rc(rc, -EINVAL, "umlmem_host_create(bad config)");
		break;
	}
	case 10: { /* host_info fills only the bytes it is given */
		struct umlmem_host_info i;
		size_t size = (size_t)(b % (sizeof(i) / 8 + 1)) * 8;
		const uint8_t *q = (const uint8_t *)&i;

		memset(&i, 0xee, sizeof(i));
		expect_rc(umlmem_host_info(S.h, &i, size), 0, "umlmem_host_info(short)");
		for (size_t k = size; k < sizeof(i); k++)
			CHK(q[k] == 0xee, "umlmem_host_info(size %zu) wrote byte %zu", size, k);
		if (size >= 8)
			CHK(i.frames_total == S.budget, "umlmem_host_info(short): frames_total %" PRIu64,
			    i.frames_total);
		break;
	}
	case 11: { /* NULL host */
		struct umlmem_stats st;
		struct umlmem_host_info i;
		uint64_t n = 7;

		expect_rc(umlmem_host_stats(NULL, &st), -EINVAL, "umlmem_host_stats(NULL)");
		expect_rc(umlmem_host_stats(S.h, NULL), -EINVAL, "umlmem_host_stats(h, NULL)");
		expect_rc(umlmem_host_info(NULL, &i, sizeof(i)), -EINVAL, "umlmem_host_info(NULL)");
		expect_rc(umlmem_host_info(S.h, NULL, sizeof(i)), -EINVAL, "umlmem_host_info(h, NULL)");
		expect_rc(umlmem_reclaim(NULL, 1, &n), -EINVAL, "umlmem_reclaim(NULL)");
		expect_rc(umlmem_dedup_scan(NULL, 1, &n), -EINVAL, "umlmem_dedup_scan(NULL)");
		expect_rc(umlmem_dedup_pause(NULL, 1), -EINVAL, "umlmem_dedup_pause(NULL)");
		umlmem_host_destroy(NULL);
		break;
	}
	case 12: { /* every code has a name */
		static const int codes[] = { 0, -EINVAL, -EFAULT, -ENOMEM, -ENOSPC, -EIO, -EBUSY,
					     -ENOTSUP, -EOVERFLOW, 1, INT_MIN, INT_MAX, -4095, -99999 };
		const char *s = umlmem_strerror(codes[b % (sizeof(codes) / sizeof(codes[0]))]);

		CHK(s != NULL && s[0], "umlmem_strerror gave NULL or \"\"");
		s = umlmem_strerror(-(int)b - (sub << 8));
		CHK(s != NULL, "umlmem_strerror gave NULL");
		break;
	}
	case 13: /* native mode: bad arguments */
		rc = umlmem_guest_map(NULL, &p);
		expect_rc2(rc, -EINVAL, -ENOSYS, "umlmem_guest_map(NULL)");
		rc = umlmem_guest_unmap(NULL);
		expect_rc2(rc, -EINVAL, -ENOSYS, "umlmem_guest_unmap(NULL)");
		if (m) {
			rc = umlmem_guest_map(m->g, NULL);
			expect_rc2(rc, -EINVAL, -ENOSYS, "umlmem_guest_map(g, NULL)");
			if (!m->map) {
				rc = umlmem_guest_unmap(m->g);
				expect_rc2(rc, -EINVAL, -ENOSYS, "umlmem_guest_unmap of a guest not mapped");
			}
		}
		break;
	default: /* empty accesses */
		if (!m)
			return;
		expect_rc(umlmem_read(m->g, m->size, buf, 0), 0, "umlmem_read(0 bytes at the end)");
		expect_rc(umlmem_write(m->g, m->size, buf, 0), 0, "umlmem_write(0 bytes at the end)");
		rc = umlmem_read(m->g, m->size + 1 + b, buf, 0);
		expect_rc2(rc, 0, -EFAULT, "umlmem_read(0 bytes past the end)");
		break;
	}
}

/* Arms an I/O fault in front of the engine (the tests' hook, swapfiles/
   io.c): the nth swap read or write from now on, and up to three after it,
   fail with EIO, are cut short, or find the filesystem full. Nothing may
   be lost: a failed write-out leaves its page resident, a failed read
   leaves the swap copy, and both are counted in io_errors. */
static void op_inject(struct in *r)
{
	static const enum io_fault kinds[3] = { IO_FAULT_EIO, IO_FAULT_SHORT, IO_FAULT_ENOSPC };
	uint8_t b = u8(r);
	enum io_op op = (b & 4) ? IO_WRITE : IO_READ;
	enum io_fault kind = kinds[b % 3];

	trace("inject %s fault %d: request +%u from now, %u of them", op == IO_WRITE ? "write" : "read",
	      (int)kind, 1 + ((b >> 3) & 3), 1 + ((b >> 5) & 3));
	io_inject(host_engine(S.h), op, 1 + ((b >> 3) & 3), kind, 1 + ((b >> 5) & 3));
	S.inj = S.inj_ever = true;
}

static bool fault_armed(void)
{
	return __atomic_load_n(&host_engine(S.h)->fault_armed, __ATOMIC_ACQUIRE) != 0;
}

/* ---- native mode ------------------------------------------------------------- */

static sigjmp_buf bus_jmp;
static volatile sig_atomic_t bus_armed;

static void on_sigbus(int sig)
{
	(void)sig;
	if (bus_armed)
		siglongjmp(bus_jmp, 1);
	abort();
}

/* memcpy through the native mapping; false when the touch raised SIGBUS
   (which the header allows only when the budget is all pinned or the swap
   cannot take what must leave). One page at a time, so that a SIGBUS means
   that page was not touched at all. */
static bool native_copy(void *dst, const void *src, size_t n)
{
	struct sigaction sa, old;
	bool ok = true;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_sigbus;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, &old);
	if (sigsetjmp(bus_jmp, 1) == 0) {
		volatile uint8_t *d = dst;
		const volatile uint8_t *q = src;

		bus_armed = 1;
		/* byte by byte, no interceptor: the fault lands here */
		for (size_t i = 0; i < n; i++)
			d[i] = q[i];
	} else {
		ok = false;
	}
	bus_armed = 0;
	sigaction(SIGBUS, &old, NULL);
	return ok;
}

static void op_native(struct in *r)
{
	uint8_t b = u8(r);
	int slot = live_slot(b);
	struct mguest *m;
	void *base = NULL;
	int rc;

	if (slot < 0 || S.no_native)
		return;
	m = &S.mg[slot];
	switch ((b >> 2) % 4) {
	case 0:
		trace("map guest %d", slot);
		rc = umlmem_guest_map(m->g, &base);
		if (m->map) {
			expect_rc2(rc, -EBUSY, -ENOSYS, "umlmem_guest_map of a mapped guest");
			return;
		}
		if (rc == -ENOSYS || rc == -EPERM || rc == -EOPNOTSUPP || rc == -ENOMEM)
			return;   /* native mode not available here */
		expect_rc(rc, 0, "umlmem_guest_map");
		CHK(base != NULL, "umlmem_guest_map gave a NULL base");
		m->map = base;
		S.nmapped++;
		return;
	case 1:
		if (!m->map)
			return;
		trace("unmap guest %d", slot);
		expect_rc(umlmem_guest_unmap(m->g), 0, "umlmem_guest_unmap");
		m->map = NULL;
		S.nmapped--;
		return;
	default: {
		bool write = (b >> 2) % 4 == 3;
		uint64_t page = u8(r) % m->npages;
		size_t pl = page_len(m, page), off = u16(r) % pl, len = 1 + u16(r) % (pl - off);
		uint64_t gpa = page * PG + off;

		if (write)
			fill(r, buf, gpa, len);
		if (!m->map)
			return;
		/* A touch that cannot be served is retried by the handler for
		   seconds before the SIGBUS: only with FUZZ_MODEL_SIGBUS=1 (as
		   fuzz_replay sets it), when the input asks for it, and once
		   per input, or the fuzzer would crawl. */
		if ((S.inj || S.pinned_pages + 1 >= S.budget || swap_nearly_full()) &&
		    (!S.allow_sigbus || !(b & 0x80) || S.sigbus_seen))
			return;
		trace("native %s guest %d [0x%" PRIx64 ", +%zu)", write ? "store" : "load", slot,
		      gpa, len);
		if (write) {
			if (native_copy(m->map + gpa, buf, len)) {
				memcpy(m->mem + gpa, buf, len);
				set_touched(m, page);
				return;
			}
		} else if ((b & 0x40) && pl < PG) {
			/* the view is whole pages: past ram_bytes reads as zeros */
			memset(buf, 0xa5, PG);
			if (native_copy(buf, m->map + page * PG, PG)) {
				set_touched(m, page);
				check_bytes(slot, page * PG, buf, pl, "a load through the native mapping");
				for (size_t i = pl; i < PG; i++)
					CHK(buf[i] == 0, "guest %d: byte %zu of the view's last page, past "
					    "ram_bytes, reads 0x%02x, not zero", slot, i, buf[i]);
				return;
			}
		} else {
			memset(buf, 0xa5, len);
			if (native_copy(buf, m->map + gpa, len)) {
				set_touched(m, page);   /* a load may take a frame */
				check_bytes(slot, gpa, buf, len, "a load through the native mapping");
				return;
			}
		}
		S.sigbus_seen = true;
		CHK(all_pinned() || swap_full() || S.inj, "SIGBUS on a native %s of guest %d page %" PRIu64
		    " with %" PRIu64 " of %" PRIu64 " frames pinned and swap not full",
		    write ? "store" : "load", slot, page, S.pinned_pages, S.budget);
		read_ok(m->g, page * PG, buf2, pl, "reading after a SIGBUS");
		check_bytes(slot, page * PG, buf2, pl, "page after a SIGBUS");
		return;
	}
	}
}

/* ---- one input --------------------------------------------------------------- */

static void init_patterns(void)
{
	uint64_t st = 0x243f6a8885a308d3ull;

	for (int p = 0; p < NPAT; p++)
		for (size_t i = 0; i < PG; i += 8) {
			uint64_t z = (st += 0x9e3779b97f4a7c15ull);

			z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
			z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
			z ^= z >> 31;
			memcpy(&pat[p][i], &z, 8);
		}
	pat_ready = true;
}

static void make_host(struct in *r)
{
	static const unsigned batches[4] = { 0, 1, 4, 16 };
	static const unsigned sharing[4] = { 0, 2, 3, 8 };
	struct umlmem_host_config cfg;
	uint8_t b0 = u8(r), b1 = u8(r), b2 = u8(r), b3 = u8(r);
	int rc;

	S.budget = 16 + b0 % 49;
	S.cap = (b1 & 3) ? 4 + (b1 >> 2) : 0;
	S.flags = ((b2 & 1) ? UMLMEM_NO_READAHEAD : 0) | ((b2 & 2) ? UMLMEM_DEDUP_ZERO_ONLY : 0);
	S.batch = batches[(b2 >> 4) & 3];
	S.max_sharing = sharing[b2 >> 6] ? sharing[b2 >> 6] : 256;
	S.io = (b3 >> 4) == 0xf ? UMLMEM_IO_URING : (b3 >> 4) == 0xe ? UMLMEM_IO_AIO : UMLMEM_IO_SYNC;

	umlmem_host_config_init(&cfg);
	cfg.resident_bytes = S.budget * PG;
	cfg.swap_bytes = S.cap * PG;
	cfg.swap_files = 1 + ((b2 >> 2) & 3) % 3;
	cfg.io = S.io;
	cfg.flags = S.flags;
	cfg.reclaim_batch = S.batch;
	cfg.max_sharing = sharing[b2 >> 6];
	rc = umlmem_host_create(&cfg, &S.h);
	if (rc == -ENOTSUP && S.io != UMLMEM_IO_SYNC) {
		/* that engine does not run here (or on this filesystem) */
		S.io = cfg.io = UMLMEM_IO_SYNC;
		rc = umlmem_host_create(&cfg, &S.h);
	}
	if (rc) {
		fprintf(stderr, "fuzz_model: umlmem_host_create: %s: %s\n", umlmem_strerror(rc),
			umlmem_errmsg());
		abort();
	}
	{
		const char *why = NULL;

		CHK(umlmem_host_io_engine(S.h, &why) == S.io && why != NULL,
		    "umlmem_host_io_engine: %d, asked %d", (int)umlmem_host_io_engine(S.h, NULL),
		    (int)S.io);
	}
	for (int s = 0; s < NSLOTS; s++)
		if (b3 & (1u << s))
			guest_add(s, guest_size(u16(r)), 0, 0, NULL);
}

/* Unpins everything, reads every guest back, pushes all out and reads it
   back again, then destroys everything and checks nothing is left. */
static void finish(void)
{
	struct umlmem_stats hs;
	struct umlmem_host_info hi;

	S.op++;
	trace("finish");
	/* faults still armed go: the final reads must all succeed */
	io_inject(host_engine(S.h), IO_READ, 0, IO_FAULT_NONE, 0);
	io_inject(host_engine(S.h), IO_WRITE, 0, IO_FAULT_NONE, 0);
	CHK(!fault_armed(), "I/O faults still armed after disarming them");
	S.inj = false;
	while (S.npins) {
		const struct mpin *pn = &S.pins[S.npins - 1];

		check_bytes(pn->slot, pn->idx * PG, pn->p, page_len(&S.mg[pn->slot], pn->idx),
			    "pinned page at the end");
		expect_rc(umlmem_unpin(S.mg[pn->slot].g, pn->idx * PG), 0, "umlmem_unpin");
		drop_pin_entry(S.npins - 1);
	}
	for (int s = 0; s < NSLOTS; s++) {
		if (S.mg[s].map) {
			expect_rc(umlmem_guest_unmap(S.mg[s].g), 0, "umlmem_guest_unmap");
			S.mg[s].map = NULL;
			S.nmapped--;
		}
	}
	check_stats();
	do_host_check();
	for (int s = 0; s < NSLOTS; s++)
		if (S.mg[s].g)
			check_guest(s, "final read");
	{
		int rc = umlmem_reclaim(S.h, S.budget, NULL);

		if (rc)
			expect_frame_err(rc, "umlmem_reclaim at the end");
	}
	for (int s = 0; s < NSLOTS; s++)
		if (S.mg[s].g)
			check_guest(s, "final read after reclaim");
	check_stats();
	do_host_check();
	for (int s = 0; s < NSLOTS; s++)
		if (S.mg[s].g)
			guest_del(s);
	expect_rc(umlmem_host_stats(S.h, &hs), 0, "umlmem_host_stats");
	host_info(&hi);
	CHK(hs.frames_used == 0 && hs.ram_pages == 0 && hs.resident_pages == 0 &&
	    hs.sharing_pages == 0, "after every guest is gone: frames_used %" PRIu64 " ram_pages %"
	    PRIu64 " resident %" PRIu64 " sharing %" PRIu64, hs.frames_used, hs.ram_pages,
	    hs.resident_pages, hs.sharing_pages);
	CHK(hi.swap_slots_used == 0 && hi.frames_cached == 0,
	    "after every guest is gone: %" PRIu64 " swap slots used, %" PRIu64 " frames cached",
	    hi.swap_slots_used, hi.frames_cached);
	do_host_check();
	umlmem_host_destroy(S.h);
	S.h = NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct in r = { data, size, 0 };

	if (!pat_ready)
		init_patterns();
	memset(&S, 0, sizeof(S));
	trace_n = 0;
	S.trace = getenv("FUZZ_MODEL_TRACE") != NULL;
	S.dump = getenv("FUZZ_MODEL_DUMP") != NULL;
	{
		const char *nv = getenv("FUZZ_MODEL_NATIVE");

		S.no_native = nv && !strcmp(nv, "0");
		nv = getenv("FUZZ_MODEL_SIGBUS");
		S.allow_sigbus = nv && *nv && strcmp(nv, "0");
	}
	if (size < 4)
		return 0;
	make_host(&r);
	trace("host: budget %" PRIu64 " cap %" PRIu64 " flags 0x%x batch %u sharing %u engine %d",
	      S.budget, S.cap, S.flags, S.batch, S.max_sharing, (int)S.io);
	check_stats();

	for (S.op = 1; S.op <= MAX_OPS && r.i < r.n; S.op++) {
		uint8_t op = u8(&r) % 32;

		S.inj = fault_armed();
		if (op < 7)
			op_write(&r);
		else if (op < 12)
			op_read(&r);
		else if (op == 12)
			op_inject(&r);
		else if (op < 16)
			op_pin(&r);
		else if (op < 19)
			op_unpin(&r);
		else if (op < 21)
			op_scribble(&r);
		else if (op < 23)
			op_discard(&r);
		else if (op < 25)
			op_reclaim(&r);
		else if (op < 27)
			op_dedup(&r);
		else if (op == 27)
			op_set_merge(&r);
		else if (op == 28)
			(u8(&r) & 1) ? op_create(&r) : op_destroy(&r);
		else if (op == 29)
			op_invalid(&r);
		else if (op == 30)
			op_native(&r);
		else {
			uint8_t b = u8(&r);
			int slot = live_slot(b);

			if (b == 0xff) {
				op_huge(&r);
			} else if (slot >= 0) {
				trace("check guest %d", slot);
				check_guest(slot, "whole-guest read");
			}
		}
		check_stats();
		if (S.op % CHECK_EVERY == 0)
			do_host_check();
	}
	finish();
	return 0;
}
