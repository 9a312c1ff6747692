/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * zpool.c: the compressed pool, a tier between the frames and swap.
 *
 * Why. Guest memory compresses (lz4 stores a page of binaries or guest RAM
 * in about half its size) and a decompression costs microseconds where a
 * disk read costs 50-90. A page the pager evicts is therefore compressed
 * into memory first; only what the pool cannot hold goes to disk. The
 * pool's memory is frames of the budget, so the budget still bounds all
 * that the host holds: frames_used counts them, and the pool competes with
 * guest pages for the same frames.
 *
 * Layout: a log. The pool holds a chain of frames (the log, oldest at the
 * tail, the one being filled at the head). Each page stored is appended at
 * the head as an 8-byte header (handle, length) and its compressed bytes;
 * a header never straddles two frames, the bytes may (then they continue at
 * the start of the next frame of the log, which is always the one appended
 * right after). A frame counts the live objects that touch it and goes
 * back to the pool's spare frames when none does, wherever it is in the
 * log. The tail holds the pages stored longest ago: when the pool needs
 * room it writes its tail's live pages to the tier below in one batch
 * (write-back), which frees the tail frames; so the pool's own replacement
 * is FIFO by store time, and a page the frames reclaim again (it was loaded
 * and stayed clean) keeps its old place. Objects are never moved, so there
 * is no compaction to pay for; the cost is the dead space of frames that
 * still have a live object, bounded by write-back reaching them.
 *
 * What goes in. A page made of one repeated 8-byte word (zeros are dropped
 * before, by the pager) is kept as that word in its entry: no pool space.
 * Others are compressed with lz4 (or zstd level 1 when asked). A page
 * that does not come below ZP_MAX_LEN bytes, or finds no room, or comes
 * while the pool does not pay (below), goes to the tier below, but the
 * pool writes it there itself (forward()) and keeps an entry for it, so
 * that every page of the host keeps a pool key: handles then follow store
 * order whatever became of each page, as readahead needs, and a page that
 * found no room can be taken in by absorb() once it is read and evicted
 * clean. (Under keys of the tier below, the pages a pool short of frames
 * refused while the guests were written stayed on disk for good, and the
 * faults on pages that do not compress, a quarter of the pages of host
 * binaries with lz4, broke every readahead run by switching tiers.) Such
 * an entry costs 32 bytes a page. Every page's xxh3 checksum is kept in
 * its entry and checked after decompression: a page that does not come
 * back to it is -EBADMSG, a checksum error, never wrong bytes.
 *
 * Entries. A handle is an index into the entry table. An entry holds the
 * reference count (a shared frame is stored once; every sharer's page
 * table entry holds a reference), the checksum, and where the content is:
 * an object in the log, a fill word, or, after write-back, a handle of the
 * tier below on which the entry holds one reference. Page table entries
 * keep naming the pool handle after write-back, so nothing in the core
 * changes when a page moves down; its next load reads from below.
 *
 * Clean pages come back in. A page loaded from below stays clean in its
 * frame, and the pager drops a clean frame without I/O; the pool would then
 * only ever hold the pages written last, however a guest that only reads
 * moves through its memory. So the pager hands such a frame to absorb()
 * first: the pool compresses it again under the same handle and keeps its
 * copy below (ZF_COPY). Write-back drops these objects with no I/O. The
 * cost is one compression per clean eviction of a page the pool lacks.
 *
 * Readahead. Handles are given out in store order, and a batch is stored
 * in guest address order, so a guest reading in order meets ascending
 * handles: live() offers them as the swap files offer slots, and load()
 * reads those that are below in one batch.
 *
 * Frames. The pool takes frames only under host->lock, through
 * balance(), which the pager calls before and after every batch: it keeps
 * enough spare frames lent for a whole batch at the worst length the pool
 * takes, within the pool's cap, and gives back what is spare beyond that.
 * store() runs without host->lock and uses only spare frames; when there
 * are none and the pool is at its cap, it writes back the tail first;
 * below the cap it refuses the page instead, and grows at the next
 * balance(). (Writing back whenever the spares ran out kept the pool at
 * the size of one batch's spares: it turned over instead of growing.)
 *
 * The split between frames and pool. Each frame the pool takes from the
 * guests holds about r pages compressed instead of one plain: the pages
 * it keeps off the disk are worth a disk read each, less a hit; the page
 * the frames lose costs a fault served by the pool each time it is used.
 * Neither is known in advance, so balance() measures both at the margin,
 * per window of ZP_WINDOW loads, and moves the cap (when
 * compress_pool_bytes is 0) by a step of 1/32 of the budget, between 1/16
 * and 7/8 of it (the guests keep two reclaim batches at least, or the
 * pages they pin could leave the pager nothing to evict), toward whichever
 * side pays:
 *  - near: loads from below of pages that left the pool within the last
 *    step x r departures (each entry below is stamped with the departure
 *    count when it left): a pool a step larger would still have held them;
 *  - young: hits on objects in the newest step / r frames of the log (each
 *    frame is stamped when it joins the log): pages a step more frames
 *    would have kept resident;
 *  - the costs, moving averages measured where they are paid: a hit (copy
 *    out and decompress), a page read from below (its share of the batch
 *    read, so that a page readahead brings in a run is not valued as a
 *    random read), a compression; and ZP_FAULT_NS for the rest of a fault,
 *    what a fault costs around its load: taken from reading a guest in page
 *    order with compress off, where every fault finds its page read ahead
 *    and loads nothing of its own (`make bench`'s readahead_seq gives that
 *    cost per page on a given machine).
 * The cap grows when near x (disk - hit) beats young x (hit + compression
 * + ZP_FAULT_NS) by a quarter, and shrinks in the opposite case. On
 * uniform random reads over 4 budgets, near is about r times young and a
 * disk read cost 30-100 hits where measured, so the cap climbs to 7/8 in
 * a second or two; on a working set that fits the frames but not frames
 * and pool, young should dominate and the pool give the frames back (a
 * case no benchmark here measures yet).
 *
 * Whether the pool pays at all. Every object that leaves the pool unused
 * cost a compression (and, written back, a decompression); every hit saved
 * a disk read. Over the same span balance() counts both: when the hits'
 * savings do not cover the compressions (a guest that only writes, or
 * scans round more memory than the pool holds, where a page is always
 * gone before it is read again: before this, such a scan ran at half the
 * speed of compress off), one page in ZP_SAMPLE still goes in as before,
 * which keeps the measurement going, and the others only while there is
 * room without write-back (take_page()): what the pool holds stays rather
 * than being pushed out unread, and a page that finds no room goes below
 * through forward(), under a pool handle, uncompressed. (Shrinking the
 * pool instead, a step a window, gave the frames to readahead in a scan,
 * but a guest that was filled and then read at random found the pool
 * empty and took seconds to grow it again, a page absorbed per fault.)
 * When the sample's hits pay again (a guest that wrote its memory now
 * reads it), the cap restarts from its first share, a quarter of the
 * budget, if it was below, instead of climbing a step a window from
 * its floor. Same-filled pages always go in: they cost nothing.
 *
 * Locking. z->lock (leaf below host->lock; above the lower tier's leaf
 * locks, which it may call with it held) guards everything in struct
 * zpool. Loads copy an object out under it and decompress after;
 * write-back drops it during the write, its entries marked ZF_WB.
 */
