/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Running out of things: every frame pinned, the swap cap reached,
 * thousands of guests on one host, a swap directory that cannot take files
 * (not writable, missing, removed under a running host), a process out of
 * file descriptors, a filesystem out of space, and an address space too
 * small for the page tables.
 *
 * Each case checks the documented negative errno and a message that says
 * what to change, that nothing crashed and nothing was lost (every guest is
 * read back against a byte model), that freeing the resource makes the host
 * work again, and that the library's invariant checker passes.
 *
 * The cases that change process-wide limits (RLIMIT_NOFILE, RLIMIT_AS) run
 * in a forked child, which reports failures through a pipe; the disk-full
 * cases mount a small tmpfs in a private mount namespace (and are skipped
 * where that is not allowed).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"
#include "internal.h"
#include "swap.h"

#define PG UMLMEM_PAGE_SIZE
#define MAXG 4

/* One guest and what every byte of it must read as. */
struct xg {
	umlmem_guest *g;
	uint64_t bytes, npages;
	uint8_t *mem;
};

static struct {
	char dir[64];
	char mnt[96];          /* a tmpfs mounted by the test, or "" */
	umlmem_host *h;
	struct xg g[MAXG];
	uint8_t *buf, *buf2;
} X;

static void x_setup(void)
{
	memset(&X, 0, sizeof(X));
	tu_mkswapdir(X.dir);
	X.buf = aligned_alloc(PG, 4 * PG);
	X.buf2 = aligned_alloc(PG, 4 * PG);
	cr_assert(X.buf && X.buf2);
}

static void x_teardown(void)
{
	umlmem_host_destroy(X.h);
	X.h = NULL;
	for (int i = 0; i < MAXG; i++)
		free(X.g[i].mem);
	free(X.buf);
	free(X.buf2);
	if (X.mnt[0]) {
		umount2(X.mnt, MNT_DETACH);
		rmdir(X.mnt);
	}
	chmod(X.dir, 0700);
	tu_rmswapdir(X.dir);
}

TestSuite(exhaust, .init = x_setup, .fini = x_teardown);

/* Skips the test, cleaning up first: a skipped test gets no .fini. */
#define x_skip(...) do { \
		char why_[256]; \
		snprintf(why_, sizeof(why_), __VA_ARGS__); \
		x_teardown(); \
		memset(&X, 0, sizeof(X)); \
		cr_skip_test("%s", why_); \
	} while (0)

/* ---- helpers ----------------------------------------------------------------- */

static umlmem_host *mk_host(const char *dir, uint64_t budget, uint64_t cap, unsigned nfiles,
			    unsigned flags)
{
	struct umlmem_host_config cfg;
	umlmem_host *h = NULL;
	int rc;

	umlmem_host_config_init(&cfg);
	cfg.resident_bytes = budget * PG;
	cfg.swap_bytes = cap * PG;
	cfg.swap_dir = dir;
	cfg.swap_files = nfiles;
	cfg.flags = flags;
	rc = umlmem_host_create(&cfg, &h);
	cr_assert_eq(rc, 0, "umlmem_host_create(budget %" PRIu64 ", cap %" PRIu64 ") in %s: %s: %s",
		     budget, cap, dir, umlmem_strerror(rc), umlmem_errmsg());
	return h;
}

static struct xg *mk_guest(int i, uint64_t bytes)
{
	struct xg *m = &X.g[i];

	m->bytes = bytes;
	m->npages = (bytes + PG - 1) / PG;
	m->g = tu_guest(X.h, bytes);
	m->mem = calloc(1, bytes);
	cr_assert_not_null(m->mem);
	return m;
}

static void drop_guest(int i)
{
	umlmem_guest_destroy(X.g[i].g);
	free(X.g[i].mem);
	memset(&X.g[i], 0, sizeof(X.g[i]));
}

static size_t page_len(const struct xg *m, uint64_t idx)
{
	return (idx + 1) * PG <= m->bytes ? PG : (size_t)(m->bytes - idx * PG);
}

/* The content of page @idx of guest @gi at version @ver: never all zeros,
   different for every triple. */
static void pattern(void *p, int gi, uint64_t idx, unsigned ver)
{
	tu_fill(p, PG, (uint64_t)gi << 48 ^ idx * 0x9e3779b97f4a7c15ull ^ (uint64_t)ver << 32 ^ 77);
	((uint8_t *)p)[0] |= 1;
}

/* Writes page @idx whole; returns the call's result, and on success the
   model follows. */
static int put_page(int gi, uint64_t idx, unsigned ver)
{
	struct xg *m = &X.g[gi];
	size_t len = page_len(m, idx);
	int rc;

	pattern(X.buf, gi, idx, ver);
	rc = umlmem_write(m->g, idx * PG, X.buf, len);
	if (rc == 0)
		memcpy(m->mem + idx * PG, X.buf, len);
	return rc;
}

static void must_put(int gi, uint64_t idx, unsigned ver)
{
	int rc = put_page(gi, idx, ver);

	cr_assert_eq(rc, 0, "write guest %d page %" PRIu64 ": %s: %s", gi, idx, umlmem_strerror(rc),
		     umlmem_errmsg());
}

/* Reads page @idx and compares it with the model. */
static void check_page_at(int line, int gi, uint64_t idx)
{
	struct xg *m = &X.g[gi];
	size_t len = page_len(m, idx);
	int rc;

	memset(X.buf2, 0x5a, PG);
	rc = umlmem_read(m->g, idx * PG, X.buf2, len);
	cr_assert_eq(rc, 0, "line %d: read guest %d page %" PRIu64 ": %s: %s", line, gi, idx,
		     umlmem_strerror(rc), umlmem_errmsg());
	if (memcmp(X.buf2, m->mem + idx * PG, len) != 0) {
		size_t i = 0;

		while (X.buf2[i] == m->mem[idx * PG + i])
			i++;
		cr_assert_fail("line %d: guest %d page %" PRIu64 " byte %zu is 0x%02x, expected 0x%02x",
			       line, gi, idx, i, X.buf2[i], m->mem[idx * PG + i]);
	}
}
#define check_page(gi, idx) check_page_at(__LINE__, gi, idx)

