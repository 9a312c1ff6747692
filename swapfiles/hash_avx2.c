/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * xxh3 of one page built for AVX2 (the Makefile compiles this file alone
 * with -mavx2); hash.c calls it only where the CPU has AVX2.
 */
#if defined(__x86_64__) || defined(__i386__)
#define XXH_INLINE_ALL
#define XXH_VECTOR XXH_AVX2
#include <xxhash.h>
#include <stdint.h>

uint64_t page_hash_avx2(const void *page, uint64_t seed);

uint64_t page_hash_avx2(const void *page, uint64_t seed)
{
	return XXH3_64bits_withSeed(page, 4096, seed);
}
#endif
