/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Interference: faults never wait behind the merge scanner. Four threads
 * read and write up to 12 KiB at random places of their own guests and of
 * a guest they share (each its own stripe of it, so a per-thread copy is an
 * exact oracle), on a budget far below what they touch, with background
 * reclaim on. One write in eight is of whole pages drawn from a small set
 * of contents (or zeros), so the scanner finds work: merges, copy-on-write
 * breaks of merged pages, pages of zeros given back.
 *
 * The same workload runs four times: (a) no merge scanning, (b) the merge
 * thread at its defaults, (c) a further thread calling umlmem_dedup_scan()
 * of 512 pages in a loop, (d) the merge thread at dedup_pages 100000 and
 * dedup_sleep_us 1, KSM's "scan as fast as you can". Every byte is checked
 * each time; (c) and (d) must stay within a generous bound of (a).
 */
#include <pthread.h>
#include <time.h>

#include "testutil.h"

#define IF_THREADS 4

enum if_mode { IF_NONE, IF_DEFAULT, IF_LOOP, IF_AGGRESSIVE };

struct if_run {
	umlmem_host *h;
	umlmem_guest *shared;
	uint64_t own_bytes, stripe, ops;
	int done;                      /* atomic: the workers have finished */
	int scan_rc;
};

struct if_worker {
	struct if_run *run;
	umlmem_guest *own;
	uint8_t *m_own, *m_shared;     /* models: own guest, own stripe */
	unsigned id;
	int fail;
	char msg[256];
};

static uint64_t if_rnd(uint64_t *s, uint64_t n)
{
	return tu_splitmix64(s) % n;
}

/* Content of a write: whole pages from a pool of 8 contents or zeros (so
   that pages merge), or random bytes. */
static void if_content(uint8_t *buf, uint64_t len, bool pooled, uint64_t *st)
{
	if (!pooled) {
		tu_fill(buf, len, tu_splitmix64(st));
		return;
	}
	for (uint64_t p = 0; p < len; p += 4096) {
		uint64_t k = if_rnd(st, 9), n = len - p < 4096 ? len - p : 4096;

		if (k == 8)
			memset(buf + p, 0, n);
		else
			tu_fill(buf + p, n, 0xc0ffee + k);
	}
}

static void *if_work(void *arg)
{
	struct if_worker *w = arg;
	struct if_run *r = w->run;
	uint8_t *buf = malloc(3 * 4096), *rb = malloc(3 * 4096);
	uint64_t st = 0x5eed + 131 * w->id;

	for (uint64_t i = 0; i < r->ops && !w->fail; i++) {
		bool sh = if_rnd(&st, 4) == 0;
		umlmem_guest *g = sh ? r->shared : w->own;
		uint64_t base = sh ? w->id * r->stripe : 0;
		uint64_t size = sh ? r->stripe : r->own_bytes;
		uint8_t *m = sh ? w->m_shared : w->m_own;
		bool pooled = if_rnd(&st, 8) == 0;
		uint64_t len = pooled ? 4096 * (1 + if_rnd(&st, 3)) : 1 + if_rnd(&st, 3 * 4096);
		uint64_t off = if_rnd(&st, size - len + 1);
		int rc;

		if (pooled)
			off &= ~4095ull;
		if (if_rnd(&st, 2)) {
			if_content(buf, len, pooled, &st);
			rc = umlmem_write(g, base + off, buf, len);
			if (!rc)
				memcpy(m + off, buf, len);
		} else {
			rc = umlmem_read(g, base + off, rb, len);
			if (!rc && memcmp(rb, m + off, len)) {
				w->fail = 1;
				snprintf(w->msg, sizeof(w->msg), "thread %u: %s read at 0x%llx+%llu differs",
					 w->id, sh ? "shared" : "own", (unsigned long long)(base + off),
					 (unsigned long long)len);
			}
		}
		if (rc && !w->fail) {
			w->fail = 1;
			snprintf(w->msg, sizeof(w->msg), "thread %u: %s: %s", w->id,
				 umlmem_strerror(rc), umlmem_errmsg());
		}
	}
	free(buf);
	free(rb);
	return NULL;
}

static void *if_scanner(void *arg)
{
	struct if_run *r = arg;
	uint64_t m;

	while (!__atomic_load_n(&r->done, __ATOMIC_ACQUIRE) && !r->scan_rc)
		r->scan_rc = umlmem_dedup_scan(r->h, 512, &m);
	return NULL;
}

static double if_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Runs the workload in @mode: @ops operations in all over @touched bytes
   (a quarter of them in the shared guest) on a budget of @budget bytes.
   Checks every byte; returns the wall time of the operations. */
