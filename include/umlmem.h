/* SPDX-License-Identifier: LGPL-2.1-or-later */
/**
 * @file umlmem.h
 * @brief umlmem: guest RAM larger than the host, in user space.
 *
 * umlmem gives every guest (an emulator's guest, a UML-style process) a RAM
 * region that may be far larger than the host can hold. A fixed budget of
 * physical frames holds the pages in use; the rest live in sparse swap files;
 * untouched memory costs nothing and reads as zeros.
 *
 * Objects
 *  - A *host* (#umlmem_host) is one physical memory budget. It owns the frame
 *    store (one memfd of the budget's size), the swap files, the pager and the
 *    counters. Create it with umlmem_host_create().
 *  - A *guest* (#umlmem_guest) is one guest's RAM, of any nominal size up to
 *    #UMLMEM_MAX_GUEST_BYTES, created on a host with umlmem_guest_create().
 *    Any number of guests may share a host; their nominal sizes may add up to
 *    far more than the budget.
 *
 * Access
 *  - umlmem_read() and umlmem_write() copy bytes in and out, any length and
 *    alignment. A page that is not resident is faulted in (from swap, or as a
 *    fresh zeroed frame on its first write); when the budget is full the pager
 *    evicts the least recently used pages in a batch first.
 *  - umlmem_pin() returns a pointer to one page's bytes that stays valid until
 *    umlmem_unpin(); a pinned page is never evicted or moved.
 *  - umlmem_discard() turns a range back into zeros and frees what held it.
 *  - umlmem_guest_map() ("native mode") makes the guest's RAM appear at a
 *    host address, for emulators that want plain loads and stores on it:
 *    faults there, also from system calls and KVM, are served through
 *    userfaultfd by the host's handler threads, with the budget, swap and
 *    sharing working underneath.
 *
 * Errors
 *  Every call that can fail returns 0 on success or a negative errno. Nothing
 *  aborts the process on bad input. umlmem_strerror() names any code, and
 *  umlmem_errmsg() gives the calling thread a sentence about its last failure
 *  (which argument, which limit) that a person can act on.
 *  The calls whose result a caller must look at (the create calls,
 *  umlmem_read(), umlmem_write(), umlmem_pin(), umlmem_discard(),
 *  umlmem_guest_map(), umlmem_guest_set_merge()) are marked
 *  UMLMEM_NODISCARD: the compiler warns where a result is dropped.
 *
 * Threads
 *  Every call is thread-safe unless its entry says otherwise; one guest may be
 *  used from many threads at once. Destroying a guest or a host while another
 *  thread still uses it is a bug in the caller.
 *
 * Sizes and addresses are bytes (uint64_t); guest physical addresses ("gpa")
 * start at 0. The page size is #UMLMEM_PAGE_SIZE.
 *
 * Caveats: what the library does to the process
 *  - Threads. A host created with #UMLMEM_BACKGROUND runs two threads until
 *    it is destroyed: the reclaim thread and the merge thread, not bound to
 *    any CPU. While any guest of a host is mapped (umlmem_guest_map()), the
 *    host runs fault handler threads named "umlmem-fault": one per online
 *    CPU, at most 8 (UMLMEM_NATIVE_THREADS changes the count), bound to
 *    the CPUs in turn when there are at least as many threads as online
 *    CPUs and not bound otherwise (so not on machines of more than 8 CPUs);
 *    they stop when the last guest of the host is unmapped. Native
 *    mode also starts a short-lived thread while it resets views. With the
 *    io_uring engine the kernel may add its own I/O worker threads
 *    (iou-wrk) to the process. Signals meant for one thread should be
 *    blocked in these: they inherit the signal mask of the thread that
 *    created the host or mapped the guest.
 *  - Signals. The first umlmem_guest_map() of the process installs a
 *    SIGSEGV handler (SA_SIGINFO | SA_NODEFER | SA_ONSTACK) that stays
 *    installed for the life of the process. It retries a store that faulted
 *    on a page of a view while that page was being mapped in, and passes
 *    every other SIGSEGV to the handler that was installed before it (or,
 *    when there was none, restores the default action so that the fault
 *    kills as usual). A program that installs its own SIGSEGV handler after
 *    that must chain to the one it replaces. A native fault that cannot be
 *    served (swap reads that keep failing, a budget that stays all pinned)
 *    gets a SIGBUS sent to the faulting thread, and a line on stderr.
 *  - fork(). The child gets no threads of the library, and may find its
 *    locks held: it must not use any host or guest of the parent (exec, or
 *    create its own). The frame store is shared memory, so pointers from
 *    umlmem_pin() reach the parent's guest pages from the child as well.
 *    Views are not inherited: their placeholders are MADV_DONTFORK, and the
 *    same first umlmem_guest_map() registers a pthread_atfork() child
 *    handler that unmaps every view in the child; a child that touches one
 *    gets SIGSEGV.
 *  - Environment. The library reads TMPDIR (where swap files go when
 *    swap_dir is NULL; else /var/tmp) and UMLMEM_NATIVE_THREADS (the number
 *    of fault handler threads, 1 to 8). Nothing else.
 *  - vm.max_map_count. Each page a view maps may cost the process a memory
 *    mapping; umlmem_guest_map() reads /proc/sys/vm/max_map_count and
 *    /proc/self/maps, keeps what it uses within the limit, and refuses
 *    (-ENOMEM, with the value to set) when the limit leaves fewer than two
 *    mappings per frame of the budget. Other code of the process that maps
 *    a lot after that may find the limit reached.
 *  - File descriptors and memory. A host holds a memfd of its budget's size
 *    (the frame store, mapped shared), its swap files, the I/O engine's
 *    rings or contexts and, in native mode, a userfaultfd, all close-on-exec.
 *    The io_uring engine registers the frame store with the kernel, which
 *    pins it (counted against RLIMIT_MEMLOCK without CAP_IPC_LOCK); when it
 *    cannot, it runs without registration.
 *  - No call is async-signal-safe: none may be made from a signal handler.
 *
 * Versions and binary compatibility
 *  umlmem_version() says which library a program runs with; the
 *  UMLMEM_VERSION_* macros say which header it was built with. A program
 *  built against this header runs with this release of the library or any
 *  later one of the same major version (the soname, libumlmem.so.MAJOR).
 *
 *  Fields are added at the end of the structs that cross the API
 *  (struct umlmem_host_config, umlmem_guest_config, umlmem_stats,
 *  umlmem_host_info), so every call that takes one also takes its size:
 *  umlmem_host_create() and the other calls by their documented names are
 *  inline functions here that pass sizeof(*cfg) to the entry points named
 *  *_sized (or, for umlmem_host_info(), take the size themselves). So the
 *  library always knows how large the caller's struct is, and never reads
 *  or writes beyond it:
 *   - a smaller struct (a program built against an older header): the
 *     config fields it lacks take their defaults, the counters it lacks are
 *     not written;
 *   - a larger struct (a program built against a newer header): a config
 *     is accepted when every byte this library does not know is zero (the
 *     default of every field added later means "as before"), and refused
 *     with -EINVAL and a message naming those bytes otherwise; the counters
 *     this library does not know are set to zero.
 *  The library also exports the documented names themselves (version
 *  UMLMEM_0.1), for programs built against the 0.1 header, where they were
 *  plain calls: they take the struct to be of its 0.1 size.
 */