#define _GNU_SOURCE
#include <lz4.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zstd.h>

#include "internal.h"

#define ZP_MAX_LEN   3072u   /* compressed above this: refused, sent below */
#define ZP_HDR       8u      /* per object: handle, length */
#define ZP_WB_BATCH  64u     /* pages written back at once */
#define ZP_NIL       UINT32_MAX
#define ZP_WINDOW    256u    /* loads per adaptation step */
#define ZP_CAP_START(nframes) ((nframes) / 4)   /* the adaptive cap's first value */
#define ZP_SAMPLE    16u     /* while the pool does not pay, 1 page in this many still goes in */
#define ZP_LEFT_MIN  64u     /* departures and hits that make a judgement of its pay */
#define ZP_FAULT_NS  10000u  /* a fault's cost around its load (see "The split") */

enum { ZE_FREE = 0, ZE_LZ4, ZE_ZSTD, ZE_FILL, ZE_BELOW };
enum {
	ZF_WB = 0x1,    /* being written back: the object stays until done */
	ZF_COPY = 0x2,  /* an object that also has a copy below (absorbed):
			   write-back drops it, with no I/O */
	ZF_PEND = 0x4,  /* ZE_BELOW being written below by forward(): no
			   reference outside the pool yet, not live */
	ZF_RAW = 0x8,   /* ZE_BELOW that does not compress: absorb() skips it */
};

struct zp_ent {
	uint32_t refs;
	uint8_t kind;           /* ZE_* */
	uint8_t flags;          /* ZF_* */
	uint16_t len;           /* compressed bytes of an object */
	uint64_t csum;          /* xxh3 of the page */
	/* ZE_BELOW, or an object with ZF_COPY: handle in the tier below, on
	   which the entry holds one reference */
	uint64_t below;
	union {
		struct {
			uint32_t f;     /* frame where the bytes start */
			uint32_t off;   /* offset of the bytes in it */
		} o;
		uint64_t fill;          /* ZE_FILL: the repeated word */
		uint64_t gone;          /* ZE_BELOW: zpool.departs when it left */
		uint64_t next_free;     /* ZE_FREE: free list */
	} u;
};

struct zp_hdr {
	uint32_t handle;
	uint32_t len;
};

/* A zstd compression and decompression context, made on first use; its
   lock (a leaf, taken with trylock only, so never waited on under another)
   guards both while one page goes through them. */
struct zp_zctx {
	pthread_mutex_t lock;
	ZSTD_CCtx *c;
	ZSTD_DCtx *d;
};

#define ZP_NZCTX 4u     /* contexts kept: one per concurrent (de)compression */

struct zpool {
	struct tier t;
	struct umlmem_host *h;          /* fixed */
	int algo;                       /* ZE_LZ4 or ZE_ZSTD, fixed */
	uint64_t cap_fixed;             /* frames from compress_pool_bytes; 0: adaptive */

	/* Leaf lock (see above): everything from here on. */
	pthread_mutex_t lock;
	struct zp_ent *ent;
	uint64_t nent, capent, free_ent;
	/* per frame of the store, meaningful while the pool holds it */
	uint32_t *live;                 /* live objects touching it */
	uint32_t *next, *prev;          /* log order, tail to head */
	uint32_t *first;                /* offset of its first header */
	uint32_t head, tail, head_off;
	uint32_t *spare;
	uint64_t nspare, nlog;
	uint64_t cap;                   /* frames the pool may hold (log + spare) */
	uint64_t spare_want;            /* spare frames balance() keeps: a batch's worth */
	/* counters */
	uint64_t pages, bytes, same, hits, writebacks, rejects, handles;
	uint64_t absorbed, dropped;     /* clean pages taken back; their objects dropped */
	/* the adaptation (see "The split" above): the current window */
	struct {
		uint64_t loads;         /* pool hits and loads from below */
		uint64_t near;          /* loads from below of pages that left the
					   pool within the last step's worth */
		uint64_t young;         /* hits on objects in the newest step's
					   worth of the log */
		uint64_t left;          /* objects that left (written back, dropped) */
		uint64_t hits;          /* hits on objects, over the same span */
	} win;
	uint64_t ns_hit, ns_disk, ns_comp;  /* measured costs (moving averages) */
	uint64_t departs;               /* objects that ever left: stamps ZE_BELOW entries */
	uint32_t pushes;                /* frames ever appended to the log */
	uint32_t *pushed;               /* per frame: pushes when it was appended */
	bool bypass;                    /* the pool does not pay: ZP_SAMPLE only */
	uint64_t sample, bypassed;
	uint64_t inject_alloc_fail;

	struct zp_zctx zctx[ZP_NZCTX];  /* each under its own lock (above) */
};

static struct zpool *zp(struct tier *t)
{
	return (struct zpool *)t;
}

static uint8_t *zaddr(struct zpool *z, uint32_t f)
{
	return frame_addr(z->h, f);
}

static uint64_t ns_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Folds a measured cost into its moving average (an eighth per sample).
   Caller holds z->lock. */
static void ewma(uint64_t *avg, uint64_t v)
{
	*avg = *avg ? *avg - *avg / 8 + v / 8 : v;
}

/* How the next page offered to the pool goes in: ZP_TAKE, making room by
   write-back if it must, unless the pool does not pay. Then one page in
   ZP_SAMPLE still does (which keeps the measurement going), and the others
   go in only while there is room without write-back (ZP_ROOM: what the
   pool holds stays, no compression is spent on pages that push out
   others unread) or not at all (ZP_SKIP). Caller holds z->lock. */
