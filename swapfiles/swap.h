/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * swapfiles: the swap set (sparse files, slots, clusters, checksums) and the
 * I/O engines that move pages between frames and slots.
 *
 * A *slot* is one page of swap, named by a 64-bit number. Slots are grouped
 * in clusters of SWAP_CLUSTER_PAGES; cluster c lives in file (c % nfiles) at
 * byte offset (c / nfiles) * SWAP_CLUSTER_BYTES, so slot s is page
 * (s % SWAP_CLUSTER_PAGES) of cluster (s / SWAP_CLUSTER_PAGES).
 *
 * Each slot has a reference count (a shared page is swapped out once and
 * every sharer's page table entry, plus a frame that still caches its
 * content, holds one reference) and the xxh3-64 checksum of what was last
 * written to it. A cluster whose last live slot is freed is punched out of
 * its file (fallocate PUNCH_HOLE), so the disk space follows live data.
 *
 * Locking: the swap set has one internal mutex (struct swap.lock) that
 * protects slot and cluster state. It is a leaf lock: callers may hold any
 * umlmem lock when calling in, and no swap_* function calls out while
 * holding it. The engine functions (io_*) take no lock of the swap set;
 * they only read its file descriptors, which are fixed after swap_open().
 */
#ifndef UMLMEM_SWAP_H
#define UMLMEM_SWAP_H

#include <stddef.h>
#include <stdint.h>
#include "umlmem.h"
#include "seal.h"

#define SWAP_PAGE          4096u
#define SWAP_CLUSTER_PAGES 64u
#define SWAP_CLUSTER_BYTES ((uint64_t)SWAP_CLUSTER_PAGES * SWAP_PAGE)
#define SWAP_MAX_FILES     64u
#define SLOT_NONE          UINT64_MAX

struct swap;

/* ---- swap.c: files, slots, clusters ---------------------------------- */

/*
 * Opens a swap set of @nfiles (1..SWAP_MAX_FILES) unlinked files in @dir:
 * O_TMPFILE, falling back to mkstemp + unlink where the filesystem lacks it;
 * mode 0600; O_DIRECT where the filesystem takes it. @cap_bytes caps the
 * capacity (rounded down to pages; 0: unlimited). On failure returns a
 * negative errno and writes a sentence naming the directory and the problem
 * into @err.
 */
int  swap_open(struct swap **out, const char *dir, unsigned nfiles, uint64_t cap_bytes,
	       char *err, size_t errlen);
void swap_close(struct swap *sw);
/*
 * Opens a swap set with no files, for an engine that owns its storage (an
 * NBD export, io_nbd.c): "file" i is the i-th range of the device, and a
 * freed cluster goes to the discard hook. Same arguments and errors as
 * swap_open() without the directory.
 */
int  swap_open_remote(struct swap **out, unsigned nfiles, uint64_t cap_bytes, char *err,
		      size_t errlen);
int  swap_is_remote(const struct swap *sw);
/* Sets the capacity (0: unlimited). Only before the first swap_alloc():
   the engine of a remote set bounds it by the device's size at init. */
void swap_set_cap(struct swap *sw, uint64_t cap_bytes);
uint64_t swap_cap(const struct swap *sw);   /* bytes; 0: unlimited */
/* One range of a remote set's device to give back (a trim). */
struct swap_range {
	unsigned file;      /* of the swap set */
	uint64_t off, len;  /* bytes, in that file */
	int res;            /* set by the discard hook: 0 or a negative errno */
};
/* Remote sets: @fn(@arg, r, n) gives the @n ranges of emptied clusters
   back to the device, all at once (they are independent: a hook may have
   them in flight together), and sets each one's res; a range that fails
   simply keeps its old bytes. Called with no lock held but where the
   caller of swap_punch_pending() holds some. Set before the first use. */
void swap_set_discard(struct swap *sw, void (*fn)(void *arg, struct swap_range *r, unsigned n),
		      void *arg);

