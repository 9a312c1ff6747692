/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * umlmem-unicorn: several unicorn x86-64 guests whose RAM is umlmem's
 * native mapping (umlmem_guest_map), on a budget smaller than what they
 * touch.
 *
 * The copy calls (umlmem_read/umlmem_write) suit an emulator that goes
 * through a function for every access; unicorn, like QEMU, wants a plain
 * pointer to guest RAM (uc_mem_map_ptr) and loads and stores through it from
 * translated code, with no call back into us. That is the case native mode
 * is for, and this demo is its end-to-end check: real guest code, every
 * access a host load or store, faults served behind the emulator's back,
 * pages evicted, swapped and merged while the guests run.
 *
 * Why it is built the way it is
 *  - The guest is a real program (guest/work.c, built freestanding into
 *    guest.bin) and the host runs the very same function on an array of its
 *    own to know the answer: a page the mapping lost, mixed up or served
 *    stale changes the hash, whatever the bug was.
 *  - Guest i uses seed i % --distinct, so guests holding identical pages
 *    exist for the merge thread to find; after the run the demo scans until
 *    three merge passes have ended (a page written during a pass is volatile
 *    for that pass and the next), so the sorted arrays can share frames, and
 *    only then reads everything back: through the mapping, then through
 *    umlmem_read, so that a merged or swapped page that reads differently by
 *    the two paths is caught too.
 *  - One thread per guest, all at once: unicorn runs guest code in the
 *    thread that calls uc_emu_start, so that is where the native faults
 *    come from, and the guests' working sets add up past the budget
 *    together, not one after the other.
 *  - Heap sort is the worst case on purpose: each sift runs from the root to
 *    a leaf, one page per level below the first few, all over the array.
 *    Its faults grow steeply as the budget shrinks: for a 16 MiB array, an
 *    LRU simulation of its page references gives 0.19 M faults with 3/4 of
 *    the array resident, 0.87 M with 1/2 and 2.9 M with 1/4. Hence the
 *    defaults: a budget of 3/4 of what the guests touch (overcommitted, yet
 *    finishing in a minute or so) and an array of 1/64 of the RAM, which
 *    unicorn sorts in about a second (it runs this code ~15 times slower
 *    than the host does). Untouched RAM costs nothing, so the nominal RAM
 *    can stay large.
 *  - The image is linked into this program (.incbin), so the program runs
 *    from anywhere; the address of the guest's HLT comes from the image's
 *    symbols (guest-syms.h, generated at build time).
 *
 * Unicorn facts this relies on (unicorn 2.0.1, checked by running it):
 *  - UC_MODE_64 starts in long mode with paging off (CR0 = PE|ET, EFER =
 *    LME|LMA): guest addresses are physical addresses, flat. Checked at run
 *    time for every guest.
 *  - HLT ends uc_emu_start with UC_ERR_OK and RIP just past the HLT (it is
 *    not an error and needs no hook). The demo accepts that, and also an
 *    error with RIP at the HLT in case another version raises one; anything
 *    else (a timeout, a stop elsewhere) is a failed guest.
 *  - uc_mem_map_ptr neither touches, mprotects nor madvises the range, and
 *    uc_close does not unmap it; unicorn's own memory is a 1 GiB code
 *    buffer per instance (virtual; MADV_HUGEPAGE) allocated at the first
 *    mapping. No threads of its own except, with a timeout, a timer thread
 *    that touches no guest RAM: translated code and the translator (which
 *    reads the code bytes) run in the thread of uc_emu_start, and that is
 *    the only thread that touches guest RAM while a guest runs. Writes to
 *    pages holding translated code are caught in software (QEMU's dirty
 *    bitmap and TLB flags), not with mprotect. The softmmu TLB caches
 *    base + gpa per page, which is fine: the mapping's address never moves
 *    while it exists.
 *
 * --restore N: after the run, guest 0 is saved to an image
 * (umlmem_guest_save, into an unlinked file in the swap directory) and N
 * guests are restored from it (umlmem_guest_restore), each mapped. Each is
 * checked as guest 0 was (its report, its array through the mapping and
 * through umlmem_read): the restored state. Then each gets a seed of its
 * own in its params block and runs again from the image's code, all at
 * once, and is checked again: restored pages are read lazily through the
 * native faults, shared between the restored guests until written, and
 * every store breaks the sharing with the image's frame.
 *
 * A native fault the library cannot serve raises SIGBUS in the guest's
 * thread; the handler says which guest and address and exits 1.
 *
 * Exit status: 0 when every guest's result and every read-back is right and
 * the frames in use never passed the budget; 1 otherwise; 2 bad usage; 77
 * when native mode is not available here (umlmem_guest_map refused).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>

#include <unicorn/unicorn.h>

#include "umlmem.h"
#include "cli.h"		/* now_s, fmt_bytes, json_string, parse_u64, parse_size */
#include "common.h"
#include "work.h"
#include "guest-syms.h"

#undef PROG			/* cli.h's: the umlmem command's name */
#define PROG		"umlmem-unicorn"
#define EXIT_USAGE	2
#define EXIT_SKIP	77

#define PAGE		((uint64_t)UMLMEM_PAGE_SIZE)
#define KIB		((uint64_t)1024)
#define MIB		(KIB * 1024)

#define MAX_GUESTS	256u
#define ARRAY_GPA	(2 * MIB)	/* above the image; the rest of RAM is the array's */
#define DEF_GUESTS	8u
#define DEF_RAM		(256 * MIB)
#define DEF_ARRAY_DIV	64u		/* default array: RAM / 64 */
#define DEF_BUDGET_NUM	3u		/* default budget: 3/4 of what the guests touch */
#define DEF_BUDGET_DEN	4u
#define MIN_BUDGET	(4 * MIB)
#define DEF_TIMEOUT_S	3600.0
#define MERGE_PASSES	3u
#define SCAN_BATCH	16384u
#define SAMPLE_NS	20000000L	/* the sampler's period: 20 ms */
#define CHUNK		(1 * MIB)	/* umlmem_read reads back this much at a time */
#define STACK_CHECK	(2 * PAGE)	/* below GUEST_STACK_TOP: more than the guest uses */

#define FNV_OFFSET	0xcbf29ce484222325ull
#define FNV_PRIME	0x100000001b3ull

#define CR0_PG		(1ull << 31)
#define MSR_EFER	0xc0000080u
#define EFER_LMA	(1ull << 10)