static double if_run(enum if_mode mode, uint64_t ops, uint64_t touched, uint64_t budget)
{
	static const char *const names[] = { "none", "default", "loop", "aggressive" };
	char dir[64];
	struct umlmem_host_config cfg;
	struct umlmem_host_info info;
	struct if_run r = { 0 };
	struct if_worker w[IF_THREADS];
	pthread_t t[IF_THREADS], scanner;
	uint8_t *rb;
	double t0, secs;

	r.stripe = touched / 4 / IF_THREADS & ~4095ull;
	r.own_bytes = (touched - r.stripe * IF_THREADS) / IF_THREADS & ~4095ull;
	r.ops = ops / IF_THREADS;
	tu_mkswapdir(dir);
	umlmem_host_config_init(&cfg);
	cfg.resident_bytes = budget;
	cfg.swap_dir = dir;
	cfg.flags = UMLMEM_BACKGROUND;
	if (mode == IF_AGGRESSIVE) {
		cfg.dedup_pages = 100000;
		cfg.dedup_sleep_us = 1;
	}
	cr_assert_eq(umlmem_host_create(&cfg, &r.h), 0, "%s", umlmem_errmsg());
	if (mode == IF_NONE || mode == IF_LOOP)
		cr_assert_eq(umlmem_dedup_pause(r.h, 1), 0);
	r.shared = tu_guest(r.h, r.stripe * IF_THREADS);
	for (unsigned i = 0; i < IF_THREADS; i++)
		w[i] = (struct if_worker){
			.run = &r, .own = tu_guest(r.h, r.own_bytes), .id = i,
			.m_own = calloc(1, r.own_bytes), .m_shared = calloc(1, r.stripe),
		};
	t0 = if_now();
	if (mode == IF_LOOP)
		cr_assert_eq(pthread_create(&scanner, NULL, if_scanner, &r), 0);
	for (unsigned i = 0; i < IF_THREADS; i++)
		cr_assert_eq(pthread_create(&t[i], NULL, if_work, &w[i]), 0);
	for (unsigned i = 0; i < IF_THREADS; i++)
		pthread_join(t[i], NULL);
	secs = if_now() - t0;
	__atomic_store_n(&r.done, 1, __ATOMIC_RELEASE);
	if (mode == IF_LOOP)
		pthread_join(scanner, NULL);
	cr_expect_eq(r.scan_rc, 0, "umlmem_dedup_scan: %s", umlmem_strerror(r.scan_rc));

	for (unsigned i = 0; i < IF_THREADS; i++)
		cr_expect_eq(w[i].fail, 0, "%s: %s", names[mode], w[i].msg);
	rb = malloc(r.own_bytes > r.stripe ? r.own_bytes : r.stripe);
	for (unsigned i = 0; i < IF_THREADS; i++) {
		cr_assert_eq(umlmem_read(w[i].own, 0, rb, r.own_bytes), 0, "%s", umlmem_errmsg());
		cr_expect(memcmp(rb, w[i].m_own, r.own_bytes) == 0, "%s: guest %u differs at the end",
			  names[mode], i);
		cr_assert_eq(umlmem_read(r.shared, i * r.stripe, rb, r.stripe), 0);
		cr_expect(memcmp(rb, w[i].m_shared, r.stripe) == 0, "%s: stripe %u differs at the end",
			  names[mode], i);
	}
	cr_assert_eq(umlmem_host_info(r.h, &info, sizeof(info)), 0);
	cr_log_info("interference %-10s %7.3f s, %llu pages scanned, %llu merged, %llu passes",
		    names[mode], secs, (unsigned long long)info.pages_scanned,
		    (unsigned long long)info.pages_merged, (unsigned long long)info.full_scans);
	tu_check(r.h);
	umlmem_host_destroy(r.h);
	tu_rmswapdir(dir);
	for (unsigned i = 0; i < IF_THREADS; i++) {
		free(w[i].m_own);
		free(w[i].m_shared);
	}
	free(rb);
	return secs;
}

/* The workload (20,000 operations over 20 MiB on 3 MiB) at 12,000
   operations: a few seconds a run. Under valgrind and ThreadSanitizer a
   tenth of it, and only the bytes are checked: both change the timing of
   threads too much for a ratio to mean anything. */
#if defined(__SANITIZE_THREAD__)
#define IF_SLOW true
#else
#define IF_SLOW tu_valgrind()
#endif
#define IF_OPS     (IF_SLOW ? 1200 : 12000)
#define IF_TOUCHED (20 * TU_MiB)
#define IF_BUDGET  (3 * TU_MiB)
/* The goal is 1.5; the bound leaves room for a loaded machine. */
#define IF_BOUND   2.0

/* One test, the four runs one after the other: two tests running in
   parallel would time one's baseline against the other's scanning. */
Test(threads, interference, .timeout = 600)
{
	double a = if_run(IF_NONE, IF_OPS, IF_TOUCHED, IF_BUDGET);
	double b = if_run(IF_DEFAULT, IF_OPS, IF_TOUCHED, IF_BUDGET);
	double c = if_run(IF_LOOP, IF_OPS, IF_TOUCHED, IF_BUDGET);
	double d = if_run(IF_AGGRESSIVE, IF_OPS, IF_TOUCHED, IF_BUDGET);

	if (IF_SLOW)
		return;
	cr_expect_lt(b, IF_BOUND * a, "the merge thread at its defaults: %.3f s, %.1f times the "
		     "%.3f s with no scanning", b, b / a, a);
	cr_expect_lt(c, IF_BOUND * a, "a thread scanning in a loop: %.3f s, %.1f times the "
		     "%.3f s with no scanning", c, c / a, a);
	cr_expect_lt(d, IF_BOUND * a, "the merge thread at 100000 pages, 1 us: %.3f s, %.1f "
		     "times the %.3f s with no scanning", d, d / a, a);
}
