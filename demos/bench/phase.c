/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * phase.c: the baseline file of the paging figures, and the timed phases
 * of random reads that several families run on umlmem and on that file.
 *
 * The baseline file is a swap set of the library's own kind, made with the
 * same code as a host's (through umlmem/testing.h) in the same directory,
 * so with the same O_DIRECT decision and the same filesystem, and read
 * through an I/O engine of the kind the hosts really use, into a
 * 4096-aligned buffer that the engine was given as its store (so the
 * io_uring engine reads it with READ_FIXED, as it reads frames). One 4 KiB
 * read at queue depth 1 is what one fault has to do at the least.
 *
 * A phase's readers start together (a condition variable), count their
 * operations in relaxed atomics that main samples, and stop at a relaxed
 * flag: the counts need no ordering with anything else, since main joins
 * every reader before it reads their errors.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "harness.h"
#include "testing.h"

void raw_close(struct rawfile *f)
{
	umlmem_test_disk_close(f->d);
	if (f->mem)
		munmap(f->mem, f->mem_bytes);
	free(f->slots);
	memset(f, 0, sizeof(*f));
}

/*
 * Opens a fresh swap set in the swap directory and an engine of the hosts'
 * kind on it, with @mem_pages of page-aligned memory as the engine's store.
 */
int raw_open(struct bench *b, struct result *r, struct rawfile *f, uint64_t npages,
	     unsigned mem_pages)
{
	const char *dir = bench_swap_dir(b);
	char err[512] = "";
	int rc;

	memset(f, 0, sizeof(*f));
	f->npages = npages;
	f->mem_bytes = (uint64_t)mem_pages * PAGE;
	f->mem = bench_map_pages(f->mem_bytes);
	f->slots = calloc(npages ? npages : 1, sizeof(*f->slots));
	if (!f->mem || !f->slots) {
		res_fail(r, RS_ERROR, "out of memory for the baseline's buffers");
		if (f->mem == NULL)
			f->mem_bytes = 0;
		raw_close(f);
		return -ENOMEM;
	}
	memset(f->mem, 0x5a, f->mem_bytes);
	rc = umlmem_test_disk_open(&f->d, dir, b->engine, f->mem, f->mem_bytes, err, sizeof(err));
	if (rc) {
		res_fail(r, RS_ERROR, "baseline: a %s disk in %s: %s", engine_name(b->engine), dir,
			 err[0] ? err : strerror(-rc));
		raw_close(f);
		return rc;
	}
	f->direct = umlmem_test_disk_direct(f->d);
	return 0;
}

int raw_write_batch(struct result *r, struct rawfile *f, uint64_t *slots, unsigned n)
{
	struct umlmem_test_io io[UMLMEM_TEST_IO_MAX];
	unsigned got, k, i;
	int rc;

	/* the pager asks for a batch of slots the same way */
	for (got = 0; got < n; got += k) {
		k = umlmem_test_disk_alloc(f->d, n - got, slots + got);
		if (!k) {
			res_fail(r, RS_ERROR, "baseline: no free slot in the swap set");
			return -ENOSPC;
		}
	}
	for (i = 0; i < n; i++)
		io[i] = (struct umlmem_test_io){ .slot = slots[i], .buf = f->mem + (uint64_t)i * PAGE,
						 .write = true };
	rc = umlmem_test_disk_io(f->d, io, n);
	if (rc)
		res_fail(r, RS_ERROR, "baseline: writing the file failed: %s", strerror(-rc));
	return rc;
}

int raw_fill(struct result *r, struct rawfile *f)
{
	uint64_t p, n;
	int rc;

	for (p = 0; p < f->npages; p += n) {
		n = f->npages - p < RAW_WRITE_PAGES ? f->npages - p : RAW_WRITE_PAGES;
		rc = raw_write_batch(r, f, f->slots + p, (unsigned)n);
		if (rc)
			return rc;
	}
	return 0;
}

