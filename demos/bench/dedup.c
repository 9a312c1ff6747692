/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * dedup.c: the merge scanner's cost and yield, against hashing alone and
 * against the kernel's KSM on the same content.
 *
 * dedup_scan_rate -- what the merge scanner costs per page where it finds
 *   nothing to merge, the common case once a fleet has settled: pages
 *   scanned per CPU-second. A host whose budget holds 8 guests of 32 MiB
 *   (65,536 pages) with room to spare, so nothing swaps; page p of guest g
 *   holds the content rule's page g * 8192 + p, so no two pages are equal
 *   and none is zero, and every visit hashes the page, misses both indexes
 *   and becomes a candidate. One measurement is one full pass, made of
 *   umlmem_dedup_scan() calls of 10,000 pages (the batch of dedup_vs_ksm);
 *   the pages are the pages_scanned delta of umlmem_host_info(), the time
 *   is CLOCK_PROCESS_CPUTIME_ID around the calls alone (CPU time, not wall
 *   time, because that is what a scanner takes from the guests; no other
 *   thread of the process runs meanwhile). Baseline: XXH3_64bits() of the
 *   shared libxxhash over the same content in a plain buffer (4 KiB pages),
 *   one call per page, on the same clock: hashing, which no scanner can
 *   avoid, and nothing else. The ratio is the share of the scanner's time
 *   that is hashing, so below 1 by what the walk and the indexes add. The
 *   library hashes with its own AVX2 build of xxh3 where the CPU has it
 *   ("hash_impl_avx2") and the shared library is built for the baseline ISA
 *   (SSE2), so a ratio above 1 can happen; both read 256 MiB per pass, far
 *   more than any cache, so memory bandwidth bounds both. Best of 5 passes
 *   each (--quick 3), alternating; every pass's rate is reported.
 *
 * dedup_vs_ksm -- pages saved per CPU-second of merging, against the
 *   kernel's KSM on the same content in the same run. 32 guests of 32 MiB
 *   (262,144 pages): the first three quarters of every guest are the same
 *   in all guests (page p is the content rule's page p everywhere, so
 *   distinct between pages and never zero), the rest is the rule's page
 *   g * 8192 + p, found nowhere else; the most that can be saved is 31 of
 *   the 32 copies of 6,144 pages, 190,464 pages. Both sides may put 256
 *   pages on one frame (max_sharing, max_page_sharing), far above 32.
 *   umlmem: a host whose budget holds everything (nothing swaps), every
 *   guest written, then umlmem_dedup_scan() in calls of 10,000 pages until
 *   a call merges nothing; the value is the sharing_pages gained over the
 *   process CPU time (CLOCK_PROCESS_CPUTIME_ID) of the scan calls alone,
 *   the last call included; pages_merged, full_scans and the wall time are
 *   reported. KSM: the same content in anonymous memory of this process,
 *   one mapping of 32 MiB per guest, MADV_NOHUGEPAGE (4 KiB pages, like the
 *   frames) and MADV_MERGEABLE, written after the madvise. KSM's settings
 *   are saved first (advisor_mode, pages_to_scan, sleep_millisecs,
 *   max_page_sharing, merge_across_nodes, use_zero_pages, smart_scan, run),
 *   then advisor_mode=none where there is an advisor (it would retune
 *   pages_to_scan), max_page_sharing=256, pages_to_scan=10000,
 *   sleep_millisecs=0, run=1; the rest stays as the machine has it and is
 *   reported ("ksm_settings"). From run=1, every 10 ms, pages_sharing,
 *   full_scans and ksmd's CPU time (utime + stime of /proc/<pid>/stat, the
 *   pid found by the name in /proc/<pid>/comm, clock ticks converted with
 *   sysconf(_SC_CLK_TCK)) are sampled together; KSM is done when full_scans
 *   has advanced by 2 since pages_sharing last changed (or after 60 s). The
 *   baseline is the final pages_sharing over ksmd's CPU time at the sample
 *   where pages_sharing reached it: the scans that only confirm that
 *   nothing changes are reported (ksm_cpu_s_total) but not charged to KSM,
 *   while umlmem's last, fruitless call is charged to umlmem, so both
 *   choices favour KSM. ksmd's CPU time has the resolution of a clock tick
 *   (10 ms at 100 Hz); KSM needs over a second of CPU on this workload, so
 *   a tick or two is about a per cent, which the note says. --quick uses 8
 *   guests of 8 MiB (10,752 pages to save) so that the quick run stays
 *   within its 30 s; KSM then needs only about 0.1 CPU-s, and the note says
 *   how rough its figure is. Afterwards, always (also on error, at exit and
 *   on SIGINT, SIGTERM and SIGHUP): run=2, which unmerges everything, and a
 *   wait for pages_sharing to reach 0 (30 s at most), then the memory is
 *   unmapped, then every saved setting that differs is written back, run
 *   last ("ksm_saved", "ksm_restored"). The figure is skipped, with the
 *   reason, without root, without /sys/kernel/mm/ksm or ksmd, when KSM has
 *   merged pages already (its counters would mix with ours, and run=2
 *   would unmerge someone else's pages), or when a setting cannot be
 *   written; umlmem's own counters are reported all the same.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "harness.h"

enum { DD_RATE, DD_KSM };

/* ------------------------------------------------------------------------ */

/* Pages per umlmem_dedup_scan() call, and KSM's pages_to_scan: the same
   batch on both sides. */
#define DD_CHUNK		10000u
#define DD_GUEST_BYTES		(32ull << 20)
#define DD_RATE_GUESTS		8u
#define DD_RATE_REPS		5
#define DD_RATE_REPS_QUICK	3
#define DD_KSM_GUESTS		32u
#define DD_KSM_GUESTS_QUICK	8u
#define DD_KSM_GUEST_BYTES_QUICK (8ull << 20)
/* umlmem's default max_sharing and KSM's default max_page_sharing, set on
   both sides so that neither depends on the other's default */
#define DD_MAX_SHARING		256u
/* A scan that merges forever would be a bug: stop after this many passes'
   worth of calls. */
#define DD_MAX_PASSES		16u

#define KSM_DIR			"/sys/kernel/mm/ksm/"
#define KSM_TIMEOUT_S		60.0
#define KSM_UNMERGE_TIMEOUT_S	30.0
#define KSM_POLL_S		0.01

static double cpu_now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * The dedup figures' content, @n pages of guest @g from page @first: page
 * p is the content rule's page p when p < @shared (the same in every
 * guest), else the rule's page g * @npages + p (found nowhere else). Never
 * zero, so no page merges as a page of zeros.
 */
