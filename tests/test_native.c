/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Native mode (umlmem_guest_map): a guest's RAM at a host address, served
 * by userfaultfd. Plain loads and stores, unmodified libc code (memcpy,
 * qsort, memset), system calls that read into or write out of the range,
 * several threads, the copy and pin calls, merging and the pager all work
 * on the same bytes.
 *
 * The oracle is a plain malloc'd copy of every guest (its "model"), changed
 * by the same operations; every check compares the guest with it, through
 * the mapping and through umlmem_read(), never the library with itself.
 *
 * userfaultfd does not run under valgrind: there every test skips. A kernel
 * or a policy that refuses userfaultfd (-EPERM, -EOPNOTSUPP) skips too.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

#define PG UMLMEM_PAGE_SIZE
#define MAXG 4

/* One guest, where it is mapped, and the bytes it must read as. */
struct tg {
	umlmem_guest *g;
	uint8_t *base;
	uint8_t *mem;
	uint64_t bytes;
};

static char dir[64];
static umlmem_host *H;
static struct tg T[MAXG];

static void setup(void)
{
	dir[0] = 0;
	H = NULL;
	memset(T, 0, sizeof(T));
	native_map_limit_override = 0;
	if (!tu_valgrind())
		tu_mkswapdir(dir);
}

static void teardown(void)
{
	/* destroying the host destroys (and so unmaps) every guest left */
	umlmem_host_destroy(H);
	H = NULL;
	for (int i = 0; i < MAXG; i++)
		free(T[i].mem);
	memset(T, 0, sizeof(T));
	native_map_limit_override = 0;
	tu_rmswapdir(dir);
}

TestSuite(native, .init = setup, .fini = teardown, .timeout = 60);

/* First statement of every test. */
#define NATIVE_ONLY()                                                                  \
	do {                                                                           \
		if (tu_valgrind())                                                     \
			cr_skip_test("userfaultfd does not run under valgrind");       \
	} while (0)

/* ---- helpers ------------------------------------------------------------- */

static uint64_t Rng;

