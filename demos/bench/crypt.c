/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * crypt.c: what encrypted swap (UMLMEM_SWAP_ENCRYPT) costs.
 *
 * crypt_seal_ns -- nanoseconds to seal one page (encrypt and authenticate
 *   it into a bounce page, as each write-out does) with the cipher a host
 *   picks here, over many pages cycling through 64 sources and 64
 *   destinations (they stay in the caches, as frames just written out and
 *   bounce pages do). Baseline: the xxh3 checksum of a page, what a plain
 *   write-out computes instead. Best of 5 runs for both. Fields: the other
 *   cipher's figures where the CPU runs it, AES-256-GCM through libsodium's
 *   code alone (sodium_*: what OpenSSL's replaced), and memcpy of a page.
 *
 * crypt_open_ns -- the same for opening a page (prove and decrypt), what
 *   each swap-in does; baseline: the xxh3 check of a plain swap-in.
 *
 * crypt_pagein_random_t1 -- swap-ins per second, one thread, random pages
 *   of a guest of 4x the budget (as pagein_random_t1), on a host with
 *   UMLMEM_SWAP_ENCRYPT; baseline: the same on a host without it, the same
 *   budget, disk, engine, content and read sequence. Both hosts live
 *   through the whole phase, which is cut into slices (8; --quick 4) that
 *   alternate between them, each going first in every other round, so
 *   that a change in the disk's speed or the machine's load falls on both
 *   alike; they were filled together, a chunk of each in turn, so that
 *   their swap files lie side by side on the disk. Before the timed phase
 *   both write their dirty pages out and read the budget back in
 *   (bench_settle), so that the phase times page-in alone: its faults
 *   open a page and evict a clean one, and "swap_outs" (0) shows that
 *   nothing was sealed meanwhile. The goal is a ratio of at least
 *   0.95: a disk read costs tens of microseconds, a page's decryption one
 *   or two.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>

#include "harness.h"
#include "testing.h"

enum { SEAL, OPEN, PAGEIN };

/* Best of @runs of umlmem_test_seal_time(): each field its own minimum. */
static int seal_best(enum umlmem_test_cipher c, unsigned pages, int runs,
		     struct umlmem_test_seal_times *best, char *err, size_t errlen)
{
	struct umlmem_test_seal_times t;

	for (int i = 0; i < runs; i++) {
		int rc = umlmem_test_seal_time(c, pages, &t, err, errlen);

		if (rc)
			return rc;
		if (!i) {
			*best = t;
			continue;
		}
		best->seal_ns = fmin(best->seal_ns, t.seal_ns);
		best->open_ns = fmin(best->open_ns, t.open_ns);
		best->csum_ns = fmin(best->csum_ns, t.csum_ns);
		best->copy_ns = fmin(best->copy_ns, t.copy_ns);
	}
	return 0;
}

static void cost_run(struct bench *b, struct result *rs, struct result *ro)
{
	unsigned pages = b->quick ? 20000 : 100000;
	struct umlmem_test_seal_times host, alt, sod;
	enum umlmem_test_cipher other;
	char err[256];
	bool have_alt, have_sod;
	int rc;

	bench_progress("crypt: sealing and opening %u pages, best of 5", pages);
	rc = seal_best(UMLMEM_TEST_CIPHER_HOST, pages, 5, &host, err, sizeof(err));
	if (rc) {
		if (rs->want)
			res_fail(rs, RS_ERROR, "%s", err);
		if (ro->want)
			res_fail(ro, RS_ERROR, "%s", err);
		return;
	}
	other = host.cipher[0] == 'a' ? UMLMEM_TEST_CIPHER_CHACHA : UMLMEM_TEST_CIPHER_AES;
	have_alt = !seal_best(other, pages, 5, &alt, err, sizeof(err));
	have_sod = !seal_best(UMLMEM_TEST_CIPHER_AES_SODIUM, pages, 5, &sod, err, sizeof(err));
	for (int k = 0; k < 2; k++) {
		struct result *r = k ? ro : rs;
		double v = k ? host.open_ns : host.seal_ns;

		if (!r->want)
			continue;
		res_set(r, v, host.csum_ns, "ns/page", true);
		res_str(r, "cipher", "%s", host.cipher);
		res_num(r, "seal_ns", host.seal_ns);
		res_num(r, "open_ns", host.open_ns);
		res_num(r, "xxh3_ns", host.csum_ns);
		res_num(r, "memcpy_ns", host.copy_ns);
		res_int(r, "pages", pages);
		if (have_alt) {
			res_str(r, "other_cipher", "%s", alt.cipher);
			res_num(r, "other_seal_ns", alt.seal_ns);
			res_num(r, "other_open_ns", alt.open_ns);
		}
		if (have_sod) {
			res_num(r, "sodium_aes_seal_ns", sod.seal_ns);
			res_num(r, "sodium_aes_open_ns", sod.open_ns);
		}
		res_note(r, "%s; per page, caches warm; the baseline is the xxh3 checksum a "
			 "plain swap slot %s instead", k ? "prove and decrypt in place" :
			 "encrypt into a bounce page", k ? "verifies" : "takes");
	}
}

/* Fills both guests with the content rule, a chunk of each in turn, so
   that their swap files grow together and neither gets the better part of
   the disk. */
static int fill_both(struct result *r, umlmem_guest *a, umlmem_guest *b, uint64_t npages)
{
	uint64_t *buf = aligned_alloc(PAGE, FILL_PAGES * PAGE);
	int rc = 0;

	if (!buf) {
		res_fail(r, RS_ERROR, "out of memory for the fill buffer");
		return -ENOMEM;
	}
	for (uint64_t p = 0; !rc && p < npages; p += FILL_PAGES) {
		uint64_t n = npages - p < FILL_PAGES ? npages - p : FILL_PAGES;

		bench_fill_pages(buf, p, n, 0);
		rc = umlmem_write(a, p * PAGE, buf, n * PAGE);
		if (!rc)
			rc = umlmem_write(b, p * PAGE, buf, n * PAGE);
		if (rc)
			res_lib_fail(r, rc, "filling the guests");
	}
	free(buf);
	return rc;
}

static void pagein_run(struct bench *b, struct result *r)
{
	uint64_t ws = 4 * b->budget, npages = ws / PAGE;
	unsigned rounds = b->quick ? 4 : 8;
	double slice = b->seconds / rounds, vs, vp;
	struct phase_out sealed = { 0 }, plain = { 0 };
	umlmem_host *hs = NULL, *hp = NULL;
	umlmem_guest *gs = NULL, *gp = NULL;
	struct umlmem_stats ss0, ss1, sp0, sp1;
	struct phase *ph = NULL;
	char b1[32], b2[32];

	ph = phase_new(r, npages);
	if (!ph)
		goto out;
	bench_progress("crypt_pagein_random_t1: two guests of %s on budgets of %s, with and "
		       "without encryption, filling them", fmt_bytes(b1, sizeof(b1), ws),
		       fmt_bytes(b2, sizeof(b2), b->budget));
	if (bench_host(b, r, b->budget, ws, UMLMEM_SWAP_ENCRYPT, "bench-crypt-sealed", &hs, &gs) ||
	    bench_host(b, r, b->budget, ws, 0, "bench-crypt-plain", &hp, &gp) ||
	    fill_both(r, gs, gp, npages) || bench_settle(r, hs, gs, b->budget) ||
	    bench_settle(r, hp, gp, b->budget))
		goto out;
	umlmem_guest_stats(gs, &ss0);
	umlmem_guest_stats(gp, &sp0);
	bench_progress("crypt_pagein_random_t1: %.1f s each in alternating slices, after %.1f s "
		       "warm-up each", b->seconds, b->warm);
	for (unsigned i = 0; i < rounds; i++) {
		/* the same read sequence on both sides; each goes first in
		   every other round */
		for (unsigned k = 0; k < 2; k++) {
			bool s = (i + k) % 2 == 0;

			if (run_slice(r, ph, s ? hs : hp, s ? gs : gp, NULL, 1, 7 * i + 3,
				      i ? 0 : b->warm, slice, s ? &sealed : &plain))
				goto out;
		}
	}
	umlmem_guest_stats(gs, &ss1);
	umlmem_guest_stats(gp, &sp1);
	vs = sealed.secs > 0 ? (double)sealed.swap_ins / sealed.secs : 0;
	vp = plain.secs > 0 ? (double)plain.swap_ins / plain.secs : 0;
	res_set(r, vs, vp, "faults/s", false);
	res_int(r, "threads", 1);
	res_int(r, "pages", (int64_t)npages);
	res_int(r, "budget_pages", (int64_t)(b->budget / PAGE));
	res_num(r, "seconds", sealed.secs);
	res_int(r, "swap_ins", (int64_t)sealed.swap_ins);
	res_int(r, "baseline_swap_ins", (int64_t)plain.swap_ins);
	res_num(r, "baseline_seconds", plain.secs);
	res_int(r, "swap_outs", (int64_t)(ss1.swap_outs - ss0.swap_outs));
	res_int(r, "baseline_swap_outs", (int64_t)(sp1.swap_outs - sp0.swap_outs));
	res_int(r, "readahead_hits", (int64_t)sealed.ra_hits);
	res_int(r, "baseline_readahead_hits", (int64_t)plain.ra_hits);
	if (vs > 0 && vp > 0) {
		res_num(r, "us_per_fault", 1e6 / vs);
		res_num(r, "baseline_us_per_fault", 1e6 / vp);
		res_num(r, "overhead_us", 1e6 / vs - 1e6 / vp);
	}
	res_str(r, "engine", "%s", engine_name(b->engine));
	res_note(r, "goal: at least 0.95 of the unencrypted host's swap-ins per second (%s)",
		 r->ratio >= 0.95 ? "met" : "not met");
out:
	umlmem_host_destroy(hs);
	umlmem_host_destroy(hp);
	phase_free(ph);
}

static void crypt_run(struct bench *b, struct result **res)
{
	if (res[SEAL]->want || res[OPEN]->want)
		cost_run(b, res[SEAL], res[OPEN]);
	if (res[PAGEIN]->want)
		pagein_run(b, res[PAGEIN]);
}

static const struct bench_key keys[] = {
	[SEAL] = { "crypt_seal_ns",
		"ns to encrypt one page for swap (UMLMEM_SWAP_ENCRYPT);\n"
		"baseline: its xxh3 checksum, what plain swap computes\n" },
	[OPEN] = { "crypt_open_ns",
		"ns to prove and decrypt one page read from swap;\n"
		"baseline: the xxh3 check of plain swap\n" },
	[PAGEIN] = { "crypt_pagein_random_t1",
		"swap-ins/s, 1 thread, random pages, encrypted swap;\n"
		"baseline: the same host without encryption (goal 0.95)\n" },
	{ NULL },
};

const struct bench_family bench_crypt = { "crypt", keys, crypt_run };