static void dd_fill(uint64_t *buf, uint64_t g, uint64_t first, uint64_t n, uint64_t npages,
		    uint64_t shared)
{
	for (uint64_t i = 0; i < n; i++) {
		uint64_t p = first + i;

		bench_fill_pages(buf + i * WORDS, p < shared ? p : g * npages + p, 1, 0);
	}
}

/*
 * A host whose budget holds @nguests mergeable guests of @npages pages with
 * a sixteenth to spare, so that the pager has no reason to evict anything;
 * every guest written with dd_fill(). On failure the caller still destroys
 * *hp (which destroys the guests made so far).
 */
static int dd_host(struct bench *b, struct result *r, unsigned nguests, uint64_t npages,
		   uint64_t shared, umlmem_host **hp, umlmem_guest **gs)
{
	struct umlmem_host_config hc;
	struct umlmem_guest_config gc;
	struct umlmem_stats st;
	uint64_t *buf = NULL, p, n;
	char name[32];
	unsigned g;
	int rc;

	*hp = NULL;
	umlmem_host_config_init(&hc);
	hc.resident_bytes = (uint64_t)nguests * npages * PAGE;
	hc.resident_bytes += hc.resident_bytes / 16;
	hc.swap_dir = b->swap_dir;
	hc.io = b->want_engine;
	hc.max_sharing = DD_MAX_SHARING;
	rc = umlmem_host_create(&hc, hp);
	if (rc) {
		*hp = NULL;
		res_lib_fail(r, rc, "creating the host");
		return rc;
	}
	buf = aligned_alloc(PAGE, FILL_PAGES * PAGE);
	if (!buf) {
		res_fail(r, RS_ERROR, "out of memory for the fill buffer");
		return -ENOMEM;
	}
	for (g = 0; g < nguests; g++) {
		umlmem_guest_config_init(&gc);
		gc.ram_bytes = npages * PAGE;
		snprintf(name, sizeof(name), "bench-dedup-%u", g);
		gc.name = name;
		rc = umlmem_guest_create(*hp, &gc, &gs[g]);
		if (rc) {
			gs[g] = NULL;
			res_lib_fail(r, rc, "creating a guest");
			goto out;
		}
		for (p = 0; p < npages; p += n) {
			n = npages - p < FILL_PAGES ? npages - p : FILL_PAGES;
			dd_fill(buf, g, p, n, npages, shared);
			rc = umlmem_write(gs[g], p * PAGE, buf, n * PAGE);
			if (rc) {
				res_lib_fail(r, rc, "writing a guest");
				goto out;
			}
		}
	}
	umlmem_host_stats(*hp, &st);
	if (st.swapped_pages) {
		res_fail(r, RS_ERROR, "%" PRIu64 " pages went to swap although the budget holds "
			 "every guest", st.swapped_pages);
		rc = -EIO;
	}
out:
	free(buf);
	return rc;
}

static volatile uint64_t dd_sink;

/* ---- dedup_scan_rate ---------------------------------------------------- */

/* The baseline: the shared libxxhash, one call per page, as the scanner
   hashes one page per visit. Out of line so that the loop is the same
   whatever the caller. */
static __attribute__((noinline)) uint64_t hash_pages(const uint8_t *buf, uint64_t npages)
{
	uint64_t acc = 0;

	for (uint64_t p = 0; p < npages; p++)
		acc ^= XXH3_64bits(buf + p * PAGE, PAGE);
	return acc;
}