static uint64_t below(uint64_t n)
{
	return tu_splitmix64(&Rng) % n;
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

static umlmem_host *mk_host(uint64_t budget, unsigned flags)
{
	struct umlmem_host_config cfg;

	umlmem_host_config_init(&cfg);
	cfg.resident_bytes = budget;
	cfg.flags = flags;
	return mk_host_cfg(&cfg);
}

/* Guest slot @i: @bytes of RAM, its model all zeros, not mapped. */
static void mk_guest(int i, uint64_t bytes)
{
	struct umlmem_guest_config cfg;
	char name[16];
	int rc;

	cr_assert(i < MAXG && !T[i].g);
	snprintf(name, sizeof(name), "g%d", i);
	umlmem_guest_config_init(&cfg);
	cfg.ram_bytes = bytes;
	cfg.name = name;
	rc = umlmem_guest_create(H, &cfg, &T[i].g);
	cr_assert_eq(rc, 0, "umlmem_guest_create(%d): %s: %s", i, umlmem_strerror(rc),
		     umlmem_errmsg());
	free(T[i].mem);
	T[i].mem = calloc(1, bytes);
	cr_assert_not_null(T[i].mem);
	T[i].bytes = bytes;
	T[i].base = NULL;
}

static char Maperr[512];

static int map_guest(int i)
{
	void *b = NULL;
	int rc = umlmem_guest_map(T[i].g, &b);

	snprintf(Maperr, sizeof(Maperr), "%s", umlmem_errmsg());
	if (!rc)
		T[i].base = b;
	return rc;
}

/* Maps guest @i, or skips the test where userfaultfd is refused. */
#define MAP(i)                                                                         \
	do {                                                                           \
		int rc_ = map_guest(i);                                                \
		if (rc_ == -EPERM || rc_ == -EOPNOTSUPP)                               \
			cr_skip_test("native mode unavailable: %s", Maperr);           \
		cr_assert_eq(rc_, 0, "umlmem_guest_map(g%d): %d: %s", (i), rc_, Maperr); \
		cr_assert_not_null(T[i].base);                                         \
		cr_assert_eq((uintptr_t)T[i].base % PG, 0, "base %p not page-aligned", \
			     (void *)T[i].base);                                       \
	} while (0)

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

/* First byte where @a and @b differ; n when none. */
static uint64_t first_diff(const uint8_t *a, const uint8_t *b, uint64_t n)
{
	uint64_t k = 0;

	while (k < n && a[k] == b[k])
		k++;
	return k;
}

/* [off, off + len) of guest @i equals its model, through the mapping. */
static void verify_map_at(int line, int i, uint64_t off, uint64_t len)
{
	const uint8_t *got = T[i].base + off, *want = T[i].mem + off;

	if (memcmp(got, want, len)) {
		uint64_t k = first_diff(got, want, len);

		cr_assert_fail("line %d: g%d byte 0x%" PRIx64 " (page %" PRIu64 ") reads %#x "
			       "through the mapping, expected %#x", line, i, off + k,
			       (off + k) / PG, got[k], want[k]);
	}
}

/* The same through umlmem_read(). */
static void verify_read_at(int line, int i, uint64_t off, uint64_t len)
{
	uint8_t *buf = malloc(len ? len : 1);
	const uint8_t *want = T[i].mem + off;
	int rc;

	cr_assert_not_null(buf);
	memset(buf, 0xa5, len);
	rc = umlmem_read(T[i].g, off, buf, len);
	if (rc)
		free(buf);
	cr_assert_eq(rc, 0, "line %d: umlmem_read g%d 0x%" PRIx64 "+%" PRIu64 ": %s: %s", line,
		     i, off, len, umlmem_strerror(rc), umlmem_errmsg());
	if (memcmp(buf, want, len)) {
		uint64_t k = first_diff(buf, want, len);
		unsigned g = buf[k], w = want[k];

		free(buf);
		cr_assert_fail("line %d: g%d byte 0x%" PRIx64 " (page %" PRIu64 ") reads %#x "
			       "through umlmem_read, expected %#x", line, i, off + k,
			       (off + k) / PG, g, w);
	}
	free(buf);
}

#define verify_map(i, off, len)  verify_map_at(__LINE__, i, off, len)
#define verify_read(i, off, len) verify_read_at(__LINE__, i, off, len)

/* Every byte of every guest, both ways. */
static void verify_all_at(int line)
{
	for (int i = 0; i < MAXG; i++) {
		if (!T[i].g)
			continue;
		verify_read_at(line, i, 0, T[i].bytes);
		if (T[i].base)
			verify_map_at(line, i, 0, T[i].bytes);
	}
}
#define verify_all() verify_all_at(__LINE__)

/* umlmem_write of the model's bytes [off, off + len) of guest @i. */
static void push_at(int line, int i, uint64_t off, uint64_t len)
{
	int rc = umlmem_write(T[i].g, off, T[i].mem + off, len);

	cr_assert_eq(rc, 0, "line %d: umlmem_write g%d 0x%" PRIx64 "+%" PRIu64 ": %s: %s",
		     line, i, off, len, umlmem_strerror(rc), umlmem_errmsg());
}
#define push(i, off, len) push_at(__LINE__, i, off, len)

/* Evicts everything evictable; returns the pages that left memory. */
static uint64_t reclaim_all(void)
{
	uint64_t ev = UINT64_MAX;
	int rc = umlmem_reclaim(H, hinfo().frames_total, &ev);

	cr_assert_eq(rc, 0, "umlmem_reclaim: %s: %s", umlmem_strerror(rc), umlmem_errmsg());
	return ev;
}

/* Scans until two calls in a row merge nothing (pages written recently are
   volatile for two passes); returns the pages merged. */
static uint64_t settle(void)
{
	uint64_t per = 2 * hstats().resident_pages + 16, total = 0;
	int quiet = 0;

	for (int n = 0; n < 64 && quiet < 2; n++) {
		uint64_t m = 0;
		int rc = umlmem_dedup_scan(H, per, &m);

		cr_assert_eq(rc, 0, "umlmem_dedup_scan: %s", umlmem_strerror(rc));
		total += m;
		quiet = m ? 0 : quiet + 1;
	}
	return total;
}

/* A page of content that is not all zeros. */
static void fill_page(uint8_t *p, uint64_t seed)
{
	tu_fill(p, PG, seed);
	p[0] |= 1;
}

static uint64_t fnv1a(const uint8_t *p, uint64_t n)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (uint64_t i = 0; i < n; i++) {
		h ^= p[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x, y;

	memcpy(&x, a, 8);
	memcpy(&y, b, 8);
	return x < y ? -1 : x > y;
}

/* Threads of this process named "umlmem-fault" (the handler threads). */
static unsigned fault_threads(void)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *de;
	unsigned n = 0;

	cr_assert_not_null(d);
	while ((de = readdir(d)) != NULL) {
		char path[300], comm[64] = "";
		int fd;
		ssize_t r;

		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/comm", de->d_name);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;   /* exited meanwhile */
		r = read(fd, comm, sizeof(comm) - 1);
		close(fd);
		if (r <= 0)
			continue;
		comm[r] = 0;
		comm[strcspn(comm, "\n")] = 0;
		n += strcmp(comm, "umlmem-fault") == 0;
	}
	closedir(d);
	return n;
}

/* The handler threads the library starts (native.c: one per online CPU, at
   most 8, or $UMLMEM_NATIVE_THREADS). */
static unsigned expected_handlers(void)
{
	const char *env = getenv("UMLMEM_NATIVE_THREADS");
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	if (n < 1)
		n = 1;
	if (env && atol(env) > 0)
		n = atol(env);
	return n > 8 ? 8 : (unsigned)n;
}

/* Waits up to 2 s for the handler thread count to become @want. */
static unsigned fault_threads_settle(unsigned want)
{
	unsigned n = fault_threads();

	for (int i = 0; i < 200 && n != want; i++) {
		usleep(10000);
		n = fault_threads();
	}
	return n;
}

/* Lines of /proc/self/maps that overlap [p, p + len). */
static unsigned maps_in(const void *p, uint64_t len)
{
	FILE *f = fopen("/proc/self/maps", "r");
	uintptr_t a = (uintptr_t)p, b = a + len;
	char line[512];
	unsigned n = 0;

	cr_assert_not_null(f);
	while (fgets(line, sizeof(line), f)) {
		unsigned long s, e;

		if (sscanf(line, "%lx-%lx", &s, &e) == 2 && s < b && e > a)
			n++;
	}
	fclose(f);
	return n;
}

/* ---- 1. coherence ------------------------------------------------------------ */

/* The mapping, the copy calls and a pin see each other's stores at once;
   the argument errors. */
Test(native, coherence)
{
	const uint64_t NP = 64, bytes = NP * PG;
	uint8_t zero[PG] = { 0 }, buf[3 * PG];
	struct umlmem_host_info in;
	uint8_t *b, *m, *p;
	void *vb = NULL;
	int rc;

	NATIVE_ONLY();
	Rng = 0x1234;
	H = mk_host(1 * TU_MiB, 0);
	mk_guest(0, bytes);
	mk_guest(1, 8 * PG);  /* never mapped */

	/* errors before any map */
	cr_assert_eq(umlmem_guest_map(NULL, &vb), -EINVAL);
	cr_assert_eq(umlmem_guest_map(T[0].g, NULL), -EINVAL);
	cr_assert_eq(umlmem_guest_unmap(NULL), -EINVAL);
	cr_assert_eq(umlmem_guest_unmap(T[0].g), -EINVAL, "unmap of a guest never mapped");
	cr_assert_neq(umlmem_errmsg()[0], 0, "no message for the unmap of an unmapped guest");

	MAP(0);
	b = T[0].base;
	m = T[0].mem;
	in = hinfo();
	cr_assert_eq(in.native_guests, 1);
	rc = umlmem_guest_map(T[0].g, &vb);
	cr_assert_eq(rc, -EBUSY, "second map of the same guest: %d", rc);
	cr_assert_neq(umlmem_errmsg()[0], 0);
	cr_assert_eq(umlmem_guest_unmap(T[1].g), -EINVAL, "unmap of a guest not mapped");
	cr_assert_eq(hinfo().native_guests, 1, "a failed map or unmap changed native_guests");

	/* untouched memory reads as zeros through the mapping */
	for (uint64_t i = 0; i < NP; i++)
		cr_assert(!memcmp(b + i * PG, zero, PG), "untouched page %" PRIu64 " not zero", i);
	cr_assert_gt(hinfo().native_faults, 0, "loads of untouched pages made no native fault");

	/* stores through the mapping, seen by umlmem_read at once */
	for (int k = 0; k < 300; k++) {
		uint64_t len = 1 + below(2 * PG), off = below(bytes - len + 1);

		tu_fill(buf, len, tu_splitmix64(&Rng));
		memcpy(b + off, buf, len);
		memcpy(m + off, buf, len);
		verify_read(0, off, len);
	}
	verify_read(0, 0, bytes);

	/* umlmem_write, seen by loads through the mapping at once; pages
	   [48, 64) first touched by the copy call */
	for (int k = 0; k < 300; k++) {
		uint64_t len = 1 + below(2 * PG), off = below(bytes - len + 1);

		if (k < 16) {
			off = (48 + k) * PG + below(PG / 2);
			len = 1 + below(PG / 2);
		}
		tu_fill(m + off, len, tu_splitmix64(&Rng));
		push(0, off, len);
		verify_map(0, off, len);
	}
	verify_map(0, 0, bytes);

	/* a pin and the mapping see each other's stores */
	for (uint64_t pg = 10; pg < 13; pg++) {
		rc = umlmem_pin(T[0].g, pg * PG, UMLMEM_READ | UMLMEM_WRITE, (void **)&p);
		cr_assert_eq(rc, 0, "umlmem_pin: %s", umlmem_errmsg());
		for (int k = 0; k < 50; k++) {
			uint64_t o = below(PG);
			uint8_t v = (uint8_t)(1 + below(255));

			if (k & 1) {
				p[o] = v;
				m[pg * PG + o] = v;
				cr_assert_eq(b[pg * PG + o], v, "store through the pin not seen "
					     "through the mapping (page %" PRIu64 ")", pg);
			} else {
				b[pg * PG + o] = v;
				m[pg * PG + o] = v;
				cr_assert_eq(p[o], v, "store through the mapping not seen through "
					     "the pin (page %" PRIu64 ")", pg);
			}
		}
		cr_assert(!memcmp(p, m + pg * PG, PG));
		cr_assert_eq(umlmem_unpin(T[0].g, pg * PG), 0);
	}

	/* copy calls whose user buffer lies in a view (the same guest's) */
	rc = umlmem_read(T[0].g, 2 * PG + 5, b + 30 * PG + 17, PG + 300);
	cr_assert_eq(rc, 0, "umlmem_read into the view: %s", umlmem_errmsg());
	memmove(m + 30 * PG + 17, m + 2 * PG + 5, PG + 300);
	rc = umlmem_write(T[0].g, 40 * PG + 1, b + 20 * PG + 3, 2 * PG);
	cr_assert_eq(rc, 0, "umlmem_write from the view: %s", umlmem_errmsg());
	memmove(m + 40 * PG + 1, m + 20 * PG + 3, 2 * PG);
	verify_all();

	/* discard: loads through the mapping read zeros at once, also of
	   pages whose entries were present (and writable) in the view */
	cr_assert_eq(umlmem_discard(T[0].g, 20 * PG, 8 * PG), 0, "%s", umlmem_errmsg());
	memset(m + 20 * PG, 0, 8 * PG);
	verify_map(0, 0, bytes);
	b[21 * PG + 9] = 0x99;
	m[21 * PG + 9] = 0x99;
	verify_read(0, 0, bytes);

	/* the same with the guest's pages in swap and the view's pages not
	   present: the copy calls take their lock, and must not fault on a
	   view while they hold it */
	reclaim_all();
	rc = umlmem_read(T[0].g, 5 * PG + 7, b + 33 * PG + 5, 2 * PG);
	cr_assert_eq(rc, 0, "umlmem_read into the view: %s", umlmem_errmsg());
	memmove(m + 33 * PG + 5, m + 5 * PG + 7, 2 * PG);
	reclaim_all();
	rc = umlmem_write(T[0].g, 36 * PG + 9, b + 2 * PG + 1, 2 * PG);
	cr_assert_eq(rc, 0, "umlmem_write from the view: %s", umlmem_errmsg());
	memmove(m + 36 * PG + 9, m + 2 * PG + 1, 2 * PG);
	verify_all();

	/* everything out to swap and back in through the mapping */
	cr_assert_gt(reclaim_all(), 0);
	cr_assert_gt(gstats(0).swapped_pages, 0);
	verify_map(0, 0, bytes);
	verify_read(0, 0, bytes);
	/* and once more, the copy path first this time */
	reclaim_all();
	verify_read(0, 0, bytes);
	verify_map(0, 0, bytes);

	/* unmap: the data stays for the copy calls; twice is an error */
	cr_assert_eq(umlmem_guest_unmap(T[0].g), 0, "%s", umlmem_errmsg());
	T[0].base = NULL;
	cr_assert_eq(umlmem_guest_unmap(T[0].g), -EINVAL, "second unmap");
	cr_assert_eq(hinfo().native_guests, 0);
	verify_all();
	tu_check(H);
}

/* A guest whose size is not a multiple of the page size (allowed by
   umlmem_guest_create) maps too: its last page is partial. */
Test(native, partial_last_page)
{
	const uint64_t odd = 3 * PG + 100;

	NATIVE_ONLY();
	H = mk_host(1 * TU_MiB, 0);
	mk_guest(0, odd);
	tu_fill(T[0].mem, odd, 0x0dd);
	push(0, 0, odd);
	MAP(0);
	verify_all();
	T[0].base[odd - 1] ^= 0x77;
	T[0].mem[odd - 1] ^= 0x77;
	T[0].base[PG + 5] ^= 0x11;
	T[0].mem[PG + 5] ^= 0x11;
	verify_all();
	reclaim_all();
	verify_all();
	cr_assert_eq(umlmem_guest_unmap(T[0].g), 0, "%s", umlmem_errmsg());
	T[0].base = NULL;
	verify_all();
	tu_check(H);
}

/* ---- 2. larger than the budget, libc code, merging ---------------------------- */

/* Three 8 MiB guests on a 2 MiB budget, worked on by unmodified libc code
   through their mappings; the same code on the models must give the same
   bytes. Equal regions merge; stores to them copy. */
Test(native, overcommit_libc)
{
	const uint64_t GS = 8 * TU_MiB, NE = 4 * TU_MiB / 8;
	const uint64_t R = 7 * TU_MiB, RP = 64;    /* the region made equal */
	uint8_t *b[3], *m[3], *pat;
	struct umlmem_stats s;
	struct umlmem_host_info in;
	uint64_t merged, cow0, h1, h2;

	NATIVE_ONLY();
	H = mk_host(2 * TU_MiB, 0);
	for (int i = 0; i < 3; i++) {
		mk_guest(i, GS);
		MAP(i);
		b[i] = T[i].base;
		m[i] = T[i].mem;
	}

	/* guest 0: random bytes, stored through the mapping */
	tu_fill(b[0], GS, 0xabcdef);
	tu_fill(m[0], GS, 0xabcdef);
	/* big block copies between guests, one of them unaligned */
	memcpy(b[1], b[0], GS);
	memcpy(m[1], m[0], GS);
	memcpy(b[2] + TU_MiB + 7, b[0] + 3 * TU_MiB + 123, 4 * TU_MiB + 5);
	memcpy(m[2] + TU_MiB + 7, m[0] + 3 * TU_MiB + 123, 4 * TU_MiB + 5);
	cr_assert_gt(hstats().swap_outs, 0, "24 MiB through a 2 MiB budget wrote nothing out");

	/* qsort of 512 Ki uint64 living in guest 1 */
	qsort(b[1] + 2 * TU_MiB, NE, 8, cmp_u64);
	qsort(m[1] + 2 * TU_MiB, NE, 8, cmp_u64);
	for (uint64_t i = 1; i < NE; i++) {
		uint64_t x, y;

		memcpy(&x, b[1] + 2 * TU_MiB + (i - 1) * 8, 8);
		memcpy(&y, b[1] + 2 * TU_MiB + i * 8, 8);
		cr_assert_leq(x, y, "guest array not sorted at element %" PRIu64, i);
	}

	/* memset and an overlapping memmove */
	memset(b[2] + 5 * TU_MiB + 3, 0x5a, 2 * TU_MiB + 77);
	memset(m[2] + 5 * TU_MiB + 3, 0x5a, 2 * TU_MiB + 77);
	memmove(b[2] + 100, b[2] + PG + 3, TU_MiB);
	memmove(m[2] + 100, m[2] + PG + 3, TU_MiB);

	/* a hash loop over every guest, through the mapping */
	for (int i = 0; i < 3; i++) {
		h1 = fnv1a(b[i], GS);
		h2 = fnv1a(m[i], GS);
		cr_assert_eq(h1, h2, "FNV of g%d through the mapping %#" PRIx64 ", model %#"
			     PRIx64, i, h1, h2);
	}

	/* the same RP pages at R in every guest, stored through the mapping:
	   resident together (3 * RP frames of 512), so they merge */
	pat = malloc(RP * PG);
	cr_assert_not_null(pat);
	for (uint64_t p = 0; p < RP; p++)
		fill_page(pat + p * PG, 0x5157 + p);
	for (int i = 0; i < 3; i++) {
		memcpy(b[i] + R, pat, RP * PG);
		memcpy(m[i] + R, pat, RP * PG);
	}
	free(pat);
	merged = settle();
	s = hstats();
	in = hinfo();
	cr_assert_gt(merged, 0, "nothing merged");
	cr_assert_gt(in.pages_merged, 0);
	cr_assert_gt(s.sharing_pages, 0, "no page shares a frame after merging");
	for (int i = 0; i < 3; i++)
		verify_map(i, R, RP * PG);

	/* stores through guest 1's mapping to the merged pages copy them */
	cow0 = hstats().cow_breaks;
	for (uint64_t p = 0; p < RP; p++) {
		b[1][R + p * PG + 17] ^= 0xff;
		m[1][R + p * PG + 17] ^= 0xff;
	}
	s = hstats();
	cr_assert_gt(s.cow_breaks, cow0, "stores to merged pages broke no sharing");
	cr_assert_gt(gstats(1).cow_breaks, 0);
	for (int i = 0; i < 3; i++) {
		verify_map(i, R, RP * PG);
		verify_read(i, R, RP * PG);
	}

	/* every byte, both ways, and once more after all went out to swap */
	verify_all();
	reclaim_all();
	verify_all();
	for (int i = 0; i < 3; i++)
		cr_assert_eq(fnv1a(b[i], GS), fnv1a(m[i], GS), "g%d", i);
	s = hstats();
	cr_assert_gt(s.swap_outs, 0);
	cr_assert_gt(s.swap_ins, 0);
	cr_log_info("overcommit_libc: swap_outs %" PRIu64 " swap_ins %" PRIu64 " merged %" PRIu64
		    " cow_breaks %" PRIu64 " native_faults %" PRIu64, s.swap_outs, s.swap_ins,
		    merged, s.cow_breaks, hinfo().native_faults);
	tu_check(H);
}

/* ---- 3. system calls on pages that are not resident ---------------------------- */

struct pipe_reader {
	int fd;
	uint8_t *buf;
	uint64_t len, got;
};

static void *pipe_reader_main(void *arg)
{
	struct pipe_reader *r = arg;

	while (r->got < r->len) {
		ssize_t n = read(r->fd, r->buf + r->got, r->len - r->got);

		if (n <= 0)
			break;
		r->got += (uint64_t)n;
	}
	return NULL;
}

struct sender {
	int fd;
	const uint8_t *buf;
	uint64_t len, sent;
};

static void *sender_main(void *arg)
{
	struct sender *s = arg;

	while (s->sent < s->len) {
		ssize_t n = send(s->fd, s->buf + s->sent, s->len - s->sent, MSG_NOSIGNAL);

		if (n <= 0)
			break;
		s->sent += (uint64_t)n;
	}
	return NULL;
}

/* Makes guest 0 non-resident: everything evicted, and checked. */
static void evict_g0(void)
{
	reclaim_all();
	cr_assert_lt(gstats(0).resident_pages, 8, "guest 0 still has %" PRIu64 " pages resident",
		     gstats(0).resident_pages);
}

/* read(2), write(2), readv, recv(), pread and pwrite on ranges of a mapped
   guest whose pages are in swap or were never touched: full counts, never
   EFAULT, every byte as the model says. */
Test(native, syscalls)
{
	const uint64_t GS = 8 * TU_MiB, FS = 3 * TU_MiB;
	uint8_t *b, *m, *fdata, *chk;
	char path[128], path2[128];
	int fd, fd2, sv[2], pfd[2];
	ssize_t r;
	uint64_t off, len;
	pthread_t th;

	NATIVE_ONLY();
	H = mk_host(1 * TU_MiB, 0);
	mk_guest(0, GS);
	mk_guest(1, 2 * TU_MiB);   /* "other memory", touched to push guest 0 out */
	MAP(0);
	b = T[0].base;
	m = T[0].mem;
	/* first half written through the copy path, second half untouched */
	tu_fill(m, GS / 2, 0x5eed1);
	push(0, 0, GS / 2);
	/* pushed out by touching other memory */
	tu_fill(T[1].mem, T[1].bytes, 0x5eed2);
	push(1, 0, T[1].bytes);
	cr_assert_lt(gstats(0).resident_pages, 256);
	evict_g0();

	fdata = malloc(FS);
	chk = malloc(FS);
	cr_assert(fdata && chk);
	tu_fill(fdata, FS, 0xf11e);
	snprintf(path, sizeof(path), "%s/data", dir);
	snprintf(path2, sizeof(path2), "%s/out", dir);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, fdata, FS), (ssize_t)FS);

	/* read(2) into swapped and untouched pages, across their border */
	off = 3 * TU_MiB + 333;
	len = 2 * TU_MiB + 1000;
	cr_assert_eq(lseek(fd, 12345, SEEK_SET), 12345);
	r = read(fd, b + off, len);
	cr_assert_eq(r, (ssize_t)len, "read(2) into the mapping returned %zd (%s), wanted %" PRIu64,
		     r, r < 0 ? strerror(errno) : "short", len);
	memcpy(m + off, fdata + 12345, len);
	verify_read(0, 0, GS);
	evict_g0();

	/* write(2) out of a non-resident range into a file */
	off = 777;
	len = 2 * TU_MiB + 3;
	fd2 = open(path2, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	cr_assert_geq(fd2, 0);
	r = write(fd2, b + off, len);
	cr_assert_eq(r, (ssize_t)len, "write(2) out of the mapping returned %zd (%s)", r,
		     r < 0 ? strerror(errno) : "short");
	cr_assert_eq(pread(fd2, chk, len, 0), (ssize_t)len);
	cr_assert(!memcmp(chk, m + off, len), "write(2) wrote other bytes, first at %" PRIu64,
		  first_diff(chk, m + off, len));
	close(fd2);
	evict_g0();

	/* write(2) into a pipe, drained by another thread */
	{
		struct pipe_reader pr;

		off = GS / 2 - 512 * TU_KiB + 5;   /* swapped, then pages read(2) filled */
		len = TU_MiB;
		cr_assert_eq(pipe(pfd), 0);
		pr = (struct pipe_reader){ pfd[0], chk, len, 0 };
		cr_assert_eq(pthread_create(&th, NULL, pipe_reader_main, &pr), 0);
		r = write(pfd[1], b + off, len);
		pthread_join(th, NULL);
		close(pfd[0]);
		close(pfd[1]);
		cr_assert_eq(r, (ssize_t)len, "write(2) into a pipe returned %zd (%s)", r,
			     r < 0 ? strerror(errno) : "short");
		cr_assert_eq(pr.got, len);
		cr_assert(!memcmp(chk, m + off, len), "pipe bytes differ at %" PRIu64,
			  first_diff(chk, m + off, len));
	}
	evict_g0();

	/* recv() into the mapping from a socketpair */
	{
		struct sender sd;

		off = TU_MiB + 4000;
		len = 1536 * TU_KiB;
		cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
		sd = (struct sender){ sv[1], fdata + 999, len, 0 };
		cr_assert_eq(pthread_create(&th, NULL, sender_main, &sd), 0);
		r = recv(sv[0], b + off, len, MSG_WAITALL);
		pthread_join(th, NULL);
		close(sv[0]);
		close(sv[1]);
		cr_assert_eq(r, (ssize_t)len, "recv() into the mapping returned %zd (%s)", r,
			     r < 0 ? strerror(errno) : "short");
		memcpy(m + off, fdata + 999, len);
		verify_read(0, 0, GS);
	}
	evict_g0();

	/* pwrite out of the mapping over part of the file, then pread of the
	   file into the mapping elsewhere */
	off = 2 * TU_MiB + 4095;
	len = 700 * TU_KiB + 1;
	r = pwrite(fd, b + off, len, 100000);
	cr_assert_eq(r, (ssize_t)len, "pwrite from the mapping: %zd (%s)", r,
		     r < 0 ? strerror(errno) : "short");
	memcpy(fdata + 100000, m + off, len);
	cr_assert_eq(pread(fd, chk, FS, 0), (ssize_t)FS);
	cr_assert(!memcmp(chk, fdata, FS), "file after pwrite differs at %" PRIu64,
		  first_diff(chk, fdata, FS));
	evict_g0();
	off = 5 * TU_MiB + 1;
	len = FS - 50000;
	r = pread(fd, b + off, len, 50000);
	cr_assert_eq(r, (ssize_t)len, "pread into the mapping: %zd (%s)", r,
		     r < 0 ? strerror(errno) : "short");
	memcpy(m + off, fdata + 50000, len);
	verify_read(0, 0, GS);
	evict_g0();

	/* readv into two non-resident ranges */
	{
		struct iovec iov[2] = {
			{ b + 100, 300 * TU_KiB },
			{ b + 6 * TU_MiB + 17, 600 * TU_KiB },
		};

		r = preadv(fd, iov, 2, 7);
		cr_assert_eq(r, (ssize_t)(900 * TU_KiB), "preadv: %zd (%s)", r,
			     r < 0 ? strerror(errno) : "short");
		memcpy(m + 100, fdata + 7, 300 * TU_KiB);
		memcpy(m + 6 * TU_MiB + 17, fdata + 7 + 300 * TU_KiB, 600 * TU_KiB);
	}
	evict_g0();

	/* O_DIRECT: the kernel pins the guest's pages (get_user_pages) for the
	   I/O; kept well within the budget */
	{
		int dfd = open(path, O_RDWR | O_DIRECT | O_CLOEXEC);

		if (dfd >= 0) {
			off = 7 * TU_MiB;
			len = 64 * TU_KiB;
			r = pread(dfd, b + off, len, 8192);
			if (r < 0 && errno == EINVAL) {
				cr_log_info("O_DIRECT not supported under %s: skipped", dir);
			} else {
				cr_assert_eq(r, (ssize_t)len, "O_DIRECT pread into the mapping: "
					     "%zd (%s)", r, r < 0 ? strerror(errno) : "short");
				memcpy(m + off, fdata + 8192, len);
				evict_g0();
				r = pwrite(dfd, b + off - 2 * TU_MiB, len, 0);
				cr_assert_eq(r, (ssize_t)len, "O_DIRECT pwrite from the mapping: "
					     "%zd (%s)", r, r < 0 ? strerror(errno) : "short");
				memcpy(fdata, m + off - 2 * TU_MiB, len);
				cr_assert_eq(pread(fd, chk, len, 0), (ssize_t)len);
				cr_assert(!memcmp(chk, fdata, len));
			}
			close(dfd);
		}
	}
	close(fd);
	free(fdata);
	free(chk);
	verify_all();
	tu_check(H);
}

