/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * scan.c: what background work and other threads cost the faults of a
 * guest, and how the copy calls scale with threads.
 *
 * scan_interference -- seconds for 20,000 operations of 4 threads (random
 *   reads and writes of 1 B to 12 KiB; a quarter on a guest they share,
 *   each in its own stripe, the rest on a guest of their own; one write in
 *   eight of whole pages from a pool of 8 contents or zeros, so that pages
 *   merge) over 20 MiB on a 3 MiB budget, background reclaim on, every
 *   byte read compared with a per-thread model. Run four ways: none (no
 *   merge scanning: the baseline), default (the merge thread at its
 *   defaults), loop (a fifth thread calling umlmem_dedup_scan(512) in a
 *   loop), aggressive (the merge thread at dedup_pages 100000,
 *   dedup_sleep_us 1). The value is the slower of loop and aggressive;
 *   each run's time, pages scanned and merged are fields.
 *
 * thread_scaling -- operations per second of 1, 2, 4 and 8 threads, each
 *   on a guest of its own, for 1 s each (0.3 s with --quick): hits (8-byte
 *   reads of resident pages: the lock-free path), writes (8-byte writes to
 *   resident pages: host->lock, no fault) and faults (page reads of a data
 *   set 4 times the budget: a swap-in, and an eviction by the reclaim
 *   thread, per read). The value is the rate of writes at 8 threads, the
 *   baseline the same at 1 thread: their ratio is how far the locked path
 *   scales (on a machine with at least 8 CPUs; the CPUs are a field).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

enum { SI, TS };

/* ---- scan_interference --------------------------------------------------- */

#define SI_THREADS 4
#define SI_OPS     20000
#define SI_TOUCHED (20ull << 20)
#define SI_BUDGET  (3ull << 20)

enum si_mode { SI_NONE, SI_DEFAULT, SI_LOOP, SI_AGGRESSIVE, SI_MODES };
static const char *const si_names[SI_MODES] = { "none", "default", "loop", "aggressive" };

struct si_run {
	umlmem_host *h;
	umlmem_guest *shared;
	uint64_t own_bytes, stripe, ops;
	int done;                      /* atomic: the workers have finished */
	int scan_rc;
};

struct si_worker {
	struct si_run *run;
	umlmem_guest *own;
	uint8_t *m_own, *m_shared;
	unsigned id;
	int rc;                        /* first failure: a call's, or -EUCLEAN */
};

static void si_content(uint8_t *buf, uint64_t len, bool pooled, uint64_t *st)
{
	uint64_t s;

	if (!pooled) {
		s = rng_next(st);
		rng_fill(&s, buf, len);
		return;
	}
	for (uint64_t p = 0; p < len; p += PAGE) {
		uint64_t k = rng_below(st, 9), n = len - p < PAGE ? len - p : PAGE;

		s = 0xc0ffee + k;
		if (k == 8)
			memset(buf + p, 0, n);
		else
			rng_fill(&s, buf + p, n);
	}
}

static void *si_work(void *arg)
{
	struct si_worker *w = arg;
	struct si_run *r = w->run;
	uint8_t *buf = malloc(3 * PAGE), *rb = malloc(3 * PAGE);
	uint64_t st = 0x5eed + 131 * w->id;

	if (!buf || !rb)
		w->rc = -ENOMEM;
	for (uint64_t i = 0; i < r->ops && !w->rc; i++) {
		bool sh = rng_below(&st, 4) == 0;
		umlmem_guest *g = sh ? r->shared : w->own;
		uint64_t base = sh ? w->id * r->stripe : 0;
		uint64_t size = sh ? r->stripe : r->own_bytes;
		uint8_t *m = sh ? w->m_shared : w->m_own;
		bool pooled = rng_below(&st, 8) == 0;
		uint64_t len = pooled ? PAGE * (1 + rng_below(&st, 3)) : 1 + rng_below(&st, 3 * PAGE);
		uint64_t off = rng_below(&st, size - len + 1);

		if (pooled)
			off &= ~(PAGE - 1);
		if (rng_below(&st, 2)) {
			si_content(buf, len, pooled, &st);
			w->rc = umlmem_write(g, base + off, buf, len);
			if (!w->rc)
				memcpy(m + off, buf, len);
		} else {
			w->rc = umlmem_read(g, base + off, rb, len);
			if (!w->rc && memcmp(rb, m + off, len))
				w->rc = -EUCLEAN;
		}
	}
	free(buf);
	free(rb);
	return NULL;
}

