/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * cli.h: what the subcommands of the umlmem program share (cli.c): one
 * option grammar, the parsing of numbers, sizes, directories and engine
 * names with the same messages everywhere, the clock, and small output
 * helpers (JSON values, human sizes). A file that defines CLI_CMD (its
 * subcommand's name) before including this gets usage_error(), cli_next()
 * and the opt_*() checks speaking in that command's name.
 *
 * The opt_*() checks take an option's value, say what is wrong with it in
 * a sentence naming the option and pointing to --help, and return false;
 * the caller then exits with EXIT_USAGE.
 */
#ifndef UMLMEM_CLI_H
#define UMLMEM_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "umlmem.h"

#define PROG "umlmem"
#define EXIT_USAGE 2	/* a mistake on the command line */

struct cli_opt {
	const char *name;	/* as typed, dashes included */
	bool has_arg;
	int id;
};

enum { OPT_END = 0, OPT_ERR = -1, OPT_POSITIONAL = -2 };

/* "umlmem CMD: <message>" and a pointer to --help, on stderr. */
void cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The id of the next option of @opts and its value in *arg; OPT_POSITIONAL
   with the word in *arg; OPT_END after the last word; OPT_ERR after saying
   why. Takes "--opt VALUE" and "--opt=VALUE"; "--" ends the options. */
int  cli_next_cmd(const char *cmd, int argc, char **argv, int *ip, const struct cli_opt *opts,
		  const char **arg);
/*
 * The one option loop of every subcommand: cli_next_cmd() over @opts, with
 * -h and --help (not in @opts) printing @usage on stdout.
 * Each option, and each word that is not one when @words, goes to @fn as
 * (@ctx, its id or OPT_POSITIONAL, its value or the word); @fn returns 0,
 * or EXIT_USAGE after saying why with cli_usage_error(). A word where
 * @words is false is refused here. Returns 0 to run, -1 after --help, or
 * EXIT_USAGE.
 */
int  cli_parse(const char *cmd, int argc, char **argv, const struct cli_opt *opts, bool words,
	       int (*fn)(void *ctx, int id, const char *arg), void *ctx, void (*usage)(FILE *f));
bool parse_u64(const char *s, uint64_t *out);          /* decimal or 0x-hex, whole word */
bool parse_size(const char *s, uint64_t *out);         /* bytes, K/M/G/T or KiB.. suffix */
const char *fmt_bytes(char *buf, size_t n, uint64_t v); /* "1.50 GiB" */
void json_string(FILE *f, const char *s);              /* a JSON string, or null */
bool parse_double(const char *s, double *out);        /* plain decimal, finite, no sign */
double now_s(void);                                    /* CLOCK_MONOTONIC, in seconds */
void sleep_s(double s);                                /* the whole of it, despite signals */
void json_num(FILE *f, double v);
/* The number of the first line of a /proc or /sys file that matches @fmt
   (a sscanf format with one SCNu64 conversion); 0 if none does. */
uint64_t proc_value(const char *path, const char *fmt);                      /* a JSON number, or null if not finite */
const char *engine_name(enum umlmem_io_engine e);

/* @arg names an existing directory. */
bool cli_opt_dir(const char *cmd, const char *opt, const char *arg);
/* A size (parse_size) from @min to @max bytes. */
bool cli_opt_size(const char *cmd, const char *opt, const char *arg, uint64_t min,
		  uint64_t max, uint64_t *out);
/* A whole number (parse_u64) from @min to @max. */
bool cli_opt_u64(const char *cmd, const char *opt, const char *arg, uint64_t min,
		 uint64_t max, uint64_t *out);
/* A number of seconds above 0, at most @max. */
bool cli_opt_seconds(const char *cmd, const char *opt, const char *arg, double max,
		     double *out);
/* auto, uring (io_uring), aio (libaio) or sync. */
bool cli_opt_engine(const char *cmd, const char *opt, const char *arg,
		    enum umlmem_io_engine *out);

#ifdef CLI_CMD
#define usage_error(...) cli_usage_error(CLI_CMD, __VA_ARGS__)
#define cli_next(argc, argv, ip, opts, arg) cli_next_cmd(CLI_CMD, argc, argv, ip, opts, arg)
#define parse_options(argc, argv, opts, words, fn, ctx, usage) \
	cli_parse(CLI_CMD, argc, argv, opts, words, fn, ctx, usage)
#define opt_dir(opt, arg) cli_opt_dir(CLI_CMD, opt, arg)
#define opt_size(opt, arg, min, max, out) cli_opt_size(CLI_CMD, opt, arg, min, max, out)
#define opt_u64(opt, arg, min, max, out) cli_opt_u64(CLI_CMD, opt, arg, min, max, out)
#define opt_seconds(opt, arg, max, out) cli_opt_seconds(CLI_CMD, opt, arg, max, out)
#define opt_engine(opt, arg, out) cli_opt_engine(CLI_CMD, opt, arg, out)
#endif

#endif
