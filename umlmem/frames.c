/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * frames.c: the frame store and the frame table.
 *
 * The store is one memfd of the budget's size, mapped once. One file rather
 * than anonymous memory because (a) the same frame can later be mapped into
 * several guests' native views, the way User-Mode Linux maps its RAM file,
 * and (b) its pages can be given back to the kernel one by one
 * (fallocate PUNCH_HOLE) wherever they lie, which the views see too.
 *
 * The budget is a limit, not a reservation. Nothing is allocated for it
 * at creation but address space: the store's pages come from the kernel
 * when a frame is first written, and the frame table, the referenced bits
 * and the free stack are reserved once for the whole budget
 * (MAP_NORESERVE) and never move or shrink while the host lives, so that
 * frame_addr() and the lock-free readers of fref[] and frames[] need no
 * lock, while only the pages that frames in use touch become memory.
 *
 * Where a free frame comes from, best first:
 *  1. the warm part of the free stack: frames freed recently, that still
 *     hold memory. The stack is LIFO, so the frames freed last (whose
 *     pages are the likeliest to be in the CPU caches) are reused first,
 *     and the frames given back below stay given back;
 *  2. the cold part, below it: frames given back to the kernel. They read
 *     as zeros (F_FRESH), and the kernel hands out a page again on first
 *     write;
 *  3. the frames never used: [nmade, nframes), taken in order, so that the
 *     frame table's touched prefix is only as long as the most frames
 *     the host ever held.
 *
 * Giving back. Frames freed by the pager, by discard, by merging and by
 * destroy go to the warm part. When it grows past the hysteresis band
 * (trim_due) the oldest warm frames beyond trim_lo are punched out of the
 * memfd, all at once and sorted (so that frames freed in any order still
 * make long runs, one punch each), by frames_trim(): at the end of the
 * public call that freed them or from the background threads, never on the
 * fault path and never with host->lock held during the punch (it unmaps
 * the frames from every mapping of the store, which waits for the other
 * CPUs). While a batch is punched its frames are on no list (ntrim counts
 * them) and nobody can take them. A workload in steady state does not churn: at the budget the
 * warm frames are the ones the reclaim thread keeps free on purpose (up to
 * its high watermark) and are kept; below it only a few MiB are kept warm.
 *
 * The frame table follows the same way down. It is cut in chunks of
 * FRAME_CHUNK entries, which fill whole pages; once every frame of a chunk
 * is cold, the chunk's entries are given back too (MADV_DONTNEED: they read
 * as zeros, CHUNK_GONE says so and walks of the table skip the chunk), and
 * the first frame taken from it again writes its free entries back. After
 * a peak the host keeps 4.1 bytes per frame of the peak (the free stack and
 * the referenced bits), not the 36 of the full tables.
 *
 * Pins follow too. The I/O engine may register the store with the kernel
 * (io_uring fixed buffers, which spare each request the pinning of its
 * pages), and a registration pins what it covers. So the store reaches the
 * engine by registration chunks of 1 << rshift frames (2 MiB, more for
 * budgets above 32 GiB, so that they fit one buffer table): backed[c]
 * counts the frames of chunk c that hold memory (made and not given back),
 * and the engine is told when it reaches the chunk's size (register: the
 * pins cost no memory, the pages are there) and before a frame of a full
 * chunk is punched (unregister: a punch under a registration would free
 * nothing, and leave the engine with pages the store no longer shows).
 * Pinned bytes are thus at most the store's, and 0 at creation.
 *
 * A recycled warm frame still holds its previous page's bytes, so a frame
 * handed to a page that must read as zeros is cleared first (F_FRESH marks
 * frames that read as zeros already: never used, or given back).
 *
 * Lock: host->lock for everything here but frames_init/fini; frame_get()
 * and frames_trim_locked() may drop it; see their prototypes.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "internal.h"

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#endif
#endif
#ifndef RUNNING_ON_VALGRIND
#define RUNNING_ON_VALGRIND 0
#endif

/* Warm frames kept when the host is below its budget: trimmed down to
   trim_lo once there are more than trim_hi (see trim_due). */
#define TRIM_KEEP 256u

/* The most registration chunks: the slots of one io_uring buffer table. */
#define FRAMES_RCHUNKS_MAX 16384u