/* ---- 4. sharing ------------------------------------------------------------------ */

/* Two guests whose pages are equal merge; a store through one mapping (or
   the copy call) copies the page for that guest only. */
Test(native, sharing)
{
	const uint64_t NP = 64, bytes = NP * PG;
	struct umlmem_stats s0, s1, s;
	uint64_t merged, cow;
	uint8_t v;

	NATIVE_ONLY();
	Rng = 0x5ca1ab1e;
	H = mk_host(4 * TU_MiB, 0);
	mk_guest(0, bytes);
	mk_guest(1, bytes);
	MAP(0);
	MAP(1);
	/* pages [0, 48) equal in both guests, [48, 64) each its own */
	for (uint64_t p = 0; p < NP; p++)
		for (int i = 0; i < 2; i++) {
			fill_page(T[i].mem + p * PG, p < 48 ? 0x100 + p : 0x1000 * (i + 1) + p);
			memcpy(T[i].base + p * PG, T[i].mem + p * PG, PG);
		}
	merged = settle();
	s = hstats();
	cr_assert_eq(merged, 48, "pages merged: %" PRIu64 ", expected 48", merged);
	cr_assert_eq(s.sharing_pages, 48);
	cr_assert_eq(s.shared_frames, 48);
	cr_assert_eq(s.frames_used, 2 * NP - 48);
	/* loads through both mappings see the shared frames (installed
	   read-only in both views) */
	verify_all();
	s0 = gstats(0);
	s1 = gstats(1);

	/* stores through guest 0's mapping to pages [0, 16) */
	for (uint64_t p = 0; p < 16; p++) {
		uint64_t o = p * PG + below(PG);

		v = (uint8_t)(T[0].mem[o] + 1);
		T[0].base[o] = v;
		T[0].mem[o] = v;
		cr_assert_eq(T[1].base[o], T[1].mem[o], "store through g0's mapping seen by g1");
	}
	/* stores through guest 1's mapping to pages [16, 24) */
	for (uint64_t p = 16; p < 24; p++) {
		uint64_t o = p * PG + below(PG);

		v = (uint8_t)(T[1].mem[o] + 1);
		T[1].base[o] = v;
		T[1].mem[o] = v;
	}
	/* the copy call on guest 0, pages [24, 32) */
	for (uint64_t p = 24; p < 32; p++) {
		uint64_t o = p * PG + below(PG - 8);

		tu_fill(T[0].mem + o, 8, p);
		push(0, o, 8);
	}
	/* a whole page stored through the mapping, page 32 */
	memset(T[0].base + 32 * PG, 0x3c, PG);
	memset(T[0].mem + 32 * PG, 0x3c, PG);
	verify_all();
	cow = gstats(0).cow_breaks - s0.cow_breaks;
	cr_assert_eq(cow, 25, "g0 cow_breaks grew by %" PRIu64 ", expected 25", cow);
	cow = gstats(1).cow_breaks - s1.cow_breaks;
	cr_assert_eq(cow, 8, "g1 cow_breaks grew by %" PRIu64 ", expected 8", cow);
	s = hstats();
	cr_assert_eq(s.sharing_pages, 48 - 33);
	cr_assert_eq(s.shared_frames, 48 - 33);

	/* still shared pages, out to swap and back: stores still copy */
	reclaim_all();
	verify_all();
	for (uint64_t p = 40; p < 44; p++) {
		T[0].base[p * PG + 9] ^= 0x42;
		T[0].mem[p * PG + 9] ^= 0x42;
	}
	verify_all();

	/* merge again, then switch merging off for guest 1 while both views
	   have the shared pages present: each guest keeps its bytes */
	settle();
	verify_all();
	cr_assert_gt(hstats().sharing_pages, 0);
	cr_assert_eq(umlmem_guest_set_merge(T[1].g, 0), 0, "%s", umlmem_errmsg());
	cr_assert_eq(hstats().sharing_pages, 0, "sharing left after unmerging guest 1");
	for (uint64_t p = 0; p < 48; p++) {
		T[1].base[p * PG + 100] ^= 0x24;
		T[1].mem[p * PG + 100] ^= 0x24;
	}
	verify_all();
	tu_check(H);
}

