/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * native.c: native mode (umlmem_guest_map), its faults and its steady state.
 *
 * native_fault_zero -- µs per first touch (an 8-byte store) of a
 *   never-written page of a mapped guest, pages touched in address order,
 *   on a budget that holds them all (no eviction). Baseline: the same loop
 *   over anonymous PROT_NONE memory whose SIGSEGV handler mprotects the
 *   page read-write, the classic user-space fault scheme: signal delivery,
 *   one system call and the kernel's own zero-fill fault. Best of 5
 *   (--quick 3) each, alternating. Context: the same umlmem loop served by
 *   a single, unbound handler thread (UMLMEM_NATIVE_THREADS=1), and how
 *   often the handler ran on the faulting thread's CPU.
 *
 * native_fault_swap -- µs per touch (an 8-byte load) of a swapped-out page:
 *   a guest of 4B' on a budget of B' (32 MiB; --quick 8 MiB), every page
 *   written then evicted, readahead off, pages touched once each in a
 *   random order, so every touch is a swap-in (the evictions it causes drop
 *   clean pages: no writes). Every value is checked. Baseline: raw 4 KiB
 *   reads at queue depth 1 from a file of the same size through the same
 *   engine (as for pagein_random_t1), in alternating slices.
 *
 * native_seq_touch -- GB/s of 8-byte stores over a mapped guest whose
 *   every page is resident and already writable, so no fault is taken:
 *   the cost of running on umlmem memory once it is there. Baseline: the
 *   same function over anonymous memory of the same size, pre-faulted, 4
 *   KiB pages (MADV_NOHUGEPAGE, as the frame store's shmem pages are).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "harness.h"

enum { NV_ZERO, NV_SWAP, NV_SEQ };

/* Maps @g; a skip where native mode is unavailable here, else an error. */
static int native_map(struct result *r, umlmem_guest *g, void **base)
{
	int rc = umlmem_guest_map(g, base);

	if (rc == -EPERM || rc == -EOPNOTSUPP || rc == -ENOSYS)
		res_fail(r, RS_SKIP, "native mode unavailable: %s", umlmem_errmsg());
	else if (rc)
		res_lib_fail(r, rc, "umlmem_guest_map");
	return rc;
}

static uint8_t *segv_base;
static uint64_t segv_bytes;

static void segv_mprotect(int sig, siginfo_t *si, void *uc)
{
	uintptr_t a = (uintptr_t)si->si_addr & ~(uintptr_t)(PAGE - 1);

	(void)uc;
	if (a - (uintptr_t)segv_base >= segv_bytes) {
		signal(sig, SIG_DFL);   /* not ours: let it kill us */
		return;
	}
	mprotect((void *)a, PAGE, PROT_READ | PROT_WRITE);
}

static __attribute__((noinline)) double touch_store(uint8_t *p, uint64_t npages)
{
	double t = now_s();

	for (uint64_t i = 0; i < npages; i++)
		((volatile uint64_t *)(p + i * PAGE))[0] = i + 1;
	return now_s() - t;
}

static __attribute__((noinline)) void store_words(uint64_t *p, uint64_t n, uint64_t x)
{
	for (uint64_t i = 0; i < n; i++)
		p[i] = i ^ x;
}

static double segv_round(struct result *r, uint64_t npages)
{
	struct sigaction sa = { 0 }, old;
	double t;

	segv_bytes = npages * PAGE;
	segv_base = mmap(NULL, segv_bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (segv_base == MAP_FAILED) {
		res_fail(r, RS_ERROR, "baseline: mmap: %s", strerror(errno));
		return -1;
	}
	madvise(segv_base, segv_bytes, MADV_NOHUGEPAGE);
	sa.sa_sigaction = segv_mprotect;
	sa.sa_flags = SA_SIGINFO;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGSEGV, &sa, &old);
	t = touch_store(segv_base, npages);
	sigaction(SIGSEGV, &old, NULL);
	munmap(segv_base, segv_bytes);
	return t;
}

/* One round of first touches on a fresh host; *local gets the fraction of
   sampled faults served on the faulting thread's CPU. */
static double native_zero_round(struct bench *b, struct result *r, uint64_t npages,
				double *local)
{
	struct umlmem_host_info in;
	umlmem_host *h;
	umlmem_guest *g;
	void *base;
	double t = -1;
	uint64_t v;

	if (bench_host(b, r, (npages + npages / 4 + 64) * PAGE, npages * PAGE, 0, "native", &h, &g))
		return -1;
	if (native_map(r, g, &base))
		goto out;
	t = touch_store(base, npages);
	for (uint64_t i = 0; i < npages; i += 97) {
		if (umlmem_read(g, i * PAGE, &v, 8) || v != i + 1) {
			res_fail(r, RS_ERROR, "page %" PRIu64 " reads back 0x%" PRIx64 ", expected %"
				 PRIu64, i, v, i + 1);
			t = -1;
			break;
		}
	}
	umlmem_host_info(h, &in, sizeof(in));
	*local = in.native_cpu_sampled ? (double)in.native_cpu_local / in.native_cpu_sampled : NAN;
out:
	umlmem_host_destroy(h);
	return t;
}

static void native_zero(struct bench *b, struct result *r)
{
	uint64_t npages = b->quick ? 4096 : 16384;
	unsigned reps = b->quick ? 3 : 5;
	double best_u = INFINITY, best_b = INFINITY, one = -1, one_max = -1, local = NAN, l;
	double one_local_min = 2, one_local_max = -1;
	const char *env = getenv("UMLMEM_NATIVE_THREADS");
	char *saved = env ? strdup(env) : NULL;

	if (!r->want)
		return;
	bench_progress("native_fault_zero: %" PRIu64 " first touches, %u rounds", npages, reps);
	for (unsigned i = 0; i < reps; i++) {
		double tu = native_zero_round(b, r, npages, &l), tb;

		if (tu < 0)
			goto out;
		if (tu < best_u) {
			best_u = tu;
			local = l;
		}
		tb = segv_round(r, npages);
		if (tb < 0)
			goto out;
		if (tb < best_b)
			best_b = tb;
	}
	/* the same with one unbound handler thread, for the note: where the
	   scheduler puts it decides its cost, so the spread is what counts */
	setenv("UMLMEM_NATIVE_THREADS", "1", 1);
	for (unsigned i = 0; i < reps; i++) {
		double t = native_zero_round(b, r, npages, &l);

		if (t > 0 && (one < 0 || t < one))
			one = t;
		if (t > one_max)
			one_max = t;
		if (t > 0 && l > one_local_max)
			one_local_max = l;
		if (t > 0 && l < one_local_min)
			one_local_min = l;
	}
	res_set(r, best_u / npages * 1e6, best_b / npages * 1e6, "us", true);
	res_int(r, "faults", (int64_t)npages);
	res_num(r, "handler_local_fraction", local);
	res_num(r, "one_handler_thread_us_best", one > 0 ? one / npages * 1e6 : NAN);
	res_num(r, "one_handler_thread_us_worst", one_max > 0 ? one_max / npages * 1e6 : NAN);
	res_num(r, "one_handler_local_fraction_min", one_local_min <= 1 ? one_local_min : NAN);
	res_num(r, "one_handler_local_fraction_max", one_local_max >= 0 ? one_local_max : NAN);
	res_note(r, "first-touch store fault through userfaultfd (per-CPU handler threads) vs "
		 "SIGSEGV + mprotect on anonymous memory; best of %u each", reps);
out:
	if (saved) {
		setenv("UMLMEM_NATIVE_THREADS", saved, 1);
		free(saved);
	} else {
		unsetenv("UMLMEM_NATIVE_THREADS");
	}
}

static void native_swap(struct bench *b, struct result *r)
{
	uint64_t budget = (b->quick ? 8 : 32) << 20, npages = 4 * budget / PAGE;
	uint64_t touches = b->quick ? 2048 : 8192, *order = NULL, done = 0, ins = 0, raw_ops = 0;
	unsigned slices = 4;
	double tu = 0, tb = 0;
	struct umlmem_stats s0, s1;
	struct rawfile raw = { 0 };
	umlmem_host *h = NULL;
	umlmem_guest *g = NULL;
	uint8_t *base;
	uint64_t rng = 0x5eed, ev;
	int rc;

	if (!r->want)
		return;
	bench_progress("native_fault_swap: %" PRIu64 " swap-in touches of a %" PRIu64 " MiB guest",
		       touches, npages * PAGE >> 20);
	if (bench_host(b, r, budget, npages * PAGE, UMLMEM_NO_READAHEAD, "native-swap", &h, &g))
		return;
	if (bench_fill_guest(r, g, npages * PAGE, 0, "native_fault_swap"))
		goto out;
	rc = umlmem_reclaim(h, npages, &ev);
	if (rc) {
		res_lib_fail(r, rc, "umlmem_reclaim");
		goto out;
	}
	if (native_map(r, g, (void **)&base))
		goto out;
	order = malloc(npages * sizeof(*order));
	if (!order) {
		res_fail(r, RS_ERROR, "out of memory");
		goto out;
	}
	for (uint64_t i = 0; i < npages; i++)
		order[i] = i;
	for (uint64_t i = npages - 1; i > 0; i--) {
		uint64_t j = rng_below(&rng, i + 1), t = order[i];

		order[i] = order[j];
		order[j] = t;
	}
	if (raw_open(b, r, &raw, npages, RAW_WRITE_PAGES + 1) || raw_fill(r, &raw))
		goto out;
	for (unsigned sl = 0; sl < slices; sl++) {
		uint64_t n = touches / slices;
		double t;

		umlmem_host_stats(h, &s0);
		t = now_s();
		for (uint64_t i = 0; i < n; i++) {
			uint64_t p = order[done + i], v = ((volatile uint64_t *)(base + p * PAGE))[0];

			if (v != word_of(p, 0)) {
				res_fail(r, RS_ERROR, "page %" PRIu64 " reads 0x%" PRIx64 " through the "
					 "mapping, expected 0x%" PRIx64, p, v, word_of(p, 0));
				goto out;
			}
		}
		tu += now_s() - t;
		umlmem_host_stats(h, &s1);
		ins += s1.swap_ins - s0.swap_ins;
		done += n;
		t = now_s();
		for (uint64_t i = 0; i < n; i++) {
			rc = raw_read_random(&raw, &rng, raw.mem + (uint64_t)RAW_WRITE_PAGES * PAGE);
			if (rc) {
				res_fail(r, RS_ERROR, "baseline read: %s", strerror(-rc));
				goto out;
			}
		}
		tb += now_s() - t;
		raw_ops += n;
	}
	if (ins < done) {
		res_fail(r, RS_ERROR, "%" PRIu64 " touches made only %" PRIu64 " swap-ins", done, ins);
		goto out;
	}
	res_set(r, tu / done * 1e6, tb / raw_ops * 1e6, "us", true);
	res_int(r, "touches", (int64_t)done);
	res_int(r, "swap_ins", (int64_t)ins);
	res_note(r, "load of a swapped-out page of a mapped guest (readahead off) vs a raw 4 KiB "
		 "read at queue depth 1 through the same engine; %u alternating slices", slices);
out:
	free(order);
	raw_close(&raw);
	umlmem_host_destroy(h);
}

static void native_seq(struct bench *b, struct result *r)
{
	uint64_t bytes = (b->quick ? 16 : 64) << 20, words = bytes / 8;
	unsigned reps = b->quick ? 20 : 10;
	double best_u = INFINITY, best_b = INFINITY;
	umlmem_host *h = NULL;
	umlmem_guest *g = NULL;
	uint64_t *base, *plain, v;

	if (!r->want)
		return;
	bench_progress("native_seq_touch: %" PRIu64 " MiB, %u passes each", bytes >> 20, reps);
	if (bench_host(b, r, bytes + (8 << 20), bytes, 0, "native-seq", &h, &g))
		return;
	if (native_map(r, g, (void **)&base))
		goto out;
	plain = bench_map_pages(bytes);
	if (!plain) {
		res_fail(r, RS_ERROR, "out of memory for the baseline");
		goto out;
	}
	store_words(base, words, 0);    /* every page faulted in, writable */
	store_words(plain, words, 0);
	for (unsigned i = 0; i < reps; i++) {
		double t = now_s();

		store_words(base, words, i + 1);
		t = now_s() - t;
		if (t < best_u)
			best_u = t;
		t = now_s();
		store_words(plain, words, i + 1);
		t = now_s() - t;
		if (t < best_b)
			best_b = t;
	}
	for (uint64_t w = 0; w < words; w += 4099) {
		if (umlmem_read(g, w * 8, &v, 8) || v != (w ^ reps)) {
			res_fail(r, RS_ERROR, "word %" PRIu64 " reads 0x%" PRIx64 ", expected 0x%"
				 PRIx64, w, v, w ^ reps);
			break;
		}
	}
	if (r->state != RS_ERROR) {
		res_set(r, bytes / best_u / 1e9, bytes / best_b / 1e9, "GB/s", false);
		res_note(r, "8-byte stores over a resident, writable mapped guest vs anonymous "
			 "memory, 4 KiB pages both; best of %u passes each", reps);
	}
	munmap(plain, bytes);
out:
	umlmem_host_destroy(h);
}

static void native_run(struct bench *b, struct result **res)
{
	native_zero(b, res[NV_ZERO]);
	native_swap(b, res[NV_SWAP]);
	native_seq(b, res[NV_SEQ]);
}

static const struct bench_key keys[] = {
	[NV_ZERO] = { "native_fault_zero",
		"us per first-touch store fault of a mapped guest;\n"
		"baseline: SIGSEGV + mprotect on anonymous memory\n" },
	[NV_SWAP] = { "native_fault_swap",
		"us per load of a swapped-out page of a mapped guest;\n"
		"baseline: a raw 4 KiB read at queue depth 1\n" },
	[NV_SEQ] = { "native_seq_touch",
		"GB/s of stores over a resident, writable mapped guest;\n"
		"baseline: the same over anonymous memory\n" },
	{ NULL },
};

const struct bench_family bench_native = { "native", keys, native_run };
