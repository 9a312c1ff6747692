/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The swap set and the engine interface on their own: file creation and its
 * errors, slot allocation, hole punching, the cap, striping over files,
 * transfers through io_run (coalesced, partial, failing) and injected
 * faults, and a random churn of references checked against a plain model.
 * Each test works in a fresh directory under /var/tmp.
 *
 * Every test that moves data runs once per engine (ENGINE_TEST makes
 * name_sync, name_uring and name_aio), with its pages in a memfd "frame
 * store" handed to the engine as the core does, so io_uring moves them as
 * registered buffers. An engine that cannot run here is skipped, with the
 * reason. tests/test_engines.c has the tests that only concern the engines.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "swap.h"

static char tdir[64];

/* The test's frame store: a memfd mapping the engine may register, from
   which pages() hands out pages that are never given back. */
#define STORE_PAGES 4096u
static struct {
	char *base;
	size_t used;		/* pages handed out */
} store;

static void store_unmap(void)
{
	if (store.base)
		munmap(store.base, (size_t)STORE_PAGES * SWAP_PAGE);
	store.base = NULL;
	store.used = 0;
}

/* Removes what a test left in its directory (only plain files), then it. */
static void sw_teardown(void)
{
	DIR *d = opendir(tdir);
	struct dirent *de;

	if (d) {
		while ((de = readdir(d))) {
			char p[512];

			if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
				continue;
			snprintf(p, sizeof(p), "%s/%s", tdir, de->d_name);
			unlink(p);
		}
		closedir(d);
	}
	rmdir(tdir);
	store_unmap();
}

static void sw_setup(void)
{
	strcpy(tdir, "/var/tmp/umlmem-swap-test-XXXXXX");
	cr_assert_not_null(mkdtemp(tdir), "mkdtemp: %s", strerror(errno));
}

TestSuite(swap, .init = sw_setup, .fini = sw_teardown, .timeout = 30);

static int under_valgrind(void)
{
	const char *s = getenv("UMLMEM_TEST_SCALE");

	return s && !strcmp(s, "valgrind");
}

static uint64_t rnd_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void fill_page(void *p, uint64_t seed)
{
	uint64_t *w = p;
	unsigned i;

	for (i = 0; i < SWAP_PAGE / 8; i++)
		w[i] = rnd_next(&seed);
}

static uint64_t seed_csum(uint64_t seed)
{
	static uint64_t page[SWAP_PAGE / 8];

	fill_page(page, seed);
	return swap_page_csum(page);
}

static void store_map(void)
{
	int fd;

	if (store.base)
		return;
	fd = memfd_create("test-frames", MFD_CLOEXEC);
	cr_assert_geq(fd, 0, "memfd_create: %s", strerror(errno));
	cr_assert_eq(ftruncate(fd, (off_t)STORE_PAGES * SWAP_PAGE), 0);
	store.base = mmap(NULL, (size_t)STORE_PAGES * SWAP_PAGE, PROT_READ | PROT_WRITE,
			  MAP_SHARED, fd, 0);
	close(fd);
	cr_assert_neq(store.base, MAP_FAILED, "mmap: %s", strerror(errno));
}

/* n zeroed pages of the frame store (they live until the test ends) */
static void *pages(unsigned n)
{
	char *p;

	store_map();
	cr_assert_leq(store.used + n, STORE_PAGES, "the test store is too small");
	p = store.base + store.used * SWAP_PAGE;
	store.used += n;
	memset(p, 0, (size_t)n * SWAP_PAGE);
	return p;
}

/* n zeroed pages outside the store, for free() */
static void *heap_pages(unsigned n)
{
	void *p = aligned_alloc(SWAP_PAGE, (size_t)n * SWAP_PAGE);

	cr_assert_not_null(p);
	memset(p, 0, (size_t)n * SWAP_PAGE);
	return p;
}

static struct swap *sw_open(unsigned nfiles, uint64_t cap)
{
	struct swap *sw = NULL;
	char err[256];
	int rc = swap_open(&sw, tdir, nfiles, cap, err, sizeof(err));

	cr_assert_eq(rc, 0, "swap_open: %d %s", rc, err);
	cr_assert_not_null(sw);
	return sw;
}

static struct io_engine *eng_open(struct swap *sw, enum umlmem_io_engine kind)
{
	struct io_engine *e = NULL;
	char why[256];
	int rc;

	store_map();
	rc = io_engine_create(kind, sw, store.base, (size_t)STORE_PAGES * SWAP_PAGE, &e, why,
			      sizeof(why));
	cr_assert_eq(rc, 0, "io_engine_create(%d): %d %s", (int)kind, rc, why);
	cr_assert_eq(e->kind, kind);
	return e;
}

/* Skips the test, before it allocates anything, when @kind cannot run here. */
static void engine_required(enum umlmem_io_engine kind)
{
	struct io_engine *e = NULL;
	struct swap *sw = NULL;
	char why[256] = "";
	int rc;

	rc = swap_open(&sw, tdir, 1, 0, why, sizeof(why));
	cr_assert_eq(rc, 0, "swap_open: %d %s", rc, why);
	rc = io_engine_create(kind, sw, NULL, 0, &e, why, sizeof(why));
	io_engine_destroy(e);
	swap_close(sw);
	if (rc == -ENOTSUP) {
		sw_teardown();		/* a skipped test does not get its .fini */
		cr_skip_test("this engine cannot run here: %s", why);
	}
	cr_assert_eq(rc, 0, "io_engine_create(%d): %d %s", (int)kind, rc, why);
}