static void check_guest_at(int line, int gi)
{
	for (uint64_t i = 0; i < X.g[gi].npages; i++)
		check_page_at(line, gi, i);
}
#define check_guest(gi) check_guest_at(__LINE__, gi)

static struct umlmem_stats hstats(void)
{
	struct umlmem_stats s;

	cr_assert_eq(umlmem_host_stats(X.h, &s), 0);
	return s;
}

static unsigned pte_type(int gi, uint64_t idx)
{
	pte_t *e = pte_find(X.g[gi].g, idx);

	return e ? PTE_TYPE(LOAD(e)) : PTE_ZERO;
}

/* The message of the last failure must contain one of the words. */
static void msg_names(const char *what, const char *w1, const char *w2)
{
	const char *m = umlmem_errmsg();

	cr_assert(m && m[0], "%s: no message", what);
	cr_assert(strstr(m, w1) || (w2 && strstr(m, w2)), "%s: the message \"%s\" names neither "
		  "\"%s\" nor \"%s\"", what, m, w1, w2 ? w2 : "-");
}

static unsigned count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	unsigned n = 0;

	if (!d)
		return 0;
	while (readdir(d))
		n++;
	closedir(d);
	return n - 3;   /* ".", ".." and the directory's own */
}

/* ---- every frame pinned ---------------------------------------------------- */

/* More pins than the budget has frames: the pin that finds none is
   -ENOMEM with a message that says to unpin or raise resident_bytes, and
   so is every access that needs a new frame, while every page stays
   readable and the pinned ones writable; once unpinned (or once the guest
   holding the pins is gone) the host works as before. */
Test(exhaust, pins_beyond_budget)
{
	const uint64_t budget = 24, gp = 64, written = 40;
	uint8_t *ptr[3][64] = { { 0 } };
	uint64_t npins = 0, ev = 1;
	void *p, *p2;
	int rc = 0;

	X.h = mk_host(X.dir, budget, 0, 1, 0);
	for (int gi = 0; gi < 3; gi++) {
		mk_guest(gi, gp * PG);
		for (uint64_t i = 0; i < written; i++)
			must_put(gi, i, 0);
	}
	cr_assert_gt(hstats().swapped_pages, 0);

	/* distinct pages of all three guests, written ones and new ones,
	   read pins and write pins, until one fails */
	for (uint64_t k = 0; k < 2 * budget; k++) {
		int gi = (int)(k % 3);
		uint64_t idx = (k / 3) * 3 + 1;
		bool w = k & 1;

		rc = umlmem_pin(X.g[gi].g, idx * PG, w ? UMLMEM_WRITE : UMLMEM_READ, &p);
		if (rc)
			break;
		ptr[gi][idx] = p;
		npins++;
		cr_assert(memcmp(p, X.g[gi].mem + idx * PG, PG) == 0, "pinned page %" PRIu64
			  " of guest %d shows other bytes", idx, gi);
		if (w) {
			pattern(p, gi, idx, 1);
			memcpy(X.g[gi].mem + idx * PG, p, PG);
		}
	}
	cr_assert_eq(rc, -ENOMEM, "pin %" PRIu64 " with %" PRIu64 " frames pinned: %s, expected "
		     "-ENOMEM", npins + 1, npins, umlmem_strerror(rc));
	cr_assert_eq(npins, budget, "%" PRIu64 " pins on a budget of %" PRIu64 " frames", npins,
		     budget);
	msg_names("the pin beyond the budget", "pinned", NULL);
	msg_names("the pin beyond the budget", "unpin", "resident_bytes");
	cr_assert_eq(hstats().frames_used, budget);

	/* whatever needs a new frame: -ENOMEM, nothing changed */
	rc = put_page(0, gp - 1, 0);
	cr_assert_eq(rc, -ENOMEM, "first touch with every frame pinned: %s", umlmem_strerror(rc));
	msg_names("first touch", "unpin", "resident_bytes");
	rc = umlmem_write(X.g[1].g, 2 * PG + 5, "abc", 3);
	cr_assert_eq(rc, -ENOMEM, "partial write of a swapped page: %s", umlmem_strerror(rc));
	rc = umlmem_pin(X.g[2].g, 2 * PG, UMLMEM_READ, &p2);
	cr_assert_eq(rc, -ENOMEM, "another pin: %s", umlmem_strerror(rc));
	/* a read of a page in swap: the right bytes, or -ENOMEM, never others */
	memset(X.buf2, 0x5a, PG);
	rc = umlmem_read(X.g[0].g, 0, X.buf2, PG);
	cr_assert(rc == 0 || rc == -ENOMEM, "read of a swapped page: %s", umlmem_strerror(rc));
	if (rc == 0)
		cr_assert(memcmp(X.buf2, X.g[0].mem, PG) == 0, "read of a swapped page: wrong bytes");
	/* what needs no new frame works */
	check_page(0, gp - 1);                                   /* never written: zeros */
	cr_assert_eq(umlmem_pin(X.g[0].g, 1 * PG, UMLMEM_READ, &p2), 0, "a nested pin: %s",
		     umlmem_errmsg());
	cr_assert_eq(p2, (void *)ptr[0][1], "a nested pin moved the page");
	cr_assert_eq(umlmem_unpin(X.g[0].g, 1 * PG), 0);
	pattern(X.buf, 1, 4, 2);
	cr_assert_eq(umlmem_write(X.g[1].g, 4 * PG, X.buf, PG), 0, "copy write to a pinned page: %s",
		     umlmem_errmsg());
	memcpy(X.g[1].mem + 4 * PG, X.buf, PG);
	cr_assert(memcmp(ptr[1][4], X.buf, PG) == 0, "the pin does not see the copy write");
	cr_assert_eq(umlmem_reclaim(X.h, budget, &ev), 0);
	cr_assert_eq(ev, 0, "reclaim evicted %" PRIu64 " pages with every frame pinned", ev);
	cr_assert_eq(umlmem_discard(X.g[2].g, 0, 8 * PG), -EBUSY);
	/* a new guest costs no frame; its first write needs one */
	{
		umlmem_guest *ng = tu_guest(X.h, 16 * PG);

		memset(X.buf, 0x77, 8);
		cr_assert_eq(umlmem_read(ng, 0, X.buf, 8), 0);
		cr_assert_eq(X.buf[0], 0);
		cr_assert_eq(umlmem_write(ng, 0, "z", 1), -ENOMEM);
		umlmem_guest_destroy(ng);
	}
	for (int gi = 0; gi < 3; gi++)
		for (uint64_t i = 0; i < gp; i++)
			if (ptr[gi][i])
				check_page(gi, i);
	tu_check(X.h);

	/* unpinned, everything works and nothing was lost */
	for (int gi = 0; gi < 3; gi++)
		for (uint64_t i = 0; i < gp; i++)
			if (ptr[gi][i]) {
				cr_assert_eq(umlmem_unpin(X.g[gi].g, i * PG), 0);
				ptr[gi][i] = NULL;
			}
	must_put(0, gp - 1, 3);
	for (int gi = 0; gi < 3; gi++) {
		for (uint64_t i = written; i < gp; i++)
			must_put(gi, i, 4);
		check_guest(gi);
	}
	tu_check(X.h);

	/* all pinned again, by one guest, which is then destroyed with its
	   pins: the frames come back */
	for (uint64_t i = 0; i < budget; i++)
		cr_assert_eq(umlmem_pin(X.g[2].g, i * PG, UMLMEM_WRITE, &p), 0, "pin %" PRIu64 ": %s",
			     i, umlmem_errmsg());
	cr_assert_eq(put_page(0, 0, 5), -ENOMEM);
	drop_guest(2);
	cr_assert_eq(hstats().frames_used <= budget, 1);
	for (uint64_t i = 0; i < gp; i++)
		must_put(0, i, 6);
	check_guest(0);
	check_guest(1);
	tu_check(X.h);
}

