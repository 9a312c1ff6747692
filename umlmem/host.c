/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * host.c: the host object (one physical memory budget), its configuration,
 * its statistics and the error reporting every call shares.
 *
 * A host owns the frame store (frames.c), the tiers below it (tier.c: the
 * swap set and its I/O engine, swapfiles/), the pager (pager.c) and the
 * list of its guests (guest.c).
 * host->lock, declared in internal.h, guards all of them but the engine,
 * which is thread-safe by itself.
 *
 * Errors: every public call returns 0 or a negative errno, and a failing
 * call leaves a sentence in a thread-local buffer (umlmem_errmsg) that says
 * which value was wrong and what to change. The buffer is per thread so
 * that concurrent callers never see each other's messages and no lock is
 * needed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "image.h"

static __thread char errbuf[512];

int seterr(int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(errbuf, sizeof(errbuf), fmt, ap);
	va_end(ap);
	return err;
}

void clearerr_tls(void)
{
	errbuf[0] = '\0';
}

const char *umlmem_errmsg(void)
{
	return errbuf;
}

int api_done(struct umlmem_host *h, int rc)
{
	if (!rc)
		clearerr_tls();
#if UMLMEM_DEBUG
	if (h) {
		char err[512];

		if (host_check(h, err, sizeof(err))) {
			fprintf(stderr, "umlmem: invariant violated after a call: %s\n", err);
			abort();
		}
	}
#else
	(void)h;
#endif
	return rc;
}

/* The codes the library returns, in its own words; anything else falls
   back to the C library's description. */
static const struct {
	int err;
	const char *text;
} errtab[] = {
	{ 0,          "success" },
	{ EINVAL,     "invalid argument" },
	{ EFAULT,     "address outside the guest" },
	{ ENOMEM,     "out of memory: every frame is pinned or an allocation failed" },
	{ ENOSPC,     "swap is full" },
	{ EIO,        "swap I/O error or checksum mismatch" },
	{ EBUSY,      "page is pinned" },
	{ ENOTSUP,    "not supported here" },
	{ EOVERFLOW,  "count would overflow" },
	{ ENOENT,     "no such file or directory" },
	{ ENOTDIR,    "not a directory" },
	{ EACCES,     "permission denied" },
	{ EROFS,      "read-only file system" },
	{ EUCLEAN,    "internal state inconsistent" },
};

const char *umlmem_strerror(int err)
{
	const char *s;

	/* positive, or too negative to negate: no errno */
	if (err > 0 || err == INT_MIN)
		return "not an umlmem return code";
	for (size_t i = 0; i < sizeof(errtab) / sizeof(errtab[0]); i++)
		if (errtab[i].err == -err)
			return errtab[i].text;
	s = strerrordesc_np(-err);
	return s ? s : "unknown error";
}

static void host_config_defaults(struct umlmem_host_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->swap_files = 1;
	cfg->io = UMLMEM_IO_AUTO;
}

int umlmem_host_config_init_sized(struct umlmem_host_config *cfg, size_t size)
{
	struct umlmem_host_config d;

	clearerr_tls();
	if (!cfg)
		return seterr(-EINVAL, "umlmem_host_config_init: cfg is NULL");
	if (size < ABI_HOST_CONFIG_SIZE_0_1)
		return seterr(-EINVAL, "struct umlmem_host_config: size %zu is below %u, the size "
			      "of its first release: pass sizeof(struct umlmem_host_config)",
			      size, ABI_HOST_CONFIG_SIZE_0_1);
	host_config_defaults(&d);
	abi_copy_out(cfg, size, &d, sizeof(d));
	return 0;
}

#define HOST_FLAGS (UMLMEM_BACKGROUND | UMLMEM_NO_READAHEAD | UMLMEM_DEDUP_ZERO_ONLY | \
		    UMLMEM_SWAP_ENCRYPT)
#define MAX_RECLAIM_BATCH 4096u
#ifndef UMLMEM_COMPRESS_AUTO_ON
#define UMLMEM_COMPRESS_AUTO_ON 0
#endif

