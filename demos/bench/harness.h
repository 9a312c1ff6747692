/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * harness.h: what the families of `umlmem bench` figures share (harness.c,
 * phase.c): the run's options, each figure's result, the helpers that
 * build hosts and baselines alike for every family, and the table of
 * families.
 *
 * A family is one file that measures one or more figures (keys) and
 * defines a `const struct bench_family bench_<name>`; it is registered by
 * one line in families.h. Its run() gets one result per key, in the order
 * of its keys[]; a result whose want is false was not asked for (--only),
 * and must be left alone.
 */
#ifndef UMLMEM_BENCH_HARNESS_H
#define UMLMEM_BENCH_HARNESS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "umlmem.h"
#include "cli.h"
#include "rng.h"

#define BENCH_PROG	"umlmem bench"
#define PAGE		((uint64_t)UMLMEM_PAGE_SIZE)
#define WORDS		(PAGE / 8)

/* ---- results ------------------------------------------------------------ */

enum rstate { RS_NONE = 0, RS_OK, RS_SKIP, RS_ERROR };
enum fkind { F_INT, F_NUM, F_STR, F_BOOL };

struct field {
	const char *name;
	enum fkind kind;
	double num;
	int64_t i;
	char str[200];
};

#define MAX_FIELDS 32

/*
 * One figure. state RS_OK: value, baseline, ratio and unit are set
 * (res_set); RS_SKIP / RS_ERROR: reason says why (res_fail). The fields and
 * the note are printed in the order they were added.
 */
struct result {
	const char *key;	/* as printed, and as --only takes it */
	bool want;		/* asked for in this run */
	enum rstate state;
	double value, baseline, ratio;
	const char *unit;
	char note[1024];
	char reason[512];	/* RS_SKIP or RS_ERROR */
	struct field f[MAX_FIELDS];
	unsigned nf;
};

