/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Images: umlmem_guest_save and umlmem_guest_restore against a plain copy
 * of every guest's bytes. A restore reads nothing until a page is touched;
 * guests restored from one image share its frames; restored guests mixed
 * with writes, swap, merging, discard and destroy in any order read what
 * the model says; a damaged or truncated image is -EINVAL at restore with
 * a message naming what is wrong, and a damaged page -EIO (a counted
 * checksum error) at its first touch, never wrong bytes. The working-set
 * record lists the pages loaded, and a prefetch of it leaves nothing to
 * load when the guest runs.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"
#include "image.h"

#define PG UMLMEM_PAGE_SIZE
#define NP 300u                   /* guest pages */
#define GBYTES (NP * PG - 100)     /* the last page is partial */

static struct {
	char dir[64];
	char file[128];
	umlmem_host *h;
	uint8_t *mem;                 /* the oracle of the saved guest */
} T;

static void setup(void)
{
	memset(&T, 0, sizeof(T));
	tu_mkswapdir(T.dir);
	snprintf(T.file, sizeof(T.file), "%s/img", T.dir);
	T.mem = calloc(NP, PG);
	cr_assert_not_null(T.mem);
}

static void teardown(void)
{
	umlmem_host_destroy(T.h);
	free(T.mem);
	unlink(T.file);
	tu_rmswapdir(T.dir);
}

TestSuite(image, .init = setup, .fini = teardown);

/* Page @i of the saved guest: zero (1 in 5), a copy of page i % 7 + 10 (1
   in 5), compressible text, or random bytes; the model gets the same. */
static void fill_guest(umlmem_guest *g, uint64_t seed)
{
	for (uint64_t i = 0; i < NP; i++) {
		uint8_t *p = T.mem + i * PG;
		size_t len = i == NP - 1 ? PG - 100 : PG;

		switch ((i + seed) % 5) {
		case 0:
			continue;
		case 1:
			tu_fill(p, PG, seed * 100 + i % 7);
			break;
		case 2:
			for (unsigned j = 0; j < PG; j++)
				p[j] = (uint8_t)("the quick brown fox "[j % 20] + (i & 3));
			memcpy(p + 64, &i, sizeof(i));
			break;
		default:
			tu_fill(p, PG, seed * 1000003 + i);
		}
		if (len < PG)
			memset(p + len, 0, PG - len);
		cr_assert_eq(umlmem_write(g, i * PG, p, len), 0, "%s", umlmem_errmsg());
	}
}

static int open_img(int flags)
{
	int fd = open(T.file, flags, 0600);

	cr_assert_geq(fd, 0, "open %s: %s", T.file, strerror(errno));
	return fd;
}

static void save(umlmem_guest *g)
{
	int fd = open_img(O_RDWR | O_CREAT | O_TRUNC);
	int rc = umlmem_guest_save(g, fd);

	cr_assert_eq(rc, 0, "umlmem_guest_save: %s: %s", umlmem_strerror(rc), umlmem_errmsg());
	close(fd);
}

static umlmem_guest *restore_rc(umlmem_host *h, int *rc)
{
	umlmem_guest *g = NULL;
	int fd = open_img(O_RDONLY);

	*rc = umlmem_guest_restore(h, fd, NULL, &g);
	close(fd);
	return g;
}

static umlmem_guest *restore(umlmem_host *h)
{
	int rc;
	umlmem_guest *g = restore_rc(h, &rc);

	cr_assert_eq(rc, 0, "umlmem_guest_restore: %s: %s", umlmem_strerror(rc), umlmem_errmsg());
	return g;
}

static void verify(umlmem_guest *g, const uint8_t *mem)
{
	uint8_t *buf = malloc(GBYTES);

	cr_assert_eq(umlmem_read(g, 0, buf, GBYTES), 0, "%s", umlmem_errmsg());
	for (uint64_t i = 0; i < NP; i++)
		cr_assert(!memcmp(buf + i * PG, mem + i * PG, i == NP - 1 ? PG - 100 : PG),
			  "page %llu differs from the model", (unsigned long long)i);
	free(buf);
}

