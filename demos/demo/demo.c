/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * `umlmem demo`: the 2009 KSM proof of concept, in user space.
 *
 * The scenario that introduced KSM ran 52 Windows XP guests of 1 GiB each on
 * a 16 GiB host (an overcommit of 3.25): the guests booted the same system,
 * so most of their memory held the same pages. Here 52 guests of 1 GiB
 * nominal RAM run on a host budget of 1 GiB, sixteen times less memory than
 * the original host, and the point is the same: the budget holds, identical
 * pages share frames, what does not fit goes to swap, and every byte every
 * guest wrote comes back unchanged.
 *
 * What a guest does
 *  - boot: it loads the "OS image" into a page-cache region of its RAM, one
 *    real file of this host after another, each at a page-aligned guest
 *    address, at the same addresses in every guest. The image is read from
 *    disk once, before the guests start, so every guest loads the same bytes.
 *  - own files: it writes its own configuration file (a page or two of text
 *    naming the guest) after the image, and replaces one or two binaries of
 *    the image with builds of its own (the original bytes with a per-guest
 *    stamp in every page): discarded, then written anew.
 *  - work: small reads and writes (64 bytes to 4 KiB) with locality, 90%
 *    reads; writes go mostly to a per-guest heap region, some to file pages
 *    that are shared by then, so copy on write happens. The guests take
 *    turns in slices, as a host's scheduler would run them.
 *  - verify: every page of every guest, all of its nominal RAM, is read back
 *    and its xxh3 compared with the expected one.
 *
 * The OS image is a fixed selection (see os_select()): the directories of
 * --os-dirs are walked depth first with names in byte order; symbolic links,
 * empty files, files over 8 MiB and unreadable files are skipped; files are
 * taken in that order while they fit, the first of N directories filling the
 * image up to 1/N of --os-bytes, the second up to 2/N, and so on (a
 * directory stops at the first file that would pass its mark, and what it
 * leaves goes to the next). The same host gives the same selection.
 *
 * How the bytes are checked. No copy of any guest is kept: each guest has an
 * array of the expected xxh3 of every page it may have written (the page
 * cache and heap regions); every other page must read as zeros. The arrays
 * are set as the guest writes: from the image's page hashes at boot, from
 * the bytes the demo generates for its own files, and in the work phase by
 * read-modify-write: the pages under a write are read first and checked
 * against their expected hash, the write is applied to that copy, and the
 * copy's hash becomes the expectation. So a wrong byte the library returns
 * is caught when it is read, never folded into what is expected. The work
 * phase's reads are checked the same way.
 *
 * Merging. With merging on (the default), the host runs with
 * UMLMEM_BACKGROUND (reclaim and merge threads), and after each guest's
 * boot the demo also scans (umlmem_dedup_scan) until three passes have
 * ended: a page written during a pass is volatile for that pass and the next
 * one, so the third is the first that can merge the guest just booted. That
 * keeps merging in step with the boots whatever the merge thread's timing.
 * --no-dedup pauses the merge thread before any guest exists and never
 * scans, keeping the reclaim thread: the same run without page sharing.
 *
 * Cloning. With --clone only guest 1 boots (and settles merging, as
 * above); every other guest is a umlmem_guest_clone() of it, which then
 * writes its own configuration file and replaces its binaries as a booted
 * guest does, and starts from guest 1's expectations. The pages the guests
 * have in common are shared from the start instead of being found by the
 * scanner pass after pass: the boot phase's length is the time to full
 * sharing, and the peak of frames in use never holds a second copy of the
 * image. Everything after the boot is the same run.
 *
 * A sampler thread reads the host's counters every 100 ms: for the live
 * status line (stderr, redrawn in place on a terminal, plain lines
 * otherwise), for the peak of frames in use, and for --plot, an SVG of
 * memory over time through the phases, written by hand to need nothing.
 *
 * Exit status: 0 when every byte of every guest was checked and right and
 * the frames in use never passed the budget; 1 otherwise; 2 bad usage.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "umlmem.h"
#include "cmd.h"
#define CLI_CMD "demo"
#include "cli.h"
#include "rng.h"


#include "demo.h"

const char *const phase_name[NPHASES] = { "start", "boot", "work", "verify", "done" };

/* ------------------------------------------------------------------------ */
/* Small helpers                                                            */
/* ------------------------------------------------------------------------ */

/* The process's peak resident set (VmHWM), in bytes; 0 if unknown. It
   includes the frame store, which is shared memory mapped by the process. */
static uint64_t peak_rss(void)
{
	return proc_value("/proc/self/status", "VmHWM: %" SCNu64 " kB") * 1024;
}

/* ------------------------------------------------------------------------ */
/* Output shared with the sampler thread                                    */
/* ------------------------------------------------------------------------ */

/* A line on stderr that does not tear the status line: the status line is
   wiped first and redrawn by the sampler at its next tick. */
void demo_say(struct demo *d, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&d->mu);
	if (d->drawn) {
		fputs("\r\033[K", stderr);
		d->drawn = false;
	}
	fprintf(stderr, "%s demo: ", PROG);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	fflush(stderr);
	pthread_mutex_unlock(&d->mu);
}

/*
 * Reports a failed library call. The library's message is copied before
 * umlmem_strerror() is called: it is only valid until the next umlmem call.
 */
static void __attribute__((format(printf, 3, 4)))
lib_fail(struct demo *d, int rc, const char *fmt, ...)
{
	char what[400], msg[400], line[sizeof(d->error)];
	va_list ap;

	snprintf(msg, sizeof(msg), "%s", umlmem_errmsg());
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	if (msg[0])
		snprintf(line, sizeof(line), "%s: %s: %s", what, umlmem_strerror(rc), msg);
	else
		snprintf(line, sizeof(line), "%s: %s", what, umlmem_strerror(rc));
	demo_say(d, "%s", line);
	/* the first failure is the one that explains the run */
	if (!d->error[0])
		memcpy(d->error, line, sizeof(line));
}

/* ------------------------------------------------------------------------ */
/* Sampler and status line                                                  */
/* ------------------------------------------------------------------------ */

static void status_text(struct demo *d, const struct sample *s, char *out, size_t n)
{
	char prog[48], b1[16], b2[16], b3[16], b4[16], b5[16], rate[32];
	enum phase ph = (enum phase)atomic_load(&d->phase);
	uint64_t total_ops = d->work_ops * d->guests;

	if (ph == PH_WORK)
		snprintf(prog, sizeof(prog), "ops %" PRIu64 "k/%" PRIu64 "k",
			 atomic_load(&d->units) / 1000, total_ops / 1000);
	else
		snprintf(prog, sizeof(prog), "guests %u/%u", atomic_load(&d->done), d->guests);
	if (ph == PH_WORK)
		snprintf(rate, sizeof(rate), "%.0f ops/s", d->rate);
	else
		snprintf(rate, sizeof(rate), "%s/s", fmt_bytes(b5, sizeof(b5), (uint64_t)d->rate));
	snprintf(out, n, "%-6s %-15s frames %s/%s  resident %s  shared %s  swapped %s  %s  %.1f s",
		 phase_name[ph], prog,
		 fmt_bytes(b1, sizeof(b1), s->frames_used * PAGE),
		 fmt_bytes(b2, sizeof(b2), d->budget_bytes),
		 fmt_bytes(b3, sizeof(b3), s->resident * PAGE),
		 fmt_bytes(b4, sizeof(b4), s->sharing * PAGE),
		 fmt_bytes(b5, sizeof(b5), s->swapped * PAGE),
		 rate, s->t);
}

