/* The range search of the rowwise encoders (int8, int4, int4h, int2h), vectorised.
 *
 * RowwiseQuantizer.swift and HalfRowwiseQuantizer.swift hold the reference search and explain it;
 * this file returns the same scale and bias, bit for bit, four to eight times faster, or says
 * that it cannot tell (EMB_ROWWISE_UNDECIDED) and leaves the row to the reference.
 *
 * What is replicated exactly (same IEEE operations in the same order, never fused, so the same
 * bits): the row's bounds, every code, every decoded value, the candidate maps, the histogram
 * bins the greedy walk reads and the walk itself, the roundings to float and to half.
 *
 * What is not: the reference's long sums in index order (Σq·y, Σy, Σy², Σ(decoded − x)²). Here
 * they run in vector lanes, in another order, with fused multiply-adds, and may differ in their
 * last bits. Two summations of the same n nonnegative terms, in any order, are both within
 * γ(n + 1)·Σ of the exact sum (γ(k) = k·u / (1 − k·u), u = 2^-53; the + 1 for fusing), so they
 * differ by at most about 2·γ(n + 1)·Σ, which `sum_tol` bounds. Each quantity computed from
 * such sums carries a bound on its distance from the reference's value (`approx`), carried
 * through the arithmetic that follows, and every decision on it (a comparison, a rounding to
 * float or to half) is taken only if it comes out the same for every value within the bound.
 * Otherwise:
 *   - a comparison of two squared errors goes up a ladder: an interval from the codes' moments
 *     (no decoding), then the decoded errors summed in lanes, then the sum in index order;
 *   - a rounding of a ratio of sums, or a decision of the alternating minimisation, is taken on
 *     the reference's own sums, recomputed in index order (for the moments, the histogram is
 *     filled in full and its bins added in order, as the reference does);
 *   - rows whose plain min/max decode overflows Float (|values| near 3.4e38, where the reference
 *     narrows the range in steps of its own) return EMB_ROWWISE_UNDECIDED.
 * The tests (RowwiseSearchKernelTests) and tools/encode_bench's dumps compare with the reference.
 *
 * The work cut besides vectorising: the greedy walk stops as soon as its clipping cost alone
 * exceeds the best estimate seen (nothing after can win); the histogram is filled only for the
 * bins the walk reaches (one at each end for int8), in the reference's order per bin; the first
 * pass also gathers the sums of the min/max maps, so that comparing with them needs no pass. */
#include "kernels_internal.h"

#include <math.h>
#include <stdlib.h>

/* Decoding is a float multiply then a float add, and the reference never fuses anything. */
#pragma clang fp contract(off)

#define U 0x1p-53 /* unit roundoff of double */

/* The small helpers below sit on the search's critical path; a call there costs its arguments'
 * round trip through memory. */
#define HOT static inline __attribute__((always_inline))

/* Event counters for studying the kernel (compile with -DEMB_SEARCH_STATS); nothing otherwise:
 * rows searched, walk steps, extra histogram fills, refine passes, final comparisons, squared
 * errors decoded and recomputed in index order, half passes, next half scales and refine decisions
 * taken on the reference's own sums. */
#ifdef EMB_SEARCH_STATS
enum { ST_ROWS, ST_WALK_STEPS, ST_FILL, ST_REFINE, ST_FINAL_ESTIMATE, ST_FINAL_DECODE, ST_FINAL_EXACT, ST_HALF_PASS,
       ST_HALF_EXACT_QY, ST_EXACT_REFINE, ST_COUNT };
size_t emb_search_stats[ST_COUNT];
#define STAT(k) (emb_search_stats[k]++)
#else
#define STAT(k) ((void)0)
#endif

enum { HIST_BINS = 32, MAX_SHRINK = 16, REFINE_PASSES = 8 };

/* ------------------------------------------------------------------------------------------
 * Values with a bound on their distance from the reference's */

/* v within tol of the reference's value; tol == 0: exactly the reference's value. A nonzero tol
 * is always at least 4u·|v|, so that the roundings of v ± 2·tol below cannot undo it. */
typedef struct {
    double v, tol;
} approx;

/* Bound on the difference between two floating-point sums, in any order (the lanes' tree is at
 * most n + 4 deep, and adding a zero is exact), one of them possibly of fused products, of the
 * same n nonnegative terms, given one of them, s: about (2n + 4)·u·Σ ≤ (2n + 4)·u·s·(1 + 2^-24)
 * for n < 2^28, which 2(n + 1)·u·(1 + 2^-20)·s + 4u·s covers. An infinite sum is exact: some
 * term is infinite, in both. */
HOT double sum_tol(double s, double n) {
    return isfinite(s) ? s * ((n + 1.0) * 0x1p-52 * (1.0 + 0x1p-20)) + 4 * U * s : 0.0;
}

/* 1 when a < b holds for the reference's values, 0 when it does not, -1 when the bounds overlap
 * (or a value is NaN). Infinities have tol 0 and compare exactly. */
HOT int certain_less(approx a, approx b) {
    if (a.v + 2 * a.tol < b.v - 2 * b.tol) return 1;
    if (a.v - 2 * a.tol >= b.v + 2 * b.tol) return 0;
    return -1;
}

HOT uint32_t f32_bits(float f) {
    uint32_t b;
    memcpy(&b, &f, sizeof b);
    return b;
}

/* Float(v) when every value within tol of v rounds to the same float (same bits: ±0 differ). */
HOT int certain_float(double v, double tol, float *out) {
    const float a = (float)(v - 2 * tol), b = (float)(v + 2 * tol);
    *out = (float)v; /* the value does not wait for the check */
    return f32_bits(a) == f32_bits(b) && a == a;
}

/* ------------------------------------------------------------------------------------------
 * Scalar pieces shared by both paths, replicating the Swift reference operation for operation */

/* Swift.max(0, v): `v >= 0 ? v : 0` (keeps −0). */
HOT double max0(double v) { return v >= 0.0 ? v : 0.0; }

/* RowwiseAffine: x ≈ q * scale + bias. */
typedef struct {
    float scale, bias;
} affine;

HOT int affine_equal(affine a, affine b) { return a.scale == b.scale && a.bias == b.bias; }

/* RowwiseAffine(lo:hi:levels:). */
HOT affine affine_from(double lo, double hi, double levels) {
    affine a;
    a.bias = (float)lo;
    a.scale = hi > (double)a.bias ? (float)((hi - (double)a.bias) / levels) : 0.0f;
    return a;
}

/* RowwiseCoder's reciprocal: 1 / scale in double, 0 when scale is not > 0 (every code 0). */
HOT double inverse_of(float scale) { return scale > 0 ? 1.0 / (double)scale : 0.0; }

/* RowwiseCoder.code(for:): min(max((x − bias) · inverse, 0), levels), rounded to nearest even by
 * adding and removing 2^52 (exact for 0 ≤ t < 2^52), as an integral double. */
HOT double code_of(double x, double bias, double inverse, double levels) {
    double t = (x - bias) * inverse;
    t = 0.0 >= t ? 0.0 : t;
    t = levels < t ? levels : t;
    return (t + 0x1p52) - 0x1p52;
}

/* RowwiseQuantizer.squaredError, in index order: the reference's value exactly. */
static double squared_error_exact(const float *row, size_t d, affine a, double levels) {
    const double bias = (double)a.bias, inverse = inverse_of(a.scale);
    double sum = 0;
    for (size_t i = 0; i < d; i++) {
        const double x = (double)row[i];
        const float decoded = (float)code_of(x, bias, inverse, levels) * a.scale + a.bias;
        const double e = (double)decoded - x;
        sum += e * e;
    }
    return sum;
}

/* HalfRowwiseQuantizer.fitScale's Σq·(x − b), in index order: the reference's value exactly. */
static double half_qy_exact(const float *row, size_t d, affine a, double levels) {
    const double bias = (double)a.bias, inverse = inverse_of(a.scale);
    double sum = 0;
    for (size_t i = 0; i < d; i++) {
        const double x = (double)row[i];
        sum += code_of(x, bias, inverse, levels) * (x - bias);
    }
    return sum;
}

/* RowwiseQuantizer.refitPass's Σq·(x − origin), in index order: the reference's value exactly. */
static double refit_qy_exact(const float *row, size_t d, affine a, double levels, double origin) {
    const double bias = (double)a.bias, inverse = inverse_of(a.scale);
    double sum = 0;
    for (size_t i = 0; i < d; i++) {
        const double x = (double)row[i];
        sum += code_of(x, bias, inverse, levels) * (x - origin);
    }
    return sum;
}

/* HalfBits(nearest:): the half nearest x, ties to even, ±65504 where |x| >= 65504. Scaling by a
 * power of two is exact, and adding then removing 2^52 rounds to nearest even; a mantissa that
 * rounds up to 2048 carries into the exponent, which is the right encoding. */
HOT uint16_t half_nearest(double x) {
    uint64_t bits;
    memcpy(&bits, &x, sizeof bits);
    const uint16_t sign = (uint16_t)((bits >> 48) & 0x8000u);
    const double a = fabs(x);
    if (!(a < 65504.0)) return (uint16_t)((x < 0 ? 0x8000u : 0u) | 0x7BFFu);
    if (a < 0x1p-14) { /* subnormal half (or zero): a multiple of 2^-24 */
        const double m = (a * 0x1p24 + 0x1p52) - 0x1p52;
        return (uint16_t)(sign | (uint16_t)m);
    }
    const int exponent = (int)((bits >> 52) & 0x7FFu) - 1023; /* a in [2^e, 2^(e+1)), e in -14...15 */
    const uint64_t scale_bits = (uint64_t)(1023 + 10 - exponent) << 52;
    double scale;
    memcpy(&scale, &scale_bits, sizeof scale);
    const double m = (a * scale + 0x1p52) - 0x1p52; /* 1024...2048 */
    return (uint16_t)(sign | (((unsigned)(exponent + 15) << 10) + ((unsigned)m - 1024u)));
}