int raw_read_random(struct rawfile *f, uint64_t *rng, void *buf)
{
	struct umlmem_test_io io = { .slot = f->slots[rng_below(rng, f->npages)], .buf = buf };

	return umlmem_test_disk_io(f->d, &io, 1);
}

/* ------------------------------------------------------------------------ */
/* Timed random-read phases, on umlmem or on the raw file                   */
/* ------------------------------------------------------------------------ */

struct phase;

struct worker {
	pthread_t tid;
	struct phase *ph;
	unsigned id;
	uint64_t rng;
	uint64_t ops;		/* written by the worker, sampled by main (atomics) */
	int err;
	char msg[256];
};

struct phase {
	int stop;		/* atomics */
	/* the readers start together, when main sets go */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool go;
	/* umlmem side */
	umlmem_host *h;
	umlmem_guest *g;
	/* raw side */
	struct rawfile *raw;
	uint64_t npages;
	struct worker w[RAW_THREADS_MAX];
	unsigned nthreads;
};

static void phase_wait(struct phase *ph)
{
	pthread_mutex_lock(&ph->lock);
	while (!ph->go)
		pthread_cond_wait(&ph->cond, &ph->lock);
	pthread_mutex_unlock(&ph->lock);
}

static void phase_go(struct phase *ph)
{
	pthread_mutex_lock(&ph->lock);
	ph->go = true;
	pthread_cond_broadcast(&ph->cond);
	pthread_mutex_unlock(&ph->lock);
}

static void *guest_reader(void *arg)
{
	struct worker *w = arg;
	struct phase *ph = w->ph;
	uint64_t v, page, word, ops = 0;
	int rc;

	phase_wait(ph);
	while (!__atomic_load_n(&ph->stop, __ATOMIC_RELAXED)) {
		page = rng_below(&w->rng, ph->npages);
		word = rng_below(&w->rng, WORDS);
		rc = umlmem_read(ph->g, page * PAGE + word * 8, &v, 8);
		if (rc) {
			w->err = rc;
			snprintf(w->msg, sizeof(w->msg), "umlmem_read of page %" PRIu64 ": %s: %s",
				 page, umlmem_strerror(rc), umlmem_errmsg());
			break;
		}
		if (v != word_of(page, word)) {
			w->err = -EUCLEAN;
			snprintf(w->msg, sizeof(w->msg), "page %" PRIu64 " word %" PRIu64
				 " read 0x%" PRIx64 ", expected 0x%" PRIx64, page, word, v,
				 word_of(page, word));
			break;
		}
		__atomic_store_n(&w->ops, ++ops, __ATOMIC_RELAXED);
	}
	return NULL;
}

static void *raw_reader(void *arg)
{
	struct worker *w = arg;
	struct phase *ph = w->ph;
	struct rawfile *f = ph->raw;
	/* the pages after the write batch: one per reader */
	uint8_t *buf = f->mem + (uint64_t)(RAW_WRITE_PAGES + w->id) * PAGE;
	uint64_t ops = 0;
	int rc;

	phase_wait(ph);
	while (!__atomic_load_n(&ph->stop, __ATOMIC_RELAXED)) {
		rc = raw_read_random(f, &w->rng, buf);
		if (rc) {
			w->err = rc;
			snprintf(w->msg, sizeof(w->msg), "raw read: %s", strerror(-rc));
			break;
		}
		__atomic_store_n(&w->ops, ++ops, __ATOMIC_RELAXED);
	}
	return NULL;
}

static uint64_t phase_ops(struct phase *ph)
{
	uint64_t sum = 0;

	for (unsigned i = 0; i < ph->nthreads; i++)
		sum += __atomic_load_n(&ph->w[i].ops, __ATOMIC_RELAXED);
	return sum;
}

struct phase *phase_new(struct result *r, uint64_t npages)
{
	struct phase *ph = calloc(1, sizeof(*ph));

	if (!ph) {
		res_fail(r, RS_ERROR, "out of memory");
		return NULL;
	}
	pthread_mutex_init(&ph->lock, NULL);
	pthread_cond_init(&ph->cond, NULL);
	ph->npages = npages;
	return ph;
}

