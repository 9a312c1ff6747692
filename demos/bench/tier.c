/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * tier.c: the compressed pool against frames and swap alone, and against
 * the kernel's swap and zswap, on real content.
 *
 * The content: a guest of 4x the budget whose pages are pages of this
 * host's own libraries and programs (/usr/lib/x86_64-linux-gnu, /usr/lib,
 * /usr/bin, read in directory order), each page's first word replaced by
 * its page number so that nothing merges and no page is all zeros: what a
 * guest's RAM holds, not the content rule of the other figures, which
 * compresses unrealistically well. Every value read is checked against the
 * source.
 *
 * The umlmem sides: three hosts of the same budget and swap directory,
 * compress OFF, LZ4 and ZSTD, each filled with the content. Each workload
 * (random 8-byte reads by one thread, the same by 8 threads, one thread
 * reading each page in turn round the guest) gets a warm-up on every side,
 * then NSLICES rounds of one slice per side: the disk's speed and the
 * other load on a shared machine change over a run by more than the
 * differences measured, and alternating slices lay those changes on every
 * side alike.
 *
 * tier_random, tier_random_zstd, tier_random_t8, tier_seq -- reads/s of
 *   the pool side; baseline: compress off. Fields: the pool's compression
 *   ratio (pages per pool frame), the fraction of faults the pool served,
 *   faults per read, and the cost of a pool fault (pool_fault_us: us per
 *   fault of a guest of 1.2 budgets with a pool of 3/4 of the budget,
 *   which fits frames and pool) next to its floors: lz4 and zstd
 *   decompression and memcpy of one page, measured on the same pages.
 * tier_kernel_zswap, tier_kernel_swap -- tier_random's lz4 figure against
 *   the kernel (kernel.h): a child in a memory cgroup of the same budget
 *   copies the same content into anonymous memory and reads it at random,
 *   with zswap on (its compressor and the zswpin/zswpout of the timed
 *   phase reported, so that a reader sees zswap was used) or off; swap is
 *   a file of ours on the same disk, and zswap's switch is restored
 *   afterwards, also on failure or a signal. These run after the umlmem
 *   sides, not interleaved with them. Root and a memory controller, or
 *   skipped with the reason.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <lz4.h>
#include <pthread.h>
#include <zstd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "kernel.h"

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

enum { TIER_RANDOM, TIER_RANDOM_ZSTD, TIER_RANDOM_T8, TIER_SEQ, TIER_ZSWAP, TIER_KSWAP };

/* The umlmem sides, and the workloads each runs in alternating slices. */
enum { S_OFF, S_LZ4, S_ZSTD, NSIDES };
enum { W_RANDOM, W_T8, W_SEQ, NWORK };
#define NSLICES 8
#define T8      8

static const enum umlmem_compress side_compress[NSIDES] = {
	UMLMEM_COMPRESS_OFF, UMLMEM_COMPRESS_LZ4, UMLMEM_COMPRESS_ZSTD,
};

struct tally {
	double secs;
	uint64_t ops, faults, swap_ins, pool_hits;
};

struct side {
	umlmem_host *h;
	umlmem_guest *g;
	uint64_t seq;           /* the next page of the sequential reader */
	struct tally w[NWORK];
	uint64_t pool_pages, pool_frames, pool_bytes, disk;
};

struct reader {
	umlmem_guest *g;
	const uint8_t *src;
	uint64_t npages, rng, ops, *seq;
	double end;
	int rc;
	bool bad;
};

/* Reads 8 bytes at random pages (or, with seq, at each page in turn) until
   the slice ends, checking every value against the source. */
static void *reader_main(void *arg)
{
	struct reader *rd = arg;
	uint64_t p, w, v;

	while (!rd->rc) {
		w = 1 + rng_below(&rd->rng, WORDS - 1);
		if (rd->seq) {
			p = *rd->seq;
			*rd->seq = p + 1 < rd->npages ? p + 1 : 0;
		} else {
			p = rng_below(&rd->rng, rd->npages);
		}
		rd->rc = umlmem_read(rd->g, p * PAGE + w * 8, &v, 8);
		if (!rd->rc && memcmp(&v, rd->src + p * PAGE + w * 8, 8)) {
			rd->bad = true;
			rd->rc = -EIO;
		}
		if (!(++rd->ops & 63) && now_s() >= rd->end)
			break;
	}
	return NULL;
}

/* One slice of workload @w on side @s for @secs, added to s->w[w] when
   @count. */
