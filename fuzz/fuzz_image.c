/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * fuzz_image.c: the image parser (umlmem/image.c) against any bytes.
 *
 * The input is an image file. The harness parses it as a restore does;
 * when the parser accepts it, every map entry must name a page inside the
 * guest and a record it holds, in ascending page order, and every record
 * is loaded as a first touch would: the load must either prove the page
 * (its checksum) or fail, never crash or read outside the input. What the
 * parser refuses must come with a message. The seeds (fuzz/image-corpus)
 * are small images saved by the library, whole and damaged.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "image.h"

struct mem {
	const uint8_t *p;
	size_t n;
};

static int mem_read(void *arg, uint64_t off, void *buf, size_t len)
{
	const struct mem *m = arg;

	if (off > m->n || m->n - off < len)
		return -EINVAL;
	memcpy(buf, m->p + off, len);
	return 0;
}

#define CHECK(c) do { if (!(c)) { fprintf(stderr, "fuzz_image: %s failed\n", #c); abort(); } } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mem m = { data, size };
	struct image_desc d;
	char msg[256];
	_Alignas(4096) static uint8_t page[4096];
	static uint8_t tmp[4096];
	int rc;

	rc = image_parse(mem_read, &m, size, true, &d, msg, sizeof(msg));
	if (rc) {
		CHECK(rc == -EINVAL || rc == -ENOMEM);
		CHECK(msg[0] != '\0');
		return 0;
	}
	CHECK(d.hdr.file_bytes <= size);
	for (uint64_t i = 0; i < d.hdr.nmap; i++) {
		CHECK(d.map[i].page < d.hdr.npages);
		CHECK(d.map[i].rec < d.hdr.nrec);
		CHECK(!i || d.map[i].page > d.map[i - 1].page);
	}
	for (uint64_t r = 0; r < d.hdr.nrec; r++) {
		rc = image_load_rec(mem_read, &m, &d.rec[r], page, tmp);
		CHECK(rc == 0 || rc == -EBADMSG || rc == -EIO);
		if (!rc)
			CHECK(swap_page_csum(page) == d.rec[r].csum);
	}
	image_desc_free(&d);
	return 0;
}
