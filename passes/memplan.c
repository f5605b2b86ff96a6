/* memplan.c - where the intermediates of a program live in the workspace.
 *
 * The lowering gives every value a region of its own in one workspace
 * arena, one after the other. Most values are needed for a few kernels
 * only: an activation from its layer until its gradient is taken, a
 * gradient until the update reads it. This pass lets values that are never
 * needed at the same time share memory:
 *
 *  1. liveness: the first and last kernel that uses each region (a view's
 *     uses are uses of the buffer it views; the result, read after the last
 *     kernel, lives to the end);
 *  2. in place: an elementwise kernel that reads an input at exactly the
 *     index it writes, where that input dies, writes over the input (its
 *     result becomes a view of the input, so every backend passes one
 *     pointer for both and no `noalias` promise is broken);
 *  3. packing: regions that live at the same time never overlap; each is
 *     placed at the lowest offset where it fits, largest first.
 *
 * Sizes are polynomials c0 + c1*N in the batch size N, and offsets must be
 * too (the backends compute addresses as ws + c0 + c1*N). Two regions live
 * at the same time must be apart for every N >= 1: one ends below the
 * other's start for every N, which for lines means at N = 1 and in slope.
 * A footprint rounds both coefficients up to 16 elements, so every region
 * stays on its own cache line for any N.
 *
 * The workspace is then the largest region end, a maximum of lines rather
 * than one (KProgram.workspace): a single line c0 + c1*N would have to
 * reach the peak at N = 1 and grow as fast as the largest activations,
 * which for a training step (weight gradients at the end, activations in
 * the middle) costs up to the sum of the two peaks instead of the larger. */
#include "passes/passes.h"
#include "support/util.h"

#include <stdlib.h>
#include <string.h>

/* ---- liveness ------------------------------------------------------------------------------ */

static void use_storage(KProgram *p, int buf, int kernel) {
    KBuf *b = &p->bufs[kprog_root_buf(p, buf)];
    if (b->live_first < 0) b->live_first = kernel;
    if (kernel > b->live_last) b->live_last = kernel;
}

typedef struct Use {
    KProgram *p;
    int kernel;
} Use;

static void use_access(void *ctx, int buf, const Kx *index, bool store) {
    (void)index, (void)store;
    Use *u = ctx;
    use_storage(u->p, buf, u->kernel);
}

void memplan_liveness(KProgram *p) {
    for (int i = 0; i < p->nbufs; i++) p->bufs[i].live_first = p->bufs[i].live_last = -1;
    for (int k = 0; k < p->nkernels; k++) {
        const Kernel *kn = &p->kernels[k];
        Use u = {p, k};
        if (kn->kind == KK_LOOP) {
            ks_visit_accesses(&kn->body, use_access, &u);
        } else {
            const KGemm *g = &kn->gemm;
            use_storage(p, g->a, k);
            use_storage(p, g->b, k);
            use_storage(p, g->c, k);
            const Kx *sizes[] = {g->m, g->n, g->k, g->lda, g->ldb, g->ldc, g->count, g->stride_a, g->stride_b,
                                 g->stride_c};
            for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) kx_visit_accesses(sizes[i], use_access, &u);
        }
    }
    /* The program function reads its result after the last kernel. */
    if (p->result_buf >= 0) use_storage(p, p->result_buf, p->nkernels);
}

/* ---- in place --------------------------------------------------------------------------------- */

enum { MAX_NEST = 8 };

/* The perfect loop nest of a kernel, outermost loop first. */
typedef struct Nest {
    int depth;
    int var[MAX_NEST];
    NPoly extent[MAX_NEST];
    const KsBlock *inner; /* the body of the innermost loop */
} Nest;

/* An index as sum_i coef[i] * var_i + constant over the loops of a nest. */
typedef struct Affine {
    NPoly coef[MAX_NEST];
    NPoly constant;
} Affine;

/* a * b, if it is still of the form c0 + c1*N. */
static bool npoly_mul(NPoly a, NPoly b, NPoly *out) {
    if (a.c1 && b.c1) return false;
    *out = (NPoly){a.c0 * b.c0, a.c0 * b.c1 + a.c1 * b.c0};
    return true;
}

static bool npoly_equal(NPoly a, NPoly b) { return a.c0 == b.c0 && a.c1 == b.c1; }

static bool affine_is_constant(const Affine *a, int depth) {
    for (int i = 0; i < depth; i++)
        if (a->coef[i].c0 || a->coef[i].c1) return false;
    return true;
}