uint16_t emb_half_nearest(double x) { return half_nearest(x); }

/* HalfBits.stepped(by:): the half `steps` places away in value order (±0 one place); 0 past
 * ±65504 (which no stepped result can be: its bits would be 0x7C00 or more). */
HOT int half_step(uint16_t h, int steps, uint16_t *out) {
    const int magnitude = h & 0x7FFF;
    const int ordinal = ((h & 0x8000) ? -magnitude : magnitude) + steps;
    if ((ordinal < 0 ? -ordinal : ordinal) > 0x7BFF) return 0;
    *out = (uint16_t)(ordinal < 0 ? (0x8000 | -ordinal) : ordinal);
    return 1;
}

HOT affine half_affine(uint16_t scale, uint16_t bias) {
    affine a = {emb_half_to_float(scale), emb_half_to_float(bias)};
    return a;
}

/* ------------------------------------------------------------------------------------------
 * The passes over the row. Sums here run in any order (and, on the AVX2 path, with fused
 * multiply-adds: the sum of the exact products instead of the rounded ones, one more u per term,
 * which sum_tol's n + 2 covers); codes, decodes and histogram bins are exact. */

/* Count, Σy and Σy² of one histogram bin, summed in the reference's order (index order). */
typedef struct {
    double count, sum, ssq;
} binsums;

HOT void bin_add(binsums *b, double y) {
    b->count += 1;
    b->sum += y;
    b->ssq += y * y;
}

HOT binsums bins_plus(binsums a, binsums b) {
    binsums s = {a.count + b.count, a.sum + b.sum, a.ssq + b.ssq};
    return s;
}

HOT int bin_of(double y, double per_unit) {
    const int bin = (int)(y * per_unit);
    return bin < HIST_BINS - 1 ? bin : HIST_BINS - 1;
}

/* Σq, Σq² (exact: integers below 2^53) and Σq·y for the codes of one map. */
typedef struct {
    double q, qq, qy;
} refit_sums;

/* For one half candidate: its squared error (decoded, summed in lanes), and Σq² and Σq·(x − bias),
 * the reference fitScale's sums for the next scale. (Its steps change the scale by a half's ulp,
 * and their errors often differ by a relative 10^-6: too close for the estimate's bounds.) */
typedef struct {
    double error, qq, qb;
} half_sums;

/* What the first pass learns besides the histogram: Σy, Σy², and the refit sums of the plain
 * min/max map and of one more map (the half search's min/max on rounded parameters). */
typedef struct {
    double y, yy;
    refit_sums min_max, extra;
} first_sums;

/* One row and its scratch: xd[i] = (double)row[i] and y[i] = xd[i] − origin once the first pass
 * has run (the AVX2 passes read these; the portable ones recompute them). */
typedef struct {
    const float *row;
    size_t d;
    double *xd, *y;
    uint64_t *picked; /* ceil(d / 64) words of scratch for the first pass */
} row_ctx;

/* Smallest and largest value: the reference's (first minimum, last maximum, which matters only
 * for the sign of a zero). 0 when the row has a NaN or infinity. */
static int bounds_portable(row_ctx *r, float *low, float *high) {
    const float *row = r->row;
    float lo = row[0], hi = row[0];
    for (size_t i = 0; i < r->d; i++) {
        const float x = row[i];
        if (!isfinite(x)) return 0;
        lo = x < lo ? x : lo;
        hi = x >= hi ? x : hi;
    }
    *low = lo;
    *high = hi;
    return 1;
}

static void first_pass_portable(row_ctx *r, double origin, double per_unit, uint32_t which, binsums *bins,
                                affine min_max, const affine *extra, double levels, first_sums *out) {
    const double inverse = inverse_of(min_max.scale);
    const double extra_bias = extra ? (double)extra->bias : 0, extra_inverse = extra ? inverse_of(extra->scale) : 0;
    first_sums s = {0, 0, {0, 0, 0}, {0, 0, 0}};
    for (size_t i = 0; i < r->d; i++) {
        const double x = (double)r->row[i], y = x - origin;
        s.y += y;
        s.yy += y * y;
        const int bin = bin_of(y, per_unit);
        if ((which >> bin) & 1u) bin_add(&bins[bin], y);
        const double q = code_of(x, (double)min_max.bias, inverse, levels);
        s.min_max.q += q;
        s.min_max.qq += q * q;
        s.min_max.qy += q * y;
        if (extra) {
            const double e = code_of(x, extra_bias, extra_inverse, levels);
            s.extra.q += e;
            s.extra.qq += e * e;
            s.extra.qy += e * y;
        }
    }
    *out = s;
}

/* Fills the bins whose bit is set in `which` (none filled before), in index order. */
static void fill_bins_portable(row_ctx *r, double origin, double per_unit, uint32_t which, binsums *bins) {
    for (size_t i = 0; i < r->d; i++) {
        const double y = (double)r->row[i] - origin;
        const int bin = bin_of(y, per_unit);
        if ((which >> bin) & 1u) bin_add(&bins[bin], y);
    }
}

/* The portable passes keep two partial sums (any order is allowed, and two chains of additions
 * are half as long as one). */
static refit_sums refit_pass_portable(row_ctx *r, affine a, double levels, double origin) {
    const double bias = (double)a.bias, inverse = inverse_of(a.scale);
    double q0 = 0, qq0 = 0, qy0 = 0, q1 = 0, qq1 = 0, qy1 = 0;
    size_t i = 0;
    for (; i + 2 <= r->d; i += 2) {
        const double x0 = (double)r->row[i], x1 = (double)r->row[i + 1];
        const double c0 = code_of(x0, bias, inverse, levels), c1 = code_of(x1, bias, inverse, levels);
        q0 += c0;
        q1 += c1;
        qq0 += c0 * c0;
        qq1 += c1 * c1;
        qy0 += c0 * (x0 - origin);
        qy1 += c1 * (x1 - origin);
    }
    if (i < r->d) {
        const double x0 = (double)r->row[i];
        const double c0 = code_of(x0, bias, inverse, levels);
        q0 += c0;
        qq0 += c0 * c0;
        qy0 += c0 * (x0 - origin);
    }
    refit_sums s = {q0 + q1, qq0 + qq1, qy0 + qy1};
    return s;
}

static double squared_error_portable(row_ctx *r, affine a, double levels) {
    return squared_error_exact(r->row, r->d, a, levels);
}

HOT double decode_error(double x, double q, affine a) {
    const double e = (double)((float)q * a.scale + a.bias) - x;
    return e * e;
}

static half_sums half_pass_portable(row_ctx *r, affine a, double levels) {
    const double bias = (double)a.bias, inverse = inverse_of(a.scale);
    double e0 = 0, qq0 = 0, qb0 = 0, e1 = 0, qq1 = 0, qb1 = 0;
    size_t i = 0;
    for (; i + 2 <= r->d; i += 2) {
        const double x0 = (double)r->row[i], x1 = (double)r->row[i + 1];
        const double c0 = code_of(x0, bias, inverse, levels), c1 = code_of(x1, bias, inverse, levels);
        e0 += decode_error(x0, c0, a);
        e1 += decode_error(x1, c1, a);
        qq0 += c0 * c0;
        qq1 += c1 * c1;
        qb0 += c0 * (x0 - bias);
        qb1 += c1 * (x1 - bias);
    }
    if (i < r->d) {
        const double x0 = (double)r->row[i];
        const double c0 = code_of(x0, bias, inverse, levels);
        e0 += decode_error(x0, c0, a);
        qq0 += c0 * c0;
        qb0 += c0 * (x0 - bias);
    }
    half_sums s = {e0 + e1, qq0 + qq1, qb0 + qb1};
    return s;
}

static void half_pass2_portable(row_ctx *r, affine a0, affine a1, double levels, half_sums *s0, half_sums *s1) {
    *s0 = half_pass_portable(r, a0, levels);
    *s1 = half_pass_portable(r, a1, levels);
}

/* Codes of elements [start, d) packed `bits` a code into out (start a multiple of 8). */
static void write_codes_scalar(const float *row, size_t start, size_t d, affine a, double levels, int bits,
                               unsigned char *out) {
    const double bias = (double)a.bias, inverse = inverse_of(a.scale);
    const size_t per_byte = (size_t)(8 / bits);
    for (size_t i = start; i < d; i += per_byte) {
        unsigned byte = 0;
        for (size_t m = 0; m < per_byte && i + m < d; m++)
            byte |= (unsigned)code_of((double)row[i + m], bias, inverse, levels) << (bits * m);
        out[i / per_byte] = (unsigned char)byte;
    }
}

#if EMB_X86
#define EMB_TARGET_SEARCH __attribute__((target("avx2,f16c,fma")))

