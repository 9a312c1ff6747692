/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * umlmem: the command-line program that shows what the library does.
 *
 * One binary, several subcommands, each an entry of cmd_table[] with its own
 * options. `umlmem demo` is the overcommit demo: many guests whose nominal
 * RAM adds up to several times the host budget are filled with
 * deterministic, per-guest content and then read back byte for byte. The
 * point is not speed but proof: the budget holds, pages go to swap and come
 * back, and not one byte changes on the way. The program uses only the
 * public header, as any other user of the library would.
 *
 * Exit status: 0 success (for demo: every byte verified), 1 failure (a
 * library error or a verification failure), 2 bad usage.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include "umlmem.h"
#include "cmd.h"

#define PROG		"umlmem"
#define EXIT_USAGE	2

#define PAGE		((uint64_t)UMLMEM_PAGE_SIZE)
#define MIB		(1024.0 * 1024.0)

/* ------------------------------------------------------------------------ */
/* Command table                                                            */
/* ------------------------------------------------------------------------ */

struct cmd {
	const char *name;
	/* argv[0] is the subcommand name; returns the process exit status */
	int (*run)(int argc, char **argv);
	const char *help;
};

static int cmd_demo(int argc, char **argv);
static int cmd_help(int argc, char **argv);

static const struct cmd cmd_table[] = {
	{ "demo", cmd_demo, "overcommit demo: many guests on a small budget, every byte verified" },
	{ "bench", cmd_bench, "paging figures next to their baselines (raw disk, memcpy, kernel swap)" },
	{ "help", cmd_help, "show this help, or a command's options: help COMMAND" },
};

#define NCMDS (sizeof(cmd_table) / sizeof(cmd_table[0]))

static void usage(FILE *f)
{
	size_t i;

	fprintf(f, "usage: %s COMMAND [OPTIONS]\n\n", PROG);
	fprintf(f, "Guest RAM larger than the host, in user space (library %d.%d.%d).\n\n",
		UMLMEM_VERSION_MAJOR, UMLMEM_VERSION_MINOR, UMLMEM_VERSION_PATCH);
	fprintf(f, "commands:\n");
	for (i = 0; i < NCMDS; i++)
		fprintf(f, "  %-10s %s\n", cmd_table[i].name, cmd_table[i].help);
	fprintf(f, "\n`%s COMMAND --help` shows the options of a command.\n", PROG);
}

static const struct cmd *find_cmd(const char *name)
{
	size_t i;

	for (i = 0; i < NCMDS; i++)
		if (!strcmp(cmd_table[i].name, name))
			return &cmd_table[i];
	return NULL;
}

/* ------------------------------------------------------------------------ */
/* Option parsing shared by the subcommands                                 */
/* ------------------------------------------------------------------------ */

/*
 * A small parser of our own instead of getopt_long: getopt prints its own
 * wording, accepts abbreviations, and permutes argv, while every command
 * here should reject the same mistakes with the same messages.
 */
struct cli_opt {
	const char *name;	/* as typed, dashes included */
	bool has_arg;
	int id;
};

enum { OPT_END = 0, OPT_ERR = -1, OPT_POSITIONAL = -2 };

static void __attribute__((format(printf, 2, 3)))
usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s %s: ", PROG, cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n(try `%s %s --help`)\n", PROG, cmd);
}

/*
 * Returns the id of the next option and its value in *arg, OPT_POSITIONAL
 * with the word in *arg for a non-option, OPT_END after the last word, or
 * OPT_ERR after printing why. Accepts "--opt VALUE" and "--opt=VALUE".
 */
static int cli_next(const char *cmd, int argc, char **argv, int *ip,
		    const struct cli_opt *opts, const char **arg)
{
	const char *word, *eq;
	size_t namelen;
	const struct cli_opt *o;

	*arg = NULL;
	if (*ip >= argc)
		return OPT_END;
	word = argv[(*ip)++];

	if (!strcmp(word, "--")) {
		if (*ip >= argc)
			return OPT_END;
		*arg = argv[(*ip)++];
		return OPT_POSITIONAL;
	}
	if (word[0] != '-' || word[1] == '\0') {
		*arg = word;
		return OPT_POSITIONAL;
	}

	eq = strchr(word, '=');
	namelen = eq ? (size_t)(eq - word) : strlen(word);
	for (o = opts; o->name; o++) {
		if (strlen(o->name) != namelen || strncmp(o->name, word, namelen))
			continue;
		if (!o->has_arg) {
			if (eq) {
				usage_error(cmd, "option %s takes no value (got '%s')",
					    o->name, eq + 1);
				return OPT_ERR;
			}
			return o->id;
		}
		if (eq) {
			*arg = eq + 1;
		} else if (*ip < argc) {
			*arg = argv[(*ip)++];
		} else {
			usage_error(cmd, "option %s needs a value", o->name);
			return OPT_ERR;
		}
		return o->id;
	}
	usage_error(cmd, "unknown option '%.*s'", (int)namelen, word);
	return OPT_ERR;
}