#ifndef UMLMEM_H
#define UMLMEM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The version of this header, the one source of the library's version:
   the Makefile reads these three lines for the shared object's name
   (libumlmem.so.MAJOR), its file name and umlmem.pc. */
#define UMLMEM_VERSION_MAJOR 0
#define UMLMEM_VERSION_MINOR 2
#define UMLMEM_VERSION_PATCH 0

/* UMLMEM_API marks what the shared library exports; the library is built
   with -fvisibility=hidden, so everything else in it stays internal and a
   program's own symbols of the same names never replace it. */
#ifndef UMLMEM_API
#if defined(__GNUC__) && __GNUC__ >= 4
#define UMLMEM_API __attribute__((visibility("default")))
#else
#define UMLMEM_API
#endif
#endif

/* UMLMEM_NODISCARD marks the calls whose result a caller must look at:
   ignoring it means using memory that was not read, data that was not
   written, or an object that was not made. The compiler warns on a call
   that drops it (with GCC, also through a cast to void). */
#if defined(__has_attribute)
#if __has_attribute(warn_unused_result)
#define UMLMEM_NODISCARD __attribute__((warn_unused_result))
#endif
#endif
#ifndef UMLMEM_NODISCARD
#define UMLMEM_NODISCARD
#endif

/** The page size: the unit of residency, swap and sharing. */
#define UMLMEM_PAGE_SIZE 4096u

/** The largest nominal guest size: 2^47 bytes (128 TiB), the x86-64 user
 *  address space. Larger sizes are refused with -EINVAL. */
#define UMLMEM_MAX_GUEST_BYTES (1ull << 47)

/** One physical memory budget (opaque). */
typedef struct umlmem_host umlmem_host;
/** One guest's RAM (opaque). */
typedef struct umlmem_guest umlmem_guest;

/** How swap pages move between frames and swap files. */
enum umlmem_io_engine {
	UMLMEM_IO_AUTO = 0, /**< io_uring, else libaio, else sync (the best available) */
	UMLMEM_IO_URING,    /**< io_uring through liburing */
	UMLMEM_IO_AIO,      /**< Linux native AIO through libaio, O_DIRECT */
	UMLMEM_IO_SYNC,     /**< pread/pwrite from the calling thread */
	UMLMEM_IO_NBD,      /**< an NBD export through libnbd: what umlmem_host_io_engine()
			         reports with swap_uri; not a choice for io (-EINVAL) */
};

/** Host flag: a reclaim thread keeps free frames between two watermarks
 *  (see reclaim_low), so that faults rarely wait for a write-out, and a
 *  merge thread scans for identical pages (see dedup_pages). Without it
 *  nothing runs unless a call needs it, or umlmem_reclaim() and
 *  umlmem_dedup_scan() ask for it. */
#define UMLMEM_BACKGROUND 0x1u
/** Host flag: never read ahead of a swap-in. By default a fault that
 *  continues an ascending run of swap-ins also reads the next slots (8 at
 *  first, up to 64) into frames that are free anyway. */
#define UMLMEM_NO_READAHEAD 0x2u
/** Host flag: the merge scanner merges only pages of zeros (which become
 *  untouched memory again), never pages with content: no sharing between
 *  guests, so none of the side channels of page sharing (see README). */
#define UMLMEM_DEDUP_ZERO_ONLY 0x4u
/** Host flag: every page written to swap is encrypted and authenticated
 *  (AES-256-GCM where the CPU has AES-NI, else ChaCha20-Poly1305, from
 *  libsodium) with a random key that lives only in this process's memory,
 *  a fresh nonce for each write, and the slot and the write bound to it: a
 *  page changed in the swap file, moved to another slot, or replaced by an
 *  older copy of its own slot reads as -EIO and counts as a checksum error,
 *  never as wrong bytes. The swap files are unreadable without the process.
 *  Costs 24 bytes of memory per swapped page and the cipher's time on each
 *  swap-out and swap-in (README, "Encrypted swap"). It does not protect the
 *  process's own memory, its core dumps, nor hide which slots are used. */
#define UMLMEM_SWAP_ENCRYPT 0x8u

