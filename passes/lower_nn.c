/* lower_nn.c - Graph IR -> Kernel IR for the ops of convolutional
 * networks: convolution (im2col and batched matrix products), pooling and
 * dropout. The rest of the lowering is in lower.c. */
#include "passes/lower_internal.h"
#include "support/util.h"

#include <math.h>

#define BIN(op, x, y) kx_bin(a, KX_##op, x, y)
#define R(v) kx_real(a, v)

/* ---- convolution --------------------------------------------------------------------------
 * im2col and matrix products. The windows of image n are the columns of a
 * [C*kh*kw, Ho*Wo] matrix col[n] (a scratch buffer holds the batch's), and
 * each of these is a batched gemm over the images:
 *   y[n]    [F, Ho*Wo]       = w [F, C*kh*kw] @ col[n]
 *   dw      [F, C*kh*kw]     = sum_n dy[n] @ col[n]^T
 *   dcol[n] [C*kh*kw, Ho*Wo] = w^T @ dy[n]
 * after which the entries of dcol add into the pixels of dx they came
 * from (col2im). */

#define I(v) kx_int(a, v)

typedef struct ConvGeom {
    Kx *batch;              /* N, the number of images */
    int64_t c, h, w;        /* input channels and size */
    int64_t f, kh, kw;      /* filters and kernel size */
    int64_t sh, sw, ph, pw; /* strides and zero padding (attrs 0..3) */
    int64_t ho, wo;         /* output size */
} ConvGeom;

/* x: the input's type, y: the output's, attrs from n. */
static ConvGeom conv_geom(LowerCtx *c, const Node *n, const IrType *x, const IrType *y, int64_t kh, int64_t kw) {
    return (ConvGeom){.batch = lw_dim(c->a, x->dim[0]), .c = x->dim[1], .h = x->dim[2], .w = x->dim[3],
                      .f = y->dim[1], .kh = kh, .kw = kw, .sh = (int64_t)n->attr[0], .sw = (int64_t)n->attr[1],
                      .ph = (int64_t)n->attr[2], .pw = (int64_t)n->attr[3], .ho = y->dim[2], .wo = y->dim[3]};
}

/* A 1x1 kernel without stride or padding: the columns are x itself. */
static bool conv_is_pointwise(const ConvGeom *g) {
    return g->kh == 1 && g->kw == 1 && g->sh == 1 && g->sw == 1 && g->ph == 0 && g->pw == 0;
}

/* The type of the columns of the batch: [N, C*kh*kw, Ho*Wo]. */
static IrType columns_type(const Node *x, const ConvGeom *g) {
    return type_tensor(DT_F32, 3, (int64_t[]){x->type.dim[0], g->c * g->kh * g->kw, g->ho * g->wo});
}

/* x at coordinates idx where every condition holds, else 0. Outside, the
 * coordinates are 0: a backend may evaluate both sides of a select, and
 * must not read out of bounds. */
static Kx *guarded_load(LowerCtx *c, int x, Kx **idx, int rank, Kx *const *conds, int n) {
    Arena *a = c->a;
    Kx *clamped[IR_MAX_RANK];
    for (int i = 0; i < rank; i++) {
        clamped[i] = idx[i];
        for (int k = n - 1; k >= 0; k--) clamped[i] = kx_select(a, conds[k], clamped[i], I(0));
    }
    Kx *v = lw_load_at(c, x, clamped);
    for (int k = n - 1; k >= 0; k--) v = kx_select(a, conds[k], v, kx_real(a, 0));
    return v;
}

/* Conditions for the padded coordinate `pos` (window start o*s - p plus an
 * offset) to lie inside [0, size): only those the geometry can violate. */
static int inside_conds(Arena *a, Kx *pos, int64_t p, int64_t k, int64_t s, int64_t out, int64_t size,
                        Kx **conds) {
    int n = 0;
    if (p > 0) conds[n++] = kx_cmp(a, KX_GE, pos, I(0));
    if ((out - 1) * s - p + k - 1 >= size) conds[n++] = kx_cmp(a, KX_LT, pos, I(size));
    return n;
}

