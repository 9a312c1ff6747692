/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Threads: the library used from several threads at once, with and without
 * the background reclaim thread. Each thread owns its pages (its own guest,
 * and its own stripe of a guest they all share), so that a plain per-thread
 * copy is still an exact oracle while the pager, the lock-free read path
 * and the swap-in path race underneath.
 */
#include <pthread.h>

#include "testutil.h"

#define NT 4

struct worker {
	umlmem_guest *own, *shared;
	uint64_t own_bytes, stripe;      /* stripe: [id * stripe, +stripe) of shared */
	uint8_t *m_own, *m_shared;       /* models */
	uint64_t seed, ops;
	unsigned id;
	int fail;
	char msg[256];
};

static uint64_t rnd(uint64_t *s, uint64_t n)
{
	return tu_splitmix64(s) % n;
}

static void *work(void *arg)
{
	struct worker *w = arg;
	uint8_t *buf = malloc(3 * 4096), *rb = malloc(3 * 4096);
	uint64_t st = w->seed;

	for (uint64_t i = 0; i < w->ops && !w->fail; i++) {
		bool sh = rnd(&st, 2);
		umlmem_guest *g = sh ? w->shared : w->own;
		uint64_t base = sh ? w->id * w->stripe : 0;
		uint64_t size = sh ? w->stripe : w->own_bytes;
		uint8_t *m = sh ? w->m_shared : w->m_own;
		uint64_t len = 1 + rnd(&st, 3 * 4096 - 1);
		uint64_t off, op = rnd(&st, 10);
		int rc;

		if (len > size)
			len = size;
		off = rnd(&st, size - len + 1);
		if (op < 4) {
			tu_fill(buf, len, tu_splitmix64(&st));
			rc = umlmem_write(g, base + off, buf, len);
			if (!rc)
				memcpy(m + off, buf, len);
		} else if (op < 9) {
			rc = umlmem_read(g, base + off, rb, len);
			if (!rc && memcmp(rb, m + off, len)) {
				w->fail = 1;
				snprintf(w->msg, sizeof(w->msg), "thread %u: %s read at 0x%llx+%llu differs",
					 w->id, sh ? "shared" : "own", (unsigned long long)(base + off),
					 (unsigned long long)len);
			}
		} else {
			void *p;
			uint64_t pg = (off & ~4095ull);

			rc = umlmem_pin(g, base + pg, UMLMEM_READ | UMLMEM_WRITE, &p);
			if (!rc) {
				if (memcmp(p, m + pg, 4096)) {
					w->fail = 1;
					snprintf(w->msg, sizeof(w->msg), "thread %u: pinned page differs",
						 w->id);
				}
				((uint8_t *)p)[i % 4096] ^= 0x5a;
				m[pg + i % 4096] ^= 0x5a;
				rc = umlmem_unpin(g, base + pg);
			}
		}
		if (rc && !w->fail) {
			w->fail = 1;
			snprintf(w->msg, sizeof(w->msg), "thread %u: op %llu: %s: %s", w->id,
				 (unsigned long long)op, umlmem_strerror(rc), umlmem_errmsg());
		}
	}
	free(buf);
	free(rb);
	return NULL;
}

