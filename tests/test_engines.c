/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The I/O engines on their own: what tests/test_swap.c does not reach.
 * Batches several times the ring depth mixing frames of the registered store
 * with pages outside it; short transfers, continued and then reported; one
 * thread's blocked I/O not holding up another's (the pool of rings and
 * contexts); many threads on one engine; a store larger than one registered
 * buffer; io_uring without locked memory; AUTO falling back when io_uring,
 * libaio or O_DIRECT are taken away; and a measurement of the disk.
 *
 * Tests named _sync, _uring, _aio run once per engine (ENGINE_TEST); an
 * engine that cannot run here is skipped with the reason. Each test works
 * in a fresh directory under /var/tmp and runs in its own process, which is
 * what lets some of them drop a capability or install a seccomp filter.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "swap.h"

static char tdir[64];

/* The test's frame store (a memfd mapping, as the core makes one). */
static struct {
	char *base;
	size_t len;
	size_t used;
	int fd;
} store = { .fd = -1 };

static void store_unmap(void)
{
	if (store.base)
		munmap(store.base, store.len);
	if (store.fd >= 0)
		close(store.fd);
	store.base = NULL;
	store.fd = -1;
	store.len = store.used = 0;
}

static void en_teardown(void)
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

static void en_setup(void)
{
	strcpy(tdir, "/var/tmp/umlmem-engines-test-XXXXXX");
	cr_assert_not_null(mkdtemp(tdir), "mkdtemp: %s", strerror(errno));
}

TestSuite(engines, .init = en_setup, .fini = en_teardown, .timeout = 30);

/* A skipped test does not get its .fini: clean up first. */
#define en_skip(...)					\
	do {						\
		en_teardown();				\
		cr_skip_test(__VA_ARGS__);		\
	} while (0)

static int under_valgrind(void)
{
	const char *s = getenv("UMLMEM_TEST_SCALE");

	return s && !strcmp(s, "valgrind");
}

