/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * umlmem replay: page-reference traces of real programs, replayed through
 * the library, next to exact LRU and Belady's MIN with the same number of
 * frames.
 *
 * The question it answers: on the reference string a real program makes,
 * how many faults does umlmem's pager take, and how does that compare with
 * the two policies every pager is judged by: LRU (what CLOCK approximates)
 * and MIN (the optimum, which needs the future). ARC and S3-FIFO, the
 * best known adaptive policies, run on the same string too
 * (replay_policies.c), so the pager is judged against them as well. The library is the real one, through
 * the public header only, with its default configuration.
 *
 * Input formats (autodetected from the first 64 KiB unless --format says):
 *  - lackey: the output of `valgrind --tool=lackey --trace-mem=yes`, read
 *    as it is. Lines "I  ADDR,SIZE" (instruction fetch), " L ADDR,SIZE"
 *    (load), " S ..." (store), " M ..." (modify: load and store). ADDR is
 *    hex, SIZE decimal. Lines starting with '=' (valgrind's own messages,
 *    "==PID== ...") and "--PID--" lines are skipped. An access that spans
 *    two pages references both, in address order.
 *  - text: one hex byte address per line (0x optional), optionally with a
 *    mark R or W before or after it ("7f001234 W", "W 0x7f001234"); no mark
 *    means R. Blank lines and lines starting with '#' are skipped.
 *  - bin: the 8 bytes "UMLMTRC1", a little-endian u64 page size (4096),
 *    then one little-endian u64 per page reference: the page number
 *    (address / 4096) in bits 0-62, bit 63 set for a write. 8 bytes a
 *    reference, against about 14 for lackey's text. `--convert IN OUT`
 *    writes it from any format; what it writes is already collapsed (see
 *    below), so it holds exactly the reference string replay uses.
 *
 * References. An access becomes a reference to each page it touches: a
 *  write for S and M (and W), a read for I and L (and R). Consecutive
 *  references to the same page are collapsed into one, a write if any of
 *  them wrote: a repeat reference to the page referenced just before can
 *  neither fault nor change LRU's order, MIN's choices or a CLOCK
 *  referenced bit that the first one set, so their counts are unchanged,
 *  and lackey's streams of instruction fetches within one page shrink about
 *  twofold. (A pager that counts uses, promoting a page used twice, is not
 *  indifferent: an uncollapsed repeat would be its second use at once.)
 *  "refs" in the output is the count after collapsing; umlmem, LRU and MIN
 *  all see exactly that string.
 *  --skip-refs N drops the first N (collapsed) references and --max-refs N
 *  stops after N, so a trace can be cut to a few million references (a
 *  program's whole run easily has 10^8 or more). Reading stops there, so a
 *  pipe from a still running valgrind is simply closed.
 *
 * Guest size. Page numbers are renumbered densely, in order of first
 *  appearance, so that a trace touching a stack near 2^47 and code near
 *  2^22 needs a guest of exactly its footprint (distinct pages), not of
 *  the span of its addresses. Renumbering changes which guest addresses
 *  neighbour each other (it matters to umlmem's readahead, which follows
 *  ascending swap slots, and to the order the pager writes a batch in), but
 *  not the reference string the three policies see.
 *
 * How each reference is replayed, and how faults are counted. umlmem counts
 *  in its `faults` counter every access that needed a frame: the first
 *  write of a page (a fresh frame), a swap-in (with or without I/O: a page
 *  found read ahead counts), and a copy-on-write. A read of a page that was
 *  never written needs no frame (it reads as zeros) and is not counted. So
 *  that "fault" means the same for umlmem as for the simulations (a
 *  reference to a page that is not resident, first references included):
 *   - the first reference to each page is a 1-byte umlmem_write(), whatever
 *     the trace says, so it takes a frame and counts as a fault, as the
 *     first reference to a page faults under LRU and MIN;
 *   - every later reference is a 1-byte umlmem_write() if it writes, else a
 *     1-byte umlmem_read(); it faults exactly when the page is not resident;
 *   - every byte written is nonzero: the pager drops a page of zeros
 *     without writing it out, and a later read of it would then be served
 *     as zeros without a frame, that is, without a counted fault;
 *   - nothing merges pages (no UMLMEM_BACKGROUND, no umlmem_dedup_scan),
 *     so there is no copy-on-write.
 *  Then umlmem's faults (the guest's counter) = footprint (first touches)
 *  + the guest's swap_ins, which replay checks; LRU and MIN faults are
 *  counted the same way, first references included. Every read is checked
 *  against the byte last written to that page ("mismatches").
 *
 * Budget. --budget BYTES (whole pages), or --budget-fraction F of the
 *  footprint (rounded down, at least one page; default 0.25). The library's
 *  budget counts frames, and so do the simulations: same number. Its other
 *  settings stay at their defaults, readahead on, reclaim_batch a 32nd
 *  of the budget (1 to 64 pages), no reclaim thread (which would make the
 *  counts depend on timing). umlmem writes a batch at a time when it runs
 *  out of frames, but frees only the frame a fault needs: the rest of the
 *  batch stays mapped, clean, until its frames are wanted, so the whole
 *  budget holds pages as it does for LRU and MIN. Pages read ahead take
 *  frames of the same budget (free ones, or those of a batch written,
 *  and unused they are the first to go); readahead_pages and
 *  readahead_hits are reported so that this can be seen.
 *  --reclaim-batch and --no-readahead change those two settings, to see
 *  how much of a gap each explains.
 *
 * One host or many. By default each trace gets a host of its own with its
 *  own budget. With --one-host every trace's guest lives on one host with
 *  one budget (a fraction of the summed footprints); the traces' collapsed
 *  references are interleaved round robin, one reference of each in turn,
 *  and LRU and MIN run on that same interleaved string with the same global
 *  budget; each trace's faults are counted for it, and a last row sums them.
 *
 * Output: a table, or with --json one JSON object per line (JSON Lines),
 * one per trace and, with --one-host, one more with "total": true.
 *
 * Exit status: 0 success, 1 failure (unreadable trace, library error, a
 * read that returned the wrong byte), 2 bad usage.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "umlmem.h"
#include "cmd.h"
#include "replay_policies.h"
#define CLI_CMD "replay"
#include "cli.h"

#define CMD		"replay"

#define PAGE		((uint64_t)UMLMEM_PAGE_SIZE)
#define PAGE_SHIFT	12

#define BIN_MAGIC	"UMLMTRC1"
#define BIN_WRITE	(1ull << 63)
#define REF_WRITE	(1u << 31)		/* in a dense reference */
#define REF_PAGE(r)	((r) & ~REF_WRITE)
#define NONE		UINT32_MAX
/* Dense page numbers and reference indices are 32-bit to halve the
   simulations' memory; a few million references is the intended size. */
#define MAX_PAGES	(REF_WRITE - 1u)
#define MAX_REFS	((uint64_t)UINT32_MAX - 1)

#define RD_BUF		(1u << 20)
#define DETECT_BYTES	(64u * 1024u)

enum fmt { FMT_AUTO, FMT_LACKEY, FMT_TEXT, FMT_BIN };

static const char *fmt_name(enum fmt f)
{
	switch (f) {
	case FMT_AUTO:		return "auto";
	case FMT_LACKEY:	return "lackey";
	case FMT_TEXT:		return "text";
	case FMT_BIN:		return "bin";
	}
	return "?";
}

