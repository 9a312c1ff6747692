/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * tier_image.c: saved images as a read-only tier (tier.h).
 *
 * A restored guest's pages are not read at restore: each page table entry
 * names its image record as a store key (TIER_IMAGE, handle), exactly as an
 * evicted page names its swap slot, and the first touch loads it through
 * the core's fault path, with its readahead and its swap cache. So the
 * rest of the library needs nothing new for restores: a clean page read
 * from an image is dropped by the pager at no cost (its key stays valid),
 * a written one goes to swap like any other, and every guest restored from
 * one image, or cloned from one, finds the same frame for a record through
 * the swap cache keyed by (tier, handle), until it writes.
 *
 * Why one tier for all images, not one per image. A store key has three
 * tier bits (tier.h): a host has eight tiers at most, but may restore from
 * any number of files. So the image tier is one tier whose handles name
 * both the image and the record: handle = image << IMG_REC_BITS | record.
 * Each distinct image file (same device and inode, same header and map
 * checksums) is opened once per host, whatever the number of restores
 * from it: that is what lets their guests share frames. A file rewritten
 * in place since is a different image and gets a new number.
 *
 * Lifetime. An image lives as long as some key names one of its records
 * (page table entries, frames holding a clean copy, readahead in flight):
 * the tier counts references per record and closes the image, its file
 * descriptor and its records when the last one goes. The number is then
 * free again; no key can name it any more.
 *
 * Loads are plain preads on the image's own descriptor (the host's I/O
 * engine is bound to the swap files), with runs of adjacent raw records
 * read by one preadv straight into their frames: a prefetch of a sorted
 * working set (umlmem_guest_prefetch) and readahead are one system call
 * per run. A batch first tells the kernel every record it will read
 * (POSIX_FADV_WILLNEED, which starts the reads without waiting), so the
 * runs of a batch are on the disk together, not one after the other.
 * Every page is verified against its record's checksum.
 *
 * Locking: timg.lock (a leaf) protects the image table and every image's
 * reference counts; it is taken under host->lock by ref, unref, refs,
 * live, check and info, and alone by open. A load takes no lock: the
 * caller holds a reference on every handle it loads, so the image stays,
 * and its records and descriptor never change while it is open; the table
 * slot is read with an acquire load that pairs with the release store that
 * published it in tier_image_open().
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include "internal.h"
#include "image.h"

#define IMG_REC_BITS 32u
#define IMG_MAX      1024u   /* images open at once on one host */

/* One open image. Invariants (timg_check): refs[r] > 0 for exactly live
   records, and sum(refs) == nrefs > 0 while it is in the table. */
struct img {
	dev_t dev;
	ino_t ino;
	int fd;
	struct image_hdr hdr;
	struct image_rec *rec;
	uint32_t *refs;          /* per record, under timg.lock */
	uint64_t live;           /* records with refs > 0 */
	uint64_t nrefs;          /* sum of refs */
	char path[256];          /* the file's name when opened, for messages */
};

struct timg {
	struct tier t;
	struct umlmem_host *h;
	pthread_mutex_t lock;    /* leaf; see above */
	struct img *img[IMG_MAX];
	uint64_t nimg;
};

static struct timg *ti(struct tier *t)
{
	return (struct timg *)t;
}

uint64_t tier_image_handle(uint64_t img, uint64_t rec)
{
	return img << IMG_REC_BITS | rec;
}

static inline uint64_t h_img(uint64_t hd)
{
	return hd >> IMG_REC_BITS;
}

static inline uint64_t h_rec(uint64_t hd)
{
	return hd & ((UINT64_C(1) << IMG_REC_BITS) - 1);
}

static void img_free(struct img *m)
{
	if (!m)
		return;
	if (m->fd >= 0)
		close(m->fd);
	free(m->rec);
	free(m->refs);
	free(m);
}

/* ---- the tier operations ---------------------------------------------------- */

static unsigned timg_store(struct tier *t, void *const *pages, unsigned n, uint64_t *handles,
			   int *res, unsigned flags, char *msg, size_t msglen)
{
	(void)t; (void)pages; (void)handles; (void)flags;
	for (unsigned i = 0; i < n; i++)
		res[i] = -ENOSPC;
	snprintf(msg, msglen, "an image is read-only");
	return 0;
}

