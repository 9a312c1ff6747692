/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The NBD engine: swap on a network block device, through libnbd's
 * asynchronous API.
 *
 * Why an engine and not a tier of its own. Slots, clusters, checksums,
 * batching, readahead and the encryption of the swap layer are the same
 * for a file and for an export; only the place the bytes go differs. So
 * the export is a remote swap set (swap_open_remote) whose "file" i is the
 * i-th of swap_files equal ranges of the export, and this engine moves the
 * pages: a request (file, off) is the command at i * file_bytes + off, and
 * a freed cluster is trimmed (NBD_CMD_TRIM) where a file would be punched;
 * the trims of one punch batch (swap.c) are one batch here, all in flight
 * together.
 *
 * Requests in flight. A batch is issued as one nbd_aio_pread/pwrite per
 * request on one connection, all in flight at once, and concurrent faults
 * add theirs to the same connection without waiting for each other. One
 * waiting thread at a time drives the connection (nbd_poll),
 * leader/follower style: its poll runs the completion callbacks of every
 * waiter's commands, and when its own batch is done it passes the role on.
 * No thread is woken for a request that the caller's thread can complete
 * itself, which is what a single fault does. Where the server allows
 * multi-conn, there are up to NBD_CONNS connections, and each thread keeps
 * to one of them. Pages adjacent in the export (a batch of evictions, a
 * readahead), which io_run() merges into one IO_VEC request, go as one
 * command through a bounce buffer: libnbd has no vectored I/O, and a copy
 * of 256 KiB costs less than 63 more round trips through the server.
 *
 * Faults of the server. A server that dies or closes the socket fails its
 * commands in libnbd (their callbacks run with an error); a server that
 * stalls is caught by a deadline: a batch waits at most the timeout
 * ($UMLMEM_NBD_TIMEOUT_MS, IO_NBD_TIMEOUT_MS) and then closes the
 * connection, which fails every command still in flight on it. Either way
 * the requests fail with -EIO, the layers above keep their pages (a page
 * whose write failed stays dirty in its frame; a slot whose read failed
 * stays as it was), and the connection is closed: nbd_close() is the only
 * way to be sure that libnbd no longer holds a buffer, so a late reply can
 * never land in a frame that has been reused. The next batch connects
 * again, at most once per NBD_RETRY_MS while the server stays away, so a
 * burst of faults does not hammer it.
 *
 * Locks, per connection:
 *  - conn.rw (rwlock): who may use conn.h. Read: calls into libnbd on the
 *    handle (issuing commands, polling, trimming). Write: replacing the
 *    handle (connecting, closing). Never held while waiting for a batch.
 *  - conn.mu (mutex): conn.batches, conn.polling, conn.gen and every
 *    request record's result. Taken inside libnbd's own handle lock by the
 *    completion callbacks, so nothing calls into libnbd while holding it:
 *    the order is conn.rw, then libnbd's handle lock, then conn.mu.
 * The engine's fixed fields (conns, file_bytes, timeout) are set at init.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <libnbd.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "swap.h"

#define NBD_CONNS     8u     /* connections where the server allows multi-conn:
				as many as faulting threads are usual, so that
				each drives its own and none waits for another's
				poll (a wake-up on the other CPU) */
#define NBD_RETRY_MS  50u    /* least time between two connection attempts */
#define NBD_SLICE_MS  20     /* longest single nbd_poll: new commands of other
				threads may need the socket's write side */
#define NBD_IDLE_NS   1000000u   /* a connection idle this long is checked for a
				    hang-up before it is used (conn_hung_up) */
#define NBD_STACK_OPS 32u

struct nbd_conn;

/* One request of a batch in flight; the completion callback's user_data. */
struct nbd_op {
	struct nbd_batch *b;
	int32_t *res;        /* the io_req's res */
	int done;            /* under conn.mu */
	/* an IO_VEC request: one command through a bounce buffer (libnbd has
	   no vectored I/O), which a read scatters into req->iov when it
	   succeeds; freed by the issuing thread once the batch is done */
	void *bounce;
	const struct io_req *req;
};

/* A batch that a thread waits for, on conn.batches while it has commands
   in flight (so that closing the connection can fail them). */
struct nbd_batch {
	struct nbd_conn *c;
	struct nbd_op *ops;
	unsigned n;
	unsigned left;       /* ops not done; under conn.mu */
	struct nbd_batch *prev, *next;
};

