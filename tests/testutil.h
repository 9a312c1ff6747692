/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Small helpers shared by the Criterion tests: a fresh swap directory per
 * test, host and guest creation that fails the test with the library's own
 * message, a reproducible byte pattern, the invariant checker, and the
 * process's resident set from /proc.
 *
 * Everything is static inline so each test file stands alone.
 */
#ifndef UMLMEM_TESTUTIL_H
#define UMLMEM_TESTUTIL_H

#ifdef UMLMEM_CRSHIM
#include "crshim.h"
#else
#include <criterion/criterion.h>
#endif
#include <dirent.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "umlmem.h"
#include "internal.h"

#define TU_KiB (1024ull)
#define TU_MiB (1024ull * 1024)
#define TU_GiB (1024ull * 1024 * 1024)

/* Under valgrind the same binary runs about 50 times slower, so loops that
   only add confidence are shrunk; UMLMEM_TEST_SCALE=valgrind says so. */
static inline bool tu_valgrind(void)
{
	const char *s = getenv("UMLMEM_TEST_SCALE");

	return s && strcmp(s, "valgrind") == 0;
}

/* @n, or a tenth of it (at least 1) under valgrind. */
static inline uint64_t tu_scaled(uint64_t n)
{
	if (!tu_valgrind())
		return n;
	return n / 10 ? n / 10 : 1;
}

/* Creates a fresh directory under /var/tmp (a real disk, unlike a tmpfs
   /tmp, so O_DIRECT and hole punching behave as in use) into @dir, which
   must hold at least 64 bytes. */
static inline void tu_mkswapdir(char *dir)
{
	strcpy(dir, "/var/tmp/umlmem-test.XXXXXX");
	cr_assert_not_null(mkdtemp(dir), "mkdtemp under /var/tmp failed");
}

/* Removes @dir and whatever is left in it (swap files are unlinked at
   creation, so normally nothing is). Safe on "" and on a missing dir. */
static inline void tu_rmswapdir(const char *dir)
{
	DIR *d;
	struct dirent *de;

	if (!dir || !dir[0])
		return;
	d = opendir(dir);
	if (d) {
		while ((de = readdir(d)) != NULL) {
			if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
				unlinkat(dirfd(d), de->d_name, 0);
		}
		closedir(d);
	}
	rmdir(dir);
}

/* A host of @budget bytes, swap capped at @swap_cap (0: unlimited), swap
   files in @dir, the default engine and no background threads, so that the
   tests drive every eviction themselves. */
static inline umlmem_host *tu_host(const char *dir, uint64_t budget, uint64_t swap_cap)
{
	struct umlmem_host_config cfg;
	umlmem_host *h = NULL;
	int rc;

	umlmem_host_config_init(&cfg);
	cfg.resident_bytes = budget;
	cfg.swap_dir = dir;
	cfg.swap_bytes = swap_cap;
	rc = umlmem_host_create(&cfg, &h);
	cr_assert_eq(rc, 0, "umlmem_host_create(budget %llu, cap %llu): %s: %s",
		     (unsigned long long)budget, (unsigned long long)swap_cap,
		     umlmem_strerror(rc), umlmem_errmsg());
	cr_assert_not_null(h);
	return h;
}

/* A guest of @ram_bytes on @h. */
static inline umlmem_guest *tu_guest(umlmem_host *h, uint64_t ram_bytes)
{
	struct umlmem_guest_config cfg;
	umlmem_guest *g = NULL;
	int rc;

	umlmem_guest_config_init(&cfg);
	cfg.ram_bytes = ram_bytes;
	rc = umlmem_guest_create(h, &cfg, &g);
	cr_assert_eq(rc, 0, "umlmem_guest_create(%llu): %s: %s",
		     (unsigned long long)ram_bytes, umlmem_strerror(rc), umlmem_errmsg());
	cr_assert_not_null(g);
	return g;
}

/* splitmix64: a fast generator whose stream depends only on the seed. */
static inline uint64_t tu_splitmix64(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Fills @len bytes with the splitmix64 stream of @seed: the same seed gives
   the same bytes, so expected content can be regenerated instead of kept. */
static inline void tu_fill(void *buf, size_t len, uint64_t seed)
{
	uint8_t *p = buf;
	uint64_t st = seed, v;
	size_t i = 0;

	while (i < len) {
		v = tu_splitmix64(&st);
		for (unsigned k = 0; k < 8 && i < len; k++, i++, v >>= 8)
			p[i] = (uint8_t)v;
	}
}

/* Runs the library's invariant checker and fails the test with its message. */
static inline void tu_check(umlmem_host *h)
{
	char msg[512] = "";
	int rc = host_check(h, msg, sizeof(msg));

	cr_assert_eq(rc, 0, "host_check: %d: %s", rc, msg);
}

/* A "Name:   1234 kB" field of /proc/self/status, in bytes; 0 if absent. */
static inline uint64_t tu_status_bytes(const char *field)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	size_t n = strlen(field);
	uint64_t kb = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, field, n) == 0 && line[n] == ':') {
			kb = strtoull(line + n + 1, NULL, 10);
			break;
		}
	}
	fclose(f);
	return kb * 1024;
}

/* Frames that hold a page read ahead and not yet mapped: with no sharing,
   frames_used == resident_pages + this, whenever no call is in flight. */
static inline uint64_t tu_cached(umlmem_host *h)
{
	struct umlmem_host_info i;

	cr_assert_eq(umlmem_host_info(h, &i, sizeof(i)), 0);
	/* frames no guest page maps: pages read ahead, and the compressed
	   pool's frames */
	return i.frames_cached + i.pool_frames;
}

static inline uint64_t tu_vmrss(void) { return tu_status_bytes("VmRSS"); }
static inline uint64_t tu_rssshmem(void) { return tu_status_bytes("RssShmem"); }

/* ---- SIGBUS ------------------------------------------------------------ */

/* Native mode raises SIGBUS where a load cannot be served (the kernel's
   answer to a failed swap-in); tests check that it comes, once. */
static sigjmp_buf tu_busjmp __attribute__((unused));

static void __attribute__((unused)) tu_on_sigbus(int sig)
{
	(void)sig;
	siglongjmp(tu_busjmp, 1);
}

/* Loads the byte at @p with a SIGBUS handler installed for that load only:
   0 and the byte in *out, or 1 when the load raised SIGBUS (*out is then
   left alone). */
static inline int tu_load_sigbus(const volatile uint8_t *p, volatile uint8_t *out)
{
	struct sigaction sa, old;
	volatile int bus = 0;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = tu_on_sigbus;
	sigemptyset(&sa.sa_mask);
	cr_assert_eq(sigaction(SIGBUS, &sa, &old), 0);
	if (!sigsetjmp(tu_busjmp, 1))
		*out = *p;
	else
		bus = 1;
	sigaction(SIGBUS, &old, NULL);
	return bus;
}

#endif