/* ---- 5. threads ------------------------------------------------------------------ */

#define NT 4
#define NCOMMON 4

struct worker {
	unsigned id;
	uint64_t seed, ops, npages;
	uint64_t done;
	int fail;
	char msg[300];
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	uint8_t *buf = malloc(PG), *rb = malloc(PG);
	uint64_t st = w->seed;

	for (uint64_t i = 0; i < w->ops && !w->fail && buf && rb; i++) {
		int gi = (int)(tu_splitmix64(&st) % 2);
		uint64_t idx = w->id + NT * (tu_splitmix64(&st) % (w->npages / NT));
		uint64_t op = tu_splitmix64(&st) % 10, o = 0, len = PG;
		uint8_t *gm = T[gi].base + idx * PG, *mm = T[gi].mem + idx * PG;
		const char *what = NULL;
		int rc = 0;

		if (op < 4) {
			/* a piece of the page, or a whole page of common content */
			if (op < 2) {
				len = 1 + tu_splitmix64(&st) % PG;
				o = tu_splitmix64(&st) % (PG - len + 1);
				tu_fill(buf, len, tu_splitmix64(&st));
			} else {
				fill_page(buf, 0xc0 + tu_splitmix64(&st) % NCOMMON);
			}
			if (op & 1) {
				memcpy(gm + o, buf, len);
			} else {
				rc = umlmem_write(T[gi].g, idx * PG + o, buf, len);
				what = "umlmem_write";
			}
			if (!rc)
				memcpy(mm + o, buf, len);
		} else if (op < 7) {
			if (memcmp(gm, mm, PG)) {
				w->fail = 1;
				snprintf(w->msg, sizeof(w->msg), "thread %u op %" PRIu64 ": g%d page %"
					 PRIu64 " differs through the mapping at byte %" PRIu64,
					 w->id, i, gi, idx, first_diff(gm, mm, PG));
			}
		} else {
			rc = umlmem_read(T[gi].g, idx * PG, rb, PG);
			what = "umlmem_read";
			if (!rc && memcmp(rb, mm, PG)) {
				w->fail = 1;
				snprintf(w->msg, sizeof(w->msg), "thread %u op %" PRIu64 ": g%d page %"
					 PRIu64 " differs through umlmem_read at byte %" PRIu64,
					 w->id, i, gi, idx, first_diff(rb, mm, PG));
			}
		}
		if (rc) {
			w->fail = 1;
			snprintf(w->msg, sizeof(w->msg), "thread %u: %s g%d page %" PRIu64 ": %s: %s",
				 w->id, what, gi, idx, umlmem_strerror(rc), umlmem_errmsg());
		}
		w->done = i + 1;
	}
	free(buf);
	free(rb);
	return NULL;
}