/* col[n, (c*kh + i)*kw + j, oh*Wo + ow] = x[n, c, oh*sh - ph + i, ow*sw - pw + j], 0 in the padding. */
static void im2col_kernel(LowerCtx *c, int id, const ConvGeom *g, int x, int col) {
    Arena *a = c->a;
    const IrType *tx = &lw_node(c, x)->type;
    Kx *v[6]; /* n, c, i, j, oh, ow */
    Kx *ext[6] = {g->batch, I(g->c), I(g->kh), I(g->kw), I(g->ho), I(g->wo)};
    KsBlock *body = lw_loops(c, lw_kernel(c, id), ext, 6, v, true);
    Kx *hh = BIN(ADD, BIN(SUB, BIN(MUL, v[4], I(g->sh)), I(g->ph)), v[2]);
    Kx *ww = BIN(ADD, BIN(SUB, BIN(MUL, v[5], I(g->sw)), I(g->pw)), v[3]);
    Kx *conds[4];
    int nc = inside_conds(a, hh, g->ph, g->kh, g->sh, g->ho, g->h, conds);
    nc += inside_conds(a, ww, g->pw, g->kw, g->sw, g->wo, g->w, conds + nc);
    Kx *value = guarded_load(c, x, (Kx *[]){v[0], v[1], hh, ww}, tx->rank, conds, nc);
    IrType tc = columns_type(lw_node(c, x), g);
    Kx *row = BIN(ADD, BIN(MUL, BIN(ADD, BIN(MUL, v[1], I(g->kh)), v[2]), I(g->kw)), v[3]);
    Kx *pixel = BIN(ADD, BIN(MUL, v[4], I(g->wo)), v[5]);
    ks_store(a, body, col, lw_index(a, &tc, (Kx *[]){v[0], row, pixel}), value, false);
}

/* The columns of input x for node id: im2col into a scratch buffer, or x
 * itself for a pointwise kernel. */
static int conv_columns(LowerCtx *c, int id, const ConvGeom *g, int x) {
    if (conv_is_pointwise(g)) return c->buf[x];
    int col = lw_scratch(c, id, "col", columns_type(lw_node(c, x), g));
    im2col_kernel(c, id, g, x, col);
    return col;
}

/* One operand of a batched product: its buffer, leading dimension, and the
 * distance between the matrices of consecutive samples (0: shared). */
typedef struct Operand {
    int buf;
    int64_t ld, stride;
} Operand;

/* C_n = op(A_n) op(B_n) for each sample n (or, with C's stride 0, their sum). */
static void gemm_batch(LowerCtx *c, int id, Kx *count, bool ta, bool tb, const int64_t mnk[3], Operand A,
                       Operand B, Operand C) {
    Arena *a = c->a;
    KGemm *g = &kprog_add_kernel(c->p, KK_GEMM, lw_name(c, id), id)->gemm;
    *g = (KGemm){.ta = ta, .tb = tb, .m = I(mnk[0]), .n = I(mnk[1]), .k = I(mnk[2]), .alpha = 1, .beta = 0,
                 .a = A.buf, .b = B.buf, .c = C.buf, .lda = I(A.ld), .ldb = I(B.ld), .ldc = I(C.ld),
                 .count = count, .stride_a = I(A.stride), .stride_b = I(B.stride), .stride_c = I(C.stride)};
}

/* y[n] [F, Ho*Wo] = w [F, C*kh*kw] @ col[n] */
void lower_conv2d(LowerCtx *c, int id) {
    const Node *n = lw_node(c, id);
    const IrType *tw = &lw_node(c, n->in[1])->type;
    ConvGeom g = conv_geom(c, n, &lw_node(c, n->in[0])->type, &n->type, tw->dim[2], tw->dim[3]);
    int64_t ckk = g.c * g.kh * g.kw, hw = g.ho * g.wo;
    int col = conv_columns(c, id, &g, n->in[0]);
    gemm_batch(c, id, g.batch, false, false, (int64_t[]){g.f, hw, ckk}, (Operand){c->buf[n->in[1]], ckk, 0},
               (Operand){col, hw, ckk * hw}, (Operand){c->buf[id], hw, g.f * hw});
}