/* Bytes of a table of @n entries of @each bytes, in whole pages. */
static size_t table_bytes(uint64_t n, size_t each)
{
	return ((size_t)n * each + PAGE_SIZE - 1) & ~(size_t)(PAGE_SIZE - 1);
}

/* Address space for a table that lock-free readers index: zero-filled,
   never moved, memory only where written. Small pages, so that the
   memory follows the entries used rather than 2 MiB at a time. */
static void *reserve(uint64_t n, size_t each)
{
	size_t bytes = table_bytes(n, each);
	void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	if (p == MAP_FAILED)
		return NULL;
	madvise(p, bytes, MADV_NOHUGEPAGE);
	return p;
}

int frames_init(struct umlmem_host *h)
{
	size_t bytes = h->nframes * PAGE_SIZE;

	h->store_fd = memfd_create("umlmem-frames", MFD_CLOEXEC);
	if (h->store_fd < 0)
		return seterr(-errno, "memfd_create for the frame store failed: %s",
			      strerror(errno));
	/* sparse: the size is a limit, blocks come with the first writes */
	if (ftruncate(h->store_fd, (off_t)bytes) < 0)
		return seterr(-errno, "cannot size the frame store to %zu bytes: %s",
			      bytes, strerror(errno));
	h->store = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, h->store_fd, 0);
	if (h->store == MAP_FAILED) {
		h->store = NULL;
		return seterr(-ENOMEM, "cannot map the frame store (%zu bytes): %s",
			      bytes, strerror(errno));
	}
	h->frames = reserve(h->nframes, sizeof(*h->frames));
	h->fref = reserve((h->nframes + 63) / 64, sizeof(*h->fref));
	h->free = reserve(h->nframes, sizeof(*h->free));
	h->chunk = reserve((h->nframes >> FRAME_CHUNK_SHIFT) + 1, sizeof(*h->chunk));
	/* registration chunks: 2 MiB, or as many times that as keeps them
	   within the URING_MAX_BUFS slots of a buffer table */
	h->rshift = FRAME_CHUNK_SHIFT;
	while (((h->nframes - 1) >> h->rshift) + 1 > FRAMES_RCHUNKS_MAX)
		h->rshift++;
	h->backed = reserve(((h->nframes - 1) >> h->rshift) + 1, sizeof(*h->backed));
	if (!h->frames || !h->fref || !h->free || !h->chunk || !h->backed)
		return seterr(-ENOMEM, "cannot reserve address space for the frame table of "
			      "%llu frames", (unsigned long long)h->nframes);
	h->nfree = h->nframes;
	/* valgrind does not know pidfd_open or process_madvise: without them
	   punches only cost more */
	h->self_pidfd = RUNNING_ON_VALGRIND ? -1 : (int)syscall(SYS_pidfd_open, getpid(), 0);
	h->trim_lo = h->nframes / 16 < TRIM_KEEP ? h->nframes / 16 : TRIM_KEEP;
	h->trim_hi = 4 * h->trim_lo < 16 ? 16 : 4 * h->trim_lo;
	return 0;
}

void frames_fini(struct umlmem_host *h)
{
	if (h->store)
		munmap(h->store, h->nframes * PAGE_SIZE);
	if (h->store_fd >= 0)
		close(h->store_fd);
	if (h->self_pidfd >= 0)
		close(h->self_pidfd);
	if (h->frames)
		munmap(h->frames, table_bytes(h->nframes, sizeof(*h->frames)));
	if (h->fref)
		munmap(h->fref, table_bytes((h->nframes + 63) / 64, sizeof(*h->fref)));
	if (h->free)
		munmap(h->free, table_bytes(h->nframes, sizeof(*h->free)));
	if (h->chunk)
		munmap(h->chunk, table_bytes((h->nframes >> FRAME_CHUNK_SHIFT) + 1,
					     sizeof(*h->chunk)));
	if (h->backed)
		munmap(h->backed, table_bytes(((h->nframes - 1) >> h->rshift) + 1,
					      sizeof(*h->backed)));
}

int frames_register(struct umlmem_host *h)
{
	return io_engine_store(h->io, h->store, h->nframes * PAGE_SIZE,
			       (size_t)PAGE_SIZE << h->rshift, h->io_why, sizeof(h->io_why));
}

