/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * umlmem bench: the library's paging figures, each measured in the same run,
 * on the same swap directory, next to the baseline it should be judged by.
 *
 * Every figure is printed as {value, baseline, ratio, unit, context...}; the
 * ratio is value / baseline for rates and baseline / value for times, so a
 * ratio above 1 always favours umlmem. A ratio is only as meaningful as its
 * baseline, so each baseline is built to differ from the measured path in
 * exactly one thing: the library.
 *
 * Sizes. Budget B (default 256 MiB; --quick 32 MiB) and a working set of
 * 4B, so that three quarters of it cannot be resident. Timed phases run for
 * a fixed time (8 s; --quick 2 s) after a warm-up (1 s; 0.5 s) that starts
 * the I/O engine's rings, fills the CPU caches and lets the pager reach its
 * steady state. All times are CLOCK_MONOTONIC.
 *
 * pagein_random_t1 -- swap-ins per second, one thread. One guest of 4B on a
 *   budget of B, every page written with distinct content (word w of page p
 *   holds p * 512 + w + 1: nothing is a zero page and nothing is equal to
 *   anything else), so that 3/4 of it is in swap. Then one thread reads 8
 *   bytes at a uniformly random page for the timed phase; the value is the
 *   guest's swap_ins delta over that phase divided by its length. With
 *   uniform access about B / 4B of the reads hit resident pages; those cost
 *   nanoseconds against the tens of microseconds of a fault, and are
 *   reported ("reads", "hit_fraction") rather than hidden. Every value read
 *   is checked against the content written. The guest's swap_ins also
 *   counts a fault that finds its page already read ahead; random pages
 *   rarely continue an ascending run of slots, and the host's readahead
 *   counters over the same interval are reported so that this can be seen.
 *   Baseline: raw 4 KiB random reads at queue depth 1 from a file of the
 *   working set's size, made with the same swap set code (swap_open on the
 *   same directory, so the same O_DIRECT decision and the same filesystem)
 *   and read through an I/O engine of the kind the host really uses, into
 *   a 4096-aligned buffer that the engine was given as its store (so the
 *   io_uring engine reads it with READ_FIXED, as it reads frames). That is
 *   what one fault has to do at the least: one page from the disk. The gap
 *   between the two is the library's own cost per fault ("overhead_us").
 *   The timed phase is cut into slices (8; --quick 4) that alternate
 *   between umlmem and the baseline, so that a change in the disk's speed
 *   or in other load on the machine during the run falls on both alike.
 *
 * pagein_random_t8 -- the same with 8 threads reading random pages of the
 *   same one guest (one guest rather than 8: the question is whether faults
 *   of one guest overlap). Baseline: 8 threads each doing queue-depth-1
 *   reads through the same engine on the baseline file, which is the closer
 *   analogue of 8 faulting threads than one thread submitting batches of 8.
 *   "scaling_vs_t1" compares with the one-thread figure of the same run.
 *
 * pageout_seq -- pages per second written out by umlmem_reclaim(). A host
 *   of budget B and a guest of B, every page written (dirty, resident,
 *   distinct), then umlmem_reclaim(h, everything) is timed; pages come from
 *   the swap_outs delta. Each repetition makes a new host, so its swap file
 *   is new and every write allocates blocks, as the baseline's do (a reused
 *   file with its clusters punched out would be a different workload).
 *   Baseline: the same number of pages written sequentially through the
 *   same engine in batches of the host's reclaim_batch (64 pages: 256 KiB)
 *   into a fresh swap set of the same directory, slots from swap_alloc as
 *   the pager takes them. The pager additionally scans the clock, checks
 *   for zero pages, checksums each page and updates page tables: that is
 *   the cost being measured. Best of 5 (--quick 3) for both, alternating.
 *
 * hit_read_8b, hit_read_4k -- ns per umlmem_read() of 8 bytes (at a random
 *   8-aligned offset of a random page) and of a whole page, from a guest
 *   whose every page is resident (B/2 of data on a budget of B, so no
 *   pager watermark can push anything out). Baseline: memcpy of the same
 *   length from a plain buffer of the same size holding the same content,
 *   at the same precomputed offsets. Both loops do the same surrounding
 *   work: one out-of-line call per access (memcpy through a volatile
 *   function pointer, so the compiler can neither inline nor elide it, and
 *   with the length a run-time argument), one check of its result, one
 *   8-byte load from the destination added to a volatile sink. The two
 *   sums must agree, which checks that both read the same bytes. Both
 *   sources use 4 KiB pages (the frame store is shmem; the buffer is
 *   madvised MADV_NOHUGEPAGE) so TLB reach is the same. One warm-up pass,
 *   then the best of 5, interleaved.
 *
 * kernel_swap_random -- the kernel's own swap on the pagein_random_t1
 *   workload: a child process in a memory cgroup limited to B maps 4B of
 *   anonymous memory (MADV_NOHUGEPAGE: 4 KiB pages like umlmem's), writes
 *   every page with the same content rule, then for the same warm-up and
 *   timed phase reads 8 bytes at uniformly random pages; the value is its
 *   major faults (getrusage ru_majflt) per second, the baseline is umlmem's
 *   pagein_random_t1 value from this run, and the ratio umlmem / kernel.
 *   The swap is a file in the same swap directory (so the same disk), at
 *   least 1.25 times the working set, with the highest priority should
 *   other swap be active. A major fault may read more than one page
 *   (vm.page-cluster readahead), so the pages the kernel read per second
 *   (/proc/vmstat pswpin) are reported too. Needs root, mkswap, swapon and
 *   a memory controller; otherwise the figure is skipped with the reason.
 *   The cgroup is made below the bench's own memory cgroup (v1), so that
 *   the child stays inside whatever limits the bench itself runs under, or
 *   at the root of the v2 hierarchy; the bench process never joins it.
 *   Everything is undone at the end, on error, at exit and on SIGINT,
 *   SIGTERM and SIGHUP: the child is killed, the swap turned off and its
 *   file removed, the cgroup removed.
 *
 * readahead_seq -- pages per second paged back in by a sequential read,
 *   with swap-in readahead against without it: readahead is kept only if it
 *   wins here. A fresh host of budget B (default flags: readahead on) and a
 *   guest of 4B, every page written in order with the content rule, then
 *   umlmem_reclaim(h, everything) so that the whole guest is in swap, in
 *   ascending slots (the pager writes each batch in address order); then one
 *   timed pass reads the guest in order with 64 KiB umlmem_read() calls,
 *   checking the first and last word of every page. The value is the
 *   guest's swap_ins delta over the pass divided by its length (a page
 *   found read ahead counts, since it was paged in). The pass reads the
 *   first 2B of the guest ("read_pages"): it fills the budget and then runs
 *   as long again evicting what it read, which is all a longer pass would
 *   add, while the side without readahead takes 4 KiB per fault and would
 *   spend most of the bench's time on the other half. Baseline: exactly the
 *   same on a host created with UMLMEM_NO_READAHEAD, same engine, same
 *   sizes. Every repetition of either side makes a new host, so each pass
 *   reads a swap file that only its own fill wrote. Best of 3 for both,
 *   in the order on, off / off, on / on, off, so that neither side always
 *   runs right after the other's write-out; every repetition's rate and
 *   both sides' readahead counters are reported.
 *
 * readahead_random -- readahead must not lose where it cannot help: the
 *   pagein_random_t1 workload (one thread, 8 bytes at uniformly random
 *   pages, every value checked; faults/s from the guest's swap_ins) on two
 *   hosts, each with its own guest of 4B on a budget of B filled the same
 *   way, that differ only in UMLMEM_NO_READAHEAD: the value is the host with
 *   readahead, the baseline the host without, and a ratio near 1 is the
 *   outcome to expect. The timed phase (8 s; --quick 2 s per side) is cut
 *   into slices (32; --quick 16) that alternate between the two hosts, as
 *   pagein_random_t1 alternates with its baseline, but shorter and in the
 *   order on, off / off, on / ..., because the difference sought is a few
 *   per cent: short turns share a busy machine's load alike, and the
 *   swapped order cancels a drift over the run. The two slices of a pair
 *   use the same seed, so both hosts read the same pages in the same order.
 *   Each side's readahead_pages and readahead_hits show how often a random
 *   fault looked like a run and whether the pages read for it were used.
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
 *
 * Numbers are printed as measured. A figure that could not be measured says
 * why ("skipped" with a reason, or "error").
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/swap.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "umlmem.h"
#include "swap.h"
#include "cmd.h"
#include "cli.h"

#define BENCH_PROG		"umlmem bench"
#define EXIT_USAGE	2
#define PAGE		((uint64_t)UMLMEM_PAGE_SIZE)
#define WORDS		(PAGE / 8)

extern char **environ;

/* ------------------------------------------------------------------------ */
/* Figures and their results                                                */
/* ------------------------------------------------------------------------ */

enum key {
	K_T1, K_T8, K_PAGEOUT, K_HIT8, K_HIT4K, K_KERNEL, K_RA_SEQ, K_RA_RAND, K_DD_RATE, K_DD_KSM,
	K_NV_ZERO, K_NV_SWAP, K_NV_SEQ,
	NKEYS
};

static const char *const key_name[NKEYS] = {
	[K_T1] = "pagein_random_t1",
	[K_T8] = "pagein_random_t8",
	[K_PAGEOUT] = "pageout_seq",
	[K_HIT8] = "hit_read_8b",
	[K_HIT4K] = "hit_read_4k",
	[K_KERNEL] = "kernel_swap_random",
	[K_RA_SEQ] = "readahead_seq",
	[K_RA_RAND] = "readahead_random",
	[K_DD_RATE] = "dedup_scan_rate",
	[K_DD_KSM] = "dedup_vs_ksm",
	[K_NV_ZERO] = "native_fault_zero",
	[K_NV_SWAP] = "native_fault_swap",
	[K_NV_SEQ] = "native_seq_touch",
};

enum rstate { RS_NONE = 0, RS_OK, RS_SKIP, RS_ERROR };
enum fkind { F_INT, F_NUM, F_STR, F_BOOL };

struct field {
	const char *name;
	enum fkind kind;
	double num;
	int64_t i;
	char str[200];
};

#define MAX_FIELDS 32

struct result {
	enum rstate state;
	double value, baseline, ratio;
	const char *unit;
	char note[1024];
	char reason[512];	/* RS_SKIP or RS_ERROR */
	struct field f[MAX_FIELDS];
	unsigned nf;
};

struct bench {
	/* options */
	bool json, quick;
	const char *swap_dir;
	enum umlmem_io_engine want_engine;
	bool want[NKEYS];
	uint64_t budget;
	double seconds, warm;

	/* the engine the hosts really use: the baselines run on the same kind */
	bool have_engine;
	enum umlmem_io_engine engine;
	char engine_note[256];

	struct result r[NKEYS];
	double t_start;
	/* other load on the machine, for whoever reads the numbers */
	double load_start, load_end;
};

static struct field *res_field(struct result *r, const char *name, enum fkind kind)
{
	struct field *f;

	if (r->nf >= MAX_FIELDS)
		return NULL;
	f = &r->f[r->nf++];
	memset(f, 0, sizeof(*f));
	f->name = name;
	f->kind = kind;
	return f;
}

static void res_int(struct result *r, const char *name, int64_t v)
{
	struct field *f = res_field(r, name, F_INT);

	if (f)
		f->i = v;
}

static void res_num(struct result *r, const char *name, double v)
{
	struct field *f = res_field(r, name, F_NUM);

	if (f)
		f->num = v;
}

static void res_bool(struct result *r, const char *name, bool v)
{
	struct field *f = res_field(r, name, F_BOOL);

	if (f)
		f->i = v;
}

static void __attribute__((format(printf, 3, 4)))
res_str(struct result *r, const char *name, const char *fmt, ...)
{
	struct field *f = res_field(r, name, F_STR);
	va_list ap;

	if (!f)
		return;
	va_start(ap, fmt);
	vsnprintf(f->str, sizeof(f->str), fmt, ap);
	va_end(ap);
}

static void __attribute__((format(printf, 2, 3)))
res_note(struct result *r, const char *fmt, ...)
{
	size_t len = strlen(r->note);
	va_list ap;

	if (len && len + 2 < sizeof(r->note)) {
		strcpy(r->note + len, "; ");
		len += 2;
	}
	va_start(ap, fmt);
	vsnprintf(r->note + len, sizeof(r->note) - len, fmt, ap);
	va_end(ap);
}

/* Sets a rate (more is better) or a time (less is better). */
static void res_set(struct result *r, double value, double baseline, const char *unit,
		    bool is_time)
{
	r->state = RS_OK;
	r->value = value;
	r->baseline = baseline;
	r->unit = unit;
	if (is_time)
		r->ratio = value > 0 ? baseline / value : NAN;
	else
		r->ratio = baseline > 0 ? value / baseline : NAN;
}

/* The first failure is the one that explains the figure. */
static void __attribute__((format(printf, 3, 4)))
res_fail(struct result *r, enum rstate st, const char *fmt, ...)
{
	va_list ap;

	if (r->state == RS_ERROR || r->state == RS_SKIP)
		return;
	r->state = st;
	va_start(ap, fmt);
	vsnprintf(r->reason, sizeof(r->reason), fmt, ap);
	va_end(ap);
	fprintf(stderr, "%s: %s\n", BENCH_PROG, r->reason);
}

/* A failed library call, with the library's own sentence. */
static void lib_fail(struct result *r, int rc, const char *what)
{
	char msg[512];

	snprintf(msg, sizeof(msg), "%s", umlmem_errmsg());
	if (msg[0])
		res_fail(r, RS_ERROR, "%s: %s: %s", what, umlmem_strerror(rc), msg);
	else
		res_fail(r, RS_ERROR, "%s: %s", what, umlmem_strerror(rc));
}

/* ------------------------------------------------------------------------ */
/* Small helpers                                                            */
/* ------------------------------------------------------------------------ */


static void sleep_s(double s)
{
	struct timespec ts;

	if (s <= 0)
		return;
	ts.tv_sec = (time_t)s;
	ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
	while (clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, &ts) == EINTR)
		;
}

