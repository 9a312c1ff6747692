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
 * This file is the harness: options, the --only selection, the results and
 * their output (text or JSON), the cleanup of changes to the system, and
 * the helpers every family builds its hosts with. Each family of figures
 * is a file of its own (families.h lists them) whose opening comment says
 * exactly what each of its figures measures and against what; phase.c has
 * the raw-disk baseline and the timed random-read phases several share.
 *
 * Numbers are printed as measured. A figure that could not be measured says
 * why ("skipped" with a reason, or "error").
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cmd.h"
#include "harness.h"

#define BENCH_FAMILY(name) &bench_##name,
static const struct bench_family *const families[] = {
#include "families.h"
};
#undef BENCH_FAMILY

#define NFAMILIES (sizeof(families) / sizeof(families[0]))

/* ------------------------------------------------------------------------ */
/* Results                                                                  */
/* ------------------------------------------------------------------------ */

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

void res_int(struct result *r, const char *name, int64_t v)
{
	struct field *f = res_field(r, name, F_INT);

	if (f)
		f->i = v;
}

void res_num(struct result *r, const char *name, double v)
{
	struct field *f = res_field(r, name, F_NUM);

	if (f)
		f->num = v;
}

void res_bool(struct result *r, const char *name, bool v)
{
	struct field *f = res_field(r, name, F_BOOL);

	if (f)
		f->i = v;
}

void res_str(struct result *r, const char *name, const char *fmt, ...)
{
	struct field *f = res_field(r, name, F_STR);
	va_list ap;

	if (!f)
		return;
	va_start(ap, fmt);
	vsnprintf(f->str, sizeof(f->str), fmt, ap);
	va_end(ap);
}

void res_note(struct result *r, const char *fmt, ...)
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

void res_set(struct result *r, double value, double baseline, const char *unit,
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

void res_fail(struct result *r, enum rstate st, const char *fmt, ...)
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

void res_lib_fail(struct result *r, int rc, const char *what)
{
	char msg[512];

	snprintf(msg, sizeof(msg), "%s", umlmem_errmsg());
	if (msg[0])
		res_fail(r, RS_ERROR, "%s: %s: %s", what, umlmem_strerror(rc), msg);
	else
		res_fail(r, RS_ERROR, "%s: %s", what, umlmem_strerror(rc));
}

struct result *bench_result(struct bench *b, const char *key)
{
	for (unsigned i = 0; i < b->nr; i++)
		if (!strcmp(b->r[i].key, key))
			return &b->r[i];
	fprintf(stderr, "%s: no figure %s\n", BENCH_PROG, key);
	abort();
}

const char *bench_swap_dir(const struct bench *b)
{
	const char *dir = b->swap_dir;

	/* the library's own default, so the baselines share the disk */
	if (!dir) {
		dir = getenv("TMPDIR");
		if (!dir || !*dir)
			dir = "/var/tmp";
	}
	return dir;
}

/* ------------------------------------------------------------------------ */
/* Small helpers                                                            */
/* ------------------------------------------------------------------------ */

void bench_progress(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", BENCH_PROG);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

void bench_fill_pages(uint64_t *buf, uint64_t first_page, uint64_t npages, uint64_t salt)
{
	for (uint64_t p = 0; p < npages; p++)
		for (uint64_t w = 0; w < WORDS; w++)
			buf[p * WORDS + w] = word_of(first_page + p, w) ^ salt;
}

void *bench_map_pages(uint64_t bytes)
{
	void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return NULL;
	madvise(p, bytes, MADV_NOHUGEPAGE);
	return p;
}

int bench_write_file(const char *path, const char *val)
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

static double loadavg_1m(void)
{
	char line[128];

	if (!bench_read_line("/proc/loadavg", line, sizeof(line)))
		return NAN;
	return strtod(line, NULL);
}

bool bench_read_line(const char *path, char *buf, size_t len)
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

void res_rates_append(char *s, size_t len, double rate)
{
	size_t used = strlen(s);

	if (used < len)
		snprintf(s + used, len - used, "%s%.0f", used ? " " : "", rate);
}

/* ------------------------------------------------------------------------ */
/* Hosts                                                                    */
/* ------------------------------------------------------------------------ */

int bench_host(struct bench *b, struct result *r, uint64_t budget, uint64_t guest_bytes,
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
		res_lib_fail(r, rc, "creating the host");
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
		res_lib_fail(r, rc, "creating the guest");
		umlmem_host_destroy(*hp);
		*hp = NULL;
	}
	return rc;
}

int bench_fill_guest(struct result *r, umlmem_guest *g, uint64_t bytes, uint64_t salt,
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
		bench_fill_pages(buf, p, n, salt);
		rc = umlmem_write(g, p * PAGE, buf, n * PAGE);
		if (rc) {
			res_lib_fail(r, rc, "writing the guest");
			break;
		}
		t = now_s();
		if (what && t - last >= 2.0) {
			bench_progress("%s: written %s of %s", what, fmt_bytes(b1, sizeof(b1), p * PAGE),
				       fmt_bytes(b2, sizeof(b2), bytes));
			last = t;
		}
	}
	free(buf);
	return rc;
}
/* ------------------------------------------------------------------------ */
/* Undoing changes to the system, whatever ends the run                     */
/* ------------------------------------------------------------------------ */