/* Frame @f holds memory again (made, or taken cold): once every frame of
   its registration chunk does, the engine may register the chunk. Under
   host->lock: one system call per chunk filled, which pins pages that are
   there already. */
static void backed_add(struct umlmem_host *h, uint64_t f)
{
	uint64_t c = f >> h->rshift;

	if (++h->backed[c] == frames_rchunk(h, c))
		io_store_chunk(h->io, c, 1);
}

uint64_t frames_meta_bytes(const struct umlmem_host *h)
{
	/* every table indexed by frame is touched over the frames made at
	   most, the free stack over its deepest */
	return table_bytes(h->nmade, sizeof(*h->frames)) +
	       table_bytes((h->nmade + 63) / 64, sizeof(*h->fref)) +
	       table_bytes(h->nstack_max, sizeof(*h->free)) -
	       h->chunks_gone * FRAME_CHUNK * sizeof(*h->frames) +
	       table_bytes((h->nmade >> FRAME_CHUNK_SHIFT) + 1, sizeof(*h->chunk)) +
	       table_bytes((h->nmade >> h->rshift) + 1, sizeof(*h->backed));
}

/* Every frame of chunk @c is cold: its table entries go back to the
   kernel. Under host->lock, as walks of the table read them: one madvise
   of FRAME_CHUNK entries' pages per FRAME_CHUNK frames given back. */
static void chunk_drop(struct umlmem_host *h, uint64_t c)
{
	if (madvise(&h->frames[c << FRAME_CHUNK_SHIFT], FRAME_CHUNK * sizeof(*h->frames),
		    MADV_DONTNEED))
		return;         /* the entries stay: nothing is wrong, just kept */
	h->chunk[c] |= CHUNK_GONE;
	h->chunks_gone++;
}

/* A cold frame of chunk @c is being taken: writes the free entries of a
   chunk whose entries were given back (all its frames were cold then and
   still are), and counts one cold frame fewer. */
static void chunk_take(struct umlmem_host *h, uint64_t c)
{
	if (h->chunk[c] & CHUNK_GONE) {
		struct frame *fr = &h->frames[c << FRAME_CHUNK_SHIFT];

		for (unsigned i = 0; i < FRAME_CHUNK; i++)
			fr[i] = (struct frame){ .slot = TKEY_NONE, .flags = F_FRESH };
		h->chunk[c] &= ~CHUNK_GONE;
		h->chunks_gone--;
	}
	h->chunk[c]--;
}

/*
 * Whether the warm free frames should be trimmed. Below the budget (the
 * frames given back and never used cover the reclaim thread's high
 * watermark) warm frames only save a page fault of the kernel's, and more
 * than trim_hi of them is memory held for nothing. At the budget, free
 * frames are the ones the pager freed to serve the next faults: up to its
 * high watermark and one batch they are kept warm, or a steady paging
 * workload would give back and fault in every frame it frees.
 */
static bool trim_due(const struct umlmem_host *h)
{
	uint64_t warm = h->nstack - h->npunched;

	if (warm <= h->trim_hi || h->no_punch)
		return false;
	return h->nfree - warm >= h->high || warm > h->high + h->cfg.reclaim_batch;
}

int frame_get(struct umlmem_host *h, bool zero, uint64_t *out)
{
	struct frame *fr;
	uint64_t f, done;
	int rc;

	if (!h->nfree) {
		/* one frame: the rest of the batch written for it stays
		   mapped until it is needed (pager.c) */
		rc = pager_evict(h, pager_fault_want(h), &done, NULL);
		/* the lock was dropped if anything was written: look again */
		if (h->nfree || done)
			return -EAGAIN;
		/* Frames under I/O, or being given back, are neither free nor
		   evictable yet; they will be soon, so that is not a failure. */
		if (h->busy_frames || h->ntrim) {
			host_wait(h);
			return -EAGAIN;
		}
		return rc ? rc : -ENOMEM;
	}
	frame_take(h, &f);
	fr = &h->frames[f];
	if (zero && (fr->flags & F_FRESH) == 0)
		memset(frame_addr(h, f), 0, PAGE_SIZE);
	fr->flags = 0;
	*out = f;
	return 0;
}

