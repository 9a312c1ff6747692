/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * kernel.c: the kernel's own swap on umlmem's workload, and the helpers
 * that set up a swap file and a memory cgroup for such comparisons.
 *
 * kernel_swap_random -- the kernel's own swap on the pagein_random_t1
 *   workload: a child process in a memory cgroup limited to B maps 4B of
 *   anonymous memory (MADV_NOHUGEPAGE: 4 KiB pages like umlmem's), writes
 *   every page with the same content rule, then for the same warm-up and
 *   timed phase reads 8 bytes at uniformly random pages; the value is its
 *   major faults (getrusage ru_majflt) per second, the baseline is umlmem's
 *   pagein_random_t1 value from this run, and the ratio umlmem / kernel.
 *   The swap is a file in the same swap directory (so the same disk), at
 *   least 1.25 times the working set, with the highest priority should
 *   other swap be active. A major fault may read more than one page
 *   (vm.page-cluster readahead), so the pages the kernel read per second
 *   (/proc/vmstat pswpin) are reported too. Needs root, mkswap, swapon and
 *   a memory controller; otherwise the figure is skipped with the reason.
 *   The cgroup is made below the bench's own memory cgroup (v1), so that
 *   the child stays inside whatever limits the bench itself runs under, or
 *   at the root of the v2 hierarchy; the bench process never joins it.
 *   Everything is undone at the end, on error, at exit and on SIGINT,
 *   SIGTERM and SIGHUP: the child is killed, the swap turned off and its
 *   file removed, the cgroup removed.
 *
 * The pieces are kernel.h's, for any figure that compares with the
 * kernel's own memory management (another swap backend, zswap, ...):
 * kernel_begin() .. kernel_end() around a swap file of our own at the
 * highest priority, a memory cgroup with a limit, and a child that runs
 * the random-read workload inside it and reports what it saw. One such
 * figure at a time: the state below is the process's one copy.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/swap.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "kernel.h"

enum { KERNEL };

/*
 * What the kernel figure set up, for the cleanup that must run whatever
 * happens. Only the process that set it up (owner) undoes it: a forked
 * child inherits this and the handlers, and must not turn the swap off
 * under its parent.
 */
static struct {
	pid_t owner;
	pid_t child;
	bool swap_file;		/* created */
	bool swap_on;
	bool cgroup;		/* created */
	char swap_path[PATH_MAX];
	char cg_path[PATH_MAX];
	int swapoff_err, rmdir_err;	/* errno of the last failed attempt */
	bool zswap_set;			/* zswap's enabled switch changed */
	char zswap_old;			/* its value before, 'Y' or 'N' */
} kst;

#define ZSWAP_ENABLED "/sys/module/zswap/parameters/enabled"

/* Only system calls: it also runs from a signal handler. */
static void kernel_cleanup(void)
{
	sigset_t all, old;
	struct timespec ms = { 0, 10 * 1000 * 1000 };
	int i;

	if (kst.owner != getpid())
		return;
	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, &old);
	if (kst.child > 0) {
		kill(kst.child, SIGKILL);
		while (waitpid(kst.child, NULL, 0) < 0 && errno == EINTR)
			;
		kst.child = 0;
	}
	if (kst.swap_on) {
		if (swapoff(kst.swap_path) == 0 || errno == EINVAL)
			kst.swap_on = false;
		else
			kst.swapoff_err = errno;
	}
	if (kst.swap_file && !kst.swap_on) {
		unlink(kst.swap_path);
		kst.swap_file = false;
	}
	if (kst.zswap_set) {
		int fd = open(ZSWAP_ENABLED, O_WRONLY | O_CLOEXEC);

		if (fd >= 0) {
			if (write(fd, &kst.zswap_old, 1) == 1)
				kst.zswap_set = false;
			close(fd);
		}
	}
	if (kst.cgroup) {
		/* the memory controller may still be releasing the child's
		   charges for a moment after it was reaped */
		for (i = 0; i < 200; i++) {
			if (rmdir(kst.cg_path) == 0 || errno == ENOENT) {
				kst.cgroup = false;
				break;
			}
			kst.rmdir_err = errno;
			if (errno != EBUSY)
				break;
			nanosleep(&ms, NULL);
		}
	}
	sigprocmask(SIG_SETMASK, &old, NULL);
}

