/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * umlmem stress: many threads of random operations on several guests of an
 * overcommitted host, every byte that comes back checked against a model.
 *
 * Workload. Several guests (default 8 of 64 MiB) on a budget of 64 MiB, so
 * that most of what the threads touch is in swap and every few operations
 * fault. Each thread (default 4) repeats, on a random page range it owns:
 *  - read: 1 byte to a few pages, often across page boundaries, compared
 *    with the model;
 *  - write: the same lengths, content random (a function of the address and
 *    a per-write stamp), a fixed per-page pattern, or zeros;
 *  - fill: 1 to 4 whole pages, each one of a few fixed patterns or zeros,
 *    so that identical pages exist across pages, threads and guests and the
 *    merge scanner has something to merge (and zero pages to give back);
 *  - pin: READ, WRITE or both, possibly of a page it already holds (pins
 *    nest); the page is compared through the pointer, and a write pin is
 *    sometimes written through; pins are held across later operations and
 *    dropped by unpin operations;
 *  - discard of 1 to 4 pages: -EBUSY, with nothing discarded, exactly when
 *    one of them is pinned;
 *  - with --dedup, umlmem_dedup_scan() of a few hundred pages;
 *  - calls that break a documented rule (a range beyond the guest's end, a
 *    misaligned pin or discard, an unpin without a pin, an empty access
 *    mask), which must fail with the documented error and change nothing.
 * Any other result of a library call is an error: counted, reported with
 * the library's own message, and the run is not verified.
 *
 * Ownership. Guest pages are cut into blocks of BLOCK_PAGES pages, numbered
 * across all guests; thread t owns the blocks whose number is t modulo the
 * thread count and touches nothing else (the merge scanner and the pager
 * touch everything, which is the point). So the owner's model of its pages
 * is an exact oracle however the threads interleave. BLOCK_PAGES is not a
 * power of two so that block edges drift across whatever power-of-two
 * chunking the library uses internally, and operations inside one block
 * cross those edges too.
 *
 * The model. A byte per guest byte would cost as much as the guests'
 * nominal RAM, which is exactly what small-ram.sh runs this under a memory
 * limit far below. Instead each page is described by at most MAX_SEGS runs
 * of bytes, each run zeros, a pattern, or the random content of one write
 * (regenerated from its stamp and the address): 56 bytes a page, 1/73 of
 * the RAM modelled, and nothing for pages never touched (the model arrays
 * are calloc'ed; an all-zero entry means "never written"). A write that
 * would leave more runs than that on a page is widened to cover the whole
 * page, which is still a legal write and keeps the description exact.
 *
 * At the end each thread drops its pins (checking the pages once more) and,
 * once all threads have stopped, reads every one of its blocks back whole:
 * every byte of every guest is compared. "verified" means that final check
 * covered every byte, no comparison ever differed and no call failed in an
 * unexpected way.
 *
 * A thread's sequence of operations depends only on the options and its number,
 * so a failure with --threads 1 --ops N (no --background) repeats exactly.
 * If no operation completes for STALL_S seconds the run is reported as hung,
 * with what each thread was doing, and the process exits.
 *
 * Exit status: 0 verified, 1 not verified (mismatch, error, hang), 2 usage.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "umlmem.h"
#include "cmd.h"
#define CLI_CMD "stress"
#include "cli.h"
#include "rng.h"

#define CMD		"stress"

#include "stress.h"

/* ------------------------------------------------------------------------ */
/* Reports                                                                  */
/* ------------------------------------------------------------------------ */

/* Prints the first MAX_REPORTS failures in full, then says once that the
 * rest are only counted; keeps the first of each sort for the summary. */
void stress_report(struct stress *s, char *first, size_t firstlen, const char *line)
{
	unsigned n = atomic_fetch_add(&s->reports, 1);

	if (n < MAX_REPORTS)
		fprintf(stderr, "%s %s: %s\n", PROG, CMD, line);
	else if (n == MAX_REPORTS)
		fprintf(stderr, "%s %s: further failures are counted, not shown\n", PROG, CMD);
	pthread_mutex_lock(&s->lock);
	if (!first[0])
		snprintf(first, firstlen, "%s", line);
	pthread_mutex_unlock(&s->lock);
}

/* A call that did not do what its documentation says. */
void stress_fail_line(struct worker *w, const char *what)
{
	char line[1024];

	snprintf(line, sizeof(line), "thread %u %s #%" PRIu32 ": %s", w->id,
		 op_name[w->op], w->opno, what);
	w->c.errors++;
	atomic_fetch_add_explicit(&w->s->a_errors, 1, memory_order_relaxed);
	stress_report(w->s, w->s->error, sizeof(w->s->error), line);
}

/* An unexpected result of a library call. The library's message is copied
 * first: it is only kept until the thread's next umlmem call. */
void stress_lib_error(struct worker *w, int rc, const char *fmt, ...)
{
	char what[256], msg[512], line[900];
	va_list ap;

	snprintf(msg, sizeof(msg), "%s", rc < 0 ? umlmem_errmsg() : "");
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	snprintf(line, sizeof(line), "%s: %s%s%s", what, umlmem_strerror(rc),
		 msg[0] ? ": " : "", msg);
	stress_fail_line(w, line);
}

/* A documented error that did not come: @rc is what came instead. */
void stress_unexpected(struct worker *w, int rc, int want, const char *call)
{
	stress_lib_error(w, rc, "%s should fail with %s but returned", call, umlmem_strerror(want));
}

/* ------------------------------------------------------------------------ */
/* Threads                                                                  */
/* ------------------------------------------------------------------------ */

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct stress *s = w->s;

	ops_random(w);
	ops_set_current(w, OP_NONE, 0, 0);
	/* The final check starts when no thread does random operations any
	 * more, so it sees the guests at rest (but for the pager and the
	 * merge thread). */
	pthread_barrier_wait(&s->barrier);
	atomic_fetch_add(&s->final_started, 1);
	ops_final_check(w);
	ops_set_current(w, OP_NONE, 0, 0);
	atomic_fetch_add(&s->finished, 1);
	return NULL;
}