/** Compressed tier between the frames and swap (umlmem_host_config.compress). */
enum umlmem_compress {
	UMLMEM_COMPRESS_AUTO = 0,  /**< the default: the best measured choice (see README) */
	UMLMEM_COMPRESS_OFF,       /**< frames and swap only */
	UMLMEM_COMPRESS_LZ4,       /**< pages compressed with lz4 on their way down */
	UMLMEM_COMPRESS_ZSTD,      /**< pages compressed with zstd (level 1) */
};

/**
 * Host configuration. Always fill it with umlmem_host_config_init() first and
 * then change the fields you care about: fields may be added at the end.
 */
struct umlmem_host_config {
	/** Budget: the most guest RAM resident at once, in bytes. Required
	 *  (> 0, at least one page). Rounded down to whole pages. It may not
	 *  exceed the machine's physical memory. */
	uint64_t resident_bytes;
	/** Directory for the sparse swap files; NULL: $TMPDIR, else /var/tmp.
	 *  The files are unlinked from the start (O_TMPFILE, or mkstemp and
	 *  unlink) and created with mode 0600. */
	const char *swap_dir;
	/** Swap capacity in bytes; 0: grows on demand. Rounded down to pages.
	 *  When full, an access that needs a new frame fails with -ENOSPC and
	 *  every page stays readable. */
	uint64_t swap_bytes;
	/** Files the slots are spread over; 0: 1. At most 64. */
	unsigned swap_files;
	/** I/O engine; AUTO picks the best available (see umlmem_host_io_engine()). */
	enum umlmem_io_engine io;
	/** UMLMEM_BACKGROUND, ... */
	unsigned flags;
	/** Pages the pager chooses and writes out in one batch when it needs
	 *  frames; 0: 64, or 1/32 of the budget where that is less (at least
	 *  1). Pages written together go to adjacent swap slots. Only the
	 *  frames wanted are freed at once: the rest of the batch stays
	 *  resident and clean until its frames are needed (not with the
	 *  compressed pool, which needs the batch's frames). */
	unsigned reclaim_batch;
	/** With UMLMEM_BACKGROUND: the reclaim thread wakes when fewer than
	 *  reclaim_low frames are free and evicts until reclaim_high are.
	 *  0: 1/64 of the budget (at least one batch, at most 1/8) and twice
	 *  that (at most 1/4). */
	uint64_t reclaim_low, reclaim_high;
	/** The most pages one shared frame serves; 0: 256. A further
	 *  duplicate starts a new shared frame. */
	uint32_t max_sharing;
	/** With UMLMEM_BACKGROUND: the merge thread scans dedup_pages pages
	 *  (0: 1000), then pauses dedup_sleep_us microseconds (0: 20000): KSM's
	 *  pages_to_scan and sleep_millisecs. */
	unsigned dedup_pages;
	unsigned dedup_sleep_us;
	/** The compressed pool: evicted pages are compressed into frames of
	 *  the budget (frames_used counts them) before any goes to swap; a
	 *  page of one repeated 8-byte word takes no pool space, a page that
	 *  does not compress to 3/4 of its size goes straight to swap, and
	 *  the pool's oldest pages are written to swap when it is full. */
	enum umlmem_compress compress;
	/** The most of the budget the pool may hold, in bytes; 0: adaptive
	 *  (see README). Rounded down to pages; at most the budget. */
	uint64_t compress_pool_bytes;
	/** NULL: swap to files in swap_dir. Else swap on a network block
	 *  device: an NBD URI in libnbd's forms, "nbd://host:10809/export",
	 *  "nbd+unix:///export?socket=/run/x.sock" (nbds:// with TLS). The
	 *  export's size bounds swap_bytes (0: all of it; more: -ENOSPC);
	 *  swap_files splits it into that many ranges; io is ignored.
	 *  UMLMEM_SWAP_ENCRYPT is implied. A request the server does not
	 *  answer within $UMLMEM_NBD_TIMEOUT_MS milliseconds (default 10000)
	 *  fails with -EIO and the connection is dropped; the pages in memory
	 *  stay, a page whose write-out failed stays dirty in memory, and a
	 *  later request connects again. */
	const char *swap_uri;
};

/**
 * Fills the @p size bytes at @p cfg with the defaults of a host configuration
 * (the fields this library does not know with zeros).
 * @return 0, or -EINVAL (@p cfg NULL, or @p size below the 0.1 struct's).
 */
UMLMEM_API int umlmem_host_config_init_sized(struct umlmem_host_config *cfg, size_t size);

/** Creates a host from the @p size bytes at @p cfg (see umlmem_host_create()
 *  and "Versions and binary compatibility" above). */
UMLMEM_API UMLMEM_NODISCARD
int umlmem_host_create_sized(const struct umlmem_host_config *cfg, size_t size,
			     umlmem_host **host);

#ifndef UMLMEM_BUILDING_COMPAT
/** Sets every field of @p cfg to its default (resident_bytes 0: you must set it). */
static inline void umlmem_host_config_init(struct umlmem_host_config *cfg)
{
	(void)umlmem_host_config_init_sized(cfg, sizeof(*cfg));
}
#endif

/**
 * Creates a host.
 * @param cfg   configuration (see struct umlmem_host_config); not kept.
 * @param host  receives the new host.
 * @return 0, or
 *  - -EINVAL: @p cfg or @p host NULL, resident_bytes below one page or above
 *    physical memory, swap_bytes below one page (and not 0), swap_files > 64,
 *    unknown engine or flags;
 *  - -ENOENT, -ENOTDIR, -EACCES, -EROFS, ...: swap_dir missing, not a
 *    directory or not writable (umlmem_errmsg() names it);
 *  - -ENOTSUP: the requested I/O engine is not available here;
 *  - -ENOMEM: the frame store or the tables could not be allocated;
 *  - -EIO: UMLMEM_SWAP_ENCRYPT asked for and libsodium cannot start (no
 *    source of randomness);
 *  - -ENOSPC: swap_bytes is more than the NBD export of swap_uri holds;
 *  - -ECONNREFUSED, -ENOENT, -ETIMEDOUT, -EROFS, -EIO, ...: the NBD export
 *    of swap_uri cannot be reached, did not answer, or is read-only
 *    (umlmem_errmsg() says which);
 *  - -EINVAL: the program sets a field this library does not know (it was
 *    built against a newer umlmem.h than the library's).
 */