unsigned swap_nfiles(const struct swap *sw);
int      swap_fd(const struct swap *sw, unsigned file);
int      swap_is_direct(const struct swap *sw);   /* files opened with O_DIRECT */

/*
 * Allocates up to @n free slots, each with one reference, into @out, taking
 * them from the current cluster in ascending order so that a batch is
 * contiguous on disk; moves to an empty cluster (or a new one while under the
 * cap) when the current one is used up; at the cap, reuses free slots of
 * partly used clusters. Returns how many were allocated (0 when swap is
 * full).
 */
unsigned swap_alloc(struct swap *sw, unsigned n, uint64_t *out);
/* A write into the set failed with ENOSPC from the filesystem: until a
   punch gives space back, swap_alloc() takes the free slots of partly used
   clusters, whose blocks the files still hold, before new clusters. */
void swap_note_fs_full(struct swap *sw);

/* Adds @n references to a live slot. */
void     swap_ref(struct swap *sw, uint64_t slot, unsigned n);
/* Drops @n references; at zero the slot is free, and a cluster left with
   no live slot is punched out of its file. */
void     swap_unref(struct swap *sw, uint64_t slot, unsigned n);
uint32_t swap_refs(struct swap *sw, uint64_t slot);

void     swap_set_csum(struct swap *sw, uint64_t slot, uint64_t csum);
uint64_t swap_csum(struct swap *sw, uint64_t slot);

/*
 * Sealed sets (UMLMEM_SWAP_ENCRYPT): each slot also keeps the seal tag of
 * its last write (24 bytes: nonce and authenticator, see seal.h) beside its
 * checksum, which a sealed write leaves 0 (the tag proves the content).
 * swap_keep_tags() must be called before the first swap_alloc(); it
 * returns -EBUSY after. swap_set_tag() records the tag of a completed write
 * and, like swap_set_csum(), ends the slot's "writing" state. swap_tag()
 * gives the tag, or one of zeros (which opens nothing) for a slot without.
 */
int      swap_keep_tags(struct swap *sw);
void     swap_set_tag(struct swap *sw, uint64_t slot, const struct seal_tag *tag);
void     swap_tag(struct swap *sw, uint64_t slot, struct seal_tag *out);

/* Up to @n live slots in [from, from + n), ascending, into @out (what
   readahead may read next), hidden ones and those whose first write has
   not completed (swap_set_csum not yet called) left out. Returns how many. */
unsigned swap_live(struct swap *sw, uint64_t from, unsigned n, uint64_t *out);
/* Slot @slot holds a page for a tier above (the compressed pool's
   write-back), named by no page table entry: swap_live() leaves it out
   until it is freed. */
void swap_hide(struct swap *sw, uint64_t slot);

/* Punches the clusters emptied since the last call. Call it holding no
   lock of the caller's: fallocate may wait on the filesystem. */
void     swap_punch_pending(struct swap *sw);
/* Test hook: called by swap_punch_pending() with no lock held, after it
   took clusters off the punch list and before it punches them. */
extern void (*swap_punch_hook)(struct swap *sw);

/* Where slot @slot lives. */
void     swap_where(const struct swap *sw, uint64_t slot, unsigned *file, uint64_t *off);

/* xxh3-64 of one page: what swap_set_csum() stores and a read verifies. */
uint64_t swap_page_csum(const void *page);

/* ---- hash.c ---------------------------------------------------------- */
/* xxh3-64 of one page with @seed, by the widest vector unit the CPU has. */
uint64_t page_hash(const void *page, uint64_t seed);
const char *page_hash_impl(void);   /* which one, for messages */

struct swap_info {
	uint64_t slots_used;     /* slots with at least one reference */
	uint64_t slots_cap;      /* capacity in slots; 0: unlimited */
	uint64_t clusters;       /* clusters ever created */
	uint64_t punches;        /* clusters punched out */
	uint64_t disk_bytes;     /* sum of st_blocks * 512 over the files */
};
void swap_info(struct swap *sw, struct swap_info *out);