EMB_TARGET_SEARCH
static inline double hsum_pd(__m256d v) {
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

/* code_of on four lanes from t = (x − bias) · inverse: clamped, then rounded to nearest even
 * (vroundpd: the same result as adding and removing 2^52 on 0 ≤ t ≤ 255). No operand is NaN,
 * and the rounding erases the sign of a zero. */
EMB_TARGET_SEARCH
static inline __m256d clamp_round(__m256d t, __m256d levels) {
    t = _mm256_min_pd(_mm256_max_pd(t, _mm256_setzero_pd()), levels);
    return _mm256_round_pd(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

EMB_TARGET_SEARCH
static inline __m256d code4(__m256d x, __m256d bias, __m256d inverse, __m256d levels) {
    return clamp_round(_mm256_mul_pd(_mm256_sub_pd(x, bias), inverse), levels);
}

/* Bounds, and xd: the row in double. */
EMB_TARGET_SEARCH
static int bounds_avx2(row_ctx *r, float *low, float *high) {
    const float *row = r->row;
    const size_t d = r->d;
    if (d < 8) {
        for (size_t i = 0; i < d; i++) r->xd[i] = (double)row[i];
        return bounds_portable(r, low, high);
    }
    const __m256 magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    const __m256 largest = _mm256_set1_ps(0x1.fffffep127f);
    __m256 lo = _mm256_loadu_ps(row), hi = lo, bad = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 8 <= d; i += 8) {
        const __m256 x = _mm256_loadu_ps(row + i);
        lo = _mm256_min_ps(lo, x);
        hi = _mm256_max_ps(hi, x);
        bad = _mm256_or_ps(bad, _mm256_cmp_ps(_mm256_and_ps(x, magnitude), largest, _CMP_NLE_UQ));
        _mm256_storeu_pd(r->xd + i, _mm256_cvtps_pd(_mm256_castps256_ps128(x)));
        _mm256_storeu_pd(r->xd + i + 4, _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1)));
    }
    if (i < d) { /* the last 8 again: overlap is harmless for min, max, the test and xd */
        const __m256 x = _mm256_loadu_ps(row + d - 8);
        lo = _mm256_min_ps(lo, x);
        hi = _mm256_max_ps(hi, x);
        bad = _mm256_or_ps(bad, _mm256_cmp_ps(_mm256_and_ps(x, magnitude), largest, _CMP_NLE_UQ));
        _mm256_storeu_pd(r->xd + d - 8, _mm256_cvtps_pd(_mm256_castps256_ps128(x)));
        _mm256_storeu_pd(r->xd + d - 4, _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1)));
    }
    if (_mm256_movemask_ps(bad)) return 0;
    __m128 l = _mm_min_ps(_mm256_castps256_ps128(lo), _mm256_extractf128_ps(lo, 1));
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(hi), _mm256_extractf128_ps(hi, 1));
    l = _mm_min_ps(l, _mm_movehl_ps(l, l));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    l = _mm_min_ss(l, _mm_shuffle_ps(l, l, 1));
    h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
    float lo_value = _mm_cvtss_f32(l), hi_value = _mm_cvtss_f32(h);
    /* Equal zeros: the reference keeps the first minimum and the last maximum. */
    if (lo_value == 0) {
        for (i = 0; row[i] != 0; i++) {}
        lo_value = row[i];
    }
    if (hi_value == 0) {
        for (i = d - 1; row[i] != 0; i--) {}
        hi_value = row[i];
    }
    *low = lo_value;
    *high = hi_value;
    return 1;
}

/* y, Σy, Σy², the bins in `which`, and the plain min/max map's sums, whose bias is the origin:
 * (x − bias) · inverse is y · inverse. */
EMB_TARGET_SEARCH
static inline __attribute__((always_inline)) void first_pass_avx2_with(row_ctx *r, double origin, double per_unit,
                                                                     uint32_t which, binsums *bins, affine min_max,
                                                                     const affine *extra, double levels,
                                                                     first_sums *out) {
    const size_t d = r->d;
    const double *xd = r->xd;
    double *ys = r->y;
    const __m256d vorigin = _mm256_set1_pd(origin), vper = _mm256_set1_pd(per_unit);
    const __m256d vinverse = _mm256_set1_pd(inverse_of(min_max.scale)), vlevels = _mm256_set1_pd(levels);
    const __m256d xbias = _mm256_set1_pd(extra ? (double)extra->bias : 0);
    const __m256d xinverse = _mm256_set1_pd(extra ? inverse_of(extra->scale) : 0);
    /* `which` is always the k lowest and k highest bins: bin(y) < k exactly when y · per_unit < k
     * (the bin is that product truncated, and it is >= 0), and bin(y) >= 32 − k exactly when
     * y · per_unit >= 32 − k. */
    const int k = __builtin_popcount(which & 0xFFFFu);
    const __m256d low_end = _mm256_set1_pd((double)k), high_end = _mm256_set1_pd((double)(HIST_BINS - k));
    __m256d sy = _mm256_setzero_pd(), syy = sy, q = sy, qq = sy, qy = sy, eq = sy, eqq = sy, eqy = sy;
    uint64_t word = 0;
    size_t i = 0;
    for (; i + 4 <= d; i += 4) {
        const __m256d x = _mm256_loadu_pd(xd + i);
        const __m256d y = _mm256_sub_pd(x, vorigin);
        _mm256_storeu_pd(ys + i, y);
        sy = _mm256_add_pd(sy, y);
        syy = _mm256_fmadd_pd(y, y, syy);
        /* The min/max map's bias is the origin: (x − bias) · inverse is y · inverse. */
        const __m256d c = clamp_round(_mm256_mul_pd(y, vinverse), vlevels);
        q = _mm256_add_pd(q, c);
        qq = _mm256_fmadd_pd(c, c, qq);
        qy = _mm256_fmadd_pd(c, y, qy);
        if (extra) {
            const __m256d e = code4(x, xbias, xinverse, vlevels);
            eq = _mm256_add_pd(eq, e);
            eqq = _mm256_fmadd_pd(e, e, eqq);
            eqy = _mm256_fmadd_pd(e, y, eqy);
        }
        /* Which lanes fall in a bin to fill: a bit each, filled in index order after the loop
         * (no branch in the loop, no reading back what it just stored). */
        const __m256d t = _mm256_mul_pd(y, vper);
        const __m256d selected = _mm256_or_pd(_mm256_cmp_pd(t, low_end, _CMP_LT_OQ), _mm256_cmp_pd(t, high_end, _CMP_GE_OQ));
        word |= (uint64_t)_mm256_movemask_pd(selected) << (i & 63);
        if ((i & 63) == 60) {
            r->picked[i >> 6] = word;
            word = 0;
        }
    }
    if (i & 63) r->picked[i >> 6] = word;
    for (size_t w = 0; w < (i + 63) >> 6; w++) {
        for (uint64_t bits = r->picked[w]; bits; bits &= bits - 1) {
            const size_t j = (w << 6) + (size_t)__builtin_ctzll(bits);
            bin_add(&bins[bin_of(ys[j], per_unit)], ys[j]);
        }
    }
    first_sums s = {hsum_pd(sy), hsum_pd(syy), {hsum_pd(q), hsum_pd(qq), hsum_pd(qy)},
                    {hsum_pd(eq), hsum_pd(eqq), hsum_pd(eqy)}};
    const double bias = (double)min_max.bias, inverse = inverse_of(min_max.scale);
    for (; i < d; i++) {
        const double y = xd[i] - origin;
        ys[i] = y;
        s.y += y;
        s.yy += y * y;
        const int bin = bin_of(y, per_unit);
        if ((which >> bin) & 1u) bin_add(&bins[bin], y);
        const double c = code_of(xd[i], bias, inverse, levels);
        s.min_max.q += c;
        s.min_max.qq += c * c;
        s.min_max.qy += c * y;
        if (extra) {
            const double e = code_of(xd[i], (double)extra->bias, inverse_of(extra->scale), levels);
            s.extra.q += e;
            s.extra.qq += e * e;
            s.extra.qy += e * y;
        }
    }
    *out = s;
}

EMB_TARGET_SEARCH
static void first_pass_avx2(row_ctx *r, double origin, double per_unit, uint32_t which, binsums *bins,
                            affine min_max, const affine *extra, double levels, first_sums *out) {
    if (extra) first_pass_avx2_with(r, origin, per_unit, which, bins, min_max, extra, levels, out);
    else first_pass_avx2_with(r, origin, per_unit, which, bins, min_max, NULL, levels, out);
}

static void fill_bins_avx2(row_ctx *r, double origin, double per_unit, uint32_t which, binsums *bins) {
    (void)origin;
    const double *ys = r->y;
    for (size_t i = 0; i < r->d; i++) {
        const int bin = bin_of(ys[i], per_unit);
        if ((which >> bin) & 1u) bin_add(&bins[bin], ys[i]);
    }
}

/* The codes' sums with four accumulators each: for rows of a few dozen values the pass is a
 * chain of the accumulators' additions, which four lanes of accumulators shorten. */
