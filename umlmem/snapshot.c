/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * snapshot.c: saving a guest to an image, restoring guests from one, and
 * the working-set record and prefetch that make a restore start warm.
 *
 * Save. The image must be the guest at one instant while the guest keeps
 * running, and writing it takes as long as the disk does. So save clones
 * the guest (umlmem_guest_clone: every page shared copy-on-write, nothing
 * copied), writes the clone, which nobody else can change, and destroys
 * it: the guest's writes meanwhile only break sharing with the clone. The
 * clone is read through the library's own read path, so pages in swap or
 * in the pool come back verified, and the writer can read a page again to
 * confirm that two pages equal by hash are equal by bytes (image.c).
 *
 * Restore. The image becomes part of the host's image tier (tier_image.c)
 * and each page the map names becomes a page table entry naming the
 * record's store key, as if the page had been evicted there: no data is
 * read until a page is touched, and everything the core does for stored
 * pages (swap cache, readahead, sharing between every guest restored from
 * one image) applies unchanged.
 *
 * Working set (REAP, ASPLOS 2021). A restored guest that runs touches
 * pages in an order its next restore will likely repeat; each touch is
 * then a fault and a read of its own. umlmem_guest_record() has the fault
 * path note each page loaded from a tier (guest_record_load()), in order,
 * up to a count (the caller stops it after a time); umlmem_guest_prefetch()
 * loads a list of pages sorted by their store key, i.e. in the image
 * file's order, in batches that the image tier reads with one preadv per
 * run of adjacent records, and maps them before the guest runs. The record
 * is a plain list of page addresses the caller keeps where it likes (next
 * to the image, in its own format): the library adds no second file format.
 *
 * Locking: host->lock for the page tables and the record (struct
 * umlmem_guest), as everywhere; loads run with it dropped, their frames
 * F_BUSY in the swap cache.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "internal.h"
#include "image.h"

/* ---- save ------------------------------------------------------------------- */

struct save_ctx {
	uint64_t *idx;       /* pages that are not ZERO, ascending */
	uint64_t n, cap;
};

static int collect(struct umlmem_guest *g, uint64_t idx, pte_t *e, void *arg)
{
	struct save_ctx *c = arg;

	(void)g;
	(void)e;
	if (c->n == c->cap) {
		uint64_t cap = c->cap ? 2 * c->cap : 1024;
		uint64_t *n = realloc(c->idx, cap * sizeof(*n));

		if (!n)
			return -ENOMEM;
		c->idx = n;
		c->cap = cap;
	}
	c->idx[c->n++] = idx;
	return 0;
}

static int read_page(void *arg, uint64_t idx, void *buf)
{
	struct umlmem_guest *g = arg;
	uint64_t off = idx << PAGE_SHIFT;
	size_t len = g->ram_bytes - off < PAGE_SIZE ? (size_t)(g->ram_bytes - off) : PAGE_SIZE;

	memset(buf, 0, PAGE_SIZE);
	return umlmem_read(g, off, buf, len);
}

/* Writes @g, which nobody changes meanwhile (a clone), to @fd at @base. */
static int save_guest(struct umlmem_guest *g, int fd, uint64_t base)
{
	struct umlmem_host *h = g->host;
	struct save_ctx c = { 0 };
	struct image_writer *w = NULL;
	uint8_t *page = aligned_alloc(PAGE_SIZE, PAGE_SIZE);
	char msg[256];
	int rc;

	if (!page)
		return seterr(-ENOMEM, "umlmem_guest_save: no memory for a page");
	host_lock(h);
	rc = pt_walk(g, collect, &c);
	host_unlock(h);
	if (rc) {
		rc = seterr(rc, "umlmem_guest_save: no memory for the list of %llu pages",
			    (unsigned long long)c.n);
		goto out;
	}
	rc = image_writer_create(fd, base, g->ram_bytes, read_page, g, &w, msg, sizeof(msg));
	for (uint64_t i = 0; !rc && i < c.n; i++) {
		rc = read_page(g, c.idx[i], page);
		if (rc) {
			snprintf(msg, sizeof(msg), "reading page %llu of guest '%s' failed: %s",
				 (unsigned long long)c.idx[i], g->name, umlmem_errmsg());
			break;
		}
		rc = image_writer_add(w, c.idx[i], page, msg, sizeof(msg));
	}
	if (!rc)
		rc = image_writer_finish(w, msg, sizeof(msg));
	if (rc)
		rc = seterr(rc, "umlmem_guest_save: %s", msg);
out:
	image_writer_free(w);
	free(c.idx);
	free(page);
	return rc;
}