/* ---- the swap cap ------------------------------------------------------------ */

/* Swap capped at 48 slots beside 16 frames: exactly 64 pages fit; then
   whatever needs a new frame is -ENOSPC with a message naming swap_bytes,
   every page stays readable (those in swap too, with every frame dirty),
   resident pages stay writable; destroying a guest or discarding pages
   makes exactly that much room again. */
Test(exhaust, swap_cap_full)
{
	const uint64_t budget = 16, cap = 48, gp = 128;
	uint64_t n = 0, k, resident_idx = UINT64_MAX, swapped_idx = UINT64_MAX, ev = 1;
	struct umlmem_stats s;
	struct swap_info si;
	void *p;
	int rc = 0;

	X.h = mk_host(X.dir, budget, cap, 1, 0);
	mk_guest(0, gp * PG);
	mk_guest(1, gp * PG - 100);
	/* the guests take turns, page by page */
	for (k = 0; k < 2 * gp; k++) {
		rc = put_page((int)(k & 1), k / 2, 0);
		if (rc)
			break;
		n++;
	}
	cr_assert_eq(rc, -ENOSPC, "write %" PRIu64 " past the cap: %s", n + 1, umlmem_strerror(rc));
	cr_assert_eq(n, budget + cap, "%" PRIu64 " pages fitted in %" PRIu64 " frames and %" PRIu64
		     " slots", n, budget, cap);
	msg_names("the write past the cap", "swap_bytes", NULL);
	s = hstats();
	swap_info(host_swap(X.h), &si);
	cr_assert_eq(si.slots_used, cap);
	cr_assert_eq(s.frames_used, budget);
	cr_assert_eq(s.io_errors, 0, "a full swap counted as %" PRIu64 " I/O errors", s.io_errors);

	/* guest 0 owns pages 0 .. 31: find one resident and one in swap */
	for (uint64_t i = 0; i < 32; i++) {
		if (pte_type(0, i) == PTE_FRAME && resident_idx == UINT64_MAX)
			resident_idx = i;
		if (pte_type(0, i) == PTE_STORED && swapped_idx == UINT64_MAX)
			swapped_idx = i;
	}
	cr_assert(resident_idx != UINT64_MAX && swapped_idx != UINT64_MAX);
	/* needs no new frame: works */
	must_put(0, resident_idx, 1);
	cr_assert_eq(umlmem_pin(X.g[0].g, resident_idx * PG, UMLMEM_WRITE, &p), 0, "%s",
		     umlmem_errmsg());
	cr_assert_eq(umlmem_unpin(X.g[0].g, resident_idx * PG), 0);
	/* needs one: -ENOSPC, and the page is as it was */
	rc = umlmem_write(X.g[0].g, swapped_idx * PG + 9, "abc", 3);
	cr_assert_eq(rc, -ENOSPC, "partial write of a swapped page: %s", umlmem_strerror(rc));
	rc = put_page(0, swapped_idx, 2);
	cr_assert_eq(rc, -ENOSPC, "whole-page write of a swapped page: %s", umlmem_strerror(rc));
	rc = umlmem_pin(X.g[0].g, swapped_idx * PG, UMLMEM_READ, &p);
	cr_assert_eq(rc, -ENOSPC, "pin of a swapped page: %s", umlmem_strerror(rc));
	rc = umlmem_reclaim(X.h, budget, &ev);
	cr_assert_eq(rc, -ENOSPC, "reclaim of dirty pages with swap full: %s", umlmem_strerror(rc));
	cr_assert_eq(ev, 0);
	/* every page reads, twice round */
	for (int round = 0; round < 2; round++) {
		check_guest(0);
		check_guest(1);
	}
	s = hstats();
	cr_assert_eq(s.io_errors, 0);
	cr_assert_eq(s.frames_used, budget);
	tu_check(X.h);

	/* destroying guest 1 frees its 32 pages: exactly 32 new ones fit */
	drop_guest(1);
	for (k = 0; k < gp; k++) {
		rc = put_page(0, 32 + k, 0);
		if (rc)
			break;
	}
	cr_assert_eq(rc, -ENOSPC, "%s", umlmem_strerror(rc));
	cr_assert_eq(k, 32, "%" PRIu64 " new pages fitted after a guest of 32 went", k);
	/* discarding 10 makes room for exactly 10 */
	cr_assert_eq(umlmem_discard(X.g[0].g, 0, 10 * PG), 0);
	memset(X.g[0].mem, 0, 10 * PG);
	for (k = 0; k < gp; k++) {
		rc = put_page(0, 64 + k, 0);
		if (rc)
			break;
	}
	cr_assert_eq(rc, -ENOSPC, "%s", umlmem_strerror(rc));
	cr_assert_eq(k, 10, "%" PRIu64 " new pages fitted after discarding 10", k);
	check_guest(0);
	tu_check(X.h);
}