static const char *kind_name(enum umlmem_io_engine kind)
{
	switch (kind) {
	case UMLMEM_IO_URING:	return "io_uring";
	case UMLMEM_IO_AIO:	return "libaio";
	case UMLMEM_IO_SYNC:	return "sync";
	default:		return "auto";
	}
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

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Maps a store of @npages (once per test). */
static void store_map(size_t npages)
{
	cr_assert_null(store.base, "one store per test");
	store.len = npages * SWAP_PAGE;
	store.fd = memfd_create("test-frames", MFD_CLOEXEC);
	cr_assert_geq(store.fd, 0, "memfd_create: %s", strerror(errno));
	cr_assert_eq(ftruncate(store.fd, (off_t)store.len), 0);
	store.base = mmap(NULL, store.len, PROT_READ | PROT_WRITE, MAP_SHARED, store.fd, 0);
	cr_assert_neq(store.base, MAP_FAILED, "mmap %zu bytes: %s", store.len, strerror(errno));
}

/* @n zeroed frames of the store; they live until the test ends. */
static char *frames(unsigned n)
{
	char *p;

	if (!store.base)
		store_map(4096);
	cr_assert_leq(store.used + (size_t)n * SWAP_PAGE, store.len, "the test store is too small");
	p = store.base + store.used;
	store.used += (size_t)n * SWAP_PAGE;
	memset(p, 0, (size_t)n * SWAP_PAGE);
	return p;
}

/* @n zeroed pages outside the store, for free(). */
static char *heap_pages(unsigned n)
{
	char *p = aligned_alloc(SWAP_PAGE, (size_t)n * SWAP_PAGE);

	cr_assert_not_null(p);
	memset(p, 0, (size_t)n * SWAP_PAGE);
	return p;
}

static struct swap *sw_open(unsigned nfiles)
{
	struct swap *sw = NULL;
	char err[256];
	int rc = swap_open(&sw, tdir, nfiles, 0, err, sizeof(err));

	cr_assert_eq(rc, 0, "swap_open: %d %s", rc, err);
	return sw;
}

static struct io_engine *eng_open(struct swap *sw, enum umlmem_io_engine kind)
{
	struct io_engine *e = NULL;
	char why[256];
	int rc;

	if (!store.base)
		store_map(4096);
	rc = io_engine_create(kind, sw, store.base, store.len, &e, why, sizeof(why));
	cr_assert_eq(rc, 0, "io_engine_create(%s): %d %s", kind_name(kind), rc, why);
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
	if (rc == -ENOTSUP)
		en_skip("%s cannot run here: %s", kind_name(kind), why);
	cr_assert_eq(rc, 0, "io_engine_create(%s): %d %s", kind_name(kind), rc, why);
}

#define ENGINE_TEST(name)							\
	static void name##_body(enum umlmem_io_engine kind);			\
	Test(engines, name##_sync) { name##_body(UMLMEM_IO_SYNC); }		\
	Test(engines, name##_uring)						\
	{									\
		engine_required(UMLMEM_IO_URING);				\
		name##_body(UMLMEM_IO_URING);					\
	}									\
	Test(engines, name##_aio)						\
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

static void shuffle(unsigned *v, unsigned n, uint64_t *seed)
{
	unsigned i;

	for (i = n; i > 1; i--) {
		unsigned j = rnd_next(seed) % i, t = v[i - 1];

		v[i - 1] = v[j];
		v[j] = t;
	}
}

/* ---- batches ----------------------------------------------------------- */

/*
 * 700 pages over three files in shuffled order (several times the ring
 * depth), the buffers taking turns between frames of the store, pages
 * outside it and one page on the stack: written, then read back with the
 * kinds of buffer swapped round, and compared.
 */
ENGINE_TEST(mixed_buffers)
{
	enum { N = 700 };
	struct swap *sw = sw_open(3);
	struct io_engine *e = eng_open(sw, kind);
	char *fr = frames(N), *hp = heap_pages(N), *src, *dst;
	char stack_page[SWAP_PAGE] __attribute__((aligned(4096)));
	struct io_req *r = calloc(N, sizeof(*r));
	uint64_t *s = calloc(N, sizeof(*s)), seed = 99;
	unsigned *order = calloc(N, sizeof(*order)), i, k, sp = N / 2;
	char **buf = calloc(N, sizeof(*buf));

	cr_assert(r && s && order && buf);
	cr_assert_eq(swap_alloc(sw, N, s), N);
	for (i = 0; i < N; i++)
		order[i] = i;

	/* buffers for the write: page i of the store, the heap or the stack */
	for (i = 0; i < N; i++) {
		buf[i] = i == sp ? stack_page : i % 2 ? hp + (size_t)i * SWAP_PAGE
						      : fr + (size_t)i * SWAP_PAGE;
		fill_page(buf[i], 7000 + i);
	}
	shuffle(order, N, &seed);
	for (k = 0; k < N; k++)
		req_fill(sw, &r[k], s[order[k]], buf[order[k]], IO_WRITE);
	cr_assert_eq(io_run(e, r, N), 0);
	for (k = 0; k < N; k++)
		cr_assert_eq(r[k].res, 0, "write %u: %d", k, r[k].res);

	/* read back into the other kind of buffer, in another order */
	memset(stack_page, 0x5a, sizeof(stack_page));
	for (i = 0; i < N; i++) {
		src = buf[i];
		dst = i == sp ? stack_page : i % 2 ? fr + (size_t)i * SWAP_PAGE
						   : hp + (size_t)i * SWAP_PAGE;
		if (src != dst)
			memset(dst, 0x5a, SWAP_PAGE);
		buf[i] = dst;
	}
	shuffle(order, N, &seed);
	for (k = 0; k < N; k++)
		req_fill(sw, &r[k], s[order[k]], buf[order[k]], IO_READ);
	cr_assert_eq(io_run(e, r, N), 0);
	for (i = 0; i < N; i++) {
		char want[SWAP_PAGE];

		fill_page(want, 7000 + i);
		cr_assert_eq(memcmp(buf[i], want, SWAP_PAGE), 0, "page %u read back wrong", i);
	}
	cr_assert_eq(e->seen[IO_WRITE], N);
	cr_assert_eq(e->seen[IO_READ], N);
	free(buf);
	free(order);
	free(s);
	free(r);
	free(hp);
	io_engine_destroy(e);
	swap_close(sw);
}

/*
 * A short transfer is continued once; what fails then is reported. With
 * RLIMIT_FSIZE ending half way into slot 1, its write moves half a page and
 * the rest fails with EFBIG; reading it back (the file now ends half way)
 * moves half a page and then finds the end of the file: -EIO, with the half
 * that exists in the buffer (what follows it in the buffer is unspecified:
 * O_DIRECT reads whole blocks). A batch around it is not disturbed.
 */
ENGINE_TEST(short_transfers_continue)
{
	struct swap *sw = sw_open(1);
	struct io_engine *e = eng_open(sw, kind);
	char *w = frames(3), *rd = frames(3);
	struct rlimit old, lim;
	struct io_req r[3];
	uint64_t s[3];
	unsigned i;

	cr_assert_eq(swap_alloc(sw, 3, s), 3);
	for (i = 0; i < 3; i++)
		fill_page(w + i * SWAP_PAGE, 300 + i);
	/* slot 0 first, so that the file is one page long */
	req_fill(sw, &r[0], s[0], w, IO_WRITE);
	cr_assert_eq(io_run(e, r, 1), 0, "%d", r[0].res);

	signal(SIGXFSZ, SIG_IGN);
	cr_assert_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim = old;
	lim.rlim_cur = SWAP_PAGE + SWAP_PAGE / 2;
	cr_assert_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
	req_fill(sw, &r[0], s[1], w + SWAP_PAGE, IO_WRITE);
	i = io_run(e, r, 1);
	cr_assert_eq(setrlimit(RLIMIT_FSIZE, &old), 0);
	cr_assert_eq(i, 1);
	cr_assert_eq(r[0].res, -EFBIG, "%s: short write reported as %d", kind_name(kind), r[0].res);

	memset(rd, 0x5a, 3 * SWAP_PAGE);
	for (i = 0; i < 3; i++)
		req_fill(sw, &r[i], s[i], rd + i * SWAP_PAGE, IO_READ);
	cr_assert_eq(io_run(e, r, 3), 2);
	cr_assert_eq(r[0].res, 0);
	cr_assert_eq(r[1].res, -EIO, "%s: short read reported as %d", kind_name(kind), r[1].res);
	cr_assert_eq(r[2].res, -EIO);
	cr_assert_eq(memcmp(rd, w, SWAP_PAGE), 0);
	cr_assert_eq(memcmp(rd + SWAP_PAGE, w + SWAP_PAGE, SWAP_PAGE / 2), 0,
		     "the half that reached the file was not read");
	io_engine_destroy(e);
	swap_close(sw);
}

/* ---- threads ------------------------------------------------------------ */

struct blocked {
	struct io_engine *e;
	struct io_req r[1];
	unsigned failed;
	int done;			/* atomic */
};

static void *blocked_read(void *p)
{
	struct blocked *b = p;

	b->failed = io_run(b->e, b->r, 1);
	__atomic_store_n(&b->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

struct mover {
	struct swap *sw;
	struct io_engine *e;
	uint64_t slot[8];
	char *w, *rd;			/* 8 frames each */
	int bad;
};

static void *move_pages(void *p)
{
	struct mover *m = p;
	struct io_req r[8];
	unsigned i;

	for (i = 0; i < 8; i++) {
		fill_page(m->w + i * SWAP_PAGE, 500 + i);
		req_fill(m->sw, &r[i], m->slot[i], m->w + i * SWAP_PAGE, IO_WRITE);
	}
	if (io_run(m->e, r, 8))
		m->bad = 1;
	for (i = 0; i < 8; i++)
		req_fill(m->sw, &r[i], m->slot[i], m->rd + i * SWAP_PAGE, IO_READ);
	if (io_run(m->e, r, 8) || memcmp(m->w, m->rd, 8 * SWAP_PAGE))
		m->bad = 2;
	return NULL;
}

/*
 * One thread's read is stuck (its buffer is a userfaultfd page nobody has
 * filled yet, so the kernel waits in the middle of the transfer); another
 * thread's batch on the same engine must go through all the same. With a
 * single shared ring or context it would wait behind the stuck one. The two
 * use different swap files: a direct read holds its file's inode lock
 * shared while it waits, and a write that extends the file wants it
 * exclusive, which would be a wait in the filesystem, not in the engine.
 */
ENGINE_TEST(stuck_thread_does_not_block_others)
{
	struct uffdio_api api = { .api = UFFD_API };
	struct uffdio_register reg;
	struct uffdio_zeropage zp;
	struct uffd_msg msg;
	struct pollfd pfd;
	struct timespec deadline;
	struct swap *sw;
	struct io_engine *e;
	struct blocked b;
	struct mover m;
	pthread_t tb, tm;
	char *stuck, *w;
	uint64_t s, other[SWAP_CLUSTER_PAGES], off;
	unsigned f0, f1;
	int uffd, rc;

	if (under_valgrind())
		en_skip("valgrind does not know userfaultfd");
	uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (uffd < 0)
		en_skip("no userfaultfd for kernel faults here (%s): vm.unprivileged_userfaultfd=1 or CAP_SYS_PTRACE is needed",
			strerror(errno));
	sw = sw_open(2);
	e = eng_open(sw, kind);
	b = (struct blocked){ .e = e };
	m = (struct mover){ .sw = sw, .e = e, .w = frames(8), .rd = frames(8) };
	w = frames(1);
	cr_assert_eq(ioctl(uffd, UFFDIO_API, &api), 0, "UFFDIO_API: %s", strerror(errno));
	stuck = mmap(NULL, SWAP_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(stuck, MAP_FAILED);
	reg.range.start = (uintptr_t)stuck;
	reg.range.len = SWAP_PAGE;
	reg.mode = UFFDIO_REGISTER_MODE_MISSING;
	cr_assert_eq(ioctl(uffd, UFFDIO_REGISTER, &reg), 0, "UFFDIO_REGISTER: %s",
		     strerror(errno));

	/* the stuck slot in cluster 0 (file 0), the others in cluster 1 (file 1) */
	cr_assert_eq(swap_alloc(sw, 1, &s), 1);
	cr_assert_eq(swap_alloc(sw, SWAP_CLUSTER_PAGES - 1, other), SWAP_CLUSTER_PAGES - 1);
	cr_assert_eq(swap_alloc(sw, 8, m.slot), 8);
	swap_where(sw, s, &f0, &off);
	swap_where(sw, m.slot[0], &f1, &off);
	cr_assert(f0 == 0 && f1 == 1, "files %u and %u", f0, f1);
	fill_page(w, 77);
	req_fill(sw, &b.r[0], s, w, IO_WRITE);
	cr_assert_eq(io_run(e, b.r, 1), 0);

	/* the stuck read: wait until the kernel reports the fault */
	req_fill(sw, &b.r[0], s, stuck, IO_READ);
	cr_assert_eq(pthread_create(&tb, NULL, blocked_read, &b), 0);
	pfd.fd = uffd;
	pfd.events = POLLIN;
	rc = poll(&pfd, 1, 10000);
	cr_assert_eq(rc, 1, "the read never reached its buffer (poll %d)", rc);
	cr_assert_eq(read(uffd, &msg, sizeof(msg)), (ssize_t)sizeof(msg));
	cr_assert_eq(msg.event, UFFD_EVENT_PAGEFAULT);

	/* meanwhile another thread moves pages */
	cr_assert_eq(pthread_create(&tm, NULL, move_pages, &m), 0);
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += 15;
	rc = pthread_timedjoin_np(tm, NULL, &deadline);
	cr_expect_eq(rc, 0, "%s: a batch waited for another thread's stuck I/O", kind_name(kind));
	cr_expect_eq(__atomic_load_n(&b.done, __ATOMIC_ACQUIRE), 0,
		     "the stuck read finished by itself");

	/* let the stuck read go on: it lands on the page the kernel maps */
	zp.range.start = (uintptr_t)stuck;
	zp.range.len = SWAP_PAGE;
	zp.mode = 0;
	cr_assert_eq(ioctl(uffd, UFFDIO_ZEROPAGE, &zp), 0, "UFFDIO_ZEROPAGE: %s", strerror(errno));
	pthread_join(tb, NULL);
	if (rc)
		pthread_join(tm, NULL);
	cr_assert_eq(m.bad, 0, "the other thread's batch failed (%d)", m.bad);
	cr_assert_eq(b.failed, 0, "the stuck read failed: %d", b.r[0].res);
	cr_assert_eq(memcmp(stuck, w, SWAP_PAGE), 0);
	munmap(stuck, SWAP_PAGE);
	close(uffd);
	io_engine_destroy(e);
	swap_close(sw);
}

struct worker {
	struct swap *sw;
	struct io_engine *e;
	unsigned id, rounds;
	uint64_t *slot;			/* WK_SLOTS of them, this thread's own */
	char *fr, *hp;			/* WK_SLOTS frames, WK_SLOTS heap pages */
	char *bad;			/* a sentence, or NULL */
};

enum { WK_SLOTS = 300, WK_THREADS = 8 };

static void *worker(void *p)
{
	struct worker *k = p;
	uint64_t seed = k->id * 7919 + 1, *gen = calloc(WK_SLOTS, sizeof(*gen));
	unsigned *pick = calloc(WK_SLOTS, sizeof(*pick));
	struct io_req *r = calloc(WK_SLOTS, sizeof(*r));
	unsigned round, i, n;

	if (!gen || !pick || !r) {
		k->bad = "out of memory";
		goto out;
	}
	for (i = 0; i < WK_SLOTS; i++)
		pick[i] = i;
	for (round = 0; round < k->rounds && !k->bad; round++) {
		/* write a random subset, from frames or the heap */
		n = 1 + rnd_next(&seed) % WK_SLOTS;
		shuffle(pick, WK_SLOTS, &seed);
		for (i = 0; i < n; i++) {
			unsigned j = pick[i];
			char *b = (rnd_next(&seed) & 1 ? k->fr : k->hp) + (size_t)j * SWAP_PAGE;

			gen[j] = ((uint64_t)k->id << 40) | ((uint64_t)round << 16) | j;
			fill_page(b, gen[j]);
			req_fill(k->sw, &r[i], k->slot[j], b, IO_WRITE);
		}
		if (io_run(k->e, r, n)) {
			k->bad = "a write failed";
			break;
		}
		/* read a random subset of what was ever written */
		n = 1 + rnd_next(&seed) % WK_SLOTS;
		shuffle(pick, WK_SLOTS, &seed);
		for (i = 0; i < n; i++) {
			unsigned j = pick[i];
			char *b = (i & 1 ? k->fr : k->hp) + (size_t)j * SWAP_PAGE;

			memset(b, 0, SWAP_PAGE);
			req_fill(k->sw, &r[i], k->slot[j], b, IO_READ);
		}
		if (io_run(k->e, r, n)) {
			/* never-written slots past the end of the file may fail */
			for (i = 0; i < n; i++)
				if (r[i].res && gen[pick[i]])
					k->bad = "a read of a written slot failed";
		}
		for (i = 0; i < n && !k->bad; i++) {
			unsigned j = pick[i];
			uint64_t want[SWAP_PAGE / 8];

			if (!gen[j] || r[i].res)
				continue;
			fill_page(want, gen[j]);
			if (memcmp(r[i].buf, want, SWAP_PAGE))
				k->bad = "a page read back wrong";
		}
	}
out:
	free(gen);
	free(pick);
	free(r);
	return NULL;
}

static unsigned count_uring_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	unsigned n = 0;

	if (!d)
		return 0;
	while ((de = readdir(d))) {
		char p[300], t[64];
		ssize_t len;

		snprintf(p, sizeof(p), "/proc/self/fd/%s", de->d_name);
		len = readlink(p, t, sizeof(t) - 1);
		if (len > 0) {
			t[len] = '\0';
			n += strstr(t, "io_uring") != NULL;
		}
	}
	closedir(d);
	return n;
}

/* Eight threads, random batch sizes up to 300 pages, frames and heap pages
   mixed, every page checked. */
ENGINE_TEST(many_threads)
{
	struct swap *sw = sw_open(2);
	struct io_engine *e;
	struct worker k[WK_THREADS];
	pthread_t t[WK_THREADS];
	unsigned i;

	store_map((size_t)WK_THREADS * WK_SLOTS + 16);
	e = eng_open(sw, kind);
	for (i = 0; i < WK_THREADS; i++) {
		k[i] = (struct worker){ .sw = sw, .e = e, .id = i + 1,
					.rounds = under_valgrind() ? 4 : 40,
					.slot = calloc(WK_SLOTS, sizeof(uint64_t)),
					.fr = frames(WK_SLOTS), .hp = heap_pages(WK_SLOTS) };
		cr_assert_not_null(k[i].slot);
		cr_assert_eq(swap_alloc(sw, WK_SLOTS, k[i].slot), WK_SLOTS);
	}
	for (i = 0; i < WK_THREADS; i++)
		cr_assert_eq(pthread_create(&t[i], NULL, worker, &k[i]), 0);
	for (i = 0; i < WK_THREADS; i++)
		pthread_join(t[i], NULL);
	if (kind == UMLMEM_IO_URING)
		cr_log_info("many_threads: %u io_uring descriptors (the rings and the holder of the registration) for %u threads",
			    count_uring_fds(), WK_THREADS);
	for (i = 0; i < WK_THREADS; i++) {
		cr_assert_null(k[i].bad, "%s, thread %u: %s", kind_name(kind), i, k[i].bad);
		free(k[i].slot);
		free(k[i].hp);
	}
	io_engine_destroy(e);
	swap_close(sw);
}

/* ---- io_uring registration ---------------------------------------------- */

static uint64_t store_resident(void)
{
	struct stat st;

	cr_assert_eq(fstat(store.fd, &st), 0);
	return (uint64_t)st.st_blocks * 512;
}

/*
 * A store of 1 GiB and three pages is registered as two buffers; frames on
 * both sides of the 1 GiB line, and at both ends, go through fixed reads and
 * writes (a wrong buffer index would fail with -EFAULT or move the wrong
 * bytes). Registering makes the whole store resident at once.
 */
Test(engines, uring_store_over_1gib)
{
	const size_t npages = (1u << 30) / SWAP_PAGE + 3;
	const size_t at[] = { 0, (1u << 30) / SWAP_PAGE - 1, (1u << 30) / SWAP_PAGE, npages - 1 };
	enum { N = sizeof(at) / sizeof(at[0]) };
	struct swap *sw;
	struct io_engine *e;
	struct io_req r[N];
	uint64_t s[N], avail = 0;
	char line[256], *rd;
	double t0, t1;
	unsigned i;
	FILE *f;

	engine_required(UMLMEM_IO_URING);
	f = fopen("/proc/meminfo", "r");
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "MemAvailable: %lu kB", &avail) == 1)
			break;
	if (f)
		fclose(f);
	if (avail < 4ull << 20)
		en_skip("needs 4 GiB of available memory, %lu MiB here", avail >> 10);

	sw = sw_open(1);
	store_map(npages);
	cr_assert_lt(store_resident(), 1u << 20);
	t0 = now();
	e = eng_open(sw, UMLMEM_IO_URING);
	t1 = now();
	cr_log_info("registering a %zu MiB store took %.0f ms", store.len >> 20, (t1 - t0) * 1e3);
	cr_assert_geq(store_resident(), (uint64_t)store.len,
		      "registration did not make the store resident");

	rd = heap_pages(N);
	cr_assert_eq(swap_alloc(sw, N, s), N);
	for (i = 0; i < N; i++) {
		fill_page(store.base + at[i] * SWAP_PAGE, 900 + i);
		req_fill(sw, &r[i], s[i], store.base + at[i] * SWAP_PAGE, IO_WRITE);
	}
	cr_assert_eq(io_run(e, r, N), 0, "%d %d %d %d", r[0].res, r[1].res, r[2].res, r[3].res);
	for (i = 0; i < N; i++)
		req_fill(sw, &r[i], s[i], rd + i * SWAP_PAGE, IO_READ);
	cr_assert_eq(io_run(e, r, N), 0);
	for (i = 0; i < N; i++) {
		cr_assert_eq(memcmp(rd + i * SWAP_PAGE, store.base + at[i] * SWAP_PAGE, SWAP_PAGE), 0,
			     "frame %zu", at[i]);
		memset(store.base + at[i] * SWAP_PAGE, 0, SWAP_PAGE);
	}
	/* and back into the frames, in reverse order */
	for (i = 0; i < N; i++)
		req_fill(sw, &r[i], s[N - 1 - i], store.base + at[N - 1 - i] * SWAP_PAGE, IO_READ);
	cr_assert_eq(io_run(e, r, N), 0, "%d %d %d %d", r[0].res, r[1].res, r[2].res, r[3].res);
	for (i = 0; i < N; i++)
		cr_assert_eq(memcmp(rd + i * SWAP_PAGE, store.base + at[i] * SWAP_PAGE, SWAP_PAGE), 0,
			     "frame %zu", at[i]);
	free(rd);
	io_engine_destroy(e);
	swap_close(sw);
}

/* Drops CAP_IPC_LOCK from the effective set, so RLIMIT_MEMLOCK applies. */
static void drop_ipc_lock(void)
{
	struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct data[2];

	cr_assert_eq(syscall(SYS_capget, &hdr, data), 0, "capget: %s", strerror(errno));
	data[CAP_IPC_LOCK / 32].effective &= ~(1u << (CAP_IPC_LOCK % 32));
	cr_assert_eq(syscall(SYS_capset, &hdr, data), 0, "capset: %s", strerror(errno));
}

/*
 * Without the locked memory to register the store, io_uring still runs
 * (plain reads and writes on the frames) and says why in the note; AUTO
 * keeps it. The limit is per user, shared with every process of root that
 * lacks CAP_IPC_LOCK, and the rings count against it too: it is kept at
 * the usual 8 MiB and the store made four times that.
 */
Test(engines, uring_without_locked_memory)
{
	struct io_engine *e = NULL;
	struct rlimit lim;
	struct swap *sw;
	struct io_req r[4];
	char why[256], *w, *rd;
	uint64_t s[4];
	unsigned i;
	int rc;

	engine_required(UMLMEM_IO_URING);
	cr_assert_eq(getrlimit(RLIMIT_MEMLOCK, &lim), 0);
	if (lim.rlim_max != RLIM_INFINITY && lim.rlim_max < (256u << 10))
		en_skip("RLIMIT_MEMLOCK's hard limit (%llu KiB) leaves no room for a ring",
			     (unsigned long long)lim.rlim_max >> 10);
	if (lim.rlim_max == RLIM_INFINITY || lim.rlim_max > (8u << 20))
		lim.rlim_max = 8u << 20;
	lim.rlim_cur = lim.rlim_max;
	drop_ipc_lock();
	cr_assert_eq(setrlimit(RLIMIT_MEMLOCK, &lim), 0, "setrlimit: %s", strerror(errno));
	sw = sw_open(1);
	store_map(4 * lim.rlim_cur / SWAP_PAGE);

	rc = io_engine_create(UMLMEM_IO_URING, sw, store.base, store.len, &e, why, sizeof(why));
	cr_assert_eq(rc, 0, "%d %s", rc, why);
	cr_assert_eq(e->kind, UMLMEM_IO_URING);
	cr_assert_not_null(strstr(why, "RLIMIT_MEMLOCK"), "%s", why);
	cr_log_info("the note: %s", why);
	cr_assert_eq(store_resident(), 0, "a registration that cannot succeed was tried");

	w = frames(4);
	rd = frames(4);
	cr_assert_eq(swap_alloc(sw, 4, s), 4);
	for (i = 0; i < 4; i++) {
		fill_page(w + i * SWAP_PAGE, 40 + i);
		req_fill(sw, &r[i], s[i], w + i * SWAP_PAGE, IO_WRITE);
	}
	cr_assert_eq(io_run(e, r, 4), 0);
	for (i = 0; i < 4; i++)
		req_fill(sw, &r[i], s[i], rd + i * SWAP_PAGE, IO_READ);
	cr_assert_eq(io_run(e, r, 4), 0);
	cr_assert_eq(memcmp(w, rd, 4 * SWAP_PAGE), 0);
	io_engine_destroy(e);

	e = NULL;
	cr_assert_eq(io_engine_create(UMLMEM_IO_AUTO, sw, store.base, store.len, &e, why,
				      sizeof(why)), 0);
	cr_assert_eq(e->kind, UMLMEM_IO_URING);
	cr_assert_not_null(strstr(why, "RLIMIT_MEMLOCK"), "%s", why);
	io_engine_destroy(e);

	/* a store that fits is registered (and so made resident) */
	rc = io_engine_create(UMLMEM_IO_URING, sw, store.base, 8 * SWAP_PAGE, &e, why, sizeof(why));
	cr_assert_eq(rc, 0, "%d %s", rc, why);
	cr_assert_str_eq(why, "");
	cr_assert_geq(store_resident(), 8 * SWAP_PAGE);
	io_engine_destroy(e);
	swap_close(sw);
}

/* ---- AUTO and its fallbacks ---------------------------------------------- */

#if defined(__x86_64__)
#define TEST_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define TEST_AUDIT_ARCH AUDIT_ARCH_AARCH64
#endif

/*
 * Makes system call @nr fail with @err from now on in this (test) process;
 * with @cmd_arg >= 0 only when that argument equals @cmd, and with
 * @flag_arg >= 0 only when that argument has a bit of @flags set.
 */
static void deny(long nr, int err, int cmd_arg, uint32_t cmd, int flag_arg, uint32_t flags)
{
#ifdef TEST_AUDIT_ARCH
	const uint32_t at_nr = offsetof(struct seccomp_data, nr);
	/* the low half of an argument (little endian) */
	const uint32_t at_cmd = cmd_arg < 0 ? at_nr
			      : offsetof(struct seccomp_data, args) + 8 * (uint32_t)cmd_arg;
	const uint32_t at_flag = flag_arg < 0 ? at_nr
			       : offsetof(struct seccomp_data, args) + 8 * (uint32_t)flag_arg;
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, TEST_AUDIT_ARCH, 0, 7),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, at_nr),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)nr, 0, 5),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, at_cmd),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, cmd_arg < 0 ? (uint32_t)nr : cmd, 0, 3),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, at_flag),
		BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, flag_arg < 0 ? ~0u : flags, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ((uint32_t)err & SECCOMP_RET_DATA)),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = sizeof(f) / sizeof(f[0]), .filter = f };

	cr_assert_neq(nr, 0, "the filter cannot tell system call 0 apart");
	cr_assert_eq(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
	if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
		en_skip("no seccomp filters here: %s", strerror(errno));
#else
	(void)nr; (void)err; (void)cmd_arg; (void)cmd; (void)flag_arg; (void)flags;
	en_skip("no seccomp test filter for this architecture");
#endif
}