static void __attribute__((format(printf, 1, 2))) progress(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", BENCH_PROG);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* splitmix64: seeds and the per-thread generators. */
static uint64_t rng_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Uniform in [0, n) without the bias of a modulo. */
static uint64_t rng_below(uint64_t *s, uint64_t n)
{
	return (uint64_t)(((unsigned __int128)rng_next(s) * n) >> 64);
}

/* The content rule shared by every figure: never zero, never repeated. */
static inline uint64_t word_of(uint64_t page, uint64_t w)
{
	return page * WORDS + w + 1;
}

static void fill_pages(uint64_t *buf, uint64_t first_page, uint64_t npages, uint64_t salt)
{
	for (uint64_t p = 0; p < npages; p++)
		for (uint64_t w = 0; w < WORDS; w++)
			buf[p * WORDS + w] = word_of(first_page + p, w) ^ salt;
}

/* Page-aligned anonymous memory, 4 KiB pages, so that both sides of a
   comparison see the same TLB reach. */
static void *map_pages(uint64_t bytes)
{
	void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return NULL;
	madvise(p, bytes, MADV_NOHUGEPAGE);
	return p;
}

static int write_file(const char *path, const char *val)
{
	size_t len = strlen(val);
	ssize_t n;
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	int err = 0;

	if (fd < 0)
		return -errno;
	n = write(fd, val, len);
	if (n < 0)
		err = -errno;
	else if ((size_t)n != len)
		err = -EIO;
	close(fd);
	return err;
}

static bool read_line(const char *path, char *buf, size_t len);

static double loadavg_1m(void)
{
	char line[128];

	if (!read_line("/proc/loadavg", line, sizeof(line)))
		return NAN;
	return strtod(line, NULL);
}

static bool read_line(const char *path, char *buf, size_t len)
{
	FILE *f = fopen(path, "re");
	bool ok;

	if (!f)
		return false;
	ok = fgets(buf, (int)len, f) != NULL;
	fclose(f);
	if (ok)
		buf[strcspn(buf, "\n")] = '\0';
	return ok;
}

/* ------------------------------------------------------------------------ */
/* Hosts                                                                    */
/* ------------------------------------------------------------------------ */

static int make_host(struct bench *b, struct result *r, uint64_t budget, uint64_t guest_bytes,
		     unsigned flags, const char *name, umlmem_host **hp, umlmem_guest **gp)
{
	struct umlmem_host_config hc;
	struct umlmem_guest_config gc;
	const char *why = NULL;
	enum umlmem_io_engine kind;
	int rc;

	*hp = NULL;
	*gp = NULL;
	umlmem_host_config_init(&hc);
	hc.resident_bytes = budget;
	hc.swap_dir = b->swap_dir;
	hc.io = b->want_engine;
	hc.flags = flags;
	rc = umlmem_host_create(&hc, hp);
	if (rc) {
		*hp = NULL;
		lib_fail(r, rc, "creating the host");
		return rc;
	}
	kind = umlmem_host_io_engine(*hp, &why);
	if (!b->have_engine) {
		b->have_engine = true;
		b->engine = kind;
		snprintf(b->engine_note, sizeof(b->engine_note), "%s", why ? why : "");
	}
	umlmem_guest_config_init(&gc);
	gc.ram_bytes = guest_bytes;
	gc.name = name;
	gc.flags = UMLMEM_GUEST_NOMERGE;
	rc = umlmem_guest_create(*hp, &gc, gp);
	if (rc) {
		*gp = NULL;
		lib_fail(r, rc, "creating the guest");
		umlmem_host_destroy(*hp);
		*hp = NULL;
	}
	return rc;
}

#define FILL_PAGES 64u

/* Writes every page of [0, bytes) with the content rule (xor @salt). */
static int fill_guest(struct result *r, umlmem_guest *g, uint64_t bytes, uint64_t salt,
		      const char *what)
{
	uint64_t *buf = aligned_alloc(PAGE, FILL_PAGES * PAGE);
	uint64_t npages = bytes / PAGE, p, n;
	double last = now_s(), t;
	char b1[32], b2[32];
	int rc = 0;

	if (!buf) {
		res_fail(r, RS_ERROR, "out of memory for the fill buffer");
		return -ENOMEM;
	}
	for (p = 0; p < npages; p += n) {
		n = npages - p < FILL_PAGES ? npages - p : FILL_PAGES;
		fill_pages(buf, p, n, salt);
		rc = umlmem_write(g, p * PAGE, buf, n * PAGE);
		if (rc) {
			lib_fail(r, rc, "writing the guest");
			break;
		}
		t = now_s();
		if (what && t - last >= 2.0) {
			progress("%s: written %s of %s", what, fmt_bytes(b1, sizeof(b1), p * PAGE),
				 fmt_bytes(b2, sizeof(b2), bytes));
			last = t;
		}
	}
	free(buf);
	return rc;
}

/* ------------------------------------------------------------------------ */
/* The baseline file: a swap set of the working set's size                  */
/* ------------------------------------------------------------------------ */

#define RAW_WRITE_PAGES 256u	/* 1 MiB per io_run while filling */
#define RAW_THREADS_MAX 8u

struct rawfile {
	struct swap *sw;
	struct io_engine *e;
	uint64_t npages;
	uint64_t *slots;
	uint8_t *mem;		/* the engine's store: write batch + one page per reader */
	uint64_t mem_bytes;
	bool direct;
};

static void raw_close(struct rawfile *f)
{
	if (f->e)
		io_engine_destroy(f->e);
	if (f->sw)
		swap_close(f->sw);
	if (f->mem)
		munmap(f->mem, f->mem_bytes);
	free(f->slots);
	memset(f, 0, sizeof(*f));
}

/*
 * Opens a fresh swap set in the swap directory and an engine of the host's
 * kind on it, with @mem_pages of page-aligned memory as the engine's store.
 */
static int raw_open(struct bench *b, struct result *r, struct rawfile *f, uint64_t npages,
		    unsigned mem_pages)
{
	char err[512] = "", why[512] = "";
	const char *dir = b->swap_dir;
	int rc;

	memset(f, 0, sizeof(*f));
	if (!dir) {
		/* the library's own default, so the baseline shares the disk */
		dir = getenv("TMPDIR");
		if (!dir || !*dir)
			dir = "/var/tmp";
	}
	f->npages = npages;
	f->mem_bytes = (uint64_t)mem_pages * PAGE;
	f->mem = map_pages(f->mem_bytes);
	f->slots = calloc(npages ? npages : 1, sizeof(*f->slots));
	if (!f->mem || !f->slots) {
		res_fail(r, RS_ERROR, "out of memory for the baseline's buffers");
		if (f->mem == NULL)
			f->mem_bytes = 0;
		raw_close(f);
		return -ENOMEM;
	}
	memset(f->mem, 0x5a, f->mem_bytes);
	rc = swap_open(&f->sw, dir, 1, 0, err, sizeof(err));
	if (rc) {
		f->sw = NULL;
		res_fail(r, RS_ERROR, "baseline: swap_open in %s: %s", dir,
			 err[0] ? err : strerror(-rc));
		raw_close(f);
		return rc;
	}
	f->direct = swap_is_direct(f->sw);
	rc = io_engine_create(b->engine, f->sw, f->mem, f->mem_bytes, &f->e, why, sizeof(why));
	if (rc) {
		f->e = NULL;
		res_fail(r, RS_ERROR, "baseline: starting the %s engine: %s", engine_name(b->engine),
			 why[0] ? why : strerror(-rc));
		raw_close(f);
		return rc;
	}
	return 0;
}

/* Allocates every slot and writes it, RAW_WRITE_PAGES per io_run. */
static int raw_fill(struct result *r, struct rawfile *f)
{
	struct io_req req[RAW_WRITE_PAGES];
	uint64_t p = 0, n, got;
	unsigned i, file;

	while (p < f->npages) {
		n = f->npages - p < RAW_WRITE_PAGES ? f->npages - p : RAW_WRITE_PAGES;
		for (got = 0; got < n; ) {
			unsigned k = swap_alloc(f->sw, (unsigned)(n - got), f->slots + p + got);

			if (!k) {
				res_fail(r, RS_ERROR, "baseline: swap_alloc found no free slot");
				return -ENOSPC;
			}
			got += k;
		}
		for (i = 0; i < n; i++) {
			swap_where(f->sw, f->slots[p + i], &file, &req[i].off);
			req[i].file = (uint16_t)file;
			req[i].buf = f->mem + (uint64_t)i * PAGE;
			req[i].len = PAGE;
			req[i].op = IO_WRITE;
			req[i].res = 0;
		}
		if (io_run(f->e, req, (unsigned)n)) {
			for (i = 0; i < n && !req[i].res; i++)
				;
			res_fail(r, RS_ERROR, "baseline: writing the file failed: %s",
				 strerror(i < n ? -req[i].res : EIO));
			return -EIO;
		}
		p += n;
	}
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Timed random-read phases, on umlmem or on the raw file                   */
/* ------------------------------------------------------------------------ */

struct phase;

struct worker {
	pthread_t tid;
	struct phase *ph;
	unsigned id;
	uint64_t rng;
	uint64_t ops;		/* written by the worker, sampled by main (atomics) */
	int err;
	char msg[256];
};

struct phase {
	int stop;		/* atomics */
	/* the readers start together, when main sets go */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool go;
	/* umlmem side */
	umlmem_host *h;
	umlmem_guest *g;
	/* raw side */
	struct rawfile *raw;
	uint64_t npages;
	struct worker w[RAW_THREADS_MAX];
	unsigned nthreads;
};

static void phase_wait(struct phase *ph)
{
	pthread_mutex_lock(&ph->lock);
	while (!ph->go)
		pthread_cond_wait(&ph->cond, &ph->lock);
	pthread_mutex_unlock(&ph->lock);
}

static void phase_go(struct phase *ph)
{
	pthread_mutex_lock(&ph->lock);
	ph->go = true;
	pthread_cond_broadcast(&ph->cond);
	pthread_mutex_unlock(&ph->lock);
}

static void *guest_reader(void *arg)
{
	struct worker *w = arg;
	struct phase *ph = w->ph;
	uint64_t v, page, word, ops = 0;
	int rc;

	phase_wait(ph);
	while (!__atomic_load_n(&ph->stop, __ATOMIC_RELAXED)) {
		page = rng_below(&w->rng, ph->npages);
		word = rng_below(&w->rng, WORDS);
		rc = umlmem_read(ph->g, page * PAGE + word * 8, &v, 8);
		if (rc) {
			w->err = rc;
			snprintf(w->msg, sizeof(w->msg), "umlmem_read of page %" PRIu64 ": %s: %s",
				 page, umlmem_strerror(rc), umlmem_errmsg());
			break;
		}
		if (v != word_of(page, word)) {
			w->err = -EUCLEAN;
			snprintf(w->msg, sizeof(w->msg), "page %" PRIu64 " word %" PRIu64
				 " read 0x%" PRIx64 ", expected 0x%" PRIx64, page, word, v,
				 word_of(page, word));
			break;
		}
		__atomic_store_n(&w->ops, ++ops, __ATOMIC_RELAXED);
	}
	return NULL;
}

static void *raw_reader(void *arg)
{
	struct worker *w = arg;
	struct phase *ph = w->ph;
	struct rawfile *f = ph->raw;
	struct io_req req;
	uint64_t ops = 0, slot;
	unsigned file;

	phase_wait(ph);
	while (!__atomic_load_n(&ph->stop, __ATOMIC_RELAXED)) {
		slot = f->slots[rng_below(&w->rng, f->npages)];
		swap_where(f->sw, slot, &file, &req.off);
		req.file = (uint16_t)file;
		/* the pages after the write batch: one per reader */
		req.buf = f->mem + (uint64_t)(RAW_WRITE_PAGES + w->id) * PAGE;
		req.len = PAGE;
		req.op = IO_READ;
		req.res = 0;
		if (io_run(f->e, &req, 1)) {
			w->err = req.res ? req.res : -EIO;
			snprintf(w->msg, sizeof(w->msg), "raw read at offset %" PRIu64 ": %s",
				 req.off, strerror(-w->err));
			break;
		}
		__atomic_store_n(&w->ops, ++ops, __ATOMIC_RELAXED);
	}
	return NULL;
}

static uint64_t phase_ops(struct phase *ph)
{
	uint64_t sum = 0;

	for (unsigned i = 0; i < ph->nthreads; i++)
		sum += __atomic_load_n(&ph->w[i].ops, __ATOMIC_RELAXED);
	return sum;
}

struct phase_out {
	double secs;
	uint64_t ops;
	uint64_t swap_ins, faults;	/* umlmem side */
	uint64_t ra_pages, ra_hits;	/* readahead, from the host */
};

/*
 * Runs @nthreads readers for @warm seconds, then for @secs timed ones,
 * bounded by two samples taken together (clock, operation counters, guest
 * counters) so that every count belongs to the same interval; adds the
 * counts to @out.
 */
static int run_slice(struct result *r, struct phase *ph, unsigned nthreads, uint64_t seed,
		     double warm, double secs, struct phase_out *out)
{
	struct umlmem_host_info i0, i1;
	struct umlmem_stats s0, s1;
	uint64_t ops0, ops1;
	double t0, t1;
	unsigned i, started = 0;
	int rc = 0;

	memset(&s0, 0, sizeof(s0));
	memset(&s1, 0, sizeof(s1));
	memset(&i0, 0, sizeof(i0));
	memset(&i1, 0, sizeof(i1));
	ph->stop = 0;
	ph->go = false;
	ph->nthreads = nthreads;
	for (i = 0; i < nthreads; i++) {
		struct worker *w = &ph->w[i];

		memset(w, 0, sizeof(*w));
		w->ph = ph;
		w->id = i;
		w->rng = seed * 1000003u + i;
		rng_next(&w->rng);
		rc = pthread_create(&w->tid, NULL, ph->g ? guest_reader : raw_reader, w);
		if (rc) {
			res_fail(r, RS_ERROR, "pthread_create: %s", strerror(rc));
			break;
		}
		started++;
	}
	if (started < nthreads) {
		__atomic_store_n(&ph->stop, 1, __ATOMIC_RELAXED);
		phase_go(ph);
		for (i = 0; i < started; i++)
			pthread_join(ph->w[i].tid, NULL);
		return -EAGAIN;
	}
	phase_go(ph);
	sleep_s(warm);

	if (ph->g) {
		umlmem_guest_stats(ph->g, &s0);
		umlmem_host_info(ph->h, &i0, sizeof(i0));
	}
	ops0 = phase_ops(ph);
	t0 = now_s();
	sleep_s(secs);
	t1 = now_s();
	ops1 = phase_ops(ph);
	if (ph->g) {
		umlmem_guest_stats(ph->g, &s1);
		umlmem_host_info(ph->h, &i1, sizeof(i1));
	}

	__atomic_store_n(&ph->stop, 1, __ATOMIC_RELAXED);
	for (i = 0; i < nthreads; i++)
		pthread_join(ph->w[i].tid, NULL);

	for (i = 0; i < nthreads; i++)
		if (ph->w[i].err) {
			res_fail(r, RS_ERROR, "thread %u: %s", i, ph->w[i].msg);
			return ph->w[i].err;
		}
	out->secs += t1 - t0;
	out->ops += ops1 - ops0;
	out->swap_ins += s1.swap_ins - s0.swap_ins;
	out->faults += s1.faults - s0.faults;
	out->ra_pages += i1.readahead_pages - i0.readahead_pages;
	out->ra_hits += i1.readahead_hits - i0.readahead_hits;
	return 0;
}

/*
 * umlmem and the raw file in alternating slices of one timed phase, so
 * that a change of the disk's speed or of other load on the machine during
 * the run falls on both sides alike. Each side warms up once, before its
 * first slice.
 */
static int run_compare(struct bench *b, struct result *r, struct phase *ph, unsigned nthreads,
		       umlmem_host *h, umlmem_guest *g, struct rawfile *raw, struct phase_out *u,
		       struct phase_out *base)
{
	unsigned rounds = b->quick ? 4 : 8, i;
	double slice = b->seconds / rounds;
	int rc;

	memset(u, 0, sizeof(*u));
	memset(base, 0, sizeof(*base));
	for (i = 0; i < rounds; i++) {
		ph->h = h;
		ph->g = g;
		ph->raw = NULL;
		rc = run_slice(r, ph, nthreads, 4 * i + nthreads, i ? 0 : b->warm, slice, u);
		if (rc)
			return rc;
		ph->h = NULL;
		ph->g = NULL;
		ph->raw = raw;
		rc = run_slice(r, ph, nthreads, 4 * i + nthreads + 1000, i ? 0 : b->warm, slice,
			       base);
		if (rc)
			return rc;
	}
	return 0;
}

/* ------------------------------------------------------------------------ */
/* pagein_random_t1, pagein_random_t8                                       */
/* ------------------------------------------------------------------------ */

static void pagein_result(struct bench *b, struct result *r, unsigned threads,
			  const struct phase_out *u, const struct phase_out *raw,
			  uint64_t npages, bool direct)
{
	double value = u->secs > 0 ? (double)u->swap_ins / u->secs : 0;
	double base = raw->secs > 0 ? (double)raw->ops / raw->secs : 0;

	res_set(r, value, base, "faults/s", false);
	res_int(r, "threads", threads);
	res_int(r, "guests", 1);
	res_int(r, "pages", (int64_t)npages);
	res_int(r, "budget_pages", (int64_t)(b->budget / PAGE));
	res_num(r, "seconds", u->secs);
	res_int(r, "reads", (int64_t)u->ops);
	res_int(r, "swap_ins", (int64_t)u->swap_ins);
	res_int(r, "faults", (int64_t)u->faults);
	res_int(r, "readahead_pages", (int64_t)u->ra_pages);
	res_int(r, "readahead_hits", (int64_t)u->ra_hits);
	res_num(r, "hit_fraction", u->ops ? 1.0 - (double)u->swap_ins / (double)u->ops : NAN);
	res_int(r, "baseline_reads", (int64_t)raw->ops);
	res_num(r, "baseline_seconds", raw->secs);
	if (value > 0 && base > 0)
		res_num(r, "overhead_us", 1e6 * threads / value - 1e6 * threads / base);
	res_str(r, "engine", "%s", engine_name(b->engine));
	res_bool(r, "direct", direct);
	res_str(r, "baseline_mode", threads == 1 ?
		"one thread, one 4 KiB read per io_run (queue depth 1)" :
		"%u threads, each one 4 KiB read per io_run (queue depth 1 each)", threads);
	if (!direct)
		res_note(r, "the swap directory does not take O_DIRECT: both sides read "
			 "through the page cache");
	if (u->ra_hits * 100 > u->swap_ins)
		res_note(r, "%" PRIu64 " of the swap-ins found their page read ahead, with no read "
			 "of their own", u->ra_hits);
	if (r->ratio > 1.1)
		res_note(r, "more than 10%% above the raw reads it cannot beat (one read per "
			 "fault): the disk's speed varied between slices by more than the "
			 "library costs; compare several runs");
	else if (r->ratio >= 0.9)
		res_note(r, "within 10%% of the raw disk: disk-bound");
	else if (r->ratio > 0)
		res_note(r, "%.1f us per fault above a raw read: the library's own cost "
			 "per fault", 1e6 * threads / value - 1e6 * threads / base);
}

static void bench_pagein(struct bench *b)
{
	struct result *r1 = &b->r[K_T1], *r8 = &b->r[K_T8];
	bool do1 = b->want[K_T1], do8 = b->want[K_T8];
	struct result *r = do1 ? r1 : r8;	/* setup failures go to the first */
	uint64_t ws = 4 * b->budget, npages = ws / PAGE;
	struct umlmem_stats st;
	struct phase_out u1 = { 0 }, raw1 = { 0 }, u8 = { 0 }, raw8 = { 0 };
	struct rawfile raw = { 0 };
	struct phase *ph = NULL;
	umlmem_host *h = NULL;
	umlmem_guest *g = NULL;
	char b1[32], b2[32];
	double t;

	if (!do1 && !do8)
		return;
	ph = calloc(1, sizeof(*ph));
	if (!ph) {
		res_fail(r, RS_ERROR, "out of memory");
		goto out;
	}
	pthread_mutex_init(&ph->lock, NULL);
	pthread_cond_init(&ph->cond, NULL);
	progress("pagein: guest of %s on a budget of %s, filling it",
		 fmt_bytes(b1, sizeof(b1), ws), fmt_bytes(b2, sizeof(b2), b->budget));
	if (make_host(b, r, b->budget, ws, 0, "bench-pagein", &h, &g))
		goto out;
	t = now_s();
	if (fill_guest(r, g, ws, 0, "pagein fill"))
		goto out;
	umlmem_guest_stats(g, &st);
	progress("pagein: filled in %.1f s: %" PRIu64 " pages resident, %" PRIu64 " in swap",
		 now_s() - t, st.resident_pages, st.swapped_pages);

	progress("pagein: baseline file of %s in the swap directory (%s engine)",
		 fmt_bytes(b1, sizeof(b1), ws), engine_name(b->engine));
	t = now_s();
	if (raw_open(b, r, &raw, npages, RAW_WRITE_PAGES + RAW_THREADS_MAX) ||
	    raw_fill(r, &raw))
		goto out;
	progress("pagein: baseline file written in %.1f s", now_s() - t);

	ph->npages = npages;
	if (do1) {
		progress("pagein_random_t1: umlmem and raw reads, 1 thread, %.1f s each in "
			 "alternating slices, after %.1f s warm-up each", b->seconds, b->warm);
		if (run_compare(b, r1, ph, 1, h, g, &raw, &u1, &raw1))
			goto t8;
		pagein_result(b, r1, 1, &u1, &raw1, npages, raw.direct);
	}
t8:
	if (do8) {
		progress("pagein_random_t8: umlmem (8 threads, one guest) and raw reads (8 "
			 "threads), %.1f s each in alternating slices", b->seconds);
		if (run_compare(b, r8, ph, 8, h, g, &raw, &u8, &raw8))
			goto out;
		pagein_result(b, r8, 8, &u8, &raw8, npages, raw.direct);
		if (r1->state == RS_OK && r1->value > 0) {
			double sc = r8->value / r1->value;

			res_num(r8, "scaling_vs_t1", sc);
			if (sc < 1.3)
				res_note(r8, "8 threads fault at %.2fx the rate of one: their faults "
					 "barely overlap", sc);
		}
	}
out:
	/* a failed setup explains both figures */
	if (do1 && do8 && r1->state == RS_ERROR && r8->state == RS_NONE)
		res_fail(r8, RS_ERROR, "%s", r1->reason);
	raw_close(&raw);
	umlmem_host_destroy(h);	/* destroys the guest too */
	if (ph) {
		pthread_mutex_destroy(&ph->lock);
		pthread_cond_destroy(&ph->cond);
	}
	free(ph);
}

/* ------------------------------------------------------------------------ */
/* pageout_seq                                                              */
/* ------------------------------------------------------------------------ */

#define PAGEOUT_REPS 5
#define RECLAIM_BATCH 64u	/* umlmem_host_config_init()'s default */

/* One baseline repetition: a fresh swap set, @npages written in batches. */
static int pageout_raw_once(struct bench *b, struct result *r, uint64_t npages, double *secs)
{
	struct io_req req[RECLAIM_BATCH];
	uint64_t slots[RECLAIM_BATCH];
	struct rawfile f;
	uint64_t p, n, got;
	unsigned i, file;
	double t0;
	int rc;

	rc = raw_open(b, r, &f, 0, RECLAIM_BATCH);
	if (rc)
		return rc;
	t0 = now_s();
	for (p = 0; p < npages; p += n) {
		n = npages - p < RECLAIM_BATCH ? npages - p : RECLAIM_BATCH;
		/* the pager asks swap_alloc for a batch of slots the same way */
		for (got = 0; got < n; ) {
			unsigned k = swap_alloc(f.sw, (unsigned)(n - got), slots + got);

			if (!k) {
				res_fail(r, RS_ERROR, "baseline: swap_alloc found no free slot");
				raw_close(&f);
				return -ENOSPC;
			}
			got += k;
		}
		for (i = 0; i < n; i++) {
			swap_where(f.sw, slots[i], &file, &req[i].off);
			req[i].file = (uint16_t)file;
			req[i].buf = f.mem + (uint64_t)i * PAGE;
			req[i].len = PAGE;
			req[i].op = IO_WRITE;
			req[i].res = 0;
		}
		if (io_run(f.e, req, (unsigned)n)) {
			res_fail(r, RS_ERROR, "baseline: sequential write failed");
			raw_close(&f);
			return -EIO;
		}
	}
	*secs = now_s() - t0;
	raw_close(&f);
	return 0;
}

/* One umlmem repetition: a fresh host (so a fresh swap file, like the
   baseline's), @npages dirty pages, one timed umlmem_reclaim of them all. */
static int pageout_umlmem_once(struct bench *b, struct result *r, uint64_t npages, int rep,
			       double *secs, uint64_t *pages)
{
	struct umlmem_stats s0, s1;
	umlmem_host *h;
	umlmem_guest *g;
	uint64_t evicted;
	double t0;
	int rc;

	rc = make_host(b, r, npages * PAGE, npages * PAGE, 0, "bench-pageout", &h, &g);
	if (rc)
		return rc;
	rc = fill_guest(r, g, npages * PAGE, (uint64_t)rep << 40, NULL);
	if (!rc) {
		umlmem_guest_stats(g, &s0);
		t0 = now_s();
		rc = umlmem_reclaim(h, UINT64_MAX, &evicted);
		*secs = now_s() - t0;
		umlmem_guest_stats(g, &s1);
		if (rc)
			lib_fail(r, rc, "umlmem_reclaim");
		*pages = s1.swap_outs - s0.swap_outs;
	}
	umlmem_host_destroy(h);
	return rc;
}

static void bench_pageout(struct bench *b)
{
	struct result *r = &b->r[K_PAGEOUT];
	uint64_t npages = b->budget / PAGE, pages = 0, best_pages = 0;
	double best_u = 0, best_raw = 0, dt = 0, rate;
	int rep, reps = b->quick ? 3 : PAGEOUT_REPS;
	char b1[32];

	if (!b->want[K_PAGEOUT])
		return;
	progress("pageout_seq: %s of dirty pages reclaimed, and as many raw batch writes, "
		 "%d times each, alternating", fmt_bytes(b1, sizeof(b1), b->budget), reps);
	for (rep = 0; rep < reps; rep++) {
		if (pageout_umlmem_once(b, r, npages, rep, &dt, &pages))
			return;
		rate = dt > 0 ? (double)pages / dt : 0;
		if (rate > best_u) {
			best_u = rate;
			best_pages = pages;
		}
		progress("pageout_seq: rep %d: umlmem %.0f pages/s", rep + 1, rate);
		if (pageout_raw_once(b, r, npages, &dt))
			return;
		rate = dt > 0 ? (double)npages / dt : 0;
		if (rate > best_raw)
			best_raw = rate;
		progress("pageout_seq: rep %d: raw %.0f pages/s", rep + 1, rate);
	}
	res_set(r, best_u, best_raw, "pages/s", false);
	res_int(r, "pages", (int64_t)best_pages);
	res_int(r, "batch", RECLAIM_BATCH);
	res_int(r, "reps", reps);
	res_num(r, "MiB_per_s", best_u * PAGE / (1024.0 * 1024.0));
	res_num(r, "baseline_MiB_per_s", best_raw * PAGE / (1024.0 * 1024.0));
	res_str(r, "engine", "%s", engine_name(b->engine));
	res_str(r, "baseline_mode", "%" PRIu64 " pages in io_run batches of %u into a fresh "
		"swap set, best of %d", npages, RECLAIM_BATCH, reps);
	if (best_pages < npages)
		res_note(r, "reclaim wrote %" PRIu64 " of %" PRIu64 " pages (the rest were "
			 "already out)", best_pages, npages);
	if (r->ratio > 1.1)
		res_note(r, "more than 10%% above raw batch writes of the same size: the disk's "
			 "speed varied between repetitions; compare several runs");
	else if (r->ratio >= 0.9)
		res_note(r, "within 10%% of raw batch writes: disk-bound");
}

/* ------------------------------------------------------------------------ */
/* hit_read_8b, hit_read_4k                                                 */
/* ------------------------------------------------------------------------ */

#define HIT_REPS 5

/* Called through a volatile pointer: an out-of-line call the compiler can
   neither inline, specialise for the length, nor drop. */
static void *(*volatile memcpy_fn)(void *, const void *, size_t) = memcpy;
static volatile uint64_t sink;

static __attribute__((noinline)) int
loop_umlmem(umlmem_guest *g, const uint64_t *off, size_t n, size_t len, uint8_t *dst,
	    uint64_t *sum)
{
	uint64_t v;
	int rc;

	for (size_t i = 0; i < n; i++) {
		rc = umlmem_read(g, off[i], dst, len);
		if (rc)
			return rc;
		memcpy(&v, dst, 8);
		sink += v;
	}
	*sum = sink;
	return 0;
}

static __attribute__((noinline)) int
loop_memcpy(const uint8_t *src, const uint64_t *off, size_t n, size_t len, uint8_t *dst,
	    uint64_t *sum)
{
	uint64_t v;

	for (size_t i = 0; i < n; i++) {
		if (!memcpy_fn(dst, src + off[i], len))
			return -EFAULT;
		memcpy(&v, dst, 8);
		sink += v;
	}
	*sum = sink;
	return 0;
}

static void hit_one(struct bench *b, enum key k, umlmem_guest *g, const uint8_t *src,
		    uint64_t bytes, size_t len, size_t iters)
{
	struct result *r = &b->r[k];
	uint64_t *off = malloc(iters * sizeof(*off));
	uint8_t *dst = aligned_alloc(PAGE, PAGE);
	uint64_t npages = bytes / PAGE, rng = 0x1234u + len, sum_u = 0, sum_m = 0, s0;
	double best_u = INFINITY, best_m = INFINITY, t0, dt;
	struct umlmem_stats st0, st1;
	int rep, rc;

	if (!off || !dst) {
		res_fail(r, RS_ERROR, "out of memory for %zu offsets", iters);
		goto out;
	}
	for (size_t i = 0; i < iters; i++) {
		uint64_t page = rng_below(&rng, npages);

		off[i] = page * PAGE + (len < PAGE ? rng_below(&rng, (PAGE - len) / 8 + 1) * 8 : 0);
	}
	umlmem_guest_stats(g, &st0);
	/* rep 0 is the warm-up, not counted */
	for (rep = 0; rep <= HIT_REPS; rep++) {
		s0 = sink;
		t0 = now_s();
		rc = loop_umlmem(g, off, iters, len, dst, &sum_u);
		dt = now_s() - t0;
		if (rc) {
			lib_fail(r, rc, "umlmem_read");
			goto out;
		}
		sum_u -= s0;
		if (rep && dt < best_u)
			best_u = dt;

		s0 = sink;
		t0 = now_s();
		rc = loop_memcpy(src, off, iters, len, dst, &sum_m);
		dt = now_s() - t0;
		sum_m -= s0;
		if (rc) {
			res_fail(r, RS_ERROR, "memcpy returned NULL");
			goto out;
		}
		if (rep && dt < best_m)
			best_m = dt;
		if (sum_u != sum_m) {
			res_fail(r, RS_ERROR, "umlmem_read and memcpy read different bytes "
				 "(sums 0x%" PRIx64 " and 0x%" PRIx64 ")", sum_u, sum_m);
			goto out;
		}
	}
	umlmem_guest_stats(g, &st1);
	res_set(r, best_u * 1e9 / (double)iters, best_m * 1e9 / (double)iters, "ns", true);
	res_int(r, "bytes", (int64_t)len);
	res_int(r, "iterations", (int64_t)iters);
	res_int(r, "reps", HIT_REPS);
	res_int(r, "resident_bytes", (int64_t)bytes);
	res_int(r, "faults", (int64_t)(st1.faults - st0.faults));
	res_str(r, "baseline_mode", "memcpy through a function pointer from a plain %s buffer, "
		"same offsets, best of %d", len == 8 ? "8 B" : "4 KiB", HIT_REPS);
	if (st1.faults != st0.faults)
		res_note(r, "%" PRIu64 " faults during the timed loops: not every page stayed "
			 "resident", st1.faults - st0.faults);
	res_note(r, "source region %" PRIu64 " MiB on both sides (4 KiB pages)", bytes >> 20);
out:
	free(off);
	free(dst);
}

static void bench_hits(struct bench *b)
{
	bool do8 = b->want[K_HIT8], do4 = b->want[K_HIT4K];
	struct result *r = do8 ? &b->r[K_HIT8] : &b->r[K_HIT4K];
	uint64_t bytes = b->budget / 2 / PAGE * PAGE;
	struct umlmem_stats st;
	umlmem_host *h = NULL;
	umlmem_guest *g = NULL;
	uint8_t *src = NULL;
	char b1[32];

	if (!do8 && !do4)
		return;
	if (bytes < PAGE)
		bytes = PAGE;
	progress("hit reads: %s resident on a budget twice that, against memcpy",
		 fmt_bytes(b1, sizeof(b1), bytes));
	if (make_host(b, r, b->budget, bytes, 0, "bench-hits", &h, &g))
		goto out;
	if (fill_guest(r, g, bytes, 0, NULL))
		goto out;
	umlmem_guest_stats(g, &st);
	if (st.swapped_pages) {
		res_fail(r, RS_ERROR, "%" PRIu64 " pages went to swap although the resident set "
			 "is half the budget", st.swapped_pages);
		goto out;
	}
	src = map_pages(bytes);
	if (!src) {
		res_fail(r, RS_ERROR, "cannot map %" PRIu64 " bytes for the baseline", bytes);
		goto out;
	}
	fill_pages((uint64_t *)src, 0, bytes / PAGE, 0);
	if (do8)
		hit_one(b, K_HIT8, g, src, bytes, 8, b->quick ? (1u << 19) : (1u << 21));
	if (do4)
		hit_one(b, K_HIT4K, g, src, bytes, PAGE, b->quick ? (1u << 16) : (1u << 18));
out:
	if (src)
		munmap(src, bytes);
	umlmem_host_destroy(h);
}

/* ------------------------------------------------------------------------ */
/* readahead_seq, readahead_random                                          */
/* ------------------------------------------------------------------------ */

#define RA_SEQ_REPS 3
#define RA_SEQ_CHUNK (64u << 10)	/* bytes per umlmem_read of the sequential pass */

static const char *ra_side(unsigned flags)
{
	return flags & UMLMEM_NO_READAHEAD ? "without readahead" : "with readahead";
}

struct ra_seq_out {
	double secs;
	uint64_t swap_ins, faults, ra_pages, ra_hits;
};

/*
 * One repetition of one side of readahead_seq: a fresh host with @flags
 * (so a fresh swap file, which only this guest's write-out lays out), the
 * guest of @bytes written in order, all of it reclaimed, then one timed pass
 * that reads its first @read bytes in order, RA_SEQ_CHUNK bytes per call.
 * The first and last word of every page are checked: that catches a page
 * read into the wrong place, and costs too little to weigh on either side.
 */
static int ra_seq_once(struct bench *b, struct result *r, unsigned flags, uint64_t bytes,
		       uint64_t read, struct ra_seq_out *o)
{
	struct umlmem_host_info i0, i1;
	struct umlmem_stats s0, s1;
	umlmem_host *h;
	umlmem_guest *g;
	uint64_t *buf = NULL, off, n, p, page, evicted;
	double t0;
	int rc;

	memset(o, 0, sizeof(*o));
	memset(&i0, 0, sizeof(i0));
	memset(&i1, 0, sizeof(i1));
	rc = make_host(b, r, b->budget, bytes, flags, "bench-readahead-seq", &h, &g);
	if (rc)
		return rc;
	buf = aligned_alloc(PAGE, RA_SEQ_CHUNK);
	if (!buf) {
		res_fail(r, RS_ERROR, "out of memory for the read buffer");
		rc = -ENOMEM;
		goto out;
	}
	rc = fill_guest(r, g, bytes, 0, NULL);
	if (rc)
		goto out;
	rc = umlmem_reclaim(h, UINT64_MAX, &evicted);
	if (rc) {
		lib_fail(r, rc, "umlmem_reclaim");
		goto out;
	}
	umlmem_guest_stats(g, &s0);
	if (s0.resident_pages) {
		/* the pass would start with part of the guest already in */
		res_fail(r, RS_ERROR, "%" PRIu64 " pages stayed resident after reclaiming "
			 "everything (%s)", s0.resident_pages, ra_side(flags));
		rc = -EAGAIN;
		goto out;
	}
	umlmem_host_info(h, &i0, sizeof(i0));
	t0 = now_s();
	for (off = 0; off < read; off += n) {
		n = read - off < RA_SEQ_CHUNK ? read - off : RA_SEQ_CHUNK;
		rc = umlmem_read(g, off, buf, n);
		if (rc) {
			lib_fail(r, rc, "umlmem_read of the sequential pass");
			goto out;
		}
		for (p = 0; p < n / PAGE; p++) {
			page = off / PAGE + p;
			if (buf[p * WORDS] != word_of(page, 0) ||
			    buf[p * WORDS + WORDS - 1] != word_of(page, WORDS - 1)) {
				res_fail(r, RS_ERROR, "page %" PRIu64 " read back with the wrong "
					 "content (%s)", page, ra_side(flags));
				rc = -EUCLEAN;
				goto out;
			}
		}
	}
	o->secs = now_s() - t0;
	umlmem_guest_stats(g, &s1);
	umlmem_host_info(h, &i1, sizeof(i1));
	o->swap_ins = s1.swap_ins - s0.swap_ins;
	o->faults = s1.faults - s0.faults;
	o->ra_pages = i1.readahead_pages - i0.readahead_pages;
	o->ra_hits = i1.readahead_hits - i0.readahead_hits;
out:
	free(buf);
	umlmem_host_destroy(h);	/* destroys the guest too */
	return rc;
}

static void rates_append(char *s, size_t len, double rate)
{
	size_t used = strlen(s);

	if (used < len)
		snprintf(s + used, len - used, "%s%.0f", used ? " " : "", rate);
}

static void bench_ra_seq(struct bench *b)
{
	struct result *r = &b->r[K_RA_SEQ];
	/* Half the guest: twice the budget, so that the pass fills the
	   budget and then runs as long again evicting what it read, as a
	   longer pass would; the rest would only lengthen the side without
	   readahead, 4 KiB per fault, by seconds per repetition. */
	uint64_t bytes = 4 * b->budget, npages = bytes / PAGE, read = 2 * b->budget;
	uint64_t rpages = read / PAGE;
	struct ra_seq_out o, on = { 0 }, off = { 0 };
	double rate, best_on = 0, best_off = 0;
	char rates_on[96] = "", rates_off[96] = "", b1[32], b2[32], b3[32];
	unsigned flags;
	int rep, k;

	if (!b->want[K_RA_SEQ])
		return;
	progress("readahead_seq: guest of %s on a budget of %s, all in swap, its first %s "
		 "read in order with and without readahead, %d times each, alternating",
		 fmt_bytes(b1, sizeof(b1), bytes), fmt_bytes(b2, sizeof(b2), b->budget),
		 fmt_bytes(b3, sizeof(b3), read), RA_SEQ_REPS);
	for (rep = 0; rep < RA_SEQ_REPS; rep++) {
		for (k = 0; k < 2; k++) {
			/* on, off / off, on / ...: neither side always runs right
			   after the other's write-out, while the disk may still be
			   settling from it */
			flags = (rep + k) & 1 ? UMLMEM_NO_READAHEAD : 0;
			if (ra_seq_once(b, r, flags, bytes, read, &o))
				return;
			rate = o.secs > 0 ? (double)o.swap_ins / o.secs : 0;
			progress("readahead_seq: rep %d: %s %.0f pages/s", rep + 1,
				 ra_side(flags), rate);
			if (flags) {
				rates_append(rates_off, sizeof(rates_off), rate);
				if (rate > best_off) {
					best_off = rate;
					off = o;
				}
			} else {
				rates_append(rates_on, sizeof(rates_on), rate);
				if (rate > best_on) {
					best_on = rate;
					on = o;
				}
			}
		}
	}
	res_set(r, best_on, best_off, "pages/s", false);
	res_int(r, "pages", (int64_t)npages);
	res_int(r, "budget_pages", (int64_t)(b->budget / PAGE));
	res_int(r, "read_pages", (int64_t)rpages);
	res_int(r, "call_bytes", RA_SEQ_CHUNK);
	res_int(r, "reps", RA_SEQ_REPS);
	res_num(r, "seconds", on.secs);
	res_int(r, "swap_ins", (int64_t)on.swap_ins);
	res_int(r, "readahead_pages", (int64_t)on.ra_pages);
	res_int(r, "readahead_hits", (int64_t)on.ra_hits);
	res_num(r, "MiB_per_s", best_on * PAGE / (1024.0 * 1024.0));
	res_str(r, "rates", "%s", rates_on);
	res_num(r, "baseline_seconds", off.secs);
	res_int(r, "baseline_swap_ins", (int64_t)off.swap_ins);
	res_int(r, "baseline_readahead_pages", (int64_t)off.ra_pages);
	res_int(r, "baseline_readahead_hits", (int64_t)off.ra_hits);
	res_num(r, "baseline_MiB_per_s", best_off * PAGE / (1024.0 * 1024.0));
	res_str(r, "baseline_rates", "%s", rates_off);
	res_str(r, "engine", "%s", engine_name(b->engine));
	res_str(r, "baseline_mode", "the same pass on a host with UMLMEM_NO_READAHEAD, fresh "
		"host each repetition, best of %d", RA_SEQ_REPS);
	if (on.swap_ins != rpages || off.swap_ins != rpages)
		res_note(r, "the passes paged in %" PRIu64 " and %" PRIu64 " pages, not the %"
			 PRIu64 " they read", on.swap_ins, off.swap_ins, rpages);
	if (!on.ra_hits)
		res_note(r, "no fault found its page read ahead: readahead never engaged");
	if (r->ratio < 1.0)
		res_note(r, "readahead loses on sequential access: it should not be kept");
	else if (r->ratio < 1.1)
		res_note(r, "readahead wins by less than 10%% on sequential access: within "
			 "what the disk's speed varies; compare several runs");
}

/* Slices per side: short ones, so that the two sides take turns often
   enough to share the load of a busy machine alike. */
#define RA_RAND_SLICES 32
#define RA_RAND_SLICES_QUICK 16

/* readahead_random's two sides: the same workload, one host flag apart. */
struct ra_side_host {
	unsigned flags;
	umlmem_host *h;
	umlmem_guest *g;
	struct phase_out out;
};

static void bench_ra_random(struct bench *b)
{
	struct result *r = &b->r[K_RA_RAND];
	uint64_t ws = 4 * b->budget, npages = ws / PAGE;
	struct ra_side_host side[2] = { { .flags = 0 }, { .flags = UMLMEM_NO_READAHEAD } };
	unsigned rounds = b->quick ? RA_RAND_SLICES_QUICK : RA_RAND_SLICES, i, j, k;
	double slice = b->seconds / rounds, value, base;
	struct umlmem_stats st;
	struct phase *ph = NULL;
	struct phase_out *on = &side[0].out, *off = &side[1].out;
	char b1[32], b2[32];

	if (!b->want[K_RA_RAND])
		return;
	ph = calloc(1, sizeof(*ph));
	if (!ph) {
		res_fail(r, RS_ERROR, "out of memory");
		return;
	}
	pthread_mutex_init(&ph->lock, NULL);
	pthread_cond_init(&ph->cond, NULL);
	progress("readahead_random: two guests of %s, each on its own budget of %s, one host "
		 "with readahead and one without, filling them", fmt_bytes(b1, sizeof(b1), ws),
		 fmt_bytes(b2, sizeof(b2), b->budget));
	for (k = 0; k < 2; k++) {
		if (make_host(b, r, b->budget, ws, side[k].flags, "bench-readahead-random",
			      &side[k].h, &side[k].g))
			goto out;
		if (fill_guest(r, side[k].g, ws, 0, "readahead_random fill"))
			goto out;
	}
	umlmem_guest_stats(side[0].g, &st);
	progress("readahead_random: %" PRIu64 " pages resident, %" PRIu64 " in swap on each; "
		 "1 thread, %.1f s each in alternating slices, after %.1f s warm-up each",
		 st.resident_pages, st.swapped_pages, b->seconds, b->warm);
	ph->npages = npages;
	for (i = 0; i < rounds; i++) {
		for (j = 0; j < 2; j++) {
			/* on, off / off, on / ...: a drift in load or disk speed
			   during the run cancels out instead of favouring the side
			   that always goes second */
			k = (i + j) & 1;
			ph->h = side[k].h;
			ph->g = side[k].g;
			ph->raw = NULL;
			/* the same seed on both sides: the same pages, in the same
			   order, so that the one difference is the flag */
			if (run_slice(r, ph, 1, 4 * i + 1, i ? 0 : b->warm, slice, &side[k].out))
				goto out;
		}
	}
	value = on->secs > 0 ? (double)on->swap_ins / on->secs : 0;
	base = off->secs > 0 ? (double)off->swap_ins / off->secs : 0;
	res_set(r, value, base, "faults/s", false);
	res_int(r, "threads", 1);
	res_int(r, "pages", (int64_t)npages);
	res_int(r, "budget_pages", (int64_t)(b->budget / PAGE));
	res_int(r, "slices", rounds);
	res_num(r, "seconds", on->secs);
	res_int(r, "reads", (int64_t)on->ops);
	res_int(r, "swap_ins", (int64_t)on->swap_ins);
	res_int(r, "readahead_pages", (int64_t)on->ra_pages);
	res_int(r, "readahead_hits", (int64_t)on->ra_hits);
	res_num(r, "hit_fraction", on->ops ? 1.0 - (double)on->swap_ins / (double)on->ops : NAN);
	res_num(r, "baseline_seconds", off->secs);
	res_int(r, "baseline_reads", (int64_t)off->ops);
	res_int(r, "baseline_swap_ins", (int64_t)off->swap_ins);
	res_int(r, "baseline_readahead_pages", (int64_t)off->ra_pages);
	res_int(r, "baseline_readahead_hits", (int64_t)off->ra_hits);
	res_num(r, "baseline_hit_fraction", off->ops ? 1.0 - (double)off->swap_ins /
		(double)off->ops : NAN);
	res_str(r, "engine", "%s", engine_name(b->engine));
	res_str(r, "baseline_mode", "the same reads (same seeds) on a host with "
		"UMLMEM_NO_READAHEAD, in alternating slices");
	if (off->ra_pages || off->ra_hits)
		res_note(r, "the host without readahead read ahead: UMLMEM_NO_READAHEAD was "
			 "not honoured");
	if (r->ratio < 0.95)
		res_note(r, "readahead costs random access %.0f%%: more than the 5%% that "
			 "alternating slices leave as noise", 100.0 * (1.0 - r->ratio));
	else if (r->ratio <= 1.05)
		res_note(r, "within 5%%: readahead does not lose on random access");
out:
	for (k = 0; k < 2; k++)
		umlmem_host_destroy(side[k].h);	/* destroys the guest too */
	pthread_mutex_destroy(&ph->lock);
	pthread_cond_destroy(&ph->cond);
	free(ph);
}

/* ------------------------------------------------------------------------ */
/* Undoing changes to the system, whatever ends the run                     */
/* ------------------------------------------------------------------------ */

/*
 * kernel_swap_random and dedup_vs_ksm change the machine outside the
 * process (a swap file, a cgroup, KSM's settings). That must be undone at
 * exit, on SIGINT, SIGTERM and SIGHUP as well as on the normal path: each
 * figure's cleanup runs from all three, does only system calls (so that it
 * may run in a signal handler), and does nothing unless its own figure set
 * something up in this very process.
 */
static void kernel_cleanup(void);
static void ksm_cleanup(void);

static const int cleanup_signals[3] = { SIGINT, SIGTERM, SIGHUP };
static struct sigaction cleanup_old[3];
static bool cleanup_on;

static void bench_cleanup(void)
{
	kernel_cleanup();
	ksm_cleanup();
}

static void bench_signal(int sig)
{
	bench_cleanup();
	signal(sig, SIG_DFL);
	raise(sig);
}

static void cleanup_handlers(bool on)
{
	struct sigaction sa;
	static bool atexit_done;
	int i;

	if (on && !cleanup_on) {
		if (!atexit_done && atexit(bench_cleanup) == 0)
			atexit_done = true;
		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = bench_signal;
		sigemptyset(&sa.sa_mask);
		for (i = 0; i < 3; i++)
			sigaction(cleanup_signals[i], &sa, &cleanup_old[i]);
		cleanup_on = true;
	} else if (!on && cleanup_on) {
		for (i = 0; i < 3; i++)
			sigaction(cleanup_signals[i], &cleanup_old[i], NULL);
		cleanup_on = false;
	}
}

/* ------------------------------------------------------------------------ */
/* kernel_swap_random                                                       */
/* ------------------------------------------------------------------------ */

/*
 * What the kernel figure set up, for the cleanup that must run whatever
 * happens. Only the process that set it up (owner) undoes it: a forked
 * child inherits this and the handlers, and must not turn the swap off
 * under its parent.
 */
static struct {
	pid_t owner;
	pid_t child;
	bool swap_file;		/* created */
	bool swap_on;
	bool cgroup;		/* created */
	char swap_path[PATH_MAX];
	char cg_path[PATH_MAX];
	int swapoff_err, rmdir_err;	/* errno of the last failed attempt */
} kst;

/* Only system calls: it also runs from a signal handler. */
static void kernel_cleanup(void)
{
	sigset_t all, old;
	struct timespec ms = { 0, 10 * 1000 * 1000 };
	int i;

	if (kst.owner != getpid())
		return;
	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, &old);
	if (kst.child > 0) {
		kill(kst.child, SIGKILL);
		while (waitpid(kst.child, NULL, 0) < 0 && errno == EINTR)
			;
		kst.child = 0;
	}
	if (kst.swap_on) {
		if (swapoff(kst.swap_path) == 0 || errno == EINVAL)
			kst.swap_on = false;
		else
			kst.swapoff_err = errno;
	}
	if (kst.swap_file && !kst.swap_on) {
		unlink(kst.swap_path);
		kst.swap_file = false;
	}
	if (kst.cgroup) {
		/* the memory controller may still be releasing the child's
		   charges for a moment after it was reaped */
		for (i = 0; i < 200; i++) {
			if (rmdir(kst.cg_path) == 0 || errno == ENOENT) {
				kst.cgroup = false;
				break;
			}
			kst.rmdir_err = errno;
			if (errno != EBUSY)
				break;
			nanosleep(&ms, NULL);
		}
	}
	sigprocmask(SIG_SETMASK, &old, NULL);
}


/* Runs a program with its output discarded; returns its exit status, or
   -errno when it could not be started. */
static int run_quiet(char *const argv[])
{
	posix_spawn_file_actions_t fa;
	int st, rc;
	pid_t pid;

	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
	rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (rc)
		return -rc;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -errno;
	if (WIFEXITED(st))
		return WEXITSTATUS(st);
	return 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

/* Writes zeros over the whole file: some filesystems refuse to swap on
   fallocated (unwritten) extents. */
static int zero_file(int fd, uint64_t bytes)
{
	static const char zeros[1 << 16];
	uint64_t done = 0;
	ssize_t n;

	while (done < bytes) {
		size_t len = bytes - done < sizeof(zeros) ? (size_t)(bytes - done) : sizeof(zeros);

		n = pwrite(fd, zeros, len, (off_t)done);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		done += (uint64_t)n;
	}
	return fsync(fd) ? -errno : 0;
}

static int swap_prepare(struct result *r, const char *dir, uint64_t bytes, bool zero,
			bool *others)
{
	char *mk[] = { "mkswap", kst.swap_path, NULL };
	char line[512];
	FILE *f;
	int fd, rc, lines = 0;

	*others = false;
	f = fopen("/proc/swaps", "re");
	if (f) {
		while (fgets(line, sizeof(line), f))
			lines++;
		fclose(f);
		*others = lines > 1;
	}
	snprintf(kst.swap_path, sizeof(kst.swap_path), "%s/umlmem-bench-%d.swap", dir,
		 (int)getpid());
	fd = open(kst.swap_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		res_fail(r, RS_SKIP, "cannot create the swap file %s: %s", kst.swap_path,
			 strerror(errno));
		return -1;
	}
	kst.swap_file = true;
	fchmod(fd, 0600);
	rc = zero ? -EOPNOTSUPP : (fallocate(fd, 0, 0, (off_t)bytes) ? -errno : 0);
	if (rc == -EOPNOTSUPP)
		rc = zero_file(fd, bytes);
	close(fd);
	if (rc) {
		res_fail(r, RS_SKIP, "cannot size the swap file %s: %s", kst.swap_path,
			 strerror(-rc));
		return -1;
	}
	rc = run_quiet(mk);
	if (rc) {
		res_fail(r, RS_SKIP, "mkswap %s: %s", kst.swap_path,
			 rc < 0 ? strerror(-rc) : "failed");
		return -1;
	}
	/* the highest priority, so our pages go here even with other swap on */
	if (swapon(kst.swap_path, SWAP_FLAG_PREFER | (SWAP_FLAG_PRIO_MASK & 32767))) {
		rc = -errno;
		if (!zero && rc == -EINVAL)
			return 1;	/* try again with a written file */
		res_fail(r, RS_SKIP, "swapon %s: %s", kst.swap_path, strerror(-rc));
		return -1;
	}
	kst.swap_on = true;
	return 0;
}

/* The caller's own v1 memory cgroup, relative to the hierarchy root. */
static bool own_v1_memcg(char *out, size_t len)
{
	char line[PATH_MAX + 64], *c1, *c2, *ctl;
	FILE *f = fopen("/proc/self/cgroup", "re");
	bool found = false;

	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = '\0';
		c1 = strchr(line, ':');
		c2 = c1 ? strchr(c1 + 1, ':') : NULL;
		if (!c2)
			continue;
		*c2 = '\0';
		for (ctl = strtok(c1 + 1, ","); ctl; ctl = strtok(NULL, ","))
			if (!strcmp(ctl, "memory")) {
				snprintf(out, len, "%s", strcmp(c2 + 1, "/") ? c2 + 1 : "");
				found = true;
				break;
			}
	}
	fclose(f);
	return found;
}

/*
 * Makes the memory cgroup with the limit. Returns 0, or -1 after recording
 * why it cannot be done here. @desc gets a description for the output.
 */
static int cgroup_prepare(struct result *r, uint64_t limit, char *desc, size_t desclen)
{
	char val[64], path[PATH_MAX + 64], own[PATH_MAX - 64], line[256];
	bool v2 = false;
	int rc;

	if (read_line("/sys/fs/cgroup/cgroup.controllers", line, sizeof(line))) {
		for (char *t = strtok(line, " "); t; t = strtok(NULL, " "))
			if (!strcmp(t, "memory"))
				v2 = true;
	}
	snprintf(val, sizeof(val), "%" PRIu64, limit);
	if (v2) {
		/* the root's children may only use what the root delegates */
		if (read_line("/sys/fs/cgroup/cgroup.subtree_control", line, sizeof(line)) &&
		    !strstr(line, "memory"))
			write_file("/sys/fs/cgroup/cgroup.subtree_control", "+memory");
		snprintf(kst.cg_path, sizeof(kst.cg_path), "/sys/fs/cgroup/umlmem-bench-%d",
			 (int)getpid());
		if (mkdir(kst.cg_path, 0755)) {
			res_fail(r, RS_SKIP, "cannot create cgroup %s: %s", kst.cg_path,
				 strerror(errno));
			return -1;
		}
		kst.cgroup = true;
		snprintf(path, sizeof(path), "%s/memory.max", kst.cg_path);
		rc = write_file(path, val);
		if (rc) {
			res_fail(r, RS_SKIP, "cannot write %s: %s", path, strerror(-rc));
			return -1;
		}
		snprintf(path, sizeof(path), "%s/memory.swap.max", kst.cg_path);
		if (access(path, F_OK) == 0)
			write_file(path, "max");
		snprintf(desc, desclen, "v2 %s memory.max=%s", kst.cg_path, val);
		return 0;
	}

	if (access("/sys/fs/cgroup/memory/memory.limit_in_bytes", F_OK)) {
		res_fail(r, RS_SKIP, "no memory cgroup controller (neither v2 with memory in "
			 "/sys/fs/cgroup/cgroup.controllers nor v1 /sys/fs/cgroup/memory)");
		return -1;
	}
	/* below our own cgroup first, so the child stays within our limits */
	if (!own_v1_memcg(own, sizeof(own)))
		own[0] = '\0';
	snprintf(kst.cg_path, sizeof(kst.cg_path), "/sys/fs/cgroup/memory%s/umlmem-bench-%d",
		 own, (int)getpid());
	if (mkdir(kst.cg_path, 0755) && own[0]) {
		snprintf(kst.cg_path, sizeof(kst.cg_path), "/sys/fs/cgroup/memory/umlmem-bench-%d",
			 (int)getpid());
		if (mkdir(kst.cg_path, 0755)) {
			res_fail(r, RS_SKIP, "cannot create a v1 memory cgroup: %s", strerror(errno));
			return -1;
		}
	} else if (access(kst.cg_path, F_OK)) {
		res_fail(r, RS_SKIP, "cannot create cgroup %s: %s", kst.cg_path, strerror(errno));
		return -1;
	}
	kst.cgroup = true;
	snprintf(path, sizeof(path), "%s/memory.limit_in_bytes", kst.cg_path);
	rc = write_file(path, val);
	if (rc) {
		res_fail(r, RS_SKIP, "cannot write %s: %s", path, strerror(-rc));
		return -1;
	}
	snprintf(path, sizeof(path), "%s/memory.swappiness", kst.cg_path);
	write_file(path, "60");
	snprintf(path, sizeof(path), "%s/memory.memsw.limit_in_bytes", kst.cg_path);
	if (access(path, F_OK) == 0)
		write_file(path, "-1");
	snprintf(desc, desclen, "v1 %s memory.limit_in_bytes=%s swappiness=60", kst.cg_path, val);
	return 0;
}

struct child_report {
	int err;		/* 0, or an errno of the child */
	char msg[160];
	uint64_t majflt, minflt, reads, pswpin, mismatches;
	double secs;
};

static uint64_t vmstat_pswpin(void)
{
	char line[128];
	unsigned long long v = 0;
	FILE *f = fopen("/proc/vmstat", "re");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "pswpin %llu", &v) == 1)
			break;
	fclose(f);
	return v;
}

