/* plot_svg.c - line charts as SVG (plot_svg.h).
 *
 * Each chart is a panel: a title, a frame with grid lines at "nice" ticks
 * (1, 2 or 5 times a power of ten) labelled on both axes, the axis names,
 * one path per series and a legend in the top right corner. The file is
 * plain SVG 1.1 with no scripts or external references, so any browser or
 * converter shows it the same way. */
#include "cli/plot_svg.h"
#include "support/util.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The geometry of one panel, in SVG user units. */
enum {
    PANEL_W = 480, PANEL_H = 340, TITLE_H = 36,
    LEFT = 64, RIGHT = 20, TOP = 34, BOTTOM = 50,
};

typedef struct Axis {
    double lo, hi, step;
} Axis;

/* A "nice" tick step (1, 2 or 5 times a power of ten) that cuts [lo, hi]
 * into about `want` intervals. */
static double nice_step(double lo, double hi, int want) {
    double span = hi - lo;
    if (!(span > 0) || want < 1) return 1;
    double raw = span / want, mag = pow(10, floor(log10(raw))), f = raw / mag;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * mag;
}

static Axis make_axis(double lo, double hi, int want) {
    if (!(hi > lo)) {
        double pad = fabs(lo) > 0 ? fabs(lo) * 0.1 : 0.5;
        lo -= pad, hi += pad;
    }
    Axis a = {.step = nice_step(lo, hi, want)};
    a.lo = floor(lo / a.step + 1e-9) * a.step;
    a.hi = ceil(hi / a.step - 1e-9) * a.step;
    return a;
}

/* Digits after the point that labels at multiples of `step` need. */
static int decimals(double step) {
    int d = (int)ceil(-log10(step) - 1e-9);
    return d < 0 ? 0 : d > 6 ? 6 : d;
}

static void put_escaped(StrBuf *sb, const char *s) {
    for (; *s; s++) {
        switch (*s) {
        case '&': sb_puts(sb, "&amp;"); break;
        case '<': sb_puts(sb, "&lt;"); break;
        case '>': sb_puts(sb, "&gt;"); break;
        case '"': sb_puts(sb, "&quot;"); break;
        default:
            /* control characters are not allowed in XML 1.0 */
            if ((unsigned char)*s >= 0x20 || *s == '\t') sb_putc(sb, *s);
        }
    }
}

static void text(StrBuf *sb, double x, double y, const char *anchor, const char *extra, const char *s) {
    sb_printf(sb, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\"%s>", x, y, anchor, extra);
    put_escaped(sb, s);
    sb_puts(sb, "</text>\n");
}