/* Whether the host gets a compressed pool: AUTO is what measured best on
   this project's benchmark (README, "The memory hierarchy"). Off: on real
   content (host binaries, 4x the budget) the pool, its split between
   frames and pool adapted to measured costs, came out at 0.81-1.02 of
   compress off on one thread reading at random, and below it with 8
   threads (0.77-0.88) and in page order (0.53-0.91), in runs where each
   workload alternated between the sides. It cuts disk reads, but every
   fault then also pays a compression of the page it evicts and the
   decompression of the one it loads, and the frames the pool takes raise
   the faults per read; on a machine whose CPUs are as contended as its
   disk those cost what the disk reads saved. */
static bool compress_on(const struct umlmem_host_config *c)
{
	return c->compress == UMLMEM_COMPRESS_LZ4 || c->compress == UMLMEM_COMPRESS_ZSTD ||
	       (c->compress == UMLMEM_COMPRESS_AUTO && UMLMEM_COMPRESS_AUTO_ON);
}

static int check_config(const struct umlmem_host_config *c)
{
	long pages = sysconf(_SC_PHYS_PAGES);
	uint64_t phys = pages > 0 ? (uint64_t)pages * PAGE_SIZE : UINT64_MAX;

	if (c->resident_bytes < PAGE_SIZE)
		return seterr(-EINVAL, "resident_bytes %llu is below one page (%u bytes): "
			      "set the budget to at least one page",
			      (unsigned long long)c->resident_bytes, PAGE_SIZE);
	if (c->resident_bytes > phys)
		return seterr(-EINVAL, "resident_bytes %llu exceeds this machine's physical "
			      "memory (%llu bytes): a budget must fit in RAM",
			      (unsigned long long)c->resident_bytes, (unsigned long long)phys);
	if (c->resident_bytes / PAGE_SIZE > UINT32_MAX)
		return seterr(-EINVAL, "resident_bytes %llu is above 16 TiB, the most one host holds",
			      (unsigned long long)c->resident_bytes);
	if (c->swap_bytes && c->swap_bytes < PAGE_SIZE)
		return seterr(-EINVAL, "swap_bytes %llu is below one page: use 0 for unlimited "
			      "or at least %u", (unsigned long long)c->swap_bytes, PAGE_SIZE);
	if (c->swap_files > SWAP_MAX_FILES)
		return seterr(-EINVAL, "swap_files %u is above the limit of %u",
			      c->swap_files, SWAP_MAX_FILES);
	if ((unsigned)c->io > UMLMEM_IO_SYNC)
		return seterr(-EINVAL, "io engine %d is not one of UMLMEM_IO_AUTO, _URING, _AIO, _SYNC",
			      (int)c->io);
	if (c->flags & ~(HOST_FLAGS | (c->swap_uri ? UMLMEM_SWAP_ENCRYPT : 0u)))
		return seterr(-EINVAL, "unknown host flags 0x%x", c->flags & ~HOST_FLAGS);
	if (c->reclaim_high && c->reclaim_high < c->reclaim_low)
		return seterr(-EINVAL, "reclaim_high %llu is below reclaim_low %llu",
			      (unsigned long long)c->reclaim_high,
			      (unsigned long long)c->reclaim_low);
	if (c->reclaim_low >= c->resident_bytes / PAGE_SIZE ||
	    c->reclaim_high >= c->resident_bytes / PAGE_SIZE)
		return seterr(-EINVAL, "reclaim_low/high (%llu/%llu) must be below the budget's "
			      "%llu frames", (unsigned long long)c->reclaim_low,
			      (unsigned long long)c->reclaim_high,
			      (unsigned long long)(c->resident_bytes / PAGE_SIZE));
	if ((unsigned)c->compress > UMLMEM_COMPRESS_ZSTD)
		return seterr(-EINVAL, "compress %d is not one of UMLMEM_COMPRESS_AUTO, _OFF, _LZ4, "
			      "_ZSTD", (int)c->compress);
	if (c->compress_pool_bytes > c->resident_bytes)
		return seterr(-EINVAL, "compress_pool_bytes %llu exceeds the budget (resident_bytes "
			      "%llu): the pool is part of the budget",
			      (unsigned long long)c->compress_pool_bytes,
			      (unsigned long long)c->resident_bytes);
	if (c->swap_uri && !*c->swap_uri)
		return seterr(-EINVAL, "swap_uri is empty: give an NBD URI (nbd://host:port/export, "
			      "nbd+unix:///export?socket=PATH) or NULL to swap to files in swap_dir");
	if (c->reclaim_batch > MAX_RECLAIM_BATCH)
		return seterr(-EINVAL, "reclaim_batch %u is above the limit of %u",
			      c->reclaim_batch, MAX_RECLAIM_BATCH);
	return 0;
}

