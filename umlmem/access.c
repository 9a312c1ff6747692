/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * access.c: the copy, pin and discard calls, and the fault path they share.
 *
 * Every access works one page at a time under host->lock: look up the
 * entry, fault the page in if the access needs a frame, copy, release the
 * lock. Taking the lock per page rather than per call keeps one long copy
 * from starving other guests, and costs one uncontended lock pair per page.
 *
 * What needs a frame:
 *  - a write: always (a ZERO page gets a cleared frame, unless the write
 *    covers the whole page; a SLOT page is read in, unless the write covers
 *    the whole page, when its swap copy is simply dropped);
 *  - a pin: always, read or write (the caller gets a pointer);
 *  - a read: only of a SLOT page; a ZERO page reads as zeros with no frame.
 *    When no frame can be had (all pinned, swap full and nothing clean to
 *    drop, write-out failing) a read of a SLOT page still succeeds through a
 *    page on the stack: a full swap never makes data unreadable.
 *
 * A write or a write pin drops the page's clean swap copy (frame->slot):
 * from then on the frame is the only copy and the pager must write it out.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* ---- reverse map --------------------------------------------------------- */

static void rmap_add(struct umlmem_host *h, uint64_t f, struct umlmem_guest *g, uint64_t idx)
{
	struct frame *fr = &h->frames[f];

	/* Only the first mapper exists in this version; shared frames (refs > 1)
	   keep the others in fr->more, added by the merge scanner. */
	fr->g = g;
	fr->idx = idx;
	fr->refs = 1;
}

/* Removes mapper (g, idx) of frame @f. */
static void rmap_del(struct umlmem_host *h, uint64_t f, struct umlmem_guest *g, uint64_t idx)
{
	struct frame *fr = &h->frames[f];
	uint32_t n = fr->refs - 1;   /* entries in more[] */

	if (fr->g == g && fr->idx == idx) {
		if (n) {
			fr->g = fr->more[n - 1].g;
			fr->idx = fr->more[n - 1].idx;
		}
	} else {
		for (uint32_t i = 0; i < n; i++)
			if (fr->more[i].g == g && fr->more[i].idx == idx) {
				fr->more[i] = fr->more[n - 1];
				break;
			}
	}
	fr->refs--;
}

/* ---- checks ---------------------------------------------------------------- */

static int check_range(struct umlmem_guest *g, uint64_t gpa, uint64_t len, const char *fn)
{
	if (len > g->ram_bytes || gpa > g->ram_bytes - len)
		return seterr(-EFAULT, "%s: [0x%llx, +%llu) is outside guest '%s' of %llu bytes",
			      fn, (unsigned long long)gpa, (unsigned long long)len, g->name,
			      (unsigned long long)g->ram_bytes);
	return 0;
}

static int check_page(struct umlmem_guest *g, uint64_t gpa, const char *fn)
{
	if (!g)
		return seterr(-EINVAL, "%s: guest is NULL", fn);
	if (gpa & (PAGE_SIZE - 1))
		return seterr(-EINVAL, "%s: gpa 0x%llx is not page-aligned", fn,
			      (unsigned long long)gpa);
	if (gpa >= g->ram_bytes)
		return seterr(-EFAULT, "%s: gpa 0x%llx is outside guest '%s' of %llu bytes", fn,
			      (unsigned long long)gpa, g->name, (unsigned long long)g->ram_bytes);
	return 0;
}

/* ---- the fault path -------------------------------------------------------- */

static void count_fault(struct umlmem_guest *g)
{
	g->ev.faults++;
	g->host->ev.faults++;
}

/* page_fault(), telling in *nofr whether it failed for want of a frame (the
   page itself is fine) rather than because its swap copy could not be read. */
