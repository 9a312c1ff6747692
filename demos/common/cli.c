/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * cli.c: what every subcommand of the umlmem program shares: its option
 * grammar, the parsing and checking of numbers, sizes, directories and
 * engine names, the clock, and a few output helpers.
 *
 * A small parser of our own instead of getopt_long: getopt prints its own
 * wording, accepts abbreviations, and permutes argv, while every command
 * here should reject the same mistakes with the same messages.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include "cli.h"

void cli_usage_error(const char *cmd, const char *fmt, ...)
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
int cli_next_cmd(const char *cmd, int argc, char **argv, int *ip,
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
				cli_usage_error(cmd, "option %s takes no value (got '%s')",
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
			cli_usage_error(cmd, "option %s needs a value", o->name);
			return OPT_ERR;
		}
		return o->id;
	}
	cli_usage_error(cmd, "unknown option '%.*s'", (int)namelen, word);
	return OPT_ERR;
}

int cli_parse(const char *cmd, int argc, char **argv, const struct cli_opt *opts, bool words,
	      int (*fn)(void *ctx, int id, const char *arg), void *ctx, void (*usage)(FILE *f))
{
	const char *arg;
	int i = 1, id, rc;

	for (;;) {
		/* where an option may stand (not as another's value) */
		if (i < argc && (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))) {
			usage(stdout);
			return -1;
		}
		id = cli_next_cmd(cmd, argc, argv, &i, opts, &arg);
		if (id == OPT_END)
			return 0;
		if (id == OPT_ERR)
			return EXIT_USAGE;
		if (id == OPT_POSITIONAL && !words) {
			cli_usage_error(cmd, "unexpected argument '%s'", arg);
			return EXIT_USAGE;
		}
		rc = fn(ctx, id, arg);
		if (rc)
			return rc;
	}
}

/*
 * Decimal or 0x-hex, the whole word, no sign: strtoull alone takes "-1",
 * and base 0 would read "010" as octal.
 */
bool parse_u64(const char *s, uint64_t *out)
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
bool parse_size(const char *s, uint64_t *out)
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

/* Digits with an optional fraction: no sign, no exponent, no "inf". */
bool parse_double(const char *s, double *out)
{
	const char *p = s;
	char *end;
	double v;

	if (!s || *s < '0' || *s > '9')
		return false;
	while (*p >= '0' && *p <= '9')
		p++;
	if (*p == '.')
		for (p++; *p >= '0' && *p <= '9'; p++)
			;
	if (*p)
		return false;
	errno = 0;
	v = strtod(s, &end);
	if (errno || *end || !isfinite(v))
		return false;
	*out = v;
	return true;
}

bool cli_opt_dir(const char *cmd, const char *opt, const char *arg)
{
	struct stat sb;

	if (!*arg) {
		cli_usage_error(cmd, "%s: empty directory name", opt);
		return false;
	}
	if (stat(arg, &sb)) {
		cli_usage_error(cmd, "%s '%s': %s", opt, arg, strerror(errno));
		return false;
	}
	if (!S_ISDIR(sb.st_mode)) {
		cli_usage_error(cmd, "%s '%s': not a directory", opt, arg);
		return false;
	}
	return true;
}

bool cli_opt_size(const char *cmd, const char *opt, const char *arg, uint64_t min,
		  uint64_t max, uint64_t *out)
{
	uint64_t v;

	if (!parse_size(arg, &v) || v < min || v > max) {
		if (max == UINT64_MAX)
			cli_usage_error(cmd, "%s '%s': expected a size of at least %" PRIu64
					" bytes (bytes, or with K, M, G, T)", opt, arg, min);
		else
			cli_usage_error(cmd, "%s '%s': expected a size from %" PRIu64 " to %"
					PRIu64 " bytes (bytes, or with K, M, G, T)", opt, arg, min,
					max);
		return false;
	}
	*out = v;
	return true;
}

bool cli_opt_u64(const char *cmd, const char *opt, const char *arg, uint64_t min,
		 uint64_t max, uint64_t *out)
{
	uint64_t v;

	if (!parse_u64(arg, &v) || v < min || v > max) {
		cli_usage_error(cmd, "%s '%s': expected a whole number from %" PRIu64 " to %"
				PRIu64, opt, arg, min, max);
		return false;
	}
	*out = v;
	return true;
}

bool cli_opt_seconds(const char *cmd, const char *opt, const char *arg, double max,
		     double *out)
{
	double v;

	if (!parse_double(arg, &v) || !(v > 0) || v > max) {
		cli_usage_error(cmd, "%s '%s': expected a number of seconds above 0, at most %g",
				opt, arg, max);
		return false;
	}
	*out = v;
	return true;
}

bool cli_opt_engine(const char *cmd, const char *opt, const char *arg,
		    enum umlmem_io_engine *out)
{
	if (!strcmp(arg, "auto"))
		*out = UMLMEM_IO_AUTO;
	else if (!strcmp(arg, "uring") || !strcmp(arg, "io_uring"))
		*out = UMLMEM_IO_URING;
	else if (!strcmp(arg, "aio") || !strcmp(arg, "libaio"))
		*out = UMLMEM_IO_AIO;
	else if (!strcmp(arg, "sync"))
		*out = UMLMEM_IO_SYNC;
	else {
		cli_usage_error(cmd, "%s '%s': one of auto, uring, aio, sync", opt, arg);
		return false;
	}
	return true;
}

double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void sleep_s(double s)
{
	struct timespec ts;

	if (!(s > 0))
		return;
	ts.tv_sec = (time_t)s;
	ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
	while (clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, &ts) == EINTR)
		;
}

uint64_t proc_value(const char *path, const char *fmt)
{
	char line[256];
	uint64_t v = 0;
	FILE *f = fopen(path, "re");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, fmt, &v) == 1)
			break;
	fclose(f);
	return v;
}

/* Human size in powers of 1024, exact when below 1 KiB. */
const char *fmt_bytes(char *buf, size_t n, uint64_t v)
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

/* Whole numbers as such, others with three decimals. */
void json_num(FILE *f, double v)
{
	if (!isfinite(v))
		fputs("null", f);
	else if (v == floor(v) && fabs(v) < 1e15)
		fprintf(f, "%.0f", v);
	else
		fprintf(f, "%.3f", v);
}

void json_string(FILE *f, const char *s)
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

const char *engine_name(enum umlmem_io_engine e)
{
	switch (e) {
	case UMLMEM_IO_AUTO:	return "auto";
	case UMLMEM_IO_URING:	return "io_uring";
	case UMLMEM_IO_AIO:	return "libaio";
	case UMLMEM_IO_SYNC:	return "sync";
	case UMLMEM_IO_NBD:	return "nbd";
	}
	return "unknown";
}
