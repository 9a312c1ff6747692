/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The runner of crshim.h: runs every registered test whose "suite/name"
 * matches one of the patterns of --filter=PAT (any number; default: all),
 * in registration order,
 * and ends with Criterion's kind of summary line.
 */
#include "crshim.h"

struct crshim_test *crshim_tests;
int crshim_failed;

int main(int argc, char **argv)
{
	const char *pat[32] = { "*" };
	unsigned npat = 0;
	struct crshim_test *list = NULL, *t, *next;
	unsigned n = 0;

	for (int i = 1; i < argc; i++)
		if (!strncmp(argv[i], "--filter=", 9) && npat < 32)
			pat[npat++] = argv[i] + 9;
	if (!npat)
		npat = 1;
	/* constructors pushed in reverse: restore file order */
	for (t = crshim_tests; t; t = next) {
		next = t->next;
		t->next = list;
		list = t;
	}
	for (t = list; t; t = t->next) {
		char full[256];

		snprintf(full, sizeof(full), "%s/%s", t->suite, t->name);
		unsigned k;

		for (k = 0; k < npat && fnmatch(pat[k], full, 0); k++)
			;
		if (k == npat)
			continue;
		fprintf(stderr, "[RUN ] %s\n", full);
		if (t->opts && t->opts->init)
			t->opts->init();
		t->fn();
		if (t->opts && t->opts->fini)
			t->opts->fini();
		n++;
	}
	printf("%s: %u passed, %u failed\n", crshim_failed ? "FAIL" : "OK",
	       crshim_failed ? n - 1 : n, crshim_failed ? 1u : 0u);
	return crshim_failed;
}