static struct io_engine *auto_engine(struct swap *sw, char *why, size_t len)
{
	struct io_engine *e = NULL;
	int rc = io_engine_create(UMLMEM_IO_AUTO, sw, store.base, store.len, &e, why, len);

	cr_assert_eq(rc, 0, "AUTO: %d %s", rc, why);
	return e;
}

/* A quick round trip through an engine. */
static void round_trip(struct swap *sw, struct io_engine *e)
{
	char *w = frames(2), *rd = heap_pages(2);
	struct io_req r[2];
	uint64_t s[2];
	unsigned i;

	cr_assert_eq(swap_alloc(sw, 2, s), 2);
	for (i = 0; i < 2; i++) {
		fill_page(w + i * SWAP_PAGE, 60 + i);
		req_fill(sw, &r[i], s[i], w + i * SWAP_PAGE, IO_WRITE);
	}
	cr_assert_eq(io_run(e, r, 2), 0, "%s: %d %d", e->ops->name, r[0].res, r[1].res);
	for (i = 0; i < 2; i++)
		req_fill(sw, &r[i], s[i], rd + i * SWAP_PAGE, IO_READ);
	cr_assert_eq(io_run(e, r, 2), 0, "%s: %d %d", e->ops->name, r[0].res, r[1].res);
	cr_assert_eq(memcmp(w, rd, 2 * SWAP_PAGE), 0);
	free(rd);
}