/* The child: waits until it is in the cgroup, then does the workload. */
static void __attribute__((noreturn))
kernel_child(int go_fd, int out_fd, uint64_t ws, double warm, double secs)
{
	struct child_report rep;
	struct rusage ru0, ru1;
	uint64_t npages = ws / PAGE, *mem, rng = 0xabcdefu, page, word, v, acc = 0;
	double t0, t_end;
	char c;
	int i;

	for (i = 0; i < 3; i++)
		signal(cleanup_signals[i], SIG_DFL);
	/* a parent killed outright cannot clean up; at least do not outlive it */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	memset(&rep, 0, sizeof(rep));
	if (read(go_fd, &c, 1) != 1)
		_exit(1);
	close(go_fd);

	mem = mmap(NULL, ws, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED) {
		rep.err = errno;
		snprintf(rep.msg, sizeof(rep.msg), "mmap of %" PRIu64 " bytes", ws);
		goto report;
	}
	madvise(mem, ws, MADV_NOHUGEPAGE);
	fill_pages(mem, 0, npages, 0);

	t_end = now_s() + warm;
	while (now_s() < t_end) {
		page = rng_below(&rng, npages);
		acc += mem[page * WORDS + rng_below(&rng, WORDS)];
	}
	rep.pswpin = vmstat_pswpin();
	getrusage(RUSAGE_SELF, &ru0);
	t0 = now_s();
	t_end = t0 + secs;
	for (;;) {
		page = rng_below(&rng, npages);
		word = rng_below(&rng, WORDS);
		v = ((volatile uint64_t *)mem)[page * WORDS + word];
		if (v != word_of(page, word))
			rep.mismatches++;
		acc += v;
		rep.reads++;
		if (now_s() >= t_end)
			break;
	}
	rep.secs = now_s() - t0;
	getrusage(RUSAGE_SELF, &ru1);
	rep.pswpin = vmstat_pswpin() - rep.pswpin;
	rep.majflt = (uint64_t)(ru1.ru_majflt - ru0.ru_majflt);
	rep.minflt = (uint64_t)(ru1.ru_minflt - ru0.ru_minflt);
	sink = acc;
report:
	if (write(out_fd, &rep, sizeof(rep)) != (ssize_t)sizeof(rep))
		_exit(1);
	_exit(0);
}

