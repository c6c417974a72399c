/* Brute-force dot products for `Store.evaluate`: nearest neighbours by cosine and dot-product
 * errors between source rows and a store's decoded rows. Offline, like the tc encoder: the AVX2
 * path fuses multiply-adds and sums in a different order from the portable path, and callers
 * allow for float32 rounding (the header states the bound they rely on). */
#include "kernels_internal.h"

void emb_knn_pack(const float *rows, size_t count, size_t d, const double *inverse_norms, float *panels) {
    const size_t panel_count = (count + EMB_KNN_PANEL - 1) / EMB_KNN_PANEL;
    for (size_t p = 0; p < panel_count; p++) {
        float *panel = panels + p * d * EMB_KNN_PANEL;
        for (size_t j = 0; j < EMB_KNN_PANEL; j++) {
            const size_t r = p * EMB_KNN_PANEL + j;
            if (r < count) {
                const float *row = rows + r * d;
                const double inverse = inverse_norms ? inverse_norms[r] : 1.0;
                for (size_t k = 0; k < d; k++) panel[k * EMB_KNN_PANEL + j] = (float)((double)row[k] * inverse);
            } else {
                for (size_t k = 0; k < d; k++) panel[k * EMB_KNN_PANEL + j] = 0;
            }
        }
    }
}

/* Portable bodies: one query against one panel at a time, d terms summed in order. */
static void knn_panel_portable(const float *query, size_t d, const float *panel, float *scores) {
    float sums[EMB_KNN_PANEL] = {0};
    for (size_t k = 0; k < d; k++) {
        const float q = query[k];
        for (size_t j = 0; j < EMB_KNN_PANEL; j++) sums[j] += q * panel[k * EMB_KNN_PANEL + j];
    }
    memcpy(scores, sums, sizeof sums);
}

size_t emb_knn_scores_above_portable(const float *queries, size_t qcount, size_t d, const float *panels, size_t count,
                                     const float *threshold, uint32_t *out_query, uint32_t *out_row,
                                     float *out_score) {
    size_t emitted = 0;
    float scores[EMB_KNN_PANEL];
    for (size_t q = 0; q < qcount; q++) {
        for (size_t row0 = 0; row0 < count; row0 += EMB_KNN_PANEL) {
            knn_panel_portable(queries + q * d, d, panels + row0 * d, scores);
            for (size_t j = 0; j < EMB_KNN_PANEL && row0 + j < count; j++) {
                if (scores[j] > threshold[q]) {
                    out_query[emitted] = (uint32_t)q;
                    out_row[emitted] = (uint32_t)(row0 + j);
                    out_score[emitted] = scores[j];
                    emitted++;
                }
            }
        }
    }
    return emitted;
}

void emb_knn_scores_portable(const float *queries, size_t qcount, size_t d, const float *panels, size_t count,
                             float *out, size_t out_stride) {
    float scores[EMB_KNN_PANEL];
    for (size_t q = 0; q < qcount; q++) {
        for (size_t row0 = 0; row0 < count; row0 += EMB_KNN_PANEL) {
            knn_panel_portable(queries + q * d, d, panels + row0 * d, scores);
            for (size_t j = 0; j < EMB_KNN_PANEL && row0 + j < count; j++) out[q * out_stride + row0 + j] = scores[j];
        }
    }
}

double emb_dot_f64_portable(const float *a, const float *b, size_t d) {
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;
    for (; i + 4 <= d; i += 4) {
        s0 += (double)a[i] * (double)b[i];
        s1 += (double)a[i + 1] * (double)b[i + 1];
        s2 += (double)a[i + 2] * (double)b[i + 2];
        s3 += (double)a[i + 3] * (double)b[i + 3];
    }
    for (; i < d; i++) s0 += (double)a[i] * (double)b[i];
    return (s0 + s1) + (s2 + s3);
}

#if EMB_X86
/* The register tile: QT queries (1 to 6, a constant after inlining) against one panel of 16 rows,
 * 2 x QT accumulators of 8 lanes. Each step over k loads the panel's 16 values (two vectors)
 * once and broadcasts each query's value: 2 + QT loads for 2·QT fused multiply-adds. Six
 * queries use 12 of the 16 ymm registers; the sums stay in registers for the whole row. */
#define KNN_TILE_QUERIES 6