static void run_workers(unsigned flags, enum umlmem_compress compress)
{
	char dir[64];
	struct umlmem_host_config cfg;
	struct umlmem_stats s;
	umlmem_host *h;
	umlmem_guest *shared;
	struct worker w[NT];
	pthread_t t[NT];
	const uint64_t own = 1 * TU_MiB + 333, stripe = 512 * TU_KiB;
	uint8_t *rb = malloc(own);

	tu_mkswapdir(dir);
	umlmem_host_config_init(&cfg);
	cfg.resident_bytes = 96 * 4096;    /* 1/8 of what the threads touch at most */
	cfg.swap_dir = dir;
	cfg.reclaim_batch = 16;
	cfg.flags = flags;
	cfg.compress = compress;
	cr_assert_eq(umlmem_host_create(&cfg, &h), 0, "%s", umlmem_errmsg());
	shared = tu_guest(h, NT * stripe);
	for (unsigned i = 0; i < NT; i++) {
		w[i] = (struct worker){
			.own = tu_guest(h, own), .shared = shared, .own_bytes = own,
			.stripe = stripe, .m_own = calloc(1, own), .m_shared = calloc(1, stripe),
			.seed = 0x1234 + i * 77, .ops = tu_scaled(6000), .id = i,
		};
		cr_assert_eq(pthread_create(&t[i], NULL, work, &w[i]), 0);
	}
	for (unsigned i = 0; i < NT; i++)
		pthread_join(t[i], NULL);
	for (unsigned i = 0; i < NT; i++)
		cr_expect_eq(w[i].fail, 0, "%s", w[i].msg);
	/* every byte, after the dust settled */
	for (unsigned i = 0; i < NT; i++) {
		cr_assert_eq(umlmem_read(w[i].own, 0, rb, own), 0, "%s", umlmem_errmsg());
		cr_expect(memcmp(rb, w[i].m_own, own) == 0, "guest %u differs at the end", i);
		cr_assert_eq(umlmem_read(shared, i * stripe, rb, stripe), 0);
		cr_expect(memcmp(rb, w[i].m_shared, stripe) == 0, "stripe %u differs at the end", i);
	}
	cr_assert_eq(umlmem_host_stats(h, &s), 0);
	cr_expect_leq(s.frames_used, 96);
	cr_expect_eq(s.resident_pages + s.swapped_pages + s.zero_pages, s.ram_pages);
	cr_expect_gt(s.swap_ins, 0, "the budget was meant to be too small");
	umlmem_host_destroy(h);     /* waits for the reclaim thread */
	tu_rmswapdir(dir);
	for (unsigned i = 0; i < NT; i++) {
		free(w[i].m_own);
		free(w[i].m_shared);
	}
	free(rb);
}

Test(threads, workers_foreground)
{
	run_workers(0, UMLMEM_COMPRESS_OFF);
}

Test(threads, workers_background)
{
	run_workers(UMLMEM_BACKGROUND, UMLMEM_COMPRESS_OFF);
}

/* the same with the compressed pool between the frames and swap: stores,
   loads, absorbs and write-backs of several threads at once */
Test(threads, workers_pool_foreground)
{
	run_workers(0, UMLMEM_COMPRESS_LZ4);
}

Test(threads, workers_pool_background)
{
	run_workers(UMLMEM_BACKGROUND, UMLMEM_COMPRESS_ZSTD);
}

/* Lock-free readers against an evictor: every read of a page either sees
   its content or is retried under the lock; never another page's bytes. */
struct reader {
	umlmem_guest *g;
	uint64_t pages, iters;
	int bad;
};

static void *reader_main(void *arg)
{
	struct reader *r = arg;
	uint64_t st = 99, v;

	for (uint64_t i = 0; i < r->iters; i++) {
		uint64_t p = rnd(&st, r->pages);

		if (umlmem_read(r->g, p * 4096 + 8 * rnd(&st, 512), &v, 8) || v != p + 1)
			r->bad++;
	}
	return NULL;
}

