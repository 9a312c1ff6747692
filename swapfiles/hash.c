/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * page_hash(): xxh3-64 of one page, the hash of swap checksums and of the
 * merge scanner's indexes.
 *
 * The implementation is libxxhash's own, compiled from its header (xxhash.h
 * with XXH_INLINE_ALL), twice: here for the baseline of the target, and in
 * hash_avx2.c with -mavx2. The shared libxxhash that distributions ship is
 * built for the baseline (SSE2 on x86-64), which leaves half the speed of
 * an AVX2 CPU unused on the scanner's hottest loop; the choice is made once,
 * at load time, from what the CPU says it has. Both produce the same values
 * (xxh3 is defined bit for bit, whatever the vector width).
 */
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "swap.h"

#if defined(__x86_64__) || defined(__i386__)
uint64_t page_hash_avx2(const void *page, uint64_t seed);
#endif

static uint64_t page_hash_base(const void *page, uint64_t seed)
{
	return XXH3_64bits_withSeed(page, SWAP_PAGE, seed);
}

static uint64_t (*hash_fn)(const void *, uint64_t) = page_hash_base;
static const char *hash_name = "xxh3 baseline";

__attribute__((constructor)) static void hash_pick(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx2")) {
		hash_fn = page_hash_avx2;
		hash_name = "xxh3 avx2";
	}
#endif
}

uint64_t page_hash(const void *page, uint64_t seed)
{
	return hash_fn(page, seed);
}

const char *page_hash_impl(void)
{
	return hash_name;
}
