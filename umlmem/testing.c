/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * testing.c: the raw disk of testing.h, the swap set and engine of
 * swapfiles/ with nothing of the pager around them.
 *
 * A request is translated to the engine's struct io_req here rather than
 * handed over as one, so that the command needs no private header; the
 * translation (swap_where() and a copy of four fields) is what the pager
 * does for each of its own requests too.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "testing.h"
#include "swap.h"
#include "seal.h"
#include "image.h"
#include <unistd.h>
#include <sys/stat.h>

struct umlmem_test_disk {
	struct swap *sw;
	struct io_engine *e;
};

int umlmem_test_disk_open(struct umlmem_test_disk **out, const char *dir,
			  enum umlmem_io_engine kind, void *store, size_t store_bytes,
			  char *err, size_t errlen)
{
	struct umlmem_test_disk *d;
	char why[256] = "";
	int rc;

	*out = NULL;
	if (errlen)
		err[0] = '\0';
	if (!dir) {
		dir = getenv("TMPDIR");
		if (!dir || !*dir)
			dir = "/var/tmp";
	}
	d = calloc(1, sizeof(*d));
	if (!d) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	rc = swap_open(&d->sw, dir, 1, 0, err, errlen);
	if (rc) {
		free(d);
		return rc;
	}
	rc = io_engine_create(kind, d->sw, store, store_bytes, &d->e, why, sizeof(why));
	if (rc) {
		snprintf(err, errlen, "starting the I/O engine: %s", why[0] ? why : strerror(-rc));
		swap_close(d->sw);
		free(d);
		return rc;
	}
	*out = d;
	return 0;
}

void umlmem_test_disk_close(struct umlmem_test_disk *d)
{
	if (!d)
		return;
	io_engine_destroy(d->e);
	swap_close(d->sw);
	free(d);
}

bool umlmem_test_disk_direct(const struct umlmem_test_disk *d)
{
	return swap_is_direct(d->sw) != 0;
}

unsigned umlmem_test_disk_alloc(struct umlmem_test_disk *d, unsigned n, uint64_t *slots)
{
	return swap_alloc(d->sw, n, slots);
}

int umlmem_test_disk_io(struct umlmem_test_disk *d, struct umlmem_test_io *io, unsigned n)
{
	struct io_req req[UMLMEM_TEST_IO_MAX];
	unsigned i, file;

	if (!n || n > UMLMEM_TEST_IO_MAX)
		return -EINVAL;
	for (i = 0; i < n; i++) {
		swap_where(d->sw, io[i].slot, &file, &req[i].off);
		req[i].file = (uint16_t)file;
		req[i].buf = io[i].buf;
		req[i].len = SWAP_PAGE;
		req[i].op = io[i].write ? IO_WRITE : IO_READ;
		req[i].res = 0;
		req[i].iov = NULL;
		req[i].niov = 0;
	}
	io_run(d->e, req, n);
	for (i = 0; i < n; i++)
		io[i].res = req[i].res;
	for (i = 0; i < n; i++)
		if (req[i].res)
			return req[i].res;
	return 0;
}

/* CPU time of the calling thread: what the work costs, whatever else the
   machine runs meanwhile (wall time would count the time slices of others). */
static double ts_now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

#define TS_RING 64u

int umlmem_test_seal_time(enum umlmem_test_cipher cipher, unsigned pages,
			  struct umlmem_test_seal_times *out, char *err, size_t errlen)
{
	static const enum seal_cipher map[] = {
		[UMLMEM_TEST_CIPHER_HOST] = SEAL_AUTO,
		[UMLMEM_TEST_CIPHER_AES] = SEAL_AES256GCM,
		[UMLMEM_TEST_CIPHER_CHACHA] = SEAL_CHACHA20POLY1305,
		[UMLMEM_TEST_CIPHER_AES_SODIUM] = SEAL_AES256GCM,
	};
	struct seal_tag tag[TS_RING];
	struct seal *s = NULL;
	uint8_t *src, *dst, *back;
	volatile uint64_t sink = 0;
	unsigned i, bad = 0;
	double t;
	int rc;

	memset(out, 0, sizeof(*out));
	if ((unsigned)cipher > UMLMEM_TEST_CIPHER_AES_SODIUM || !pages) {
		snprintf(err, errlen, "bad cipher %d or no pages", (int)cipher);
		return -EINVAL;
	}
	rc = seal_create_cipher(&s, map[cipher], err, errlen);
	if (rc)
		return rc;
	if (cipher == UMLMEM_TEST_CIPHER_AES_SODIUM)
		seal_use_evp(s, 0);
	src = aligned_alloc(SWAP_PAGE, (size_t)TS_RING * SWAP_PAGE);
	dst = aligned_alloc(SWAP_PAGE, (size_t)TS_RING * SWAP_PAGE);
	back = aligned_alloc(SWAP_PAGE, (size_t)TS_RING * SWAP_PAGE);
	if (!src || !dst || !back) {
		snprintf(err, errlen, "out of memory");
		rc = -ENOMEM;
		goto out;
	}
	for (i = 0; i < TS_RING * SWAP_PAGE; i++)
		src[i] = (uint8_t)(i * 2654435761u >> 13);
	out->cipher = seal_cipher(s);