/* dw [F, C*kh*kw] = sum_n dy[n] [F, Ho*Wo] @ col[n]^T */
void lower_conv2d_grad_weight(LowerCtx *c, int id) {
    const Node *n = lw_node(c, id);
    ConvGeom g = conv_geom(c, n, &lw_node(c, n->in[0])->type, &lw_node(c, n->in[1])->type, (int64_t)n->attr[4],
                           (int64_t)n->attr[5]);
    int64_t ckk = g.c * g.kh * g.kw, hw = g.ho * g.wo;
    int col = conv_columns(c, id, &g, n->in[0]);
    gemm_batch(c, id, g.batch, false, true, (int64_t[]){g.f, ckk, hw}, (Operand){c->buf[n->in[1]], hw, g.f * hw},
               (Operand){col, hw, ckk * hw}, (Operand){c->buf[id], ckk, 0});
}

/* The windows (of size k, stride s, over padding p, `out` of them) that
 * cover position `pos`: o in [lo, lo + count) where o*s - p <= pos <
 * o*s - p + k. lo = ceil((pos + p - k + 1) / s) with a truncating division,
 * which errs only where the result is clamped to 0 anyway. */
static void covering_windows(Arena *a, Kx *pos, int64_t p, int64_t k, int64_t s, int64_t out, Kx **lo,
                             Kx **count) {
    *lo = BIN(MAX, I(0), BIN(DIV, BIN(ADD, pos, I(p - k + s)), I(s)));
    Kx *hi = BIN(MIN, I(out - 1), BIN(DIV, BIN(ADD, pos, I(p)), I(s)));
    *count = BIN(MAX, I(0), BIN(ADD, BIN(SUB, hi, *lo), I(1)));
}

/* dx := 0 (a flat loop over the whole tensor). */
static void zero_kernel_output(LowerCtx *c, KsBlock *k, int id) {
    Arena *a = c->a;
    const IrType *t = &lw_node(c, id)->type;
    Kx *v;
    int64_t c0, c1; /* elements: c0 + c1 N */
    type_numel(t, &c0, &c1);
    Kx *size = BIN(ADD, BIN(MUL, kx_batch(a), I(c1)), I(c0));
    KsBlock *body = lw_loops(c, k, &size, 1, &v, true);
    ks_store(a, body, c->buf[id], v, kx_real(a, 0), false);
}

/* dx[n, c, oh*sh - ph + i, ow*sw - pw + j] += dcol[n, (c*kh + i)*kw + j, oh*Wo + ow]
 * for every entry of dcol, after dx := 0: a scatter, each entry of dcol
 * read once, the innermost loop along a row of both (a gather would find
 * the windows covering each pixel with divisions and loops of varying
 * length): what a processor core wants. Padding takes nothing: its
 * entries add 0 to a clamped pixel. */
static void col2im_scatter(LowerCtx *c, int id, const ConvGeom *g, int dcol, const IrType *tcol) {
    Arena *a = c->a;
    const IrType *tx = &lw_node(c, id)->type;
    KsBlock *k = lw_kernel(c, id);
    zero_kernel_output(c, k, id);
    Kx *v[6]; /* n, c, i, j, oh, ow; images and channels write apart, so only their loops run in parallel */
    Kx *ext[6] = {g->batch, I(g->c), I(g->kh), I(g->kw), I(g->ho), I(g->wo)};
    KsBlock *body = lw_loops(c, lw_loops(c, k, ext, 2, v, true), ext + 2, 4, v + 2, false);
    Kx *hh = BIN(ADD, BIN(SUB, BIN(MUL, v[4], I(g->sh)), I(g->ph)), v[2]);
    Kx *ww = BIN(ADD, BIN(SUB, BIN(MUL, v[5], I(g->sw)), I(g->pw)), v[3]);
    Kx *conds[4];
    int nc = inside_conds(a, hh, g->ph, g->kh, g->sh, g->ho, g->h, conds);
    nc += inside_conds(a, ww, g->pw, g->kw, g->sw, g->wo, g->w, conds + nc);
    Kx *row = BIN(ADD, BIN(MUL, BIN(ADD, BIN(MUL, v[1], I(g->kh)), v[2]), I(g->kw)), v[3]);
    Kx *pixel = BIN(ADD, BIN(MUL, v[4], I(g->wo)), v[5]);
    Kx *value = kx_load(c->p, dcol, lw_index(a, tcol, (Kx *[]){v[0], row, pixel}));
    for (int q = nc - 1; q >= 0; q--) {
        hh = kx_select(a, conds[q], hh, I(0));
        ww = kx_select(a, conds[q], ww, I(0));
        value = kx_select(a, conds[q], value, kx_real(a, 0));
    }
    ks_store(a, body, c->buf[id], lw_index(a, tx, (Kx *[]){v[0], v[1], hh, ww}), value, true);
}

