/* Rowwise int4 / int2 decoders in FBGEMM's fused N-bit layout with binary16 scale and bias
 * ("FusedNBitRowwiseQuantizedSBHalf"): x = (float)q * scale + bias, with scale and bias widened
 * exactly to float32 first, then a float32 multiply and a float32 add, never fused. */
#include "kernels_internal.h"

/* Fusing q * scale + bias into an FMA would change the rounding and break the bit-exact
 * agreement between these kernels, their portable twins and the Swift reference decoders. */
#pragma clang fp contract(off)

static inline uint16_t load_u16(const unsigned char *p) {
    uint16_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline uint32_t load_u32(const unsigned char *p) {
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* Bytes of codes before the f16 scale: ceil(d/2) for int4, ceil(d/4) for int2. */
static inline size_t i4_code_bytes(size_t d) { return (d + 1) / 2; }
static inline size_t i2_code_bytes(size_t d) { return (d + 3) / 4; }

/* Element i's code: int4 element 2k in the low nibble of byte k; int2 element 4k+m in bits
 * 2m..2m+1 of byte k. Unused high bits of the last byte are never read into a value. */
static inline unsigned i4_code(const unsigned char *q, size_t i) { return (q[i / 2] >> (4 * (i & 1))) & 15u; }
static inline unsigned i2_code(const unsigned char *q, size_t i) { return (q[i / 4] >> (2 * (i & 3))) & 3u; }

/* ------------------------------------------------------------------------------------------
 * Portable */

void emb_i4_rowwise_sbhalf_decode_portable(const void *payload, float *dst, size_t d) {
    const unsigned char *q = (const unsigned char *)payload;
    const size_t nbytes = i4_code_bytes(d);
    const float scale = emb_half_to_float(load_u16(q + nbytes)), bias = emb_half_to_float(load_u16(q + nbytes + 2));
    for (size_t i = 0; i < d; i++) dst[i] = (float)i4_code(q, i) * scale + bias;
}

void emb_i2_rowwise_sbhalf_decode_portable(const void *payload, float *dst, size_t d) {
    const unsigned char *q = (const unsigned char *)payload;
    const size_t nbytes = i2_code_bytes(d);
    const float scale = emb_half_to_float(load_u16(q + nbytes)), bias = emb_half_to_float(load_u16(q + nbytes + 2));
    for (size_t i = 0; i < d; i++) dst[i] = (float)i2_code(q, i) * scale + bias;
}

void emb_i4_rowwise_sbhalf_decode_rows_portable(const void *const *payloads, float *out, size_t count, size_t d) {
    for (size_t k = 0; k < count; k++) emb_i4_rowwise_sbhalf_decode_portable(payloads[k], out + k * d, d);
}

void emb_i2_rowwise_sbhalf_decode_rows_portable(const void *const *payloads, float *out, size_t count, size_t d) {
    for (size_t k = 0; k < count; k++) emb_i2_rowwise_sbhalf_decode_portable(payloads[k], out + k * d, d);
}

void emb_i4_rowwise_sbhalf_accumulate_portable(const void *payload, float *acc, size_t d, float weight) {
    const unsigned char *q = (const unsigned char *)payload;
    const size_t nbytes = i4_code_bytes(d);
    const float scale = emb_half_to_float(load_u16(q + nbytes)), bias = emb_half_to_float(load_u16(q + nbytes + 2));
    for (size_t i = 0; i < d; i++) acc[i] = acc[i] + weight * ((float)i4_code(q, i) * scale + bias);
}

void emb_i2_rowwise_sbhalf_accumulate_portable(const void *payload, float *acc, size_t d, float weight) {
    const unsigned char *q = (const unsigned char *)payload;
    const size_t nbytes = i2_code_bytes(d);
    const float scale = emb_half_to_float(load_u16(q + nbytes)), bias = emb_half_to_float(load_u16(q + nbytes + 2));
    for (size_t i = 0; i < d; i++) acc[i] = acc[i] + weight * ((float)i2_code(q, i) * scale + bias);
}

/* ------------------------------------------------------------------------------------------
 * AVX2 + F16C */

#if EMB_X86
/* Scale and bias at `p` (two f16), widened by VCVTPH2PS: exact, as emb_half_to_float. */
EMB_TARGET_AVX2_F16C
static inline void load_params(const unsigned char *p, __m256 *scale, __m256 *bias, float *s, float *b) {
    *s = _cvtsh_ss(load_u16(p));
    *b = _cvtsh_ss(load_u16(p + 2));
    *scale = _mm256_set1_ps(*s);
    *bias = _mm256_set1_ps(*b);
}

/* q * scale + bias for 8 codes already widened to 32-bit lanes. */
EMB_TARGET_AVX2_F16C
static inline __m256 affine8(__m256i codes, __m256 scale, __m256 bias) {
    return _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(codes), scale), bias);
}