/* The guest image, built by demos/native/native.mk. */
__asm__(".section .rodata\n"
	".balign 64\n"
	".globl guest_image\n.hidden guest_image\n"
	"guest_image:\n"
	".incbin \"" GUEST_BIN "\"\n"
	".globl guest_image_end\n.hidden guest_image_end\n"
	"guest_image_end:\n"
	".previous\n");
extern const unsigned char guest_image[], guest_image_end[];

struct opts {
	unsigned guests, distinct, restore;
	uint64_t ram, budget, array, rounds;
	double timeout_s;
	const char *swap_dir;
	bool json, dedup, quiet;
};

struct run;

struct vm {
	struct run *r;
	unsigned idx;
	uint64_t seed;
	umlmem_guest *g;
	unsigned char *base;	/* the native mapping */
	/* run, set by the guest's thread */
	double t0, t1;
	uc_err err;
	uint64_t rip;
	bool halted;
	char why[640];		/* what is wrong, "; " between; "" when all is right */
	/* after the run */
	struct umlmem_stats gs;	/* the guest's counters when all guests had halted */
	struct guest_params p;	/* as read through the mapping */
	uint64_t map_hash, read_hash;
	bool ok;
};

struct run {
	struct opts o;
	umlmem_host *host;
	struct vm *vm;
	uint64_t n;			/* words per array */
	uint64_t touched;		/* bytes a guest touches */
	uint64_t *expect;		/* per seed: the hash guest_work() gives on the host */
	/* the sampler */
	pthread_t sampler;
	atomic_bool stop;
	atomic_uint_fast64_t peak_frames;
	bool sampler_ok;
	/* reporting */
	double run_s, settle_s, check_s;
	struct umlmem_stats st;		/* after the merge passes */
	struct umlmem_host_info info;
	struct umlmem_stats st_end;	/* after the read-back */
	unsigned nok;
	bool budget_held;
	/* --restore: guests vm[guests .. guests + restore) */
	double save_s, restore_s, rerun_s;
	uint64_t image_bytes;
	unsigned nrestored_ok, nrerun_ok;
	bool restore_done;
};

static void set_why(struct vm *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_why(struct vm *v, const char *fmt, ...)
{
	size_t at = strlen(v->why);
	va_list ap;

	if (at && at + 3 < sizeof(v->why)) {
		strcpy(v->why + at, "; ");
		at += 2;
	}
	if (at + 1 >= sizeof(v->why))
		return;
	va_start(ap, fmt);
	vsnprintf(v->why + at, sizeof(v->why) - at, fmt, ap);
	va_end(ap);
}

static uint64_t fnv1a(uint64_t h, const unsigned char *p, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		h ^= p[i];
		h *= FNV_PRIME;
	}
	return h;
}

/* ------------------------------------------------------------------------ */
/* Options                                                                  */
/* ------------------------------------------------------------------------ */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: " PROG " [options]\n"
		"Runs unicorn x86-64 guests whose RAM is umlmem's native mapping, together,\n"
		"on a host budget smaller than the RAM they touch; each guest fills, heap-sorts\n"
		"and hashes an array, and the host checks every result.\n"
		"\n"
		"  --guests N       guests, one thread each (default %u, at most %u)\n"
		"  --ram SIZE       nominal RAM per guest (default %" PRIu64 "M; K, M, G suffixes)\n"
		"  --array SIZE     bytes of array per guest (default RAM/%u, at most RAM - %" PRIu64 "M)\n"
		"  --budget SIZE    host frames, in bytes (default %u/%u of the RAM the guests\n"
		"                   touch in all, at least %" PRIu64 "M)\n"
		"  --distinct K     distinct seeds: guest i uses seed i %% K (default guests/2)\n"
		"  --rounds R       times each guest refills, sorts and hashes (default 1)\n"
		"  --swap-dir DIR   where the swap files go (default /var/tmp)\n"
		"  --timeout SEC    give up on a guest still running after SEC seconds (default\n"
		"                   %.0f; 0: never): a guest whose RAM went wrong may loop\n"
		"  --no-dedup       no merging: the merge thread stays paused (reclaim still runs)\n"
		"  --restore N      then save guest 0 to an image, restore N guests from it,\n"
		"                   check each, and run each again with a seed of its own\n"
		"                   (default 0: none; at most %u)\n"
		"  --json           one JSON object on stdout instead of the table\n"
		"  --quiet          no progress lines on stderr\n"
		"  --help           this text\n"
		"\n"
		"Exit status: 0 every result right, 1 something wrong, 2 bad usage,\n"
		"77 native mode not available here.\n",
		DEF_GUESTS, MAX_GUESTS, DEF_RAM / MIB, DEF_ARRAY_DIV, ARRAY_GPA / MIB,
		DEF_BUDGET_NUM, DEF_BUDGET_DEN, MIN_BUDGET / MIB, DEF_TIMEOUT_S, MAX_GUESTS);
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, PROG ": ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n(" PROG " --help tells more)\n");
	return EXIT_USAGE;
}