/* ------------------------------------------------------------------------ */
/* Setup, progress, results                                                 */
/* ------------------------------------------------------------------------ */

static void stress_usage(FILE *f)
{
	fprintf(f,
		"usage: %s stress [OPTIONS]\n\n"
		"Threads of random reads, writes, whole-page fills, pins (written through\n"
		"when writable), unpins, discards, merge scans and deliberately invalid\n"
		"calls on several guests of an overcommitted host. Each thread owns its\n"
		"own pages and checks every byte it reads against its model of them; at\n"
		"the end every guest is read back whole and compared. Exits 0 only when\n"
		"nothing differed, no call failed unexpectedly, and the final check\n"
		"covered every byte.\n\n"
		"options:\n"
		"  --threads N         worker threads (default 4, at most %u)\n"
		"  --guests N          number of guests (default 8)\n"
		"  --guest-size SIZE   nominal RAM per guest (default 64M)\n"
		"  --budget SIZE       host budget of resident RAM (default 64M)\n"
		"  --seconds S         run for S seconds (default 20)\n"
		"  --ops N             run N operations in all instead (split over the threads)\n"
		"  --swap-dir DIR      directory for the swap files\n"
		"                      (default: $TMPDIR, else /var/tmp)\n"
		"  --seed N            seed of every thread's operations (default 1)\n"
		"  --background        reclaim (and merge) threads in the library\n"
		"  --no-background     none (default)\n"
		"  --dedup             merge pages: the threads call umlmem_dedup_scan, and\n"
		"                      with --background the merge thread runs\n"
		"  --no-dedup          never merge (default)\n"
		"  --json              print one JSON object on stdout, progress on stderr\n"
		"  --quiet             no progress lines\n"
		"  -h, --help          this help\n\n"
		"SIZE is bytes, or a number with K, M, G, T (or KiB, MiB, GiB, TiB):\n"
		"powers of 1024. With --threads 1 --ops N and no --background a run\n"
		"repeats the same operations exactly.\n", PROG, MAX_THREADS);
}

enum { O_THREADS = 1, O_GUESTS, O_SIZE, O_BUDGET, O_SECONDS, O_OPS, O_SWAPDIR,
       O_SEED, O_BG, O_NOBG, O_DEDUP, O_NODEDUP, O_JSON, O_QUIET };

static const struct cli_opt stress_opts[] = {
	{ "--threads", true, O_THREADS },
	{ "--guests", true, O_GUESTS },
	{ "--guest-size", true, O_SIZE },
	{ "--budget", true, O_BUDGET },
	{ "--seconds", true, O_SECONDS },
	{ "--ops", true, O_OPS },
	{ "--swap-dir", true, O_SWAPDIR },
	{ "--seed", true, O_SEED },
	{ "--background", false, O_BG },
	{ "--no-background", false, O_NOBG },
	{ "--dedup", false, O_DEDUP },
	{ "--no-dedup", false, O_NODEDUP },
	{ "--json", false, O_JSON },
	{ "--quiet", false, O_QUIET },
	{ NULL, false, 0 },
};

/* What the options say beyond struct stress itself. */
struct stress_args {
	struct stress *s;
	bool have_seconds;
};