/* @pages pages of scanning in DD_CHUNK calls; the process CPU time of the
   calls alone. */
static int dd_scan(umlmem_host *h, uint64_t pages, double *cpu, uint64_t *merged)
{
	uint64_t done, n, m;
	double c0 = cpu_now_s();
	int rc;

	*merged = 0;
	for (done = 0; done < pages; done += n) {
		n = pages - done < DD_CHUNK ? pages - done : DD_CHUNK;
		rc = umlmem_dedup_scan(h, n, &m);
		if (rc)
			return rc;
		*merged += m;
	}
	*cpu = cpu_now_s() - c0;
	return 0;
}

static void dedup_rate(struct bench *b, struct result *r)
{
	const unsigned nguests = DD_RATE_GUESTS;
	const int reps = b->quick ? DD_RATE_REPS_QUICK : DD_RATE_REPS;
	const uint64_t npages = DD_GUEST_BYTES / PAGE, total = nguests * npages;
	umlmem_guest *gs[DD_RATE_GUESTS] = { 0 };
	struct umlmem_host_info i0, i1, best_i0 = { 0 }, best_i1 = { 0 };
	double cpu, rate, best_u = 0, best_h = 0, cpu_u = 0, cpu_h = 0;
	char rates_u[128] = "", rates_h[128] = "", b1[32];
	uint64_t merged, scanned;
	umlmem_host *h = NULL;
	uint8_t *buf = NULL;
	unsigned g;
	int rep, rc;

	if (!r->want)
		return;
	bench_progress("dedup_scan_rate: %u guests of %s, no two pages equal; %d full passes of the "
		       "scanner against xxh3 of the same pages, alternating", nguests,
		       fmt_bytes(b1, sizeof(b1), DD_GUEST_BYTES), reps);
	if (dd_host(b, r, nguests, npages, 0, &h, gs))
		goto out;
	buf = bench_map_pages(total * PAGE);
	if (!buf) {
		res_fail(r, RS_ERROR, "cannot map %" PRIu64 " bytes for the baseline", total * PAGE);
		goto out;
	}
	for (g = 0; g < nguests; g++)
		dd_fill((uint64_t *)(buf + (uint64_t)g * npages * PAGE), g, 0, npages, npages, 0);

	for (rep = 0; rep < reps; rep++) {
		/* exactly one pass: the cursor is at the end of the last guest
		   after each, so every call of @total pages is a whole pass */
		umlmem_host_info(h, &i0, sizeof(i0));
		rc = dd_scan(h, total, &cpu, &merged);
		if (rc) {
			res_lib_fail(r, rc, "umlmem_dedup_scan");
			goto out;
		}
		umlmem_host_info(h, &i1, sizeof(i1));
		scanned = i1.pages_scanned - i0.pages_scanned;
		if (merged || i1.pages_merged != i0.pages_merged) {
			res_fail(r, RS_ERROR, "the scanner merged %" PRIu64 " pages of content in "
				 "which no two pages are equal", i1.pages_merged - i0.pages_merged);
			goto out;
		}
		if (scanned != total) {
			res_fail(r, RS_ERROR, "a pass of %" PRIu64 " pages visited %" PRIu64,
				 total, scanned);
			goto out;
		}
		rate = cpu > 0 ? (double)scanned / cpu : 0;
		res_rates_append(rates_u, sizeof(rates_u), rate);
		bench_progress("dedup_scan_rate: pass %d: scanner %.0f pages/cpu-s", rep + 1, rate);
		if (rate > best_u) {
			best_u = rate;
			cpu_u = cpu;
			best_i0 = i0;
			best_i1 = i1;
		}

		cpu = cpu_now_s();
		dd_sink += hash_pages(buf, total);
		cpu = cpu_now_s() - cpu;
		rate = cpu > 0 ? (double)total / cpu : 0;
		res_rates_append(rates_h, sizeof(rates_h), rate);
		bench_progress("dedup_scan_rate: pass %d: xxh3 alone %.0f pages/cpu-s", rep + 1, rate);
		if (rate > best_h) {
			best_h = rate;
			cpu_h = cpu;
		}
	}
	res_set(r, best_u, best_h, "pages/cpu-s", false);
	res_int(r, "guests", nguests);
	res_int(r, "pages", (int64_t)total);
	res_int(r, "reps", reps);
	res_int(r, "scan_calls_per_pass", (int64_t)((total + DD_CHUNK - 1) / DD_CHUNK));
	res_int(r, "pages_scanned", (int64_t)(best_i1.pages_scanned - best_i0.pages_scanned));
	res_int(r, "pages_unshared", (int64_t)(best_i1.pages_unshared - best_i0.pages_unshared));
	res_int(r, "pages_volatile", (int64_t)(best_i1.pages_volatile - best_i0.pages_volatile));
	res_num(r, "cpu_s", cpu_u);
	res_num(r, "ns_per_page", best_u > 0 ? 1e9 / best_u : NAN);
	res_str(r, "rates", "%s", rates_u);
	res_num(r, "baseline_cpu_s", cpu_h);
	res_num(r, "baseline_ns_per_page", best_h > 0 ? 1e9 / best_h : NAN);
	res_str(r, "baseline_rates", "%s", rates_h);
	res_bool(r, "hash_impl_avx2", best_i1.hash_impl_avx2 != 0);
	res_str(r, "baseline_hash", "XXH3_64bits of libxxhash %u.%u.%u (shared library)",
		XXH_versionNumber() / 10000, XXH_versionNumber() / 100 % 100,
		XXH_versionNumber() % 100);
	res_str(r, "baseline_mode", "XXH3_64bits of each page of the same content in a plain "
		"buffer, process CPU time, best of %d", reps);
	if (best_i1.hash_impl_avx2)
		res_note(r, "the library hashes with its own AVX2 build of xxh3, the baseline "
			 "with the shared libxxhash: a ratio above 1 means the faster hash saves more "
			 "than the rest of the scan costs");
	if (r->ratio > 0 && r->ratio < 1)
		res_note(r, "the scanner adds %.0f ns per page to hashing alone",
			 1e9 / best_u - 1e9 / best_h);
out:
	if (buf)
		munmap(buf, total * PAGE);
	umlmem_host_destroy(h);		/* destroys the guests too */
}

