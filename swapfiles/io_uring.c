/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The io_uring engine (liburing): the default.
 *
 * Direct transfers. Every ring registers the store it is given as fixed buffers
 * (iovecs of at most 1 GiB, the most one registered buffer may span: buffer
 * k is [store + k GiB, store + (k + 1) GiB)) and the swap files as fixed
 * files. A page-in or page-out of a frame is then one READ_FIXED or
 * WRITE_FIXED with IOSQE_FIXED_FILE: the kernel builds the transfer from the
 * pages it pinned at registration, with no page-table walk and no file
 * lookup per request, and with O_DIRECT the data goes straight between the
 * disk and the frame. A buffer outside the store (a caller's aligned page)
 * goes through plain READ/WRITE on the fixed file; nothing is copied either,
 * the kernel just pins that page for the length of its own I/O.
 *
 * Why a pool of rings. A ring is a single-producer queue, and a thread that
 * waits on it reaps whatever completes, its own requests or not. Sharing one
 * ring would need a lock held from submission to the last completion: one
 * batch at a time. Instead run() pops a ring off a free stack (or makes a new
 * one when the stack is empty), submits its whole batch on it, reaps all of
 * its completions and pushes the ring back. The pool mutex covers only the
 * push and the pop, so threads never wait for each other's I/O; the pool
 * grows to the most threads that were ever in run() at once (each ring is
 * some 30 KiB of memory and one file descriptor) and shrinks at fini. If a
 * new ring cannot be made while others exist, the thread waits for one of
 * those instead of failing.
 *
 * What registration costs. Registering pins every page of the store
 * (FOLL_LONGTERM): the memfd's pages are allocated and zeroed there and
 * then, so the whole budget becomes resident when the engine starts rather
 * than as frames are first used (the budget allows it: it is the most the
 * host may hold), and the time the first touch of each frame would have
 * cost is spent up front: 0.7 to 3 s per GiB on the machine this was
 * measured on, where pinning pages already present takes 25 ms per GiB
 * (tests/test_engines.c logs it). The kernel also keeps a page array of
 * 16 bytes per 4 KiB page (4 MiB per GiB). Without CAP_IPC_LOCK the pinned
 * bytes count against RLIMIT_MEMLOCK, and on recent kernels so do the
 * rings, some 28 KiB each.
 *
 * Registration belongs to a ring, so a second ring would pin and charge it
 * all again. From Linux 6.12 the store is registered once, on a one-entry
 * "holder" ring that does no I/O, and every ring of the pool clones that
 * registration (IORING_REGISTER_CLONE_BUFFERS, newer than liburing 2.3,
 * hence the raw system call): pins and charge are shared and a new ring
 * costs next to nothing. The source is a ring of its own because cloning
 * locks the source ring, and a ring whose submitter is stuck in the kernel
 * (a fault on its buffer, a filesystem lock) holds that lock: cloning from a
 * working ring could make a new ring wait for another thread's I/O. Older
 * kernels register in full on every ring.
 *
 * Without the locked memory for it (RLIMIT_MEMLOCK below the store's size
 * and no CAP_IPC_LOCK, checked first because a registration the kernel
 * refuses for the limit has faulted in the whole store all the same; or
 * ENOMEM from the kernel) the engine does not fail: its rings do plain
 * READ/WRITE on the frames, and the engine note says so. A later ring that
 * cannot register runs the same way on its own. Registering the swap files
 * (at most 64) costs nothing worth mentioning.
 *
 * A store that comes and goes. The host's frame store is a limit, not a
 * reservation: its pages come with the frames made and go back to the
 * kernel when frames are freed (umlmem/frames.c), so it is not given at
 * init (that would pin the whole budget and forbid giving pages back) but
 * through uring_store(), cut in chunks of 2 MiB or more, one slot of a
 * sparse buffer table each (Linux 5.19), on the holder ring. frames.c
 * calls io_store_chunk(c, on) once every frame of chunk c holds memory:
 * the holder registers it, pinning pages that are there already, so the
 * pins never exceed the store's memory and are 0 at creation. Before any
 * frame of the chunk is given back it calls io_store_chunk(c, off): the
 * holder drops the slot and every free ring copies the holder's table at
 * once (a clone in place, IORING_REGISTER_DST_REPLACE: Linux 6.13), a busy
 * ring when it is put back; a ring taken copies the chunks registered
 * since. A ring therefore never uses a slot of a chunk that was given back
 * before its batch was made: the frames of a batch are its own from before
 * the ring is taken until it is put back, and none of them is given back
 * meanwhile. Page-outs and page-ins of frames in registered chunks are
 * WRITE_FIXED and READ_FIXED, and merged runs of them READV_FIXED and
 * WRITEV_FIXED (Linux 6.15, probed): the kernel pins nothing per request,
 * where plain READ/WRITE pins each page for the length of its I/O. Frames
 * of chunks not registered (yet) go through plain requests. README
 * ("Memory") has the figures.

 * Preconditions. A store given at init stays mapped, with the same pages,
 * from init to fini, and a chunk of one given by uring_store from its
 * registration to its io_store_chunk(off): a registration holds the pages
 * the store had when it was made, so punching a hole in the memfd
 * (fallocate PUNCH_HOLE, MADV_REMOVE) or remapping the store would leave
 * the rings moving data to and from pages the store no longer shows. The swap set's descriptors are fixed after
 * swap_open(). Requests meet struct io_req's preconditions; alignment for
 * O_DIRECT is theirs. No run() is in progress at fini.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/capability.h>
#include <liburing.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "swap.h"

#if defined(__has_include)
#if __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#endif
#endif
/* Memcheck cannot see the kernel read or write buffers named in an SQE:
   say what a pread or pwrite would have told it. No-ops elsewhere. */
#ifndef VALGRIND_MAKE_MEM_DEFINED
#define VALGRIND_MAKE_MEM_DEFINED(addr, len) ((void)(addr), (void)(len))
#endif
#ifndef VALGRIND_CHECK_MEM_IS_DEFINED
#define VALGRIND_CHECK_MEM_IS_DEFINED(addr, len) ((void)(addr), (void)(len))
#endif

#define URING_DEPTH	256u			/* SQ entries; the CQ gets twice that */
#define URING_WAIT_SOME	(URING_DEPTH / 4)	/* completions to wait for while more can be queued */
#define URING_CHUNK	(1ull << 30)		/* the most one registered buffer spans */
#define URING_MAX_BUFS	(1u << 14)		/* the most buffers a table holds */

/* Linux 6.15; liburing 2.3 has neither opcode: prepared as READV/WRITEV,
   then given the opcode and the buffer's index. */
#define URING_OP_READV_FIXED	60
#define URING_OP_WRITEV_FIXED	61

/* Linux 6.12; liburing 2.3 has neither the opcode nor the argument. */
#define URING_REGISTER_CLONE_BUFFERS 30
struct uring_clone_arg {
	uint32_t src_fd;
	uint32_t flags;
	uint32_t src_off;
	uint32_t dst_off;
	uint32_t nr;		/* 0: all of the source's buffers */
	uint32_t pad[3];
};
#define URING_CLONE_DST_REPLACE	(1u << 1)	/* Linux 6.13: over a table in place */

/*
 * While a batch runs, a request's res is URING_BUSY plus the bytes it has
 * moved so far (a short transfer is continued once); only when it is done
 * does it get its final 0 or -errno. Lengths are at most 4096, so the two
 * never meet, and anything still busy at the end is a failure.
 */
#define URING_BUSY	(1 << 20)
#define URING_MOVED	(URING_BUSY - 1)

struct uring_ring {
	struct io_uring ring;
	struct uring_ring *next;	/* free stack or dead list */
	int fixed_bufs;			/* the store is registered on this ring */
	/* Chunked store: this ring's copy of the holder's table, as of
	   generation gen; reg[c]: slot c holds chunk c. Changed under the
	   pool lock only, while the ring is free or by its user. */
	uint8_t *reg;
	uint64_t gen;
};

struct uring_pool {
	/* pool lock: protects free, dead, nrings. A leaf lock; never held
	   across I/O or while making a ring. */
	pthread_mutex_t lock;
	pthread_cond_t cond;		/* a ring was pushed or one died */
	struct uring_ring *free;	/* rings not in use */
	struct uring_ring *dead;	/* rings that failed: never reused, freed at fini */
	unsigned nrings;		/* live rings, in use or free */

	/* fixed after init */
	char *store;
	size_t store_len;
	struct iovec *iov;		/* the store cut in URING_CHUNK pieces */
	unsigned nbufs;
	int fds[SWAP_MAX_FILES];
	unsigned nfiles;
	unsigned setup_flags;
	int fixed_bufs;			/* the store can be registered */
	struct io_uring holder;		/* holds the registration clones copy */
	int have_holder;

	int clone_state;		/* 0 untried, 1 works, -1 refused; atomic */

	/* Chunked store (uring_store): the store the host gave, nchunks
	   chunks of unit bytes, chunk c in slot c of every table. store,
	   store_len, unit, nchunks, chunked and vec_fixed are fixed once
	   uring_store has returned; reg (the holder's table: chunk c is
	   registered) and gen (bumped by every change of it) are under lock. */
	int chunked;
	int vec_fixed;			/* READV_FIXED and WRITEV_FIXED exist */
	size_t unit;			/* bytes per buffer: URING_CHUNK or the chunk */
	unsigned nchunks;
	uint8_t *reg;
	uint64_t gen;
};

/* Index of the buffer of @rg's table holding all of [buf, buf + len), or
   -1 when none does (outside the store, across two buffers, or a chunk
   this ring has not registered). */
static int uring_buf_index(const struct uring_pool *p, const struct uring_ring *rg,
			   const void *buf, size_t len)
{
	uintptr_t s = (uintptr_t)p->store, b = (uintptr_t)buf, at;
	size_t i;

	if (!rg->fixed_bufs || !p->unit || b < s)
		return -1;
	at = b - s;
	if (at >= p->store_len || len > p->store_len - at)
		return -1;
	i = at / p->unit;
	if (len && i != (at + len - 1) / p->unit)
		return -1;
	if (p->chunked && !rg->reg[i])
		return -1;
	return (int)i;
}

/*
 * Whether @len bytes may be pinned: under RLIMIT_MEMLOCK, or with
 * CAP_IPC_LOCK, which lifts the limit. Asked before registering because a
 * registration refused for the limit has already faulted in every page.
 */
static int uring_may_lock(size_t len)
{
	struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct cap[2];
	struct rlimit rl;

	if (getrlimit(RLIMIT_MEMLOCK, &rl) || rl.rlim_cur == RLIM_INFINITY || len <= rl.rlim_cur)
		return 1;
	if (syscall(SYS_capget, &hdr, cap))
		return 1;	/* cannot tell: let the kernel decide */
	return !!(cap[CAP_IPC_LOCK / 32].effective & (1u << (CAP_IPC_LOCK % 32)));
}

/* Copies the holder's whole table to @rg's: @flags 0 when @rg has none,
   URING_CLONE_DST_REPLACE over the one it has. */
static int uring_clone(struct uring_pool *p, struct uring_ring *rg, uint32_t flags)
{
	struct uring_clone_arg arg;
	long rc;

	memset(&arg, 0, sizeof(arg));
	arg.src_fd = (uint32_t)p->holder.ring_fd;
	arg.flags = flags;
	rc = syscall(__NR_io_uring_register, rg->ring.ring_fd, URING_REGISTER_CLONE_BUFFERS,
		     &arg, 1);
	return rc < 0 ? -errno : 0;
}

/*
 * Registers the store on @rg: a clone of the holder's registration where the
 * kernel has them, else in full. @first: the ring init makes, which finds out
 * whether clones work.
 */
static int uring_ring_bufs(struct uring_pool *p, struct uring_ring *rg, int first)
{
	int rc;

	if (p->have_holder && __atomic_load_n(&p->clone_state, __ATOMIC_RELAXED) >= 0) {
		rc = uring_clone(p, rg, 0);
		if (rc == 0) {
			__atomic_store_n(&p->clone_state, 1, __ATOMIC_RELAXED);
			return 0;
		}
		if (first && rc == -EINVAL) {
			/* a kernel before 6.12: every ring registers in full,
			   and the holder would only double the pins */
			__atomic_store_n(&p->clone_state, -1, __ATOMIC_RELAXED);
			io_uring_unregister_buffers(&p->holder);
			io_uring_queue_exit(&p->holder);
			p->have_holder = 0;
		}
	}
	return io_uring_register_buffers(&rg->ring, p->iov, p->nbufs);
}

/*
 * Chunked store: brings @rg's table to the holder's, if it has changed since
 * @rg last copied it. Caller holds the pool lock; @rg is free, or the
 * caller's. A ring that cannot copy it goes on without fixed buffers, and
 * lets go of the ones it held, which might be chunks given back since.
 */
static void uring_sync(struct uring_pool *p, struct uring_ring *rg)
{
	if (!rg->fixed_bufs || rg->gen == p->gen)
		return;
	if (uring_clone(p, rg, URING_CLONE_DST_REPLACE) == 0) {
		memcpy(rg->reg, p->reg, p->nchunks);
		rg->gen = p->gen;
		return;
	}
	rg->fixed_bufs = 0;
	io_uring_unregister_buffers(&rg->ring);
}

/* Chunked store: gives new ring @rg a copy of the holder's table. */
static void uring_ring_chunks(struct uring_pool *p, struct uring_ring *rg)
{
	rg->reg = malloc(p->nchunks);
	if (!rg->reg)
		return;         /* plain reads and writes on this ring */
	pthread_mutex_lock(&p->lock);
	if (uring_clone(p, rg, 0) == 0) {
		memcpy(rg->reg, p->reg, p->nchunks);
		rg->gen = p->gen;
		rg->fixed_bufs = 1;
	}
	pthread_mutex_unlock(&p->lock);
}

/*
 * Makes a ring with the swap files (and, when the pool has them, the store's
 * buffers) registered. @first: the ring init makes, which decides the setup
 * flags and whether the store can be registered at all. On failure returns a
 * negative errno and names the step in *step.
 */
static int uring_ring_new(struct uring_pool *p, int first, struct uring_ring **out,
			  const char **step)
{
	struct io_uring_params prm;
	struct uring_ring *rg;
	int rc;

	*out = NULL;
	*step = "allocating a ring";
	rg = calloc(1, sizeof(*rg));
	if (!rg)
		return -ENOMEM;

	*step = "io_uring_setup";
	memset(&prm, 0, sizeof(prm));
	prm.flags = p->setup_flags;
	rc = io_uring_queue_init_params(URING_DEPTH, &rg->ring, &prm);
	if (rc == -EINVAL && first && p->setup_flags) {
		/* a kernel before 5.19 lacks SUBMIT_ALL or COOP_TASKRUN:
		   they are optimisations, go without */
		p->setup_flags = 0;
		memset(&prm, 0, sizeof(prm));
		rc = io_uring_queue_init_params(URING_DEPTH, &rg->ring, &prm);
	}
	if (rc < 0) {
		free(rg);
		return rc;
	}

	*step = "registering the swap files";
	rc = io_uring_register_files(&rg->ring, p->fds, p->nfiles);
	if (rc < 0)
		goto fail;

	if (p->chunked) {
		uring_ring_chunks(p, rg);
	} else if (p->fixed_bufs) {
		*step = "registering the frame store as fixed buffers";
		rc = uring_ring_bufs(p, rg, first);
		if (rc == 0) {
			rg->fixed_bufs = 1;
		} else if (first && rc != -ENOMEM) {
			goto fail;
		} else {
			/* Out of locked memory (or, for a later ring, any
			   failure): this ring does plain reads and writes,
			   and after the first one so do all. */
			if (first) {
				p->fixed_bufs = 0;
				if (p->have_holder)
					io_uring_queue_exit(&p->holder);
				p->have_holder = 0;
			}
		}
	}
	*out = rg;
	return 0;
fail:
	io_uring_queue_exit(&rg->ring);
	free(rg);
	return rc;
}

static void uring_ring_free(struct uring_ring *rg)
{
	io_uring_queue_exit(&rg->ring);
	free(rg->reg);
	free(rg);
}

/* Takes a free ring, or makes one; NULL (and *err) when neither can be had. */
static struct uring_ring *uring_get(struct uring_pool *p, int *err)
{
	struct uring_ring *rg;
	const char *step;
	int rc;

	pthread_mutex_lock(&p->lock);
	rg = p->free;
	if (rg) {
		p->free = rg->next;
		if (p->chunked)
			uring_sync(p, rg);      /* chunks registered since */
		pthread_mutex_unlock(&p->lock);
		return rg;
	}
	p->nrings++;			/* counted while being made */
	pthread_mutex_unlock(&p->lock);

	rc = uring_ring_new(p, 0, &rg, &step);
	if (rc == 0)
		return rg;

	pthread_mutex_lock(&p->lock);
	p->nrings--;
	/* every other ring is busy: wait for one rather than fail */
	while (!p->free && p->nrings)
		pthread_cond_wait(&p->cond, &p->lock);
	rg = p->free;
	if (rg) {
		p->free = rg->next;
		if (p->chunked)
			uring_sync(p, rg);
	}
	pthread_mutex_unlock(&p->lock);
	if (!rg)
		*err = rc;
	return rg;
}

static void uring_put(struct uring_pool *p, struct uring_ring *rg, int dead)
{
	pthread_mutex_lock(&p->lock);
	if (dead && rg->fixed_bufs) {
		/* kept until fini, but not the pages it pinned */
		io_uring_unregister_buffers(&rg->ring);
		rg->fixed_bufs = 0;
	} else if (p->chunked) {
		uring_sync(p, rg);      /* chunks given back while it ran */
	}
	if (dead) {
		rg->next = p->dead;
		p->dead = rg;
		p->nrings--;
		pthread_cond_broadcast(&p->cond);
	} else {
		rg->next = p->free;
		p->free = rg;
		pthread_cond_signal(&p->cond);
	}
	pthread_mutex_unlock(&p->lock);
}

/* Records that @res bytes (or -errno) came back for @q. */
static void uring_complete(struct io_req *q, int res)
{
	uint32_t moved = (uint32_t)q->res & URING_MOVED;
	uint32_t want = q->len - moved;

	if (q->op & IO_VEC) {
		if (res > 0 && !(q->op & IO_WRITE))
			for (uint32_t i = 0; i < q->niov; i++)
				VALGRIND_MAKE_MEM_DEFINED(q->iov[i].iov_base, q->iov[i].iov_len);
		/* merged pages are never continued: io_run redoes them singly */
		q->res = res < 0 ? res : (uint32_t)res == q->len ? 0 : -EIO;
		return;
	}
	if (res > 0 && q->op == IO_READ)
		VALGRIND_MAKE_MEM_DEFINED((char *)q->buf + moved, (size_t)res);
	if (res < 0)
		q->res = res;
	else if ((uint32_t)res == want)
		q->res = 0;
	else if (res == 0 || moved || (uint32_t)res > want)
		q->res = -EIO;	/* end of file, or short twice */
	else
		q->res = (int32_t)(URING_BUSY | (moved + (uint32_t)res));
}

static void uring_prep(const struct uring_pool *p, const struct uring_ring *rg,
		       struct io_uring_sqe *sqe, const struct io_req *q)
{
	uint32_t moved = (uint32_t)q->res & URING_MOVED;
	char *buf = (char *)q->buf + moved;
	unsigned len = q->len - moved;
	uint64_t off = q->off + moved;
	int idx;

	if (q->op & IO_VEC) {
		/* vectored through a registered buffer when all its pages lie
		   in one: no page of it is pinned per request */
		idx = p->vec_fixed ? uring_buf_index(p, rg, q->iov[0].iov_base,
						     q->iov[0].iov_len) : -1;
		for (uint32_t i = 1; i < q->niov && idx >= 0; i++)
			if (uring_buf_index(p, rg, q->iov[i].iov_base, q->iov[i].iov_len) != idx)
				idx = -1;
		if (q->op & IO_WRITE) {
			for (uint32_t i = 0; i < q->niov; i++)
				VALGRIND_CHECK_MEM_IS_DEFINED(q->iov[i].iov_base, q->iov[i].iov_len);
			io_uring_prep_writev(sqe, q->file, q->iov, q->niov, q->off);
		} else {
			io_uring_prep_readv(sqe, q->file, q->iov, q->niov, q->off);
		}
		if (idx >= 0) {
			sqe->opcode = q->op & IO_WRITE ? URING_OP_WRITEV_FIXED : URING_OP_READV_FIXED;
			sqe->buf_index = (uint16_t)idx;
		}
		sqe->flags |= IOSQE_FIXED_FILE;
		return;
	}
	idx = uring_buf_index(p, rg, buf, len);
	if (q->op == IO_WRITE) {
		VALGRIND_CHECK_MEM_IS_DEFINED(buf, len);
		if (idx >= 0)
			io_uring_prep_write_fixed(sqe, q->file, buf, len, off, idx);
		else
			io_uring_prep_write(sqe, q->file, buf, len, off);
	} else {
		if (idx >= 0)
			io_uring_prep_read_fixed(sqe, q->file, buf, len, off, idx);
		else
			io_uring_prep_read(sqe, q->file, buf, len, off);
	}
	sqe->flags |= IOSQE_FIXED_FILE;
}

/* Whether the kernel has READV_FIXED and WRITEV_FIXED (Linux 6.15). */
static int uring_has_vec_fixed(struct io_uring *ring)
{
	struct io_uring_probe *pr = io_uring_get_probe_ring(ring);
	int ok;

	if (!pr)
		return 0;
	ok = pr->last_op >= URING_OP_WRITEV_FIXED &&
	     io_uring_opcode_supported(pr, URING_OP_READV_FIXED) &&
	     io_uring_opcode_supported(pr, URING_OP_WRITEV_FIXED);
	io_uring_free_probe(pr);
	return ok;
}

static int uring_transient(int rc)
{
	/* out of request memory, CQ backlog, a signal: try again */
	return rc == -EAGAIN || rc == -EBUSY || rc == -EINTR || rc == -ENOMEM;
}

static void uring_nap(void)
{
	struct timespec ts = { 0, 1000 * 1000 };

	nanosleep(&ts, NULL);
}

/* Submits what is queued (@submit) and waits for @want completions, or
   fails as io_wait_hook says. */
static int uring_wait(struct io_uring *ring, unsigned want, bool submit)
{
	struct io_uring_cqe *cqe;
	int rc = io_wait_hook ? io_wait_hook() : 0;

	if (rc < 0)
		return rc;
	return submit ? io_uring_submit_and_wait(ring, want) : io_uring_wait_cqe_nr(ring, &cqe, want);
}

/*
 * One pass over the batch on ring @rg: pass 0 submits every request, pass 1
 * the rest of those that came back short. At most URING_DEPTH requests are
 * in the kernel at once (so the CQ, twice as deep, never overflows); when
 * the batch is larger the ring is refilled as completions come in. Returns
 * 0, or the negative errno of a ring that stopped working; in either case
 * only once no request of the batch is in the kernel.
 */
static int uring_pass(const struct uring_pool *p, struct uring_ring *rg, struct io_req *r,
		      unsigned n, int pass)
{
	struct io_uring *ring = &rg->ring;
	unsigned nxt = 0, queued = 0, inflight = 0;
	int fatal = 0;

	for (;;) {
		struct io_uring_cqe *cqe;
		unsigned head, seen = 0, want;
		int ret;

		while (!fatal && nxt < n && queued + inflight < URING_DEPTH) {
			struct io_req *q = &r[nxt];
			struct io_uring_sqe *sqe;

			if (q->res < URING_BUSY || (pass && q->res == URING_BUSY)) {
				nxt++;		/* done, or nothing to continue */
				continue;
			}
			if (q->file >= p->nfiles) {
				q->res = -EBADF;
				nxt++;
				continue;
			}
			sqe = io_uring_get_sqe(ring);
			if (!sqe)
				break;
			uring_prep(p, rg, sqe, q);
			io_uring_sqe_set_data64(sqe, nxt);
			nxt++;
			queued++;
		}
		if (!queued && !inflight)
			break;

		if (fatal) {
			/* Nothing more goes in, but what is in flight is waited
			   for to the last request: the kernel may yet write its
			   buffer, a frame the caller reuses once it is told the
			   request failed. A wait that fails is retried after a
			   nap; completions are posted all the same (their task
			   work runs on the way out of any system call, the nap's
			   too) and reaped below. */
			if (!inflight)
				break;
			ret = uring_wait(ring, inflight, false);
			if (ret < 0 && ret != -EINTR)
				uring_nap();
		} else {
			want = queued + inflight;
			if (nxt < n && want > URING_WAIT_SOME)
				want = URING_WAIT_SOME;	/* refill before the ring drains */
			ret = uring_wait(ring, want, true);
			if (ret >= 0) {
				if ((unsigned)ret > queued)
					ret = (int)queued;
				queued -= (unsigned)ret;
				inflight += (unsigned)ret;
			} else if (uring_transient(ret)) {
				if (inflight)
					io_uring_wait_cqe(ring, &cqe);
				else if (ret != -EINTR)
					uring_nap();
			} else {
				fatal = ret;
			}
		}

		io_uring_for_each_cqe(ring, head, cqe) {
			uint64_t i = io_uring_cqe_get_data64(cqe);

			if (i < n)
				uring_complete(&r[i], cqe->res);
			seen++;
		}
		io_uring_cq_advance(ring, seen);
		inflight -= seen < inflight ? seen : inflight;
	}
	return fatal;
}

static int uring_run(struct io_engine *e, struct io_req *r, unsigned n)
{
	struct uring_pool *p = e->priv;
	struct uring_ring *rg;
	unsigned i;
	int err = 0, fatal;

	rg = uring_get(p, &err);
	if (!rg) {
		for (i = 0; i < n; i++)
			r[i].res = err;
		return 0;
	}
	for (i = 0; i < n; i++)
		r[i].res = URING_BUSY;
	fatal = uring_pass(p, rg, r, n, 0);
	if (!fatal)
		fatal = uring_pass(p, rg, r, n, 1);
	for (i = 0; i < n; i++)
		if (r[i].res >= URING_BUSY)
			r[i].res = fatal ? fatal : -EIO;
	uring_put(p, rg, fatal != 0);
	return 0;
}

static void uring_pool_free(struct uring_pool *p)
{
	struct uring_ring *rg;

	while ((rg = p->free)) {
		p->free = rg->next;
		uring_ring_free(rg);
	}
	while ((rg = p->dead)) {
		p->dead = rg->next;
		uring_ring_free(rg);
	}
	if (p->have_holder)
		io_uring_queue_exit(&p->holder);
	pthread_cond_destroy(&p->cond);
	pthread_mutex_destroy(&p->lock);
	free(p->iov);
	free(p->reg);
	free(p);
}

static int uring_init(struct io_engine *e, struct swap *sw, void *store, size_t store_len)
{
	struct uring_pool *p;
	struct uring_ring *rg;
	const char *step;
	unsigned i;
	int rc;

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
	if (store && store_len) {
		p->store = store;
		p->store_len = store_len;
		p->unit = URING_CHUNK;
		p->nbufs = (unsigned)((store_len + URING_CHUNK - 1) / URING_CHUNK);
		p->iov = calloc(p->nbufs, sizeof(*p->iov));
		if (!p->iov) {
			uring_pool_free(p);
			return -ENOMEM;
		}
		for (i = 0; i < p->nbufs; i++) {
			size_t at = (size_t)i * URING_CHUNK;

			p->iov[i].iov_base = p->store + at;
			p->iov[i].iov_len = store_len - at < URING_CHUNK ? store_len - at
									 : URING_CHUNK;
		}
		p->fixed_bufs = uring_may_lock(store_len);
	}
	p->setup_flags = IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN;

	rc = 0;
	if (p->fixed_bufs) {
		step = "io_uring_setup";
		rc = io_uring_queue_init(1, &p->holder, 0);
		if (rc == 0) {
			step = "registering the frame store as fixed buffers";
			rc = io_uring_register_buffers(&p->holder, p->iov, p->nbufs);
			if (rc == 0) {
				p->have_holder = 1;
			} else {
				io_uring_queue_exit(&p->holder);
				if (rc == -ENOMEM) {
					p->fixed_bufs = 0;	/* locked memory: go without */
					rc = 0;
				}
			}
		}
	}
	if (rc == 0)
		rc = uring_ring_new(p, 1, &rg, &step);
	if (rc < 0) {
		/* kept short: AUTO puts two of these in one sentence */
		if (rc == -ENOSYS)
			snprintf(e->note, sizeof(e->note),
				 "io_uring is not available: the kernel has no io_uring_setup");
		else if (rc == -EPERM)
			snprintf(e->note, sizeof(e->note),
				 "io_uring is disabled (io_uring_setup: %s; see sysctl kernel.io_uring_disabled)",
				 strerror(-rc));
		else if (rc == -ENOMEM && !strcmp(step, "io_uring_setup"))
			snprintf(e->note, sizeof(e->note),
				 "io_uring_setup: %s (without CAP_IPC_LOCK rings count against RLIMIT_MEMLOCK)",
				 strerror(-rc));
		else
			snprintf(e->note, sizeof(e->note), "io_uring failed at %s: %s",
				 step, strerror(-rc));
		uring_pool_free(p);
		return -ENOTSUP;
	}
	if (p->nbufs && !p->fixed_bufs) {
		struct rlimit rl;

		getrlimit(RLIMIT_MEMLOCK, &rl);
		if (rl.rlim_cur == RLIM_INFINITY)
			snprintf(e->note, sizeof(e->note),
				 "io_uring runs without fixed buffers: the kernel could not pin the %zu MiB frame store",
				 (store_len + (1u << 20) - 1) >> 20);
		else
			snprintf(e->note, sizeof(e->note),
				 "io_uring runs without fixed buffers: the %zu MiB frame store needs that much locked memory, RLIMIT_MEMLOCK is %llu KiB (raise it or grant CAP_IPC_LOCK)",
				 (store_len + (1u << 20) - 1) >> 20,
				 (unsigned long long)rl.rlim_cur >> 10);
	}
	p->vec_fixed = uring_has_vec_fixed(&rg->ring);
	p->nrings = 1;
	p->free = rg;
	e->priv = p;
	return 0;
}

/*
 * The host's frame store, registered by chunks as they fill (see "A store
 * that comes and goes" above). Called once, before any run. Where the
 * kernel lacks what it takes, the engine goes on with plain reads and
 * writes, and the note says why.
 */
static int uring_store(struct io_engine *e, void *store, size_t len, size_t chunk)
{
	struct uring_pool *p = e->priv;
	uint64_t n = (len + chunk - 1) / chunk;
	struct uring_ring *rg;
	const char *why;
	int rc;

	if (p->store || chunk > URING_CHUNK || n > URING_MAX_BUFS)
		return -EINVAL;
	p->reg = calloc(n, 1);
	if (!p->reg)
		return -ENOMEM;
	why = "io_uring_setup failed for the buffer table's holder";
	if (io_uring_queue_init(1, &p->holder, 0))
		goto without;
	why = "the kernel has no sparse buffer tables (Linux 5.19)";
	rc = io_uring_register_buffers_sparse(&p->holder, (unsigned)n);
	if (rc) {
		io_uring_queue_exit(&p->holder);
		goto without;
	}
	p->have_holder = 1;
	p->nchunks = (unsigned)n;
	/* the ring init made, free: a copy, then a copy in place, which is
	   what every later change takes (Linux 6.13) */
	why = "the kernel cannot update a cloned buffer table in place (Linux 6.13)";
	for (rg = p->free; rg; rg = rg->next) {
		rg->reg = calloc(n, 1);
		if (!rg->reg || uring_clone(p, rg, 0))
			goto without;
		rg->fixed_bufs = 1;
		if (uring_clone(p, rg, URING_CLONE_DST_REPLACE))
			goto without;
	}
	p->store = store;
	p->store_len = len;
	p->unit = chunk;
	p->chunked = 1;
	return 0;
without:
	for (rg = p->free; rg; rg = rg->next) {
		if (rg->fixed_bufs)
			io_uring_unregister_buffers(&rg->ring);
		rg->fixed_bufs = 0;
		free(rg->reg);
		rg->reg = NULL;
	}
	if (p->have_holder)
		io_uring_queue_exit(&p->holder);
	p->have_holder = 0;
	p->nchunks = 0;
	free(p->reg);
	p->reg = NULL;
	snprintf(e->note, sizeof(e->note), "io_uring runs without fixed buffers: %s", why);
	return 0;
}

/*
 * Registers chunk @c on the holder (pinning its pages, which are there
 * already), or unregisters it and brings every free ring's copy along, so
 * that no ring's table holds its pages but those of rings running a batch,
 * which let go as they are put back (uring_put). Rings take new chunks at
 * their next uring_get. A chunk that cannot be registered stays out.
 */
static void uring_store_chunk(struct io_engine *e, uint64_t c, int on)
{
	struct uring_pool *p = e->priv;
	struct iovec iov = { NULL, 0 };
	struct uring_ring *rg;
	__u64 tag = 0;
	int rc;

	if (!p->chunked || c >= p->nchunks)
		return;
	pthread_mutex_lock(&p->lock);
	if (!p->reg[c] != !on) {
		if (on) {
			size_t at = (size_t)c * p->unit;

			iov.iov_base = p->store + at;
			iov.iov_len = p->store_len - at < p->unit ? p->store_len - at : p->unit;
		}
		rc = io_uring_register_buffers_update_tag(&p->holder, (unsigned)c, &iov, &tag, 1);
		/* an unregistration that failed is made all the same as far
		   as the rings go: none uses the chunk once it has synced */
		if (rc >= 0 || !on) {
			p->reg[c] = !!on;
			p->gen++;
		}
		if (!on)
			for (rg = p->free; rg; rg = rg->next)
				uring_sync(p, rg);
	}
	pthread_mutex_unlock(&p->lock);
}

static void uring_fini(struct io_engine *e)
{
	if (e->priv)
		uring_pool_free(e->priv);
	e->priv = NULL;
}

const struct io_ops io_uring_ops = {
	.name = "io_uring",
	.init = uring_init,
	.run = uring_run,
	.fini = uring_fini,
	.store = uring_store,
	.store_chunk = uring_store_chunk,
	.vectored = 1,
};
