/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Encrypted swap (UMLMEM_SWAP_ENCRYPT, swapfiles/seal.c):
 *
 *  - seal_*: the seal alone, with each cipher: a page comes back exactly;
 *    its ciphertext looks nothing like it and differs for every write of
 *    the same bytes; a changed byte, a changed tag, another name (slot) or
 *    the tag of another write (an older or a newer copy) is -EBADMSG and
 *    leaves no plaintext behind; another seal (another host's key) opens
 *    nothing; nonces stay unique across threads.
 *  - no_plaintext_*: guests write pages carrying a marker, everything goes
 *    to swap (directly, and through the compressed pool's write-back), and
 *    the marker is nowhere in the swap files, while every page reads back
 *    right. The same run without the flag finds the marker: the scan sees
 *    what is there.
 *  - tamper_*: slots changed behind the library's back (a bit flipped, two
 *    slots exchanged, one slot's valid ciphertext copied over another's):
 *    -EIO, one checksum error per read, never the bytes; putting the bytes
 *    back heals them.
 *  - replay: a slot rewritten by a newer version of its page, then given
 *    back its older, once valid, ciphertext: -EIO; the newer one reads.
 *  - threads: pages are written out again and again while other threads
 *    read them through copies and through a native view: they never see
 *    anything but the page (a write-out never puts ciphertext in a frame).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "testutil.h"
#include "internal.h"
#include "swap.h"
#include "seal.h"

#define PG UMLMEM_PAGE_SIZE

static struct {
	char dir[64];
	umlmem_host *h;
	uint8_t *buf, *buf2, *raw, *raw2;
} C;

static void crypt_setup(void)
{
	memset(&C, 0, sizeof(C));
	tu_mkswapdir(C.dir);
	C.buf = aligned_alloc(PG, PG);
	C.buf2 = aligned_alloc(PG, PG);
	C.raw = aligned_alloc(PG, PG);
	C.raw2 = aligned_alloc(PG, PG);
	cr_assert(C.buf && C.buf2 && C.raw && C.raw2);
}

static void crypt_teardown(void)
{
	umlmem_host_destroy(C.h);
	C.h = NULL;
	free(C.buf);
	free(C.buf2);
	free(C.raw);
	free(C.raw2);
	tu_rmswapdir(C.dir);
}

TestSuite(crypt, .init = crypt_setup, .fini = crypt_teardown, .timeout = 120);

/* ---- the seal alone ---------------------------------------------------------- */

static struct seal *mk_seal(enum seal_cipher c)
{
	struct seal *s = NULL;
	char msg[256];
	int rc = seal_create_cipher(&s, c, msg, sizeof(msg));

	cr_assert_eq(rc, 0, "seal_create_cipher(%d): %d: %s", (int)c, rc, msg);
	cr_assert_not_null(s);
	return s;
}

/* Bytes at which @a and @b agree: about 16 of 4096 for unrelated pages. */
static unsigned same_bytes(const uint8_t *a, const uint8_t *b)
{
	unsigned n = 0;

	for (unsigned i = 0; i < PG; i++)
		n += a[i] == b[i];
	return n;
}

/* seal_open must refuse, and leave nothing of @plain in @out. */
static void expect_refused(struct seal *s, uint64_t ad, const uint8_t *cipher,
			   const struct seal_tag *tag, const uint8_t *plain, const char *how)
{
	uint8_t *out = aligned_alloc(PG, PG);
	int rc;

	cr_assert_not_null(out);
	memcpy(out, cipher, PG);
	rc = seal_open(s, ad, out, out, tag);
	cr_assert_eq(rc, -EBADMSG, "%s: seal_open gave %d, expected -EBADMSG", how, rc);
	cr_assert_lt(same_bytes(out, plain), 128, "%s: a refused open left %u bytes of the page "
		     "in the buffer", how, same_bytes(out, plain));
	free(out);
}

/* @evp: AES-256-GCM through OpenSSL's code (1) or libsodium's (0). */
static void seal_case(enum seal_cipher c, const char *name, int evp)
{
	uint8_t *p = C.buf, *x = C.raw, *x2 = C.raw2, *q = C.buf2;
	struct seal_tag t, t2, bad;
	struct seal *s, *other;
	uint64_t rng = 0x5ea1;
	char msg[256];
	int rc;

	s = NULL;
	rc = seal_create_cipher(&s, c, msg, sizeof(msg));
	if (rc == -ENOTSUP && c == SEAL_AES256GCM)
		cr_skip_test("no AES-NI here: %s", msg);
	cr_assert_eq(rc, 0, "%d: %s", rc, msg);
	cr_assert_str_eq(seal_cipher(s), name);
	seal_use_evp(s, evp);

	tu_fill(p, PG, 0x1234);
	seal_page(s, 42, p, x, &t);
	cr_assert_neq(t.nonce, 0, "a write used nonce 0");
	cr_assert_lt(same_bytes(p, x), 128, "the ciphertext keeps %u bytes of the page",
		     same_bytes(p, x));
	/* out of place, then in place */
	memset(q, 0, PG);
	cr_assert_eq(seal_open(s, 42, x, q, &t), 0);
	cr_assert(memcmp(p, q, PG) == 0, "the page does not come back");
	memcpy(q, x, PG);
	cr_assert_eq(seal_open(s, 42, q, q, &t), 0);
	cr_assert(memcmp(p, q, PG) == 0, "the page does not come back in place");
	/* in place sealing too */
	memcpy(q, p, PG);
	seal_page(s, 7, q, q, &bad);
	cr_assert_eq(seal_open(s, 7, q, q, &bad), 0);
	cr_assert(memcmp(p, q, PG) == 0);

	/* the same bytes again, same name: another nonce, other ciphertext */
	seal_page(s, 42, p, x2, &t2);
	cr_assert_gt(t2.nonce, t.nonce, "nonces %" PRIu64 " then %" PRIu64, t.nonce, t2.nonce);
	cr_assert_lt(same_bytes(x, x2), 128, "two writes of one page share %u ciphertext bytes",
		     same_bytes(x, x2));
	cr_assert_neq(memcmp(t.mac, t2.mac, sizeof(t.mac)), 0);
	/* replay: the older copy under the newer write's tag, and back */
	expect_refused(s, 42, x, &t2, p, "older ciphertext, newer tag");
	expect_refused(s, 42, x2, &t, p, "newer ciphertext, older tag");
	/* another name: the page moved to another slot */
	expect_refused(s, 43, x, &t, p, "another name");
	expect_refused(s, 42 ^ (1ull << 63), x, &t, p, "another name (high bit)");
	/* changed bytes: first, last, random ones */
	for (int k = 0; k < 8; k++) {
		unsigned at = k == 0 ? 0 : k == 1 ? PG - 1 : (unsigned)(tu_splitmix64(&rng) % PG);

		memcpy(q, x, PG);
		q[at] ^= (uint8_t)(1u << (tu_splitmix64(&rng) % 8));
		expect_refused(s, 42, q, &t, p, "a bit flipped");
	}
	/* changed tag: the MAC, the nonce, all zeros */
	bad = t;
	bad.mac[5] ^= 0x10;
	expect_refused(s, 42, x, &bad, p, "a bit of the MAC flipped");
	bad = t;
	bad.nonce++;
	expect_refused(s, 42, x, &bad, p, "another nonce");
	memset(&bad, 0, sizeof(bad));
	expect_refused(s, 42, x, &bad, p, "a tag of zeros");
	/* another host's key */
	other = mk_seal(c);
	seal_use_evp(other, evp);
	expect_refused(other, 42, x, &t, p, "another seal's key");
	/* and the right one still opens after all that */
	cr_assert_eq(seal_open(s, 42, x, q, &t), 0);
	cr_assert(memcmp(p, q, PG) == 0);
	seal_destroy(other);
	seal_destroy(s);
	seal_destroy(NULL);
}

Test(crypt, seal_aes) { seal_case(SEAL_AES256GCM, "aes256gcm", 1); }
Test(crypt, seal_aes_sodium) { seal_case(SEAL_AES256GCM, "aes256gcm", 0); }
Test(crypt, seal_chacha) { seal_case(SEAL_CHACHA20POLY1305, "chacha20poly1305", 1); }

/* AES-256-GCM has two codes, OpenSSL's and libsodium's (which a thread
   uses when it finds no free EVP context): a page sealed by either opens
   with the other to its bytes, and is refused by the other when changed,
   so which code ran for which page does not matter. */
Test(crypt, seal_aes_codes_agree)
{
	uint8_t *p = C.buf, *x = C.raw, *x2 = C.raw2, *q = C.buf2;
	struct seal_tag t, t2;
	struct seal *s = NULL;
	char msg[256];
	int rc = seal_create_cipher(&s, SEAL_AES256GCM, msg, sizeof(msg));

	if (rc == -ENOTSUP)
		cr_skip_test("no AES-NI here: %s", msg);
	cr_assert_eq(rc, 0, "%d: %s", rc, msg);
	for (int k = 0; k < 4; k++) {
		tu_fill(p, PG, 0xa11ce + k);
		seal_use_evp(s, 1);
		seal_page(s, 100 + k, p, x, &t);
		seal_use_evp(s, 0);
		seal_page(s, 100 + k, p, x2, &t2);
		/* sealed by OpenSSL, opened by libsodium, and the other way */
		cr_assert_eq(seal_open(s, 100 + k, x, q, &t), 0, "EVP's page, libsodium's open");
		cr_assert(memcmp(p, q, PG) == 0, "EVP's page opened by libsodium: other bytes");
		x[k * 1000] ^= 4;
		expect_refused(s, 100 + k, x, &t, p, "EVP's page changed, libsodium's open");
		x[k * 1000] ^= 4;
		seal_use_evp(s, 1);
		cr_assert_eq(seal_open(s, 100 + k, x2, q, &t2), 0, "libsodium's page, EVP's open");
		cr_assert(memcmp(p, q, PG) == 0, "libsodium's page opened by EVP: other bytes");
		x2[PG - 1 - k] ^= 0x80;
		expect_refused(s, 100 + k, x2, &t2, p, "libsodium's page changed, EVP's open");
		/* and each code opens its own */
		cr_assert_eq(seal_open(s, 100 + k, x, q, &t), 0);
		cr_assert(memcmp(p, q, PG) == 0);
	}
	seal_destroy(s);
}

Test(crypt, seal_auto)
{
	struct seal *s = NULL;
	char msg[256];

	cr_assert_eq(seal_create(&s, msg, sizeof(msg)), 0, "%s", msg);
	cr_assert_str_eq(seal_cipher(s), crypto_aead_aes256gcm_is_available() ?
			 "aes256gcm" : "chacha20poly1305");
	seal_destroy(s);
}

/* Threads sealing with one seal: every nonce is used once; with more
   threads than the seal has EVP contexts (16), some pages go through
   libsodium's AES code meanwhile, and all open. */
#define ST_THREADS 20
#define ST_PAGES   256

struct st_arg {
	struct seal *s;
	uint64_t nonce[ST_PAGES];
	int bad;
};

static void *st_main(void *arg)
{
	struct st_arg *a = arg;
	uint8_t *p = aligned_alloc(PG, PG), *x = aligned_alloc(PG, PG);
	struct seal_tag t;

	if (!p || !x) {
		a->bad = -1;
		free(p);
		free(x);
		return NULL;
	}
	for (unsigned i = 0; i < ST_PAGES; i++) {
		tu_fill(p, PG, (uintptr_t)a ^ i);
		seal_page(a->s, i, p, x, &t);
		a->nonce[i] = t.nonce;
		if (seal_open(a->s, i, x, x, &t) || memcmp(p, x, PG))
			a->bad++;
	}
	free(p);
	free(x);
	return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

Test(crypt, seal_threads)
{
	static struct st_arg a[ST_THREADS];
	static uint64_t all[ST_THREADS * ST_PAGES];
	struct seal *s = mk_seal(SEAL_AUTO);
	pthread_t tid[ST_THREADS];

	for (int i = 0; i < ST_THREADS; i++) {
		a[i].s = s;
		cr_assert_eq(pthread_create(&tid[i], NULL, st_main, &a[i]), 0);
	}
	for (int i = 0; i < ST_THREADS; i++) {
		pthread_join(tid[i], NULL);
		cr_assert_eq(a[i].bad, 0, "thread %d: %d pages did not come back", i, a[i].bad);
		memcpy(all + i * ST_PAGES, a[i].nonce, sizeof(a[i].nonce));
	}
	qsort(all, ST_THREADS * ST_PAGES, sizeof(all[0]), cmp_u64);
	cr_assert_neq(all[0], 0);
	for (int i = 1; i < ST_THREADS * ST_PAGES; i++)
		cr_assert_neq(all[i], all[i - 1], "nonce %" PRIu64 " used twice", all[i]);
	seal_destroy(s);
}

/* ---- hosts -------------------------------------------------------------------- */

/* Why mk_host() gave NULL: the engine asked for cannot run here. */
static char Skip[512];

static umlmem_host *mk_host(enum umlmem_io_engine io, uint64_t budget_pages, unsigned flags,
			    enum umlmem_compress compress, uint64_t pool_pages, uint64_t cap_pages)
{
	struct umlmem_host_config cfg;
	umlmem_host *h = NULL;
	int rc;

	umlmem_host_config_init(&cfg);
	cfg.resident_bytes = budget_pages * PG;
	cfg.swap_dir = C.dir;
	cfg.swap_files = 2;
	cfg.swap_bytes = cap_pages * PG;
	cfg.reclaim_batch = 8;
	cfg.io = io;
	cfg.flags = flags;
	cfg.compress = compress;
	cfg.compress_pool_bytes = pool_pages * PG;
	rc = umlmem_host_create(&cfg, &h);
	if (rc == -ENOTSUP && io != UMLMEM_IO_AUTO) {
		snprintf(Skip, sizeof(Skip), "engine %d cannot run here: %s", (int)io,
			 umlmem_errmsg());
		return NULL;
	}
	cr_assert_eq(rc, 0, "umlmem_host_create: %s: %s", umlmem_strerror(rc), umlmem_errmsg());
	return h;
}

Test(crypt, flag)
{
	struct umlmem_host_config cfg;
	umlmem_host *h = NULL;

	umlmem_host_config_init(&cfg);
	cfg.resident_bytes = 16 * PG;
	cfg.swap_dir = C.dir;
	cfg.flags = UMLMEM_SWAP_ENCRYPT | UMLMEM_BACKGROUND | UMLMEM_NO_READAHEAD;
	cr_assert_eq(umlmem_host_create(&cfg, &h), 0, "%s", umlmem_errmsg());
	umlmem_host_destroy(h);
	h = NULL;
	cfg.flags = UMLMEM_SWAP_ENCRYPT | 0x100;
	cr_assert_eq(umlmem_host_create(&cfg, &h), -EINVAL);
	cr_assert_null(h);
	cr_assert_not_null(strstr(umlmem_errmsg(), "0x100"), "%s", umlmem_errmsg());
}

/* The slot that page @idx of @g lives in; fails unless it is in swap only. */
static uint64_t slot_of(umlmem_guest *g, uint64_t idx)
{
	pte_t *e = pte_find(g, idx);
	pte_t v = e ? LOAD(e) : PTE_ZERO;

	cr_assert_eq(PTE_TYPE(v), PTE_STORED, "page %" PRIu64 " is not stored (entry type %u)",
		     idx, PTE_TYPE(v));
	cr_assert_eq(tkey_tier(PTE_VAL(v)), TIER_SWAP, "page %" PRIu64 " is not in the swap tier",
		     idx);
	return tkey_handle(PTE_VAL(v));
}

/* Raw 4 KiB of slot @slot through the library's own descriptor. */
static void slot_io(uint64_t slot, void *page, bool write)
{
	struct swap *sw = host_swap(C.h);
	unsigned file;
	uint64_t off;
	ssize_t n;

	swap_where(sw, slot, &file, &off);
	if (write)
		n = pwrite(swap_fd(sw, file), page, PG, (off_t)off);
	else
		n = pread(swap_fd(sw, file), page, PG, (off_t)off);
	cr_assert_eq(n, (ssize_t)PG, "%s of slot %" PRIu64 ": %zd: %s", write ? "pwrite" : "pread",
		     slot, n, strerror(errno));
	if (write)
		cr_assert_eq(fdatasync(swap_fd(sw, file)), 0);
}

/* Content of page @idx of guest @gi: @marker at a place that moves, around
   it incompressible bytes, or (@text) a repeated sentence that compresses. */
#define MARKER "UMLMEM-SECRET-MARKER-7f3a"

static void pattern(uint8_t *page, int gi, uint64_t idx, bool text)
{
	static const char line[] = "the quick brown fox jumps over the lazy dog; ";
	size_t at = (size_t)((idx * 97 + (uint64_t)gi * 13) % (PG - 64));

	if (text)
		for (unsigned i = 0; i < PG; i++)
			page[i] = (uint8_t)line[(i + idx) % (sizeof(line) - 1)];
	else
		tu_fill(page, PG, (uint64_t)gi << 40 ^ idx * 0x9e3779b97f4a7c15ull ^ 0xc0ffee);
	memcpy(page + at, MARKER, strlen(MARKER));
	page[PG - 1] = (uint8_t)idx;
}

/* Occurrences of MARKER in the swap files. */
static uint64_t marker_count(void)
{
	struct swap *sw = host_swap(C.h);
	const size_t chunk = 1 << 20, mlen = strlen(MARKER);
	uint8_t *b = aligned_alloc(PG, chunk + PG);
	uint64_t count = 0;

	cr_assert_not_null(b);
	for (unsigned f = 0; f < swap_nfiles(sw); f++) {
		int fd = swap_fd(sw, f);
		struct stat st;

		cr_assert_eq(fstat(fd, &st), 0);
		for (off_t off = 0; off < st.st_size; off += (off_t)chunk) {
			ssize_t n = pread(fd, b, chunk, off);

			cr_assert_geq(n, 0, "pread of swap file %u: %s", f, strerror(errno));
			for (ssize_t i = 0; i + (ssize_t)mlen <= n; i++)
				if (b[i] == 'U' && !memcmp(b + i, MARKER, mlen))
					count++;
		}
	}
	free(b);
	return count;
}

/*
 * Two guests write GP pages each with the marker, on a budget of 16
 * pages, so that nearly all of them go to swap (with @pool, through the
 * pool's write-back of compressible pages), then everything is reclaimed.
 * Returns how often the marker is in the swap files, after checking that
 * every page reads back; UINT64_MAX when the engine cannot run here.
 */
static uint64_t marker_run(enum umlmem_io_engine io, unsigned flags, bool pool)
{
	enum { GP = 96 };
	umlmem_guest *g[2];
	struct umlmem_stats s;
	uint64_t ev, found;

	C.h = mk_host(io, 16, flags, pool ? UMLMEM_COMPRESS_LZ4 : UMLMEM_COMPRESS_OFF,
		      pool ? 4 : 0, 0);
	if (!C.h)
		return UINT64_MAX;
	for (int gi = 0; gi < 2; gi++) {
		g[gi] = tu_guest(C.h, GP * PG);
		for (uint64_t i = 0; i < GP; i++) {
			pattern(C.buf, gi, i, pool);
			cr_assert_eq(umlmem_write(g[gi], i * PG, C.buf, PG), 0, "%s", umlmem_errmsg());
		}
	}
	cr_assert_eq(umlmem_reclaim(C.h, 16, &ev), 0, "%s", umlmem_errmsg());
	cr_assert_eq(umlmem_host_stats(C.h, &s), 0);
	cr_assert_geq(s.swap_outs, pool ? GP : 2 * GP - 16, "only %" PRIu64 " pages went to swap",
		      s.swap_outs);
	found = marker_count();
	for (int gi = 0; gi < 2; gi++)
		for (uint64_t i = 0; i < GP; i++) {
			memset(C.buf2, 0, PG);
			cr_assert_eq(umlmem_read(g[gi], i * PG, C.buf2, PG), 0, "guest %d page %"
				     PRIu64 ": %s", gi, i, umlmem_errmsg());
			pattern(C.buf, gi, i, pool);
			cr_assert(memcmp(C.buf, C.buf2, PG) == 0, "guest %d page %" PRIu64
				  " reads wrong bytes", gi, i);
		}
	cr_assert_eq(umlmem_host_stats(C.h, &s), 0);
	cr_assert_eq(s.checksum_errors + s.io_errors, 0);
	tu_check(C.h);
	umlmem_host_destroy(C.h);
	C.h = NULL;
	return found;
}

static void no_plaintext_case(enum umlmem_io_engine io, bool pool)
{
	uint64_t plain = marker_run(io, 0, pool), sealed;

	if (plain == UINT64_MAX)
		cr_skip_test("%s", Skip);
	cr_assert_gt(plain, 0, "the marker is not in unencrypted swap either: the scan proves "
		     "nothing");
	sealed = marker_run(io, UMLMEM_SWAP_ENCRYPT, pool);
	cr_assert_eq(sealed, 0, "the marker is in encrypted swap %" PRIu64 " times (%" PRIu64
		     " without encryption)", sealed, plain);
}

Test(crypt, no_plaintext_uring) { no_plaintext_case(UMLMEM_IO_URING, false); }
Test(crypt, no_plaintext_aio) { no_plaintext_case(UMLMEM_IO_AIO, false); }
Test(crypt, no_plaintext_sync) { no_plaintext_case(UMLMEM_IO_SYNC, false); }
Test(crypt, no_plaintext_pool) { no_plaintext_case(UMLMEM_IO_AUTO, true); }

/* A read of a page whose slot was changed: -EIO, "checksum" in the
   message, the buffer untouched. */
static void expect_bad(umlmem_guest *g, uint64_t idx, const char *how)
{
	int rc;

	memset(C.buf2, 0x5a, PG);
	rc = umlmem_read(g, idx * PG, C.buf2, PG);
	cr_assert_eq(rc, -EIO, "read of page %" PRIu64 " (%s): %s, expected -EIO", idx, how,
		     umlmem_strerror(rc));
	cr_assert_not_null(strstr(umlmem_errmsg(), "checksum"), "%s", umlmem_errmsg());
	for (unsigned i = 0; i < PG; i++)
		cr_assert_eq(C.buf2[i], 0x5a, "a failed read (%s) delivered byte %u", how, i);
}

static void expect_good(umlmem_guest *g, int gi, uint64_t idx)
{
	int rc;

	memset(C.buf2, 0x5a, PG);
	rc = umlmem_read(g, idx * PG, C.buf2, PG);
	cr_assert_eq(rc, 0, "page %" PRIu64 ": %s: %s", idx, umlmem_strerror(rc), umlmem_errmsg());
	pattern(C.buf, gi, idx, false);
	cr_assert(memcmp(C.buf, C.buf2, PG) == 0, "page %" PRIu64 " reads wrong bytes", idx);
}

static void tamper_case(enum umlmem_io_engine io)
{
	enum { GP = 64, FLIP = 5, XA = 20, XB = 41, FROM = 50, TO = 9 };
	uint8_t *orig[4];
	uint64_t slot[4], idx[4] = { FLIP, XA, XB, TO };
	struct umlmem_stats s0, s1;
	umlmem_guest *g;
	uint64_t ev;

	C.h = mk_host(io, 16, UMLMEM_SWAP_ENCRYPT | UMLMEM_NO_READAHEAD, UMLMEM_COMPRESS_OFF, 0, 0);
	if (!C.h)
		cr_skip_test("%s", Skip);
	g = tu_guest(C.h, GP * PG);
	for (uint64_t i = 0; i < GP; i++) {
		pattern(C.buf, 0, i, false);
		cr_assert_eq(umlmem_write(g, i * PG, C.buf, PG), 0);
	}
	cr_assert_eq(umlmem_reclaim(C.h, 16, &ev), 0, "%s", umlmem_errmsg());
	for (int k = 0; k < 4; k++) {
		slot[k] = slot_of(g, idx[k]);
		orig[k] = aligned_alloc(PG, PG);
		cr_assert_not_null(orig[k]);
		slot_io(slot[k], orig[k], false);
	}
	/* one bit flipped */
	memcpy(C.raw, orig[0], PG);
	C.raw[1234] ^= 0x20;
	slot_io(slot[0], C.raw, true);
	/* two slots exchanged */
	slot_io(slot[1], orig[2], true);
	slot_io(slot[2], orig[1], true);
	/* another page's valid ciphertext over this one */
	slot_io(slot_of(g, FROM), C.raw, false);
	slot_io(slot[3], C.raw, true);

	cr_assert_eq(umlmem_host_stats(C.h, &s0), 0);
	for (uint64_t i = 0; i < GP; i++) {
		if (i == FLIP)
			expect_bad(g, i, "a bit flipped");
		else if (i == XA || i == XB)
			expect_bad(g, i, "two slots exchanged");
		else if (i == TO)
			expect_bad(g, i, "another page's ciphertext");
		else
			expect_good(g, 0, i);
	}
	cr_assert_eq(umlmem_host_stats(C.h, &s1), 0);
	cr_assert_eq(s1.checksum_errors - s0.checksum_errors, 4, "4 bad reads counted as %" PRIu64
		     " checksum errors", s1.checksum_errors - s0.checksum_errors);
	cr_assert_eq(s1.io_errors, 0, "tampering counted as I/O errors");
	tu_check(C.h);
	/* the slots are kept: their bytes back, the pages read again */
	for (int k = 0; k < 4; k++) {
		slot_io(slot[k], orig[k], true);
		expect_good(g, 0, idx[k]);
		free(orig[k]);
	}
	tu_check(C.h);
}

Test(crypt, tamper_uring) { tamper_case(UMLMEM_IO_URING); }
Test(crypt, tamper_aio) { tamper_case(UMLMEM_IO_AIO); }
Test(crypt, tamper_sync) { tamper_case(UMLMEM_IO_SYNC); }

/*
 * Swap capped at one slot, so every write-out of the one page lands in
 * the same slot: version 1 goes out and its ciphertext is kept; the page
 * is discarded, version 2 written and sent out to the same slot; the old
 * ciphertext put back is -EIO (it was valid for that slot once), the new
 * one reads as version 2.
 */
Test(crypt, replay)
{
	struct umlmem_stats s0, s1;
	umlmem_guest *g;
	uint64_t ev, s_v1, s_v2;

	C.h = mk_host(UMLMEM_IO_AUTO, 4, UMLMEM_SWAP_ENCRYPT, UMLMEM_COMPRESS_OFF, 0, 1);
	g = tu_guest(C.h, 4 * PG);
	pattern(C.buf, 1, 0, false);
	cr_assert_eq(umlmem_write(g, 0, C.buf, PG), 0);
	cr_assert_eq(umlmem_reclaim(C.h, 4, &ev), 0, "%s", umlmem_errmsg());
	s_v1 = slot_of(g, 0);
	slot_io(s_v1, C.raw, false);          /* version 1's ciphertext */

	cr_assert_eq(umlmem_discard(g, 0, PG), 0);
	pattern(C.buf, 2, 0, false);
	cr_assert_eq(umlmem_write(g, 0, C.buf, PG), 0);
	cr_assert_eq(umlmem_reclaim(C.h, 4, &ev), 0, "%s", umlmem_errmsg());
	s_v2 = slot_of(g, 0);
	cr_assert_eq(s_v2, s_v1, "version 2 went to slot %" PRIu64 ", not %" PRIu64 ": nothing "
		     "to replay", s_v2, s_v1);
	slot_io(s_v2, C.raw2, false);         /* version 2's ciphertext */
	cr_assert_neq(memcmp(C.raw, C.raw2, PG), 0);

	cr_assert_eq(umlmem_host_stats(C.h, &s0), 0);
	slot_io(s_v2, C.raw, true);
	memset(C.buf2, 0x5a, PG);
	cr_assert_eq(umlmem_read(g, 0, C.buf2, PG), -EIO, "the older copy of the slot was "
		     "accepted");
	pattern(C.buf, 1, 0, false);
	cr_assert_lt(same_bytes(C.buf2, C.buf), 128, "the replayed version was delivered");
	cr_assert_eq(umlmem_host_stats(C.h, &s1), 0);
	cr_assert_eq(s1.checksum_errors - s0.checksum_errors, 1);

	slot_io(s_v2, C.raw2, true);
	cr_assert_eq(umlmem_read(g, 0, C.buf2, PG), 0, "%s", umlmem_errmsg());
	pattern(C.buf, 2, 0, false);
	cr_assert(memcmp(C.buf, C.buf2, PG) == 0, "version 2 does not read back");
	tu_check(C.h);
}

/* ---- write-outs under readers --------------------------------------------------- */

#define TH_PAGES 64

struct th {
	umlmem_guest *g;
	volatile const uint8_t *base;   /* native view, or NULL */
	_Atomic int stop;
	_Atomic uint64_t reads;
	char err[256];
};

static uint64_t th_word(uint64_t p, uint64_t w)
{
	return (p * (PG / 8) + w + 1) ^ 0xa5a5a5a5deadbeefull;
}

static void *th_copy_reader(void *arg)
{
	struct th *t = arg;
	uint64_t rng = 77, v;

	while (!t->stop && !t->err[0]) {
		uint64_t p = tu_splitmix64(&rng) % TH_PAGES, w = tu_splitmix64(&rng) % (PG / 8);
		int rc = umlmem_read(t->g, p * PG + w * 8, &v, 8);

		if (rc)
			snprintf(t->err, sizeof(t->err), "umlmem_read page %" PRIu64 ": %s", p,
				 umlmem_strerror(rc));
		else if (v != th_word(p, w))
			snprintf(t->err, sizeof(t->err), "copy read of page %" PRIu64 " word %" PRIu64
				 ": 0x%" PRIx64, p, w, v);
		t->reads++;
	}
	return NULL;
}

static void *th_view_reader(void *arg)
{
	struct th *t = arg;
	uint64_t rng = 99, v;

	while (!t->stop && !t->err[0]) {
		uint64_t p = tu_splitmix64(&rng) % TH_PAGES, w = tu_splitmix64(&rng) % (PG / 8);

		v = __atomic_load_n((const uint64_t *)(t->base + p * PG + w * 8), __ATOMIC_RELAXED);
		if (v != th_word(p, w))
			snprintf(t->err, sizeof(t->err), "load from the view, page %" PRIu64
				 " word %" PRIu64 ": 0x%" PRIx64, p, w, v);
		t->reads++;
	}
	return NULL;
}

Test(crypt, threads_readers)
{
	struct th copy = { 0 }, view = { 0 };
	pthread_t tc, tv;
	bool have_view = !tu_valgrind();
	uint64_t *page = (uint64_t *)C.buf, ev, outs = 0;
	struct umlmem_stats s;
	void *base = NULL;
	umlmem_guest *g;
	int rounds = tu_valgrind() ? 20 : 300;

	C.h = mk_host(UMLMEM_IO_AUTO, 32, UMLMEM_SWAP_ENCRYPT, UMLMEM_COMPRESS_OFF, 0, 0);
	g = tu_guest(C.h, TH_PAGES * PG);
	for (uint64_t p = 0; p < TH_PAGES; p++) {
		for (uint64_t w = 0; w < PG / 8; w++)
			page[w] = th_word(p, w);
		cr_assert_eq(umlmem_write(g, p * PG, page, PG), 0);
	}
	if (have_view) {
		int rc = umlmem_guest_map(g, &base);

		have_view = rc == 0;
		if (rc && rc != -EPERM && rc != -EOPNOTSUPP)
			cr_assert_fail("umlmem_guest_map: %s: %s", umlmem_strerror(rc),
				       umlmem_errmsg());
	}
	copy.g = g;
	view.g = g;
	view.base = base;
	cr_assert_eq(pthread_create(&tc, NULL, th_copy_reader, &copy), 0);
	if (have_view)
		cr_assert_eq(pthread_create(&tv, NULL, th_view_reader, &view), 0);
	/* each round dirties 8 pages (same bytes again: a clean page would
	   be dropped without a write) and sends everything out */
	for (int r = 0; r < rounds && !copy.err[0] && !view.err[0]; r++) {
		for (int k = 0; k < 8; k++) {
			uint64_t p = (uint64_t)(r * 8 + k) * 7 % TH_PAGES;

			for (uint64_t w = 0; w < PG / 8; w++)
				page[w] = th_word(p, w);
			cr_assert_eq(umlmem_write(g, p * PG, page, PG), 0, "%s", umlmem_errmsg());
		}
		cr_assert_eq(umlmem_reclaim(C.h, 32, &ev), 0, "%s", umlmem_errmsg());
		outs += ev;
	}
	copy.stop = 1;
	view.stop = 1;
	pthread_join(tc, NULL);
	if (have_view)
		pthread_join(tv, NULL);
	cr_assert_eq(copy.err[0], 0, "%s", copy.err);
	cr_assert_eq(view.err[0], 0, "%s", view.err);
	cr_assert_eq(umlmem_host_stats(C.h, &s), 0);
	cr_assert_geq(s.swap_outs, 8 * (uint64_t)rounds, "only %" PRIu64 " write-outs in %d rounds",
		     s.swap_outs, rounds);
	cr_assert_gt(copy.reads, 0);
	cr_assert_eq(s.checksum_errors + s.io_errors, 0);
	cr_log_info("threads_readers: %d rounds, %" PRIu64 " swap-outs, %" PRIu64 " copy reads, "
		    "%" PRIu64 " view loads%s", rounds, s.swap_outs, (uint64_t)copy.reads,
		    (uint64_t)view.reads, have_view ? "" : " (no native view here)");
	(void)outs;
	tu_check(C.h);
}
