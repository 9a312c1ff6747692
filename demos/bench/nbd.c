/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * nbd.c: swap-ins per second over NBD, umlmem against raw libnbd.
 *
 * nbd_pagein_t1 -- the pagein_random_t1 workload with swap on an NBD
 *   export (swap_uri): nbdkit's memory plugin on a Unix socket in a fresh
 *   temporary directory, started by the bench and killed after it. One
 *   guest of 4B on a budget of B, every page distinct, 3/4 of it in swap;
 *   one thread reads 8 bytes at uniformly random pages (every value
 *   checked); the value is swap-ins per second. Before the timed phase the
 *   fill's dirty pages are written out (umlmem_reclaim of the budget) and
 *   the budget is read back in, so that both sides only read: an eviction
 *   drops a clean page, as it does in any steady state of reads
 *   ("swap_outs" counts the writes in the timed phase), and the frames
 *   hold memory. Baseline: raw libnbd, one thread doing synchronous 4 KiB
 *   nbd_pread()s at random offsets of the part of the same export that
 *   umlmem wrote (queue depth 1), on a connection of its own that asks for
 *   simple replies, as the engine's do, each into a page of its own
 *   picked at random in a region of the budget's size (a memfd, shared,
 *   as the frame store is): a fault lands in any frame of the budget, and
 *   on this virtual machine the copy into a page that is not in the
 *   caches and TLB costs several microseconds that a read into one page
 *   used again and again does not pay. That is what a fault costs at the
 *   least: one round trip to the server, into a frame. Slices of the timed
 *   phase alternate between the two sides, as in pagein.c.
 *
 * nbd_pagein_t8 -- the same with 8 threads on the one guest (umlmem
 *   spreads them over the connections the server allows, up to 8, one per
 *   thread here), and for the baseline 8 threads of queue-depth-1 reads,
 *   each on its own connection: 8 requests in flight on both sides.
 *
 * Skipped, with the reason, where nbdkit is not installed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <libnbd.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

enum { T1, T8 };

struct server {
	char dir[64];
	char sock[100];
	char uri[160];
	pid_t pid;
};

static bool sock_answers(const char *path)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool ok;

	snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
	ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
	if (fd >= 0)
		close(fd);
	return ok;
}

static void server_stop(struct server *s)
{
	if (s->pid > 0) {
		kill(s->pid, SIGKILL);
		waitpid(s->pid, NULL, 0);
	}
	s->pid = 0;
	if (s->sock[0])
		unlink(s->sock);
	if (s->dir[0])
		rmdir(s->dir);
}

/* nbdkit's memory plugin of @bytes on a socket of a fresh directory. */
static int server_start(struct result *r, struct server *s, uint64_t bytes)
{
	char size[32];
	int st;

	snprintf(s->dir, sizeof(s->dir), "/tmp/umlmem-bench-nbd.XXXXXX");
	if (!mkdtemp(s->dir)) {
		s->dir[0] = '\0';
		res_fail(r, RS_ERROR, "mkdtemp under /tmp: %s", strerror(errno));
		return -1;
	}
	snprintf(s->sock, sizeof(s->sock), "%s/nbd.sock", s->dir);
	snprintf(s->uri, sizeof(s->uri), "nbd+unix:///?socket=%s", s->sock);
	snprintf(size, sizeof(size), "%" PRIu64, bytes);
	s->pid = fork();
	if (s->pid < 0) {
		res_fail(r, RS_ERROR, "fork: %s", strerror(errno));
		return -1;
	}
	if (!s->pid) {
		bench_cleanup_child();
		execlp("nbdkit", "nbdkit", "-f", "--exit-with-parent", "-U", s->sock, "memory",
		       size, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 2000 && !sock_answers(s->sock); i++) {
		if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
			s->pid = 0;
			if (WIFEXITED(st) && WEXITSTATUS(st) == 127)
				res_fail(r, RS_SKIP, "nbdkit is not installed (Debian: nbdkit)");
			else
				res_fail(r, RS_ERROR, "nbdkit exited at start");
			return -1;
		}
		usleep(5000);
	}
	if (!sock_answers(s->sock)) {
		res_fail(r, RS_ERROR, "nbdkit did not listen on %s within 10 s", s->sock);
		return -1;
	}
	return 0;
}

/* ---- the raw side: synchronous libnbd reads, one connection per thread -- */

struct rawnbd {
	pthread_t tid;
	struct nbd_handle *h;
	uint64_t rng, span_pages;
	uint64_t ops;           /* atomic */
	int *stop;
	char err[200];
	/* this reader's pages of the destination region: page i of them is
	   region page i * stride + id, for i < pages */
	uint8_t *region;
	unsigned id, stride;
	uint64_t pages;
};