/* Runs a program with its output discarded; returns its exit status, or
   -errno when it could not be started. */
static int run_quiet(char *const argv[])
{
	posix_spawn_file_actions_t fa;
	int st, rc;
	pid_t pid;

	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
	rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (rc)
		return -rc;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -errno;
	if (WIFEXITED(st))
		return WEXITSTATUS(st);
	return 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

/* Writes zeros over the whole file: some filesystems refuse to swap on
   fallocated (unwritten) extents. */
static int zero_file(int fd, uint64_t bytes)
{
	static const char zeros[1 << 16];
	uint64_t done = 0;
	ssize_t n;

	while (done < bytes) {
		size_t len = bytes - done < sizeof(zeros) ? (size_t)(bytes - done) : sizeof(zeros);

		n = pwrite(fd, zeros, len, (off_t)done);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		done += (uint64_t)n;
	}
	return fsync(fd) ? -errno : 0;
}

static int swap_prepare(struct result *r, const char *dir, uint64_t bytes, bool zero,
			bool *others)
{
	char *mk[] = { "mkswap", kst.swap_path, NULL };
	char line[512];
	FILE *f;
	int fd, rc, lines = 0;

	*others = false;
	f = fopen("/proc/swaps", "re");
	if (f) {
		while (fgets(line, sizeof(line), f))
			lines++;
		fclose(f);
		*others = lines > 1;
	}
	snprintf(kst.swap_path, sizeof(kst.swap_path), "%s/umlmem-bench-%d.swap", dir,
		 (int)getpid());
	fd = open(kst.swap_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		res_fail(r, RS_SKIP, "cannot create the swap file %s: %s", kst.swap_path,
			 strerror(errno));
		return -1;
	}
	kst.swap_file = true;
	fchmod(fd, 0600);
	rc = zero ? -EOPNOTSUPP : (fallocate(fd, 0, 0, (off_t)bytes) ? -errno : 0);
	if (rc == -EOPNOTSUPP)
		rc = zero_file(fd, bytes);
	close(fd);
	if (rc) {
		res_fail(r, RS_SKIP, "cannot size the swap file %s: %s", kst.swap_path,
			 strerror(-rc));
		return -1;
	}
	rc = run_quiet(mk);
	if (rc) {
		res_fail(r, RS_SKIP, "mkswap %s: %s", kst.swap_path,
			 rc < 0 ? strerror(-rc) : "failed");
		return -1;
	}
	/* the highest priority, so our pages go here even with other swap on */
	if (swapon(kst.swap_path, SWAP_FLAG_PREFER | (SWAP_FLAG_PRIO_MASK & 32767))) {
		rc = -errno;
		if (!zero && rc == -EINVAL)
			return 1;	/* try again with a written file */
		res_fail(r, RS_SKIP, "swapon %s: %s", kst.swap_path, strerror(-rc));
		return -1;
	}
	kst.swap_on = true;
	return 0;
}

/* The caller's own v1 memory cgroup, relative to the hierarchy root. */
static bool own_v1_memcg(char *out, size_t len)
{
	char line[PATH_MAX + 64], *c1, *c2, *ctl;
	FILE *f = fopen("/proc/self/cgroup", "re");
	bool found = false;

	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = '\0';
		c1 = strchr(line, ':');
		c2 = c1 ? strchr(c1 + 1, ':') : NULL;
		if (!c2)
			continue;
		*c2 = '\0';
		for (ctl = strtok(c1 + 1, ","); ctl; ctl = strtok(NULL, ","))
			if (!strcmp(ctl, "memory")) {
				snprintf(out, len, "%s", strcmp(c2 + 1, "/") ? c2 + 1 : "");
				found = true;
				break;
			}
	}
	fclose(f);
	return found;
}

/*
 * Makes the memory cgroup with the limit. Returns 0, or -1 after recording
 * why it cannot be done here. @desc gets a description for the output.
 */