Test(threads, lockfree_reads_vs_eviction)
{
	char dir[64];
	umlmem_host *h;
	umlmem_guest *g;
	struct reader r[2];
	pthread_t t[2];
	const uint64_t pages = 256;
	uint64_t *page = malloc(4096), ev;

	tu_mkswapdir(dir);
	h = tu_host(dir, 64 * 4096, 0);
	g = tu_guest(h, pages * 4096);
	/* page p holds p + 1 in every word: a wrong page shows at once */
	for (uint64_t p = 0; p < pages; p++) {
		for (unsigned k = 0; k < 512; k++)
			page[k] = p + 1;
		cr_assert_eq(umlmem_write(g, p * 4096, page, 4096), 0);
	}
	for (int i = 0; i < 2; i++) {
		r[i] = (struct reader){ .g = g, .pages = pages, .iters = tu_scaled(200000) };
		pthread_create(&t[i], NULL, reader_main, &r[i]);
	}
	for (int i = 0; i < (int)tu_scaled(300); i++)
		umlmem_reclaim(h, 32, &ev);
	for (int i = 0; i < 2; i++) {
		pthread_join(t[i], NULL);
		cr_expect_eq(r[i].bad, 0, "reader %d saw %d wrong values", i, r[i].bad);
	}
	tu_check(h);
	umlmem_host_destroy(h);
	tu_rmswapdir(dir);
	free(page);
}

/* Many threads faulting the same swapped page: one read from swap serves
   them all (the others wait on the busy entry), and all see its bytes. */
struct same {
	umlmem_guest *g;
	pthread_barrier_t *bar;
	uint8_t *want;
	int bad;
};

static void *same_main(void *arg)
{
	struct same *s = arg;
	uint8_t buf[4096];

	pthread_barrier_wait(s->bar);
	if (umlmem_read(s->g, 0, buf, sizeof(buf)) || memcmp(buf, s->want, sizeof(buf)))
		s->bad = 1;
	return NULL;
}

Test(threads, same_page_one_swap_in)
{
	char dir[64];
	umlmem_host *h;
	umlmem_guest *g;
	struct umlmem_stats a, b;
	pthread_barrier_t bar;
	struct same s[8];
	pthread_t t[8];
	uint8_t want[4096];
	uint64_t ev;

	tu_mkswapdir(dir);
	h = tu_host(dir, 64 * 4096, 0);
	g = tu_guest(h, 16 * 4096);
	tu_fill(want, sizeof(want), 42);
	cr_assert_eq(umlmem_write(g, 0, want, sizeof(want)), 0);
	cr_assert_eq(umlmem_reclaim(h, 64, &ev), 0);
	cr_assert_eq(ev, 1);
	umlmem_host_stats(h, &a);
	pthread_barrier_init(&bar, NULL, 8);
	for (int i = 0; i < 8; i++) {
		s[i] = (struct same){ .g = g, .bar = &bar, .want = want };
		pthread_create(&t[i], NULL, same_main, &s[i]);
	}
	for (int i = 0; i < 8; i++) {
		pthread_join(t[i], NULL);
		cr_expect_eq(s[i].bad, 0, "thread %d read wrong bytes or failed", i);
	}
	umlmem_host_stats(h, &b);
	cr_expect_eq(b.swap_ins - a.swap_ins, 1, "%llu swap-ins for one page",
		     (unsigned long long)(b.swap_ins - a.swap_ins));
	pthread_barrier_destroy(&bar);
	tu_check(h);
	umlmem_host_destroy(h);
	tu_rmswapdir(dir);
}