/* Takes one sample; with @show, also updates the status output. */
static void sample_now(struct demo *d, bool show)
{
	struct umlmem_stats st;
	struct umlmem_host_info in;
	struct sample s, *ns;
	char line[256];
	uint64_t units;
	double t;

	if (umlmem_host_stats(d->host, &st) || umlmem_host_info(d->host, &in, sizeof(in)))
		return;
	t = now_s();
	s = (struct sample){
		.t = t - d->t0,
		.resident = st.resident_pages,
		.frames_used = st.frames_used,
		.frames_free = in.frames_free,
		.frames_cached = in.frames_cached,
		.sharing = st.sharing_pages,
		.swapped = st.swapped_pages,
	};
	pthread_mutex_lock(&d->mu);
	if (st.frames_used > d->peak_frames)
		d->peak_frames = st.frames_used;
	if (d->nsamples == d->capsamples) {
		size_t cap = d->capsamples ? d->capsamples * 2 : 1024;

		ns = realloc(d->samples, cap * sizeof(*ns));
		if (ns) {
			d->samples = ns;
			d->capsamples = cap;
		}
	}
	if (d->nsamples < d->capsamples)
		d->samples[d->nsamples++] = s;

	/* the rate over the last 0.1 to 1 s of this phase */
	units = atomic_load(&d->units);
	if (t - d->rate_t >= 0.1)
		d->rate = (double)(units - d->rate_units) / (t - d->rate_t);
	if (t - d->rate_t >= 1.0) {
		d->rate_t = t;
		d->rate_units = units;
	}
	if (show && !d->quiet) {
		if (d->tty) {
			status_text(d, &s, line, sizeof(line));
			fprintf(stderr, "\r%s\033[K", line);
			d->drawn = true;
			fflush(stderr);
		} else if (t - d->last_line >= LINE_EVERY_S) {
			status_text(d, &s, line, sizeof(line));
			fprintf(stderr, "%s\n", line);
			d->last_line = t;
		}
	}
	pthread_mutex_unlock(&d->mu);
}

static void *sampler_main(void *arg)
{
	struct demo *d = arg;
	struct timespec ts;
	double last_draw = 0, t;

	pthread_mutex_lock(&d->mu);
	while (!d->stop) {
		pthread_mutex_unlock(&d->mu);
		t = now_s();
		sample_now(d, t - last_draw >= TTY_REDRAW_S - 0.01);
		if (t - last_draw >= TTY_REDRAW_S - 0.01)
			last_draw = t;
		pthread_mutex_lock(&d->mu);
		if (d->stop)
			break;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_nsec += SAMPLE_MS * 1000000L;
		ts.tv_sec += ts.tv_nsec / 1000000000L;
		ts.tv_nsec %= 1000000000L;
		pthread_cond_timedwait(&d->cv, &d->mu, &ts);
	}
	pthread_mutex_unlock(&d->mu);
	return NULL;
}

static void sampler_stop(struct demo *d)
{
	if (!d->sampler_on)
		return;
	pthread_mutex_lock(&d->mu);
	d->stop = true;
	pthread_cond_signal(&d->cv);
	pthread_mutex_unlock(&d->mu);
	pthread_join(d->sampler, NULL);
	d->sampler_on = false;
	/* the last word on the counters, after every phase */
	sample_now(d, false);
	pthread_mutex_lock(&d->mu);
	if (d->drawn) {
		fputs("\r\033[K", stderr);
		fflush(stderr);
		d->drawn = false;
	}
	pthread_mutex_unlock(&d->mu);
}

/* Starts phase @ph: a marker for the plot, a line when not on a terminal. */
static void phase_begin(struct demo *d, enum phase ph)
{
	double t = now_s() - d->t0;
	enum phase prev = (enum phase)atomic_load(&d->phase);

	pthread_mutex_lock(&d->mu);
	if (d->nmarks)
		d->phase_s[prev] = t - d->marks[d->nmarks - 1].t;
	if (d->nmarks < NPHASES)
		d->marks[d->nmarks++] = (struct mark){ t, ph };
	/* under the lock, so the sampler never mixes two phases' counts */
	atomic_store(&d->done, 0);
	atomic_store(&d->units, 0);
	atomic_store(&d->phase, ph);
	d->rate_t = d->t0 + t;
	d->rate_units = 0;
	d->rate = 0;
	pthread_mutex_unlock(&d->mu);
	if (d->sampler_on)
		sample_now(d, false);
	if (!d->quiet && !d->tty && ph != PH_DONE)
		demo_say(d, "%s phase at %.1f s", phase_name[ph], t);
}

/* ------------------------------------------------------------------------ */
/* Expectations and checks                                                  */
/* ------------------------------------------------------------------------ */

static uint64_t *want_slot(struct demo *d, struct vm *v, uint64_t page)
{
	if (page < d->win_first || page - d->win_first >= d->win_pages)
		return NULL;
	return &v->want[page - d->win_first];
}

static uint64_t want_of(struct demo *d, struct vm *v, uint64_t page)
{
	uint64_t *w = want_slot(d, v, page);

	return w ? *w : d->zero_sum;
}

/* Where a guest page is, for messages: a file of the image, the guest's
   configuration, its heap, or memory it never wrote. */
static void where(const struct demo *d, uint64_t gpa, char *out, size_t n)
{
	const struct osfile *f;
	uint64_t off;

	if (gpa >= d->pc_base && gpa < d->pc_base + d->pc_pages * PAGE) {
		off = gpa - d->pc_base;
		if (off >= d->conf_off) {
			snprintf(out, n, "its configuration file, page %" PRIu64,
				 (off - d->conf_off) / PAGE);
			return;
		}
		f = os_file_at(&d->im, off);
		if (f) {
			snprintf(out, n, "page %" PRIu64 " of %s", (off - f->off) / PAGE, f->path);
			return;
		}
	}
	if (gpa >= d->heap_base && gpa < d->heap_base + d->heap_pages * PAGE)
		snprintf(out, n, "heap page %" PRIu64, (gpa - d->heap_base) / PAGE);
	else
		snprintf(out, n, "memory it never wrote");
}

