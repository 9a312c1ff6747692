/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * image.h: the umlmem image format (docs/image.md) and its reader and
 * writer (image.c), and the read-only tier made of images (tier_image.c).
 *
 * Everything on disk is little-endian. Offsets are from the start of the
 * image, which is offset 0 of the file a restore reads.
 */
#ifndef UMLMEM_IMAGE_H
#define UMLMEM_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define IMAGE_MAGIC     "UMLMEMIM"
#define IMAGE_VERSION   1u
#define IMAGE_HDR_BYTES 4096u   /* the header block; its fields fill the first IMAGE_HDR_LEN */
#define IMAGE_HDR_LEN   120u    /* bytes of fields; hdr_csum is the xxh3 of the 112 before it */
#define IMAGE_MAP_ENT   16u     /* bytes of one page map entry */
#define IMAGE_REC_ENT   24u     /* bytes of one record */
#define IMAGE_MAX_RECS  (UINT64_C(1) << 32)  /* distinct pages an image may hold */
/* Compressed records are kept when lz4 brings the page to this many bytes
   or fewer (as the compressed pool: what does not save a quarter is read
   faster raw, straight into its frame). */
#define IMAGE_LZ4_MAX   3072u

enum { IMAGE_RAW = 0, IMAGE_LZ4 = 1 };

/* The header, decoded. */
struct image_hdr {
	uint32_t version, page_size;
	uint64_t guest_bytes;
	uint64_t flags;          /* none defined: must be 0 */
	uint64_t npages;         /* ceil(guest_bytes / 4096) */
	uint64_t nmap;           /* page map entries: pages that are not zero */
	uint64_t nrec;           /* records: distinct pages stored */
	uint64_t data_off, data_len;  /* the page data: 4096-aligned blocks */
	uint64_t map_off;        /* == data_off + data_len */
	uint64_t rec_off;        /* == map_off + nmap * 16 */
	uint64_t file_bytes;     /* == rec_off + nrec * 24: the image's length */
	uint64_t meta_csum;      /* xxh3-64 of the map and the records, as on disk */
	uint64_t hdr_csum;       /* xxh3-64 of the 112 header bytes before it */
};

/* One record: where a distinct page is and how to prove it. */
struct image_rec {
	uint64_t off;            /* from the image's start */
	uint32_t len;            /* 4096 (raw) or the lz4 bytes */
	uint32_t kind;           /* IMAGE_RAW, IMAGE_LZ4 */
	uint64_t csum;           /* xxh3-64 of the page's 4096 bytes (swap_page_csum) */
};

/* One page map entry: guest page @page holds record @rec. */
struct image_map {
	uint64_t page;
	uint64_t rec;
};

/* Reads @len bytes at @off of the image into @buf: 0, or a negative errno
   (-EINVAL when the image ends before). */
typedef int (*image_read_fn)(void *arg, uint64_t off, void *buf, size_t len);

/* The image_read_fn of an image file: @arg points at its descriptor
   (pread, retried on EINTR and short reads). */
int image_fd_read(void *arg, uint64_t off, void *buf, size_t len);

/* A parsed, validated image: its header and records, and (when asked) its
   page map. */
struct image_desc {
	struct image_hdr hdr;
	struct image_rec *rec;   /* nrec */
	struct image_map *map;   /* nmap, or NULL when not kept */
};

/*
 * Reads and validates the image of @size bytes behind @rd: header, layout,
 * checksums, the map (ascending pages inside the guest, records numbered in
 * the order of their first use, every record used) and every record's
 * place. On success fills @d (its arrays malloc'd; image_desc_free) and
 * returns 0; @keep_map false frees the map once checked. A bad image is
 * -EINVAL with what is wrong in @msg; -ENOMEM; a failed read its errno.
 */
int  image_parse(image_read_fn rd, void *arg, uint64_t size, bool keep_map,
		 struct image_desc *d, char *msg, size_t msglen);
void image_desc_free(struct image_desc *d);

/*
 * Record @r of an image into @page (4096 bytes): raw records are read
 * straight into it, compressed ones through @tmp (at least 4096 bytes);
 * verified against the record's checksum. 0, -EBADMSG (the bytes are not
 * the page saved), or the read's errno.
 */
int  image_load_rec(image_read_fn rd, void *arg, const struct image_rec *r, void *page,
		    void *tmp);

/* ---- writing -------------------------------------------------------------- */
struct image_writer;
/* Reads page @idx of the guest being saved into @buf (4096 bytes); the
   writer calls it to confirm that a page equal by hash is equal by bytes. */
typedef int (*image_page_fn)(void *arg, uint64_t idx, void *buf);

/* An image of a guest of @guest_bytes written to @fd at its offset @base.
   -ENOMEM, with @msg. */
int  image_writer_create(int fd, uint64_t base, uint64_t guest_bytes, image_page_fn rdpage,
			 void *arg, struct image_writer **out, char *msg, size_t msglen);
/* Adds page @idx (ascending across calls) holding @page. A page of zeros is
   left out. 0, or a negative errno (write failed, no memory) with @msg. */
int  image_writer_add(struct image_writer *w, uint64_t idx, const void *page, char *msg,
		      size_t msglen);
/* Writes the map, the records and the header. 0 or a negative errno. */
int  image_writer_finish(struct image_writer *w, char *msg, size_t msglen);
/* Frees the writer (after finish, or to give up). */
void image_writer_free(struct image_writer *w);
/* What the writer wrote (after finish): map entries, records, compressed
   records, bytes of the image. */
void image_writer_counts(const struct image_writer *w, uint64_t *nmap, uint64_t *nrec,
			 uint64_t *nlz4, uint64_t *bytes);

/* ---- tier_image.c ----------------------------------------------------------- */
struct umlmem_host;
struct tier;
/* The image tier of @h (TIER_IMAGE): holds the images restored on the host,
   each once per file. */
int  tier_image_create(struct umlmem_host *h, struct tier **out);
/*
 * Opens the image in @fd (dup'd; an image already open from the same file,
 * unchanged, is shared) and validates it; returns its number in the tier in
 * *@img and its map, which the caller turns into page table entries and
 * frees, with one tier reference per map entry already taken (the caller
 * owns them). Caller holds no umlmem lock. -EINVAL (bad image, with the
 * thread's message), -ENOMEM, -EBADF, -ENOSPC (too many images).
 */
int  tier_image_open(struct tier *t, int fd, struct image_desc *d, uint64_t *img);
/* The tier handle of record @rec of image @img. */
uint64_t tier_image_handle(uint64_t img, uint64_t rec);

#endif