/* ---- dedup_vs_ksm: KSM's side ------------------------------------------- */

/*
 * KSM's settings the figure saves first and restores at the end, in this
 * order: advisor_mode before pages_to_scan, because switching the advisor
 * resets pages_to_scan; run last, so that KSM resumes (if it ran) only once
 * everything else is as it was.
 */
enum {
	KN_ADVISOR, KN_PAGES, KN_SLEEP, KN_MAX_SHARING, KN_ACROSS_NODES, KN_ZERO_PAGES,
	KN_SMART_SCAN, KN_RUN, KSM_NKNOBS
};

static const char *const ksm_knob[KSM_NKNOBS] = {
	[KN_ADVISOR] = "advisor_mode",
	[KN_PAGES] = "pages_to_scan",
	[KN_SLEEP] = "sleep_millisecs",
	[KN_MAX_SHARING] = "max_page_sharing",
	[KN_ACROSS_NODES] = "merge_across_nodes",
	[KN_ZERO_PAGES] = "use_zero_pages",
	[KN_SMART_SCAN] = "smart_scan",
	[KN_RUN] = "run",
};

/*
 * What the KSM side changed, for the cleanup that must run whatever
 * happens; as with kst, only the process that made the change undoes it.
 */
static struct {
	pid_t owner;
	bool have[KSM_NKNOBS];		/* saved and not yet restored */
	char saved[KSM_NKNOBS][64];
	bool run_set;			/* run was written: unmerge before anything else */
	void *map[DD_KSM_GUESTS];
	size_t map_bytes;
	/* what the last cleanup could not do */
	int unmerge_err, restore_err;
	bool unmerge_timeout;
	const char *restore_knob;
} kss;

/* The sysfs helpers below do only system calls and string functions that
   are safe in a signal handler: the cleanup uses them. */
static bool ksm_path(char *buf, size_t len, const char *knob)
{
	size_t a = strlen(KSM_DIR), n = strlen(knob);

	if (a + n + 1 > len)
		return false;
	memcpy(buf, KSM_DIR, a);
	memcpy(buf + a, knob, n + 1);
	return true;
}

/* A knob's value; of a choice list ("[none] scan-time") the one chosen. */
static int ksm_get(const char *knob, char *buf, size_t len)
{
	char path[128], *o, *c;
	ssize_t n;
	int fd, err = 0;

	if (!ksm_path(path, sizeof(path), knob))
		return -ENAMETOOLONG;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = read(fd, buf, len - 1);
	if (n < 0)
		err = -errno;
	close(fd);
	if (err)
		return err;
	buf[n] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	o = strchr(buf, '[');
	c = o ? strchr(o, ']') : NULL;
	if (c) {
		memmove(buf, o + 1, (size_t)(c - o - 1));
		buf[c - o - 1] = '\0';
	}
	return 0;
}

/* A counter; UINT64_MAX when it cannot be read. */
static uint64_t ksm_num(const char *knob)
{
	char buf[64], *p;
	uint64_t v = 0;

	if (ksm_get(knob, buf, sizeof(buf)) || !buf[0])
		return UINT64_MAX;
	for (p = buf; *p >= '0' && *p <= '9'; p++)
		v = v * 10 + (uint64_t)(*p - '0');
	return *p ? UINT64_MAX : v;
}

static int ksm_put(const char *knob, const char *val)
{
	char path[128];

	if (!ksm_path(path, sizeof(path), knob))
		return -ENAMETOOLONG;
	return bench_write_file(path, val);
}

