/* progress.h - how `nnc train` reports its epochs: a progress bar that
 * redraws in place on a terminal, one plain line per epoch in logs, only
 * the final scores (--quiet), or one JSON object per epoch (--json). */
#ifndef NNC_PROGRESS_H
#define NNC_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

typedef enum {
    REPORT_AUTO,  /* a bar when standard error is a terminal, else lines */
    REPORT_LINES, /* one line per epoch, and the header and final scores */
    REPORT_BAR,   /* the lines, with a bar on standard error during each epoch */
    REPORT_FINAL, /* the final scores only */
    REPORT_JSON,  /* one JSON object per epoch and one for the result, on standard output */
} ReportStyle;

/* What is known about one finished epoch. */
typedef struct EpochStats {
    int64_t epoch, last_epoch; /* 1-based epoch, of last_epoch */
    double loss;               /* mean training loss */
    bool has_val;
    double val_loss, val_accuracy; /* accuracy < 0: none */
    int nmetrics;
    const char *const *metric_names;
    const double *metrics;
    double seconds, samples_per_second;
} EpochStats;

typedef struct Progress {
    ReportStyle style; /* never REPORT_AUTO once started */
    FILE *bar;         /* where the bar is drawn (standard error) */
    int64_t epoch, last_epoch, total;
    double t_start, t_drawn;
    bool drawn; /* a bar is on the screen and must be cleared before other output */
} Progress;

/* Resolves REPORT_AUTO for this process's standard error. */
void progress_init(Progress *p, ReportStyle style);
/* Whether human-readable lines (header, epochs, notes) are printed. */
bool progress_lines(const Progress *p);

/* A bar for epoch `epoch` of `last_epoch` over `total` examples; `done` of
 * them seen so far with mean loss `loss`. Redraws at most ten times a
 * second, so a call per step costs a clock read. */
void progress_begin_epoch(Progress *p, int64_t epoch, int64_t last_epoch, int64_t total);
void progress_step(Progress *p, int64_t done, double loss);
/* Clears the bar and reports the finished epoch as the style asks. */
void progress_epoch(Progress *p, const EpochStats *s);

/* "  SET loss L  SET acc A  SET METRIC M ..." without a newline: a set's
 * scores as the epoch lines, `nnc eval` and the REPL print them
 * (accuracy < 0: none). */
void progress_print_scores(const char *set, double loss, double accuracy, int nmetrics,
                           const char *const *metric_names, const double *metrics);

/* The thread counts a run's programs ran on: fixed by --threads, or chosen
 * for each program and batch size (session_threads_report, threads.c). */
enum { THREADS_REPORTED = 16 };
typedef struct ThreadsReport {
    int fixed;   /* --threads N, or 0 */
    int cores;   /* what programs ran on before (or without) a choice */
    int n;       /* choices made */
    const char *program[THREADS_REPORTED];
    int64_t batch[THREADS_REPORTED];
    int threads[THREADS_REPORTED];
    double choose_seconds; /* the time all the choices took */
} ThreadsReport;

/* "threads: ..." on a line of its own: the counts chosen (not for --threads). */
void progress_print_threads(const ThreadsReport *t);

/* The final JSON object (--json): test scores and what training did. */
void progress_result_json(const char *test_set, double loss, double accuracy, int nmetrics,
                          const char *const *metric_names, const double *metrics, int64_t examples,
                          int64_t epochs, int64_t best_epoch, double seconds, const ThreadsReport *threads);

#endif