int umlmem_guest_save(umlmem_guest *g, int fd)
{
	struct umlmem_guest *snap;
	struct stat st;
	off_t base;
	int fl, rc;

	clearerr_tls();
	if (!g)
		return seterr(-EINVAL, "umlmem_guest_save: guest is NULL");
	if (fstat(fd, &st))
		return seterr(-errno, "umlmem_guest_save: fd %d: %s", fd, umlmem_strerror(-errno));
	if (!S_ISREG(st.st_mode))
		return seterr(-EINVAL, "umlmem_guest_save: fd %d is not a regular file", fd);
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || (fl & O_ACCMODE) == O_RDONLY)
		return seterr(-EBADF, "umlmem_guest_save: fd %d is not open for writing", fd);
	base = lseek(fd, 0, SEEK_CUR);
	if (base < 0)
		return seterr(-errno, "umlmem_guest_save: fd %d: %s", fd, umlmem_strerror(-errno));
	/* the instant: a clone nobody else sees, so nobody changes it */
	rc = umlmem_guest_clone(g, NULL, &snap);
	if (rc)
		return api_done(g->host, seterr(rc, "umlmem_guest_save: cannot take a clone of "
						 "guest '%s': %s", g->name, umlmem_errmsg()));
	rc = save_guest(snap, fd, (uint64_t)base);
	if (rc) {
		char msg[512];

		/* keep the reason across the clone's destroy */
		snprintf(msg, sizeof(msg), "%s", umlmem_errmsg());
		umlmem_guest_destroy(snap);
		return api_done(g->host, seterr(rc, "%s", msg));
	}
	umlmem_guest_destroy(snap);
	return api_done(g->host, 0);
}

/* ---- restore ----------------------------------------------------------------- */

/* Drops the references tier_image_open() took for map entries [from, nmap). */
static void drop_refs(struct umlmem_host *h, const struct image_desc *d, uint64_t img,
		      uint64_t from)
{
	host_lock(h);
	for (uint64_t i = from; i < d->hdr.nmap; i++)
		tier_unref(h, tkey(TIER_IMAGE, tier_image_handle(img, d->map[i].rec)), 1);
	host_unlock(h);
}

/* The restored guest is built unlinked, so that filling its page table
   needs no lock and blocks no fault of other guests; it becomes visible in
   one step (guest_link). From tier_image_open(), which takes the entries'
   references, to that link, the image's references outnumber the entries
   that hold them: host->restoring says so to host_check, which leaves the
   reference counts alone meanwhile. */
int umlmem_guest_restore_sized(umlmem_host *h, int fd, const struct umlmem_guest_config *ucfg,
			       size_t size, umlmem_guest **out)
{
	struct umlmem_guest_config c = { 0 };
	struct image_desc d;
	struct umlmem_guest *g;
	uint64_t img, i;
	int rc;

	clearerr_tls();
	if (!h || !out)
		return seterr(-EINVAL, "umlmem_guest_restore: %s is NULL", !h ? "host" : "guest");
	*out = NULL;
	if (ucfg) {
		rc = abi_copy_in(&c, sizeof(c), ucfg, size, ABI_GUEST_CONFIG_SIZE_0_1,
				 "umlmem_guest_config");
		if (rc)
			return rc;
	}
	host_lock(h);
	h->restoring++;
	host_unlock(h);
	rc = tier_image_open(h->tier[TIER_IMAGE], fd, &d, &img);
	if (rc)
		goto out;
	if (c.ram_bytes && c.ram_bytes != d.hdr.guest_bytes) {
		rc = seterr(-EINVAL, "umlmem_guest_restore: ram_bytes %llu differs from the "
			    "image's guest size %llu: pass 0 or that size",
			    (unsigned long long)c.ram_bytes, (unsigned long long)d.hdr.guest_bytes);
		goto drop;
	}
	c.ram_bytes = d.hdr.guest_bytes;
	if (!c.name)
		c.name = "restored";
	rc = guest_alloc(h, &c, &g);
	if (rc)
		goto drop;
	for (i = 0; i < d.hdr.nmap; i++) {
		pte_t *e = pte_alloc(g, d.map[i].page);

		if (!e) {
			guest_free(g);
			rc = seterr(-ENOMEM, "umlmem_guest_restore: no memory for the page "
				    "table of %llu pages", (unsigned long long)d.hdr.nmap);
			goto drop;
		}
		/* the entry takes the reference the tier gave it */
		pte_set(g, e, PTE_MK(PTE_STORED,
				     tkey(TIER_IMAGE, tier_image_handle(img, d.map[i].rec))));
		g->zero--;
		g->swapped++;
	}
	host_lock(h);
	guest_link(g);
	h->restoring--;
	host_unlock(h);
	image_desc_free(&d);
	*out = g;
	return api_done(h, 0);
drop:
	drop_refs(h, &d, img, 0);
	image_desc_free(&d);
out:
	host_lock(h);
	h->restoring--;
	host_unlock(h);
	return api_done(h, rc);
}