static void *rawnbd_reader(void *arg)
{
	struct rawnbd *w = arg;

	while (!__atomic_load_n(w->stop, __ATOMIC_RELAXED)) {
		uint64_t off = rng_below(&w->rng, w->span_pages) * PAGE;
		uint8_t *buf = w->region + (rng_below(&w->rng, w->pages) * w->stride + w->id) * PAGE;

		if (nbd_pread(w->h, buf, PAGE, off, 0) < 0) {
			snprintf(w->err, sizeof(w->err), "nbd_pread: %s", nbd_get_error());
			break;
		}
		__atomic_add_fetch(&w->ops, 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

static uint64_t rawnbd_ops(struct rawnbd *w, unsigned n)
{
	uint64_t s = 0;

	for (unsigned i = 0; i < n; i++)
		s += __atomic_load_n(&w[i].ops, __ATOMIC_RELAXED);
	return s;
}

static int rawnbd_slice(struct result *r, struct rawnbd *w, unsigned n, double warm, double secs,
			uint64_t seed, struct phase_out *out)
{
	int stop = 0;
	uint64_t o0 = 0, o1 = 0;
	double t0 = 0, t1 = 0;
	unsigned i, started;

	for (started = 0; started < n; started++) {
		w[started].stop = &stop;
		w[started].rng = seed * 1000003u + started;
		w[started].err[0] = '\0';
		rng_next(&w[started].rng);
		if (pthread_create(&w[started].tid, NULL, rawnbd_reader, &w[started]))
			break;
	}
	if (started == n) {
		sleep_s(warm);
		o0 = rawnbd_ops(w, n);
		t0 = now_s();
		sleep_s(secs);
		t1 = now_s();
		o1 = rawnbd_ops(w, n);
	}
	__atomic_store_n(&stop, 1, __ATOMIC_RELAXED);
	for (i = 0; i < started; i++)
		pthread_join(w[i].tid, NULL);
	if (started < n) {
		res_fail(r, RS_ERROR, "pthread_create failed");
		return -1;
	}
	for (i = 0; i < n; i++)
		if (w[i].err[0]) {
			res_fail(r, RS_ERROR, "raw reader %u: %s", i, w[i].err);
			return -1;
		}
	out->secs += t1 - t0;
	out->ops += o1 - o0;
	return 0;
}

/* The raw readers' destination: a shared memfd of @bytes, written. */
static uint8_t *region_map(struct result *r, uint64_t bytes)
{
	int fd = memfd_create("bench-nbd-region", MFD_CLOEXEC);
	void *p = MAP_FAILED;

	if (fd >= 0 && ftruncate(fd, (off_t)bytes) == 0)
		p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (fd >= 0)
		close(fd);
	if (p == MAP_FAILED) {
		res_fail(r, RS_ERROR, "a memfd of %" PRIu64 " bytes for the raw readers: %s",
			 bytes, strerror(errno));
		return NULL;
	}
	memset(p, 0x5a, bytes);
	return p;
}

/* umlmem and raw libnbd in alternating slices, each warmed up once. */
static int compare(struct bench *b, struct result *r, struct phase *ph, unsigned n,
		   umlmem_host *h, umlmem_guest *g, struct rawnbd *w, struct phase_out *u,
		   struct phase_out *base)
{
	unsigned rounds = b->quick ? 4 : 8;
	double secs = b->seconds / rounds;

	for (unsigned i = 0; i < n; i++) {
		w[i].id = i;
		w[i].stride = n;
		w[i].pages = b->budget / PAGE / n;
	}
	for (unsigned i = 0; i < rounds; i++) {
		if (run_slice(r, ph, h, g, NULL, n, 100 + i, i ? 0 : b->warm, secs, u))
			return -1;
		if (rawnbd_slice(r, w, n, i ? 0 : b->warm, secs, 200 + i, base))
			return -1;
	}
	return 0;
}

static void nbd_result(struct result *r, unsigned n, unsigned conns, const struct phase_out *u,
		       const struct phase_out *raw, uint64_t npages, uint64_t budget,
		       uint64_t swap_outs)
{
	double value = u->secs > 0 ? (double)u->swap_ins / u->secs : 0;
	double base = raw->secs > 0 ? (double)raw->ops / raw->secs : 0;

	res_set(r, value, base, "faults/s", false);
	res_int(r, "threads", n);
	res_int(r, "pages", (int64_t)npages);
	res_int(r, "budget_pages", (int64_t)(budget / PAGE));
	res_num(r, "seconds", u->secs);
	res_int(r, "reads", (int64_t)u->ops);
	res_int(r, "swap_ins", (int64_t)u->swap_ins);
	res_int(r, "readahead_hits", (int64_t)u->ra_hits);
	res_int(r, "swap_outs", (int64_t)swap_outs);
	res_int(r, "baseline_reads", (int64_t)raw->ops);
	res_num(r, "baseline_seconds", raw->secs);
	res_int(r, "baseline_connections", conns);
	if (value > 0 && base > 0)
		res_num(r, "overhead_us", 1e6 * n / value - 1e6 * n / base);
	res_str(r, "server", "nbdkit memory plugin, Unix socket");
	res_str(r, "baseline_mode", "%u thread(s), each synchronous 4 KiB nbd_pread on its own "
		"connection (queue depth 1 each), into random pages of a region of the budget's "
		"size", n);
	if (r->ratio > 0 && r->ratio < 0.85)
		res_note(r, "below the goal of 0.85 of raw libnbd");
}

static void nbd_run(struct bench *b, struct result **res)
{
	struct result *r1 = res[T1], *r8 = res[T8];
	struct result *r = r1->want ? r1 : r8;
	uint64_t ws = 4 * b->budget, npages = ws / PAGE, span;
	struct phase_out u1 = { 0 }, raw1 = { 0 }, u8 = { 0 }, raw8 = { 0 };
	struct umlmem_host_config hc;
	struct umlmem_guest_config gc;
	struct umlmem_host_info info;
	struct umlmem_stats s0, s1;
	struct rawnbd w[RAW_THREADS_MAX];
	struct server s = { .pid = 0 };
	struct phase *ph = NULL;
	umlmem_host *h = NULL;
	umlmem_guest *g = NULL;
	uint8_t *region = NULL;
	unsigned i;
	int rc;

	memset(w, 0, sizeof(w));
	if (!r1->want && !r8->want)
		return;
	/* the export: the working set and room to spare */
	if (server_start(r, &s, 2 * ws))
		goto out;
	umlmem_host_config_init(&hc);
	hc.resident_bytes = b->budget;
	hc.swap_uri = s.uri;
	hc.compress = UMLMEM_COMPRESS_OFF;
	rc = umlmem_host_create(&hc, &h);
	if (rc) {
		h = NULL;
		res_lib_fail(r, rc, "creating the host on NBD");
		goto out;
	}
	umlmem_guest_config_init(&gc);
	gc.ram_bytes = ws;
	gc.name = "bench-nbd";
	gc.flags = UMLMEM_GUEST_NOMERGE;
	rc = umlmem_guest_create(h, &gc, &g);
	if (rc) {
		res_lib_fail(r, rc, "creating the guest");
		goto out;
	}
	bench_progress("nbd: guest of %" PRIu64 " MiB over %s, filling it", ws >> 20, s.uri);
	if (bench_fill_guest(r, g, ws, 0, "nbd fill") || bench_settle(r, h, g, b->budget))
		goto out;
	ph = phase_new(r, npages);
	if (!ph)
		goto out;
	umlmem_host_info(h, &info, sizeof(info));
	/* the slots umlmem wrote are the first of the export */
	span = info.swap_slots_used ? info.swap_slots_used : 1;

	region = region_map(r, b->budget);
	if (!region)
		goto out;
	for (i = 0; i < RAW_THREADS_MAX; i++) {
		w[i].region = region;
		w[i].span_pages = span;
		w[i].h = nbd_create();
		/* as the engine asks: simple replies, fewer receives per read */
		if (w[i].h)
			nbd_set_request_structured_replies(w[i].h, false);
		if (!w[i].h || nbd_connect_uri(w[i].h, s.uri) < 0) {
			res_fail(r, RS_ERROR, "raw libnbd connection: %s", nbd_get_error());
			goto out;
		}
	}
	if (r1->want) {
		bench_progress("nbd_pagein_t1: umlmem and raw libnbd, 1 thread, %.1f s each",
			       b->seconds);
		umlmem_guest_stats(g, &s0);
		if (!compare(b, r1, ph, 1, h, g, w, &u1, &raw1)) {
			umlmem_guest_stats(g, &s1);
			nbd_result(r1, 1, 1, &u1, &raw1, npages, b->budget,
				   s1.swap_outs - s0.swap_outs);
		}
	}
	if (r8->want) {
		bench_progress("nbd_pagein_t8: umlmem and raw libnbd, 8 threads, %.1f s each",
			       b->seconds);
		umlmem_guest_stats(g, &s0);
		if (!compare(b, r8, ph, 8, h, g, w, &u8, &raw8)) {
			umlmem_guest_stats(g, &s1);
			nbd_result(r8, 8, 8, &u8, &raw8, npages, b->budget,
				   s1.swap_outs - s0.swap_outs);
			if (r1->state == RS_OK && r1->value > 0)
				res_num(r8, "scaling_vs_t1", r8->value / r1->value);
		}
	}
out:
	if (r1->want && r8->want && r1->state != RS_OK && r1->state != RS_NONE &&
	    r8->state == RS_NONE)
		res_fail(r8, r1->state, "%s", r1->reason);
	for (i = 0; i < RAW_THREADS_MAX; i++)
		if (w[i].h)
			nbd_close(w[i].h);
	if (region)
		munmap(region, b->budget);
	phase_free(ph);
	umlmem_host_destroy(h);
	server_stop(&s);
}

static const struct bench_key keys[] = {
	[T1] = { "nbd_pagein_t1",
		"swap-ins/s, 1 thread, the pagein_random_t1 workload with swap\n"
		"on an NBD export (nbdkit, Unix socket); baseline: raw libnbd\n"
		"4 KiB reads of the same export at queue depth 1\n" },
	[T8] = { "nbd_pagein_t8",
		"the same with 8 threads; baseline: 8 threads of queue-depth-1\n"
		"raw libnbd reads\n" },
	{ NULL },
};

const struct bench_family bench_nbd = { "nbd", keys, nbd_run };