/*
 * Decimal or 0x-hex, the whole word, no sign: strtoull alone takes "-1",
 * and base 0 would read "010" as octal.
 */
static bool parse_u64(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	int base = 10;

	if (!s || *s < '0' || *s > '9')
		return false;
	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		base = 16;
		s += 2;
		if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f') ||
		      (*s >= 'A' && *s <= 'F')))
			return false;
	}
	errno = 0;
	v = strtoull(s, &end, base);
	if (errno || end == s || *end)
		return false;
	*out = v;
	return true;
}

/*
 * Bytes with an optional binary suffix: K, M, G, T, or KiB, MiB, GiB, TiB
 * (any case), or B. "KB" and "MB" are refused rather than guessed at, since
 * they mean powers of 1000 to some users and 1024 to others.
 */
static bool parse_size(const char *s, uint64_t *out)
{
	static const struct { const char *sfx; unsigned shift; } units[] = {
		{ "", 0 }, { "B", 0 },
		{ "K", 10 }, { "KiB", 10 }, { "M", 20 }, { "MiB", 20 },
		{ "G", 30 }, { "GiB", 30 }, { "T", 40 }, { "TiB", 40 },
	};
	char *end;
	unsigned long long v;
	size_t i;

	if (!s || *s < '0' || *s > '9')
		return false;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s)
		return false;
	for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcasecmp(end, units[i].sfx))
			continue;
		if (units[i].shift && v > (UINT64_MAX >> units[i].shift))
			return false;
		*out = (uint64_t)v << units[i].shift;
		return true;
	}
	return false;
}

