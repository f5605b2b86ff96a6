/* progress.c - the reports of `nnc train` during training (progress.h).
 *
 * The bar goes to standard error, so that standard output keeps exactly the
 * lines a log or a script reads: the bar is cleared before each epoch line. */
#include "cli/progress.h"
#include "support/util.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <unistd.h>

enum { BAR_WIDTH = 24 };
#define REDRAW_SECONDS 0.1

void progress_init(Progress *p, ReportStyle style) {
    *p = (Progress){.style = style, .bar = stderr};
    if (style == REPORT_AUTO) p->style = isatty(fileno(stderr)) ? REPORT_BAR : REPORT_LINES;
}

bool progress_lines(const Progress *p) { return p->style == REPORT_LINES || p->style == REPORT_BAR; }

void progress_begin_epoch(Progress *p, int64_t epoch, int64_t last_epoch, int64_t total) {
    p->epoch = epoch;
    p->last_epoch = last_epoch;
    p->total = total;
    p->t_start = now_seconds();
    p->t_drawn = p->t_start - REDRAW_SECONDS; /* the first step draws the bar at once */
}

static void clear_bar(Progress *p) {
    if (!p->drawn) return;
    fputs("\r\033[K", p->bar);
    fflush(p->bar);
    p->drawn = false;
}

void progress_step(Progress *p, int64_t done, double loss) {
    if (p->style != REPORT_BAR) return;
    double now = now_seconds();
    if (now - p->t_drawn < REDRAW_SECONDS) return;
    p->t_drawn = now;
    double elapsed = now - p->t_start, rate = elapsed > 0 ? (double)done / elapsed : 0;
    double frac = p->total > 0 ? (double)done / (double)p->total : 1;
    int fill = (int)(frac * BAR_WIDTH + 0.5);
    char bar[BAR_WIDTH + 1];
    for (int i = 0; i < BAR_WIDTH; i++) bar[i] = i < fill ? '#' : '-';
    bar[BAR_WIDTH] = '\0';
    long eta = rate > 0 ? (long)((double)(p->total - done) / rate + 0.5) : 0;
    fprintf(p->bar, "\repoch %lld/%lld [%s] %3d%%  %.0f samples/s  loss %.4f  ETA %ld:%02ld\033[K",
            (long long)p->epoch, (long long)p->last_epoch, bar, (int)(frac * 100), rate, loss, eta / 60, eta % 60);
    fflush(p->bar);
    p->drawn = true;
}

void progress_print_scores(const char *set, double loss, double accuracy, int nmetrics,
                           const char *const *metric_names, const double *metrics) {
    printf("  %s loss %.4f", set, loss);
    if (accuracy >= 0) printf("  %s acc %.4f", set, accuracy);
    for (int k = 0; k < nmetrics; k++) printf("  %s %s %.4f", set, metric_names[k], metrics[k]);
}

static void print_line(const EpochStats *s) {
    printf("epoch %lld/%lld  loss %.4f", (long long)s->epoch, (long long)s->last_epoch, s->loss);
    if (s->has_val) progress_print_scores("val", s->val_loss, s->val_accuracy, s->nmetrics, s->metric_names, s->metrics);
    printf("  %.1f s  %.0f samples/s\n", s->seconds, s->samples_per_second);
}

/* Prints one JSON object on one line and frees it. */
static void print_json(cJSON *o) {
    char *text = cJSON_PrintUnformatted(o);
    if (text) puts(text);
    free(text);
    cJSON_Delete(o);
}

static void add_metrics(cJSON *o, const char *key, int n, const char *const *names, const double *values) {
    cJSON *m = cJSON_AddObjectToObject(o, key);
    for (int k = 0; k < n; k++) cJSON_AddNumberToObject(m, names[k], values[k]);
}

void progress_epoch(Progress *p, const EpochStats *s) {
    clear_bar(p);
    if (progress_lines(p)) print_line(s);
    else if (p->style == REPORT_JSON) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "type", "epoch");
        cJSON_AddNumberToObject(o, "epoch", (double)s->epoch);
        cJSON_AddNumberToObject(o, "epochs", (double)s->last_epoch);
        cJSON_AddNumberToObject(o, "train_loss", s->loss);
        if (s->has_val) {
            cJSON_AddNumberToObject(o, "val_loss", s->val_loss);
            if (s->val_accuracy >= 0) cJSON_AddNumberToObject(o, "val_accuracy", s->val_accuracy);
            add_metrics(o, "val_metrics", s->nmetrics, s->metric_names, s->metrics);
        }
        cJSON_AddNumberToObject(o, "samples_per_second", s->samples_per_second);
        cJSON_AddNumberToObject(o, "seconds", s->seconds);
        print_json(o);
    }
    fflush(stdout);
}

void progress_print_threads(const ThreadsReport *t) {
    if (!t->n) {
        printf("threads: %d, every core (too few calls to be worth timing others)\n", t->cores);
        return;
    }
    printf("threads:");
    for (int i = 0; i < t->n; i++)
        printf("%s %s at batch %lld on %d", i ? "," : "", t->program[i], (long long)t->batch[i], t->threads[i]);
    printf(" (the fastest, timed in %.0f ms; other calls on all %d cores)\n", t->choose_seconds * 1e3, t->cores);
}

/* "threads": {"fixed": N} or {"chosen": [{"program", "batch", "threads"}...], "choose_ms"}. */
static void add_threads(cJSON *o, const ThreadsReport *t) {
    cJSON *th = cJSON_AddObjectToObject(o, "threads");
    if (t->fixed) {
        cJSON_AddNumberToObject(th, "fixed", t->fixed);
        return;
    }
    cJSON_AddNumberToObject(th, "cores", t->cores);
    cJSON *list = cJSON_AddArrayToObject(th, "chosen");
    for (int i = 0; i < t->n; i++) {
        cJSON *c = cJSON_CreateObject();
        cJSON_AddStringToObject(c, "program", t->program[i]);
        cJSON_AddNumberToObject(c, "batch", (double)t->batch[i]);
        cJSON_AddNumberToObject(c, "threads", t->threads[i]);
        cJSON_AddItemToArray(list, c);
    }
    cJSON_AddNumberToObject(th, "choose_ms", t->choose_seconds * 1e3);
}

void progress_result_json(const char *test_set, double loss, double accuracy, int nmetrics,
                          const char *const *metric_names, const double *metrics, int64_t examples,
                          int64_t epochs, int64_t best_epoch, double seconds, const ThreadsReport *threads) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "result");
    cJSON_AddStringToObject(o, "test_set", test_set);
    cJSON_AddNumberToObject(o, "test_loss", loss);
    if (accuracy >= 0) cJSON_AddNumberToObject(o, "test_accuracy", accuracy);
    add_metrics(o, "test_metrics", nmetrics, metric_names, metrics);
    cJSON_AddNumberToObject(o, "test_examples", (double)examples);
    cJSON_AddNumberToObject(o, "epochs", (double)epochs);
    if (best_epoch > 0) cJSON_AddNumberToObject(o, "best_epoch", (double)best_epoch);
    cJSON_AddNumberToObject(o, "seconds", seconds);
    add_threads(o, threads);
    print_json(o);
    fflush(stdout);
}