/*
 * Swap on the NBD export cfg->swap_uri: a remote swap set (no files) and
 * the NBD engine, which bounds the set by the export's size and trims the
 * clusters the set frees. Every page that leaves the process for the
 * export is encrypted (UMLMEM_SWAP_ENCRYPT is implied). The URI is kept in
 * the engine; h->cfg.swap_uri points at that copy.
 */
static int host_open_nbd(struct umlmem_host *h, const struct umlmem_host_config *cfg)
{
	char err[512];
	int rc;

	err[0] = '\0';
	rc = swap_open_remote(&h->swap, h->cfg.swap_files, cfg->swap_bytes, err, sizeof(err));
	if (rc)
		return seterr(rc, "%s", err[0] ? err : "cannot create the swap set");
	rc = io_engine_create_uri(cfg->swap_uri, h->swap, &h->io, h->io_why, sizeof(h->io_why));
	if (rc)
		return seterr(rc, "swap_uri: %s", h->io_why[0] ? h->io_why : umlmem_strerror(rc));
	swap_set_discard(h->swap, io_discard, h->io);
	h->cfg.swap_uri = h->io->uri;
	h->cfg.flags |= UMLMEM_SWAP_ENCRYPT;
	return 0;
}

int umlmem_host_create_sized(const struct umlmem_host_config *ucfg, size_t size,
			     umlmem_host **out)
{
	struct umlmem_host_config c;
	const struct umlmem_host_config *cfg = &c;
	struct umlmem_host *h;
	const char *dir;
	char err[512];
	int rc;

	clearerr_tls();
	if (!ucfg || !out)
		return seterr(-EINVAL, "umlmem_host_create: %s is NULL", ucfg ? "host" : "cfg");
	*out = NULL;
	host_config_defaults(&c);
	rc = abi_copy_in(&c, sizeof(c), ucfg, size, ABI_HOST_CONFIG_SIZE_0_1, "umlmem_host_config");
	if (rc)
		return rc;
	rc = check_config(cfg);
	if (rc)
		return rc;

	h = calloc(1, sizeof(*h));
	if (!h)
		return seterr(-ENOMEM, "cannot allocate the host");
	h->store_fd = -1;
	h->self_pidfd = -1;
	h->uffd = -1;
	h->nv_stopfd = -1;
	h->cfg = *cfg;
	h->nframes = cfg->resident_bytes / PAGE_SIZE;
	if (!h->cfg.swap_files)
		h->cfg.swap_files = 1;
	if (!h->cfg.reclaim_batch) {
		/* A batch is cheap to write, but every page in it leaves
		   memory at once: on a small budget a large batch evicts
		   pages the next faults need (replaying real programs' traces
		   at budgets of a few hundred pages showed up to 2.5 times the
		   faults of a batch of 1). */
		uint64_t b = h->nframes / 32;

		h->cfg.reclaim_batch = b < 1 ? 1 : b > 64 ? 64 : (unsigned)b;
	}
	dir = cfg->swap_dir ? cfg->swap_dir : getenv("TMPDIR");
	if (!dir || !*dir)
		dir = "/var/tmp";
	if (strlen(dir) >= sizeof(h->swap_dir)) {
		free(h);
		return seterr(-EINVAL, "swap_dir is longer than %zu bytes", sizeof(h->swap_dir) - 1);
	}
	strcpy(h->swap_dir, dir);
	h->cfg.swap_dir = h->swap_dir;
	{
		/* adaptive: holds are short, a spin is cheaper than a sleep */
		pthread_mutexattr_t ma;

		pthread_mutexattr_init(&ma);
		pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ADAPTIVE_NP);
		pthread_mutex_init(&h->lock, &ma);
		pthread_mutexattr_destroy(&ma);
	}
	pthread_cond_init(&h->cond, NULL);
	pthread_cond_init(&h->yield_cond, NULL);

	rc = frames_init(h);
	if (rc)
		goto fail;
	err[0] = '\0';
	if (cfg->swap_uri)
		rc = host_open_nbd(h, cfg);
	else
		rc = swap_open(&h->swap, h->swap_dir, h->cfg.swap_files, cfg->swap_bytes, err,
			       sizeof(err));
	if (rc) {
		if (!cfg->swap_uri)
			seterr(rc, "%s", err[0] ? err : "cannot create the swap files");
		goto fail;
	}
	/* The store is not registered whole with the engine: that pins every
	   page of the budget at once and forbids giving frames back. It is
	   registered by chunks as frames fill them (frames_register). */
	if (!h->io)
		rc = io_engine_create(cfg->io, h->swap, NULL, 0, &h->io, h->io_why,
				      sizeof(h->io_why));
	if (!rc)
		rc = frames_register(h);
	if (rc) {
		seterr(rc, "I/O engine: %s", h->io_why[0] ? h->io_why : umlmem_strerror(rc));
		goto fail;
	}
	rc = tcache_init(h);
	if (!rc)
		rc = tier_swap_create(h, &h->tier[TIER_SWAP]);
	if (!rc)
		rc = tier_image_create(h, &h->tier[TIER_IMAGE]);
	if (rc)
		goto fail;
	h->tier_out = h->tier[TIER_SWAP];
	if (compress_on(cfg)) {
		rc = zpool_create(h, h->tier[TIER_SWAP], &h->tier[TIER_POOL]);
		if (rc)
			goto fail;
		h->tier_out = h->tier[TIER_POOL];
	}
	rc = dedup_init(h);
	if (!rc)
		rc = pager_start(h);
	if (!rc)
		rc = dedup_start(h);
	if (rc)
		goto fail;
	*out = h;
	return api_done(h, 0);