void res_int(struct result *r, const char *name, int64_t v);
void res_num(struct result *r, const char *name, double v);
void res_bool(struct result *r, const char *name, bool v);
void res_str(struct result *r, const char *name, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Appends a sentence to the note ("; " between sentences). */
void res_note(struct result *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Sets a rate (more is better) or a time (less is better, @is_time): the
   ratio is value / baseline for rates and baseline / value for times, so
   that above 1 always favours umlmem. */
void res_set(struct result *r, double value, double baseline, const char *unit, bool is_time);
/* Marks the figure skipped or failed, and says why on stderr. The first
   failure is the one that explains the figure: later ones are dropped. */
void res_fail(struct result *r, enum rstate st, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* A failed library call @what, with the library's own sentence. */
void res_lib_fail(struct result *r, int rc, const char *what);

/* ---- the run ------------------------------------------------------------ */

struct bench {
	/* options */
	bool json, quick;
	const char *swap_dir;		/* NULL: the library's default */
	enum umlmem_io_engine want_engine;
	uint64_t budget;
	double seconds, warm;

	/* the engine the hosts really use: the baselines run on the same kind
	   (set by the first bench_host()) */
	bool have_engine;
	enum umlmem_io_engine engine;
	char engine_note[256];

	struct result *r;		/* one per key of every family, in table order */
	unsigned nr;
	double t_start;
	/* other load on the machine, for whoever reads the numbers */
	double load_start, load_end;
};

/* A figure's key, and its lines of `umlmem bench --help`. */
struct bench_key {
	const char *name;
	const char *help;	/* one or more lines, each ending in \n, column 23 on */
	/* a key whose value is this one's baseline: --only runs it too */
	const char *needs;
};

struct bench_family {
	const char *name;
	const struct bench_key *keys;	/* ends with { NULL } */
	/* Measures the family's figures; r[i] is keys[i]'s result. Called
	   once, in table order, even when none of its keys is wanted. */
	void (*run)(struct bench *b, struct result **r);
};

#define BENCH_FAMILY(name) extern const struct bench_family bench_##name;
#include "families.h"
#undef BENCH_FAMILY

/* Another family's result by key, for a figure whose baseline it is;
   aborts on a key no family has (a mistake in the program). */
struct result *bench_result(struct bench *b, const char *key);

/* The swap directory the hosts and baselines use, default resolved. */
const char *bench_swap_dir(const struct bench *b);

/* "umlmem bench: <message>" on stderr. */
void bench_progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * Undoing changes to the system, whatever ends the run. A figure that
 * changes the machine outside the process (a swap file, a cgroup, KSM's
 * settings) registers a cleanup with bench_cleanup_on() before it starts
 * changing things, and calls bench_cleanup_off() when it has undone them.
 * Registered cleanups run at exit and on SIGINT, SIGTERM and SIGHUP (while
 * on), so each must do only system calls (it may run in a signal handler),
 * and nothing unless its own figure set something up in this very process
 * (a forked child inherits the handlers).
 */
void bench_cleanup_on(void (*fn)(void));
void bench_cleanup_off(void);
/* In a forked child: the signals back to their defaults. */
void bench_cleanup_child(void);

/* ---- content, memory, files --------------------------------------------- */

/* The content rule shared by every figure: never zero, never repeated. */
static inline uint64_t word_of(uint64_t page, uint64_t w)
{
	return page * WORDS + w + 1;
}

/* @npages pages of the content rule from @first_page, xor @salt. */
void bench_fill_pages(uint64_t *buf, uint64_t first_page, uint64_t npages, uint64_t salt);
/* Page-aligned anonymous memory, 4 KiB pages (MADV_NOHUGEPAGE), so that both
   sides of a comparison see the same TLB reach; NULL on failure. */
void *bench_map_pages(uint64_t bytes);
/* Writes @val to a sysfs/procfs/cgroup file; 0 or -errno. */
int bench_write_file(const char *path, const char *val);
/* The first line of a file, without its newline. */
bool bench_read_line(const char *path, char *buf, size_t len);

/* Appends @rate, rounded, to the space-separated list @s (a "rates" field). */
void res_rates_append(char *s, size_t len, double rate);

/* ---- hosts ------------------------------------------------------------- */

/*
 * A host of @budget with the run's swap directory and engine, and on it one
 * guest of @guest_bytes (UMLMEM_GUEST_NOMERGE) named @name. The first host
 * of the run records the engine that really runs. On failure records why
 * in @r and leaves *hp and *gp NULL.
 */
int bench_host(struct bench *b, struct result *r, uint64_t budget, uint64_t guest_bytes,
	       unsigned flags, const char *name, umlmem_host **hp, umlmem_guest **gp);
#define FILL_PAGES 64u	/* pages per umlmem_write() while filling */

/* Writes every page of [0, bytes) of @g with the content rule (xor @salt);
   with @what, says how far it got every 2 s. */
int bench_fill_guest(struct result *r, umlmem_guest *g, uint64_t bytes, uint64_t salt,
		     const char *what);

/* ---- phase.c: the raw baseline file and timed random-read phases --------- */

#define RAW_WRITE_PAGES 256u	/* 1 MiB per batch while filling */
#define RAW_THREADS_MAX 8u

struct umlmem_test_disk;

/* A swap set of the library's kind in the swap directory, with an engine of
   the hosts' kind on it: what one fault has to do at the least. */
struct rawfile {
	struct umlmem_test_disk *d;
	uint64_t npages;
	uint64_t *slots;	/* the slots written by raw_fill */
	uint8_t *mem;		/* the engine's store: write batch + one page per reader */
	uint64_t mem_bytes;
	bool direct;
};

/* A fresh file for @npages pages, @mem_pages of store. */
int raw_open(struct bench *b, struct result *r, struct rawfile *f, uint64_t npages,
	     unsigned mem_pages);
/* Allocates @n (at most RAW_WRITE_PAGES) fresh slots into @slots and writes
   the first @n pages of the store to them in one batch. */
int raw_write_batch(struct result *r, struct rawfile *f, uint64_t *slots, unsigned n);
/* Allocates every slot of the file and writes it, RAW_WRITE_PAGES per batch. */
int raw_fill(struct result *r, struct rawfile *f);
/* One 4 KiB read of a random written slot into @buf (of the store). */
int raw_read_random(struct rawfile *f, uint64_t *rng, void *buf);
void raw_close(struct rawfile *f);

struct phase;

struct phase_out {
	double secs;
	uint64_t ops;
	uint64_t swap_ins, faults;	/* umlmem side */
	uint64_t ra_pages, ra_hits;	/* readahead, from the host */
};

/* Random 8-byte reads of one guest (every value checked against the
   content rule), or random raw page reads, by up to RAW_THREADS_MAX
   threads. phase_new() returns NULL (and records why) on failure. */
struct phase *phase_new(struct result *r, uint64_t npages);
void phase_free(struct phase *ph);
/*
 * Runs @nthreads readers of guest @g of host @h (or of @raw when @g is
 * NULL) for @warm seconds, then for @secs timed ones, bounded by two
 * samples taken together (clock, operation counters, guest counters) so
 * that every count belongs to the same interval; adds the counts to @out.
 */
int run_slice(struct result *r, struct phase *ph, umlmem_host *h, umlmem_guest *g,
	      struct rawfile *raw, unsigned nthreads, uint64_t seed, double warm, double secs,
	      struct phase_out *out);
/* Writes the fill's dirty pages out and reads the budget back in (its
   first pages, in order), so that a timed page-in phase starts with every
   resident page clean and every frame holding memory: its faults then
   read, and evict without writing. 0 or the library's error, recorded. */
int bench_settle(struct result *r, umlmem_host *h, umlmem_guest *g, uint64_t budget);
/* umlmem and the raw file in alternating slices of one timed phase (the
   run's --seconds each), so that a change of the disk's speed or of other
   load during the run falls on both sides alike. */
int run_compare(struct bench *b, struct result *r, struct phase *ph, unsigned nthreads,
		umlmem_host *h, umlmem_guest *g, struct rawfile *raw, struct phase_out *u,
		struct phase_out *base);

#endif
