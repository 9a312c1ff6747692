/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * image.c: the image format (docs/image.md): its parser and its writer.
 *
 * An image is read by a restore long after it was written, maybe on
 * another machine, maybe damaged on the way, maybe crafted: the parser
 * trusts nothing it reads. Everything a restore will act on, the header,
 * the layout and the page map, is validated before the first guest page
 * table entry is made, so that a bad image is refused whole with -EINVAL
 * and a sentence saying what is wrong, rather than half restored. The
 * header and the map carry their own checksums (xxh3-64), so a flipped bit
 * there is named as corruption and not mistaken for a strange but valid
 * layout. Page data is not read at restore (restores are lazy); each page
 * carries the xxh3-64 of its 4096 bytes, checked by image_load_rec() at
 * its first load, so a damaged page is -EBADMSG (the core's -EIO and
 * counted checksum error) when touched, never wrong bytes.
 *
 * The writer stores each distinct page once. Pages are keyed by a seeded
 * hash (a random seed per image, so that a guest cannot prepare pages that
 * collide), and a page equal by hash is compared byte for byte with the
 * first page stored under that hash, read again from the guest (a snapshot
 * that does not change): equal pages are never told apart by their hash
 * alone. A page that lz4 brings to IMAGE_LZ4_MAX bytes or fewer is stored
 * compressed, packed with others; any other page is stored raw in a block
 * of its own, 4096-aligned, so that a load reads it straight into its
 * frame with no copy. Zero pages are not stored at all (no map entry): the
 * file is only as long as the data.
 *
 * No locks: a parser or writer belongs to its caller.
 */
#define _GNU_SOURCE
#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/random.h>

#include <lz4.h>
#include <xxhash.h>

#include "internal.h"
#include "image.h"

/* ---- encoding ------------------------------------------------------------- */

static uint64_t get64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return le64toh(v);
}

static uint32_t get32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return le32toh(v);
}

static void put64(uint8_t *p, uint64_t v)
{
	v = htole64(v);
	memcpy(p, &v, 8);
}

static void put32(uint8_t *p, uint32_t v)
{
	v = htole32(v);
	memcpy(p, &v, 4);
}

/* Header field offsets (docs/image.md). */
enum {
	H_MAGIC = 0, H_VERSION = 8, H_PAGE_SIZE = 12, H_GUEST_BYTES = 16, H_FLAGS = 24,
	H_NPAGES = 32, H_NMAP = 40, H_NREC = 48, H_DATA_OFF = 56, H_DATA_LEN = 64,
	H_MAP_OFF = 72, H_REC_OFF = 80, H_FILE_BYTES = 88, H_META_CSUM = 96,
	H_RESERVED = 104, H_HDR_CSUM = 112,
};

static void hdr_encode(const struct image_hdr *h, uint8_t *b)
{
	memset(b, 0, IMAGE_HDR_BYTES);
	memcpy(b + H_MAGIC, IMAGE_MAGIC, 8);
	put32(b + H_VERSION, h->version);
	put32(b + H_PAGE_SIZE, h->page_size);
	put64(b + H_GUEST_BYTES, h->guest_bytes);
	put64(b + H_FLAGS, h->flags);
	put64(b + H_NPAGES, h->npages);
	put64(b + H_NMAP, h->nmap);
	put64(b + H_NREC, h->nrec);
	put64(b + H_DATA_OFF, h->data_off);
	put64(b + H_DATA_LEN, h->data_len);
	put64(b + H_MAP_OFF, h->map_off);
	put64(b + H_REC_OFF, h->rec_off);
	put64(b + H_FILE_BYTES, h->file_bytes);
	put64(b + H_META_CSUM, h->meta_csum);
	put64(b + H_HDR_CSUM, XXH3_64bits(b, H_HDR_CSUM));
}

static void hdr_decode(const uint8_t *b, struct image_hdr *h)
{
	h->version = get32(b + H_VERSION);
	h->page_size = get32(b + H_PAGE_SIZE);
	h->guest_bytes = get64(b + H_GUEST_BYTES);
	h->flags = get64(b + H_FLAGS);
	h->npages = get64(b + H_NPAGES);
	h->nmap = get64(b + H_NMAP);
	h->nrec = get64(b + H_NREC);
	h->data_off = get64(b + H_DATA_OFF);
	h->data_len = get64(b + H_DATA_LEN);
	h->map_off = get64(b + H_MAP_OFF);
	h->rec_off = get64(b + H_REC_OFF);
	h->file_bytes = get64(b + H_FILE_BYTES);
	h->meta_csum = get64(b + H_META_CSUM);
	h->hdr_csum = get64(b + H_HDR_CSUM);
}