static bool affine_of(const Kx *x, const Nest *nest, Affine *out) {
    memset(out, 0, sizeof *out);
    switch (x->op) {
    case KX_INT: out->constant.c0 = x->i; return true;
    case KX_BATCH: out->constant.c1 = 1; return true;
    case KX_VAR:
        for (int i = 0; i < nest->depth; i++)
            if (nest->var[i] == x->i) {
                out->coef[i].c0 = 1;
                return true;
            }
        return false;
    case KX_ADD: case KX_SUB: {
        Affine a, b;
        if (!affine_of(x->a, nest, &a) || !affine_of(x->b, nest, &b)) return false;
        int sign = x->op == KX_ADD ? 1 : -1;
        for (int i = 0; i < nest->depth; i++)
            out->coef[i] = (NPoly){a.coef[i].c0 + sign * b.coef[i].c0, a.coef[i].c1 + sign * b.coef[i].c1};
        out->constant = (NPoly){a.constant.c0 + sign * b.constant.c0, a.constant.c1 + sign * b.constant.c1};
        return true;
    }
    case KX_MUL: {
        Affine a, b;
        if (!affine_of(x->a, nest, &a) || !affine_of(x->b, nest, &b)) return false;
        if (affine_is_constant(&a, nest->depth)) {
            Affine t = a;
            a = b;
            b = t;
        }
        if (!affine_is_constant(&b, nest->depth)) return false;
        for (int i = 0; i < nest->depth; i++)
            if (!npoly_mul(a.coef[i], b.constant, &out->coef[i])) return false;
        return npoly_mul(a.constant, b.constant, &out->constant);
    }
    default: return false;
    }
}

static bool affine_equal(const Affine *a, const Affine *b, int depth) {
    for (int i = 0; i < depth; i++)
        if (!npoly_equal(a->coef[i], b->coef[i])) return false;
    return npoly_equal(a->constant, b->constant);
}

/* Whether an index visits every element of the nest's iteration space
 * exactly once: the row-major position of the loop variables (loops of
 * extent 1 do not matter). Then no iteration touches an element that
 * another one reads or writes. */
static bool affine_is_row_major(const Affine *a, const Nest *nest) {
    if (a->constant.c0 || a->constant.c1) return false;
    NPoly stride = {1, 0};
    for (int i = nest->depth - 1; i >= 0; i--) {
        if (npoly_equal(nest->extent[i], (NPoly){1, 0})) continue;
        if (!npoly_equal(a->coef[i], stride) || !npoly_mul(stride, nest->extent[i], &stride)) return false;
    }
    return true;
}

/* The kernel's loops when its top-level block is some scalar declarations
 * and one loop nest with nothing but declarations and stores innermost. */
static bool perfect_nest(const Kernel *kn, Nest *nest) {
    const KsBlock *blk = &kn->body;
    if (blk->n == 0 || blk->items[blk->n - 1]->kind != KS_FOR) return false;
    for (int i = 0; i + 1 < blk->n; i++)
        if (blk->items[i]->kind != KS_DECL) return false;
    const Ks *loop = blk->items[blk->n - 1];
    nest->depth = 0;
    for (;;) {
        Affine extent;
        if (nest->depth == MAX_NEST || !affine_of(loop->extent, nest, &extent) ||
            !affine_is_constant(&extent, nest->depth))
            return false;
        nest->var[nest->depth] = loop->var;
        nest->extent[nest->depth++] = extent.constant;
        blk = &loop->body;
        if (blk->n == 1 && blk->items[0]->kind == KS_FOR) loop = blk->items[0];
        else break;
    }
    for (int i = 0; i < blk->n; i++)
        if (blk->items[i]->kind != KS_DECL && blk->items[i]->kind != KS_STORE) return false;
    nest->inner = blk;
    return true;
}

/* How buffer `root` is read by an expression: `reads` counts its loads,
 * `matching` those at index `at`. */
typedef struct Reads {
    const KProgram *p;
    int root;
    const Affine *at;
    const Nest *nest;
    int reads, matching;
} Reads;

static void count_read(void *ctx, int buf, const Kx *index, bool store) {
    Reads *r = ctx;
    Affine at;
    if (store || kprog_root_buf(r->p, buf) != r->root) return;
    r->reads++;
    if (r->at && affine_of(index, r->nest, &at) && affine_equal(&at, r->at, r->nest->depth)) r->matching++;
}

