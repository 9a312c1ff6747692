/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * testing.h: a small window into the library for its own measurements, not
 * part of the API and not installed.
 *
 * `umlmem bench` judges each paging figure against the least the disk must
 * do for it: raw page reads and writes in a swap set of the same kind, in
 * the same directory, through an I/O engine of the same kind as a host's.
 * A raw disk is the library's own swap set and engine with nothing of the
 * pager around them (swapfiles/swap.h), so that the baseline differs from
 * the measured path in exactly one thing: the pager. The command otherwise
 * uses only include/umlmem.h; these calls are what it needs beyond that, and
 * the names say so (umlmem_test_). No compatibility is promised: they change
 * with the library.
 *
 * A disk is used by one thread at a time for open, alloc and close;
 * umlmem_test_disk_io() may be called from several threads at once (the
 * engines take concurrent batches), each with its own buffers.
 */
#ifndef UMLMEM_TESTING_H
#define UMLMEM_TESTING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "umlmem.h"

struct umlmem_test_disk;

/* The most requests one umlmem_test_disk_io() call takes. */
#define UMLMEM_TEST_IO_MAX 256u

/* One page transfer: @buf is 4096-aligned and inside the store given to
   umlmem_test_disk_open(); @slot came from umlmem_test_disk_alloc(). */
struct umlmem_test_io {
	uint64_t slot;
	void *buf;
	bool write;
	int res;		/* out: 0, or -errno */
};

/*
 * Opens a fresh swap set of one unlinked file in @dir (NULL: $TMPDIR, else
 * /var/tmp, as a host does), with O_DIRECT where the filesystem takes it,
 * and an engine of @kind over it whose store is [store, store + store_bytes)
 * (the io_uring engine registers it, and reads into it as it reads into
 * frames). @kind is what a host really runs (umlmem_host_io_engine()), not
 * UMLMEM_IO_AUTO, unless any engine will do. On failure returns a negative
 * errno with a sentence in @err, and *out is NULL.
 */
int umlmem_test_disk_open(struct umlmem_test_disk **out, const char *dir,
			  enum umlmem_io_engine kind, void *store, size_t store_bytes,
			  char *err, size_t errlen);
/* Closes the engine and the swap set (its file goes with it). NULL is a no-op. */
void umlmem_test_disk_close(struct umlmem_test_disk *d);

/* The file was opened with O_DIRECT (reads bypass the page cache). */
bool umlmem_test_disk_direct(const struct umlmem_test_disk *d);

/* Allocates up to @n free slots into @slots, as the pager does for a batch
   of evictions (ascending, contiguous within a cluster). Returns how many;
   0 when the set is full. */
unsigned umlmem_test_disk_alloc(struct umlmem_test_disk *d, unsigned n, uint64_t *slots);

/*
 * Runs @n (1..UMLMEM_TEST_IO_MAX) transfers as one batch through the
 * engine, as the pager submits one, and returns when all are done, each
 * with its res set. Returns 0, the res of the first failed transfer, or
 * -EINVAL for a bad @n (nothing submitted).
 */
int umlmem_test_disk_io(struct umlmem_test_disk *d, struct umlmem_test_io *io, unsigned n);

/* ---- what sealing a page costs (UMLMEM_SWAP_ENCRYPT) ---- */

enum umlmem_test_cipher {
	UMLMEM_TEST_CIPHER_HOST = 0,   /* the one a host picks here */
	UMLMEM_TEST_CIPHER_AES,        /* AES-256-GCM (needs AES-NI) */
	UMLMEM_TEST_CIPHER_CHACHA,     /* ChaCha20-Poly1305 */
	UMLMEM_TEST_CIPHER_AES_SODIUM, /* AES-256-GCM through libsodium's code alone */
};

/* Nanoseconds of the calling thread's CPU time per page (other load on the
   machine does not count), each averaged over the same pages. */
struct umlmem_test_seal_times {
	const char *cipher;     /* its name */
	double seal_ns;         /* seal one page into another buffer, as a write-out does */
	double open_ns;         /* prove and decrypt one page in place, as a swap-in does */
	double csum_ns;         /* the xxh3 checksum a plain slot takes and checks instead */
	double copy_ns;         /* memcpy of one page */
};

/*
 * Seals @pages pages (cycling over 64 source and 64 destination pages, so
 * that they stay in the caches as a write-out's frames and bounce pages
 * do), opens each again (every one must open), and times the checksum and
 * the copy over the same pages. -ENOTSUP where @cipher is not available
 * here; -ENOMEM; -EIO if a sealed page does not open (a bug), with a
 * sentence in @err.
 */
int umlmem_test_seal_time(enum umlmem_test_cipher cipher, unsigned pages,
			  struct umlmem_test_seal_times *out, char *err, size_t errlen);
/*
 * What `umlmem image info|verify` shows of a saved image (docs/image.md).
 * umlmem_test_image() reads the image in @fd from offset 0 and validates
 * its header and map as a restore does; with @verify it also reads every
 * record and checks it against its checksum. Returns 0 with @out filled
 * (bad_records counts the records that failed, first_bad_page is the first
 * guest page holding one, UINT64_MAX when none), or the restore's error
 * (-EINVAL for a bad image) with a sentence in @err.
 */
struct umlmem_test_image {
	uint32_t version, page_size;
	uint64_t guest_bytes, flags;
	uint64_t pages;          /* map entries: pages that are not zeros */
	uint64_t records;        /* distinct pages stored */
	uint64_t lz4_records;    /* of those, compressed */
	uint64_t lz4_bytes;      /* their compressed bytes */
	uint64_t data_bytes;     /* the page data's extent */
	uint64_t file_bytes;     /* the image's length */
	uint64_t bad_records, first_bad_page;
};
int umlmem_test_image(int fd, bool verify, struct umlmem_test_image *out, char *err,
		      size_t errlen);

#endif
