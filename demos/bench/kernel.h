/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * kernel.h: the kernel's own memory management set up for a comparison
 * (kernel.c): a swap file of ours at the highest priority, a memory cgroup
 * with a limit, and a child process that runs the random-read workload of
 * pagein_random_t1 inside it. Everything is undone by kernel_end(), and at
 * exit or on a signal if the run ends first. Needs root; without it, or
 * where a piece cannot be set up, the figure is skipped with the reason.
 *
 * Use, in one figure at a time:
 *   kernel_begin(r) == 0, then kernel_swap_on(), kernel_cgroup() and
 *   kernel_random_reads() as the figure needs (each 0, or -1 after
 *   recording why not in @r), then kernel_end() whatever happened.
 */
#ifndef UMLMEM_BENCH_KERNEL_H
#define UMLMEM_BENCH_KERNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "harness.h"

/* What the child saw over its timed phase. */
struct kernel_report {
	int err;		/* 0, or an errno of the child */
	char msg[160];
	uint64_t majflt, minflt, reads, pswpin, mismatches;
	uint64_t zswpin, zswpout;	/* /proc/vmstat, over the timed phase */
	double secs;
};

/* Root, and the cleanup registered. */
int kernel_begin(struct result *r);
/* A swap file of @bytes in @dir, swapped on at the highest priority;
   *others: other swap is active too. */
int kernel_swap_on(struct result *r, const char *dir, uint64_t bytes, bool *others);
/* A memory cgroup limited to @limit bytes (v2 at the root, or v1 below the
   bench's own); @desc describes it for the output. */
int kernel_cgroup(struct result *r, uint64_t limit, char *desc, size_t desclen);
/* zswap on or off (/sys/module/zswap/parameters/enabled) until
   kernel_end(), which restores it; @compressor gets its compressor. */
int kernel_zswap(struct result *r, bool on, char *compressor, size_t len);
/* A child in the cgroup writes @ws bytes of anonymous memory with the
   content rule (or a copy of @src, ws bytes, when not NULL), then reads 8
   bytes at uniformly random pages for the run's warm-up and timed phase,
   checking every value; *rep is its report. */
int kernel_random_reads(struct bench *b, struct result *r, uint64_t ws, const uint8_t *src,
			struct kernel_report *rep);
/* Undoes everything (kills the child, swapoff, removes the file and the
   cgroup), warning about what could not be undone. */
void kernel_end(void);

#endif