enum { ZP_SKIP, ZP_ROOM, ZP_TAKE };

static int take_page(struct zpool *z)
{
	if (!z->bypass || z->sample++ % ZP_SAMPLE == 0)
		return ZP_TAKE;
	if (z->nspare || z->nlog + z->nspare < z->cap)
		return ZP_ROOM;
	z->bypassed++;
	return ZP_SKIP;
}

/* The step by which the cap moves, in frames; and the frames of the log
   that hold about one step of pages (the pages a step more frames would
   have kept). Caller holds z->lock. */
static uint64_t cap_step(const struct zpool *z)
{
	return z->h->nframes / 32 ? z->h->nframes / 32 : 1;
}

static uint64_t per_frame(const struct zpool *z)
{
	uint64_t r = z->nlog ? z->pages / z->nlog : 1;

	return r ? r : 1;
}

/* ---- entries -------------------------------------------------------------- */

static int ent_alloc(struct zpool *z, uint64_t *out)
{
	uint64_t i;

	if (z->free_ent != UINT64_MAX) {
		i = z->free_ent;
		z->free_ent = z->ent[i].u.next_free;
	} else {
		if (z->nent == z->capent) {
			uint64_t n = z->capent ? 2 * z->capent : 1024;
			struct zp_ent *e;

			if (n > TIER_HANDLE_MAX)
				return -ENOMEM;
			e = realloc(z->ent, n * sizeof(*e));
			if (!e)
				return -ENOMEM;
			z->ent = e;
			z->capent = n;
		}
		i = z->nent++;
	}
	memset(&z->ent[i], 0, sizeof(z->ent[i]));
	z->ent[i].refs = 1;
	z->handles++;
	*out = i;
	return 0;
}

static void ent_free(struct zpool *z, uint64_t i)
{
	z->ent[i].kind = ZE_FREE;
	z->ent[i].flags = 0;
	z->ent[i].refs = 0;
	z->ent[i].u.next_free = z->free_ent;
	z->free_ent = i;
	z->handles--;
}

/* ---- the log -------------------------------------------------------------- */

/* Appends frame @f (a spare one) at the head. */
static uint32_t log_push(struct zpool *z)
{
	uint32_t f = z->spare[--z->nspare];

	z->live[f] = 0;
	z->first[f] = 0;
	z->pushed[f] = z->pushes++;
	z->next[f] = ZP_NIL;
	z->prev[f] = z->head;
	if (z->head != ZP_NIL)
		z->next[z->head] = f;
	else
		z->tail = f;
	z->head = f;
	z->head_off = 0;
	z->nlog++;
	return f;
}

/* Frame @f holds no live object: it leaves the log for the spares (the
   head stays: it is being filled). */
static void log_release(struct zpool *z, uint32_t f)
{
	if (f == z->head)
		return;
	if (z->prev[f] != ZP_NIL)
		z->next[z->prev[f]] = z->next[f];
	else
		z->tail = z->next[f];
	z->prev[z->next[f]] = z->prev[f];   /* f is not the head: next exists */
	z->nlog--;
	z->spare[z->nspare++] = f;
}

/* Reserves room for an object of @len bytes at the head and writes its
   header; -ENOSPC when that needs more frames than are spare. */
static int obj_alloc(struct zpool *z, uint64_t handle, uint32_t len, uint32_t *pf,
		     uint32_t *poff)
{
	uint32_t need = 0, off = z->head_off, f;
	struct zp_hdr hdr = { (uint32_t)handle, len };

	if (z->inject_alloc_fail) {
		z->inject_alloc_fail--;
		return -ENOSPC;
	}
	if (z->head == ZP_NIL || off + ZP_HDR > PAGE_SIZE) {
		need++;
		off = 0;
	}
	if (off + ZP_HDR + len > PAGE_SIZE)
		need++;
	if (need > z->nspare)
		return -ENOSPC;
	f = z->head;
	if (f == ZP_NIL || z->head_off + ZP_HDR > PAGE_SIZE) {
		uint32_t old = f;

		f = log_push(z);
		/* the old head may have lost all its objects while filled */
		if (old != ZP_NIL && !z->live[old])
			log_release(z, old);
	}
	memcpy(zaddr(z, f) + off, &hdr, ZP_HDR);
	off += ZP_HDR;
	z->live[f]++;
	*pf = f;
	*poff = off;
	if (off + len > PAGE_SIZE) {
		uint32_t nf = log_push(z);

		z->live[nf]++;
		z->first[nf] = off + len - PAGE_SIZE;
		z->head_off = z->first[nf];
	} else {
		z->head_off = off + len;
	}
	return 0;
}

/* Copies @len bytes between @buf and the object at (@f, @off). */
static void obj_copy(struct zpool *z, uint32_t f, uint32_t off, uint8_t *buf, uint32_t len,
		     bool out)
{
	uint32_t a = PAGE_SIZE - off < len ? PAGE_SIZE - off : len;

	if (out)
		memcpy(buf, zaddr(z, f) + off, a);
	else
		memcpy(zaddr(z, f) + off, buf, a);
	if (a < len) {
		if (out)
			memcpy(buf + a, zaddr(z, z->next[f]), len - a);
		else
			memcpy(zaddr(z, z->next[f]), buf + a, len - a);
	}
}

static void obj_free(struct zpool *z, struct zp_ent *e)
{
	uint32_t f = e->u.o.f, nf = z->next[f];
	bool spans = e->u.o.off + e->len > PAGE_SIZE;

	z->bytes -= e->len;
	z->pages--;
	if (spans && !--z->live[nf])
		log_release(z, nf);
	if (!--z->live[f])
		log_release(z, f);
}

/* Object entry @e has left the pool for the tier below (written back, or
   its copy dropped; obj_free done): counted for the adaptation and stamped
   so that a load of it from below can tell how long ago it left. Caller
   holds z->lock. */
static void departed(struct zpool *z, struct zp_ent *e)
{
	z->win.left++;
	e->kind = ZE_BELOW;
	e->flags &= (uint8_t)~ZF_COPY;
	e->u.gone = z->departs++;
}

/* ---- compression ---------------------------------------------------------- */

static bool same_filled(const void *page, uint64_t *word)
{
	const uint64_t *w = page;

	for (unsigned i = 1; i < PAGE_SIZE / 8; i++)
		if (w[i] != w[0])
			return false;
	*word = w[0];
	return true;
}