/* ---- parsing ------------------------------------------------------------------ */

#define BAD(...) (snprintf(msg, msglen, __VA_ARGS__), -EINVAL)

static int hdr_check(const uint8_t *b, uint64_t size, struct image_hdr *h, char *msg,
		     size_t msglen)
{
	uint64_t end;

	if (memcmp(b + H_MAGIC, IMAGE_MAGIC, 8))
		return BAD("not a umlmem image: it does not begin with \"%s\"", IMAGE_MAGIC);
	hdr_decode(b, h);
	if (XXH3_64bits(b, H_HDR_CSUM) != h->hdr_csum)
		return BAD("image header is corrupt: its checksum does not match its bytes");
	if (h->version != IMAGE_VERSION)
		return BAD("image version %u: this library reads version %u", h->version,
			   IMAGE_VERSION);
	if (h->page_size != PAGE_SIZE)
		return BAD("image page size %u: this library has pages of %u bytes",
			   h->page_size, PAGE_SIZE);
	if (h->flags)
		return BAD("image flags 0x%llx are unknown to this library",
			   (unsigned long long)h->flags);
	if (!h->guest_bytes || h->guest_bytes > UMLMEM_MAX_GUEST_BYTES)
		return BAD("image guest size %llu bytes is out of range (1 byte to 128 TiB)",
			   (unsigned long long)h->guest_bytes);
	if (h->npages != (h->guest_bytes + PAGE_SIZE - 1) / PAGE_SIZE)
		return BAD("image header says %llu pages for a guest of %llu bytes",
			   (unsigned long long)h->npages, (unsigned long long)h->guest_bytes);
	if (h->nmap > h->npages || h->nrec > h->nmap || h->nrec > IMAGE_MAX_RECS)
		return BAD("image header counts are inconsistent: %llu map entries, %llu "
			   "records, %llu pages", (unsigned long long)h->nmap,
			   (unsigned long long)h->nrec, (unsigned long long)h->npages);
	/* the layout: header, data, map, records, end; no overflow possible
	   with the counts bounded above (nmap <= 2^35, nrec <= 2^32) */
	if (h->data_off != IMAGE_HDR_BYTES || h->data_len % PAGE_SIZE ||
	    h->data_len > UINT64_MAX / 4 || h->map_off != h->data_off + h->data_len ||
	    h->rec_off != h->map_off + h->nmap * IMAGE_MAP_ENT ||
	    h->file_bytes != h->rec_off + h->nrec * IMAGE_REC_ENT)
		return BAD("image layout is inconsistent: data at %llu (+%llu), map at %llu, "
			   "records at %llu, end at %llu", (unsigned long long)h->data_off,
			   (unsigned long long)h->data_len, (unsigned long long)h->map_off,
			   (unsigned long long)h->rec_off, (unsigned long long)h->file_bytes);
	end = h->file_bytes;
	if (size < end)
		return BAD("image is truncated: %llu bytes, its header says %llu",
			   (unsigned long long)size, (unsigned long long)end);
	return 0;
}

int image_parse(image_read_fn rd, void *arg, uint64_t size, bool keep_map,
		struct image_desc *d, char *msg, size_t msglen)
{
	struct image_hdr *h = &d->hdr;
	uint8_t *hb = NULL, *meta = NULL;
	uint64_t meta_len, next = 0, prev_page = 0;
	int rc;

	memset(d, 0, sizeof(*d));
	msg[0] = '\0';
	if (size < IMAGE_HDR_BYTES)
		return BAD("image is truncated: %llu bytes, less than its %u-byte header",
			   (unsigned long long)size, IMAGE_HDR_BYTES);
	hb = malloc(IMAGE_HDR_BYTES);
	if (!hb)
		return snprintf(msg, msglen, "no memory for the image header"), -ENOMEM;
	rc = rd(arg, 0, hb, IMAGE_HDR_BYTES);
	if (rc)
		snprintf(msg, msglen, "reading the image header failed: %s", umlmem_strerror(rc));
	else
		rc = hdr_check(hb, size, h, msg, msglen);
	free(hb);
	if (rc)
		return rc;