/* io_uring missing from the kernel, then Linux AIO too: AUTO says why at
   each step and ends on pread/pwrite; asking for either by name fails. */
Test(engines, auto_without_uring_and_aio)
{
	struct io_engine *e = NULL;
	struct swap *sw;
	char why[512];

	engine_required(UMLMEM_IO_URING);
	engine_required(UMLMEM_IO_AIO);
	sw = sw_open(1);
	store_map(64);

	deny(__NR_io_uring_setup, ENOSYS, -1, 0, -1, 0);
	e = auto_engine(sw, why, sizeof(why));
	cr_assert_eq(e->kind, UMLMEM_IO_AIO);
	cr_assert_not_null(strstr(why, "io_uring skipped: io_uring is not available"), "%s", why);
	cr_assert_not_null(strstr(why, "using libaio"), "%s", why);
	round_trip(sw, e);
	io_engine_destroy(e);
	e = (struct io_engine *)1;
	cr_assert_eq(io_engine_create(UMLMEM_IO_URING, sw, NULL, 0, &e, why, sizeof(why)), -ENOTSUP);
	cr_assert_null(e);
	cr_assert_not_null(strstr(why, "io_uring"), "%s", why);

	deny(__NR_io_setup, ENOSYS, -1, 0, -1, 0);
	e = auto_engine(sw, why, sizeof(why));
	cr_assert_eq(e->kind, UMLMEM_IO_SYNC);
	cr_assert_not_null(strstr(why, "io_uring skipped: "), "%s", why);
	cr_assert_not_null(strstr(why, "libaio skipped: Linux AIO is not available"), "%s", why);
	cr_assert_not_null(strstr(why, "using pread/pwrite"), "%s", why);
	cr_log_info("AUTO without io_uring and AIO: %s", why);
	cr_assert_lt(strlen(why), 256, "too long for the host's 256 bytes: %s", why);
	round_trip(sw, e);
	io_engine_destroy(e);
	cr_assert_eq(io_engine_create(UMLMEM_IO_AIO, sw, NULL, 0, &e, why, sizeof(why)), -ENOTSUP);
	cr_assert_null(e);
	swap_close(sw);
}