static int stress_opt(void *ctx, int id, const char *arg)
{
	struct stress_args *a = ctx;
	struct stress *s = a->s;
	uint64_t v;

	switch (id) {
	case O_THREADS:
		if (!opt_u64("--threads", arg, 1, MAX_THREADS, &v))
			return EXIT_USAGE;
		s->threads = (unsigned)v;
		break;
	case O_GUESTS:
		if (!opt_u64("--guests", arg, 1, MAX_GUESTS, &v))
			return EXIT_USAGE;
		s->guests = (unsigned)v;
		break;
	case O_SIZE:
		if (!parse_size(arg, &v) || v < 1 || v > UMLMEM_MAX_GUEST_BYTES) {
			usage_error("--guest-size '%s': expected a size from 1 byte to 128T "
				    "(bytes, or with K, M, G, T)", arg);
			return EXIT_USAGE;
		}
		s->guest_bytes = v;
		break;
	case O_BUDGET:
		if (!opt_size("--budget", arg, 0, UINT64_MAX, &v))
			return EXIT_USAGE;
		/* the library rounds down; work with what it uses */
		s->budget_bytes = v / PAGE * PAGE;
		break;
	case O_SECONDS:
		if (!opt_seconds("--seconds", arg, 86400, &s->seconds))
			return EXIT_USAGE;
		a->have_seconds = true;
		break;
	case O_OPS:
		if (!parse_u64(arg, &v) || v < 1) {
			usage_error("--ops '%s': expected a whole number of at least 1", arg);
			return EXIT_USAGE;
		}
		s->ops_total = v;
		break;
	case O_SWAPDIR:
		if (!opt_dir("--swap-dir", arg))
			return EXIT_USAGE;
		s->swap_dir = arg;
		break;
	case O_SEED:
		if (!parse_u64(arg, &s->seed)) {
			usage_error("--seed '%s': expected a whole number from 0 to %" PRIu64
				    " (decimal or 0x hex)", arg, UINT64_MAX);
			return EXIT_USAGE;
		}
		break;
	case O_BG:
		s->background = true;
		break;
	case O_NOBG:
		s->background = false;
		break;
	case O_DEDUP:
		s->dedup = true;
		break;
	case O_NODEDUP:
		s->dedup = false;
		break;
	case O_JSON:
		s->json = true;
		break;
	case O_QUIET:
		s->quiet = true;
		break;
	}
	return 0;
}

/* Returns 0 to run, -1 after --help, or an exit status. */
static int stress_parse(struct stress *s, int argc, char **argv)
{
	struct stress_args a = { .s = s };
	uint64_t frames, need;
	int rc;

	rc = parse_options(argc, argv, stress_opts, false, stress_opt, &a, stress_usage);
	if (rc)
		return rc;
	if (a.have_seconds && s->ops_total) {
		usage_error("--seconds and --ops exclude each other: give one");
		return EXIT_USAGE;
	}
	if (s->guest_bytes > UINT64_MAX / s->guests) {
		usage_error("%u guests of %" PRIu64 " bytes overflow 64 bits", s->guests,
			    s->guest_bytes);
		return EXIT_USAGE;
	}
	s->guest_pages = (s->guest_bytes + PAGE - 1) / PAGE;
	s->guest_blocks = (s->guest_pages + BLOCK_PAGES - 1) / BLOCK_PAGES;
	s->total_blocks = s->guest_blocks * s->guests;
	if (s->total_blocks < s->threads) {
		usage_error("%u threads need at least %u blocks of %u pages to own, and %u "
			    "guest%s of %" PRIu64 " bytes make%s %" PRIu64 ": raise --guests or "
			    "--guest-size, or lower --threads", s->threads, s->threads, BLOCK_PAGES,
			    s->guests, s->guests > 1 ? "s" : "", s->guest_bytes,
			    s->guests > 1 ? "" : "s", s->total_blocks);
		return EXIT_USAGE;
	}
	/* Pins hold frames; kept to an eighth of the budget so that faults
	 * always find a frame to evict and -ENOMEM can never be the answer. */
	frames = s->budget_bytes / PAGE;
	need = (uint64_t)s->threads * 8 > 64 ? (uint64_t)s->threads * 8 : 64;
	if (frames < need) {
		usage_error("--budget: %u thread%s need a budget of at least %" PRIu64
			    " pages (%" PRIu64 " bytes), 8 per thread and 64 in all",
			    s->threads, s->threads > 1 ? "s" : "", need, need * PAGE);
		return EXIT_USAGE;
	}
	s->max_pins = (unsigned)(frames / 8 / s->threads < MAX_PINS ?
				 frames / 8 / s->threads : MAX_PINS);
	return 0;
}