static int fault(struct umlmem_guest *g, uint64_t idx, bool for_write, bool whole,
		 uint64_t *out, bool *nofr)
{
	struct umlmem_host *h = g->host;
	pte_t *e = pte_alloc(g, idx);
	uint64_t f, s;
	int rc;

	if (!e)
		return seterr(-ENOMEM, "cannot allocate page table for guest '%s'", g->name);
	switch (PTE_TYPE(*e)) {
	case PTE_FRAME:
		f = PTE_VAL(*e);
		h->frames[f].flags |= F_REF;
		if (for_write)
			frame_drop_slot(h, f);
		*out = f;
		return 0;
	case PTE_ZERO:
		rc = frame_get(h, !whole, &f);
		if (rc) {
			*nofr = true;
			return rc;
		}
		g->zero--;
		break;
	case PTE_SLOT:
		s = PTE_VAL(*e);
		rc = frame_get(h, false, &f);
		if (rc) {
			*nofr = true;
			return rc;
		}
		if (for_write && whole) {
			/* Every byte is about to be overwritten: no read. */
			swap_unref(h->swap, s, 1);
		} else {
			rc = pager_read_slot(h, g, s, frame_addr(h, f));
			if (rc) {
				frame_put(h, f);
				return rc;
			}
			/* The entry's reference on the slot becomes the frame's:
			   the page is clean until written. */
			h->frames[f].slot = s;
			if (for_write)
				frame_drop_slot(h, f);
		}
		g->swapped--;
		break;
	default:
		return seterr(-EUCLEAN, "page %llu of guest '%s' has an I/O in flight",
			      (unsigned long long)idx, g->name);
	}
	rmap_add(h, f, g, idx);
	*e = PTE_MK(PTE_FRAME, f);
	g->resident++;
	count_fault(g);
	*out = f;
	return 0;
}

int page_fault(struct umlmem_guest *g, uint64_t idx, bool for_write, bool whole, uint64_t *out)
{
	bool nofr = false;

	return fault(g, idx, for_write, whole, out, &nofr);
}

void page_zap(struct umlmem_guest *g, uint64_t idx, pte_t *e)
{
	struct umlmem_host *h = g->host;
	uint64_t f;

	switch (PTE_TYPE(*e)) {
	case PTE_FRAME:
		f = PTE_VAL(*e);
		rmap_del(h, f, g, idx);
		if (!h->frames[f].refs) {
			frame_drop_slot(h, f);
			frame_put(h, f);
		}
		g->resident--;
		break;
	case PTE_SLOT:
		swap_unref(h->swap, PTE_VAL(*e), 1);
		g->swapped--;
		break;
	default:
		return;
	}
	g->zero++;
	*e = PTE_ZERO;
}

/* Unmaps frame @f from every mapper, pointing them at @to (PTE_SLOT or
   PTE_ZERO), and frees the frame. Used by the pager. */
void frame_unmap_all(struct umlmem_host *h, uint64_t f, pte_t to)
{
	struct frame *fr = &h->frames[f];

	while (fr->refs) {
		struct umlmem_guest *g = fr->g;
		uint64_t idx = fr->idx;
		pte_t *e = pte_find(g, idx);

		*e = to;
		g->resident--;
		if (PTE_TYPE(to) == PTE_SLOT)
			g->swapped++;
		else
			g->zero++;
		rmap_del(h, f, g, idx);
	}
	frame_put(h, f);
}

/* ---- copy access ----------------------------------------------------------- */

/* A read of a page in swap when no frame can be had: through a stack page. */
static int read_through(struct umlmem_guest *g, uint64_t s, uint32_t off, void *dst, size_t n)
{
	_Alignas(4096) uint8_t page[PAGE_SIZE];
	int rc = pager_read_slot(g->host, g, s, page);

	if (!rc)
		memcpy(dst, page + off, n);
	return rc;
}