/* The buffer that kernel k may compute in place of, or -1: its one store
 * writes, at a row-major index of its loops, a region born in this
 * kernel; the input dies here, is read at that same index only, and is at
 * least as large. The largest such input is chosen. */
static int in_place_input(const KProgram *p, int k, int *out_root) {
    const Kernel *kn = &p->kernels[k];
    Nest nest;
    if (kn->kind != KK_LOOP || !perfect_nest(kn, &nest)) return -1;
    const Ks *store = NULL;
    for (int i = 0; i < nest.inner->n; i++)
        if (nest.inner->items[i]->kind == KS_STORE) {
            if (store) return -1;
            store = nest.inner->items[i];
        }
    if (!store || store->accumulate || nest.inner->items[nest.inner->n - 1] != store) return -1;
    Affine at;
    if (!affine_of(store->index, &nest, &at) || !affine_is_row_major(&at, &nest)) return -1;
    int out = kprog_root_buf(p, store->buf);
    const KBuf *ob = &p->bufs[out];
    if (ob->kind != KB_WORK || ob->live_first != k) return -1;
    Reads own = {.p = p, .root = out, .nest = &nest};
    ks_visit_accesses(&kn->body, count_read, &own);
    if (own.reads) return -1;

    int best = -1;
    NPoly out_size = kbuf_footprint(ob), best_size = {0, 0};
    for (int b = 0; b < p->nbufs; b++) {
        const KBuf *in = &p->bufs[b];
        if (b == out || in->kind != KB_WORK || in->live_last != k || in->dtype != ob->dtype) continue;
        NPoly size = kbuf_footprint(in);
        if (size.c0 < out_size.c0 || size.c1 < out_size.c1) continue;
        Reads r = {.p = p, .root = b, .at = &at, .nest = &nest};
        ks_visit_accesses(&kn->body, count_read, &r);
        if (r.reads == 0 || r.matching != r.reads) continue;
        /* every read in the innermost body: the prologue runs before any
         * store, but a read there at another index would be unsafe */
        Reads inner = {.p = p, .root = b, .nest = &nest};
        ks_visit_accesses(nest.inner, count_read, &inner);
        if (inner.reads != r.reads) continue;
        if (best < 0 || size.c1 > best_size.c1 || (size.c1 == best_size.c1 && size.c0 > best_size.c0)) {
            best = b;
            best_size = size;
        }
    }
    *out_root = out;
    return best;
}

/* Results computed over dead inputs become views of them; the input's
 * storage then lives as long as the result. */
static void compute_in_place(KProgram *p) {
    for (int k = 0; k < p->nkernels; k++) {
        int out, in = in_place_input(p, k, &out);
        if (in < 0) continue;
        KBuf *ob = &p->bufs[out], *ib = &p->bufs[in];
        ob->kind = KB_VIEW;
        ob->view_of = in;
        ob->in_place = true;
        ob->offset = (NPoly){0, 0};
        ib->live_last = ob->live_last;
    }
}

/* ---- packing ----------------------------------------------------------------------------------- */

typedef struct Region {
    int buf;
    NPoly size; /* its footprint */
    int first, last;
    NPoly offset;
} Region;

/* a <= b for every N >= 1 (both are lines in N) */
static bool npoly_le(NPoly a, NPoly b) { return b.c1 >= a.c1 && b.c0 + b.c1 >= a.c0 + a.c1; }

static NPoly region_end(const Region *r) { return npoly_add(r->offset, r->size); }

/* Whether [offset, offset + size) lies wholly below or wholly above region
 * q for every N. */
static bool clear_of(NPoly offset, NPoly size, const Region *q) {
    return npoly_le(npoly_add(offset, size), q->offset) || npoly_le(region_end(q), offset);
}

/* The orders first fit places regions in. Largest first is the classic
 * rule, but a small region that lives long placed late may find no gap and
 * land above everything: above activations (lines in N) and weight
 * gradients (constants) at once, which costs the sum of the two peaks.
 * Placing the long-lived ones first, or the ones that take most memory
 * over time, avoids that; which order is best depends on the program. */
typedef enum { ORDER_SIZE, ORDER_LIFETIME, ORDER_AREA, ORDER_SLOPE, ORDER_BIRTH, ORDER_COUNT } Order;

/* The order and the batch size whose sizes it compares (fields, as qsort
 * takes no context). */
static Order sort_order;
static int64_t sort_batch;

