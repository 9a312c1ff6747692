/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * native.c: a guest's RAM at a host address (umlmem_guest_map).
 *
 * A mapped guest has a view: an address range of its nominal size. Page idx
 * of the view is one of
 *  - a placeholder: anonymous memory registered with userfaultfd for
 *    missing faults, never populated. Every access, by user code or by the
 *    kernel on the process's behalf (read(2) into it, KVM's guest page
 *    faults through get_user_pages), stops in the kernel and becomes a
 *    message to this host's handler threads;
 *  - a view of frame f: a MAP_SHARED mapping of page f of the frame store,
 *    registered for missing, minor and write-protect faults. The frame's
 *    page is the guest's page, so the copy and pin calls, which work on the
 *    store, see every store to it and the other way round, with no copy.
 *
 * The handler serves a fault with page_fault(), the same call the copy
 * path uses (zero fill, swap-in, copy on write), and then makes the view
 * of page idx point at its frame: mmap of the frame over the page and
 * UFFDIO_REGISTER when the view pointed elsewhere (NV_MAPPED clear; see
 * view_map() for how no access slips in between), then UFFDIO_CONTINUE,
 * which installs the page table entry and wakes the faulting thread. A
 * frame that is shared, has a clean copy in swap, or is
 * being written out is installed write-protected; the store then faults
 * with UFFD_PAGEFAULT_FLAG_WP, and page_fault(for_write) breaks the sharing
 * or drops the clean copy before the protection is lifted. So a native
 * store is seen exactly when it matters: dirty tracking costs one fault per
 * clean page written, as the kernel's own write-protect tracking does.
 *
 * Why zaps and minor faults. A view's page table entry is removed
 * (MADV_DONTNEED, a "zap") whenever its page stops being backed by that
 * frame (rmap_del), and the view keeps mapping the old frame. That is
 * safe because the view is registered for minor faults: an access to a
 * shmem page that is in the page cache but not in the page table is a
 * minor fault, so it stops in the handler, which sees NV_MAPPED clear and
 * maps the right frame. Fault-around is off for such views, so the kernel
 * never installs an entry the handler did not. Zapping is cheap (no change
 * to the process's mappings); mapping a frame is not (mmap + register).
 *
 * Referenced bits. User space cannot read the accessed bit of its page
 * tables (pagemap does not report it; PAGEMAP_SCAN reports written, not
 * accessed). The pager instead samples: when its clock reaches a frame
 * with a present native entry (F_NV), it zaps it and judges it at the
 * next turn; if the page is used again, the minor fault (served by
 * UFFDIO_CONTINUE, no remap) sets the frame's referenced bit before the
 * clock comes round. Only such a fault on a resident page whose entry was
 * not present counts as a use: the fault that brings a page in does not,
 * nor a write fault on an entry installed read-only, so a page touched
 * once through a view is not promoted (pager.c's scan resistance). A hot
 * page costs one minor fault per clock turn, and only under memory
 * pressure, when the clock turns; a page that is not touched again is
 * evicted on the next turn after that. The same zap, done by
 * native_quiesce(), lets the merge scanner and the pager read a frame that
 * no native store can change behind them.
 *
 * Mappings and vm.max_map_count. Each frame mapped into a view can split
 * the view's mapping in three. The host counts what its views may have
 * added (nv_vmas) against a process-wide limit derived from
 * vm.max_map_count at the first map; when one more would cross it, the
 * handler resets every view of the host to one placeholder (a "flush",
 * like a TLB flush: pages fault back in, no data moves). umlmem_guest_map()
 * refuses to start, with a message that names the setting and a value,
 * when what is left cannot hold two mappings per frame of the budget (or
 * per page of a smaller guest): below that, flushes would come so often
 * that faults would take the time (measured: 16 KVM guests whose working
 * set was twice what 65530 mappings hold spent 600 s in 233 flushes and 7.5
 * million remaps without finishing).
 *
 * Threads and CPUs. A fault costs the faulting thread a sleep and a wakeup
 * of a handler thread. Waking a thread on the other CPU costs several
 * times a wakeup on the same CPU, so the host runs one handler thread per
 * online CPU (at most 8), each bound to its CPU, all reading the same
 * userfaultfd: the kernel wakes all of them, the one on the faulting
 * thread's CPU, which that thread just left idle, usually gets there first.
 * UMLMEM_NATIVE_THREADS=n overrides the count (fewer than the CPUs: not
 * bound). native_cpu_local / native_cpu_sampled in umlmem_host_info tell
 * how often the handler ran on the faulting thread's CPU (1 fault in 256
 * is sampled: reading /proc costs more than a fault). Measured here (make
 * bench, native_fault_zero): one thread per CPU, 18-20 us per first touch
 * (mmap, UFFDIO_REGISTER, UFFDIO_CONTINUE and two wakeups) with 99% of
 * faults served locally; a single thread, 13 us when the scheduler keeps it
 * on the faulting CPU and 42-97 us when it puts it on the other one.
 *
 * Merging. The scanner tells a page being written from a stable one by
 * when it was last written (frame->wpass), which native stores through a
 * writable entry do not update. For a frame writable in a view it does
 * what KSM does for every page: it keeps the page's hash from its last
 * visit (frame->nvsum) and takes the page as a candidate only when the
 * hash has not changed since, with no fault and no zap; the merge itself
 * zaps the entries first and compares again (native_quiesce).
 *
 * Errors. A fault that cannot be served (a swap read that keeps failing, a
 * budget that stays pinned, a mapping or a thread that cannot be had)
 * cannot return an error to a load instruction. The handler retries for a
 * while, then sends SIGBUS to the faulting thread, as the kernel does when
 * a swap device fails; the page's data stays where it was. A failed access
 * counts once in io_errors or checksum_errors, however often it was tried.
 * Signals are the program's: umlmem installs no handler, so a SIGSEGV in a
 * view (the program write-protected part of it) reaches the program as
 * the kernel delivers it.
 *
 * Fork. A child would inherit the views without their registration, so
 * that its accesses would reach stale frames unseen: placeholders are
 * MADV_DONTFORK, and a fork handler unmaps every view in the child (one
 * madvise per mapped frame would cost every fault a system call); a child
 * that touches a view gets SIGSEGV.
 *
 * Locking: everything here runs under host->lock, including the mmap,
 * madvise and ioctl calls on the views; the handler threads take it per
 * message. A thread that holds host->lock must never touch a view (see
 * internal.h), which is why umlmem_read() and umlmem_write() bounce their
 * buffers while any guest is mapped.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* Linux 6.4 added these; Debian 12's headers predate them. */
#ifndef UFFDIO_CONTINUE_MODE_WP
#define UFFDIO_CONTINUE_MODE_WP ((__u64)1 << 1)
#endif

#define NV_MIN_FREE    256     /* mappings a host needs to start at all */
#define NV_RESERVE     1024    /* mappings left to the rest of the process */
#define NV_SAMPLE      256     /* one fault in this many has its CPU sampled */
#define NV_RETRY_MS    2000    /* how long a failing fault is retried */

uint64_t native_map_limit_override;

/* Process-wide: the limit, and what all hosts' views may have added. */
static uint64_t nv_limit;          /* atomic; 0 until the first map */
static uint64_t nv_used;           /* atomic */
static uint64_t nv_mapped_guests;  /* atomic: guests mapped, all hosts */

uint64_t native_map_limit(void)
{
	return LOAD(&nv_limit);
}

bool native_bounce(void)
{
	return LOAD(&nv_mapped_guests) != 0;
}

static uint64_t count_maps(void)
{
	char buf[65536];
	uint64_t n = 0;
	ssize_t r;
	int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return 0;
	while ((r = read(fd, buf, sizeof(buf))) > 0)
		for (ssize_t i = 0; i < r; i++)
			n += buf[i] == '\n';
	close(fd);
	return n;
}

static uint64_t max_map_count(void)
{
	char buf[32] = "";
	int fd = open("/proc/sys/vm/max_map_count", O_RDONLY | O_CLOEXEC);
	ssize_t r = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;

	if (fd >= 0)
		close(fd);
	return r > 0 ? strtoull(buf, NULL, 10) : 65530;
}

/* ---- one page of a view -------------------------------------------------- */

static inline uint8_t *page_addr(struct umlmem_guest *g, uint64_t idx)
{
	return g->nv_base + (idx << PAGE_SHIFT);
}

/* The NV_* state of mapper (g, idx) of frame @f. */
static uint32_t mapper_get(struct umlmem_host *h, uint64_t f, struct umlmem_guest *g,
			   uint64_t idx)
{
	struct frame *fr = &h->frames[f];
	struct rmap *more = rmap_more(h, f);

	if (fr->g == g && fr->idx == idx)
		return fr->nv;
	for (uint32_t i = 0; i + 1 < fr->refs; i++)
		if (more[i].g == g && more[i].idx == idx)
			return more[i].nv;
	return 0;
}

static void mapper_set(struct umlmem_host *h, uint64_t f, struct umlmem_guest *g,
		       uint64_t idx, uint32_t nv)
{
	struct frame *fr = &h->frames[f];
	struct rmap *more = rmap_more(h, f);

	if (fr->g == g && fr->idx == idx) {
		fr->nv = nv;
	} else {
		for (uint32_t i = 0; i + 1 < fr->refs; i++)
			if (more[i].g == g && more[i].idx == idx) {
				more[i].nv = nv;
				break;
			}
	}
	if (nv & NV_LIVE)
		fr->flags |= F_NV;
}

void native_zap(struct umlmem_guest *g, uint64_t idx)
{
	if (!g->nv_base)
		return;
	madvise(page_addr(g, idx), PAGE_SIZE, MADV_DONTNEED);
	g->host->nv_zaps++;
}

void native_zap_view(struct umlmem_guest *g)
{
	if (!g->nv_base)
		return;
	madvise(g->nv_base, (g->ram_bytes + PAGE_SIZE - 1) & ~(uint64_t)(PAGE_SIZE - 1),
		MADV_DONTNEED);
	g->host->nv_zaps++;
}

void native_quiesce(struct umlmem_host *h, uint64_t f)
{
	struct frame *fr = &h->frames[f];
	struct rmap *more;

	if (!(fr->flags & F_NV))
		return;
	if (fr->refs && (fr->nv & NV_LIVE)) {
		native_zap(fr->g, fr->idx);
		fr->nv &= ~(NV_LIVE | NV_RW);
	}
	more = rmap_more(h, f);
	for (uint32_t i = 0; i + 1 < fr->refs; i++)
		if (more[i].nv & NV_LIVE) {
			native_zap(more[i].g, more[i].idx);
			more[i].nv &= ~(NV_LIVE | NV_RW);
		}
	fr->flags &= ~F_NV;
}

bool native_writable(struct umlmem_host *h, uint64_t f)
{
	struct frame *fr = &h->frames[f];
	struct rmap *more;

	if (!(fr->flags & F_NV))
		return false;
	if (fr->refs && (fr->nv & NV_RW))
		return true;
	more = rmap_more(h, f);
	for (uint32_t i = 0; i + 1 < fr->refs; i++)
		if (more[i].nv & NV_RW)
			return true;
	return false;
}

/* ---- whole views ----------------------------------------------------------- */

/* A new placeholder of @len bytes somewhere: anonymous, registered for
   missing faults. */
static int placeholder(struct umlmem_host *h, uint64_t len, void **out)
{
	struct uffdio_register reg;
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	if (p == MAP_FAILED)
		return -errno;
	/* never populated, but keep the kernel from even trying huge pages */
	madvise(p, len, MADV_NOHUGEPAGE);
	madvise(p, len, MADV_DONTFORK);
	reg.range.start = (uintptr_t)p;
	reg.range.len = len;
	reg.mode = UFFDIO_REGISTER_MODE_MISSING;
	if (ioctl(h->uffd, UFFDIO_REGISTER, &reg) < 0) {
		int rc = -errno;

		munmap(p, len);
		return rc;
	}
	*out = p;
	return 0;
}

/*
 * Replacing part of a view. mmap(MAP_FIXED) and UFFDIO_REGISTER are two
 * calls, and an access by another thread between them would reach an
 * unregistered mapping: a read of a fresh anonymous page, a store nobody
 * sees. So a placeholder is built and registered elsewhere and moved over
 * the view with one mremap(MREMAP_FIXED), which the kernel does under the
 * process's mmap lock: an access sees the old mapping or the new one.
 * mremap keeps the registration only with UFFD_FEATURE_EVENT_REMAP, and
 * then waits until some thread reads the REMAP event from the userfaultfd;
 * the handler threads may all be waiting for host->lock, which the caller
 * holds, so a reader of its own reads until the moves are done. Fault
 * messages it reads meanwhile are kept and their threads woken at the end:
 * they fault again and are served by the handlers.
 */
struct remap_reader {
	struct umlmem_host *h;
	int stop;                 /* atomic */
	uint64_t *addr;           /* fault addresses read meanwhile */
	size_t n, cap;
	bool lost;                /* one did not fit: wake every view */
};

static void *remap_reader_main(void *arg)
{
	struct remap_reader *rr = arg;
	struct pollfd pfd = { .fd = rr->h->uffd, .events = POLLIN };
	struct uffd_msg msg[16];

	/* pairs with the release store of views_move() */
	while (!__atomic_load_n(&rr->stop, __ATOMIC_ACQUIRE)) {
		ssize_t r;

		if (poll(&pfd, 1, 1) <= 0)
			continue;
		r = read(rr->h->uffd, msg, sizeof(msg));
		for (ssize_t i = 0; i < r / (ssize_t)sizeof(msg[0]); i++) {
			if (msg[i].event != UFFD_EVENT_PAGEFAULT)
				continue;
			if (rr->n == rr->cap) {
				size_t cap = rr->cap ? 2 * rr->cap : 64;
				uint64_t *a = realloc(rr->addr, cap * sizeof(*a));

				if (!a) {
					rr->lost = true;
					continue;
				}
				rr->addr = a;
				rr->cap = cap;
			}
			rr->addr[rr->n++] = msg[i].arg.pagefault.address;
		}
	}
	return NULL;
}

static void wake(struct umlmem_host *h, uint64_t addr);

int (*native_fail_hook)(enum native_step step);

/* -errno for a step the test hook makes fail, else 0. */
static int fail_step(enum native_step step)
{
	return native_fail_hook ? native_fail_hook(step) : 0;
}

/* Moves each of the @n mappings from[i] of len[i] bytes, registered with
   the host's userfaultfd, over to[i], atomically (see above). res[i] says
   how each went: 0, or a negative errno, and then to[i] is as it was and
   from[i] is unmapped. Returns the first error, or 0. Caller holds
   host->lock. */
static int views_move(struct umlmem_host *h, void *const *from, uint8_t *const *to,
		      const uint64_t *len, unsigned n, int *res)
{
	struct remap_reader rr = { .h = h };
	pthread_t t;
	int rc = 0, err;

	err = fail_step(NV_STEP_THREAD);
	if (!err)
		err = -pthread_create(&t, NULL, remap_reader_main, &rr);
	if (err) {
		for (unsigned i = 0; i < n; i++) {
			munmap(from[i], len[i]);
			res[i] = err;
		}
		return err;
	}
	for (unsigned i = 0; i < n; i++) {
		int r = fail_step(NV_STEP_MREMAP);

		if (!r && mremap(from[i], len[i], len[i], MREMAP_MAYMOVE | MREMAP_FIXED, to[i]) ==
			  MAP_FAILED)
			r = -errno;
		if (r)
			munmap(from[i], len[i]);
		res[i] = r;
		if (r && !rc)
			rc = r;
	}
	/* pairs with remap_reader_main()'s acquire load */
	__atomic_store_n(&rr.stop, 1, __ATOMIC_RELEASE);
	pthread_join(t, NULL);
	for (size_t i = 0; i < rr.n; i++)
		wake(h, rr.addr[i] & ~(uint64_t)(PAGE_SIZE - 1));
	free(rr.addr);
	/* a fault whose message was lost to a failed realloc: wake them all */
	if (rr.lost)
		for (unsigned i = 0; i < n; i++) {
			struct uffdio_range r = { .start = (uintptr_t)to[i], .len = len[i] };

			ioctl(h->uffd, UFFDIO_WAKE, &r);
		}
	return rc;
}

#define NV_BATCH 64   /* views reset with one reader thread */

/*
 * Makes each of the @n (at most NV_BATCH) ranges at[i] of len[i] bytes one
 * placeholder, atomically. All that can fail for want of a resource (the
 * placeholders, the reader thread) is done before any view changes. Should
 * it fail, or a move fail, the ranges left as they were are zapped whole:
 * they are registered views (missing and minor faults), so every access
 * to them faults from then on, and the handler sees them as new. Returns 0
 * when every range is a new placeholder; otherwise the first error, and
 * some ranges keep their mappings (the caller cannot give them back to
 * the process-wide count). Caller holds host->lock.
 */
static int views_reset(struct umlmem_host *h, uint8_t *const *at, const uint64_t *len,
		       unsigned n)
{
	void *p[NV_BATCH];
	int res[NV_BATCH], rc = 0;
	unsigned made;

	for (made = 0; made < n; made++) {
		rc = fail_step(NV_STEP_PLACEHOLDER);
		if (!rc)
			rc = placeholder(h, len[made], &p[made]);
		if (rc)
			break;
	}
	if (rc) {
		for (unsigned i = 0; i < made; i++)
			munmap(p[i], len[i]);
		for (unsigned i = 0; i < n; i++)
			res[i] = rc;
	} else {
		rc = views_move(h, p, at, len, n, res);
	}
	for (unsigned i = 0; i < n; i++)
		if (res[i])
			madvise(at[i], len[i], MADV_DONTNEED);
	return rc;
}

/* ---- the views of the process ------------------------------------------- */

/* Every view of every host, for the fork handler. */
#define NV_VIEWS 1024
static struct { uintptr_t base, len; } nv_views[NV_VIEWS];   /* atomic fields */
static pthread_mutex_t nv_views_lock = PTHREAD_MUTEX_INITIALIZER;   /* writers only */
static pthread_once_t nv_fork_once = PTHREAD_ONCE_INIT;

/* In the child of a fork(): the views came along without their
   registration, so an access would reach stale frames unseen. Take them
   away; a touch is then a SIGSEGV. */
static void nv_atfork_child(void)
{
	for (unsigned i = 0; i < NV_VIEWS; i++)
		if (nv_views[i].base) {
			munmap((void *)nv_views[i].base, nv_views[i].len);
			nv_views[i].base = 0;
		}
}

static void nv_fork_install(void)
{
	pthread_atfork(NULL, NULL, nv_atfork_child);
}

/* Enters or removes view [base, base + len); -ENOMEM when NV_VIEWS are in use. */
static int views_add(void *base, uint64_t len)
{
	int rc = -ENOMEM;

	pthread_mutex_lock(&nv_views_lock);
	for (unsigned i = 0; i < NV_VIEWS; i++)
		if (!nv_views[i].base) {
			/* len before base: a fork's child that sees the base
			   (nv_atfork_child, whose plain loads read the copy
			   fork made) sees its len too */
			__atomic_store_n(&nv_views[i].len, len, __ATOMIC_RELAXED);
			__atomic_store_n(&nv_views[i].base, (uintptr_t)base, __ATOMIC_RELEASE);
			rc = 0;
			break;
		}
	pthread_mutex_unlock(&nv_views_lock);
	return rc;
}

static void views_del(void *base)
{
	pthread_mutex_lock(&nv_views_lock);
	for (unsigned i = 0; i < NV_VIEWS; i++)
		if (nv_views[i].base == (uintptr_t)base)
			__atomic_store_n(&nv_views[i].base, 0, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&nv_views_lock);
}

/* Clears the NV_* state of every mapper that belongs to @g (NULL: to any
   mapped guest). */
static void forget_views(struct umlmem_host *h, struct umlmem_guest *g)
{
	for (uint64_t f = 0; f < h->nmade; f++) {
		struct frame *fr = &h->frames[f];
		struct rmap *more;

		if (frame_gone(h, f)) {
			f |= FRAME_CHUNK - 1;   /* a chunk of free frames */
			continue;
		}
		if (!(fr->refs && (fr->nv || fr->refs > 1)))
			continue;
		if (!g || fr->g == g)
			fr->nv = 0;
		more = rmap_more(h, f);
		for (uint32_t i = 0; i + 1 < fr->refs; i++)
			if (!g || more[i].g == g)
				more[i].nv = 0;
		if (!g)
			fr->flags &= ~F_NV;
	}
}

/*
 * Resets every view of the host to a placeholder; its mappings are given
 * back to the process-wide count. Afterwards no view has a present entry
 * (every access faults), so every mapper's NV_* state is forgotten, also
 * when a reset failed (see views_reset()); but then the views that kept
 * their mappings keep them counted, and the error is returned. Caller
 * holds host->lock.
 */
static int flush(struct umlmem_host *h)
{
	uint8_t *at[NV_BATCH];
	uint64_t len[NV_BATCH];
	unsigned n = 0;
	int rc = 0, r;

	for (struct umlmem_guest *g = h->guests; g; g = g->next) {
		if (!g->nv_base)
			continue;
		at[n] = g->nv_base;
		len[n++] = g->npages << PAGE_SHIFT;
		if (n == NV_BATCH) {
			r = views_reset(h, at, len, n);
			rc = rc ? rc : r;
			n = 0;
		}
	}
	if (n) {
		r = views_reset(h, at, len, n);
		rc = rc ? rc : r;
	}
	forget_views(h, NULL);
	if (!rc) {
		__atomic_fetch_sub(&nv_used, h->nv_vmas, __ATOMIC_RELAXED);
		h->nv_vmas = 0;
	}
	h->nv_flushes++;
	return rc;
}

/* mmap of one page of the frame store at @a (NULL: anywhere), readable and
   writable, by the raw system call: ThreadSanitizer's mmap interceptor
   takes a mapping for a write to every byte of it, and would report every
   later access by the faulting thread, which the kernel orders after it,
   as a race. */
static void *frame_mmap(void *a, int fd, uint64_t off)
{
	long r = syscall(SYS_mmap, a, PAGE_SIZE, PROT_READ | PROT_WRITE,
			 MAP_SHARED | (a ? MAP_FIXED : 0), fd, off);

	/* glibc's syscall() returns -1 and sets errno on failure */
	return r == -1 ? MAP_FAILED : (void *)r;
}

static int register_page(struct umlmem_host *h, void *a)
{
	struct uffdio_register reg = {
		.range = { .start = (uintptr_t)a, .len = PAGE_SIZE },
		.mode = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_MINOR |
			UFFDIO_REGISTER_MODE_WP,
	};

	return ioctl(h->uffd, UFFDIO_REGISTER, &reg) < 0 ? -errno : 0;
}

/*
 * Pointing a page of a view at a frame. mmap(MAP_FIXED) and UFFDIO_REGISTER
 * are two calls, and between them the page is a plain mapping of the
 * frame that any thread, and the kernel on its behalf, reaches unseen.
 * For a frame that may be written (private, dirty, not under I/O) that is
 * harmless: such an access reaches the right frame and is allowed, as it
 * will be after, so the frame is mapped in place, writable, and then
 * registered. Any other frame must not take a store unseen, so its page
 * is built and registered elsewhere and moved in with mremap, as
 * views_reset() does: an access sees the old page (a placeholder, or a
 * zapped view: it faults) or the new one, registered with no entry (it
 * faults; install() then maps it write-protected). (Making the page
 * read-only until registered instead would turn a kernel store in between,
 * read(2) into the page or KVM's get_user_pages for write, into EFAULT,
 * which nothing retries.)
 */
static int view_map(struct umlmem_host *h, struct umlmem_guest *g, uint64_t idx, uint64_t f,
		    bool writable)
{
	uint8_t *a = page_addr(g, idx);
	uint64_t limit = LOAD(&nv_limit), one = PAGE_SIZE;
	void *p = NULL;
	int rc = 0;

	for (int tries = 0;; tries++) {
		if (__atomic_add_fetch(&nv_used, 2, __ATOMIC_RELAXED) > limit ||
		    (p = frame_mmap(writable ? a : NULL, h->store_fd, f << PAGE_SHIFT)) ==
			    MAP_FAILED) {
			int err = p == MAP_FAILED ? errno : ENOMEM;

			__atomic_fetch_sub(&nv_used, 2, __ATOMIC_RELAXED);
			if (tries || !h->nv_vmas)
				return seterr(-ENOMEM, "native mode: no memory mapping left for "
					      "guest '%s' (vm.max_map_count %llu): %s", g->name,
					      (unsigned long long)max_map_count(), strerror(err));
			rc = flush(h);
			if (rc)
				return seterr(rc, "native mode: resetting the views of the host, to "
					      "give back mappings for guest '%s', failed: %s", g->name,
					      strerror(-rc));
			continue;
		}
		break;
	}
	rc = register_page(h, p);
	if (writable) {
		/* a view of a frame that is not registered lets accesses
		   through unseen: put a placeholder back, or failing that
		   let no access through */
		if (rc && views_reset(h, &a, &one, 1))
			mprotect(a, PAGE_SIZE, PROT_NONE);
	} else if (rc) {
		munmap(p, PAGE_SIZE);
		__atomic_fetch_sub(&nv_used, 2, __ATOMIC_RELAXED);
		return seterr(rc, "native mode: registering one page with userfaultfd failed: %s",
			      strerror(-rc));
	} else {
		int res;

		rc = views_move(h, &p, &a, &one, 1, &res);
		if (rc) {
			__atomic_fetch_sub(&nv_used, 2, __ATOMIC_RELAXED);
			return seterr(rc, "native mode: moving a page into the view of guest '%s' "
				      "failed: %s", g->name, strerror(-rc));
		}
	}
	h->nv_vmas += 2;
	h->nv_maps++;
	if (rc)
		rc = seterr(rc, "native mode: registering one page with userfaultfd failed: %s",
			    strerror(-rc));
	return rc;
}

static int uffd_ioctl(struct umlmem_host *h, unsigned long req, void *arg)
{
	for (;;) {
		if (ioctl(h->uffd, req, arg) == 0)
			return 0;
		if (errno != EAGAIN && errno != EINTR)
			return -errno;
	}
}

static void wake(struct umlmem_host *h, uint64_t addr)
{
	struct uffdio_range r = { .start = addr, .len = PAGE_SIZE };

	uffd_ioctl(h, UFFDIO_WAKE, &r);
}

/* Installs the entry of page idx, now viewing frame @f; wakes the faulting
   thread. */
static int install(struct umlmem_host *h, struct umlmem_guest *g, uint64_t idx, uint64_t f,
		   bool writable)
{
	uint64_t a = (uintptr_t)page_addr(g, idx);
	struct uffdio_continue c = {
		.range = { .start = a, .len = PAGE_SIZE },
		.mode = writable ? 0 : UFFDIO_CONTINUE_MODE_WP,
	};
	struct uffdio_writeprotect wp = {
		.range = { .start = a, .len = PAGE_SIZE },
		.mode = writable ? 0 : UFFDIO_WRITEPROTECT_MODE_WP,
	};
	int rc;

	rc = uffd_ioctl(h, UFFDIO_CONTINUE, &c);
	if (rc == -EFAULT) {
		/* CONTINUE maps a page that is in the store's page cache; a
		   frame never written since the store was made may have none
		   yet. An atomic or of zero allocates it without changing a
		   byte. (Only then: a frame under write-out is being read.) */
		__atomic_fetch_or((uint8_t *)frame_addr(h, f), 0, __ATOMIC_RELAXED);
		rc = uffd_ioctl(h, UFFDIO_CONTINUE, &c);
	}
	if (rc == -EEXIST) {
		/* the entry is there: only its protection may need to change;
		   protecting wakes nobody, so wake the faulting thread */
		rc = uffd_ioctl(h, UFFDIO_WRITEPROTECT, &wp);
		wake(h, a);
	}
	return rc;
}

/* ---- the handler ----------------------------------------------------------- */

static struct umlmem_guest *view_of(struct umlmem_host *h, uint64_t addr)
{
	for (struct umlmem_guest *g = h->guests; g; g = g->next)
		if (g->nv_base && addr - (uintptr_t)g->nv_base < g->npages << PAGE_SHIFT)
			return g;
	return NULL;
}

/* The CPU thread @tid last ran on, from /proc; -1 if unknown. */
static int thread_cpu(pid_t tid)
{
	char path[64], buf[1024], *p;
	ssize_t r;
	int fd, field;

	snprintf(path, sizeof(path), "/proc/self/task/%d/stat", (int)tid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	r = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (r <= 0)
		return -1;
	buf[r] = 0;
	p = strrchr(buf, ')');   /* the command name may hold spaces */
	if (!p)
		return -1;
	/* field 3 (state) follows ") "; "processor" is field 39 */
	for (field = 2; field < 39 && p; field++)
		p = strchr(p + 1, ' ');
	return p ? atoi(p + 1) : -1;
}

/* A handler is done with guest @g. Caller holds host->lock. */
static void serve_done(struct umlmem_host *h, struct umlmem_guest *g)
{
	if (!--g->nv_serving && !g->nv_base)
		pthread_cond_broadcast(&h->cond);
}

/* Makes page idx of g's view show frame @f, the page's frame, and wakes
   the faulting thread. Caller holds host->lock. */
static int map_page(struct umlmem_host *h, struct umlmem_guest *g, uint64_t idx, uint64_t f,
		    bool write)
{
	struct frame *fr = &h->frames[f];
	/* see the design comment: what may be installed writable */
	bool writable = write || (fr->refs == 1 && fr->slot == SLOT_NONE && !(fr->flags & F_BUSY));
	int rc;

	if (!(mapper_get(h, f, g, idx) & NV_MAPPED)) {
		rc = view_map(h, g, idx, f, writable);
		if (rc)
			return rc;
		/* a failed flush in view_map() forgot every view: say this
		   one is mapped only once the entry is installed */
	}
	rc = install(h, g, idx, f, writable);
	if (rc)
		return seterr(rc, "native mode: installing page 0x%llx of guest '%s' failed: %s",
			      (unsigned long long)idx, g->name, strerror(-rc));
	mapper_set(h, f, g, idx, NV_MAPPED | NV_LIVE | (writable ? NV_RW : 0));
	return 0;
}

static void serve(struct umlmem_host *h, const struct uffd_msg *m)
{
	uint64_t addr = m->arg.pagefault.address & ~(uint64_t)(PAGE_SIZE - 1);
	uint64_t fl = m->arg.pagefault.flags;
	bool write = fl & (UFFD_PAGEFAULT_FLAG_WRITE | UFFD_PAGEFAULT_FLAG_WP);
	pid_t tid = (pid_t)m->arg.pagefault.feat.ptid;
	struct umlmem_guest *g;
	uint8_t *base;
	uint64_t idx, f;
	int rc = 0, waited = 0;
	bool sample, counted = false, reuse = false;
	uint64_t f0 = UINT64_MAX;
	uint8_t ref0 = 0;
	pte_t *e;

	host_lock(h);   /* a fault: background work steps aside */
	g = view_of(h, addr);
	if (!g) {
		/* unmapped meanwhile: let the thread retry and find out */
		pthread_mutex_unlock(&h->lock);
		wake(h, addr);
		return;
	}
	base = g->nv_base;
	idx = (addr - (uintptr_t)base) >> PAGE_SHIFT;
	/* page_fault() may drop the lock: the guest stays (see nv_serving),
	   its view may not */
	g->nv_serving++;
	/* a use for the pager: the page is resident and its entry absent
	   (zapped by the clock, or never installed) */
	e = pte_find(g, idx);
	if (e && PTE_TYPE(*e) == PTE_FRAME) {
		f0 = PTE_VAL(*e);
		ref0 = frame_ref(h, f0);
		reuse = !(mapper_get(h, f0, g, idx) & NV_LIVE);
	}
	for (;;) {
		uint64_t io = h->ev.io_errors, cs = h->ev.checksum_errors;

		rc = page_fault(g, idx, write, false, &f);
		if (g->nv_base != base)
			goto gone;
		if (!rc) {
			/* page_fault() counts any access to a resident page as
			   a use; the fault that brought the page in is not one,
			   nor the write fault of a present read-only entry */
			if (!reuse)
				frame_ref_set(h, f, f == f0 && ref0);
			rc = map_page(h, g, idx, f, write);
		}
		/* The access counts once in the error counters, however often
		   it is retried: what a retry's failed read added (one) is
		   taken back, for every failure but the first. */
		if (rc == -EIO && (h->ev.io_errors > io || h->ev.checksum_errors > cs)) {
			if (counted)
				(*(h->ev.io_errors > io ? &h->ev.io_errors : &h->ev.checksum_errors))--;
			counted = true;
		}
		if (!rc || waited >= NV_RETRY_MS || (rc != -ENOMEM && rc != -ENOSPC && rc != -EIO &&
						     rc != -EAGAIN))
			break;
		/* pins may be dropped, swap freed, a flaky read succeed, a
		   mapping or a thread become available */
		pthread_mutex_unlock(&h->lock);
		usleep(1000);
		waited++;
		pthread_mutex_lock(&h->lock);
		if (g->nv_base != base)
			goto gone;
	}
	serve_done(h, g);
	if (rc)
		goto fail;
	sample = ++h->nv_faults % NV_SAMPLE == 0 && tid;
	pthread_mutex_unlock(&h->lock);
	if (sample) {
		int cpu = thread_cpu(tid), me = sched_getcpu();

		pthread_mutex_lock(&h->lock);
		h->nv_cpu_sampled++;
		h->nv_cpu_local += cpu >= 0 && cpu == me;
		pthread_mutex_unlock(&h->lock);
	}
	return;
gone:
	/* unmapped while the lock was dropped: the thread finds out */
	serve_done(h, g);
	pthread_mutex_unlock(&h->lock);
	wake(h, addr);
	return;
fail:
	pthread_mutex_unlock(&h->lock);
	fprintf(stderr, "umlmem: native fault at %p (thread %d) cannot be served: %s; "
		"sending SIGBUS\n", (void *)(uintptr_t)addr, (int)tid, umlmem_errmsg());
	if (tid)
		syscall(SYS_tgkill, getpid(), tid, SIGBUS);
	wake(h, addr);
}

static void *handler_main(void *arg)
{
	struct umlmem_host *h = arg;
	struct uffd_msg msg[16];
	struct pollfd pfd[2] = {
		{ .fd = h->uffd, .events = POLLIN },
		{ .fd = h->nv_stopfd, .events = POLLIN },
	};

	for (;;) {
		ssize_t r;

		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pfd[1].revents)
			break;
		r = read(h->uffd, msg, sizeof(msg));
		if (r < 0)
			continue;   /* EAGAIN: another handler took it */
		for (ssize_t i = 0; i < r / (ssize_t)sizeof(msg[0]); i++)
			if (msg[i].event == UFFD_EVENT_PAGEFAULT)
				serve(h, &msg[i]);
	}
	return NULL;
}

/* ---- setting up ------------------------------------------------------------ */

static int uffd_open(struct umlmem_host *h)
{
	struct uffdio_api api = {
		.api = UFFD_API,
		.features = UFFD_FEATURE_MINOR_SHMEM | UFFD_FEATURE_WP_HUGETLBFS_SHMEM |
			    UFFD_FEATURE_THREAD_ID | UFFD_FEATURE_MISSING_SHMEM |
			    UFFD_FEATURE_EVENT_REMAP,
	};
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);

	if (fd < 0 && errno == EPERM) {
		/* unprivileged_userfaultfd=0: /dev/userfaultfd may still let us */
		int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);

		if (dev >= 0) {
			fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
			close(dev);
		}
		if (fd < 0)
			return seterr(-EPERM, "umlmem_guest_map: userfaultfd refused: run as root, "
				      "or set vm.unprivileged_userfaultfd=1, or give access to "
				      "/dev/userfaultfd");
	}
	if (fd < 0)
		return seterr(errno == ENOSYS ? -EOPNOTSUPP : -errno,
			      "umlmem_guest_map: userfaultfd: %s", strerror(errno));
	if (ioctl(fd, UFFDIO_API, &api) < 0) {
		int err = errno;

		close(fd);
		return seterr(-EOPNOTSUPP, "umlmem_guest_map: this kernel's userfaultfd lacks "
			      "minor or write-protect faults on shmem (Linux 6.4 or later has "
			      "them): %s", strerror(err));
	}
	h->uffd = fd;
	return 0;
}

