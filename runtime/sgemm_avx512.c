/* sgemm_avx512.c - f32 matrix products with AVX-512 for the shapes that
 * neural networks' small layers produce and that BLAS libraries serve
 * poorly: a narrow C (a 10-class output layer: n = 10), a single row (a
 * forward pass at batch 1) or a small product overall. For those, BLAS's
 * packing and blocking cost more than the arithmetic, and a library built
 * for AVX2 leaves half of an AVX-512 core's width unused.
 *
 * The kernel holds a block of R rows x NV vectors of 16 columns of C in
 * registers (at most 24 accumulators), and for each of the k products
 * loads NV vectors of op(B)'s row and adds op(A)(i, k) * that row to each of
 * the R rows. op(B) is read in place when it is not transposed (its rows
 * are contiguous; the last vector of a panel is masked) and packed, per
 * panel of columns and block of KC products, into a zero-padded buffer when
 * it is. The products are split in blocks of KC so that the part of op(B)
 * being reused across row blocks stays in the core's caches. */
#include "runtime/sgemm_avx512.h"
#include "runtime/nnrt.h"

#ifdef NNRT_SGEMM_AVX512
#include <immintrin.h>

#include <stdbool.h>

enum { KC = 256, NV_MAX = 4, LANES = 16 };

typedef struct Product {
    bool ta, tb;
    int64_t m, n, k;
    float alpha, beta;
    const float *a;
    int64_t lda;
    const float *b;
    int64_t ldb;
    float *c;
    int64_t ldc;
    bool c_transposed; /* C(i, j) is stored at c[j * ldc + i] */
} Product;

/* op(B)'s rows k0 .. k0 + kc, columns j0 .. j0 + 16 NV, for a block. */
typedef struct Panel {
    const float *row0; /* element (k0, j0) */
    int64_t stride;    /* from one row to the next */
    __mmask16 last;    /* lanes of the panel's last vector that C has */
} Panel;

#define KERNEL __attribute__((target("avx512f,fma")))
#define INLINE_KERNEL static inline __attribute__((always_inline, target("avx512f,fma")))

/* C's rows i0 .. i0 + R, the panel's columns, over products k0 .. k0 + kc;
 * `first`: the block of products that applies beta (later ones add). R and
 * NV are constants where this is inlined, so acc lives in registers. */
INLINE_KERNEL void block(const Product *p, int R, int NV, int64_t i0, int64_t j0, const Panel *panel, int64_t k0,
                         int64_t kc, bool first) {
    __m512 acc[12][NV_MAX];
#pragma GCC unroll 12
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) acc[r][v] = _mm512_setzero_ps();

    /* op(A)(i, k) sits at a + i * a_row + k * a_col. */
    int64_t a_row = p->ta ? 1 : p->lda, a_col = p->ta ? p->lda : 1;
    const float *a = p->a + i0 * a_row + k0 * a_col;
    const float *brow = panel->row0;
    for (int64_t kk = 0; kk < kc; kk++, a += a_col, brow += panel->stride) {
        __m512 b[NV_MAX];
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++)
            b[v] = v == NV - 1 ? _mm512_maskz_loadu_ps(panel->last, brow + LANES * v)
                               : _mm512_loadu_ps(brow + LANES * v);
#pragma GCC unroll 12
        for (int r = 0; r < R; r++) {
            __m512 x = _mm512_set1_ps(a[r * a_row]);
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) acc[r][v] = _mm512_fmadd_ps(x, b[v], acc[r][v]);
        }
    }

    __m512 alpha = _mm512_set1_ps(p->alpha), beta = _mm512_set1_ps(first ? p->beta : 1.0f);
    bool read_c = !first || p->beta != 0; /* beta = 0 ignores what C held, NaN included */
    /* stored transposed, a vector of C's row goes down a column: lane l
     * at l * ldc from the first */
    __m512i down = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                      _mm512_set1_epi32((int)p->ldc));
#pragma GCC unroll 12
    for (int r = 0; r < R; r++) {
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) {
            __mmask16 lanes = v == NV - 1 ? panel->last : (__mmask16)0xFFFF;
            __m512 x = _mm512_mul_ps(alpha, acc[r][v]);
            if (p->c_transposed) {
                float *c = p->c + (j0 + LANES * v) * p->ldc + i0 + r;
                if (read_c)
                    x = _mm512_fmadd_ps(beta, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), lanes, down, c, 4), x);
                _mm512_mask_i32scatter_ps(c, lanes, down, x, 4);
            } else {
                float *c = p->c + (i0 + r) * p->ldc + j0 + LANES * v;
                if (read_c) x = _mm512_fmadd_ps(beta, _mm512_maskz_loadu_ps(lanes, c), x);
                _mm512_mask_storeu_ps(c, lanes, x);
            }
        }
    }
}

