/* The tc encoder's projection: c_j = basis[j] . (x - mean) for j < k. Offline (bulk loads and
 * puts), so unlike the decoders it may fuse multiply-adds and its summation order may differ
 * between the AVX2 and portable paths: FORMAT.md leaves the encoder's arithmetic to the writer. */
#include "kernels_internal.h"

void emb_tc_project_portable(const float *mean, const float *basis, size_t k, size_t d, const float *x,
                             float *centred, float *out) {
    for (size_t i = 0; i < d; i++) centred[i] = x[i] - mean[i];
    for (size_t j = 0; j < k; j++) {
        const float *v = basis + j * d;
        float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        size_t i = 0;
        for (; i + 4 <= d; i += 4) {
            s0 += v[i] * centred[i];
            s1 += v[i + 1] * centred[i + 1];
            s2 += v[i + 2] * centred[i + 2];
            s3 += v[i + 3] * centred[i + 3];
        }
        for (; i < d; i++) s0 += v[i] * centred[i];
        out[j] = (s0 + s1) + (s2 + s3);
    }
}

#if EMB_X86
static inline float hsum256(__m256 v) __attribute__((target("avx2,fma")));
static inline float hsum256(__m256 v) {
    const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)));
}

/* Four basis rows per pass over the centred row, so each load of x serves four dot products. */
__attribute__((target("avx2,fma")))
static void tc_project_avx2(const float *mean, const float *basis, size_t k, size_t d, const float *x,
                            float *centred, float *out) {
    size_t i = 0;
    for (; i + 8 <= d; i += 8)
        _mm256_storeu_ps(centred + i, _mm256_sub_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(mean + i)));
    for (; i < d; i++) centred[i] = x[i] - mean[i];
    const size_t body = d & ~(size_t)7;
    size_t j = 0;
    for (; j + 4 <= k; j += 4) {
        const float *v0 = basis + j * d, *v1 = v0 + d, *v2 = v1 + d, *v3 = v2 + d;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (size_t e = 0; e < body; e += 8) {
            const __m256 c = _mm256_loadu_ps(centred + e);
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(v0 + e), c, a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(v1 + e), c, a1);
            a2 = _mm256_fmadd_ps(_mm256_loadu_ps(v2 + e), c, a2);
            a3 = _mm256_fmadd_ps(_mm256_loadu_ps(v3 + e), c, a3);
        }
        float s0 = hsum256(a0), s1 = hsum256(a1), s2 = hsum256(a2), s3 = hsum256(a3);
        for (size_t e = body; e < d; e++) {
            s0 += v0[e] * centred[e];
            s1 += v1[e] * centred[e];
            s2 += v2[e] * centred[e];
            s3 += v3[e] * centred[e];
        }
        out[j] = s0;
        out[j + 1] = s1;
        out[j + 2] = s2;
        out[j + 3] = s3;
    }
    for (; j < k; j++) {
        const float *v = basis + j * d;
        __m256 a = _mm256_setzero_ps();
        for (size_t e = 0; e < body; e += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(v + e), _mm256_loadu_ps(centred + e), a);
        float s = hsum256(a);
        for (size_t e = body; e < d; e++) s += v[e] * centred[e];
        out[j] = s;
    }
}
#endif

#if EMB_X86
/* -1 until the first call, then whether the CPU has FMA (every thread computes the same). */
static _Atomic int tc_has_fma = -1;

static int tc_use_avx2(void) {
    int fma = atomic_load_explicit(&tc_has_fma, memory_order_relaxed);
    if (fma < 0) {
        __builtin_cpu_init();
        fma = __builtin_cpu_supports("fma") ? 1 : 0;
        atomic_store_explicit(&tc_has_fma, fma, memory_order_relaxed);
    }
    return fma && emb_isa() == EMB_ISA_AVX2_F16C;
}
#endif

void emb_tc_project(const float *mean, const float *basis, size_t k, size_t d, const float *x, float *centred,
                    float *out) {
#if EMB_X86
    if (tc_use_avx2()) {
        tc_project_avx2(mean, basis, k, d, x, centred, out);
        return;
    }
#endif
    emb_tc_project_portable(mean, basis, k, d, x, centred, out);
}

float emb_tc_outside_energy_portable(const float *basis, size_t k, size_t d, const float *centred, const float *coef) {
    float energy = 0;
    for (size_t i = 0; i < d; i++) {
        float r = centred[i];
        for (size_t j = 0; j < k; j++) r -= coef[j] * basis[j * d + i];
        energy += r * r;
    }
    return energy;
}