/* Swap files without O_DIRECT (the filesystem refuses it): libaio will not
   run, io_uring does (buffered); with io_uring disabled AUTO ends on sync. */
Test(engines, auto_on_buffered_files)
{
	struct io_engine *e = NULL;
	struct swap *sw;
	char why[512];

	engine_required(UMLMEM_IO_URING);
	store_map(64);
#ifdef __NR_open
	deny(__NR_open, EINVAL, -1, 0, 1, O_DIRECT);
#endif
	deny(__NR_openat, EINVAL, -1, 0, 2, O_DIRECT);
	deny(__NR_fcntl, EINVAL, 1, F_SETFL, 2, O_DIRECT);
	sw = sw_open(2);
	cr_assert_eq(swap_is_direct(sw), 0);

	cr_assert_eq(io_engine_create(UMLMEM_IO_AIO, sw, NULL, 0, &e, why, sizeof(why)), -ENOTSUP);
	cr_assert_null(e);
	cr_assert_not_null(strstr(why, "O_DIRECT"), "%s", why);

	e = auto_engine(sw, why, sizeof(why));
	cr_assert_eq(e->kind, UMLMEM_IO_URING);
	cr_assert_str_eq(why, "");
	round_trip(sw, e);
	io_engine_destroy(e);

	/* what kernel.io_uring_disabled does */
	deny(__NR_io_uring_setup, EPERM, -1, 0, -1, 0);
	e = auto_engine(sw, why, sizeof(why));
	cr_assert_eq(e->kind, UMLMEM_IO_SYNC);
	cr_assert_not_null(strstr(why, "kernel.io_uring_disabled"), "%s", why);
	cr_assert_not_null(strstr(why, "libaio skipped: "), "%s", why);
	cr_assert_not_null(strstr(why, "O_DIRECT"), "%s", why);
	cr_log_info("AUTO on buffered files without io_uring: %s", why);
	cr_assert_lt(strlen(why), 256, "too long for the host's 256 bytes: %s", why);
	round_trip(sw, e);
	io_engine_destroy(e);
	cr_assert_eq(io_engine_create(UMLMEM_IO_URING, sw, NULL, 0, &e, why, sizeof(why)), -ENOTSUP);
	cr_assert_not_null(strstr(why, "kernel.io_uring_disabled"), "%s", why);
	swap_close(sw);
}