/* ---- thousands of guests ------------------------------------------------------- */

/* 5000 small guests of odd sizes on one host (500 under valgrind), each
   writing its first bytes and its very last ones: 10000 pages over 256
   frames. Every guest reads its own bytes back; guests cost no file
   descriptor and little memory; destroying some and creating others
   recycles everything; at the end nothing is left. */
Test(exhaust, thousands_of_guests)
{
	const unsigned n = tu_valgrind() ? 500 : 5000;
	const uint64_t budget = 256;
	umlmem_guest **g = calloc(n, sizeof(*g));
	uint64_t *bytes = calloc(n, sizeof(*bytes)), ram = 0;
	unsigned fds0, gen = 0;
	struct umlmem_stats s;
	struct swap_info si;
	uint8_t head[64], tail[32], got[64];
	static const uint8_t zeros[64];

	cr_assert(g && bytes);
	X.h = mk_host(X.dir, budget, 0, 2, 0);
	fds0 = count_fds();
#define SEED(i, gen) ((uint64_t)(i) * 1000003u + (gen) * 7919u + 1)
#define FILL(i, gen) do { tu_fill(head, sizeof(head), SEED(i, gen)); \
			  tu_fill(tail, sizeof(tail), ~SEED(i, gen)); } while (0)
#define CREATE(i, gen) do { \
		struct umlmem_guest_config c_; char nm_[32]; \
		bytes[i] = (2 + (i) % 3) * PG + 32 + ((i) * 37u) % (PG - 32); \
		snprintf(nm_, sizeof(nm_), "g%u.%u", (unsigned)(i), (unsigned)(gen)); \
		umlmem_guest_config_init(&c_); \
		c_.ram_bytes = bytes[i]; \
		c_.name = nm_; \
		int rc_ = umlmem_guest_create(X.h, &c_, &g[i]); \
		cr_assert_eq(rc_, 0, "guest %u: %s: %s", (unsigned)(i), umlmem_strerror(rc_), \
			     umlmem_errmsg()); \
		FILL(i, gen); \
		cr_assert_eq(umlmem_write(g[i], 0, head, sizeof(head)), 0, "%s", umlmem_errmsg()); \
		cr_assert_eq(umlmem_write(g[i], bytes[i] - sizeof(tail), tail, sizeof(tail)), 0, \
			     "%s", umlmem_errmsg()); \
	} while (0)
#define VERIFY(i, gen) do { \
		FILL(i, gen); \
		cr_assert_eq(umlmem_read(g[i], 0, got, sizeof(head)), 0, "%s", umlmem_errmsg()); \
		cr_assert(memcmp(got, head, sizeof(head)) == 0, "guest %u: wrong head", (unsigned)(i)); \
		cr_assert_eq(umlmem_read(g[i], bytes[i] - sizeof(tail), got, sizeof(tail)), 0); \
		cr_assert(memcmp(got, tail, sizeof(tail)) == 0, "guest %u: wrong tail", (unsigned)(i)); \
		cr_assert_eq(umlmem_read(g[i], PG, got, 64), 0); \
		cr_assert(memcmp(got, zeros, sizeof(zeros)) == 0, "guest %u: page 1 is not zeros", \
			  (unsigned)(i)); \
	} while (0)

	for (unsigned i = 0; i < n; i++) {
		CREATE(i, gen);
		ram += (bytes[i] + PG - 1) / PG;
	}
	s = hstats();
	cr_assert_eq(s.ram_pages, ram);
	cr_assert_leq(s.frames_used, budget);
	cr_assert_eq(s.resident_pages + s.swapped_pages, 2 * (uint64_t)n,
		     "%" PRIu64 " + %" PRIu64 " pages hold data, %u guests wrote 2 each",
		     s.resident_pages, s.swapped_pages, n);
	cr_assert_eq(count_fds(), fds0, "%u guests cost %d file descriptors", n,
		     (int)count_fds() - (int)fds0);
	for (unsigned i = 0; i < n; i += n / 10)
		cr_assert_leq(guest_meta_bytes(g[i]), 16 * 1024, "a guest of 2 pages in use costs %"
			      PRIu64 " bytes of page table", guest_meta_bytes(g[i]));
	for (unsigned i = 0; i < n; i++)
		VERIFY(i, gen);
	tu_check(X.h);

	/* every third goes, and comes back as another guest */
	for (unsigned i = 0; i < n; i += 3) {
		umlmem_guest_destroy(g[i]);
		g[i] = NULL;
	}
	for (unsigned i = 1; i < n; i += 3)
		VERIFY(i, 0);
	gen = 1;
	for (unsigned i = 0; i < n; i += 3)
		CREATE(i, gen);
	for (unsigned i = 0; i < n; i++)
		VERIFY(i, i % 3 == 0 ? 1u : 0u);
	tu_check(X.h);

	for (unsigned i = n; i-- > 0;)
		umlmem_guest_destroy(g[i]);
	s = hstats();
	swap_info(host_swap(X.h), &si);
	cr_assert_eq(s.ram_pages, 0);
	cr_assert_eq(s.frames_used, 0);
	cr_assert_eq(si.slots_used, 0, "%" PRIu64 " slots left with no guest", si.slots_used);
	cr_assert_eq(count_fds(), fds0);
	tu_check(X.h);
	free(g);
	free(bytes);
