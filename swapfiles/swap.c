/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The swap set: sparse, unlinked files that hold the pages the frame budget
 * cannot, a slot allocator over them, and per-slot reference counts and
 * checksums.
 *
 * Why clusters. Slots are handed out SWAP_CLUSTER_PAGES at a time from one
 * "current" cluster, in ascending order, so a batch of evictions lands on a
 * contiguous file range and the engine can issue it as one large write. The
 * clusters are striped over the files (cluster c in file c % nfiles), so a
 * swap set of several files spreads its load without splitting a batch.
 *
 * Why punching. A cluster whose last live slot is freed is punched out of
 * its file (FALLOC_FL_PUNCH_HOLE), so the disk space follows the live data
 * and not the high-water mark, and the cluster goes on an empty list to be
 * reused before any new one is created. Only whole clusters are punched:
 * one fallocate per 256 KiB freed instead of one per page (one per run of
 * clusters adjacent in a file that are freed together, as a destroyed
 * guest's are: for an NBD export one trim, one round trip, per run), and a
 * cluster's blocks stay together on disk while it is in use.
 *
 * Punches are deferred. swap_unref() runs under the caller's locks, and a
 * fallocate waits on the filesystem, so an emptied cluster only goes on the
 * punch list (CL_PUNCH: not allocatable, so nothing can be written into it
 * and later erased); swap_punch_pending(), called where the caller holds no
 * lock, does the fallocates with swap.lock dropped and then makes the
 * clusters reusable. Only at the cap, when the space is needed now, does
 * swap_alloc() punch in place.
 *
 * Sealed sets. With UMLMEM_SWAP_ENCRYPT a slot's bytes are ciphertext and
 * what proves them is the seal tag of its last write (seal.h: the nonce,
 * which is that write's generation, and the authenticator), kept here where
 * the checksum is kept, in an array allocated with the cluster's record
 * (24 bytes per slot; only sealed sets have it). The checksum is then 0.
 * The tag is memory's, never the file's: the file alone cannot say which
 * of two copies of a slot is the latest.
 *
 * A remote set (swap_open_remote) has no files: its "files" are ranges of
 * one block device that the engine owns (io_nbd.c), and a freed cluster is
 * handed to the discard hook (swap_set_discard: an NBD trim) instead of
 * fallocate. At the cap such a cluster is reused at once without a trim:
 * its space is about to be rewritten, and a trim may wait on the network,
 * which must not happen under swap.lock.
 *
 * Which frame holds a clean copy of a slot is the core's business (the
 * swap cache of umlmem/tier.c, keyed by tier and handle), not the slot's.
 *
 * Metadata is an array of pointers to per-cluster records grown by
 * doubling, one record per cluster ever created: an unlimited swap set that
 * used 1 GiB costs about 3 MiB of records, whatever its nominal capacity.
 * Under the cap the allocator never revisits the holes of partly used
 * clusters (that would break the contiguity of batches); at the cap it does,
 * round robin, so a full swap set still serves every free slot. So it does
 * when a write found the filesystem full (swap_note_fs_full), until a punch
 * gives space back: the holes of partly used clusters have their blocks.
 *
 * The lock. One mutex, swap.lock, guards all slot and cluster state. It is a
 * leaf: it is taken with any umlmem lock held and nothing is called out
 * under it. The engines never take it; they only read the file descriptors,
 * which are fixed from swap_open() to swap_close(). One wait happens under
 * it: an allocation at the cap whose only free space is being punched by
 * swap_punch_pending() sleeps on swap.punched until that is done; the
 * puncher holds no lock of the caller's, so this cannot deadlock.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <linux/falloc.h>

#include "swap.h"

/* Hard limit of an "unlimited" swap set: 2^36 slots (256 TiB). */
#define SW_MAX_SLOTS	(1ull << 36)
#define SW_NIL		UINT64_MAX
/* Misuse is reported on stderr in debug builds, this many times per set. */
#define SW_MISUSE_LOUD	8

enum sw_state {
	CL_USED = 0,	/* holds or held slots since it was last empty */
	CL_CURRENT,	/* the cluster swap_alloc() hands out from */
	CL_EMPTY,	/* no live slot, punched, on the empty list */
	CL_PUNCH,	/* no live slot, on the punch list, not yet punched */
};

struct sw_cluster {
	uint64_t next;				/* empty list link */
	uint32_t live;				/* slots with refs > 0 */
	uint8_t state;				/* enum sw_state */
	uint64_t hidden;			/* bit i: slot i is held for a tier
						   above, not readahead material */
	uint64_t writing;			/* bit i: slot i was handed out and
						   its write has not completed
						   (no checksum yet): a read
						   would see old bytes, so it is
						   no readahead material either */
	uint32_t refs[SWAP_CLUSTER_PAGES];
	uint64_t csum[SWAP_CLUSTER_PAGES];	/* 0 while the slot is free */
	/* In a sealed set (swap.tags) the seal tags of the slots' last
	   writes, allocated with the record; else NULL. All zeros while the
	   slot is free or its first write has not completed. */
	struct seal_tag *tag;
};

struct swap {
	/*
	 * Leaf lock. Protects the cluster records and every field from here
	 * to the comment "fixed after swap_open". Punches are issued under
	 * it (see sw_empty()).
	 */
	pthread_mutex_t lock;
	struct sw_cluster **cl;	/* [0, ncl) created, never freed before close */
	uint64_t cl_alloc;	/* length of the cl array */
	uint64_t ncl;		/* clusters created */
	uint64_t cur;		/* current cluster or SW_NIL */
	unsigned cursor;	/* next page of cur to look at */
	uint64_t empty;		/* head of the empty list or SW_NIL */
	uint64_t nempty;
	uint64_t punch;		/* head of the punch list or SW_NIL */
	uint64_t npunch;	/* on the punch list, or being punched */
	uint64_t punching;	/* taken off the punch list, being punched */
	pthread_cond_t punched;	/* broadcast when punching falls; with lock */
	uint64_t scan;		/* where the at-cap scan resumes */
	uint64_t used;		/* slots with refs > 0 */
	int fs_full;		/* atomic: see swap_note_fs_full() */
	uint64_t punches;
	uint64_t punch_errors;
	uint64_t misuse;	/* calls refused as misuse, reported by swap_check */
	int tags;		/* sealed set: clusters carry tags (swap_keep_tags) */
	char misuse_msg[160];	/* the first of them */

	/* fixed after swap_open, read without the lock */
	unsigned nfiles;
	int direct;
	uint64_t cap_slots;	/* as asked; 0: unlimited */
	uint64_t limit;		/* slots really usable: cap_slots or SW_MAX_SLOTS */
	uint64_t max_cl;	/* clusters needed to hold limit slots */
	int fd[SWAP_MAX_FILES];
	int remote;		/* no files: see swap_open_remote() */
	/* remote sets: gives freed ranges back to the device (set once,
	   before the first allocation, by swap_set_discard()) */
	void (*discard)(void *arg, struct swap_range *r, unsigned n);
	void *discard_arg;
};

static void sw_msg(char *buf, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void sw_msg(char *buf, size_t len, const char *fmt, ...)
{
	va_list ap;

	if (!buf || !len)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, len, fmt, ap);
	va_end(ap);
}

/* ---- files ----------------------------------------------------------- */

static int sw_check_dir(const char *dir, char *err, size_t errlen)
{
	struct stat st;

	if (stat(dir, &st) < 0) {
		int e = errno;

		if (e == ENOENT)
			sw_msg(err, errlen, "swap_dir '%s' does not exist: create it or set swap_dir to a writable directory",
			       dir);
		else
			sw_msg(err, errlen, "swap_dir '%s' cannot be used (%s): set swap_dir to a writable directory",
			       dir, strerror(e));
		return -e;
	}
	if (!S_ISDIR(st.st_mode)) {
		sw_msg(err, errlen, "swap_dir '%s' is not a directory: set swap_dir to a writable directory", dir);
		return -ENOTDIR;
	}
	return 0;
}

static int sw_open_tmpfile(const char *dir, int dflag)
{
	int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC | dflag, 0600);

	return fd < 0 ? -errno : fd;
}