/* A zstd context of the pool's cache, locked; NULL when every one is in
   use (the caller then lets zstd make its own). ZSTD_compress() and
   ZSTD_decompress() without one allocate and set up a context per page,
   which cost several times the work on the page itself. */
static struct zp_zctx *zctx_get(struct zpool *z)
{
	for (unsigned i = 0; i < ZP_NZCTX; i++) {
		struct zp_zctx *c = &z->zctx[i];

		if (pthread_mutex_trylock(&c->lock))
			continue;
		if (!c->c)
			c->c = ZSTD_createCCtx();
		if (!c->d)
			c->d = ZSTD_createDCtx();
		if (c->c && c->d)
			return c;
		pthread_mutex_unlock(&c->lock);
	}
	return NULL;
}

static uint32_t compress_page(struct zpool *z, int algo, const void *page, uint8_t *dst)
{
	if (algo == ZE_ZSTD) {
		struct zp_zctx *c = zctx_get(z);
		size_t n;

		if (c) {
			n = ZSTD_compressCCtx(c->c, dst, ZP_MAX_LEN, page, PAGE_SIZE, 1);
			pthread_mutex_unlock(&c->lock);
		} else {
			n = ZSTD_compress(dst, ZP_MAX_LEN, page, PAGE_SIZE, 1);
		}
		return ZSTD_isError(n) ? 0 : (uint32_t)n;
	}
	return (uint32_t)LZ4_compress_default(page, (char *)dst, PAGE_SIZE, ZP_MAX_LEN);
}

/* Decompresses and verifies: 0 or -EBADMSG. */
static int decompress_page(struct zpool *z, int algo, const uint8_t *src, uint32_t len,
			   void *page, uint64_t csum)
{
	bool ok;

	if (algo == ZE_ZSTD) {
		struct zp_zctx *c = zctx_get(z);
		size_t n;

		if (c) {
			n = ZSTD_decompressDCtx(c->d, page, PAGE_SIZE, src, len);
			pthread_mutex_unlock(&c->lock);
		} else {
			n = ZSTD_decompress(page, PAGE_SIZE, src, len);
		}
		ok = !ZSTD_isError(n) && n == PAGE_SIZE;
	} else {
		ok = LZ4_decompress_safe((const char *)src, page, (int)len, PAGE_SIZE) ==
		     PAGE_SIZE;
	}
	return ok && swap_page_csum(page) == csum ? 0 : -EBADMSG;
}

/* ---- write-back ----------------------------------------------------------- */

/* Makes room at the tail: drops the oldest objects that have a copy below
   (ZF_COPY: no I/O) and writes up to ZP_WB_BATCH of the oldest others to
   the tier below in one batch. Takes and drops z->lock. Returns how many
   left the pool. */
static unsigned writeback(struct zpool *z)
{
	struct tier *below = z->t.below;
	uint64_t hd[ZP_WB_BATCH], out[ZP_WB_BATCH];
	void *pages[ZP_WB_BATCH];
	int res[ZP_WB_BATCH];
	uint8_t *buf, *cbuf;
	unsigned n = 0, nw = 0, done = 0, dropped = 0;
	char msg[256];

	if (!below)
		return 0;
	buf = aligned_alloc(PAGE_SIZE, (size_t)ZP_WB_BATCH * PAGE_SIZE);
	cbuf = malloc(ZP_MAX_LEN);
	if (!buf || !cbuf) {
		free(buf);
		free(cbuf);
		return 0;
	}
	pthread_mutex_lock(&z->lock);
	/* the oldest frames first; the head too, when that is all there is */
	for (uint32_t f = z->tail; f != ZP_NIL && n < ZP_WB_BATCH && dropped < 4 * ZP_WB_BATCH;
	     f = z->next[f]) {
		uint32_t off = z->first[f];

		/* Dropping an object may give its frame back to the spares
		   (log_release): its bytes stay as they are while z->lock is
		   held, and its next link still leads on along the log. */
		while (n < ZP_WB_BATCH && off + ZP_HDR <= PAGE_SIZE &&
		       (f != z->head || off < z->head_off)) {
			struct zp_hdr hdr;
			struct zp_ent *e;

			memcpy(&hdr, zaddr(z, f) + off, ZP_HDR);
			/* past the last object: bytes of the frame's former use */
			if (hdr.len > ZP_MAX_LEN)
				break;
			off += ZP_HDR;
			e = hdr.handle < z->nent ? &z->ent[hdr.handle] : NULL;
			if (e && (e->kind == ZE_LZ4 || e->kind == ZE_ZSTD) && e->u.o.f == f &&
			    e->u.o.off == off && (e->flags & ZF_COPY)) {
				off += hdr.len;
				obj_free(z, e);
				departed(z, e);
				dropped++;
				continue;
			}
			if (e && (e->kind == ZE_LZ4 || e->kind == ZE_ZSTD) && e->u.o.f == f &&
			    e->u.o.off == off && !(e->flags & ZF_WB)) {
				obj_copy(z, f, off, cbuf, e->len, true);
				pages[n] = buf + (size_t)n * PAGE_SIZE;
				/* a corrupt object stays: its load reports it */
				if (!decompress_page(z, e->kind, cbuf, e->len, pages[n], e->csum)) {
					e->flags |= ZF_WB;
					hd[n++] = hdr.handle;
				}
			}
			off += hdr.len;
		}
	}
	pthread_mutex_unlock(&z->lock);
	if (n)
		below->ops->store(below, pages, n, out, res, TIER_STORE_BELOW, msg, sizeof(msg));
	pthread_mutex_lock(&z->lock);
	for (unsigned i = 0; i < n; i++) {
		struct zp_ent *e = &z->ent[hd[i]];

		e->flags &= ~ZF_WB;
		if (!e->refs) {
			/* freed meanwhile: its release was left to us */
			obj_free(z, e);
			if (!res[i])
				below->ops->unref(below, out[i], 1);
			ent_free(z, hd[i]);
			continue;
		}
		if (res[i])
			continue;
		obj_free(z, e);
		departed(z, e);
		e->below = out[i];
		nw++;
		done++;
	}
	z->writebacks += nw;
	z->dropped += dropped;
	pthread_mutex_unlock(&z->lock);
	free(buf);
	free(cbuf);
	return done + dropped;
}

/* ---- the tier operations -------------------------------------------------- */