#undef SEED
#undef FILL
#undef CREATE
#undef VERIFY
}

/* ---- the swap directory ---------------------------------------------------------- */

/* A host whose guest holds 3 budgets' worth, then reads it back. */
static void host_works(const char *dir, const char *what)
{
	umlmem_host *h;
	umlmem_guest *g;
	struct umlmem_stats s;

	h = mk_host(dir, 16, 0, 1, 0);
	g = tu_guest(h, 48 * PG);
	for (uint64_t i = 0; i < 48; i++) {
		pattern(X.buf, 3, i, 0);
		cr_assert_eq(umlmem_write(g, i * PG, X.buf, PG), 0, "%s: %s", what, umlmem_errmsg());
	}
	for (uint64_t i = 0; i < 48; i++) {
		pattern(X.buf, 3, i, 0);
		cr_assert_eq(umlmem_read(g, i * PG, X.buf2, PG), 0, "%s: %s", what, umlmem_errmsg());
		cr_assert(memcmp(X.buf, X.buf2, PG) == 0, "%s: page %" PRIu64 " wrong", what, i);
	}
	cr_assert_eq(umlmem_host_stats(h, &s), 0);
	cr_assert_gt(s.swap_outs, 0, "%s: nothing went to swap", what);
	umlmem_host_destroy(h);
}

static int try_host(const char *dir)
{
	struct umlmem_host_config cfg;
	umlmem_host *h = (umlmem_host *)0x1;
	int rc;

	umlmem_host_config_init(&cfg);
	cfg.resident_bytes = 16 * PG;
	cfg.swap_dir = dir;
	rc = umlmem_host_create(&cfg, &h);
	if (rc == 0)
		umlmem_host_destroy(h);
	else
		cr_assert_null(h, "a failed create left a host pointer");
	return rc;
}

/* A directory the process may not write to: -EACCES naming the directory
   and saying it is not writable; nothing left behind; the same directory
   works once it may be written. */
Test(exhaust, swap_dir_not_writable)
{
	unsigned fds0 = count_fds();
	bool root = geteuid() == 0;
	int rc;

	/* root ignores modes: drop the effective uid for the call */
	if (root)
		cr_assert_eq(seteuid(65534), 0, "seteuid: %s", strerror(errno));
	else
		cr_assert_eq(chmod(X.dir, 0500), 0);
	rc = try_host(X.dir);
	if (root)
		cr_assert_eq(seteuid(0), 0);
	else
		chmod(X.dir, 0700);
	cr_assert_eq(rc, -EACCES, "a host in a directory it cannot write: %d (%s): %s", rc,
		     umlmem_strerror(rc), umlmem_errmsg());
	msg_names("not writable", X.dir, NULL);
	msg_names("not writable", "not writable", NULL);
	cr_assert_eq(count_fds(), fds0, "a failed create left %d descriptors open",
		     (int)count_fds() - (int)fds0);
	host_works(X.dir, "the same directory, writable");
}

/* The directory removed under a running host: the host goes on (its files
   are open and have no names anyway); a new host there is -ENOENT, with a
   message naming the directory, until it exists again. */
Test(exhaust, swap_dir_removed_while_running)
{
	struct umlmem_stats s0, s1;
	int rc;

	X.h = mk_host(X.dir, 16, 0, 2, 0);
	mk_guest(0, 96 * PG);
	for (uint64_t i = 0; i < 48; i++)
		must_put(0, i, 0);
	cr_assert_eq(rmdir(X.dir), 0, "rmdir %s: %s (the swap files should have no names)", X.dir,
		     strerror(errno));
	s0 = hstats();
	for (uint64_t i = 48; i < 96; i++)
		must_put(0, i, 0);
	for (uint64_t i = 0; i < 48; i++)
		must_put(0, i, 1);
	check_guest(0);
	s1 = hstats();
	cr_assert_gt(s1.swap_outs, s0.swap_outs, "nothing went to swap after the rmdir");
	cr_assert_gt(s1.swap_ins, s0.swap_ins, "nothing came from swap after the rmdir");
	tu_check(X.h);

	rc = try_host(X.dir);
	cr_assert_eq(rc, -ENOENT, "a host in a removed directory: %s", umlmem_strerror(rc));
	msg_names("a removed swap_dir", X.dir, NULL);
	cr_assert_eq(mkdir(X.dir, 0700), 0);
	host_works(X.dir, "the directory made again");
	check_guest(0);
}

/* ---- limits in a child process ---------------------------------------------------- */

/* The child reports a failure through @fd and exits 1. */
static int child_fd = -1;

static void __attribute__((format(printf, 1, 2), noreturn)) child_fail(const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(msg) - 1)
		n = sizeof(msg) - 1;
	if (write(child_fd, msg, (size_t)n) < 0)
		_exit(2);
	_exit(1);
}

#define CCHK(cond, ...) do { if (!(cond)) child_fail(__VA_ARGS__); } while (0)

