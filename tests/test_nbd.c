/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Swap on an NBD export (swap_uri): every test starts its own nbdkit on a
 * Unix socket in a temporary directory (memory plugin, or file plugin on a
 * file the test can read and edit) and checks the guests' bytes against a
 * plain copy of them: random use with evictions and trims; the server
 * killed and restarted mid-run; a stalled server (SIGSTOP) that costs one
 * bounded wait; a server that flips bits, swaps two blocks or serves old
 * blocks, which is -EIO and never wrong bytes; a capacity bounded by the
 * export; concurrent faults over several connections. Skipped, with the
 * reason, where nbdkit is not installed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>

#include "testutil.h"

#define PG UMLMEM_PAGE_SIZE
#define NP_MAX 256u          /* guest pages */
#define NP T.np              /* ... in this run: fewer under valgrind */
#define BUDGET (32 * PG)
#define EXPORT_BYTES (4 * TU_MiB)
#define IN_MEM 8u            /* pages kept resident across a server's death */

static struct {
	char dir[64];
	char sock[100];
	char file[128];      /* the file plugin's backing file, or "" */
	char reqlog[128];    /* nbdkit's log filter writes every request here, or "" */
	unsigned trim_ms;    /* with reqlog: the delay filter holds each trim this long */
	char uri[256];
	pid_t pid;           /* the server, or 0 */
	uint64_t np;
	umlmem_host *h;
	umlmem_guest *g;
	uint8_t *mem;        /* the oracle: every byte of the guest */
} T;

static void setup(void)
{
	memset(&T, 0, sizeof(T));
	tu_mkswapdir(T.dir);
	snprintf(T.sock, sizeof(T.sock), "%s/nbd.sock", T.dir);
	snprintf(T.uri, sizeof(T.uri), "nbd+unix:///?socket=%s", T.sock);
	T.np = tu_valgrind() ? 96 : NP_MAX;
	T.mem = calloc(NP_MAX, PG);
	cr_assert_not_null(T.mem);
}

static void server_stop(void)
{
	if (!T.pid)
		return;
	kill(T.pid, SIGCONT);
	kill(T.pid, SIGKILL);
	waitpid(T.pid, NULL, 0);
	T.pid = 0;
}

static void teardown(void)
{
	umlmem_host_destroy(T.h);
	server_stop();
	free(T.mem);
	tu_rmswapdir(T.dir);
}

TestSuite(nbd, .init = setup, .fini = teardown);

static bool have_nbdkit(void)
{
	return system("nbdkit --version >/dev/null 2>&1") == 0;
}

#define NEED_NBDKIT()                                                                      \
	do {                                                                               \
		if (!have_nbdkit())                                                        \
			cr_skip_test("nbdkit is not installed (Debian: nbdkit; make deps)"); \
	} while (0)

static bool sock_answers(void)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool ok;

	snprintf(a.sun_path, sizeof(a.sun_path), "%s", T.sock);
	ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
	if (fd >= 0)
		close(fd);
	return ok;
}

/* Starts nbdkit in the foreground on T.sock: the file plugin on T.file
   when it is set, else the memory plugin; with T.reqlog set, behind the
   log filter (memory plugin only), and with T.trim_ms too, the delay
   filter under it, so that the log sees a trim start and end around the
   delay. */
