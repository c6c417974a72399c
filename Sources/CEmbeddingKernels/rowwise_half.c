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
/* Every code is picked out of a 32-bit word broadcast to the 8 lanes and shifted right per lane
 * (VPSRLVD), then masked: one load, shift and mask per 8 codes, whatever the bit rate. Measured
 * on Zen 4 (runs of 8 rows out of 512): int4h 16.3 ns a row at d = 256 this way, 20.2 ns
 * unpacking nibbles with byte shuffles as the int4 kernel does; about the same at d = 64. Scale
 * and bias are widened by one VCVTPH2PS: two scalar conversions cost about 0.5 ns a row at d = 64.
 *
 * The last 1-7 elements of a row: a nibble or 2-bit code does not start a byte at every element,
 * so an overlapping vector over the last 8 cannot reach them all. Rows of fewer than 8 take one
 * vector with a masked store (or masked load and store when accumulating) of the lanes that
 * exist: its word may be loaded since the 4 bytes of scale and bias follow the codes, so it never
 * reads past the payload. Longer rows finish in scalar: measured on Zen 4, a masked store after
 * a row's full stores cost 3 ns a row at d = 17, 33 and 100 (about 1 ns for the scalar tail),
 * while for d < 8 the masked store saves 1 ns. Every lane sees the scalar twin's float32 ops. */

/* Scale and bias (two f16 at `p`) widened together by one VCVTPH2PS, exact as
 * emb_half_to_float, and broadcast. */
EMB_TARGET_AVX2_F16C
static inline void load_params(const unsigned char *p, __m256 *scale, __m256 *bias) {
    const __m128 both = _mm_cvtph_ps(_mm_cvtsi32_si128((int)load_u32(p))); /* [scale, bias, 0, 0] */
    *scale = _mm256_broadcastss_ps(both);
    *bias = _mm256_broadcastss_ps(_mm_movehdup_ps(both));
}

/* q * scale + bias for 8 codes in 32-bit lanes. */
EMB_TARGET_AVX2_F16C
static inline __m256 affine8(__m256i codes, __m256 scale, __m256 bias) {
    return _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(codes), scale), bias);
}

/* The 8 codes of `word` at lane shifts `shifts`, `mask` wide. */
EMB_TARGET_AVX2_F16C
static inline __m256i codes8(uint32_t word, __m256i shifts, __m256i mask) {
    return _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)word), shifts), mask);
}