static void bench_kernel(struct bench *b)
{
	struct result *r = &b->r[K_KERNEL];
	uint64_t ws = 4 * b->budget, swap_bytes;
	struct child_report rep;
	char cgdesc[PATH_MAX + 128] = "", path[PATH_MAX + 64], line[64], b1[32], b2[32];
	const char *dir = b->swap_dir;
	int go[2] = { -1, -1 }, res[2] = { -1, -1 }, st, rc;
	bool others = false;
	struct pollfd pfd;
	ssize_t n;
	pid_t pid;

	if (!b->want[K_KERNEL])
		return;
	if (!dir) {
		dir = getenv("TMPDIR");
		if (!dir || !*dir)
			dir = "/var/tmp";
	}
	if (geteuid() != 0) {
		res_fail(r, RS_SKIP, "needs root (swapon and a memory cgroup)");
		return;
	}
	memset(&kst, 0, sizeof(kst));
	kst.owner = getpid();
	cleanup_handlers(true);

	/* at least the working set and a quarter, in whole MiB */
	swap_bytes = ((ws + ws / 4) + (1u << 20) - 1) / (1u << 20) * (1u << 20);
	progress("kernel_swap_random: swap file of %s in %s, memory cgroup of %s",
		 fmt_bytes(b1, sizeof(b1), swap_bytes), dir, fmt_bytes(b2, sizeof(b2), b->budget));
	rc = swap_prepare(r, dir, swap_bytes, false, &others);
	if (rc > 0) {
		unlink(kst.swap_path);
		kst.swap_file = false;
		rc = swap_prepare(r, dir, swap_bytes, true, &others);
	}
	if (rc)
		goto out;
	if (cgroup_prepare(r, b->budget, cgdesc, sizeof(cgdesc)))
		goto out;

	if (pipe2(go, O_CLOEXEC) || pipe2(res, O_CLOEXEC)) {
		res_fail(r, RS_ERROR, "pipe: %s", strerror(errno));
		goto out;
	}
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		res_fail(r, RS_ERROR, "fork: %s", strerror(errno));
		goto out;
	}
	if (pid == 0) {
		close(go[1]);
		close(res[0]);
		kernel_child(go[0], res[1], ws, b->warm, b->seconds);
	}
	kst.child = pid;
	close(go[0]);
	close(res[1]);
	go[0] = res[1] = -1;

	/* into the cgroup before it allocates anything */
	snprintf(path, sizeof(path), "%s/cgroup.procs", kst.cg_path);
	snprintf(line, sizeof(line), "%d", (int)pid);
	rc = write_file(path, line);
	if (rc) {
		res_fail(r, RS_SKIP, "cannot move the child into %s: %s", kst.cg_path,
			 strerror(-rc));
		goto out;
	}
	if (write(go[1], "g", 1) != 1) {
		res_fail(r, RS_ERROR, "cannot start the child: %s", strerror(errno));
		goto out;
	}
	progress("kernel_swap_random: child filling %s under the cgroup limit, then %.1f s "
		 "+ %.1f s warm-up of random reads", fmt_bytes(b1, sizeof(b1), ws), b->seconds,
		 b->warm);

	pfd.fd = res[0];
	pfd.events = POLLIN;
	rc = poll(&pfd, 1, (int)((b->warm + b->seconds) * 1000) + 600 * 1000);
	if (rc <= 0) {
		res_fail(r, RS_ERROR, "the child did not report within %.0f s",
			 b->warm + b->seconds + 600);
		goto out;
	}
	n = read(res[0], &rep, sizeof(rep));
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	kst.child = 0;
	if (n != (ssize_t)sizeof(rep)) {
		if (WIFSIGNALED(st))
			res_fail(r, RS_ERROR, "the child was killed by signal %d%s", WTERMSIG(st),
				 WTERMSIG(st) == SIGKILL ? " (out of memory in the cgroup?)" : "");
		else
			res_fail(r, RS_ERROR, "the child exited with status %d without a report",
				 WIFEXITED(st) ? WEXITSTATUS(st) : -1);
		goto out;
	}
	if (rep.err) {
		res_fail(r, RS_ERROR, "child: %s: %s", rep.msg, strerror(rep.err));
		goto out;
	}
	if (rep.mismatches) {
		res_fail(r, RS_ERROR, "child read %" PRIu64 " wrong values from its own memory",
			 rep.mismatches);
		goto out;
	}
	{
		double kval = rep.secs > 0 ? (double)rep.majflt / rep.secs : 0;
		struct result *t1 = &b->r[K_T1];
		double uval = t1->state == RS_OK ? t1->value : NAN;

		r->state = RS_OK;
		r->value = kval;
		r->baseline = uval;
		r->unit = "faults/s";
		r->ratio = kval > 0 ? uval / kval : NAN;
		res_int(r, "threads", 1);
		res_int(r, "pages", (int64_t)(ws / PAGE));
		res_int(r, "budget_pages", (int64_t)(b->budget / PAGE));
		res_num(r, "seconds", rep.secs);
		res_int(r, "reads", (int64_t)rep.reads);
		res_int(r, "major_faults", (int64_t)rep.majflt);
		res_int(r, "minor_faults", (int64_t)rep.minflt);
		res_num(r, "hit_fraction", rep.reads ? 1.0 - (double)rep.majflt / (double)rep.reads
						     : NAN);
		res_num(r, "pages_read_per_s", rep.secs > 0 ? (double)rep.pswpin / rep.secs : 0);
		res_int(r, "swap_file_bytes", (int64_t)swap_bytes);
		res_str(r, "cgroup", "%s", cgdesc);
		if (read_line("/proc/sys/vm/page-cluster", line, sizeof(line)))
			res_str(r, "page_cluster", "%s", line);
		res_note(r, "value: kernel major faults/s; baseline: umlmem pagein_random_t1 of this "
			 "run; ratio umlmem/kernel");
		if (t1->state != RS_OK)
			res_note(r, "no umlmem figure to compare: pagein_random_t1 did not run");
		if (others)
			res_note(r, "other swap devices are active; ours had the highest priority");
		if (rep.pswpin > rep.majflt + rep.majflt / 10)
			res_note(r, "the kernel read %.2f pages per major fault (swap readahead)",
				 rep.majflt ? (double)rep.pswpin / (double)rep.majflt : 0.0);
		if (!rep.majflt)
			res_note(r, "no major faults: the working set did not leave memory");
	}