/* ---- measurement ---------------------------------------------------------- */

/*
 * 4 KiB random reads from a 64 MiB swap file, one at a time (QD1) and in
 * batches of 32 (QD32), for each engine that runs here: a log line, not an
 * assertion, so that we know what the disk under /var/tmp does. With
 * O_DIRECT the page cache is out of the way; the sync engine's "QD32" is
 * 32 reads one after the other in one call.
 */
Test(engines, measure_random_reads)
{
	enum { FILE_PAGES = 16384, QD_MAX = 32, WBATCH = 256 };
	static const enum umlmem_io_engine kinds[] = { UMLMEM_IO_SYNC, UMLMEM_IO_URING,
						       UMLMEM_IO_AIO };
	static const unsigned qds[] = { 1, QD_MAX };
	const double secs = under_valgrind() ? 0.1 : 1.0;
	struct swap *sw = sw_open(1);
	uint64_t *s = calloc(FILE_PAGES, sizeof(*s)), seed = 1234;
	struct io_req r[WBATCH];
	struct io_engine *e;
	char *buf, *rd;
	unsigned i, k, q;
	char why[256];

	cr_assert_not_null(s);
	store_map(WBATCH + QD_MAX);
	buf = frames(WBATCH);
	rd = frames(QD_MAX);
	cr_assert_eq(swap_alloc(sw, FILE_PAGES, s), FILE_PAGES);
	e = eng_open(sw, UMLMEM_IO_SYNC);
	for (i = 0; i < FILE_PAGES; i += WBATCH) {
		for (k = 0; k < WBATCH; k++) {
			fill_page(buf + k * SWAP_PAGE, i + k);
			req_fill(sw, &r[k], s[i + k], buf + k * SWAP_PAGE, IO_WRITE);
		}
		cr_assert_eq(io_run(e, r, WBATCH), 0);
	}
	cr_assert_eq(fdatasync(swap_fd(sw, 0)), 0);
	io_engine_destroy(e);
	cr_log_info("random 4 KiB reads from a 64 MiB file in %s (O_DIRECT %s)%s", tdir,
		    swap_is_direct(sw) ? "yes" : "no: these are page cache reads",
		    under_valgrind() ? ", under valgrind: numbers meaningless" : "");

	for (k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
		double rate[2];

		e = NULL;
		if (io_engine_create(kinds[k], sw, store.base, store.len, &e, why, sizeof(why))) {
			cr_log_info("  %-8s cannot run here: %s", kind_name(kinds[k]), why);
			continue;
		}
		for (q = 0; q < 2; q++) {
			unsigned qd = qds[q];
			uint64_t ops = 0;
			double t0 = now(), t;

			do {
				for (i = 0; i < qd; i++)
					req_fill(sw, &r[i], s[rnd_next(&seed) % FILE_PAGES],
						 rd + i * SWAP_PAGE, IO_READ);
				cr_assert_eq(io_run(e, r, qd), 0);
				ops += qd;
				t = now() - t0;
			} while (t < secs);
			rate[q] = ops / t;
		}
		cr_log_info("  %-8s QD1 %7.0f reads/s (%5.1f MB/s)   QD32 %7.0f reads/s (%5.1f MB/s)",
			    kind_name(kinds[k]), rate[0], rate[0] * SWAP_PAGE / 1e6, rate[1],
			    rate[1] * SWAP_PAGE / 1e6);
		io_engine_destroy(e);
	}
	free(s);
	swap_close(sw);
}