static void __attribute__((format(printf, 1, 2))) fail(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s %s: ", PROG, CMD);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* ------------------------------------------------------------------------ */
/* Options                                                                  */
/* ------------------------------------------------------------------------ */

struct opts {
	uint64_t budget_bytes;		/* 0: use budget_fraction */
	double budget_fraction;
	bool json;
	bool one_host;
	bool convert;
	bool no_readahead;
	unsigned reclaim_batch;		/* 0: the library's default */
	enum fmt fmt;
	uint64_t max_refs;		/* 0: no cap */
	uint64_t skip_refs;
	const char *swap_dir;
	char **paths;
	int npaths;
};

static void replay_usage(FILE *f)
{
	fprintf(f,
		"usage: %s %s [OPTIONS] TRACE...\n"
		"       %s %s --convert [--format F] [--skip-refs N] [--max-refs N] IN OUT\n\n"
		"Replays page-reference traces through umlmem and reports its faults next\n"
		"to exact LRU, Belady's MIN, ARC and S3-FIFO with the same number of\n"
		"frames. Each reference is a 1-byte umlmem_write (stores, and every\n"
		"page's first reference) or umlmem_read (loads, instruction fetches); consecutive\n"
		"references to one page are collapsed into one for all the policies;\n"
		"pages are renumbered densely in order of first appearance, so the guest\n"
		"is exactly as large as the trace's footprint. A fault is a reference to a\n"
		"page that is not resident, first references included.\n\n"
		"options:\n"
		"  --budget SIZE         budget of resident RAM (whole pages)\n"
		"  --budget-fraction F   budget as a fraction of the footprint, 0 < F <= 1,\n"
		"                        rounded down to pages, at least 1 (default 0.25)\n"
		"  --one-host            all traces' guests on one host with one budget,\n"
		"                        their references interleaved round robin\n"
		"  --format F            lackey, text or bin (default: detected by content)\n"
		"  --skip-refs N         drop each trace's first N references (collapsed)\n"
		"  --max-refs N          stop reading each trace after N references (collapsed)\n"
		"  --swap-dir DIR        directory for the swap files\n"
		"                        (default: $TMPDIR, else /var/tmp)\n"
		"  --reclaim-batch N     pages the pager evicts at once (default: the\n"
		"                        library's, 64)\n"
		"  --no-readahead        create the host with UMLMEM_NO_READAHEAD\n"
		"  --json                one JSON object per line, one per trace (with\n"
		"                        --one-host a last one with \"total\": true)\n"
		"  --convert IN OUT      write IN (any format; - is stdin) as a bin trace\n"
		"  -h, --help            this help\n\n"
		"Formats: lackey is `valgrind --tool=lackey --trace-mem=yes` output as is;\n"
		"text is one hex address per line with an optional R or W; bin is\n"
		"\"UMLMTRC1\", a u64 page size, then u64 page numbers with bit 63 set for a\n"
		"write (all little-endian). SIZE is bytes, or a number with K, M, G, T (or\n"
		"KiB, MiB, GiB, TiB): powers of 1024.\n", PROG, CMD, PROG, CMD);
}






static bool parse_fraction(const char *s, double *out)
{
	char *end;
	double v;

	if (!s || !((*s >= '0' && *s <= '9') || *s == '.'))
		return false;
	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !(v > 0.0) || v > 1.0)
		return false;
	*out = v;
	return true;
}

