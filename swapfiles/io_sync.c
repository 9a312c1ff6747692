/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The synchronous engine: preadv/pwritev from the calling thread.
 *
 * Slots of one eviction batch are adjacent in their file, so the batch is
 * sorted by (file, offset) and each run of adjacent requests of the same
 * direction becomes one vectored call: a 64-page eviction is one 256 KiB
 * write, not 64 small ones. Requests that overlap in one batch are the
 * caller's bug; their order is then unspecified.
 *
 * The engine keeps no mutable state (priv is the swap set, whose file
 * descriptors are fixed), so any number of threads may run batches at once.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/uio.h>
#include <unistd.h>

#include "swap.h"

#define SYNC_STACK_IDX 64

static int sync_init(struct io_engine *e, struct swap *sw, void *store, size_t store_len)
{
	(void)store;
	(void)store_len;
	e->priv = sw;
	return 0;
}

static void sync_fini(struct io_engine *e)
{
	e->priv = NULL;
}

static int sync_cmp(const void *pa, const void *pb, void *arg)
{
	const struct io_req *r = arg;
	unsigned ia = *(const unsigned *)pa, ib = *(const unsigned *)pb;
	const struct io_req *a = &r[ia], *b = &r[ib];

	if (a->file != b->file)
		return a->file < b->file ? -1 : 1;
	if (a->off != b->off)
		return a->off < b->off ? -1 : 1;
	/* keep the caller's order among equal keys */
	return ia < ib ? -1 : ia > ib;
}

static int sync_adjacent(const struct io_req *p, const struct io_req *q)
{
	return p->file == q->file && p->op == q->op && p->off + p->len == q->off;
}

/*
 * Moves the run r[idx[0..cnt)] (adjacent, same file and direction) with as
 * few calls as the kernel allows, continuing partial transfers. When the
 * run fails part way, the requests not yet moved are retried one by one so
 * that each gets its own result.
 */
static void sync_span(struct swap *sw, struct io_req *r, const unsigned *idx, unsigned cnt)
{
	const struct io_req *first = &r[idx[0]];
	int fd = swap_fd(sw, first->file);
	struct iovec iov[IOV_MAX];
	uint64_t total = 0, done = 0, start;
	unsigned k;
	int err = 0;

	if (fd < 0) {
		for (k = 0; k < cnt; k++)
			r[idx[k]].res = -EBADF;
		return;
	}
	for (k = 0; k < cnt; k++)
		total += r[idx[k]].len;

	while (done < total) {
		unsigned niov = 0;
		ssize_t ret;

		for (k = 0, start = 0; k < cnt; start += r[idx[k]].len, k++) {
			uint64_t end = start + r[idx[k]].len;
			uint64_t skip = done > start ? done - start : 0;

			if (end <= done)
				continue;
			iov[niov].iov_base = (char *)r[idx[k]].buf + skip;
			iov[niov].iov_len = r[idx[k]].len - skip;
			niov++;
		}
		if (first->op == IO_WRITE)
			ret = pwritev(fd, iov, (int)niov, (off_t)(first->off + done));
		else
			ret = preadv(fd, iov, (int)niov, (off_t)(first->off + done));
		if (ret < 0) {
			if (errno == EINTR)
				continue;
			err = -errno;
			break;
		}
		if (ret == 0) {
			err = -EIO;	/* end of file: the slot was never written */
			break;
		}
		done += (uint64_t)ret;
	}

	for (k = 0, start = 0; k < cnt; start += r[idx[k]].len, k++) {
		if (!err || start + r[idx[k]].len <= done)
			r[idx[k]].res = 0;
		else if (cnt == 1)
			r[idx[k]].res = err;
		else
			sync_span(sw, r, &idx[k], 1);
	}
}

static int sync_run(struct io_engine *e, struct io_req *r, unsigned n)
{
	struct swap *sw = e->priv;
	unsigned stack_idx[SYNC_STACK_IDX], *idx = stack_idx;
	unsigned a, b;

	if (n > SYNC_STACK_IDX) {
		idx = malloc(n * sizeof(*idx));
		if (!idx) {
			/* no memory to sort: every request on its own */
			for (a = 0; a < n; a++)
				sync_span(sw, r, &a, 1);
			return 0;
		}
	}
	for (a = 0; a < n; a++)
		idx[a] = a;
	if (n > 1)
		qsort_r(idx, n, sizeof(*idx), sync_cmp, r);

	for (a = 0; a < n; a = b) {
		for (b = a + 1; b < n && b - a < IOV_MAX; b++)
			if (!sync_adjacent(&r[idx[b - 1]], &r[idx[b]]))
				break;
		sync_span(sw, r, idx + a, b - a);
	}
	if (idx != stack_idx)
		free(idx);
	return 0;
}

const struct io_ops io_sync_ops = {
	.name = "sync",
	.init = sync_init,
	.run = sync_run,
	.fini = sync_fini,
};
