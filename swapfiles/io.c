/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The engine interface: picks an engine, runs batches through it and
 * injects faults for the tests.
 *
 * Fault injection sits here, in front of every engine, so each engine is
 * tested against the same failures without knowing about them. A request
 * that an injected fault marks is either never submitted (EIO, ENOSPC) or
 * submitted with half its length (SHORT), so that a torn page really
 * reaches the file or the buffer, as a crash or a failing disk would leave
 * it, and the caller's checksums have something real to catch.
 *
 * AUTO takes the first engine that starts: io_uring (direct transfers into
 * registered frames), then libaio (asynchronous only on O_DIRECT files),
 * then pread/pwrite, which runs everywhere. Each engine's init says in
 * e->note why it cannot run, and that sentence is what the caller sees in
 * @why, so a user learns what to change (a sysctl, RLIMIT_MEMLOCK, the swap
 * directory's filesystem) to get the better engine.
 *
 * The host's frame store reaches the engine after it is made
 * (io_engine_store), and by chunks as they fill and empty
 * (io_store_chunk): only io_uring has a use for it, fixed buffers that
 * follow the frames in use (io_uring.c).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/uio.h>
#include <string.h>

#include "swap.h"

int (*io_wait_hook)(void);

static void io_why(char *why, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void io_why(char *why, size_t len, const char *fmt, ...)
{
	va_list ap;

	if (!why || !len)
		return;
	va_start(ap, fmt);
	vsnprintf(why, len, fmt, ap);
	va_end(ap);
}

/* Runs @ops's init on @e, clean for each attempt. */
static int io_try(struct io_engine *e, const struct io_ops *ops, enum umlmem_io_engine kind,
		  struct swap *sw, void *store, size_t store_len)
{
	int rc;

	e->ops = ops;
	e->kind = kind;
	e->priv = NULL;
	e->note[0] = '\0';
	rc = ops->init(e, sw, store, store_len);
	if (rc < 0 && !e->note[0])
		snprintf(e->note, sizeof(e->note), "%s cannot start: %s", ops->name,
			 strerror(-rc));
	return rc;
}

int io_engine_create(enum umlmem_io_engine kind, struct swap *sw, void *store,
		     size_t store_len, struct io_engine **out, char *why, size_t whylen)
{
	char skipped[sizeof(((struct io_engine *)0)->note) + 16];
	struct io_engine *e;
	pthread_mutex_t *lock;
	int rc;

	io_why(why, whylen, "%s", "");
	if (!out || !sw)
		return -EINVAL;
	*out = NULL;
	if (kind != UMLMEM_IO_AUTO && kind != UMLMEM_IO_URING && kind != UMLMEM_IO_AIO &&
	    kind != UMLMEM_IO_SYNC) {
		io_why(why, whylen, "unknown I/O engine %d", (int)kind);
		return -EINVAL;
	}

	e = calloc(1, sizeof(*e));
	lock = malloc(sizeof(*lock));
	if (!e || !lock) {
		free(e);
		free(lock);
		return -ENOMEM;
	}
	rc = pthread_mutex_init(lock, NULL);
	if (rc) {
		free(e);
		free(lock);
		return -rc;
	}
	e->fault_lock = lock;

	switch (kind) {
	case UMLMEM_IO_AUTO:
		rc = io_try(e, &io_uring_ops, UMLMEM_IO_URING, sw, store, store_len);
		if (rc == 0) {
			io_why(why, whylen, "%s", e->note);
			break;
		}
		snprintf(skipped, sizeof(skipped), "%s", e->note);
		rc = io_try(e, &io_aio_ops, UMLMEM_IO_AIO, sw, store, store_len);
		if (rc == 0) {
			io_why(why, whylen, "io_uring skipped: %s; using libaio", skipped);
			break;
		}
		io_why(why, whylen, "io_uring skipped: %s; libaio skipped: %s; using pread/pwrite",
		       skipped, e->note);
		rc = io_try(e, &io_sync_ops, UMLMEM_IO_SYNC, sw, store, store_len);
		if (rc < 0)
			io_why(why, whylen, "no I/O engine can run: io_uring: %s; pread/pwrite: %s",
			       skipped, e->note);
		break;
	case UMLMEM_IO_URING:
		rc = io_try(e, &io_uring_ops, UMLMEM_IO_URING, sw, store, store_len);
		io_why(why, whylen, "%s", e->note);
		break;
	case UMLMEM_IO_AIO:
		rc = io_try(e, &io_aio_ops, UMLMEM_IO_AIO, sw, store, store_len);
		io_why(why, whylen, "%s", e->note);
		break;
	default:
		rc = io_try(e, &io_sync_ops, UMLMEM_IO_SYNC, sw, store, store_len);
		break;
	}
	if (rc < 0) {
		if (kind == UMLMEM_IO_SYNC)
			io_why(why, whylen, "%s", e->note);
		pthread_mutex_destroy(lock);
		free(lock);
		free(e);
		return rc;
	}
	*out = e;
	return 0;
}

void io_engine_destroy(struct io_engine *e)
{
	if (!e)
		return;
	if (e->ops && e->ops->fini)
		e->ops->fini(e);
	pthread_mutex_destroy(e->fault_lock);
	free(e->fault_lock);
	free(e->uri);
	free(e);
}

int io_engine_create_uri(const char *uri, struct swap *sw, struct io_engine **out, char *why,
			 size_t whylen)
{
	struct io_engine *e;
	pthread_mutex_t *lock;
	int rc;

	io_why(why, whylen, "%s", "");
	if (!out || !sw || !uri)
		return -EINVAL;
	*out = NULL;
	e = calloc(1, sizeof(*e));
	lock = malloc(sizeof(*lock));
	if (e)
		e->uri = strdup(uri);
	if (!e || !lock || !e->uri) {
		if (e)
			free(e->uri);
		free(e);
		free(lock);
		return -ENOMEM;
	}
	rc = pthread_mutex_init(lock, NULL);
	if (rc) {
		free(e->uri);
		free(e);
		free(lock);
		return -rc;
	}
	e->fault_lock = lock;
	/* not one of the file engines: umlmem_host_io_engine() says NBD */
	rc = io_try(e, &io_nbd_ops, UMLMEM_IO_NBD, sw, NULL, 0);
	io_why(why, whylen, "%s", e->note);
	if (rc < 0) {
		e->ops = NULL;
		io_engine_destroy(e);
		return rc;
	}
	*out = e;
	return 0;
}

void io_discard(void *arg, struct swap_range *r, unsigned n)
{
	struct io_engine *e = arg;

	if (e && e->ops->discard) {
		e->ops->discard(e, r, n);
		return;
	}
	for (unsigned i = 0; i < n; i++)
		r[i].res = -EOPNOTSUPP;
}

void io_inject(struct io_engine *e, enum io_op op, uint64_t nth, enum io_fault kind,
	       uint64_t count)
{
	if (!e || (op != IO_READ && op != IO_WRITE))
		return;
	pthread_mutex_lock(e->fault_lock);
	e->fault[op].kind = kind;
	e->fault[op].nth = __atomic_load_n(&e->seen[op], __ATOMIC_RELAXED) + (nth ? nth : 1);
	e->fault[op].count = count ? count : 1;
	/* pairs with io_mark()'s acquire load, as does the store that
	   disarms */
	__atomic_store_n(&e->fault_armed, e->fault[IO_READ].kind != IO_FAULT_NONE ||
					  e->fault[IO_WRITE].kind != IO_FAULT_NONE, __ATOMIC_RELEASE);
	pthread_mutex_unlock(e->fault_lock);
}

/*
 * Counts the batch and, while a fault is armed, marks the requests it hits by storing
 * the (positive) fault kind in their res, which no engine ever produces.
 * Returns how many were marked.
 */
static unsigned io_mark(struct io_engine *e, struct io_req *r, unsigned n)
{
	unsigned i, hit = 0;

	/* Nothing armed (always, outside tests): count, but take no lock on
	   the I/O path. */
	if (!__atomic_load_n(&e->fault_armed, __ATOMIC_ACQUIRE)) {	/* pairs with io_inject()'s release */
		for (i = 0; i < n; i++) {
			r[i].res = 0;
			__atomic_add_fetch(&e->seen[r[i].op & IO_WRITE], 1, __ATOMIC_RELAXED);
		}
		return 0;
	}
	pthread_mutex_lock(e->fault_lock);
	for (i = 0; i < n; i++) {
		unsigned op = r[i].op == IO_WRITE ? IO_WRITE : IO_READ;
		uint64_t k = __atomic_add_fetch(&e->seen[op], 1, __ATOMIC_RELAXED);

		r[i].res = 0;
		if (!e->fault_armed || e->fault[op].kind == IO_FAULT_NONE)
			continue;
		if (k < e->fault[op].nth)
			continue;
		if (k - e->fault[op].nth < e->fault[op].count) {
			r[i].res = (int32_t)e->fault[op].kind;
			hit++;
		}
		if (k - e->fault[op].nth + 1 >= e->fault[op].count) {
			e->fault[op].kind = IO_FAULT_NONE;
			__atomic_store_n(&e->fault_armed,
					 e->fault[IO_READ].kind != IO_FAULT_NONE ||
					 e->fault[IO_WRITE].kind != IO_FAULT_NONE, __ATOMIC_RELEASE);
		}
	}
	pthread_mutex_unlock(e->fault_lock);
	return hit;
}

static int by_place(const void *a, const void *b, void *arg)
{
	const struct io_req *r = arg;
	const struct io_req *x = &r[*(const unsigned *)a], *y = &r[*(const unsigned *)b];

	if (x->op != y->op)
		return x->op < y->op ? -1 : 1;
	if (x->file != y->file)
		return x->file < y->file ? -1 : 1;
	return x->off < y->off ? -1 : x->off > y->off;
}

/*
 * Runs @n unmarked requests through a vectored engine, merging pages that
 * are adjacent in one file (same direction, whole pages) into one IO_VEC
 * request each. A merged request that fails is redone page by page, so
 * that every page gets its own result, as if nothing had been merged.
 */
static void io_run_merged(struct io_engine *e, struct io_req *r, unsigned n)
{
	unsigned *idx = malloc(n * sizeof(*idx));
	unsigned *first = malloc(n * sizeof(*first));   /* per merged request: its run's start in idx */
	struct io_req *m = malloc(n * sizeof(*m));
	struct iovec *iov = malloc(n * sizeof(*iov));
	unsigned nm = 0, i, j;

	if (!idx || !first || !m || !iov) {
		free(idx);
		free(first);
		free(m);
		free(iov);
		e->ops->run(e, r, n);
		return;
	}
	for (i = 0; i < n; i++)
		idx[i] = i;
	qsort_r(idx, n, sizeof(*idx), by_place, r);
	for (i = 0; i < n; i = j) {
		const struct io_req *q = &r[idx[i]];

		for (j = i + 1; j < n && j - i < IO_RUN_MAX; j++) {
			const struct io_req *p = &r[idx[j - 1]], *c = &r[idx[j]];

			if (c->op != q->op || c->file != q->file || p->len != SWAP_PAGE ||
			    c->len != SWAP_PAGE || c->off != p->off + SWAP_PAGE)
				break;
		}
		first[nm] = i;
		m[nm] = *q;
		if (j - i > 1) {
			for (unsigned k = i; k < j; k++)
				iov[k] = (struct iovec){ r[idx[k]].buf, SWAP_PAGE };
			m[nm].op = (uint8_t)(q->op | IO_VEC);
			m[nm].iov = &iov[i];
			m[nm].niov = j - i;
			m[nm].len = (j - i) * SWAP_PAGE;
		}
		nm++;
	}
	e->ops->run(e, m, nm);
	for (unsigned k = 0; k < nm; k++) {
		unsigned a = first[k], b = k + 1 < nm ? first[k + 1] : n;

		if (!(m[k].op & IO_VEC)) {
			r[idx[a]].res = m[k].res;
			continue;
		}
		for (i = a; i < b; i++)
			r[idx[i]].res = 0;
		if (m[k].res)
			for (i = a; i < b; i++)
				e->ops->run(e, &r[idx[i]], 1);
	}
	free(idx);
	free(first);
	free(m);
	free(iov);
}

static void io_enter(struct io_engine *e, unsigned n)
{
	uint64_t now = __atomic_add_fetch(&e->inflight, n, __ATOMIC_RELAXED);
	uint64_t max = __atomic_load_n(&e->max_inflight, __ATOMIC_RELAXED);

	while (now > max && !__atomic_compare_exchange_n(&e->max_inflight, &max, now, 1,
							 __ATOMIC_RELAXED, __ATOMIC_RELAXED))
		;
}

unsigned io_run(struct io_engine *e, struct io_req *r, unsigned n)
{
	unsigned i, a, failed = 0;

	if (!n || !r)
		return 0;
	if (!e) {
		for (i = 0; i < n; i++)
			r[i].res = -EINVAL;
		return n;
	}
	io_enter(e, n);
	if (!io_mark(e, r, n)) {
		if (n > 1 && e->ops->vectored)
			io_run_merged(e, r, n);
		else
			e->ops->run(e, r, n);
	} else {
		/* runs of unmarked requests still go through as batches */
		for (a = 0; a < n; a = i) {
			struct io_req torn;

			for (i = a; i < n && r[i].res == 0; i++)
				;
			if (i > a) {
				e->ops->run(e, r + a, i - a);
				continue;
			}
			switch (r[i].res) {
			case IO_FAULT_SHORT:
				torn = r[i];
				/* half, kept a multiple of 512 for O_DIRECT */
				torn.len = (r[i].len / 2) & ~511u;
				if (torn.len)
					e->ops->run(e, &torn, 1);
				r[i].res = -EIO;
				break;
			case IO_FAULT_ENOSPC:
				r[i].res = -ENOSPC;
				break;
			default:
				r[i].res = -EIO;
				break;
			}
			i++;
		}
	}
	__atomic_fetch_sub(&e->inflight, n, __ATOMIC_RELAXED);
	for (i = 0; i < n; i++)
		failed += r[i].res != 0;
	return failed;
}

int io_engine_store(struct io_engine *e, void *store, size_t len, size_t chunk, char *why,
		    size_t whylen)
{
	int rc;

	if (!e || !store || !len || !chunk || chunk % SWAP_PAGE)
		return -EINVAL;
	if (!e->ops->store)
		return 0;
	e->note[0] = '\0';
	rc = e->ops->store(e, store, len, chunk);
	if (e->note[0])
		io_why(why, whylen, "%s", e->note);
	return rc;
}

void io_store_chunk(struct io_engine *e, uint64_t c, int on)
{
	if (e && e->ops->store_chunk)
		e->ops->store_chunk(e, c, on);
}