	meta_len = h->nmap * IMAGE_MAP_ENT + h->nrec * IMAGE_REC_ENT;
	meta = malloc(meta_len ? meta_len : 1);
	d->rec = malloc((h->nrec ? h->nrec : 1) * sizeof(*d->rec));
	d->map = malloc((h->nmap ? h->nmap : 1) * sizeof(*d->map));
	if (!meta || !d->rec || !d->map) {
		rc = -ENOMEM;
		snprintf(msg, msglen, "no memory for the map of an image of %llu pages",
			 (unsigned long long)h->nmap);
		goto out;
	}
	if (meta_len && (rc = rd(arg, h->map_off, meta, meta_len))) {
		snprintf(msg, msglen, "reading the image map failed: %s", umlmem_strerror(rc));
		goto out;
	}
	if (XXH3_64bits(meta, meta_len) != h->meta_csum) {
		rc = BAD("image map is corrupt: its checksum does not match its bytes");
		goto out;
	}
	for (uint64_t i = 0; i < h->nmap; i++) {
		struct image_map *m = &d->map[i];

		m->page = get64(meta + i * IMAGE_MAP_ENT);
		m->rec = get64(meta + i * IMAGE_MAP_ENT + 8);
		if (m->page >= h->npages || (i && m->page <= prev_page)) {
			rc = BAD("image map entry %llu: page %llu is %s",
				 (unsigned long long)i, (unsigned long long)m->page,
				 m->page >= h->npages ? "outside the guest" : "out of order");
			goto out;
		}
		/* records are numbered in the order of their first use */
		if (m->rec > next) {
			rc = BAD("image map entry %llu: record %llu is used before record %llu",
				 (unsigned long long)i, (unsigned long long)m->rec,
				 (unsigned long long)next);
			goto out;
		}
		if (m->rec == next)
			next++;
		prev_page = m->page;
	}
	if (next != h->nrec) {
		rc = BAD("image map uses %llu of its %llu records", (unsigned long long)next,
			 (unsigned long long)h->nrec);
		goto out;
	}
	for (uint64_t i = 0; i < h->nrec; i++) {
		const uint8_t *p = meta + h->nmap * IMAGE_MAP_ENT + i * IMAGE_REC_ENT;
		struct image_rec *r = &d->rec[i];

		r->off = get64(p);
		r->len = get32(p + 8);
		r->kind = get32(p + 12);
		r->csum = get64(p + 16);
		if (r->kind != IMAGE_RAW && r->kind != IMAGE_LZ4) {
			rc = BAD("image record %llu: unknown kind %u", (unsigned long long)i, r->kind);
			goto out;
		}
		if (r->kind == IMAGE_RAW ? r->len != PAGE_SIZE || r->off % PAGE_SIZE
					 : !r->len || r->len > IMAGE_LZ4_MAX) {
			rc = BAD("image record %llu: %s of %u bytes at %llu", (unsigned long long)i,
				 r->kind == IMAGE_RAW ? "a raw page" : "a compressed page",
				 r->len, (unsigned long long)r->off);
			goto out;
		}
		if (r->off < h->data_off || r->off > h->map_off || h->map_off - r->off < r->len) {
			rc = BAD("image record %llu: bytes [%llu, +%u) lie outside the page data "
				 "[%llu, %llu)", (unsigned long long)i, (unsigned long long)r->off,
				 r->len, (unsigned long long)h->data_off,
				 (unsigned long long)h->map_off);
			goto out;
		}
	}
	rc = 0;
out:
	free(meta);
	if (rc) {
		image_desc_free(d);
	} else if (!keep_map) {
		free(d->map);
		d->map = NULL;
	}
	return rc;
}

void image_desc_free(struct image_desc *d)
{
	free(d->rec);
	free(d->map);
	d->rec = NULL;
	d->map = NULL;
}