static uint64_t nonzero_pages(void)
{
	uint64_t n = 0;

	for (uint64_t i = 0; i < NP; i++)
		n += !page_is_zero(T.mem + i * PG);
	return n;
}

/* A saved image restores byte for byte, lazily, on this host and another;
   equal pages are stored once and compressible ones compressed. */
Test(image, roundtrip_lazy)
{
	struct umlmem_stats s;
	umlmem_host *h2;
	umlmem_guest *g, *r;
	struct stat st;

	T.h = tu_host(T.dir, 64 * PG, 0);
	g = tu_guest(T.h, GBYTES);
	fill_guest(g, 1);
	save(g);
	cr_assert_eq(stat(T.file, &st), 0);
	/* 60 zero pages, 60 copies of 7 pages, 60 compressible: well below the
	   raw size */
	cr_assert_lt((uint64_t)st.st_blocks * 512, (uint64_t)(NP - 120) * PG,
		     "image holds %lld bytes on disk", (long long)st.st_blocks * 512);

	r = restore(T.h);
	cr_assert_eq(umlmem_guest_stats(r, &s), 0);
	cr_assert_eq(s.ram_pages, NP);
	cr_assert_eq(s.swapped_pages, nonzero_pages(), "%llu stored pages",
		     (unsigned long long)s.swapped_pages);
	cr_assert_eq(s.resident_pages, 0);
	cr_assert_eq(s.swap_ins, 0, "nothing is read at restore");
	tu_check(T.h);
	verify(r, T.mem);
	tu_check(T.h);

	h2 = tu_host(T.dir, 16 * PG, 0);   /* a budget smaller than the image */
	r = restore(h2);
	verify(r, T.mem);
	cr_assert_eq(umlmem_reclaim(h2, 1000, NULL), 0);
	verify(r, T.mem);
	tu_check(h2);
	umlmem_host_destroy(h2);
}

/* Two guests restored from one image share its frames until they write. */
Test(image, restores_share_frames)
{
	struct umlmem_stats s0, s1, s2;
	umlmem_guest *g, *a, *b;
	uint8_t page[PG];

	T.h = tu_host(T.dir, 1024 * PG, 0);
	g = tu_guest(T.h, GBYTES);
	fill_guest(g, 2);
	save(g);
	umlmem_guest_destroy(g);
	a = restore(T.h);
	b = restore(T.h);
	verify(a, T.mem);
	cr_assert_eq(umlmem_host_stats(T.h, &s0), 0);
	verify(b, T.mem);
	cr_assert_eq(umlmem_host_stats(T.h, &s1), 0);
	cr_assert_eq(s1.frames_used, s0.frames_used, "the second guest took %llu frames",
		     (unsigned long long)(s1.frames_used - s0.frames_used));
	cr_assert_geq(s1.sharing_pages, nonzero_pages());
	tu_check(T.h);
	/* a write is private to its guest */
	memset(page, 0xab, PG);
	cr_assert_eq(umlmem_write(a, 3 * PG, page, PG), 0);
	verify(b, T.mem);
	cr_assert_eq(umlmem_host_stats(T.h, &s2), 0);
	cr_assert_eq(s2.frames_used, s1.frames_used + 1);
	memcpy(T.mem + 3 * PG, page, PG);
	verify(a, T.mem);
	tu_check(T.h);
}

/* A restored guest in native mode: loads through its view read the image,
   stores break the sharing with the image's frame (copy on write), and
   another guest restored from the image keeps the image's bytes, before
   and after the pages are evicted and come back. */
