/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * tier.c: the compressed pool against frames and swap alone, on real
 * content.
 *
 * tier_random -- reads/s of random 8-byte umlmem_read()s, one thread,
 *   over a guest of 4x the budget whose pages are pages of this host's own
 *   libraries and programs (/usr/lib/x86_64-linux-gnu, /usr/lib, /usr/bin,
 *   read in directory order), each page's first word replaced by its page
 *   number so that nothing merges and no page is all zeros: what a guest's
 *   RAM holds, not the content rule of the other figures, which compresses
 *   unrealistically well. umlmem with compress LZ4 (the pool) against the
 *   same with compress OFF (frames and swap only), same budget, same disk,
 *   same read sequence; every value read is checked against the source.
 *   Fields: the pool's compression ratio (pages per pool frame), the
 *   fraction of faults the pool served, microseconds per read on both
 *   sides, and the floors of a pool fault: lz4 decompression and memcpy of
 *   one page, measured on the same pages.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <lz4.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

enum { TIER_RANDOM };

/* Fills @npages pages at @buf from the files under a few system
   directories, round again if they hold less; first word = page number. */
static uint64_t real_pages(uint8_t *buf, uint64_t npages)
{
	static const char *const dirs[] = { "/usr/lib/x86_64-linux-gnu", "/usr/lib", "/usr/bin" };
	uint64_t got = 0;

	for (int round = 0; round < 64 && got < npages; round++) {
		uint64_t before = got;

		for (unsigned d = 0; d < sizeof(dirs) / sizeof(dirs[0]) && got < npages; d++) {
			DIR *dir = opendir(dirs[d]);
			struct dirent *de;

			if (!dir)
				continue;
			while ((de = readdir(dir)) != NULL && got < npages) {
				int fd = openat(dirfd(dir), de->d_name, O_RDONLY | O_NOFOLLOW);
				struct stat st;
				ssize_t n;

				if (fd < 0)
					continue;
				if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
					close(fd);
					continue;
				}
				while (got < npages &&
				       (n = read(fd, buf + got * PAGE, PAGE)) == (ssize_t)PAGE)
					got++;
				close(fd);
			}
			closedir(dir);
		}
		if (got == before)
			break;
	}
	for (uint64_t i = 0; i < got; i++)
		memcpy(buf + i * PAGE, &i, 8);
	return got;
}

static int make_host(struct bench *b, struct result *r, enum umlmem_compress c,
		     uint64_t guest_bytes, umlmem_host **hp, umlmem_guest **gp)
{
	struct umlmem_host_config hc;
	struct umlmem_guest_config gc;
	int rc;

	*gp = NULL;
	umlmem_host_config_init(&hc);
	hc.resident_bytes = b->budget;
	hc.swap_dir = b->swap_dir;
	hc.io = b->want_engine;
	hc.compress = c;
	rc = umlmem_host_create(&hc, hp);
	if (rc) {
		*hp = NULL;
		res_lib_fail(r, rc, "creating the host");
		return rc;
	}
	umlmem_guest_config_init(&gc);
	gc.ram_bytes = guest_bytes;
	gc.name = "bench-tier";
	gc.flags = UMLMEM_GUEST_NOMERGE;
	rc = umlmem_guest_create(*hp, &gc, gp);
	if (rc)
		res_lib_fail(r, rc, "creating the guest");
	return rc;
}

struct side {
	double rate, us;
	uint64_t faults, swap_ins, pool_hits, pool_pages, pool_frames, disk;
};

/* Fills the guest with @src and times random 8-byte reads; 0 or an error. */
static int run_side(struct bench *b, struct result *r, enum umlmem_compress c,
		    const uint8_t *src, uint64_t npages, struct side *out)
{
	uint64_t rng = 0x7135u, ops = 0, v;
	struct umlmem_host_info i0, i1;
	struct umlmem_stats s0, s1;
	umlmem_host *h = NULL;
	umlmem_guest *g = NULL;
	double t0, t1, end;
	int rc;

	rc = make_host(b, r, c, npages * PAGE, &h, &g);
	for (uint64_t p = 0; !rc && p < npages; p += FILL_PAGES) {
		uint64_t n = npages - p < FILL_PAGES ? npages - p : FILL_PAGES;

		rc = umlmem_write(g, p * PAGE, src + p * PAGE, n * PAGE);
		if (rc)
			res_lib_fail(r, rc, "filling the guest");
	}
	/* warm: the pager settles into its steady state */
	end = now_s() + b->warm;
	while (!rc && now_s() < end) {
		uint64_t p = rng_below(&rng, npages), w = 1 + rng_below(&rng, WORDS - 1);

		rc = umlmem_read(g, p * PAGE + w * 8, &v, 8);
	}
	umlmem_host_stats(h, &s0);
	umlmem_host_info(h, &i0, sizeof(i0));
	t0 = now_s();
	end = t0 + b->seconds;
	while (!rc) {
		uint64_t p = rng_below(&rng, npages), w = 1 + rng_below(&rng, WORDS - 1);

		rc = umlmem_read(g, p * PAGE + w * 8, &v, 8);
		if (rc) {
			res_lib_fail(r, rc, "umlmem_read");
			break;
		}
		if (memcmp(&v, src + p * PAGE + w * 8, 8)) {
			res_fail(r, RS_ERROR, "page %" PRIu64 " word %" PRIu64 " read wrong", p, w);
			rc = -EIO;
			break;
		}
		if (!(++ops & 255) && now_s() >= end)
			break;
	}
	t1 = now_s();
	umlmem_host_stats(h, &s1);
	umlmem_host_info(h, &i1, sizeof(i1));
	out->rate = (double)ops / (t1 - t0);
	out->us = (t1 - t0) * 1e6 / (double)(ops ? ops : 1);
	out->faults = s1.faults - s0.faults;
	out->swap_ins = s1.swap_ins - s0.swap_ins;
	out->pool_hits = i1.pool_hits - i0.pool_hits;
	out->pool_pages = i1.pool_pages;
	out->pool_frames = i1.pool_frames;
	out->disk = s1.swap_disk_bytes;
	umlmem_host_destroy(h);
	return rc;
}