static int stress_setup(struct stress *s)
{
	struct umlmem_host_config hc;
	struct umlmem_guest_config gc;
	const char *why = NULL;
	char name[32];
	unsigned i, t;
	uint64_t w;
	int rc;

	s->pat = aligned_alloc(PAGE, NPAT * PAGE);
	s->g = calloc(s->guests, sizeof(*s->g));
	s->pm = calloc(s->guests, sizeof(*s->pm));
	s->w = calloc(s->threads, sizeof(*s->w));
	if (!s->pat || !s->g || !s->pm || !s->w) {
		fprintf(stderr, "%s %s: out of memory\n", PROG, CMD);
		return -ENOMEM;
	}
	/* calloc: pages never touched cost no memory (see the top comment) */
	for (i = 0; i < s->guests; i++) {
		s->pm[i] = calloc(s->guest_pages, sizeof(**s->pm));
		if (!s->pm[i]) {
			fprintf(stderr, "%s %s: out of memory for the model of %u guests of %" PRIu64
				" pages (%zu bytes a page)\n", PROG, CMD, s->guests,
				s->guest_pages, sizeof(**s->pm));
			return -ENOMEM;
		}
	}
	/* Pattern 0 is one byte repeated, the others noise: both common in
	 * real memory, and neither all zeros. */
	memset(s->pat[0], 0x5a, PAGE);
	for (i = 1; i < NPAT; i++)
		for (w = 0; w < PAGE / 8; w++) {
			uint64_t v = mix64(s->seed ^ mix64(i * RNG_GOLDEN + w));

			memcpy(s->pat[i] + w * 8, &v, 8);
		}
	for (t = 0; t < s->threads; t++) {
		struct worker *wk = &s->w[t];

		wk->s = s;
		wk->id = t;
		wk->rng = mix64(s->seed ^ mix64(((uint64_t)t + 1) * RNG_GOLDEN));
		wk->key = mix64(wk->rng ^ 0x5354524553530000ull);
		wk->nblocks = (s->total_blocks - t + s->threads - 1) / s->threads;
		wk->by_ops = s->ops_total != 0;
		if (s->ops_total)
			wk->quota = s->ops_total / s->threads + (t < s->ops_total % s->threads);
		wk->buf = aligned_alloc(PAGE, BLOCK_PAGES * PAGE);
		wk->want = aligned_alloc(PAGE, PAGE);
		if (!wk->buf || !wk->want) {
			fprintf(stderr, "%s %s: out of memory\n", PROG, CMD);
			return -ENOMEM;
		}
	}

	umlmem_host_config_init(&hc);
	hc.resident_bytes = s->budget_bytes;
	hc.swap_dir = s->swap_dir;
	if (s->background)
		hc.flags |= UMLMEM_BACKGROUND;
	rc = umlmem_host_create(&hc, &s->host);
	if (rc) {
		s->host = NULL;
		snprintf(s->error, sizeof(s->error), "creating the host (budget %" PRIu64
			 " bytes%s%s): %s: %s", s->budget_bytes, s->swap_dir ? ", swap dir " : "",
			 s->swap_dir ? s->swap_dir : "", umlmem_strerror(rc), umlmem_errmsg());
		fprintf(stderr, "%s %s: %s\n", PROG, CMD, s->error);
		return rc;
	}
	s->engine = umlmem_host_io_engine(s->host, &why);
	snprintf(s->engine_why, sizeof(s->engine_why), "%s", why ? why : "");
	if (s->background && !s->dedup) {
		rc = umlmem_dedup_pause(s->host, 1);
		if (rc) {
			snprintf(s->error, sizeof(s->error), "pausing the merge thread: %s: %s",
				 umlmem_strerror(rc), umlmem_errmsg());
			fprintf(stderr, "%s %s: %s\n", PROG, CMD, s->error);
			return rc;
		}
	}
	for (i = 0; i < s->guests; i++) {
		umlmem_guest_config_init(&gc);
		gc.ram_bytes = s->guest_bytes;
		snprintf(name, sizeof(name), "stress%u", i);
		gc.name = name;
		rc = umlmem_guest_create(s->host, &gc, &s->g[i]);
		if (rc) {
			s->g[i] = NULL;
			snprintf(s->error, sizeof(s->error), "creating guest %u of %u (%" PRIu64
				 " bytes): %s: %s", i + 1, s->guests, s->guest_bytes,
				 umlmem_strerror(rc), umlmem_errmsg());
			fprintf(stderr, "%s %s: %s\n", PROG, CMD, s->error);
			return rc;
		}
		s->created++;
	}
	return 0;
}

static int sample(struct stress *s)
{
	int rc = umlmem_host_stats(s->host, &s->st);

	if (rc)
		return rc;
	s->have_stats = true;
	if (s->st.frames_used > s->peak_frames)
		s->peak_frames = s->st.frames_used;
	return 0;
}

static uint64_t sum_ops(struct stress *s)
{
	uint64_t n = 0;

	for (unsigned t = 0; t < s->threads; t++)
		n += atomic_load_explicit(&s->w[t].a_ops, memory_order_relaxed);
	return n;
}

static uint64_t sum_checked(struct stress *s)
{
	uint64_t n = 0;

	for (unsigned t = 0; t < s->threads; t++)
		n += atomic_load_explicit(&s->w[t].a_checked, memory_order_relaxed);
	return n;
}

