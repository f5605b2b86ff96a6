/* plot.c - SVG line charts. Each panel has axes with "nice" ticks (1, 2 or
 * 5 times a power of ten), a polyline per series, a dot per point (a single
 * point makes no line) and a legend. Text is escaped for XML. */
#include "cli/plot.h"
#include "support/util.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

enum { WIDTH = 720, PANEL_H = 300, LEFT = 70, RIGHT = 150, TOP = 40, BOTTOM = 50 };

static const char *const colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"};

static void put_escaped(StrBuf *sb, const char *s) {
    for (; s && *s; s++) {
        switch (*s) {
        case '<': sb_puts(sb, "&lt;"); break;
        case '>': sb_puts(sb, "&gt;"); break;
        case '&': sb_puts(sb, "&amp;"); break;
        case '"': sb_puts(sb, "&quot;"); break;
        default: sb_putc(sb, *s);
        }
    }
}

/* A tick step of 1, 2 or 5 times a power of ten giving about 5 ticks. */
static double nice_step(double span) {
    if (!(span > 0)) return 1;
    double raw = span / 5, p = pow(10, floor(log10(raw))), f = raw / p;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
}

static void range_of(const PlotPanel *p, bool xs, double *lo, double *hi) {
    *lo = INFINITY, *hi = -INFINITY;
    for (int s = 0; s < p->nseries; s++)
        for (int i = 0; i < p->series[s].n; i++) {
            double v = xs ? p->series[s].x[i] : p->series[s].y[i];
            if (!isfinite(p->series[s].y[i]) || !isfinite(v)) continue;
            if (v < *lo) *lo = v;
            if (v > *hi) *hi = v;
        }
    if (!(*lo <= *hi)) *lo = 0, *hi = 1;
    if (*hi - *lo < 1e-12) *lo -= 0.5, *hi += 0.5;
}

static void panel(StrBuf *sb, const PlotPanel *p, int y0, double xlo, double xhi, const char *xlabel) {
    double ylo, yhi;
    range_of(p, false, &ylo, &yhi);
    double ystep = nice_step(yhi - ylo), xstep = nice_step(xhi - xlo);
    ylo = floor(ylo / ystep) * ystep, yhi = ceil(yhi / ystep) * ystep;
    int pw = WIDTH - LEFT - RIGHT, ph = PANEL_H - TOP - BOTTOM, top = y0 + TOP;
#define PX(x) (LEFT + ((x) - xlo) / (xhi - xlo) * pw)
#define PY(y) (top + ph - ((y) - ylo) / (yhi - ylo) * ph)
    sb_printf(sb, "<text x=\"%d\" y=\"%d\" font-size=\"15\" font-weight=\"bold\">", LEFT, y0 + 24);
    put_escaped(sb, p->title);
    sb_puts(sb, "</text>\n");
    sb_printf(sb, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#444\"/>\n", LEFT, top, pw,
              ph);
    for (double v = ylo; v <= yhi + ystep * 1e-6; v += ystep) {
        double y = PY(v);
        sb_printf(sb, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", LEFT, y, LEFT + pw, y);
        sb_printf(sb, "<text x=\"%d\" y=\"%.1f\" font-size=\"11\" text-anchor=\"end\">%g</text>\n", LEFT - 6, y + 4,
                  fabs(v) < ystep * 1e-6 ? 0.0 : v);
    }
    for (double v = ceil(xlo / xstep) * xstep; v <= xhi + xstep * 1e-6; v += xstep) {
        double x = PX(v);
        sb_printf(sb, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#ddd\"/>\n", x, top, x, top + ph);
        sb_printf(sb, "<text x=\"%.1f\" y=\"%d\" font-size=\"11\" text-anchor=\"middle\">%g</text>\n", x, top + ph + 16,
                  fabs(v) < xstep * 1e-6 ? 0.0 : v);
    }
    sb_printf(sb, "<text x=\"%d\" y=\"%d\" font-size=\"12\" text-anchor=\"middle\">", LEFT + pw / 2, top + ph + 36);
    put_escaped(sb, xlabel);
    sb_printf(sb, "</text>\n<text x=\"16\" y=\"%d\" font-size=\"12\" text-anchor=\"middle\" transform=\"rotate(-90 16 %d)\">",
              top + ph / 2, top + ph / 2);
    put_escaped(sb, p->ylabel);
    sb_puts(sb, "</text>\n");
    for (int s = 0; s < p->nseries; s++) {
        const PlotSeries *ser = &p->series[s];
        const char *color = colors[s % (int)(sizeof colors / sizeof colors[0])];
        sb_printf(sb, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", color);
        for (int i = 0; i < ser->n; i++)
            if (isfinite(ser->y[i])) sb_printf(sb, "%.1f,%.1f ", PX(ser->x[i]), PY(ser->y[i]));
        sb_puts(sb, "\"/>\n");
        for (int i = 0; i < ser->n; i++)
            if (isfinite(ser->y[i]))
                sb_printf(sb, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n", PX(ser->x[i]), PY(ser->y[i]),
                          color);
        int ly = top + 14 + 20 * s;
        sb_printf(sb, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"%s\" stroke-width=\"2\"/>\n",
                  LEFT + pw + 12, ly, LEFT + pw + 36, ly, color);
        sb_printf(sb, "<text x=\"%d\" y=\"%d\" font-size=\"12\">", LEFT + pw + 42, ly + 4);
        put_escaped(sb, ser->name);
        sb_puts(sb, "</text>\n");
    }
#undef PX
#undef PY
}

bool plot_write_svg(const char *path, const PlotPanel *panels, int npanels, const char *xlabel, char *err,
                    size_t errsize) {
    /* one x range for every panel, so the charts line up */
    double xlo = INFINITY, xhi = -INFINITY;
    for (int k = 0; k < npanels; k++) {
        double lo, hi;
        range_of(&panels[k], true, &lo, &hi);
        if (lo < xlo) xlo = lo;
        if (hi > xhi) xhi = hi;
    }
    StrBuf sb = {0};
    sb_printf(&sb, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                   "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
                   "font-family=\"sans-serif\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
              WIDTH, PANEL_H * npanels, WIDTH, PANEL_H * npanels);
    for (int k = 0; k < npanels; k++) panel(&sb, &panels[k], k * PANEL_H, xlo, xhi, xlabel);
    sb_puts(&sb, "</svg>\n");
    bool ok = write_file_atomic(path, sb.data, sb.len) == 0;
    if (!ok) snprintf(err, errsize, "cannot write %s: %s", path, strerror(errno));
    sb_free(&sb);
    return ok;
}