Test(image, native_view_of_restores)
{
	struct umlmem_stats s0, s1, s2;
	umlmem_guest *g, *a, *b, *c;
	uint8_t *mine = malloc(NP * PG), *v;
	uint64_t written = 0;
	int rc;

	if (tu_valgrind())
		cr_skip_test("userfaultfd does not run under valgrind");
	T.h = tu_host(T.dir, 1024 * PG, 0);
	g = tu_guest(T.h, GBYTES);
	fill_guest(g, 4);
	save(g);
	umlmem_guest_destroy(g);
	a = restore(T.h);
	b = restore(T.h);
	rc = umlmem_guest_map(a, (void **)&v);
	if (rc == -EPERM || rc == -EOPNOTSUPP)
		cr_skip_test("native mode unavailable: %s", umlmem_errmsg());
	cr_assert_eq(rc, 0, "%s", umlmem_errmsg());
	memcpy(mine, T.mem, NP * PG);

	/* stores first, on pages nothing has read yet: zero pages and pages
	   still in the image alike */
	for (uint64_t p = 1; p < NP; p += 10) {
		v[p * PG + 7] = 0xee;
		mine[p * PG + 7] = 0xee;
		written++;
	}
	/* then loads of every page through the view */
	for (uint64_t p = 0; p < NP; p++)
		cr_assert(!memcmp(v + p * PG, mine + p * PG, p == NP - 1 ? PG - 100 : PG),
			  "page %llu of the view differs", (unsigned long long)p);
	tu_check(T.h);
	cr_assert_eq(umlmem_host_stats(T.h, &s0), 0);
	/* b finds a's frames for every page a did not write */
	verify(b, T.mem);
	cr_assert_eq(umlmem_host_stats(T.h, &s1), 0);
	cr_assert_leq(s1.frames_used - s0.frames_used, written,
		      "b took %llu frames for %llu pages a wrote",
		      (unsigned long long)(s1.frames_used - s0.frames_used),
		      (unsigned long long)written);
	cr_assert_geq(s1.sharing_pages, nonzero_pages() - written);

	/* stores to pages a shares with b now: each a copy on write */
	for (uint64_t p = 3; p < NP; p += 10) {
		if (page_is_zero(T.mem + p * PG))
			continue;
		v[p * PG + 9] = 0x5a;
		mine[p * PG + 9] = 0x5a;
	}
	cr_assert_eq(umlmem_host_stats(T.h, &s2), 0);
	cr_assert_gt(s2.cow_breaks, s1.cow_breaks, "no copy on write");
	verify(a, mine);
	verify(b, T.mem);
	tu_check(T.h);

	/* everything out and back: a's written pages from swap, the rest from
	   the image again, through the view and the copy calls */
	cr_assert_eq(umlmem_reclaim(T.h, 4 * NP, NULL), 0, "%s", umlmem_errmsg());
	tu_check(T.h);
	for (uint64_t p = 0; p < NP; p++)
		cr_assert(!memcmp(v + p * PG, mine + p * PG, p == NP - 1 ? PG - 100 : PG),
			  "page %llu of the view differs after reclaim", (unsigned long long)p);
	verify(b, T.mem);
	c = restore(T.h);
	verify(c, T.mem);
	cr_assert_eq(umlmem_guest_unmap(a), 0, "%s", umlmem_errmsg());
	verify(a, mine);
	tu_check(T.h);
	free(mine);
}

/* Restored guests under every operation, in random order, against the
   model; every image is closed when its last page goes. */