static void chart(StrBuf *sb, const SvgChart *c, double ox, double oy) {
    double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
    for (int s = 0; s < c->nseries; s++)
        for (int i = 0; i < c->series[s].n; i++) {
            double x = c->series[s].x[i], y = c->series[s].y[i];
            if (!isfinite(x) || !isfinite(y)) continue;
            xmin = fmin(xmin, x), xmax = fmax(xmax, x);
            ymin = fmin(ymin, y), ymax = fmax(ymax, y);
        }
    bool empty = !(xmin <= xmax);
    if (empty) xmin = 0, xmax = 1, ymin = 0, ymax = 1;
    xmin = floor(xmin);
    if (ymax > ymin) {
        double pad = (ymax - ymin) * 0.05;
        ymin -= pad, ymax += pad;
    }
    if (c->unit_range) ymin = fmax(ymin, 0), ymax = fmin(fmax(ymax, ymin), 1);
    Axis ax = make_axis(xmin, xmax, 6), ay = make_axis(ymin, ymax, 5);
    if (c->unit_range) ay.lo = fmax(ay.lo, 0), ay.hi = fmin(ay.hi, 1);

    double px = ox + LEFT, py = oy + TOP, pw = PANEL_W - LEFT - RIGHT, ph = PANEL_H - TOP - BOTTOM;
#define SX(x) (px + ((x) - ax.lo) / (ax.hi - ax.lo) * pw)
#define SY(y) (py + ph - ((y) - ay.lo) / (ay.hi - ay.lo) * ph)
    text(sb, ox + PANEL_W / 2.0, oy + 22, "middle", " font-size=\"15\" font-weight=\"bold\"", c->title);
    sb_printf(sb, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#fff\" stroke=\"#444\"/>\n", px,
              py, pw, ph);

    /* grid lines and tick labels */
    char label[64];
    int dx = decimals(ax.step), dy = decimals(ay.step);
    for (int k = 0;; k++) {
        double v = ax.lo + k * ax.step;
        if (v > ax.hi + ax.step * 1e-6) break;
        double x = SX(v);
        sb_printf(sb, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", x, py, x, py + ph);
        sb_printf(sb, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#444\"/>\n", x, py + ph, x,
                  py + ph + 5);
        snprintf(label, sizeof label, "%.*f", dx, fabs(v) < ax.step * 1e-6 ? 0.0 : v);
        text(sb, x, py + ph + 19, "middle", "", label);
    }
    for (int k = 0;; k++) {
        double v = ay.lo + k * ay.step;
        if (v > ay.hi + ay.step * 1e-6) break;
        double y = SY(v);
        sb_printf(sb, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", px, y, px + pw, y);
        sb_printf(sb, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#444\"/>\n", px - 5, y, px, y);
        snprintf(label, sizeof label, "%.*f", dy, fabs(v) < ay.step * 1e-6 ? 0.0 : v);
        text(sb, px - 8, y + 4, "end", "", label);
    }
    text(sb, px + pw / 2, py + ph + 40, "middle", "", c->xlabel);
    sb_printf(sb, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" transform=\"rotate(-90 %.1f %.1f)\">",
              ox + 16, py + ph / 2, ox + 16, py + ph / 2);
    put_escaped(sb, c->ylabel);
    sb_puts(sb, "</text>\n");
    if (empty) text(sb, px + pw / 2, py + ph / 2, "middle", " fill=\"#888\"", "(no data)");

    /* the series, clipped to the frame, then the legend over them */
    int drawn = 0;
    for (int s = 0; s < c->nseries; s++) {
        const SvgSeries *se = &c->series[s];
        bool any = false;
        sb_printf(sb, "<path fill=\"none\" stroke=\"%s\" stroke-width=\"%s\"%s clip-path=\"url(#frame%d)\" d=\"",
                  se->color, se->thin ? "1" : "2.2", se->thin ? " stroke-opacity=\"0.6\"" : "", (int)(ox / PANEL_W));
        bool pen_down = false;
        for (int i = 0; i < se->n; i++) {
            if (!isfinite(se->x[i]) || !isfinite(se->y[i])) {
                pen_down = false;
                continue;
            }
            sb_printf(sb, "%s%.1f %.1f ", pen_down ? "L" : "M", SX(se->x[i]), SY(se->y[i]));
            pen_down = any = true;
        }
        sb_puts(sb, "\"/>\n");
        if (se->markers)
            for (int i = 0; i < se->n; i++)
                if (isfinite(se->x[i]) && isfinite(se->y[i]))
                    sb_printf(sb, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\"/>\n", SX(se->x[i]),
                              SY(se->y[i]), se->color);
        drawn += any;
    }
    if (drawn) {
        /* sized for its longest name, in the corner that hides fewest points */
        size_t longest = 0;
        for (int s = 0; s < c->nseries; s++)
            if (strlen(c->series[s].name) > longest) longest = strlen(c->series[s].name);
        double lw = 44 + 7.0 * (double)longest, lh = 8 + 18.0 * drawn, lx = 0, ly = 0;
        int fewest = -1;
        for (int corner = 0; corner < 4; corner++) {
            double cx = corner & 1 ? px + 8 : px + pw - lw - 8, cy = corner & 2 ? py + ph - lh - 8 : py + 8;
            int hidden = 0;
            for (int s = 0; s < c->nseries; s++)
                for (int i = 0; i < c->series[s].n; i++) {
                    double x = SX(c->series[s].x[i]), y = SY(c->series[s].y[i]);
                    hidden += x >= cx && x <= cx + lw && y >= cy && y <= cy + lh;
                }
            if (fewest < 0 || hidden < fewest) fewest = hidden, lx = cx, ly = cy;
        }
        sb_printf(sb, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#fff\" fill-opacity=\"0.85\" "
                      "stroke=\"#aaa\"/>\n", lx, ly, lw, lh);
        int row = 0;
        for (int s = 0; s < c->nseries; s++) {
            const SvgSeries *se = &c->series[s];
            bool any = false;
            for (int i = 0; i < se->n && !any; i++) any = isfinite(se->x[i]) && isfinite(se->y[i]);
            if (!any) continue;
            double y = ly + 16 + 18.0 * row++;
            sb_printf(sb, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"%s\"/>\n",
                      lx + 8, y - 4, lx + 30, y - 4, se->color, se->thin ? "1.5" : "2.2");
            text(sb, lx + 36, y, "start", "", se->name);
        }
    }
#undef SX
#undef SY
}

bool svg_write_charts(const char *path, const char *title, const SvgChart *charts, int ncharts, char *err,
                      size_t errsize) {
    StrBuf sb = {0};
    int w = PANEL_W * (ncharts > 0 ? ncharts : 1), h = PANEL_H + TITLE_H;
    sb_printf(&sb,
              "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
              "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"%d\" height=\"%d\" "
              "viewBox=\"0 0 %d %d\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" font-size=\"12\">\n",
              w, h, w, h);
    sb_puts(&sb, "<title>");
    put_escaped(&sb, title);
    sb_puts(&sb, "</title>\n<defs>\n");
    for (int i = 0; i < ncharts; i++)
        sb_printf(&sb, "<clipPath id=\"frame%d\"><rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\"/></clipPath>\n", i,
                  i * PANEL_W + LEFT, TITLE_H + TOP, PANEL_W - LEFT - RIGHT, PANEL_H - TOP - BOTTOM);
    sb_printf(&sb, "</defs>\n<rect width=\"%d\" height=\"%d\" fill=\"#fafafa\"/>\n", w, h);
    text(&sb, w / 2.0, 24, "middle", " font-size=\"17\" font-weight=\"bold\"", title);
    for (int i = 0; i < ncharts; i++) chart(&sb, &charts[i], (double)i * PANEL_W, TITLE_H);
    sb_puts(&sb, "</svg>\n");
    bool ok = write_file_atomic(path, sb.data, sb.len) == 0;
    if (!ok) snprintf(err, errsize, "cannot write %s: %s", path, strerror(errno));
    sb_free(&sb);
    return ok;
}