/* Reads the run of raw records [i, j) of @m, adjacent on disk, into their
   buffers with one preadv; a short or failed read leaves each to a read of
   its own. */
static void load_run(struct img *m, const uint64_t *handles, void *const *bufs, unsigned i,
		     unsigned j, int *res)
{
	struct iovec iov[1 + RA_MAX];
	uint64_t off = m->rec[h_rec(handles[i])].off;
	ssize_t n;

	for (unsigned k = i; k < j; k++)
		iov[k - i] = (struct iovec){ bufs[k], PAGE_SIZE };
	do
		n = preadv(m->fd, iov, (int)(j - i), (off_t)off);
	while (n < 0 && errno == EINTR);
	for (unsigned k = i; k < j; k++) {
		const struct image_rec *r = &m->rec[h_rec(handles[k])];

		if (n == (ssize_t)((j - i) * PAGE_SIZE))
			res[k] = swap_page_csum(bufs[k]) == r->csum ? 0 : -EBADMSG;
		else
			res[k] = image_load_rec(image_fd_read, &m->fd, r, bufs[k], NULL);
	}
}

static void timg_load(struct tier *t, const uint64_t *handles, void *const *bufs, unsigned n,
		      int *res)
{
	_Alignas(16) char tmp[PAGE_SIZE];

	/* A batch (readahead, prefetch) is read one run at a time: let the
	   kernel start every run's reads at once first, so that they are in
	   flight together rather than one after the other. */
	/* the acquire loads of img[] here and in timg_where() pair with the
	   release store of tier_image_open() */
	for (unsigned i = 0; n > 1 && i < n; i++) {
		struct img *m = LOAD_ACQ(&ti(t)->img[h_img(handles[i])]);
		const struct image_rec *r = &m->rec[h_rec(handles[i])];

		(void)posix_fadvise(m->fd, (off_t)r->off, r->len, POSIX_FADV_WILLNEED);
	}
	for (unsigned i = 0, j; i < n; i = j) {
		struct img *m = LOAD_ACQ(&ti(t)->img[h_img(handles[i])]);
		const struct image_rec *r = &m->rec[h_rec(handles[i])];

		j = i + 1;
		if (r->kind != IMAGE_RAW) {
			res[i] = image_load_rec(image_fd_read, &m->fd, r, bufs[i], tmp);
			continue;
		}
		while (j < n && h_img(handles[j]) == h_img(handles[i])) {
			const struct image_rec *q = &m->rec[h_rec(handles[j])];

			if (q->kind != IMAGE_RAW || q->off != r->off + (j - i) * PAGE_SIZE)
				break;
			j++;
		}
		load_run(m, handles, bufs, i, j, res);
	}
}

static struct img *img_of(struct timg *s, uint64_t hd)
{
	return h_img(hd) < IMG_MAX ? s->img[h_img(hd)] : NULL;
}

static void timg_ref(struct tier *t, uint64_t hd, unsigned n)
{
	struct timg *s = ti(t);
	struct img *m;

	pthread_mutex_lock(&s->lock);
	m = img_of(s, hd);
	if (!m->refs[h_rec(hd)])
		m->live++;
	m->refs[h_rec(hd)] += n;
	m->nrefs += n;
	pthread_mutex_unlock(&s->lock);
}

static void timg_unref(struct tier *t, uint64_t hd, unsigned n)
{
	struct timg *s = ti(t);
	struct img *m;

	pthread_mutex_lock(&s->lock);
	m = img_of(s, hd);
	m->refs[h_rec(hd)] -= n;
	if (!m->refs[h_rec(hd)])
		m->live--;
	m->nrefs -= n;
	if (!m->nrefs) {
		/* no key names it any more: close it */
		STORE(&s->img[h_img(hd)], NULL);
		s->nimg--;
	} else {
		m = NULL;
	}
	pthread_mutex_unlock(&s->lock);
	img_free(m);
}