#if EMB_X86
/* Eight chunks of eight values at a time, each basis row's coefficient subtracted from all of
 * them: eight independent multiply-add chains, so the loop runs at throughput, not latency. */
__attribute__((target("avx2,fma")))
static float tc_outside_avx2(const float *basis, size_t k, size_t d, const float *centred, const float *coef) {
    __m256 total = _mm256_setzero_ps();
    size_t e = 0;
    for (; e + 64 <= d; e += 64) {
        __m256 r0 = _mm256_loadu_ps(centred + e), r1 = _mm256_loadu_ps(centred + e + 8);
        __m256 r2 = _mm256_loadu_ps(centred + e + 16), r3 = _mm256_loadu_ps(centred + e + 24);
        __m256 r4 = _mm256_loadu_ps(centred + e + 32), r5 = _mm256_loadu_ps(centred + e + 40);
        __m256 r6 = _mm256_loadu_ps(centred + e + 48), r7 = _mm256_loadu_ps(centred + e + 56);
        for (size_t j = 0; j < k; j++) {
            const __m256 c = _mm256_set1_ps(coef[j]);
            const float *v = basis + j * d + e;
            r0 = _mm256_fnmadd_ps(c, _mm256_loadu_ps(v), r0);
            r1 = _mm256_fnmadd_ps(c, _mm256_loadu_ps(v + 8), r1);
            r2 = _mm256_fnmadd_ps(c, _mm256_loadu_ps(v + 16), r2);
            r3 = _mm256_fnmadd_ps(c, _mm256_loadu_ps(v + 24), r3);
            r4 = _mm256_fnmadd_ps(c, _mm256_loadu_ps(v + 32), r4);
            r5 = _mm256_fnmadd_ps(c, _mm256_loadu_ps(v + 40), r5);
            r6 = _mm256_fnmadd_ps(c, _mm256_loadu_ps(v + 48), r6);
            r7 = _mm256_fnmadd_ps(c, _mm256_loadu_ps(v + 56), r7);
        }
        total = _mm256_fmadd_ps(r0, r0, total);
        total = _mm256_fmadd_ps(r1, r1, total);
        total = _mm256_fmadd_ps(r2, r2, total);
        total = _mm256_fmadd_ps(r3, r3, total);
        total = _mm256_fmadd_ps(r4, r4, total);
        total = _mm256_fmadd_ps(r5, r5, total);
        total = _mm256_fmadd_ps(r6, r6, total);
        total = _mm256_fmadd_ps(r7, r7, total);
    }
    for (; e + 8 <= d; e += 8) {
        __m256 r = _mm256_loadu_ps(centred + e);
        for (size_t j = 0; j < k; j++) r = _mm256_fnmadd_ps(_mm256_set1_ps(coef[j]), _mm256_loadu_ps(basis + j * d + e), r);
        total = _mm256_fmadd_ps(r, r, total);
    }
    float energy = hsum256(total);
    for (; e < d; e++) {
        float r = centred[e];
        for (size_t j = 0; j < k; j++) r -= coef[j] * basis[j * d + e];
        energy += r * r;
    }
    return energy;
}
#endif

float emb_tc_outside_energy(const float *basis, size_t k, size_t d, const float *centred, const float *coef) {
#if EMB_X86
    if (tc_use_avx2()) return tc_outside_avx2(basis, k, d, centred, coef);
#endif
    return emb_tc_outside_energy_portable(basis, k, d, centred, coef);
}

void emb_tc_estimate_rate(const float *c, size_t k, const float *inverse, const float *step, const int32_t *start,
                          const int32_t *lowest, const int32_t *count, const float *costs, float *error, float *bits,
                          float *escapes) {
    float e2 = 0, b = 0, x = 0;
    for (size_t j = 0; j < k; j++) {
        float scaled = c[j] * inverse[j];
        scaled = scaled < -32767.4f ? -32767.4f : (scaled > 32767.4f ? 32767.4f : scaled);
        const int32_t q = (int32_t)(scaled + (scaled < 0 ? -0.5f : 0.5f));
        const float e = c[j] - (float)q * step[j];
        e2 += e * e;
        const int32_t symbol = q - lowest[j];
        const int inside = symbol >= 0 && symbol < count[j];
        b += costs[start[j] + (inside ? symbol : count[j])];
        x += inside ? 0.0f : 1.0f;
    }
    *error += e2;
    *bits = b;
    *escapes = x;
}
