/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * rng.h: the one pseudo-random generator of the umlmem command, splitmix64:
 * one 64-bit word of state, a few cycles a number, and a finaliser that is
 * a bijection, so that distinct inputs never collide (the subcommands use
 * it on its own to derive page contents). Not for anything secret.
 */
#ifndef UMLMEM_DEMOS_RNG_H
#define UMLMEM_DEMOS_RNG_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define RNG_GOLDEN	0x9e3779b97f4a7c15ull

/* The splitmix64 finaliser. */
static inline uint64_t mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static inline uint64_t rng_next(uint64_t *s)
{
	*s += RNG_GOLDEN;
	return mix64(*s);
}

/* Uniform in [0, n) without the bias of a modulo; 0 when n is 0. */
static inline uint64_t rng_below(uint64_t *s, uint64_t n)
{
	return (uint64_t)(((unsigned __int128)rng_next(s) * n) >> 64);
}

/* @len bytes of the stream, eight at a time. */
static inline void rng_fill(uint64_t *s, unsigned char *p, size_t len)
{
	uint64_t w;
	size_t i;

	for (i = 0; i + 8 <= len; i += 8) {
		w = rng_next(s);
		memcpy(p + i, &w, 8);
	}
	if (i < len) {
		w = rng_next(s);
		memcpy(p + i, &w, len - i);
	}
}

#endif