out:
	if (go[0] >= 0)
		close(go[0]);
	if (go[1] >= 0)
		close(go[1]);
	if (res[0] >= 0)
		close(res[0]);
	if (res[1] >= 0)
		close(res[1]);
	kernel_cleanup();
	if (kst.swap_on)
		fprintf(stderr, "%s: WARNING: could not swapoff %s: %s; run `swapoff %s` "
			"and remove it\n", BENCH_PROG, kst.swap_path, strerror(kst.swapoff_err),
			kst.swap_path);
	if (kst.cgroup)
		fprintf(stderr, "%s: warning: could not remove cgroup %s: %s\n", BENCH_PROG,
			kst.cg_path, strerror(kst.rmdir_err));
	cleanup_handlers(false);
}

/* ------------------------------------------------------------------------ */
/* dedup_scan_rate, dedup_vs_ksm                                            */
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

		fill_pages(buf + i * WORDS, p < shared ? p : g * npages + p, 1, 0);
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
		lib_fail(r, rc, "creating the host");
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
			lib_fail(r, rc, "creating a guest");
			goto out;
		}
		for (p = 0; p < npages; p += n) {
			n = npages - p < FILL_PAGES ? npages - p : FILL_PAGES;
			dd_fill(buf, g, p, n, npages, shared);
			rc = umlmem_write(gs[g], p * PAGE, buf, n * PAGE);
			if (rc) {
				lib_fail(r, rc, "writing a guest");
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

static void bench_dedup_rate(struct bench *b)
{
	struct result *r = &b->r[K_DD_RATE];
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

	if (!b->want[K_DD_RATE])
		return;
	progress("dedup_scan_rate: %u guests of %s, no two pages equal; %d full passes of the "
		 "scanner against xxh3 of the same pages, alternating", nguests,
		 fmt_bytes(b1, sizeof(b1), DD_GUEST_BYTES), reps);
	if (dd_host(b, r, nguests, npages, 0, &h, gs))
		goto out;
	buf = map_pages(total * PAGE);
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
			lib_fail(r, rc, "umlmem_dedup_scan");
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
		rates_append(rates_u, sizeof(rates_u), rate);
		progress("dedup_scan_rate: pass %d: scanner %.0f pages/cpu-s", rep + 1, rate);
		if (rate > best_u) {
			best_u = rate;
			cpu_u = cpu;
			best_i0 = i0;
			best_i1 = i1;
		}

		cpu = cpu_now_s();
		sink += hash_pages(buf, total);
		cpu = cpu_now_s() - cpu;
		rate = cpu > 0 ? (double)total / cpu : 0;
		rates_append(rates_h, sizeof(rates_h), rate);
		progress("dedup_scan_rate: pass %d: xxh3 alone %.0f pages/cpu-s", rep + 1, rate);
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
	return write_file(path, val);
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
		if (read_line(path, comm, sizeof(comm)) && !strcmp(comm, "ksmd"))
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
	if (!read_line(path, line, sizeof(line)))
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
	cleanup_handlers(true);
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
		kss.map[g] = map_pages(bytes);
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

static void bench_dedup_ksm(struct bench *b)
{
	struct result *r = &b->r[K_DD_KSM];
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

	if (!b->want[K_DD_KSM])
		return;
	memset(&ko, 0, sizeof(ko));
	progress("dedup_vs_ksm: %u guests of %s, the first three quarters of each the same in "
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
			lib_fail(r, rc, "umlmem_dedup_scan");
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
	progress("dedup_vs_ksm: umlmem saved %" PRIu64 " pages in %.3f CPU-s (%.0f pages/cpu-s); "
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
		progress("dedup_vs_ksm: unmerging (run=2) and restoring KSM's settings");
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
		cleanup_handlers(false);
	}
out:
	umlmem_host_destroy(h);		/* destroys the guests too */
}

/* ------------------------------------------------------------------------ */
/* Output                                                                   */
/* ------------------------------------------------------------------------ */


static void json_num(FILE *f, double v)
{
	if (!isfinite(v))
		fputs("null", f);
	else if (v == floor(v) && fabs(v) < 1e15)
		fprintf(f, "%.0f", v);
	else
		fprintf(f, "%.3f", v);
}

static void json_result(FILE *f, const struct result *r)
{
	const struct field *x;

	fputc('{', f);
	if (r->state == RS_SKIP) {
		fputs("\"skipped\": true, \"reason\": ", f);
		json_string(f, r->reason);
	} else {
		fputs("\"value\": ", f);
		json_num(f, r->state == RS_OK ? r->value : NAN);
		fputs(", \"baseline\": ", f);
		json_num(f, r->state == RS_OK ? r->baseline : NAN);
		fputs(", \"ratio\": ", f);
		json_num(f, r->state == RS_OK ? r->ratio : NAN);
		fputs(", \"unit\": ", f);
		json_string(f, r->unit);
		if (r->state == RS_ERROR) {
			fputs(", \"error\": ", f);
			json_string(f, r->reason);
		}
	}
	for (unsigned i = 0; i < r->nf; i++) {
		x = &r->f[i];
		fputs(", ", f);
		json_string(f, x->name);
		fputs(": ", f);
		switch (x->kind) {
		case F_INT:  fprintf(f, "%" PRId64, x->i); break;
		case F_NUM:  json_num(f, x->num); break;
		case F_STR:  json_string(f, x->str); break;
		case F_BOOL: fputs(x->i ? "true" : "false", f); break;
		}
	}
	if (r->note[0]) {
		fputs(", \"note\": ", f);
		json_string(f, r->note);
	}
	fputc('}', f);
}

static void print_json(const struct bench *b, double wall)
{
	FILE *f = stdout;

	fprintf(f, "{\"quick\": %s, \"swap_dir\": ", b->quick ? "true" : "false");
	json_string(f, b->swap_dir ? b->swap_dir : (getenv("TMPDIR") && *getenv("TMPDIR") ?
						   getenv("TMPDIR") : "/var/tmp"));
	fputs(", \"engine\": ", f);
	json_string(f, b->have_engine ? engine_name(b->engine) : NULL);
	fputs(", \"engine_note\": ", f);
	json_string(f, b->have_engine ? b->engine_note : NULL);
	fprintf(f, ", \"engine_requested\": \"%s\"", engine_name(b->want_engine));
	fprintf(f, ", \"budget_bytes\": %" PRIu64 ", \"working_set_bytes\": %" PRIu64,
		b->budget, 4 * b->budget);
	fputs(", \"seconds\": ", f);
	json_num(f, b->seconds);
	fputs(", \"warmup_s\": ", f);
	json_num(f, b->warm);
	fprintf(f, ", \"cpus\": %ld", sysconf(_SC_NPROCESSORS_ONLN));
	fputs(", \"loadavg_start\": ", f);
	json_num(f, b->load_start);
	fputs(", \"loadavg_end\": ", f);
	json_num(f, b->load_end);
	for (int k = 0; k < NKEYS; k++) {
		if (b->r[k].state == RS_NONE)
			continue;
		fprintf(f, ",\n \"%s\": ", key_name[k]);
		json_result(f, &b->r[k]);
	}
	fprintf(f, ",\n \"wall_s\": %.3f}\n", wall);
}

static void print_text(const struct bench *b, double wall)
{
	FILE *f = stdout;
	char b1[32], b2[32];

	fprintf(f, "umlmem bench: budget %s, working set %s, %.1f s per timed phase "
		"(+%.1f s warm-up)%s\n", fmt_bytes(b1, sizeof(b1), b->budget),
		fmt_bytes(b2, sizeof(b2), 4 * b->budget), b->seconds, b->warm,
		b->quick ? ", quick" : "");
	fprintf(f, "engine %s%s%s%s, swap dir %s\n\n",
		b->have_engine ? engine_name(b->engine) : "(none started)",
		b->have_engine && b->engine_note[0] ? " (" : "",
		b->have_engine ? b->engine_note : "",
		b->have_engine && b->engine_note[0] ? ")" : "",
		b->swap_dir ? b->swap_dir : (getenv("TMPDIR") && *getenv("TMPDIR") ?
					     getenv("TMPDIR") : "/var/tmp"));
	fprintf(f, "%-20s %14s %14s %-9s %8s\n", "figure", "umlmem", "baseline", "unit",
		"ratio");
	for (int k = 0; k < NKEYS; k++) {
		const struct result *r = &b->r[k];

		if (r->state == RS_NONE)
			continue;
		if (r->state != RS_OK) {
			fprintf(f, "%-20s %s: %s\n", key_name[k],
				r->state == RS_SKIP ? "skipped" : "error", r->reason);
			continue;
		}
		fprintf(f, "%-20s %14.2f %14.2f %-9s %8.3f\n", key_name[k], r->value,
			r->baseline, r->unit, r->ratio);
		fputs("   ", f);
		for (unsigned i = 0; i < r->nf; i++) {
			const struct field *x = &r->f[i];

			switch (x->kind) {
			case F_INT:  fprintf(f, " %s=%" PRId64, x->name, x->i); break;
			case F_NUM:
				fprintf(f, fabs(x->num) >= 1000 ? " %s=%.0f" : " %s=%.3g", x->name,
					x->num);
				break;
			case F_STR:  fprintf(f, " %s=\"%s\"", x->name, x->str); break;
			case F_BOOL: fprintf(f, " %s=%s", x->name, x->i ? "true" : "false"); break;
			}
		}
		fputc('\n', f);
		if (r->note[0])
			fprintf(f, "    note: %s\n", r->note);
	}
	fprintf(f, "\nratio > 1 favours umlmem (value/baseline for rates, baseline/value for "
		"times); wall time %.1f s;\nload average %.2f at the start, %.2f at the end, "
		"on %ld CPUs\n", wall, b->load_start, b->load_end, sysconf(_SC_NPROCESSORS_ONLN));
}

/* ------------------------------------------------------------------------ */
/* Options                                                                  */
/* ------------------------------------------------------------------------ */

static void bench_usage(FILE *f)
{
	fprintf(f,
		"usage: umlmem bench [--json] [--quick] [--swap-dir DIR]\n"
		"                    [--engine auto|uring|aio|sync] [--only KEY,...]\n"
		"                    [--budget SIZE] [--seconds N]\n\n"
		"Measures the library's paging figures, each next to its baseline, in one\n"
		"run on one swap directory. ratio > 1 favours umlmem.\n\n"
		"figures (KEY):\n"
		"  pagein_random_t1    swap-ins/s, 1 thread, random pages of a 4x-budget guest;\n"
		"                      baseline: raw 4 KiB reads at queue depth 1, same engine\n"
		"  pagein_random_t8    the same with 8 threads on one guest; baseline: 8 threads\n"
		"                      of queue-depth-1 raw reads\n"
		"  pageout_seq         pages/s written by umlmem_reclaim; baseline: raw batch\n"
		"                      writes of 64 pages into a fresh file\n"
		"  hit_read_8b         ns per 8-byte umlmem_read of a resident page; baseline: memcpy\n"
		"  hit_read_4k         ns per 4 KiB umlmem_read of a resident page; baseline: memcpy\n"
		"  kernel_swap_random  the kernel's swap (root: swap file + memory cgroup) on the\n"
		"                      pagein_random_t1 workload; baseline: umlmem's figure\n"
		"  readahead_seq       pages/s paged in by reading a guest in swap in order;\n"
		"                      baseline: the same without readahead (UMLMEM_NO_READAHEAD)\n"
		"  readahead_random    the pagein_random_t1 workload with readahead; baseline: the\n"
		"                      same without it (ratio ~1: readahead must not lose)\n"
		"  dedup_scan_rate     pages/CPU-s the merge scanner visits where nothing merges;\n"
		"                      baseline: xxh3 (libxxhash) of the same pages alone\n"
		"  dedup_vs_ksm        pages saved per CPU-s of merging, 32 guests of 32 MiB;\n"
		"                      baseline: the kernel's KSM on the same content (root;\n"
		"                      its settings are restored afterwards)\n\n"
		"options:\n"
		"  --json              one JSON object on stdout (progress goes to stderr)\n"
		"  --quick             budget 32M, 2 s phases, dedup_vs_ksm on 8 guests of\n"
		"                      8 MiB: about 30 s in all\n"
		"  --swap-dir DIR      directory for every swap and baseline file\n"
		"                      (default: $TMPDIR, else /var/tmp)\n"
		"  --engine E          auto (default), uring, aio or sync\n"
		"  --only KEY,...      only these figures (kernel_swap_random also runs\n"
		"                      pagein_random_t1, its baseline)\n"
		"  --budget SIZE       host budget (default 256M; working set 4x)\n"
		"  --seconds N         length of each timed phase (default 8; quick 2)\n"
		"  -h, --help          this help\n\n"
		"SIZE is bytes, or a number with K, M, G (or KiB, MiB, GiB): powers of 1024.\n");
}

static void __attribute__((format(printf, 1, 2))) bench_usage_error(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", BENCH_PROG);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n(try `umlmem bench --help`)\n");
}

static bool bench_parse_size(const char *s, uint64_t *out)
{
	static const struct { const char *sfx; unsigned shift; } units[] = {
		{ "", 0 }, { "B", 0 }, { "K", 10 }, { "KiB", 10 }, { "M", 20 },
		{ "MiB", 20 }, { "G", 30 }, { "GiB", 30 }, { "T", 40 }, { "TiB", 40 },
	};
	unsigned long long v;
	char *end;

	if (!s || *s < '0' || *s > '9')
		return false;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s)
		return false;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcasecmp(end, units[i].sfx))
			continue;
		if (units[i].shift && v > (UINT64_MAX >> units[i].shift))
			return false;
		*out = (uint64_t)v << units[i].shift;
		return true;
	}
	return false;
}