/* acc[0..8) = acc + weight * x. */
EMB_TARGET_AVX2_F16C
static inline void add8(float *acc, __m256 x, __m256 weight) {
    _mm256_storeu_ps(acc, _mm256_add_ps(_mm256_loadu_ps(acc), _mm256_mul_ps(weight, x)));
}

/* --- int4: 16 bytes hold 32 codes; masking the nibbles apart and interleaving them restores
 * element order (as the f32-parameter int4 kernel does). */

EMB_TARGET_AVX2_F16C
static inline void i4_split16(__m128i packed, __m128i *first, __m128i *second) {
    const __m128i low4 = _mm_set1_epi8(0x0F);
    const __m128i lo = _mm_and_si128(packed, low4);
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(packed, 4), low4);
    *first = _mm_unpacklo_epi8(lo, hi);  /* codes 0..15 */
    *second = _mm_unpackhi_epi8(lo, hi); /* codes 16..31 */
}

EMB_TARGET_AVX2_F16C
static inline __m256i widen8(__m128i bytes) { return _mm256_cvtepu8_epi32(bytes); }

EMB_TARGET_AVX2_F16C
static void i4_decode_avx2(const unsigned char *q, float *dst, size_t d) {
    __m256 vscale, vbias;
    float scale, bias;
    load_params(q + i4_code_bytes(d), &vscale, &vbias, &scale, &bias);
    size_t i = 0;
    for (; i + 32 <= d; i += 32) {
        __m128i first, second;
        i4_split16(_mm_loadu_si128((const __m128i *)(q + i / 2)), &first, &second);
        _mm256_storeu_ps(dst + i, affine8(widen8(first), vscale, vbias));
        _mm256_storeu_ps(dst + i + 8, affine8(widen8(_mm_srli_si128(first, 8)), vscale, vbias));
        _mm256_storeu_ps(dst + i + 16, affine8(widen8(second), vscale, vbias));
        _mm256_storeu_ps(dst + i + 24, affine8(widen8(_mm_srli_si128(second, 8)), vscale, vbias));
    }
    for (; i + 16 <= d; i += 16) {
        __m128i first, second;
        i4_split16(_mm_loadl_epi64((const __m128i *)(q + i / 2)), &first, &second);
        _mm256_storeu_ps(dst + i, affine8(widen8(first), vscale, vbias));
        _mm256_storeu_ps(dst + i + 8, affine8(widen8(_mm_srli_si128(first, 8)), vscale, vbias));
    }
    /* Fewer than 16 left: an overlapping vector would need an even start and could not cover an
     * odd last element, so finish in scalar (the same float32 arithmetic). */
    for (; i < d; i++) dst[i] = (float)i4_code(q, i) * scale + bias;
}

EMB_TARGET_AVX2_F16C
static void i4_accumulate_avx2(const unsigned char *q, float *acc, size_t d, float weight) {
    __m256 vscale, vbias;
    float scale, bias;
    load_params(q + i4_code_bytes(d), &vscale, &vbias, &scale, &bias);
    const __m256 vweight = _mm256_set1_ps(weight);
    size_t i = 0;
    for (; i + 16 <= d; i += 16) {
        __m128i first, second;
        i4_split16(_mm_loadl_epi64((const __m128i *)(q + i / 2)), &first, &second);
        add8(acc + i, affine8(widen8(first), vscale, vbias), vweight);
        add8(acc + i + 8, affine8(widen8(_mm_srli_si128(first, 8)), vscale, vbias), vweight);
    }
    for (; i < d; i++) acc[i] = acc[i] + weight * ((float)i4_code(q, i) * scale + bias);
}

/* --- int2: a 32-bit word holds 16 codes. Broadcast to 8 lanes and shifted per lane by
 * 0, 2, ..., 14 (or 16, ..., 30), each lane's low 2 bits are one code, in element order. */

EMB_TARGET_AVX2_F16C
static inline __m256i i2_codes8(uint32_t word, __m256i shifts) {
    return _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)word), shifts), _mm256_set1_epi32(3));
}

EMB_TARGET_AVX2_F16C
static void i2_decode_avx2(const unsigned char *q, float *dst, size_t d) {
    __m256 vscale, vbias;
    float scale, bias;
    load_params(q + i2_code_bytes(d), &vscale, &vbias, &scale, &bias);
    const __m256i low = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
    const __m256i high = _mm256_setr_epi32(16, 18, 20, 22, 24, 26, 28, 30);
    size_t i = 0;
    /* Unrolled to 32 codes (8 bytes) per step. */
    for (; i + 32 <= d; i += 32) {
        const uint32_t a = load_u32(q + i / 4), b = load_u32(q + i / 4 + 4);
        _mm256_storeu_ps(dst + i, affine8(i2_codes8(a, low), vscale, vbias));
        _mm256_storeu_ps(dst + i + 8, affine8(i2_codes8(a, high), vscale, vbias));
        _mm256_storeu_ps(dst + i + 16, affine8(i2_codes8(b, low), vscale, vbias));
        _mm256_storeu_ps(dst + i + 24, affine8(i2_codes8(b, high), vscale, vbias));
    }
    for (; i + 16 <= d; i += 16) {
        const uint32_t a = load_u32(q + i / 4);
        _mm256_storeu_ps(dst + i, affine8(i2_codes8(a, low), vscale, vbias));
        _mm256_storeu_ps(dst + i + 8, affine8(i2_codes8(a, high), vscale, vbias));
    }
    if (i + 8 <= d) {
        _mm256_storeu_ps(dst + i, affine8(i2_codes8(load_u16(q + i / 4), low), vscale, vbias));
        i += 8;
    }
    /* Fewer than 8 left: a vector over the last 8 would start inside a byte; finish in scalar. */
    for (; i < d; i++) dst[i] = (float)i2_code(q, i) * scale + bias;
}