static int64_t order_key(const Region *r) {
    int64_t size = npoly_eval(r->size, sort_batch), life = r->last - r->first + 1;
    switch (sort_order) {
    case ORDER_LIFETIME: return life;
    case ORDER_AREA: return size * life;
    case ORDER_SLOPE: return r->size.c1;
    case ORDER_BIRTH: return -r->first;
    default: return size;
    }
}

static int by_order(const void *pa, const void *pb) {
    const Region *a = pa, *b = pb;
    int64_t ka = order_key(a), kb = order_key(b);
    if (ka != kb) return ka > kb ? -1 : 1;
    int64_t sa = npoly_eval(a->size, sort_batch), sb = npoly_eval(b->size, sort_batch);
    if (sa != sb) return sa > sb ? -1 : 1;
    if (a->first != b->first) return a->first < b->first ? -1 : 1;
    return a->buf - b->buf;
}

/* Whether offset a is lower than b at batch ref (then at N = 1). */
static bool lower_at(NPoly a, NPoly b, int64_t ref) {
    int64_t ar = npoly_eval(a, ref), br = npoly_eval(b, ref);
    return ar < br || (ar == br && npoly_eval(a, 1) < npoly_eval(b, 1));
}

/* The lowest line at or above both a and b for every N >= 1: the larger
 * slope, through the larger value at N = 1. */
static NPoly npoly_above(NPoly a, NPoly b) {
    int64_t c1 = a.c1 > b.c1 ? a.c1 : b.c1, at1 = a.c0 + a.c1 > b.c0 + b.c1 ? a.c0 + a.c1 : b.c0 + b.c1;
    return (NPoly){at1 - c1, c1};
}

/* First fit in the order of r[] (sizes at batch `ref`): each region goes at the
 * lowest offset (at `ref`) that clears, for every N, the regions live at
 * the same time and already placed. Each offset tried starts at 0 or at
 * the end of one of these regions and, while it overlaps one, moves above
 * that one's end: the ends of regions that are not live together need not
 * be ordered, so the line that clears two of them may lie above both. It
 * moves up only, past one more region each time, so it stops. */
static void pack(Region *r, int n, int64_t ref) {
    Region **live = xmalloc(sizeof(Region *) * ((size_t)n + 1));
    for (int i = 0; i < n; i++) {
        int nlive = 0;
        for (int j = 0; j < i; j++)
            if (r[j].first <= r[i].last && r[i].first <= r[j].last) live[nlive++] = &r[j];
        NPoly best = {0, 0};
        for (int c = -1; c < nlive; c++) {
            NPoly at = c < 0 ? (NPoly){0, 0} : region_end(live[c]);
            for (bool moved = true; moved;) {
                moved = false;
                for (int j = 0; j < nlive; j++)
                    if (!clear_of(at, r[i].size, live[j])) {
                        at = npoly_above(at, region_end(live[j]));
                        moved = true;
                    }
            }
            if (c < 0 || lower_at(at, best, ref)) best = at;
        }
        r[i].offset = best;
    }
    free(live);
}

/* The batch sizes a plan is judged at: powers of 4 from 1 to 4096, and
 * the one the model trains with. */
enum { NJUDGED = 8 };

static void judged_batches(int64_t train_batch, int64_t *batches) {
    for (int i = 0; i < NJUDGED - 1; i++) batches[i] = (int64_t)1 << (2 * i);
    batches[NJUDGED - 1] = train_batch > 0 ? train_batch : 1;
}

/* The workspace of a packing: the largest region end, for each N. */
static int workspace_terms(const Region *r, int n, NPoly *terms) {
    for (int i = 0; i < n; i++) terms[i] = region_end(&r[i]);
    return npoly_envelope(terms, n);
}

static int64_t envelope_at(const NPoly *terms, int n, int64_t batch) {
    int64_t size = 0;
    for (int i = 0; i < n; i++)
        if (npoly_eval(terms[i], batch) > size) size = npoly_eval(terms[i], batch);
    return size;
}

/* What plans are judged by: the batch sizes, the lower bound at each, and
 * room for a plan's workspace terms. */
typedef struct Judge {
    int64_t batches[NJUDGED], bounds[NJUDGED];
    NPoly *terms;
} Judge;