/* 4 threads over 2 mapped guests larger than the budget, with the reclaim
   and merge threads running: each thread owns every 4th page of both,
   writes them through the mapping or the copy call and reads them back
   either way. */
Test(native, threads)
{
	const uint64_t GS = 4 * TU_MiB;
	struct umlmem_host_config cfg;
	struct worker w[NT];
	pthread_t th[NT];
	struct umlmem_stats s;
	struct umlmem_host_info in;
	struct timespec t0, t1;

	NATIVE_ONLY();
	umlmem_host_config_init(&cfg);
	cfg.resident_bytes = 2 * TU_MiB;
	cfg.flags = UMLMEM_BACKGROUND;
	cfg.dedup_sleep_us = 2000;
	H = mk_host_cfg(&cfg);
	mk_guest(0, GS);
	mk_guest(1, GS);
	MAP(0);
	MAP(1);

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (unsigned t = 0; t < NT; t++) {
		w[t] = (struct worker){ .id = t, .seed = 0x7e57 + 977 * t, .ops = 12000,
					.npages = GS / PG };
		cr_assert_eq(pthread_create(&th[t], NULL, worker_main, &w[t]), 0);
	}
	for (unsigned t = 0; t < NT; t++)
		pthread_join(th[t], NULL);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	for (unsigned t = 0; t < NT; t++)
		cr_assert_not(w[t].fail, "%s", w[t].msg);
	for (unsigned t = 0; t < NT; t++)
		cr_assert_eq(w[t].done, w[t].ops);

	s = hstats();
	in = hinfo();
	cr_log_info("threads: %.2f s, swap_outs %" PRIu64 " swap_ins %" PRIu64 " merged %" PRIu64
		    " cow_breaks %" PRIu64 " native_faults %" PRIu64 " zaps %" PRIu64,
		    (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9,
		    s.swap_outs, s.swap_ins, in.pages_merged, s.cow_breaks, in.native_faults,
		    in.native_zaps);
	cr_assert_gt(s.swap_outs, 0);
	cr_assert_gt(in.native_faults, 0);
	cr_assert_gt(in.pages_merged, 0, "the merge thread merged nothing");
	verify_all();
	/* the merge thread is still running: stop it for a quiet check */
	umlmem_dedup_pause(H, 1);
	tu_check(H);
}

/* A worker of threads_same_pages: it owns the words w % NT == id of every
   page. */
struct sworker {
	unsigned id;
	uint64_t seed, npages;
	_Atomic uint64_t done;     /* ops completed: the watchdog's progress */
	_Atomic int stop;
	_Atomic int fail;
	char msg[300];
};

/* The canonical content of word @w of a page of class @c. */
static uint64_t canon(uint64_t c, uint64_t w)
{
	uint64_t st = c * 1000003 + w;

	return tu_splitmix64(&st) | 1;
}

static void *sworker_main(void *arg)
{
	struct sworker *w = arg;
	uint64_t st = w->seed;
	const uint64_t WPP = PG / 8;

	for (uint64_t i = 0; !w->stop && !w->fail; i++) {
		uint64_t idx = tu_splitmix64(&st) % w->npages, op = tu_splitmix64(&st) % 10;
		uint64_t word = w->id + NT * (tu_splitmix64(&st) % (WPP / NT));
		uint64_t a = idx * PG + word * 8, v = tu_splitmix64(&st), got = 0;
		uint64_t *gw = (uint64_t *)(T[0].base + idx * PG), *mw = (uint64_t *)(T[0].mem + idx * PG);
		int rc = 0;

		switch (op) {
		case 0: case 1:
			__atomic_store_n(&gw[word], v, __ATOMIC_RELAXED);
			mw[word] = v;
			break;
		case 2:
			rc = umlmem_write(T[0].g, a, &v, 8);
			if (!rc)
				mw[word] = v;
			break;
		case 3: case 4:
			/* all own words of the page become the canonical ones */
			for (uint64_t k = w->id; k < WPP; k += NT) {
				v = canon(idx % 8, k);
				__atomic_store_n(&gw[k], v, __ATOMIC_RELAXED);
				mw[k] = v;
			}
			break;
		case 5: case 6: case 7:
			for (uint64_t k = w->id; k < WPP; k += NT) {
				got = __atomic_load_n(&gw[k], __ATOMIC_RELAXED);
				if (got != mw[k]) {
					w->fail = 1;
					snprintf(w->msg, sizeof(w->msg), "thread %u op %" PRIu64 ": page %"
						 PRIu64 " word %" PRIu64 " reads %#" PRIx64 " through the "
						 "mapping, expected %#" PRIx64, w->id, i, idx, k, got, mw[k]);
					break;
				}
			}
			break;
		default:
			rc = umlmem_read(T[0].g, a, &got, 8);
			if (!rc && got != mw[word]) {
				w->fail = 1;
				snprintf(w->msg, sizeof(w->msg), "thread %u op %" PRIu64 ": page %" PRIu64
					 " word %" PRIu64 " reads %#" PRIx64 " through umlmem_read, "
					 "expected %#" PRIx64, w->id, i, idx, word, got, mw[word]);
			}
			break;
		}
		if (rc) {
			w->fail = 1;
			snprintf(w->msg, sizeof(w->msg), "thread %u: page %" PRIu64 ": %s: %s", w->id,
				 idx, umlmem_strerror(rc), umlmem_errmsg());
		}
		w->done = i + 1;
	}
	return NULL;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Wakes every thread waiting in a fault on [p, p + len) of the host's
   userfaultfd: the test's way out of a fault that was never woken. */
static void uffd_wake(void *p, uint64_t len)
{
	struct uffdio_range r = { .start = (uintptr_t)p, .len = len };

	if (H->uffd >= 0)
		ioctl(H->uffd, UFFDIO_WAKE, &r);
}

/* Threads sharing pages: thread t owns the 8-byte words w of every page
   with w % NT == t, so all threads store into the same pages at once
   (through the mapping or umlmem_write) while the pager evicts them and
   the merge thread shares them: the races between a store, a zap, a
   write-protected install and a copy on write. Every thread checks its
   own words; some pages become equal word by word, to be merged. Runs
   for 6 s; a thread that makes no progress for 5 s is stuck in a fault. */
Test(native, threads_same_pages)
{
	const uint64_t GS = 2 * TU_MiB;
	struct umlmem_host_config cfg;
	struct sworker w[NT];
	pthread_t th[NT];
	struct umlmem_stats s;
	struct umlmem_host_info in;
	uint64_t last[NT] = { 0 };
	double t0, seen[NT];
	int stuck = -1;

	NATIVE_ONLY();
	umlmem_host_config_init(&cfg);
	cfg.resident_bytes = 512 * TU_KiB;
	cfg.flags = UMLMEM_BACKGROUND;
	cfg.dedup_sleep_us = 1000;
	H = mk_host_cfg(&cfg);
	mk_guest(0, GS);
	MAP(0);
	t0 = now_s();
	for (unsigned t = 0; t < NT; t++) {
		w[t] = (struct sworker){ .id = t, .seed = 0x5a3e + 31 * t, .npages = GS / PG };
		seen[t] = t0;
		cr_assert_eq(pthread_create(&th[t], NULL, sworker_main, &w[t]), 0);
	}
	for (;;) {
		double t = now_s();
		bool alive = false;

		usleep(20000);
		for (unsigned k = 0; k < NT; k++) {
			if (w[k].fail)
				continue;
			alive = true;
			if (w[k].done != last[k]) {
				last[k] = w[k].done;
				seen[k] = t;
			} else if (t - seen[k] > 5 && stuck < 0) {
				stuck = (int)k;
			}
		}
		if (!alive || stuck >= 0 || t - t0 > 6)
			break;
	}
	for (unsigned t = 0; t < NT; t++)
		w[t].stop = 1;
	if (stuck >= 0)
		uffd_wake(T[0].base, GS);   /* so that the threads can be joined */
	for (unsigned t = 0; t < NT; t++)
		pthread_join(th[t], NULL);
	cr_assert(stuck < 0, "thread %d made no progress for 5 s after op %" PRIu64 ": stuck in "
		  "a native fault that was served without waking it (an explicit UFFDIO_WAKE "
		  "released it)", stuck, last[stuck]);
	for (unsigned t = 0; t < NT; t++)
		cr_assert_not(w[t].fail, "%s", w[t].msg);
	s = hstats();
	in = hinfo();
	cr_log_info("threads_same_pages: ops %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64
		    ", swap_outs %" PRIu64 " merged %" PRIu64 " cow_breaks %" PRIu64
		    " native_faults %" PRIu64, w[0].done, w[1].done, w[2].done, w[3].done,
		    s.swap_outs, in.pages_merged, s.cow_breaks, in.native_faults);
	cr_assert_gt(s.swap_outs, 0);
	verify_all();
	umlmem_dedup_pause(H, 1);
	tu_check(H);
}

/* Two threads on the same page at the same moment, the page's frame
   shared with another guest: a reader faults it in (the handler maps the
   shared frame into the view, write-protected) while a second thread
   touches it too, with a store (a copy on write) or a load. */
struct race {
	uint64_t np;
	bool store;                  /* the second thread stores, or loads */
	_Atomic uint64_t cur;        /* page the reader is on; UINT64_MAX: done */
	_Atomic uint64_t progress;   /* pages the reader is past */
	_Atomic uint64_t tpage;      /* page the second thread touches */
	_Atomic uint64_t touches;    /* touches it completed */
	_Atomic int go, stop, texited;
};

static void *race_reader(void *arg)
{
	struct race *r = arg;
	volatile uint8_t sink = 0;

	while (!r->go)
		;
	for (uint64_t p = 0; p < r->np && !r->stop; p++) {
		r->cur = p;
		sink ^= T[0].base[p * PG + 100];
		r->progress = p + 1;
		for (volatile int k = 0; k < 2000; k++)
			;
	}
	(void)sink;
	r->cur = UINT64_MAX;
	return NULL;
}

static void *race_toucher(void *arg)
{
	struct race *r = arg;
	uint64_t last = UINT64_MAX;
	volatile uint8_t sink = 0;

	while (!r->go)
		;
	while (!r->stop) {
		uint64_t p = r->cur;

		if (p == UINT64_MAX)
			break;
		if (p == last)
			continue;
		/* one touch per page, as soon as the reader is on it */
		r->tpage = p;
		if (r->store) {
			__atomic_store_n(&T[0].base[p * PG + 8], (uint8_t)0xee, __ATOMIC_RELAXED);
			T[0].mem[p * PG + 8] = 0xee;
		} else {
			sink ^= __atomic_load_n(&T[0].base[p * PG + 8], __ATOMIC_RELAXED);
		}
		r->touches++;
		last = p;
	}
	(void)sink;
	r->texited = 1;
	return NULL;
}

/* Guest 0's pages equal guest 1's and merged with them, again and again;
   each time a reader and a second thread go over guest 0 together. Guest
   1 must never see guest 0's stores, no fault may hang, every byte as
   modelled. Runs for 4 s. */
static void race_case(bool store)
{
	const uint64_t NP = 256;
	struct race r;
	pthread_t tr, tw;
	double t0 = now_s();
	int rounds = 0;

	H = mk_host(4 * TU_MiB, 0);
	mk_guest(0, NP * PG);
	mk_guest(1, NP * PG);
	MAP(0);
	MAP(1);
	for (uint64_t p = 0; p < NP; p++)
		fill_page(T[1].mem + p * PG, 0xabc + p);
	push(1, 0, NP * PG);
	do {
		uint64_t prog = 0, tprog = 0;
		double seen = now_s();
		bool hung = false;

		memcpy(T[0].mem, T[1].mem, NP * PG);
		push(0, 0, NP * PG);
		settle();
		cr_assert_eq(hstats().sharing_pages, NP, "round %d: %" PRIu64 " pages shared of %"
			     PRIu64, rounds, hstats().sharing_pages, NP);
		r = (struct race){ .np = NP, .store = store };
		cr_assert_eq(pthread_create(&tr, NULL, race_reader, &r), 0);
		cr_assert_eq(pthread_create(&tw, NULL, race_toucher, &r), 0);
		r.go = 1;
		while (r.cur != UINT64_MAX || !r.texited) {
			usleep(1000);
			if (r.progress != prog || r.touches != tprog) {
				prog = r.progress;
				tprog = r.touches;
				seen = now_s();
			} else if (now_s() - seen > 3) {
				hung = true;
				break;
			}
		}
		if (hung) {
			bool reader = r.cur != UINT64_MAX;
			uint64_t p = reader ? r.cur : r.tpage;

			/* a lost wakeup? wake the page and see whether it moves on */
			uffd_wake(T[0].base + p * PG, PG);
			usleep(200000);
			hung = reader ? r.progress == prog : r.touches == tprog;
			r.stop = 1;
			uffd_wake(T[0].base, NP * PG);
			pthread_join(tr, NULL);
			pthread_join(tw, NULL);
			cr_assert_fail("round %d: the %s's %s of page %" PRIu64 " did not return for "
				       "3 s; %s", rounds, reader ? "reader" : "second thread",
				       reader || !store ? "load" : "store", p, !hung ?
				       "an explicit UFFDIO_WAKE released it: its fault was served "
				       "but never woken" : "it is still stuck after an explicit "
				       "UFFDIO_WAKE");
		}
		pthread_join(tr, NULL);
		pthread_join(tw, NULL);
		verify_map(1, 0, NP * PG);
		verify_read(1, 0, NP * PG);
		verify_map(0, 0, NP * PG);
		verify_read(0, 0, NP * PG);
		rounds++;
	} while (now_s() - t0 < 4);
	cr_log_info("race_fault_and_%s: %d rounds", store ? "store" : "load", rounds);
	tu_check(H);
}

Test(native, race_fault_and_store)
{
	NATIVE_ONLY();
	race_case(true);
}

Test(native, race_fault_and_load)
{
	NATIVE_ONLY();
	race_case(false);
}

/* A sparse 1 TiB guest maps (address space only) and works at its ends;
   one of 128 TiB finds no address range: -ENOMEM, and a host whose only
   map failed keeps no handler thread. */
Test(native, huge_sparse)
{
	const uint64_t TB = 1ull << 40;
	struct umlmem_guest_config gc;
	umlmem_guest *big = NULL;
	const uint64_t at[] = { 0, TB / 2 + 5, TB - 1, 12345 * PG + 17 };
	void *vb = NULL;
	int rc;

	NATIVE_ONLY();
	H = mk_host(1 * TU_MiB, 0);
	umlmem_guest_config_init(&gc);
	gc.ram_bytes = UMLMEM_MAX_GUEST_BYTES;
	cr_assert_eq(umlmem_guest_create(H, &gc, &big), 0);
	rc = umlmem_guest_map(big, &vb);
	if (rc == -EPERM || rc == -EOPNOTSUPP)
		cr_skip_test("native mode unavailable: %s", umlmem_errmsg());
	cr_assert_eq(rc, -ENOMEM, "map of a 128 TiB guest: %d: %s", rc, umlmem_errmsg());
	cr_assert_neq(umlmem_errmsg()[0], 0);
	cr_assert_eq(fault_threads_settle(0), 0, "handler threads left after a failed first map");
	cr_assert_eq(hinfo().native_guests, 0);
	umlmem_guest_destroy(big);

	/* no model of 1 TiB: the bytes touched are checked one by one */
	umlmem_guest_config_init(&gc);
	gc.ram_bytes = TB;
	cr_assert_eq(umlmem_guest_create(H, &gc, &T[0].g), 0);
	MAP(0);
	for (unsigned i = 0; i < sizeof(at) / sizeof(at[0]); i++)
		T[0].base[at[i]] = (uint8_t)(0x51 + i);
	reclaim_all();
	for (unsigned i = 0; i < sizeof(at) / sizeof(at[0]); i++) {
		uint8_t v = 0;

		cr_assert_eq(umlmem_read(T[0].g, at[i], &v, 1), 0);
		cr_assert_eq(v, 0x51 + i, "byte 0x%" PRIx64 " reads %#x", at[i], v);
		cr_assert_eq(T[0].base[at[i]], 0x51 + i);
		cr_assert_eq(T[0].base[at[i] ^ 1], 0);
	}
	cr_assert_eq(hstats().resident_pages + hstats().swapped_pages, 4);
	tu_check(H);
}

/* ---- 6. vm.max_map_count ----------------------------------------------------------- */

/* A map limit too small to start refuses with a message naming the
   setting; a small one that starts works by flushing the views. */
Test(native, max_map_count)
{
	const uint64_t GS = 16 * TU_MiB, NP = GS / PG;
	struct umlmem_host_info in;
	char msg[512];
	void *vb = NULL;
	unsigned maxv = 0;
	int rc;

	NATIVE_ONLY();
	Rng = 0x600;
	H = mk_host(64 * PG, 0);   /* two mappings per frame: 128 + 256 fit in 600 */
	mk_guest(0, GS);

	native_map_limit_override = 100;
	rc = umlmem_guest_map(T[0].g, &vb);
	snprintf(msg, sizeof(msg), "%s", umlmem_errmsg());
	if (rc == -EPERM || rc == -EOPNOTSUPP)
		cr_skip_test("native mode unavailable: %s", msg);
	cr_assert_eq(rc, -ENOMEM, "map with a limit of 100 mappings: %d: %s", rc, msg);
	cr_assert_not_null(strstr(msg, "vm.max_map_count"), "message: %s", msg);
	in = hinfo();
	cr_assert_eq(in.native_guests, 0);
	cr_assert_eq(fault_threads(), 0, "a refused map left handler threads");

	native_map_limit_override = 600;
	MAP(0);
	in = hinfo();
	cr_assert_eq(in.native_map_limit, 600, "native_map_limit %" PRIu64, in.native_map_limit);

	for (int k = 0; k < 30000; k++) {
		uint64_t idx = below(NP), o = below(PG - 8), a = idx * PG + o;

		if (below(3)) {
			uint64_t v = tu_splitmix64(&Rng);

			memcpy(T[0].base + a, &v, 8);
			memcpy(T[0].mem + a, &v, 8);
		} else {
			cr_assert(!memcmp(T[0].base + a, T[0].mem + a, 8),
				  "g0 bytes at 0x%" PRIx64 " differ (op %d)", a, k);
		}
		if (k % 2000 == 0) {
			unsigned n = maps_in(T[0].base, GS);

			if (n > maxv)
				maxv = n;
		}
	}
	in = hinfo();
	cr_log_info("max_map_count: flushes %" PRIu64 " maps %" PRIu64 " most mappings seen %u",
		    in.native_flushes, in.native_maps, maxv);
	cr_assert_gt(in.native_flushes, 0, "30000 touches over 4096 pages, room for 300: no flush");
	cr_assert_gt(in.native_maps, 300);
	cr_assert_leq(maxv, 601, "%u mappings in the view, over the limit of 600", maxv);
	verify_all();
	cr_assert_leq(maps_in(T[0].base, GS), 601);
	native_map_limit_override = 0;
	tu_check(H);
}

/* ---- 7. cleanup -------------------------------------------------------------------- */

/* Unmapping, and destroying a mapped guest, take the range away; the last
   one stops the handler threads; a new map sees the old data. */
Test(native, cleanup)
{
	const uint64_t GS = 2 * TU_MiB;
	unsigned before, n, want = expected_handlers();
	uint8_t *old0, *old1;

	NATIVE_ONLY();
	H = mk_host(1 * TU_MiB, 0);
	mk_guest(0, GS);
	mk_guest(1, GS);
	before = fault_threads();
	cr_assert_eq(before, 0, "handler threads before any map");

	MAP(0);
	MAP(1);
	old0 = T[0].base;
	old1 = T[1].base;
	n = fault_threads();
	cr_assert_eq(n, want, "%u handler threads, expected %u", n, want);
	cr_assert_gt(maps_in(old0, GS), 0);
	cr_assert_gt(maps_in(old1, GS), 0);
	for (int i = 0; i < 2; i++) {
		tu_fill(T[i].base, GS, 0xc1ea + i);
		tu_fill(T[i].mem, GS, 0xc1ea + i);
	}
	verify_all();

	/* unmap guest 0: its range goes, the handlers stay for guest 1 */
	cr_assert_eq(umlmem_guest_unmap(T[0].g), 0, "%s", umlmem_errmsg());
	T[0].base = NULL;
	cr_assert_eq(maps_in(old0, GS), 0, "the unmapped range is still in /proc/self/maps");
	cr_assert_gt(maps_in(old1, GS), 0);
	cr_assert_eq(fault_threads(), want);
	cr_assert_eq(hinfo().native_guests, 1);
	verify_all();

	/* destroying mapped guest 1 unmaps it and stops the handlers */
	umlmem_guest_destroy(T[1].g);
	T[1].g = NULL;
	T[1].base = NULL;
	cr_assert_eq(maps_in(old1, GS), 0, "the range of a destroyed guest is still mapped");
	n = fault_threads_settle(before);
	cr_assert_eq(n, before, "%u handler threads left with no guest mapped", n);
	cr_assert_eq(hinfo().native_guests, 0);

	/* map guest 0 again: the handlers come back, the data is there */
	MAP(0);
	cr_assert_eq(fault_threads(), want);
	verify_all();
	T[0].base[12345] ^= 1;
	T[0].mem[12345] ^= 1;
	verify_all();

	/* and unmapping the last guest stops them again */
	cr_assert_eq(umlmem_guest_unmap(T[0].g), 0);
	T[0].base = NULL;
	cr_assert_eq(fault_threads_settle(before), before);
	verify_all();
	tu_check(H);
}

/* ---- 8. referenced tracking ------------------------------------------------------- */

/* A hot set touched again and again through its mapping while a cold
   stream four times the budget goes through another: the pager only sees
   native uses through the zaps it makes (referenced-bit sampling), and
   that must be enough to keep the hot set resident. */
Test(native, referenced)
{
	const uint64_t HOT = 32, COLD = 4096, BUDGET = 256;
	struct umlmem_stats sh0, sh, sc;
	struct umlmem_host_info in0, in;
	uint64_t refaults, touches = 0;
	volatile uint8_t sink = 0;

	NATIVE_ONLY();
	H = mk_host(BUDGET * PG, 0);
	mk_guest(0, HOT * PG);
	mk_guest(1, COLD * PG);
	MAP(0);
	MAP(1);
	for (uint64_t p = 0; p < HOT; p++) {
		fill_page(T[0].mem + p * PG, 0x407 + p);
		memcpy(T[0].base + p * PG, T[0].mem + p * PG, PG);
	}
	sh0 = gstats(0);
	in0 = hinfo();

	for (uint64_t c = 0; c < COLD; c++) {
		/* a cold page: written once */
		T[1].base[c * PG + c % PG] = (uint8_t)(c | 1);
		T[1].mem[c * PG + c % PG] = (uint8_t)(c | 1);
		if (c % 8 == 7) {
			for (uint64_t p = 0; p < HOT; p++) {
				sink ^= T[0].base[p * PG + (c % PG)];
				touches++;
			}
		}
	}
	(void)sink;
	sh = gstats(0);
	sc = gstats(1);
	in = hinfo();
	refaults = sh.swap_ins - sh0.swap_ins;
	cr_log_info("referenced: hot resident %" PRIu64 "/%" PRIu64 ", cold resident %" PRIu64
		    "/%" PRIu64 ", hot refaults %" PRIu64 " in %" PRIu64 " touches, zaps %" PRIu64,
		    sh.resident_pages, HOT, sc.resident_pages, COLD, refaults, touches,
		    in.native_zaps - in0.native_zaps);
	cr_assert_gt(hstats().swap_outs, 0);
	cr_assert_gt(in.native_zaps, in0.native_zaps, "the pager ran and zapped nothing");
	cr_assert_geq(sh.resident_pages, HOT - 2, "only %" PRIu64 " of %" PRIu64 " hot pages "
		      "resident", sh.resident_pages, HOT);
	/* each hot page may go once while the first eviction finds every
	   frame equally used; without the sampling they would go on every
	   turn of the clock (some 16 turns here) */
	cr_assert_leq(refaults, 3 * HOT, "hot pages came back from swap %" PRIu64
		      " times in %" PRIu64 " touches", refaults, touches);
	cr_assert_leq(sc.resident_pages, BUDGET);
	verify_all();
	tu_check(H);
}

/* ---- 9. a touch that cannot be served ------------------------------------------ */

/* Every frame of the budget pinned: a touch of another page cannot get a
   frame, and raises SIGBUS in the touching thread (after the handler's
   retries); the pinned pages keep their data, and once they are unpinned
   the same touch works. */
Test(native, sigbus_all_pinned)
{
	const uint64_t B = 16, NP = 64;
	void *p[16];
	volatile uint8_t x = 0;
	int buses;

	NATIVE_ONLY();
	H = mk_host(B * PG, 0);
	mk_guest(0, NP * PG);
	MAP(0);
	for (uint64_t i = 0; i < B; i++) {
		cr_assert_eq(umlmem_pin(T[0].g, i * PG, UMLMEM_WRITE, &p[i]), 0, "pin %" PRIu64
			     ": %s", i, umlmem_errmsg());
		memset(p[i], (int)(i + 1), PG);
		memset(T[0].mem + i * PG, (int)(i + 1), PG);
	}
	buses = tu_load_sigbus(&T[0].base[40 * PG + 1], &x);
	cr_assert_eq(buses, 1, "a load with every frame pinned: %d SIGBUS (read %u)", buses,
		     (unsigned)x);
	/* the pinned pages, through the mapping (no frame needed: they are
	   resident) */
	verify_map(0, 0, B * PG);
	for (uint64_t i = 0; i < B; i++)
		cr_assert_eq(umlmem_unpin(T[0].g, i * PG), 0);
	T[0].base[40 * PG + 1] = 0x40;
	T[0].mem[40 * PG + 1] = 0x40;
	verify_all();
	tu_check(H);
}

/* ---- 10. O_DIRECT into pinned pages -------------------------------------------- */

/* The kernel holds its own references to the pages of an O_DIRECT transfer
   while the device works, and umlmem cannot see them: the documented rule
   (umlmem.h, umlmem_guest_map) is to pin the range with umlmem_pin() for
   the time of such a transfer. Here the pinned range is half the budget
   and the rest of the guest is written meanwhile, so the pager runs while
   the read is prepared; the guest must hold the file's bytes. */
Test(native, odirect_pinned)
{
	const uint64_t B = 64, NP = 1024, N = 32, AT = 512;
	uint8_t *fdata;
	char path[128];
	void *pp;
	ssize_t r;
	int fd;

	NATIVE_ONLY();
	H = mk_host(B * PG, 0);
	mk_guest(0, NP * PG);
	MAP(0);
	memset(T[0].base, 0x33, 128 * PG);
	memset(T[0].mem, 0x33, 128 * PG);
	fdata = aligned_alloc(PG, N * PG);
	cr_assert_not_null(fdata);
	tu_fill(fdata, N * PG, 0xd1ec7);
	snprintf(path, sizeof(path), "%s/direct", dir);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, fdata, N * PG), (ssize_t)(N * PG));
	cr_assert_eq(fsync(fd), 0);
	close(fd);
	fd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);
	if (fd < 0 && errno == EINVAL) {
		free(fdata);
		cr_skip_test("O_DIRECT not supported under %s", dir);
	}
	cr_assert_geq(fd, 0);
	for (uint64_t i = AT; i < AT + N; i++)
		cr_assert_eq(umlmem_pin(T[0].g, i * PG, UMLMEM_WRITE, &pp), 0, "%s",
			     umlmem_errmsg());
	/* pressure on the unpinned half of the budget */
	memset(T[0].base + 600 * PG, 0x44, 200 * PG);
	memset(T[0].mem + 600 * PG, 0x44, 200 * PG);
	r = pread(fd, T[0].base + AT * PG, N * PG, 0);
	close(fd);
	cr_assert_eq(r, (ssize_t)(N * PG), "O_DIRECT pread: %zd (%s)", r,
		     r < 0 ? strerror(errno) : "short");
	for (uint64_t i = AT; i < AT + N; i++)
		cr_assert_eq(umlmem_unpin(T[0].g, i * PG), 0);
	memcpy(T[0].mem + AT * PG, fdata, N * PG);
	free(fdata);
	verify_all();
	tu_check(H);
}