/* Consistency check for tests: every cluster's live count equals its slots
   with references; returns 0 or -EUCLEAN with a message in @err. */
int  swap_check(struct swap *sw, char *err, size_t errlen);

/* ---- io.c: the engine interface -------------------------------------- */

/* IO_VEC is set only by io_run() on the requests it merges (see io_req). */
enum io_op { IO_READ = 0, IO_WRITE = 1, IO_VEC = 2 };
#define IO_RUN_MAX 128u   /* pages io_run() merges into one request at most */

/*
 * One page transfer. Preconditions: @buf is 4096-aligned (a frame of the
 * store, or a 4096-aligned buffer of the caller's), @off a multiple of
 * 4096, @len a multiple of 512 and at most 4096, @file < swap_nfiles().
 */
struct io_req {
	void    *buf;
	uint64_t off;
	uint32_t len;
	uint16_t file;
	uint8_t  op;     /* enum io_op */
	int32_t  res;    /* out: 0 when all @len bytes moved; else -errno (short: -EIO) */
	/* With IO_VEC in @op (made by io_run() only, for engines that set
	   io_ops.vectored): @niov pages at @iov, adjacent in the file from @off,
	   moved as one transfer of @len = niov * 4096 bytes. A short transfer
	   is just -EIO: io_run() then redoes the pages one by one. */
	const struct iovec *iov;
	uint32_t niov;
};

struct io_engine;

/* Engine operations, one table per engine (io_sync.c, ...). */
struct io_ops {
	const char *name;
	/* Prepares the engine for the files of @sw and the frame store
	   [store, store + store_len) (may be NULL, 0). -ENOTSUP where the
	   engine cannot run, with the reason in e->note and nothing left
	   allocated; e->priv is the engine's only on success. */
	int  (*init)(struct io_engine *e, struct swap *sw, void *store, size_t store_len);
	/* Submits all @n requests and returns when every one has completed,
	   each with its res set. Requests touching adjacent file ranges may be
	   merged. Returns 0. Safe to call from several threads at once. */
	int  (*run)(struct io_engine *e, struct io_req *r, unsigned n);
	void (*fini)(struct io_engine *e);
	/* Gives the @n ranges back to the storage (NBD trims, all in flight
	   together) and sets each one's res: 0 or a negative errno, the range
	   then simply keeping its old bytes. NULL where files punch holes
	   themselves (swap.c). Safe to call from several threads at once. */
	void (*discard)(struct io_engine *e, struct swap_range *r, unsigned n);
	/* Optional (io_uring): a frame store that grows and shrinks by chunks
	   of @chunk bytes (see io_engine_store); store_chunk registers chunk
	   @c (@on) or unregisters it. NULL: the engine has no use for it. */
	int  (*store)(struct io_engine *e, void *store, size_t len, size_t chunk);
	void (*store_chunk)(struct io_engine *e, uint64_t c, int on);
	/* The engine takes IO_VEC requests: io_run() merges pages adjacent in
	   a file into one request, so a batch of evictions is one large write
	   and a readahead one large read, not dozens of 4 KiB transfers. */
	int vectored;
};

/* Injected faults (tests): the @nth (1-based) request of @op from now on
   fails as @kind, and the @count - 1 after it too. */
enum io_fault { IO_FAULT_NONE = 0, IO_FAULT_EIO, IO_FAULT_SHORT, IO_FAULT_ENOSPC };

struct io_engine {
	const struct io_ops *ops;
	enum umlmem_io_engine kind;
	void *priv;                 /* the engine's own state */
	/* fault injection, guarded by fault_lock */
	struct {
		uint64_t nth, count;
		enum io_fault kind;
	} fault[2];
	uint64_t seen[2];
	int fault_armed;
	void *fault_lock;           /* pthread_mutex_t *, allocated by io_engine_create */
	/* pages inside ops->run right now, and the most ever seen (atomics):
	   how deep a queue the callers really give the disk */
	uint64_t inflight, max_inflight;
	/* Written by init: when it fails, why the engine cannot run here; when
	   it succeeds, "" or how the engine runs degraded (io_uring without
	   fixed buffers). io_engine_create copies it into its @why. */
	char note[256];
	/* The export of the NBD engine (io_engine_create_uri), a copy owned
	   by the engine; NULL for the file engines. */
	char *uri;
};