/*
 * kernel_swap_random and dedup_vs_ksm change the machine outside the
 * process (a swap file, a cgroup, KSM's settings). That must be undone at
 * exit, on SIGINT, SIGTERM and SIGHUP as well as on the normal path: each
 * such figure registers its cleanup, which runs from all three (see
 * harness.h for what a cleanup may do). The list only grows, and a slot is
 * filled before the count that publishes it, so that a signal arriving
 * during bench_cleanup_on() sees only whole entries.
 */
#define MAX_CLEANUPS 8

static void (*volatile cleanups[MAX_CLEANUPS])(void);
static volatile sig_atomic_t ncleanups;
static const int cleanup_signals[3] = { SIGINT, SIGTERM, SIGHUP };
static struct sigaction cleanup_old[3];
static bool cleanup_on;

static void bench_cleanup(void)
{
	for (sig_atomic_t i = 0; i < ncleanups; i++)
		cleanups[i]();
}

static void bench_signal(int sig)
{
	bench_cleanup();
	signal(sig, SIG_DFL);
	raise(sig);
}

void bench_cleanup_on(void (*fn)(void))
{
	struct sigaction sa;
	static bool atexit_done;
	sig_atomic_t i;

	for (i = 0; i < ncleanups && cleanups[i] != fn; i++)
		;
	if (i == ncleanups) {
		if (i == MAX_CLEANUPS) {
			fprintf(stderr, "%s: more than %d cleanups\n", BENCH_PROG, MAX_CLEANUPS);
			abort();
		}
		cleanups[i] = fn;
		/* the entry before the count: pairs with a signal handler's
		   bench_cleanup(), which reads the count, then the entries */
		__atomic_signal_fence(__ATOMIC_SEQ_CST);
		ncleanups = i + 1;
	}
	if (!atexit_done && atexit(bench_cleanup) == 0)
		atexit_done = true;
	if (!cleanup_on) {
		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = bench_signal;
		sigemptyset(&sa.sa_mask);
		for (i = 0; i < 3; i++)
			sigaction(cleanup_signals[i], &sa, &cleanup_old[i]);
		cleanup_on = true;
	}
}

void bench_cleanup_off(void)
{
	if (!cleanup_on)
		return;
	for (int i = 0; i < 3; i++)
		sigaction(cleanup_signals[i], &cleanup_old[i], NULL);
	cleanup_on = false;
}

void bench_cleanup_child(void)
{
	for (int i = 0; i < 3; i++)
		signal(cleanup_signals[i], SIG_DFL);
}

