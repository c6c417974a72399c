/* float32 rows straight from the map (any alignment): a copy that checks for infinities and
 * NaNs, and accumulation for pooled lookups. */
#include "kernels_internal.h"

#pragma clang fp contract(off)

int emb_f32_accumulate_portable(const void *src, float *acc, size_t n, float weight) {
    const unsigned char *s = (const unsigned char *)src;
    unsigned special = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, s + 4 * i, sizeof bits);
        special |= (bits & 0x7F800000u) == 0x7F800000u;
        float x;
        memcpy(&x, &bits, sizeof x);
        acc[i] = acc[i] + weight * x;
    }
    return !special;
}

int emb_f32_decode_checked_portable(const void *src, float *dst, size_t n) {
    const unsigned char *s = (const unsigned char *)src;
    unsigned special = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, s + 4 * i, sizeof bits);
        special |= (bits & 0x7F800000u) == 0x7F800000u;
        memcpy(dst + i, &bits, sizeof bits);
    }
    return !special;
}

#if EMB_X86
EMB_TARGET_AVX2_F16C
static int f32_decode_checked_avx2(const unsigned char *src, float *dst, size_t n) {
    /* A value is infinite or NaN when its magnitude bits are >= 0x7F800000: keep the largest
     * magnitude (one AND and one unsigned max per 8 values) and compare once per row. */
    const __m256i magnitude = _mm256_set1_epi32(0x7FFFFFFF);
    __m256i largest = _mm256_setzero_si256();
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256i bits = _mm256_loadu_si256((const __m256i *)(src + 4 * i));
        largest = _mm256_max_epu32(largest, _mm256_and_si256(bits, magnitude));
        _mm256_storeu_si256((__m256i *)(dst + i), bits);
    }
    __m128i m = _mm_max_epu32(_mm256_castsi256_si128(largest), _mm256_extracti128_si256(largest, 1));
    m = _mm_max_epu32(m, _mm_shuffle_epi32(m, 0x4E));
    m = _mm_max_epu32(m, _mm_shuffle_epi32(m, 0xB1));
    int finite = (uint32_t)_mm_cvtsi128_si32(m) < 0x7F800000u;
    for (; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, src + 4 * i, sizeof bits);
        finite &= (bits & 0x7F800000u) != 0x7F800000u;
        memcpy(dst + i, &bits, sizeof bits);
    }
    return finite;
}

EMB_TARGET_AVX2_F16C
static int f32_accumulate_avx2(const unsigned char *src, float *acc, size_t n, float weight) {
    const __m256 vweight = _mm256_set1_ps(weight);
    const __m256i exponent = _mm256_set1_epi32(0x7F800000);
    __m256i special = _mm256_setzero_si256();
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256i bits = _mm256_loadu_si256((const __m256i *)(src + 4 * i));
        special = _mm256_or_si256(special, _mm256_cmpeq_epi32(_mm256_and_si256(bits, exponent), exponent));
        const __m256 x = _mm256_castsi256_ps(bits);
        _mm256_storeu_ps(acc + i, _mm256_add_ps(_mm256_loadu_ps(acc + i), _mm256_mul_ps(vweight, x)));
    }
    int finite = _mm256_testz_si256(special, special);
    for (; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, src + 4 * i, sizeof bits);
        finite &= (bits & 0x7F800000u) != 0x7F800000u;
        float x;
        memcpy(&x, &bits, sizeof x);
        acc[i] = acc[i] + weight * x;
    }
    return finite;
}
#endif

int emb_f32_accumulate(const void *src, float *acc, size_t n, float weight) {
#if EMB_X86
    if (emb_isa() == EMB_ISA_AVX2_F16C) return f32_accumulate_avx2((const unsigned char *)src, acc, n, weight);
#endif
    return emb_f32_accumulate_portable(src, acc, n, weight);
}

int emb_f32_decode_checked(const void *src, float *dst, size_t n) {
#if EMB_X86
    if (emb_isa() == EMB_ISA_AVX2_F16C) return f32_decode_checked_avx2((const unsigned char *)src, dst, n);
#endif
    return emb_f32_decode_checked_portable(src, dst, n);
}

#if EMB_X86
/* The row loop in an AVX2 function, so the row body inlines into it. */
EMB_TARGET_AVX2_F16C
static int f32_decode_checked_rows_avx2_loop(const void *const *payloads, float *out, size_t count, size_t d) {
    int finite = 1;
    for (size_t k = 0; k < count; k++) finite &= f32_decode_checked_avx2((const unsigned char *)payloads[k], out + k * d, d);
    return finite;
}
#endif

int emb_f32_decode_checked_rows(const void *const *payloads, float *out, size_t count, size_t d) {
    int finite = 1;
#if EMB_X86
    if (emb_isa() == EMB_ISA_AVX2_F16C) {
        return f32_decode_checked_rows_avx2_loop(payloads, out, count, d);
    }
#endif
    for (size_t k = 0; k < count; k++) finite &= emb_f32_decode_checked_portable(payloads[k], out + k * d, d);
    return finite;
}
