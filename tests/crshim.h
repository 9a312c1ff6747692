/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A stand-in for the part of Criterion the tests use, for the builds that
 * Criterion cannot run under: ThreadSanitizer reserves the address range
 * where Criterion's sandbox wants its shared arena, so a TSan build of the
 * suite aborts before the first test. With UMLMEM_CRSHIM defined, tests
 * register here instead and run one after another in this process; a
 * failed assertion ends the run with status 1.
 *
 * Only what the tests use is here: Test(), TestSuite() with .init and
 * .fini (run around every test of the suite; other options are ignored),
 * cr_assert*, cr_expect*, cr_log_info, cr_skip_test.
 */
#ifndef UMLMEM_CRSHIM_H
#define UMLMEM_CRSHIM_H

#include <fnmatch.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct crshim_suite {
	void (*init)(void), (*fini)(void);
	double timeout;
	const char *description;
};

struct crshim_test {
	const char *suite, *name;
	void (*fn)(void);
	struct crshim_suite *opts;   /* NULL: the suite has no TestSuite() */
	struct crshim_test *next;
};

extern struct crshim_test *crshim_tests;
extern int crshim_failed;

#define TestSuite(suite, ...) struct crshim_suite crshim_suite_##suite = { __VA_ARGS__ }
#define Test(suite, name, ...)                                                     \
	extern struct crshim_suite crshim_suite_##suite __attribute__((weak));     \
	static void suite##_##name(void);                                          \
	static struct crshim_test suite##_##name##_t = { #suite, #name, suite##_##name, \
							 &crshim_suite_##suite, 0 }; \
	__attribute__((constructor)) static void suite##_##name##_reg(void)        \
	{                                                                          \
		suite##_##name##_t.next = crshim_tests;                            \
		crshim_tests = &suite##_##name##_t;                                \
	}                                                                          \
	static void suite##_##name(void)

__attribute__((format(printf, 5, 6)))
static inline void crshim_fail(int fatal, const char *what, const char *file, int line,
			       const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s:%d: assertion failed: %s", file, line, what);
	if (fmt[0]) {
		fputs(": ", stderr);
		va_start(ap, fmt);
		vfprintf(stderr, fmt, ap);
		va_end(ap);
	}
	fputc('\n', stderr);
	crshim_failed = 1;
	if (fatal)
		exit(1);
}

#define crshim_check(fatal, cond, what, ...)                                       \
	do {                                                                       \
		if (!(cond))                                                       \
			crshim_fail(fatal, what, __FILE__, __LINE__, "" __VA_ARGS__); \
	} while (0)

#define cr_assert(c, ...)            crshim_check(1, (c), #c, __VA_ARGS__)
#define cr_assert_fail(...)          crshim_fail(1, "cr_assert_fail", __FILE__, __LINE__, "" __VA_ARGS__)
#define cr_expect(c, ...)            crshim_check(0, (c), #c, __VA_ARGS__)
#define cr_assert_not(c, ...)        crshim_check(1, !(c), "!" #c, __VA_ARGS__)
#define cr_assert_null(p, ...)       crshim_check(1, (p) == NULL, #p " == NULL", __VA_ARGS__)
#define cr_assert_not_null(p, ...)   crshim_check(1, (p) != NULL, #p " != NULL", __VA_ARGS__)
#define cr_assert_eq(a, b, ...)      crshim_check(1, (a) == (b), #a " == " #b, __VA_ARGS__)
#define cr_assert_neq(a, b, ...)     crshim_check(1, (a) != (b), #a " != " #b, __VA_ARGS__)
#define cr_assert_lt(a, b, ...)      crshim_check(1, (a) < (b), #a " < " #b, __VA_ARGS__)
#define cr_assert_leq(a, b, ...)     crshim_check(1, (a) <= (b), #a " <= " #b, __VA_ARGS__)
#define cr_assert_gt(a, b, ...)      crshim_check(1, (a) > (b), #a " > " #b, __VA_ARGS__)
#define cr_assert_geq(a, b, ...)     crshim_check(1, (a) >= (b), #a " >= " #b, __VA_ARGS__)
#define cr_expect_eq(a, b, ...)      crshim_check(0, (a) == (b), #a " == " #b, __VA_ARGS__)
#define cr_expect_neq(a, b, ...)     crshim_check(0, (a) != (b), #a " != " #b, __VA_ARGS__)
#define cr_expect_lt(a, b, ...)      crshim_check(0, (a) < (b), #a " < " #b, __VA_ARGS__)
#define cr_expect_leq(a, b, ...)     crshim_check(0, (a) <= (b), #a " <= " #b, __VA_ARGS__)
#define cr_expect_gt(a, b, ...)      crshim_check(0, (a) > (b), #a " > " #b, __VA_ARGS__)
#define cr_expect_geq(a, b, ...)     crshim_check(0, (a) >= (b), #a " >= " #b, __VA_ARGS__)
#define cr_assert_str_eq(a, b, ...)  crshim_check(1, !strcmp((a), (b)), #a " eq " #b, __VA_ARGS__)
#define cr_log_info(...)             (fprintf(stderr, "[info] " __VA_ARGS__), fputc('\n', stderr))
#define cr_skip_test(...)            do { cr_log_info("skipped: " __VA_ARGS__); return; } while (0)

#endif