#ifndef UMLMEM_BUILDING_COMPAT
static inline UMLMEM_NODISCARD
int umlmem_host_create(const struct umlmem_host_config *cfg, umlmem_host **host)
{
	return umlmem_host_create_sized(cfg, sizeof(*cfg), host);
}
#endif

/** Destroys a host: destroys its remaining guests, closes (and so removes)
 *  its swap files, releases the frame store. NULL is ignored. */
UMLMEM_API void umlmem_host_destroy(umlmem_host *host);

/** The engine the host really uses (AUTO resolved), and in @p why (may be
 *  NULL) a sentence on why AUTO fell back where it did; "" otherwise. */
UMLMEM_API enum umlmem_io_engine umlmem_host_io_engine(umlmem_host *host, const char **why);

/** Guest flag: never merge this guest's pages with others. */
#define UMLMEM_GUEST_NOMERGE 0x1u

/** Guest configuration; fill it with umlmem_guest_config_init() first. */
struct umlmem_guest_config {
	/** Nominal RAM in bytes: 1 to #UMLMEM_MAX_GUEST_BYTES; may far exceed
	 *  the host budget. Need not be a multiple of the page size: accesses
	 *  are checked against this exact size, the last page is partial. */
	uint64_t ram_bytes;
	/** Pages merge only with guests of the same domain (default 0). */
	uint32_t merge_domain;
	/** UMLMEM_GUEST_NOMERGE, ... */
	unsigned flags;
	/** For stats and messages; may be NULL. Copied (at most 63 bytes kept). */
	const char *name;
};

/** umlmem_host_config_init_sized() for a guest configuration. */
UMLMEM_API int umlmem_guest_config_init_sized(struct umlmem_guest_config *cfg, size_t size);

/** Creates a guest from the @p size bytes at @p cfg (see umlmem_guest_create()). */
UMLMEM_API UMLMEM_NODISCARD
int umlmem_guest_create_sized(umlmem_host *host, const struct umlmem_guest_config *cfg,
			      size_t size, umlmem_guest **guest);

#ifndef UMLMEM_BUILDING_COMPAT
/** Sets every field of @p cfg to its default (ram_bytes 0: you must set it). */
static inline void umlmem_guest_config_init(struct umlmem_guest_config *cfg)
{
	(void)umlmem_guest_config_init_sized(cfg, sizeof(*cfg));
}
#endif

/**
 * Creates a guest on @p host. Untouched RAM costs nothing: the page table is
 * allocated in chunks on first write, so a 1 TiB guest that touched 1 MiB
 * costs a few tens of KiB of metadata.
 * @return 0, or -EINVAL (NULL argument, ram_bytes 0 or above
 *  #UMLMEM_MAX_GUEST_BYTES, unknown flags, a field this library does not
 *  know set), -ENOMEM.
 */
#ifndef UMLMEM_BUILDING_COMPAT
static inline UMLMEM_NODISCARD
int umlmem_guest_create(umlmem_host *host, const struct umlmem_guest_config *cfg,
			umlmem_guest **guest)
{
	return umlmem_guest_create_sized(host, cfg, sizeof(*cfg), guest);
}
#endif

/** Clones @p src from the @p size bytes at @p cfg (see umlmem_guest_clone()). */
UMLMEM_API UMLMEM_NODISCARD
int umlmem_guest_clone_sized(umlmem_guest *src, const struct umlmem_guest_config *cfg,
			     size_t size, umlmem_guest **dst);

#ifndef UMLMEM_BUILDING_COMPAT
/**
 * A new guest whose RAM equals @p src's at this instant. Every page is
 * shared copy-on-write with @p src (frames, stored pages, the swap cache):
 * nothing is copied, and the call takes time proportional to the pages
 * @p src has touched, not to its nominal size. Afterwards the two are
 * independent guests: either may be written (the first write to a shared
 * page copies it), mapped, discarded or destroyed first, or cloned again.
 * A page of @p src that is pinned or being written out gives the clone a
 * copy; a frame that already serves max_sharing pages gives @p src's page a
 * copy that the clone shares. Pages of @p src writable in its native view
 * become write-protected (the next store faults once). The clone is not
 * mapped.
 * @param src  the guest to clone; may be used by other threads meanwhile.
 * @param cfg  NULL: @p src's size, merge domain and flags, and its name.
 *             Else its merge_domain, flags and name (NULL: @p src's) are
 *             the clone's, and its ram_bytes must be 0 or @p src's size.
 *             Sharing with @p src does not depend on them: they govern
 *             merging by the scanner afterwards.
 * @param dst  receives the clone.
 * @return 0, or -EINVAL (@p src or @p dst NULL, ram_bytes neither 0 nor
 *  @p src's size, unknown flags, a field this library does not know set),
 *  -ENOMEM (no memory for the page table or reverse maps, or no frame for
 *  the copies it needs and none could be freed), -ENOSPC or -EIO (freeing
 *  frames for those copies failed: swap full, or a write-out error).
 */
static inline UMLMEM_NODISCARD
int umlmem_guest_clone(umlmem_guest *src, const struct umlmem_guest_config *cfg,
		       umlmem_guest **dst)
{
	return umlmem_guest_clone_sized(src, cfg, sizeof(*cfg), dst);
}
#endif