/* ---- 9. the review's races ------------------------------------------------------- */

/* native_stop() of the last unmap is held, between dropping host->lock and
   stopping anything, while another thread maps guest 1. */
static pthread_t Stop_mapper;
static int Stop_map_rc;

static void *stop_map_thread(void *arg)
{
	(void)arg;
	Stop_map_rc = map_guest(1);
	return NULL;
}

static void stop_hook(struct umlmem_host *h)
{
	(void)h;
	native_stop_hook = NULL;
	cr_assert_eq(pthread_create(&Stop_mapper, NULL, stop_map_thread, NULL), 0);
	/* long enough for the map to be made, if it is made before the stop */
	usleep(100 * 1000);
}

/*
 * A guest mapped while the last unmap stops the handlers: its view must
 * be served (stores through it are the guest's bytes), not registered on
 * the userfaultfd being closed, where it would turn into plain memory.
 */
Test(native, map_while_stopping)
{
	const uint64_t GS = 1 * TU_MiB;

	NATIVE_ONLY();
	H = mk_host(1 * TU_MiB, 0);
	mk_guest(0, GS);
	mk_guest(1, GS);
	MAP(0);
	native_stop_hook = stop_hook;
	cr_assert_eq(umlmem_guest_unmap(T[0].g), 0, "%s", umlmem_errmsg());
	T[0].base = NULL;
	pthread_join(Stop_mapper, NULL);
	native_stop_hook = NULL;
	cr_assert_eq(Stop_map_rc, 0, "umlmem_guest_map during the stop: %d: %s", Stop_map_rc,
		     Maperr);
	cr_assert_eq(hinfo().native_guests, 1);
	tu_fill(T[1].base, GS, 0x570f);
	tu_fill(T[1].mem, GS, 0x570f);
	verify_all();
	cr_assert_gt(hinfo().native_faults, 0, "stores to the view were not seen");
	tu_check(H);
}

