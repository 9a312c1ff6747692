/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * plot.c: --plot of `umlmem demo`, an SVG of memory over time through the
 * phases (frames in use, resident, sharing, swapped), from the sampler's
 * samples, written by hand so that it needs nothing.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CLI_CMD "demo"
#include "cli.h"
#include "demo.h"

/* ------------------------------------------------------------------------ */
/* Plot                                                                     */
/* ------------------------------------------------------------------------ */

/* A round step (1, 2 or 5 times a power of ten) giving about @want ticks. */
static double nice_step(double range, int want)
{
	double raw = range / want, mag, f;

	if (raw <= 0)
		return 1;
	mag = pow(10, floor(log10(raw)));
	f = raw / mag;
	return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
}

struct series {
	const char *label;
	const char *color;
	const char *dash;
	size_t field;		/* offsetof into struct sample */
};

static uint64_t sample_field(const struct sample *s, size_t field)
{
	uint64_t v;

	memcpy(&v, (const char *)s + field, sizeof(v));
	return v;
}

bool plot_write(struct demo *d)
{
	static const struct series ser[] = {
		{ "resident guest pages", "#1f77b4", NULL, offsetof(struct sample, resident) },
		{ "saved by sharing", "#2ca02c", NULL, offsetof(struct sample, sharing) },
		{ "swapped", "#d62728", NULL, offsetof(struct sample, swapped) },
		{ "frames in use", "#ff7f0e", NULL, offsetof(struct sample, frames_used) },
		{ "free frames", "#7f7f7f", "6,3", offsetof(struct sample, frames_free) },
		{ "read ahead, untouched", "#9467bd", "2,2", offsetof(struct sample, frames_cached) },
	};
	const double W = 1000, H = 560, L = 80, R = 210, T = 70, B = 60;
	const double pw = W - L - R, ph = H - T - B;
	double tmax = 1, ymax = (double)d->budget_bytes, unit, step, v, x, y;
	const char *uname;
	char b1[16], b2[16], b3[16];
	size_t i, k;
	FILE *f;

	for (i = 0; i < d->nsamples; i++) {
		if (d->samples[i].t > tmax)
			tmax = d->samples[i].t;
		for (k = 0; k < sizeof(ser) / sizeof(ser[0]); k++) {
			v = (double)sample_field(&d->samples[i], ser[k].field) * PAGE;
			if (v > ymax)
				ymax = v;
		}
	}
	unit = ymax >= 2.0 * GIB ? (double)GIB : (double)MIB;
	uname = ymax >= 2.0 * GIB ? "GiB" : "MiB";
	step = nice_step(ymax / unit, 6);
	ymax = ceil(ymax / unit / step) * step * unit;

	f = fopen(d->plot, "w");
	if (!f) {
		demo_say(d, "--plot %s: %s", d->plot, strerror(errno));
		return false;
	}
	fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
		"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
		"viewBox=\"0 0 %.0f %.0f\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\">\n",
		W, H, W, H);
	fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
	fprintf(f, "<text x=\"%.0f\" y=\"28\" font-size=\"18\" font-weight=\"bold\">"
		"umlmem demo: %u guests \xc3\x97 %s on a %s budget, merging %s</text>\n",
		L, d->guests, fmt_bytes(b1, sizeof(b1), d->guest_bytes),
		fmt_bytes(b2, sizeof(b2), d->budget_bytes), d->dedup ? "on" : "off");
	fprintf(f, "<text x=\"%.0f\" y=\"50\" font-size=\"13\" fill=\"#444\">"
		"%s OS image per guest, %s nominal in all (the 2009 KSM run: 52 \xc3\x97 1 GiB on 16 GiB); "
		"%s</text>\n", L, fmt_bytes(b1, sizeof(b1), d->im.len),
		fmt_bytes(b3, sizeof(b3), (uint64_t)d->guests * d->guest_bytes),
		demo_verified(d) ? "every byte verified" : "NOT verified");

	/* grid and axes */
	for (v = 0; v <= ymax / unit + step / 2; v += step) {
		y = T + ph - v * unit / ymax * ph;
		fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e4e4e4\"/>\n",
			L, y, L + pw, y);
		fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\" text-anchor=\"end\">%g</text>\n",
			L - 6, y + 4, v);
	}
	step = nice_step(tmax, 10);
	for (v = 0; v <= tmax + 1e-9; v += step) {
		x = L + v / tmax * pw;
		fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#444\"/>\n",
			x, T + ph, x, T + ph + 5);
		fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\" text-anchor=\"middle\">%g</text>\n",
			x, T + ph + 19, v);
	}
	fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#444\"/>\n",
		L, T + ph, L + pw, T + ph);
	fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#444\"/>\n",
		L, T, L, T + ph);
	fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"13\" text-anchor=\"middle\">time (s)</text>\n",
		L + pw / 2, H - 14);
	fprintf(f, "<text x=\"20\" y=\"%.1f\" font-size=\"13\" text-anchor=\"middle\" "
		"transform=\"rotate(-90 20 %.1f)\">%s</text>\n", T + ph / 2, T + ph / 2, uname);

	/* phase markers; a label that would run into the previous one goes a
	   line lower */
	for (i = 0, k = 0, v = -1e9; i < d->nmarks; i++) {
		if (d->marks[i].ph == PH_DONE)
			continue;
		x = L + d->marks[i].t / tmax * pw;
		k = x - v < 60 ? k + 1 : 0;
		v = x;
		fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#555\" "
			"stroke-dasharray=\"2,4\"/>\n", x, T, x, T + ph);
		fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\" fill=\"#333\">%s</text>\n",
			x + 4, T + 14 + 14.0 * (double)k, phase_name[d->marks[i].ph]);
	}

	/* the budget, then the series */
	y = T + ph - (double)d->budget_bytes / ymax * ph;
	fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\" "
		"stroke-width=\"1.5\" stroke-dasharray=\"8,4\"/>\n", L, y, L + pw, y);
	for (k = 0; k < sizeof(ser) / sizeof(ser[0]); k++) {
		fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s%s%s points=\"",
			ser[k].color, ser[k].dash ? " stroke-dasharray=\"" : "",
			ser[k].dash ? ser[k].dash : "", ser[k].dash ? "\"" : "");
		for (i = 0; i < d->nsamples; i++) {
			x = L + d->samples[i].t / tmax * pw;
			y = T + ph - (double)sample_field(&d->samples[i], ser[k].field) * PAGE / ymax * ph;
			fprintf(f, "%.1f,%.1f ", x, y);
		}
		fprintf(f, "\"/>\n");
	}

	/* legend */
	x = L + pw + 16;
	for (k = 0; k <= sizeof(ser) / sizeof(ser[0]); k++) {
		const char *label = k < sizeof(ser) / sizeof(ser[0]) ? ser[k].label : "budget";
		const char *color = k < sizeof(ser) / sizeof(ser[0]) ? ser[k].color : "black";
		const char *dash = k < sizeof(ser) / sizeof(ser[0]) ? ser[k].dash : "8,4";

		y = T + 10 + 24.0 * (double)k;
		fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
			"stroke-width=\"2\"%s%s%s/>\n", x, y, x + 26, y, color,
			dash ? " stroke-dasharray=\"" : "", dash ? dash : "", dash ? "\"" : "");
		fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"13\">%s</text>\n",
			x + 32, y + 4, label);
	}
	fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" fill=\"#555\">"
		"budget %s</text>\n", x, T + 10 + 24.0 * 7 + 4,
		fmt_bytes(b1, sizeof(b1), d->budget_bytes));
	fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" fill=\"#555\">"
		"peak frames in use %s</text>\n", x, T + 10 + 24.0 * 7 + 20,
		fmt_bytes(b1, sizeof(b1), d->peak_frames * PAGE));
	fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" fill=\"#555\">"
		"sampled every %d ms</text>\n", x, T + 10 + 24.0 * 7 + 36, SAMPLE_MS);
	fprintf(f, "</svg>\n");
	if (fclose(f)) {
		demo_say(d, "--plot %s: %s", d->plot, strerror(errno));
		return false;
	}
	return true;
}