/* The pages pages[fw[j]] that the pool does not keep (they do not
   compress below ZP_MAX_LEN, found no room, or the pool does not pay) go
   to the tier below in one batch, each under the pool handle handles[fw[j]]
   that zp_store() reserved for it in the batch's order (ZE_BELOW, ZF_PEND
   until written), not under a key of that tier. So every page of a pooled
   host keeps a pool key: handles follow store order across kinds, which
   readahead needs (a run of faults that changed tiers at every page that
   does not compress would never be recognised), and a page that was
   refused for room can be taken in by absorb() when it is read and evicted
   clean. The cost is an entry per such page. Sets res[] as tier_ops.store
   does; returns the failed writes. No lock held. */
static unsigned forward(struct zpool *z, void *const *pages, const unsigned *fw, unsigned nfw,
			uint64_t *handles, int *res, char *msg, size_t msglen)
{
	struct tier *below = z->t.below;
	void **bp = malloc(nfw * sizeof(*bp));
	uint64_t *bh = malloc(nfw * sizeof(*bh));
	int *br = malloc(nfw * sizeof(*br));
	unsigned failed = 0;

	if (below && bp && bh && br) {
		for (unsigned j = 0; j < nfw; j++)
			bp[j] = pages[fw[j]];
		failed = below->ops->store(below, bp, nfw, bh, br, TIER_STORE_BELOW, msg, msglen);
	}
	pthread_mutex_lock(&z->lock);
	for (unsigned j = 0; j < nfw; j++) {
		unsigned i = fw[j];
		struct zp_ent *e = &z->ent[handles[i]];

		/* without a batch, the pager stores them below under that
		   tier's keys */
		res[i] = below && bp && bh && br ? br[j] : -ENOSPC;
		if (res[i]) {
			ent_free(z, handles[i]);
			continue;
		}
		e->below = bh[j];
		e->flags &= (uint8_t)~ZF_PEND;
	}
	pthread_mutex_unlock(&z->lock);
	free(bp);
	free(bh);
	free(br);
	return failed;
}

/* Whether the pool holds all the frames it may: only then does a store
   that finds no room write the oldest pages back. Below its cap the pool
   grows instead, by the frames balance() lends it between batches; a store
   that outruns them is refused and goes below, rather than turning the
   pool over at the size it happens to have (which kept it from growing).
   Caller holds z->lock. */
static bool at_cap(const struct zpool *z)
{
	return z->nlog + z->nspare >= z->cap;
}

/* A pool whose log holds more frames than its cap (the adaptation lowered
   it) moves its oldest pages on, a batch per call, so that balance() can
   give their frames back. No lock held. */
static void shrink(struct zpool *z)
{
	bool over;

	pthread_mutex_lock(&z->lock);
	over = z->nlog > z->cap;
	pthread_mutex_unlock(&z->lock);
	if (over)
		writeback(z);
}

static unsigned zp_store(struct tier *t, void *const *pages, unsigned n, uint64_t *handles,
			 int *res, unsigned flags, char *msg, size_t msglen)
{
	struct zpool *z = zp(t);
	uint8_t *cbuf = malloc(ZP_MAX_LEN);
	unsigned *fw = malloc(n * sizeof(*fw)), nfw = 0, failed = 0;

	(void)flags;
	msg[0] = '\0';
	shrink(z);
	for (unsigned i = 0; i < n; i++) {
		uint64_t word = 0, hd, t0 = 0;
		uint32_t len = 0, f, off;
		int take = ZP_TAKE;
		uint8_t raw = 0;
		int rc;

		res[i] = -ENOSPC;
		if (!cbuf || !fw)
			continue;
		if (!same_filled(pages[i], &word)) {
			pthread_mutex_lock(&z->lock);
			take = take_page(z);
			pthread_mutex_unlock(&z->lock);
			if (take != ZP_SKIP) {
				t0 = ns_now();
				len = compress_page(z, z->algo, pages[i], cbuf);
				t0 = ns_now() - t0;
				/* it will not compress the next time either */
				raw = len ? 0 : ZF_RAW;
			}
		}
		pthread_mutex_lock(&z->lock);
		if (t0)
			ewma(&z->ns_comp, t0);
		rc = ent_alloc(z, &hd);
		if (rc) {
			z->rejects++;
			pthread_mutex_unlock(&z->lock);
			continue;
		}
		z->ent[hd].csum = swap_page_csum(pages[i]);
		handles[i] = hd;
		if (take != ZP_SKIP && !raw && !len) {
			z->ent[hd].kind = ZE_FILL;
			z->ent[hd].u.fill = word;
			z->same++;
			z->pages++;
			res[i] = 0;
		} else if (take != ZP_SKIP && !raw) {
			rc = obj_alloc(z, hd, len, &f, &off);
			if (rc && take == ZP_TAKE && z->nlog && at_cap(z)) {
				/* full: the oldest pages make room */
				pthread_mutex_unlock(&z->lock);
				writeback(z);
				pthread_mutex_lock(&z->lock);
				rc = obj_alloc(z, hd, len, &f, &off);
			}
			if (!rc) {
				z->ent[hd].kind = (uint8_t)z->algo;
				z->ent[hd].len = (uint16_t)len;
				z->ent[hd].u.o.f = f;
				z->ent[hd].u.o.off = off;
				obj_copy(z, f, off, cbuf, len, false);
				z->bytes += len;
				z->pages++;
				res[i] = 0;
			}
		}
		if (res[i]) {
			/* below, under this pool handle (forward()); a bigger
			   pool would have held it: as if it had just left */
			z->ent[hd].kind = ZE_BELOW;
			z->ent[hd].flags = ZF_PEND | raw;
			z->ent[hd].u.gone = z->departs;
			z->rejects++;
			fw[nfw++] = i;
		}
		pthread_mutex_unlock(&z->lock);
	}
	free(cbuf);
	if (nfw)
		failed = forward(z, pages, fw, nfw, handles, res, msg, msglen);
	free(fw);
	return failed;
}

/* Pool objects are decompressed here; the pages that are only below are
   read from there in one batch (a run read ahead is one request). */