__attribute__((always_inline, target("avx2,fma")))
static inline void knn_tile_avx2(const float *queries, size_t d, const float *panel, const size_t QT,
                                 __m256 lo[KNN_TILE_QUERIES], __m256 hi[KNN_TILE_QUERIES]) {
    for (size_t i = 0; i < QT; i++) lo[i] = hi[i] = _mm256_setzero_ps();
    for (size_t k = 0; k < d; k++) {
        const __m256 p0 = _mm256_loadu_ps(panel + k * EMB_KNN_PANEL);
        const __m256 p1 = _mm256_loadu_ps(panel + k * EMB_KNN_PANEL + 8);
        for (size_t i = 0; i < QT; i++) {
            const __m256 q = _mm256_broadcast_ss(queries + i * d + k);
            lo[i] = _mm256_fmadd_ps(q, p0, lo[i]);
            hi[i] = _mm256_fmadd_ps(q, p1, hi[i]);
        }
    }
}

/* QT queries against every panel, emitting the scores above each query's threshold. */
__attribute__((always_inline, target("avx2,fma")))
static inline size_t knn_above_avx2(const float *queries, size_t q0, const size_t QT, size_t d, const float *panels,
                                    size_t count, const float *threshold, uint32_t *out_query, uint32_t *out_row,
                                    float *out_score, size_t emitted) {
    __m256 lo[KNN_TILE_QUERIES], hi[KNN_TILE_QUERIES];
    for (size_t row0 = 0; row0 < count; row0 += EMB_KNN_PANEL) {
        knn_tile_avx2(queries + q0 * d, d, panels + row0 * d, QT, lo, hi);
        const size_t valid = count - row0 >= EMB_KNN_PANEL ? EMB_KNN_PANEL : count - row0;
        const unsigned valid_mask = (unsigned)((1u << valid) - 1u);
        for (size_t i = 0; i < QT; i++) {
            const __m256 t = _mm256_set1_ps(threshold[q0 + i]);
            unsigned mask = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(lo[i], t, _CMP_GT_OQ)) |
                            (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(hi[i], t, _CMP_GT_OQ)) << 8;
            mask &= valid_mask;
            if (!mask) continue;
            float scores[EMB_KNN_PANEL];
            _mm256_storeu_ps(scores, lo[i]);
            _mm256_storeu_ps(scores + 8, hi[i]);
            while (mask) {
                const unsigned j = (unsigned)__builtin_ctz(mask);
                out_query[emitted] = (uint32_t)(q0 + i);
                out_row[emitted] = (uint32_t)(row0 + j);
                out_score[emitted] = scores[j];
                emitted++;
                mask &= mask - 1;
            }
        }
    }
    return emitted;
}

__attribute__((target("avx2,fma")))
static size_t knn_scores_above_avx2(const float *queries, size_t qcount, size_t d, const float *panels, size_t count,
                                    const float *threshold, uint32_t *out_query, uint32_t *out_row,
                                    float *out_score) {
    size_t emitted = 0, q0 = 0;
    for (; q0 + KNN_TILE_QUERIES <= qcount; q0 += KNN_TILE_QUERIES)
        emitted = knn_above_avx2(queries, q0, KNN_TILE_QUERIES, d, panels, count, threshold, out_query, out_row,
                                 out_score, emitted);
    /* The last 1 to 5 queries, each with a tile of its own size (constants, so the loops unroll). */
    switch (qcount - q0) {
    case 5: return knn_above_avx2(queries, q0, 5, d, panels, count, threshold, out_query, out_row, out_score, emitted);
    case 4: return knn_above_avx2(queries, q0, 4, d, panels, count, threshold, out_query, out_row, out_score, emitted);
    case 3: return knn_above_avx2(queries, q0, 3, d, panels, count, threshold, out_query, out_row, out_score, emitted);
    case 2: return knn_above_avx2(queries, q0, 2, d, panels, count, threshold, out_query, out_row, out_score, emitted);
    case 1: return knn_above_avx2(queries, q0, 1, d, panels, count, threshold, out_query, out_row, out_score, emitted);
    default: return emitted;
    }
}