/* dx[n, c, h, w] = sum of dcol[n, (c*kh + i)*kw + j, oh*Wo + ow] over the
 * windows (oh, ow) that cover (h, w), i = h + ph - oh*sh, j = w + pw - ow*sw:
 * a gather, each element of dx written by its own iteration: what a GPU
 * wants, one thread per element. */
static void col2im_gather(LowerCtx *c, int id, const ConvGeom *g, int dcol, const IrType *tcol) {
    Arena *a = c->a;
    const IrType *tx = &lw_node(c, id)->type;
    Kx *v[4], *o[2]; /* n, c, h, w; oh, ow */
    Kx *ext[4] = {g->batch, I(g->c), I(g->h), I(g->w)};
    KsBlock *body = lw_loops(c, lw_kernel(c, id), ext, 4, v, true);
    int s = kprog_new_local(c->p);
    ks_decl(a, body, s, kx_real(a, 0));
    Kx *lo[2], *count[2];
    covering_windows(a, v[2], g->ph, g->kh, g->sh, g->ho, &lo[0], &count[0]);
    covering_windows(a, v[3], g->pw, g->kw, g->sw, g->wo, &lo[1], &count[1]);
    KsBlock *inner = lw_loops(c, body, count, 2, o, false);
    Kx *oh = BIN(ADD, lo[0], o[0]), *ow = BIN(ADD, lo[1], o[1]);
    Kx *i = BIN(SUB, BIN(ADD, v[2], I(g->ph)), BIN(MUL, oh, I(g->sh)));
    Kx *j = BIN(SUB, BIN(ADD, v[3], I(g->pw)), BIN(MUL, ow, I(g->sw)));
    Kx *row = BIN(ADD, BIN(MUL, BIN(ADD, BIN(MUL, v[1], I(g->kh)), i), I(g->kw)), j);
    Kx *pixel = BIN(ADD, BIN(MUL, oh, I(g->wo)), ow);
    ks_update(a, inner, s, KX_ADD, kx_load(c->p, dcol, lw_index(a, tcol, (Kx *[]){v[0], row, pixel})));
    ks_store(a, body, c->buf[id], lw_index(a, tx, v), kx_local(a, s), false);
}

/* dcol[n] [C*kh*kw, Ho*Wo] = w^T @ dy[n], then col2im into dx (for a
 * pointwise kernel, dx[n] = w^T @ dy[n] directly). */
void lower_conv2d_grad_input(LowerCtx *c, int id) {
    const Node *n = lw_node(c, id);
    const Node *dy = lw_node(c, n->in[0]);
    const IrType *tw = &lw_node(c, n->in[1])->type;
    ConvGeom g = conv_geom(c, n, &n->type, &dy->type, tw->dim[2], tw->dim[3]);
    int64_t ckk = g.c * g.kh * g.kw, hw = g.ho * g.wo;
    IrType tcol = columns_type(n, &g);
    int dcol = conv_is_pointwise(&g) ? c->buf[id] : lw_scratch(c, id, "dcol", tcol);
    gemm_batch(c, id, g.batch, true, false, (int64_t[]){ckk, hw, g.f}, (Operand){c->buf[n->in[1]], ckk, 0},
               (Operand){c->buf[n->in[0]], hw, g.f * hw}, (Operand){dcol, hw, ckk * hw});
    if (conv_is_pointwise(&g)) return;
    if (c->m->opt.cuda)
        col2im_gather(c, id, &g, dcol, &tcol);
    else
        col2im_scatter(c, id, &g, dcol, &tcol);
}

/* ---- pooling ------------------------------------------------------------------------------
 * Windows of (kh, kw) moving by (sh, sw), without padding, on each channel:
 * the geometry of a convolution with as many filters as channels. */