static int cgroup_prepare(struct result *r, uint64_t limit, char *desc, size_t desclen)
{
	char val[64], path[PATH_MAX + 64], own[PATH_MAX - 64], line[256];
	bool v2 = false;
	int rc;

	if (bench_read_line("/sys/fs/cgroup/cgroup.controllers", line, sizeof(line))) {
		for (char *t = strtok(line, " "); t; t = strtok(NULL, " "))
			if (!strcmp(t, "memory"))
				v2 = true;
	}
	snprintf(val, sizeof(val), "%" PRIu64, limit);
	if (v2) {
		/* the root's children may only use what the root delegates */
		if (bench_read_line("/sys/fs/cgroup/cgroup.subtree_control", line, sizeof(line)) &&
		    !strstr(line, "memory"))
			bench_write_file("/sys/fs/cgroup/cgroup.subtree_control", "+memory");
		snprintf(kst.cg_path, sizeof(kst.cg_path), "/sys/fs/cgroup/umlmem-bench-%d",
			 (int)getpid());
		if (mkdir(kst.cg_path, 0755)) {
			res_fail(r, RS_SKIP, "cannot create cgroup %s: %s", kst.cg_path,
				 strerror(errno));
			return -1;
		}
		kst.cgroup = true;
		snprintf(path, sizeof(path), "%s/memory.max", kst.cg_path);
		rc = bench_write_file(path, val);
		if (rc) {
			res_fail(r, RS_SKIP, "cannot write %s: %s", path, strerror(-rc));
			return -1;
		}
		snprintf(path, sizeof(path), "%s/memory.swap.max", kst.cg_path);
		if (access(path, F_OK) == 0)
			bench_write_file(path, "max");
		snprintf(desc, desclen, "v2 %s memory.max=%s", kst.cg_path, val);
		return 0;
	}

	if (access("/sys/fs/cgroup/memory/memory.limit_in_bytes", F_OK)) {
		res_fail(r, RS_SKIP, "no memory cgroup controller (neither v2 with memory in "
			 "/sys/fs/cgroup/cgroup.controllers nor v1 /sys/fs/cgroup/memory)");
		return -1;
	}
	/* below our own cgroup first, so the child stays within our limits */
	if (!own_v1_memcg(own, sizeof(own)))
		own[0] = '\0';
	snprintf(kst.cg_path, sizeof(kst.cg_path), "/sys/fs/cgroup/memory%s/umlmem-bench-%d",
		 own, (int)getpid());
	if (mkdir(kst.cg_path, 0755) && own[0]) {
		snprintf(kst.cg_path, sizeof(kst.cg_path), "/sys/fs/cgroup/memory/umlmem-bench-%d",
			 (int)getpid());
		if (mkdir(kst.cg_path, 0755)) {
			res_fail(r, RS_SKIP, "cannot create a v1 memory cgroup: %s", strerror(errno));
			return -1;
		}
	} else if (access(kst.cg_path, F_OK)) {
		res_fail(r, RS_SKIP, "cannot create cgroup %s: %s", kst.cg_path, strerror(errno));
		return -1;
	}
	kst.cgroup = true;
	snprintf(path, sizeof(path), "%s/memory.limit_in_bytes", kst.cg_path);
	rc = bench_write_file(path, val);
	if (rc) {
		res_fail(r, RS_SKIP, "cannot write %s: %s", path, strerror(-rc));
		return -1;
	}
	snprintf(path, sizeof(path), "%s/memory.swappiness", kst.cg_path);
	bench_write_file(path, "60");
	snprintf(path, sizeof(path), "%s/memory.memsw.limit_in_bytes", kst.cg_path);
	if (access(path, F_OK) == 0)
		bench_write_file(path, "-1");
	snprintf(desc, desclen, "v1 %s memory.limit_in_bytes=%s swappiness=60", kst.cg_path, val);
	return 0;
}

static uint64_t vmstat_pswpin(void)
{
	return proc_value("/proc/vmstat", "pswpin %" SCNu64);
}

static void vmstat_zswap(uint64_t *in, uint64_t *out)
{
	*in = proc_value("/proc/vmstat", "zswpin %" SCNu64);
	*out = proc_value("/proc/vmstat", "zswpout %" SCNu64);
}

static volatile uint64_t kernel_sink;