static void progress(struct stress *s, double now, uint64_t ops, uint64_t dops, double dt)
{
	uint64_t nominal = (uint64_t)s->guests * s->guest_bytes;
	char phase[32];

	if (sample(s) || s->quiet)
		return;
	if (atomic_load(&s->final_started))
		snprintf(phase, sizeof(phase), "final %3u%%",
			 (unsigned)(sum_checked(s) * 100 / (nominal ? nominal : 1)));
	else
		snprintf(phase, sizeof(phase), "%9.0f op/s", dt > 0 ? (double)dops / dt : 0.0);
	fprintf(stderr, "stress %6.1f s  ops %10" PRIu64 "  %s  resident %6.1f MiB  "
		"swapped %7.1f MiB  shared %7" PRIu64 "  mismatches %" PRIu64 "  errors %" PRIu64 "\n",
		now - s->t0, ops, phase, (double)(s->st.resident_pages * PAGE) / MIB,
		(double)(s->st.swapped_pages * PAGE) / MIB, s->st.sharing_pages,
		atomic_load(&s->a_mismatches), atomic_load(&s->a_errors));
	fflush(stderr);
}

static void print_json(struct stress *s, FILE *f, bool verified);

/* No op has completed for STALL_S seconds: a hang in the library (or a
 * machine stopped). Says what each thread was doing, and ends the process,
 * since the stuck threads cannot be taken back. */
static void __attribute__((noreturn)) stalled(struct stress *s, double since)
{
	char line[1024];

	fprintf(stderr, "%s %s: HANG: no operation completed for %.0f s; the threads are in:\n",
		PROG, CMD, since);
	for (unsigned t = 0; t < s->threads; t++) {
		struct worker *w = &s->w[t];
		int op = atomic_load(&w->a_op);

		fprintf(stderr, "  thread %u: %s, guest %u, gpa 0x%" PRIx64 ", after %" PRIu64
			" ops\n", t, op_name[op >= 0 && op < NOPS ? op : OP_NONE],
			atomic_load(&w->a_gi), atomic_load(&w->a_gpa), atomic_load(&w->a_ops));
	}
	snprintf(line, sizeof(line), "no operation completed for %.0f s (hang)", since);
	pthread_mutex_lock(&s->lock);
	if (!s->error[0])
		snprintf(s->error, sizeof(s->error), "%s", line);
	pthread_mutex_unlock(&s->lock);
	/* Only what can be read without the library: it may hold its locks. */
	s->have_stats = false;
	s->wall_s = now_s() - s->t0;
	for (unsigned t = 0; t < s->threads; t++) {
		s->tot.ops += atomic_load(&s->w[t].a_ops);
		s->tot.checked_bytes += atomic_load(&s->w[t].a_checked);
	}
	s->tot.errors = atomic_load(&s->a_errors) + 1;
	s->tot.mismatches = atomic_load(&s->a_mismatches);
	if (s->json)
		print_json(s, stdout, false);
	fflush(stdout);
	fflush(stderr);
	_exit(1);
}

/* Starts the workers, prints progress, stops them; returns 0 or -errno. */
static int stress_run(struct stress *s)
{
	double now, last = 0, next, stall_t;
	uint64_t ops, last_ops = 0, stall_mark = UINT64_MAX, mark;
	unsigned t;
	int rc;

	rc = pthread_barrier_init(&s->barrier, NULL, s->threads);
	if (rc) {
		fprintf(stderr, "%s %s: pthread_barrier_init: %s\n", PROG, CMD, strerror(rc));
		return -rc;
	}
	s->t0 = last = stall_t = now_s();
	next = s->t0 + PROGRESS_S;
	for (t = 0; t < s->threads; t++) {
		rc = pthread_create(&s->w[t].tid, NULL, worker_main, &s->w[t]);
		if (rc) {
			/* The barrier counts on every thread: without them all
			 * the started ones would wait for ever. */
			fprintf(stderr, "%s %s: cannot start thread %u: %s\n", PROG, CMD, t,
				strerror(rc));
			_exit(1);
		}
	}
	while (atomic_load(&s->finished) < s->threads) {
		sleep_s(0.05);
		now = now_s();
		if (!s->ops_total && now - s->t0 >= s->seconds)
			atomic_store(&s->stop, true);
		ops = sum_ops(s);
		if (now >= next) {
			progress(s, now, ops, ops - last_ops, now - last);
			last = now;
			last_ops = ops;
			while (next <= now)
				next += PROGRESS_S;
		}
		mark = ops + sum_checked(s) + atomic_load(&s->final_started);
		if (mark != stall_mark) {
			stall_mark = mark;
			stall_t = now;
		} else if (now - stall_t >= STALL_S) {
			stalled(s, now - stall_t);
		}
		if (!atomic_load(&s->final_started))
			s->run_s = now - s->t0;
	}
	for (t = 0; t < s->threads; t++)
		pthread_join(s->w[t].tid, NULL);
	pthread_barrier_destroy(&s->barrier);
	return 0;
}

/*
 * Accounting the library promises. Checked when the workers are done; the
 * library's own threads may still be mid-call, so a broken sum is sampled
 * again a few times before it is reported.
 */