/* The rows of C a block holds, for a panel of NV vectors: as many as keep
 * the accumulators and op(B)'s row within the 32 vector registers. */
static const int block_rows[NV_MAX + 1] = {0, 12, 8, 6, 5};

#define CASE(R, NV)                                                                                      \
    case R: block(p, R, NV, i0, j0, panel, k0, kc, first); break;

/* Every block of rows of C for one panel and one block of products. */
#define ROW_BLOCKS(NV, ...)                                                                              \
    KERNEL static void row_blocks_##NV(const Product *p, int64_t j0, const Panel *panel, int64_t k0,      \
                                       int64_t kc, bool first) {                                         \
        for (int64_t i0 = 0; i0 < p->m; i0 += block_rows[NV]) {                                          \
            int64_t rows = p->m - i0 < block_rows[NV] ? p->m - i0 : block_rows[NV];                      \
            switch (rows) { __VA_ARGS__ }                                                                \
        }                                                                                                \
    }

ROW_BLOCKS(1, CASE(1, 1) CASE(2, 1) CASE(3, 1) CASE(4, 1) CASE(5, 1) CASE(6, 1) CASE(7, 1) CASE(8, 1)
                  CASE(9, 1) CASE(10, 1) CASE(11, 1) CASE(12, 1))
ROW_BLOCKS(2, CASE(1, 2) CASE(2, 2) CASE(3, 2) CASE(4, 2) CASE(5, 2) CASE(6, 2) CASE(7, 2) CASE(8, 2))
ROW_BLOCKS(3, CASE(1, 3) CASE(2, 3) CASE(3, 3) CASE(4, 3) CASE(5, 3) CASE(6, 3))
ROW_BLOCKS(4, CASE(1, 4) CASE(2, 4) CASE(3, 4) CASE(4, 4) CASE(5, 4))

/* op(B) transposed, copied for one panel: packed[kk][jj] = B(j0 + jj, k0 + kk),
 * zero beyond column `width`. Thread-local, so concurrent products don't
 * share it and no step allocates. */
static _Thread_local float packed[KC * NV_MAX * LANES] __attribute__((aligned(64)));

static void pack_transposed(const Product *p, int64_t j0, int64_t width, int64_t k0, int64_t kc, int nv) {
    int64_t row = (int64_t)nv * LANES;
    /* along B's rows, which are contiguous; the copy is what scatters */
    for (int64_t jj = 0; jj < width; jj++) {
        const float *from = p->b + (j0 + jj) * p->ldb + k0;
        for (int64_t kk = 0; kk < kc; kk++) packed[kk * row + jj] = from[kk];
    }
    for (int64_t kk = 0; kk < kc; kk++)
        for (int64_t jj = width; jj < row; jj++) packed[kk * row + jj] = 0.0f;
}

KERNEL static void product(const Product *p) {
    for (int64_t j0 = 0; j0 < p->n; j0 += NV_MAX * LANES) {
        int64_t width = p->n - j0 < NV_MAX * LANES ? p->n - j0 : NV_MAX * LANES;
        int nv = (int)((width + LANES - 1) / LANES);
        int tail = (int)(width - (int64_t)(nv - 1) * LANES);
        for (int64_t k0 = 0; k0 < p->k; k0 += KC) {
            int64_t kc = p->k - k0 < KC ? p->k - k0 : KC;
            __mmask16 last = (__mmask16)((1u << tail) - 1);
            Panel panel = {p->b + k0 * p->ldb + j0, p->ldb, last};
            if (p->tb) {
                pack_transposed(p, j0, width, k0, kc, nv);
                panel = (Panel){packed, (int64_t)nv * LANES, last};
            }
            bool first = k0 == 0;
            switch (nv) {
            case 1: row_blocks_1(p, j0, &panel, k0, kc, first); break;
            case 2: row_blocks_2(p, j0, &panel, k0, kc, first); break;
            case 3: row_blocks_3(p, j0, &panel, k0, kc, first); break;
            default: row_blocks_4(p, j0, &panel, k0, kc, first); break;
            }
        }
    }
}

/* ---- products with both operands along k: C = op(A) B^T ----------------------------------
 * When op(B) is B transposed and op(A) is A itself, row i of A and row j of
 * B are both contiguous along k, and C(i, j) is their dot product: vectors
 * of 16 products accumulate across k and are summed once at the end. That
 * reads both operands in place (no packing), and for a batch whose products
 * all add into one C (a convolution's weight gradient, summed over the
 * images) the accumulators go on across the whole batch. It pays where k is
 * long and C small: the final sums cost a few instructions per element. */