/* ---- working set ------------------------------------------------------------------ */

void guest_record_load(struct umlmem_guest *g, uint64_t idx)
{
	if (g->rec_n < g->rec_max)
		g->rec[g->rec_n++] = idx;
	if (g->rec_n == g->rec_max)
		g->rec_on = false;
}

int umlmem_guest_record(umlmem_guest *g, uint64_t max_pages)
{
	struct umlmem_host *h;
	uint64_t *rec = NULL;

	clearerr_tls();
	if (!g)
		return seterr(-EINVAL, "umlmem_guest_record: guest is NULL");
	h = g->host;
	if (max_pages) {
		if (max_pages > g->npages)
			max_pages = g->npages;
		rec = malloc(max_pages * sizeof(*rec));
		if (!rec)
			return seterr(-ENOMEM, "umlmem_guest_record: no memory for a record of "
				      "%llu pages", (unsigned long long)max_pages);
	}
	host_lock(h);
	if (max_pages) {
		free(g->rec);
		g->rec = rec;
		g->rec_n = 0;
		g->rec_max = max_pages;
	}
	g->rec_on = max_pages != 0;
	host_unlock(h);
	return api_done(h, 0);
}

int umlmem_guest_record_get(umlmem_guest *g, uint64_t *gpas, uint64_t max, uint64_t *n)
{
	struct umlmem_host *h;
	uint64_t *seen = NULL, ns = 0, got = 0;

	clearerr_tls();
	if (!g || (!gpas && max))
		return seterr(-EINVAL, "umlmem_guest_record_get: %s is NULL", !g ? "guest" : "gpas");
	h = g->host;
	host_lock(h);
	/* a page evicted and loaded again is in the record twice: keep its
	   first place (sorted copy to look it up) */
	if (g->rec_n)
		seen = malloc(g->rec_n * sizeof(*seen));
	if (g->rec_n && !seen) {
		host_unlock(h);
		return seterr(-ENOMEM, "umlmem_guest_record_get: no memory");
	}
	for (uint64_t i = 0; i < g->rec_n; i++) {
		uint64_t idx = g->rec[i];
		bool dup = false;

		/* seen[0 .. ns) sorted: binary search, then insert */
		uint64_t lo = 0, hi = ns;

		while (lo < hi) {
			uint64_t mid = (lo + hi) / 2;

			if (seen[mid] < idx)
				lo = mid + 1;
			else
				hi = mid;
		}
		dup = lo < ns && seen[lo] == idx;
		if (dup)
			continue;
		memmove(seen + lo + 1, seen + lo, (ns - lo) * sizeof(*seen));
		seen[lo] = idx;
		ns++;
		if (got < max)
			gpas[got] = idx << PAGE_SHIFT;
		got++;
	}
	host_unlock(h);
	free(seen);
	if (n)
		*n = got;
	return 0;
}

struct pf_page {
	uint64_t key, idx;
};

static int cmp_pf(const void *a, const void *b)
{
	const struct pf_page *x = a, *y = b;

	if (x->key != y->key)
		return x->key < y->key ? -1 : 1;
	return x->idx < y->idx ? -1 : x->idx > y->idx;
}

#define PF_BATCH (RA_MAX + 1)

/* Loads the keys of pf[0 .. n) (sorted, one tier) into fresh frames,
   cached as readahead is, then maps each page. Caller holds host->lock. */
