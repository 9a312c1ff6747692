/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * image.c: the "OS image" every guest of `umlmem demo` boots: a fixed
 * selection of this host's own files, read once, laid out page-aligned as
 * a page cache holds them, with the xxh3 of every page; and the layout of
 * a guest's RAM around it (page cache, configuration file, heap).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CLI_CMD "demo"
#include "cli.h"
#include "demo.h"

/* ------------------------------------------------------------------------ */
/* The OS image                                                             */
/* ------------------------------------------------------------------------ */

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Reads a whole file into @dst; a file that shrank since it was listed
   keeps zeros for the missing bytes (it is read once, so every guest still
   loads the same bytes). */
static bool read_file(const char *path, unsigned char *dst, uint64_t size)
{
	uint64_t got = 0;
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

	if (fd < 0)
		return false;
	while (got < size) {
		n = read(fd, dst + got, size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			close(fd);
			return false;
		}
		if (n == 0)
			break;
		got += (uint64_t)n;
	}
	close(fd);
	memset(dst + got, 0, size - got);
	return true;
}

static bool image_add(struct image *im, const char *path, uint64_t size, bool exec)
{
	struct osfile *f;

	if (im->nfiles == im->cap) {
		size_t cap = im->cap ? im->cap * 2 : 1024;

		f = realloc(im->files, cap * sizeof(*f));
		if (!f)
			return false;
		im->files = f;
		im->cap = cap;
	}
	f = &im->files[im->nfiles];
	f->path = strdup(path);
	if (!f->path)
		return false;
	f->size = size;
	f->off = im->len;
	f->binary = exec && size >= 4 && !memcmp(im->bytes + im->len, "\177ELF", 4);
	im->nfiles++;
	im->len += round_up(size, PAGE);
	im->content += size;
	return true;
}

/*
 * Walks @dir depth first, names in strcmp order, and takes regular files
 * into the image while they fit below @mark (see the design comment).
 * Returns -1 when out of memory, 1 when the mark is reached, else 0.
 */
static int os_walk(struct image *im, const char *dir, uint64_t mark)
{
	char path[PATH_MAX], **names = NULL, **nn;
	size_t n = 0, cap = 0, i;
	struct dirent *de;
	struct stat sb;
	int rc = 0;
	DIR *dp = opendir(dir);

	/* an unreadable directory is simply not part of the image */
	if (!dp)
		return 0;
	while ((de = readdir(dp))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			nn = realloc(names, cap * sizeof(*names));
			if (!nn) {
				rc = -1;
				break;
			}
			names = nn;
		}
		if (!(names[n] = strdup(de->d_name))) {
			rc = -1;
			break;
		}
		n++;
	}
	closedir(dp);
	if (!rc)
		qsort(names, n, sizeof(*names), name_cmp);

	for (i = 0; i < n && !rc; i++) {
		if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, names[i]) >= sizeof(path))
			continue;
		if (lstat(path, &sb)) {
			im->skipped++;
			continue;
		}
		if (S_ISDIR(sb.st_mode)) {
			rc = os_walk(im, path, mark);
			continue;
		}
		if (!S_ISREG(sb.st_mode) || sb.st_size <= 0 || (uint64_t)sb.st_size > MAX_FILE) {
			im->skipped++;
			continue;
		}
		if (im->len + round_up((uint64_t)sb.st_size, PAGE) > mark) {
			rc = 1;
			break;
		}
		if (!read_file(path, im->bytes + im->len, (uint64_t)sb.st_size)) {
			im->skipped++;
			continue;
		}
		if (!image_add(im, path, (uint64_t)sb.st_size, sb.st_mode & 0111))
			rc = -1;
	}
	for (i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return rc;
}

/* Builds the image from the directories of --os-dirs (colon-separated). */
int os_select(struct demo *d)
{
	struct image *im = &d->im;
	char *dirs, *dir, *save = NULL;
	unsigned ndirs = 0, k = 0;
	const char *p;
	uint64_t i;
	int rc = 0;

	im->limit = d->os_bytes / PAGE * PAGE;
	if (im->limit) {
		/* zeros where files end short of a page: calloc, not malloc */
		im->bytes = calloc(1, im->limit);
		if (!im->bytes)
			return -1;
	}
	for (p = d->os_dirs; *p; p++)
		ndirs += *p == ':';
	ndirs++;
	dirs = strdup(d->os_dirs);
	if (!dirs)
		return -1;
	for (dir = strtok_r(dirs, ":", &save); dir && rc >= 0; dir = strtok_r(NULL, ":", &save)) {
		k++;
		if (im->limit)
			rc = os_walk(im, dir, im->limit / ndirs * k +
				     (k == ndirs ? im->limit % ndirs : 0));
	}
	free(dirs);
	if (rc < 0)
		return -1;
	im->sum = malloc((im->len / PAGE + 1) * sizeof(*im->sum));
	if (!im->sum)
		return -1;
	for (i = 0; i < im->len / PAGE; i++)
		im->sum[i] = page_hash(im->bytes + i * PAGE);
	return 0;
}

