/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The families of `umlmem bench` figures, in the order they run and are
 * printed: one line per family, one file per family (demos/bench/NAME.c
 * defining bench_NAME). A family whose figures use another's results comes
 * after it. Included by harness.h with BENCH_FAMILY defined.
 */
BENCH_FAMILY(pagein)
BENCH_FAMILY(pageout)
BENCH_FAMILY(hits)
BENCH_FAMILY(readahead)
BENCH_FAMILY(kernel)
BENCH_FAMILY(dedup)
BENCH_FAMILY(native)
BENCH_FAMILY(scan)
BENCH_FAMILY(tier)
BENCH_FAMILY(crypt)
BENCH_FAMILY(nbd)
BENCH_FAMILY(memory)
BENCH_FAMILY(clone)
BENCH_FAMILY(restore)