/* The reclaim thread refills free frames to the high watermark by itself. */
Test(threads, background_refills)
{
	char dir[64];
	struct umlmem_host_config cfg;
	struct umlmem_stats s;
	umlmem_host *h;
	umlmem_guest *g;
	uint8_t buf[4096];
	int waited = 0;

	tu_mkswapdir(dir);
	umlmem_host_config_init(&cfg);
	cfg.resident_bytes = 256 * 4096;
	cfg.swap_dir = dir;
	cfg.reclaim_batch = 16;
	cfg.reclaim_low = 32;
	cfg.reclaim_high = 64;
	cfg.flags = UMLMEM_BACKGROUND;
	cr_assert_eq(umlmem_host_create(&cfg, &h), 0, "%s", umlmem_errmsg());
	g = tu_guest(h, 1024 * 4096);
	for (uint64_t p = 0; p < 240; p++) {
		tu_fill(buf, sizeof(buf), p + 1);
		cr_assert_eq(umlmem_write(g, p * 4096, buf, sizeof(buf)), 0);
	}
	/* 240 of 256 frames used: below the low mark of free frames. The
	   bound is generous: the property is that the thread refills by
	   itself, not how fast, and under valgrind with another test
	   running beside it a write-out can take a second */
	do {
		usleep(10000);
		umlmem_host_stats(h, &s);
	} while (256 - s.frames_used < 64 && ++waited < 3000);
	cr_expect_geq(256 - s.frames_used, 64, "only %llu frames free after %d ms",
		      (unsigned long long)(256 - s.frames_used), waited * 10);
	cr_expect_gt(s.swap_outs, 0);
	for (uint64_t p = 0; p < 240; p++) {
		uint8_t want[4096];

		tu_fill(want, sizeof(want), p + 1);
		cr_assert_eq(umlmem_read(g, p * 4096, buf, sizeof(buf)), 0);
		cr_assert(memcmp(buf, want, sizeof(buf)) == 0, "page %llu", (unsigned long long)p);
	}
	umlmem_host_destroy(h);
	tu_rmswapdir(dir);
}

/* Threads faulting different pages have their reads in flight together:
   the disk sees a queue as deep as the faulting threads. */
struct qd {
	umlmem_guest *g;
	uint64_t pages, seed, iters;
	int bad;
};

static void *qd_main(void *arg)
{
	struct qd *q = arg;
	uint64_t st = q->seed, v;

	for (uint64_t i = 0; i < q->iters; i++) {
		uint64_t p = rnd(&st, q->pages);

		if (umlmem_read(q->g, p * 4096, &v, 8) || v != p + 1)
			q->bad++;
	}
	return NULL;
}

Test(threads, faults_overlap)
{
	char dir[64];
	struct umlmem_host_config cfg;
	umlmem_host *h;
	umlmem_guest *g;
	struct qd q[8];
	pthread_t t[8];
	const uint64_t pages = 4096;
	uint64_t *page = malloc(4096), ev;

	tu_mkswapdir(dir);
	umlmem_host_config_init(&cfg);
	cfg.resident_bytes = 256 * 4096;
	cfg.swap_dir = dir;
	cfg.flags = UMLMEM_NO_READAHEAD;   /* one read per fault: count them */
	cr_assert_eq(umlmem_host_create(&cfg, &h), 0, "%s", umlmem_errmsg());
	g = tu_guest(h, pages * 4096);
	for (uint64_t p = 0; p < pages; p++) {
		for (unsigned k = 0; k < 512; k++)
			page[k] = p + 1;
		cr_assert_eq(umlmem_write(g, p * 4096, page, 4096), 0);
	}
	umlmem_reclaim(h, pages, &ev);
	/* from here on only faults read: one page per request */
	__atomic_store_n(&host_engine(h)->max_inflight, 0, __ATOMIC_RELAXED);
	for (int i = 0; i < 8; i++) {
		q[i] = (struct qd){ .g = g, .pages = pages, .seed = 1000 + i,
				    .iters = tu_scaled(400) };
		pthread_create(&t[i], NULL, qd_main, &q[i]);
	}
	for (int i = 0; i < 8; i++) {
		pthread_join(t[i], NULL);
		cr_expect_eq(q[i].bad, 0, "thread %d read %d wrong values", i, q[i].bad);
	}
	/* evictions of clean pages need no writes, so this is the reads' depth */
	cr_log_info("deepest queue of faults: %llu reads",
		    (unsigned long long)host_engine(h)->max_inflight);
	/* valgrind runs one thread at a time and its io_uring wrapper waits
	   in the submitting call, so there only the data is checked */
	if (!tu_valgrind())
		cr_expect_geq(host_engine(h)->max_inflight, 2, "8 faulting threads never overlapped");
	tu_check(h);
	umlmem_host_destroy(h);
	tu_rmswapdir(dir);
	free(page);
}