/*
 * Creates the engine @kind. UMLMEM_IO_AUTO tries io_uring, then libaio, then
 * pread/pwrite, and writes in @why why it skipped each one it skipped ("" when
 * io_uring runs as it should; a note when it runs without fixed buffers).
 * io_uring or libaio asked for by name and unable to run here: -ENOTSUP, and
 * the reason in @why. The engine's kind is what really runs.
 */
int  io_engine_create(enum umlmem_io_engine kind, struct swap *sw, void *store,
		      size_t store_len, struct io_engine **out, char *why, size_t whylen);
void io_engine_destroy(struct io_engine *e);
/*
 * Gives an engine made without a store the frame store [store, store + len)
 * whose pages come and go by chunks of @chunk bytes (chunk c is [store + c *
 * chunk, store + (c + 1) * chunk)); nothing is registered yet. Returns 0
 * (also when the engine cannot use it: it then runs on as before, and says
 * so in @why when it would have), or -EINVAL for a bad shape.
 */
int  io_engine_store(struct io_engine *e, void *store, size_t len, size_t chunk, char *why,
		     size_t whylen);
/*
 * Chunk @c of that store holds memory for each of its pages and keeps it
 * until io_store_chunk(e, c, 0): the engine may register it (io_uring
 * fixed buffers; its pages are pinned, not allocated, since they are there).
 * With @on 0, its pages are about to be given back (punched) and must
 * not be used through a registration any more: on return no request
 * started later uses one, and the pins go once the requests in flight
 * complete. Calls for one chunk alternate, on first; any thread, any lock
 * of the caller's (the engine's own locks are leaves).
 */
void io_store_chunk(struct io_engine *e, uint64_t c, int on);
/*
 * Creates the NBD engine (io_nbd.c) on the export @uri for the remote swap
 * set @sw (swap_open_remote): connects, and bounds the set's capacity by
 * the export's size (-ENOSPC when the capacity asked for does not fit).
 * On failure @why says what went wrong and what to change.
 */
int  io_engine_create_uri(const char *uri, struct swap *sw, struct io_engine **out, char *why,
			  size_t whylen);
/* Gives freed ranges back through the engine's discard; each res is
   -EOPNOTSUPP where it has none. The signature of swap_set_discard()'s
   hook, @arg being the engine. */
void io_discard(void *arg, struct swap_range *r, unsigned n);

/* Runs a batch through the engine, applying injected faults: an EIO or
   ENOSPC fault fails the request without submitting it, a SHORT fault
   submits it with half its length so that the engine sees (and reports) a
   short transfer. Returns the number of failed requests. */
unsigned io_run(struct io_engine *e, struct io_req *r, unsigned n);

void io_inject(struct io_engine *e, enum io_op op, uint64_t nth, enum io_fault kind,
	       uint64_t count);

/* Test hook: called before each wait for completions of the io_uring and
   libaio engines; a negative errno makes that wait fail with it unmade, as
   on a ring or context that cannot be waited on. NULL: no hook. */
extern int (*io_wait_hook)(void);

extern const struct io_ops io_sync_ops;
extern const struct io_ops io_uring_ops, io_aio_ops;
extern const struct io_ops io_nbd_ops;

/* How long an NBD request, or a connection attempt, may wait for the
   server before it fails with -EIO, in milliseconds: read at each
   io_engine_create_uri() from $UMLMEM_NBD_TIMEOUT_MS, else IO_NBD_TIMEOUT_MS. */
#define IO_NBD_TIMEOUT_MS 10000u

#endif