Test(image, model_mixed)
{
	enum { NG = 3 };
	umlmem_guest *g[NG] = { 0 }, *src;
	uint8_t *mem[NG], buf[3 * PG];
	uint64_t rng = 42, steps = tu_scaled(3000);
	struct umlmem_host_info info;

	T.h = tu_host(T.dir, 48 * PG, 0);
	src = tu_guest(T.h, GBYTES);
	fill_guest(src, 3);
	save(src);
	umlmem_guest_destroy(src);
	for (int i = 0; i < NG; i++) {
		mem[i] = malloc(NP * PG);
		memcpy(mem[i], T.mem, NP * PG);
		g[i] = restore(T.h);
	}
	for (uint64_t step = 0; step < steps; step++) {
		uint64_t r = tu_splitmix64(&rng), i = r % NG, pg = (r >> 8) % NP;
		uint64_t off = pg * PG + (r >> 20) % PG, len = 1 + (r >> 32) % (2 * PG);

		if (off + len > GBYTES)
			len = GBYTES - off;
		switch ((r >> 40) % 10) {
		case 0: case 1: case 2:
			tu_fill(buf, len, r);
			cr_assert_eq(umlmem_write(g[i], off, buf, len), 0, "%s", umlmem_errmsg());
			memcpy(mem[i] + off, buf, len);
			break;
		case 3: case 4: case 5:
			cr_assert_eq(umlmem_read(g[i], off, buf, len), 0, "%s", umlmem_errmsg());
			cr_assert(!memcmp(buf, mem[i] + off, len), "step %llu: guest %llu at %llu",
				  (unsigned long long)step, (unsigned long long)i,
				  (unsigned long long)off);
			break;
		case 6:
			cr_assert_eq(umlmem_reclaim(T.h, 1 + r % 16, NULL), 0, "%s", umlmem_errmsg());
			break;
		case 7:
			cr_assert_eq(umlmem_dedup_scan(T.h, 1 + r % 64, NULL), 0);
			break;
		case 8:
			if (pg < NP - 1) {
				cr_assert_eq(umlmem_discard(g[i], pg * PG, PG), 0, "%s", umlmem_errmsg());
				memset(mem[i] + pg * PG, 0, PG);
			}
			break;
		default:
			if (r % 64 == 0) {
				/* destroy and restore again from the same image */
				umlmem_guest_destroy(g[i]);
				memcpy(mem[i], T.mem, NP * PG);
				g[i] = restore(T.h);
			} else if (r % 64 == 1) {
				/* save a restored, written, swapped guest: its own
				   image restores to the model */
				umlmem_guest *c;
				char f2[160];
				int fd;

				snprintf(f2, sizeof(f2), "%s/img2", T.dir);
				fd = open(f2, O_RDWR | O_CREAT | O_TRUNC, 0600);
				cr_assert_geq(fd, 0);
				cr_assert_eq(umlmem_guest_save(g[i], fd), 0, "%s", umlmem_errmsg());
				cr_assert_eq(umlmem_guest_restore(T.h, fd, NULL, &c), 0, "%s",
					     umlmem_errmsg());
				close(fd);
				unlink(f2);
				verify(c, mem[i]);
				umlmem_guest_destroy(c);
			}
		}
		if (step % 500 == 0)
			tu_check(T.h);
	}
	for (int i = 0; i < NG; i++) {
		verify(g[i], mem[i]);
		tu_check(T.h);
		umlmem_guest_destroy(g[i]);
		free(mem[i]);
	}
	tu_check(T.h);
	cr_assert_eq(umlmem_host_info(T.h, &info, sizeof(info)), 0);
	cr_assert_eq(info.frames_cached, 0);
}

/* A guest restored, written and saved again restores to its new bytes. */
Test(image, save_restored)
{
	umlmem_guest *g, *r, *r2;
	uint8_t page[PG];

	T.h = tu_host(T.dir, 32 * PG, 0);
	g = tu_guest(T.h, GBYTES);
	fill_guest(g, 4);
	save(g);
	r = restore(T.h);
	tu_fill(page, PG, 77);
	cr_assert_eq(umlmem_write(r, 5 * PG, page, PG), 0);
	memcpy(T.mem + 5 * PG, page, PG);
	cr_assert_eq(umlmem_discard(r, 6 * PG, PG), 0);
	memset(T.mem + 6 * PG, 0, PG);
	cr_assert_eq(umlmem_reclaim(T.h, 100, NULL), 0);
	/* the file is replaced while guests restored from it live: they keep
	   the old image (its descriptor), the next restore gets the new one */
	unlink(T.file);
	save(r);
	r2 = restore(T.h);
	verify(r2, T.mem);
	verify(r, T.mem);
	tu_check(T.h);
}

/* ---- damaged images ------------------------------------------------------------ */

static void patch(off_t off, int delta)
{
	int fd = open_img(O_RDWR);
	uint8_t b;

	cr_assert_eq(pread(fd, &b, 1, off), 1);
	b = (uint8_t)(b + delta);
	cr_assert_eq(pwrite(fd, &b, 1, off), 1);
	close(fd);
}

static struct image_hdr read_hdr(void)
{
	uint8_t b[IMAGE_HDR_LEN];
	struct image_hdr h;
	int fd = open_img(O_RDONLY);

	cr_assert_eq(pread(fd, b, sizeof(b), 0), (ssize_t)sizeof(b));
	close(fd);
	memcpy(&h.map_off, b + 72, 8);
	memcpy(&h.rec_off, b + 80, 8);
	memcpy(&h.file_bytes, b + 88, 8);
	return h;
}