/* For filesystems without O_TMPFILE: the name exists only for an instant. */
static int sw_open_mkstemp(const char *dir)
{
	char path[PATH_MAX];
	int fd, e;

	if (snprintf(path, sizeof(path), "%s/umlmem-swap-XXXXXX", dir) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	fd = mkostemp(path, O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (unlink(path) < 0 || fchmod(fd, 0600) < 0) {
		e = errno;
		unlink(path);
		close(fd);
		return -e;
	}
	return fd;
}

static int sw_set_direct(int fd, int on)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0)
		return -errno;
	fl = on ? fl | O_DIRECT : fl & ~O_DIRECT;
	return fcntl(fd, F_SETFL, fl) < 0 ? -errno : 0;
}

/*
 * Creates one unlinked file. *direct says whether to try O_DIRECT and is
 * cleared when the filesystem refuses it (EINVAL).
 */
static int sw_create(const char *dir, int *direct)
{
	int fd = -EINVAL;

	if (*direct) {
		fd = sw_open_tmpfile(dir, O_DIRECT);
		if (fd >= 0)
			return fd;
	}
	if (fd == -EINVAL) {
		fd = sw_open_tmpfile(dir, 0);
		if (fd >= 0) {
			*direct = 0;
			return fd;
		}
	}
	/* ENOTSUP: no O_TMPFILE in this filesystem; EISDIR: nor in the kernel */
	if (fd != -EOPNOTSUPP && fd != -EISDIR && fd != -EINVAL)
		return fd;
	fd = sw_open_mkstemp(dir);
	if (fd >= 0 && *direct && sw_set_direct(fd, 1) < 0)
		*direct = 0;
	return fd;
}

static void sw_free(struct swap *sw)
{
	unsigned i;
	uint64_t c;

	for (i = 0; i < SWAP_MAX_FILES; i++)
		if (sw->fd[i] >= 0)
			close(sw->fd[i]);
	for (c = 0; c < sw->ncl; c++)
		free(sw->cl[c]);
	free(sw->cl);
	free(sw);
}

