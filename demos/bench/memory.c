/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * memory.c: what the budget costs before it is used, and how fast the
 * memory a host holds follows its guests up and down.
 *
 * host_create -- microseconds per umlmem_host_create() of a host with an
 *   8 GiB budget and no guest (its destroy is not timed), with the
 *   process's RSS growth per host beside it. Baseline: the kernel's part of
 *   a sparse store of the same size alone (memfd_create, ftruncate, mmap;
 *   munmap and close untimed). Best of 20 (--quick 5), alternating.
 *
 * frames_grow -- frames made per second: a fresh host of the run's budget
 *   and a guest of the same size written once in order (each page takes a
 *   frame never used before, whose memory the kernel hands out on the first
 *   write). Baseline: the same bytes written into fresh anonymous memory
 *   (first touch of every page). Best of 3, alternating.
 *
 * frames_return -- frames given back per second: that guest destroyed
 *   (umlmem_guest_destroy() gives its frames back to the kernel before it
 *   returns, frames_returned counts them). Baseline: the same number of
 *   pages of a written memfd punched out in one fallocate(PUNCH_HOLE), the
 *   kernel's own cost of the work. Best of 3, alternating.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "harness.h"

enum { CREATE, GROW, RETURN };

#define CREATE_BUDGET	(8ull << 30)
#define CREATE_REPS	20
#define GROW_REPS	3

/* Field @key ("VmRSS:", "VmPin:") of this process's status in bytes, 0
   when it cannot be read. */
static uint64_t status_bytes(const char *key)
{
	FILE *f = fopen("/proc/self/status", "r");
	size_t n = strlen(key);
	char line[256];
	uint64_t kib = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, key, n) && sscanf(line + n, " %" SCNu64, &kib) == 1)
			break;
	fclose(f);
	return kib << 10;
}

static uint64_t vmrss(void)
{
	return status_bytes("VmRSS:");
}

static int create_once(struct bench *b, struct result *r, double *secs, uint64_t *rss)
{
	struct umlmem_host_config hc;
	umlmem_host *h;
	uint64_t rss0;
	double t0;
	int rc;

	umlmem_host_config_init(&hc);
	hc.resident_bytes = CREATE_BUDGET;
	hc.swap_dir = b->swap_dir;
	hc.io = b->want_engine;
	rss0 = vmrss();
	t0 = now_s();
	rc = umlmem_host_create(&hc, &h);
	*secs = now_s() - t0;
	if (rc) {
		res_lib_fail(r, rc, "creating the host");
		return rc;
	}
	*rss = vmrss() - rss0;
	umlmem_host_destroy(h);
	return 0;
}