typedef struct DotProduct {
    int64_t count, m, n, k;
    float alpha, beta;
    const float *a;
    int64_t lda, sa;
    const float *b;
    int64_t ldb, sb;
    float *c;
    int64_t ldc;
} DotProduct;

enum { DOT_TILE = 4, DOT_GROUP_BYTES = 384 * 1024, DOT_ROWS_MAX = 256 };

/* C's rows i0 .. i0 + RI, columns j0 .. j0 + RJ, summed over the batch. */
INLINE_KERNEL void dot_tile(const DotProduct *p, int RI, int RJ, int64_t i0, int64_t j0) {
    __m512 acc[DOT_TILE][DOT_TILE];
#pragma GCC unroll 4
    for (int r = 0; r < RI; r++)
#pragma GCC unroll 4
        for (int q = 0; q < RJ; q++) acc[r][q] = _mm512_setzero_ps();
    int64_t whole = p->k / LANES * LANES;
    __mmask16 tail = (__mmask16)((1u << (p->k - whole)) - 1);
    for (int64_t s = 0; s < p->count; s++) {
        const float *a = p->a + s * p->sa + i0 * p->lda, *b = p->b + s * p->sb + j0 * p->ldb;
        for (int64_t kk = 0; kk <= whole; kk += LANES) {
            if (kk == whole && !tail) break;
            __mmask16 lanes = kk < whole ? (__mmask16)0xFFFF : tail;
            __m512 av[DOT_TILE], bv[DOT_TILE];
#pragma GCC unroll 4
            for (int r = 0; r < RI; r++) av[r] = _mm512_maskz_loadu_ps(lanes, a + r * p->lda + kk);
#pragma GCC unroll 4
            for (int q = 0; q < RJ; q++) bv[q] = _mm512_maskz_loadu_ps(lanes, b + q * p->ldb + kk);
#pragma GCC unroll 4
            for (int r = 0; r < RI; r++)
#pragma GCC unroll 4
                for (int q = 0; q < RJ; q++) acc[r][q] = _mm512_fmadd_ps(av[r], bv[q], acc[r][q]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < RI; r++)
#pragma GCC unroll 4
        for (int q = 0; q < RJ; q++) {
            float *c = p->c + (i0 + r) * p->ldc + j0 + q;
            float v = p->alpha * _mm512_reduce_add_ps(acc[r][q]);
            *c = p->beta == 0 ? v : v + p->beta * *c;
        }
}

#define DOT_CASE(RI, RJ)                                                                                 \
    case (RI - 1) * DOT_TILE + RJ - 1: dot_tile(p, RI, RJ, i0, j0); break;

/* Tiles lo .. hi of C, numbered along its rows of tiles. */
KERNEL static void dot_tiles(void *ctx, int64_t lo, int64_t hi) {
    const DotProduct *p = ctx;
    int64_t across = (p->n + DOT_TILE - 1) / DOT_TILE;
    for (int64_t t = lo; t < hi; t++) {
        int64_t i0 = t / across * DOT_TILE, j0 = t % across * DOT_TILE;
        int ri = p->m - i0 < DOT_TILE ? (int)(p->m - i0) : DOT_TILE;
        int rj = p->n - j0 < DOT_TILE ? (int)(p->n - j0) : DOT_TILE;
        switch ((ri - 1) * DOT_TILE + rj - 1) {
            DOT_CASE(1, 1) DOT_CASE(1, 2) DOT_CASE(1, 3) DOT_CASE(1, 4)
            DOT_CASE(2, 1) DOT_CASE(2, 2) DOT_CASE(2, 3) DOT_CASE(2, 4)
            DOT_CASE(3, 1) DOT_CASE(3, 2) DOT_CASE(3, 3) DOT_CASE(3, 4)
            DOT_CASE(4, 1) DOT_CASE(4, 2) DOT_CASE(4, 3) DOT_CASE(4, 4)
        }
    }
}

enum { SPLIT_ROWS = 8, SPLIT_COLUMNS = NV_MAX * LANES };

/* Tiles of C are independent (each sums its own products, over the
 * whole batch), so they are shared out between the threads as they are. */
static void dot_product(const DotProduct *p) {
    int64_t tiles = (p->m + DOT_TILE - 1) / DOT_TILE * ((p->n + DOT_TILE - 1) / DOT_TILE);
    if (p->count * p->m * p->n * p->k < NNRT_PARALLEL_MACS || tiles < 2)
        dot_tiles((void *)p, 0, tiles);
    else
        nnrt_parallel_for(tiles, dot_tiles, (void *)p);
}

/* Whether the dot-product kernel suits a product: op(A) = A, op(B) = B^T,
 * k long enough for the final sums to be a small part, and C small (a
 * large C is better served by the register-blocked kernel). */
static bool dot_suits(int32_t ta, int32_t tb, int64_t m, int64_t n, int64_t k, bool summed_batch) {
    return !ta && tb && k >= 4 * LANES && (summed_batch || m * n <= 64 * 64);
}

bool nnrt_sgemm_avx512_available(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
}

/* A product shared out by bands of rows of C, or of columns where C has few rows. */
typedef struct Split {
    Product whole;
    bool by_rows;
    int64_t unit; /* rows or columns per unit of work */
} Split;

static void product_range(void *ctx, int64_t lo, int64_t hi) {
    const Split *s = ctx;
    Product p = s->whole;
    int64_t size = s->by_rows ? p.m : p.n;
    int64_t from = lo * s->unit, to = hi * s->unit < size ? hi * s->unit : size;
    if (s->by_rows) {
        p.a += from * (p.ta ? 1 : p.lda);
        p.c += from * (p.c_transposed ? 1 : p.ldc);
        p.m = to - from;
    } else {
        p.b += from * (p.tb ? p.ldb : 1);
        p.c += from * (p.c_transposed ? p.ldc : 1);
        p.n = to - from;
    }
    product(&p);
}

void nnrt_sgemm_avx512(int32_t ta, int32_t tb, int64_t m, int64_t n, int64_t k, float alpha, const float *a,
                       int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
    Split s = {{ta != 0, tb != 0, m, n, k, alpha, beta, a, lda, b, ldb, c, ldc, false}, m >= 2 * SPLIT_ROWS, 0};
    if (m <= 0 || n <= 0 || k <= 0) return;
    if (ta && n < LANES && m >= 2 * LANES && ldc <= INT32_MAX / LANES) {
        /* C narrower than a vector with A^T's rows contiguous (a weight
         * gradient x^T dy into a few outputs): compute C^T = op(B)^T A^T,
         * whose rows are long, and store it transposed. */
        s.whole = (Product){!tb, false, n, m, k, alpha, beta, b, ldb, a, lda, c, ldc, true};
        s.by_rows = false;
    }
    if (dot_suits(ta, tb, m, n, k, false)) {
        DotProduct p = {1, m, n, k, alpha, beta, a, lda, 0, b, ldb, 0, c, ldc};
        dot_product(&p);
        return;
    }
    if (!ta && !tb && n < LANES && k >= 4 * LANES && m >= 2 * LANES && m <= DOT_ROWS_MAX &&
        n * k <= (int64_t)(sizeof packed / sizeof packed[0])) {
        /* C narrower than a vector, B's rows short (a layer into a few
         * outputs, x W): B^T is small, so transpose it and take dot products
         * along k, where every lane does work. Only for a mid-sized batch:
         * with few rows the copy costs more than it saves, with many the
         * final sums do. */
        for (int64_t j = 0; j < n; j++)
            for (int64_t kk = 0; kk < k; kk++) packed[j * k + kk] = b[kk * ldb + j];
        DotProduct p = {1, m, n, k, alpha, beta, a, lda, 0, packed, k, 0, c, ldc};
        dot_product(&p);
        return;
    }
    s.unit = s.by_rows ? SPLIT_ROWS : SPLIT_COLUMNS;
    int64_t units = ((s.by_rows ? s.whole.m : s.whole.n) + s.unit - 1) / s.unit;
    if (m * n * k < NNRT_PARALLEL_MACS || units < 2)
        product(&s.whole);
    else
        nnrt_parallel_for(units, product_range, &s);
}

bool nnrt_sgemm_avx512_batched(int64_t count, int32_t ta, int32_t tb, int64_t m, int64_t n, int64_t k, float alpha,
                               const float *a, int64_t lda, int64_t sa, const float *b, int64_t ldb, int64_t sb,
                               float beta, float *c, int64_t ldc, int64_t sc) {
    bool summed = sc == 0 && count > 1;
    if (m <= 0 || n <= 0 || k <= 0 || count <= 0 || !dot_suits(ta, tb, m, n, k, summed)) return false;
    /* A summed batch goes in groups of products whose operands fit in
     * the core's second-level cache together, since every tile of C
     * reads them all again; each group's sums add into C. */
    int64_t bytes = (int64_t)sizeof(float) * (m * lda + n * ldb);
    int64_t group = summed ? DOT_GROUP_BYTES / (bytes > 0 ? bytes : 1) : 1;
    group = group < 1 ? 1 : group > count ? count : group;
    DotProduct p = {group, m, n, k, alpha, beta, a, lda, sa, b, ldb, sb, c, ldc};
    for (int64_t s = 0; s < count; s += group) {
        p.count = count - s < group ? count - s : group;
        dot_product(&p);
        p.a += group * sa, p.b += group * sb;
        if (summed) p.beta = 1;
        else p.c += sc;
    }
    return true;
}

#endif
