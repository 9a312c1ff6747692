/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * umlmem_errmsg() after each call: a sentence after a failure, empty after
 * a success, also when the success came after a failure inside the call
 * (an eviction whose write failed, a swap-in retried) or after an earlier
 * failed call. The calls run on a budget much smaller than what is
 * written, with injected swap faults, so that the pager fails now and then
 * inside calls that succeed; a model of the guest's bytes checks that the
 * data is right whatever the messages say.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#define PG UMLMEM_PAGE_SIZE

static char dir[64];

static void setup(void)
{
	tu_mkswapdir(dir);
}

static void teardown(void)
{
	tu_rmswapdir(dir);
}

TestSuite(errmsg, .init = setup, .fini = teardown, .timeout = 60);

/* Call @what returned @rc: its message must match. */
static void check_msg(const char *what, int k, int rc)
{
	const char *m = umlmem_errmsg();

	if (rc)
		cr_assert(m[0], "%s (op %d) failed with %d and left no message", what, k, rc);
	else
		cr_assert(!m[0], "%s (op %d) succeeded but umlmem_errmsg() says: %s", what, k, m);
}

Test(errmsg, empty_after_success)
{
	const uint64_t NP = 256;
	umlmem_host *h = tu_host(dir, 16 * PG, 0);
	umlmem_guest *g = tu_guest(h, NP * PG);
	uint8_t *model = calloc(NP, PG), page[PG];
	uint64_t rng = 0xe55, n, failures = 0;
	void *pp;
	int rc;

	cr_assert_not_null(model);
	for (int k = 0; k < (int)tu_scaled(3000); k++) {
		uint64_t idx = tu_splitmix64(&rng) % NP;
		unsigned op = tu_splitmix64(&rng) % 8;

		/* now and then a swap write or read fails */
		if (k % 50 == 0)
			io_inject(host_engine(h), IO_WRITE, 1 + k % 3, IO_FAULT_EIO, 1);
		if (k % 70 == 0)
			io_inject(host_engine(h), IO_READ, 1 + k % 5, IO_FAULT_EIO, 1);
		switch (op) {
		case 0: case 1: case 2:
			tu_fill(page, PG, rng);
			rc = umlmem_write(g, idx * PG, page, PG);
			if (!rc)
				memcpy(model + idx * PG, page, PG);
			check_msg("umlmem_write", k, rc);
			break;
		case 3: case 4:
			rc = umlmem_read(g, idx * PG, page, PG);
			if (!rc)
				cr_assert(!memcmp(page, model + idx * PG, PG), "page %" PRIu64 " differs", idx);
			check_msg("umlmem_read", k, rc);
			break;
		case 5:
			rc = umlmem_reclaim(h, 8, &n);
			check_msg("umlmem_reclaim", k, rc);
			break;
		case 6:
			rc = umlmem_pin(g, idx * PG, UMLMEM_READ, &pp);
			check_msg("umlmem_pin", k, rc);
			if (!rc) {
				cr_assert(!memcmp(pp, model + idx * PG, PG));
				rc = umlmem_unpin(g, idx * PG);
				check_msg("umlmem_unpin", k, rc);
			}
			break;
		default:
			rc = umlmem_dedup_scan(h, 64, &n);
			check_msg("umlmem_dedup_scan", k, rc);
			break;
		}
		failures += rc != 0;
		/* a failed call, then a good one: the message goes */
		if (k % 100 == 0) {
			rc = umlmem_read(g, NP * PG, page, 1);
			cr_assert_eq(rc, -EFAULT);
			check_msg("umlmem_read out of range", k, rc);
		}
	}
	cr_log_info("errmsg: %" PRIu64 " calls failed", failures);
	io_inject(host_engine(h), IO_READ, 1, IO_FAULT_NONE, 0);
	io_inject(host_engine(h), IO_WRITE, 1, IO_FAULT_NONE, 0);
	for (uint64_t i = 0; i < NP; i++) {
		cr_assert_eq(umlmem_read(g, i * PG, page, PG), 0, "%s", umlmem_errmsg());
		cr_assert(!memcmp(page, model + i * PG, PG), "page %" PRIu64 " differs", i);
	}
	tu_check(h);
	umlmem_host_destroy(h);
	free(model);
}
