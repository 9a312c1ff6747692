/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * seal.c: authenticated encryption of the pages a host writes to swap
 * (UMLMEM_SWAP_ENCRYPT), with libsodium.
 *
 * Why. A swap file is a disk other tenants may read and an NBD export a
 * server on the network; a page that leaves the process must be unreadable
 * there and any change to it must be seen. The xxh3 checksum of a plain
 * swap slot catches corruption, not an adversary, who can recompute it.
 *
 * The cipher. An AEAD from a well-kept library: AES-256-GCM where the CPU
 * has AES-NI and PCLMUL (libsodium's only AES-GCM is that hardware one),
 * else ChaCha20-Poly1305 (the IETF variant, 96-bit nonce), which is fast in
 * plain vector code. Both take a 256-bit key and give a 16-byte tag.
 *
 * The key is random per seal (per host) and never leaves memory: it is made
 * by randombytes_buf() into sodium_malloc()ed memory (mlocked, so it is not
 * written to the host's own swap; fenced by inaccessible guard pages),
 * which is read-only except while it is made and wiped. With AES-GCM the
 * memory holds libsodium's expanded key schedule, made once, not the key.
 * A swap file is unreadable once its host is gone: nothing can recreate it.
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
	union {
		crypto_aead_aes256gcm_state aes;   /* the expanded key schedule */
		unsigned char key[crypto_aead_chacha20poly1305_ietf_KEYBYTES];
	} u;
};

struct seal {
	enum seal_cipher cipher;              /* never SEAL_AUTO; fixed after create */
	struct seal_secret *secret;           /* read-only between create and destroy */
	uint64_t next;                        /* atomic: the next nonce, from 1 */
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
	unsigned char key[crypto_aead_aes256gcm_KEYBYTES];
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
	if (c == SEAL_AES256GCM) {
		randombytes_buf(key, sizeof(key));
		crypto_aead_aes256gcm_beforenm(&s->secret->u.aes, key);
		sodium_memzero(key, sizeof(key));
	} else {
		randombytes_buf(s->secret->u.key, sizeof(s->secret->u.key));
	}
	sodium_mprotect_readonly(s->secret);
	*out = s;
	return 0;
}

void seal_destroy(struct seal *s)
{
	if (!s)
		return;
	sodium_mprotect_readwrite(s->secret);
	sodium_memzero(s->secret, sizeof(*s->secret));
	sodium_free(s->secret);
	free(s);
}

const char *seal_cipher(const struct seal *s)
{
	return s->cipher == SEAL_AES256GCM ? "aes256gcm" : "chacha20poly1305";
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

void seal_page(struct seal *s, uint64_t ad, const void *plain, void *cipher,
	       struct seal_tag *tag)
{
	unsigned char npub[SEAL_NONCE], adb[SEAL_AD];
	uint64_t nonce = __atomic_fetch_add(&s->next, 1, __ATOMIC_RELAXED);

	seal_params(ad, nonce, npub, adb);
	tag->nonce = nonce;
	if (s->cipher == SEAL_AES256GCM)
		crypto_aead_aes256gcm_encrypt_detached_afternm(cipher, tag->mac, NULL, plain,
							       SEAL_PAGE, adb, SEAL_AD, NULL,
							       npub, &s->secret->u.aes);
	else
		crypto_aead_chacha20poly1305_ietf_encrypt_detached(cipher, tag->mac, NULL, plain,
								   SEAL_PAGE, adb, SEAL_AD, NULL,
								   npub, s->secret->u.key);
}

int seal_open(struct seal *s, uint64_t ad, const void *cipher, void *plain,
	      const struct seal_tag *tag)
{
	unsigned char npub[SEAL_NONCE], adb[SEAL_AD];
	int rc;

	if (!tag->nonce)
		return -EBADMSG;
	seal_params(ad, tag->nonce, npub, adb);
	/* Both verify before they hand out a byte: ChaCha20-Poly1305 checks
	   the tag first and decrypts only then, AES-GCM wipes @plain when the
	   tag does not match (it decrypts while it hashes). */
	if (s->cipher == SEAL_AES256GCM)
		rc = crypto_aead_aes256gcm_decrypt_detached_afternm(plain, NULL, cipher, SEAL_PAGE,
								    tag->mac, adb, SEAL_AD, npub,
								    &s->secret->u.aes);
	else
		rc = crypto_aead_chacha20poly1305_ietf_decrypt_detached(plain, NULL, cipher,
									SEAL_PAGE, tag->mac, adb,
									SEAL_AD, npub,
									s->secret->u.key);
	return rc ? -EBADMSG : 0;
}