/* Returns 0 to go on, -1 after --help, or EXIT_USAGE. */
static int replay_parse(struct opts *o, int argc, char **argv)
{
	enum { O_BUDGET = 1, O_FRACTION, O_JSON, O_ONEHOST, O_FORMAT, O_SKIP, O_MAX,
	       O_SWAPDIR, O_BATCH, O_NORA, O_CONVERT, O_HELP };
	static const struct cli_opt opts[] = {
		{ "--budget", true, O_BUDGET },
		{ "--budget-fraction", true, O_FRACTION },
		{ "--json", false, O_JSON },
		{ "--one-host", false, O_ONEHOST },
		{ "--format", true, O_FORMAT },
		{ "--skip-refs", true, O_SKIP },
		{ "--max-refs", true, O_MAX },
		{ "--swap-dir", true, O_SWAPDIR },
		{ "--reclaim-batch", true, O_BATCH },
		{ "--no-readahead", false, O_NORA },
		{ "--convert", false, O_CONVERT },
		{ "--help", false, O_HELP },
		{ "-h", false, O_HELP },
		{ NULL, false, 0 },
	};
	bool have_budget = false, have_fraction = false;
	const char *arg;
	uint64_t v;
	int i = 1, id;

	o->paths = calloc((size_t)argc + 1, sizeof(*o->paths));
	if (!o->paths) {
		fail("out of memory");
		return 1;
	}
	while ((id = cli_next(argc, argv, &i, opts, &arg)) != OPT_END) {
		switch (id) {
		case OPT_ERR:
			return EXIT_USAGE;
		case OPT_POSITIONAL:
			o->paths[o->npaths++] = (char *)arg;
			break;
		case O_HELP:
			replay_usage(stdout);
			return -1;
		case O_BUDGET:
			if (!opt_size("--budget", arg, PAGE, UINT64_MAX, &v))
				return EXIT_USAGE;
			/* the library rounds down; report what it really uses */
			o->budget_bytes = v / PAGE * PAGE;
			have_budget = true;
			break;
		case O_FRACTION:
			if (!parse_fraction(arg, &o->budget_fraction)) {
				usage_error("--budget-fraction '%s': expected a number above 0 and "
					    "at most 1 (0.25 is a quarter of the footprint)", arg);
				return EXIT_USAGE;
			}
			have_fraction = true;
			break;
		case O_JSON:
			o->json = true;
			break;
		case O_ONEHOST:
			o->one_host = true;
			break;
		case O_FORMAT:
			if (!strcmp(arg, "lackey"))
				o->fmt = FMT_LACKEY;
			else if (!strcmp(arg, "text"))
				o->fmt = FMT_TEXT;
			else if (!strcmp(arg, "bin"))
				o->fmt = FMT_BIN;
			else {
				usage_error("--format '%s': expected lackey, text or bin", arg);
				return EXIT_USAGE;
			}
			break;
		case O_SKIP:
		case O_MAX:
			if (!parse_u64(arg, &v) || (id == O_MAX && (v < 1 || v > MAX_REFS))) {
				usage_error("%s '%s': expected a whole number%s", id == O_MAX ?
					    "--max-refs" : "--skip-refs", arg, id == O_MAX ?
					    " from 1 to 4294967294" : "");
				return EXIT_USAGE;
			}
			if (id == O_MAX)
				o->max_refs = v;
			else
				o->skip_refs = v;
			break;
		case O_SWAPDIR:
			if (!opt_dir("--swap-dir", arg))
				return EXIT_USAGE;
			o->swap_dir = arg;
			break;
		case O_BATCH:
			if (!opt_u64("--reclaim-batch", arg, 1, 4096, &v))
				return EXIT_USAGE;
			o->reclaim_batch = (unsigned)v;
			break;
		case O_NORA:
			o->no_readahead = true;
			break;
		case O_CONVERT:
			o->convert = true;
			break;
		}
	}
	if (have_budget && have_fraction) {
		usage_error("--budget and --budget-fraction exclude each other");
		return EXIT_USAGE;
	}
	if (o->convert) {
		if (o->npaths != 2) {
			usage_error("--convert takes exactly two files, IN and OUT (got %d)",
				    o->npaths);
			return EXIT_USAGE;
		}
		if (have_budget || have_fraction || o->one_host || o->json) {
			usage_error("--convert only converts: no budget, --one-host or --json");
			return EXIT_USAGE;
		}
		return 0;
	}
	if (!o->npaths) {
		usage_error("no trace given");
		return EXIT_USAGE;
	}
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Reading: a buffered source that can be looked into before it is parsed   */
/* ------------------------------------------------------------------------ */

/*
 * Our own buffer rather than stdio's, because the format is decided from
 * the first 64 KiB before any of it is parsed, and a pipe (valgrind still
 * writing) cannot be rewound.
 */
struct rd {
	FILE *f;
	const char *path;
	char *buf;		/* RD_BUF + 1: room for a final NUL */
	size_t pos, len;
	bool eof;
	bool err;
	uint64_t lineno;
	uint64_t consumed;	/* bytes handed out so far */
	bool last_unterminated;
};

static int rd_open(struct rd *r, const char *path)
{
	memset(r, 0, sizeof(*r));
	r->path = path;
	r->buf = malloc(RD_BUF + 1);
	if (!r->buf) {
		fail("out of memory for a read buffer");
		return -1;
	}
	r->f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
	if (!r->f) {
		fail("%s: %s", path, strerror(errno));
		free(r->buf);
		r->buf = NULL;
		return -1;
	}
	return 0;
}

static void rd_close(struct rd *r)
{
	if (r->f && r->f != stdin)
		fclose(r->f);
	free(r->buf);
	r->f = NULL;
	r->buf = NULL;
}

/* Moves what is left to the front and reads until the buffer is full or
   the input ends. */
static void rd_fill(struct rd *r)
{
	size_t n;

	if (r->pos) {
		memmove(r->buf, r->buf + r->pos, r->len - r->pos);
		r->len -= r->pos;
		r->pos = 0;
	}
	while (!r->eof && r->len < RD_BUF) {
		n = fread(r->buf + r->len, 1, RD_BUF - r->len, r->f);
		r->len += n;
		if (n == 0) {
			r->eof = true;
			if (ferror(r->f)) {
				r->err = true;
				fail("%s: read error: %s", r->path, strerror(errno));
			}
		}
	}
}

/* The next line, NUL-terminated in place, without its '\n' (or "\r\n").
   Returns 0 at the end, 1 with a line, -1 for a line longer than the
   buffer. */
static int rd_line(struct rd *r, char **line)
{
	char *nl;
	size_t n;

	for (;;) {
		nl = memchr(r->buf + r->pos, '\n', r->len - r->pos);
		if (nl || (r->eof && r->pos < r->len)) {
			*line = r->buf + r->pos;
			if (nl) {
				n = (size_t)(nl - *line);
				r->pos += n + 1;
			} else {
				n = r->len - r->pos;
				r->pos = r->len;
				r->last_unterminated = true;
			}
			r->consumed += n + (nl != NULL);
			if (n && (*line)[n - 1] == '\r')
				n--;
			(*line)[n] = '\0';
			r->lineno++;
			return 1;
		}
		if (r->eof)
			return 0;
		if (r->pos == 0 && r->len == RD_BUF) {
			fail("%s:%" PRIu64 ": a line longer than %u bytes: not a trace", r->path,
			     r->lineno + 1, RD_BUF);
			return -1;
		}
		rd_fill(r);
	}
}

/* ------------------------------------------------------------------------ */
/* Format detection                                                         */
/* ------------------------------------------------------------------------ */

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Hex digits at *p, at most 16 of them; advances *p. */
static bool scan_hex(const char **p, uint64_t *out)
{
	const char *s = *p;
	uint64_t v = 0;
	int d, n = 0;

	while ((d = hexval((unsigned char)*s)) >= 0) {
		if (++n > 16)
			return false;
		v = v << 4 | (uint64_t)d;
		s++;
	}
	if (!n)
		return false;
	*p = s;
	*out = v;
	return true;
}

/* Valgrind's own lines: "==123== ..." and "--123-- ...". */
static bool is_valgrind_msg(const char *s)
{
	return s[0] == '=' || (s[0] == '-' && s[1] == '-');
}

/* One lackey line: kind (I, L, S, M), address and size. */
static bool parse_lackey(const char *s, char *kind, uint64_t *addr, uint64_t *size)
{
	uint64_t v = 0;

	if (s[0] == 'I' && s[1] == ' ' && s[2] == ' ')
		*kind = 'I';
	else if (s[0] == ' ' && (s[1] == 'L' || s[1] == 'S' || s[1] == 'M') && s[2] == ' ')
		*kind = s[1];
	else
		return false;
	s += 3;
	while (*s == ' ')
		s++;
	if (!scan_hex(&s, addr) || *s++ != ',')
		return false;
	if (*s < '0' || *s > '9')
		return false;
	while (*s >= '0' && *s <= '9') {
		v = v * 10 + (uint64_t)(*s - '0');
		if (v > (1u << 20))
			return false;
		s++;
	}
	while (*s == ' ' || *s == '\t')
		s++;
	if (*s)
		return false;
	*size = v ? v : 1;
	return true;
}

static bool is_mark(char c)
{
	return c == 'R' || c == 'r' || c == 'W' || c == 'w';
}

/* One text line: "ADDR", "ADDR R|W" or "R|W ADDR". */
static bool parse_text(const char *s, uint64_t *addr, bool *write)
{
	char mark = 0;

	while (*s == ' ' || *s == '\t')
		s++;
	if (is_mark(s[0]) && (s[1] == ' ' || s[1] == '\t')) {
		mark = s[0];
		s++;
		while (*s == ' ' || *s == '\t')
			s++;
	}
	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X'))
		s += 2;
	if (!scan_hex(&s, addr))
		return false;
	while (*s == ' ' || *s == '\t')
		s++;
	if (!mark && is_mark(*s)) {
		mark = *s++;
		while (*s == ' ' || *s == '\t')
			s++;
	}
	if (*s)
		return false;
	*write = mark == 'W' || mark == 'w';
	return true;
}

/*
 * Decides from the buffered head: the magic means bin; otherwise the first
 * line that is neither valgrind's, blank nor a comment decides between
 * lackey and text. A head with NUL bytes and no magic is refused rather
 * than parsed as text.
 */
static enum fmt detect(struct rd *r)
{
	size_t n = r->len < DETECT_BYTES ? r->len : DETECT_BYTES, i = 0, e = 0;
	char line[256];
	uint64_t a, sz;
	char kind;
	bool w;

	if (n >= 8 && !memcmp(r->buf, BIN_MAGIC, 8))
		return FMT_BIN;
	if (memchr(r->buf, '\0', n)) {
		fail("%s: binary data without the \"" BIN_MAGIC "\" header: not a trace "
		     "this command reads", r->path);
		return FMT_AUTO;
	}
	while (i < n) {
		for (e = i; e < n && r->buf[e] != '\n'; e++)
			;
		/* a line cut by the end of the head is not judged */
		if (e == n && !(r->eof && n == r->len))
			break;
		if (e - i < sizeof(line)) {
			memcpy(line, r->buf + i, e - i);
			line[e - i] = '\0';
			if (e - i && line[e - i - 1] == '\r')
				line[e - i - 1] = '\0';
			if (line[0] && line[0] != '#' && !is_valgrind_msg(line)) {
				if (parse_lackey(line, &kind, &a, &sz))
					return FMT_LACKEY;
				if (parse_text(line, &a, &w))
					return FMT_TEXT;
				break;
			}
		}
		i = e + 1;
	}
	if (i >= n || (e == n && !(r->eof && n == r->len)))
		return FMT_TEXT;	/* nothing but messages and comments */
	fail("%s: format not recognised (neither lackey's \"I  ADDR,SIZE\" / \" L ADDR,SIZE\" "
	     "lines, nor one hex address per line, nor a bin trace); say --format", r->path);
	return FMT_AUTO;
}

/* ------------------------------------------------------------------------ */
/* Dense renumbering                                                        */
/* ------------------------------------------------------------------------ */

static inline uint64_t mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Open addressing, page + 1 as the key so that 0 marks an empty slot. */
struct pmap {
	uint64_t *key;
	uint32_t *val;
	uint64_t cap, n;
};

static int pmap_grow(struct pmap *m)
{
	uint64_t ncap = m->cap ? 2 * m->cap : 1u << 12, i, j;
	uint64_t *key = calloc(ncap, sizeof(*key));
	uint32_t *val = malloc(ncap * sizeof(*val));

	if (!key || !val) {
		free(key);
		free(val);
		fail("out of memory for the page map");
		return -1;
	}
	for (i = 0; i < m->cap; i++) {
		if (!m->key[i])
			continue;
		for (j = mix64(m->key[i]) & (ncap - 1); key[j]; j = (j + 1) & (ncap - 1))
			;
		key[j] = m->key[i];
		val[j] = m->val[i];
	}
	free(m->key);
	free(m->val);
	m->key = key;
	m->val = val;
	m->cap = ncap;
	return 0;
}

/* The dense number of @page, a new one (= the count so far) if unseen. */
static int pmap_get(struct pmap *m, uint64_t page, uint32_t *out)
{
	uint64_t k = page + 1, j;

	if (2 * (m->n + 1) > m->cap && pmap_grow(m))
		return -1;
	for (j = mix64(k) & (m->cap - 1); m->key[j]; j = (j + 1) & (m->cap - 1)) {
		if (m->key[j] == k) {
			*out = m->val[j];
			return 0;
		}
	}
	if (m->n >= MAX_PAGES) {
		fail("more than %u distinct pages", MAX_PAGES);
		return -1;
	}
	m->key[j] = k;
	m->val[j] = (uint32_t)m->n;
	*out = (uint32_t)m->n++;
	return 0;
}

static void pmap_free(struct pmap *m)
{
	free(m->key);
	free(m->val);
	memset(m, 0, sizeof(*m));
}

/* ------------------------------------------------------------------------ */
/* Collapsing, skipping, capping                                            */
/* ------------------------------------------------------------------------ */

/*
 * Page references go in one at a time; runs of one page come out as one
 * reference, written to an array or a bin file. Reading stops when the
 * reference after the cap begins (its run is the first one not wanted).
 */
struct coll {
	uint64_t skip, max;
	uint64_t runs;		/* runs started, including skipped ones */
	uint64_t in;		/* page references put in */
	bool have;		/* a run is pending */
	uint64_t page;		/* its page and write flag */
	bool write;
	bool stopped;
	/* sink: one of the two */
	uint64_t *out;		/* page | BIN_WRITE */
	uint64_t nout, capout;
	FILE *f;
	const char *fpath;
	bool ferr;
	struct pmap *seen;	/* with f: counts the footprint */
};

static int coll_emit(struct coll *c)
{
	uint64_t rec = c->page | (c->write ? BIN_WRITE : 0), *grown;
	unsigned char le[8];
	int i;

	if (c->runs <= c->skip)		/* the pending run was run number c->runs */
		return 0;
	if (c->f) {
		uint32_t d;

		if (c->seen && pmap_get(c->seen, c->page, &d))
			return -1;
		for (i = 0; i < 8; i++)
			le[i] = (unsigned char)(rec >> (8 * i));
		if (fwrite(le, 1, 8, c->f) != 8 && !c->ferr) {
			c->ferr = true;
			fail("%s: write error: %s", c->fpath, strerror(errno));
			return -1;
		}
		c->nout++;
		return 0;
	}
	if (c->nout == c->capout) {
		c->capout = c->capout ? 2 * c->capout : 1u << 16;
		grown = realloc(c->out, c->capout * sizeof(*grown));
		if (!grown) {
			fail("out of memory for %" PRIu64 " references", c->capout);
			return -1;
		}
		c->out = grown;
	}
	c->out[c->nout++] = rec;
	return 0;
}

/* Returns 1 when enough has been read, -1 on error, else 0. */
static int coll_put(struct coll *c, uint64_t page, bool write)
{
	if (c->have && c->page == page) {
		c->in++;
		c->write |= write;
		return 0;
	}
	if (c->max && c->runs >= c->skip + c->max) {
		c->stopped = true;
		return 1;
	}
	c->in++;
	if (c->have && coll_emit(c))
		return -1;
	c->have = true;
	c->page = page;
	c->write = write;
	c->runs++;
	if (c->runs > MAX_REFS + c->skip) {
		fail("more than %" PRIu64 " references: cut the trace with --max-refs",
		     MAX_REFS);
		return -1;
	}
	return 0;
}

static int coll_end(struct coll *c)
{
	return c->have ? coll_emit(c) : 0;
}

/* ------------------------------------------------------------------------ */
/* Parsing a whole trace                                                    */
/* ------------------------------------------------------------------------ */

static int read_bin(struct rd *r, struct coll *c)
{
	uint64_t rec, psize = 0;
	int i, rc;

	if (r->len < 16) {
		fail("%s: a bin trace shorter than its 16-byte header", r->path);
		return -1;
	}
	for (i = 0; i < 8; i++)
		psize |= (uint64_t)(unsigned char)r->buf[8 + i] << (8 * i);
	if (psize != PAGE) {
		fail("%s: a bin trace of %" PRIu64 "-byte pages; this library's pages are %"
		     PRIu64 " bytes", r->path, psize, PAGE);
		return -1;
	}
	r->pos = 16;
	r->consumed = 16;
	for (;;) {
		if (r->len - r->pos < 8) {
			if (r->eof)
				break;
			rd_fill(r);
			continue;
		}
		rec = 0;
		for (i = 0; i < 8; i++)
			rec |= (uint64_t)(unsigned char)r->buf[r->pos + i] << (8 * i);
		r->pos += 8;
		r->consumed += 8;
		rc = coll_put(c, rec & ~BIN_WRITE, rec & BIN_WRITE);
		if (rc)
			return rc < 0 ? -1 : 0;
	}
	if (r->len != r->pos) {
		fail("%s: %zu bytes after the last whole record: the file was cut short",
		     r->path, r->len - r->pos);
		return -1;
	}
	return r->err ? -1 : 0;
}

static int read_lines(struct rd *r, enum fmt fmt, struct coll *c)
{
	uint64_t addr, size, p, last;
	char *line, kind;
	bool write;
	int rc;

	while ((rc = rd_line(r, &line)) == 1) {
		if (!line[0] || is_valgrind_msg(line) || (fmt == FMT_TEXT && line[0] == '#'))
			continue;
		if (fmt == FMT_LACKEY) {
			if (!parse_lackey(line, &kind, &addr, &size))
				goto bad;
			write = kind == 'S' || kind == 'M';
		} else {
			if (!parse_text(line, &addr, &write))
				goto bad;
			size = 1;
		}
		/* an access that crosses into the next page references both */
		last = addr + size - 1 < addr ? UINT64_MAX : addr + size - 1;
		for (p = addr >> PAGE_SHIFT; p <= last >> PAGE_SHIFT; p++) {
			rc = coll_put(c, p, write);
			if (rc)
				return rc < 0 ? -1 : 0;
		}
	}
	return rc < 0 || r->err ? -1 : 0;
bad:
	/* valgrind killed in mid-line leaves a last line without its end */
	if (r->last_unterminated) {
		fprintf(stderr, "%s %s: %s: ignoring an unfinished last line\n", PROG, CMD,
			r->path);
		return r->err ? -1 : 0;
	}
	fail("%s:%" PRIu64 ": not a %s line: '%.80s'", r->path, r->lineno, fmt_name(fmt), line);
	return -1;
}

/* Reads @path into @c; the format used goes to *used. */
static int read_trace(const char *path, enum fmt want, struct coll *c, enum fmt *used,
		      uint64_t *bytes)
{
	struct rd r;
	enum fmt fmt;
	int rc;

	if (rd_open(&r, path))
		return -1;
	rd_fill(&r);
	fmt = want != FMT_AUTO ? want : detect(&r);
	if (fmt == FMT_AUTO) {
		rd_close(&r);
		return -1;
	}
	if (fmt == FMT_BIN && (r.len < 8 || memcmp(r.buf, BIN_MAGIC, 8))) {
		fail("%s: no \"" BIN_MAGIC "\" header: not a bin trace", path);
		rd_close(&r);
		return -1;
	}
	rc = fmt == FMT_BIN ? read_bin(&r, c) : read_lines(&r, fmt, c);
	if (!rc)
		rc = coll_end(c);
	*used = fmt;
	*bytes = r.consumed;
	rd_close(&r);
	return rc;
}

/* ------------------------------------------------------------------------ */
/* Traces                                                                   */
/* ------------------------------------------------------------------------ */

struct trace {
	const char *path, *name;
	enum fmt fmt;
	uint64_t input_refs;	/* page references read, before collapsing */
	uint64_t input_bytes;
	uint32_t npages;	/* footprint */
	uint64_t nrefs;
	uint32_t *ref;		/* dense page | REF_WRITE */
};

static const char *base_name(const char *path)
{
	const char *s = strrchr(path, '/');

	return s && s[1] ? s + 1 : path;
}

static int load_trace(struct trace *t, const char *path, const struct opts *o)
{
	struct coll c = { .skip = o->skip_refs, .max = o->max_refs };
	struct pmap m = { 0 };
	uint64_t i;
	uint32_t d;

	memset(t, 0, sizeof(*t));
	t->path = path;
	t->name = strcmp(path, "-") ? base_name(path) : "stdin";
	if (read_trace(path, o->fmt, &c, &t->fmt, &t->input_bytes))
		goto fail;
	t->input_refs = c.in;
	t->nrefs = c.nout;
	t->ref = malloc((c.nout ? c.nout : 1) * sizeof(*t->ref));
	if (!t->ref) {
		fail("out of memory for %" PRIu64 " references", c.nout);
		goto fail;
	}
	for (i = 0; i < c.nout; i++) {
		uint64_t rec = c.out[i];

		if (pmap_get(&m, rec & ~BIN_WRITE, &d))
			goto fail;
		t->ref[i] = d | (rec & BIN_WRITE ? REF_WRITE : 0);
	}
	t->npages = (uint32_t)m.n;
	pmap_free(&m);
	free(c.out);
	return 0;
fail:
	pmap_free(&m);
	free(c.out);
	free(t->ref);
	t->ref = NULL;
	return -1;
}

/* ------------------------------------------------------------------------ */
/* The simulations                                                          */
/* ------------------------------------------------------------------------ */

/*
 * A run: the references one host sees (one trace's, or all traces'
 * interleaved), with global page numbers (trace t's pages offset by base[t])
 * and the trace each reference belongs to.
 */
struct run {
	struct trace **t;
	unsigned nt;
	uint32_t *base;
	uint32_t npages;	/* sum of footprints */
	uint64_t nrefs;
	uint32_t *ref;		/* global page | REF_WRITE */
	uint32_t *owner;	/* index into t */
	uint64_t budget_pages;
};

/* Exact LRU: a doubly linked list of the resident pages, most recent at
   the head; O(1) a reference. */
static int sim_lru(const struct run *r, uint64_t *faults)
{
	uint32_t *prev = malloc(r->npages * sizeof(*prev));
	uint32_t *next = malloc(r->npages * sizeof(*next));
	uint8_t *in = calloc(r->npages, 1);
	uint32_t head = NONE, tail = NONE, p, v;
	uint64_t i, n = 0;

	if (!prev || !next || !in) {
		free(prev);
		free(next);
		free(in);
		fail("out of memory for the LRU simulation");
		return -1;
	}
	for (i = 0; i < r->nrefs; i++) {
		p = REF_PAGE(r->ref[i]);
		if (in[p]) {
			if (p == head)
				continue;
			/* unlink, then push at the head */
			next[prev[p]] = next[p];
			if (next[p] != NONE)
				prev[next[p]] = prev[p];
			else
				tail = prev[p];
		} else {
			faults[r->owner[i]]++;
			if (n == r->budget_pages) {
				v = tail;
				tail = prev[v];
				if (tail != NONE)
					next[tail] = NONE;
				else
					head = NONE;
				in[v] = 0;
				n--;
			}
			in[p] = 1;
			n++;
		}
		prev[p] = NONE;
		next[p] = head;
		if (head != NONE)
			prev[head] = p;
		head = p;
		if (tail == NONE)
			tail = p;
	}
	free(prev);
	free(next);
	free(in);
	return 0;
}

/*
 * Belady's MIN: evict the resident page whose next reference is furthest
 * away (or never comes). Next-use times come from one backward pass; the
 * resident pages sit in a max-heap keyed by their next use, with each
 * page's position kept so that a hit can re-key it in place (its next use
 * only moves later, so it only sifts up).
 */
struct mheap {
	uint32_t *h, *pos, *key;
	uint32_t n;
};

static void mh_swap(struct mheap *m, uint32_t a, uint32_t b)
{
	uint32_t x = m->h[a];

	m->h[a] = m->h[b];
	m->h[b] = x;
	m->pos[m->h[a]] = a;
	m->pos[m->h[b]] = b;
}

static void mh_up(struct mheap *m, uint32_t i)
{
	while (i && m->key[m->h[(i - 1) / 2]] < m->key[m->h[i]]) {
		mh_swap(m, i, (i - 1) / 2);
		i = (i - 1) / 2;
	}
}

static void mh_down(struct mheap *m, uint32_t i)
{
	uint32_t c, big;

	for (;;) {
		big = i;
		c = 2 * i + 1;
		if (c < m->n && m->key[m->h[c]] > m->key[m->h[big]])
			big = c;
		if (c + 1 < m->n && m->key[m->h[c + 1]] > m->key[m->h[big]])
			big = c + 1;
		if (big == i)
			return;
		mh_swap(m, i, big);
		i = big;
	}
}

static int sim_min(const struct run *r, uint64_t *faults)
{
	uint32_t *nextuse = malloc(r->nrefs * sizeof(*nextuse));
	uint32_t *last = malloc(r->npages * sizeof(*last));
	struct mheap m = {
		.h = malloc(r->npages * sizeof(uint32_t)),
		.pos = malloc(r->npages * sizeof(uint32_t)),
		.key = malloc(r->npages * sizeof(uint32_t)),
	};
	uint64_t i;
	uint32_t p;
	int rc = -1;

	if (!nextuse || !last || !m.h || !m.pos || !m.key) {
		fail("out of memory for the MIN simulation");
		goto out;
	}
	/* never referenced again: later than any index (refs <= MAX_REFS) */
	for (p = 0; p < r->npages; p++) {
		last[p] = NONE;
		m.pos[p] = NONE;
	}
	for (i = r->nrefs; i-- > 0;) {
		p = REF_PAGE(r->ref[i]);
		nextuse[i] = last[p];
		last[p] = (uint32_t)i;
	}
	for (i = 0; i < r->nrefs; i++) {
		p = REF_PAGE(r->ref[i]);
		m.key[p] = nextuse[i];
		if (m.pos[p] != NONE) {
			mh_up(&m, m.pos[p]);
			continue;
		}
		faults[r->owner[i]]++;
		if (m.n == r->budget_pages) {
			/* the root is the furthest next use: it goes, p takes its place */
			m.pos[m.h[0]] = NONE;
			m.h[0] = p;
			m.pos[p] = 0;
			mh_down(&m, 0);
		} else {
			m.h[m.n] = p;
			m.pos[p] = m.n;
			mh_up(&m, m.n++);
		}
	}
	rc = 0;
out:
	free(nextuse);
	free(last);
	free(m.h);
	free(m.pos);
	free(m.key);
	return rc;
}

/* ------------------------------------------------------------------------ */
/* The library                                                              */
/* ------------------------------------------------------------------------ */

struct result {
	uint64_t faults, swap_ins, swap_outs, cow_breaks;
	uint64_t lru, opt, arc, s3;
	uint64_t mismatches;
};

struct host_result {
	struct umlmem_stats hs;
	struct umlmem_host_info info;
	enum umlmem_io_engine engine;
	double replay_s;
};


/* The library's message is copied before umlmem_strerror(), since the text
   only lasts until the thread's next umlmem call. */
static void __attribute__((format(printf, 2, 3))) lib_fail(int rc, const char *fmt, ...)
{
	char what[256], msg[512];
	va_list ap;

	snprintf(msg, sizeof(msg), "%s", umlmem_errmsg());
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	fail("%s: %s%s%s", what, umlmem_strerror(rc), msg[0] ? ": " : "", msg);
}

static int run_umlmem(const struct run *r, const struct opts *o, struct result *res,
		      struct host_result *hr)
{
	struct umlmem_host_config hc;
	struct umlmem_guest_config gc;
	umlmem_host *h = NULL;
	umlmem_guest **g = calloc(r->nt, sizeof(*g));
	uint8_t *val = calloc(r->npages, 1);	/* last byte written; 0: never */
	struct umlmem_stats st;
	uint64_t i, gpa;
	uint32_t p, t;
	uint8_t b;
	double t0;
	int rc = 0;

	if (!g || !val) {
		fail("out of memory for %" PRIu32 " pages", r->npages);
		rc = -1;
		goto out;
	}
	umlmem_host_config_init(&hc);
	hc.resident_bytes = r->budget_pages * PAGE;
	hc.swap_dir = o->swap_dir;
	if (o->reclaim_batch)
		hc.reclaim_batch = o->reclaim_batch;
	if (o->no_readahead)
		hc.flags |= UMLMEM_NO_READAHEAD;
	rc = umlmem_host_create(&hc, &h);
	if (rc) {
		lib_fail(rc, "creating a host of %" PRIu64 " pages", r->budget_pages);
		goto out;
	}
	hr->engine = umlmem_host_io_engine(h, NULL);
	for (t = 0; t < r->nt; t++) {
		umlmem_guest_config_init(&gc);
		/* a footprint of 0 (an empty trace) still needs a guest */
		gc.ram_bytes = (r->t[t]->npages ? r->t[t]->npages : 1) * PAGE;
		gc.name = r->t[t]->name;
		rc = umlmem_guest_create(h, &gc, &g[t]);
		if (rc) {
			lib_fail(rc, "creating the guest of %s", r->t[t]->path);
			goto out;
		}
	}

	t0 = now_s();
	for (i = 0; i < r->nrefs; i++) {
		p = REF_PAGE(r->ref[i]);
		t = r->owner[i];
		gpa = (uint64_t)(p - r->base[t]) * PAGE;
		if ((r->ref[i] & REF_WRITE) || !val[p]) {
			/* nonzero, so no eviction ever finds a page of zeros */
			b = (uint8_t)(i % 255 + 1);
			rc = umlmem_write(g[t], gpa, &b, 1);
			val[p] = b;
		} else {
			b = 0;
			rc = umlmem_read(g[t], gpa, &b, 1);
			if (!rc && b != val[p])
				res[t].mismatches++;
		}
		if (rc) {
			lib_fail(rc, "%s reference %" PRIu64 " (page %" PRIu64 ")",
				 r->t[t]->path, i, gpa / PAGE);
			goto out;
		}
	}
	hr->replay_s = now_s() - t0;

	for (t = 0; t < r->nt; t++) {
		rc = umlmem_guest_stats(g[t], &st);
		if (rc) {
			lib_fail(rc, "reading the counters of %s", r->t[t]->path);
			goto out;
		}
		res[t].faults = st.faults;
		res[t].swap_ins = st.swap_ins;
		res[t].swap_outs = st.swap_outs;
		res[t].cow_breaks = st.cow_breaks;
	}
	rc = umlmem_host_stats(h, &hr->hs);
	if (!rc)
		rc = umlmem_host_info(h, &hr->info, sizeof(hr->info));
	if (rc)
		lib_fail(rc, "reading the host counters");
out:
	for (t = 0; g && t < r->nt; t++)
		umlmem_guest_destroy(g[t]);
	umlmem_host_destroy(h);
	free(g);
	free(val);
	return rc ? -1 : 0;
}

/* ------------------------------------------------------------------------ */
/* Runs                                                                     */
/* ------------------------------------------------------------------------ */

/* Interleaves the traces round robin, one reference of each in turn, those
   that have ended dropping out. */
static int run_build(struct run *r, struct trace **t, unsigned nt)
{
	uint64_t *cur = calloc(nt, sizeof(*cur)), total = 0, pages = 0, k = 0;
	unsigned *live = malloc(nt * sizeof(*live)), nlive = 0, i, j;

	memset(r, 0, sizeof(*r));
	r->t = t;
	r->nt = nt;
	r->base = malloc(nt * sizeof(*r->base));
	if (!cur || !live || !r->base)
		goto oom;
	for (i = 0; i < nt; i++) {
		r->base[i] = (uint32_t)pages;
		pages += t[i]->npages;
		total += t[i]->nrefs;
		if (t[i]->nrefs)
			live[nlive++] = i;
	}
	if (pages > MAX_PAGES || total > MAX_REFS) {
		fail("together the traces have %" PRIu64 " pages and %" PRIu64 " references, "
		     "above %u and %" PRIu64, pages, total, MAX_PAGES, MAX_REFS);
		goto err;
	}
	r->npages = (uint32_t)pages;
	r->nrefs = total;
	r->ref = malloc((total ? total : 1) * sizeof(*r->ref));
	r->owner = malloc((total ? total : 1) * sizeof(*r->owner));
	if (!r->ref || !r->owner)
		goto oom;
	while (nlive) {
		for (i = j = 0; i < nlive; i++) {
			unsigned ti = live[i];
			uint32_t x = t[ti]->ref[cur[ti]++];

			r->ref[k] = (REF_PAGE(x) + r->base[ti]) | (x & REF_WRITE);
			r->owner[k++] = ti;
			if (cur[ti] < t[ti]->nrefs)
				live[j++] = ti;
		}
		nlive = j;
	}
	free(cur);
	free(live);
	return 0;
oom:
	fail("out of memory for %" PRIu64 " references", total);
err:
	free(cur);
	free(live);
	free(r->base);
	free(r->ref);
	free(r->owner);
	return -1;
}

static void run_free(struct run *r)
{
	free(r->base);
	free(r->ref);
	free(r->owner);
}

static uint64_t budget_for(const struct opts *o, uint64_t footprint)
{
	uint64_t b;

	if (o->budget_bytes)
		return o->budget_bytes / PAGE;
	/* the epsilon keeps 0.1 * 1230 from rounding down to 122 */
	b = (uint64_t)floor(o->budget_fraction * (double)footprint + 1e-9);
	return b ? b : 1;
}

/* ------------------------------------------------------------------------ */
/* Output                                                                   */
/* ------------------------------------------------------------------------ */



static void json_ratio(FILE *f, const char *key, uint64_t a, uint64_t b)
{
	if (b)
		fprintf(f, ", \"%s\": %.4f", key, (double)a / (double)b);
	else
		fprintf(f, ", \"%s\": null", key);
}

static void print_host_json(FILE *f, const struct host_result *hr, const struct opts *o)
{
	fprintf(f, ", \"swap_reads\": %" PRIu64, hr->hs.swap_ins);
	fprintf(f, ", \"readahead_pages\": %" PRIu64, hr->info.readahead_pages);
	fprintf(f, ", \"readahead_hits\": %" PRIu64, hr->info.readahead_hits);
	fprintf(f, ", \"reclaim_batch\": %" PRIu64, hr->info.reclaim_batch);
	fprintf(f, ", \"readahead\": %s", o->no_readahead ? "false" : "true");
	fprintf(f, ", \"engine\": \"%s\"", engine_name(hr->engine));
	fprintf(f, ", \"replay_s\": %.3f", hr->replay_s);
}

/* One trace's object; @hr NULL when its host is shared (the total has it). */
static void print_json(const struct trace *t, const struct result *res, uint64_t budget,
		       uint64_t host_pages, bool shared, const struct host_result *hr,
		       const struct opts *o)
{
	FILE *f = stdout;

	fprintf(f, "{\"trace\": ");
	json_string(f, t->path);
	fprintf(f, ", \"format\": \"%s\"", fmt_name(t->fmt));
	fprintf(f, ", \"host\": \"%s\"", shared ? "shared" : "own");
	fprintf(f, ", \"input_refs\": %" PRIu64, t->input_refs);
	fprintf(f, ", \"refs\": %" PRIu64, t->nrefs);
	fprintf(f, ", \"collapsed\": true");
	fprintf(f, ", \"footprint_pages\": %" PRIu32, t->npages);
	fprintf(f, ", \"budget_pages\": %" PRIu64, budget);
	/* with a shared host: of all the guests' footprints */
	fprintf(f, ", \"budget_fraction\": %.4f",
		host_pages ? (double)budget / (double)host_pages : 0.0);
	fprintf(f, ", \"faults\": %" PRIu64, res->faults);
	fprintf(f, ", \"first_touches\": %" PRIu32, t->npages);
	fprintf(f, ", \"swap_ins\": %" PRIu64, res->swap_ins);
	fprintf(f, ", \"swap_outs\": %" PRIu64, res->swap_outs);
	fprintf(f, ", \"lru_faults\": %" PRIu64, res->lru);
	fprintf(f, ", \"opt_faults\": %" PRIu64, res->opt);
	fprintf(f, ", \"arc_faults\": %" PRIu64, res->arc);
	fprintf(f, ", \"s3fifo_faults\": %" PRIu64, res->s3);
	json_ratio(f, "faults_per_lru", res->faults, res->lru);
	json_ratio(f, "faults_per_opt", res->faults, res->opt);
	json_ratio(f, "faults_per_arc", res->faults, res->arc);
	json_ratio(f, "faults_per_s3fifo", res->faults, res->s3);
	fprintf(f, ", \"mismatches\": %" PRIu64, res->mismatches);
	if (hr)
		print_host_json(f, hr, o);
	fprintf(f, "}\n");
}

static void print_total_json(const struct run *r, const struct result *sum,
			     const struct host_result *hr, const struct opts *o)
{
	FILE *f = stdout;

	fprintf(f, "{\"total\": true, \"traces\": %u", r->nt);
	fprintf(f, ", \"host\": \"shared\"");
	fprintf(f, ", \"refs\": %" PRIu64, r->nrefs);
	fprintf(f, ", \"footprint_pages\": %" PRIu32, r->npages);
	fprintf(f, ", \"budget_pages\": %" PRIu64, r->budget_pages);
	fprintf(f, ", \"faults\": %" PRIu64, sum->faults);
	fprintf(f, ", \"swap_ins\": %" PRIu64, sum->swap_ins);
	fprintf(f, ", \"swap_outs\": %" PRIu64, sum->swap_outs);
	fprintf(f, ", \"lru_faults\": %" PRIu64, sum->lru);
	fprintf(f, ", \"opt_faults\": %" PRIu64, sum->opt);
	fprintf(f, ", \"arc_faults\": %" PRIu64, sum->arc);
	fprintf(f, ", \"s3fifo_faults\": %" PRIu64, sum->s3);
	json_ratio(f, "faults_per_lru", sum->faults, sum->lru);
	json_ratio(f, "faults_per_opt", sum->faults, sum->opt);
	json_ratio(f, "faults_per_arc", sum->faults, sum->arc);
	json_ratio(f, "faults_per_s3fifo", sum->faults, sum->s3);
	fprintf(f, ", \"mismatches\": %" PRIu64, sum->mismatches);
	print_host_json(f, hr, o);
	fprintf(f, "}\n");
}

static void print_header(void)
{
	printf("%-22s %9s %10s %8s %10s %10s %10s %10s %10s %7s %7s %7s %7s %9s %9s %8s %8s\n",
	       "trace", "footprint", "refs", "budget", "faults", "lru", "min", "arc", "s3fifo",
	       "/lru", "/min", "/arc", "/s3fifo", "swap-ins", "swap-outs", "ra-pages", "ra-hits");
}

static void print_ratio(uint64_t a, uint64_t b)
{
	if (b)
		printf(" %7.3f", (double)a / (double)b);
	else
		printf(" %7s", "-");
}

static void print_row(const char *name, uint64_t footprint, uint64_t refs, uint64_t budget,
		      const struct result *res, const struct host_result *hr)
{
	printf("%-22.22s %9" PRIu64 " %10" PRIu64 " %8" PRIu64 " %10" PRIu64 " %10" PRIu64
	       " %10" PRIu64 " %10" PRIu64 " %10" PRIu64, name, footprint, refs, budget,
	       res->faults, res->lru, res->opt, res->arc, res->s3);
	print_ratio(res->faults, res->lru);
	print_ratio(res->faults, res->opt);
	print_ratio(res->faults, res->arc);
	print_ratio(res->faults, res->s3);
	printf(" %9" PRIu64 " %9" PRIu64, res->swap_ins, res->swap_outs);
	if (hr)
		printf(" %8" PRIu64 " %8" PRIu64 "\n", hr->info.readahead_pages,
		       hr->info.readahead_hits);
	else
		printf(" %8s %8s\n", "", "");
}

/* ------------------------------------------------------------------------ */
/* replay                                                                   */
/* ------------------------------------------------------------------------ */

/*
 * What must hold, checked, so that a wrong number cannot pass silently:
 * every page's first reference was a write and no page can turn back into
 * zeros, so each umlmem fault is a first touch or a page back from swap;
 * no policy on the same frames faults less than MIN; every read returns
 * the byte last written.
 */
static int check_result(const struct trace *t, const struct result *res)
{
	int bad = 0;

	if (res->faults != (uint64_t)t->npages + res->swap_ins + res->cow_breaks) {
		fail("%s: umlmem counted %" PRIu64 " faults, but %" PRIu32 " first touches + %"
		     PRIu64 " swap-ins + %" PRIu64 " copies on write make %" PRIu64, t->path,
		     res->faults, t->npages, res->swap_ins, res->cow_breaks,
		     (uint64_t)t->npages + res->swap_ins + res->cow_breaks);
		bad = 1;
	}
	if (res->opt > res->lru || res->opt > res->faults || res->opt > res->arc ||
	    res->opt > res->s3) {
		fail("%s: MIN took %" PRIu64 " faults, more than LRU (%" PRIu64 "), ARC (%" PRIu64
		     "), S3-FIFO (%" PRIu64 ") or umlmem (%" PRIu64 "): the simulation is wrong",
		     t->path, res->opt, res->lru, res->arc, res->s3, res->faults);
		bad = 1;
	}
	if (res->mismatches) {
		fail("%s: %" PRIu64 " reads returned another byte than the one last written",
		     t->path, res->mismatches);
		bad = 1;
	}
	return bad;
}

static int replay_run(struct run *r, const struct opts *o, bool shared,
		      enum umlmem_io_engine *engine)
{
	struct result *res = calloc(r->nt, sizeof(*res)), sum = { 0 };
	uint64_t *lru = calloc(r->nt, sizeof(*lru)), *opt = calloc(r->nt, sizeof(*opt));
	uint64_t *arc = calloc(r->nt, sizeof(*arc)), *s3 = calloc(r->nt, sizeof(*s3));
	struct host_result hr = { 0 };
	int bad = 0;
	unsigned t;

	if (!res || !lru || !opt || !arc || !s3) {
		fail("out of memory");
		bad = 1;
		goto out;
	}
	r->budget_pages = budget_for(o, r->npages);
	if (sim_arc(r->ref, r->owner, r->nrefs, r->npages, r->budget_pages, arc)) {
		fail("out of memory for the ARC simulation");
		bad = 1;
		goto out;
	}
	if (sim_s3fifo(r->ref, r->owner, r->nrefs, r->npages, r->budget_pages, s3)) {
		fail("out of memory for the S3-FIFO simulation");
		bad = 1;
		goto out;
	}
	if (sim_lru(r, lru) || sim_min(r, opt) || run_umlmem(r, o, res, &hr)) {
		bad = 1;
		goto out;
	}
	*engine = hr.engine;
	for (t = 0; t < r->nt; t++) {
		res[t].lru = lru[t];
		res[t].opt = opt[t];
		res[t].arc = arc[t];
		res[t].s3 = s3[t];
		bad |= check_result(r->t[t], &res[t]);
		sum.faults += res[t].faults;
		sum.swap_ins += res[t].swap_ins;
		sum.swap_outs += res[t].swap_outs;
		sum.lru += res[t].lru;
		sum.opt += res[t].opt;
		sum.arc += res[t].arc;
		sum.s3 += res[t].s3;
		sum.mismatches += res[t].mismatches;
		if (o->json)
			print_json(r->t[t], &res[t], r->budget_pages, r->npages, shared,
				   shared ? NULL : &hr, o);
		else
			print_row(r->t[t]->name, r->t[t]->npages, r->t[t]->nrefs, r->budget_pages,
				  &res[t], shared ? NULL : &hr);
	}
	if (shared) {
		if (o->json)
			print_total_json(r, &sum, &hr, o);
		else
			print_row("(all, one host)", r->npages, r->nrefs, r->budget_pages, &sum, &hr);
	}
	fflush(stdout);
out:
	free(res);
	free(lru);
	free(opt);
	free(arc);
	free(s3);
	return bad;
}

static int do_convert(const struct opts *o)
{
	const char *in = o->paths[0], *out = o->paths[1];
	struct coll c = { .skip = o->skip_refs, .max = o->max_refs };
	struct pmap seen = { 0 };
	unsigned char hdr[16];
	uint64_t bytes = 0;
	enum fmt used;
	int i, rc;

	c.f = strcmp(out, "-") ? fopen(out, "wb") : stdout;
	c.fpath = out;
	c.seen = &seen;
	if (!c.f) {
		fail("%s: %s", out, strerror(errno));
		return 1;
	}
	memcpy(hdr, BIN_MAGIC, 8);
	for (i = 0; i < 8; i++)
		hdr[8 + i] = (unsigned char)(PAGE >> (8 * i));
	rc = fwrite(hdr, 1, 16, c.f) == 16 ? 0 : -1;
	if (rc)
		fail("%s: write error: %s", out, strerror(errno));
	if (!rc)
		rc = read_trace(in, o->fmt, &c, &used, &bytes);
	if (c.f != stdout ? fclose(c.f) : fflush(c.f)) {
		if (!rc)
			fail("%s: write error: %s", out, strerror(errno));
		rc = -1;
	}
	if (rc) {
		if (c.f != stdout)
			unlink(out);
		pmap_free(&seen);
		return 1;
	}
	fprintf(stderr, "%s %s: %s (%s, %" PRIu64 " bytes read): %" PRIu64
		" page references, %" PRIu64 " after collapsing%s%s, footprint %" PRIu64
		" pages; %s: %" PRIu64 " bytes\n",
		PROG, CMD, in, fmt_name(used), bytes, c.in, c.nout,
		o->skip_refs ? " and skipping" : "",
		c.stopped ? ", cut at --max-refs" : "", seen.n, out, 16 + 8 * c.nout);
	pmap_free(&seen);
	return 0;
}

int cmd_replay(int argc, char **argv)
{
	struct opts o = { .budget_fraction = 0.25 };
	struct trace *traces = NULL, **tp = NULL;
	enum umlmem_io_engine engine = UMLMEM_IO_AUTO;
	struct run r;
	int rc, bad = 0, i;

	rc = replay_parse(&o, argc, argv);
	if (rc) {
		free(o.paths);
		return rc < 0 ? 0 : rc;
	}
	if (o.convert) {
		rc = do_convert(&o);
		free(o.paths);
		return rc;
	}
	traces = calloc((size_t)o.npaths, sizeof(*traces));
	tp = calloc((size_t)o.npaths, sizeof(*tp));
	if (!traces || !tp) {
		fail("out of memory");
		bad = 1;
		goto out;
	}
	for (i = 0; i < o.npaths; i++) {
		if (load_trace(&traces[i], o.paths[i], &o)) {
			bad = 1;
			goto out;
		}
		tp[i] = &traces[i];
	}
	if (!o.json)
		print_header();
	if (o.one_host) {
		if (run_build(&r, tp, (unsigned)o.npaths)) {
			bad = 1;
			goto out;
		}
		bad |= replay_run(&r, &o, true, &engine);
		run_free(&r);
	} else {
		for (i = 0; i < o.npaths; i++) {
			if (run_build(&r, &tp[i], 1)) {
				bad = 1;
				goto out;
			}
			bad |= replay_run(&r, &o, false, &engine);
			run_free(&r);
		}
	}
	if (!o.json)
		printf("\nfaults: references to a page not resident, first touches included "
		       "(so at least the footprint);\nrefs: after collapsing repeats of one page; "
		       "budget in pages (%s); engine %s,\nreclaim_batch %s, readahead %s; "
		       "/lru, /min, /arc, /s3fifo: umlmem's faults over theirs.\n",
		       o.budget_bytes ? "--budget" : "a fraction of the footprint",
		       engine_name(engine), o.reclaim_batch ? "as set" : "the library's default (1/32 of the budget, 1 to 64)",
		       o.no_readahead ? "off" : "on");
out:
	for (i = 0; traces && i < o.npaths; i++)
		free(traces[i].ref);
	free(traces);
	free(tp);
	free(o.paths);
	return bad ? 1 : 0;
}