/* The file count and capacity every swap set is opened with: true (and
   @err says why) when they cannot make one. */
static bool sw_bad_shape(unsigned nfiles, uint64_t cap_bytes, char *err, size_t errlen)
{
	if (nfiles < 1 || nfiles > SWAP_MAX_FILES) {
		sw_msg(err, errlen, "swap_files %u is out of range: use 1 to %u", nfiles, SWAP_MAX_FILES);
		return true;
	}
	if (cap_bytes && cap_bytes < SWAP_PAGE) {
		sw_msg(err, errlen, "swap capacity of %llu bytes is below one page (%u bytes): use 0 or at least one page",
		       (unsigned long long)cap_bytes, SWAP_PAGE);
		return true;
	}
	return false;
}

/* Last step of opening a set: its lock and condition, then *out. On failure
   the set is freed and the message says why. */
static int sw_publish(struct swap *sw, struct swap **out, char *err, size_t errlen)
{
	int rc = pthread_mutex_init(&sw->lock, NULL);

	if (!rc) {
		rc = pthread_cond_init(&sw->punched, NULL);
		if (rc)
			pthread_mutex_destroy(&sw->lock);
	}
	if (rc) {
		sw_msg(err, errlen, "cannot initialise the swap lock: %s", strerror(rc));
		sw_free(sw);
		return -rc;
	}
	*out = sw;
	return 0;
}

int swap_open(struct swap **out, const char *dir, unsigned nfiles, uint64_t cap_bytes,
	      char *err, size_t errlen)
{
	struct swap *sw;
	unsigned i;
	int rc, direct = 1;

	sw_msg(err, errlen, "%s", "");
	if (!out || !dir) {
		sw_msg(err, errlen, "swap_open: no %s given", out ? "swap_dir" : "result pointer");
		return -EINVAL;
	}
	*out = NULL;
	if (sw_bad_shape(nfiles, cap_bytes, err, errlen))
		return -EINVAL;
	rc = sw_check_dir(dir, err, errlen);
	if (rc < 0)
		return rc;

	sw = calloc(1, sizeof(*sw));
	if (!sw) {
		sw_msg(err, errlen, "no memory for the swap set");
		return -ENOMEM;
	}
	for (i = 0; i < SWAP_MAX_FILES; i++)
		sw->fd[i] = -1;
	sw->nfiles = nfiles;
	sw->cap_slots = cap_bytes / SWAP_PAGE;
	if (sw->cap_slots > SW_MAX_SLOTS)
		sw->cap_slots = SW_MAX_SLOTS;
	sw->limit = sw->cap_slots ? sw->cap_slots : SW_MAX_SLOTS;
	sw->max_cl = (sw->limit + SWAP_CLUSTER_PAGES - 1) / SWAP_CLUSTER_PAGES;
	sw->cur = SW_NIL;
	sw->empty = SW_NIL;
	sw->punch = SW_NIL;

	for (i = 0; i < nfiles; i++) {
		rc = sw_create(dir, &direct);
		if (rc < 0) {
			if (rc == -EACCES || rc == -EPERM || rc == -EROFS)
				sw_msg(err, errlen, "swap_dir '%s' is not writable (%s): set swap_dir to a writable directory",
				       dir, strerror(-rc));
			else
				sw_msg(err, errlen, "cannot create a swap file in swap_dir '%s': %s",
				       dir, strerror(-rc));
			sw_free(sw);
			return rc;
		}
		sw->fd[i] = rc;
	}
	/* one mode for the whole set, should a later file have refused it */
	if (!direct)
		for (i = 0; i < nfiles; i++)
			sw_set_direct(sw->fd[i], 0);
	sw->direct = direct;

	return sw_publish(sw, out, err, errlen);
}

int swap_open_remote(struct swap **out, unsigned nfiles, uint64_t cap_bytes, char *err,
		     size_t errlen)
{
	struct swap *sw;
	unsigned i;

	sw_msg(err, errlen, "%s", "");
	if (!out)
		return -EINVAL;
	*out = NULL;
	if (sw_bad_shape(nfiles, cap_bytes, err, errlen))
		return -EINVAL;
	sw = calloc(1, sizeof(*sw));
	if (!sw) {
		sw_msg(err, errlen, "no memory for the swap set");
		return -ENOMEM;
	}
	for (i = 0; i < SWAP_MAX_FILES; i++)
		sw->fd[i] = -1;
	sw->remote = 1;
	sw->nfiles = nfiles;
	sw->cur = SW_NIL;
	sw->empty = SW_NIL;
	sw->punch = SW_NIL;
	swap_set_cap(sw, cap_bytes);
	return sw_publish(sw, out, err, errlen);
}

void swap_set_cap(struct swap *sw, uint64_t cap_bytes)
{
	sw->cap_slots = cap_bytes / SWAP_PAGE;
	if (sw->cap_slots > SW_MAX_SLOTS)
		sw->cap_slots = SW_MAX_SLOTS;
	sw->limit = sw->cap_slots ? sw->cap_slots : SW_MAX_SLOTS;
	sw->max_cl = (sw->limit + SWAP_CLUSTER_PAGES - 1) / SWAP_CLUSTER_PAGES;
}