	t = ts_now();
	for (i = 0; i < pages; i++)
		seal_page(s, i % TS_RING, src + (i % TS_RING) * SWAP_PAGE,
			  dst + (i % TS_RING) * SWAP_PAGE, &tag[i % TS_RING]);
	out->seal_ns = (ts_now() - t) * 1e9 / pages;

	/* the last page sealed into each destination, opened again and again
	   (out of place, so that it stays sealed; in place costs the same) */
	t = ts_now();
	for (i = 0; i < pages; i++)
		bad += seal_open(s, i % TS_RING, dst + (i % TS_RING) * SWAP_PAGE,
				 back + (i % TS_RING) * SWAP_PAGE, &tag[i % TS_RING]) != 0;
	out->open_ns = (ts_now() - t) * 1e9 / pages;
	if (!bad && memcmp(src, back, (size_t)TS_RING * SWAP_PAGE))
		bad = 1;

	t = ts_now();
	for (i = 0; i < pages; i++)
		sink += swap_page_csum(src + (i % TS_RING) * SWAP_PAGE);
	out->csum_ns = (ts_now() - t) * 1e9 / pages;

	t = ts_now();
	for (i = 0; i < pages; i++) {
		memcpy(back + (i % TS_RING) * SWAP_PAGE, src + (i % TS_RING) * SWAP_PAGE, SWAP_PAGE);
		__asm__ volatile("" : : "r"(back) : "memory");
	}
	out->copy_ns = (ts_now() - t) * 1e9 / pages;
	(void)sink;
	if (bad) {
		snprintf(err, errlen, "%u of %u sealed pages did not open to what was sealed",
			 bad, pages);
		rc = -EIO;
	}
out:
	free(src);
	free(dst);
	free(back);
	seal_destroy(s);
	return rc;
}


/* ---- images --------------------------------------------------------------- */

int umlmem_test_image(int fd, bool verify, struct umlmem_test_image *out, char *err,
		      size_t errlen)
{
	struct image_desc d;
	struct stat st;
	uint8_t *page = NULL, *tmp = NULL;
	uint64_t *bad = NULL;
	int rc;

	memset(out, 0, sizeof(*out));
	out->first_bad_page = UINT64_MAX;
	if (fstat(fd, &st)) {
		rc = -errno;
		snprintf(err, errlen, "%s", strerror(-rc));
		return rc;
	}
	rc = image_parse(image_fd_read, &fd, (uint64_t)st.st_size, verify, &d, err, errlen);
	if (rc)
		return rc;
	out->version = d.hdr.version;
	out->page_size = d.hdr.page_size;
	out->guest_bytes = d.hdr.guest_bytes;
	out->flags = d.hdr.flags;
	out->pages = d.hdr.nmap;
	out->records = d.hdr.nrec;
	out->data_bytes = d.hdr.data_len;
	out->file_bytes = d.hdr.file_bytes;
	for (uint64_t r = 0; r < d.hdr.nrec; r++)
		if (d.rec[r].kind == IMAGE_LZ4) {
			out->lz4_records++;
			out->lz4_bytes += d.rec[r].len;
		}
	if (!verify)
		goto out;
	page = aligned_alloc(4096, 4096);
	tmp = malloc(4096);
	bad = calloc((d.hdr.nrec + 63) / 64 + 1, sizeof(*bad));
	if (!page || !tmp || !bad) {
		rc = -ENOMEM;
		snprintf(err, errlen, "no memory to verify the image");
		goto out;
	}
	for (uint64_t r = 0; r < d.hdr.nrec; r++)
		if (image_load_rec(image_fd_read, &fd, &d.rec[r], page, tmp)) {
			bad[r / 64] |= UINT64_C(1) << (r % 64);
			out->bad_records++;
		}
	for (uint64_t i = 0; out->bad_records && i < d.hdr.nmap; i++)
		if (bad[d.map[i].rec / 64] >> (d.map[i].rec % 64) & 1) {
			out->first_bad_page = d.map[i].page;
			break;
		}
out:
	free(page);
	free(tmp);
	free(bad);
	image_desc_free(&d);
	return rc;
}