static int create_raw_once(struct result *r, double *secs)
{
	double t0 = now_s();
	int fd = memfd_create("bench-store", MFD_CLOEXEC);
	void *p = MAP_FAILED;

	if (fd >= 0 && ftruncate(fd, (off_t)CREATE_BUDGET) == 0)
		p = mmap(NULL, CREATE_BUDGET, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	*secs = now_s() - t0;
	if (p == MAP_FAILED) {
		res_fail(r, RS_ERROR, "a sparse memfd of 8 GiB: %s", strerror(errno));
		if (fd >= 0)
			close(fd);
		return -errno;
	}
	munmap(p, CREATE_BUDGET);
	close(fd);
	return 0;
}

static void create_run(struct bench *b, struct result *r)
{
	int reps = b->quick ? 5 : CREATE_REPS;
	double best = 0, best_raw = 0, dt;
	uint64_t rss, min_rss = UINT64_MAX;

	bench_progress("host_create: %d hosts of an 8 GiB budget, and as many sparse memfds",
		       reps);
	for (int rep = 0; rep < reps; rep++) {
		if (create_once(b, r, &dt, &rss))
			return;
		if (!best || dt < best)
			best = dt;
		if (rss < min_rss)
			min_rss = rss;
		if (create_raw_once(r, &dt))
			return;
		if (!best_raw || dt < best_raw)
			best_raw = dt;
	}
	res_set(r, best * 1e6, best_raw * 1e6, "us", true);
	res_int(r, "budget_bytes", (int64_t)CREATE_BUDGET);
	res_int(r, "rss_kib", (int64_t)(min_rss >> 10));
	res_int(r, "reps", reps);
	res_str(r, "baseline_mode", "memfd_create + ftruncate + mmap of 8 GiB, best of %d", reps);
}

/* Fresh anonymous memory of @npages written with the guest's bytes: the
   time of the writes. */
static int grow_raw_once(struct result *r, uint64_t npages, double *secs)
{
	uint64_t *buf = aligned_alloc(PAGE, 64 * PAGE);
	uint8_t *p = mmap(NULL, npages * PAGE, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	double t = 0, t0;

	if (!buf || p == MAP_FAILED) {
		res_fail(r, RS_ERROR, "out of memory for the baseline");
		free(buf);
		if (p != MAP_FAILED)
			munmap(p, npages * PAGE);
		return -ENOMEM;
	}
	for (uint64_t q = 0, n; q < npages; q += n) {
		n = npages - q < 64 ? npages - q : 64;
		bench_fill_pages(buf, q, n, 0);
		t0 = now_s();
		memcpy(p + q * PAGE, buf, n * PAGE);
		t += now_s() - t0;
	}
	*secs = t;
	munmap(p, npages * PAGE);
	free(buf);
	return 0;
}

/* A memfd of @npages written, then punched out in one call: its time. */
static int return_raw_once(struct result *r, uint64_t npages, double *secs)
{
	int fd = memfd_create("bench-punch", MFD_CLOEXEC);
	uint8_t *p = MAP_FAILED;
	double t0;
	int rc = 0;

	if (fd >= 0 && ftruncate(fd, (off_t)(npages * PAGE)) == 0)
		p = mmap(NULL, npages * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		res_fail(r, RS_ERROR, "a memfd for the baseline: %s", strerror(errno));
		if (fd >= 0)
			close(fd);
		return -ENOMEM;
	}
	for (uint64_t q = 0; q < npages; q++)
		memset(p + q * PAGE, (int)(q | 1), PAGE);
	t0 = now_s();
	if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, (off_t)(npages * PAGE)))
		rc = -errno;
	*secs = now_s() - t0;
	munmap(p, npages * PAGE);
	close(fd);
	if (rc)
		res_fail(r, RS_ERROR, "fallocate(PUNCH_HOLE) of a memfd: %s", strerror(-rc));
	return rc;
}

/* One host: a guest of the budget written (timed per write call, as the
   baseline's copies), then destroyed (timed). Failures go to @rg. */
static int grow_once(struct bench *b, struct result *rg, uint64_t npages,
		     double *grow_s, uint64_t *made, double *ret_s, uint64_t *returned,
		     uint64_t *pinned, uint64_t *pinned_after)
{
	struct umlmem_host_info i0, i1;
	uint64_t *buf = aligned_alloc(PAGE, 64 * PAGE);
	umlmem_host *h;
	umlmem_guest *g;
	double t = 0, t0;
	int rc;

	if (!buf) {
		res_fail(rg, RS_ERROR, "out of memory for the fill buffer");
		return -ENOMEM;
	}
	rc = bench_host(b, rg, npages * PAGE, npages * PAGE, 0, "bench-grow", &h, &g);
	if (rc) {
		free(buf);
		return rc;
	}
	for (uint64_t q = 0, n; q < npages && !rc; q += n) {
		n = npages - q < 64 ? npages - q : 64;
		bench_fill_pages(buf, q, n, 0);
		t0 = now_s();
		rc = umlmem_write(g, q * PAGE, buf, n * PAGE);
		t += now_s() - t0;
	}
	free(buf);
	if (rc) {
		res_lib_fail(rg, rc, "writing the guest");
		umlmem_host_destroy(h);
		return rc;
	}
	*grow_s = t;
	umlmem_host_info(h, &i0, sizeof(i0));
	*made = i0.frames_made;
	*pinned = status_bytes("VmPin:");
	t0 = now_s();
	umlmem_guest_destroy(g);
	*ret_s = now_s() - t0;
	*pinned_after = status_bytes("VmPin:");
	umlmem_host_info(h, &i1, sizeof(i1));
	*returned = i1.frames_returned - i0.frames_returned;
	umlmem_host_destroy(h);
	if (!*returned)
		res_fail(rg, RS_ERROR, "destroying the guest gave no frame back");
	return *returned ? 0 : -EIO;
}