static uint32_t timg_refs(struct tier *t, uint64_t hd)
{
	struct timg *s = ti(t);
	struct img *m;
	uint32_t r = 0;

	pthread_mutex_lock(&s->lock);
	m = img_of(s, hd);
	if (m && h_rec(hd) < m->hdr.nrec)
		r = m->refs[h_rec(hd)];
	pthread_mutex_unlock(&s->lock);
	return r;
}

/* Records in use after @from, of the same image: readahead reads them in
   record order, which is the order of their first page in the guest. */
static unsigned timg_live(struct tier *t, uint64_t from, unsigned n, uint64_t *out)
{
	struct timg *s = ti(t);
	struct img *m;
	unsigned got = 0;

	pthread_mutex_lock(&s->lock);
	m = img_of(s, from);
	for (uint64_t r = h_rec(from); m && r < m->hdr.nrec && r < h_rec(from) + n; r++)
		if (m->refs[r])
			out[got++] = tier_image_handle(h_img(from), r);
	pthread_mutex_unlock(&s->lock);
	return got;
}

static int timg_check(struct tier *t, char *err, size_t errlen)
{
	struct timg *s = ti(t);
	uint64_t open = 0;
	int rc = 0;

	pthread_mutex_lock(&s->lock);
	for (unsigned i = 0; i < IMG_MAX && !rc; i++) {
		struct img *m = s->img[i];
		uint64_t live = 0, sum = 0;

		if (!m)
			continue;
		open++;
		for (uint64_t r = 0; r < m->hdr.nrec; r++) {
			live += m->refs[r] != 0;
			sum += m->refs[r];
		}
		if (live != m->live || sum != m->nrefs || !sum) {
			snprintf(err, errlen, "image %u: %llu records in use and %llu references "
				 "counted, %llu and %llu recorded", i, (unsigned long long)live,
				 (unsigned long long)sum, (unsigned long long)m->live,
				 (unsigned long long)m->nrefs);
			rc = -EUCLEAN;
		}
	}
	if (!rc && open != s->nimg) {
		snprintf(err, errlen, "%llu images open, %llu recorded", (unsigned long long)open,
			 (unsigned long long)s->nimg);
		rc = -EUCLEAN;
	}
	pthread_mutex_unlock(&s->lock);
	return rc;
}

static void timg_info(struct tier *t, struct tier_info *out)
{
	struct timg *s = ti(t);

	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&s->lock);
	for (unsigned i = 0; i < IMG_MAX; i++)
		if (s->img[i])
			out->handles += s->img[i]->live;
	pthread_mutex_unlock(&s->lock);
}

static void timg_fini(struct tier *t)
{
	struct timg *s = ti(t);

	/* every guest is gone by now, and with them every reference */
	for (unsigned i = 0; i < IMG_MAX; i++)
		img_free(s->img[i]);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

static void timg_where(struct tier *t, uint64_t hd, char *buf, size_t len)
{
	struct img *m = LOAD_ACQ(&ti(t)->img[h_img(hd)]);
	const struct image_rec *r = &m->rec[h_rec(hd)];

	snprintf(buf, len, "image file '%s' (record %llu, %u bytes at offset %llu)", m->path,
		 (unsigned long long)h_rec(hd), r->len, (unsigned long long)r->off);
}

static const struct tier_ops tier_image_ops = {
	.name = "image",
	.store = timg_store,
	.load = timg_load,
	.ref = timg_ref,
	.unref = timg_unref,
	.refs = timg_refs,
	.live = timg_live,
	.check = timg_check,
	.info = timg_info,
	.fini = timg_fini,
	.where = timg_where,
};

int tier_image_create(struct umlmem_host *h, struct tier **out)
{
	struct timg *s = calloc(1, sizeof(*s));

	if (!s)
		return seterr(-ENOMEM, "cannot allocate the image tier");
	pthread_mutex_init(&s->lock, NULL);
	s->t.ops = &tier_image_ops;
	s->t.id = TIER_IMAGE;
	s->t.priv = s;
	s->h = h;
	*out = &s->t;
	return 0;
}

/* ---- opening ------------------------------------------------------------------ */

/* The name of the file open on @fd, for messages: its path as the kernel
   has it, or the descriptor when there is none (no /proc). */
static void img_name(struct img *m, int fd)
{
	char link[64];
	ssize_t n;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, m->path, sizeof(m->path) - 1);
	if (n > 0)
		m->path[n] = '\0';   /* a longer name is cut */
	else
		snprintf(m->path, sizeof(m->path), "fd %d", fd);
}

