/* IEEE binary16 <-> float32 conversion: F16C when the CPU has it, bit manipulation otherwise. */
#include "kernels_internal.h"

#pragma clang fp contract(off)

/* ------------------------------------------------------------------------------------------
 * Portable scalar conversions */

static inline uint16_t float_to_half(float f) {
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    uint16_t sign = (uint16_t)((bits >> 16) & 0x8000u);
    uint32_t magnitude = bits & 0x7FFFFFFFu;
    if (magnitude > 0x7F800000u) /* NaN: keep the top payload bits, force quiet */
        return sign | 0x7E00u | (uint16_t)((magnitude >> 13) & 0x3FFu);
    if (magnitude >= 0x477FF000u) /* >= 65520 (including infinity) rounds to infinity */
        return sign | 0x7C00u;
    if (magnitude >= 0x38800000u) { /* >= 2^-14: a normal half */
        /* Rebias the exponent by 127 - 15 and round the 13 dropped bits to nearest even; a carry
         * out of the mantissa correctly bumps the exponent. */
        uint32_t odd = (magnitude >> 13) & 1u;
        return sign | (uint16_t)((magnitude - (112u << 23) + 0x0FFFu + odd) >> 13);
    }
    /* Subnormal half (or zero): the code is |f| * 2^24 rounded to nearest even. Scaling by a
     * power of two is exact, and adding then subtracting 2^23 makes the FPU round the fraction
     * away with its default mode (to nearest, ties to even). A result of 1024 is the smallest
     * normal half, whose bits are exactly 0x0400. */
    float scaled = (f < 0 ? -f : f) * 0x1p24f;
    float rounded = (scaled + 0x1p23f) - 0x1p23f;
    return sign | (uint16_t)rounded;
}

void emb_f16_decode_portable(const void *src, float *dst, size_t n) {
    const unsigned char *s = (const unsigned char *)src;
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, s + 2 * i, sizeof h);
        dst[i] = emb_half_to_float(h);
    }
}

void emb_f16_encode_portable(const float *src, void *dst, size_t n) {
    unsigned char *d = (unsigned char *)dst;
    for (size_t i = 0; i < n; i++) {
        uint16_t h = float_to_half(src[i]);
        memcpy(d + 2 * i, &h, sizeof h);
    }
}

int emb_f16_decode_checked_portable(const void *src, float *dst, size_t n) {
    const unsigned char *s = (const unsigned char *)src;
    unsigned special = 0;
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, s + 2 * i, sizeof h);
        special |= (h & 0x7C00u) == 0x7C00u;
        dst[i] = emb_half_to_float(h);
    }
    return !special;
}

int emb_f16_accumulate_portable(const void *src, float *acc, size_t n, float weight) {
    const unsigned char *s = (const unsigned char *)src;
    unsigned special = 0;
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, s + 2 * i, sizeof h);
        special |= (h & 0x7C00u) == 0x7C00u;
        acc[i] = acc[i] + weight * emb_half_to_float(h);
    }
    return !special;
}

/* ------------------------------------------------------------------------------------------
 * F16C */

#if EMB_X86
EMB_TARGET_AVX2_F16C
static void f16_decode_f16c(const unsigned char *src, float *dst, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + 2 * i))));
    if (i == n) return;
    if (n >= 8) {
        /* Redo the last 8 elements instead of a scalar tail: the overlap rewrites equal values. */
        _mm256_storeu_ps(dst + n - 8,
                         _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + 2 * (n - 8)))));
        return;
    }
    for (; i < n; i++) {
        uint16_t h;
        memcpy(&h, src + 2 * i, sizeof h);
        dst[i] = _cvtsh_ss(h);
    }
}

EMB_TARGET_AVX2_F16C
static void f16_encode_f16c(const float *src, unsigned char *dst, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + 2 * i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    if (i == n) return;
    if (n >= 8) {
        _mm_storeu_si128((__m128i *)(dst + 2 * (n - 8)),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + n - 8), _MM_FROUND_TO_NEAREST_INT));
        return;
    }
    for (; i < n; i++) {
        uint16_t h = _cvtss_sh(src[i], _MM_FROUND_TO_NEAREST_INT);
        memcpy(dst + 2 * i, &h, sizeof h);
    }
}