/**
 * Native mode: makes the guest's RAM appear at [*@p base, *@p base + ram_bytes)
 * in this process (the range is whole pages: a ram_bytes that is not a
 * multiple of the page size is rounded up, the tail reading as zeros), so that plain loads and stores, and system calls that
 * read or write the range (read(2) into it, write(2) out of it), reach the
 * guest's pages. A page that is not resident is faulted in on first touch
 * (as zeros, or from swap) by the host's fault handler threads through
 * userfaultfd; a store to a page shared by merging gets a private copy
 * first; the pager may take pages away again, and the next touch brings
 * them back. The mapping stays coherent with umlmem_read(), umlmem_write()
 * and umlmem_pin() on the same guest, from any thread.
 *
 * Each resident page the mapping points at can cost the process one memory
 * mapping (VMA); umlmem keeps within vm.max_map_count by unmapping pages
 * when it must (they fault back in on the next touch).
 *
 * A touch that cannot be served (a swap read that keeps failing, a budget
 * that stays all pinned) raises SIGBUS in the touching thread, as the kernel
 * does for a failing swap device; the page's data stays where it was.
 *
 * Transfers the kernel makes with pages it holds for a device while the
 * call runs (O_DIRECT, io_uring fixed buffers, vmsplice, RDMA) keep
 * references umlmem cannot see: pin the range with umlmem_pin() for the
 * time of such a transfer, or the pager may reuse a frame under it.
 *
 * The first map installs a SIGSEGV handler that chains to the one before
 * it: a store that races with a page being mapped in (a window of a few
 * microseconds) is retried there. A program that installs its own SIGSEGV
 * handler later should chain to the one it replaces. Views are not
 * inherited by fork(): a child that touches one gets SIGSEGV.
 *
 * @return 0, or
 *  - -EINVAL: NULL argument;
 *  - -EBUSY: the guest is mapped already;
 *  - -EPERM: userfaultfd refused (run as root, or set
 *    vm.unprivileged_userfaultfd=1);
 *  - -ENOMEM: no address range of that size, or vm.max_map_count leaves too
 *    few mappings (the message says what to raise it to);
 *  - -EOPNOTSUPP: the kernel lacks userfaultfd minor or write-protect faults
 *    on shmem (Linux 6.4 or later has them).
 */
UMLMEM_API UMLMEM_NODISCARD int umlmem_guest_map(umlmem_guest *g, void **base);

/**
 * Takes the native mapping of umlmem_guest_map() away: the range is
 * unmapped and, when no guest of the host is mapped any more, the fault
 * handler threads stop. The guest's data stays, reachable by the copy
 * calls and by a later umlmem_guest_map() (at a new address). Destroying a
 * mapped guest unmaps it. No thread may touch the range during or after
 * the call.
 * @return 0, or -EINVAL (NULL, or the guest is not mapped).
 */
UMLMEM_API int umlmem_guest_unmap(umlmem_guest *g);

/** Destroys a guest: frees its frames, swap slots and page table. Pointers
 *  from umlmem_pin() on it become invalid. NULL is ignored. */
UMLMEM_API void umlmem_guest_destroy(umlmem_guest *guest);

/**
 * Writes the RAM of @p g, as it was at one instant during the call, to
 * @p fd as a umlmem image (the format is docs/image.md): a header, each
 * distinct page once (compressed where lz4 pays), a page map; pages of
 * zeros are not stored. @p fd is a regular file opened for writing; the
 * image starts at its current offset, which is left unchanged, and the
 * file ends where the image ends. @p g may be read and written by other
 * threads meanwhile: the image is of one instant. The image can be
 * restored on any host of this library with umlmem_guest_restore().
 * @return 0, or
 *  - -EINVAL: @p g NULL, @p fd not a regular file;
 *  - -EBADF: @p fd is not open for writing;
 *  - -EIO: a page of @p g could not be read (a failing swap), or writing the
 *    file failed;
 *  - -ENOSPC: the file's filesystem is full;
 *  - -ENOMEM.
 */
UMLMEM_API UMLMEM_NODISCARD int umlmem_guest_save(umlmem_guest *g, int fd);

/** Restores a guest from the @p size bytes at @p cfg (see umlmem_guest_restore()). */
UMLMEM_API UMLMEM_NODISCARD
int umlmem_guest_restore_sized(umlmem_host *host, int fd, const struct umlmem_guest_config *cfg,
			       size_t size, umlmem_guest **guest);

/**
 * Creates a guest on @p host whose RAM is the image in @p fd (read from
 * offset 0), as written by umlmem_guest_save(). The library dups @p fd;
 * the caller may close it. Lazy: the header and the page map are read and
 * validated now, a page's data when it is first touched (and verified
 * against its checksum then). Guests restored from one image file on one
 * host share its pages, one frame for each, until they write them.
 * @p cfg may be NULL: the image's size, merge domain 0, no flags, no name;
 * else its ram_bytes must be 0 or the image's guest size.
 * The first touch of a page whose data is damaged fails with -EIO (a
 * counted checksum error), never with wrong bytes.
 * @return 0, or
 *  - -EINVAL: NULL @p host or @p guest; @p fd not a regular file; the
 *    image is not a valid image (the message says what is wrong: truncated,
 *    corrupt header or map, another version); ram_bytes of @p cfg differs;
 *  - -EBADF: @p fd is not open for reading;
 *  - -ENOSPC: 1024 different images are open on the host;
 *  - -ENOMEM.
 */
#ifndef UMLMEM_BUILDING_COMPAT
static inline UMLMEM_NODISCARD
int umlmem_guest_restore(umlmem_host *host, int fd, const struct umlmem_guest_config *cfg,
			 umlmem_guest **guest)
{
	return umlmem_guest_restore_sized(host, fd, cfg, sizeof(*cfg), guest);
}
#endif