EMB_TARGET_SEARCH
static refit_sums refit_pass_avx2(row_ctx *r, affine a, double levels, double origin) {
    (void)origin;
    const size_t d = r->d;
    const double *xd = r->xd, *ys = r->y;
    const __m256d vbias = _mm256_set1_pd((double)a.bias), vinverse = _mm256_set1_pd(inverse_of(a.scale));
    const __m256d vlevels = _mm256_set1_pd(levels);
    __m256d q0 = _mm256_setzero_pd(), q1 = q0, q2 = q0, q3 = q0;
    __m256d qq0 = q0, qq1 = q0, qq2 = q0, qq3 = q0, qy0 = q0, qy1 = q0, qy2 = q0, qy3 = q0;
    size_t i = 0;
    for (; i + 16 <= d; i += 16) {
        const __m256d c0 = code4(_mm256_loadu_pd(xd + i), vbias, vinverse, vlevels);
        const __m256d c1 = code4(_mm256_loadu_pd(xd + i + 4), vbias, vinverse, vlevels);
        const __m256d c2 = code4(_mm256_loadu_pd(xd + i + 8), vbias, vinverse, vlevels);
        const __m256d c3 = code4(_mm256_loadu_pd(xd + i + 12), vbias, vinverse, vlevels);
        q0 = _mm256_add_pd(q0, c0);
        q1 = _mm256_add_pd(q1, c1);
        q2 = _mm256_add_pd(q2, c2);
        q3 = _mm256_add_pd(q3, c3);
        qq0 = _mm256_fmadd_pd(c0, c0, qq0);
        qq1 = _mm256_fmadd_pd(c1, c1, qq1);
        qq2 = _mm256_fmadd_pd(c2, c2, qq2);
        qq3 = _mm256_fmadd_pd(c3, c3, qq3);
        qy0 = _mm256_fmadd_pd(c0, _mm256_loadu_pd(ys + i), qy0);
        qy1 = _mm256_fmadd_pd(c1, _mm256_loadu_pd(ys + i + 4), qy1);
        qy2 = _mm256_fmadd_pd(c2, _mm256_loadu_pd(ys + i + 8), qy2);
        qy3 = _mm256_fmadd_pd(c3, _mm256_loadu_pd(ys + i + 12), qy3);
    }
    for (; i + 4 <= d; i += 4) {
        const __m256d c0 = code4(_mm256_loadu_pd(xd + i), vbias, vinverse, vlevels);
        q0 = _mm256_add_pd(q0, c0);
        qq0 = _mm256_fmadd_pd(c0, c0, qq0);
        qy0 = _mm256_fmadd_pd(c0, _mm256_loadu_pd(ys + i), qy0);
    }
    refit_sums s = {hsum_pd(_mm256_add_pd(_mm256_add_pd(q0, q1), _mm256_add_pd(q2, q3))),
                    hsum_pd(_mm256_add_pd(_mm256_add_pd(qq0, qq1), _mm256_add_pd(qq2, qq3))),
                    hsum_pd(_mm256_add_pd(_mm256_add_pd(qy0, qy1), _mm256_add_pd(qy2, qy3)))};
    const double bias = (double)a.bias, inverse = inverse_of(a.scale);
    for (; i < d; i++) {
        const double c = code_of(xd[i], bias, inverse, levels);
        s.q += c;
        s.qq += c * c;
        s.qy += c * ys[i];
    }
    return s;
}

/* Eight codes to their decoded values minus x, in double: (float)q * scale + bias in float. */
EMB_TARGET_SEARCH
static inline void errors8(__m256d x0, __m256d x1, __m256d c0, __m256d c1, __m256 scale, __m256 bias, __m256d *e0,
                           __m256d *e1) {
    const __m256 q = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm256_cvtpd_ps(c0)), _mm256_cvtpd_ps(c1), 1);
    const __m256 decoded = _mm256_add_ps(_mm256_mul_ps(q, scale), bias);
    *e0 = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(decoded)), x0);
    *e1 = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(decoded, 1)), x1);
}

EMB_TARGET_SEARCH
static double squared_error_avx2(row_ctx *r, affine a, double levels) {
    const size_t d = r->d;
    const double *xd = r->xd;
    const __m256d vbias = _mm256_set1_pd((double)a.bias), vinverse = _mm256_set1_pd(inverse_of(a.scale));
    const __m256d vlevels = _mm256_set1_pd(levels);
    const __m256 fscale = _mm256_set1_ps(a.scale), fbias = _mm256_set1_ps(a.bias);
    __m256d s0 = _mm256_setzero_pd(), s1 = s0;
    size_t i = 0;
    for (; i + 8 <= d; i += 8) {
        const __m256d x0 = _mm256_loadu_pd(xd + i), x1 = _mm256_loadu_pd(xd + i + 4);
        __m256d e0, e1;
        errors8(x0, x1, code4(x0, vbias, vinverse, vlevels), code4(x1, vbias, vinverse, vlevels), fscale, fbias, &e0,
                &e1);
        s0 = _mm256_fmadd_pd(e0, e0, s0);
        s1 = _mm256_fmadd_pd(e1, e1, s1);
    }
    return hsum_pd(_mm256_add_pd(s0, s1)) + squared_error_exact(r->row + i, d - i, a, levels);
}

EMB_TARGET_SEARCH
static half_sums half_pass_avx2(row_ctx *r, affine a, double levels) {
    const size_t d = r->d;
    const double *xd = r->xd;
    const __m256d vbias = _mm256_set1_pd((double)a.bias), vinverse = _mm256_set1_pd(inverse_of(a.scale));
    const __m256d vlevels = _mm256_set1_pd(levels);
    const __m256 fscale = _mm256_set1_ps(a.scale), fbias = _mm256_set1_ps(a.bias);
    __m256d s0 = _mm256_setzero_pd(), s1 = s0, qq0 = s0, qq1 = s0, qb0 = s0, qb1 = s0;
    size_t i = 0;
    for (; i + 8 <= d; i += 8) {
        const __m256d x0 = _mm256_loadu_pd(xd + i), x1 = _mm256_loadu_pd(xd + i + 4);
        const __m256d v0 = _mm256_sub_pd(x0, vbias), v1 = _mm256_sub_pd(x1, vbias);
        const __m256d c0 = clamp_round(_mm256_mul_pd(v0, vinverse), vlevels);
        const __m256d c1 = clamp_round(_mm256_mul_pd(v1, vinverse), vlevels);
        __m256d e0, e1;
        errors8(x0, x1, c0, c1, fscale, fbias, &e0, &e1);
        s0 = _mm256_fmadd_pd(e0, e0, s0);
        s1 = _mm256_fmadd_pd(e1, e1, s1);
        qq0 = _mm256_fmadd_pd(c0, c0, qq0);
        qq1 = _mm256_fmadd_pd(c1, c1, qq1);
        qb0 = _mm256_fmadd_pd(c0, v0, qb0);
        qb1 = _mm256_fmadd_pd(c1, v1, qb1);
    }
    half_sums s = {hsum_pd(_mm256_add_pd(s0, s1)), hsum_pd(_mm256_add_pd(qq0, qq1)), hsum_pd(_mm256_add_pd(qb0, qb1))};
    const row_ctx tail = {r->row + i, d - i, NULL, NULL, NULL};
    const half_sums t = half_pass_portable((row_ctx *)&tail, a, levels);
    s.error += t.error;
    s.qq += t.qq;
    s.qb += t.qb;
    return s;
}

/* half_pass_avx2 for two maps at once: the two fits of the half search are independent, and
 * running their passes together overlaps the latency of one with the other's work. */
EMB_TARGET_SEARCH
static void half_pass2_avx2(row_ctx *r, affine a0, affine a1, double levels, half_sums *s0, half_sums *s1) {
    const size_t d = r->d;
    const double *xd = r->xd;
    const __m256d vlevels = _mm256_set1_pd(levels);
    const __m256d b0 = _mm256_set1_pd((double)a0.bias), i0 = _mm256_set1_pd(inverse_of(a0.scale));
    const __m256d b1 = _mm256_set1_pd((double)a1.bias), i1 = _mm256_set1_pd(inverse_of(a1.scale));
    const __m256 fs0 = _mm256_set1_ps(a0.scale), fb0 = _mm256_set1_ps(a0.bias);
    const __m256 fs1 = _mm256_set1_ps(a1.scale), fb1 = _mm256_set1_ps(a1.bias);
    __m256d e0 = _mm256_setzero_pd(), qq0 = e0, qb0 = e0, e1 = e0, qq1 = e0, qb1 = e0;
    size_t i = 0;
    for (; i + 8 <= d; i += 8) {
        const __m256d x0 = _mm256_loadu_pd(xd + i), x1 = _mm256_loadu_pd(xd + i + 4);
        {
            const __m256d v0 = _mm256_sub_pd(x0, b0), v1 = _mm256_sub_pd(x1, b0);
            const __m256d c0 = clamp_round(_mm256_mul_pd(v0, i0), vlevels);
            const __m256d c1 = clamp_round(_mm256_mul_pd(v1, i0), vlevels);
            __m256d f0, f1;
            errors8(x0, x1, c0, c1, fs0, fb0, &f0, &f1);
            e0 = _mm256_fmadd_pd(f0, f0, _mm256_fmadd_pd(f1, f1, e0));
            qq0 = _mm256_fmadd_pd(c0, c0, _mm256_fmadd_pd(c1, c1, qq0));
            qb0 = _mm256_fmadd_pd(c0, v0, _mm256_fmadd_pd(c1, v1, qb0));
        }
        {
            const __m256d v0 = _mm256_sub_pd(x0, b1), v1 = _mm256_sub_pd(x1, b1);
            const __m256d c0 = clamp_round(_mm256_mul_pd(v0, i1), vlevels);
            const __m256d c1 = clamp_round(_mm256_mul_pd(v1, i1), vlevels);
            __m256d f0, f1;
            errors8(x0, x1, c0, c1, fs1, fb1, &f0, &f1);
            e1 = _mm256_fmadd_pd(f0, f0, _mm256_fmadd_pd(f1, f1, e1));
            qq1 = _mm256_fmadd_pd(c0, c0, _mm256_fmadd_pd(c1, c1, qq1));
            qb1 = _mm256_fmadd_pd(c0, v0, _mm256_fmadd_pd(c1, v1, qb1));
        }
    }
    half_sums t0 = {hsum_pd(e0), hsum_pd(qq0), hsum_pd(qb0)}, t1 = {hsum_pd(e1), hsum_pd(qq1), hsum_pd(qb1)};
    if (i < d) {
        const row_ctx tail = {r->row + i, d - i, NULL, NULL, NULL};
        const half_sums u0 = half_pass_portable((row_ctx *)&tail, a0, levels);
        const half_sums u1 = half_pass_portable((row_ctx *)&tail, a1, levels);
        t0.error += u0.error;
        t0.qq += u0.qq;
        t0.qb += u0.qb;
        t1.error += u1.error;
        t1.qq += u1.qq;
        t1.qb += u1.qb;
    }
    *s0 = t0;
    *s1 = t1;
}