int image_load_rec(image_read_fn rd, void *arg, const struct image_rec *r, void *page,
		   void *tmp)
{
	int rc;

	if (r->kind == IMAGE_RAW) {
		rc = rd(arg, r->off, page, PAGE_SIZE);
	} else {
		rc = rd(arg, r->off, tmp, r->len);
		if (!rc && LZ4_decompress_safe(tmp, page, (int)r->len, PAGE_SIZE) != PAGE_SIZE)
			rc = -EBADMSG;
	}
	if (rc)
		return rc == -EINVAL ? -EIO : rc;
	return swap_page_csum(page) == r->csum ? 0 : -EBADMSG;
}

/* ---- writing ------------------------------------------------------------------ */

/* Compressed pages are packed into a buffer of this many bytes, written out
   (padded to a block) when the next does not fit. */
#define PACK_BYTES (256u * 1024)

struct wslot {           /* dedup index: open addressing on the seeded hash */
	uint64_t hash;
	uint64_t rec1;   /* record + 1; 0: empty */
};

struct image_writer {
	int fd;
	uint64_t base;           /* the image's offset in fd */
	struct image_hdr h;
	image_page_fn rdpage;
	void *arg;
	uint64_t seed;
	uint64_t off;            /* next free block, from the image's start */
	uint8_t *pack;           /* compressed pages not yet written */
	uint32_t pack_len;
	uint64_t pack_off;       /* where the pack goes: PACK_BYTES reserved there */
	uint64_t pack_end;       /* end of the blocks the last pack written filled */
	struct image_map *map;
	uint64_t nmap, map_cap;
	struct image_rec *rec;
	uint64_t *rec_page;      /* first guest page of each record */
	uint64_t nrec, rec_cap, nlz4;
	struct wslot *idx;
	uint64_t idx_mask;
	uint8_t *cmp, *tmp;      /* compression output, a page for comparisons */
};

static int wr(struct image_writer *w, uint64_t off, const void *buf, size_t len, char *msg,
	      size_t msglen)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = pwrite(w->fd, p, len, (off_t)(w->base + off));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int err = n < 0 ? -errno : -EIO;

			snprintf(msg, msglen, "writing the image at offset %llu failed: %s",
				 (unsigned long long)(w->base + off), umlmem_strerror(err));
			return err;
		}
		p += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

int image_writer_create(int fd, uint64_t base, uint64_t guest_bytes, image_page_fn rdpage,
			void *arg, struct image_writer **out, char *msg, size_t msglen)
{
	struct image_writer *w = calloc(1, sizeof(*w));
	int rc;

	*out = NULL;
	if (!w)
		goto nomem;
	w->fd = fd;
	w->base = base;
	w->rdpage = rdpage;
	w->arg = arg;
	w->h.version = IMAGE_VERSION;
	w->h.page_size = PAGE_SIZE;
	w->h.guest_bytes = guest_bytes;
	w->h.npages = (guest_bytes + PAGE_SIZE - 1) / PAGE_SIZE;
	w->h.data_off = IMAGE_HDR_BYTES;
	w->off = IMAGE_HDR_BYTES;
	if (getrandom(&w->seed, sizeof(w->seed), GRND_NONBLOCK) != sizeof(w->seed))
		w->seed = (uint64_t)(uintptr_t)w ^ UINT64_C(0x9E3779B97F4A7C15);
	w->pack = malloc(PACK_BYTES);
	w->cmp = malloc(PAGE_SIZE);
	w->tmp = aligned_alloc(PAGE_SIZE, PAGE_SIZE);
	w->idx_mask = 1023;
	w->idx = calloc(w->idx_mask + 1, sizeof(*w->idx));
	if (!w->pack || !w->cmp || !w->tmp || !w->idx)
		goto nomem;
	/* no header until the image is whole: a save cut short leaves none */
	memset(w->pack, 0, IMAGE_HDR_BYTES);
	rc = wr(w, 0, w->pack, IMAGE_HDR_BYTES, msg, msglen);
	if (rc) {
		image_writer_free(w);
		return rc;
	}
	*out = w;
	return 0;
nomem:
	image_writer_free(w);
	snprintf(msg, msglen, "no memory to write an image");
	return -ENOMEM;
}