uint64_t swap_cap(const struct swap *sw)
{
	return sw->cap_slots * (uint64_t)SWAP_PAGE;
}

void swap_set_discard(struct swap *sw, void (*fn)(void *arg, struct swap_range *r, unsigned n),
		      void *arg)
{
	sw->discard = fn;
	sw->discard_arg = arg;
}

int swap_is_remote(const struct swap *sw)
{
	return sw->remote;
}

void swap_close(struct swap *sw)
{
	if (!sw)
		return;
	pthread_cond_destroy(&sw->punched);
	pthread_mutex_destroy(&sw->lock);
	sw_free(sw);
}

unsigned swap_nfiles(const struct swap *sw)
{
	return sw->nfiles;
}

int swap_fd(const struct swap *sw, unsigned file)
{
	return file < sw->nfiles ? sw->fd[file] : -1;
}

int swap_is_direct(const struct swap *sw)
{
	return sw->direct;
}

void swap_where(const struct swap *sw, uint64_t slot, unsigned *file, uint64_t *off)
{
	uint64_t c = slot / SWAP_CLUSTER_PAGES;

	if (file)
		*file = c % sw->nfiles;
	if (off)
		*off = (c / sw->nfiles) * SWAP_CLUSTER_BYTES +
		       (slot % SWAP_CLUSTER_PAGES) * (uint64_t)SWAP_PAGE;
}

uint64_t swap_page_csum(const void *page)
{
	return page_hash(page, 0);
}

/* ---- clusters and slots (all under sw->lock) -------------------------- */

/* Usable pages of cluster @c: the last cluster under a cap may be partial. */
static unsigned sw_pages(const struct swap *sw, uint64_t c)
{
	uint64_t left = sw->limit - c * SWAP_CLUSTER_PAGES;

	return left < SWAP_CLUSTER_PAGES ? (unsigned)left : SWAP_CLUSTER_PAGES;
}

/* The record of a usable slot, or NULL. */
static struct sw_cluster *sw_lookup(const struct swap *sw, uint64_t slot, unsigned *idx)
{
	uint64_t c = slot / SWAP_CLUSTER_PAGES;

	if (c >= sw->ncl)
		return NULL;
	*idx = slot % SWAP_CLUSTER_PAGES;
	if (*idx >= sw_pages(sw, c))
		return NULL;
	return sw->cl[c];
}

/*
 * A caller bug (a reference to a free slot, a slot never handed out). It is
 * refused without touching any state, so it cannot corrupt the allocator;
 * swap_check() reports it.
 */
static void sw_misuse(struct swap *sw, const char *what, uint64_t slot, uint64_t a, uint64_t b)
{
	char msg[sizeof(sw->misuse_msg)];

	snprintf(msg, sizeof(msg), "%s: slot %llu (%llu, %llu)", what,
		 (unsigned long long)slot, (unsigned long long)a, (unsigned long long)b);
	if (!sw->misuse++)
		memcpy(sw->misuse_msg, msg, sizeof(msg));
#ifndef NDEBUG
	if (sw->misuse <= SW_MISUSE_LOUD)
		fprintf(stderr, "umlmem: swap misuse refused: %s\n", msg);
#endif
}

static void sw_empty(struct swap *sw, uint64_t c);
static void sw_punch_now(struct swap *sw);

static void sw_take(struct swap *sw, uint64_t c, unsigned i, uint64_t *out)
{
	struct sw_cluster *cl = sw->cl[c];

	cl->refs[i] = 1;
	cl->csum[i] = 0;
	if (cl->tag)
		memset(&cl->tag[i], 0, sizeof(cl->tag[i]));
	cl->writing |= UINT64_C(1) << i;
	cl->live++;
	sw->used++;
	*out = c * SWAP_CLUSTER_PAGES + i;
}

static unsigned sw_take_current(struct swap *sw, unsigned n, uint64_t *out)
{
	struct sw_cluster *cl = sw->cl[sw->cur];
	unsigned pages = sw_pages(sw, sw->cur), got = 0;

	while (got < n && sw->cursor < pages) {
		unsigned i = sw->cursor++;

		/* cannot happen (swap_check verifies it); never hand out a live slot */
		if (cl->refs[i])
			continue;
		sw_take(sw, sw->cur, i, &out[got++]);
	}
	return got;
}

static void sw_retire_current(struct swap *sw)
{
	struct sw_cluster *cl;

	if (sw->cur == SW_NIL)
		return;
	cl = sw->cl[sw->cur];
	if (cl->live)
		cl->state = CL_USED;
	else
		sw_empty(sw, sw->cur);
	sw->cur = SW_NIL;
}