static int slice(struct result *r, struct side *s, const uint8_t *src, uint64_t npages, int w,
		 double secs, uint64_t seed, bool count)
{
	unsigned n = w == W_T8 ? T8 : 1, started = 0;
	struct reader rd[T8];
	pthread_t tid[T8];
	struct umlmem_host_info i0, i1;
	struct umlmem_stats s0, s1;
	double t0, t1;
	int rc = 0;

	umlmem_host_stats(s->h, &s0);
	umlmem_host_info(s->h, &i0, sizeof(i0));
	t0 = now_s();
	for (unsigned i = 0; i < n; i++) {
		rd[i] = (struct reader){ .g = s->g, .src = src, .npages = npages,
					 .rng = seed * 7919 + i + 1, .end = t0 + secs,
					 .seq = w == W_SEQ ? &s->seq : NULL };
		if (n == 1)
			reader_main(&rd[0]);
		else if (!pthread_create(&tid[i], NULL, reader_main, &rd[i]))
			started++;
		else
			rd[i].rc = -EAGAIN;
	}
	for (unsigned i = 0; n > 1 && i < started; i++)
		pthread_join(tid[i], NULL);
	t1 = now_s();
	umlmem_host_stats(s->h, &s1);
	umlmem_host_info(s->h, &i1, sizeof(i1));
	for (unsigned i = 0; i < n; i++) {
		if (rd[i].bad) {
			res_fail(r, RS_ERROR, "a value read differs from the source");
			rc = -EIO;
		} else if (rd[i].rc && !rc) {
			res_lib_fail(r, rd[i].rc, "umlmem_read");
			rc = rd[i].rc;
		}
		if (count)
			s->w[w].ops += rd[i].ops;
	}
	if (count) {
		s->w[w].secs += t1 - t0;
		s->w[w].faults += s1.faults - s0.faults;
		s->w[w].swap_ins += s1.swap_ins - s0.swap_ins;
		s->w[w].pool_hits += i1.pool_hits - i0.pool_hits;
	}
	s->pool_pages = i1.pool_pages;
	s->pool_frames = i1.pool_frames;
	s->pool_bytes = i1.pool_bytes;
	s->disk = s1.swap_disk_bytes;
	return rc;
}

static int make_side(struct bench *b, struct result *r, enum umlmem_compress c,
		     uint64_t budget, uint64_t pool_bytes, const uint8_t *src, uint64_t npages,
		     struct side *s)
{
	struct umlmem_host_config hc;
	struct umlmem_guest_config gc;
	int rc;

	memset(s, 0, sizeof(*s));
	umlmem_host_config_init(&hc);
	hc.resident_bytes = budget;
	hc.swap_dir = b->swap_dir;
	hc.io = b->want_engine;
	hc.compress = c;
	hc.compress_pool_bytes = pool_bytes;
	rc = umlmem_host_create(&hc, &s->h);
	if (rc) {
		s->h = NULL;
		res_lib_fail(r, rc, "creating the host");
		return rc;
	}
	umlmem_guest_config_init(&gc);
	gc.ram_bytes = npages * PAGE;
	gc.name = "bench-tier";
	gc.flags = UMLMEM_GUEST_NOMERGE;
	rc = umlmem_guest_create(s->h, &gc, &s->g);
	if (rc) {
		res_lib_fail(r, rc, "creating the guest");
		return rc;
	}
	for (uint64_t p = 0; p < npages; p += FILL_PAGES) {
		uint64_t n = npages - p < FILL_PAGES ? npages - p : FILL_PAGES;

		rc = umlmem_write(s->g, p * PAGE, src + p * PAGE, n * PAGE);
		if (rc) {
			res_lib_fail(r, rc, "filling the guest");
			return rc;
		}
	}
	return 0;
}