/*
 * ENGINE_TEST(name) { ... } defines name_sync, name_uring and name_aio, each
 * running the body with its engine in `kind`.
 */
#define ENGINE_TEST(name)							\
	static void name##_body(enum umlmem_io_engine kind);			\
	Test(swap, name##_sync) { name##_body(UMLMEM_IO_SYNC); }		\
	Test(swap, name##_uring)						\
	{									\
		engine_required(UMLMEM_IO_URING);				\
		name##_body(UMLMEM_IO_URING);					\
	}									\
	Test(swap, name##_aio)							\
	{									\
		engine_required(UMLMEM_IO_AIO);					\
		name##_body(UMLMEM_IO_AIO);					\
	}									\
	static void name##_body(enum umlmem_io_engine kind)

static void req_fill(struct swap *sw, struct io_req *r, uint64_t slot, void *buf, enum io_op op)
{
	unsigned file;
	uint64_t off;

	swap_where(sw, slot, &file, &off);
	memset(r, 0, sizeof(*r));
	r->buf = buf;
	r->off = off;
	r->len = SWAP_PAGE;
	r->file = (uint16_t)file;
	r->op = op;
	r->res = 12345;
}

/* Moves n pages between slots[] and buf (page i <-> slots[i]); returns failures. */
static unsigned xfer(struct io_engine *e, struct swap *sw, const uint64_t *slots, unsigned n,
		     char *buf, enum io_op op, struct io_req *r)
{
	unsigned i;

	for (i = 0; i < n; i++)
		req_fill(sw, &r[i], slots[i], buf + (size_t)i * SWAP_PAGE, op);
	return io_run(e, r, n);
}

static void sync_files(struct swap *sw)
{
	unsigned i;

	for (i = 0; i < swap_nfiles(sw); i++)
		fdatasync(swap_fd(sw, i));
}

/* ---- opening ----------------------------------------------------------- */

Test(swap, files_unlinked_private)
{
	struct swap *sw = sw_open(3, 0);
	struct dirent *de;
	struct stat st;
	unsigned i, names = 0;
	DIR *d;

	cr_assert_eq(swap_nfiles(sw), 3);
	for (i = 0; i < 3; i++) {
		cr_assert_eq(fstat(swap_fd(sw, i), &st), 0);
		cr_assert(S_ISREG(st.st_mode));
		cr_assert_eq(st.st_mode & 07777, 0600, "mode %o", st.st_mode & 07777);
		cr_assert_eq(st.st_nlink, 0, "a swap file is reachable by name");
		cr_assert(fcntl(swap_fd(sw, i), F_GETFD) & FD_CLOEXEC);
	}
	cr_assert_eq(swap_fd(sw, 3), -1);
	d = opendir(tdir);
	cr_assert_not_null(d);
	while ((de = readdir(d)))
		names += strcmp(de->d_name, ".") && strcmp(de->d_name, "..");
	closedir(d);
	cr_assert_eq(names, 0, "the swap directory is not empty");
	cr_log_info("swap files in %s: O_DIRECT %s", tdir, swap_is_direct(sw) ? "yes" : "no");
	swap_close(sw);
	swap_close(NULL);
}

Test(swap, open_missing_dir)
{
	struct swap *sw = (struct swap *)1;
	char path[128], err[256];
	int rc;

	snprintf(path, sizeof(path), "%s/nope", tdir);
	rc = swap_open(&sw, path, 1, 0, err, sizeof(err));
	cr_assert_eq(rc, -ENOENT, "rc %d", rc);
	cr_assert_null(sw);
	cr_assert_not_null(strstr(err, path), "%s", err);
	cr_assert_not_null(strstr(err, "does not exist"), "%s", err);
}

Test(swap, open_not_a_dir)
{
	struct swap *sw = NULL;
	char path[128], err[256];
	int rc, fd;

	snprintf(path, sizeof(path), "%s/file", tdir);
	fd = open(path, O_CREAT | O_WRONLY, 0600);
	cr_assert_geq(fd, 0);
	close(fd);
	rc = swap_open(&sw, path, 1, 0, err, sizeof(err));
	cr_assert_eq(rc, -ENOTDIR, "rc %d", rc);
	cr_assert_not_null(strstr(err, path), "%s", err);
	cr_assert_not_null(strstr(err, "not a directory"), "%s", err);
}

Test(swap, open_not_writable)
{
	struct swap *sw = NULL;
	char err[256];
	int rc;

	int root = geteuid() == 0;

	/* root ignores modes: drop the effective uid, keeping a way back */
	if (root)
		cr_assert_eq(seteuid(65534), 0);
	else
		cr_assert_eq(chmod(tdir, 0500), 0);
	rc = swap_open(&sw, tdir, 1, 0, err, sizeof(err));
	if (root)
		cr_assert_eq(seteuid(0), 0);
	else
		chmod(tdir, 0700);
	cr_assert_eq(rc, -EACCES, "rc %d %s", rc, err);
	cr_assert_null(sw);
	cr_assert_not_null(strstr(err, tdir), "%s", err);
	cr_assert_not_null(strstr(err, "not writable"), "%s", err);
}

Test(swap, open_bad_args)
{
	struct swap *sw = NULL;
	char err[256];

	cr_assert_eq(swap_open(&sw, tdir, 0, 0, err, sizeof(err)), -EINVAL);
	cr_assert_neq(err[0], 0);
	cr_assert_eq(swap_open(&sw, tdir, SWAP_MAX_FILES + 1, 0, err, sizeof(err)), -EINVAL);
	cr_assert_eq(swap_open(&sw, tdir, 1, 100, err, sizeof(err)), -EINVAL);
	cr_assert_eq(swap_open(&sw, NULL, 1, 0, err, sizeof(err)), -EINVAL);
	cr_assert_eq(swap_open(NULL, tdir, 1, 0, NULL, 0), -EINVAL);
	cr_assert_null(sw);
}

/*
 * Each engine either runs, with its own kind and name, or says why not; AUTO
 * takes io_uring wherever io_uring runs. (tests/test_engines.c takes io_uring
 * and libaio away to see AUTO fall back.)
 */
Test(swap, engine_create)
{
	static const struct {
		enum umlmem_io_engine kind;
		const char *name;
	} eng[] = {
		{ UMLMEM_IO_URING, "io_uring" },
		{ UMLMEM_IO_AIO, "libaio" },
		{ UMLMEM_IO_SYNC, "sync" },
	};
	struct swap *sw = sw_open(1, 0);
	struct io_engine *e = NULL;
	int works[3], rc;
	char why[256];
	unsigned i;

	for (i = 0; i < 3; i++) {
		e = (struct io_engine *)1;
		rc = io_engine_create(eng[i].kind, sw, NULL, 0, &e, why, sizeof(why));
		cr_assert(rc == 0 || rc == -ENOTSUP, "%s: %d %s", eng[i].name, rc, why);
		works[i] = rc == 0;
		if (rc == 0) {
			cr_assert_str_eq(why, "", "%s", eng[i].name);
			cr_assert_eq(e->kind, eng[i].kind);
			cr_assert_str_eq(e->ops->name, eng[i].name);
			io_engine_destroy(e);
		} else {
			cr_assert_null(e);
			cr_assert_neq(why[0], 0, "%s refused without a reason", eng[i].name);
			cr_log_info("%s cannot run here: %s", eng[i].name, why);
		}
	}
	cr_assert(works[2], "the sync engine runs everywhere");

	cr_assert_eq(io_engine_create(UMLMEM_IO_AUTO, sw, NULL, 0, &e, why, sizeof(why)), 0);
	if (works[0]) {
		cr_assert_eq(e->kind, UMLMEM_IO_URING);
		cr_assert_str_eq(why, "");
	} else {
		cr_assert_eq(e->kind, works[1] ? UMLMEM_IO_AIO : UMLMEM_IO_SYNC);
		cr_assert_not_null(strstr(why, "io_uring skipped: "), "%s", why);
	}
	io_engine_destroy(e);

	e = (struct io_engine *)1;
	cr_assert_eq(io_engine_create((enum umlmem_io_engine)42, sw, NULL, 0, &e, why, sizeof(why)),
		     -EINVAL);
	cr_assert_null(e);
	cr_assert_eq(io_engine_create(UMLMEM_IO_SYNC, NULL, NULL, 0, &e, why, sizeof(why)), -EINVAL);
	io_engine_destroy(NULL);
	swap_close(sw);
}

/* ---- slots ------------------------------------------------------------- */

Test(swap, alloc_contiguous)
{
	struct swap *sw = sw_open(1, 0);
	uint64_t s[70], off, prev = 0;
	struct swap_info info;
	unsigned i, file;
	char err[256];

	cr_assert_eq(swap_alloc(sw, 10, s), 10);
	for (i = 0; i < 10; i++) {
		cr_assert_eq(s[i], i);
		cr_assert_eq(swap_refs(sw, s[i]), 1);
		swap_where(sw, s[i], &file, &off);
		cr_assert_eq(file, 0);
		if (i)
			cr_assert_eq(off, prev + SWAP_PAGE);
		prev = off;
	}
	/* the rest of cluster 0, then cluster 1 */
	cr_assert_eq(swap_alloc(sw, 60, s), 60);
	for (i = 0; i < 60; i++)
		cr_assert_eq(s[i], 10 + i);
	swap_info(sw, &info);
	cr_assert_eq(info.slots_used, 70);
	cr_assert_eq(info.clusters, 2);
	cr_assert_eq(info.slots_cap, 0);
	cr_assert_eq(swap_alloc(sw, 0, s), 0);
	cr_assert_eq(swap_check(sw, err, sizeof(err)), 0, "%s", err);
	swap_close(sw);
}

Test(swap, many_clusters)
{
	struct swap *sw = sw_open(1, 0);
	unsigned n = 200 * SWAP_CLUSTER_PAGES, i;
	uint64_t *s = malloc(n * sizeof(*s));
	struct swap_info info;
	char err[256];

	cr_assert_not_null(s);
	cr_assert_eq(swap_alloc(sw, n, s), n);
	for (i = 0; i < n; i++)
		cr_assert_eq(s[i], i);
	swap_info(sw, &info);
	cr_assert_eq(info.clusters, 200);
	cr_assert_eq(info.slots_used, n);
	/* free every other cluster; they come back before a new one is made */
	for (i = 0; i < n; i++)
		if ((i / SWAP_CLUSTER_PAGES) % 2)
			swap_unref(sw, i, 1);
	swap_info(sw, &info);
	cr_assert_eq(info.punches, 100);
	cr_assert_eq(swap_alloc(sw, n / 2, s), n / 2);
	for (i = 0; i < n / 2; i++)
		cr_assert_eq((s[i] / SWAP_CLUSTER_PAGES) % 2, 1);
	swap_info(sw, &info);
	cr_assert_eq(info.clusters, 200);
	cr_assert_eq(swap_check(sw, err, sizeof(err)), 0, "%s", err);
	free(s);
	swap_close(sw);
}

ENGINE_TEST(write_read_checksums)
{
	struct swap *sw = sw_open(1, 0);
	struct io_engine *e = eng_open(sw, kind);
	enum { N = 8 };
	char *wbuf = pages(N), *rbuf = pages(N);
	struct io_req r[N];
	uint64_t s[N];
	unsigned i;

	cr_assert_eq(swap_alloc(sw, N, s), N);
	for (i = 0; i < N; i++) {
		fill_page(wbuf + i * SWAP_PAGE, 100 + i);
		swap_set_csum(sw, s[i], swap_page_csum(wbuf + i * SWAP_PAGE));
	}
	cr_assert_eq(xfer(e, sw, s, N, wbuf, IO_WRITE, r), 0);
	for (i = 0; i < N; i++)
		cr_assert_eq(r[i].res, 0);
	cr_assert_eq(xfer(e, sw, s, N, rbuf, IO_READ, r), 0);
	for (i = 0; i < N; i++) {
		cr_assert_eq(r[i].res, 0);
		cr_assert_eq(swap_page_csum(rbuf + i * SWAP_PAGE), swap_csum(sw, s[i]));
	}
	cr_assert_eq(memcmp(wbuf, rbuf, N * SWAP_PAGE), 0);
	cr_assert_eq(e->seen[IO_WRITE], N);
	cr_assert_eq(e->seen[IO_READ], N);
	io_engine_destroy(e);
	swap_close(sw);
}

/* Out-of-order batches over several files, and a run longer than IOV_MAX. */
ENGINE_TEST(coalesce_and_order)
{
	struct swap *sw = sw_open(2, 0);
	struct io_engine *e = eng_open(sw, kind);
	unsigned n = 1100, i;
	char *wbuf = pages(n), *rbuf = pages(n);
	struct io_req *r = calloc(n, sizeof(*r));
	uint64_t *s = malloc(n * sizeof(*s)), *perm = malloc(n * sizeof(*perm));
	uint64_t seed = 7;

	cr_assert(r && s && perm);
	cr_assert_eq(swap_alloc(sw, n, s), n);
	for (i = 0; i < n; i++) {
		fill_page(wbuf + (size_t)i * SWAP_PAGE, i);
		perm[i] = i;
	}
	for (i = n - 1; i > 0; i--) {
		unsigned j = rnd_next(&seed) % (i + 1);
		uint64_t t = perm[i];

		perm[i] = perm[j];
		perm[j] = t;
	}
	/* written in a shuffled order, read back in slot order */
	for (i = 0; i < n; i++)
		req_fill(sw, &r[i], s[perm[i]], wbuf + perm[i] * SWAP_PAGE, IO_WRITE);
	cr_assert_eq(io_run(e, r, n), 0);
	cr_assert_eq(xfer(e, sw, s, n, rbuf, IO_READ, r), 0);
	cr_assert_eq(memcmp(wbuf, rbuf, (size_t)n * SWAP_PAGE), 0);

	/* one file: a single run of 1100 adjacent pages */
	free(s);
	io_engine_destroy(e);
	swap_close(sw);
	sw = sw_open(1, 0);
	e = eng_open(sw, kind);
	s = malloc(n * sizeof(*s));
	cr_assert_eq(swap_alloc(sw, n, s), n);
	cr_assert_eq(xfer(e, sw, s, n, wbuf, IO_WRITE, r), 0);
	memset(rbuf, 0, (size_t)n * SWAP_PAGE);
	cr_assert_eq(xfer(e, sw, s, n, rbuf, IO_READ, r), 0);
	cr_assert_eq(memcmp(wbuf, rbuf, (size_t)n * SWAP_PAGE), 0);

	free(s);
	free(perm);
	free(r);
	io_engine_destroy(e);
	swap_close(sw);
}

/* A read past the end of the file is an error for that request only. */
ENGINE_TEST(read_past_eof)
{
	struct swap *sw = sw_open(1, 0);
	struct io_engine *e = eng_open(sw, kind);
	char *buf = pages(3);
	struct io_req r[3];
	uint64_t s[3];

	cr_assert_eq(swap_alloc(sw, 3, s), 3);
	fill_page(buf, 1);
	cr_assert_eq(xfer(e, sw, s, 1, buf, IO_WRITE, r), 0);
	cr_assert_eq(xfer(e, sw, s, 3, buf, IO_READ, r), 2);
	cr_assert_eq(r[0].res, 0);
	cr_assert_eq(r[1].res, -EIO);
	cr_assert_eq(r[2].res, -EIO);
	io_engine_destroy(e);
	swap_close(sw);
}

ENGINE_TEST(punch_frees_disk)
{
	struct swap *sw = sw_open(1, 0);
	struct io_engine *e = eng_open(sw, kind);
	enum { N = SWAP_CLUSTER_PAGES + 1 };
	char *buf = pages(N);
	struct swap_info before, after;
	struct io_req r[N];
	uint64_t s[N];
	unsigned i;
	char err[256];

	cr_assert_eq(swap_alloc(sw, N, s), N);
	for (i = 0; i < N; i++)
		fill_page(buf + i * SWAP_PAGE, i + 1);
	cr_assert_eq(xfer(e, sw, s, N, buf, IO_WRITE, r), 0);
	sync_files(sw);
	swap_info(sw, &before);
	cr_assert_geq(before.disk_bytes, (uint64_t)N * SWAP_PAGE);
	cr_assert_eq(before.punches, 0);

	for (i = 0; i < SWAP_CLUSTER_PAGES; i++)
		swap_unref(sw, s[i], 1);
	swap_info(sw, &after);
	cr_assert_eq(after.punches, 1);
	cr_assert_eq(after.slots_used, 1);
	cr_assert_leq(after.disk_bytes + SWAP_CLUSTER_BYTES, before.disk_bytes,
		      "disk bytes %llu -> %llu", (unsigned long long)before.disk_bytes,
		      (unsigned long long)after.disk_bytes);
	/* the survivor is intact, the punched range reads as zeros */
	cr_assert_eq(xfer(e, sw, &s[N - 1], 1, buf, IO_READ, r), 0);
	cr_assert_eq(swap_page_csum(buf), seed_csum(N));
	/* the emptied cluster is reused before a new one is made */
	cr_assert_eq(swap_alloc(sw, SWAP_CLUSTER_PAGES, s), SWAP_CLUSTER_PAGES);
	for (i = 0; i < SWAP_CLUSTER_PAGES - 1; i++)
		cr_assert_eq(s[i], N + i, "the current cluster comes first");
	cr_assert_eq(s[SWAP_CLUSTER_PAGES - 1], 0);
	swap_info(sw, &after);
	cr_assert_eq(after.clusters, 2);
	cr_assert_eq(swap_check(sw, err, sizeof(err)), 0, "%s", err);
	io_engine_destroy(e);
	swap_close(sw);
}

/* The current cluster, emptied, starts over from its first page. */
Test(swap, current_cluster_resets)
{
	struct swap *sw = sw_open(1, 0);
	struct swap_info info;
	uint64_t s[5];
	unsigned i;

	cr_assert_eq(swap_alloc(sw, 5, s), 5);
	for (i = 0; i < 5; i++)
		swap_unref(sw, s[i], 1);
	swap_info(sw, &info);
	cr_assert_eq(info.punches, 1);
	cr_assert_eq(swap_alloc(sw, 3, s), 3);
	cr_assert_eq(s[0], 0);
	cr_assert_eq(s[2], 2);
	swap_info(sw, &info);
	cr_assert_eq(info.clusters, 1);
	cr_assert_eq(swap_check(sw, NULL, 0), 0);
	swap_close(sw);
}

Test(swap, cap_reuses_holes)
{
	/* 100 pages (the odd bytes round down): cluster 1 is partly usable */
	struct swap *sw = sw_open(1, 100 * SWAP_PAGE + 123);
	struct swap_info info;
	uint64_t s[128];
	unsigned i;
	char err[256];

	cr_assert_eq(swap_alloc(sw, 128, s), 100);
	for (i = 0; i < 100; i++)
		cr_assert_eq(s[i], i);
	cr_assert_eq(swap_alloc(sw, 1, s), 0);
	swap_info(sw, &info);
	cr_assert_eq(info.slots_cap, 100);
	cr_assert_eq(info.slots_used, 100);
	cr_assert_eq(info.clusters, 2);

	swap_unref(sw, 70, 1);
	cr_assert_eq(swap_alloc(sw, 5, s), 1);
	cr_assert_eq(s[0], 70);
	cr_assert_eq(swap_alloc(sw, 5, s), 0);

	swap_unref(sw, 3, 1);
	swap_unref(sw, 90, 1);
	cr_assert_eq(swap_alloc(sw, 5, s), 2);
	cr_assert((s[0] == 3 && s[1] == 90) || (s[0] == 90 && s[1] == 3));

	/* a whole cluster freed at the cap comes back in order */
	for (i = 0; i < SWAP_CLUSTER_PAGES; i++)
		swap_unref(sw, i, 1);
	cr_assert_eq(swap_alloc(sw, 128, s), SWAP_CLUSTER_PAGES);
	for (i = 0; i < SWAP_CLUSTER_PAGES; i++)
		cr_assert_eq(s[i], i);
	cr_assert_eq(swap_refs(sw, 100), 0);
	cr_assert_eq(swap_check(sw, err, sizeof(err)), 0, "%s", err);
	swap_close(sw);
}

ENGINE_TEST(stripes_over_files)
{
	struct swap *sw = sw_open(3, 0);
	struct io_engine *e = eng_open(sw, kind);
	enum { NC = 6 };
	uint64_t s[NC * SWAP_CLUSTER_PAGES], one[NC], off;
	char *buf = pages(NC), *rbuf = pages(NC);
	struct io_req r[NC];
	struct stat st;
	unsigned c, file;

	cr_assert_eq(swap_alloc(sw, NC * SWAP_CLUSTER_PAGES, s), NC * SWAP_CLUSTER_PAGES);
	for (c = 0; c < NC; c++) {
		one[c] = c * SWAP_CLUSTER_PAGES + 5;
		swap_where(sw, one[c], &file, &off);
		cr_assert_eq(file, c % 3);
		cr_assert_eq(off, (c / 3) * SWAP_CLUSTER_BYTES + 5 * SWAP_PAGE);
		fill_page(buf + c * SWAP_PAGE, 1000 + c);
	}
	cr_assert_eq(xfer(e, sw, one, NC, buf, IO_WRITE, r), 0);
	for (file = 0; file < 3; file++) {
		cr_assert_eq(fstat(swap_fd(sw, file), &st), 0);
		cr_assert_eq((uint64_t)st.st_size, SWAP_CLUSTER_BYTES + 6 * SWAP_PAGE);
	}
	cr_assert_eq(xfer(e, sw, one, NC, rbuf, IO_READ, r), 0);
	cr_assert_eq(memcmp(buf, rbuf, NC * SWAP_PAGE), 0);
	io_engine_destroy(e);
	swap_close(sw);
}

/* ---- injected faults ---------------------------------------------------- */

ENGINE_TEST(fault_eio_nth)
{
	struct swap *sw = sw_open(1, 0);
	struct io_engine *e = eng_open(sw, kind);
	enum { N = 5 };
	char *buf = pages(N), *rbuf = pages(N);
	struct io_req r[N];
	uint64_t s[N];
	unsigned i;

	cr_assert_eq(swap_alloc(sw, N, s), N);
	for (i = 0; i < N; i++)
		fill_page(buf + i * SWAP_PAGE, 50 + i);
	io_inject(e, IO_WRITE, 3, IO_FAULT_EIO, 1);
	cr_assert_eq(xfer(e, sw, s, N, buf, IO_WRITE, r), 1);
	for (i = 0; i < N; i++)
		cr_assert_eq(r[i].res, i == 2 ? -EIO : 0, "request %u: %d", i, r[i].res);
	/* reads are not affected; the failed page never reached the file */
	cr_assert_eq(xfer(e, sw, s, N, rbuf, IO_READ, r), 0);
	for (i = 0; i < N; i++)
		cr_assert_eq(!memcmp(buf + i * SWAP_PAGE, rbuf + i * SWAP_PAGE, SWAP_PAGE), i != 2);
	/* the fault was one-shot */
	cr_assert_eq(xfer(e, sw, s, N, buf, IO_WRITE, r), 0);

	/* nth counts across batches, count extends it */
	io_inject(e, IO_WRITE, 2, IO_FAULT_EIO, 3);
	cr_assert_eq(xfer(e, sw, s, 1, buf, IO_WRITE, r), 0);
	cr_assert_eq(xfer(e, sw, s, N, buf, IO_WRITE, r), 3);
	cr_assert(r[0].res == -EIO && r[1].res == -EIO && r[2].res == -EIO);
	cr_assert(r[3].res == 0 && r[4].res == 0);

	/* a read fault leaves the buffer alone */
	memset(rbuf, 0xa5, SWAP_PAGE);
	io_inject(e, IO_READ, 1, IO_FAULT_EIO, 1);
	cr_assert_eq(xfer(e, sw, s, 1, rbuf, IO_READ, r), 1);
	cr_assert_eq(r[0].res, -EIO);
	cr_assert_eq((unsigned char)rbuf[100], 0xa5);

	/* disarming */
	io_inject(e, IO_WRITE, 1, IO_FAULT_EIO, 10);
	io_inject(e, IO_WRITE, 1, IO_FAULT_NONE, 0);
	cr_assert_eq(xfer(e, sw, s, N, buf, IO_WRITE, r), 0);
	io_engine_destroy(e);
	swap_close(sw);
}

ENGINE_TEST(fault_short_tears)
{
	struct swap *sw = sw_open(1, 0);
	struct io_engine *e = eng_open(sw, kind);
	char *a = pages(1), *b = pages(1), *rd = pages(1);
	uint64_t s[1], ca, cb;
	struct io_req r[1];

	cr_assert_eq(swap_alloc(sw, 1, s), 1);
	fill_page(a, 1);
	fill_page(b, 2);
	ca = swap_page_csum(a);
	cb = swap_page_csum(b);
	cr_assert_eq(xfer(e, sw, s, 1, a, IO_WRITE, r), 0);
	swap_set_csum(sw, s[0], ca);

	io_inject(e, IO_WRITE, 1, IO_FAULT_SHORT, 1);
	cr_assert_eq(xfer(e, sw, s, 1, b, IO_WRITE, r), 1);
	cr_assert_eq(r[0].res, -EIO);
	cr_assert_eq(xfer(e, sw, s, 1, rd, IO_READ, r), 0);
	cr_assert_neq(swap_page_csum(rd), swap_csum(sw, s[0]));
	cr_assert_neq(swap_page_csum(rd), cb);
	cr_assert_eq(memcmp(rd, b, SWAP_PAGE / 2), 0, "the first half did not reach the disk");
	cr_assert_eq(memcmp(rd + SWAP_PAGE / 2, a + SWAP_PAGE / 2, SWAP_PAGE / 2), 0);

	/* a short read leaves the rest of the buffer as it was */
	memset(rd, 0, SWAP_PAGE);
	io_inject(e, IO_READ, 1, IO_FAULT_SHORT, 1);
	cr_assert_eq(xfer(e, sw, s, 1, rd, IO_READ, r), 1);
	cr_assert_eq(r[0].res, -EIO);
	cr_assert_eq(memcmp(rd, b, SWAP_PAGE / 2), 0);
	cr_assert_eq(rd[SWAP_PAGE - 1], 0);
	io_engine_destroy(e);
	swap_close(sw);
}

ENGINE_TEST(fault_enospc)
{
	struct swap *sw = sw_open(1, 0);
	struct io_engine *e = eng_open(sw, kind);
	enum { N = 4 };
	char *buf = pages(N);
	struct io_req r[N];
	uint64_t s[N];

	cr_assert_eq(swap_alloc(sw, N, s), N);
	io_inject(e, IO_WRITE, 2, IO_FAULT_ENOSPC, 2);
	cr_assert_eq(xfer(e, sw, s, N, buf, IO_WRITE, r), 2);
	cr_assert_eq(r[0].res, 0);
	cr_assert_eq(r[1].res, -ENOSPC);
	cr_assert_eq(r[2].res, -ENOSPC);
	cr_assert_eq(r[3].res, 0);
	cr_assert_eq(e->seen[IO_WRITE], N);
	io_engine_destroy(e);
	swap_close(sw);
}

/* ---- concurrency and consistency ---------------------------------------- */

struct thr_arg {
	struct swap *sw;
	struct io_engine *e;
	unsigned id;
	char *w, *rd;		/* N pages each, this thread's own */
	int bad;
};

enum { THR_PAGES = 16, THR_ROUNDS = 20 };

static void *io_thread(void *p)
{
	struct thr_arg *a = p;
	enum { N = THR_PAGES };
	struct io_req r[N];
	uint64_t s[N];
	unsigned i, k;

	if (swap_alloc(a->sw, N, s) != N) {
		a->bad = 1;
		return NULL;
	}
	for (k = 0; k < THR_ROUNDS && !a->bad; k++) {
		for (i = 0; i < N; i++)
			fill_page(a->w + i * SWAP_PAGE, a->id * 100000 + k * 100 + i);
		for (i = 0; i < N; i++)
			req_fill(a->sw, &r[i], s[i], a->w + i * SWAP_PAGE, IO_WRITE);
		if (io_run(a->e, r, N))
			a->bad = 2;
		for (i = 0; i < N; i++)
			req_fill(a->sw, &r[i], s[i], a->rd + i * SWAP_PAGE, IO_READ);
		if (io_run(a->e, r, N) || memcmp(a->w, a->rd, N * SWAP_PAGE))
			a->bad = 3;
	}
	for (i = 0; i < N; i++)
		swap_unref(a->sw, s[i], 1);
	return NULL;
}

/* Four threads with their own pages in flight at once on one engine; odd
   threads read into pages outside the frame store. */
ENGINE_TEST(threads_share_engine)
{
	struct swap *sw = sw_open(2, 0);
	struct io_engine *e = eng_open(sw, kind);
	enum { T = 4 };
	struct thr_arg a[T];
	pthread_t t[T];
	struct swap_info info;
	unsigned i;
	char err[256];

	for (i = 0; i < T; i++)
		a[i] = (struct thr_arg){ .sw = sw, .e = e, .id = i, .w = pages(THR_PAGES),
					 .rd = i % 2 ? heap_pages(THR_PAGES) : pages(THR_PAGES) };
	for (i = 0; i < T; i++)
		cr_assert_eq(pthread_create(&t[i], NULL, io_thread, &a[i]), 0);
	for (i = 0; i < T; i++)
		pthread_join(t[i], NULL);
	for (i = 0; i < T; i++) {
		cr_assert_eq(a[i].bad, 0, "thread %u failed (%d)", i, a[i].bad);
		if (i % 2)
			free(a[i].rd);
	}
	swap_info(sw, &info);
	cr_assert_eq(info.slots_used, 0);
	cr_assert_eq(swap_check(sw, err, sizeof(err)), 0, "%s", err);
	io_engine_destroy(e);
	swap_close(sw);
}

Test(swap, churn_matches_model)
{
	enum { CAP = 300 };
	struct swap *sw = sw_open(2, CAP * SWAP_PAGE);
	unsigned iters = under_valgrind() ? 4000 : 40000, it, i, k, got, live = 0, want;
	uint32_t model[CAP] = { 0 };
	struct swap_info info;
	uint64_t seed = 42, s[8];
	char err[256];

	for (it = 0; it < iters; it++) {
		uint64_t x = rnd_next(&seed);
		uint64_t slot = (x >> 8) % CAP;
		/* alternate filling and draining so that clusters empty out */
		int drain = (it / 1500) % 2;

		switch (x % 8) {
		case 1:
		case 2:
		case 3:
			if (drain)
				goto unref;
			/* fall through */
		case 0:
			k = 1 + (x >> 40) % 8;
			got = swap_alloc(sw, k, s);
			want = k < CAP - live ? k : CAP - live;
			cr_assert_eq(got, want, "iteration %u: got %u of %u with %u live",
				     it, got, k, live);
			for (i = 0; i < got; i++) {
				cr_assert_lt(s[i], CAP);
				cr_assert_eq(model[s[i]], 0, "slot %llu handed out twice",
					     (unsigned long long)s[i]);
				cr_assert_eq(swap_csum(sw, s[i]), 0);
				model[s[i]] = 1;
				swap_set_csum(sw, s[i], s[i] + 1);
				live++;
			}
			break;
		case 4:
			if (!model[slot])
				break;
			k = 1 + (x >> 40) % 3;
			swap_ref(sw, slot, k);
			model[slot] += k;
			break;
		default:
unref:
			/* look a little for a live slot so that frees keep up */
			for (i = 0; i < 16 && !model[slot]; i++)
				slot = (slot + 37) % CAP;
			if (!model[slot])
				break;
			k = drain ? model[slot] : 1 + (x >> 40) % model[slot];
			swap_unref(sw, slot, k);
			model[slot] -= k;
			live -= !model[slot];
			break;
		}
		if (it % 211 == 0 || it == iters - 1) {
			cr_assert_eq(swap_check(sw, err, sizeof(err)), 0, "iteration %u: %s", it, err);
			for (i = 0; i < CAP; i++) {
				cr_assert_eq(swap_refs(sw, i), model[i], "slot %u", i);
				cr_assert_eq(swap_csum(sw, i), model[i] ? i + 1 : 0, "slot %u", i);
			}
			swap_info(sw, &info);
			cr_assert_eq(info.slots_used, live);
		}
	}
	swap_info(sw, &info);
	cr_log_info("churn: %u live, %llu clusters, %llu punches", live,
		    (unsigned long long)info.clusters, (unsigned long long)info.punches);
	cr_assert_gt(info.punches, 0);
	swap_close(sw);
}

Test(swap, misuse_is_refused_and_reported)
{
	struct swap *sw = sw_open(1, 0);
	struct swap_info info;
	uint64_t s[2];
	char err[256];

	/* debug builds name each refused call on stderr; keep the log clean */
	cr_redirect_stderr();
	cr_assert_eq(swap_alloc(sw, 2, s), 2);
	swap_unref(sw, s[0], 1);
	cr_assert_eq(swap_check(sw, err, sizeof(err)), 0, "%s", err);
	swap_unref(sw, s[0], 1);		/* free slot */
	swap_ref(sw, s[0], 1);			/* free slot */
	swap_unref(sw, s[1], 5);		/* more than it has */
	swap_unref(sw, 1ull << 40, 1);		/* never handed out */
	swap_ref(sw, SLOT_NONE, 1);
	swap_set_csum(sw, 999, 1);
	cr_assert_eq(swap_refs(sw, SLOT_NONE), 0);
	cr_assert_eq(swap_csum(sw, 999), 0);
	cr_assert_eq(swap_refs(sw, s[0]), 0);
	cr_assert_eq(swap_refs(sw, s[1]), 1);
	swap_info(sw, &info);
	cr_assert_eq(info.slots_used, 1);
	cr_assert_eq(swap_check(sw, err, sizeof(err)), -EUCLEAN);
	cr_assert_not_null(strstr(err, "free slot"), "%s", err);
	swap_close(sw);
}

/* ---- punching while others allocate --------------------------------------- */

/* swap_punch_pending() stops, after it took the clusters off the punch
   list, until the test lets it go. */
static struct {
	sem_t taken, go;
} punch_gate;

static void punch_gate_hook(struct swap *sw)
{
	(void)sw;
	sem_post(&punch_gate.taken);
	sem_wait(&punch_gate.go);
}

static void *punch_thread(void *arg)
{
	swap_punch_pending(arg);
	return NULL;
}

struct alloc_arg {
	struct swap *sw;
	unsigned got;
	uint64_t slot;
};

static void *alloc_thread(void *arg)
{
	struct alloc_arg *a = arg;

	a->got = swap_alloc(a->sw, 1, &a->slot);
	return NULL;
}

/*
 * At the cap, with the only free cluster being punched by another thread:
 * the space comes back in a moment, so an allocation waits for it rather
 * than reporting the set full.
 */
Test(swap, alloc_at_cap_waits_for_punch_in_progress)
{
	struct swap *sw = sw_open(1, 2 * SWAP_CLUSTER_BYTES);
	uint64_t s[2 * SWAP_CLUSTER_PAGES];
	struct alloc_arg a = { .sw = sw };
	pthread_t pt, at;
	char err[256];
	unsigned i;

	cr_assert_eq(swap_alloc(sw, 2 * SWAP_CLUSTER_PAGES, s), 2 * SWAP_CLUSTER_PAGES);
	for (i = 0; i < SWAP_CLUSTER_PAGES; i++)
		swap_unref(sw, s[i], 1);
	sem_init(&punch_gate.taken, 0, 0);
	sem_init(&punch_gate.go, 0, 0);
	swap_punch_hook = punch_gate_hook;
	cr_assert_eq(pthread_create(&pt, NULL, punch_thread, sw), 0);
	sem_wait(&punch_gate.taken);
	cr_assert_eq(pthread_create(&at, NULL, alloc_thread, &a), 0);
	usleep(50 * 1000);
	sem_post(&punch_gate.go);
	pthread_join(pt, NULL);
	pthread_join(at, NULL);
	swap_punch_hook = NULL;
	cr_assert_eq(a.got, 1, "an allocation during a punch found the set full");
	cr_assert_lt(a.slot, SWAP_CLUSTER_PAGES, "slot %llu is not in the punched cluster",
		     (unsigned long long)a.slot);
	cr_assert_eq(swap_check(sw, err, sizeof(err)), 0, "%s", err);
	swap_close(sw);
}

/*
 * Clusters are created (and the cluster array grown) while another thread
 * punches: it must punch exactly the clusters it took, whatever happened to
 * the array meanwhile. The model: which slots are live, and their content
 * on disk; a punched live cluster reads back as zeros.
 */
static void grow_hook(struct swap *sw)
{
	uint64_t s[20 * SWAP_CLUSTER_PAGES];

	/* 20 new clusters: the array of 16 pointers grows at least once */
	cr_assert_eq(swap_alloc(sw, 20 * SWAP_CLUSTER_PAGES, s), 20 * SWAP_CLUSTER_PAGES);
}

Test(swap, punch_while_clusters_grow)
{
	struct swap *sw = sw_open(1, 0);
	uint64_t s[16 * SWAP_CLUSTER_PAGES];
	struct swap_info info;
	char err[256];
	unsigned i;

	cr_assert_eq(swap_alloc(sw, 16 * SWAP_CLUSTER_PAGES, s), 16 * SWAP_CLUSTER_PAGES);
	/* clusters 0 and 1 go on the punch list */
	for (i = 0; i < 2 * SWAP_CLUSTER_PAGES; i++)
		swap_unref(sw, s[i], 1);
	swap_punch_hook = grow_hook;
	swap_punch_pending(sw);
	swap_punch_hook = NULL;
	swap_info(sw, &info);
	cr_assert_eq(info.clusters, 36);
	cr_assert_eq(info.punches, 2);
	cr_assert_eq(info.slots_used, 34 * SWAP_CLUSTER_PAGES);
	cr_assert_eq(swap_check(sw, err, sizeof(err)), 0, "%s", err);
	swap_close(sw);
}
