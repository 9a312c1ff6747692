/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Subcommands of the umlmem program that live in their own source files.
 * Each takes the argument vector of its subcommand (argv[0] is the
 * subcommand's name) and returns the process exit status.
 */
#ifndef UMLMEM_DEMOS_CMD_H
#define UMLMEM_DEMOS_CMD_H

/* bench.c: paging figures of the library, each next to its baseline. */
int cmd_bench(int argc, char **argv);
int cmd_demo(int argc, char **argv);	/* demo.c: the 2009 KSM run, 52 guests booting one OS, every byte verified */
int cmd_replay(int argc, char **argv);	/* replay.c: traces through the pager, next to LRU and MIN */
int cmd_stress(int argc, char **argv);	/* stress.c: random concurrent operations checked against a model */

#endif
