/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Published replacement policies simulated exactly on a reference string,
 * to judge umlmem's pager against the best known and not only against LRU
 * (demos/replay/replay_policies.c).
 */
#ifndef UMLMEM_REPLAY_POLICIES_H
#define UMLMEM_REPLAY_POLICIES_H

#include <stdint.h>

/* ARC (Megiddo and Modha, FAST 2003) with @budget frames on the @nrefs
   references @ref[] to pages 0 .. @npages - 1 (bit 31 of a reference, the
   write mark, is ignored); faults[owner[i]] is incremented for every
   reference i that misses. Returns 0, or -1 when out of memory. */
int sim_arc(const uint32_t *ref, const uint32_t *owner, uint64_t nrefs, uint32_t npages,
	    uint64_t budget, uint64_t *faults);

/* S3-FIFO (Yang et al., SOSP 2023) with @budget frames on the same string,
   counted the same way. Returns 0, or -1 when out of memory. */
int sim_s3fifo(const uint32_t *ref, const uint32_t *owner, uint64_t nrefs, uint32_t npages,
	       uint64_t budget, uint64_t *faults);

#endif