static unsigned handler_count(void)
{
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	const char *env = getenv("UMLMEM_NATIVE_THREADS");
	long n = ncpu < 1 ? 1 : ncpu;

	if (env && atol(env) > 0)
		n = atol(env);
	return n > 8 ? 8 : (unsigned)n;
}

/* Stops the handler threads and closes the userfaultfd. Caller holds
   host->lock only when no view exists (no handler then waits for it), or
   is the thread that made the host NV_STOPPING. */
static void handlers_teardown(struct umlmem_host *h)
{
	uint64_t one = 1;

	if (h->nv_stopfd >= 0) {
		/* cannot fail on an eventfd below its maximum */
		if (write(h->nv_stopfd, &one, sizeof(one)) == sizeof(one))
			for (unsigned i = 0; i < h->nv_nthreads; i++)
				pthread_join(h->nv_threads[i], NULL);
		close(h->nv_stopfd);
	}
	h->nv_nthreads = 0;
	h->nv_stopfd = -1;
	if (h->uffd >= 0)
		close(h->uffd);
	h->uffd = -1;
}

static int start_handlers(struct umlmem_host *h)
{
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	unsigned n = handler_count();

	h->nv_stopfd = eventfd(0, EFD_CLOEXEC);
	if (h->nv_stopfd < 0) {
		int err = errno;

		handlers_teardown(h);
		return seterr(-err, "umlmem_guest_map: eventfd: %s", strerror(err));
	}
	for (h->nv_nthreads = 0; h->nv_nthreads < n; h->nv_nthreads++) {
		pthread_t *t = &h->nv_threads[h->nv_nthreads];
		int rc = pthread_create(t, NULL, handler_main, h);

		if (rc) {
			/* no view yet: no handler needs the lock to stop */
			handlers_teardown(h);
			return seterr(-rc, "umlmem_guest_map: cannot start a fault handler "
				      "thread: %s", strerror(rc));
		}
		if (n >= (unsigned long)ncpu) {
			cpu_set_t set;

			CPU_ZERO(&set);
			CPU_SET(h->nv_nthreads % ncpu, &set);
			pthread_setaffinity_np(*t, sizeof(set), &set);
		}
		pthread_setname_np(*t, "umlmem-fault");
	}
	return 0;
}