/* Checks one page the library returned; counts and reports a mismatch. */
static bool check_page(struct demo *d, unsigned gi, uint64_t page, const unsigned char *p,
		       const char *when)
{
	uint64_t got = page_hash(p), want = want_of(d, &d->vm[gi], page);
	char loc[PATH_MAX + 64];
	size_t i, nz = 0;

	if (got == want)
		return true;
	d->mismatches++;
	if (d->reports++ < MAX_REPORTS) {
		for (i = 0; i < PAGE; i++)
			nz += p[i] != 0;
		where(d, page * PAGE, loc, sizeof(loc));
		demo_say(d, "%s: guest %u, gpa 0x%" PRIx64 " (%s): xxh3 %016" PRIx64 ", expected %016"
		    PRIx64 "%s; %zu of 4096 bytes non-zero", when, gi + 1, page * PAGE, loc,
		    got, want, want == d->zero_sum ? " (zeros)" : "", nz);
	} else if (d->reports == MAX_REPORTS + 1) {
		demo_say(d, "further mismatches are counted, not shown");
	}
	return false;
}

/* ------------------------------------------------------------------------ */
/* Host and guests                                                          */
/* ------------------------------------------------------------------------ */

static int create_all(struct demo *d)
{
	struct umlmem_host_config hc;
	struct umlmem_guest_config gc;
	const char *why = NULL;
	char name[32];
	uint64_t i;
	unsigned gi;
	int rc;

	umlmem_host_config_init(&hc);
	hc.resident_bytes = d->budget_bytes;
	hc.swap_dir = d->swap_dir;
	hc.flags = UMLMEM_BACKGROUND;
	hc.compress = d->compress;
	rc = umlmem_host_create(&hc, &d->host);
	if (rc) {
		d->host = NULL;
		lib_fail(d, rc, "creating the host (budget %" PRIu64 " bytes)", d->budget_bytes);
		return rc;
	}
	/* before any guest exists, so not one page is ever merged */
	if (!d->dedup && (rc = umlmem_dedup_pause(d->host, 1))) {
		lib_fail(d, rc, "pausing the merge thread");
		return rc;
	}
	d->engine = umlmem_host_io_engine(d->host, &why);
	snprintf(d->engine_why, sizeof(d->engine_why), "%s", why ? why : "");

	for (gi = 0; gi < d->guests; gi++) {
		struct vm *v = &d->vm[gi];

		v->want = malloc(d->win_pages * sizeof(*v->want));
		if (!v->want) {
			demo_say(d, "out of memory for the expected page hashes");
			snprintf(d->error, sizeof(d->error), "out of memory");
			return -ENOMEM;
		}
		for (i = 0; i < d->win_pages; i++)
			v->want[i] = d->zero_sum;
		v->rng = mix64(d->seed ^ mix64(gi + RNG_GOLDEN));
		if (d->clone && gi)
			continue;       /* made in the boot phase, by clone_one() */
		umlmem_guest_config_init(&gc);
		gc.ram_bytes = d->guest_bytes;
		snprintf(name, sizeof(name), "guest%02u", gi + 1);
		gc.name = name;
		rc = umlmem_guest_create(d->host, &gc, &v->g);
		if (rc) {
			v->g = NULL;
			lib_fail(d, rc, "creating guest %u of %u (%" PRIu64 " bytes)",
				 gi + 1, d->guests, d->guest_bytes);
			return rc;
		}
		d->created++;
	}
	return 0;
}