static void *si_scanner(void *arg)
{
	struct si_run *r = arg;
	uint64_t m;

	while (!__atomic_load_n(&r->done, __ATOMIC_ACQUIRE) && !r->scan_rc)
		r->scan_rc = umlmem_dedup_scan(r->h, 512, &m);
	return NULL;
}

/* One run; its wall time in *secs, or -1 with the reason in @r. */
static int si_once(struct bench *b, struct result *r, enum si_mode mode, double *secs)
{
	struct umlmem_host_config cfg;
	struct umlmem_host_info info;
	struct si_run run = { 0 };
	struct si_worker w[SI_THREADS] = { 0 };
	pthread_t t[SI_THREADS], scanner;
	unsigned started = 0;
	char name[64];
	int rc = -1;
	double t0;

	run.stripe = SI_TOUCHED / 4 / SI_THREADS & ~(PAGE - 1);
	run.own_bytes = (SI_TOUCHED - run.stripe * SI_THREADS) / SI_THREADS & ~(PAGE - 1);
	run.ops = SI_OPS / SI_THREADS;
	umlmem_host_config_init(&cfg);
	cfg.resident_bytes = SI_BUDGET;
	cfg.swap_dir = bench_swap_dir(b);
	cfg.io = b->want_engine;
	cfg.flags = UMLMEM_BACKGROUND;
	if (mode == SI_AGGRESSIVE) {
		cfg.dedup_pages = 100000;
		cfg.dedup_sleep_us = 1;
	}
	if ((rc = umlmem_host_create(&cfg, &run.h))) {
		res_lib_fail(r, rc, "umlmem_host_create");
		return -1;
	}
	if (mode == SI_NONE || mode == SI_LOOP)
		umlmem_dedup_pause(run.h, 1);
	{
		struct umlmem_guest_config gc;

		umlmem_guest_config_init(&gc);
		gc.ram_bytes = run.stripe * SI_THREADS;
		gc.name = "bench-si-shared";
		if ((rc = umlmem_guest_create(run.h, &gc, &run.shared))) {
			res_lib_fail(r, rc, "umlmem_guest_create");
			goto out;
		}
		for (unsigned i = 0; i < SI_THREADS; i++) {
			snprintf(name, sizeof(name), "bench-si-%u", i);
			gc.ram_bytes = run.own_bytes;
			gc.name = name;
			w[i] = (struct si_worker){ .run = &run, .id = i,
						   .m_own = calloc(1, run.own_bytes),
						   .m_shared = calloc(1, run.stripe) };
			if (!w[i].m_own || !w[i].m_shared) {
				res_fail(r, RS_ERROR, "out of memory for the models");
				goto out;
			}
			if ((rc = umlmem_guest_create(run.h, &gc, &w[i].own))) {
				res_lib_fail(r, rc, "umlmem_guest_create");
				goto out;
			}
		}
	}
	t0 = now_s();
	if (mode == SI_LOOP && pthread_create(&scanner, NULL, si_scanner, &run)) {
		res_fail(r, RS_ERROR, "cannot start the scanning thread");
		goto out;
	}
	for (started = 0; started < SI_THREADS; started++)
		if (pthread_create(&t[started], NULL, si_work, &w[started]))
			break;
	for (unsigned i = 0; i < started; i++)
		pthread_join(t[i], NULL);
	*secs = now_s() - t0;
	__atomic_store_n(&run.done, 1, __ATOMIC_RELEASE);
	if (mode == SI_LOOP)
		pthread_join(scanner, NULL);
	rc = -1;
	if (started < SI_THREADS) {
		res_fail(r, RS_ERROR, "cannot start %u threads", SI_THREADS);
		goto out;
	}
	for (unsigned i = 0; i < SI_THREADS; i++)
		if (w[i].rc) {
			res_fail(r, RS_ERROR, "%s: thread %u: %s", si_names[mode], i,
				 w[i].rc == -EUCLEAN ? "a read returned other bytes than written"
						     : umlmem_strerror(w[i].rc));
			goto out;
		}
	if (run.scan_rc) {
		res_lib_fail(r, run.scan_rc, "umlmem_dedup_scan");
		goto out;
	}
	umlmem_host_info(run.h, &info, sizeof(info));
	snprintf(name, sizeof(name), "%s_s", si_names[mode]);
	res_num(r, name, *secs);
	snprintf(name, sizeof(name), "%s_scanned", si_names[mode]);
	res_int(r, name, (int64_t)info.pages_scanned);
	snprintf(name, sizeof(name), "%s_merged", si_names[mode]);
	res_int(r, name, (int64_t)info.pages_merged);
	snprintf(name, sizeof(name), "%s_passes", si_names[mode]);
	res_int(r, name, (int64_t)info.full_scans);
	bench_progress("scan_interference: %-10s %.2f s, %" PRIu64 " pages scanned, %" PRIu64
		       " merged", si_names[mode], *secs, info.pages_scanned, info.pages_merged);
	rc = 0;
out:
	umlmem_host_destroy(run.h);
	for (unsigned i = 0; i < SI_THREADS; i++) {
		free(w[i].m_own);
		free(w[i].m_shared);
	}
	return rc;
}