static void check_counters(struct stress *s)
{
	const struct umlmem_stats *st = &s->st;
	uint64_t want_pages = (uint64_t)s->guests * s->guest_pages;
	int i;

	for (i = 0; i < 20; i++) {
		if (sample(s))
			return;
		if (st->resident_pages + st->swapped_pages + st->zero_pages == st->ram_pages)
			break;
		sleep_s(0.01);
	}
	if (st->ram_pages != want_pages) {
		fprintf(stderr, "%s %s: warning: ram_pages is %" PRIu64 ", expected %" PRIu64 "\n",
			PROG, CMD, st->ram_pages, want_pages);
		s->warnings++;
	}
	if (st->resident_pages + st->swapped_pages + st->zero_pages != st->ram_pages) {
		fprintf(stderr, "%s %s: warning: resident %" PRIu64 " + swapped %" PRIu64
			" + zero %" PRIu64 " != ram_pages %" PRIu64 "\n", PROG, CMD,
			st->resident_pages, st->swapped_pages, st->zero_pages, st->ram_pages);
		s->warnings++;
	}
	if (s->peak_frames > s->budget_bytes / PAGE) {
		fprintf(stderr, "%s %s: warning: %" PRIu64 " frames in use, above the budget of %"
			PRIu64 "\n", PROG, CMD, s->peak_frames, s->budget_bytes / PAGE);
		s->warnings++;
	}
}

static void collect(struct stress *s)
{
	struct counters *c = &s->tot;
	uint64_t nominal = (uint64_t)s->guests * s->guest_bytes;

	for (unsigned t = 0; t < s->threads; t++) {
		const struct counters *w = &s->w[t].c;

		c->ops += w->ops;
		c->reads += w->reads;
		c->writes += w->writes;
		c->fills += w->fills;
		c->pins += w->pins;
		c->pin_checks += w->pin_checks;
		c->pin_writes += w->pin_writes;
		c->unpins += w->unpins;
		c->discards += w->discards;
		c->busy_discards += w->busy_discards;
		c->scans += w->scans;
		c->merged += w->merged;
		c->bad_calls += w->bad_calls;
		c->errors += w->errors;
		c->mismatches += w->mismatches;
		c->mismatched_bytes += w->mismatched_bytes;
		c->checked_bytes += w->checked_bytes;
	}
	s->final_complete = c->checked_bytes == nominal;
}

static bool stress_verified(const struct stress *s)
{
	return s->final_complete && !s->error[0] && s->tot.errors == 0 &&
	       s->tot.mismatches == 0;
}

static void print_json(struct stress *s, FILE *f, bool verified)
{
	const struct counters *c = &s->tot;
	const struct umlmem_stats *st = &s->st;

	fprintf(f, "{");
	fprintf(f, "\"verified\": %s, ", verified ? "true" : "false");
	fprintf(f, "\"ops\": %" PRIu64 ", ", c->ops);
	fprintf(f, "\"mismatches\": %" PRIu64 ", ", c->mismatches);
	fprintf(f, "\"mismatched_bytes\": %" PRIu64 ", ", c->mismatched_bytes);
	fprintf(f, "\"errors\": %" PRIu64 ", ", c->errors);
	fprintf(f, "\"reads\": %" PRIu64 ", ", c->reads);
	fprintf(f, "\"writes\": %" PRIu64 ", ", c->writes + c->fills);
	fprintf(f, "\"fills\": %" PRIu64 ", ", c->fills);
	fprintf(f, "\"pins\": %" PRIu64 ", ", c->pins);
	fprintf(f, "\"pin_checks\": %" PRIu64 ", ", c->pin_checks);
	fprintf(f, "\"pin_writes\": %" PRIu64 ", ", c->pin_writes);
	fprintf(f, "\"unpins\": %" PRIu64 ", ", c->unpins);
	fprintf(f, "\"discards\": %" PRIu64 ", ", c->discards);
	fprintf(f, "\"busy_discards\": %" PRIu64 ", ", c->busy_discards);
	fprintf(f, "\"dedup_scans\": %" PRIu64 ", ", c->scans);
	fprintf(f, "\"scan_merged\": %" PRIu64 ", ", c->merged);
	fprintf(f, "\"bad_calls\": %" PRIu64 ", ", c->bad_calls);
	fprintf(f, "\"final_checked_bytes\": %" PRIu64 ", ", c->checked_bytes);
	fprintf(f, "\"final_complete\": %s, ", s->final_complete ? "true" : "false");
	fprintf(f, "\"wall_s\": %.3f, ", s->wall_s);
	fprintf(f, "\"run_s\": %.3f, ", s->run_s);
	fprintf(f, "\"ops_per_s\": %.1f, ", s->run_s > 0 ? (double)c->ops / s->run_s : 0.0);
	fprintf(f, "\"threads\": %u, ", s->threads);
	fprintf(f, "\"guests\": %u, ", s->guests);
	fprintf(f, "\"guest_bytes\": %" PRIu64 ", ", s->guest_bytes);
	fprintf(f, "\"budget_bytes\": %" PRIu64 ", ", s->budget_bytes);
	fprintf(f, "\"seed\": %" PRIu64 ", ", s->seed);
	fprintf(f, "\"background\": %s, ", s->background ? "true" : "false");
	fprintf(f, "\"dedup\": %s, ", s->dedup ? "true" : "false");
	if (s->have_stats) {
		fprintf(f, "\"faults\": %" PRIu64 ", ", st->faults);
		fprintf(f, "\"swap_ins\": %" PRIu64 ", ", st->swap_ins);
		fprintf(f, "\"swap_outs\": %" PRIu64 ", ", st->swap_outs);
		fprintf(f, "\"sharing_pages\": %" PRIu64 ", ", st->sharing_pages);
		fprintf(f, "\"shared_frames\": %" PRIu64 ", ", st->shared_frames);
		fprintf(f, "\"cow_breaks\": %" PRIu64 ", ", st->cow_breaks);
		fprintf(f, "\"frames_used\": %" PRIu64 ", ", st->frames_used);
		fprintf(f, "\"peak_frames_used\": %" PRIu64 ", ", s->peak_frames);
		fprintf(f, "\"budget_frames\": %" PRIu64 ", ", s->info.frames_total);
		fprintf(f, "\"resident_pages\": %" PRIu64 ", ", st->resident_pages);
		fprintf(f, "\"swapped_pages\": %" PRIu64 ", ", st->swapped_pages);
		fprintf(f, "\"zero_pages\": %" PRIu64 ", ", st->zero_pages);
		fprintf(f, "\"pages_merged\": %" PRIu64 ", ", s->info.pages_merged);
		fprintf(f, "\"zero_merged\": %" PRIu64 ", ", s->info.zero_merged);
		fprintf(f, "\"readahead_pages\": %" PRIu64 ", ", s->info.readahead_pages);
		fprintf(f, "\"swap_disk_bytes\": %" PRIu64 ", ", st->swap_disk_bytes);
		fprintf(f, "\"io_errors\": %" PRIu64 ", ", st->io_errors);
		fprintf(f, "\"checksum_errors\": %" PRIu64 ", ", st->checksum_errors);
		fprintf(f, "\"counter_warnings\": %" PRIu64 ", ", s->warnings);
		fprintf(f, "\"engine\": ");
		json_string(f, engine_name(s->engine));
		fprintf(f, ", ");
	}
	fprintf(f, "\"error\": ");
	json_string(f, s->error[0] ? s->error : NULL);
	fprintf(f, ", \"first_mismatch\": ");
	json_string(f, s->mismatch[0] ? s->mismatch : NULL);
	fprintf(f, "}\n");
}