void (*native_stop_hook)(struct umlmem_host *h);

/*
 * Stopping happens with host->lock dropped (a handler in the middle of a
 * fault needs it to finish), so it is a state: the caller that took the
 * host to NV_STOPPING under the lock is the only one to get here with it,
 * so the handlers are joined and the descriptors closed exactly once, and
 * a umlmem_guest_map() meanwhile waits until NV_OFF and then starts
 * afresh, instead of registering its view on a userfaultfd being closed.
 */
void native_stop(struct umlmem_host *h)
{
	pthread_mutex_lock(&h->lock);
	if (h->nv_state != NV_STOPPING) {
		pthread_mutex_unlock(&h->lock);
		return;
	}
	pthread_mutex_unlock(&h->lock);
	if (native_stop_hook)
		native_stop_hook(h);
	handlers_teardown(h);
	pthread_mutex_lock(&h->lock);
	h->nv_state = NV_OFF;
	pthread_cond_broadcast(&h->cond);
	pthread_mutex_unlock(&h->lock);
}

/* The process-wide limit, computed once. Returns what is left of it. */
static uint64_t limit_left(uint64_t *mmc, uint64_t *inuse)
{
	static uint64_t last_override;   /* under the caller's host->lock; a race
					    between hosts only recomputes twice */
	uint64_t lim = LOAD(&nv_limit);

	*mmc = native_map_limit_override ? native_map_limit_override : max_map_count();
	*inuse = count_maps();
	if (!lim || native_map_limit_override != last_override) {
		last_override = native_map_limit_override;
		lim = *mmc > *inuse + NV_RESERVE ? *mmc - *inuse - NV_RESERVE : 0;
		if (native_map_limit_override)
			lim = native_map_limit_override;
		STORE(&nv_limit, lim);
	}
	uint64_t used = LOAD(&nv_used);

	return lim > used ? lim - used : 0;
}