int umlmem_read(umlmem_guest *g, uint64_t gpa, void *buf, size_t len)
{
	struct umlmem_host *h;
	uint8_t *dst = buf;
	int rc;

	clearerr_tls();
	if (!g || (!buf && len))
		return seterr(-EINVAL, "umlmem_read: %s is NULL", g ? "buf" : "guest");
	rc = check_range(g, gpa, len, "umlmem_read");
	if (rc)
		return rc;
	h = g->host;
	while (len) {
		uint64_t idx = gpa >> PAGE_SHIFT, f;
		uint32_t off = gpa & (PAGE_SIZE - 1);
		size_t n = PAGE_SIZE - off < len ? PAGE_SIZE - off : len;
		pte_t *e, pte;

		pthread_mutex_lock(&h->lock);
		e = pte_find(g, idx);
		pte = e ? *e : PTE_ZERO;
		switch (PTE_TYPE(pte)) {
		case PTE_ZERO:
			memset(dst, 0, n);
			break;
		case PTE_FRAME:
			f = PTE_VAL(pte);
			h->frames[f].flags |= F_REF;
			memcpy(dst, (uint8_t *)frame_addr(h, f) + off, n);
			break;
		default: {
			bool nofr = false;

			rc = fault(g, idx, false, false, &f, &nofr);
			if (!rc)
				memcpy(dst, (uint8_t *)frame_addr(h, f) + off, n);
			else if (nofr)
				rc = read_through(g, PTE_VAL(*e), off, dst, n);
			break;
		}
		}
		pthread_mutex_unlock(&h->lock);
		if (rc)
			return rc;
		dst += n;
		gpa += n;
		len -= n;
	}
	return 0;
}

int umlmem_write(umlmem_guest *g, uint64_t gpa, const void *buf, size_t len)
{
	struct umlmem_host *h;
	const uint8_t *src = buf;
	int rc;

	clearerr_tls();
	if (!g || (!buf && len))
		return seterr(-EINVAL, "umlmem_write: %s is NULL", g ? "buf" : "guest");
	rc = check_range(g, gpa, len, "umlmem_write");
	if (rc)
		return rc;
	h = g->host;
	while (len) {
		uint64_t idx = gpa >> PAGE_SHIFT, f;
		uint32_t off = gpa & (PAGE_SIZE - 1);
		size_t n = PAGE_SIZE - off < len ? PAGE_SIZE - off : len;

		pthread_mutex_lock(&h->lock);
		rc = page_fault(g, idx, true, n == PAGE_SIZE, &f);
		if (!rc)
			memcpy((uint8_t *)frame_addr(h, f) + off, src, n);
		pthread_mutex_unlock(&h->lock);
		if (rc)
			return rc;
		src += n;
		gpa += n;
		len -= n;
	}
	return 0;
}

/* ---- pins ------------------------------------------------------------------ */

#define MAX_PINS INT32_MAX

int umlmem_pin(umlmem_guest *g, uint64_t gpa, unsigned access, void **page)
{
	struct umlmem_host *h;
	uint64_t f;
	int rc;

	clearerr_tls();
	rc = check_page(g, gpa, "umlmem_pin");
	if (rc)
		return rc;
	if (!page)
		return seterr(-EINVAL, "umlmem_pin: page is NULL");
	if (!access || (access & ~(UMLMEM_READ | UMLMEM_WRITE)))
		return seterr(-EINVAL, "umlmem_pin: access 0x%x is not UMLMEM_READ, "
			      "UMLMEM_WRITE or both", access);
	h = g->host;
	pthread_mutex_lock(&h->lock);
	rc = page_fault(g, gpa >> PAGE_SHIFT, access & UMLMEM_WRITE, false, &f);
	if (!rc && h->frames[f].pins >= MAX_PINS)
		rc = seterr(-EOVERFLOW, "umlmem_pin: page 0x%llx already holds %u pins",
			    (unsigned long long)gpa, MAX_PINS);
	if (!rc) {
		h->frames[f].pins++;
		*page = frame_addr(h, f);
	}
	pthread_mutex_unlock(&h->lock);
	return rc;
}

