/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * umlmem/testing.h, the raw disk the bench builds its baselines on: pages
 * written through it in batches read back as written, in any order and
 * batch size, on every engine that runs here; its bad arguments fail with
 * a negative errno and a sentence. Each test works in a fresh directory
 * under /var/tmp.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "testing.h"

#define PG 4096u
#define NPAGES 300u		/* more than one batch, and not a multiple of one */
#define BATCH 64u

static char tdir[64];

static void setup(void)
{
	snprintf(tdir, sizeof(tdir), "/var/tmp/umlmem-testing-XXXXXX");
	cr_assert_not_null(mkdtemp(tdir), "mkdtemp: %s", strerror(errno));
}

/* The disk's files are unlinked from the start: only the directory is left. */
static void teardown(void)
{
	rmdir(tdir);
}

TestSuite(testing, .init = setup, .fini = teardown);

/* What page @i of the test holds: a word of its own in every 8 bytes. */
static uint64_t word(uint64_t i, uint64_t w)
{
	return (i << 32 | w) * 0x9e3779b97f4a7c15ull + 1;
}

static void roundtrip(enum umlmem_io_engine kind)
{
	struct umlmem_test_io io[BATCH];
	struct umlmem_test_disk *d = NULL;
	uint64_t slots[NPAGES], order[NPAGES];
	size_t store_bytes = (size_t)BATCH * PG;
	uint8_t *store;
	char err[256];
	unsigned i, n, k, got;
	int rc;

	store = mmap(NULL, store_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(store, MAP_FAILED);
	rc = umlmem_test_disk_open(&d, tdir, kind, store, store_bytes, err, sizeof(err));
	if (rc == -ENOTSUP && kind != UMLMEM_IO_SYNC) {
		munmap(store, store_bytes);
		cr_skip_test("this engine cannot run here: %s", err);
	}
	cr_assert_eq(rc, 0, "umlmem_test_disk_open: %d: %s", rc, err);

	/* write: batches of up to BATCH pages, the slots as the pager takes them */
	for (i = 0; i < NPAGES; i += n) {
		n = NPAGES - i < BATCH ? NPAGES - i : BATCH;
		for (got = 0; got < n; got += k) {
			k = umlmem_test_disk_alloc(d, n - got, slots + i + got);
			cr_assert_gt(k, 0, "no free slot after %u", i + got);
		}
		for (k = 0; k < n; k++) {
			for (unsigned w = 0; w < PG / 8; w++)
				((uint64_t *)(store + (size_t)k * PG))[w] = word(i + k, w);
			io[k] = (struct umlmem_test_io){ .slot = slots[i + k],
							 .buf = store + (size_t)k * PG,
							 .write = true, .res = 1 };
		}
		rc = umlmem_test_disk_io(d, io, n);
		cr_assert_eq(rc, 0, "write batch at page %u: %d", i, rc);
		for (k = 0; k < n; k++)
			cr_assert_eq(io[k].res, 0);
	}
	for (i = 0; i + 1 < NPAGES; i++)
		for (k = i + 1; k < NPAGES; k++)
			cr_assert_neq(slots[i], slots[k], "pages %u and %u got one slot", i, k);

	/* read back in a shuffled order, in batches of 1 to 7 */
	for (i = 0; i < NPAGES; i++)
		order[i] = i;
	srand(7);
	for (i = NPAGES - 1; i > 0; i--) {
		uint64_t t;

		k = (unsigned)rand() % (i + 1);
		t = order[i];
		order[i] = order[k];
		order[k] = t;
	}
	for (i = 0; i < NPAGES; i += n) {
		n = 1 + (unsigned)rand() % 7;
		if (n > NPAGES - i)
			n = NPAGES - i;
		memset(store, 0, (size_t)n * PG);
		for (k = 0; k < n; k++)
			io[k] = (struct umlmem_test_io){ .slot = slots[order[i + k]],
							 .buf = store + (size_t)k * PG, .res = 1 };
		rc = umlmem_test_disk_io(d, io, n);
		cr_assert_eq(rc, 0, "read batch: %d", rc);
		for (k = 0; k < n; k++) {
			cr_assert_eq(io[k].res, 0);
			for (unsigned w = 0; w < PG / 8; w++)
				cr_assert_eq(((uint64_t *)(store + (size_t)k * PG))[w],
					     word(order[i + k], w), "page %lu word %u",
					     (unsigned long)order[i + k], w);
		}
	}
	umlmem_test_disk_close(d);
	munmap(store, store_bytes);
}

Test(testing, roundtrip_sync) { roundtrip(UMLMEM_IO_SYNC); }
Test(testing, roundtrip_uring) { roundtrip(UMLMEM_IO_URING); }
Test(testing, roundtrip_aio) { roundtrip(UMLMEM_IO_AIO); }

Test(testing, bad_arguments)
{
	struct umlmem_test_disk *d = (void *)1;
	struct umlmem_test_io io = { 0 };
	uint8_t *store;
	char err[256];
	int rc;

	rc = umlmem_test_disk_open(&d, "/nonexistent/umlmem-testing", UMLMEM_IO_SYNC, NULL, 0,
				   err, sizeof(err));
	cr_assert_lt(rc, 0);
	cr_assert_null(d);
	cr_assert_neq(err[0], '\0', "no sentence for a missing directory");

	store = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(store, MAP_FAILED);
	rc = umlmem_test_disk_open(&d, tdir, UMLMEM_IO_SYNC, store, PG, err, sizeof(err));
	cr_assert_eq(rc, 0, "%s", err);
	cr_assert_eq(umlmem_test_disk_io(d, &io, 0), -EINVAL);
	cr_assert_eq(umlmem_test_disk_io(d, &io, UMLMEM_TEST_IO_MAX + 1), -EINVAL);
	umlmem_test_disk_close(d);
	umlmem_test_disk_close(NULL);
	munmap(store, PG);
}