static bool idx_grow(struct image_writer *w)
{
	uint64_t n = 2 * (w->idx_mask + 1);
	struct wslot *t = calloc(n, sizeof(*t));

	if (!t)
		return false;
	for (uint64_t i = 0; i <= w->idx_mask; i++) {
		uint64_t j;

		if (!w->idx[i].rec1)
			continue;
		for (j = w->idx[i].hash & (n - 1); t[j].rec1; j = (j + 1) & (n - 1))
			;
		t[j] = w->idx[i];
	}
	free(w->idx);
	w->idx = t;
	w->idx_mask = n - 1;
	return true;
}

static int pack_flush(struct image_writer *w, char *msg, size_t msglen)
{
	uint32_t len = (w->pack_len + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1);
	int rc;

	if (!w->pack_len)
		return 0;
	memset(w->pack + w->pack_len, 0, len - w->pack_len);
	rc = wr(w, w->pack_off, w->pack, len, msg, msglen);
	if (rc)
		return rc;
	w->pack_end = w->pack_off + len;
	w->pack_len = 0;
	return 0;
}

/* Stores @page as a new record; returns its number in *rec. */
static int store(struct image_writer *w, uint64_t idx, const void *page, uint64_t *rec,
		 char *msg, size_t msglen)
{
	struct image_rec r = { .csum = swap_page_csum(page) };
	int clen = LZ4_compress_default(page, (char *)w->cmp, PAGE_SIZE, IMAGE_LZ4_MAX);
	int rc;

	if (w->nrec == IMAGE_MAX_RECS) {
		snprintf(msg, msglen, "an image holds at most %llu distinct pages",
			 (unsigned long long)IMAGE_MAX_RECS);
		return -ENOSPC;
	}
	if (w->nrec == w->rec_cap) {
		uint64_t cap = w->rec_cap ? 2 * w->rec_cap : 1024;
		struct image_rec *nr = realloc(w->rec, cap * sizeof(*nr));
		uint64_t *np;

		if (nr)
			w->rec = nr;
		np = nr ? realloc(w->rec_page, cap * sizeof(*np)) : NULL;
		if (!np) {
			snprintf(msg, msglen, "no memory for %llu image records",
				 (unsigned long long)cap);
			return -ENOMEM;
		}
		w->rec_page = np;
		w->rec_cap = cap;
	}
	if (clen > 0) {
		if (w->pack_len + (uint32_t)clen > PACK_BYTES) {
			rc = pack_flush(w, msg, msglen);
			if (rc)
				return rc;
		}
		if (!w->pack_len) {
			/* the pack takes the next blocks; raw pages go after it */
			w->pack_off = w->off;
			w->off += PACK_BYTES;
		}
		r.kind = IMAGE_LZ4;
		r.len = (uint32_t)clen;
		r.off = w->pack_off + w->pack_len;
		memcpy(w->pack + w->pack_len, w->cmp, (size_t)clen);
		w->pack_len += (uint32_t)clen;
		w->nlz4++;
	} else {
		r.kind = IMAGE_RAW;
		r.len = PAGE_SIZE;
		r.off = w->off;
		rc = wr(w, w->off, page, PAGE_SIZE, msg, msglen);
		if (rc)
			return rc;
		w->off += PAGE_SIZE;
	}
	w->rec_page[w->nrec] = idx;
	w->rec[w->nrec] = r;
	*rec = w->nrec++;
	return 0;
}

int image_writer_add(struct image_writer *w, uint64_t idx, const void *page, char *msg,
		     size_t msglen)
{
	uint64_t hash, j, rec = UINT64_MAX;
	int rc;

	if (page_is_zero(page))
		return 0;
	if (w->nmap == w->map_cap) {
		uint64_t cap = w->map_cap ? 2 * w->map_cap : 1024;
		struct image_map *nm = realloc(w->map, cap * sizeof(*nm));

		if (!nm) {
			snprintf(msg, msglen, "no memory for an image map of %llu pages",
				 (unsigned long long)cap);
			return -ENOMEM;
		}
		w->map = nm;
		w->map_cap = cap;
	}
	hash = page_hash(page, w->seed);
	for (j = hash & w->idx_mask; w->idx[j].rec1; j = (j + 1) & w->idx_mask) {
		uint64_t r = w->idx[j].rec1 - 1;

		if (w->idx[j].hash != hash)
			continue;
		/* equal by hash: equal by bytes? (the guest is a snapshot) */
		rc = w->rdpage(w->arg, w->rec_page[r], w->tmp);
		if (rc) {
			snprintf(msg, msglen, "reading page %llu of the guest again failed: %s",
				 (unsigned long long)w->rec_page[r], umlmem_strerror(rc));
			return rc;
		}
		if (!memcmp(w->tmp, page, PAGE_SIZE)) {
			rec = r;
			break;
		}
	}
	if (rec == UINT64_MAX) {
		rc = store(w, idx, page, &rec, msg, msglen);
		if (rc)
			return rc;
		/* j is the empty slot that ended the probe */
		w->idx[j].hash = hash;
		w->idx[j].rec1 = rec + 1;
		if (2 * w->nrec > w->idx_mask + 1 && !idx_grow(w)) {
			snprintf(msg, msglen, "no memory for the index of %llu image pages",
				 (unsigned long long)w->nrec);
			return -ENOMEM;
		}
	}
	w->map[w->nmap].page = idx;
	w->map[w->nmap].rec = rec;
	w->nmap++;
	return 0;
}