void os_free(struct image *im)
{
	size_t i;

	for (i = 0; i < im->nfiles; i++)
		free(im->files[i].path);
	free(im->files);
	free(im->bytes);
	free(im->sum);
}

/* The executable of the image whose footprint is nearest @target bytes,
   other than @not (any file when the image has no executable); (size_t)-1
   when there is none. */
static size_t os_nearest(const struct image *im, uint64_t target, size_t not)
{
	uint64_t best = UINT64_MAX, fp, dist;
	size_t i, pick = (size_t)-1;
	bool any = true;

	for (i = 0; i < im->nfiles; i++)
		if (im->files[i].binary && i != not)
			any = false;
	for (i = 0; i < im->nfiles; i++) {
		if (i == not || (!any && !im->files[i].binary))
			continue;
		fp = round_up(im->files[i].size, PAGE);
		dist = fp > target ? fp - target : target - fp;
		if (dist < best) {
			best = dist;
			pick = i;
		}
	}
	return pick;
}

/* The file of the image that holds page-cache offset @off, or NULL. */
const struct osfile *os_file_at(const struct image *im, uint64_t off)
{
	size_t lo = 0, hi = im->nfiles, mid;

	while (lo < hi) {
		mid = (lo + hi) / 2;
		if (im->files[mid].off + round_up(im->files[mid].size, PAGE) <= off)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < im->nfiles && im->files[lo].off <= off)
		return &im->files[lo];
	return NULL;
}

/*
 * Picks what each guest makes its own: a configuration file of up to
 * CONF_MAX bytes, and with the rest of --per-guest-bytes one or two
 * executables of the image, the ones nearest half of it in size each.
 */
void os_own_files(struct demo *d)
{
	uint64_t rest, fp;

	d->conf_len = d->per_guest_bytes < CONF_MAX ? d->per_guest_bytes : CONF_MAX;
	d->conf_off = d->im.len;
	rest = d->per_guest_bytes - d->conf_len;
	d->nbin = 0;
	d->bin_bytes = 0;
	if (rest < PAGE || !d->im.nfiles)
		return;
	d->bin[0] = os_nearest(&d->im, rest / 2, (size_t)-1);
	fp = round_up(d->im.files[d->bin[0]].size, PAGE);
	d->bin_bytes = d->im.files[d->bin[0]].size;
	d->nbin = 1;
	if (fp + PAGE > rest || d->im.nfiles < 2)
		return;
	d->bin[1] = os_nearest(&d->im, rest - fp, d->bin[0]);
	d->bin_bytes += d->im.files[d->bin[1]].size;
	d->nbin = 2;
}

/* Lays out a guest's RAM; false (after saying why) when it does not fit. */
bool os_layout(struct demo *d)
{
	uint64_t pc_end;

	d->pc_base = LOW_BYTES;
	d->pc_pages = (d->im.len + round_up(d->conf_len, PAGE)) / PAGE;
	pc_end = d->pc_base + d->pc_pages * PAGE;
	d->heap_base = round_up(pc_end, MIB) + MIB;
	if (d->guest_bytes < d->heap_base + HEAP_MIN) {
		usage_error("--guest-size: the guests need at least %" PRIu64 " bytes for a %"
			    PRIu64 "-byte OS image, their own files and a heap",
			    d->heap_base + HEAP_MIN, d->im.len);
		return false;
	}
	d->heap_pages = (d->guest_bytes - d->heap_base) / PAGE;
	if (d->heap_pages > HEAP_MAX / PAGE)
		d->heap_pages = HEAP_MAX / PAGE;
	d->win_first = d->pc_base / PAGE;
	d->win_pages = (d->heap_base - d->pc_base) / PAGE + d->heap_pages;
	return true;
}