/* ------------------------------------------------------------------------ */
/* Output                                                                   */
/* ------------------------------------------------------------------------ */

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
	json_string(f, bench_swap_dir(b));
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
	for (unsigned k = 0; k < b->nr; k++) {
		if (b->r[k].state == RS_NONE)
			continue;
		fprintf(f, ",\n \"%s\": ", b->r[k].key);
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
		bench_swap_dir(b));
	fprintf(f, "%-20s %14s %14s %-9s %8s\n", "figure", "umlmem", "baseline", "unit",
		"ratio");
	for (unsigned k = 0; k < b->nr; k++) {
		const struct result *r = &b->r[k];

		if (r->state == RS_NONE)
			continue;
		if (r->state != RS_OK) {
			fprintf(f, "%-20s %s: %s\n", r->key,
				r->state == RS_SKIP ? "skipped" : "error", r->reason);
			continue;
		}
		fprintf(f, "%-20s %14.2f %14.2f %-9s %8.3f\n", r->key, r->value,
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
	const struct bench_key *k;
	const char *line, *nl;
	size_t fi;

	fprintf(f,
		"usage: umlmem bench [--json] [--quick] [--swap-dir DIR]\n"
		"                    [--engine auto|uring|aio|sync] [--only KEY,...]\n"
		"                    [--budget SIZE] [--seconds N]\n\n"
		"Measures the library's paging figures, each next to its baseline, in one\n"
		"run on one swap directory. ratio > 1 favours umlmem.\n\n"
		"figures (KEY):\n");
	/* each key's help: its first line beside the name, the others below */
	for (fi = 0; fi < NFAMILIES; fi++)
		for (k = families[fi]->keys; k->name; k++)
			for (line = k->help; *line; line = nl + 1) {
				nl = strchr(line, '\n');
				if (!nl)
					nl = line + strlen(line) - 1;
				fprintf(f, "  %-19s %.*s\n", line == k->help ? k->name : "",
					(int)(nl - line), line);
			}
	fprintf(f,
		"\noptions:\n"
		"  --json              one JSON object on stdout (progress goes to stderr)\n"
		"  --quick             budget 32M, 2 s phases, dedup_vs_ksm on 8 guests of\n"
		"                      8 MiB: about 30 s in all\n"
		"  --swap-dir DIR      directory for every swap and baseline file\n"
		"                      (default: $TMPDIR, else /var/tmp)\n"
		"  --engine E          auto (default), uring, aio or sync\n"
		"  --only KEY,...      only these figures (and the figures their baselines\n"
		"                      come from: kernel_swap_random runs pagein_random_t1)\n"
		"  --budget SIZE       host budget (default 256M; working set 4x)\n"
		"  --seconds N         length of each timed phase (default 8; quick 2)\n"
		"  -h, --help          this help\n\n"
		"SIZE is bytes, or a number with K, M, G (or KiB, MiB, GiB): powers of 1024.\n");
}

/* Wants the figure @name and, recursively, the one its baseline comes from. */
static bool want_key(struct bench *b, const char *name)
{
	const struct bench_key *k;
	unsigned i = 0;

	for (size_t fi = 0; fi < NFAMILIES; fi++)
		for (k = families[fi]->keys; k->name; k++, i++)
			if (!strcmp(k->name, name)) {
				if (!b->r[i].want) {
					b->r[i].want = true;
					if (k->needs && !want_key(b, k->needs))
						abort();	/* a bad table */
				}
				return true;
			}
	return false;
}

static int parse_only(struct bench *b, const char *arg)
{
	char *dup = strdup(arg), *tok, *save = NULL, *p;
	int rc = 0;
	size_t len = 0, n;

	if (!dup)
		return EXIT_USAGE;
	for (tok = strtok_r(dup, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		if (want_key(b, tok))
			continue;
		for (unsigned i = 0; i < b->nr; i++)
			len += strlen(b->r[i].key) + 2;
		p = malloc(len + 1);
		if (p) {
			p[0] = '\0';
			for (unsigned i = 0, at = 0; i < b->nr; i++, at += (unsigned)n)
				n = (size_t)sprintf(p + at, "%s%s", i ? ", " : "", b->r[i].key);
		}
		cli_usage_error("bench", "--only: unknown figure '%s' (one of %s)", tok,
				p ? p : "see --help");
		free(p);
		rc = EXIT_USAGE;
		break;
	}
	free(dup);
	if (!rc) {
		unsigned i;

		for (i = 0; i < b->nr && !b->r[i].want; i++)
			;
		if (i == b->nr) {
			cli_usage_error("bench", "--only: no figure named");
			rc = EXIT_USAGE;
		}
	}
	return rc;
}

enum { O_JSON = 1, O_QUICK, O_SWAPDIR, O_ENGINE, O_ONLY, O_BUDGET, O_SECONDS };

static const struct cli_opt bench_opts[] = {
	{ "--json", false, O_JSON },
	{ "--quick", false, O_QUICK },
	{ "--swap-dir", true, O_SWAPDIR },
	{ "--engine", true, O_ENGINE },
	{ "--only", true, O_ONLY },
	{ "--budget", true, O_BUDGET },
	{ "--seconds", true, O_SECONDS },
	{ NULL, false, 0 },
};

/* What the options say before the defaults, which depend on --quick
   wherever it stands, are applied. */
struct bench_args {
	struct bench *b;
	const char *only, *budget, *seconds;
};

static int bench_opt(void *ctx, int id, const char *arg)
{
	struct bench_args *a = ctx;
	struct bench *b = a->b;

	switch (id) {
	case O_JSON:
		b->json = true;
		break;
	case O_QUICK:
		b->quick = true;
		break;
	case O_SWAPDIR:
		if (!cli_opt_dir("bench", "--swap-dir", arg))
			return EXIT_USAGE;
		b->swap_dir = arg;
		break;
	case O_ENGINE:
		if (!cli_opt_engine("bench", "--engine", arg, &b->want_engine))
			return EXIT_USAGE;
		break;
	case O_ONLY:
		a->only = arg;
		break;
	case O_BUDGET:
		a->budget = arg;
		break;
	case O_SECONDS:
		a->seconds = arg;
		break;
	}
	return 0;
}

/* Returns 0 to run, -1 after --help, or an exit status. */
static int bench_parse(struct bench *b, int argc, char **argv)
{
	struct bench_args a = { .b = b };
	const char *budget, *seconds;
	int rc;

	rc = cli_parse("bench", argc, argv, bench_opts, false, bench_opt, &a, bench_usage);
	if (rc)
		return rc;
	budget = a.budget;
	seconds = a.seconds;

	/* the defaults depend on --quick, wherever it stands */
	b->budget = b->quick ? 32ull << 20 : 256ull << 20;
	b->seconds = b->quick ? 2.0 : 8.0;
	b->warm = b->quick ? 0.5 : 1.0;
	if (budget) {
		uint64_t v;

		if (!cli_opt_size("bench", "--budget", budget, 64 * PAGE, UINT64_MAX >> 3, &v))
			return EXIT_USAGE;
		/* whole reclaim batches, so the working set is whole pages too */
		b->budget = v / (64 * PAGE) * (64 * PAGE);
	}
	if (seconds) {
		if (!cli_opt_seconds("bench", "--seconds", seconds, 3600, &b->seconds))
			return EXIT_USAGE;
		if (b->warm > b->seconds / 2)
			b->warm = b->seconds / 2;
	}
	if (a.only)
		return parse_only(b, a.only);
	for (unsigned k = 0; k < b->nr; k++)
		b->r[k].want = true;
	return 0;
}

/* ------------------------------------------------------------------------ */
/* The command                                                              */
/* ------------------------------------------------------------------------ */

/* One result per key of every family, named, in table order. */
static int bench_results(struct bench *b)
{
	const struct bench_key *k;
	unsigned n = 0, i = 0;
	size_t fi;

	for (fi = 0; fi < NFAMILIES; fi++)
		for (k = families[fi]->keys; k->name; k++)
			n++;
	b->r = calloc(n, sizeof(*b->r));
	if (!b->r)
		return -ENOMEM;
	b->nr = n;
	for (fi = 0; fi < NFAMILIES; fi++)
		for (k = families[fi]->keys; k->name; k++)
			b->r[i++].key = k->name;
	return 0;
}

int cmd_bench(int argc, char **argv)
{
	struct bench *b = calloc(1, sizeof(*b));
	struct result **fr = NULL;
	unsigned k, first = 0;
	double wall;
	int rc;

	if (!b || bench_results(b) || !(fr = calloc(b->nr, sizeof(*fr)))) {
		fprintf(stderr, "%s: out of memory\n", BENCH_PROG);
		if (b)
			free(b->r);
		free(b);
		return 1;
	}
	b->want_engine = UMLMEM_IO_AUTO;
	rc = bench_parse(b, argc, argv);
	if (rc)
		goto out;
	b->t_start = now_s();
	b->load_start = loadavg_1m();

	for (size_t fi = 0; fi < NFAMILIES; fi++) {
		unsigned n;

		for (n = 0; families[fi]->keys[n].name; n++)
			fr[n] = &b->r[first + n];
		families[fi]->run(b, fr);
		first += n;
	}

	for (k = 0; k < b->nr; k++) {
		if (!b->r[k].want)
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
out:
	free(fr);
	free(b->r);
	free(b);
	return rc < 0 ? 0 : rc;
}

/* Writes the fill's dirty pages out and reads the budget back in (its
   first pages, in order), so that the timed phase starts with every
   resident page clean and every frame holding memory. */
int bench_settle(struct result *r, umlmem_host *h, umlmem_guest *g, uint64_t budget)
{
	uint64_t v, evicted = 0;
	int rc = umlmem_reclaim(h, budget / PAGE, &evicted);

	if (rc) {
		res_lib_fail(r, rc, "writing out the fill");
		return rc;
	}
	for (uint64_t p = 0; p < budget / PAGE; p++) {
		rc = umlmem_read(g, p * PAGE, &v, sizeof(v));
		if (rc) {
			res_lib_fail(r, rc, "reading the budget back in");
			return rc;
		}
	}
	return 0;
}