/* The program's own SIGSEGV handler, installed before any map. */
static sigjmp_buf Segvjmp;
static volatile sig_atomic_t Segvs, Segv_masked;
static void *volatile Segv_addr;

static void on_segv(int sig, siginfo_t *si, void *uc)
{
	sigset_t cur;

	(void)sig;
	(void)uc;
	Segvs++;
	Segv_addr = si->si_addr;
	pthread_sigmask(SIG_SETMASK, NULL, &cur);
	Segv_masked = sigismember(&cur, SIGUSR2);
	siglongjmp(Segvjmp, 1);
}

/*
 * A program that write-protects part of its view and stores there gets
 * the SIGSEGV the kernel would give it, to its own handler, delivered as
 * that handler asked (sa_mask, SA_RESETHAND): native mode must not
 * swallow it (the store would fault for ever) nor change how it is
 * delivered.
 */
Test(native, own_sigsegv_handler, .timeout = 20)
{
	const uint64_t GS = 1 * TU_MiB;
	struct sigaction sa, cur;

	NATIVE_ONLY();
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_segv;
	sa.sa_flags = SA_SIGINFO | SA_RESETHAND;
	sigemptyset(&sa.sa_mask);
	sigaddset(&sa.sa_mask, SIGUSR2);
	cr_assert_eq(sigaction(SIGSEGV, &sa, NULL), 0);

	H = mk_host(1 * TU_MiB, 0);
	mk_guest(0, GS);
	MAP(0);
	T[0].base[3 * PG + 5] = 0x33;
	T[0].mem[3 * PG + 5] = 0x33;
	cr_assert_eq(mprotect(T[0].base + 3 * PG, PG, PROT_READ), 0, "%s", strerror(errno));
	Segvs = 0;
	if (!sigsetjmp(Segvjmp, 1))
		T[0].base[3 * PG + 6] = 0x44;
	cr_assert_eq(Segvs, 1, "a store to a page the program made read-only: %d SIGSEGV",
		     (int)Segvs);
	cr_assert_eq(Segv_addr, T[0].base + 3 * PG + 6, "si_addr %p", Segv_addr);
	cr_assert(Segv_masked, "the handler ran without its sa_mask");
	cr_assert_eq(sigaction(SIGSEGV, NULL, &cur), 0);
	cr_assert(cur.sa_handler == SIG_DFL,
		  "SA_RESETHAND did not reset the handler");
	/* the page itself is fine, and writable again once the program says so */
	cr_assert_eq(mprotect(T[0].base + 3 * PG, PG, PROT_READ | PROT_WRITE), 0);
	T[0].base[3 * PG + 6] = 0x44;
	T[0].mem[3 * PG + 6] = 0x44;
	verify_all();
	tu_check(H);
}