static void expect_einval(const char *what)
{
	int rc;
	umlmem_guest *g = restore_rc(T.h, &rc);

	cr_assert_eq(rc, -EINVAL, "restore of an image with %s: %d", what, rc);
	cr_assert_null(g);
	cr_assert_neq(strstr(umlmem_errmsg(), what), NULL, "message '%s' does not say '%s'",
		      umlmem_errmsg(), what);
	tu_check(T.h);
}

static void saved_image(void)
{
	umlmem_guest *g;

	T.h = tu_host(T.dir, 64 * PG, 0);
	g = tu_guest(T.h, GBYTES);
	fill_guest(g, 5);
	save(g);
	umlmem_guest_destroy(g);
}

Test(image, corrupt_header)
{
	saved_image();
	patch(20, 1);                  /* guest size */
	expect_einval("header is corrupt");
	patch(20, -1);
	patch(0, 1);                   /* magic */
	expect_einval("not a umlmem image");
	patch(0, -1);
	restore(T.h);
}

Test(image, corrupt_map)
{
	struct image_hdr h;

	saved_image();
	h = read_hdr();
	patch((off_t)h.map_off + 3, 1);        /* a page number */
	expect_einval("map is corrupt");
	patch((off_t)h.map_off + 3, -1);
	patch((off_t)h.rec_off + 17, 1);       /* a record's checksum */
	expect_einval("map is corrupt");
	patch((off_t)h.rec_off + 17, -1);
	restore(T.h);
}

Test(image, truncated)
{
	struct image_hdr h;
	int fd;

	saved_image();
	h = read_hdr();
	fd = open_img(O_RDWR);
	cr_assert_eq(ftruncate(fd, (off_t)h.file_bytes - 1), 0);
	close(fd);
	expect_einval("truncated");
	fd = open_img(O_RDWR);
	cr_assert_eq(ftruncate(fd, 100), 0);
	close(fd);
	expect_einval("truncated");
	fd = open_img(O_RDWR);
	cr_assert_eq(ftruncate(fd, 0), 0);
	close(fd);
	expect_einval("truncated");
}

/* A damaged page fails its first touch, counted, and every other page is
   right; the page stays bad (no wrong bytes on a retry either). */
Test(image, corrupt_page)
{
	struct umlmem_stats s;
	uint8_t *buf = malloc(PG);
	umlmem_guest *g;
	uint64_t bad = 3;               /* (3 + 5) % 5 == 3: random bytes, raw */
	char path[PATH_MAX];
	struct image_hdr h;
	int fd, rc;

	saved_image();
	h = read_hdr();
	/* find page 3's record in the map and damage its data */
	{
		uint8_t e[16], r[24];
		uint64_t rec = UINT64_MAX, off;

		fd = open_img(O_RDWR);
		for (uint64_t i = 0; (h.map_off + i * 16) < h.rec_off; i++) {
			uint64_t page;

			cr_assert_eq(pread(fd, e, 16, (off_t)(h.map_off + i * 16)), 16);
			memcpy(&page, e, 8);
			if (page == bad) {
				memcpy(&rec, e + 8, 8);
				break;
			}
		}
		cr_assert_neq(rec, UINT64_MAX);
		cr_assert_eq(pread(fd, r, 24, (off_t)(h.rec_off + rec * 24)), 24);
		memcpy(&off, r, 8);
		close(fd);
		patch((off_t)off + 100, 1);
	}
	g = restore(T.h);
	for (int tries = 0; tries < 2; tries++) {
		rc = umlmem_read(g, bad * PG, buf, PG);
		cr_assert_eq(rc, -EIO, "read of a damaged page: %d", rc);
		cr_assert_neq(strstr(umlmem_errmsg(), "checksum"), NULL, "%s", umlmem_errmsg());
		/* the message names the image file, not swap */
		cr_assert_not_null(realpath(T.file, path));
		cr_assert_neq(strstr(umlmem_errmsg(), path), NULL, "'%s' does not name %s",
			      umlmem_errmsg(), path);
		cr_assert_null(strstr(umlmem_errmsg(), "swap"), "%s", umlmem_errmsg());
	}
	cr_assert_eq(umlmem_host_stats(T.h, &s), 0);
	cr_assert_eq(s.checksum_errors, 2);
	for (uint64_t i = 0; i < NP; i++) {
		if (i == bad)
			continue;
		cr_assert_eq(umlmem_read(g, i * PG, buf, i == NP - 1 ? PG - 100 : PG), 0,
			     "page %llu: %s", (unsigned long long)i, umlmem_errmsg());
		cr_assert(!memcmp(buf, T.mem + i * PG, i == NP - 1 ? PG - 100 : PG));
	}
	/* overwriting the whole page needs no read */
	cr_assert_eq(umlmem_write(g, bad * PG, T.mem + bad * PG, PG), 0);
	verify(g, T.mem);
	tu_check(T.h);
	free(buf);
}