__attribute__((always_inline, target("avx2,fma")))
static inline void knn_scores_tile_avx2(const float *queries, size_t q0, const size_t QT, size_t d,
                                        const float *panels, size_t count, float *out, size_t out_stride) {
    __m256 lo[KNN_TILE_QUERIES], hi[KNN_TILE_QUERIES];
    for (size_t row0 = 0; row0 < count; row0 += EMB_KNN_PANEL) {
        knn_tile_avx2(queries + q0 * d, d, panels + row0 * d, QT, lo, hi);
        const size_t valid = count - row0 >= EMB_KNN_PANEL ? EMB_KNN_PANEL : count - row0;
        for (size_t i = 0; i < QT; i++) {
            float *dst = out + (q0 + i) * out_stride + row0;
            if (valid == EMB_KNN_PANEL) {
                _mm256_storeu_ps(dst, lo[i]);
                _mm256_storeu_ps(dst + 8, hi[i]);
            } else {
                float scores[EMB_KNN_PANEL];
                _mm256_storeu_ps(scores, lo[i]);
                _mm256_storeu_ps(scores + 8, hi[i]);
                memcpy(dst, scores, valid * sizeof(float));
            }
        }
    }
}

__attribute__((target("avx2,fma")))
static void knn_scores_avx2(const float *queries, size_t qcount, size_t d, const float *panels, size_t count,
                            float *out, size_t out_stride) {
    size_t q0 = 0;
    for (; q0 + KNN_TILE_QUERIES <= qcount; q0 += KNN_TILE_QUERIES)
        knn_scores_tile_avx2(queries, q0, KNN_TILE_QUERIES, d, panels, count, out, out_stride);
    switch (qcount - q0) {
    case 5: knn_scores_tile_avx2(queries, q0, 5, d, panels, count, out, out_stride); break;
    case 4: knn_scores_tile_avx2(queries, q0, 4, d, panels, count, out, out_stride); break;
    case 3: knn_scores_tile_avx2(queries, q0, 3, d, panels, count, out, out_stride); break;
    case 2: knn_scores_tile_avx2(queries, q0, 2, d, panels, count, out, out_stride); break;
    case 1: knn_scores_tile_avx2(queries, q0, 1, d, panels, count, out, out_stride); break;
    default: break;
    }
}

__attribute__((target("avx2,fma")))
static double dot_f64_avx2(const float *a, const float *b, size_t d) {
    __m256d s0 = _mm256_setzero_pd(), s1 = s0;
    size_t i = 0;
    for (; i + 8 <= d; i += 8) {
        s0 = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm_loadu_ps(a + i)), _mm256_cvtps_pd(_mm_loadu_ps(b + i)), s0);
        s1 = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm_loadu_ps(a + i + 4)), _mm256_cvtps_pd(_mm_loadu_ps(b + i + 4)), s1);
    }
    const __m256d s = _mm256_add_pd(s0, s1);
    const __m128d h = _mm_add_pd(_mm256_castpd256_pd128(s), _mm256_extractf128_pd(s, 1));
    double sum = _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
    for (; i < d; i++) sum += (double)a[i] * (double)b[i];
    return sum;
}

/* -1 until the first call, then whether the AVX2 bodies may run (AVX2, F16C and FMA). */
static _Atomic int knn_use_avx2 = -1;

static int knn_avx2(void) {
    int use = atomic_load_explicit(&knn_use_avx2, memory_order_relaxed);
    if (use < 0) {
        __builtin_cpu_init();
        use = emb_isa() == EMB_ISA_AVX2_F16C && __builtin_cpu_supports("fma") ? 1 : 0;
        atomic_store_explicit(&knn_use_avx2, use, memory_order_relaxed);
    }
    return use;
}
#endif

size_t emb_knn_scores_above(const float *queries, size_t qcount, size_t d, const float *panels, size_t count,
                            const float *threshold, uint32_t *out_query, uint32_t *out_row, float *out_score) {
#if EMB_X86
    if (knn_avx2())
        return knn_scores_above_avx2(queries, qcount, d, panels, count, threshold, out_query, out_row, out_score);
#endif
    return emb_knn_scores_above_portable(queries, qcount, d, panels, count, threshold, out_query, out_row, out_score);
}

void emb_knn_scores(const float *queries, size_t qcount, size_t d, const float *panels, size_t count, float *out,
                    size_t out_stride) {
#if EMB_X86
    if (knn_avx2()) {
        knn_scores_avx2(queries, qcount, d, panels, count, out, out_stride);
        return;
    }
#endif
    emb_knn_scores_portable(queries, qcount, d, panels, count, out, out_stride);
}

double emb_dot_f64(const float *a, const float *b, size_t d) {
#if EMB_X86
    if (knn_avx2()) return dot_f64_avx2(a, b, d);
#endif
    return emb_dot_f64_portable(a, b, d);
}
