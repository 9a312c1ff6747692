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

#include "testing.h"
#include "swap.h"

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
