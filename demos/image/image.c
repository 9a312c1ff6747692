/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * umlmem image: what a saved image (umlmem_guest_save, docs/image.md) holds,
 * and whether every page of it is intact.
 *
 *   umlmem image info FILE     the header and the map, validated as a
 *                              restore validates them
 *   umlmem image verify FILE   the same, then every stored page read and
 *                              checked against its checksum
 *
 * Both go through the library's own parser (umlmem/testing.h), so they
 * accept exactly what umlmem_guest_restore() accepts and say what is wrong
 * in the same words. Exit status: 0 a valid image (verify: every page
 * intact), 1 a bad image or a damaged page, 2 bad usage.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "umlmem.h"
#include "testing.h"
#include "cmd.h"
#define CLI_CMD "image"
#include "cli.h"

enum { O_JSON = 1 };

static const struct cli_opt opts[] = {
	{ "--json", false, O_JSON },
	{ NULL, false, 0 },
};

struct args {
	bool json;
	const char *words[3];
	unsigned nwords;
};

static void usage(FILE *f)
{
	fprintf(f, "usage: %s image info|verify FILE [--json]\n\n", PROG);
	fprintf(f, "A saved guest image (umlmem_guest_save): info validates the header and\n"
		   "the page map as a restore does and shows them; verify also reads every\n"
		   "stored page and checks it against its checksum.\n\n");
	fprintf(f, "options:\n");
	fprintf(f, "  --json         one JSON object instead of text\n");
	fprintf(f, "  -h, --help     this help\n");
}

static int on_opt(void *ctx, int id, const char *arg)
{
	struct args *a = ctx;

	if (id == O_JSON) {
		a->json = true;
		return 0;
	}
	if (a->nwords == 2) {
		usage_error("one command and one FILE, not '%s' as well", arg);
		return EXIT_USAGE;
	}
	a->words[a->nwords++] = arg;
	return 0;
}

int cmd_image(int argc, char **argv)
{
	struct umlmem_test_image im;
	struct args a = { 0 };
	bool verify;
	char err[512] = "", b1[32], b2[32];
	int fd, rc;

	rc = parse_options(argc, argv, opts, true, on_opt, &a, usage);
	if (rc)
		return rc < 0 ? 0 : rc;
	if (a.nwords != 2 || (strcmp(a.words[0], "info") && strcmp(a.words[0], "verify"))) {
		usage_error("expected info or verify, then the image FILE");
		return EXIT_USAGE;
	}
	verify = !strcmp(a.words[0], "verify");
	fd = open(a.words[1], O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "%s image: %s: %s\n", PROG, a.words[1], strerror(errno));
		return 1;
	}
	rc = umlmem_test_image(fd, verify, &im, err, sizeof(err));
	close(fd);
	if (a.json) {
		printf("{\"file\": ");
		json_string(stdout, a.words[1]);
		printf(", \"valid\": %s, \"error\": ", rc ? "false" : "true");
		json_string(stdout, rc ? err : NULL);
		if (!rc) {
			printf(", \"version\": %u, \"page_size\": %u, \"guest_bytes\": %" PRIu64
			       ", \"pages\": %" PRIu64 ", \"records\": %" PRIu64
			       ", \"lz4_records\": %" PRIu64 ", \"lz4_bytes\": %" PRIu64
			       ", \"data_bytes\": %" PRIu64 ", \"file_bytes\": %" PRIu64,
			       im.version, im.page_size, im.guest_bytes, im.pages, im.records,
			       im.lz4_records, im.lz4_bytes, im.data_bytes, im.file_bytes);
			if (verify)
				printf(", \"bad_records\": %" PRIu64, im.bad_records);
		}
		printf("}\n");
	} else if (rc) {
		fprintf(stderr, "%s image: %s: %s\n", PROG, a.words[1], err);
	} else {
		printf("%s: umlmem image, version %u, pages of %u bytes\n", a.words[1], im.version,
		       im.page_size);
		printf("  guest size       %s (%" PRIu64 " bytes)\n",
		       fmt_bytes(b1, sizeof(b1), im.guest_bytes), im.guest_bytes);
		printf("  pages stored     %" PRIu64 " not zero, %" PRIu64 " distinct\n", im.pages,
		       im.records);
		printf("  compressed       %" PRIu64 " records in %s (lz4)\n", im.lz4_records,
		       fmt_bytes(b1, sizeof(b1), im.lz4_bytes));
		printf("  image length     %s (page data %s)\n",
		       fmt_bytes(b1, sizeof(b1), im.file_bytes),
		       fmt_bytes(b2, sizeof(b2), im.data_bytes));
		if (verify && !im.bad_records)
			printf("  verified         every stored page matches its checksum\n");
		else if (verify)
			printf("  DAMAGED          %" PRIu64 " stored pages do not match their "
			       "checksum; the first guest page holding one is %" PRIu64
			       " (address 0x%" PRIx64 ")\n", im.bad_records, im.first_bad_page,
			       im.first_bad_page * UMLMEM_PAGE_SIZE);
	}
	return rc || im.bad_records ? 1 : 0;
}
