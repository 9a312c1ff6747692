/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * umlmem-kvm: KVM guests whose RAM is umlmem native mappings.
 *
 * Several KVM guests (KVM through its ioctls; no QEMU, no firmware) run at
 * once, each on a RAM of umlmem's: more guest RAM, in total, than the host
 * budget holds. Each guest fills an array from a seed,
 * sorts it, checks the order and hashes it (demos/native/guest/work.c, the
 * same program the unicorn demo runs); guests with the same seed end up
 * with identical pages, which the merge scanner shares. The host computes
 * every result itself with the same work.c and checks each guest's answer
 * and its whole array, through the mapping and through umlmem_read().
 *
 * Why the memory slots point at the mapping
 *  KVM takes guest memory as a range of the process's own address space
 *  (KVM_SET_USER_MEMORY_REGION: guest physical 0 .. ram at userspace_addr),
 *  and resolves a guest access to a page it has not mapped yet the way the
 *  kernel resolves any access to that address: an EPT/NPT violation (or,
 *  with shadow paging, a guest page fault) makes KVM look the address up
 *  with get_user_pages(), which runs the VMA's fault path; and whenever the process's mapping of an address changes
 *  (unmapped, remapped, write-protected), KVM's MMU notifier drops the
 *  matching second-level entries. umlmem_guest_map() gives exactly such a
 *  range, whose faults userfaultfd hands to umlmem's handler threads. So
 *  the slot is the umlmem mapping itself, with nothing in between: a guest
 *  page fault becomes a umlmem fault (first touch, swap-in, copy on write
 *  of a shared page), and umlmem's evictions and merges take pages away
 *  from the guest as they take them from any user of the mapping. No copy
 *  of guest memory exists anywhere else; umlmem_read() sees what the guest
 *  wrote because it is the same memory.
 *
 * Why long mode is set up by hand
 *  A KVM vCPU starts as an x86 does after reset: real mode at 0xFFFF0,
 *  with no firmware here to run. The guest program is a flat 64-bit image
 *  (work.h: loaded at 0x100000, entry at its first byte), so the demo gives
 *  the vCPU the state a boot loader and a small kernel would leave behind,
 *  through KVM_SET_SREGS/KVM_SET_REGS, and writes the tables that state
 *  refers to into guest memory below the parameter block:
 *   - long mode needs paging: identity-mapping page tables, PML4 at 0x1000,
 *     PDPT at 0x2000, then page directories of 2 MiB pages from 0x10000
 *     (one per GiB, up to 64 GiB of RAM), or 1 GiB pages straight from the
 *     PDPT (up to 512 GiB) when the CPUID KVM supports has pdpe1gb; they
 *     cover the whole guest RAM;
 *   - CR0.PE|PG (and MP, ET, NE, WP), CR4.PAE (and OSFXSR, OSXMMEXCPT:
 *     harmless, the guest uses no SSE), EFER.LME|LMA, CR3 at the PML4; the
 *     segment registers' hidden parts loaded directly (KVM_SET_SREGS), the
 *     GDT in memory to match them;
 *   - the CPUID KVM supports (KVM_GET_SUPPORTED_CPUID -> KVM_SET_CPUID2);
 *   - no in-kernel irqchip, so that HLT leaves KVM_RUN as KVM_EXIT_HLT.
 *  RIP = 0x100000, RSP = 0xF0000, RFLAGS = 2 (interrupts off).
 *
 * Why the guest runs at CPL 3, over a monitor
 *  The guest program runs in user mode (CPL 3, user-accessible page
 *  tables), and page 0 holds a tiny ring-0 monitor: a GDT with ring-0 and
 *  ring-3 64-bit segments, a TSS whose RSP0 is the monitor's stack, and an
 *  IDT whose 32 exception gates lead to stubs that record the exception
 *  (vector, error code, RIP, CS, RSP, CR2) at 0x100 and halt. Two reasons:
 *   - some KVMs run only user mode natively: on kvm_pvm (KVM without
 *     hardware virtualisation, for nested clouds; the kind this was
 *     written on), supervisor code is emulated one instruction at a time,
 *     a thousand times slower (one guest sorting 1 MiB: 132 s at CPL 0,
 *     0.12 s at CPL 3). On VMX/SVM it makes no difference. --ring0 runs
 *     the guest at CPL 0 all the same;
 *   - a guest exception becomes a precise report (which vector, where, what
 *     address) instead of an anonymous triple fault.
 *  The guest's final HLT is privileged at CPL 3: it raises #GP(0), the
 *  monitor records it and halts, and the demo counts the run as finished
 *  only when the record says #GP(0) at a HLT instruction of the guest's.
 *  Any other exit (shutdown, failed entry, internal error, MMIO, port I/O,
 *  another exception, a KVM_RUN that fails, e.g. EFAULT when KVM could not
 *  get a page of the mapping) is a failure, reported with the vCPU's
 *  registers and whether the mapping still agrees with umlmem_read().
 *
 * Each vCPU runs in a thread of its own, all at once. A watchdog
 * (--timeout) kicks vCPUs that run too long out of KVM_RUN
 * (immediate_exit and a signal) and fails them. A SIGBUS that umlmem sends
 * a vCPU thread (a fault it could not serve) fails that guest, not the
 * whole program.
 *
 * The numbers. Each guest writes its array and a few pages more (monitor,
 * page tables, parameters, image, stack). The default budget is 7/8 of
 * what all guests write, so that the run must swap while it sorts, on top
 * of the nominal RAM being far above the budget. The merge thread runs
 * during the run (so KVM's writes to merged pages take umlmem's
 * copy-on-write path) and, after it, the demo scans three merge passes,
 * so that equal pages (the arrays of equal seeds, the monitor, page tables
 * and image of every guest) are shared when it reports. Heap sort's sifts
 * reach all over the array, so pressure makes every guest fault all over
 * it, each fault a userfaultfd round trip: a smaller budget or bigger
 * arrays stay correct but get slow quickly, and run times vary from run
 * to run with how the guests' pages happen to be evicted.
 *
 * --restore N: after the run, guest 0 is saved to an image
 * (umlmem_guest_save, into an unlinked file in the swap directory) and N
 * guests are restored from it (umlmem_guest_restore), each mapped. Each is
 * checked for guest 0's state (its report and its array, through the
 * mapping and through umlmem_read), then gets a VM and vCPU of its own, a
 * seed of its own in its parameter block, runs again from the image's
 * code, all at once, and is checked again: its pages come from the image
 * lazily through the native faults, shared with the other restored guests
 * until written.
 *
 * The guest image is read at run time from --guest-bin, by default
 * native/guest.bin next to this program (both live in the build directory:
 * build/umlmem-kvm and build/native/guest.bin).
 *
 * Exit status: 0 when every guest halted with the right result, both views
 * of its memory agree and the frames in use never passed the budget; 1
 * otherwise; 2 bad usage; 77 (skip) when /dev/kvm is missing or unusable or
 * native mode is not available here.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "umlmem.h"
#include "cli.h"		/* now_s, fmt_bytes, json_string, parse_u64, parse_size */
#include "common.h"
#include "guest/work.h"

/* cli.h's PROG names the umlmem command, not this program (umlmem-kvm) */
#undef PROG

#define EXIT_FAIL	1
#define EXIT_USAGE	2
#define EXIT_SKIP	77

#define PAGE		((uint64_t)UMLMEM_PAGE_SIZE)
#define KIB		1024ull
#define MIB		(1024ull * KIB)
#define GIB		(1024ull * MIB)

/*
 * Guest physical layout below the parameter block (work.h has the rest).
 * Page 0 is the monitor: GDT, TSS, the record of the last exception, IDT,
 * exception stubs and their common handler; its top is the ring-0 stack.
 * The stack of the guest program grows down from GUEST_STACK_TOP, toward
 * the page directories.
 */
#define GDT_GPA		0x000ull
#define TSS_GPA		0x080ull
#define FAULT_GPA	0x100ull	/* struct fault_record */
#define IDT_GPA		0x200ull	/* 32 gates of 16 bytes */
#define STUB_GPA	0x400ull	/* 32 stubs of 16 bytes, then the handler */
#define RING0_STACK	0x1000ull
#define PML4_GPA	0x1000ull
#define PDPT_GPA	0x2000ull
#define PD_GPA		0x10000ull	/* page directories, one per GiB: */
#define PD_MAX		64u		/* up to 0x50000, leaving the stack 640 KiB */
#define IMAGE_MAX	(16 * MIB)
#define NVEC		32u

/* x86 bits */
#define CR0_PE		(1ull << 0)
#define CR0_MP		(1ull << 1)
#define CR0_ET		(1ull << 4)
#define CR0_NE		(1ull << 5)
#define CR0_WP		(1ull << 16)
#define CR0_PG		(1ull << 31)
#define CR4_PAE		(1ull << 5)
#define CR4_OSFXSR	(1ull << 9)
#define CR4_OSXMMEXCPT	(1ull << 10)
#define EFER_LME	(1ull << 8)
#define EFER_LMA	(1ull << 10)
#define PTE_P		(1ull << 0)
#define PTE_RW		(1ull << 1)
#define PTE_US		(1ull << 2)
#define PTE_PS		(1ull << 7)
#define CPUID_PDPE1GB	(1u << 26)	/* 0x80000001 EDX */

#define SEL_KCODE	0x08
#define SEL_KDATA	0x10
#define SEL_UDATA	0x1b	/* 0x18 | RPL 3 */
#define SEL_UCODE	0x23	/* 0x20 | RPL 3 */
#define SEL_TSS		0x28
#define VEC_GP		13
#define OP_HLT		0xf4