fail:
	umlmem_host_destroy(h);
	return rc;
}

void umlmem_host_destroy(umlmem_host *h)
{
	if (!h)
		return;
	dedup_stop(h);
	pager_stop(h);
	h->no_punch = true;     /* the whole store goes at once below */
	while (h->guests)
		umlmem_guest_destroy(h->guests);
	native_stop(h);
	tiers_fini(h);
	if (h->io)
		io_engine_destroy(h->io);
	if (h->swap)
		swap_close(h->swap);
	dedup_fini(h);
	rmap_fini(h);
	frames_fini(h);
	pthread_cond_destroy(&h->cond);
	pthread_cond_destroy(&h->yield_cond);
	pthread_mutex_destroy(&h->lock);
	free(h);
}

enum umlmem_io_engine umlmem_host_io_engine(umlmem_host *h, const char **why)
{
	if (!h) {
		if (why)
			*why = "no host";
		return UMLMEM_IO_AUTO;
	}
	if (why)
		*why = h->io_why;
	return h->io->kind;
}

static void add_events(struct umlmem_stats *s, const struct counters *c)
{
#define X(n) s->n = c->n;
	UMLMEM_EVENT_COUNTERS(X)
#undef X
}

int umlmem_host_stats_sized(umlmem_host *h, struct umlmem_stats *out, size_t size)
{
	struct umlmem_stats st = { 0 }, *s = &st;
	struct swap_info si;

	clearerr_tls();
	if (!h || !out)
		return seterr(-EINVAL, "umlmem_host_stats: %s is NULL", h ? "stats" : "host");
	host_lock(h);
	for (struct umlmem_guest *g = h->guests; g; g = g->next) {
		s->resident_pages += g->resident;
		s->swapped_pages += g->swapped;
		s->zero_pages += g->zero;
	}
	s->ram_pages = h->ram_pages;
	s->frames_used = h->nframes - h->nfree - h->ntrim;
	s->shared_frames = h->shared_frames;
	s->sharing_pages = h->sharing_pages;
	add_events(s, &h->ev);
	host_unlock(h);
	/* st_blocks is read outside host->lock: fstat may wait on the disk */
	swap_info(h->swap, &si);
	s->swap_disk_bytes = si.disk_bytes;
	abi_copy_out(out, size, s, sizeof(*s));
	return 0;
}

