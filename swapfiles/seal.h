/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * seal.h: authenticated encryption of swap pages (UMLMEM_SWAP_ENCRYPT). See
 * seal.c for the design.
 *
 * A seal is one random key and a nonce counter. seal_page() encrypts one
 * page of SEAL_PAGE bytes and returns its tag: the nonce it used and the
 * 16-byte authenticator. The ciphertext is exactly as long as the page (it
 * fills a slot); the tag stays in memory with the caller. seal_open()
 * proves and decrypts. @ad names where the page lives (the caller's
 * (tier, slot)); it and the nonce are authenticated with the bytes, so a
 * ciphertext opens only under the name and the write it was sealed for.
 *
 * Independent of the swap set: it knows pages, names and tags, nothing of
 * slots, files or engines. A seal is thread-safe: its key is read-only
 * after seal_create() and its counter is an atomic.
 */
#ifndef UMLMEM_SEAL_H
#define UMLMEM_SEAL_H

#include <stddef.h>
#include <stdint.h>

#define SEAL_PAGE 4096u

struct seal;

/* What one sealed page keeps in memory beside its ciphertext: 24 bytes.
   nonce 0 is never used by a write: a tag of zeros names no write. */
struct seal_tag {
	uint64_t nonce;     /* the write's number: per seal, from 1, never reused */
	uint8_t mac[16];    /* the AEAD authenticator of (ad, nonce, ciphertext) */
};

enum seal_cipher {
	SEAL_AUTO = 0,      /* AES-256-GCM where the CPU has AES-NI, else ChaCha20-Poly1305 */
	SEAL_AES256GCM,     /* -ENOTSUP where the CPU lacks AES-NI and PCLMUL */
	SEAL_CHACHA20POLY1305,
};

/*
 * Makes a seal with a fresh random key (libsodium's randombytes, the
 * kernel's getrandom), kept in locked memory guarded by inaccessible pages
 * and read-only but while it is made and wiped. On failure returns -ENOMEM,
 * -ENOTSUP (the cipher asked for is not available) or -EIO (libsodium cannot
 * start), with a sentence in @msg, and *out is NULL.
 */
int  seal_create(struct seal **out, char *msg, size_t msglen);
int  seal_create_cipher(struct seal **out, enum seal_cipher c, char *msg, size_t msglen);
/* Wipes the key and frees the seal. NULL is a no-op. */
void seal_destroy(struct seal *s);
/* The cipher's name, for messages and the bench ("aes256gcm", ...). */
const char *seal_cipher(const struct seal *s);
/* AES-256-GCM only: @on 0 makes @s use libsodium's code for every page,
   1 (the default) OpenSSL's where it can (see seal.c). The two give the
   same bytes; this is for the tests, which check that, and the bench,
   which times both. Call it while no other thread uses @s. */
void seal_use_evp(struct seal *s, int on);

/* Encrypts the SEAL_PAGE bytes at @plain into @cipher (may be the same
   buffer) under a nonce no earlier call of @s used, authenticating @ad;
   fills @tag. Cannot fail. */
void seal_page(struct seal *s, uint64_t ad, const void *plain, void *cipher,
	       struct seal_tag *tag);
/* Proves that the SEAL_PAGE bytes at @cipher are what seal_page() made for
   @ad with @tag, and decrypts them into @plain (may be the same buffer).
   Returns 0, or -EBADMSG when they are not (a changed byte, another @ad,
   another write's tag, a tag of zeros); @plain then holds no plaintext of
   @cipher (it may hold anything else). */
int  seal_open(struct seal *s, uint64_t ad, const void *cipher, void *plain,
	       const struct seal_tag *tag);

#endif