EMB_TARGET_SEARCH
static void write_codes_avx2(const float *row, size_t d, affine a, double levels, int bits, unsigned char *out) {
    const __m256d vbias = _mm256_set1_pd((double)a.bias), vinverse = _mm256_set1_pd(inverse_of(a.scale));
    const __m256d vlevels = _mm256_set1_pd(levels);
    const __m128i pairs4 = _mm_set1_epi16(0x1001); /* byte k = q[2k] + 16·q[2k+1] */
    const __m128i pairs2 = _mm_set1_epi16(0x0401), quads2 = _mm_set1_epi32(0x00100001); /* q0 + 4q1 + 16q2 + 64q3 */
    size_t i = 0;
    for (; i + 8 <= d; i += 8) {
        const __m128i c0 = _mm256_cvttpd_epi32(code4(_mm256_cvtps_pd(_mm_loadu_ps(row + i)), vbias, vinverse, vlevels));
        const __m128i c1 =
            _mm256_cvttpd_epi32(code4(_mm256_cvtps_pd(_mm_loadu_ps(row + i + 4)), vbias, vinverse, vlevels));
        const __m128i codes = _mm_packus_epi16(_mm_packs_epi32(c0, c1), _mm_setzero_si128()); /* 8 bytes */
        if (bits == 8) {
            _mm_storel_epi64((__m128i *)(out + i), codes);
        } else if (bits == 4) {
            const __m128i packed = _mm_packus_epi16(_mm_maddubs_epi16(codes, pairs4), _mm_setzero_si128());
            const uint32_t word = (uint32_t)_mm_cvtsi128_si32(packed);
            memcpy(out + i / 2, &word, 4);
        } else {
            const __m128i packed = _mm_madd_epi16(_mm_maddubs_epi16(codes, pairs2), quads2);
            out[i / 4] = (unsigned char)_mm_cvtsi128_si32(packed);
            out[i / 4 + 1] = (unsigned char)_mm_extract_epi32(packed, 1);
        }
    }
    write_codes_scalar(row, i, d, a, levels, bits, out);
}
#endif

/* ------------------------------------------------------------------------------------------
 * The search, written once over a table of passes (inlined into each path) */

typedef struct {
    int (*bounds)(row_ctx *, float *, float *);
    void (*first_pass)(row_ctx *, double, double, uint32_t, binsums *, affine, const affine *, double, first_sums *);
    void (*fill_bins)(row_ctx *, double, double, uint32_t, binsums *);
    refit_sums (*refit_pass)(row_ctx *, affine, double, double);
    double (*squared_error)(row_ctx *, affine, double);
    half_sums (*half_pass)(row_ctx *, affine, double);
    void (*half_pass2)(row_ctx *, affine, affine, double, half_sums *, half_sums *);
} passes;

/* Bins of the histogram filled before the walk, at each end, and filled in the first pass rather
 * than a pass of their own: the walk needs 1 bin a side with 255 levels (clipping costs more than
 * rounding at once), 4 to 9 with 15, 8 to 13 with 3 (measured on embedding tables). */
static inline int initial_end_bins(int levels) { return levels >= 127 ? 1 : levels >= 7 ? 8 : 13; }

static inline uint32_t end_bins_mask(int k) {
    const uint32_t low = k >= 16 ? 0xFFFFu : ((1u << k) - 1u);
    return low | (low << (HIST_BINS - k)) | (k >= 16 ? 0xFFFF0000u : 0u);
}

/* The reference's greedy estimate (RowwiseQuantizer.greedyClip.estimate), and its two clipping
 * terms. */
typedef struct {
    double span, bin_width, count, noise;
} walk_constants;

HOT double walk_estimate(const walk_constants *w, int lower, int upper, binsums below, binsums above,
                                   double *clipped_below, double *clipped_above) {
    const double lo = w->bin_width * (double)lower;
    const double hi = w->span - w->bin_width * (double)upper;
    const double width = hi - lo;
    const double inside = w->count - below.count - above.count;
    *clipped_below = (below.count * lo - 2 * below.sum) * lo + below.ssq;
    *clipped_above = (above.count * hi - 2 * above.sum) * hi + above.ssq;
    return inside * width * width * w->noise + *clipped_below + *clipped_above;
}

/* The greedy walk (RowwiseQuantizer.greedyClip) on the bins filled so far, filling the rest of
 * the histogram if it goes past them; returns the best (lower, upper). It stops once nothing
 * ahead can beat the best estimate: every estimate at (l', u') with l' >= lower and u' >= upper is
 * at least the current clipping terms (which only grow) minus the rounding of all of these terms,
 * which is below (12n + 70)·u·n·span² and over-covered by `slack`. (Tabulating the estimates, or
 * stepping without branches, measured no faster.) */
static inline __attribute__((always_inline)) void greedy_walk(const passes *P, row_ctx *r, const walk_constants *w,
                                                              double origin, double per_unit, binsums *bins,
                                                              int filled, int *best_lower, int *best_upper) {
    const double n = w->count;
    binsums below = {0, 0, 0}, above = {0, 0, 0};
    int lower = 0, upper = 0;
    double clipped_below, clipped_above;
    double best = walk_estimate(w, 0, 0, below, above, &clipped_below, &clipped_above);
    *best_lower = *best_upper = 0;
    const double slack = (16.0 * n + 256.0) * U * n * w->span * w->span;
    while (lower + upper < MAX_SHRINK) {
        STAT(ST_WALK_STEPS);
        if (lower >= filled || upper >= filled) {
            STAT(ST_FILL);
            memset(bins + filled, 0, (size_t)(HIST_BINS - 2 * filled) * sizeof bins[0]);
            P->fill_bins(r, origin, per_unit, ~end_bins_mask(filled), bins);
            filled = MAX_SHRINK;
        }
        const binsums raised = bins_plus(below, bins[lower]), lowered = bins_plus(above, bins[HIST_BINS - 1 - upper]);
        double raised_below, raised_above, lowered_below, lowered_above;
        const double raise_error = walk_estimate(w, lower + 1, upper, raised, above, &raised_below, &raised_above);
        const double lower_error = walk_estimate(w, lower, upper + 1, below, lowered, &lowered_below, &lowered_above);
        double error;
        if (raise_error <= lower_error) {
            lower += 1;
            below = raised;
            error = raise_error;
            clipped_below = raised_below;
            clipped_above = raised_above;
        } else {
            upper += 1;
            above = lowered;
            error = lower_error;
            clipped_below = lowered_below;
            clipped_above = lowered_above;
        }
        if (error < best) {
            best = error;
            *best_lower = lower;
            *best_upper = upper;
        }
        if (clipped_below + clipped_above > best + slack) break;
    }
}

/* The reference's refitPass estimate from the kernel's sums (Σq·y within qy_tol of the
 * reference's), with its bound; 0 if not finite. The bound also holds against the estimate's
 * exact value on the exact sums (used below). Exact inputs (all tolerances 0) give the
 * reference's bits, with tolerance 0. */
HOT int refit_estimate_with(refit_sums s, double qy_tol, affine a, double n, double origin, approx sum_y,
                            approx sum_yy, approx *estimate) {
    const double sc = (double)a.scale, beta = (double)a.bias - origin;
    const double t1 = sc * sc * s.qq, t2 = 2 * sc * beta * s.q, t3 = n * beta * beta;
    const double t4 = 2 * sc * s.qy, t5 = 2 * beta * sum_y.v, t6 = sum_yy.v;
    estimate->v = t1 + t2 + t3 - t4 - t5 + t6;
    if (qy_tol == 0 && sum_y.tol == 0 && sum_yy.tol == 0) {
        estimate->tol = 0;
        return isfinite(estimate->v);
    }
    /* Each evaluation is within γ(7)·Σ|t| of the exact expression, and the exact expression
     * moves by at most |2sc|·Δqy + |2β|·Δy + Δyy between the kernel's sums and the reference's. */
    const double magnitude = fabs(t1) + fabs(t2) + fabs(t3) + fabs(t4) + fabs(t5) + fabs(t6);
    estimate->tol = (16 * U * magnitude + fabs(2 * sc) * qy_tol + fabs(2 * beta) * sum_y.tol + sum_yy.tol) * 1.01;
    return isfinite(estimate->v) && isfinite(estimate->tol);
}

/* The same from the kernel's own sums. */
HOT int refit_estimate(refit_sums s, affine a, double n, double origin, approx sum_y, approx sum_yy,
                       approx *estimate) {
    return refit_estimate_with(s, sum_tol(s.qy, n), a, n, origin, sum_y, sum_yy, estimate);
}

/* The reference's refit from its own sums, operation for operation (exact inputs). */
HOT void refit_map_exact(refit_sums s, double n, double origin, double sum_y, int *has_refit, affine *refit) {
    *has_refit = 0;
    const double determinant = n * s.qq - s.q * s.q;
    if (!(determinant > 0)) return;
    const double slope = (n * s.qy - s.q * sum_y) / determinant;
    const float scale = (float)slope, bias = (float)(origin + (sum_y - slope * s.q) / n);
    if (!(scale > 0) || !isfinite(scale) || !isfinite(bias)) return;
    refit->scale = scale;
    refit->bias = bias;
    *has_refit = 1;
}