/* x: the input's type, y: the output's; attrs kh kw sh sw from n. */
static ConvGeom pool_geom(LowerCtx *c, const Node *n, const IrType *x, const IrType *y) {
    return (ConvGeom){.batch = lw_dim(c->a, x->dim[0]), .c = x->dim[1], .h = x->dim[2], .w = x->dim[3],
                      .f = x->dim[1], .kh = (int64_t)n->attr[0], .kw = (int64_t)n->attr[1],
                      .sh = (int64_t)n->attr[2], .sw = (int64_t)n->attr[3], .ho = y->dim[2], .wo = y->dim[3]};
}

/* x[n, c, oh*sh + i, ow*sw + j]: element (i, j) of window (oh, ow). */
static Kx *window_load(LowerCtx *c, int x, const ConvGeom *g, Kx *n, Kx *ch, Kx *oh, Kx *ow, Kx *i, Kx *j) {
    Arena *a = c->a;
    Kx *h = BIN(ADD, BIN(MUL, oh, I(g->sh)), i), *w = BIN(ADD, BIN(MUL, ow, I(g->sw)), j);
    return lw_load_at(c, x, (Kx *[]){n, ch, h, w});
}

/* y[n, c, oh, ow] = the max / the mean of window (oh, ow) of channel c */
static void lower_pool(LowerCtx *c, int id, bool max) {
    Arena *a = c->a;
    const Node *n = lw_node(c, id);
    ConvGeom g = pool_geom(c, n, &lw_node(c, n->in[0])->type, &n->type);
    Kx *v[4], *k[2]; /* n, c, oh, ow; i, j */
    Kx *ext[4] = {g.batch, I(g.c), I(g.ho), I(g.wo)}, *kext[2] = {I(g.kh), I(g.kw)};
    KsBlock *body = lw_loops(c, lw_kernel(c, id), ext, 4, v, true);
    int s = kprog_new_local(c->p);
    ks_decl(a, body, s, kx_real(a, max ? -INFINITY : 0));
    KsBlock *inner = lw_loops(c, body, kext, 2, k, false);
    Kx *x = window_load(c, n->in[0], &g, v[0], v[1], v[2], v[3], k[0], k[1]);
    ks_update(a, inner, s, max ? KX_MAX : KX_ADD, x);
    Kx *value = max ? kx_local(a, s) : BIN(MUL, kx_local(a, s), kx_real(a, 1.0 / (double)(g.kh * g.kw)));
    ks_store(a, body, c->buf[id], lw_index(a, &n->type, v), value, false);
}

void lower_maxpool2d(LowerCtx *c, int id) { lower_pool(c, id, true); }
void lower_avgpool2d(LowerCtx *c, int id) { lower_pool(c, id, false); }

/* Opens, inside the loops over dx's elements v (n, c, h, w), the loops over
 * the windows that cover (h, w); sets oh, ow; returns their body. */
static KsBlock *covering_loops(LowerCtx *c, KsBlock *body, const ConvGeom *g, Kx *const *v, Kx **oh, Kx **ow) {
    Arena *a = c->a;
    Kx *lo[2], *count[2], *o[2];
    covering_windows(a, v[2], 0, g->kh, g->sh, g->ho, &lo[0], &count[0]);
    covering_windows(a, v[3], 0, g->kw, g->sw, g->wo, &lo[1], &count[1]);
    KsBlock *inner = lw_loops(c, body, count, 2, o, false);
    *oh = BIN(ADD, lo[0], o[0]);
    *ow = BIN(ADD, lo[1], o[1]);
    return inner;
}

/* dx[n, c, h, w] = sum of dy[n, c, oh, ow] / (kh kw) over the windows that cover (h, w) */
void lower_avgpool2d_grad(LowerCtx *c, int id) {
    Arena *a = c->a;
    const Node *n = lw_node(c, id), *dy = lw_node(c, n->in[0]);
    ConvGeom g = pool_geom(c, n, &n->type, &dy->type);
    Kx *v[4], *oh, *ow;
    Kx *ext[4] = {g.batch, I(g.c), I(g.h), I(g.w)};
    KsBlock *body = lw_loops(c, lw_kernel(c, id), ext, 4, v, true);
    int s = kprog_new_local(c->p);
    ks_decl(a, body, s, kx_real(a, 0));
    KsBlock *inner = covering_loops(c, body, &g, v, &oh, &ow);
    Kx *grad = kx_load(c->p, c->buf[n->in[0]], lw_index(a, &dy->type, (Kx *[]){v[0], v[1], oh, ow}));
    ks_update(a, inner, s, KX_ADD, grad);
    Kx *value = BIN(MUL, kx_local(a, s), kx_real(a, 1.0 / (double)(g.kh * g.kw)));
    ks_store(a, body, c->buf[id], lw_index(a, &n->type, v), value, false);
}