void phase_free(struct phase *ph)
{
	if (!ph)
		return;
	pthread_mutex_destroy(&ph->lock);
	pthread_cond_destroy(&ph->cond);
	free(ph);
}

int run_slice(struct result *r, struct phase *ph, umlmem_host *h, umlmem_guest *g,
	      struct rawfile *raw, unsigned nthreads, uint64_t seed, double warm, double secs,
	      struct phase_out *out)
{
	struct umlmem_host_info i0, i1;
	struct umlmem_stats s0, s1;
	uint64_t ops0, ops1;
	double t0, t1;
	unsigned i, started = 0;
	int rc = 0;

	memset(&s0, 0, sizeof(s0));
	memset(&s1, 0, sizeof(s1));
	memset(&i0, 0, sizeof(i0));
	memset(&i1, 0, sizeof(i1));
	ph->h = h;
	ph->g = g;
	ph->raw = g ? NULL : raw;
	ph->stop = 0;
	ph->go = false;
	ph->nthreads = nthreads;
	for (i = 0; i < nthreads; i++) {
		struct worker *w = &ph->w[i];

		memset(w, 0, sizeof(*w));
		w->ph = ph;
		w->id = i;
		w->rng = seed * 1000003u + i;
		rng_next(&w->rng);
		rc = pthread_create(&w->tid, NULL, ph->g ? guest_reader : raw_reader, w);
		if (rc) {
			res_fail(r, RS_ERROR, "pthread_create: %s", strerror(rc));
			break;
		}
		started++;
	}
	if (started < nthreads) {
		__atomic_store_n(&ph->stop, 1, __ATOMIC_RELAXED);
		phase_go(ph);
		for (i = 0; i < started; i++)
			pthread_join(ph->w[i].tid, NULL);
		return -EAGAIN;
	}
	phase_go(ph);
	sleep_s(warm);

	if (ph->g) {
		umlmem_guest_stats(ph->g, &s0);
		umlmem_host_info(ph->h, &i0, sizeof(i0));
	}
	ops0 = phase_ops(ph);
	t0 = now_s();
	sleep_s(secs);
	t1 = now_s();
	ops1 = phase_ops(ph);
	if (ph->g) {
		umlmem_guest_stats(ph->g, &s1);
		umlmem_host_info(ph->h, &i1, sizeof(i1));
	}

	__atomic_store_n(&ph->stop, 1, __ATOMIC_RELAXED);
	for (i = 0; i < nthreads; i++)
		pthread_join(ph->w[i].tid, NULL);

	for (i = 0; i < nthreads; i++)
		if (ph->w[i].err) {
			res_fail(r, RS_ERROR, "thread %u: %s", i, ph->w[i].msg);
			return ph->w[i].err;
		}
	out->secs += t1 - t0;
	out->ops += ops1 - ops0;
	out->swap_ins += s1.swap_ins - s0.swap_ins;
	out->faults += s1.faults - s0.faults;
	out->ra_pages += i1.readahead_pages - i0.readahead_pages;
	out->ra_hits += i1.readahead_hits - i0.readahead_hits;
	return 0;
}

/* Each side warms up once, before its first slice. */
int run_compare(struct bench *b, struct result *r, struct phase *ph, unsigned nthreads,
		umlmem_host *h, umlmem_guest *g, struct rawfile *raw, struct phase_out *u,
		struct phase_out *base)
{
	unsigned rounds = b->quick ? 4 : 8, i;
	double slice = b->seconds / rounds;
	int rc;

	memset(u, 0, sizeof(*u));
	memset(base, 0, sizeof(*base));
	for (i = 0; i < rounds; i++) {
		rc = run_slice(r, ph, h, g, NULL, nthreads, 4 * i + nthreads, i ? 0 : b->warm,
			       slice, u);
		if (rc)
			return rc;
		rc = run_slice(r, ph, NULL, NULL, raw, nthreads, 4 * i + nthreads + 1000,
			       i ? 0 : b->warm, slice, base);
		if (rc)
			return rc;
	}
	return 0;
}