/* ---- failures of the steps that need a resource ------------------------------------ */

static unsigned Steps_seen, Steps_failed;

/* Every fifth step fails, with what that step fails with for want of a
   resource. */
static int fail_some_steps(enum native_step step)
{
	if (++Steps_seen % 5)
		return 0;
	Steps_failed++;
	return step == NV_STEP_THREAD ? -EAGAIN : -ENOMEM;
}

/*
 * Views are reset (flushed) often, on a small mapping limit, and some of
 * those resets fail half way: a thread cannot be made, a placeholder or a
 * move cannot be. The faults are retried until the steps succeed; what
 * must hold throughout is that no view keeps an entry umlmem no longer
 * knows about: the pager evicts and reuses frames all the while, and a
 * store through a forgotten entry would land in another page. The model
 * of the guest's bytes says whether one did.
 */
Test(native, flush_fails)
{
	const uint64_t GS = 16 * TU_MiB, NP = GS / PG;
	struct umlmem_host_info in;

	NATIVE_ONLY();
	Rng = 0xf1a5;
	H = mk_host(64 * PG, 0);
	mk_guest(0, GS);
	native_map_limit_override = 600;
	MAP(0);
	Steps_seen = Steps_failed = 0;
	native_fail_hook = fail_some_steps;
	for (int k = 0; k < 20000; k++) {
		uint64_t idx = below(NP / 4), o = below(PG - 8), a = idx * PG + o;

		if (below(3)) {
			uint64_t v = tu_splitmix64(&Rng);

			memcpy(T[0].base + a, &v, 8);
			memcpy(T[0].mem + a, &v, 8);
		} else {
			cr_assert(!memcmp(T[0].base + a, T[0].mem + a, 8),
				  "g0 bytes at 0x%" PRIx64 " differ (op %d)", a, k);
		}
	}
	native_fail_hook = NULL;
	in = hinfo();
	cr_log_info("flush_fails: %" PRIu64 " flushes, %u steps, %u failed", in.native_flushes,
		    Steps_seen, Steps_failed);
	cr_assert_gt(in.native_flushes, 2);
	cr_assert_gt(Steps_failed, 0, "no step failed");
	verify_all();
	native_map_limit_override = 0;
	tu_check(H);
}

/*
 * A swap-in that fails a few times and then succeeds, under a native
 * load: the handler retries it, the load gets the page's byte, and the
 * error counters count the access once, not once per attempt.
 */
Test(native, read_retry_counts_once)
{
	const uint64_t GS = 1 * TU_MiB;
	struct umlmem_stats before, after;
	uint64_t ev = 0;
	volatile uint8_t x;

	NATIVE_ONLY();
	H = mk_host(64 * PG, 0);
	mk_guest(0, GS);
	tu_fill(T[0].mem, 4 * PG, 0x7e7);
	push(0, 0, 4 * PG);
	MAP(0);
	cr_assert_eq(umlmem_reclaim(H, 64, &ev), 0, "%s", umlmem_errmsg());
	cr_assert_eq(gstats(0).swapped_pages, 4, "the pages did not go to swap");
	before = hstats();
	io_inject(host_engine(H), IO_READ, 1, IO_FAULT_EIO, 5);
	x = T[0].base[2 * PG + 17];
	io_inject(host_engine(H), IO_READ, 1, IO_FAULT_NONE, 0);
	after = hstats();
	cr_assert_eq(x, T[0].mem[2 * PG + 17]);
	cr_assert_eq(after.io_errors - before.io_errors, 1,
		     "one access whose read failed 5 times counted %" PRIu64 " I/O errors",
		     after.io_errors - before.io_errors);
	cr_assert_eq(after.checksum_errors, before.checksum_errors);
	verify_all();
	tu_check(H);
}