static void server_start(void)
{
	char size[32], filearg[160], log[128], logarg[160], delayarg[64];
	pid_t pid;

	unlink(T.sock);
	snprintf(size, sizeof(size), "%llu", (unsigned long long)EXPORT_BYTES);
	snprintf(filearg, sizeof(filearg), "file=%s", T.file);
	snprintf(log, sizeof(log), "%s/nbdkit.log", T.dir);
	pid = fork();
	cr_assert_neq(pid, -1);
	if (!pid) {
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);

		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		snprintf(logarg, sizeof(logarg), "logfile=%s", T.reqlog);
		snprintf(delayarg, sizeof(delayarg), "delay-trim=%ums", T.trim_ms);
		if (T.file[0])
			execlp("nbdkit", "nbdkit", "-f", "--exit-with-parent", "-U", T.sock,
			       "file", filearg, (char *)NULL);
		else if (T.reqlog[0] && T.trim_ms)
			execlp("nbdkit", "nbdkit", "-f", "--exit-with-parent", "-U", T.sock,
			       "--filter=log", "--filter=delay", "memory", size, logarg, delayarg,
			       (char *)NULL);
		else if (T.reqlog[0])
			execlp("nbdkit", "nbdkit", "-f", "--exit-with-parent", "-U", T.sock,
			       "--filter=log", "memory", size, logarg, (char *)NULL);
		else
			execlp("nbdkit", "nbdkit", "-f", "--exit-with-parent", "-U", T.sock,
			       "memory", size, (char *)NULL);
		_exit(127);
	}
	T.pid = pid;
	for (int i = 0; i < 1000 && !sock_answers(); i++) {
		int st;

		cr_assert_eq(waitpid(pid, &st, WNOHANG), 0, "nbdkit exited at start (see %s)", log);
		usleep(5000);
	}
	cr_assert(sock_answers(), "nbdkit did not listen on %s within 5 s", T.sock);
}

static void file_server_start(void)
{
	int fd;

	snprintf(T.file, sizeof(T.file), "%s/export.img", T.dir);
	fd = open(T.file, O_RDWR | O_CREAT, 0600);
	cr_assert_geq(fd, 0);
	cr_assert_eq(ftruncate(fd, (off_t)EXPORT_BYTES), 0);
	close(fd);
	server_start();
}

static umlmem_host *nbd_host(uint64_t swap_bytes)
{
	struct umlmem_host_config cfg;
	umlmem_host *h = NULL;
	int rc;

	umlmem_host_config_init(&cfg);
	cfg.resident_bytes = BUDGET;
	cfg.swap_uri = T.uri;
	cfg.swap_bytes = swap_bytes;
	cfg.reclaim_batch = 8;
	rc = umlmem_host_create(&cfg, &h);
	cr_assert_eq(rc, 0, "umlmem_host_create(%s): %s: %s", T.uri, umlmem_strerror(rc),
		     umlmem_errmsg());
	cr_assert_eq(umlmem_host_io_engine(h, NULL), UMLMEM_IO_NBD);
	return h;
}

/* Writes @len bytes of seed @seed at @gpa of the guest and of the oracle. */
static void put(uint64_t gpa, size_t len, uint64_t seed)
{
	uint8_t buf[3 * PG];
	int rc;

	cr_assert_leq(len, sizeof(buf));
	tu_fill(buf, len, seed);
	rc = umlmem_write(T.g, gpa, buf, len);
	cr_assert_eq(rc, 0, "write at %llu: %s", (unsigned long long)gpa, umlmem_errmsg());
	memcpy(T.mem + gpa, buf, len);
}

/* Page @p reads as the oracle says (rc 0), or the read fails with -EIO;
   anything else, and wrong bytes above all, fails the test. */
static int page_rc(uint64_t p)
{
	uint8_t buf[PG];
	int rc = umlmem_read(T.g, p * PG, buf, PG);

	if (rc == 0)
		cr_assert_eq(memcmp(buf, T.mem + p * PG, PG), 0, "page %llu: wrong bytes",
			     (unsigned long long)p);
	else
		cr_assert_eq(rc, -EIO, "page %llu: %d %s", (unsigned long long)p, rc,
			     umlmem_errmsg());
	return rc;
}

static void check_all(void)
{
	for (uint64_t p = 0; p < NP; p++)
		cr_assert_eq(page_rc(p), 0, "page %llu: %s", (unsigned long long)p,
			     umlmem_errmsg());
}

static void fill_all(uint64_t seed)
{
	for (uint64_t p = 0; p < NP; p++)
		put(p * PG, PG, seed + p);
}