/* The child: waits until it is in the cgroup, then does the workload. */
static void __attribute__((noreturn))
kernel_child(int go_fd, int out_fd, uint64_t ws, const uint8_t *src, double warm, double secs)
{
	struct kernel_report rep;
	struct rusage ru0, ru1;
	uint64_t npages = ws / PAGE, *mem, rng = 0xabcdefu, page, word, v, want, acc = 0;
	const uint64_t *srcw = (const uint64_t *)src;
	double t0, t_end;
	char c;

	bench_cleanup_child();
	/* a parent killed outright cannot clean up; at least do not outlive it */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	memset(&rep, 0, sizeof(rep));
	if (read(go_fd, &c, 1) != 1)
		_exit(1);
	close(go_fd);

	mem = mmap(NULL, ws, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED) {
		rep.err = errno;
		snprintf(rep.msg, sizeof(rep.msg), "mmap of %" PRIu64 " bytes", ws);
		goto report;
	}
	madvise(mem, ws, MADV_NOHUGEPAGE);
	if (src) {
		/* the parent's pages, shared copy on write: charged to the
		   parent, not to this cgroup; only mem is the child's */
		for (uint64_t p = 0; p < npages; p += 256)
			memcpy(mem + p * WORDS, src + p * PAGE,
			       (npages - p < 256 ? npages - p : 256) * PAGE);
	} else {
		bench_fill_pages(mem, 0, npages, 0);
	}

	t_end = now_s() + warm;
	while (now_s() < t_end) {
		page = rng_below(&rng, npages);
		acc += mem[page * WORDS + rng_below(&rng, WORDS)];
	}
	rep.pswpin = vmstat_pswpin();
	vmstat_zswap(&rep.zswpin, &rep.zswpout);
	getrusage(RUSAGE_SELF, &ru0);
	t0 = now_s();
	t_end = t0 + secs;
	for (;;) {
		page = rng_below(&rng, npages);
		word = rng_below(&rng, WORDS);
		v = ((volatile uint64_t *)mem)[page * WORDS + word];
		want = srcw ? srcw[page * WORDS + word] : word_of(page, word);
		if (v != want)
			rep.mismatches++;
		acc += v;
		rep.reads++;
		if (now_s() >= t_end)
			break;
	}
	rep.secs = now_s() - t0;
	getrusage(RUSAGE_SELF, &ru1);
	rep.pswpin = vmstat_pswpin() - rep.pswpin;
	{
		uint64_t zi, zo;

		vmstat_zswap(&zi, &zo);
		rep.zswpin = zi - rep.zswpin;
		rep.zswpout = zo - rep.zswpout;
	}
	rep.majflt = (uint64_t)(ru1.ru_majflt - ru0.ru_majflt);
	rep.minflt = (uint64_t)(ru1.ru_minflt - ru0.ru_minflt);
	kernel_sink = acc;
report:
	if (write(out_fd, &rep, sizeof(rep)) != (ssize_t)sizeof(rep))
		_exit(1);
	_exit(0);
}

int kernel_begin(struct result *r)
{
	if (geteuid() != 0) {
		res_fail(r, RS_SKIP, "needs root (swapon and a memory cgroup)");
		return -1;
	}
	memset(&kst, 0, sizeof(kst));
	kst.owner = getpid();
	bench_cleanup_on(kernel_cleanup);
	return 0;
}

int kernel_swap_on(struct result *r, const char *dir, uint64_t bytes, bool *others)
{
	int rc = swap_prepare(r, dir, bytes, false, others);

	if (rc > 0) {
		unlink(kst.swap_path);
		kst.swap_file = false;
		rc = swap_prepare(r, dir, bytes, true, others);
	}
	return rc ? -1 : 0;
}

int kernel_cgroup(struct result *r, uint64_t limit, char *desc, size_t desclen)
{
	return cgroup_prepare(r, limit, desc, desclen);
}