struct nbd_conn {
	pthread_rwlock_t rw;         /* see the top of the file */
	struct nbd_handle *h;        /* NULL: not connected; under rw */
	uint64_t last_try_ns;        /* last failed connect; under rw (write) */
	uint64_t last_reply_ns;      /* when a batch last got its answers (atomic,
					relaxed: a hint for conn_hung_up) */

	pthread_mutex_t mu;
	pthread_cond_t cv;           /* a batch finished or the poller left; with mu */
	struct nbd_batch *batches;   /* with commands in flight on h; under mu */
	uint64_t gen;                /* bumped when h is closed; written under rw
					(write) and mu, so either lock reads it */
	int polling;                 /* a thread drives h; under mu */
};

struct nbd_eng {
	struct io_engine *e;
	const char *uri;             /* e->uri */
	unsigned nconns;             /* connections in use: conn[0, nconns) */
	unsigned nfiles;             /* of the swap set */
	uint64_t size;               /* of the export, at the first connect */
	uint64_t file_bytes;         /* one "file" of the swap set */
	unsigned timeout_ms;
	int can_trim;
	struct nbd_conn conn[NBD_CONNS];
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The completion callback: runs inside libnbd (its handle lock held), from
   whichever thread polls or closes the handle. */
static int nbd_done(void *arg, int *error)
{
	struct nbd_op *op = arg;
	struct nbd_batch *b = op->b;
	struct nbd_conn *c = b->c;

	pthread_mutex_lock(&c->mu);
	if (!op->done) {
		op->done = 1;
		*op->res = *error ? -EIO : 0;
		if (!*error && op->bounce && !(op->req->op & IO_WRITE)) {
			const char *p = op->bounce;

			for (uint32_t k = 0; k < op->req->niov; k++) {
				memcpy(op->req->iov[k].iov_base, p, op->req->iov[k].iov_len);
				p += op->req->iov[k].iov_len;
			}
		}
		if (!--b->left)
			pthread_cond_broadcast(&c->cv);
	}
	pthread_mutex_unlock(&c->mu);
	return 1;    /* retire the command */
}

/*
 * Opens a handle on the export and waits (at most the timeout) for it to
 * be ready. Returns it, or NULL with a sentence in @why and -errno in *rc.
 */
static struct nbd_handle *nbd_open(struct nbd_eng *ne, char *why, size_t whylen, int *rc)
{
	uint64_t deadline = now_ns() + (uint64_t)ne->timeout_ms * 1000000u;
	struct nbd_handle *h = nbd_create();

