/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * umlmem: the command-line program that shows what the library does.
 *
 * One binary, several subcommands, each an entry of cmd_table[] with its own
 * options; each subcommand lives in a folder of its own (demo/, bench/,
 * replay/, stress/; see cmd.h), what they share in common/, and this file
 * holds the table, help and main. The program uses only the public header,
 * as any other user of the library would; the bench's raw-disk baselines
 * alone also use the library's test-only umlmem/testing.h.
 *
 * Exit status: 0 success (for demo: every byte verified), 1 failure (a
 * library error or a verification failure), 2 bad usage.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>

#include "umlmem.h"
#include "cmd.h"
#include "cli.h"

/* ------------------------------------------------------------------------ */
/* Command table                                                            */
/* ------------------------------------------------------------------------ */

struct cmd {
	const char *name;
	/* argv[0] is the subcommand name; returns the process exit status */
	int (*run)(int argc, char **argv);
	const char *help;
};

static int cmd_help(int argc, char **argv);

static const struct cmd cmd_table[] = {
	{ "demo", cmd_demo, "the 2009 KSM run: 52 guests of 1 GiB boot one OS on a 1 GiB budget, every byte verified" },
	{ "bench", cmd_bench, "paging figures next to their baselines (raw disk, memcpy, kernel swap)" },
	{ "replay", cmd_replay, "page-reference traces through the pager, next to LRU and MIN" },
	{ "stress", cmd_stress, "threads of random reads, writes, pins, discards on an overcommitted host, checked" },
	{ "image", cmd_image, "a saved guest image: info shows its header and map, verify checks every page" },
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
		cli_usage_error("help", "expected at most one command name");
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