/* Lanes 0 .. n-1 set (n < 8). */
EMB_TARGET_AVX2_F16C
static inline __m256i first_lanes(size_t n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* acc[0..8) = acc + weight * x. */
EMB_TARGET_AVX2_F16C
static inline void add8(float *acc, __m256 x, __m256 weight) {
    _mm256_storeu_ps(acc, _mm256_add_ps(_mm256_loadu_ps(acc), _mm256_mul_ps(weight, x)));
}

/* The same for the `lanes` that exist; the others are neither read nor written. */
EMB_TARGET_AVX2_F16C
static inline void add_masked(float *acc, __m256 x, __m256 weight, __m256i lanes) {
    _mm256_maskstore_ps(acc, lanes, _mm256_add_ps(_mm256_maskload_ps(acc, lanes), _mm256_mul_ps(weight, x)));
}

/* --- int4: a word holds 8 codes, element 2k in the low nibble of byte k: lane j shifts by 4j. */

#define I4_SHIFTS _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28)

EMB_TARGET_AVX2_F16C
static void i4_decode_avx2(const unsigned char *q, float *dst, size_t d) {
    __m256 scale, bias;
    load_params(q + i4_code_bytes(d), &scale, &bias);
    const __m256i shifts = I4_SHIFTS, mask = _mm256_set1_epi32(15);
    size_t i = 0;
    for (; i + 32 <= d; i += 32) {
        _mm256_storeu_ps(dst + i, affine8(codes8(load_u32(q + i / 2), shifts, mask), scale, bias));
        _mm256_storeu_ps(dst + i + 8, affine8(codes8(load_u32(q + i / 2 + 4), shifts, mask), scale, bias));
        _mm256_storeu_ps(dst + i + 16, affine8(codes8(load_u32(q + i / 2 + 8), shifts, mask), scale, bias));
        _mm256_storeu_ps(dst + i + 24, affine8(codes8(load_u32(q + i / 2 + 12), shifts, mask), scale, bias));
    }
    for (; i + 8 <= d; i += 8) _mm256_storeu_ps(dst + i, affine8(codes8(load_u32(q + i / 2), shifts, mask), scale, bias));
    if (d < 8) {
        _mm256_maskstore_ps(dst, first_lanes(d), affine8(codes8(load_u32(q), shifts, mask), scale, bias));
        return;
    }
    const float s = _mm256_cvtss_f32(scale), b = _mm256_cvtss_f32(bias);
    for (; i < d; i++) dst[i] = (float)i4_code(q, i) * s + b;
}

EMB_TARGET_AVX2_F16C
static void i4_accumulate_avx2(const unsigned char *q, float *acc, size_t d, float weight) {
    __m256 scale, bias;
    load_params(q + i4_code_bytes(d), &scale, &bias);
    const __m256 vweight = _mm256_set1_ps(weight);
    const __m256i shifts = I4_SHIFTS, mask = _mm256_set1_epi32(15);
    size_t i = 0;
    for (; i + 8 <= d; i += 8) add8(acc + i, affine8(codes8(load_u32(q + i / 2), shifts, mask), scale, bias), vweight);
    if (d < 8) {
        add_masked(acc, affine8(codes8(load_u32(q), shifts, mask), scale, bias), vweight, first_lanes(d));
        return;
    }
    const float s = _mm256_cvtss_f32(scale), b = _mm256_cvtss_f32(bias);
    for (; i < d; i++) acc[i] = acc[i] + weight * ((float)i4_code(q, i) * s + b);
}

/* --- int2: a word holds 16 codes, element 4k+m in bits 2m..2m+1 of byte k: lane j of the first
 * 8 shifts by 2j, of the second 8 by 16 + 2j. */

#define I2_SHIFTS_LOW _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14)
#define I2_SHIFTS_HIGH _mm256_setr_epi32(16, 18, 20, 22, 24, 26, 28, 30)

EMB_TARGET_AVX2_F16C
static void i2_decode_avx2(const unsigned char *q, float *dst, size_t d) {
    __m256 scale, bias;
    load_params(q + i2_code_bytes(d), &scale, &bias);
    const __m256i low = I2_SHIFTS_LOW, high = I2_SHIFTS_HIGH, mask = _mm256_set1_epi32(3);
    size_t i = 0;
    for (; i + 32 <= d; i += 32) {
        const uint32_t a = load_u32(q + i / 4), b = load_u32(q + i / 4 + 4);
        _mm256_storeu_ps(dst + i, affine8(codes8(a, low, mask), scale, bias));
        _mm256_storeu_ps(dst + i + 8, affine8(codes8(a, high, mask), scale, bias));
        _mm256_storeu_ps(dst + i + 16, affine8(codes8(b, low, mask), scale, bias));
        _mm256_storeu_ps(dst + i + 24, affine8(codes8(b, high, mask), scale, bias));
    }
    for (; i + 8 <= d; i += 8) _mm256_storeu_ps(dst + i, affine8(codes8(load_u32(q + i / 4), low, mask), scale, bias));
    if (d < 8) {
        _mm256_maskstore_ps(dst, first_lanes(d), affine8(codes8(load_u32(q), low, mask), scale, bias));
        return;
    }
    const float s = _mm256_cvtss_f32(scale), b = _mm256_cvtss_f32(bias);
    for (; i < d; i++) dst[i] = (float)i2_code(q, i) * s + b;
}

EMB_TARGET_AVX2_F16C
static void i2_accumulate_avx2(const unsigned char *q, float *acc, size_t d, float weight) {
    __m256 scale, bias;
    load_params(q + i2_code_bytes(d), &scale, &bias);
    const __m256 vweight = _mm256_set1_ps(weight);
    const __m256i low = I2_SHIFTS_LOW, mask = _mm256_set1_epi32(3);
    size_t i = 0;
    for (; i + 8 <= d; i += 8) add8(acc + i, affine8(codes8(load_u32(q + i / 4), low, mask), scale, bias), vweight);
    if (d < 8) {
        add_masked(acc, affine8(codes8(load_u32(q), low, mask), scale, bias), vweight, first_lanes(d));
        return;
    }
    const float s = _mm256_cvtss_f32(scale), b = _mm256_cvtss_f32(bias);
    for (; i < d; i++) acc[i] = acc[i] + weight * ((float)i2_code(q, i) * s + b);
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
