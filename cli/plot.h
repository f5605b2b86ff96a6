/* plot.h - line charts as SVG files: training curves (loss, accuracy)
 * that a browser shows without anything else installed. */
#ifndef NNC_PLOT_H
#define NNC_PLOT_H

#include <stdbool.h>
#include <stddef.h>

/* One line: n points (x[i], y[i]). Non-finite y values are left out. */
typedef struct PlotSeries {
    const char *name;
    const double *x, *y;
    int n;
} PlotSeries;

/* One chart: its title, y-axis label and lines, drawn with a shared x axis. */
typedef struct PlotPanel {
    const char *title, *ylabel;
    const PlotSeries *series;
    int nseries;
} PlotPanel;

/* Writes the panels, one above the other, as a standalone SVG file.
 * false with a message in err on failure. */
bool plot_write_svg(const char *path, const PlotPanel *panels, int npanels, const char *xlabel, char *err,
                    size_t errsize);

#endif