/* The reference's refitPass refit (least-squares scale and bias for the codes) from the kernel's
 * sums, following the reference's operations: slope = (n·Σqy − Σq·Σy) / det, bias = origin +
 * (Σy − slope·Σq) / n. Returns 0 when its rounding to float cannot be certified; otherwise
 * *has_refit and *refit as the reference's. Multiplying by reciprocals instead of dividing costs
 * 2u relative, in the bounds. */
HOT int refit_map(refit_sums s, double n, double inverse_n, double origin, approx sum_y, int *has_refit,
                  affine *refit) {
    *has_refit = 0;
    const double determinant = n * s.qq - s.q * s.q; /* exact inputs: the reference's bits */
    if (!(determinant > 0)) return 1;
    const double qy_tol = sum_tol(s.qy, n);
    const double a1 = n * s.qy, a2 = s.q * sum_y.v;
    const double numerator = a1 - a2;
    const double numerator_tol = n * qy_tol + s.q * sum_y.tol + 8 * U * (fabs(a1) + fabs(a2));
    const double inverse_determinant = 1.0 / determinant;
    const double slope = numerator * inverse_determinant;
    const double slope_tol = numerator_tol * inverse_determinant * 1.01 + 8 * U * fabs(slope);
    const double p = slope * s.q, inner = sum_y.v - p;
    const double inner_tol = sum_y.tol + slope_tol * s.q * 1.01 + 8 * U * (fabs(sum_y.v) + fabs(p));
    const double mean = inner * inverse_n, mean_tol = inner_tol * inverse_n * 1.01 + 8 * U * fabs(mean);
    const double b = origin + mean, b_tol = mean_tol * 1.01 + 4 * U * fabs(b);
    float scale, bias;
    const int certain = certain_float(slope, slope_tol, &scale) & certain_float(b, b_tol, &bias);
    if (!certain) return 0;
    if (!(scale > 0) || !isfinite(scale) || !isfinite(bias)) return 1;
    refit->scale = scale;
    refit->bias = bias;
    *has_refit = 1;
    return 1;
}

/* An interval [lo, hi] holding the reference's squaredError of map `a`, from an estimate of its
 * codes' moments computed (by refit_estimate) from sums `s`, Σy and Σy² that are each within
 * γ(n + 1)·itself of the exact sums (the kernel's lane sums and the reference's own both are).
 *
 * In real arithmetic on the exact sums, the estimate is R = Σ(q·s + β − y)², which is the squared
 * distance between the decoded row and the row but for the decode's two float roundings (δ) and
 * the roundings of y and β (ε). The computed estimate is within `model` of R: γ(7) of its terms'
 * magnitudes for its own roundings, and what the sums' errors move it by. sqrt of the decoded
 * row's squared distance is within ||δ|| + ||ε|| of sqrt(R), where |δ_i| <= 2^-24·(|q·s| +
 * |q·s + b|) + 2^-149, so ||δ||² <= 2^-47·(2·s²Σq² + 2·Σ(q·s + b)²) + n·2^-296 (1% to spare), and
 * ||ε||² <= 2u²·(Σy² + n·β²) (with room); so, with r = (||δ|| + ||ε||) / sqrt(R's lower end), the
 * squared distance is within factors (1 ∓ r)² of R's ends; and the reference's sum is within
 * (n + 4)·u of it. 0 when the decode could overflow or R is not clearly positive. */
HOT int error_interval(double estimate, refit_sums s, affine a, double n, double origin, double sum_y, double sum_yy,
                       double *lo, double *hi) {
    const double sc = (double)a.scale, b = (double)a.bias;
    if (!(sc * 255.0 + fabs(b) < 1e38)) return 0;
    const double beta = b - origin;
    const double magnitude = fabs(sc * sc * s.qq) + fabs(2 * sc * beta * s.q) + fabs(n * beta * beta) +
                             fabs(2 * sc * s.qy) + fabs(2 * beta * sum_y) + fabs(sum_yy);
    const double model = (16 * U * magnitude + fabs(2 * sc) * sum_tol(s.qy, n) + fabs(2 * beta) * sum_tol(sum_y, n) +
                          sum_tol(sum_yy, n)) * 1.01;
    const double low = estimate - 2 * model, high = estimate + 2 * model;
    if (!(low > 0) || !isfinite(high)) return 0;
    const double sq = sc * sc * s.qq;
    /* Σ(q·s + b)², plus the rounding of its terms (they can cancel) */
    const double decoded_squares = sq + 2 * sc * b * s.q + n * b * b + 8 * U * (sq + fabs(2 * sc * b * s.q) + n * b * b);
    const double rounding_sq = (2 * sq + 2 * (decoded_squares > 0 ? decoded_squares : 0)) * 0x1p-47 * 1.01 +
                               n * 0x1p-296 + 2.05 * U * U * (sum_yy + n * beta * beta);
    /* (||δ|| + ||ε||)² <= 2(||δ||² + ||ε||²) */
    const double r = sqrt(2 * rounding_sq / low) * (1 + 0x1p-40);
    const double order = (n + 8) * U * 1.01 + 16 * U;
    *lo = r < 1 ? low * (1 - r) * (1 - r) * (1 - order) : 0;
    *hi = high * (1 + r) * (1 + r) * (1 + order);
    return isfinite(*hi);
}

/* The reference's squared error of a map (RowwiseQuantizer.squaredError), known to three
 * degrees of sharpness: 0, an interval from the estimate (error_interval); 1, the decoded errors
 * summed in lanes (sum_tol); 2, exact (index order). Comparisons sharpen as far as they need. */
typedef struct {
    approx e;
    affine map;
    int tier;
} squared_error_value;

/* Tier 0 from an interval, or tier 1 when there is none. */
static inline __attribute__((always_inline)) squared_error_value error_value(const passes *P, row_ctx *r,
                                                                             double levels, affine map,
                                                                             double estimate, refit_sums sums,
                                                                             double origin, double sum_y,
                                                                             double sum_yy);

static inline __attribute__((always_inline)) void sharpen(const passes *P, row_ctx *r, double levels,
                                                          squared_error_value *x);

/* a < b·k for the reference's values (k = 1, or 1 − 2^-30 for the comparison with min/max). */
static inline __attribute__((always_inline)) int error_less(const passes *P, row_ctx *r, double levels,
                                                            squared_error_value *a, squared_error_value *b, double k) {
    for (;;) {
        approx threshold = b->e;
        if (k != 1) {
            threshold.v = b->e.v * k;
            if (b->e.tol != 0) threshold.tol = b->e.tol * k + 4 * U * fabs(threshold.v);
        }
        const int less = certain_less(a->e, threshold); /* infinite values are exact: tol 0 */
        if (less >= 0) return less;
        if (a->tier == 2 && b->tier == 2) return a->e.v < threshold.v;
        sharpen(P, r, levels, a->tier <= b->tier ? a : b);
    }
}

/* The reference's Σy and Σy² (greedyClip's total: every bin filled in index order, then the bins
 * added in order), unless already computed (tolerance 0). */
static inline __attribute__((always_inline)) void exact_moments(const passes *P, row_ctx *r, double origin,
                                                                double per_unit, approx *sum_y, approx *sum_yy) {
    if (sum_y->tol == 0 && sum_yy->tol == 0) return;
    binsums bins[HIST_BINS];
    memset(bins, 0, sizeof bins);
    P->fill_bins(r, origin, per_unit, 0xFFFFFFFFu, bins);
    binsums total = {0, 0, 0};
    for (int bin = 0; bin < HIST_BINS; bin++) total = bins_plus(total, bins[bin]);
    sum_y->v = total.sum;
    sum_y->tol = 0;
    sum_yy->v = total.ssq;
    sum_yy->tol = 0;
}

/* `estimate`: refit_estimate's value for the map (NaN if there is none). */
static inline __attribute__((always_inline)) squared_error_value error_value(const passes *P, row_ctx *r,
                                                                             double levels, affine map,
                                                                             double estimate, refit_sums sums,
                                                                             double origin, double sum_y,
                                                                             double sum_yy) {
    squared_error_value x;
    x.map = map;
    double lo, hi;
    if (error_interval(estimate, sums, map, (double)r->d, origin, sum_y, sum_yy, &lo, &hi)) {
        x.e.v = 0.5 * (lo + hi);
        x.e.tol = 0.25 * (hi - lo) + 4 * U * hi; /* [v − 2·tol, v + 2·tol] covers [lo, hi] */
        x.tier = 0;
    } else {
        x.tier = 0;
        sharpen(P, r, levels, &x);
    }
    return x;
}

static inline __attribute__((always_inline)) void sharpen(const passes *P, row_ctx *r, double levels,
                                                          squared_error_value *x) {
    if (x->tier == 0) {
        STAT(ST_FINAL_DECODE);
        x->e.v = P->squared_error(r, x->map, levels);
        x->e.tol = sum_tol(x->e.v, (double)r->d);
        x->tier = 1;
    } else if (x->tier == 1) {
        STAT(ST_FINAL_EXACT);
        x->e.v = squared_error_exact(r->row, r->d, x->map, levels);
        x->e.tol = 0;
        x->tier = 2;
    }
}

/* What the half search reuses of the float search: the moments (possibly made exact) and the
 * sums of one extra map, from the first pass. */