static int guest_write(struct demo *d, unsigned gi, uint64_t gpa, const void *src, size_t len)
{
	int rc = umlmem_write(d->vm[gi].g, gpa, src, len);

	if (rc) {
		lib_fail(d, rc, "guest %u: writing %zu bytes at 0x%" PRIx64, gi + 1, len, gpa);
		return rc;
	}
	d->written_bytes += len;
	/* the boot's rate is bytes loaded; the work phase counts accesses */
	if (atomic_load(&d->phase) == PH_BOOT)
		atomic_fetch_add(&d->units, len);
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Boot                                                                     */
/* ------------------------------------------------------------------------ */

/* A guest's configuration file: text that names it, as /etc would. */
static size_t conf_text(struct demo *d, unsigned gi, char *out, size_t cap)
{
	uint64_t r = mix64(d->seed ^ mix64(((uint64_t)gi << 32) ^ 0x636f6e66u));
	size_t n = 0;
	unsigned k;

	n += (size_t)snprintf(out + n, cap - n,
			"# guest%02u: settings of this guest only\n"
			"hostname=guest%02u\nmachine-id=%016" PRIx64 "%016" PRIx64 "\n"
			"address=10.%u.%u.%u/16\nmac=52:54:00:%02x:%02x:%02x\n",
			gi + 1, gi + 1, mix64(r), mix64(r + 1),
			(gi >> 16) & 255, (gi >> 8) & 255, gi & 255,
			(unsigned)(r & 255), (unsigned)((r >> 8) & 255), (unsigned)((r >> 16) & 255));
	for (k = 0; n < cap; k++) {
		int w = snprintf(out + n, cap - n, "service.%u.token=%016" PRIx64 "\n", k,
				 mix64(r + 2 + k));

		if (w < 0 || (size_t)w >= cap - n)
			break;
		n += (size_t)w;
	}
	return n;
}

/* Replaces binary @f with this guest's own build: discarded from the page
   cache, then written anew, every page stamped so no two guests share it. */
static int replace_binary(struct demo *d, unsigned gi, const struct osfile *f)
{
	uint64_t fp = round_up(f->size, PAGE), gpa = d->pc_base + f->off, p, s, off;
	unsigned char *nb = d->buf;
	int rc;

	rc = umlmem_discard(d->vm[gi].g, gpa, fp);
	if (rc) {
		lib_fail(d, rc, "guest %u: discarding %s", gi + 1, f->path);
		return rc;
	}
	memcpy(nb, d->im.bytes + f->off, fp);
	for (p = 0; p < fp / PAGE; p++) {
		s = mix64(d->seed ^ mix64(((uint64_t)gi << 40) ^ (f->off + p * PAGE)));
		off = s % (PAGE - 32);
		rng_fill(&s, nb + p * PAGE + off, 32);
	}
	/* bytes past the end of the file are not written: zeros, as before */
	memset(nb + f->size, 0, fp - f->size);
	rc = guest_write(d, gi, gpa, nb, f->size);
	if (rc)
		return rc;
	for (p = 0; p < fp / PAGE; p++)
		*want_slot(d, &d->vm[gi], gpa / PAGE + p) = page_hash(nb + p * PAGE);
	return 0;
}

/* Scans until MERGE_PASSES passes have ended, so that the pages of the
   guest just booted, volatile for two passes, have been visited once. */
static int merge_settle(struct demo *d)
{
	struct umlmem_host_info in;
	uint64_t target, before;
	int rc;

	if ((rc = umlmem_host_info(d->host, &in, sizeof(in))))
		goto fail;
	target = in.full_scans + MERGE_PASSES;
	while (in.full_scans < target) {
		before = in.pages_scanned;
		if ((rc = umlmem_dedup_scan(d->host, SCAN_BATCH, NULL)))
			goto fail;
		if ((rc = umlmem_host_info(d->host, &in, sizeof(in))))
			goto fail;
		/* nothing resident to visit: passes cannot end */
		if (in.pages_scanned == before)
			break;
	}
	return 0;
fail:
	lib_fail(d, rc, "scanning for identical pages");
	return rc;
}

static int boot_one(struct demo *d, unsigned gi)
{
	struct vm *v = &d->vm[gi];
	char *conf = (char *)d->buf2;
	uint64_t i, p;
	unsigned b;
	size_t n;
	int rc;

	/* the page cache fills file by file, each at its page */
	for (i = 0; i < d->im.nfiles; i++) {
		const struct osfile *f = &d->im.files[i];

		rc = guest_write(d, gi, d->pc_base + f->off, d->im.bytes + f->off, f->size);
		if (rc)
			return rc;
	}
	memcpy(v->want + (d->pc_base / PAGE - d->win_first), d->im.sum,
	       d->im.len / PAGE * sizeof(*v->want));

	if (d->conf_len) {
		n = conf_text(d, gi, conf, d->conf_len);
		/* a line cut short at the end is not part of the file */
		memset(conf + n, 0, round_up(d->conf_len, PAGE) - n);
		rc = guest_write(d, gi, d->pc_base + d->conf_off, conf, n);
		if (rc)
			return rc;
		for (p = 0; p < round_up(d->conf_len, PAGE) / PAGE; p++)
			*want_slot(d, v, (d->pc_base + d->conf_off) / PAGE + p) =
				page_hash(conf + p * PAGE);
	}
	for (b = 0; b < d->nbin; b++)
		if ((rc = replace_binary(d, gi, &d->im.files[d->bin[b]])))
			return rc;
	if (d->dedup && (rc = merge_settle(d)))
		return rc;
	atomic_fetch_add(&d->done, 1);
	return 0;
}

/* Guest @gi (> 0) as a clone of guest 1, booted: then its own
   configuration and binaries, as boot_one() writes them. */
static int clone_one(struct demo *d, unsigned gi)
{
	struct umlmem_guest_config gc;
	struct vm *v = &d->vm[gi];
	char *conf = (char *)d->buf2;
	uint64_t p, len;
	char name[32];
	size_t n;
	double t0, dt;
	unsigned b;
	int rc;

	umlmem_guest_config_init(&gc);
	snprintf(name, sizeof(name), "guest%02u", gi + 1);
	gc.name = name;
	t0 = now_s();
	rc = umlmem_guest_clone(d->vm[0].g, &gc, &v->g);
	dt = now_s() - t0;
	if (rc) {
		v->g = NULL;
		lib_fail(d, rc, "cloning guest 1 into guest %u", gi + 1);
		return rc;
	}
	d->created++;
	d->clone_s += dt;
	if (dt > d->clone_max_s)
		d->clone_max_s = dt;
	memcpy(v->want, d->vm[0].want, d->win_pages * sizeof(*v->want));
	/* what a boot loads, for the rate */
	atomic_fetch_add(&d->units, d->im.len);
	if (d->conf_len) {
		/* whole pages: guest 1's text is longer or shorter */
		len = round_up(d->conf_len, PAGE);
		n = conf_text(d, gi, conf, d->conf_len);
		memset(conf + n, 0, len - n);
		rc = guest_write(d, gi, d->pc_base + d->conf_off, conf, len);
		if (rc)
			return rc;
		for (p = 0; p < len / PAGE; p++)
			*want_slot(d, v, (d->pc_base + d->conf_off) / PAGE + p) =
				page_hash(conf + p * PAGE);
	}
	for (b = 0; b < d->nbin; b++)
		if ((rc = replace_binary(d, gi, &d->im.files[d->bin[b]])))
			return rc;
	atomic_fetch_add(&d->done, 1);
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Work                                                                     */
/* ------------------------------------------------------------------------ */

/* Reads pages [first, first + n) of guest @gi into @dst and checks them. */
static int read_pages(struct demo *d, unsigned gi, uint64_t first, unsigned n,
		      unsigned char *dst, const char *when)
{
	unsigned k;
	int rc;

	memset(dst, 0xa5, n * PAGE);
	rc = umlmem_read(d->vm[gi].g, first * PAGE, dst, n * PAGE);
	if (rc) {
		lib_fail(d, rc, "guest %u: reading %u pages at 0x%" PRIx64, gi + 1, n, first * PAGE);
		return rc;
	}
	for (k = 0; k < n; k++)
		check_page(d, gi, first + k, dst + k * PAGE, when);
	return 0;
}

/* One access of guest @gi: where, how long, read or write, all from its
   own random stream; the pages under it are checked either way. */
static int work_op(struct demo *d, unsigned gi)
{
	struct vm *v = &d->vm[gi];
	bool write = rng_below(&v->rng, 100) < WRITE_PCT;
	bool heap = rng_below(&v->rng, 100) < (write ? HEAP_WRITE_PCT : HEAP_READ_PCT);
	uint64_t base, pages, *cur, gpa, first, last;
	size_t len = (size_t)64 << rng_below(&v->rng, 7);
	unsigned n;
	int rc;

	if (!d->pc_pages)
		heap = true;
	base = heap ? d->heap_base : d->pc_base;
	pages = heap ? d->heap_pages : d->pc_pages;
	cur = heap ? &v->heap_cur : &v->pc_cur;
	/* mostly near the last access, now and then anywhere in the region */
	if (rng_below(&v->rng, 8) == 0)
		*cur = rng_below(&v->rng, pages);
	else
		*cur = (*cur + pages + rng_below(&v->rng, 17) - 8) % pages;
	gpa = base + *cur * PAGE + rng_below(&v->rng, PAGE);
	if (gpa + len > base + pages * PAGE)
		gpa = base + pages * PAGE - len;
	first = gpa / PAGE;
	last = (gpa + len - 1) / PAGE;
	n = (unsigned)(last - first + 1);

	rc = read_pages(d, gi, first, n, d->buf, write ? "before a write" : "work read");
	if (rc)
		return rc;
	d->work_checked += n;
	if (!write) {
		/* the access itself, which must agree with the pages around it */
		rc = umlmem_read(v->g, gpa, d->buf2, len);
		if (rc) {
			lib_fail(d, rc, "guest %u: reading %zu bytes at 0x%" PRIx64, gi + 1, len, gpa);
			return rc;
		}
		if (memcmp(d->buf2, d->buf + gpa % PAGE, len)) {
			d->mismatches++;
			demo_say(d, "guest %u: %zu bytes read at 0x%" PRIx64 " differ from the same bytes "
			    "read as whole pages", gi + 1, len, gpa);
		}
		return 0;
	}
	rng_fill(&v->rng, d->buf + gpa % PAGE, len);
	rc = guest_write(d, gi, gpa, d->buf + gpa % PAGE, len);
	if (rc)
		return rc;
	for (; first <= last; first++)
		*want_slot(d, v, first) = page_hash(d->buf + (first - gpa / PAGE) * PAGE);
	return 0;
}

/* The guests take turns, SLICE_OPS accesses each, as a scheduler would run
   them: each one's working set has to come back after the others ran. */
static int work_all(struct demo *d)
{
	uint64_t left = d->work_ops * d->guests, k;
	unsigned gi;
	int rc;

	while (left) {
		for (gi = 0; gi < d->guests && left; gi++) {
			struct vm *v = &d->vm[gi];

			for (k = 0; k < SLICE_OPS && v->ops < d->work_ops; k++, v->ops++, left--) {
				if ((rc = work_op(d, gi)))
					return rc;
				atomic_fetch_add(&d->units, 1);
			}
		}
	}
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Verify                                                                   */
/* ------------------------------------------------------------------------ */

static int verify_all(struct demo *d)
{
	uint64_t gpa, len;
	unsigned gi;
	int rc;

	for (gi = 0; gi < d->guests; gi++) {
		for (gpa = 0; gpa < d->guest_bytes; gpa += len) {
			len = d->guest_bytes - gpa < CHUNK ? d->guest_bytes - gpa : CHUNK;
			rc = read_pages(d, gi, gpa / PAGE, (unsigned)(len / PAGE), d->buf, "verify");
			if (rc)
				return rc;
			d->checked_bytes += len;
			atomic_fetch_add(&d->units, len);
		}
		d->guests_verified++;
		atomic_fetch_add(&d->done, 1);
	}
	return 0;
}

static bool budget_held(const struct demo *d)
{
	return d->peak_frames <= d->budget_bytes / PAGE &&
	       (!d->have_stats || d->st.frames_used <= d->budget_bytes / PAGE);
}

bool demo_verified(const struct demo *d)
{
	return !d->error[0] && d->guests_verified == d->guests &&
	       d->checked_bytes == (uint64_t)d->guests * d->guest_bytes && d->mismatches == 0;
}

/* Accounting the library promises; a broken promise is worth a warning
   even when every byte came back right. */
static void check_counters(struct demo *d)
{
	const struct umlmem_stats *s = &d->st;
	uint64_t ram = (uint64_t)d->guests * (d->guest_bytes / PAGE);

	if (s->ram_pages != ram)
		demo_say(d, "warning: ram_pages is %" PRIu64 ", expected %" PRIu64, s->ram_pages, ram);
	if (s->resident_pages + s->swapped_pages + s->zero_pages != s->ram_pages)
		demo_say(d, "warning: resident %" PRIu64 " + swapped %" PRIu64 " + zero %" PRIu64
		    " != ram_pages %" PRIu64, s->resident_pages, s->swapped_pages,
		    s->zero_pages, s->ram_pages);
	if (!budget_held(d))
		demo_say(d, "BUDGET EXCEEDED: %" PRIu64 " frames in use at the peak, the budget is %"
		    PRIu64, d->peak_frames, d->budget_bytes / PAGE);
	if (s->io_errors || s->checksum_errors)
		demo_say(d, "warning: %" PRIu64 " swap I/O errors, %" PRIu64 " checksum errors",
		    s->io_errors, s->checksum_errors);
}

/* ------------------------------------------------------------------------ */
/* Summary                                                                  */
/* ------------------------------------------------------------------------ */

static void print_json(const struct demo *d)
{
	const struct umlmem_stats *s = &d->st;
	uint64_t nominal = (uint64_t)d->guests * d->guest_bytes;
	FILE *f = stdout;

	fprintf(f, "{\"guests\": %u, \"guest_bytes\": %" PRIu64 ", \"nominal_bytes\": %" PRIu64
		", \"budget_bytes\": %" PRIu64 ", \"overcommit\": %.3f, \"seed_overcommit\": %.2f"
		", \"seed_guests\": %u, \"seed_guest_bytes\": %" PRIu64 ", \"seed_host_bytes\": %" PRIu64,
		d->guests, d->guest_bytes, nominal, d->budget_bytes,
		(double)nominal / (double)d->budget_bytes, SEED_OVERCOMMIT,
		SEED_GUESTS, (uint64_t)SEED_GUEST, (uint64_t)SEED_HOST);
	fprintf(f, ", \"clone\": %s, \"clone_s\": %.6f, \"clone_max_s\": %.6f",
		d->clone ? "true" : "false", d->clone_s, d->clone_max_s);
	fprintf(f, ", \"dedup\": %s, \"os_bytes\": %" PRIu64 ", \"os_content_bytes\": %" PRIu64
		", \"os_files\": %zu, \"os_dirs\": ", d->dedup ? "true" : "false",
		d->im.len, d->im.content, d->im.nfiles);
	json_string(f, d->os_dirs);
	fprintf(f, ", \"per_guest_bytes\": %" PRIu64 ", \"replaced_binaries\": %u"
		", \"work_ops\": %" PRIu64 ", \"seed\": %" PRIu64,
		d->conf_len + d->bin_bytes, d->nbin, d->work_ops, d->seed);
	fprintf(f, ", \"written_bytes\": %" PRIu64 ", \"frames_used\": %" PRIu64
		", \"peak_frames_used\": %" PRIu64 ", \"budget_frames\": %" PRIu64
		", \"budget_held\": %s, \"resident_pages\": %" PRIu64 ", \"shared_frames\": %" PRIu64
		", \"sharing_pages\": %" PRIu64 ", \"saved_bytes\": %" PRIu64
		", \"swapped_pages\": %" PRIu64 ", \"zero_pages\": %" PRIu64
		", \"swap_disk_bytes\": %" PRIu64,
		d->written_bytes, s->frames_used, d->peak_frames, d->budget_bytes / PAGE,
		budget_held(d) ? "true" : "false", s->resident_pages, s->shared_frames,
		s->sharing_pages, s->sharing_pages * PAGE, s->swapped_pages, s->zero_pages,
		s->swap_disk_bytes);
	fprintf(f, ", \"pool_pages\": %" PRIu64 ", \"pool_frames\": %" PRIu64
		", \"pool_hits\": %" PRIu64 ", \"pool_writebacks\": %" PRIu64
		", \"pool_rejects\": %" PRIu64, d->info.pool_pages, d->info.pool_frames,
		d->info.pool_hits, d->info.pool_writebacks, d->info.pool_rejects);
	fprintf(f, ", \"faults\": %" PRIu64 ", \"swap_ins\": %" PRIu64 ", \"swap_outs\": %" PRIu64
		", \"cow_breaks\": %" PRIu64 ", \"io_errors\": %" PRIu64 ", \"checksum_errors\": %" PRIu64
		", \"pages_merged\": %" PRIu64 ", \"zero_merged\": %" PRIu64 ", \"full_scans\": %" PRIu64,
		s->faults, s->swap_ins, s->swap_outs, s->cow_breaks, s->io_errors,
		s->checksum_errors, d->info.pages_merged, d->info.zero_merged, d->info.full_scans);
	fprintf(f, ", \"checked_bytes\": %" PRIu64 ", \"work_checked_pages\": %" PRIu64
		", \"mismatches\": %" PRIu64 ", \"verified\": %s",
		d->checked_bytes, d->work_checked, d->mismatches, demo_verified(d) ? "true" : "false");
	fprintf(f, ", \"create_s\": %.3f, \"boot_s\": %.3f, \"work_s\": %.3f, \"verify_s\": %.3f, \"wall_s\": %.3f"
		", \"peak_rss_bytes\": %" PRIu64 ", \"engine\": ",
		d->phase_s[PH_START], d->phase_s[PH_BOOT], d->phase_s[PH_WORK],
		d->phase_s[PH_VERIFY], d->wall_s,
		d->rss_peak);
	json_string(f, engine_name(d->engine));
	fprintf(f, ", \"plot\": ");
	json_string(f, d->plot && d->plot_ok ? d->plot : NULL);
	fprintf(f, ", \"error\": ");
	json_string(f, d->error[0] ? d->error : NULL);
	fprintf(f, "}\n");
}

static void print_text(const struct demo *d)
{
	const struct umlmem_stats *s = &d->st;
	uint64_t nominal = (uint64_t)d->guests * d->guest_bytes;
	char b1[16], b2[16], b3[16];
	FILE *f = stdout;
	unsigned b;

	fprintf(f, "umlmem demo: %u guests x %s on a %s budget, merging %s%s, seed %" PRIu64 "\n",
		d->guests, fmt_bytes(b1, sizeof(b1), d->guest_bytes),
		fmt_bytes(b2, sizeof(b2), d->budget_bytes), d->dedup ? "on" : "off",
		d->clone ? ", guests 2 on cloned from guest 1" : "", d->seed);
	fprintf(f, "  OS image: %s in %zu files from %s (%" PRIu64 " passed over), in every guest\n",
		fmt_bytes(b1, sizeof(b1), d->im.len), d->im.nfiles, d->os_dirs, d->im.skipped);
	fprintf(f, "  own files: %s of configuration", fmt_bytes(b1, sizeof(b1), d->conf_len));
	for (b = 0; b < d->nbin; b++)
		fprintf(f, "%s%s (%s)", b ? ", " : "; replaced ",
			d->im.files[d->bin[b]].path,
			fmt_bytes(b2, sizeof(b2), d->im.files[d->bin[b]].size));
	fprintf(f, "\n  work: %" PRIu64 " accesses per guest, %u%% writes; I/O engine %s\n\n",
		d->work_ops, WRITE_PCT, engine_name(d->engine));

	fprintf(f, "  %-28s %-24s %s\n", "", "this run", "2009 KSM run");
	fprintf(f, "  %-28s %-24u %u\n", "guests", d->guests, SEED_GUESTS);
	fprintf(f, "  %-28s %-24s %s\n", "nominal RAM", fmt_bytes(b1, sizeof(b1), nominal),
		fmt_bytes(b2, sizeof(b2), SEED_GUESTS * SEED_GUEST));
	fprintf(f, "  %-28s %-24s %s\n", "budget (host memory)",
		fmt_bytes(b1, sizeof(b1), d->budget_bytes), fmt_bytes(b2, sizeof(b2), SEED_HOST));
	snprintf(b1, sizeof(b1), "%.2fx", (double)nominal / (double)d->budget_bytes);
	fprintf(f, "  %-28s %-24s %.2fx\n", "overcommit (nominal/budget)", b1, SEED_OVERCOMMIT);
	fprintf(f, "  %-28s %s\n", "bytes the guests wrote", fmt_bytes(b1, sizeof(b1), d->written_bytes));
	fprintf(f, "  %-28s %s (peak %s of %s)\n", "frames in use",
		fmt_bytes(b1, sizeof(b1), s->frames_used * PAGE),
		fmt_bytes(b2, sizeof(b2), d->peak_frames * PAGE),
		fmt_bytes(b3, sizeof(b3), d->budget_bytes));
	fprintf(f, "  %-28s %s (%" PRIu64 " pages)\n", "resident guest pages",
		fmt_bytes(b1, sizeof(b1), s->resident_pages * PAGE), s->resident_pages);
	fprintf(f, "  %-28s %s (%" PRIu64 " pages on %" PRIu64 " shared frames)\n",
		"saved by sharing", fmt_bytes(b1, sizeof(b1), s->sharing_pages * PAGE),
		s->sharing_pages, s->shared_frames);
	fprintf(f, "  %-28s %s (%" PRIu64 " pages)\n", "swapped",
		fmt_bytes(b1, sizeof(b1), s->swapped_pages * PAGE), s->swapped_pages);
	fprintf(f, "  %-28s %s\n", "swap disk use", fmt_bytes(b1, sizeof(b1), s->swap_disk_bytes));
	fprintf(f, "  %-28s %" PRIu64 "\n", "faults", s->faults);
	fprintf(f, "  %-28s %" PRIu64 " / %" PRIu64 "\n", "swap-ins / swap-outs",
		s->swap_ins, s->swap_outs);
	fprintf(f, "  %-28s %" PRIu64 "\n", "COW breaks", s->cow_breaks);
	if (d->info.pool_frames || d->info.pool_pages)
		fprintf(f, "  %-28s %" PRIu64 " pages in %s (%.2f pages a frame), %" PRIu64
			" same-filled, %" PRIu64 " hits, %" PRIu64 " written back, %" PRIu64
			" rejected\n", "compressed pool", d->info.pool_pages,
			fmt_bytes(b1, sizeof(b1), d->info.pool_frames * PAGE),
			d->info.pool_frames ? (double)d->info.pool_pages / d->info.pool_frames : 0.0,
			d->info.pool_same_filled, d->info.pool_hits, d->info.pool_writebacks,
			d->info.pool_rejects);
	fprintf(f, "  %-28s %" PRIu64 " (%" PRIu64 " zero pages freed), %" PRIu64 " full passes\n",
		"pages merged", d->info.pages_merged, d->info.zero_merged, d->info.full_scans);
	if (d->clone)
		fprintf(f, "  %-28s %u of guest 1, %.1f ms in all, %.2f ms the longest\n", "clones",
			d->guests - 1, d->clone_s * 1e3, d->clone_max_s * 1e3);
	fprintf(f, "  %-28s create %.1f s, boot %.1f s, work %.1f s, verify %.1f s\n", "phases",
		d->phase_s[PH_START], d->phase_s[PH_BOOT], d->phase_s[PH_WORK],
		d->phase_s[PH_VERIFY]);
	fprintf(f, "  %-28s %s (the frame store and the demo's own copy of the image)\n",
		"process peak RSS", fmt_bytes(b1, sizeof(b1), d->rss_peak));
	fprintf(f, "  %-28s %s of %s read back, %" PRIu64 " more pages checked while working\n",
		"checked", fmt_bytes(b1, sizeof(b1), d->checked_bytes),
		fmt_bytes(b2, sizeof(b2), nominal), d->work_checked);
	fprintf(f, "  %-28s %" PRIu64 "\n", "mismatches", d->mismatches);
	if (demo_verified(d) && budget_held(d))
		fprintf(f, "  %-28s VERIFIED: every byte of %s%u guest%s matched; the budget held\n",
			"verdict", d->guests > 1 ? "all " : "", d->guests, d->guests > 1 ? "s" : "");
	else if (d->error[0])
		fprintf(f, "  %-28s NOT VERIFIED: stopped by an error: %s\n", "verdict", d->error);
	else if (!demo_verified(d))
		fprintf(f, "  %-28s NOT VERIFIED: %" PRIu64 " page checks failed\n", "verdict",
			d->mismatches);
	else
		fprintf(f, "  %-28s BUDGET EXCEEDED: %" PRIu64 " frames at the peak, budget %" PRIu64
			" (the bytes were right)\n", "verdict", d->peak_frames, d->budget_bytes / PAGE);
	if (d->plot)
		fprintf(f, "  %-28s %s%s\n", "plot", d->plot, d->plot_ok ? "" : " (not written)");
	fprintf(f, "  %-28s %.1f s\n", "wall time", d->wall_s);
}

/* ------------------------------------------------------------------------ */
/* Command                                                                  */
/* ------------------------------------------------------------------------ */

static void demo_usage(FILE *f)
{
	fprintf(f,
		"usage: %s demo [OPTIONS]\n\n"
		"The 2009 KSM proof of concept (52 Windows XP guests of 1 GiB on a 16 GiB\n"
		"host) in user space: 52 guests of 1 GiB on a budget of 1 GiB. Each guest\n"
		"boots the same OS image (real files of this host, in its page cache at the\n"
		"same page-aligned addresses), changes a few files of its own, then makes\n"
		"small reads and writes. Identical pages share frames (copy on write); what\n"
		"does not fit goes to swap. Then every page of every guest is read back and\n"
		"checked. Exits 0 only when every byte matched and the budget held.\n\n"
		"options:\n"
		"  --guests N              guests (default 52)\n"
		"  --guest-size SIZE       nominal RAM per guest, whole pages (default 1G)\n"
		"  --budget SIZE           host budget of resident RAM (default 1G)\n"
		"  --os-bytes SIZE         size of the OS image every guest loads (default 128M)\n"
		"  --os-dirs DIR[:DIR...]  where its files come from (default /usr/lib:/usr/bin)\n"
		"  --per-guest-bytes SIZE  each guest's own files: a configuration file (up\n"
		"                          to 6000 bytes) and one or two replaced binaries,\n"
		"                          the executables of the image nearest half the\n"
		"                          rest in size each (default 1M)\n"
		"  --work-ops N            accesses per guest in the working phase (default 4000)\n"
		"  --swap-dir DIR          directory for the swap files\n"
		"                          (default: $TMPDIR, else /var/tmp)\n"
		"  --seed N                seed of each guest's own content and accesses (default 1)\n"
		"  --no-dedup              no merging: the merge thread paused, no scans\n"
		"  --compress C            compressed pool: auto (default), off, lz4, zstd\n"
		"  --clone                 boot guest 1 only; the others are its clones\n"
		"                          (umlmem_guest_clone), each then writing its own files\n"
		"  --plot FILE             write an SVG of memory over time to FILE\n"
		"  --json                  print one JSON object instead of the table\n"
		"  --quiet                 no progress output\n"
		"  -h, --help              this help\n\n"
		"The OS image: each directory is walked depth first, names in byte order;\n"
		"symbolic links, empty files, files over 8 MiB and unreadable files are\n"
		"skipped. Files are taken in that order while they fit: the first of N\n"
		"directories fills the image up to 1/N of --os-bytes, the second up to 2/N,\n"
		"and so on; a directory stops at the first file that would pass its mark.\n\n"
		"SIZE is bytes, or a number with K, M, G, T (or KiB, MiB, GiB, TiB): powers\n"
		"of 1024.\n", PROG);
}

enum { O_GUESTS = 1, O_SIZE, O_BUDGET, O_OSBYTES, O_OSDIRS, O_PERGUEST, O_OPS,
       O_SWAPDIR, O_SEED, O_NODEDUP, O_PLOT, O_JSON, O_QUIET, O_COMPRESS, O_CLONE };

static const struct cli_opt demo_opts[] = {
	{ "--guests", true, O_GUESTS },
	{ "--guest-size", true, O_SIZE },
	{ "--budget", true, O_BUDGET },
	{ "--os-bytes", true, O_OSBYTES },
	{ "--os-dirs", true, O_OSDIRS },
	{ "--per-guest-bytes", true, O_PERGUEST },
	{ "--work-ops", true, O_OPS },
	{ "--swap-dir", true, O_SWAPDIR },
	{ "--seed", true, O_SEED },
	{ "--no-dedup", false, O_NODEDUP },
	{ "--compress", true, O_COMPRESS },
	{ "--clone", false, O_CLONE },
	{ "--plot", true, O_PLOT },
	{ "--json", false, O_JSON },
	{ "--quiet", false, O_QUIET },
	{ NULL, false, 0 },
};

static int demo_opt(void *ctx, int id, const char *arg)
{
	struct demo *d = ctx;
	uint64_t v;

	switch (id) {
	case O_GUESTS:
		if (!opt_u64("--guests", arg, 1, MAX_GUESTS, &v))
			return EXIT_USAGE;
		d->guests = (unsigned)v;
		break;
	case O_SIZE:
		if (!opt_size("--guest-size", arg, PAGE, 1ull << 40, &d->guest_bytes))
			return EXIT_USAGE;
		if (d->guest_bytes % PAGE) {
			usage_error("--guest-size '%s': not a whole number of 4 KiB pages", arg);
			return EXIT_USAGE;
		}
		break;
	case O_BUDGET:
		if (!opt_size("--budget", arg, PAGE, UINT64_MAX, &d->budget_bytes))
			return EXIT_USAGE;
		/* the library rounds down; report what it really uses */
		d->budget_bytes = d->budget_bytes / PAGE * PAGE;
		break;
	case O_OSBYTES:
		if (!opt_size("--os-bytes", arg, 0, 64 * GIB, &d->os_bytes))
			return EXIT_USAGE;
		break;
	case O_OSDIRS:
		if (!*arg || !strcmp(arg, ":")) {
			usage_error("--os-dirs: no directory given");
			return EXIT_USAGE;
		}
		d->os_dirs = arg;
		break;
	case O_PERGUEST:
		if (!opt_size("--per-guest-bytes", arg, 0, 1 * GIB, &d->per_guest_bytes))
			return EXIT_USAGE;
		break;
	case O_OPS:
		if (!parse_u64(arg, &d->work_ops) || d->work_ops > (1ull << 32)) {
			usage_error("--work-ops '%s': expected a whole number up to 2^32", arg);
			return EXIT_USAGE;
		}
		break;
	case O_SWAPDIR:
		if (!opt_dir("--swap-dir", arg))
			return EXIT_USAGE;
		d->swap_dir = arg;
		break;
	case O_SEED:
		if (!parse_u64(arg, &d->seed)) {
			usage_error("--seed '%s': expected a whole number (decimal or 0x hex)", arg);
			return EXIT_USAGE;
		}
		break;
	case O_NODEDUP:
		d->dedup = false;
		break;
	case O_COMPRESS:
		if (!strcmp(arg, "auto")) {
			d->compress = UMLMEM_COMPRESS_AUTO;
		} else if (!strcmp(arg, "off")) {
			d->compress = UMLMEM_COMPRESS_OFF;
		} else if (!strcmp(arg, "lz4")) {
			d->compress = UMLMEM_COMPRESS_LZ4;
		} else if (!strcmp(arg, "zstd")) {
			d->compress = UMLMEM_COMPRESS_ZSTD;
		} else {
			usage_error("--compress '%s': expected auto, off, lz4 or zstd", arg);
			return EXIT_USAGE;
		}
		break;
	case O_CLONE:
		d->clone = true;
		break;
	case O_PLOT:
		if (!*arg) {
			usage_error("--plot: empty file name");
			return EXIT_USAGE;
		}
		d->plot = arg;
		break;
	case O_JSON:
		d->json = true;
		break;
	case O_QUIET:
		d->quiet = true;
		break;
	}
	return 0;
}

/* Returns 0 to run, -1 after --help, EXIT_USAGE after a mistake. */
static int demo_parse(struct demo *d, int argc, char **argv)
{
	return parse_options(argc, argv, demo_opts, false, demo_opt, d, demo_usage);
}

static void demo_free(struct demo *d)
{
	unsigned gi;

	if (d->vm)
		for (gi = 0; gi < d->guests; gi++)
			free(d->vm[gi].want);
	free(d->vm);
	free(d->buf);
	free(d->buf2);
	free(d->samples);
	os_free(&d->im);
	pthread_mutex_destroy(&d->mu);
	pthread_cond_destroy(&d->cv);
}

int cmd_demo(int argc, char **argv)
{
	struct demo d = {
		.guests = SEED_GUESTS,
		.guest_bytes = 1 * GIB,
		.budget_bytes = 1 * GIB,
		.os_bytes = 128 * MIB,
		.os_dirs = "/usr/lib:/usr/bin",
		.per_guest_bytes = 1 * MIB,
		.work_ops = 4000,
		.seed = 1,
		.dedup = true,
	};
	static const unsigned char zeros[UMLMEM_PAGE_SIZE];
	double start = now_s();
	char b1[16], b2[16], b3[16];
	unsigned gi;
	int rc;

	pthread_mutex_init(&d.mu, NULL);
	{
		/* the sampler sleeps on the monotonic clock: a change of the
		   wall clock does not stretch or cut its period */
		pthread_condattr_t ca;

		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&d.cv, &ca);
		pthread_condattr_destroy(&ca);
	}
	rc = demo_parse(&d, argc, argv);
	if (rc) {
		demo_free(&d);
		return rc < 0 ? 0 : rc;
	}
	d.tty = isatty(STDERR_FILENO);
	d.t0 = d.rate_t = now_s();
	d.zero_sum = page_hash(zeros);

	if (os_select(&d)) {
		fprintf(stderr, "%s demo: out of memory reading the OS image\n", PROG);
		demo_free(&d);
		return 1;
	}
	os_own_files(&d);
	if (!os_layout(&d)) {
		demo_free(&d);
		return EXIT_USAGE;
	}
	/* big enough for the largest replaced binary too */
	d.buflen = CHUNK + 2 * PAGE;
	for (gi = 0; gi < d.nbin; gi++)
		if (round_up(d.im.files[d.bin[gi]].size, PAGE) > d.buflen)
			d.buflen = round_up(d.im.files[d.bin[gi]].size, PAGE);
	d.vm = calloc(d.guests, sizeof(*d.vm));
	d.buf = aligned_alloc(PAGE, d.buflen);
	d.buf2 = aligned_alloc(PAGE, d.buflen);
	if (!d.vm || !d.buf || !d.buf2) {
		fprintf(stderr, "%s demo: out of memory for %u guests\n", PROG, d.guests);
		demo_free(&d);
		return 1;
	}
	if (!d.quiet)
		demo_say(&d, "%u guests of %s on a %s budget, merging %s; OS image %s in %zu files "
		    "read in %.1f s", d.guests, fmt_bytes(b1, sizeof(b1), d.guest_bytes),
		    fmt_bytes(b2, sizeof(b2), d.budget_bytes), d.dedup ? "on" : "off",
		    fmt_bytes(b3, sizeof(b3), d.im.len), d.im.nfiles, now_s() - d.t0);

	d.t0 = now_s();
	rc = create_all(&d);
	/* the plot's time starts with the guests: nothing runs before */
	d.phase_s[PH_START] = now_s() - d.t0;
	d.t0 = d.rate_t = now_s();
	if (!rc) {
		phase_begin(&d, PH_BOOT);
		if (pthread_create(&d.sampler, NULL, sampler_main, &d) == 0)
			d.sampler_on = true;
		for (gi = 0; gi < d.guests && !rc; gi++)
			rc = d.clone && gi ? clone_one(&d, gi) : boot_one(&d, gi);
	}
	if (!rc) {
		phase_begin(&d, PH_WORK);
		rc = work_all(&d);
	}
	if (!rc) {
		phase_begin(&d, PH_VERIFY);
		rc = verify_all(&d);
	}
	if (d.host) {
		phase_begin(&d, PH_DONE);
		sampler_stop(&d);
		/* the final counters, even after an error: they help explain it */
		if (!umlmem_host_stats(d.host, &d.st) &&
		    !umlmem_host_info(d.host, &d.info, sizeof(d.info))) {
			d.have_stats = true;
			check_counters(&d);
		}
	}
	for (gi = 0; gi < d.created; gi++)
		umlmem_guest_destroy(d.vm[gi].g);
	umlmem_host_destroy(d.host);
	/* from the start: reading the OS image is part of the run */
	d.wall_s = now_s() - start;
	d.rss_peak = peak_rss();

	if (d.plot && d.nsamples)
		d.plot_ok = plot_write(&d);
	/* a JSON reader gets its object even when the host could not be made */
	if (d.json)
		print_json(&d);
	else if (d.have_stats)
		print_text(&d);
	fflush(stdout);
	rc = demo_verified(&d) && budget_held(&d) && (!d.plot || d.plot_ok) ? 0 : 1;
	demo_free(&d);
	return rc;
}