/**
 * Working-set recording: from now on, the page address of each page of
 * @p g loaded from below the frames (from its image, from swap, from the
 * compressed pool) is recorded, in the order of the loads, up to
 * @p max_pages loads; a new call starts a new record. 0 stops recording
 * (the record made so far stays for umlmem_guest_record_get()). Meant for a
 * guest just restored: its record is the working set its next restore
 * wants prefetched (umlmem_guest_prefetch()).
 * @return 0, or -EINVAL (NULL), -ENOMEM.
 */
UMLMEM_API UMLMEM_NODISCARD int umlmem_guest_record(umlmem_guest *g, uint64_t max_pages);

/**
 * Copies the record of umlmem_guest_record() into @p gpas, at most @p max
 * addresses, each once, in the order of its first load; *@p n (may be NULL)
 * gets how many pages the record holds (more than @p max when it did not fit).
 * @return 0, or -EINVAL (NULL @p g, or NULL @p gpas with @p max > 0).
 */
UMLMEM_API int umlmem_guest_record_get(umlmem_guest *g, uint64_t *gpas, uint64_t max,
				       uint64_t *n);

/**
 * Loads the pages at the @p n page addresses @p gpas of @p g that are not in
 * memory now, in the order of their place below the frames (for an image:
 * the file's order), reading adjacent ones together, so that the guest then
 * finds them resident: a recorded working set read in one sorted, batched
 * pass before the guest runs. Pages that are resident or zero are skipped;
 * so is the rest when the budget has no free frame left (prefetching never
 * evicts). *@p loaded (may be NULL) gets the pages loaded.
 * @return 0, or -EINVAL (NULL @p g, NULL @p gpas with @p n > 0, an address
 *  not page-aligned), -EFAULT (an address outside the guest), -EIO (a page
 *  could not be read or did not match its checksum; the others are loaded).
 */
UMLMEM_API UMLMEM_NODISCARD int umlmem_guest_prefetch(umlmem_guest *g, const uint64_t *gpas,
						      uint64_t n, uint64_t *loaded);

/**
 * Copies @p len bytes at guest address @p gpa into @p buf. Never-written
 * memory reads as zeros and takes no frame. Pages in swap are read back in.
 * @return 0, or
 *  - -EINVAL: @p g NULL, or @p buf NULL with @p len > 0;
 *  - -EFAULT: any byte of [gpa, gpa + len) lies outside the guest (or the
 *    sum overflows); nothing is copied;
 *  - -ENOMEM: a frame was needed and every frame is pinned;
 *  - -ENOSPC: a frame was needed, every evictable page is dirty and swap is
 *    full;
 *  - -EIO: a swap read failed or its checksum did not match; the swap copy
 *    is kept, so a retry may succeed.
 *  On an error after the first page, the bytes of earlier pages are already
 *  in @p buf; guest memory is unchanged either way.
 */
UMLMEM_API UMLMEM_NODISCARD
int umlmem_read(umlmem_guest *g, uint64_t gpa, void *buf, size_t len);

/**
 * Copies @p len bytes from @p buf to guest address @p gpa.
 * @return 0, or the errors of umlmem_read(). On an error the pages before
 *  the failing one are written, the failing page and those after it are not.
 */
UMLMEM_API UMLMEM_NODISCARD
int umlmem_write(umlmem_guest *g, uint64_t gpa, const void *buf, size_t len);

/** Pin for reading. */
#define UMLMEM_READ 0x1u
/** Pin for writing (breaks sharing, marks the page dirty). */
#define UMLMEM_WRITE 0x2u

/**
 * Makes the page at @p gpa resident and returns a pointer to its
 * #UMLMEM_PAGE_SIZE bytes in @p page, valid until the matching umlmem_unpin().
 * Pins nest (each needs its own unpin). A pinned page is never evicted,
 * merged or moved; so a page that shares its frame with other pages gets a
 * copy of its own first, whatever @p access. With #UMLMEM_WRITE the page is
 * marked dirty at pin time;
 * writing through a read-only pin is a bug in the caller.
 * @return 0, or -EINVAL (@p g or @p page NULL, @p gpa not page-aligned,
 *  @p access not a non-empty combination of READ and WRITE), -EFAULT
 *  (@p gpa outside the guest), -EOVERFLOW (the page already holds 2^31
 *  pins), and the fault errors of umlmem_read().
 */
UMLMEM_API UMLMEM_NODISCARD
int umlmem_pin(umlmem_guest *g, uint64_t gpa, unsigned access, void **page);

/**
 * Drops one pin of the page at @p gpa.
 * @return 0, or -EINVAL (@p g NULL, @p gpa not page-aligned, or the page is
 *  not pinned), -EFAULT (@p gpa outside the guest). The result only reports
 *  a caller's bug (an unpin without its pin): ignoring it is allowed.
 */
UMLMEM_API int umlmem_unpin(umlmem_guest *g, uint64_t gpa);

/**
 * Makes [gpa, gpa + len) read as zeros and frees the frames and swap slots
 * that held it. @p gpa must be page-aligned; @p len a multiple of the page
 * size, or reaching exactly the end of the guest. len 0 does nothing.
 * @return 0, or -EINVAL (NULL guest, misaligned), -EFAULT (outside the
 *  guest), -EBUSY (a page in the range is pinned; nothing was discarded).
 */
UMLMEM_API UMLMEM_NODISCARD
int umlmem_discard(umlmem_guest *g, uint64_t gpa, uint64_t len);