	if (!h) {
		snprintf(why, whylen, "libnbd cannot create a handle: %s", nbd_get_error());
		*rc = -ENOMEM;
		return NULL;
	}
	if (!nbd_supports_uri(h)) {
		snprintf(why, whylen, "this libnbd was built without URI support: swap_uri '%s' "
			 "cannot be used", ne->uri);
		*rc = -ENOTSUP;
		goto fail;
	}
	/* simple replies: a read is a header and the data, two receives,
	   where a structured reply takes four; swap has no use for holes */
	nbd_set_request_structured_replies(h, false);
	/* libnbd zeroes a read's buffer before it reads, so that a caller who
	   uses the buffer of a failed read sees no stale bytes; nothing here
	   does (a failed read leaves its frame unmapped and the slot as it
	   was), and the 4 KiB memset is a cost every fault would pay */
	nbd_set_pread_initialize(h, false);
	if (nbd_aio_connect_uri(h, ne->uri) < 0)
		goto nbd_fail;
	while (!nbd_aio_is_ready(h)) {
		uint64_t t = now_ns();

		if (nbd_aio_is_dead(h) || nbd_aio_is_closed(h))
			goto nbd_fail;
		if (t >= deadline) {
			snprintf(why, whylen, "NBD server of '%s' did not answer within %u ms",
				 ne->uri, ne->timeout_ms);
			*rc = -ETIMEDOUT;
			goto fail;
		}
		if (nbd_poll(h, (int)((deadline - t) / 1000000u) + 1) < 0)
			goto nbd_fail;
	}
	return h;
nbd_fail:
	*rc = nbd_get_errno() ? -nbd_get_errno() : -EIO;
	snprintf(why, whylen, "cannot connect to the NBD export '%s': %s", ne->uri,
		 nbd_get_error() ? nbd_get_error() : strerror(-*rc));
fail:
	nbd_close(h);
	return NULL;
}

/*
 * Closes @c's handle if it is still the one of generation @gen: every
 * command still in flight on it fails, so their batches are done. Caller
 * holds neither of @c's locks.
 */
static void conn_drop(struct nbd_conn *c, uint64_t gen)
{
	struct nbd_handle *h = NULL;
	struct nbd_batch *b;

	pthread_rwlock_wrlock(&c->rw);
	pthread_mutex_lock(&c->mu);
	if (c->gen == gen && c->h) {
		h = c->h;
		c->h = NULL;
	}
	pthread_mutex_unlock(&c->mu);
	if (h)
		nbd_close(h);    /* may run callbacks: c->mu is not held */
	pthread_mutex_lock(&c->mu);
	if (h) {
		c->gen++;
		for (b = c->batches; b; b = b->next)
			for (unsigned i = 0; i < b->n; i++)
				if (!b->ops[i].done) {
					b->ops[i].done = 1;
					*b->ops[i].res = -EIO;
					b->left--;
				}
		pthread_cond_broadcast(&c->cv);
	}
	pthread_mutex_unlock(&c->mu);
	pthread_rwlock_unlock(&c->rw);
}

/*
 * Whether the server of an idle connection has gone (its socket is hung
 * up). libnbd notices only when it next reads, which an idle connection
 * does not do; issuing on it would fail the batch with -EIO although a
 * restarted server may be waiting for a new connection. So a connection
 * idle for NBD_IDLE_NS or more is polled (no wait) before a batch uses it,
 * and reconnected if it is gone. One that answered more recently is not:
 * the poll is a system call on every fault of a busy connection, and a
 * server that dies within that span cannot have come back yet (a restart
 * takes far longer), so failing the batch (-EIO, as for any command in
 * flight when a server dies) is the right answer then; the next batch
 * reconnects. libnbd then reads the cookie of the command whose callback
 * has just retired it (nbd_internal_command_common: a read of freed
 * memory, which tests/valgrind.supp names). Caller holds c->rw for reading.
 */
static bool conn_hung_up(struct nbd_conn *c)
{
	struct pollfd p = { .fd = nbd_aio_get_fd(c->h), .events = POLLIN | POLLRDHUP };

	if (nbd_aio_in_flight(c->h) > 0 || p.fd < 0 ||
	    now_ns() - __atomic_load_n(&c->last_reply_ns, __ATOMIC_RELAXED) < NBD_IDLE_NS)
		return false;
	return poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLRDHUP | POLLERR));
}

/*
 * Makes sure @c has a live handle, connecting when it has none and the
 * last attempt is NBD_RETRY_MS old. Returns 0 with c->rw held for reading
 * and c->h set, or -EIO with no lock held.
 */
static int conn_get(struct nbd_eng *ne, struct nbd_conn *c)
{
	char why[256];
	int rc, ok;

	for (int tries = 0; tries < 2; tries++) {
		uint64_t gen;

		pthread_rwlock_rdlock(&c->rw);
		if (c->h && !nbd_aio_is_dead(c->h) && !nbd_aio_is_closed(c->h) && !conn_hung_up(c))
			return 0;
		ok = c->h != NULL;
		gen = c->gen;    /* stable while rw is held */
		pthread_rwlock_unlock(&c->rw);
		if (ok)
			conn_drop(c, gen);    /* dead: fail what it still holds */

		pthread_rwlock_wrlock(&c->rw);
		if (!c->h && now_ns() - c->last_try_ns >= (uint64_t)NBD_RETRY_MS * 1000000u) {
			struct nbd_handle *h = nbd_open(ne, why, sizeof(why), &rc);

			/* the same export? a smaller one would lose slots */
			if (h && nbd_get_size(h) < (int64_t)ne->size) {
				nbd_close(h);
				h = NULL;
			}
			if (h)
				c->h = h;
			else
				c->last_try_ns = now_ns();
		}
		ok = c->h != NULL;
		pthread_rwlock_unlock(&c->rw);
		if (!ok)
			return -EIO;
	}
	return -EIO;
}

static void op_fail(struct nbd_conn *c, struct nbd_op *op)
{
	pthread_mutex_lock(&c->mu);
	if (!op->done) {
		op->done = 1;
		*op->res = -EIO;
		op->b->left--;
	}
	pthread_mutex_unlock(&c->mu);
}

/*
 * Waits until every op of @b is done, driving the connection while no
 * other thread does, and drops the connection when @deadline passes
 * first. @b is on c->batches; it leaves the list here. Caller holds no lock.
 */