EMB_TARGET_AVX2_F16C
static void i2_accumulate_avx2(const unsigned char *q, float *acc, size_t d, float weight) {
    __m256 vscale, vbias;
    float scale, bias;
    load_params(q + i2_code_bytes(d), &vscale, &vbias, &scale, &bias);
    const __m256 vweight = _mm256_set1_ps(weight);
    const __m256i low = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
    const __m256i high = _mm256_setr_epi32(16, 18, 20, 22, 24, 26, 28, 30);
    size_t i = 0;
    for (; i + 16 <= d; i += 16) {
        const uint32_t a = load_u32(q + i / 4);
        add8(acc + i, affine8(i2_codes8(a, low), vscale, vbias), vweight);
        add8(acc + i + 8, affine8(i2_codes8(a, high), vscale, vbias), vweight);
    }
    if (i + 8 <= d) {
        add8(acc + i, affine8(i2_codes8(load_u16(q + i / 4), low), vscale, vbias), vweight);
        i += 8;
    }
    for (; i < d; i++) acc[i] = acc[i] + weight * ((float)i2_code(q, i) * scale + bias);
}

/* The row loops in AVX2 functions, so the row body inlines into them. */
EMB_TARGET_AVX2_F16C
static void i4_decode_rows_avx2(const void *const *payloads, float *out, size_t count, size_t d) {
    for (size_t k = 0; k < count; k++) i4_decode_avx2((const unsigned char *)payloads[k], out + k * d, d);
}

EMB_TARGET_AVX2_F16C
static void i2_decode_rows_avx2(const void *const *payloads, float *out, size_t count, size_t d) {
    for (size_t k = 0; k < count; k++) i2_decode_avx2((const unsigned char *)payloads[k], out + k * d, d);
}
#endif

/* ------------------------------------------------------------------------------------------
 * Dispatch */

void emb_i4_rowwise_sbhalf_decode(const void *payload, float *dst, size_t d) {
#if EMB_X86
    if (emb_isa() == EMB_ISA_AVX2_F16C) {
        i4_decode_avx2((const unsigned char *)payload, dst, d);
        return;
    }
#endif
    emb_i4_rowwise_sbhalf_decode_portable(payload, dst, d);
}

void emb_i2_rowwise_sbhalf_decode(const void *payload, float *dst, size_t d) {
#if EMB_X86
    if (emb_isa() == EMB_ISA_AVX2_F16C) {
        i2_decode_avx2((const unsigned char *)payload, dst, d);
        return;
    }
#endif
    emb_i2_rowwise_sbhalf_decode_portable(payload, dst, d);
}

void emb_i4_rowwise_sbhalf_decode_rows(const void *const *payloads, float *out, size_t count, size_t d) {
#if EMB_X86
    if (emb_isa() == EMB_ISA_AVX2_F16C) {
        i4_decode_rows_avx2(payloads, out, count, d);
        return;
    }
#endif
    emb_i4_rowwise_sbhalf_decode_rows_portable(payloads, out, count, d);
}

void emb_i2_rowwise_sbhalf_decode_rows(const void *const *payloads, float *out, size_t count, size_t d) {
#if EMB_X86
    if (emb_isa() == EMB_ISA_AVX2_F16C) {
        i2_decode_rows_avx2(payloads, out, count, d);
        return;
    }
#endif
    emb_i2_rowwise_sbhalf_decode_rows_portable(payloads, out, count, d);
}

void emb_i4_rowwise_sbhalf_accumulate(const void *payload, float *acc, size_t d, float weight) {
#if EMB_X86
    if (emb_isa() == EMB_ISA_AVX2_F16C) {
        i4_accumulate_avx2((const unsigned char *)payload, acc, d, weight);
        return;
    }
#endif
    emb_i4_rowwise_sbhalf_accumulate_portable(payload, acc, d, weight);
}

void emb_i2_rowwise_sbhalf_accumulate(const void *payload, float *acc, size_t d, float weight) {
#if EMB_X86
    if (emb_isa() == EMB_ISA_AVX2_F16C) {
        i2_accumulate_avx2((const unsigned char *)payload, acc, d, weight);
        return;
    }
#endif
    emb_i2_rowwise_sbhalf_accumulate_portable(payload, acc, d, weight);
}
