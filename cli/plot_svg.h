/* plot_svg.h - line charts as a standalone SVG file: the training curves of
 * `nnc train --plot FILE.svg` and of the REPL's `plot FILE.svg`. */
#ifndef NNC_PLOT_SVG_H
#define NNC_PLOT_SVG_H

#include <stdbool.h>
#include <stddef.h>

typedef struct SvgSeries {
    const char *name;     /* in the legend */
    const double *x, *y;  /* n points; non-finite y values are left out */
    int n;
    const char *color;    /* an SVG colour, e.g. "#1f77b4" */
    bool markers;         /* a dot on each point (few points: per epoch) */
    bool thin;            /* a thin, faint line (many noisy points: per step) */
} SvgSeries;

typedef struct SvgChart {
    const char *title, *xlabel, *ylabel;
    const SvgSeries *series;
    int nseries;
    bool unit_range; /* y is a fraction: the axis stays within [0, 1] */
} SvgChart;

/* Writes `ncharts` charts side by side under `title` to `path`, through a
 * temporary file and a rename. false with a message in err on failure. */
bool svg_write_charts(const char *path, const char *title, const SvgChart *charts, int ncharts, char *err,
                      size_t errsize);

#endif