int kernel_zswap(struct result *r, bool on, char *compressor, size_t len)
{
	char line[16];
	int rc;

	compressor[0] = '\0';
	if (!bench_read_line(ZSWAP_ENABLED, line, sizeof(line)) || (line[0] != 'Y' && line[0] != 'N')) {
		res_fail(r, RS_SKIP, "no zswap in this kernel (%s)", ZSWAP_ENABLED);
		return -1;
	}
	bench_read_line("/sys/module/zswap/parameters/compressor", compressor, len);
	if ((line[0] == 'Y') == on)
		return 0;
	if (!kst.zswap_set) {
		kst.zswap_old = line[0];
		kst.zswap_set = true;
	}
	rc = bench_write_file(ZSWAP_ENABLED, on ? "Y" : "N");
	if (rc) {
		res_fail(r, RS_SKIP, "cannot write %s: %s", ZSWAP_ENABLED, strerror(-rc));
		return -1;
	}
	return 0;
}

int kernel_random_reads(struct bench *b, struct result *r, uint64_t ws, const uint8_t *src,
			struct kernel_report *rep)
{
	char path[PATH_MAX + 64], line[64], b1[32];
	int go[2] = { -1, -1 }, res[2] = { -1, -1 }, st, rc = -1;
	struct pollfd pfd;
	ssize_t n;
	pid_t pid;

	if (pipe2(go, O_CLOEXEC) || pipe2(res, O_CLOEXEC)) {
		res_fail(r, RS_ERROR, "pipe: %s", strerror(errno));
		goto out;
	}
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		res_fail(r, RS_ERROR, "fork: %s", strerror(errno));
		goto out;
	}
	if (pid == 0) {
		close(go[1]);
		close(res[0]);
		kernel_child(go[0], res[1], ws, src, b->warm, b->seconds);
	}
	kst.child = pid;
	close(go[0]);
	close(res[1]);
	go[0] = res[1] = -1;

	/* into the cgroup before it allocates anything */
	snprintf(path, sizeof(path), "%s/cgroup.procs", kst.cg_path);
	snprintf(line, sizeof(line), "%d", (int)pid);
	rc = bench_write_file(path, line);
	if (rc) {
		res_fail(r, RS_SKIP, "cannot move the child into %s: %s", kst.cg_path,
			 strerror(-rc));
		goto out;
	}
	rc = -1;
	if (write(go[1], "g", 1) != 1) {
		res_fail(r, RS_ERROR, "cannot start the child: %s", strerror(errno));
		goto out;
	}
	bench_progress("%s: child filling %s under the cgroup limit, then %.1f s + %.1f s warm-up of "
		       "random reads", r->key, fmt_bytes(b1, sizeof(b1), ws), b->seconds, b->warm);

	pfd.fd = res[0];
	pfd.events = POLLIN;
	if (poll(&pfd, 1, (int)((b->warm + b->seconds) * 1000) + 600 * 1000) <= 0) {
		res_fail(r, RS_ERROR, "the child did not report within %.0f s",
			 b->warm + b->seconds + 600);
		goto out;
	}
	n = read(res[0], rep, sizeof(*rep));
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	kst.child = 0;
	if (n != (ssize_t)sizeof(*rep)) {
		if (WIFSIGNALED(st))
			res_fail(r, RS_ERROR, "the child was killed by signal %d%s", WTERMSIG(st),
				 WTERMSIG(st) == SIGKILL ? " (out of memory in the cgroup?)" : "");
		else
			res_fail(r, RS_ERROR, "the child exited with status %d without a report",
				 WIFEXITED(st) ? WEXITSTATUS(st) : -1);
		goto out;
	}
	if (rep->err) {
		res_fail(r, RS_ERROR, "child: %s: %s", rep->msg, strerror(rep->err));
		goto out;
	}
	if (rep->mismatches) {
		res_fail(r, RS_ERROR, "child read %" PRIu64 " wrong values from its own memory",
			 rep->mismatches);
		goto out;
	}
	rc = 0;
out:
	if (go[0] >= 0)
		close(go[0]);
	if (go[1] >= 0)
		close(go[1]);
	if (res[0] >= 0)
		close(res[0]);
	if (res[1] >= 0)
		close(res[1]);
	return rc;
}