static void si_run_all(struct bench *b, struct result *r)
{
	double s[SI_MODES], worst;

	bench_progress("scan_interference: 4 threads, %d operations over 20 MiB on 3 MiB, "
		       "with no scanning, the merge thread, a scanning loop, an aggressive "
		       "merge thread", SI_OPS);
	for (int m = 0; m < SI_MODES; m++)
		if (si_once(b, r, (enum si_mode)m, &s[m]))
			return;
	worst = s[SI_LOOP] > s[SI_AGGRESSIVE] ? s[SI_LOOP] : s[SI_AGGRESSIVE];
	res_set(r, worst, s[SI_NONE], "s", true);
	for (int m = SI_DEFAULT; m < SI_MODES; m++) {
		char name[32];

		snprintf(name, sizeof(name), "%s_vs_none", si_names[m]);
		res_num(r, name, s[m] / s[SI_NONE]);
	}
	res_str(r, "baseline_mode", "the same operations with no merge scanning");
	res_note(r, "value: the slower of a umlmem_dedup_scan(512) loop and the merge thread at "
		 "100000 pages / 1 us; the goal is within 1.5 times the baseline");
}

/* ---- thread_scaling -------------------------------------------------------- */

enum ts_kind { TS_HIT, TS_WRITE, TS_FAULT, TS_KINDS };
static const char *const ts_names[TS_KINDS] = { "hits", "writes", "faults" };
static const unsigned ts_threads[] = { 1, 2, 4, 8 };
#define TS_MAXT 8

struct ts_worker {
	umlmem_guest *g;
	uint64_t pages, ops, seed;
	enum ts_kind kind;
	int *stop;
	int rc;
};

static void *ts_work(void *arg)
{
	struct ts_worker *w = arg;
	uint8_t page[PAGE];
	uint64_t st = w->seed, v = 0;

	while (!__atomic_load_n(w->stop, __ATOMIC_RELAXED) && !w->rc) {
		for (int i = 0; i < 64 && !w->rc; i++) {
			uint64_t p = rng_below(&st, w->pages);

			if (w->kind == TS_HIT)
				w->rc = umlmem_read(w->g, p * PAGE + 8 * rng_below(&st, WORDS), &v, 8);
			else if (w->kind == TS_WRITE)
				w->rc = umlmem_write(w->g, p * PAGE + 8 * rng_below(&st, WORDS), &v, 8);
			else
				w->rc = umlmem_read(w->g, p * PAGE, page, PAGE);
		}
		w->ops += 64;
	}
	return NULL;
}

/* Rate of @n threads doing @kind on their guests for @secs. */
static int ts_once(struct result *r, umlmem_guest **gs, uint64_t pages, enum ts_kind kind,
		   unsigned n, double secs, double *rate)
{
	struct ts_worker w[TS_MAXT];
	pthread_t t[TS_MAXT];
	int stop = 0;
	uint64_t ops = 0;
	double t0;

	for (unsigned i = 0; i < n; i++)
		w[i] = (struct ts_worker){ .g = gs[i], .pages = pages, .kind = kind,
					   .seed = 77 + i * 1000 + kind, .stop = &stop };
	t0 = now_s();
	for (unsigned i = 0; i < n; i++)
		if (pthread_create(&t[i], NULL, ts_work, &w[i])) {
			__atomic_store_n(&stop, 1, __ATOMIC_RELAXED);
			for (unsigned j = 0; j < i; j++)
				pthread_join(t[j], NULL);
			res_fail(r, RS_ERROR, "cannot start %u threads", n);
			return -1;
		}
	usleep((useconds_t)(secs * 1e6));
	__atomic_store_n(&stop, 1, __ATOMIC_RELAXED);
	for (unsigned i = 0; i < n; i++)
		pthread_join(t[i], NULL);
	t0 = now_s() - t0;
	for (unsigned i = 0; i < n; i++) {
		if (w[i].rc) {
			res_lib_fail(r, w[i].rc, ts_names[kind]);
			return -1;
		}
		ops += w[i].ops;
	}
	*rate = (double)ops / t0;
	return 0;
}