static void ksm_cleanup(void)
{
	struct timespec ms = { 0, 10 * 1000 * 1000 };
	sigset_t all, old;
	char cur[64];
	unsigned k, i;
	int rc = 0;

	if (kss.owner != getpid())
		return;
	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, &old);
	if (kss.run_set) {
		/* unmerge while our pages are still mapped, so that nothing of
		   ours is left in KSM's trees; the write does the work itself
		   and returns when it is done, the wait is for safety */
		for (i = 0; i < 3; i++) {
			rc = ksm_put("run", "2");
			if (rc != -EINTR && rc != -EAGAIN && rc != -ENOMEM)
				break;
			nanosleep(&ms, NULL);
		}
		kss.unmerge_err = -rc;
		kss.unmerge_timeout = false;
		if (!rc) {
			for (i = 0; i < KSM_UNMERGE_TIMEOUT_S * 100 && ksm_num("pages_sharing"); i++)
				nanosleep(&ms, NULL);
			kss.unmerge_timeout = ksm_num("pages_sharing") != 0;
		}
		kss.run_set = false;
	}
	for (i = 0; i < DD_KSM_GUESTS; i++) {
		if (kss.map[i])
			munmap(kss.map[i], kss.map_bytes);
		kss.map[i] = NULL;
	}
	/* only what differs is written: max_page_sharing and
	   merge_across_nodes refuse any write while pages are shared */
	for (k = 0; k < KSM_NKNOBS; k++) {
		if (!kss.have[k])
			continue;
		if (ksm_get(ksm_knob[k], cur, sizeof(cur)) || strcmp(cur, kss.saved[k])) {
			rc = ksm_put(ksm_knob[k], kss.saved[k]);
			if (rc) {
				kss.restore_err = -rc;
				kss.restore_knob = ksm_knob[k];
				continue;
			}
		}
		kss.have[k] = false;
	}
	sigprocmask(SIG_SETMASK, &old, NULL);
}

/* ksmd's pid, from the name of every task in /proc; 0 if there is none. */
static pid_t ksmd_pid(void)
{
	char path[300], comm[32];
	struct dirent *e;
	DIR *d = opendir("/proc");
	pid_t pid = 0;

	if (!d)
		return 0;
	while (!pid && (e = readdir(d))) {
		if (e->d_name[0] < '1' || e->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/comm", e->d_name);
		if (bench_read_line(path, comm, sizeof(comm)) && !strcmp(comm, "ksmd"))
			pid = (pid_t)atoi(e->d_name);
	}
	closedir(d);
	return pid;
}

/* utime + stime of a task in clock ticks; -1 if it cannot be read. */
static int64_t task_ticks(pid_t pid)
{
	char path[64], line[1024], *p;
	unsigned long long ut, st;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if (!bench_read_line(path, line, sizeof(line)))
		return -1;
	/* after the name, which may hold spaces and parentheses: state, then
	   ppid .. cmajflt, then utime and stime (fields 14 and 15) */
	p = strrchr(line, ')');
	if (!p || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
			 &ut, &st) != 2)
		return -1;
	return (int64_t)(ut + st);
}

/* Sets a knob, or marks the figure skipped: a setting we cannot make is a
   machine we cannot measure, not a failure of the library. */
static int ksm_set(struct result *r, const char *knob, const char *val)
{
	int rc = ksm_put(knob, val);

	if (rc)
		res_fail(r, RS_SKIP, "cannot write %s to %s%s: %s", val, KSM_DIR, knob,
			 strerror(-rc));
	return rc;
}

struct ksm_out {
	uint64_t sharing, shared;	/* at the end */
	uint64_t scans, scans_total;	/* full scans to the last change, and in all */
	uint64_t pages_scanned;
	int64_t ticks, ticks_total;	/* ksmd's CPU to the last change, and in all */
	double wall, wall_total;
	long tck;
	bool timeout;
	char saved[200], settings[200];
};

/* The KSM side: 0 with @o filled, or -1 after recording why not. Leaves its
   changes for ksm_cleanup(). */
static int ksm_run(struct result *r, unsigned nguests, uint64_t npages, uint64_t shared,
		   struct ksm_out *o)
{
	uint64_t sharing, scans, last = 0, scans_at = 0, fs0, ps0, bytes = npages * PAGE;
	int64_t ticks0, ticks, ticks_at = 0;
	double t0, t, t_at = 0;
	char val[32];
	unsigned g, k;
	pid_t ksmd;
	size_t len;