static void grow_run(struct bench *b, struct result *rg, struct result *rr)
{
	uint64_t npages = b->budget / PAGE, made = 0, returned = 0, best_ret = 0;
	uint64_t pin = 0, pin_after = 0;
	double g_best = 0, g_raw = 0, r_best = 0, r_raw = 0, gs, rs, rate;
	struct result *rf = rg->want ? rg : rr;   /* where a failure is told */
	char b1[32];

	bench_progress("frames_grow, frames_return: a guest of %s written and destroyed, and "
		       "as much anonymous memory written, a memfd punched, %d times each",
		       fmt_bytes(b1, sizeof(b1), b->budget), GROW_REPS);
	for (int rep = 0; rep < GROW_REPS; rep++) {
		if (grow_once(b, rf, npages, &gs, &made, &rs, &returned, &pin, &pin_after))
			return;
		rate = gs > 0 ? (double)made / gs : 0;
		g_best = rate > g_best ? rate : g_best;
		rate = rs > 0 ? (double)returned / rs : 0;
		if (rate > r_best) {
			r_best = rate;
			best_ret = returned;
		}
		if (grow_raw_once(rf, npages, &gs) || return_raw_once(rf, npages, &rs))
			return;
		rate = gs > 0 ? (double)npages / gs : 0;
		g_raw = rate > g_raw ? rate : g_raw;
		rate = rs > 0 ? (double)npages / rs : 0;
		r_raw = rate > r_raw ? rate : r_raw;
	}
	if (rg->want) {
		res_set(rg, g_best, g_raw, "frames/s", false);
		res_int(rg, "frames", (int64_t)made);
		res_int(rg, "pinned_kib", (int64_t)(pin >> 10));
		res_str(rg, "baseline_mode", "%" PRIu64 " pages of fresh anonymous memory "
			"written, best of %d", npages, GROW_REPS);
	}
	if (rr->want) {
		res_set(rr, r_best, r_raw, "frames/s", false);
		res_int(rr, "frames", (int64_t)best_ret);
		res_int(rr, "pinned_kib", (int64_t)(pin_after >> 10));
		res_str(rr, "baseline_mode", "%" PRIu64 " written pages of a memfd punched in "
			"one fallocate, best of %d", npages, GROW_REPS);
	}
}

static void memory_run(struct bench *b, struct result **res)
{
	if (res[CREATE]->want)
		create_run(b, res[CREATE]);
	if (res[GROW]->want || res[RETURN]->want)
		grow_run(b, res[GROW], res[RETURN]);
}

static const struct bench_key keys[] = {
	[CREATE] = { "host_create",
		"us per umlmem_host_create of an 8 GiB budget (and its\n"
		"RSS); baseline: a sparse 8 GiB memfd mapped\n" },
	[GROW] = { "frames_grow",
		"frames/s made by writing a fresh guest of the budget;\n"
		"baseline: the same bytes into fresh anonymous memory\n" },
	[RETURN] = { "frames_return",
		"frames/s given back by destroying that guest; baseline:\n"
		"the same pages of a memfd punched in one fallocate\n" },
	{ NULL },
};

const struct bench_family bench_memory = { "memory", keys, memory_run };