/* Runs @fn in a forked child and fails the test with its message. */
static void in_child(void (*fn)(void), const char *what)
{
	int pfd[2], status = 0;
	char msg[1025];
	ssize_t n;
	pid_t pid;

	cr_assert_eq(pipe(pfd), 0);
	fflush(NULL);
	pid = fork();
	cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		close(pfd[0]);
		child_fd = pfd[1];
		fn();
		_exit(0);
	}
	close(pfd[1]);
	n = read(pfd[0], msg, sizeof(msg) - 1);
	msg[n > 0 ? n : 0] = '\0';
	close(pfd[0]);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s: the child %s %d: %s", what,
		  WIFEXITED(status) ? "exited with" : "died of signal",
		  WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), msg);
}

static char child_dir[64];

/* A guest of 64 pages on a 16-frame host, every page written and read
   back, so that both directions of swap run; returns 0 or the first error. */
static int exercise(umlmem_host *h, uint64_t seed)
{
	umlmem_guest *g = NULL;
	struct umlmem_guest_config gc;
	static _Alignas(4096) uint8_t a[PG], b[PG];
	int rc;

	umlmem_guest_config_init(&gc);
	gc.ram_bytes = 64 * PG;
	rc = umlmem_guest_create(h, &gc, &g);
	if (rc)
		return rc;
	for (uint64_t i = 0; i < 64 && !rc; i++) {
		tu_fill(a, PG, seed + i);
		rc = umlmem_write(g, i * PG, a, PG);
	}
	for (uint64_t i = 0; i < 64 && !rc; i++) {
		tu_fill(a, PG, seed + i);
		rc = umlmem_read(g, i * PG, b, PG);
		if (!rc && memcmp(a, b, PG))
			rc = -EILSEQ;
	}
	umlmem_guest_destroy(g);
	return rc;
}

/* The highest descriptor open below @limit (valgrind keeps its own above
   the limit it reports). */
static int open_fds_max(rlim_t limit)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	int max = 0;

	if (!d)
		return -1;
	while ((de = readdir(d)))
		if (atoi(de->d_name) > max && (rlim_t)atoi(de->d_name) < limit)
			max = atoi(de->d_name);
	closedir(d);
	return max;
}

/* Opens /dev/null until every descriptor number up to @top is taken, so
   that a limit of top + 1 + n leaves exactly n free (an inherited high
   descriptor would otherwise leave holes below it). */
static void fill_fd_holes(int top)
{
	for (;;) {
		int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);

		CCHK(fd >= 0, "open /dev/null: %s", strerror(errno));
		if (fd > top) {
			close(fd);
			return;
		}
	}
}

/*
 * With RLIMIT_NOFILE leaving room for 0, 1, 2, ... more descriptors, a host
 * of 4 swap files (and, when io_uring is asked for by name, a ring) is
 * created again and again: each attempt either succeeds or fails with a
 * negative errno and a message, and a failure leaves no descriptor open.
 * A host made before the limit was lowered keeps working under it, and
 * once the limit is back a new host works.
 */
static void fd_limit_child(void)
{
	static const enum umlmem_io_engine engines[] = { UMLMEM_IO_AUTO, UMLMEM_IO_URING,
							 UMLMEM_IO_SYNC };
	struct umlmem_host_config cfg;
	struct rlimit old, lim;
	umlmem_host *h0 = NULL, *h;
	unsigned fds0;
	int rc, top;

	umlmem_host_config_init(&cfg);
	cfg.resident_bytes = 16 * PG;
	cfg.swap_dir = child_dir;
	cfg.swap_files = 2;
	rc = umlmem_host_create(&cfg, &h0);
	CCHK(rc == 0, "the first host: %s: %s", umlmem_strerror(rc), umlmem_errmsg());
	CCHK(getrlimit(RLIMIT_NOFILE, &old) == 0, "getrlimit");
	for (size_t e = 0; e < sizeof(engines) / sizeof(engines[0]); e++) {
		int ok_at = -1;

		cfg.io = engines[e];
		cfg.swap_files = 4;
		for (int extra = 0; extra <= 40 && ok_at < 0; extra++) {
			char msg[512];

			top = open_fds_max(old.rlim_cur);
			CCHK(top > 0, "cannot list /proc/self/fd");
			fill_fd_holes(top);
			fds0 = count_fds();
			lim = old;
			lim.rlim_cur = (rlim_t)(top + 1 + extra);
			CCHK(setrlimit(RLIMIT_NOFILE, &lim) == 0, "setrlimit(%d): %s", top + 1 + extra,
			     strerror(errno));
			h = NULL;
			rc = umlmem_host_create(&cfg, &h);
			snprintf(msg, sizeof(msg), "%s", umlmem_errmsg());
			/* the first host needs no new descriptor to go on */
			{
				int rc0 = exercise(h0, (uint64_t)extra << 20);

				CCHK(rc0 == 0, "engine %d, %d spare descriptors: the host made before "
				     "fails: %s: %s", (int)engines[e], extra, umlmem_strerror(rc0),
				     umlmem_errmsg());
			}
			CCHK(setrlimit(RLIMIT_NOFILE, &old) == 0, "setrlimit back");
			if (rc == 0) {
				CCHK(h != NULL, "success without a host");
				rc = exercise(h, 99);
				CCHK(rc == 0, "engine %d: a host made with %d spare descriptors does "
				     "not work: %s", (int)engines[e], extra, umlmem_strerror(rc));
				umlmem_host_destroy(h);
				ok_at = extra;
				break;
			}
			CCHK(rc < 0 && rc > -4096, "engine %d, %d spare descriptors: %d is not a "
			     "negative errno", (int)engines[e], extra, rc);
			CCHK(h == NULL, "a failed create left a host pointer");
			CCHK(msg[0], "engine %d, %d spare descriptors: %s without a message",
			     (int)engines[e], extra, umlmem_strerror(rc));
			CCHK(rc == -EMFILE || rc == -ENOTSUP || rc == -ENOMEM || rc == -ENFILE,
			     "engine %d, %d spare descriptors: %s (%s) is not what running out of "
			     "descriptors should give", (int)engines[e], extra, umlmem_strerror(rc), msg);
			CCHK(count_fds() == fds0, "engine %d, %d spare descriptors: the failed create "
			     "(%s: %s) left %d descriptors open", (int)engines[e], extra,
			     umlmem_strerror(rc), msg, (int)count_fds() - (int)fds0);
			if (extra == 0)
				CCHK(rc == -EMFILE, "engine %d with no spare descriptor: %s (%s), "
				     "expected -EMFILE", (int)engines[e], umlmem_strerror(rc), msg);
		}
		if (ok_at < 0 && engines[e] == UMLMEM_IO_URING && rc == -ENOTSUP)
			continue;   /* no io_uring here at all */
		CCHK(ok_at > 0, "engine %d: no host even with 40 spare descriptors (last: %s: %s)",
		     (int)engines[e], umlmem_strerror(rc), umlmem_errmsg());
	}
	rc = exercise(h0, 7);
	CCHK(rc == 0, "the first host at the end: %s", umlmem_strerror(rc));
	umlmem_host_destroy(h0);
}

