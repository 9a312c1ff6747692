/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * version VERSION: umlmem_version() of the shared library agrees with the
 * header's UMLMEM_VERSION_* and with VERSION, the version the Makefile
 * derived from the header (file name of the .so, umlmem.pc), and accepts
 * NULL for any of its pointers.
 */
#include <stdio.h>
#include <string.h>

#include "umlmem.h"

int main(int argc, char **argv)
{
	int major = -1, minor = -1, patch = -1;
	const char *s = umlmem_version(&major, &minor, &patch);
	char want[64];
	int fail = 0;

	if (argc != 2) {
		fprintf(stderr, "usage: %s VERSION\n", argv[0]);
		return 2;
	}
	snprintf(want, sizeof(want), "%d.%d.%d", UMLMEM_VERSION_MAJOR,
		 UMLMEM_VERSION_MINOR, UMLMEM_VERSION_PATCH);
	if (major != UMLMEM_VERSION_MAJOR || minor != UMLMEM_VERSION_MINOR ||
	    patch != UMLMEM_VERSION_PATCH) {
		fprintf(stderr, "version: library says %d.%d.%d, header %s\n",
			major, minor, patch, want);
		fail = 1;
	}
	if (!s || strcmp(s, want) || strcmp(s, argv[1])) {
		fprintf(stderr, "version: library's string \"%s\", header %s, Makefile %s\n",
			s ? s : "(null)", want, argv[1]);
		fail = 1;
	}
	if (umlmem_version(NULL, NULL, NULL) != s) {
		fprintf(stderr, "version: the string differs when every pointer is NULL\n");
		fail = 1;
	}
	minor = -1;
	if (umlmem_version(NULL, &minor, NULL) != s || minor != UMLMEM_VERSION_MINOR) {
		fprintf(stderr, "version: minor alone not returned\n");
		fail = 1;
	}
	if (!fail)
		printf("version: %s\n", s);
	return fail;
}