static void print_text(const struct stress *s, bool verified)
{
	const struct counters *c = &s->tot;
	const struct umlmem_stats *st = &s->st;
	uint64_t nominal = (uint64_t)s->guests * s->guest_bytes;
	char b1[32], b2[32], b3[32];
	FILE *f = stdout;

	if (!s->quiet)
		fputc('\n', f);
	fprintf(f, "umlmem stress: %u threads, %u guests x %s = %s nominal on a %s budget\n",
		s->threads, s->guests, fmt_bytes(b1, sizeof(b1), s->guest_bytes),
		fmt_bytes(b2, sizeof(b2), nominal), fmt_bytes(b3, sizeof(b3), s->budget_bytes));
	fprintf(f, "  seed %" PRIu64 ", background %s, dedup %s, I/O engine %s%s%s%s\n", s->seed,
		s->background ? "on" : "off", s->dedup ? "on" : "off", engine_name(s->engine),
		s->engine_why[0] ? " (" : "", s->engine_why, s->engine_why[0] ? ")" : "");
	fprintf(f, "  ops              %" PRIu64 " in %.2f s (%.0f/s)\n", c->ops, s->run_s,
		s->run_s > 0 ? (double)c->ops / s->run_s : 0.0);
	fprintf(f, "  reads            %" PRIu64 "\n", c->reads);
	fprintf(f, "  writes           %" PRIu64 " (%" PRIu64 " of them whole-page fills)\n",
		c->writes + c->fills, c->fills);
	fprintf(f, "  pins             %" PRIu64 " (%" PRIu64 " checks and %" PRIu64
		" writes through pins), %" PRIu64 " unpins\n", c->pins, c->pin_checks,
		c->pin_writes, c->unpins);
	fprintf(f, "  discards         %" PRIu64 " (%" PRIu64 " refused as pinned, as they should be)\n",
		c->discards, c->busy_discards);
	fprintf(f, "  dedup scans      %" PRIu64 " (%" PRIu64 " pages merged)\n", c->scans, c->merged);
	fprintf(f, "  invalid calls    %" PRIu64 " (each failed as documented unless counted below)\n",
		c->bad_calls);
	if (s->have_stats) {
		fprintf(f, "  faults           %" PRIu64 "\n", st->faults);
		fprintf(f, "  swap-ins/outs    %" PRIu64 " / %" PRIu64 "\n", st->swap_ins, st->swap_outs);
		fprintf(f, "  sharing pages    %" PRIu64 " at the end (%" PRIu64 " shared frames), %"
			PRIu64 " cow breaks\n", st->sharing_pages, st->shared_frames, st->cow_breaks);
		fprintf(f, "  frames used      %" PRIu64 " of %" PRIu64 ", peak seen %" PRIu64 "\n",
			st->frames_used, s->info.frames_total, s->peak_frames);
		fprintf(f, "  io/checksum err  %" PRIu64 " / %" PRIu64 "\n", st->io_errors,
			st->checksum_errors);
		if (s->info.pool_frames || s->info.pool_pages)
			fprintf(f, "  compressed pool  %" PRIu64 " pages in %" PRIu64 " frames, %" PRIu64
				" same-filled, %" PRIu64 " hits, %" PRIu64 " written back, %" PRIu64
				" rejected\n", s->info.pool_pages, s->info.pool_frames,
				s->info.pool_same_filled, s->info.pool_hits, s->info.pool_writebacks,
				s->info.pool_rejects);
	}
	fprintf(f, "  final check      %s of %s\n", fmt_bytes(b1, sizeof(b1), c->checked_bytes),
		fmt_bytes(b2, sizeof(b2), nominal));
	fprintf(f, "  mismatches       %" PRIu64 " (%" PRIu64 " bytes)\n", c->mismatches,
		c->mismatched_bytes);
	fprintf(f, "  errors           %" PRIu64 "\n", c->errors);
	if (verified)
		fprintf(f, "  verdict          VERIFIED: every read matched the model and every byte "
			"was checked at the end\n");
	else if (s->error[0])
		fprintf(f, "  verdict          NOT VERIFIED: %s\n", s->error);
	else if (s->mismatch[0])
		fprintf(f, "  verdict          NOT VERIFIED: %s\n", s->mismatch);
	else
		fprintf(f, "  verdict          NOT VERIFIED: the final check did not cover every byte\n");
	fprintf(f, "  wall time        %.2f s\n", s->wall_s);
}