static void nbd_wait(struct nbd_conn *c, struct nbd_batch *b, uint64_t deadline)
{
	pthread_mutex_lock(&c->mu);
	while (b->left) {
		uint64_t t = now_ns(), gen = c->gen;
		int bad = 0;

		if (t >= deadline) {
			pthread_mutex_unlock(&c->mu);
			conn_drop(c, gen);
			pthread_mutex_lock(&c->mu);
			continue;
		}
		if (c->polling) {
			struct timespec ts;
			uint64_t ns = deadline - t;

			if (ns > (uint64_t)NBD_SLICE_MS * 1000000u)
				ns = (uint64_t)NBD_SLICE_MS * 1000000u;
			ts.tv_sec = (time_t)((t + ns) / 1000000000u);
			ts.tv_nsec = (long)((t + ns) % 1000000000u);
			pthread_cond_timedwait(&c->cv, &c->mu, &ts);
			continue;
		}
		c->polling = 1;
		pthread_mutex_unlock(&c->mu);
		pthread_rwlock_rdlock(&c->rw);
		if (c->h && c->gen == gen) {
			uint64_t ms = (deadline - t) / 1000000u + 1;

			if (nbd_poll(c->h, ms < NBD_SLICE_MS ? (int)ms : NBD_SLICE_MS) < 0 ||
			    nbd_aio_is_dead(c->h) || nbd_aio_is_closed(c->h))
				bad = 1;
		}
		pthread_rwlock_unlock(&c->rw);
		pthread_mutex_lock(&c->mu);
		c->polling = 0;
		pthread_cond_broadcast(&c->cv);    /* the next waiter may drive */
		if (bad) {
			pthread_mutex_unlock(&c->mu);
			conn_drop(c, gen);
			pthread_mutex_lock(&c->mu);
		}
	}
	if (b->prev)
		b->prev->next = b->next;
	else if (c->batches == b)
		c->batches = b->next;
	if (b->next)
		b->next->prev = b->prev;
	pthread_mutex_unlock(&c->mu);
}

/* Puts @b, with all its ops pending, on c->batches. */
static void batch_link(struct nbd_conn *c, struct nbd_batch *b)
{
	pthread_mutex_lock(&c->mu);
	for (unsigned i = 0; i < b->n; i++)
		b->ops[i].done = 0;
	b->left = b->n;
	b->prev = NULL;
	b->next = c->batches;
	if (c->batches)
		c->batches->prev = b;
	c->batches = b;
	pthread_mutex_unlock(&c->mu);
}

/* Each thread keeps to one connection, its own number modulo the
   connections: one faulting thread always finds the same server thread
   awake, and threads spread over the connections evenly. */
static unsigned nbd_threads;       /* threads numbered so far (atomic) */
static __thread unsigned nbd_thread_no;   /* 0: not yet numbered, else 1 + its number */

static struct nbd_conn *conn_pick(struct nbd_eng *ne)
{
	if (!nbd_thread_no)
		nbd_thread_no = 1 + __atomic_fetch_add(&nbd_threads, 1, __ATOMIC_RELAXED);
	return &ne->conn[(nbd_thread_no - 1) % ne->nconns];
}

static uint64_t deadline_of(const struct nbd_eng *ne)
{
	return now_ns() + (uint64_t)ne->timeout_ms * 1000000u;
}