/* Makes a fresh current cluster: an empty one, else a new one. */
static int sw_next_current(struct swap *sw)
{
	struct sw_cluster *cl;
	uint64_t c;

	if (!sw->nempty && sw->ncl >= sw->max_cl) {
		sw_punch_now(sw);
		/* clusters another thread is punching are empty in a moment:
		   the set is not full (swap_punch_pending() takes no other lock,
		   so waiting here, under the caller's, cannot deadlock) */
		while (!sw->nempty && sw->punching)
			pthread_cond_wait(&sw->punched, &sw->lock);
	}
	if (sw->nempty) {
		c = sw->empty;
		cl = sw->cl[c];
		sw->empty = cl->next;
		sw->nempty--;
	} else {
		if (sw->ncl >= sw->max_cl)
			return -ENOSPC;
		if (sw->ncl == sw->cl_alloc) {
			uint64_t na = sw->cl_alloc ? sw->cl_alloc * 2 : 16;
			struct sw_cluster **p;

			if (na > sw->max_cl)
				na = sw->max_cl;
			p = realloc(sw->cl, na * sizeof(*p));
			if (!p)
				return -ENOMEM;
			sw->cl = p;
			sw->cl_alloc = na;
		}
		cl = calloc(1, sizeof(*cl) + (sw->tags ? SWAP_CLUSTER_PAGES *
							  sizeof(struct seal_tag) : 0));
		if (!cl)
			return -ENOMEM;
		if (sw->tags)
			cl->tag = (struct seal_tag *)(cl + 1);
		c = sw->ncl;
		sw->cl[sw->ncl++] = cl;
	}
	sw_retire_current(sw);
	cl->state = CL_CURRENT;
	cl->next = SW_NIL;
	sw->cur = c;
	sw->cursor = 0;
	return 0;
}

/* At the cap: free slots of partly used clusters, round robin. */
static unsigned sw_scan(struct swap *sw, unsigned n, uint64_t *out)
{
	uint64_t k, c = 0;
	unsigned got = 0;

	if (!sw->ncl)
		return 0;
	for (k = 0; k < sw->ncl && got < n && sw->used < sw->limit; k++) {
		struct sw_cluster *cl;
		unsigned i, pages;

		c = (sw->scan + k) % sw->ncl;
		cl = sw->cl[c];
		pages = sw_pages(sw, c);
		/* a cluster waiting for its punch must stay untouched; the
		   current one hands out the pages from its cursor on in order */
		if (cl->state == CL_EMPTY || cl->state == CL_PUNCH || cl->live >= pages)
			continue;
		if (c == sw->cur)
			pages = sw->cursor;
		for (i = 0; i < pages && got < n; i++)
			if (!cl->refs[i])
				sw_take(sw, c, i, &out[got++]);
	}
	/* resume on the cluster that may still have holes */
	sw->scan = got == n ? c : (c + 1) % sw->ncl;
	return got;
}

void swap_note_fs_full(struct swap *sw)
{
	if (sw)
		__atomic_store_n(&sw->fs_full, 1, __ATOMIC_RELAXED);
}

unsigned swap_alloc(struct swap *sw, unsigned n, uint64_t *out)
{
	unsigned got = 0;

	if (!sw || !out || !n)
		return 0;
	pthread_mutex_lock(&sw->lock);
	/* the filesystem is full: holes whose blocks the files still hold */
	if (__atomic_load_n(&sw->fs_full, __ATOMIC_RELAXED))
		got = sw_scan(sw, n, out);
	while (got < n) {
		if (sw->cur != SW_NIL)
			got += sw_take_current(sw, n - got, out + got);
		if (got == n || sw_next_current(sw) == 0)
			continue;
		got += sw_scan(sw, n - got, out + got);
		break;
	}
	pthread_mutex_unlock(&sw->lock);
	return got;
}

/* Punches the @n clusters @c, @c + nfiles, ... (adjacent in one file) out
   of their file, as one range. No lock needed: the clusters are on no list
   that swap_alloc() takes from. Files only: a remote set's ranges go to
   its discard hook together (sw_punch_batch). */
static void sw_punch_run(struct swap *sw, uint64_t c, unsigned n)
{
	int fd = sw->fd[c % sw->nfiles];
	off_t off = (off_t)((c / sw->nfiles) * SWAP_CLUSTER_BYTES);
	off_t len = (off_t)n * (off_t)SWAP_CLUSTER_BYTES;
	int rc;

	do {
		rc = fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len);
	} while (rc < 0 && errno == EINTR);
	/* EOPNOTSUPP: the space stays, nothing else is lost */
	__atomic_fetch_add(rc == 0 ? &sw->punches : &sw->punch_errors, n, __ATOMIC_RELAXED);
	if (rc == 0)
		__atomic_store_n(&sw->fs_full, 0, __ATOMIC_RELAXED);
}

static void sw_punch(struct swap *sw, uint64_t c)
{
	sw_punch_run(sw, c, 1);
}

static void sw_to_empty(struct swap *sw, uint64_t c)
{
	struct sw_cluster *cl = sw->cl[c];

	cl->state = CL_EMPTY;
	cl->next = sw->empty;
	sw->empty = c;
	sw->nempty++;
}

/*
 * Cluster @c lost its last live slot: queue it for punching. It leaves the
 * current position if it held it, so nothing is handed out of it before
 * the punch.
 */
static void sw_empty(struct swap *sw, uint64_t c)
{
	struct sw_cluster *cl = sw->cl[c];

	if (c == sw->cur)
		sw->cur = SW_NIL;
	cl->state = CL_PUNCH;
	cl->next = sw->punch;
	sw->punch = c;
	sw->npunch++;
}