Test(image, bad_arguments)
{
	struct umlmem_guest_config cfg;
	umlmem_guest *g, *r = NULL;
	int fd, rc;

	saved_image();
	g = tu_guest(T.h, GBYTES);
	fd = open_img(O_RDONLY);
	rc = umlmem_guest_save(g, fd);
	cr_assert_eq(rc, -EBADF, "save to a read-only fd: %d", rc);
	cr_assert_neq(strstr(umlmem_errmsg(), "writing"), NULL, "%s", umlmem_errmsg());
	umlmem_guest_config_init(&cfg);
	cfg.ram_bytes = GBYTES + PG;
	rc = umlmem_guest_restore(T.h, fd, &cfg, &r);
	cr_assert_eq(rc, -EINVAL);
	cr_assert_neq(strstr(umlmem_errmsg(), "ram_bytes"), NULL, "%s", umlmem_errmsg());
	cr_assert_null(r);
	cfg.ram_bytes = GBYTES;
	cfg.name = "named";
	rc = umlmem_guest_restore(T.h, fd, &cfg, &r);
	cr_assert_eq(rc, 0, "%s", umlmem_errmsg());
	close(fd);
	rc = umlmem_guest_restore(T.h, -1, NULL, &r);
	cr_assert_eq(rc, -EBADF, "%d", rc);
	cr_assert_eq(umlmem_guest_restore(NULL, 0, NULL, &r), -EINVAL);
	cr_assert_eq(umlmem_guest_save(NULL, 0), -EINVAL);
	tu_check(T.h);
}

/* An image of a guest that is all zeros holds no page and restores. */
Test(image, all_zero)
{
	struct umlmem_stats s;
	umlmem_guest *g;

	T.h = tu_host(T.dir, 16 * PG, 0);
	g = tu_guest(T.h, 1ull << 40);
	save(g);
	g = restore(T.h);
	cr_assert_eq(umlmem_guest_stats(g, &s), 0);
	cr_assert_eq(s.zero_pages, (1ull << 40) / PG);
	tu_check(T.h);
}

/* ---- working set ------------------------------------------------------------------ */

