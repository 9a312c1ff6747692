/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Subcommands of the umlmem program, each in its own folder of demos/.
 * Each takes the argument vector of its subcommand (argv[0] is the
 * subcommand's name) and returns the process exit status.
 */
#ifndef UMLMEM_DEMOS_CMD_H
#define UMLMEM_DEMOS_CMD_H

/* bench/harness.c: paging figures of the library, each next to its baseline. */
int cmd_bench(int argc, char **argv);
int cmd_demo(int argc, char **argv);	/* demo/: the 2009 KSM run, 52 guests booting one OS, every byte verified */
int cmd_replay(int argc, char **argv);	/* replay/: traces through the pager, next to LRU and MIN */
int cmd_stress(int argc, char **argv);	/* stress/: random concurrent operations checked against a model */
int cmd_image(int argc, char **argv);	/* image/: what a saved image holds, and whether it is intact */

#endif
