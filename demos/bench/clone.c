/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * clone.c: what umlmem_guest_clone() costs, against copying the guest.
 *
 * clone -- GiB of resident guest RAM cloned per second. A host whose budget
 *   holds the guest with a sixteenth to spare, one guest of 1 GiB (--quick:
 *   256 MiB) with every page written (the content rule: distinct, never
 *   zero), so every page is resident and private. One measurement is one
 *   umlmem_guest_clone() of it, timed on CLOCK_MONOTONIC (wall) and on the
 *   calling thread's CPU clock; the clone is destroyed before the next
 *   one, so each clone finds the source as the first did. The value is the
 *   guest's bytes over the wall time of the first clone of the process,
 *   which also pays for the first touch of the memory its reverse map
 *   (16 bytes a page) and page table (8 bytes a page) need: the case an
 *   emulator forking one guest meets, and the one the goal (1 GiB in
 *   20 ms) is about. Then 5 more clones (--quick 3), whose best
 *   ("best_clone_ms") and every time are reported ("clone_ms",
 *   "clone_cpu_ms"). Baseline: memcpy() of the same number of bytes
 *   between two buffers of 4 KiB pages already touched, best of as many:
 *   what a clone that copied its source would cost at the least, with no
 *   frame to find and no page table to fill. The ratio says how many times
 *   faster sharing is than copying.
 *
 *   The sharing cap: a second guest of 16 MiB is cloned 300 times, every
 *   clone kept, with the default max_sharing of 256, and the wall times
 *   of the 2nd, the 255th (the last that fits on the first frames), the
 *   256th (which moves the source to copies of its frames) and the 300th
 *   clone are reported ("cap_clone_ms"), with the frames in use at the end
 *   ("cap_frames": 2 per page of the guest at the least).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "harness.h"

enum { CLONE };

#define CLONE_BYTES		(1ull << 30)
#define CLONE_BYTES_QUICK	(256ull << 20)
#define CLONE_REPS		5
#define CLONE_REPS_QUICK	3
#define CAP_BYTES		(16ull << 20)
#define CAP_CLONES		300u

static double thread_cpu_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One timed clone of @g, destroyed again unless @keep. */
static int clone_once(struct result *r, umlmem_guest *g, double *wall, double *cpu,
		      umlmem_guest **keep)
{
	umlmem_guest *c;
	double t0, c0;
	int rc;

	c0 = thread_cpu_s();
	t0 = now_s();
	rc = umlmem_guest_clone(g, NULL, &c);
	*wall = now_s() - t0;
	*cpu = thread_cpu_s() - c0;
	if (rc) {
		res_lib_fail(r, rc, "umlmem_guest_clone");
		return rc;
	}
	if (keep)
		*keep = c;
	else
		umlmem_guest_destroy(c);
	return 0;
}

/* The 300 clones of a small guest: times of the ones around the cap. */
static int clone_cap(struct bench *b, struct result *r)
{
	umlmem_guest **c = calloc(CAP_CLONES, sizeof(*c));
	struct umlmem_stats st;
	char times[200] = "";
	umlmem_host *h = NULL;
	umlmem_guest *g = NULL;
	double wall, cpu;
	int rc = -ENOMEM;

	if (!c) {
		res_fail(r, RS_ERROR, "out of memory");
		return rc;
	}
	rc = bench_host(b, r, 2 * CAP_BYTES + CAP_BYTES / 8, CAP_BYTES, 0, "bench-clone-cap",
			&h, &g);
	if (rc)
		goto out;
	rc = bench_fill_guest(r, g, CAP_BYTES, 1ull << 41, NULL);
	for (unsigned i = 0; !rc && i < CAP_CLONES; i++) {
		rc = clone_once(r, g, &wall, &cpu, &c[i]);
		if (!rc && (i == 1 || i == 254 || i == 255 || i == CAP_CLONES - 1))
			snprintf(times + strlen(times), sizeof(times) - strlen(times), "%s%u:%.3f",
				 times[0] ? " " : "", i + 1, wall * 1e3);
	}
	if (!rc) {
		umlmem_host_stats(h, &st);
		res_str(r, "cap_clone_ms", "%s", times);
		res_int(r, "cap_frames", (int64_t)st.frames_used);
		res_int(r, "cap_pages", (int64_t)(CAP_BYTES / PAGE));
	}
out:
	umlmem_host_destroy(h);     /* the clones with it */
	free(c);
	return rc;
}