	memset(o, 0, sizeof(*o));
	if (geteuid() != 0) {
		res_fail(r, RS_SKIP, "KSM: needs root (its settings in %s)", KSM_DIR);
		return -1;
	}
	if (access(KSM_DIR "run", F_OK)) {
		res_fail(r, RS_SKIP, "KSM: %srun is missing (a kernel without CONFIG_KSM?)",
			 KSM_DIR);
		return -1;
	}
	ksmd = ksmd_pid();
	if (!ksmd || task_ticks(ksmd) < 0) {
		res_fail(r, RS_SKIP, "KSM: no ksmd task with a readable /proc/<pid>/stat");
		return -1;
	}
	o->tck = sysconf(_SC_CLK_TCK);
	if (o->tck <= 0) {
		res_fail(r, RS_SKIP, "KSM: sysconf(_SC_CLK_TCK) failed");
		return -1;
	}
	sharing = ksm_num("pages_sharing");
	if (sharing == UINT64_MAX || ksm_num("pages_shared") == UINT64_MAX) {
		res_fail(r, RS_SKIP, "KSM: cannot read %spages_sharing", KSM_DIR);
		return -1;
	}
	if (sharing || ksm_num("pages_shared")) {
		/* its counters would mix with ours, and run=2 would unmerge
		   someone else's pages */
		res_fail(r, RS_SKIP, "KSM is in use: %" PRIu64 " pages are merged already",
			 sharing);
		return -1;
	}

	memset(&kss, 0, sizeof(kss));
	kss.owner = getpid();
	bench_cleanup_on(ksm_cleanup);
	for (k = 0; k < KSM_NKNOBS; k++) {
		kss.have[k] = ksm_get(ksm_knob[k], kss.saved[k], sizeof(kss.saved[k])) == 0;
		len = strlen(o->saved);
		if (kss.have[k] && len < sizeof(o->saved))
			snprintf(o->saved + len, sizeof(o->saved) - len, "%s%s=%s", len ? " " : "",
				 ksm_knob[k], kss.saved[k]);
	}
	if (!kss.have[KN_RUN] || !kss.have[KN_PAGES] || !kss.have[KN_SLEEP]) {
		res_fail(r, RS_SKIP, "KSM: cannot read run, pages_to_scan and sleep_millisecs "
			 "in %s", KSM_DIR);
		return -1;
	}

	/* the content, written after the madvise, as a guest's would be */
	kss.map_bytes = bytes;
	for (g = 0; g < nguests; g++) {
		kss.map[g] = bench_map_pages(bytes);
		if (!kss.map[g]) {
			res_fail(r, RS_ERROR, "KSM: cannot map %" PRIu64 " bytes: %s", bytes,
				 strerror(errno));
			return -1;
		}
		if (madvise(kss.map[g], bytes, MADV_MERGEABLE)) {
			res_fail(r, RS_SKIP, "KSM: madvise(MADV_MERGEABLE): %s", strerror(errno));
			return -1;
		}
		dd_fill(kss.map[g], g, 0, npages, npages, shared);
	}

	/* the advisor would retune pages_to_scan by itself */
	if (kss.have[KN_ADVISOR] && strcmp(kss.saved[KN_ADVISOR], "none") &&
	    ksm_set(r, "advisor_mode", "none"))
		return -1;
	snprintf(val, sizeof(val), "%u", DD_MAX_SHARING);
	if (kss.have[KN_MAX_SHARING] && strcmp(kss.saved[KN_MAX_SHARING], val) &&
	    ksm_set(r, "max_page_sharing", val))
		return -1;
	snprintf(val, sizeof(val), "%u", DD_CHUNK);
	if (ksm_set(r, "pages_to_scan", val) || ksm_set(r, "sleep_millisecs", "0"))
		return -1;
	for (k = 0; k < KN_RUN; k++) {
		char cur[64];

		len = strlen(o->settings);
		if (kss.have[k] && !ksm_get(ksm_knob[k], cur, sizeof(cur)) &&
		    len < sizeof(o->settings))
			snprintf(o->settings + len, sizeof(o->settings) - len, "%s%s=%s",
				 len ? " " : "", ksm_knob[k], cur);
	}

	fs0 = ksm_num("full_scans");
	ps0 = ksm_num("pages_scanned");
	ticks0 = task_ticks(ksmd);
	t0 = now_s();
	kss.run_set = true;
	if (ksm_set(r, "run", "1"))
		return -1;
	/* pages_sharing and ksmd's CPU time, sampled together: the figure is
	   what KSM spent until pages_sharing reached its final value */
	for (;;) {
		sleep_s(KSM_POLL_S);
		sharing = ksm_num("pages_sharing");
		scans = ksm_num("full_scans");
		ticks = task_ticks(ksmd);
		t = now_s();
		if (sharing == UINT64_MAX || scans == UINT64_MAX || ticks < 0) {
			res_fail(r, RS_ERROR, "KSM: cannot read its counters or ksmd's CPU time");
			return -1;
		}
		if (sharing != last) {
			last = sharing;
			scans_at = scans;
			ticks_at = ticks;
			t_at = t;
		}
		/* two more full scans that change nothing: KSM is done */
		if (last && scans >= scans_at + 2)
			break;
		if (t - t0 > KSM_TIMEOUT_S) {
			o->timeout = true;
			break;
		}
	}
	o->sharing = last;
	o->shared = ksm_num("pages_shared");
	o->scans = scans_at - fs0;
	o->scans_total = scans - fs0;
	o->pages_scanned = ksm_num("pages_scanned") - ps0;
	o->ticks = ticks_at - ticks0;
	o->ticks_total = ticks - ticks0;
	o->wall = t_at - t0;
	o->wall_total = t - t0;
	if (!last) {
		res_fail(r, RS_ERROR, "KSM merged nothing in %.0f s (full scans: %" PRIu64 ")",
			 KSM_TIMEOUT_S, o->scans_total);
		return -1;
	}
	return 0;
}