static int nbd_run(struct io_engine *e, struct io_req *r, unsigned n)
{
	struct nbd_eng *ne = e->priv;
	struct nbd_op stack_ops[NBD_STACK_OPS], *ops = stack_ops;
	struct nbd_conn *c = conn_pick(ne);
	struct nbd_batch b = { .c = c, .n = n };
	uint64_t deadline = deadline_of(ne);
	unsigned i;

	for (i = 0; i < n; i++)
		r[i].res = -EIO;
	if (n > NBD_STACK_OPS) {
		ops = malloc(n * sizeof(*ops));
		if (!ops) {
			/* no memory for the records: one request at a time */
			for (i = 0; i < n; i++)
				nbd_run(e, &r[i], 1);
			return 0;
		}
	}
	b.ops = ops;
	for (i = 0; i < n; i++)
		ops[i] = (struct nbd_op){ .b = &b, .res = &r[i].res, .done = 1, .req = &r[i] };
	if (conn_get(ne, c) < 0)
		goto out;
	batch_link(c, &b);
	for (i = 0; i < n; i++) {
		nbd_completion_callback cb = { .callback = nbd_done, .user_data = &ops[i] };
		uint64_t off = (uint64_t)r[i].file * ne->file_bytes + r[i].off;
		int64_t cookie;

		void *buf = r[i].buf;

		if (r[i].file >= ne->nfiles || r[i].off + r[i].len > ne->file_bytes) {
			op_fail(c, &ops[i]);
			continue;
		}
		if (r[i].op & IO_VEC) {
			/* io_run() redoes a failed one page by page */
			buf = ops[i].bounce = malloc(r[i].len);
			if (!buf) {
				op_fail(c, &ops[i]);
				continue;
			}
			if (r[i].op & IO_WRITE) {
				char *p = buf;

				for (uint32_t k = 0; k < r[i].niov; k++) {
					memcpy(p, r[i].iov[k].iov_base, r[i].iov[k].iov_len);
					p += r[i].iov[k].iov_len;
				}
			}
		}
		if (r[i].op & IO_WRITE)
			cookie = nbd_aio_pwrite(c->h, buf, r[i].len, off, cb, 0);
		else
			cookie = nbd_aio_pread(c->h, buf, r[i].len, off, cb, 0);
		if (cookie < 0)
			op_fail(c, &ops[i]);
	}
	pthread_rwlock_unlock(&c->rw);
	nbd_wait(c, &b, deadline);
	if (n && r[0].res == 0)
		__atomic_store_n(&c->last_reply_ns, now_ns(), __ATOMIC_RELAXED);
	/* no command holds a bounce buffer now: each is done or its
	   connection closed */
	for (i = 0; i < n; i++)
		free(ops[i].bounce);
out:
	if (ops != stack_ops)
		free(ops);
	return 0;
}

/* The trims of @n ranges, issued as one batch: all in flight at once, as
   the requests of nbd_run() are. */
static void nbd_discard(struct io_engine *e, struct swap_range *r, unsigned n)
{
	struct nbd_eng *ne = e->priv;
	struct nbd_op stack_ops[NBD_STACK_OPS], *ops = stack_ops;
	int32_t stack_res[NBD_STACK_OPS], *res = stack_res;
	struct nbd_conn *c = conn_pick(ne);
	struct nbd_batch b = { .c = c, .n = n };
	unsigned i;

	for (i = 0; i < n; i++)
		r[i].res = ne->can_trim ? -EIO : -EOPNOTSUPP;
	if (!ne->can_trim || !n)
		return;
	if (n > NBD_STACK_OPS) {
		ops = malloc(n * sizeof(*ops));
		res = malloc(n * sizeof(*res));
		if (!ops || !res) {
			/* no memory for the records: one range at a time */
			free(ops);
			free(res);
			for (i = 0; i < n; i++)
				nbd_discard(e, &r[i], 1);
			return;
		}
	}
	b.ops = ops;
	for (i = 0; i < n; i++) {
		res[i] = -EIO;
		ops[i] = (struct nbd_op){ .b = &b, .res = &res[i], .done = 1 };
	}
	if (conn_get(ne, c) < 0)
		goto out;
	batch_link(c, &b);
	for (i = 0; i < n; i++) {
		nbd_completion_callback cb = { .callback = nbd_done, .user_data = &ops[i] };

		if (r[i].file >= ne->nfiles || r[i].off + r[i].len > ne->file_bytes) {
			op_fail(c, &ops[i]);
			res[i] = -EINVAL;    /* done: nothing else writes it */
			continue;
		}
		if (nbd_aio_trim(c->h, r[i].len, (uint64_t)r[i].file * ne->file_bytes + r[i].off,
				 cb, 0) < 0)
			op_fail(c, &ops[i]);
	}
	pthread_rwlock_unlock(&c->rw);
	nbd_wait(c, &b, deadline_of(ne));
	for (i = 0; i < n; i++)
		r[i].res = res[i];
out:
	if (ops != stack_ops) {
		free(ops);
		free(res);
	}
}

static int conn_init(struct nbd_conn *c)
{
	pthread_rwlockattr_t ra;
	pthread_condattr_t ca;
	int rc;

	/* a closer must not wait behind a stream of new readers */
	pthread_rwlockattr_init(&ra);
	pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	rc = pthread_rwlock_init(&c->rw, &ra);
	pthread_rwlockattr_destroy(&ra);
	if (rc)
		return -rc;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	rc = pthread_cond_init(&c->cv, &ca);
	pthread_condattr_destroy(&ca);
	if (!rc) {
		rc = pthread_mutex_init(&c->mu, NULL);
		if (rc)
			pthread_cond_destroy(&c->cv);
	}
	if (rc) {
		pthread_rwlock_destroy(&c->rw);
		return -rc;
	}
	return 0;
}

