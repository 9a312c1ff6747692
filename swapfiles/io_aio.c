/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The Linux native AIO engine (libaio): io_submit/io_getevents on O_DIRECT
 * swap files, for kernels or sandboxes without io_uring.
 *
 * O_DIRECT only. Linux AIO is asynchronous only for direct I/O; on a
 * buffered file io_submit performs the read or write itself before it
 * returns, which would make this a slower sync engine. So init refuses
 * (-ENOTSUP, with a note) when the swap set could not open its files with
 * O_DIRECT, and AUTO moves on to pread/pwrite.
 *
 * Why a pool of contexts. io_getevents returns whatever completed on a
 * context, so a thread waiting on a shared one could take another thread's
 * completions and the two would need a lock across submit and reap: one
 * batch at a time. Instead run() pops a context off a free stack (or sets up
 * a new one when the stack is empty), submits its whole batch, reaps every
 * completion and pushes the context back; the pool mutex covers only the
 * push and the pop. Each context costs a kernel ring of AIO_DEPTH events
 * and counts twice that against fs.aio-max-nr (65536 system-wide by
 * default); when io_setup refuses a new one while others exist, the thread
 * waits for one of those instead of failing.
 *
 * Preconditions: the swap files are O_DIRECT (checked), and each request's
 * buffer, offset and length are aligned as the device wants (struct
 * io_req's preconditions give 4096, 4096 and 512). The swap set's
 * descriptors are fixed after swap_open(). No run() is in progress at fini.
 * Nothing is registered: the kernel pins each buffer for the length of its
 * own I/O, so the frame store needs no locked memory.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <libaio.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "swap.h"

#define AIO_DEPTH	256u			/* requests in the kernel per context */
#define AIO_WAIT_TRIES	100u			/* failed waits, a nap apart, before a context is destroyed */
#define AIO_WAIT_SOME	(AIO_DEPTH / 4)		/* completions to wait for while more can be queued */

/*
 * As in io_uring.c: while a batch runs, a request's res is AIO_BUSY plus the
 * bytes moved so far (a short transfer is continued once); anything still
 * busy at the end has failed.
 */
#define AIO_BUSY	(1 << 20)
#define AIO_MOVED	(AIO_BUSY - 1)

struct aio_ctx {
	io_context_t ctx;
	struct aio_ctx *next;		/* free stack or dead list */
	unsigned nfree;
	unsigned freecb[AIO_DEPTH];	/* iocbs not in use */
	struct iocb cb[AIO_DEPTH];
	struct iocb *pend[AIO_DEPTH];	/* prepared, not yet taken by io_submit, in order */
	struct io_event ev[AIO_DEPTH];
};

struct aio_pool {
	/* pool lock: protects free, dead, nctx. A leaf lock; never held
	   across I/O or io_setup. */
	pthread_mutex_t lock;
	pthread_cond_t cond;		/* a context was pushed or one died */
	struct aio_ctx *free;
	struct aio_ctx *dead;		/* contexts that failed: freed at fini */
	unsigned nctx;			/* live contexts, in use or free */

	/* fixed after init */
	int fds[SWAP_MAX_FILES];
	unsigned nfiles;
};

static int aio_ctx_new(struct aio_ctx **out)
{
	struct aio_ctx *c;
	unsigned i;
	int rc;

	*out = NULL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	rc = io_setup((int)AIO_DEPTH, &c->ctx);
	if (rc < 0) {		/* libaio returns -errno */
		free(c);
		return rc;
	}
	for (i = 0; i < AIO_DEPTH; i++)
		c->freecb[i] = AIO_DEPTH - 1 - i;
	c->nfree = AIO_DEPTH;
	*out = c;
	return 0;
}

static void aio_ctx_free(struct aio_ctx *c)
{
	if (c->ctx)		/* 0: destroyed by aio_pass() */
		io_destroy(c->ctx);
	free(c);
}

static struct aio_ctx *aio_get(struct aio_pool *p, int *err)
{
	struct aio_ctx *c;
	int rc;

	pthread_mutex_lock(&p->lock);
	c = p->free;
	if (c) {
		p->free = c->next;
		pthread_mutex_unlock(&p->lock);
		return c;
	}
	p->nctx++;			/* counted while being set up */
	pthread_mutex_unlock(&p->lock);

	rc = aio_ctx_new(&c);
	if (rc == 0)
		return c;

	pthread_mutex_lock(&p->lock);
	p->nctx--;
	/* fs.aio-max-nr reached, or no memory: wait for a busy context */
	while (!p->free && p->nctx)
		pthread_cond_wait(&p->cond, &p->lock);
	c = p->free;
	if (c)
		p->free = c->next;
	pthread_mutex_unlock(&p->lock);
	if (!c)
		*err = rc;
	return c;
}

static void aio_put(struct aio_pool *p, struct aio_ctx *c, int dead)
{
	pthread_mutex_lock(&p->lock);
	if (dead) {
		c->next = p->dead;
		p->dead = c;
		p->nctx--;
		pthread_cond_broadcast(&p->cond);
	} else {
		c->next = p->free;
		p->free = c;
		pthread_cond_signal(&p->cond);
	}
	pthread_mutex_unlock(&p->lock);
}

/* Records that @res bytes (or -errno) came back for @q. */
static void aio_complete(struct io_req *q, long res)
{
	uint32_t moved = (uint32_t)q->res & AIO_MOVED;
	uint32_t want = q->len - moved;

	if (q->op & IO_VEC) {
		/* merged pages are never continued: io_run redoes them singly */
		q->res = res < 0 ? (res < -4095 ? -EIO : (int32_t)res) :
			 (unsigned long)res == q->len ? 0 : -EIO;
		return;
	}
	if (res < 0)
		q->res = res < -4095 ? -EIO : (int32_t)res;
	else if ((unsigned long)res == want)
		q->res = 0;
	else if (res == 0 || moved || (unsigned long)res > want)
		q->res = -EIO;	/* end of file, or short twice */
	else
		q->res = (int32_t)(AIO_BUSY | (moved + (uint32_t)res));
}

static void aio_nap(void)
{
	struct timespec ts = { 0, 1000 * 1000 };

	nanosleep(&ts, NULL);
}

/*
 * One pass over the batch on context @c: pass 0 submits every request,
 * pass 1 the rest of those that came back short. At most AIO_DEPTH requests
 * are in the kernel at once; a larger batch is fed in as completions free
 * iocbs. Returns 0, or the negative errno of a context that stopped working;
 * in either case only once no request of the batch is in the kernel.
 */
static int aio_pass(const struct aio_pool *p, struct aio_ctx *c, struct io_req *r, unsigned n,
		    int pass)
{
	unsigned nxt = 0, npend = 0, inflight = 0, failed_waits = 0, k;
	int fatal = 0;

	for (;;) {
		long min;
		int ret;

		while (!fatal && nxt < n && c->nfree) {
			struct io_req *q = &r[nxt];
			uint32_t moved;
			struct iocb *cb;

			if (q->res < AIO_BUSY || (pass && q->res == AIO_BUSY)) {
				nxt++;		/* done, or nothing to continue */
				continue;
			}
			if (q->file >= p->nfiles) {
				q->res = -EBADF;
				nxt++;
				continue;
			}
			moved = (uint32_t)q->res & AIO_MOVED;
			cb = &c->cb[c->freecb[--c->nfree]];
			if (q->op & IO_VEC) {
				if (q->op & IO_WRITE)
					io_prep_pwritev(cb, p->fds[q->file], q->iov, (int)q->niov,
							(long long)q->off);
				else
					io_prep_preadv(cb, p->fds[q->file], q->iov, (int)q->niov,
						       (long long)q->off);
			} else if (q->op == IO_WRITE)
				io_prep_pwrite(cb, p->fds[q->file], (char *)q->buf + moved,
					       q->len - moved, (long long)(q->off + moved));
			else
				io_prep_pread(cb, p->fds[q->file], (char *)q->buf + moved,
					      q->len - moved, (long long)(q->off + moved));
			cb->data = (void *)(uintptr_t)nxt;
			c->pend[npend++] = cb;
			nxt++;
		}
		if (!npend && !inflight)
			break;

		if (npend && !fatal) {
			ret = io_submit(c->ctx, (long)npend, c->pend);
			if (ret > 0) {
				/* io_submit may take only the first ret */
				npend -= (unsigned)ret;
				memmove(c->pend, c->pend + ret, npend * sizeof(*c->pend));
				inflight += (unsigned)ret;
			} else if (ret == 0 || ret == -EAGAIN || ret == -ENOMEM || ret == -EINTR) {
				/* out of kernel resources, or a signal: again */
				if (!inflight && ret != -EINTR)
					aio_nap();
			} else if (ret == -EBADF || ret == -EFAULT || ret == -EINVAL) {
				/* The first iocb was refused (a bad descriptor or
				   buffer, an alignment O_DIRECT does not take): that
				   request fails, the others still go in. A bad
				   context also says EINVAL, but then every iocb is
				   refused in turn and the batch still ends. */
				struct iocb *cb = c->pend[0];

				r[(uintptr_t)cb->data].res = ret;
				c->freecb[c->nfree++] = (unsigned)(cb - c->cb);
				npend--;
				memmove(c->pend, c->pend + 1, npend * sizeof(*c->pend));
			} else {
				fatal = ret;
			}
		}
		if (fatal && !inflight)
			break;
		if (!inflight)
			continue;

		/* wait for all when nothing more can go in, else for some */
		min = (long)inflight;
		if (!fatal && (npend || nxt < n) && min > (long)AIO_WAIT_SOME)
			min = AIO_WAIT_SOME;
		if (!fatal && npend && min > 1)
			min = 1;		/* io_submit was refused: make room soon */
		ret = io_wait_hook ? io_wait_hook() : 0;
		if (!ret)
			ret = io_getevents(c->ctx, min, (long)AIO_DEPTH, c->ev, NULL);
		if (ret < 0) {
			if (ret == -EINTR)
				continue;
			if (!fatal)
				fatal = ret;
			/* Nothing more goes in, but the kernel may still write
			   the buffers of what is in flight, frames the caller
			   reuses once told the requests failed: wait again, and
			   if the context cannot be waited on, destroy it, which
			   returns only once every request has completed. */
			if (++failed_waits < AIO_WAIT_TRIES) {
				aio_nap();
				continue;
			}
			io_destroy(c->ctx);
			c->ctx = 0;
			inflight = 0;
			break;
		}
		failed_waits = 0;
		for (k = 0; k < (unsigned)ret; k++) {
			struct iocb *cb = c->ev[k].obj;
			uintptr_t i = (uintptr_t)c->ev[k].data;

			if (i < n)
				aio_complete(&r[i], (long)c->ev[k].res);
			if (cb >= c->cb && cb < c->cb + AIO_DEPTH)
				c->freecb[c->nfree++] = (unsigned)(cb - c->cb);
		}
		inflight -= (unsigned)ret < inflight ? (unsigned)ret : inflight;
	}
	/* iocbs never submitted go back for the next batch */
	for (k = 0; k < npend; k++)
		c->freecb[c->nfree++] = (unsigned)(c->pend[k] - c->cb);
	return fatal;
}

static int aio_run(struct io_engine *e, struct io_req *r, unsigned n)
{
	struct aio_pool *p = e->priv;
	struct aio_ctx *c;
	unsigned i;
	int err = 0, fatal;

	c = aio_get(p, &err);
	if (!c) {
		for (i = 0; i < n; i++)
			r[i].res = err;
		return 0;
	}
	for (i = 0; i < n; i++)
		r[i].res = AIO_BUSY;
	fatal = aio_pass(p, c, r, n, 0);
	if (!fatal)
		fatal = aio_pass(p, c, r, n, 1);
	for (i = 0; i < n; i++)
		if (r[i].res >= AIO_BUSY)
			r[i].res = fatal ? fatal : -EIO;
	aio_put(p, c, fatal != 0);
	return 0;
}

static void aio_pool_free(struct aio_pool *p)
{
	struct aio_ctx *c;

	while ((c = p->free)) {
		p->free = c->next;
		aio_ctx_free(c);
	}
	while ((c = p->dead)) {
		p->dead = c->next;
		aio_ctx_free(c);
	}
	pthread_cond_destroy(&p->cond);
	pthread_mutex_destroy(&p->lock);
	free(p);
}

static int aio_init(struct io_engine *e, struct swap *sw, void *store, size_t store_len)
{
	struct aio_pool *p;
	struct aio_ctx *c;
	unsigned i;
	int rc;

	(void)store;
	(void)store_len;
	if (!swap_is_direct(sw)) {
		/* kept short: AUTO puts two notes in one sentence */
		snprintf(e->note, sizeof(e->note),
			 "the swap files are not O_DIRECT here, and Linux AIO on buffered files blocks in io_submit");
		return -ENOTSUP;
	}
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	if (pthread_mutex_init(&p->lock, NULL)) {
		free(p);
		return -ENOMEM;
	}
	if (pthread_cond_init(&p->cond, NULL)) {
		pthread_mutex_destroy(&p->lock);
		free(p);
		return -ENOMEM;
	}
	p->nfiles = swap_nfiles(sw);
	for (i = 0; i < p->nfiles; i++)
		p->fds[i] = swap_fd(sw, i);

	rc = aio_ctx_new(&c);
	if (rc < 0) {
		if (rc == -ENOSYS)
			snprintf(e->note, sizeof(e->note),
				 "Linux AIO is not available: the kernel has no io_setup");
		else if (rc == -EAGAIN)
			snprintf(e->note, sizeof(e->note),
				 "no Linux AIO context is left: sysctl fs.aio-max-nr is reached");
		else
			snprintf(e->note, sizeof(e->note), "io_setup failed: %s", strerror(-rc));
		pthread_cond_destroy(&p->cond);
		pthread_mutex_destroy(&p->lock);
		free(p);
		return -ENOTSUP;
	}
	p->free = c;
	p->nctx = 1;
	e->priv = p;
	return 0;
}

static void aio_fini(struct io_engine *e)
{
	if (e->priv)
		aio_pool_free(e->priv);
	e->priv = NULL;
}

const struct io_ops io_aio_ops = {
	.name = "libaio",
	.init = aio_init,
	.run = aio_run,
	.fini = aio_fini,
	.vectored = 1,
};