static void zp_load(struct tier *t, const uint64_t *handles, void *const *bufs, unsigned n,
		    int *res)
{
	struct zpool *z = zp(t);
	uint8_t cbuf[ZP_MAX_LEN];
	uint64_t bhd[1 + RA_MAX];
	void *bbuf[1 + RA_MAX];
	unsigned idx[1 + RA_MAX], nb = 0, nhit = 0;
	int bres[1 + RA_MAX];
	uint64_t t0 = ns_now(), t1;

	for (unsigned i = 0; i < n; i++) {
		struct zp_ent *e;
		uint64_t csum;
		uint32_t len;
		int kind;

		pthread_mutex_lock(&z->lock);
		z->win.loads++;
		e = &z->ent[handles[i]];
		kind = e->kind;
		csum = e->csum;
		len = e->len;
		if (kind == ZE_FILL) {
			uint64_t *w = bufs[i];

			for (unsigned j = 0; j < PAGE_SIZE / 8; j++)
				w[j] = e->u.fill;
		} else if (kind == ZE_LZ4 || kind == ZE_ZSTD) {
			obj_copy(z, e->u.o.f, e->u.o.off, cbuf, len, true);
			z->win.hits++;
			/* in the newest step's worth of the log: a page that a
			   step more frames would have kept resident */
			if (z->pushes - z->pushed[e->u.o.f] <= cap_step(z) / per_frame(z) + 1)
				z->win.young++;
			nhit++;
		}
		if (kind == ZE_BELOW) {
			/* left within the last step's worth of pages: a step
			   more pool would still hold it */
			if (z->departs - e->u.gone < cap_step(z) * per_frame(z))
				z->win.near++;
			/* the caller's reference keeps the entry, and the
			   entry its reference below */
			bhd[nb] = e->below;
			bbuf[nb] = bufs[i];
			idx[nb++] = i;
		} else {
			z->hits++;
		}
		pthread_mutex_unlock(&z->lock);
		if (kind == ZE_FILL)
			res[i] = 0;
		else if (kind != ZE_BELOW)
			res[i] = decompress_page(z, kind, cbuf, len, bufs[i], csum);
	}
	t1 = ns_now();
	if (nb)
		t->below->ops->load(t->below, bhd, bbuf, nb, bres);
	for (unsigned j = 0; j < nb; j++)
		res[idx[j]] = bres[j];
	if (!nhit && !nb)
		return;
	/* the costs the adaptation weighs, per page: a hit (the pool's share
	   of this call), a read from below (its share of the batch: a page
	   read ahead in a run costs less than one read alone, and a hit saves
	   only that) */
	pthread_mutex_lock(&z->lock);
	if (nhit)
		ewma(&z->ns_hit, (t1 - t0) / nhit);
	if (nb)
		ewma(&z->ns_disk, (ns_now() - t1) / nb);
	pthread_mutex_unlock(&z->lock);
}

static void zp_ref(struct tier *t, uint64_t handle, unsigned n)
{
	struct zpool *z = zp(t);

	pthread_mutex_lock(&z->lock);
	z->ent[handle].refs += n;
	pthread_mutex_unlock(&z->lock);
}

static void zp_unref(struct tier *t, uint64_t handle, unsigned n)
{
	struct zpool *z = zp(t);
	struct zp_ent *e;

	pthread_mutex_lock(&z->lock);
	e = &z->ent[handle];
	e->refs -= n;
	if (!e->refs) {
		switch (e->kind) {
		case ZE_FILL:
			z->same--;
			z->pages--;
			ent_free(z, handle);
			break;
		case ZE_BELOW:
			t->below->ops->unref(t->below, e->below, 1);
			ent_free(z, handle);
			break;
		default:
			/* under write-back, its end frees it */
			if (!(e->flags & ZF_WB)) {
				obj_free(z, e);
				if (e->flags & ZF_COPY)
					t->below->ops->unref(t->below, e->below, 1);
				ent_free(z, handle);
			}
		}
	}
	pthread_mutex_unlock(&z->lock);
}

/* A clean page leaves its frame. One whose content the pool holds only
   below is compressed back in, keeping its copy below (ZF_COPY): the next
   fault on it is a hit, and write-back later drops it with no I/O. This is
   how the pool follows a workload that only reads: without it, what it
   holds would be frozen at the pages last written. */
static void zp_absorb(struct tier *t, const uint64_t *handles, void *const *pages, unsigned n)
{
	struct zpool *z = zp(t);
	uint8_t cbuf[ZP_MAX_LEN];

	shrink(z);
	for (unsigned i = 0; i < n; i++) {
		struct zp_ent *e;
		uint32_t len, f, off;
		uint64_t t0;
		int rc, take = ZP_SKIP;

		pthread_mutex_lock(&z->lock);
		e = &z->ent[handles[i]];
		if (e->kind == ZE_BELOW && !(e->flags & ZF_RAW))
			take = take_page(z);
		pthread_mutex_unlock(&z->lock);
		if (take == ZP_SKIP)
			continue;
		/* the same bytes compressed when they were stored */
		t0 = ns_now();
		len = compress_page(z, z->algo, pages[i], cbuf);
		t0 = ns_now() - t0;
		pthread_mutex_lock(&z->lock);
		ewma(&z->ns_comp, t0);
		if (!len) {
			pthread_mutex_unlock(&z->lock);
			continue;
		}
		/* the caller's reference keeps the entry; only write-back
		   changes its kind, and never that of a ZE_BELOW entry */
		rc = obj_alloc(z, handles[i], len, &f, &off);
		if (rc && take == ZP_TAKE && z->nlog && at_cap(z)) {
			pthread_mutex_unlock(&z->lock);
			writeback(z);
			pthread_mutex_lock(&z->lock);
			rc = obj_alloc(z, handles[i], len, &f, &off);
		}
		e = &z->ent[handles[i]];
		if (!rc) {
			e->kind = (uint8_t)z->algo;
			e->flags |= ZF_COPY;
			e->len = (uint16_t)len;
			e->u.o.f = f;
			e->u.o.off = off;
			obj_copy(z, f, off, cbuf, len, false);
			z->bytes += len;
			z->pages++;
			z->absorbed++;
		}
		pthread_mutex_unlock(&z->lock);
	}
}

static uint32_t zp_refs(struct tier *t, uint64_t handle)
{
	struct zpool *z = zp(t);
	uint32_t r;

	pthread_mutex_lock(&z->lock);
	r = handle < z->nent ? z->ent[handle].refs : 0;
	pthread_mutex_unlock(&z->lock);
	return r;
}