/* At the cap, with no empty cluster: punch the queued ones now, under the
   lock, because the caller needs their space. */
static void sw_punch_now(struct swap *sw)
{
	while (sw->punch != SW_NIL) {
		uint64_t c = sw->punch;

		sw->punch = sw->cl[c]->next;
		sw->npunch--;
		if (!sw->remote)
			sw_punch(sw, c);
		sw_to_empty(sw, c);
	}
}

void (*swap_punch_hook)(struct swap *sw);

/*
 * The clusters are taken off the punch list in batches, by number: once
 * the lock is dropped, swap_alloc() may grow (realloc) sw->cl, so neither
 * the list links nor the array are read without it. A taken cluster stays
 * CL_PUNCH (nothing allocates from it) and counts in sw->punching, for
 * which an allocation at the cap waits (sw_next_current()).
 */
#define SW_PUNCH_BATCH 64

/* Orders clusters by file, then by place in it. */
static int sw_cluster_cmp(const void *a, const void *b, void *arg)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b, nf = *(unsigned *)arg;

	if (x % nf != y % nf)
		return x % nf < y % nf ? -1 : 1;
	return x < y ? -1 : x > y;
}

/* Punches the @n clusters of @batch, sorted here so that clusters adjacent
   in a file (a guest's pages freed together, as destroy frees them) go as
   one range: one fallocate, or one trim over the network, per run. A
   remote set's runs go to the discard hook in one call, so that the trims
   are in flight together rather than one round trip after another. */
static void sw_punch_batch(struct swap *sw, uint64_t *batch, unsigned n)
{
	struct swap_range r[SW_PUNCH_BATCH];
	unsigned nr = 0, nf = sw->nfiles, i, k;

	qsort_r(batch, n, sizeof(*batch), sw_cluster_cmp, &nf);
	for (i = 0; i < n; i += k) {
		for (k = 1; i + k < n && batch[i + k] == batch[i] + (uint64_t)k * nf; k++)
			;
		if (!sw->remote) {
			sw_punch_run(sw, batch[i], k);
			continue;
		}
		r[nr++] = (struct swap_range){
			.file = (unsigned)(batch[i] % nf),
			.off = (batch[i] / nf) * SWAP_CLUSTER_BYTES,
			.len = (uint64_t)k * SWAP_CLUSTER_BYTES,
			.res = -EOPNOTSUPP,
		};
	}
	if (!nr)
		return;
	if (sw->discard)
		sw->discard(sw->discard_arg, r, nr);
	for (i = 0; i < nr; i++)
		__atomic_fetch_add(r[i].res == 0 ? &sw->punches : &sw->punch_errors,
				   r[i].len / SWAP_CLUSTER_BYTES, __ATOMIC_RELAXED);
}

void swap_punch_pending(struct swap *sw)
{
	uint64_t batch[SW_PUNCH_BATCH];
	unsigned i, n;

	if (!sw)
		return;
	pthread_mutex_lock(&sw->lock);
	for (;;) {
		for (n = 0; n < SW_PUNCH_BATCH && sw->punch != SW_NIL; n++) {
			batch[n] = sw->punch;
			sw->punch = sw->cl[batch[n]]->next;
		}
		if (!n)
			break;
		sw->punching += n;   /* npunch still counts them until they are empty */
		pthread_mutex_unlock(&sw->lock);
		if (swap_punch_hook)
			swap_punch_hook(sw);
		sw_punch_batch(sw, batch, n);
		pthread_mutex_lock(&sw->lock);
		for (i = 0; i < n; i++) {
			sw->npunch--;
			sw_to_empty(sw, batch[i]);
		}
		sw->punching -= n;
		pthread_cond_broadcast(&sw->punched);
	}
	pthread_mutex_unlock(&sw->lock);
}

unsigned swap_live(struct swap *sw, uint64_t from, unsigned n, uint64_t *out)
{
	struct sw_cluster *cl;
	unsigned i, got = 0;

	pthread_mutex_lock(&sw->lock);
	for (uint64_t s = from; s < from + n; s++) {
		cl = sw_lookup(sw, s, &i);
		if (!cl)
			break;
		if (cl->refs[i] && !((cl->hidden | cl->writing) >> i & 1))
			out[got++] = s;
	}
	pthread_mutex_unlock(&sw->lock);
	return got;
}

void swap_hide(struct swap *sw, uint64_t slot)
{
	struct sw_cluster *cl;
	unsigned i;

	pthread_mutex_lock(&sw->lock);
	cl = sw_lookup(sw, slot, &i);
	if (!cl || !cl->refs[i])
		sw_misuse(sw, "swap_hide of a free slot", slot, 0, 0);
	else
		cl->hidden |= UINT64_C(1) << i;
	pthread_mutex_unlock(&sw->lock);
}