int tier_image_open(struct tier *t, int fd, struct image_desc *d, uint64_t *out)
{
	struct timg *s = ti(t);
	struct img *m = calloc(1, sizeof(*m));
	char msg[256];
	struct stat st;
	unsigned i, slot = IMG_MAX;
	int rc;

	if (!m)
		return seterr(-ENOMEM, "cannot allocate an image");
	m->fd = -1;
	if (fstat(fd, &st)) {
		rc = -errno;
		img_free(m);
		return seterr(rc == -EBADF ? -EBADF : rc, "umlmem_guest_restore: fd %d: %s", fd,
			      umlmem_strerror(rc));
	}
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
		img_free(m);
		return seterr(-EINVAL, "umlmem_guest_restore: fd %d is not a regular file or "
			      "block device", fd);
	}
	m->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (m->fd < 0) {
		rc = -errno;
		img_free(m);
		return seterr(rc, "umlmem_guest_restore: cannot dup fd %d: %s", fd,
			      umlmem_strerror(rc));
	}
	if (S_ISBLK(st.st_mode)) {
		off_t end = lseek(m->fd, 0, SEEK_END);

		st.st_size = end < 0 ? 0 : end;
	}
	rc = image_parse(image_fd_read, &m->fd, (uint64_t)st.st_size, true, d, msg, sizeof(msg));
	if (rc) {
		img_free(m);
		return seterr(rc, "umlmem_guest_restore: %s", msg);
	}
	m->dev = st.st_dev;
	m->ino = st.st_ino;
	img_name(m, fd);
	m->hdr = d->hdr;
	m->refs = calloc(d->hdr.nrec ? d->hdr.nrec : 1, sizeof(*m->refs));
	if (!m->refs) {
		image_desc_free(d);
		img_free(m);
		return seterr(-ENOMEM, "cannot allocate the counts of %llu image records",
			      (unsigned long long)d->hdr.nrec);
	}

	pthread_mutex_lock(&s->lock);
	/* the same image open already: share it, so its frames are shared */
	for (i = 0; i < IMG_MAX; i++) {
		struct img *o = s->img[i];

		if (!o) {
			if (slot == IMG_MAX)
				slot = i;
			continue;
		}
		if (o->dev == m->dev && o->ino == m->ino && o->hdr.hdr_csum == m->hdr.hdr_csum &&
		    o->hdr.meta_csum == m->hdr.meta_csum)
			break;
	}
	if (i < IMG_MAX) {
		slot = i;
		img_free(m);
		m = s->img[i];
	} else if (slot == IMG_MAX) {
		pthread_mutex_unlock(&s->lock);
		image_desc_free(d);
		img_free(m);
		return seterr(-ENOSPC, "umlmem_guest_restore: %u different images are open on "
			      "this host, the most it takes; destroy the guests of one first",
			      IMG_MAX);
	} else {
		m->rec = d->rec;
		d->rec = NULL;
		s->nimg++;
	}
	free(d->rec);   /* the shared image's records serve */
	d->rec = NULL;
	/* the entries the caller makes hold one reference each */
	for (uint64_t k = 0; k < d->hdr.nmap; k++) {
		uint64_t r = d->map[k].rec;

		if (!m->refs[r])
			m->live++;
		m->refs[r]++;
	}
	m->nrefs += d->hdr.nmap;
	if (!m->nrefs) {
		/* a new image of zeros only: nothing will name it (an image
		   open already has references) */
		s->nimg--;
		pthread_mutex_unlock(&s->lock);
		img_free(m);
		*out = IMG_MAX;
		return 0;
	}
	/* pairs with the acquire loads of timg_load() and timg_where() */
	STORE_REL(&s->img[slot], m);
	pthread_mutex_unlock(&s->lock);
	*out = slot;
	return 0;
}
