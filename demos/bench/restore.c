/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * restore.c: guests restored from a saved image (umlmem_guest_restore),
 * touched lazily, with and without a recorded working set.
 *
 * Both figures save one guest of the budget's size B (random pages, each
 * with one word of the content rule: every page distinct and not
 * compressible below 3 KiB, so each is a raw,
 * 4096-aligned record, page p at image offset 4096 * (p + 1), which the
 * bench checks with the image's own counts) into an unlinked file in the
 * swap directory, and drop the file from the page cache (fdatasync, then
 * POSIX_FADV_DONTNEED) before every timed pass, so that every read is the
 * disk's.
 *
 * restore_first_touch -- microseconds per first touch of a page of a
 *   restored guest: a fresh restore, then 8-byte umlmem_read()s at pages
 *   taken in a random order (each once, every value checked) for the run's
 *   --seconds or until T pages (B/4) were touched. Baseline: a raw 4 KiB
 *   pread(2) of the same bytes of the same file, at the same pages in the
 *   same order, cache dropped the same way, each into a page of its own of
 *   a new memfd mapping: what one fault has to do at the least, since a
 *   restored page needs a page of memory, and a frame is a page of a
 *   memfd the process has not touched yet. The same reads into one buffer
 *   used again and again, which the kernel copies into a page hot in the
 *   caches and the TLB, are faster by a fifth on this machine; they are
 *   reported apart ("raw_one_buffer_us"). Ratio above 1 favours umlmem.
 *   Best of 3 for each, the sides taking turns.
 *
 * restore_prefetch -- time to a first result of a restored guest whose
 *   "run" touches a working set: W pages (B/16), a random subset, in a
 *   random order, 8 bytes each, checked. A first restore records the run
 *   (umlmem_guest_record) and gets its record; then, cache dropped each
 *   time, a restore with the record prefetched (umlmem_guest_prefetch,
 *   counted in the time) against a restore without it. The value is the
 *   time with the prefetch, the baseline the time without; the demand
 *   faults of the run (the guest's loads, swap_ins, after the prefetch)
 *   of both sides are reported. Best of 3, the sides alternating.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>

#include "harness.h"
#include "testing.h"

enum { RS_FIRST, RS_PREFETCH };

#define RS_REPS 3

struct rimg {
	int fd;
	uint64_t bytes, npages;
};

/* Page p: random bytes (lz4 cannot shrink them: a raw record), with the
   content rule's word at index p % WORDS, which the touches check. */
static int fill_random(struct result *r, umlmem_guest *g, uint64_t npages)
{
	uint64_t *buf = malloc(FILL_PAGES * PAGE);
	int rc = 0;

	if (!buf) {
		res_fail(r, RS_ERROR, "out of memory");
		return -ENOMEM;
	}
	for (uint64_t p0 = 0; p0 < npages && !rc; p0 += FILL_PAGES) {
		uint64_t n = npages - p0 < FILL_PAGES ? npages - p0 : FILL_PAGES;

		for (uint64_t i = 0; i < n; i++) {
			uint64_t p = p0 + i, s = mix64(p + 1);

			rng_fill(&s, (unsigned char *)(buf + i * WORDS), PAGE);
			buf[i * WORDS + p % WORDS] = word_of(p, p % WORDS);
		}
		rc = umlmem_write(g, p0 * PAGE, buf, n * PAGE);
		if (rc)
			res_lib_fail(r, rc, "umlmem_write while filling");
	}
	free(buf);
	return rc;
}

/* An unlinked file in the swap directory holding an image of a guest of
   @bytes filled with the content rule; its layout checked. */
static int rimg_make(struct bench *b, struct result *r, struct rimg *im, uint64_t bytes)
{
	struct umlmem_test_image ti;
	umlmem_host *h;
	umlmem_guest *g;
	char path[4096], err[256];
	int rc;

	im->fd = -1;
	im->bytes = bytes;
	im->npages = bytes / PAGE;
	snprintf(path, sizeof(path), "%s/umlmem-bench-image-XXXXXX", bench_swap_dir(b));
	im->fd = mkstemp(path);
	if (im->fd < 0) {
		res_fail(r, RS_ERROR, "cannot create an image file in %s: %s", bench_swap_dir(b),
			 strerror(errno));
		return -errno;
	}
	unlink(path);
	rc = bench_host(b, r, b->budget, bytes, 0, "bench-image", &h, &g);
	if (rc)
		return rc;
	rc = fill_random(r, g, im->npages);
	if (!rc && (rc = umlmem_guest_save(g, im->fd)))
		res_lib_fail(r, rc, "umlmem_guest_save");
	umlmem_host_destroy(h);
	if (rc)
		return rc;
	rc = umlmem_test_image(im->fd, false, &ti, err, sizeof(err));
	if (rc) {
		res_fail(r, RS_ERROR, "the image just saved is not valid: %s", err);
		return rc;
	}
	if (ti.records != im->npages || ti.lz4_records || ti.data_bytes != bytes) {
		res_fail(r, RS_ERROR, "the image holds %" PRIu64 " records (%" PRIu64 " compressed) "
			 "for %" PRIu64 " distinct pages: not the raw layout the baseline reads",
			 ti.records, ti.lz4_records, im->npages);
		return -EINVAL;
	}
	return 0;
}

static void rimg_drop_cache(struct rimg *im)
{
	if (fdatasync(im->fd) == 0)
		(void)posix_fadvise(im->fd, 0, 0, POSIX_FADV_DONTNEED);
}

/* A random order of @n of the image's pages (a partial Fisher-Yates). */
static uint64_t *rand_pages(uint64_t npages, uint64_t n, uint64_t seed)
{
	uint64_t *all = malloc(npages * sizeof(*all)), rng = seed;

	if (!all)
		return NULL;
	for (uint64_t i = 0; i < npages; i++)
		all[i] = i;
	for (uint64_t i = 0; i < n; i++) {
		uint64_t j = i + rng_next(&rng) % (npages - i), t = all[i];

		all[i] = all[j];
		all[j] = t;
	}
	return all;
}

static int restore_guest(struct result *r, struct bench *b, struct rimg *im, umlmem_host **hp,
			 umlmem_guest **gp)
{
	struct umlmem_host_config hc;
	int rc;

	*gp = NULL;
	umlmem_host_config_init(&hc);
	hc.resident_bytes = b->budget;
	hc.swap_dir = b->swap_dir;
	hc.io = b->want_engine;
	rc = umlmem_host_create(&hc, hp);
	if (rc) {
		*hp = NULL;
		res_lib_fail(r, rc, "creating the host");
		return rc;
	}
	rc = umlmem_guest_restore(*hp, im->fd, NULL, gp);
	if (rc)
		res_lib_fail(r, rc, "umlmem_guest_restore");
	return rc;
}

/* Touches pages[0 .. n) of @g (8 bytes, checked) until @secs have passed;
   returns how many. */
static int touch(struct result *r, umlmem_guest *g, const uint64_t *pages, uint64_t n,
		 double secs, uint64_t *done)
{
	double t0 = now_s();
	uint64_t v;
	int rc;

	for (*done = 0; *done < n; (*done)++) {
		uint64_t p = pages[*done];

		if (secs > 0 && (*done & 63) == 0 && now_s() - t0 > secs)
			break;
		rc = umlmem_read(g, p * PAGE + 8 * (p % WORDS), &v, 8);
		if (rc) {
			res_lib_fail(r, rc, "umlmem_read of a restored page");
			return rc;
		}
		if (v != word_of(p, p % WORDS)) {
			res_fail(r, RS_ERROR, "page %" PRIu64 " of the restored guest read back "
				 "wrong", p);
			return -EUCLEAN;
		}
	}
	return 0;
}

/* A raw pass: pread(2) of pages[0 .. n) of the image, each into its own
   page of a new memfd mapping (@own) or all into @buf; checked. Seconds per
   read, or a negative value after res_fail. */
static double raw_pass(struct result *r, struct rimg *im, const uint64_t *pages, uint64_t n,
		       bool own, uint64_t *buf)
{
	uint8_t *dst = NULL;
	double t0, dt;
	int mfd = -1;

	if (own) {
		mfd = memfd_create("bench-restore", MFD_CLOEXEC);
		if (mfd < 0 || ftruncate(mfd, (off_t)(n * PAGE)) ||
		    (dst = mmap(NULL, n * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0)) ==
			    MAP_FAILED) {
			res_fail(r, RS_ERROR, "cannot map a memfd of %" PRIu64 " pages: %s", n,
				 strerror(errno));
			if (mfd >= 0)
				close(mfd);
			return -1;
		}
	}
	t0 = now_s();
	for (uint64_t i = 0; i < n; i++) {
		uint64_t p = pages[i], *d = own ? (uint64_t *)(dst + i * PAGE) : buf;

		if (pread(im->fd, d, PAGE, (off_t)((p + 1) * PAGE)) != (ssize_t)PAGE ||
		    d[p % WORDS] != word_of(p, p % WORDS)) {
			res_fail(r, RS_ERROR, "raw read of page %" PRIu64 " failed or read wrong "
				 "bytes", p);
			dt = -1;
			goto out;
		}
	}
	dt = (now_s() - t0) / (double)n;
out:
	if (own) {
		munmap(dst, n * PAGE);
		close(mfd);
	}
	return dt;
}

static void first_touch(struct bench *b, struct result *r)
{
	struct rimg im = { .fd = -1 };
	uint64_t *pages = NULL, n, done, best_n = 0;
	double best_u = INFINITY, best_raw = INFINITY, best_one = INFINITY;
	uint64_t *buf = NULL;
	int rc;

	if (rimg_make(b, r, &im, b->budget))
		goto out;
	n = im.npages / 4;
	pages = rand_pages(im.npages, n, 12345);
	buf = aligned_alloc(PAGE, PAGE);
	if (!pages || !buf) {
		res_fail(r, RS_ERROR, "out of memory");
		goto out;
	}
	for (unsigned rep = 0; rep < RS_REPS; rep++) {
		for (unsigned k = 0; k < 3; k++) {
			/* the restore first in the first round: it sets the count
			   (within --seconds) every side touches */
			unsigned side = (k + rep) % 3;
			umlmem_host *h = NULL;
			umlmem_guest *g;
			double t0, dt;

			rimg_drop_cache(&im);
			if (side) {
				dt = raw_pass(r, &im, pages, best_n, side == 1, buf);
				if (dt < 0)
					goto out;
				if (side == 1 && dt < best_raw)
					best_raw = dt;
				if (side == 2 && dt < best_one)
					best_one = dt;
				continue;
			}
			if (restore_guest(r, b, &im, &h, &g)) {
				umlmem_host_destroy(h);
				goto out;
			}
			t0 = now_s();
			rc = touch(r, g, pages, best_n ? best_n : n, best_n ? 0 : b->seconds, &done);
			dt = (now_s() - t0) / (double)done;
			umlmem_host_destroy(h);
			if (rc)
				goto out;
			if (dt < best_u)
				best_u = dt;
			if (!best_n)
				best_n = done;
		}
	}
	res_set(r, best_u * 1e6, best_raw * 1e6, "us/touch", true);
	res_num(r, "raw_one_buffer_us", best_one * 1e6);
	res_int(r, "pages_touched", (int64_t)best_n);
	res_int(r, "image_pages", (int64_t)im.npages);
	res_str(r, "baseline_mode", "pread(2) of the same 4 KiB of the same file, same order, "
		"page cache dropped, each into its own page of a new memfd mapping");
out:
	free(pages);
	free(buf);
	if (im.fd >= 0)
		close(im.fd);
}

struct pf_side {
	double secs;
	uint64_t faults, loaded;
};

static void prefetch(struct bench *b, struct result *r)
{
	struct rimg im = { .fd = -1 };
	struct pf_side best[2] = { { INFINITY, 0, 0 }, { INFINITY, 0, 0 } };
	uint64_t *pages = NULL, *rec = NULL, w, nrec = 0, done;
	umlmem_host *h = NULL;
	umlmem_guest *g;
	int rc;

	if (rimg_make(b, r, &im, b->budget))
		goto out;
	w = im.npages / 16;
	pages = rand_pages(im.npages, w, 777);
	rec = malloc(w * sizeof(*rec));
	if (!pages || !rec) {
		res_fail(r, RS_ERROR, "out of memory");
		goto out;
	}
	/* the recording run */
	if (restore_guest(r, b, &im, &h, &g))
		goto out;
	if ((rc = umlmem_guest_record(g, w))) {
		res_lib_fail(r, rc, "umlmem_guest_record");
		goto out;
	}
	if (touch(r, g, pages, w, 0, &done))
		goto out;
	if ((rc = umlmem_guest_record_get(g, rec, w, &nrec))) {
		res_lib_fail(r, rc, "umlmem_guest_record_get");
		goto out;
	}
	umlmem_host_destroy(h);
	h = NULL;
	for (unsigned rep = 0; rep < RS_REPS; rep++) {
		for (unsigned k = 0; k < 2; k++) {
			unsigned side = (k + rep) % 2;   /* 1: with the record */
			struct umlmem_stats s0, s1;
			uint64_t loaded = 0;
			double t0, dt;

			rimg_drop_cache(&im);
			if (restore_guest(r, b, &im, &h, &g))
				goto out;
			t0 = now_s();
			if (side && (rc = umlmem_guest_prefetch(g, rec, nrec < w ? nrec : w, &loaded))) {
				res_lib_fail(r, rc, "umlmem_guest_prefetch");
				goto out;
			}
			umlmem_guest_stats(g, &s0);
			if (touch(r, g, pages, w, 0, &done))
				goto out;
			dt = now_s() - t0;
			umlmem_guest_stats(g, &s1);
			umlmem_host_destroy(h);
			h = NULL;
			if (dt < best[side].secs) {
				best[side].secs = dt;
				best[side].faults = s1.swap_ins - s0.swap_ins;
				best[side].loaded = loaded;
			}
		}
	}
	res_set(r, best[1].secs * 1e3, best[0].secs * 1e3, "ms", true);
	res_int(r, "working_set_pages", (int64_t)w);
	res_int(r, "recorded_pages", (int64_t)nrec);
	res_int(r, "prefetched_pages", (int64_t)best[1].loaded);
	res_int(r, "demand_faults_with", (int64_t)best[1].faults);
	res_int(r, "demand_faults_without", (int64_t)best[0].faults);
	res_str(r, "baseline_mode", "the same run restored without the record, page cache "
		"dropped");
out:
	umlmem_host_destroy(h);
	free(pages);
	free(rec);
	if (im.fd >= 0)
		close(im.fd);
}

static void restore_run(struct bench *b, struct result **res)
{
	if (res[RS_FIRST]->want)
		first_touch(b, res[RS_FIRST]);
	if (res[RS_PREFETCH]->want)
		prefetch(b, res[RS_PREFETCH]);
}

static const struct bench_key keys[] = {
	[RS_FIRST] = { "restore_first_touch",
		"us per first touch of a page of a guest restored from an\n"
		"image; baseline: a raw 4 KiB pread of the same bytes into a\n"
		"page of its own\n" },
	[RS_PREFETCH] = { "restore_prefetch",
		"ms for a restored guest to touch its working set, with the\n"
		"recorded set prefetched; baseline: the same without\n" },
	{ NULL },
};

const struct bench_family bench_restore = { "restore", keys, restore_run };