/* ------------------------------------------------------------------------ */
/* Small output helpers                                                     */
/* ------------------------------------------------------------------------ */

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Human size in powers of 1024, exact when below 1 KiB. */
static const char *fmt_bytes(char *buf, size_t n, uint64_t v)
{
	static const char *const unit[] = { "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
	double x = (double)v;
	int u = -1;

	if (v < 1024) {
		snprintf(buf, n, "%" PRIu64 " B", v);
		return buf;
	}
	while (x >= 1024.0 && u < 5) {
		x /= 1024.0;
		u++;
	}
	snprintf(buf, n, x < 10.0 ? "%.2f %s" : "%.1f %s", x, unit[u]);
	return buf;
}

static void json_string(FILE *f, const char *s)
{
	const unsigned char *p;

	if (!s) {
		fputs("null", f);
		return;
	}
	fputc('"', f);
	for (p = (const unsigned char *)s; *p; p++) {
		switch (*p) {
		case '"':  fputs("\\\"", f); break;
		case '\\': fputs("\\\\", f); break;
		case '\n': fputs("\\n", f); break;
		case '\t': fputs("\\t", f); break;
		default:
			if (*p < 0x20)
				fprintf(f, "\\u%04x", *p);
			else
				fputc(*p, f);
		}
	}
	fputc('"', f);
}

static const char *engine_name(enum umlmem_io_engine e)
{
	switch (e) {
	case UMLMEM_IO_AUTO:	return "auto";
	case UMLMEM_IO_URING:	return "io_uring";
	case UMLMEM_IO_AIO:	return "libaio";
	case UMLMEM_IO_SYNC:	return "sync";
	}
	return "unknown";
}

/* ------------------------------------------------------------------------ */
/* demo: deterministic guest content                                        */
/* ------------------------------------------------------------------------ */

#define GOLDEN 0x9e3779b97f4a7c15ull

/* The splitmix64 finaliser: a bijection, so distinct inputs never collide. */
static inline uint64_t mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t guest_base(uint64_t seed, unsigned gi)
{
	return mix64(seed ^ mix64((uint64_t)gi + GOLDEN));
}

/*
 * One page of guest content from its key. About 1 page in 8 is all zeros
 * and about 1 in 36 carries data only in a random sub-range, so the content
 * has the texture of real memory instead of being uniform noise.
 */
static void gen_page(uint64_t key, unsigned char *p)
{
	uint64_t w, s = key;
	unsigned lo, hi, i;

	if ((key & 7) == 0) {
		memset(p, 0, PAGE);
		return;
	}
	for (i = 0; i < PAGE; i += 8) {
		s += GOLDEN;
		w = mix64(s);
		memcpy(p + i, &w, 8);
	}
	if (((key >> 3) & 31) == 0) {
		lo = (unsigned)((key >> 8) % PAGE);
		hi = lo + 1 + (unsigned)((key >> 20) % (PAGE - lo));
		memset(p, 0, lo);
		memset(p + hi, 0, PAGE - hi);
	}
}

/*
 * Expected bytes of [gpa, gpa + len) of a guest whose base is @base. @buf
 * must hold len + 2 pages; the result points into it.
 */
static const unsigned char *gen_range(uint64_t base, uint64_t gpa, size_t len,
				      unsigned char *buf)
{
	uint64_t first = gpa / PAGE, last = (gpa + len - 1) / PAGE, p;

	for (p = first; p <= last; p++)
		gen_page(mix64(base + p * GOLDEN), buf + (p - first) * PAGE);
	return buf + gpa % PAGE;
}

/* ------------------------------------------------------------------------ */
/* demo                                                                     */
/* ------------------------------------------------------------------------ */

#define DEMO_CHUNK	(64u * 1024u)
#define DEMO_MAX_GUESTS	(1u << 20)
#define DEMO_PROGRESS_S	1.0
#define DEMO_MAX_REPORTS 10

struct demo {
	/* options */
	unsigned guests;
	uint64_t guest_bytes;
	uint64_t budget_bytes;
	const char *swap_dir;
	uint64_t seed;
	bool json;
	bool quiet;

	/* run state */
	umlmem_host *host;
	umlmem_guest **g;
	unsigned created;
	unsigned char *want;	/* expected content, DEMO_CHUNK + 2 pages */
	unsigned char *got;	/* what the library returned / was given */
	FILE *out;		/* progress lines */
	double t0;
	double last_progress;

	/* results */
	struct umlmem_stats st;
	bool have_stats;
	enum umlmem_io_engine engine;
	char engine_why[256];
	uint64_t peak_frames;
	unsigned guests_verified;
	uint64_t checked_bytes;
	uint64_t bad_pages;
	uint64_t bad_bytes;
	uint64_t last_bad_page;	/* so a page split over two chunks counts once */
	unsigned reports;
	char error[1024];	/* first library error, "" if none */
	double wall_s;
};

static void demo_usage(FILE *f)
{
	fprintf(f,
		"usage: %s demo [OPTIONS]\n\n"
		"Overcommit demo: creates guests whose nominal RAM adds up to more than\n"
		"the host budget, writes every byte of each with its own deterministic\n"
		"content, reads every byte back and compares. Exits 0 only when every\n"
		"byte of every guest matched.\n\n"
		"options:\n"
		"  --guests N          number of guests (default 16)\n"
		"  --guest-size SIZE   nominal RAM per guest (default 64M)\n"
		"  --budget SIZE       host budget of resident RAM (default 128M)\n"
		"  --swap-dir DIR      directory for the swap files\n"
		"                      (default: $TMPDIR, else /var/tmp)\n"
		"  --seed N            content seed (default 1)\n"
		"  --json              print one JSON object on stdout, progress on stderr\n"
		"  --quiet             no progress lines\n"
		"  -h, --help          this help\n\n"
		"SIZE is bytes, or a number with K, M, G, T (or KiB, MiB, GiB, TiB):\n"
		"powers of 1024.\n", PROG);
}

/*
 * Reports a failed library call the same way everywhere. The library's
 * message is copied before umlmem_strerror() is called, because the text
 * is only guaranteed until the thread's next umlmem call.
 */
static void __attribute__((format(printf, 3, 4)))
demo_fail(struct demo *d, int rc, const char *fmt, ...)
{
	char what[256], msg[512], line[sizeof(d->error)];
	va_list ap;

	snprintf(msg, sizeof(msg), "%s", umlmem_errmsg());
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	if (msg[0])
		snprintf(line, sizeof(line), "%s: %s: %s", what,
			 umlmem_strerror(rc), msg);
	else
		snprintf(line, sizeof(line), "%s: %s", what, umlmem_strerror(rc));
	fprintf(stderr, "%s demo: %s\n", PROG, line);
	/* The first failure is the one that explains the run. */
	if (!d->error[0])
		memcpy(d->error, line, sizeof(line));
}

static int demo_sample(struct demo *d)
{
	int rc = umlmem_host_stats(d->host, &d->st);

	if (rc) {
		demo_fail(d, rc, "reading the host counters");
		return rc;
	}
	d->have_stats = true;
	if (d->st.frames_used > d->peak_frames)
		d->peak_frames = d->st.frames_used;
	return 0;
}

static int demo_progress(struct demo *d, const char *phase, unsigned gi,
			 uint64_t done)
{
	char pct[16] = "";
	int rc;

	rc = demo_sample(d);
	if (rc)
		return rc;
	d->last_progress = now_s();
	if (d->quiet)
		return 0;
	if (done < d->guest_bytes)
		snprintf(pct, sizeof(pct), " %3u%%",
			 (unsigned)(done * 100 / d->guest_bytes));
	fprintf(d->out, "%-6s guest %*u/%u%s  resident %9.1f MiB  swapped %9.1f MiB  %7.1f s\n",
		phase, d->guests >= 10 ? (d->guests >= 100 ? 5 : 2) : 1, gi + 1,
		d->guests, pct,
		(double)(d->st.resident_pages * PAGE) / MIB,
		(double)(d->st.swapped_pages * PAGE) / MIB,
		d->last_progress - d->t0);
	fflush(d->out);
	return 0;
}

/* A first chunk shorter than DEMO_CHUNK puts every later chunk boundary
 * off page boundaries, so writes and reads that straddle pages get tested
 * too; some guests keep aligned chunks so the aligned path is tested as
 * well. Write and verify use different offsets. */
static uint64_t demo_skew(const struct demo *d, unsigned gi, bool verify)
{
	if ((gi & 3) == (verify ? 1u : 0u))
		return 0;
	return mix64(guest_base(d->seed, gi) ^ (verify ? 0x5652u : 0x5752u)) % DEMO_CHUNK;
}

static size_t demo_chunk_len(const struct demo *d, uint64_t gpa, uint64_t skew)
{
	uint64_t len = DEMO_CHUNK;

	if (gpa == 0 && skew)
		len = DEMO_CHUNK - skew;
	if (len > d->guest_bytes - gpa)
		len = d->guest_bytes - gpa;
	return (size_t)len;
}

static int demo_create(struct demo *d)
{
	struct umlmem_host_config hc;
	struct umlmem_guest_config gc;
	const char *why = NULL;
	char name[32];
	unsigned i;
	int rc;

	umlmem_host_config_init(&hc);
	hc.resident_bytes = d->budget_bytes;
	hc.swap_dir = d->swap_dir;
	rc = umlmem_host_create(&hc, &d->host);
	if (rc) {
		d->host = NULL;
		if (d->swap_dir)
			demo_fail(d, rc, "creating the host (budget %" PRIu64 " bytes, swap dir %s)",
				  d->budget_bytes, d->swap_dir);
		else
			demo_fail(d, rc, "creating the host (budget %" PRIu64 " bytes)",
				  d->budget_bytes);
		return rc;
	}
	d->engine = umlmem_host_io_engine(d->host, &why);
	snprintf(d->engine_why, sizeof(d->engine_why), "%s", why ? why : "");

	for (i = 0; i < d->guests; i++) {
		umlmem_guest_config_init(&gc);
		gc.ram_bytes = d->guest_bytes;
		snprintf(name, sizeof(name), "demo%u", i);
		gc.name = name;
		rc = umlmem_guest_create(d->host, &gc, &d->g[i]);
		if (rc) {
			d->g[i] = NULL;
			demo_fail(d, rc, "creating guest %u of %u (%" PRIu64 " bytes)",
				  i + 1, d->guests, d->guest_bytes);
			return rc;
		}
		d->created++;
	}
	return 0;
}

static int demo_write(struct demo *d)
{
	uint64_t gpa, base, skew;
	const unsigned char *src;
	unsigned gi;
	size_t len;
	int rc;

	for (gi = 0; gi < d->guests; gi++) {
		base = guest_base(d->seed, gi);
		skew = demo_skew(d, gi, false);
		for (gpa = 0; gpa < d->guest_bytes; gpa += len) {
			len = demo_chunk_len(d, gpa, skew);
			src = gen_range(base, gpa, len, d->want);
			rc = umlmem_write(d->g[gi], gpa, src, len);
			if (rc) {
				demo_fail(d, rc, "writing guest %u at 0x%" PRIx64 " (%zu bytes)",
					  gi + 1, gpa, len);
				return rc;
			}
			if (now_s() - d->last_progress >= DEMO_PROGRESS_S) {
				rc = demo_progress(d, "write", gi, gpa + len);
				if (rc)
					return rc;
			}
		}
		rc = demo_progress(d, "write", gi, d->guest_bytes);
		if (rc)
			return rc;
	}
	return 0;
}

/* Counts the pages and bytes where @got differs from @want. */
static void demo_compare(struct demo *d, unsigned gi, uint64_t gpa,
			 const unsigned char *want, const unsigned char *got,
			 size_t len)
{
	uint64_t seg_end, page, nbad, first_bad;
	size_t off = 0, seg, i;

	while (off < len) {
		page = (gpa + off) / PAGE;
		seg_end = (page + 1) * PAGE;
		seg = (size_t)(seg_end - (gpa + off));
		if (seg > len - off)
			seg = len - off;
		if (memcmp(want + off, got + off, seg)) {
			nbad = 0;
			first_bad = UINT64_MAX;
			for (i = 0; i < seg; i++) {
				if (want[off + i] == got[off + i])
					continue;
				if (first_bad == UINT64_MAX)
					first_bad = gpa + off + i;
				nbad++;
			}
			d->bad_bytes += nbad;
			if (page != d->last_bad_page) {
				d->bad_pages++;
				d->last_bad_page = page;
			}
			if (d->reports++ < DEMO_MAX_REPORTS)
				fprintf(stderr, "%s demo: guest %u page %" PRIu64
					": %" PRIu64 " of %zu bytes differ, first at 0x%" PRIx64
					" (expected 0x%02x, read 0x%02x)\n",
					PROG, gi + 1, page, nbad, seg, first_bad,
					want[first_bad - gpa], got[first_bad - gpa]);
			else if (d->reports == DEMO_MAX_REPORTS + 1)
				fprintf(stderr, "%s demo: further mismatches are counted, not shown\n",
					PROG);
		}
		off += seg;
	}
}

static int demo_verify(struct demo *d)
{
	uint64_t gpa, base, skew;
	const unsigned char *want;
	unsigned gi;
	size_t len;
	int rc;

	for (gi = 0; gi < d->guests; gi++) {
		base = guest_base(d->seed, gi);
		skew = demo_skew(d, gi, true);
		d->last_bad_page = UINT64_MAX;
		for (gpa = 0; gpa < d->guest_bytes; gpa += len) {
			len = demo_chunk_len(d, gpa, skew);
			/* Poisoned first, so a read that claims success but
			 * copies nothing cannot pass for a match. */
			memset(d->got, 0xa5, len);
			rc = umlmem_read(d->g[gi], gpa, d->got, len);
			if (rc) {
				demo_fail(d, rc, "reading guest %u at 0x%" PRIx64 " (%zu bytes)",
					  gi + 1, gpa, len);
				return rc;
			}
			want = gen_range(base, gpa, len, d->want);
			demo_compare(d, gi, gpa, want, d->got, len);
			d->checked_bytes += len;
			if (now_s() - d->last_progress >= DEMO_PROGRESS_S) {
				rc = demo_progress(d, "verify", gi, gpa + len);
				if (rc)
					return rc;
			}
		}
		d->guests_verified++;
		rc = demo_progress(d, "verify", gi, d->guest_bytes);
		if (rc)
			return rc;
	}
	return 0;
}

static bool demo_verified(const struct demo *d)
{
	return !d->error[0] && d->guests_verified == d->guests &&
	       d->checked_bytes == (uint64_t)d->guests * d->guest_bytes &&
	       d->bad_pages == 0 && d->bad_bytes == 0;
}

static void demo_print_json(const struct demo *d)
{
	const struct umlmem_stats *s = &d->st;
	uint64_t nominal = (uint64_t)d->guests * d->guest_bytes;
	FILE *f = stdout;

	fprintf(f, "{");
	fprintf(f, "\"guests\": %u, ", d->guests);
	fprintf(f, "\"guest_bytes\": %" PRIu64 ", ", d->guest_bytes);
	fprintf(f, "\"nominal_bytes\": %" PRIu64 ", ", nominal);
	fprintf(f, "\"budget_bytes\": %" PRIu64 ", ", d->budget_bytes);
	fprintf(f, "\"overcommit\": %.3f, ", (double)nominal / (double)d->budget_bytes);
	fprintf(f, "\"seed\": %" PRIu64 ", ", d->seed);
	fprintf(f, "\"frames_used\": %" PRIu64 ", ", s->frames_used);
	fprintf(f, "\"peak_frames_used\": %" PRIu64 ", ", d->peak_frames);
	fprintf(f, "\"resident_pages\": %" PRIu64 ", ", s->resident_pages);
	fprintf(f, "\"swapped_pages\": %" PRIu64 ", ", s->swapped_pages);
	fprintf(f, "\"zero_pages\": %" PRIu64 ", ", s->zero_pages);
	fprintf(f, "\"swap_disk_bytes\": %" PRIu64 ", ", s->swap_disk_bytes);
	fprintf(f, "\"faults\": %" PRIu64 ", ", s->faults);
	fprintf(f, "\"swap_ins\": %" PRIu64 ", ", s->swap_ins);
	fprintf(f, "\"swap_outs\": %" PRIu64 ", ", s->swap_outs);
	fprintf(f, "\"io_errors\": %" PRIu64 ", ", s->io_errors);
	fprintf(f, "\"checksum_errors\": %" PRIu64 ", ", s->checksum_errors);
	fprintf(f, "\"checked_bytes\": %" PRIu64 ", ", d->checked_bytes);
	fprintf(f, "\"mismatches\": %" PRIu64 ", ", d->bad_pages);
	fprintf(f, "\"mismatched_bytes\": %" PRIu64 ", ", d->bad_bytes);
	fprintf(f, "\"verified\": %s, ", demo_verified(d) ? "true" : "false");
	fprintf(f, "\"wall_s\": %.3f, ", d->wall_s);
	fprintf(f, "\"engine\": ");
	json_string(f, engine_name(d->engine));
	fprintf(f, ", \"engine_note\": ");
	json_string(f, d->engine_why);
	fprintf(f, ", \"error\": ");
	json_string(f, d->error[0] ? d->error : NULL);
	fprintf(f, "}\n");
}

static void demo_print_text(const struct demo *d)
{
	const struct umlmem_stats *s = &d->st;
	uint64_t nominal = (uint64_t)d->guests * d->guest_bytes;
	uint64_t budget_pages = d->budget_bytes / PAGE;
	char b1[32], b2[32], b3[32];
	FILE *f = stdout;

	/* Set off from the progress lines above it. */
	if (!d->quiet)
		fputc('\n', f);
	fprintf(f, "umlmem demo: %u guests x %s = %s nominal on a %s budget\n",
		d->guests, fmt_bytes(b1, sizeof(b1), d->guest_bytes),
		fmt_bytes(b2, sizeof(b2), nominal),
		fmt_bytes(b3, sizeof(b3), d->budget_bytes));
	fprintf(f, "  overcommit       %.2fx (nominal / budget)\n",
		(double)nominal / (double)d->budget_bytes);
	fprintf(f, "  I/O engine       %s%s%s%s\n", engine_name(d->engine),
		d->engine_why[0] ? " (" : "", d->engine_why,
		d->engine_why[0] ? ")" : "");
	fprintf(f, "  swap dir         %s\n",
		d->swap_dir ? d->swap_dir : "default ($TMPDIR, else /var/tmp)");
	fprintf(f, "  frames used      %" PRIu64 " of %" PRIu64 " (%s), peak seen %" PRIu64 "\n",
		s->frames_used, budget_pages,
		fmt_bytes(b1, sizeof(b1), s->frames_used * PAGE), d->peak_frames);
	fprintf(f, "  resident pages   %" PRIu64 " (%s)\n", s->resident_pages,
		fmt_bytes(b1, sizeof(b1), s->resident_pages * PAGE));
	fprintf(f, "  swapped pages    %" PRIu64 " (%s)\n", s->swapped_pages,
		fmt_bytes(b1, sizeof(b1), s->swapped_pages * PAGE));
	fprintf(f, "  zero pages       %" PRIu64 "\n", s->zero_pages);
	fprintf(f, "  swap disk use    %s (%" PRIu64 " bytes)\n",
		fmt_bytes(b1, sizeof(b1), s->swap_disk_bytes), s->swap_disk_bytes);
	fprintf(f, "  faults           %" PRIu64 "\n", s->faults);
	fprintf(f, "  swap-ins         %" PRIu64 "\n", s->swap_ins);
	fprintf(f, "  swap-outs        %" PRIu64 "\n", s->swap_outs);
	fprintf(f, "  io errors        %" PRIu64 "\n", s->io_errors);
	fprintf(f, "  checksum errors  %" PRIu64 "\n", s->checksum_errors);
	fprintf(f, "  checked          %s of %s\n",
		fmt_bytes(b1, sizeof(b1), d->checked_bytes),
		fmt_bytes(b2, sizeof(b2), nominal));
	fprintf(f, "  mismatches       %" PRIu64 " pages, %" PRIu64 " bytes\n",
		d->bad_pages, d->bad_bytes);
	if (demo_verified(d))
		fprintf(f, "  verdict          VERIFIED: every byte of %s%u guest%s matched\n",
			d->guests > 1 ? "all " : "", d->guests,
			d->guests > 1 ? "s" : "");
	else if (d->error[0])
		fprintf(f, "  verdict          NOT VERIFIED: stopped by an error: %s\n",
			d->error);
	else
		fprintf(f, "  verdict          NOT VERIFIED: %" PRIu64 " pages differ\n",
			d->bad_pages);
	fprintf(f, "  wall time        %.2f s\n", d->wall_s);
}

/*
 * Accounting the library promises; a broken promise is worth a warning even
 * when the data came back right.
 */
static void demo_check_counters(const struct demo *d)
{
	const struct umlmem_stats *s = &d->st;
	uint64_t want_pages = (uint64_t)d->guests *
			      ((d->guest_bytes + PAGE - 1) / PAGE);

	if (s->ram_pages != want_pages)
		fprintf(stderr, "%s demo: warning: ram_pages is %" PRIu64
			", expected %" PRIu64 "\n", PROG, s->ram_pages, want_pages);
	if (s->resident_pages + s->swapped_pages + s->zero_pages != s->ram_pages)
		fprintf(stderr, "%s demo: warning: resident %" PRIu64 " + swapped %" PRIu64
			" + zero %" PRIu64 " != ram_pages %" PRIu64 "\n", PROG,
			s->resident_pages, s->swapped_pages, s->zero_pages, s->ram_pages);
	if (d->peak_frames > d->budget_bytes / PAGE)
		fprintf(stderr, "%s demo: warning: %" PRIu64 " frames in use, above the budget of %"
			PRIu64 "\n", PROG, d->peak_frames, d->budget_bytes / PAGE);
}

static int demo_parse(struct demo *d, int argc, char **argv)
{
	enum { O_GUESTS = 1, O_SIZE, O_BUDGET, O_SWAPDIR, O_SEED, O_JSON,
	       O_QUIET, O_HELP };
	static const struct cli_opt opts[] = {
		{ "--guests", true, O_GUESTS },
		{ "--guest-size", true, O_SIZE },
		{ "--budget", true, O_BUDGET },
		{ "--swap-dir", true, O_SWAPDIR },
		{ "--seed", true, O_SEED },
		{ "--json", false, O_JSON },
		{ "--quiet", false, O_QUIET },
		{ "--help", false, O_HELP },
		{ "-h", false, O_HELP },
		{ NULL, false, 0 },
	};
	const char *arg;
	struct stat sb;
	uint64_t v;
	int i = 1, id;

	while ((id = cli_next("demo", argc, argv, &i, opts, &arg)) != OPT_END) {
		switch (id) {
		case OPT_ERR:
			return EXIT_USAGE;
		case OPT_POSITIONAL:
			usage_error("demo", "unexpected argument '%s'", arg);
			return EXIT_USAGE;
		case O_HELP:
			demo_usage(stdout);
			return -1;
		case O_GUESTS:
			if (!parse_u64(arg, &v) || v < 1 || v > DEMO_MAX_GUESTS) {
				usage_error("demo", "--guests '%s': expected a whole number from 1 to %u",
					    arg, DEMO_MAX_GUESTS);
				return EXIT_USAGE;
			}
			d->guests = (unsigned)v;
			break;
		case O_SIZE:
			if (!parse_size(arg, &v) || v < 1 || v > UMLMEM_MAX_GUEST_BYTES) {
				usage_error("demo", "--guest-size '%s': expected a size from 1 byte to 128T "
					    "(bytes, or with K, M, G, T)", arg);
				return EXIT_USAGE;
			}
			d->guest_bytes = v;
			break;
		case O_BUDGET:
			if (!parse_size(arg, &v)) {
				usage_error("demo", "--budget '%s': expected a size (bytes, or with K, M, G, T)",
					    arg);
				return EXIT_USAGE;
			}
			if (v < PAGE) {
				usage_error("demo", "--budget '%s': below one page (%" PRIu64 " bytes)",
					    arg, PAGE);
				return EXIT_USAGE;
			}
			/* The library rounds down; report what it really uses. */
			d->budget_bytes = v / PAGE * PAGE;
			break;
		case O_SWAPDIR:
			if (!*arg) {
				usage_error("demo", "--swap-dir: empty directory name");
				return EXIT_USAGE;
			}
			if (stat(arg, &sb)) {
				usage_error("demo", "--swap-dir '%s': %s", arg, strerror(errno));
				return EXIT_USAGE;
			}
			if (!S_ISDIR(sb.st_mode)) {
				usage_error("demo", "--swap-dir '%s': not a directory", arg);
				return EXIT_USAGE;
			}
			d->swap_dir = arg;
			break;
		case O_SEED:
			if (!parse_u64(arg, &d->seed)) {
				usage_error("demo", "--seed '%s': expected a whole number from 0 to %" PRIu64
					    " (decimal or 0x hex)", arg, UINT64_MAX);
				return EXIT_USAGE;
			}
			break;
		case O_JSON:
			d->json = true;
			break;
		case O_QUIET:
			d->quiet = true;
			break;
		}
	}
	if (d->guest_bytes > UINT64_MAX / d->guests) {
		usage_error("demo", "%u guests of %" PRIu64 " bytes overflow 64 bits",
			    d->guests, d->guest_bytes);
		return EXIT_USAGE;
	}
	return 0;
}

static int cmd_demo(int argc, char **argv)
{
	struct demo d = {
		.guests = 16,
		.guest_bytes = 64ull << 20,
		.budget_bytes = 128ull << 20,
		.seed = 1,
	};
	unsigned i;
	int rc;

	rc = demo_parse(&d, argc, argv);
	if (rc)
		return rc < 0 ? 0 : rc;

	d.out = d.json ? stderr : stdout;
	d.g = calloc(d.guests, sizeof(*d.g));
	d.want = aligned_alloc(PAGE, DEMO_CHUNK + 2 * PAGE);
	d.got = aligned_alloc(PAGE, DEMO_CHUNK + 2 * PAGE);
	if (!d.g || !d.want || !d.got) {
		fprintf(stderr, "%s demo: out of memory for %u guest handles\n",
			PROG, d.guests);
		free(d.g);
		free(d.want);
		free(d.got);
		return 1;
	}

	d.t0 = d.last_progress = now_s();
	if (!d.quiet && !d.json)
		fprintf(d.out, "umlmem demo: %u guests of %" PRIu64 " bytes on a budget of %"
			PRIu64 " bytes, seed %" PRIu64 "\n",
			d.guests, d.guest_bytes, d.budget_bytes, d.seed);

	rc = demo_create(&d);
	if (!rc)
		rc = demo_write(&d);
	if (!rc)
		rc = demo_verify(&d);
	/* Final counters even after an error: they help explain it. */
	if (d.host && !d.have_stats)
		demo_sample(&d);
	else if (d.host && demo_sample(&d) == 0)
		demo_check_counters(&d);

	for (i = 0; i < d.created; i++)
		umlmem_guest_destroy(d.g[i]);
	umlmem_host_destroy(d.host);
	d.wall_s = now_s() - d.t0;

	/* Nothing to summarise when even the host could not be made. */
	if (d.have_stats) {
		if (d.json)
			demo_print_json(&d);
		else
			demo_print_text(&d);
	}
	fflush(stdout);

	free(d.g);
	free(d.want);
	free(d.got);
	return demo_verified(&d) ? 0 : 1;
}

/* ------------------------------------------------------------------------ */
/* help, main                                                               */
/* ------------------------------------------------------------------------ */

static int cmd_help(int argc, char **argv)
{
	const struct cmd *c;
	char *sub[] = { NULL, "--help", NULL };

	if (argc < 2) {
		usage(stdout);
		return 0;
	}
	if (argc > 2) {
		usage_error("help", "expected at most one command name");
		return EXIT_USAGE;
	}
	c = find_cmd(argv[1]);
	if (!c) {
		fprintf(stderr, "%s help: unknown command '%s'\n", PROG, argv[1]);
		usage(stderr);
		return EXIT_USAGE;
	}
	if (c->run == cmd_help) {
		usage(stdout);
		return 0;
	}
	sub[0] = argv[1];
	return c->run(2, sub);
}

int main(int argc, char **argv)
{
	const struct cmd *c;

	if (argc < 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(argv[1], "--version")) {
		printf("%s %d.%d.%d\n", PROG, UMLMEM_VERSION_MAJOR,
		       UMLMEM_VERSION_MINOR, UMLMEM_VERSION_PATCH);
		return 0;
	}
	c = find_cmd(argv[1]);
	if (!c) {
		if (argv[1][0] == '-')
			fprintf(stderr, "%s: unknown option '%s'\n", PROG, argv[1]);
		else
			fprintf(stderr, "%s: unknown command '%s'\n", PROG, argv[1]);
		usage(stderr);
		return EXIT_USAGE;
	}
	return c->run(argc - 1, argv + 1);
}
