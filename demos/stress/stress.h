/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * stress.h: what the files of `umlmem stress` share: its sizes, the state
 * of a run and of each thread, and the calls between the files. stress.c
 * has the run (threads, setup, results, options; see its opening comment),
 * model.c the description of every page's expected bytes and the checks
 * against it, ops.c the blocks a thread owns and the operations it does.
 */
#ifndef UMLMEM_STRESS_H
#define UMLMEM_STRESS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "umlmem.h"

#define PAGE		((uint64_t)UMLMEM_PAGE_SIZE)
#define MIB		(1024.0 * 1024.0)

#define BLOCK_PAGES	13u	/* unit of ownership; see the top comment */
#define MAX_SEGS	6u	/* runs per page in the model */
#define MAX_OP_PAGES	4u	/* longest read or write, in pages */
#define NPAT		4u	/* few, so that equal pages are common */
#define MAX_PINS	8u	/* pins a thread holds at most */
#define MAX_THREADS	256u
#define MAX_GUESTS	4096u
#define MAX_REPORTS	10u	/* mismatches and errors printed in full */
#define PROGRESS_S	1.0
#define STALL_S		60.0

/* ------------------------------------------------------------------------ */
/* State                                                                    */
/* ------------------------------------------------------------------------ */

enum op_kind {
	OP_NONE, OP_READ, OP_WRITE, OP_FILL, OP_PIN, OP_PINNED, OP_UNPIN,
	OP_DISCARD, OP_DEDUP, OP_BAD, OP_FINAL, NOPS
};

static const char *const op_name[NOPS] = {
	"idle", "read", "write", "fill", "pin", "pinned access", "unpin",
	"discard", "dedup scan", "bad call", "final check",
};

enum seg_kind { SEG_ZERO = 0, SEG_PAT, SEG_RAND };

/* One run of a page's bytes, from the previous run's end to @end. */
struct seg {
	uint16_t end;
	uint8_t kind;		/* enum seg_kind */
	uint8_t pat;		/* SEG_PAT: which pattern */
	uint32_t stamp;		/* SEG_RAND: which write of the owner */
};

/* n == 0: never written since the start, all zeros. */
struct page_model {
	struct seg s[MAX_SEGS];
	uint32_t last_op;	/* the owner's op number that last changed it */
	uint8_t n;
	uint8_t last_kind;	/* enum op_kind of that op */
	uint8_t unknown;	/* a failed write left it partly written */
};

struct pin {
	unsigned gi;
	uint64_t page;
	unsigned access;
	unsigned char *p;
};

struct counters {
	uint64_t ops, reads, writes, fills, pins, pin_checks, pin_writes, unpins;
	uint64_t discards, busy_discards, scans, merged, bad_calls;
	uint64_t errors, mismatches, mismatched_bytes;
	uint64_t checked_bytes;	/* by the final check */
};

struct stress;

struct worker {
	struct stress *s;
	unsigned id;
	pthread_t tid;
	uint64_t rng;
	uint64_t quota;		/* ops, with --ops */
	bool by_ops;		/* else until told to stop */
	uint64_t nblocks;	/* blocks owned */
	uint64_t key;		/* base of this thread's random content */
	uint32_t stamp;
	uint32_t opno;
	enum op_kind op;	/* the op being done, for reports */
	struct pin pins[MAX_PINS];
	unsigned npins;
	unsigned char *buf;	/* BLOCK_PAGES pages: data in or out */
	unsigned char *want;	/* one page: expected bytes */
	struct counters c;
	/* read by the main thread while the worker runs */
	_Atomic uint64_t a_ops;
	_Atomic uint64_t a_checked;
	_Atomic int a_op;
	_Atomic unsigned a_gi;
	_Atomic uint64_t a_gpa;
};

struct stress {
	/* options */
	unsigned threads;
	unsigned guests;
	uint64_t guest_bytes;
	uint64_t budget_bytes;
	double seconds;
	uint64_t ops_total;	/* 0: run for @seconds */
	const char *swap_dir;
	uint64_t seed;
	bool json, quiet, background, dedup;

	/* derived */
	uint64_t guest_pages;
	uint64_t guest_blocks;	/* per guest */
	uint64_t total_blocks;
	unsigned max_pins;	/* per thread */

	/* run state */
	umlmem_host *host;
	umlmem_guest **g;
	unsigned created;
	struct page_model **pm;
	unsigned char (*pat)[PAGE];
	struct worker *w;
	pthread_barrier_t barrier;
	atomic_bool stop;
	atomic_uint finished;	/* workers done with everything */
	atomic_uint final_started;
	_Atomic uint64_t a_errors, a_mismatches;
	atomic_uint reports;
	pthread_mutex_t lock;
	char error[1024];	/* first unexpected failure */
	char mismatch[1024];	/* first mismatch */

	/* results */
	struct counters tot;
	struct umlmem_stats st;
	struct umlmem_host_info info;
	bool have_stats;
	uint64_t peak_frames;
	enum umlmem_io_engine engine;
	char engine_why[256];
	bool final_complete;
	uint64_t warnings;
	double t0, wall_s, run_s;
};

struct block {
	unsigned gi;
	uint64_t first, end;	/* pages [first, end) */
};

/* stress.c: reports. The first MAX_REPORTS failures are printed in full. */
void stress_report(struct stress *s, char *first, size_t firstlen, const char *line);
void stress_fail_line(struct worker *w, const char *what);
void stress_lib_error(struct worker *w, int rc, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void stress_unexpected(struct worker *w, int rc, int want, const char *call);

/* model.c: each page's expected bytes and the checks against them. */
uint64_t model_page_len(const struct stress *s, uint64_t page);
void model_seg_fill(const struct worker *w, unsigned gi, uint64_t page,
		    const struct seg *sg, unsigned lo, unsigned hi, unsigned char *out);
void model_expect(const struct worker *w, unsigned gi, uint64_t page,
		  unsigned lo, unsigned hi, unsigned char *out);
bool model_fits(const struct stress *s, const struct page_model *m, uint64_t page,
		unsigned lo, unsigned hi, struct seg ns);
void model_apply(struct worker *w, unsigned gi, uint64_t page, unsigned lo,
		 unsigned hi, struct seg ns);
void model_unknown(struct worker *w, unsigned gi, uint64_t first, uint64_t last);
void model_check_page(struct worker *w, unsigned gi, uint64_t page, unsigned lo,
		      unsigned hi, const unsigned char *got);
void model_check_range(struct worker *w, unsigned gi, uint64_t gpa, uint64_t len,
		       const unsigned char *got);

/* ops.c: a thread's blocks and operations. */
void ops_block_of(const struct stress *s, uint64_t k, struct block *b);
void ops_set_current(struct worker *w, enum op_kind op, unsigned gi, uint64_t gpa);
void ops_drop_pin(struct worker *w, unsigned i);
void ops_random(struct worker *w);
void ops_final_check(struct worker *w);

#endif