static void conn_fini(struct nbd_conn *c)
{
	if (c->h)
		nbd_close(c->h);
	c->h = NULL;
	pthread_mutex_destroy(&c->mu);
	pthread_cond_destroy(&c->cv);
	pthread_rwlock_destroy(&c->rw);
}

static void nbd_free(struct nbd_eng *ne, unsigned ninit)
{
	for (unsigned i = 0; i < ninit; i++)
		conn_fini(&ne->conn[i]);
	free(ne);
}

static unsigned nbd_timeout(void)
{
	const char *s = getenv("UMLMEM_NBD_TIMEOUT_MS");
	char *end;
	unsigned long v;

	if (!s || !*s)
		return IO_NBD_TIMEOUT_MS;
	v = strtoul(s, &end, 10);
	return *end || !v || v > 3600000u ? IO_NBD_TIMEOUT_MS : (unsigned)v;
}

static int nbd_init(struct io_engine *e, struct swap *sw, void *store, size_t store_len)
{
	struct nbd_eng *ne;
	struct nbd_handle *h;
	uint64_t usable, cap;
	unsigned i, ninit = 0;
	int rc, multi;

	(void)store;
	(void)store_len;
	if (!e->uri || !swap_is_remote(sw)) {
		snprintf(e->note, sizeof(e->note), "the NBD engine needs a URI and a remote swap set");
		return -EINVAL;
	}
	ne = calloc(1, sizeof(*ne));
	if (!ne)
		return -ENOMEM;
	ne->e = e;
	ne->uri = e->uri;
	ne->nfiles = swap_nfiles(sw);
	ne->timeout_ms = nbd_timeout();
	for (ninit = 0; ninit < NBD_CONNS; ninit++) {
		rc = conn_init(&ne->conn[ninit]);
		if (rc) {
			snprintf(e->note, sizeof(e->note), "cannot initialise a lock: %s",
				 strerror(-rc));
			goto fail;
		}
	}
	h = nbd_open(ne, e->note, sizeof(e->note), &rc);
	if (!h)
		goto fail;
	ne->conn[0].h = h;
	if (nbd_get_size(h) < 0 || nbd_is_read_only(h) != 0) {
		rc = nbd_get_size(h) < 0 ? -EIO : -EROFS;
		snprintf(e->note, sizeof(e->note), "the NBD export '%s' %s", e->uri,
			 rc == -EROFS ? "is read-only: swap needs a writable export" :
			 "does not say its size");
		goto fail;
	}
	ne->size = (uint64_t)nbd_get_size(h);
	ne->can_trim = nbd_can_trim(h) == 1;
	multi = nbd_can_multi_conn(h) == 1;
	ne->file_bytes = ne->size / ne->nfiles / SWAP_CLUSTER_BYTES * SWAP_CLUSTER_BYTES;
	usable = ne->file_bytes * ne->nfiles;
	cap = swap_cap(sw);
	if (!usable || cap > usable) {
		rc = -ENOSPC;
		snprintf(e->note, sizeof(e->note), "swap_bytes %llu does not fit on the NBD export "
			 "'%s' of %llu bytes (%llu usable in %u range(s) of whole %llu KiB "
			 "clusters): lower swap_bytes (0: the whole export) or use a larger export",
			 (unsigned long long)cap, e->uri, (unsigned long long)ne->size,
			 (unsigned long long)usable, ne->nfiles,
			 (unsigned long long)(SWAP_CLUSTER_BYTES / 1024));
		goto fail;
	}
	if (!cap)
		swap_set_cap(sw, usable);
	ne->nconns = 1;
	for (i = 1; multi && i < NBD_CONNS; i++) {
		char why[256];

		ne->conn[i].h = nbd_open(ne, why, sizeof(why), &rc);
		if (!ne->conn[i].h)
			break;
		ne->nconns++;
	}
	if (!multi)
		snprintf(e->note, sizeof(e->note), "the NBD server does not allow multi-conn: "
			 "one connection");
	e->priv = ne;
	return 0;
fail:
	nbd_free(ne, ninit);
	return rc;
}

static void nbd_fini(struct io_engine *e)
{
	struct nbd_eng *ne = e->priv;

	if (ne)
		nbd_free(ne, NBD_CONNS);
	e->priv = NULL;
}

const struct io_ops io_nbd_ops = {
	.name = "nbd",
	.init = nbd_init,
	.run = nbd_run,
	.fini = nbd_fini,
	.discard = nbd_discard,
	.vectored = 1,
};