static int prefetch_batch(struct umlmem_guest *g, const struct pf_page *pf, unsigned n,
			  uint64_t *loaded, bool *full)
{
	struct umlmem_host *h = g->host;
	struct ra_page ra[PF_BATCH];
	uint64_t keys[PF_BATCH];
	void *bufs[PF_BATCH];
	int res[PF_BATCH], rc = 0;
	unsigned got = 0;

	for (unsigned i = 0; i < n; i++) {
		pte_t *e = pte_find(g, pf[i].idx);
		uint64_t f;

		/* still stored under that key, and its key not in a frame yet */
		if (!e || *e != PTE_MK(PTE_STORED, pf[i].key) || tcache_get(h, pf[i].key) ||
		    (got && ra[got - 1].key == pf[i].key))
			continue;
		if (frame_take(h, &f)) {
			*full = true;
			break;
		}
		h->frames[f].flags = F_BUSY;
		h->busy_frames++;
		tier_ref(h, pf[i].key, 1);
		frame_set_slot(h, f, pf[i].key);
		h->cached++;
		ra[got] = (struct ra_page){ f, pf[i].key };
		keys[got] = pf[i].key;
		bufs[got] = frame_addr(h, f);
		got++;
	}
	if (!got)
		return 0;
	host_unlock(h);
	tier_load(h, keys, bufs, got, res);
	host_lock(h);
	for (unsigned i = 0; i < got; i++) {
		if (res[i]) {
			int r = pager_count_read(h, g, keys[i], res[i]);

			if (!rc)
				rc = r;
		} else {
			(*loaded)++;
		}
		readahead_finish(h, &ra[i], res[i]);
	}
	pthread_cond_broadcast(&h->cond);
	/* map each page whose key is now in a frame: no I/O */
	for (unsigned i = 0; i < n; i++) {
		pte_t *e = pte_find(g, pf[i].idx);
		uint64_t f;

		if (e && *e == PTE_MK(PTE_STORED, pf[i].key) && tcache_get(h, pf[i].key))
			page_fault(g, pf[i].idx, false, false, &f);
	}
	return rc;
}

int umlmem_guest_prefetch(umlmem_guest *g, const uint64_t *gpas, uint64_t n, uint64_t *loaded)
{
	struct umlmem_host *h;
	struct pf_page *pf;
	uint64_t np = 0, done = 0;
	bool full = false;
	int rc = 0;

	clearerr_tls();
	if (loaded)
		*loaded = 0;
	if (!g || (!gpas && n))
		return seterr(-EINVAL, "umlmem_guest_prefetch: %s is NULL", !g ? "guest" : "gpas");
	for (uint64_t i = 0; i < n; i++) {
		if (gpas[i] % PAGE_SIZE)
			return seterr(-EINVAL, "umlmem_guest_prefetch: address %llu (entry %llu) is "
				      "not page-aligned", (unsigned long long)gpas[i],
				      (unsigned long long)i);
		if (gpas[i] >= g->ram_bytes)
			return seterr(-EFAULT, "umlmem_guest_prefetch: address %llu (entry %llu) "
				      "lies outside guest '%s' of %llu bytes",
				      (unsigned long long)gpas[i], (unsigned long long)i, g->name,
				      (unsigned long long)g->ram_bytes);
	}
	h = g->host;
	pf = malloc((n ? n : 1) * sizeof(*pf));
	if (!pf)
		return seterr(-ENOMEM, "umlmem_guest_prefetch: no memory for %llu pages",
			      (unsigned long long)n);
	host_lock(h);
	for (uint64_t i = 0; i < n; i++) {
		pte_t *e = pte_find(g, gpas[i] >> PAGE_SHIFT);

		if (e && PTE_TYPE(*e) == PTE_STORED)
			pf[np++] = (struct pf_page){ PTE_VAL(*e), gpas[i] >> PAGE_SHIFT };
	}
	/* the order of the tiers: adjacent records are read together */
	qsort(pf, np, sizeof(*pf), cmp_pf);
	for (uint64_t i = 0, j; i < np && !full; i = j) {
		int r;

		for (j = i + 1; j < np && j - i < PF_BATCH && tkey_tier(pf[j].key) ==
		     tkey_tier(pf[i].key); j++)
			;
		r = prefetch_batch(g, pf + i, (unsigned)(j - i), &done, &full);
		if (r && !rc)
			rc = r;
	}
	host_unlock(h);
	free(pf);
	if (loaded)
		*loaded = done;
	return api_done(h, rc);
}