typedef struct {
    double origin;
    approx sum_y, sum_yy;
    refit_sums extra;
} search_state;

/* RowwiseQuantizer.search after finiteBounds, for a row with low < high, once the passes' row
 * context is set up; `extra`: one more map whose sums the first pass gathers (for the half
 * search), returned with the moments in `state`. */
static inline __attribute__((always_inline)) int search_core(const passes *P, row_ctx *r, int levels, float low,
                                                             float high, const affine *extra, search_state *state,
                                                             affine *result) {
    const size_t d = r->d;
    const double n = (double)d, lv = (double)levels, inverse_n = 1.0 / n;
    const double origin = (double)low;
    const double span = (double)high - origin;
    const walk_constants w = {span, span / (double)HIST_BINS, n, 1.0 / (12.0 * lv * lv)};
    const double per_unit = (double)HIST_BINS / span;
    const affine min_max = affine_from((double)low, (double)high, lv);

    binsums bins[HIST_BINS];
    const int filled = initial_end_bins(levels);
    memset(bins, 0, (size_t)filled * sizeof bins[0]); /* the rest: fill_bins */
    memset(bins + HIST_BINS - filled, 0, (size_t)filled * sizeof bins[0]);
    first_sums first;
    P->first_pass(r, origin, per_unit, end_bins_mask(filled), bins, min_max, extra, lv, &first);
    int best_lower, best_upper;
    greedy_walk(P, r, &w, origin, per_unit, bins, filled, &best_lower, &best_upper);
    const double clip_low = origin + w.bin_width * (double)best_lower;
    const double clip_high = origin + (span - w.bin_width * (double)best_upper);

    /* Alternating minimisation (RowwiseQuantizer.search.refine). A decision too close to call
     * on the kernel's sums is taken on the reference's own: its histogram moments (every bin
     * filled in index order, then summed in bin order) and the pass's Σq·y in index order. This
     * happens where the reference's result hangs on its last bits, e.g. a bias near 0 for a row
     * whose minimum is 0 (ReLU outputs). */
    approx sum_y = {first.y, sum_tol(first.y, n)}, sum_yy = {first.yy, sum_tol(first.yy, n)};
    affine current = affine_from(clip_low, clip_high, lv), candidate = current;
    approx best_estimate = {INFINITY, 0};
    refit_sums best_sums = {0, 0, 0};
    for (int pass = 0; pass < REFINE_PASSES; pass++) {
        /* With 255 levels the walk keeps [min, max] (clipping one bin costs more than rounding
         * at once), so the first map is the plain min/max map, whose sums the first pass has. */
        refit_sums s;
        if (pass == 0 && affine_equal(current, min_max)) {
            s = first.min_max;
        } else {
            s = P->refit_pass(r, current, lv, origin);
            STAT(ST_REFINE);
        }
        int qy_exact = 0;
        approx estimate;
        if (!refit_estimate(s, current, n, origin, sum_y, sum_yy, &estimate)) return EMB_ROWWISE_UNDECIDED;
        int improved = certain_less(estimate, best_estimate);
        if (improved < 0) {
            STAT(ST_EXACT_REFINE);
            exact_moments(P, r, origin, per_unit, &sum_y, &sum_yy);
            s.qy = refit_qy_exact(r->row, d, current, lv, origin);
            qy_exact = 1;
            refit_estimate_with(s, 0, current, n, origin, sum_y, sum_yy, &estimate);
            if (best_estimate.tol != 0) {
                refit_sums b = best_sums;
                b.qy = refit_qy_exact(r->row, d, candidate, lv, origin);
                refit_estimate_with(b, 0, candidate, n, origin, sum_y, sum_yy, &best_estimate);
            }
            improved = estimate.v < best_estimate.v;
        }
        if (!improved) break;
        best_estimate = estimate;
        best_sums = s;
        candidate = current;
        int has_refit;
        affine refit;
        if (!refit_map(s, n, inverse_n, origin, sum_y, &has_refit, &refit)) {
            STAT(ST_EXACT_REFINE);
            exact_moments(P, r, origin, per_unit, &sum_y, &sum_yy);
            if (!qy_exact) s.qy = refit_qy_exact(r->row, d, current, lv, origin);
            refit_map_exact(s, n, origin, sum_y.v, &has_refit, &refit);
        }
        if (!has_refit || affine_equal(refit, current)) break;
        current = refit;
    }
    state->origin = origin;
    state->extra = first.extra;

    /* Comparison with the plain rule (the reference's exact squared errors): from the estimates'
     * intervals when they settle it, else from the decoded errors. */
    approx mm_estimate;
    if (!refit_estimate(first.min_max, min_max, n, origin, sum_y, sum_yy, &mm_estimate)) mm_estimate.v = NAN;
    squared_error_value mm = error_value(P, r, lv, min_max, mm_estimate.v, first.min_max, origin, sum_y.v, sum_yy.v);
    if (!affine_equal(candidate, min_max)) {
        squared_error_value ce =
            error_value(P, r, lv, candidate, best_estimate.v, best_sums, origin, sum_y.v, sum_yy.v);
        STAT(ST_FINAL_ESTIMATE);
        if (error_less(P, r, lv, &ce, &mm, 1 - 0x1p-30)) {
            *result = candidate;
            state->sum_y = sum_y;
            state->sum_yy = sum_yy;
            return EMB_ROWWISE_DECIDED;
        }
    }
    state->sum_y = sum_y;
    state->sum_yy = sum_yy;
    /* The reference keeps min/max if its error is finite: always when it has an interval (which
     * rules out overflow); a decoded sum is infinite exactly when the reference's is. */
    if (mm.tier == 0 || isfinite(mm.e.v)) {
        *result = min_max;
        return EMB_ROWWISE_DECIDED;
    }
    return EMB_ROWWISE_UNDECIDED;
}

static inline size_t first_nonfinite(const float *row, size_t d) {
    size_t i = 0;
    while (i < d && isfinite(row[i])) i++;
    return i;
}

/* Scratch for xd, y and the first pass's bits: on the stack for rows up to STACK_ROW values. */
enum { STACK_ROW = 1024, STACK_DOUBLES = 2 * STACK_ROW + STACK_ROW / 64 };

static inline int scratch_init(row_ctx *r, const float *row, size_t d, double *stack) {
    r->row = row;
    r->d = d;
    if (d <= STACK_ROW) {
        r->xd = stack;
    } else {
        r->xd = (double *)malloc((2 * d + (d + 63) / 64) * sizeof(double));
        if (!r->xd) return 0;
    }
    r->y = r->xd + d;
    r->picked = (uint64_t *)(void *)(r->y + d);
    return 1;
}

static inline void scratch_free(row_ctx *r) {
    if (r->d > STACK_ROW) free(r->xd);
}

static inline __attribute__((always_inline)) int search(const passes *P, const float *row, size_t d, int levels,
                                                        float *scale_bias, size_t *bad_index) {
    STAT(ST_ROWS);
    if (d == 0 || d > ((size_t)1 << 28) || levels < 1 || levels > 255) return EMB_ROWWISE_UNDECIDED;
    double stack[STACK_DOUBLES];
    row_ctx r;
    if (!scratch_init(&r, row, d, stack)) return EMB_ROWWISE_UNDECIDED;
    float low, high;
    int status = EMB_ROWWISE_DECIDED;
    affine a;
    if (!P->bounds(&r, &low, &high)) {
        *bad_index = first_nonfinite(row, d);
        status = EMB_ROWWISE_NONFINITE;
    } else if (low == high) {
        a.scale = 0;
        a.bias = low;
    } else {
        search_state state;
        status = search_core(P, &r, levels, low, high, NULL, &state, &a);
    }
    scratch_free(&r);
    if (status == EMB_ROWWISE_DECIDED) {
        scale_bias[0] = a.scale;
        scale_bias[1] = a.bias;
    }
    return status;
}

/* ------------------------------------------------------------------------------------------
 * Half parameters (HalfRowwiseQuantizer) */

/* HalfRowwiseQuantizer.fitScale for one bias, as a chain of passes: `fit_step` takes the sums of
 * the pass at `current` and decides what the reference decides after it. Errors are compared on
 * the estimates' intervals, sharpened only when those overlap. */
typedef struct {
    uint16_t bias, best_scale, current;
    squared_error_value best;
    int passes, active;
} fit_chain;

static inline void fit_start(fit_chain *c, uint16_t bias, uint16_t scale, int active) {
    c->bias = bias;
    c->best_scale = scale;
    c->best.e.v = INFINITY;
    c->best.e.tol = 0;
    c->best.map = half_affine(scale, bias);
    c->best.tier = 2; /* +infinity is exact */
    c->current = scale;
    c->passes = 0;
    c->active = active;
}

static inline __attribute__((always_inline)) void fit_step(const passes *P, row_ctx *r, double levels, fit_chain *c,
                                                          half_sums s) {
    const double n = (double)r->d;
    const affine a = half_affine(c->current, c->bias);
    STAT(ST_HALF_PASS);
    c->passes += 1;
    c->active = 0; /* until shown otherwise */
    squared_error_value error = {{s.error, sum_tol(s.error, n)}, a, 1};
    if (!error_less(P, r, levels, &error, &c->best, 1)) return;
    c->best_scale = c->current;
    c->best = error;
    if (!(s.qq > 0)) return;
    /* The next scale: the half nearest Σq·(x − b) / Σq², rounded in index order if needed. */
    const double ratio = s.qb / s.qq, ratio_tol = sum_tol(s.qb, n) / s.qq * 1.01 + 4 * U * fabs(ratio);
    uint16_t next = half_nearest(max0(ratio - 2 * ratio_tol));
    if (next != half_nearest(max0(ratio + 2 * ratio_tol)) && (STAT(ST_HALF_EXACT_QY), 1))
        next = half_nearest(max0(half_qy_exact(r->row, r->d, a, levels) / s.qq));
    if (next == c->current) return;
    c->current = next;
    c->active = c->passes < REFINE_PASSES;
}