void swap_ref(struct swap *sw, uint64_t slot, unsigned n)
{
	struct sw_cluster *cl;
	unsigned i;

	if (!sw || !n)
		return;
	pthread_mutex_lock(&sw->lock);
	cl = sw_lookup(sw, slot, &i);
	if (!cl)
		sw_misuse(sw, "swap_ref of a slot out of range", slot, n, 0);
	else if (!cl->refs[i])
		sw_misuse(sw, "swap_ref of a free slot", slot, n, 0);
	else if (cl->refs[i] > UINT32_MAX - n)
		sw_misuse(sw, "swap_ref overflows the count", slot, n, cl->refs[i]);
	else
		cl->refs[i] += n;
	pthread_mutex_unlock(&sw->lock);
}

void swap_unref(struct swap *sw, uint64_t slot, unsigned n)
{
	struct sw_cluster *cl;
	unsigned i;

	if (!sw || !n)
		return;
	pthread_mutex_lock(&sw->lock);
	cl = sw_lookup(sw, slot, &i);
	if (!cl) {
		sw_misuse(sw, "swap_unref of a slot out of range", slot, n, 0);
	} else if (cl->refs[i] < n) {
		sw_misuse(sw, cl->refs[i] ? "swap_unref of more references than the slot has" :
			  "swap_unref of a free slot", slot, n, cl->refs[i]);
	} else {
		cl->refs[i] -= n;
		if (!cl->refs[i]) {
			cl->csum[i] = 0;
			if (cl->tag)
				memset(&cl->tag[i], 0, sizeof(cl->tag[i]));
			cl->hidden &= ~(UINT64_C(1) << i);
			cl->writing &= ~(UINT64_C(1) << i);
			cl->live--;
			sw->used--;
			if (!cl->live)
				sw_empty(sw, slot / SWAP_CLUSTER_PAGES);
		}
	}
	pthread_mutex_unlock(&sw->lock);
}

uint32_t swap_refs(struct swap *sw, uint64_t slot)
{
	struct sw_cluster *cl;
	uint32_t r = 0;
	unsigned i;

	if (!sw)
		return 0;
	pthread_mutex_lock(&sw->lock);
	cl = sw_lookup(sw, slot, &i);
	if (cl)
		r = cl->refs[i];
	pthread_mutex_unlock(&sw->lock);
	return r;
}

void swap_set_csum(struct swap *sw, uint64_t slot, uint64_t csum)
{
	struct sw_cluster *cl;
	unsigned i;

	if (!sw)
		return;
	pthread_mutex_lock(&sw->lock);
	cl = sw_lookup(sw, slot, &i);
	if (!cl)
		sw_misuse(sw, "swap_set_csum of a slot out of range", slot, 0, 0);
	else if (!cl->refs[i])
		sw_misuse(sw, "swap_set_csum of a free slot", slot, 0, 0);
	else {
		cl->csum[i] = csum;
		cl->writing &= ~(UINT64_C(1) << i);
	}
	pthread_mutex_unlock(&sw->lock);
}

uint64_t swap_csum(struct swap *sw, uint64_t slot)
{
	struct sw_cluster *cl;
	uint64_t r = 0;
	unsigned i;

	if (!sw)
		return 0;
	pthread_mutex_lock(&sw->lock);
	cl = sw_lookup(sw, slot, &i);
	if (cl)
		r = cl->csum[i];
	pthread_mutex_unlock(&sw->lock);
	return r;
}

int swap_keep_tags(struct swap *sw)
{
	int rc = 0;

	pthread_mutex_lock(&sw->lock);
	if (sw->ncl)
		rc = -EBUSY;
	else
		sw->tags = 1;
	pthread_mutex_unlock(&sw->lock);
	return rc;
}

void swap_set_tag(struct swap *sw, uint64_t slot, const struct seal_tag *tag)
{
	struct sw_cluster *cl;
	unsigned i;

	pthread_mutex_lock(&sw->lock);
	cl = sw_lookup(sw, slot, &i);
	if (!cl)
		sw_misuse(sw, "swap_set_tag of a slot out of range", slot, 0, 0);
	else if (!cl->refs[i])
		sw_misuse(sw, "swap_set_tag of a free slot", slot, 0, 0);
	else if (!cl->tag)
		sw_misuse(sw, "swap_set_tag in a set without tags", slot, 0, 0);
	else {
		cl->tag[i] = *tag;
		cl->writing &= ~(UINT64_C(1) << i);
	}
	pthread_mutex_unlock(&sw->lock);
}

void swap_tag(struct swap *sw, uint64_t slot, struct seal_tag *out)
{
	struct sw_cluster *cl;
	unsigned i;

	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&sw->lock);
	cl = sw_lookup(sw, slot, &i);
	if (cl && cl->tag)
		*out = cl->tag[i];
	pthread_mutex_unlock(&sw->lock);
}

static uint64_t sw_disk_bytes(struct swap *sw)
{
	uint64_t sum = 0;
	struct stat st;
	unsigned i;

	/* a device: the clusters written since their last trim */
	if (sw->remote) {
		pthread_mutex_lock(&sw->lock);
		sum = (sw->ncl - sw->nempty) * SWAP_CLUSTER_BYTES;
		pthread_mutex_unlock(&sw->lock);
		return sum;
	}
	for (i = 0; i < sw->nfiles; i++)
		if (fstat(sw->fd[i], &st) == 0)
			sum += (uint64_t)st.st_blocks * 512;
	return sum;
}