/* ---- a wait for completions that fails ------------------------------------- */

/* Waits number 2 and 3 of the batch fail (@forever: every one from 2 on). */
static unsigned waits_seen;
static bool waits_fail_forever;

static int fail_waits_2_3(void)
{
	unsigned n = __atomic_add_fetch(&waits_seen, 1, __ATOMIC_RELAXED);

	return n == 2 || n == 3 || (n > 3 && waits_fail_forever) ? -EINVAL : 0;
}

/*
 * A wait for completions fails while requests are in flight. The engine
 * may report requests failed, but not while the kernel may still move
 * their data: no buffer (a frame the caller reuses at once) changes once
 * the batch has returned; a request reported done has really moved its
 * page, and, while the engine can wait at all, one reported failed was
 * never submitted. (Slots two apart: io_run
 * merges none of the reads.)
 */
static void wait_fails_case(enum umlmem_io_engine kind, bool forever)
{
	enum { N = 600 };
	struct swap *sw = sw_open(1);
	struct io_engine *e = eng_open(sw, kind);
	char *fr = frames(N), *want = heap_pages(1), *snap = malloc((size_t)N * SWAP_PAGE);
	struct io_req *r = calloc(N, sizeof(*r));
	uint64_t *s = calloc(2 * N, sizeof(*s));
	unsigned i, ok = 0, failed = 0;

	cr_assert(r && s && snap);
	cr_assert_eq(swap_alloc(sw, 2 * N, s), 2 * N);
	for (i = 0; i < N; i++) {
		fill_page(fr + (size_t)i * SWAP_PAGE, 500 + i);
		req_fill(sw, &r[i], s[2 * i], fr + (size_t)i * SWAP_PAGE, IO_WRITE);
	}
	cr_assert_eq(io_run(e, r, N), 0);
	memset(fr, 0x5a, (size_t)N * SWAP_PAGE);
	for (i = 0; i < N; i++)
		req_fill(sw, &r[i], s[2 * i], fr + (size_t)i * SWAP_PAGE, IO_READ);
	waits_seen = 0;
	waits_fail_forever = forever;
	io_wait_hook = fail_waits_2_3;
	io_run(e, r, N);
	io_wait_hook = NULL;
	cr_assert_geq(waits_seen, 2, "the batch waited %u times: nothing failed", waits_seen);
	memcpy(snap, fr, (size_t)N * SWAP_PAGE);
	/* a late transfer would land now */
	usleep(50 * 1000);
	for (i = 0; i < N; i++) {
		char *b = fr + (size_t)i * SWAP_PAGE;

		cr_assert_eq(memcmp(b, snap + (size_t)i * SWAP_PAGE, SWAP_PAGE), 0,
			     "read %u (result %d) wrote its buffer after the batch returned",
			     i, r[i].res);
		if (r[i].res == 0) {
			fill_page(want, 500 + i);
			cr_assert_eq(memcmp(b, want, SWAP_PAGE), 0, "read %u reported done, page wrong", i);
			ok++;
		} else {
			/* a destroyed context loses the completions of requests
			   that did finish; otherwise each failed one was never
			   submitted */
			memset(want, 0x5a, SWAP_PAGE);
			cr_assert(forever || memcmp(b, want, SWAP_PAGE) == 0,
				  "read %u reported failed (%d) but its buffer was written",
				  i, r[i].res);
			failed++;
		}
	}
	free(snap);
	cr_assert_gt(failed, 0, "no request failed: the injected failure missed the batch");
	cr_log_info("%s: %u reads done, %u reported failed\n", kind_name(kind), ok, failed);

	/* the engine still works afterwards */
	memset(fr, 0, SWAP_PAGE);
	req_fill(sw, &r[0], s[0], fr, IO_READ);
	cr_assert_eq(io_run(e, r, 1), 0);
	fill_page(want, 500);
	cr_assert_eq(memcmp(fr, want, SWAP_PAGE), 0);
	free(want);
	free(s);
	free(r);
	io_engine_destroy(e);
	swap_close(sw);
}

Test(engines, wait_fails_uring)
{
	engine_required(UMLMEM_IO_URING);
	wait_fails_case(UMLMEM_IO_URING, false);
}

Test(engines, wait_fails_aio)
{
	engine_required(UMLMEM_IO_AIO);
	wait_fails_case(UMLMEM_IO_AIO, false);
}

/* A context that can never be waited on again is destroyed, which waits
   for what is in flight; the next batch runs on a new one. */
Test(engines, wait_never_works_aio)
{
	engine_required(UMLMEM_IO_AIO);
	wait_fails_case(UMLMEM_IO_AIO, true);
}
