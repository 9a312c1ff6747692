/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * seal.c: authenticated encryption of the pages a host writes to swap
 * (UMLMEM_SWAP_ENCRYPT), with libsodium and OpenSSL's libcrypto.
 *
 * Why. A swap file is a disk other tenants may read and an NBD export a
 * server on the network; a page that leaves the process must be unreadable
 * there and any change to it must be seen. The xxh3 checksum of a plain
 * swap slot catches corruption, not an adversary, who can recompute it.
 *
 * The cipher. An AEAD from a well-kept library: AES-256-GCM where the CPU
 * has AES-NI and PCLMUL (libsodium's test: its only AES-GCM is that
 * hardware one), else ChaCha20-Poly1305 (the IETF variant, 96-bit nonce),
 * which is fast in plain vector code. Both take a 256-bit key and give a
 * 16-byte tag.
 *
 * Who computes AES-256-GCM. A page goes through the cipher on every
 * encrypted swap-in and swap-out, so its cost is a fault's: OpenSSL's
 * libcrypto (EVP) does a page in about half of libsodium 1.0.18's time on
 * CPUs with wide vector AES (the bench's crypt_seal_ns and crypt_open_ns
 * show both). An EVP context is not thread-safe and keying one expands the
 * key, so a seal keeps a small pool of keyed contexts (SEAL_CTXS), each
 * taken by one thread at a time with an atomic exchange; a thread that
 * finds none free, or cannot make one, uses libsodium's AES-GCM with the
 * same key. Both are the standard GCM of NIST SP 800-38D with a 96-bit IV:
 * a page sealed by one opens with the other, so which one ran is a matter
 * of speed only and seal_page() still cannot fail.
 *
 * The key is random per seal (per host) and never leaves memory: it is made
 * by randombytes_buf() into sodium_malloc()ed memory (mlocked, fenced by
 * inaccessible guard pages), which is read-only except while it is made and
 * wiped; with AES-GCM that memory also holds libsodium's expanded key
 * schedule. The EVP contexts hold expanded copies in ordinary heap memory
 * until the seal is destroyed (EVP_CIPHER_CTX_free wipes them). Locking the
 * key away from the host's own swap protects little on its own: the frames,
 * plain guest memory, are not locked either (README: what encryption does
 * not protect). A swap file is unreadable once its host is gone: nothing
 * can recreate the key.
 *
 * The nonce is a 64-bit counter per seal, taken with one atomic add per
 * page, from 1: two writes never share a nonce under one key, whatever the
 * threads (2^64 writes do not happen), and a random key per seal means two
 * seals never share a key. 0 is never used, so a tag of zeros (a slot never
 * written) opens nothing. In the 96-bit nonce it is the low 8 bytes, the
 * high 4 are zero.
 *
 * The associated data is 16 bytes: the caller's name of the place (for the
 * swap tier: tier and slot) and the nonce again, little-endian. The name
 * keeps a page from being moved into another slot; the nonce, which the
 * caller keeps in memory with the tag of the slot's latest write, is the
 * write's generation and keeps an older copy of the same slot from
 * replacing the latest (its tag was made under another nonce). The nonce
 * is authenticated by the cipher anyway; naming it in the associated data
 * says so in the format.
 *
 * Cost in memory: 24 bytes of struct seal_tag per sealed page, kept by the
 * caller (swap.c keeps them beside the slots' checksums).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <sodium.h>

#include "seal.h"

#define SEAL_NONCE 12u   /* both ciphers' npub: crypto_aead_*_NPUBBYTES */
#define SEAL_AD    16u

_Static_assert(crypto_aead_aes256gcm_NPUBBYTES == SEAL_NONCE, "AES-GCM nonce size");
_Static_assert(crypto_aead_chacha20poly1305_ietf_NPUBBYTES == SEAL_NONCE, "ChaCha nonce size");
_Static_assert(crypto_aead_aes256gcm_ABYTES == sizeof(((struct seal_tag *)0)->mac), "tag size");
_Static_assert(crypto_aead_chacha20poly1305_ietf_ABYTES == sizeof(((struct seal_tag *)0)->mac),
	       "tag size");

/* The secret part, in sodium_malloc()ed memory: its size is a multiple of
   16, so the allocation (which ends at a guard page) is 16-aligned, as the
   AES-GCM state must be. */
struct seal_secret {
	crypto_aead_aes256gcm_state aes;      /* libsodium's expanded key schedule (AES) */
	unsigned char key[32];                /* the key: both ciphers', EVP's (AES) */
};
_Static_assert(sizeof(struct seal_secret) % 16 == 0, "keeps the state 16-aligned");
_Static_assert(crypto_aead_aes256gcm_KEYBYTES == 32 &&
	       crypto_aead_chacha20poly1305_ietf_KEYBYTES == 32, "key size");

#define SEAL_CTXS 16u    /* EVP context pairs per seal: more than faulting threads
			    are usual; one more thread falls back to libsodium */

/* A pair of keyed EVP contexts (AES-256-GCM), used by one thread at a time.
   busy: 0 free, 1 taken; taken with an atomic exchange (acquire) and given
   back with a release store, which pair: whatever the last holder did to
   enc and dec happens before the next holder's use. */
struct seal_ctx {
	int busy;
	EVP_CIPHER_CTX *enc, *dec;    /* NULL until a holder first needs it; under busy */
};

struct seal {
	enum seal_cipher cipher;              /* never SEAL_AUTO; fixed after create */
	struct seal_secret *secret;           /* read-only between create and destroy */
	uint64_t next;                        /* atomic: the next nonce, from 1 */
	int evp;                              /* AES-GCM through EVP; seal_use_evp() */
	struct seal_ctx ctx[SEAL_CTXS];       /* AES-GCM only */
};

static void seal_msg(char *msg, size_t msglen, const char *text)
{
	if (msg && msglen)
		snprintf(msg, msglen, "%s", text);
}

int seal_create(struct seal **out, char *msg, size_t msglen)
{
	return seal_create_cipher(out, SEAL_AUTO, msg, msglen);
}

int seal_create_cipher(struct seal **out, enum seal_cipher c, char *msg, size_t msglen)
{
	struct seal *s;

	seal_msg(msg, msglen, "");
	*out = NULL;
	/* thread-safe, and a no-op (1) after the first call */
	if (sodium_init() < 0) {
		seal_msg(msg, msglen, "swap encryption: libsodium cannot start (no source of "
			 "randomness?)");
		return -EIO;
	}
	if (c == SEAL_AUTO)
		c = crypto_aead_aes256gcm_is_available() ? SEAL_AES256GCM : SEAL_CHACHA20POLY1305;
	if (c == SEAL_AES256GCM && !crypto_aead_aes256gcm_is_available()) {
		seal_msg(msg, msglen, "swap encryption: AES-256-GCM needs a CPU with AES-NI and "
			 "PCLMUL; use ChaCha20-Poly1305");
		return -ENOTSUP;
	}
	if (c != SEAL_AES256GCM && c != SEAL_CHACHA20POLY1305) {
		seal_msg(msg, msglen, "swap encryption: unknown cipher");
		return -EINVAL;
	}
	s = calloc(1, sizeof(*s));
	if (!s) {
		seal_msg(msg, msglen, "swap encryption: cannot allocate the seal");
		return -ENOMEM;
	}
	s->secret = sodium_malloc(sizeof(*s->secret));
	if (!s->secret) {
		free(s);
		seal_msg(msg, msglen, "swap encryption: cannot allocate locked memory for the key");
		return -ENOMEM;
	}
	s->cipher = c;
	s->next = 1;
	s->evp = 1;
	randombytes_buf(s->secret->key, sizeof(s->secret->key));
	if (c == SEAL_AES256GCM)
		crypto_aead_aes256gcm_beforenm(&s->secret->aes, s->secret->key);
	sodium_mprotect_readonly(s->secret);
	*out = s;
	return 0;
}

void seal_destroy(struct seal *s)
{
	if (!s)
		return;
	for (unsigned i = 0; i < SEAL_CTXS; i++) {
		EVP_CIPHER_CTX_free(s->ctx[i].enc);    /* wipes the key schedule */
		EVP_CIPHER_CTX_free(s->ctx[i].dec);
	}
	sodium_mprotect_readwrite(s->secret);
	sodium_memzero(s->secret, sizeof(*s->secret));
	sodium_free(s->secret);
	free(s);
}

const char *seal_cipher(const struct seal *s)
{
	return s->cipher == SEAL_AES256GCM ? "aes256gcm" : "chacha20poly1305";
}

void seal_use_evp(struct seal *s, int on)
{
	s->evp = on != 0;
}

static void seal_put64(unsigned char *p, uint64_t v)
{
	for (unsigned i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

/* The nonce and the associated data of one write. */
static void seal_params(uint64_t ad, uint64_t nonce, unsigned char npub[SEAL_NONCE],
			unsigned char adb[SEAL_AD])
{
	memset(npub, 0, SEAL_NONCE);
	seal_put64(npub, nonce);
	seal_put64(adb, ad);
	seal_put64(adb + 8, nonce);
}

/* Each thread starts its search for a free context at its own number, so
   that threads that keep running keep to their own context. */
static unsigned seal_threads;                 /* numbered so far (atomic) */
static __thread unsigned seal_thread_no;      /* 0: not yet numbered, else 1 + it */

/* Takes a free context pair of @s, or returns NULL when all are taken. */
static struct seal_ctx *ctx_get(struct seal *s)
{
	unsigned start;

	if (!seal_thread_no)
		seal_thread_no = 1 + __atomic_fetch_add(&seal_threads, 1, __ATOMIC_RELAXED);
	start = seal_thread_no - 1;
	for (unsigned i = 0; i < SEAL_CTXS; i++) {
		struct seal_ctx *x = &s->ctx[(start + i) % SEAL_CTXS];

		/* acquire: pairs with the release in ctx_put() */
		if (!__atomic_load_n(&x->busy, __ATOMIC_RELAXED) &&
		    !__atomic_exchange_n(&x->busy, 1, __ATOMIC_ACQUIRE))
			return x;
	}
	return NULL;
}

static void ctx_put(struct seal_ctx *x)
{
	if (x)    /* release: pairs with the acquire in ctx_get() */
		__atomic_store_n(&x->busy, 0, __ATOMIC_RELEASE);
}

/* The holder's context for encrypting (@enc) or decrypting, keyed with
   @s's key the first time; NULL when EVP cannot make one (no memory). */
static EVP_CIPHER_CTX *ctx_keyed(struct seal *s, EVP_CIPHER_CTX **slot, int enc)
{
	EVP_CIPHER_CTX *c = *slot;

	if (c)
		return c;
	c = EVP_CIPHER_CTX_new();
	if (!c)
		return NULL;
	if (EVP_CipherInit_ex(c, EVP_aes_256_gcm(), NULL, s->secret->key, NULL, enc) != 1 ||
	    EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, SEAL_NONCE, NULL) != 1) {
		EVP_CIPHER_CTX_free(c);
		return NULL;
	}
	return *slot = c;
}

void seal_page(struct seal *s, uint64_t ad, const void *plain, void *cipher,
	       struct seal_tag *tag)
{
	unsigned char npub[SEAL_NONCE], adb[SEAL_AD];
	uint64_t nonce = __atomic_fetch_add(&s->next, 1, __ATOMIC_RELAXED);

	seal_params(ad, nonce, npub, adb);
	tag->nonce = nonce;
	if (s->cipher == SEAL_AES256GCM) {
		/* EVP only out of place (every write-out: into a bounce page),
		   so that @plain is still whole for libsodium should a step
		   fail midway (none does, once the context is keyed) */
		struct seal_ctx *x = s->evp && plain != cipher ? ctx_get(s) : NULL;
		EVP_CIPHER_CTX *e = x ? ctx_keyed(s, &x->enc, 1) : NULL;
		int n, ok = 0;

		if (e)
			ok = EVP_EncryptInit_ex(e, NULL, NULL, NULL, npub) == 1 &&
			     EVP_EncryptUpdate(e, NULL, &n, adb, SEAL_AD) == 1 &&
			     EVP_EncryptUpdate(e, cipher, &n, plain, SEAL_PAGE) == 1 &&
			     n == SEAL_PAGE &&
			     EVP_EncryptFinal_ex(e, (unsigned char *)cipher + n, &n) == 1 &&
			     EVP_CIPHER_CTX_ctrl(e, EVP_CTRL_GCM_GET_TAG, sizeof(tag->mac),
						 tag->mac) == 1;
		ctx_put(x);
		if (!ok)    /* the same cipher, libsodium's code */
			crypto_aead_aes256gcm_encrypt_detached_afternm(cipher, tag->mac, NULL,
								       plain, SEAL_PAGE, adb,
								       SEAL_AD, NULL, npub,
								       &s->secret->aes);
	} else {
		crypto_aead_chacha20poly1305_ietf_encrypt_detached(cipher, tag->mac, NULL, plain,
								   SEAL_PAGE, adb, SEAL_AD, NULL,
								   npub, s->secret->key);
	}
}

int seal_open(struct seal *s, uint64_t ad, const void *cipher, void *plain,
	      const struct seal_tag *tag)
{
	unsigned char npub[SEAL_NONCE], adb[SEAL_AD];
	int rc;

	if (!tag->nonce)
		return -EBADMSG;
	seal_params(ad, tag->nonce, npub, adb);
	/* None hands out a byte it has not proved: ChaCha20-Poly1305 checks
	   the tag first and decrypts only then; AES-GCM decrypts while it
	   hashes, so @plain is wiped when the tag does not match (libsodium
	   does it itself, EVP leaves it to its caller). */
	if (s->cipher == SEAL_AES256GCM) {
		struct seal_ctx *x = s->evp ? ctx_get(s) : NULL;
		EVP_CIPHER_CTX *d = x ? ctx_keyed(s, &x->dec, 0) : NULL;
		int n, r = -1;

		/* r: -1 while @cipher is untouched (libsodium may still open
		   it, in place too), then 1 proved or 0 not (wiped below) */
		if (d && EVP_DecryptInit_ex(d, NULL, NULL, NULL, npub) == 1 &&
		    EVP_CIPHER_CTX_ctrl(d, EVP_CTRL_GCM_SET_TAG, sizeof(tag->mac),
					(void *)tag->mac) == 1 &&
		    EVP_DecryptUpdate(d, NULL, &n, adb, SEAL_AD) == 1)
			r = EVP_DecryptUpdate(d, plain, &n, cipher, SEAL_PAGE) == 1 &&
			    n == SEAL_PAGE &&
			    EVP_DecryptFinal_ex(d, (unsigned char *)plain + n, &n) == 1;
		ctx_put(x);
		if (r == 0) {
			sodium_memzero(plain, SEAL_PAGE);
			rc = -1;
		} else if (r == 1) {
			rc = 0;
		} else {    /* EVP could not run: the same cipher, libsodium's code */
			rc = crypto_aead_aes256gcm_decrypt_detached_afternm(plain, NULL, cipher,
									    SEAL_PAGE, tag->mac,
									    adb, SEAL_AD, npub,
									    &s->secret->aes);
		}
	} else {
		rc = crypto_aead_chacha20poly1305_ietf_decrypt_detached(plain, NULL, cipher,
									SEAL_PAGE, tag->mac, adb,
									SEAL_AD, npub,
									s->secret->key);
	}
	return rc ? -EBADMSG : 0;
}