/* A packing's worst ratio to the lower bound, and the batch size where. */
static double judge(const Judge *j, const Region *r, int n, int *worst) {
    int nterms = workspace_terms(r, n, j->terms);
    double ratio = 1;
    *worst = 0;
    for (int i = 0; i < NJUDGED; i++)
        if (j->bounds[i] > 0) {
            double q = (double)envelope_at(j->terms, nterms, j->batches[i]) / (double)j->bounds[i];
            if (q > ratio) {
                ratio = q;
                *worst = i;
            }
        }
    return ratio;
}

/* Improves a packing made in the order of best[] at batch `ref`: a region
 * that ends at the top where the plan is worst goes first instead, and the
 * new order is kept if its plan is better. A small value that lives long,
 * placed late, often lands above both the activations and the weight
 * gradients; placed first it takes a few bytes at the bottom. Each region
 * moves at most once. */
static double improve(const Judge *j, Region *best, Region *trial, int n, int64_t ref, double ratio) {
    bool *moved = xcalloc((size_t)n + 1, sizeof(bool)); /* by buffer position in best[] at the start */
    int *id = xmalloc(sizeof(int) * ((size_t)n + 1));   /* best[i]'s index in moved[] */
    for (int i = 0; i < n; i++) id[i] = i;
    int *tid = xmalloc(sizeof(int) * ((size_t)n + 1));
    for (bool better = true; better;) {
        better = false;
        int worst;
        judge(j, best, n, &worst);
        int64_t top = 0, at = j->batches[worst];
        for (int i = 0; i < n; i++)
            if (npoly_eval(region_end(&best[i]), at) > top) top = npoly_eval(region_end(&best[i]), at);
        for (int i = 1; i < n && !better; i++) {
            if (moved[id[i]] || npoly_eval(region_end(&best[i]), at) != top) continue;
            moved[id[i]] = true;
            trial[0] = best[i];
            tid[0] = id[i];
            for (int k = 0, t = 1; k < n; k++)
                if (k != i) {
                    trial[t] = best[k];
                    tid[t++] = id[k];
                }
            pack(trial, n, ref);
            int w;
            double q = judge(j, trial, n, &w);
            if (q < ratio) {
                ratio = q;
                memcpy(best, trial, sizeof(Region) * (size_t)n);
                memcpy(id, tid, sizeof(int) * (size_t)n);
                better = true;
            }
        }
    }
    free(moved);
    free(id);
    free(tid);
    return ratio;
}

void pass_memplan(KProgram *p, int64_t train_batch) {
    memplan_liveness(p);
    compute_in_place(p);
    Region *regions = xmalloc(sizeof(Region) * ((size_t)p->nbufs + 1));
    int n = 0;
    for (int b = 0; b < p->nbufs; b++) {
        KBuf *bf = &p->bufs[b];
        if (bf->kind != KB_WORK) continue;
        bf->offset = (NPoly){0, 0};
        NPoly size = kbuf_footprint(bf);
        if (bf->live_first >= 0 && (size.c0 || size.c1)) /* else it needs no memory */
            regions[n++] = (Region){.buf = b, .size = size, .first = bf->live_first, .last = bf->live_last};
    }

    /* First fit depends on its order and on the batch size it compares
     * sizes at; pack in each order at each judged size, keep the plan
     * whose worst ratio to the lower bound, over all of them, is the
     * smallest, and improve on it. */
    Judge j;
    judged_batches(train_batch, j.batches);
    for (int i = 0; i < NJUDGED; i++) j.bounds[i] = kprog_workspace_lower_bound(p, j.batches[i]);
    j.terms = xmalloc(sizeof(NPoly) * ((size_t)n + 1));
    Region *best = xmalloc(sizeof(Region) * ((size_t)n + 1));
    double best_ratio = 0;
    int64_t best_ref = 1;
    for (int trial = 0; trial < ORDER_COUNT * NJUDGED; trial++) {
        sort_order = (Order)(trial / NJUDGED);
        sort_batch = j.batches[trial % NJUDGED];
        qsort(regions, (size_t)n, sizeof *regions, by_order);
        pack(regions, n, sort_batch);
        int worst;
        double ratio = judge(&j, regions, n, &worst);
        if (trial == 0 || ratio < best_ratio) {
            best_ratio = ratio;
            best_ref = sort_batch;
            memcpy(best, regions, sizeof(Region) * (size_t)n);
        }
    }
    improve(&j, best, regions, n, best_ref, best_ratio);
    for (int i = 0; i < n; i++) p->bufs[best[i].buf].offset = best[i].offset;
    kprog_set_workspace(p, j.terms, workspace_terms(best, n, j.terms));
    free(regions);
    free(best);
    free(j.terms);
}