/**
 * Frees up to @p pages frames now by evicting, least recently used first
 * (pinned pages are skipped; dirty ones are written to swap in batches;
 * clean ones with a valid swap copy, and pages read ahead that no guest
 * touched, are dropped without I/O).
 * @param evicted  receives the number of guest pages that left memory (may
 *  be NULL): resident_pages falls by exactly that much.
 * @return 0 (also when fewer, or none, could be evicted), or -EINVAL (NULL
 *  host), -ENOSPC (swap full before @p pages were evicted), -EIO (writes
 *  failed; the pages stay resident and are counted in io_errors).
 */
UMLMEM_API int umlmem_reclaim(umlmem_host *h, uint64_t pages, uint64_t *evicted);

/**
 * Scans the next @p pages resident pages of mergeable guests (the scan goes
 * round all guests in passes, like KSM's) and merges identical ones: a page
 * equal to another page of the same merge domain comes to share one frame
 * with it, read-only, copied again on the first write to it; a page of
 * zeros gives its frame back. A page written during this pass or the last
 * one is skipped as volatile. Pinned pages are never merged.
 * With UMLMEM_BACKGROUND a thread does this by itself (see dedup_pages).
 * @param merged  receives the number of pages merged (may be NULL).
 * @return 0, or -EINVAL (NULL host).
 */
UMLMEM_API int umlmem_dedup_scan(umlmem_host *h, uint64_t pages, uint64_t *merged);

/** Pauses (@p paused != 0) or resumes the background merge thread.
 *  umlmem_dedup_scan() still works while paused. @return 0 or -EINVAL. */
UMLMEM_API int umlmem_dedup_pause(umlmem_host *h, int paused);

/**
 * Switches merging of guest @p g on or off at run time (like KSM's
 * MADV_UNMERGEABLE). Switching it off also unmerges: every resident page of
 * @p g that shares a frame gets a private copy, and pages of @p g in swap
 * that are shared get one when they come back.
 * @return 0, or -EINVAL (NULL guest), or the errors of a fault (-ENOMEM,
 *  -ENOSPC, -EIO) when a copy could not be made; the pages unmerged so far
 *  stay unmerged, merging stays off, and the call may be repeated.
 */
UMLMEM_API UMLMEM_NODISCARD int umlmem_guest_set_merge(umlmem_guest *g, int enable);

/** Counters, for a host (sums over its guests) or for one guest. */
struct umlmem_stats {
	uint64_t ram_pages;       /**< nominal pages (sum over guests for the host) */
	uint64_t resident_pages;  /**< guest pages backed by a frame, private or shared */
	uint64_t frames_used;     /**< frames in use; never above the budget */
	uint64_t swapped_pages;   /**< guest pages whose content lives only in swap */
	uint64_t zero_pages;      /**< pages with no frame and no slot: never written, discarded or zeros */
	uint64_t shared_frames;   /**< frames mapped by more than one page (KSM: pages_shared) */
	uint64_t sharing_pages;   /**< pages saved by sharing (KSM: pages_sharing) */
	uint64_t cow_breaks;      /**< writes that had to copy a shared frame */
	uint64_t faults;          /**< accesses that needed a frame: first touch, swap-in, copy-on-write */
	uint64_t swap_ins;        /**< pages read from swap */
	uint64_t swap_outs;       /**< pages written to swap */
	uint64_t swap_disk_bytes; /**< bytes the swap files really occupy on disk (st_blocks * 512) */
	uint64_t io_errors;       /**< failed swap reads or writes */
	uint64_t checksum_errors; /**< swap reads whose content did not match what was written */
};

/** Fills the @p size bytes at @p s with the host's counters (see
 *  umlmem_host_stats()); bytes beyond the counters this library has are
 *  zeroed. @return 0, or -EINVAL (NULL argument). */
UMLMEM_API int umlmem_host_stats_sized(umlmem_host *h, struct umlmem_stats *s, size_t size);

/** umlmem_host_stats_sized() for one guest (see umlmem_guest_stats()). */
UMLMEM_API int umlmem_guest_stats_sized(umlmem_guest *g, struct umlmem_stats *s, size_t size);

#ifndef UMLMEM_BUILDING_COMPAT
/**
 * Host-wide counters. resident_pages + swapped_pages + zero_pages ==
 * ram_pages whenever no call is in flight.
 * @return 0, or -EINVAL (NULL argument).
 */
static inline int umlmem_host_stats(umlmem_host *h, struct umlmem_stats *s)
{
	return umlmem_host_stats_sized(h, s, sizeof(*s));
}

/** One guest's counters: ram, resident, swapped, zero pages, faults, swap
 *  ins and outs, cow breaks are the guest's own; frames_used,
 *  shared_frames, swap_disk_bytes and the error counts are 0.
 *  @return 0, or -EINVAL (NULL argument). */
static inline int umlmem_guest_stats(umlmem_guest *g, struct umlmem_stats *s)
{
	return umlmem_guest_stats_sized(g, s, sizeof(*s));
}
#endif

/**
 * More about a host than struct umlmem_stats: the pager and the swap set.
 * Fields may be added at the end; umlmem_host_info() fills only as many
 * bytes as the caller's struct has, so old callers keep working, and zeroes
 * those beyond the fields this library has.
 */