static void ts_run(struct bench *b, struct result *r)
{
	double secs = b->quick ? 0.3 : 1.0, rate[TS_KINDS][4];
	struct umlmem_host_config cfg;
	umlmem_guest *gs[TS_MAXT] = { 0 };
	umlmem_host *h = NULL;
	uint64_t budget = 64ull << 20, pages;
	char name[48];
	int rc;

	bench_progress("thread_scaling: hits, writes and faults of 1, 2, 4, 8 threads, "
		       "%.1f s each", secs);
	umlmem_host_config_init(&cfg);
	cfg.resident_bytes = budget;
	cfg.swap_dir = bench_swap_dir(b);
	cfg.io = b->want_engine;
	cfg.flags = UMLMEM_BACKGROUND;
	if ((rc = umlmem_host_create(&cfg, &h))) {
		res_lib_fail(r, rc, "umlmem_host_create");
		return;
	}
	umlmem_dedup_pause(h, 1);
	/* hits and writes: each thread's guest resident, half the budget in all */
	pages = budget / 2 / TS_MAXT / PAGE;
	for (unsigned i = 0; i < TS_MAXT; i++) {
		struct umlmem_guest_config gc;

		umlmem_guest_config_init(&gc);
		gc.ram_bytes = budget / 2 * 4;   /* room for the faults' data set */
		gc.flags = UMLMEM_GUEST_NOMERGE;
		snprintf(name, sizeof(name), "bench-ts-%u", i);
		gc.name = name;
		if ((rc = umlmem_guest_create(h, &gc, &gs[i]))) {
			res_lib_fail(r, rc, "umlmem_guest_create");
			goto out;
		}
		if (bench_fill_guest(r, gs[i], pages * PAGE, i, NULL))
			goto out;
	}
	for (unsigned k = 0; k < 4; k++) {
		if (ts_once(r, gs, pages, TS_HIT, ts_threads[k], secs, &rate[TS_HIT][k]) ||
		    ts_once(r, gs, pages, TS_WRITE, ts_threads[k], secs, &rate[TS_WRITE][k]))
			goto out;
	}
	/* faults: each thread's data set half the budget, 4 times it in all */
	pages = budget / 2 / PAGE;
	for (unsigned i = 0; i < TS_MAXT; i++)
		if (bench_fill_guest(r, gs[i], pages * PAGE, 100 + i, NULL))
			goto out;
	for (unsigned k = 0; k < 4; k++)
		if (ts_once(r, gs, pages, TS_FAULT, ts_threads[k], secs, &rate[TS_FAULT][k]))
			goto out;
	for (unsigned kind = 0; kind < TS_KINDS; kind++)
		for (unsigned k = 0; k < 4; k++) {
			snprintf(name, sizeof(name), "%s_per_s_%ut", ts_names[kind], ts_threads[k]);
			res_num(r, name, rate[kind][k]);
			bench_progress("thread_scaling: %-6s %u threads: %.0f/s", ts_names[kind],
				       ts_threads[k], rate[kind][k]);
		}
	res_set(r, rate[TS_WRITE][3], rate[TS_WRITE][0], "ops/s", false);
	res_int(r, "cpus", sysconf(_SC_NPROCESSORS_ONLN));
	res_str(r, "baseline_mode", "the same writes from 1 thread");
	res_note(r, "value: 8-byte writes of resident pages (host->lock, no fault) by 8 threads; "
		 "hits take no lock, faults read a page from swap each");
out:
	umlmem_host_destroy(h);
}

static void scan_run(struct bench *b, struct result **res)
{
	if (res[SI]->want)
		si_run_all(b, res[SI]);
	if (res[TS]->want)
		ts_run(b, res[TS]);
}

static const struct bench_key keys[] = {
	[SI] = { "scan_interference",
		"s for 20,000 random reads and writes of 4 threads with a scanning loop or an\n"
		"aggressive merge thread; baseline: with no merge scanning\n" },
	[TS] = { "thread_scaling",
		"ops/s of 8 threads writing resident pages (also: hits, faults at 1-8\n"
		"threads); baseline: 1 thread\n" },
	{ NULL },
};

const struct bench_family bench_scan = { "scan", keys, scan_run };