static void evict_all(void)
{
	uint64_t n = 0;

	cr_assert_eq(umlmem_reclaim(T.h, NP, &n), 0, "%s", umlmem_errmsg());
}

static struct umlmem_stats stats(void)
{
	struct umlmem_stats s;

	cr_assert_eq(umlmem_host_stats(T.h, &s), 0);
	return s;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Random writes, reads, discards and evictions against the oracle. */
Test(nbd, model)
{
	uint64_t st = 16, ops = tu_scaled(2000);
	struct umlmem_host_info info;
	struct umlmem_stats s;

	NEED_NBDKIT();
	server_start();
	T.h = nbd_host(0);
	T.g = tu_guest(T.h, NP * PG);
	for (uint64_t i = 0; i < ops; i++) {
		uint64_t r = tu_splitmix64(&st), p = r % NP;

		switch ((r >> 32) % 8) {
		case 0: case 1: case 2: {
			size_t len = 1 + (size_t)(r >> 40) % (2 * PG);
			uint64_t gpa = p * PG + (r >> 20) % PG;

			if (gpa + len > NP * PG)
				len = NP * PG - gpa;
			put(gpa, len, r);
			break;
		}
		case 3:
			cr_assert_eq(umlmem_discard(T.g, p * PG, PG), 0);
			memset(T.mem + p * PG, 0, PG);
			break;
		case 4:
			cr_assert_eq(umlmem_reclaim(T.h, 1 + (r >> 48) % 16, NULL), 0, "%s",
				     umlmem_errmsg());
			break;
		default:
			cr_assert_eq(page_rc(p), 0, "%s", umlmem_errmsg());
			break;
		}
	}
	check_all();
	tu_check(T.h);
	s = stats();
	cr_assert_gt(s.swap_outs, 0);
	cr_assert_gt(s.swap_ins, 0);
	cr_assert_eq(s.io_errors, 0);
	cr_assert_eq(s.checksum_errors, 0);
	cr_assert_eq(s.resident_pages + s.swapped_pages + s.zero_pages, s.ram_pages);
	/* capacity: the whole export; freed clusters are trimmed */
	cr_assert_eq(umlmem_discard(T.g, 0, NP * PG), 0);
	cr_assert_eq(umlmem_host_info(T.h, &info, sizeof(info)), 0);
	cr_assert_eq(info.swap_slots_cap, EXPORT_BYTES / PG);
	cr_assert_eq(info.swap_slots_used, 0);
	cr_assert_gt(info.swap_punches, 0);
}

/* The trims nbdkit's log filter saw: their number, and in *bytes their
   total length. A request is logged when it starts ("Trim id=...") and
   when it ends ("...Trim id=... return=..."); only starts count. */
static unsigned logged_trims(uint64_t *bytes)
{
	char line[512];
	unsigned n = 0;
	FILE *f = fopen(T.reqlog, "r");

	*bytes = 0;
	cr_assert_not_null(f, "%s: %s", T.reqlog, strerror(errno));
	while (fgets(line, sizeof(line), f)) {
		const char *t = strstr(line, " Trim id="), *c;

		if (!t || strstr(line, "...Trim"))
			continue;
		c = strstr(t, "count=");
		cr_assert_not_null(c, "a trim without a count: %s", line);
		*bytes += strtoull(c + 6, NULL, 0);
		n++;
	}
	fclose(f);
	return n;
}

/* A guest destroyed with all its pages in swap frees clusters that lie
   side by side in the export: they go as one trim per run, not one per
   cluster, and every byte they held is trimmed. */
Test(nbd, destroy_trims_runs)
{
	struct umlmem_host_info i0, i1;
	uint64_t bytes, clusters;
	unsigned trims;

	NEED_NBDKIT();
	snprintf(T.reqlog, sizeof(T.reqlog), "%s/requests.log", T.dir);
	server_start();
	T.h = nbd_host(0);
	T.g = tu_guest(T.h, NP * PG);
	fill_all(300);
	evict_all();
	cr_assert_eq(stats().resident_pages, 0);
	cr_assert_eq(umlmem_host_info(T.h, &i0, sizeof(i0)), 0);
	cr_assert_eq(logged_trims(&bytes), 0, "trims before the destroy");
	umlmem_guest_destroy(T.g);
	T.g = NULL;
	cr_assert_eq(umlmem_host_info(T.h, &i1, sizeof(i1)), 0);
	cr_assert_eq(i1.swap_slots_used, 0);
	/* every slot was written once, in order: the clusters are the
	   first ones of the export, NP pages' worth, rounded up */
	clusters = i1.swap_punches - i0.swap_punches;
	cr_assert_geq(clusters * (256 * 1024), i0.swap_slots_used * PG);
	cr_assert_gt(clusters, 1);
	/* the log is written as the server answers, and the destroy waited
	   for every answer */
	trims = logged_trims(&bytes);
	cr_assert_eq(bytes, clusters * 256 * 1024, "%llu bytes trimmed in %u trims for %llu "
		     "clusters", (unsigned long long)bytes, trims, (unsigned long long)clusters);
	cr_assert_eq(trims, 1, "%u trims for %llu adjacent clusters", trims,
		     (unsigned long long)clusters);
}

/*
 * Clusters freed together that are not side by side in the export (two
 * guests' pages written out in turns, one guest destroyed) go as several
 * trims, and those are in flight together: with the server holding each
 * trim TRIM_MS, every trim has started before the first one ends, rather
 * than each waiting for the one before. The other guest keeps its bytes.
 */
#define TRIM_MS 300u
#define ROUND_PAGES 64u      /* one 256 KiB cluster of slots */

Test(nbd, trims_in_flight_together)
{
	umlmem_guest *g[2];
	uint8_t *mem[2], buf[PG];
	struct umlmem_host_info i0, i1;
	unsigned trims = 0, ends_before = 0, starts_after_end = 0;
	uint64_t bytes = 0, clusters;
	char line[512];
	bool ended = false;
	FILE *f;

	NEED_NBDKIT();
	snprintf(T.reqlog, sizeof(T.reqlog), "%s/requests.log", T.dir);
	T.trim_ms = TRIM_MS;
	server_start();
	T.h = nbd_host(0);
	for (int k = 0; k < 2; k++) {
		g[k] = tu_guest(T.h, 2 * ROUND_PAGES * PG);
		mem[k] = calloc(2 * ROUND_PAGES, PG);
		cr_assert_not_null(mem[k]);
	}
	/* rounds A B A B: each writes one cluster's worth of slots in order */
	for (unsigned r = 0; r < 4; r++) {
		int k = r % 2;
		uint64_t first = (r / 2) * ROUND_PAGES, n = 0;

		for (uint64_t p = first; p < first + ROUND_PAGES; p++) {
			tu_fill(mem[k] + p * PG, PG, 1000 * r + p);
			cr_assert_eq(umlmem_write(g[k], p * PG, mem[k] + p * PG, PG), 0, "%s",
				     umlmem_errmsg());
		}
		cr_assert_eq(umlmem_reclaim(T.h, 4 * ROUND_PAGES, &n), 0, "%s", umlmem_errmsg());
	}
	cr_assert_eq(umlmem_host_info(T.h, &i0, sizeof(i0)), 0);
	umlmem_guest_destroy(g[0]);
	cr_assert_eq(umlmem_host_info(T.h, &i1, sizeof(i1)), 0);
	clusters = i1.swap_punches - i0.swap_punches;
	cr_assert_geq(clusters, 2, "%llu clusters freed by the destroy",
		      (unsigned long long)clusters);

	/* the destroy waited for every answer, so the log is complete */
	f = fopen(T.reqlog, "r");
	cr_assert_not_null(f, "%s: %s", T.reqlog, strerror(errno));
	while (fgets(line, sizeof(line), f)) {
		const char *t = strstr(line, "Trim id="), *c;

		if (!t)
			continue;
		if (t > line && t[-1] == '.') {    /* "...Trim id=N ... return=" */
			ended = true;
			ends_before++;
			continue;
		}
		c = strstr(t, "count=");
		cr_assert_not_null(c, "a trim without a count: %s", line);
		bytes += strtoull(c + 6, NULL, 0);
		trims++;
		if (ended)
			starts_after_end++;
	}
	fclose(f);
	cr_assert_eq(bytes, clusters * 256 * 1024, "%llu bytes trimmed for %llu clusters",
		     (unsigned long long)bytes, (unsigned long long)clusters);
	cr_assert_geq(trims, 2, "%u trim(s): the freed clusters should not be adjacent", trims);
	cr_assert_eq(ends_before, trims, "%u trims started, %u ended", trims, ends_before);
	cr_assert_eq(starts_after_end, 0, "%u of %u trims started only after another had "
		     "ended: they were not in flight together", starts_after_end, trims);

	/* the other guest's pages, all in swap, read back unchanged */
	for (uint64_t p = 0; p < 2 * ROUND_PAGES; p++) {
		cr_assert_eq(umlmem_read(g[1], p * PG, buf, PG), 0, "%s", umlmem_errmsg());
		cr_assert_eq(memcmp(buf, mem[1] + p * PG, PG), 0, "page %llu of the other guest",
			     (unsigned long long)p);
	}
	umlmem_guest_destroy(g[1]);
	free(mem[0]);
	free(mem[1]);
}

/* The server killed mid-run: what needs it fails with -EIO, quickly;
   what is in memory stays; once it is back, every page is there. */
Test(nbd, server_restart)
{
	struct umlmem_stats s0, s1;
	uint64_t t, failed = 0;

	NEED_NBDKIT();
	file_server_start();
	T.h = nbd_host(0);
	T.g = tu_guest(T.h, NP * PG);
	fill_all(100);
	evict_all();
	/* a few pages back in memory */
	for (uint64_t p = 0; p < IN_MEM; p++)
		cr_assert_eq(page_rc(p), 0);

	server_stop();
	t = now_ms();
	for (uint64_t p = NP / 2; p < NP; p++)
		failed += page_rc(p) != 0;
	cr_assert_gt(failed, 0, "no read failed with the server gone");
	cr_assert_lt(now_ms() - t, 5000, "failing reads took %llu ms",
		     (unsigned long long)(now_ms() - t));
	for (uint64_t p = 0; p < IN_MEM; p++)
		cr_assert_eq(page_rc(p), 0, "a page in memory was lost");
	/* new dirty pages cannot leave: they stay */
	s0 = stats();
	for (uint64_t p = 0; p < IN_MEM; p++)
		put(p * PG + 8, 64, 5000 + p);
	umlmem_reclaim(T.h, NP, NULL);
	s1 = stats();
	cr_assert_gt(s1.io_errors, s0.io_errors);
	for (uint64_t p = 0; p < IN_MEM; p++)
		cr_assert_eq(page_rc(p), 0);

	server_start();
	usleep(100 * 1000);     /* past the engine's pause between attempts */
	evict_all();
	check_all();
	tu_check(T.h);
}

/* A stalled server (SIGSTOP): the request waits the timeout, fails with
   -EIO, and the next one, once the server runs again, succeeds. */
Test(nbd, server_stall)
{
	/* long enough that no request of a slow run (valgrind, a loaded
	   machine) exceeds it while the server runs */
	uint64_t t, ms, timeout = tu_valgrind() ? 4000 : 1000;
	char env[32];
	int rc;

	NEED_NBDKIT();
	snprintf(env, sizeof(env), "%llu", (unsigned long long)timeout);
	cr_assert_eq(setenv("UMLMEM_NBD_TIMEOUT_MS", env, 1), 0);
	server_start();
	T.h = nbd_host(0);
	T.g = tu_guest(T.h, NP * PG);
	fill_all(200);
	evict_all();
	cr_assert_eq(page_rc(0), 0);

	kill(T.pid, SIGSTOP);
	{
		int st;

		/* until every thread of the server has stopped */
		cr_assert_eq(waitpid(T.pid, &st, WUNTRACED), T.pid);
		cr_assert(WIFSTOPPED(st));
	}
	t = now_ms();
	rc = page_rc(NP - 1);
	ms = now_ms() - t;
	cr_assert_eq(rc, -EIO, "%d after %llu ms: %s", rc, (unsigned long long)ms, umlmem_errmsg());
	cr_assert_geq(ms, timeout - 50, "failed after %llu ms, before the timeout",
		      (unsigned long long)ms);
	cr_assert_lt(ms, timeout + 5000, "failed after %llu ms", (unsigned long long)ms);
	cr_assert_eq(page_rc(0), 0, "a page in memory was lost");
	kill(T.pid, SIGCONT);
	check_all();
	tu_check(T.h);
}

/* The 4 KiB blocks of the backing file that hold anything but zeros. */
static unsigned used_blocks(uint64_t *out, unsigned max)
{
	static uint8_t buf[PG], zero[PG];
	int fd = open(T.file, O_RDONLY);
	unsigned n = 0;

	cr_assert_geq(fd, 0);
	for (uint64_t b = 0; b < EXPORT_BYTES / PG; b++) {
		cr_assert_eq(pread(fd, buf, PG, (off_t)(b * PG)), (ssize_t)PG);
		if (memcmp(buf, zero, PG) && n < max)
			out[n++] = b;
	}
	close(fd);
	return n;
}

static void block_io(uint64_t b, void *buf, bool write)
{
	int fd = open(T.file, O_RDWR);

	cr_assert_geq(fd, 0);
	if (write)
		cr_assert_eq(pwrite(fd, buf, PG, (off_t)(b * PG)), (ssize_t)PG);
	else
		cr_assert_eq(pread(fd, buf, PG, (off_t)(b * PG)), (ssize_t)PG);
	close(fd);
}

/* Every page out, then @damage applied to the backing file: each page
   reads back right or fails with -EIO; returns how many failed. */
static uint64_t reads_after(void)
{
	uint64_t failed = 0;

	for (uint64_t p = 0; p < NP; p++)
		failed += page_rc(p) != 0;
	return failed;
}

Test(nbd, bit_flip)
{
	uint64_t blocks[NP_MAX];
	uint8_t buf[PG];
	unsigned n;

	NEED_NBDKIT();
	file_server_start();
	T.h = nbd_host(0);
	T.g = tu_guest(T.h, NP * PG);
	fill_all(300);
	evict_all();
	n = used_blocks(blocks, NP);
	cr_assert_geq(n, NP - BUDGET / PG, "only %u blocks written", n);
	/* one bit in every fourth block */
	for (unsigned i = 0; i < n; i += 4) {
		block_io(blocks[i], buf, false);
		buf[(i * 37) % PG] ^= (uint8_t)(1u << (i % 8));
		block_io(blocks[i], buf, true);
	}
	cr_assert_geq(reads_after(), n / 4);
	cr_assert_geq(stats().checksum_errors, n / 4);
}

Test(nbd, swapped_blocks)
{
	uint64_t blocks[NP_MAX];
	uint8_t a[PG], b[PG];
	unsigned n;

	NEED_NBDKIT();
	file_server_start();
	T.h = nbd_host(0);
	T.g = tu_guest(T.h, NP * PG);
	fill_all(400);
	evict_all();
	n = used_blocks(blocks, NP);
	cr_assert_geq(n, 4);
	/* pairs of blocks trade places */
	for (unsigned i = 0; i + 1 < n; i += 8) {
		block_io(blocks[i], a, false);
		block_io(blocks[i + 1], b, false);
		block_io(blocks[i], b, true);
		block_io(blocks[i + 1], a, true);
	}
	cr_assert_geq(reads_after(), 2 * (n / 8));
}

/* The server serves what the export held earlier: the whole file as it was
   before the pages were rewritten and written out again. */
Test(nbd, old_blocks)
{
	uint8_t *snap = malloc(EXPORT_BYTES);
	int fd;

	NEED_NBDKIT();
	cr_assert_not_null(snap);
	file_server_start();
	T.h = nbd_host(0);
	T.g = tu_guest(T.h, NP * PG);
	fill_all(500);
	evict_all();
	fd = open(T.file, O_RDWR);
	cr_assert_geq(fd, 0);
	cr_assert_eq(pread(fd, snap, EXPORT_BYTES, 0), (ssize_t)EXPORT_BYTES);
	fill_all(600);
	evict_all();
	cr_assert_eq(pwrite(fd, snap, EXPORT_BYTES, 0), (ssize_t)EXPORT_BYTES);
	close(fd);
	free(snap);
	cr_assert_geq(reads_after(), NP - BUDGET / PG);
}

/* A marker a guest writes never reaches the server in plain text. */
Test(nbd, marker_encrypted)
{
	static const char marker[] = "umlmem-plaintext-marker-5f3c9a";
	uint8_t *img = malloc(EXPORT_BYTES);
	int fd;

	NEED_NBDKIT();
#ifndef UMLMEM_SEAL_H    /* swapfiles/seal.h: the sealing of swap pages */
	cr_skip_test("pages are encrypted by the swap layer's UMLMEM_SWAP_ENCRYPT, "
		     "which this build does not have yet");
#endif
	cr_assert_not_null(img);
	file_server_start();
	T.h = nbd_host(0);
	T.g = tu_guest(T.h, NP * PG);
	for (uint64_t p = 0; p < NP; p++)
		cr_assert_eq(umlmem_write(T.g, p * PG + 100, marker, sizeof(marker)), 0);
	evict_all();
	cr_assert_gt(stats().swap_outs, 0);
	fd = open(T.file, O_RDONLY);
	cr_assert_geq(fd, 0);
	cr_assert_eq(pread(fd, img, EXPORT_BYTES, 0), (ssize_t)EXPORT_BYTES);
	close(fd);
	cr_assert_null(memmem(img, EXPORT_BYTES, marker, sizeof(marker) - 1),
		       "the marker is in the export in plain text");
	free(img);
}

/* The export bounds swap: more than it holds is -ENOSPC at create; with
   swap_bytes 0 the capacity is the export's, and a full one is -ENOSPC
   with every page still readable. */
Test(nbd, capacity)
{
	struct umlmem_host_config cfg;
	struct umlmem_host_info info;
	umlmem_host *h = NULL;
	uint64_t p;
	int rc = 0;

	NEED_NBDKIT();
	server_start();
	umlmem_host_config_init(&cfg);
	cfg.resident_bytes = BUDGET;
	cfg.swap_uri = T.uri;
	cfg.swap_bytes = 2 * EXPORT_BYTES;
	cr_assert_eq(umlmem_host_create(&cfg, &h), -ENOSPC);
	cr_assert_null(h);
	cr_assert_not_null(strstr(umlmem_errmsg(), "swap_bytes"), "%s", umlmem_errmsg());
	cfg.swap_bytes = 0;
	cfg.io = UMLMEM_IO_NBD;
	cr_assert_eq(umlmem_host_create(&cfg, &h), -EINVAL);

	T.h = nbd_host(32 * PG);
	cr_assert_eq(umlmem_host_info(T.h, &info, sizeof(info)), 0);
	cr_assert_eq(info.swap_slots_cap, 32);
	T.g = tu_guest(T.h, NP * PG);
	for (p = 0; p < NP && !rc; p++) {
		uint8_t buf[PG];

		tu_fill(buf, PG, 700 + p);
		rc = umlmem_write(T.g, p * PG, buf, PG);
		if (!rc)
			memcpy(T.mem + p * PG, buf, PG);
	}
	cr_assert_eq(rc, -ENOSPC, "%s", umlmem_errmsg());
	cr_assert_geq(p, 32 + 1);
	for (uint64_t q = 0; q + 1 < p; q++)
		cr_assert_eq(page_rc(q), 0);
}

struct worker {
	umlmem_guest *g;
	uint64_t seed;
	int bad;
};

static void *worker_run(void *arg)
{
	struct worker *w = arg;
	uint8_t buf[PG], want[PG];

	for (uint64_t p = 0; p < NP / 4; p++) {
		tu_fill(buf, PG, w->seed + p);
		if (umlmem_write(w->g, p * PG, buf, PG))
			w->bad++;
	}
	for (int round = 0; round < 3; round++)
		for (uint64_t p = 0; p < NP / 4; p++) {
			tu_fill(want, PG, w->seed + p);
			if (umlmem_read(w->g, p * PG, buf, PG) || memcmp(buf, want, PG))
				w->bad++;
		}
	return NULL;
}

/* Native mode with the server gone: a load of a page that is only in swap
   cannot return -EIO, so it raises SIGBUS in the loading thread once the
   fault handler's bounded retries are over (as the kernel does when a swap
   device fails); the pages in memory stay readable through the mapping,
   and once the server is back the same load reads the page's bytes. */
Test(nbd, native_sigbus)
{
	const uint64_t far = NP - 1;
	volatile uint8_t x = 0;
	int buses;
	uint8_t *base = NULL;
	uint64_t t0, waited;
	void *b = NULL;
	int rc;

	if (tu_valgrind())
		cr_skip_test("userfaultfd does not run under valgrind");
	NEED_NBDKIT();
	file_server_start();
	T.h = nbd_host(0);
	T.g = tu_guest(T.h, NP * PG);
	fill_all(500);
	evict_all();
	for (uint64_t p = 0; p < IN_MEM; p++)
		cr_assert_eq(page_rc(p), 0);
	rc = umlmem_guest_map(T.g, &b);
	if (rc == -EPERM || rc == -EOPNOTSUPP)
		cr_skip_test("native mode unavailable: %s", umlmem_errmsg());
	cr_assert_eq(rc, 0, "umlmem_guest_map: %s", umlmem_errmsg());
	base = b;

	server_stop();
	t0 = now_ms();
	buses = tu_load_sigbus(&base[far * PG + 5], &x);
	waited = now_ms() - t0;
	cr_assert_eq(buses, 1, "a load of a page in swap with the server gone: %d SIGBUS "
		     "(read %u)", buses, (unsigned)x);
	/* after the handler's retries (2 s), not forever */
	cr_assert_geq(waited, 1000, "SIGBUS after %llu ms: no retries", (unsigned long long)waited);
	cr_assert_lt(waited, 30000, "SIGBUS after %llu ms", (unsigned long long)waited);
	cr_assert_gt(stats().io_errors, 0);
	for (uint64_t p = 0; p < IN_MEM; p++)
		cr_assert_eq(memcmp(base + p * PG, T.mem + p * PG, PG), 0, "resident page %llu",
			     (unsigned long long)p);

	server_start();
	cr_assert_eq(base[far * PG + 5], T.mem[far * PG + 5]);
	cr_assert_eq(memcmp(base, T.mem, NP * PG), 0);
	cr_assert_eq(umlmem_guest_unmap(T.g), 0);
	check_all();
	tu_check(T.h);
}

/* Faults of four threads at once, on the connections multi-conn allows. */
Test(nbd, threads)
{
	struct worker w[4];
	pthread_t t[4];

	NEED_NBDKIT();
	server_start();
	T.h = nbd_host(0);
	for (int i = 0; i < 4; i++) {
		w[i] = (struct worker){ .g = tu_guest(T.h, NP / 4 * PG), .seed = 1000u * (unsigned)i };
		cr_assert_eq(pthread_create(&t[i], NULL, worker_run, &w[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		cr_assert_eq(w[i].bad, 0, "thread %d: %d bad accesses", i, w[i].bad);
	}
	cr_assert_gt(stats().swap_ins, 0);
	tu_check(T.h);
}