int frame_take(struct umlmem_host *h, uint64_t *out)
{
	uint64_t f;

	if (!h->nfree)
		return -ENOMEM;
	if (h->nstack) {
		f = h->free[--h->nstack];
		if (h->npunched > h->nstack) {
			h->npunched = h->nstack;        /* a cold one: F_FRESH */
			chunk_take(h, f >> FRAME_CHUNK_SHIFT);
			backed_add(h, f);
		}
	} else {
		f = h->nmade++;
		h->frames[f].slot = TKEY_NONE;
		h->frames[f].flags = F_FRESH;
		backed_add(h, f);
	}
	h->nfree--;
	h->frames[f].wpass = 0;
	/* F_FRESH is left for frame_get to see; every user clears flags.
	   The faulting access does not count as a use (see pager.c). */
	frame_ref_set(h, f, false);
	pager_kick(h);
	*out = f;
	return 0;
}

void frame_set_slot(struct umlmem_host *h, uint64_t f, uint64_t k)
{
	h->frames[f].slot = k;
	tcache_set(h, k, (uint32_t)f + 1);
}

void host_wait(struct umlmem_host *h)
{
	pthread_cond_wait(&h->cond, &h->lock);
}

bool host_yield(struct umlmem_host *h)
{
	uint32_t waiting = __atomic_load_n(&h->lock_waiters, __ATOMIC_RELAXED);
	uint64_t want = h->lock_entries + waiting;

	if (!waiting)
		return false;
	/* Every thread counted now gets in before this one goes on: each
	   entry is broadcast by host_lock() under the lock, so no wake-up is
	   lost; a waiter that is not counted yet is served at the next step. */
	h->yielders++;
	while (__atomic_load_n(&h->lock_waiters, __ATOMIC_RELAXED) &&
	       (int64_t)(h->lock_entries - want) < 0)
		pthread_cond_wait(&h->yield_cond, &h->lock);
	h->yielders--;
	h->yields++;
	return true;
}

void frame_put(struct umlmem_host *h, uint64_t f)
{
	struct frame *fr = &h->frames[f];

	if (fr->flags & F_ACTIVE)
		h->nactive--;
	if (fr->flags & F_WRITTEN)
		h->nwritten--;
	fr->g = NULL;
	fr->refs = 0;
	fr->pins = 0;
	fr->flags = 0;
	fr->slot = TKEY_NONE;
	h->free[h->nstack++] = (uint32_t)f;
	if (h->nstack > h->nstack_max)
		h->nstack_max = h->nstack;
	h->nfree++;
	if (!LOAD(&h->trim_due) && trim_due(h))
		STORE(&h->trim_due, true);
}

void frame_drop_slot(struct umlmem_host *h, uint64_t f)
{
	struct frame *fr = &h->frames[f];

	if (fr->slot != TKEY_NONE) {
		tcache_set(h, fr->slot, 0);
		tier_unref(h, fr->slot, 1);
		fr->slot = TKEY_NONE;
	}
}

/* ---- giving frames back ------------------------------------------------ */

static int by_frame_desc(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? 1 : x > y ? -1 : 0;
}

/* The store's mapping no longer maps runs @iov[0 .. n): one system call,
   one TLB flush. False when the kernel cannot (before Linux 6.13). */
static bool unmap_runs(struct umlmem_host *h, const struct iovec *iov, unsigned n)
{
	long rc = syscall(SYS_process_madvise, h->self_pidfd, iov, n, MADV_DONTNEED, 0);

	if (rc >= 0)
		return true;
	close(h->self_pidfd);
	h->self_pidfd = -1;
	return false;
}

/*
 * Punches frames @b[0 .. n) out of the store, one fallocate per run of
 * neighbours; sorts @b from the highest frame down. No lock held.
 *
 * A punch of a range the store's mapping maps flushes the TLB of every CPU
 * the process has run on, once per call: one fallocate per scattered frame
 * would cost that flush per frame (tens of microseconds in a VM). So the
 * runs are first taken out of the mapping together, by process_madvise
 * (MADV_DONTNEED on a shared mapping only drops the page table entries),
 * with one flush per call, and the punches then find them unmapped. A
 * lock-free reader that touches a free frame in between maps it again,
 * which only makes that punch slower.
 */