/* us per page: lz4 and zstd decompression, and memcpy, over sample pages. */
static void floors(const uint8_t *src, uint64_t npages, double *lz4_us, double *zstd_us,
		   double *cpy_us)
{
	enum { N = 2048 };
	static char cbuf[LZ4_COMPRESSBOUND(4096) + 4096];
	uint8_t *dst = aligned_alloc(PAGE, PAGE);
	/* contexts made once, as the pool keeps them: making one per page
	   costs more than the page */
	ZSTD_CCtx *cc = ZSTD_createCCtx();
	ZSTD_DCtx *dc = ZSTD_createDCtx();
	uint64_t rng = 99, ok = 0, zok = 0;
	double tdec = 0, tz = 0, tcpy = 0, t;

	*lz4_us = *zstd_us = *cpy_us = 0;
	if (!dst || !cc || !dc) {
		free(dst);
		ZSTD_freeCCtx(cc);
		ZSTD_freeDCtx(dc);
		return;
	}
	for (int i = 0; i < N; i++) {
		const uint8_t *p = src + rng_below(&rng, npages) * PAGE;
		int n = LZ4_compress_default((const char *)p, cbuf, PAGE, sizeof(cbuf));
		size_t zn;

		t = now_s();
		if (LZ4_decompress_safe(cbuf, (char *)dst, n, PAGE) == (int)PAGE)
			ok++;
		tdec += now_s() - t;
		zn = ZSTD_compressCCtx(cc, cbuf, sizeof(cbuf), p, PAGE, 1);
		t = now_s();
		if (!ZSTD_isError(zn) && ZSTD_decompressDCtx(dc, dst, PAGE, cbuf, zn) == PAGE)
			zok++;
		tz += now_s() - t;
		t = now_s();
		memcpy(dst, p, PAGE);
		__asm__ volatile("" : : "r"(dst) : "memory");
		tcpy += now_s() - t;
	}
	*lz4_us = tdec * 1e6 / (double)(ok ? ok : 1);
	*zstd_us = tz * 1e6 / (double)(zok ? zok : 1);
	*cpy_us = tcpy * 1e6 / N;
	free(dst);
	ZSTD_freeCCtx(cc);
	ZSTD_freeDCtx(dc);
}

static double rate(const struct tally *t)
{
	return t->secs > 0 ? (double)t->ops / t->secs : 0;
}

static double frac(uint64_t a, uint64_t b)
{
	return b ? (double)a / (double)b : 0;
}

/* The cost of a fault the pool serves: a guest that fits frames + pool
   (pool of 3/4 of the budget, guest of 1.2 budgets) read at random pages,
   one thread; us per fault, and the fraction that still went to disk. */
static int pool_fault_cost(struct bench *b, struct result *r, const uint8_t *src,
			   double *us, double *disk_frac)
{
	uint64_t npages = b->budget / PAGE * 6 / 5;
	struct side s;
	int rc;

	*us = *disk_frac = 0;
	rc = make_side(b, r, UMLMEM_COMPRESS_LZ4, b->budget, b->budget / 4 * 3, src, npages, &s);
	if (!rc)
		rc = slice(r, &s, src, npages, W_RANDOM, b->warm, 5, false);
	if (!rc)
		rc = slice(r, &s, src, npages, W_RANDOM, b->seconds / 2, 6, true);
	if (!rc && s.w[W_RANDOM].faults) {
		*us = s.w[W_RANDOM].secs * 1e6 / (double)s.w[W_RANDOM].faults;
		*disk_frac = frac(s.w[W_RANDOM].swap_ins - s.w[W_RANDOM].pool_hits,
				  s.w[W_RANDOM].faults);
	}
	umlmem_host_destroy(s.h);
	return rc;
}

/* The kernel's swap, with or without zswap, on the same content and
   budget: random single-thread reads/s into *rate. */
static void kernel_side(struct bench *b, struct result *r, bool zswap, const uint8_t *src,
			uint64_t ws, double urate)
{
	struct kernel_report rep;
	char cgdesc[PATH_MAX + 128] = "", comp[64] = "", b1[32], b2[32];
	uint64_t swap_bytes = ((ws + ws / 4) + (1u << 20) - 1) / (1u << 20) * (1u << 20);
	bool others = false;

	if (kernel_begin(r))
		return;
	bench_progress("%s: kernel swap%s, swap file of %s, memory cgroup of %s", r->key,
		       zswap ? " + zswap" : "", fmt_bytes(b1, sizeof(b1), swap_bytes),
		       fmt_bytes(b2, sizeof(b2), b->budget));
	if (kernel_zswap(r, zswap, comp, sizeof(comp)) ||
	    kernel_swap_on(r, bench_swap_dir(b), swap_bytes, &others) ||
	    kernel_cgroup(r, b->budget, cgdesc, sizeof(cgdesc)) ||
	    kernel_random_reads(b, r, ws, src, &rep))
		goto out;
	res_set(r, urate, rep.secs > 0 ? (double)rep.reads / rep.secs : 0, "reads/s", false);
	res_num(r, "kernel_major_faults_per_s", rep.secs > 0 ? (double)rep.majflt / rep.secs : 0);
	res_num(r, "kernel_hit_fraction", rep.reads ? 1.0 - (double)rep.majflt / (double)rep.reads
						    : 0);
	res_int(r, "pswpin", (int64_t)rep.pswpin);
	res_bool(r, "zswap", zswap);
	if (zswap) {
		res_str(r, "zswap_compressor", "%s", comp);
		res_int(r, "zswpin", (int64_t)rep.zswpin);
		res_int(r, "zswpout", (int64_t)rep.zswpout);
		if (!rep.zswpin)
			res_note(r, "zswpin stayed 0: zswap served no fault");
	}
	res_str(r, "cgroup", "%s", cgdesc);
	res_note(r, "value: umlmem lz4 pool, one thread, random reads (tier_random); baseline: "
		 "the kernel on the same content in a memory cgroup of the same budget, "
		 "measured after the umlmem sides (not interleaved)%s",
		 zswap ? "; zswap's pool is outside the cgroup's limit accounting only as far as the "
			 "kernel does so" : "");
	if (others)
		res_note(r, "other swap devices are active; ours had the highest priority");
out:
	kernel_end();
}

