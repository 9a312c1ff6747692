/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * demo.h: what the files of `umlmem demo` share: its sizes, the state of a
 * run (struct demo) and the calls one file makes into another. demo.c has
 * the run itself (see its opening comment), image.c the OS image every
 * guest boots, plot.c the SVG of --plot.
 */
#ifndef UMLMEM_DEMO_H
#define UMLMEM_DEMO_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <xxhash.h>

#include "umlmem.h"

#define PAGE		((uint64_t)UMLMEM_PAGE_SIZE)
#define KIB		1024ull
#define MIB		(1024ull * KIB)
#define GIB		(1024ull * MIB)

/* The 2009 proof of concept: 52 guests of 1 GiB on a 16 GiB host. */
#define SEED_GUESTS	52u
#define SEED_GUEST	(1ull * GIB)
#define SEED_HOST	(16ull * GIB)
#define SEED_OVERCOMMIT	3.25

#define MAX_GUESTS	4096u
#define MAX_FILE	(8 * MIB)	/* larger files are not in the image */
#define LOW_BYTES	(1 * MIB)	/* left alone, as firmware memory would be */
#define HEAP_MAX	(64 * MIB)
#define HEAP_MIN	(16 * PAGE)
#define CONF_MAX	6000u		/* text of a guest's configuration: two pages */
#define CHUNK		(1 * MIB)	/* verify reads this much at a time */
#define SLICE_OPS	50u		/* work ops a guest runs before the next one's turn */
#define WRITE_PCT	10u
#define HEAP_READ_PCT	30u		/* of reads; the rest read file pages */
#define HEAP_WRITE_PCT	85u		/* of writes; the rest write file pages */
#define SCAN_BATCH	16384u
#define MERGE_PASSES	3u
#define SAMPLE_MS	100
#define TTY_REDRAW_S	0.2
#define LINE_EVERY_S	2.0
#define MAX_REPORTS	10


enum phase { PH_START, PH_BOOT, PH_WORK, PH_VERIFY, PH_DONE, NPHASES };

extern const char *const phase_name[NPHASES];

/* xxh3 of one page: what the demo expects of each page. */
static inline uint64_t page_hash(const void *p)
{
	return XXH3_64bits(p, PAGE);
}

static inline uint64_t round_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) / a * a;
}

/* ------------------------------------------------------------------------ */
/* State                                                                    */
/* ------------------------------------------------------------------------ */

struct osfile {
	char *path;
	uint64_t size;		/* bytes of the file */
	uint64_t off;		/* page-aligned offset in the image */
	bool binary;		/* an executable ELF file */
};

/* The OS image as the page cache of every guest holds it. */
struct image {
	struct osfile *files;
	size_t nfiles, cap;
	unsigned char *bytes;	/* files at their offsets, zeros between */
	uint64_t len;		/* bytes used: page-rounded sum of the files */
	uint64_t limit;		/* bytes allocated: --os-bytes */
	uint64_t content;	/* sum of the file sizes */
	uint64_t *sum;		/* xxh3 of every page of bytes[0, len) */
	uint64_t skipped;	/* files passed over: links, empty, too big, unreadable */
};

/* One guest and what the demo expects of it. */
struct vm {
	umlmem_guest *g;
	uint64_t *want;		/* expected xxh3 of each page of the window */
	uint64_t rng;		/* its own stream: the work it does */
	uint64_t pc_cur;	/* locality: the page it works near, in each region */
	uint64_t heap_cur;
	uint64_t ops;		/* work ops done */
};

struct sample {
	double t;
	uint64_t resident, frames_used, frames_free, frames_cached, sharing, swapped;
};

struct mark {
	double t;
	enum phase ph;
};

struct demo {
	/* options */
	unsigned guests;
	uint64_t guest_bytes;
	uint64_t budget_bytes;
	uint64_t os_bytes;
	const char *os_dirs;
	uint64_t per_guest_bytes;
	uint64_t work_ops;
	const char *swap_dir;
	uint64_t seed;
	bool dedup;
	enum umlmem_compress compress;  /* --compress; AUTO by default */
	bool clone;		/* boot guest 1 only; the others are its clones */
	bool json;
	bool quiet;
	const char *plot;

	/* the image and each guest's own files */
	struct image im;
	size_t bin[2];		/* replaced binaries: indexes into im.files */
	unsigned nbin;
	uint64_t bin_bytes;
	uint64_t conf_off;	/* the configuration file, in the page cache */
	uint64_t conf_len;

	/* guest layout */
	uint64_t pc_base, pc_pages;	/* page cache: the image, then the configuration */
	uint64_t heap_base, heap_pages;
	uint64_t win_first, win_pages;	/* pages with an expectation; others are zeros */
	uint64_t zero_sum;

	umlmem_host *host;
	struct vm *vm;
	unsigned created;
	unsigned char *buf;	/* CHUNK + 2 pages; also a binary's new build */
	unsigned char *buf2;
	size_t buflen;
	enum umlmem_io_engine engine;
	char engine_why[256];

	/* shared with the sampler thread; under mu unless atomic */
	pthread_t sampler;
	pthread_mutex_t mu;	/* also keeps stderr lines whole */
	pthread_cond_t cv;
	bool sampler_on, stop;
	_Atomic int phase;
	_Atomic unsigned done;		/* guests booted or verified */
	_Atomic uint64_t units;		/* bytes written, ops run, bytes verified */
	struct sample *samples;
	size_t nsamples, capsamples;
	struct mark marks[NPHASES];
	unsigned nmarks;
	uint64_t peak_frames;
	bool tty, drawn;
	double t0, last_line, rate_t;
	uint64_t rate_units;
	double rate;

	/* results */
	struct umlmem_stats st;
	struct umlmem_host_info info;
	bool have_stats;
	double clone_s;			/* in umlmem_guest_clone() calls, in all */
	double clone_max_s;		/* the longest of them */
	uint64_t written_bytes;
	uint64_t checked_bytes;		/* verify phase: bytes read back and checked */
	uint64_t work_checked;		/* work phase: pages checked on the way */
	uint64_t mismatches;		/* page checks that failed */
	unsigned guests_verified;
	unsigned reports;
	double phase_s[NPHASES];
	double wall_s;
	uint64_t rss_peak;
	bool plot_ok;
	char error[1024];
};

/* demo.c: a line on stderr that does not tear the status line. */
void demo_say(struct demo *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* demo.c: every byte of every guest was checked and right. */
bool demo_verified(const struct demo *d);

/* image.c: the OS image (see demo.c's opening comment for the selection). */
int os_select(struct demo *d);		/* builds d->im from --os-dirs; 0 or -1 after saying why */
void os_free(struct image *im);
const struct osfile *os_file_at(const struct image *im, uint64_t off);
void os_own_files(struct demo *d);	/* the binaries each guest replaces */
bool os_layout(struct demo *d);		/* a guest's RAM; false after saying why */

/* plot.c: the SVG of memory over time to d->plot; false after saying why. */
bool plot_write(struct demo *d);

#endif