static bool punch(struct umlmem_host *h, uint32_t *b, uint64_t n)
{
	struct iovec iov[256];
	unsigned k = 0;

	qsort(b, n, sizeof(*b), by_frame_desc);
	for (uint64_t i = 0, j; i < n && h->self_pidfd >= 0; i = j) {
		for (j = i + 1; j < n && b[j] + 1 == b[j - 1]; j++)
			;
		iov[k].iov_base = frame_addr(h, b[j - 1]);
		iov[k++].iov_len = (j - i) * PAGE_SIZE;
		if (k == 256 || j == n) {
			if (!unmap_runs(h, iov, k))
				break;
			k = 0;
		}
	}
	for (uint64_t i = 0, j; i < n; i = j) {
		for (j = i + 1; j < n && b[j] + 1 == b[j - 1]; j++)
			;
		if (fallocate(h->store_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			      (off_t)b[j - 1] * PAGE_SIZE, (off_t)(j - i) * PAGE_SIZE))
			return false;
	}
	return true;
}

void frames_trim_locked(struct umlmem_host *h)
{
	uint32_t *b = h->trim_buf, *big = NULL, *un, unbuf[FRAMES_TRIM_BATCH];
	bool started = false;

	/* One trimmer at a time. Once due, it goes on down to trim_lo: the
	   band between trim_lo and trim_hi is the hysteresis. */
	while (!h->ntrim && !h->no_punch &&
	       (started ? h->nstack - h->npunched > h->trim_lo : trim_due(h))) {
		uint64_t warm = h->nstack - h->npunched, n = warm - h->trim_lo, nun = 0;
		bool ok;

		started = true;
		/* All at once where memory allows: sorted together, frames
		   freed in any order (a guest touched at random, then
		   destroyed) still make long runs, one punch each. */
		un = unbuf;
		if (n > FRAMES_TRIM_BATCH) {
			big = malloc(2 * n * sizeof(*big));
			b = big ? big : h->trim_buf;
			un = big ? big + n : unbuf;
			if (!big)
				n = FRAMES_TRIM_BATCH;
		}
		/* the oldest warm frames, from just above the cold ones */
		memcpy(b, h->free + h->npunched, n * sizeof(*b));
		memmove(h->free + h->npunched, h->free + h->npunched + n,
			(warm - n) * sizeof(*b));
		h->nstack -= n;
		h->nfree -= n;
		h->ntrim = n;
		/* A registered chunk pins its pages: a punch would not free
		   them, and a ring would go on using the pages the store no
		   longer shows. Out of the engine's tables first. */
		for (uint64_t i = 0; i < n; i++) {
			uint64_t c = b[i] >> h->rshift;

			if (h->backed[c]-- == frames_rchunk(h, c))
				un[nun++] = (uint32_t)c;
		}
		host_unlock(h);
		for (uint64_t i = 0; i < nun; i++)
			io_store_chunk(h->io, un[i], 0);
		ok = punch(h, b, n);
		host_lock(h);
		/* Back between the cold frames and the warm ones (frame_take
		   may have used up some of either meanwhile), the lowest
		   numbered on top so that it is reused first. */
		memmove(h->free + h->npunched + n, h->free + h->npunched,
			(h->nstack - h->npunched) * sizeof(*b));
		memcpy(h->free + h->npunched, b, n * sizeof(*b));
		h->nstack += n;
		h->nfree += n;
		h->ntrim = 0;
		if (ok) {
			for (uint64_t i = 0; i < n; i++) {
				uint64_t c = b[i] >> FRAME_CHUNK_SHIFT;

				h->frames[b[i]].flags = F_FRESH;
				if (++h->chunk[c] == FRAME_CHUNK)
					chunk_drop(h, c);
			}
			h->npunched += n;
			h->frames_returned += n;
		} else {
			/* not on this filesystem: keep every frame warm */
			h->no_punch = true;
			for (uint64_t i = 0; i < n; i++)
				backed_add(h, b[i]);
		}
		/* host_check and frame_get wait for frames being given back */
		pthread_cond_broadcast(&h->cond);
		free(big);
		big = NULL;
		b = h->trim_buf;
	}
	if (!h->ntrim)
		STORE(&h->trim_due, trim_due(h));
}

void frames_trim(struct umlmem_host *h)
{
	if (!LOAD(&h->trim_due))
		return;
	host_lock(h);
	frames_trim_locked(h);
	host_unlock(h);
}