Test(exhaust, fd_limit)
{
	snprintf(child_dir, sizeof(child_dir), "%s", X.dir);
	in_child(fd_limit_child, "out of file descriptors");
}

/*
 * An address space too small for what is asked (RLIMIT_AS): a host whose
 * frame store cannot be mapped is -ENOMEM with a message; page tables that
 * cannot be allocated make the write that needs them -ENOMEM, never a
 * crash, and everything written before reads back. Skipped under valgrind,
 * which manages the address space itself.
 */
static void as_limit_child(void)
{
	struct umlmem_host_config cfg;
	struct umlmem_guest_config gc;
	umlmem_host *h = NULL;
	umlmem_guest *g = NULL;
	struct rlimit old, lim;
	uint64_t ok = 0, i;
	int rc = 0;

	umlmem_host_config_init(&cfg);
	cfg.resident_bytes = 64 * PG;
	cfg.swap_dir = child_dir;
	CCHK(umlmem_host_create(&cfg, &h) == 0, "host: %s", umlmem_errmsg());
	umlmem_guest_config_init(&gc);
	gc.ram_bytes = 1ull << 46;
	CCHK(umlmem_guest_create(h, &gc, &g) == 0, "guest: %s", umlmem_errmsg());
	CCHK(getrlimit(RLIMIT_AS, &old) == 0, "getrlimit");
	lim = old;
	{
		/* what the process has mapped now, plus 24 MiB */
		FILE *f = fopen("/proc/self/statm", "r");
		unsigned long vm = 0;

		CCHK(f && fscanf(f, "%lu", &vm) == 1, "statm");
		fclose(f);
		lim.rlim_cur = (rlim_t)vm * (rlim_t)sysconf(_SC_PAGESIZE) + (24u << 20);
	}
	CCHK(setrlimit(RLIMIT_AS, &lim) == 0, "setrlimit(RLIMIT_AS): %s", strerror(errno));
	/* a 1 GiB frame store cannot be mapped */
	{
		umlmem_host *h2 = NULL;

		cfg.resident_bytes = 1ull << 30;
		rc = umlmem_host_create(&cfg, &h2);
		CCHK(rc == -ENOMEM, "a 1 GiB host under a 24 MiB address-space margin: %s (%s), "
		     "expected -ENOMEM", umlmem_strerror(rc), umlmem_errmsg());
		CCHK(h2 == NULL && umlmem_errmsg()[0], "no message, or a host pointer");
	}
	/* one page in each GiB of a 64 TiB guest: a leaf and a directory
	   each, until the allocations fail */
	for (i = 0; i < (1u << 16); i++) {
		uint64_t v = i + 1;

		rc = umlmem_write(g, i << 30, &v, sizeof(v));
		if (rc)
			break;
		ok++;
	}
	CCHK(rc == -ENOMEM, "writes to ever more GiB regions stopped with %s (%s) after %" PRIu64
	     ", expected -ENOMEM", umlmem_strerror(rc), umlmem_errmsg(), ok);
	CCHK(umlmem_errmsg()[0], "-ENOMEM without a message");
	CCHK(ok > 100, "only %" PRIu64 " regions fitted in 24 MiB", ok);
	/* reads of what was written, and of what was not, need nothing new */
	for (i = 0; i < ok; i += 97) {
		uint64_t v = 0;

		rc = umlmem_read(g, i << 30, &v, sizeof(v));
		CCHK(rc == 0 && v == i + 1, "region %" PRIu64 " reads %s, 0x%" PRIx64, i,
		     umlmem_strerror(rc), v);
	}
	CCHK(setrlimit(RLIMIT_AS, &old) == 0, "setrlimit back");
	{
		uint64_t v = 12345, w = 0;

		rc = umlmem_write(g, ok << 30, &v, sizeof(v));
		CCHK(rc == 0, "the write after the limit went: %s", umlmem_strerror(rc));
		CCHK(umlmem_read(g, ok << 30, &w, sizeof(w)) == 0 && w == v, "read back");
	}
	{
		char err[256] = "";

		CCHK(host_check(h, err, sizeof(err)) == 0, "host_check: %s", err);
	}
	umlmem_host_destroy(h);
}

Test(exhaust, address_space_limit)
{
	if (tu_valgrind())
		x_skip("valgrind manages the address space itself");
#if defined(__SANITIZE_ADDRESS__)
	/* its allocator maps without regard to RLIMIT_AS, and reserves
	   terabytes of shadow: the limit cannot be what runs out */
	x_skip("AddressSanitizer manages the address space itself");
#endif
	snprintf(child_dir, sizeof(child_dir), "%s", X.dir);
	in_child(as_limit_child, "address space exhausted");
}

/* ---- a full filesystem ------------------------------------------------------------- */