struct umlmem_host_info {
	uint64_t frames_total;    /**< the budget, in frames */
	uint64_t frames_free;     /**< frames on the free list */
	uint64_t frames_cached;   /**< frames holding a page read ahead that no guest has
				       touched yet: in frames_used, not in resident_pages */
	uint64_t frames_busy;     /**< frames under swap I/O right now */
	uint64_t readahead_pages; /**< pages read ahead of a fault */
	uint64_t readahead_hits;  /**< faults served by a page read ahead, with no I/O */
	uint64_t reclaim_low;     /**< watermarks of the reclaim thread, in frames */
	uint64_t reclaim_high;
	uint64_t reclaim_wakeups; /**< times the reclaim thread was woken */
	uint64_t swap_slots_used; /**< swap slots holding data */
	uint64_t swap_slots_cap;  /**< swap capacity in slots; 0: unlimited */
	uint64_t swap_punches;    /**< swap clusters punched out of their files */
	uint64_t engine;          /**< the enum umlmem_io_engine in use */
	/* the merge scanner; the names of KSM's counters where they exist */
	uint64_t pages_scanned;   /**< resident pages the scanner visited */
	uint64_t pages_merged;    /**< pages merged: into a shared frame or into zeros */
	uint64_t zero_merged;     /**< of those, pages of zeros that gave their frame back */
	uint64_t pages_volatile;  /**< visits skipped: the page was written too recently */
	uint64_t pages_unshared;  /**< visits that found no equal page (candidates) */
	uint64_t full_scans;      /**< passes completed round every guest */
	uint64_t stable_frames;   /**< shared frames in the stable index */
	uint64_t hash_impl_avx2;  /**< 1 when pages are hashed with AVX2 */
	uint64_t reclaim_batch;   /**< pages chosen and written at once (the default resolved) */
	/* native mode (umlmem_guest_map) */
	uint64_t native_guests;   /**< guests mapped now */
	uint64_t native_faults;   /**< faults its handler threads served */
	uint64_t native_cpu_sampled; /**< faults (1 in 256) whose CPU was looked up */
	uint64_t native_cpu_local;   /**< of those, served by a handler on the CPU the
					  faulting thread ran on: no cross-CPU wakeup */
	uint64_t native_maps;     /**< page mappings made (mmap of a frame) */
	uint64_t native_zaps;     /**< pages whose mapping was taken away (eviction,
				       sharing, referenced-bit sampling) */
	uint64_t native_flushes;  /**< whole mappings reset to stay within vm.max_map_count */
	uint64_t native_map_limit;/**< mappings umlmem allows itself in this process */
	/* the compressed pool (umlmem_host_config.compress); all 0 when off */
	uint64_t pool_pages;      /**< guest pages (stored once, however shared) whose
				       content is in the pool, same-filled ones included */
	uint64_t pool_bytes;      /**< compressed bytes of those pages */
	uint64_t pool_frames;     /**< frames of the budget the pool holds (in frames_used);
				       pool_pages / pool_frames is its compression ratio */
	uint64_t pool_same_filled;/**< of pool_pages, pages of one repeated 8-byte word:
				       no pool space */
	uint64_t pool_hits;       /**< pages read back from the pool (no disk I/O) */
	uint64_t pool_writebacks; /**< pages the full pool moved on to swap */
	uint64_t pool_rejects;    /**< pages sent straight to swap: compressed too
				       poorly, no pool room, or skipped while the
				       pool does not pay for its compressions */
	/* memory really used (README, "Memory"): the budget is a limit */
	uint64_t store_bytes;     /**< bytes the frame store holds now: frames in use and
				       warm free frames; frames given back hold none */
	uint64_t meta_bytes;      /**< bytes of the library's tables for this host: frame
				       table, free stack, merge indexes, page tables (not
				       the lists of a shared frame's further sharers) */
	uint64_t frames_made;     /**< frames ever used: the frame table's extent; the most
				       frames the host held at once, give or take 4 MiB */
	uint64_t frames_warm;     /**< free frames still holding memory, reused first */
	uint64_t frames_returned; /**< free frames given back to the kernel, ever */
};

/**
 * Fills @p info (@p size bytes of it: pass sizeof(*info)).
 * frames_used of umlmem_host_stats() == frames_total - frames_free ==
 * resident frames + frames_cached + frames_busy.
 * @return 0, or -EINVAL (NULL argument).
 */
UMLMEM_API int umlmem_host_info(umlmem_host *h, struct umlmem_host_info *info, size_t size);

/**
 * The version of the library this program runs with (which may be newer
 * than the header it was built with, UMLMEM_VERSION_*): the numbers in
 * *@p major, *@p minor, *@p patch (each may be NULL), and as a string,
 * "MAJOR.MINOR.PATCH", static, never NULL.
 */
UMLMEM_API const char *umlmem_version(int *major, int *minor, int *patch);

/** A short English name for a return code (0 or a negative errno); never NULL. */
UMLMEM_API const char *umlmem_strerror(int err);

/** The calling thread's message about its last failed umlmem call: which
 *  argument or limit, and what to change. "" when there was none, and after
 *  a call that succeeded (whatever failed and was recovered inside it). The
 *  text stays valid until the thread's next umlmem call. */
UMLMEM_API const char *umlmem_errmsg(void);

/*
 * The entry points of the 0.1 release, for programs built against its
 * header, where the calls above that pass sizeof(*cfg) were plain calls:
 * each takes the struct to be of its 0.1 size. Only the library, which
 * defines them (umlmem/abi.c), sees these declarations; a program sees the
 * inline functions instead, which pass the size of its struct.
 */
#ifdef UMLMEM_BUILDING_COMPAT
UMLMEM_API void umlmem_host_config_init(struct umlmem_host_config *cfg);
UMLMEM_API UMLMEM_NODISCARD
int umlmem_host_create(const struct umlmem_host_config *cfg, umlmem_host **host);
UMLMEM_API void umlmem_guest_config_init(struct umlmem_guest_config *cfg);
UMLMEM_API UMLMEM_NODISCARD
int umlmem_guest_create(umlmem_host *host, const struct umlmem_guest_config *cfg,
			umlmem_guest **guest);
UMLMEM_API int umlmem_host_stats(umlmem_host *h, struct umlmem_stats *s);
UMLMEM_API int umlmem_guest_stats(umlmem_guest *g, struct umlmem_stats *s);
#endif

#ifdef __cplusplus
}
#endif
#endif /* UMLMEM_H */