static void clone_run(struct bench *b, struct result **res)
{
	struct result *r = res[CLONE];
	uint64_t bytes = b->quick ? CLONE_BYTES_QUICK : CLONE_BYTES;
	int reps = b->quick ? CLONE_REPS_QUICK : CLONE_REPS;
	double wall, cpu, best = 0, best_cpy = 0, first = 0, first_cpu = 0, t0;
	char walls[200] = "", cpus[200] = "", cpys[200] = "", b1[32];
	umlmem_host *h = NULL;
	umlmem_guest *g = NULL;
	uint8_t *from = NULL, *to = NULL;

	if (!r->want)
		return;
	bench_progress("clone: a guest of %s, every page written, cloned %d times; as many "
		       "memcpy of it", fmt_bytes(b1, sizeof(b1), bytes), reps);
	if (bench_host(b, r, bytes + bytes / 16, bytes, 0, "bench-clone", &h, &g))
		return;
	if (bench_fill_guest(r, g, bytes, 0, "clone: writing the guest"))
		goto out;
	from = bench_map_pages(bytes);
	to = bench_map_pages(bytes);
	if (!from || !to) {
		res_fail(r, RS_ERROR, "out of memory for the memcpy baseline");
		goto out;
	}
	memset(from, 1, bytes);
	memset(to, 2, bytes);
	if (clone_once(r, g, &first, &first_cpu, NULL))
		goto out;
	for (int rep = 0; rep < reps; rep++) {
		double cw;

		if (clone_once(r, g, &wall, &cpu, NULL))
			goto out;
		cw = wall;
		if (!best || wall < best)
			best = wall;
		snprintf(walls + strlen(walls), sizeof(walls) - strlen(walls), "%s%.2f",
			 rep ? " " : "", wall * 1e3);
		snprintf(cpus + strlen(cpus), sizeof(cpus) - strlen(cpus), "%s%.2f",
			 rep ? " " : "", cpu * 1e3);
		t0 = now_s();
		memcpy(to, from, bytes);
		wall = now_s() - t0;
		if (!best_cpy || wall < best_cpy)
			best_cpy = wall;
		snprintf(cpys + strlen(cpys), sizeof(cpys) - strlen(cpys), "%s%.2f",
			 rep ? " " : "", wall * 1e3);
		bench_progress("clone: rep %d: clone %.2f ms, memcpy %.2f ms", rep + 1,
			       cw * 1e3, wall * 1e3);
	}
	if (to[bytes - 1] != 1) {
		res_fail(r, RS_ERROR, "the memcpy baseline did not copy");
		goto out;
	}
	res_set(r, (double)bytes / (1u << 30) / first, (double)bytes / (1u << 30) / best_cpy,
		"GiB/s", false);
	res_int(r, "guest_bytes", (int64_t)bytes);
	res_num(r, "best_clone_ms", best * 1e3);
	res_num(r, "first_clone_ms", first * 1e3);
	res_num(r, "first_clone_cpu_ms", first_cpu * 1e3);
	res_str(r, "clone_ms", "%s", walls);
	res_str(r, "clone_cpu_ms", "%s", cpus);
	res_str(r, "memcpy_ms", "%s", cpys);
	res_int(r, "reps", reps);
	umlmem_host_destroy(h);
	h = NULL;
	clone_cap(b, r);
out:
	umlmem_host_destroy(h);
	if (from)
		munmap(from, bytes);
	if (to)
		munmap(to, bytes);
}

static const struct bench_key keys[] = {
	[CLONE] = { "clone",
		"GiB/s of resident guest RAM cloned by the first umlmem_guest_clone\n"
		"of the process (1 GiB, every page written); baseline: memcpy of as\n"
		"many bytes\n" },
	{ NULL },
};

const struct bench_family bench_clone = { "clone", keys, clone_run };