/* Max pooling's gradient where the windows tile the image (stride = size,
 * the usual 2x2 pooling): each pixel is in at most one window, so per
 * window, find its maximum, then the first element (row by row) equal to
 * it, and write dy there and 0 elsewhere. Pixels in no window (a last row
 * or column the windows don't reach) are zeroed first. */
static void maxpool2d_grad_tiled(LowerCtx *c, int id, const ConvGeom *g) {
    Arena *a = c->a;
    const Node *n = lw_node(c, id), *dy = lw_node(c, n->in[1]);
    KsBlock *k = lw_kernel(c, id);
    if (g->ho * g->kh != g->h || g->wo * g->kw != g->w) zero_kernel_output(c, k, id);
    Kx *v[4], *e[2]; /* n, c, oh, ow; i, j */
    Kx *ext[4] = {g->batch, I(g->c), I(g->ho), I(g->wo)}, *kext[2] = {I(g->kh), I(g->kw)};
    KsBlock *body = lw_loops(c, k, ext, 4, v, true);
    int best = kprog_new_local(c->p), first = kprog_new_local(c->p);
    Kx *size = kx_real(a, (double)(g->kh * g->kw));
    ks_decl(a, body, best, kx_real(a, -INFINITY));
    KsBlock *scan = lw_loops(c, body, kext, 2, e, false);
    ks_update(a, scan, best, KX_MAX, window_load(c, n->in[0], g, v[0], v[1], v[2], v[3], e[0], e[1]));
    ks_decl(a, body, first, size);
    scan = lw_loops(c, body, kext, 2, e, false);
    Kx *q = kx_toreal(a, BIN(ADD, BIN(MUL, e[0], I(g->kw)), e[1]));
    Kx *x = window_load(c, n->in[0], g, v[0], v[1], v[2], v[3], e[0], e[1]);
    ks_update(a, scan, first, KX_MIN, kx_select(a, kx_cmp(a, KX_EQ, x, kx_local(a, best)), q, size));
    scan = lw_loops(c, body, kext, 2, e, false);
    q = kx_toreal(a, BIN(ADD, BIN(MUL, e[0], I(g->kw)), e[1]));
    Kx *grad = kx_load(c->p, c->buf[n->in[1]], lw_index(a, &dy->type, v));
    Kx *h = BIN(ADD, BIN(MUL, v[2], I(g->kh)), e[0]), *w = BIN(ADD, BIN(MUL, v[3], I(g->kw)), e[1]);
    ks_store(a, scan, c->buf[id], lw_index(a, &n->type, (Kx *[]){v[0], v[1], h, w}),
             kx_select(a, kx_cmp(a, KX_EQ, q, kx_local(a, first)), grad, kx_real(a, 0)), false);
}

/* dx[n, c, h, w] = sum of dy[n, c, oh, ow] over the windows (oh, ow) whose
 * first maximum (row by row) is at (h, w). That is the case when every
 * element of the window is <= x[n, c, h, w], and those before it are <.
 * A gather: each element of dx is written by its own iteration. */
