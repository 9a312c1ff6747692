/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The work a native-mode demo guest does, and the block through which the
 * host hands it its parameters and reads its result. The same work.c is
 * built twice: freestanding into the guest image (guest.bin) and into the
 * host program, which computes each guest's expected result on its own.
 *
 * Guest memory layout (guest physical == guest virtual, identity mapped):
 *   0x0000_8000  struct guest_params (the host writes it before the run)
 *   0x000F_0000  initial stack pointer (grows down)
 *   0x0010_0000  guest.bin, entry point at its first byte (_start)
 *   array_gpa    the array the guest fills and sorts (n 64-bit words)
 * The guest ends with HLT after setting done.
 */
#ifndef UMLMEM_DEMO_WORK_H
#define UMLMEM_DEMO_WORK_H

#include <stdint.h>

#define GUEST_PARAMS_GPA 0x8000ull
#define GUEST_STACK_TOP  0xF0000ull
#define GUEST_LOAD_GPA   0x100000ull
#define GUEST_MAGIC      0x31474d4c4d4c4d55ull   /* "UMLMLMG1" */

struct guest_params {
	uint64_t magic;      /* GUEST_MAGIC, set by the host */
	uint64_t seed;       /* PRNG seed: guests with the same seed hold equal pages */
	uint64_t array_gpa;  /* where the array lives, page aligned */
	uint64_t n;          /* 64-bit words in it */
	uint64_t rounds;     /* times to refill, sort and hash (>= 1) */
	/* written by the guest */
	uint64_t hash;       /* FNV-1a 64 over the sorted array's bytes, last round */
	uint64_t sorted;     /* 1 when the array was found sorted after each sort */
	uint64_t done;       /* 1 when the guest finished */
};

/* Fills p->n words at @array with xorshift64* from p->seed (+ round), sorts
   them ascending (heap sort: in place, no allocator), checks the order and
   hashes them; sets p->hash, p->sorted and, last, p->done. */
void guest_work(struct guest_params *p, uint64_t *array);

#endif