int umlmem_guest_map(umlmem_guest *g, void **base)
{
	struct umlmem_host *h;
	uint64_t mmc, inuse, left, need;
	void *p;
	int rc;

	clearerr_tls();
	if (!g || !base)
		return seterr(-EINVAL, "umlmem_guest_map: %s is NULL", g ? "base" : "guest");
	h = g->host;
	pthread_mutex_lock(&h->lock);
	while (h->nv_state == NV_STOPPING)
		pthread_cond_wait(&h->cond, &h->lock);
	if (g->nv_base) {
		rc = seterr(-EBUSY, "umlmem_guest_map: guest '%s' is mapped already, at %p",
			    g->name, (void *)g->nv_base);
		goto out;
	}
	/* Every frame of the budget can be mapped into this view, at two
	   mappings each; with less room the views are reset so often that
	   faults, not the guest, take the time: refuse, as UML does. */
	left = limit_left(&mmc, &inuse);
	need = 2 * (h->nframes < g->npages ? h->nframes : g->npages) + NV_MIN_FREE;
	if (left < need) {
		uint64_t want = mmc + (need - left);

		want = (want + 65535) / 65536 * 65536;
		rc = seterr(-ENOMEM, "umlmem_guest_map: vm.max_map_count is %llu and this process "
			    "has %llu mappings, which leaves native mode %llu; guest '%s' on a budget "
			    "of %llu frames needs %llu (two per frame it may map): raise it, e.g. "
			    "sysctl -w vm.max_map_count=%llu", (unsigned long long)mmc,
			    (unsigned long long)inuse, (unsigned long long)left, g->name,
			    (unsigned long long)h->nframes, (unsigned long long)need,
			    (unsigned long long)want);
		goto out;
	}
	pthread_once(&nv_fork_once, nv_fork_install);
	if (h->nv_state == NV_OFF) {
		rc = uffd_open(h);
		if (rc)
			goto out;
		rc = start_handlers(h);
		if (rc)
			goto out;
		h->nv_state = NV_ON;
	}
	rc = placeholder(h, g->npages << PAGE_SHIFT, &p);
	if (!rc && views_add(p, g->npages << PAGE_SHIFT)) {
		munmap(p, g->npages << PAGE_SHIFT);
		rc = seterr(-ENOMEM, "umlmem_guest_map: %u guests are mapped in this process, "
			    "the most there may be", NV_VIEWS);
		goto out;
	}
	if (rc) {
		rc = seterr(rc, "umlmem_guest_map: cannot reserve %llu bytes of address space for "
			    "guest '%s': %s", (unsigned long long)(g->npages << PAGE_SHIFT), g->name,
			    strerror(-rc));
		goto out;
	}
	g->nv_base = p;
	h->nv_guests++;
	__atomic_fetch_add(&nv_mapped_guests, 1, __ATOMIC_RELAXED);
	*base = p;
out:
	/* a host whose first map failed keeps no handler */
	if (rc && !h->nv_guests && h->nv_state == NV_ON) {
		h->nv_state = NV_STOPPING;
		pthread_mutex_unlock(&h->lock);
		native_stop(h);
		return api_done(h, rc);
	}
	pthread_mutex_unlock(&h->lock);
	return api_done(h, rc);
}