/* us per page: lz4 decompression, and memcpy, over @n sample pages. */
static void floors(const uint8_t *src, uint64_t npages, double *dec_us, double *cpy_us)
{
	enum { N = 2048 };
	static char cbuf[LZ4_COMPRESSBOUND(4096)];
	uint8_t *dst = aligned_alloc(PAGE, PAGE);
	uint64_t rng = 99, ok = 0;
	double tdec = 0, tcpy = 0, t;

	*dec_us = *cpy_us = 0;
	if (!dst)
		return;
	for (int i = 0; i < N; i++) {
		const uint8_t *p = src + rng_below(&rng, npages) * PAGE;
		int n = LZ4_compress_default((const char *)p, cbuf, PAGE, sizeof(cbuf));

		t = now_s();
		if (LZ4_decompress_safe(cbuf, (char *)dst, n, PAGE) == (int)PAGE)
			ok++;
		tdec += now_s() - t;
		t = now_s();
		memcpy(dst, p, PAGE);
		__asm__ volatile("" : : "r"(dst) : "memory");
		tcpy += now_s() - t;
	}
	*dec_us = tdec * 1e6 / (double)(ok ? ok : 1);
	*cpy_us = tcpy * 1e6 / N;
	free(dst);
}

static void tier_run(struct bench *b, struct result **res)
{
	struct result *r = res[TIER_RANDOM];
	uint64_t npages = 4 * b->budget / PAGE, got;
	struct side on = { 0 }, off = { 0 };
	double dec_us, cpy_us;
	uint8_t *src;
	char b1[32];

	if (!r->want)
		return;
	src = bench_map_pages(npages * PAGE);
	if (!src) {
		res_fail(r, RS_ERROR, "cannot map %" PRIu64 " pages for the content", npages);
		return;
	}
	got = real_pages(src, npages);
	if (got < npages) {
		res_fail(r, RS_SKIP, "only %" PRIu64 " pages of files found under /usr", got);
		goto out;
	}
	bench_progress("tier: %s of this host's binaries on a budget of a quarter, "
		       "pool (lz4) against compress off", fmt_bytes(b1, sizeof(b1), npages * PAGE));
	if (run_side(b, r, UMLMEM_COMPRESS_LZ4, src, npages, &on) ||
	    run_side(b, r, UMLMEM_COMPRESS_OFF, src, npages, &off))
		goto out;
	floors(src, npages, &dec_us, &cpy_us);
	res_set(r, on.rate, off.rate, "reads/s", false);
	res_num(r, "pool_ratio", on.pool_frames ? (double)on.pool_pages / on.pool_frames : 0);
	res_num(r, "pool_hit_fraction", on.faults ? (double)on.pool_hits / on.faults : 0);
	res_num(r, "us_per_read_pool", on.us);
	res_num(r, "us_per_read_off", off.us);
	res_num(r, "lz4_decompress_us", dec_us);
	res_num(r, "memcpy_page_us", cpy_us);
	res_int(r, "pool_frames", (int64_t)on.pool_frames);
	res_int(r, "disk_bytes_pool", (int64_t)on.disk);
	res_int(r, "disk_bytes_off", (int64_t)off.disk);
	res_int(r, "working_set_bytes", (int64_t)(npages * PAGE));
	res_note(r, "one thread; kernel swap and zswap are not measured by this figure");
out:
	munmap(src, npages * PAGE);
}

static const struct bench_key keys[] = {
	[TIER_RANDOM] = { "tier_random",
		"random 8-byte reads/s of real pages (host binaries) with the compressed\n"
		"pool; baseline: compress off\n" },
	{ NULL },
};

const struct bench_family bench_tier = { "tier", keys, tier_run };