EMB_TARGET_AVX2_F16C
static int f16_decode_checked_f16c(const unsigned char *src, float *dst, size_t n) {
    /* A half is infinite or NaN when its magnitude bits are >= 0x7C00: keep the largest
     * magnitude (one AND and one unsigned max per 8 values) and compare once per row. */
    const __m128i magnitude = _mm_set1_epi16(0x7FFF);
    __m128i largest = _mm_setzero_si128();
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m128i h = _mm_loadu_si128((const __m128i *)(src + 2 * i));
        largest = _mm_max_epu16(largest, _mm_and_si128(h, magnitude));
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
    }
    largest = _mm_max_epu16(largest, _mm_shuffle_epi32(largest, 0x4E));
    largest = _mm_max_epu16(largest, _mm_shuffle_epi32(largest, 0xB1));
    largest = _mm_max_epu16(largest, _mm_srli_epi32(largest, 16));
    int finite = (_mm_cvtsi128_si32(largest) & 0xFFFF) < 0x7C00;
    for (; i < n; i++) {
        uint16_t h;
        memcpy(&h, src + 2 * i, sizeof h);
        finite &= (h & 0x7C00u) != 0x7C00u;
        dst[i] = _cvtsh_ss(h);
    }
    return finite;
}

EMB_TARGET_AVX2_F16C
static int f16_accumulate_f16c(const unsigned char *src, float *acc, size_t n, float weight) {
    const __m256 vweight = _mm256_set1_ps(weight);
    const __m128i exponent = _mm_set1_epi16(0x7C00);
    __m128i special = _mm_setzero_si128();
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m128i h = _mm_loadu_si128((const __m128i *)(src + 2 * i));
        special = _mm_or_si128(special, _mm_cmpeq_epi16(_mm_and_si128(h, exponent), exponent));
        const __m256 x = _mm256_cvtph_ps(h);
        _mm256_storeu_ps(acc + i, _mm256_add_ps(_mm256_loadu_ps(acc + i), _mm256_mul_ps(vweight, x)));
    }
    int finite = _mm_testz_si128(special, special);
    for (; i < n; i++) {
        uint16_t h;
        memcpy(&h, src + 2 * i, sizeof h);
        finite &= (h & 0x7C00u) != 0x7C00u;
        acc[i] = acc[i] + weight * _cvtsh_ss(h);
    }
    return finite;
}
#endif

/* ------------------------------------------------------------------------------------------
 * Dispatch */

void emb_f16_decode(const void *src, float *dst, size_t n) {
#if EMB_X86
    if (emb_isa() == EMB_ISA_AVX2_F16C) {
        f16_decode_f16c((const unsigned char *)src, dst, n);
        return;
    }
#endif
    emb_f16_decode_portable(src, dst, n);
}

void emb_f16_encode(const float *src, void *dst, size_t n) {
#if EMB_X86
    if (emb_isa() == EMB_ISA_AVX2_F16C) {
        f16_encode_f16c(src, (unsigned char *)dst, n);
        return;
    }
#endif
    emb_f16_encode_portable(src, dst, n);
}

int emb_f16_accumulate(const void *src, float *acc, size_t n, float weight) {
#if EMB_X86
    if (emb_isa() == EMB_ISA_AVX2_F16C) return f16_accumulate_f16c((const unsigned char *)src, acc, n, weight);
#endif
    return emb_f16_accumulate_portable(src, acc, n, weight);
}

int emb_f16_decode_checked(const void *src, float *dst, size_t n) {
#if EMB_X86
    if (emb_isa() == EMB_ISA_AVX2_F16C) return f16_decode_checked_f16c((const unsigned char *)src, dst, n);
#endif
    return emb_f16_decode_checked_portable(src, dst, n);
}

#if EMB_X86
/* The row loop in an AVX2 function, so the row body inlines into it. */
EMB_TARGET_AVX2_F16C
static int f16_decode_checked_rows_avx2_loop(const void *const *payloads, float *out, size_t count, size_t d) {
    int finite = 1;
    for (size_t k = 0; k < count; k++) finite &= f16_decode_checked_f16c((const unsigned char *)payloads[k], out + k * d, d);
    return finite;
}
#endif

int emb_f16_decode_checked_rows(const void *const *payloads, float *out, size_t count, size_t d) {
    int finite = 1;
#if EMB_X86
    if (emb_isa() == EMB_ISA_AVX2_F16C) {
        return f16_decode_checked_rows_avx2_loop(payloads, out, count, d);
    }
#endif
    for (size_t k = 0; k < count; k++) finite &= emb_f16_decode_checked_portable(payloads[k], out + k * d, d);
    return finite;
}