/* The live handles next to a fault, for readahead: handles are given out
   in the order pages are stored (a batch in guest address order), so a
   guest reading its memory in order meets ascending handles, as in swap.
   A handle only below is read in the batch of the fault (zp_load); one in
   the pool costs a decompression and saves a fault. */
static unsigned zp_live(struct tier *t, uint64_t from, unsigned n, uint64_t *out)
{
	struct zpool *z = zp(t);
	unsigned m = 0;

	pthread_mutex_lock(&z->lock);
	for (uint64_t hd = from; hd < from + n && hd < z->nent; hd++)
		if (z->ent[hd].kind != ZE_FREE && !(z->ent[hd].flags & ZF_PEND))
			out[m++] = hd;
	pthread_mutex_unlock(&z->lock);
	return m;
}

/* The end of a window of the adaptation (see "The split" above): moves
   the cap by a step where the measured costs say a step pays, and decides
   whether the pool pays at all. Caller holds z->lock. */
static void adapt(struct zpool *z)
{
	uint64_t n = z->h->nframes, step = cap_step(z), lo = n / 16, hi = n / 8 * 7;
	/* the guests keep at least two batches of frames: with fewer, the
	   pages they pin could leave the pager nothing to evict */
	uint64_t keep = 2 * (uint64_t)z->h->cfg.reclaim_batch;
	/* a disk read the pool saves, and a fault a step of pool costs the
	   frames: a hit's own cost plus the fault's around it (ZP_FAULT_NS)
	   and the compression when the page leaves its frame again */
	uint64_t save = z->ns_disk > z->ns_hit ? z->ns_disk - z->ns_hit : 0;
	uint64_t gain = z->win.near * save;
	uint64_t loss = z->win.young * (z->ns_hit + z->ns_comp + ZP_FAULT_NS);

	if (hi + keep > n)
		hi = n > keep + lo ? n - keep : lo;
	if (!z->cap_fixed) {
		if (z->bypass)
			;       /* what it holds stays; see take_page() */
		else if (gain > loss + loss / 4)
			z->cap = z->cap + step < hi ? z->cap + step : hi;
		else if (loss > gain + gain / 4)
			z->cap = z->cap > lo + step ? z->cap - step : lo;
	}
	/* Every object that left cost a compression; every hit saved a disk
	   read. When the hits do not pay for the compressions, only a sample
	   of pages goes in, to notice when they would again. */
	if (z->win.left + z->win.hits >= ZP_LEFT_MIN) {
		bool was = z->bypass;

		z->bypass = z->win.hits * save < z->win.left * z->ns_comp;
		z->win.left = z->win.hits = 0;
		/* paying again (a guest that wrote its memory now reads it):
		   the pool starts again from its first share rather than
		   climbing a step a window from its floor */
		if (was && !z->bypass && !z->cap_fixed && z->cap < ZP_CAP_START(n))
			z->cap = ZP_CAP_START(n);
	}
	z->win.loads = z->win.near = z->win.young = 0;
}

static void zp_balance(struct tier *t)
{
	struct zpool *z = zp(t);
	struct umlmem_host *h = z->h;

	pthread_mutex_lock(&z->lock);
	if (z->win.loads >= ZP_WINDOW || z->win.left >= ZP_WINDOW)
		adapt(z);
	/* a head that lost all its objects goes too (the next store starts
	   a new one); an empty pool of a host without guests keeps no spare
	   frames */
	if (z->head != ZP_NIL && !z->live[z->head]) {
		uint32_t f = z->head;

		z->head = z->prev[f];
		if (z->head != ZP_NIL)
			z->next[z->head] = ZP_NIL;
		else
			z->tail = ZP_NIL;
		z->head_off = PAGE_SIZE;
		z->nlog--;
		z->spare[z->nspare++] = f;
	}
	if (!z->nlog && !z->handles && !h->nguests) {
		while (z->nspare)
			frame_put(h, z->spare[--z->nspare]);
		pthread_mutex_unlock(&z->lock);
		return;
	}
	while (z->nspare < z->spare_want && z->nlog + z->nspare < z->cap && h->nfree > 1) {
		uint64_t f;

		frame_take(h, &f);
		h->frames[f].flags = F_POOL;
		z->spare[z->nspare++] = (uint32_t)f;
	}
	while (z->nspare && (z->nspare > 2 * z->spare_want || z->nlog + z->nspare > z->cap)) {
		uint32_t f = z->spare[--z->nspare];

		frame_put(h, f);
	}
	pthread_mutex_unlock(&z->lock);
}

static void zp_held(struct tier *t, void (*fn)(void *arg, uint64_t key), void *arg)
{
	struct zpool *z = zp(t);

	pthread_mutex_lock(&z->lock);
	for (uint64_t i = 0; i < z->nent; i++)
		if ((z->ent[i].kind == ZE_BELOW && !(z->ent[i].flags & ZF_PEND)) ||
		    (z->ent[i].flags & ZF_COPY))
			fn(arg, tkey(t->below->id, z->ent[i].below));
	pthread_mutex_unlock(&z->lock);
}