int umlmem_host_info(umlmem_host *h, struct umlmem_host_info *out, size_t size)
{
	struct umlmem_host_info i = { 0 };
	struct swap_info si;
	struct stat st;

	clearerr_tls();
	if (!h || !out)
		return seterr(-EINVAL, "umlmem_host_info: %s is NULL", h ? "info" : "host");
	host_lock(h);
	i.frames_total = h->nframes;
	i.frames_free = h->nfree + h->ntrim;
	i.frames_cached = h->cached;
	i.frames_busy = h->busy_frames;
	i.readahead_pages = h->ra_pages;
	i.readahead_hits = h->ra_hits;
	i.reclaim_low = h->low;
	i.reclaim_high = h->high;
	i.reclaim_wakeups = h->kwakeups;
	i.engine = h->io->kind;
	i.reclaim_batch = h->cfg.reclaim_batch;
	i.native_guests = h->nv_guests;
	i.native_faults = h->nv_faults;
	i.native_cpu_sampled = h->nv_cpu_sampled;
	i.native_cpu_local = h->nv_cpu_local;
	i.native_maps = h->nv_maps;
	i.native_zaps = h->nv_zaps;
	i.native_flushes = h->nv_flushes;
	i.native_map_limit = native_map_limit();
	i.pages_scanned = h->dd.scanned;
	i.pages_merged = h->dd.merged;
	i.zero_merged = h->dd.zero_merged;
	i.pages_volatile = h->dd.volatile_skips;
	i.pages_unshared = h->dd.unshared;
	i.full_scans = h->dd.full_scans;
	for (uint64_t f = 0; f < h->nmade; f++) {
		if (frame_gone(h, f))
			f |= FRAME_CHUNK - 1;
		else
			i.stable_frames += (h->frames[f].flags & F_STABLE) && h->frames[f].refs > 1;
	}
	i.hash_impl_avx2 = strstr(page_hash_impl(), "avx2") != NULL;
	i.frames_made = h->nmade;
	i.frames_warm = h->nstack - h->npunched;
	i.frames_returned = h->frames_returned;
	i.meta_bytes = sizeof(*h) + frames_meta_bytes(h) + dedup_table_bytes(h) +
		       rmap_table_bytes(h);
	for (struct umlmem_guest *g = h->guests; g; g = g->next)
		i.meta_bytes += g->meta_bytes;
	host_unlock(h);
	/* the store's blocks: the memory its frames really hold */
	if (fstat(h->store_fd, &st) == 0)
		i.store_bytes = (uint64_t)st.st_blocks * 512;
	swap_info(h->swap, &si);
	i.swap_slots_used = si.slots_used;
	i.swap_slots_cap = si.slots_cap;
	i.swap_punches = si.punches;
	if (h->tier[TIER_POOL])
		zpool_info(h->tier[TIER_POOL], &i);
	abi_copy_out(out, size, &i, sizeof(i));
	return 0;
}

int umlmem_guest_stats_sized(umlmem_guest *g, struct umlmem_stats *out, size_t size)
{
	struct umlmem_stats st = { 0 }, *s = &st;

	clearerr_tls();
	if (!g || !out)
		return seterr(-EINVAL, "umlmem_guest_stats: %s is NULL", g ? "stats" : "guest");
	host_lock(g->host);
	s->ram_pages = g->npages;
	s->resident_pages = g->resident;
	s->swapped_pages = g->swapped;
	s->zero_pages = g->zero;
	add_events(s, &g->ev);
	s->io_errors = 0;
	s->checksum_errors = 0;
	host_unlock(g->host);
	abi_copy_out(out, size, s, sizeof(*s));
	return 0;
}

int cond_init_monotonic(pthread_cond_t *c)
{
	pthread_condattr_t a;
	int rc;

	if (pthread_condattr_init(&a))
		return -ENOMEM;
	pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
	rc = pthread_cond_init(c, &a);
	pthread_condattr_destroy(&a);
	return -rc;
}

void cond_deadline(struct timespec *ts, uint64_t ns)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ns += (uint64_t)ts->tv_nsec;
	ts->tv_sec += (time_t)(ns / 1000000000u);
	ts->tv_nsec = (long)(ns % 1000000000u);
}