static int parse_only(struct bench *b, const char *arg)
{
	char *dup = strdup(arg), *tok, *save = NULL;
	int k, rc = 0;

	if (!dup)
		return EXIT_USAGE;
	memset(b->want, 0, sizeof(b->want));
	for (tok = strtok_r(dup, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		for (k = 0; k < NKEYS; k++)
			if (!strcmp(tok, key_name[k]))
				break;
		if (k == NKEYS) {
			bench_usage_error("--only: unknown figure '%s' (one of pagein_random_t1, "
					  "pagein_random_t8, pageout_seq, hit_read_8b, hit_read_4k, "
					  "kernel_swap_random, readahead_seq, readahead_random, "
					  "dedup_scan_rate, dedup_vs_ksm, native_fault_zero, "
					  "native_fault_swap, native_seq_touch)", tok);
			rc = EXIT_USAGE;
			break;
		}
		b->want[k] = true;
	}
	free(dup);
	if (!rc) {
		for (k = 0; k < NKEYS && !b->want[k]; k++)
			;
		if (k == NKEYS) {
			bench_usage_error("--only: no figure named");
			rc = EXIT_USAGE;
		}
	}
	return rc;
}

/* Returns 0 to run, -1 after --help, or an exit status. */
static int bench_parse(struct bench *b, int argc, char **argv)
{
	const char *only = NULL, *budget = NULL, *seconds = NULL;
	struct stat sb;
	int i;

	for (i = 1; i < argc; i++) {
		const char *w = argv[i], *eq = strchr(w, '='), *val = NULL;
		size_t nl = eq ? (size_t)(eq - w) : strlen(w);
		bool takes;

#define IS(name) (nl == strlen(name) && !strncmp(w, name, nl))
		takes = IS("--swap-dir") || IS("--engine") || IS("--only") || IS("--budget") ||
			IS("--seconds");
		if (takes) {
			if (eq) {
				val = eq + 1;
			} else if (i + 1 < argc) {
				val = argv[++i];
			} else {
				bench_usage_error("option %.*s needs a value", (int)nl, w);
				return EXIT_USAGE;
			}
		} else if (eq && w[0] == '-') {
			bench_usage_error("option %.*s takes no value", (int)nl, w);
			return EXIT_USAGE;
		}
		if (IS("-h") || IS("--help")) {
			bench_usage(stdout);
			return -1;
		} else if (IS("--json")) {
			b->json = true;
		} else if (IS("--quick")) {
			b->quick = true;
		} else if (IS("--swap-dir")) {
			if (!*val) {
				bench_usage_error("--swap-dir: empty directory name");
				return EXIT_USAGE;
			}
			if (stat(val, &sb)) {
				bench_usage_error("--swap-dir '%s': %s", val, strerror(errno));
				return EXIT_USAGE;
			}
			if (!S_ISDIR(sb.st_mode)) {
				bench_usage_error("--swap-dir '%s': not a directory", val);
				return EXIT_USAGE;
			}
			b->swap_dir = val;
		} else if (IS("--engine")) {
			if (!strcmp(val, "auto"))
				b->want_engine = UMLMEM_IO_AUTO;
			else if (!strcmp(val, "uring") || !strcmp(val, "io_uring"))
				b->want_engine = UMLMEM_IO_URING;
			else if (!strcmp(val, "aio") || !strcmp(val, "libaio"))
				b->want_engine = UMLMEM_IO_AIO;
			else if (!strcmp(val, "sync"))
				b->want_engine = UMLMEM_IO_SYNC;
			else {
				bench_usage_error("--engine '%s': one of auto, uring, aio, sync", val);
				return EXIT_USAGE;
			}
		} else if (IS("--only")) {
			only = val;
		} else if (IS("--budget")) {
			budget = val;
		} else if (IS("--seconds")) {
			seconds = val;
		} else {
			bench_usage_error("%s '%s'", w[0] == '-' ? "unknown option" :
					  "unexpected argument", w);
			return EXIT_USAGE;
		}
#undef IS
	}

	b->budget = b->quick ? 32ull << 20 : 256ull << 20;
	b->seconds = b->quick ? 2.0 : 8.0;
	b->warm = b->quick ? 0.5 : 1.0;
	if (budget) {
		uint64_t v;

		if (!bench_parse_size(budget, &v) || v < 64 * PAGE || v > (UINT64_MAX >> 3)) {
			bench_usage_error("--budget '%s': expected a size of at least 256K "
					  "(bytes, or with K, M, G)", budget);
			return EXIT_USAGE;
		}
		/* whole reclaim batches, so the working set is whole pages too */
		b->budget = v / (64 * PAGE) * (64 * PAGE);
	}
	if (seconds) {
		char *end;
		double v;

		errno = 0;
		v = strtod(seconds, &end);
		if (errno || end == seconds || *end || !(v > 0) || v > 3600) {
			bench_usage_error("--seconds '%s': expected a number above 0, at most 3600",
					  seconds);
			return EXIT_USAGE;
		}
		b->seconds = v;
		if (b->warm > v / 2)
			b->warm = v / 2;
	}
	if (only) {
		int rc = parse_only(b, only);

		if (rc)
			return rc;
		/* umlmem's figure is the kernel figure's baseline */
		if (b->want[K_KERNEL])
			b->want[K_T1] = true;
	} else {
		for (int k = 0; k < NKEYS; k++)
			b->want[k] = true;
	}
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Native mode                                                              */
/* ------------------------------------------------------------------------ */

/*
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
 *   Best of 10 passes each (--quick 20 of a quarter of the size), alternating.
 */

/* Maps @g; a skip where native mode is unavailable here, else an error. */
static int native_map(struct result *r, umlmem_guest *g, void **base)
{
	int rc = umlmem_guest_map(g, base);

	if (rc == -EPERM || rc == -EOPNOTSUPP || rc == -ENOSYS)
		res_fail(r, RS_SKIP, "native mode unavailable: %s", umlmem_errmsg());
	else if (rc)
		lib_fail(r, rc, "umlmem_guest_map");
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

	if (make_host(b, r, (npages + npages / 4 + 64) * PAGE, npages * PAGE, 0, "native", &h, &g))
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

static void bench_native_zero(struct bench *b)
{
	struct result *r = &b->r[K_NV_ZERO];
	uint64_t npages = b->quick ? 4096 : 16384;
	unsigned reps = b->quick ? 3 : 5;
	double best_u = INFINITY, best_b = INFINITY, one = -1, one_max = -1, local = NAN, l;
	double one_local_min = 2, one_local_max = -1;
	const char *env = getenv("UMLMEM_NATIVE_THREADS");
	char *saved = env ? strdup(env) : NULL;

	if (!b->want[K_NV_ZERO])
		return;
	progress("native_fault_zero: %" PRIu64 " first touches, %u rounds", npages, reps);
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

static void bench_native_swap(struct bench *b)
{
	struct result *r = &b->r[K_NV_SWAP];
	uint64_t budget = (b->quick ? 8 : 32) << 20, npages = 4 * budget / PAGE;
	uint64_t touches = b->quick ? 2048 : 8192, *order = NULL, done = 0, ins = 0, raw_ops = 0;
	unsigned slices = 4;
	double tu = 0, tb = 0;
	struct umlmem_stats s0, s1;
	struct rawfile raw = { 0 };
	struct io_req req;
	umlmem_host *h = NULL;
	umlmem_guest *g = NULL;
	uint8_t *base;
	uint64_t rng = 0x5eed, ev;
	int rc;

	if (!b->want[K_NV_SWAP])
		return;
	progress("native_fault_swap: %" PRIu64 " swap-in touches of a %" PRIu64 " MiB guest",
		 touches, npages * PAGE >> 20);
	if (make_host(b, r, budget, npages * PAGE, UMLMEM_NO_READAHEAD, "native-swap", &h, &g))
		return;
	if (fill_guest(r, g, npages * PAGE, 0, "native_fault_swap"))
		goto out;
	rc = umlmem_reclaim(h, npages, &ev);
	if (rc) {
		lib_fail(r, rc, "umlmem_reclaim");
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
			unsigned file;

			swap_where(raw.sw, raw.slots[rng_below(&rng, raw.npages)], &file, &req.off);
			req.file = (uint16_t)file;
			req.buf = raw.mem + (uint64_t)RAW_WRITE_PAGES * PAGE;
			req.len = PAGE;
			req.op = IO_READ;
			req.res = 0;
			if (io_run(raw.e, &req, 1)) {
				res_fail(r, RS_ERROR, "baseline read: %s", strerror(req.res ? -req.res : EIO));
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

static void bench_native_seq(struct bench *b)
{
	struct result *r = &b->r[K_NV_SEQ];
	uint64_t bytes = (b->quick ? 16 : 64) << 20, words = bytes / 8;
	unsigned reps = b->quick ? 20 : 10;
	double best_u = INFINITY, best_b = INFINITY;
	umlmem_host *h = NULL;
	umlmem_guest *g = NULL;
	uint64_t *base, *plain, v;

	if (!b->want[K_NV_SEQ])
		return;
	progress("native_seq_touch: %" PRIu64 " MiB, %u passes each", bytes >> 20, reps);
	if (make_host(b, r, bytes + (8 << 20), bytes, 0, "native-seq", &h, &g))
		return;
	if (native_map(r, g, (void **)&base))
		goto out;
	plain = map_pages(bytes);
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

int cmd_bench(int argc, char **argv)
{
	struct bench *b = calloc(1, sizeof(*b));
	double wall;
	int rc, k;

	if (!b) {
		fprintf(stderr, "%s: out of memory\n", BENCH_PROG);
		return 1;
	}
	b->want_engine = UMLMEM_IO_AUTO;
	rc = bench_parse(b, argc, argv);
	if (rc) {
		free(b);
		return rc < 0 ? 0 : rc;
	}
	b->t_start = now_s();
	b->load_start = loadavg_1m();

	bench_pagein(b);
	bench_pageout(b);
	bench_hits(b);
	bench_ra_seq(b);
	bench_ra_random(b);
	bench_kernel(b);
	bench_dedup_rate(b);
	bench_dedup_ksm(b);
	bench_native_zero(b);
	bench_native_swap(b);
	bench_native_seq(b);

	rc = 0;
	for (k = 0; k < NKEYS; k++) {
		if (!b->want[k])
			continue;
		/* a figure that was asked for always appears, even if it never ran */
		if (b->r[k].state == RS_NONE) {
			b->r[k].state = RS_ERROR;
			snprintf(b->r[k].reason, sizeof(b->r[k].reason), "not measured");
		}
		if (b->r[k].state == RS_ERROR)
			rc = 1;
	}
	wall = now_s() - b->t_start;
	b->load_end = loadavg_1m();
	if (b->json)
		print_json(b, wall);
	else
		print_text(b, wall);
	fflush(stdout);
	free(b);
	return rc;
}