/* Newer than Debian 12's headers: a fault in guest memory KVM could not
   resolve, with its address (KVM_CAP_MEMORY_FAULT_INFO, Linux 6.8). */
#ifndef KVM_EXIT_MEMORY_FAULT
#define KVM_EXIT_MEMORY_FAULT 39
#endif

#define SAMPLE_US	10000
#define CHECK_CHUNK	(1 * MIB)
#define SCAN_BATCH	16384u
#define MERGE_PASSES	3u
#define MAX_GUESTS	256u


/* ------------------------------------------------------------------------ */
/* Options and state                                                        */
/* ------------------------------------------------------------------------ */

struct opts {
	unsigned guests;
	uint64_t ram;		/* per guest */
	uint64_t budget;	/* 0: chosen */
	uint64_t array;		/* bytes of each guest's array */
	unsigned distinct;	/* 0: guests / 2 */
	uint64_t rounds;
	bool json;
	bool dedup;
	const char *guest_bin;	/* NULL: next to the program */
	const char *swap_dir;
	double timeout;		/* seconds; 0: none */
	bool ring0;		/* the guest at CPL 0 instead of 3 */
	unsigned restore;	/* --restore: guests restored from guest 0's image */
};

/* One guest: its umlmem RAM, its KVM VM and vCPU, its thread and results. */
struct vm {
	unsigned idx;
	uint64_t ram;
	uint64_t image_len;
	uint64_t npd;		/* page directories at PD_GPA */
	bool ring0;
	uint64_t seed;
	umlmem_guest *g;
	unsigned char *base;	/* the native mapping: guest physical 0 */
	int vm_fd, vcpu_fd;
	struct kvm_run *run;
	pthread_t thr;
	bool thr_started;
	_Atomic bool finished;
	double t0, t1;		/* the vCPU thread's first KVM_RUN and its end */
	bool halted;		/* ended with KVM_EXIT_HLT */
	uint64_t exits;		/* KVM_RUN returns, signals included */
	char fail[2048];	/* why it did not halt; the register dump */
	bool ok;		/* every check passed */
	char verdict[3072];	/* the first check that did not */
	struct guest_params res;
	struct umlmem_stats st;
};

struct run {
	struct opts o;
	int kvm_fd;
	int vcpu_mmap;
	struct kvm_cpuid2 *cpuid;
	bool gb_pages;
	unsigned phys_bits;
	unsigned char *image;
	size_t image_len;
	uint64_t array_gpa;
	uint64_t n;		/* words per array */
	uint64_t touched;	/* bytes each guest writes, about: page tables, image, stack, array */
	umlmem_host *host;
	struct vm *vm;
	unsigned nvm;		/* created */
	FILE *out;		/* the human report: stdout, or stderr with --json */

	/* the sampler */
	pthread_t sampler;
	bool sampler_on;
	_Atomic bool sampler_stop;
	_Atomic uint64_t peak_frames;

	/* results */
	double run_s, verify_s, merge_s;
	uint64_t merged_after;	/* pages merged by the scans after the run */
	struct umlmem_stats st;
	struct umlmem_host_info info;
	unsigned right;
	/* --restore: guests vm[o.guests .. nvm) */
	double save_s, restore_s, rerun_s;
	uint64_t image_bytes;
	unsigned restored_right, rerun_right;
};

static _Atomic bool stop_all;
/* Per vCPU thread: inside KVM_RUN; a SIGBUS came from umlmem meanwhile. */
static _Thread_local volatile sig_atomic_t in_run, got_sigbus;

/* ------------------------------------------------------------------------ */
/* Small helpers                                                            */
/* ------------------------------------------------------------------------ */

static uint64_t round_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) / a * a;
}

/* Appends to a fixed buffer, never past its end. */
static void __attribute__((format(printf, 3, 4)))
bprintf(char *buf, size_t size, const char *fmt, ...)
{
	size_t len = strnlen(buf, size);
	va_list ap;

	if (len + 1 >= size)
		return;
	va_start(ap, fmt);
	vsnprintf(buf + len, size - len, fmt, ap);
	va_end(ap);
}

/* A failed umlmem call, with the library's own sentence. */
static void lib_err(int rc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void lib_err(int rc, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	snprintf(msg, sizeof(msg), "%s", umlmem_errmsg());
	fputs("umlmem-kvm: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, ": %s%s%s\n", umlmem_strerror(rc), msg[0] ? ": " : "", msg);
}

/* ------------------------------------------------------------------------ */
/* Options                                                                  */
/* ------------------------------------------------------------------------ */

static void usage(FILE *f)
{
	fputs(
"usage: umlmem-kvm [options]\n"
"Runs KVM guests (one vCPU each, all at once) whose RAM is a umlmem native\n"
"mapping (umlmem_guest_map) used as the KVM memory slot, on a host budget\n"
"smaller than their RAM. Each guest fills an array from a seed, sorts and\n"
"hashes it; guest i uses seed i % K, so equal pages exist and merge. Every\n"
"result is checked against the host's own computation.\n"
"\n"
"  --guests N        guests (vCPUs, VMs) to run at once (default 4)\n"
"  --ram SIZE        guest RAM each (default 256M); K, M, G suffixes\n"
"  --array SIZE      bytes of each guest's array (default 8M)\n"
"  --budget SIZE     host budget (default: 7/8 of what the guests write,\n"
"                    so that the run swaps)\n"
"  --distinct K      distinct seeds (default guests/2, at least 1)\n"
"  --rounds N        times each guest refills, sorts and hashes (default 1)\n"
"  --no-dedup        no merging: the host without UMLMEM_BACKGROUND\n"
"  --json            one JSON object on stdout (the report goes to stderr)\n"
"  --guest-bin PATH  the guest image (default: native/guest.bin in this\n"
"                    program's directory)\n"
"  --swap-dir DIR    swap files (default /var/tmp)\n"
"  --timeout SEC     fail guests still running after SEC seconds\n"
"                    (default 600; 0: none)\n"
"  --ring0           run the guest at CPL 0 rather than 3 (slow where KVM\n"
"                    emulates supervisor code, e.g. kvm_pvm)\n"
"  --restore N       then save guest 0 to an image, restore N guests from\n"
"                    it, check each, and run each again with a seed of its\n"
"                    own (default 0: none)\n"
"  --help            this text\n"
"\n"
"Exit status: 0 all right, 1 a failure, 2 bad usage, 77 KVM or native mode\n"
"not available here.\n", f);
}

static int parse_opts(int argc, char **argv, struct opts *o)
{
	enum { O_GUESTS = 256, O_RAM, O_BUDGET, O_ARRAY, O_DISTINCT, O_ROUNDS, O_JSON,
	       O_NODEDUP, O_BIN, O_SWAP, O_TIMEOUT, O_RING0, O_HELP, O_RESTORE };
	static const struct option lo[] = {
		{ "guests", required_argument, NULL, O_GUESTS },
		{ "ram", required_argument, NULL, O_RAM },
		{ "budget", required_argument, NULL, O_BUDGET },
		{ "array", required_argument, NULL, O_ARRAY },
		{ "distinct", required_argument, NULL, O_DISTINCT },
		{ "rounds", required_argument, NULL, O_ROUNDS },
		{ "json", no_argument, NULL, O_JSON },
		{ "no-dedup", no_argument, NULL, O_NODEDUP },
		{ "guest-bin", required_argument, NULL, O_BIN },
		{ "swap-dir", required_argument, NULL, O_SWAP },
		{ "timeout", required_argument, NULL, O_TIMEOUT },
		{ "ring0", no_argument, NULL, O_RING0 },
		{ "restore", required_argument, NULL, O_RESTORE },
		{ "help", no_argument, NULL, O_HELP },
		{ NULL, 0, NULL, 0 },
	};
	uint64_t v;
	int c, li = -1;

	*o = (struct opts){
		.guests = 4, .ram = 256 * MIB, .array = 8 * MIB, .rounds = 1,
		.dedup = true, .swap_dir = "/var/tmp", .timeout = 600,
	};
	opterr = 0;
	while ((c = getopt_long(argc, argv, "", lo, &li)) != -1) {
		const char *a = optarg;

		switch (c) {
		case O_GUESTS:
			if (!native_parse_uint(a, MAX_GUESTS, &v) || v == 0)
				goto bad;
			o->guests = (unsigned)v;
			break;
		case O_RAM:
			if (!native_parse_size(a, &o->ram))
				goto bad;
			break;
		case O_BUDGET:
			if (!native_parse_size(a, &o->budget) || o->budget < PAGE)
				goto bad;
			break;
		case O_ARRAY:
			if (!native_parse_size(a, &o->array))
				goto bad;
			break;
		case O_DISTINCT:
			if (!native_parse_uint(a, MAX_GUESTS, &v) || v == 0)
				goto bad;
			o->distinct = (unsigned)v;
			break;
		case O_ROUNDS:
			if (!native_parse_uint(a, 1000000, &o->rounds) || o->rounds == 0)
				goto bad;
			break;
		case O_JSON:
			o->json = true;
			break;
		case O_NODEDUP:
			o->dedup = false;
			break;
		case O_BIN:
			o->guest_bin = a;
			break;
		case O_SWAP:
			o->swap_dir = a;
			break;
		case O_TIMEOUT:
			if (!native_parse_uint(a, 1000000, &v))
				goto bad;
			o->timeout = (double)v;
			break;
		case O_RING0:
			o->ring0 = true;
			break;
		case O_RESTORE:
			if (!native_parse_uint(a, MAX_GUESTS, &v))
				goto bad;
			o->restore = (unsigned)v;
			break;
		case O_HELP:
			usage(stdout);
			exit(0);
		default:
			fprintf(stderr, "umlmem-kvm: unknown option or missing value: %s\n",
				argv[optind - 1]);
			fputs("try umlmem-kvm --help\n", stderr);
			return -1;
		bad:
			fprintf(stderr, "umlmem-kvm: bad value for --%s: '%s'\n"
				"try umlmem-kvm --help\n", li >= 0 ? lo[li].name : "?", a);
			return -1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "umlmem-kvm: unexpected argument '%s'\ntry umlmem-kvm --help\n",
			argv[optind]);
		return -1;
	}
	if (!o->distinct)
		o->distinct = o->guests / 2 ? o->guests / 2 : 1;
	if (o->distinct > o->guests) {
		fprintf(stderr, "umlmem-kvm: --distinct %u is more than --guests %u\n",
			o->distinct, o->guests);
		return -1;
	}
	if (o->ram % PAGE) {
		fprintf(stderr, "umlmem-kvm: --ram must be a multiple of %u bytes "
			"(KVM memory slots are whole pages)\n", UMLMEM_PAGE_SIZE);
		return -1;
	}
	if (o->array < 8 || o->array % 8) {
		fprintf(stderr, "umlmem-kvm: --array must be a positive multiple of 8 bytes "
			"(an array of 64-bit words)\n");
		return -1;
	}
	return 0;
}

/* ------------------------------------------------------------------------ */
/* The guest image                                                          */
/* ------------------------------------------------------------------------ */

/* native/guest.bin beside /proc/self/exe: where the build puts both. */
static char *default_image_path(void)
{
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	char *slash, *p;

	if (n <= 0)
		return strdup("build/native/guest.bin");
	exe[n] = 0;
	slash = strrchr(exe, '/');
	if (slash)
		*slash = 0;
	if (asprintf(&p, "%s/native/guest.bin", slash ? exe : ".") < 0)
		return NULL;
	return p;
}

static int load_image(struct run *r)
{
	char *path = r->o.guest_bin ? strdup(r->o.guest_bin) : default_image_path();
	struct stat sb;
	int fd = -1;
	size_t got = 0;

	if (!path)
		return -1;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &sb) < 0) {
		fprintf(stderr, "umlmem-kvm: cannot read the guest image %s: %s\n"
			"  (build it with `make %s`, or name it with --guest-bin)\n",
			path, strerror(errno), "build/native/guest.bin");
		goto fail;
	}
	if (sb.st_size <= 0 || (uint64_t)sb.st_size > IMAGE_MAX) {
		fprintf(stderr, "umlmem-kvm: the guest image %s is %lld bytes: "
			"expected 1 to %llu\n", path, (long long)sb.st_size,
			(unsigned long long)IMAGE_MAX);
		goto fail;
	}
	r->image_len = (size_t)sb.st_size;
	r->image = malloc(r->image_len);
	if (!r->image)
		goto fail;
	while (got < r->image_len) {
		ssize_t n = read(fd, r->image + got, r->image_len - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			fprintf(stderr, "umlmem-kvm: reading %s: %s\n", path,
				n < 0 ? strerror(errno) : "file shrank");
			goto fail;
		}
		got += (size_t)n;
	}
	close(fd);
	free(path);
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	free(path);
	return -1;
}