void lower_maxpool2d_grad(LowerCtx *c, int id) {
    Arena *a = c->a;
    const Node *n = lw_node(c, id), *dy = lw_node(c, n->in[1]);
    ConvGeom g = pool_geom(c, n, &n->type, &dy->type);
    if (g.sh == g.kh && g.sw == g.kw) {
        maxpool2d_grad_tiled(c, id, &g);
        return;
    }
    Kx *v[4], *k[2], *oh, *ow; /* n, c, h, w; i, j */
    Kx *ext[4] = {g.batch, I(g.c), I(g.h), I(g.w)}, *kext[2] = {I(g.kh), I(g.kw)};
    KsBlock *body = lw_loops(c, lw_kernel(c, id), ext, 4, v, true);
    int xv = kprog_new_local(c->p), s = kprog_new_local(c->p), beaten = kprog_new_local(c->p);
    ks_decl(a, body, xv, kx_load(c->p, c->buf[n->in[0]], lw_index(a, &n->type, v)));
    ks_decl(a, body, s, kx_real(a, 0));
    KsBlock *win = covering_loops(c, body, &g, v, &oh, &ow);
    /* (h, w) is element q of the window; `beaten` becomes 1 if another one wins */
    Kx *qi = BIN(SUB, v[2], BIN(MUL, oh, I(g.sh))), *qj = BIN(SUB, v[3], BIN(MUL, ow, I(g.sw)));
    Kx *q = BIN(ADD, BIN(MUL, qi, I(g.kw)), qj);
    ks_decl(a, win, beaten, kx_real(a, 0));
    KsBlock *inner = lw_loops(c, win, kext, 2, k, false);
    Kx *other = window_load(c, n->in[0], &g, v[0], v[1], oh, ow, k[0], k[1]), *mine = kx_local(a, xv);
    Kx *before = kx_cmp(a, KX_LT, BIN(ADD, BIN(MUL, k[0], I(g.kw)), k[1]), q);
    Kx *wins = kx_select(a, before, kx_cmp(a, KX_GE, other, mine), kx_cmp(a, KX_GT, other, mine));
    ks_update(a, inner, beaten, KX_MAX, kx_select(a, wins, kx_real(a, 1), kx_real(a, 0)));
    Kx *grad = kx_load(c->p, c->buf[n->in[1]], lw_index(a, &dy->type, (Kx *[]){v[0], v[1], oh, ow}));
    Kx *first = kx_cmp(a, KX_EQ, kx_local(a, beaten), kx_real(a, 0));
    ks_update(a, win, s, KX_ADD, kx_select(a, first, grad, kx_real(a, 0)));
    ks_store(a, body, c->buf[id], lw_index(a, &n->type, v), kx_local(a, s), false);
}

/* ---- dropout --------------------------------------------------------------------------------- */

/* The key of a dropout mask: rng.seed (24 bits), opt.step mod 2^24 and the
 * node's stream number (12 bits) packed into 60 bits, so that every (seed,
 * step, stream) has masks of its own and the key stays inside int64. */
static Kx *dropout_key(LowerCtx *c, const Node *n) {
    Arena *a = c->a;
    Kx *seed = kx_toint(a, BIN(MOD, lw_load_scalar(c, n->in[1]), R(1 << 24)));
    Kx *step = kx_toint(a, BIN(MOD, lw_load_scalar(c, n->in[2]), R(1 << 24)));
    Kx *key = BIN(ADD, BIN(MUL, seed, I((int64_t)1 << 24)), step);
    NNC_ASSERT(n->attr[1] >= 0 && n->attr[1] < IR_DROPOUT_STREAMS);
    return BIN(ADD, BIN(MUL, key, I(IR_DROPOUT_STREAMS)), I((int64_t)n->attr[1]));
}

/* y[i] = x[i] / (1 - rate) where rand(key, i) >= rate, else 0 (dropout, and
 * its gradient with dy for x). A uniform number and the rate compare alike
 * in f32 and f64: the numbers have 24 bits, and rounding the rate to f32
 * never moves it past one of them. */
void lower_dropout(LowerCtx *c, int id) {
    Arena *a = c->a;
    const Node *n = lw_node(c, id);
    double rate = n->attr[0];
    Kx *vars[IR_MAX_RANK], *i;
    KsBlock *body = lw_elementwise_loops(c, lw_kernel(c, id), &n->type, n->in, 1, vars, &i);
    Kx *keep = kx_cmp(a, KX_GE, kx_rand(a, dropout_key(c, n), i), R(rate));
    Kx *scaled = BIN(MUL, lw_load_at(c, n->in[0], vars), R(1 / (1 - rate)));
    ks_store(a, body, c->buf[id], i, kx_select(a, keep, scaled, R(0)), false);
}