static void tier_run(struct bench *b, struct result **res)
{
	struct result *r = res[TIER_RANDOM];
	uint64_t npages = 4 * b->budget / PAGE, got, seed = 1;
	struct side sd[NSIDES];
	double lz4_us, zstd_us, cpy_us, fault_us = 0, fault_disk = 0, per;
	bool any = false;
	uint8_t *src;
	char b1[32];
	int rc = 0;

	for (int k = TIER_RANDOM; k <= TIER_KSWAP; k++)
		any |= res[k]->want;
	if (!any)
		return;
	memset(sd, 0, sizeof(sd));
	src = bench_map_pages(npages * PAGE);
	if (!src) {
		res_fail(r, RS_ERROR, "cannot map %" PRIu64 " pages for the content", npages);
		return;
	}
	got = real_pages(src, npages);
	if (got < npages) {
		for (int k = TIER_RANDOM; k <= TIER_KSWAP; k++)
			res_fail(res[k], RS_SKIP, "only %" PRIu64 " pages of files found under /usr",
				 got);
		goto out;
	}
	bench_progress("tier: %s of this host's binaries on a budget of a quarter: compress "
		       "off, lz4 and zstd, in alternating slices",
		       fmt_bytes(b1, sizeof(b1), npages * PAGE));
	for (int i = 0; !rc && i < NSIDES; i++)
		rc = make_side(b, r, side_compress[i], b->budget, 0, src, npages, &sd[i]);
	/* each workload: a warm-up on every side, then NSLICES rounds of one
	   slice per side, so that the disk's changing speed and other load on
	   the machine fall on every side alike */
	per = b->seconds / NSLICES;
	for (int w = 0; !rc && w < NWORK; w++) {
		for (int i = 0; !rc && i < NSIDES; i++)
			rc = slice(r, &sd[i], src, npages, w, b->warm, seed++, false);
		for (int k = 0; !rc && k < NSLICES; k++)
			for (int i = 0; !rc && i < NSIDES; i++)
				rc = slice(r, &sd[i], src, npages, w, per, seed++, true);
	}
	for (int i = 0; i < NSIDES; i++) {
		umlmem_host_destroy(sd[i].h);
		sd[i].h = NULL;
	}
	if (!rc)
		rc = pool_fault_cost(b, r, src, &fault_us, &fault_disk);
	if (rc) {
		for (int k = TIER_RANDOM_ZSTD; k <= TIER_KSWAP; k++)
			res_fail(res[k], RS_ERROR, "the umlmem sides failed: %s", r->reason);
		goto out;
	}
	floors(src, npages, &lz4_us, &zstd_us, &cpy_us);

	res_set(r, rate(&sd[S_LZ4].w[W_RANDOM]), rate(&sd[S_OFF].w[W_RANDOM]), "reads/s", false);
	res_num(r, "pool_ratio", frac(sd[S_LZ4].pool_pages, sd[S_LZ4].pool_frames));
	res_num(r, "pool_hit_fraction", frac(sd[S_LZ4].w[W_RANDOM].pool_hits,
					     sd[S_LZ4].w[W_RANDOM].faults));
	res_num(r, "faults_per_read_pool", frac(sd[S_LZ4].w[W_RANDOM].faults,
						sd[S_LZ4].w[W_RANDOM].ops));
	res_num(r, "faults_per_read_off", frac(sd[S_OFF].w[W_RANDOM].faults,
					       sd[S_OFF].w[W_RANDOM].ops));
	res_num(r, "us_per_read_pool", 1e6 / rate(&sd[S_LZ4].w[W_RANDOM]));
	res_num(r, "us_per_read_off", 1e6 / rate(&sd[S_OFF].w[W_RANDOM]));
	res_num(r, "pool_fault_us", fault_us);
	res_num(r, "pool_fault_disk_fraction", fault_disk);
	res_num(r, "lz4_decompress_us", lz4_us);
	res_num(r, "zstd_decompress_us", zstd_us);
	res_num(r, "memcpy_page_us", cpy_us);
	res_int(r, "pool_frames", (int64_t)sd[S_LZ4].pool_frames);
	res_int(r, "disk_bytes_pool", (int64_t)sd[S_LZ4].disk);
	res_int(r, "disk_bytes_off", (int64_t)sd[S_OFF].disk);
	res_int(r, "working_set_bytes", (int64_t)(npages * PAGE));
	res_note(r, "one thread; pool_fault_us: us per fault of a guest that fits frames + pool "
		 "(1.2x the budget, pool 3/4 of it)");

	r = res[TIER_RANDOM_ZSTD];
	res_set(r, rate(&sd[S_ZSTD].w[W_RANDOM]), rate(&sd[S_OFF].w[W_RANDOM]), "reads/s", false);
	res_num(r, "pool_ratio", frac(sd[S_ZSTD].pool_pages, sd[S_ZSTD].pool_frames));
	res_num(r, "pool_hit_fraction", frac(sd[S_ZSTD].w[W_RANDOM].pool_hits,
					     sd[S_ZSTD].w[W_RANDOM].faults));
	res_num(r, "vs_lz4", rate(&sd[S_LZ4].w[W_RANDOM]) > 0 ?
			     rate(&sd[S_ZSTD].w[W_RANDOM]) / rate(&sd[S_LZ4].w[W_RANDOM]) : 0);
	res_int(r, "pool_frames", (int64_t)sd[S_ZSTD].pool_frames);
	res_note(r, "one thread; baseline: compress off");

	r = res[TIER_RANDOM_T8];
	res_set(r, rate(&sd[S_LZ4].w[W_T8]), rate(&sd[S_OFF].w[W_T8]), "reads/s", false);
	res_num(r, "zstd_rate", rate(&sd[S_ZSTD].w[W_T8]));
	res_num(r, "pool_hit_fraction", frac(sd[S_LZ4].w[W_T8].pool_hits, sd[S_LZ4].w[W_T8].faults));
	res_int(r, "threads", T8);

	r = res[TIER_SEQ];
	res_set(r, rate(&sd[S_LZ4].w[W_SEQ]), rate(&sd[S_OFF].w[W_SEQ]), "reads/s", false);
	res_num(r, "zstd_rate", rate(&sd[S_ZSTD].w[W_SEQ]));
	res_num(r, "pool_hit_fraction", frac(sd[S_LZ4].w[W_SEQ].pool_hits,
					     sd[S_LZ4].w[W_SEQ].faults));
	res_num(r, "faults_per_read_pool", frac(sd[S_LZ4].w[W_SEQ].faults, sd[S_LZ4].w[W_SEQ].ops));
	res_num(r, "faults_per_read_off", frac(sd[S_OFF].w[W_SEQ].faults, sd[S_OFF].w[W_SEQ].ops));
	res_note(r, "one thread reading 8 bytes of each page in turn, round the guest");

	if (res[TIER_ZSWAP]->want)
		kernel_side(b, res[TIER_ZSWAP], true, src, npages * PAGE,
			    rate(&sd[S_LZ4].w[W_RANDOM]));
	if (res[TIER_KSWAP]->want)
		kernel_side(b, res[TIER_KSWAP], false, src, npages * PAGE,
			    rate(&sd[S_LZ4].w[W_RANDOM]));
out:
	for (int i = 0; i < NSIDES; i++)
		umlmem_host_destroy(sd[i].h);
	munmap(src, npages * PAGE);
}

static const struct bench_key keys[] = {
	[TIER_RANDOM] = { "tier_random",
		"random 8-byte reads/s of real pages (host binaries) with the compressed\n"
		"pool (lz4); baseline: compress off, in alternating slices\n" },
	[TIER_RANDOM_ZSTD] = { "tier_random_zstd",
		"the same with the pool in zstd; baseline: compress off\n" },
	[TIER_RANDOM_T8] = { "tier_random_t8",
		"the same with 8 threads, pool lz4; baseline: compress off\n" },
	[TIER_SEQ] = { "tier_seq",
		"reads/s of one thread reading the guest in page order, pool lz4;\n"
		"baseline: compress off\n" },
	[TIER_ZSWAP] = { "tier_kernel_zswap",
		"tier_random's umlmem figure; baseline: the kernel's swap with zswap\n"
		"on, same content, memory cgroup of the same budget (root)\n" },
	[TIER_KSWAP] = { "tier_kernel_swap",
		"tier_random's umlmem figure; baseline: the kernel's swap without\n"
		"zswap, same content and cgroup (root)\n" },
	{ NULL },
};

const struct bench_family bench_tier = { "tier", keys, tier_run };