/* ------------------------------------------------------------------------ */
/* KVM: the system, one VM and its vCPU                                     */
/* ------------------------------------------------------------------------ */

/* /dev/kvm, its API version and the capabilities the demo needs. Returns
   EXIT_SKIP with a message when KVM is not usable here. */
static int kvm_open(struct run *r)
{
	int api, nent = 64;
	unsigned i;

	r->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (r->kvm_fd < 0) {
		fprintf(stderr, "umlmem-kvm: skipped: cannot open /dev/kvm: %s "
			"(no hardware virtualisation, kvm module not loaded, or no permission)\n",
			strerror(errno));
		return EXIT_SKIP;
	}
	api = ioctl(r->kvm_fd, KVM_GET_API_VERSION, 0);
	if (api != KVM_API_VERSION) {
		fprintf(stderr, "umlmem-kvm: skipped: /dev/kvm API version %d, expected %d%s%s\n",
			api, KVM_API_VERSION, api < 0 ? ": " : "", api < 0 ? strerror(errno) : "");
		return EXIT_SKIP;
	}
	if (ioctl(r->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_USER_MEMORY) <= 0 ||
	    ioctl(r->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_EXT_CPUID) <= 0) {
		fprintf(stderr, "umlmem-kvm: skipped: KVM lacks user memory slots or "
			"KVM_GET_SUPPORTED_CPUID\n");
		return EXIT_SKIP;
	}
	r->vcpu_mmap = ioctl(r->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (r->vcpu_mmap < (int)sizeof(struct kvm_run)) {
		fprintf(stderr, "umlmem-kvm: skipped: KVM_GET_VCPU_MMAP_SIZE: %s\n",
			r->vcpu_mmap < 0 ? strerror(errno) : "too small");
		return EXIT_SKIP;
	}
	for (;;) {
		r->cpuid = calloc(1, sizeof(*r->cpuid) + (size_t)nent * sizeof(r->cpuid->entries[0]));
		if (!r->cpuid)
			return EXIT_FAIL;
		r->cpuid->nent = (uint32_t)nent;
		if (ioctl(r->kvm_fd, KVM_GET_SUPPORTED_CPUID, r->cpuid) == 0)
			break;
		free(r->cpuid);
		r->cpuid = NULL;
		if (errno != E2BIG || nent >= 4096) {
			fprintf(stderr, "umlmem-kvm: skipped: KVM_GET_SUPPORTED_CPUID: %s\n",
				strerror(errno));
			return EXIT_SKIP;
		}
		nent *= 2;
	}
	r->phys_bits = 36;
	for (i = 0; i < r->cpuid->nent; i++) {
		const struct kvm_cpuid_entry2 *e = &r->cpuid->entries[i];

		if (e->function == 0x80000001 && (e->edx & CPUID_PDPE1GB))
			r->gb_pages = true;
		if (e->function == 0x80000008 && (e->eax & 0xff))
			r->phys_bits = e->eax & 0xff;
	}
	return 0;
}

/* The identity map of guest physical [0, ram) that long mode needs, written
   through the mapping: 1 GiB pages from the PDPT when the vCPU has them,
   else 2 MiB pages from one page directory per GiB; user-accessible, since
   the guest runs at CPL 3. Addresses past the RAM stay unmapped (a stray
   access page-faults into the monitor), except in the last large page. */
static void write_page_tables(const struct run *r, unsigned char *base)
{
	const uint64_t f = PTE_P | PTE_RW | PTE_US;
	uint64_t *pml4 = (uint64_t *)(base + PML4_GPA);
	uint64_t *pdpt = (uint64_t *)(base + PDPT_GPA);
	uint64_t ram = r->o.ram, gb, mb2;

	pml4[0] = PDPT_GPA | f;
	for (gb = 0; gb * GIB < ram; gb++) {
		if (r->gb_pages) {
			pdpt[gb] = (gb * GIB) | f | PTE_PS;
			continue;
		}
		uint64_t *pd = (uint64_t *)(base + PD_GPA + gb * PAGE);

		pdpt[gb] = (PD_GPA + gb * PAGE) | f;
		for (mb2 = 0; mb2 < 512 && gb * GIB + mb2 * 2 * MIB < ram; mb2++)
			pd[mb2] = (gb * GIB + mb2 * 2 * MIB) | f | PTE_PS;
	}
}

/* What the monitor's handler leaves at FAULT_GPA: the vector and the
   frame the CPU pushed. */
struct fault_record {
	uint64_t vector, error, rip, cs, rsp, cr2;
	uint64_t valid;		/* 1 once an exception was taken */
};

/*
 * The common handler of the exception stubs, hand-assembled (as(1),
 * Intel syntax): copies the frame into the fault record and halts.
 *	mov rax, [rsp]      ; mov [0x100], rax	vector (pushed by the stub)
 *	mov rax, [rsp+8]    ; mov [0x108], rax	error code (CPU's, or the stub's 0)
 *	mov rax, [rsp+16]   ; mov [0x110], rax	RIP
 *	mov rax, [rsp+24]   ; mov [0x118], rax	CS
 *	mov rax, [rsp+40]   ; mov [0x120], rax	RSP
 *	mov rax, cr2        ; mov [0x128], rax
 *	mov qword ptr [0x130], 1		valid
 *   1:	hlt ; jmp 1b
 */
static const unsigned char monitor_handler[] = {
	0x48, 0x8b, 0x04, 0x24, 0x48, 0x89, 0x04, 0x25, 0x00, 0x01, 0x00, 0x00,
	0x48, 0x8b, 0x44, 0x24, 0x08, 0x48, 0x89, 0x04, 0x25, 0x08, 0x01, 0x00,
	0x00, 0x48, 0x8b, 0x44, 0x24, 0x10, 0x48, 0x89, 0x04, 0x25, 0x10, 0x01,
	0x00, 0x00, 0x48, 0x8b, 0x44, 0x24, 0x18, 0x48, 0x89, 0x04, 0x25, 0x18,
	0x01, 0x00, 0x00, 0x48, 0x8b, 0x44, 0x24, 0x28, 0x48, 0x89, 0x04, 0x25,
	0x20, 0x01, 0x00, 0x00, 0x0f, 0x20, 0xd0, 0x48, 0x89, 0x04, 0x25, 0x28,
	0x01, 0x00, 0x00, 0x48, 0xc7, 0x04, 0x25, 0x30, 0x01, 0x00, 0x00, 0x01,
	0x00, 0x00, 0x00, 0xf4, 0xeb, 0xfd,
};

/* Vectors for which the CPU pushes an error code. */
static bool has_error_code(unsigned v)
{
	return v == 8 || (v >= 10 && v <= 14) || v == 17 || v == 21 || v == 29 || v == 30;
}

/*
 * Page 0: the monitor. GDT: null, ring-0 code and data, ring-3 data and
 * code (64-bit code: L=1, D=0), the 64-bit TSS; the TSS gives the ring-0
 * stack for an exception taken at CPL 3; an interrupt gate per exception
 * vector (0..31), each to a 16-byte stub that pushes a zero error code
 * where the CPU does not, then the vector, and jumps to monitor_handler.
 */
static void write_monitor(unsigned char *base)
{
	static const uint64_t gdt[7] = {
		0,
		0x00af9b000000ffffull,	/* 0x08 ring-0 code, 64-bit */
		0x00cf93000000ffffull,	/* 0x10 ring-0 data */
		0x00cff3000000ffffull,	/* 0x18 ring-3 data */
		0x00affb000000ffffull,	/* 0x20 ring-3 code, 64-bit */
		0x00008b0000000067ull | (TSS_GPA << 16),	/* 0x28 TSS (busy), limit 0x67 */
		0,			/* its upper half: base 63..32 */
	};
	uint64_t *idt = (uint64_t *)(base + IDT_GPA);
	uint64_t handler = STUB_GPA + NVEC * 16, rsp0 = RING0_STACK;
	unsigned v;

	memcpy(base + GDT_GPA, gdt, sizeof(gdt));
	memcpy(base + TSS_GPA + 4, &rsp0, sizeof(rsp0));	/* RSP0 */
	base[TSS_GPA + 0x66] = 0x68;				/* no I/O bitmap */
	for (v = 0; v < NVEC; v++) {
		uint64_t stub = STUB_GPA + v * 16;
		unsigned char *c = base + stub;
		size_t k = 0;
		int32_t rel;

		if (!has_error_code(v)) {
			c[k++] = 0x6a;		/* push 0 */
			c[k++] = 0;
		}
		c[k++] = 0x6a;			/* push v */
		c[k++] = (unsigned char)v;
		c[k++] = 0xe9;			/* jmp rel32 */
		rel = (int32_t)(handler - (stub + k + 4));
		memcpy(c + k, &rel, 4);
		/* 64-bit interrupt gate, DPL 0, present, to SEL_KCODE:stub */
		idt[2 * v] = (stub & 0xffff) | ((uint64_t)SEL_KCODE << 16) |
			     (0x8eull << 40) | (((stub >> 16) & 0xffff) << 48);
		idt[2 * v + 1] = stub >> 32;
	}
	memcpy(base + handler, monitor_handler, sizeof(monitor_handler));
}

static void __attribute__((format(printf, 2, 3))) vm_fail(struct vm *v, const char *fmt, ...)
{
	int err = errno;
	va_list ap;

	if (v->fail[0])
		return;
	va_start(ap, fmt);
	vsnprintf(v->fail, sizeof(v->fail), fmt, ap);
	va_end(ap);
	if (err)
		bprintf(v->fail, sizeof(v->fail), ": %s", strerror(err));
}

static struct kvm_segment segment(uint16_t sel, bool code)
{
	return (struct kvm_segment){
		.base = 0, .limit = 0xffffffff, .selector = sel, .type = code ? 11 : 3,
		.present = 1, .dpl = sel & 3, .db = !code, .s = 1, .l = code, .g = 1,
	};
}

static int vcpu_setup(struct run *r, struct vm *v)
{
	bool user = !r->o.ring0;
	struct kvm_sregs sr;
	struct kvm_regs rg;

	errno = 0;
	if (ioctl(v->vcpu_fd, KVM_SET_CPUID2, r->cpuid) < 0) {
		vm_fail(v, "KVM_SET_CPUID2");
		return -1;
	}
	if (ioctl(v->vcpu_fd, KVM_GET_SREGS, &sr) < 0) {
		vm_fail(v, "KVM_GET_SREGS");
		return -1;
	}
	sr.cs = segment(user ? SEL_UCODE : SEL_KCODE, true);
	sr.ds = sr.es = sr.fs = sr.gs = sr.ss = segment(user ? SEL_UDATA : SEL_KDATA, false);
	sr.tr = (struct kvm_segment){
		.base = TSS_GPA, .limit = 0x67, .selector = SEL_TSS, .type = 11, .present = 1,
	};
	sr.gdt.base = GDT_GPA;
	sr.gdt.limit = 7 * 8 - 1;
	sr.idt.base = IDT_GPA;
	sr.idt.limit = NVEC * 16 - 1;
	sr.cr3 = PML4_GPA;
	sr.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
	sr.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
	sr.efer = EFER_LME | EFER_LMA;
	if (ioctl(v->vcpu_fd, KVM_SET_SREGS, &sr) < 0) {
		vm_fail(v, "KVM_SET_SREGS (64-bit long mode)");
		return -1;
	}
	memset(&rg, 0, sizeof(rg));
	rg.rip = GUEST_LOAD_GPA;
	rg.rsp = GUEST_STACK_TOP;
	rg.rflags = 0x2;
	if (ioctl(v->vcpu_fd, KVM_SET_REGS, &rg) < 0) {
		vm_fail(v, "KVM_SET_REGS");
		return -1;
	}
	return 0;
}

/* The guest's memory (monitor, page tables, parameters, image), its VM, its
   memory slot (the mapping) and its vCPU. */
static int vm_create(struct run *r, struct vm *v)
{
	struct kvm_userspace_memory_region slot;
	struct guest_params p = {
		.magic = GUEST_MAGIC, .seed = v->seed, .array_gpa = r->array_gpa,
		.n = r->n, .rounds = r->o.rounds,
	};

	/* plain stores through the mapping: each first touch is a umlmem fault */
	write_monitor(v->base);
	write_page_tables(r, v->base);
	memcpy(v->base + GUEST_PARAMS_GPA, &p, sizeof(p));
	memcpy(v->base + GUEST_LOAD_GPA, r->image, r->image_len);

	errno = 0;
	v->vm_fd = ioctl(r->kvm_fd, KVM_CREATE_VM, 0);
	if (v->vm_fd < 0) {
		vm_fail(v, "KVM_CREATE_VM");
		return -1;
	}
	/* Only for real-mode emulation on VMX without unrestricted guest, which
	   this vCPU never enters; kept off the RAM, which it would overlap above
	   4 GiB - 0x43000, since its pages are a memory slot of KVM's own. */
	if (ioctl(r->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_SET_TSS_ADDR) > 0 &&
	    r->o.ram <= 0xfffbd000ull &&
	    ioctl(v->vm_fd, KVM_SET_TSS_ADDR, 0xfffbd000ul) < 0) {
		vm_fail(v, "KVM_SET_TSS_ADDR");
		return -1;
	}
	slot = (struct kvm_userspace_memory_region){
		.slot = 0, .flags = 0, .guest_phys_addr = 0, .memory_size = r->o.ram,
		.userspace_addr = (uint64_t)(uintptr_t)v->base,
	};
	if (ioctl(v->vm_fd, KVM_SET_USER_MEMORY_REGION, &slot) < 0) {
		vm_fail(v, "KVM_SET_USER_MEMORY_REGION (slot 0: %" PRIu64 " bytes at %p)",
			r->o.ram, (void *)v->base);
		return -1;
	}
	v->vcpu_fd = ioctl(v->vm_fd, KVM_CREATE_VCPU, 0);
	if (v->vcpu_fd < 0) {
		vm_fail(v, "KVM_CREATE_VCPU");
		return -1;
	}
	v->run = mmap(NULL, (size_t)r->vcpu_mmap, PROT_READ | PROT_WRITE, MAP_SHARED,
		      v->vcpu_fd, 0);
	if (v->run == MAP_FAILED) {
		v->run = NULL;
		vm_fail(v, "mmap of the vCPU's kvm_run");
		return -1;
	}
	return vcpu_setup(r, v);
}

static void vm_close(struct run *r, struct vm *v)
{
	if (v->run)
		munmap(v->run, (size_t)r->vcpu_mmap);
	if (v->vcpu_fd >= 0)
		close(v->vcpu_fd);
	if (v->vm_fd >= 0)
		close(v->vm_fd);
	v->run = NULL;
	v->vcpu_fd = v->vm_fd = -1;
}

/* ------------------------------------------------------------------------ */
/* Running                                                                  */
/* ------------------------------------------------------------------------ */

static const char *exit_name(uint32_t reason)
{
	switch (reason) {
	case KVM_EXIT_UNKNOWN: return "UNKNOWN";
	case KVM_EXIT_EXCEPTION: return "EXCEPTION";
	case KVM_EXIT_IO: return "IO";
	case KVM_EXIT_HYPERCALL: return "HYPERCALL";
	case KVM_EXIT_DEBUG: return "DEBUG";
	case KVM_EXIT_HLT: return "HLT";
	case KVM_EXIT_MMIO: return "MMIO";
	case KVM_EXIT_SHUTDOWN: return "SHUTDOWN (triple fault)";
	case KVM_EXIT_FAIL_ENTRY: return "FAIL_ENTRY";
	case KVM_EXIT_INTR: return "INTR";
	case KVM_EXIT_INTERNAL_ERROR: return "INTERNAL_ERROR";
	case KVM_EXIT_SYSTEM_EVENT: return "SYSTEM_EVENT";
	case KVM_EXIT_MEMORY_FAULT: return "MEMORY_FAULT";
	default: return "?";
	}
}

#define NO_PAGE UINT64_MAX

static bool page_is_zero(const unsigned char *p)
{
	static const unsigned char zero[UMLMEM_PAGE_SIZE];

	return !memcmp(p, zero, PAGE);
}

/* The first page of [gpa, gpa + len) whose bytes differ between the
   mapping and umlmem_read(), or NO_PAGE. */
static uint64_t views_differ(struct vm *v, uint64_t gpa, uint64_t len, unsigned char *buf)
{
	uint64_t a;

	for (a = gpa & ~(PAGE - 1); a < gpa + len; a += PAGE)
		if (umlmem_read(v->g, a, buf, PAGE) || memcmp(buf, v->base + a, PAGE))
			return a;
	return NO_PAGE;
}

/* The same over what the host wrote before the run (monitor, PML4, PDPT,
   page directories, parameters, image) and the top of the guest's stack;
   only those: reading an untouched page through the mapping would give it
   a frame. */
static uint64_t setup_differs(struct vm *v, unsigned char *buf)
{
	const uint64_t range[5][2] = {
		{ 0, PDPT_GPA + PAGE },
		{ PD_GPA, v->npd * PAGE },
		{ GUEST_PARAMS_GPA, PAGE },
		{ GUEST_STACK_TOP - 2 * PAGE, 2 * PAGE },
		{ GUEST_LOAD_GPA, v->image_len },
	};
	uint64_t bad = NO_PAGE;

	for (unsigned i = 0; i < 5 && bad == NO_PAGE; i++)
		bad = views_differ(v, range[i][0], range[i][1], buf);
	return bad;
}

/* What the last exit carried, and the vCPU's registers, into v->fail. */
static void dump_vcpu(struct vm *v)
{
	const struct kvm_run *run = v->run;
	struct kvm_regs rg;
	struct kvm_sregs sr;
	char *b = v->fail;
	size_t n = sizeof(v->fail);
	uint32_t i;

	switch (run->exit_reason) {
	case KVM_EXIT_FAIL_ENTRY:
		bprintf(b, n, "\n    hardware_entry_failure_reason 0x%llx",
			(unsigned long long)run->fail_entry.hardware_entry_failure_reason);
		break;
	case KVM_EXIT_INTERNAL_ERROR:
		bprintf(b, n, "\n    suberror %u", run->internal.suberror);
		for (i = 0; i < run->internal.ndata && i < 16; i++)
			bprintf(b, n, " data[%u]=0x%llx", i, (unsigned long long)run->internal.data[i]);
		break;
	case KVM_EXIT_MMIO:
		bprintf(b, n, "\n    %s of %u bytes at guest physical 0x%llx, outside the RAM",
			run->mmio.is_write ? "write" : "read", run->mmio.len,
			(unsigned long long)run->mmio.phys_addr);
		break;
	case KVM_EXIT_IO:
		bprintf(b, n, "\n    port I/O: %s port 0x%x, %u bytes x %u",
			run->io.direction == KVM_EXIT_IO_OUT ? "out" : "in", run->io.port,
			run->io.size, run->io.count);
		break;
	case KVM_EXIT_MEMORY_FAULT: {
		/* struct { __u64 flags, gpa, size; } memory_fault, in the same union */
		const uint64_t *mf = (const uint64_t *)&run->hw;

		bprintf(b, n, "\n    guest physical 0x%" PRIx64 ", %" PRIu64 " bytes, flags 0x%" PRIx64,
			mf[1], mf[2], mf[0]);
		break;
	}
	default:
		break;
	}
	if (ioctl(v->vcpu_fd, KVM_GET_REGS, &rg) < 0) {
		bprintf(b, n, "\n    (KVM_GET_REGS: %s)", strerror(errno));
		return;
	}
	bprintf(b, n, "\n    rip %016llx rsp %016llx rflags %08llx\n"
		"    rax %016llx rbx %016llx rcx %016llx rdx %016llx\n"
		"    rsi %016llx rdi %016llx rbp %016llx r8  %016llx\n"
		"    r9  %016llx r10 %016llx r11 %016llx r12 %016llx\n"
		"    r13 %016llx r14 %016llx r15 %016llx",
		rg.rip, rg.rsp, rg.rflags, rg.rax, rg.rbx, rg.rcx, rg.rdx, rg.rsi, rg.rdi,
		rg.rbp, rg.r8, rg.r9, rg.r10, rg.r11, rg.r12, rg.r13, rg.r14, rg.r15);
	if (ioctl(v->vcpu_fd, KVM_GET_SREGS, &sr) < 0) {
		bprintf(b, n, "\n    (KVM_GET_SREGS: %s)", strerror(errno));
		return;
	}
	bprintf(b, n, "\n    cr0 %08llx cr2 %016llx cr3 %08llx cr4 %08llx efer %llx cs %04x (l=%u)",
		sr.cr0, sr.cr2, sr.cr3, sr.cr4, sr.efer, sr.cs.selector, sr.cs.l);
	/* right away, while a stale mapping may still be there: do the two
	   views of what the host wrote (monitor, page tables, parameters,
	   image) still agree? */
	unsigned char *buf = malloc(PAGE);
	uint64_t bad = buf ? setup_differs(v, buf) : NO_PAGE;

	if (bad != NO_PAGE)
		bprintf(b, n, "\n    the mapping disagrees with umlmem_read at guest page 0x%"
			PRIx64 "%s", bad, page_is_zero(v->base + bad) ? " (the mapping reads zeros)" : "");
	free(buf);
}

static const char *const vec_name[NVEC] = {
	"#DE divide error", "#DB debug", "NMI", "#BP breakpoint", "#OF overflow",
	"#BR bound", "#UD invalid opcode", "#NM no FPU", "#DF double fault", "9",
	"#TS invalid TSS", "#NP segment not present", "#SS stack fault",
	"#GP general protection", "#PF page fault", "15", "#MF x87 error",
	"#AC alignment check", "#MC machine check", "#XM SIMD error",
	"#VE virtualisation", "#CP control protection",
};

/*
 * A HLT exit: the end of the guest, or an exception the monitor caught.
 * At CPL 3 the guest's own HLT is privileged: it raises #GP(0) at an HLT
 * instruction, and the monitor halts on its behalf. Anything else the
 * monitor recorded is a failure.
 */
static bool guest_halted(struct vm *v)
{
	struct fault_record fr;
	const char *name;

	errno = 0;
	memcpy(&fr, v->base + FAULT_GPA, sizeof(fr));
	if (!fr.valid) {
		if (v->ring0) {
			v->halted = true;
			return true;
		}
		vm_fail(v, "HLT at CPL 0 with no exception recorded");
		return false;
	}
	if (fr.vector == VEC_GP && fr.error == 0 && (fr.cs & 3) == (v->ring0 ? 0u : 3u) &&
	    fr.rip < v->ram && v->base[fr.rip] == OP_HLT) {
		v->halted = true;
		return true;
	}
	name = fr.vector < NVEC && vec_name[fr.vector] ? vec_name[fr.vector] : "?";
	vm_fail(v, "guest exception %" PRIu64 " (%s), error code 0x%" PRIx64 ", at rip 0x%"
		PRIx64 " (cs 0x%" PRIx64 "), rsp 0x%" PRIx64 ", cr2 0x%" PRIx64
		"; registers as the monitor halted:", fr.vector, name, fr.error, fr.rip, fr.cs,
		fr.rsp, fr.cr2);
	return false;
}

static void *vcpu_thread(void *arg)
{
	struct vm *v = arg;

	v->t0 = now_s();
	for (;;) {
		if (atomic_load(&stop_all)) {
			errno = 0;
			vm_fail(v, "timed out: still running after --timeout (%" PRIu64 " exits)",
				v->exits);
			dump_vcpu(v);
			break;
		}
		in_run = 1;
		int rc = ioctl(v->vcpu_fd, KVM_RUN, 0);
		in_run = 0;

		v->exits++;
		if (got_sigbus) {
			errno = 0;
			vm_fail(v, "SIGBUS: umlmem could not serve a fault in this guest's memory "
				"(its message is above)");
			dump_vcpu(v);
			break;
		}
		if (rc < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			/* EFAULT: a guest page KVM could not get from the mapping */
			vm_fail(v, "KVM_RUN (exit reason %u %s)", v->run->exit_reason,
				exit_name(v->run->exit_reason));
			dump_vcpu(v);
			break;
		}
		if (v->run->exit_reason == KVM_EXIT_HLT) {
			if (!guest_halted(v))
				dump_vcpu(v);
			break;
		}
		if (v->run->exit_reason == KVM_EXIT_INTR)
			continue;
		errno = 0;
		vm_fail(v, "unexpected exit %u (%s)", v->run->exit_reason,
			exit_name(v->run->exit_reason));
		dump_vcpu(v);
		break;
	}
	v->t1 = now_s();
	atomic_store(&v->finished, true);
	return NULL;
}

/* Only there to interrupt KVM_RUN: no SA_RESTART, nothing to do. */
static void on_kick(int sig)
{
	(void)sig;
}

/*
 * umlmem sends SIGBUS (tgkill) to a thread whose fault it cannot serve.
 * For a vCPU thread inside KVM_RUN the fault was KVM's, on the guest's
 * behalf: note it, and KVM_RUN returns EINTR to fail that guest alone.
 * Anywhere else it is what it would be without the handler: fatal.
 */
static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
	struct sigaction dfl = { .sa_handler = SIG_DFL };

	(void)uc;
	if (in_run && si->si_code == SI_TKILL) {
		got_sigbus = 1;
		return;
	}
	sigemptyset(&dfl.sa_mask);
	sigaction(sig, &dfl, NULL);
	if (si->si_code <= 0)	/* sent, not raised by an access: send it again */
		raise(sig);
	/* an access: returning repeats it, now with the default action */
}