int umlmem_unpin(umlmem_guest *g, uint64_t gpa)
{
	struct umlmem_host *h;
	pte_t *e;
	int rc;

	clearerr_tls();
	rc = check_page(g, gpa, "umlmem_unpin");
	if (rc)
		return rc;
	h = g->host;
	pthread_mutex_lock(&h->lock);
	e = pte_find(g, gpa >> PAGE_SHIFT);
	if (e && PTE_TYPE(*e) == PTE_FRAME && h->frames[PTE_VAL(*e)].pins)
		h->frames[PTE_VAL(*e)].pins--;
	else
		rc = seterr(-EINVAL, "umlmem_unpin: page 0x%llx of guest '%s' is not pinned",
			    (unsigned long long)gpa, g->name);
	pthread_mutex_unlock(&h->lock);
	return rc;
}

/* ---- discard --------------------------------------------------------------- */

/* Calls @fn on each allocated, non-ZERO entry of pages [a, b), skipping
   unallocated parts of the tree whole. Stops at the first nonzero return. */
static int range_walk(struct umlmem_guest *g, uint64_t a, uint64_t b,
		      int (*fn)(struct umlmem_guest *, uint64_t, pte_t *))
{
	const unsigned top_shift = PT_LEAF_BITS + PT_DIR_BITS;

	while (a < b) {
		pte_t **dir = g->top[a >> top_shift];
		pte_t *leaf;
		uint64_t end;
		int rc;

		if (!dir) {
			a = ((a >> top_shift) + 1) << top_shift;
			continue;
		}
		leaf = dir[(a >> PT_LEAF_BITS) & (PT_DIR_N - 1)];
		end = ((a >> PT_LEAF_BITS) + 1) << PT_LEAF_BITS;
		if (end > b)
			end = b;
		for (; leaf && a < end; a++) {
			pte_t *e = &leaf[a & (PT_LEAF_N - 1)];

			if (*e != PTE_ZERO && (rc = fn(g, a, e)))
				return rc;
		}
		a = end;
	}
	return 0;
}

static int is_pinned(struct umlmem_guest *g, uint64_t idx, pte_t *e)
{
	(void)idx;
	return PTE_TYPE(*e) == PTE_FRAME && g->host->frames[PTE_VAL(*e)].pins ? -EBUSY : 0;
}

static int zap(struct umlmem_guest *g, uint64_t idx, pte_t *e)
{
	page_zap(g, idx, e);
	return 0;
}

int umlmem_discard(umlmem_guest *g, uint64_t gpa, uint64_t len)
{
	struct umlmem_host *h;
	uint64_t a, b;
	int rc;

	clearerr_tls();
	if (!g)
		return seterr(-EINVAL, "umlmem_discard: guest is NULL");
	rc = check_range(g, gpa, len, "umlmem_discard");
	if (rc)
		return rc;
	if ((gpa & (PAGE_SIZE - 1)) || ((len & (PAGE_SIZE - 1)) && gpa + len != g->ram_bytes))
		return seterr(-EINVAL, "umlmem_discard: [0x%llx, +%llu) is not whole pages "
			      "(gpa and len must be multiples of %u, or the range must end at "
			      "the guest's end)", (unsigned long long)gpa,
			      (unsigned long long)len, PAGE_SIZE);
	a = gpa >> PAGE_SHIFT;
	b = (gpa + len + PAGE_SIZE - 1) >> PAGE_SHIFT;
	h = g->host;
	pthread_mutex_lock(&h->lock);
	/* All or nothing: a pinned page anywhere leaves the range untouched. */
	rc = range_walk(g, a, b, is_pinned);
	if (rc)
		seterr(rc, "umlmem_discard: a page in [0x%llx, +%llu) is pinned; "
		       "nothing was discarded", (unsigned long long)gpa, (unsigned long long)len);
	else
		range_walk(g, a, b, zap);
	pthread_mutex_unlock(&h->lock);
	return rc;
}