void kernel_end(void)
{
	kernel_cleanup();
	if (kst.swap_on)
		fprintf(stderr, "%s: WARNING: could not swapoff %s: %s; run `swapoff %s` "
			"and remove it\n", BENCH_PROG, kst.swap_path, strerror(kst.swapoff_err),
			kst.swap_path);
	if (kst.zswap_set)
		fprintf(stderr, "%s: WARNING: could not restore %s to %c; write it by hand\n",
			BENCH_PROG, ZSWAP_ENABLED, kst.zswap_old);
	if (kst.cgroup)
		fprintf(stderr, "%s: warning: could not remove cgroup %s: %s\n", BENCH_PROG,
			kst.cg_path, strerror(kst.rmdir_err));
	bench_cleanup_off();
}

static void kernel_run(struct bench *b, struct result **res)
{
	struct result *r = res[KERNEL];
	uint64_t ws = 4 * b->budget, swap_bytes;
	struct kernel_report rep;
	char cgdesc[PATH_MAX + 128] = "", line[64], b1[32], b2[32];
	const char *dir = bench_swap_dir(b);
	bool others = false;

	if (!r->want)
		return;
	if (kernel_begin(r))
		return;
	/* at least the working set and a quarter, in whole MiB */
	swap_bytes = ((ws + ws / 4) + (1u << 20) - 1) / (1u << 20) * (1u << 20);
	bench_progress("kernel_swap_random: swap file of %s in %s, memory cgroup of %s",
		       fmt_bytes(b1, sizeof(b1), swap_bytes), dir, fmt_bytes(b2, sizeof(b2), b->budget));
	if (kernel_swap_on(r, dir, swap_bytes, &others) ||
	    kernel_cgroup(r, b->budget, cgdesc, sizeof(cgdesc)) ||
	    kernel_random_reads(b, r, ws, NULL, &rep))
		goto out;
	{
		double kval = rep.secs > 0 ? (double)rep.majflt / rep.secs : 0;
		struct result *t1 = bench_result(b, "pagein_random_t1");
		double uval = t1->state == RS_OK ? t1->value : NAN;

		r->state = RS_OK;
		r->value = kval;
		r->baseline = uval;
		r->unit = "faults/s";
		r->ratio = kval > 0 ? uval / kval : NAN;
		res_int(r, "threads", 1);
		res_int(r, "pages", (int64_t)(ws / PAGE));
		res_int(r, "budget_pages", (int64_t)(b->budget / PAGE));
		res_num(r, "seconds", rep.secs);
		res_int(r, "reads", (int64_t)rep.reads);
		res_int(r, "major_faults", (int64_t)rep.majflt);
		res_int(r, "minor_faults", (int64_t)rep.minflt);
		res_num(r, "hit_fraction", rep.reads ? 1.0 - (double)rep.majflt / (double)rep.reads
						     : NAN);
		res_num(r, "pages_read_per_s", rep.secs > 0 ? (double)rep.pswpin / rep.secs : 0);
		res_int(r, "swap_file_bytes", (int64_t)swap_bytes);
		res_str(r, "cgroup", "%s", cgdesc);
		if (bench_read_line("/proc/sys/vm/page-cluster", line, sizeof(line)))
			res_str(r, "page_cluster", "%s", line);
		res_note(r, "value: kernel major faults/s; baseline: umlmem pagein_random_t1 of this "
			 "run; ratio umlmem/kernel");
		if (t1->state != RS_OK)
			res_note(r, "no umlmem figure to compare: pagein_random_t1 did not run");
		if (others)
			res_note(r, "other swap devices are active; ours had the highest priority");
		if (rep.pswpin > rep.majflt + rep.majflt / 10)
			res_note(r, "the kernel read %.2f pages per major fault (swap readahead)",
				 rep.majflt ? (double)rep.pswpin / (double)rep.majflt : 0.0);
		if (!rep.majflt)
			res_note(r, "no major faults: the working set did not leave memory");
	}
out:
	kernel_end();
}

static const struct bench_key keys[] = {
	[KERNEL] = { "kernel_swap_random",
		"the kernel's swap (root: swap file + memory cgroup) on the\n"
		"pagein_random_t1 workload; baseline: umlmem's figure\n", .needs = "pagein_random_t1" },
	{ NULL },
};

const struct bench_family bench_kernel = { "kernel", keys, kernel_run };