/* The host's peak of frames in use, while the guests run and after. */
static void *sampler_thread(void *arg)
{
	struct run *r = arg;
	struct umlmem_stats s;

	while (!atomic_load(&r->sampler_stop)) {
		if (umlmem_host_stats(r->host, &s) == 0 && s.frames_used > atomic_load(&r->peak_frames))
			atomic_store(&r->peak_frames, s.frames_used);
		usleep(SAMPLE_US);
	}
	return NULL;
}

/* Starts every vCPU, waits for all (kicking them out at the timeout). */
/* Runs the vCPUs of guests [from, nvm), all at once, to their end. */
static int run_guests(struct run *r, unsigned from)
{
	struct sigaction sa = { .sa_handler = on_kick };
	struct sigaction sb = { .sa_sigaction = on_sigbus, .sa_flags = SA_SIGINFO };
	double t0, deadline;
	unsigned i, live;
	int rc;

	sigemptyset(&sa.sa_mask);
	sigemptyset(&sb.sa_mask);
	if (sigaction(SIGUSR1, &sa, NULL) < 0 || sigaction(SIGBUS, &sb, NULL) < 0) {
		perror("umlmem-kvm: sigaction");
		return -1;
	}
	t0 = now_s();
	deadline = r->o.timeout > 0 ? t0 + r->o.timeout : 0;
	for (i = from; i < r->nvm; i++) {
		rc = pthread_create(&r->vm[i].thr, NULL, vcpu_thread, &r->vm[i]);
		if (rc) {
			fprintf(stderr, "umlmem-kvm: pthread_create: %s\n", strerror(rc));
			atomic_store(&stop_all, true);
			break;
		}
		r->vm[i].thr_started = true;
	}
	for (;;) {
		live = 0;
		for (i = from; i < r->nvm; i++)
			if (r->vm[i].thr_started && !atomic_load(&r->vm[i].finished))
				live++;
		if (!live)
			break;
		if (deadline && now_s() > deadline && !atomic_load(&stop_all)) {
			fprintf(stderr, "umlmem-kvm: %u guest(s) still running after %.0f s: "
				"stopping them\n", live, r->o.timeout);
			atomic_store(&stop_all, true);
		}
		if (atomic_load(&stop_all))
			for (i = from; i < r->nvm; i++)
				if (r->vm[i].thr_started && !atomic_load(&r->vm[i].finished)) {
					r->vm[i].run->immediate_exit = 1;
					pthread_kill(r->vm[i].thr, SIGUSR1);
				}
		usleep(SAMPLE_US);
	}
	for (i = from; i < r->nvm; i++)
		if (r->vm[i].thr_started)
			pthread_join(r->vm[i].thr, NULL);
	r->run_s = now_s() - t0;
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Checking                                                                 */
/* ------------------------------------------------------------------------ */

static void __attribute__((format(printf, 2, 3))) verdict(struct vm *v, const char *fmt, ...)
{
	va_list ap;

	if (!v->ok)
		return;
	v->ok = false;
	va_start(ap, fmt);
	vsnprintf(v->verdict, sizeof(v->verdict), fmt, ap);
	va_end(ap);
}

/*
 * One guest against the expectation for its seed: @want holds the
 * parameter block the host's guest_work() left and @arr the array it
 * sorted. What the host wrote below the array (monitor, page tables,
 * parameters, image) and the guest's stack must read the same through the
 * mapping and with umlmem_read(); the parameter block must hold the right
 * answer; then the whole array, both ways, chunk by chunk.
 */
static void check_guest(struct run *r, struct vm *v, const struct guest_params *want,
			const uint64_t *arr, unsigned char *chunk)
{
	struct guest_params viam, viar;
	uint64_t bytes = r->n * 8, off, bad;
	int rc;

	v->ok = true;
	/* what the host wrote before the run, and the guest's stack */
	bad = setup_differs(v, chunk);
	if (!v->halted) {
		if (bad != NO_PAGE)
			verdict(v, "did not halt: %s\n    and the mapping disagrees with "
				"umlmem_read at guest page 0x%" PRIx64 "%s", v->fail, bad,
				page_is_zero(v->base + bad) ? " (the mapping reads zeros)" : "");
		else
			verdict(v, "did not halt: %s", v->fail);
		return;
	}
	if (bad != NO_PAGE) {
		verdict(v, "the mapping disagrees with umlmem_read at guest page 0x%" PRIx64 "%s",
			bad, page_is_zero(v->base + bad) ? " (the mapping reads zeros)" : "");
		return;
	}
	memcpy(&viam, v->base + GUEST_PARAMS_GPA, sizeof(viam));
	rc = umlmem_read(v->g, GUEST_PARAMS_GPA, &viar, sizeof(viar));
	if (rc) {
		verdict(v, "umlmem_read of the parameters: %s: %s", umlmem_strerror(rc),
			umlmem_errmsg());
		return;
	}
	v->res = viam;
	if (memcmp(&viam, &viar, sizeof(viam)))
		verdict(v, "the parameter block differs between the mapping and umlmem_read "
			"(hash %016" PRIx64 " vs %016" PRIx64 ")", viam.hash, viar.hash);
	else if (viam.magic != GUEST_MAGIC || viam.seed != v->seed || viam.n != r->n ||
		 viam.rounds != r->o.rounds || viam.array_gpa != r->array_gpa)
		verdict(v, "the guest changed its inputs (magic %016" PRIx64 " seed %" PRIu64
			" n %" PRIu64 ")", viam.magic, viam.seed, viam.n);
	else if (viam.done != 1)
		verdict(v, "halted without setting done (done=%" PRIu64 ")", viam.done);
	else if (viam.sorted != 1)
		verdict(v, "the guest found its array unsorted (sorted=%" PRIu64 ")", viam.sorted);
	else if (viam.hash != want->hash)
		verdict(v, "hash %016" PRIx64 ", the host computed %016" PRIx64,
			viam.hash, want->hash);
	if (!v->ok)
		return;
	for (off = 0; off < bytes; off += CHECK_CHUNK) {
		size_t len = (size_t)(bytes - off < CHECK_CHUNK ? bytes - off : CHECK_CHUNK);
		const unsigned char *w = (const unsigned char *)arr + off;

		if (memcmp(v->base + r->array_gpa + off, w, len)) {
			verdict(v, "array bytes %" PRIu64 "..+%zu differ from the host's "
				"through the mapping", off, len);
			return;
		}
		rc = umlmem_read(v->g, r->array_gpa + off, chunk, len);
		if (rc) {
			verdict(v, "umlmem_read of the array at +%" PRIu64 ": %s: %s", off,
				umlmem_strerror(rc), umlmem_errmsg());
			return;
		}
		if (memcmp(chunk, w, len)) {
			verdict(v, "array bytes %" PRIu64 "..+%zu differ from the host's "
				"with umlmem_read", off, len);
			return;
		}
	}
}

/* Seed by seed: the host runs guest_work() once per seed on a malloc'd
   array and checks every guest of that seed against it. */
static int check_all(struct run *r)
{
	uint64_t *arr = malloc(r->n * 8);
	unsigned char *chunk = malloc(CHECK_CHUNK);
	unsigned s, i;
	double t0 = now_s();

	if (!arr || !chunk) {
		fprintf(stderr, "umlmem-kvm: no memory for the host's own array (%" PRIu64
			" bytes)\n", r->n * 8);
		free(arr);
		free(chunk);
		return -1;
	}
	for (s = 0; s < r->o.distinct; s++) {
		struct guest_params want = {
			.magic = GUEST_MAGIC, .seed = s, .array_gpa = r->array_gpa,
			.n = r->n, .rounds = r->o.rounds,
		};

		guest_work(&want, arr);
		for (i = 0; i < r->nvm; i++)
			if (r->vm[i].seed == s) {
				check_guest(r, &r->vm[i], &want, arr, chunk);
				r->right += r->vm[i].ok;
			}
	}
	free(arr);
	free(chunk);
	r->verify_s = now_s() - t0;
	return 0;
}

/* ------------------------------------------------------------------------ */
/* --restore: guest 0 saved, N guests restored from the image               */
/* ------------------------------------------------------------------------ */

/* The host's own run of seed @seed into @want and @arr. */
static void expect_seed(struct run *r, uint64_t seed, struct guest_params *want, uint64_t *arr)
{
	*want = (struct guest_params){
		.magic = GUEST_MAGIC, .seed = seed, .array_gpa = r->array_gpa,
		.n = r->n, .rounds = r->o.rounds,
	};
	guest_work(want, arr);
}

/* Saves guest 0, restores o.restore guests from the image into vm[nvm..]
   and checks each for guest 0's state; then gives each a VM, a vCPU and a
   seed of its own, runs them all again and checks them again. 0, or -1
   when something could not be done (a wrong guest is counted, not that). */
static int restore_phase(struct run *r)
{
	uint64_t *arr = malloc(r->n * 8);
	unsigned char *chunk = malloc(CHECK_CHUNK);
	unsigned first = r->nvm, n = r->o.restore, i;
	struct guest_params want;
	char path[PATH_MAX];
	struct stat st;
	double t;
	int fd = -1, rc, ret = -1;

	if (!arr || !chunk) {
		fputs("umlmem-kvm: out of memory\n", stderr);
		goto out;
	}
	snprintf(path, sizeof(path), "%s/umlmem-kvm-image-XXXXXX", r->o.swap_dir);
	fd = mkstemp(path);
	if (fd < 0) {
		fprintf(stderr, "umlmem-kvm: cannot create an image file in %s: %s\n",
			r->o.swap_dir, strerror(errno));
		goto out;
	}
	unlink(path);
	t = now_s();
	if ((rc = umlmem_guest_save(r->vm[0].g, fd))) {
		lib_err(rc, "umlmem_guest_save (guest 0)");
		goto out;
	}
	r->save_s = now_s() - t;
	r->image_bytes = fstat(fd, &st) ? 0 : (uint64_t)st.st_blocks * 512;
	t = now_s();
	for (i = first; i < first + n; i++) {
		struct vm *v = &r->vm[i];

		*v = (struct vm){ .idx = i, .ram = r->o.ram, .image_len = r->image_len,
				  .npd = r->vm[0].npd, .ring0 = r->o.ring0, .seed = r->vm[0].seed,
				  .vm_fd = -1, .vcpu_fd = -1 };
		if ((rc = umlmem_guest_restore(r->host, fd, NULL, &v->g))) {
			lib_err(rc, "umlmem_guest_restore (guest %u)", i);
			goto out;
		}
		r->nvm = i + 1;
		if ((rc = umlmem_guest_map(v->g, (void **)&v->base))) {
			lib_err(rc, "umlmem_guest_map (restored guest %u)", i);
			goto out;
		}
	}
	r->restore_s = now_s() - t;

	/* the restored state: guest 0's as it was saved */
	expect_seed(r, r->vm[0].seed, &want, arr);
	for (i = first; i < r->nvm; i++) {
		r->vm[i].halted = true;
		check_guest(r, &r->vm[i], &want, arr, chunk);
		r->restored_right += r->vm[i].ok;
		if (!r->vm[i].ok)
			fprintf(stderr, "umlmem-kvm: restored guest %u: %s\n", i, r->vm[i].verdict);
	}

	/* each runs again from the image's code, with a seed of its own; the
	   setup writes the same bytes over the restored ones but for the
	   parameter block */
	for (i = first; i < r->nvm; i++) {
		struct vm *v = &r->vm[i];

		v->seed = (r->vm[0].seed + 1 + (i - first)) % r->o.distinct;
		v->halted = v->ok = false;
		v->verdict[0] = v->fail[0] = '\0';
		if (vm_create(r, v)) {
			fprintf(stderr, "umlmem-kvm: restored guest %u: %s\n", i, v->fail);
			goto out;
		}
	}
	t = r->run_s;
	if (run_guests(r, first))
		goto out;
	r->rerun_s = r->run_s;
	r->run_s = t;
	for (uint64_t s = 0; s < r->o.distinct; s++) {
		bool any = false;

		for (i = first; i < r->nvm; i++)
			any |= r->vm[i].seed == s;
		if (!any)
			continue;
		expect_seed(r, s, &want, arr);
		for (i = first; i < r->nvm; i++)
			if (r->vm[i].seed == s) {
				check_guest(r, &r->vm[i], &want, arr, chunk);
				r->rerun_right += r->vm[i].ok;
			}
	}
	ret = 0;
out:
	if (fd >= 0)
		close(fd);
	free(arr);
	free(chunk);
	return ret;
}

/* ------------------------------------------------------------------------ */
/* Merging after the run                                                    */
/* ------------------------------------------------------------------------ */

/* Scans until three passes have ended, so that what the guests left (equal
   arrays of equal seeds, equal page tables and images) is merged now,
   whatever the merge thread's timing: a page written during a pass is
   volatile for that pass and the next. */
static void merge_now(struct run *r)
{
	struct umlmem_host_info in;
	uint64_t start, m, guard = 0;
	double t0 = now_s();

	if (umlmem_host_info(r->host, &in, sizeof(in)))
		return;
	start = in.full_scans;
	while (in.full_scans < start + MERGE_PASSES && guard++ < 100000) {
		if (umlmem_dedup_scan(r->host, SCAN_BATCH, &m))
			break;
		r->merged_after += m;
		if (umlmem_host_info(r->host, &in, sizeof(in)))
			break;
	}
	r->merge_s = now_s() - t0;
}

/* ------------------------------------------------------------------------ */
/* Report                                                                   */
/* ------------------------------------------------------------------------ */

static void report(struct run *r)
{
	FILE *f = r->out;
	char b1[32], b2[32], b3[32], b4[32], b5[32];
	uint64_t total = r->o.ram * r->o.guests;
	uint64_t data_pages = r->st.resident_pages + r->st.swapped_pages;
	unsigned i;

	for (i = 0; i < r->nvm; i++) {
		struct vm *v = &r->vm[i];

		fprintf(f, "guest %2u  seed %-3" PRIu64 " %s RAM  %.2f s  hash %016" PRIx64
			"  faults %" PRIu64 " swap in %" PRIu64 " out %" PRIu64 "  %s\n",
			v->idx, v->seed, fmt_bytes(b1, sizeof(b1), r->o.ram),
			v->t1 > v->t0 ? v->t1 - v->t0 : 0.0, v->res.hash, v->st.faults,
			v->st.swap_ins, v->st.swap_outs, v->ok ? "right" : "WRONG");
		if (!v->ok)
			fprintf(f, "    %s\n", v->verdict);
	}
	fprintf(f, "\n%u KVM guests x %s RAM = %s of guest RAM on a budget of %s "
		"(%.1fx overcommitted)\n",
		r->o.guests, fmt_bytes(b1, sizeof(b1), r->o.ram), fmt_bytes(b2, sizeof(b2), total),
		fmt_bytes(b3, sizeof(b3), r->info.frames_total * PAGE),
		(double)total / (double)(r->info.frames_total * PAGE));
	fprintf(f, "  array %s each, %u distinct seeds, %" PRIu64 " round(s); %s written "
		"by the guests in all; %s of guest pages hold data now (resident or in swap)\n",
		fmt_bytes(b1, sizeof(b1), r->n * 8), r->o.distinct, r->o.rounds,
		fmt_bytes(b2, sizeof(b2), r->touched * r->o.guests),
		fmt_bytes(b3, sizeof(b3), data_pages * PAGE));
	fprintf(f, "  run %.2f s (all vCPUs at once), merge %.2f s, check %.2f s\n",
		r->run_s, r->merge_s, r->verify_s);
	fprintf(f, "  merged: %" PRIu64 " pages (%" PRIu64 " of zeros; %" PRIu64 " by the scans "
		"after the run); sharing now saves %" PRIu64 " pages = %s in %" PRIu64
		" shared frames%s\n",
		r->info.pages_merged, r->info.zero_merged, r->merged_after, r->st.sharing_pages,
		fmt_bytes(b1, sizeof(b1), r->st.sharing_pages * PAGE), r->st.shared_frames,
		r->o.dedup ? "" : " (--no-dedup)");
	fprintf(f, "  swap: %" PRIu64 " pages out, %" PRIu64 " in (%s on disk); %" PRIu64
		" faults needed a frame; the handlers served %" PRIu64 " userfaultfd faults\n",
		r->st.swap_outs, r->st.swap_ins, fmt_bytes(b1, sizeof(b1), r->st.swap_disk_bytes),
		r->st.faults, r->info.native_faults);
	fprintf(f, "  native mode: %" PRIu64 " frames mapped into views, %" PRIu64 " pages zapped, %"
		PRIu64 " whole-view flushes (vm.max_map_count)\n", r->info.native_maps,
		r->info.native_zaps, r->info.native_flushes);
	fprintf(f, "  peak frames used %" PRIu64 " of %" PRIu64 " (%s of %s)%s\n",
		(uint64_t)r->peak_frames, r->info.frames_total,
		fmt_bytes(b4, sizeof(b4), r->peak_frames * PAGE),
		fmt_bytes(b5, sizeof(b5), r->info.frames_total * PAGE),
		r->peak_frames <= r->info.frames_total ? ", the budget held" : ": OVER THE BUDGET");
	fprintf(f, "  results: %u of %u guests right\n", r->right, r->o.guests);
	if (r->o.restore)
		fprintf(f, "  restored: guest 0 saved in %.3f s (%s image), %u guests restored "
			"in %.3f s, %u of %u with guest 0's state; run again %.2f s, %u of %u "
			"right\n", r->save_s, fmt_bytes(b1, sizeof(b1), r->image_bytes),
			r->o.restore, r->restore_s, r->restored_right, r->o.restore, r->rerun_s,
			r->rerun_right, r->o.restore);
}

static void report_json(struct run *r, bool ok)
{
	FILE *f = stdout;
	unsigned i;

	fprintf(f, "{\"guests\":%u,\"ram_bytes\":%" PRIu64 ",\"budget_bytes\":%" PRIu64
		",\"guest_ram_total\":%" PRIu64 ",\"array_bytes\":%" PRIu64 ",\"distinct\":%u"
		",\"rounds\":%" PRIu64 ",\"dedup\":%s,\"time_s\":%.3f,\"merge_s\":%.3f"
		",\"check_s\":%.3f",
		r->o.guests, r->o.ram, r->info.frames_total * PAGE, r->o.ram * r->o.guests,
		r->n * 8, r->o.distinct, r->o.rounds, r->o.dedup ? "true" : "false",
		r->run_s, r->merge_s, r->verify_s);
	fprintf(f, ",\"merged_pages\":%" PRIu64 ",\"zero_merged\":%" PRIu64
		",\"sharing_pages\":%" PRIu64 ",\"saved_bytes\":%" PRIu64
		",\"shared_frames\":%" PRIu64 ",\"swap_outs\":%" PRIu64 ",\"swap_ins\":%" PRIu64
		",\"faults\":%" PRIu64 ",\"native_faults\":%" PRIu64 ",\"native_maps\":%" PRIu64
		",\"native_zaps\":%" PRIu64 ",\"native_flushes\":%" PRIu64
		",\"resident_pages\":%" PRIu64 ",\"swapped_pages\":%" PRIu64
		",\"peak_frames_used\":%" PRIu64 ",\"frames_total\":%" PRIu64
		",\"merged_after_run\":%" PRIu64,
		r->info.pages_merged, r->info.zero_merged, r->st.sharing_pages,
		r->st.sharing_pages * PAGE, r->st.shared_frames, r->st.swap_outs, r->st.swap_ins,
		r->st.faults, r->info.native_faults, r->info.native_maps, r->info.native_zaps,
		r->info.native_flushes, r->st.resident_pages, r->st.swapped_pages,
		(uint64_t)r->peak_frames, r->info.frames_total, r->merged_after);
	if (r->o.restore)
		fprintf(f, ",\"restore\":%u,\"image_bytes\":%" PRIu64 ",\"save_s\":%.3f"
			",\"restore_s\":%.3f,\"rerun_s\":%.3f,\"restored_right\":%u"
			",\"rerun_right\":%u", r->o.restore, r->image_bytes, r->save_s,
			r->restore_s, r->rerun_s, r->restored_right, r->rerun_right);
	fprintf(f, ",\"results_right\":%u,\"results_ok\":%s,\"guest_results\":[",
		r->right, ok ? "true" : "false");
	for (i = 0; i < r->nvm; i++) {
		struct vm *v = &r->vm[i];

		fprintf(f, "%s{\"guest\":%u,\"seed\":%" PRIu64 ",\"time_s\":%.3f,\"hash\":\"%016"
			PRIx64 "\",\"faults\":%" PRIu64 ",\"swap_ins\":%" PRIu64 ",\"swap_outs\":%"
			PRIu64 ",\"ok\":%s", i ? "," : "", v->idx, v->seed,
			v->t1 > v->t0 ? v->t1 - v->t0 : 0.0, v->res.hash, v->st.faults,
			v->st.swap_ins, v->st.swap_outs, v->ok ? "true" : "false");
		if (!v->ok) {
			fputs(",\"error\":", f);
			json_string(f, v->verdict);
		}
		fputc('}', f);
	}
	fputs("]}\n", f);
	fflush(f);
}

/* ------------------------------------------------------------------------ */
/* main                                                                     */
/* ------------------------------------------------------------------------ */

int main(int argc, char **argv)
{
	struct run r = { .kvm_fd = -1 };
	struct umlmem_host_config hc;
	struct umlmem_guest_config gc;
	char name[32], b1[32], b2[32];
	uint64_t cover;
	unsigned i;
	int rc, status = EXIT_FAIL;
	bool ok;

	if (parse_opts(argc, argv, &r.o))
		return EXIT_USAGE;
	r.out = r.o.json ? stderr : stdout;

	if ((rc = kvm_open(&r)) != 0)
		return rc;
	if (load_image(&r))
		return EXIT_FAIL;
	/* the layout: image at 1 MiB, the array on the next 2 MiB boundary at
	   least 1 MiB past the image */
	r.array_gpa = round_up(GUEST_LOAD_GPA + r.image_len + MIB, 2 * MIB);
	r.n = r.o.array / 8;
	r.touched = round_up(r.array_gpa + r.o.array, PAGE) - r.array_gpa	/* array */
		+ round_up(r.image_len, PAGE) + 4 * PAGE	/* image, GDT, params, PML4, PDPT */
		+ (r.gb_pages ? 0 : round_up(r.o.ram, GIB) / GIB * PAGE) + 16 * PAGE; /* PDs, stack */
	cover = r.gb_pages ? 512 * GIB : PD_MAX * GIB;
	if (r.o.ram > cover || (r.phys_bits < 64 && r.o.ram > (1ull << r.phys_bits))) {
		fprintf(stderr, "umlmem-kvm: --ram %s is more than this demo maps: at most %s "
			"(%s pages%s, %u physical address bits)\n",
			fmt_bytes(b1, sizeof(b1), r.o.ram), fmt_bytes(b2, sizeof(b2), cover),
			r.gb_pages ? "1 GiB" : "2 MiB", r.gb_pages ? "" : ": pdpe1gb not in KVM's CPUID",
			r.phys_bits);
		return EXIT_USAGE;
	}
	if (r.array_gpa + r.o.array > r.o.ram) {
		fprintf(stderr, "umlmem-kvm: the array (%s at guest physical 0x%" PRIx64
			") does not fit in --ram %s\n", fmt_bytes(b1, sizeof(b1), r.o.array),
			r.array_gpa, fmt_bytes(b2, sizeof(b2), r.o.ram));
		return EXIT_USAGE;
	}
	if (!r.o.budget)
		r.o.budget = round_up(r.touched * r.o.guests / 8 * 7, PAGE);

	umlmem_host_config_init(&hc);
	hc.resident_bytes = r.o.budget;
	hc.swap_dir = r.o.swap_dir;
	hc.flags = r.o.dedup ? UMLMEM_BACKGROUND : 0;
	rc = umlmem_host_create(&hc, &r.host);
	if (rc) {
		lib_err(rc, "umlmem_host_create (budget %s, swap in %s)",
			fmt_bytes(b1, sizeof(b1), r.o.budget), r.o.swap_dir);
		return EXIT_FAIL;
	}
	r.vm = calloc(r.o.guests + r.o.restore, sizeof(*r.vm));
	if (!r.vm) {
		fputs("umlmem-kvm: out of memory\n", stderr);
		goto out;
	}

	for (i = 0; i < r.o.guests; i++) {
		struct vm *v = &r.vm[i];

		v->idx = i;
		v->ram = r.o.ram;
		v->image_len = r.image_len;
		v->npd = r.gb_pages ? 0 : round_up(r.o.ram, GIB) / GIB;
		v->ring0 = r.o.ring0;
		v->seed = i % r.o.distinct;
		v->vm_fd = v->vcpu_fd = -1;
		umlmem_guest_config_init(&gc);
		gc.ram_bytes = r.o.ram;
		snprintf(name, sizeof(name), "kvm%u", i);
		gc.name = name;
		rc = umlmem_guest_create(r.host, &gc, &v->g);
		if (rc) {
			lib_err(rc, "umlmem_guest_create (guest %u, %s)", i,
				fmt_bytes(b1, sizeof(b1), r.o.ram));
			goto out;
		}
		r.nvm = i + 1;
		rc = umlmem_guest_map(v->g, (void **)&v->base);
		if (rc == -ENOSYS || rc == -EPERM || rc == -EOPNOTSUPP) {
			char msg[512];

			snprintf(msg, sizeof(msg), "%s", umlmem_errmsg());
			fprintf(stderr, "umlmem-kvm: skipped: native mode is not available here: "
				"umlmem_guest_map: %s%s%s\n", umlmem_strerror(rc),
				msg[0] ? ": " : "", msg);
			status = EXIT_SKIP;
			goto out;
		}
		if (rc) {
			lib_err(rc, "umlmem_guest_map (guest %u)", i);
			goto out;
		}
		if (vm_create(&r, v)) {
			fprintf(stderr, "umlmem-kvm: guest %u: %s\n", i, v->fail);
			/* the first VM stands for KVM as a whole: if it cannot even be
			   made, KVM is not usable here */
			if (i == 0 && v->vm_fd < 0)
				status = EXIT_SKIP;
			goto out;
		}
	}

	if (pthread_create(&r.sampler, NULL, sampler_thread, &r) == 0)
		r.sampler_on = true;
	if (run_guests(&r, 0))
		goto out;
	if (r.o.dedup)
		merge_now(&r);
	if (check_all(&r))
		goto out;
	if (r.o.restore && restore_phase(&r))
		goto out;
	atomic_store(&r.sampler_stop, true);
	if (r.sampler_on)
		pthread_join(r.sampler, NULL);
	r.sampler_on = false;
	for (i = 0; i < r.nvm; i++)
		umlmem_guest_stats(r.vm[i].g, &r.vm[i].st);
	umlmem_host_stats(r.host, &r.st);
	umlmem_host_info(r.host, &r.info, sizeof(r.info));
	if (r.st.frames_used > r.peak_frames)
		r.peak_frames = r.st.frames_used;
	ok = r.right == r.o.guests && r.peak_frames <= r.info.frames_total &&
	     r.restored_right == r.o.restore && r.rerun_right == r.o.restore;
	report(&r);
	if (r.o.json)
		report_json(&r, ok);
	status = ok ? 0 : EXIT_FAIL;
out:
	if (r.sampler_on) {
		atomic_store(&r.sampler_stop, true);
		pthread_join(r.sampler, NULL);
	}
	/* the VMs first: no memory slot may outlive the mapping it points at */
	for (i = 0; i < r.nvm; i++)
		vm_close(&r, &r.vm[i]);
	umlmem_host_destroy(r.host);
	free(r.vm);
	free(r.cpuid);
	free(r.image);
	if (r.kvm_fd >= 0)
		close(r.kvm_fd);
	return status;
}