/*
 * The swap files on a tmpfs of 40 pages: a real full disk, not an
 * injected one. Writes that need a frame fail with -ENOSPC and a message
 * that says the filesystem is full, every page stays readable, and once
 * the pages in swap are discarded (their cluster punched out, its space
 * given back to the filesystem) writes work again.
 */
/* Mounts a tmpfs of @pages pages at X.mnt, in a mount namespace of this
   test process's own (so that nothing is left mounted if it dies); skips
   the test where that is not allowed. */
static void small_tmpfs(uint64_t pages)
{
	char opts[64];

	if (unshare(CLONE_NEWNS) != 0)
		x_skip("no private mount namespace here: %s", strerror(errno));
	if (mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL) != 0)
		x_skip("cannot make mounts private: %s", strerror(errno));
	snprintf(X.mnt, sizeof(X.mnt), "%s/fs", X.dir);
	cr_assert_eq(mkdir(X.mnt, 0700), 0);
	snprintf(opts, sizeof(opts), "size=%llu,mode=0700", (unsigned long long)(pages * PG));
	if (mount("tmpfs", X.mnt, "tmpfs", 0, opts) != 0) {
		int e = errno;

		rmdir(X.mnt);
		X.mnt[0] = '\0';
		x_skip("cannot mount a tmpfs: %s", strerror(e));
	}
}

/* Writes new pages of guest 0 from @first until one fails; returns how
   many fitted and the failure in *rc. */
static uint64_t fill_until_error(uint64_t first, uint64_t max, int *rc)
{
	uint64_t n = 0;

	*rc = 0;
	while (first + n < max) {
		*rc = put_page(0, first + n, 0);
		if (*rc)
			break;
		n++;
	}
	return n;
}

Test(exhaust, filesystem_full)
{
	const uint64_t budget = 16, fs_pages = 40, gp = 256;
	uint64_t n, k, ev;
	struct umlmem_stats s;
	int rc = 0;

	small_tmpfs(fs_pages);
	X.h = mk_host(X.mnt, budget, 0, 1, 0);
	mk_guest(0, gp * PG);
	n = fill_until_error(0, gp, &rc);
	cr_assert_eq(rc, -ENOSPC, "writing %" PRIu64 " pages with swap on a %" PRIu64 "-page "
		     "filesystem: %s (%s)", n + 1, fs_pages, umlmem_strerror(rc), umlmem_errmsg());
	msg_names("a full filesystem", "full", NULL);
	cr_assert_gt(n, budget, "nothing went to swap");
	cr_assert_leq(n, budget + fs_pages, "%" PRIu64 " pages on %" PRIu64 " frames and a %" PRIu64
		      "-page filesystem", n, budget, fs_pages);
	s = hstats();
	cr_assert_gt(s.io_errors, 0, "the failed writes are not counted");
	cr_assert_eq(s.checksum_errors, 0);
	rc = umlmem_reclaim(X.h, budget, &ev);
	cr_assert_eq(rc, -ENOSPC, "reclaim on a full filesystem: %s", umlmem_strerror(rc));
	check_guest(0);
	check_guest(0);
	tu_check(X.h);

	/* the pages in swap go: their cluster is punched and the space is
	   the filesystem's again */
	for (uint64_t i = 0; i < n; i++)
		if (pte_type(0, i) == PTE_STORED) {
			cr_assert_eq(umlmem_discard(X.g[0].g, i * PG, PG), 0);
			memset(X.g[0].mem + i * PG, 0, PG);
		}
	cr_assert_eq(hstats().swapped_pages, 0);
	for (k = 0; k < 2 * fs_pages / 3; k++)
		must_put(0, n + 1 + k, 1);
	check_guest(0);
	tu_check(X.h);
	umlmem_host_destroy(X.h);
	X.h = NULL;
}

/*
 * On a full filesystem, freeing part of what is in swap makes room.
 *
 * The swap files on a tmpfs of 40 pages are filled until -ENOSPC; then
 * half of the pages in swap (every other one) are discarded. Their slots
 * are free, and their blocks are still allocated in the file (a cluster
 * is only punched when all of its slots are free), so writing those slots
 * again needs no new space: as with the swap_bytes cap, freeing should
 * make room: at least half as many new pages must fit as were discarded.
 * (Before swap_note_fs_full(), none did: without a cap, swap_alloc() took
 * only new or emptied clusters, which a full filesystem cannot back.)
 */
Test(exhaust, filesystem_full_partial_free)
{
	const uint64_t budget = 16, fs_pages = 40, gp = 256;
	uint64_t n, m, freed = 0;
	int rc;

	small_tmpfs(fs_pages);
	X.h = mk_host(X.mnt, budget, 0, 1, 0);
	mk_guest(0, gp * PG);
	n = fill_until_error(0, gp, &rc);
	cr_assert_eq(rc, -ENOSPC, "filling a %" PRIu64 "-page filesystem: %s (%s)", fs_pages,
		     umlmem_strerror(rc), umlmem_errmsg());
	for (uint64_t i = 0; i < n; i += 2)
		if (pte_type(0, i) == PTE_STORED) {
			cr_assert_eq(umlmem_discard(X.g[0].g, i * PG, PG), 0);
			memset(X.g[0].mem + i * PG, 0, PG);
			freed++;
		}
	cr_assert_gt(freed, 8, "only %" PRIu64 " pages in swap to discard", freed);
	cr_assert_gt(hstats().swapped_pages, 0, "the discards emptied the swap files");
	m = fill_until_error(n + 1, gp, &rc);
	snprintf((char *)X.buf, PG, "%s", umlmem_errmsg());
	/* nothing is lost either way */
	check_guest(0);
	tu_check(X.h);
	cr_assert_geq(m, freed / 2, "%" PRIu64 " pages in swap discarded on a full filesystem, "
		      "then only %" PRIu64 " new pages fitted (%s: %s)", freed, m,
		      umlmem_strerror(rc), (char *)X.buf);
}