static int zp_check(struct tier *t, char *err, size_t errlen)
{
	struct zpool *z = zp(t);
	struct umlmem_host *h = z->h;
	uint32_t *live = calloc(h->nframes, sizeof(*live));
	uint64_t handles = 0, pages = 0, bytes = 0, same = 0, nlog = 0;
	int rc = -EUCLEAN;

	if (!live)
		return -ENOMEM;
	pthread_mutex_lock(&z->lock);
	for (uint64_t i = 0; i < z->nent; i++) {
		const struct zp_ent *e = &z->ent[i];

		if (e->kind == ZE_FREE)
			continue;
		handles++;
		if (!e->refs || (e->flags & (ZF_WB | ZF_PEND)) ||
		    ((e->flags & ZF_COPY) && e->kind != ZE_LZ4 && e->kind != ZE_ZSTD) ||
		    ((e->flags & ZF_RAW) && e->kind != ZE_BELOW)) {
			snprintf(err, errlen, "pool entry %llu: refs %u, flags 0x%x outside a "
				 "write-back", (unsigned long long)i, e->refs, e->flags);
			goto out;
		}
		if (e->kind == ZE_FILL) {
			same++;
			pages++;
		} else if (e->kind != ZE_BELOW) {
			pages++;
			bytes += e->len;
			live[e->u.o.f]++;
			if (e->u.o.off + e->len > PAGE_SIZE)
				live[z->next[e->u.o.f]]++;
		}
	}
	for (uint32_t f = z->tail, p = ZP_NIL; f != ZP_NIL; p = f, f = z->next[f]) {
		if (z->prev[f] != p || !(h->frames[f].flags & F_POOL) || z->live[f] != live[f] ||
		    (!live[f] && f != z->head) || ++nlog > z->nlog) {
			snprintf(err, errlen, "pool frame %u: live %u counted %u, links or flags "
				 "wrong", f, z->live[f], live[f]);
			goto out;
		}
	}
	if (nlog != z->nlog || handles != z->handles || pages != z->pages || bytes != z->bytes ||
	    same != z->same) {
		snprintf(err, errlen, "pool: %llu log frames, %llu handles, %llu pages, %llu bytes, "
			 "%llu same-filled counted; %llu, %llu, %llu, %llu, %llu recorded",
			 (unsigned long long)nlog, (unsigned long long)handles,
			 (unsigned long long)pages, (unsigned long long)bytes,
			 (unsigned long long)same, (unsigned long long)z->nlog,
			 (unsigned long long)z->handles, (unsigned long long)z->pages,
			 (unsigned long long)z->bytes, (unsigned long long)z->same);
		goto out;
	}
	for (uint64_t i = 0; i < z->nspare; i++)
		if (!(h->frames[z->spare[i]].flags & F_POOL)) {
			snprintf(err, errlen, "pool spare frame %u not marked F_POOL", z->spare[i]);
			goto out;
		}
	rc = 0;
out:
	pthread_mutex_unlock(&z->lock);
	free(live);
	return rc;
}

static void zp_info(struct tier *t, struct tier_info *out)
{
	struct zpool *z = zp(t);

	pthread_mutex_lock(&z->lock);
	memset(out, 0, sizeof(*out));
	out->handles = z->handles;
	out->frames = z->nlog + z->nspare;
	out->bytes = out->frames * PAGE_SIZE;
	pthread_mutex_unlock(&z->lock);
}

void zpool_info(struct tier *t, struct umlmem_host_info *i)
{
	struct zpool *z = zp(t);

	pthread_mutex_lock(&z->lock);
	i->pool_pages = z->pages;
	i->pool_bytes = z->bytes;
	i->pool_frames = z->nlog + z->nspare;
	i->pool_same_filled = z->same;
	i->pool_hits = z->hits;
	i->pool_writebacks = z->writebacks;
	i->pool_rejects = z->rejects;
	pthread_mutex_unlock(&z->lock);
}

void zpool_inject_alloc_fail(struct tier *t, uint64_t n)
{
	struct zpool *z = zp(t);

	pthread_mutex_lock(&z->lock);
	z->inject_alloc_fail = n;
	pthread_mutex_unlock(&z->lock);
}

bool zpool_corrupt(struct tier *t, uint64_t handle)
{
	struct zpool *z = zp(t);
	struct zp_ent *e;
	bool ok = false;

	pthread_mutex_lock(&z->lock);
	e = handle < z->nent ? &z->ent[handle] : NULL;
	if (e && (e->kind == ZE_LZ4 || e->kind == ZE_ZSTD)) {
		zaddr(z, e->u.o.f)[e->u.o.off + (e->len > 1 && e->u.o.off + 1 < PAGE_SIZE)] ^= 0x5a;
		ok = true;
	}
	pthread_mutex_unlock(&z->lock);
	return ok;
}

static void zp_fini(struct tier *t)
{
	struct zpool *z = zp(t);

	/* the frames go with the frame store */
	pthread_mutex_destroy(&z->lock);
	for (unsigned i = 0; i < ZP_NZCTX; i++) {
		ZSTD_freeCCtx(z->zctx[i].c);
		ZSTD_freeDCtx(z->zctx[i].d);
		pthread_mutex_destroy(&z->zctx[i].lock);
	}
	free(z->ent);
	free(z->live);
	free(z->next);
	free(z->prev);
	free(z->first);
	free(z->pushed);
	free(z->spare);
	free(z);
}

static const struct tier_ops zpool_ops = {
	.name = "pool",
	.store = zp_store,
	.load = zp_load,
	.ref = zp_ref,
	.unref = zp_unref,
	.refs = zp_refs,
	.live = zp_live,
	.check = zp_check,
	.info = zp_info,
	.fini = zp_fini,
	.balance = zp_balance,
	.absorb = zp_absorb,
	.held = zp_held,
};

int zpool_create(struct umlmem_host *h, struct tier *below, struct tier **out)
{
	struct zpool *z = calloc(1, sizeof(*z));
	uint64_t n = h->nframes;

	if (!z)
		return seterr(-ENOMEM, "cannot allocate the compressed pool");
	z->t.ops = &zpool_ops;
	z->t.id = TIER_POOL;
	z->t.priv = z;
	z->t.below = below;
	z->h = h;
	z->algo = h->cfg.compress == UMLMEM_COMPRESS_ZSTD ? ZE_ZSTD : ZE_LZ4;
	z->cap_fixed = h->cfg.compress_pool_bytes / PAGE_SIZE;
	z->cap = z->cap_fixed ? z->cap_fixed : ZP_CAP_START(n);
	/* room for a whole batch of pages at the worst length the pool
	   takes: a batch that ran out of spare frames half way would make
	   the pool write back (at its cap) or refuse pages (below it) */
	z->spare_want = ((uint64_t)h->cfg.reclaim_batch * (ZP_MAX_LEN + ZP_HDR) + PAGE_SIZE - 1) /
			PAGE_SIZE + 1;
	z->free_ent = UINT64_MAX;
	z->head = z->tail = ZP_NIL;
	pthread_mutex_init(&z->lock, NULL);
	for (unsigned i = 0; i < ZP_NZCTX; i++)
		pthread_mutex_init(&z->zctx[i].lock, NULL);
	z->live = calloc(n, sizeof(*z->live));
	z->next = calloc(n, sizeof(*z->next));
	z->prev = calloc(n, sizeof(*z->prev));
	z->first = calloc(n, sizeof(*z->first));
	z->pushed = calloc(n, sizeof(*z->pushed));
	z->spare = calloc(n, sizeof(*z->spare));
	if (!z->live || !z->next || !z->prev || !z->first || !z->spare || !z->pushed) {
		zp_fini(&z->t);
		return seterr(-ENOMEM, "cannot allocate the compressed pool's tables for %llu "
			      "frames", (unsigned long long)n);
	}
	*out = &z->t;
	return 0;
}