Test(image, record_prefetch)
{
	static const uint64_t order[] = { 250, 3, 17, 18, 19, 120, 4, 299, 17, 60 };
	uint64_t gpas[32], n, loaded, want = 0;
	struct umlmem_stats s0, s1;
	uint8_t buf[PG];
	umlmem_guest *r;

	T.h = tu_host(T.dir, 512 * PG, 0);
	r = tu_guest(T.h, GBYTES);
	fill_guest(r, 6);
	save(r);
	umlmem_guest_destroy(r);

	r = restore(T.h);
	cr_assert_eq(umlmem_guest_record(r, 1000), 0);
	for (unsigned i = 0; i < sizeof(order) / sizeof(order[0]); i++)
		cr_assert_eq(umlmem_read(r, order[i] * PG, buf, 1), 0);
	cr_assert_eq(umlmem_guest_record(r, 0), 0);
	cr_assert_eq(umlmem_guest_record_get(r, gpas, 32, &n), 0);
	/* the pages that are not zero, each once, in the order of their first
	   load: 19, 4 and 299 are zero, 17 comes twice */
	for (unsigned i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
		bool dup = false;

		for (unsigned j = 0; j < i; j++)
			dup |= order[j] == order[i];
		if (dup || page_is_zero(T.mem + order[i] * PG))
			continue;
		cr_assert_lt(want, n, "the record holds %llu pages", (unsigned long long)n);
		cr_assert_eq(gpas[want], order[i] * PG, "record[%llu] is page %llu, not %llu",
			     (unsigned long long)want, (unsigned long long)(gpas[want] / PG),
			     (unsigned long long)order[i]);
		want++;
	}
	cr_assert_eq(n, want);
	cr_assert_eq(want, 6);
	umlmem_guest_destroy(r);

	/* the next restore prefetches the record: touching it loads nothing */
	r = restore(T.h);
	cr_assert_eq(umlmem_guest_prefetch(r, gpas, n, &loaded), 0, "%s", umlmem_errmsg());
	cr_assert_eq(loaded, n);
	cr_assert_eq(umlmem_guest_stats(r, &s0), 0);
	cr_assert_eq(s0.resident_pages, n);
	for (uint64_t i = 0; i < n; i++)
		cr_assert_eq(umlmem_read(r, gpas[i], buf, PG), 0);
	cr_assert_eq(umlmem_guest_stats(r, &s1), 0);
	cr_assert_eq(s1.faults, s0.faults, "%llu faults after the prefetch",
		     (unsigned long long)(s1.faults - s0.faults));
	verify(r, T.mem);
	/* bad addresses */
	gpas[0] = 1;
	cr_assert_eq(umlmem_guest_prefetch(r, gpas, 1, NULL), -EINVAL);
	gpas[0] = NP * PG;
	cr_assert_eq(umlmem_guest_prefetch(r, gpas, 1, NULL), -EFAULT);
	tu_check(T.h);
}

/* ---- save while the guest runs ---------------------------------------------------- */

struct writer {
	umlmem_guest *g;
	volatile bool stop;
	volatile uint64_t gens;
};

/* Writes generation k into the last page, then into page 0, then k + 1:
   at any instant the last page holds page 0's generation or the next. */
static void *writer_main(void *arg)
{
	struct writer *w = arg;

	for (uint64_t k = 1; !w->stop; k++) {
		cr_assert_eq(umlmem_write(w->g, (NP - 2) * PG, &k, 8), 0);
		cr_assert_eq(umlmem_write(w->g, 0, &k, 8), 0);
		w->gens = k;
	}
	return NULL;
}

/* The image is the guest at one instant, although another thread writes
   it all along: the save reads page 0 first and the last page after the
   pages between (random, so the save takes a while), during which the
   writer goes through generations; a save reading the live guest would
   find the last page many generations ahead of page 0. */
Test(image, save_while_written)
{
	struct writer w = { 0 };
	pthread_t t;
	uint8_t page[PG];
	uint64_t rounds = tu_scaled(6), moved = 0;

	T.h = tu_host(T.dir, 1024 * PG, 0);
	w.g = tu_guest(T.h, GBYTES);
	for (uint64_t i = 1; i < NP - 2; i++) {
		tu_fill(page, PG, i);
		cr_assert_eq(umlmem_write(w.g, i * PG, page, PG), 0);
	}
	cr_assert_eq(pthread_create(&t, NULL, writer_main, &w), 0);
	for (uint64_t n = 0; n < rounds; n++) {
		umlmem_guest *r;
		uint64_t v0, vl, g0 = w.gens;

		save(w.g);
		moved += w.gens - g0 >= 2;
		r = restore(T.h);
		cr_assert_eq(umlmem_read(r, 0, &v0, 8), 0);
		cr_assert_eq(umlmem_read(r, (NP - 2) * PG, &vl, 8), 0);
		cr_assert(vl == v0 || vl == v0 + 1, "page 0 holds generation %llu, the last page "
			  "%llu: not one instant", (unsigned long long)v0, (unsigned long long)vl);
		umlmem_guest_destroy(r);
		tu_check(T.h);
	}
	w.stop = true;
	pthread_join(t, NULL);
	/* the writer ran during the saves (else the test proved nothing) */
	cr_assert_gt(moved, 0, "the writer made no progress during any save");
}