/* ---- dedup_vs_ksm ------------------------------------------------------- */

static void dedup_ksm(struct bench *b, struct result *r)
{
	/* --quick: a sixteenth of the workload, so that the whole quick run
	   stays within its 30 s (KSM alone needs seconds on the full one) */
	const unsigned nguests = b->quick ? DD_KSM_GUESTS_QUICK : DD_KSM_GUESTS;
	const uint64_t gbytes = b->quick ? DD_KSM_GUEST_BYTES_QUICK : DD_GUEST_BYTES;
	const uint64_t npages = gbytes / PAGE, total = nguests * npages;
	const uint64_t shared = npages / 4 * 3;
	/* every shared page keeps one frame per DD_MAX_SHARING copies */
	const uint64_t expect = shared * (nguests - (nguests + DD_MAX_SHARING - 1) /
					  DD_MAX_SHARING);
	umlmem_guest *gs[DD_KSM_GUESTS] = { 0 };
	struct umlmem_host_info i0, i1;
	struct umlmem_stats s0, s1;
	struct ksm_out ko;
	uint64_t m, calls = 0, saved;
	double c0, w0, cpu, wall, value;
	umlmem_host *h = NULL;
	bool ksm_ok, restored;
	char b1[32];
	unsigned k;
	int rc;

	if (!r->want)
		return;
	memset(&ko, 0, sizeof(ko));
	bench_progress("dedup_vs_ksm: %u guests of %s, the first three quarters of each the same in "
		       "all: %" PRIu64 " of %" PRIu64 " pages to save; umlmem first", nguests,
		       fmt_bytes(b1, sizeof(b1), gbytes), expect, total);
	if (dd_host(b, r, nguests, npages, shared, &h, gs))
		goto out;
	umlmem_host_stats(h, &s0);
	umlmem_host_info(h, &i0, sizeof(i0));
	w0 = now_s();
	c0 = cpu_now_s();
	do {
		rc = umlmem_dedup_scan(h, DD_CHUNK, &m);
		if (rc) {
			res_lib_fail(r, rc, "umlmem_dedup_scan");
			goto out;
		}
		calls++;
	} while (m && calls * DD_CHUNK < DD_MAX_PASSES * total);
	cpu = cpu_now_s() - c0;
	wall = now_s() - w0;
	umlmem_host_stats(h, &s1);
	umlmem_host_info(h, &i1, sizeof(i1));
	/* the memory goes back before KSM's side maps as much again */
	umlmem_host_destroy(h);
	h = NULL;
	saved = s1.sharing_pages - s0.sharing_pages;
	value = cpu > 0 ? (double)saved / cpu : NAN;
	bench_progress("dedup_vs_ksm: umlmem saved %" PRIu64 " pages in %.3f CPU-s (%.0f pages/cpu-s); "
		       "now KSM, for up to %.0f s", saved, cpu, value, KSM_TIMEOUT_S);

	res_int(r, "guests", nguests);
	res_int(r, "guest_bytes", (int64_t)gbytes);
	res_int(r, "pages", (int64_t)total);
	res_int(r, "expected_saving", (int64_t)expect);
	res_int(r, "sharing_pages", (int64_t)saved);
	res_int(r, "shared_frames", (int64_t)s1.shared_frames);
	res_int(r, "pages_merged", (int64_t)(i1.pages_merged - i0.pages_merged));
	res_int(r, "pages_scanned", (int64_t)(i1.pages_scanned - i0.pages_scanned));
	res_int(r, "full_scans", (int64_t)(i1.full_scans - i0.full_scans));
	res_int(r, "scan_calls", (int64_t)calls);
	res_num(r, "cpu_s", cpu);
	res_num(r, "wall_s", wall);
	res_bool(r, "hash_impl_avx2", i1.hash_impl_avx2 != 0);
	if (saved != expect)
		res_note(r, "umlmem saved %" PRIu64 " pages, not the %" PRIu64 " possible", saved,
			 expect);
	if (b->quick)
		res_note(r, "--quick: %u guests of %" PRIu64 " MiB instead of %u of %llu MiB, so "
			 "that the quick run stays within 30 s; the saving possible is %" PRIu64
			 " pages instead of 190464", nguests, gbytes >> 20, DD_KSM_GUESTS,
			 DD_GUEST_BYTES >> 20, expect);

	ksm_ok = ksm_run(r, nguests, npages, shared, &ko) == 0;
	if (ksm_ok) {
		double kcpu = (double)ko.ticks / (double)ko.tck, tick_ms = 1000.0 / (double)ko.tck;

		res_set(r, value, kcpu > 0 ? (double)ko.sharing / kcpu : NAN, "pages/cpu-s", false);
		res_int(r, "ksm_pages_sharing", (int64_t)ko.sharing);
		res_int(r, "ksm_pages_shared", (int64_t)ko.shared);
		res_num(r, "ksm_cpu_s", kcpu);
		res_num(r, "ksm_wall_s", ko.wall);
		res_int(r, "ksm_full_scans", (int64_t)ko.scans);
		res_num(r, "ksm_cpu_s_total", (double)ko.ticks_total / (double)ko.tck);
		res_num(r, "ksm_wall_s_total", ko.wall_total);
		res_int(r, "ksm_full_scans_total", (int64_t)ko.scans_total);
		res_int(r, "ksm_pages_scanned", (int64_t)ko.pages_scanned);
		res_int(r, "clk_tck", ko.tck);
		res_str(r, "ksm_settings", "%s", ko.settings);
		res_str(r, "baseline_mode", "KSM on the same content in anonymous memory: "
			"pages_sharing / ksmd CPU time up to the sample where pages_sharing last "
			"changed");
		/* a tick of resolution, and up to a poll interval between the
		   change and the sample that saw it */
		if (kcpu >= 1.0)
			res_note(r, "ksmd's CPU time is counted in clock ticks (%.0f ms): fine here, "
				 "where KSM needs %.2f CPU-s (a tick or two is %.1f%% at most)", tick_ms,
				 kcpu, 200.0 * tick_ms / 1000.0 / kcpu);
		else
			res_note(r, "ksmd's CPU time is counted in clock ticks (%.0f ms) and KSM needed "
				 "only %.2f CPU-s here: a tick or two is %.0f%% of it, so this ratio is "
				 "rough; a full run's KSM phase is long enough for ticks not to matter",
				 tick_ms, kcpu, kcpu > 0 ? 200.0 * tick_ms / 1000.0 / kcpu : 100.0);
		res_note(r, "umlmem's CPU time includes its last scan call, which merged nothing; "
			 "KSM's excludes the %" PRIu64 " full scans after its last merge "
			 "(ksm_cpu_s_total has them)", ko.scans_total - ko.scans);
		if (ko.timeout)
			res_note(r, "KSM had not settled after %.0f s: pages_sharing was still "
				 "changing", KSM_TIMEOUT_S);
		if (ko.sharing != expect)
			res_note(r, "KSM saved %" PRIu64 " pages, not the %" PRIu64 " possible",
				 ko.sharing, expect);
		/* ksmd was part way into one more scan when it was read */
		if (ko.pages_scanned > (ko.scans_total + 1) * (total + total / 10))
			res_note(r, "KSM scanned %" PRIu64 " pages in %" PRIu64 " full scans and a "
				 "part, more than ours: other processes have mergeable memory",
				 ko.pages_scanned, ko.scans_total);
	}
	if (kss.owner == getpid()) {
		bench_progress("dedup_vs_ksm: unmerging (run=2) and restoring KSM's settings");
		ksm_cleanup();
		restored = !kss.unmerge_err && !kss.unmerge_timeout;
		for (k = 0; k < KSM_NKNOBS; k++)
			restored = restored && !kss.have[k];
		res_str(r, "ksm_saved", "%s", ko.saved);
		res_bool(r, "ksm_restored", restored);
		if (kss.unmerge_err)
			fprintf(stderr, "%s: WARNING: could not write 2 to %srun: %s\n", BENCH_PROG,
				KSM_DIR, strerror(kss.unmerge_err));
		if (kss.unmerge_timeout)
			fprintf(stderr, "%s: WARNING: KSM's pages_sharing did not reach 0 within "
				"%.0f s of run=2\n", BENCH_PROG, KSM_UNMERGE_TIMEOUT_S);
		if (kss.restore_err)
			fprintf(stderr, "%s: WARNING: could not restore %s%s: %s; the saved "
				"settings were: %s\n", BENCH_PROG, KSM_DIR, kss.restore_knob,
				strerror(kss.restore_err), ko.saved);
		if (!restored)
			res_note(r, "KSM could not be fully restored (see the warnings); it was: %s",
				 ko.saved);
		bench_cleanup_off();
	}
out:
	umlmem_host_destroy(h);		/* destroys the guests too */
}

static void dedup_run(struct bench *b, struct result **res)
{
	dedup_rate(b, res[DD_RATE]);
	dedup_ksm(b, res[DD_KSM]);
}

static const struct bench_key keys[] = {
	[DD_RATE] = { "dedup_scan_rate",
		"pages/CPU-s the merge scanner visits where nothing merges;\n"
		"baseline: xxh3 (libxxhash) of the same pages alone\n" },
	[DD_KSM] = { "dedup_vs_ksm",
		"pages saved per CPU-s of merging, 32 guests of 32 MiB;\n"
		"baseline: the kernel's KSM on the same content (root;\n"
		"its settings are restored afterwards)\n" },
	{ NULL },
};

const struct bench_family bench_dedup = { "dedup", keys, dedup_run };