/* Both fits, their passes run together while both go on. */
static inline __attribute__((always_inline)) void fit_both(const passes *P, row_ctx *r, double levels,
                                                           fit_chain *c) {
    while (c[0].active && c[1].active) {
        half_sums s0, s1;
        P->half_pass2(r, half_affine(c[0].current, c[0].bias), half_affine(c[1].current, c[1].bias), levels, &s0,
                      &s1);
        fit_step(P, r, levels, &c[0], s0);
        fit_step(P, r, levels, &c[1], s1);
    }
    for (int k = 0; k < 2; k++) {
        while (c[k].active)
            fit_step(P, r, levels, &c[k], P->half_pass(r, half_affine(c[k].current, c[k].bias), levels));
    }
}

/* HalfRowwiseQuantizer.search after finiteBounds, for a row with low < high. */
static inline __attribute__((always_inline)) int half_search_core(const passes *P, row_ctx *r, int levels, float low,
                                                                  float high, uint16_t *scale_bias) {
    const double n = (double)r->d, lv = (double)levels;
    /* The plain rule on rounded parameters, whose sums the first pass gathers. */
    const uint16_t mm_bias = half_nearest((double)low);
    const uint16_t mm_scale = half_nearest(max0(((double)high - (double)emb_half_to_float(mm_bias)) / lv));
    const affine mm_map = half_affine(mm_scale, mm_bias);
    affine single;
    search_state st;
    const int status = search_core(P, r, levels, low, high, &mm_map, &st, &single);
    if (status != EMB_ROWWISE_DECIDED) return status;
    const double top = (double)single.bias + lv * (double)single.scale;
    const uint16_t nearest = half_nearest((double)single.bias);
    uint16_t biases[2];
    int has[2];
    if (emb_half_to_float(nearest) <= single.bias) {
        biases[0] = nearest;
        has[0] = 1;
        has[1] = half_step(nearest, 1, &biases[1]);
    } else {
        has[0] = half_step(nearest, -1, &biases[0]);
        biases[1] = nearest;
        has[1] = 1;
    }
    fit_chain chains[2];
    for (int k = 0; k < 2; k++) {
        const uint16_t bias = has[k] ? biases[k] : 0;
        fit_start(&chains[k], bias, half_nearest(max0((top - (double)emb_half_to_float(bias)) / lv)), has[k]);
    }
    fit_both(P, r, lv, chains);
    /* The better fit (the first on a tie), starting from (0, nearest) at +infinity. */
    uint16_t cand_scale = 0, cand_bias = nearest;
    squared_error_value cand = {{INFINITY, 0}, half_affine(0, nearest), 2};
    for (int k = 0; k < 2; k++) {
        if (!has[k]) continue;
        if (error_less(P, r, lv, &chains[k].best, &cand, 1)) {
            cand = chains[k].best;
            cand_scale = chains[k].best_scale;
            cand_bias = chains[k].bias;
        }
    }
    scale_bias[0] = mm_scale;
    scale_bias[1] = mm_bias;
    if (cand_scale != mm_scale || cand_bias != mm_bias) {
        approx mm_estimate;
        if (!refit_estimate(st.extra, mm_map, n, st.origin, st.sum_y, st.sum_yy, &mm_estimate)) mm_estimate.v = NAN;
        squared_error_value mm =
            error_value(P, r, lv, mm_map, mm_estimate.v, st.extra, st.origin, st.sum_y.v, st.sum_yy.v);
        if (error_less(P, r, lv, &cand, &mm, 1 - 0x1p-30)) {
            scale_bias[0] = cand_scale;
            scale_bias[1] = cand_bias;
        }
    }
    return EMB_ROWWISE_DECIDED;
}

/* HalfRowwiseQuantizer.constant, with its squared errors in index order (rare: exact and simple
 * beats fast). A value that is a half is stored exactly; otherwise the better of the nearest
 * half as bias and, with the half below as bias, a code and scale that land closer. */
static void half_constant(const float *row, size_t d, float value, double levels, uint16_t *scale_bias) {
    const uint16_t nearest = half_nearest((double)value);
    scale_bias[0] = 0;
    scale_bias[1] = nearest;
    const float nearest_value = emb_half_to_float(nearest);
    if (nearest_value == value) return;
    double best = squared_error_exact(row, d, half_affine(0, nearest), levels);
    uint16_t below = nearest;
    if (!(nearest_value < value) && !half_step(nearest, -1, &below)) return;
    const float below_value = emb_half_to_float(below);
    if (!(below_value < value)) return;
    const double residual = (double)value - (double)below_value;
    for (int code = 1; code <= (int)levels; code++) {
        const uint16_t scale = half_nearest(residual / (double)code);
        const double error = squared_error_exact(row, d, half_affine(scale, below), levels);
        if (error < best) {
            best = error;
            scale_bias[0] = scale;
            scale_bias[1] = below;
        }
    }
}

static inline __attribute__((always_inline)) int half_search(const passes *P, const float *row, size_t d, int levels,
                                                             uint16_t *scale_bias, size_t *bad_index) {
    if (d == 0 || d > ((size_t)1 << 28) || levels < 1 || levels > 255) return EMB_ROWWISE_UNDECIDED;
    double stack[STACK_DOUBLES];
    row_ctx r;
    if (!scratch_init(&r, row, d, stack)) return EMB_ROWWISE_UNDECIDED;
    float low, high;
    int status;
    if (!P->bounds(&r, &low, &high)) {
        *bad_index = first_nonfinite(row, d);
        status = EMB_ROWWISE_NONFINITE;
    } else if (low == high) {
        half_constant(row, d, low, (double)levels, scale_bias);
        status = EMB_ROWWISE_DECIDED;
    } else {
        status = half_search_core(P, &r, levels, low, high, scale_bias);
    }
    scratch_free(&r);
    return status;
}

/* ------------------------------------------------------------------------------------------
 * Entry points */

static const passes portable_passes = {bounds_portable,     first_pass_portable,    fill_bins_portable,
                                       refit_pass_portable, squared_error_portable, half_pass_portable,
                                       half_pass2_portable};

int emb_rowwise_search_portable(const float *row, size_t d, int levels, float *scale_bias, size_t *bad_index) {
    return search(&portable_passes, row, d, levels, scale_bias, bad_index);
}

int emb_rowwise_sbhalf_search_portable(const float *row, size_t d, int levels, uint16_t *scale_bias,
                                       size_t *bad_index) {
    return half_search(&portable_passes, row, d, levels, scale_bias, bad_index);
}

void emb_rowwise_write_codes_portable(const float *row, size_t d, float scale, float bias, int levels, int bits,
                                      void *out) {
    const affine a = {scale, bias};
    write_codes_scalar(row, 0, d, a, (double)levels, bits, (unsigned char *)out);
}

#if EMB_X86
static const passes avx2_passes = {bounds_avx2,     first_pass_avx2,    fill_bins_avx2,
                                   refit_pass_avx2, squared_error_avx2, half_pass_avx2,
                                   half_pass2_avx2};

EMB_TARGET_SEARCH
static int search_avx2(const float *row, size_t d, int levels, float *scale_bias, size_t *bad_index) {
    return search(&avx2_passes, row, d, levels, scale_bias, bad_index);
}

EMB_TARGET_SEARCH
static int half_search_avx2(const float *row, size_t d, int levels, uint16_t *scale_bias, size_t *bad_index) {
    return half_search(&avx2_passes, row, d, levels, scale_bias, bad_index);
}

/* -1 until the first call, then whether the CPU has FMA besides AVX2 and F16C. */
static _Atomic int search_has_fma = -1;

static inline int search_avx2_ok(void) {
    int fma = atomic_load_explicit(&search_has_fma, memory_order_relaxed);
    if (fma < 0) {
        __builtin_cpu_init();
        fma = __builtin_cpu_supports("fma") ? 1 : 0;
        atomic_store_explicit(&search_has_fma, fma, memory_order_relaxed);
    }
    return fma && emb_isa() == EMB_ISA_AVX2_F16C;
}
#endif

int emb_rowwise_search(const float *row, size_t d, int levels, float *scale_bias, size_t *bad_index) {
#if EMB_X86
    if (search_avx2_ok()) return search_avx2(row, d, levels, scale_bias, bad_index);
#endif
    return emb_rowwise_search_portable(row, d, levels, scale_bias, bad_index);
}

int emb_rowwise_sbhalf_search(const float *row, size_t d, int levels, uint16_t *scale_bias, size_t *bad_index) {
#if EMB_X86
    if (search_avx2_ok()) return half_search_avx2(row, d, levels, scale_bias, bad_index);
#endif
    return emb_rowwise_sbhalf_search_portable(row, d, levels, scale_bias, bad_index);
}

void emb_rowwise_write_codes(const float *row, size_t d, float scale, float bias, int levels, int bits, void *out) {
#if EMB_X86
    if (search_avx2_ok()) {
        const affine a = {scale, bias};
        write_codes_avx2(row, d, a, (double)levels, bits, (unsigned char *)out);
        return;
    }
#endif
    emb_rowwise_write_codes_portable(row, d, scale, bias, levels, bits, out);
}