static void stress_free(struct stress *s)
{
	unsigned i;

	for (i = 0; i < s->created; i++)
		umlmem_guest_destroy(s->g[i]);
	umlmem_host_destroy(s->host);
	if (s->pm)
		for (i = 0; i < s->guests; i++)
			free(s->pm[i]);
	if (s->w)
		for (i = 0; i < s->threads; i++) {
			free(s->w[i].buf);
			free(s->w[i].want);
		}
	free(s->pm);
	free(s->g);
	free(s->w);
	free(s->pat);
}

int cmd_stress(int argc, char **argv)
{
	struct stress s = {
		.threads = 4,
		.guests = 8,
		.guest_bytes = 64ull << 20,
		.budget_bytes = 64ull << 20,
		.seconds = 20,
		.seed = 1,
	};
	bool verified;
	int rc;

	rc = stress_parse(&s, argc, argv);
	if (rc)
		return rc < 0 ? 0 : rc;
	pthread_mutex_init(&s.lock, NULL);

	s.t0 = now_s();
	if (!s.quiet) {
		char b1[32], b2[32], len[48];

		if (s.ops_total)
			snprintf(len, sizeof(len), "%" PRIu64 " ops", s.ops_total);
		else
			snprintf(len, sizeof(len), "%g s", s.seconds);
		fprintf(stderr, "umlmem stress: %u threads, %u guests of %s on a %s budget, %s, "
			"seed %" PRIu64 "%s%s\n", s.threads, s.guests,
			fmt_bytes(b1, sizeof(b1), s.guest_bytes),
			fmt_bytes(b2, sizeof(b2), s.budget_bytes), len, s.seed,
			s.background ? ", background" : "", s.dedup ? ", dedup" : "");
	}
	rc = stress_setup(&s);
	if (!rc)
		rc = stress_run(&s);
	if (s.host) {
		umlmem_host_info(s.host, &s.info, sizeof(s.info));
		check_counters(&s);
	}
	collect(&s);
	verified = !rc && stress_verified(&s);
	s.wall_s = now_s() - s.t0;
	/* JSON always, so that a script reading it learns why; the text
	 * summary only when there is something to summarise. */
	if (s.json)
		print_json(&s, stdout, verified);
	else if (s.have_stats || !rc)
		print_text(&s, verified);
	if (!verified && (s.tot.mismatches || s.tot.errors))
		fprintf(stderr, "%s %s: to repeat this thread by thread: %s stress --threads %u "
			"--guests %u --guest-size %" PRIu64 " --budget %" PRIu64 " --seed %" PRIu64
			" --ops %" PRIu64 "%s%s\n", PROG, CMD, PROG, s.threads, s.guests,
			s.guest_bytes, s.budget_bytes, s.seed, s.tot.ops,
			s.background ? " --background" : "", s.dedup ? " --dedup" : "");
	fflush(stdout);
	stress_free(&s);
	pthread_mutex_destroy(&s.lock);
	return verified ? 0 : 1;
}
