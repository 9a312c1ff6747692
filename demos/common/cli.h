/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * cli.h: what the subcommands of the umlmem program share (cli.c). A file
 * that defines CLI_CMD (its subcommand's name) before including this gets
 * usage_error() and cli_next() that speak in that command's name.
 */
#ifndef UMLMEM_CLI_H
#define UMLMEM_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "umlmem.h"

#define PROG "umlmem"

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
bool parse_u64(const char *s, uint64_t *out);          /* decimal or 0x-hex, whole word */
bool parse_size(const char *s, uint64_t *out);         /* bytes, K/M/G/T or KiB.. suffix */
double now_s(void);                                    /* CLOCK_MONOTONIC, in seconds */
const char *fmt_bytes(char *buf, size_t n, uint64_t v); /* "1.50 GiB" */
void json_string(FILE *f, const char *s);              /* a JSON string, or null */
const char *engine_name(enum umlmem_io_engine e);

#ifdef CLI_CMD
#define usage_error(...) cli_usage_error(CLI_CMD, __VA_ARGS__)
#define cli_next(argc, argv, ip, opts, arg) cli_next_cmd(CLI_CMD, argc, argv, ip, opts, arg)
#endif

#endif