/* 0, or the exit status (EXIT_USAGE, or 0 with *done after --help). */
static int parse_opts(struct opts *o, int argc, char **argv, bool *done)
{
	enum { O_GUESTS = 256, O_RAM, O_ARRAY, O_BUDGET, O_DISTINCT, O_ROUNDS, O_SWAPDIR,
	       O_TIMEOUT, O_NODEDUP, O_JSON, O_QUIET, O_HELP, O_RESTORE };
	static const struct option lo[] = {
		{ "guests", required_argument, NULL, O_GUESTS },
		{ "ram", required_argument, NULL, O_RAM },
		{ "array", required_argument, NULL, O_ARRAY },
		{ "budget", required_argument, NULL, O_BUDGET },
		{ "distinct", required_argument, NULL, O_DISTINCT },
		{ "rounds", required_argument, NULL, O_ROUNDS },
		{ "swap-dir", required_argument, NULL, O_SWAPDIR },
		{ "timeout", required_argument, NULL, O_TIMEOUT },
		{ "no-dedup", no_argument, NULL, O_NODEDUP },
		{ "restore", required_argument, NULL, O_RESTORE },
		{ "json", no_argument, NULL, O_JSON },
		{ "quiet", no_argument, NULL, O_QUIET },
		{ "help", no_argument, NULL, O_HELP },
		{ NULL, 0, NULL, 0 },
	};
	uint64_t v;
	char *end;
	int c;

	*o = (struct opts){ .guests = DEF_GUESTS, .ram = DEF_RAM, .rounds = 1,
			    .swap_dir = "/var/tmp", .timeout_s = DEF_TIMEOUT_S, .dedup = true };
	*done = false;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":", lo, NULL)) != -1) {
		switch (c) {
		case O_GUESTS:
			if (!native_parse_uint(optarg, MAX_GUESTS, &v) || !v)
				return usage_error("--guests: want 1 to %u, not '%s'", MAX_GUESTS, optarg);
			o->guests = (unsigned)v;
			break;
		case O_RAM:
			if (!native_parse_size(optarg, &o->ram))
				return usage_error("--ram: not a size: '%s'", optarg);
			break;
		case O_ARRAY:
			if (!native_parse_size(optarg, &o->array) || !o->array)
				return usage_error("--array: not a size above 0: '%s'", optarg);
			break;
		case O_BUDGET:
			if (!native_parse_size(optarg, &o->budget) || !o->budget)
				return usage_error("--budget: not a size above 0: '%s'", optarg);
			break;
		case O_DISTINCT:
			if (!native_parse_uint(optarg, MAX_GUESTS, &v) || !v)
				return usage_error("--distinct: want 1 to %u, not '%s'", MAX_GUESTS, optarg);
			o->distinct = (unsigned)v;
			break;
		case O_ROUNDS:
			if (!native_parse_uint(optarg, 1000000, &o->rounds) || !o->rounds)
				return usage_error("--rounds: want 1 to 1000000, not '%s'", optarg);
			break;
		case O_SWAPDIR:
			o->swap_dir = optarg;
			break;
		case O_TIMEOUT:
			errno = 0;
			o->timeout_s = strtod(optarg, &end);
			if (errno || end == optarg || *end || !(o->timeout_s >= 0) || o->timeout_s > 1e6)
				return usage_error("--timeout: want seconds from 0 to 1e6, not '%s'", optarg);
			break;
		case O_NODEDUP:
			o->dedup = false;
			break;
		case O_RESTORE:
			if (!native_parse_uint(optarg, MAX_GUESTS, &v))
				return usage_error("--restore: want 0 to %u, not '%s'", MAX_GUESTS, optarg);
			o->restore = (unsigned)v;
			break;
		case O_JSON:
			o->json = true;
			break;
		case O_QUIET:
			o->quiet = true;
			break;
		case O_HELP:
			usage(stdout);
			*done = true;
			return 0;
		case ':':
			return usage_error("%s needs a value", argv[optind - 1]);
		default:
			return usage_error("unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind < argc)
		return usage_error("unexpected argument '%s'", argv[optind]);

	if (o->ram % PAGE)
		return usage_error("--ram: unicorn maps whole pages: want a multiple of %u, not %" PRIu64,
				   UMLMEM_PAGE_SIZE, o->ram);
	if (o->ram <= ARRAY_GPA || o->ram > UMLMEM_MAX_GUEST_BYTES)
		return usage_error("--ram: want more than %" PRIu64 " MiB (the image and the stack "
				   "live below) and at most %llu TiB", ARRAY_GPA / MIB,
				   UMLMEM_MAX_GUEST_BYTES >> 40);
	if (!o->array)
		o->array = o->ram / DEF_ARRAY_DIV / PAGE * PAGE;
	if (!o->array)
		o->array = PAGE;
	if (o->array % 8)
		return usage_error("--array: want whole 64-bit words (a multiple of 8), not %" PRIu64,
				   o->array);
	if (o->array > o->ram - ARRAY_GPA)
		return usage_error("--array: %" PRIu64 " bytes do not fit: the array starts at %" PRIu64
				   " MiB of a %" PRIu64 "-byte RAM", o->array, ARRAY_GPA / MIB, o->ram);
	if (!o->distinct)
		o->distinct = o->guests / 2 ? o->guests / 2 : 1;
	if (o->distinct > o->guests)
		o->distinct = o->guests;
	return 0;
}

/* ------------------------------------------------------------------------ */
/* SIGBUS: a native fault umlmem could not serve                            */
/* ------------------------------------------------------------------------ */

static struct run *sig_run;
static __thread int tls_guest = -1;	/* the guest this thread runs */

static void put_str(char *buf, size_t *at, size_t cap, const char *s)
{
	while (*s && *at + 1 < cap)
		buf[(*at)++] = *s++;
}

static void put_dec(char *buf, size_t *at, size_t cap, uint64_t v)
{
	char d[21];
	int i = 20;

	d[20] = 0;
	do {
		d[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	put_str(buf, at, cap, d + i);
}

static void put_hex(char *buf, size_t *at, size_t cap, uint64_t v)
{
	char d[17];
	int i = 16;

	d[16] = 0;
	do {
		d[--i] = "0123456789abcdef"[v & 15];
		v >>= 4;
	} while (v);
	put_str(buf, at, cap, "0x");
	put_str(buf, at, cap, d + i);
}

/* Async-signal-safe: names the guest (and the guest address when the kernel
   gives one), then exits. umlmem sends its SIGBUS with tgkill to the thread
   whose fault it could not serve, so there is no address then, only the
   thread, which tls_guest names. */
static void on_fault(int sig, siginfo_t *si, void *uctx)
{
	struct run *r = sig_run;
	uintptr_t a = (uintptr_t)si->si_addr, b = 0;
	bool sent = si->si_code <= 0;	/* SI_USER, SI_TKILL, ...: from a process */
	int gi = -1;
	char buf[320];
	size_t at = 0;

	(void)uctx;
	if (r && r->vm && !sent)
		for (unsigned i = 0; i < r->o.guests + r->o.restore && gi < 0; i++) {
			b = (uintptr_t)r->vm[i].base;
			if (b && a >= b && a - b < r->o.ram)
				gi = (int)i;
		}
	if (sent && sig == SIGBUS)
		gi = tls_guest;
	if (gi < 0) {
		/* not about guest RAM: the default action, as if we had not been here */
		signal(sig, SIG_DFL);
		raise(sig);
		return;
	}
	put_str(buf, &at, sizeof(buf), PROG ": guest ");
	put_dec(buf, &at, sizeof(buf), (uint64_t)gi);
	if (sent) {
		put_str(buf, &at, sizeof(buf), ": SIGBUS from umlmem: a native fault it could not "
			"serve (swap I/O failing, or every frame pinned; its message is above)\n");
	} else {
		put_str(buf, &at, sizeof(buf), sig == SIGBUS ? ": SIGBUS" : ": SIGSEGV");
		put_str(buf, &at, sizeof(buf), " touching its RAM at gpa ");
		put_hex(buf, &at, sizeof(buf), a - b);
		put_str(buf, &at, sizeof(buf), sig == SIGBUS ? ": the page could not be served\n"
			: ": the native mapping is not there\n");
	}
	if (write(2, buf, at) < 0) {
		/* nothing left to tell it with */
	}
	_exit(1);
}

static void catch_faults(struct run *r)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_fault;
	sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_RESETHAND;
	sigemptyset(&sa.sa_mask);
	sig_run = r;
	sigaction(SIGBUS, &sa, NULL);
	sigaction(SIGSEGV, &sa, NULL);
}

/* ------------------------------------------------------------------------ */
/* The guests                                                               */
/* ------------------------------------------------------------------------ */

/* Runs one guest to its HLT in the calling thread: every access unicorn's
   translated code makes to guest RAM is a load or store of this thread into
   the native mapping. */
static void *guest_thread(void *arg)
{
	struct vm *v = arg;
	struct run *r = v->r;
	uint64_t rsp = GUEST_STACK_TOP, cr0 = 0, timeout_us;
	uc_x86_msr efer = { .rid = MSR_EFER };
	uc_engine *uc = NULL;
	uc_err e;

	tls_guest = (int)v->idx;
	v->t0 = now_s();
	if ((e = uc_open(UC_ARCH_X86, UC_MODE_64, &uc))) {
		set_why(v, "uc_open: %s", uc_strerror(e));
		goto out;
	}
	if ((e = uc_mem_map_ptr(uc, 0, r->o.ram, UC_PROT_ALL, v->base))) {
		set_why(v, "uc_mem_map_ptr of %" PRIu64 " bytes at %p: %s", r->o.ram,
			(void *)v->base, uc_strerror(e));
		goto out;
	}
	if ((e = uc_reg_write(uc, UC_X86_REG_RSP, &rsp))) {
		set_why(v, "uc_reg_write RSP: %s", uc_strerror(e));
		goto out;
	}
	/* guest addresses must be RAM offsets: long mode, no paging */
	if ((e = uc_reg_read(uc, UC_X86_REG_CR0, &cr0)) ||
	    (e = uc_reg_read(uc, UC_X86_REG_MSR, &efer))) {
		set_why(v, "uc_reg_read CR0/EFER: %s", uc_strerror(e));
		goto out;
	}
	if ((cr0 & CR0_PG) || !(efer.value & EFER_LMA)) {
		set_why(v, "unicorn did not start in flat long mode (CR0 %#" PRIx64 ", EFER %#" PRIx64 ")",
			cr0, efer.value);
		goto out;
	}
	timeout_us = (uint64_t)(r->o.timeout_s * 1e6);
	v->err = uc_emu_start(uc, GUEST_LOAD_GPA, 0 /* until: never reached */, timeout_us, 0);
	if ((e = uc_reg_read(uc, UC_X86_REG_RIP, &v->rip))) {
		set_why(v, "uc_reg_read RIP: %s", uc_strerror(e));
		goto out;
	}
	/* unicorn 2.0.1 stops after the HLT with UC_ERR_OK; accept an error
	   raised at the HLT too */
	v->halted = v->err == UC_ERR_OK ? v->rip == GUEST_HALT_GPA + 1
				       : v->rip == GUEST_HALT_GPA || v->rip == GUEST_HALT_GPA + 1;
	if (!v->halted) {
		if (v->err)
			set_why(v, "uc_emu_start: %s at rip %#" PRIx64, uc_strerror(v->err), v->rip);
		else
			set_why(v, "stopped at rip %#" PRIx64 ", not at the HLT (%#llx)%s", v->rip,
				GUEST_HALT_GPA,
				timeout_us && now_s() - v->t0 >= r->o.timeout_s ? ": --timeout ran out" :
				v->rip == 0 ? ": it returned to a return address that read as 0" : "");
	}
out:
	v->t1 = now_s();
	if (uc && (e = uc_close(uc)))
		set_why(v, "uc_close: %s", uc_strerror(e));
	if (!r->o.quiet && !r->o.json)
		fprintf(stderr, "  guest %u %s after %.2f s%s%s\n", v->idx,
			v->halted ? "halted" : "FAILED", v->t1 - v->t0, v->why[0] ? ": " : "", v->why);
	return NULL;
}

static void *sampler_thread(void *arg)
{
	struct run *r = arg;
	struct timespec ts = { 0, SAMPLE_NS };
	struct umlmem_stats s;

	while (!atomic_load(&r->stop)) {
		if (umlmem_host_stats(r->host, &s)) {
			r->sampler_ok = false;
			break;
		}
		if (s.frames_used > atomic_load(&r->peak_frames))
			atomic_store(&r->peak_frames, s.frames_used);
		nanosleep(&ts, NULL);
	}
	return NULL;
}

static int lib_fail(const char *what, int rc)
{
	const char *msg = umlmem_errmsg();

	fprintf(stderr, PROG ": %s: %s%s%s\n", what, umlmem_strerror(rc), msg[0] ? ": " : "", msg);
	return 1;
}

/* Creates, maps and loads every guest. 0, EXIT_SKIP or 1. */
static int setup(struct run *r)
{
	uint64_t image = (uint64_t)(guest_image_end - guest_image);
	struct umlmem_guest_config gc;
	char name[32];
	int rc;

	if (image == 0 || GUEST_LOAD_GPA + image > ARRAY_GPA ||
	    GUEST_HALT_GPA < GUEST_LOAD_GPA || GUEST_HALT_GPA >= GUEST_LOAD_GPA + image ||
	    guest_image[GUEST_HALT_GPA - GUEST_LOAD_GPA] != 0xf4) {
		fprintf(stderr, PROG ": the guest image (%" PRIu64 " bytes) does not fit below the array "
			"or has no HLT at %#llx: rebuild it\n", image, GUEST_HALT_GPA);
		return 1;
	}
	for (unsigned i = 0; i < r->o.guests; i++) {
		struct vm *v = &r->vm[i];
		struct guest_params p = {
			.magic = GUEST_MAGIC, .seed = v->seed, .array_gpa = ARRAY_GPA,
			.n = r->n, .rounds = r->o.rounds,
		};
		void *base;

		snprintf(name, sizeof(name), "unicorn-%u", i);
		umlmem_guest_config_init(&gc);
		gc.ram_bytes = r->o.ram;
		gc.name = name;
		if ((rc = umlmem_guest_create(r->host, &gc, &v->g)))
			return lib_fail("umlmem_guest_create", rc);
		if ((rc = umlmem_guest_map(v->g, &base))) {
			if (rc == -ENOSYS || rc == -EPERM || rc == -EOPNOTSUPP) {
				const char *msg = umlmem_errmsg();

				fprintf(stderr, PROG ": native mode is not available here (%s%s%s); "
					"skipped\n", umlmem_strerror(rc), msg[0] ? ": " : "", msg);
				return EXIT_SKIP;
			}
			return lib_fail("umlmem_guest_map", rc);
		}
		v->base = base;
		/* loading is plain stores into the mapping, as a VMM's loader's */
		memcpy(v->base + GUEST_PARAMS_GPA, &p, sizeof(p));
		memcpy(v->base + GUEST_LOAD_GPA, guest_image, image);
	}
	return 0;
}

/* Scans until MERGE_PASSES passes have ended, so that pages written last
   (volatile for two passes) have been visited once. */
static int merge_settle(struct run *r)
{
	struct umlmem_host_info in;
	uint64_t target, before;
	int rc;

	if ((rc = umlmem_host_info(r->host, &in, sizeof(in))))
		return lib_fail("umlmem_host_info", rc);
	target = in.full_scans + MERGE_PASSES;
	while (in.full_scans < target) {
		before = in.pages_scanned;
		if ((rc = umlmem_dedup_scan(r->host, SCAN_BATCH, NULL)))
			return lib_fail("umlmem_dedup_scan", rc);
		if ((rc = umlmem_host_info(r->host, &in, sizeof(in))))
			return lib_fail("umlmem_host_info", rc);
		/* nothing resident to visit: passes cannot end */
		if (in.pages_scanned == before)
			break;
	}
	return 0;
}

/* The host's own run of the guest's work, per seed. */
static int expectations(struct run *r)
{
	uint64_t *a = malloc(r->n ? r->n * 8 : 8);

	if (!a) {
		fprintf(stderr, PROG ": no memory for the host's copy of an array (%" PRIu64 " bytes)\n",
			r->n * 8);
		return 1;
	}
	for (unsigned s = 0; s < r->o.distinct; s++) {
		struct guest_params p = {
			.magic = GUEST_MAGIC, .seed = s, .array_gpa = ARRAY_GPA,
			.n = r->n, .rounds = r->o.rounds,
		};

		guest_work(&p, a);
		if (!p.done || !p.sorted) {
			fprintf(stderr, PROG ": the host's own run of seed %u did not sort: work.c is wrong\n", s);
			free(a);
			return 1;
		}
		r->expect[s] = p.hash;
	}
	free(a);
	return 0;
}

/* Reads [gpa, gpa + len) of @v both ways, the mapping and umlmem_read,
   and says where they differ; *map_hash and *read_hash (may be NULL) get
   the FNV-1a of each. A page the view shows wrong (a stale or zero page
   where the store has the data, or the other way round) is found here
   whatever the guest did with it. */
static void compare_paths(struct vm *v, const char *what, uint64_t gpa, uint64_t len,
			  unsigned char *buf, uint64_t *map_hash, uint64_t *read_hash)
{
	uint64_t hm = FNV_OFFSET, hr = FNV_OFFSET, bad = 0, first = 0, off;
	int rc;

	for (off = 0; off < len; off += CHUNK) {
		size_t n = len - off < CHUNK ? len - off : CHUNK;
		const unsigned char *m = v->base + gpa + off;

		if ((rc = umlmem_read(v->g, gpa + off, buf, n))) {
			set_why(v, "umlmem_read of the %s at %#" PRIx64 ": %s: %s", what, gpa + off,
				umlmem_strerror(rc), umlmem_errmsg());
			return;
		}
		for (size_t p = 0; p < n; p += PAGE) {
			size_t k = n - p < PAGE ? n - p : PAGE;

			if (memcmp(m + p, buf + p, k) && !bad++)
				first = gpa + off + p;
		}
		hm = fnv1a(hm, m, n);
		hr = fnv1a(hr, buf, n);
	}
	if (bad)
		set_why(v, "%" PRIu64 " page%s of the %s read differently through the mapping and "
			"umlmem_read, the first at gpa %#" PRIx64, bad, bad == 1 ? "" : "s", what, first);
	if (map_hash)
		*map_hash = hm;
	if (read_hash)
		*read_hash = hr;
}

/* Everything about guest @v that can be checked from the host. */
static void check_guest(struct run *r, struct vm *v, unsigned char *buf)
{
	uint64_t want = r->expect[v->seed];
	uint64_t image = (uint64_t)(guest_image_end - guest_image);

	/* the guest's own report, read through the mapping */
	memcpy(&v->p, v->base + GUEST_PARAMS_GPA, sizeof(v->p));
	if (v->p.magic != GUEST_MAGIC || v->p.seed != v->seed || v->p.array_gpa != ARRAY_GPA ||
	    v->p.n != r->n || v->p.rounds != r->o.rounds)
		set_why(v, "the params block's inputs changed");
	if (v->p.done != 1)
		set_why(v, "the guest did not finish (done %" PRIu64 ")", v->p.done);
	else if (v->p.sorted != 1)
		set_why(v, "the guest found its array unsorted");
	else if (v->p.hash != want)
		set_why(v, "hash %016" PRIx64 ", the host's run gives %016" PRIx64, v->p.hash, want);

	/* every page the guest touched, by both paths */
	compare_paths(v, "params block", GUEST_PARAMS_GPA, PAGE, buf, NULL, NULL);
	compare_paths(v, "image", GUEST_LOAD_GPA, image, buf, NULL, NULL);
	compare_paths(v, "stack", GUEST_STACK_TOP - STACK_CHECK, STACK_CHECK, buf, NULL, NULL);
	compare_paths(v, "array", ARRAY_GPA, r->n * 8, buf, &v->map_hash, &v->read_hash);
	if (v->map_hash != want)
		set_why(v, "the array reads through the mapping as hash %016" PRIx64 ", want %016" PRIx64,
			v->map_hash, want);
	if (v->read_hash != want)
		set_why(v, "the array reads through umlmem_read as hash %016" PRIx64 ", want %016" PRIx64,
			v->read_hash, want);
	v->ok = v->halted && !v->why[0];
}

/* ------------------------------------------------------------------------ */
/* --restore: guest 0 saved, N guests restored from the image               */
/* ------------------------------------------------------------------------ */

/* Saves guest 0, restores o.restore guests from the image and checks each,
   then runs them all again, each with a seed of its own, and checks them
   again. 0, or 1 when something could not be done (a wrong guest is not
   that: it is counted and reported). */
static int restore_phase(struct run *r, unsigned char *buf)
{
	unsigned first = r->o.guests, n = r->o.restore;
	pthread_t *th = calloc(n, sizeof(*th));
	char path[4096];
	struct stat st;
	double t;
	int fd, rc;

	if (!th) {
		fprintf(stderr, PROG ": out of memory\n");
		return 1;
	}
	snprintf(path, sizeof(path), "%s/umlmem-unicorn-image-XXXXXX", r->o.swap_dir);
	fd = mkstemp(path);
	if (fd < 0) {
		fprintf(stderr, PROG ": cannot create an image file in %s: %s\n", r->o.swap_dir,
			strerror(errno));
		free(th);
		return 1;
	}
	unlink(path);
	t = now_s();
	if ((rc = umlmem_guest_save(r->vm[0].g, fd))) {
		lib_fail("umlmem_guest_save of guest 0", rc);
		goto fail;
	}
	r->save_s = now_s() - t;
	r->image_bytes = fstat(fd, &st) ? 0 : (uint64_t)st.st_blocks * 512;
	t = now_s();
	for (unsigned j = 0; j < n; j++) {
		struct vm *v = &r->vm[first + j];
		void *base;

		*v = (struct vm){ .r = r, .idx = first + j, .seed = r->vm[0].seed };
		if ((rc = umlmem_guest_restore(r->host, fd, NULL, &v->g))) {
			lib_fail("umlmem_guest_restore", rc);
			goto fail;
		}
		if ((rc = umlmem_guest_map(v->g, &base))) {
			lib_fail("umlmem_guest_map of a restored guest", rc);
			goto fail;
		}
		v->base = base;
	}
	r->restore_s = now_s() - t;
	close(fd);
	fd = -1;

	/* the restored state: guest 0's as it was saved */
	for (unsigned j = 0; j < n; j++) {
		struct vm *v = &r->vm[first + j];

		v->halted = true;
		check_guest(r, v, buf);
		r->nrestored_ok += v->ok;
		if (!v->ok && !r->o.json)
			fprintf(stderr, PROG ": restored guest %u: WRONG: %s\n", v->idx, v->why);
	}

	/* each runs again from the image's code, with a seed of its own */
	for (unsigned j = 0; j < n; j++) {
		struct vm *v = &r->vm[first + j];
		struct guest_params p = {
			.magic = GUEST_MAGIC, .seed = (r->vm[0].seed + 1 + j) % r->o.distinct,
			.array_gpa = ARRAY_GPA, .n = r->n, .rounds = r->o.rounds,
		};

		v->seed = p.seed;
		v->why[0] = '\0';
		v->halted = v->ok = false;
		memcpy(v->base + GUEST_PARAMS_GPA, &p, sizeof(p));
	}
	if (!r->o.quiet && !r->o.json)
		fprintf(stderr, PROG ": running the %u restored guests again\n", n);
	t = now_s();
	for (unsigned j = 0; j < n; j++)
		if ((rc = pthread_create(&th[j], NULL, guest_thread, &r->vm[first + j]))) {
			fprintf(stderr, PROG ": pthread_create: %s\n", strerror(rc));
			for (unsigned k = 0; k < j; k++)
				pthread_join(th[k], NULL);
			free(th);
			return 1;
		}
	for (unsigned j = 0; j < n; j++)
		pthread_join(th[j], NULL);
	r->rerun_s = now_s() - t;
	for (unsigned j = 0; j < n; j++) {
		struct vm *v = &r->vm[first + j];

		if ((rc = umlmem_guest_stats(v->g, &v->gs))) {
			lib_fail("umlmem_guest_stats", rc);
			free(th);
			return 1;
		}
		check_guest(r, v, buf);
		r->nrerun_ok += v->ok;
	}
	r->restore_done = true;
	free(th);
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	free(th);
	return 1;
}

/* ------------------------------------------------------------------------ */
/* Report                                                                   */
/* ------------------------------------------------------------------------ */

static bool all_ok(const struct run *r)
{
	return r->nok == r->o.guests && r->budget_held && r->sampler_ok &&
	       (!r->o.restore || (r->restore_done && r->nrestored_ok == r->o.restore &&
				  r->nrerun_ok == r->o.restore));
}

static void print_text(const struct run *r)
{
	const struct opts *o = &r->o;
	uint64_t total = (uint64_t)o->guests * o->ram, touched = (uint64_t)o->guests * r->touched;
	uint64_t peak = atomic_load(&r->peak_frames);
	char b1[24], b2[24], b3[24];

	printf(PROG ": %u guests x %s RAM (array %s, %u seeds, %" PRIu64 " round%s) on a %s budget, "
	       "merging %s\n\n", o->guests, fmt_bytes(b1, sizeof(b1), o->ram),
	       fmt_bytes(b2, sizeof(b2), o->array), o->distinct, o->rounds, o->rounds == 1 ? "" : "s",
	       fmt_bytes(b3, sizeof(b3), o->budget), o->dedup ? "on" : "off");
	printf("  guest  seed   run s  hash              faults   swap-ins  result\n");
	for (unsigned i = 0; i < o->guests; i++) {
		const struct vm *v = &r->vm[i];

		printf("  %5u  %4" PRIu64 "  %6.2f  %016" PRIx64 "  %7" PRIu64 "  %8" PRIu64 "  %s%s\n",
		       i, v->seed, v->t1 - v->t0, v->p.hash, v->gs.faults, v->gs.swap_ins,
		       v->ok ? "ok" : "WRONG: ", v->ok ? "" : v->why);
	}
	printf("\n");
	printf("  %-20s %u\n", "guests", o->guests);
	printf("  %-20s %s\n", "RAM each", fmt_bytes(b1, sizeof(b1), o->ram));
	printf("  %-20s %s (%" PRIu64 " frames)\n", "budget", fmt_bytes(b1, sizeof(b1), o->budget),
	       r->info.frames_total);
	printf("  %-20s %s nominal, %s touched (%.1fx the budget)\n", "guest RAM total",
	       fmt_bytes(b1, sizeof(b1), total), fmt_bytes(b2, sizeof(b2), touched),
	       (double)touched / (double)o->budget);
	printf("  %-20s %.2f s running, %.2f s merging after, %.2f s checking\n", "time",
	       r->run_s, r->settle_s, r->check_s);
	printf("  %-20s %" PRIu64 " (%" PRIu64 " of them zeros), %" PRIu64 " pages sharing now: "
	       "%s saved\n", "pages merged", r->info.pages_merged, r->info.zero_merged,
	       r->st.sharing_pages, fmt_bytes(b1, sizeof(b1), r->st.sharing_pages * PAGE));
	printf("  %-20s %" PRIu64 " (%" PRIu64 " swap-ins, %" PRIu64 " faults)\n", "swap outs",
	       r->st.swap_outs, r->st.swap_ins, r->st.faults);
	printf("  %-20s %" PRIu64 " faults served, %" PRIu64 " page mappings, %" PRIu64 " zaps, %" PRIu64
	       " flushes\n", "native mapping", r->info.native_faults, r->info.native_maps,
	       r->info.native_zaps, r->info.native_flushes);
	printf("  %-20s %" PRIu64 " of %" PRIu64 "%s\n", "peak frames used", peak,
	       r->info.frames_total, r->budget_held ? "" : "  (ABOVE THE BUDGET)");
	if (r->st_end.io_errors || r->st_end.checksum_errors)
		printf("  %-20s %" PRIu64 " I/O, %" PRIu64 " checksum\n", "swap errors",
		       r->st_end.io_errors, r->st_end.checksum_errors);
	if (!r->sampler_ok)
		printf("  %-20s umlmem_host_stats failed: peak not known\n", "sampler");
	printf("  %-20s %u of %u right\n", "results", r->nok, o->guests);
	if (!o->restore)
		return;
	printf("\n  restored from an image of guest 0 (%s on disk), saved in %.3f s:\n",
	       fmt_bytes(b1, sizeof(b1), r->image_bytes), r->save_s);
	printf("  guest  seed   run s  hash              faults   swap-ins  result\n");
	for (unsigned i = o->guests; r->restore_done && i < o->guests + o->restore; i++) {
		const struct vm *v = &r->vm[i];

		printf("  %5u  %4" PRIu64 "  %6.2f  %016" PRIx64 "  %7" PRIu64 "  %8" PRIu64 "  %s%s\n",
		       i, v->seed, v->t1 - v->t0, v->p.hash, v->gs.faults, v->gs.swap_ins,
		       v->ok ? "ok" : "WRONG: ", v->ok ? "" : v->why);
	}
	printf("  %-20s %u guests in %.3f s, %u of %u with guest 0's state\n", "restored",
	       o->restore, r->restore_s, r->nrestored_ok, o->restore);
	printf("  %-20s %.2f s, %u of %u right\n", "run again", r->rerun_s, r->nrerun_ok,
	       o->restore);
}

static void print_json(const struct run *r)
{
	const struct opts *o = &r->o;

	printf("{\"guests\": %u, \"ram_bytes\": %" PRIu64 ", \"array_bytes\": %" PRIu64
	       ", \"budget_bytes\": %" PRIu64 ", \"budget_frames\": %" PRIu64
	       ", \"guest_ram_total\": %" PRIu64 ", \"guest_ram_touched\": %" PRIu64
	       ", \"distinct\": %u, \"rounds\": %" PRIu64 ", \"dedup\": %s",
	       o->guests, o->ram, o->array, o->budget, r->info.frames_total,
	       (uint64_t)o->guests * o->ram, (uint64_t)o->guests * r->touched,
	       o->distinct, o->rounds, o->dedup ? "true" : "false");
	printf(", \"time_s\": %.3f, \"settle_s\": %.3f, \"check_s\": %.3f", r->run_s, r->settle_s,
	       r->check_s);
	printf(", \"pages_merged\": %" PRIu64 ", \"zero_merged\": %" PRIu64
	       ", \"sharing_pages\": %" PRIu64 ", \"shared_frames\": %" PRIu64
	       ", \"saved_bytes\": %" PRIu64 ", \"full_scans\": %" PRIu64,
	       r->info.pages_merged, r->info.zero_merged, r->st.sharing_pages, r->st.shared_frames,
	       r->st.sharing_pages * PAGE, r->info.full_scans);
	printf(", \"faults\": %" PRIu64 ", \"native_faults\": %" PRIu64 ", \"swap_outs\": %" PRIu64
	       ", \"swap_ins\": %" PRIu64 ", \"cow_breaks\": %" PRIu64
	       ", \"native_maps\": %" PRIu64 ", \"native_zaps\": %" PRIu64 ", \"native_flushes\": %" PRIu64
	       ", \"peak_frames_used\": %" PRIu64 ", \"budget_held\": %s"
	       ", \"io_errors\": %" PRIu64 ", \"checksum_errors\": %" PRIu64,
	       r->st.faults, r->info.native_faults, r->st.swap_outs, r->st.swap_ins, r->st.cow_breaks,
	       r->info.native_maps, r->info.native_zaps, r->info.native_flushes,
	       (uint64_t)atomic_load(&r->peak_frames), r->budget_held ? "true" : "false",
	       r->st_end.io_errors, r->st_end.checksum_errors);
	if (o->restore)
		printf(", \"restore\": %u, \"image_bytes\": %" PRIu64 ", \"save_s\": %.3f"
		       ", \"restore_s\": %.3f, \"rerun_s\": %.3f, \"restored_ok\": %u"
		       ", \"rerun_ok\": %u", o->restore, r->image_bytes, r->save_s, r->restore_s,
		       r->rerun_s, r->nrestored_ok, r->nrerun_ok);
	printf(", \"guests_ok\": %u, \"results_ok\": %s, \"results\": [", r->nok,
	       all_ok(r) ? "true" : "false");
	for (unsigned i = 0; i < o->guests + (r->restore_done ? o->restore : 0); i++) {
		const struct vm *v = &r->vm[i];

		printf("%s{\"guest\": %u, \"seed\": %" PRIu64 ", \"run_s\": %.3f, \"faults\": %" PRIu64
		       ", \"swap_ins\": %" PRIu64 ", \"swap_outs\": %" PRIu64 ", \"hash\": \"%016" PRIx64
		       "\", \"expected\": \"%016" PRIx64 "\", \"ok\": %s, \"error\": ",
		       i ? ", " : "", i, v->seed, v->t1 - v->t0, v->gs.faults, v->gs.swap_ins,
		       v->gs.swap_outs, v->p.hash, r->expect[v->seed], v->ok ? "true" : "false");
		json_string(stdout, v->why[0] ? v->why : NULL);
		putchar('}');
	}
	printf("]}\n");
}

/* ------------------------------------------------------------------------ */

int main(int argc, char **argv)
{
	struct umlmem_host_config hc;
	struct run r = { 0 };
	unsigned char *buf = NULL;
	pthread_t *th = NULL;
	bool help, sampler = false;
	char b1[24], b2[24];
	double t;
	int rc, status = 1;

	if ((rc = parse_opts(&r.o, argc, argv, &help)) || help)
		return rc;
	r.n = r.o.array / 8;
	/* the array, the image, the params page and the stack's pages */
	r.touched = (r.o.array + PAGE - 1) / PAGE * PAGE +
		    ((uint64_t)(guest_image_end - guest_image) + PAGE - 1) / PAGE * PAGE + 2 * PAGE;
	if (!r.o.budget) {
		r.o.budget = (uint64_t)r.o.guests * r.touched / DEF_BUDGET_DEN * DEF_BUDGET_NUM / PAGE * PAGE;
		if (r.o.budget < MIN_BUDGET)
			r.o.budget = MIN_BUDGET;
	}
	if (r.o.budget >= (uint64_t)r.o.guests * r.touched && !r.o.json && !r.o.quiet)
		fprintf(stderr, PROG ": note: the budget (%s) holds everything the guests touch (%s): "
			"nothing will be swapped\n", fmt_bytes(b1, sizeof(b1), r.o.budget),
			fmt_bytes(b2, sizeof(b2), (uint64_t)r.o.guests * r.touched));

	r.vm = calloc(r.o.guests + r.o.restore, sizeof(*r.vm));
	r.expect = calloc(r.o.distinct, sizeof(*r.expect));
	th = calloc(r.o.guests, sizeof(*th));
	buf = malloc(CHUNK);
	if (!r.vm || !r.expect || !th || !buf) {
		fprintf(stderr, PROG ": out of memory\n");
		goto out;
	}
	for (unsigned i = 0; i < r.o.guests; i++)
		r.vm[i] = (struct vm){ .r = &r, .idx = i, .seed = i % r.o.distinct };
	catch_faults(&r);

	umlmem_host_config_init(&hc);
	hc.resident_bytes = r.o.budget;
	hc.swap_dir = r.o.swap_dir;
	hc.flags = UMLMEM_BACKGROUND;
	if ((rc = umlmem_host_create(&hc, &r.host))) {
		lib_fail("umlmem_host_create", rc);
		goto out;
	}
	/* --no-dedup: the same run, reclaim thread and all, without sharing */
	if (!r.o.dedup && (rc = umlmem_dedup_pause(r.host, 1))) {
		lib_fail("umlmem_dedup_pause", rc);
		goto out;
	}
	if ((rc = setup(&r))) {
		status = rc;
		goto out;
	}

	r.sampler_ok = true;
	if ((rc = pthread_create(&r.sampler, NULL, sampler_thread, &r))) {
		fprintf(stderr, PROG ": pthread_create: %s\n", strerror(rc));
		goto out;
	}
	sampler = true;
	if (!r.o.quiet && !r.o.json)
		fprintf(stderr, PROG ": running %u guests on a %s budget\n", r.o.guests,
			fmt_bytes(b1, sizeof(b1), r.o.budget));
	t = now_s();
	for (unsigned i = 0; i < r.o.guests; i++) {
		if ((rc = pthread_create(&th[i], NULL, guest_thread, &r.vm[i]))) {
			fprintf(stderr, PROG ": pthread_create: %s\n", strerror(rc));
			for (unsigned k = 0; k < i; k++)
				pthread_join(th[k], NULL);
			goto out;
		}
	}
	for (unsigned i = 0; i < r.o.guests; i++)
		pthread_join(th[i], NULL);
	r.run_s = now_s() - t;
	for (unsigned i = 0; i < r.o.guests; i++)
		if ((rc = umlmem_guest_stats(r.vm[i].g, &r.vm[i].gs))) {
			lib_fail("umlmem_guest_stats", rc);
			goto out;
		}

	t = now_s();
	if (r.o.dedup && merge_settle(&r))
		goto out;
	r.settle_s = now_s() - t;
	atomic_store(&r.stop, true);
	pthread_join(r.sampler, NULL);
	sampler = false;
	if ((rc = umlmem_host_stats(r.host, &r.st)) ||
	    (rc = umlmem_host_info(r.host, &r.info, sizeof(r.info)))) {
		lib_fail("umlmem_host_stats", rc);
		goto out;
	}
	if (r.st.frames_used > atomic_load(&r.peak_frames))
		atomic_store(&r.peak_frames, r.st.frames_used);
	r.budget_held = atomic_load(&r.peak_frames) <= r.info.frames_total;

	t = now_s();
	if (expectations(&r))
		goto out;
	for (unsigned i = 0; i < r.o.guests; i++) {
		check_guest(&r, &r.vm[i], buf);
		r.nok += r.vm[i].ok;
	}
	r.check_s = now_s() - t;
	if (r.o.restore && restore_phase(&r, buf))
		goto out;
	if ((rc = umlmem_host_stats(r.host, &r.st_end))) {
		lib_fail("umlmem_host_stats", rc);
		goto out;
	}
	if (r.o.json)
		print_json(&r);
	else
		print_text(&r);

	status = all_ok(&r) ? 0 : 1;
	for (unsigned i = 0; i < r.o.guests + r.o.restore; i++) {
		if (r.vm[i].base && (rc = umlmem_guest_unmap(r.vm[i].g))) {
			lib_fail("umlmem_guest_unmap", rc);
			status = 1;
		}
		r.vm[i].base = NULL;
	}
out:
	if (sampler) {
		atomic_store(&r.stop, true);
		pthread_join(r.sampler, NULL);
	}
	umlmem_host_destroy(r.host);	/* and its guests */
	sig_run = NULL;
	free(buf);
	free(th);
	free(r.expect);
	free(r.vm);
	return status;
}