int image_writer_finish(struct image_writer *w, char *msg, size_t msglen)
{
	uint64_t meta_len = w->nmap * IMAGE_MAP_ENT + w->nrec * IMAGE_REC_ENT;
	uint8_t *meta = malloc(meta_len ? meta_len : 1), *p;
	uint8_t *hb = malloc(IMAGE_HDR_BYTES);
	uint64_t end;
	int rc;

	if (!meta || !hb) {
		free(meta);
		free(hb);
		snprintf(msg, msglen, "no memory for the map of an image of %llu pages",
			 (unsigned long long)w->nmap);
		return -ENOMEM;
	}
	rc = pack_flush(w, msg, msglen);
	if (rc)
		goto out;
	/* a last pack that was not filled ends the data where its blocks end */
	end = w->off;
	if (w->nlz4 && w->pack_off + PACK_BYTES == w->off)
		end = w->pack_end;
	w->h.data_len = end - w->h.data_off;
	w->h.nmap = w->nmap;
	w->h.nrec = w->nrec;
	w->h.map_off = end;
	w->h.rec_off = end + w->nmap * IMAGE_MAP_ENT;
	w->h.file_bytes = w->h.rec_off + w->nrec * IMAGE_REC_ENT;
	p = meta;
	for (uint64_t i = 0; i < w->nmap; i++, p += IMAGE_MAP_ENT) {
		put64(p, w->map[i].page);
		put64(p + 8, w->map[i].rec);
	}
	for (uint64_t i = 0; i < w->nrec; i++, p += IMAGE_REC_ENT) {
		put64(p, w->rec[i].off);
		put32(p + 8, w->rec[i].len);
		put32(p + 12, w->rec[i].kind);
		put64(p + 16, w->rec[i].csum);
	}
	w->h.meta_csum = XXH3_64bits(meta, meta_len);
	hdr_encode(&w->h, hb);
	if ((rc = wr(w, w->h.map_off, meta, meta_len, msg, msglen)) ||
	    (rc = wr(w, 0, hb, IMAGE_HDR_BYTES, msg, msglen)))
		goto out;
	/* the image ends where its records end, whatever the file held */
	if (ftruncate(w->fd, (off_t)(w->base + w->h.file_bytes)) && errno != EINVAL) {
		rc = -errno;
		snprintf(msg, msglen, "cutting the image file to its length failed: %s",
			 umlmem_strerror(rc));
	}
out:
	free(meta);
	free(hb);
	return rc;
}

void image_writer_counts(const struct image_writer *w, uint64_t *nmap, uint64_t *nrec,
			 uint64_t *nlz4, uint64_t *bytes)
{
	*nmap = w->nmap;
	*nrec = w->nrec;
	*nlz4 = w->nlz4;
	*bytes = w->h.file_bytes;
}

void image_writer_free(struct image_writer *w)
{
	if (!w)
		return;
	free(w->pack);
	free(w->cmp);
	free(w->tmp);
	free(w->idx);
	free(w->map);
	free(w->rec);
	free(w->rec_page);
	free(w);
}

int image_fd_read(void *arg, uint64_t off, void *buf, size_t len)
{
	int fd = *(int *)arg;
	uint8_t *p = buf;

	while (len) {
		ssize_t n = pread(fd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (!n)
			return -EINVAL;   /* the file ends early */
		p += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}