void swap_info(struct swap *sw, struct swap_info *out)
{
	if (!out)
		return;
	memset(out, 0, sizeof(*out));
	if (!sw)
		return;
	/* disk use should show what has been freed */
	swap_punch_pending(sw);
	pthread_mutex_lock(&sw->lock);
	out->slots_used = sw->used;
	out->clusters = sw->ncl;
	pthread_mutex_unlock(&sw->lock);
	out->punches = __atomic_load_n(&sw->punches, __ATOMIC_RELAXED);
	out->slots_cap = sw->cap_slots;
	out->disk_bytes = sw_disk_bytes(sw);
}

int swap_check(struct swap *sw, char *err, size_t errlen)
{
	uint64_t c, used = 0, nempty = 0, npunch = 0, walk = 0;
	int rc = -EUCLEAN;

	sw_msg(err, errlen, "%s", "");
	if (!sw)
		return -EINVAL;
	pthread_mutex_lock(&sw->lock);
	if (sw->misuse) {
		sw_msg(err, errlen, "%llu misuse call(s) refused, the first: %s",
		       (unsigned long long)sw->misuse, sw->misuse_msg);
		goto out;
	}
	for (c = 0; c < sw->ncl; c++) {
		struct sw_cluster *cl = sw->cl[c];
		unsigned i, pages = sw_pages(sw, c), live = 0;

		if (!cl->tag != !sw->tags) {
			sw_msg(err, errlen, "cluster %llu: %s seal tags in a set %s them",
			       (unsigned long long)c, cl->tag ? "has" : "lacks",
			       sw->tags ? "with" : "without");
			goto out;
		}
		for (i = 0; i < SWAP_CLUSTER_PAGES; i++) {
			if (i >= pages && cl->refs[i]) {
				sw_msg(err, errlen, "cluster %llu: unusable page %u has %u references",
				       (unsigned long long)c, i, cl->refs[i]);
				goto out;
			}
			if (!cl->refs[i] && cl->csum[i]) {
				sw_msg(err, errlen, "cluster %llu: free page %u keeps a checksum",
				       (unsigned long long)c, i);
				goto out;
			}
			/* sealed: the tag of the last completed write, no checksum */
			if (cl->tag && (cl->csum[i] || !cl->tag[i].nonce !=
					!(cl->refs[i] && !(cl->writing >> i & 1)))) {
				sw_msg(err, errlen, "cluster %llu: page %u (%s) has seal tag nonce "
				       "%llu and checksum %llx", (unsigned long long)c, i,
				       !cl->refs[i] ? "free" : (cl->writing >> i & 1) ?
				       "write pending" : "written",
				       (unsigned long long)cl->tag[i].nonce,
				       (unsigned long long)cl->csum[i]);
				goto out;
			}
			if (c == sw->cur && i >= sw->cursor && cl->refs[i]) {
				sw_msg(err, errlen, "cluster %llu: page %u past the cursor %u is live",
				       (unsigned long long)c, i, sw->cursor);
				goto out;
			}
			live += cl->refs[i] != 0;
		}
		if (live != cl->live) {
			sw_msg(err, errlen, "cluster %llu: live count %u but %u pages have references",
			       (unsigned long long)c, cl->live, live);
			goto out;
		}
		if ((cl->state == CL_CURRENT) != (c == sw->cur)) {
			sw_msg(err, errlen, "cluster %llu: current state disagrees with the current cluster",
			       (unsigned long long)c);
			goto out;
		}
		if (cl->state == CL_PUNCH && live) {
			sw_msg(err, errlen, "cluster %llu: waits for its punch with %u live pages",
			       (unsigned long long)c, live);
			goto out;
		}
		npunch += cl->state == CL_PUNCH;
		if (cl->state == CL_EMPTY) {
			nempty++;
			if (live) {
				sw_msg(err, errlen, "cluster %llu: on the empty list with %u live pages",
				       (unsigned long long)c, live);
				goto out;
			}
		}
		used += live;
	}
	if (used != sw->used) {
		sw_msg(err, errlen, "%llu slots in use but the clusters hold %llu",
		       (unsigned long long)sw->used, (unsigned long long)used);
		goto out;
	}
	for (c = sw->empty; c != SW_NIL && walk <= sw->ncl; c = sw->cl[c]->next, walk++) {
		if (c >= sw->ncl || sw->cl[c]->state != CL_EMPTY) {
			sw_msg(err, errlen, "empty list holds cluster %llu that is not empty",
			       (unsigned long long)c);
			goto out;
		}
	}
	if (walk != nempty || nempty != sw->nempty) {
		sw_msg(err, errlen, "empty list has %llu entries, %llu clusters are empty, count says %llu",
		       (unsigned long long)walk, (unsigned long long)nempty,
		       (unsigned long long)sw->nempty);
		goto out;
	}
	if (npunch != sw->npunch) {
		sw_msg(err, errlen, "%llu clusters wait for a punch, count says %llu",
		       (unsigned long long)npunch, (unsigned long long)sw->npunch);
		goto out;
	}
	rc = 0;
out:
	pthread_mutex_unlock(&sw->lock);
	return rc;
}