bool native_unmap_locked(struct umlmem_guest *g)
{
	struct umlmem_host *h = g->host;

	if (!g->nv_base)
		return false;
	forget_views(h, g);
	views_del(g->nv_base);
	munmap(g->nv_base, g->npages << PAGE_SHIFT);
	g->nv_base = NULL;
	__atomic_fetch_sub(&nv_mapped_guests, 1, __ATOMIC_RELAXED);
	if (--h->nv_guests)
		return false;
	/* the last view went: its mappings went with it */
	__atomic_fetch_sub(&nv_used, h->nv_vmas, __ATOMIC_RELAXED);
	h->nv_vmas = 0;
	h->nv_state = NV_STOPPING;
	return true;
}

int umlmem_guest_unmap(umlmem_guest *g)
{
	struct umlmem_host *h;
	bool last;

	clearerr_tls();
	if (!g)
		return seterr(-EINVAL, "umlmem_guest_unmap: guest is NULL");
	h = g->host;
	pthread_mutex_lock(&h->lock);
	if (!g->nv_base) {
		pthread_mutex_unlock(&h->lock);
		return seterr(-EINVAL, "umlmem_guest_unmap: guest '%s' is not mapped", g->name);
	}
	last = native_unmap_locked(g);
	pthread_mutex_unlock(&h->lock);
	if (last)
		native_stop(h);
	return api_done(h, 0);
}
